//! The append-only log: every mutation, from every source, as one record,
//! in the order it was applied to each key.
//!
//! Three steps, three owners:
//! - **append** ([`Journal`]): the store calls it under its shard locks; the
//!   record goes into an in-memory buffer (no system call).
//! - **write** ([`Log::write_out`]): the buffer goes to the segment file.
//!   The store pool does this before it answers a client, so nothing is
//!   answered as done that is not written; the log thread does it for job
//!   files every few milliseconds.
//! - **sync** (the log thread): `fdatasync`, per `--fsync`. With `always`,
//!   an answer waits for it, and one sync covers every record written
//!   before it started (group commit): sixteen clients share a sync, they do
//!   not queue for sixteen.
//!
//! Each byte appended gets a log sequence number (its offset in the log as
//! if all segments were one file), so "written" and "synced" are numbers
//! that only grow, and an answer waits for `synced >= its record's end`.
//!
//! A write that fails (disk full, I/O error) is undone with `ftruncate`, so
//! the file never holds half a record in its middle; the bytes stay in the
//! buffer for the next try, and until one succeeds clients' mutations are
//! refused ([`Log::failing`]).

use super::format;
use crate::store::Journal;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// When the log is synced (Redis's appendfsync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before a client's mutation is answered.
    Always,
    /// At least once a second.
    EverySec,
    /// When the OS decides.
    No,
}

impl Fsync {
    pub fn parse(s: &str) -> Option<Fsync> {
        match s {
            "always" => Some(Fsync::Always),
            "everysec" => Some(Fsync::EverySec),
            "no" => Some(Fsync::No),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::EverySec => "everysec",
            Fsync::No => "no",
        }
    }
}

thread_local! {
    /// Where a thread encodes its records before appending them.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How often the log thread writes what job files appended.
const WRITE_INTERVAL: Duration = Duration::from_millis(20);
/// A buffer this large is written at once, not at the next interval.
const EAGER_WRITE: usize = 1 << 20;

/// Records appended and not written yet.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The buffer last written out, emptied: the next to append into, so
    /// appenders (holding shard locks) do not grow a new buffer from
    /// nothing, through fresh pages, after every write.
    spare: Vec<u8>,
    /// Sequence number just past the last byte appended.
    end: u64,
    /// An answer waits for a sync up to here.
    sync_wanted: u64,
    stop: bool,
}

/// The segment being appended to.
pub(super) struct Segment {
    pub(super) file: Arc<File>,
    pub(super) generation: u64,
    /// Bytes in the file (header included).
    pub(super) len: u64,
}

pub struct Log {
    dir: PathBuf,
    policy: Fsync,
    pending: Mutex<Pending>,
    wake: Condvar,
    segment: Mutex<Segment>,
    written: AtomicU64,
    synced: AtomicU64,
    failing: AtomicBool,
    /// Told the synced sequence number after each sync (the server posts
    /// it to the reactor, which releases answers waiting for it).
    on_synced: OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
}

/// The store's journal: appends each mutation's record to the buffer.
pub struct LogJournal(pub Arc<Log>);

impl Journal for LogJournal {
    fn set(&self, pairs: &mut dyn Iterator<Item = (&str, &str)>) {
        self.0.append(|buf| format::push_set(buf, pairs));
    }

    fn del(&self, keys: &mut dyn Iterator<Item = &str>) {
        self.0.append(|buf| format::push_del(buf, keys));
    }

    fn clear(&self) {
        self.0.append(format::push_clear);
    }
}

pub(super) fn segment_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("log-{generation}.kvs"))
}

impl Log {
    /// A log appending to `segment`. Sequence numbers start at the
    /// segment's length; they only order this process's records, so they
    /// need not continue those of an earlier run.
    pub(super) fn new(dir: &Path, policy: Fsync, segment: Segment) -> Arc<Log> {
        let start = segment.len;
        Arc::new(Log {
            dir: dir.to_path_buf(),
            policy,
            pending: Mutex::new(Pending {
                // Room for what piles up between two writes at full speed,
                // so appending (under shard locks) does not regrow it.
                bytes: Vec::with_capacity(2 * EAGER_WRITE),
                end: start,
                sync_wanted: 0,
                ..Pending::default()
            }),
            wake: Condvar::new(),
            segment: Mutex::new(segment),
            written: AtomicU64::new(start),
            synced: AtomicU64::new(start),
            failing: AtomicBool::new(false),
            on_synced: OnceLock::new(),
        })
    }

    pub fn policy(&self) -> Fsync {
        self.policy
    }

    /// Sets what is told of each sync (once).
    pub fn on_synced(&self, f: Box<dyn Fn(u64) + Send + Sync>) {
        let _ = self.on_synced.set(f);
    }

    /// Appends one mutation's records. They are encoded (and checksummed)
    /// into a buffer of this thread's before the shared buffer is locked,
    /// so writers on other shards wait only for a copy. The caller holds
    /// the shard locks, which keeps each key's records in order.
    fn append(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            encode(&mut scratch);
            let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            p.bytes.extend_from_slice(&scratch);
            p.end += scratch.len() as u64;
            if p.bytes.len() >= EAGER_WRITE {
                self.wake.notify_one();
            }
        });
    }

    /// Whether the last write failed: mutations from clients are refused
    /// until one succeeds.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Writes every record appended so far to the segment; returns the
    /// sequence number written up to. On failure the file is cut back to
    /// its last whole record and the bytes are kept for the next try.
    pub fn write_out(&self) -> io::Result<u64> {
        let mut seg = self.segment.lock().unwrap_or_else(PoisonError::into_inner);
        let (bytes, end) = {
            let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if p.bytes.is_empty() {
                return Ok(self.written.load(Ordering::Acquire));
            }
            let next = std::mem::take(&mut p.spare);
            (std::mem::replace(&mut p.bytes, next), p.end)
        };
        match (&*seg.file).write_all(&bytes) {
            Ok(()) => {
                seg.len += bytes.len() as u64;
                self.written.store(end, Ordering::Release);
                let mut spare = bytes;
                spare.clear();
                let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                // A buffer grown by a burst (a stalled disk) is let go.
                if p.spare.capacity() < spare.capacity() && spare.capacity() <= 4 * EAGER_WRITE {
                    p.spare = spare;
                }
                drop(p);
                if self.failing.swap(false, Ordering::AcqRel) {
                    crate::log_info!("the log can be written again; mutations are accepted");
                }
                Ok(end)
            }
            Err(e) => {
                // Never leave half a record in the middle of the file.
                let _ = seg.file.set_len(seg.len);
                let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                let mut back = bytes;
                back.extend_from_slice(&p.bytes);
                p.bytes = back;
                if !self.failing.swap(true, Ordering::AcqRel) {
                    crate::log_error!(
                        "cannot write the log {}: {e}; refusing mutations until it can",
                        segment_path(&self.dir, seg.generation).display()
                    );
                }
                Err(e)
            }
        }
    }

    /// Asks the log thread for a sync covering `upto` (group commit).
    pub fn want_sync(&self, upto: u64) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if upto > p.sync_wanted {
            p.sync_wanted = upto;
            self.wake.notify_one();
        }
    }

    /// Syncs what is written; returns the sequence number now on disk.
    fn sync(&self) -> io::Result<u64> {
        let (file, upto) = {
            let seg = self.segment.lock().unwrap_or_else(PoisonError::into_inner);
            (seg.file.clone(), self.written.load(Ordering::Acquire))
        };
        // Outside the lock: writes go on while the disk works, and the next
        // sync takes them all.
        file.sync_data()?;
        self.synced.fetch_max(upto, Ordering::AcqRel);
        if let Some(f) = self.on_synced.get() {
            f(upto);
        }
        Ok(upto)
    }

    /// Bytes in the current segment, and its generation.
    pub(super) fn segment_len(&self) -> (u64, u64) {
        let seg = self.segment.lock().unwrap_or_else(PoisonError::into_inner);
        (seg.len, seg.generation)
    }

    /// Writes and syncs what is buffered to the current segment, then starts
    /// segment `generation + 1`. Called with every shard of the store
    /// locked, so the old segments hold exactly what the snapshot taken
    /// under the same locks holds.
    pub(super) fn rotate(&self) -> io::Result<u64> {
        self.write_out()?;
        let mut seg = self.segment.lock().unwrap_or_else(PoisonError::into_inner);
        seg.file.sync_data()?;
        let next = seg.generation + 1;
        let file = super::create_file(
            &segment_path(&self.dir, next),
            &format::header(format::LOG_MAGIC),
        )?;
        super::sync_dir(&self.dir)?;
        *seg = Segment {
            file: Arc::new(file),
            generation: next,
            len: format::HEADER_LEN as u64,
        };
        Ok(next)
    }

    /// The log thread: writes what job files append, syncs per policy,
    /// and calls `tick` (compaction) after each round. Returns on
    /// [`Log::stop`] after a last write and sync.
    pub fn run(&self, mut tick: impl FnMut()) {
        let mut last_sync = Instant::now();
        loop {
            let stop = {
                let p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                let idle = |p: &mut Pending| {
                    !p.stop
                        && p.bytes.len() < EAGER_WRITE
                        && p.sync_wanted <= self.synced.load(Ordering::Acquire)
                };
                let (p, _) = self
                    .wake
                    .wait_timeout_while(p, WRITE_INTERVAL, idle)
                    .unwrap_or_else(PoisonError::into_inner);
                p.stop
            };
            let _ = self.write_out();
            let written = self.written.load(Ordering::Acquire);
            let unsynced = written > self.synced();
            let due = match self.policy {
                Fsync::Always => unsynced,
                Fsync::EverySec => unsynced && last_sync.elapsed() >= Duration::from_secs(1),
                Fsync::No => false,
            };
            if due || (stop && unsynced) {
                match self.sync() {
                    Ok(_) => last_sync = Instant::now(),
                    Err(e) => crate::log_error!("cannot sync the log: {e}"),
                }
            }
            if stop {
                return;
            }
            tick();
        }
    }

    /// Ends [`Log::run`] after everything appended is written and synced.
    pub fn stop(&self) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        p.stop = true;
        self.wake.notify_one();
    }
}
