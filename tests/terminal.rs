//! kvs at a terminal, for real: the programs run under a pseudo-terminal
//! (`script`, or tmux for a screen to read), as a person would see them.
//! Each test says SKIPPED where the tool it needs is missing.

mod common;

use common::KVS;
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new("which")
        .arg(tool)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Removes terminal escape sequences and carriage returns.
fn plain(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // Parameters, then one final byte in @..~.
                    for d in chars.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                }
            }
            '\r' => out.push('\n'),
            c => out.push(c),
        }
    }
    out
}

#[test]
fn batch_mode_shows_a_bar_and_a_summary_on_a_terminal() {
    if !have("script") {
        eprintln!(
            "SKIPPED (batch_mode_shows_a_bar_and_a_summary_on_a_terminal): script is not installed"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        std::fs::write(
            dir.path().join(format!("j{i}.job")),
            "WRITE [(a,1)]\nBOGUS\nWAIT 300\nREAD [a]\n",
        )
        .unwrap();
    }
    let cmd = format!("{KVS} {} 1 1", dir.path().display());
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script");
    assert!(out.status.success());
    let screen = plain(&out.stdout);
    assert!(screen.contains("/3 job files"), "no bar: {screen}");
    assert!(screen.contains("backups running"), "{screen}");
    // Each invalid line whole, on a line of its own, never inside the bar.
    for i in 0..3 {
        let want = format!(
            "{}/j{i}.job:2: Invalid command. See HELP for usage",
            dir.path().display()
        );
        assert!(screen.lines().any(|l| l == want), "{want} torn: {screen}");
    }
    let last = screen.lines().rfind(|l| !l.trim().is_empty()).unwrap();
    assert!(
        last.starts_with("kvs: 3 job files, 9 commands, 3 invalid lines, 0 backups, "),
        "{screen}"
    );
}

#[test]
fn batch_mode_off_a_terminal_prints_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.job"), "WRITE [(a,1)]\nBOGUS\n").unwrap();
    nix::unistd::mkfifo(
        &dir.path().join("f.job"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("d.job")).unwrap();
    let d = dir.path().to_str().unwrap();
    let out = common::run_kvs(&[d, "1", "1"]);
    assert!(out.status.success());
    assert_eq!(
        out.stderr,
        format!(
            "kvs: skipping {d}/d.job: a folder, not a regular file\n\
             kvs: skipping {d}/f.job: a FIFO, not a regular file\n\
             {d}/a.job:2: Invalid command. See HELP for usage\n"
        )
    );
    let out = common::run_kvs(&[d, "1", "1", "--summary"]);
    let last = out.stderr.lines().last().unwrap();
    assert!(
        last.starts_with("kvs: 1 job files, 1 commands, 1 invalid lines, 0 backups, "),
        "{}",
        out.stderr
    );
}
