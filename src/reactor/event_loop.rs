//! The reactor: one thread, one `mio::Poll`, owning the registration FIFO,
//! every session's FIFOs, the signal pipe and the waker. It never blocks:
//! every descriptor is non-blocking and drained until `WouldBlock`, store
//! work goes to the [`StorePool`], and a client that does not read is
//! disconnected once its output buffer is full instead of being waited on.
//!
//! Tokens: a session in slab slot `i` uses `3i` (request FIFO), `3i + 1`
//! (response FIFO) and `3i + 2` (notification FIFO); the fixed sources take
//! the highest tokens.

use super::fifo::{FifoId, RegistrationFifo};
use super::mailbox::{Event, Mailbox, OpResult};
use super::protocol::{self, Decoded, Request, FAIL, OK};
use super::registration::Framer;
use super::session::{Session, MAX_INBUF};
use super::store_ops::{StoreOp, StorePool};
use super::subscriptions::{SessionId, Subscriptions};
use crate::cli::ServerOptions;
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
mod listener;

pub use accept::OPEN_GRACE;
use accept::{spare_descriptor, unwatch_out, OPEN_RETRY};
use listener::{Listener, REGISTRATION_CHECK};

pub const REGISTRATION: Token = Token(usize::MAX - 1);
pub const SIGNALS: Token = Token(usize::MAX - 2);
pub const WAKER: Token = Token(usize::MAX - 3);

/// Most 64 KiB reads of one session's requests in one turn of the loop.
const SERVICE_ROUNDS: usize = 4;

/// Most events taken from the inbox in one turn of the loop.
const INBOX_BATCH: usize = 4096;

const REQ: usize = 0;
const RESP: usize = 1;
const NOTIF: usize = 2;

fn token(sid: SessionId, kind: usize) -> Token {
    Token(sid * 3 + kind)
}

/// Why a session ended, for the server's log.
enum Close {
    /// The client asked (DISCONNECT) or went away: nothing to log.
    Quiet,
    Log(String),
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
    last_drop_log: Option<Instant>,
    dropped_unlogged: usize,
    signals: Signals,
    sessions: Slab<Session>,
    subs: Subscriptions,
    /// FIFOs held by live sessions: no second session may name them.
    fifos_in_use: HashSet<FifoId>,
    inbox: Inbox<Event>,
    mailbox: Arc<Mailbox>,
    pool: StorePool,
    opts: ServerOptions,
    next_generation: u64,
    /// Sessions with bytes queued since the last flush.
    dirty: Vec<SessionId>,
    /// Sessions whose requests were not all read last turn.
    resume: Vec<SessionId>,
    /// Sessions with a write end still waiting for its client.
    opening: Vec<SessionId>,
    shutting_down: bool,
    /// One descriptor kept free for refusing clients when none is left.
    spare_fd: Option<std::fs::File>,
    stop_jobs: Arc<AtomicBool>,
    jobs_done: bool,
}

pub struct ReactorParts {
    /// Set on SIGINT/SIGTERM: job files not yet started are not started.
    pub stop_jobs: Arc<AtomicBool>,
    pub poll: Poll,
    pub registration_path: PathBuf,
    pub inbox: Inbox<Event>,
    pub mailbox: Arc<Mailbox>,
    pub pool: StorePool,
    pub opts: ServerOptions,
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
        } = parts;
        let mut signals = Signals::new([SIGUSR1, SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        Ok(Reactor {
            poll,
            listener: None,
            registration_path,
            next_registration_check: Instant::now() + REGISTRATION_CHECK,
            framer: Framer::default(),
            last_drop_log: None,
            dropped_unlogged: 0,
            signals,
            sessions: Slab::new(),
            subs: Subscriptions::default(),
            fifos_in_use: HashSet::new(),
            inbox,
            mailbox,
            pool,
            opts,
            next_generation: 0,
            dirty: Vec::new(),
            resume: Vec::new(),
            opening: Vec::new(),
            shutting_down: false,
            spare_fd: spare_descriptor(),
            stop_jobs,
            jobs_done: false,
        })
    }

    /// Starts taking clients through `fifo`, the registration FIFO.
    pub fn listen(&mut self, fifo: RegistrationFifo) -> io::Result<()> {
        self.listener = Some(Listener::new(&self.poll, fifo)?);
        Ok(())
    }

    /// Serves until SIGINT or SIGTERM and the served job files are done.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut inbox_left = false;
        let mut registration_left = false;
        loop {
            let left = inbox_left || registration_left || !self.resume.is_empty();
            match self.poll.poll(&mut events, self.timeout(left)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                match ev.token() {
                    REGISTRATION => registration_left = true,
                    SIGNALS => self.handle_signals(),
                    WAKER => {}
                    Token(t) => {
                        let gone = ev.is_error() || ev.is_write_closed();
                        self.session_ready(t / 3, t % 3, gone)
                    }
                }
            }
            if registration_left {
                registration_left = self.read_registrations();
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
            if Instant::now() >= self.next_registration_check {
                self.check_registration();
                self.next_registration_check = Instant::now() + REGISTRATION_CHECK;
            }
            if self.framer.expire(Instant::now()) {
                eprintln!("kvs: dropped an incomplete connect request");
            }
            inbox_left = self.drain_inbox();
            self.flush_dirty();
            if self.shutting_down && self.jobs_done {
                break;
            }
        }
        self.close_all();
        self.pool.join();
        Ok(())
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
                    eprintln!("kvs: SIGUSR1: disconnected {n} clients, cleared all subscriptions");
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
        if !self.jobs_done {
            eprintln!("kvs: shutting down once the running job files finish");
        }
    }

    // ----- sessions -------------------------------------------------------

    /// `gone`: a write end reports that the client closed its read end.
    fn session_ready(&mut self, sid: SessionId, kind: usize, gone: bool) {
        if !self.sessions.contains(sid) {
            return;
        }
        match kind {
            REQ => {
                if let Some(s) = self.sessions.get_mut(sid) {
                    s.unread = true;
                }
                self.service(sid)
            }
            _ if gone => self.close(sid, Close::Quiet),
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
            s.read_requests();
            loop {
                let Some(s) = self.sessions.get_mut(sid) else {
                    return;
                };
                // Waiting on the pool, or answers piling up unread: stop
                // here; the flush at the end of the turn sends them or cuts
                // the client off.
                if s.busy || s.pending_output() > self.opts.output_buffer {
                    break;
                }
                match Request::decode(&s.inbuf) {
                    Decoded::Incomplete => break,
                    Decoded::Request(r, len) => {
                        s.inbuf.drain(..len);
                        self.handle(sid, r);
                    }
                    Decoded::Invalid { op, len, error } => {
                        s.inbuf.drain(..len);
                        protocol::push_response(s.resp.queue(), op, FAIL);
                        // One line per session: a client sending nothing
                        // but bad messages must not flood the log.
                        if !s.invalid_logged {
                            s.invalid_logged = true;
                            eprintln!(
                                "kvs: client {}: {error} (further bad messages not logged)",
                                s.name
                            );
                        }
                        self.dirty.push(sid);
                    }
                    Decoded::Unknown(op) => {
                        protocol::push_response(s.resp.queue(), op, FAIL);
                        let why = format!("unknown op code {op}; closing the session");
                        return self.close(sid, Close::Log(why));
                    }
                }
            }
            // Read on only if a full buffer stopped the last read and
            // parsing has made room since.
            match self.sessions.get(sid) {
                Some(s) if s.unread && s.inbuf.len() < MAX_INBUF => continue,
                _ => break,
            }
        }
        if let Some(s) = self.sessions.get(sid) {
            if s.unread && s.inbuf.len() < MAX_INBUF && !s.busy {
                // A client that keeps writing gets its turn again after
                // everyone else's, not all of this one.
                self.resume.push(sid);
            }
            if s.peer_closed && !s.busy {
                self.close(sid, Close::Quiet);
            }
        }
    }

    fn handle(&mut self, sid: SessionId, request: Request) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let op = request.op();
        let store_op = match request {
            Request::Disconnect => {
                protocol::push_response(s.resp.queue(), op, OK);
                return self.close(sid, Close::Quiet);
            }
            Request::Unsubscribe(key) => {
                let was = s.subscriptions.remove(&key);
                if was {
                    self.subs.unsubscribe(&key, sid);
                    self.pool.unwatch(vec![key]);
                }
                protocol::push_response(s.resp.queue(), op, if was { OK } else { FAIL });
                self.dirty.push(sid);
                return;
            }
            Request::Subscribe(key) => {
                if s.subscriptions.len() >= self.opts.max_subscriptions
                    && !s.subscriptions.contains(&key)
                {
                    eprintln!(
                        "kvs: client {}: subscription limit ({}) reached, not subscribed to {key}",
                        s.name, self.opts.max_subscriptions
                    );
                    protocol::push_response(s.resp.queue(), op, b'0');
                    self.dirty.push(sid);
                    return;
                }
                StoreOp::Subscribe(key)
            }
            Request::Read(key) => match self.pool.store().try_get(&key) {
                // A read whose shard is free is answered here and now: two
                // thread hand-offs fewer, and still no waiting on a lock.
                Ok(value) => {
                    protocol::push_read_answer(s.resp.queue(), value.as_deref());
                    self.dirty.push(sid);
                    return;
                }
                Err(_) => StoreOp::Read(key),
            },
            Request::Write(key, value) => StoreOp::Write(key, value),
            Request::Delete(key) => StoreOp::Delete(key),
        };
        s.busy = true;
        self.pool.submit(sid, s.generation, store_op);
    }

    fn finish(&mut self, sid: SessionId, generation: u64, result: OpResult) {
        let live = self
            .sessions
            .get(sid)
            .is_some_and(|s| s.generation == generation);
        if !live {
            // The store watches the key for a session that is gone.
            if let OpResult::Subscribe { key, exists: true } = result {
                self.pool.unwatch(vec![key]);
            }
            return;
        }
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        s.busy = false;
        let out = s.resp.queue();
        match result {
            OpResult::Subscribe { key, exists } => {
                // SUBSCRIBE answers '1' when subscribed (SPEC section 3).
                protocol::push_response(
                    out,
                    protocol::OP_SUBSCRIBE,
                    if exists { b'1' } else { b'0' },
                );
                if exists {
                    if s.subscriptions.insert(key.clone()) {
                        self.subs.subscribe(&key, sid);
                    } else {
                        // Subscribed already: the store counted a second watch.
                        self.pool.unwatch(vec![key]);
                    }
                }
            }
            OpResult::Read(value) => protocol::push_read_answer(out, value.as_deref()),
            OpResult::Write => protocol::push_response(out, protocol::OP_WRITE, OK),
            OpResult::Delete(existed) => {
                protocol::push_response(out, protocol::OP_DELETE, if existed { OK } else { FAIL })
            }
        }
        self.dirty.push(sid);
        self.service(sid);
    }

    /// Writes what a session has queued; disconnects it if its reader is
    /// gone or it has fallen further behind than its output buffer allows.
    fn flush(&mut self, sid: SessionId) {
        if let Err(why) = self.try_flush(sid) {
            self.close(sid, Close::Log(why));
        }
    }

    fn try_flush(&mut self, sid: SessionId) -> Result<(), String> {
        let Some(s) = self.sessions.get_mut(sid) else {
            return Ok(());
        };
        for out in [&mut s.resp, &mut s.notif] {
            out.flush()
                .map_err(|e| format!("writing to the client failed: {e}"))?;
        }
        if s.pending_output() > self.opts.output_buffer {
            return Err(format!(
                "not reading: more than {} bytes of output waiting; disconnected",
                self.opts.output_buffer
            ));
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
    /// answer to DISCONNECT), then its FIFOs are closed and its
    /// subscriptions forgotten.
    fn close(&mut self, sid: SessionId, why: Close) {
        if !self.sessions.contains(sid) {
            return;
        }
        let mut s = self.sessions.remove(sid);
        let _ = s.resp.flush();
        let _ = s.notif.flush();
        let registry = self.poll.registry();
        let _ = registry.deregister(&mut s.req);
        unwatch_out(registry, &mut s.resp);
        unwatch_out(registry, &mut s.notif);
        for key in &s.subscriptions {
            self.subs.unsubscribe(key, sid);
        }
        if !s.subscriptions.is_empty() {
            self.pool.unwatch(s.subscriptions.drain().collect());
        }
        for id in &s.fifos {
            self.fifos_in_use.remove(id);
        }
        if let Close::Log(why) = why {
            eprintln!("kvs: client {}: {why}", s.name);
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

    /// Handles what other threads posted, at most [`INBOX_BATCH`] events a
    /// turn: job files writing subscribed keys faster than the reactor
    /// forwards them must not keep it from clients and signals. Returns
    /// whether events were left for the next turn.
    fn drain_inbox(&mut self) -> bool {
        self.mailbox.take_wake();
        for _ in 0..INBOX_BATCH {
            match self.inbox.try_recv() {
                Ok(Event::Changes(changes)) => self.notify(&changes),
                Ok(Event::Done {
                    sid,
                    generation,
                    result,
                }) => self.finish(sid, generation, result),
                Ok(Event::JobsDone) => self.jobs_done = true,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    fn notify(&mut self, changes: &[(String, Option<String>)]) {
        for (key, value) in changes {
            for &sid in self.subs.subscribers(key) {
                if let Some(s) = self.sessions.get_mut(sid) {
                    protocol::push_notification(s.notif.queue(), key, value.as_deref());
                    self.dirty.push(sid);
                }
            }
        }
    }
}
