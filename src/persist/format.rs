//! The data dir's file format, shared by log segments and snapshots.
//!
//! Version 2 (written by this kvs):
//! - a file starts with a 32-byte header: 8 bytes of magic, `version: u32`,
//!   `dir_id: u64` (the data dir the file belongs to), `generation: u64`
//!   (the number in its name) and a CRC-32 of those 28 bytes; so a file
//!   copied in from another dir, or renamed, is told apart by name;
//! - a record is a 12-byte frame, `len: u32`, `crc: u32` (of the payload)
//!   and `frame_crc: u32` (of the eight bytes before it), then `len` bytes
//!   of payload. The frame's own checksum means a damaged length is never
//!   trusted: without it a flipped bit in a length in the middle of a log
//!   looked like a record cut short by a crash, and everything after it
//!   was cut off as a torn tail;
//! - payloads: `op: u8`, then for sets `n: u32` and `n x (key, value)`,
//!   for deletes `n: u32` and `n` keys, each string a LEB128 length and its
//!   bytes (so a length is not bound to one byte, and a mutation of any
//!   size is one record); `3` clears; `4, n: u64` ends a snapshot of `n`
//!   pairs; `5, g: u64` seals a segment: the log goes on in segment `g`;
//!   `6, n: u32, n x (LEB128 length, payload)` is a transaction's
//!   mutations (sets, deletes, clears), replayed all or none.
//!
//! Version 1 (read, never written): a 12-byte header (magic and version),
//! 8-byte frames (`len`, `crc`), counts of `u16` and one-byte lengths.
//! Integers are little-endian in both.

use std::fmt;

pub const LOG_MAGIC: &[u8; 8] = b"KVSLOG\0\0";
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"KVSSNAP\0";
/// The version written.
pub const VERSION: u32 = 2;
pub const HEADER_LEN: usize = 32;
pub const HEADER_LEN_V1: usize = 12;
/// Bytes before a record's payload.
pub const FRAME_LEN: usize = 12;
pub const FRAME_LEN_V1: usize = 8;
/// A version 1 record longer than this is damage, not data. Version 2
/// lengths are covered by the frame's checksum, and bounded only by the
/// file.
pub const MAX_RECORD_V1: usize = 64 << 20;
/// A snapshot's pairs go in records of about this much payload, so that
/// damage to one costs at most that record's pairs under `--repair`.
pub const SNAPSHOT_RECORD: usize = 1 << 20;

const OP_SET: u8 = 1;
const OP_DEL: u8 = 2;
const OP_CLEAR: u8 = 3;
const OP_END: u8 = 4;
const OP_SEAL: u8 = 5;
const OP_GROUP: u8 = 6;
const OP_EXPIRE: u8 = 7;

/// Which layout a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn header_len(self) -> usize {
        match self {
            Version::V1 => HEADER_LEN_V1,
            Version::V2 => HEADER_LEN,
        }
    }

    pub fn frame_len(self) -> usize {
        match self {
            Version::V1 => FRAME_LEN_V1,
            Version::V2 => FRAME_LEN,
        }
    }
}

/// What a file's header says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: Version,
    /// The data dir it belongs to (version 2 only).
    pub dir_id: Option<u64>,
    /// The generation it was written as (version 2 only).
    pub generation: Option<u64>,
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Set(Vec<(Vec<u8>, Vec<u8>)>),
    Del(Vec<Vec<u8>>),
    Clear,
    End(u64),
    Seal(u64),
    /// A transaction's mutations, in order.
    Group(Vec<Record>),
    /// Keys' deadlines (Unix milliseconds), or `None`: no deadline now.
    Expire(Vec<(Vec<u8>, Option<u64>)>),
}

impl Record {
    /// Keys the record names (for saying what a repair dropped).
    pub fn keys(&self) -> usize {
        match self {
            Record::Set(p) => p.len(),
            Record::Del(k) => k.len(),
            Record::Group(g) => g.iter().map(Record::keys).sum(),
            Record::Expire(k) => k.len(),
            _ => 0,
        }
    }
}

/// Why bytes are not a valid file or record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    BadMagic,
    BadVersion(u32),
    BadHeaderChecksum,
    /// The header or a record stops at the end of the file.
    Truncated,
    /// A record's frame (its length) is damaged.
    BadFrame,
    BadChecksum,
    /// A version 1 length beyond [`MAX_RECORD_V1`].
    TooLong(usize),
    /// The checksum holds but the payload does not parse.
    BadPayload(&'static str),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::BadMagic => f.write_str("not a kvs data file (bad magic)"),
            FormatError::BadVersion(v) => {
                write!(f, "format version {v}, this kvs reads 1 and {VERSION}")
            }
            FormatError::BadHeaderChecksum => f.write_str("file header checksum mismatch"),
            FormatError::Truncated => f.write_str("cut off (incomplete record)"),
            FormatError::BadFrame => {
                f.write_str("record frame checksum mismatch (a damaged length)")
            }
            FormatError::BadChecksum => f.write_str("checksum mismatch (damaged record)"),
            FormatError::TooLong(n) => write!(f, "record length {n} is impossible"),
            FormatError::BadPayload(why) => write!(f, "bad record: {why}"),
        }
    }
}

impl std::error::Error for FormatError {}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// A version 2 header for a file of `dir_id` written as `generation`.
pub fn header(magic: &[u8; 8], dir_id: u64, generation: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&dir_id.to_le_bytes());
    h[20..28].copy_from_slice(&generation.to_le_bytes());
    let crc = checksum(&h[..28]);
    h[28..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A version 1 header (for tests of reading old files).
pub fn header_v1(magic: &[u8; 8]) -> [u8; HEADER_LEN_V1] {
    let mut h = [0u8; HEADER_LEN_V1];
    h[..8].copy_from_slice(magic);
    h[8..].copy_from_slice(&1u32.to_le_bytes());
    h
}

/// Reads a file's header.
pub fn read_header(bytes: &[u8], magic: &[u8; 8]) -> Result<Header, FormatError> {
    if bytes.len() < HEADER_LEN_V1 {
        return Err(FormatError::Truncated);
    }
    if &bytes[..8] != magic {
        return Err(FormatError::BadMagic);
    }
    match u32_at(bytes, 8) {
        1 => Ok(Header {
            version: Version::V1,
            dir_id: None,
            generation: None,
        }),
        2 => {
            if bytes.len() < HEADER_LEN {
                return Err(FormatError::Truncated);
            }
            if checksum(&bytes[..28]) != u32_at(bytes, 28) {
                return Err(FormatError::BadHeaderChecksum);
            }
            Ok(Header {
                version: Version::V2,
                dir_id: Some(u64_at(bytes, 12)),
                generation: Some(u64_at(bytes, 20)),
            })
        }
        v => Err(FormatError::BadVersion(v)),
    }
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
/// `out`: its payload's length and checksum, and the frame's checksum.
fn seal_record(out: &mut [u8], start: usize) {
    let (frame, payload) = out[start..].split_at_mut(FRAME_LEN);
    let len = payload.len() as u32;
    let crc = checksum(payload);
    frame[..4].copy_from_slice(&len.to_le_bytes());
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    let frame_crc = checksum(&frame[..8]);
    frame[8..].copy_from_slice(&frame_crc.to_le_bytes());
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

#[inline]
fn push_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[inline]
fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    push_len(out, s.len());
    out.extend_from_slice(s);
}

/// Appends one record of `op` holding every item `write` writes, counting
/// as it goes (no list is built first).
fn push_items<T>(
    out: &mut Vec<u8>,
    op: u8,
    items: impl Iterator<Item = T>,
    write: impl Fn(&mut Vec<u8>, T),
) {
    let start = out.len();
    // The frame, the op and the count, filled in at the end.
    out.extend_from_slice(&[0u8; FRAME_LEN]);
    out.extend_from_slice(&[op, 0, 0, 0, 0]);
    let mut n: u32 = 0;
    for item in items {
        write(out, item);
        n += 1;
    }
    let count_at = start + FRAME_LEN + 1;
    out[count_at..count_at + 4].copy_from_slice(&n.to_le_bytes());
    seal_record(out, start);
}

/// Appends one set record for `pairs`, however many.
pub fn push_set<'a, 'b>(out: &mut Vec<u8>, pairs: impl Iterator<Item = (&'a [u8], &'b [u8])>) {
    push_items(out, OP_SET, pairs, |p, (k, v)| {
        push_str(p, k);
        push_str(p, v);
    });
}

pub fn push_del<'a>(out: &mut Vec<u8>, keys: impl Iterator<Item = &'a [u8]>) {
    push_items(out, OP_DEL, keys, push_str);
}

/// Appends one record of deadlines (`None`: the key has none now).
pub fn push_expire<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = (&'a [u8], Option<u64>)>) {
    push_items(out, OP_EXPIRE, items, |p, (k, at)| {
        push_str(p, k);
        p.extend_from_slice(&at.unwrap_or(0).to_le_bytes());
    });
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

/// The last record of a segment that the log left for segment `next`.
pub fn push_seal(out: &mut Vec<u8>, next: u64) {
    push_record(out, |p| {
        p.push(OP_SEAL);
        p.extend_from_slice(&next.to_le_bytes());
    });
}

/// Appends one record holding a transaction's mutations (see the module's
/// doc), each encoded as its own record would be.
pub fn push_group(out: &mut Vec<u8>, mutations: &[crate::store::Mutation]) {
    use crate::store::Mutation;
    push_record(out, |p| {
        p.push(OP_GROUP);
        p.extend_from_slice(&(mutations.len() as u32).to_le_bytes());
        let mut one = Vec::new();
        for m in mutations {
            one.clear();
            match m {
                Mutation::Set(pairs) => {
                    push_set(&mut one, pairs.iter().map(|(k, v)| (&k[..], &v[..])))
                }
                Mutation::Del(keys) => push_del(&mut one, keys.iter().map(Vec::as_slice)),
                Mutation::Clear => push_clear(&mut one),
                Mutation::Expire(k, at) => push_expire(&mut one, std::iter::once((&k[..], *at))),
            }
            // The sub-record's payload, without its frame.
            let payload = &one[FRAME_LEN..];
            push_len(p, payload.len());
            p.extend_from_slice(payload);
        }
    });
}

/// Appends a snapshot's pairs as set records of about
/// [`SNAPSHOT_RECORD`] bytes each, the deadlines of those that have one,
/// then its end record.
pub fn push_snapshot(
    out: &mut Vec<u8>,
    pairs: &[(Vec<u8>, Vec<u8>)],
    deadlines: &[(Vec<u8>, u64)],
) {
    let mut rest = pairs;
    while !rest.is_empty() {
        let mut size = 0;
        let take = rest
            .iter()
            .take_while(|(k, v)| {
                let fits = size == 0 || size < SNAPSHOT_RECORD;
                size += k.len() + v.len() + 2;
                fits
            })
            .count();
        let (now, later) = rest.split_at(take);
        push_set(out, now.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        rest = later;
    }
    for chunk in deadlines.chunks(SNAPSHOT_RECORD / 64) {
        push_expire(out, chunk.iter().map(|(k, at)| (k.as_slice(), Some(*at))));
    }
    push_end(out, pairs.len() as u64);
}

/// What the frame at the front of `bytes` says, before its payload is
/// looked at: the record's whole length, or why the frame is bad.
pub fn read_frame(bytes: &[u8], version: Version) -> Result<usize, FormatError> {
    let frame = version.frame_len();
    if bytes.len() < frame {
        return Err(FormatError::Truncated);
    }
    let len = u32_at(bytes, 0) as usize;
    match version {
        Version::V1 if len > MAX_RECORD_V1 => return Err(FormatError::TooLong(len)),
        Version::V1 => {}
        Version::V2 => {
            if checksum(&bytes[..8]) != u32_at(bytes, 8) {
                return Err(FormatError::BadFrame);
            }
        }
    }
    Ok(frame + len)
}

/// Reads the record at the front of `bytes`: the record and its length
/// with the frame.
pub fn read_record(bytes: &[u8], version: Version) -> Result<(Record, usize), FormatError> {
    let total = read_frame(bytes, version)?;
    let Some(payload) = bytes.get(version.frame_len()..total) else {
        return Err(FormatError::Truncated);
    };
    if checksum(payload) != u32_at(bytes, 4) {
        return Err(FormatError::BadChecksum);
    }
    Ok((decode_payload(payload, version)?, total))
}

struct Reader<'a> {
    b: &'a [u8],
    version: Version,
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

    fn len(&mut self) -> Result<usize, FormatError> {
        if self.version == Version::V1 {
            return Ok(self.take(1)?[0] as usize);
        }
        let mut n: u64 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.take(1)?[0];
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                // One way to write each length: a last byte of zero after
                // others is a longer spelling kvs never writes.
                if b == 0 && shift > 0 {
                    return Err(FormatError::BadPayload("a length written too long"));
                }
                return usize::try_from(n)
                    .map_err(|_| FormatError::BadPayload("a length too long"));
            }
        }
        Err(FormatError::BadPayload("a length too long"))
    }

    /// A key or value: any bytes (a RESP client's may be binary).
    fn string(&mut self) -> Result<Vec<u8>, FormatError> {
        let n = self.len()?;
        self.take(n).map(<[u8]>::to_vec)
    }

    /// A count of items; kvs never writes a record of none.
    fn count(&mut self) -> Result<usize, FormatError> {
        let n = match self.version {
            Version::V1 => {
                let c = self.take(2)?;
                u16::from_le_bytes([c[0], c[1]]) as usize
            }
            Version::V2 => u32_at(self.take(4)?, 0) as usize,
        };
        match n {
            0 => Err(FormatError::BadPayload("a mutation of nothing")),
            n => Ok(n),
        }
    }

    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64_at(self.take(8)?, 0))
    }
}

fn decode_payload(payload: &[u8], version: Version) -> Result<Record, FormatError> {
    let Some((&op, rest)) = payload.split_first() else {
        return Err(FormatError::BadPayload("empty"));
    };
    let mut r = Reader { b: rest, version };
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
        OP_EXPIRE if version == Version::V2 => {
            let n = r.count()?;
            let mut items = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let key = r.string()?;
                let at = r.u64()?;
                items.push((key, (at != 0).then_some(at)));
            }
            Record::Expire(items)
        }
        OP_END => Record::End(r.u64()?),
        OP_SEAL if version == Version::V2 => Record::Seal(r.u64()?),
        OP_GROUP if version == Version::V2 => {
            let n = r.count()?;
            let mut group = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let len = r.len()?;
                let one = r.take(len)?;
                // Checked before decoding: a group inside a group inside
                // ... would otherwise recurse as deep as a hostile file is
                // long.
                if !matches!(one.first(), Some(&(OP_SET | OP_DEL | OP_CLEAR | OP_EXPIRE))) {
                    return Err(FormatError::BadPayload("a group of other than changes"));
                }
                match decode_payload(one, version)? {
                    m @ (Record::Set(_) | Record::Del(_) | Record::Clear | Record::Expire(_)) => {
                        group.push(m)
                    }
                    _ => return Err(FormatError::BadPayload("a group of other than changes")),
                }
            }
            Record::Group(group)
        }
        _ => return Err(FormatError::BadPayload("unknown operation")),
    };
    if !r.b.is_empty() {
        return Err(FormatError::BadPayload("bytes after the last item"));
    }
    Ok(record)
}

/// Writes version 1 records, as kvs before version 2 did: for tests that
/// prove old data dirs still load.
pub mod v1 {
    use super::{checksum, OP_DEL, OP_SET};

    fn push(out: &mut Vec<u8>, payload: &[u8]) {
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&checksum(payload).to_le_bytes());
        out.extend_from_slice(payload);
    }

    fn push_strs(p: &mut Vec<u8>, op: u8, items: &[&str]) {
        p.push(op);
        let n = if op == OP_SET {
            items.len() / 2
        } else {
            items.len()
        };
        p.extend_from_slice(&(n as u16).to_le_bytes());
        for s in items {
            p.push(s.len() as u8);
            p.extend_from_slice(s.as_bytes());
        }
    }

    /// A set record of `pairs` (at most 65,535).
    pub fn push_set(out: &mut Vec<u8>, pairs: &[(&str, &str)]) {
        let flat: Vec<&str> = pairs.iter().flat_map(|(k, v)| [*k, *v]).collect();
        let mut p = Vec::new();
        push_strs(&mut p, OP_SET, &flat);
        push(out, &p);
    }

    pub fn push_del(out: &mut Vec<u8>, keys: &[&str]) {
        let mut p = Vec::new();
        push_strs(&mut p, OP_DEL, keys);
        push(out, &p);
    }

    pub fn push_end(out: &mut Vec<u8>, pairs: u64) {
        let mut p = vec![super::OP_END];
        p.extend_from_slice(&pairs.to_le_bytes());
        push(out, &p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8], version: Version) -> Vec<Record> {
        let mut at = 0;
        let mut got = Vec::new();
        while at < bytes.len() {
            let (r, n) = read_record(&bytes[at..], version).unwrap();
            got.push(r);
            at += n;
        }
        got
    }

    #[test]
    fn records_round_trip() {
        let mut out = Vec::new();
        push_set(
            &mut out,
            [("a", "1"), ("bé", "2€")]
                .into_iter()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        );
        push_del(&mut out, [&b"a"[..]].into_iter());
        push_clear(&mut out);
        push_end(&mut out, 7);
        push_seal(&mut out, 9);
        assert_eq!(
            read_all(&out, Version::V2),
            vec![
                Record::Set(vec![("a".into(), "1".into()), ("bé".into(), "2€".into())]),
                Record::Del(vec!["a".into()]),
                Record::Clear,
                Record::End(7),
                Record::Seal(9),
            ]
        );
    }

    #[test]
    fn a_group_is_one_record() {
        use crate::store::Mutation;
        let muts = vec![
            Mutation::Set(vec![("a".into(), "1".into())]),
            Mutation::Del(vec!["b".into()]),
            Mutation::Clear,
        ];
        let mut out = Vec::new();
        push_group(&mut out, &muts);
        let (r, n) = read_record(&out, Version::V2).unwrap();
        assert_eq!(n, out.len());
        assert_eq!(
            r,
            Record::Group(vec![
                Record::Set(vec![("a".into(), "1".into())]),
                Record::Del(vec!["b".into()]),
                Record::Clear,
            ])
        );
    }

    #[test]
    fn nested_groups_are_refused_without_recursing() {
        // A group whose one member is a group, 20,000 deep (deeper than
        // a test thread's stack allows recursing): refused at the first.
        let mut payload = vec![OP_SET];
        for _ in 0..20_000 {
            let mut outer = vec![OP_GROUP, 1, 0, 0, 0];
            push_len(&mut outer, payload.len());
            outer.extend_from_slice(&payload);
            payload = outer;
        }
        let mut out = Vec::new();
        push_record(&mut out, |p| p.extend_from_slice(&payload));
        assert_eq!(
            read_record(&out, Version::V2),
            Err(FormatError::BadPayload("a group of other than changes"))
        );
    }

    #[test]
    fn version_1_records_still_read() {
        let mut out = Vec::new();
        v1::push_set(&mut out, &[("a", "1"), ("b", "2")]);
        v1::push_del(&mut out, &["a"]);
        v1::push_end(&mut out, 1);
        assert_eq!(
            read_all(&out, Version::V1),
            vec![
                Record::Set(vec![("a".into(), "1".into()), ("b".into(), "2".into())]),
                Record::Del(vec!["a".into()]),
                Record::End(1),
            ]
        );
        let h = header_v1(LOG_MAGIC);
        assert_eq!(read_header(&h, LOG_MAGIC).unwrap().version, Version::V1);
    }

    #[test]
    fn a_mutation_of_any_size_is_one_record() {
        let keys: Vec<String> = (0..70_000).map(|i| format!("k{i}")).collect();
        let mut out = Vec::new();
        push_set(&mut out, keys.iter().map(|k| (k.as_bytes(), &b"v"[..])));
        let (r, n) = read_record(&out, Version::V2).unwrap();
        assert_eq!(n, out.len());
        assert_eq!(r.keys(), 70_000);
    }

    #[test]
    fn lengths_go_beyond_one_byte() {
        for n in [
            0usize,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            1 << 21,
            u32::MAX as usize,
        ] {
            let mut out = Vec::new();
            push_len(&mut out, n);
            let mut r = Reader {
                b: &out,
                version: Version::V2,
            };
            assert_eq!(r.len().unwrap(), n);
            assert!(r.b.is_empty());
        }
    }

    #[test]
    fn snapshot_records_are_bounded() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..60_000)
            .map(|i| (format!("key{i:010}").into_bytes(), vec![b'v'; 30]))
            .collect();
        let mut out = Vec::new();
        push_snapshot(&mut out, &pairs, &[]);
        let records = read_all(&out, Version::V2);
        assert!(records.len() > 2, "{} records", records.len());
        let mut count = 0;
        for r in &records[..records.len() - 1] {
            let Record::Set(p) = r else { panic!() };
            let bytes: usize = p.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
            assert!(bytes <= SNAPSHOT_RECORD + 100, "{bytes}");
            count += p.len();
        }
        assert_eq!(count, pairs.len());
        assert_eq!(records.last(), Some(&Record::End(60_000)));
    }

    #[test]
    fn damage_is_detected() {
        let mut out = Vec::new();
        push_set(&mut out, [(&b"key"[..], &b"value"[..])].into_iter());
        for cut in 0..out.len() {
            assert_eq!(
                read_record(&out[..cut], Version::V2),
                Err(FormatError::Truncated),
                "cut {cut}"
            );
        }
        for i in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[i] ^= 1 << bit;
                let got = read_record(&bad, Version::V2);
                assert!(got.is_err(), "flip at {i}.{bit} went unseen");
                if i < FRAME_LEN {
                    // A bad length is never believed.
                    assert_eq!(got, Err(FormatError::BadFrame), "flip at {i}.{bit}");
                }
            }
        }
        let h = header(LOG_MAGIC, 5, 3);
        let read = read_header(&h, LOG_MAGIC).unwrap();
        assert_eq!((read.dir_id, read.generation), (Some(5), Some(3)));
        assert_eq!(read_header(&h, SNAPSHOT_MAGIC), Err(FormatError::BadMagic));
        let mut bad = h;
        bad[21] ^= 1;
        assert_eq!(
            read_header(&bad, LOG_MAGIC),
            Err(FormatError::BadHeaderChecksum)
        );
        assert_eq!(read_header(b"KVS", LOG_MAGIC), Err(FormatError::Truncated));
    }
}
