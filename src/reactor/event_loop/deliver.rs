//! Subscriptions and the messages they bring, for sessions of both
//! protocols: a change to a key goes to its keyspace channel's
//! subscribers (an 82-byte notification to a FIFO client, a `message` to a
//! RESP client), to its key-event channel's and to every matching pattern,
//! in the order the store applied the changes.

use super::Reactor;
use crate::protocol::fifo as fifo_wire;
use crate::protocol::resp;
use crate::reactor::mailbox::Changed;
use crate::reactor::pubsub::{channel_key, is_keyevent, keyspace_channel, FilterList, SessionId};

use crate::reactor::session::Session;

/// Appends a RESP `message`.
pub(super) fn push_message(out: &mut Vec<u8>, proto: u8, channel: &[u8], payload: &[u8]) {
    resp::push_push_len(out, 3, proto);
    resp::push_bulk(out, b"message");
    resp::push_bulk(out, channel);
    resp::push_bulk(out, payload);
}

/// Appends a RESP `pmessage`.
pub(super) fn push_pmessage(
    out: &mut Vec<u8>,
    proto: u8,
    pattern: &[u8],
    channel: &[u8],
    payload: &[u8],
) {
    resp::push_push_len(out, 4, proto);
    resp::push_bulk(out, b"pmessage");
    resp::push_bulk(out, pattern);
    resp::push_bulk(out, channel);
    resp::push_bulk(out, payload);
}

impl Reactor {
    /// Forwards store changes to everyone who listens.
    pub(super) fn notify(&mut self, changes: &[Changed]) {
        let wide = self.subs.has_patterns() || self.subs.has_keyevent_subscribers();
        let flags = self.notify_flags;
        if self.tracking.clients() > 0 {
            self.invalidate(changes);
        }
        for Changed {
            key, value, event, ..
        } in changes
        {
            let space = keyspace_channel(key);
            let ev_name = event.name().as_bytes();
            // notify-keyspace-events, for RESP subscribers only: a FIFO
            // client's key subscription is kvs's own and always on.
            let to_space = flags.keyspace(*event);
            // A FIFO notification is the same 82 bytes for every
            // subscriber: made once, copied only where it must wait.
            let mut notice = Vec::new();
            for &sid in self.subs.subscribers(&space) {
                if let Some(s) = self.sessions.get_mut(sid) {
                    if !s.is_resp() && !event.changes_value() {
                        // A FIFO client hears of values, not deadlines.
                        continue;
                    }
                    if s.is_resp() {
                        if !to_space {
                            continue;
                        }
                        let proto = s.proto();
                        push_message(s.notices(), proto, &space, ev_name);
                    } else {
                        if notice.is_empty() {
                            fifo_wire::push_notification(&mut notice, key, value.as_deref());
                        }
                        // The first change of a turn leaves at once: with
                        // many subscribers, the first is not kept waiting
                        // while the others' are queued. Later ones in the
                        // same turn go together at its end, one write each.
                        if s.notified_turn != self.turn {
                            s.notified_turn = self.turn;
                            if s.send_notice(&notice) {
                                continue;
                            }
                        } else {
                            s.notices().extend_from_slice(&notice);
                        }
                    }
                    self.dirty.push(sid);
                }
            }
            if !wide {
                continue;
            }
            // Redis's order: the keyspace channel's patterns, then the
            // key-event channel and its patterns.
            if to_space {
                for (pattern, sids) in self.subs.matching_patterns(&space) {
                    for &sid in sids {
                        if let Some(s) = self.sessions.get_mut(sid) {
                            let proto = s.proto();
                            push_pmessage(s.notices(), proto, pattern, &space, ev_name);
                            self.dirty.push(sid);
                        }
                    }
                }
            }
            if flags.keyevent(*event) {
                self.publish(event.channel(), key);
            }
        }
    }

    /// Sends `payload` to the RESP subscribers of `channel` and of every
    /// pattern matching it; returns how many messages were queued.
    pub(super) fn publish(&mut self, channel: &[u8], payload: &[u8]) -> usize {
        let mut n = 0;
        for &sid in self.subs.subscribers(channel) {
            if let Some(s) = self.sessions.get_mut(sid).filter(|s| s.is_resp()) {
                let proto = s.proto();
                push_message(s.notices(), proto, channel, payload);
                self.dirty.push(sid);
                n += 1;
            }
        }
        for (pattern, sids) in self.subs.matching_patterns(channel) {
            for &sid in sids {
                if let Some(s) = self.sessions.get_mut(sid) {
                    let proto = s.proto();
                    push_pmessage(s.notices(), proto, pattern, channel, payload);
                    self.dirty.push(sid);
                    n += 1;
                }
            }
        }
        n
    }

    /// Ends `sid`'s subscription to `channel`; false if it had none.
    pub(super) fn drop_channel(&mut self, sid: SessionId, channel: &[u8]) -> bool {
        let Some(s) = self.sessions.get_mut(sid) else {
            return false;
        };
        if !s.channels.remove(channel) {
            return false;
        }
        self.subs.unsubscribe(channel, sid);
        if let Some(key) = channel_key(channel) {
            self.pool.unwatch(vec![key.to_vec()]);
        } else if is_keyevent(channel) {
            self.refilter();
        }
        true
    }

    /// Ends `sid`'s subscription to `pattern`; false if it had none.
    pub(super) fn drop_pattern(&mut self, sid: SessionId, pattern: &[u8]) -> bool {
        let Some(s) = self.sessions.get_mut(sid) else {
            return false;
        };
        if !s.patterns.remove(pattern) {
            return false;
        }
        self.subs.punsubscribe(pattern, sid);
        self.refilter();
        true
    }

    /// Forgets every subscription of a session leaving the slab.
    pub(super) fn forget_subscriptions(&mut self, sid: SessionId, s: &mut Session) {
        let mut keys = Vec::new();
        let mut wide = !s.patterns.is_empty();
        for channel in s.channels.drain() {
            self.subs.unsubscribe(&channel, sid);
            match channel_key(&channel) {
                // A watch still on its way is undone when its answer comes.
                Some(key) if !s.unconfirmed.iter().any(|k| k == key) => keys.push(key.to_vec()),
                Some(_) => {}
                None => wide |= is_keyevent(&channel),
            }
        }
        for pattern in s.patterns.drain() {
            self.subs.punsubscribe(&pattern, sid);
        }
        if !keys.is_empty() {
            self.pool.unwatch(keys);
        }
        if wide {
            self.refilter();
        }
    }

    /// The next filter for patterns and key-event channels, numbered.
    pub(super) fn next_filter(&mut self) -> (u64, FilterList) {
        self.filter_generation += 1;
        let tracking = self.tracking.clients() > 0;
        (
            self.filter_generation,
            self.subs.filter_list().with_everything(tracking),
        )
    }

    /// Hands the pool the filter that matches the subscriptions now.
    pub(super) fn refilter(&mut self) {
        let (generation, list) = self.next_filter();
        self.pool.install_filter(generation, list);
    }
}
