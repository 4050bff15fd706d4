//! etcd's v3 API through its JSON gateway (`/v3/kv/...`, `/v3/watch`): the
//! calls kvs needs (transactions of puts and deletes with compares, a range
//! over a prefix at one revision, a watch from a revision, the cluster's
//! status), with the members tried in turn when one does not answer.
//! Blocking: each call runs on the thread that makes it (a store pool
//! thread, the watch thread), never on the reactor.

use super::http::{Conn, HttpError, MessageStream};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// What went wrong, as kvs tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdError {
    /// No member answered in time, or the cluster has no quorum: the
    /// change was not made (or is not known to be: see the caller).
    Unavailable(String),
    /// etcd refused the request (too many operations, a value over its
    /// request limit, ...), with its own words.
    Refused(String),
    /// The request is over the cluster's size limit (`--max-request-bytes`
    /// and the gRPC message limit above it): it will never be taken.
    TooLarge(String),
    /// The revision asked for was compacted away; the oldest kept.
    Compacted(i64),
    /// The answer was not what etcd's API says.
    Protocol(String),
    /// A change was sent and no answer came (the member went silent,
    /// crashed, or timed the proposal out): it may or may not have been
    /// made, so it is not sent again to another member, where it could be
    /// made twice.
    Unconfirmed(String),
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::Unavailable(why) => write!(f, "etcd unavailable: {why}"),
            EtcdError::Refused(why) => write!(f, "etcd refused: {why}"),
            EtcdError::TooLarge(why) => write!(
                f,
                "the change is larger than etcd takes in one request (its --max-request-bytes, 1.5 MiB by default): {why}"
            ),
            EtcdError::Compacted(r) => write!(f, "etcd history compacted up to revision {r}"),
            EtcdError::Protocol(why) => write!(f, "unexpected answer from etcd: {why}"),
            EtcdError::Unconfirmed(why) => write!(
                f,
                "etcd did not confirm the change, which may have been made or not (read the keys to know): {why}"
            ),
        }
    }
}

/// A key as etcd holds it, with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key was last changed at this revision (0: it does not exist).
    ModRevision(Vec<u8>, i64),
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    /// A put that answers the value it replaced (etcd's `prev_kv`, which
    /// costs etcd a read: only where the old value is wanted).
    Swap(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// Every key starting with the bytes.
    DeletePrefix(Vec<u8>),
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    pub succeeded: bool,
    /// The store's revision after it (its own, when it changed anything).
    pub revision: i64,
    /// For each operation that ran: the key's value before it, for a put;
    /// how many keys went, for a delete.
    pub results: Vec<OpResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Put { prev: Option<Vec<u8>> },
    Deleted(i64),
}

/// One change a watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(Kv),
    Delete { key: Vec<u8>, mod_revision: i64 },
}

/// One message of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// Changes, all of one revision or of consecutive ones, in order.
    Events { revision: i64, events: Vec<Event> },
    /// No change, but the store is at `revision` (progress notification).
    Progress { revision: i64 },
    /// The revision the watch started from was compacted away.
    Compacted(i64),
    /// Nothing came within the read timeout (the stream reads on).
    Quiet,
}

/// The bytes after the last key with `prefix`: the end of its range.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): to the end of the keyspace.
    vec![0]
}

fn b64(b: &[u8]) -> String {
    B64.encode(b)
}

fn unb64(v: Option<&Value>) -> Result<Vec<u8>, EtcdError> {
    match v.and_then(Value::as_str) {
        None => Ok(Vec::new()),
        Some(s) => B64
            .decode(s)
            .map_err(|e| EtcdError::Protocol(format!("base64: {e}"))),
    }
}

/// grpc-gateway writes 64-bit integers as strings, and leaves out zeros.
fn int(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn kv(v: &Value) -> Result<Kv, EtcdError> {
    Ok(Kv {
        key: unb64(v.get("key"))?,
        value: unb64(v.get("value"))?,
        mod_revision: int(v.get("mod_revision")),
    })
}

fn revision(v: &Value) -> i64 {
    int(v.get("header").and_then(|h| h.get("revision")))
}

/// Kept-alive connections a client keeps for later calls.
const MAX_IDLE: usize = 64;

/// etcd's require-leader metadata, through the gateway: a member that
/// knows no leader refuses the request (or ends the watch) at once.
const REQUIRE_LEADER: &str = "Grpc-Metadata-Hasleader: true\r\n";

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A client of one cluster, through whichever member answers. Threads
/// call it at once, each on a connection of its own (a store thread per
/// change in flight): one shared connection made a node take one change
/// at a time.
pub struct Etcd {
    endpoints: Vec<String>,
    timeout: Duration,
    /// The member in use: where calls go first.
    member: AtomicUsize,
    /// Kept-alive connections not in use, each with its member.
    idle: Mutex<Vec<(usize, Conn)>>,
}

impl Etcd {
    /// `endpoints` as `host:port`; each call waits at most `timeout` for a
    /// member before it tries the next.
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Etcd {
        Etcd {
            endpoints,
            timeout,
            member: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A kept-alive connection to member `i` that the member has not
    /// closed meanwhile, or a new one.
    fn conn_to(&self, i: usize) -> Result<Conn, HttpError> {
        loop {
            let reused = {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                let at = idle.iter().rposition(|(j, _)| *j == i);
                at.map(|at| idle.swap_remove(at).1)
            };
            match reused {
                Some(c) if c.is_stale() => continue,
                Some(c) => return Ok(c),
                None => return Conn::connect(&self.endpoints[i], self.timeout),
            }
        }
    }

    /// Keeps `conn` to member `i` for a later call.
    fn keep(&self, i: usize, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((i, conn));
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// POSTs `body` to `path` on the member in use, or on the others in
    /// turn if it does not answer; the answer's JSON. A `change` goes to
    /// the next member only when it cannot have been made: not taken, or
    /// refused before it was proposed (no leader). Sent and not answered,
    /// it is [`EtcdError::Unconfirmed`] (etcd's own client does not resend
    /// a change either).
    fn call(&self, path: &str, body: &Value, change: bool) -> Result<Value, EtcdError> {
        let body = body.to_string().into_bytes();
        let start = self.member.load(Ordering::Relaxed);
        // Why each member failed, all told: the one that answered "no
        // leader" says more than the ones that were down.
        let mut why: Vec<String> = Vec::new();
        for k in 0..self.endpoints.len() {
            let i = (start + k) % self.endpoints.len();
            let mut conn = match self.conn_to(i) {
                Ok(c) => c,
                Err(e) => {
                    why.push(format!("{}: {e}", self.endpoints[i]));
                    continue;
                }
            };
            // A member that knows no leader refuses at once (gRPC's
            // "no leader") instead of holding the request until it times
            // out: refused before it was proposed, a change can go on to
            // the next member; held, it could only be unconfirmed.
            if let Err(e) = conn.send(path, REQUIRE_LEADER, &body) {
                why.push(format!("{}: {e}", self.endpoints[i]));
                continue;
            }
            match conn.answer() {
                Ok((status, answer)) => {
                    let v: Value = serde_json::from_slice(&answer).map_err(|e| {
                        EtcdError::Protocol(format!("{}: {e}", String::from_utf8_lossy(&answer)))
                    })?;
                    self.keep(i, conn);
                    if status == 200 {
                        // Later calls go here first.
                        self.member.store(i, Ordering::Relaxed);
                        return Ok(v);
                    }
                    let message = v
                        .get("message")
                        .or_else(|| v.get("error"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    // A proposal timed out (the member lost quorum or its
                    // leader): it may still be made.
                    if change && message.contains("timed out") {
                        return Err(EtcdError::Unconfirmed(format!(
                            "{}: {message}",
                            self.endpoints[i]
                        )));
                    }
                    // No leader, or a request the member could not finish
                    // (it lost quorum): another member may do better.
                    let lost = message.contains("no leader")
                        || message.contains("timed out")
                        || message.contains("unavailable")
                        || v.get("code").and_then(Value::as_i64) == Some(14);
                    if lost {
                        why.push(format!("{}: {message}", self.endpoints[i]));
                        continue;
                    }
                    if let Some(r) = message
                        .strip_prefix("etcdserver: mvcc: required revision has been compacted")
                        .map(|_| 0)
                    {
                        return Err(EtcdError::Compacted(r));
                    }
                    if message.contains("request is too large")
                        || message.contains("larger than max")
                    {
                        return Err(EtcdError::TooLarge(message));
                    }
                    return Err(EtcdError::Refused(message));
                }
                Err(e) if change => {
                    return Err(EtcdError::Unconfirmed(format!(
                        "{}: {}",
                        self.endpoints[i],
                        match &e {
                            HttpError::Io(io) if is_timeout(io) =>
                                format!("no answer within {:?}", self.timeout),
                            _ => e.to_string(),
                        }
                    )));
                }
                Err(HttpError::Io(e)) if is_timeout(&e) => {
                    // A member cut off from the others holds the request
                    // until it gives up: without quorum, nothing is made.
                    why.push(format!(
                        "{}: no answer within {:?} (is a majority of the members up?)",
                        self.endpoints[i], self.timeout
                    ));
                }
                Err(e) => why.push(format!("{}: {e}", self.endpoints[i])),
            }
        }
        if why.is_empty() {
            why.push("no endpoints".into());
        }
        Err(EtcdError::Unavailable(why.join("; ")))
    }

    /// A transaction: if every compare holds, `ops` run, all as one
    /// revision; each put says the value it replaced.
    pub fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<TxnResult, EtcdError> {
        let compare: Vec<Value> = compares
            .iter()
            .map(|c| match c {
                Compare::ModRevision(k, r) => json!({
                    "key": b64(k), "target": "MOD", "result": "EQUAL", "mod_revision": r.to_string()
                }),
            })
            .collect();
        let success: Vec<Value> = ops
            .iter()
            .map(|op| match op {
                Op::Put(k, v) => json!({"request_put": {"key": b64(k), "value": b64(v)}}),
                Op::Swap(k, v) => {
                    json!({"request_put": {"key": b64(k), "value": b64(v), "prev_kv": true}})
                }
                Op::Delete(k) => json!({"request_delete_range": {"key": b64(k)}}),
                Op::DeletePrefix(p) => json!({"request_delete_range": {
                    "key": b64(p), "range_end": b64(&prefix_end(p))
                }}),
            })
            .collect();
        let v = self.call(
            "/v3/kv/txn",
            &json!({"compare": compare, "success": success}),
            true,
        )?;
        let succeeded = v.get("succeeded").and_then(Value::as_bool).unwrap_or(false);
        let mut results = Vec::new();
        if succeeded {
            let responses = v
                .get("responses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (op, r) in ops
                .iter()
                .zip(responses.iter().chain(std::iter::repeat(&Value::Null)))
            {
                results.push(match op {
                    Op::Put(..) | Op::Swap(..) => {
                        let prev = r.get("response_put").and_then(|p| p.get("prev_kv"));
                        OpResult::Put {
                            prev: prev.map(|p| unb64(p.get("value"))).transpose()?,
                        }
                    }
                    Op::Delete(_) | Op::DeletePrefix(_) => OpResult::Deleted(int(r
                        .get("response_delete_range")
                        .and_then(|d| d.get("deleted")))),
                });
            }
        }
        Ok(TxnResult {
            succeeded,
            revision: revision(&v),
            results,
        })
    }

    /// Every key starting with `prefix`, read at one revision (page by
    /// page, so a large dataset is not one answer), and that revision.
    pub fn range_prefix(&self, prefix: &[u8]) -> Result<(i64, Vec<Kv>), EtcdError> {
        const PAGE: i64 = 10_000;
        let end = prefix_end(prefix);
        let mut from = prefix.to_vec();
        let mut at = 0i64;
        let mut all = Vec::new();
        loop {
            let mut req =
                json!({"key": b64(&from), "range_end": b64(&end), "limit": PAGE.to_string()});
            if at > 0 {
                req["revision"] = json!(at.to_string());
            }
            let v = self.call("/v3/kv/range", &req, false)?;
            if at == 0 {
                at = revision(&v);
            }
            let kvs = v
                .get("kvs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for k in &kvs {
                all.push(kv(k)?);
            }
            let more = v.get("more").and_then(Value::as_bool).unwrap_or(false);
            match all.last() {
                Some(last) if more => {
                    from = last.key.clone();
                    from.push(0);
                }
                _ => return Ok((at, all)),
            }
        }
    }

    /// The value of one key now (linearizable), and its revision.
    pub fn get(&self, key: &[u8]) -> Result<Option<Kv>, EtcdError> {
        let v = self.call("/v3/kv/range", &json!({"key": b64(key)}), false)?;
        v.get("kvs")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .map(kv)
            .transpose()
    }

    /// The cluster's revision now, as a linearizable read sees it (etcd
    /// asks the leader's quorum): every change made before this call is at
    /// or below it. `key` is read with `count_only`, so nothing else comes.
    pub fn current_revision(&self, key: &[u8]) -> Result<i64, EtcdError> {
        let v = self.call(
            "/v3/kv/range",
            &json!({"key": b64(key), "count_only": true}),
            false,
        )?;
        Ok(revision(&v))
    }

    /// Drops the history before `revision` (etcd's compaction, physical:
    /// answered once the members have dropped it). Operators do this; kvs
    /// itself never does, and its tests use it to make a node's feed fall
    /// behind the history.
    pub fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let body = json!({"revision": revision.to_string(), "physical": true});
        self.call("/v3/kv/compaction", &body, false).map(|_| ())
    }

    /// The answering member's id and the id of the leader it knows (0: it
    /// knows none).
    pub fn status(&self) -> Result<(u64, u64), EtcdError> {
        let v = self.call("/v3/maintenance/status", &json!({}), false)?;
        // Member ids use all 64 bits.
        let id = |x: Option<&Value>| match x {
            Some(Value::String(s)) => s.parse::<u64>().unwrap_or(0),
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            _ => 0,
        };
        Ok((
            id(v.get("header").and_then(|h| h.get("member_id"))),
            id(v.get("leader")),
        ))
    }

    /// Whether the cluster takes transactions of `n` operations (etcd's
    /// `--max-txn-ops`, 128 by default); the refusal in etcd's words if not.
    pub fn check_txn_ops(&self, n: usize, probe_key: &[u8]) -> Result<(), EtcdError> {
        // The compare never holds (no key is at revision -1): nothing runs,
        // but etcd checks the transaction's size first.
        let ops: Vec<Op> = (0..n)
            .map(|i| {
                let mut k = probe_key.to_vec();
                k.extend_from_slice(format!("/{i}").as_bytes());
                Op::Delete(k)
            })
            .collect();
        self.txn(&[Compare::ModRevision(probe_key.to_vec(), -1)], &ops)
            .map(|_| ())
    }

    /// Starts a watch of every key with `prefix` from revision `from`, on
    /// a connection of its own (to the first member that accepts it).
    pub fn watch(&self, prefix: &[u8], from: i64) -> Result<Watch, EtcdError> {
        self.watch_at(prefix, from, 0)
    }

    /// [`Etcd::watch`], trying the members from the `first`th on (a feed
    /// moving its watch to another member). The watch requires a leader
    /// (etcd's `hasleader` metadata): a member cut off from the majority
    /// ends it instead of keeping it open with nothing to send.
    pub fn watch_at(&self, prefix: &[u8], from: i64, first: usize) -> Result<Watch, EtcdError> {
        let body = json!({"create_request": {
            "key": b64(prefix),
            "range_end": b64(&prefix_end(prefix)),
            "start_revision": from.to_string(),
            "progress_notify": true,
        }})
        .to_string();
        let mut why = Vec::new();
        let n = self.endpoints.len();
        for k in 0..n {
            let member = (first + k) % n;
            let e = &self.endpoints[member];
            let attempt = Conn::connect(e, self.timeout)
                .and_then(|c| c.post_stream("/v3/watch", REQUIRE_LEADER, body.as_bytes()));
            match attempt {
                Ok(stream) => {
                    let mut w = Watch { stream, member };
                    // The first message confirms the watch (or says why not).
                    match w.next_message() {
                        Ok(Some(WatchMessage::Compacted(r))) => {
                            return Err(EtcdError::Compacted(r))
                        }
                        Ok(Some(_)) => return Ok(w),
                        Ok(None) => why.push(format!("{e}: the watch ended at once")),
                        Err(err) => why.push(format!("{e}: {err}")),
                    }
                }
                Err(err) => why.push(format!("{e}: {err}")),
            }
        }
        Err(EtcdError::Unavailable(why.join("; ")))
    }
}

/// A watch's stream of messages.
pub struct Watch {
    stream: MessageStream,
    member: usize,
}

impl Watch {
    /// The member it is on, by its place in the endpoints.
    pub fn member(&self) -> usize {
        self.member
    }

    /// The next message; `None` when the member ended the watch.
    pub fn next_message(&mut self) -> Result<Option<WatchMessage>, EtcdError> {
        let msg = match self.stream.next_message() {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(HttpError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Some(WatchMessage::Quiet))
            }
            Err(e) => return Err(EtcdError::Unavailable(e.to_string())),
        };
        let v: Value = serde_json::from_slice(&msg)
            .map_err(|e| EtcdError::Protocol(format!("watch message: {e}")))?;
        if let Some(err) = v.get("error") {
            return Err(EtcdError::Unavailable(err.to_string()));
        }
        let Some(r) = v.get("result") else {
            return Err(EtcdError::Protocol(format!(
                "watch message without result: {v}"
            )));
        };
        let compacted = int(r.get("compact_revision"));
        if compacted > 0 {
            return Ok(Some(WatchMessage::Compacted(compacted)));
        }
        let rev = revision(r);
        let events = r
            .get("events")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if events.is_empty() {
            return Ok(Some(WatchMessage::Progress { revision: rev }));
        }
        let mut out = Vec::with_capacity(events.len());
        for e in &events {
            let Some(k) = e.get("kv") else {
                return Err(EtcdError::Protocol(format!("event without kv: {e}")));
            };
            let kv = kv(k)?;
            out.push(match e.get("type").and_then(Value::as_str) {
                Some("DELETE") => Event::Delete {
                    key: kv.key,
                    mod_revision: kv.mod_revision,
                },
                _ => Event::Put(kv),
            });
        }
        Ok(Some(WatchMessage::Events {
            revision: rev,
            events: out,
        }))
    }

    /// How long [`Watch::next_message`] may wait (progress notifications come
    /// about every ten minutes by default; a keepalive bound).
    pub fn set_read_timeout(&self, t: Option<Duration>) {
        let _ = self.stream.set_read_timeout(t);
    }

    /// Ends the watch from another thread.
    pub fn closer(&self) -> Option<std::net::TcpStream> {
        self.stream.shutdown_handle().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_where_its_keys_do() {
        assert_eq!(prefix_end(b"kvs/"), b"kvs0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// A member that reads requests and, per `answer`, either answers each
    /// with an empty successful transaction (closing the connection after
    /// it if `close_after`) or never answers. Counts the requests it read.
    fn fake_member(answer: bool, close_after: bool) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    let mut w = conn;
                    loop {
                        let mut len = 0;
                        loop {
                            let mut line = String::new();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if let Some(v) =
                                line.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                len = v.trim().parse().unwrap();
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0; len];
                        r.read_exact(&mut body).unwrap();
                        seen.fetch_add(1, Ordering::SeqCst);
                        if !answer {
                            // Holds the connection, silent, until the test ends.
                            std::thread::sleep(Duration::from_secs(30));
                            return;
                        }
                        let body = r#"{"header":{"revision":"5"},"succeeded":true}"#;
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        w.write_all(reply.as_bytes()).unwrap();
                        if close_after {
                            return;
                        }
                    }
                });
            }
        });
        (addr, count)
    }

    fn put() -> Op {
        Op::Put(b"k".to_vec(), b"v".to_vec())
    }

    #[test]
    fn a_change_sent_and_not_answered_is_not_sent_to_another_member() {
        let (silent, to_silent) = fake_member(false, false);
        let (good, to_good) = fake_member(true, false);
        let etcd = Etcd::new(vec![silent, good], Duration::from_millis(300));
        match etcd.txn(&[], &[put()]) {
            Err(EtcdError::Unconfirmed(why)) => assert!(why.contains("no answer"), "{why}"),
            other => panic!("expected an unconfirmed change, got {other:?}"),
        }
        assert_eq!(to_silent.load(Ordering::SeqCst), 1);
        assert_eq!(
            to_good.load(Ordering::SeqCst),
            0,
            "the change was sent twice"
        );
        // A read may go anywhere: the next member answers it.
        assert!(etcd.current_revision(b"k").is_ok());
        assert_eq!(to_good.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_kept_alive_connection_the_member_closed_is_not_used() {
        let (member, seen) = fake_member(true, true);
        let etcd = Etcd::new(vec![member], Duration::from_millis(500));
        for _ in 0..3 {
            etcd.txn(&[], &[put()])
                .expect("a change on a fresh connection");
            // Lets the member's close reach this side.
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn gateway_numbers_are_strings_or_missing() {
        assert_eq!(int(Some(&json!("42"))), 42);
        assert_eq!(int(Some(&json!(7))), 7);
        assert_eq!(int(None), 0);
        assert_eq!(int(Some(&json!("x"))), 0);
    }
}
