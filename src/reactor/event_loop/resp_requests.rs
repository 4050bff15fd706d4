//! A RESP client's requests: each becomes a store [`Command`] (batched with
//! the ones after it, so a pipeline costs one trip to the store pool) or is
//! answered on the reactor (connection state, pub/sub, introspection).
//! Replies and error texts are Redis 7's, so client libraries and
//! `redis-cli` see what they expect.

use super::Reactor;
use crate::jobs::parser::validate_string;
use crate::protocol::resp::{self, Parsed};
use crate::reactor::command::{Command, Pairs, Reply, SetReply};
use crate::reactor::pubsub::{channel_key, is_keyevent, SessionId};
use crate::reactor::session::{Link, RespState};
use crate::reactor::store_ops::{BatchItem, StoreOp};
use crate::store::SetIf;

/// Most commands handed to the pool in one batch.
const MAX_BATCH: usize = 1024;

/// The version kvs reports where clients expect Redis's (HELLO, INFO):
/// the Redis release whose replies kvs follows.
const REDIS_COMPAT_VERSION: &str = "7.0.0";

/// Commands whose work is done by the store pool.
const STORE_COMMANDS: &[&str] = &[
    "get", "set", "setnx", "getset", "mget", "mset", "del", "unlink", "exists", "type", "strlen",
    "keys", "scan", "dbsize", "flushdb", "flushall", "info",
];

/// Commands answered on the reactor.
const LOCAL_COMMANDS: &[&str] = &[
    "ping",
    "echo",
    "quit",
    "hello",
    "auth",
    "select",
    "client",
    "command",
    "config",
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "publish",
    "reset",
];

/// Appends the RESP encoding of a store command's reply.
pub fn encode_reply(out: &mut Vec<u8>, reply: &Reply) {
    match reply {
        Reply::Ok => resp::push_ok(out),
        Reply::Int(n) => resp::push_int(out, *n),
        Reply::Value(v) => resp::push_opt_bulk(out, v.as_deref().map(str::as_bytes)),
        Reply::Values(vs) => {
            resp::push_array_len(out, vs.len());
            for v in vs {
                resp::push_opt_bulk(out, v.as_deref().map(str::as_bytes));
            }
        }
        Reply::Keys(keys) => push_keys(out, keys),
        Reply::Scan(next, keys) => {
            resp::push_array_len(out, 2);
            resp::push_bulk(out, next.to_string().as_bytes());
            push_keys(out, keys);
        }
        Reply::Status(s) => resp::push_simple(out, s),
        Reply::Text(t) => resp::push_bulk(out, t.as_bytes()),
        Reply::Error(e) => resp::push_error(out, e),
    }
}

fn push_keys(out: &mut Vec<u8>, keys: &[String]) {
    resp::push_array_len(out, keys.len());
    for k in keys {
        resp::push_bulk(out, k.as_bytes());
    }
}

fn arity_error(name: &str) -> Reply {
    Reply::Error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

fn syntax_error() -> Reply {
    Reply::Error("ERR syntax error".into())
}

fn not_integer() -> Reply {
    Reply::Error("ERR value is not an integer or out of range".into())
}

/// Redis's text for a command it does not know, with the first arguments.
fn unknown_command(args: &[&[u8]]) -> String {
    let mut list = String::new();
    for a in &args[1..] {
        if list.len() >= 128 {
            break;
        }
        let room = 128 - list.len();
        let text = String::from_utf8_lossy(a);
        let cut: String = text.chars().take(room).collect();
        list.push_str(&format!("'{cut}' "));
    }
    let name: String = String::from_utf8_lossy(args[0]).chars().take(128).collect();
    format!("ERR unknown command '{name}', with args beginning with: {list}")
}

/// A key or value to store: SPEC's rules, or an error naming them.
fn storable_str(arg: &[u8]) -> Result<&str, Reply> {
    validate_string(arg).map_err(|e| {
        Reply::Error(format!(
            "ERR {e}: kvs keys and values are 1 to 40 bytes of UTF-8 without whitespace, NUL or any of , ( ) [ ]"
        ))
    })
}

fn storable(arg: &[u8]) -> Result<String, Reply> {
    storable_str(arg).map(str::to_owned)
}

/// A key to look up: one kvs cannot hold cannot exist, so it reads as
/// absent (`None`) rather than as an error.
fn lookup(arg: &[u8]) -> Option<String> {
    validate_string(arg).ok().map(str::to_owned)
}

fn parse_u64(arg: &[u8]) -> Option<u64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

fn eq(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// Compares without an early exit, so the time taken does not tell how
/// much of a guessed password was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SET's arguments after the key and value.
fn set_command(args: &[&[u8]]) -> BatchItem {
    let key = storable(args[1])?;
    let value = storable(args[2])?;
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
fn store_command(name: &str, args: &[&[u8]], info: impl FnOnce() -> Command) -> BatchItem {
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
    let lookups = || {
        args[1..]
            .iter()
            .filter_map(|a| lookup(a))
            .collect::<Vec<_>>()
    };
    Ok(match name {
        "get" => Command::Get(lookup(args[1]).ok_or(Reply::Value(None))?),
        "type" => Command::Type(lookup(args[1]).ok_or(Reply::Status("none"))?),
        "strlen" => Command::Strlen(lookup(args[1]).ok_or(Reply::Int(0))?),
        "set" => return set_command(args),
        "setnx" | "getset" => Command::Set {
            key: storable(args[1])?,
            value: storable(args[2])?,
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
        // A key kvs cannot hold is looked up as "", which never exists.
        "mget" => Command::MGet(
            args[1..]
                .iter()
                .map(|a| lookup(a).unwrap_or_default())
                .collect(),
        ),
        "mset" => {
            let mut pairs = Pairs::default();
            for kv in args[1..].chunks(2) {
                pairs.push(storable_str(kv[0])?, storable_str(kv[1])?);
            }
            Command::MSet(pairs)
        }
        "del" | "unlink" => Command::Del(lookups()),
        "exists" => Command::Exists(lookups()),
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
fn try_reads(store: &crate::store::Store, batch: &[BatchItem]) -> Option<Vec<Reply>> {
    batch
        .iter()
        .map(|item| match item {
            Ok(Command::Get(k)) => store.try_get(k).ok().map(Reply::Value),
            Ok(_) => None,
            Err(reply) => Some(reply.clone()),
        })
        .collect()
}

impl Reactor {
    /// Parses and handles the RESP requests waiting in the session's buffer.
    pub(super) fn serve_resp(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let buf = std::mem::take(&mut s.inbuf);
        let mut used = 0;
        let mut batch: Vec<BatchItem> = Vec::new();
        let mut failed = None;
        while batch.len() < MAX_BATCH && self.ready_for_more(sid) && !self.quitting(sid) {
            let (args, len) = match resp::parse(&buf[used..]) {
                Parsed::Incomplete => break,
                Parsed::Error(e) => {
                    // Answer what came before the bad bytes first.
                    if batch.is_empty() {
                        failed = Some(e);
                    }
                    break;
                }
                Parsed::Request(args, len) => (args, len),
            };
            if args.is_empty() {
                used += len;
                continue;
            }
            let name = String::from_utf8_lossy(args[0]).to_ascii_lowercase();
            let stored = STORE_COMMANDS.contains(&name.as_str()) && self.may_run(sid);
            if !stored && !batch.is_empty() {
                // Its answer must follow the batch's.
                break;
            }
            used += len;
            self.stats.commands += 1;
            if stored {
                batch.push(store_command(&name, &args, || self.info_command(&args)));
            } else {
                self.local_command(sid, &name, &args);
            }
        }
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        s.inbuf = buf;
        s.inbuf.drain(..used);
        if let Some(e) = failed {
            return self.protocol_error(sid, e);
        }
        if batch.is_empty() {
            return;
        }
        self.dirty.push(sid);
        // Reads whose shards are free are answered here: two thread
        // hand-offs fewer, and still no waiting on a lock. One busy shard
        // sends the whole batch to the pool, to keep replies in order.
        if let Some(replies) = try_reads(self.pool.store(), &batch) {
            for r in &replies {
                encode_reply(s.replies(), r);
            }
            return;
        }
        s.busy = true;
        self.stats.batches += 1;
        self.pool.submit(sid, s.generation, StoreOp::Batch(batch));
    }

    fn quitting(&self, sid: SessionId) -> bool {
        match self.sessions.get(sid).map(|s| &s.link) {
            Some(Link::Stream { resp, .. }) => resp.quitting,
            _ => false,
        }
    }

    fn resp_state(&mut self, sid: SessionId) -> Option<&mut RespState> {
        match self.sessions.get_mut(sid).map(|s| &mut s.link) {
            Some(Link::Stream { resp, .. }) => Some(resp),
            _ => None,
        }
    }

    /// Whether a store command may run in the session's state
    /// (authenticated, not in subscriber mode); if not,
    /// [`Reactor::local_command`] says why.
    fn may_run(&self, sid: SessionId) -> bool {
        let Some(s) = self.sessions.get(sid) else {
            return false;
        };
        let authenticated = match &s.link {
            Link::Stream { resp, .. } => resp.authenticated,
            Link::Fifo(_) => true,
        };
        authenticated && s.subscription_count() == 0
    }

    /// Handles a command answered on the reactor, or refuses a store
    /// command the session may not run now.
    fn local_command(&mut self, sid: SessionId, name: &str, args: &[&[u8]]) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let authenticated = matches!(&s.link, Link::Stream { resp, .. } if resp.authenticated);
        let subscribed = s.subscription_count() > 0;
        self.dirty.push(sid);
        // Simple answers go here; commands with more to do write their own.
        let mut out = Vec::new();
        self.local_reply(sid, name, args, authenticated, subscribed, &mut out);
        if let Some(s) = self.sessions.get_mut(sid) {
            s.replies().extend_from_slice(&out);
        }
    }

    fn local_reply(
        &mut self,
        sid: SessionId,
        name: &str,
        args: &[&[u8]],
        authenticated: bool,
        subscribed: bool,
        out: &mut Vec<u8>,
    ) {
        // Redis's order: an unknown command says so even before AUTH.
        let known = LOCAL_COMMANDS.contains(&name) || STORE_COMMANDS.contains(&name);
        if !known {
            return resp::push_error(out, &unknown_command(args));
        }
        if !authenticated && !matches!(name, "auth" | "hello" | "ping" | "quit") {
            return resp::push_error(out, "NOAUTH Authentication required.");
        }
        let pubsub_ok = matches!(
            name,
            "subscribe" | "unsubscribe" | "psubscribe" | "punsubscribe" | "ping" | "quit" | "reset"
        );
        if subscribed && !pubsub_ok {
            return resp::push_error(out, &format!(
                "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
            ));
        }
        let n = args.len();
        match name {
            "ping" if n <= 2 => {
                if subscribed {
                    resp::push_array_len(out, 2);
                    resp::push_bulk(out, b"pong");
                    resp::push_bulk(out, args.get(1).copied().unwrap_or(b""));
                } else if n == 2 {
                    resp::push_bulk(out, args[1]);
                } else {
                    resp::push_simple(out, "PONG");
                }
            }
            "echo" if n == 2 => resp::push_bulk(out, args[1]),
            "quit" => {
                resp::push_ok(out);
                if let Some(st) = self.resp_state(sid) {
                    st.quitting = true;
                }
            }
            "select" if n == 2 => match parse_u64(args[1]) {
                Some(0) => resp::push_ok(out),
                Some(_) => resp::push_error(out, "ERR DB index is out of range"),
                None => encode_reply(out, &not_integer()),
            },
            "auth" if n == 2 || n == 3 => {
                let user = (n == 3).then(|| args[1]);
                let reply = self.auth(sid, user, args[n - 1]);
                encode_reply(out, &reply);
            }
            "hello" => self.hello(sid, args, out),
            "client" if n >= 2 => self.client(sid, args, out),
            "command" => command_command(out, args),
            "config" if n >= 2 => self.config(args, out),
            "subscribe" | "psubscribe" if n >= 2 => {
                self.subscribe(sid, name == "psubscribe", &args[1..])
            }
            "unsubscribe" | "punsubscribe" => {
                self.unsubscribe(sid, name == "punsubscribe", &args[1..])
            }
            "publish" if n == 3 => {
                let channel = String::from_utf8_lossy(args[1]).into_owned();
                let receivers = self.publish(&channel, args[2]);
                resp::push_int(out, receivers as i64);
            }
            "reset" if n == 1 => {
                // RESET's own pub/sub replies are not sent, only its answer.
                let mut discarded = Vec::new();
                self.unsubscribe_into(sid, false, &[], &mut discarded);
                self.unsubscribe_into(sid, true, &[], &mut discarded);
                let has_password = self.password.is_some();
                if let Some(st) = self.resp_state(sid) {
                    st.name = None;
                    st.authenticated = !has_password;
                }
                resp::push_simple(out, "RESET");
            }
            _ => {
                // Known, but called with the wrong number of arguments.
                let shown = match (name, args.get(1)) {
                    ("client" | "config", Some(sub)) => {
                        format!(
                            "{name}|{}",
                            String::from_utf8_lossy(sub).to_ascii_lowercase()
                        )
                    }
                    _ => name.to_owned(),
                };
                encode_reply(out, &arity_error(&shown));
            }
        }
    }

    /// AUTH [user] password: the only user is `default`.
    fn auth(&mut self, sid: SessionId, user: Option<&[u8]>, pass: &[u8]) -> Reply {
        let Some(expected) = self.password.as_deref() else {
            return match user {
                // No password set: the default user needs none.
                Some(u) if u == b"default" => Reply::Ok,
                Some(_) => Reply::Error(
                    "WRONGPASS invalid username-password pair or user is disabled.".into(),
                ),
                None => Reply::Error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into()),
            };
        };
        let ok = user.is_none_or(|u| u == b"default") && same_secret(pass, expected);
        if let Some(st) = self.resp_state(sid) {
            st.authenticated = ok;
        }
        if ok {
            Reply::Ok
        } else {
            Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
        }
    }

    /// HELLO [protover [AUTH user pass] [SETNAME name]]: RESP2 only.
    fn hello(&mut self, sid: SessionId, args: &[&[u8]], out: &mut Vec<u8>) {
        let reply = self.try_hello(sid, args);
        let id = self.client_id(sid);
        if let Err(r) = reply {
            return encode_reply(out, &r);
        }
        resp::push_array_len(out, 14);
        for (k, v) in [("server", "redis"), ("version", REDIS_COMPAT_VERSION)] {
            resp::push_bulk(out, k.as_bytes());
            resp::push_bulk(out, v.as_bytes());
        }
        resp::push_bulk(out, b"proto");
        resp::push_int(out, 2);
        resp::push_bulk(out, b"id");
        resp::push_int(out, id);
        for (k, v) in [("mode", "standalone"), ("role", "master")] {
            resp::push_bulk(out, k.as_bytes());
            resp::push_bulk(out, v.as_bytes());
        }
        resp::push_bulk(out, b"modules");
        resp::push_array_len(out, 0);
    }

    fn try_hello(&mut self, sid: SessionId, args: &[&[u8]]) -> Result<(), Reply> {
        if let Some(v) = args.get(1) {
            match parse_u64(v) {
                Some(2) => {}
                Some(_) => return Err(Reply::Error("NOPROTO unsupported protocol version".into())),
                None => {
                    return Err(Reply::Error(
                        "ERR Protocol version is not an integer or out of range".into(),
                    ))
                }
            }
        }
        let mut rest = args.iter().skip(2);
        let mut name = None;
        while let Some(opt) = rest.next() {
            if eq(opt, "auth") {
                let (Some(user), Some(pass)) = (rest.next(), rest.next()) else {
                    return Err(syntax_error());
                };
                if let Reply::Error(e) = self.auth(sid, Some(user), pass) {
                    return Err(Reply::Error(e));
                }
            } else if eq(opt, "setname") {
                name = Some(rest.next().ok_or_else(syntax_error)?);
            } else {
                return Err(Reply::Error(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(opt)
                )));
            }
        }
        if self.resp_state(sid).is_some_and(|st| !st.authenticated) {
            return Err(Reply::Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into()));
        }
        if let Some(n) = name {
            self.set_client_name(sid, n)?;
        }
        Ok(())
    }

    /// A number that names this connection for its lifetime (CLIENT ID).
    fn client_id(&self, sid: SessionId) -> i64 {
        self.sessions
            .get(sid)
            .map_or(0, |s| s.generation as i64 + 1)
    }

    fn set_client_name(&mut self, sid: SessionId, name: &[u8]) -> Result<(), Reply> {
        if !name.iter().all(|b| (b'!'..=b'~').contains(b)) {
            return Err(Reply::Error(
                "ERR Client names cannot contain spaces, newlines or special characters.".into(),
            ));
        }
        if let Some(st) = self.resp_state(sid) {
            st.name = (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned());
        }
        Ok(())
    }

    fn client(&mut self, sid: SessionId, args: &[&[u8]], out: &mut Vec<u8>) {
        let sub = String::from_utf8_lossy(args[1]).to_ascii_lowercase();
        let n = args.len();
        let reply = match sub.as_str() {
            "setname" if n == 3 => self.set_client_name(sid, args[2]).map(|()| Reply::Ok),
            "getname" if n == 2 => Ok(Reply::Value(
                self.resp_state(sid).and_then(|st| st.name.clone()),
            )),
            "id" if n == 2 => Ok(Reply::Int(self.client_id(sid))),
            "setinfo" if n == 4 => {
                if eq(args[2], "lib-name") || eq(args[2], "lib-ver") {
                    Ok(Reply::Ok)
                } else {
                    Err(Reply::Error(format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(args[2])
                    )))
                }
            }
            "setname" | "getname" | "id" | "setinfo" => Err(arity_error(&format!("client|{sub}"))),
            _ => Err(Reply::Error(format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(args[1])
            ))),
        };
        encode_reply(out, &reply.unwrap_or_else(|e| e));
    }

    /// The settings CONFIG GET reports, by Redis's names.
    fn settings(&self) -> Vec<(&'static str, String)> {
        let o = &self.opts;
        vec![
            ("notify-keyspace-events", "KEA".into()),
            ("maxclients", o.max_sessions.to_string()),
            ("databases", "1".into()),
            ("port", self.streams.tcp_port().to_string()),
            (
                "bind",
                o.resp_bind
                    .map_or_else(|| "127.0.0.1".to_string(), |a| a.to_string()),
            ),
            (
                "unixsocket",
                self.streams
                    .unix_path()
                    .map_or_else(String::new, |p| p.display().to_string()),
            ),
            ("unixsocketperm", format!("{:o}", o.socket_mode)),
            ("protected-mode", "yes".into()),
            ("appendonly", "no".into()),
            ("save", String::new()),
            ("timeout", "0".into()),
            (
                "client-output-buffer-limit",
                format!(
                    "normal {0} {0} 0 slave 0 0 0 pubsub {0} {0} 0",
                    o.output_buffer
                ),
            ),
            (
                "client-query-buffer-limit",
                crate::reactor::session::QUERY_LIMIT.to_string(),
            ),
            ("proto-max-bulk-len", resp::MAX_BULK.to_string()),
            ("maxmemory", "0".into()),
        ]
    }

    fn config(&self, args: &[&[u8]], out: &mut Vec<u8>) {
        let sub = String::from_utf8_lossy(args[1]).to_ascii_lowercase();
        let n = args.len();
        let settings = self.settings();
        match sub.as_str() {
            "get" if n >= 3 => {
                let found: Vec<&(&str, String)> = settings
                    .iter()
                    .filter(|(k, _)| {
                        args[2..]
                            .iter()
                            .any(|p| crate::glob::matches(&p.to_ascii_lowercase(), k.as_bytes()))
                    })
                    .collect();
                resp::push_array_len(out, found.len() * 2);
                for (k, v) in found {
                    resp::push_bulk(out, k.as_bytes());
                    resp::push_bulk(out, v.as_bytes());
                }
            }
            // Keyspace notifications are always on; accepting the setting
            // keeps code written for Redis working.
            "set" if n == 4 && eq(args[2], "notify-keyspace-events") => resp::push_ok(out),
            "set" if n >= 4 => resp::push_error(
                out,
                &format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                    String::from_utf8_lossy(args[2])
                ),
            ),
            "resetstat" if n == 2 => resp::push_ok(out),
            "get" | "set" | "resetstat" => {
                encode_reply(out, &arity_error(&format!("config|{sub}")))
            }
            _ => resp::push_error(
                out,
                &format!(
                    "ERR unknown subcommand '{}'. Try CONFIG HELP.",
                    String::from_utf8_lossy(args[1])
                ),
            ),
        }
    }

    /// INFO [section ...]: the reactor's sections now, the keyspace section
    /// from the pool.
    fn info_command(&self, args: &[&[u8]]) -> Command {
        let wanted: Vec<String> = args[1..]
            .iter()
            .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
            .collect();
        let all = wanted.is_empty()
            || wanted
                .iter()
                .any(|w| matches!(w.as_str(), "all" | "default" | "everything"));
        let want = |s: &str| all || wanted.iter().any(|w| w == s);
        let mut text = String::new();
        let mut section = |name: &str, fields: Vec<(&str, String)>| {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            text.push_str(&format!("# {name}\r\n"));
            for (k, v) in fields {
                text.push_str(&format!("{k}:{v}\r\n"));
            }
        };
        let uptime = self.stats.started.elapsed().as_secs();
        if want("server") {
            section(
                "Server",
                vec![
                    ("redis_version", REDIS_COMPAT_VERSION.into()),
                    ("kvs_version", env!("CARGO_PKG_VERSION").into()),
                    ("redis_mode", "standalone".into()),
                    ("os", crate::sysinfo::os_name()),
                    ("arch_bits", (usize::BITS).to_string()),
                    ("multiplexing_api", "epoll".into()),
                    ("process_id", std::process::id().to_string()),
                    ("tcp_port", self.streams.tcp_port().to_string()),
                    ("uptime_in_seconds", uptime.to_string()),
                    ("uptime_in_days", (uptime / 86400).to_string()),
                ],
            );
        }
        if want("clients") {
            let pubsub = self
                .sessions
                .iter()
                .filter(|(_, s)| s.subscription_count() > 0)
                .count();
            section(
                "Clients",
                vec![
                    ("connected_clients", self.sessions.len().to_string()),
                    ("maxclients", self.opts.max_sessions.to_string()),
                    ("blocked_clients", "0".into()),
                    ("pubsub_clients", pubsub.to_string()),
                ],
            );
        }
        if want("memory") {
            let rss = crate::sysinfo::resident_bytes();
            section(
                "Memory",
                vec![
                    ("used_memory", rss.to_string()),
                    ("used_memory_human", human(rss)),
                    ("used_memory_rss", rss.to_string()),
                    ("used_memory_rss_human", human(rss)),
                    ("maxmemory", "0".into()),
                ],
            );
        }
        if want("persistence") {
            section(
                "Persistence",
                vec![
                    ("loading", "0".into()),
                    ("aof_enabled", "0".into()),
                    ("rdb_bgsave_in_progress", "0".into()),
                ],
            );
        }
        if want("stats") {
            let (channels, patterns) = self.subs.counts();
            section(
                "Stats",
                vec![
                    (
                        "total_connections_received",
                        self.stats.connections.to_string(),
                    ),
                    ("total_commands_processed", self.stats.commands.to_string()),
                    ("rejected_connections", self.stats.rejected.to_string()),
                    ("kvs_store_batches", self.stats.batches.to_string()),
                    ("pubsub_channels", channels.to_string()),
                    ("pubsub_patterns", patterns.to_string()),
                ],
            );
        }
        let keyspace = want("keyspace");
        if keyspace && !text.is_empty() {
            text.push_str("\r\n");
        }
        Command::Info { text, keyspace }
    }

    /// SUBSCRIBE / PSUBSCRIBE: answered once the store reports the changes
    /// they ask for (a keyspace channel watches its key; a pattern or a
    /// key-event channel needs a new filter).
    fn subscribe(&mut self, sid: SessionId, pattern: bool, names: &[&[u8]]) {
        let limit = self.opts.max_subscriptions;
        let mut keys = Vec::new();
        let mut wide = false;
        let mut out = Vec::new();
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        for &raw in names {
            let kind: &[u8] = if pattern { b"psubscribe" } else { b"subscribe" };
            let full = s.subscription_count() >= limit;
            let added = if pattern {
                !full && s.patterns.insert(raw.to_vec())
            } else {
                let channel = String::from_utf8_lossy(raw).into_owned();
                !full && !s.channels.contains(&channel) && {
                    if let Some(k) = channel_key(&channel) {
                        keys.push(k.to_owned());
                    }
                    wide |= is_keyevent(&channel);
                    s.channels.insert(channel)
                }
            };
            if added {
                if pattern {
                    self.subs.psubscribe(raw, sid);
                    wide = true;
                } else {
                    self.subs.subscribe(&String::from_utf8_lossy(raw), sid);
                }
            } else if full {
                crate::log_warn!(
                    "client {}: subscription limit ({limit}) reached, not subscribed to {}",
                    s.name,
                    String::from_utf8_lossy(raw)
                );
                resp::push_error(
                    &mut out,
                    &format!("ERR subscription limit ({limit}) reached"),
                );
                continue;
            }
            resp::push_array_len(&mut out, 3);
            resp::push_bulk(&mut out, kind);
            resp::push_bulk(&mut out, raw);
            resp::push_int(&mut out, s.subscription_count() as i64);
        }
        if keys.is_empty() && !wide {
            s.replies().extend_from_slice(&out);
            return;
        }
        let filter = wide.then(|| self.next_filter());
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        s.deferred = out;
        s.unconfirmed = keys.clone();
        s.busy = true;
        let generation = s.generation;
        self.pool
            .submit(sid, generation, StoreOp::Watch { keys, filter });
    }

    /// UNSUBSCRIBE / PUNSUBSCRIBE: the names given, or all of them.
    fn unsubscribe(&mut self, sid: SessionId, pattern: bool, names: &[&[u8]]) {
        let mut out = Vec::new();
        self.unsubscribe_into(sid, pattern, names, &mut out);
        if let Some(s) = self.sessions.get_mut(sid) {
            s.replies().extend_from_slice(&out);
        }
    }

    fn unsubscribe_into(
        &mut self,
        sid: SessionId,
        pattern: bool,
        names: &[&[u8]],
        out: &mut Vec<u8>,
    ) {
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        let names: Vec<Vec<u8>> = if !names.is_empty() {
            names.iter().map(|n| n.to_vec()).collect()
        } else if pattern {
            s.patterns.iter().cloned().collect()
        } else {
            s.channels.iter().map(|c| c.clone().into_bytes()).collect()
        };
        let kind: &[u8] = if pattern {
            b"punsubscribe"
        } else {
            b"unsubscribe"
        };
        for name in &names {
            if pattern {
                self.drop_pattern(sid, name);
            } else {
                self.drop_channel(sid, &String::from_utf8_lossy(name));
            }
            let count = self.sessions.get(sid).map_or(0, |s| s.subscription_count());
            resp::push_array_len(out, 3);
            resp::push_bulk(out, kind);
            resp::push_bulk(out, name);
            resp::push_int(out, count as i64);
        }
        if names.is_empty() {
            let count = self.sessions.get(sid).map_or(0, |s| s.subscription_count());
            resp::push_array_len(out, 3);
            resp::push_bulk(out, kind);
            resp::push_null(out);
            resp::push_int(out, count as i64);
        }
    }
}

/// COMMAND and its subcommands: enough for redis-cli and client libraries
/// that ask at start; kvs has no command table to show.
fn command_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let sub = args.get(1).map(|a| a.to_ascii_lowercase());
    match sub.as_deref() {
        None | Some(b"docs") => resp::push_array_len(out, 0),
        Some(b"count") => resp::push_int(out, (STORE_COMMANDS.len() + LOCAL_COMMANDS.len()) as i64),
        Some(b"list") => {
            resp::push_array_len(out, STORE_COMMANDS.len() + LOCAL_COMMANDS.len());
            for c in STORE_COMMANDS.iter().chain(LOCAL_COMMANDS) {
                resp::push_bulk(out, c.as_bytes());
            }
        }
        Some(b"info") => {
            resp::push_array_len(out, args.len() - 2);
            for _ in 2..args.len() {
                resp::push_null(out);
            }
        }
        Some(_) => resp::push_error(
            out,
            &format!(
                "ERR unknown subcommand '{}'. Try COMMAND HELP.",
                String::from_utf8_lossy(args[1])
            ),
        ),
    }
}

fn human(bytes: u64) -> String {
    let mb = bytes as f64 / (1024.0 * 1024.0);
    if mb >= 1024.0 {
        format!("{:.2}G", mb / 1024.0)
    } else if mb >= 1.0 {
        format!("{mb:.2}M")
    } else {
        format!("{:.2}K", bytes as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_command_text_is_redis_s() {
        assert_eq!(
            unknown_command(&[b"foo", b"a", b"b"]),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            unknown_command(&[b"foo"]),
            "ERR unknown command 'foo', with args beginning with: "
        );
    }

    #[test]
    fn store_commands_check_arity_and_values() {
        let info = || Command::DbSize;
        assert_eq!(
            store_command("get", &[b"get"], info),
            Err(arity_error("get"))
        );
        assert_eq!(
            store_command("mset", &[b"mset", b"a", b"1", b"b"], info),
            Err(arity_error("mset"))
        );
        assert!(matches!(
            store_command("set", &[b"set", b"a b", b"1"], info),
            Err(Reply::Error(e)) if e.contains("40 bytes")
        ));
        assert!(matches!(
            store_command("set", &[b"set", b"k", b"v", b"EX", b"10"], info),
            Err(Reply::Error(e)) if e.contains("EX")
        ));
        assert_eq!(
            store_command("set", &[b"set", b"k", b"v", b"nx", b"xx"], info),
            Err(syntax_error())
        );
        assert_eq!(
            store_command("get", &[b"get", &[b'k'; 41]], info),
            Err(Reply::Value(None))
        );
        assert_eq!(
            store_command("scan", &[b"scan", b"x"], info),
            Err(Reply::Error("ERR invalid cursor".into()))
        );
        assert_eq!(
            store_command(
                "scan",
                &[b"scan", b"0", b"count", b"5", b"match", b"a*"],
                info
            ),
            Ok(Command::Scan {
                cursor: 0,
                count: 5,
                pattern: Some(b"a*".to_vec())
            })
        );
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }
}
