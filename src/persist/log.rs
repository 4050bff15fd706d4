//! The append-only log: every mutation, from every source, as one record,
//! in the order it was applied to each key.
//!
//! Three steps, three owners:
//! - **append** ([`Journal`]): the store calls it under its shard locks; the
//!   record goes into one of several in-memory buffers (no system call),
//!   tagged with a sequence number.
//! - **write** ([`Log::write_out`]): the buffers are merged in sequence
//!   order and go to the segment file. The store pool does this before it
//!   answers a client, so nothing is answered as done that is not written;
//!   the log thread does it for job files every few milliseconds.
//! - **sync** (the log thread): `fdatasync`, per `--fsync`. With `always`,
//!   an answer waits for it, and one sync covers every record written
//!   before it started (group commit): sixteen clients share a sync, they do
//!   not queue for sixteen.
//!
//! Positions in the log ("written", "synced") count bytes as if all
//! segments were one file, so they only grow, and an answer waits for
//! `synced >=` the position written up to after its own records.
//!
//! A write that fails (disk full, I/O error) is undone with `ftruncate`, so
//! the file never holds half a record in its middle; the bytes are kept
//! for the next try, which the log thread makes every few milliseconds.
//! Until one succeeds, clients' mutations are refused before they are
//! applied ([`Log::failing`]); a change applied before the failure was
//! seen is not refused (it happened, in memory) but held: its answer waits
//! until the log has it ([`WriteFailed::upto`]), so a refused change is
//! never visible, and an answered one is always logged.

use super::chain::segment_path;
use super::format;
use crate::store::Journal;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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

/// How often the log thread writes what job files appended.
const WRITE_INTERVAL: Duration = Duration::from_millis(20);
/// A stripe this large is written at once, not at the next interval.
const EAGER_WRITE: usize = 1 << 20;
/// Buffers appenders spread over. A thread keeps to one, so two threads
/// share a buffer only when more than this many append.
const STRIPES: usize = 16;
/// Before each record in a stripe: its sequence number (u64) and the
/// length of what follows (u32). Stripped when the stripes are merged.
const TAG_LEN: usize = 12;

/// Which stripe each thread appends to, handed out in turn.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
}

/// One appender's buffer, on a cache line of its own so that two threads
/// appending to two stripes never touch the same line.
#[repr(align(128))]
#[derive(Default)]
struct Stripe(Mutex<Vec<u8>>);

/// What the log thread waits on.
#[derive(Default)]
struct Control {
    /// An answer waits for a sync up to here.
    sync_wanted: u64,
    stop: bool,
}

/// What writing takes: the segment, and the buffers of the merge.
struct Writer {
    segment: Segment,
    /// Each stripe's records, taken out of it for merging; emptied after,
    /// and swapped back in next time, so appenders reuse their capacity.
    taken: Vec<Vec<u8>>,
    /// Merged records not yet in the file: after a failed write, what it
    /// could not write, ahead of whatever comes next.
    out: Vec<u8>,
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
    /// The data dir's id, for the headers of new segments.
    dir_id: u64,
    policy: Fsync,
    /// Appended records, each tagged with its sequence number. Every
    /// append takes a number and one stripe's lock while the caller holds
    /// its shard locks; the writer orders the stripes' records by number.
    /// Two records of one key are ordered by the shard lock, so their
    /// numbers are too. One shared buffer instead made every append of
    /// every thread wait on one lock.
    stripes: [Stripe; STRIPES],
    next_seq: AtomicU64,
    /// Set by an append that fills its stripe past [`EAGER_WRITE`].
    eager: AtomicBool,
    control: Mutex<Control>,
    wake: Condvar,
    writer: Mutex<Writer>,
    written: AtomicU64,
    synced: AtomicU64,
    failing: AtomicBool,
    /// The furthest position an answer held by a failed write waits for
    /// (0: none); told through `on_synced` once written (and synced, with
    /// `--fsync always`).
    held: AtomicU64,
    /// Told the synced sequence number after each sync (the server posts
    /// it to the reactor, which releases answers waiting for it).
    on_synced: OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
}

/// The store's journal: appends each mutation's record to the buffer.
pub struct LogJournal(pub Arc<Log>);

impl Journal for LogJournal {
    fn set(&self, pairs: &mut dyn Iterator<Item = (&[u8], &[u8])>) {
        self.0.append(|buf| format::push_set(buf, pairs));
    }

    fn del(&self, keys: &mut dyn Iterator<Item = &[u8]>) {
        self.0.append(|buf| format::push_del(buf, keys));
    }

    fn clear(&self) {
        self.0.append(format::push_clear);
    }

    fn expire(&self, key: &[u8], at: Option<u64>) {
        self.0
            .append(|buf| format::push_expire(buf, std::iter::once((key, at))));
    }

    fn group(&self, mutations: &[crate::store::Mutation]) {
        self.0.append(|buf| format::push_group(buf, mutations));
    }
}

/// A write of the log that failed.
#[derive(Debug)]
pub struct WriteFailed {
    pub error: io::Error,
    /// The position the records it could not write end at, once written:
    /// an answer to them waits for the log to get there.
    pub upto: u64,
}

impl Log {
    /// A log appending to `segment`. Byte positions ("written", "synced")
    /// start at the segment's length; they only order this process's
    /// records, so they need not continue those of an earlier run.
    pub(super) fn new(dir: &Path, policy: Fsync, dir_id: u64, segment: Segment) -> Arc<Log> {
        let start = segment.len;
        Arc::new(Log {
            dir: dir.to_path_buf(),
            dir_id,
            policy,
            stripes: std::array::from_fn(|_| Stripe::default()),
            next_seq: AtomicU64::new(0),
            eager: AtomicBool::new(false),
            control: Mutex::new(Control::default()),
            wake: Condvar::new(),
            writer: Mutex::new(Writer {
                segment,
                taken: vec![Vec::new(); STRIPES],
                out: Vec::new(),
            }),
            written: AtomicU64::new(start),
            synced: AtomicU64::new(start),
            failing: AtomicBool::new(false),
            held: AtomicU64::new(0),
            on_synced: OnceLock::new(),
        })
    }

    pub(super) fn dir_id(&self) -> u64 {
        self.dir_id
    }

    pub fn policy(&self) -> Fsync {
        self.policy
    }

    /// Sets what is told of each sync (once).
    pub fn on_synced(&self, f: Box<dyn Fn(u64) + Send + Sync>) {
        let _ = self.on_synced.set(f);
    }

    /// Appends one mutation's records to this thread's stripe, encoded in
    /// place behind their tag. The caller holds the shard locks, which
    /// keeps each key's records in order; the number is taken under the
    /// stripe's lock, so each stripe's numbers only grow.
    fn append(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        let stripe = &self.stripes[STRIPE.with(|s| *s)];
        let mut buf = stripe.0.lock().unwrap_or_else(PoisonError::into_inner);
        if buf.capacity() == 0 {
            // Room for what piles up between two writes at full speed, so
            // appending (under shard locks) does not regrow it.
            buf.reserve(EAGER_WRITE + EAGER_WRITE / 4);
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let at = buf.len();
        buf.extend_from_slice(&[0; TAG_LEN]);
        encode(&mut buf);
        let len = (buf.len() - at - TAG_LEN) as u32;
        buf[at..at + 8].copy_from_slice(&seq.to_le_bytes());
        buf[at + 8..at + TAG_LEN].copy_from_slice(&len.to_le_bytes());
        let full = buf.len() >= EAGER_WRITE;
        drop(buf);
        if full && !self.eager.swap(true, Ordering::AcqRel) {
            // Under the lock the log thread checks `eager` with, so the
            // wake-up cannot fall between its check and its wait.
            let _c = self.control.lock().unwrap_or_else(PoisonError::into_inner);
            self.wake.notify_one();
        }
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
    /// byte position written up to. On failure the file is cut back to its
    /// last whole record and the bytes are kept for the next try.
    pub fn write_out(&self) -> Result<u64, WriteFailed> {
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let w = &mut *w;
        self.collect(&mut w.taken, &mut w.out);
        if w.out.is_empty() {
            return Ok(self.written.load(Ordering::Acquire));
        }
        let seg = &mut w.segment;
        match (&*seg.file).write_all(&w.out) {
            Ok(()) => {
                seg.len += w.out.len() as u64;
                let end = self.written.load(Ordering::Acquire) + w.out.len() as u64;
                self.written.store(end, Ordering::Release);
                w.out.clear();
                // A buffer grown by a burst (a stalled disk) is let go.
                if w.out.capacity() > 4 * EAGER_WRITE {
                    w.out = Vec::new();
                }
                if self.failing.swap(false, Ordering::AcqRel) {
                    crate::log_info!("the log can be written again; mutations are accepted");
                }
                Ok(end)
            }
            Err(error) => {
                // Never leave half a record in the middle of the file.
                let _ = seg.file.set_len(seg.len);
                if !self.failing.swap(true, Ordering::AcqRel) {
                    crate::log_error!(
                        "cannot write the log {}: {error}; refusing mutations until it can",
                        segment_path(&self.dir, seg.generation).display()
                    );
                }
                let upto = self.written.load(Ordering::Acquire) + w.out.len() as u64;
                Err(WriteFailed { error, upto })
            }
        }
    }

    /// Takes every stripe's records at one instant and appends them to
    /// `out` in sequence order, untagged.
    ///
    /// Why this keeps each key in order: all stripes are locked together,
    /// so if a record is taken, so is every record appended before it
    /// under the same shard lock (it was in its stripe before that lock
    /// was let go). A record still missing (its number taken, its stripe
    /// not yet locked) touches no key of any record taken after it, and
    /// goes out in the next round.
    fn collect(&self, taken: &mut [Vec<u8>], out: &mut Vec<u8>) {
        self.eager.store(false, Ordering::Release);
        {
            let mut guards: [_; STRIPES] = std::array::from_fn(|i| {
                self.stripes[i]
                    .0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
            });
            for (g, t) in guards.iter_mut().zip(taken.iter_mut()) {
                std::mem::swap(&mut **g, t);
            }
        }
        merge(taken, out);
        for t in taken.iter_mut() {
            t.clear();
            // Swapped back into the stripe next time: keep a usual
            // buffer, let a burst's go.
            if t.capacity() > 4 * EAGER_WRITE {
                *t = Vec::new();
            }
        }
    }

    /// Holds an answer until the log is written up to `upto` (and synced,
    /// with `--fsync always`): its records were applied, then a write
    /// failed. The log thread tells of it through `on_synced`.
    pub fn hold_until(&self, upto: u64) {
        self.held.fetch_max(upto, Ordering::AcqRel);
        if self.policy == Fsync::Always {
            self.want_sync(upto);
        }
    }

    /// Asks the log thread for a sync covering `upto` (group commit).
    pub fn want_sync(&self, upto: u64) {
        let mut c = self.control.lock().unwrap_or_else(PoisonError::into_inner);
        if upto > c.sync_wanted {
            c.sync_wanted = upto;
            self.wake.notify_one();
        }
    }

    /// Syncs what is written; returns the position now on disk.
    fn sync(&self) -> io::Result<u64> {
        let (file, upto) = {
            let w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            (w.segment.file.clone(), self.written.load(Ordering::Acquire))
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
        let w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        (w.segment.len, w.segment.generation)
    }

    /// Writes and syncs what is buffered to the current segment, then starts
    /// segment `generation + 1`. Called with every shard of the store
    /// locked, so the old segments hold exactly what the snapshot taken
    /// under the same locks holds.
    ///
    /// The new segment is made first (whole, by rename), then the old one
    /// gets its seal naming it, synced: a crash between the two leaves an
    /// unsealed segment followed by an empty one, which start-up accepts;
    /// a seal whose segment is missing is refused.
    pub(super) fn rotate(&self) -> io::Result<u64> {
        self.write_out().map_err(|f| f.error)?;
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let seg = &mut w.segment;
        let next = seg.generation + 1;
        let file = super::chain::create_segment(&self.dir, self.dir_id, next)?;
        let mut seal = Vec::new();
        format::push_seal(&mut seal, next);
        let sealed = (&*seg.file)
            .write_all(&seal)
            .and_then(|()| seg.file.sync_data());
        if let Err(e) = sealed {
            // Stay on the old segment, as if nothing happened.
            let _ = seg.file.set_len(seg.len);
            let _ = std::fs::remove_file(segment_path(&self.dir, next));
            return Err(e);
        }
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
                let c = self.control.lock().unwrap_or_else(PoisonError::into_inner);
                let idle = |c: &mut Control| {
                    !c.stop
                        && !self.eager.load(Ordering::Acquire)
                        && c.sync_wanted <= self.synced.load(Ordering::Acquire)
                };
                let (c, _) = self
                    .wake
                    .wait_timeout_while(c, WRITE_INTERVAL, idle)
                    .unwrap_or_else(PoisonError::into_inner);
                c.stop
            };
            let wrote = self.write_out().is_ok();
            if !wrote && !stop {
                // The disk is full or failing: try again in a while, not
                // in a loop (answers held for a sync keep `idle` false).
                std::thread::sleep(WRITE_INTERVAL);
            }
            let written = self.written.load(Ordering::Acquire);
            let held = self.held.load(Ordering::Acquire);
            if wrote && held > 0 && held <= written && self.policy != Fsync::Always {
                self.held.store(0, Ordering::Release);
                if let Some(f) = self.on_synced.get() {
                    f(written);
                }
            }
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
        let mut c = self.control.lock().unwrap_or_else(PoisonError::into_inner);
        c.stop = true;
        self.wake.notify_one();
    }
}

/// A tagged record in a stripe: its number, and where its bytes are.
fn tag_at(buf: &[u8], at: usize) -> (u64, std::ops::Range<usize>) {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&buf[at..at + 8]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&buf[at + 8..at + TAG_LEN]);
    let body = at + TAG_LEN;
    (
        u64::from_le_bytes(seq),
        body..body + u32::from_le_bytes(len) as usize,
    )
}

/// Appends the records of `stripes` (each in rising sequence order) to
/// `out` in sequence order, without their tags. Each round copies the run
/// of the stripe with the lowest next number up to the next number of any
/// other, so one stripe alone (one appending thread) is copied in one run.
fn merge(stripes: &[Vec<u8>], out: &mut Vec<u8>) {
    let mut at: Vec<usize> = vec![0; stripes.len()];
    let live: Vec<usize> = (0..stripes.len())
        .filter(|&i| !stripes[i].is_empty())
        .collect();
    out.reserve(live.iter().map(|&i| stripes[i].len()).sum());
    loop {
        // The stripe with the lowest next number, and the next lowest
        // number of any other.
        let mut first: Option<(u64, usize)> = None;
        let mut second = u64::MAX;
        for &i in &live {
            if at[i] >= stripes[i].len() {
                continue;
            }
            let (seq, _) = tag_at(&stripes[i], at[i]);
            match first {
                Some((low, _)) if low < seq => second = second.min(seq),
                Some((low, _)) => {
                    second = second.min(low);
                    first = Some((seq, i));
                }
                None => first = Some((seq, i)),
            }
        }
        let Some((_, i)) = first else {
            return;
        };
        let buf = &stripes[i];
        while at[i] < buf.len() {
            let (seq, body) = tag_at(buf, at[i]);
            if seq > second {
                break;
            }
            out.extend_from_slice(&buf[body.clone()]);
            at[i] = body.end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::format::{read_record, Record};

    fn open(dir: &Path) -> Arc<Log> {
        let file = crate::persist::chain::create_segment(dir, 7, 0).unwrap();
        let len = format::HEADER_LEN as u64;
        let segment = Segment {
            file: Arc::new(file),
            generation: 0,
            len,
        };
        Log::new(dir, Fsync::No, 7, segment)
    }

    fn records(dir: &Path) -> Vec<Record> {
        let bytes = std::fs::read(segment_path(dir, 0)).unwrap();
        let mut at = format::HEADER_LEN;
        let mut out = Vec::new();
        while at < bytes.len() {
            let (record, len) = read_record(&bytes[at..], format::Version::V2).unwrap();
            out.push(record);
            at += len;
        }
        out
    }

    /// Threads count keys up under per-key locks (as shard locks do),
    /// some two keys at once, while another thread writes the log out
    /// again and again: in the file every key must count 1, 2, 3, ...
    /// with nothing missing, and a two-key record must stay whole.
    #[test]
    fn each_keys_records_keep_their_order_across_stripes_and_writes() {
        const KEYS: usize = 8;
        const THREADS: usize = 4;
        const ROUNDS: usize = 3000;
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let keys: Arc<Vec<Mutex<u64>>> = Arc::new((0..KEYS).map(|_| Mutex::new(0)).collect());
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (log, done) = (log.clone(), done.clone());
            std::thread::spawn(move || {
                let mut positions = Vec::new();
                while !done.load(Ordering::Acquire) {
                    positions.push(log.write_out().unwrap());
                }
                positions
            })
        };
        let appenders: Vec<_> = (0..THREADS)
            .map(|t| {
                let (log, keys) = (log.clone(), keys.clone());
                std::thread::spawn(move || {
                    for round in 0..ROUNDS {
                        let a = (round * 7 + t) % KEYS;
                        let b = (a + 1 + round % (KEYS - 1)) % KEYS;
                        let (low, high) = (a.min(b), a.max(b));
                        let mut first = keys[low].lock().unwrap();
                        let mut pairs = vec![];
                        *first += 1;
                        pairs.push((format!("k{low}"), first.to_string()));
                        let second = (round % 3 == 0).then(|| {
                            let mut g = keys[high].lock().unwrap();
                            *g += 1;
                            pairs.push((format!("k{high}"), g.to_string()));
                            g
                        });
                        log.append(|buf| {
                            format::push_set(
                                buf,
                                pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
                            )
                        });
                        drop(second);
                        drop(first);
                    }
                })
            })
            .collect();
        for a in appenders {
            a.join().unwrap();
        }
        done.store(true, Ordering::Release);
        let positions = writer.join().unwrap();
        assert!(positions.windows(2).all(|w| w[0] <= w[1]));
        let end = log.write_out().unwrap();
        let file_len = std::fs::metadata(segment_path(dir.path(), 0))
            .unwrap()
            .len();
        assert_eq!(end, file_len, "positions count the file's bytes");

        let mut seen = [0u64; KEYS];
        let mut pairs_seen = 0;
        for record in records(dir.path()) {
            let Record::Set(pairs) = record else {
                panic!("only sets were appended");
            };
            assert!(pairs.len() <= 2);
            for (k, v) in pairs {
                let (k, v) = (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap());
                let key: usize = k[1..].parse().unwrap();
                let value: u64 = v.parse().unwrap();
                assert_eq!(value, seen[key] + 1, "{k} out of order");
                seen[key] = value;
                pairs_seen += 1;
            }
        }
        let counted: u64 = keys.iter().map(|k| *k.lock().unwrap()).sum();
        assert_eq!(pairs_seen, counted, "every appended pair is in the file");
        assert_eq!(seen.iter().sum::<u64>(), counted);
    }

    #[test]
    fn merge_orders_by_number_and_drops_the_tags() {
        fn tagged(records: &[(u64, &[u8])]) -> Vec<u8> {
            let mut v = Vec::new();
            for (seq, body) in records {
                v.extend_from_slice(&seq.to_le_bytes());
                v.extend_from_slice(&(body.len() as u32).to_le_bytes());
                v.extend_from_slice(body);
            }
            v
        }
        let stripes = vec![
            tagged(&[(0, b"a"), (1, b"bb"), (5, b"f")]),
            Vec::new(),
            tagged(&[(2, b"c"), (4, b"e"), (6, b"")]),
            tagged(&[(3, b"d"), (7, b"gh")]),
        ];
        let mut out = b"kept".to_vec();
        merge(&stripes, &mut out);
        assert_eq!(out, b"keptabbcdefgh");
        let mut one = Vec::new();
        merge(&[Vec::new(), tagged(&[(9, b"x"), (10, b"yz")])], &mut one);
        assert_eq!(one, b"xyz");
    }
}
