//! The data dir's files as one chain: their names, their generations, the
//! dir's identity, and which files start-up must load, in order.
//!
//! `snapshot-<g>.kvs` holds the table as it was when segment `log-<g>.kvs`
//! began; `log-<g>.kvs` follows `log-<g-1>.kvs` (or `snapshot-<g>.kvs`),
//! and `log-0.kvs` follows an empty table. So the files to load are the
//! newest snapshot `S` (if any) and every segment from `S` (or 0) up,
//! with no generation missing: a missing segment or snapshot is refused by
//! name, never skipped. The headers (version 2) carry the generation and
//! the dir's id, and a segment that was left for the next one ends with a
//! seal naming it, so a renamed file, a file from another dir and a
//! missing last segment are told apart too ([`super::recover`] checks
//! those as it reads). Compaction and start-up both remove, through
//! [`remove_replaced`], what a newer snapshot made redundant.

use super::PersistError;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub fn snapshot_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("snapshot-{generation}.kvs"))
}

pub fn segment_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("log-{generation}.kvs"))
}

/// File names a repair set aside end with this.
pub const DROPPED: &str = ".dropped";

/// Generations of the files named `<prefix><g>.kvs` in `dir`, ascending.
pub fn generations(dir: &Path, prefix: &str) -> Result<Vec<u64>, PersistError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| PersistError::Io(format!("cannot read {}", dir.display()), e))?;
    let mut gens: Vec<u64> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let digits = name.to_str()?.strip_prefix(prefix)?.strip_suffix(".kvs")?;
            // `log-01.kvs` or `log-+1.kvs` is not a name kvs writes.
            let plain = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'));
            plain.then(|| digits.parse().ok()).flatten()
        })
        .collect();
    gens.sort_unstable();
    Ok(gens)
}

/// A new data dir's identity: random enough that two dirs never share
/// one (the OS seeds `RandomState`).
pub fn new_dir_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    // Zero is kept for "no id" in messages.
    h.finish().max(1)
}

/// What start-up loads: the snapshot (if any) and the segments, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub snapshot: Option<u64>,
    pub segments: Vec<u64>,
    /// Where the chain breaks: every file before it loads, the file named
    /// is missing, and the segments after it cannot follow in order.
    pub break_at: Option<Break>,
}

/// A file the chain needs that is not there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The sentence naming what is missing.
    pub why: String,
    /// Segments present after the gap (they cannot be applied).
    pub orphans: Vec<u64>,
}

/// Works out the chain of `dir`'s files. A dir with no data file at all is
/// a new one: its chain is empty.
pub fn chain(dir: &Path) -> Result<Chain, PersistError> {
    let snapshots = generations(dir, "snapshot-")?;
    let snapshot = snapshots.last().copied();
    let first = snapshot.unwrap_or(0);
    let logs: Vec<u64> = generations(dir, "log-")?
        .into_iter()
        .filter(|&g| g >= first)
        .collect();
    let name = |g: u64| format!("log-{g}.kvs");
    let mut segments = Vec::new();
    for (expected, (i, &g)) in (first..).zip(logs.iter().enumerate()) {
        if g != expected {
            let why = match (expected, segments.last()) {
                (e, Some(prev)) => format!(
                    "{} is missing: the chain goes from log-{prev}.kvs to {}",
                    name(e),
                    name(g)
                ),
                (e, None) if snapshot.is_some() => format!(
                    "{} is missing: snapshot-{e}.kvs is followed by it, and {} comes after",
                    name(e),
                    name(g)
                ),
                (_, None) => format!(
                    "snapshot-{g}.kvs is missing: {} follows it (or log-{}.kvs, also missing)",
                    name(g),
                    g.saturating_sub(1)
                ),
            };
            return Ok(Chain {
                snapshot,
                segments,
                break_at: Some(Break {
                    why,
                    orphans: logs[i..].to_vec(),
                }),
            });
        }
        segments.push(g);
    }
    let break_at = match (snapshot, segments.is_empty()) {
        (Some(s), true) => Some(Break {
            why: format!("log-{s}.kvs is missing: snapshot-{s}.kvs is followed by it"),
            orphans: Vec::new(),
        }),
        _ => None,
    };
    Ok(Chain {
        snapshot,
        segments,
        break_at,
    })
}

/// Creates segment `generation` holding only its header, whole or not at
/// all: written to a temporary name, synced, renamed into place (never
/// over an existing file) and the dir synced. Returns it open for
/// appending.
pub fn create_segment(dir: &Path, dir_id: u64, generation: u64) -> io::Result<File> {
    let path = segment_path(dir, generation);
    let tmp = dir.join(format!("log-{generation}.kvs.tmp"));
    // A leftover of a crash, or something planted: it goes, and a new
    // regular file is made, never through a link.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&tmp)?;
    let written = f
        .write_all(&super::format::header(
            super::format::LOG_MAGIC,
            dir_id,
            generation,
        ))
        .and_then(|()| f.sync_all())
        .and_then(|()| {
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &tmp,
                nix::fcntl::AT_FDCWD,
                &path,
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(io::Error::from)
        })
        .and_then(|()| sync_dir(dir));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(f)
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Sets `path` aside as `<path>.dropped` (never over an earlier one), for
/// an operator to look at; returns the new name.
pub fn set_aside(path: &Path) -> io::Result<PathBuf> {
    let mut n = 0;
    loop {
        let mut name = path.as_os_str().to_owned();
        name.push(DROPPED);
        if n > 0 {
            name.push(format!(".{n}"));
        }
        let aside = PathBuf::from(name);
        match nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            path,
            nix::fcntl::AT_FDCWD,
            &aside,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => return Ok(aside),
            Err(nix::errno::Errno::EEXIST) => n += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Removes what snapshot `base` replaced: older snapshots, segments before
/// `base` (never `current`, the one being appended to), and temporary
/// files a crash left behind.
pub fn remove_replaced(dir: &Path, base: u64, current: u64) {
    let old = |prefix: &str| {
        generations(dir, prefix)
            .unwrap_or_default()
            .into_iter()
            .filter(|&g| g < base && g != current)
    };
    let mut doomed: Vec<PathBuf> = old("snapshot-").map(|g| snapshot_path(dir, g)).collect();
    doomed.extend(old("log-").map(|g| segment_path(dir, g)));
    if let Ok(entries) = std::fs::read_dir(dir) {
        doomed.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".kvs.tmp"))),
        );
    }
    for p in doomed {
        if let Err(e) = std::fs::remove_file(&p) {
            crate::log_warn!("cannot remove {}: {e}", p.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(names: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for n in names {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        dir
    }

    #[test]
    fn a_whole_chain_loads_in_order() {
        let d = dir_with(&["snapshot-1.kvs", "snapshot-3.kvs", "log-1.kvs", "log-3.kvs"]);
        let d2 = dir_with(&["log-0.kvs", "log-1.kvs", "log-2.kvs", "log-01.kvs", "x.kvs"]);
        assert_eq!(
            chain(d.path()).unwrap(),
            Chain {
                snapshot: Some(3),
                segments: vec![3],
                break_at: None
            }
        );
        assert_eq!(chain(d2.path()).unwrap().segments, vec![0, 1, 2]);
        assert_eq!(
            chain(dir_with(&[]).path()).unwrap().segments,
            Vec::<u64>::new()
        );
    }

    #[test]
    fn a_missing_file_breaks_the_chain_by_name() {
        let cases: [(&[&str], &str, &[u64]); 4] = [
            (
                &["snapshot-1.kvs", "log-1.kvs", "log-3.kvs"],
                "log-2.kvs is missing",
                &[3],
            ),
            (
                &["log-2.kvs", "log-3.kvs"],
                "snapshot-2.kvs is missing",
                &[2, 3],
            ),
            (&["snapshot-2.kvs"], "log-2.kvs is missing", &[]),
            (
                &["snapshot-2.kvs", "log-3.kvs"],
                "log-2.kvs is missing",
                &[3],
            ),
        ];
        for (names, says, orphans) in cases {
            let d = dir_with(names);
            let c = chain(d.path()).unwrap();
            let b = c.break_at.expect("a break");
            assert!(b.why.starts_with(says), "{names:?}: {}", b.why);
            assert_eq!(b.orphans, orphans, "{names:?}");
        }
    }

    #[test]
    fn set_aside_never_overwrites() {
        let d = dir_with(&["log-1.kvs"]);
        let p = d.path().join("log-1.kvs");
        let first = set_aside(&p).unwrap();
        std::fs::write(&p, b"again").unwrap();
        let second = set_aside(&p).unwrap();
        assert_ne!(first, second);
        assert!(first.exists() && second.exists() && !p.exists());
    }
}
