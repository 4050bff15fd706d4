//! BACKUP: writes a snapshot to `<job>-<n>.bck` from a forked child, so the
//! job worker carries on at once, with at most `max_backups` children alive.
//!
//! # Why the child is safe in a multi-threaded process
//! After `fork` only the calling thread exists in the child; a lock that any
//! other thread held at that instant (a store shard, the allocator's arena,
//! stdout) stays locked forever there. So the child touches no lock at all:
//! the parent takes the snapshot under the store's locks, renders it to bytes
//! and builds every path as a `CString` *before* forking. The child then only
//! makes async-signal-safe system calls (`close_range`, `open`, `write`,
//! `fsync`, `rename`, `unlink`, `close`, `_exit`) on that memory, allocates
//! nothing, and leaves with `_exit` so no destructor or `atexit` handler runs.
//!
//! The file appears whole or not at all: the child writes `<name>.tmp`,
//! fsyncs it, renames it over the final name and fsyncs the folder.
//!
//! Each child is reaped by a small waiter thread, which frees the child's slot;
//! [`Backups::wait_all`] lets the program wait for all of them before it exits.

use nix::errno::Errno;
use nix::fcntl::{open, renameat, OFlag, AT_FDCWD};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, fsync, unlink, write, ForkResult, Pid};
use std::ffi::CString;
use std::fmt;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// Why a backup could not be written.
#[derive(Debug)]
pub enum BackupError {
    /// The path holds a NUL byte and cannot be passed to the OS.
    BadPath(PathBuf),
    /// Writing the file failed (in-process fallback when fork is impossible).
    Write {
        path: PathBuf,
        stage: &'static str,
        errno: Errno,
    },
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupError::BadPath(p) => write!(f, "backup path {} is not valid", p.display()),
            BackupError::Write { path, stage, errno } => write!(
                f,
                "backup {} failed: {stage}: {}",
                path.display(),
                errno.desc()
            ),
        }
    }
}

impl std::error::Error for BackupError {}

/// What to do once a backup child is reaped: told whether it succeeded.
type Done = Box<dyn FnOnce(bool) + Send>;

/// Limits and tracks the backup children of the whole program.
pub struct Backups {
    limit: usize,
    running: Mutex<usize>,
    freed: Condvar,
    failed: AtomicUsize,
    started: AtomicUsize,
}

/// Everything the child needs, prepared before fork.
struct Plan {
    tmp: CString,
    dst: CString,
    dir: CString,
    /// `kvs: backup <path> failed: `, written before the failing step.
    error_prefix: Vec<u8>,
    data: Vec<u8>,
}

impl Plan {
    /// The paths of a backup to `path`, as the child will need them.
    fn new(path: &Path) -> Result<Plan, BackupError> {
        let bad = || BackupError::BadPath(path.to_path_buf());
        let mut tmp_path = path.as_os_str().to_owned();
        tmp_path.push(".tmp");
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.as_os_str(),
            _ => ".".as_ref(),
        };
        let cstr = |b: &[u8]| CString::new(b).map_err(|_| bad());
        Ok(Plan {
            tmp: cstr(tmp_path.as_bytes())?,
            dst: cstr(path.as_os_str().as_bytes())?,
            dir: cstr(dir.as_bytes())?,
            error_prefix: format!("kvs: backup {} failed: ", path.display()).into_bytes(),
            data: Vec::new(),
        })
    }
}

impl Backups {
    /// At most `limit` (at least 1) children at once.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Backups {
            limit: limit.max(1),
            running: Mutex::new(0),
            freed: Condvar::new(),
            failed: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
        })
    }

    /// Waits for a free slot, then calls `snapshot` for the bytes and writes
    /// them to `path` from a child process. Returns once the child is started
    /// (or, if fork is impossible, once the file is written in this thread).
    pub fn start(
        self: &Arc<Self>,
        path: &Path,
        snapshot: impl FnOnce() -> Vec<u8>,
    ) -> Result<(), BackupError> {
        self.start_then(path, snapshot, |_| ())
    }

    /// [`Backups::start`], then `done(true)` once the file is durable, or
    /// `done(false)` if it could not be written (called from the thread
    /// that reaps the child).
    pub fn start_then(
        self: &Arc<Self>,
        path: &Path,
        snapshot: impl FnOnce() -> Vec<u8>,
        done: impl FnOnce(bool) + Send + 'static,
    ) -> Result<(), BackupError> {
        let mut plan = match Plan::new(path) {
            Ok(plan) => plan,
            Err(e) => {
                // Every failure this returns is counted, like a child's.
                self.failed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };

        self.acquire();
        self.started.fetch_add(1, Ordering::Relaxed);
        // The snapshot is taken once the slot is ours, so at most `limit`
        // snapshots are in memory at a time.
        plan.data = snapshot();

        // SAFETY: the child only runs `child_main`, which makes
        // async-signal-safe system calls on memory prepared above and ends in
        // `_exit`; see the module documentation.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => child_main(&plan),
            Ok(ForkResult::Parent { child }) => {
                drop(plan);
                self.reap_later(child, path.to_path_buf(), Box::new(done));
                Ok(())
            }
            Err(_) => {
                // Fork is impossible (process limit, memory): the data must
                // still not be lost, so write it from this thread.
                let result = write_atomically(&plan).map_err(|(stage, errno)| {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    BackupError::Write {
                        path: path.to_path_buf(),
                        stage,
                        errno,
                    }
                });
                self.release();
                done(result.is_ok());
                result
            }
        }
    }

    /// Blocks until every backup child has exited and been reaped.
    pub fn wait_all(&self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        while *running > 0 {
            running = self
                .freed
                .wait(running)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// How many backups have failed so far (every error [`Backups::start`]
    /// returned, and every child that did not finish its file).
    pub fn failures(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }

    /// Backups started so far (written or not).
    pub fn started(&self) -> usize {
        self.started.load(Ordering::Relaxed)
    }

    /// Backups being written right now.
    pub fn running(&self) -> usize {
        *self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn acquire(&self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        while *running >= self.limit {
            running = self
                .freed
                .wait(running)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *running += 1;
    }

    fn release(&self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        *running -= 1;
        self.freed.notify_all();
    }

    fn reap_later(self: &Arc<Self>, child: Pid, path: PathBuf, done: Box<dyn FnOnce(bool) + Send>) {
        // Shared, so that `done` still runs here if no thread can start.
        let done = Arc::new(Mutex::new(Some(done)));
        let finish = |done: &Mutex<Option<Done>>, ok: bool| {
            let f = done.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(f) = f {
                f(ok);
            }
        };
        let (me, p, d) = (Arc::clone(self), path.clone(), done.clone());
        let spawned = std::thread::Builder::new()
            .name("kvs-backup-reaper".into())
            .spawn(move || {
                let ok = me.reap(child, &p);
                me.release();
                finish(&d, ok);
            });
        if spawned.is_err() {
            // No thread can be started: reap here. Slower, never a zombie.
            let ok = self.reap(child, &path);
            self.release();
            finish(&done, ok);
        }
    }

    /// Waits for a backup child; whether it wrote its file.
    fn reap(&self, child: Pid, path: &Path) -> bool {
        loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) => return true,
                Ok(WaitStatus::Exited(_, _)) => {
                    // The child has already said why on stderr.
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    crate::log_warn!("backup {} killed by {sig}", path.display());
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    crate::log_warn!("cannot reap backup {}: {}", path.display(), e.desc());
                    return false;
                }
            }
        }
    }
}

/// The whole life of a backup child.
fn child_main(plan: &Plan) -> ! {
    // The child inherits every descriptor of the server (O_CLOEXEC only acts
    // on exec): client FIFOs, the registration FIFO, the poller. Held here,
    // they would keep a closed session's pipes open, or make the
    // registration FIFO look served after the server died, until the child
    // exits. It needs none of them, only stderr.
    // SAFETY: close_range is a plain system call; no object in the child
    // uses a descriptor above 2 afterwards (the ones it needs are opened
    // later). If the kernel lacks it (before 5.9) the descriptors just stay.
    let _ = unsafe { nix::libc::close_range(3, nix::libc::c_uint::MAX, 0) };
    let code = match write_atomically(plan) {
        Ok(()) => 0,
        Err((stage, errno)) => {
            let err = std::io::stderr();
            let fd = err.as_fd();
            let _ = write(fd, &plan.error_prefix);
            let _ = write(fd, stage.as_bytes());
            let _ = write(fd, b": ");
            let _ = write(fd, errno.desc().as_bytes());
            let _ = write(fd, b"\n");
            1
        }
    };
    // SAFETY: `_exit` ends the child without running destructors or atexit
    // handlers, which could take locks that are held by threads that do not
    // exist in the child.
    unsafe { nix::libc::_exit(code) }
}

/// Writes `plan.data` to `plan.tmp`, fsyncs, renames it to `plan.dst` and
/// fsyncs the folder. On failure the temporary file is removed. Allocates
/// nothing, so the backup child may call it.
fn write_atomically(plan: &Plan) -> Result<(), (&'static str, Errno)> {
    let result = (|| {
        // Whatever is at the temporary name (a file left by a crash, or a
        // symlink or FIFO someone planted) goes; then a new regular file is
        // created there, never following a link and never blocking.
        match unlink(plan.tmp.as_c_str()) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(("remove old temporary file", e)),
        }
        let fd = open(
            plan.tmp.as_c_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| ("create", e))?;
        let mut rest = &plan.data[..];
        while !rest.is_empty() {
            match write(&fd, rest) {
                Ok(n) => rest = &rest[n..],
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(("write", e)),
            }
        }
        fsync(&fd).map_err(|e| ("fsync", e))?;
        drop(fd);
        renameat(AT_FDCWD, plan.tmp.as_c_str(), AT_FDCWD, plan.dst.as_c_str())
            .map_err(|e| ("rename", e))
    })();
    if result.is_err() {
        let _ = unlink(plan.tmp.as_c_str());
        return result;
    }
    // The rename is durable only once the folder itself is synced; failing
    // here does not undo a complete file, so it is not an error.
    if let Ok(dir) = open(
        plan.dir.as_c_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        let _ = fsync(&dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn every_returned_failure_is_counted() {
        let backups = Backups::new(1);
        let bad = Path::new(OsStr::from_bytes(b"dir/x\0y.bck"));
        let called = std::cell::Cell::new(false);
        let result = backups.start(bad, || {
            called.set(true);
            Vec::new()
        });
        assert!(matches!(result, Err(BackupError::BadPath(_))));
        assert!(
            !called.get(),
            "no snapshot for a backup that cannot be written"
        );
        assert_eq!(backups.failures(), 1);
        backups.wait_all();
    }

    #[test]
    fn a_backup_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j-1.bck");
        let backups = Backups::new(1);
        backups.start(&path, || b"(a, 1)\n".to_vec()).unwrap();
        backups.wait_all();
        assert_eq!(std::fs::read(&path).unwrap(), b"(a, 1)\n");
        assert!(!dir.path().join("j-1.bck.tmp").exists());
        assert_eq!(backups.failures(), 0);
    }
}
