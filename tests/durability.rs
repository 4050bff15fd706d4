//! The data dir, end to end with the real binary: restarts, kill -9 under
//! load and during compaction, damaged files, a full disk, a second server.
//! Long versions run with `--ignored` (`KVS_CRASH_ROUNDS` sets the count).

mod common;

use common::resp::{Raw, RespServer};
use common::{run_kvs, session, write};
use kvs::protocol::fifo::Request;
use redis::Commands;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn data_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec!["--data-dir".to_string(), dir.to_str().unwrap().to_string()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn start(dir: &Path, jobs: &[(&str, &str)], extra: &[&str]) -> RespServer {
    let args = data_args(dir, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    RespServer::start(jobs, &refs)
}

#[test]
fn every_key_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut job = String::new();
    for i in 0..5000 {
        job.push_str(&format!("WRITE [(job{i},v{i})]\n"));
    }
    job.push_str("DELETE [job0]\n");
    let mut kvs = start(data.path(), &[("load.job", &job)], &[]);
    let mut con = kvs.con();
    let pairs: Vec<(String, String)> = (0..5000)
        .map(|i| (format!("resp{i}"), format!("r{i}")))
        .collect();
    for chunk in pairs.chunks(500) {
        let _: () = con.mset(chunk).unwrap();
    }
    let mut fifo = session("dur", &kvs.server.fifo);
    assert_eq!(fifo.ask(write("fifo-key", "from-fifo")), b'0');
    drop(fifo);
    // The job file has run once its last line shows.
    let start_wait = Instant::now();
    while !con.exists::<_, bool>("job4999").unwrap() || con.exists::<_, bool>("job0").unwrap() {
        assert!(
            start_wait.elapsed() < Duration::from_secs(20),
            "job did not finish"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(kvs.server.stop().success());
    drop(kvs);

    let kvs = start(data.path(), &[], &[]);
    let log = kvs.server.log();
    assert!(log.contains("loaded 10000 keys"), "{log}");
    let mut con = kvs.con();
    let keys: Vec<String> = (1..5000).map(|i| format!("job{i}")).collect();
    let got: Vec<String> = con.mget(&keys).unwrap();
    assert_eq!(got, (1..5000).map(|i| format!("v{i}")).collect::<Vec<_>>());
    let keys: Vec<&String> = pairs.iter().map(|(k, _)| k).collect();
    let got: Vec<String> = con.mget(&keys).unwrap();
    assert_eq!(
        got,
        pairs.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()
    );
    assert_eq!(con.get::<_, Option<String>>("job0").unwrap(), None);
    assert_eq!(con.get::<_, String>("fifo-key").unwrap(), "from-fifo");
    // Subscriptions work on what was loaded.
    let mut fifo = session("dur2", &kvs.server.fifo);
    assert_eq!(fifo.ask(Request::Subscribe("job7".into())), b'1');
    let _: () = con.set("job7", "changed").unwrap();
    assert_eq!(fifo.note(), ("job7".into(), "changed".into()));
}

/// What the writers of one round tried and what was acknowledged.
#[derive(Default)]
struct Ledger {
    acked: HashMap<String, String>,
    tried: HashMap<String, Vec<String>>,
}

/// Records `key = value` as tried, runs `send`, and records it as
/// acknowledged if `send` says so; returns what `send` said.
fn attempt(
    ledger: &Mutex<Ledger>,
    key: String,
    value: String,
    send: impl FnOnce(&str, &str) -> bool,
) -> bool {
    ledger
        .lock()
        .unwrap()
        .tried
        .entry(key.clone())
        .or_default()
        .push(value.clone());
    let acked = send(&key, &value);
    if acked {
        ledger.lock().unwrap().acked.insert(key, value);
    }
    acked
}

/// Rounds of: start with `--fsync always`, write from RESP and FIFO
/// clients, kill -9 at a random moment; after each restart every
/// acknowledged write must be there with its value, and nothing that was
/// never sent.
fn crash_rounds(rounds: usize, extra: &[&str]) -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ std::process::id() as u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..rounds {
        let mut args = vec!["--fsync", "always"];
        args.extend_from_slice(extra);
        let kvs = start(data.path(), &[], &args);
        verify(&kvs, &ledger.lock().unwrap(), round);
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..3 {
            let (url, ledger, stop) = (kvs.url(), ledger.clone(), stop.clone());
            writers.push(std::thread::spawn(move || {
                let Ok(mut c) = redis::Client::open(url).unwrap().get_connection() else {
                    return;
                };
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    // Keys are rewritten too, so "latest value" is tested.
                    let key = format!("k{round}-{w}-{}", i % 50);
                    let sent = attempt(&ledger, key, format!("v{i}"), |k, v| {
                        c.set::<_, _, ()>(k, v).is_ok()
                    });
                    if !sent {
                        return;
                    }
                }
            }));
        }
        {
            let (fifo, ledger, stop) = (kvs.server.fifo.clone(), ledger.clone(), stop.clone());
            writers.push(std::thread::spawn(move || {
                let mut s = session(&format!("crash{round}"), &fifo);
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let key = format!("f{round}-{}", i % 50);
                    let sent = attempt(&ledger, key, format!("w{i}"), |k, v| {
                        s.conn.request(&write(k, v)).is_ok_and(|a| a.code == b'0')
                    });
                    if !sent {
                        return;
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(30 + rand(300)));
        let mut kvs = kvs;
        let _ = kvs.server.child.kill(); // SIGKILL
        let _ = kvs.server.child.wait();
        stop.store(true, Ordering::Relaxed);
        for t in writers {
            let _ = t.join();
        }
        drop(kvs);
    }
    let kvs = start(data.path(), &[], &[]);
    verify(&kvs, &ledger.lock().unwrap(), rounds);
    assert!(
        !ledger.lock().unwrap().acked.is_empty(),
        "no write was ever acknowledged"
    );
    data
}

/// Every acknowledged key holds its last acknowledged value or a later one
/// that was sent (a write whose answer the kill cut off may have landed);
/// every key present was sent.
fn verify(kvs: &RespServer, ledger: &Ledger, round: usize) {
    let mut con = kvs.con();
    for (k, v) in &ledger.acked {
        let got: Option<String> = con.get(k).unwrap();
        let sent = &ledger.tried[k];
        let at = sent.iter().rposition(|s| s == v).unwrap();
        match got {
            Some(g) => assert!(
                sent[at..].contains(&g),
                "round {round}: {k} = {g}, acknowledged {v}, which was never overwritten by that"
            ),
            None => panic!("round {round}: acknowledged {k} = {v} is lost"),
        }
    }
    let keys: Vec<String> = con.keys("*").unwrap();
    for k in keys {
        assert!(
            ledger.tried.contains_key(&k),
            "round {round}: {k} was never written"
        );
    }
}

#[test]
fn kill_9_under_load_loses_nothing_acknowledged() {
    crash_rounds(20, &[]);
}

#[test]
#[ignore = "soak: KVS_CRASH_ROUNDS rounds (default 200)"]
fn kill_9_soak() {
    let rounds = std::env::var("KVS_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    crash_rounds(rounds, &["--compact-at", "20000"]);
}

#[test]
fn kill_9_during_compaction_loses_nothing_acknowledged() {
    // A tiny threshold: compactions start every few hundred writes, so the
    // kills land before, during and after them.
    let data = crash_rounds(12, &["--compact-at", "20000"]);
    let snapshots = std::fs::read_dir(data.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("snapshot-"))
        .count();
    assert!(
        snapshots > 0,
        "no compaction ever finished: the test proved nothing"
    );
}

/// Children of `pid` (the snapshot writer, during a compaction).
fn children(pid: i32) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<i32>().ok());
        if ppid == Some(pid) {
            v.push(p);
        }
    }
    v
}

#[test]
fn a_killed_snapshot_child_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let kvs = start(data.path(), &[], &["--compact-at", "4096"]);
    let mut con = kvs.con();
    let mut killed = 0;
    let mut last = HashMap::new();
    for i in 0..3000 {
        let key = format!("c{}", i % 300);
        let _: () = con.set(&key, i).unwrap();
        last.insert(key, i.to_string());
        for child in children(kvs.server.pid()) {
            if nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), nix::sys::signal::SIGKILL)
                .is_ok()
            {
                killed += 1;
            }
        }
    }
    let mut kvs = kvs;
    assert!(kvs.server.stop().success());
    drop(kvs);
    let kvs = start(data.path(), &[], &[]);
    let mut con = kvs.con();
    for (k, v) in &last {
        assert_eq!(&con.get::<_, String>(k).unwrap(), v, "{k}");
    }
    eprintln!("a_killed_snapshot_child_loses_nothing: {killed} snapshot children killed");
    assert!(
        killed > 0,
        "no snapshot child was ever caught: the test proved nothing"
    );
}

// ----- damaged files --------------------------------------------------------

/// A data dir written by batch mode from `job`; returns the log's path.
fn batch_data(dir: &Path, job: &str) -> PathBuf {
    let jobs = tempfile::tempdir().unwrap();
    std::fs::write(jobs.path().join("w.job"), job).unwrap();
    let out = run_kvs(&[
        jobs.path().to_str().unwrap(),
        "1",
        "1",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    dir.join("log-0.kvs")
}

/// Runs batch mode on `dir` with a SHOW job and extra arguments.
fn show(dir: &Path, extra: &[&str]) -> common::Output {
    let jobs = tempfile::tempdir().unwrap();
    std::fs::write(jobs.path().join("s.job"), "SHOW\n").unwrap();
    let mut args = vec![
        jobs.path().to_str().unwrap(),
        "1",
        "1",
        "--data-dir",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut out = run_kvs(&args);
    out.stdout = std::fs::read_to_string(jobs.path().join("s.out")).unwrap_or_default();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_torn_last_record_is_cut_off_at_every_offset() {
    let base = tempfile::tempdir().unwrap();
    let log = batch_data(base.path(), "WRITE [(a,1)(b,2)]\nWRITE [(c,3)]\n");
    let full = std::fs::read(&log).unwrap();
    // The last record: 12 bytes of frame and its payload (set, a count of
    // 1, c, 3).
    let last_len = 12 + 1 + 4 + 2 + 2;
    let last_start = full.len() - last_len;
    for cut in last_start..full.len() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        std::fs::write(dir.path().join("log-0.kvs"), &full[..cut]).unwrap();
        let out = show(dir.path(), &[]);
        assert!(out.status.success(), "cut at {cut}: {}", out.stderr);
        assert_eq!(out.stdout, "(a, 1)\n(b, 2)\n", "cut at {cut}");
        if cut > last_start {
            assert!(
                out.stderr.contains("cut off a torn last record"),
                "cut at {cut}: {}",
                out.stderr
            );
        }
        // The cut file is whole again: the next start says nothing of it.
        let again = show(dir.path(), &[]);
        assert!(!again.stderr.contains("torn"), "{}", again.stderr);
    }
}

#[test]
fn a_flipped_byte_is_refused_with_its_offset_and_repaired_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let log = batch_data(dir.path(), "WRITE [(a,1)]\nWRITE [(b,2)]\nWRITE [(c,3)]\n");
    let mut bytes = std::fs::read(&log).unwrap();
    // The second record: header 32, first record 12 + 9; a byte of its
    // payload.
    let second = 32 + 21;
    bytes[second + 15] ^= 0x01;
    std::fs::write(&log, &bytes).unwrap();
    let out = show(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("log-0.kvs is damaged at byte 53") && out.stderr.contains("checksum"),
        "{}",
        out.stderr
    );
    let out = show(dir.path(), &["--repair"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr.contains("--repair: set") && out.stderr.contains("log-0.kvs.dropped"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "(a, 1)\n");
    // The repaired dir loads as it is, and says nothing of the damage.
    let again = show(dir.path(), &[]);
    assert!(again.status.success(), "{}", again.stderr);
    assert!(!again.stderr.contains("damaged"), "{}", again.stderr);
    assert_eq!(again.stdout, "(a, 1)\n");
}

#[test]
fn wrong_magic_empty_files_and_a_file_for_a_dir() {
    let dir = tempfile::tempdir().unwrap();
    let log = batch_data(dir.path(), "WRITE [(a,1)]\n");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[0] = b'X';
    std::fs::write(&log, &bytes).unwrap();
    let out = show(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("bad magic"), "{}", out.stderr);

    // An empty segment is damage: segments appear whole, by rename, so a
    // crash cannot leave one without its header.
    std::fs::write(&log, b"").unwrap();
    let out = show(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("log-0.kvs is damaged at byte 0"),
        "{}",
        out.stderr
    );

    // An empty snapshot is damage too.
    std::fs::write(dir.path().join("snapshot-0.kvs"), b"").unwrap();
    let out = show(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("snapshot-0.kvs is damaged"),
        "{}",
        out.stderr
    );

    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let out = show(&file, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("is not a directory"), "{}", out.stderr);
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let kvs = start(data.path(), &[], &[]);
    let out = show(data.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("in use by another kvs")
            && out.stderr.contains(&format!("pid {}", kvs.server.pid())),
        "{}",
        out.stderr
    );
}

#[test]
fn sigusr1_leaves_the_data_alone() {
    let data = tempfile::tempdir().unwrap();
    let kvs = start(data.path(), &[], &[]);
    let mut raw: Raw = kvs.raw();
    assert_eq!(raw.ask(&["SET", "keep", "1"]), "+OK\r\n");
    // INFO and CONFIG tell a Redis-minded operator that the data is kept.
    let info = raw.ask(&["INFO", "persistence"]);
    assert!(
        info.contains("aof_enabled:1\r\n") && info.contains("aof_fsync:everysec\r\n"),
        "{info}"
    );
    assert_eq!(
        raw.ask(&["CONFIG", "GET", "appendonly"]),
        "*2\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n"
    );
    kvs.server.signal(nix::sys::signal::Signal::SIGUSR1);
    assert!(raw.closed_by_server());
    let mut raw = kvs.raw();
    assert_eq!(raw.ask(&["GET", "keep"]), "$1\r\n1\r\n");
}

// ----- a full disk ----------------------------------------------------------

/// A small tmpfs of its own, unmounted on drop; `None` where mounting is
/// not allowed (the test then says it is skipped).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_full_disk_refuses_changes_serves_reads_and_recovers() {
    let Some(fs) = Tmpfs::mount("512k") else {
        eprintln!("SKIPPED (a_full_disk_refuses_changes_serves_reads_and_recovers): cannot mount a tmpfs here");
        return;
    };
    let data = fs.0.path().join("data");
    let filler = fs.0.path().join("filler");
    std::fs::write(&filler, vec![0u8; 256 * 1024]).unwrap();
    let kvs = start(&data, &[], &[]);
    let mut raw = kvs.raw();
    assert_eq!(raw.ask(&["SET", "before", "1"]), "+OK\r\n");
    let mut refused = None;
    for i in 0..100_000 {
        let r = raw.ask(&[
            "SET",
            &format!("fill{i}"),
            "0123456789012345678901234567890123456789",
        ]);
        if r.starts_with("-MISCONF") {
            refused = Some(i);
            break;
        }
        assert_eq!(r, "+OK\r\n");
    }
    let refused = refused.expect("the disk never filled");
    kvs.server.wait_log("cannot write the log");
    // Reads go on; changes from both protocols are refused.
    assert_eq!(raw.ask(&["GET", "before"]), "$1\r\n1\r\n");
    assert!(raw.ask(&["SET", "x", "1"]).starts_with("-MISCONF"));
    let mut fifo = session("full", &kvs.server.fifo);
    assert_eq!(fifo.ask(write("x", "1")), b'1');
    // Space again: changes are accepted once the log is written.
    std::fs::remove_file(&filler).unwrap();
    let start_wait = Instant::now();
    while !raw.ask(&["SET", "after", "1"]).starts_with("+OK") {
        assert!(
            start_wait.elapsed() < Duration::from_secs(10),
            "never recovered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fifo.ask(write("y", "2")), b'0');
    drop(fifo);
    let mut kvs = kvs;
    assert!(kvs.server.stop().success());
    drop(kvs);
    let kvs = start(&data, &[], &[]);
    let mut raw = kvs.raw();
    assert_eq!(raw.ask(&["GET", "after"]), "$1\r\n1\r\n");
    assert_eq!(
        raw.ask(&["GET", &format!("fill{}", refused - 1)]),
        "$40\r\n0123456789012345678901234567890123456789\r\n"
    );
}
