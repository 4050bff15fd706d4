//! Start-up: the newest snapshot, then every log segment from its
//! generation on, into the store; then the last segment is opened for
//! appending.
//!
//! Damage is judged by where it is. A last record cut short at the end of
//! the last segment is what a crash mid-append leaves: it is cut off, and
//! stderr says how many bytes. Anything else (a bad header, a bad record
//! with data after it, a damaged snapshot, an unreadable file) refuses the
//! start with the file, offset and reason, unless `--repair` is given:
//! then the file is cut at the damage, later segments are set aside, and
//! stderr says what was dropped. Never a panic, never a silent partial
//! load.

use super::format::{self, FormatError, Record};
use super::log::{segment_path, Log, Segment};
use super::{create_file, lock_dir, sync_dir, DataDirOptions, DirLock, PersistError};
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

pub(super) fn snapshot_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("snapshot-{generation}.kvs"))
}

/// Generations of the files named `<prefix><g>.kvs` in `dir`, ascending.
pub(super) fn generations(dir: &Path, prefix: &str) -> Result<Vec<u64>, PersistError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| PersistError::Io(format!("cannot read {}", dir.display()), e))?;
    let mut gens: Vec<u64> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            name.strip_prefix(prefix)?
                .strip_suffix(".kvs")?
                .parse()
                .ok()
        })
        .collect();
    gens.sort_unstable();
    Ok(gens)
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
        Record::End(_) => {}
    }
}

struct Replayed {
    records: u64,
    /// The count of the snapshot's end record, if the last record read was one.
    end: Option<u64>,
    /// Where the readable part ends.
    good_len: u64,
    damage: Option<(u64, FormatError)>,
}

/// Replays the records of `bytes` (a whole file) after its header.
fn replay(store: &Store, bytes: &[u8], magic: &[u8; 8]) -> Replayed {
    if let Err(e) = format::check_header(bytes, magic) {
        return Replayed {
            records: 0,
            end: None,
            good_len: 0,
            damage: Some((0, e)),
        };
    }
    let mut at = format::HEADER_LEN;
    let mut records = 0;
    let mut end = None;
    while at < bytes.len() {
        match format::read_record(&bytes[at..]) {
            Ok((record, n)) => {
                end = match record {
                    Record::End(n) => Some(n),
                    _ => None,
                };
                apply(store, record);
                records += 1;
                at += n;
            }
            Err(e) => {
                return Replayed {
                    records,
                    end,
                    good_len: at as u64,
                    damage: Some((at as u64, e)),
                }
            }
        }
    }
    Replayed {
        records,
        end,
        good_len: at as u64,
        damage: None,
    }
}

/// Whether damage at `offset` of a file of `len` bytes can be a torn last
/// append: the record claims to run to the end of the file or past it.
fn torn_tail(bytes: &[u8], offset: u64, e: &FormatError) -> bool {
    match e {
        FormatError::Truncated => true,
        FormatError::BadChecksum => {
            let at = offset as usize;
            let len = bytes
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .unwrap_or(0);
            at + format::FRAME_LEN + len >= bytes.len()
        }
        _ => false,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, PersistError> {
    std::fs::read(path).map_err(|e| PersistError::Io(format!("cannot read {}", path.display()), e))
}

fn truncate(path: &Path, len: u64) -> Result<(), PersistError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| {
            f.set_len(len)?;
            f.sync_all()
        })
        .map_err(|e| PersistError::Io(format!("cannot cut {}", path.display()), e))
}

/// Opens the data dir: locks it, loads it into `store` (which must be
/// empty and have no journal yet), and returns the log to append to.
pub fn open(opts: &DataDirOptions, store: &Store) -> Result<Opened, PersistError> {
    let dir = &opts.dir;
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(PersistError::NotADirectory(dir.clone())),
        Ok(_) => {}
        Err(_) => std::fs::create_dir_all(dir)
            .map_err(|e| PersistError::Io(format!("cannot create {}", dir.display()), e))?,
    }
    let lock = lock_dir(dir)?;
    let started = Instant::now();
    let mut records = 0u64;

    // The newest snapshot; older ones (and their segments) are leftovers of
    // a clean-up a crash interrupted.
    let snapshots = generations(dir, "snapshot-")?;
    let base = snapshots.last().copied().unwrap_or(0);
    let mut snapshot_len = 0;
    let mut snapshot_keys = 0;
    if let Some(&g) = snapshots.last() {
        let path = snapshot_path(dir, g);
        let bytes = read(&path)?;
        snapshot_len = bytes.len() as u64;
        let r = replay(store, &bytes, format::SNAPSHOT_MAGIC);
        // Written whole by rename, a snapshot ends with its count: anything
        // else is damage, not a torn append.
        let complete = r.end.is_some_and(|n| n as usize == store.len());
        let damage = r
            .damage
            .or((!complete).then_some((r.good_len, FormatError::Truncated)));
        if let Some((offset, reason)) = damage {
            if !opts.repair {
                return Err(PersistError::Damaged {
                    file: path,
                    offset,
                    reason,
                });
            }
            crate::log_warn!(
                "--repair: {} is damaged at byte {offset} ({reason}); kept the {} keys before it, dropped the rest of the file",
                path.display(),
                store.len()
            );
        }
        snapshot_keys = store.len();
    }

    let mut segments: Vec<u64> = generations(dir, "log-")?
        .into_iter()
        .filter(|&g| g >= base)
        .collect();
    if segments.is_empty() {
        segments.push(base);
        create_file(&segment_path(dir, base), &format::header(format::LOG_MAGIC)).map_err(|e| {
            PersistError::Io(
                format!("cannot create {}", segment_path(dir, base).display()),
                e,
            )
        })?;
        sync_dir(dir).map_err(|e| PersistError::Io(format!("cannot sync {}", dir.display()), e))?;
    }
    let mut last = *segments.last().unwrap_or(&base);
    for (i, &g) in segments.iter().enumerate() {
        let path = segment_path(dir, g);
        let bytes = read(&path)?;
        let r = replay(store, &bytes, format::LOG_MAGIC);
        records += r.records;
        let Some((offset, reason)) = r.damage else {
            continue;
        };
        let is_last = i + 1 == segments.len();
        // A crash between creating a segment and writing its header leaves
        // a prefix of the header: the same as a torn append.
        let torn_header = offset == 0 && format::header(format::LOG_MAGIC).starts_with(&bytes);
        if is_last && torn_header {
            std::fs::write(&path, format::header(format::LOG_MAGIC))
                .map_err(|e| PersistError::Io(format!("cannot rewrite {}", path.display()), e))?;
            crate::log_warn!(
                "{}: {} bytes of a header cut short by a crash; header written again",
                path.display(),
                bytes.len()
            );
            continue;
        }
        if is_last && offset > 0 && torn_tail(&bytes, offset, &reason) {
            let dropped = bytes.len() as u64 - r.good_len;
            truncate(&path, r.good_len)?;
            crate::log_warn!(
                "{}: cut off a torn last record ({dropped} bytes; a crash during an append)",
                path.display()
            );
            continue;
        }
        if !opts.repair {
            return Err(PersistError::Damaged {
                file: path,
                offset,
                reason,
            });
        }
        // Cut here; what follows in later segments came after the damage
        // and cannot be applied in order: set it aside, not deleted.
        let keep = if offset == 0 { 0 } else { r.good_len };
        if keep == 0 {
            std::fs::write(&path, format::header(format::LOG_MAGIC))
                .map_err(|e| PersistError::Io(format!("cannot rewrite {}", path.display()), e))?;
        } else {
            truncate(&path, keep)?;
        }
        crate::log_warn!(
            "--repair: {} is damaged at byte {offset} ({reason}); dropped its {} bytes from there",
            path.display(),
            bytes.len() as u64 - keep
        );
        for &later in &segments[i + 1..] {
            let from = segment_path(dir, later);
            let aside = dir.join(format!("log-{later}.kvs.dropped"));
            let _ = std::fs::rename(&from, &aside);
            crate::log_warn!(
                "--repair: set {} aside as {} (it follows the damage)",
                from.display(),
                aside.display()
            );
        }
        last = g;
        break;
    }

    let path = segment_path(dir, last);
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(&path)
        .map_err(|e| PersistError::Io(format!("cannot open {}", path.display()), e))?;
    let len = file
        .metadata()
        .map_err(|e| PersistError::Io(format!("cannot stat {}", path.display()), e))?
        .len();
    let from = match snapshots.last() {
        Some(g) => format!("snapshot {g} ({snapshot_keys} keys)"),
        None => "no snapshot".into(),
    };
    let elapsed = started.elapsed().as_secs_f64();
    crate::log_info!(
        "data dir {}: loaded {} keys from {from} and {records} log records in {elapsed:.3} s ({:.0} records/s)",
        dir.display(),
        store.len(),
        records as f64 / elapsed.max(1e-9),
    );
    let log = Log::new(
        dir,
        opts.fsync,
        Segment {
            file: Arc::new(file),
            generation: last,
            len,
        },
    );
    super::compact::remove_replaced(dir, base, last);
    Ok(Opened {
        log,
        lock,
        snapshot_len,
    })
}
