//! A FIFO client's requests (SPEC section 3): each frame becomes a
//! [`Command`] or a subscription change, and each reply a two-byte
//! answer (or READ's longer one).

use super::{Close, Reactor};
use crate::protocol::fifo::{self as protocol, Decoded, Request, FAIL, OK};
use crate::reactor::command::{Command, SetReply};
use crate::reactor::pubsub::{keyspace_channel, SessionId};
use crate::reactor::store_ops::StoreOp;
use crate::store::SetIf;

impl Reactor {
    /// Parses and handles the FIFO frames waiting in the session's buffer.
    pub(super) fn serve_fifo(&mut self, sid: SessionId) {
        while self.ready_for_more(sid) {
            let Some(s) = self.sessions.get_mut(sid) else {
                return;
            };
            let form = s.form();
            match Request::decode_in(&s.inbuf, form) {
                Decoded::Incomplete => break,
                Decoded::Request(r, len) => {
                    s.inbuf.consume(len);
                    self.stats.commands += 1;
                    self.handle_fifo(sid, r);
                }
                Decoded::Invalid { op, len, error } => {
                    s.inbuf.consume(len);
                    protocol::push_response(s.replies(), form.wire(op), FAIL);
                    // One line per session: a client sending nothing but
                    // bad messages must not flood the log.
                    if !s.invalid_logged {
                        s.invalid_logged = true;
                        crate::log_warn!(
                            "client {}: {error} (further bad messages not logged)",
                            s.name
                        );
                    }
                    self.dirty.push(sid);
                }
                Decoded::Unknown(op) => {
                    protocol::push_response(s.replies(), op, FAIL);
                    let why = format!("unknown op code {op}; closing the session");
                    return self.close(sid, Close::Log(why));
                }
            }
        }
    }

    fn handle_fifo(&mut self, sid: SessionId, request: Request) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let op = request.op();
        let form = s.form();
        let answer = form.wire(op);
        let store_op = match request {
            Request::Disconnect => {
                protocol::push_response(s.replies(), answer, OK);
                return self.close(sid, Close::Quiet);
            }
            Request::Unsubscribe(key) => {
                let was = self.drop_channel(sid, &keyspace_channel(key.as_bytes()));
                if let Some(s) = self.sessions.get_mut(sid) {
                    protocol::push_response(s.replies(), answer, if was { OK } else { FAIL });
                }
                self.dirty.push(sid);
                return;
            }
            Request::Subscribe(key) => {
                if s.channels.len() >= self.opts.max_subscriptions
                    && !s.channels.contains(&keyspace_channel(key.as_bytes()))
                {
                    crate::log_warn!(
                        "client {}: subscription limit ({}) reached, not subscribed to {key}",
                        s.name,
                        self.opts.max_subscriptions
                    );
                    protocol::push_response(s.replies(), answer, b'0');
                    self.dirty.push(sid);
                    return;
                }
                StoreOp::Subscribe(key.into_bytes())
            }
            Request::Read(key) => match self.pool.store().try_get(&key) {
                // A read whose shard is free is answered here and now: two
                // thread hand-offs fewer, and still no waiting on a lock.
                Ok(value) => {
                    protocol::push_read_answer_in(s.replies(), form, value.as_deref());
                    self.dirty.push(sid);
                    return;
                }
                Err(_) => StoreOp::Batch(vec![Ok(Command::Get(key.into_bytes()))]),
            },
            Request::Write(key, value) => StoreOp::Batch(vec![Ok(Command::Set {
                key: key.into_bytes(),
                value: value.into_bytes().into(),
                cond: SetIf::Always,
                reply: SetReply::Ok,
            })]),
            Request::Delete(key) => StoreOp::Batch(vec![Ok(Command::Del(vec![key.into_bytes()]))]),
        };
        s.busy = true;
        s.fifo_op = op;
        self.pool.submit(sid, s.generation, store_op);
    }

    /// The store's answer to a FIFO SUBSCRIBE: `'1'` when the key exists and
    /// the subscription is taken (SPEC section 3), `'0'` otherwise.
    pub(super) fn fifo_subscribed(&mut self, sid: SessionId, key: Vec<u8>, exists: bool) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let answer = s.form().wire(protocol::OP_SUBSCRIBE);
        protocol::push_response(s.replies(), answer, if exists { b'1' } else { b'0' });
        if !exists {
            return;
        }
        let channel = keyspace_channel(&key);
        if s.channels.insert(channel.clone()) {
            self.subs.subscribe(&channel, sid);
        } else {
            // Subscribed already: the store counted a second watch.
            self.pool.unwatch(vec![key]);
        }
    }
}
