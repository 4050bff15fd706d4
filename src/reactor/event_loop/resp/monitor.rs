//! MONITOR: every command a RESP client sends, as the server reads it, to
//! each monitoring connection, in Redis's line format
//! (`+1339518083.107412 [0 127.0.0.1:60866] "set" "k" "v"`), AUTH's
//! password redacted. A monitor that falls behind is cut off like a
//! subscriber that does not read. FIFO clients' requests are not shown.

use crate::protocol::resp;
use crate::reactor::event_loop::Reactor;
use crate::reactor::pubsub::SessionId;
use crate::reactor::session::Link;

/// `arg` quoted as Redis's `sdscatrepr` quotes it.
fn push_repr(out: &mut String, arg: &[u8]) {
    out.push('"');
    for &b in arg {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            7 => out.push_str("\\a"),
            8 => out.push_str("\\b"),
            b if b.is_ascii_graphic() || b == b' ' => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
}

/// One MONITOR line for `args`, sent by the client named `from`.
pub(super) fn monitor_line(from: &str, args: &[&[u8]]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut line = format!("{}.{:06} [0 {from}]", now.as_secs(), now.subsec_micros());
    let redact = args
        .first()
        .is_some_and(|a| a.eq_ignore_ascii_case(b"auth") || a.eq_ignore_ascii_case(b"hello"));
    for (i, a) in args.iter().enumerate() {
        line.push(' ');
        if redact && i > 0 {
            line.push_str("\"(redacted)\"");
        } else {
            push_repr(&mut line, a);
        }
    }
    line
}

impl Reactor {
    /// MONITOR: this connection hears every command from now on.
    pub(super) fn start_monitor(&mut self, sid: SessionId, out: &mut Vec<u8>) {
        if let Some(resp) = self.resp_state(sid) {
            resp.monitor = true;
            if !self.monitors.contains(&sid) {
                self.monitors.push(sid);
            }
        }
        resp::push_ok(out);
    }

    /// Shows `args`, from session `sid`, to every monitor.
    pub(super) fn feed_monitors(&mut self, sid: SessionId, args: &[&[u8]]) {
        if self.monitors.is_empty() {
            return;
        }
        let Some(from) = self.sessions.get(sid).map(|s| s.name.clone()) else {
            return;
        };
        let line = monitor_line(&from, args);
        // A monitor that left may have handed its slot to a new session,
        // which must not inherit the feed: only sessions in MONITOR stay.
        let sessions = &self.sessions;
        self.monitors.retain(|&m| {
            matches!(sessions.get(m).map(|s| &s.link), Some(Link::Stream { resp, .. }) if resp.monitor)
        });
        for &m in &self.monitors {
            if m == sid {
                continue;
            }
            if let Some(s) = self.sessions.get_mut(m) {
                resp::push_simple(s.notices(), &line);
                self.dirty.push(m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_quote_as_redis_does() {
        let line = monitor_line("127.0.0.1:5", &[b"set", b"k\"1", b"a\nb\x01"]);
        let (stamp, rest) = line.split_once(' ').unwrap();
        assert!(stamp.contains('.') && stamp.len() > 11, "{stamp}");
        assert_eq!(rest, r#"[0 127.0.0.1:5] "set" "k\"1" "a\nb\x01""#);
        let auth = monitor_line("c", &[b"AUTH", b"secret"]);
        assert!(auth.ends_with(r#""AUTH" "(redacted)""#), "{auth}");
    }
}
