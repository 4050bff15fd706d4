//! Opening files that a hostile neighbour may have planted or swapped: a
//! symlink is never followed, a FIFO never blocks the open, and anything
//! but a regular file is refused before a byte is read. Used for the data
//! dir's files, its `LOCK` and the password file.

use nix::sys::stat::{fstat, FileStat, SFlag};
use nix::unistd::{geteuid, Uid};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// What a file's type is, in words, for a refusal.
fn kind(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFLNK => "a symbolic link",
        _ => "not a regular file",
    }
}

fn not_regular(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("is {what}, not a regular file"),
    )
}

/// Opens `opts` at `path` without following a symlink and without
/// blocking, and refuses anything but a regular file.
pub fn open_regular(opts: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    let file = opts.custom_flags(flags.bits()).open(path).map_err(|e| {
        if e.raw_os_error() == Some(nix::libc::ELOOP) {
            not_regular("a symbolic link")
        } else {
            e
        }
    })?;
    let st = fstat(&file).map_err(io::Error::from)?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Err(not_regular(kind(&st)));
    }
    Ok(file)
}

/// Reads all of the regular file at `path`, never more than it held when
/// opened (a file that keeps growing is read up to that size).
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    read_opened(&open_regular(OpenOptions::new().read(true), path)?)
}

/// All of an open file, never more than it held when this began.
pub fn read_opened(file: &File) -> io::Result<Vec<u8>> {
    let size = file.metadata()?.len();
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(size).read_to_end(&mut out)?;
    Ok(out)
}

/// Whether others than the owner may read `file` (for a warning).
pub fn readable_by_others(file: &Path) -> bool {
    std::fs::symlink_metadata(file).is_ok_and(|m| m.permissions().mode() & 0o044 != 0)
}

/// Makes `dir` (mode 0700, and its missing parents) if it does not
/// exist, then checks it is a directory this user owns that nobody else
/// may write to, as PostgreSQL checks its data directory. The error is
/// the sentence to print.
pub fn private_dir(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create data dir {shown}: {e}"))?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot use data dir {shown}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("data dir {shown} exists and is not a directory"));
    }
    use std::os::unix::fs::MetadataExt;
    let me = geteuid();
    if Uid::from_raw(meta.uid()) != me {
        return Err(format!(
            "data dir {shown} is owned by uid {}, not by this user (uid {me}); run kvs as its owner, or give it to this user (chown)",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "data dir {shown} can be written by other users (mode {mode:04o}); refusing to start (chmod 700 {shown})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_fifos_and_folders_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"data").unwrap();
        assert_eq!(read_regular(&file).unwrap(), b"data");

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for (path, says) in [
            (&link, "symbolic link"),
            (&fifo, "FIFO"),
            (&dir.path().to_path_buf(), "directory"),
        ] {
            let e = read_regular(path).unwrap_err();
            assert!(e.to_string().contains(says), "{}: {e}", path.display());
        }
    }

    #[test]
    fn a_data_dir_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        private_dir(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir(&data).unwrap_err();
        assert!(e.contains("mode 0777") && e.contains("chmod 700"), "{e}");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&data).unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(private_dir(&file).unwrap_err().contains("not a directory"));
    }
}
