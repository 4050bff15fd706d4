//! The wire protocol: request frames, connect messages and the
//! registration FIFO's framing, on arbitrary bytes.
#![no_main]

use kvs::protocol::fifo::{ConnectRequest, Decoded, Request, CONNECT_LEN};
use kvs::reactor::registration::Framer;
use libfuzzer_sys::fuzz_target;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    // A stream of requests, decoded the way a session decodes its buffer.
    let mut rest = data;
    loop {
        match Request::decode(rest) {
            Decoded::Request(r, len) => {
                assert!(len <= rest.len());
                // What decodes re-encodes to a message that decodes the same.
                let bytes = r.encode().expect("a decoded request encodes");
                assert_eq!(Request::decode(&bytes), Decoded::Request(r, len));
                rest = &rest[len..];
            }
            Decoded::Invalid { len, .. } => rest = &rest[len..],
            Decoded::Incomplete | Decoded::Unknown(_) => break,
        }
    }
    if data.len() >= CONNECT_LEN {
        let mut msg = [0u8; CONNECT_LEN];
        msg.copy_from_slice(&data[..CONNECT_LEN]);
        if let Ok(c) = ConnectRequest::decode(&msg) {
            assert_eq!(c.encode(), Some(msg));
        }
    }
    // The registration framing, fed in uneven chunks.
    let mut framer = Framer::default();
    let now = Instant::now();
    for chunk in data.chunks(7 + data.len() % 50) {
        let _ = framer.push(chunk, now);
    }
});
