//! kvs's etcd client (`kvs::etcd`) against a real three-member cluster:
//! transactions with compares, a paged range at one revision, a watch from
//! a revision that sees every change in order, the cluster's refusal of
//! transactions over `--max-txn-ops`, and a leader killed during writes
//! (no acknowledged write lost, the client moves to another member); and
//! kvs nodes (the real binaries) sharing one dataset on a cluster.
//! Each test says SKIPPED where etcd is not installed.

mod common;

use common::etcd::Cluster;
use common::resp::RespServer;
use common::{session, Server};
use kvs::etcd::{Compare, Etcd, Event, Op, OpResult, WatchMessage};
use kvs::protocol::fifo::Request;
use std::time::{Duration, Instant};

/// A three-member cluster taking 256-operation transactions and the
/// `--store` URL of it; `None` (SKIPPED) where etcd is missing.
fn shared(test: &str) -> Option<(Cluster, String)> {
    let cluster = Cluster::start(test, 3, &["--max-txn-ops", "256"])?;
    let url = format!("etcd://{}", cluster.endpoints());
    Some((cluster, url))
}

fn client(c: &Cluster) -> Etcd {
    Etcd::new(c.endpoint_list(), Duration::from_secs(2))
}

#[test]
fn transactions_ranges_and_watches_on_a_real_cluster() {
    let Some(cluster) = Cluster::start("transactions_ranges_and_watches_on_a_real_cluster", 3, &[])
    else {
        return;
    };
    let etcd = client(&cluster);
    let put = |k: &str, v: &str| Op::Put(k.as_bytes().to_vec(), v.as_bytes().to_vec());
    let first = etcd
        .txn(&[], &[put("t/a", "1"), put("t/b", "2"), put("other", "x")])
        .unwrap();
    assert!(first.succeeded);
    assert_eq!(first.results[0], OpResult::Put { prev: None });
    let watch_from = first.revision + 1;
    let mut watch = etcd.watch(b"t/", watch_from).unwrap();
    watch.set_read_timeout(Some(Duration::from_secs(10)));

    // A compare on the revision a key was last changed at.
    let a = etcd.get(b"t/a").unwrap().unwrap();
    assert_eq!(a.mod_revision, first.revision);
    let stale = etcd
        .txn(
            &[Compare::ModRevision(b"t/a".to_vec(), a.mod_revision - 1)],
            &[put("t/a", "never")],
        )
        .unwrap();
    assert!(!stale.succeeded);
    let cas = etcd
        .txn(
            &[Compare::ModRevision(b"t/a".to_vec(), a.mod_revision)],
            &[
                Op::Swap(b"t/a".to_vec(), b"3".to_vec()),
                Op::Delete(b"t/b".to_vec()),
                Op::Delete(b"t/none".to_vec()),
            ],
        )
        .unwrap();
    assert!(cas.succeeded);
    assert_eq!(
        cas.results,
        vec![
            OpResult::Put {
                prev: Some(b"1".to_vec())
            },
            OpResult::Deleted(1),
            OpResult::Deleted(0)
        ]
    );
    // Absent: compared at revision 0.
    let created = etcd
        .txn(
            &[Compare::ModRevision(b"t/c".to_vec(), 0)],
            &[put("t/c", "4")],
        )
        .unwrap();
    assert!(created.succeeded);

    // The watch tells both transactions, in order, each whole.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match watch.next_message().unwrap() {
            Some(WatchMessage::Events { events, .. }) => seen.extend(events),
            Some(_) => {}
            None => panic!("the watch ended"),
        }
    }
    let shown: Vec<String> = seen
        .iter()
        .map(|e| match e {
            Event::Put(kv) => format!(
                "put {}={}",
                String::from_utf8_lossy(&kv.key),
                String::from_utf8_lossy(&kv.value)
            ),
            Event::Delete { key, .. } => format!("del {}", String::from_utf8_lossy(key)),
        })
        .collect();
    assert_eq!(shown, ["put t/a=3", "del t/b", "put t/c=4"]);

    // A range of the prefix at one revision, paged.
    let many: Vec<Op> = (0..300)
        .map(|i| put(&format!("p/{i:04}"), &i.to_string()))
        .collect();
    for chunk in many.chunks(100) {
        assert!(etcd.txn(&[], chunk).unwrap().succeeded);
    }
    let (at, kvs) = etcd.range_prefix(b"p/").unwrap();
    assert_eq!(kvs.len(), 300);
    assert!(kvs.windows(2).all(|w| w[0].key < w[1].key));
    assert!(at >= kvs.iter().map(|k| k.mod_revision).max().unwrap());
    assert_eq!(etcd.range_prefix(b"t/").unwrap().1.len(), 2);
    // Every key of a prefix at once.
    let gone = etcd.txn(&[], &[Op::DeletePrefix(b"p/".to_vec())]).unwrap();
    assert_eq!(gone.results, vec![OpResult::Deleted(300)]);
}

#[test]
fn the_cluster_must_take_transactions_of_256_operations() {
    let Some(small) = Cluster::start(
        "the_cluster_must_take_transactions_of_256_operations",
        1,
        &[],
    ) else {
        return;
    };
    let e = client(&small).check_txn_ops(256, b"kvs-probe").unwrap_err();
    assert!(e.to_string().contains("too many operations"), "{e}");
    drop(small);
    let Some(big) = Cluster::start(
        "the_cluster_must_take_transactions_of_256_operations",
        1,
        &["--max-txn-ops", "256"],
    ) else {
        return;
    };
    client(&big).check_txn_ops(256, b"kvs-probe").unwrap();
}

#[test]
fn a_killed_member_loses_no_acknowledged_write() {
    let Some(mut cluster) = Cluster::start("a_killed_member_loses_no_acknowledged_write", 3, &[])
    else {
        return;
    };
    let etcd = client(&cluster);
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..300 {
        if i == 100 {
            // The member the client talks to first (and maybe the leader).
            cluster.kill(0);
        }
        let k = format!("w/{i:04}").into_bytes();
        match etcd.txn(&[], &[Op::Put(k.clone(), b"v".to_vec())]) {
            Ok(r) if r.succeeded => acked.push(k),
            _ => refused += 1,
        }
    }
    // An election takes about a second: a few writes may be refused, none
    // acknowledged and then lost.
    assert!(
        acked.len() >= 250,
        "{} acknowledged, {refused} refused",
        acked.len()
    );
    let (_, kvs) = etcd.range_prefix(b"w/").unwrap();
    let stored: std::collections::HashSet<Vec<u8>> = kvs.into_iter().map(|k| k.key).collect();
    for k in &acked {
        assert!(stored.contains(k), "lost {}", String::from_utf8_lossy(k));
    }
    cluster.restart(0);
    cluster.wait_ready(0);
}

/// kvs nodes on one etcd cluster share one dataset, and every change made
/// through any node reaches subscribers on every node: a FIFO subscriber
/// on node A hears a RESP SET made on node B and a job file's WRITE on
/// node C (the same 82-byte notifications as on one node); a RESP keyspace
/// subscriber on B hears a FIFO client's WRITE on A; a 256-pair MSET on A
/// is on B whole; what kvs cannot run on etcd yet says so.
#[test]
fn nodes_on_one_cluster_share_the_dataset_and_hear_every_change() {
    let Some((_cluster, url)) =
        shared("nodes_on_one_cluster_share_the_dataset_and_hear_every_change")
    else {
        return;
    };
    let a = RespServer::start(&[], &["--store", &url]);
    let b = RespServer::start(&[], &["--store", &url]);
    let mut on_b = b.raw();
    assert_eq!(on_b.ask(&["SET", "k", "from-b"]), "+OK\r\n");
    // A's cache has it once B's SET was answered? Not necessarily: wait
    // (bounded) for A's feed.
    let mut on_a = a.raw();
    on_a.ask_until(&["GET", "k"], "$6\r\nfrom-b\r\n");
    let mut fifo_a = session("sa", &a.server.fifo);
    assert_eq!(fifo_a.ask(Request::Subscribe("k".into())), b'1');
    assert_eq!(on_b.ask(&["SET", "k", "again"]), "+OK\r\n");
    assert_eq!(fifo_a.note(), ("k".into(), "again".into()));
    // A job file on a third node.
    let c = Server::start(&[("w.job", "WRITE [(k,fromjob)]\n")], &["--store", &url]);
    assert_eq!(fifo_a.note(), ("k".into(), "fromjob".into()));
    drop(c);

    // RESP keyspace subscribers on B hear FIFO writes made on A.
    let mut sub_b = b.raw();
    sub_b.cmd(&["SUBSCRIBE", "__keyspace@0__:k2"]);
    sub_b.reply();
    assert_eq!(fifo_a.ask(common::write("k2", "viafifo")), b'0');
    assert_eq!(
        String::from_utf8_lossy(&sub_b.reply()),
        "*3\r\n$7\r\nmessage\r\n$17\r\n__keyspace@0__:k2\r\n$3\r\nset\r\n"
    );
    // The writer reads its own write at once, on its own node.
    assert_eq!(on_a.ask(&["GET", "k2"]), "$7\r\nviafifo\r\n");

    // 256 pairs, one change: on B whole.
    let mut mset = vec!["MSET".to_string()];
    for i in 0..256 {
        mset.push(format!("m{i:03}"));
        mset.push(format!("v{i}"));
    }
    let mset: Vec<&str> = mset.iter().map(String::as_str).collect();
    assert_eq!(on_a.ask(&mset), "+OK\r\n");
    let start = Instant::now();
    loop {
        let n = on_b.ask(&["DBSIZE"]);
        if n == ":258\r\n" {
            break;
        }
        // Never part of it.
        assert!(n == ":2\r\n", "B sees {n}");
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    // DEL and FLUSHALL through etcd too.
    assert_eq!(on_b.ask(&["DEL", "m000", "m001", "nope"]), ":2\r\n");
    assert_eq!(on_a.ask(&["INCR", "n"]), ":1\r\n");
    assert_eq!(on_a.ask(&["FLUSHALL"]), "+OK\r\n");
    assert_eq!(on_a.ask(&["DBSIZE"]), ":0\r\n");
    assert!(a.server.log().contains("etcd at"), "{}", a.server.log());
    let info = on_a.ask(&["INFO"]);
    assert!(info.contains("kvs_store:etcd\r\n"), "{info}");
    assert!(info.contains("kvs_store_prefix:kvs/\r\n"), "{info}");
    assert!(
        info.contains("kvs_store_feed_lag_revisions:0\r\n"),
        "{info}"
    );
}

/// A cluster that refuses 256-operation transactions is named, with the
/// setting to change, and kvs does not start.
#[test]
fn a_node_refuses_a_cluster_without_max_txn_ops() {
    let Some(cluster) = Cluster::start("a_node_refuses_a_cluster_without_max_txn_ops", 1, &[])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_kvs(&[
        dir.path().to_str().unwrap(),
        "1",
        "1",
        "--store",
        &format!("etcd://{}", cluster.endpoints()),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("--max-txn-ops 256"), "{}", out.stderr);
}

/// kill -9 of a kvs node while it writes: every write it acknowledged is in
/// the dataset (etcd had it before the answer), a node started in its
/// place has all of it, and its new subscribers hear changes made on
/// another node. SIGUSR1 on one node disconnects only its own clients.
#[test]
fn a_killed_node_loses_no_acknowledged_write_and_its_replacement_catches_up() {
    let Some((_cluster, url)) =
        shared("a_killed_node_loses_no_acknowledged_write_and_its_replacement_catches_up")
    else {
        return;
    };
    let a = RespServer::start(&[], &["--store", &url]);
    let mut b = RespServer::start(&[], &["--store", &url]);
    let mut writer = b.raw();
    let mut acked = Vec::new();
    // Pipelined, so that some are in flight when the node dies.
    for i in 0..200 {
        writer.cmd(&["SET", &format!("w{i:03}"), "v"]);
    }
    for i in 0..200 {
        if i == 120 {
            b.server.child.kill().unwrap();
            let _ = b.server.child.wait();
            break;
        }
        assert_eq!(writer.reply(), b"+OK\r\n");
        acked.push(format!("w{i:03}"));
    }
    // A node in its place has every acknowledged write.
    let b2 = RespServer::start(&[], &["--store", &url]);
    let mut on_b2 = b2.raw();
    for k in &acked {
        assert_eq!(on_b2.ask(&["GET", k]), "$1\r\nv\r\n", "{k}");
    }
    // Its new subscribers hear changes made on A.
    let mut fifo_b2 = session("sb", &b2.server.fifo);
    assert_eq!(fifo_b2.ask(Request::Subscribe("w000".into())), b'1');
    let mut on_a = a.raw();
    assert_eq!(on_a.ask(&["SET", "w000", "changed"]), "+OK\r\n");
    assert_eq!(fifo_b2.note(), ("w000".into(), "changed".into()));
    // SIGUSR1 on A: A's clients go, B2's stay.
    a.server.signal(nix::sys::signal::Signal::SIGUSR1);
    assert!(on_a.closed_by_server());
    assert_eq!(on_b2.ask(&["GET", "w000"]), "$7\r\nchanged\r\n");
    assert_eq!(on_a_fresh(&a), "$7\r\nchanged\r\n");
}

fn on_a_fresh(a: &RespServer) -> String {
    a.raw().ask(&["GET", "w000"])
}

/// With two of three members stopped there is no quorum: a change is
/// refused (RESP -TRYAGAIN, FIFO '1') within a bound, not made, and reads
/// go on from the node's copy; with the members back, changes are taken
/// again.
#[test]
fn without_quorum_changes_are_refused_and_reads_go_on() {
    let Some((mut cluster, url)) = shared("without_quorum_changes_are_refused_and_reads_go_on")
    else {
        return;
    };
    let a = RespServer::start(&[], &["--store", &url]);
    let mut on_a = a.raw();
    assert_eq!(on_a.ask(&["SET", "k", "before"]), "+OK\r\n");
    let mut fifo = session("q", &a.server.fifo);
    cluster.kill(1);
    cluster.kill(2);
    let start = Instant::now();
    on_a.cmd(&["SET", "k", "lost"]);
    let r = on_a
        .reply_within(Duration::from_secs(30))
        .expect("an answer within 30 s");
    let r = String::from_utf8_lossy(&r).into_owned();
    assert!(r.starts_with("-TRYAGAIN"), "{r}");
    eprintln!("refused after {:?}: {r}", start.elapsed());
    assert_eq!(fifo.ask(common::write("k", "lost")), b'1');
    assert_eq!(on_a.ask(&["GET", "k"]), "$6\r\nbefore\r\n");
    // INFO says why changes are refused, so reads may be behind.
    let info = on_a.ask(&["INFO", "store"]);
    let last = info
        .lines()
        .find_map(|l| l.strip_prefix("kvs_store_last_error:"))
        .unwrap_or_default();
    assert!(!last.is_empty(), "{info}");
    cluster.restart(1);
    cluster.restart(2);
    cluster.wait_ready(1);
    let start = Instant::now();
    loop {
        if on_a.ask(&["SET", "k", "after"]) == "+OK\r\n" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "changes never taken again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(on_a.ask(&["GET", "k"]), "$5\r\nafter\r\n");
    let info = on_a.ask(&["INFO", "store"]);
    assert!(info.contains("kvs_store_last_error:\r\n"), "{info}");
    // The feed's watch comes back too (a change the node made itself may
    // be answered before: its copy was at the revision just before it).
    on_a.ask_until_contains(
        &["INFO", "store"],
        "kvs_store_following:1",
        Duration::from_secs(30),
    );
}

/// Counters on a shared dataset: INCR from clients of two nodes racing,
/// none lost (each is compare-and-swap on the key's revision in etcd);
/// APPEND and SET's options too; what is not there yet says so.
#[test]
fn counters_racing_on_two_nodes_lose_nothing() {
    let Some((_cluster, url)) = shared("counters_racing_on_two_nodes_lose_nothing") else {
        return;
    };
    let a = RespServer::start(&[], &["--store", &url]);
    let b = RespServer::start(&[], &["--store", &url]);
    let workers: Vec<_> = [&a, &b, &a, &b]
        .iter()
        .map(|node| {
            let mut c = node.raw();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let r = c.ask(&["INCR", "counter"]);
                    assert!(r.starts_with(':'), "{r}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut on_a = a.raw();
    let mut on_b = b.raw();
    // Each node's copy has the last INCR once its feed brings it (the
    // last may have been made through the other node).
    on_a.ask_until(&["GET", "counter"], "$3\r\n200\r\n");
    on_b.ask_until(&["GET", "counter"], "$3\r\n200\r\n");
    assert_eq!(on_a.ask(&["APPEND", "s", "ab"]), ":2\r\n");
    assert_eq!(on_b.ask(&["APPEND", "s", "cd"]), ":4\r\n");
    assert_eq!(on_a.ask(&["SET", "s", "x", "NX"]), "$-1\r\n");
    assert_eq!(on_a.ask(&["SET", "s", "y", "XX", "GET"]), "$4\r\nabcd\r\n");
    assert_eq!(on_a.ask(&["GETDEL", "s"]), "$1\r\ny\r\n");
    assert_eq!(on_b.ask(&["EXISTS", "s"]).len(), 4);
    let ex = on_a.ask(&["SET", "t", "1", "EX", "100"]);
    assert!(ex.starts_with("-TRYAGAIN") && ex.contains("expiry"), "{ex}");
    assert_eq!(on_a.ask(&["GET", "t"]), "$-1\r\n");
}

/// MULTI/EXEC on a shared dataset: one etcd transaction, atomic against
/// EXECs racing on another node; WATCH sees a change made through another
/// node; a command that needs every key is refused with its reason.
#[test]
fn transactions_span_nodes() {
    let Some((_cluster, url)) = shared("transactions_span_nodes") else {
        return;
    };
    let a = RespServer::start(&[], &["--store", &url]);
    let b = RespServer::start(&[], &["--store", &url]);
    // Racing EXECs of two INCRs each: every pair of replies is n, n + 1.
    let workers: Vec<_> = [&a, &b, &a, &b]
        .iter()
        .map(|node| {
            let mut c = node.raw();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    assert_eq!(c.ask(&["MULTI"]), "+OK\r\n");
                    assert_eq!(c.ask(&["INCR", "c"]), "+QUEUED\r\n");
                    assert_eq!(c.ask(&["INCR", "c"]), "+QUEUED\r\n");
                    let r = c.ask(&["EXEC"]);
                    let n: Vec<i64> = r
                        .split("\r\n")
                        .filter_map(|l| l.strip_prefix(':'))
                        .map(|n| n.parse().unwrap())
                        .collect();
                    assert!(r.starts_with("*2\r\n") && n[1] == n[0] + 1, "{r}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let (mut on_a, mut on_b) = (a.raw(), b.raw());
    // The last EXEC may have been made through B: A has it once its feed
    // brings it.
    on_a.ask_until(&["GET", "c"], "$3\r\n200\r\n");
    // Several keys at once, seen whole on the other node.
    assert_eq!(on_a.ask(&["MULTI"]), "+OK\r\n");
    for cmd in [&["SET", "x", "1"][..], &["SET", "y", "2"], &["DEL", "c"]] {
        assert_eq!(on_a.ask(cmd), "+QUEUED\r\n");
    }
    assert_eq!(on_a.ask(&["EXEC"]), "*3\r\n+OK\r\n+OK\r\n:1\r\n");
    on_b.ask_until(
        &["MGET", "x", "y", "c"],
        "*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n",
    );
    // WATCH: a change made through B (read at once, before A's copy may
    // have it) makes A's EXEC null; without one, it runs.
    assert_eq!(on_a.ask(&["WATCH", "w"]), "+OK\r\n");
    assert_eq!(on_b.ask(&["SET", "w", "from-b"]), "+OK\r\n");
    assert_eq!(on_a.ask(&["MULTI"]), "+OK\r\n");
    assert_eq!(on_a.ask(&["SET", "w", "from-a"]), "+QUEUED\r\n");
    assert_eq!(on_a.ask(&["EXEC"]), "*-1\r\n");
    assert_eq!(on_a.ask(&["GET", "w"]), "$6\r\nfrom-b\r\n");
    assert_eq!(on_a.ask(&["WATCH", "w"]), "+OK\r\n");
    assert_eq!(on_a.ask(&["MULTI"]), "+OK\r\n");
    assert_eq!(on_a.ask(&["SET", "w", "from-a"]), "+QUEUED\r\n");
    assert_eq!(on_a.ask(&["EXEC"]), "*1\r\n+OK\r\n");
    // Every key: refused, and nothing of it made.
    assert_eq!(on_a.ask(&["MULTI"]), "+OK\r\n");
    assert_eq!(on_a.ask(&["SET", "z", "1"]), "+QUEUED\r\n");
    assert_eq!(on_a.ask(&["KEYS", "*"]), "+QUEUED\r\n");
    let r = on_a.ask(&["EXEC"]);
    assert!(r.starts_with("-ERR") && r.contains("KEYS"), "{r}");
    assert_eq!(on_a.ask(&["EXISTS", "z"]), ":0\r\n");
}

/// A FIFO client on each node, named `name` and its index, subscribed to
/// `key` (a node's copy may not have the key yet: asked again until so).
fn subscribed_on_each(nodes: &[&RespServer], name: &str, key: &str) -> Vec<common::Session> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut s = session(&format!("{name}{i}"), &node.server.fifo);
            let start = Instant::now();
            while s.ask(Request::Subscribe(key.into())) != b'1' {
                assert!(start.elapsed() < Duration::from_secs(10));
                std::thread::sleep(Duration::from_millis(10));
            }
            s
        })
        .collect()
}

/// Writers on two nodes racing on one key: FIFO subscribers on both nodes
/// hear every change, in the same order (etcd's), and the last value they
/// hear is the key's value on both nodes.
#[test]
fn every_node_tells_one_keys_changes_in_one_order() {
    let Some((_cluster, url)) = shared("every_node_tells_one_keys_changes_in_one_order") else {
        return;
    };
    let a = RespServer::start(&[], &["--store", &url]);
    let b = RespServer::start(&[], &["--store", &url]);
    assert_eq!(a.raw().ask(&["SET", "k", "start"]), "+OK\r\n");
    let mut subs = subscribed_on_each(&[&a, &b], "o", "k");
    const EACH: usize = 40;
    let writers: Vec<_> = [("a1", &a), ("b1", &b), ("a2", &a), ("b2", &b)]
        .iter()
        .map(|(name, node)| {
            let mut c = node.raw();
            let name = name.to_string();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    assert_eq!(c.ask(&["SET", "k", &format!("{name}-{i}")]), "+OK\r\n");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let heard: Vec<Vec<String>> = subs
        .iter_mut()
        .map(|s| (0..4 * EACH).map(|_| s.note().1).collect())
        .collect();
    assert_eq!(heard[0], heard[1], "the two nodes told different orders");
    let last = heard[0].last().unwrap().clone();
    for node in [&a, &b] {
        assert_eq!(
            node.raw().ask(&["GET", "k"]),
            format!("${}\r\n{last}\r\n", last.len())
        );
    }
}

/// A change made through a node while its copy is at the revision just
/// before is applied there by the thread that made it (INFO counts them),
/// and the watch's copy of it is skipped: subscribers on that node hear
/// each change once, in order, as subscribers on another node do.
#[test]
fn a_nodes_own_change_is_applied_at_once_and_told_once() {
    let Some((_cluster, url)) = shared("a_nodes_own_change_is_applied_at_once_and_told_once")
    else {
        return;
    };
    let a = RespServer::start(&[], &["--store", &url]);
    let b = RespServer::start(&[], &["--store", &url]);
    let mut on_a = a.raw();
    assert_eq!(on_a.ask(&["SET", "k", "start"]), "+OK\r\n");
    let mut subs = subscribed_on_each(&[&a, &b], "own", "k");
    const N: usize = 60;
    for i in 0..N {
        assert_eq!(on_a.ask(&["SET", "k", &format!("v{i}")]), "+OK\r\n");
        // Read back at once: the copy has it when the change is answered.
        let want = format!("v{i}");
        assert_eq!(
            on_a.ask(&["GET", "k"]),
            format!("${}\r\n{want}\r\n", want.len())
        );
    }
    // A last change from the other node: anything told twice on A would
    // come before it.
    assert_eq!(b.raw().ask(&["SET", "k", "end"]), "+OK\r\n");
    let want: Vec<String> = (0..N)
        .map(|i| format!("v{i}"))
        .chain(["end".to_string()])
        .collect();
    for s in &mut subs {
        let heard: Vec<String> = (0..=N).map(|_| s.note().1).collect();
        assert_eq!(heard, want);
    }
    let info = on_a.ask(&["INFO", "store"]);
    let at_once: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("kvs_store_changes_applied_at_once:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {info}"));
    assert!(
        at_once > 0 && at_once <= N as u64 + 1,
        "{at_once} of {} changes applied at once",
        N + 1
    );
}

/// The etcd leader is killed while clients of a node write: writes stall
/// for the election and go on, and no write the node acknowledged is
/// missing afterwards (read on another node).
#[test]
fn a_killed_member_under_a_node_loses_no_acknowledged_write() {
    let Some((mut cluster, url)) =
        shared("a_killed_member_under_a_node_loses_no_acknowledged_write")
    else {
        return;
    };
    let a = RespServer::start(&[], &["--store", &url]);
    let mut c = a.raw();
    let mut acked = Vec::new();
    for i in 0..300 {
        if i == 100 {
            let leader = cluster.leader();
            cluster.kill(leader);
        }
        let k = format!("x{i:03}");
        c.cmd(&["SET", &k, "v"]);
        if c.reply_within(Duration::from_secs(30)).as_deref() == Some(&b"+OK\r\n"[..]) {
            acked.push(k);
        }
    }
    assert!(acked.len() >= 250, "only {} acknowledged", acked.len());
    let b = RespServer::start(&[], &["--store", &url]);
    let mut on_b = b.raw();
    for k in &acked {
        assert_eq!(on_b.ask(&["GET", k]), "$1\r\nv\r\n", "{k} lost");
    }
}

/// A node whose etcd member was down while the history it needs was
/// compacted away: its watch cannot resume, so it reloads the dataset,
/// tells its subscribers of the keys that changed meanwhile (and only of
/// those), logs a WARN with the gap, and follows changes again.
#[test]
fn a_node_behind_a_compacted_history_reloads_and_tells_what_changed() {
    let Some((mut cluster, _)) =
        shared("a_node_behind_a_compacted_history_reloads_and_tells_what_changed")
    else {
        return;
    };
    // A talks to member 0 alone; B to the other two.
    let a = RespServer::start(
        &[],
        &["--store", &format!("etcd://{}", cluster.endpoint(0))],
    );
    let b_url = format!("etcd://{},{}", cluster.endpoint(1), cluster.endpoint(2));
    let b = RespServer::start(&[], &["--store", &b_url]);
    let (mut on_a, mut on_b) = (a.raw(), b.raw());
    for (k, v) in [("k1", "a"), ("k2", "b"), ("k3", "c")] {
        assert_eq!(on_b.ask(&["SET", k, v]), "+OK\r\n");
    }
    on_a.ask_until(
        &["MGET", "k1", "k2", "k3"],
        "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n",
    );
    let mut sub = session("compacted", &a.server.fifo);
    for k in ["k1", "k2", "k3"] {
        assert_eq!(sub.ask(Request::Subscribe(k.into())), b'1', "{k}");
    }
    cluster.kill(0);
    // If member 0 led, B's first change may meet the election: refused or
    // unconfirmed (TRYAGAIN), then made once a leader is elected.
    let start = Instant::now();
    loop {
        let reply = on_b.ask(&["SET", "k1", "a2"]);
        if reply == "+OK\r\n" {
            break;
        }
        assert!(reply.starts_with("-TRYAGAIN"), "{reply}");
        assert!(start.elapsed() < Duration::from_secs(20), "B never wrote");
    }
    assert_eq!(on_b.ask(&["DEL", "k2"]), ":1\r\n");
    // k3 changes and changes back: the same value, nothing to tell.
    assert_eq!(on_b.ask(&["SET", "k3", "c2"]), "+OK\r\n");
    assert_eq!(on_b.ask(&["SET", "k3", "c"]), "+OK\r\n");
    let etcd = Etcd::new(
        vec![cluster.endpoint(1), cluster.endpoint(2)],
        Duration::from_secs(2),
    );
    let (revision, _) = etcd.range_prefix(b"kvs/").expect("range");
    etcd.compact(revision).expect("compact");
    cluster.restart(0);
    cluster.wait_ready(0);
    a.server
        .wait_log_within("compacted its history", Duration::from_secs(20));
    let mut heard = vec![sub.note(), sub.note()];
    heard.sort();
    assert_eq!(
        heard,
        [
            ("k1".to_string(), "a2".to_string()),
            ("k2".to_string(), "DELETED".to_string())
        ]
    );
    // Following again: the next thing heard is a change made now.
    assert_eq!(on_b.ask(&["SET", "k1", "a3"]), "+OK\r\n");
    assert_eq!(sub.note(), ("k1".into(), "a3".into()));
    assert_eq!(on_a.ask(&["GET", "k2"]), "$-1\r\n");
}

/// `--store-reads linearizable`: a read on node A right after a write
/// acknowledged by node B sees it, every time (a cache read may not yet);
/// FIFO READs and job READs too; without quorum such reads are refused
/// rather than answered stale, while a cache-reading node answers.
#[test]
fn linearizable_reads_see_every_acknowledged_write() {
    let Some((mut cluster, url)) = shared("linearizable_reads_see_every_acknowledged_write") else {
        return;
    };
    let a = RespServer::start(&[], &["--store", &url, "--store-reads", "linearizable"]);
    let b = RespServer::start(&[], &["--store", &url]);
    let (mut on_a, mut on_b) = (a.raw(), b.raw());
    let mut fifo_a = session("lin", &a.server.fifo);
    for i in 0..100 {
        let v = format!("v{i}");
        assert_eq!(on_b.ask(&["SET", "k", &v]), "+OK\r\n");
        let want = format!("${}\r\n{v}\r\n", v.len());
        assert_eq!(on_a.ask(&["GET", "k"]), want, "write {i}");
        assert_eq!(on_b.ask(&["SET", "f", &v]), "+OK\r\n");
        let answer = fifo_a
            .conn
            .request(&Request::Read("f".into()))
            .expect("FIFO READ");
        assert_eq!(answer.value.as_deref(), Some(v.as_str()), "write {i}");
    }
    let info = on_a.ask(&["INFO"]);
    assert!(info.contains("kvs_store_reads:linearizable"), "{info}");
    cluster.kill(1);
    cluster.kill(2);
    on_a.cmd(&["GET", "k"]);
    let r = on_a
        .reply_within(Duration::from_secs(30))
        .expect("an answer within 30 s");
    let r = String::from_utf8_lossy(&r).into_owned();
    assert!(r.starts_with("-TRYAGAIN"), "{r}");
    assert_eq!(on_b.ask(&["GET", "k"]), "$3\r\nv99\r\n");
}

/// The member under a node's feed frozen (its connections open and
/// silent, as behind a partition it has not noticed): the node moves its
/// watch to another member, and its subscribers hear a change made
/// through another node within a bound instead of never.
#[test]
fn a_node_leaves_a_silent_member_for_another() {
    let Some((cluster, url)) = shared("a_node_leaves_a_silent_member_for_another") else {
        return;
    };
    // A's feed watches on the first member of its list.
    let a = RespServer::start(&[], &["--store", &url]);
    let b_url = format!("etcd://{},{}", cluster.endpoint(1), cluster.endpoint(2));
    let b = RespServer::start(&[], &["--store", &b_url]);
    let (mut on_a, mut on_b) = (a.raw(), b.raw());
    assert_eq!(on_b.ask(&["SET", "k", "v0"]), "+OK\r\n");
    on_a.ask_until(&["GET", "k"], "$2\r\nv0\r\n");
    let mut sub = session("silent", &a.server.fifo);
    assert_eq!(sub.ask(Request::Subscribe("k".into())), b'1');
    cluster.freeze(0, true);
    let start = Instant::now();
    // If member 0 led, the other two elect a leader first.
    while on_b.ask(&["SET", "k", "v1"]) != "+OK\r\n" {
        assert!(start.elapsed() < Duration::from_secs(20), "B never wrote");
        std::thread::sleep(Duration::from_millis(100));
    }
    let heard = kvs::client::read_notification_within(&mut sub.notif, Duration::from_secs(20));
    cluster.freeze(0, false);
    assert_eq!(heard.expect("A heard nothing"), ("k".into(), "v1".into()));
    eprintln!("heard on A {:?} after the freeze", start.elapsed());
}

/// A value over etcd's request limit (`--max-request-bytes`, 1.5 MiB by
/// default) gets an error that names the limit, not a TRYAGAIN that would
/// never succeed; nothing is made (not even for a WATCH), and the node
/// goes on.
#[test]
fn a_value_over_etcds_request_limit_is_refused_clearly() {
    let Some((_cluster, url)) = shared("a_value_over_etcds_request_limit_is_refused_clearly")
    else {
        return;
    };
    let a = RespServer::start(&[], &["--store", &url]);
    let mut on_a = a.raw();
    let big = "x".repeat(2 << 20);
    let r = on_a.ask(&["SET", "big", &big]);
    assert!(
        r.starts_with("-ERR") && r.contains("max-request-bytes"),
        "{r}"
    );
    assert_eq!(on_a.ask(&["EXISTS", "big"]), ":0\r\n");
    let r = on_a.ask(&["MSET", "a", "1", "b", &big]);
    assert!(
        r.starts_with("-ERR") && r.contains("max-request-bytes"),
        "{r}"
    );
    assert_eq!(on_a.ask(&["SET", "small", "ok"]), "+OK\r\n");
    let mut fifo = session("big", &a.server.fifo);
    assert_eq!(fifo.ask(common::write("k", "v")), b'0');
    // A read-modify-write refused: computed on the node's copy, then put
    // back. A transaction watching its key must not take it for a change.
    let mut watcher = a.raw();
    assert_eq!(watcher.ask(&["WATCH", "small"]), "+OK\r\n");
    let r = on_a.ask(&["APPEND", "small", &big]);
    assert!(r.starts_with("-ERR"), "{r}");
    assert_eq!(on_a.ask(&["GET", "small"]), "$2\r\nok\r\n");
    assert_eq!(watcher.ask(&["MULTI"]), "+OK\r\n");
    assert_eq!(watcher.ask(&["GET", "small"]), "+QUEUED\r\n");
    assert_eq!(watcher.ask(&["EXEC"]), "*1\r\n$2\r\nok\r\n");
    // A change that is made still counts.
    assert_eq!(watcher.ask(&["WATCH", "small"]), "+OK\r\n");
    assert_eq!(on_a.ask(&["APPEND", "small", "!"]), ":3\r\n");
    assert_eq!(watcher.ask(&["MULTI"]), "+OK\r\n");
    assert_eq!(watcher.ask(&["GET", "small"]), "+QUEUED\r\n");
    assert_eq!(watcher.ask(&["EXEC"]), "*-1\r\n");
}

/// Changes made at the same time through one node share etcd transactions
/// (group commit: fewer revisions than changes), and still each is made
/// and answered with its own result (a DEL counts its own key), and every
/// one is heard on another node, each key's in the order made.
#[test]
fn concurrent_changes_through_one_node_share_transactions_and_none_is_lost() {
    let Some((cluster, url)) =
        shared("concurrent_changes_through_one_node_share_transactions_and_none_is_lost")
    else {
        return;
    };
    let a = RespServer::start(&[], &["--store", &url]);
    let b = RespServer::start(&[], &["--store", &url]);
    let mut listener = b.raw();
    listener.cmd(&["PSUBSCRIBE", "__keyspace@0__:g*"]);
    assert!(listener.reply().starts_with(b"*3\r\n$10\r\npsubscribe"));
    let etcd = client(&cluster);
    let before = etcd.current_revision(b"kvs/").unwrap();
    const CLIENTS: usize = 16;
    const EACH: usize = 40;
    let writers: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let mut c = a.raw();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let k = format!("g{t}-{i}");
                    assert_eq!(c.ask(&["SET", &k, "v"]), "+OK\r\n");
                    assert_eq!(c.ask(&["DEL", &k, "absent"]), ":1\r\n", "{k}");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let changes = (CLIENTS * EACH * 2) as i64;
    let revisions = etcd.current_revision(b"kvs/").unwrap() - before;
    assert!(
        revisions < changes,
        "{changes} changes took {revisions} revisions: none shared a transaction"
    );
    // Heard on B: every change, each key's set before its del.
    let mut last: std::collections::HashMap<String, String> = Default::default();
    for n in 0..changes {
        let m = listener
            .reply_within(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("heard {n} of {changes} changes"));
        let text = String::from_utf8_lossy(&m).to_string();
        let parts: Vec<&str> = text.split("\r\n").collect();
        // *4 $8 pmessage $pat pat $chan chan $event event
        let (channel, event) = (parts[6], parts[8]);
        let key = channel.trim_start_matches("__keyspace@0__:").to_string();
        let before = last.insert(key.clone(), event.to_string());
        match event {
            "set" => assert!(before.is_none(), "{key}: set after {before:?}"),
            "del" => assert_eq!(before.as_deref(), Some("set"), "{key}"),
            other => panic!("{key}: {other}"),
        }
    }
    assert_eq!(last.len(), CLIENTS * EACH);
    eprintln!("{changes} changes in {revisions} revisions");
}
