//! End-to-end tests of server mode: the real `kvs` server, reached by the
//! real `kvs-client` and by in-process sessions speaking the wire protocol.

mod common;

use common::*;
use kvs::client::{read_notification_within, ClientError, ClientFifos, Connection};
use kvs::protocol::fifo::{self as protocol, Request};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn job_changes_reach_a_subscribed_client_in_order() {
    let server = Server::start(
        &[(
            "live.job",
            "WRITE [(temp,20)]\nWAIT 2000\nWRITE [(temp,21)]\nDELETE [temp]\n",
        )],
        &[],
    );
    let mut c = ClientProc::start("live", &server.fifo);
    c.expect("Server returned 0 for operation: connect");
    // The job's first write may not have run yet: subscribe until it has.
    let start = Instant::now();
    loop {
        c.send("SUBSCRIBE [temp]");
        let line = c.next_line();
        if line == "Server returned 1 for operation: subscribe" {
            break;
        }
        assert_eq!(line, "Server returned 0 for operation: subscribe");
        assert!(start.elapsed() < WAIT, "key never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.next_line(), "(temp,21)");
    assert_eq!(c.next_line(), "(temp,DELETED)");
    c.send("DISCONNECT");
    c.expect("Server returned 0 for operation: disconnect");
    assert_eq!(c.wait().code(), Some(0));
}

#[test]
fn client_commands_and_answers() {
    let server = Server::start(&[], &[]);
    let mut c = ClientProc::start("cmds", &server.fifo);
    c.expect("Server returned 0 for operation: connect");
    for (line, want) in [
        (
            "SUBSCRIBE [k]",
            "Server returned 0 for operation: subscribe",
        ),
        ("WRITE [(k,v1)]", "Server returned 0 for operation: write"),
        (
            "SUBSCRIBE [k]",
            "Server returned 1 for operation: subscribe",
        ),
        ("READ [k]", "Server returned 0 for operation: read"),
        ("WRITE [(j,2)]", "[(k,v1)]"),
        ("READ [nope,k,j]", "Server returned 1 for operation: read"),
        ("DELAY 1", "[(j,2)(k,v1)(nope,KVSERROR)]"),
        (
            "UNSUBSCRIBE [nope]",
            "Server returned 1 for operation: unsubscribe",
        ),
        (
            "UNSUBSCRIBE [k]",
            "Server returned 0 for operation: unsubscribe",
        ),
        ("DELETE [nope]", "Server returned 1 for operation: delete"),
        ("BOGUS", "stderr: Invalid command. See HELP for usage"),
        ("HELP", "  SUBSCRIBE [key,...]"),
        ("DELAY 10", "Waiting..."),
    ] {
        c.send(line);
        c.expect(want);
    }
    c.close_stdin();
    c.expect("Server returned 0 for operation: disconnect");
    assert_eq!(c.wait().code(), Some(0));
    // Its FIFOs are gone.
    assert!(!c.seen.is_empty());
}

#[test]
fn many_subscribers_get_every_change_in_order() {
    let server = Server::start(&[], &[]);
    let keys: Vec<String> = (0..20).map(|i| format!("key{i}")).collect();
    let mut writer = session("w", &server.fifo);
    for k in &keys {
        assert_eq!(writer.ask(write(k, "0")), b'0');
    }
    const CLIENTS: usize = 200;
    const ROUNDS: usize = 20;
    let mut subs: Vec<(Session, Vec<String>)> = (0..CLIENTS)
        .map(|i| {
            let mut s = session(&format!("s{i}"), &server.fifo);
            let mine: Vec<String> = (0..5)
                .map(|j| keys[(i + j * 3) % keys.len()].clone())
                .collect();
            for k in &mine {
                assert_eq!(s.ask(Request::Subscribe(k.clone())), b'1');
            }
            (s, mine)
        })
        .collect();
    for n in 1..=ROUNDS {
        for k in &keys {
            assert_eq!(writer.ask(write(k, &n.to_string())), b'0');
        }
    }
    for (s, mine) in &mut subs {
        let mut last: std::collections::HashMap<String, usize> =
            mine.iter().map(|k| (k.clone(), 0)).collect();
        for _ in 0..mine.len() * ROUNDS {
            let (k, v) = s.note();
            let v: usize = v.parse().expect("numeric value");
            let prev = last
                .get_mut(&k)
                .unwrap_or_else(|| panic!("unsubscribed key {k}"));
            assert_eq!(v, *prev + 1, "key {k} out of order");
            *prev = v;
        }
        assert!(last.values().all(|&v| v == ROUNDS));
    }
}

/// A client whose stderr is gone (a terminal tmux closed, a pipe nobody
/// reads) still ends when the server disconnects it, and removes its
/// FIFOs: printing "Disconnected by server" used to panic the thread that
/// was ending the program, and the client stayed parked for good.
#[test]
fn a_client_with_nowhere_to_print_errors_still_ends_when_disconnected() {
    use std::io::BufRead;
    let server = Server::start(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut child = client_command(&[], "mute", &server.fifo, dir.path())
        .spawn()
        .expect("start kvs-client");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "Server returned 0 for operation: connect\n");
    // Nobody reads its stderr any more; its stdin stays open.
    drop(child.stderr.take());
    server.signal(Signal::SIGUSR1);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the disconnected client never ended");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "FIFOs left behind: {left:?}");
}

#[test]
fn sigusr1_disconnects_everyone_and_keeps_the_data() {
    let server = Server::start(&[], &[]);
    let mut clients: Vec<ClientProc> = (0..3)
        .map(|i| {
            let mut c = ClientProc::start(&format!("u{i}"), &server.fifo);
            c.expect("Server returned 0 for operation: connect");
            c.send(&format!("WRITE [(u{i},kept)]"));
            c.expect("Server returned 0 for operation: write");
            c.send(&format!("SUBSCRIBE [u{i}]"));
            c.expect("Server returned 1 for operation: subscribe");
            c
        })
        .collect();
    server.signal(Signal::SIGUSR1);
    for c in &mut clients {
        c.expect("stderr: Disconnected by server");
        assert_eq!(c.wait().code(), Some(1));
    }
    let mut fresh = session("fresh", &server.fifo);
    for i in 0..3 {
        let a = fresh.conn.request(&Request::Read(format!("u{i}"))).unwrap();
        assert_eq!(a.value.as_deref(), Some("kept"));
    }
    // Subscriptions were forgotten: a change reaches only the new subscriber.
    assert_eq!(fresh.ask(Request::Subscribe("u0".into())), b'1');
    assert_eq!(fresh.ask(write("u0", "new")), b'0');
    assert_eq!(fresh.note(), ("u0".into(), "new".into()));
}

#[test]
fn a_killed_client_does_not_hurt_the_server() {
    let server = Server::start(&[], &[]);
    let mut victim = ClientProc::start("victim", &server.fifo);
    victim.expect("Server returned 0 for operation: connect");
    victim.send("WRITE [(x,1)]");
    victim.expect("Server returned 0 for operation: write");
    victim.send("SUBSCRIBE [x]");
    victim.expect("Server returned 1 for operation: subscribe");
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let mut other = session("other", &server.fifo);
    assert_eq!(other.ask(Request::Subscribe("x".into())), b'1');
    for n in 0..100 {
        assert_eq!(other.ask(write("x", &n.to_string())), b'0');
    }
    for n in 0..100 {
        assert_eq!(other.note().1, n.to_string());
    }
}

#[test]
fn a_client_that_never_reads_is_cut_off_and_others_go_on() {
    let server = Server::start(&[], &["--output-buffer", "4096"]);
    let mut writer = session("w", &server.fifo);
    assert_eq!(writer.ask(write("hot", "0")), b'0');
    let mut sleeper = session("sleeper", &server.fifo);
    assert_eq!(sleeper.ask(Request::Subscribe("hot".into())), b'1');
    let mut reader = session("reader", &server.fifo);
    assert_eq!(reader.ask(Request::Subscribe("hot".into())), b'1');
    // 2,000 notifications of 82 bytes: far more than a pipe (64 KiB) and
    // the 4 KiB buffer hold. The reader keeps up as they come.
    for n in 1..=2000 {
        assert_eq!(writer.ask(write("hot", &n.to_string())), b'0');
        assert_eq!(reader.note(), ("hot".into(), n.to_string()));
    }
    server.wait_log("client");
    assert!(server.log().contains("not reading"), "{}", server.log());
    // The sleeper finds its session closed once it drains its pipe.
    let mut closed = false;
    for _ in 0..2000 {
        match read_notification_within(&mut sleeper.notif, WAIT) {
            Ok(_) => continue,
            Err(ClientError::Disconnected) => {
                closed = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(closed, "slow client was never disconnected");
}

#[test]
fn a_client_that_closes_its_notification_fifo_is_told_to_the_log_and_ended() {
    let server = Server::start(&[], &[]);
    let d = client_dir();
    let fifos = ClientFifos::create(d.path(), "leaver").unwrap();
    let mut conn = Connection::connect(&fifos, &server.fifo).unwrap();
    drop(conn.take_notifications());
    server.wait_log("was closed without DISCONNECT");
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("was closed without DISCONNECT"))
        .unwrap_or_default();
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains("leaver: its notification FIFO"), "{line}");
    assert!(conn.request(&Request::Read("k".into())).is_err());
    // Others are served as ever.
    let mut s = session("stayer", &server.fifo);
    assert_eq!(s.ask(write("k", "v")), b'0');
}

#[test]
fn fifos_that_are_files_or_links_are_refused() {
    let server = Server::start(&[], &[]);
    let d = client_dir();
    let [req, resp, notif] = three_fifos(d.path());
    // A regular file as the notification FIFO: refused with '1'.
    std::fs::remove_file(&notif).unwrap();
    std::fs::write(&notif, b"precious").unwrap();
    let mut answer = File::from(
        nix::fcntl::open(
            &resp,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .unwrap(),
    );
    raw_connect(&server.fifo, &req, &resp, &notif);
    server.wait_log("notification FIFO");
    let mut buf = [0u8; 2];
    answer.read_exact(&mut buf).unwrap();
    assert_eq!(buf, [protocol::OP_CONNECT, protocol::FAIL]);
    assert_eq!(std::fs::read(&notif).unwrap(), b"precious");

    // A symlink to a FIFO, and a regular file as the response FIFO: refused,
    // nothing is written anywhere.
    let link = d.path().join("ln");
    std::os::unix::fs::symlink(&req, &link).unwrap();
    let file = d.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    raw_connect(&server.fifo, &req, &link, &resp);
    server.wait_log("symbolic link");
    raw_connect(&server.fifo, &req, &file, &resp);
    server.wait_log("is not a FIFO");
    raw_connect(&server.fifo, &req, Path::new("/dev/null"), &resp);
    assert_eq!(std::fs::read(&file).unwrap(), b"x");

    // Another client's FIFOs cannot be borrowed.
    let owner = session("own", &server.fifo);
    raw_connect(&server.fifo, &req, &owner.fifos.resp, &notif);
    server.wait_log("already in use");

    // The server still serves.
    let mut ok = session("ok", &server.fifo);
    assert_eq!(ok.ask(write("a", "b")), b'0');
}

#[test]
fn malformed_messages_get_errors_and_the_server_goes_on() {
    let server = Server::start(&[], &[]);
    {
        // Garbage, a bad op, a short fragment on the registration FIFO.
        let mut reg = std::fs::OpenOptions::new()
            .write(true)
            .open(&server.fifo)
            .unwrap();
        reg.write_all(&[9u8; 121]).unwrap();
        reg.write_all(b"short").unwrap();
    }
    server.wait_log("bad connect request");
    std::thread::sleep(Duration::from_millis(150));
    let mut s = session("m", &server.fifo);
    assert_eq!(s.ask(write("k", "v")), b'0');

    // A key field with no NUL in its 41 bytes: op, '1', session goes on.
    let d = client_dir();
    let fifos = ClientFifos::create(d.path(), "raw").unwrap();
    let mut conn = Connection::connect(&fifos, &server.fifo).unwrap();
    // Held open: a client that closes its notification FIFO is gone.
    let _notif = conn.take_notifications();
    let mut req = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifos.req)
        .unwrap();
    let mut resp = File::open(&fifos.resp).unwrap();
    let mut bad = vec![protocol::OP_READ];
    bad.extend_from_slice(&[b'a'; 41]);
    req.write_all(&bad).unwrap();
    let mut buf = [0u8; 2];
    resp.read_exact(&mut buf).unwrap();
    assert_eq!(buf, [protocol::OP_READ, protocol::FAIL]);
    assert_eq!(
        conn.request(&Request::Read("k".into()))
            .unwrap()
            .value
            .as_deref(),
        Some("v")
    );
    // An unknown op: answered with '1', then the session is closed.
    req.write_all(&[42]).unwrap();
    resp.read_exact(&mut buf).unwrap();
    assert_eq!(buf, [42, protocol::FAIL]);
    let mut rest = Vec::new();
    // End of file: the server closed its end.
    resp.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    // Everyone else is still served.
    assert_eq!(s.ask(write("k", "w")), b'0');
}

#[test]
fn a_failed_backup_is_logged_like_any_server_event() {
    let mut server = Server::start(&[("f.job", "WAIT 1000\nWRITE [(a,1)]\nBACKUP\n")], &[]);
    // Created while the job waits: the backup's temporary name is a folder.
    std::fs::create_dir(server.jobs.join("f-1.bck.tmp")).unwrap();
    server.wait_log("f-1.bck");
    let log = server.log();
    let line = log.lines().find(|l| l.contains("f-1.bck")).unwrap();
    // A timestamp, a level, and the child's reason.
    let (stamp, rest) = line.split_once(' ').unwrap();
    assert!(stamp.ends_with('Z') && stamp.contains('T'), "{line}");
    assert!(rest.starts_with("ERROR backup "), "{line}");
    assert!(
        rest.ends_with("failed: remove old temporary file: Is a directory"),
        "{line}"
    );
    assert!(!server.jobs.join("f-1.bck").exists());
    assert_eq!(server.stop().code(), Some(0), "{log}");
}

#[test]
fn sigterm_exits_cleanly() {
    let mut server = Server::start(&[("slow.job", "WAIT 300\nWRITE [(a,1)]\nBACKUP\n")], &[]);
    let mut c = session("t", &server.fifo);
    assert_eq!(c.ask(write("b", "2")), b'0');
    wait_for_file(&server.jobs.join("slow.out"), "Waiting...\n");
    let status = server.stop();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(!server.fifo.exists(), "registration FIFO left behind");
    // The running job finished and its backup was written.
    assert_eq!(
        std::fs::read_to_string(server.jobs.join("slow.out")).unwrap(),
        "Waiting...\n"
    );
    assert!(server.jobs.join("slow-1.bck").exists());
    let dir = server.dir.path().to_str().unwrap().to_owned();
    assert_eq!(processes_mentioning(&dir), Vec::<u32>::new());
    // The session was closed.
    assert!(matches!(
        read_notification_within(&mut c.notif, WAIT),
        Err(ClientError::Disconnected)
    ));
}

#[test]
fn a_second_server_on_the_same_fifo_is_refused() {
    let server = Server::start(&[], &[]);
    let out = run_kvs(&[
        server.jobs.to_str().unwrap(),
        "1",
        "1",
        server.fifo.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("another process"), "{}", out.stderr);
    let file = server.dir.path().join("plain");
    std::fs::write(&file, b"").unwrap();
    let out = run_kvs(&[
        server.jobs.to_str().unwrap(),
        "1",
        "1",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("not a FIFO"), "{}", out.stderr);
}

#[test]
fn limits_give_error_answers_not_crashes() {
    let server = Server::start(&[], &["--max-sessions", "2", "--max-subscriptions", "2"]);
    let mut a = session("la", &server.fifo);
    let _b = session("lb", &server.fifo);
    // A third session is refused with '1' on its response FIFO.
    let d = client_dir();
    let fifos = ClientFifos::create(d.path(), "lc").unwrap();
    assert!(matches!(
        Connection::connect(&fifos, &server.fifo),
        Err(ClientError::Refused)
    ));
    server.wait_log("session limit (2) reached");
    for k in ["k1", "k2", "k3"] {
        assert_eq!(a.ask(write(k, "v")), b'0');
    }
    assert_eq!(a.ask(Request::Subscribe("k1".into())), b'1');
    assert_eq!(a.ask(Request::Subscribe("k2".into())), b'1');
    // Subscribing again to a key already held is not a new subscription.
    assert_eq!(a.ask(Request::Subscribe("k2".into())), b'1');
    assert_eq!(a.ask(Request::Subscribe("k3".into())), b'0');
    server.wait_log("subscription limit (2) reached");
    // Freeing one makes room again.
    assert_eq!(a.ask(Request::Unsubscribe("k1".into())), b'0');
    assert_eq!(a.ask(Request::Subscribe("k3".into())), b'1');
    assert_eq!(a.ask(write("k3", "changed")), b'0');
    assert_eq!(a.note(), ("k3".into(), "changed".into()));
}

#[test]
fn a_client_whose_server_dies_says_so_and_cleans_up() {
    let mut server = Server::start(&[], &[]);
    let mut c = ClientProc::start("orphan", &server.fifo);
    c.expect("Server returned 0 for operation: connect");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    c.expect("stderr: Disconnected by server");
    assert_eq!(c.wait().code(), Some(1));
    let dir = c.fifo_dir().to_path_buf();
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        0,
        "client FIFOs left behind"
    );
}

#[test]
fn client_usage() {
    let run = |args: &[&str]| {
        std::process::Command::new(CLIENT)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("usage: kvs-client"));
    for bad in [
        &[][..],
        &["only-one"][..],
        &["a/b", "/tmp/x"][..],
        &["a", "b", "c"][..],
    ] {
        let out = run(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage: kvs-client"));
    }
    // No server there: a clear error, exit 1, no FIFOs left.
    let d = client_dir();
    let out = std::process::Command::new(CLIENT)
        .args(["lonely", "/nonexistent/registration"])
        .env("TMPDIR", d.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no server is listening"));
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
}

#[test]
fn a_client_id_in_use_is_refused_and_left_alone() {
    let server = Server::start(&[], &[]);
    let mut first = ClientProc::start("twin", &server.fifo);
    first.expect("Server returned 0 for operation: connect");
    let out = std::process::Command::new(CLIENT)
        .args(["twin"])
        .arg(&server.fifo)
        .env("TMPDIR", first.fifo_dir())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    // The first client is untouched.
    first.send("WRITE [(twin,1)]");
    first.expect("Server returned 0 for operation: write");
    first.close_stdin();
    first.expect("Server returned 0 for operation: disconnect");
    assert_eq!(first.wait().code(), Some(0));
}

#[test]
fn sigterm_lets_running_jobs_finish_and_starts_no_more() {
    // Two workers: a.job and b.job run, c.job waits for a free worker.
    let job = "WAIT 1000\nWRITE [(x,1)]\nREAD [x]\n";
    let mut server = Server::start(&[("a.job", job), ("b.job", job), ("c.job", job)], &[]);
    // Both workers are inside their WAIT once their .out says so.
    for o in ["a.out", "b.out"] {
        wait_for_file(&server.jobs.join(o), "Waiting...\n");
    }
    assert_eq!(server.stop().code(), Some(0), "{}", server.log());
    for o in ["a.out", "b.out"] {
        let text = std::fs::read_to_string(server.jobs.join(o)).unwrap();
        assert_eq!(text, "Waiting...\n[(x,1)]\n", "{o}");
    }
    assert!(
        !server.jobs.join("c.out").exists(),
        "a job started after SIGTERM"
    );
    assert!(
        server.log().contains("1 job files were not started"),
        "{}",
        server.log()
    );
}

#[test]
fn the_registration_fifo_has_the_mode_asked_for() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let server = Server::start(&[], &[]);
    let meta = std::fs::symlink_metadata(&server.fifo).unwrap();
    assert!(meta.file_type().is_fifo());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let shared = Server::start(&[], &["--fifo-mode", "666"]);
    let meta = std::fs::symlink_metadata(&shared.fifo).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o666);
}

#[test]
fn a_client_whose_stdout_reader_quits_ends_quietly_and_cleans_up() {
    use std::io::{BufRead, BufReader};
    let server = Server::start(&[], &[]);
    let d = client_dir();
    let mut child = std::process::Command::new(CLIENT)
        .args(["headed"])
        .arg(&server.fifo)
        .env("TMPDIR", d.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    {
        // Like `kvs-client ... | head -1`: one line, then the reader is gone.
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert_eq!(first, "Server returned 0 for operation: connect\n");
    }
    writeln!(stdin, "WRITE [(h,1)]\nREAD [h]\nREAD [h]").unwrap();
    drop(stdin);
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        0,
        "FIFOs left behind"
    );
}

#[test]
fn watchers_of_one_key_come_and_go_independently() {
    let server = Server::start(&[], &[]);
    let mut a = session("wa", &server.fifo);
    let mut b = session("wb", &server.fifo);
    assert_eq!(a.ask(write("shared", "0")), b'0');
    // a subscribes twice (a no-op the second time) and unsubscribes once.
    assert_eq!(a.ask(Request::Subscribe("shared".into())), b'1');
    assert_eq!(a.ask(Request::Subscribe("shared".into())), b'1');
    assert_eq!(b.ask(Request::Subscribe("shared".into())), b'1');
    assert_eq!(a.ask(Request::Unsubscribe("shared".into())), b'0');
    assert_eq!(a.ask(write("shared", "1")), b'0');
    assert_eq!(b.note(), ("shared".into(), "1".into()));
    // a is no longer subscribed: it gets nothing, and its next request's
    // answer is not preceded by a notification.
    assert_eq!(a.ask(Request::Unsubscribe("shared".into())), b'1');
    assert!(matches!(
        read_notification_within(&mut a.notif, Duration::from_millis(200)),
        Err(ClientError::Timeout)
    ));
    // a goes away entirely; b still hears every change.
    assert_eq!(a.ask(Request::Disconnect), b'0');
    drop(a);
    for n in 2..5 {
        assert_eq!(b.ask(write("shared", &n.to_string())), b'0');
        assert_eq!(b.note(), ("shared".into(), n.to_string()));
    }
    // b unsubscribes and subscribes again: it hears the next change.
    assert_eq!(b.ask(Request::Unsubscribe("shared".into())), b'0');
    assert_eq!(b.ask(Request::Subscribe("shared".into())), b'1');
    assert_eq!(b.ask(write("shared", "9")), b'0');
    assert_eq!(b.note(), ("shared".into(), "9".into()));
}

/// A client written for the op-codes-as-digits form of the protocol,
/// played byte for byte with plain blocking opens, as such a C client does.
#[test]
fn a_client_sending_ascii_op_codes_is_served_in_its_form() {
    use kvs::protocol::fifo::{push_string, ConnectRequest, OpForm};
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    let server = Server::start(&[], &[]);
    let d = client_dir();
    let [req, resp, notif] = three_fifos(d.path());
    let msg = ConnectRequest {
        req: req.as_os_str().as_bytes().to_vec(),
        resp: resp.as_os_str().as_bytes().to_vec(),
        notif: notif.as_os_str().as_bytes().to_vec(),
        form: OpForm::Ascii,
    }
    .encode()
    .unwrap();
    assert_eq!(msg[0], b'1');
    send_registration(&server.fifo, &msg);
    let mut answers = File::open(&resp).unwrap();
    let mut two = [0u8; 2];
    answers.read_exact(&mut two).unwrap();
    assert_eq!(&two, b"10", "connect answered in the client's form");
    let mut requests = std::fs::OpenOptions::new().write(true).open(&req).unwrap();
    let mut notes = File::open(&notif).unwrap();
    let frame = |op: u8, fields: &[&str]| {
        let mut f = vec![op];
        for s in fields {
            push_string(&mut f, s);
        }
        f
    };
    let mut ask = |bytes: Vec<u8>, answer: &mut [u8]| {
        requests.write_all(&bytes).unwrap();
        answers.read_exact(answer).unwrap();
    };
    ask(frame(b'6', &["ak", "1"]), &mut two);
    assert_eq!(&two, b"60");
    ask(frame(b'3', &["ak"]), &mut two);
    assert_eq!(&two, b"31", "subscribed");
    let mut other = session("binary", &server.fifo);
    assert_eq!(
        other.ask(write("ak", "2")),
        b'0',
        "binary clients are answered as before"
    );
    let mut note = [0u8; protocol::NOTIFICATION_LEN];
    notes.read_exact(&mut note).unwrap();
    assert_eq!(protocol::field_str(&note[..41]), "ak");
    assert_eq!(protocol::field_str(&note[41..]), "2");
    let mut read = [0u8; 43];
    ask(frame(b'5', &["ak"]), &mut read);
    assert_eq!(&read[..2], b"50");
    assert_eq!(protocol::field_str(&read[2..]), "2");
    ask(frame(b'4', &["ak"]), &mut two);
    assert_eq!(&two, b"40");
    ask(frame(b'7', &["ak"]), &mut two);
    assert_eq!(&two, b"70");
    ask(frame(b'2', &[]), &mut two);
    assert_eq!(&two, b"20", "disconnected");
}

#[test]
fn a_connect_in_neither_form_is_logged_with_its_bytes() {
    let server = Server::start(&[], &[]);
    let mut msg = vec![b'X', b'Y'];
    msg.resize(kvs::protocol::fifo::CONNECT_LEN, 0);
    send_registration(&server.fifo, &msg);
    server.wait_log("first bytes: 58 59 00");
}

/// Whether `line` starts with `YYYY-MM-DDTHH:MM:SS.mmmZ LEVEL `.
fn stamped(line: &str, level: &str) -> bool {
    let b = line.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        r.into_iter()
            .all(|i| b.get(i).is_some_and(u8::is_ascii_digit))
    };
    line.len() > 25
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && digits(14..16)
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && line[23..].starts_with(&format!("Z {level} "))
}

#[test]
fn server_log_lines_are_timestamped_and_leveled() {
    let mut server = Server::start(&[("bad.job", "BOGUS\nWRITE [(a,1)]\n")], &[]);
    server.wait_log("Invalid command");
    assert!(server.stop().success());
    let log = server.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        stamped(lines[0], "INFO") && lines[0].contains("serving"),
        "{log}"
    );
    assert!(
        lines[0].contains("1024 sessions"),
        "start-up gives the limits: {log}"
    );
    // A job's own output keeps SPEC's form, unstamped.
    let job = server.jobs.join("bad.job");
    assert!(
        lines.contains(
            &format!("{}:1: Invalid command. See HELP for usage", job.display()).as_str()
        ),
        "{log}"
    );
    let last = lines.last().unwrap();
    assert!(
        stamped(last, "INFO") && last.contains("stopped: closed 0 sessions; 0 job files"),
        "{log}"
    );

    let mut quiet = Server::start(&[], &["--log-level", "warn"]);
    assert!(quiet.stop().success());
    assert!(!quiet.log().contains(" INFO "), "{}", quiet.log());
}
