//! RESP end to end, against the real `kvs` binary: a real Redis client
//! library (the `redis` crate), raw bytes where a library would not send
//! them, FIFO and RESP clients hearing each other's changes, and, where
//! redis-server is installed, kvs's replies next to Redis's own.

mod common;

use common::resp::{Raw, Redis, RespServer};
use common::{session, write, Server};
use kvs::protocol::fifo::Request;
use redis::Commands;
use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn redis_crate_reads_and_writes() {
    let kvs = RespServer::start(&[], &[]);
    let mut con = kvs.con();
    let _: () = con.set("a", "1").unwrap();
    assert_eq!(con.get::<_, Option<String>>("a").unwrap(), Some("1".into()));
    assert_eq!(con.get::<_, Option<String>>("none").unwrap(), None);
    let _: () = con.mset(&[("b", "2"), ("c", "3")]).unwrap();
    let got: Vec<Option<String>> = con.mget(&["a", "b", "x", "c"]).unwrap();
    assert_eq!(
        got,
        vec![Some("1".into()), Some("2".into()), None, Some("3".into())]
    );
    assert_eq!(con.exists::<_, i64>(&["a", "a", "x"]).unwrap(), 2);
    assert_eq!(con.strlen::<_, i64>("a").unwrap(), 1);
    assert_eq!(con.del::<_, i64>(&["a", "b", "x"]).unwrap(), 2);
    assert_eq!(con.unlink::<_, i64>(&["c"]).unwrap(), 1);
    assert!(con.set_nx::<_, _, bool>("n", "1").unwrap());
    assert!(!con.set_nx::<_, _, bool>("n", "2").unwrap());
    assert_eq!(con.getset::<_, _, String>("n", "3").unwrap(), "1");
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(dbsize, 1);

    // Keys and values are any bytes, as in Redis.
    let long = "x".repeat(100_000);
    con.set::<_, _, ()>("a key, (with) [brackets]", &long)
        .unwrap();
    assert_eq!(
        con.get::<_, String>("a key, (with) [brackets]").unwrap(),
        long
    );
    let binary: Vec<u8> = (0..=255u8).chain([0, 0, b'\r', b'\n']).collect();
    con.set::<_, _, ()>(&binary[..], &binary[..]).unwrap();
    assert_eq!(con.get::<_, Vec<u8>>(&binary[..]).unwrap(), binary);
    con.set::<_, _, ()>("", "").unwrap();
    assert_eq!(con.exists::<_, i64>("").unwrap(), 1);
    assert_eq!(con.get::<_, Vec<u8>>("").unwrap(), b"");
    assert_eq!(
        con.del::<_, i64>(&["a key, (with) [brackets]", ""])
            .unwrap(),
        2
    );
    con.del::<_, i64>(&binary[..]).unwrap();
    // The lock every Redis tutorial teaches.
    let got: Option<String> = redis::cmd("SET")
        .arg("lock")
        .arg("me")
        .arg("NX")
        .arg("EX")
        .arg(10)
        .query(&mut con)
        .unwrap();
    assert_eq!(got.as_deref(), Some("OK"));
    let again: Option<String> = redis::cmd("SET")
        .arg("lock")
        .arg("you")
        .arg("NX")
        .arg("EX")
        .arg(10)
        .query(&mut con)
        .unwrap();
    assert_eq!(again, None, "the lock is held");
    assert_eq!(con.ttl::<_, i64>("lock").unwrap(), 10);
    con.del::<_, i64>("lock").unwrap();
    // A protocol past RESP3 is refused as Redis refuses it.
    let e = redis::cmd("HELLO").arg(4).exec(&mut con).unwrap_err();
    assert_eq!(e.code(), Some("NOPROTO"));
    assert_eq!(con.get::<_, Option<String>>("k").unwrap(), None);
}

#[test]
fn pipelines_of_a_thousand_commands_over_tcp() {
    let kvs = RespServer::start(&[], &[]);
    let mut con = redis::Client::open(kvs.tcp_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.set(format!("p{i}"), i).ignore();
    }
    for i in (0..1000).step_by(100) {
        pipe.get(format!("p{i}"));
    }
    let got: Vec<i64> = pipe.query(&mut con).unwrap();
    assert_eq!(got, (0..1000).step_by(100).collect::<Vec<i64>>());
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.del(format!("p{i}"));
    }
    let removed: Vec<i64> = pipe.query(&mut con).unwrap();
    assert_eq!(removed, vec![1; 1000]);
}

/// INFO's count of batches handed to the store pool.
fn store_batches(raw: &mut Raw) -> u64 {
    raw.ask(&["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("kvs_store_batches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO stats has kvs_store_batches")
}

#[test]
fn a_pipeline_read_in_one_go_is_one_trip_to_the_store() {
    let kvs = RespServer::start(&[], &[]);
    let mut raw = kvs.raw();
    let before = store_batches(&mut raw);
    let mut bytes = Vec::new();
    for i in 0..1000 {
        let v = i.to_string();
        bytes.extend(kvs::protocol::resp::encode_request(&[
            b"SET",
            b"k",
            v.as_bytes(),
        ]));
    }
    raw.send(&bytes);
    for _ in 0..1000 {
        assert_eq!(raw.reply(), b"+OK\r\n");
    }
    let used = store_batches(&mut raw) - before;
    // 1,000 commands, about 30 KiB: a few reads, a batch each, never one
    // trip per command.
    assert!(used <= 10, "{used} batches for one pipeline of 1,000 SETs");
    assert_eq!(raw.ask(&["GET", "k"]), "$3\r\n999\r\n");
}

#[test]
fn keyspace_channels_and_patterns() {
    let kvs = RespServer::start(&[], &[]);
    let mut con = kvs.con();
    let mut listener = kvs.con();
    let mut sub = listener.as_pubsub();
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sub.subscribe("__keyspace@0__:k1").unwrap();
    sub.psubscribe("__keyevent@0__:*").unwrap();

    let _: () = con.set("k1", "v").unwrap();
    let _: () = con.del("k1").unwrap();
    let _: () = con.set("other", "1").unwrap();
    let n: i64 = con.publish("chat", "hi").unwrap();
    assert_eq!(n, 0, "nobody listens on chat");
    let _: () = redis::cmd("FLUSHALL").exec(&mut con).unwrap();
    let _: () = con.set("after", "1").unwrap();

    let mut seen = Vec::new();
    for _ in 0..6 {
        let m = sub.get_message().unwrap();
        let pattern: Option<String> = m.get_pattern().ok();
        seen.push((
            pattern,
            m.get_channel_name().to_owned(),
            m.get_payload::<String>().unwrap(),
        ));
    }
    let ev = |c: &str, p: &str| {
        (
            Some("__keyevent@0__:*".to_owned()),
            format!("__keyevent@0__:{c}"),
            p.to_owned(),
        )
    };
    let space = |p: &str| (None, "__keyspace@0__:k1".to_owned(), p.to_owned());
    assert_eq!(
        seen,
        vec![
            space("set"),
            ev("set", "k1"),
            space("del"),
            ev("del", "k1"),
            ev("set", "other"),
            // FLUSHALL says nothing, as in Redis.
            ev("set", "after"),
        ]
    );
}

#[test]
fn publish_reaches_channel_and_pattern_subscribers() {
    let kvs = RespServer::start(&[], &[]);
    let mut a = kvs.raw();
    assert_eq!(
        a.ask(&["SUBSCRIBE", "news"]),
        "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    let mut b = kvs.raw();
    b.ask(&["PSUBSCRIBE", "n*"]);
    let mut c = kvs.raw();
    assert_eq!(c.ask(&["PUBLISH", "news", "hello"]), ":2\r\n");
    assert_eq!(
        String::from_utf8_lossy(&a.reply()),
        "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&b.reply()),
        "*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
    );
    // Subscribed: only pub/sub commands and PING.
    assert!(a.ask(&["GET", "x"]).starts_with("-ERR Can't execute 'get'"));
    assert_eq!(a.ask(&["PING"]), "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    assert_eq!(
        a.ask(&["UNSUBSCRIBE"]),
        "*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:0\r\n"
    );
    assert_eq!(a.ask(&["GET", "x"]), "$-1\r\n");
}

/// CONFIG SET requirepass, as in Redis: new connections must AUTH (those
/// open stay logged in), a binary password works, and an empty one takes
/// the password away for everyone.
#[test]
fn config_set_requirepass_sets_and_clears_the_password() {
    let kvs = RespServer::start(&[], &[]);
    let mut admin = kvs.raw();
    assert_eq!(
        admin.ask(&["CONFIG", "SET", "requirepass", "abc\0def"]),
        "+OK\r\n"
    );
    assert_eq!(admin.ask(&["GET", "k"]), "$-1\r\n");
    let mut late = kvs.raw();
    assert_eq!(
        late.ask(&["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert!(late.ask(&["AUTH", "abc"]).starts_with("-WRONGPASS"));
    assert_eq!(late.ask(&["AUTH", "abc\0def"]), "+OK\r\n");
    let mut waiting = kvs.raw();
    assert!(waiting.ask(&["GET", "k"]).starts_with("-NOAUTH"));
    assert_eq!(admin.ask(&["CONFIG", "SET", "requirepass", ""]), "+OK\r\n");
    assert_eq!(waiting.ask(&["GET", "k"]), "$-1\r\n");
    assert_eq!(kvs.raw().ask(&["GET", "k"]), "$-1\r\n");
    assert!(kvs
        .raw()
        .ask(&["AUTH", "x"])
        .starts_with("-ERR AUTH <password> called without any password configured"));
}

#[test]
fn auth_is_required_when_a_password_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "s3cret\n").unwrap();
    let kvs = RespServer::start(&[], &["--requirepass-file", pass.to_str().unwrap()]);
    let mut raw = kvs.raw();
    // As Redis 7: only AUTH, HELLO and QUIT before AUTH.
    assert_eq!(raw.ask(&["PING"]), "-NOAUTH Authentication required.\r\n");
    assert_eq!(
        raw.ask(&["GET", "a"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(raw.ask(&["AUTH", "a", "b", "c"]), "-ERR syntax error\r\n");
    assert_eq!(
        raw.ask(&["AUTH", "wrong"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        raw.ask(&["AUTH", "nobody", "s3cret"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(raw.ask(&["AUTH", "s3cret"]), "+OK\r\n");
    assert_eq!(raw.ask(&["GET", "a"]), "$-1\r\n");
    // A failed AUTH leaves an authenticated connection authenticated.
    assert!(raw.ask(&["AUTH", "wrong"]).starts_with("-WRONGPASS"));
    assert_eq!(raw.ask(&["GET", "a"]), "$-1\r\n");
    // Before AUTH, a stranger cannot make the server buffer much.
    for (request, says) in [
        (&b"*100\r\n"[..], "unauthenticated multibulk length"),
        (b"*1\r\n$100000\r\n", "unauthenticated bulk length"),
    ] {
        let mut stranger = kvs.raw();
        stranger.send(request);
        assert!(stranger.closed_by_server(), "{says}");
        assert_eq!(stranger.rest(), format!("-ERR Protocol error: {says}\r\n"));
    }

    let mut hello = kvs.raw();
    assert!(hello
        .ask(&["HELLO", "2", "AUTH", "default", "s3cret"])
        .starts_with("*14\r\n$6\r\nserver\r\n"));
    assert_eq!(hello.ask(&["SET", "a", "1"]), "+OK\r\n");

    // The library: password in the URL works, none fails.
    let url = format!("redis://:s3cret@127.0.0.1:{}/", kvs.port);
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    assert_eq!(con.get::<_, String>("a").unwrap(), "1");
    let mut anon = redis::Client::open(kvs.tcp_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let e = anon.get::<_, String>("a").unwrap_err();
    assert_eq!(e.code(), Some("NOAUTH"));
}

#[test]
fn a_client_leaving_mid_pipeline_harms_nobody() {
    let kvs = RespServer::start(&[], &[]);
    let mut raw = kvs.raw();
    let mut bytes = Vec::new();
    for i in 0..500 {
        bytes.extend(kvs::protocol::resp::encode_request(&[
            b"SET",
            b"mid",
            i.to_string().as_bytes(),
        ]));
    }
    bytes.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$3\r\nmid\r\n$4\r\nhal");
    raw.send(&bytes);
    drop(raw);
    let mut other = kvs.raw();
    // The 500 SETs all land.
    other.ask_until(&["GET", "mid"], "$3\r\n499\r\n");
    // Its slot was freed: one client is connected, this one.
    other.ask_until_contains(
        &["INFO", "clients"],
        "connected_clients:1\r\n",
        Duration::from_secs(10),
    );
}

#[test]
fn fifo_and_resp_clients_hear_each_other() {
    let kvs = RespServer::start(&[], &[]);
    let mut con = kvs.con();
    let _: () = con.set("shared", "0").unwrap();

    // A FIFO subscriber hears a RESP SET as an 82-byte notification.
    let mut fifo = session("cross", &kvs.server.fifo);
    assert_eq!(fifo.ask(Request::Subscribe("shared".into())), b'1');
    let _: () = con.set("shared", "from-resp").unwrap();
    assert_eq!(fifo.note(), ("shared".into(), "from-resp".into()));
    let _: () = con.del("shared").unwrap();
    assert_eq!(fifo.note(), ("shared".into(), "DELETED".into()));

    // A RESP keyspace subscriber hears a FIFO WRITE.
    let mut listener = kvs.con();
    let mut sub = listener.as_pubsub();
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sub.subscribe("__keyspace@0__:shared").unwrap();
    assert_eq!(fifo.ask(write("shared", "from-fifo")), b'0');
    let m = sub.get_message().unwrap();
    assert_eq!(m.get_channel_name(), "__keyspace@0__:shared");
    assert_eq!(m.get_payload::<String>().unwrap(), "set");
    assert_eq!(fifo.note(), ("shared".into(), "from-fifo".into()));
    assert_eq!(
        con.get::<_, String>("shared").unwrap(),
        "from-fifo",
        "one store for both"
    );
    // FLUSHALL deletes every key: a FIFO subscriber hears it, as it hears
    // every change to a value; RESP keyspace subscribers hear nothing, as
    // from Redis (the next message is the SET after it).
    let _: () = redis::cmd("FLUSHALL").exec(&mut con).unwrap();
    assert_eq!(fifo.note(), ("shared".into(), "DELETED".into()));
    let _: () = con.set("shared", "again").unwrap();
    let m = sub.get_message().unwrap();
    assert_eq!(m.get_payload::<String>().unwrap(), "set");
}

#[test]
fn a_job_file_write_reaches_fifo_and_resp_subscribers() {
    let job = "WRITE [(jobkey,0)]\nWAIT 3000\nWRITE [(jobkey,1)]\n";
    let kvs = RespServer::start(&[("slow.job", job)], &[]);
    let mut con = kvs.con();
    let start = Instant::now();
    while con.get::<_, Option<String>>("jobkey").unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut fifo = session("jobwatch", &kvs.server.fifo);
    assert_eq!(fifo.ask(Request::Subscribe("jobkey".into())), b'1');
    let mut listener = kvs.con();
    let mut sub = listener.as_pubsub();
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sub.psubscribe("__keyspace@0__:job*").unwrap();
    assert_eq!(fifo.note(), ("jobkey".into(), "1".into()));
    let m = sub.get_message().unwrap();
    assert_eq!(m.get_channel_name(), "__keyspace@0__:jobkey");
    assert_eq!(m.get_payload::<String>().unwrap(), "set");
}

#[test]
fn per_key_order_holds_across_protocols_under_concurrent_writers() {
    const EACH: usize = 200;
    let kvs = RespServer::start(&[], &[]);
    let mut con = kvs.con();
    let _: () = con.set("ord", "start").unwrap();
    let mut fifo_sub = session("ordsub", &kvs.server.fifo);
    assert_eq!(fifo_sub.ask(Request::Subscribe("ord".into())), b'1');
    let mut listener = kvs.con();
    let mut resp_sub = listener.as_pubsub();
    resp_sub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    resp_sub.subscribe("__keyspace@0__:ord").unwrap();

    let mut writers = Vec::new();
    for w in 0..2 {
        let url = kvs.url();
        writers.push(std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            for n in 0..EACH {
                let _: () = c.set("ord", format!("r{w}-{n}")).unwrap();
            }
        }));
        let fifo = kvs.server.fifo.clone();
        writers.push(std::thread::spawn(move || {
            let mut s = session(&format!("ordw{w}"), &fifo);
            for n in 0..EACH {
                assert_eq!(s.ask(write("ord", &format!("f{w}-{n}"))), b'0');
            }
        }));
    }
    for t in writers {
        t.join().unwrap();
    }
    // Each writer's values arrive in the order it wrote them.
    let mut last: std::collections::HashMap<String, usize> = Default::default();
    let mut final_value = String::new();
    for _ in 0..4 * EACH {
        let (k, v) = fifo_sub.note();
        assert_eq!(k, "ord");
        let (who, n) = v.split_once('-').unwrap();
        let n: usize = n.parse().unwrap();
        if let Some(&prev) = last.get(who) {
            assert!(n > prev, "{who}: {n} after {prev}");
        }
        last.insert(who.to_owned(), n);
        final_value = v;
    }
    assert_eq!(con.get::<_, String>("ord").unwrap(), final_value);
    for _ in 0..4 * EACH {
        let m = resp_sub.get_message().unwrap();
        assert_eq!(m.get_payload::<String>().unwrap(), "set");
    }
}

#[test]
fn hostile_requests_end_only_their_own_session() {
    let kvs = RespServer::start(&[], &[]);
    let mut bystander = kvs.raw();
    assert_eq!(bystander.ask(&["SET", "safe", "1"]), "+OK\r\n");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"*1\r\n$1099511627776\r\n".to_vec(), "invalid bulk length"),
        (b"*1\r\n$-5\r\n".to_vec(), "invalid bulk length"),
        (b"*1\r\n$abc\r\n".to_vec(), "invalid bulk length"),
        (b"*abc\r\n".to_vec(), "invalid multibulk length"),
        (b"*-\r\n".to_vec(), "invalid multibulk length"),
        (b"*1\r\n*1\r\n".repeat(50_000), "expected '$', got '*'"),
        (vec![b'A'; 100_000], "too big inline request"),
    ];
    for (bytes, want) in cases {
        let mut raw = kvs.raw();
        // The server may close before all is sent.
        let _ = raw.stream.write_all(&bytes);
        assert!(raw.closed_by_server(), "{want}: not closed");
        assert_eq!(raw.rest(), format!("-ERR Protocol error: {want}\r\n"));
        assert_eq!(bystander.ask(&["GET", "safe"]), "$1\r\n1\r\n");
    }

    // A request that never ends: cut off at the query buffer limit.
    let mut raw = kvs.raw();
    raw.send(b"*1048576\r\n");
    let element = b"$1\r\na\r\n".repeat(1024);
    let mut sent = 0;
    while sent < 4 << 20 {
        if raw.stream.write_all(&element).is_err() {
            break;
        }
        sent += element.len();
    }
    assert!(raw.closed_by_server());
    kvs.server.wait_log("query buffer limit");
    assert_eq!(bystander.ask(&["GET", "safe"]), "$1\r\n1\r\n");
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", kvs.server.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(rss_kib < 64 * 1024, "server RSS {rss_kib} KiB");
}

#[test]
fn a_subscriber_that_never_reads_is_cut_off() {
    let kvs = RespServer::start(&[], &["--output-buffer", "65536"]);
    let mut lazy = kvs.raw();
    lazy.ask(&["SUBSCRIBE", "__keyspace@0__:flood"]);
    let mut con = kvs.con();
    let mut pipe = redis::pipe();
    for i in 0..20_000 {
        pipe.set("flood", i).ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    kvs.server.wait_log("not reading");
    assert!(lazy.closed_by_server());
    assert_eq!(con.get::<_, i64>("flood").unwrap(), 19_999);
}

#[test]
fn sessions_of_both_kinds_share_the_limit() {
    let kvs = RespServer::start(&[], &["--max-sessions", "2"]);
    let _fifo = session("lim", &kvs.server.fifo);
    let mut one = kvs.raw();
    assert_eq!(one.ask(&["PING"]), "+PONG\r\n");
    let mut two = kvs.raw();
    assert!(two.closed_by_server());
    assert_eq!(two.rest(), "-ERR max number of clients reached\r\n");
}

#[test]
fn scan_walks_every_key_exactly_once() {
    let kvs = RespServer::start(&[], &[]);
    let mut con = kvs.con();
    let pairs: Vec<(String, String)> = (0..1000).map(|i| (format!("s{i}"), "v".into())).collect();
    let _: () = con.mset(&pairs).unwrap();
    let _: () = con.set("other", "v").unwrap();
    let mut seen = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("s*")
            .arg("COUNT")
            .arg(10)
            .query(&mut con)
            .unwrap();
        seen.extend(keys);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 1000, "no key twice");
    assert_eq!(unique.len(), 1000);
    let mut all: Vec<String> = con.keys("s1*").unwrap();
    all.sort();
    assert_eq!(all.len(), 111);
}

/// Runs a second server beside `kvs`, with its own registration FIFO
/// `reg` and the RESP socket `sock`, to its end.
fn second_server(kvs: &RespServer, reg: &str, sock: &std::path::Path) -> common::Output {
    common::run_kvs(&[
        kvs.server.jobs.to_str().unwrap(),
        "1",
        "1",
        kvs.server.dir.path().join(reg).to_str().unwrap(),
        "--resp-socket",
        sock.to_str().unwrap(),
    ])
}

#[test]
fn the_socket_is_guarded_and_removed() {
    let kvs = RespServer::start(&[], &[]);
    let mode = std::fs::metadata(&kvs.sock).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    // A second server on a live socket refuses to start.
    let out = second_server(&kvs, "reg2", &kvs.sock);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("another server is listening"),
        "{}",
        out.stderr
    );

    // A regular file is never replaced.
    let file = kvs.server.dir.path().join("file");
    std::fs::write(&file, "keep").unwrap();
    let out = second_server(&kvs, "reg3", &file);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("not a socket"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");

    // SIGUSR1 disconnects RESP clients too.
    let mut raw = kvs.raw();
    assert_eq!(raw.ask(&["PING"]), "+PONG\r\n");
    kvs.server.signal(nix::sys::signal::Signal::SIGUSR1);
    assert!(raw.closed_by_server());

    // A clean stop removes the socket; a dead server's socket is taken over.
    let mut kvs = kvs;
    let sock = kvs.sock.clone();
    assert!(kvs.server.stop().success());
    assert!(!sock.exists(), "socket removed on exit");
    let stale = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(stale); // bound, nobody answers: what kill -9 leaves
    let again = Server::start(&[], &["--resp-socket", sock.to_str().unwrap()]);
    let mut raw = Raw::unix(&sock);
    assert_eq!(raw.ask(&["PING"]), "+PONG\r\n");
    drop(again);
}

/// Commands whose replies must be byte for byte Redis's.
const SAME_AS_REDIS: &[&[&str]] = &[
    &["PING"],
    &["PING", "hi"],
    &["ECHO", "x"],
    &["SET", "k", "v"],
    &["SET", "k", "w", "NX"],
    &["SET", "k", "w", "XX", "GET"],
    &["SET", "k2", "w", "XX"],
    &["SET", "k", "v", "NX", "XX"],
    &["SET", "k", "v", "BOGUS"],
    &["GET", "k"],
    &["GET"],
    &["GET", "missing"],
    &["SETNX", "k", "z"],
    &["GETSET", "k", "v"],
    &["MSET", "a", "1", "b", "2"],
    &["MSET", "a"],
    &["MGET", "a", "nope", "b"],
    &["EXISTS", "a", "a", "nope"],
    &["TYPE", "a"],
    &["TYPE", "nope"],
    &["STRLEN", "k"],
    &["DEL", "a", "nope"],
    &["UNLINK", "b"],
    &["DBSIZE"],
    &["SELECT", "0"],
    &["SELECT", "x"],
    &["CLIENT", "SETNAME", "me"],
    &["CLIENT", "GETNAME"],
    &["CLIENT", "SETNAME", "a b"],
    &["CLIENT", "BOGUS"],
    &["NOSUCH", "a", "b"],
    &["NOSUCH"],
    &["AUTH", "x"],
    &["PUBSUB", "CHANNELS"],
    &["PUBSUB", "NUMSUB", "c1"],
    &["PUBSUB", "NUMPAT"],
    &["PUBSUB", "BOGUS"],
    &["CONFIG", "SET", "notify-keyspace-events", "KEA"],
    &["CONFIG", "GET", "notify-keyspace-events"],
    &["CONFIG", "SET", "notify-keyspace-events", "E$g"],
    &["CONFIG", "GET", "notify-keyspace-events"],
    &["CONFIG", "SET", "notify-keyspace-events", "Q"],
    &["FUNCTION", "FLUSH"],
    &["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"],
    &["COMMAND", "GETKEYS", "GET"],
    &["COMMAND", "GETKEYS", "PING"],
    &["COMMAND", "GETKEYS", "NOSUCH"],
    &["SUBSCRIBE", "c1", "c2"],
    &["PSUBSCRIBE", "p*"],
    &["GET", "k"],
    &["PING"],
    &["UNSUBSCRIBE", "c1"],
    &["PUNSUBSCRIBE"],
    &["UNSUBSCRIBE"],
    &["UNSUBSCRIBE"],
    &["PUBLISH", "c1", "m"],
    &["MULTI"],
    &["SET", "t", "1"],
    &["GET", "t"],
    &["MGET", "t", "nope"],
    &["MULTI"],
    &["EXEC"],
    &["EXEC"],
    &["DISCARD"],
    &["MULTI"],
    &["SET", "t"],
    &["EXEC"],
    &["WATCH", "t"],
    &["MULTI"],
    &["DISCARD"],
    &["UNWATCH"],
    &["FLUSHDB"],
    &["DBSIZE"],
];

/// Replies after `HELLO 3`: RESP3's nulls, maps, verbatim text and push
/// frames, byte for byte as Redis sends them (a subscriber runs commands
/// on the same connection).
const SAME_AS_REDIS_IN_RESP3: &[&[&str]] = &[
    &["SET", "k", "v"],
    &["GET", "k"],
    &["GET", "missing"],
    &["SET", "k", "w", "NX"],
    &["SET", "k", "w", "XX", "GET"],
    &["MGET", "k", "nope"],
    &["CONFIG", "GET", "appendonly"],
    &["CLIENT", "GETNAME"],
    &["SUBSCRIBE", "c1"],
    &["PSUBSCRIBE", "p*"],
    &["GET", "k"],
    &["PING"],
    &["PUBSUB", "CHANNELS"],
    &["PUBSUB", "CHANNELS", "c*"],
    &["PUBSUB", "NUMSUB", "c1", "nope"],
    &["PUBSUB", "NUMPAT"],
    &["PUBLISH", "c1", "m"],
    &["UNSUBSCRIBE", "c1"],
    &["PUNSUBSCRIBE"],
    &["UNSUBSCRIBE"],
    &["MULTI"],
    &["GET", "nope"],
    &["EXEC"],
    &["FLUSHDB"],
];

#[test]
fn resp3_replies_match_redis_byte_for_byte() {
    let Some(redis) = Redis::start("resp3_replies_match_redis_byte_for_byte") else {
        return;
    };
    let kvs = RespServer::start(&[], &[]);
    let mut ours = kvs.raw();
    let mut theirs = Raw::unix(&redis.sock);
    for raw in [&mut ours, &mut theirs] {
        let hello = raw.ask(&["HELLO", "3"]);
        assert!(
            hello.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
            "{hello}"
        );
        assert!(hello.contains("$5\r\nproto\r\n:3\r\n"), "{hello}");
    }
    for cmd in SAME_AS_REDIS_IN_RESP3 {
        ours.cmd(cmd);
        theirs.cmd(cmd);
        // PUBLISH to a channel this connection hears: the push, then the count.
        let replies = if cmd[0] == "PUBLISH" { 2 } else { 1 };
        for _ in 0..replies {
            let (a, b) = (ours.reply(), theirs.reply());
            assert_eq!(
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b),
                "{cmd:?}"
            );
        }
    }
    // INFO is verbatim text (its fields differ: only the frame is compared).
    let (a, b) = (
        ours.ask(&["INFO", "server"]),
        theirs.ask(&["INFO", "server"]),
    );
    assert!(
        a.starts_with('=') && b.starts_with('=') && a.contains("\r\ntxt:# Server"),
        "{a}"
    );
}

#[test]
fn replies_match_redis_byte_for_byte() {
    let Some(redis) = Redis::start("replies_match_redis_byte_for_byte") else {
        return;
    };
    let kvs = RespServer::start(&[], &[]);
    let mut ours = kvs.raw();
    let mut theirs = Raw::unix(&redis.sock);
    for cmd in SAME_AS_REDIS {
        ours.cmd(cmd);
        theirs.cmd(cmd);
        // SUBSCRIBE of two channels answers twice.
        for _ in 0..if cmd[0] == "SUBSCRIBE" {
            cmd.len() - 1
        } else {
            1
        } {
            let (a, b) = (ours.reply(), theirs.reply());
            assert_eq!(
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b),
                "{cmd:?}"
            );
        }
    }
    // Inline commands, as telnet sends them.
    for line in [&b"PING\r\n"[..], b"ECHO \"a b\"\r\n", b"\r\nPING\n"] {
        ours.send(line);
        theirs.send(line);
        let (a, b) = (ours.reply(), theirs.reply());
        assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
    }
    assert_eq!(ours.ask(&["QUIT"]), theirs.ask(&["QUIT"]));
    assert!(ours.closed_by_server() && theirs.closed_by_server());
}

/// The path of an example program built by `cargo test`.
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/resp-<hash> -> target/<profile>/examples/<name>
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join(name))
        .unwrap()
}

fn run_example(url: &str) -> String {
    let out = std::process::Command::new(example("redis_client"))
        .arg(url)
        .output()
        .expect("run examples/redis_client");
    assert!(
        out.status.success(),
        "redis_client against {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_redis_example_runs_unchanged_against_kvs_and_redis() {
    let kvs = RespServer::start(&[], &[]);
    let ours = run_example(&kvs.url());
    assert!(ours.contains("GET example:greeting -> hello"), "{ours}");
    assert!(ours.contains("notified: set on __keyspace@0__:example:greeting"));
    assert!(ours.ends_with("ok\n"));
    if let Some(redis) = Redis::start("the_redis_example_runs_unchanged_against_kvs_and_redis") {
        assert_eq!(run_example(&redis.url()), ours, "same output from Redis");
    }
}

/// Every whole request of a read is answered before the server waits for
/// more, whatever mix of commands the read holds: a GET answered on the
/// reactor, then a PING, used to wait for the client's next bytes.
#[test]
fn every_mix_of_local_and_store_commands_in_one_read_is_answered() {
    let kvs = RespServer::start(&[], &[]);
    let mut raw = kvs.raw();
    assert_eq!(raw.ask(&["SET", "k", "v"]), "+OK\r\n");
    raw.send(b"GET k\r\nPING\r\n");
    assert_eq!(raw.reply(), b"$1\r\nv\r\n");
    assert_eq!(
        raw.reply_within(Duration::from_secs(2)).as_deref(),
        Some(&b"+PONG\r\n"[..]),
        "PING's reply was held back"
    );
    let commands: [&[&str]; 12] = [
        &["GET", "k"],
        &["SET", "k", "w"],
        &["PING"],
        &["ECHO", "hi"],
        &["CLIENT", "GETNAME"],
        &["CONFIG", "GET", "maxclients"],
        &["PUBLISH", "ch", "x"],
        &["EXISTS", "k", "nope"],
        &["SET", "k", "a value with spaces"],
        &["DBSIZE"],
        &["MGET", "k", "nope"],
        &["NOSUCHCOMMAND"],
    ];
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for round in 0..200 {
        let n = 1 + (round % 9);
        let mut bytes = Vec::new();
        let mut sent = Vec::new();
        for _ in 0..n {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let c = commands[(rng % commands.len() as u64) as usize];
            let args: Vec<&[u8]> = c.iter().map(|a| a.as_bytes()).collect();
            bytes.extend(kvs::protocol::resp::encode_request(&args));
            sent.push(c.join(" "));
        }
        raw.send(&bytes);
        for (i, c) in sent.iter().enumerate() {
            assert!(
                raw.reply_within(Duration::from_secs(2)).is_some(),
                "round {round}: no reply to #{i} ({c}) of {sent:?}"
            );
        }
    }
}

/// Pipelined GETs answered on the reactor keep their places: among SETs
/// and DELs of the same keys, inline GETs, runs longer than a round keeps
/// as keys, and GETs whose reply CLIENT REPLY SKIP drops, each reply is the
/// value the key had at that point of the pipeline.
#[test]
fn pipelined_gets_answer_in_place_with_the_value_at_their_place() {
    let kvs = RespServer::start(&[], &[]);
    let mut raw = kvs.raw();
    let mut model: std::collections::HashMap<String, String> = Default::default();
    let bulk = |v: Option<&String>| match v {
        Some(v) => format!("${}\r\n{v}\r\n", v.len()),
        None => "$-1\r\n".to_string(),
    };
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..100 {
        let mut bytes = Vec::new();
        let mut expected = String::new();
        let (mut skip, mut off) = (false, false);
        for i in 0..(1 + next() % 40) {
            let key = format!("k{}", next() % 4);
            let (request, reply): (Vec<u8>, String) = match next() % 10 {
                0..=4 => {
                    let r = resp_request(&["GET", &key]);
                    (r, bulk(model.get(&key)))
                }
                5 => {
                    // Inline, and with quotes (its arguments are then
                    // copies, not slices of what was read).
                    let line = match next() % 2 {
                        0 => format!("GET {key}\r\n"),
                        _ => format!("GET \"{key}\"\r\n"),
                    };
                    (line.into_bytes(), bulk(model.get(&key)))
                }
                6 | 7 => {
                    let v = format!("v{round}-{i}");
                    model.insert(key.clone(), v.clone());
                    (resp_request(&["SET", &key, &v]), "+OK\r\n".into())
                }
                8 => {
                    let n = model.remove(&key).is_some() as i64;
                    (resp_request(&["DEL", &key]), format!(":{n}\r\n"))
                }
                _ if next() % 2 == 0 => {
                    // Skips the next command's reply, and has none itself;
                    // while replies are off it does nothing (Redis 7).
                    bytes.extend(resp_request(&["CLIENT", "REPLY", "SKIP"]));
                    skip = !off;
                    continue;
                }
                _ if off => {
                    off = false;
                    (resp_request(&["CLIENT", "REPLY", "ON"]), "+OK\r\n".into())
                }
                _ => {
                    // No replies until ON.
                    off = true;
                    (resp_request(&["CLIENT", "REPLY", "OFF"]), String::new())
                }
            };
            bytes.extend(request);
            if !std::mem::take(&mut skip) && !off {
                expected.push_str(&reply);
            }
        }
        if off {
            bytes.extend(resp_request(&["CLIENT", "REPLY", "ON"]));
            expected.push_str("+OK\r\n");
        }
        if skip {
            // The skipped reply, where the round ended with a SKIP.
            bytes.extend(resp_request(&["PING"]));
        }
        // A marker ends the round's replies.
        bytes.extend(resp_request(&["ECHO", "end"]));
        expected.push_str("$3\r\nend\r\n");
        raw.send(&bytes);
        let mut got = String::new();
        while !got.ends_with("$3\r\nend\r\n") {
            let r = raw
                .reply_within(Duration::from_secs(5))
                .unwrap_or_else(|| panic!("round {round}: replies stopped after {got:?}"));
            got.push_str(&String::from_utf8_lossy(&r));
        }
        assert_eq!(got, expected, "round {round}");
    }
}

fn resp_request(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    kvs::protocol::resp::encode_request(&args)
}

/// The `redis` crate over RESP3 (`HELLO 3`): values, nulls, a transaction.
#[test]
fn the_redis_crate_speaks_resp3() {
    let kvs = RespServer::start(&[], &[]);
    let url = format!("{}?protocol=resp3", kvs.url());
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(10))
        .expect("a RESP3 connection");
    let _: () = con.set("a", "1").unwrap();
    assert_eq!(
        con.get::<_, Option<String>>("a").unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(con.get::<_, Option<String>>("nope").unwrap(), None);
    let v: Vec<Option<String>> = con.mget(&["a", "nope"]).unwrap();
    assert_eq!(v, vec![Some("1".to_string()), None]);
    let (x,): (String,) = redis::pipe()
        .atomic()
        .set("b", "2")
        .ignore()
        .get("b")
        .query(&mut con)
        .unwrap();
    assert_eq!(x, "2");
    let info: redis::InfoDict = redis::cmd("INFO").query(&mut con).unwrap();
    assert!(info.get::<String>("redis_version").is_some());
}

/// CLIENT LIST / INFO / KILL in Redis's forms, over both transports.
#[test]
fn client_list_info_and_kill() {
    let kvs = RespServer::start(&[], &[]);
    let _fifo = session("listed", &kvs.server.fifo);
    let mut me = kvs.raw();
    let mut victim = kvs.raw();
    assert_eq!(me.ask(&["CLIENT", "SETNAME", "boss"]), "+OK\r\n");
    assert_eq!(victim.ask(&["SUBSCRIBE", "ch"]).lines().count(), 6);
    let list = me.ask(&["CLIENT", "LIST"]);
    let lines: Vec<&str> = list
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("id="))
        .collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines
        .iter()
        .any(|l| l.contains(" name=boss ") && l.contains(" flags=N ")));
    assert!(lines
        .iter()
        .any(|l| l.contains(" flags=P ") && l.contains(" sub=1 ")));
    // Each its own descriptor, as Redis prints it (-1 is for clients of
    // the server's own).
    let mut fds: Vec<i64> = lines
        .iter()
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("fd=")))
        .map(|fd| fd.parse().unwrap())
        .collect();
    assert!(fds.iter().all(|&fd| fd > 2), "{list}");
    fds.sort_unstable();
    fds.dedup();
    assert_eq!(fds.len(), 3, "{list}");
    let pubsub = me.ask(&["CLIENT", "LIST", "TYPE", "pubsub"]);
    assert_eq!(
        pubsub.lines().filter(|l| l.starts_with("id=")).count(),
        1,
        "{pubsub}"
    );
    let info = me.ask(&["CLIENT", "INFO"]);
    assert!(
        info.contains(" name=boss ") && info.contains(" resp=2"),
        "{info}"
    );
    let victim_id: String = lines
        .iter()
        .find(|l| l.contains(" flags=P "))
        .and_then(|l| l.split(' ').next())
        .and_then(|f| f.strip_prefix("id="))
        .unwrap()
        .to_string();
    assert_eq!(me.ask(&["CLIENT", "KILL", "ID", &victim_id]), ":1\r\n");
    assert!(victim.closed_by_server());
    assert_eq!(
        me.ask(&["CLIENT", "KILL", "nosuch:1"]),
        "-ERR No such client\r\n"
    );
    assert_eq!(me.ask(&["CLIENT", "KILL", "ID", "999999"]), ":0\r\n");
    // SKIPME yes (the default) spares the caller.
    assert_eq!(me.ask(&["CLIENT", "KILL", "TYPE", "normal"]), ":1\r\n");
    assert_eq!(me.ask(&["PING"]), "+PONG\r\n");
}

/// CONFIG SET notify-keyspace-events is honoured for RESP subscribers, as
/// Redis honours it; a FIFO client's key subscription stays on.
#[test]
fn notify_keyspace_events_chooses_what_resp_subscribers_hear() {
    let kvs = RespServer::start(&[], &[]);
    let mut admin = kvs.raw();
    assert_eq!(
        admin.ask(&["CONFIG", "GET", "notify-keyspace-events"]),
        "*2\r\n$22\r\nnotify-keyspace-events\r\n$3\r\nAKE\r\n"
    );
    assert_eq!(
        admin.ask(&["CONFIG", "SET", "notify-keyspace-events", "E$"]),
        "+OK\r\n"
    );
    let mut fifo = session("nk", &kvs.server.fifo);
    assert_eq!(fifo.ask(write("k", "0")), b'0');
    assert_eq!(fifo.ask(Request::Subscribe("k".into())), b'1');
    let mut sub = kvs.raw();
    sub.cmd(&["PSUBSCRIBE", "__key*@0__:*"]);
    sub.reply();
    assert_eq!(admin.ask(&["SET", "k", "1"]), "+OK\r\n");
    assert_eq!(admin.ask(&["DEL", "k"]), ":1\r\n");
    assert_eq!(admin.ask(&["SET", "k", "2"]), "+OK\r\n");
    // Only key-event messages of string commands: two sets, no del, no
    // keyspace channel.
    for _ in 0..2 {
        let m = String::from_utf8_lossy(&sub.reply()).into_owned();
        assert!(m.contains("__keyevent@0__:set\r\n$1\r\nk"), "{m}");
    }
    assert!(sub.reply_within(Duration::from_millis(300)).is_none());
    // The FIFO client heard all three.
    assert_eq!(fifo.note(), ("k".to_string(), "1".to_string()));
    assert_eq!(fifo.note(), ("k".to_string(), "DELETED".to_string()));
    assert_eq!(fifo.note(), ("k".to_string(), "2".to_string()));
}

/// CLIENT REPLY OFF / SKIP / ON, over local and store commands alike.
#[test]
fn client_reply_silences_as_asked() {
    let kvs = RespServer::start(&[], &[]);
    let mut raw = kvs.raw();
    raw.send(b"CLIENT REPLY OFF\r\nPING\r\nSET a 1\r\nGET a\r\nCLIENT REPLY ON\r\nGET a\r\n");
    assert_eq!(raw.reply(), b"+OK\r\n");
    assert_eq!(raw.reply(), b"$1\r\n1\r\n");
    raw.send(b"CLIENT REPLY SKIP\r\nGET a\r\nPING x\r\n");
    assert_eq!(raw.reply(), b"$1\r\nx\r\n");
    assert!(raw.reply_within(Duration::from_millis(200)).is_none());
}

/// MONITOR hears every other client's commands in Redis's line format.
#[test]
fn monitor_hears_every_command() {
    let kvs = RespServer::start(&[], &[]);
    let mut mon = kvs.raw();
    assert_eq!(mon.ask(&["MONITOR"]), "+OK\r\n");
    let mut other = kvs.raw();
    assert_eq!(other.ask(&["SET", "k", "v"]), "+OK\r\n");
    other.ask(&["AUTH", "secret"]);
    let first = String::from_utf8_lossy(&mon.reply()).into_owned();
    assert!(
        first.starts_with('+') && first.ends_with("] \"SET\" \"k\" \"v\"\r\n"),
        "{first}"
    );
    let second = String::from_utf8_lossy(&mon.reply()).into_owned();
    assert!(second.ends_with("\"AUTH\" \"(redacted)\"\r\n"), "{second}");
}

/// CLIENT TRACKING: a change from any source invalidates what a client
/// read, in RESP3 pushes and, through REDIRECT, on __redis__:invalidate.
#[test]
fn tracking_invalidates_reads_from_any_source() {
    let kvs = RespServer::start(&[], &[]);
    let mut writer = kvs.raw();
    assert_eq!(writer.ask(&["SET", "k", "1"]), "+OK\r\n");
    let mut fifo = session("tr", &kvs.server.fifo);

    // RESP3, default mode.
    let mut cache = kvs.raw();
    assert!(cache.ask(&["HELLO", "3"]).starts_with('%'));
    assert_eq!(cache.ask(&["CLIENT", "TRACKING", "ON"]), "+OK\r\n");
    assert_eq!(cache.ask(&["GET", "k"]), "$1\r\n1\r\n");
    assert_eq!(writer.ask(&["SET", "k", "2"]), "+OK\r\n");
    assert_eq!(
        cache.reply(),
        b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"
    );
    // Told once, then forgotten until read again.
    assert_eq!(writer.ask(&["SET", "k", "3"]), "+OK\r\n");
    assert!(cache.reply_within(Duration::from_millis(300)).is_none());
    assert_eq!(cache.ask(&["GET", "k"]), "$1\r\n3\r\n");
    assert_eq!(fifo.ask(write("k", "from-fifo")), b'0');
    assert_eq!(
        cache.reply(),
        b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"
    );
    // A read inside a transaction is tracked too.
    assert_eq!(cache.ask(&["MULTI"]), "+OK\r\n");
    assert_eq!(cache.ask(&["GET", "k"]), "+QUEUED\r\n");
    assert!(cache.ask(&["EXEC"]).starts_with("*1\r\n$9\r\nfrom-fifo"));
    assert_eq!(writer.ask(&["DEL", "k"]), ":1\r\n");
    assert_eq!(
        cache.reply(),
        b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"
    );
    let info = cache.ask(&["CLIENT", "TRACKINGINFO"]);
    assert!(
        info.starts_with("%3\r\n$5\r\nflags\r\n~1\r\n$2\r\non\r\n"),
        "{info}"
    );

    // RESP2 with REDIRECT to a subscriber, BCAST on a prefix.
    let mut sink = kvs.raw();
    sink.cmd(&["SUBSCRIBE", "__redis__:invalidate"]);
    sink.reply();
    let id = sink.ask(&["CLIENT", "ID"]);
    let _ = id;
    let mut sink2 = kvs.raw();
    let id2 = sink2.ask(&["CLIENT", "ID"]);
    let id2 = id2.trim_start_matches(':').trim().to_string();
    sink2.cmd(&["SUBSCRIBE", "__redis__:invalidate"]);
    sink2.reply();
    let mut bc = kvs.raw();
    assert_eq!(
        bc.ask(&["CLIENT", "TRACKING", "ON", "REDIRECT", &id2, "BCAST", "PREFIX", "user:"]),
        "+OK\r\n"
    );
    assert_eq!(bc.ask(&["CLIENT", "GETREDIR"]), format!(":{id2}\r\n"));
    assert_eq!(writer.ask(&["SET", "user:1", "x"]), "+OK\r\n");
    assert_eq!(writer.ask(&["SET", "other", "x"]), "+OK\r\n");
    let m = String::from_utf8_lossy(&sink2.reply()).into_owned();
    assert_eq!(
        m,
        "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$6\r\nuser:1\r\n"
    );
    assert!(sink2.reply_within(Duration::from_millis(300)).is_none());
    assert_eq!(
        bc.ask(&["CLIENT", "TRACKING", "ON", "PREFIX", "a"]),
        "-ERR PREFIX option requires BCAST mode to be enabled\r\n"
    );
    assert_eq!(bc.ask(&["CLIENT", "TRACKING", "OFF"]), "+OK\r\n");
    assert_eq!(bc.ask(&["CLIENT", "GETREDIR"]), ":-1\r\n");
}

/// BCAST tells a turn's changed keys as Redis's radix tree does: each
/// key once, in byte order, even when it changed twice or was created
/// while `new` events are on (its creation and its set are two changes).
#[test]
fn tracking_bcast_tells_each_key_once() {
    let kvs = RespServer::start(&[], &[]);
    let mut writer = kvs.raw();
    assert_eq!(writer.ask(&["SET", "b", "1"]), "+OK\r\n");
    assert_eq!(
        writer.ask(&["CONFIG", "SET", "notify-keyspace-events", "KEAn"]),
        "+OK\r\n"
    );
    let mut sink = kvs.raw();
    let id = sink.ask(&["CLIENT", "ID"]);
    let id = id.trim_start_matches(':').trim().to_string();
    sink.cmd(&["SUBSCRIBE", "__redis__:invalidate"]);
    sink.reply();
    let mut bc = kvs.raw();
    assert_eq!(
        bc.ask(&["CLIENT", "TRACKING", "ON", "BCAST", "REDIRECT", &id]),
        "+OK\r\n"
    );
    assert_eq!(writer.ask(&["MULTI"]), "+OK\r\n");
    assert_eq!(
        writer.ask(&["MSET", "c", "1", "b", "2", "a", "3"]),
        "+QUEUED\r\n"
    );
    assert_eq!(writer.ask(&["SET", "c", "4"]), "+QUEUED\r\n");
    assert_eq!(writer.ask(&["EXEC"]), "*2\r\n+OK\r\n+OK\r\n");
    let m = String::from_utf8_lossy(&sink.reply()).into_owned();
    assert_eq!(
        m,
        "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n\
         *3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
    );
    assert!(sink.reply_within(Duration::from_millis(300)).is_none());
}

/// COMMAND INFO of every command kvs has: name, arity, flags, key
/// positions and ACL categories as redis-server gives them.
#[test]
fn command_info_matches_redis() {
    let Some(redis) = Redis::start("command_info_matches_redis") else {
        return;
    };
    let kvs = RespServer::start(&[], &[]);
    let mut ours = kvs.con();
    let mut theirs = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let names: Vec<String> = redis::cmd("COMMAND").arg("LIST").query(&mut ours).unwrap();
    let count: usize = redis::cmd("COMMAND").arg("COUNT").query(&mut ours).unwrap();
    // COUNT counts commands; LIST names subcommands too, as Redis's do.
    assert_eq!(names.iter().filter(|n| !n.contains('|')).count(), count);
    assert!(count >= 40, "{names:?}");
    assert!(names.iter().any(|n| n == "client|list"), "{names:?}");
    // Redis 7.0 has neither (they came with 7.2).
    let newer = ["client|setinfo", "client|no-touch"];
    for name in names.iter().filter(|n| !newer.contains(&n.as_str())) {
        let info = |con: &mut redis::Connection| -> Vec<redis::Value> {
            let v: redis::Value = redis::cmd("COMMAND")
                .arg("INFO")
                .arg(name)
                .query(con)
                .unwrap();
            let redis::Value::Array(mut outer) = v else {
                panic!("{name}: {v:?}")
            };
            let Some(redis::Value::Array(fields)) = outer.pop() else {
                panic!("{name}: no entry")
            };
            fields.into_iter().take(7).collect()
        };
        assert_eq!(info(&mut ours), info(&mut theirs), "COMMAND INFO {name}");
    }
    // A container's entry nests its subcommands', in INFO and DOCS.
    let mut raw = kvs.raw();
    let info = raw.ask(&["COMMAND", "INFO", "config"]);
    assert!(info.contains("$10\r\nconfig|get\r\n:-3\r\n"), "{info}");
    let docs = raw.ask(&["COMMAND", "DOCS", "config"]);
    assert!(docs.contains("$11\r\nsubcommands\r\n"), "{docs}");
    assert!(raw
        .ask(&["COMMAND", "LIST", "FILTERBY", "PATTERN", "config|*"])
        .contains("config|resetstat"));
}

/// RESET brings a connection back to a new one's state, as Redis's does:
/// RESP2, no tracking, replies on, no transaction, no monitoring.
#[test]
fn reset_undoes_a_connections_state() {
    let kvs = RespServer::start(&[], &[]);
    let mut raw = kvs.raw();
    assert!(raw.ask(&["HELLO", "3"]).starts_with('%'));
    assert_eq!(raw.ask(&["CLIENT", "TRACKING", "ON"]), "+OK\r\n");
    assert_eq!(raw.ask(&["MULTI"]), "+OK\r\n");
    assert_eq!(raw.ask(&["RESET"]), "+RESET\r\n");
    assert_eq!(raw.ask(&["GET", "nope"]), "$-1\r\n", "back to RESP2");
    assert_eq!(raw.ask(&["EXEC"]), "-ERR EXEC without MULTI\r\n");
    assert_eq!(
        raw.ask(&["CLIENT", "TRACKINGINFO"]),
        "*6\r\n$5\r\nflags\r\n*1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n"
    );
    assert_eq!(raw.ask(&["MONITOR"]), "+OK\r\n");
    assert_eq!(raw.ask(&["RESET"]), "+RESET\r\n");
    let mut other = kvs.raw();
    assert_eq!(other.ask(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(raw.ask(&["PING"]), "+PONG\r\n", "no MONITOR line before it");
}

#[test]
fn a_session_in_a_closed_monitors_slot_gets_no_monitor_lines() {
    let kvs = RespServer::start(&[], &[]);
    let mut monitor = kvs.raw();
    assert_eq!(monitor.ask(&["MONITOR"]), "+OK\r\n");
    drop(monitor);
    // Let the server see the close before a new session takes the slot.
    let mut other = kvs.raw();
    assert_eq!(other.ask(&["PING"]), "+PONG\r\n");
    let mut fresh = kvs.raw();
    assert_eq!(fresh.ask(&["PING"]), "+PONG\r\n");
    for _ in 0..3 {
        assert_eq!(other.ask(&["SET", "k", "v"]), "+OK\r\n");
    }
    assert_eq!(fresh.ask(&["ECHO", "mine"]), "$4\r\nmine\r\n");
    assert_eq!(
        fresh.reply_within(Duration::from_millis(200)),
        None,
        "a monitor line reached a session that never asked"
    );
}

#[test]
fn info_commandstats_and_errorstats_count_as_redis_does() {
    let kvs = RespServer::start(&[], &[]);
    let mut c = kvs.raw();
    // Compare with redis-server where it is here: the counts, not the
    // microseconds.
    let redis = common::resp::Redis::start("info_commandstats_and_errorstats_count_as_redis_does");
    let mut theirs = redis.as_ref().map(|r| Raw::unix(&r.sock));
    let script: &[&[&str]] = &[
        &["CONFIG", "RESETSTAT"],
        &["SET", "k", "v"],
        &["GET", "k"],
        &["GET", "k"],
        &["GET"],
        &["INCR", "k"],
        &["NOSUCHCOMMAND"],
        &["CLIENT", "ID"],
        &["PING"],
    ];
    let counts = |raw: &mut Raw| {
        for cmd in script {
            raw.ask(cmd);
        }
        let info = raw.ask(&["INFO", "commandstats"]) + &raw.ask(&["INFO", "errorstats"]);
        info.lines()
            .filter(|l| l.starts_with("cmdstat_") || l.starts_with("errorstat_"))
            .filter(|l| !l.starts_with("cmdstat_info") && !l.starts_with("cmdstat_config"))
            .map(|l| {
                // Drop the timings.
                let (name, fields) = l.split_once(':').unwrap();
                let kept: Vec<&str> = fields
                    .split(',')
                    .filter(|f| !f.starts_with("usec"))
                    .collect();
                format!("{name}:{}", kept.join(","))
            })
            // Redis lists them in its dict's order.
            .collect::<std::collections::BTreeSet<_>>()
    };
    let ours = counts(&mut c);
    for want in [
        "cmdstat_get:calls=2,rejected_calls=1,failed_calls=0",
        "cmdstat_set:calls=1,rejected_calls=0,failed_calls=0",
        "cmdstat_incr:calls=1,rejected_calls=0,failed_calls=1",
        "cmdstat_client|id:calls=1,rejected_calls=0,failed_calls=0",
        "cmdstat_ping:calls=1,rejected_calls=0,failed_calls=0",
        "errorstat_ERR:count=3",
    ] {
        assert!(ours.iter().any(|l| l == want), "{want} not in {ours:?}");
    }
    assert!(
        !c.ask(&["INFO"]).contains("cmdstat_"),
        "the default leaves them out"
    );
    assert!(c.ask(&["INFO", "everything"]).contains("cmdstat_get"));
    if let Some(theirs) = theirs.as_mut() {
        assert_eq!(ours, counts(theirs));
    }
}

/// CLIENT TRACKING as redis-server tells it, byte for byte on one RESP3
/// connection: a client's own change invalidates after its reply (inside
/// EXEC too), a flush is one invalidation of everything, TRACKINGINFO's
/// flags are a set, BCAST prefixes may not overlap, and the options are
/// checked in Redis's order with its errors. Each command is followed by a
/// PING, and everything up to its PONG is compared.
#[test]
fn tracking_matches_redis_byte_for_byte() {
    let Some(redis) = Redis::start("tracking_matches_redis_byte_for_byte") else {
        return;
    };
    let kvs = RespServer::start(&[], &[]);
    let mut ours = kvs.raw();
    let mut theirs = Raw::unix(&redis.sock);
    for c in [&mut ours, &mut theirs] {
        assert!(c.ask(&["HELLO", "3"]).starts_with('%'));
    }
    let script: &[&[&str]] = &[
        &["CLIENT", "TRACKING", "on"],
        &["MSET", "a{t}", "1", "b{t}", "2"],
        &["GET", "a{t}"],
        &["INCR", "a{t}"],
        &["GET", "a{t}"],
        &["MULTI"],
        &["INCR", "a{t}"],
        &["GET", "b{t}"],
        &["EXEC"],
        &["GET", "a{t}"],
        &["FLUSHDB"],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "TRACKING", "on", "BCAST"],
        &["CLIENT", "TRACKING", "off"],
        &[
            "CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "FOOBAR", "PREFIX", "FOO",
        ],
        &[
            "CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "FOO", "PREFIX", "BAR",
        ],
        &["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "FO"],
        &["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "BAZ"],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "TRACKING", "on", "OPTIN"],
        &["CLIENT", "TRACKING", "off"],
        &["CLIENT", "CACHING", "yes"],
        &["CLIENT", "TRACKING", "on", "OPTIN", "OPTOUT"],
        &["CLIENT", "TRACKING", "on", "REDIRECT", "999999"],
        &["CLIENT", "TRACKING", "on", "REDIRECT", "x"],
        &["CLIENT", "TRACKING", "on", "PREFIX"],
        &["CLIENT", "TRACKING", "on", "OPTOUT", "NOLOOP"],
        &["CLIENT", "CACHING", "yes"],
        &["CLIENT", "CACHING", "no"],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "TRACKING", "on", "OPTIN"],
        &["CLIENT", "TRACKING", "off"],
    ];
    let upto_pong = |c: &mut Raw| {
        let mut got = String::new();
        loop {
            let frame = String::from_utf8_lossy(&c.reply()).into_owned();
            if frame == "+PONG\r\n" {
                return got;
            }
            got.push_str(&frame);
        }
    };
    let mut queuing = false;
    for cmd in script {
        // Inside MULTI a PING would be queued: one reply each.
        queuing = (queuing || cmd[0] == "MULTI") && cmd[0] != "EXEC";
        if queuing {
            assert_eq!(ours.ask(cmd), theirs.ask(cmd), "{cmd:?}");
            continue;
        }
        for c in [&mut ours, &mut theirs] {
            c.cmd(cmd);
            c.cmd(&["PING"]);
        }
        assert_eq!(upto_pong(&mut ours), upto_pong(&mut theirs), "{cmd:?}");
    }
}

/// tracking-table-max-keys: lowering it forgets keys, each with an
/// invalidation, until the table fits; INFO counts what is tracked.
#[test]
fn the_tracking_table_is_kept_within_its_limit() {
    let kvs = RespServer::start(&[], &[]);
    let mut c = kvs.raw();
    assert!(c.ask(&["HELLO", "3"]).starts_with('%'));
    assert_eq!(c.ask(&["CLIENT", "TRACKING", "on"]), "+OK\r\n");
    for i in 0..20 {
        c.ask(&["GET", &format!("k{i}")]);
    }
    let info = c.ask(&["INFO", "stats"]);
    assert!(info.contains("tracking_total_keys:20\r\n"), "{info}");
    assert!(info.contains("tracking_total_items:20\r\n"), "{info}");
    assert_eq!(
        c.ask(&["CONFIG", "SET", "tracking-table-max-keys", "5"]),
        "+OK\r\n"
    );
    let mut told = Vec::new();
    for _ in 0..15 {
        let frame = String::from_utf8_lossy(&c.reply()).into_owned();
        assert!(
            frame.starts_with(">2\r\n$10\r\ninvalidate\r\n*1\r\n"),
            "{frame}"
        );
        told.push(frame);
    }
    told.sort();
    told.dedup();
    assert_eq!(told.len(), 15);
    assert_eq!(c.ask(&["PING"]), "+PONG\r\n");
    let info = c.ask(&["INFO", "stats"]);
    assert!(info.contains("tracking_total_keys:5\r\n"), "{info}");
    assert_eq!(
        c.ask(&["CONFIG", "GET", "tracking-table-max-keys"]),
        "%1\r\n$23\r\ntracking-table-max-keys\r\n$1\r\n5\r\n"
    );
}
