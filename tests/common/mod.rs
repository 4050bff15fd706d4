//! Helpers shared by the end-to-end tests: run the real binaries with a
//! bounded wait, and look for processes they may have left behind.
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const KVS: &str = env!("CARGO_BIN_EXE_kvs");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_kvs-client");

pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Waits for `child` at most `limit`; kills it and panics if it is late.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not finish within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `kvs` with `args`, waiting at most 60 s.
pub fn run_kvs(args: &[&str]) -> Output {
    let mut child = Command::new(KVS)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kvs");
    // Read both pipes on threads so a chatty child cannot block on them.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    Output {
        status,
        stdout: t_out.join().expect("stdout reader"),
        stderr: t_err.join().expect("stderr reader"),
    }
}

/// Pids of live processes whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) {
                // A zombie still counts: it was not reaped.
                pids.push(pid);
            }
        }
    }
    pids
}

/// Copies every file of `from` that is not an expected output into `to`.
pub fn copy_inputs(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read case folder").flatten() {
        let p = entry.path();
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if p.is_file() && ext != "out" && ext != "bck" {
            std::fs::copy(&p, to.join(entry.file_name())).expect("copy input");
        }
    }
}

/// Files in `dir` whose name ends with `suffix`, sorted.
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// A `kvs` server in its own temporary folder, killed on drop if the test
/// has not stopped it.
pub struct Server {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub jobs: std::path::PathBuf,
    pub fifo: std::path::PathBuf,
    pub log: std::path::PathBuf,
}

impl Server {
    /// Starts `kvs <jobs> 2 2 <fifo> <extra...>` with the given job files and
    /// waits (bounded) until the registration FIFO exists.
    pub fn start(jobs: &[(&str, &str)], extra: &[&str]) -> Server {
        Server::start_under(&[], jobs, extra)
    }

    /// [`Server::start`] under a wrapping command, e.g. `["prlimit", "--nofile=40:40", "--"]`.
    pub fn start_under(wrapper: &[&str], jobs: &[(&str, &str)], extra: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("kvs-srv")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let jobs_dir = dir.path().join("jobs");
        std::fs::create_dir(&jobs_dir).unwrap();
        for (name, text) in jobs {
            std::fs::write(jobs_dir.join(name), text).unwrap();
        }
        let fifo = dir.path().join("register");
        let log = dir.path().join("server.log");
        let mut cmd = match wrapper.split_first() {
            Some((tool, args)) => {
                let mut c = Command::new(tool);
                c.args(args).arg(KVS);
                c
            }
            None => Command::new(KVS),
        };
        let child = cmd
            .arg(&jobs_dir)
            .args(["2", "2"])
            .arg(&fifo)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start kvs server");
        let server = Server {
            child,
            dir,
            jobs: jobs_dir,
            fifo,
            log,
        };
        // Ready once it reads its registration FIFO: only then does a
        // non-blocking write end open.
        let start = Instant::now();
        while !server.listening() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        server
    }

    fn listening(&self) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&self.fifo)
            .is_ok()
    }

    /// The server's descriptor count once it has stopped changing (start-up
    /// opens a few more right after the FIFO is served).
    pub fn settled_fds(&self) -> usize {
        let count = || {
            std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
                .map(|d| d.count())
                .unwrap_or(0)
        };
        let mut last = count();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = count();
            if now == last {
                return now;
            }
            last = now;
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal server");
    }

    /// What the server has written to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the server's log contains `needle` (bounded).
    pub fn wait_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "server log never said {needle:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits up to `limit` until the server's log contains `needle`.
    pub fn wait_log_within(&self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                start.elapsed() < limit,
                "server log never said {needle:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lines about clients the log has told of: those written that hold
    /// `needle`, and those a rate limit held back and only counted.
    pub fn client_lines(&self, needle: &str) -> usize {
        let log = self.log();
        let count = |s: &str, marker: &str| -> usize {
            s.split(marker)
                .next()
                .and_then(|head| head.rsplit(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        log.lines()
            .map(|l| {
                let written = usize::from(l.contains(needle));
                let held = if l.contains(" more since the last report)") {
                    count(l, " more since the last report)")
                } else if l.contains(" more lines about refused or disconnected clients") {
                    count(l, " more lines about refused or disconnected clients")
                } else {
                    0
                };
                written + held
            })
            .sum()
    }

    /// SIGTERM, then a bounded wait for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        wait_bounded(&mut self.child, Duration::from_secs(30))
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A short private folder for client FIFOs: their paths must fit 40 bytes.
pub fn client_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kc")
        .tempdir_in("/tmp")
        .expect("client tempdir")
}

/// `kvs-client [options] <id> <fifo>` with its FIFOs in `dir` (TMPDIR) and
/// its three standard streams piped.
pub fn client_command(options: &[&str], id: &str, fifo: &Path, dir: &Path) -> Command {
    let mut c = Command::new(CLIENT);
    c.args(options)
        .arg(id)
        .arg(fifo)
        .env("TMPDIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A `kvs-client` process with its stdin and stdout in the test's hands.
pub struct ClientProc {
    pub child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
    dir: tempfile::TempDir,
}

impl ClientProc {
    pub fn start(id: &str, fifo: &Path) -> ClientProc {
        Self::start_with(&[], id, fifo)
    }

    /// [`ClientProc::start`] with options before the arguments.
    pub fn start_with(options: &[&str], id: &str, fifo: &Path) -> ClientProc {
        let dir = client_dir();
        let mut child = client_command(options, id, fifo, dir.path())
            .spawn()
            .expect("start kvs-client");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for (pipe, prefix) in [
            (Box::new(stdout) as Box<dyn Read + Send>, ""),
            (Box::new(stderr) as Box<dyn Read + Send>, "stderr: "),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(format!("{prefix}{line}")).is_err() {
                        return;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        ClientProc {
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
            dir,
        }
    }

    /// The folder (TMPDIR) holding this client's FIFOs.
    pub fn fifo_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to client");
        stdin.flush().expect("flush client stdin");
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next output line (stdout, or stderr prefixed `stderr: `), waiting
    /// at most 10 s.
    pub fn next_line(&mut self) -> String {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no output from client; so far: {:?}", self.seen));
        self.seen.push(line.clone());
        line
    }

    /// Waits until a line equal to `want` arrives; lines before it are kept
    /// in `seen`.
    pub fn expect(&mut self, want: &str) {
        loop {
            if self.next_line() == want {
                return;
            }
        }
    }

    pub fn wait(&mut self) -> ExitStatus {
        self.stdin = None;
        wait_bounded(&mut self.child, Duration::from_secs(20))
    }
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

/// Creates request, response and notification FIFOs in `dir`.
pub fn three_fifos(dir: &Path) -> [std::path::PathBuf; 3] {
    let paths = ["rq", "rs", "nt"].map(|n| dir.join(n));
    for p in &paths {
        mkfifo(p);
    }
    paths
}

/// Writes a raw 121-byte connect request naming these three paths.
pub fn raw_connect(fifo: &Path, req: &Path, resp: &Path, notif: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let msg = kvs::protocol::fifo::ConnectRequest {
        req: req.as_os_str().as_bytes().to_vec(),
        resp: resp.as_os_str().as_bytes().to_vec(),
        notif: notif.as_os_str().as_bytes().to_vec(),
        form: kvs::protocol::fifo::OpForm::Binary,
    }
    .encode()
    .expect("paths fit");
    send_registration(fifo, &msg);
}

/// Writes raw bytes to the registration FIFO, as any process may.
pub fn send_registration(fifo: &Path, bytes: &[u8]) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .open(fifo)
        .expect("open registration FIFO")
        .write_all(bytes)
        .expect("write to the registration FIFO");
}

/// Waits (at most 10 s) until the file at `path` holds exactly `text`.
pub fn wait_for_file(path: &Path, text: &str) {
    let start = Instant::now();
    while std::fs::read_to_string(path).unwrap_or_default() != text {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} never held {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An in-process session speaking the wire protocol: its FIFOs (removed on
/// drop), the connection and the notification FIFO.
pub struct Session {
    pub conn: kvs::client::Connection,
    pub notif: std::fs::File,
    pub fifos: kvs::client::ClientFifos,
    _dir: tempfile::TempDir,
}

/// Connects a session with client id `id` (FIFOs in their own folder);
/// panics if the server does not accept it.
pub fn session(id: &str, fifo: &Path) -> Session {
    let dir = client_dir();
    let fifos = kvs::client::ClientFifos::create(dir.path(), id).expect("client FIFOs");
    let mut conn = kvs::client::Connection::connect(&fifos, fifo).expect("connect");
    let notif = conn.take_notifications().expect("notification FIFO");
    Session {
        conn,
        notif,
        fifos,
        _dir: dir,
    }
}

impl Session {
    /// Sends `r` and returns the answer's result code.
    pub fn ask(&mut self, r: kvs::protocol::fifo::Request) -> u8 {
        self.conn.request(&r).expect("request").code
    }

    /// The next notification, waiting at most 10 s.
    pub fn note(&mut self) -> (String, String) {
        kvs::client::read_notification_within(&mut self.notif, Duration::from_secs(10))
            .expect("notification")
    }
}

pub fn write(k: &str, v: &str) -> kvs::protocol::fifo::Request {
    kvs::protocol::fifo::Request::Write(k.into(), v.into())
}
pub mod etcd;
pub mod resp;
