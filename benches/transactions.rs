//! `cargo bench --bench transactions`: MULTI + 3 SETs + EXEC from 50
//! clients (each transaction sent in one write, its five replies read
//! back), against kvs, a private redis-server and the design's floor
//! (`examples/resp_floor.rs`: one reactor thread, EXEC crossing to a pool
//! and back, nothing else; built here if missing) in the same run, rounds
//! alternating, best of 3. Where redis-server is missing it says so.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Instant;

mod common;

use common::{have, Floor, Redis, Server};

const CLIENTS: usize = 50;
const EACH: usize = 2_000;

/// Transactions per second from `CLIENTS` clients on the socket `sock`.
fn run(sock: &Path) -> f64 {
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (sock, barrier) = (sock.to_path_buf(), barrier.clone());
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&sock).expect("connect");
                let mut tx = Vec::new();
                let mut args = vec![vec![b"MULTI".to_vec()]];
                for k in 0..3 {
                    args.push(vec![
                        b"SET".to_vec(),
                        format!("c{c}k{k}").into_bytes(),
                        b"value-of-twenty-byte".to_vec(),
                    ]);
                }
                args.push(vec![b"EXEC".to_vec()]);
                for a in &args {
                    let refs: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
                    tx.extend(kvs::protocol::resp::encode_request(&refs));
                }
                // +OK, +QUEUED x3, *3 +OK x3: the bytes are the same each time.
                let expect = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n+OK\r\n+OK\r\n";
                let mut buf = vec![0u8; expect.len()];
                barrier.wait();
                for _ in 0..EACH {
                    s.write_all(&tx).expect("send");
                    s.read_exact(&mut buf).expect("replies");
                    assert_eq!(&buf[..], &expect[..], "a transaction failed");
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for t in threads {
        t.join().expect("client");
    }
    (CLIENTS * EACH) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!("== MULTI + 3 SETs + EXEC, {CLIENTS} clients x {EACH}, Unix socket (best of 3, alternating) ==");
    if !have("redis-server") {
        println!("skipped: redis-server is not installed (Debian: apt install redis-server)");
        return;
    }
    let kvs = Server::start(&["--resp-socket", "{dir}/kvs.sock"]);
    let kvs_sock = kvs.dir.path().join("kvs.sock");
    let redis = Redis::start(&["--appendonly", "no"]);
    let floor = Floor::start(&kvs.dir.path().join("floor.sock"));
    let (mut k, mut r, mut f) = (0.0f64, 0.0f64, 0.0f64);
    for _ in 0..3 {
        k = k.max(run(&kvs_sock));
        r = r.max(run(&redis.sock));
        if let Some(floor) = &floor {
            f = f.max(run(&floor.sock));
        }
    }
    println!(
        "kvs {k:>9.0} tx/s   redis {r:>9.0} tx/s   kvs/redis {:.2}x",
        k / r
    );
    if floor.is_some() {
        println!(
            "floor {f:>7.0} tx/s   floor/redis {:.2}x   kvs/floor {:.2}x",
            f / r,
            k / f
        );
    }
}
