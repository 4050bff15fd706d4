//! A transaction (RESP's MULTI ... EXEC): every shard write-locked, in
//! ascending order, while its commands run, so that no change from any
//! source (a FIFO client, a job file, another RESP client) lands between
//! them, and no reader sees some of them and not others. Redis runs a
//! transaction with the whole server to itself; this is the same, for the
//! store. Its changes are reported to the hook in one call when it ends,
//! in the order they were made (see `held`), and go to the journal as one
//! group, replayed all or none.

use super::{Journal, KeyEvent, Mutation, SetIf, Shard, Store};
use std::sync::atomic::Ordering;
use std::sync::{PoisonError, RwLockWriteGuard};

/// The store while a transaction holds it (see [`Store::transaction`]).
pub struct Transaction<'a> {
    store: &'a Store,
    /// The locked shards (every one, or those of the keys named), by
    /// index, ascending.
    guards: Locks<'a>,
    /// Whether its changes are recorded in `mutations`: only a journal (the
    /// data dir) or a shared dataset reads them; building them cost an INCR
    /// three allocations.
    record: bool,
    mutations: Vec<Mutation>,
}

/// A transaction's shard guards, by shard index, ascending. Most
/// transactions (an INCR, an APPEND) lock one shard: that one is held
/// without the two allocations a list of shards and of guards cost.
enum Locks<'a> {
    One([Slot<'a>; 1]),
    Many(Vec<Slot<'a>>),
}

type Slot<'a> = (usize, RwLockWriteGuard<'a, Shard>);

impl<'a> Locks<'a> {
    fn slots(&self) -> &[Slot<'a>] {
        match self {
            Locks::One(one) => one,
            Locks::Many(v) => v,
        }
    }

    fn slots_mut(&mut self) -> &mut [Slot<'a>] {
        match self {
            Locks::One(one) => one,
            Locks::Many(v) => v,
        }
    }
}

impl Store {
    /// The shards of `keys` (every shard for `None`) write-locked, in
    /// ascending order as every multi-shard lock in the store is taken.
    fn locked(&self, keys: Option<&[&[u8]]>) -> Transaction<'_> {
        let lock = |i: usize| {
            let g = self.shards[i]
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            (i, g)
        };
        let guards = match keys {
            Some(keys @ [first, ..]) if self.one_shard(keys.iter().copied()) => {
                Locks::One([lock(self.shard_of(first))])
            }
            None => Locks::Many((0..self.shards.len()).map(lock).collect()),
            Some(keys) => Locks::Many(
                self.shards_of(keys.iter().copied())
                    .into_iter()
                    .map(lock)
                    .collect(),
            ),
        };
        Transaction {
            store: self,
            guards,
            record: self.journal.get().is_some() || self.remote.get().is_some(),
            mutations: Vec::new(),
        }
    }

    /// Runs `f` with the shards of `keys` write-locked (in ascending
    /// order), or every shard if `keys` is `None`: a transaction that names
    /// its keys leaves writers of other shards alone, which changes nothing
    /// any client can see (every operation on those keys takes the same
    /// locks). `f` may touch only those keys (or any, with `None`), and
    /// must not call other methods of the store: its locks are held (a
    /// store method would wait on them forever).
    pub fn transaction<R>(
        &self,
        keys: Option<&[&[u8]]>,
        f: impl FnOnce(&mut Transaction<'_>) -> R,
    ) -> R {
        let mut tx = self.locked(keys);
        let hold = super::held::Hold::start();
        let r = f(&mut tx);
        hold.release(self.hook.get());
        if let Some(j) = self.journal.get() {
            journal(&**j, &tx.mutations);
        }
        r
    }
}

/// Where a key is in a [`Transaction`]: its hash, its shard, and its
/// slot in the shard's table when it was there (checked again on use, so a
/// change in between costs a look-up, never a wrong key).
#[derive(Debug, Clone, Copy)]
pub struct Spot {
    h: u64,
    s: usize,
    slot: Option<crate::store::table::Found>,
}

/// A key, its value and its deadline, as they were before an attempt.
type Held = (Vec<u8>, Option<Vec<u8>>, Option<u64>);

/// What one attempt of a transaction on a shared dataset came to.
pub enum Attempt<R> {
    /// Made (or it changed nothing), with what `f` returned.
    Done(R),
    /// A key it read changed elsewhere first: run it again.
    Again,
}

impl Store {
    /// One attempt of a transaction on the shared dataset this table
    /// caches (see [`super::remote`]): `f` runs on the table under the
    /// locks of `keys`, as always, but what it changes is put back at once
    /// and told to no one; its changes are then made in the dataset, if
    /// every key is still at the version the table had (compare-and-swap),
    /// and come back through the feed. [`Attempt::Again`] when a key moved
    /// first (the table has caught up by then). A change the dataset
    /// refused, or one it cannot take (a deadline: no expiry there yet), is
    /// a failure for [`super::remote::take_failure`].
    ///
    /// A key of `pinned` is expected at the version given there instead of
    /// the table's (EXEC's watched keys: at the version they had when the
    /// transaction began).
    pub fn attempt_remote<R>(
        &self,
        keys: &[&[u8]],
        pinned: &[(Vec<u8>, i64)],
        f: impl FnOnce(&mut Transaction<'_>) -> R,
    ) -> Attempt<R> {
        let Some(remote) = self.remote.get() else {
            return Attempt::Done(self.transaction(Some(keys), f));
        };
        let mut tx = self.locked(Some(keys));
        let mut expect: Vec<(Vec<u8>, i64)> = keys
            .iter()
            .map(|k| {
                let at = pinned.iter().find(|(p, _)| p == k).map(|(_, v)| *v);
                (k.to_vec(), at.unwrap_or_else(|| remote.version(k)))
            })
            .collect();
        // A key named twice is compared once.
        expect.sort_unstable();
        expect.dedup_by(|a, b| a.0 == b.0);
        // What the keys hold now, to put back after `f`, and their change
        // counts for WATCH: a change not made here is not one (if it is
        // made, it counts when it is applied, by the feed or by this
        // thread: see `Mirror`).
        let before: Vec<Held> = keys
            .iter()
            .map(|k| (k.to_vec(), tx.get(k).map(<[u8]>::to_vec), tx.deadline(k)))
            .collect();
        let counts: Vec<Option<u64>> = keys.iter().map(|k| tx.watch_version(k)).collect();
        let hold = super::held::Hold::start();
        let r = f(&mut tx);
        // Told to no one: the feed tells the change when it is made.
        drop(hold);
        for (k, v, at) in &before {
            let (h, s) = tx.locate(k);
            let g = tx.shard_mut(s);
            match v {
                Some(v) => {
                    g.map.set(h, k, v);
                    match at {
                        Some(at) => g.deadlines.set(k, *at),
                        None => {
                            g.deadlines.remove(k);
                        }
                    }
                }
                None => {
                    g.remove(h, k);
                }
            }
        }
        for (k, count) in keys.iter().zip(counts) {
            if let Some(count) = count {
                tx.set_watch_version(k, count);
            }
        }
        let mutations = std::mem::take(&mut tx.mutations);
        drop(tx);
        let mut ops: Vec<super::remote::RemoteOp> = Vec::new();
        for m in &mutations {
            match m {
                Mutation::Set(pairs) => ops.extend(
                    pairs
                        .iter()
                        .map(|(k, v)| super::remote::RemoteOp::Put(k.clone(), v.clone())),
                ),
                Mutation::Del(keys) => ops.extend(
                    keys.iter()
                        .map(|k| super::remote::RemoteOp::Delete(k.clone())),
                ),
                Mutation::Clear => ops.push(super::remote::RemoteOp::DeleteAll),
                Mutation::Expire(..) => {
                    super::remote::fail(
                        "expiry is not available with --store etcd (see README)".into(),
                    );
                    return Attempt::Done(r);
                }
            }
        }
        if ops.is_empty() {
            return Attempt::Done(r);
        }
        // A key changed twice in one transaction: its last change.
        let mut last: std::collections::HashMap<Vec<u8>, usize> = Default::default();
        for (i, op) in ops.iter().enumerate() {
            if let super::remote::RemoteOp::Put(k, _)
            | super::remote::RemoteOp::Swap(k, _)
            | super::remote::RemoteOp::Delete(k) = op
            {
                last.insert(k.clone(), i);
            }
        }
        let ops: Vec<super::remote::RemoteOp> = ops
            .into_iter()
            .enumerate()
            .filter(|(i, op)| match op {
                super::remote::RemoteOp::Put(k, _)
                | super::remote::RemoteOp::Swap(k, _)
                | super::remote::RemoteOp::Delete(k) => last.get(k) == Some(i),
                super::remote::RemoteOp::DeleteAll => true,
            })
            .map(|(_, op)| op)
            .collect();
        match remote.commit(&expect, &ops) {
            Ok(c) if c.applied => {
                remote.wait_applied(c.revision);
                Attempt::Done(r)
            }
            Ok(c) => {
                remote.wait_applied(c.revision);
                Attempt::Again
            }
            Err(why) => {
                super::remote::fail(why);
                Attempt::Done(r)
            }
        }
    }
}

/// Records a transaction's mutations: one as itself (an INCR is one set
/// record, as a SET is), more as one group, replayed all or none.
fn journal(j: &dyn Journal, mutations: &[Mutation]) {
    match mutations {
        [] => {}
        [Mutation::Set(p)] => j.set(&mut p.iter().map(|(k, v)| (&k[..], &v[..]))),
        [Mutation::Del(k)] => j.del(&mut k.iter().map(Vec::as_slice)),
        [Mutation::Clear] => j.clear(),
        [Mutation::Expire(k, at)] => j.expire(k, *at),
        more => j.group(more),
    }
}

impl Transaction<'_> {
    fn locate(&self, key: &[u8]) -> (u64, usize) {
        let h = self.store.hash(key);
        (h, self.store.shard_at(h))
    }

    /// Where shard `s`'s guard is.
    fn slot_of(&self, s: usize) -> usize {
        self.guards
            .slots()
            .binary_search_by_key(&s, |(i, _)| *i)
            .expect("a transaction touched a key it did not name")
    }

    /// The locked shard `s`. Every key a transaction touches was named
    /// when it began (see [`Store::transaction`]).
    fn shard(&self, s: usize) -> &Shard {
        &self.guards.slots()[self.slot_of(s)].1
    }

    fn shard_mut(&mut self, s: usize) -> &mut Shard {
        let at = self.slot_of(s);
        &mut self.guards.slots_mut()[at].1
    }

    fn all(&self) -> impl Iterator<Item = &Shard> {
        self.guards.slots().iter().map(|(_, g)| &**g)
    }

    /// A watched key's change count now (see [`Store::watch_versions`]);
    /// `None` if nobody watches it. The watch goes on (EXEC on a shared
    /// dataset asks at each attempt, then ends its watches).
    pub fn watch_version(&mut self, key: impl AsRef<[u8]>) -> Option<u64> {
        let key = key.as_ref();
        let (_, s) = self.locate(key);
        let g = self.shard_mut(s);
        g.versions
            .get(key)
            .map(|v| v.version.load(Ordering::Relaxed))
    }

    /// Puts a watched key's change count back (see
    /// [`Store::attempt_remote`]: a change undone is not one).
    fn set_watch_version(&mut self, key: &[u8], version: u64) {
        let (_, s) = self.locate(key);
        if let Some(v) = self.shard_mut(s).versions.get(key) {
            v.version.store(version, Ordering::Relaxed);
        }
    }

    /// Whether a key watched at `version` (see [`Store::watch_versions`])
    /// changed since, and ends that watch.
    pub fn changed_since(&mut self, key: impl AsRef<[u8]>, version: u64) -> bool {
        let key = key.as_ref();
        let (_, s) = self.locate(key);
        let store = self.store;
        let g = self.shard_mut(s);
        let Some(v) = g.versions.get_mut(key) else {
            // Not watched any more: nothing can tell.
            return true;
        };
        let changed = v.version.load(Ordering::Relaxed) != version;
        v.holders -= 1;
        if v.holders == 0 {
            g.versions.remove(key);
            store.versions_live.fetch_sub(1, Ordering::AcqRel);
        }
        changed
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<&[u8]> {
        let key = key.as_ref();
        let (h, s) = self.locate(key);
        self.shard(s).value(h, key)
    }

    /// The key's deadline (Unix ms), if it is live and has one.
    pub fn deadline(&self, key: &[u8]) -> Option<u64> {
        let (h, s) = self.locate(key);
        let g = self.shard(s);
        g.value(h, key)?;
        g.deadlines.get(key)
    }

    /// Gives a live key a deadline, or with `None` takes its deadline
    /// away; reported as `event` (`expire`, `persist`), if any (KEEPTTL
    /// keeps a deadline without a word).
    pub fn set_deadline(&mut self, key: &[u8], at: Option<u64>, event: Option<KeyEvent>) {
        let (h, s) = self.locate(key);
        let store = self.store;
        let g = self.shard_mut(s);
        if g.value(h, key).is_none() {
            return;
        }
        match at {
            Some(at) => g.deadlines.set(key, at),
            None => {
                g.deadlines.remove(key);
            }
        }
        if let Some(event) = event {
            let g = &*g;
            store.report(g, key, g.map.get(h, key), event);
        }
        self.note(|| Mutation::Expire(key.to_owned(), at));
    }

    /// Records a change for the journal or the shared dataset, if either
    /// is there to read it.
    fn note(&mut self, mutation: impl FnOnce() -> Mutation) {
        if self.record {
            self.mutations.push(mutation());
        }
    }

    /// The key's shard after its deadline, if passed, took it away: every
    /// write looks first, as [`Store`]'s do.
    fn reaped(&mut self, key: &[u8]) -> (u64, usize) {
        let (h, s) = self.locate(key);
        let store = self.store;
        store.reap(self.shard_mut(s), h, key);
        (h, s)
    }

    pub fn contains(&self, key: impl AsRef<[u8]>) -> bool {
        let key = key.as_ref();
        let (h, s) = self.locate(key);
        self.shard(s).value(h, key).is_some()
    }

    /// [`Store::set`] inside the transaction.
    pub fn set(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        cond: SetIf,
        want_old: bool,
    ) -> (bool, Option<Vec<u8>>) {
        let (key, value) = (key.as_ref(), value.as_ref());
        let (h, s) = self.reaped(key);
        let store = self.store;
        let g = self.shard_mut(s);
        let (applied, made, old) = g.set_if(h, key, value, cond, want_old);
        if applied {
            if made {
                store.created(g, key, value);
            }
            store.report(g, key, Some(value), KeyEvent::Set);
            self.note(|| Mutation::Set(vec![(key.to_owned(), value.to_owned())]));
        }
        (applied, old)
    }

    /// Where `key` is, found once for a read-modify-write's read and
    /// write (an INCR hashed its key three times), its value reaped first
    /// if its deadline passed.
    pub fn spot(&mut self, key: &[u8]) -> Spot {
        let (h, s) = self.reaped(key);
        let slot = self.shard(s).map.slot_of(h, key);
        Spot { h, s, slot }
    }

    /// [`Transaction::get`] at a [`Transaction::spot`] of `key`.
    pub fn value_at(&self, at: Spot, key: &[u8]) -> Option<&[u8]> {
        self.shard(at.s).value_in(at.slot, at.h, key)
    }

    /// Sets `key` to `value`, keeping its deadline (INCR, APPEND and
    /// SETRANGE do), reported as `event` (`incrby`, `append`, ...).
    pub fn put(&mut self, key: &[u8], value: &[u8], event: KeyEvent) {
        let at = self.spot(key);
        self.put_at(at, key, value, event);
    }

    /// [`Transaction::put`] at a [`Transaction::spot`] of `key`.
    pub fn put_at(&mut self, at: Spot, key: &[u8], value: &[u8], event: KeyEvent) {
        let Spot { h, s, slot } = at;
        let store = self.store;
        let g = self.shard_mut(s);
        if g.map.set_in(slot, h, key, value) {
            store.created(g, key, value);
        }
        let kept = g.deadlines.get(key);
        store.report(g, key, Some(value), event);
        self.note(|| Mutation::Set(vec![(key.to_owned(), value.to_owned())]));
        if let Some(at) = kept {
            // A set record clears a deadline when replayed, as SET does.
            self.note(|| Mutation::Expire(key.to_owned(), Some(at)));
        }
    }

    /// Sets `key` to `value` with `deadline` (or none), whatever it had,
    /// reported as `event`: RENAME's `rename_to`, COPY's `copy_to`, which
    /// carry the source's deadline over.
    pub fn replace(&mut self, key: &[u8], value: &[u8], deadline: Option<u64>, event: KeyEvent) {
        let (h, s) = self.reaped(key);
        let store = self.store;
        let g = self.shard_mut(s);
        if g.set_plain(h, key, value) {
            store.created(g, key, value);
        }
        if let Some(at) = deadline {
            g.deadlines.set(key, at);
        }
        store.report(g, key, Some(value), event);
        self.note(|| Mutation::Set(vec![(key.to_owned(), value.to_owned())]));
        if deadline.is_some() {
            self.note(|| Mutation::Expire(key.to_owned(), deadline));
        }
    }

    /// Deletes `key`, reported as `event`; whether it was there.
    pub fn remove(&mut self, key: &[u8], event: KeyEvent) -> bool {
        let (h, s) = self.reaped(key);
        let store = self.store;
        let g = self.shard_mut(s);
        let was = g.remove(h, key);
        if was {
            store.report(g, key, None, event);
            self.note(|| Mutation::Del(vec![key.to_owned()]));
        }
        was
    }

    /// [`Store::write`] inside the transaction.
    pub fn write<'k>(&mut self, pairs: impl Iterator<Item = (&'k [u8], &'k [u8])>) {
        let mut logged = Vec::new();
        for (k, v) in pairs {
            let (h, s) = self.reaped(k);
            let store = self.store;
            let g = self.shard_mut(s);
            if g.set_plain(h, k, v) {
                store.created(g, k, v);
            }
            store.report(g, k, Some(v), KeyEvent::Set);
            if self.record {
                logged.push((k.to_owned(), v.to_owned()));
            }
        }
        if !logged.is_empty() {
            self.note(|| Mutation::Set(logged));
        }
    }

    /// [`Store::delete`] inside the transaction.
    pub fn delete<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Vec<bool> {
        let mut gone = Vec::new();
        let existed = keys
            .iter()
            .map(|k| {
                let k = k.as_ref();
                let (h, s) = self.reaped(k);
                let store = self.store;
                let g = self.shard_mut(s);
                let was = g.remove(h, k);
                if was {
                    store.report(g, k, None, KeyEvent::Del);
                    if self.record {
                        gone.push(k.to_owned());
                    }
                }
                was
            })
            .collect();
        if !gone.is_empty() {
            self.note(|| Mutation::Del(gone));
        }
        existed
    }

    /// Every key matching `pattern`.
    pub fn keys(&self, pattern: &[u8]) -> Vec<Vec<u8>> {
        self.all()
            .flat_map(|g| g.live())
            .filter(|(k, _)| crate::glob::matches(pattern, k))
            .map(|(k, _)| k.to_owned())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.all().map(|g| g.map.len()).sum()
    }

    /// [`Store::deadline_stats`] over the locked shards.
    pub fn deadline_stats(&self) -> (usize, u64) {
        let now = super::expiry::now_ms();
        super::expiry::mean_time_left(self.all().map(|g| g.deadlines.time_left(now)))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deletes every key (FLUSHDB), reporting each deletion.
    pub fn clear(&mut self) -> usize {
        let mut n = 0;
        for (_, g) in self.guards.slots_mut() {
            let taken = std::mem::take(&mut g.map);
            g.deadlines.clear();
            n += taken.len();
            for (k, _) in taken.iter() {
                self.store.report(g, k, None, KeyEvent::Flushed);
            }
        }
        self.note(|| Mutation::Clear);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_transaction_reports_in_order_and_journals_one_group() {
        struct Groups(Arc<Mutex<Vec<Vec<Mutation>>>>);
        impl super::super::Journal for Groups {
            fn set(&self, _: &mut dyn Iterator<Item = (&[u8], &[u8])>) {
                panic!("not one group");
            }
            fn del(&self, _: &mut dyn Iterator<Item = &[u8]>) {
                panic!("not one group");
            }
            fn clear(&self) {
                panic!("not one group");
            }
            fn expire(&self, _: &[u8], _: Option<u64>) {
                panic!("not one group");
            }
            fn group(&self, m: &[Mutation]) {
                self.0.lock().unwrap().push(m.to_vec());
            }
        }
        let store = Store::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c2 = calls.clone();
        let _ = store.set_change_hook(Box::new(move |changes| {
            c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            for c in changes {
                s2.lock()
                    .unwrap()
                    .push((c.key.to_vec(), c.value.map(<[u8]>::to_vec)));
            }
        }));
        store.set_screen(crate::store::KeyScreen::everything());
        let groups = Arc::new(Mutex::new(Vec::new()));
        let _ = store.set_journal(Box::new(Groups(groups.clone())));
        store.transaction(None, |tx| {
            tx.set("a", "1", SetIf::Always, false);
            tx.write([(&b"b"[..], &b"2"[..]), (b"c", b"3")].into_iter());
            assert_eq!(tx.delete(&["a", "zz"]), vec![true, false]);
            assert_eq!(tx.get("b"), Some(&b"2"[..]));
            assert_eq!(tx.len(), 2);
        });
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (b"a".to_vec(), Some(b"1".to_vec())),
                (b"b".to_vec(), Some(b"2".to_vec())),
                (b"c".to_vec(), Some(b"3".to_vec())),
                (b"a".to_vec(), None),
            ]
        );
        // Told in one call, so a listener sees the transaction whole.
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(groups.lock().unwrap().len(), 1);
        assert_eq!(store.get("c").as_deref(), Some(&b"3"[..]));
    }

    #[test]
    fn a_transaction_locks_only_the_shards_of_its_keys() {
        let store = Store::new();
        store.write(&[("a", "1"), ("b", "2")]);
        let other = (0..1000)
            .map(|i| format!("k{i}"))
            .find(|k| store.shard_of(k.as_bytes()) != store.shard_of(b"a"))
            .unwrap();
        store.transaction(Some(&[b"a"]), |tx| {
            tx.set("a", "3", SetIf::Always, false);
            // Another shard is free meanwhile.
            assert!(store.shards[store.shard_of(other.as_bytes())]
                .try_write()
                .is_ok());
        });
        assert_eq!(store.get("a").as_deref(), Some(&b"3"[..]));
    }

    #[test]
    fn a_watched_key_changed_by_anyone_is_seen() {
        let store = Store::new();
        store.write(&[("k", "1")]);
        let v = store.watch_versions(&["k", "absent"]);
        assert!(!store.transaction(None, |tx| tx.changed_since("k", v[0])));
        let v = store.watch_versions(&["k", "absent"]);
        store.write(&[("k", "1")]); // the same value still counts
        store.write(&[("absent", "now")]);
        assert!(store.transaction(None, |tx| tx.changed_since("k", v[0])));
        assert!(store.transaction(None, |tx| tx.changed_since("absent", v[1])));
        let v = store.watch_versions(&["k"]);
        store.delete(&["k"]);
        assert!(store.transaction(None, |tx| tx.changed_since("k", v[0])));
        // Released: no version is left behind.
        assert_eq!(store.versions_live.load(Ordering::Acquire), 1);
        store.unwatch_versions(&["absent"]);
        assert_eq!(store.versions_live.load(Ordering::Acquire), 0);
    }
}
