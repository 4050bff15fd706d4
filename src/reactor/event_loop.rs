//! The reactor: one thread, one `mio::Poll`, owning the registration FIFO,
//! every session's FIFOs, the signal pipe and the waker. It never blocks:
//! every descriptor is non-blocking and drained until `WouldBlock`, store
//! work goes to the [`StorePool`], and a client that does not read is
//! disconnected once its output buffer is full instead of being waited on.
//!
//! Tokens: a FIFO session in slab slot `i` uses `3i` (request FIFO),
//! `3i + 1` (response FIFO) and `3i + 2` (notification FIFO); a RESP
//! session uses `3i` for its socket; the fixed sources take the highest
//! tokens.
//!
//! The submodules split the reactor's work by subject: accepting FIFO
//! clients (`accept`) and RESP clients ([`streams`]), the registration
//! FIFO (`listener`), each protocol's requests (`fifo_requests`, `resp`)
//! and subscriptions and their messages (`deliver`).

use super::activity::{Activity, FEW_CLIENTS};
use super::fifo::{FifoId, RegistrationFifo};
use super::mailbox::{Event, Mailbox, OpResult};
use super::payoff::Payoff;
use super::pubsub::{SessionId, Subscriptions};
use super::registration::Framer;
use super::session::{Link, Session};
use super::store_ops::StorePool;
use crate::reactor::settings::Settings;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver as Inbox, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod accept;
mod deliver;
mod fifo_requests;
mod listener;
mod resp;
pub mod streams;
mod sweep;

use crate::logging::Throttle;
pub use accept::OPEN_GRACE;
use accept::{spare_descriptor, unwatch_out, OPEN_RETRY};
use listener::{Listener, REGISTRATION_CHECK};
pub use streams::StreamListeners;
pub use sweep::OUTPUT_STALL;
use sweep::SWEEP_EVERY;

pub const REGISTRATION: Token = Token(usize::MAX - 1);
pub const SIGNALS: Token = Token(usize::MAX - 2);
pub const WAKER: Token = Token(usize::MAX - 3);
pub const RESP_UNIX: Token = Token(usize::MAX - 4);
pub const RESP_TCP: Token = Token(usize::MAX - 5);

/// How long the reactor watches its inbox for the pool's answer before it
/// sleeps (see [`Reactor::wait`]): about a local SET's round trip through
/// the pool; none when the store is remote (a round trip is a network's).
const SPIN: Duration = Duration::from_micros(50);
/// How long it watches the inbox between two looks for events.
const SPIN_STEP: Duration = Duration::from_micros(5);
/// Turns of the loop in which no session but one may have had events
/// before it counts as a lone client (see [`Reactor::lone`]).
const LONE_TURNS: u64 = 8;
/// Most reads of one session's requests in one turn of the loop, each of
/// at most [`SERVICE_READ`] bytes.
const SERVICE_ROUNDS: usize = 4;
const SERVICE_READ: usize = 64 * 1024;
/// Most reply bytes a session holds while a batch of its is on the pool.
const HOLD_WHILE_BUSY: usize = 64 * 1024;

/// The rate limit of lines about refused or disconnected clients: ten a
/// second at most (see [`Throttle`]).
static CLIENT_LOG: std::sync::Mutex<Throttle> = std::sync::Mutex::new(Throttle::new(10));

/// Logs a line about a refused or disconnected client, rate-limited.
fn client_warn(args: std::fmt::Arguments<'_>) {
    crate::logging::warn_throttled(&CLIENT_LOG, args);
}

/// Most events taken from the inbox in one turn of the loop.
const INBOX_BATCH: usize = 4096;

const REQ: usize = 0;
const RESP: usize = 1;
const NOTIF: usize = 2;

fn token(sid: SessionId, kind: usize) -> Token {
    Token(sid * 3 + kind)
}

/// Why a session ended, for the server's log.
#[derive(Debug, PartialEq, Eq)]
enum Close {
    /// The client asked (DISCONNECT) or went away: nothing to log.
    Quiet,
    /// A FIFO client closed the named FIFO without DISCONNECT: said at
    /// INFO, since a client that means to stay and closes it by mistake
    /// should be able to find out why its session ended.
    Gone(&'static str),
    /// Idle past `--timeout`: said at debug, as Redis does.
    Idle,
    Log(String),
}

/// How to end a session whose output could not be written. A reader that
/// went away (EPIPE, or a reset socket) is the client's business, as when
/// it closes without a word: a RESP client quitting while a reply or a
/// published message is on its way is routine, not a warning. Anything
/// else is the server's to report.
fn write_failed(e: &std::io::Error, stream: bool) -> Close {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
    match e.kind() {
        BrokenPipe | ConnectionReset if stream => Close::Quiet,
        BrokenPipe => Close::Gone("response or notification FIFO"),
        _ => Close::Log(format!("writing to the client failed: {e}")),
    }
}

pub struct Reactor {
    poll: Poll,
    /// The registration FIFO while the server takes new clients.
    listener: Option<Listener>,
    registration_path: PathBuf,
    /// When to check next that the registration path is still our FIFO.
    next_registration_check: Instant,
    framer: Framer,
    /// Rate limit of the "dropped a bad connect request" log line.
    drop_log: Throttle,
    /// When to look next for idle, unauthenticated and stalled sessions.
    next_sweep: Instant,
    /// See [`SPIN`].
    spin: Duration,
    signals: Signals,
    sessions: Slab<Session>,
    subs: Subscriptions,
    /// Generation of the last pattern / key-event filter handed to the pool.
    filter_generation: u64,
    /// The RESP listeners, while the server takes new clients.
    streams: StreamListeners,
    /// The password RESP clients must AUTH with, if any.
    password: Option<Vec<u8>>,
    /// `--store etcd`: the feed of the shared dataset (for INFO).
    mirror: Option<Arc<crate::etcd::Mirror>>,
    /// Sessions that sent MONITOR.
    monitors: Vec<SessionId>,
    /// CLIENT TRACKING: who may have cached what.
    tracking: resp::TrackingTable,
    /// INFO commandstats and errorstats.
    cmdstats: resp::CommandStats,
    /// `notify-keyspace-events`: what RESP subscribers hear.
    notify_flags: crate::reactor::notify_flags::NotifyFlags,
    stats: Stats,
    /// FIFOs held by live sessions: no second session may name them.
    fifos_in_use: HashSet<FifoId>,
    inbox: Inbox<Event>,
    mailbox: Arc<Mailbox>,
    pool: StorePool,
    opts: Settings,
    next_generation: u64,
    /// Where sessions' bytes are read into, before they join their input.
    read_buf: Vec<u8>,
    /// A RESP round's batch and its command-table places, kept from a
    /// round answered here (GETs) for the next: a lone GET allocated both.
    spare_batch: Vec<crate::reactor::store_ops::BatchItem>,
    spare_names: Vec<Option<usize>>,
    /// The log is synced up to here (`--fsync always`).
    durable: u64,
    /// Sessions whose answers wait for a sync.
    syncing: Vec<SessionId>,
    /// Sessions with bytes queued since the last flush.
    dirty: Vec<SessionId>,
    /// Sessions whose requests were not all read last turn.
    resume: Vec<SessionId>,
    /// RESP listeners that may hold more connections than one turn took.
    accept_left: Vec<Token>,
    /// Sessions with a write end still waiting for its client.
    opening: Vec<SessionId>,
    shutting_down: bool,
    /// One descriptor kept free for refusing clients when none is left.
    spare_fd: Option<std::fs::File>,
    stop_jobs: Arc<AtomicBool>,
    jobs_done: bool,
    /// Turns of the loop so far.
    turn: u64,
    /// The session that had events last, and the turn in which another
    /// one had events before it: a lone client's store thread lingers
    /// after any job of its.
    last_active: usize,
    others_turn: u64,
    /// How many clients are at work (see [`StorePool::dispatch`]).
    activity: Activity,
    /// Whether its spin has paid lately (see [`Reactor::wait`]).
    spin_payoff: Payoff,
    /// The last turn in which a session had events.
    event_turn: u64,
}

pub struct ReactorParts {
    /// Set on SIGINT/SIGTERM: job files not yet started are not started.
    pub stop_jobs: Arc<AtomicBool>,
    pub poll: Poll,
    pub registration_path: PathBuf,
    pub inbox: Inbox<Event>,
    pub mailbox: Arc<Mailbox>,
    pub pool: StorePool,
    pub opts: Settings,
    pub password: Option<Vec<u8>>,
    /// `--store etcd`: the feed of the shared dataset (for INFO).
    pub mirror: Option<Arc<crate::etcd::Mirror>>,
}

/// Counters for INFO.
#[derive(Debug)]
pub struct Stats {
    pub started: Instant,
    pub connections: u64,
    pub rejected: u64,
    pub commands: u64,
    /// Batches of RESP commands handed to the store pool: with pipelining,
    /// far fewer than the commands they carry.
    pub batches: u64,
}

impl Reactor {
    pub fn new(parts: ReactorParts) -> io::Result<Reactor> {
        let ReactorParts {
            stop_jobs,
            poll,
            registration_path,
            inbox,
            mailbox,
            pool,
            opts,
            password,
            mirror,
        } = parts;
        let mut signals = Signals::new([SIGUSR1, SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let spin = match opts.spin {
            Some(spin) => spin,
            None if pool.store().is_remote() => Duration::ZERO,
            None => SPIN,
        };
        let mut pool = pool;
        pool.set_linger(spin);
        Ok(Reactor {
            poll,
            listener: None,
            registration_path,
            next_registration_check: Instant::now() + REGISTRATION_CHECK,
            framer: Framer::default(),
            drop_log: Throttle::new(1),
            next_sweep: Instant::now() + SWEEP_EVERY,
            spin,
            signals,
            sessions: Slab::new(),
            subs: Subscriptions::default(),
            filter_generation: 0,
            streams: StreamListeners::default(),
            password,
            mirror,
            notify_flags: Default::default(),
            monitors: Vec::new(),
            tracking: Default::default(),
            cmdstats: Default::default(),
            stats: Stats {
                started: Instant::now(),
                connections: 0,
                rejected: 0,
                commands: 0,
                batches: 0,
            },
            fifos_in_use: HashSet::new(),
            inbox,
            mailbox,
            pool,
            opts,
            next_generation: 0,
            read_buf: vec![0; super::session::READ_CHUNK],
            spare_batch: Vec::new(),
            spare_names: Vec::new(),
            durable: 0,
            syncing: Vec::new(),
            dirty: Vec::new(),
            resume: Vec::new(),
            accept_left: Vec::new(),
            opening: Vec::new(),
            shutting_down: false,
            spare_fd: spare_descriptor(),
            stop_jobs,
            jobs_done: false,
            turn: 0,
            last_active: usize::MAX,
            others_turn: 0,
            activity: Activity::default(),
            spin_payoff: Payoff::default(),
            event_turn: 0,
        })
    }

    /// Starts taking clients through `fifo`, the registration FIFO.
    pub fn listen(&mut self, fifo: RegistrationFifo) -> io::Result<()> {
        self.listener = Some(Listener::new(&self.poll, fifo)?);
        Ok(())
    }

    /// Serves until SIGINT or SIGTERM and the served job files are done.
    /// Returns how many sessions were open at the end (and are closed).
    pub fn run(&mut self) -> io::Result<usize> {
        let mut events = Events::with_capacity(1024);
        let mut inbox_left = false;
        let mut registration_left = false;
        loop {
            self.turn += 1;
            let left = inbox_left
                || registration_left
                || !self.resume.is_empty()
                || !self.accept_left.is_empty();
            self.wait(&mut events, left)?;
            // Before this turn's sessions are counted: a window that ended
            // while the reactor slept does not take them.
            self.activity.tick(Instant::now());
            for ev in events.iter() {
                match ev.token() {
                    REGISTRATION => registration_left = true,
                    SIGNALS => self.handle_signals(),
                    WAKER => {}
                    RESP_UNIX | RESP_TCP => self.accept_streams(ev.token()),
                    Token(t) => {
                        let sid = t / 3;
                        self.activity.saw(sid);
                        self.event_turn = self.turn;
                        if sid != self.last_active {
                            self.last_active = sid;
                            self.others_turn = self.turn;
                        }
                        self.session_ready(sid, t % 3, ev)
                    }
                }
            }
            if registration_left {
                registration_left = self.read_registrations();
            }
            for which in std::mem::take(&mut self.accept_left) {
                self.accept_streams(which);
            }
            let mut resume = std::mem::take(&mut self.resume);
            resume.sort_unstable();
            resume.dedup();
            for sid in resume {
                self.service(sid);
            }
            if !self.opening.is_empty() {
                self.retry_opening();
            }
            // One clock reading for the turn's timers; the rare checks read
            // it again after their work to set their next time.
            let now = Instant::now();
            if now >= self.next_registration_check {
                self.check_registration();
                self.next_registration_check = Instant::now() + REGISTRATION_CHECK;
            }
            if now >= self.next_sweep {
                self.sweep();
                self.next_sweep = Instant::now() + SWEEP_EVERY;
            }
            if self.framer.expire(now) {
                crate::log_warn!("dropped an incomplete connect request");
            }
            inbox_left = self.drain_inbox();
            self.pool.dispatch(self.lone(), self.activity.clients());
            self.flush_dirty();
            if self.shutting_down && self.jobs_done {
                break;
            }
        }
        let open = self.sessions.len();
        self.close_all();
        self.pool.dispatch_now(false, false);
        self.pool.join();
        Ok(open)
    }

    /// Waits for events, or with `work_left` not at all. While the pool
    /// works on a few clients' operations (fewer than [`FEW_CLIENTS`] at
    /// work, a lone client's included), or just after sessions' requests
    /// were answered with nothing left on the pool, it watches the inbox
    /// and the clients for up to `--spin` ([`SPIN`]), looking for events
    /// now and then: an answer or a next request that comes within it is
    /// taken without the reactor being put to sleep and woken again
    /// (BENCHMARKS, "A lone client's round trip" and "Work waits for the
    /// job out"), as long as such spins have lately caught something
    /// ([`Payoff`]).
    fn wait(&mut self, events: &mut Events, work_left: bool) -> io::Result<()> {
        // Not while many clients' operations are out: the store thread
        // working on them needs the other core (on two cores, where
        // redis-benchmark takes one, SET -c 50 lost a fifth before their
        // work was held for the job out, and gained nothing after).
        let in_flight = self.pool.in_flight();
        // Sessions had events in one of the last two turns (requests
        // answered here, or sent to the pool and answered last turn): more
        // are likely on their way. Spinning then took GET -c 50 from 0.86x
        // of Redis to 1.13x, and cost nothing where SETs went to the pool.
        let answered = in_flight == 0 && self.turn - self.event_turn <= 2;
        let few = self.activity.clients() < FEW_CLIENTS;
        let spin = !work_left
            && !self.spin.is_zero()
            && (answered || in_flight > 0 && few)
            && self.spin_payoff.worth();
        if spin {
            // Events are looked for now and then meanwhile: another
            // client's request is not kept waiting for the spin.
            let until = Instant::now() + self.spin;
            // Awake meanwhile: the answer's poster need not ring the waker.
            self.mailbox.watch();
            let mut polled;
            let posted = loop {
                polled = self.poll_events(events, Some(Duration::ZERO));
                if polled.is_err() || !events.is_empty() {
                    break false;
                }
                if self.mailbox.wait_briefly(SPIN_STEP) {
                    break true;
                }
                if Instant::now() >= until {
                    break false;
                }
            };
            // Before any return: a reactor about to sleep must be woken.
            let posted = self.mailbox.unwatch() || posted;
            self.spin_payoff.paid(posted || !events.is_empty());
            polled?;
            if posted || !events.is_empty() {
                return Ok(());
            }
        }
        self.poll_events(events, self.timeout(work_left))
    }

    /// Whether one client alone had events in the last [`LONE_TURNS`]
    /// turns: the one the reactor and a store thread spin for.
    fn lone(&self) -> bool {
        self.turn - self.others_turn > LONE_TURNS
    }

    fn poll_events(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        match self.poll.poll(events, timeout) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// How long the next poll may sleep: until the first timer is due, and
    /// not at all while work is left over from the last turn.
    fn timeout(&self, work_left: bool) -> Option<Duration> {
        let now = Instant::now();
        let retry = (!self.opening.is_empty()).then(|| now + OPEN_RETRY);
        let backlog = work_left.then_some(now);
        [
            self.framer.deadline(),
            retry,
            backlog,
            Some(self.next_registration_check),
            Some(self.next_sweep),
            self.pool.hold_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|due| due.saturating_duration_since(now))
    }

    // ----- signals --------------------------------------------------------

    fn handle_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGUSR1 => {
                    let n = self.sessions.len();
                    self.close_all();
                    crate::log_info!(
                        "SIGUSR1: disconnected {n} clients, cleared all subscriptions"
                    );
                }
                _ => self.begin_shutdown(),
            }
        }
    }

    fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.stop_jobs.store(true, Ordering::SeqCst);
        self.stop_listening(true);
        self.streams.close(self.poll.registry());
        if !self.jobs_done {
            crate::log_info!("shutting down once the running job files finish");
        }
    }

    // ----- sessions -------------------------------------------------------

    /// An event on one of a session's descriptors. `gone`: the peer closed
    /// its end or the descriptor failed.
    fn session_ready(&mut self, sid: SessionId, kind: usize, ev: &mio::event::Event) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let gone = ev.is_error() || ev.is_write_closed();
        if s.is_resp() {
            // One socket both ways: read what came (end-of-file included),
            // and send what waits if it drained.
            if ev.is_readable() || ev.is_read_closed() {
                s.unread = true;
                self.service(sid);
            }
            if ev.is_error() {
                return self.close(sid, Close::Quiet);
            }
            if ev.is_writable() {
                self.flush(sid);
            }
            return;
        }
        match kind {
            REQ => {
                s.unread = true;
                self.service(sid)
            }
            _ if gone => self.close(
                sid,
                Close::Gone(if kind == NOTIF {
                    "notification FIFO"
                } else {
                    "response FIFO"
                }),
            ),
            _ => self.flush(sid),
        }
    }

    /// Reads and answers a session's requests for as long as it can make
    /// progress without waiting.
    fn service(&mut self, sid: SessionId) {
        for _ in 0..SERVICE_ROUNDS {
            let Some(s) = self.sessions.get_mut(sid) else {
                return;
            };
            s.read_requests(SERVICE_READ, &mut self.read_buf);
            let had = s.inbuf.len();
            if s.is_resp() {
                self.serve_resp(sid);
            } else {
                self.serve_fifo(sid);
            }
            if let Some(s) = self.sessions.get_mut(sid) {
                // Bytes taken: a whole request came.
                if s.inbuf.len() < had {
                    s.last_active = Instant::now();
                }
            }
            // Read on only if the last read stopped early and there is room.
            match self.sessions.get(sid) {
                Some(s) if s.unread && !s.input_full() && !s.busy => continue,
                _ => break,
            }
        }
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        // Full, not waiting on the pool, and still not one whole request:
        // a request that never ends.
        let endless = s.is_resp()
            && s.input_full()
            && !s.busy
            && s.inbuf.parse(0, false) == crate::protocol::resp::Parsed::Incomplete;
        if endless {
            let why = format!(
                "query buffer limit ({} bytes) reached without a whole request; disconnected",
                s.input_limit()
            );
            return self.close(sid, Close::Log(why));
        }
        if s.unread && !s.input_full() && !s.busy {
            // A client that keeps writing gets its turn again after
            // everyone else's, not all of this one.
            self.resume.push(sid);
        }
        if s.peer_closed && !s.busy {
            self.close(sid, Close::Quiet);
        }
    }

    /// Whether the session may take another request now: not while one is
    /// at the pool, and not while its answers pile up unread (the flush at
    /// the end of the turn sends them or cuts the client off).
    fn ready_for_more(&self, sid: SessionId) -> bool {
        self.sessions
            .get(sid)
            .is_some_and(|s| !s.busy && s.pending_output() <= self.opts.output_buffer)
    }

    /// A store result for session `sid`, if it is still the same session.
    fn finish(&mut self, sid: SessionId, generation: u64, result: OpResult) {
        let live = self
            .sessions
            .get(sid)
            .is_some_and(|s| s.generation == generation);
        if !live {
            // The store watches keys for a session that is gone.
            match result {
                OpResult::Subscribe { key, exists: true } => self.pool.unwatch(vec![key]),
                OpResult::Versions(v) => {
                    self.pool
                        .unwatch_versions(v.into_iter().map(|(k, _)| k).collect());
                }
                OpResult::Watched(keys) => {
                    if !keys.is_empty() {
                        self.pool.unwatch(keys);
                    }
                    self.refilter();
                }
                _ => {}
            }
            return;
        }
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        s.busy = false;
        match result {
            OpResult::Subscribe { key, exists } => self.fifo_subscribed(sid, key, exists),
            OpResult::Replies {
                mut replies,
                sync,
                micros,
            } => {
                let names = std::mem::take(&mut s.batch_names);
                if s.is_resp() {
                    self.run_exec_locals(sid, &mut replies);
                }
                for ((index, r), us) in names.iter().zip(&replies).zip(&micros) {
                    if let Some(index) = *index {
                        let error = match r {
                            crate::protocol::reply::Reply::Error(e) => Some(e.as_str()),
                            _ => None,
                        };
                        self.cmdstats.ran_at(index, u64::from(*us), error);
                    }
                }
                let Some(s) = self.sessions.get_mut(sid) else {
                    return;
                };
                if let Some(upto) = sync.filter(|&u| u > self.durable) {
                    // --fsync always: answered once the log is on disk.
                    s.busy = true;
                    s.parked = Some((upto, replies));
                    self.syncing.push(sid);
                    return;
                }
                s.send_replies(&replies);
                self.after_replies(sid);
            }
            OpResult::Watched(_) => {
                s.unconfirmed.clear();
                s.release_deferred();
            }
            OpResult::Versions(v) => {
                if let Link::Stream { resp, .. } = &mut s.link {
                    resp.watching.extend(v);
                }
                crate::protocol::resp::push_ok(s.replies());
            }
        }
        self.dirty.push(sid);
        self.service(sid);
    }

    /// What follows a session's replies: a flush among its commands is
    /// told to tracking clients (itself after the reply, as Redis does).
    fn after_replies(&mut self, sid: SessionId) {
        let flushed = match self.sessions.get_mut(sid).map(|s| &mut s.link) {
            Some(Link::Stream { resp, .. }) => std::mem::take(&mut resp.flushing),
            _ => false,
        };
        if flushed && self.tracking.clients() > 0 {
            self.tracking_flushed(Some(sid));
        }
    }

    /// Writes what a session has queued; disconnects it if its reader is
    /// gone or it has fallen further behind than its output buffer allows.
    fn flush(&mut self, sid: SessionId) {
        if let Err(why) = self.try_flush(sid) {
            self.close(sid, why);
        }
    }

    fn try_flush(&mut self, sid: SessionId) -> Result<(), Close> {
        let Some(s) = self.sessions.get_mut(sid) else {
            return Ok(());
        };
        if s.busy && s.holding && s.pending_output() < HOLD_WHILE_BUSY {
            // What the read answered before its batch leaves with the
            // batch's replies, in one write, as Redis sends a read's replies
            // (MULTI's OK and QUEUEDs apart from EXEC's answer woke the
            // client twice: two sends per transaction).
            return Ok(());
        }
        let before = s.pending_output();
        if let Err(e) = s.flush() {
            return Err(write_failed(&e, s.is_resp()));
        }
        let pending = s.pending_output();
        if pending <= self.opts.output_buffer {
            s.over_since = None;
            if before > self.opts.output_buffer && !s.busy && !s.inbuf.is_empty() {
                // It was served no further while over the limit; what it
                // sent meanwhile is waiting, and no new bytes may come to
                // say so.
                self.resume.push(sid);
            }
        } else if s.subscription_count() > 0
            || matches!(&s.link, Link::Stream { resp, .. } if resp.monitor)
        {
            // Messages keep coming whether it reads or not: a subscriber
            // that falls this far behind is cut off (Redis's pubsub
            // client-output-buffer-limit).
            return Err(Close::Log(format!(
                "not reading: more than {} bytes of output waiting; disconnected",
                self.opts.output_buffer
            )));
        } else if pending < before || s.over_since.is_none() {
            // Its own replies, sent whole however large (it is served no
            // more until it has read them); cut off only if it stops
            // taking them (see the sweep).
            s.over_since = Some(Instant::now());
        }
        if let Link::Stream { resp, .. } = &s.link {
            if resp.quitting && s.pending_output() == 0 {
                self.close(sid, Close::Quiet);
            }
        }
        Ok(())
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &sid in &dirty {
            self.flush(sid);
        }
        dirty.clear();
        // Keep the allocation for the next round.
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Ends a session: a last try to send what it has queued (such as the
    /// answer to DISCONNECT), then its descriptors are closed and its
    /// subscriptions forgotten.
    fn close(&mut self, sid: SessionId, why: Close) {
        if !self.sessions.contains(sid) {
            return;
        }
        let mut s = self.sessions.remove(sid);
        let _ = s.flush();
        let registry = self.poll.registry();
        match &mut s.link {
            Link::Fifo(f) => {
                let _ = registry.deregister(&mut f.req);
                unwatch_out(registry, &mut f.resp);
                unwatch_out(registry, &mut f.notif);
                for id in &f.fifos {
                    self.fifos_in_use.remove(id);
                }
            }
            Link::Stream { out, .. } => {
                if let Some(conn) = out.pipe.as_mut() {
                    let _ = registry.deregister(conn);
                }
            }
        }
        if let Link::Stream { resp, .. } = &mut s.link {
            if resp.tracking.take().is_some() {
                self.forget_tracked(sid);
            }
            let watched = std::mem::take(&mut resp.watching);
            self.pool
                .unwatch_versions(watched.into_iter().map(|(k, _)| k).collect());
        }
        self.forget_subscriptions(sid, &mut s);
        match why {
            Close::Log(why) => client_warn(format_args!("client {}: {why}", s.name)),
            Close::Quiet => crate::log_debug!("client {} disconnected", s.name),
            Close::Idle => {
                crate::log_debug!("client {} was idle past --timeout; disconnected", s.name)
            }
            Close::Gone(fifo) => crate::log_info!(
                "client {}: its {fifo} was closed without DISCONNECT; session ended",
                s.name
            ),
        }
    }

    /// Closes every session; the caller logs once, not once per client.
    fn close_all(&mut self) {
        let sids: Vec<SessionId> = self.sessions.iter().map(|(sid, _)| sid).collect();
        for sid in sids {
            self.close(sid, Close::Quiet);
        }
        debug_assert!(self.subs.is_empty());
        self.subs.clear();
    }

    // ----- events from other threads ---------------------------------------

    /// The log is on disk up to `upto`: answers waiting for it leave.
    fn synced_to(&mut self, upto: u64) {
        self.durable = self.durable.max(upto);
        let waiting = std::mem::take(&mut self.syncing);
        for sid in waiting {
            let Some(s) = self.sessions.get_mut(sid) else {
                continue;
            };
            match s.parked.take() {
                Some((need, replies)) if need <= upto => {
                    s.busy = false;
                    s.send_replies(&replies);
                    self.after_replies(sid);
                    self.dirty.push(sid);
                    self.service(sid);
                }
                other => {
                    s.parked = other;
                    if s.parked.is_some() {
                        self.syncing.push(sid);
                    }
                }
            }
        }
    }

    /// Handles what other threads posted, at most [`INBOX_BATCH`] events a
    /// turn: job files writing subscribed keys faster than the reactor
    /// forwards them must not keep it from clients and signals. Returns
    /// whether events were left for the next turn.
    fn drain_inbox(&mut self) -> bool {
        self.mailbox.take_wake();
        let mut more = true;
        for _ in 0..INBOX_BATCH {
            match self.inbox.try_recv() {
                Ok(Event::Changes(changes)) => self.notify(&changes),
                Ok(Event::Done(done)) => {
                    for (sid, generation, result) in done {
                        self.finish(sid, generation, result);
                    }
                }
                Ok(Event::JobsDone) => self.jobs_done = true,
                Ok(Event::Durable(upto)) => self.synced_to(upto),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                    more = false;
                    break;
                }
            }
        }
        // BCAST invalidations go out once a turn, grouped by prefix; the
        // tracking table is kept within tracking-table-max-keys.
        self.flush_broadcasts();
        self.limit_tracking_table();
        more
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn a_reader_that_went_away_is_not_a_warning() {
        let gone = Error::from(ErrorKind::BrokenPipe);
        let reset = Error::from(ErrorKind::ConnectionReset);
        assert_eq!(write_failed(&gone, true), Close::Quiet);
        assert_eq!(write_failed(&reset, true), Close::Quiet);
        assert_eq!(
            write_failed(&gone, false),
            Close::Gone("response or notification FIFO")
        );
        // Anything else is the server's to report.
        let io = Error::from(ErrorKind::Other);
        assert!(matches!(write_failed(&io, true), Close::Log(_)));
        assert!(matches!(write_failed(&reset, false), Close::Log(_)));
    }
}
