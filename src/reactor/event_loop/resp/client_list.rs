//! CLIENT LIST, CLIENT INFO and CLIENT KILL: every session, of either
//! transport, in Redis 7's line format (`id=... addr=... name=... age=...
//! idle=... flags=... sub=... psub=... multi=... qbuf=... omem=... resp=...`),
//! so tools that read it (redis-cli, monitoring scripts) work. A FIFO
//! client's `addr` is its request FIFO's path.

use crate::protocol::resp;
use crate::reactor::event_loop::{Close, Reactor};
use crate::reactor::pubsub::SessionId;
use crate::reactor::session::{request_fd, Link, Session};
use std::time::Instant;

/// One session's line (no newline). The caller's `qbuf` counts the
/// request being served, as Redis's does.
fn line(s: &Session, now: Instant, caller: bool) -> String {
    let (name, proto, multi) = match &s.link {
        Link::Stream { resp, .. } => (
            resp.name.clone().unwrap_or_default(),
            s.proto(),
            resp.multi.as_ref().map_or(-1, |m| m.queued.len() as i64),
        ),
        Link::Fifo(_) => (String::new(), 2, -1),
    };
    let mut flags = String::new();
    if s.subscription_count() > 0 {
        flags.push('P');
    }
    if multi >= 0 {
        flags.push('x');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    format!(
        "id={} addr={} laddr={} fd={} name={name} age={} idle={} flags={flags} db=0 sub={} psub={} ssub=0 multi={multi} qbuf={} qbuf-free={} argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem={} tot-mem={} events=r cmd={} user=default redir=-1 resp={proto}",
        s.generation + 1,
        s.name,
        if s.laddr.is_empty() { "-" } else { &s.laddr },
        request_fd(&s.link).unwrap_or(-1),
        now.duration_since(s.connected_at).as_secs(),
        now.duration_since(s.last_active).as_secs(),
        s.channels.len(),
        s.patterns.len(),
        if caller { s.qbuf } else { s.inbuf.len() },
        s.inbuf.free(),
        s.pending_output(),
        s.buffer_bytes(),
        if s.last_cmd.is_empty() { "NULL" } else { &s.last_cmd },
    )
}

/// Whether `s` is of CLIENT LIST's / KILL's TYPE `kind`.
fn of_type(s: &Session, kind: &[u8]) -> Option<bool> {
    let pubsub = s.subscription_count() > 0;
    match kind.to_ascii_lowercase().as_slice() {
        b"normal" => Some(!pubsub),
        b"pubsub" => Some(pubsub),
        b"master" | b"replica" | b"slave" => Some(false),
        _ => None,
    }
}

impl Reactor {
    /// CLIENT LIST [TYPE t] [ID id ...] and CLIENT INFO.
    pub(super) fn client_list(&self, sid: SessionId, args: &[&[u8]], out: &mut Vec<u8>) {
        let now = Instant::now();
        let proto = self.sessions.get(sid).map_or(2, |s| s.proto());
        let info = args[1].eq_ignore_ascii_case(b"info");
        if info {
            if args.len() != 2 {
                return resp::push_error(
                    out,
                    "ERR wrong number of arguments for 'client|info' command",
                );
            }
            let text = self.sessions.get(sid).map(|s| line(s, now, true) + "\n");
            return resp::push_verbatim(out, text.unwrap_or_default().as_bytes(), proto);
        }
        let mut kind = None;
        let mut ids: Option<Vec<u64>> = None;
        let mut rest = args[2..].iter();
        while let Some(opt) = rest.next() {
            match (opt.to_ascii_lowercase().as_slice(), rest.next()) {
                (b"type", Some(t)) => {
                    if of_type(&self.sessions[sid], t).is_none() {
                        return resp::push_error(
                            out,
                            &format!("ERR Unknown client type '{}'", String::from_utf8_lossy(t)),
                        );
                    }
                    kind = Some(*t);
                }
                (b"id", Some(first)) => {
                    let mut list = Vec::new();
                    for id in std::iter::once(first).chain(rest.by_ref()) {
                        match std::str::from_utf8(id).ok().and_then(|t| t.parse().ok()) {
                            Some(n) if n > 0 => list.push(n),
                            _ => return resp::push_error(out, "ERR Invalid client ID"),
                        }
                    }
                    ids = Some(list);
                }
                _ => return resp::push_error(out, "ERR syntax error"),
            }
        }
        let mut text = String::new();
        for (other, s) in self.sessions.iter() {
            let wanted = kind.is_none_or(|k| of_type(s, k) == Some(true))
                && ids
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&(s.generation + 1)));
            if wanted {
                text.push_str(&line(s, now, other == sid));
                text.push('\n');
            }
        }
        resp::push_verbatim(out, text.as_bytes(), proto);
    }

    /// CLIENT KILL addr (the old form: `+OK` or an error) and CLIENT KILL
    /// with ID / ADDR / LADDR / TYPE / SKIPME filters (the count killed).
    pub(super) fn client_kill(&mut self, sid: SessionId, args: &[&[u8]], out: &mut Vec<u8>) {
        let old_form = args.len() == 3;
        let (mut id, mut addr, mut kind, mut skipme) = (None::<u64>, None, None, true);
        if old_form {
            addr = Some(args[2].to_vec());
        } else {
            let mut rest = args[2..].chunks(2);
            for pair in rest.by_ref() {
                let [opt, value] = pair else {
                    return resp::push_error(out, "ERR syntax error");
                };
                match opt.to_ascii_lowercase().as_slice() {
                    b"id" => match std::str::from_utf8(value).ok().and_then(|t| t.parse().ok()) {
                        Some(n) if n > 0 => id = Some(n),
                        _ => {
                            return resp::push_error(out, "ERR client-id should be greater than 0")
                        }
                    },
                    b"addr" => addr = Some(value.to_vec()),
                    // Connections have no local address worth naming here.
                    b"laddr" => return resp::push_int(out, 0),
                    b"type" => {
                        if of_type(&self.sessions[sid], value).is_none() {
                            return resp::push_error(
                                out,
                                &format!(
                                    "ERR Unknown client type '{}'",
                                    String::from_utf8_lossy(value)
                                ),
                            );
                        }
                        kind = Some(value.to_vec());
                    }
                    b"skipme" => match value.to_ascii_lowercase().as_slice() {
                        b"yes" => skipme = true,
                        b"no" => skipme = false,
                        _ => return resp::push_error(out, "ERR syntax error"),
                    },
                    // One user, `default`: every client is theirs.
                    b"user" if value.eq_ignore_ascii_case(b"default") => {}
                    b"user" => {
                        return resp::push_error(
                            out,
                            &format!("ERR No such user '{}'", String::from_utf8_lossy(value)),
                        )
                    }
                    b"maxage" => {}
                    _ => return resp::push_error(out, "ERR syntax error"),
                }
            }
        }
        let doomed: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|&(other, s)| {
                id.is_none_or(|id| s.generation + 1 == id)
                    && addr.as_deref().is_none_or(|a| s.name.as_bytes() == a)
                    && kind.as_deref().is_none_or(|k| of_type(s, k) == Some(true))
                    && !(skipme && other == sid && !old_form)
            })
            .map(|(other, _)| other)
            .collect();
        if old_form {
            if doomed.is_empty() {
                return resp::push_error(out, "ERR No such client");
            }
            resp::push_ok(out);
        } else {
            resp::push_int(out, doomed.len() as i64);
        }
        for other in doomed {
            if other == sid {
                // Its own: after the reply, as Redis does.
                if let Some(resp) = self.resp_state(sid) {
                    resp.quitting = true;
                }
            } else {
                self.close(other, Close::Quiet);
            }
        }
    }
}
