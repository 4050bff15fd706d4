//! What a RESP client may ask about the server: INFO, CONFIG, COMMAND.

use super::command_table::{self, CommandInfo, COMMANDS};
use super::{arity_error, eq, CommandStats, REDIS_COMPAT_VERSION};
use crate::protocol::resp;
use crate::protocol::resp::encode_reply;
use crate::reactor::command::Command;
use crate::reactor::event_loop::Reactor;
use crate::reactor::pubsub::SessionId;

impl Reactor {
    /// The settings CONFIG GET reports, by Redis's names.
    fn settings(&self) -> Vec<(&'static str, String)> {
        let o = &self.opts;
        vec![
            ("notify-keyspace-events", self.notify_flags.text()),
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
            (
                "appendonly",
                if o.data.is_some() { "yes" } else { "no" }.into(),
            ),
            (
                "appendfsync",
                o.data.as_ref().map_or("no", |d| d.fsync.name()).into(),
            ),
            (
                "dir",
                o.data
                    .as_ref()
                    .map_or_else(String::new, |d| d.dir.display().to_string()),
            ),
            ("save", String::new()),
            ("timeout", o.timeout.map_or(0, |t| t.as_secs()).to_string()),
            (
                "client-output-buffer-limit",
                format!(
                    "normal 0 {0} {1} slave 0 0 0 pubsub {0} {0} 0",
                    o.output_buffer,
                    crate::reactor::event_loop::OUTPUT_STALL.as_secs()
                ),
            ),
            (
                "client-query-buffer-limit",
                crate::reactor::session::BULK_QUERY_LIMIT.to_string(),
            ),
            ("proto-max-bulk-len", resp::MAX_BULK.to_string()),
            ("maxmemory", "0".into()),
            // kvs stays in the foreground; a service manager runs it.
            ("daemonize", "no".into()),
            // As Redis shows it (to a client that may run CONFIG).
            (
                "requirepass",
                String::from_utf8_lossy(self.password.as_deref().unwrap_or_default()).into_owned(),
            ),
            (
                "tracking-table-max-keys",
                self.tracking.max_keys().to_string(),
            ),
        ]
    }

    /// CONFIG SET's pairs, checked as Redis checks them: first the names
    /// (the first unknown one; one Redis cannot change at run time either;
    /// one named twice), then the values, and nothing applies unless all
    /// pass. kvs changes `notify-keyspace-events` and
    /// `tracking-table-max-keys` at run time; every other setting it
    /// reports comes from its command line, so setting one to what it
    /// already is succeeds and anything else is refused with the reason.
    fn config_set(
        &mut self,
        pairs: &[&[u8]],
        settings: &[(&'static str, String)],
    ) -> Result<(), String> {
        let failed = |name: &[u8], why: &str| {
            format!(
                "ERR CONFIG SET failed (possibly related to argument '{}') - {why}",
                String::from_utf8_lossy(name)
            )
        };
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut refused = None;
        for pair in pairs.chunks(2) {
            let name = pair[0].to_ascii_lowercase();
            if !settings.iter().any(|(k, _)| k.as_bytes() == name) {
                return Err(format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                    String::from_utf8_lossy(pair[0])
                ));
            }
            if refused.is_none() {
                refused = match name.as_slice() {
                    b"databases" | b"unixsocket" | b"unixsocketperm" | b"daemonize" => {
                        Some(failed(pair[0], "can't set immutable config"))
                    }
                    b"dir" => Some(failed(pair[0], "can't set protected config")),
                    _ if names.contains(&name) => Some(failed(pair[0], "duplicate parameter")),
                    _ => None,
                };
            }
            names.push(name);
        }
        if let Some(e) = refused {
            return Err(e);
        }
        let mut notify = None;
        let mut max_keys = None;
        let mut password = None;
        for (pair, name) in pairs.chunks(2).zip(&names) {
            let value = pair[1];
            match name.as_slice() {
                b"notify-keyspace-events" => {
                    notify = Some(
                        crate::reactor::notify_flags::NotifyFlags::parse(value).ok_or_else(
                            || {
                                failed(
                                    pair[0],
                                    "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.",
                                )
                            },
                        )?,
                    );
                }
                b"tracking-table-max-keys" => {
                    let n = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<usize>().ok())
                        .ok_or_else(|| {
                            failed(pair[0], "argument couldn't be parsed into an integer")
                        })?;
                    max_keys = Some(n);
                }
                // As Redis: new connections must AUTH with it (those open
                // stay logged in); empty: no password. A server listening
                // beyond loopback keeps one (it needed one to start).
                b"requirepass" => {
                    let beyond = self.opts.resp_bind.is_some_and(|a| !a.is_loopback());
                    if value.is_empty() && beyond {
                        return Err(failed(
                            pair[0],
                            "kvs listens beyond loopback (--resp-bind) and keeps a password",
                        ));
                    }
                    password = Some((!value.is_empty()).then(|| value.to_vec()));
                }
                _ if settings
                    .iter()
                    .any(|(k, now)| k.as_bytes() == name.as_slice() && now.as_bytes() == value) => {
                }
                b"maxmemory" => {
                    return Err(failed(
                        pair[0],
                        "kvs has no memory limit and evicts nothing",
                    ))
                }
                _ => return Err(failed(
                    pair[0],
                    "kvs takes this setting from its command line; it cannot change while running",
                )),
            }
        }
        if let Some(f) = notify {
            self.notify_flags = f;
            self.pool.store().set_new_events(f.new_keys());
        }
        if let Some(n) = max_keys {
            self.tracking.set_max_keys(n);
        }
        if let Some(p) = password {
            if p.is_none() {
                // No password: nobody needs to log in any more.
                for (_, s) in self.sessions.iter_mut() {
                    if let crate::reactor::session::Link::Stream { resp, .. } = &mut s.link {
                        resp.authenticated = true;
                    }
                }
            }
            self.password = p;
        }
        Ok(())
    }

    pub(super) fn config(&mut self, sid: SessionId, args: &[&[u8]], out: &mut Vec<u8>) {
        let proto = self.sessions.get(sid).map_or(2, |s| s.proto());
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
                resp::push_map_len(out, found.len(), proto);
                for (k, v) in found {
                    resp::push_bulk(out, k.as_bytes());
                    resp::push_bulk(out, v.as_bytes());
                }
            }
            // Redis 7's form: pairs, checked whole before any applies.
            "set" if n >= 4 && n % 2 == 0 => match self.config_set(&args[2..], &settings) {
                Ok(()) => resp::push_ok(out),
                Err(e) => resp::push_error(out, &e),
            },
            "set" if n >= 4 => resp::push_error(
                out,
                &format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                    String::from_utf8_lossy(args[n - 1])
                ),
            ),
            "resetstat" if n == 2 => {
                self.cmdstats.reset();
                resp::push_ok(out)
            }
            "get" | "set" | "resetstat" => {
                encode_reply(out, &arity_error(&format!("config|{sub}")), proto)
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
    pub(super) fn info_command(&self, args: &[&[u8]]) -> Command {
        let wanted: Vec<String> = args[1..]
            .iter()
            .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
            .collect();
        let all = wanted.is_empty()
            || wanted
                .iter()
                .any(|w| matches!(w.as_str(), "all" | "default" | "everything"));
        // As Redis: `all` and `everything` add the two stats sections that
        // the default leaves out.
        let extra = wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "everything"));
        let want = |s: &str| all || wanted.iter().any(|w| w == s);
        let want_extra = |s: &str| extra || wanted.iter().any(|w| w == s);
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
        // With the server's (kvs's section), or alone: `INFO store`.
        if want("server") || want("store") {
            // Where the dataset is: this process, or etcd (kvs's fields).
            let store = match &self.mirror {
                None => vec![("kvs_store", "memory".to_string())],
                Some(m) => vec![
                    ("kvs_store", "etcd".to_string()),
                    ("kvs_store_endpoints", m.endpoints().join(",")),
                    (
                        "kvs_store_prefix",
                        String::from_utf8_lossy(m.prefix()).into_owned(),
                    ),
                    ("kvs_store_revision", m.revision().to_string()),
                    ("kvs_store_feed_lag_revisions", m.lag().to_string()),
                    ("kvs_store_following", u8::from(m.following()).to_string()),
                    (
                        "kvs_store_changes_applied_at_once",
                        m.applied_at_once().to_string(),
                    ),
                    (
                        "kvs_store_last_error",
                        m.last_error().replace(['\r', '\n'], " "),
                    ),
                    (
                        "kvs_store_reads",
                        if m.linearizable() {
                            "linearizable"
                        } else {
                            "cache"
                        }
                        .into(),
                    ),
                ],
            };
            section("Store", store);
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
                    ("tracking_clients", self.tracking.clients().to_string()),
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
                    // The allocator the kvs binary installs (src/bin/kvs.rs).
                    ("mem_allocator", "mimalloc".into()),
                ],
            );
        }
        if want("persistence") {
            section(
                "Persistence",
                vec![
                    ("loading", "0".into()),
                    (
                        "aof_enabled",
                        u8::from(self.opts.data.is_some()).to_string(),
                    ),
                    (
                        "aof_fsync",
                        self.opts
                            .data
                            .as_ref()
                            .map_or("", |d| d.fsync.name())
                            .into(),
                    ),
                    ("rdb_bgsave_in_progress", "0".into()),
                ],
            );
        }
        if want("stats") {
            let (channels, patterns) = self.subs.counts();
            let (keys, items) = self.tracking.totals();
            let prefixes = self.tracking_prefixes();
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
                    ("tracking_total_keys", keys.to_string()),
                    ("tracking_total_items", items.to_string()),
                    ("tracking_total_prefixes", prefixes.to_string()),
                ],
            );
        }
        if want("replication") {
            // One node: a primary with no replicas (clients such as
            // valkey-glide look for the role here to find the primary).
            section(
                "Replication",
                vec![
                    ("role", "master".into()),
                    ("connected_slaves", "0".into()),
                    ("master_failover_state", "no-failover".into()),
                    ("master_repl_offset", "0".into()),
                    ("repl_backlog_active", "0".into()),
                ],
            );
        }
        if want("cpu") {
            let (sys, user) = crate::sysinfo::cpu_seconds();
            section(
                "CPU",
                vec![
                    ("used_cpu_sys", format!("{sys:.6}")),
                    ("used_cpu_user", format!("{user:.6}")),
                ],
            );
        }
        for (wanted, title, fields) in [
            (
                "commandstats",
                "Commandstats",
                CommandStats::command_fields as fn(&_) -> _,
            ),
            ("errorstats", "Errorstats", CommandStats::error_fields),
        ] {
            if want_extra(wanted) {
                let fields = fields(&self.cmdstats);
                section(
                    title,
                    fields
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.clone()))
                        .collect(),
                );
            }
        }
        let keyspace = want("keyspace");
        if keyspace && !text.is_empty() {
            text.push_str("\r\n");
        }
        Command::Info { text, keyspace }
    }
}

/// One command's COMMAND INFO entry: name, arity, flags, first key, last
/// key, step, ACL categories, then tips, key specs and subcommands (kvs
/// gives those three empty).
fn push_info(out: &mut Vec<u8>, c: &CommandInfo) {
    resp::push_array_len(out, 10);
    resp::push_bulk(out, c.name.as_bytes());
    resp::push_int(out, c.arity);
    resp::push_array_len(out, c.flags.len());
    for f in c.flags {
        resp::push_simple(out, f);
    }
    resp::push_int(out, c.first_key);
    resp::push_int(out, c.last_key);
    resp::push_int(out, c.step);
    resp::push_array_len(out, c.acl.len());
    for a in c.acl {
        resp::push_simple(out, a);
    }
    // Tips and key specs: kvs does not carry them (see command_table).
    resp::push_array_len(out, 0);
    resp::push_array_len(out, 0);
    let subs: Vec<&CommandInfo> = command_table::subcommands_of(c.name).collect();
    resp::push_array_len(out, subs.len());
    for sub in subs {
        push_info(out, sub);
    }
}

/// COMMAND DOCS's entry for `c`: its summary, since, group and
/// complexity, and a container's subcommands' entries.
fn push_docs(out: &mut Vec<u8>, c: &CommandInfo, proto: u8) {
    let subs: Vec<&CommandInfo> = command_table::subcommands_of(c.name).collect();
    resp::push_bulk(out, c.name.as_bytes());
    resp::push_map_len(out, 4 + usize::from(!subs.is_empty()), proto);
    for (k, v) in [
        ("summary", c.summary),
        ("since", c.since),
        ("group", c.group),
        ("complexity", c.complexity),
    ] {
        resp::push_bulk(out, k.as_bytes());
        resp::push_bulk(out, v.as_bytes());
    }
    if !subs.is_empty() {
        resp::push_bulk(out, b"subcommands");
        resp::push_map_len(out, subs.len(), proto);
        for sub in subs {
            push_docs(out, sub, proto);
        }
    }
}

/// A command or subcommand (`container|sub`) by name, any case.
fn lookup(name: &str) -> Option<&'static CommandInfo> {
    let lower = name.to_ascii_lowercase();
    if lower.contains('|') {
        command_table::find_subcommand(&lower)
    } else {
        command_table::find(&lower)
    }
}

/// COMMAND and its subcommands, from kvs's command table.
pub(super) fn command_command(out: &mut Vec<u8>, args: &[&[u8]], proto: u8) {
    let sub = args.get(1).map(|a| a.to_ascii_lowercase());
    let name = |a: &[u8]| String::from_utf8_lossy(a).into_owned();
    match sub.as_deref() {
        None => {
            resp::push_array_len(out, COMMANDS.len());
            for c in COMMANDS {
                push_info(out, c);
            }
        }
        Some(b"count") => resp::push_int(out, COMMANDS.len() as i64),
        Some(b"info") => {
            let wanted: Vec<Option<&CommandInfo>> = if args.len() == 2 {
                COMMANDS.iter().map(Some).collect()
            } else {
                args[2..].iter().map(|a| lookup(&name(a))).collect()
            };
            resp::push_array_len(out, wanted.len());
            for c in wanted {
                match c {
                    Some(c) => push_info(out, c),
                    None => resp::push_null_in(out, proto),
                }
            }
        }
        Some(b"docs") => {
            let wanted: Vec<&CommandInfo> = if args.len() == 2 {
                COMMANDS.iter().collect()
            } else {
                args[2..].iter().filter_map(|a| lookup(&name(a))).collect()
            };
            resp::push_map_len(out, wanted.len(), proto);
            for c in wanted {
                push_docs(out, c, proto);
            }
        }
        Some(b"list") => {
            let filter = match args.get(2..) {
                Some([]) | None => Ok(None),
                Some([by, kind, value]) if eq(by, "filterby") => {
                    Ok(Some((kind.to_ascii_lowercase(), value.to_vec())))
                }
                _ => Err(()),
            };
            let Ok(filter) = filter else {
                return resp::push_error(out, "ERR syntax error");
            };
            // Subcommands too, by their full names, as Redis lists them.
            let names: Vec<&str> = COMMANDS
                .iter()
                .chain(command_table::SUBCOMMANDS)
                .filter(|c| match &filter {
                    None => true,
                    Some((kind, v)) => match kind.as_slice() {
                        b"aclcat" => c.acl.iter().any(|a| a[1..].eq_ignore_ascii_case(&name(v))),
                        b"pattern" => {
                            crate::glob::matches(&v.to_ascii_lowercase(), c.name.as_bytes())
                        }
                        // kvs has no modules.
                        _ => false,
                    },
                })
                .map(|c| c.name)
                .collect();
            if let Some((kind, _)) = &filter {
                if !matches!(kind.as_slice(), b"aclcat" | b"pattern" | b"module") {
                    return resp::push_error(out, "ERR syntax error");
                }
            }
            resp::push_array_len(out, names.len());
            for n in names {
                resp::push_bulk(out, n.as_bytes());
            }
        }
        Some(b"getkeys") if args.len() < 4 => {
            encode_reply(out, &arity_error("command|getkeys"), proto)
        }
        Some(b"getkeys") => {
            let Some(c) = command_table::find(&name(args[2])) else {
                return resp::push_error(out, "ERR Invalid command specified");
            };
            let given = (args.len() - 2) as i64;
            if (c.arity > 0 && given != c.arity) || (c.arity < 0 && given < -c.arity) {
                return resp::push_error(
                    out,
                    "ERR Invalid number of arguments specified for command",
                );
            }
            if c.first_key == 0 {
                return resp::push_error(out, "ERR The command has no key arguments");
            }
            let cmd = &args[2..];
            let last = if c.last_key < 0 {
                cmd.len() as i64 + c.last_key
            } else {
                c.last_key
            };
            let keys: Vec<&[u8]> = (c.first_key..=last)
                .step_by(c.step.max(1) as usize)
                .filter_map(|i| cmd.get(i as usize).copied())
                .collect();
            resp::push_array_len(out, keys.len());
            for k in keys {
                resp::push_bulk(out, k);
            }
        }
        Some(_) => resp::push_error(
            out,
            &format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try COMMAND HELP.",
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
