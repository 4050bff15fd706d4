//! The floor under kvs's RESP rows in `scripts/resp_bench.sh` and under
//! `cargo bench --bench transactions`: a server built as kvs is (one mio
//! reactor thread, single-thread `threadpool`s for mutations, results back
//! through a channel and a `mio::Waker`, the same request parser) that
//! does nothing else. GETs are answered on the reactor, as kvs answers
//! reads whose shard is free; SET, INCR and MSET cross to the pool and
//! back, a turn's batches in one job (two above 64), as kvs's mutations
//! do. MULTI answers OK and queues what follows (QUEUED) until EXEC, which
//! crosses to the pool; what a read answered before its job leaves with
//! the job's replies, in one write, as in kvs. No store, no
//! subscriptions, no log: one value is kept (the last one set, whatever
//! its key), copied in by SET and out by GET, so that large values cost
//! here what a copy in and out of a store costs, and one counter, which
//! INCR adds to under the same lock (a read-modify-write on a shared key
//! takes a lock in this design whatever the store). What this design costs
//! before kvs does any work, measured by redis-benchmark in the same run
//! as kvs and redis-server.
//!
//!   cargo run --release --example resp_floor -- <unix-socket> <tcp-port>

use kvs::protocol::resp::{self, Parsed};
use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, PoisonError, RwLock};

const UNIX: Token = Token(0);
const TCP: Token = Token(1);
const WAKER: Token = Token(2);
const POOL_THREADS: usize = 2;
/// Above this many batches a turn's work is split between two jobs (kvs's
/// `SPLIT_AT`).
const SPLIT_AT: usize = 64;

trait Stream: Read + Write + mio::event::Source {}
impl<T: Read + Write + mio::event::Source> Stream for T {}

struct Conn {
    stream: Box<dyn Stream>,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// A batch is on the pool: no more requests are taken until it is back
    /// (kvs keeps a connection's replies in order the same way).
    busy: bool,
    /// Between MULTI and EXEC: the commands queued.
    multi: Option<Vec<Mutation>>,
    /// Bytes may be waiting: an event said so and no read since came up
    /// short (kvs reads a socket only then, too).
    readable: bool,
}

/// What the floor keeps: the last value set (whatever its key) and one
/// counter (whatever INCR's key), both behind one lock as a store's shard
/// would be.
struct Held {
    value: Vec<u8>,
    counter: i64,
}

/// A mutation's name and, for SET and MSET, the value it sets last.
type Mutation = (Vec<u8>, Option<Vec<u8>>);

/// The replies a pool job makes for one batch of mutations (each its
/// name and, for SET and MSET, the value it sets last).
fn mutate(batch: &[Mutation], exec: bool, last: &RwLock<Held>) -> Vec<u8> {
    let mut out = Vec::new();
    if exec {
        resp::push_array_len(&mut out, batch.len());
    }
    for (name, value) in batch {
        if let Some(v) = value {
            let mut held = last.write().unwrap_or_else(PoisonError::into_inner);
            held.value.clear();
            held.value.extend_from_slice(v);
        }
        if name.eq_ignore_ascii_case(b"incr") {
            // A read-modify-write under the lock, as any store's INCR is.
            let n = {
                let mut held = last.write().unwrap_or_else(PoisonError::into_inner);
                held.counter += 1;
                held.counter
            };
            resp::push_int(&mut out, n);
        } else {
            resp::push_ok(&mut out);
        }
    }
    out
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(sock), Some(port)) = (args.get(1), args.get(2).and_then(|p| p.parse::<u16>().ok()))
    else {
        eprintln!("usage: resp_floor <unix-socket> <tcp-port>");
        std::process::exit(2);
    };
    let mut poll = Poll::new()?;
    let _ = std::fs::remove_file(sock);
    let mut unix = UnixListener::bind(sock)?;
    let mut tcp = TcpListener::bind(([127, 0, 0, 1], port).into())?;
    poll.registry()
        .register(&mut unix, UNIX, Interest::READABLE)?;
    poll.registry()
        .register(&mut tcp, TCP, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let wake_pending = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Vec<(usize, Vec<u8>)>>();
    // One single-thread pool per thread, as kvs's store pool: a shared
    // queue wakes a second idle thread on every job.
    let pools: Vec<threadpool::ThreadPool> = (0..POOL_THREADS)
        .map(|_| threadpool::ThreadPool::new(1))
        .collect();
    let mut next_pool = 0usize;
    let last = Arc::new(RwLock::new(Held {
        value: b"xxx".to_vec(),
        counter: 0,
    }));
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut next = 3usize;
    let mut events = Events::with_capacity(1024);
    // One read buffer, zeroed once.
    let mut chunk = vec![0u8; 65536];
    loop {
        poll.poll(&mut events, None)?;
        let mut ready = Vec::new();
        for ev in events.iter() {
            match ev.token() {
                UNIX | TCP => loop {
                    let accepted: std::io::Result<Box<dyn Stream>> = if ev.token() == UNIX {
                        unix.accept().map(|(s, _)| Box::new(s) as Box<dyn Stream>)
                    } else {
                        tcp.accept().map(|(s, _)| {
                            let _ = s.set_nodelay(true);
                            Box::new(s) as Box<dyn Stream>
                        })
                    };
                    match accepted {
                        Ok(mut stream) => {
                            poll.registry().register(
                                &mut stream,
                                Token(next),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            conns.insert(
                                next,
                                Conn {
                                    stream,
                                    inbuf: Vec::new(),
                                    out: Vec::new(),
                                    busy: false,
                                    multi: None,
                                    readable: true,
                                },
                            );
                            next += 1;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                },
                WAKER => {}
                Token(t) => {
                    if ev.is_readable() || ev.is_read_closed() {
                        if let Some(c) = conns.get_mut(&t) {
                            c.readable = true;
                        }
                    }
                    ready.push(t);
                }
            }
        }
        wake_pending.store(false, Ordering::SeqCst);
        for (id, replies) in rx.try_iter().flatten() {
            if let Some(c) = conns.get_mut(&id) {
                c.out.extend_from_slice(&replies);
                c.busy = false;
                ready.push(id);
            }
        }
        ready.sort_unstable();
        ready.dedup();
        // This turn's jobs: (connection, its mutations, whether an EXEC).
        let mut turn: Vec<(usize, Vec<Mutation>, bool)> = Vec::new();
        for id in ready {
            let Some(c) = conns.get_mut(&id) else {
                continue;
            };
            let mut closed = false;
            while c.readable {
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        c.inbuf.extend_from_slice(&chunk[..n]);
                        // A short read emptied the socket: no read to
                        // learn that it would block (kvs's rule too).
                        if n < chunk.len() {
                            c.readable = false;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => c.readable = false,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            // Replies waiting from before (a job's, just back) leave now.
            let fresh = c.out.is_empty();
            if !c.busy {
                // Take whole requests: reads answered here, mutations
                // batched for one pool job; a read after a mutation waits
                // for the batch, to keep replies in order.
                let mut used = 0;
                let mut batch: Vec<Mutation> = Vec::new();
                let mut exec = false;
                loop {
                    let args = match resp::parse(&c.inbuf[used..]) {
                        Parsed::Request(args, len) => {
                            let name = args.first().map(|a| a.to_vec());
                            let value = (args.len() >= 3).then(|| args[args.len() - 1].to_vec());
                            (name, value, len)
                        }
                        Parsed::Inline(args, len) => (args.into_iter().next(), None, len),
                        Parsed::Incomplete | Parsed::Error(_) => break,
                    };
                    let (Some(name), value, len) = args else {
                        used += args.2;
                        continue;
                    };
                    if let Some(queued) = c.multi.as_mut() {
                        used += len;
                        if name.eq_ignore_ascii_case(b"exec") {
                            batch = std::mem::take(queued);
                            c.multi = None;
                            exec = true;
                            break;
                        }
                        queued.push((name, value));
                        resp::push_simple(&mut c.out, "QUEUED");
                        continue;
                    }
                    if name.eq_ignore_ascii_case(b"multi") {
                        if !batch.is_empty() {
                            break;
                        }
                        used += len;
                        c.multi = Some(Vec::new());
                        resp::push_ok(&mut c.out);
                        continue;
                    }
                    let read = name.eq_ignore_ascii_case(b"get")
                        || name.eq_ignore_ascii_case(b"ping")
                        || name.eq_ignore_ascii_case(b"config");
                    if read && !batch.is_empty() {
                        break;
                    }
                    used += len;
                    if name.eq_ignore_ascii_case(b"get") {
                        let held = last.read().unwrap_or_else(PoisonError::into_inner);
                        resp::push_bulk(&mut c.out, &held.value);
                    } else if name.eq_ignore_ascii_case(b"config") {
                        resp::push_array_len(&mut c.out, 0);
                    } else if read {
                        resp::push_simple(&mut c.out, "PONG");
                    } else {
                        batch.push((name, value));
                    }
                }
                c.inbuf.drain(..used);
                if !batch.is_empty() || exec {
                    c.busy = true;
                    turn.push((id, batch, exec));
                }
            }
            // With a job out, what this read answered before it leaves with
            // the job's replies.
            let hold = c.busy && fresh;
            while !hold && !c.out.is_empty() {
                match c.stream.write(&c.out) {
                    Ok(n) => {
                        c.out.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                if let Some(mut c) = conns.remove(&id) {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
            }
        }
        // The turn's batches go to the pool as one job, two above
        // SPLIT_AT, each to an idle thread (the first if both are), as kvs
        // hands its store threads a turn's operations.
        let rest = (turn.len() > SPLIT_AT).then(|| turn.split_off(turn.len() / 2));
        for part in std::iter::once(turn).chain(rest) {
            if part.is_empty() {
                continue;
            }
            let idle = pools
                .iter()
                .position(|p| p.active_count() + p.queued_count() == 0);
            let i = idle.unwrap_or_else(|| {
                next_pool = (next_pool + 1) % POOL_THREADS;
                next_pool
            });
            let (tx, waker, pending) = (tx.clone(), waker.clone(), wake_pending.clone());
            let last = last.clone();
            pools[i].execute(move || {
                let replies = part
                    .iter()
                    .map(|(id, batch, exec)| (*id, mutate(batch, *exec, &last)))
                    .collect();
                if tx.send(replies).is_ok() && !pending.swap(true, Ordering::SeqCst) {
                    let _ = waker.wake();
                }
            });
        }
    }
}
