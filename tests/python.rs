//! redis-py, the Python client, at its default settings (version 8 speaks
//! RESP3 from its first command) against the real server: commands, a
//! `pipeline()` (a transaction), `scan_iter`, a keyspace subscription, and
//! a WATCH conflict made by a FIFO client. Skipped, saying so, where
//! python3 or redis-py is missing (`.ci/run` installs redis-py into a
//! private folder and points `PYTHONPATH` at it).

mod common;

use common::resp::RespServer;
use common::{session, write};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = r#"
import sys, time, redis
r = redis.Redis(unix_socket_path=sys.argv[1], socket_timeout=10)
print("protocol", r.connection_pool.connection_kwargs.get("protocol"), flush=True)
assert r.ping()
assert r.set("a", "1") and r.get("a") == b"1" and r.get("nope") is None
assert r.mget("a", "nope") == [b"1", None]
p = r.pipeline()
p.set("b", "2").get("b").mget("a", "b")
assert p.execute() == [True, b"2", [b"1", b"2"]], "pipeline"
assert sorted(r.scan_iter()) == [b"a", b"b"], "scan_iter"
ps = r.pubsub()
ps.psubscribe("__keyspace@0__:*")
m = ps.get_message(timeout=5)
assert m and m["type"] == "psubscribe", m
r.set("c", "3")
m = ps.get_message(timeout=5)
assert m and m["type"] == "pmessage" and m["channel"] == b"__keyspace@0__:c" and m["data"] == b"set", m
with r.pipeline() as w:
    w.watch("w")
    print("WATCHING", flush=True)
    sys.stdin.readline()
    w.multi()
    w.set("w", "mine")
    try:
        w.execute()
        print("NO CONFLICT", flush=True)
    except redis.WatchError:
        print("CONFLICT", flush=True)
assert r.get("w") == b"fifo"
print("DONE", flush=True)
"#;

/// Whether python3 has redis-py of at least major version `major`.
fn redis_py(major: u32) -> bool {
    let check = format!(
        "import redis, redis.connection, sys; sys.exit(0 if int(redis.__version__.split('.')[0]) >= {major} else 1)"
    );
    Command::new("python3")
        .args(["-c", &check])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `script` with `arg`, answering each line it prints through
/// `on_line` (which may write to its stdin), until it prints `DONE`.
/// Returns every line; panics with its stderr if it stops first or takes
/// over 30 s.
fn drive(script: &str, arg: &str, mut on_line: impl FnMut(&str, &mut dyn Write)) -> Vec<String> {
    let mut child = Command::new("python3")
        .args(["-c", script, arg])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut lines = Vec::new();
    loop {
        let left = Duration::from_secs(30).saturating_sub(started.elapsed());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("redis-py stopped after {lines:?}:\n{err}");
        };
        on_line(&line, &mut stdin);
        let done = line == "DONE";
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.wait();
    lines
}

#[test]
fn redis_py_at_its_defaults() {
    if !redis_py(5) {
        eprintln!("SKIPPED (redis_py_at_its_defaults): python3 with redis-py >= 5 is not here (.ci/run installs it)");
        return;
    }
    let kvs = RespServer::start(&[], &[]);
    let mut fifo = session("py", &kvs.server.fifo);
    let sock = kvs.sock.to_str().expect("utf-8 path");
    let lines = drive(SCRIPT, sock, |line, stdin| {
        if line == "WATCHING" {
            assert_eq!(fifo.ask(write("w", "fifo")), b'0');
            stdin.write_all(b"go\n").expect("to python");
        }
    });
    assert!(lines.contains(&"CONFLICT".to_string()), "{lines:?}");
    eprintln!("redis-py: {}", lines[0]);
}

/// redis-py's own client-side cache (`cache_config`, RESP3, TCP only in
/// redis-py): a second GET is answered from the local cache, and a FIFO
/// client's WRITE of the key invalidates it, so the next GET sees the new
/// value. Without invalidations the cached value would be returned forever.
const CACHE_SCRIPT: &str = r#"
import sys, time, redis
from redis.cache import CacheConfig
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=10,
                protocol=3, cache_config=CacheConfig())
other = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=10)
assert other.set("k", "one")
assert r.get("k") == b"one"
cache = r.get_cache()
assert cache.size == 1, cache.size
before = other.info("stats")["total_commands_processed"]
assert r.get("k") == b"one"
after = other.info("stats")["total_commands_processed"]
# Only the INFO itself reached the server: the GET was a cache hit.
print("HIT" if after - before == 1 else "MISS %d" % (after - before), flush=True)
print("CACHED", flush=True)
sys.stdin.readline()
deadline = time.time() + 5
while r.get("k") != b"fifo" and time.time() < deadline:
    time.sleep(0.01)
print("FRESH" if r.get("k") == b"fifo" else "STALE", flush=True)
print("DONE", flush=True)
"#;

#[test]
fn redis_py_client_side_cache_hears_a_fifo_write() {
    if !redis_py(6) {
        eprintln!("SKIPPED (redis_py_client_side_cache_hears_a_fifo_write): python3 with redis-py >= 6 is not here (.ci/run installs it)");
        return;
    }
    let kvs = RespServer::start(&[], &[]);
    let mut fifo = session("pycache", &kvs.server.fifo);
    let lines = drive(CACHE_SCRIPT, &kvs.port.to_string(), |line, stdin| {
        if line == "CACHED" {
            assert_eq!(fifo.ask(write("k", "fifo")), b'0');
            stdin.write_all(b"go\n").expect("to python");
        }
    });
    assert!(lines.contains(&"HIT".to_string()), "{lines:?}");
    assert!(lines.contains(&"FRESH".to_string()), "{lines:?}");
}
