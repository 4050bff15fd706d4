//! `cargo bench --bench etcd`: kvs nodes on a real three-member etcd
//! cluster (loopback, temporary folders) against a plain etcd client doing
//! the same operations at the same concurrency, in one run (rounds
//! alternate, best of three; the machine is shared and noisy):
//!
//! - writes: clients each setting their own keys, one change at a time:
//!   SET through a kvs node, against a one-put etcd transaction straight
//!   from kvs's own etcd client (what kvs sends for a SET): alone, with two
//!   watches of kvs's client open (what two kvs nodes following the
//!   dataset cost etcd), and with two `etcdctl watch` processes instead
//!   (etcd's own client following the same puts, where etcdctl exists);
//! - change -> notification on another node: a SET through node A heard
//!   by a keyspace subscriber on node B, against an etcd put heard by a
//!   plain watch; p50 and p99 over one change at a time;
//! - reads: GETs from a node's copy of the dataset, against GETs of the
//!   same keys from a kvs keeping its own store.
//!
//! `KVS_BENCH_MEMBERS=1` runs one member instead of three (etcd then
//! leaves more of the machine to the rest); `KVS_BENCH_WRITES_ONLY=1`
//! stops after the write rows; `KVS_BENCH_NODE_ARGS="--spin 50"` passes
//! more options to the two kvs nodes. Says SKIPPED where etcd is not
//! installed.

#[path = "../tests/common/mod.rs"]
mod fixtures;

use fixtures::etcd::Cluster;
use fixtures::resp::RespServer;
use kvs::etcd::{Etcd, Op, WatchMessage};
use kvs::protocol::resp::encode_request;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const ROUNDS: usize = 3;
const WRITES_EACH: usize = 300;
/// Changes timed per round of the notification row: a p99 of 400 was the
/// 4th slowest, and moved 0.9-1.3x between runs of the same build.
const LATENCY_SAMPLES: usize = 1000;
const READS_EACH: usize = 20_000;

fn connect(sock: &Path) -> UnixStream {
    UnixStream::connect(sock).expect("connect to kvs")
}

/// Sends one request and reads exactly `reply.len()` bytes, which must
/// be `reply`.
fn ask(s: &mut UnixStream, args: &[&[u8]], reply: &[u8]) {
    s.write_all(&encode_request(args)).expect("send");
    let mut got = vec![0u8; reply.len()];
    s.read_exact(&mut got).expect("reply");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(reply)
    );
}

/// Runs `clients` threads doing `each` operations from `op(client, i)`,
/// all starting together; operations per second.
fn concurrently<S: Send + 'static>(
    clients: usize,
    each: usize,
    setup: impl Fn(usize) -> S,
    op: impl Fn(&mut S, usize, usize) + Send + Sync + 'static,
) -> f64 {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let op = Arc::new(op);
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let mut state = setup(c);
            let (barrier, op) = (barrier.clone(), op.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..each {
                    op(&mut state, c, i);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for t in threads {
        t.join().expect("client thread");
    }
    (clients * each) as f64 / start.elapsed().as_secs_f64()
}

fn kvs_writes(sock: &Path, clients: usize) -> f64 {
    let sock = sock.to_path_buf();
    concurrently(
        clients,
        WRITES_EACH,
        move |_| connect(&sock),
        |s, c, i| {
            let key = format!("w{c}-{}", i % 50);
            ask(
                s,
                &[b"SET", key.as_bytes(), b"value-0123456789"],
                b"+OK\r\n",
            );
        },
    )
}

fn etcd_writes(endpoints: &[String], clients: usize) -> f64 {
    let endpoints = endpoints.to_vec();
    concurrently(
        clients,
        WRITES_EACH,
        move |_| Etcd::new(endpoints.clone(), Duration::from_secs(2)),
        |e, c, i| {
            let key = format!("plain/w{c}-{}", i % 50).into_bytes();
            let op = Op::Put(key, b"value-0123456789".to_vec());
            e.txn(&[], &[op]).expect("etcd put");
        },
    )
}

/// Watches of `prefix` read by threads of their own (as each kvs node
/// follows the dataset) until the returned flag is set.
fn watchers(endpoints: &[String], n: usize, prefix: &'static [u8]) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for i in 0..n {
        let e = Etcd::new(
            vec![endpoints[i % endpoints.len()].clone()],
            Duration::from_secs(2),
        );
        let from = e.current_revision(prefix).expect("revision") + 1;
        let mut w = e.watch(prefix, from).expect("watch");
        w.set_read_timeout(Some(Duration::from_millis(500)));
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if w.next_message().is_err() {
                    break;
                }
            }
        });
    }
    stop
}

/// The same followers through etcd's own client: `etcdctl watch` of
/// `prefix` on `n` members (gRPC, not the JSON gateway kvs uses), each
/// printing what it hears to a thread that drains it, until dropped.
/// `None` where etcdctl is not installed.
struct EtcdctlWatchers(Vec<std::process::Child>);

impl EtcdctlWatchers {
    fn start(endpoints: &[String], n: usize, prefix: &str) -> Option<EtcdctlWatchers> {
        use std::io::BufRead;
        let mut kids = Vec::new();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for i in 0..n {
            let mut child = std::process::Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &endpoints[i % endpoints.len()]])
                .args(["watch", "--prefix", prefix])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()?;
            let out = child.stdout.take()?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            kids.push(child);
        }
        let watchers = EtcdctlWatchers(kids);
        // Up once each has heard a probe.
        let e = Etcd::new(endpoints.to_vec(), Duration::from_secs(2));
        let probe = format!("{prefix}probe").into_bytes();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut heard = 0;
        while heard < n && Instant::now() < deadline {
            e.txn(&[], &[Op::Put(probe.clone(), b"p".to_vec())]).ok()?;
            while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                if line.ends_with("probe") {
                    heard += 1;
                }
            }
        }
        (heard >= n).then_some(watchers)
    }
}

impl Drop for EtcdctlWatchers {
    fn drop(&mut self) {
        for k in &mut self.0 {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
}

fn reads(sock: &Path, clients: usize) -> f64 {
    let sock = sock.to_path_buf();
    concurrently(
        clients,
        READS_EACH,
        move |_| connect(&sock),
        |s, c, i| {
            let key = format!("w{c}-{}", i % 50);
            ask(s, &[b"GET", key.as_bytes()], b"$16\r\nvalue-0123456789\r\n");
        },
    )
}

/// p50 and p99, in microseconds, of `samples`.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len() - 1);
        samples[i].as_secs_f64() * 1e6
    };
    (at(0.50), at(0.99))
}

/// A SET through `writer`'s node, heard by a keyspace subscriber on
/// `listener`'s: the time from sending it to hearing it, one at a time.
fn kvs_notification(writer: &Path, listener: &Path) -> (f64, f64) {
    let mut sub = connect(listener);
    let channel = b"__keyspace@0__:lat";
    let confirm = format!(
        "*3\r\n$9\r\nsubscribe\r\n${}\r\n{}\r\n:1\r\n",
        channel.len(),
        String::from_utf8_lossy(channel)
    );
    ask(&mut sub, &[b"SUBSCRIBE", channel], confirm.as_bytes());
    let message = format!(
        "*3\r\n$7\r\nmessage\r\n${}\r\n{}\r\n$3\r\nset\r\n",
        channel.len(),
        String::from_utf8_lossy(channel)
    );
    let mut w = connect(writer);
    let mut heard = vec![0u8; message.len()];
    let samples = (0..LATENCY_SAMPLES)
        .map(|i| {
            let start = Instant::now();
            ask(
                &mut w,
                &[b"SET", b"lat", i.to_string().as_bytes()],
                b"+OK\r\n",
            );
            sub.read_exact(&mut heard).expect("notification");
            let took = start.elapsed();
            assert_eq!(heard, message.as_bytes());
            took
        })
        .collect();
    percentiles(samples)
}

/// An etcd put heard by a plain watch (on another member's connection):
/// the time from sending it to hearing it, one at a time.
fn etcd_notification(writer: &str, listener: &str) -> (f64, f64) {
    let w = Etcd::new(vec![writer.to_string()], Duration::from_secs(2));
    let l = Etcd::new(vec![listener.to_string()], Duration::from_secs(2));
    let from = w.current_revision(b"plain/lat").expect("revision") + 1;
    let mut watch = l.watch(b"plain/lat", from).expect("watch");
    watch.set_read_timeout(Some(Duration::from_secs(5)));
    let samples = (0..LATENCY_SAMPLES)
        .map(|i| {
            let start = Instant::now();
            let op = Op::Put(b"plain/lat".to_vec(), i.to_string().into_bytes());
            w.txn(&[], &[op]).expect("etcd put");
            loop {
                match watch.next_message().expect("watch") {
                    Some(WatchMessage::Events { events, .. }) if !events.is_empty() => break,
                    Some(_) => continue,
                    None => panic!("the watch ended"),
                }
            }
            start.elapsed()
        })
        .collect();
    percentiles(samples)
}

/// CPU seconds used so far by this process's children named `comm`
/// (the etcd members, the kvs nodes), from /proc.
fn children_cpu(comm: &str) -> f64 {
    let me = std::process::id().to_string();
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ... utime stime: fields 14 and 15.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let name = head.split_once(" (").map_or("", |(_, n)| n);
        let f: Vec<&str> = rest.split_whitespace().collect();
        if name == comm && f.get(1) == Some(&me.as_str()) {
            total += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
        }
    }
    total as f64 / tick
}

fn sock(s: &RespServer) -> PathBuf {
    s.sock.clone()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let members: usize = std::env::var("KVS_BENCH_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let Some(cluster) = Cluster::start("bench etcd", members, &["--max-txn-ops", "256"]) else {
        return;
    };
    let url = format!("etcd://{}", cluster.endpoints());
    let endpoints = cluster.endpoint_list();
    let extra = std::env::var("KVS_BENCH_NODE_ARGS").unwrap_or_default();
    let mut node_args = vec!["--store", url.as_str()];
    node_args.extend(extra.split_whitespace());
    let a = RespServer::start(&[], &node_args);
    let b = RespServer::start(&[], &node_args);
    let local = RespServer::start(&[], &[]);
    let (sa, sb, sl) = (sock(&a), sock(&b), sock(&local));

    println!(
        "etcd: {members} member(s) on loopback; kvs nodes with --store etcd (32 store threads)"
    );
    for clients in [1, 16] {
        let (mut plain, mut watched, mut kvs) = (0.0f64, 0.0f64, 0.0f64);
        let mut etcdctl_watched: Option<f64> = None;
        // Cores busy in the etcd members and in the kvs nodes during the
        // last round of kvs writes.
        let mut cpu = (0.0, 0.0);
        // CPU seconds of the etcd members per change, per row.
        let mut per_change = (0.0, 0.0, 0.0);
        let etcd_cpu_each = |ops: usize, f: &mut dyn FnMut() -> f64| {
            let before = children_cpu("etcd");
            let rate = f();
            (rate, (children_cpu("etcd") - before) / ops as f64)
        };
        let ops = clients * WRITES_EACH;
        for _ in 0..ROUNDS {
            let (rate, each) = etcd_cpu_each(ops, &mut || etcd_writes(&endpoints, clients));
            plain = plain.max(rate);
            per_change.0 = each;
            // What two kvs nodes cost etcd beside the puts: a watch each.
            let stop = watchers(&endpoints, 2, b"plain/");
            let (rate, each) = etcd_cpu_each(ops, &mut || etcd_writes(&endpoints, clients));
            watched = watched.max(rate);
            per_change.1 = each;
            stop.store(true, Ordering::Relaxed);
            if let Some(w) = EtcdctlWatchers::start(&endpoints, 2, "plain/") {
                let rate = etcd_writes(&endpoints, clients);
                drop(w);
                etcdctl_watched = Some(etcdctl_watched.unwrap_or(0.0).max(rate));
            }
            let (etcd0, kvs0, t0) = (children_cpu("etcd"), children_cpu("kvs"), Instant::now());
            kvs = kvs.max(kvs_writes(&sa, clients));
            let secs = t0.elapsed().as_secs_f64();
            cpu = (
                (children_cpu("etcd") - etcd0) / secs,
                (children_cpu("kvs") - kvs0) / secs,
            );
            per_change.2 = (children_cpu("etcd") - etcd0) / ops as f64;
        }
        println!(
            "writes, {clients:>2} clients: kvs SET {kvs:>7.0}/s; etcd put {plain:>7.0}/s ({:.2}x), etcd put with two watches {watched:>7.0}/s ({:.2}x)",
            kvs / plain,
            kvs / watched
        );
        match etcdctl_watched {
            Some(w) => println!(
                "    etcd put with two etcdctl watches (etcd's own client, gRPC) {w:>7.0}/s ({:.2}x)",
                kvs / w
            ),
            None => println!("    (etcdctl not found or its watches never started: no etcdctl row)"),
        }
        println!(
            "    while kvs wrote: etcd members busy {:.2} cores, kvs nodes {:.2} (of {})",
            cpu.0,
            cpu.1,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "    etcd members' CPU per change: put {:.0} us, put with two watches {:.0} us, kvs SET {:.0} us",
            per_change.0 * 1e6,
            per_change.1 * 1e6,
            per_change.2 * 1e6
        );
    }
    if std::env::var_os("KVS_BENCH_WRITES_ONLY").is_some() {
        return;
    }
    // The keys the reads ask for, in the local kvs too.
    kvs_writes(&sl, 16);
    for clients in [1, 16] {
        let (mut cached, mut own) = (0.0f64, 0.0f64);
        for _ in 0..ROUNDS {
            cached = cached.max(reads(&sb, clients));
            own = own.max(reads(&sl, clients));
        }
        println!(
            "reads,  {clients:>2} clients: kvs on etcd GET {cached:>7.0}/s, kvs on its own {own:>7.0}/s ({:.2}x)",
            cached / own
        );
    }
    let (mut plain, mut kvs) = ((f64::MAX, f64::MAX), (f64::MAX, f64::MAX));
    for _ in 0..ROUNDS {
        let p = etcd_notification(&endpoints[0], &endpoints[1]);
        let k = kvs_notification(&sa, &sb);
        plain = (plain.0.min(p.0), plain.1.min(p.1));
        kvs = (kvs.0.min(k.0), kvs.1.min(k.1));
    }
    println!(
        "change -> notification on another node: kvs p50 {:.0} us p99 {:.0} us; plain watch p50 {:.0} us p99 {:.0} us ({:.2}x, {:.2}x)",
        kvs.0,
        kvs.1,
        plain.0,
        plain.1,
        kvs.0 / plain.0,
        kvs.1 / plain.1
    );
}
