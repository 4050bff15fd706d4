//! Client-side caching (CLIENT TRACKING): a client that caches what it
//! reads hears when any of it changes, from any source (a FIFO client, a
//! job file, another RESP client), as Redis tells it: an `invalidate` push
//! in RESP3, or a message on `__redis__:invalidate` to the client named by
//! REDIRECT. In the default mode a key is remembered for a client when the
//! client asks to read it, before the read runs, so a change that lands
//! between the read and its reply still invalidates (at worst once too
//! often, never too rarely); each remembered key is told once, then
//! forgotten until read again. BCAST tells every change of keys with the
//! client's prefixes. While any client tracks, the store reports every
//! change (the pattern filter's `everything`).

use crate::protocol::resp;
use crate::reactor::command::Command;
use crate::reactor::event_loop::Reactor;
use crate::reactor::pubsub::SessionId;
use crate::reactor::session::{Link, Tracking};
use crate::reactor::store_ops::StoreOp;
use crate::store::KeyEvent;
use std::collections::HashMap;

/// The keys each tracking client may have cached.
#[derive(Debug, Default)]
pub struct TrackingTable {
    keys: HashMap<Vec<u8>, Vec<SessionId>>,
    clients: usize,
    /// This turn's changed keys (and who changed them), for BCAST clients:
    /// told once the turn's changes are all in, one message per prefix,
    /// as Redis tells them before it sleeps.
    broadcast: Vec<(Vec<u8>, Option<SessionId>)>,
}

impl TrackingTable {
    pub fn clients(&self) -> usize {
        self.clients
    }
}

const INVALIDATE_CHANNEL: &str = "__redis__:invalidate";

impl Reactor {
    fn tracking_of(&self, sid: SessionId) -> Option<&Tracking> {
        match self.sessions.get(sid).map(|s| &s.link) {
            Some(Link::Stream { resp, .. }) => resp.tracking.as_ref(),
            _ => None,
        }
    }

    /// Remembers the keys a read command of a tracking client names,
    /// before the read runs (see the module's doc).
    pub(super) fn track_read(&mut self, sid: SessionId, cmd: &Command) {
        let Some(t) = self.tracking_mut(sid) else {
            return;
        };
        let caching = t.caching.take();
        let wanted = !t.bcast
            && if t.optin {
                caching == Some(true)
            } else if t.optout {
                caching != Some(false)
            } else {
                true
            };
        let read = matches!(
            cmd,
            Command::Get(_)
                | Command::MGet(_)
                | Command::Exists(_)
                | Command::Strlen(_)
                | Command::Type(_)
                | Command::GetRange { .. }
        );
        if !(wanted && read) {
            return;
        }
        for k in cmd.keys().unwrap_or_default() {
            let who = self.tracking.keys.entry(k.to_vec()).or_default();
            if !who.contains(&sid) {
                who.push(sid);
            }
        }
    }

    /// Tells tracking clients of `changes`.
    pub(in crate::reactor::event_loop) fn invalidate(
        &mut self,
        changes: &[crate::reactor::mailbox::Changed],
    ) {
        // As Redis tells them: in the default mode one message per key;
        // in BCAST one per prefix, with every key of this turn's changes
        // that starts with it. NOLOOP: not of a client's own changes.
        let noloop = |me: &Reactor, sid: SessionId| me.tracking_of(sid).is_some_and(|t| t.noloop);
        // A key's creation ('new') is followed by the change that made
        // it, which is what invalidates: telling both would say it twice.
        let changes = changes.iter().filter(|c| c.event != KeyEvent::New);
        for c in changes.clone() {
            if let Some(who) = self.tracking.keys.remove(c.key.as_slice()) {
                for sid in who {
                    if !(c.origin == Some(sid) && noloop(self, sid)) {
                        self.send_invalidation(sid, &[&c.key]);
                    }
                }
            }
        }
        let any_bcast = self.sessions.iter().any(|(_, s)| {
            matches!(&s.link, Link::Stream { resp, .. } if resp.tracking.as_ref().is_some_and(|t| t.bcast))
        });
        if any_bcast {
            self.tracking
                .broadcast
                .extend(changes.map(|c| (c.key.clone(), c.origin)));
        }
    }

    /// Tells BCAST clients of this turn's changes (see [`TrackingTable`]).
    pub(in crate::reactor::event_loop) fn flush_broadcasts(&mut self) {
        if self.tracking.broadcast.is_empty() {
            return;
        }
        // As Redis's radix tree of a turn's keys: each key once, in byte
        // order, remembering who changed it last (for NOLOOP).
        let changes: std::collections::BTreeMap<Vec<u8>, Option<SessionId>> =
            std::mem::take(&mut self.tracking.broadcast)
                .into_iter()
                .collect();
        let bcast: Vec<(SessionId, Vec<Vec<u8>>, bool)> = self
            .sessions
            .iter()
            .filter_map(|(sid, s)| match &s.link {
                Link::Stream { resp, .. } => resp
                    .tracking
                    .as_ref()
                    .filter(|t| t.bcast)
                    .map(|t| (sid, t.prefixes.clone(), t.noloop)),
                _ => None,
            })
            .collect();
        for (sid, prefixes, noloop) in bcast {
            let all = [Vec::new()];
            let prefixes = if prefixes.is_empty() {
                &all[..]
            } else {
                &prefixes[..]
            };
            for p in prefixes {
                let keys: Vec<&[u8]> = changes
                    .iter()
                    .filter(|(k, origin)| k.starts_with(p) && !(noloop && **origin == Some(sid)))
                    .map(|(k, _)| k.as_slice())
                    .collect();
                if !keys.is_empty() {
                    self.send_invalidation(sid, &keys);
                }
            }
        }
    }

    /// The session that hears `sid`'s invalidations: itself, or its
    /// REDIRECT target (by CLIENT ID).
    fn invalidation_target(&self, sid: SessionId) -> Option<SessionId> {
        match self.tracking_of(sid)?.redirect {
            None => Some(sid),
            Some(id) => self
                .sessions
                .iter()
                .find(|(_, s)| s.generation + 1 == id)
                .map(|(t, _)| t),
        }
    }

    fn send_invalidation(&mut self, sid: SessionId, keys: &[&[u8]]) {
        let Some(target) = self.invalidation_target(sid) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(target) else {
            return;
        };
        let mut msg = Vec::new();
        if s.proto() >= 3 {
            resp::push_push_len(&mut msg, 2, 3);
            resp::push_bulk(&mut msg, b"invalidate");
        } else if s.channels.contains(INVALIDATE_CHANNEL.as_bytes()) {
            resp::push_array_len(&mut msg, 3);
            resp::push_bulk(&mut msg, b"message");
            resp::push_bulk(&mut msg, INVALIDATE_CHANNEL.as_bytes());
        } else {
            // A RESP2 client without a subscribed REDIRECT cannot be told.
            return;
        }
        resp::push_array_len(&mut msg, keys.len());
        for k in keys {
            resp::push_bulk(&mut msg, k);
        }
        s.notices().extend_from_slice(&msg);
        self.dirty.push(target);
    }

    /// Forgets `sid` as a tracking client (CLIENT TRACKING off, or gone).
    pub(super) fn stop_tracking(&mut self, sid: SessionId) {
        let was = self.resp_state(sid).and_then(|r| r.tracking.take());
        if was.is_some() {
            self.forget_tracked(sid);
        }
    }

    /// Drops `sid` from the table (it is ending or stopped tracking).
    pub(in crate::reactor::event_loop) fn forget_tracked(&mut self, sid: SessionId) {
        self.tracking.keys.retain(|_, who| {
            who.retain(|&w| w != sid);
            !who.is_empty()
        });
        self.tracking.clients = self.tracking.clients.saturating_sub(1);
        if self.tracking.clients == 0 {
            self.refilter();
        }
    }

    /// CLIENT TRACKING on|off [REDIRECT id] [PREFIX p ...] [BCAST] [OPTIN]
    /// [OPTOUT] [NOLOOP], CLIENT CACHING yes|no, CLIENT TRACKINGINFO and
    /// CLIENT GETREDIR.
    pub(super) fn client_tracking(&mut self, sid: SessionId, args: &[&[u8]], out: &mut Vec<u8>) {
        let sub = args[1].to_ascii_lowercase();
        match sub.as_slice() {
            b"tracking" => self.tracking_on_off(sid, args, out),
            b"caching" => {
                let Some(t) = self.tracking_mut(sid) else {
                    return resp::push_error(out, "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled");
                };
                let yes = match args[2].to_ascii_lowercase().as_slice() {
                    b"yes" if t.optin => true,
                    b"no" if t.optout => false,
                    b"yes" | b"no" => return resp::push_error(out, "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode."),
                    _ => return resp::push_error(out, "ERR syntax error"),
                };
                t.caching = Some(yes);
                resp::push_ok(out);
            }
            b"getredir" => {
                let r = match self.tracking_of(sid) {
                    None => -1,
                    Some(t) => t.redirect.map_or(0, |id| id as i64),
                };
                resp::push_int(out, r);
            }
            _ => {
                // TRACKINGINFO: Redis's map of flags, redirect, prefixes.
                let proto = self.sessions.get(sid).map_or(2, |s| s.proto());
                let t = self.tracking_of(sid).cloned();
                resp::push_map_len(out, 3, proto);
                resp::push_bulk(out, b"flags");
                let mut flags: Vec<&str> = Vec::new();
                match &t {
                    None => flags.push("off"),
                    Some(t) => {
                        flags.push("on");
                        if t.bcast {
                            flags.push("bcast");
                        }
                        if t.optin {
                            flags.push("optin");
                        }
                        if t.optout {
                            flags.push("optout");
                        }
                        if t.noloop {
                            flags.push("noloop");
                        }
                    }
                }
                resp::push_array_len(out, flags.len());
                for f in flags {
                    resp::push_bulk(out, f.as_bytes());
                }
                resp::push_bulk(out, b"redirect");
                resp::push_int(
                    out,
                    t.as_ref()
                        .map_or(-1, |t| t.redirect.map_or(0, |id| id as i64)),
                );
                resp::push_bulk(out, b"prefixes");
                let prefixes = t.map(|t| t.prefixes).unwrap_or_default();
                resp::push_array_len(out, prefixes.len());
                for p in prefixes {
                    resp::push_bulk(out, &p);
                }
            }
        }
    }

    fn tracking_mut(&mut self, sid: SessionId) -> Option<&mut Tracking> {
        self.resp_state(sid)?.tracking.as_mut()
    }

    fn tracking_on_off(&mut self, sid: SessionId, args: &[&[u8]], out: &mut Vec<u8>) {
        let on = match args[2].to_ascii_lowercase().as_slice() {
            b"on" => true,
            b"off" => false,
            _ => return resp::push_error(out, "ERR syntax error"),
        };
        if !on {
            self.stop_tracking(sid);
            return resp::push_ok(out);
        }
        let mut t = Tracking::default();
        let mut rest = args[3..].iter();
        while let Some(opt) = rest.next() {
            match opt.to_ascii_lowercase().as_slice() {
                b"redirect" => {
                    let id = rest
                        .next()
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
                    match id {
                        Some(id) if self.sessions.iter().any(|(_, s)| s.generation + 1 == id) => {
                            t.redirect = Some(id)
                        }
                        Some(_) => {
                            return resp::push_error(
                                out,
                                "ERR The client ID you want redirect to does not exist",
                            )
                        }
                        None => return resp::push_error(out, "ERR syntax error"),
                    }
                }
                b"bcast" => t.bcast = true,
                b"optin" => t.optin = true,
                b"optout" => t.optout = true,
                b"noloop" => t.noloop = true,
                b"prefix" => match rest.next() {
                    Some(p) => t.prefixes.push(p.to_vec()),
                    None => return resp::push_error(out, "ERR syntax error"),
                },
                _ => return resp::push_error(out, "ERR syntax error"),
            }
        }
        if t.optin && t.optout {
            return resp::push_error(
                out,
                "ERR You can't use both OPTIN and OPTOUT at the same time",
            );
        }
        if !t.bcast && !t.prefixes.is_empty() {
            return resp::push_error(out, "ERR PREFIX option requires BCAST mode to be enabled");
        }
        if t.bcast && (t.optin || t.optout) {
            return resp::push_error(out, "ERR OPTIN and OPTOUT are not compatible with BCAST");
        }
        let was = self.resp_state(sid).and_then(|r| r.tracking.replace(t));
        if was.is_none() {
            self.tracking.clients += 1;
        }
        // Answered once the store reports every change: a read after this
        // reply is always followed by its key's invalidation.
        let (generation, list) = self.next_filter();
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        resp::push_ok(&mut s.deferred);
        s.busy = true;
        let g = s.generation;
        self.pool.submit(
            sid,
            g,
            StoreOp::Watch {
                keys: Vec::new(),
                filter: Some((generation, list)),
            },
        );
    }
}
