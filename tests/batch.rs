//! End-to-end tests of batch mode: the real `kvs` binary on temporary
//! job folders, outputs compared byte for byte.

mod common;

use common::*;
use std::fs;
use std::path::Path;

const CONFORMANCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance");

/// Runs one conformance case with the given limits and compares every
/// expected `.out` and `.bck`; also checks no other `.bck` appeared.
fn check_case(case: &Path, max_backups: &str, max_threads: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_inputs(case, tmp.path());
    let dir = tmp.path().to_str().expect("utf-8 temp path");
    let out = run_kvs(&[dir, max_backups, max_threads]);
    assert!(out.status.success(), "{case:?}: {}", out.stderr);
    for suffix in [".out", ".bck"] {
        let expected = files_ending(case, suffix);
        assert_eq!(
            files_ending(tmp.path(), suffix),
            expected,
            "{case:?}: set of {suffix} files"
        );
        for name in expected {
            let want = fs::read(case.join(&name)).expect("expected file");
            let got = fs::read(tmp.path().join(&name)).expect("output file");
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{case:?}/{name} (limits {max_backups} {max_threads})"
            );
        }
    }
}

#[test]
fn conformance_suite_matches_byte_for_byte() {
    let mut cases = 0;
    for entry in fs::read_dir(CONFORMANCE)
        .expect("conformance folder")
        .flatten()
    {
        if entry.path().is_dir() {
            for (b, t) in [("1", "1"), ("2", "4"), ("8", "2")] {
                check_case(&entry.path(), b, t);
            }
            cases += 1;
        }
    }
    assert!(cases >= 4, "conformance cases missing: found {cases}");
}

#[test]
fn invalid_lines_are_reported_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(
        tmp.path().join("t.job"),
        "WRITE [(a,1)]\nBOGUS\nREAD [a]\nREAD [a\n",
    )
    .unwrap();
    let out = run_kvs(&[tmp.path().to_str().unwrap(), "1", "1"]);
    assert!(out.status.success());
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    assert!(lines[0].ends_with("t.job:2: Invalid command. See HELP for usage"));
    assert!(lines[1].ends_with("t.job:4: Invalid command. See HELP for usage"));
    assert_eq!(
        fs::read_to_string(tmp.path().join("t.out")).unwrap(),
        "[(a,1)]\n"
    );
}

#[test]
fn usage_errors_exit_2_with_a_reason() {
    for args in [
        vec![],
        vec!["d", "1"],
        vec!["d", "0", "1"],
        vec!["d", "1", "x"],
        vec!["d", "1", "1", "f", "extra", "more"],
    ] {
        let out = run_kvs(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            out.stderr.contains("usage: kvs"),
            "{args:?}: {}",
            out.stderr
        );
    }
    let help = run_kvs(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(help.stdout.contains("usage: kvs"));
}

#[test]
fn missing_folder_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let out = run_kvs(&[missing.to_str().unwrap(), "1", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("cannot read jobs folder"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_unwritable_out_is_reported_and_other_jobs_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a.job"), "WRITE [(a,1)]\nREAD [a]\n").unwrap();
    fs::write(tmp.path().join("b.job"), "WRITE [(b,1)]\nREAD [b]\n").unwrap();
    // A folder where a.out should go: creating the file fails, even as root.
    fs::create_dir(tmp.path().join("a.out")).unwrap();
    // Sub-folders and other files are not jobs.
    fs::create_dir(tmp.path().join("sub.job")).unwrap();
    fs::write(tmp.path().join("notes.txt"), "READ [a]\n").unwrap();
    let out = run_kvs(&[tmp.path().to_str().unwrap(), "1", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("a.out"), "{}", out.stderr);
    assert_eq!(
        fs::read_to_string(tmp.path().join("b.out")).unwrap(),
        "[(b,1)]\n"
    );
    assert!(!tmp.path().join("notes.out").exists());
}

#[test]
fn overlong_lines_and_odd_bytes_do_not_stop_a_job() {
    let tmp = tempfile::tempdir().unwrap();
    let mut job = Vec::new();
    job.extend_from_slice(b"WRITE [(a,1)]\r\n");
    job.extend(std::iter::repeat_n(b'x', 200_000));
    job.extend_from_slice(b"\n\xff\xfe\x00\nREAD [a]");
    fs::write(tmp.path().join("x.job"), job).unwrap();
    let out = run_kvs(&[tmp.path().to_str().unwrap(), "1", "1"]);
    assert!(out.status.success());
    assert_eq!(out.stderr.lines().count(), 2, "{}", out.stderr);
    assert_eq!(
        fs::read_to_string(tmp.path().join("x.out")).unwrap(),
        "[(a,1)]\n"
    );
}

#[test]
fn a_failed_backup_is_reported_and_the_job_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(
        tmp.path().join("b.job"),
        "WRITE [(a,1)]\nBACKUP\nBACKUP\nREAD [a]\n",
    )
    .unwrap();
    // The first backup's temporary file cannot be created: a folder is there.
    fs::create_dir(tmp.path().join("b-1.bck.tmp")).unwrap();
    let out = run_kvs(&[tmp.path().to_str().unwrap(), "1", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    // Said once, by the reaping parent, with the child's reason.
    let said: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("b-1.bck"))
        .collect();
    assert_eq!(
        said,
        [format!(
            "kvs: backup {} failed: remove old temporary file: Is a directory",
            tmp.path().join("b-1.bck").display()
        )],
        "{}",
        out.stderr
    );
    assert!(!tmp.path().join("b-1.bck").exists());
    assert_eq!(
        fs::read_to_string(tmp.path().join("b-2.bck")).unwrap(),
        "(a, 1)\n"
    );
    assert_eq!(
        fs::read_to_string(tmp.path().join("b.out")).unwrap(),
        "[(a,1)]\n"
    );
}

#[test]
fn backups_never_follow_a_planted_link_or_block_on_a_fifo() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("p.job"), "WRITE [(a,1)]\nBACKUP\nBACKUP\n").unwrap();
    let victim = tmp.path().join("victim.txt");
    fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, tmp.path().join("p-1.bck.tmp")).unwrap();
    nix::unistd::mkfifo(
        &tmp.path().join("p-2.bck.tmp"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let out = run_kvs(&[tmp.path().to_str().unwrap(), "1", "1"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    for n in [1, 2] {
        let bck = tmp.path().join(format!("p-{n}.bck"));
        assert!(fs::symlink_metadata(&bck).unwrap().is_file());
        assert_eq!(fs::read_to_string(&bck).unwrap(), "(a, 1)\n");
    }
}

#[test]
fn a_fifo_named_like_an_out_file_does_not_hang_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("f.job"), "WRITE [(a,1)]\nREAD [a]\n").unwrap();
    fs::write(tmp.path().join("g.job"), "WRITE [(b,1)]\nREAD [b]\n").unwrap();
    nix::unistd::mkfifo(
        &tmp.path().join("f.out"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let out = run_kvs(&[tmp.path().to_str().unwrap(), "1", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("f.out"), "{}", out.stderr);
    assert_eq!(
        fs::read_to_string(tmp.path().join("g.out")).unwrap(),
        "[(b,1)]\n"
    );
}

/// `kvs --help | head -0` and the like: output to a reader that went away
/// is dropped quietly (exit 0, no panic), for both programs, and so are a
/// job's error lines when stderr's reader went away.
#[test]
fn output_to_a_reader_that_went_away_is_no_panic() {
    use std::process::{Command, Stdio};
    let gone = || {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        writer
    };
    for (program, args) in [
        (common::KVS, vec!["--help"]),
        (common::KVS, vec!["--version"]),
        (common::CLIENT, vec!["--help"]),
        (common::CLIENT, vec!["--version"]),
    ] {
        let out = Command::new(program)
            .args(&args)
            .stdout(gone())
            .stderr(Stdio::piped())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{program} {args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{program} {args:?}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.job"),
        "NOPE\nWRITE [(a,1)]\nREAD [a]\n",
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let status = Command::new(common::KVS)
        .args([d, "1", "1"])
        .stdout(Stdio::null())
        .stderr(gone())
        .status()
        .expect("run");
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("bad.out")).unwrap(),
        "[(a,1)]\n",
        "the job went on after its error line found no reader"
    );
}
