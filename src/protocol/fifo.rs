//! The FIFO wire protocol (SPEC section 3), byte for byte: fixed-size
//! frames, strings NUL-padded to their field. This module only turns bytes
//! into values and back; it does no I/O, so the client and the server share it.

use super::reply::Reply;
use super::text_rules::{self, validate as validate_string};
use std::fmt;

pub const OP_CONNECT: u8 = 1;
pub const OP_DISCONNECT: u8 = 2;
pub const OP_SUBSCRIBE: u8 = 3;
pub const OP_UNSUBSCRIBE: u8 = 4;
pub const OP_READ: u8 = 5;
pub const OP_WRITE: u8 = 6;
pub const OP_DELETE: u8 = 7;

/// Size of a pipe path field (the path may fill it without a NUL).
pub const PATH_FIELD: usize = 40;
/// Size of a key or value field: 40 bytes and the terminating NUL.
pub const STRING_FIELD: usize = 41;
/// A connect request: op and three path fields.
pub const CONNECT_LEN: usize = 1 + 3 * PATH_FIELD;
/// A notification: key and value fields.
pub const NOTIFICATION_LEN: usize = 2 * STRING_FIELD;
/// The value a notification carries for a deleted key.
pub const DELETED: &str = "DELETED";

/// The ASCII result codes of a response.
pub const OK: u8 = b'0';
pub const FAIL: u8 = b'1';

/// How a client writes op codes. SPEC gives them as bytes (1 = CONNECT);
/// some published clients of the same protocol send ASCII digits ('1'),
/// and expect the op code of every answer in the same form. A session
/// speaks the form its connect request used; results, fields and
/// notifications are the same in both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OpForm {
    #[default]
    Binary,
    Ascii,
}

impl OpForm {
    /// The byte that carries op code `op` in this form.
    pub fn wire(self, op: u8) -> u8 {
        match self {
            OpForm::Binary => op,
            OpForm::Ascii => op.wrapping_add(b'0'),
        }
    }

    /// The op code a byte carries in this form (0, no op, if none).
    fn op(self, byte: u8) -> u8 {
        match self {
            OpForm::Binary => byte,
            OpForm::Ascii if (b'1'..=b'9').contains(&byte) => byte - b'0',
            OpForm::Ascii => 0,
        }
    }
}

/// The three FIFO paths of a connect request, as raw bytes (no NUL), and
/// the form of its op codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    pub req: Vec<u8>,
    pub resp: Vec<u8>,
    pub notif: Vec<u8>,
    pub form: OpForm,
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// The op byte is not one this message may carry.
    UnknownOp(u8),
    /// A path field is empty or not NUL-padded.
    BadPath,
    /// A key or value field has no NUL within 41 bytes, or its string breaks
    /// the key rules (empty, forbidden bytes, not UTF-8).
    BadString,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::UnknownOp(op) => write!(f, "unknown op code {op}"),
            ProtocolError::BadPath => f.write_str("path field is empty or not NUL-padded"),
            ProtocolError::BadString => f.write_str("key or value field is not a valid string"),
        }
    }
}

impl std::error::Error for ProtocolError {}

impl ConnectRequest {
    /// Decodes a whole 121-byte connect message.
    pub fn decode(msg: &[u8; CONNECT_LEN]) -> Result<Self, ProtocolError> {
        let form = match msg[0] {
            OP_CONNECT => OpForm::Binary,
            b'1' => OpForm::Ascii,
            other => return Err(ProtocolError::UnknownOp(other)),
        };
        let field = |i: usize| decode_path(&msg[1 + i * PATH_FIELD..1 + (i + 1) * PATH_FIELD]);
        Ok(ConnectRequest {
            req: field(0)?,
            resp: field(1)?,
            notif: field(2)?,
            form,
        })
    }

    /// Encodes the message; `None` if a path is empty, longer than
    /// [`PATH_FIELD`] or holds a NUL.
    pub fn encode(&self) -> Option<[u8; CONNECT_LEN]> {
        let mut msg = [0u8; CONNECT_LEN];
        msg[0] = self.form.wire(OP_CONNECT);
        for (i, p) in [&self.req, &self.resp, &self.notif].into_iter().enumerate() {
            if p.is_empty() || p.len() > PATH_FIELD || p.contains(&0) {
                return None;
            }
            msg[1 + i * PATH_FIELD..1 + i * PATH_FIELD + p.len()].copy_from_slice(p);
        }
        Some(msg)
    }
}

/// A path field: non-empty bytes, then only NULs to the end of the field.
fn decode_path(field: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let len = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    if len == 0 || field[len..].iter().any(|&b| b != 0) {
        return Err(ProtocolError::BadPath);
    }
    Ok(field[..len].to_vec())
}

/// A request read from a session's request FIFO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Disconnect,
    Subscribe(String),
    Unsubscribe(String),
    Read(String),
    Write(String, String),
    Delete(String),
}

/// The outcome of looking at the front of a request buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Not enough bytes yet for the message the op byte announces.
    Incomplete,
    /// A request and the number of bytes it used.
    Request(Request, usize),
    /// A message of known length (`len` bytes) with a bad field: answer
    /// `op` (in the session's [`OpForm`]), `'1'` and go on with the next
    /// message.
    Invalid {
        op: u8,
        len: usize,
        error: ProtocolError,
    },
    /// An op byte that announces no known message: the stream cannot be
    /// resynchronised, so the session ends after answering that byte, `'1'`.
    Unknown(u8),
}

impl Request {
    pub fn op(&self) -> u8 {
        match self {
            Request::Disconnect => OP_DISCONNECT,
            Request::Subscribe(_) => OP_SUBSCRIBE,
            Request::Unsubscribe(_) => OP_UNSUBSCRIBE,
            Request::Read(_) => OP_READ,
            Request::Write(..) => OP_WRITE,
            Request::Delete(_) => OP_DELETE,
        }
    }

    /// Decodes the first message of `buf` from a binary client.
    pub fn decode(buf: &[u8]) -> Decoded {
        Request::decode_in(buf, OpForm::Binary)
    }

    /// Decodes the first message of `buf`, op codes in `form`.
    pub fn decode_in(buf: &[u8], form: OpForm) -> Decoded {
        let Some(&raw) = buf.first() else {
            return Decoded::Incomplete;
        };
        let op = form.op(raw);
        let len = match op {
            OP_DISCONNECT => 1,
            OP_SUBSCRIBE | OP_UNSUBSCRIBE | OP_READ | OP_DELETE => 1 + STRING_FIELD,
            OP_WRITE => 1 + 2 * STRING_FIELD,
            _ => return Decoded::Unknown(raw),
        };
        if buf.len() < len {
            return Decoded::Incomplete;
        }
        let string =
            |i: usize| decode_string(&buf[1 + i * STRING_FIELD..1 + (i + 1) * STRING_FIELD]);
        let request = match op {
            OP_DISCONNECT => Ok(Request::Disconnect),
            OP_SUBSCRIBE => string(0).map(Request::Subscribe),
            OP_UNSUBSCRIBE => string(0).map(Request::Unsubscribe),
            OP_READ => string(0).map(Request::Read),
            OP_DELETE => string(0).map(Request::Delete),
            _ => string(0).and_then(|k| Ok(Request::Write(k, string(1)?))),
        };
        match request {
            Ok(r) => Decoded::Request(r, len),
            Err(error) => Decoded::Invalid { op, len, error },
        }
    }

    /// Encodes the request; `None` if a key or value breaks the limits.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut msg = vec![self.op()];
        let strings: &[&String] = match self {
            Request::Disconnect => &[],
            Request::Subscribe(k)
            | Request::Unsubscribe(k)
            | Request::Read(k)
            | Request::Delete(k) => &[k][..],
            Request::Write(k, v) => &[k, v][..],
        };
        for s in strings {
            validate_string(s.as_bytes()).ok()?;
            push_string(&mut msg, s);
        }
        Some(msg)
    }
}

/// A key or value field: a valid string, a NUL, then anything (C clients
/// may leave garbage after the terminator; it is ignored).
fn decode_string(field: &[u8]) -> Result<String, ProtocolError> {
    let len = field
        .iter()
        .position(|&b| b == 0)
        .ok_or(ProtocolError::BadString)?;
    validate_string(&field[..len])
        .map(str::to_owned)
        .map_err(|_| ProtocolError::BadString)
}

/// Appends `s` NUL-padded to a 41-byte field. `s` must be at most 40 bytes.
pub fn push_string(out: &mut Vec<u8>, s: &str) {
    push_field(out, s.as_bytes());
}

/// [`push_string`] for bytes already known to follow the string rules (a
/// stored value).
pub fn push_field(out: &mut Vec<u8>, s: &[u8]) {
    debug_assert!(s.len() < STRING_FIELD);
    let n = s.len().min(STRING_FIELD - 1);
    out.extend_from_slice(&s[..n]);
    out.resize(out.len() + STRING_FIELD - n, 0);
}

/// Appends a two-byte response: the op and its ASCII result code.
pub fn push_response(out: &mut Vec<u8>, op: u8, code: u8) {
    out.push(op);
    out.push(code);
}

/// Appends READ's answer: `5, '0', value[41]` when found, `5, '1'` when not.
pub fn push_read_answer(out: &mut Vec<u8>, value: Option<&str>) {
    push_read_answer_in(out, OpForm::Binary, value.map(str::as_bytes));
}

/// [`push_read_answer`] with the op code in `form`.
pub fn push_read_answer_in(out: &mut Vec<u8>, form: OpForm, value: Option<&[u8]>) {
    match value {
        Some(v) => {
            push_response(out, form.wire(OP_READ), OK);
            push_value(out, v);
        }
        None => push_response(out, form.wire(OP_READ), FAIL),
    }
}

/// Appends a notification for `key`: its new value, or `DELETED`. A
/// FIFO client subscribes only to keys of SPEC's rules, so the key always
/// fits its field.
pub fn push_notification(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    push_field(out, key);
    push_value(out, value.unwrap_or(DELETED.as_bytes()));
}

/// Appends a value as a FIFO field: as it is if SPEC's rules allow it,
/// else (a RESP client's value over 40 bytes, or with bytes the rules
/// forbid) [`text_rules::fifo_marker`] in its place, never a value cut
/// short.
pub fn push_value(out: &mut Vec<u8>, v: &[u8]) {
    if validate_string(v).is_ok() {
        push_field(out, v);
    } else {
        push_field(out, text_rules::fifo_marker(v.len()).as_bytes());
    }
}

/// Reads the string out of a NUL-padded field (for the client).
pub fn field_str(field: &[u8]) -> String {
    let len = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..len]).into_owned()
}

/// Appends the FIFO answer to request `op` from its store reply: READ's
/// value, WRITE's `Ok`, DELETE's count of keys removed (`'0'` if the key
/// existed); an error (a change refused while the log cannot be written)
/// is `'1'`.
pub fn encode_reply(out: &mut Vec<u8>, reply: &Reply, op: u8, form: OpForm) {
    let code = match reply {
        Reply::Value(v) => return push_read_answer_in(out, form, v.as_deref()),
        Reply::Ok => OK,
        Reply::Int(n) if *n > 0 => OK,
        _ => FAIL,
    };
    push_response(out, form.wire(op), code);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        push_string(&mut v, s);
        v
    }

    #[test]
    fn connect_round_trip() {
        let c = ConnectRequest {
            req: b"/tmp/req1".to_vec(),
            resp: b"/tmp/resp1".to_vec(),
            notif: vec![b'n'; 40],
            form: OpForm::Binary,
        };
        let msg = c.encode().unwrap();
        assert_eq!(msg.len(), 121);
        assert_eq!(ConnectRequest::decode(&msg), Ok(c));
    }

    #[test]
    fn connect_rejects_bad_messages() {
        let good = ConnectRequest {
            req: b"/a".to_vec(),
            resp: b"/b".to_vec(),
            notif: b"/c".to_vec(),
            form: OpForm::Binary,
        }
        .encode()
        .unwrap();
        let mut m = good;
        m[0] = 9;
        assert_eq!(ConnectRequest::decode(&m), Err(ProtocolError::UnknownOp(9)));
        let mut m = good;
        m[1 + 5] = b'x'; // garbage after the NUL of the first path
        assert_eq!(ConnectRequest::decode(&m), Err(ProtocolError::BadPath));
        let mut m = good;
        m[1 + 40] = 0; // empty second path
        m[1 + 41] = 0;
        assert_eq!(ConnectRequest::decode(&m), Err(ProtocolError::BadPath));
        let long = ConnectRequest {
            req: vec![b'a'; 41],
            resp: b"/b".to_vec(),
            notif: b"/c".to_vec(),
            form: OpForm::Binary,
        };
        assert_eq!(long.encode(), None);
    }

    #[test]
    fn ascii_op_codes() {
        let c = ConnectRequest {
            req: b"/a".to_vec(),
            resp: b"/b".to_vec(),
            notif: b"/c".to_vec(),
            form: OpForm::Ascii,
        };
        let msg = c.encode().unwrap();
        assert_eq!(msg[0], b'1');
        assert_eq!(ConnectRequest::decode(&msg), Ok(c));
        let mut sub = vec![b'3'];
        sub.extend(field("k"));
        assert_eq!(
            Request::decode_in(&sub, OpForm::Ascii),
            Decoded::Request(Request::Subscribe("k".into()), 42)
        );
        assert_eq!(
            Request::decode_in(b"2", OpForm::Ascii),
            Decoded::Request(Request::Disconnect, 1)
        );
        assert_eq!(
            Request::decode_in(b"9", OpForm::Ascii),
            Decoded::Unknown(b'9')
        );
        assert_eq!(Request::decode_in(&[2], OpForm::Ascii), Decoded::Unknown(2));
        assert_eq!(Request::decode(b"2"), Decoded::Unknown(b'2'));
        let mut out = Vec::new();
        push_read_answer_in(&mut out, OpForm::Ascii, None);
        assert_eq!(out, b"51");
    }

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Disconnect,
            Request::Subscribe("k".into()),
            Request::Unsubscribe("k".into()),
            Request::Read("a".repeat(40)),
            Request::Write("k".into(), "v".into()),
            Request::Delete("k".into()),
        ] {
            let bytes = r.encode().unwrap();
            assert_eq!(Request::decode(&bytes), Decoded::Request(r, bytes.len()));
            assert_eq!(
                Request::decode(&bytes[..bytes.len() - 1]),
                Decoded::Incomplete
            );
        }
        assert_eq!(Request::Read("a".repeat(41)).encode(), None);
        assert_eq!(Request::Write("k".into(), "a b".into()).encode(), None);
    }

    #[test]
    fn original_sizes() {
        assert_eq!(Request::Subscribe("k".into()).encode().unwrap().len(), 42);
        assert_eq!(
            Request::Write("k".into(), "v".into())
                .encode()
                .unwrap()
                .len(),
            83
        );
        let mut n = Vec::new();
        push_notification(&mut n, b"k", None);
        assert_eq!(n.len(), NOTIFICATION_LEN);
        assert_eq!(field_str(&n[41..]), "DELETED");
    }

    #[test]
    fn bad_requests() {
        assert_eq!(Request::decode(&[]), Decoded::Incomplete);
        assert_eq!(Request::decode(&[0]), Decoded::Unknown(0));
        assert_eq!(Request::decode(&[1]), Decoded::Unknown(1));
        assert_eq!(Request::decode(&[200, 1, 2]), Decoded::Unknown(200));
        // No NUL within the 41-byte field.
        let mut m = vec![OP_SUBSCRIBE];
        m.extend(vec![b'a'; 41]);
        assert_eq!(
            Request::decode(&m),
            Decoded::Invalid {
                op: 3,
                len: 42,
                error: ProtocolError::BadString
            }
        );
        // Empty key.
        let mut m = vec![OP_READ];
        m.extend(field(""));
        assert!(matches!(
            Request::decode(&m),
            Decoded::Invalid { op: 5, .. }
        ));
        // Garbage after the terminator is ignored.
        let mut m = vec![OP_DELETE];
        m.extend(field("k"));
        m[5] = b'z';
        assert_eq!(
            Request::decode(&m),
            Decoded::Request(Request::Delete("k".into()), 42)
        );
    }
}
