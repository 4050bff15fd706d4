//! kvs at a terminal, for real: the programs run under a pseudo-terminal
//! (`script`, or tmux for a screen to read), as a person would see them.
//! Each test says SKIPPED where the tool it needs is missing.

mod common;

use common::KVS;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

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

/// A tmux server of its own (socket in a temporary folder), killed on drop.
struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn start(command: &str) -> Tmux {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let ok = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args([
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "100",
                "-y",
                "30",
                command,
            ])
            .status()
            .expect("tmux")
            .success();
        assert!(ok, "tmux did not start");
        Tmux { socket, _dir: dir }
    }

    fn keys(&self, keys: &[&str]) {
        let ok = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["send-keys", "-t", "t"])
            .args(keys)
            .status()
            .expect("tmux send-keys")
            .success();
        assert!(ok);
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["capture-pane", "-p", "-t", "t"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (at most 10 s) until the screen satisfies `ok`.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "never saw {what}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
    }
}

/// `kvs-client <id>` at a terminal of its own, connected to `server`, with
/// its FIFOs and its history (`XDG_STATE_HOME`) in temporary folders; once
/// its prompt shows.
struct Console {
    tmux: Tmux,
    state: tempfile::TempDir,
    _fifos: tempfile::TempDir,
}

impl Console {
    fn start(server: &common::Server, id: &str) -> Console {
        let fifos = common::client_dir();
        let state = tempfile::tempdir().unwrap();
        let command = format!(
            "env TMPDIR={} XDG_STATE_HOME={} {} {id} {}",
            fifos.path().display(),
            state.path().display(),
            common::CLIENT,
            server.fifo.display()
        );
        let tmux = Tmux::start(&command);
        // capture-pane drops trailing spaces: the prompt shows as "kvs>".
        tmux.wait("the prompt", |s| s.contains("kvs>"));
        Console {
            tmux,
            state,
            _fifos: fifos,
        }
    }
}

#[test]
fn the_client_is_a_console_at_a_terminal() {
    if !have("tmux") {
        eprintln!("SKIPPED (the_client_is_a_console_at_a_terminal): tmux is not installed");
        return;
    }
    let server = common::Server::start(&[], &[]);
    let console = Console::start(&server, "alice");
    let tmux = &console.tmux;
    tmux.keys(&["WRITE [(door,open)]", "Enter"]);
    tmux.keys(&["SUBSCRIBE [door]", "Enter"]);
    tmux.wait("the subscription", |s| {
        s.contains("Server returned 1 for operation: subscribe")
    });
    // A line half typed when a notification arrives.
    tmux.keys(&["READ [do"]);
    tmux.wait("the half line", |s| s.lines().any(|l| l == "kvs> READ [do"));
    let mut bob = common::session("bob", &server.fifo);
    assert_eq!(bob.ask(common::write("door", "closed")), b'0');
    let screen = tmux.wait("the notification above the prompt", |s| {
        let lines: Vec<&str> = s.lines().filter(|l| !l.is_empty()).collect();
        lines.len() >= 2
            && lines[lines.len() - 1] == "kvs> READ [do"
            && lines[lines.len() - 2] == "(door,closed)"
    });
    assert!(!screen.contains("READ [do(door"), "garbled:\n{screen}");
    // The half line is still being edited.
    tmux.keys(&["or]", "Enter"]);
    tmux.wait("the READ", |s| s.contains("[(door,closed)]"));
    // Completion, help with examples, and what an error expects.
    tmux.keys(&["UNSUBS", "Tab"]);
    tmux.wait("completion", |s| s.lines().any(|l| l == "kvs> UNSUBSCRIBE"));
    tmux.keys(&["[door]", "Enter"]);
    tmux.keys(&["HELP", "Enter"]);
    tmux.wait("help", |s| s.contains("WRITE [(door,open)(window,shut)]"));
    tmux.keys(&["FOO", "Enter"]);
    tmux.wait("the error", |s| {
        s.contains("unknown command 'FOO'; expected one of SUBSCRIBE")
    });
    tmux.keys(&["C-d"]);
    let history = console.state.path().join("kvs/history");
    let start = Instant::now();
    while !std::fs::read_to_string(&history)
        .unwrap_or_default()
        .contains("READ [door]")
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "history not kept"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn lines_typed_ahead_at_the_console_all_run() {
    if !have("tmux") {
        eprintln!("SKIPPED (lines_typed_ahead_at_the_console_all_run): tmux is not installed");
        return;
    }
    let server = common::Server::start(&[], &[]);
    let console = Console::start(&server, "carol");
    let tmux = &console.tmux;
    // Three lines typed while the console is busy with the first: each
    // must run, in order (the line editor used to keep only the next one).
    tmux.keys(&["DELAY 700", "Enter"]);
    tmux.wait("the delay", |s| s.contains("Waiting..."));
    tmux.keys(&["WRITE [(x,1)]", "Enter"]);
    tmux.keys(&["WRITE [(x,2)]", "Enter"]);
    tmux.keys(&["READ [x]", "Enter"]);
    let screen = tmux.wait("the typed-ahead READ's answer", |s| {
        s.lines().any(|l| l == "[(x,2)]")
    });
    let writes = screen
        .matches("Server returned 0 for operation: write")
        .count();
    assert_eq!(writes, 2, "{screen}");
}
