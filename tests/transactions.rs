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

/// A transaction sent in one write is answered in one write, as Redis
/// answers a read: MULTI's OK and the QUEUEDs wait for EXEC's reply (sent
/// apart, they woke the client twice; the first read saw only them).
#[test]
fn a_transaction_in_one_write_is_answered_in_one() {
    use std::io::Read;
    let kvs = RespServer::start(&[], &[]);
    let mut raw = kvs.raw();
    let want = "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:1\r\n";
    for round in 0..20 {
        raw.send(b"MULTI\r\nSET t 1\r\nINCR n\r\nEXEC\r\nDEL n\r\n");
        let mut first = vec![0u8; 4096];
        let n = raw.stream.read(&mut first).expect("read the replies");
        let got = String::from_utf8_lossy(&first[..n]).into_owned();
        assert!(
            got.starts_with(want),
            "round {round}: the first read had {got:?}, not all of {want:?}"
        );
        // DEL's reply may come in the same read or the next.
        let rest = ":1\r\n";
        if got.len() < want.len() + rest.len() {
            assert_eq!(raw.reply(), rest.as_bytes());
        }
    }
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

/// Commands the reactor answers itself (CONFIG, CLIENT, PUBLISH ...) are
/// queued and run in their places at EXEC, and checked when queued (an
/// unknown subcommand or a wrong argument count aborts EXEC), byte for byte
/// as redis-server answers the same requests.
#[test]
fn reactor_commands_run_inside_exec_as_in_redis() {
    let Some(redis) = common::resp::Redis::start("reactor_commands_run_inside_exec_as_in_redis")
    else {
        return;
    };
    let kvs = RespServer::start(&[], &[]);
    let mut ours = kvs.raw();
    let mut theirs = common::resp::Raw::unix(&redis.sock);
    let script: &[&[&str]] = &[
        &["MULTI"],
        &["SET", "foo", "bar"],
        &["CONFIG", "SET", "notify-keyspace-events", "Kx"],
        &["CONFIG", "GET", "notify-keyspace-events"],
        &["PUBLISH", "ch", "hello"],
        &["CLIENT", "SETNAME", "n1"],
        &["CLIENT", "GETNAME"],
        &["ECHO", "e"],
        &["GET", "foo"],
        &["EXEC"],
        &["CLIENT", "GETNAME"],
        // Checked when queued, as Redis checks them.
        &["MULTI"],
        &["CONFIG", "GET"],
        &["CLIENT", "NOSUCH"],
        &["SET", "foo", "baz"],
        &["EXEC"],
        &["GET", "foo"],
        &["MULTI"],
        &["SHUTDOWN"],
        &["EXEC"],
        // CONFIG SET takes pairs, and applies none if one is refused.
        &[
            "CONFIG",
            "SET",
            "notify-keyspace-events",
            "KA",
            "nosuch",
            "1",
        ],
        &["CONFIG", "GET", "notify-keyspace-events"],
        &[
            "CONFIG",
            "SET",
            "notify-keyspace-events",
            "E$",
            "notify-keyspace-events",
            "Kg",
        ],
        &["CONFIG", "GET", "notify-keyspace-events"],
        // Names are checked before values, as Redis checks them.
        &["CONFIG", "SET", "maxmemory", "1", "maxmemory", "2"],
        &["CONFIG", "SET", "databases", "2"],
        &[
            "CONFIG",
            "SET",
            "notify-keyspace-events",
            "Q",
            "databases",
            "2",
        ],
        &["CONFIG", "SET", "tracking-table-max-keys", "x"],
        &["CONFIG", "SET", "tracking-table-max-keys", "100"],
        &["CONFIG", "GET", "tracking-table-max-keys"],
    ];
    for cmd in script {
        ours.cmd(cmd);
        theirs.cmd(cmd);
        let (a, b) = (ours.reply(), theirs.reply());
        assert_eq!(
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b),
            "{cmd:?}"
        );
    }
    // A WATCHed key's change: nothing runs, the reactor's commands neither.
    let mut other = kvs.raw();
    assert_eq!(ours.ask(&["WATCH", "foo"]), "+OK\r\n");
    assert_eq!(other.ask(&["SET", "foo", "changed"]), "+OK\r\n");
    assert_eq!(ours.ask(&["MULTI"]), "+OK\r\n");
    assert_eq!(ours.ask(&["CLIENT", "SETNAME", "n2"]), "+QUEUED\r\n");
    assert_eq!(ours.ask(&["EXEC"]), "*-1\r\n");
    assert_eq!(ours.ask(&["CLIENT", "GETNAME"]), "$2\r\nn1\r\n");
    // What kvs does not queue is refused clearly, and aborts the EXEC.
    assert_eq!(ours.ask(&["MULTI"]), "+OK\r\n");
    assert_eq!(
        ours.ask(&["SUBSCRIBE", "x"]),
        "-ERR kvs does not queue 'subscribe' in a transaction\r\n"
    );
    assert!(ours.ask(&["EXEC"]).starts_with("-EXECABORT"));
}

/// SHUTDOWN stops the server as SIGTERM does: no reply, the connection
/// closes, the process exits 0.
#[test]
fn shutdown_stops_the_server() {
    let mut kvs = RespServer::start(&[], &[]);
    let mut c = kvs.raw();
    assert_eq!(
        c.ask(&["SHUTDOWN", "ABORT"]),
        "-ERR No shutdown in progress.\r\n"
    );
    assert_eq!(
        c.ask(&["SHUTDOWN", "NOSAVE", "SAVE"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(c.ask(&["SHUTDOWN", "LATER"]), "-ERR syntax error\r\n");
    assert!(kvs.server.running());
    c.cmd(&["SHUTDOWN", "NOSAVE", "NOW"]);
    assert!(c.closed_by_server());
    assert_eq!(c.rest(), "");
    let status = common::wait_bounded(&mut kvs.server.child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(kvs.server.log().contains("SHUTDOWN from RESP client"));
}
