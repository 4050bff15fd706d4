//! Start-up: the chain of files ([`super::chain`]) into the store, then
//! the last segment opened for appending.
//!
//! Start-up loads exactly the last state written, less a torn tail, or
//! refuses with the file, the offset and the reason. A torn tail is what a
//! crash mid-append leaves at the end of the last segment and nowhere
//! else: a frame cut short, a whole frame whose payload runs past the end,
//! zeros (what ext4 can leave after a power cut), and in every case no
//! valid record after it; it is cut off and stderr says how many bytes.
//! Anything else (a damaged frame or record with data after it, a
//! damaged snapshot, a header of another dir or generation, a missing
//! file, a seal naming a segment that is not there, a file that is not a
//! regular file) refuses the start.
//!
//! `--repair` loads what comes before the damage (a damaged snapshot
//! record costs only its own pairs: snapshot pairs are independent, so the
//! rest of the snapshot and the logs still load), writes that state as a
//! new snapshot and segment, and sets the damaged file and every file
//! after it aside as `<name>.dropped`, saying what each held; the next
//! plain start loads the new files and says nothing of the damage.

use super::chain::{self, segment_path, snapshot_path, Chain};
use super::format::{self, FormatError, Header, Record, Version};
use super::log::{Log, Segment};
use super::{lock_dir, DataDirOptions, DirLock, PersistError};
use crate::store::Store;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// An opened data dir.
pub struct Opened {
    pub log: Arc<Log>,
    /// Held until the process ends.
    pub lock: DirLock,
    /// Size of the snapshot loaded (0 if none): compaction waits until the
    /// log is larger.
    pub snapshot_len: u64,
}

/// Applies one record to the store.
fn apply(store: &Store, record: Record) {
    match record {
        Record::Set(pairs) => store.write(&pairs),
        Record::Del(keys) => {
            store.delete(&keys);
        }
        Record::Clear => {
            store.clear();
        }
        Record::Group(records) => {
            for r in records {
                apply(store, r);
            }
        }
        Record::Expire(items) => {
            for (key, at) in items {
                store.restore_deadline(&key, at);
            }
        }
        Record::End(_) | Record::Seal(_) => {}
    }
}

/// What replaying one file found.
#[derive(Default)]
struct Replayed {
    records: u64,
    /// The snapshot's end record, if it was the last record read.
    end: Option<u64>,
    /// The segment's seal, if it was the last record read.
    seal: Option<u64>,
    /// Where the readable part ends.
    good_len: u64,
    damage: Option<(u64, FormatError)>,
}

/// Replays the records of `bytes` (a whole file) after its header.
fn replay(store: &Store, bytes: &[u8], version: Version) -> Replayed {
    replay_from(store, bytes, version.header_len(), version)
}

/// [`replay`] from `at` on (also after damage a repair skipped). A record
/// after an end or a seal is damage: kvs writes nothing after either.
fn replay_from(store: &Store, bytes: &[u8], at: usize, version: Version) -> Replayed {
    let mut r = Replayed::default();
    let mut at = at;
    while at < bytes.len() {
        if r.end.is_some() || r.seal.is_some() {
            r.damage = Some((
                at as u64,
                FormatError::BadPayload("a record after the last"),
            ));
            break;
        }
        match format::read_record(&bytes[at..], version) {
            Ok((record, n)) => {
                match record {
                    Record::End(n) => r.end = Some(n),
                    Record::Seal(g) => r.seal = Some(g),
                    _ => {}
                }
                apply(store, record);
                r.records += 1;
                at += n;
            }
            Err(e) => {
                r.damage = Some((at as u64, e));
                break;
            }
        }
    }
    r.good_len = at as u64;
    r
}

/// The offset of the first valid record after `from`, if any.
fn next_valid(bytes: &[u8], from: usize, version: Version) -> Option<usize> {
    (from + 1..bytes.len().saturating_sub(version.frame_len() - 1))
        .find(|&at| format::read_record(&bytes[at..], version).is_ok())
}

/// Records (and the keys they name) from the first valid one after
/// `from`: what cutting at `from` drops, at least.
fn count_after(bytes: &[u8], from: usize, version: Version) -> (u64, usize) {
    let (mut records, mut keys) = (0, 0);
    let mut at = from;
    while let Some(next) = next_valid(bytes, at, version) {
        at = next;
        while let Ok((r, n)) = format::read_record(&bytes[at..], version) {
            records += 1;
            keys += r.keys();
            at += n;
        }
    }
    (records, keys)
}

/// Whether damage at `at` can be what a crash mid-append leaves at the end
/// of the last segment (see the module's doc).
fn torn_tail(bytes: &[u8], at: usize, version: Version) -> bool {
    let rest = &bytes[at..];
    if rest.iter().all(|&b| b == 0) {
        return true;
    }
    if next_valid(bytes, at, version).is_some() {
        return false;
    }
    match format::read_frame(rest, version) {
        Err(FormatError::Truncated) => true,
        Ok(total) if total > rest.len() => true,
        // A whole record that does not check out: torn only if what ends
        // it is zeros from a sector's start on (the sectors never written).
        Ok(total) if total == rest.len() => {
            let sector = (at + version.frame_len()).div_ceil(512) * 512;
            sector < bytes.len() && bytes[sector..].iter().all(|&b| b == 0)
        }
        _ => false,
    }
}

/// Reads a data file, refusing anything but a regular file (so a FIFO
/// cannot hang start-up, nor a link to `/dev/zero` fill memory), and makes
/// it private if an older kvs left it readable by others.
fn read_data_file(path: &Path) -> Result<Vec<u8>, PersistError> {
    use std::os::unix::fs::PermissionsExt;
    let cannot = |e| PersistError::Io(format!("cannot read {}", path.display()), e);
    let file =
        crate::safe_file::open_regular(OpenOptions::new().read(true), path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if meta.permissions().mode() & 0o077 != 0 {
        // Through the descriptor: the file checked is the file changed.
        if file
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .is_ok()
        {
            crate::log_info!("{}: made private (mode 0600)", path.display());
        }
    }
    crate::safe_file::read_opened(&file).map_err(cannot)
}

/// A [`Problem`]'s file none of which was dropped (what follows it was, or
/// its damaged records were skipped and said already).
const LOADED: u64 = u64::MAX;

/// Why loading stopped short: where, and what it means for `--repair`.
struct Problem {
    error: PersistError,
    /// The damaged file (set aside by a repair), if a file is damaged, and
    /// the offset its dropped part starts at ([`LOADED`]: none of it).
    file: Option<(PathBuf, u64)>,
    /// Segments after the problem (set aside by a repair).
    later: Vec<u64>,
}

fn damaged(file: &Path, offset: u64, reason: FormatError) -> PersistError {
    PersistError::Damaged {
        file: file.to_path_buf(),
        offset,
        reason,
    }
}

/// The loading of one chain, file by file.
struct Loader<'a> {
    store: &'a Store,
    dir: &'a Path,
    dir_id: Option<u64>,
    records: u64,
    snapshot_len: u64,
    snapshot_keys: usize,
    /// Damage `--repair` skipped in the snapshot: (bytes, first offset).
    snapshot_skipped: Option<(u64, u64)>,
    /// The last segment loaded: generation, version, length.
    last: Option<(u64, Version, u64)>,
    /// A version 2 segment that ended without a seal and is not the last:
    /// the one after it must hold no record (a crash between creating it
    /// and sealing this one).
    unsealed: Option<u64>,
    /// That segment, once the one after it was found empty: it gets its
    /// seal now, before anything is appended after it.
    needs_seal: Option<u64>,
    repair: bool,
}

impl Loader<'_> {
    /// Checks a header against the chain: its kind, its generation and
    /// its dir.
    fn header(
        &mut self,
        path: &Path,
        bytes: &[u8],
        magic: &[u8; 8],
        generation: u64,
    ) -> Result<Header, PersistError> {
        let h = format::read_header(bytes, magic).map_err(|e| damaged(path, 0, e))?;
        if let Some(g) = h.generation.filter(|&g| g != generation) {
            return Err(PersistError::Foreign(format!(
                "{} says it is generation {g}: it was renamed or copied in",
                path.display()
            )));
        }
        if let Some(id) = h.dir_id {
            match self.dir_id {
                Some(mine) if mine != id => {
                    return Err(PersistError::Foreign(format!(
                        "{} belongs to another data dir (id {id:016x}, this one is {mine:016x})",
                        path.display()
                    )))
                }
                _ => self.dir_id = Some(id),
            }
        }
        Ok(h)
    }

    fn snapshot(&mut self, g: u64) -> Result<(), Problem> {
        let path = snapshot_path(self.dir, g);
        let at_file = |error| Problem {
            error,
            file: Some((path.clone(), 0)),
            later: Vec::new(),
        };
        let bytes = read_data_file(&path).map_err(at_file)?;
        self.snapshot_len = bytes.len() as u64;
        let h = self
            .header(&path, &bytes, format::SNAPSHOT_MAGIC, g)
            .map_err(at_file)?;
        let mut r = replay(self.store, &bytes, h.version);
        // A snapshot appears whole, by rename, and ends with its count:
        // anything else is damage, never a torn append.
        if r.damage.is_none() && r.end != Some(self.store.len() as u64) {
            r.damage = Some((r.good_len, FormatError::Truncated));
        }
        if let Some((offset, reason)) = r.damage {
            if !self.repair {
                return Err(at_file(damaged(&path, offset, reason)));
            }
            // Pairs of a snapshot are independent: the records after the
            // damaged one still hold true.
            let mut at = offset as usize;
            let mut skipped = 0;
            loop {
                let Some(next) = next_valid(&bytes, at, h.version) else {
                    skipped += bytes.len().saturating_sub(at) as u64;
                    break;
                };
                skipped += (next - at) as u64;
                let rest = replay_from(self.store, &bytes, next, h.version);
                match rest.damage {
                    Some((o, _)) => at = o as usize,
                    None => break,
                }
            }
            self.snapshot_skipped = Some((skipped, offset));
            crate::log_warn!(
                "--repair: {} is damaged at byte {offset} ({reason}); dropped {skipped} bytes of it (the pairs of the damaged records), kept the rest",
                path.display()
            );
        }
        self.snapshot_keys = self.store.len();
        Ok(())
    }

    fn segment(&mut self, g: u64, is_last: bool, later: &[u64]) -> Result<(), Problem> {
        let path = segment_path(self.dir, g);
        let dropped_at = |from: u64| {
            let path = &path;
            move |error| Problem {
                error,
                file: Some((path.clone(), from)),
                later: later.to_vec(),
            }
        };
        let at_file = dropped_at(0);
        let bytes = read_data_file(&path).map_err(at_file)?;
        let h = self
            .header(&path, &bytes, format::LOG_MAGIC, g)
            .map_err(at_file)?;
        let r = replay(self.store, &bytes, h.version);
        self.records += r.records;
        if let Some(prev) = self.unsealed.take() {
            self.needs_seal = (r.records == 0).then_some(prev);
            if r.records > 0 {
                return Err(Problem {
                    error: PersistError::Foreign(format!(
                        "log-{prev}.kvs does not end with the seal kvs writes before it goes on to {}, which holds records",
                        path.display()
                    )),
                    file: Some((segment_path(self.dir, prev), LOADED)),
                    later: std::iter::once(g).chain(later.iter().copied()).collect(),
                });
            }
        }
        let mut len = bytes.len() as u64;
        if let Some((offset, reason)) = r.damage {
            let at = offset as usize;
            let torn = is_last && at >= h.version.header_len() && torn_tail(&bytes, at, h.version);
            if !torn {
                return Err(dropped_at(offset)(damaged(&path, offset, reason)));
            }
            truncate(&path, r.good_len).map_err(dropped_at(0))?;
            crate::log_warn!(
                "{}: cut off a torn last record ({} bytes; a crash during an append)",
                path.display(),
                len - r.good_len
            );
            len = r.good_len;
        }
        match r.seal {
            Some(next) if next != g + 1 || is_last => {
                return Err(dropped_at(LOADED)(PersistError::Foreign(format!(
                    "log-{}.kvs is missing: {} ends by naming it as the next segment",
                    next,
                    path.display()
                ))))
            }
            None if !is_last && h.version == Version::V2 => self.unsealed = Some(g),
            _ => {}
        }
        self.last = Some((g, h.version, len));
        Ok(())
    }

    /// Loads `chain`, stopping at the first problem.
    fn load(&mut self, chain: &Chain) -> Result<(), Problem> {
        if let Some(g) = chain.snapshot {
            self.snapshot(g).map_err(|mut p| {
                p.later = chain.segments.clone();
                p
            })?;
        }
        for (i, &g) in chain.segments.iter().enumerate() {
            let is_last = i + 1 == chain.segments.len() && chain.break_at.is_none();
            self.segment(g, is_last, &chain.segments[i + 1..])?;
        }
        if let Some(b) = &chain.break_at {
            return Err(Problem {
                error: PersistError::Broken(format!("{}: {}", self.dir.display(), b.why)),
                file: None,
                later: b.orphans.clone(),
            });
        }
        Ok(())
    }
}

fn truncate(path: &Path, len: u64) -> Result<(), PersistError> {
    crate::safe_file::open_regular(OpenOptions::new().write(true), path)
        .and_then(|f| {
            f.set_len(len)?;
            f.sync_all()
        })
        .map_err(|e| PersistError::Io(format!("cannot cut {}", path.display()), e))
}

/// Writes the seal a crash kept segment `g` from getting (it was left for
/// `g + 1`, which exists and is empty), so that what is appended to `g + 1`
/// follows a sealed segment.
fn seal(dir: &Path, g: u64) -> Result<(), PersistError> {
    use std::io::Write;
    let path = segment_path(dir, g);
    let mut record = Vec::new();
    format::push_seal(&mut record, g + 1);
    crate::safe_file::open_regular(OpenOptions::new().append(true), &path)
        .and_then(|mut f| {
            f.write_all(&record)?;
            f.sync_data()
        })
        .map_err(|e| PersistError::Io(format!("cannot seal {}", path.display()), e))?;
    crate::log_info!(
        "{}: sealed (a crash came between starting log-{}.kvs and sealing this one)",
        path.display(),
        g + 1
    );
    Ok(())
}

/// Every generation of a data file in `dir`.
fn highest_generation(dir: &Path) -> Result<Option<u64>, PersistError> {
    let s = chain::generations(dir, "snapshot-")?;
    let l = chain::generations(dir, "log-")?;
    Ok(s.into_iter().chain(l).max())
}

/// Writes the store as snapshot `g` (temporary name, sync, rename, dir
/// sync), in this thread: start-up has nothing else to do meanwhile.
fn write_snapshot(dir: &Path, store: &Store, dir_id: u64, g: u64) -> Result<u64, PersistError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = snapshot_path(dir, g);
    let cannot = |e| PersistError::Io(format!("cannot write {}", path.display()), e);
    let (snapshot, ()) = store.snapshot_with(|| ());
    let mut bytes = format::header(format::SNAPSHOT_MAGIC, dir_id, g).to_vec();
    format::push_snapshot(&mut bytes, snapshot.pairs(), snapshot.deadlines());
    let tmp = dir.join(format!("snapshot-{g}.kvs.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&tmp)
        .map_err(cannot)?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .and_then(|()| chain::sync_dir(dir))
        .map_err(cannot)?;
    Ok(bytes.len() as u64)
}

/// Sets aside what a repair drops, each file with the offset its dropped
/// part starts at, saying what that part held.
fn set_aside_all(files: &[(PathBuf, u64)]) {
    for (path, from) in files {
        let held = crate::safe_file::read_regular(path).ok().map(|bytes| {
            if *from == LOADED {
                return format!(
                    "{} bytes, kept for reference: what of it loaded is in the new snapshot",
                    bytes.len()
                );
            }
            let magic = if path.to_string_lossy().contains("snapshot-") {
                format::SNAPSHOT_MAGIC
            } else {
                format::LOG_MAGIC
            };
            let version = format::read_header(&bytes, magic)
                .map(|h| h.version)
                .unwrap_or(Version::V2);
            let from = (*from as usize).min(bytes.len());
            let (records, keys) = count_after(&bytes, from, version);
            format!(
                "dropped its {} bytes from byte {from} on: {records} readable records after the damage, naming {keys} keys",
                bytes.len() - from
            )
        });
        match chain::set_aside(path) {
            Ok(aside) => crate::log_warn!(
                "--repair: set {} aside as {} ({})",
                path.display(),
                aside.display(),
                held.unwrap_or_else(|| "not a readable regular file".into())
            ),
            Err(e) => crate::log_warn!("--repair: cannot set {} aside: {e}", path.display()),
        }
    }
}

/// Opens the data dir: guards it, locks it, loads it into `store` (which
/// must be empty and have no journal yet), and returns the log to append
/// to.
pub fn open(opts: &DataDirOptions, store: &Store) -> Result<Opened, PersistError> {
    let dir = &opts.dir;
    crate::safe_file::private_dir(dir).map_err(PersistError::Unsafe)?;
    let lock = lock_dir(dir)?;
    let started = Instant::now();
    let chain = chain::chain(dir)?;
    let mut loader = Loader {
        store,
        dir,
        dir_id: None,
        records: 0,
        snapshot_len: 0,
        snapshot_keys: 0,
        snapshot_skipped: None,
        last: None,
        unsealed: None,
        needs_seal: None,
        repair: opts.repair,
    };
    let loaded = loader.load(&chain);
    let dir_id = loader.dir_id.unwrap_or_else(chain::new_dir_id);
    let cannot_create = |g: u64, e| {
        PersistError::Io(
            format!("cannot create {}", segment_path(dir, g).display()),
            e,
        )
    };

    let mut snapshot_len = loader.snapshot_len;
    let (generation, file, len, base) = match (loaded, loader.last) {
        // A whole version 2 chain: go on appending to its last segment.
        (Ok(()), Some((g, Version::V2, len))) if loader.snapshot_skipped.is_none() => {
            if let Some(prev) = loader.needs_seal {
                seal(dir, prev)?;
            }
            let path = segment_path(dir, g);
            let file =
                crate::safe_file::open_regular(OpenOptions::new().read(true).append(true), &path)
                    .map_err(|e| PersistError::Io(format!("cannot open {}", path.display()), e))?;
            (g, file, len, chain.snapshot.unwrap_or(0))
        }
        // A new dir, or one of version 1 (never appended to, so it stays
        // readable by the kvs that wrote it): a new segment.
        (Ok(()), last) if loader.snapshot_skipped.is_none() => {
            let g = last.map_or(0, |(g, _, _)| g + 1);
            let file = chain::create_segment(dir, dir_id, g).map_err(|e| cannot_create(g, e))?;
            if last.is_some() {
                crate::log_info!(
                    "data dir {}: version 1 files; new changes go to log-{g}.kvs, version {}",
                    dir.display(),
                    format::VERSION
                );
            }
            (
                g,
                file,
                format::HEADER_LEN as u64,
                chain.snapshot.unwrap_or(0),
            )
        }
        (Err(p), _) if !opts.repair => return Err(p.error),
        // A repair: what loaded becomes a new snapshot and segment, after
        // every file, and what was dropped is set aside.
        (loaded, _) => {
            let problem = loaded.err();
            if let Some(p) = &problem {
                crate::log_warn!("--repair: {}", p.error.cause());
            }
            let g = highest_generation(dir)?.map_or(1, |g| g + 1);
            snapshot_len = write_snapshot(dir, store, dir_id, g)?;
            let file = chain::create_segment(dir, dir_id, g).map_err(|e| cannot_create(g, e))?;
            let mut dropped: Vec<(PathBuf, u64)> = Vec::new();
            if let (Some(g), Some(_)) = (chain.snapshot, loader.snapshot_skipped) {
                // Its damaged records were said when they were skipped.
                dropped.push((snapshot_path(dir, g), LOADED));
            }
            if let Some(p) = &problem {
                dropped.extend(p.file.iter().cloned());
                dropped.extend(p.later.iter().map(|&g| (segment_path(dir, g), 0)));
            }
            dropped.dedup_by(|a, b| a.0 == b.0);
            set_aside_all(&dropped);
            crate::log_warn!(
                "--repair: wrote snapshot-{g}.kvs ({} keys: everything that loaded); the files it replaces are removed",
                store.len()
            );
            (g, file, format::HEADER_LEN as u64, g)
        }
    };

    let from = match chain.snapshot {
        _ if base == generation && generation > 0 && base != chain.snapshot.unwrap_or(0) => {
            "what the repair kept".to_string()
        }
        Some(g) => format!("snapshot {g} ({} keys)", loader.snapshot_keys),
        None => "no snapshot".into(),
    };
    let elapsed = started.elapsed().as_secs_f64();
    crate::log_info!(
        "data dir {}: loaded {} keys from {from} and {} log records in {elapsed:.3} s ({:.0} records/s)",
        dir.display(),
        store.len(),
        loader.records,
        loader.records as f64 / elapsed.max(1e-9),
    );
    let log = Log::new(
        dir,
        opts.fsync,
        dir_id,
        Segment {
            file: Arc::new(file),
            generation,
            len,
        },
    );
    chain::remove_replaced(dir, base, generation);
    Ok(Opened {
        log,
        lock,
        snapshot_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(records: &[&[(&str, &str)]]) -> Vec<u8> {
        let mut out = format::header(format::LOG_MAGIC, 1, 0).to_vec();
        for r in records {
            format::push_set(
                &mut out,
                r.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
            );
        }
        out
    }

    #[test]
    fn a_torn_tail_is_told_apart_from_damage() {
        let bytes = log_of(&[&[("a", "1")], &[("b", "2")], &[("c", "3")]]);
        let third = bytes.len() - (format::FRAME_LEN + 1 + 4 + 2 + 2);
        let second = third - (format::FRAME_LEN + 1 + 4 + 2 + 2);
        // Cut anywhere in the last record: torn.
        for cut in third + 1..bytes.len() {
            assert!(torn_tail(&bytes[..cut], third, Version::V2), "cut {cut}");
        }
        // A flipped bit in the last record: damage, not a crash.
        for i in third..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 4;
            assert!(!torn_tail(&bad, third, Version::V2), "flip at {i}");
        }
        // Zeros where the last record should be: torn.
        let mut zeroed = bytes.clone();
        zeroed[third..].fill(0);
        assert!(torn_tail(&zeroed, third, Version::V2));
        // A damaged record with a good one after it is never the tail.
        let mut bad = bytes.clone();
        bad[second] ^= 0x80;
        assert!(!torn_tail(&bad, second, Version::V2));
        assert_eq!(next_valid(&bad, second, Version::V2), Some(third));
        assert_eq!(count_after(&bad, second, Version::V2), (1, 1));
    }
}
