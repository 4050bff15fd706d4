//! kvs-client against a server written the way the course's C servers are
//! (issue 20): a stand-in here, with raw FIFO reads and writes, that
//! blocks opening the client's request FIFO before it answers the connect,
//! in each op-code form (SPEC's bytes, and ASCII digits). The real
//! kvs-client goes through connect, SUBSCRIBE, a notification,
//! UNSUBSCRIBE and DISCONNECT, printing what SPEC section 4 says.

mod common;

use common::{mkfifo, ClientProc};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

const FIELD: usize = 41;

fn field(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn padded(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.resize(FIELD, 0);
    v
}

/// What the stand-in saw, for the test to check.
#[derive(Debug, Default)]
struct Seen {
    ops: Vec<u8>,
}

/// The stand-in server: one client, then it ends. `ascii`: op codes are
/// the digits '1'..'7' both ways.
fn stand_in(registration: PathBuf, ascii: bool) -> std::thread::JoinHandle<Seen> {
    // Open for reading before the client starts (a C server blocks in
    // open(O_RDONLY) here, which a non-blocking writer sees as a reader).
    let mut reg = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&registration)
        .unwrap();
    let wire = move |op: u8| if ascii { op + b'0' } else { op };
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        let mut msg = [0u8; 121];
        let mut got = 0;
        let start = std::time::Instant::now();
        while got < msg.len() {
            assert!(start.elapsed().as_secs() < 10, "no connect request");
            match reg.read(&mut msg[got..]) {
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        seen.ops.push(msg[0]);
        let path = |i: usize| PathBuf::from(field(&msg[1 + i * 40..1 + (i + 1) * 40]));
        let (req, resp, notif) = (path(0), path(1), path(2));
        // As the C code does it: the request FIFO first, blocking until
        // the client opens it for writing, and only then the answer.
        let mut req = File::open(&req).unwrap();
        let mut resp = OpenOptions::new().write(true).open(&resp).unwrap();
        let mut notif = OpenOptions::new().write(true).open(&notif).unwrap();
        resp.write_all(&[wire(1), b'0']).unwrap();
        loop {
            let mut op = [0u8; 1];
            if req.read(&mut op).unwrap() == 0 {
                break;
            }
            seen.ops.push(op[0]);
            let code = if ascii {
                op[0].wrapping_sub(b'0')
            } else {
                op[0]
            };
            match code {
                2 => {
                    resp.write_all(&[op[0], b'0']).unwrap();
                    break;
                }
                3 | 4 => {
                    let mut key = [0u8; FIELD];
                    req.read_exact(&mut key).unwrap();
                    let key = field(&key);
                    if code == 3 {
                        resp.write_all(&[op[0], b'1']).unwrap();
                        let mut n = padded(&key);
                        n.extend(padded("fromthestandin"));
                        notif.write_all(&n).unwrap();
                    } else {
                        resp.write_all(&[op[0], b'0']).unwrap();
                    }
                }
                other => panic!("unexpected op {other}"),
            }
        }
        seen
    })
}

fn drive(options: &[&str], ascii: bool, id: &str) {
    let dir = tempfile::tempdir().unwrap();
    let registration = dir.path().join("reg");
    mkfifo(&registration);
    let server = stand_in(registration.clone(), ascii);
    let mut client = ClientProc::start_with(options, id, &registration);
    client.expect("Server returned 0 for operation: connect");
    client.send("SUBSCRIBE [k]");
    // The answer and the notification come on two FIFOs: either first.
    let mut two = [client.next_line(), client.next_line()];
    two.sort();
    assert_eq!(
        two,
        [
            "(k,fromthestandin)".to_string(),
            "Server returned 1 for operation: subscribe".to_string()
        ]
    );
    client.send("UNSUBSCRIBE [k]");
    client.expect("Server returned 0 for operation: unsubscribe");
    client.send("DISCONNECT");
    client.expect("Server returned 0 for operation: disconnect");
    assert!(client.wait().success(), "{:?}", client.seen);
    let seen = server.join().unwrap();
    let want: Vec<u8> = [1u8, 3, 4, 2]
        .iter()
        .map(|&op| if ascii { op + b'0' } else { op })
        .collect();
    assert_eq!(seen.ops, want);
}

#[test]
fn a_server_that_opens_the_request_fifo_before_answering_binary() {
    drive(&[], false, "cs-bin");
}

#[test]
fn a_server_that_speaks_ascii_op_codes() {
    drive(&["--op-codes", "ascii"], true, "cs-ascii");
}

#[test]
fn a_server_that_never_answers_is_still_reported() {
    let dir = tempfile::tempdir().unwrap();
    let registration = dir.path().join("reg");
    mkfifo(&registration);
    // A reader that takes the request and says nothing.
    let _reg = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&registration)
        .unwrap();
    let mut client = ClientProc::start("cs-mute", &registration);
    let started = std::time::Instant::now();
    let status = client.wait();
    assert_eq!(status.code(), Some(1), "{:?}", client.seen);
    assert!(started.elapsed().as_secs() < 15);
    // Its reason, on stderr (next_line fails the test if it never comes).
    while !client.next_line().contains("did not answer") {}
}

#[test]
fn a_bad_op_codes_value_is_a_usage_error() {
    let out = std::process::Command::new(common::CLIENT)
        .args(["--op-codes", "hex", "x", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("binary or ascii"));
}

/// kvs's decision (SPEC section 3): a subscription outlives a DELETE of its
/// key, where the course's published C servers drop it with the key.
#[test]
fn at_kvs_a_subscription_outlives_a_delete_of_its_key() {
    let srv = common::Server::start(&[], &[]);
    let mut writer = common::session("cs-w", &srv.fifo);
    let mut sub = common::session("cs-s", &srv.fifo);
    use kvs::protocol::fifo::Request;
    assert_eq!(writer.ask(common::write("k", "1")), b'0');
    assert_eq!(sub.ask(Request::Subscribe("k".into())), b'1');
    assert_eq!(writer.ask(Request::Delete("k".into())), b'0');
    assert_eq!(sub.note(), ("k".to_string(), "DELETED".to_string()));
    assert_eq!(writer.ask(common::write("k", "2")), b'0');
    assert_eq!(
        sub.note(),
        ("k".to_string(), "2".to_string()),
        "still subscribed"
    );
    assert_eq!(sub.ask(Request::Unsubscribe("k".into())), b'0');
}
