//! Helpers for the RESP end-to-end tests: a kvs server with its RESP
//! listeners, raw connections that read whole replies, and a private
//! redis-server when one is installed.

use super::Server;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port free a moment ago, below the kernel's ephemeral range: a port
/// from `bind(0)` may be handed out again as the source port of any
/// outgoing connection (etcd members dial each other and kvs nodes dial
/// them) before the server meant to listen on it has started or, after a
/// restart, started again; one below the range is never given out so.
/// Processes running tests at once start at different places and each
/// takes the next one free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = first_ephemeral.saturating_sub(LOWEST);
    let start = std::process::id().wrapping_mul(7_919);
    for _ in 0..span.min(1_000) {
        let port = LOWEST + start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = u16::try_from(port).expect("a port below the ephemeral range");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    // No room below the range on this machine: as the kernel gives one.
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A kvs server serving RESP on a Unix socket and a TCP port.
pub struct RespServer {
    pub server: Server,
    pub sock: PathBuf,
    pub port: u16,
}

impl RespServer {
    pub fn start(jobs: &[(&str, &str)], extra: &[&str]) -> RespServer {
        // The socket path is chosen before the server's folder exists.
        let sockdir = tempfile::Builder::new()
            .prefix("kvs-sock")
            .tempdir_in("/tmp")
            .expect("tempdir")
            .keep();
        let sock = sockdir.join("kvs.sock");
        let port = free_port();
        let port_s = port.to_string();
        let mut args = vec![
            "--resp-socket",
            sock.to_str().expect("utf-8 path"),
            "--resp-port",
            &port_s,
        ];
        args.extend_from_slice(extra);
        let server = Server::start(jobs, &args);
        RespServer { server, sock, port }
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.sock.display())
    }

    pub fn tcp_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn con(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection_with_timeout(Duration::from_secs(10))
            .expect("connect over the Unix socket")
    }

    pub fn raw(&self) -> Raw {
        Raw::unix(&self.sock)
    }
}

impl Drop for RespServer {
    fn drop(&mut self) {
        if let Some(dir) = self.sock.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A raw RESP connection: bytes in, whole replies out.
pub struct Raw {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn unix(path: &Path) -> Raw {
        let stream = UnixStream::connect(path).expect("connect to the socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends a command as a multibulk array.
    pub fn cmd(&mut self, args: &[&str]) {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&kvs::protocol::resp::encode_request(&args));
    }

    /// The next whole reply, raw (at most 10 s).
    pub fn reply(&mut self) -> Vec<u8> {
        let start = Instant::now();
        loop {
            if let Some(n) = reply_len(&self.buf) {
                return self.buf.drain(..n).collect();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no whole reply; have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "connection closed; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The next whole reply, or `None` if none is whole within `wait`.
    pub fn reply_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let start = Instant::now();
        let mut chunk = [0u8; 65536];
        loop {
            if let Some(n) = reply_len(&self.buf) {
                return Some(self.buf.drain(..n).collect());
            }
            let left = wait.checked_sub(start.elapsed())?;
            let _ = self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let read = self.stream.read(&mut chunk);
            let _ = self.stream.set_read_timeout(Some(Duration::from_secs(10)));
            match read {
                Ok(0) => panic!(
                    "connection closed; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Sends a command and returns its reply as text.
    pub fn ask(&mut self, args: &[&str]) -> String {
        self.cmd(args);
        String::from_utf8_lossy(&self.reply()).into_owned()
    }

    /// Asks `args` until the reply is `want`, for at most 10 s (a node of
    /// a shared dataset hears of a change made elsewhere a little later).
    pub fn ask_until(&mut self, args: &[&str], want: &str) {
        self.ask_until_reply(args, Duration::from_secs(10), |r| r == want, want);
    }

    /// Asks `args` until the reply contains `part`, for at most `within`.
    pub fn ask_until_contains(&mut self, args: &[&str], part: &str, within: Duration) {
        self.ask_until_reply(args, within, |r| r.contains(part), part);
    }

    fn ask_until_reply(
        &mut self,
        args: &[&str],
        within: Duration,
        done: impl Fn(&str) -> bool,
        want: &str,
    ) {
        let start = Instant::now();
        while !done(&self.ask(args)) {
            assert!(start.elapsed() < within, "{args:?} never answered {want:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the server closes the connection within 10 s (what it sent
    /// before is kept for [`Raw::rest`]).
    pub fn closed_by_server(&mut self) -> bool {
        let start = Instant::now();
        let mut chunk = [0u8; 65536];
        while start.elapsed() < Duration::from_secs(10) {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
        false
    }

    /// Bytes received and not yet taken as a reply.
    pub fn rest(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// Length of the whole reply at the front of `b`, if it is all there
/// (RESP2, and RESP3's types).
pub fn reply_len(b: &[u8]) -> Option<usize> {
    let line_end = b.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&b[1..line_end]).ok()?;
    let after = line_end + 2;
    let items = |n: i64, b: &[u8]| -> Option<usize> {
        let mut at = after;
        for _ in 0..n.max(0) {
            at += reply_len(&b[at..])?;
        }
        Some(at)
    };
    match b.first()? {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Some(after),
        b'$' | b'=' | b'!' => {
            let n: i64 = head.parse().ok()?;
            if n < 0 {
                return Some(after);
            }
            let end = after + n as usize + 2;
            (b.len() >= end).then_some(end)
        }
        b'*' | b'>' | b'~' => items(head.parse().ok()?, b),
        b'%' => items(2 * head.parse::<i64>().ok()?, b),
        _ => None,
    }
}

/// A private redis-server on a Unix socket in its own folder, if
/// `redis-server` is installed; killed on drop.
pub struct Redis {
    child: Child,
    pub sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// `None` (after saying so on stderr, which the test run shows) where
    /// redis-server is not on PATH.
    pub fn start(test: &str) -> Option<Redis> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            eprintln!("SKIPPED ({test}): redis-server is not on PATH; the comparison with Redis did not run");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("redis")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let sock = dir.path().join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&sock)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let start = Instant::now();
        while UnixStream::connect(&sock).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(Redis {
            child,
            sock,
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.sock.display())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
