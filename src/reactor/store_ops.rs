//! Store work asked for by clients runs on a fixed thread pool, never on
//! the reactor thread, which must not wait on a shard lock. Each result goes
//! back to the reactor through the [`Mailbox`]. A session's pipelined
//! commands travel as one batch, and the work of all sessions in one turn
//! of the reactor as one pool job with one answer: one hand-off each way
//! per turn, however many clients and commands. While as many jobs are
//! out as there are cores beside the reactor's, new work waits for one to
//! come back and then goes as one larger job (see [`StorePool::dispatch`]).

use super::activity::FEW_CLIENTS;
use super::command::{execute, execute_on_one_shard, Command, Reply};
use super::linger::{Job, Lane};
use super::mailbox::{Event, Mailbox, OpResult};
use super::pubsub::{ChangeFilter, FilterList, SessionId};
use crate::persist::{Fsync, Log};
use crate::store::Store;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use threadpool::ThreadPool;

/// One entry of a batch: a command to run, or the reply a command that
/// needed no store already has (an error, say), kept in its place so
/// replies leave in request order.
pub type BatchItem = Result<Command, Reply>;

/// A store operation on behalf of a session.
#[derive(Debug)]
pub enum StoreOp {
    /// A FIFO SUBSCRIBE: watch the key if it exists (SPEC section 3).
    Subscribe(Vec<u8>),
    /// Commands, run in order.
    Batch(Vec<BatchItem>),
    /// WATCH (transactions): the keys' change counts.
    WatchVersions(Vec<Vec<u8>>),
    /// Start watching keys (RESP keyspace channels) and install a new
    /// filter for patterns and key-event channels, before the reply.
    Watch {
        keys: Vec<Vec<u8>>,
        filter: Option<(u64, FilterList)>,
    },
}

thread_local! {
    /// The session whose operation this pool thread runs, for the change
    /// hook (see [`origin`]).
    static ORIGIN: std::cell::Cell<Option<SessionId>> = const { std::cell::Cell::new(None) };
}

/// The session whose command is making the change being reported on this
/// thread, if it is a session's (not a job's, nor the expire cycle's).
pub fn origin() -> Option<SessionId> {
    ORIGIN.get()
}

/// Above this many operations a turn's work is split between jobs, so
/// that more pool threads can take part (as many as may be out at once).
const SPLIT_AT: usize = 64;

/// Longest new work waits for a job out to come back before it goes to
/// another store thread anyway: a slow job (KEYS over a large store, a
/// FLUSHALL) must not hold everyone else's commands up behind it. Jobs
/// take tens of microseconds; this is well past that.
const HOLD_MOST: Duration = Duration::from_micros(500);

/// Work is held only while at least this many clients are at work (see
/// [`super::activity::Activity`]): with a few, each waiting on one
/// request, holding one's request until another's job is back only added
/// that job's round trip to it (SET from 4 clients: 0.85x).
const HOLD_CLIENTS: usize = 8;

/// A store thread also lingers after a job of fewer than this many
/// commands while fewer than [`FEW_CLIENTS`] clients are at work: their
/// next requests come within the spin, and catching them there saved a
/// sleep and a wake-up each (SET from 8 to 32 clients: 1.1-1.3x). With
/// fifty, or with pipelined batches, the reactor has more to do between
/// jobs and a spinning thread took the CPU it needed (SET -c 50 0.9-0.96x,
/// INCR -c 24 -P 16 0.87x).
const LINGER_COMMANDS: usize = 16;

pub struct StorePool {
    threads: Vec<StoreThread>,
    /// How long it lingers (the reactor's `--spin`).
    linger: Duration,
    /// Where a job goes when every thread is busy (in turn).
    next: std::cell::Cell<usize>,
    store: Arc<Store>,
    filter: Arc<ChangeFilter>,
    mailbox: Arc<Mailbox>,
    /// The data dir's log, if there is one.
    log: Option<Arc<Log>>,
    /// Operations submitted this turn, handed over by [`StorePool::dispatch`].
    pending: Vec<(SessionId, u64, StoreOp)>,
    /// See [`StorePool::in_flight`].
    in_flight: Arc<AtomicUsize>,
    /// Pool jobs handed over and not yet done.
    jobs_out: Arc<AtomicUsize>,
    /// Most jobs out at once before new work waits (see
    /// [`StorePool::dispatch`]).
    most_out: usize,
    /// Work queued waiting for a job to come back.
    hold: Hold,
}

impl StorePool {
    pub fn new(
        threads: usize,
        store: Arc<Store>,
        filter: Arc<ChangeFilter>,
        mailbox: Arc<Mailbox>,
        log: Option<Arc<Log>>,
    ) -> Self {
        // The reactor keeps a core busy; a job out beyond the cores left
        // would only take turns on them, each turn a context switch.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        StorePool {
            most_out: threads.max(1).min(cores.saturating_sub(1).max(1)),
            jobs_out: Arc::new(AtomicUsize::new(0)),
            hold: Hold::default(),
            threads: (0..threads.max(1))
                .map(|_| StoreThread {
                    pool: ThreadPool::with_name("kvs-store".into(), 1),
                    lane: Arc::default(),
                })
                .collect(),
            linger: Duration::ZERO,
            next: std::cell::Cell::new(0),
            store,
            filter,
            mailbox,
            log,
            pending: Vec::new(),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How long a store thread that answered a lone client (or a few)
    /// waits, busy, for the next operation (0: not at all).
    pub fn set_linger(&mut self, most: Duration) {
        self.linger = most;
    }

    /// Queues `op` for the pool; its answer names `sid` and `generation`.
    /// Nothing runs before [`StorePool::dispatch`].
    pub fn submit(&mut self, sid: SessionId, generation: u64, op: StoreOp) {
        self.pending.push((sid, generation, op));
    }

    /// Operations handed to the pool and not yet done.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Hands the operations queued this turn to the pool; their answers
    /// come back together as one [`Event::Done`]. `lone`: they are a lone
    /// client's, whose next request is likely on its way, so the thread
    /// lingers for it after (see [`Lane`]); with a few clients it lingers
    /// after short jobs (see [`LINGER_COMMANDS`]).
    ///
    /// Over a table of its own, with `clients` at work (at least
    /// [`HOLD_CLIENTS`]) and as many jobs out as there are cores beside the
    /// reactor's, the work waits (up to [`HOLD_MOST`]) for one to come
    /// back, whose answer wakes the reactor to call this again: on two
    /// cores, where redis-benchmark's fifty clients take one,
    /// a second job out only took turns with the first and the reactor on
    /// the other core, every turn a context switch. Held, the work of
    /// several turns goes as one job: a fifth less CPU per request
    /// (BENCHMARKS, "Work waits for the job out").
    pub fn dispatch(&mut self, lone: bool, clients: usize) {
        if self.pending.is_empty() {
            return;
        }
        let busy = clients >= HOLD_CLIENTS
            && !self.store.is_remote()
            && self.jobs_out.load(Ordering::Acquire) >= self.most_out;
        if self.hold.holds(busy, Instant::now()) {
            return;
        }
        self.dispatch_now(lone, clients < FEW_CLIENTS);
    }

    /// When work held back by [`StorePool::dispatch`] must go, whatever is
    /// out: the reactor wakes by then.
    pub fn hold_deadline(&self) -> Option<Instant> {
        self.hold.deadline()
    }

    /// Hands the queued operations to the pool now (see
    /// [`StorePool::dispatch`]); `few`: few clients are at work.
    pub fn dispatch_now(&mut self, lone: bool, few: bool) {
        self.hold = Hold::default();
        if self.pending.is_empty() {
            return;
        }
        let work = std::mem::take(&mut self.pending);
        self.in_flight.fetch_add(work.len(), Ordering::AcqRel);
        for part in self.parts(work) {
            let (store, filter, mailbox, log) = (
                self.store.clone(),
                self.filter.clone(),
                self.mailbox.clone(),
                self.log.clone(),
            );
            let (in_flight, jobs_out) = (self.in_flight.clone(), self.jobs_out.clone());
            jobs_out.fetch_add(1, Ordering::AcqRel);
            let linger = lone || few && commands(&part) < LINGER_COMMANDS;
            self.execute(Box::new(move || {
                let ops = part.len();
                let ctx = Context {
                    store: &store,
                    filter: &filter,
                    mailbox: &mailbox,
                    log: log.as_deref(),
                };
                let mut done = Vec::with_capacity(part.len());
                // Which of `done` changed the store.
                let mut mutated = Vec::new();
                for (sid, generation, op) in part {
                    ORIGIN.set(Some(sid));
                    let ran = ctx.run(sid, generation, op);
                    ORIGIN.set(None);
                    if let Some((result, mutation)) = ran {
                        if mutation {
                            mutated.push(done.len());
                        }
                        done.push((sid, generation, result));
                    }
                }
                ctx.log_out(&mut done, &mutated);
                in_flight.fetch_sub(ops, Ordering::AcqRel);
                // Before the answer that wakes the reactor to dispatch
                // what waited for this job; posted even with nothing in it
                // (a SUBSCRIBE answers on its own) for that wake-up.
                jobs_out.fetch_sub(1, Ordering::AcqRel);
                mailbox.post(Event::Done(done));
                linger
            }));
        }
    }

    /// How a turn's work is shared out between pool jobs. Over a table of
    /// its own, an operation takes microseconds: one job (more above
    /// [`SPLIT_AT`], as many as may be out) saves hand-offs. Over a shared
    /// dataset each change waits a round trip on etcd, so one session's
    /// would wait behind another's: one job per session (its operations in
    /// order).
    fn parts(
        &self,
        mut work: Vec<(SessionId, u64, StoreOp)>,
    ) -> Vec<Vec<(SessionId, u64, StoreOp)>> {
        if !self.store.is_remote() {
            let n = work.len().div_ceil(SPLIT_AT).clamp(1, self.most_out);
            let each = work.len().div_ceil(n);
            let mut parts = Vec::with_capacity(n);
            while work.len() > each {
                parts.push(work.split_off(work.len() - each));
            }
            parts.push(work);
            return parts;
        }
        let mut parts: Vec<Vec<(SessionId, u64, StoreOp)>> = Vec::new();
        let mut part_of: std::collections::HashMap<SessionId, usize> = Default::default();
        for op in work {
            let i = *part_of.entry(op.0).or_insert_with(|| {
                parts.push(Vec::new());
                parts.len() - 1
            });
            parts[i].push(op);
        }
        parts
    }

    /// Drops one watcher of each key (see [`Store::watch`]), on the pool:
    /// it takes shard locks, which the reactor never does.
    pub fn unwatch(&self, keys: Vec<Vec<u8>>) {
        let store = self.store.clone();
        self.execute(Box::new(move || {
            store.unwatch(&keys);
            false
        }));
    }

    /// Ends WATCHes (UNWATCH, DISCARD, a session gone), on the pool.
    pub fn unwatch_versions(&self, keys: Vec<Vec<u8>>) {
        if keys.is_empty() {
            return;
        }
        let store = self.store.clone();
        self.execute(Box::new(move || {
            store.unwatch_versions(&keys);
            false
        }));
    }

    /// Installs a filter nobody waits for (after unsubscribing).
    pub fn install_filter(&self, generation: u64, list: FilterList) {
        let (store, filter) = (self.store.clone(), self.filter.clone());
        self.execute(Box::new(move || {
            filter.install(generation, list, &store);
            false
        }));
    }

    /// The store the pool works on, for the reactor's lock-free fast path.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Waits for every submitted operation to finish.
    pub fn join(&self) {
        for t in &self.threads {
            t.pool.join();
        }
    }

    /// Runs `job` on a lingering store thread, or else on an idle one (the
    /// first, so that a quiet server keeps one warm), or on the next in
    /// turn if all are busy.
    fn execute(&self, job: Job) {
        let mut job = job;
        for t in &self.threads {
            match t.lane.hand(job) {
                Ok(()) => return,
                Err(back) => job = back,
            }
        }
        let idle = self.threads.iter().position(StoreThread::idle);
        let i = idle.unwrap_or_else(|| {
            let i = self.next.get() % self.threads.len();
            self.next.set(i + 1);
            i
        });
        let t = &self.threads[i];
        let (lane, most) = (t.lane.clone(), self.linger);
        t.pool.execute(move || lane.run(job, most));
    }
}

/// One store thread: a pool of one thread, and the lane where it lingers
/// for its clients' next job. (One `ThreadPool` of n threads shares its
/// job queue behind one mutex that an idle thread holds while it waits,
/// so every job also woke the other idle thread to take the mutex over:
/// two wake-ups per hand-off where one does.)
struct StoreThread {
    pool: ThreadPool,
    lane: Arc<Lane>,
}

impl StoreThread {
    /// Neither running a job nor with one queued.
    fn idle(&self) -> bool {
        self.pool.active_count() + self.pool.queued_count() == 0
    }
}

/// How many commands a job's operations carry.
fn commands(part: &[(SessionId, u64, StoreOp)]) -> usize {
    part.iter()
        .map(|(_, _, op)| match op {
            StoreOp::Batch(items) => items.len(),
            _ => 1,
        })
        .sum()
}

/// Queued work waiting for a job out to come back (see
/// [`StorePool::dispatch`]).
#[derive(Default)]
struct Hold {
    /// Since when it has waited.
    since: Option<Instant>,
}

impl Hold {
    /// Whether the work waits on at `now`: while `busy` (many clients,
    /// and all the jobs that may be out are), and not yet [`HOLD_MOST`].
    fn holds(&mut self, busy: bool, now: Instant) -> bool {
        if !busy {
            return false;
        }
        let since = *self.since.get_or_insert(now);
        now.saturating_duration_since(since) < HOLD_MOST
    }

    /// When the work must go whatever is out.
    fn deadline(&self) -> Option<Instant> {
        self.since.map(|since| since + HOLD_MOST)
    }
}

/// What a pool job works with.
struct Context<'a> {
    store: &'a Store,
    filter: &'a ChangeFilter,
    mailbox: &'a Mailbox,
    log: Option<&'a Log>,
}

/// The error a mutation gets while the log cannot be written (Redis's
/// text for a failing AOF, so clients know it).
fn misconf(why: &str) -> Reply {
    Reply::Error(format!(
        "MISCONF Errors writing to the AOF file: {why}; kvs refuses changes until it can write its log"
    ))
}

impl Context<'_> {
    /// Runs one operation: its result, and whether it changed the store;
    /// `None` when its answer was posted already (a SUBSCRIBE answers
    /// under the shard lock, see [`Store::watch`]).
    fn run(&self, sid: SessionId, generation: u64, op: StoreOp) -> Option<(OpResult, bool)> {
        let store = self.store;
        Some(match op {
            StoreOp::Subscribe(key) => {
                // Posted under the shard lock: every change to the key is
                // posted either before this answer or after it, so the
                // reactor starts forwarding at exactly the right one.
                store.watch(&key, |exists| {
                    self.mailbox.post(Event::Done(vec![(
                        sid,
                        generation,
                        OpResult::Subscribe {
                            key: key.clone(),
                            exists,
                        },
                    )]))
                });
                return None;
            }
            StoreOp::Batch(items) => self.batch(items),
            StoreOp::WatchVersions(keys) => {
                let versions = store.watch_versions(&keys);
                (
                    OpResult::Versions(keys.into_iter().zip(versions).collect()),
                    false,
                )
            }
            StoreOp::Watch { keys, filter: list } => {
                for k in &keys {
                    store.watch_key(k);
                }
                if let Some((generation, list)) = list {
                    self.filter.install(generation, list, store);
                }
                (OpResult::Watched(keys), false)
            }
        })
    }

    /// Runs a batch; while the log cannot be written, its changes are
    /// refused before they apply. Returns whether it changed the store.
    fn batch(&self, items: Vec<BatchItem>) -> (OpResult, bool) {
        let refusing = self.log.is_some_and(Log::failing);
        let mut mutated = false;
        // A job of short commands only is timed as a whole and its time
        // spread over them; any other gets a clock reading per command,
        // each ending where the next begins.
        let whole = items
            .iter()
            .all(|item| item.as_ref().map_or(true, Command::is_fast));
        let mut micros = Vec::with_capacity(items.len());
        let began = std::time::Instant::now();
        let run = if whole && !refusing {
            mutated = items
                .iter()
                .any(|item| item.as_ref().is_ok_and(Command::is_mutation));
            execute_on_one_shard(self.store, items)
        } else {
            Err(items)
        };
        let replies = run.unwrap_or_else(|items| {
            let mut started = began;
            items
                .into_iter()
                .map(|item| {
                    let reply = match item {
                        Ok(cmd) if cmd.is_mutation() && refusing => {
                            // A refused EXEC still ends its watches.
                            if let Command::Exec { watched, .. } = &cmd {
                                let keys: Vec<&[u8]> =
                                    watched.iter().map(|(k, _)| k.as_slice()).collect();
                                self.store.unwatch_versions(&keys);
                            }
                            misconf("the last write failed")
                        }
                        Ok(cmd) => {
                            mutated |= cmd.is_mutation();
                            execute(self.store, cmd)
                        }
                        Err(reply) => reply,
                    };
                    if !whole {
                        let ended = std::time::Instant::now();
                        let took = ended.duration_since(started).as_micros();
                        micros.push(u32::try_from(took).unwrap_or(u32::MAX));
                        started = ended;
                    }
                    reply
                })
                .collect()
        });
        if whole {
            spread(began.elapsed().as_micros(), replies.len(), &mut micros);
        }
        (
            OpResult::Replies {
                replies,
                sync: None,
                micros,
            },
            mutated,
        )
    }

    /// With a data dir, the changes of a whole pool job go to the log in
    /// one write before any of its answers leaves: one `write` per turn of
    /// the reactor, not one per session (with 16 clients that was one per
    /// request, and each answer waited for the writes before its own).
    /// With `--fsync always` the answers that changed something wait for a
    /// sync. If the write fails, the changes were applied in memory (other
    /// clients may have seen them) and are kept for the next write:
    /// refusing them now would make a refused change visible and, once
    /// written, durable; they are answered once the log has them.
    fn log_out(&self, done: &mut [(SessionId, u64, OpResult)], mutated: &[usize]) {
        let (Some(log), false) = (self.log, mutated.is_empty()) else {
            return;
        };
        let wait = match log.write_out() {
            Ok(upto) if log.policy() == Fsync::Always => {
                log.want_sync(upto);
                Some(upto)
            }
            Ok(_) => None,
            Err(failed) => {
                log.hold_until(failed.upto);
                Some(failed.upto)
            }
        };
        if let Some(upto) = wait {
            for &i in mutated {
                if let OpResult::Replies { sync, .. } = &mut done[i].2 {
                    *sync = Some(upto);
                }
            }
        }
    }
}

/// `total` microseconds shared out over `n` commands, in whole
/// microseconds that add up to it: command `i` gets the microsecond marks
/// that fall in its share, as a clock read around each would give them.
fn spread(total: u128, n: usize, micros: &mut Vec<u32>) {
    let n128 = n.max(1) as u128;
    let mark = |i: u128| total * i / n128;
    for i in 0..n as u128 {
        micros.push(u32::try_from(mark(i + 1) - mark(i)).unwrap_or(u32::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::{spread, Hold, HOLD_MOST};
    use std::time::{Duration, Instant};

    #[test]
    fn work_waits_while_busy_and_no_longer_than_its_bound() {
        let t0 = Instant::now();
        let mut hold = Hold::default();
        assert!(!hold.holds(false, t0), "not busy: goes at once");
        assert_eq!(hold.deadline(), None);
        assert!(hold.holds(true, t0));
        assert_eq!(hold.deadline(), Some(t0 + HOLD_MOST));
        // Later turns while still busy: it keeps the time it began.
        assert!(hold.holds(true, t0 + HOLD_MOST / 2));
        assert_eq!(hold.deadline(), Some(t0 + HOLD_MOST));
        assert!(!hold.holds(true, t0 + HOLD_MOST), "waited long enough");
        assert!(!hold.holds(true, t0 + HOLD_MOST + Duration::from_millis(5)));
    }

    #[test]
    fn spread_time_adds_up_and_is_even() {
        for (total, n) in [(0u128, 3usize), (5, 16), (17, 4), (1000, 7), (3, 1)] {
            let mut micros = Vec::new();
            spread(total, n, &mut micros);
            assert_eq!(micros.len(), n);
            assert_eq!(micros.iter().map(|&m| u128::from(m)).sum::<u128>(), total);
            let (lo, hi) = (micros.iter().min().unwrap(), micros.iter().max().unwrap());
            assert!(hi - lo <= 1, "{total} over {n}: {micros:?}");
        }
    }
}
