//! The store as a cache of a dataset kept elsewhere (`--store etcd://...`):
//! a write, delete, set or flush is made in the shared dataset first, as
//! one atomic change, and returns once this node's table has applied it
//! from the dataset's feed (so the session that wrote reads its write, and
//! this node's subscribers hear it when every node's do: from the feed).
//! The feed's applier writes the table itself ([`applying`]). A change the
//! dataset refused or could not confirm is not made here either; the
//! caller learns why from [`take_failure`].

use super::SetIf;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// One operation of a change to the shared dataset (keys are the store's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteOp {
    Put(Vec<u8>, Vec<u8>),
    /// A put whose result says the value it replaced.
    Swap(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// Every key (FLUSHALL).
    DeleteAll,
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// False: a key was not at the version expected; nothing was made.
    pub applied: bool,
    /// The dataset's revision after it: wait for the table to reach it.
    pub revision: i64,
    /// Per operation: the value a put replaced, how many keys a delete took.
    pub results: Vec<CommitResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitResult {
    Put(Option<Vec<u8>>),
    Deleted(i64),
}

/// The shared dataset behind the table.
pub trait Remote: Send + Sync {
    /// Makes `ops` as one change if every key of `expect` is still at the
    /// version given (0: absent). `Err`: not made, or not known to be made,
    /// with the reason to give the client.
    fn commit(&self, expect: &[(Vec<u8>, i64)], ops: &[RemoteOp]) -> Result<Commit, String>;
    /// The version of `key` the table has applied (0: absent).
    fn version(&self, key: &[u8]) -> i64;
    /// Waits (bounded) until the table has applied revision `revision`.
    fn wait_applied(&self, revision: i64);
    /// Whether reads must first [`Remote::fence`].
    fn linearizable_reads(&self) -> bool {
        false
    }
    /// Waits until the table has every change the dataset had made when
    /// called; `Err` (why) if that cannot be known.
    fn fence(&self) -> Result<(), String> {
        Ok(())
    }
}

/// What begins the reason of a failure that trying again cannot mend (a
/// change over the dataset's size limit): told as an error, not as a
/// TRYAGAIN.
pub const FINAL: &str = "ERR ";

thread_local! {
    static APPLYING: Cell<bool> = const { Cell::new(false) };
    static FAILED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f` as the feed's applier: the store's methods change the table
/// itself instead of the shared dataset.
pub fn applying<R>(f: impl FnOnce() -> R) -> R {
    let was = APPLYING.with(|a| a.replace(true));
    let r = f();
    APPLYING.with(|a| a.set(was));
    r
}

pub(super) fn is_applying() -> bool {
    APPLYING.with(Cell::get)
}

/// Why the last change made on this thread was not made, if it was not;
/// cleared by reading it.
pub fn take_failure() -> Option<String> {
    FAILED.with(|f| f.borrow_mut().take())
}

/// Records why the change being made on this thread was not made.
pub(super) fn fail(why: String) {
    FAILED.with(|f| *f.borrow_mut() = Some(why));
}

/// A key given twice in one change keeps its last value (etcd takes a key
/// once per transaction; the table keeps the last as well).
fn puts<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<RemoteOp> {
    let mut at: HashMap<&[u8], usize> = HashMap::new();
    let mut ops: Vec<RemoteOp> = Vec::new();
    for (k, v) in pairs {
        let (k, v) = (k.as_ref(), v.as_ref());
        match at.get(k) {
            Some(&i) => ops[i] = RemoteOp::Put(k.to_vec(), v.to_vec()),
            None => {
                at.insert(k, ops.len());
                ops.push(RemoteOp::Put(k.to_vec(), v.to_vec()));
            }
        }
    }
    ops
}

pub(super) fn write<K: AsRef<[u8]>, V: AsRef<[u8]>>(r: &dyn Remote, pairs: &[(K, V)]) {
    match r.commit(&[], &puts(pairs)) {
        Ok(c) => r.wait_applied(c.revision),
        Err(why) => fail(why),
    }
}

pub(super) fn delete<K: AsRef<[u8]>>(r: &dyn Remote, keys: &[K]) -> Vec<bool> {
    // Each key once; a later repeat finds it gone, as in the table.
    let mut first: HashMap<&[u8], usize> = HashMap::new();
    let mut ops = Vec::new();
    for k in keys {
        let k = k.as_ref();
        if !first.contains_key(k) {
            first.insert(k, ops.len());
            ops.push(RemoteOp::Delete(k.to_vec()));
        }
    }
    let c = match r.commit(&[], &ops) {
        Ok(c) => c,
        Err(why) => {
            fail(why);
            return vec![false; keys.len()];
        }
    };
    r.wait_applied(c.revision);
    let mut told = vec![false; ops.len()];
    keys.iter()
        .map(|k| {
            let i = first[k.as_ref()];
            let gone = matches!(c.results.get(i), Some(CommitResult::Deleted(n)) if *n > 0);
            !std::mem::replace(&mut told[i], true) && gone
        })
        .collect()
}

pub(super) fn clear(r: &dyn Remote) -> usize {
    match r.commit(&[], &[RemoteOp::DeleteAll]) {
        Ok(c) => {
            r.wait_applied(c.revision);
            match c.results.first() {
                Some(CommitResult::Deleted(n)) => *n as usize,
                _ => 0,
            }
        }
        Err(why) => {
            fail(why);
            0
        }
    }
}

/// SET with its condition: decided on the version the table has, and made
/// only if the key is still at it (else the table catches up and it is
/// decided again), so NX and XX hold against writers on every node.
pub(super) fn set(
    r: &dyn Remote,
    key: &[u8],
    value: &[u8],
    cond: SetIf,
    want_old: bool,
    table_value: impl Fn() -> Option<Vec<u8>>,
) -> (bool, Option<Vec<u8>>) {
    const TRIES: usize = 100;
    for _ in 0..TRIES {
        let version = r.version(key);
        let present = version != 0;
        let go = match cond {
            SetIf::Always => true,
            SetIf::Absent => !present,
            SetIf::Present => present,
        };
        let expect = match cond {
            SetIf::Always => Vec::new(),
            _ => vec![(key.to_vec(), version)],
        };
        let ops = if go && want_old {
            vec![RemoteOp::Swap(key.to_vec(), value.to_vec())]
        } else if go {
            vec![RemoteOp::Put(key.to_vec(), value.to_vec())]
        } else {
            // Nothing to make; the compare confirms the table was current.
            Vec::new()
        };
        let c = match r.commit(&expect, &ops) {
            Ok(c) => c,
            Err(why) => {
                fail(why);
                return (false, None);
            }
        };
        if !c.applied {
            r.wait_applied(c.revision);
            continue;
        }
        if !go {
            // The old value, for SET ... GET, from the (current) table.
            return (false, want_old.then(table_value).flatten());
        }
        r.wait_applied(c.revision);
        let old = match c.results.first() {
            Some(CommitResult::Put(prev)) if want_old => prev.clone(),
            _ => None,
        };
        return (true, old);
    }
    fail("the key kept changing on other nodes; try again".into());
    (false, None)
}
