//! Redis strings whole (issue 19): RESP keys and values are any bytes of
//! any size, and the course formats, which cannot carry all of them, never
//! show one cut short: a FIFO client gets the documented marker, a job's
//! READ and SHOW (and so BACKUP) print it quoted as redis-cli does (SPEC
//! sections 2, 3 and 5).

mod common;

use common::resp::RespServer;
use common::{run_kvs, session, Server};
use kvs::protocol::fifo::Request;
use redis::Commands;

#[test]
fn fifo_clients_get_a_marker_for_values_their_field_cannot_carry() {
    let kvs = RespServer::start(&[], &[]);
    let mut con = kvs.con();
    con.set::<_, _, ()>("k", "plain").unwrap();
    let mut fifo = session("marker", &kvs.server.fifo);
    assert_eq!(fifo.ask(Request::Subscribe("k".into())), b'1');
    let long = "v".repeat(41);
    for (value, shown) in [
        ("short", "short".to_string()),
        (long.as_str(), "(value of 41 bytes)".to_string()),
        ("a b", "(value of 3 bytes)".to_string()),
        ("{\"json\":[1,2]}", "(value of 14 bytes)".to_string()),
    ] {
        con.set::<_, _, ()>("k", value).unwrap();
        assert_eq!(fifo.note(), ("k".to_string(), shown.clone()), "{value}");
        let answer = fifo.conn.request(&Request::Read("k".into())).unwrap();
        assert_eq!(answer.code, b'0');
        assert_eq!(answer.value.as_deref(), Some(shown.as_str()), "{value}");
    }
    // A megabyte goes through RESP whole, and the FIFO client still gets
    // only the marker, never a prefix.
    let big = vec![b'x'; 1 << 20];
    con.set::<_, _, ()>("k", &big[..]).unwrap();
    assert_eq!(fifo.note().1, "(value of 1048576 bytes)");
    assert_eq!(con.get::<_, Vec<u8>>("k").unwrap(), big);
}

#[test]
fn jobs_print_what_their_format_cannot_show_quoted() {
    // RESP clients write into a data dir; a batch run over the same dir
    // then READs and SHOWs them.
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let dd = data_dir.to_str().unwrap();
    {
        let mut kvs = RespServer::start(&[], &["--data-dir", dd]);
        let mut con = kvs.con();
        con.set::<_, _, ()>("plain", "value").unwrap();
        con.set::<_, _, ()>("spaced", "a b").unwrap();
        con.set::<_, _, ()>("json", "{\"a\": [1, 2]}").unwrap();
        con.set::<_, _, ()>("bin", &b"\x00\xff\n"[..]).unwrap();
        con.set::<_, _, ()>("a key", "v").unwrap();
        assert!(kvs.server.stop().success());
    }
    let jobs = tempfile::tempdir().unwrap();
    std::fs::write(
        jobs.path().join("r.job"),
        "READ [plain,spaced,json,bin]\nSHOW\nBACKUP\nWAIT 100\n",
    )
    .unwrap();
    let out = run_kvs(&[jobs.path().to_str().unwrap(), "1", "1", "--data-dir", dd]);
    assert!(out.status.success(), "{}", out.stderr);
    let text = std::fs::read_to_string(jobs.path().join("r.out")).unwrap();
    let show = "(\"a key\", v)\n(bin, \"\\x00\\xff\\n\")\n(json, \"{\\\"a\\\": [1, 2]}\")\n(plain, value)\n(spaced, \"a b\")\n";
    assert_eq!(
        text,
        format!(
            "[(bin,\"\\x00\\xff\\n\")(json,\"{{\\\"a\\\": [1, 2]}}\")(plain,value)(spaced,\"a b\")]\n{show}Waiting...\n"
        )
    );
    let backup = std::fs::read_to_string(jobs.path().join("r-1.bck")).unwrap();
    assert_eq!(backup, show);
}

#[test]
fn a_course_value_is_shown_as_it_always_was() {
    // Nothing changes for what the job format itself can write.
    let srv = Server::start(
        &[("w.job", "WRITE [(k,v\"q)(a,é)]\nREAD [k,a]\nSHOW\n")],
        &[],
    );
    // The whole expected output, or a bounded wait's failure.
    common::wait_for_file(
        &srv.jobs.join("w.out"),
        "[(a,é)(k,v\"q)]\n(a, é)\n(k, v\"q)\n",
    );
}

#[test]
fn a_hundred_megabyte_value_goes_in_and_out_whole() {
    let kvs = RespServer::start(&[], &[]);
    let mut con = kvs.con();
    let big: Vec<u8> = (0..100usize << 20).map(|i| (i % 251) as u8).collect();
    let started = std::time::Instant::now();
    con.set::<_, _, ()>("big", &big[..]).unwrap();
    assert_eq!(con.strlen::<_, usize>("big").unwrap(), big.len());
    let back: Vec<u8> = con.get("big").unwrap();
    assert!(back == big, "the value came back changed");
    eprintln!("100 MB SET + GET: {:?}", started.elapsed());
    // A request that declares more than Redis's proto-max-bulk-len is
    // refused as Redis refuses it.
    let mut raw = kvs.raw();
    raw.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870913\r\n");
    assert!(raw.closed_by_server());
    assert!(
        raw.rest()
            .starts_with("-ERR Protocol error: invalid bulk length"),
        "{}",
        raw.rest()
    );
}

/// Large values arrive in pieces of every size, pipelined with small
/// requests and with each other (the server reads a large value apart,
/// into the buffer it then stores): every one is stored whole, every
/// command answered in order.
#[test]
fn large_values_in_uneven_pieces_are_stored_whole() {
    let kvs = RespServer::start(&[], &[]);
    let value = |n: usize, seed: usize| -> Vec<u8> {
        (0..n).map(|i| ((i * 7 + seed) % 253) as u8).collect()
    };
    let (a, b, c, d) = (
        value(100_000, 1),
        value(40_000, 2),
        value(1 << 20, 3),
        value(33_000, 4),
    );
    let req = |args: &[&[u8]]| kvs::protocol::resp::encode_request(args);
    let wire = [
        req(&[b"SET", b"a", &a]),
        req(&[b"PING"]),
        req(&[b"MSET", b"b", &b, b"small", b"x", b"c", &c]),
        req(&[b"APPEND", b"a", &d]),
        req(&[b"SET", b"d", &d, b"EX", b"100"]),
        req(&[b"ECHO", &b]),
        req(&[b"GETSET", b"b", &d]),
        req(&[b"STRLEN", b"a"]),
    ]
    .concat();
    let mut a_then_d = a.clone();
    a_then_d.extend_from_slice(&d);
    let bulk = |v: &[u8]| [format!("${}\r\n", v.len()).as_bytes(), v, b"\r\n"].concat();
    let want = [
        b"+OK\r\n".to_vec(),
        b"+PONG\r\n".to_vec(),
        b"+OK\r\n".to_vec(),
        format!(":{}\r\n", a_then_d.len()).into_bytes(),
        b"+OK\r\n".to_vec(),
        bulk(&b),
        bulk(&b),
        format!(":{}\r\n", a_then_d.len()).into_bytes(),
    ];
    // Pieces from 1 byte to 300 KB, with pauses now and then so that the
    // server reads what has come so far; then all at once.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..4 {
        let mut raw = kvs.raw();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = (1 + (x % [2_000, 50_000, 300_000, u64::MAX][round]) as usize).min(rest.len());
            raw.send(&rest[..n]);
            rest = &rest[n..];
            if x % 5 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        for (i, w) in want.iter().enumerate() {
            assert!(
                raw.reply() == *w,
                "round {round}: reply {i} is not the one expected"
            );
        }
        let mut con = kvs.con();
        let got: Vec<Vec<u8>> = redis::cmd("MGET")
            .arg(&["a", "b", "c", "d", "small"])
            .query(&mut con)
            .unwrap();
        assert!(
            got == vec![
                a_then_d.clone(),
                d.clone(),
                c.clone(),
                d.clone(),
                b"x".to_vec()
            ],
            "round {round}: values changed"
        );
        redis::cmd("SET")
            .arg("a")
            .arg(&a[..])
            .query::<()>(&mut con)
            .unwrap();
        let _: () = con.del(&["b", "c", "d"]).unwrap();
    }
}

/// String and key commands, each answered byte for byte as redis-server
/// answers it (skipped where redis-server is missing).
const STRING_COMMANDS: &[&[&str]] = &[
    &["INCR", "n"],
    &["INCRBY", "n", "41"],
    &["DECR", "n"],
    &["DECRBY", "n", "-10"],
    &["GET", "n"],
    &["INCRBY", "n", "x"],
    &["INCRBY", "n", "9223372036854775807"],
    &["DECRBY", "n", "-9223372036854775808"],
    &["SET", "big", "9223372036854775807"],
    &["INCR", "big"],
    &["SET", "s", " 11"],
    &["INCR", "s"],
    &["SET", "s", "011"],
    &["INCR", "s"],
    &["INCRBYFLOAT", "f", "1"],
    &["INCRBYFLOAT", "f", "0.25"],
    &["INCRBYFLOAT", "f", "-1.1"],
    &["SET", "f", "0.1"],
    &["INCRBYFLOAT", "f", "0.2"],
    // (0.3 + 5.0e3 is 5000.3 in kvs, exact in decimal, and
    // 5000.29999999999999982 in Redis's long double: see docs/redis-tests.md.)
    &["INCRBYFLOAT", "f", "2.5e-1"],
    &["INCRBYFLOAT", "f", "x"],
    &["INCRBYFLOAT", "f", "+inf"],
    &["INCRBYFLOAT", "s", "1"],
    &["INCR"],
    &["INCR", "a", "b"],
    &["APPEND", "a", "Hello"],
    &["APPEND", "a", " World"],
    &["GETRANGE", "a", "0", "3"],
    &["GETRANGE", "a", "-3", "-1"],
    &["GETRANGE", "a", "0", "-1"],
    &["GETRANGE", "a", "10", "5"],
    &["GETRANGE", "missing", "0", "-1"],
    &["SUBSTR", "a", "1", "2"],
    &["GETRANGE", "a", "x", "1"],
    &["SETRANGE", "a", "6", "Redis"],
    &["GET", "a"],
    &["SETRANGE", "r", "3", "x"],
    &["GET", "r"],
    &["SETRANGE", "r", "-1", "x"],
    &["SETRANGE", "r", "536870912", "x"],
    &["SETRANGE", "missing", "5", ""],
    &["EXISTS", "missing"],
    &["STRLEN", "a"],
    &["GETDEL", "a"],
    &["GETDEL", "a"],
    &["MSETNX", "x1", "1", "x2", "2"],
    &["MSETNX", "x2", "3", "x3", "4"],
    &["MGET", "x1", "x2", "x3"],
    &["MSETNX", "x4"],
    &["RENAME", "x1", "y1"],
    &["RENAME", "nothere", "y2"],
    &["RENAME", "y1", "y1"],
    &["RENAMENX", "y1", "x2"],
    &["RENAMENX", "y1", "z1"],
    &["RENAMENX", "z1", "z1"],
    &["COPY", "z1", "c1"],
    &["COPY", "z1", "c1"],
    &["COPY", "z1", "c1", "REPLACE"],
    &["COPY", "z1", "z1"],
    &["COPY", "nothere", "c2"],
    &["COPY", "z1", "c3", "DB", "0"],
    &["COPY", "z1", "c3", "BAD"],
    &["TOUCH", "z1", "c1", "nothere", "z1"],
    &["OBJECT", "ENCODING", "n"],
    &["OBJECT", "ENCODING", "z1"],
    &["OBJECT", "ENCODING", "nothere"],
    &["OBJECT", "ENCODING"],
    &[
        "SET",
        "long",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ],
    &["OBJECT", "ENCODING", "long"],
    &["OBJECT", "NOPE", "x"],
    &["FLUSHALL"],
    &["RANDOMKEY"],
    &["SET", "only", "1"],
    &["RANDOMKEY"],
    // Expiry (times far enough off that both servers agree on them).
    &["SET", "e", "v", "EX", "100"],
    &["TTL", "e"],
    &["SET", "e", "v", "PX", "100000", "GET"],
    &["TTL", "e"],
    &["SET", "e", "w", "KEEPTTL"],
    &["TTL", "e"],
    &["SET", "e", "w"],
    &["TTL", "e"],
    &["TTL", "nothere"],
    &["PTTL", "nothere"],
    &["EXPIRETIME", "e"],
    &["SET", "e", "v", "EX", "0"],
    &["SET", "e", "v", "EX", "-5"],
    &["SET", "e", "v", "EX", "x"],
    &["SET", "e", "v", "EX"],
    &["SET", "e", "v", "EX", "10", "PX", "100"],
    &["SET", "e", "v", "KEEPTTL", "EX", "10"],
    &["SET", "e", "v", "EX", "9223372036854775807"],
    &["SET", "e", "v", "PXAT", "9999999999999"],
    &["PEXPIRETIME", "e"],
    &["EXPIRETIME", "e"],
    &["PERSIST", "e"],
    &["PERSIST", "e"],
    &["TTL", "e"],
    &["EXPIRE", "e", "100"],
    &["EXPIRE", "e", "200", "NX"],
    &["EXPIRE", "e", "200", "XX"],
    &["TTL", "e"],
    &["EXPIRE", "e", "50", "GT"],
    &["EXPIRE", "e", "50", "LT"],
    &["TTL", "e"],
    &["SET", "nottl", "v"],
    &["EXPIRE", "nottl", "200", "LT", "XX"],
    &["EXPIRE", "nottl", "200", "GT", "XX"],
    &["TTL", "nottl"],
    &["EXPIRE", "e", "50", "NX", "XX"],
    &["EXPIRE", "e", "50", "GT", "LT"],
    &["EXPIRE", "e", "50", "BAD"],
    &["EXPIRE", "e", "x"],
    &["EXPIRE", "e", "9223372036854775807"],
    &["EXPIREAT", "e", "9999999999"],
    &["EXPIRETIME", "e"],
    &["PEXPIREAT", "e", "99999999999999"],
    &["PEXPIRETIME", "e"],
    &["SET", "p", "v"],
    &["EXPIRE", "p", "10", "GT"],
    &["EXPIRE", "p", "10", "LT"],
    &["TTL", "p"],
    &["EXPIRE", "nothere", "10"],
    &["EXPIRE", "p", "-1"],
    &["EXISTS", "p"],
    &["SETEX", "s2", "100", "v"],
    &["TTL", "s2"],
    &["SETEX", "s2", "0", "v"],
    &["PSETEX", "s2", "100000", "v"],
    &["TTL", "s2"],
    &["GETEX", "s2"],
    &["GETEX", "s2", "PERSIST"],
    &["TTL", "s2"],
    &["GETEX", "s2", "EX", "300"],
    &["TTL", "s2"],
    &["GETEX", "s2", "EX", "0"],
    &["GETEX", "s2", "EX", "10", "PERSIST"],
    &["GETEX", "nothere", "EX", "10"],
    &["INCR", "s2"],
    &["SET", "c", "1", "EX", "100"],
    &["INCR", "c"],
    &["APPEND", "c", "0"],
    &["TTL", "c"],
    &["RENAME", "c", "c2"],
    &["TTL", "c2"],
    &["COPY", "c2", "c3"],
    &["TTL", "c3"],
    &["GETEX", "c3", "PXAT", "1"],
    &["EXISTS", "c3"],
    &["SETBIT", "b", "1", "1"],
    &["SETBIT", "b", "7", "1"],
    &["SETBIT", "b", "1", "0"],
    &["GET", "b"],
    &["GETBIT", "b", "7"],
    &["GETBIT", "b", "100"],
    &["GETBIT", "nothere", "0"],
    &["SETBIT", "b", "-1", "1"],
    &["SETBIT", "b", "4294967296", "1"],
    &["SETBIT", "b", "0", "2"],
    &["SETBIT", "b", "0", "x"],
    &["SET", "v1", "ohmytext"],
    &["SET", "v2", "mynewtext"],
    &["LCS", "v1", "v2"],
    &["LCS", "v1", "v2", "LEN"],
    &["LCS", "v1", "v2", "IDX"],
    &["LCS", "v1", "v2", "IDX", "WITHMATCHLEN"],
    &["LCS", "v1", "v2", "IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"],
    &["LCS", "v1", "v2", "IDX", "LEN"],
    &["LCS", "v1", "nothere"],
    &["LCS", "v1", "v2", "BAD"],
    &["MULTI"],
    &["INCR", "t"],
    &["APPEND", "t", "0"],
    &["GETRANGE", "t", "0", "0"],
    &["EXEC"],
];

#[test]
fn string_commands_answer_as_redis_does() {
    let Some(redis) = common::resp::Redis::start("string_commands_answer_as_redis_does") else {
        return;
    };
    let kvs = RespServer::start(&[], &[]);
    let mut ours = kvs.raw();
    let mut theirs = common::resp::Raw::unix(&redis.sock);
    for cmd in STRING_COMMANDS {
        let (a, b) = (ours.ask(cmd), theirs.ask(cmd));
        assert_eq!(a, b, "{cmd:?}");
    }
}

#[test]
fn counters_raced_by_many_resp_clients_lose_no_increment() {
    let kvs = RespServer::start(&[], &[]);
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let url = if c % 2 == 0 { kvs.url() } else { kvs.tcp_url() };
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                for _ in 0..50 {
                    // Pipelines of ten, and a different change between.
                    let mut p = redis::pipe();
                    for _ in 0..10 {
                        p.cmd("INCR").arg("n").ignore();
                    }
                    p.cmd("INCRBY").arg("m").arg(-2).ignore();
                    p.cmd("APPEND").arg("log").arg("x").ignore();
                    p.exec(&mut con).unwrap();
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let mut con = kvs.con();
    assert_eq!(con.get::<_, i64>("n").unwrap(), 8 * 50 * 10);
    assert_eq!(con.get::<_, i64>("m").unwrap(), -2 * 8 * 50);
    assert_eq!(con.strlen::<_, usize>("log").unwrap(), 8 * 50);
}

#[test]
fn new_key_events_as_redis_sends_them() {
    // Keyspace and key-event messages for `CONFIG SET notify-keyspace-events
    // KEA` + `n`, against redis-server where it is here.
    fn events(raw: &mut common::resp::Raw, sub: &mut common::resp::Raw) -> Vec<String> {
        assert_eq!(
            raw.ask(&["CONFIG", "SET", "notify-keyspace-events", "En$"]),
            "+OK\r\n"
        );
        sub.cmd(&["PSUBSCRIBE", "__keyevent@0__:*"]);
        sub.reply();
        for cmd in [
            &["SET", "fresh", "1"][..],
            &["SET", "fresh", "2"],
            &["INCR", "counter"],
            &["INCR", "counter"],
            &["APPEND", "text", "a"],
            &["MSET", "m1", "1", "fresh", "3"],
        ] {
            raw.ask(cmd);
        }
        let mut got = Vec::new();
        while let Some(m) = sub.reply_within(std::time::Duration::from_millis(300)) {
            got.push(String::from_utf8_lossy(&m).into_owned());
        }
        raw.ask(&["CONFIG", "SET", "notify-keyspace-events", ""]);
        got
    }
    let kvs = RespServer::start(&[], &[]);
    let ours = events(&mut kvs.raw(), &mut kvs.raw());
    let news = ours
        .iter()
        .filter(|m| m.contains("__keyevent@0__:new"))
        .count();
    assert_eq!(news, 4, "fresh, counter, text, m1: {ours:?}");
    if let Some(redis) = common::resp::Redis::start("new_key_events_as_redis_sends_them") {
        let theirs = events(
            &mut common::resp::Raw::unix(&redis.sock),
            &mut common::resp::Raw::unix(&redis.sock),
        );
        assert_eq!(ours, theirs);
    }
}
