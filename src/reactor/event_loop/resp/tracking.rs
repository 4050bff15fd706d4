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
#[derive(Debug)]
pub struct TrackingTable {
    keys: HashMap<Vec<u8>, Vec<SessionId>>,
    clients: usize,
    /// This turn's changed keys (and who changed them), for BCAST clients:
    /// told once the turn's changes are all in, one message per prefix,
    /// as Redis tells them before it sleeps.
    broadcast: Vec<(Vec<u8>, Option<SessionId>)>,
    /// `tracking-table-max-keys`: past it, keys are forgotten, each with
    /// an invalidation, as Redis evicts them (0: no limit).
    max_keys: usize,
}

impl Default for TrackingTable {
    fn default() -> Self {
        TrackingTable {
            keys: HashMap::new(),
            clients: 0,
            broadcast: Vec::new(),
            // Redis's default.
            max_keys: 1_000_000,
        }
    }
}

impl TrackingTable {
    pub fn clients(&self) -> usize {
        self.clients
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// CONFIG SET tracking-table-max-keys: takes effect at the end of
    /// the turn ([`Reactor::limit_tracking_table`]).
    pub fn set_max_keys(&mut self, n: usize) {
        self.max_keys = n;
    }

    /// INFO's `tracking_total_keys` and `tracking_total_items`: keys
    /// remembered, and (key, client) pairs.
    pub fn totals(&self) -> (usize, usize) {
        (self.keys.len(), self.keys.values().map(Vec::len).sum())
    }
}

const INVALIDATE_CHANNEL: &str = "__redis__:invalidate";

/// Redis's check that a BCAST client's prefixes do not overlap (two
/// prefixes would tell the same key twice): each new one against those it
/// has, then against the new ones after it.
fn check_prefixes(had: &[Vec<u8>], new: &[Vec<u8>]) -> Result<(), String> {
    let overlap = |a: &[u8], b: &[u8]| {
        let n = a.len().min(b.len());
        a[..n] == b[..n]
    };
    let shown = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    for (i, p) in new.iter().enumerate() {
        if let Some(h) = had.iter().find(|h| overlap(h, p)) {
            return Err(format!(
                "ERR Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                shown(p),
                shown(h)
            ));
        }
        if let Some(q) = new[i + 1..].iter().find(|q| overlap(p, q)) {
            return Err(format!(
                "ERR Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                shown(p),
                shown(q)
            ));
        }
    }
    Ok(())
}

impl Reactor {
    /// Every session with CLIENT TRACKING on, and its settings.
    fn tracking_clients(&self) -> impl Iterator<Item = (SessionId, &Tracking)> + '_ {
        self.sessions.iter().filter_map(|(sid, s)| match &s.link {
            Link::Stream { resp, .. } => resp.tracking.as_ref().map(|t| (sid, t)),
            _ => None,
        })
    }

    /// The session whose CLIENT ID is `id`, if it is still connected.
    fn session_of_client(&self, id: u64) -> Option<SessionId> {
        self.sessions
            .iter()
            .find(|(_, s)| s.generation + 1 == id)
            .map(|(sid, _)| sid)
    }

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
        // Queued in MULTI, the answer still waits in `caching`.
        let caching = t.caching_now.take().or(t.caching);
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
        // A flush is told once, as one invalidation of everything
        // ([`Reactor::tracking_flushed`]), not key by key.
        let changes = changes
            .iter()
            .filter(|c| !matches!(c.event, KeyEvent::New | KeyEvent::Flushed));
        for c in changes.clone() {
            if let Some(who) = self.tracking.keys.remove(c.key.as_slice()) {
                for sid in who {
                    // A client that went to BCAST since it read the key is
                    // not told of it (Redis's rule).
                    let default_mode = self.tracking_of(sid).is_some_and(|t| !t.bcast);
                    if default_mode && !(c.origin == Some(sid) && noloop(self, sid)) {
                        self.send_invalidation(sid, Some(&[&c.key]), c.origin);
                    }
                }
            }
        }
        let any_bcast = self.tracking_clients().any(|(_, t)| t.bcast);
        if any_bcast {
            self.tracking
                .broadcast
                .extend(changes.map(|c| (c.key.clone(), c.origin)));
        }
    }

    /// INFO's `tracking_total_prefixes`: the BCAST prefixes in use, each
    /// counted once however many clients have it.
    pub(super) fn tracking_prefixes(&self) -> usize {
        let mut all: Vec<&[u8]> = self
            .tracking_clients()
            .filter(|(_, t)| t.bcast)
            .flat_map(|(_, t)| t.prefixes.iter().map(Vec::as_slice))
            .collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    }

    /// A FLUSHALL or FLUSHDB ran (by `by`, if a session): every tracking
    /// client hears one invalidation of everything (a null in place of
    /// the keys), and the table is emptied, as in Redis. The flushing
    /// client itself hears it after its reply.
    pub(in crate::reactor::event_loop) fn tracking_flushed(&mut self, by: Option<SessionId>) {
        self.tracking.keys.clear();
        self.tracking.broadcast.clear();
        let tracking: Vec<SessionId> = self.tracking_clients().map(|(sid, _)| sid).collect();
        for sid in tracking {
            self.send_invalidation(sid, None, by);
        }
    }

    /// Forgets keys past `tracking-table-max-keys`, telling each one's
    /// clients that it is invalid, as Redis evicts from its table (once a
    /// turn, after the turn's reads were remembered).
    pub(in crate::reactor::event_loop) fn limit_tracking_table(&mut self) {
        let max = self.tracking.max_keys;
        if max == 0 || self.tracking.keys.len() <= max {
            return;
        }
        let excess = self.tracking.keys.len() - max;
        let evicted: Vec<Vec<u8>> = self.tracking.keys.keys().take(excess).cloned().collect();
        for key in evicted {
            for sid in self.tracking.keys.remove(&key).unwrap_or_default() {
                self.send_invalidation(sid, Some(&[&key]), None);
            }
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
            .tracking_clients()
            .filter(|(_, t)| t.bcast)
            .map(|(sid, t)| (sid, t.prefixes.clone(), t.noloop))
            .collect();
        for (sid, prefixes, noloop) in bcast {
            for p in &prefixes {
                let told: Vec<(&[u8], Option<SessionId>)> = changes
                    .iter()
                    .filter(|(k, origin)| k.starts_with(p) && !(noloop && **origin == Some(sid)))
                    .map(|(k, origin)| (k.as_slice(), *origin))
                    .collect();
                if told.is_empty() {
                    continue;
                }
                // After the reply of a command of its own still in flight.
                let origin = told
                    .iter()
                    .find(|(_, o)| *o == Some(sid))
                    .map_or(told[0].1, |(_, o)| *o);
                let keys: Vec<&[u8]> = told.iter().map(|(k, _)| *k).collect();
                self.send_invalidation(sid, Some(&keys), origin);
            }
        }
    }

    /// Sends `sid`'s invalidation of `keys` (`None`: everything, after a
    /// flush) where it goes: to `sid` in RESP3, or to its REDIRECT target
    /// (as a push, or a `__redis__:invalidate` message to a RESP2
    /// subscriber). A target that is gone breaks the redirect: a RESP3
    /// client is told so (`tracking-redir-broken`), as by Redis. When the
    /// change was the target's own (`origin`) and its reply is still on
    /// the way, the message waits to follow that reply.
    fn send_invalidation(
        &mut self,
        sid: SessionId,
        keys: Option<&[&[u8]]>,
        origin: Option<SessionId>,
    ) {
        let Some(t) = self.tracking_of(sid) else {
            return;
        };
        let client_proto = self.sessions.get(sid).map_or(2, |s| s.proto());
        let target = match t.redirect {
            None => sid,
            Some(id) => match self.session_of_client(id) {
                Some(t) => t,
                None => return self.redirect_broken(sid, id),
            },
        };
        let Some(s) = self.sessions.get_mut(target) else {
            return;
        };
        let mut msg = Vec::new();
        if s.proto() >= 3 {
            resp::push_push_len(&mut msg, 2, 3);
            resp::push_bulk(&mut msg, b"invalidate");
        } else if target != sid && s.subscription_count() > 0 {
            resp::push_array_len(&mut msg, 3);
            resp::push_bulk(&mut msg, b"message");
            resp::push_bulk(&mut msg, INVALIDATE_CHANNEL.as_bytes());
        } else {
            // RESP2 has no push frames: a client can be told only through
            // a REDIRECT target that is subscribed.
            return;
        }
        match keys {
            Some(keys) => {
                resp::push_array_len(&mut msg, keys.len());
                for k in keys {
                    resp::push_bulk(&mut msg, k);
                }
            }
            // In the tracking client's protocol, as Redis writes it.
            None => resp::push_null_in(&mut msg, client_proto),
        }
        if origin == Some(target) && s.busy {
            s.after_reply.extend_from_slice(&msg);
        } else {
            s.notices().extend_from_slice(&msg);
        }
        self.dirty.push(target);
    }

    fn redirect_broken(&mut self, sid: SessionId, id: u64) {
        if let Some(t) = self.tracking_mut(sid) {
            t.broken = true;
        }
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if s.proto() >= 3 {
            let out = s.notices();
            resp::push_push_len(out, 2, 3);
            resp::push_bulk(out, b"tracking-redir-broken");
            resp::push_int(out, id as i64);
            self.dirty.push(sid);
        }
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
                    b"yes" => return resp::push_error(out, "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode."),
                    b"no" => return resp::push_error(out, "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode."),
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
                // TRACKINGINFO: Redis's map of flags (a set), redirect,
                // prefixes (in byte order).
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
                            if t.caching == Some(true) {
                                flags.push("caching-yes");
                            }
                        }
                        if t.optout {
                            flags.push("optout");
                            if t.caching == Some(false) {
                                flags.push("caching-no");
                            }
                        }
                        if t.noloop {
                            flags.push("noloop");
                        }
                        if t.broken {
                            flags.push("broken_redirect");
                        }
                    }
                }
                resp::push_set_len(out, flags.len(), proto);
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

    /// Whether the session tracks its reads for client-side caching.
    pub(super) fn tracks_reads(&mut self, sid: SessionId) -> bool {
        self.tracking_mut(sid).is_some()
    }

    /// CLIENT TRACKING on|off with its options, checked in Redis's order
    /// and with its errors. Turning it on again keeps the prefixes a BCAST
    /// client had and adds the new ones, as Redis does.
    fn tracking_on_off(&mut self, sid: SessionId, args: &[&[u8]], out: &mut Vec<u8>) {
        let mut opts = Tracking::default();
        let mut redirect: Option<u64> = None;
        let mut prefixes: Vec<Vec<u8>> = Vec::new();
        let mut j = 3;
        while j < args.len() {
            let more = j + 1 < args.len();
            match args[j].to_ascii_lowercase().as_slice() {
                b"redirect" if more => {
                    j += 1;
                    if redirect.is_some() {
                        return resp::push_error(
                            out,
                            "ERR A client can only redirect to a single other client",
                        );
                    }
                    let Some(id) = std::str::from_utf8(args[j])
                        .ok()
                        .and_then(|v| v.parse::<i64>().ok())
                    else {
                        return resp::push_error(
                            out,
                            "ERR value is not an integer or out of range",
                        );
                    };
                    let exists = u64::try_from(id)
                        .ok()
                        .and_then(|id| self.session_of_client(id))
                        .is_some();
                    if !exists {
                        return resp::push_error(
                            out,
                            "ERR The client ID you want redirect to does not exist",
                        );
                    }
                    redirect = Some(id as u64);
                }
                b"bcast" => opts.bcast = true,
                b"optin" => opts.optin = true,
                b"optout" => opts.optout = true,
                b"noloop" => opts.noloop = true,
                b"prefix" if more => {
                    j += 1;
                    prefixes.push(args[j].to_vec());
                }
                _ => return resp::push_error(out, "ERR syntax error"),
            }
            j += 1;
        }
        match args[2].to_ascii_lowercase().as_slice() {
            b"on" => {}
            b"off" => {
                self.stop_tracking(sid);
                return resp::push_ok(out);
            }
            _ => return resp::push_error(out, "ERR syntax error"),
        }
        let was = self.tracking_of(sid).cloned();
        if !opts.bcast && !prefixes.is_empty() {
            return resp::push_error(out, "ERR PREFIX option requires BCAST mode to be enabled");
        }
        if was.as_ref().is_some_and(|w| w.bcast != opts.bcast) {
            return resp::push_error(out, "ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.");
        }
        if opts.bcast && (opts.optin || opts.optout) {
            return resp::push_error(out, "ERR OPTIN and OPTOUT are not compatible with BCAST");
        }
        if opts.optin && opts.optout {
            return resp::push_error(out, "ERR You can't specify both OPTIN mode and OPTOUT mode");
        }
        if was
            .as_ref()
            .is_some_and(|w| (opts.optin && w.optout) || (opts.optout && w.optin))
        {
            return resp::push_error(out, "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.");
        }
        let mut kept = was.map(|w| w.prefixes).unwrap_or_default();
        if opts.bcast {
            if let Err(e) = check_prefixes(&kept, &prefixes) {
                return resp::push_error(out, &e);
            }
            // No prefix: the empty one, which every key starts with.
            if prefixes.is_empty() {
                prefixes.push(Vec::new());
            }
            for p in prefixes {
                if !kept.contains(&p) {
                    kept.push(p);
                }
            }
            kept.sort();
        }
        let t = Tracking {
            redirect,
            prefixes: kept,
            caching: None,
            caching_now: None,
            broken: false,
            ..opts
        };
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
