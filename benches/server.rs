//! `cargo bench --bench server`: the server over real FIFOs, measured
//! against a bare pipe in the same run.
//!
//! 1. Request round trips per second and p50/p99/p999 latency with 1, 16
//!    and 50 clients (alternating WRITE and READ), beside a bare ping-pong
//!    through a `cat` process per client over two pipes with the same
//!    message size, and beside a one-thread relay (every client's pipes
//!    served by one polling thread: the floor of a one-reactor design) and
//!    the same relay sending every second message through a second thread
//!    and back (the floor of kvs's design, where WRITEs go to the pool).
//! 2. Notification latency p50/p99 from just before a WRITE is sent until
//!    each subscriber has read its notification, with 1, 100 and 1,000
//!    subscribers on one key (writes paced: one at a time).
//! 3. Notifications per second delivered when the writer does not pace.

use kvs::client::{ClientFifos, Connection};
use kvs::protocol::fifo::{Request, NOTIFICATION_LEN};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

mod common;

use common::{have, Server};

/// Percentile `p` (0..=1) of sorted latencies, in microseconds.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

struct Stats {
    per_sec: f64,
    lat: Vec<Duration>,
}

impl Stats {
    fn line(&self, name: &str) -> String {
        format!(
            "{name:<28} {:>11.0}/s  p50 {:>7.1} us  p99 {:>7.1} us  p999 {:>8.1} us",
            self.per_sec,
            pct(&self.lat, 0.5),
            pct(&self.lat, 0.99),
            pct(&self.lat, 0.999)
        )
    }
}

/// Runs `clients` threads of `each` round trips through `trip`; merges
/// their latencies.
fn run_clients<T: Send + 'static>(states: Vec<T>, each: usize, trip: fn(&mut T, usize)) -> Stats {
    let barrier = Arc::new(Barrier::new(states.len() + 1));
    let handles: Vec<_> = states
        .into_iter()
        .map(|mut st| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(each);
                barrier.wait();
                for i in 0..each {
                    let t = Instant::now();
                    trip(&mut st, i);
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    Stats {
        per_sec: lat.len() as f64 / secs,
        lat,
    }
}

/// A bare pipe ping-pong: 42 bytes out to `cat`, 42 bytes back.
struct Cat {
    child: Child,
    msg: [u8; 42],
}

fn cat_trip(c: &mut Cat, _: usize) {
    let msg = c.msg;
    c.child.stdin.as_mut().unwrap().write_all(&msg).unwrap();
    let mut back = [0u8; 42];
    c.child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut back)
        .unwrap();
}

fn cat() -> Cat {
    let child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start cat");
    Cat {
        child,
        msg: [7; 42],
    }
}

/// A client of the one-thread relay: its request and answer pipes.
struct RelayClient {
    tx: File,
    rx: File,
    msg: [u8; 42],
}

fn relay_trip(c: &mut RelayClient, _: usize) {
    let msg = c.msg;
    c.tx.write_all(&msg).unwrap();
    let mut back = [0u8; 42];
    c.rx.read_exact(&mut back).unwrap();
}

/// The floor of kvs's design for round trips: one thread that polls every
/// client's request pipe and answers each message on its answer pipe (one
/// read and one write per request, as kvs's reactor must do), with no
/// parsing and no store. With `hop`, every second message of each client
/// (kvs's WRITEs, which the design sends to the store pool) is answered
/// only after a round trip through a second thread: the messages of one
/// poll turn go over together and come back through a channel and a
/// `mio::Waker`, as kvs's do; the others (its READs) are answered at once.
/// Ends when every client has closed its request pipe.
fn relay(clients: usize, hop: bool) -> (Vec<RelayClient>, std::thread::JoinHandle<()>) {
    let mut ends = Vec::new();
    let mut users = Vec::new();
    for _ in 0..clients {
        let (req_rx, req_tx) = nix::unistd::pipe().expect("pipe");
        let (ans_rx, ans_tx) = nix::unistd::pipe().expect("pipe");
        ends.push((File::from(req_rx), File::from(ans_tx)));
        users.push(RelayClient {
            tx: File::from(req_tx),
            rx: File::from(ans_rx),
            msg: [7; 42],
        });
    }
    let handle = std::thread::spawn(move || {
        const WAKER: Token = Token(usize::MAX);
        let mut poll = Poll::new().expect("poll");
        for (i, (rx, _)) in ends.iter().enumerate() {
            set_nonblocking(rx);
            poll.registry()
                .register(&mut SourceFd(&rx.as_raw_fd()), Token(i), Interest::READABLE)
                .expect("register");
        }
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).expect("waker"));
        type Batch = Vec<(usize, Vec<u8>)>;
        let (to_pool, pool_in) = std::sync::mpsc::channel::<Batch>();
        let (pool_out, back) = std::sync::mpsc::channel::<Batch>();
        let pool = std::thread::spawn(move || {
            for batch in pool_in {
                if pool_out.send(batch).is_err() {
                    return;
                }
                waker.wake().expect("wake");
            }
        });
        let mut events = Events::with_capacity(1024);
        let mut open = ends.len();
        let mut seen = vec![0usize; ends.len()];
        let mut buf = [0u8; 4096];
        while open > 0 {
            poll.poll(&mut events, None).expect("poll");
            let mut batch = Batch::new();
            for ev in events.iter() {
                if ev.token() == WAKER {
                    for (i, msg) in back.try_iter().flatten() {
                        ends[i].1.write_all(&msg).expect("answer");
                    }
                    continue;
                }
                let i = ev.token().0;
                let (rx, tx) = &mut ends[i];
                loop {
                    match rx.read(&mut buf) {
                        Ok(0) => {
                            open -= 1;
                            poll.registry()
                                .deregister(&mut SourceFd(&rx.as_raw_fd()))
                                .expect("deregister");
                            break;
                        }
                        Ok(n) => {
                            seen[i] += 1;
                            if hop && seen[i] % 2 == 1 {
                                batch.push((i, buf[..n].to_vec()));
                            } else {
                                tx.write_all(&buf[..n]).expect("answer");
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("relay read: {e}"),
                    }
                }
            }
            if !batch.is_empty() {
                to_pool.send(batch).expect("pool thread");
            }
        }
        drop(to_pool);
        pool.join().expect("pool thread");
    });
    (users, handle)
}

struct KvsClient {
    conn: Connection,
    key: String,
    _keep: (File, ClientFifos),
}

fn kvs_trip(c: &mut KvsClient, i: usize) {
    let r = if i % 2 == 0 {
        Request::Write(c.key.clone(), i.to_string())
    } else {
        Request::Read(c.key.clone())
    };
    c.conn.request(&r).expect("request");
}

fn round_trips(server: &Server) -> Vec<(usize, f64)> {
    let mut kvs_rps = Vec::new();
    println!("\n== round trips (WRITE/READ alternating; bare pipe = ping-pong through cat) ==");
    for (clients, each) in [(1usize, 20_000usize), (16, 2_000), (50, 1_000)] {
        let cats: Vec<Cat> = (0..clients).map(|_| cat()).collect();
        let pipe = run_clients(cats, each, cat_trip);
        let kvs_clients: Vec<KvsClient> = (0..clients)
            .map(|i| {
                let (conn, notif, fifos) = server.session(&format!("rt{clients}-{i}"));
                KvsClient {
                    conn,
                    key: format!("key{i}"),
                    _keep: (notif, fifos),
                }
            })
            .collect();
        let kvs = run_clients(kvs_clients, each, kvs_trip);
        let (relay_clients, relay_thread) = relay(clients, false);
        let one_thread = run_clients(relay_clients, each, relay_trip);
        relay_thread.join().expect("relay thread");
        let (hop_clients, hop_thread) = relay(clients, true);
        let with_hop = run_clients(hop_clients, each, relay_trip);
        hop_thread.join().expect("relay thread");
        println!("{}", pipe.line(&format!("bare pipe, {clients} clients")));
        println!(
            "{}",
            one_thread.line(&format!("1-thread relay, {clients} cl."))
        );
        println!("{}", with_hop.line(&format!("relay + pool hop, {clients}")));
        println!("{}", kvs.line(&format!("kvs, {clients} clients")));
        println!(
            "  ratio kvs/pipe: throughput {:.2}x, p50 latency {:.2}x, p99 latency {:.2}x",
            kvs.per_sec / pipe.per_sec,
            pct(&kvs.lat, 0.5) / pct(&pipe.lat, 0.5),
            pct(&kvs.lat, 0.99) / pct(&pipe.lat, 0.99)
        );
        println!(
            "  ratio 1-thread relay/pipe: throughput {:.2}x (the most one reactor thread could reach); kvs/relay {:.2}x",
            one_thread.per_sec / pipe.per_sec,
            kvs.per_sec / one_thread.per_sec
        );
        println!(
            "  ratio relay + pool hop/pipe: throughput {:.2}x (the most kvs's design could reach: every WRITE crosses to the pool and back); kvs/that {:.2}x",
            with_hop.per_sec / pipe.per_sec,
            kvs.per_sec / with_hop.per_sec
        );
        kvs_rps.push((clients, kvs.per_sec));
    }
    kvs_rps
}

/// Reads notifications from many FIFOs on one thread.
struct Fanout {
    poll: Poll,
    files: Vec<File>,
    partial: Vec<Vec<u8>>,
    events: Events,
}

impl Fanout {
    fn new(files: Vec<File>) -> Fanout {
        let poll = Poll::new().unwrap();
        for (i, f) in files.iter().enumerate() {
            set_nonblocking(f);
            poll.registry()
                .register(&mut SourceFd(&f.as_raw_fd()), Token(i), Interest::READABLE)
                .unwrap();
        }
        let n = files.len();
        Fanout {
            poll,
            files,
            partial: vec![Vec::new(); n],
            events: Events::with_capacity(1024),
        }
    }

    /// Reads until `want` whole notifications have arrived in all; returns
    /// the arrival time of each.
    fn collect(&mut self, want: usize) -> Vec<Instant> {
        let mut arrivals = Vec::with_capacity(want);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = vec![0u8; 64 * 1024];
        while arrivals.len() < want {
            assert!(
                Instant::now() < deadline,
                "notifications missing: {} of {want}",
                arrivals.len()
            );
            self.poll
                .poll(&mut self.events, Some(Duration::from_millis(100)))
                .unwrap();
            for ev in self.events.iter() {
                let i = ev.token().0;
                loop {
                    match self.files[i].read(&mut buf) {
                        Ok(0) => panic!("session {i} closed"),
                        Ok(n) => {
                            let now = Instant::now();
                            let p = &mut self.partial[i];
                            p.extend_from_slice(&buf[..n]);
                            let whole = p.len() / NOTIFICATION_LEN;
                            p.drain(..whole * NOTIFICATION_LEN);
                            arrivals.extend(std::iter::repeat_n(now, whole));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
        arrivals
    }
}

fn set_nonblocking(f: &File) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL).unwrap());
    fcntl(f, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).unwrap();
}

/// One subscribed key per subscriber, or one key for all of them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keys {
    One,
    Disjoint,
}

fn fan_out(server: &Server) {
    println!("\n== notifications: one writer, N subscribers (latency: write sent -> notification read) ==");
    let (mut writer, _wn, _wf) = server.session("fw");
    let mut floors = Vec::new();
    for keys in [Keys::One, Keys::Disjoint] {
        for subs in [1usize, 100, 1000] {
            let (kvs, floor) = fan_out_case(server, &mut writer, keys, subs);
            if let [pipes, fifos] = floor[..] {
                floors.push((subs, kvs, pipes, fifos));
            }
        }
    }
    println!("\n== the floor: one thread writes the 82-byte message to N pipes, read by the same reader; its writes alternate with kvs's above ==");
    println!(
        "   (FIFOs: named FIFOs in {}, as kvs's clients' are)",
        common::base().display()
    );
    let ratio = |(p50, p99): Percentiles, (f50, f99): Percentiles| {
        format!(
            "p50 {f50:>7.1} us  p99 {f99:>8.1} us;  kvs/floor p50 {:.2}x  p99 {:.2}x",
            p50 / f50,
            p99 / f99
        )
    };
    for (subs, kvs, pipes, fifos) in floors {
        println!("{subs:>5} pipes: {}", ratio(kvs, pipes));
        println!("{subs:>5} FIFOs: {}", ratio(kvs, fifos));
    }
}

/// Writes timed for `per_write` notifications each: about 20,000
/// notifications in all, but at least 100 writes, so that a p99 is not
/// the slowest of 20 rounds (one scheduler hiccup) but a real percentile.
fn fan_out_rounds(per_write: usize) -> usize {
    (20_000 / per_write).clamp(100, 2_000)
}

/// What one change to `subs` subscribers costs the kernel alone: a thread
/// writes one notification to each of `subs` pipes, the benchmark's reader
/// reads them; latency from the go to each read. The pipes are anonymous,
/// or named FIFOs in the bench's folder as kvs's clients' are: a write to
/// a FIFO also updates its inode's modification time on the filesystem
/// that holds it (a journalled metadata change on ext4, once per clock
/// tick per FIFO, so on every write when each FIFO gets one per change).
struct Floor {
    go: Option<std::sync::mpsc::Sender<()>>,
    writer: Option<std::thread::JoinHandle<()>>,
    fan: Fanout,
    subs: usize,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pipes {
    Anonymous,
    Named,
}

impl Floor {
    fn new(subs: usize, pipes: Pipes) -> Floor {
        let mut reads = Vec::new();
        let mut writes = Vec::new();
        let dir = (pipes == Pipes::Named).then(|| {
            tempfile::Builder::new()
                .prefix("kvs-floor")
                .tempdir_in(common::base())
                .expect("floor dir")
        });
        for i in 0..subs {
            let (r, w) = match &dir {
                None => {
                    let (r, w) = nix::unistd::pipe().expect("pipe");
                    (File::from(r), File::from(w))
                }
                Some(dir) => {
                    let path = dir.path().join(format!("n{i}"));
                    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
                    let r = std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(nix::libc::O_NONBLOCK)
                        .open(&path)
                        .expect("open FIFO to read");
                    let w = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .expect("open FIFO to write");
                    (r, w)
                }
            };
            reads.push(r);
            writes.push(w);
        }
        let (go, rx) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            let msg = [7u8; NOTIFICATION_LEN];
            for () in rx {
                for w in writes.iter_mut() {
                    w.write_all(&msg).expect("write to pipe");
                }
            }
        });
        Floor {
            go: Some(go),
            writer: Some(writer),
            fan: Fanout::new(reads),
            subs,
            _dir: dir,
        }
    }

    /// One change: the latency of each of its notifications.
    fn round(&mut self) -> impl Iterator<Item = Duration> {
        let t0 = Instant::now();
        if let Some(go) = &self.go {
            go.send(()).expect("writer");
        }
        self.fan.collect(self.subs).into_iter().map(move |t| t - t0)
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        drop(self.go.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// p50 and p99 in microseconds.
type Percentiles = (f64, f64);

/// One case; returns its latency p50 and p99 in microseconds, and with
/// one key those of the floor for as many subscribers (anonymous pipes,
/// then named FIFOs), its rounds alternating with kvs's so that all see
/// the same machine.
fn fan_out_case(
    server: &Server,
    writer: &mut Connection,
    keys: Keys,
    subs: usize,
) -> (Percentiles, Vec<Percentiles>) {
    let tag = if keys == Keys::One { "one" } else { "dis" };
    let key_of = |i: usize| match keys {
        Keys::One => format!("{tag}{subs}"),
        Keys::Disjoint => format!("{tag}{subs}-{i}"),
    };
    let mut keep = Vec::new();
    let mut files = Vec::new();
    // Every key exists before anyone subscribes, so no setup write is
    // delivered as a notification.
    for i in 0..subs {
        writer
            .request(&Request::Write(key_of(i), "0".into()))
            .unwrap();
    }
    for i in 0..subs {
        let (mut conn, notif, fifos) = server.session(&format!("{tag}{subs}-{i}"));
        assert_eq!(
            conn.request(&Request::Subscribe(key_of(i))).unwrap().code,
            b'1'
        );
        files.push(notif);
        keep.push((conn, fifos));
    }
    let mut fan = Fanout::new(files);
    // Notifications one write causes.
    let per_write = if keys == Keys::One { subs } else { 1 };

    // Latency: paced writes, each waits for all its notifications. The
    // writer is a thread of its own, as the floor's is: the reader starts
    // reading at once instead of first waiting for the WRITE's answer,
    // which a subscriber in another process would not wait for either.
    let rounds = fan_out_rounds(per_write);
    let mut lat = Vec::with_capacity(rounds * per_write);
    let mut floors: Vec<(Floor, Vec<Duration>)> = match keys {
        Keys::One => [Pipes::Anonymous, Pipes::Named]
            .into_iter()
            .map(|p| (Floor::new(subs, p), Vec::new()))
            .collect(),
        Keys::Disjoint => Vec::new(),
    };
    std::thread::scope(|scope| {
        let (go, writes) = std::sync::mpsc::channel::<Request>();
        let conn = &mut *writer;
        scope.spawn(move || {
            for r in writes {
                conn.request(&r).unwrap();
            }
        });
        for n in 0..rounds {
            let t0 = Instant::now();
            go.send(Request::Write(key_of(n % subs), n.to_string()))
                .unwrap();
            lat.extend(fan.collect(per_write).into_iter().map(|t| t - t0));
            for (rig, floor_lat) in floors.iter_mut() {
                floor_lat.extend(rig.round());
            }
        }
    });
    lat.sort_unstable();
    let floors: Vec<Percentiles> = floors
        .into_iter()
        .map(|(rig, mut floor_lat)| {
            drop(rig);
            floor_lat.sort_unstable();
            (pct(&floor_lat, 0.5), pct(&floor_lat, 0.99))
        })
        .collect();

    // Throughput: unpaced writes, reading along every 50 writes so that no
    // subscriber reaches its output limit.
    let writes = (200_000 / per_write).clamp(100, 20_000);
    let t0 = Instant::now();
    let mut got = 0;
    for n in 0..writes {
        writer
            .request(&Request::Write(key_of(n % subs), n.to_string()))
            .unwrap();
        if n % 50 == 49 {
            got += fan.collect((n + 1) * per_write - got).len();
        }
    }
    got += fan.collect(writes * per_write - got).len();
    let per_sec = got as f64 / t0.elapsed().as_secs_f64();
    let what = if keys == Keys::One {
        "on one key"
    } else {
        "disjoint keys"
    };
    println!(
        "{subs:>5} subscribers, {what:<13}: p50 {:>7.1} us  p99 {:>8.1} us ({} samples); {:>9.0} notifications/s",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.len(),
        per_sec
    );
    ((pct(&lat, 0.5), pct(&lat, 0.99)), floors)
}

/// redis-benchmark SET/GET against a private redis-server on loopback, if
/// both are installed; nothing is installed here.
fn redis(kvs_rps: &[(usize, f64)]) {
    println!("\n== Redis (redis-benchmark SET+GET, loopback, pipeline 1) vs kvs (WRITE/READ over FIFOs) ==");
    if !have("redis-server") || !have("redis-benchmark") {
        println!("skipped: redis-server and redis-benchmark are not installed (Debian: apt install redis-server)");
        return;
    }
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for &(clients, kvs) in kvs_rps {
        let out = Command::new("redis-benchmark")
            .args([
                "-p",
                &port.to_string(),
                "-t",
                "set,get",
                "-n",
                "100000",
                "--csv",
            ])
            .args(["-c", &clients.to_string()])
            .output()
            .expect("run redis-benchmark");
        let text = String::from_utf8_lossy(&out.stdout);
        // "SET","rps","avg","min","p50","p95","p99","max"
        let rps: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("\"SET\"") || l.starts_with("\"GET\""))
            .filter_map(|l| l.split(',').nth(1)?.trim_matches('"').parse().ok())
            .collect();
        if rps.len() != 2 {
            println!("redis-benchmark gave no figures: {text}");
            continue;
        }
        // The same mix as kvs's alternating WRITE/READ: total ops / total time.
        let redis = 2.0 / (1.0 / rps[0] + 1.0 / rps[1]);
        println!(
            "{clients:>3} clients: redis {redis:>9.0} req/s   kvs {kvs:>9.0} req/s   kvs/redis {:.2}x",
            kvs / redis
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    kvs::reactor::raise_fd_limit();
    // `cargo bench --bench server -- fanout` runs only that part.
    let wanted = common::wanted();
    // KVS_BENCH_STORE_THREADS sets the server's store threads (2).
    let threads = std::env::var("KVS_BENCH_STORE_THREADS").unwrap_or_else(|_| "2".into());
    let server = Server::start(&["--max-sessions", "2000", "--store-threads", &threads]);
    let mut kvs_rps = Vec::new();
    if wanted("roundtrip") || wanted("redis") {
        kvs_rps = round_trips(&server);
    }
    if wanted("fanout") {
        fan_out(&server);
    }
    if wanted("redis") {
        let pairs: Vec<(usize, f64)> = kvs_rps.into_iter().filter(|(c, _)| *c != 16).collect();
        redis(&pairs);
    }
}
