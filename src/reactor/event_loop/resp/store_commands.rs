//! RESP commands that the store pool runs: their arguments checked and
//! turned into [`Command`]s (or into the reply they get without the store).

use super::command_table;
use super::{arity_error, eq, not_integer, parse_u64, syntax_error};
use crate::protocol::resp::MAX_BULK;
use crate::reactor::command::{Apart, Command, LcsMode, Pairs, Reply, SetReply, Value};
use crate::reactor::expire::{ExpireIf, GetExTtl, SetTtl, TtlQuery, When};
use crate::reactor::store_ops::BatchItem;
use crate::reactor::strings::{self, StringOp};
use crate::store::SetIf;

/// A deadline option's time (EX 10, PXAT ...), checked as Redis checks
/// it for `command`: a whole number above zero that does not overflow.
fn option_time(command: &str, arg: &[u8], unit_ms: i64, absolute: bool) -> Result<When, Reply> {
    let n = strings::parse_i64(arg).ok_or_else(not_integer)?;
    let invalid = || Reply::Error(format!("ERR invalid expire time in '{command}' command"));
    if n <= 0 {
        return Err(invalid());
    }
    When::from_arg(n, unit_ms, absolute).ok_or_else(invalid)
}

/// The deadline options of SET (`getex`: false) or GETEX (true), as Redis
/// 7 parses them: `Ok(None)` for none, `Err` for a conflict or a bad time.
fn ttl_options<'a>(
    command: &str,
    opts: &mut std::iter::Peekable<impl Iterator<Item = &'a &'a [u8]>>,
    opt: &[u8],
    seen: &mut Option<GetExTtl>,
    keep: &mut bool,
) -> Result<bool, Reply> {
    let timed = [
        ("ex", 1000, false),
        ("px", 1, false),
        ("exat", 1000, true),
        ("pxat", 1, true),
    ];
    if let Some(&(_, unit, absolute)) = timed.iter().find(|(w, _, _)| eq(opt, w)) {
        if seen.is_some() || *keep {
            return Err(syntax_error());
        }
        let Some(arg) = opts.next() else {
            return Err(syntax_error());
        };
        *seen = Some(GetExTtl::Set(option_time(command, arg, unit, absolute)?));
        return Ok(true);
    }
    Ok(false)
}

/// SET's arguments after the key and value.
fn set_command(args: &[&[u8]], apart: Apart<'_>) -> BatchItem {
    // Keys and values are any bytes, as in Redis (the course formats'
    // rules bind only what FIFO and job clients send).
    let (key, value) = (args[1].to_vec(), Value::of(args[2], apart));
    let (mut cond, mut reply) = (SetIf::Always, SetReply::Ok);
    let (mut ttl, mut keep) = (None, false);
    let mut opts = args[3..].iter().peekable();
    while let Some(opt) = opts.next() {
        if eq(opt, "nx") && cond != SetIf::Present {
            cond = SetIf::Absent;
        } else if eq(opt, "xx") && cond != SetIf::Absent {
            cond = SetIf::Present;
        } else if eq(opt, "get") {
            reply = SetReply::Old;
        } else if eq(opt, "keepttl") && ttl.is_none() {
            keep = true;
        } else if !ttl_options("set", &mut opts, opt, &mut ttl, &mut keep)? {
            return Err(syntax_error());
        }
    }
    let ttl = match (ttl, keep) {
        (Some(GetExTtl::Set(when)), _) => SetTtl::Set(when),
        (_, true) => SetTtl::Keep,
        _ => {
            return Ok(Command::Set {
                key,
                value,
                cond,
                reply,
            })
        }
    };
    Ok(Command::SetTtl {
        key,
        value,
        cond,
        reply,
        ttl,
    })
}

/// SETEX key seconds value, PSETEX key milliseconds value.
fn setex_command(name: &str, args: &[&[u8]], apart: Apart<'_>) -> BatchItem {
    let unit = if name == "setex" { 1000 } else { 1 };
    Ok(Command::SetTtl {
        key: args[1].to_vec(),
        value: Value::of(args[3], apart),
        cond: SetIf::Always,
        reply: SetReply::Ok,
        ttl: SetTtl::Set(option_time(name, args[2], unit, false)?),
    })
}

/// GETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST].
fn getex_command(args: &[&[u8]]) -> BatchItem {
    let (mut ttl, mut persist) = (None, false);
    let mut opts = args[2..].iter().peekable();
    while let Some(opt) = opts.next() {
        if eq(opt, "persist") && ttl.is_none() {
            persist = true;
        } else if !ttl_options("getex", &mut opts, opt, &mut ttl, &mut persist)? {
            return Err(syntax_error());
        }
    }
    Ok(Command::GetEx {
        key: args[1].to_vec(),
        ttl: match (ttl, persist) {
            (Some(t), _) => t,
            (None, true) => GetExTtl::Persist,
            (None, false) => GetExTtl::Leave,
        },
    })
}

/// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT key time [NX | XX | GT | LT].
fn expire_command(name: &str, args: &[&[u8]]) -> BatchItem {
    let n = strings::parse_i64(args[2]).ok_or_else(not_integer)?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &args[3..] {
        if eq(opt, "nx") {
            nx = true;
        } else if eq(opt, "xx") {
            xx = true;
        } else if eq(opt, "gt") {
            gt = true;
        } else if eq(opt, "lt") {
            lt = true;
        } else {
            return Err(Reply::Error(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(opt)
            )));
        }
    }
    if nx && (xx || gt || lt) {
        return Err(Reply::Error(
            "ERR NX and XX, GT or LT options at the same time are not compatible".into(),
        ));
    }
    if gt && lt {
        return Err(Reply::Error(
            "ERR GT and LT options at the same time are not compatible".into(),
        ));
    }
    let unit = if name.starts_with('p') { 1 } else { 1000 };
    let when = When::from_arg(n, unit, name.ends_with("at"))
        .ok_or_else(|| Reply::Error(format!("ERR invalid expire time in '{name}' command")))?;
    let cond = ExpireIf { nx, xx, gt, lt };
    Ok(Command::Expire {
        key: args[1].to_vec(),
        when,
        cond,
    })
}

/// A bit offset as SETBIT and GETBIT take it: within a value of
/// `proto-max-bulk-len` bytes.
fn bit_offset(arg: &[u8]) -> Result<u64, Reply> {
    strings::parse_i64(arg)
        .and_then(|n| u64::try_from(n).ok())
        .filter(|&n| n < (MAX_BULK as u64) * 8)
        .ok_or_else(|| Reply::Error("ERR bit offset is not an integer or out of range".into()))
}

/// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN].
fn lcs_command(args: &[&[u8]]) -> BatchItem {
    let (mut len, mut idx, mut with_len, mut min_len) = (false, false, false, 0usize);
    let mut i = 3;
    while i < args.len() {
        let opt = args[i];
        if eq(opt, "idx") {
            idx = true;
        } else if eq(opt, "len") {
            len = true;
        } else if eq(opt, "withmatchlen") {
            with_len = true;
        } else if eq(opt, "minmatchlen") && i + 1 < args.len() {
            let n = strings::parse_i64(args[i + 1]).ok_or_else(not_integer)?;
            min_len = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
            i += 1;
        } else {
            return Err(syntax_error());
        }
        i += 1;
    }
    if len && idx {
        return Err(Reply::Error(
            "ERR If you want both the length and indexes, please just use IDX.".into(),
        ));
    }
    Ok(Command::Lcs {
        a: args[1].to_vec(),
        b: args[2].to_vec(),
        mode: if idx {
            LcsMode::Idx { min_len, with_len }
        } else if len {
            LcsMode::Len
        } else {
            LcsMode::Plain
        },
    })
}

/// COPY source destination [DB 0] [REPLACE] (kvs has one database).
fn copy_command(args: &[&[u8]]) -> BatchItem {
    let mut replace = false;
    let mut rest = args[3..].iter();
    while let Some(opt) = rest.next() {
        if eq(opt, "replace") {
            replace = true;
        } else if eq(opt, "db") {
            let db = rest.next().ok_or_else(syntax_error)?;
            match strings::parse_i64(db) {
                Some(0) => {}
                Some(_) => return Err(Reply::Error("ERR DB index is out of range".into())),
                None => return Err(not_integer()),
            }
        } else {
            return Err(syntax_error());
        }
    }
    Ok(Command::Copy {
        from: args[1].to_vec(),
        to: args[2].to_vec(),
        replace,
    })
}

/// OBJECT ENCODING (FREQ and IDLETIME answer why they cannot).
fn object_command(args: &[&[u8]]) -> BatchItem {
    let sub = String::from_utf8_lossy(args[1]).to_ascii_lowercase();
    let arity = |want: usize| {
        if args.len() == want {
            Ok(())
        } else {
            Err(arity_error(&format!("object|{sub}")))
        }
    };
    match sub.as_str() {
        "encoding" => {
            arity(3)?;
            Ok(Command::Encoding(args[2].to_vec()))
        }
        "freq" => {
            arity(3)?;
            Err(Reply::Error(
                "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.".into(),
            ))
        }
        "idletime" => {
            arity(3)?;
            Err(Reply::Error(
                "ERR kvs does not track when a key was last read: OBJECT IDLETIME is not supported"
                    .into(),
            ))
        }
        _ => Err(Reply::Error(format!(
            "ERR unknown subcommand '{}'. Try OBJECT HELP.",
            String::from_utf8_lossy(args[1])
        ))),
    }
}

fn scan_command(args: &[&[u8]]) -> BatchItem {
    let cursor = parse_u64(args[1]).ok_or_else(|| Reply::Error("ERR invalid cursor".into()))?;
    let (mut count, mut pattern) = (10usize, None);
    let mut rest = args[2..].iter();
    while let Some(opt) = rest.next() {
        let value = rest.next().ok_or_else(syntax_error)?;
        if eq(opt, "match") {
            pattern = Some(value.to_vec());
        } else if eq(opt, "count") {
            count = match parse_u64(value) {
                Some(0) => return Err(syntax_error()),
                Some(n) => n.min(1 << 20) as usize,
                None => return Err(not_integer()),
            };
        } else if eq(opt, "type") {
            // Every kvs value is a string: any other type finds nothing.
            if !eq(value, "string") {
                return Err(Reply::Scan(0, Vec::new()));
            }
        } else {
            return Err(syntax_error());
        }
    }
    Ok(Command::Scan {
        cursor,
        count,
        pattern,
    })
}

/// The store command for a request whose name is in [`STORE_COMMANDS`],
/// or the reply it gets without the store. Values read apart (`apart`)
/// go along in their buffers.
pub(super) fn store_command(
    name: &str,
    entry: Option<&command_table::CommandInfo>,
    args: &[&[u8]],
    info: impl FnOnce() -> Command,
    apart: Apart<'_>,
) -> BatchItem {
    let n = args.len();
    // Redis's arity rule: exactly N, or at least -N.
    let arity_ok =
        entry.is_none_or(|c| c.fits(n)) && !(matches!(name, "mset" | "msetnx") && n % 2 == 0);
    if !arity_ok {
        return Err(arity_error(name));
    }
    let int = |a: &[u8]| strings::parse_i64(a).ok_or_else(not_integer);
    let update = |op| Command::Update {
        key: args[1].to_vec(),
        op,
    };
    let keys = || args[1..].iter().map(|a| a.to_vec()).collect::<Vec<_>>();
    // The commonest first: the arms are compared in order.
    Ok(match name {
        "get" => Command::Get(args[1].to_vec()),
        "set" => return set_command(args, apart),
        "incr" => update(StringOp::IncrBy(1)),
        "type" => Command::Type(args[1].to_vec()),
        "strlen" => Command::Strlen(args[1].to_vec()),
        "setnx" | "getset" => Command::Set {
            key: args[1].to_vec(),
            value: Value::of(args[2], apart),
            cond: if name == "setnx" {
                SetIf::Absent
            } else {
                SetIf::Always
            },
            reply: if name == "setnx" {
                SetReply::Flag
            } else {
                SetReply::Old
            },
        },
        "mget" => Command::MGet(keys()),
        "mset" | "msetnx" => {
            let pairs = Pairs::from_args(&args[1..], apart);
            if name == "mset" {
                Command::MSet(pairs)
            } else {
                Command::MSetNx(pairs)
            }
        }
        "decr" => update(StringOp::IncrBy(-1)),
        "incrby" => update(StringOp::IncrBy(int(args[2])?)),
        "decrby" => {
            let by = int(args[2])?;
            update(StringOp::IncrBy(by.checked_neg().ok_or_else(|| {
                Reply::Error("ERR decrement would overflow".into())
            })?))
        }
        "incrbyfloat" => update(StringOp::IncrByFloat(
            strings::parse_f64(args[2]).ok_or_else(|| Reply::Error(strings::NOT_FLOAT.into()))?,
        )),
        "append" => update(StringOp::Append(args[2].to_vec())),
        "setrange" => {
            let offset = int(args[2])?;
            let offset = u64::try_from(offset)
                .map_err(|_| Reply::Error("ERR offset is out of range".into()))?;
            update(StringOp::SetRange(offset, args[3].to_vec()))
        }
        "getdel" => update(StringOp::GetDel),
        "getrange" | "substr" => Command::GetRange {
            key: args[1].to_vec(),
            start: int(args[2])?,
            end: int(args[3])?,
        },
        "rename" | "renamenx" => Command::Rename {
            from: args[1].to_vec(),
            to: args[2].to_vec(),
            nx: name == "renamenx",
        },
        "copy" => return copy_command(args),
        // TOUCH answers what EXISTS answers; kvs keeps no access times.
        "touch" => Command::Exists(keys()),
        "randomkey" => Command::RandomKey,
        "object" => return object_command(args),
        "setex" | "psetex" => return setex_command(name, args, apart),
        "getex" => return getex_command(args),
        "expire" | "pexpire" | "expireat" | "pexpireat" => return expire_command(name, args),
        "ttl" | "pttl" | "expiretime" | "pexpiretime" => Command::Ttl {
            key: args[1].to_vec(),
            query: TtlQuery {
                millis: name.starts_with('p'),
                absolute: name.ends_with("time"),
            },
        },
        "persist" => Command::Persist(args[1].to_vec()),
        "setbit" => {
            let offset = bit_offset(args[2])?;
            let on = match strings::parse_i64(args[3]) {
                Some(0) => false,
                Some(1) => true,
                _ => {
                    return Err(Reply::Error(
                        "ERR bit is not an integer or out of range".into(),
                    ))
                }
            };
            update(StringOp::SetBit(offset, on))
        }
        "getbit" => Command::GetBit {
            key: args[1].to_vec(),
            offset: bit_offset(args[2])?,
        },
        "lcs" => return lcs_command(args),
        "del" | "unlink" => Command::Del(keys()),
        "exists" => Command::Exists(keys()),
        "keys" => Command::Keys(args[1].to_vec()),
        "scan" => return scan_command(args),
        "dbsize" => Command::DbSize,
        "flushdb" | "flushall" => {
            if n == 2 && !eq(args[1], "async") && !eq(args[1], "sync") {
                return Err(syntax_error());
            }
            Command::Flush
        }
        _ => info(),
    })
}

/// Answers a batch on the reactor when it is GETs (and replies known
/// already) whose shards are free: each value is encoded straight from the
/// store into `out`, one copy and no `Vec` on the way (for a large value,
/// that copy is most of the work). `false`, with `out` as it was, when an
/// item needs the pool or a shard is locked by a writer: the whole batch
/// then goes to the pool, to keep replies in order.
pub(super) fn try_encode_reads(
    store: &crate::store::Store,
    batch: &[BatchItem],
    proto: u8,
    silenced: &[usize],
    out: &mut Vec<u8>,
) -> bool {
    batch.iter().all(|item| as_read(item).is_some())
        && encode_reads(
            store,
            batch.iter().filter_map(as_read),
            proto,
            silenced,
            out,
        )
}

/// [`try_encode_reads`] for a round of GETs only, given by where their
/// keys are in `buf`.
pub(super) fn try_encode_gets(
    store: &crate::store::Store,
    gets: &LeadingGets,
    buf: &[u8],
    proto: u8,
    silenced: &[usize],
    out: &mut Vec<u8>,
) -> bool {
    encode_reads(store, gets.keys(buf).map(Ok), proto, silenced, out)
}

/// A batch item the reactor can answer: a GET's key, or the reply an item
/// was refused with.
fn as_read(item: &BatchItem) -> Option<Result<&[u8], &Reply>> {
    match item {
        Ok(Command::Get(k)) => Some(Ok(k)),
        Err(reply) => Some(Err(reply)),
        Ok(_) => None,
    }
}

/// Encodes each read's reply into `out` (none for a silenced one);
/// `false`, with `out` as it was, at the first key whose shard a writer
/// holds.
fn encode_reads<'a>(
    store: &crate::store::Store,
    reads: impl Iterator<Item = Result<&'a [u8], &'a Reply>>,
    proto: u8,
    silenced: &[usize],
    out: &mut Vec<u8>,
) -> bool {
    let mark = out.len();
    for (i, read) in reads.enumerate() {
        let quiet = silenced.contains(&i);
        match read {
            Ok(k) => {
                let read = store.try_get_with(k, |v| {
                    if !quiet {
                        crate::protocol::resp::push_opt_bulk_in(out, v, proto);
                    }
                });
                if read.is_err() {
                    out.truncate(mark);
                    return false;
                }
            }
            Err(reply) if !quiet => crate::protocol::resp::encode_reply(out, reply, proto),
            Err(_) => {}
        }
    }
    true
}

/// Most GETs a round keeps as keys before it makes them commands.
const LEADING_GETS: usize = 16;

/// The GETs a round starts with, kept as where their keys are in the
/// request buffer: answered from the store with no [`Command`] each
/// (making and dropping one was a sixth of a pipelined GET), made into
/// commands only if they must go to the pool after all, or something
/// other than a GET follows.
pub(super) struct LeadingGets {
    keys: [(usize, usize); LEADING_GETS],
    n: usize,
}

impl LeadingGets {
    pub(super) fn new() -> Self {
        LeadingGets {
            keys: [(0, 0); LEADING_GETS],
            n: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.n
    }

    /// Keeps `key`, which must lie in `buf` (an inline request's does
    /// not, nor a key read apart): `false`, keeping nothing, if it does
    /// not or if this is full.
    pub(super) fn push(&mut self, buf: &[u8], key: &[u8]) -> bool {
        let start = (key.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
        let in_buf = buf
            .get(start..start.wrapping_add(key.len()))
            .is_some_and(|b| b.as_ptr() == key.as_ptr());
        let Some(slot) = self.keys.get_mut(self.n).filter(|_| in_buf) else {
            return false;
        };
        *slot = (start, key.len());
        self.n += 1;
        true
    }

    fn keys<'b>(&self, buf: &'b [u8]) -> impl Iterator<Item = &'b [u8]> + use<'b, '_> {
        self.keys[..self.n]
            .iter()
            .map(move |&(start, len)| buf.get(start..start + len).unwrap_or_default())
    }

    /// Moves the GETs into `batch` as commands, ahead of what it holds.
    pub(super) fn move_into(&mut self, batch: &mut Vec<BatchItem>, buf: &[u8]) {
        if self.n > 0 {
            let gets = self.keys(buf).map(|k| Ok(Command::Get(k.to_vec())));
            batch.splice(0..0, gets);
            self.n = 0;
        }
    }
}
