//! `cargo bench --bench persist`: what the data dir costs, in one run.
//!
//! - FIFO WRITE round trips, 1 and 16 clients, with no data dir and with
//!   `--fsync no`, `everysec`, `always` (ratio to no data dir);
//! - job-file throughput of the `kvs` process with and without a data dir;
//! - start-up time and records/s replayed for 1 M keys; snapshot time for
//!   1 M keys;
//! - where redis-server and redis-benchmark are installed: `redis-benchmark
//!   -t set` with 1 and 16 clients against kvs (RESP, `--fsync always` and
//!   `everysec`) and against `redis-server --appendonly yes` with the same
//!   appendfsync, as a ratio;
//! - `logcost`: what its log costs each server, pipelined (`-c 50 -P 16`):
//!   kvs with `--fsync everysec` against no data dir, and redis-server with
//!   `--appendonly yes --appendfsync everysec` against none, alternating.
//!
//! The data dirs are on the same disk as the temporary folder (`/tmp`, or
//! `KVS_BENCH_DIR`): a sync is what that disk makes of it.

use kvs::protocol::fifo::Request;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

mod common;

use common::{base, have, kvs_bin, run_batch, Redis, Server};

/// WRITE round trips per second with `clients` clients, `each` writes each.
fn writes(server: &Server, clients: usize, each: usize) -> f64 {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let (mut conn, notif, fifos) = server.session(&format!("w{clients}-{i}"));
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                // A client whose notification FIFO is closed is gone: the
                // server ends its session.
                let _keep = (fifos, notif);
                barrier.wait();
                for n in 0..each {
                    let r = Request::Write(format!("key{i}"), n.to_string());
                    conn.request(&r).expect("write");
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    (clients * each) as f64 / start.elapsed().as_secs_f64()
}

fn round_trips() {
    println!("== FIFO WRITE round trips per second, by --fsync (best of 2) ==");
    let configs: [(&str, Vec<&str>); 4] = [
        ("no data dir", vec![]),
        (
            "--fsync no",
            vec!["--data-dir", "{dir}/data", "--fsync", "no"],
        ),
        (
            "--fsync everysec",
            vec!["--data-dir", "{dir}/data", "--fsync", "everysec"],
        ),
        (
            "--fsync always",
            vec!["--data-dir", "{dir}/data", "--fsync", "always"],
        ),
    ];
    let mut base_rate = [0.0f64; 2];
    let mut always = [0.0f64; 2];
    for (name, args) in configs {
        let server = Server::start(&args);
        let mut rates = [0.0f64; 2];
        for (slot, (clients, each)) in [(1usize, 4000usize), (16, 1000)].into_iter().enumerate() {
            let each = if name == "--fsync always" {
                each / 4
            } else {
                each
            };
            for _ in 0..2 {
                rates[slot] = rates[slot].max(writes(&server, clients, each));
            }
        }
        if name == "no data dir" {
            base_rate = rates;
        }
        if name == "--fsync always" {
            always = rates;
        }
        println!(
            "{name:<18} 1 client {:>9.0}/s ({:.2}x)   16 clients {:>9.0}/s ({:.2}x)",
            rates[0],
            rates[0] / base_rate[0],
            rates[1],
            rates[1] / base_rate[1]
        );
    }
    println!(
        "group commit: --fsync always with 16 clients is {:.1}x its 1-client rate",
        always[1] / always[0]
    );
}

/// Writes `files` job files of `lines` mixed commands into `dir`.
fn job_files(dir: &Path, files: usize, lines: usize) {
    for f in 0..files {
        let mut text = String::with_capacity(lines * 40);
        for i in 0..lines {
            let k = |j: usize| format!("{}{f}k{}", (b'a' + (j % 26) as u8) as char, j % 5000);
            match i % 10 {
                0..=3 => text.push_str(&format!("READ [{},{}]\n", k(i), k(i + 1))),
                4..=8 => text.push_str(&format!("WRITE [({},v{i})({},w{i})]\n", k(i), k(i + 7))),
                _ => text.push_str(&format!("DELETE [{}]\n", k(i + 3))),
            }
        }
        std::fs::write(dir.join(format!("f{f}.job")), text).unwrap();
    }
}

/// Batch mode under `script` (a pseudo-terminal): with `bar`, its stderr is
/// the terminal and the progress bar is drawn; without, stderr goes to
/// /dev/null, so both pay the same wrapper. Seconds taken, or `None`
/// without `script`.
fn batch_under_pty(jobs: &Path, bar: bool) -> Option<f64> {
    let quiet = if bar { "" } else { " 2>/dev/null" };
    let cmd = format!("{} {} 1 2{quiet}", kvs_bin(), jobs.display());
    let start = Instant::now();
    let status = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdout(Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| start.elapsed().as_secs_f64())
}

fn jobs_throughput() {
    println!("\n== job files: 16 files x 50,000 commands, 2 workers, the whole kvs process (best of 3) ==");
    let dir = tempfile::Builder::new()
        .prefix("kpj")
        .tempdir_in(base())
        .unwrap();
    job_files(dir.path(), 16, 50_000);
    let commands = 16.0 * 50_000.0;
    let (mut plain, mut durable) = (f64::MAX, f64::MAX);
    let (mut bar, mut no_bar) = (f64::MAX, f64::MAX);
    for round in 0..3 {
        plain = plain.min(run_batch(dir.path(), 2, &[] as &[&str]).0);
        let data = dir.path().join(format!("data{round}"));
        let args = vec!["--data-dir".to_string(), data.to_str().unwrap().to_string()];
        durable = durable.min(run_batch(dir.path(), 2, &args).0);
        if let (Some(with), Some(without)) = (
            batch_under_pty(dir.path(), true),
            batch_under_pty(dir.path(), false),
        ) {
            bar = bar.min(with);
            no_bar = no_bar.min(without);
        }
    }
    println!(
        "no data dir {:>10.0} commands/s   --data-dir (everysec) {:>10.0} commands/s   ({:.2}x)",
        commands / plain,
        commands / durable,
        plain / durable
    );
    if bar < f64::MAX {
        println!(
            "under a pseudo-terminal: progress bar drawn {:>10.0} commands/s, stderr elsewhere {:>10.0} commands/s   ({:.2}x)",
            commands / bar,
            commands / no_bar,
            no_bar / bar
        );
    }
}

fn recovery() {
    println!("\n== 1 M keys: start-up from the log, and a snapshot ==");
    let dir = tempfile::Builder::new()
        .prefix("kpr")
        .tempdir_in(base())
        .unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    // 1 M single-key WRITEs in 8 files: 1 M log records.
    for f in 0..8 {
        let mut text = String::with_capacity(125_000 * 48);
        for i in 0..125_000 {
            text.push_str(&format!("WRITE [(key{f}-{i:07},value-{i:026})]\n"));
        }
        std::fs::write(jobs.join(format!("load{f}.job")), text).unwrap();
    }
    let data = dir.path().join("data");
    let data_arg = vec!["--data-dir".to_string(), data.to_str().unwrap().to_string()];
    run_batch(&jobs, 2, &data_arg);
    for f in 0..8 {
        std::fs::remove_file(jobs.join(format!("load{f}.job"))).unwrap();
        let _ = std::fs::remove_file(jobs.join(format!("load{f}.out")));
    }
    let (secs, err) = run_batch(&jobs, 2, &data_arg);
    let line = err
        .lines()
        .find(|l| l.contains("loaded"))
        .unwrap_or_default();
    println!("start-up of the whole process {secs:.3} s; the server says: {line}");

    // A snapshot: start a server on that data dir with a low threshold.
    let server_args = [
        "--data-dir",
        data.to_str().unwrap(),
        "--compact-at",
        "1048576",
    ];
    let server = Server::start(&server_args);
    let line = server.wait_log("compacted", Duration::from_secs(120));
    println!("snapshot of 1 M keys: {line}");
}

/// requests/s of `redis-benchmark -t set <args>` against the socket `sock`.
fn redis_benchmark(sock: &Path, args: &[&str]) -> f64 {
    let out = Command::new("redis-benchmark")
        .arg("-s")
        .arg(sock)
        .args(["-t", "set", "--csv"])
        .args(args)
        .output()
        .expect("redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    text.lines()
        .filter(|l| l.starts_with("\"SET\""))
        .filter_map(|l| l.split('"').nth(3)?.parse().ok())
        .next()
        .unwrap_or(0.0)
}

fn have_redis() -> bool {
    let ok = have("redis-server") && have("redis-benchmark");
    if !ok {
        println!("skipped: redis-server and redis-benchmark are not installed (Debian: apt install redis-server redis-tools)");
    }
    ok
}

fn against_redis() {
    println!("\n== redis-benchmark -t set against kvs (RESP) and redis-server --appendonly yes, same appendfsync ==");
    if !have_redis() {
        return;
    }
    for policy in ["always", "everysec"] {
        let kvs = Server::start(&[
            "--data-dir",
            "{dir}/data",
            "--fsync",
            policy,
            "--resp-socket",
            "{dir}/kvs.sock",
        ]);
        let kvs_sock = kvs.dir.path().join("kvs.sock");
        let redis = Redis::start(&["--appendonly", "yes", "--appendfsync", policy]);
        for clients in [1usize, 16] {
            let n = if policy == "always" { 5_000 } else { 50_000 };
            let args = ["-n", &n.to_string(), "-c", &clients.to_string()].map(String::from);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (mut k, mut r) = (0.0f64, 0.0f64);
            for _ in 0..2 {
                k = k.max(redis_benchmark(&kvs_sock, &args));
                r = r.max(redis_benchmark(&redis.sock, &args));
            }
            println!(
                "--fsync {policy:<8} {clients:>2} clients: kvs {k:>9.0}/s   redis {r:>9.0}/s   kvs/redis {:.2}x",
                k / r
            );
        }
    }
}

/// What the log costs each server, measured the same way: pipelined SETs
/// with the log on (`everysec`) against the log off. Redis's own figure is
/// the yardstick for the data dir's cost in the `jobs` bench.
fn log_cost() {
    const ROUNDS: usize = 3;
    let n = std::env::var("KVS_BENCH_N").unwrap_or_else(|_| "1000000".into());
    let args = ["-n", &n, "-c", "50", "-P", "16", "-r", "100000"];
    println!(
        "\n== What its log costs each server: redis-benchmark -t set {}, everysec against no log (best of {ROUNDS}, alternating) ==",
        args.join(" ")
    );
    if !have_redis() {
        return;
    }
    let kvs_off = Server::start(&["--resp-socket", "{dir}/kvs.sock"]);
    let kvs_on = Server::start(&[
        "--data-dir",
        "{dir}/data",
        "--fsync",
        "everysec",
        "--resp-socket",
        "{dir}/kvs.sock",
    ]);
    let redis_off = Redis::start(&["--appendonly", "no"]);
    let redis_on = Redis::start(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let socks = [
        kvs_off.dir.path().join("kvs.sock"),
        kvs_on.dir.path().join("kvs.sock"),
        redis_off.sock.clone(),
        redis_on.sock.clone(),
    ];
    let mut best = [0.0f64; 4];
    for _ in 0..ROUNDS {
        for (b, sock) in best.iter_mut().zip(&socks) {
            *b = b.max(redis_benchmark(sock, &args));
        }
    }
    for (name, off, on) in [("kvs", best[0], best[1]), ("redis", best[2], best[3])] {
        println!(
            "{name:<6} no log {off:>9.0}/s   everysec {on:>9.0}/s   log on/off {:.2}x",
            on / off
        );
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let wanted = common::wanted();
    if wanted("roundtrip") {
        round_trips();
    }
    if wanted("jobs") {
        jobs_throughput();
    }
    if wanted("recovery") {
        recovery();
    }
    if wanted("redis") {
        against_redis();
    }
    if wanted("logcost") {
        log_cost();
    }
}
