//! Who listens to what. Every subscription, from either protocol, is to a
//! channel or a pattern of channels, with Redis's names for key changes:
//! a change to key `k` is published as `set` or `del` on
//! `__keyspace@0__:k` and as `k` on `__keyevent@0__:set` or `:del`. A FIFO
//! client's SUBSCRIBE of `k` is a subscription to `__keyspace@0__:k`; only
//! its framing differs.
//!
//! The store reports a change only if someone may want it: a key with a
//! keyspace subscriber is watched in its shard; key-event channels and
//! patterns can want any key, so while one exists the store reports every
//! change and the [`ChangeFilter`] decides, on the writing thread, whether
//! the change is worth a trip to the reactor.

use crate::glob;
use crate::store::{KeyEvent, KeyScreen, Store};
use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Sessions are named by their slab index.
pub type SessionId = usize;

pub const KEYSPACE: &str = "__keyspace@0__:";
pub const KEYEVENT: &str = "__keyevent@0__:";

/// Channel names, like keys, are bytes (Redis's are binary-safe).
pub fn keyspace_channel(key: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(KEYSPACE.len() + key.len());
    c.extend_from_slice(KEYSPACE.as_bytes());
    c.extend_from_slice(key);
    c
}

/// The key a keyspace channel is about, if it is one.
pub fn channel_key(channel: &[u8]) -> Option<&[u8]> {
    channel
        .strip_prefix(KEYSPACE.as_bytes())
        .filter(|k| !k.is_empty())
}

/// Whether the channel is a key-event channel kvs publishes on.
pub fn is_keyevent(channel: &[u8]) -> bool {
    KeyEvent::of_channel(channel).is_some()
}

/// Channel and pattern subscriptions of all sessions.
#[derive(Debug, Default)]
pub struct Subscriptions {
    by_channel: HashMap<Vec<u8>, Vec<SessionId>>,
    by_pattern: HashMap<Vec<u8>, Vec<SessionId>>,
    /// Subscriptions to key-event channels, kept as they come and go: each
    /// batch of changes asks, and there are fourteen such channels.
    keyevent: usize,
}

fn add(list: &mut Vec<SessionId>, sid: SessionId) -> bool {
    if list.contains(&sid) {
        return false;
    }
    list.push(sid);
    true
}

/// Removes `sid` from `name`'s list in `map`, and the list once empty;
/// false if it was not there. Channels and patterns alike.
fn leave<K, Q>(map: &mut HashMap<K, Vec<SessionId>>, name: &Q, sid: SessionId) -> bool
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ?Sized,
{
    let Some(list) = map.get_mut(name) else {
        return false;
    };
    let Some(i) = list.iter().position(|&s| s == sid) else {
        return false;
    };
    list.swap_remove(i);
    if list.is_empty() {
        map.remove(name);
    }
    true
}

impl Subscriptions {
    /// Adds `sid` to `channel`'s subscribers; false if it already was one.
    pub fn subscribe(&mut self, channel: &[u8], sid: SessionId) -> bool {
        let added = add(self.by_channel.entry(channel.to_vec()).or_default(), sid);
        if added && is_keyevent(channel) {
            self.keyevent += 1;
        }
        added
    }

    /// Removes `sid` from `channel`'s subscribers; false if it was not one.
    pub fn unsubscribe(&mut self, channel: &[u8], sid: SessionId) -> bool {
        let left = leave(&mut self.by_channel, channel, sid);
        if left && is_keyevent(channel) {
            self.keyevent -= 1;
        }
        left
    }

    /// Whether any session listens to a key-event channel.
    pub fn has_keyevent_subscribers(&self) -> bool {
        self.keyevent > 0
    }

    pub fn psubscribe(&mut self, pattern: &[u8], sid: SessionId) -> bool {
        add(self.by_pattern.entry(pattern.to_owned()).or_default(), sid)
    }

    pub fn punsubscribe(&mut self, pattern: &[u8], sid: SessionId) -> bool {
        leave(&mut self.by_pattern, pattern, sid)
    }

    pub fn subscribers(&self, channel: &[u8]) -> &[SessionId] {
        self.by_channel
            .get(channel)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The patterns that match `channel`, each with its subscribers.
    pub fn matching_patterns<'a>(
        &'a self,
        channel: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [SessionId])> + 'a {
        self.by_pattern
            .iter()
            .filter(move |(p, _)| glob::matches(p, channel))
            .map(|(p, s)| (p.as_slice(), s.as_slice()))
    }

    pub fn has_patterns(&self) -> bool {
        !self.by_pattern.is_empty()
    }

    /// Channels with subscribers whose names match `pattern` (PUBSUB
    /// CHANNELS), sorted.
    pub fn channels_matching(&self, pattern: Option<&[u8]>) -> Vec<&[u8]> {
        let mut names: Vec<&[u8]> = self
            .by_channel
            .keys()
            .filter(|c| pattern.is_none_or(|p| glob::matches(p, c)))
            .map(Vec::as_slice)
            .collect();
        names.sort_unstable();
        names
    }

    /// Number of channels and patterns with subscribers (INFO).
    pub fn counts(&self) -> (usize, usize) {
        (self.by_channel.len(), self.by_pattern.len())
    }

    /// What the store must report beyond watched keys, right now.
    pub fn filter_list(&self) -> FilterList {
        let events = KeyEvent::ALL
            .into_iter()
            .filter(|e| self.by_channel.contains_key(e.channel()))
            .fold(0, |bits, e| bits | e.bit());
        FilterList::new(self.by_pattern.keys().map(Vec::as_slice), events)
    }

    pub fn clear(&mut self) {
        self.by_channel.clear();
        self.by_pattern.clear();
        self.keyevent = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.by_channel.is_empty() && self.by_pattern.is_empty()
    }
}

/// A pattern that can match keyspace channels, with the part of its
/// literal prefix that a key must start with, so that most keys are
/// turned down by one comparison and no glob.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SpacePattern {
    glob: Vec<u8>,
    /// The literal bytes after `__keyspace@0__:` and before the first
    /// `*`, `?`, `[` or `\`.
    key_prefix: Vec<u8>,
}

impl SpacePattern {
    /// `None` if `glob` can never match a keyspace channel.
    fn new(glob: &[u8]) -> Option<SpacePattern> {
        let literal = glob
            .iter()
            .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
            .unwrap_or(glob.len());
        let head = KEYSPACE.as_bytes();
        let common = literal.min(head.len());
        if glob[..common] != head[..common] {
            return None;
        }
        Some(SpacePattern {
            glob: glob.to_vec(),
            key_prefix: glob[common..literal].to_vec(),
        })
    }

    fn matches(&self, key: &[u8]) -> bool {
        if !key.starts_with(&self.key_prefix) {
            return false;
        }
        // Most keys are short: the channel is built on the stack.
        let mut buf = [0u8; 96];
        match join(&mut buf, KEYSPACE.as_bytes(), key) {
            Some(channel) => glob::matches(&self.glob, channel),
            None => glob::matches(&self.glob, &keyspace_channel(key)),
        }
    }
}

/// The subscriptions that may want a change to any key. Key-event
/// channels are fixed names, so which patterns match them is settled when
/// the list is made; only keyspace patterns are matched per change.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FilterList {
    patterns: Vec<SpacePattern>,
    /// The events ([`KeyEvent::bit`]) whose key-event channel someone
    /// hears.
    events: u32,
    /// Every change (clients track keys for their caches).
    everything: bool,
}

impl FilterList {
    fn new<'a>(patterns: impl Iterator<Item = &'a [u8]>, events: u32) -> Self {
        let mut list = FilterList {
            patterns: Vec::new(),
            events,
            everything: false,
        };
        for p in patterns {
            for e in KeyEvent::ALL {
                if glob::matches(p, e.channel()) {
                    list.events |= e.bit();
                }
            }
            list.patterns.extend(SpacePattern::new(p));
        }
        list
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty() && self.events == 0 && !self.everything
    }

    /// What the store may report to the hook, which then asks [`Self::wants`].
    pub fn screen(&self) -> KeyScreen {
        if self.everything {
            return KeyScreen::everything();
        }
        let mut s = KeyScreen::none();
        s.add_events(self.events);
        for p in &self.patterns {
            s.add_prefix(&p.key_prefix);
        }
        s
    }

    /// The list with every change wanted too (CLIENT TRACKING), or not.
    pub fn with_everything(mut self, on: bool) -> Self {
        self.everything = on;
        self
    }

    /// Whether a change to `key` (an `event`) is published on a channel
    /// some pattern or key-event subscriber listens to.
    pub fn wants(&self, key: &[u8], event: KeyEvent) -> bool {
        self.everything
            || self.events & event.bit() != 0
            || self.patterns.iter().any(|p| p.matches(key))
    }
}

/// `a` then `b` in `buf`, or `None` if they do not fit.
fn join<'b>(buf: &'b mut [u8], a: &[u8], b: &[u8]) -> Option<&'b [u8]> {
    let n = a.len() + b.len();
    let out = buf.get_mut(..n)?;
    out[..a.len()].copy_from_slice(a);
    out[a.len()..].copy_from_slice(b);
    Some(out)
}

/// The [`FilterList`] in force, shared by the reactor (which installs new
/// ones, through the store pool) and the threads that write (which read
/// it on every change while it is not empty).
///
/// A writer must not take a lock per change: each thread keeps the list it
/// last saw and looks at the shared one only when the generation moved.
#[derive(Debug, Default)]
pub struct ChangeFilter {
    generation: AtomicU64,
    current: Mutex<(u64, Arc<FilterList>)>,
}

thread_local! {
    /// This thread's copy: which filter, which generation, which list.
    static SEEN: RefCell<Option<(usize, u64, Arc<FilterList>)>> = const { RefCell::new(None) };
}

impl ChangeFilter {
    /// Installs `list` if `generation` is newer than the one in force, and
    /// turns the store's reporting of every change on or off to match. The
    /// lock orders installs that race on different pool threads.
    pub fn install(&self, generation: u64, list: FilterList, store: &Store) {
        let mut cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if generation <= cur.0 {
            return;
        }
        let screen = list.screen();
        *cur = (generation, Arc::new(list));
        self.generation.store(generation, Ordering::Release);
        store.set_screen(screen);
    }

    /// Whether a change to `key` may interest a pattern or key-event
    /// subscriber.
    #[inline]
    pub fn wants(&self, key: &[u8], event: KeyEvent) -> bool {
        let me = self as *const ChangeFilter as usize;
        let generation = self.generation.load(Ordering::Acquire);
        SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            let fresh = matches!(&*seen, Some((f, g, _)) if *f == me && *g == generation);
            if !fresh {
                let cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
                *seen = Some((me, cur.0, cur.1.clone()));
            }
            seen.as_ref()
                .is_some_and(|(_, _, list)| list.wants(key, event))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_unsubscribe() {
        let mut s = Subscriptions::default();
        assert!(s.subscribe(b"k", 1));
        assert!(!s.subscribe(b"k", 1));
        assert!(s.subscribe(b"k", 2));
        assert_eq!(s.subscribers(b"k"), &[1, 2]);
        assert!(s.unsubscribe(b"k", 1));
        assert!(!s.unsubscribe(b"k", 1));
        assert!(!s.unsubscribe(b"x", 2));
        assert!(s.unsubscribe(b"k", 2));
        assert!(s.subscribe(b"__keyevent@0__:expired", 4));
        assert!(!s.subscribe(b"__keyevent@0__:expired", 4));
        assert!(s.has_keyevent_subscribers());
        assert!(s.unsubscribe(b"__keyevent@0__:expired", 4));
        assert!(!s.has_keyevent_subscribers());
        assert!(s.psubscribe(b"a*", 3));
        assert_eq!(s.matching_patterns(b"abc").count(), 1);
        assert_eq!(s.matching_patterns(b"bc").count(), 0);
        assert!(s.punsubscribe(b"a*", 3));
        assert!(s.is_empty());
    }

    #[test]
    fn channel_names() {
        assert_eq!(keyspace_channel(b"k"), b"__keyspace@0__:k");
        assert_eq!(channel_key(b"__keyspace@0__:k"), Some(&b"k"[..]));
        assert_eq!(channel_key(b"__keyspace@0__:"), None);
        assert!(is_keyevent(b"__keyevent@0__:del"));
        assert!(is_keyevent(b"__keyevent@0__:incrby"));
        assert!(!is_keyevent(b"__keyevent@0__:nope"));
    }

    #[test]
    fn filter_wants_what_patterns_and_events_match() {
        let mut s = Subscriptions::default();
        assert!(s.filter_list().is_empty());
        s.psubscribe(b"__keyspace@0__:user:*", 1);
        let f = s.filter_list();
        let (set, del) = (KeyEvent::Set, KeyEvent::Del);
        assert!(f.wants(b"user:1", set) && !f.wants(b"other", set));
        s.subscribe(b"__keyevent@0__:del", 2);
        let f = s.filter_list();
        assert!(f.wants(b"other", del) && !f.wants(b"other", set));
        s.psubscribe(b"__keyevent@0__:s*", 3);
        assert!(s.filter_list().wants(b"other", set));
        assert!(!s.filter_list().wants(b"other", KeyEvent::IncrBy));
    }

    #[test]
    fn keyspace_patterns_are_screened_by_their_prefix() {
        for (glob, key, want) in [
            ("__keyspace@0__:user:*", "user:1", true),
            ("__keyspace@0__:user:*", "use", false),
            ("__key*__:*", "k", true),
            ("*", "k", true),
            ("__keyspace@0__:k", "k", true),
            ("__keyspace@0__:k", "kk", false),
            ("__keys", "k", false),
        ] {
            let hit = SpacePattern::new(glob.as_bytes()).is_some_and(|p| p.matches(key.as_bytes()));
            assert_eq!(hit, want, "{glob} on {key}");
        }
        assert!(SpacePattern::new(b"__keyevent@0__:*").is_none());
        let events = FilterList::new([&b"__keyevent@0__:d*"[..]].into_iter(), 0);
        assert!(events.wants(b"any", KeyEvent::Del) && !events.wants(b"any", KeyEvent::Set));
    }

    #[test]
    fn the_screen_lets_through_all_a_list_wants() {
        let mut s = Subscriptions::default();
        s.psubscribe(b"__keyspace@0__:user:*", 1);
        s.subscribe(b"__keyevent@0__:del", 2);
        let list = s.filter_list();
        let store = Store::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let _ = store.set_change_hook(Box::new(move |changes| {
            let mut log = log.lock().unwrap();
            log.extend(changes.iter().map(|c| c.key.to_vec()));
        }));
        store.set_screen(list.screen());
        for key in ["user:1", "session:1", "usage:1", "x"] {
            store.write(&[(key, "v")]);
        }
        store.delete(&["session:1"]);
        let got = seen.lock().unwrap().clone();
        assert_eq!(got, [&b"user:1"[..], b"session:1"]);
    }

    #[test]
    fn shared_filter_follows_generations() {
        let store = Store::new();
        let f = ChangeFilter::default();
        assert!(!f.wants(b"k", KeyEvent::Set));
        let mut s = Subscriptions::default();
        s.psubscribe(b"*", 1);
        f.install(2, s.filter_list(), &store);
        assert!(f.wants(b"k", KeyEvent::Set));
        // An older list arriving late is ignored.
        f.install(1, FilterList::default(), &store);
        assert!(f.wants(b"k", KeyEvent::Set));
        f.install(3, FilterList::default(), &store);
        assert!(!f.wants(b"k", KeyEvent::Set));
    }
}
