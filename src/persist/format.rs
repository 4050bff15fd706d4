//! The data dir's file format, shared by log segments and snapshots.
//!
//! A file is a 12-byte header (8 bytes of magic, a little-endian u32
//! version) and then records. A record is `len: u32 LE`, `crc: u32 LE` (the
//! CRC-32 of the payload) and `len` bytes of payload, so a torn write (a
//! crash mid-append) and a flipped byte are both detected. A payload is one
//! mutation, applied whole on replay:
//!
//! - `1, n: u16, n x (key_len: u8, key, value_len: u8, value)`: set pairs;
//! - `2, n: u16, n x (key_len: u8, key)`: delete keys;
//! - `3`: delete every key (FLUSHDB);
//! - `4, n: u64`: end of a snapshot holding `n` pairs.
//!
//! Keys and values are at most 40 bytes (SPEC), so one byte holds a length.

use std::fmt;

pub const LOG_MAGIC: &[u8; 8] = b"KVSLOG\0\0";
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"KVSSNAP\0";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 12;
/// Bytes before a record's payload.
pub const FRAME_LEN: usize = 8;
/// A record longer than this is damage, not data (a MSET of every key a
/// request can carry is far smaller).
pub const MAX_RECORD: usize = 64 << 20;
/// Most pairs or keys in one record; longer mutations span several
/// records only in snapshots, which are written whole.
pub const MAX_ITEMS: usize = u16::MAX as usize;

const OP_SET: u8 = 1;
const OP_DEL: u8 = 2;
const OP_CLEAR: u8 = 3;
const OP_END: u8 = 4;

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Set(Vec<(String, String)>),
    Del(Vec<String>),
    Clear,
    End(u64),
}

/// Why bytes are not a valid file or record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    BadMagic,
    BadVersion(u32),
    /// The header or a record stops at the end of the file.
    Truncated,
    BadChecksum,
    /// A length beyond [`MAX_RECORD`].
    TooLong(usize),
    /// The checksum holds but the payload does not parse.
    BadPayload(&'static str),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::BadMagic => f.write_str("not a kvs data file (bad magic)"),
            FormatError::BadVersion(v) => write!(f, "format version {v}, this kvs reads {VERSION}"),
            FormatError::Truncated => f.write_str("cut off (incomplete record)"),
            FormatError::BadChecksum => f.write_str("checksum mismatch (damaged record)"),
            FormatError::TooLong(n) => write!(f, "record length {n} is impossible"),
            FormatError::BadPayload(why) => write!(f, "bad record: {why}"),
        }
    }
}

impl std::error::Error for FormatError {}

pub fn header(magic: &[u8; 8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(magic);
    h[8..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Checks a file's header.
pub fn check_header(bytes: &[u8], magic: &[u8; 8]) -> Result<(), FormatError> {
    if bytes.len() < HEADER_LEN {
        return Err(FormatError::Truncated);
    }
    if &bytes[..8] != magic {
        return Err(FormatError::BadMagic);
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(FormatError::BadVersion(version));
    }
    Ok(())
}

/// Appends a record whose payload `fill` writes; the frame is filled in
/// around it, so the payload is built once, in place.
pub fn push_record(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_LEN]);
    fill(out);
    seal_record(out, start);
}

/// Fills in the frame of the record at `start`, which runs to the end of
/// `out`: its payload's length and checksum.
fn seal_record(out: &mut [u8], start: usize) {
    let (frame, payload) = out[start..].split_at_mut(FRAME_LEN);
    let len = payload.len() as u32;
    let crc = checksum(payload);
    frame[..4].copy_from_slice(&len.to_le_bytes());
    frame[4..].copy_from_slice(&crc.to_le_bytes());
}

/// CRC-32 of `bytes`. `crc32fast::hash` asks the CPU which kernel to use
/// on every call, which for a 30-byte record cost more than the checksum
/// itself; a hasher made once and copied per record asks once.
pub fn checksum(bytes: &[u8]) -> u32 {
    static PROTO: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    let mut h = PROTO.get_or_init(crc32fast::Hasher::new).clone();
    h.update(bytes);
    h.finalize()
}

// A key or value's length is one byte in a record: the store's limit on
// keys and values (every way in checks it) must fit, or a longer value
// would be cut short on disk without a word. This fails the build if the
// limit is ever raised past what the format can hold.
const _: () = assert!(crate::jobs::command::MAX_STRING <= u8::MAX as usize);

#[inline]
fn push_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u8::MAX as usize)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

/// Appends records of `op` holding the items `write` writes, [`MAX_ITEMS`]
/// at most each, counting as it goes (no list is built first).
fn push_items<T>(
    out: &mut Vec<u8>,
    op: u8,
    mut items: impl Iterator<Item = T>,
    write: impl Fn(&mut Vec<u8>, T),
) {
    let mut next = items.next();
    while let Some(first) = next {
        let start = out.len();
        // The frame, the op and the count, filled in at the end.
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, op, 0, 0]);
        write(out, first);
        let mut n: u16 = 1;
        next = items.next();
        while let Some(item) = next.take_if(|_| usize::from(n) < MAX_ITEMS) {
            write(out, item);
            n += 1;
            next = items.next();
        }
        let count_at = start + FRAME_LEN + 1;
        out[count_at..count_at + 2].copy_from_slice(&n.to_le_bytes());
        seal_record(out, start);
    }
}

/// Appends set records for `pairs` (one record unless there are more than
/// [`MAX_ITEMS`]).
pub fn push_set<'a, 'b>(out: &mut Vec<u8>, pairs: impl Iterator<Item = (&'a str, &'b str)>) {
    push_items(out, OP_SET, pairs, |p, (k, v)| {
        push_str(p, k);
        push_str(p, v);
    });
}

pub fn push_del<'a>(out: &mut Vec<u8>, keys: impl Iterator<Item = &'a str>) {
    push_items(out, OP_DEL, keys, push_str);
}

pub fn push_clear(out: &mut Vec<u8>) {
    push_record(out, |p| p.push(OP_CLEAR));
}

pub fn push_end(out: &mut Vec<u8>, pairs: u64) {
    push_record(out, |p| {
        p.push(OP_END);
        p.extend_from_slice(&pairs.to_le_bytes());
    });
}

/// Reads the record at the front of `bytes`: the record and its length
/// with the frame.
pub fn read_record(bytes: &[u8]) -> Result<(Record, usize), FormatError> {
    if bytes.len() < FRAME_LEN {
        return Err(FormatError::Truncated);
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if len > MAX_RECORD {
        return Err(FormatError::TooLong(len));
    }
    let Some(payload) = bytes.get(FRAME_LEN..FRAME_LEN + len) else {
        return Err(FormatError::Truncated);
    };
    if checksum(payload) != crc {
        return Err(FormatError::BadChecksum);
    }
    Ok((decode_payload(payload)?, FRAME_LEN + len))
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.b.len() < n {
            return Err(FormatError::BadPayload("shorter than its counts"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn string(&mut self) -> Result<String, FormatError> {
        let n = self.take(1)?[0] as usize;
        let s = self.take(n)?;
        crate::jobs::parser::validate_string(s)
            .map(str::to_owned)
            .map_err(|_| FormatError::BadPayload("a key or value breaks the store's rules"))
    }

    /// A count of items; kvs never writes a record of none.
    fn count(&mut self) -> Result<usize, FormatError> {
        let c = self.take(2)?;
        match u16::from_le_bytes([c[0], c[1]]) as usize {
            0 => Err(FormatError::BadPayload("a mutation of nothing")),
            n => Ok(n),
        }
    }
}

fn decode_payload(payload: &[u8]) -> Result<Record, FormatError> {
    let Some((&op, rest)) = payload.split_first() else {
        return Err(FormatError::BadPayload("empty"));
    };
    let mut r = Reader { b: rest };
    let record = match op {
        OP_SET => {
            let n = r.count()?;
            let mut pairs = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                pairs.push((r.string()?, r.string()?));
            }
            Record::Set(pairs)
        }
        OP_DEL => {
            let n = r.count()?;
            let mut keys = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                keys.push(r.string()?);
            }
            Record::Del(keys)
        }
        OP_CLEAR => Record::Clear,
        OP_END => {
            let n = r.take(8)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(n);
            Record::End(u64::from_le_bytes(b))
        }
        _ => return Err(FormatError::BadPayload("unknown operation")),
    };
    if !r.b.is_empty() {
        return Err(FormatError::BadPayload("bytes after the last item"));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut out = Vec::new();
        push_set(&mut out, [("a", "1"), ("bé", "2€")].into_iter());
        push_del(&mut out, ["a"].into_iter());
        push_clear(&mut out);
        push_end(&mut out, 7);
        let mut at = 0;
        let mut got = Vec::new();
        while at < out.len() {
            let (r, n) = read_record(&out[at..]).unwrap();
            got.push(r);
            at += n;
        }
        assert_eq!(
            got,
            vec![
                Record::Set(vec![("a".into(), "1".into()), ("bé".into(), "2€".into())]),
                Record::Del(vec!["a".into()]),
                Record::Clear,
                Record::End(7),
            ]
        );
    }

    #[test]
    fn damage_is_detected() {
        let mut out = Vec::new();
        push_set(&mut out, [("key", "value")].into_iter());
        for cut in 0..out.len() {
            assert_eq!(
                read_record(&out[..cut]),
                Err(FormatError::Truncated),
                "cut {cut}"
            );
        }
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x40;
            assert!(read_record(&bad).is_err(), "flip at {i} went unseen");
        }
        assert!(check_header(&header(LOG_MAGIC), LOG_MAGIC).is_ok());
        assert_eq!(
            check_header(&header(LOG_MAGIC), SNAPSHOT_MAGIC),
            Err(FormatError::BadMagic)
        );
        assert_eq!(check_header(b"KVS", LOG_MAGIC), Err(FormatError::Truncated));
    }
}
