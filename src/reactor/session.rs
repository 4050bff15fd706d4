//! One connected client, whatever its transport: the bytes waiting to be
//! parsed and to be written, its subscriptions, and the link it speaks
//! over (a FIFO triple, or a Unix or TCP stream speaking RESP).

use super::command::Reply;
use super::fifo::FifoId;
use crate::protocol::fifo::OpForm;
use mio::net::{TcpStream, UnixStream};
use mio::unix::pipe::{Receiver, Sender};
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Instant;

/// Most unparsed FIFO request bytes kept per session; reading pauses above
/// it (a FIFO request is at most 83 bytes).
pub const MAX_INBUF: usize = 64 * 1024;

/// Most unparsed bytes of a RESP session: a request that grows past it
/// without ending closes the session, unless the bytes are a large bulk
/// string being read ([`BULK_QUERY_LIMIT`]).
pub const QUERY_LIMIT: usize = 1024 * 1024;

/// Most unparsed bytes of a RESP session reading a declared bulk string
/// (a large value): Redis's `client-query-buffer-limit`, 1 GiB.
pub const BULK_QUERY_LIMIT: usize = 1 << 30;

/// Bytes read from a session per read call: the size of the reactor's
/// read buffer.
pub const READ_CHUNK: usize = 16 * 1024;

/// Bytes read per call while a large request comes in (more than
/// [`READ_CHUNK`] of it is waiting): about what a socket holds.
const BIG_READ: usize = 256 * 1024;

/// Bytes waiting to go out on one writable descriptor. Everything queued
/// between two flushes leaves in one `write` call.
///
/// The descriptor stays registered for WRITABLE events for the session's
/// whole life: edge-triggered, that costs an event only when a full pipe
/// or socket drains or when the peer goes away, which is how a client that
/// dies is noticed even while it has nothing to receive.
pub struct Outbox<W> {
    /// `None` until a FIFO client has opened its read end (see
    /// [`super::fifo`]); bytes queue meanwhile.
    pub pipe: Option<W>,
    buf: Vec<u8>,
    sent: usize,
}

impl<W: Write> Outbox<W> {
    pub fn new(pipe: Option<W>) -> Self {
        Outbox {
            pipe,
            buf: Vec::new(),
            sent: 0,
        }
    }

    pub fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Where to append bytes to send.
    pub fn queue(&mut self) -> &mut Vec<u8> {
        // Sent bytes are dropped from the front only here, where new ones
        // come, and only once they are most of the buffer.
        if self.sent > 0 && self.sent >= self.buf.len() / 2 {
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
        &mut self.buf
    }

    /// Sends `bytes` after whatever is queued: written at once if nothing
    /// is, and queued for [`Outbox::flush`] if something is or for the part
    /// the descriptor did not take (an error shows at that flush). True if
    /// all of it was written.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        if self.pending() == 0 {
            if let Some(pipe) = self.pipe.as_mut() {
                if let Ok(n) = pipe.write(bytes) {
                    if n == bytes.len() {
                        return true;
                    }
                    self.buf.extend_from_slice(&bytes[n..]);
                    return false;
                }
            }
        }
        self.buf.extend_from_slice(bytes);
        false
    }

    /// Bytes the buffer holds room for.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Gives the buffer's room back if nothing waits in it.
    pub fn release(&mut self) {
        if self.pending() == 0 {
            self.sent = 0;
            self.buf = Vec::new();
        }
    }

    /// Writes until everything is out or the descriptor is full. `Err`
    /// means the reader is gone (EPIPE) or the descriptor failed.
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(());
        };
        while self.sent < self.buf.len() {
            match pipe.write(&self.buf[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        // What is left stays where it is until it is out: moving it to the
        // front at each flush copied a large reply over and over (a sixth
        // of the reactor's time under pipelined 100 KiB GETs).
        if self.sent == self.buf.len() {
            self.sent = 0;
            self.buf.clear();
        }
        Ok(())
    }
}

/// One read from where a session's requests come in.
fn read_link(link: &mut Link, buf: &mut [u8]) -> io::Result<usize> {
    match link {
        Link::Fifo(f) => f.req.read(buf),
        Link::Stream { out, .. } => match out.pipe.as_mut() {
            Some(conn) => conn.read(buf),
            None => Ok(0),
        },
    }
}

/// The descriptor a session reads its requests from: CLIENT LIST's `fd`
/// (Redis prints -1 only for clients of its own, such as a script's, and
/// tools that count real clients skip those).
pub fn request_fd(link: &Link) -> Option<RawFd> {
    match link {
        Link::Fifo(f) => Some(f.req.as_raw_fd()),
        Link::Stream { .. } => link_fd(link).map(|fd| fd.as_raw_fd()),
    }
}

/// The descriptor a RESP session reads from.
fn link_fd(link: &Link) -> Option<BorrowedFd<'_>> {
    match link {
        Link::Stream { out, .. } => match out.pipe.as_ref()? {
            Conn::Unix(s) => Some(s.as_fd()),
            Conn::Tcp(s) => Some(s.as_fd()),
        },
        Link::Fifo(_) => None,
    }
}

/// A stream connection: both directions on one descriptor.
pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Conn {
    /// The stream itself, for the registry.
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Conn::Unix(s) => s,
            Conn::Tcp(s) => s,
        }
    }
}

impl mio::event::Source for Conn {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.source().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.source().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.source().deregister(registry)
    }
}

/// A FIFO client's three pipes (SPEC section 3).
pub struct FifoLink {
    pub req: Receiver,
    pub resp: Outbox<Sender>,
    pub notif: Outbox<Sender>,
    /// Request, response, notification.
    pub fifos: [FifoId; 3],
    /// Paths of the response and notification FIFOs, for opening them late.
    pub out_paths: [Vec<u8>; 2],
    /// Since when a write end waits for the client to open its read end.
    pub opening_since: Option<Instant>,
    /// How the client writes op codes; answers carry them the same way.
    pub form: OpForm,
}

/// What a RESP client has told the server about itself.
#[derive(Debug, Default)]
pub struct RespState {
    pub authenticated: bool,
    /// CLIENT SETNAME.
    pub name: Option<String>,
    /// QUIT was answered: close once it is written.
    pub quitting: bool,
    /// Between MULTI and EXEC / DISCARD: what is queued.
    pub multi: Option<Box<Multi>>,
    /// 3 after `HELLO 3` (RESP3 replies and push frames); 2 otherwise.
    pub proto: u8,
    /// CLIENT REPLY: what is sent of the replies to its commands.
    pub reply_mode: ReplyMode,
    /// MONITOR: it hears every command.
    pub monitor: bool,
    /// CLIENT TRACKING ON: how its cache is kept true.
    pub tracking: Option<Tracking>,
    /// WATCHed keys and their change counts when watched.
    pub watching: Vec<(Vec<u8>, u64)>,
    /// The queued commands of the EXEC in flight that the reactor runs
    /// itself once its store part is back ([`Multi::locals`]).
    pub exec_locals: Vec<(usize, Vec<Vec<u8>>)>,
    /// The batch in flight flushes the store: tracking clients are told
    /// once its replies are sent.
    pub flushing: bool,
}

/// A client's CLIENT TRACKING settings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tracking {
    /// The client (CLIENT ID) its invalidations go to, if not itself.
    pub redirect: Option<u64>,
    /// BCAST: every change of a key with one of `prefixes` (all keys if
    /// none), whether it read the key or not.
    pub bcast: bool,
    pub prefixes: Vec<Vec<u8>>,
    /// OPTIN: only keys read right after CLIENT CACHING yes; OPTOUT: all
    /// but those read right after CLIENT CACHING no.
    pub optin: bool,
    pub optout: bool,
    /// NOLOOP: not told of its own changes.
    pub noloop: bool,
    /// CLIENT CACHING's answer, for the next command only.
    pub caching: Option<bool>,
    /// That answer while the command after it runs.
    pub caching_now: Option<bool>,
    /// The REDIRECT target went away: nothing reaches it (TRACKINGINFO's
    /// `broken_redirect`).
    pub broken: bool,
}

/// CLIENT REPLY's modes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    #[default]
    On,
    Off,
    /// The next command's reply is not sent.
    SkipNext,
}

/// A transaction being queued (MULTI).
#[derive(Debug, Default)]
pub struct Multi {
    /// Commands to run at EXEC, or the replies of those answered when
    /// queued.
    pub queued: Vec<Result<super::command::Command, Reply>>,
    /// A command was refused while queuing: EXEC answers EXECABORT.
    pub aborted: bool,
    /// Commands the reactor runs itself, by their place in `queued`
    /// (which holds a placeholder there): run when EXEC's store part
    /// comes back, their replies put in their places.
    pub locals: Vec<(usize, Vec<Vec<u8>>)>,
}

pub enum Link {
    Fifo(Box<FifoLink>),
    Stream { out: Outbox<Conn>, resp: RespState },
}

pub struct Session {
    /// Distinguishes this session from an earlier one in the same slab slot,
    /// so a late store result is never delivered to the wrong client.
    pub generation: u64,
    /// For messages: the request FIFO's path, or the peer's address.
    pub name: String,
    pub link: Link,
    pub inbuf: super::inbuf::InBuf,
    /// Channels subscribed to (a FIFO client's key `k` is the channel
    /// `__keyspace@0__:k`).
    pub channels: HashSet<Vec<u8>>,
    /// PSUBSCRIBE patterns.
    pub patterns: HashSet<Vec<u8>>,
    /// Keys of keyspace channels whose store watch is still on its way:
    /// if the session closes first, the pool's answer unwatches them.
    pub unconfirmed: Vec<Vec<u8>>,
    /// A request is at the store pool; the next waits for its answer, so
    /// answers leave in request order.
    pub busy: bool,
    /// The replies waiting are the same read's as the batch on the pool
    /// (they were all written after its output last emptied): they wait
    /// for its answer and leave with it, in one write.
    pub holding: bool,
    /// Reply bytes that wait for the pool's acknowledgement (a subscription
    /// is answered once the store reports changes for it).
    pub deferred: Vec<u8>,
    /// Messages that arrived while `deferred` waited: they go after it.
    held: Vec<u8>,
    /// Messages that must follow the replies in flight (the invalidation
    /// of a tracking client's own change, as Redis sends it after the
    /// command's reply): sent with them.
    pub after_reply: Vec<u8>,
    /// Store replies waiting for the log to be synced up to a sequence
    /// number (`--fsync always`).
    pub parked: Option<(u64, Vec<Reply>)>,
    /// The op code of the FIFO request at the pool, for its answer.
    pub fifo_op: u8,
    /// The client closed its end (end-of-file).
    pub peer_closed: bool,
    /// The input may hold bytes not read yet: set by a readable event,
    /// cleared once a read comes back short (a pipe or socket read returns
    /// all there is, so a short read leaves it empty, and the next write
    /// to an empty one raises a new event).
    pub unread: bool,
    /// A bad message from this client has been logged already.
    pub invalid_logged: bool,
    /// The reactor's turn in which a notification was last written to
    /// this FIFO client at once (see [`Session::send_notice`]).
    pub notified_turn: u64,
    pub connected_at: Instant,
    /// The address it connected to (CLIENT LIST's `laddr`).
    pub laddr: String,
    /// The command being served or last served, as CLIENT LIST names it
    /// (`get`, `client|list`), and the bytes of its request and of those
    /// after it when it was read (`qbuf`).
    pub last_cmd: String,
    pub qbuf: usize,
    /// Replies of the batch at the pool that CLIENT REPLY silenced, by
    /// their place in it.
    pub silenced: Vec<usize>,
    /// For INFO commandstats: each command of the batch at the pool, by its
    /// place in the command table, counted when its reply comes (`None`:
    /// counted already).
    pub batch_names: Vec<Option<usize>>,
    /// When the client last sent a whole request (or connected): `--timeout`
    /// counts from here, so a request half sent does not keep it alive.
    pub last_active: Instant,
    /// Since when its output has been over `--output-buffer` without the
    /// client taking any of it.
    pub over_since: Option<Instant>,
}

impl Session {
    pub fn new(generation: u64, name: String, link: Link) -> Self {
        Session {
            generation,
            name,
            link,
            inbuf: Default::default(),
            channels: HashSet::new(),
            patterns: HashSet::new(),
            unconfirmed: Vec::new(),
            busy: false,
            holding: false,
            deferred: Vec::new(),
            held: Vec::new(),
            after_reply: Vec::new(),
            parked: None,
            fifo_op: 0,
            peer_closed: false,
            unread: false,
            invalid_logged: false,
            notified_turn: 0,
            connected_at: Instant::now(),
            laddr: String::new(),
            last_cmd: String::new(),
            qbuf: 0,
            silenced: Vec::new(),
            batch_names: Vec::new(),
            last_active: Instant::now(),
            over_since: None,
        }
    }

    pub fn is_resp(&self) -> bool {
        matches!(self.link, Link::Stream { .. })
    }

    /// Where answers to requests go.
    pub fn replies(&mut self) -> &mut Vec<u8> {
        match &mut self.link {
            Link::Fifo(f) => f.resp.queue(),
            Link::Stream { out, .. } => out.queue(),
        }
    }

    /// Where notifications go (a stream has one channel for both). While a
    /// subscription's answer waits, messages wait behind it, so that no
    /// message ever comes before the answer that confirms its channel.
    pub fn notices(&mut self) -> &mut Vec<u8> {
        if !self.deferred.is_empty() {
            return &mut self.held;
        }
        match &mut self.link {
            Link::Fifo(f) => f.notif.queue(),
            Link::Stream { out, .. } => out.queue(),
        }
    }

    /// Bytes its buffers hold room for (CLIENT LIST's tot-mem).
    pub fn buffer_bytes(&self) -> usize {
        let out = match &self.link {
            Link::Fifo(f) => f.resp.capacity() + f.notif.capacity(),
            Link::Stream { out, .. } => out.capacity(),
        };
        out + self.inbuf.capacity()
    }

    /// Gives back the room of its buffers that hold nothing (a burst of
    /// large values or replies leaves them large): a session idle for a
    /// while, as Redis shrinks an idle client's buffers.
    pub fn release_buffers(&mut self) {
        match &mut self.link {
            Link::Fifo(f) => {
                f.resp.release();
                f.notif.release();
            }
            Link::Stream { out, .. } => out.release(),
        }
        self.inbuf.release();
    }

    /// Most unparsed bytes this session may hold.
    pub fn input_limit(&self) -> usize {
        if self.is_resp() {
            match self.inbuf.cut() {
                Some(cut) => cut.end.clamp(QUERY_LIMIT, BULK_QUERY_LIMIT),
                None => QUERY_LIMIT,
            }
        } else {
            MAX_INBUF
        }
    }

    /// Whether the session holds all the unparsed input it may: its limit
    /// (see [`Session::input_limit`]), or, with the bulk strings read
    /// apart, the most any request may take ([`BULK_QUERY_LIMIT`]).
    pub fn input_full(&self) -> bool {
        self.inbuf.len() >= self.input_limit() || self.inbuf.held() >= BULK_QUERY_LIMIT
    }

    /// Reads until the input is empty, at end-of-file, or `budget` bytes
    /// were read or the input limit is reached (then [`Session::unread`]
    /// stays set). `chunk` is the reactor's read buffer, reused so that no
    /// read zeroes a fresh one.
    pub fn read_requests(&mut self, budget: usize, chunk: &mut [u8]) {
        let mut limit = self.input_limit();
        let mut read = 0;
        while self.unread && read < budget {
            let reading_apart = self.inbuf.reading_apart();
            if reading_apart && self.inbuf.held() >= BULK_QUERY_LIMIT {
                break;
            }
            let apart = reading_apart.then(|| link_fd(&self.link)).flatten();
            let (want, got) = if let Some(fd) = apart {
                // A large bulk string read apart (see `InBuf`), and what
                // follows it.
                let (got, want) = match self.inbuf.read_apart(fd, BIG_READ, chunk.len()) {
                    Ok((n, want)) => (Ok(n), want),
                    Err(e) => (Err(e), 0),
                };
                if matches!(got, Ok(n) if n > 0) && self.inbuf.set_apart() {
                    limit = self.input_limit();
                }
                (want, got)
            } else if self.inbuf.len() < limit {
                // A large request coming in (a big value): read it straight
                // into the buffer, in large reads, instead of 16 KiB at a
                // time through the reactor's chunk and a copy.
                let large = self.inbuf.len() >= chunk.len() && self.is_resp();
                let want = if large {
                    BIG_READ.min(limit - self.inbuf.len())
                } else {
                    chunk.len().min(limit - self.inbuf.len())
                };
                let got = if large {
                    let link = &mut self.link;
                    self.inbuf.read_with(want, |room| read_link(link, room))
                } else {
                    let got = read_link(&mut self.link, &mut chunk[..want]);
                    if let Ok(n) = got {
                        self.inbuf.extend_from_slice(&chunk[..n]);
                    }
                    got
                };
                // Looked for once a read's worth waits: a large bulk
                // string has come in part, or small requests pile up.
                let enough = self.inbuf.len() >= chunk.len();
                if matches!(got, Ok(n) if n > 0)
                    && enough
                    && self.is_resp()
                    && self.inbuf.set_apart()
                {
                    limit = self.input_limit();
                }
                (want, got)
            } else {
                break;
            };
            match got {
                Ok(0) => {
                    self.peer_closed = true;
                    self.unread = false;
                }
                Ok(n) => {
                    read += n;
                    if n < want {
                        self.unread = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.unread = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.peer_closed = true;
                    self.unread = false;
                }
            }
        }
    }

    /// Writes what is queued. `Err` means the peer is gone.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.link {
            Link::Fifo(f) => {
                f.resp.flush()?;
                f.notif.flush()
            }
            Link::Stream { out, .. } => out.flush(),
        }
    }

    /// Sends a FIFO client a notification: written at once when nothing
    /// waits before it (its FIFO carries nothing else, and nothing is held
    /// behind a pending SUBSCRIBE answer), queued otherwise or for whatever
    /// part the pipe did not take. True if nothing of it is left queued.
    pub fn send_notice(&mut self, notice: &[u8]) -> bool {
        match &mut self.link {
            Link::Fifo(f) if self.deferred.is_empty() => f.notif.send(notice),
            _ => {
                self.notices().extend_from_slice(notice);
                false
            }
        }
    }

    /// The RESP protocol of the session's replies: 2, or 3 after `HELLO 3`
    /// (2 for a FIFO session, which never sees RESP).
    pub fn proto(&self) -> u8 {
        match &self.link {
            Link::Stream { resp, .. } => resp.proto.max(2),
            Link::Fifo(_) => 2,
        }
    }

    /// How a FIFO client writes op codes (binary for a RESP session).
    pub fn form(&self) -> OpForm {
        match &self.link {
            Link::Fifo(f) => f.form,
            Link::Stream { .. } => OpForm::Binary,
        }
    }

    /// Queues the answers of a batch, in this session's protocol.
    pub fn send_replies(&mut self, replies: &[Reply]) {
        let (op, form, resp, proto) = (self.fifo_op, self.form(), self.is_resp(), self.proto());
        let silenced = std::mem::take(&mut self.silenced);
        let out = self.replies();
        for (i, r) in replies.iter().enumerate() {
            if silenced.contains(&i) {
                continue;
            }
            if resp {
                crate::protocol::resp::encode_reply(out, r, proto);
            } else {
                crate::protocol::fifo::encode_reply(out, r, op, form);
            }
        }
        if !self.after_reply.is_empty() {
            let after = std::mem::take(&mut self.after_reply);
            self.notices().extend_from_slice(&after);
        }
    }

    /// Sends the deferred answer, then the messages held behind it.
    pub fn release_deferred(&mut self) {
        let deferred = std::mem::take(&mut self.deferred);
        let held = std::mem::take(&mut self.held);
        let out = self.replies();
        out.extend_from_slice(&deferred);
        out.extend_from_slice(&held);
        let after = std::mem::take(&mut self.after_reply);
        self.replies().extend_from_slice(&after);
    }

    /// Bytes queued for this client.
    pub fn pending_output(&self) -> usize {
        let queued = match &self.link {
            Link::Fifo(f) => f.resp.pending() + f.notif.pending(),
            Link::Stream { out, .. } => out.pending(),
        };
        queued + self.held.len()
    }

    /// Subscriptions of every kind, for the replies' counts.
    pub fn subscription_count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `room` bytes until given more.
    struct Slow {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_outbox_sends_everything_once_in_order_however_it_is_taken() {
        let mut out = Outbox::new(Some(Slow {
            got: Vec::new(),
            room: 0,
        }));
        let mut want = Vec::new();
        for round in 0..200usize {
            let bytes: Vec<u8> = (0..round * 13 % 40).map(|i| (i ^ round) as u8).collect();
            want.extend_from_slice(&bytes);
            if round % 3 == 0 {
                out.send(&bytes);
            } else {
                out.queue().extend_from_slice(&bytes);
            }
            out.pipe.as_mut().unwrap().room = round * 7 % 45;
            out.flush().unwrap();
        }
        out.pipe.as_mut().unwrap().room = usize::MAX;
        out.flush().unwrap();
        assert_eq!(out.pending(), 0);
        assert_eq!(out.pipe.unwrap().got, want);
    }
}
