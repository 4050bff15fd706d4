//! What a client's command does to the store, whatever protocol carried
//! it. The FIFO protocol's READ / WRITE / DELETE and RESP's GET / SET / DEL
//! and the rest become a [`Command`]; the store pool runs a batch of them
//! with [`execute`]; each protocol turns the [`Reply`] back into its own
//! bytes. Nothing here knows about bytes on a wire.

pub use crate::protocol::reply::Reply;
use crate::reactor::expire::{self, ExpireIf, GetExTtl, SetTtl, TtlQuery, When};
use crate::reactor::strings::{self, Outcome, StringOp};
use crate::store::{self, KeyEvent, SetIf, Store, Transaction};
use std::borrow::Cow;
use std::ops::Deref;
use std::sync::Arc;

/// A value a command writes: bytes copied out of the request, or a large
/// bulk string the session read into a buffer of its own
/// ([`crate::reactor::inbuf`]). That buffer is shared with the session's
/// input until the reactor takes the request off it, which it does before
/// the command reaches a store thread: the store then holds the only
/// reference and keeps the very buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Copied(Vec<u8>),
    Read(Arc<Vec<u8>>),
}

/// Finds the buffer an argument was read apart into, if it was.
pub type Apart<'a> = &'a dyn Fn(&[u8]) -> Option<Arc<Vec<u8>>>;

impl Value {
    /// `arg` as a value: its buffer if it was read apart, else a copy.
    pub fn of(arg: &[u8], apart: Apart<'_>) -> Value {
        apart(arg).map_or_else(|| Value::Copied(arg.to_vec()), Value::Read)
    }

    /// The bytes, as a buffer the store can keep (copied only if the
    /// request still holds it, which it should not).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Value::Copied(v) => v,
            Value::Read(shared) => Arc::try_unwrap(shared).unwrap_or_else(|s| s.to_vec()),
        }
    }
}

impl Deref for Value {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Value::Copied(v) => v,
            Value::Read(shared) => shared,
        }
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Copied(v)
    }
}

/// What SET-like commands answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetReply {
    /// `OK`, or nothing (null) when a condition kept the value (SET).
    Ok,
    /// The value before (SET ... GET, GETSET).
    Old,
    /// Whether the value was set, as 1 or 0 (SETNX).
    Flag,
}

/// The keys and values of one MSET in one buffer: a pipeline of MSETs of
/// ten pairs would otherwise cost twenty allocations each on the reactor
/// and as many frees on the pool. Values large enough that the store keeps
/// their buffer ([`store::keeps_buffer`]) each get one of their own, which
/// the store then keeps instead of copying it again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pairs {
    bytes: Vec<u8>,
    /// Where each key ends in `bytes`, and where its value ends there, or
    /// `None`: the value is the next of `own`.
    ends: Vec<(usize, Option<usize>)>,
    own: Vec<Value>,
}

impl Pairs {
    /// The pairs of MSET's arguments (key, value, key, value, ...): one
    /// allocation for the small ones, not a copy of what is there at each
    /// doubling.
    pub fn from_args(args: &[&[u8]], apart: Apart<'_>) -> Pairs {
        let bytes = args
            .chunks(2)
            .map(|kv| match *kv {
                [k, v] if !store::keeps_buffer(k.len(), v.len()) => k.len() + v.len(),
                _ => kv[0].len(),
            })
            .sum();
        let mut pairs = Pairs {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(args.len() / 2),
            own: Vec::new(),
        };
        for kv in args.chunks_exact(2) {
            pairs.push_from(kv[0], kv[1], apart);
        }
        pairs
    }

    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        self.push_from(key, value, &|_| None);
    }

    fn push_from(&mut self, key: &[u8], value: &[u8], apart: Apart<'_>) {
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len();
        if store::keeps_buffer(key.len(), value.len()) {
            self.own.push(Value::of(value, apart));
            self.ends.push((key_end, None));
        } else {
            self.bytes.extend_from_slice(value);
            self.ends.push((key_end, Some(self.bytes.len())));
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut own = self.own.iter();
        self.pieces()
            .map(move |(k, v)| (k, v.unwrap_or_else(|| own.next().map_or(&[], |v| &**v))))
    }

    /// Every pair, the large values handed over in their buffers (for
    /// [`Store::write_owned`]); the pairs are left without them.
    pub fn take(&mut self) -> Vec<(&[u8], Cow<'_, [u8]>)> {
        let mut own = std::mem::take(&mut self.own).into_iter();
        self.pieces()
            .map(|(k, v)| match v {
                Some(v) => (k, Cow::Borrowed(v)),
                None => (
                    k,
                    Cow::Owned(own.next().map(Value::into_vec).unwrap_or_default()),
                ),
            })
            .collect()
    }

    /// Every key, with its value where it is in `bytes` (`None`: the next
    /// of `own`).
    fn pieces(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        let mut start = 0;
        self.ends.iter().map(move |&(k, v)| {
            let key = self.bytes.get(start..k).unwrap_or_default();
            start = v.unwrap_or(k);
            (key, v.map(|v| self.bytes.get(k..v).unwrap_or_default()))
        })
    }
}

/// A store command. Keys and values are bytes, any bytes; the course
/// formats check their own narrower rules before they get here.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Get(Vec<u8>),
    Set {
        key: Vec<u8>,
        value: Value,
        cond: SetIf,
        reply: SetReply,
    },
    /// Atomic over all keys.
    MGet(Vec<Vec<u8>>),
    /// Atomic: one store operation.
    MSet(Pairs),
    /// Atomic; answers how many existed.
    Del(Vec<Vec<u8>>),
    /// How many of the keys exist (a key given twice counts twice).
    Exists(Vec<Vec<u8>>),
    Type(Vec<u8>),
    Strlen(Vec<u8>),
    Keys(Vec<u8>),
    Scan {
        cursor: u64,
        count: usize,
        pattern: Option<Vec<u8>>,
    },
    DbSize,
    /// INCR, APPEND, SETRANGE, GETDEL and the like: one read-modify-write
    /// step under the key's lock ([`strings`]).
    Update {
        key: Vec<u8>,
        op: StringOp,
    },
    GetRange {
        key: Vec<u8>,
        start: i64,
        end: i64,
    },
    /// Sets every pair, or none if any key exists (answers 1 or 0).
    MSetNx(Pairs),
    /// RENAME (`nx`: RENAMENX).
    Rename {
        from: Vec<u8>,
        to: Vec<u8>,
        nx: bool,
    },
    Copy {
        from: Vec<u8>,
        to: Vec<u8>,
        replace: bool,
    },
    RandomKey,
    GetBit {
        key: Vec<u8>,
        offset: u64,
    },
    Lcs {
        a: Vec<u8>,
        b: Vec<u8>,
        mode: LcsMode,
    },
    /// OBJECT ENCODING.
    Encoding(Vec<u8>),
    /// SET with a deadline option (EX, PX, EXAT, PXAT, KEEPTTL), SETEX,
    /// PSETEX: a plain SET takes the quicker [`Command::Set`].
    SetTtl {
        key: Vec<u8>,
        value: Value,
        cond: SetIf,
        reply: SetReply,
        ttl: SetTtl,
    },
    Expire {
        key: Vec<u8>,
        when: When,
        cond: ExpireIf,
    },
    Ttl {
        key: Vec<u8>,
        query: TtlQuery,
    },
    Persist(Vec<u8>),
    GetEx {
        key: Vec<u8>,
        ttl: GetExTtl,
    },
    /// FLUSHDB / FLUSHALL: every key deleted, each deletion notified.
    Flush,
    /// INFO: the sections the reactor wrote, and whether to add the
    /// keyspace section (which needs the store).
    Info {
        text: String,
        keyspace: bool,
    },
    /// EXEC: the queued commands (or the replies of those answered when
    /// queued, PING and the like), run as one [`Store::transaction`];
    /// none run if a key WATCHed at a version changed since.
    Exec {
        watched: Vec<(Vec<u8>, u64)>,
        queued: Vec<Result<Command, Reply>>,
    },
}

impl Command {
    /// Whether the command changes the store (and so is logged, and
    /// refused while the log cannot be written).
    pub fn is_mutation(&self) -> bool {
        match self {
            Command::Set { .. }
            | Command::MSet(_)
            | Command::Del(_)
            | Command::Flush
            | Command::Update { .. }
            | Command::MSetNx(_)
            | Command::Rename { .. }
            | Command::Copy { .. }
            | Command::SetTtl { .. }
            | Command::Expire { .. }
            | Command::Persist(_) => true,
            Command::GetEx { ttl, .. } => *ttl != GetExTtl::Leave,
            Command::Exec { queued, .. } => queued
                .iter()
                .any(|c| c.as_ref().is_ok_and(Command::is_mutation)),
            _ => false,
        }
    }

    /// Whether the command is a short, fixed amount of work (one key, no
    /// large copy): a pool job of only such commands is timed as a whole
    /// for INFO commandstats, not with a clock reading per command (those
    /// readings were a sixth of the store threads' own time under
    /// pipelined INCRs).
    pub fn is_fast(&self) -> bool {
        self.fast_key().is_some()
    }

    /// The one key of a command [`Command::is_fast`] calls short, or
    /// `None` for any other command.
    fn fast_key(&self) -> Option<&[u8]> {
        /// A value shorter than this is copied in well under a microsecond.
        const SHORT: usize = 4096;
        match self {
            Command::Get(k) | Command::Type(k) | Command::Strlen(k) | Command::Persist(k) => {
                Some(k)
            }
            Command::Ttl { key, .. } | Command::Expire { key, .. } => Some(key),
            Command::Set { key, value, .. } if value.len() < SHORT => Some(key),
            Command::Update {
                key,
                op: StringOp::IncrBy(_) | StringOp::IncrByFloat(_),
            } => Some(key),
            _ => None,
        }
    }

    /// The keys the command reads or writes, or `None` if it looks at
    /// every key (KEYS, DBSIZE, FLUSHDB, INFO's keyspace).
    pub fn keys(&self) -> Option<Vec<&[u8]>> {
        match self {
            Command::Get(k)
            | Command::Type(k)
            | Command::Strlen(k)
            | Command::Encoding(k)
            | Command::Persist(k) => Some(vec![k.as_slice()]),
            Command::SetTtl { key, .. }
            | Command::GetBit { key, .. }
            | Command::Expire { key, .. }
            | Command::Ttl { key, .. }
            | Command::GetEx { key, .. } => Some(vec![key.as_slice()]),
            Command::Set { key, .. }
            | Command::Update { key, .. }
            | Command::GetRange { key, .. } => Some(vec![key.as_slice()]),
            Command::Rename { from, to, .. }
            | Command::Copy { from, to, .. }
            | Command::Lcs { a: from, b: to, .. } => Some(vec![from.as_slice(), to.as_slice()]),
            Command::MGet(k) | Command::Del(k) | Command::Exists(k) => {
                Some(k.iter().map(Vec::as_slice).collect())
            }
            Command::MSet(pairs) | Command::MSetNx(pairs) => {
                Some(pairs.iter().map(|(k, _)| k).collect())
            }
            Command::Info {
                keyspace: false, ..
            } => Some(Vec::new()),
            _ => None,
        }
    }
}

/// Runs one command inside a transaction (the store's locks are held: no
/// store method may be called).
fn execute_in(tx: &mut Transaction<'_>, cmd: Command) -> Reply {
    match cmd {
        Command::Get(k) => Reply::Value(tx.get(&k).map(<[u8]>::to_vec)),
        Command::Set {
            key,
            value,
            cond,
            reply,
        } => set_reply(tx.set(&key, &value, cond, reply == SetReply::Old), reply),
        Command::MGet(keys) => {
            Reply::Values(keys.iter().map(|k| tx.get(k).map(<[u8]>::to_vec)).collect())
        }
        Command::MSet(pairs) => {
            tx.write(pairs.iter());
            Reply::Ok
        }
        Command::Del(keys) => {
            Reply::Int(tx.delete(&keys).into_iter().filter(|&e| e).count() as i64)
        }
        Command::Exists(keys) => Reply::Int(keys.iter().filter(|k| tx.contains(k)).count() as i64),
        Command::Type(k) => Reply::Status(if tx.contains(&k) { "string" } else { "none" }),
        Command::Strlen(k) => Reply::Int(tx.get(&k).map_or(0, |v| v.len() as i64)),
        Command::Keys(pattern) => Reply::Keys(tx.keys(&pattern)),
        Command::DbSize => Reply::Int(tx.len() as i64),
        Command::Flush => {
            tx.clear();
            Reply::Ok
        }
        Command::Info { text, keyspace } => {
            Reply::Text(info_text(text, keyspace, tx.len(), tx.deadline_stats()))
        }
        Command::Update { key, op } => update(tx, &key, &op),
        Command::GetRange { key, start, end } => Reply::Value(Some(
            strings::range(tx.get(&key).unwrap_or_default(), start, end).to_vec(),
        )),
        Command::MSetNx(pairs) => {
            if pairs.iter().any(|(k, _)| tx.contains(k)) {
                return Reply::Int(0);
            }
            tx.write(pairs.iter());
            Reply::Int(1)
        }
        Command::Rename { from, to, nx } => rename(tx, &from, &to, nx),
        Command::Copy { from, to, replace } => copy(tx, &from, &to, replace),
        Command::RandomKey => {
            let keys = tx.keys(b"*");
            Reply::Value(crate::store::pick(&keys).cloned())
        }
        Command::Encoding(k) => Reply::Value(tx.get(&k).map(|v| strings::encoding(v).into())),
        Command::GetBit { key, offset } => {
            Reply::Int(strings::bit(tx.get(&key).unwrap_or_default(), offset))
        }
        Command::Lcs { a, b, mode } => lcs(
            tx.get(&a).unwrap_or_default(),
            tx.get(&b).unwrap_or_default(),
            mode,
        ),
        Command::SetTtl {
            key,
            value,
            cond,
            reply,
            ttl,
        } => {
            let kept = tx.deadline(&key);
            let done = tx.set(&key, &value, cond, reply == SetReply::Old);
            if done.0 {
                expire::after_set(tx, &key, ttl, kept);
            }
            set_reply(done, reply)
        }
        Command::Expire { key, when, cond } => expire::expire(tx, &key, when, cond),
        Command::Ttl { key, query } => expire::ttl(tx, &key, query),
        Command::Persist(key) => expire::persist(tx, &key),
        Command::GetEx { key, ttl } => expire::getex(tx, &key, ttl),
        // Refused when queued (see the RESP transaction module).
        Command::Scan { .. } | Command::Exec { .. } => {
            Reply::Error("ERR this command cannot run inside a transaction".into())
        }
    }
}

/// What LCS answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LcsMode {
    /// The subsequence itself.
    Plain,
    /// Its length (LEN).
    Len,
    /// Where its runs lie (IDX), of at least `min_len` bytes, with their
    /// lengths if `with_len`.
    Idx { min_len: usize, with_len: bool },
}

fn lcs(a: &[u8], b: &[u8], mode: LcsMode) -> Reply {
    let min_len = match mode {
        LcsMode::Idx { min_len, .. } => min_len,
        _ => 0,
    };
    let (common, runs) = match strings::lcs(a, b, min_len) {
        Ok(r) => r,
        Err(e) => return Reply::Error(e.into()),
    };
    match mode {
        LcsMode::Plain => Reply::Value(Some(common)),
        LcsMode::Len => Reply::Int(common.len() as i64),
        LcsMode::Idx { with_len, .. } => {
            let pair = |(s, e): (usize, usize)| {
                Reply::Array(vec![Reply::Int(s as i64), Reply::Int(e as i64)])
            };
            let matches = runs
                .into_iter()
                .map(|(ra, rb, len)| {
                    let mut m = vec![pair(ra), pair(rb)];
                    if with_len {
                        m.push(Reply::Int(len as i64));
                    }
                    Reply::Array(m)
                })
                .collect();
            Reply::Map(vec![
                (
                    Reply::Value(Some(b"matches".to_vec())),
                    Reply::Array(matches),
                ),
                (
                    Reply::Value(Some(b"len".to_vec())),
                    Reply::Int(common.len() as i64),
                ),
            ])
        }
    }
}

/// A read-modify-write of one key ([`StringOp`]).
fn update(tx: &mut Transaction<'_>, key: &[u8], op: &StringOp) -> Reply {
    let event = match op {
        StringOp::IncrBy(_) => KeyEvent::IncrBy,
        StringOp::IncrByFloat(_) => KeyEvent::IncrByFloat,
        StringOp::Append(_) => KeyEvent::Append,
        StringOp::SetRange(..) => KeyEvent::SetRange,
        StringOp::SetBit(..) => KeyEvent::SetBit,
        StringOp::GetDel => KeyEvent::Del,
    };
    let at = tx.spot(key);
    match strings::apply(op, tx.value_at(at, key)) {
        Err(e) => Reply::Error(e.into()),
        Ok(Outcome::Counter(n)) => {
            let mut text = [0u8; 20];
            tx.put_at(at, key, crate::protocol::resp::decimal(n, &mut text), event);
            Reply::Int(n)
        }
        Ok(Outcome::SetInt(v, n)) => {
            tx.put_at(at, key, &v, event);
            Reply::Int(n)
        }
        Ok(Outcome::SetBulk(v)) => {
            tx.put_at(at, key, &v, event);
            Reply::Value(Some(v))
        }
        Ok(Outcome::KeepInt(n)) => Reply::Int(n),
        Ok(Outcome::Deleted(old)) => {
            tx.remove(key, event);
            Reply::Value(old)
        }
    }
}

/// RENAME / RENAMENX, as Redis 7: a missing source is an error; a key
/// renamed to itself is left alone.
fn rename(tx: &mut Transaction<'_>, from: &[u8], to: &[u8], nx: bool) -> Reply {
    let Some(value) = tx.get(from).map(<[u8]>::to_vec) else {
        return Reply::Error("ERR no such key".into());
    };
    if from == to {
        return if nx { Reply::Int(0) } else { Reply::Ok };
    }
    if nx && tx.contains(to) {
        return Reply::Int(0);
    }
    let deadline = tx.deadline(from);
    tx.remove(from, KeyEvent::RenameFrom);
    tx.replace(to, &value, deadline, KeyEvent::RenameTo);
    if nx {
        Reply::Int(1)
    } else {
        Reply::Ok
    }
}

fn copy(tx: &mut Transaction<'_>, from: &[u8], to: &[u8], replace: bool) -> Reply {
    if from == to {
        return Reply::Error("ERR source and destination objects are the same".into());
    }
    let Some(value) = tx.get(from).map(<[u8]>::to_vec) else {
        return Reply::Int(0);
    };
    if !replace && tx.contains(to) {
        return Reply::Int(0);
    }
    let deadline = tx.deadline(from);
    tx.replace(to, &value, deadline, KeyEvent::CopyTo);
    Reply::Int(1)
}

fn set_reply((applied, old): (bool, Option<Vec<u8>>), reply: SetReply) -> Reply {
    match reply {
        SetReply::Ok if applied => Reply::Ok,
        SetReply::Ok => Reply::Value(None),
        SetReply::Old => Reply::Value(old),
        SetReply::Flag => Reply::Int(applied as i64),
    }
}

fn info_text(
    mut text: String,
    keyspace: bool,
    keys: usize,
    (expires, avg_ttl): (usize, u64),
) -> String {
    if keyspace {
        text.push_str("# Keyspace\r\n");
        if keys > 0 {
            text.push_str(&format!(
                "db0:keys={keys},expires={expires},avg_ttl={avg_ttl}\r\n"
            ));
        }
    }
    text
}

/// Runs one command. On the store pool only: it takes shard locks. With a
/// shared dataset (`--store etcd`), a change it refused or could not
/// confirm answers `-TRYAGAIN` with the reason (`'1'` to a FIFO client).
pub fn execute(store: &Store, cmd: Command) -> Reply {
    let reply = execute_here(store, cmd);
    if store.is_remote() {
        if let Some(why) = crate::store::remote::take_failure() {
            if why.starts_with(crate::store::remote::FINAL) {
                return Reply::Error(why);
            }
            return Reply::Error(format!("TRYAGAIN {why}"));
        }
    }
    reply
}

/// Runs a session's pipelined short commands ([`Command::is_fast`]) under
/// one lock of the one shard all their keys fall in, as a transaction does,
/// instead of taking it once per command: a pipeline of INCRs of one
/// counter (a hot key) took and released its lock sixteen times per batch,
/// and the store threads fought over it. What others see is the same or
/// stronger (the run is atomic), and the changes reach subscribers in
/// order, in one hand-over, as Redis sends a BCAST tracking client one
/// message per event loop turn. Items that are not commands (an error
/// found when parsing) keep their places. Not with a journal (a run would
/// be one group record) or on a shared dataset (each change its own
/// transaction there): the items come back then, and when the commands
/// do not qualify.
pub fn execute_on_one_shard(
    store: &Store,
    items: Vec<Result<Command, Reply>>,
) -> Result<Vec<Reply>, Vec<Result<Command, Reply>>> {
    if items.len() < 2 || store.is_remote() || store.is_journaled() {
        return Err(items);
    }
    let commands = || items.iter().filter_map(|item| item.as_ref().ok());
    // The commands' keys, up to the first that is not short (which makes
    // `short` false): one pass, checked for one shard as it goes.
    let mut short = true;
    let keys = commands().map_while(|cmd| {
        let key = cmd.fast_key();
        short &= key.is_some();
        key
    });
    if !store.one_shard(keys) || !short {
        return Err(items);
    }
    let Some(first) = commands().next().and_then(Command::fast_key) else {
        return Err(items);
    };
    let first = first.to_vec();
    Ok(store.transaction(Some(&[first.as_slice()]), |tx| {
        items
            .into_iter()
            .map(|item| match item {
                Ok(cmd) => execute_in(tx, cmd),
                Err(reply) => reply,
            })
            .collect()
    }))
}

/// What EXEC cannot run on a shared dataset: a command that reads or
/// changes every key (the compare-and-swap covers named keys only).
const NOT_ON_ETCD: &str =
    "ERR with --store etcd, MULTI/EXEC takes commands that name their keys (not FLUSHALL, KEYS, SCAN, DBSIZE, RANDOMKEY or INFO)";

/// EXEC on a shared dataset: one compare-and-swap transaction over every
/// key it names. At each attempt the watched keys' versions are read, then
/// the watches are checked on this node's copy (which every change reaches
/// through the feed): moved since WATCH, EXEC answers null. Otherwise the
/// transaction is made only if no key it names (the watched ones included)
/// moved in etcd meanwhile; if one did, the attempt waits until the copy
/// has that change and starts again, so a change to a watched key made
/// anywhere after WATCH makes EXEC null, and a change this node's copy had
/// not yet finished applying when WATCH came does not. A key it does not
/// watch that moved only makes it run again on the new values, as Redis
/// would have run it after that change.
fn exec_on_shared_dataset(
    store: &Store,
    keys: Option<&[&[u8]]>,
    watched: Vec<(Vec<u8>, u64)>,
    queued: Vec<Result<Command, Reply>>,
) -> Reply {
    let watched_keys: Vec<&[u8]> = watched.iter().map(|(k, _)| k.as_slice()).collect();
    let Some(keys) = keys else {
        store.unwatch_versions(&watched_keys);
        return Reply::Error(NOT_ON_ETCD.into());
    };
    // The change counts each attempt expects: WATCH's (an attempt's own
    // commands leave none: their changes are put back, counts and all); any
    // other difference is a change applied here since, which only the
    // feed makes while the keys are not held.
    let expected: Vec<u64> = watched.iter().map(|(_, v)| *v).collect();
    let reply = until_made(|| {
        // Read before the watches are checked: a change between the two
        // shows in the check, or fails the compare.
        let pinned: Vec<(Vec<u8>, i64)> = watched
            .iter()
            .map(|(k, _)| (k.clone(), store.remote_version(k).unwrap_or(0)))
            .collect();
        let queued = queued.clone();
        store.attempt_remote(keys, &pinned, |tx| {
            let moved = watched
                .iter()
                .zip(expected.iter())
                .any(|((k, _), v)| tx.watch_version(k) != Some(*v));
            if moved {
                return Reply::Exec(None);
            }
            exec_in(tx, &[], queued)
        })
    });
    store.unwatch_versions(&watched_keys);
    reply
}

/// Runs `attempt` until it is made (or refused), as many nodes racing on
/// the same keys may make it come back [`crate::store::Attempt::Again`].
fn until_made(mut attempt: impl FnMut() -> crate::store::Attempt<Reply>) -> Reply {
    const TRIES: usize = 1000;
    for _ in 0..TRIES {
        if let crate::store::Attempt::Done(reply) = attempt() {
            return reply;
        }
    }
    Reply::Error(format!(
        "TRYAGAIN its keys kept changing on other nodes ({TRIES} tries)"
    ))
}

/// A read-modify-write command (INCR, APPEND, SET with options, RENAME,
/// ...) on a shared dataset: computed on this node's copy, made in the
/// dataset only if none of its keys changed meanwhile (compare-and-swap on
/// their revisions), computed again if one did. However many nodes race,
/// no change is lost.
fn on_shared_dataset(store: &Store, keys: &[&[u8]], cmd: Command) -> Reply {
    until_made(|| store.attempt_remote(keys, &[], |tx| execute_in(tx, cmd.clone())))
}

fn execute_here(store: &Store, cmd: Command) -> Reply {
    match cmd {
        Command::Get(k) => Reply::Value(store.get(&k)),
        Command::Set {
            key,
            value,
            cond,
            reply,
        } => set_reply(
            store.set(&key, value.into_vec(), cond, reply == SetReply::Old),
            reply,
        ),
        Command::MGet(keys) => {
            // Bytes straight from the store, like GET's: no UTF-8 check
            // on the way out.
            let mut values = Vec::with_capacity(keys.len());
            store.read_with(&keys, |v| values.push(v.map(<[u8]>::to_vec)));
            Reply::Values(values)
        }
        Command::MSet(mut pairs) => {
            store.write_owned(pairs.take());
            Reply::Ok
        }
        Command::Del(keys) => {
            Reply::Int(store.delete(&keys).into_iter().filter(|&e| e).count() as i64)
        }
        Command::Exists(keys) => {
            // One look at all the keys (and, on etcd with linearizable
            // reads, one wait for the dataset, not one per key).
            let mut n = 0;
            store.read_with(&keys, |v| n += i64::from(v.is_some()));
            Reply::Int(n)
        }
        Command::Type(k) => Reply::Status(if store.contains(&k) { "string" } else { "none" }),
        Command::Strlen(k) => Reply::Int(store.get(&k).map_or(0, |v| v.len() as i64)),
        Command::Keys(pattern) => Reply::Keys(store.keys(&pattern)),
        Command::Scan {
            cursor,
            count,
            pattern,
        } => {
            let (next, keys) = store.scan(cursor, count, pattern.as_deref());
            Reply::Scan(next, keys)
        }
        Command::DbSize => Reply::Int(store.len() as i64),
        Command::Flush => {
            store.clear();
            Reply::Ok
        }
        Command::Info { text, keyspace } => Reply::Text(info_text(
            text,
            keyspace,
            store.len(),
            store.deadline_stats(),
        )),
        Command::GetRange { key, start, end } => Reply::Value(Some(
            strings::range(&store.get(&key).unwrap_or_default(), start, end).to_vec(),
        )),
        Command::Encoding(k) => Reply::Value(store.get(&k).map(|v| strings::encoding(&v).into())),
        Command::RandomKey => Reply::Value(store.random_key()),
        // The commonest read-modify-write (INCR, APPEND) names one key it
        // owns: borrowed as it is, not copied out before the command moves.
        Command::Update { key, op } if !store.is_remote() => {
            store.transaction(Some(&[key.as_slice()]), |tx| update(tx, &key, &op))
        }
        cmd @ (Command::Update { .. }
        | Command::MSetNx(_)
        | Command::Rename { .. }
        | Command::Copy { .. }
        | Command::SetTtl { .. }
        | Command::Expire { .. }
        | Command::Ttl { .. }
        | Command::Persist(_)
        | Command::GetEx { .. }
        | Command::GetBit { .. }
        | Command::Lcs { .. }) => {
            // One step under the locks of its keys' shards.
            let keys: Vec<Vec<u8>> = cmd
                .keys()
                .unwrap_or_default()
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect();
            let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            if store.is_remote() {
                return on_shared_dataset(store, &keys, cmd);
            }
            store.transaction(Some(&keys), |tx| execute_in(tx, cmd))
        }
        Command::Exec { watched, queued } => {
            // The shards of the keys it names, or all of them for a command
            // that looks at every key. Owned: the commands move on into
            // the transaction.
            let mut keys: Option<Vec<Vec<u8>>> =
                Some(watched.iter().map(|(k, _)| k.clone()).collect());
            for cmd in queued.iter().flatten() {
                match (cmd.keys(), keys.as_mut()) {
                    (Some(named), Some(all)) => all.extend(named.into_iter().map(<[u8]>::to_vec)),
                    _ => keys = None,
                }
            }
            let keys: Option<Vec<&[u8]>> =
                keys.as_ref().map(|k| k.iter().map(Vec::as_slice).collect());
            if store.is_remote() {
                return exec_on_shared_dataset(store, keys.as_deref(), watched, queued);
            }
            exec(store, keys.as_deref(), watched, queued)
        }
    }
}

/// EXEC, as one store transaction on the shards of `keys`.
fn exec(
    store: &Store,
    keys: Option<&[&[u8]]>,
    watched: Vec<(Vec<u8>, u64)>,
    queued: Vec<Result<Command, Reply>>,
) -> Reply {
    store.transaction(keys, |tx| exec_in(tx, &watched, queued))
}

/// EXEC's commands, in order, on one transaction, unless a key of
/// `watched` changed since it was watched (null). Every watch ends here,
/// changed or not.
fn exec_in(
    tx: &mut Transaction<'_>,
    watched: &[(Vec<u8>, u64)],
    queued: Vec<Result<Command, Reply>>,
) -> Reply {
    let mut changed = false;
    for (key, version) in watched {
        changed |= tx.changed_since(key, *version);
    }
    if changed {
        return Reply::Exec(None);
    }
    Reply::Exec(Some(
        queued
            .into_iter()
            .map(|c| match c {
                Ok(cmd) => execute_in(tx, cmd),
                Err(reply) => reply,
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::remote::{applying, Commit, CommitResult, Remote, RemoteOp};
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A shared dataset whose copy here (`seen`) may lag behind it
    /// (`truth`) until a change waits for it: each key's version.
    #[derive(Default)]
    struct Lagging {
        truth: Mutex<HashMap<Vec<u8>, i64>>,
        seen: Mutex<HashMap<Vec<u8>, i64>>,
        revision: Mutex<i64>,
    }

    impl Remote for Lagging {
        fn commit(&self, expect: &[(Vec<u8>, i64)], ops: &[RemoteOp]) -> Result<Commit, String> {
            let mut truth = self.truth.lock().unwrap();
            let mut rev = self.revision.lock().unwrap();
            let held = expect
                .iter()
                .all(|(k, v)| truth.get(k).copied().unwrap_or(0) == *v);
            if !held {
                return Ok(Commit {
                    applied: false,
                    revision: *rev,
                    results: Vec::new(),
                });
            }
            *rev += 1;
            let results = ops
                .iter()
                .map(|op| match op {
                    RemoteOp::Put(k, _) | RemoteOp::Swap(k, _) => {
                        truth.insert(k.clone(), *rev);
                        CommitResult::Put(None)
                    }
                    RemoteOp::Delete(k) => CommitResult::Deleted(truth.remove(k).map_or(0, |_| 1)),
                    RemoteOp::DeleteAll => CommitResult::Deleted(0),
                })
                .collect();
            Ok(Commit {
                applied: true,
                revision: *rev,
                results,
            })
        }

        fn version(&self, key: &[u8]) -> i64 {
            self.seen.lock().unwrap().get(key).copied().unwrap_or(0)
        }

        fn wait_applied(&self, _revision: i64) {
            *self.seen.lock().unwrap() = self.truth.lock().unwrap().clone();
        }
    }

    fn exec_set_w(store: &Store, watched: u64) -> Reply {
        execute(
            store,
            Command::Exec {
                watched: vec![(b"w".to_vec(), watched)],
                queued: vec![Ok(set("w", "from-a", SetIf::Always, SetReply::Ok))],
            },
        )
    }

    /// On a shared dataset, a change this node's copy had applied to its
    /// table but not yet to its versions when WATCH came is no reason for
    /// EXEC to answer null (it made a WATCH after a read of that very
    /// value fail); a change after WATCH still is.
    #[test]
    fn exec_on_a_shared_dataset_nulls_only_for_changes_after_watch() {
        let store = Store::new();
        let remote = std::sync::Arc::new(Lagging::default());
        assert!(store.set_remote(remote.clone()).is_ok());
        // Another node's change: in the table, its version not yet here.
        remote.truth.lock().unwrap().insert(b"w".to_vec(), 5);
        remote.seen.lock().unwrap().insert(b"w".to_vec(), 3);
        *remote.revision.lock().unwrap() = 5;
        applying(|| store.write(&[("w", "from-b")]));
        let v = store.watch_versions(&["w"])[0];
        assert_eq!(exec_set_w(&store, v), Reply::Exec(Some(vec![Reply::Ok])));
        // A change made after WATCH: null.
        let v = store.watch_versions(&["w"])[0];
        applying(|| store.write(&[("w", "from-c")]));
        remote.truth.lock().unwrap().insert(b"w".to_vec(), 9);
        assert_eq!(exec_set_w(&store, v), Reply::Exec(None));
    }

    fn incr(k: &str) -> Result<Command, Reply> {
        Ok(Command::Update {
            key: k.into(),
            op: StringOp::IncrBy(1),
        })
    }

    /// A pipelined run of short commands on one shard runs under one lock:
    /// the same replies as one at a time, parse errors in their places, and
    /// its changes told in order in one call. Commands on two shards are
    /// handed back to run one at a time.
    #[test]
    fn a_run_on_one_shard_answers_as_one_at_a_time() {
        let store = Store::new();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s2, c2) = (seen.clone(), calls.clone());
        let _ = store.set_change_hook(Box::new(move |changes| {
            c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            for c in changes {
                s2.lock().unwrap().push((c.key.to_vec(), c.event));
            }
        }));
        store.set_screen(crate::store::KeyScreen::everything());
        let bad = Reply::Error("ERR bad".into());
        let run = vec![
            incr("n"),
            Err(bad.clone()),
            incr("n"),
            Ok(set("n", "41", SetIf::Always, SetReply::Old)),
            incr("n"),
            Ok(Command::Get("n".into())),
        ];
        let replies = execute_on_one_shard(&store, run).expect("one shard");
        assert_eq!(
            replies,
            vec![
                Reply::Int(1),
                bad,
                Reply::Int(2),
                Reply::Value(Some("2".into())),
                Reply::Int(42),
                Reply::Value(Some("42".into())),
            ]
        );
        let events: Vec<KeyEvent> = seen.lock().unwrap().iter().map(|(_, e)| *e).collect();
        assert_eq!(
            events,
            vec![
                KeyEvent::IncrBy,
                KeyEvent::IncrBy,
                KeyEvent::Set,
                KeyEvent::IncrBy
            ]
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Two keys in two shards: handed back whole, in order.
        let other = (0..1000)
            .map(|i| format!("k{i}"))
            .find(|k| !store.one_shard([&b"n"[..], k.as_bytes()]))
            .expect("a key in another shard");
        let back = execute_on_one_shard(&store, vec![incr("n"), incr(&other)]);
        assert!(matches!(back, Err(items) if items.len() == 2));
        assert_eq!(store.get(b"n").as_deref(), Some(&b"42"[..]));
    }

    /// With a journal (a data dir) a run is handed back: as one transaction
    /// it would be journaled as one group record.
    #[test]
    fn a_journaled_store_runs_commands_one_at_a_time() {
        struct Quiet;
        impl crate::store::Journal for Quiet {
            fn set(&self, _: &mut dyn Iterator<Item = (&[u8], &[u8])>) {}
            fn del(&self, _: &mut dyn Iterator<Item = &[u8]>) {}
            fn clear(&self) {}
            fn expire(&self, _: &[u8], _: Option<u64>) {}
        }
        let store = Store::new();
        assert!(store.set_journal(Box::new(Quiet)).is_ok());
        let back = execute_on_one_shard(&store, vec![incr("n"), incr("n")]);
        assert!(matches!(back, Err(items) if items.len() == 2));
        assert_eq!(store.get(b"n"), None);
    }

    fn set(k: &str, v: &str, cond: SetIf, reply: SetReply) -> Command {
        Command::Set {
            key: k.into(),
            value: v.as_bytes().to_vec().into(),
            cond,
            reply,
        }
    }

    #[test]
    fn set_conditions_and_replies() {
        let s = Store::new();
        let run = |c| execute(&s, c);
        assert_eq!(
            run(set("a", "1", SetIf::Present, SetReply::Ok)),
            Reply::Value(None)
        );
        assert_eq!(run(set("a", "1", SetIf::Absent, SetReply::Ok)), Reply::Ok);
        assert_eq!(
            run(set("a", "2", SetIf::Absent, SetReply::Flag)),
            Reply::Int(0)
        );
        assert_eq!(
            run(set("a", "3", SetIf::Always, SetReply::Old)),
            Reply::Value(Some("1".into()))
        );
        assert_eq!(
            run(Command::Get("a".into())),
            Reply::Value(Some("3".into()))
        );
        assert_eq!(run(Command::Strlen("a".into())), Reply::Int(1));
        assert_eq!(run(Command::Type("zz".into())), Reply::Status("none"));
    }

    #[test]
    fn multi_key_commands_count() {
        let s = Store::new();
        let run = |c| execute(&s, c);
        // A value the store keeps in its own buffer, between two small ones.
        let big = vec![b'v'; 10_000];
        let args: Vec<&[u8]> = vec![b"a", b"1", b"big", &big, "bé".as_bytes(), "2€".as_bytes()];
        let pairs = Pairs::from_args(&args, &|_| None);
        let want = vec![
            (&b"a"[..], &b"1"[..]),
            (b"big", &big),
            ("bé".as_bytes(), "2€".as_bytes()),
        ];
        assert_eq!(pairs.iter().collect::<Vec<_>>(), want);
        assert_eq!(
            pairs.bytes.len(),
            1 + 1 + 3 + 3 + 4,
            "the big value is apart"
        );
        let mut copy = pairs.clone();
        let taken = copy.take();
        assert!(matches!(taken[1].1, Cow::Owned(_)) && matches!(taken[2].1, Cow::Borrowed(_)));
        let taken: Vec<(&[u8], &[u8])> = taken.iter().map(|(k, v)| (*k, &**v)).collect();
        assert_eq!(taken, want);
        run(Command::MSet(pairs));
        assert_eq!(run(Command::Strlen(b"big".to_vec())), Reply::Int(10_000));
        assert_eq!(run(Command::Del(vec![b"big".to_vec()])), Reply::Int(1));
        let ab = || vec![b"a".to_vec(), b"a".to_vec(), b"c".to_vec()];
        assert_eq!(run(Command::Exists(ab())), Reply::Int(2));
        assert_eq!(
            run(Command::Get("bé".into())),
            Reply::Value(Some("2€".into()))
        );
        assert_eq!(run(Command::DbSize), Reply::Int(2));
        assert_eq!(run(Command::Del(ab())), Reply::Int(1));
        assert_eq!(run(Command::Flush), Reply::Ok);
        assert_eq!(run(Command::DbSize), Reply::Int(0));
    }
}
