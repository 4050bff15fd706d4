//! RESP2, the Redis protocol: requests (multibulk arrays of bulk strings,
//! or inline lines as telnet sends them) to argument lists, and replies to
//! bytes. No I/O and no state between calls: [`parse`] looks at the front
//! of a buffer and says how much of it one request used.
//!
//! Every length a peer sends is checked before it is trusted: a request
//! can never make the server allocate more than the bytes it has actually
//! sent, and the limits and error texts are Redis's own (`networking.c`), so
//! client libraries that recognise them keep working.

use super::args::Args;
use super::reply::Reply;
use std::fmt;

/// Most arguments one request may carry (Redis: 1024 * 1024).
pub const MAX_ARGS: usize = 1024 * 1024;
/// Longest bulk string a request may carry: Redis's `proto-max-bulk-len`,
/// so a value may be as large as Redis allows.
pub const MAX_BULK: usize = 512 * 1024 * 1024;
/// Longest inline request line (Redis: 64 KiB).
pub const MAX_INLINE: usize = 64 * 1024;
/// Longest header line (`*<n>` or `$<n>`) before it must have ended.
const MAX_HEADER: usize = 32;
/// Bulk strings this long or longer are worth reading apart from the rest
/// of their request, into a buffer of their own that the store can then
/// keep as it is (Redis's `PROTO_MBULK_BIG_ARG`): see [`parse_apart`].
pub const BIG_ARG: usize = 32 * 1024;

/// A request the stream cannot recover from: answer `-ERR Protocol error:
/// <text>` and close the connection, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    TooBigInline,
    UnbalancedQuotes,
    TooBigCount,
    InvalidMultibulkLength,
    TooBigBulkCount,
    ExpectedDollar(u8),
    InvalidBulkLength,
    /// More than [`UNAUTHENTICATED_ARGS`] arguments before AUTH.
    UnauthenticatedMultibulk,
    /// A bulk longer than [`UNAUTHENTICATED_BULK`] before AUTH.
    UnauthenticatedBulk,
}

/// Before AUTH, on a server with a password, a request may carry at most
/// this many arguments, each of at most [`UNAUTHENTICATED_BULK`] bytes
/// (Redis's limits): a stranger cannot make the server buffer much.
pub const UNAUTHENTICATED_ARGS: i64 = 10;
pub const UNAUTHENTICATED_BULK: i64 = 16 * 1024;

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Protocol error: ")?;
        match self {
            ProtocolError::TooBigInline => f.write_str("too big inline request"),
            ProtocolError::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
            ProtocolError::TooBigCount => f.write_str("too big mbulk count string"),
            ProtocolError::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtocolError::TooBigBulkCount => f.write_str("too big bulk count string"),
            ProtocolError::ExpectedDollar(b) => write!(f, "expected '$', got '{}'", *b as char),
            ProtocolError::InvalidBulkLength => f.write_str("invalid bulk length"),
            ProtocolError::UnauthenticatedMultibulk => {
                f.write_str("unauthenticated multibulk length")
            }
            ProtocolError::UnauthenticatedBulk => f.write_str("unauthenticated bulk length"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// What the front of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Not a whole request yet.
    Incomplete,
    /// A request's arguments (possibly none: an empty inline line or `*0`)
    /// and the number of bytes it used.
    Request(Args<'a>, usize),
    /// An inline request with quotes, whose escapes (`"a\x41"` is `aA`)
    /// make its arguments new bytes, and the number of bytes it used.
    Inline(Vec<Vec<u8>>, usize),
    Error(ProtocolError),
}

/// Parses the first request in `buf`.
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    parse_as(buf, false)
}

/// [`parse`], with Redis's tighter limits for a connection that must still
/// authenticate (`unauthenticated`).
pub fn parse_as(buf: &[u8], unauthenticated: bool) -> Parsed<'_> {
    parse_apart(buf, unauthenticated, |_| None)
}

/// [`parse_as`] for a buffer some of whose bulk strings' bytes were read
/// apart: `apart(at)` gives the bytes read so far of the one whose `$<n>`
/// header ends at `at` (`buf` goes on there with its `\r\n`), or `None`
/// where the bytes are in `buf` as usual.
pub fn parse_apart<'a>(
    buf: &'a [u8],
    unauthenticated: bool,
    apart: impl Fn(usize) -> Option<&'a [u8]>,
) -> Parsed<'a> {
    match buf.first() {
        None => Parsed::Incomplete,
        Some(b'*') => parse_multibulk(buf, unauthenticated, apart),
        Some(_) => parse_inline(buf),
    }
}

/// The line starting at `from`, without its `\r\n`, and the index after it;
/// `Ok(None)` if no `\r\n` yet. A line longer than `max` is an error.
fn line(buf: &[u8], from: usize, max: usize) -> Result<Option<(&[u8], usize)>, ()> {
    let window = &buf[from..buf.len().min(from + max + 2)];
    // A header is a few digits: a plain scan finds its end sooner than
    // memchr's set-up for long haystacks (two per pipelined GET).
    match window.iter().position(|&b| b == b'\r') {
        Some(i) if i + 1 < window.len() => Ok(Some((&window[..i], from + i + 2))),
        Some(_) => Ok(None),
        None if window.len() >= max + 2 => Err(()),
        None => Ok(None),
    }
}

/// A decimal length as Redis reads it (`string2ll`): optional `-`, digits,
/// no sign for zero-padded forms, fits an i64.
fn number(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((d - b'0') as i64)?;
    }
    Some(if neg { -n } else { n })
}

/// The number on the header line at `from` and where the next line
/// starts: `Ok(None)` while the line is not whole, a `None` number if it
/// is not one (Redis's rules, [`number`]), `Err` if it is too long.
#[inline]
fn header(buf: &[u8], from: usize) -> Result<Option<(Option<i64>, usize)>, ()> {
    if let Some((n, next)) = plain_number(buf, from) {
        return Ok(Some((Some(n), next)));
    }
    Ok(line(buf, from, MAX_HEADER)?.map(|(head, next)| (number(head), next)))
}

/// The common header, up to 18 digits and `\r` with a byte after it, read
/// in one pass (its end found and its digits read together); `None` for
/// anything else, which [`line`] and [`number`] then read.
#[inline]
fn plain_number(buf: &[u8], from: usize) -> Option<(i64, usize)> {
    let mut n: i64 = 0;
    for (i, &b) in buf.get(from..)?.iter().enumerate().take(19) {
        match b {
            b'0'..=b'9' => n = n * 10 + (b - b'0') as i64,
            b'\r' if i > 0 && from + i + 1 < buf.len() => return Some((n, from + i + 2)),
            _ => return None,
        }
    }
    None
}

fn parse_multibulk<'a>(
    buf: &'a [u8],
    unauthenticated: bool,
    apart: impl Fn(usize) -> Option<&'a [u8]>,
) -> Parsed<'a> {
    let (count, mut at) = match header(buf, 1) {
        Ok(Some(l)) => l,
        Ok(None) => return Parsed::Incomplete,
        Err(()) => return Parsed::Error(ProtocolError::TooBigCount),
    };
    let count = match count {
        Some(n) if n > UNAUTHENTICATED_ARGS && unauthenticated => {
            return Parsed::Error(ProtocolError::UnauthenticatedMultibulk)
        }
        Some(n) if n <= MAX_ARGS as i64 => n,
        _ => return Parsed::Error(ProtocolError::InvalidMultibulkLength),
    };
    if count <= 0 {
        return Parsed::Request(Args::new(), at);
    }
    // Never trust the count for an allocation: grow as arguments arrive.
    let mut args = Args::new();
    for _ in 0..count {
        match buf.get(at) {
            None => return Parsed::Incomplete,
            Some(b'$') => {}
            Some(&b) => return Parsed::Error(ProtocolError::ExpectedDollar(b)),
        }
        let (len, start) = match header(buf, at + 1) {
            Ok(Some(l)) => l,
            Ok(None) => return Parsed::Incomplete,
            Err(()) => return Parsed::Error(ProtocolError::TooBigBulkCount),
        };
        let len = match len {
            Some(n) if n > UNAUTHENTICATED_BULK && unauthenticated => {
                return Parsed::Error(ProtocolError::UnauthenticatedBulk)
            }
            Some(n) if (0..=MAX_BULK as i64).contains(&n) => n as usize,
            _ => return Parsed::Error(ProtocolError::InvalidBulkLength),
        };
        if let Some(bytes) = apart(start) {
            if bytes.len() < len || buf.len() < start + 2 {
                return Parsed::Incomplete;
            }
            args.push(bytes);
            at = start + 2;
            continue;
        }
        if buf.len() < start + len + 2 {
            return Parsed::Incomplete;
        }
        args.push(&buf[start..start + len]);
        // Redis does not check the two bytes after a bulk either.
        at = start + len + 2;
    }
    Parsed::Request(args, at)
}

/// A multibulk request cut inside a bulk string's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Where the bulk's bytes start.
    pub start: usize,
    /// Its declared length.
    pub len: usize,
    /// Where it will end, with its `\r\n`: the reader lets a large value
    /// in (up to [`MAX_BULK`]) while a request that never ends, or never
    /// gets past its headers, is still cut off at the query buffer limit.
    pub end: usize,
}

/// Where the request being read is cut, if it is a multibulk request cut
/// inside a bulk's bytes: whole requests before it are stepped over (by
/// their headers), and the bytes of bulks read apart (see
/// [`parse_apart`]) are where `apart` says.
pub fn cut<'a>(buf: &'a [u8], apart: impl Fn(usize) -> Option<&'a [u8]>) -> Option<Cut> {
    let mut at = 0;
    while at < buf.len() {
        if buf[at] != b'*' {
            // An inline request: whole if its line ended.
            at += memchr::memchr(b'\n', &buf[at..])? + 1;
            continue;
        }
        at = match request_end(buf, at, &apart)? {
            Ok(end) => end,
            Err(cut) => return Some(cut),
        };
    }
    None
}

/// Where the multibulk request at `from` ends, or where it is cut inside
/// a bulk's bytes; `None` if it is cut elsewhere or malformed.
fn request_end<'a>(
    buf: &'a [u8],
    from: usize,
    apart: &impl Fn(usize) -> Option<&'a [u8]>,
) -> Option<Result<usize, Cut>> {
    let (head, mut at) = line(buf, from + 1, MAX_HEADER).ok()??;
    let count = number(head).filter(|&n| n <= MAX_ARGS as i64)?;
    for _ in 0..count {
        if buf.get(at) != Some(&b'$') {
            return None;
        }
        let (head, start) = line(buf, at + 1, MAX_HEADER).ok()??;
        let len = number(head).filter(|n| (0..=MAX_BULK as i64).contains(n))? as usize;
        // Read apart: only its `\r\n` is in `buf`.
        let in_buf = if apart(start).is_some() { 0 } else { len };
        let end = start + in_buf + 2;
        if buf.len() < end {
            return Some(Err(Cut { start, len, end }));
        }
        at = end;
    }
    Some(Ok(at))
}

fn parse_inline(buf: &[u8]) -> Parsed<'_> {
    let window = &buf[..buf.len().min(MAX_INLINE)];
    let Some(nl) = memchr::memchr(b'\n', window) else {
        return if buf.len() >= MAX_INLINE {
            Parsed::Error(ProtocolError::TooBigInline)
        } else {
            Parsed::Incomplete
        };
    };
    let mut l = &buf[..nl];
    if let Some(stripped) = l.strip_suffix(b"\r") {
        l = stripped;
    }
    if !l.iter().any(|&b| b == b'"' || b == b'\'') {
        return Parsed::Request(split_words(l).collect(), nl + 1);
    }
    match split_quoted(l) {
        Some(args) => Parsed::Inline(args, nl + 1),
        None => Parsed::Error(ProtocolError::UnbalancedQuotes),
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// An inline line without quotes: its words.
fn split_words(l: &[u8]) -> impl Iterator<Item = &[u8]> {
    l.split(|&b| is_space(b)).filter(|w| !w.is_empty())
}

/// An inline line with quotes, as Redis's `sdssplitargs` reads it: in
/// double quotes `\xHH`, `\n`, `\r`, `\t`, `\b`, `\a` and `\<c>`; in single
/// quotes only `\'`; a closing quote must end its argument; `None` for a
/// quote left open or closed in the middle of a word.
fn split_quoted(l: &[u8]) -> Option<Vec<Vec<u8>>> {
    let hex = |b: u8| (b as char).to_digit(16);
    let at = |i: usize| l.get(i).copied();
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while at(i).is_some_and(is_space) {
            i += 1;
        }
        if i >= l.len() {
            return Some(args);
        }
        let mut cur = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            let c = at(i);
            if inq {
                match (c, at(i + 1)) {
                    (None, _) => return None,
                    (Some(b'\\'), Some(b'x'))
                        if at(i + 2).and_then(hex).is_some()
                            && at(i + 3).and_then(hex).is_some() =>
                    {
                        let v = at(i + 2).and_then(hex)? * 16 + at(i + 3).and_then(hex)?;
                        cur.push(v as u8);
                        i += 3;
                    }
                    (Some(b'\\'), Some(e)) => {
                        cur.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                        i += 1;
                    }
                    (Some(b'"'), next) => {
                        if next.is_some_and(|n| !is_space(n)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    (Some(b), _) => cur.push(b),
                }
            } else if insq {
                match (c, at(i + 1)) {
                    (None, _) => return None,
                    (Some(b'\\'), Some(b'\'')) => {
                        cur.push(b'\'');
                        i += 1;
                    }
                    (Some(b'\''), next) => {
                        if next.is_some_and(|n| !is_space(n)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    (Some(b), _) => cur.push(b),
                }
            } else {
                match c {
                    None => break,
                    Some(b) if is_space(b) => break,
                    Some(b'"') => inq = true,
                    Some(b'\'') => insq = true,
                    Some(b) => cur.push(b),
                }
            }
            i += 1;
        }
        args.push(cur);
    }
}

// ----- replies ------------------------------------------------------------

pub fn push_simple(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn push_ok(out: &mut Vec<u8>) {
    out.extend_from_slice(b"+OK\r\n");
}

/// An error reply; `msg` starts with its code (`ERR ...`, `NOAUTH ...`).
/// Line breaks would end the reply early, so they become spaces.
pub fn push_error(out: &mut Vec<u8>, msg: &str) {
    out.push(b'-');
    out.extend(
        msg.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

pub fn push_int(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    push_decimal(out, n);
}

pub fn push_bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'$');
    push_decimal(out, b.len() as i64);
    extend_unaliased(out, b);
    out.extend_from_slice(b"\r\n");
}

/// Appends `bytes` to `out`. A large copy whose destination lies a few
/// bytes past its source's place in a 4 KiB page runs many times slower on
/// x86 (4K aliasing: each load waits for a store it only seems to depend
/// on): a 100 KiB value from a page-aligned buffer to 9 bytes into a reply
/// (after `$102400\r\n`) took 30 us instead of 2 here. Such a copy is
/// made to a place further on and moved back: two quick copies.
fn extend_unaliased(out: &mut Vec<u8>, bytes: &[u8]) {
    const PAGE: usize = 4096;
    const NEAR: usize = 64;
    const FAR: usize = PAGE / 2;
    if bytes.len() >= PAGE {
        out.reserve(bytes.len() + FAR);
        let at = out.len();
        let dst = out.as_ptr() as usize + at;
        let delta = dst.wrapping_sub(bytes.as_ptr() as usize) % PAGE;
        if (1..NEAR).contains(&delta) {
            out.resize(at + FAR, 0);
            out.extend_from_slice(bytes);
            out.copy_within(at + FAR.., at);
            out.truncate(at + bytes.len());
            return;
        }
    }
    out.extend_from_slice(bytes);
}

pub fn push_null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

pub fn push_opt_bulk(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => push_bulk(out, b),
        None => push_null(out),
    }
}

pub fn push_array_len(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_decimal(out, n as i64);
}

// RESP3 (HELLO 3): the same replies with their own types. Each takes the
// connection's protocol, 2 or 3, and writes RESP2's form for 2.

/// A missing value: `$-1` in RESP2, `_` in RESP3.
pub fn push_null_in(out: &mut Vec<u8>, proto: u8) {
    if proto >= 3 {
        out.extend_from_slice(b"_\r\n");
    } else {
        push_null(out);
    }
}

/// A missing array (EXEC after a WATCHed change): `*-1` or `_`.
pub fn push_null_array_in(out: &mut Vec<u8>, proto: u8) {
    if proto >= 3 {
        out.extend_from_slice(b"_\r\n");
    } else {
        out.extend_from_slice(b"*-1\r\n");
    }
}

pub fn push_opt_bulk_in(out: &mut Vec<u8>, b: Option<&[u8]>, proto: u8) {
    match b {
        Some(b) => push_bulk(out, b),
        None => push_null_in(out, proto),
    }
}

/// A map of `n` pairs: a flat array of `2n` in RESP2.
pub fn push_map_len(out: &mut Vec<u8>, n: usize, proto: u8) {
    if proto >= 3 {
        out.push(b'%');
        push_decimal(out, n as i64);
    } else {
        push_array_len(out, 2 * n);
    }
}

/// A RESP3 aggregate of `n` elements marked `kind`, or RESP2's array of
/// them.
fn push_aggregate_len(out: &mut Vec<u8>, kind: u8, n: usize, proto: u8) {
    if proto >= 3 {
        out.push(kind);
        push_decimal(out, n as i64);
    } else {
        push_array_len(out, n);
    }
}

/// A set of `n` members: an array in RESP2.
pub fn push_set_len(out: &mut Vec<u8>, n: usize, proto: u8) {
    push_aggregate_len(out, b'~', n, proto);
}

/// An out-of-band message (pub/sub): a push frame in RESP3, an array in
/// RESP2.
pub fn push_push_len(out: &mut Vec<u8>, n: usize, proto: u8) {
    push_aggregate_len(out, b'>', n, proto);
}

/// Text for people (INFO): a verbatim string in RESP3, a bulk in RESP2.
pub fn push_verbatim(out: &mut Vec<u8>, text: &[u8], proto: u8) {
    if proto >= 3 {
        out.push(b'=');
        push_decimal(out, text.len() as i64 + 4);
        out.extend_from_slice(b"txt:");
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    } else {
        push_bulk(out, text);
    }
}

/// `n` and `\r\n`, without going through `fmt`.
fn push_decimal(out: &mut Vec<u8>, n: i64) {
    let mut buf = [0u8; 20];
    out.extend_from_slice(decimal(n, &mut buf));
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written in `buf` (an i64 takes at most 20 bytes with its
/// sign), without going through `fmt` or allocating (INCR's new value).
pub fn decimal(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    // Two digits per division: a counter's reply and its stored text are
    // each written once per INCR.
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut i = buf.len();
    let mut m = n.unsigned_abs();
    while m >= 100 {
        let d = (m % 100) as usize * 2;
        m /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    }
    if m >= 10 {
        let d = m as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + m as u8;
    }
    if n < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

/// Encodes `args` as a request (for clients and tests).
pub fn encode_request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    push_array_len(&mut out, args.len());
    for a in args {
        push_bulk(&mut out, a);
    }
    out
}

/// Appends the RESP encoding of a store command's reply, in protocol
/// `proto` (2 or 3).
pub fn encode_reply(out: &mut Vec<u8>, reply: &Reply, proto: u8) {
    match reply {
        Reply::Ok => push_ok(out),
        Reply::Int(n) => push_int(out, *n),
        Reply::Value(v) => push_opt_bulk_in(out, v.as_deref(), proto),
        Reply::Values(vs) => {
            push_array_len(out, vs.len());
            for v in vs {
                push_opt_bulk_in(out, v.as_deref(), proto);
            }
        }
        Reply::Keys(keys) => push_keys(out, keys),
        Reply::Scan(next, keys) => {
            push_array_len(out, 2);
            push_bulk(out, next.to_string().as_bytes());
            push_keys(out, keys);
        }
        Reply::Status(s) => push_simple(out, s),
        Reply::Text(t) => push_verbatim(out, t.as_bytes(), proto),
        Reply::Error(e) => push_error(out, e),
        // A transaction a WATCHed key's change kept from running.
        Reply::Exec(None) => push_null_array_in(out, proto),
        Reply::Exec(Some(replies)) | Reply::Array(replies) => {
            push_array_len(out, replies.len());
            for r in replies {
                encode_reply(out, r, proto);
            }
        }
        Reply::Map(pairs) => {
            push_map_len(out, pairs.len(), proto);
            for (k, v) in pairs {
                encode_reply(out, k, proto);
                encode_reply(out, v, proto);
            }
        }
        Reply::Framed(bytes) => out.extend_from_slice(bytes),
    }
}

fn push_keys(out: &mut Vec<u8>, keys: &[Vec<u8>]) {
    push_array_len(out, keys.len());
    for k in keys {
        push_bulk(out, k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass header read agrees with the line-then-number one on
    /// every kind of header, well formed or not, whole or cut short.
    #[test]
    fn a_header_read_in_one_pass_is_read_as_line_and_number_read_it() {
        let slow = |buf: &[u8], from: usize| {
            line(buf, from, MAX_HEADER).map(|l| l.map(|(head, next)| (number(head), next)))
        };
        let heads = [
            "3",
            "0",
            "007",
            "-1",
            "-0",
            "",
            "+3",
            "12a",
            "1 2",
            "999999999999999999",
            "9223372036854775807",
            "9223372036854775808",
            "99999999999999999999",
            "123456789012345678901234567890123",
        ];
        for head in heads {
            for tail in ["\r\n", "\r", "", "\rx", "\n"] {
                let buf = format!("${head}{tail}$1\r\n");
                for end in 1..=buf.len() {
                    let cut = &buf.as_bytes()[..end];
                    assert_eq!(
                        header(cut, 1),
                        slow(cut, 1),
                        "{:?}",
                        String::from_utf8_lossy(cut)
                    );
                }
            }
        }
    }

    #[test]
    fn decimals_are_what_fmt_writes() {
        let mut buf = [0u8; 20];
        let edges = [
            0, 1, -1, 9, 10, -10, 99, 100, -100, 101, 999, 1000, 4242, 12345,
        ];
        for n in edges.into_iter().chain([i64::MAX, i64::MIN, i64::MIN + 1]) {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes(), "{n}");
        }
        let mut out = Vec::new();
        push_int(&mut out, i64::MIN);
        assert_eq!(out, b":-9223372036854775808\r\n");
    }

    #[test]
    fn a_large_bulk_is_encoded_whole_wherever_it_lands() {
        let value: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut want_near = false;
        // Every place of the reply relative to the value's page, the few
        // that alias among them.
        for prefix in 0..4096 {
            let mut out = Vec::with_capacity(64 * 1024);
            out.resize(prefix, b'.');
            let payload_at = out.as_ptr() as usize + prefix + 8;
            let delta = payload_at.wrapping_sub(value.as_ptr() as usize) % 4096;
            want_near |= (1..64).contains(&delta);
            push_bulk(&mut out, &value);
            assert_eq!(&out[prefix..prefix + 8], b"$10000\r\n");
            assert!(
                out[prefix + 8..prefix + 8 + 10_000] == value[..],
                "prefix {prefix}"
            );
            assert_eq!(&out[prefix + 8 + 10_000..], b"\r\n");
        }
        assert!(want_near, "some places should have aliased");
    }

    #[test]
    fn a_bulk_being_read_declares_its_end() {
        let end = |buf: &[u8]| cut(buf, |_| None).map(|c| c.end);
        assert_eq!(
            cut(b"*2\r\n$3\r\nset\r\n$100\r\nab", |_| None),
            Some(Cut {
                start: 19,
                len: 100,
                end: 19 + 100 + 2
            })
        );
        assert_eq!(end(b"*1\r\n$3\r\nse"), Some(4 + 4 + 3 + 2));
        // Complete, not a multibulk, or not yet inside a bulk: nothing.
        assert_eq!(end(b"*1\r\n$1\r\na\r\n"), None);
        assert_eq!(end(b"set a b"), None);
        assert_eq!(end(b"*2\r\n$1\r\na\r\n"), None);
        assert_eq!(end(b"*1\r\n$536870913\r\n"), None);
        // Whole requests before it, multibulk or inline, are stepped over.
        let two = b"*1\r\n$4\r\nPING\r\nPING\r\n*2\r\n$3\r\nset\r\n$100\r\nab";
        assert_eq!(end(two), Some(two.len() - 2 + 100 + 2));
        assert_eq!(end(b"*1\r\n$4\r\nPING\r\nPIN"), None);
    }

    #[test]
    fn bulks_read_apart_are_taken_from_where_they_were_read() {
        // SET k <5 bytes read apart> EX 9: the buffer holds everything
        // but the five bytes.
        let buf = b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\n\r\n$2\r\nEX\r\n$1\r\n9\r\n";
        let at = 4 + 9 + 7 + 4;
        let apart = |filled: &'static [u8]| move |p: usize| (p == at).then_some(filled);
        assert_eq!(
            parse_apart(buf, false, apart(b"hello")),
            Parsed::Request(
                vec![&b"SET"[..], b"k", b"hello", b"EX", b"9"].into(),
                buf.len()
            )
        );
        // Bytes still coming in: not a request yet; cut inside them.
        assert_eq!(parse_apart(buf, false, apart(b"hel")), Parsed::Incomplete);
        assert_eq!(
            cut(&buf[..at], apart(b"hel")),
            Some(Cut {
                start: at,
                len: 5,
                end: at + 2
            })
        );
        // Its `\r\n` not read yet.
        assert_eq!(
            parse_apart(&buf[..at + 1], false, apart(b"hello")),
            Parsed::Incomplete
        );
        // Past it, the next bulk is where the cut is.
        assert_eq!(
            cut(&buf[..at + 2 + 5], apart(b"hello")).map(|c| (c.start, c.len)),
            Some((at + 2 + 4, 2))
        );
    }

    #[test]
    fn inline_quotes_follow_sdssplitargs() {
        let args = |line: &[u8]| match parse(line) {
            Parsed::Inline(a, _) => Some(a),
            Parsed::Request(a, _) => Some(a.iter().map(|x| x.to_vec()).collect()),
            _ => None,
        };
        assert_eq!(
            args(b"set \"a\\x41\" x\r\n").unwrap(),
            vec![b"set".to_vec(), b"aA".to_vec(), b"x".to_vec()]
        );
        assert_eq!(
            args(b"echo \"a\\nb\\\"c\" 'it\\'s' \"\"\n").unwrap(),
            vec![
                b"echo".to_vec(),
                b"a\nb\"c".to_vec(),
                b"it's".to_vec(),
                Vec::new()
            ]
        );
        for bad in [
            &b"set \"\"\"test-key\"\"\" v\r\n"[..],
            b"get \"open\n",
            b"get 'a'b\n",
        ] {
            assert_eq!(
                parse(bad),
                Parsed::Error(ProtocolError::UnbalancedQuotes),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            args(b"  a   b \r\n").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
    }

    fn req(args: &[&str]) -> Vec<u8> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        encode_request(&args)
    }

    #[test]
    fn multibulk_round_trip_and_every_prefix_is_incomplete() {
        let bytes = req(&["SET", "k", "", "a b"]);
        match parse(&bytes) {
            Parsed::Request(args, n) => {
                assert_eq!(n, bytes.len());
                assert_eq!(args, vec![&b"SET"[..], b"k", b"", b"a b"]);
            }
            other => panic!("{other:?}"),
        }
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let mut bytes = req(&["PING"]);
        bytes.extend(req(&["GET", "a"]));
        let Parsed::Request(a, n) = parse(&bytes) else {
            panic!()
        };
        assert_eq!(a, vec![&b"PING"[..]]);
        let Parsed::Request(b, m) = parse(&bytes[n..]) else {
            panic!()
        };
        assert_eq!(b, vec![&b"GET"[..], b"a"]);
        assert_eq!(n + m, bytes.len());
    }

    #[test]
    fn inline_requests() {
        assert_eq!(
            parse(b"PING\r\n"),
            Parsed::Request(vec![&b"PING"[..]].into(), 6)
        );
        assert_eq!(
            parse(b"set  k \"v 1\"\n"),
            Parsed::Inline(vec![b"set".to_vec(), b"k".to_vec(), b"v 1".to_vec()], 13)
        );
        assert_eq!(parse(b"\r\n"), Parsed::Request(Args::new(), 2));
        assert_eq!(parse(b"GET k"), Parsed::Incomplete);
        assert_eq!(
            parse(b"GET \"k\n"),
            Parsed::Error(ProtocolError::UnbalancedQuotes)
        );
        let long = vec![b'a'; MAX_INLINE + 1];
        assert_eq!(parse(&long), Parsed::Error(ProtocolError::TooBigInline));
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocation() {
        use ProtocolError::*;
        assert_eq!(
            parse(b"*1\r\n$1099511627776\r\n"),
            Parsed::Error(InvalidBulkLength)
        );
        assert_eq!(parse(b"*1\r\n$-1\r\n"), Parsed::Error(InvalidBulkLength));
        assert_eq!(parse(b"*1\r\n$x\r\n"), Parsed::Error(InvalidBulkLength));
        assert_eq!(parse(b"*x\r\n"), Parsed::Error(InvalidMultibulkLength));
        assert_eq!(
            parse(b"*99999999999\r\n"),
            Parsed::Error(InvalidMultibulkLength)
        );
        assert_eq!(
            parse(b"*99999999999999999999999999999999999999"),
            Parsed::Error(TooBigCount)
        );
        assert_eq!(parse(b"*-1\r\n"), Parsed::Request(Args::new(), 5));
        // Nested arrays are not requests.
        assert_eq!(parse(b"*1\r\n*1\r\n"), Parsed::Error(ExpectedDollar(b'*')));
        // A huge count costs nothing until its arguments arrive.
        assert_eq!(parse(b"*1048576\r\n$1\r\na\r\n"), Parsed::Incomplete);
    }

    #[test]
    fn replies() {
        let mut out = Vec::new();
        push_ok(&mut out);
        push_int(&mut out, -12);
        push_int(&mut out, 0);
        push_bulk(&mut out, b"hi");
        push_null(&mut out);
        push_array_len(&mut out, 2);
        push_error(&mut out, "ERR a\r\nb");
        assert_eq!(
            out,
            b"+OK\r\n:-12\r\n:0\r\n$2\r\nhi\r\n$-1\r\n*2\r\n-ERR a  b\r\n"
        );
        assert_eq!(
            ProtocolError::ExpectedDollar(b'*').to_string(),
            "Protocol error: expected '$', got '*'"
        );
    }
}
