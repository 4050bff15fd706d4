//! Accepting a client: checking and opening the FIFOs its connect request
//! names (never a file, device, symlink or another session's FIFO),
//! answering, and giving a client that opens its read ends only after
//! connecting a grace period to do so.

use super::{token, Close, Reactor, NOTIF, REQ, RESP};
use crate::protocol::fifo::{self as protocol, ConnectRequest, OpForm, FAIL, OK};
use crate::reactor::fifo::{open_checked, probe, End, FifoError, FifoId};
use crate::reactor::pubsub::SessionId;
use crate::reactor::session::{FifoLink, Link, Outbox, Session};
use mio::unix::pipe::{Receiver, Sender};
use mio::{Interest, Registry};
use nix::errno::Errno;
use std::io;
use std::time::{Duration, Instant};

/// How long a client may take to open its read ends after connecting.
pub const OPEN_GRACE: Duration = Duration::from_secs(5);
/// How often a write end that waits for its client is retried.
pub(super) const OPEN_RETRY: Duration = Duration::from_millis(2);

/// Opens the write end of a client FIFO, or `None` while the client does
/// not hold its read end yet (see [`super::fifo`]).
fn open_write_end(path: &[u8], id: FifoId) -> Result<Option<Sender>, FifoError> {
    match open_checked(path, id, End::Write) {
        Ok(fd) => Ok(Some(Sender::from(fd))),
        Err(FifoError::Sys(_, nix::errno::Errno::ENXIO)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A descriptor held in reserve (see `refuse_without_descriptors`).
pub(super) fn spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Write ends stay registered for WRITABLE for the session's life (see
/// [`Outbox`]).
fn watch_out(
    registry: &Registry,
    sid: SessionId,
    kind: usize,
    out: &mut Outbox<Sender>,
) -> io::Result<()> {
    match out.pipe.as_mut() {
        Some(pipe) => registry.register(pipe, token(sid, kind), Interest::WRITABLE),
        None => Ok(()),
    }
}

/// Answers `'1'` on a client's response FIFO. If the server holds no write
/// end of it (the client does not read yet, or no descriptor was left), a
/// shared one is opened for this last word, which waits in the pipe for the
/// client (best effort).
fn send_refusal(mut resp: Outbox<Sender>, path: &[u8], id: FifoId, form: OpForm) {
    if resp.pipe.is_none() {
        resp.pipe = open_checked(path, id, End::Shared).ok().map(Sender::from);
    }
    protocol::push_response(resp.queue(), form.wire(protocol::OP_CONNECT), FAIL);
    let _ = resp.flush();
}

pub(super) fn unwatch_out(registry: &Registry, out: &mut Outbox<Sender>) {
    if let Some(pipe) = out.pipe.as_mut() {
        let _ = registry.deregister(pipe);
    }
}

impl Reactor {
    /// Serves a connect request: checks and opens the client's FIFOs and
    /// answers on its response FIFO, or refuses.
    pub(super) fn connect(&mut self, c: ConnectRequest) {
        let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        let name = show(&c.req);
        let refuse = |why: String| super::client_warn(format_args!("refused client {name}: {why}"));

        // The response FIFO first: without it there is no one to answer.
        let resp_id = match self.check_fifo(&c.resp, "response") {
            Ok(id) => id,
            // Answering a FIFO in use would write into another client's stream.
            Err(why) => return refuse(why),
        };
        let resp = match open_write_end(&c.resp, resp_id) {
            Ok(pipe) => Outbox::new(pipe),
            Err(FifoError::Sys(_, Errno::EMFILE | Errno::ENFILE)) => {
                refuse("no file descriptor left (raise the limit with ulimit -n)".into());
                return self.refuse_without_descriptors(&c.resp, resp_id, c.form);
            }
            Err(e) => return refuse(format!("response FIFO {}: {e}", show(&c.resp))),
        };
        let resp_path = c.resp.clone();
        let form = c.form;
        let answer_refused = |resp: Outbox<Sender>, why: String| {
            refuse(why);
            send_refusal(resp, &resp_path, resp_id, form);
        };
        if self.sessions.len() >= self.opts.max_sessions {
            let why = format!("session limit ({}) reached", self.opts.max_sessions);
            return answer_refused(resp, why);
        }
        let (req, notif, req_id, notif_id) = match self.open_rest(&c, resp_id) {
            Ok(x) => x,
            Err(why) => return answer_refused(resp, why),
        };
        let mut link = Box::new(FifoLink {
            req,
            resp,
            notif,
            fifos: [req_id, resp_id, notif_id],
            out_paths: [c.resp, c.notif],
            opening_since: None,
            form,
        });

        let generation = self.next_generation;
        let entry = self.sessions.vacant_entry();
        let sid = entry.key();
        // No read yet: until the client opens its end, the request FIFO
        // reads as end-of-file. Its first event comes once the client has
        // opened it (epoll reports no hang-up before a writer appears).
        let registry = self.poll.registry();
        let registered = registry
            .register(&mut link.req, token(sid, REQ), Interest::READABLE)
            .and_then(|()| watch_out(registry, sid, RESP, &mut link.resp))
            .and_then(|()| watch_out(registry, sid, NOTIF, &mut link.notif));
        if let Err(e) = registered {
            let _ = registry.deregister(&mut link.req);
            unwatch_out(registry, &mut link.resp);
            unwatch_out(registry, &mut link.notif);
            return answer_refused(link.resp, format!("cannot watch its FIFOs: {e}"));
        }
        self.next_generation += 1;
        self.stats.connections += 1;
        protocol::push_response(link.resp.queue(), form.wire(protocol::OP_CONNECT), OK);
        if link.resp.pipe.is_none() || link.notif.pipe.is_none() {
            link.opening_since = Some(Instant::now());
            self.opening.push(sid);
        }
        crate::log_debug!("client {name} connected (FIFO, op codes {:?})", form);
        self.fifos_in_use.extend(link.fifos);
        entry.insert(Session::new(generation, name.clone(), Link::Fifo(link)));
        self.dirty.push(sid);
    }

    /// Out of descriptors, a client would wait for an answer that never
    /// comes. The reactor keeps one spare descriptor for this moment: it is
    /// given up to open the response FIFO, answer `'1'`, and taken back.
    fn refuse_without_descriptors(&mut self, resp: &[u8], resp_id: FifoId, form: OpForm) {
        self.spare_fd = None;
        send_refusal(Outbox::new(None), resp, resp_id, form);
        self.spare_fd = spare_descriptor();
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
    ) -> Result<(Receiver, Outbox<Sender>, FifoId, FifoId), String> {
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
    pub(super) fn retry_opening(&mut self) {
        let now = Instant::now();
        let mut waiting = std::mem::take(&mut self.opening);
        // A slab slot reused after SIGUSR1 may be listed twice.
        waiting.sort_unstable();
        waiting.dedup();
        for sid in waiting {
            let outcome = match self.sessions.get(sid).map(|s| &s.link) {
                Some(Link::Fifo(f)) if f.opening_since.is_some() => self.try_open_late(sid, now),
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
        let Some(Link::Fifo(s)) = self.sessions.get_mut(sid).map(|s| &mut s.link) else {
            return Ok(true);
        };
        let registry = self.poll.registry();
        let FifoLink {
            resp,
            notif,
            out_paths,
            fifos,
            ..
        } = &mut **s;
        for (i, (kind, out)) in [(RESP, resp), (NOTIF, notif)].into_iter().enumerate() {
            if out.pipe.is_some() {
                continue;
            }
            match open_checked(&out_paths[i], fifos[kind], End::Write) {
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
}
