//! A RESP client's requests: each becomes a store [`Command`](crate::reactor::command::Command) (batched with
//! the ones after it, so a pipeline costs one trip to the store pool) or is
//! answered on the reactor. Replies and error texts are Redis 7's, so
//! client libraries and `redis-cli` see what they expect.
//!
//! This file parses, batches and dispatches; the commands live by subject:
//! [`store_commands`] (what goes to the store), [`connection`] (AUTH,
//! HELLO, CLIENT), [`server_info`] (INFO, CONFIG, COMMAND), [`pubsub`]
//! (SUBSCRIBE and the rest) and [`shutdown`].

mod client_list;
mod command_stats;
mod command_table;
mod connection;
mod monitor;
mod pubsub;
mod server_info;
mod shutdown;
mod store_commands;
mod tracking;
mod transaction;

pub use command_stats::CommandStats;
pub use tracking::TrackingTable;

use server_info::command_command;
use store_commands::{store_command, try_encode_gets, try_encode_reads, LeadingGets};

use super::super::Reactor;
use crate::protocol::resp::{self, encode_reply, Parsed};
use crate::reactor::command::Reply;
use crate::reactor::pubsub::SessionId;
use crate::reactor::session::{Link, RespState};
use crate::reactor::store_ops::{BatchItem, StoreOp};

/// Most commands handed to the pool in one batch.
const MAX_BATCH: usize = 1024;

/// The version kvs reports where clients expect Redis's (HELLO, INFO):
/// 7.4, the first release redis-py trusts with its client-side cache (the
/// replies kvs gives are checked against 7.0.15; none it has changed since).
const REDIS_COMPAT_VERSION: &str = "7.4.0";

/// Commands whose work is done by the store pool.
const STORE_COMMANDS: &[&str] = &[
    "get",
    "set",
    "setnx",
    "getset",
    "mget",
    "mset",
    "del",
    "unlink",
    "exists",
    "type",
    "strlen",
    "keys",
    "scan",
    "dbsize",
    "flushdb",
    "flushall",
    "info",
    "incr",
    "decr",
    "incrby",
    "decrby",
    "incrbyfloat",
    "append",
    "getrange",
    "substr",
    "setrange",
    "getdel",
    "msetnx",
    "rename",
    "renamenx",
    "copy",
    "touch",
    "randomkey",
    "object",
    "setex",
    "psetex",
    "getex",
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "ttl",
    "pttl",
    "expiretime",
    "pexpiretime",
    "persist",
    "setbit",
    "getbit",
    "lcs",
];

/// Whether the command at `index` of the command table is one of
/// [`STORE_COMMANDS`]: settled once, so that a request's name is looked up
/// once (a scan of the list cost as much as parsing the request).
fn runs_on_store(index: usize) -> bool {
    static STORED: std::sync::OnceLock<Vec<bool>> = std::sync::OnceLock::new();
    let stored = STORED.get_or_init(|| {
        command_table::COMMANDS
            .iter()
            .map(|c| STORE_COMMANDS.contains(&c.name))
            .collect()
    });
    stored.get(index).copied().unwrap_or(false)
}

/// Commands answered on the reactor.
const LOCAL_COMMANDS: &[&str] = &[
    "ping",
    "time",
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
    "pubsub",
    "function",
    "monitor",
    "shutdown",
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
];

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

/// Longest command name lowered on the stack (Redis's longest is 20).
const SHORT_NAME: usize = 32;

/// `name` in lower case, in `buf`, if it is ASCII and short: no allocation
/// per command (under pipelined SETs one was a few percent of the reactor).
fn lower_short<'b>(name: &[u8], buf: &'b mut [u8; SHORT_NAME]) -> Option<&'b str> {
    let short = buf.get_mut(..name.len())?;
    if !name.is_ascii() {
        return None;
    }
    short.copy_from_slice(name);
    short.make_ascii_lowercase();
    std::str::from_utf8(short).ok()
}

fn parse_u64(arg: &[u8]) -> Option<u64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

fn eq(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

impl Reactor {
    /// Parses and handles the RESP requests waiting in the session's buffer:
    /// every whole request is answered, or on its way to the pool, before
    /// this returns (a reply held back until the client sends more bytes
    /// would be a hang for a client that waits for it).
    pub(super) fn serve_resp(&mut self, sid: SessionId) {
        // Replies waiting from before this read (a batch's, just back) are
        // not held for the next batch: a client streaming requests gets
        // each batch's replies one pool round trip after it was answered.
        let fresh = self
            .sessions
            .get(sid)
            .is_some_and(|s| s.pending_output() == 0);
        // Each round ends at a batch; one answered here lets the next
        // round go on with what follows it.
        while self.serve_resp_round(sid, fresh) {}
    }

    /// One round of [`Reactor::serve_resp`]: local commands up to the
    /// first store command, then store commands up to the next local one.
    /// Returns whether the batch was answered here and requests may follow.
    fn serve_resp_round(&mut self, sid: SessionId, fresh: bool) -> bool {
        let Some(s) = self.sessions.get_mut(sid) else {
            return false;
        };
        // Nothing to parse (a session looked at again once its answer went
        // out, as every unpipelined one is): no batch to make room for.
        if s.inbuf.is_empty() {
            return false;
        }
        let buf = std::mem::take(&mut s.inbuf);
        let mut used = 0;
        // Room for most of a usual pipeline from the start (growing from
        // nothing reallocated four times for 16), but no more than 1 KiB:
        // mimalloc's aligned allocation, which Rust's allocator API always
        // uses, takes a slow over-allocating path above that for sizes that
        // are not a power of two (16 items, 1280 bytes, cost a lone
        // request 420 instructions more than 12).
        // The last round's, if it was answered here.
        let mut batch = std::mem::take(&mut self.spare_batch);
        if batch.capacity() == 0 {
            batch.reserve_exact(12);
        }
        // For commandstats, beside `batch`: each command's place in the
        // command table, or `None` once counted.
        let mut names = std::mem::take(&mut self.spare_names);
        if names.capacity() == 0 {
            names.reserve_exact(16);
        }
        // GETs before anything else, kept as keys: `batch` is empty while
        // there are any.
        let mut gets = LeadingGets::new();
        let mut failed = None;
        while batch.len() < MAX_BATCH && self.ready_for_more(sid) && !self.quitting(sid) {
            let waiting = gets.len() + batch.len();
            let unauthenticated = self.password.is_some() && !self.authenticated(sid);
            // An inline request with quotes has bytes of its own.
            let owned: Vec<Vec<u8>>;
            let (args, len) = match buf.parse(used, unauthenticated) {
                Parsed::Incomplete => break,
                Parsed::Error(e) => {
                    // Answer what came before the bad bytes first.
                    if waiting == 0 {
                        failed = Some(e);
                    }
                    break;
                }
                Parsed::Request(args, len) => (args, len),
                Parsed::Inline(args, len) => {
                    owned = args;
                    (owned.iter().map(Vec::as_slice).collect(), len)
                }
            };
            if args.is_empty() {
                used += len;
                continue;
            }
            let mut lower = [0u8; SHORT_NAME];
            let long_name: String;
            let repeated = command_table::find_repeated(args[0]);
            let name: &str = match repeated.map(|i| command_table::COMMANDS[i].name) {
                Some(known) => known,
                None => match lower_short(args[0], &mut lower) {
                    Some(short) => short,
                    None => {
                        long_name = String::from_utf8_lossy(args[0]).to_ascii_lowercase();
                        &long_name
                    }
                },
            };
            if let Some(s) = self.sessions.get_mut(sid) {
                s.qbuf = buf.len() - used;
                s.last_cmd.clear();
                s.last_cmd.push_str(name);
                let container = matches!(
                    name,
                    "client" | "config" | "command" | "pubsub" | "function"
                );
                if let (true, Some(sub)) = (container, args.get(1)) {
                    s.last_cmd.push('|');
                    s.last_cmd
                        .push_str(&String::from_utf8_lossy(sub).to_ascii_lowercase());
                }
            }
            // CLIENT REPLY: whether this command's reply is sent. Pub/sub
            // confirmations in RESP3 are pushes, sent whatever the mode.
            let silent = self.silenced(sid, name, &args);
            let mark = self.sessions.get_mut(sid).map_or(0, |s| s.replies().len());
            if self.in_multi(sid) {
                // Queued commands answer on the reactor: after the batch.
                let control = name == "exec" || name == "discard";
                if !control && waiting > 0 {
                    break;
                }
                match self.transaction_step(sid, name, &args) {
                    Some(transaction::Step::Answered) => {
                        used += len;
                        self.taken(sid, &args);
                        self.unsay(sid, silent, mark);
                        continue;
                    }
                    Some(transaction::Step::Exec(cmd)) => {
                        used += len;
                        self.taken(sid, &args);
                        self.silence_in_batch(sid, silent, waiting);
                        batch.push(Ok(cmd));
                        names.push(command_table::find_index("exec"));
                        continue;
                    }
                    None => {}
                }
            }
            let index = repeated.or_else(|| command_table::find_index(name));
            let stored = index.is_some_and(runs_on_store) && self.may_run(sid);
            if !stored && waiting > 0 {
                // Its answer must follow the batch's.
                break;
            }
            used += len;
            self.taken(sid, &args);
            if stored {
                self.silence_in_batch(sid, silent, waiting);
                let plain_get = name == "get" && args.len() == 2 && batch.is_empty();
                if plain_get && !self.tracks_reads(sid) && gets.push(&buf, args[1]) {
                    names.push(index);
                    continue;
                }
                gets.move_into(&mut batch, &buf);
                let info = index.map(|i| &command_table::COMMANDS[i]);
                let apart = |arg: &[u8]| buf.shared(arg);
                let item = store_command(name, info, &args, || self.info_command(&args), &apart);
                if matches!(item, Ok(crate::reactor::command::Command::Flush)) {
                    if let Some(st) = self.resp_state(sid) {
                        st.flushing = true;
                    }
                }
                match &item {
                    Ok(cmd) => {
                        self.track_read(sid, cmd);
                        names.push(index);
                    }
                    Err(Reply::Error(e)) if info.is_some_and(|c| !c.fits(args.len())) => {
                        self.cmdstats.rejected(Some(name), e);
                        names.push(None);
                    }
                    Err(reply) => {
                        let error = match reply {
                            Reply::Error(e) => Some(e.as_str()),
                            _ => None,
                        };
                        self.cmdstats.ran(name, 0, error);
                        names.push(None);
                    }
                }
                batch.push(item);
            } else {
                let started = std::time::Instant::now();
                self.local_command(sid, name, &args);
                self.count_local(sid, name, &args, mark, started);
                self.unsay(sid, silent, mark);
            }
        }
        let Some(s) = self.sessions.get_mut(sid) else {
            return false;
        };
        // Reads whose shards are free are answered here: two thread
        // hand-offs fewer, and still no waiting on a lock. One busy shard
        // sends the whole batch to the pool, to keep replies in order.
        let started = std::time::Instant::now();
        let proto = s.proto();
        let store = self.pool.store();
        let silenced = std::mem::take(&mut s.silenced);
        let count = gets.len() + batch.len();
        let read_gets =
            gets.len() > 0 && try_encode_gets(store, &gets, &buf, proto, &silenced, s.replies());
        if !read_gets {
            gets.move_into(&mut batch, &buf);
        }
        s.inbuf = buf;
        s.inbuf.consume(used);
        if let Some(e) = failed {
            s.silenced = silenced;
            self.protocol_error(sid, e);
            return false;
        }
        if count == 0 {
            s.silenced = silenced;
            self.keep_spares(batch, names);
            return false;
        }
        self.dirty.push(sid);
        if read_gets || try_encode_reads(store, &batch, proto, &silenced, s.replies()) {
            let more = !s.inbuf.is_empty();
            let each = started.elapsed().as_micros() as u64 / count as u64;
            // Only GETs (never an error) are counted here: the rest were
            // at dispatch.
            for &i in names.iter().flatten() {
                self.cmdstats.ran_at(i, each, None);
            }
            self.keep_spares(batch, names);
            return more;
        }
        s.silenced = silenced;
        s.batch_names = names;
        s.busy = true;
        s.holding = fresh;
        self.stats.batches += 1;
        self.pool.submit(sid, s.generation, StoreOp::Batch(batch));
        false
    }

    /// Counts a command answered on the reactor (INFO commandstats): an
    /// unknown one or one with the wrong argument count as refused, any
    /// other as a call, failed if its reply (written since `mark`) is an
    /// error.
    fn count_local(
        &mut self,
        sid: SessionId,
        name: &str,
        args: &[&[u8]],
        mark: usize,
        started: std::time::Instant,
    ) {
        let usec = started.elapsed().as_micros() as u64;
        let error = self.sessions.get_mut(sid).and_then(|s| {
            let out = s.replies().get(mark..).unwrap_or_default();
            let line = out.strip_prefix(b"-")?;
            let end = line.iter().position(|&b| b == b'\r').unwrap_or(line.len());
            Some(String::from_utf8_lossy(&line[..end]).into_owned())
        });
        let full = self
            .sessions
            .get(sid)
            .map(|s| s.last_cmd.clone())
            .unwrap_or_default();
        match command_table::arity_fits(name, args.len()) {
            None => self
                .cmdstats
                .rejected(None, error.as_deref().unwrap_or("ERR")),
            Some(false) => self
                .cmdstats
                .rejected(Some(&full), error.as_deref().unwrap_or("ERR")),
            Some(true) => self.cmdstats.ran(&full, usec, error.as_deref()),
        }
    }

    /// A command read whole and taken on: counted, shown to monitors, and
    /// a CLIENT REPLY SKIP used up.
    fn taken(&mut self, sid: SessionId, args: &[&[u8]]) {
        use crate::reactor::session::ReplyMode;
        self.stats.commands += 1;
        // As Redis, monitors see commands that run (or are queued), not
        // those refused unread: an unknown name or a wrong argument count.
        if !self.monitors.is_empty()
            && command_table::arity_fits(&String::from_utf8_lossy(args[0]), args.len())
                == Some(true)
        {
            self.feed_monitors(sid, args);
        }
        let client = args[0].eq_ignore_ascii_case(b"client");
        if let Some(resp) = self.resp_state(sid) {
            if resp.reply_mode == ReplyMode::SkipNext {
                resp.reply_mode = ReplyMode::On;
            }
            // CLIENT CACHING's answer is for the one command after it
            // (any command but CLIENT's, outside MULTI, as in Redis).
            if let (false, None, Some(t)) = (client, &resp.multi, resp.tracking.as_mut()) {
                t.caching_now = t.caching.take();
            }
        }
    }

    /// Whether CLIENT REPLY keeps the reply to this command from being
    /// sent (SKIP moves on to the command after in [`Reactor::taken`], once
    /// the command is really taken).
    fn silenced(&self, sid: SessionId, name: &str, args: &[&[u8]]) -> bool {
        let Some(Link::Stream { resp, .. }) = self.sessions.get(sid).map(|s| &s.link) else {
            return false;
        };
        let pushes = resp.proto >= 3 && name.ends_with("subscribe");
        // CLIENT REPLY sets the mode itself (and answers only ON).
        let reply_cmd = name == "client" && args.get(1).is_some_and(|a| eq(a, "reply"));
        !pushes && !reply_cmd && resp.reply_mode != crate::reactor::session::ReplyMode::On
    }

    /// Takes back what a silenced command wrote since `mark`.
    fn unsay(&mut self, sid: SessionId, silent: bool, mark: usize) {
        if let (true, Some(s)) = (silent, self.sessions.get_mut(sid)) {
            s.replies().truncate(mark);
        }
    }

    /// Keeps a round's emptied batch and names for the next round, unless
    /// a long pipeline grew them (they would hold its room for good).
    fn keep_spares(&mut self, mut batch: Vec<BatchItem>, mut names: Vec<Option<usize>>) {
        if batch.capacity() <= 64 && names.capacity() <= 64 {
            batch.clear();
            names.clear();
            self.spare_batch = batch;
            self.spare_names = names;
        }
    }

    fn silence_in_batch(&mut self, sid: SessionId, silent: bool, index: usize) {
        if let (true, Some(s)) = (silent, self.sessions.get_mut(sid)) {
            s.silenced.push(index);
        }
    }

    fn authenticated(&self, sid: SessionId) -> bool {
        matches!(
            self.sessions.get(sid).map(|s| &s.link),
            Some(Link::Stream { resp, .. }) if resp.authenticated
        )
    }

    fn in_multi(&self, sid: SessionId) -> bool {
        matches!(
            self.sessions.get(sid).map(|s| &s.link),
            Some(Link::Stream { resp, .. }) if resp.multi.is_some()
        )
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
        authenticated && (s.subscription_count() == 0 || s.proto() >= 3)
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
        if !authenticated && !matches!(name, "auth" | "hello" | "quit") {
            return resp::push_error(out, "NOAUTH Authentication required.");
        }
        let pubsub_ok = matches!(
            name,
            "subscribe" | "unsubscribe" | "psubscribe" | "punsubscribe" | "ping" | "quit" | "reset"
        );
        let proto = self.sessions.get(sid).map_or(2, |s| s.proto());
        // RESP3 carries messages as push frames: a subscriber may run any
        // command on the same connection, as in Redis.
        if subscribed && !pubsub_ok && proto < 3 {
            return resp::push_error(out, &format!(
                "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
            ));
        }
        let n = args.len();
        match name {
            "ping" if n <= 2 => {
                if subscribed && proto < 3 {
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
            // The server's clock, which deadlines are measured on.
            "time" if n == 1 => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                resp::push_array_len(out, 2);
                resp::push_bulk(out, now.as_secs().to_string().as_bytes());
                resp::push_bulk(out, now.subsec_micros().to_string().as_bytes());
            }
            "quit" => {
                resp::push_ok(out);
                if let Some(st) = self.resp_state(sid) {
                    st.quitting = true;
                }
            }
            "select" if n == 2 => match parse_u64(args[1]) {
                Some(0) => resp::push_ok(out),
                Some(_) => resp::push_error(out, "ERR DB index is out of range"),
                None => encode_reply(out, &not_integer(), 2),
            },
            "auth" if n > 3 => encode_reply(out, &syntax_error(), 2),
            "auth" if n == 2 || n == 3 => {
                let user = (n == 3).then(|| args[1]);
                let reply = self.auth(sid, user, args[n - 1]);
                encode_reply(out, &reply, 2);
            }
            "hello" => self.hello(sid, args, out),
            "client" if n >= 2 => self.client(sid, args, out),
            "command" => command_command(out, args, proto),
            "config" if n >= 2 => self.config(sid, args, out),
            "subscribe" | "psubscribe" if n >= 2 => {
                self.subscribe(sid, name == "psubscribe", &args[1..])
            }
            "unsubscribe" | "punsubscribe" => {
                self.unsubscribe(sid, name == "punsubscribe", &args[1..])
            }
            "pubsub" if n >= 2 => self.pubsub_command(args, out),
            "monitor" if n == 1 => self.start_monitor(sid, out),
            // kvs has no functions (no scripting): flushing them is true
            // at once, and the list is empty. Redis's test harness calls
            // FUNCTION FLUSH before every test.
            "function" if n >= 2 => match args[1].to_ascii_lowercase().as_slice() {
                b"flush" if n <= 3 => resp::push_ok(out),
                b"list" => resp::push_array_len(out, 0),
                _ => resp::push_error(
                    out,
                    &format!(
                        "ERR unknown subcommand or wrong number of arguments for '{}'. Try FUNCTION HELP.",
                        String::from_utf8_lossy(args[1])
                    ),
                ),
            },
            "shutdown" => self.shutdown_command(sid, args, out),
            "publish" if n == 3 => {
                let receivers = self.publish(args[1], args[2]);
                resp::push_int(out, receivers as i64);
            }
            "multi" | "exec" | "discard" | "unwatch" if n == 1 => {
                self.transaction_command(sid, name, args, out)
            }
            "watch" if n >= 2 => self.transaction_command(sid, name, args, out),
            "reset" if n == 1 => {
                self.end_transaction(sid);
                // RESET's own pub/sub replies are not sent, only its answer.
                let mut discarded = Vec::new();
                self.unsubscribe_into(sid, false, &[], &mut discarded);
                self.unsubscribe_into(sid, true, &[], &mut discarded);
                self.stop_tracking(sid);
                self.monitors.retain(|&m| m != sid);
                let has_password = self.password.is_some();
                // As Redis's RESET: back to a new connection's state.
                if let Some(st) = self.resp_state(sid) {
                    st.name = None;
                    st.authenticated = !has_password;
                    st.proto = 2;
                    st.reply_mode = crate::reactor::session::ReplyMode::On;
                    st.monitor = false;
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
                encode_reply(out, &arity_error(&shown), 2);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::connection::same_secret;
    use super::store_commands::store_command;
    use super::*;
    use crate::reactor::command::{Command, SetReply};
    use crate::store::SetIf;

    #[test]
    fn short_names_are_lowered_on_the_stack_and_others_not() {
        let mut buf = [0u8; SHORT_NAME];
        assert_eq!(lower_short(b"SeT", &mut buf), Some("set"));
        assert_eq!(lower_short(b"", &mut buf), Some(""));
        let longest = [b'X'; SHORT_NAME];
        assert_eq!(
            lower_short(&longest, &mut buf).map(str::len),
            Some(SHORT_NAME)
        );
        assert_eq!(lower_short(&[b'X'; SHORT_NAME + 1], &mut buf), None);
        assert_eq!(lower_short("gét".as_bytes(), &mut buf), None);
    }

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
        let store_command = |name, info_of, args: &[&[u8]], info| {
            store_command(name, info_of, args, info, &|_| None)
        };
        assert_eq!(
            store_command("get", command_table::find("get"), &[b"get"], info),
            Err(arity_error("get"))
        );
        assert_eq!(
            store_command(
                "mset",
                command_table::find("mset"),
                &[b"mset", b"a", b"1", b"b"],
                info
            ),
            Err(arity_error("mset"))
        );
        // Any bytes are a key or value, as in Redis.
        let long = [b'k'; 41];
        assert_eq!(
            store_command(
                "set",
                command_table::find("set"),
                &[b"set", b"a b", b"\0\xff"],
                info
            ),
            Ok(Command::Set {
                key: b"a b".to_vec(),
                value: b"\0\xff".to_vec().into(),
                cond: SetIf::Always,
                reply: SetReply::Ok
            })
        );
        assert!(matches!(
            store_command(
                "set",
                command_table::find("set"),
                &[b"set", b"k", b"v", b"EX", b"10"],
                info
            ),
            Ok(Command::SetTtl { .. })
        ));
        assert!(matches!(
            store_command("set", command_table::find("set"), &[b"set", b"k", b"v", b"EX", b"0"], info),
            Err(Reply::Error(e)) if e == "ERR invalid expire time in 'set' command"
        ));
        assert_eq!(
            store_command(
                "set",
                command_table::find("set"),
                &[b"set", b"k", b"v", b"nx", b"xx"],
                info
            ),
            Err(syntax_error())
        );
        assert_eq!(
            store_command("get", command_table::find("get"), &[b"get", &long], info),
            Ok(Command::Get(long.to_vec()))
        );
        assert_eq!(
            store_command("scan", command_table::find("scan"), &[b"scan", b"x"], info),
            Err(Reply::Error("ERR invalid cursor".into()))
        );
        assert_eq!(
            store_command(
                "scan",
                command_table::find("scan"),
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
