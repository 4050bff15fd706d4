//! Opening FIFOs without trusting the paths a peer names. Any local process
//! can send a connect request, so a path must never make the server open a
//! regular file, a device or a symlink: the path is `lstat`ed (must be a
//! FIFO, not a link), opened with `O_NOFOLLOW | O_NONBLOCK`, and the opened
//! descriptor is `fstat`ed to be that same FIFO (no swap in between).
//!
//! Write ends are opened `O_WRONLY | O_NONBLOCK`, which fails with `ENXIO`
//! while the client does not hold the read end yet; the reactor then retries
//! for a grace period (a client blocked in a plain `open` of its read end
//! counts as a reader, so the original C clients get through). Holding only
//! the write end means a client that dies is seen at once, as an error on
//! the pipe.

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::{fstat, lstat, FileStat, Mode, SFlag};
use nix::unistd::mkfifo;
use std::ffi::CString;
use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Identity of a FIFO on this machine: device and inode.
pub type FifoId = (u64, u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FifoError {
    /// The path holds a NUL byte.
    BadPath,
    /// The path is a symbolic link.
    Symlink,
    /// The path is something other than a FIFO.
    NotFifo,
    /// The FIFO changed between the check and the open.
    Replaced,
    /// A system call failed.
    Sys(&'static str, Errno),
}

impl fmt::Display for FifoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FifoError::BadPath => f.write_str("path holds a NUL byte"),
            FifoError::Symlink => f.write_str("is a symbolic link"),
            FifoError::NotFifo => f.write_str("is not a FIFO"),
            FifoError::Replaced => f.write_str("was replaced while being opened"),
            FifoError::Sys(call, e) => write!(f, "{call}: {}", e.desc()),
        }
    }
}

impl std::error::Error for FifoError {}

fn is(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

fn id(st: &FileStat) -> FifoId {
    (st.st_dev, st.st_ino)
}

fn cpath(path: &[u8]) -> Result<CString, FifoError> {
    CString::new(path).map_err(|_| FifoError::BadPath)
}

/// Checks that `path` names a FIFO (not through a symlink) and returns its
/// identity, without opening anything.
pub fn probe(path: &[u8]) -> Result<FifoId, FifoError> {
    let c = cpath(path)?;
    let st = lstat(c.as_c_str()).map_err(|e| FifoError::Sys("lstat", e))?;
    if is(&st, SFlag::S_IFLNK) {
        return Err(FifoError::Symlink);
    }
    if !is(&st, SFlag::S_IFIFO) {
        return Err(FifoError::NotFifo);
    }
    Ok(id(&st))
}

/// The identity of whatever `path` names (not following a symlink), or
/// `None` if nothing is there.
pub fn identity(path: &Path) -> Result<Option<FifoId>, Errno> {
    match lstat(path) {
        Ok(st) => Ok(Some(id(&st))),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// How the server holds a client FIFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Read,
    /// Write only: fails with `ENXIO` while nobody holds the read end.
    Write,
    /// Read and write: on Linux never blocks and never fails for want of a
    /// reader. Only for a last word (a refusal) to a client not reading yet.
    Shared,
}

/// Opens the FIFO at `path`, which [`probe`] said is `expected`, without
/// blocking and without following a symlink.
pub fn open_checked(path: &[u8], expected: FifoId, end: End) -> Result<OwnedFd, FifoError> {
    let c = cpath(path)?;
    let access = match end {
        End::Read => OFlag::O_RDONLY,
        End::Write => OFlag::O_WRONLY,
        End::Shared => OFlag::O_RDWR,
    };
    let flags = access | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = open(c.as_c_str(), flags, Mode::empty()).map_err(|e| match e {
        Errno::ELOOP => FifoError::Symlink,
        e => FifoError::Sys("open", e),
    })?;
    let st = fstat(&fd).map_err(|e| FifoError::Sys("fstat", e))?;
    if !is(&st, SFlag::S_IFIFO) {
        return Err(FifoError::NotFifo);
    }
    if id(&st) != expected {
        return Err(FifoError::Replaced);
    }
    Ok(fd)
}

/// Why the registration FIFO could not be set up.
#[derive(Debug)]
pub enum RegistrationError {
    NotFifo,
    InUse,
    Sys(&'static str, Errno),
    BadPath,
}

impl fmt::Display for RegistrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistrationError::NotFifo => f.write_str("exists and is not a FIFO"),
            RegistrationError::InUse => f.write_str("is already served by another process"),
            RegistrationError::Sys(call, e) => write!(f, "{call}: {}", e.desc()),
            RegistrationError::BadPath => f.write_str("path holds a NUL byte"),
        }
    }
}

impl std::error::Error for RegistrationError {}

/// The registration FIFO's read end, the write end the server keeps open so
/// that the last client closing its end does not leave the reactor reading
/// end-of-file in a loop, and the FIFO's identity.
pub struct RegistrationFifo {
    pub reader: OwnedFd,
    pub keepalive: OwnedFd,
    pub id: FifoId,
}

/// Creates the registration FIFO at `path` with exactly `mode`. A FIFO left
/// there by a server that died is reused; one that another process still
/// reads is not.
pub fn create_registration(path: &Path, mode: u32) -> Result<RegistrationFifo, RegistrationError> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| RegistrationError::BadPath)?;
    let perm = Mode::from_bits_truncate(mode);
    match mkfifo(c.as_c_str(), perm) {
        Ok(()) => {}
        Err(Errno::EEXIST) => {
            let st = lstat(c.as_c_str()).map_err(|e| RegistrationError::Sys("lstat", e))?;
            if !is(&st, SFlag::S_IFIFO) {
                return Err(RegistrationError::NotFifo);
            }
            // A write end opens only if someone holds the read end.
            match open(
                c.as_c_str(),
                OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Err(Errno::ENXIO) => {}
                Ok(_) => return Err(RegistrationError::InUse),
                Err(e) => return Err(RegistrationError::Sys("open", e)),
            }
        }
        Err(e) => return Err(RegistrationError::Sys("mkfifo", e)),
    }
    // mkfifo applies the umask; the mode asked for is the mode wanted.
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        c.as_c_str(),
        perm,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| RegistrationError::Sys("chmod", e))?;
    let reader = open(
        c.as_c_str(),
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RegistrationError::Sys("open", e))?;
    let keepalive = open(
        c.as_c_str(),
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RegistrationError::Sys("open", e))?;
    let st = fstat(&reader).map_err(|e| RegistrationError::Sys("fstat", e))?;
    if !is(&st, SFlag::S_IFIFO) {
        return Err(RegistrationError::NotFifo);
    }
    Ok(RegistrationFifo {
        reader,
        keepalive,
        id: id(&st),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn only_real_fifos_open() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let file = dir.path().join("regular");
        std::fs::write(&file, b"x").unwrap();
        let link = dir.path().join("link");
        symlink(&fifo, &link).unwrap();
        let b = |p: &Path| p.as_os_str().as_bytes().to_vec();

        let fid = probe(&b(&fifo)).unwrap();
        // Nobody reads yet: a write end waits, a shared one does not.
        assert_eq!(
            open_checked(&b(&fifo), fid, End::Write).unwrap_err(),
            FifoError::Sys("open", Errno::ENXIO)
        );
        assert!(open_checked(&b(&fifo), fid, End::Shared).is_ok());
        let _r = open_checked(&b(&fifo), fid, End::Read).unwrap();
        assert!(open_checked(&b(&fifo), fid, End::Write).is_ok());
        assert_eq!(probe(&b(&file)), Err(FifoError::NotFifo));
        assert_eq!(probe(&b(&link)), Err(FifoError::Symlink));
        assert_eq!(probe(b"/dev/null"), Err(FifoError::NotFifo));
        assert!(matches!(
            probe(&b(&dir.path().join("none"))),
            Err(FifoError::Sys(_, Errno::ENOENT))
        ));
        // The link is refused at open time too, even if the check passed.
        assert_eq!(
            open_checked(&b(&link), fid, End::Read).unwrap_err(),
            FifoError::Symlink
        );
        // A different FIFO under the checked name is refused. (The old one
        // is kept under another name so its inode is not reused.)
        std::fs::rename(&fifo, dir.path().join("old")).unwrap();
        mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(
            open_checked(&b(&fifo), fid, End::Read).unwrap_err(),
            FifoError::Replaced
        );
    }

    #[test]
    fn registration_fifo_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg");
        let reg = create_registration(&path, 0o600).unwrap();
        // Served: a second server is refused.
        assert!(matches!(
            create_registration(&path, 0o600),
            Err(RegistrationError::InUse)
        ));
        drop(reg);
        // Left behind by a dead server: reused.
        assert!(create_registration(&path, 0o600).is_ok());
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            create_registration(&file, 0o600),
            Err(RegistrationError::NotFifo)
        ));
    }
}
