//! The data dir: the store survives restarts and crashes, the way Redis's
//! AOF and SQLite's WAL make theirs do.
//!
//! A data dir holds `snapshot-<g>.kvs` (the whole table as it was when log
//! segment `g` started), `log-<g>.kvs`, `log-<g+1>.kvs`, ... (every mutation
//! since, in order) and `LOCK`, held with `flock` by the one kvs using it.
//! Start-up loads the newest snapshot and replays the segments from its
//! generation on ([`recover`]). Compaction ([`compact`]) starts a new
//! segment at the instant a snapshot is copied, writes the snapshot from a
//! forked child, and only once it is durable removes what it replaces, so
//! a crash at any step leaves files the next start loads without losing
//! anything acknowledged.
//!
//! - [`chain`]: the files' names and generations, and which load in order.
//! - [`format`](mod@format): headers, records, checksums.
//! - [`log`]: appending, writing, syncing (group commit).
//! - [`recover`]: loading, with torn tails cut off and damage reported.
//! - [`compact`]: snapshots and the clean-up after them.

pub mod chain;
pub mod compact;
pub mod format;
pub mod log;
pub mod recover;

use nix::fcntl::{Flock, FlockArg};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use log::{Fsync, Log, LogJournal};
pub use recover::{open, Opened};

/// What the data dir options ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDirOptions {
    pub dir: PathBuf,
    pub fsync: Fsync,
    /// Cut damaged files at the damage instead of refusing to start.
    pub repair: bool,
    /// Compact once the current segment is larger than this and than the
    /// last snapshot.
    pub compact_at: u64,
}

/// Default size of a log segment before compaction (Redis's
/// auto-aof-rewrite-min-size is 64 MiB too).
pub const DEFAULT_COMPACT_AT: u64 = 64 << 20;

/// Why the data dir cannot be used.
#[derive(Debug)]
pub enum PersistError {
    NotADirectory(PathBuf),
    /// Another process holds the lock.
    Locked {
        dir: PathBuf,
        holder: String,
    },
    Io(String, io::Error),
    /// The dir is not safe to use (owner, mode); the sentence says why.
    Unsafe(String),
    /// A file that does not belong in the chain: another dir's, renamed,
    /// or one whose seal names a segment that is not there.
    Foreign(String),
    /// A file the chain needs is missing.
    Broken(String),
    /// A file is damaged where it cannot be a torn last write.
    Damaged {
        file: PathBuf,
        offset: u64,
        reason: format::FormatError,
    },
}

impl PersistError {
    /// What is wrong, without what kvs does about it (for `--repair`,
    /// which goes on).
    pub fn cause(&self) -> String {
        match self {
            PersistError::Foreign(why) | PersistError::Broken(why) => why.clone(),
            PersistError::Damaged {
                file,
                offset,
                reason,
            } => format!("{} is damaged at byte {offset}: {reason}", file.display()),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersistError::NotADirectory(p) => {
                write!(f, "data dir {} exists and is not a directory", p.display())
            }
            PersistError::Locked { dir, holder } => write!(
                f,
                "data dir {} is in use by another kvs ({holder}); refusing to start",
                dir.display()
            ),
            PersistError::Io(what, e) => write!(f, "{what}: {e}"),
            PersistError::Unsafe(why) => f.write_str(why),
            PersistError::Foreign(_) | PersistError::Broken(_) | PersistError::Damaged { .. } => {
                write!(
                    f,
                    "{}; refusing to start (--repair starts with what comes before it and sets the rest aside)",
                    self.cause()
                )
            }
        }
    }
}

impl std::error::Error for PersistError {}

/// The data dir's lock: an `flock` on the directory itself, so removing
/// `LOCK` (a file people clean up as "stale") lets no second kvs in;
/// `LOCK` only tells who holds it.
pub struct DirLock {
    _lock: Flock<File>,
}

/// Takes the data dir's lock, or says who holds it.
pub fn lock_dir(dir: &Path) -> Result<DirLock, PersistError> {
    let dir_file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_DIRECTORY.bits())
        .open(dir)
        .map_err(|e| PersistError::Io(format!("cannot open {}", dir.display()), e))?;
    let path = dir.join("LOCK");
    let lock = match Flock::lock(dir_file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, _)) => {
            let holder = crate::safe_file::read_regular(&path).unwrap_or_default();
            let holder = match String::from_utf8_lossy(&holder).trim() {
                "" => "its lock is held".to_string(),
                pid => format!("pid {pid}"),
            };
            return Err(PersistError::Locked {
                dir: dir.to_path_buf(),
                holder,
            });
        }
    };
    // Never through a link: a LOCK planted as a symlink to another file
    // must not get that file truncated.
    let written = crate::safe_file::open_regular(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600),
        &path,
    )
    .and_then(|mut f| {
        f.set_len(0)?;
        writeln!(f, "{}", std::process::id())
    });
    written.map_err(|e| PersistError::Io(format!("cannot write {}", path.display()), e))?;
    Ok(DirLock { _lock: lock })
}

/// An open data dir at work: the store's journal installed, the log
/// thread writing and syncing, compaction on watch. [`DataDir::close`]
/// writes and syncs the rest.
pub struct DataDir {
    pub log: std::sync::Arc<Log>,
    compactor: std::sync::Arc<compact::Compactor>,
    thread: Option<std::thread::JoinHandle<()>>,
    _lock: DirLock,
}

impl DataDir {
    /// Opens `opts.dir`, loads it into `store` (new and empty), and logs
    /// every later change of the store there.
    pub fn open(
        opts: &DataDirOptions,
        store: &std::sync::Arc<crate::store::Store>,
    ) -> Result<DataDir, PersistError> {
        let opened = open(opts, store)?;
        let log = opened.log;
        if store
            .set_journal(Box::new(LogJournal(log.clone())))
            .is_err()
        {
            return Err(PersistError::Io(
                "the store already has a journal".into(),
                io::Error::from(io::ErrorKind::AlreadyExists),
            ));
        }
        let compactor = std::sync::Arc::new(compact::Compactor::new(
            &opts.dir,
            store.clone(),
            log.clone(),
            opts.compact_at,
            opened.snapshot_len,
        ));
        let (l, c) = (log.clone(), compactor.clone());
        let thread = std::thread::Builder::new()
            .name("kvs-log".into())
            .spawn(move || l.run(|| c.tick()))
            .map_err(|e| PersistError::Io("cannot start the log thread".into(), e))?;
        Ok(DataDir {
            log,
            compactor,
            thread: Some(thread),
            _lock: opened.lock,
        })
    }

    /// Writes and syncs everything logged, waits for a snapshot being
    /// written, and lets the lock go.
    pub fn close(mut self) {
        self.log.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.compactor.wait();
    }
}
