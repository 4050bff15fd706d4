//! SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE for RESP clients; the
//! tables and the delivery are in [`crate::reactor::event_loop::deliver`].

use crate::protocol::resp;
use crate::reactor::event_loop::Reactor;
use crate::reactor::pubsub::{channel_key, is_keyevent, SessionId};
use crate::reactor::store_ops::StoreOp;

impl Reactor {
    /// SUBSCRIBE / PSUBSCRIBE: answered once the store reports the changes
    /// they ask for (a keyspace channel watches its key; a pattern or a
    /// key-event channel needs a new filter).
    pub(super) fn subscribe(&mut self, sid: SessionId, pattern: bool, names: &[&[u8]]) {
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
                !full && !s.channels.contains(raw) && {
                    if let Some(k) = channel_key(raw) {
                        keys.push(k.to_vec());
                    }
                    wide |= is_keyevent(raw);
                    s.channels.insert(raw.to_vec())
                }
            };
            if added {
                if pattern {
                    self.subs.psubscribe(raw, sid);
                    wide = true;
                } else {
                    self.subs.subscribe(raw, sid);
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
            resp::push_push_len(&mut out, 3, s.proto());
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
    pub(super) fn unsubscribe(&mut self, sid: SessionId, pattern: bool, names: &[&[u8]]) {
        let mut out = Vec::new();
        self.unsubscribe_into(sid, pattern, names, &mut out);
        if let Some(s) = self.sessions.get_mut(sid) {
            s.replies().extend_from_slice(&out);
        }
    }

    pub(super) fn unsubscribe_into(
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
            s.channels.iter().cloned().collect()
        };
        let kind: &[u8] = if pattern {
            b"punsubscribe"
        } else {
            b"unsubscribe"
        };
        let proto = self.sessions.get(sid).map_or(2, |s| s.proto());
        for name in &names {
            if pattern {
                self.drop_pattern(sid, name);
            } else {
                self.drop_channel(sid, name);
            }
            let count = self.sessions.get(sid).map_or(0, |s| s.subscription_count());
            resp::push_push_len(out, 3, proto);
            resp::push_bulk(out, kind);
            resp::push_bulk(out, name);
            resp::push_int(out, count as i64);
        }
        if names.is_empty() {
            let count = self.sessions.get(sid).map_or(0, |s| s.subscription_count());
            resp::push_push_len(out, 3, proto);
            resp::push_bulk(out, kind);
            resp::push_null_in(out, proto);
            resp::push_int(out, count as i64);
        }
    }

    /// PUBSUB CHANNELS [pattern], NUMSUB [channel ...], NUMPAT. A FIFO
    /// client's key subscription is the keyspace channel of its key, so
    /// it counts here as it does for PUBLISH.
    pub(super) fn pubsub_command(&mut self, args: &[&[u8]], out: &mut Vec<u8>) {
        let sub = String::from_utf8_lossy(args[1]).to_ascii_lowercase();
        match (sub.as_str(), args.len()) {
            ("channels", 2 | 3) => {
                let names = self.subs.channels_matching(args.get(2).copied());
                resp::push_array_len(out, names.len());
                for n in names {
                    resp::push_bulk(out, n);
                }
            }
            // A flat array even in RESP3, as Redis 7.0 sends it.
            ("numsub", n) => {
                resp::push_array_len(out, 2 * (n - 2));
                for ch in &args[2..] {
                    resp::push_bulk(out, ch);
                    let count = self.subs.subscribers(ch).len();
                    resp::push_int(out, count as i64);
                }
            }
            ("numpat", 2) => resp::push_int(out, self.subs.counts().1 as i64),
            ("channels" | "numpat", _) => resp::push_error(
                out,
                &format!("ERR wrong number of arguments for 'pubsub|{sub}' command"),
            ),
            _ => resp::push_error(
                out,
                &format!(
                    "ERR unknown subcommand '{}'. Try PUBSUB HELP.",
                    String::from_utf8_lossy(args[1])
                ),
            ),
        }
    }
}
