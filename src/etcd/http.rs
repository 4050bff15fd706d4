//! A small blocking HTTP/1.1 client, just enough for etcd's JSON gateway:
//! POST a JSON body on a kept-alive connection and read the answer (by
//! Content-Length or chunked), or keep reading a chunked answer that never
//! ends (a watch), one newline-separated JSON message at a time. Every read
//! and write has a deadline, so a member that stops answering is found out
//! instead of waited on.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// What went wrong talking to one member.
#[derive(Debug)]
pub enum HttpError {
    /// The connection failed, broke or timed out: try another member.
    Io(io::Error),
    /// The member answered something that is not HTTP as etcd speaks it.
    Protocol(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Io(e) => write!(f, "{e}"),
            HttpError::Protocol(why) => write!(f, "bad HTTP answer: {why}"),
        }
    }
}

impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> Self {
        HttpError::Io(e)
    }
}

fn bad(why: impl Into<String>) -> HttpError {
    HttpError::Protocol(why.into())
}

/// Most bytes of headers or of one message kvs accepts from a member.
const MAX_HEADERS: usize = 64 * 1024;
const MAX_MESSAGE: usize = 1 << 30;

/// One kept-alive connection to one member (`host:port`).
pub struct Conn {
    stream: TcpStream,
    host: String,
    /// Bytes read past what was taken.
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(host: &str, timeout: Duration) -> Result<Conn, HttpError> {
        let addr = host
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| bad(format!("{host} names no address")))?;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Conn {
            stream,
            host: host.to_string(),
            buf: Vec::new(),
        })
    }

    /// How long a read may wait (a watch waits longer than a request).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(t)
    }

    /// Sends a POST of `body` to `path` without waiting for the answer
    /// ([`Conn::answer`]): `Err` here means the request was not taken.
    /// `headers`: more header lines, each ending in CRLF.
    pub fn send(&mut self, path: &str, headers: &str, body: &[u8]) -> Result<(), HttpError> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let mut msg = head.into_bytes();
        msg.extend_from_slice(body);
        self.stream.write_all(&msg)?;
        Ok(())
    }

    /// Whether the peer closed this idle connection (or sent what nobody
    /// asked for): it must not carry a request, which would then fail
    /// after it may have been read. An idle kept-alive connection has
    /// nothing to read.
    pub fn is_stale(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        if !self.buf.is_empty() {
            return true;
        }
        let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
        // Readable, hung up or failed: stale; a poll that fails says so too.
        !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
    }

    /// The status and whole body of the answer to the request sent last.
    pub fn answer(&mut self) -> Result<(u16, Vec<u8>), HttpError> {
        let head = self.read_head()?;
        let body = match head.framing {
            Framing::Length(n) => self.take_exact(n)?,
            Framing::Chunked => {
                let mut all = Vec::new();
                while let Some(chunk) = self.read_chunk()? {
                    all.extend_from_slice(&chunk);
                }
                all
            }
        };
        Ok((head.status, body))
    }

    /// POSTs `body` to `path` and turns the connection into a reader of
    /// the answer's messages (a watch).
    /// `headers`: more header lines, each ending in CRLF.
    pub fn post_stream(
        mut self,
        path: &str,
        headers: &str,
        body: &[u8],
    ) -> Result<MessageStream, HttpError> {
        self.send(path, headers, body)?;
        let head = self.read_head()?;
        if head.status != 200 {
            let body = match head.framing {
                Framing::Length(n) => self.take_exact(n)?,
                Framing::Chunked => self.read_chunk()?.unwrap_or_default(),
            };
            return Err(bad(format!(
                "status {}: {}",
                head.status,
                String::from_utf8_lossy(&body)
            )));
        }
        if !matches!(head.framing, Framing::Chunked) {
            return Err(bad("a stream that is not chunked"));
        }
        Ok(MessageStream {
            conn: self,
            pending: Vec::new(),
        })
    }

    fn fill(&mut self) -> Result<(), HttpError> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(HttpError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the member closed the connection",
            )));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// The next line (without its CRLF).
    fn line(&mut self) -> Result<Vec<u8>, HttpError> {
        loop {
            if let Some(at) = memchr::memmem::find(&self.buf, b"\r\n") {
                let line = self.buf[..at].to_vec();
                self.buf.drain(..at + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEADERS {
                return Err(bad("a line too long"));
            }
            self.fill()?;
        }
    }

    fn take_exact(&mut self, n: usize) -> Result<Vec<u8>, HttpError> {
        if n > MAX_MESSAGE {
            return Err(bad(format!("a body of {n} bytes")));
        }
        while self.buf.len() < n {
            self.fill()?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn read_head(&mut self) -> Result<Head, HttpError> {
        let status_line = self.line()?;
        let status = std::str::from_utf8(&status_line)
            .ok()
            .and_then(|l| l.strip_prefix("HTTP/1.1 "))
            .and_then(|l| l.get(..3))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| {
                bad(format!(
                    "status line {:?}",
                    String::from_utf8_lossy(&status_line)
                ))
            })?;
        let mut framing = Framing::Length(0);
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
            if let Some(v) = text.strip_prefix("content-length:") {
                let n = v.trim().parse().map_err(|_| bad("content-length"))?;
                framing = Framing::Length(n);
            } else if text.starts_with("transfer-encoding:") && text.contains("chunked") {
                framing = Framing::Chunked;
            }
        }
        Ok(Head { status, framing })
    }

    /// The next chunk of a chunked body; `None` at its end. Nothing is
    /// taken from the buffer until the whole chunk is in it, so a read that
    /// times out midway (a watch waiting for news) leaves the stream where
    /// it was, to be read on.
    fn read_chunk(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        loop {
            if let Some((chunk, used)) = whole_chunk(&self.buf)? {
                self.buf.drain(..used);
                return Ok(chunk);
            }
            if self.buf.len() > MAX_MESSAGE {
                return Err(bad("a chunk too long"));
            }
            self.fill()?;
        }
    }
}

/// A chunk's data (`None`: the last, empty one) and the bytes it took.
type Chunk = (Option<Vec<u8>>, usize);

/// The chunk at the front of `buf` and the bytes it takes, if it is all
/// there: `Some((None, n))` for the last (empty) chunk and its trailer.
fn whole_chunk(buf: &[u8]) -> Result<Option<Chunk>, HttpError> {
    let Some(line_end) = memchr::memmem::find(buf, b"\r\n") else {
        return if buf.len() > MAX_HEADERS {
            Err(bad("a chunk size line too long"))
        } else {
            Ok(None)
        };
    };
    let size_text = String::from_utf8_lossy(&buf[..line_end]);
    let size_text = size_text.split(';').next().unwrap_or("").trim();
    let size = usize::from_str_radix(size_text, 16)
        .map_err(|_| bad(format!("chunk size {size_text:?}")))?;
    let data = line_end + 2;
    if size == 0 {
        // The trailer: header lines, if any, up to an empty one.
        let mut at = data;
        loop {
            match memchr::memmem::find(&buf[at..], b"\r\n") {
                None => return Ok(None),
                Some(0) => return Ok(Some((None, at + 2))),
                Some(n) => at += n + 2,
            }
        }
    }
    if size > MAX_MESSAGE {
        return Err(bad(format!("a chunk of {size} bytes")));
    }
    if buf.len() < data + size + 2 {
        return Ok(None);
    }
    if &buf[data + size..data + size + 2] != b"\r\n" {
        return Err(bad("a chunk not followed by CRLF"));
    }
    Ok(Some((
        Some(buf[data..data + size].to_vec()),
        data + size + 2,
    )))
}

struct Head {
    status: u16,
    framing: Framing,
}

enum Framing {
    Length(usize),
    Chunked,
}

/// The messages of a streamed answer, each a line of JSON (the gateway
/// ends each with a newline; chunks need not follow message boundaries).
pub struct MessageStream {
    conn: Conn,
    pending: Vec<u8>,
}

impl MessageStream {
    /// The next message; `Ok(None)` when the member ended the stream.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        loop {
            if let Some(at) = memchr::memchr(b'\n', &self.pending) {
                let msg: Vec<u8> = self.pending.drain(..=at).collect();
                let msg = msg.trim_ascii().to_vec();
                if msg.is_empty() {
                    continue;
                }
                return Ok(Some(msg));
            }
            if self.pending.len() > MAX_MESSAGE {
                return Err(bad("a message too long"));
            }
            match self.conn.read_chunk()? {
                Some(chunk) => self.pending.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }

    /// How long a read may wait for the next message.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.conn.set_read_timeout(t)
    }

    /// A handle that can end the stream from another thread.
    pub fn shutdown_handle(&self) -> io::Result<TcpStream> {
        self.conn.stream.try_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(c: &mut Conn, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
        c.send(path, "", body)?;
        c.answer()
    }
    use std::net::TcpListener;

    /// A one-shot server answering with `answer` whatever it is asked.
    fn serve(answer: &'static [u8]) -> String {
        serve_in_parts(vec![answer])
    }

    /// A one-shot server answering with `parts`, 400 ms apart.
    fn serve_in_parts(parts: Vec<&'static [u8]>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req);
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    std::thread::sleep(Duration::from_millis(400));
                }
                let _ = s.write_all(part);
            }
        });
        addr
    }

    #[test]
    fn a_body_by_length_and_a_chunked_one() {
        let t = Duration::from_secs(5);
        let addr = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}");
        let mut c = Conn::connect(&addr, t).unwrap();
        assert_eq!(
            post(&mut c, "/x", b"{}").unwrap(),
            (200, b"{\"a\":1}".to_vec())
        );
        let addr = serve(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        let mut c = Conn::connect(&addr, t).unwrap();
        assert_eq!(post(&mut c, "/x", b"{}").unwrap(), (404, b"abcde".to_vec()));
    }

    #[test]
    fn a_stream_is_read_message_by_message_across_chunks() {
        let t = Duration::from_secs(5);
        let addr = serve(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n5\r\n1}\n{\"\r\n5\r\nb\":2}\r\n1\r\n\n\r\n0\r\n\r\n",
        );
        let c = Conn::connect(&addr, t).unwrap();
        let mut s = c.post_stream("/w", "", b"{}").unwrap();
        assert_eq!(s.next_message().unwrap(), Some(b"{\"a\":1}".to_vec()));
        assert_eq!(s.next_message().unwrap(), Some(b"{\"b\":2}".to_vec()));
        assert_eq!(s.next_message().unwrap(), None);
    }

    #[test]
    fn a_chunk_is_taken_only_whole() {
        assert_eq!(whole_chunk(b"5\r\nab").unwrap(), None);
        assert_eq!(whole_chunk(b"5").unwrap(), None);
        assert_eq!(
            whole_chunk(b"5\r\nabcde\r\nrest").unwrap(),
            Some((Some(b"abcde".to_vec()), 10))
        );
        assert_eq!(whole_chunk(b"0\r\n").unwrap(), None);
        assert_eq!(whole_chunk(b"0\r\n\r\n").unwrap(), Some((None, 5)));
        assert!(whole_chunk(b"5\r\nabcdeXY").is_err());
        assert!(whole_chunk(b"zz\r\n").is_err());
    }

    #[test]
    fn a_stream_read_on_after_a_timeout_midway_through_a_chunk() {
        let addr = serve_in_parts(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n{\"a\"",
            b":1}\n\r\n0\r\n\r\n",
        ]);
        let c = Conn::connect(&addr, Duration::from_secs(5)).unwrap();
        let mut s = c.post_stream("/w", "", b"{}").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut timeouts = 0;
        let msg = loop {
            match s.next_message() {
                Ok(m) => break m,
                Err(HttpError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => timeouts += 1,
                Err(e) => panic!("{e}"),
            }
        };
        assert!(timeouts > 0);
        assert_eq!(msg, Some(b"{\"a\":1}".to_vec()));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let t = Duration::from_secs(5);
        for answer in [
            &b"SMTP ready\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: nine\r\n\r\n",
        ] {
            let addr = serve(answer);
            let mut c = Conn::connect(&addr, t).unwrap();
            assert!(post(&mut c, "/x", b"{}").is_err());
        }
    }
}
