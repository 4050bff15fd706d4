//! Key expiry end to end (issue 19, goal 4): a key is gone the moment its
//! deadline passes, whoever looks, and its going is a change every kind of
//! subscriber hears of, even when nobody reads the key (the active cycle);
//! deadlines are absolute and survive kill -9, a restart and compaction;
//! a job never sees an expired key.

mod common;

use common::resp::{Raw, RespServer};
use common::{run_kvs, session};
use kvs::protocol::fifo::Request;
use redis::Commands;
use std::path::Path;
use std::time::{Duration, Instant};

fn data_args<'a>(dir: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--data-dir", dir.to_str().unwrap()];
    v.extend_from_slice(extra);
    v
}

#[test]
fn an_expired_key_is_gone_for_every_reader_and_every_subscriber_hears_it() {
    let kvs = RespServer::start(&[], &[]);
    let mut con = kvs.con();
    con.set::<_, _, ()>("k", "v").unwrap();
    // A FIFO subscriber, a RESP keyspace and key-event subscriber, and a
    // tracking client that read the key.
    let mut fifo = session("exp", &kvs.server.fifo);
    assert_eq!(fifo.ask(Request::Subscribe("k".into())), b'1');
    let mut sub = Raw::unix(&kvs.sock);
    sub.cmd(&["PSUBSCRIBE", "__keyspace@0__:k", "__keyevent@0__:expired"]);
    sub.reply();
    sub.reply();
    let mut tracker = Raw::unix(&kvs.sock);
    assert!(tracker.ask(&["HELLO", "3"]).contains("proto"));
    assert_eq!(tracker.ask(&["CLIENT", "TRACKING", "ON"]), "+OK\r\n");
    assert_eq!(tracker.ask(&["GET", "k"]), "$1\r\nv\r\n");

    let set_at = Instant::now();
    assert_eq!(
        redis::cmd("PEXPIRE")
            .arg("k")
            .arg(300)
            .query::<i64>(&mut con)
            .unwrap(),
        1
    );
    // The deadline is a change for RESP (`expire`), not for the FIFO
    // client, whose value did not change.
    let m = String::from_utf8_lossy(&sub.reply()).into_owned();
    assert!(
        m.contains("__keyspace@0__:k") && m.contains("expire"),
        "{m}"
    );
    assert!(String::from_utf8_lossy(&tracker.reply()).contains("invalidate"));
    assert_eq!(tracker.ask(&["GET", "k"]), "$1\r\nv\r\n");

    // Nobody reads the key: the active cycle takes it, and everyone hears.
    assert_eq!(fifo.note(), ("k".to_string(), "DELETED".to_string()));
    let took = set_at.elapsed();
    assert!(took >= Duration::from_millis(290), "gone early: {took:?}");
    let m = String::from_utf8_lossy(&sub.reply()).into_owned();
    assert!(
        m.contains("__keyspace@0__:k") && m.ends_with("$7\r\nexpired\r\n"),
        "{m}"
    );
    let m = String::from_utf8_lossy(&sub.reply()).into_owned();
    assert!(
        m.contains("__keyevent@0__:expired") && m.ends_with("$1\r\nk\r\n"),
        "{m}"
    );
    assert!(String::from_utf8_lossy(&tracker.reply()).contains("invalidate"));
    assert_eq!(con.get::<_, Option<String>>("k").unwrap(), None);
    assert_eq!(con.exists::<_, i64>("k").unwrap(), 0);
    assert_eq!(
        redis::cmd("TTL").arg("k").query::<i64>(&mut con).unwrap(),
        -2
    );
    let answer = fifo.conn.request(&Request::Read("k".into())).unwrap();
    assert_eq!(answer.code, b'1', "a FIFO READ finds it absent");
}

#[test]
fn a_key_is_absent_the_moment_its_deadline_passes() {
    // Before any cycle could take it: every read checks the deadline.
    let kvs = RespServer::start(&[], &[]);
    let mut con = kvs.con();
    for i in 0..50 {
        let key = format!("k{i}");
        redis::cmd("SET")
            .arg(&key)
            .arg("v")
            .arg("PX")
            .arg(30)
            .exec(&mut con)
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(30);
        loop {
            let got: Option<String> = con.get(&key).unwrap();
            let now = Instant::now();
            if got.is_none() {
                // Never before its time (the server's clock started it a
                // little later than ours did).
                assert!(
                    now + Duration::from_millis(5) >= deadline,
                    "{key} went early"
                );
                break;
            }
            assert!(
                now < deadline + Duration::from_millis(200),
                "{key} outlived its deadline"
            );
        }
    }
    let keys: Vec<String> = con.keys("*").unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[test]
fn deadlines_survive_kill_9_restarts_and_compaction_and_are_not_extended() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A small compaction threshold: the deadlines pass through snapshots.
    let args = data_args(&data, &["--compact-at", "4096", "--fsync", "always"]);
    let mut kvs = RespServer::start(&[], &args);
    let mut con = kvs.con();
    redis::cmd("SET")
        .arg("long")
        .arg("v")
        .arg("EX")
        .arg(1000)
        .exec(&mut con)
        .unwrap();
    redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(700)
        .exec(&mut con)
        .unwrap();
    redis::cmd("SET")
        .arg("kept")
        .arg("1")
        .arg("EX")
        .arg(500)
        .exec(&mut con)
        .unwrap();
    // INCR keeps the deadline, and the log must say so.
    assert_eq!(con.incr::<_, _, i64>("kept", 1).unwrap(), 2);
    redis::cmd("SET")
        .arg("forever")
        .arg("v")
        .exec(&mut con)
        .unwrap();
    redis::cmd("SET")
        .arg("gone")
        .arg("v")
        .arg("EX")
        .arg(100)
        .exec(&mut con)
        .unwrap();
    redis::cmd("PERSIST").arg("gone").exec(&mut con).unwrap();
    redis::cmd("EXPIRE")
        .arg("gone")
        .arg(100)
        .exec(&mut con)
        .unwrap();
    redis::cmd("SET")
        .arg("gone")
        .arg("plain")
        .exec(&mut con)
        .unwrap(); // no deadline now
    for i in 0..200 {
        // Enough to compact a few times.
        con.set::<_, _, ()>(format!("filler{i}"), "x".repeat(64))
            .unwrap();
    }
    let before: i64 = redis::cmd("PEXPIRETIME")
        .arg("long")
        .query(&mut con)
        .unwrap();
    // The deadlines set before a compaction now live in its snapshot.
    let started = Instant::now();
    while !std::fs::read_dir(&data).unwrap().flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.starts_with("snapshot-") && name.ends_with(".kvs")
    }) {
        assert!(started.elapsed() < Duration::from_secs(10), "no compaction");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = kvs.server.child.kill(); // SIGKILL
    let _ = kvs.server.child.wait();
    drop(con);
    drop(kvs);
    std::thread::sleep(Duration::from_millis(800));

    let kvs = RespServer::start(&[], &args);
    let mut con = kvs.con();
    let after: i64 = redis::cmd("PEXPIRETIME")
        .arg("long")
        .query(&mut con)
        .unwrap();
    assert_eq!(after, before, "the same absolute deadline");
    let ttl: i64 = redis::cmd("TTL").arg("long").query(&mut con).unwrap();
    assert!((990..=1000).contains(&ttl), "{ttl}");
    assert_eq!(
        con.get::<_, Option<String>>("short").unwrap(),
        None,
        "expired while down"
    );
    assert_eq!(
        con.get::<_, Option<String>>("kept").unwrap().as_deref(),
        Some("2")
    );
    let kept: i64 = redis::cmd("TTL").arg("kept").query(&mut con).unwrap();
    assert!(
        (490..=500).contains(&kept),
        "INCR kept the deadline: {kept}"
    );
    for key in ["forever", "gone"] {
        let t: i64 = redis::cmd("TTL").arg(key).query(&mut con).unwrap();
        assert_eq!(t, -1, "{key}");
    }
}

#[test]
fn a_job_never_sees_an_expired_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let mut kvs = RespServer::start(&[], &data_args(&data, &[]));
        let mut con = kvs.con();
        redis::cmd("SET")
            .arg("brief")
            .arg("v")
            .arg("PX")
            .arg(200)
            .exec(&mut con)
            .unwrap();
        redis::cmd("SET")
            .arg("stays")
            .arg("v")
            .arg("EX")
            .arg(100)
            .exec(&mut con)
            .unwrap();
        assert!(kvs.server.stop().success());
    }
    std::thread::sleep(Duration::from_millis(300));
    let jobs = tempfile::tempdir().unwrap();
    std::fs::write(jobs.path().join("r.job"), "READ [brief,stays]\nSHOW\n").unwrap();
    let out = run_kvs(&[
        jobs.path().to_str().unwrap(),
        "1",
        "1",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let text = std::fs::read_to_string(jobs.path().join("r.out")).unwrap();
    assert_eq!(text, "[(brief,KVSERROR)(stays,v)]\n(stays, v)\n");
}
