//! MULTI / EXEC / DISCARD / WATCH against the real server, with the
//! `redis` crate (a real client library) and raw RESP: Redis's replies,
//! atomicity against concurrent writers, WATCH seeing changes from every
//! source (RESP, FIFO clients, job files), and a transaction kept whole
//! across a restart.

mod common;

use common::resp::RespServer;
use common::{session, write};
use redis::Commands;
use std::time::{Duration, Instant};

#[test]
fn transactions_answer_as_redis_does() {
    let kvs = RespServer::start(&[], &[]);
    let mut raw = kvs.raw();
    assert_eq!(raw.ask(&["EXEC"]), "-ERR EXEC without MULTI\r\n");
    assert_eq!(raw.ask(&["DISCARD"]), "-ERR DISCARD without MULTI\r\n");
    assert_eq!(raw.ask(&["MULTI"]), "+OK\r\n");
    assert_eq!(
        raw.ask(&["MULTI"]),
        "-ERR MULTI calls can not be nested\r\n"
    );
    assert_eq!(raw.ask(&["SET", "a", "1"]), "+QUEUED\r\n");
    assert_eq!(raw.ask(&["MGET", "a", "b"]), "+QUEUED\r\n");
    assert_eq!(raw.ask(&["PING"]), "+QUEUED\r\n");
    assert_eq!(
        raw.ask(&["WATCH", "a"]),
        "-ERR WATCH inside MULTI is not allowed\r\n"
    );
    assert_eq!(
        raw.ask(&["EXEC"]),
        "*3\r\n+OK\r\n*2\r\n$1\r\n1\r\n$-1\r\n+PONG\r\n"
    );
    // An error while queuing: EXEC runs nothing.
    assert_eq!(raw.ask(&["MULTI"]), "+OK\r\n");
    assert_eq!(raw.ask(&["SET", "a", "2"]), "+QUEUED\r\n");
    assert!(raw
        .ask(&["NOSUCH"])
        .starts_with("-ERR unknown command 'NOSUCH'"));
    assert_eq!(
        raw.ask(&["GET"]),
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert_eq!(
        raw.ask(&["EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(raw.ask(&["GET", "a"]), "$1\r\n1\r\n");
    // DISCARD drops what was queued.
    assert_eq!(raw.ask(&["MULTI"]), "+OK\r\n");
    assert_eq!(raw.ask(&["SET", "a", "3"]), "+QUEUED\r\n");
    assert_eq!(raw.ask(&["DISCARD"]), "+OK\r\n");
    assert_eq!(raw.ask(&["GET", "a"]), "$1\r\n1\r\n");
    // A pipelined transaction in one write.
    raw.send(b"MULTI\r\nSET p 1\r\nDEL p\r\nEXISTS p\r\nEXEC\r\nGET a\r\n");
    let replies: Vec<String> = (0..6)
        .map(|_| String::from_utf8_lossy(&raw.reply()).into_owned())
        .collect();
    assert_eq!(
        replies,
        [
            "+OK\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n",
            "*3\r\n+OK\r\n:1\r\n:0\r\n",
            "$1\r\n1\r\n"
        ]
    );
}

#[test]
fn the_redis_crate_runs_atomic_pipelines() {
    let kvs = RespServer::start(&[], &[]);
    let mut con = kvs.con();
    let (a, b): (String, String) = redis::pipe()
        .atomic()
        .set("x", "1")
        .ignore()
        .set("y", "2")
        .ignore()
        .get("x")
        .get("y")
        .query(&mut con)
        .unwrap();
    assert_eq!((a.as_str(), b.as_str()), ("1", "2"));
}

#[test]
fn watch_sees_changes_from_every_source() {
    let job = "WAIT 1500\nWRITE [(jobkey,from-job)]\n";
    let kvs = RespServer::start(&[("late.job", job)], &[]);
    let mut raw = kvs.raw();
    let mut other = kvs.raw();
    let exec = |raw: &mut common::resp::Raw, key: &str| -> String {
        assert_eq!(raw.ask(&["MULTI"]), "+OK\r\n");
        assert_eq!(raw.ask(&["SET", key, "mine"]), "+QUEUED\r\n");
        raw.ask(&["EXEC"])
    };
    // Untouched: runs.
    assert_eq!(raw.ask(&["WATCH", "k"]), "+OK\r\n");
    assert_eq!(exec(&mut raw, "k"), "*1\r\n+OK\r\n");
    // Another RESP client, even writing the same value.
    assert_eq!(raw.ask(&["WATCH", "k"]), "+OK\r\n");
    assert_eq!(other.ask(&["SET", "k", "mine"]), "+OK\r\n");
    assert_eq!(exec(&mut raw, "k"), "*-1\r\n");
    // A deletion.
    assert_eq!(raw.ask(&["WATCH", "k"]), "+OK\r\n");
    assert_eq!(other.ask(&["DEL", "k"]), ":1\r\n");
    assert_eq!(exec(&mut raw, "k"), "*-1\r\n");
    assert_eq!(raw.ask(&["GET", "k"]), "$-1\r\n");
    // A FIFO client.
    let mut fifo = session("w", &kvs.server.fifo);
    assert_eq!(raw.ask(&["WATCH", "f"]), "+OK\r\n");
    assert_eq!(fifo.ask(write("f", "1")), b'0');
    assert_eq!(exec(&mut raw, "f"), "*-1\r\n");
    // UNWATCH forgets.
    assert_eq!(raw.ask(&["WATCH", "f"]), "+OK\r\n");
    assert_eq!(raw.ask(&["UNWATCH"]), "+OK\r\n");
    assert_eq!(fifo.ask(write("f", "2")), b'0');
    assert_eq!(exec(&mut raw, "f"), "*1\r\n+OK\r\n");
    // A job file, watched before its WRITE lands.
    assert_eq!(raw.ask(&["WATCH", "jobkey"]), "+OK\r\n");
    let start = Instant::now();
    while other.ask(&["GET", "jobkey"]) == "$-1\r\n" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the job never wrote"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(exec(&mut raw, "jobkey"), "*-1\r\n");
    assert_eq!(raw.ask(&["GET", "jobkey"]), "$8\r\nfrom-job\r\n");
}

/// Two keys set together by transactions, read together by MGET (atomic
/// itself) from another client: never seen apart. Without the transaction
/// the two SETs would land one at a time.
#[test]
fn a_transaction_is_never_seen_half_done() {
    let kvs = RespServer::start(&[], &[]);
    let mut writer = kvs.con();
    let mut reader = kvs.con();
    let _: () = writer.mset(&[("x", "0"), ("y", "0")]).unwrap();
    let t = std::thread::spawn(move || {
        for i in 1..=2000 {
            let _: () = redis::pipe()
                .atomic()
                .set("x", i)
                .ignore()
                .set("y", i)
                .ignore()
                .query(&mut writer)
                .unwrap();
        }
    });
    let mut reads = 0;
    while !t.is_finished() {
        let (x, y): (i64, i64) = redis::cmd("MGET")
            .arg("x")
            .arg("y")
            .query(&mut reader)
            .unwrap();
        assert_eq!(x, y, "saw a transaction half done");
        reads += 1;
    }
    t.join().unwrap();
    assert!(reads > 10, "only {reads} reads raced the writer");
}

#[test]
fn a_transaction_comes_back_whole_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_string();
    let kvs = RespServer::start(&[], &["--data-dir", &dir, "--fsync", "always"]);
    let mut raw = kvs.raw();
    raw.send(b"MULTI\r\nSET a 1\r\nSET b 2\r\nDEL a\r\nSET c 3\r\nEXEC\r\n");
    let last = (0..6).map(|_| raw.reply()).last().unwrap();
    assert_eq!(last, b"*4\r\n+OK\r\n+OK\r\n:1\r\n+OK\r\n");
    drop(raw);
    let mut kvs = kvs;
    kvs.server.child.kill().unwrap();
    let _ = kvs.server.child.wait();
    drop(kvs);
    let kvs = RespServer::start(&[], &["--data-dir", &dir]);
    let mut raw = kvs.raw();
    assert_eq!(
        raw.ask(&["MGET", "a", "b", "c"]),
        "*3\r\n$-1\r\n$1\r\n2\r\n$1\r\n3\r\n"
    );
}
