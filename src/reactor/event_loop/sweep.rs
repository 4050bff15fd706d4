//! Bounds in time, checked once a second: sessions idle past `--timeout`,
//! the buffers of sessions idle for [`RELEASE_AFTER`] given back,
//! RESP connections that have not authenticated within [`AUTH_WITHIN`] on
//! a server with a password, and clients whose unread output has stayed
//! over `--output-buffer` for [`OUTPUT_STALL`] without them taking any.
//! Also the rule that unauthenticated connections may hold at most an
//! eighth of the sessions ([`Reactor::make_room_for_unauthenticated`]),
//! so a flood of silent connections cannot lock out FIFO clients and
//! clients that know the password.

use super::{Close, Reactor, CLIENT_LOG};
use crate::reactor::pubsub::SessionId;
use crate::reactor::session::{Link, Session};
use std::time::{Duration, Instant};

/// How often the sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// A connection to a server with a password must AUTH within this.
pub const AUTH_WITHIN: Duration = Duration::from_secs(10);
/// A session with no request for this long gives back the room of its
/// empty buffers: kept while it is busy (a client sending 1 MB values
/// does not zero a new buffer for each), not for the rest of its life.
pub const RELEASE_AFTER: Duration = Duration::from_secs(2);

/// Output over the limit that nobody takes for this long ends the session:
/// a client reading a large reply takes some of it all the time (the
/// socket or pipe drains as it reads), one that stopped does not.
pub const OUTPUT_STALL: Duration = Duration::from_secs(10);

fn unauthenticated(s: &Session) -> bool {
    matches!(&s.link, Link::Stream { resp, .. } if !resp.authenticated)
}

/// Why `s` should end now, if it should.
fn expired(s: &Session, now: Instant, timeout: Option<Duration>, password: bool) -> Option<Close> {
    if password && unauthenticated(s) && now.duration_since(s.connected_at) >= AUTH_WITHIN {
        return Some(Close::Log(format!(
            "did not authenticate within {} s; disconnected",
            AUTH_WITHIN.as_secs()
        )));
    }
    if let Some(since) = s.over_since {
        if now.duration_since(since) >= OUTPUT_STALL {
            return Some(Close::Log(format!(
                "not reading: its output stayed over the limit for {} s; disconnected",
                OUTPUT_STALL.as_secs()
            )));
        }
    }
    // As Redis's timeout: a subscriber waits for messages, and a client
    // waiting for its answer is not idle.
    let waiting = s.busy || s.parked.is_some() || s.subscription_count() > 0;
    match timeout {
        Some(t) if !waiting && now.duration_since(s.last_active) >= t => Some(Close::Idle),
        _ => None,
    }
}

impl Reactor {
    pub(super) fn sweep(&mut self) {
        let now = Instant::now();
        let (timeout, password) = (self.opts.timeout, self.password.is_some());
        let due: Vec<(SessionId, Close)> = self
            .sessions
            .iter()
            .filter_map(|(sid, s)| expired(s, now, timeout, password).map(|why| (sid, why)))
            .collect();
        for (sid, why) in due {
            self.close(sid, why);
        }
        for (_, s) in self.sessions.iter_mut() {
            if !s.busy && now.duration_since(s.last_active) >= RELEASE_AFTER {
                s.release_buffers();
            }
        }
        let held = CLIENT_LOG
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .overdue();
        if held > 0 {
            crate::log_warn!(
                "{held} more lines about refused or disconnected clients were held back (rate limit) since the last report"
            );
        }
    }

    /// Before a new RESP connection on a server with a password: if
    /// unauthenticated connections hold their share of the sessions (an
    /// eighth), the oldest of them goes. A client that knows the password
    /// authenticates in its first round trip, so it is never the oldest
    /// for long; silent connections are.
    pub(super) fn make_room_for_unauthenticated(&mut self) {
        if self.password.is_none() {
            return;
        }
        let share = (self.opts.max_sessions / 8).max(1);
        let mut count = 0;
        let mut oldest: Option<(Instant, SessionId)> = None;
        for (sid, s) in self.sessions.iter() {
            if unauthenticated(s) {
                count += 1;
                if oldest.is_none_or(|(t, _)| s.connected_at < t) {
                    oldest = Some((s.connected_at, sid));
                }
            }
        }
        if let (true, Some((_, sid))) = (count >= share, oldest) {
            self.close(
                sid,
                Close::Log(format!(
                    "{count} connections have not authenticated ({share} may); closed the oldest"
                )),
            );
        }
    }
}
