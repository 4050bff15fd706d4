//! Faults and load against the real server: clients that die at any
//! moment, that never open their FIFOs, that stop reading, storms of
//! SIGUSR1, a thousand sessions, a registration FIFO pulled from under the
//! server, and backups into a full file system. Every wait is bounded.

mod common;

use common::*;
use kvs::client::{ClientError, ClientFifos, Connection};
use kvs::protocol::fifo::{self as protocol, Request};
use nix::sys::signal::Signal;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT_LOG: Duration = Duration::from_secs(10);

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: i32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Waits (bounded) until the server holds `want` descriptors again.
fn wait_fds(server: &Server, want: usize, limit: Duration) {
    let start = Instant::now();
    loop {
        let now = fd_count(server.pid());
        if now == want {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "server holds {now} descriptors, expected {want}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small xorshift generator: random enough to scatter kill times.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(t | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs `f` on a thread and gives up after 10 s: a blocking `open` of a
/// FIFO can wait forever if the server misbehaves.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("blocking call did not return within 10 s")
}

#[test]
fn a_client_opening_its_fifos_in_the_original_order_is_served() {
    // The original C client sends CONNECT, then opens (blocking) its request
    // FIFO for writing, its response FIFO and its notification FIFO for
    // reading, then reads the answer.
    let server = Server::start(&[], &[]);
    let d = client_dir();
    let [rq, rs, nt] = three_fifos(d.path());
    raw_connect(&server.fifo, &rq, &rs, &nt);
    let (rq2, rs2, nt2) = (rq.clone(), rs.clone(), nt.clone());
    let (mut req, mut resp, mut notif) = bounded(move || {
        let req = OpenOptions::new().write(true).open(rq2).unwrap();
        let resp = File::open(rs2).unwrap();
        let notif = File::open(nt2).unwrap();
        (req, resp, notif)
    });
    let mut two = [0u8; 2];
    resp.read_exact(&mut two).unwrap();
    assert_eq!(two, [protocol::OP_CONNECT, protocol::OK]);
    let ask = |req: &mut File, resp: &mut File, r: Request| {
        req.write_all(&r.encode().unwrap()).unwrap();
        let mut two = [0u8; 2];
        resp.read_exact(&mut two).unwrap();
        two
    };
    assert_eq!(
        ask(&mut req, &mut resp, Request::Write("c".into(), "1".into())),
        [6, b'0']
    );
    assert_eq!(
        ask(&mut req, &mut resp, Request::Subscribe("c".into())),
        [3, b'1']
    );
    assert_eq!(
        ask(&mut req, &mut resp, Request::Write("c".into(), "2".into())),
        [6, b'0']
    );
    let mut note = [0u8; protocol::NOTIFICATION_LEN];
    notif.read_exact(&mut note).unwrap();
    assert_eq!(protocol::field_str(&note[..41]), "c");
    assert_eq!(protocol::field_str(&note[41..]), "2");
}

#[test]
fn a_client_that_never_opens_its_fifos_is_dropped_after_the_grace_period() {
    let server = Server::start(&[], &[]);
    let baseline = server.settled_fds();
    let d = client_dir();
    let [rq, rs, nt] = three_fifos(d.path());
    raw_connect(&server.fifo, &rq, &rs, &nt);
    server.wait_log("did not open its response and notification FIFOs");
    wait_fds(&server, baseline, Duration::from_secs(5));
    // The server serves a proper client.
    let mut c = session("x", &server.fifo);
    assert_eq!(c.ask(write("a", "b")), b'0');
}

#[test]
fn clients_killed_at_random_points_leak_nothing() {
    kill_clients_at_random_points(100);
}

/// The soak version: `cargo test --release --test faults -- --ignored`
/// (`KVS_SOAK_ROUNDS` sets the count; 2,000 by default).
#[test]
#[ignore = "soak run: minutes, not seconds"]
fn soak_clients_killed_at_random_points() {
    let rounds = std::env::var("KVS_SOAK_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2000);
    kill_clients_at_random_points(rounds);
}

fn kill_clients_at_random_points(rounds: usize) {
    let server = Server::start(&[], &[]);
    let baseline = server.settled_fds();
    let mut rng = Rng::new();
    for i in 0..rounds {
        let dir = client_dir();
        let mut child = std::process::Command::new(CLIENT)
            .arg(format!("k{i}"))
            .arg(&server.fifo)
            .env("TMPDIR", dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if let Some(stdin) = child.stdin.as_mut() {
            let _ = writeln!(
                stdin,
                "WRITE [(k{i},v)]\nSUBSCRIBE [k{i}]\nREAD [k{i}]\nDELAY 100"
            );
        }
        std::thread::sleep(Duration::from_micros(rng.below(15_000)));
        let _ = child.kill();
        let _ = child.wait();
    }
    // Sessions caught before opening their FIFOs go after the grace period.
    wait_fds(&server, baseline, Duration::from_secs(15));
    let mut c = ClientProc::start("after", &server.fifo);
    c.expect("Server returned 0 for operation: connect");
    c.send("WRITE [(z,1)]");
    c.expect("Server returned 0 for operation: write");
}

#[test]
fn stalled_subscribers_are_cut_off_and_memory_stays_bounded() {
    let server = Server::start(&[], &["--output-buffer", "65536"]);
    let mut writer = session("w", &server.fifo);
    let value = "v".repeat(40);
    assert_eq!(writer.ask(write("flood", &value)), b'0');
    // 50 subscribers that never read: unbounded, 20,000 notifications each
    // would be 80 MiB in the server.
    let sleepers: Vec<_> = (0..50)
        .map(|i| {
            let mut s = session(&format!("s{i}"), &server.fifo);
            assert_eq!(s.ask(Request::Subscribe("flood".into())), b'1');
            s
        })
        .collect();
    let start_rss = rss_kib(server.pid());
    for _ in 0..20_000 {
        assert_eq!(writer.ask(write("flood", &value)), b'0');
    }
    let end_rss = rss_kib(server.pid());
    // Lines over the burst are held back and counted by the sweep (once a
    // second) after their second is over: up to two seconds after the
    // cut-offs, which a fast flood can finish well within.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut cut = server.client_lines("not reading");
    while cut < 50 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        cut = server.client_lines("not reading");
    }
    assert_eq!(cut, 50, "{}", server.log());
    assert!(
        end_rss < start_rss + 32 * 1024,
        "server grew from {start_rss} KiB to {end_rss} KiB"
    );
    drop(sleepers);
}

#[test]
fn a_storm_of_sigusr1_leaves_the_server_consistent() {
    let server = Server::start(&[], &[]);
    let baseline = server.settled_fds();
    let stop = Arc::new(AtomicBool::new(false));
    let fifo = server.fifo.clone();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, fifo) = (stop.clone(), fifo.clone());
            std::thread::spawn(move || {
                let mut connected = 0;
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let d = client_dir();
                    let Ok(fifos) = ClientFifos::create(d.path(), &format!("{w}-{n}")) else {
                        continue;
                    };
                    let Ok(mut c) = Connection::connect(&fifos, &fifo) else {
                        continue;
                    };
                    connected += 1;
                    let _notif = c.take_notifications();
                    // Either answered or cut off by the storm; both are fine.
                    let key = format!("w{w}");
                    if c.request(&Request::Write(key.clone(), n.to_string()))
                        .is_ok()
                    {
                        let _ = c.request(&Request::Subscribe(key));
                    }
                }
                connected
            })
        })
        .collect();
    for _ in 0..100 {
        server.signal(Signal::SIGUSR1);
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::SeqCst);
    let connected: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(connected > 0, "no session connected during the storm");
    // Let the reactor take the last signals before a calm client comes;
    // then every session of the storm is gone, and the server still serves.
    std::thread::sleep(Duration::from_millis(300));
    wait_fds(&server, baseline, Duration::from_secs(15));
    let mut c = session("calm", &server.fifo);
    assert_eq!(c.ask(write("w0", "calm")), b'0');
    assert_eq!(c.ask(Request::Subscribe("w0".into())), b'1');
    assert_eq!(c.ask(write("w0", "last")), b'0');
    assert_eq!(c.note(), ("w0".to_string(), "last".to_string()));
}

#[test]
fn a_thousand_sessions_at_once() {
    kvs::reactor::raise_fd_limit();
    let (soft, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    // This process needs 4 descriptors a session (three FIFOs and the
    // registration write end while connecting).
    let sessions = if soft >= 4200 {
        1000
    } else {
        ((soft as usize) / 4).saturating_sub(50)
    };
    eprintln!("a_thousand_sessions_at_once: {sessions} sessions (descriptor limit {soft})");
    let server = Server::start(&[], &["--max-sessions", "1000"]);
    let baseline = server.settled_fds();
    let d = client_dir();
    let mut open = Vec::new();
    for i in 0..sessions {
        let fifos = ClientFifos::create(d.path(), &i.to_string()).unwrap();
        let mut c = Connection::connect(&fifos, &server.fifo)
            .unwrap_or_else(|e| panic!("session {i}: {e}"));
        let n = c.take_notifications().unwrap();
        open.push((c, n, fifos));
    }
    for (i, (c, _, _)) in open.iter_mut().enumerate() {
        let a = c
            .request(&Request::Write(format!("s{i}"), "up".into()))
            .unwrap();
        assert_eq!(a.code, b'0');
    }
    assert_eq!(fd_count(server.pid()), baseline + 3 * sessions);
    if sessions == 1000 {
        // One more is refused cleanly: the limit is 1,000.
        let fifos = ClientFifos::create(d.path(), "extra").unwrap();
        assert!(matches!(
            Connection::connect(&fifos, &server.fifo),
            Err(ClientError::Refused)
        ));
    }
    for (c, _, _) in open.iter_mut() {
        assert_eq!(c.request(&Request::Disconnect).unwrap().code, b'0');
    }
    drop(open);
    wait_fds(&server, baseline, Duration::from_secs(15));
}

#[test]
fn a_removed_registration_fifo_is_created_again() {
    let server = Server::start(&[], &[]);
    std::fs::remove_file(&server.fifo).unwrap();
    server.wait_log("was removed; created it again");
    let mut c = ClientProc::start("back", &server.fifo);
    c.expect("Server returned 0 for operation: connect");
}

#[test]
fn a_replaced_registration_fifo_is_left_alone() {
    let mut server = Server::start(&[], &[]);
    let mut old = ClientProc::start("old", &server.fifo);
    old.expect("Server returned 0 for operation: connect");
    std::fs::remove_file(&server.fifo).unwrap();
    std::fs::write(&server.fifo, b"someone else's file").unwrap();
    server.wait_log("was replaced by another file");
    // The clients it has are still served.
    old.send("WRITE [(still,here)]");
    old.expect("Server returned 0 for operation: write");
    assert_eq!(server.stop().code(), Some(0));
    assert_eq!(std::fs::read(&server.fifo).unwrap(), b"someone else's file");
}

#[test]
fn a_backup_into_a_full_file_system_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&mnt);
    // 2,048 pairs: a snapshot of about 110 KB.
    let mut job = String::new();
    for line in 0..8 {
        job.push_str("WRITE [");
        for p in 0..256 {
            job.push_str(&format!("(k{line:02}{p:03},{})", "v".repeat(40)));
        }
        job.push_str("]\n");
    }
    // The .out gets its first page before the backup starts (WAIT flushes),
    // so the job's later lines never race the child for the last blocks.
    job.push_str("READ [k00000]\nWAIT 1\nBACKUP\nWAIT 1\nREAD [k00001]\n");
    std::fs::write(mnt.join("big.job"), job).unwrap();
    // Fill the file system but for 16 KiB.
    let free = nix::sys::statvfs::statvfs(&mnt).map(|s| s.blocks_available() * s.fragment_size());
    let free = free.unwrap_or(0) as usize;
    std::fs::write(
        mnt.join("filler"),
        vec![0u8; free.saturating_sub(16 * 1024)],
    )
    .unwrap();
    let out = run_kvs(&[mnt.to_str().unwrap(), "1", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("big-1.bck"), "{}", out.stderr);
    assert!(out.stderr.contains("No space left"), "{}", out.stderr);
    assert!(
        files_ending(&mnt, ".bck").is_empty(),
        "a partial backup was left"
    );
    assert!(
        files_ending(&mnt, ".tmp").is_empty(),
        "a temporary file was left"
    );
    let out_file = std::fs::read_to_string(mnt.join("big.out")).unwrap();
    let v = "v".repeat(40);
    assert!(
        out_file == format!("[(k00000,{v})]\nWaiting...\nWaiting...\n[(k00001,{v})]\n"),
        "{out_file:?}; stderr: {}",
        out.stderr
    );
}

#[test]
fn a_client_whose_fifo_paths_do_not_fit_says_so() {
    let server = Server::start(&[], &[]);
    let long = tempfile::Builder::new()
        .prefix(&"x".repeat(40))
        .tempdir_in("/tmp")
        .unwrap();
    let out = std::process::Command::new(CLIENT)
        .arg("id")
        .arg(&server.fifo)
        .env("TMPDIR", long.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("longer than 40 bytes"));
    assert_eq!(
        std::fs::read_dir(long.path()).unwrap().count(),
        0,
        "FIFOs left behind"
    );
}

#[test]
fn out_of_descriptors_clients_are_refused_cleanly() {
    let have_prlimit = std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_prlimit {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    // Room for about a dozen sessions of three descriptors each.
    let server = Server::start_under(&["prlimit", "--nofile=48:48", "--"], &[], &[]);
    let d = client_dir();
    let mut open = Vec::new();
    let mut refused = false;
    for i in 0..30 {
        let fifos = ClientFifos::create(d.path(), &i.to_string()).unwrap();
        match Connection::connect(&fifos, &server.fifo) {
            Ok(mut c) => {
                let n = c.take_notifications();
                open.push((c, n, fifos));
            }
            Err(ClientError::Refused) => {
                refused = true;
                break;
            }
            Err(e) => panic!("connect {i}: {e}; log:\n{}", server.log()),
        }
    }
    assert!(refused, "30 sessions fit in 48 descriptors?");
    assert!(
        open.len() >= 5,
        "only {} sessions before refusal",
        open.len()
    );
    // Out of descriptors at the response FIFO or at one of the other two.
    let start = Instant::now();
    while !["no file descriptor left", "Too many open files"]
        .iter()
        .any(|m| server.log().contains(m))
    {
        assert!(start.elapsed() < WAIT_LOG, "{}", server.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    // Everyone connected is still served, and a freed slot is usable again.
    for (i, (c, _, _)) in open.iter_mut().enumerate() {
        match c.request(&Request::Write("k".into(), "v".into())) {
            Ok(a) => assert_eq!(a.code, b'0'),
            Err(e) => panic!("session {i}: {e}; log:\n{}", server.log()),
        }
    }
    let (mut c, _notif, _fifos) = open.pop().unwrap();
    assert_eq!(c.request(&Request::Disconnect).unwrap().code, b'0');
    drop(c);
    let start = Instant::now();
    loop {
        let fifos = ClientFifos::create(d.path(), "again").unwrap();
        match Connection::connect(&fifos, &server.fifo) {
            Ok(_) => break,
            Err(ClientError::Refused) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("reconnect: {e}"),
        }
    }
}

#[test]
fn a_flood_on_the_registration_fifo_starves_no_one() {
    let server = Server::start(&[], &[]);
    let mut c = session("busy", &server.fifo);
    // A process writing garbage to the registration FIFO as fast as it can.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (stop, fifo) = (stop.clone(), server.fifo.clone());
        std::thread::spawn(move || {
            let mut reg = OpenOptions::new().write(true).open(fifo).unwrap();
            let garbage = [9u8; 4096];
            let mut sent = 0usize;
            while !stop.load(Ordering::SeqCst) {
                if reg.write_all(&garbage).is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    for n in 0..500 {
        assert_eq!(c.ask(write("k", &n.to_string())), b'0');
    }
    let took = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    let chunks = flood.join().unwrap();
    assert!(chunks > 100, "the flood did not flow ({chunks} chunks)");
    assert!(
        took < Duration::from_secs(10),
        "500 requests took {took:?} under the flood"
    );
    // The log says so, but not once per chunk.
    let lines = server
        .log()
        .lines()
        .filter(|l| l.contains("bad connect"))
        .count();
    assert!(
        (1..50).contains(&lines),
        "{lines} log lines for {chunks} bad chunks"
    );
    // Once the flood stops, clients connect again.
    std::thread::sleep(Duration::from_millis(150));
    let mut again = session("after", &server.fifo);
    assert_eq!(again.ask(write("k", "after")), b'0');
}

#[test]
fn a_client_flooding_requests_without_reading_is_cut_off_and_starves_no_one() {
    let server = Server::start(&[], &["--output-buffer", "65536"]);
    let mut calm = session("calm", &server.fifo);
    assert_eq!(calm.ask(write("k", "v")), b'0');

    // A session that writes READ requests nonstop and never reads an answer.
    let hog = session("hog", &server.fifo);
    let req_path = hog.fifos.req.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::os::unix::fs::OpenOptionsExt;
            let mut req = OpenOptions::new()
                .write(true)
                .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
                .open(req_path)
                .unwrap();
            let one = Request::Read("k".into()).encode().unwrap();
            let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * 97).collect();
            while !stop.load(Ordering::SeqCst) {
                match req.write(&burst) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break, // the server closed the session
                }
            }
        })
    };
    let start = Instant::now();
    for n in 0..300 {
        assert_eq!(calm.ask(write("k", &n.to_string())), b'0');
    }
    let took = start.elapsed();
    // Not served while its answers wait unread, and cut off once it has
    // taken none of them for the stall time (10 s).
    server.wait_log_within("not reading", Duration::from_secs(20));
    stop.store(true, Ordering::SeqCst);
    flood.join().unwrap();
    drop(hog);
    assert!(
        took < Duration::from_secs(10),
        "300 requests took {took:?} beside the hog"
    );
    let rss = rss_kib(server.pid());
    assert!(rss < 64 * 1024, "server resident memory {rss} KiB");
}
