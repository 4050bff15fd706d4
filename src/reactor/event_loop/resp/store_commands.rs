//! RESP commands that the store pool runs: their arguments checked and
//! turned into [`Command`]s (or into the reply they get without the store).

use super::{arity_error, eq, not_integer, parse_u64, syntax_error};
use crate::reactor::command::{Command, Pairs, Reply, SetReply};
use crate::reactor::store_ops::BatchItem;
use crate::store::SetIf;

/// SET's arguments after the key and value.
fn set_command(args: &[&[u8]]) -> BatchItem {
    // Keys and values are any bytes, as in Redis (the course formats'
    // rules bind only what FIFO and job clients send).
    let (key, value) = (args[1].to_vec(), args[2].to_vec());
    let (mut cond, mut reply) = (SetIf::Always, SetReply::Ok);
    for opt in &args[3..] {
        if eq(opt, "nx") && cond != SetIf::Present {
            cond = SetIf::Absent;
        } else if eq(opt, "xx") && cond != SetIf::Absent {
            cond = SetIf::Present;
        } else if eq(opt, "get") {
            reply = SetReply::Old;
        } else if ["ex", "px", "exat", "pxat", "keepttl"]
            .iter()
            .any(|w| eq(opt, w))
        {
            return Err(Reply::Error(format!(
                "ERR kvs keeps keys until they are deleted: SET option {} (key expiry) is not supported",
                String::from_utf8_lossy(opt).to_uppercase()
            )));
        } else {
            return Err(syntax_error());
        }
    }
    Ok(Command::Set {
        key,
        value,
        cond,
        reply,
    })
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
/// or the reply it gets without the store.
pub(super) fn store_command(
    name: &str,
    args: &[&[u8]],
    info: impl FnOnce() -> Command,
) -> BatchItem {
    let n = args.len();
    let arity_ok = match name {
        "get" | "type" | "strlen" | "keys" => n == 2,
        "setnx" | "getset" => n == 3,
        "set" => n >= 3,
        "mget" | "del" | "unlink" | "exists" | "scan" => n >= 2,
        "mset" => n >= 3 && n % 2 == 1,
        "dbsize" => n == 1,
        "flushdb" | "flushall" => n <= 2,
        _ => true,
    };
    if !arity_ok {
        return Err(arity_error(name));
    }
    let keys = || args[1..].iter().map(|a| a.to_vec()).collect::<Vec<_>>();
    Ok(match name {
        "get" => Command::Get(args[1].to_vec()),
        "type" => Command::Type(args[1].to_vec()),
        "strlen" => Command::Strlen(args[1].to_vec()),
        "set" => return set_command(args),
        "setnx" | "getset" => Command::Set {
            key: args[1].to_vec(),
            value: args[2].to_vec(),
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
        "mset" => {
            let mut pairs = Pairs::default();
            for kv in args[1..].chunks(2) {
                pairs.push(kv[0], kv[1]);
            }
            Command::MSet(pairs)
        }
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

/// The replies of a batch of GETs (and replies known already), if every
/// key's shard is free right now; `None` otherwise.
pub(super) fn try_reads(store: &crate::store::Store, batch: &[BatchItem]) -> Option<Vec<Reply>> {
    batch
        .iter()
        .map(|item| match item {
            Ok(Command::Get(k)) => store.try_get(k).ok().map(Reply::Value),
            Ok(_) => None,
            Err(reply) => Some(reply.clone()),
        })
        .collect()
}
