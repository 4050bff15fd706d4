//! What a key or value may be in the course's two formats, job files and
//! FIFO frames (SPEC sections 2 and 3): 1 to 40 bytes of UTF-8 with no
//! whitespace, NUL, `,`, `(`, `)`, `[` or `]`. The rules bind what those
//! formats can carry (41-byte frame fields, lines split on spaces and
//! brackets), so the job parser and the FIFO decoder share this one copy.

use std::fmt;

/// Longest key or value, in bytes: the FIFO protocol's field is 41 bytes
/// with its terminating NUL, and every stored key must be subscribable.
pub const MAX_STRING: usize = 40;

/// Why bytes are not a key or value of the course formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextError {
    Empty,
    TooLong,
    /// Whitespace, NUL or one of `,()[]`.
    InvalidChar,
    NotUtf8,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::Empty => f.write_str("empty key or value"),
            TextError::TooLong => write!(f, "key or value longer than {MAX_STRING} bytes"),
            TextError::InvalidChar => f.write_str("forbidden character in key or value"),
            TextError::NotUtf8 => f.write_str("key or value is not valid UTF-8"),
        }
    }
}

impl std::error::Error for TextError {}

/// Whether `b` may appear in a key or value.
#[inline]
pub fn is_string_byte(b: u8) -> bool {
    STRING_BYTES[b as usize]
}

/// [`is_string_byte`] for every byte: the scan of a key is one load per byte.
static STRING_BYTES: [bool; 256] = {
    let mut t = [true; 256];
    let forbidden = *b" \t\n\x0c\r,()[]\0";
    let mut i = 0;
    while i < forbidden.len() {
        t[forbidden[i] as usize] = false;
        i += 1;
    }
    t
};

/// Checks a key or value against the rules above.
pub fn validate(s: &[u8]) -> Result<&str, TextError> {
    if s.is_empty() {
        return Err(TextError::Empty);
    }
    if s.len() > MAX_STRING {
        return Err(TextError::TooLong);
    }
    if !s.iter().all(|&b| is_string_byte(b)) {
        return Err(TextError::InvalidChar);
    }
    std::str::from_utf8(s).map_err(|_| TextError::NotUtf8)
}

/// Appends `b` as a job's READ, SHOW and BACKUP show it (SPEC section 2,
/// kvs's decision): bytes these rules accept exactly as they are, as
/// always; anything else (a RESP client's value with a space, over 40
/// bytes, binary) quoted and escaped as redis-cli shows it, so nothing is
/// cut and the line stays one line.
pub fn push_shown(out: &mut Vec<u8>, b: &[u8]) {
    if validate(b).is_ok() {
        out.extend_from_slice(b);
    } else {
        push_quoted(out, b);
    }
}

/// `b` in double quotes with redis-cli's escapes: `\\`, `\"`, `\n`, `\r`,
/// `\t`, `\a`, `\b`, and `\xHH` for every other byte that is not
/// printable ASCII.
pub fn push_quoted(out: &mut Vec<u8>, b: &[u8]) {
    out.reserve(b.len() + 2);
    out.push(b'"');
    for &c in b {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x07 => out.extend_from_slice(b"\\a"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x20..=0x7e => out.push(c),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'x',
                    HEX[usize::from(c >> 4)],
                    HEX[usize::from(c & 15)],
                ]);
            }
        }
    }
    out.push(b'"');
}

/// What a FIFO client is sent in place of a value its 40-byte field
/// cannot carry (SPEC section 3, kvs's decision): `(value of N bytes)`.
/// It holds spaces and parentheses, which no value of these rules can, so
/// a client never takes it for a value.
pub fn fifo_marker(len: usize) -> String {
    format!("(value of {len} bytes)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules() {
        assert_eq!(validate(b"ok"), Ok("ok"));
        assert_eq!(validate(b""), Err(TextError::Empty));
        assert_eq!(validate(&[b'a'; 41]), Err(TextError::TooLong));
        assert!(validate(&[b'a'; 40]).is_ok());
        for bad in [&b"a b"[..], b"a\0", b"(x)", b"a,b", b"[", b"a\tb", b"a\r"] {
            assert_eq!(validate(bad), Err(TextError::InvalidChar), "{bad:?}");
        }
        assert_eq!(validate(b"\xff"), Err(TextError::NotUtf8));
        assert_eq!(validate("é".as_bytes()), Ok("é"));
    }

    fn shown(b: &[u8]) -> String {
        let mut out = Vec::new();
        push_shown(&mut out, b);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_the_rules_cannot_carry_are_quoted_as_redis_cli_does() {
        assert_eq!(shown(b"plain"), "plain");
        assert_eq!(shown(b"a b"), r#""a b""#);
        assert_eq!(shown(b""), r#""""#);
        assert_eq!(
            shown(b"q\"\\\n\r\t\x07\x08\x00\xff"),
            r#""q\"\\\n\r\t\a\b\x00\xff""#
        );
        assert_eq!(shown("é x".as_bytes()), r#""\xc3\xa9 x""#);
        let long = vec![b'a'; 41];
        assert_eq!(shown(&long), format!("\"{}\"", "a".repeat(41)));
    }

    #[test]
    fn the_fifo_marker_is_no_value_and_fits_a_field() {
        let m = fifo_marker(536_870_912);
        assert!(m.len() <= MAX_STRING, "{m}");
        assert!(validate(m.as_bytes()).is_err());
    }
}
