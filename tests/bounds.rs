//! Bounds in size and time, with the real server: a client that reads is
//! never cut off for the size of its own reply, idle and half-sent
//! sessions end at `--timeout`, and a flood of silent unauthenticated
//! connections neither locks out FIFO clients and clients with the
//! password nor floods the log; an idle session gives back the room a
//! large value took.

mod common;

use common::resp::{Raw, RespServer};
use common::{session, write};
use kvs::protocol::fifo::Request;
use std::io::Read;
use std::time::{Duration, Instant};

/// Job files that write `n` keys, 256 to a line.
fn key_jobs(n: usize) -> String {
    let mut job = String::new();
    for start in (0..n).step_by(256) {
        job.push_str("WRITE [");
        for i in start..(start + 256).min(n) {
            job.push_str(&format!("(key{i:06},value{i:06})"));
        }
        job.push_str("]\n");
    }
    job
}

fn wait_for_keys(raw: &mut Raw, n: usize) {
    let start = Instant::now();
    while raw.ask(&["DBSIZE"]) != format!(":{n}\r\n") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the jobs never wrote {n} keys"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_reply_larger_than_the_output_buffer_is_sent_whole() {
    const KEYS: usize = 200_000;
    let job = key_jobs(KEYS);
    let kvs = RespServer::start(&[("keys.job", &job)], &[]);
    let mut raw = kvs.raw();
    wait_for_keys(&mut raw, KEYS);
    let mut con = kvs.con();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    assert_eq!(keys.len(), KEYS);
    let (cursor, scanned): (String, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(1_000_000_000u64)
        .query(&mut con)
        .unwrap();
    assert_eq!(cursor, "0");
    assert_eq!(scanned.len(), KEYS);
    // A request pipelined behind the large reply is answered once the
    // client has read it, with no more bytes from the client.
    let mut raw = kvs.raw();
    raw.send(b"KEYS *\r\nPING\r\nGET key000007\r\n");
    let keys = raw.reply();
    assert!(keys.starts_with(format!("*{KEYS}\r\n").as_bytes()));
    assert_eq!(raw.reply(), b"+PONG\r\n");
    assert_eq!(raw.reply(), b"$11\r\nvalue000007\r\n");
    // Still served after, on the same connection.
    assert_eq!(
        redis::cmd("GET")
            .arg("key000007")
            .query::<String>(&mut con)
            .unwrap(),
        "value000007"
    );
    assert!(
        !kvs.server.log().contains("not reading"),
        "{}",
        kvs.server.log()
    );
}

/// `tot-mem` of the session named `name`, from CLIENT LIST.
fn buffer_bytes(raw: &mut Raw, name: &str) -> usize {
    let list = raw.ask(&["CLIENT", "LIST"]);
    let line = list
        .lines()
        .find(|l| l.contains(&format!(" name={name} ")))
        .unwrap_or_else(|| panic!("no session {name} in {list}"));
    line.split(' ')
        .find_map(|f| f.strip_prefix("tot-mem="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tot-mem in {line}"))
}

/// A 4 MiB SET is read apart, into the buffer the store then keeps: the
/// session's own buffers stay small. A 4 MiB GET leaves its reply buffer
/// that large while the client is busy, and the room is given back once it
/// has been idle for a while (2 s), as Redis shrinks an idle client's
/// buffers.
#[test]
fn an_idle_session_gives_back_the_room_a_large_value_took() {
    let kvs = RespServer::start(&[], &[]);
    let (mut big, mut watcher) = (kvs.raw(), kvs.raw());
    assert_eq!(big.ask(&["CLIENT", "SETNAME", "big"]), "+OK\r\n");
    let value = "v".repeat(4 << 20);
    // Two at once: the second comes while the first is still being read.
    let set =
        |k: &str| kvs::protocol::resp::encode_request(&[b"SET", k.as_bytes(), value.as_bytes()]);
    big.send(&[set("k"), set("k2")].concat());
    assert_eq!(big.reply(), b"+OK\r\n");
    assert_eq!(big.reply(), b"+OK\r\n");
    let held = buffer_bytes(&mut watcher, "big");
    assert!(
        held < 1 << 20,
        "the session holds {held} bytes after its SETs"
    );
    assert_eq!(big.ask(&["GET", "k2"]).len(), (4 << 20) + 12);
    let held = buffer_bytes(&mut watcher, "big");
    assert!(
        held >= 4 << 20,
        "the session holds {held} bytes after its GET"
    );
    let start = Instant::now();
    loop {
        let now = buffer_bytes(&mut watcher, "big");
        if now < 64 * 1024 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "still {now} bytes after {:?} idle",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Still served, with room again.
    assert_eq!(big.ask(&["STRLEN", "k"]), format!(":{}\r\n", 4 << 20));
}

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Whether the server closes `s` within `wait`.
fn closed_within(s: &mut std::net::TcpStream, wait: Duration) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    while start.elapsed() < wait {
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => {}
        }
    }
    false
}

#[test]
fn silent_connections_lock_nobody_out_and_idle_ones_end() {
    raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "s3cret\n").unwrap();
    let kvs = RespServer::start(
        &[],
        &[
            "--requirepass-file",
            pass.to_str().unwrap(),
            "--timeout",
            "2",
        ],
    );
    let addr = format!("127.0.0.1:{}", kvs.port);
    let mut silent: Vec<std::net::TcpStream> = (0..1100)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
        .collect();
    // (Connecting 1,100 times can take a while by itself: a full accept
    // queue makes the kernel retry a SYN a second later.)
    let started = Instant::now();
    // A client with the password and a FIFO client are served at once.
    let url = format!("redis://:s3cret@{addr}/");
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("a client with the password gets in");
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let mut fifo = session("flood", &kvs.server.fifo);
    assert_eq!(fifo.ask(write("f", "1")), b'0');
    assert_eq!(fifo.ask(Request::Read("k".into())), b'0');
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "served after {took:?}");

    // An authenticated client that goes quiet, and one that stops halfway
    // through a request, end at --timeout; the two above are still busy.
    let mut quiet = std::net::TcpStream::connect(&addr).unwrap();
    let mut half = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::Write;
    quiet.write_all(b"AUTH s3cret\r\n").unwrap();
    half.write_all(b"AUTH s3cret\r\n*2\r\n$3\r\nGET\r\n$1")
        .unwrap();
    let t = Instant::now();
    assert!(
        closed_within(&mut quiet, Duration::from_secs(6)),
        "the quiet client"
    );
    assert!(
        closed_within(&mut half, Duration::from_secs(6)),
        "the half-sent request"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "closed before its timeout"
    );

    // The silent ones: the oldest went as newer ones came, the rest end
    // once they have had their ten seconds to authenticate.
    let mut open = 0;
    for s in silent.iter_mut().rev().take(50) {
        if !closed_within(s, Duration::from_secs(14)) {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "unauthenticated connections outlived their deadline"
    );
    let log = kvs.server.log();
    let lines = log.lines().count();
    if std::env::var_os("KVS_SHOW_LOG").is_some() {
        eprintln!("{log}");
    }
    assert!(
        lines < 200,
        "{lines} log lines for 1,100 connections:\n{log}"
    );
    assert!(log.contains("since the last report"), "{log}");
    eprintln!("1,100 silent connections: {lines} log lines");
}

#[test]
fn an_unauthenticated_connection_has_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "s3cret\n").unwrap();
    let kvs = RespServer::start(&[], &["--requirepass-file", pass.to_str().unwrap()]);
    let addr = format!("127.0.0.1:{}", kvs.port);
    let mut silent = std::net::TcpStream::connect(&addr).unwrap();
    let mut authed = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::Write;
    authed.write_all(b"AUTH s3cret\r\n").unwrap();
    let t = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(15)));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(9),
        "closed after {took:?}, before its ten seconds"
    );
    // Without --timeout, one that authenticated may stay as long as it likes.
    assert!(!closed_within(&mut authed, Duration::from_secs(1)));
    kvs.server.wait_log("did not authenticate within 10 s");
}
