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

fn redis_py() -> bool {
    Command::new("python3")
        .args([
            "-c",
            "import redis, sys; sys.exit(0 if int(redis.__version__.split('.')[0]) >= 5 else 1)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn redis_py_at_its_defaults() {
    if !redis_py() {
        eprintln!("SKIPPED (redis_py_at_its_defaults): python3 with redis-py >= 5 is not here (.ci/run installs it)");
        return;
    }
    let kvs = RespServer::start(&[], &[]);
    let mut fifo = session("py", &kvs.server.fifo);
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(&kvs.sock)
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
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("redis-py stopped after {lines:?}:\n{err}");
        };
        if line == "WATCHING" {
            assert_eq!(fifo.ask(write("w", "fifo")), b'0');
            stdin.write_all(b"go\n").expect("to python");
        }
        let done = line == "DONE";
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.wait();
    assert!(lines.contains(&"CONFLICT".to_string()), "{lines:?}");
    eprintln!("redis-py: {}", lines[0]);
}
