//! The RESP listeners: a Unix socket and a TCP port, and accepting their
//! clients into the same slab as FIFO clients.
//!
//! A socket path that exists is taken over only if it is a socket nobody
//! answers on (what a killed server leaves); a live server's socket or any
//! other file makes start-up fail, so two servers never fight over a path.

use super::{token, Close, Reactor, REQ, RESP_TCP, RESP_UNIX};
use crate::protocol::resp;
use crate::reactor::pubsub::SessionId;
use crate::reactor::session::{Conn, Link, Outbox, RespState, Session};
use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Registry, Token};
use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Most connections accepted from one listener in one turn of the loop, so
/// a connection storm cannot starve the sessions.
const ACCEPTS_PER_TURN: usize = 256;

/// Why a RESP listener could not be set up.
#[derive(Debug)]
pub enum ListenError {
    /// A live server answers on the socket path.
    InUse(PathBuf),
    /// The path holds something that is not a socket.
    NotASocket(PathBuf),
    Io(String, io::Error),
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::InUse(p) => write!(
                f,
                "{}: another server is listening on this socket",
                p.display()
            ),
            ListenError::NotASocket(p) => write!(
                f,
                "{}: exists and is not a socket; not replacing it",
                p.display()
            ),
            ListenError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for ListenError {}

/// The Unix socket: the listener, its path, and its identity, so that only
/// our own socket is removed at exit.
struct UnixSide {
    listener: UnixListener,
    path: PathBuf,
    id: (u64, u64),
}

/// However the server ends (shutdown, a failed start), the socket file
/// goes with the listener, if the path still names our socket.
impl Drop for UnixSide {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                crate::log_warn!("cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

#[derive(Default)]
pub struct StreamListeners {
    unix: Option<UnixSide>,
    tcp: Option<TcpListener>,
}

impl StreamListeners {
    /// Binds the Unix socket at `path` with `mode`.
    pub fn bind_unix(&mut self, path: &Path, mode: u32) -> Result<(), ListenError> {
        let io_err = |what: &str, e| ListenError::Io(format!("{}: {what}", path.display()), e);
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                match std::os::unix::net::UnixStream::connect(path) {
                    Ok(_) => return Err(ListenError::InUse(path.to_path_buf())),
                    // Nobody answers: a dead server's socket.
                    Err(_) => std::fs::remove_file(path)
                        .map_err(|e| io_err("cannot remove the stale socket", e))?,
                }
            }
            Ok(_) => return Err(ListenError::NotASocket(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot look at the path", e)),
        }
        // The socket is created with the umask's mode; nobody else may
        // connect in the moment before the chmod.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(|e| io_err("cannot bind", e))?;
        let meta = std::fs::symlink_metadata(path).map_err(|e| io_err("cannot stat", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_err("cannot set its mode", e))?;
        self.unix = Some(UnixSide {
            listener,
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
        });
        Ok(())
    }

    pub fn bind_tcp(&mut self, addr: SocketAddr) -> Result<(), ListenError> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| ListenError::Io(format!("cannot listen on {addr}"), e))?;
        self.tcp = Some(listener);
        Ok(())
    }

    /// Where the listeners are, for the start-up log line.
    pub fn describe(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(u) = &self.unix {
            v.push(format!("unix socket {}", u.path.display()));
        }
        if let Some(t) = &self.tcp {
            match t.local_addr() {
                Ok(a) => v.push(format!("tcp {a}")),
                Err(_) => v.push("tcp".into()),
            }
        }
        v
    }

    pub fn tcp_port(&self) -> u16 {
        self.tcp
            .as_ref()
            .and_then(|t| t.local_addr().ok())
            .map_or(0, |a| a.port())
    }

    pub fn unix_path(&self) -> Option<&Path> {
        self.unix.as_ref().map(|u| u.path.as_path())
    }

    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        if let Some(u) = self.unix.as_mut() {
            registry.register(&mut u.listener, RESP_UNIX, Interest::READABLE)?;
        }
        if let Some(t) = self.tcp.as_mut() {
            registry.register(t, RESP_TCP, Interest::READABLE)?;
        }
        Ok(())
    }

    /// Stops listening and removes the socket file (see `UnixSide`'s drop).
    pub fn close(&mut self, registry: &Registry) {
        if let Some(mut u) = self.unix.take() {
            let _ = registry.deregister(&mut u.listener);
        }
        if let Some(mut t) = self.tcp.take() {
            let _ = registry.deregister(&mut t);
        }
    }

    /// The next waiting connection of the listener behind `which`.
    /// The address a connection came in on, for CLIENT LIST's `laddr`.
    fn local_name(&self, conn: &Conn) -> String {
        match conn {
            Conn::Tcp(c) => c.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Conn::Unix(_) => self
                .unix
                .as_ref()
                .map(|u| format!("{}:0", u.path.display()))
                .unwrap_or_default(),
        }
    }

    fn accept(&mut self, which: Token) -> Option<io::Result<(Conn, String)>> {
        let got = if which == RESP_UNIX {
            self.unix
                .as_mut()?
                .listener
                .accept()
                .map(|(c, _)| (Conn::Unix(c), String::new()))
        } else {
            self.tcp.as_mut()?.accept().map(|(c, addr)| {
                // Replies are whole; Nagle would only delay them.
                let _ = c.set_nodelay(true);
                (Conn::Tcp(c), addr.to_string())
            })
        };
        Some(got)
    }
}

impl Reactor {
    /// Starts serving RESP on `listeners`.
    pub fn listen_streams(&mut self, mut listeners: StreamListeners) -> io::Result<()> {
        listeners.register(self.poll.registry())?;
        self.streams = listeners;
        Ok(())
    }

    /// Accepts waiting connections on one listener.
    pub(super) fn accept_streams(&mut self, which: Token) {
        for _ in 0..ACCEPTS_PER_TURN {
            let (mut conn, peer) = match self.streams.accept(which) {
                None => return,
                Some(Ok(c)) => c,
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Some(Err(e)) if e.raw_os_error().is_some_and(is_fd_exhaustion) => {
                    // Out of descriptors: the client would wait in the
                    // backlog forever. Give up the spare descriptor to take
                    // it and tell it why, then take the spare back.
                    self.spare_fd = None;
                    if let Some(Ok((mut conn, peer))) = self.streams.accept(which) {
                        let mut msg = Vec::new();
                        resp::push_error(&mut msg, "ERR max number of clients reached");
                        let _ = conn.write(&msg);
                        super::client_warn(format_args!(
                            "refused RESP client {peer}: no file descriptor left"
                        ));
                    }
                    self.spare_fd = super::spare_descriptor();
                    self.stats.rejected += 1;
                    continue;
                }
                Some(Err(e)) => {
                    crate::log_warn!("cannot accept a RESP client: {e}");
                    return;
                }
            };
            self.stats.connections += 1;
            self.make_room_for_unauthenticated();
            if self.sessions.len() >= self.opts.max_sessions {
                self.stats.rejected += 1;
                let mut msg = Vec::new();
                resp::push_error(&mut msg, "ERR max number of clients reached");
                let _ = conn.write(&msg);
                super::client_warn(format_args!(
                    "refused RESP client {peer}: session limit ({}) reached",
                    self.opts.max_sessions
                ));
                continue;
            }
            let generation = self.next_generation;
            self.next_generation += 1;
            // Unix socket peers have no address: name them by connection.
            let peer = if peer.is_empty() {
                format!("unix#{generation}")
            } else {
                peer
            };
            let entry = self.sessions.vacant_entry();
            let sid = entry.key();
            let registered = self.poll.registry().register(
                &mut conn,
                token(sid, REQ),
                Interest::READABLE | Interest::WRITABLE,
            );
            if let Err(e) = registered {
                crate::log_warn!("cannot watch RESP client {peer}: {e}");
                continue;
            }
            let state = RespState {
                authenticated: self.password.is_none(),
                ..RespState::default()
            };
            let link = Link::Stream {
                out: Outbox::new(Some(conn)),
                resp: state,
            };
            crate::log_debug!("RESP client {peer} connected");
            let mut session = Session::new(generation, peer, link);
            if let Link::Stream { out, .. } = &session.link {
                if let Some(c) = out.pipe.as_ref() {
                    session.laddr = self.streams.local_name(c);
                }
            }
            // Bytes may be waiting already; edge-triggered, no new event
            // would announce them.
            session.unread = true;
            entry.insert(session);
            self.resume.push(sid);
        }
        // More may wait: edge-triggered, no new event would say so.
        self.accept_left.push(which);
    }

    /// Ends a RESP session after a protocol error, as Redis does: the
    /// error is its last reply.
    pub(super) fn protocol_error(&mut self, sid: SessionId, e: resp::ProtocolError) {
        if let Some(s) = self.sessions.get_mut(sid) {
            resp::push_error(s.replies(), &format!("ERR {e}"));
            let _ = s.flush();
        }
        self.close(sid, Close::Log(format!("{e}; disconnected")));
    }
}

/// EMFILE or ENFILE: no descriptor left for a new connection.
fn is_fd_exhaustion(errno: i32) -> bool {
    errno == nix::errno::Errno::EMFILE as i32 || errno == nix::errno::Errno::ENFILE as i32
}
