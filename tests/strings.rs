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
