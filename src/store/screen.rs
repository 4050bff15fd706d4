//! Which changes of unwatched keys the store reports to its hook: a cheap
//! first look, taken on the writing thread under the shard lock, before a
//! change is built or the hook called.
//!
//! Pattern and key-event subscribers may want a change to any key, so the
//! hook filters every change while they exist. Most writes then touch keys
//! no pattern can match (`PSUBSCRIBE __keyspace@0__:user:*` and a write of
//! `usage:1`), and calling the hook only to hear "no" taxed every write by
//! a third. The screen holds the literal prefixes of the patterns (their
//! first eight bytes, for up to eight patterns; past that, their first
//! bytes) and the events someone hears by name. A change passing none of
//! them cannot interest anyone and is dropped after a few atomic loads; a
//! change passing one still goes through the hook's exact filter.

use super::KeyEvent;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Prefixes screened exactly (to their first eight bytes).
const PREFIXES: usize = 8;

/// [`AtomicScreen::shape`]'s bit for "every key passes".
const EVERY_KEY: u64 = 1 << 32;
/// Where [`AtomicScreen::shape`] keeps the count of prefixes.
const COUNT_SHIFT: u32 = 40;

/// A prefix's first eight bytes as a word, and which of its bytes count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Head {
    bytes: u64,
    mask: u64,
}

impl Head {
    fn of(prefix: &[u8]) -> Head {
        let n = prefix.len().min(8);
        let mut mask = [0u8; 8];
        mask[..n].fill(0xff);
        Head {
            bytes: word(prefix),
            mask: u64::from_le_bytes(mask),
        }
    }

    /// Whether a key whose first bytes are `key` (see [`word`]) may start
    /// with the prefix. A key shorter than the prefix reads as zero bytes
    /// past its end: it may pass (then the hook says no), never the reverse.
    fn admits(self, key: u64) -> bool {
        key & self.mask == self.bytes
    }
}

/// The first eight bytes of `b`, zero past its end.
#[inline]
fn word(b: &[u8]) -> u64 {
    if let Some(head) = b.first_chunk::<8>() {
        return u64::from_le_bytes(*head);
    }
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(w)
}

/// What may interest a subscriber: a key's prefix, or the event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyScreen {
    heads: Vec<Head>,
    /// Bit `b` set: a key starting with byte `b` may be wanted (looked
    /// at first, and alone once there are more than [`PREFIXES`] prefixes).
    first: [u64; 4],
    /// [`KeyEvent::bit`]s wanted whatever the key.
    events: u32,
    every_key: bool,
}

impl KeyScreen {
    /// Nothing passes.
    pub fn none() -> Self {
        Self::default()
    }

    /// Everything passes.
    pub fn everything() -> Self {
        KeyScreen {
            every_key: true,
            ..Self::default()
        }
    }

    /// Lets through keys that start with `prefix` (an empty prefix: all).
    pub fn add_prefix(&mut self, prefix: &[u8]) {
        let Some(&b) = prefix.first() else {
            self.every_key = true;
            return;
        };
        self.first[usize::from(b >> 6)] |= 1 << (b & 63);
        let head = Head::of(prefix);
        if !self.heads.contains(&head) {
            self.heads.push(head);
        }
    }

    /// Lets through every change that is one of `events` (a bit set).
    pub fn add_events(&mut self, events: u32) {
        self.events |= events;
    }

    fn is_none(&self) -> bool {
        !self.every_key && self.events == 0 && self.heads.is_empty()
    }
}

/// A [`KeyScreen`] that writers read while another thread replaces it.
/// Replacing it is a sequence lock: a writer that reads it mid-change
/// lets its change through, and the hook decides. (`any` alone is read
/// outside it: seen false, no screen in force let anything through.)
#[derive(Debug, Default)]
pub struct AtomicScreen {
    /// Whether anything passes at all.
    any: AtomicBool,
    /// Odd while a replacement is under way.
    sequence: AtomicU64,
    /// The events wanted whatever the key (low 32 bits), whether every key
    /// passes ([`EVERY_KEY`]) and how many `heads` are in force (from
    /// [`COUNT_SHIFT`]; more than [`PREFIXES`]: `first` alone decides).
    /// One word: a write a pattern subscriber must screen reads it once.
    shape: AtomicU64,
    heads: [[AtomicU64; 2]; PREFIXES],
    first: [AtomicU64; 4],
    /// Orders replacements (the pool threads install them).
    replacing: Mutex<()>,
}

impl AtomicScreen {
    pub fn set(&self, s: &KeyScreen) {
        let _one = self
            .replacing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.sequence.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        let count = s.heads.len().min(PREFIXES + 1) as u64;
        let every = if s.every_key { EVERY_KEY } else { 0 };
        self.shape.store(
            u64::from(s.events) | every | count << COUNT_SHIFT,
            Ordering::Relaxed,
        );
        for (to, from) in self.heads.iter().zip(&s.heads) {
            to[0].store(from.bytes, Ordering::Relaxed);
            to[1].store(from.mask, Ordering::Relaxed);
        }
        for (to, from) in self.first.iter().zip(s.first) {
            to.store(from, Ordering::Relaxed);
        }
        self.any.store(!s.is_none(), Ordering::Relaxed);
        self.sequence.fetch_add(1, Ordering::Release);
    }

    /// Whether a change to `key` (an `event`) may interest a subscriber.
    #[inline]
    pub fn admits(&self, key: &[u8], event: KeyEvent) -> bool {
        // One load decides while nobody listens to patterns or events.
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let before = self.sequence.load(Ordering::Acquire);
        let shape = self.shape.load(Ordering::Relaxed);
        let hit = shape & EVERY_KEY != 0
            || (shape as u32) & event.bit() != 0
            || self.admits_key(key, (shape >> COUNT_SHIFT) as usize);
        fence(Ordering::Acquire);
        hit || before & 1 == 1 || self.sequence.load(Ordering::Relaxed) != before
    }

    fn admits_key(&self, key: &[u8], count: usize) -> bool {
        // First bytes first: most keys no pattern wants are turned down there.
        let Some(&b) = key.first() else {
            return false;
        };
        let bits = self.first[usize::from(b >> 6)].load(Ordering::Relaxed);
        if bits & (1 << (b & 63)) == 0 {
            return false;
        }
        if count > PREFIXES {
            return true;
        }
        let key = word(key);
        self.heads[..count].iter().any(|h| {
            Head {
                bytes: h[0].load(Ordering::Relaxed),
                mask: h[1].load(Ordering::Relaxed),
            }
            .admits(key)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admits(s: &KeyScreen, key: &[u8], event: KeyEvent) -> bool {
        let a = AtomicScreen::default();
        a.set(s);
        a.admits(key, event)
    }

    #[test]
    fn prefixes_events_and_everything() {
        let set = KeyEvent::Set;
        assert!(!admits(&KeyScreen::none(), b"k", set));
        assert!(admits(&KeyScreen::everything(), b"", set));
        let mut s = KeyScreen::none();
        s.add_prefix(b"user:");
        assert!(admits(&s, b"user:1", set) && admits(&s, b"user:", set));
        for other in [&b"usage:1"[..], b"user", b"", b"session:1", b"User:1"] {
            assert!(!admits(&s, other, set), "{other:?}");
        }
        s.add_prefix(b"a-prefix-longer-than-eight");
        assert!(admits(&s, b"a-prefix-longer-than-eight:1", set));
        assert!(admits(&s, b"a-prefixes", set), "screened to 8 bytes");
        s.add_events(KeyEvent::Del.bit());
        assert!(admits(&s, b"session:1", KeyEvent::Del) && !admits(&s, b"session:1", set));
        s.add_prefix(b"");
        assert!(admits(&s, b"", set) && admits(&s, b"anything", set));
    }

    #[test]
    fn many_prefixes_fall_back_to_first_bytes() {
        let mut s = KeyScreen::none();
        for i in 0..=PREFIXES {
            s.add_prefix(format!("p{i}:").as_bytes());
        }
        assert!(admits(&s, b"p9:x", KeyEvent::Set) && admits(&s, b"pz", KeyEvent::Set));
        assert!(!admits(&s, b"q", KeyEvent::Set) && !admits(&s, b"", KeyEvent::Set));
    }

    #[test]
    fn a_replacement_never_hides_a_prefix_in_both_screens() {
        let mut old = KeyScreen::none();
        old.add_prefix(b"a:");
        let mut new = KeyScreen::none();
        new.add_prefix(b"b:");
        new.add_prefix(b"a:");
        let screen = std::sync::Arc::new(AtomicScreen::default());
        screen.set(&old);
        let setter = {
            let screen = screen.clone();
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    screen.set(if i % 2 == 0 { &new } else { &old });
                }
            })
        };
        let mut misses = 0;
        while !setter.is_finished() {
            misses += usize::from(!screen.admits(b"a:1", KeyEvent::Set));
        }
        setter.join().expect("setter");
        assert_eq!(misses, 0);
    }
}
