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

/// Fills a small tmpfs under `--fsync <policy>` with pipelines of SETs and
/// MSETs, each on a connection of its own, while a subscriber hears every
/// change; then frees space. A change answered `-MISCONF` (or FIFO `'1'`)
/// must never be visible, notified or there after a restart; a change the
/// log could not take after it was applied is answered only once the log
/// has it; every change answered `+OK` is there after a restart.
fn full_disk(policy: &str) {
    use std::collections::HashSet;
    let Some(fs) = Tmpfs::mount("1m") else {
        eprintln!("SKIPPED (a_full_disk_never_lets_a_refused_change_happen, --fsync {policy}): cannot mount a tmpfs here");
        return;
    };
    let data = fs.0.path().join("data");
    let filler = fs.0.path().join("filler");
    std::fs::write(&filler, vec![0u8; 640 * 1024]).unwrap();
    let kvs = start(&data, &[], &["--fsync", policy]);
    let mut sub = kvs.raw();
    sub.cmd(&["PSUBSCRIBE", "__keyspace@0__:*"]);
    sub.reply();
    let value = "0123456789012345678901234567890123456789";
    let (mut ok, mut refused) = (HashSet::new(), HashSet::new());
    // Connections whose answers the log holds, with the keys of each
    // command not answered yet.
    let mut held: Vec<(Raw, Vec<Vec<String>>)> = Vec::new();
    let mut first_refusal = None;
    for round in 0..5000 {
        if first_refusal.is_some_and(|r| round > r + 3) {
            break;
        }
        let mut c = kvs.raw();
        let mut commands: Vec<Vec<String>> =
            (0..40).map(|i| vec![format!("r{round}k{i}")]).collect();
        commands.push(vec![format!("r{round}m1"), format!("r{round}m2")]);
        let mut bytes = Vec::new();
        for keys in &commands {
            let mut args: Vec<&[u8]> = vec![if keys.len() == 1 { b"SET" } else { b"MSET" }];
            for k in keys {
                args.push(k.as_bytes());
                args.push(value.as_bytes());
            }
            bytes.extend(kvs::protocol::resp::encode_request(&args));
        }
        c.send(&bytes);
        let mut rest = commands.into_iter();
        for keys in rest.by_ref() {
            match c.reply_within(Duration::from_secs(2)) {
                Some(r) if r == b"+OK\r\n" => ok.extend(keys),
                Some(r) if r.starts_with(b"-MISCONF") => {
                    first_refusal.get_or_insert(round);
                    refused.extend(keys);
                }
                Some(r) => panic!("round {round}: {}", String::from_utf8_lossy(&r)),
                None => {
                    held.push((c, std::iter::once(keys).chain(rest).collect()));
                    break;
                }
            }
        }
    }
    assert!(!refused.is_empty(), "the disk never filled");
    kvs.server.wait_log("cannot write the log");
    let mut fifo = session("full", &kvs.server.fifo);
    assert_eq!(fifo.ask(write("fifo-refused", "1")), b'1');
    refused.insert("fifo-refused".to_string());
    // Refused changes are not visible, and were never notified.
    let mut reader = kvs.raw();
    for k in &refused {
        assert_eq!(reader.ask(&["GET", k]), "$-1\r\n", "{k} was refused");
    }
    let mut notified = HashSet::new();
    while let Some(m) = sub.reply_within(Duration::from_millis(500)) {
        let text = String::from_utf8_lossy(&m).into_owned();
        if let Some(key) = text
            .split("\r\n")
            .nth(6)
            .and_then(|c| c.strip_prefix("__keyspace@0__:"))
        {
            notified.insert(key.to_string());
        }
    }
    assert!(!notified.is_empty(), "the subscriber heard nothing");
    let both: Vec<_> = notified.intersection(&refused).collect();
    assert!(both.is_empty(), "refused yet notified: {both:?}");

    // Space again: held answers come, and say done.
    std::fs::remove_file(&filler).unwrap();
    for (mut c, commands) in held {
        for keys in commands {
            let r = c
                .reply_within(Duration::from_secs(10))
                .expect("a held answer");
            assert_eq!(r, b"+OK\r\n", "{keys:?}");
            ok.extend(keys);
        }
    }
    let start_wait = Instant::now();
    while !reader.ask(&["SET", "after", "1"]).starts_with("+OK") {
        assert!(
            start_wait.elapsed() < Duration::from_secs(10),
            "never recovered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fifo.ask(write("fifo-after", "2")), b'0');
    ok.extend(["after".to_string(), "fifo-after".to_string()]);
    drop(fifo);
    let mut kvs = kvs;
    assert!(kvs.server.stop().success());
    drop(kvs);
    let kvs = start(&data, &[], &[]);
    let mut raw = kvs.raw();
    for k in &ok {
        assert_ne!(raw.ask(&["GET", k]), "$-1\r\n", "{k} was answered OK");
    }
    for k in &refused {
        assert_eq!(raw.ask(&["GET", k]), "$-1\r\n", "{k} was refused");
    }
    eprintln!(
        "full disk, --fsync {policy}: {} changes kept, {} refused",
        ok.len(),
        refused.len()
    );
}

#[test]
fn a_full_disk_never_lets_a_refused_change_happen() {
    full_disk("always");
    full_disk("everysec");
}

// ----- guards: the lock, modes, links ---------------------------------------

#[test]
fn a_removed_lock_file_lets_no_second_server_in() {
    let data = tempfile::tempdir().unwrap();
    let kvs = start(data.path(), &[], &[]);
    std::fs::remove_file(data.path().join("LOCK")).unwrap();
    let out = show(data.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("in use by another kvs"),
        "{}",
        out.stderr
    );
    drop(kvs);
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_data_dir_and_every_file_in_it_are_private() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("new/data");
    let kvs = start(&data, &[], &["--compact-at", "4096"]);
    let mut raw = kvs.raw();
    for i in 0..400 {
        assert_eq!(raw.ask(&["SET", &format!("key{i}"), "secret"]), "+OK\r\n");
    }
    kvs.server.wait_log("compacted the log");
    assert_eq!(mode(&data), 0o700);
    let names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("snapshot-")),
        "{names:?}"
    );
    for n in &names {
        assert_eq!(mode(&data.join(n)), 0o600, "{n}");
    }
    drop(raw);
    drop(kvs);

    // A dir others can write to is refused, and so is a dir of another
    // user (where this user may give one away: root).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = show(&data, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("can be written by other users"),
        "{}",
        out.stderr
    );
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    if nix::unistd::chown(&data, Some(nix::unistd::Uid::from_raw(54321)), None).is_ok() {
        let out = show(&data, &[]);
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stderr.contains("owned by uid 54321"), "{}", out.stderr);
    } else {
        eprintln!("SKIPPED (a data dir of another user): this user cannot chown");
    }
}

#[test]
fn planted_links_at_lock_and_temporary_names_are_not_followed() {
    let data = tempfile::tempdir().unwrap();
    let victim_dir = tempfile::tempdir().unwrap();
    let victim = victim_dir.path().join("precious");
    std::fs::write(&victim, b"do not touch\n").unwrap();
    // A link at a temporary name: removed, never written through.
    std::os::unix::fs::symlink(&victim, data.path().join("log-0.kvs.tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, data.path().join("snapshot-1.kvs.tmp")).unwrap();
    let kvs = start(data.path(), &[], &["--compact-at", "4096"]);
    let mut raw = kvs.raw();
    for i in 0..400 {
        assert_eq!(raw.ask(&["SET", &format!("key{i}"), "v"]), "+OK\r\n");
    }
    kvs.server.wait_log("compacted the log");
    drop(raw);
    drop(kvs);
    assert_eq!(std::fs::read(&victim).unwrap(), b"do not touch\n");
    // A link at LOCK: refused, and the file it names is left alone.
    std::fs::remove_file(data.path().join("LOCK")).unwrap();
    std::os::unix::fs::symlink(&victim, data.path().join("LOCK")).unwrap();
    let out = show(data.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("is a symbolic link"), "{}", out.stderr);
    assert_eq!(std::fs::read(&victim).unwrap(), b"do not touch\n");
}

#[test]
fn a_fifo_for_a_password_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    let pass = dir.path().join("pass");
    common::mkfifo(&pass);
    let reg = dir.path().join("reg");
    let started = Instant::now();
    let out = run_kvs(&[
        jobs.to_str().unwrap(),
        "1",
        "1",
        reg.to_str().unwrap(),
        "--requirepass-file",
        pass.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("is a FIFO"), "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));
}
