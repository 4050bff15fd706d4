//! Framing of the registration FIFO. Any process may write to it, so one
//! bad writer must not desynchronise it for everyone (SPEC section 3): a
//! message whose op is not CONNECT or whose paths are malformed is dropped
//! together with the rest of the bytes that read returned, and a fragment
//! that is not completed within [`FRAGMENT_TIMEOUT`] is dropped.

use crate::protocol::fifo::{ConnectRequest, ProtocolError, CONNECT_LEN};
use std::fmt;
use std::time::{Duration, Instant};

pub const FRAGMENT_TIMEOUT: Duration = Duration::from_millis(100);

/// A message that was dropped: why, and its first bytes, so an operator
/// can see what a foreign client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub error: ProtocolError,
    pub head: Vec<u8>,
}

/// How many of a dropped message's bytes are shown.
const SHOWN: usize = 16;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (first bytes:", self.error)?;
        for b in &self.head {
            write!(f, " {b:02x}")?;
        }
        f.write_str(")")
    }
}

/// Turns the chunks that `read` returns into connect requests.
#[derive(Debug, Default)]
pub struct Framer {
    pending: Vec<u8>,
    fragment_since: Option<Instant>,
}

impl Framer {
    /// Feeds the bytes of one `read` call, received at `now`; returns each
    /// whole message found, decoded or rejected.
    pub fn push(&mut self, chunk: &[u8], now: Instant) -> Vec<Result<ConnectRequest, Dropped>> {
        self.expire(now);
        self.pending.extend_from_slice(chunk);
        let mut found = Vec::new();
        while self.pending.len() >= CONNECT_LEN {
            let mut msg = [0u8; CONNECT_LEN];
            msg.copy_from_slice(&self.pending[..CONNECT_LEN]);
            match ConnectRequest::decode(&msg) {
                Ok(c) => {
                    self.pending.drain(..CONNECT_LEN);
                    found.push(Ok(c));
                }
                Err(error) => {
                    let head = msg[..SHOWN].to_vec();
                    self.pending.clear();
                    found.push(Err(Dropped { error, head }));
                }
            }
        }
        self.fragment_since = if self.pending.is_empty() {
            None
        } else {
            Some(self.fragment_since.unwrap_or(now))
        };
        found
    }

    /// When the current fragment expires, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.fragment_since.map(|t| t + FRAGMENT_TIMEOUT)
    }

    /// Drops the fragment if it has waited too long; true if one was dropped.
    pub fn expire(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(d) if now >= d => {
                self.pending.clear();
                self.fragment_since = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(n: u8) -> [u8; CONNECT_LEN] {
        ConnectRequest {
            req: vec![b'r', b'0' + n],
            resp: vec![b's', b'0' + n],
            notif: vec![b'n', b'0' + n],
            form: crate::protocol::fifo::OpForm::Binary,
        }
        .encode()
        .unwrap()
    }

    #[test]
    fn whole_and_split_messages() {
        let mut f = Framer::default();
        let t = Instant::now();
        let mut two = connect(1).to_vec();
        two.extend_from_slice(&connect(2));
        assert_eq!(f.push(&two, t).len(), 2);
        let m = connect(3);
        assert!(f.push(&m[..50], t).is_empty());
        assert!(f.deadline().is_some());
        let got = f.push(&m[50..], t + Duration::from_millis(10));
        assert_eq!(got.len(), 1);
        assert!(got[0].is_ok());
        assert!(f.deadline().is_none());
    }

    #[test]
    fn garbage_is_dropped_with_its_read() {
        let mut f = Framer::default();
        let t = Instant::now();
        let mut chunk = vec![9u8; CONNECT_LEN];
        chunk.extend_from_slice(&connect(1));
        let got = f.push(&chunk, t);
        assert_eq!(got.len(), 1);
        assert!(got[0].is_err());
        // The next well-formed connect is served.
        let got = f.push(&connect(2), t);
        assert_eq!(got.len(), 1);
        assert!(got[0].is_ok());
    }

    #[test]
    fn stale_fragments_expire() {
        let mut f = Framer::default();
        let t = Instant::now();
        assert!(f.push(&[1, 2, 3], t).is_empty());
        assert!(!f.expire(t + Duration::from_millis(50)));
        assert!(f.expire(t + FRAGMENT_TIMEOUT));
        // A fresh connect after the expiry is whole again.
        let got = f.push(&connect(4), t + Duration::from_millis(200));
        assert_eq!(got.len(), 1);
        assert!(got[0].is_ok());
    }
}
