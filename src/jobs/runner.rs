//! Runs one job file against the store and writes its `.out`.

use super::command::HELP_TEXT;
use super::lines::{Line, LineReader};
use super::parser::{parse_line_borrowed, parse_line_str, LineCommand};
use super::progress::{Progress, FLUSH_EVERY};
use crate::backup::Backups;
use crate::store::Store;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The line SPEC prints for a line that is not a valid command.
pub const INVALID_COMMAND: &str = "Invalid command. See HELP for usage";

/// Why a job file could not be run to its end.
#[derive(Debug)]
pub enum JobError {
    Open(PathBuf, io::Error),
    Read(PathBuf, io::Error),
    CreateOut(PathBuf, io::Error),
    WriteOut(PathBuf, io::Error),
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Open(p, e) => write!(f, "cannot open job {}: {e}", p.display()),
            JobError::Read(p, e) => write!(f, "cannot read job {}: {e}", p.display()),
            JobError::CreateOut(p, e) => write!(f, "cannot create {}: {e}", p.display()),
            JobError::WriteOut(p, e) => write!(f, "cannot write {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for JobError {}

/// What a finished job did, for the caller's exit status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JobSummary {
    pub commands: usize,
    pub invalid_lines: usize,
}

/// Paths derived from a job file's path.
fn out_path(job: &Path) -> PathBuf {
    job.with_extension("out")
}

fn backup_path(job: &Path, n: usize) -> PathBuf {
    let stem = job.file_stem().unwrap_or_default().to_string_lossy();
    job.with_file_name(format!("{stem}-{n}.bck"))
}

/// Runs the job at `job` to its end. Invalid lines are reported on stderr
/// as `<file>:<line>: Invalid command. See HELP for usage` and skipped.
pub fn run_job(
    store: &Store,
    backups: &Arc<Backups>,
    job: &Path,
    progress: &Progress,
) -> Result<JobSummary, JobError> {
    let input = File::open(job).map_err(|e| JobError::Open(job.to_path_buf(), e))?;
    let out_file = out_path(job);
    let out = create_out(&out_file).map_err(|e| JobError::CreateOut(out_file.clone(), e))?;
    let mut out = BufWriter::new(out);
    let mut lines = LineReader::new(input);
    let mut summary = JobSummary::default();
    let mut backups_done = 0;
    let mut line_no = 0usize;
    let mut buf = Vec::with_capacity(256);
    let wout = |e| JobError::WriteOut(out_file.clone(), e);

    loop {
        let line = match lines.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => return Err(JobError::Read(job.to_path_buf(), e)),
        };
        line_no += 1;
        let parsed = match line {
            Line::Str(t) => parse_line_str(t).ok(),
            Line::Text(t) => parse_line_borrowed(t).ok(),
            Line::TooLong => None,
        };
        let cmd = match parsed {
            Some(Some(cmd)) => cmd,
            Some(None) => continue,
            None => {
                summary.invalid_lines += 1;
                progress.add_invalid();
                progress.println(&format!("{}:{line_no}: {INVALID_COMMAND}", job.display()));
                continue;
            }
        };
        summary.commands += 1;
        if summary.commands % FLUSH_EVERY == 0 {
            progress.add_commands(FLUSH_EVERY);
        }
        buf.clear();
        match cmd {
            LineCommand::Write(pairs) => {
                store.write(&pairs);
                failed_remotely(store, job, line_no, progress);
            }
            LineCommand::Read(mut keys) => {
                // READ's line is sorted by key: sort first, then render each
                // value straight from the store.
                keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                buf.push(b'[');
                let mut at = 0;
                store.read_with(&keys, |v| {
                    push_row(&mut buf, keys[at], v);
                    at += 1;
                });
                buf.extend_from_slice(b"]\n");
            }
            LineCommand::Delete(keys) => {
                let existed = store.delete(&keys);
                failed_remotely(store, job, line_no, progress);
                render_delete(&keys, &existed, &mut buf)
            }
            LineCommand::Show => store.snapshot().render_into(&mut buf),
            LineCommand::Help => buf.extend_from_slice(HELP_TEXT.as_bytes()),
            LineCommand::Wait(0) => {}
            LineCommand::Wait(ms) => {
                out.write_all(b"Waiting...\n").map_err(wout)?;
                // Someone watching the .out sees why the job is idle.
                out.flush().map_err(wout)?;
                std::thread::sleep(Duration::from_millis(ms));
            }
            LineCommand::Backup => {
                backups_done += 1;
                let path = backup_path(job, backups_done);
                // Counted by `backups` for the exit status; the job goes on.
                if let Err(e) = backups.start(&path, || store.snapshot().render()) {
                    crate::log_warn!("{e}");
                }
            }
        }
        out.write_all(&buf).map_err(wout)?;
    }
    out.flush().map_err(wout)?;
    progress.add_commands(summary.commands % FLUSH_EVERY);
    Ok(summary)
}

/// Creates (or truncates) a job's `.out`. The open must not block: a FIFO
/// left at that name with nobody reading it would stall the worker forever,
/// so it is opened non-blocking (and fails with ENXIO); writes then block
/// as usual. A symlink is followed, as a user may point an `.out` elsewhere.
/// With a shared dataset (`--store etcd`), a change the dataset refused or
/// could not confirm was not made: the job's line says so where invalid
/// lines are told, and the job goes on.
fn failed_remotely(store: &Store, job: &Path, line_no: usize, progress: &Progress) {
    if store.is_remote() {
        if let Some(why) = crate::store::remote::take_failure() {
            progress.println(&format!("{}:{line_no}: not done: {why}", job.display()));
        }
    }
}

fn create_out(path: &Path) -> io::Result<File> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let flags = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL)?);
    fcntl(&file, FcntlArg::F_SETFL(flags & !OFlag::O_NONBLOCK))?;
    Ok(file)
}

/// READ's line: pairs sorted by key (byte order), absent keys as KVSERROR.
pub fn render_read<K: AsRef<str>>(keys: &[K], values: &[Option<String>], out: &mut Vec<u8>) {
    let mut rows: Vec<(&str, &Option<String>)> =
        keys.iter().map(AsRef::as_ref).zip(values).collect();
    rows.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'[');
    for (k, v) in rows {
        push_row(out, k, v.as_deref().map(str::as_bytes));
    }
    out.extend_from_slice(b"]\n");
}

/// One `(key,value)` of READ's line; an absent key reads KVSERROR.
fn push_row(out: &mut Vec<u8>, key: &str, value: Option<&[u8]>) {
    out.push(b'(');
    out.extend_from_slice(key.as_bytes());
    out.push(b',');
    match value {
        // A RESP client's value may not be one the job format can show.
        Some(v) => crate::protocol::text_rules::push_shown(out, v),
        None => out.extend_from_slice(b"KVSERROR"),
    }
    out.push(b')');
}

/// DELETE's line, only when some key was absent: those keys, in the order given.
pub fn render_delete<K: AsRef<str>>(keys: &[K], existed: &[bool], out: &mut Vec<u8>) {
    if existed.iter().all(|&e| e) {
        return;
    }
    out.push(b'[');
    for (k, _) in keys.iter().zip(existed).filter(|(_, &e)| !e) {
        out.push(b'(');
        out.extend_from_slice(k.as_ref().as_bytes());
        out.extend_from_slice(b",KVSMISSING)");
    }
    out.extend_from_slice(b"]\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn read_line_sorted_with_errors() {
        let mut out = Vec::new();
        render_read(&s(&["c", "a"]), &[None, Some("1".into())], &mut out);
        assert_eq!(out, b"[(a,1)(c,KVSERROR)]\n");
    }

    #[test]
    fn delete_line_only_when_missing() {
        let mut out = Vec::new();
        render_delete(&s(&["a", "b"]), &[true, true], &mut out);
        assert!(out.is_empty());
        render_delete(&s(&["z", "a", "b"]), &[false, true, false], &mut out);
        assert_eq!(out, b"[(z,KVSMISSING)(b,KVSMISSING)]\n");
    }

    #[test]
    fn derived_paths() {
        assert_eq!(out_path(Path::new("d/x.job")), Path::new("d/x.out"));
        assert_eq!(backup_path(Path::new("d/x.job"), 3), Path::new("d/x-3.bck"));
    }
}
