//! Redis's string commands that read a value and write a new one (INCR and
//! its kin, INCRBYFLOAT, APPEND, SETRANGE) or cut a piece of it
//! (GETRANGE), as pure functions of the old value: the store runs each as
//! one step under its key's lock (see [`crate::reactor::command`]), so no
//! increment is lost however many clients race, and a model can check
//! them without a store. Numbers, limits and error texts are Redis 7's.

use crate::protocol::resp::MAX_BULK;

/// What a read-modify-write does to its key.
#[derive(Debug, Clone, PartialEq)]
pub enum StringOp {
    /// INCR, DECR, INCRBY, DECRBY.
    IncrBy(i64),
    IncrByFloat(f64),
    Append(Vec<u8>),
    SetRange(u64, Vec<u8>),
    /// SETBIT: bit `.0` (0 the most significant of the first byte) to `.1`.
    SetBit(u64, bool),
    /// GETDEL.
    GetDel,
}

/// The new value of a key (or `None`: leave it as it is, or delete it for
/// [`StringOp::GetDel`]) and what the command answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The key takes this number, in decimal; the reply is the number
    /// (INCR and its kin: no allocation for the text).
    Counter(i64),
    /// The key takes this value; the reply is an integer.
    SetInt(Vec<u8>, i64),
    /// The key takes this value; the reply is the value (INCRBYFLOAT).
    SetBulk(Vec<u8>),
    /// Nothing changes; the reply is an integer.
    KeepInt(i64),
    /// The key is deleted (if it was there); the reply is the old value.
    Deleted(Option<Vec<u8>>),
}

pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub const NOT_FLOAT: &str = "ERR value is not a valid float";
pub const OVERFLOW: &str = "ERR increment or decrement would overflow";
pub const TOO_BIG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
pub const NOT_FINITE: &str = "ERR increment would produce NaN or Infinity";

/// Applies `op` to a key whose value is `old`; an error leaves the key
/// unchanged.
pub fn apply(op: &StringOp, old: Option<&[u8]>) -> Result<Outcome, &'static str> {
    match op {
        StringOp::IncrBy(by) => {
            let n = match old {
                None => 0,
                Some(v) => parse_i64(v).ok_or(NOT_INTEGER)?,
            };
            let new = n.checked_add(*by).ok_or(OVERFLOW)?;
            Ok(Outcome::Counter(new))
        }
        StringOp::IncrByFloat(by) => {
            let old = match old {
                None => b"0".as_slice(),
                Some(v) => v,
            };
            let text = add_decimal(old, *by)?;
            Ok(Outcome::SetBulk(text.into_bytes()))
        }
        StringOp::Append(tail) => {
            let old = old.unwrap_or_default();
            let len = old.len() + tail.len();
            if len > MAX_BULK {
                return Err(TOO_BIG);
            }
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(old);
            v.extend_from_slice(tail);
            Ok(Outcome::SetInt(v, len as i64))
        }
        StringOp::SetRange(offset, piece) => {
            let old = old.unwrap_or_default();
            if piece.is_empty() {
                // Nothing written, and no key made.
                return Ok(Outcome::KeepInt(old.len() as i64));
            }
            let end = offset
                .checked_add(piece.len() as u64)
                .filter(|&e| e <= MAX_BULK as u64)
                .ok_or(TOO_BIG)? as usize;
            let start = *offset as usize;
            let mut v = old.to_vec();
            if v.len() < end {
                v.resize(end, 0);
            }
            v[start..end].copy_from_slice(piece);
            let len = v.len() as i64;
            Ok(Outcome::SetInt(v, len))
        }
        StringOp::SetBit(offset, on) => {
            let mut v = old.unwrap_or_default().to_vec();
            let byte = (offset >> 3) as usize;
            if v.len() <= byte {
                v.resize(byte + 1, 0);
            }
            let mask = 0x80u8 >> (offset & 7);
            let was = v[byte] & mask != 0;
            if *on {
                v[byte] |= mask;
            } else {
                v[byte] &= !mask;
            }
            Ok(Outcome::SetInt(v, i64::from(was)))
        }
        StringOp::GetDel => Ok(Outcome::Deleted(old.map(<[u8]>::to_vec))),
    }
}

/// GETBIT's bit of `v` (0 past its end).
pub fn bit(v: &[u8], offset: u64) -> i64 {
    let byte = (offset >> 3) as usize;
    v.get(byte)
        .map_or(0, |b| i64::from(b & (0x80u8 >> (offset & 7)) != 0))
}

/// One run of LCS IDX: where it lies in each string (inclusive), and its
/// length.
pub type Run = ((usize, usize), (usize, usize), usize);

/// The longest common subsequence of `a` and `b`, and its runs from the
/// end backwards of at least `min_len` bytes, as Redis's LCS walks its
/// table; `Err` if the table would outgrow `proto-max-bulk-len`.
pub fn lcs(a: &[u8], b: &[u8], min_len: usize) -> Result<(Vec<u8>, Vec<Run>), &'static str> {
    let (alen, blen) = (a.len(), b.len());
    let cells = (alen + 1)
        .checked_mul(blen + 1)
        .filter(|&c| c.saturating_mul(4) <= MAX_BULK)
        .ok_or("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len")?;
    let mut t = vec![0u32; cells];
    let at = |i: usize, j: usize| j + i * (blen + 1);
    for i in 1..=alen {
        for j in 1..=blen {
            t[at(i, j)] = if a[i - 1] == b[j - 1] {
                t[at(i - 1, j - 1)] + 1
            } else {
                t[at(i - 1, j)].max(t[at(i, j - 1)])
            };
        }
    }
    let mut idx = t[at(alen, blen)] as usize;
    let mut result = vec![0u8; idx];
    let mut runs = Vec::new();
    // `None`: no run in progress.
    let mut run: Option<((usize, usize), (usize, usize))> = None;
    let (mut i, mut j) = (alen, blen);
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            result[idx - 1] = a[i - 1];
            run = Some(match run {
                None => ((i - 1, i - 1), (j - 1, j - 1)),
                Some(((s, e), (bs, be))) => ((s - 1, e), (bs - 1, be)),
            });
            if let Some(((s, _), (bs, _))) = run {
                emit = s == 0 || bs == 0;
            }
            idx -= 1;
            i -= 1;
            j -= 1;
        } else {
            if t[at(i - 1, j)] > t[at(i, j - 1)] {
                i -= 1;
            } else {
                j -= 1;
            }
            emit = run.is_some();
        }
        if emit {
            if let Some(((s, e), (bs, be))) = run.take() {
                let len = e - s + 1;
                if len >= min_len {
                    runs.push(((s, e), (bs, be), len));
                }
            }
        }
    }
    Ok((result, runs))
}

/// GETRANGE's piece of `v`, with Redis's rules for negative and
/// out-of-range ends.
pub fn range(v: &[u8], start: i64, end: i64) -> &[u8] {
    let len = v.len() as i64;
    if (start < 0 && end < 0 && start > end) || len == 0 {
        return &[];
    }
    let fix = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (start, end) = (fix(start), fix(end).min(len - 1));
    if start > end {
        return &[];
    }
    &v[start as usize..=end as usize]
}

/// An integer as Redis reads one (`string2ll`): optional `-`, no `+`, no
/// leading zeros, no spaces, at most 20 bytes, within an i64.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        n = n.checked_mul(10)?;
        n = if neg {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

/// A float as Redis reads one (`string2ld`): no surrounding spaces, not
/// NaN; `inf` reads (and is refused once it is the result).
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    let t = std::str::from_utf8(s).ok()?;
    if t.is_empty() || t.starts_with(char::is_whitespace) || t.len() > 5 * 1024 {
        return None;
    }
    t.parse::<f64>().ok().filter(|v| !v.is_nan())
}

/// `old + by` as INCRBYFLOAT answers it. Decimal where both are plain
/// decimals that fit, so 0.1 + 0.2 is `0.3`, as Redis's long double gives
/// it (an f64 sum would print 0.30000000000000004); otherwise an f64 sum
/// printed in its shortest form.
fn add_decimal(old: &[u8], by: f64) -> Result<String, &'static str> {
    let a = parse_f64(old).ok_or(NOT_FLOAT)?;
    let sum = a + by;
    if !sum.is_finite() {
        return Err(NOT_FINITE);
    }
    let by_text = format_f64(by);
    if let (Some(x), Some(y)) = (Decimal::parse(old), Decimal::parse(by_text.as_bytes())) {
        if let Some(z) = x.add(y) {
            return Ok(z.to_string());
        }
    }
    Ok(format_f64(sum))
}

/// Shortest text that reads back as `v`, never `-0`, never an exponent.
pub fn format_f64(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    format!("{v}")
}

/// A decimal number `mantissa * 10^-scale`, for INCRBYFLOAT's exact sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal {
    mantissa: i128,
    scale: u32,
}

/// Digits after the point Redis prints (`%.17Lf`).
const SHOWN_DECIMALS: u32 = 17;

impl Decimal {
    /// `[-]digits[.digits][e[+-]digits]`, if it fits in 30 digits.
    fn parse(s: &[u8]) -> Option<Decimal> {
        let (neg, s) = match s.split_first()? {
            (b'-', rest) => (true, rest),
            (b'+', rest) => (false, rest),
            _ => (false, s),
        };
        let (body, exp) = match s.iter().position(|&b| b == b'e' || b == b'E') {
            Some(i) => (
                &s[..i],
                std::str::from_utf8(&s[i + 1..]).ok()?.parse::<i32>().ok()?,
            ),
            None => (s, 0),
        };
        let (int, frac) = match body.iter().position(|&b| b == b'.') {
            Some(i) => (&body[..i], &body[i + 1..]),
            None => (body, &[][..]),
        };
        if int.is_empty() && frac.is_empty() || int.len() + frac.len() > 30 {
            return None;
        }
        let mut mantissa: i128 = 0;
        for &d in int.iter().chain(frac) {
            if !d.is_ascii_digit() {
                return None;
            }
            mantissa = mantissa * 10 + i128::from(d - b'0');
        }
        let mut scale = frac.len() as i32 - exp;
        while scale < 0 {
            mantissa = mantissa.checked_mul(10)?;
            scale += 1;
        }
        if scale > 60 {
            return None;
        }
        Some(Decimal {
            mantissa: if neg { -mantissa } else { mantissa },
            scale: scale as u32,
        })
        .filter(|d| d.mantissa.unsigned_abs() < 10u128.pow(36))
    }

    fn add(self, other: Decimal) -> Option<Decimal> {
        let scale = self.scale.max(other.scale);
        let lift = |d: Decimal| d.mantissa.checked_mul(10i128.checked_pow(scale - d.scale)?);
        let mantissa = lift(self)?.checked_add(lift(other)?)?;
        Some(Decimal { mantissa, scale })
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Rounded to Redis's 17 decimals. Half to even: an operand's text
        // is its shortest form, a hair from the binary value Redis adds,
        // so an exact half here is not one there (1/41 - 1/41 must be 0).
        let mut m = self.mantissa;
        let mut scale = self.scale;
        if scale > SHOWN_DECIMALS {
            let cut = 10i128.pow(scale - SHOWN_DECIMALS);
            let rest = (m % cut).abs() * 2;
            m /= cut;
            if rest > cut || (rest == cut && m % 2 != 0) {
                m += if self.mantissa < 0 { -1 } else { 1 };
            }
            scale = SHOWN_DECIMALS;
        }
        while scale > 0 && m % 10 == 0 {
            m /= 10;
            scale -= 1;
        }
        if m == 0 {
            return f.write_str("0");
        }
        let digits = m.unsigned_abs().to_string();
        let sign = if m < 0 { "-" } else { "" };
        let scale = scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{int}.{frac}")
    }
}

/// OBJECT ENCODING's answer for a value, as Redis 7 encodes strings.
pub fn encoding(v: &[u8]) -> &'static str {
    if parse_i64(v).is_some() {
        "int"
    } else if v.len() <= 44 {
        "embstr"
    } else {
        "raw"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(op: StringOp, old: Option<&str>) -> Result<Outcome, &'static str> {
        apply(&op, old.map(str::as_bytes))
    }

    #[test]
    fn integers_as_redis_reads_them() {
        for ok in [
            "0",
            "1",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            assert_eq!(parse_i64(ok.as_bytes()), ok.parse().ok(), "{ok}");
        }
        for bad in [
            "",
            "+1",
            "01",
            "-0",
            " 1",
            "1 ",
            "1.0",
            "9223372036854775808",
            "0x1",
        ] {
            assert_eq!(parse_i64(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn counters() {
        assert_eq!(int(StringOp::IncrBy(1), None), Ok(Outcome::Counter(1)));
        assert_eq!(
            int(StringOp::IncrBy(-5), Some("3")),
            Ok(Outcome::Counter(-2))
        );
        assert_eq!(int(StringOp::IncrBy(1), Some("x")), Err(NOT_INTEGER));
        assert_eq!(int(StringOp::IncrBy(1), Some(" 1")), Err(NOT_INTEGER));
        assert_eq!(
            int(StringOp::IncrBy(1), Some("9223372036854775807")),
            Err(OVERFLOW)
        );
    }

    #[test]
    fn floats_add_as_redis_prints_them() {
        let f = |old: Option<&str>, by: f64| match int(StringOp::IncrByFloat(by), old) {
            Ok(Outcome::SetBulk(v)) => Ok(String::from_utf8(v).unwrap()),
            Ok(o) => panic!("{o:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(f(None, 1.0), Ok("1".into()));
        assert_eq!(f(Some("1"), 0.25), Ok("1.25".into()));
        assert_eq!(f(Some("0.1"), 0.2), Ok("0.3".into()));
        assert_eq!(f(Some("10.5"), 0.1), Ok("10.6".into()));
        assert_eq!(f(Some("17179869184"), 1.5), Ok("17179869185.5".into()));
        assert_eq!(f(Some("5.0e3"), 2.0e2), Ok("5200".into()));
        assert_eq!(f(Some("1"), -1.1), Ok("-0.1".into()));
        let third = 1.0 / 41.0;
        let once = f(None, third).unwrap();
        assert_eq!(f(Some(&once), -third), Ok("0".into()), "no negative zero");
        assert_eq!(f(Some("x"), 1.0), Err(NOT_FLOAT));
        assert_eq!(f(Some(" 1"), 1.0), Err(NOT_FLOAT));
        assert_eq!(f(Some("1"), f64::INFINITY), Err(NOT_FINITE));
        assert_eq!(f(Some("1e308"), 1e308), Err(NOT_FINITE));
    }

    #[test]
    fn append_and_setrange() {
        assert_eq!(
            int(StringOp::Append(b"def".to_vec()), Some("abc")),
            Ok(Outcome::SetInt(b"abcdef".to_vec(), 6))
        );
        assert_eq!(
            int(StringOp::SetRange(1, b"xy".to_vec()), Some("abcd")),
            Ok(Outcome::SetInt(b"axyd".to_vec(), 4))
        );
        assert_eq!(
            int(StringOp::SetRange(3, b"z".to_vec()), None),
            Ok(Outcome::SetInt(b"\0\0\0z".to_vec(), 4))
        );
        assert_eq!(
            int(StringOp::SetRange(9, Vec::new()), Some("ab")),
            Ok(Outcome::KeepInt(2))
        );
        assert_eq!(
            int(StringOp::SetRange(MAX_BULK as u64, b"z".to_vec()), None),
            Err(TOO_BIG)
        );
    }

    #[test]
    fn ranges_as_getrange_cuts_them() {
        let v = b"Hello World";
        assert_eq!(range(v, 0, 3), b"Hell");
        assert_eq!(range(v, -3, -1), b"rld");
        assert_eq!(range(v, 0, -1), v);
        assert_eq!(range(v, 5, 3), b"");
        assert_eq!(range(v, 0, 100), v);
        assert_eq!(range(v, -1, -5), b"");
        assert_eq!(range(v, -100, 2), b"Hel");
        assert_eq!(range(b"", 0, -1), b"");
    }

    #[test]
    fn encodings() {
        assert_eq!(encoding(b"12345"), "int");
        assert_eq!(encoding(b"hello"), "embstr");
        assert_eq!(encoding(&[b'a'; 45]), "raw");
    }
}
