//! A real etcd cluster for tests: three members on free 127.0.0.1 ports,
//! each in a temporary folder, started and stopped by the test (every
//! process ended on drop). Tests that need it say SKIPPED where Debian's
//! `etcd-server` is not installed (`.ci/run` installs it).

use super::resp::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Member {
    pub name: String,
    pub client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// Clusters running at once in one test binary: each is three etcd
/// processes fsyncing on every change, and a dozen of them on two cores
/// made requests outlast kvs's 2 s timeout.
const CLUSTERS_AT_ONCE: usize = 2;

static RUNNING: std::sync::Mutex<usize> = std::sync::Mutex::new(0);
static FREED: std::sync::Condvar = std::sync::Condvar::new();

/// A place among the [`CLUSTERS_AT_ONCE`], given back on drop.
struct Slot;

impl Slot {
    fn take() -> Slot {
        let mut n = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= CLUSTERS_AT_ONCE {
            n = FREED.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        FREED.notify_one();
    }
}

pub struct Cluster {
    pub members: Vec<Member>,
    initial: String,
    token: String,
    extra: Vec<String>,
    _dir: tempfile::TempDir,
    /// Dropped last, once the members are gone.
    _slot: Slot,
}

/// Whether `etcd` can be run here; prints the SKIPPED line if not.
pub fn available(test: &str) -> bool {
    let ok = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED {test}: etcd is not installed (apt-get install etcd-server)");
    }
    ok
}

impl Cluster {
    /// Starts `n` members (with `extra` flags each, e.g. `--max-txn-ops`)
    /// and waits, bounded, until every one answers; `None` (SKIPPED) where
    /// etcd is missing.
    pub fn start(test: &str, n: usize, extra: &[&str]) -> Option<Cluster> {
        if !available(test) {
            return None;
        }
        let slot = Slot::take();
        let dir = tempfile::Builder::new()
            .prefix("kvs-etcd")
            .tempdir()
            .expect("tempdir");
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                dir: dir.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            members,
            initial,
            token: format!("kvs-{}-{}", std::process::id(), free_port()),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _dir: dir,
            _slot: slot,
        };
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            c.wait_ready(i);
        }
        Some(c)
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let log = std::fs::File::create(self._dir.path().join(format!("{}.log", m.name)))
            .expect("member log");
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .args(["--data-dir", m.dir.to_str().expect("utf-8 path")])
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            // Faster elections than the defaults (100 / 1000 ms): a
            // leader kill is over sooner, on loopback that is safe.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// Waits (at most 30 s) until member `i` serves reads.
    pub fn wait_ready(&self, i: usize) {
        let start = Instant::now();
        let ep = self.endpoint(i);
        loop {
            let c = kvs::etcd::Etcd::new(vec![ep.clone()], Duration::from_millis(500));
            if c.get(b"kvs-fixture-probe").is_ok() {
                return;
            }
            if start.elapsed() > Duration::from_secs(30) {
                // The folder goes with the fixture: the log's end is shown.
                let log = self
                    ._dir
                    .path()
                    .join(format!("{}.log", self.members[i].name));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                panic!("etcd member {i} did not come up in 30 s; its log ends:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's `host:port`, comma-separated (as `--store etcd://`
    /// takes them).
    pub fn endpoints(&self) -> String {
        (0..self.members.len())
            .map(|i| self.endpoint(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn endpoint_list(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// The member that leads now (bounded wait for one to be elected).
    pub fn leader(&self) -> usize {
        let start = Instant::now();
        loop {
            for i in 0..self.members.len() {
                if self.members[i].child.is_none() {
                    continue;
                }
                let c = kvs::etcd::Etcd::new(vec![self.endpoint(i)], Duration::from_millis(500));
                if let Ok((me, leader)) = c.status() {
                    if me != 0 && me == leader {
                        return i;
                    }
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no leader elected"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9 of member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) member `i`: frozen, its
    /// connections stay open and nothing comes from them, as from a member
    /// cut off by a partition it has not noticed.
    pub fn freeze(&self, i: usize, frozen: bool) {
        use nix::sys::signal::{kill, Signal};
        if let Some(c) = &self.members[i].child {
            let sig = if frozen {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            };
            let _ = kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Starts member `i` again on its data (after [`Cluster::kill`]).
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
