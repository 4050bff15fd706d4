//! Key expiry as Redis 7 has it: EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT
//! (with NX / XX / GT / LT), TTL, PTTL, EXPIRETIME, PEXPIRETIME, PERSIST,
//! GETEX, and SET's and SETEX's deadlines. Each runs as one step under its
//! key's lock; a relative time is turned into a deadline when the command
//! runs (in a transaction, at EXEC), as Redis does. The store keeps the
//! deadlines and takes keys away when they pass (`store::expiry`).

use crate::store::expiry::now_ms;
use crate::store::{KeyEvent, Transaction};

use super::command::Reply;

/// A deadline as a command gives it, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// From now (EX, PX, EXPIRE, PEXPIRE).
    In(i64),
    /// Since the Unix epoch (EXAT, PXAT, EXPIREAT, PEXPIREAT).
    At(i64),
}

impl When {
    /// The deadline, or `None` if it overflows.
    pub fn resolve(self, now: i64) -> Option<i64> {
        match self {
            When::In(ms) => now.checked_add(ms),
            When::At(ms) => Some(ms),
        }
    }

    /// A time given in `unit_ms` units (1000 for seconds) from its
    /// argument, as Redis checks it: `None` when it overflows.
    pub fn from_arg(n: i64, unit_ms: i64, absolute: bool) -> Option<When> {
        let ms = n.checked_mul(unit_ms)?;
        if !absolute {
            // Redis refuses what would overflow once now is added.
            (now_ms() as i64).checked_add(ms)?;
        }
        Some(if absolute { When::At(ms) } else { When::In(ms) })
    }
}

/// EXPIRE's conditions on the key's current deadline; every one given
/// must hold (XX with LT or GT is allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExpireIf {
    /// Only if it has none.
    pub nx: bool,
    /// Only if it has one.
    pub xx: bool,
    /// Only if the new one is later (no deadline counts as infinite).
    pub gt: bool,
    /// Only if the new one is sooner.
    pub lt: bool,
}

/// What SET and SETEX do to the key's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTtl {
    /// KEEPTTL.
    Keep,
    Set(When),
}

/// What GETEX does to the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetExTtl {
    Leave,
    Persist,
    Set(When),
}

/// TTL, PTTL, EXPIRETIME and PEXPIRETIME.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlQuery {
    pub millis: bool,
    /// The deadline itself rather than the time left.
    pub absolute: bool,
}

fn now() -> i64 {
    now_ms() as i64
}

/// EXPIRE and its kin. A deadline already past deletes the key (a `del`,
/// as Redis reports it).
pub fn expire(tx: &mut Transaction<'_>, key: &[u8], when: When, cond: ExpireIf) -> Reply {
    let now = now();
    let Some(at) = when.resolve(now) else {
        return Reply::Error("ERR invalid expire time".into());
    };
    if tx.get(key).is_none() {
        return Reply::Int(0);
    }
    let current = tx.deadline(key).map(|d| d as i64);
    let allowed = (!cond.nx || current.is_none())
        && (!cond.xx || current.is_some())
        && (!cond.gt || current.is_some_and(|c| at > c))
        && (!cond.lt || current.is_none_or(|c| at < c));
    if !allowed {
        return Reply::Int(0);
    }
    if at <= now {
        tx.remove(key, KeyEvent::Del);
    } else {
        tx.set_deadline(key, Some(at as u64), Some(KeyEvent::Expire));
    }
    Reply::Int(1)
}

pub fn ttl(tx: &Transaction<'_>, key: &[u8], q: TtlQuery) -> Reply {
    if tx.get(key).is_none() {
        return Reply::Int(-2);
    }
    let Some(at) = tx.deadline(key) else {
        return Reply::Int(-1);
    };
    let ms = if q.absolute {
        at as i64
    } else {
        (at as i64 - now()).max(0)
    };
    Reply::Int(if q.millis { ms } else { (ms + 500) / 1000 })
}

pub fn persist(tx: &mut Transaction<'_>, key: &[u8]) -> Reply {
    if tx.deadline(key).is_none() {
        return Reply::Int(0);
    }
    tx.set_deadline(key, None, Some(KeyEvent::Persist));
    Reply::Int(1)
}

pub fn getex(tx: &mut Transaction<'_>, key: &[u8], what: GetExTtl) -> Reply {
    let Some(value) = tx.get(key).map(<[u8]>::to_vec) else {
        return Reply::Value(None);
    };
    match what {
        GetExTtl::Leave => {}
        GetExTtl::Persist => {
            if tx.deadline(key).is_some() {
                tx.set_deadline(key, None, Some(KeyEvent::Persist));
            }
        }
        GetExTtl::Set(when) => {
            let now = now();
            match when.resolve(now) {
                Some(at) if at > now => {
                    tx.set_deadline(key, Some(at as u64), Some(KeyEvent::Expire))
                }
                _ => {
                    tx.remove(key, KeyEvent::Del);
                }
            }
        }
    }
    Reply::Value(Some(value))
}

/// After a SET with a deadline option was applied: the deadline it asked
/// for, or (KEEPTTL) the one the key had before, `kept`.
pub fn after_set(tx: &mut Transaction<'_>, key: &[u8], ttl: SetTtl, kept: Option<u64>) {
    match ttl {
        SetTtl::Keep => {
            if let Some(at) = kept {
                tx.set_deadline(key, Some(at), None);
            }
        }
        SetTtl::Set(when) => {
            let at = when.resolve(now()).unwrap_or(i64::MAX).max(1);
            tx.set_deadline(key, Some(at as u64), Some(KeyEvent::Expire));
        }
    }
}
