//! `cargo bench --bench jobs`: commands per second running a generated jobs
//! folder (16 files x 50,000 commands) with 1 and 2 workers, with and
//! without BACKUP lines. Each figure is the best of three runs; the
//! 2-worker figure is also printed as a ratio of the 1-worker one.
//!
//! The last row times the whole `kvs` process (start, parse, run, write
//! every `.out`, exit) on a mixed workload: 40% READ, 50% WRITE, 10%
//! DELETE, 1 to 3 keys each, keys spread over many first letters and
//! disjoint per file.

use kvs::backup::Backups;
use kvs::jobs::run_folder;
use kvs::store::Store;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

mod common;

const FILES: usize = 16;
const COMMANDS: usize = 50_000;

/// A realistic mix: mostly writes and reads of a few keys at a time over a
/// key space of 1,000 keys per file, some deletes, and (optionally) a
/// BACKUP every 10,000 commands.
fn generate(dir: &Path, backups: bool) {
    for f in 0..FILES {
        let mut job = String::with_capacity(COMMANDS * 40);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ f as u64;
        for n in 0..COMMANDS {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = x % 1000;
            if backups && n % 10_000 == 9_999 {
                job.push_str("BACKUP\n");
                continue;
            }
            match x % 10 {
                0..=4 => writeln!(job, "WRITE [(f{f}k{k},v{n})(f{f}k{},w{n})]", k + 1),
                5..=8 => writeln!(job, "READ [f{f}k{k},f{f}k{}]", k + 2),
                _ => writeln!(job, "DELETE [f{f}k{k}]"),
            }
            .unwrap();
        }
        std::fs::write(dir.join(format!("gen{f:02}.job")), job).unwrap();
    }
}

fn commands_per_sec(dir: &Path, workers: usize) -> f64 {
    (0..3)
        .map(|_| {
            let store = Arc::new(Store::new());
            let backups = Backups::new(4);
            let start = Instant::now();
            let report = run_folder(
                dir,
                &store,
                &backups,
                workers,
                &kvs::jobs::progress::Progress::hidden(),
            )
            .expect("run folder");
            backups.wait_all();
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(report.failed_jobs, 0);
            report.commands as f64 / secs
        })
        .fold(0.0, f64::max)
}

/// The mixed workload of the whole-process row.
fn generate_mixed(dir: &Path) {
    for f in 0..FILES {
        let mut job = String::with_capacity(COMMANDS * 48);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ f as u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let key = |r: u64| format!("{}{f}x{}", (b'a' + (r % 26) as u8) as char, r % 20_000);
        for n in 0..COMMANDS {
            let r = next();
            let keys = 1 + (r >> 8) % 3;
            match r % 10 {
                0..=3 => {
                    let ks: Vec<String> = (0..keys).map(|i| key(next() + i)).collect();
                    writeln!(job, "READ [{}]", ks.join(","))
                }
                4..=8 => {
                    let ps: String = (0..keys)
                        .map(|_| format!("({},v{n})", key(next())))
                        .collect();
                    writeln!(job, "WRITE [{ps}]")
                }
                _ => writeln!(job, "DELETE [{}]", key(next())),
            }
            .unwrap();
        }
        std::fs::write(dir.join(format!("mix{f:02}.job")), job).unwrap();
    }
}

/// Commands per second of one run of the `kvs` process on `dir`.
fn process_run<S: AsRef<std::ffi::OsStr>>(dir: &Path, workers: usize, extra: &[S]) -> f64 {
    let (secs, _) = common::run_batch(dir, workers, extra);
    (FILES * COMMANDS) as f64 / secs
}

/// Commands per second of the `kvs` binary on `dir` with `workers`, best
/// of 3 runs.
fn process_per_sec(dir: &Path, workers: usize) -> f64 {
    (0..3)
        .map(|_| process_run(dir, workers, &[] as &[&str]))
        .fold(0.0, f64::max)
}

/// With 2 workers: the best of 3 runs without a data dir and of 3 with
/// `--data-dir` (a fresh one each time, `--fsync everysec`), alternating
/// so that both see the same machine.
fn process_durable_per_sec(dir: &Path) -> (f64, f64) {
    let (mut plain, mut durable) = (0.0f64, 0.0f64);
    for _ in 0..3 {
        plain = plain.max(process_run(dir, 2, &[] as &[&str]));
        let data = tempfile::tempdir().expect("tempdir");
        let args = [
            "--data-dir".as_ref(),
            data.path().as_os_str(),
            "--fsync".as_ref(),
            "everysec".as_ref(),
        ];
        durable = durable.max(process_run(dir, 2, &args));
    }
    (plain, durable)
}

fn main() {
    // `cargo test --benches` passes --bench-less flags; only run when benched.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!("jobs: {FILES} files x {COMMANDS} commands, best of 3 runs");
    println!(
        "{:<12} {:>16} {:>16} {:>7}",
        "folder", "1 worker cmd/s", "2 workers cmd/s", "ratio"
    );
    for backups in [false, true] {
        let tmp = tempfile::tempdir().expect("tempdir");
        generate(tmp.path(), backups);
        let one = commands_per_sec(tmp.path(), 1);
        let two = commands_per_sec(tmp.path(), 2);
        println!(
            "{:<12} {:>16.0} {:>16.0} {:>6.2}x",
            if backups { "with BACKUP" } else { "no BACKUP" },
            one,
            two,
            two / one
        );
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    generate_mixed(tmp.path());
    let one = process_per_sec(tmp.path(), 1);
    let two = process_per_sec(tmp.path(), 2);
    println!(
        "{:<12} {:>16.0} {:>16.0} {:>6.2}x   (the kvs process, mixed 40/50/10, 1-3 keys)",
        "kvs process",
        one,
        two,
        two / one
    );
    let (plain, durable) = process_durable_per_sec(tmp.path());
    println!(
        "{:<12} {:>16} {:>16.0} {:>6.2}x   (2 workers, --data-dir --fsync everysec, against {plain:.0} without, alternating)",
        "+ data dir", "", durable, durable / plain
    );
}
