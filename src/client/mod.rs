//! The client side of the FIFO protocol, used by `kvs-client`: creating and
//! always removing the client's three FIFOs, registering with the server,
//! and request / response round trips. Notifications are read by the caller
//! from [`Connection::take_notifications`].

pub mod commands;
pub mod console;

use crate::protocol::fifo::{
    self as protocol, ConnectRequest, OpForm, Request, CONNECT_LEN, NOTIFICATION_LEN, STRING_FIELD,
};
use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;
use nix::unistd::mkfifo;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long the client waits for any one answer before it gives up.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub enum ClientError {
    /// A FIFO path would not fit the protocol's 40-byte field.
    PathTooLong(PathBuf),
    Fifo(PathBuf, Errno),
    /// Nobody reads the registration FIFO.
    NoServer(PathBuf),
    Refused,
    /// The server closed the session or went away.
    Disconnected,
    Timeout,
    Io(io::Error),
    /// A key or value that does not fit the protocol.
    BadArgument(String),
    /// Another live client uses this client id.
    InUse(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::PathTooLong(p) => write!(
                f,
                "FIFO path {} is longer than {} bytes (use a shorter client id or TMPDIR)",
                p.display(),
                protocol::PATH_FIELD
            ),
            ClientError::Fifo(p, e) => write!(f, "FIFO {}: {}", p.display(), e.desc()),
            ClientError::NoServer(p) => write!(f, "no server is listening on {}", p.display()),
            ClientError::Refused => f.write_str("the server refused the connection"),
            ClientError::Disconnected => f.write_str("Disconnected by server"),
            ClientError::Timeout => {
                write!(f, "the server did not answer within {ANSWER_TIMEOUT:?}")
            }
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::InUse(id) => write!(f, "client id '{id}' is in use by a running client"),
            ClientError::BadArgument(s) => write!(
                f,
                "'{s}' is not a valid key or value (1 to 40 bytes, no blanks or ,()[])"
            ),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// The client's three FIFOs; removed on drop, or earlier by [`remove`](Self::remove).
pub struct ClientFifos {
    pub req: PathBuf,
    pub resp: PathBuf,
    pub notif: PathBuf,
    removed: AtomicBool,
}

impl ClientFifos {
    /// Creates `<dir>/req<id>`, `<dir>/resp<id>` and `<dir>/notif<id>`. A
    /// FIFO left there by an earlier run is replaced, unless a live client
    /// still reads it; anything else there is an error.
    pub fn create(dir: &Path, id: &str) -> Result<ClientFifos, ClientError> {
        let fifos = ClientFifos {
            req: dir.join(format!("req{id}")),
            resp: dir.join(format!("resp{id}")),
            notif: dir.join(format!("notif{id}")),
            removed: AtomicBool::new(false),
        };
        for p in fifos.paths() {
            if p.as_os_str().len() > protocol::PATH_FIELD {
                return Err(ClientError::PathTooLong(p.to_path_buf()));
            }
        }
        // A client holds its response and notification FIFOs open for
        // reading: a write end opens on them only while it lives.
        for p in [&fifos.resp, &fifos.notif] {
            if is_fifo(p) && open_fifo(p, OFlag::O_WRONLY).is_ok() {
                fifos.removed.store(true, Ordering::SeqCst);
                return Err(ClientError::InUse(id.to_owned()));
            }
        }
        for p in fifos.paths() {
            if is_fifo(p) {
                let _ = std::fs::remove_file(p);
            }
            if let Err(e) = mkfifo(p, Mode::from_bits_truncate(0o600)) {
                // Do not remove what this run did not create.
                let err = ClientError::Fifo(p.to_path_buf(), e);
                fifos.remove_created_before(p);
                fifos.removed.store(true, Ordering::SeqCst);
                return Err(err);
            }
        }
        Ok(fifos)
    }

    fn paths(&self) -> [&Path; 3] {
        [&self.req, &self.resp, &self.notif]
    }

    fn remove_created_before(&self, failed: &Path) {
        for p in self.paths().into_iter().take_while(|p| *p != failed) {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Removes the FIFOs (once; later calls do nothing).
    pub fn remove(&self) {
        if !self.removed.swap(true, Ordering::SeqCst) {
            for p in self.paths() {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

impl Drop for ClientFifos {
    fn drop(&mut self) {
        self.remove();
    }
}

fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

fn open_fifo(path: &Path, flags: OFlag) -> Result<OwnedFd, ClientError> {
    open(
        path,
        flags | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| ClientError::Fifo(path.to_path_buf(), e))
}

/// The write end of FIFO `path` if a reader has it open (or is opening
/// it), `None` if none has yet.
fn open_writer_if_read(path: &Path) -> Result<Option<OwnedFd>, ClientError> {
    match open_fifo(path, OFlag::O_WRONLY) {
        Ok(fd) => Ok(Some(fd)),
        Err(ClientError::Fifo(_, Errno::ENXIO)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn set_blocking(fd: &OwnedFd) -> Result<(), ClientError> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| ClientError::Io(e.into()))?;
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| ClientError::Io(e.into()))?;
    Ok(())
}

/// Reads exactly `buf.len()` bytes from a FIFO, waiting at most `timeout`
/// in all.
///
/// It polls before every read: a FIFO whose writer has not opened it yet
/// reads as end-of-file, but polls as not ready (Linux reports a hang-up
/// only once a writer has come and gone), so only a read after a ready
/// poll can tell a closed session from a server that has not answered yet.
fn read_within(file: &mut File, buf: &mut [u8], timeout: Duration) -> Result<(), ClientError> {
    let deadline = Instant::now() + timeout;
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout);
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(ClientError::Io(e.into())),
        }
        match file.read(&mut buf[got..]) {
            Ok(0) => return Err(ClientError::Disconnected),
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// An answer from the server: the result character and, for a READ that
/// found its key, the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: u8,
    pub value: Option<String>,
}

/// A registered session.
pub struct Connection {
    req: File,
    resp: File,
    notif: Option<File>,
    /// How op codes travel, both ways (SPEC section 3).
    form: OpForm,
}

impl Connection {
    /// Registers through `registration` and waits for the server's answer;
    /// a `'1'` answer is [`ClientError::Refused`].
    pub fn connect(fifos: &ClientFifos, registration: &Path) -> Result<Connection, ClientError> {
        Self::connect_in(fifos, registration, OpForm::Binary)
    }

    /// [`Connection::connect`] with op codes in `form` (some course servers
    /// speak ASCII digits). Whatever order the server opens the three FIFOs
    /// in works: the request FIFO is opened for writing as soon as the
    /// server opens it for reading, before or after it answers (a server
    /// that blocks in `open` of the request FIFO before it answers would
    /// otherwise wait on a client waiting on it).
    pub fn connect_in(
        fifos: &ClientFifos,
        registration: &Path,
        form: OpForm,
    ) -> Result<Connection, ClientError> {
        let msg = ConnectRequest {
            req: fifos.req.as_os_str().as_bytes().to_vec(),
            resp: fifos.resp.as_os_str().as_bytes().to_vec(),
            notif: fifos.notif.as_os_str().as_bytes().to_vec(),
            form,
        }
        .encode()
        .ok_or_else(|| ClientError::PathTooLong(fifos.req.clone()))?;
        // Open our read ends first, so the server's answer cannot be missed.
        let mut resp = File::from(open_fifo(&fifos.resp, OFlag::O_RDONLY)?);
        let notif = open_fifo(&fifos.notif, OFlag::O_RDONLY)?;

        let reg = match open_fifo(registration, OFlag::O_WRONLY) {
            Ok(fd) => fd,
            Err(ClientError::Fifo(_, Errno::ENXIO | Errno::ENOENT)) => {
                return Err(ClientError::NoServer(registration.to_path_buf()))
            }
            Err(e) => return Err(e),
        };
        // 121 bytes is under PIPE_BUF: written whole or not at all.
        let mut reg = File::from(reg);
        match reg.write(&msg) {
            Ok(n) if n == CONNECT_LEN => {}
            Ok(_) => return Err(ClientError::Io(io::ErrorKind::WriteZero.into())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(ClientError::Timeout),
            Err(e) => return Err(e.into()),
        }
        drop(reg);

        let mut answer = [0u8; 2];
        let mut got = 0;
        let mut req = None;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        while got < answer.len() {
            if req.is_none() {
                req = open_writer_if_read(&fifos.req)?;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            // Short slices: the request FIFO is tried again between them.
            let slice = left.min(Duration::from_millis(10));
            let mut part = [0u8; 2];
            match read_within(&mut resp, &mut part[..answer.len() - got], slice) {
                Ok(()) => {
                    let n = answer.len() - got;
                    answer[got..].copy_from_slice(&part[..n]);
                    got = answer.len();
                }
                Err(ClientError::Timeout) => {}
                Err(e) => return Err(e),
            }
        }
        if answer != [form.wire(protocol::OP_CONNECT), protocol::OK] {
            return Err(ClientError::Refused);
        }
        let req = match req {
            Some(fd) => fd,
            // The server holds the read end once it answered: this open
            // does not block.
            None => open_fifo(&fifos.req, OFlag::O_WRONLY)?,
        };
        set_blocking(&req)?;
        set_blocking(&notif)?;
        Ok(Connection {
            req: File::from(req),
            resp,
            notif: Some(File::from(notif)),
            form,
        })
    }

    /// The notification FIFO, for a reader thread (blocking reads of
    /// [`NOTIFICATION_LEN`]-byte frames; see [`read_notification`]).
    pub fn take_notifications(&mut self) -> Option<File> {
        self.notif.take()
    }

    /// Sends one request and waits for its answer.
    pub fn request(&mut self, r: &Request) -> Result<Answer, ClientError> {
        let mut msg = r
            .encode()
            .ok_or_else(|| ClientError::BadArgument(format!("{r:?}")))?;
        msg[0] = self.form.wire(msg[0]);
        match self.req.write_all(&msg) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                return Err(ClientError::Disconnected)
            }
            Err(e) => return Err(e.into()),
        }
        let mut head = [0u8; 2];
        read_within(&mut self.resp, &mut head, ANSWER_TIMEOUT)?;
        let mut value = None;
        if head == [self.form.wire(protocol::OP_READ), protocol::OK] {
            let mut field = [0u8; STRING_FIELD];
            read_within(&mut self.resp, &mut field, ANSWER_TIMEOUT)?;
            value = Some(protocol::field_str(&field));
        }
        Ok(Answer {
            code: head[1],
            value,
        })
    }
}

/// Reads one notification (blocking); `None` at end of file, when the
/// server has closed the session.
pub fn read_notification(notif: &mut File) -> io::Result<Option<(String, String)>> {
    let mut frame = [0u8; NOTIFICATION_LEN];
    match notif.read_exact(&mut frame) {
        Ok(()) => Ok(Some((
            protocol::field_str(&frame[..STRING_FIELD]),
            protocol::field_str(&frame[STRING_FIELD..]),
        ))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads one notification, waiting at most `timeout`. A session closed by
/// the server is [`ClientError::Disconnected`].
pub fn read_notification_within(
    notif: &mut File,
    timeout: Duration,
) -> Result<(String, String), ClientError> {
    let mut frame = [0u8; NOTIFICATION_LEN];
    read_within(notif, &mut frame, timeout)?;
    Ok((
        protocol::field_str(&frame[..STRING_FIELD]),
        protocol::field_str(&frame[STRING_FIELD..]),
    ))
}
