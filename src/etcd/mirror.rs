//! This node's table as a cache of the dataset in etcd, fed in revision
//! order: everything under the prefix is read at one revision R, then a
//! watch from R + 1 applies each change as it comes (no gap by
//! construction), through the store's own methods, so the change hook
//! tells subscribers here of every change made through any node, this
//! one's included, in etcd's one order. Changes made through this node go
//! to etcd first ([`Remote::commit`]) and are answered once the table has
//! them: a change whose transaction was its own, made when the table was
//! at the revision just before it, is applied here by the thread that made
//! it (it is then exactly that revision; the feed skips it when it comes),
//! any other waits for the feed. A watch that breaks is started again from
//! the last revision applied, on whichever member answers; one whose
//! history was compacted away reloads the prefix and applies the
//! difference.

use super::client::{Compare, Etcd, EtcdError, Event, Op, OpResult, WatchMessage};
use super::group::{groupable, Group, Sent};
use crate::store::remote::{applying, Commit, CommitResult, Remote, RemoteOp};
use crate::store::Store;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Operations kvs may put in one transaction (a 256-pair WRITE), which the
/// cluster must accept (etcd's `--max-txn-ops`, 128 by default).
pub const TXN_OPS: usize = 256;

/// How long a change waits for the feed to bring it back before it is
/// answered anyway (with a warning): the change is made in etcd.
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// How long the feed's watch may bring nothing before it is started again
/// on the next member, from the revision applied (no gap by construction).
/// A member frozen or cut off from the others without noticing keeps a
/// watch open and silent; a quiet dataset costs a new watch this often.
const QUIET_SPELL: Duration = Duration::from_secs(5);

struct Applied {
    revision: i64,
    /// Each key's last change, as etcd numbers it (its mod revision).
    versions: HashMap<Vec<u8>, i64>,
    /// Threads waiting for a revision, each woken alone once the table
    /// has it: a condition variable woke every waiting store thread at
    /// each revision, a dozen context switches per change under load.
    waiters: Vec<(i64, Thread)>,
}

impl Applied {
    /// The table has reached `revision`: wakes who waited for it.
    fn reached(&mut self, revision: i64) {
        self.revision = self.revision.max(revision);
        let at = self.revision;
        self.waiters.retain(|(r, t)| {
            let done = *r <= at;
            if done {
                t.unpark();
            }
            !done
        });
    }
}

pub struct Mirror {
    etcd: Etcd,
    prefix: Vec<u8>,
    store: Arc<Store>,
    applied: Mutex<Applied>,
    /// Held by whoever applies a revision to the table (the feed, or a
    /// store thread applying its own change), so that each is applied
    /// once, in order. Never taken under a shard lock: [`Remote::version`] is asked
    /// under one, so `applied` cannot be the lock held while the table is
    /// written.
    applier: Mutex<()>,
    /// Changes of this node's applied by the thread that made them.
    applied_at_once: AtomicU64,
    stop: AtomicBool,
    /// The highest revision etcd has answered this node with: how far the
    /// feed is behind is this less the revision applied.
    seen: AtomicI64,
    /// `--store-reads linearizable` (see [`Remote::fence`]).
    linearizable: bool,
    /// Whether the feed's watch is up: while it is not, the table may be
    /// behind the dataset (INFO says so).
    following: AtomicBool,
    /// Unconditional changes made at the same time share transactions.
    group: Group,
    /// etcd's last refusal or silence, until a change is made again.
    last_error: Mutex<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Mirror {
    /// Checks the cluster, loads the prefix into `store` and starts the
    /// feed's thread. The store's changes go to etcd from then on.
    pub fn start(
        etcd: Etcd,
        prefix: &[u8],
        store: Arc<Store>,
        linearizable: bool,
    ) -> Result<Arc<Mirror>, String> {
        let mut probe = prefix.to_vec();
        probe.extend_from_slice(b"\0kvs-txn-probe");
        etcd.check_txn_ops(TXN_OPS, &probe).map_err(|e| match e {
            EtcdError::Refused(why) if why.contains("too many operations") => format!(
                "the etcd cluster refuses transactions of {TXN_OPS} operations ({why}): start its members with --max-txn-ops {TXN_OPS} or more"
            ),
            e => e.to_string(),
        })?;
        let mirror = Arc::new(Mirror {
            etcd,
            prefix: prefix.to_vec(),
            store,
            applied: Mutex::new(Applied {
                revision: 0,
                versions: HashMap::new(),
                waiters: Vec::new(),
            }),
            applier: Mutex::new(()),
            applied_at_once: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            seen: AtomicI64::new(0),
            linearizable,
            following: AtomicBool::new(false),
            group: Group::new(TXN_OPS),
            last_error: Mutex::new(String::new()),
        });
        mirror.reload().map_err(|e| e.to_string())?;
        let feed = mirror.clone();
        std::thread::Builder::new()
            .name("kvs-etcd-feed".into())
            .spawn(move || feed.follow())
            .map_err(|e| format!("cannot start the etcd feed: {e}"))?;
        Ok(mirror)
    }

    /// The revision the table has reached.
    pub fn revision(&self) -> i64 {
        lock(&self.applied).revision
    }

    pub fn endpoints(&self) -> &[String] {
        self.etcd.endpoints()
    }

    /// Whether the feed's watch is up (the table follows the dataset).
    pub fn following(&self) -> bool {
        self.following.load(Ordering::Relaxed)
    }

    /// Why etcd last refused or failed a change or a read, if it has
    /// since the last one it made.
    pub fn last_error(&self) -> String {
        lock(&self.last_error).clone()
    }

    /// Records `e` for INFO; its text, for the client.
    fn failed(&self, e: &EtcdError) -> String {
        let why = e.to_string();
        lock(&self.last_error).clone_from(&why);
        why
    }

    /// Whether reads are linearizable (`--store-reads`).
    pub fn linearizable(&self) -> bool {
        self.linearizable
    }

    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Revisions etcd has made known to this node that the table has not
    /// applied yet (INFO's watch lag).
    pub fn lag(&self) -> i64 {
        (self.seen.load(Ordering::Relaxed) - self.revision()).max(0)
    }

    /// Changes made through this node that were applied by the thread
    /// that made them, not waited for from the feed (INFO).
    pub fn applied_at_once(&self) -> u64 {
        self.applied_at_once.load(Ordering::Relaxed)
    }

    /// Ends the feed (at its next message or read timeout).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn key_of(&self, full: &[u8]) -> Option<Vec<u8>> {
        full.strip_prefix(self.prefix.as_slice())
            .map(<[u8]>::to_vec)
    }

    fn full(&self, key: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(key);
        k
    }

    /// Reads the whole prefix at one revision and makes the table what it
    /// says: keys it lacks deleted, the rest set (each a change the hook
    /// tells, if it changes anything).
    fn reload(&self) -> Result<(), EtcdError> {
        // Held across the read too: a store thread's own change applied
        // between the read and the table's update would be undone.
        let _applier = lock(&self.applier);
        let (revision, kvs) = self.etcd.range_prefix(&self.prefix)?;
        let mut versions = HashMap::with_capacity(kvs.len());
        let mut pairs = Vec::with_capacity(kvs.len());
        for kv in kvs {
            if let Some(k) = self.key_of(&kv.key) {
                versions.insert(k.clone(), kv.mod_revision);
                pairs.push((k, kv.value));
            }
        }
        applying(|| {
            let gone: Vec<Vec<u8>> = self
                .store
                .keys(b"*")
                .into_iter()
                .filter(|k| !versions.contains_key(k))
                .collect();
            if !gone.is_empty() {
                self.store.delete(&gone);
            }
            let changed: Vec<&(Vec<u8>, Vec<u8>)> = pairs
                .iter()
                .filter(|(k, v)| self.store.get(k).as_ref() != Some(v))
                .collect();
            for chunk in changed.chunks(1024) {
                let chunk: Vec<(&[u8], &[u8])> = chunk
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice()))
                    .collect();
                self.store.write(&chunk);
            }
        });
        let mut a = lock(&self.applied);
        // A reload may go back (a compaction seen on a member behind).
        a.revision = revision;
        a.versions = versions;
        a.reached(revision);
        Ok(())
    }

    /// The feed: watches from the last revision applied, for as long as
    /// the server runs, starting again on another member when a watch
    /// breaks.
    fn follow(self: Arc<Self>) {
        let mut warned = false;
        // The member to watch on first: after a quiet spell, the next one.
        let mut first = 0;
        while !self.stop.load(Ordering::SeqCst) {
            let from = self.revision() + 1;
            match self.etcd.watch_at(&self.prefix, from, first) {
                Ok(mut w) => {
                    if warned {
                        crate::log_info!("etcd watch from revision {from}: following again");
                    }
                    warned = false;
                    self.following.store(true, Ordering::Relaxed);
                    first = w.member();
                    w.set_read_timeout(Some(Duration::from_secs(1)));
                    let mut heard = Instant::now();
                    loop {
                        if self.stop.load(Ordering::SeqCst) {
                            return;
                        }
                        match w.next_message() {
                            Ok(Some(WatchMessage::Events { revision, events })) => {
                                heard = Instant::now();
                                self.apply(revision, events)
                            }
                            Ok(Some(WatchMessage::Progress { revision })) => {
                                heard = Instant::now();
                                let _applier = lock(&self.applier);
                                lock(&self.applied).reached(revision);
                            }
                            Ok(Some(WatchMessage::Compacted(r))) => {
                                self.compacted(from, r);
                                break;
                            }
                            // A quiet second: look at the stop flag, and
                            // after a quiet spell move to the next member.
                            Ok(Some(WatchMessage::Quiet)) => {
                                if heard.elapsed() >= QUIET_SPELL {
                                    first += 1;
                                    break;
                                }
                            }
                            Ok(None) | Err(_) => {
                                first += 1;
                                break;
                            }
                        }
                    }
                }
                Err(EtcdError::Compacted(r)) => self.compacted(from, r),
                Err(e) => {
                    self.following.store(false, Ordering::Relaxed);
                    if !warned {
                        crate::log_warn!("etcd watch from revision {from}: {e}; retrying");
                        warned = true;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    fn compacted(&self, from: i64, oldest: i64) {
        crate::log_warn!(
            "etcd compacted its history past revision {from} (oldest kept: {oldest}): reloading, subscribers hear the keys that differ"
        );
        while let Err(e) = self.reload() {
            crate::log_warn!("reload from etcd: {e}; retrying");
            std::thread::sleep(Duration::from_millis(200));
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Applies one message's events to the table, a revision at a time
    /// (a transaction's changes together), then says the table is there.
    /// A revision the table has (a store thread applied its own change)
    /// is skipped.
    fn apply(&self, revision: i64, events: Vec<Event>) {
        let _applier = lock(&self.applier);
        let at = lock(&self.applied).revision;
        let mut i = 0;
        while i < events.len() {
            let rev = event_revision(&events[i]);
            let mut j = i;
            while j < events.len() && event_revision(&events[j]) == rev {
                j += 1;
            }
            if rev > at {
                let changes: Vec<Change> = events[i..j]
                    .iter()
                    .filter_map(|e| match e {
                        Event::Put(kv) => self
                            .key_of(&kv.key)
                            .map(|k| Change::Put(k, kv.value.as_slice())),
                        Event::Delete { key, .. } => self.key_of(key).map(Change::Delete),
                    })
                    .collect();
                self.apply_revision(rev, &changes);
            }
            i = j;
        }
        lock(&self.applied).reached(revision);
    }

    /// Makes the table revision `rev`, whose changes are `changes`, in
    /// order, and wakes who waited for it. The caller holds `applier`.
    fn apply_revision(&self, rev: i64, changes: &[Change]) {
        applying(|| {
            // Runs of puts as one write, runs of deletes as one delete,
            // in order.
            let mut k = 0;
            while k < changes.len() {
                if let Change::Put(..) = changes[k] {
                    let mut pairs = Vec::new();
                    while let Some(Change::Put(key, value)) = changes.get(k) {
                        pairs.push((key.as_slice(), *value));
                        k += 1;
                    }
                    self.store.write(&pairs);
                } else {
                    let mut keys = Vec::new();
                    while let Some(Change::Delete(key)) = changes.get(k) {
                        keys.push(key.as_slice());
                        k += 1;
                    }
                    self.store.delete(&keys);
                }
            }
        });
        let mut a = lock(&self.applied);
        for c in changes {
            match c {
                Change::Put(k, _) => {
                    a.versions.insert(k.clone(), rev);
                }
                Change::Delete(k) => {
                    a.versions.remove(k);
                }
            }
        }
        a.reached(rev);
    }

    /// A change this thread made alone in revision `rev`: applied here if
    /// the table is at the revision before (the table then is `rev`
    /// exactly, whatever other nodes do), so the change is answered
    /// without waiting for the feed to bring it back. A transaction that
    /// changed nothing made no revision of its own and is left alone, as
    /// is a flush (the table may not name every key it took).
    fn apply_own(&self, rev: i64, ops: &[RemoteOp], results: &[OpResult]) {
        if results.len() != ops.len() {
            return;
        }
        let mut changes = Vec::with_capacity(ops.len());
        let mut changed = false;
        for (op, r) in ops.iter().zip(results) {
            match op {
                RemoteOp::Put(k, v) | RemoteOp::Swap(k, v) => {
                    changed = true;
                    changes.push(Change::Put(k.clone(), v.as_slice()));
                }
                RemoteOp::Delete(k) => {
                    changed |= matches!(r, OpResult::Deleted(n) if *n > 0);
                    changes.push(Change::Delete(k.clone()));
                }
                RemoteOp::DeleteAll => return,
            }
        }
        if !changed {
            return;
        }
        let _applier = lock(&self.applier);
        if lock(&self.applied).revision != rev - 1 {
            return;
        }
        self.apply_revision(rev, &changes);
        self.applied_at_once.fetch_add(1, Ordering::Relaxed);
    }
}

/// One change of a revision, by the table's key.
enum Change<'a> {
    Put(Vec<u8>, &'a [u8]),
    Delete(Vec<u8>),
}

fn event_revision(e: &Event) -> i64 {
    match e {
        Event::Put(kv) => kv.mod_revision,
        Event::Delete { mod_revision, .. } => *mod_revision,
    }
}

impl Remote for Mirror {
    fn commit(&self, expect: &[(Vec<u8>, i64)], ops: &[RemoteOp]) -> Result<Commit, String> {
        let compares: Vec<Compare> = expect
            .iter()
            .map(|(k, v)| Compare::ModRevision(self.full(k), *v))
            .collect();
        let etcd_ops: Vec<Op> = ops
            .iter()
            .map(|op| match op {
                RemoteOp::Put(k, v) => Op::Put(self.full(k), v.clone()),
                RemoteOp::Swap(k, v) => Op::Swap(self.full(k), v.clone()),
                RemoteOp::Delete(k) => Op::Delete(self.full(k)),
                RemoteOp::DeleteAll => Op::DeletePrefix(self.prefix.clone()),
            })
            .collect();
        let Sent { outcome: r, alone } = if compares.is_empty() && groupable(&etcd_ops) {
            self.group.txn(&self.etcd, etcd_ops)
        } else {
            Sent {
                outcome: self.etcd.txn(&compares, &etcd_ops),
                alone: true,
            }
        };
        let r = r.map_err(|e| {
            let why = self.failed(&e);
            match e {
                // Never taken, however often tried: an error, not TRYAGAIN.
                EtcdError::TooLarge(_) => format!("{}{why}", crate::store::remote::FINAL),
                _ => why,
            }
        })?;
        lock(&self.last_error).clear();
        self.seen.fetch_max(r.revision, Ordering::Relaxed);
        if alone && r.succeeded {
            self.apply_own(r.revision, ops, &r.results);
        }
        Ok(Commit {
            applied: r.succeeded,
            revision: r.revision,
            results: r
                .results
                .into_iter()
                .map(|o| match o {
                    OpResult::Put { prev } => CommitResult::Put(prev),
                    OpResult::Deleted(n) => CommitResult::Deleted(n),
                })
                .collect(),
        })
    }

    fn version(&self, key: &[u8]) -> i64 {
        lock(&self.applied).versions.get(key).copied().unwrap_or(0)
    }

    fn wait_applied(&self, revision: i64) {
        if let Err(at) = self.wait_for(revision) {
            crate::log_warn!(
                "the etcd feed has not brought revision {revision} back within {APPLY_WAIT:?} (at {at}); answering anyway"
            );
        }
    }

    fn linearizable_reads(&self) -> bool {
        self.linearizable
    }

    /// A read index: the revision etcd is at now (a quorum read), then
    /// the table is waited for until it has applied it.
    fn fence(&self) -> Result<(), String> {
        let revision = self
            .etcd
            .current_revision(&self.prefix)
            .map_err(|e| self.failed(&e))?;
        self.seen.fetch_max(revision, Ordering::Relaxed);
        self.wait_for(revision).map_err(|at| {
            format!("this node's copy has not reached etcd's revision {revision} within {APPLY_WAIT:?} (at {at})")
        })
    }
}

impl Mirror {
    /// Waits, bounded, until the table has applied `revision`; `Err` with
    /// the revision it is at if it does not get there in time.
    fn wait_for(&self, revision: i64) -> Result<(), i64> {
        let deadline = Instant::now() + APPLY_WAIT;
        loop {
            {
                let mut a = lock(&self.applied);
                if a.revision >= revision {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    let me = std::thread::current().id();
                    a.waiters.retain(|(_, t)| t.id() != me);
                    return Err(a.revision);
                }
                a.waiters.push((revision, std::thread::current()));
            }
            // Woken when the table has it, or spuriously: looked at again.
            std::thread::park_timeout(deadline.saturating_duration_since(Instant::now()));
        }
    }
}
