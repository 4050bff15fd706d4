//! BACKUP: writes a snapshot to `<job>-<n>.bck` from a forked child, so the
//! job worker carries on at once, with at most `max_backups` children alive.
//!
//! # Why the child is safe in a multi-threaded process
//! After `fork` only the calling thread exists in the child; a lock that any
//! other thread held at that instant (a store shard, the allocator's arena,
//! stdout) stays locked forever there. So the child touches no lock at all:
//! the parent takes the snapshot under the store's locks, renders it to bytes
//! and builds every path as a `CString` *before* forking. The child then only
//! makes async-signal-safe system calls (`dup2`, `close_range`, `open`, `write`,
//! `fsync`, `rename`, `unlink`, `close`, `_exit`) on that memory, allocates
//! nothing, and leaves with `_exit` so no destructor or `atexit` handler runs.
//!
//! The file appears whole or not at all: the child writes `<name>.tmp`,
//! fsyncs it, renames it over the final name and fsyncs the folder.
//!
//! A child that fails says which step failed and the errno in five bytes on
//! a pipe; the thread that reaps it writes the log line. So the line goes
//! through the log like every other (a timestamp and a level in server
//! mode), which the child, that may not allocate, could not format.
//!
//! Each child is reaped by a small waiter thread, which frees the child's slot;
//! [`Backups::wait_all`] lets the program wait for all of them before it exits.

use nix::errno::Errno;
use nix::fcntl::{open, renameat, OFlag, AT_FDCWD};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, fsync, pipe2, read, unlink, write, ForkResult, Pid};
use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
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
        stage: Stage,
        errno: Errno,
    },
}

/// The step of writing a backup that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    RemoveOld,
    Create,
    Write,
    Fsync,
    Rename,
}

impl Stage {
    const ALL: [Stage; 5] = [
        Stage::RemoveOld,
        Stage::Create,
        Stage::Write,
        Stage::Fsync,
        Stage::Rename,
    ];

    fn name(self) -> &'static str {
        match self {
            Stage::RemoveOld => "remove old temporary file",
            Stage::Create => "create",
            Stage::Write => "write",
            Stage::Fsync => "fsync",
            Stage::Rename => "rename",
        }
    }
}

/// A failed child's report on its pipe: the stage's index, then the errno
/// (i32, little-endian).
const REPORT_LEN: usize = 5;

/// The descriptor a child reports on (just above stderr; everything else
/// is closed in the child).
const REPORT_FD: i32 = 3;

fn encode_report(stage: Stage, errno: Errno) -> [u8; REPORT_LEN] {
    let index = Stage::ALL.iter().position(|&s| s == stage).unwrap_or(0) as u8;
    let e = (errno as i32).to_le_bytes();
    [index, e[0], e[1], e[2], e[3]]
}

fn decode_report(bytes: &[u8]) -> Option<(Stage, Errno)> {
    let [index, a, b, c, d] = *<&[u8; REPORT_LEN]>::try_from(bytes).ok()?;
    let stage = *Stage::ALL.get(index as usize)?;
    Some((stage, Errno::from_raw(i32::from_le_bytes([a, b, c, d]))))
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupError::BadPath(p) => write!(f, "backup path {} is not valid", p.display()),
            BackupError::Write { path, stage, errno } => write!(
                f,
                "backup {} failed: {}: {}",
                path.display(),
                stage.name(),
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
    /// Permissions of the new file (less the umask).
    mode: u32,
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
            mode: 0o644,
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
        self.start_then(path, 0o644, snapshot, |_| ())
    }

    /// [`Backups::start`] of a file with permissions `mode`, then
    /// `done(true)` once the file is durable, or `done(false)` if it could
    /// not be written (called from the thread that reaps the child).
    pub fn start_then(
        self: &Arc<Self>,
        path: &Path,
        mode: u32,
        snapshot: impl FnOnce() -> Vec<u8>,
        done: impl FnOnce(bool) + Send + 'static,
    ) -> Result<(), BackupError> {
        let mut plan = match Plan::new(path) {
            Ok(plan) => Plan { mode, ..plan },
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

        // The child's report channel. Without one (no descriptor left) the
        // backup still runs; only the reason of a failure is lost.
        let report = pipe2(OFlag::O_CLOEXEC).ok();

        // SAFETY: the child only runs `child_main`, which makes
        // async-signal-safe system calls on memory prepared above and ends in
        // `_exit`; see the module documentation.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => child_main(&plan, report.as_ref().map(|(_, w)| w.as_raw_fd())),
            Ok(ForkResult::Parent { child }) => {
                drop(plan);
                // Only the child may hold the write end, so that reading
                // after it exits ends.
                let report = report.map(|(r, _)| r);
                self.reap_later(child, path.to_path_buf(), report, Box::new(done));
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

    fn reap_later(
        self: &Arc<Self>,
        child: Pid,
        path: PathBuf,
        report: Option<OwnedFd>,
        done: Box<dyn FnOnce(bool) + Send>,
    ) {
        // Shared, so that `done` still runs here if no thread can start.
        let done = Arc::new(Mutex::new(Some(done)));
        let report = Arc::new(Mutex::new(report));
        let finish = |done: &Mutex<Option<Done>>, ok: bool| {
            let f = done.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(f) = f {
                f(ok);
            }
        };
        let (me, p, d, r) = (Arc::clone(self), path.clone(), done.clone(), report.clone());
        let spawned = std::thread::Builder::new()
            .name("kvs-backup-reaper".into())
            .spawn(move || {
                let ok = me.reap(child, &p, &r);
                me.release();
                finish(&d, ok);
            });
        if spawned.is_err() {
            // No thread can be started: reap here. Slower, never a zombie.
            let ok = self.reap(child, &path, &report);
            self.release();
            finish(&done, ok);
        }
    }

    /// Waits for a backup child; whether it wrote its file. A failure is
    /// logged here, with what the child reported.
    fn reap(&self, child: Pid, path: &Path, report: &Mutex<Option<OwnedFd>>) -> bool {
        loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) => return true,
                Ok(WaitStatus::Exited(_, code)) => {
                    let fd = report.lock().unwrap_or_else(PoisonError::into_inner).take();
                    match fd.as_ref().and_then(read_report) {
                        Some((stage, errno)) => crate::log_error!(
                            "{}",
                            BackupError::Write {
                                path: path.to_path_buf(),
                                stage,
                                errno
                            }
                        ),
                        None => crate::log_error!(
                            "backup {} failed (the child exited with code {code})",
                            path.display()
                        ),
                    }
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

/// A failed child's report, read once it has exited (its write end is
/// closed, so this never blocks).
fn read_report(fd: &OwnedFd) -> Option<(Stage, Errno)> {
    let mut buf = [0u8; REPORT_LEN];
    let mut got = 0;
    while got < REPORT_LEN {
        match read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    decode_report(&buf[..got])
}

/// The whole life of a backup child. `report` is where it says why it
/// failed, if it does.
fn child_main(plan: &Plan, report: Option<i32>) -> ! {
    // The child inherits every descriptor of the server (O_CLOEXEC only acts
    // on exec): client FIFOs, the registration FIFO, the poller. Held here,
    // they would keep a closed session's pipes open, or make the
    // registration FIFO look served after the server died, until the child
    // exits. It needs none of them, only stderr and its report pipe, which
    // is moved to REPORT_FD first.
    // SAFETY: dup2 and close_range are plain system calls on descriptors;
    // no object in the child uses a descriptor above REPORT_FD afterwards
    // (the ones it needs are opened later). If the kernel lacks close_range
    // (before 5.9) the descriptors just stay.
    let reported = report.is_some_and(|w| unsafe { nix::libc::dup2(w, REPORT_FD) } == REPORT_FD);
    let _ = unsafe { nix::libc::close_range(REPORT_FD as u32 + 1, nix::libc::c_uint::MAX, 0) };
    let code = match write_atomically(plan) {
        Ok(()) => 0,
        Err((stage, errno)) => {
            if reported {
                // SAFETY: REPORT_FD is the pipe's write end, dup'ed above
                // and owned by nothing else in the child.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(REPORT_FD) };
                let _ = write(fd, &encode_report(stage, errno));
            }
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
fn write_atomically(plan: &Plan) -> Result<(), (Stage, Errno)> {
    let result = (|| {
        // Whatever is at the temporary name (a file left by a crash, or a
        // symlink or FIFO someone planted) goes; then a new regular file is
        // created there, never following a link and never blocking.
        match unlink(plan.tmp.as_c_str()) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err((Stage::RemoveOld, e)),
        }
        let fd = open(
            plan.tmp.as_c_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(plan.mode),
        )
        .map_err(|e| (Stage::Create, e))?;
        let mut rest = &plan.data[..];
        while !rest.is_empty() {
            match write(&fd, rest) {
                Ok(n) => rest = &rest[n..],
                Err(Errno::EINTR) => continue,
                Err(e) => return Err((Stage::Write, e)),
            }
        }
        fsync(&fd).map_err(|e| (Stage::Fsync, e))?;
        drop(fd);
        renameat(AT_FDCWD, plan.tmp.as_c_str(), AT_FDCWD, plan.dst.as_c_str())
            .map_err(|e| (Stage::Rename, e))
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
    fn a_childs_report_round_trips_and_garbage_is_refused() {
        for stage in Stage::ALL {
            let bytes = encode_report(stage, Errno::ENOSPC);
            assert_eq!(decode_report(&bytes), Some((stage, Errno::ENOSPC)));
        }
        assert_eq!(decode_report(&[]), None, "a child that said nothing");
        assert_eq!(decode_report(&[1, 2]), None, "a cut-off report");
        assert_eq!(decode_report(&[9, 0, 0, 0, 0]), None, "no such stage");
    }

    #[test]
    fn a_failed_childs_reason_reaches_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j-1.bck");
        // The temporary name is a folder: the child cannot create its file.
        std::fs::create_dir(dir.path().join("j-1.bck.tmp")).unwrap();
        let backups = Backups::new(1);
        let (tx, rx) = std::sync::mpsc::channel();
        backups
            .start_then(
                &path,
                0o644,
                || b"(a, 1)\n".to_vec(),
                move |ok| {
                    let _ = tx.send(ok);
                },
            )
            .unwrap();
        backups.wait_all();
        assert!(!rx.recv().unwrap(), "reported as written");
        assert_eq!(backups.failures(), 1);
        assert!(!path.exists());
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
