//! Compaction: once the current log segment is larger than the threshold
//! and than the last snapshot, a new snapshot replaces the log so far.
//!
//! The steps, and what a crash after each leaves:
//! 1. Under every shard lock, the store is copied and the log starts
//!    segment `g + 1` (the old segment synced first): snapshot `g` plus
//!    segments `g`, `g + 1` load as before.
//! 2. A forked child writes `snapshot-<g+1>.kvs` (temp file, fsync, rename,
//!    fsync dir; the backup machinery): until the rename, nothing new is
//!    visible; a half-written temp file is removed at the next start.
//! 3. Once the child has succeeded, `snapshot-<g>` and the segments before
//!    `g + 1` are removed: snapshot `g + 1` plus segment `g + 1` is the same
//!    table, and a start between rename and removal picks the newest
//!    snapshot and skips the older files (and removes them).

use super::chain::{remove_replaced, snapshot_path};
use super::format;
use super::log::Log;
use crate::backup::Backups;
use crate::store::Store;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// After a failed compaction, wait this long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

pub struct Compactor {
    dir: PathBuf,
    store: Arc<Store>,
    log: Arc<Log>,
    threshold: u64,
    snapshot_len: Arc<AtomicU64>,
    running: Arc<AtomicBool>,
    failed_at: Arc<std::sync::Mutex<Option<Instant>>>,
    children: Arc<Backups>,
}

impl Compactor {
    pub fn new(
        dir: &Path,
        store: Arc<Store>,
        log: Arc<Log>,
        threshold: u64,
        snapshot_len: u64,
    ) -> Compactor {
        Compactor {
            dir: dir.to_path_buf(),
            store,
            log,
            threshold,
            snapshot_len: Arc::new(AtomicU64::new(snapshot_len)),
            running: Arc::new(AtomicBool::new(false)),
            failed_at: Arc::default(),
            children: Backups::new(1),
        }
    }

    /// Called by the log thread after each round: starts a compaction when
    /// one is due and none runs, on a thread of its own (copying and
    /// rendering a large table takes a while; the log thread must go on
    /// syncing meanwhile).
    pub fn tick(self: &Arc<Self>) {
        if self.running.load(Ordering::Acquire) {
            return;
        }
        let (len, _) = self.log.segment_len();
        if len <= self.threshold || len <= self.snapshot_len.load(Ordering::Acquire) {
            return;
        }
        let recent_failure = self
            .failed_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|t| t.elapsed() < RETRY_AFTER);
        if recent_failure {
            return;
        }
        self.running.store(true, Ordering::Release);
        if let Err(why) = self.start() {
            crate::log_error!(
                "compaction failed: {why}; the log keeps growing, retrying in {RETRY_AFTER:?}"
            );
            self.failed();
        }
    }

    fn failed(&self) {
        *self
            .failed_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        self.running.store(false, Ordering::Release);
    }

    fn start(&self) -> Result<(), String> {
        let started = Instant::now();
        let (snapshot, rotated) = self.store.snapshot_with(|| self.log.rotate());
        let generation = rotated.map_err(|e| format!("cannot start a new log segment: {e}"))?;
        let path = snapshot_path(&self.dir, generation);
        let (dir, snapshot_len, running, failed_at) = (
            self.dir.clone(),
            self.snapshot_len.clone(),
            self.running.clone(),
            self.failed_at.clone(),
        );
        let keys = snapshot.len();
        let dir_id = self.log.dir_id();
        let shown = path.clone();
        let render = move || {
            let mut bytes = format::header(format::SNAPSHOT_MAGIC, dir_id, generation).to_vec();
            format::push_snapshot(&mut bytes, snapshot.pairs(), snapshot.deadlines());
            snapshot_len.store(bytes.len() as u64, Ordering::Release);
            bytes
        };
        let done = move |ok: bool| {
            if ok {
                remove_replaced(&dir, generation, generation);
                crate::log_info!(
                    "compacted the log into {} ({keys} keys) in {:.3} s",
                    shown.display(),
                    started.elapsed().as_secs_f64()
                );
            } else {
                *failed_at
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
            }
            running.store(false, Ordering::Release);
        };
        self.children
            .start_then(&path, 0o600, render, done)
            .map_err(|e| e.to_string())
    }

    /// Waits for a snapshot child still running.
    pub fn wait(&self) {
        self.children.wait_all();
    }
}
