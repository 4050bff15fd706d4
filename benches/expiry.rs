//! `cargo bench --bench expiry`: mass expiry. 1 M keys whose deadlines all
//! fall within one second, while 50 clients GET other keys: the clients'
//! p99 latency, against the same run with keys that never expire, and how
//! soon every due key is gone from the table (DBSIZE counts keys that are
//! due but not yet reaped, in Redis and in kvs), its memory back with the
//! allocator; resident memory itself stays with the process in both. kvs and
//! a private redis-server (whose own expire cycle is the yardstick) in the
//! same run; where redis-server is missing it says so.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use common::{have, Redis, Server};

const KEYS: usize = 1_000_000;
const CLIENTS: usize = 50;
/// Keys the clients read, none of which expires.
const READ_KEYS: usize = 1_000;
/// How long the clients read, from just before the deadlines.
const READING: Duration = Duration::from_secs(3);
/// When the deadlines begin, after the load starts: room for the load.
const LEAD: Duration = Duration::from_secs(6);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn request(args: &[&[u8]]) -> Vec<u8> {
    kvs::protocol::resp::encode_request(args)
}

/// Sends `cmds` in batches, reading each batch's `+OK`s back.
fn pipeline(s: &mut UnixStream, cmds: impl Iterator<Item = Vec<u8>>) {
    let mut batch = Vec::new();
    let mut n = 0;
    let mut flush = |batch: &mut Vec<u8>, n: &mut usize| {
        s.write_all(batch).unwrap();
        let mut want = *n * 5;
        let mut buf = vec![0u8; 65536];
        while want > 0 {
            let got = s.read(&mut buf[..want.min(65536)]).unwrap();
            assert!(got > 0, "server closed");
            want -= got;
        }
        batch.clear();
        *n = 0;
    };
    for c in cmds {
        batch.extend_from_slice(&c);
        n += 1;
        if n == 1000 {
            flush(&mut batch, &mut n);
        }
    }
    if n > 0 {
        flush(&mut batch, &mut n);
    }
}

/// Resident bytes of process `pid`.
fn rss(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

struct Outcome {
    p99_us: f64,
    /// Seconds from the last deadline until DBSIZE was back to the keys
    /// that never expire, if it was within 10 s.
    freed_after: Option<f64>,
    /// Resident memory before the load, at the last deadline, and at the
    /// end.
    rss: (u64, u64, u64),
}

/// Loads the keys (with deadlines if `expiring`), then has the clients
/// read while the deadlines pass.
fn run(sock: &Path, pid: u32, expiring: bool) -> Outcome {
    let mut s = UnixStream::connect(sock).unwrap();
    pipeline(
        &mut s,
        (0..READ_KEYS).map(|i| request(&[b"SET", format!("r:{i}").as_bytes(), b"value"])),
    );
    let before = rss(pid);
    let start = now_ms() + LEAD.as_millis() as u64;
    pipeline(
        &mut s,
        (0..KEYS).map(|i| {
            let key = format!("e:{i:08}");
            if expiring {
                let at = (start + (i % 1000) as u64).to_string();
                request(&[
                    b"SET",
                    key.as_bytes(),
                    b"v-of-16-bytes..",
                    b"PXAT",
                    at.as_bytes(),
                ])
            } else {
                request(&[b"SET", key.as_bytes(), b"v-of-16-bytes.."])
            }
        }),
    );
    let now = now_ms();
    assert!(now + 200 < start, "loading took longer than the lead");
    std::thread::sleep(Duration::from_millis(start - now - 200));

    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let readers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (sock, stop, barrier) = (sock.to_path_buf(), stop.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&sock).unwrap();
                let mut lat = Vec::new();
                let mut buf = [0u8; 64];
                // `$5\r\nvalue\r\n`
                let reply_len = 11;
                barrier.wait();
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let req = request(&[b"GET", format!("r:{}", i % READ_KEYS).as_bytes()]);
                    let t = Instant::now();
                    s.write_all(&req).unwrap();
                    s.read_exact(&mut buf[..reply_len]).unwrap();
                    lat.push(t.elapsed());
                    i += CLIENTS;
                }
                lat
            })
        })
        .collect();
    barrier.wait();
    std::thread::sleep(READING);
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<Duration> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    lat.sort_unstable();
    let p99 = lat[lat.len() * 99 / 100];

    let last = start + 1000;
    let at_last = rss(pid);
    let mut freed_after = None;
    if expiring {
        let dbsize = request(&[b"DBSIZE"]);
        let mut buf = [0u8; 64];
        while now_ms() < last + 10_000 {
            s.write_all(&dbsize).unwrap();
            let n = s.read(&mut buf).unwrap();
            if &buf[..n] == format!(":{READ_KEYS}\r\n").as_bytes() {
                freed_after = Some((now_ms().saturating_sub(last)) as f64 / 1000.0);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Outcome {
        p99_us: p99.as_secs_f64() * 1e6,
        freed_after,
        rss: (before, at_last, rss(pid)),
    }
}

fn report(name: &str, base: &Outcome, exp: &Outcome) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "{name:<6} GET p99 with no expiry {:>6.0} us, with 1 M keys expiring {:>6.0} us ({:.2}x); every due key gone {}; RSS {:.0} -> {:.0} -> {:.0} MiB",
        base.p99_us,
        exp.p99_us,
        exp.p99_us / base.p99_us,
        exp.freed_after
            .map_or_else(|| "not within 10 s".to_string(), |s| format!("{s:.1} s after the last deadline")),
        mib(exp.rss.0),
        mib(exp.rss.1),
        mib(exp.rss.2),
    );
}

fn main() {
    let mut results = Vec::new();
    for expiring in [false, true] {
        let kvs = Server::start(&["--resp-socket", "{dir}/kvs.sock"]);
        let sock = kvs.dir.path().join("kvs.sock");
        results.push(run(&sock, kvs.pid(), expiring));
    }
    report("kvs", &results[0], &results[1]);
    if !have("redis-server") {
        println!("redis-server: SKIPPED (not installed)");
        return;
    }
    let mut theirs = Vec::new();
    for expiring in [false, true] {
        let redis = Redis::start(&[]);
        theirs.push(run(&redis.sock, redis.pid(), expiring));
    }
    report("redis", &theirs[0], &theirs[1]);
}
