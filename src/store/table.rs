//! One shard's pairs: a hash index of 8-byte slots (a location and half
//! the key's hash) into chunks of packed entries.
//!
//! Each entry is its key's and its value's length (LEB128: one byte each
//! below 128) followed by the key's and the value's bytes, packed into
//! 64 KiB chunks one after another. An index slot costs 9 bytes (8 +
//! hashbrown's control byte) instead of 25 for a boxed pair, and an entry
//! costs its bytes plus two, with no allocation of its own and no
//! allocator header. For 16-byte keys and 32-byte values that is about 70
//! resident bytes per pair where a `HashSet` of boxed pairs took 117
//! (BENCHMARKS.md, the store bench).
//!
//! A new value no longer than the old one is written over it, so a WRITE of
//! an existing key usually allocates nothing and frees nothing. A longer
//! one is appended and the old bytes become dead; deletions and shrinking
//! values leave dead bytes too. Once a quarter of the chunks is dead, the
//! live entries are copied into fresh chunks (amortised: each copy follows
//! at least a third as many dead bytes as it copies). Entries too large for
//! a chunk's comfort keep their key and value apart: a value handed over
//! in a buffer of its own ([`Cow::Owned`]) is kept as that buffer, not
//! copied (a 100 KiB SET's value was copied once more, with the shard
//! locked, after the reactor had copied it out of the request).
//!
//! Keys and values are bytes, any bytes (a RESP client's may be binary);
//! the course formats' narrower rules are theirs to check.

use slab::Slab;
use std::borrow::Cow;

/// Bytes per chunk; a chunk entry's offset is the low 16 bits of its location.
const CHUNK: usize = 1 << 16;
const OFFSET_BITS: u32 = 16;
/// Locations with this bit set are indices into the big entries.
const BIG: u32 = 1 << 31;
/// Chunks a table may have: what fits in the 15 bits left of a location
/// (2 GiB per shard). Beyond, entries get their own block.
const MAX_CHUNKS: usize = 1 << 15;
/// Entries longer than this are kept apart: packing them would waste the
/// end of many chunks.
const PACKED_MAX: usize = CHUNK / 16;

/// The store's hasher: foldhash, randomly seeded per store, so keys chosen
/// to collide in one process do not collide in another (a hashing flood
/// stays harmless), at a fraction of SipHash's cost on short keys. Every
/// method takes the key's hash from the caller, who also picks the shard
/// with it: one hash per key per operation.
pub type Hasher = foldhash::quality::RandomState;

#[derive(Default)]
pub struct Table {
    index: hashbrown::HashTable<Slot>,
    heap: Heap,
    /// Counts the changes that can move slots in the index (a key added
    /// or removed, room made): a [`Found`] from before one is not used.
    shape: u64,
}

/// Where a key's slot was in the index, from [`Table::slot_of`]: good
/// while the table's shape is what it was then.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    bucket: usize,
    shape: u64,
}

/// Where the entries live: packed chunks and big entries.
#[derive(Default)]
struct Heap {
    chunks: Vec<Vec<u8>>,
    big: Slab<Big>,
    /// Bytes in chunks no entry uses any more.
    dead: usize,
    /// Bytes in chunks, live or dead.
    used: usize,
}

/// An entry too large to pack.
struct Big {
    key: Box<[u8]>,
    value: Vec<u8>,
}

/// One entry of the index: where the entry is, and the low half of its
/// key's hash. The index hashes by that half alone (see [`index_hash`]), so
/// growing the table never reads a key back from the chunks (that was a
/// cache miss per entry, with the shard locked), and a probe that meets
/// another key's slot usually tells them apart without reading its key.
#[derive(Clone, Copy)]
struct Slot {
    loc: u32,
    tag: u32,
}

/// The hash the index files a key under, from the low half of its full
/// hash (the caller picks shards with the high half): hashbrown takes the
/// bucket from the low bits and its control tag from the top seven, both
/// from the same 32 bits here.
#[inline]
fn index_hash(tag: u32) -> u64 {
    ((tag as u64) << 32) | tag as u64
}

impl Table {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Makes room in the index for `keys` keys in all, so that filling it
    /// up to there never regrows it (a regrowth copies the index with the
    /// shard locked).
    pub fn reserve(&mut self, keys: usize) {
        let more = keys.saturating_sub(self.index.len());
        self.shape += 1;
        self.index.reserve(more, |s| index_hash(s.tag));
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let tag = hash as u32;
        self.index
            .find(index_hash(tag), |s| {
                s.tag == tag && self.heap.has_key(s.loc, key)
            })
            .map(|s| s.loc)
    }

    /// The value of `key` (whose hash is `hash`), as the bytes of the
    /// `&str` it was set to.
    pub fn get(&self, hash: u64, key: &[u8]) -> Option<&[u8]> {
        Some(self.heap.pair(self.find(hash, key)?).1)
    }

    /// Where `key`'s slot is in the index, for a read-modify-write that
    /// reads with [`Table::get_in`] and writes with [`Table::set_in`]
    /// without looking the key up again (an INCR looked it up twice).
    pub fn slot_of(&self, hash: u64, key: &[u8]) -> Option<Found> {
        let tag = hash as u32;
        let bucket = self.index.find_bucket_index(index_hash(tag), |s| {
            s.tag == tag && self.heap.has_key(s.loc, key)
        })?;
        Some(Found {
            bucket,
            shape: self.shape,
        })
    }

    /// The bucket of `found` if no key was added or removed since: then
    /// it still holds the same key's slot (a value rewritten or moved, or
    /// the chunks compacted, changes the slot's location, not its place).
    fn still(&self, found: Option<Found>) -> Option<usize> {
        found.filter(|f| f.shape == self.shape).map(|f| f.bucket)
    }

    /// [`Table::get`] through a slot from [`Table::slot_of`] (`None`: look
    /// the key up).
    pub fn get_in(&self, found: Option<Found>, hash: u64, key: &[u8]) -> Option<&[u8]> {
        match self.still(found).and_then(|b| self.index.get_bucket(b)) {
            Some(s) => Some(self.heap.pair(s.loc).1),
            None => self.get(hash, key),
        }
    }

    /// [`Table::set`] through a slot from [`Table::slot_of`] (`None`: look
    /// the key up); whether the key is new.
    pub fn set_in<'v>(
        &mut self,
        found: Option<Found>,
        hash: u64,
        key: &[u8],
        value: impl Into<Cow<'v, [u8]>>,
    ) -> bool {
        let bucket = self.still(found);
        let Table { index, heap, .. } = self;
        let Some(slot) = bucket.and_then(|b| index.get_bucket_mut(b)) else {
            return self.set(hash, key, value);
        };
        slot.loc = heap.replace(slot.loc, key, value.into());
        self.compact_if_due();
        false
    }

    pub fn contains(&self, hash: u64, key: &[u8]) -> bool {
        self.find(hash, key).is_some()
    }

    /// Sets `key` (whose hash is `hash`) to `value`, over the old value's
    /// bytes where it fits, or keeping a big value's own buffer as it is;
    /// whether the key is new.
    pub fn set<'v>(&mut self, hash: u64, key: &[u8], value: impl Into<Cow<'v, [u8]>>) -> bool {
        let value = value.into();
        let tag = hash as u32;
        let Table { index, heap, .. } = self;
        let found = index.entry(
            index_hash(tag),
            |s| s.tag == tag && heap.has_key(s.loc, key),
            |s| index_hash(s.tag),
        );
        let new = match found {
            hashbrown::hash_table::Entry::Occupied(mut slot) => {
                let loc = slot.get().loc;
                slot.get_mut().loc = heap.replace(loc, key, value);
                false
            }
            hashbrown::hash_table::Entry::Vacant(slot) => {
                let loc = heap.append(key, value);
                slot.insert(Slot { loc, tag });
                self.shape += 1;
                true
            }
        };
        self.compact_if_due();
        new
    }

    /// Removes `key` (whose hash is `hash`); whether it was there.
    pub fn remove(&mut self, hash: u64, key: &[u8]) -> bool {
        let tag = hash as u32;
        let Table { index, heap, .. } = self;
        match index.find_entry(index_hash(tag), |s| {
            s.tag == tag && heap.has_key(s.loc, key)
        }) {
            Ok(slot) => {
                let (s, _) = slot.remove();
                heap.release(s.loc);
                self.shape += 1;
                self.compact_if_due();
                true
            }
            Err(_) => false,
        }
    }

    /// Every pair, in no particular order, checked back into `&str`s: for
    /// whole-table walks (snapshots, KEYS, SCAN, FLUSH), not lookups.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.index.iter().map(|s| self.heap.pair(s.loc))
    }

    /// Every key's tag (the low half of its hash, which never changes),
    /// in no particular order, reading no key: for SCAN's cut.
    pub fn tags(&self) -> impl Iterator<Item = u32> + '_ {
        self.index.iter().map(|s| s.tag)
    }

    /// Every key with its tag, in no particular order.
    pub fn tagged_keys(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        self.index.iter().map(|s| (s.tag, self.heap.pair(s.loc).0))
    }

    #[inline]
    fn compact_if_due(&mut self) {
        if self.heap.dead > CHUNK && self.heap.dead * 4 > self.heap.used {
            self.compact();
        }
    }

    /// Copies every packed entry into fresh chunks, leaving the dead bytes
    /// behind.
    fn compact(&mut self) {
        let old = std::mem::take(&mut self.heap.chunks);
        self.heap.dead = 0;
        self.heap.used = 0;
        for s in self.index.iter_mut() {
            if s.loc & BIG == 0 {
                let (k, v, _) = parts(packed_at(&old, s.loc));
                s.loc = self.heap.append(k, Cow::Borrowed(v));
            }
        }
    }
}

impl Heap {
    /// The key and value of the entry at `loc`.
    #[inline]
    fn pair(&self, loc: u32) -> (&[u8], &[u8]) {
        if loc & BIG != 0 {
            return self
                .big
                .get((loc & !BIG) as usize)
                .map_or((&[], &[]), |b| (&b.key, &b.value));
        }
        let (k, v, _) = parts(packed_at(&self.chunks, loc));
        (k, v)
    }

    /// Whether the entry at `loc` has the key `key`: the lookup's inner
    /// loop, so it compares lengths first and bytes only then.
    #[inline]
    fn has_key(&self, loc: u32, key: &[u8]) -> bool {
        if loc & BIG != 0 {
            return self.pair(loc).0 == key;
        }
        let b = packed_at(&self.chunks, loc);
        match *b {
            [k, v, ..] if k < 0x80 && v < 0x80 => {
                k as usize == key.len() && b.get(2..2 + key.len()) == Some(key)
            }
            _ => parts(b).0 == key,
        }
    }

    /// Puts `key`'s new value in place of the entry at `loc`: over it if it
    /// fits, in a big entry's place if the value comes in its own buffer,
    /// elsewhere otherwise; where the entry is now.
    fn replace(&mut self, loc: u32, key: &[u8], value: Cow<'_, [u8]>) -> u32 {
        // The commonest rewrite, a counter's or a fixed-size value's: the
        // same length, so only the value's bytes change (the key's and the
        // lengths' are already there).
        if let Some(old) = self
            .packed_value_mut(loc)
            .filter(|v| v.len() == value.len())
        {
            old.copy_from_slice(&value);
            return loc;
        }
        let need = encoded_len(key.len(), value.len());
        if loc & BIG != 0 && need > PACKED_MAX {
            if let Some(b) = self.big.get_mut((loc & !BIG) as usize) {
                match value {
                    Cow::Owned(v) => b.value = exact(v),
                    Cow::Borrowed(v) if v.len() == b.value.len() => b.value.copy_from_slice(v),
                    Cow::Borrowed(v) => b.value = v.to_vec(),
                }
                return loc;
            }
        }
        if loc & BIG == 0 && self.overwrite(loc, key, &value, need) {
            return loc;
        }
        self.release(loc);
        self.append(key, value)
    }

    /// The value's bytes of the packed entry at `loc`, to write over.
    fn packed_value_mut(&mut self, loc: u32) -> Option<&mut [u8]> {
        if loc & BIG != 0 {
            return None;
        }
        let (c, off) = split_loc(loc);
        let entry = self.chunks.get_mut(c)?.get_mut(off..)?;
        let (_, v, end) = parts(entry);
        entry.get_mut(end - v.len()..end)
    }

    /// Writes `key`'s new entry, `need` bytes, over the packed one at `loc`
    /// if it is no longer; the bytes left over become dead.
    fn overwrite(&mut self, loc: u32, key: &[u8], value: &[u8], need: usize) -> bool {
        let (c, off) = split_loc(loc);
        let Some(chunk) = self.chunks.get_mut(c) else {
            return false;
        };
        let old = parts(chunk.get(off..).unwrap_or(&[])).2;
        match chunk.get_mut(off..off + need) {
            Some(place) if need <= old => {
                encode_into(place, key, value);
                self.dead += old - need;
                true
            }
            _ => false,
        }
    }

    /// Marks the entry at `loc` as gone.
    fn release(&mut self, loc: u32) {
        if loc & BIG != 0 {
            self.big.try_remove((loc & !BIG) as usize);
        } else {
            self.dead += parts(packed_at(&self.chunks, loc)).2;
        }
    }

    /// Appends an entry to the last chunk, a new one, or the big entries;
    /// its location.
    fn append(&mut self, key: &[u8], value: Cow<'_, [u8]>) -> u32 {
        let need = encoded_len(key.len(), value.len());
        if need <= PACKED_MAX {
            let chunks = &mut self.chunks;
            let room = chunks.last().is_some_and(|c| CHUNK - c.len() >= need);
            if room || chunks.len() < MAX_CHUNKS {
                if !room {
                    chunks.push(Vec::with_capacity(CHUNK));
                }
                let c = chunks.len() - 1;
                let chunk = &mut chunks[c];
                let off = chunk.len();
                let mut head = [0u8; 20];
                let at = put_varint(&mut head, 0, key.len());
                let at = put_varint(&mut head, at, value.len());
                chunk.extend_from_slice(&head[..at]);
                chunk.extend_from_slice(key);
                chunk.extend_from_slice(&value);
                self.used += need;
                return ((c as u32) << OFFSET_BITS) | off as u32;
            }
        }
        let big = Big {
            key: key.into(),
            value: exact(value.into_owned()),
        };
        BIG | self.big.insert(big) as u32
    }
}

/// `v` holding no more room than its bytes: a buffer kept for a value
/// should not keep what it was read into beyond it.
fn exact(mut v: Vec<u8>) -> Vec<u8> {
    v.shrink_to_fit();
    v
}

/// Whether a value of `vlen` bytes under a key of `klen` is kept apart,
/// in the buffer it is handed over in (see [`Cow::Owned`] in
/// [`Table::set`]); a smaller one is copied into a chunk.
pub fn keeps_buffer(klen: usize, vlen: usize) -> bool {
    encoded_len(klen, vlen) > PACKED_MAX
}

fn split_loc(loc: u32) -> (usize, usize) {
    (
        (loc >> OFFSET_BITS) as usize,
        (loc & ((1 << OFFSET_BITS) - 1)) as usize,
    )
}

/// The bytes from the packed entry at `loc` to the end of its chunk.
#[inline]
fn packed_at(chunks: &[Vec<u8>], loc: u32) -> &[u8] {
    let (c, off) = split_loc(loc);
    chunks.get(c).and_then(|c| c.get(off..)).unwrap_or(&[])
}

/// Bytes an entry takes.
fn encoded_len(klen: usize, vlen: usize) -> usize {
    varint_len(klen) + varint_len(vlen) + klen + vlen
}

/// Writes the entry into `out`, which is exactly [`encoded_len`] long.
fn encode_into(out: &mut [u8], key: &[u8], value: &[u8]) {
    let mut at = put_varint(out, 0, key.len());
    at = put_varint(out, at, value.len());
    out[at..at + key.len()].copy_from_slice(key);
    out[at + key.len()..at + key.len() + value.len()].copy_from_slice(value);
}

/// The key, the value and the encoded length of the entry `b` starts with.
#[inline]
fn parts(b: &[u8]) -> (&[u8], &[u8], usize) {
    if let [k, v, ..] = *b {
        if k < 0x80 && v < 0x80 {
            let (v, end) = (2 + k as usize, 2 + k as usize + v as usize);
            if let (Some(key), Some(value)) = (b.get(2..v), b.get(v..end)) {
                return (key, value, end);
            }
        }
    }
    parts_slow(b)
}

/// [`parts`] for entries with a length of 128 or more.
fn parts_slow(b: &[u8]) -> (&[u8], &[u8], usize) {
    let (klen, a) = varint(b);
    let (vlen, c) = varint(b.get(a..).unwrap_or(&[]));
    let k = a + c;
    let v = k + klen;
    let end = v + vlen;
    (
        b.get(k..v).unwrap_or(&[]),
        b.get(v..end).unwrap_or(&[]),
        end,
    )
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn put_varint(out: &mut [u8], mut at: usize, mut n: usize) -> usize {
    while n >= 0x80 {
        out[at] = (n as u8) | 0x80;
        n >>= 7;
        at += 1;
    }
    out[at] = n as u8;
    at + 1
}

/// The number `b` starts with and how many bytes it took.
fn varint(b: &[u8]) -> (usize, usize) {
    let mut n = 0usize;
    for (i, &byte) in b.iter().enumerate().take(10) {
        n |= ((byte & 0x7f) as usize) << (7 * i);
        if byte < 0x80 {
            return (n, i + 1);
        }
    }
    (0, b.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// One seed for every test table: a fixed one would do as well.
    fn hasher() -> &'static Hasher {
        static H: std::sync::OnceLock<Hasher> = std::sync::OnceLock::new();
        H.get_or_init(Hasher::default)
    }

    fn h(key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        hasher().hash_one(key)
    }

    // The tests speak in text; the table in bytes.
    fn get(t: &Table, key: impl AsRef<[u8]>) -> Option<&str> {
        let key = key.as_ref();
        t.get(h(key), key)
            .map(|v| std::str::from_utf8(v).expect("text"))
    }

    fn set(t: &mut Table, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let key = key.as_ref();
        t.set(h(key), key, value.as_ref());
    }

    fn remove(t: &mut Table, key: impl AsRef<[u8]>) -> bool {
        let key = key.as_ref();
        t.remove(h(key), key)
    }

    #[test]
    fn a_found_slot_reads_and_writes_its_key_until_keys_come_or_go() {
        let mut t = Table::default();
        for i in 0..100 {
            set(&mut t, format!("k{i}"), format!("v{i}"));
        }
        let key = b"k7".as_slice();
        let found = t.slot_of(h(key), key);
        assert!(found.is_some());
        assert_eq!(t.get_in(found, h(key), key), Some(b"v7".as_slice()));
        // Longer: moved in the heap, same slot; still found after it.
        assert!(!t.set_in(found, h(key), key, b"a longer value".as_slice()));
        assert_eq!(
            t.get_in(found, h(key), key),
            Some(b"a longer value".as_slice())
        );
        // Keys added and removed (the index regrows, slots move): the old
        // slot is not trusted, and every key keeps its own value.
        for i in 100..1000 {
            set(&mut t, format!("k{i}"), format!("v{i}"));
        }
        assert!(remove(&mut t, "k8"));
        assert_eq!(
            t.get_in(found, h(key), key),
            Some(b"a longer value".as_slice())
        );
        assert!(!t.set_in(found, h(key), key, b"x".as_slice()));
        for i in (0..1000).filter(|&i| i != 7 && i != 8) {
            assert_eq!(get(&t, format!("k{i}")), Some(format!("v{i}").as_str()));
        }
        assert_eq!(get(&t, "k7"), Some("x"));
        // A key that was absent is looked up at the write, and made.
        let new = b"new".as_slice();
        let none = t.slot_of(h(new), new);
        assert!(none.is_none());
        assert!(t.set_in(none, h(new), new, b"1".as_slice()));
        assert_eq!(get(&t, "new"), Some("1"));
    }

    #[test]
    fn set_get_remove_and_overwrite_in_place() {
        let mut t = Table::default();
        set(&mut t, "clé", "välue");
        assert_eq!(get(&t, "clé"), Some("välue"));
        set(&mut t, "clé", "v2");
        assert_eq!(get(&t, "clé"), Some("v2"));
        assert_eq!(
            t.heap.dead,
            "välue".len() - 2,
            "the shorter value took the place"
        );
        set(&mut t, "clé", "a much longer value than before");
        assert_eq!(get(&t, "clé"), Some("a much longer value than before"));
        assert_eq!(t.len(), 1);
        assert!(remove(&mut t, "clé"));
        assert!(!remove(&mut t, "clé"));
        assert_eq!(get(&t, "clé"), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_reserved_index_does_not_grow_while_filling() {
        let mut t = Table::default();
        t.reserve(5000);
        let room = t.index.capacity();
        assert!(room >= 5000);
        for i in 0..5000 {
            set(&mut t, format!("k{i}"), "v");
        }
        assert_eq!(t.index.capacity(), room);
        assert_eq!(get(&t, "k4999"), Some("v"));
    }

    #[test]
    fn lengths_across_varint_and_block_boundaries() {
        let mut t = Table::default();
        let key = |n: usize| format!("k{n}-{}", "x".repeat(n % 300));
        // Values of n bytes ("é" is two); the last three need own blocks.
        let sizes = [
            0,
            1,
            127,
            128,
            129,
            PACKED_MAX / 2,
            PACKED_MAX,
            PACKED_MAX + 1,
            70_000,
        ];
        for n in sizes {
            let v = "é".repeat(n / 2);
            set(&mut t, key(n), &v);
            assert_eq!(get(&t, key(n)), Some(v.as_str()), "length {n}");
        }
        assert_eq!(t.heap.big.len(), 3);
        // A big value shrinking moves back into a chunk; one growing leaves.
        set(&mut t, key(70_000), "small");
        assert_eq!(get(&t, key(70_000)), Some("small"));
        set(&mut t, key(0), "y".repeat(9000));
        assert_eq!(get(&t, key(0)).map(str::len), Some(9000));
        assert_eq!(t.heap.big.len(), 3);
        for n in &sizes[1..] {
            assert!(get(&t, key(*n)).is_some());
        }
    }

    #[test]
    fn a_big_value_handed_over_is_kept_in_its_buffer() {
        let mut t = Table::default();
        let k = b"big".as_slice();
        let v = vec![7u8; PACKED_MAX + 10];
        let at = v.as_ptr();
        t.set(h(k), k, v);
        assert_eq!(t.get(h(k), k).map(<[u8]>::as_ptr), Some(at), "not copied");
        // Over a big entry: the new buffer takes the old one's place.
        let w = vec![8u8; 3 * PACKED_MAX];
        let at = w.as_ptr();
        t.set(h(k), k, w);
        assert_eq!(t.get(h(k), k).map(<[u8]>::as_ptr), Some(at));
        assert_eq!(t.heap.big.len(), 1);
        // Borrowed bytes are copied, as before; a small value handed over
        // goes into a chunk and the big entry is gone.
        t.set(h(k), k, &[9u8; PACKED_MAX + 1][..]);
        assert_eq!(t.get(h(k), k), Some(&[9u8; PACKED_MAX + 1][..]));
        t.set(h(k), k, b"small".to_vec());
        assert_eq!(t.get(h(k), k), Some(&b"small"[..]));
        assert!(t.heap.big.is_empty());
        // A buffer with room to spare keeps none of it.
        let mut roomy = Vec::with_capacity(4 * PACKED_MAX);
        roomy.resize(PACKED_MAX + 1, 1u8);
        t.set(h(k), k, roomy);
        assert_eq!(
            t.heap
                .big
                .iter()
                .map(|(_, b)| b.value.capacity())
                .sum::<usize>(),
            PACKED_MAX + 1
        );
        assert!(!keeps_buffer(3, PACKED_MAX - 6) && keeps_buffer(3, PACKED_MAX - 5));
    }

    /// The table against a `HashMap` over a long run of sets of varied
    /// sizes and removals: compaction must keep every live pair intact and
    /// bound the dead bytes.
    #[test]
    fn agrees_with_a_hashmap_through_compactions() {
        let mut t = Table::default();
        let mut m: HashMap<String, String> = HashMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut compactions = 0;
        let mut used = 0;
        for _ in 0..300_000 {
            let r = next();
            let key = format!("key{}", r % 5000);
            if r % 7 == 0 {
                assert_eq!(remove(&mut t, &key), m.remove(&key).is_some());
            } else {
                let value = "v".repeat((r >> 20) as usize % 200);
                set(&mut t, &key, &value);
                m.insert(key, value);
            }
            // Only a compaction makes the chunks' bytes fewer.
            if t.heap.used < used {
                compactions += 1;
            }
            used = t.heap.used;
            assert!(t.heap.dead <= CHUNK.max(t.heap.used / 4) + PACKED_MAX);
        }
        assert!(compactions > 0, "the run should have compacted");
        assert_eq!(t.len(), m.len());
        for (k, v) in &m {
            assert_eq!(get(&t, k), Some(v.as_str()));
        }
        let mut pairs: Vec<(&[u8], &[u8])> = t.iter().collect();
        pairs.sort_unstable();
        let mut want: Vec<(&[u8], &[u8])> = m
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        want.sort_unstable();
        assert_eq!(pairs, want);
    }
}
