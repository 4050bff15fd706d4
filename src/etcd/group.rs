//! Group commit: unconditional changes that store threads make at the same
//! time (clients' SETs, DELs, MSETs, FIFO WRITEs, job lines, each on its
//! own thread) go to etcd together, as one transaction, when one is
//! already on its way.
//!
//! On a busy node every change otherwise paid its own HTTP request, JSON
//! gateway call and Raft proposal; etcd's CPU per change, not its disks,
//! was the limit. A change that finds fewer than [`IN_FLIGHT`]
//! transactions out goes at once, alone, so a quiet node pays no wait;
//! one that finds them all out queues, and the next thread to send takes
//! every queued change that fits. Each change keeps its atomicity (its
//! operations are all in the one transaction) and its own results; the
//! transaction, made or not, is every member's answer. Changes of a key
//! already in the group wait for the next one (etcd takes a key once per
//! transaction), as does anything past etcd's operation or size limits.
//! Compare-and-swap changes never join a group: one failing compare would
//! fail the others.

use super::client::{Etcd, EtcdError, Op, OpResult, TxnResult};
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::thread::Thread;

/// Transactions of this node's changes out at once; more changes queue.
const IN_FLIGHT: usize = 2;

/// Most bytes of keys and values in one group (etcd takes 1.5 MiB per
/// request by default, and the JSON gateway carries them base64-encoded):
/// a change larger than this goes alone.
const GROUP_BYTES: usize = 256 * 1024;

type Outcome = Result<TxnResult, EtcdError>;

/// A change's outcome, and whether its transaction carried that change
/// alone (its revision is then the change's own, nothing else's).
pub struct Sent {
    pub outcome: Outcome,
    pub alone: bool,
}

struct Waiting {
    id: u64,
    ops: Vec<Op>,
    thread: Thread,
}

#[derive(Default)]
struct State {
    queue: Vec<Waiting>,
    done: HashMap<u64, Sent>,
    in_flight: usize,
    next_id: u64,
}

pub struct Group {
    max_ops: usize,
    state: Mutex<State>,
}

fn key_of(op: &Op) -> Option<&[u8]> {
    match op {
        Op::Put(k, _) | Op::Swap(k, _) | Op::Delete(k) => Some(k),
        Op::DeletePrefix(_) => None,
    }
}

fn bytes_of(op: &Op) -> usize {
    match op {
        Op::Put(k, v) | Op::Swap(k, v) => k.len() + v.len(),
        Op::Delete(k) | Op::DeletePrefix(k) => k.len(),
    }
}

/// Whether `ops` may share a transaction: plain puts and deletes of
/// single keys.
pub fn groupable(ops: &[Op]) -> bool {
    !ops.is_empty()
        && ops
            .iter()
            .all(|op| matches!(op, Op::Put(..) | Op::Delete(_)))
}

impl Group {
    /// Groups of at most `max_ops` operations (the cluster's
    /// `--max-txn-ops`, as far as kvs relies on it).
    pub fn new(max_ops: usize) -> Group {
        Group {
            max_ops,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `ops` (see [`groupable`]) in etcd, with whatever other
    /// changes are queued at the time; their results and the revision.
    pub fn txn(&self, etcd: &Etcd, ops: Vec<Op>) -> Sent {
        let mut st = self.lock();
        if st.in_flight < IN_FLIGHT && st.queue.is_empty() {
            st.in_flight += 1;
            drop(st);
            let outcome = etcd.txn(&[], &ops);
            self.finished();
            return Sent {
                outcome,
                alone: true,
            };
        }
        let id = st.next_id;
        st.next_id += 1;
        st.queue.push(Waiting {
            id,
            ops,
            thread: std::thread::current(),
        });
        loop {
            if let Some(r) = st.done.remove(&id) {
                return r;
            }
            if st.in_flight < IN_FLIGHT && !st.queue.is_empty() {
                let batch = self.take_batch(&mut st.queue);
                st.in_flight += 1;
                drop(st);
                self.send(etcd, batch);
                st = self.lock();
                continue;
            }
            drop(st);
            // Woken when its result is in, or when it may send the queue.
            std::thread::park();
            st = self.lock();
        }
    }

    /// A transaction of this node's finished: a queued change may go.
    fn finished(&self) {
        let mut st = self.lock();
        st.in_flight -= 1;
        if let Some(w) = st.queue.first() {
            w.thread.unpark();
        }
    }

    /// The changes at the front of the queue that fit one transaction:
    /// at least the first, then in order until one does not fit.
    fn take_batch(&self, queue: &mut Vec<Waiting>) -> Vec<Waiting> {
        let mut keys: HashSet<Vec<u8>> = HashSet::new();
        let (mut ops, mut bytes, mut n) = (0, 0, 0);
        for w in queue.iter() {
            let b: usize = w.ops.iter().map(bytes_of).sum();
            let clash = w
                .ops
                .iter()
                .any(|op| key_of(op).is_some_and(|k| keys.contains(k)));
            if n > 0 && (clash || ops + w.ops.len() > self.max_ops || bytes + b > GROUP_BYTES) {
                break;
            }
            keys.extend(w.ops.iter().filter_map(key_of).map(<[u8]>::to_vec));
            ops += w.ops.len();
            bytes += b;
            n += 1;
        }
        queue.drain(..n).collect()
    }

    /// Sends `batch` as one transaction and gives each member its part.
    fn send(&self, etcd: &Etcd, batch: Vec<Waiting>) {
        let alone = batch.len() == 1;
        let outcomes: Vec<Outcome> = match &batch[..] {
            [one] => vec![etcd.txn(&[], &one.ops)],
            _ => {
                let all: Vec<Op> = batch.iter().flat_map(|w| w.ops.iter().cloned()).collect();
                match etcd.txn(&[], &all) {
                    Ok(r) => split(r, &batch),
                    // Too large together, maybe not alone (a cluster with
                    // a smaller request limit): each goes on its own.
                    Err(EtcdError::TooLarge(_)) => {
                        batch.iter().map(|w| etcd.txn(&[], &w.ops)).collect()
                    }
                    Err(e) => batch.iter().map(|_| Err(e.clone())).collect(),
                }
            }
        };
        let mut st = self.lock();
        for (w, outcome) in batch.iter().zip(outcomes) {
            st.done.insert(w.id, Sent { outcome, alone });
            w.thread.unpark();
        }
        drop(st);
        self.finished();
    }
}

/// One transaction's results, shared out to the changes it carried.
fn split(r: TxnResult, batch: &[Waiting]) -> Vec<Outcome> {
    let mut results = r.results.into_iter();
    batch
        .iter()
        .map(|w| {
            let mine: Vec<OpResult> = results.by_ref().take(w.ops.len()).collect();
            Ok(TxnResult {
                succeeded: r.succeeded,
                revision: r.revision,
                results: mine,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Op {
        Op::Put(k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    fn waiting(id: u64, ops: Vec<Op>) -> Waiting {
        Waiting {
            id,
            ops,
            thread: std::thread::current(),
        }
    }

    #[test]
    fn a_batch_stops_at_a_key_it_has_and_at_the_operation_limit() {
        let g = Group::new(4);
        let mut q = vec![
            waiting(0, vec![put("a", "1"), put("b", "1")]),
            waiting(1, vec![put("c", "1")]),
            waiting(2, vec![put("a", "2")]),
            waiting(3, vec![put("d", "1")]),
        ];
        let b = g.take_batch(&mut q);
        assert_eq!(b.iter().map(|w| w.id).collect::<Vec<_>>(), [0, 1]);
        let mut q2 = vec![
            waiting(4, vec![put("x", "1"), put("y", "1"), put("z", "1")]),
            waiting(5, vec![put("w", "1"), put("v", "1")]),
        ];
        let b = g.take_batch(&mut q2);
        assert_eq!(b.iter().map(|w| w.id).collect::<Vec<_>>(), [4]);
        // The first change goes even when it alone is over the limits.
        let big = vec![put("big", &"v".repeat(GROUP_BYTES + 1))];
        let mut q3 = vec![waiting(6, big), waiting(7, vec![put("e", "1")])];
        let b = g.take_batch(&mut q3);
        assert_eq!(b.iter().map(|w| w.id).collect::<Vec<_>>(), [6]);
        assert_eq!(q3.len(), 1);
    }

    #[test]
    fn each_change_gets_its_own_results() {
        let batch = vec![
            waiting(0, vec![put("a", "1"), Op::Delete(b"b".to_vec())]),
            waiting(1, vec![Op::Delete(b"c".to_vec())]),
        ];
        let r = TxnResult {
            succeeded: true,
            revision: 9,
            results: vec![
                OpResult::Put { prev: None },
                OpResult::Deleted(1),
                OpResult::Deleted(0),
            ],
        };
        let parts = split(r, &batch);
        assert_eq!(
            parts[0].as_ref().unwrap().results,
            [OpResult::Put { prev: None }, OpResult::Deleted(1)]
        );
        assert_eq!(parts[1].as_ref().unwrap().results, [OpResult::Deleted(0)]);
        assert_eq!(parts[1].as_ref().unwrap().revision, 9);
    }

    #[test]
    fn only_plain_puts_and_deletes_are_grouped() {
        assert!(groupable(&[put("a", "1"), Op::Delete(b"b".to_vec())]));
        assert!(!groupable(&[Op::Swap(b"a".to_vec(), b"1".to_vec())]));
        assert!(!groupable(&[Op::DeletePrefix(b"kvs/".to_vec())]));
        assert!(!groupable(&[]));
    }
}
