//! Runs every `*.job` file of a folder on a pool of job workers that share
//! one store: batch mode, and the job side of server mode.

use super::progress::Progress;
use super::runner::{run_job, JobSummary};
use crate::backup::Backups;
use crate::store::Store;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use threadpool::ThreadPool;

/// What a folder holds to run.
#[derive(Debug, Default)]
pub struct JobFiles {
    /// The `*.job` files directly inside the folder, sorted by name.
    pub paths: Vec<PathBuf>,
    /// Their sizes added up, as seen while listing them.
    pub bytes: u64,
    /// A line for each `*.job` name that is not a regular file: why it is
    /// skipped.
    pub skipped: Vec<String>,
}

/// Lists the job files of `dir`; other files are ignored. Each is looked
/// at once (`stat`), here.
pub fn find_jobs(dir: &Path) -> io::Result<JobFiles> {
    use std::os::unix::fs::FileTypeExt;
    let mut jobs = Vec::new();
    let mut bytes = 0;
    let mut skipped = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let is_job = path.extension().is_some_and(|e| e == "job")
            && path.file_stem().is_some_and(|s| !s.is_empty());
        if !is_job {
            continue;
        }
        // metadata() follows symlinks: a link to a job file is a job file.
        let why = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {
                bytes += m.len();
                jobs.push(path);
                continue;
            }
            Ok(m) if m.is_dir() => "a folder",
            Ok(m) if m.file_type().is_fifo() => "a FIFO",
            Ok(m) if m.file_type().is_block_device() || m.file_type().is_char_device() => {
                "a device"
            }
            Ok(m) if m.file_type().is_socket() => "a socket",
            Ok(_) => "not a regular file",
            Err(_) => "a link to nothing",
        };
        skipped.push(format!(
            "skipping {}: {why}, not a regular file",
            path.display()
        ));
    }
    jobs.sort();
    skipped.sort();
    Ok(JobFiles {
        paths: jobs,
        bytes,
        skipped,
    })
}

/// Bytes of job file per key the store should make room for: a WRITE of
/// one short pair is about 16 bytes, most lines are longer or READs.
const BYTES_PER_KEY: u64 = 40;
/// The most keys made room for up front: the index's control bytes for
/// them (about 4 MiB) are touched at once; the rest only as keys arrive.
const MAX_RESERVED_KEYS: u64 = 4 << 20;

/// A generous guess at how many keys job files of `bytes` in all will
/// write.
fn expected_keys(bytes: u64) -> usize {
    (bytes / BYTES_PER_KEY).min(MAX_RESERVED_KEYS) as usize
}

/// What became of one job file.
enum Outcome {
    Ran(JobSummary),
    Failed,
    Skipped,
}

/// How a folder's run went.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    pub jobs: usize,
    /// Jobs that could not be read or whose `.out` could not be written.
    pub failed_jobs: usize,
    pub invalid_lines: usize,
    pub commands: usize,
    /// Jobs not started because a stop was asked for.
    pub skipped: usize,
}

/// Runs every job of `dir` with `workers` threads and waits for them (but
/// not for backup children: call [`Backups::wait_all`] for that).
pub fn run_folder(
    dir: &Path,
    store: &Arc<Store>,
    backups: &Arc<Backups>,
    workers: usize,
    progress: &Arc<Progress>,
) -> io::Result<BatchReport> {
    run_folder_until(
        dir,
        store,
        backups,
        workers,
        Arc::new(AtomicBool::new(false)),
        progress,
    )
}

/// [`run_folder`], except that once `stop` is set no further job file is
/// started; the ones running finish (server mode's graceful shutdown).
pub fn run_folder_until(
    dir: &Path,
    store: &Arc<Store>,
    backups: &Arc<Backups>,
    workers: usize,
    stop: Arc<AtomicBool>,
    progress: &Arc<Progress>,
) -> io::Result<BatchReport> {
    let JobFiles {
        paths: jobs,
        bytes,
        skipped,
    } = find_jobs(dir)?;
    for line in &skipped {
        progress.println(&crate::logging::line(crate::logging::Level::Warn, line));
    }
    progress.set_files(jobs.len());
    store.reserve(expected_keys(bytes));
    let mut report = BatchReport {
        jobs: jobs.len(),
        ..BatchReport::default()
    };
    // More workers than job files would only be idle threads (and a huge
    // max_threads would ask the OS for that many).
    let pool = ThreadPool::with_name("kvs-job".into(), workers.min(jobs.len()).max(1));
    let (tx, rx) = mpsc::channel::<Outcome>();
    for job in jobs {
        let (store, backups, tx, stop, progress) = (
            store.clone(),
            backups.clone(),
            tx.clone(),
            stop.clone(),
            progress.clone(),
        );
        pool.execute(move || {
            if stop.load(Ordering::SeqCst) {
                let _ = tx.send(Outcome::Skipped);
                return;
            }
            let result = run_job(&store, &backups, &job, &progress);
            progress.file_done();
            if let Err(e) = &result {
                progress.println(&crate::logging::line(
                    crate::logging::Level::Warn,
                    &e.to_string(),
                ));
            }
            // The receiver outlives the pool; a failed send cannot happen.
            let _ = tx.send(match result {
                Ok(summary) => Outcome::Ran(summary),
                Err(_) => Outcome::Failed,
            });
        });
    }
    drop(tx);
    for outcome in rx {
        match outcome {
            Outcome::Ran(s) => {
                report.commands += s.commands;
                report.invalid_lines += s.invalid_lines;
            }
            Outcome::Failed => report.failed_jobs += 1,
            Outcome::Skipped => report.skipped += 1,
        }
    }
    pool.join();
    if pool.panic_count() > 0 {
        report.failed_jobs += pool.panic_count();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_expected_from_the_job_files_sizes() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.job"), vec![b'x'; 4000]).expect("write");
        std::fs::write(dir.path().join("b.job"), vec![b'x'; 400]).expect("write");
        // Neither a job file nor counted.
        std::fs::write(dir.path().join("c.txt"), vec![b'x'; 4000]).expect("write");
        std::fs::create_dir(dir.path().join("d.job")).expect("mkdir");
        let found = find_jobs(dir.path()).expect("list");
        assert_eq!(found.paths.len(), 2);
        assert_eq!(found.bytes, 4400);
        assert_eq!(found.skipped.len(), 1, "{:?}", found.skipped);
        assert_eq!(expected_keys(found.bytes), 110);
        assert_eq!(expected_keys(0), 0);
        assert_eq!(expected_keys(u64::MAX), MAX_RESERVED_KEYS as usize);
    }
}
