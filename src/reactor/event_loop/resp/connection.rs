//! What a RESP client says about itself: AUTH, HELLO, CLIENT.

use super::{arity_error, eq, parse_u64, syntax_error, REDIS_COMPAT_VERSION};
use crate::protocol::resp;
use crate::protocol::resp::encode_reply;
use crate::reactor::command::Reply;
use crate::reactor::event_loop::Reactor;
use crate::reactor::pubsub::SessionId;

/// Compares without an early exit, so the time taken does not tell how
/// much of a guessed password was right.
pub(super) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Reactor {
    /// AUTH [user] password: the only user is `default`.
    pub(super) fn auth(&mut self, sid: SessionId, user: Option<&[u8]>, pass: &[u8]) -> Reply {
        let Some(expected) = self.password.as_deref() else {
            return match user {
                // No password set: the default user needs none.
                Some(u) if u == b"default" => Reply::Ok,
                Some(_) => Reply::Error(
                    "WRONGPASS invalid username-password pair or user is disabled.".into(),
                ),
                None => Reply::Error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into()),
            };
        };
        let ok = user.is_none_or(|u| u == b"default") && same_secret(pass, expected);
        // A failed AUTH leaves a connection as it was (Redis 7): one that
        // had authenticated stays so.
        if let (true, Some(st)) = (ok, self.resp_state(sid)) {
            st.authenticated = true;
        }
        if ok {
            Reply::Ok
        } else {
            Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
        }
    }

    /// CLIENT REPLY ON | OFF | SKIP: only ON is answered.
    fn client_reply(&mut self, sid: SessionId, mode: &[u8], out: &mut Vec<u8>) {
        use crate::reactor::session::ReplyMode;
        let mode = match mode.to_ascii_lowercase().as_slice() {
            b"on" => ReplyMode::On,
            b"off" => ReplyMode::Off,
            b"skip" => ReplyMode::SkipNext,
            _ => return resp::push_error(out, "ERR syntax error"),
        };
        if let Some(st) = self.resp_state(sid) {
            // SKIP while OFF changes nothing (Redis 7): replies stay off
            // after the next command too.
            if !(mode == ReplyMode::SkipNext && st.reply_mode == ReplyMode::Off) {
                st.reply_mode = mode;
            }
        }
        if mode == ReplyMode::On {
            resp::push_ok(out);
        }
    }

    /// HELLO [protover [AUTH user pass] [SETNAME name]].
    pub(super) fn hello(&mut self, sid: SessionId, args: &[&[u8]], out: &mut Vec<u8>) {
        let reply = self.try_hello(sid, args);
        let id = self.client_id(sid);
        if let Err(r) = reply {
            return encode_reply(out, &r, 2);
        }
        let proto = self.sessions.get(sid).map_or(2, |s| s.proto());
        resp::push_map_len(out, 7, proto);
        for (k, v) in [("server", "redis"), ("version", REDIS_COMPAT_VERSION)] {
            resp::push_bulk(out, k.as_bytes());
            resp::push_bulk(out, v.as_bytes());
        }
        resp::push_bulk(out, b"proto");
        resp::push_int(out, i64::from(proto));
        resp::push_bulk(out, b"id");
        resp::push_int(out, id);
        for (k, v) in [("mode", "standalone"), ("role", "master")] {
            resp::push_bulk(out, k.as_bytes());
            resp::push_bulk(out, v.as_bytes());
        }
        resp::push_bulk(out, b"modules");
        resp::push_array_len(out, 0);
    }

    fn try_hello(&mut self, sid: SessionId, args: &[&[u8]]) -> Result<(), Reply> {
        let mut proto = None;
        if let Some(v) = args.get(1) {
            match parse_u64(v) {
                Some(v @ (2 | 3)) => proto = Some(v as u8),
                Some(_) => return Err(Reply::Error("NOPROTO unsupported protocol version".into())),
                None => {
                    return Err(Reply::Error(
                        "ERR Protocol version is not an integer or out of range".into(),
                    ))
                }
            }
        }
        let mut rest = args.iter().skip(2);
        let mut name = None;
        while let Some(opt) = rest.next() {
            if eq(opt, "auth") {
                let (Some(user), Some(pass)) = (rest.next(), rest.next()) else {
                    return Err(syntax_error());
                };
                if let Reply::Error(e) = self.auth(sid, Some(user), pass) {
                    return Err(Reply::Error(e));
                }
            } else if eq(opt, "setname") {
                name = Some(rest.next().ok_or_else(syntax_error)?);
            } else {
                return Err(Reply::Error(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(opt)
                )));
            }
        }
        if self.resp_state(sid).is_some_and(|st| !st.authenticated) {
            return Err(Reply::Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into()));
        }
        if let Some(n) = name {
            self.set_client_name(sid, n)?;
        }
        if let (Some(p), Some(st)) = (proto, self.resp_state(sid)) {
            st.proto = p;
        }
        Ok(())
    }

    /// A number that names this connection for its lifetime (CLIENT ID).
    pub(super) fn client_id(&self, sid: SessionId) -> i64 {
        self.sessions
            .get(sid)
            .map_or(0, |s| s.generation as i64 + 1)
    }

    fn set_client_name(&mut self, sid: SessionId, name: &[u8]) -> Result<(), Reply> {
        if !name.iter().all(|b| (b'!'..=b'~').contains(b)) {
            return Err(Reply::Error(
                "ERR Client names cannot contain spaces, newlines or special characters.".into(),
            ));
        }
        if let Some(st) = self.resp_state(sid) {
            st.name = (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned());
        }
        Ok(())
    }

    pub(super) fn client(&mut self, sid: SessionId, args: &[&[u8]], out: &mut Vec<u8>) {
        let sub = String::from_utf8_lossy(args[1]).to_ascii_lowercase();
        let n = args.len();
        match sub.as_str() {
            "list" | "info" => return self.client_list(sid, args, out),
            "kill" if n >= 3 => return self.client_kill(sid, args, out),
            "no-evict" | "no-touch" if n == 3 => return resp::push_ok(out),
            "reply" if n == 3 => return self.client_reply(sid, args[2], out),
            "tracking" if n >= 3 => return self.client_tracking(sid, args, out),
            "caching" if n == 3 => return self.client_tracking(sid, args, out),
            "trackinginfo" | "getredir" if n == 2 => return self.client_tracking(sid, args, out),
            _ => {}
        }
        let reply = match sub.as_str() {
            "setname" if n == 3 => self.set_client_name(sid, args[2]).map(|()| Reply::Ok),
            "getname" if n == 2 => Ok(Reply::Value(
                self.resp_state(sid)
                    .and_then(|st| st.name.clone())
                    .map(String::into_bytes),
            )),
            "id" if n == 2 => Ok(Reply::Int(self.client_id(sid))),
            "setinfo" if n == 4 => {
                if eq(args[2], "lib-name") || eq(args[2], "lib-ver") {
                    Ok(Reply::Ok)
                } else {
                    Err(Reply::Error(format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(args[2])
                    )))
                }
            }
            "setname" | "getname" | "id" | "setinfo" | "kill" | "no-evict" | "no-touch"
            | "reply" => Err(arity_error(&format!("client|{sub}"))),
            _ => Err(Reply::Error(format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(args[1])
            ))),
        };
        let proto = self.sessions.get(sid).map_or(2, |s| s.proto());
        encode_reply(out, &reply.unwrap_or_else(|e| e), proto);
    }
}
