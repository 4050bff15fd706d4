//! The shared in-memory table: string keys to string values, split into shards
//! that each sit behind their own lock, so that job workers and server threads
//! working on different keys do not wait on each other.
//!
//! Every multi-key operation locks the shards it touches in ascending shard
//! order. That single rule makes a multi-key WRITE or DELETE atomic with respect
//! to every other operation and rules out deadlock, since no two threads can
//! ever wait on each other's shards in a cycle.
//!
//! Changes to *watched* keys are reported through an optional hook (see
//! [`Store::set_change_hook`] and [`Store::watch`]), called while the shard
//! locks are still held, so the order in which the hook sees changes of one
//! key is exactly the order in which they were applied. Each shard keeps
//! the count of watchers of its keys under its own lock, so a change to a
//! key nobody watches costs one lookup, and watching starts at an exact
//! point in the key's history. In batch mode no hook is set and the cost is
//! a single branch.

pub mod event;
pub mod expiry;
mod held;
pub mod remote;
mod screen;
mod snapshot;
mod table;
mod transaction;

pub use event::{EventClass, KeyEvent};
pub use screen::KeyScreen;
pub use snapshot::Snapshot;
pub use transaction::{Attempt, Transaction};

use expiry::{now_ms, Deadlines};
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};
pub use table::keeps_buffer;
use table::{Hasher, Table};

/// Number of shards of a store made with [`Store::new`]. A power of two well
/// above the worker count keeps the chance of two workers colliding low.
pub const DEFAULT_SHARDS: usize = 64;

/// Most keys of an operation that takes the [`Masked`] lock path: enough
/// for nearly every command, few enough that its arrays cost nothing to
/// set up (at 64 they were a 576-byte memset per operation).
const MASKED_PAIRS: usize = 16;

/// [`Store::try_get`] found the key's shard locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WouldBlock;

/// One change to one key, as seen by a change hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change<'a> {
    pub key: &'a [u8],
    /// The new value, or `None` when the key was deleted.
    pub value: Option<&'a [u8]>,
    /// What the change was, by Redis's name for it.
    pub event: KeyEvent,
    /// Someone watches this very key (see [`Store::watch`]); when false,
    /// the change is reported only because [`Store::set_screen`] let it through.
    pub watched: bool,
}

/// When [`Store::set`] applies its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetIf {
    Always,
    /// Only if the key is absent (SET NX).
    Absent,
    /// Only if the key is present (SET XX).
    Present,
}

/// Receives the changes of one operation, in the order they were applied,
/// while the touched shards are still locked. It must be quick and must not
/// call back into the store.
pub type ChangeHook = Box<dyn Fn(&[Change<'_>]) + Send + Sync>;

/// Receives every mutation as it is applied, while the touched shards are
/// still locked: the durable log, whose order for each key is then the
/// order of application, and which records a multi-key write as one
/// mutation. Like a [`ChangeHook`] it must be quick and must not call back
/// into the store.
pub trait Journal: Send + Sync {
    fn set(&self, pairs: &mut dyn Iterator<Item = (&[u8], &[u8])>);
    /// Only keys that existed are given; never called with none.
    fn del(&self, keys: &mut dyn Iterator<Item = &[u8]>);
    fn clear(&self);
    /// A key's deadline (Unix milliseconds), or `None`: it has none now.
    /// A set clears a deadline by itself, as SET does, so this follows
    /// only changes that keep or set one.
    fn expire(&self, key: &[u8], at: Option<u64>);
    /// The mutations of one transaction, to be replayed all or none. The
    /// default records them one by one.
    fn group(&self, mutations: &[Mutation]) {
        for m in mutations {
            match m {
                Mutation::Set(p) => self.set(&mut p.iter().map(|(k, v)| (&k[..], &v[..]))),
                Mutation::Del(k) => self.del(&mut k.iter().map(Vec::as_slice)),
                Mutation::Clear => self.clear(),
                Mutation::Expire(k, at) => self.expire(k, *at),
            }
        }
    }
}

/// One mutation of a [`Transaction`], for the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    Set(Vec<(Vec<u8>, Vec<u8>)>),
    /// Keys that existed.
    Del(Vec<Vec<u8>>),
    Clear,
    /// A key's new deadline, or none.
    Expire(Vec<u8>, Option<u64>),
}

/// A key someone WATCHes (RESP transactions): how many watch it, and a
/// count of its changes, bumped under the shard's lock by every change.
#[derive(Default)]
struct KeyVersion {
    holders: u32,
    version: AtomicU64,
}

/// One shard: its pairs, how many watchers each watched key has, and the
/// change counts of WATCHed keys.
#[derive(Default)]
struct Shard {
    map: Table,
    watched: HashMap<Box<[u8]>, u32>,
    versions: HashMap<Box<[u8]>, KeyVersion>,
    deadlines: Deadlines,
}

impl Shard {
    /// The value of `key`, unless its deadline has passed: a key that is
    /// due reads as absent at once, before anyone reaps it.
    #[inline]
    fn value(&self, h: u64, key: &[u8]) -> Option<&[u8]> {
        let v = self.map.get(h, key)?;
        (!self.expired(key)).then_some(v)
    }

    /// [`Shard::value`] through a slot found before (see
    /// [`Table::slot_of`]); `None` looks the key up. Kept apart from
    /// `value`, which every GET takes: through here it cost a pipelined GET
    /// 29 instructions more.
    #[inline]
    fn value_in(&self, found: Option<table::Found>, h: u64, key: &[u8]) -> Option<&[u8]> {
        let v = self.map.get_in(found, h, key)?;
        (!self.expired(key)).then_some(v)
    }

    #[inline]
    fn expired(&self, key: &[u8]) -> bool {
        !self.deadlines.is_empty() && self.deadlines.due(key, now_ms())
    }

    /// Every pair whose deadline has not passed.
    fn live(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let now = if self.deadlines.is_empty() {
            0
        } else {
            now_ms()
        };
        self.map
            .iter()
            .filter(move |(k, _)| now == 0 || !self.deadlines.due(k, now))
    }

    /// Sets `key` as SET does: the value, and no deadline.
    #[inline]
    fn set_plain<'v>(&mut self, h: u64, key: &[u8], value: impl Into<Cow<'v, [u8]>>) -> bool {
        let new = self.map.set(h, key, value);
        self.deadlines.remove(key);
        new
    }

    /// Removes `key` and its deadline; whether it was there.
    #[inline]
    fn remove(&mut self, h: u64, key: &[u8]) -> bool {
        self.deadlines.remove(key);
        self.map.remove(h, key)
    }

    /// Sets `key` to `value` if `cond` holds; returns whether it did,
    /// whether that made the key, and, if `want_old`, the value before.
    /// The caller journals and reports.
    fn set_if<'v>(
        &mut self,
        h: u64,
        key: &[u8],
        value: impl Into<Cow<'v, [u8]>>,
        cond: SetIf,
        want_old: bool,
    ) -> (bool, bool, Option<Vec<u8>>) {
        // A plain SET needs no look-up before its write: the write says
        // whether it made the key (a second look-up was a third of a
        // queued SET's store work).
        if matches!(cond, SetIf::Always) && !want_old {
            return (true, self.set_plain(h, key, value), None);
        }
        let (present, old) = match self.map.get(h, key) {
            Some(v) => (true, want_old.then(|| v.to_vec())),
            None => (false, None),
        };
        let apply = match cond {
            SetIf::Always => true,
            SetIf::Absent => !present,
            SetIf::Present => present,
        };
        if apply {
            self.set_plain(h, key, value);
        }
        (apply, apply && !present, old)
    }

    /// Counts a change of `key` for the transactions watching it.
    #[inline]
    fn touched(&self, key: &[u8]) {
        if !self.versions.is_empty() {
            if let Some(v) = self.versions.get(key) {
                v.version.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The sharded key-value table. Share it between threads with an `Arc`.
pub struct Store {
    shards: Box<[RwLock<Shard>]>,
    hasher: Hasher,
    hook: OnceLock<ChangeHook>,
    journal: OnceLock<Box<dyn Journal>>,
    /// Which changes of unwatched keys go to the hook (pattern and
    /// key-event subscribers may want any key; the hook filters exactly).
    screen: screen::AtomicScreen,
    /// Keys WATCHed by transactions, over all shards: while zero, a store
    /// without a hook skips reporting altogether (batch mode).
    versions_live: AtomicUsize,
    /// Whether a key's creation is reported as a `new` change before its
    /// `set` (notify-keyspace-events with `n`; off by default, as in Redis,
    /// since it doubles the changes of every write of a new key).
    new_events: AtomicBool,
    /// The shared dataset this table caches, if any (see [`remote`]).
    remote: OnceLock<std::sync::Arc<dyn remote::Remote>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// A store with [`DEFAULT_SHARDS`] shards.
    pub fn new() -> Self {
        Self::with_shards(DEFAULT_SHARDS)
    }

    /// A store with `shards` shards (at least one). One shard makes it a
    /// single-lock table, which is what the benchmarks compare against.
    pub fn with_shards(shards: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| RwLock::new(Shard::default()))
            .collect();
        Store {
            shards,
            hasher: Hasher::default(),
            hook: OnceLock::new(),
            journal: OnceLock::new(),
            screen: screen::AtomicScreen::default(),
            versions_live: AtomicUsize::new(0),
            new_events: AtomicBool::new(false),
            remote: OnceLock::new(),
        }
    }

    /// Makes this table a cache of `remote`: changes are made there first
    /// (see [`remote`]). Only once; a second call gives `remote` back.
    pub fn set_remote(
        &self,
        remote: std::sync::Arc<dyn remote::Remote>,
    ) -> Result<(), std::sync::Arc<dyn remote::Remote>> {
        self.remote.set(remote)
    }

    /// Whether changes are journaled (a data dir).
    pub fn is_journaled(&self) -> bool {
        self.journal.get().is_some()
    }

    /// Whether this table caches a shared dataset.
    pub fn is_remote(&self) -> bool {
        self.remote.get().is_some()
    }

    /// With `--store-reads linearizable`, waits until the table has every
    /// change the shared dataset had made when the read came (a failure
    /// for [`remote::take_failure`] if that cannot be known: the read
    /// then answers from the table as it is, and the caller refuses it).
    fn read_fence(&self) {
        if let Some(r) = self.remote() {
            if r.linearizable_reads() {
                if let Err(why) = r.fence() {
                    remote::fail(why);
                }
            }
        }
    }

    /// Whether reads wait on the shared dataset ([`Store::read_fence`]):
    /// then they are not for the reactor's non-blocking `try_` reads.
    fn fenced_reads(&self) -> bool {
        self.remote().is_some_and(|r| r.linearizable_reads())
    }

    /// The version of `key` in the shared dataset this table has applied
    /// (0: absent), or `None` for a table of its own.
    pub fn remote_version(&self, key: &[u8]) -> Option<i64> {
        self.remote.get().map(|r| r.version(key))
    }

    /// The shared dataset to make a change in, unless this thread is the
    /// one applying that dataset's changes to the table.
    fn remote(&self) -> Option<&dyn remote::Remote> {
        match self.remote.get() {
            Some(r) if !remote::is_applying() => Some(&**r),
            _ => None,
        }
    }

    /// Makes room for about `keys` keys spread over the shards, so that
    /// loading that many never regrows a shard's index under its lock
    /// (batch mode sizes the store from its job files).
    pub fn reserve(&self, keys: usize) {
        let each = keys / self.shards.len() + 1;
        for shard in self.shards.iter() {
            shard
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .map
                .reserve(each);
        }
    }

    /// Installs the hook that every later change is reported to. Only one hook
    /// can ever be set; a second call returns the hook back as the error.
    pub fn set_change_hook(&self, hook: ChangeHook) -> Result<(), ChangeHook> {
        self.hook.set(hook)
    }

    /// Installs the journal that every later mutation is recorded in. Only
    /// one can ever be set; a second call returns it back as the error.
    pub fn set_journal(&self, journal: Box<dyn Journal>) -> Result<(), Box<dyn Journal>> {
        self.journal.set(journal)
    }

    fn journal_set<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, pairs: &[(K, V)]) {
        if let Some(j) = self.journal.get() {
            j.set(&mut pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
        }
    }

    /// Removes `key` if its deadline has passed, as a change of its own
    /// (journaled as a deletion, reported as `expired`): every write looks
    /// first, so it never acts on a key that is gone.
    #[inline]
    fn reap(&self, g: &mut Shard, h: u64, key: &[u8]) {
        if g.expired(key) {
            g.remove(h, key);
            self.tell_expired(g, key);
        }
    }

    /// Journals and reports `key`, just taken away because it expired.
    fn tell_expired(&self, g: &Shard, key: &[u8]) {
        if let Some(j) = self.journal.get() {
            j.del(&mut std::iter::once(key));
        }
        self.report(g, key, None, KeyEvent::Expired);
    }

    /// The hash of `key`, one per key per operation: its upper half picks
    /// the shard, its lower half files the key in the shard's index.
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard_at(&self, hash: u64) -> usize {
        ((hash >> 32) % self.shards.len() as u64) as usize
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        self.shard_at(self.hash(key))
    }

    /// Whether all of `keys` live in one shard (one lock covers them). A
    /// lone key, or the same key again, is not hashed for it.
    pub fn one_shard<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> bool {
        let mut keys = keys.into_iter();
        let Some(first) = keys.next() else {
            return true;
        };
        let mut shard = None;
        keys.all(|k| {
            k == first || *shard.get_or_insert_with(|| self.shard_of(first)) == self.shard_of(k)
        })
    }

    /// The key's hash and its shard's lock.
    fn shard(&self, key: &[u8]) -> (u64, &RwLock<Shard>) {
        let h = self.hash(key);
        (h, &self.shards[self.shard_at(h)])
    }

    /// The sorted, de-duplicated shard indices of `keys`: the lock order.
    fn shards_of<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) -> Vec<usize> {
        let mut idx: Vec<usize> = keys.map(|k| self.shard_of(k)).collect();
        idx.sort_unstable();
        idx.dedup();
        idx
    }

    fn write_locks(&self, order: &[usize]) -> Vec<RwLockWriteGuard<'_, Shard>> {
        order
            .iter()
            .map(|&i| {
                self.shards[i]
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
            })
            .collect()
    }

    fn read_locks(&self, order: &[usize]) -> Vec<RwLockReadGuard<'_, Shard>> {
        order
            .iter()
            .map(|&i| {
                self.shards[i]
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
            })
            .collect()
    }

    /// Sets each key to its value, in order (a key given twice ends with its
    /// last value). Atomic: no reader sees some of the pairs and not others.
    pub fn write<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, pairs: &[(K, V)]) {
        if let Some(r) = self.remote() {
            return remote::write(r, pairs);
        }
        if let [(k, v)] = pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            let (h, shard) = self.shard(k);
            let mut g = shard.write().unwrap_or_else(PoisonError::into_inner);
            self.reap(&mut g, h, k);
            if g.set_plain(h, k, v) {
                self.created(&g, k, v);
            }
            self.journal_set(pairs);
            self.report(&g, k, Some(v), KeyEvent::Set);
            return;
        }
        if self.can_mask(pairs.len()) {
            return self.write_masked(pairs);
        }
        let order = self.shards_of(pairs.iter().map(|(k, _)| k.as_ref()));
        let mut guards = self.write_locks(&order);
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            let h = self.hash(k);
            let g = &mut guards[slot(&order, self.shard_at(h))];
            self.reap(g, h, k);
            if g.set_plain(h, k, v) {
                self.created(g, k, v);
            }
        }
        self.journal_set(pairs);
        self.report_all(pairs, |key| &guards[slot(&order, self.shard_of(key))]);
        drop(guards);
    }

    /// [`Store::write`] for up to [`MASKED_PAIRS`] pairs on at most 64
    /// shards (MSET, job WRITEs): see [`Masked`].
    fn write_masked<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, pairs: &[(K, V)]) {
        let m = self.masked(pairs.iter().map(|(k, _)| k.as_ref()));
        let mut guards = m.lock(|s| {
            self.shards[s]
                .write()
                .unwrap_or_else(PoisonError::into_inner)
        });
        for (i, (k, v)) in pairs.iter().enumerate() {
            let g = &mut guards[m.guard(i)];
            self.reap(g, m.hashes[i], k.as_ref());
            if g.set_plain(m.hashes[i], k.as_ref(), v.as_ref()) {
                self.created(g, k.as_ref(), v.as_ref());
            }
        }
        self.journal_set(pairs);
        self.report_many(
            pairs
                .iter()
                .enumerate()
                .map(|(i, (k, v))| (k.as_ref(), Some(v.as_ref()), &*guards[m.guard(i)])),
        );
        drop(guards);
    }

    /// Whether `n` keys can take the [`Masked`] path.
    fn can_mask(&self, n: usize) -> bool {
        self.shards.len() <= 64 && n <= MASKED_PAIRS
    }

    /// The hashes and shards of up to [`MASKED_PAIRS`] keys.
    fn masked<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) -> Masked {
        let mut m = Masked {
            hashes: [0; MASKED_PAIRS],
            shards: [0; MASKED_PAIRS],
            mask: 0,
        };
        for (i, k) in keys.enumerate().take(MASKED_PAIRS) {
            let h = self.hash(k);
            let s = self.shard_at(h);
            m.hashes[i] = h;
            m.shards[i] = s as u8;
            m.mask |= 1 << s;
        }
        m
    }

    /// Reports the changes of a multi-key write to the hook, if anyone may
    /// want them; `shard` finds a key's locked shard.
    fn report_all<'s, K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        pairs: &[(K, V)],
        shard: impl Fn(&[u8]) -> &'s Shard,
    ) {
        self.report_many(
            pairs
                .iter()
                .map(|(k, v)| (k.as_ref(), Some(v.as_ref()), shard(k.as_ref()))),
        );
    }

    /// Reports the changes of one operation, each a key, its new value (or
    /// `None`, deleted) and its locked shard, to the hook: those of watched
    /// keys, and those [`Store::set_screen`] lets through.
    fn report_many<'k>(
        &self,
        changes: impl Iterator<Item = (&'k [u8], Option<&'k [u8]>, &'k Shard)>,
    ) {
        self.report_many_as(changes, KeyEvent::Del)
    }

    /// [`Store::report_many`] with deletions reported as `deleted`.
    fn report_many_as<'k>(
        &self,
        changes: impl Iterator<Item = (&'k [u8], Option<&'k [u8]>, &'k Shard)>,
        deleted: KeyEvent,
    ) {
        let hook = self.hook.get();
        if hook.is_none() && self.versions_live.load(Ordering::Acquire) == 0 {
            return;
        }
        // Most writes change one key: it is reported from the stack, so
        // that a pattern subscriber (which makes every change reported)
        // costs other writes no allocation.
        let mut first: Option<Change<'_>> = None;
        let mut more: Vec<Change<'_>> = Vec::new();
        for (key, value, shard) in changes {
            shard.touched(key);
            let event = if value.is_some() {
                KeyEvent::Set
            } else {
                deleted
            };
            let watched = shard.watched.contains_key(key);
            if !(watched || self.screen.admits(key, event)) {
                continue;
            }
            let change = Change {
                key,
                value,
                event,
                watched,
            };
            match first.take() {
                None if more.is_empty() => first = Some(change),
                f => {
                    more.extend(f);
                    more.push(change);
                }
            }
        }
        let Some(hook) = hook else {
            return;
        };
        match first {
            Some(one) => hook(&[one]),
            None if !more.is_empty() => hook(&more),
            None => {}
        }
    }

    /// Reports one change of a key in the locked shard `g` to the hook, if
    /// anyone may want it (and counts it for transactions watching it).
    fn report(&self, g: &Shard, key: &[u8], value: Option<&[u8]>, event: KeyEvent) {
        g.touched(key);
        if let Some(hook) = self.hook.get() {
            let watched = g.watched.contains_key(key);
            if watched || self.screen.admits(key, event) {
                let change = Change {
                    key,
                    value,
                    event,
                    watched,
                };
                // Inside a transaction, held for its end (see `held`).
                if let Some(change) = held::keep(change) {
                    hook(&[change]);
                }
            }
        }
    }

    /// Reports the creation of `key` as a `new` change, if those are on.
    #[inline]
    fn created(&self, g: &Shard, key: &[u8], value: &[u8]) {
        if self.new_events.load(Ordering::Relaxed) {
            self.report(g, key, Some(value), KeyEvent::New);
        }
    }

    /// Turns the reporting of new keys on or off (see [`KeyEvent::New`]).
    pub fn set_new_events(&self, on: bool) {
        self.new_events.store(on, Ordering::Relaxed);
    }

    /// Reports to the hook the changes of unwatched keys that `screen`
    /// lets through (the hook then filters; see [`Change::watched`]).
    pub fn set_screen(&self, screen: KeyScreen) {
        self.screen.set(&screen);
    }

    /// Sets `key` to `value` if `cond` holds; returns whether it was set and,
    /// if `want_old`, the value before (SET NX/XX/GET, GETSET, SETNX). A
    /// large value handed over in its own buffer is kept as it is.
    pub fn set<'v>(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Cow<'v, [u8]>>,
        cond: SetIf,
        want_old: bool,
    ) -> (bool, Option<Vec<u8>>) {
        let key = key.as_ref();
        let small;
        let value = match value.into() {
            // Copied into a chunk anyway: the journal and the hook can
            // read it where it is.
            Cow::Owned(v) if !table::keeps_buffer(key.len(), v.len()) => {
                small = v;
                Cow::Borrowed(&small[..])
            }
            v => v,
        };
        if let Some(r) = self.remote() {
            return remote::set(r, key, &value, cond, want_old, || self.get(key));
        }
        let given = match value {
            Cow::Borrowed(v) => Some(v),
            Cow::Owned(_) => None,
        };
        let (h, shard) = self.shard(key);
        let mut g = shard.write().unwrap_or_else(PoisonError::into_inner);
        self.reap(&mut g, h, key);
        let (applied, made, old) = g.set_if(h, key, value, cond, want_old);
        if applied {
            // A buffer handed over is read back where the table keeps it.
            let value = given.or_else(|| g.map.get(h, key)).unwrap_or_default();
            self.journal_set(&[(key, value)]);
            if made {
                self.created(&g, key, value);
            }
            self.report(&g, key, Some(value), KeyEvent::Set);
        }
        (applied, old)
    }

    /// [`Store::write`] for values some of which come in buffers of their
    /// own (a RESP MSET's large values): those the table keeps as they are
    /// instead of copying them with the shards locked. A key given twice is
    /// journaled and reported with its last value both times (no reader
    /// could see the first).
    pub fn write_owned(&self, pairs: Vec<(&[u8], Cow<'_, [u8]>)>) {
        if !pairs
            .iter()
            .any(|(k, v)| matches!(v, Cow::Owned(v) if table::keeps_buffer(k.len(), v.len())))
        {
            return self.write(&pairs);
        }
        if let Some(r) = self.remote() {
            return remote::write(r, &pairs);
        }
        let keys: Vec<&[u8]> = pairs.iter().map(|(k, _)| *k).collect();
        let order = self.shards_of(keys.iter().copied());
        let mut guards = self.write_locks(&order);
        for (k, v) in pairs {
            let h = self.hash(k);
            let g = &mut guards[slot(&order, self.shard_at(h))];
            self.reap(g, h, k);
            if g.set_plain(h, k, v) && self.new_events.load(Ordering::Relaxed) {
                self.created(g, k, g.map.get(h, k).unwrap_or_default());
            }
        }
        let kept: Vec<(&[u8], &[u8])> = keys
            .iter()
            .map(|&k| {
                let h = self.hash(k);
                let g = &guards[slot(&order, self.shard_at(h))];
                (k, g.map.get(h, k).unwrap_or_default())
            })
            .collect();
        self.journal_set(&kept);
        self.report_all(&kept, |key| &guards[slot(&order, self.shard_of(key))]);
        drop(guards);
    }

    /// Deletes every key, reporting each deletion; returns how many there
    /// were. Atomic: all shards are locked for the duration.
    pub fn clear(&self) -> usize {
        if let Some(r) = self.remote() {
            return remote::clear(r);
        }
        let all: Vec<usize> = (0..self.shards.len()).collect();
        let mut guards = self.write_locks(&all);
        let taken: Vec<Table> = guards
            .iter_mut()
            .map(|g| {
                g.deadlines.clear();
                std::mem::take(&mut g.map)
            })
            .collect();
        if let Some(j) = self.journal.get() {
            j.clear();
        }
        self.report_many_as(
            taken
                .iter()
                .zip(&guards)
                .flat_map(|(map, g)| map.iter().map(move |(k, _)| (k, None, &**g))),
            KeyEvent::Flushed,
        );
        drop(guards);
        taken.iter().map(|m| m.len()).sum()
    }

    /// Every key matching the glob `pattern`, at one instant.
    pub fn keys(&self, pattern: &[u8]) -> Vec<Vec<u8>> {
        self.read_fence();
        let all: Vec<usize> = (0..self.shards.len()).collect();
        let guards = self.read_locks(&all);
        let mut keys = Vec::new();
        for g in &guards {
            keys.extend(
                g.live()
                    .filter(|(k, _)| crate::glob::matches(pattern, k))
                    .map(|(k, _)| k.to_owned()),
            );
        }
        keys
    }

    /// One step of a SCAN: about `count` keys looked at (Redis's COUNT is
    /// work, not results), those matching `pattern` returned, and the
    /// cursor to go on from (0 once every shard was walked). At least a
    /// [`SCAN_PASSES`]th of a shard is looked at in each, as a step costs
    /// a pass over the shard's index whatever it takes from it.
    ///
    /// The cursor is the shard in its high half and, in its low half, how
    /// far that shard's walk went in tag order (the low half of a key's
    /// hash, fixed for the key's life): every key of the shard with a lower
    /// tag was looked at. So a key present from the first step to the last
    /// is returned exactly once, whatever is written or deleted between
    /// steps (Redis promises at least once), and a step holds one shard's
    /// read lock for a pass over its index instead of copying the whole
    /// shard out. A cursor past the last shard ends the walk.
    pub fn scan(&self, cursor: u64, count: usize, pattern: Option<&[u8]>) -> (u64, Vec<Vec<u8>>) {
        self.read_fence();
        let mut keys = Vec::new();
        let first = (cursor >> 32) as usize;
        let mut shard = first;
        let mut from = cursor & u64::from(u32::MAX);
        let mut budget = count.max(1);
        while shard < self.shards.len() && budget > 0 {
            let g = self.shards[shard]
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            // The floor only where the step starts: a shard reached with
            // budget left over gets just that, and the next step goes on
            // there with its floor.
            let floor = if shard == first {
                g.map.len() / SCAN_PASSES
            } else {
                0
            };
            let take = budget.max(floor);
            let (upto, looked) = scan_cut(g.map.tags(), from, take);
            keys.extend(
                g.map
                    .tagged_keys()
                    .filter(|&(t, _)| (from..upto).contains(&u64::from(t)))
                    .filter(|(_, k)| pattern.is_none_or(|p| crate::glob::matches(p, k)))
                    .filter(|(_, k)| !g.expired(k))
                    .map(|(_, k)| k.to_owned()),
            );
            budget = budget.saturating_sub(looked);
            if upto > u64::from(u32::MAX) {
                shard += 1;
                from = 0;
            } else {
                from = upto;
            }
        }
        let next = if shard < self.shards.len() {
            ((shard as u64) << 32) | from
        } else {
            0
        };
        (next, keys)
    }

    /// Watches `key` whether or not it is present (a RESP keyspace
    /// subscription). Balance each call with one [`Store::unwatch`].
    pub fn watch_key(&self, key: impl AsRef<[u8]>) {
        let key = key.as_ref();
        let mut g = self.write_shard_of(key);
        *g.watched.entry(key.into()).or_insert(0) += 1;
    }

    /// Starts WATCHing `keys` for a transaction: for each, the count of its
    /// changes so far, which [`Transaction::changed_since`] compares with.
    /// Balance each with one [`Store::unwatch_versions`].
    pub fn watch_versions<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<u64> {
        keys.iter()
            .map(|k| {
                let k = k.as_ref();
                let mut g = self.write_shard_of(k);
                let v = g.versions.entry(k.into()).or_default();
                v.holders += 1;
                if v.holders == 1 {
                    self.versions_live.fetch_add(1, Ordering::AcqRel);
                }
                v.version.load(Ordering::Relaxed)
            })
            .collect()
    }

    /// The write-locked shard of `key`.
    fn write_shard_of(&self, key: &[u8]) -> RwLockWriteGuard<'_, Shard> {
        self.shard(key)
            .1
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends one WATCH of each key (see [`Store::watch_versions`]).
    pub fn unwatch_versions<K: AsRef<[u8]>>(&self, keys: &[K]) {
        for k in keys {
            let k = k.as_ref();
            let mut g = self.write_shard_of(k);
            if let Some(v) = g.versions.get_mut(k) {
                v.holders -= 1;
                if v.holders == 0 {
                    g.versions.remove(k);
                    self.versions_live.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// The value of each key, in the order given. Atomic over all the keys.
    pub fn read<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<Option<Vec<u8>>> {
        let mut values = Vec::with_capacity(keys.len());
        self.read_with(keys, |v| values.push(v.map(<[u8]>::to_vec)));
        values
    }

    /// Calls `f` with the value of each key, in the order given, while all
    /// their shards are read-locked: atomic like [`Store::read`], without a
    /// copy of each value (a job's READ renders straight from the store).
    /// Values are the bytes of the `&str`s they were set to: handing back
    /// a `&str` would mean checking them again (see `table`).
    pub fn read_with<K: AsRef<[u8]>>(&self, keys: &[K], mut f: impl FnMut(Option<&[u8]>)) {
        self.read_fence();
        if let [k] = keys {
            let k = k.as_ref();
            let (h, shard) = self.shard(k);
            let g = shard.read().unwrap_or_else(PoisonError::into_inner);
            return f(g.value(h, k));
        }
        if self.can_mask(keys.len()) {
            let m = self.masked(keys.iter().map(AsRef::as_ref));
            let guards = m.lock(|s| {
                self.shards[s]
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
            });
            for (i, k) in keys.iter().enumerate() {
                f(guards[m.guard(i)].value(m.hashes[i], k.as_ref()));
            }
            return;
        }
        let order = self.shards_of(keys.iter().map(AsRef::as_ref));
        let guards = self.read_locks(&order);
        for k in keys {
            let k = k.as_ref();
            let h = self.hash(k);
            f(guards[slot(&order, self.shard_at(h))].value(h, k));
        }
    }

    /// Deletes the keys in order; for each, whether it existed at that point
    /// (so a key given twice reports `false` the second time). Atomic.
    pub fn delete<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<bool> {
        if let Some(r) = self.remote() {
            return remote::delete(r, keys);
        }
        if self.can_mask(keys.len()) {
            let m = self.masked(keys.iter().map(AsRef::as_ref));
            let mut guards = m.lock(|s| {
                self.shards[s]
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
            });
            let existed: Vec<bool> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let g = &mut guards[m.guard(i)];
                    self.reap(g, m.hashes[i], k.as_ref());
                    g.remove(m.hashes[i], k.as_ref())
                })
                .collect();
            self.deleted(keys, &existed, |i| &guards[m.guard(i)]);
            return existed;
        }
        let order = self.shards_of(keys.iter().map(AsRef::as_ref));
        let mut guards = self.write_locks(&order);
        let existed: Vec<bool> = keys
            .iter()
            .map(|k| {
                let k = k.as_ref();
                let h = self.hash(k);
                let g = &mut guards[slot(&order, self.shard_at(h))];
                self.reap(g, h, k);
                g.remove(h, k)
            })
            .collect();
        self.deleted(keys, &existed, |i| {
            &guards[slot(&order, self.shard_of(keys[i].as_ref()))]
        });
        existed
    }

    /// Journals and reports the deletions of [`Store::delete`], the shards
    /// still locked; `shard` finds key `i`'s.
    fn deleted<'s, K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        existed: &[bool],
        shard: impl Fn(usize) -> &'s Shard,
    ) {
        if !existed.iter().any(|&e| e) {
            return;
        }
        let gone = || {
            keys.iter()
                .zip(existed)
                .enumerate()
                .filter(|(_, (_, &e))| e)
                .map(|(i, (k, _))| (i, k.as_ref()))
        };
        if let Some(j) = self.journal.get() {
            j.del(&mut gone().map(|(_, k)| k));
        }
        self.report_many(gone().map(|(i, k)| (k, None, shard(i))));
    }

    /// The value of one key.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
        self.read_fence();
        let key = key.as_ref();
        let (h, shard) = self.shard(key);
        shard
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .value(h, key)
            .map(<[u8]>::to_vec)
    }

    /// [`Store::get`], or `Err(WouldBlock)` if the key's shard is locked by
    /// a writer right now: for callers that must never wait on a lock.
    pub fn try_get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, WouldBlock> {
        self.try_get_with(key, |v| v.map(<[u8]>::to_vec))
    }

    /// Runs `f` with `key`'s value while its shard is read-locked, or
    /// `Err(WouldBlock)` if a writer holds the shard right now: a reader
    /// that encodes the value where it goes copies it once.
    pub fn try_get_with<R>(
        &self,
        key: impl AsRef<[u8]>,
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, WouldBlock> {
        if self.fenced_reads() {
            // It would wait on etcd: the pool's to do.
            return Err(WouldBlock);
        }
        let key = key.as_ref();
        let (h, shard) = self.shard(key);
        match shard.try_read() {
            Ok(g) => Ok(f(g.value(h, key))),
            Err(TryLockError::Poisoned(p)) => Ok(f(p.into_inner().value(h, key))),
            Err(TryLockError::WouldBlock) => Err(WouldBlock),
        }
    }

    /// Starts watching `key` if it is present: from now on its changes go
    /// to the hook. Runs `f` with whether it was present while the shard is
    /// still locked, so no change can fall between the check and `f`; the
    /// server posts its SUBSCRIBE answer from `f`, so that every change is
    /// posted either before the answer (and was not watched) or after it.
    /// Each successful watch must be balanced by one [`Store::unwatch`].
    pub fn watch<R>(&self, key: impl AsRef<[u8]>, f: impl FnOnce(bool) -> R) -> R {
        let key = key.as_ref();
        let (h, shard) = self.shard(key);
        let mut g = shard.write().unwrap_or_else(PoisonError::into_inner);
        self.reap(&mut g, h, key);
        let present = g.map.contains(h, key);
        if present {
            *g.watched.entry(key.into()).or_insert(0) += 1;
        }
        f(present)
    }

    /// Drops one watcher of each key (see [`Store::watch`]).
    pub fn unwatch<K: AsRef<[u8]>>(&self, keys: &[K]) {
        for k in keys {
            let k = k.as_ref();
            let mut g = self.write_shard_of(k);
            if let Some(n) = g.watched.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    g.watched.remove(k);
                }
            }
        }
    }

    /// Whether `key` is present right now.
    pub fn contains(&self, key: impl AsRef<[u8]>) -> bool {
        self.read_fence();
        let key = key.as_ref();
        let (h, shard) = self.shard(key);
        shard
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .value(h, key)
            .is_some()
    }

    /// A consistent copy of the whole table, sorted by key: every shard is
    /// read-locked (in order) for the duration of the copy, so the snapshot is
    /// the table as it was at one instant. Sorting happens after the locks
    /// are released.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_with(|| ()).0
    }

    /// [`Store::snapshot`], running `at` while every shard is still locked:
    /// nothing changes between the copy and `at` (the durable log starts a
    /// new segment there, so the snapshot is exactly what the old segments
    /// hold).
    pub fn snapshot_with<R>(&self, at: impl FnOnce() -> R) -> (Snapshot, R) {
        let all: Vec<usize> = (0..self.shards.len()).collect();
        let guards = self.read_locks(&all);
        let mut pairs = Vec::with_capacity(guards.iter().map(|g| g.map.len()).sum());
        let mut deadlines = Vec::new();
        let now = now_ms();
        for g in &guards {
            pairs.extend(g.live().map(|(k, v)| (k.to_owned(), v.to_owned())));
            deadlines.extend(
                g.deadlines
                    .iter()
                    .filter(|&(_, at)| at > now)
                    .map(|(k, at)| (k.to_vec(), at)),
            );
        }
        let r = at();
        drop(guards);
        (Snapshot::from_unsorted(pairs, deadlines), r)
    }

    /// A key chosen at random (RANDOMKEY), every key as likely as any
    /// other, or `None` if the store is empty. No copy of the keys: a
    /// count of each shard's, then a walk to the chosen one.
    pub fn random_key(&self) -> Option<Vec<u8>> {
        self.read_fence();
        // Starting at a random shard and taking the next one with keys
        // favoured a key by the number of empty shards before it: of two
        // keys in neighbouring shards, one came back once in 64 (Redis's
        // own RANDOMKEY test failed on it).
        let lens: Vec<usize> = self
            .shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).map.len())
            .collect();
        let mut at = random_below(lens.iter().sum());
        for (shard, &len) in self.shards.iter().zip(&lens) {
            if at >= len {
                at -= len;
                continue;
            }
            let g = shard.read().unwrap_or_else(PoisonError::into_inner);
            // Changed since it was counted: its last key, or none.
            let at = at.min(g.map.len().saturating_sub(1));
            // A key that is due is passed over for the next live one.
            let picked = g
                .live()
                .map(|(k, _)| k)
                .nth(at)
                .or_else(|| g.live().next().map(|(k, _)| k));
            if let Some(k) = picked {
                return Some(k.to_vec());
            }
        }
        // Every counted key gone meanwhile (or due): any live one.
        self.shards.iter().find_map(|shard| {
            let g = shard.read().unwrap_or_else(PoisonError::into_inner);
            let k = g.live().next().map(|(k, _)| k.to_vec());
            k
        })
    }

    /// Sets (or with `None` removes) a key's deadline as a data file says
    /// it was, neither journaled nor reported: for loading a data dir. A
    /// deadline already past is kept, and the key reaped as any other.
    pub fn restore_deadline(&self, key: &[u8], at: Option<u64>) {
        let (h, shard) = self.shard(key);
        let mut g = shard.write().unwrap_or_else(PoisonError::into_inner);
        match at {
            Some(at) if g.map.contains(h, key) => g.deadlines.set(key, at),
            _ => {
                g.deadlines.remove(key);
            }
        }
    }

    /// Removes keys whose deadline has passed, as Redis's active expire
    /// cycle does, so that memory is freed for keys nobody reads: at most
    /// `limit` per shard, a shard's write lock taken only when its earliest
    /// deadline has passed. Returns how many went.
    pub fn expire_due(&self, limit: usize) -> usize {
        let mut gone = 0;
        for shard in self.shards.iter() {
            let now = now_ms();
            let due = shard
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .deadlines
                .next()
                .is_some_and(|at| at <= now);
            if !due {
                continue;
            }
            let mut g = shard.write().unwrap_or_else(PoisonError::into_inner);
            for _ in 0..limit {
                let Some(key) = g.deadlines.pop_due(now) else {
                    break;
                };
                // Its deadline went with `pop_due`.
                g.map.remove(self.hash(&key), &key);
                self.tell_expired(&g, &key);
                gone += 1;
            }
        }
        gone
    }

    /// Keys with a deadline, and their mean time left in ms (INFO's
    /// `expires` and `avg_ttl`).
    pub fn deadline_stats(&self) -> (usize, u64) {
        let now = now_ms();
        expiry::mean_time_left(self.shards.iter().map(|s| {
            s.read()
                .unwrap_or_else(PoisonError::into_inner)
                .deadlines
                .time_left(now)
        }))
    }

    /// Number of keys (not atomic across shards; for statistics only).
    pub fn len(&self) -> usize {
        self.read_fence();
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The keys of one operation on a store of at most 64 shards, each hashed
/// once: the shards to lock are a bit mask walked upwards (the same
/// ascending order as everywhere), and a key's guard is found by counting
/// the bits below its shard, with one allocation in all (the guards).
struct Masked {
    hashes: [u64; MASKED_PAIRS],
    shards: [u8; MASKED_PAIRS],
    mask: u64,
}

/// The guards [`Masked::lock`] took, in shard order, kept on the stack: a
/// multi-key operation locks at most [`MASKED_PAIRS`] shards, and a `Vec`
/// of guards cost an allocation and a free per operation.
struct Guards<G> {
    slots: [Option<G>; MASKED_PAIRS],
}

impl<G> std::ops::Index<usize> for Guards<G> {
    type Output = G;

    fn index(&self, i: usize) -> &G {
        match &self.slots[i] {
            Some(g) => g,
            None => unreachable!("no guard {i}: Masked::guard counts only locked shards"),
        }
    }
}

impl<G> std::ops::IndexMut<usize> for Guards<G> {
    fn index_mut(&mut self, i: usize) -> &mut G {
        match &mut self.slots[i] {
            Some(g) => g,
            None => unreachable!("no guard {i}: Masked::guard counts only locked shards"),
        }
    }
}

impl Masked {
    /// Locks the shards in ascending order with `lock`.
    fn lock<G>(&self, mut lock: impl FnMut(usize) -> G) -> Guards<G> {
        let mut guards = Guards {
            slots: std::array::from_fn(|_| None),
        };
        let mut rest = self.mask;
        let mut n = 0;
        while rest != 0 {
            guards.slots[n] = Some(lock(rest.trailing_zeros() as usize));
            n += 1;
            rest &= rest - 1;
        }
        guards
    }

    /// Where key `i`'s guard is among those [`Masked::lock`] returned.
    fn guard(&self, i: usize) -> usize {
        let below = (1u64 << self.shards[i]) - 1;
        (self.mask & below).count_ones() as usize
    }
}

/// A number below `n` (at least 1), by chance: std's per-process random
/// hash keys over a counter, so no generator crate is needed for the
/// little randomness RANDOMKEY wants.
fn random_below(n: usize) -> usize {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    (SEED.get_or_init(Default::default).hash_one(c) % n.max(1) as u64) as usize
}

/// One of `items` by chance, or `None` if there are none.
pub fn pick<T>(items: &[T]) -> Option<&T> {
    items.get(random_below(items.len()))
}

/// Position of shard `shard` in the sorted lock order `order`.
fn slot(order: &[usize], shard: usize) -> usize {
    // Every key's shard is in `order` by construction.
    order.binary_search(&shard).unwrap_or_else(|i| i)
}

/// The most SCAN steps a shard's walk takes, however small COUNT is: each
/// step is a pass over the shard's index, so with a floor on what a step
/// takes in, a whole walk stays linear in the number of keys (instead of
/// keys x keys / COUNT).
const SCAN_PASSES: usize = 16;

/// Where one SCAN step over a shard stops: of the tags `tags` at or above
/// `from`, the end (exclusive, up to 2^32 for "the rest of the shard") of
/// the lowest `budget` or so, and how many tags that takes in. Keys sharing
/// a tag are taken together, so the step may take in more than `budget`
/// (never none while any are left), and the next step starts at a tag no
/// key was returned for.
fn scan_cut(tags: impl Iterator<Item = u32>, from: u64, budget: usize) -> (u64, usize) {
    const END: u64 = 1 << 32;
    let mut left: Vec<u32> = tags.filter(|&t| u64::from(t) >= from).collect();
    if left.len() <= budget {
        return (END, left.len());
    }
    // The (budget + 1)-th lowest tag is the first one not taken.
    let (_, &mut cut, _) = left.select_nth_unstable(budget);
    let below = left.iter().filter(|&&t| t < cut).count();
    if below > 0 {
        return (u64::from(cut), below);
    }
    // The lowest `budget + 1` tags are all `cut`: take every key of it.
    let same = left.iter().filter(|&&t| t == cut).count();
    (u64::from(cut) + 1, same)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn random_key_gives_every_key_alike() {
        let store = Store::new();
        // Two keys in neighbouring shards: the case a walk from a random
        // shard to the next non-empty one gets most wrong.
        let first = b"a".to_vec();
        let s = store.shard_at(store.hash(&first));
        let second = (0..100_000)
            .map(|i| format!("k{i}").into_bytes())
            .find(|k| store.shard_at(store.hash(k)) == (s + 1) % DEFAULT_SHARDS)
            .expect("some key lands in the next shard");
        store.set(&first, b"1".to_vec(), SetIf::Always, false);
        store.set(&second, b"2".to_vec(), SetIf::Always, false);
        let picks = 2000;
        let firsts = (0..picks)
            .filter(|_| store.random_key().as_deref() == Some(first.as_slice()))
            .count();
        // Fair: about half each (below 40% or above 60% in 2000 draws is
        // beyond any chance).
        assert!(
            (picks * 2 / 5..=picks * 3 / 5).contains(&firsts),
            "{firsts} of {picks} picks were the first key"
        );
        assert_eq!(Store::new().random_key(), None);
    }

    #[test]
    fn a_scan_cut_takes_the_lowest_tags_and_never_splits_one() {
        let tags = [50u32, 10, 40, 20, 30];
        assert_eq!(scan_cut(tags.into_iter(), 0, 2), (30, 2));
        assert_eq!(scan_cut(tags.into_iter(), 30, 2), (50, 2));
        assert_eq!(scan_cut(tags.into_iter(), 50, 2), (1 << 32, 1));
        assert_eq!(scan_cut(tags.into_iter(), 51, 2), (1 << 32, 0));
        assert_eq!(scan_cut(tags.into_iter(), 0, 5), (1 << 32, 5));
        // Keys sharing a tag go together: short of the budget...
        let tied = [7u32, 9, 9, 9, 12];
        assert_eq!(scan_cut(tied.into_iter(), 0, 2), (9, 1));
        // ... or past it, rather than none.
        assert_eq!(scan_cut(tied.into_iter(), 9, 2), (10, 3));
        assert_eq!(scan_cut([u32::MAX; 3].into_iter(), 0, 1), (1 << 32, 3));
    }

    #[test]
    fn a_scan_returns_each_lasting_key_once_in_bounded_steps() {
        let s = Store::new();
        let lasting: Vec<(String, String)> =
            (0..3000).map(|i| (format!("k{i}"), "v".into())).collect();
        s.write(&lasting);
        let mut seen = std::collections::HashMap::<String, usize>::new();
        let (mut cursor, mut steps) = (0u64, 0);
        loop {
            let count = 1 + steps % 37;
            let largest = s.shards.iter().map(|sh| sh.read().unwrap().map.len()).max();
            let floor = largest.unwrap_or(0) / SCAN_PASSES;
            let (next, keys) = s.scan(cursor, count, None);
            // Tags are 32 bits: two keys sharing one is rare, three never.
            assert!(
                keys.len() <= count.max(floor) + 1,
                "{} keys for COUNT {count}",
                keys.len()
            );
            for k in keys {
                *seen.entry(String::from_utf8(k).unwrap()).or_default() += 1;
            }
            // Keys come and go between steps.
            s.write(&[(format!("t{steps}"), "v")]);
            s.delete(&[format!("t{}", steps / 2)]);
            steps += 1;
            if next == 0 {
                break;
            }
            assert_ne!(next, cursor, "no progress");
            cursor = next;
        }
        for (k, _) in &lasting {
            assert_eq!(seen.get(k), Some(&1), "{k}");
        }
        assert!(seen.values().all(|&n| n == 1), "a key came back twice");
        assert!(steps > 3000 / 37, "{steps} steps: SCAN took whole shards");
        // MATCH filters what is looked at; a cursor past the shards ends.
        let (_, some) = s.scan(0, 1 << 20, Some(b"k1?"));
        assert_eq!(some.len(), 10);
        assert_eq!(s.scan(u64::MAX, 10, None), (0, Vec::new()));
    }

    #[test]
    fn a_scan_with_a_tiny_count_still_walks_in_a_few_passes() {
        let s = Store::with_shards(1);
        let pairs: Vec<(String, String)> =
            (0..1600).map(|i| (format!("k{i}"), "v".into())).collect();
        s.write(&pairs);
        let (mut cursor, mut steps, mut seen) = (0u64, 0, 0);
        loop {
            let (next, keys) = s.scan(cursor, 1, None);
            seen += keys.len();
            steps += 1;
            if next == 0 {
                break;
            }
            cursor = next;
        }
        assert_eq!(seen, 1600);
        assert!(steps <= SCAN_PASSES + 1, "{steps} passes over one shard");
    }

    #[test]
    fn write_read_delete() {
        let s = Store::new();
        s.write(&[("a", "1"), ("b", "2"), ("a", "3")]);
        assert_eq!(
            s.read(&["a", "b", "c"]),
            vec![Some("3".into()), Some("2".into()), None]
        );
        assert_eq!(s.delete(&["a", "c", "a"]), vec![true, false, false]);
        assert_eq!(s.read(&["a"]), vec![None]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn keys_sharing_a_long_prefix_are_all_kept() {
        // What a hashing flood looks like: many keys alike but for their
        // last bytes. Seeded per map, the hasher spreads them all the same.
        let s = Store::new();
        let prefix = "p".repeat(34);
        let keys: Vec<String> = (0..50_000).map(|i| format!("{prefix}{i:06}")).collect();
        for chunk in keys.chunks(100) {
            let pairs: Vec<(&str, &str)> = chunk.iter().map(|k| (k.as_str(), "v")).collect();
            s.write(&pairs);
        }
        assert_eq!(s.len(), keys.len());
        assert!(keys.iter().all(|k| s.contains(k)));
    }

    #[test]
    fn try_get_never_waits() {
        let s = Store::with_shards(1);
        s.write(&[("a", "1")]);
        assert_eq!(s.try_get("a"), Ok(Some("1".into())));
        assert_eq!(s.try_get("b"), Ok(None));
        let _writer = s.shards[0].write().unwrap();
        assert_eq!(s.try_get("a"), Err(WouldBlock));
    }

    #[test]
    fn snapshot_is_sorted_by_bytes() {
        let s = Store::with_shards(7);
        s.write(&[("b", "x"), ("B", "y"), ("a", "z"), ("aa", "w")]);
        let snap = s.snapshot();
        let keys: Vec<&[u8]> = snap.pairs().iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, vec![&b"B"[..], b"a", b"aa", b"b"]);
    }

    #[test]
    fn hook_sees_changes_in_order_and_only_real_deletes() {
        let s = Store::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let hook: ChangeHook = Box::new(move |changes| {
            let mut v = sink.lock().unwrap();
            for c in changes {
                let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                v.push((text(c.key), c.value.map(text)));
            }
        });
        assert!(s.set_change_hook(hook).is_ok());
        // Not watched yet: not reported.
        s.write(&[("k", "0"), ("other", "x")]);
        assert!(s.watch("k", |present| present));
        assert!(!s.watch("missing", |present| present));
        s.write(&[("k", "1"), ("other", "y"), ("k", "2")]);
        s.delete(&["k", "missing", "other"]);
        // Still watched after its deletion, until unwatched.
        s.write(&[("k", "3")]);
        s.unwatch(&["k"]);
        s.write(&[("k", "4")]);
        let v = seen.lock().unwrap().clone();
        assert_eq!(
            v,
            vec![
                ("k".into(), Some("1".into())),
                ("k".into(), Some("2".into())),
                ("k".into(), None),
                ("k".into(), Some("3".into())),
            ]
        );
    }

    /// A journal that keeps what it is given, as text.
    #[derive(Default, Clone)]
    struct Recorded(Arc<Mutex<Vec<String>>>);

    impl Journal for Recorded {
        fn set(&self, pairs: &mut dyn Iterator<Item = (&[u8], &[u8])>) {
            let pairs: Vec<String> = pairs
                .map(|(k, v)| format!("{}={}", String::from_utf8_lossy(k), v.len()))
                .collect();
            self.0.lock().unwrap().push(pairs.join(" "));
        }
        fn del(&self, _: &mut dyn Iterator<Item = &[u8]>) {}
        fn clear(&self) {}
        fn expire(&self, _: &[u8], _: Option<u64>) {}
    }

    #[test]
    fn big_values_handed_over_are_journaled_and_reported_as_kept() {
        let s = Store::new();
        let journal = Recorded::default();
        assert!(s.set_journal(Box::new(journal.clone())).is_ok());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        // Each value as its length and first byte.
        let hook: ChangeHook = Box::new(move |changes| {
            let mut v = sink.lock().unwrap();
            for c in changes {
                v.push((c.event, c.value.map(|v| (v.len(), v[0]))));
            }
        });
        assert!(s.set_change_hook(hook).is_ok());
        s.set_new_events(true);
        for k in ["big", "b2", "small"] {
            s.watch_key(k);
        }
        let big = |n: usize, b: u8| vec![b; 5000 + n];
        s.set("big", big(0, 1), SetIf::Always, false);
        assert_eq!(s.set("big", big(1, 2), SetIf::Absent, false), (false, None));
        s.write_owned(vec![
            (b"small", Cow::Borrowed(b"s")),
            (b"b2", Cow::Owned(big(2, 3))),
            (b"big", Cow::Owned(big(3, 4))),
            (b"b2", Cow::Owned(big(4, 5))),
        ]);
        assert!(s.get("big") == Some(big(3, 4)));
        assert!(s.get("b2") == Some(big(4, 5)));
        assert_eq!(s.get("small"), Some(b"s".to_vec()));
        assert_eq!(
            journal.0.lock().unwrap().clone(),
            vec!["big=5000", "small=1 b2=5004 big=5003 b2=5004"],
            "a key given twice is journaled with its last value"
        );
        use KeyEvent::{New, Set};
        assert_eq!(
            seen.lock().unwrap().clone(),
            vec![
                (New, Some((5000, 1))),
                (Set, Some((5000, 1))),
                (New, Some((1, b's'))),
                (New, Some((5002, 3))),
                (Set, Some((1, b's'))),
                (Set, Some((5004, 5))),
                (Set, Some((5003, 4))),
                (Set, Some((5004, 5))),
            ]
        );
    }

    #[test]
    fn watchers_are_counted() {
        let s = Store::new();
        let seen = Arc::new(Mutex::new(0usize));
        let sink = seen.clone();
        let hook: ChangeHook = Box::new(move |changes| *sink.lock().unwrap() += changes.len());
        assert!(s.set_change_hook(hook).is_ok());
        s.write(&[("k", "0")]);
        assert!(s.watch("k", |p| p));
        assert!(s.watch("k", |p| p));
        s.unwatch(&["k"]);
        s.write(&[("k", "1")]);
        assert_eq!(*seen.lock().unwrap(), 1, "one watcher left");
        s.unwatch(&["k", "never-watched"]);
        s.write(&[("k", "2")]);
        assert_eq!(*seen.lock().unwrap(), 1, "no watcher left");
    }

    #[test]
    fn multi_key_writes_are_never_torn() {
        // Writers set all keys of a group to the same value; readers must
        // never see two different values within one read.
        let s = Arc::new(Store::new());
        let keys: Vec<String> = (0..32).map(|i| format!("key{i}")).collect();
        let mut handles = Vec::new();
        for w in 0..2 {
            let (s, keys) = (s.clone(), keys.clone());
            handles.push(std::thread::spawn(move || {
                for n in 0..2000 {
                    let v = format!("{w}-{n}");
                    let pairs: Vec<(&str, &str)> =
                        keys.iter().map(|k| (k.as_str(), v.as_str())).collect();
                    s.write(&pairs);
                }
            }));
        }
        for _ in 0..2 {
            let (s, keys) = (s.clone(), keys.clone());
            handles.push(std::thread::spawn(move || {
                for _ in 0..2000 {
                    let got = s.read(&keys);
                    assert!(got.windows(2).all(|w| w[0] == w[1]), "torn read: {got:?}");
                    let snap = s.snapshot();
                    let vals: Vec<&Vec<u8>> = snap.pairs().iter().map(|(_, v)| v).collect();
                    assert!(vals.windows(2).all(|w| w[0] == w[1]), "torn snapshot");
                }
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
    }
}
