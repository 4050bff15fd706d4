//! The reactor: one thread, one `mio::Poll`, owning the registration FIFO,
//! every session's FIFOs, the signal pipe and the waker. It never blocks:
//! every descriptor is non-blocking and drained until `WouldBlock`, store
//! work goes to the [`StorePool`], and a client that does not read is
//! disconnected once its output buffer is full instead of being waited on.
//!
//! Tokens: a session in slab slot `i` uses `3i` (request FIFO), `3i + 1`
//! (response FIFO) and `3i + 2` (notification FIFO); the fixed sources take
//! the highest tokens.

use super::fifo::{
    create_registration, identity, open_checked, probe, End, FifoError, FifoId, RegistrationFifo,
};
use super::mailbox::{Event, Mailbox, OpResult};
use super::protocol::{self, ConnectRequest, Decoded, Request, FAIL, OK};
use super::registration::Framer;
use super::session::{Outbox, ReadOutcome, Session, SessionFifos};
use super::store_ops::{StoreOp, StorePool};
use super::subscriptions::{SessionId, Subscriptions};
use crate::cli::ServerOptions;
use mio::unix::pipe::{Receiver, Sender};
use mio::{Events, Interest, Poll, Registry, Token};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::collections::HashSet;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver as Inbox, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const REGISTRATION: Token = Token(usize::MAX - 1);
pub const SIGNALS: Token = Token(usize::MAX - 2);
pub const WAKER: Token = Token(usize::MAX - 3);

/// How long a client may take to open its read ends after connecting.
pub const OPEN_GRACE: Duration = Duration::from_secs(5);
/// How often a write end that waits for its client is retried.
const OPEN_RETRY: Duration = Duration::from_millis(2);

const REQ: usize = 0;
const RESP: usize = 1;
const NOTIF: usize = 2;

fn token(sid: SessionId, kind: usize) -> Token {
    Token(sid * 3 + kind)
}

/// Opens the write end of a client FIFO, or `None` while the client does
/// not hold its read end yet (see [`super::fifo`]).
fn open_write_end(path: &[u8], id: FifoId) -> Result<Option<Sender>, FifoError> {
    match open_checked(path, id, End::Write) {
        Ok(fd) => Ok(Some(Sender::from(fd))),
        Err(FifoError::Sys(_, nix::errno::Errno::ENXIO)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Write ends stay registered for WRITABLE for the session's life (see
/// [`Outbox`]).
fn watch_out(registry: &Registry, sid: SessionId, kind: usize, out: &mut Outbox) -> io::Result<()> {
    match out.pipe.as_mut() {
        Some(pipe) => registry.register(pipe, token(sid, kind), Interest::WRITABLE),
        None => Ok(()),
    }
}

fn unwatch_out(registry: &Registry, out: &mut Outbox) {
    if let Some(pipe) = out.pipe.as_mut() {
        let _ = registry.deregister(pipe);
    }
}

/// Why a session ended, for the server's log.
enum Close {
    /// The client asked (DISCONNECT) or went away: nothing to log.
    Quiet,
    Log(String),
}

/// How often the registration path is checked (see `check_registration`).
const REGISTRATION_CHECK: Duration = Duration::from_secs(1);

/// The registration FIFO as a source of the poller.
struct Listener {
    reader: Receiver,
    fifo: RegistrationFifo,
}

impl Listener {
    fn new(poll: &Poll, fifo: RegistrationFifo) -> io::Result<Listener> {
        let mut reader = Receiver::from(fifo.reader.try_clone()?);
        poll.registry()
            .register(&mut reader, REGISTRATION, Interest::READABLE)?;
        Ok(Listener { reader, fifo })
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
    signals: Signals,
    sessions: Slab<Session>,
    subs: Subscriptions,
    /// FIFOs held by live sessions: no second session may name them.
    fifos_in_use: HashSet<FifoId>,
    inbox: Inbox<Event>,
    mailbox: Arc<Mailbox>,
    pool: StorePool,
    /// Subscriptions live or being taken; the change hook skips all work
    /// while it is zero.
    watched: Arc<AtomicUsize>,
    opts: ServerOptions,
    next_generation: u64,
    /// Sessions with bytes queued since the last flush.
    dirty: Vec<SessionId>,
    /// Sessions with a write end still waiting for its client.
    opening: Vec<SessionId>,
    shutting_down: bool,
    jobs_done: bool,
}

pub struct ReactorParts {
    pub poll: Poll,
    pub registration_path: PathBuf,
    pub inbox: Inbox<Event>,
    pub mailbox: Arc<Mailbox>,
    pub pool: StorePool,
    pub watched: Arc<AtomicUsize>,
    pub opts: ServerOptions,
}

impl Reactor {
    pub fn new(parts: ReactorParts) -> io::Result<Reactor> {
        let ReactorParts {
            poll,
            registration_path,
            inbox,
            mailbox,
            pool,
            watched,
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
            signals,
            sessions: Slab::new(),
            subs: Subscriptions::default(),
            fifos_in_use: HashSet::new(),
            inbox,
            mailbox,
            pool,
            watched,
            opts,
            next_generation: 0,
            dirty: Vec::new(),
            opening: Vec::new(),
            shutting_down: false,
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
        loop {
            let retry = (!self.opening.is_empty()).then(|| Instant::now() + OPEN_RETRY);
            let timeout = [
                self.framer.deadline(),
                retry,
                Some(self.next_registration_check),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(|d| d.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                match ev.token() {
                    REGISTRATION => self.read_registrations(),
                    SIGNALS => self.handle_signals(),
                    WAKER => {}
                    Token(t) => {
                        let gone = ev.is_error() || ev.is_write_closed();
                        self.session_ready(t / 3, t % 3, gone)
                    }
                }
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
            self.drain_inbox();
            self.flush_dirty();
            if self.shutting_down && self.jobs_done {
                break;
            }
        }
        self.close_all();
        self.pool.join();
        Ok(())
    }

    // ----- registration -------------------------------------------------

    fn read_registrations(&mut self) {
        let mut chunk = [0u8; 4096];
        loop {
            let Some(listener) = self.listener.as_mut() else {
                return;
            };
            let n = match listener.reader.read(&mut chunk) {
                Ok(0) => return, // cannot happen while we hold a write end
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("kvs: reading the registration FIFO failed: {e}");
                    return;
                }
            };
            for msg in self.framer.push(&chunk[..n], Instant::now()) {
                match msg {
                    Ok(c) => self.connect(c),
                    Err(e) => eprintln!("kvs: dropped a bad connect request: {e}"),
                }
            }
        }
    }

    /// Serves a connect request: checks and opens the client's FIFOs and
    /// answers on its response FIFO, or refuses.
    fn connect(&mut self, c: ConnectRequest) {
        let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        let name = show(&c.req);
        let refuse = |why: String| eprintln!("kvs: refused client {name}: {why}");

        // The response FIFO first: without it there is no one to answer.
        let resp_id = match self.check_fifo(&c.resp, "response") {
            Ok(id) => id,
            // Answering a FIFO in use would write into another client's stream.
            Err(why) => return refuse(why),
        };
        let resp = match open_write_end(&c.resp, resp_id) {
            Ok(pipe) => Outbox::new(pipe),
            Err(e) => return refuse(format!("response FIFO {}: {e}", show(&c.resp))),
        };
        let resp_path = c.resp.clone();
        let answer_refused = |mut resp: Outbox, why: String| {
            refuse(why);
            if resp.pipe.is_none() {
                // The client does not read yet: leave the answer in the
                // pipe for when it does (best effort).
                resp.pipe = open_checked(&resp_path, resp_id, End::Shared)
                    .ok()
                    .map(Sender::from);
            }
            protocol::push_response(resp.queue(), protocol::OP_CONNECT, FAIL);
            let _ = resp.flush();
        };
        if self.sessions.len() >= self.opts.max_sessions {
            let why = format!("session limit ({}) reached", self.opts.max_sessions);
            return answer_refused(resp, why);
        }
        let (req, notif, req_id, notif_id) = match self.open_rest(&c, resp_id) {
            Ok(x) => x,
            Err(why) => return answer_refused(resp, why),
        };
        let fifos = SessionFifos {
            req,
            resp,
            notif,
            ids: [req_id, resp_id, notif_id],
            out_paths: [c.resp, c.notif],
        };

        let generation = self.next_generation;
        self.next_generation += 1;
        let entry = self.sessions.vacant_entry();
        let sid = entry.key();
        let mut session = Session::new(generation, name.clone(), fifos);
        // No read yet: until the client opens its end, the request FIFO
        // reads as end-of-file. Its first event comes once the client has
        // opened it (epoll reports no hang-up before a writer appears).
        let registry = self.poll.registry();
        let registered = registry
            .register(&mut session.req, token(sid, REQ), Interest::READABLE)
            .and_then(|()| watch_out(registry, sid, RESP, &mut session.resp))
            .and_then(|()| watch_out(registry, sid, NOTIF, &mut session.notif));
        if let Err(e) = registered {
            let _ = registry.deregister(&mut session.req);
            unwatch_out(registry, &mut session.resp);
            unwatch_out(registry, &mut session.notif);
            return answer_refused(session.resp, format!("cannot watch its FIFOs: {e}"));
        }
        protocol::push_response(session.resp.queue(), protocol::OP_CONNECT, OK);
        if session.resp.pipe.is_none() || session.notif.pipe.is_none() {
            session.opening_since = Some(Instant::now());
            self.opening.push(sid);
        }
        self.fifos_in_use.extend(session.fifos);
        entry.insert(session);
        self.dirty.push(sid);
    }

    fn registration_id(&self) -> Option<FifoId> {
        self.listener.as_ref().map(|l| l.fifo.id)
    }

    /// Stops taking new clients; removes the registration FIFO if asked
    /// and if the path still names it (never a file someone put there).
    fn stop_listening(&mut self, unlink: bool) {
        let Some(mut listener) = self.listener.take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut listener.reader);
        let path = &self.registration_path;
        if unlink && identity(path) == Ok(Some(listener.fifo.id)) {
            if let Err(e) = std::fs::remove_file(path) {
                eprintln!("kvs: cannot remove {}: {e}", path.display());
            }
        }
    }

    /// The registration FIFO may be removed or replaced while the server
    /// runs. Removed: it is created again, so clients can still connect.
    /// Replaced by anything else: that is left alone, and the server stops
    /// taking new clients but serves the ones it has.
    fn check_registration(&mut self) {
        let Some(ours) = self.registration_id() else {
            return;
        };
        let path = self.registration_path.clone();
        match identity(&path) {
            Ok(Some(id)) if id == ours => {}
            Ok(None) => {
                self.stop_listening(false);
                let created = create_registration(&path, self.opts.fifo_mode)
                    .map_err(|e| e.to_string())
                    .and_then(|fifo| Listener::new(&self.poll, fifo).map_err(|e| e.to_string()));
                match created {
                    Ok(listener) => {
                        self.listener = Some(listener);
                        eprintln!("kvs: registration FIFO {} was removed; created it again", path.display());
                    }
                    Err(e) => eprintln!(
                        "kvs: registration FIFO {} was removed and cannot be created again ({e}); not taking new clients",
                        path.display()
                    ),
                }
            }
            Ok(Some(_)) => {
                self.stop_listening(false);
                eprintln!(
                    "kvs: registration FIFO {} was replaced by another file; left alone, not taking new clients",
                    path.display()
                );
            }
            Err(e) => eprintln!(
                "kvs: cannot check registration FIFO {}: {}",
                path.display(),
                e.desc()
            ),
        }
    }

    /// Checks that `path` is a FIFO that no session and not the
    /// registration FIFO uses; the error is the reason to log.
    fn check_fifo(&self, path: &[u8], what: &str) -> Result<FifoId, String> {
        let show = String::from_utf8_lossy(path);
        let id = probe(path).map_err(|e: FifoError| format!("{what} FIFO {show}: {e}"))?;
        if self.fifos_in_use.contains(&id) || Some(id) == self.registration_id() {
            return Err(format!("{what} FIFO {show} is already in use"));
        }
        Ok(id)
    }

    /// Opens the request and notification FIFOs of a connect request.
    fn open_rest(
        &self,
        c: &ConnectRequest,
        resp_id: FifoId,
    ) -> Result<(Receiver, Outbox, FifoId, FifoId), String> {
        let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        let req_id = self.check_fifo(&c.req, "request")?;
        let notif_id = self.check_fifo(&c.notif, "notification")?;
        if req_id == resp_id || req_id == notif_id || resp_id == notif_id {
            return Err("the three FIFOs must be different".into());
        }
        let req = open_checked(&c.req, req_id, End::Read)
            .map_err(|e| format!("request FIFO {}: {e}", show(&c.req)))?;
        let notif = open_write_end(&c.notif, notif_id)
            .map_err(|e| format!("notification FIFO {}: {e}", show(&c.notif)))?;
        Ok((Receiver::from(req), Outbox::new(notif), req_id, notif_id))
    }

    /// Retries opening the write ends that waited for their client; ends
    /// the sessions whose client has not opened them within [`OPEN_GRACE`].
    fn retry_opening(&mut self) {
        let now = Instant::now();
        let mut waiting = std::mem::take(&mut self.opening);
        // A slab slot reused after SIGUSR1 may be listed twice.
        waiting.sort_unstable();
        waiting.dedup();
        for sid in waiting {
            let outcome = match self.sessions.get_mut(sid) {
                Some(s) if s.opening_since.is_some() => self.try_open_late(sid, now),
                _ => continue,
            };
            match outcome {
                Ok(true) => {}
                Ok(false) => self.opening.push(sid),
                Err(why) => self.close(sid, Close::Log(why)),
            }
        }
    }

    /// One retry for session `sid`: `Ok(true)` once both ends are open.
    fn try_open_late(&mut self, sid: SessionId, now: Instant) -> Result<bool, String> {
        let Some(s) = self.sessions.get_mut(sid) else {
            return Ok(true);
        };
        let registry = self.poll.registry();
        for (i, (kind, out)) in [(RESP, &mut s.resp), (NOTIF, &mut s.notif)]
            .into_iter()
            .enumerate()
        {
            if out.pipe.is_some() {
                continue;
            }
            match open_checked(&s.out_paths[i], s.fifos[kind], End::Write) {
                Ok(fd) => {
                    out.pipe = Some(Sender::from(fd));
                    watch_out(registry, sid, kind, out)
                        .map_err(|e| format!("cannot watch its FIFO: {e}"))?;
                }
                Err(FifoError::Sys(_, nix::errno::Errno::ENXIO)) => {}
                Err(e) => return Err(format!("cannot open its FIFO: {e}")),
            }
        }
        if s.resp.pipe.is_some() && s.notif.pipe.is_some() {
            s.opening_since = None;
            self.dirty.push(sid);
            return Ok(true);
        }
        match s.opening_since {
            Some(since) if now.duration_since(since) > OPEN_GRACE => Err(format!(
                "did not open its response and notification FIFOs within {OPEN_GRACE:?}"
            )),
            _ => Ok(false),
        }
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
            REQ => self.service(sid),
            _ if gone => self.close(sid, Close::Quiet),
            _ => self.flush(sid),
        }
    }

    /// Reads and answers a session's requests for as long as it can make
    /// progress without waiting.
    fn service(&mut self, sid: SessionId) {
        loop {
            let Some(s) = self.sessions.get_mut(sid) else {
                return;
            };
            let mut progressed = s.read_requests() == ReadOutcome::Data;
            loop {
                let Some(s) = self.sessions.get_mut(sid) else {
                    return;
                };
                if s.busy {
                    break;
                }
                match Request::decode(&s.inbuf) {
                    Decoded::Incomplete => break,
                    Decoded::Request(r, len) => {
                        s.inbuf.drain(..len);
                        progressed = true;
                        self.handle(sid, r);
                    }
                    Decoded::Invalid { op, len, error } => {
                        s.inbuf.drain(..len);
                        protocol::push_response(s.resp.queue(), op, FAIL);
                        eprintln!("kvs: client {}: {error}", s.name);
                        self.dirty.push(sid);
                        progressed = true;
                    }
                    Decoded::Unknown(op) => {
                        protocol::push_response(s.resp.queue(), op, FAIL);
                        let why = format!("unknown op code {op}; closing the session");
                        return self.close(sid, Close::Log(why));
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        if let Some(s) = self.sessions.get(sid) {
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
                    self.watched.fetch_sub(1, Ordering::SeqCst);
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
                // Counted before the store looks, so that no change made
                // after the look is skipped by the hook.
                self.watched.fetch_add(1, Ordering::SeqCst);
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
            if matches!(result, OpResult::Subscribe { .. }) {
                self.watched.fetch_sub(1, Ordering::SeqCst);
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
                if exists && s.subscriptions.insert(key.clone()) {
                    self.subs.subscribe(&key, sid);
                } else {
                    self.watched.fetch_sub(1, Ordering::SeqCst);
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
        self.watched
            .fetch_sub(s.subscriptions.len(), Ordering::SeqCst);
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

    fn drain_inbox(&mut self) {
        self.mailbox.take_wake();
        loop {
            match self.inbox.try_recv() {
                Ok(Event::Changes(changes)) => self.notify(&changes),
                Ok(Event::Done {
                    sid,
                    generation,
                    result,
                }) => self.finish(sid, generation, result),
                Ok(Event::JobsDone) => self.jobs_done = true,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
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
