//! When keys expire (Redis's TTLs): each shard keeps the deadline of every
//! key that has one, by key and in deadline order, so that a lookup checks
//! its key's deadline in one probe and the active cycle finds every key
//! that is due without looking at any other. Keys without a deadline cost
//! nothing here, and a shard with none skips every check with one branch.
//! Both indexes share one copy of each key (an `Arc`), so that a deadline
//! is removed without making a key to look it up with, and the cycle pops
//! due keys in order without copying them.

use super::Store;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

type ByKey = HashMap<Arc<[u8]>, u64, foldhash::fast::RandomState>;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: deadlines are absolute wall-clock
/// times, as Redis keeps them, so a restart does not extend them.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The deadlines of one shard's keys.
#[derive(Default)]
pub struct Deadlines {
    by_key: ByKey,
    by_time: BTreeSet<(u64, Arc<[u8]>)>,
}

impl Deadlines {
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<u64> {
        if self.by_key.is_empty() {
            return None;
        }
        self.by_key.get(key).copied()
    }

    /// Whether `key` has a deadline that is not after `now`.
    #[inline]
    pub fn due(&self, key: &[u8], now: u64) -> bool {
        self.get(key).is_some_and(|at| at <= now)
    }

    pub fn set(&mut self, key: &[u8], at: u64) {
        let k = match self.by_key.remove_entry(key) {
            Some((k, old)) => self
                .by_time
                .take(&(old, k))
                .map_or_else(|| key.into(), |(_, k)| k),
            None => key.into(),
        };
        self.by_time.insert((at, k.clone()));
        self.by_key.insert(k, at);
    }

    /// Forgets `key`'s deadline; whether it had one.
    #[inline]
    pub fn remove(&mut self, key: &[u8]) -> bool {
        if self.by_key.is_empty() {
            return false;
        }
        match self.by_key.remove_entry(key) {
            Some((k, at)) => {
                self.by_time.remove(&(at, k));
                true
            }
            None => false,
        }
    }

    /// The earliest key whose deadline is not after `now`, its deadline
    /// forgotten (the active cycle takes it away).
    pub fn pop_due(&mut self, now: u64) -> Option<Arc<[u8]>> {
        if self.by_time.first()?.0 > now {
            return None;
        }
        let (_, k) = self.by_time.pop_first()?;
        self.by_key.remove(&k[..]);
        Some(k)
    }

    /// Up to `limit` keys whose deadline is not after `now`, earliest
    /// first.
    #[cfg(test)]
    pub fn due_keys(&self, now: u64, limit: usize) -> Vec<Arc<[u8]>> {
        self.by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<u64> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Every key with its deadline.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> {
        self.by_key.iter().map(|(k, &at)| (&k[..], at))
    }

    pub fn clear(&mut self) {
        self.by_key.clear();
        self.by_time.clear();
    }

    /// How many keys have a deadline, and their time left in all (ms).
    pub fn time_left(&self, now: u64) -> (usize, u128) {
        let total = self
            .by_key
            .values()
            .map(|&at| u128::from(at.saturating_sub(now)))
            .sum();
        (self.by_key.len(), total)
    }
}

/// INFO's `expires` and `avg_ttl` from each shard's [`Deadlines::time_left`].
pub fn mean_time_left(shards: impl Iterator<Item = (usize, u128)>) -> (usize, u64) {
    let (n, total) = shards.fold((0, 0), |(n, t), (m, u)| (n + m, t + u));
    (
        n,
        if n == 0 {
            0
        } else {
            (total / n as u128) as u64
        },
    )
}

/// How often the active cycle looks for keys that are due (Redis's
/// default `hz` is 10).
const CYCLE: Duration = Duration::from_millis(100);

/// Most keys one shard gives up in one pass: a shard's write lock is never
/// held for long, and a pass that hit the limit is followed by another at
/// once.
const PER_PASS: usize = 64;

/// The active expire cycle: a thread that takes keys away once their
/// deadline passes, whether or not anyone reads them (a read of a key that
/// is due already finds it absent). Stops when dropped.
pub struct ExpiryCycle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ExpiryCycle {
    pub fn start(store: Arc<Store>) -> std::io::Result<ExpiryCycle> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kvs-expire".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    // A full pass means more are due: go on at once.
                    if store.expire_due(PER_PASS) < PER_PASS {
                        std::thread::park_timeout(CYCLE);
                    }
                }
            })?;
        Ok(ExpiryCycle {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ExpiryCycle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_by_key_and_by_time() {
        let mut d = Deadlines::default();
        assert!(d.is_empty() && !d.due(b"k", u64::MAX));
        d.set(b"a", 30);
        d.set(b"b", 10);
        d.set(b"a", 20);
        assert_eq!(d.len(), 2);
        assert_eq!(d.next(), Some(10));
        assert!(d.due(b"a", 20) && !d.due(b"a", 19));
        assert_eq!(
            d.due_keys(25, 10),
            vec![Arc::<[u8]>::from(&b"b"[..]), Arc::from(&b"a"[..])]
        );
        assert_eq!(d.due_keys(25, 1).len(), 1);
        assert!(d.remove(b"b") && !d.remove(b"b"));
        assert_eq!(d.due_keys(u64::MAX, 10).len(), 1);
        d.set(b"c", 5);
        assert_eq!(d.pop_due(4), None);
        assert_eq!(d.pop_due(5).as_deref(), Some(&b"c"[..]));
        assert_eq!(d.pop_due(u64::MAX).as_deref(), Some(&b"a"[..]));
        assert!(d.is_empty() && d.pop_due(u64::MAX).is_none());
    }
}
