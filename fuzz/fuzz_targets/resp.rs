//! RESP requests and glob patterns, on arbitrary bytes: the parser never
//! panics, never claims more bytes than it was given, and what it parses
//! re-encodes to a request that parses the same.
#![no_main]

use kvs::protocol::resp::{declared_end, encode_request, parse, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A declared bulk's end lies past what is here, and only when the
    // request is incomplete.
    if let Some(end) = declared_end(data) {
        assert!(end > data.len());
        assert_eq!(parse(data), Parsed::Incomplete);
    }
    let mut rest = data;
    loop {
        let owned: Vec<Vec<u8>>;
        let (args, len) = match parse(rest) {
            Parsed::Request(args, len) => (args, len),
            Parsed::Inline(args, len) => {
                owned = args;
                (owned.iter().map(Vec::as_slice).collect::<Vec<_>>(), len)
            }
            _ => break,
        };
        assert!(len > 0 && len <= rest.len());
        if !args.is_empty() {
            let again = encode_request(&args);
            match parse(&again) {
                Parsed::Request(same, n) => {
                    assert_eq!(same, args);
                    assert_eq!(n, again.len());
                }
                other => panic!("re-encoded request did not parse: {other:?}"),
            }
        }
        rest = &rest[len..];
    }
    // A glob pattern and a text from the same bytes: must terminate, never
    // panic, whatever the pattern.
    if let Some((&cut, body)) = data.split_first() {
        let at = (cut as usize).min(body.len());
        let (pattern, text) = body.split_at(at);
        let _ = kvs::glob::matches(pattern, text);
    }
});
