//! A `kvs` server for the benchmarks, shared by `server` and `persist`: its
//! own temporary folder (under `KVS_BENCH_DIR`, default /tmp), stderr in a
//! log file there, `{dir}` in its arguments replaced by that folder, and
//! `KVS_BENCH_WRAP="perf record -g -o srv.perf --"` to run it under a
//! profiler. Stopped with SIGTERM on drop, so a profiler can write its data:
//! the server and its wrapper run in a process group of their own and both
//! get it (a wrapper such as `strace` or `perf stat` does not pass it on,
//! and the server would outlive the bench). `KVS_BENCH_BIN=<path>` runs
//! another `kvs` binary instead of this build's (an older commit's, for a
//! before/after in one run: `scripts/persist_before_after.sh`).
#![allow(dead_code)]

use kvs::client::{ClientFifos, Connection};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const KVS: &str = env!("CARGO_BIN_EXE_kvs");

/// The `kvs` binary the benches run: `KVS_BENCH_BIN`, or this build's.
pub fn kvs_bin() -> String {
    std::env::var("KVS_BENCH_BIN").unwrap_or_else(|_| KVS.to_string())
}

/// Where benchmark folders go.
pub fn base() -> PathBuf {
    PathBuf::from(std::env::var("KVS_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))
}

pub struct Server {
    child: Child,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Server {
    /// `kvs <dir>/jobs 1 1 <dir>/reg <extra...>`, once its registration FIFO
    /// exists.
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("kb")
            .tempdir_in(base())
            .unwrap();
        let jobs = dir.path().join("jobs");
        std::fs::create_dir(&jobs).unwrap();
        let log = dir.path().join("log");
        let extra: Vec<String> = extra
            .iter()
            .map(|a| a.replace("{dir}", dir.path().to_str().unwrap()))
            .collect();
        let wrap = std::env::var("KVS_BENCH_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut cmd = match words.next() {
            Some(tool) => {
                let mut c = Command::new(tool);
                c.args(words).arg(kvs_bin());
                c
            }
            None => Command::new(kvs_bin()),
        };
        use std::os::unix::process::CommandExt;
        let child = cmd
            .process_group(0)
            .arg(&jobs)
            .args(["1", "1"])
            .arg(dir.path().join("reg"))
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start kvs");
        let start = Instant::now();
        while !dir.path().join("reg").exists() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Server { child, dir, log }
    }

    /// A connected session: its connection, notification FIFO and FIFOs.
    pub fn session(&self, id: &str) -> (Connection, File, ClientFifos) {
        let fifos = ClientFifos::create(self.dir.path(), id).expect("FIFOs");
        let mut conn = Connection::connect(&fifos, &self.dir.path().join("reg")).expect("connect");
        let notif = conn.take_notifications().expect("notif");
        (conn, notif, fifos)
    }

    /// The first line of the server's log holding `needle`, waiting at
    /// most `limit`.
    /// The server's pid (the wrapper's, under `KVS_BENCH_WRAP`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait_log(&self, needle: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                start.elapsed() < limit,
                "server never said {needle:?}: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        use nix::sys::signal::{killpg, Signal};
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let start = Instant::now();
        // Until the whole group is gone (a server under a wrapper may
        // outlast it); the child is reaped as it goes, or it would stay in
        // the group as a zombie.
        while start.elapsed() < Duration::from_secs(30) {
            let _ = self.child.try_wait();
            if killpg(group, None).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Runs `kvs <jobs> 1 <workers> <extra...>` in batch mode to its end: the
/// seconds it took as a whole process, and its stderr. Panics (with that
/// stderr) if it fails.
pub fn run_batch<S: AsRef<std::ffi::OsStr>>(
    jobs: &std::path::Path,
    workers: usize,
    extra: &[S],
) -> (f64, String) {
    use std::io::Read;
    let start = Instant::now();
    let mut child = Command::new(kvs_bin())
        .arg(jobs)
        .args(["1", &workers.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kvs");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().expect("wait for kvs");
    assert!(status.success(), "kvs batch failed: {err}");
    (start.elapsed().as_secs_f64(), err)
}

/// A private `redis-server` on a Unix socket in its own temporary folder,
/// with no snapshots; killed on drop.
pub struct Redis {
    child: Killed,
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
}

impl Redis {
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// `redis-server --port 0 --save "" <extra...>`, once its socket exists.
    pub fn start(extra: &[&str]) -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("kbredis")
            .tempdir_in(base())
            .unwrap();
        let sock = dir.path().join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", ""])
            .args(extra)
            .arg("--unixsocket")
            .arg(&sock)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let redis = Redis {
            child: Killed(child),
            dir,
            sock,
        };
        // The socket file appears before redis-server accepts on it.
        assert!(accepting(&redis.sock), "redis-server did not start");
        redis
    }
}

/// Whether a server accepts connections on the Unix socket `sock` within
/// 10 s.
fn accepting(sock: &std::path::Path) -> bool {
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        if start.elapsed() >= Duration::from_secs(10) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// The design's floor, `examples/resp_floor.rs` (built first: `cargo
/// bench` builds no examples, and a floor left from an older tree would be
/// measured as this one), on the Unix socket `sock`; killed on drop.
/// `None`, said, if it cannot be built or does not start.
pub struct Floor {
    _child: Killed,
    pub sock: PathBuf,
}

impl Floor {
    pub fn start(sock: &std::path::Path) -> Option<Floor> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let bin = root.join("target/release/examples/resp_floor");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--example", "resp_floor"])
            .current_dir(root)
            .status();
        if !matches!(built, Ok(s) if s.success()) || !bin.exists() {
            println!("floor skipped: cannot build examples/resp_floor.rs");
            return None;
        }
        // Port 0: the floor's TCP listener is not used here.
        let child = Command::new(&bin).arg(sock).arg("0").spawn().ok()?;
        let floor = Floor {
            _child: Killed(child),
            sock: sock.to_path_buf(),
        };
        if !accepting(sock) {
            println!("floor skipped: it did not start");
            return None;
        }
        Some(floor)
    }
}

/// A reference server's process, killed and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `tool` runs (`tool --version` succeeds).
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The parts named on the command line (`cargo bench --bench x -- part`):
/// whether `name` is one of them, or none was named.
pub fn wanted() -> impl Fn(&str) -> bool {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    move |name| only.is_empty() || only.iter().any(|o| o == name)
}
