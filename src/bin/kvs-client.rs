//! `kvs-client <client_id> <registration_fifo>`: talks to a kvs server from
//! a terminal or a shell pipeline. Commands come on stdin; answers and
//! notifications go to stdout, one line each (SPEC section 4).

use kvs::client::commands::{parse_client_line, ClientCommand, CLIENT_HELP};
use kvs::client::console::{self, Console, Input};
use kvs::client::{read_notification, Answer, ClientError, ClientFifos, Connection};
use kvs::jobs::runner::render_read;
use kvs::protocol::fifo::{OpForm, Request};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const USAGE: &str = "\
usage: kvs-client [--op-codes binary|ascii] <client_id> <registration_fifo>

Creates $TMPDIR/req<id>, resp<id> and notif<id> (TMPDIR defaults to /tmp),
connects to the kvs server listening on <registration_fifo>, then reads
commands from stdin, one per line:
  SUBSCRIBE [key,...]      UNSUBSCRIBE [key,...]
  READ [key,...]           WRITE [(key,value)...]      DELETE [key,...]
  DELAY <ms>               DISCONNECT (end of input does the same)
  HELP
Each notification prints as (key,value) or (key,DELETED). At a terminal the
client is a console: a kvs> prompt, line editing, history kept across runs
(in $XDG_STATE_HOME/kvs/history or ~/.local/state/kvs/history), Tab completes
command names, and notifications print above the line being typed.
--op-codes ascii speaks to a course server that sends and expects op codes
as ASCII digits ('1' for CONNECT) instead of SPEC's bytes (1); binary, the
default, is what kvs and SPEC use (kvs also understands ascii). Any server
works whatever order it opens the three FIFOs in.
Exit status: 0 after DISCONNECT, 1 if the server refused, closed or vanished,
2 on a bad command line.";

/// Shared by the threads that may end the program, so that the FIFOs are
/// removed and the reason is printed exactly once.
struct Exit {
    fifos: ClientFifos,
    done: AtomicBool,
}

/// How long a second caller of [`Exit::now`] leaves the first to end the
/// program.
const SECOND_EXIT: Duration = Duration::from_secs(5);

/// The one [`Exit`] of the process, set once the FIFOs exist.
static EXIT: OnceLock<Exit> = OnceLock::new();

/// Prints one line on stdout. If stdout is gone (the reader of a pipe such
/// as `| head -1` quit), the client ends quietly, as if killed by SIGPIPE,
/// and still removes its FIFOs.
fn say(args: std::fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if written.is_err() {
        drop(out);
        match EXIT.get() {
            Some(exit) => exit.now(141, None),
            None => std::process::exit(141),
        }
    }
}

macro_rules! say {
    ($($arg:tt)*) => { say(format_args!($($arg)*)) };
}

/// Prints one line on stderr. A terminal or pipe that is gone is no reason
/// to stop: `eprintln!` panics there, and the thread that was ending the
/// program on "Disconnected by server" died with it, leaving the process
/// parked for good (seen when tmux closed a console's terminal).
fn note(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{args}");
}

macro_rules! note {
    ($($arg:tt)*) => { note(format_args!($($arg)*)) };
}

impl Exit {
    /// Removes the FIFOs and exits; a second caller waits to be ended, and
    /// ends the program itself should the first not have within a while.
    fn now(&self, code: i32, message: Option<&str>) -> ! {
        if !self.done.swap(true, Ordering::SeqCst) {
            if let Some(m) = message {
                note!("{m}");
            }
            self.fifos.remove();
            std::process::exit(code);
        }
        let start = std::time::Instant::now();
        while start.elapsed() < SECOND_EXIT {
            std::thread::park_timeout(SECOND_EXIT);
        }
        self.fifos.remove();
        std::process::exit(code);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        let _ = writeln!(io::stdout(), "{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "-V" || a == "--version") {
        let _ = writeln!(io::stdout(), "kvs-client {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let mut form = OpForm::Binary;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--op-codes" || a.starts_with("--op-codes=") {
            let value = match a.strip_prefix("--op-codes=") {
                Some(v) => Some(v.to_string()),
                None => it.next().cloned(),
            };
            form = match value.as_deref() {
                Some("binary") => OpForm::Binary,
                Some("ascii") => OpForm::Ascii,
                other => {
                    note!(
                        "kvs-client: --op-codes takes binary or ascii, not {}\n{USAGE}",
                        other.unwrap_or("nothing")
                    );
                    return ExitCode::from(2);
                }
            };
        } else {
            rest.push(a.clone());
        }
    }
    let [id, registration] = &rest[..] else {
        note!(
            "kvs-client: expected 2 arguments, got {}\n{USAGE}",
            rest.len()
        );
        return ExitCode::from(2);
    };
    if id.is_empty() || id.contains('/') || id.contains('\0') {
        note!("kvs-client: client id '{id}' must be non-empty and hold no '/'\n{USAGE}");
        return ExitCode::from(2);
    }
    let dir = std::env::var_os("TMPDIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let fifos = match ClientFifos::create(&dir, id) {
        Ok(f) => f,
        Err(e) => {
            note!("kvs-client: {e}");
            return ExitCode::from(1);
        }
    };
    let exit = EXIT.get_or_init(|| Exit {
        fifos,
        done: AtomicBool::new(false),
    });
    watch_signals(exit);
    run(exit, PathBuf::from(registration), form)
}

/// Removes the FIFOs when the client is interrupted or killed politely.
fn watch_signals(exit: &'static Exit) {
    let Ok(mut signals) = Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        note!("kvs-client: cannot watch signals; FIFOs may be left behind if interrupted");
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            exit.now(128 + sig, None);
        }
    });
}

fn run(exit: &'static Exit, registration: PathBuf, form: OpForm) -> ExitCode {
    let mut conn = match Connection::connect_in(&exit.fifos, &registration, form) {
        Ok(c) => c,
        Err(ClientError::Refused) => {
            say!("Server returned 1 for operation: connect");
            exit.now(1, Some("kvs-client: the server refused the connection"));
        }
        Err(e) => exit.now(1, Some(&format!("kvs-client: {e}"))),
    };
    say!("Server returned 0 for operation: connect");

    // At a terminal: a console; notifications print above its prompt.
    let mut console = if io::stdin().is_terminal() {
        match Console::new() {
            Ok(c) => Some(c),
            Err(e) => {
                note!("kvs-client: no line editing ({e}); reading plain lines");
                None
            }
        }
    } else {
        None
    };
    let mut notify: Box<dyn FnMut(String) + Send> =
        match console.as_mut().and_then(Console::printer) {
            Some(p) => p,
            None => Box::new(|line| say!("{line}")),
        };

    let disconnecting = Arc::new(AtomicBool::new(false));
    if let Some(mut notif) = conn.take_notifications() {
        let disconnecting = disconnecting.clone();
        std::thread::spawn(move || loop {
            match read_notification(&mut notif) {
                Ok(Some((key, value))) => notify(format!("({key},{value})")),
                Ok(None) | Err(_) => {
                    if disconnecting.load(Ordering::SeqCst) {
                        return;
                    }
                    exit.now(1, Some("Disconnected by server"));
                }
            }
        });
    }

    let stdin = io::stdin();
    let mut line = Vec::new();
    let mut input = stdin.lock();
    loop {
        line.clear();
        if let Some(c) = console.as_mut() {
            match c.read_line() {
                Input::Line(l) => line.extend_from_slice(l.as_bytes()),
                Input::End => break,
            }
        } else {
            match input.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    note!("kvs-client: reading stdin failed: {e}");
                    break;
                }
            }
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let cmd = match parse_client_line(text) {
            Ok(Some(cmd)) => cmd,
            Ok(None) => continue,
            Err(e) if console.is_some() => {
                note!("{}", console::explain(&String::from_utf8_lossy(text), &e));
                continue;
            }
            Err(_) => {
                note!("Invalid command. See HELP for usage");
                continue;
            }
        };
        let result = match cmd {
            ClientCommand::Disconnect => break,
            ClientCommand::Delay(ms) => {
                if ms > 0 {
                    say!("Waiting...");
                    std::thread::sleep(Duration::from_millis(ms));
                }
                Ok(())
            }
            ClientCommand::Subscribe(keys) => {
                each(&mut conn, keys, Request::Subscribe, "subscribe")
            }
            ClientCommand::Unsubscribe(keys) => {
                each(&mut conn, keys, Request::Unsubscribe, "unsubscribe")
            }
            ClientCommand::Read(keys) => read(&mut conn, keys),
            ClientCommand::Write(pairs) => pairs.into_iter().try_for_each(|(k, v)| {
                conn.request(&Request::Write(k, v))
                    .map(|a| report(&a, "write"))
            }),
            ClientCommand::Delete(keys) => each(&mut conn, keys, Request::Delete, "delete"),
            ClientCommand::Help if console.is_some() => {
                say!("{}", console::help());
                Ok(())
            }
            ClientCommand::Help => {
                say!("{}", CLIENT_HELP.trim_end());
                Ok(())
            }
        };
        if let Err(e) = result {
            fail(exit, e);
        }
    }

    if let Some(c) = console.as_mut() {
        c.save();
    }
    disconnecting.store(true, Ordering::SeqCst);
    match conn.request(&Request::Disconnect) {
        Ok(a) => report(&a, "disconnect"),
        Err(e) => fail(exit, e),
    }
    exit.now(0, None)
}

fn each(
    conn: &mut Connection,
    keys: Vec<String>,
    make: fn(String) -> Request,
    name: &str,
) -> Result<(), ClientError> {
    for k in keys {
        let a = conn.request(&make(k))?;
        report(&a, name);
    }
    Ok(())
}

/// READ: an answer line per key, then what was read in the job files'
/// READ form (`[(a,1)(c,KVSERROR)]`), which no notification looks like.
fn read(conn: &mut Connection, keys: Vec<String>) -> Result<(), ClientError> {
    let mut values = Vec::with_capacity(keys.len());
    for k in &keys {
        let a = conn.request(&Request::Read(k.clone()))?;
        report(&a, "read");
        values.push(a.value);
    }
    let mut line = Vec::new();
    render_read(&keys, &values, &mut line);
    say!(
        "{}",
        String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line))
    );
    Ok(())
}

fn report(a: &Answer, name: &str) {
    say!("Server returned {} for operation: {name}", a.code as char);
}

fn fail(exit: &Exit, e: ClientError) -> ! {
    match e {
        ClientError::Disconnected => exit.now(1, Some("Disconnected by server")),
        e => exit.now(1, Some(&format!("kvs-client: {e}"))),
    }
}
