//! What a RESP client may ask about the server: INFO, CONFIG, COMMAND.

use super::{arity_error, encode_reply, eq, LOCAL_COMMANDS, REDIS_COMPAT_VERSION, STORE_COMMANDS};
use crate::protocol::resp;
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
                crate::reactor::session::QUERY_LIMIT.to_string(),
            ),
            ("proto-max-bulk-len", resp::MAX_BULK.to_string()),
            ("maxmemory", "0".into()),
        ]
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
            "set" if n == 4 && eq(args[2], "notify-keyspace-events") => {
                match crate::reactor::notify_flags::NotifyFlags::parse(args[3]) {
                    Some(f) => {
                        self.notify_flags = f;
                        resp::push_ok(out)
                    }
                    None => resp::push_error(
                        out,
                        "ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - Invalid event class character. Use 'Ag$lshzxeKEtmdn'.",
                    ),
                }
            }
            "set" if n >= 4 => resp::push_error(
                out,
                &format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                    String::from_utf8_lossy(args[2])
                ),
            ),
            "resetstat" if n == 2 => resp::push_ok(out),
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
        let keyspace = want("keyspace");
        if keyspace && !text.is_empty() {
            text.push_str("\r\n");
        }
        Command::Info { text, keyspace }
    }
}

/// COMMAND and its subcommands: enough for redis-cli and client libraries
/// that ask at start; kvs has no command table to show.
pub(super) fn command_command(out: &mut Vec<u8>, args: &[&[u8]]) {
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
