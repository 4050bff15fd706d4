//! One connected client: its three FIFOs, the bytes waiting to be parsed
//! and to be written, and its subscriptions.

use super::fifo::FifoId;
use mio::unix::pipe::{Receiver, Sender};
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::time::Instant;

/// Most unparsed request bytes kept per session; reading pauses above it.
pub const MAX_INBUF: usize = 64 * 1024;

/// Bytes waiting to go out on one FIFO. Everything queued between two
/// flushes leaves in one `write` call.
///
/// The pipe stays registered for WRITABLE events for the session's whole
/// life: edge-triggered, that costs an event only when a full pipe drains
/// or when the client's read end goes away, which is how a client that
/// dies is noticed even while it has nothing to receive.
pub struct Outbox {
    /// `None` until the client has opened its read end (see [`super::fifo`]);
    /// bytes queue meanwhile.
    pub pipe: Option<Sender>,
    buf: Vec<u8>,
    sent: usize,
}

impl Outbox {
    pub fn new(pipe: Option<Sender>) -> Self {
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
        &mut self.buf
    }

    /// Writes until everything is out or the pipe is full. `Err` means the
    /// reader is gone (EPIPE) or the pipe failed.
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
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
        } else if self.sent > self.buf.len() / 2 {
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }
}

pub struct Session {
    /// Distinguishes this session from an earlier one in the same slab slot,
    /// so a late store result is never delivered to the wrong client.
    pub generation: u64,
    /// For messages: the request FIFO's path.
    pub name: String,
    pub req: Receiver,
    pub resp: Outbox,
    pub notif: Outbox,
    pub fifos: [FifoId; 3],
    /// Paths of the response and notification FIFOs, for opening them late.
    pub out_paths: [Vec<u8>; 2],
    /// Since when a write end waits for the client to open its read end.
    pub opening_since: Option<Instant>,
    pub inbuf: Vec<u8>,
    pub subscriptions: HashSet<String>,
    /// A request is at the store pool; the next waits for its answer, so
    /// answers leave in request order.
    pub busy: bool,
    /// The client closed its request FIFO (end-of-file).
    pub peer_closed: bool,
    /// The request FIFO may hold bytes not read yet: set by a readable
    /// event, cleared once a read comes back short (a pipe read returns
    /// all there is, so a short read leaves the pipe empty, and the next
    /// write to an empty pipe raises a new event).
    pub unread: bool,
    /// A bad message from this client has been logged already.
    pub invalid_logged: bool,
}

/// The opened FIFOs of a new session.
pub struct SessionFifos {
    pub req: Receiver,
    pub resp: Outbox,
    pub notif: Outbox,
    /// Request, response, notification.
    pub ids: [FifoId; 3],
    /// Response, notification.
    pub out_paths: [Vec<u8>; 2],
}

impl Session {
    pub fn new(generation: u64, name: String, f: SessionFifos) -> Self {
        Session {
            generation,
            name,
            req: f.req,
            resp: f.resp,
            notif: f.notif,
            fifos: f.ids,
            out_paths: f.out_paths,
            opening_since: None,
            inbuf: Vec::new(),
            subscriptions: HashSet::new(),
            busy: false,
            peer_closed: false,
            unread: false,
            invalid_logged: false,
        }
    }

    /// Reads the request FIFO until it is empty, at end-of-file, or
    /// [`MAX_INBUF`] bytes wait to be parsed (then [`Session::unread`] stays set).
    pub fn read_requests(&mut self) {
        let mut chunk = [0u8; 4096];
        while self.unread && self.inbuf.len() < MAX_INBUF {
            match self.req.read(&mut chunk) {
                Ok(0) => {
                    self.peer_closed = true;
                    self.unread = false;
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    if n < chunk.len() {
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

    /// Bytes queued for this client on both FIFOs.
    pub fn pending_output(&self) -> usize {
        self.resp.pending() + self.notif.pending()
    }
}
