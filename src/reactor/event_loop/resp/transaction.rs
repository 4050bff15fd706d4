//! MULTI, EXEC, DISCARD, WATCH and UNWATCH, with Redis 7's replies. Between
//! MULTI and EXEC a command is checked and queued (`+QUEUED`), or refused,
//! which makes EXEC answer `-EXECABORT`. EXEC goes to the store pool as one
//! [`Command::Exec`], run as one store transaction: every shard locked, so
//! nothing from any source lands between its commands. WATCH takes each
//! key's change count from the store (every change from FIFO clients, job
//! files and RESP clients counts, deletions too); EXEC runs nothing if one
//! moved, and answers a null array.

use super::store_commands::store_command;
use super::{arity_error, command_table, runs_on_store, unknown_command, LOCAL_COMMANDS};
use crate::protocol::resp;
use crate::reactor::command::{Command, Reply};
use crate::reactor::event_loop::Reactor;
use crate::reactor::pubsub::SessionId;
use crate::reactor::session::{Link, Multi};
use crate::reactor::store_ops::StoreOp;

/// What a command does to a session in a transaction, decided before the
/// usual dispatch.
pub(super) enum Step {
    /// Queued or refused; its reply is written.
    Answered,
    /// EXEC of a transaction that may run: this goes to the store.
    Exec(Command),
}

/// Whether a command the reactor answers itself can be queued to run at
/// EXEC. Redis queues every command but SAVE, SHUTDOWN and replication's;
/// kvs leaves out those whose answer waits for something else (CLIENT
/// TRACKING ON waits for the store pool) or that change how the
/// connection's later replies are framed or sent (HELLO, CLIENT REPLY,
/// SUBSCRIBE and the rest of pub/sub, MONITOR), and refuses them with a
/// clear error: EXEC's reply is one array written at once.
fn runs_in_exec(name: &str, args: &[&[u8]]) -> bool {
    let sub = args.get(1).map(|s| s.to_ascii_lowercase());
    match name {
        "hello" | "subscribe" | "unsubscribe" | "psubscribe" | "punsubscribe" | "monitor" => false,
        "client" => !matches!(sub.as_deref(), Some(b"tracking" | b"reply")),
        _ => true,
    }
}

fn arity_text(name: &str) -> String {
    match arity_error(name) {
        Reply::Error(e) => e,
        _ => String::new(),
    }
}

/// Commands that act on the transaction itself rather than being queued.
fn controls(name: &str) -> bool {
    matches!(
        name,
        "exec" | "discard" | "multi" | "watch" | "unwatch" | "quit" | "reset"
    )
}

impl Reactor {
    fn multi_of(&mut self, sid: SessionId) -> Option<&mut Multi> {
        self.resp_state(sid)?.multi.as_deref_mut()
    }

    /// Handles `name` if the session is queuing a transaction; `None` if
    /// it is not, or if `name` is one of the commands that act on it.
    pub(super) fn transaction_step(
        &mut self,
        sid: SessionId,
        name: &str,
        args: &[&[u8]],
    ) -> Option<Step> {
        let authenticated = {
            let s = self.sessions.get(sid)?;
            matches!(&s.link, Link::Stream { resp, .. } if resp.authenticated)
        };
        let multi = self.multi_of(sid)?;
        if name == "exec" && args.len() == 1 && !multi.aborted {
            return Some(Step::Exec(self.take_exec(sid)));
        }
        if controls(name) {
            return None;
        }
        // The command table's look-up, not a scan of the two lists: a
        // queued SET scanned them twice.
        let index = command_table::find_index(name);
        let stored = index.is_some_and(runs_on_store);
        let queued = if !stored && !LOCAL_COMMANDS.contains(&name) {
            Err(unknown_command(args))
        } else if !authenticated {
            Err("NOAUTH Authentication required.".into())
        } else {
            match name {
                // Redis's no-multi commands (of those kvs has).
                "shutdown" => Err("ERR Command not allowed inside a transaction".into()),
                "scan" => Err("ERR kvs does not queue 'scan' in a transaction".into()),
                _ if stored => {
                    // Queued values are copies (large values read apart
                    // go along only with commands run at once).
                    let info = || self.info_command(args);
                    let entry = index.map(|i| &command_table::COMMANDS[i]);
                    match store_command(name, entry, args, info, &|_| None) {
                        Err(Reply::Error(e)) => Err(e),
                        item => {
                            // A tracking client's read counts from when it
                            // is queued: a change before EXEC invalidates.
                            if let Ok(cmd) = &item {
                                self.track_read(sid, cmd);
                            }
                            Ok(item)
                        }
                    }
                }
                "ping" if args.len() <= 2 => Ok(Err(match args.get(1) {
                    Some(a) => Reply::Value(Some(a.to_vec())),
                    None => Reply::Status("PONG"),
                })),
                "echo" if args.len() == 2 => Ok(Err(Reply::Value(Some(args[1].to_vec())))),
                "ping" | "echo" => Err(arity_text(name)),
                _ if !runs_in_exec(name, args) => {
                    Err(format!("ERR kvs does not queue '{name}' in a transaction"))
                }
                _ if command_table::arity_fits(name, args.len()) == Some(false) => {
                    Err(arity_text(name))
                }
                "client" | "config" | "command" | "pubsub" | "function" if args.len() >= 2 => {
                    let sub = String::from_utf8_lossy(args[1]).to_ascii_lowercase();
                    let full = format!("{name}|{sub}");
                    match command_table::subcommand_fits(&full, args.len()) {
                        None => Err(format!(
                            "ERR unknown subcommand '{}'. Try {} HELP.",
                            String::from_utf8_lossy(args[1]),
                            name.to_ascii_uppercase()
                        )),
                        Some(false) => Err(arity_text(&full)),
                        Some(true) => Ok(self.queue_local(sid, args)),
                    }
                }
                _ => Ok(self.queue_local(sid, args)),
            }
        };
        let multi = self.multi_of(sid)?;
        let reply = match queued {
            Ok(item) => {
                multi.queued.push(item);
                Ok(())
            }
            Err(e) => {
                multi.aborted = true;
                Err(e)
            }
        };
        if let Some(s) = self.sessions.get_mut(sid) {
            match reply {
                Ok(()) => s.replies().extend_from_slice(b"+QUEUED\r\n"),
                Err(e) => resp::push_error(s.replies(), &e),
            }
        }
        self.dirty.push(sid);
        Some(Step::Answered)
    }

    /// Queues a command the reactor runs itself: it runs when EXEC's store
    /// part is back, and a placeholder holds its place among the replies.
    fn queue_local(&mut self, sid: SessionId, args: &[&[u8]]) -> Result<Command, Reply> {
        if let Some(m) = self.multi_of(sid) {
            let at = m.queued.len();
            m.locals
                .push((at, args.iter().map(|a| a.to_vec()).collect()));
        }
        Err(Reply::Framed(Vec::new()))
    }

    /// Ends the session's transaction and its watches: the EXEC to run.
    fn take_exec(&mut self, sid: SessionId) -> Command {
        let Some(resp) = self.resp_state(sid) else {
            return Command::DbSize;
        };
        let multi = resp.multi.take().unwrap_or_default();
        resp.exec_locals = multi.locals;
        resp.flushing |= multi.queued.iter().any(|c| matches!(c, Ok(Command::Flush)));
        Command::Exec {
            watched: std::mem::take(&mut resp.watching),
            queued: multi.queued,
        }
    }

    /// Runs the commands of an EXEC that the reactor answers itself, in
    /// their places among its replies (nothing when a WATCHed key kept
    /// the transaction from running).
    pub(in crate::reactor::event_loop) fn run_exec_locals(
        &mut self,
        sid: SessionId,
        replies: &mut [Reply],
    ) {
        let Some(locals) = self
            .resp_state(sid)
            .map(|r| std::mem::take(&mut r.exec_locals))
            .filter(|l| !l.is_empty())
        else {
            return;
        };
        let Some(Reply::Exec(Some(results))) =
            replies.iter_mut().find(|r| matches!(r, Reply::Exec(_)))
        else {
            return;
        };
        for (at, args) in locals {
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let name = String::from_utf8_lossy(args[0]).to_ascii_lowercase();
            let mut out = Vec::new();
            self.local_reply(sid, &name, &args, true, false, &mut out);
            if let Some(slot) = results.get_mut(at) {
                *slot = Reply::Framed(out);
            }
        }
    }

    /// Ends the session's transaction (if any) and its watches.
    pub(super) fn end_transaction(&mut self, sid: SessionId) {
        let Some(resp) = self.resp_state(sid) else {
            return;
        };
        resp.multi = None;
        let keys = std::mem::take(&mut resp.watching)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        self.pool.unwatch_versions(keys);
    }

    /// MULTI, EXEC (when it cannot run), DISCARD, WATCH and UNWATCH.
    pub(super) fn transaction_command(
        &mut self,
        sid: SessionId,
        name: &str,
        args: &[&[u8]],
        out: &mut Vec<u8>,
    ) {
        let in_multi = self.multi_of(sid).is_some();
        match name {
            "multi" if in_multi => resp::push_error(out, "ERR MULTI calls can not be nested"),
            "multi" => {
                if let Some(resp) = self.resp_state(sid) {
                    resp.multi = Some(Box::default());
                }
                resp::push_ok(out);
            }
            "exec" if !in_multi => resp::push_error(out, "ERR EXEC without MULTI"),
            "exec" => {
                self.end_transaction(sid);
                resp::push_error(
                    out,
                    "EXECABORT Transaction discarded because of previous errors.",
                );
            }
            "discard" if !in_multi => resp::push_error(out, "ERR DISCARD without MULTI"),
            "discard" | "unwatch" => {
                self.end_transaction(sid);
                resp::push_ok(out);
            }
            "watch" if in_multi => resp::push_error(out, "ERR WATCH inside MULTI is not allowed"),
            _ => {
                // WATCH: answered once the store has given the counts.
                let keys: Vec<Vec<u8>> = args[1..].iter().map(|k| k.to_vec()).collect();
                if let Some(s) = self.sessions.get_mut(sid) {
                    s.busy = true;
                    let generation = s.generation;
                    self.pool
                        .submit(sid, generation, StoreOp::WatchVersions(keys));
                }
            }
        }
    }
}
