//! Properties of every parser that reads untrusted bytes (job lines, client
//! stdin lines, the wire protocol, the registration FIFO's framing): any
//! input gives a value or a typed error, never a panic, and every valid
//! command or message written out and read back is the same. These run on
//! stable Rust in `cargo test`; the long coverage-guided runs are under
//! `fuzz/` (see README).

use kvs::client::commands::parse_client_line;
use kvs::jobs::command::{MAX_PAIRS, MAX_STRING};
use kvs::jobs::{parse_line, Command};
use kvs::protocol::fifo::{ConnectRequest, Decoded, OpForm, Request, CONNECT_LEN};
use kvs::reactor::registration::Framer;
use proptest::prelude::*;
use std::time::{Duration, Instant};

/// A valid key or value: 1 to 40 bytes, none of them forbidden; includes
/// multi-byte UTF-8.
fn string() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_:.\\-é€]{1,13}".prop_filter("fits 40 bytes", |s| s.len() <= MAX_STRING)
}

fn keys() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(string(), 1..=20)
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        prop::collection::vec((string(), string()), 1..=20).prop_map(Command::Write),
        keys().prop_map(Command::Read),
        keys().prop_map(Command::Delete),
        Just(Command::Show),
        Just(Command::Backup),
        Just(Command::Help),
        any::<u32>().prop_map(|ms| Command::Wait(ms as u64)),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Disconnect),
        string().prop_map(Request::Subscribe),
        string().prop_map(Request::Unsubscribe),
        string().prop_map(Request::Read),
        (string(), string()).prop_map(|(k, v)| Request::Write(k, v)),
        string().prop_map(Request::Delete),
    ]
}

/// Bytes that look like job lines often enough to reach deep into the parser.
fn job_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        "(WRITE|READ|DELETE|WAIT|SHOW|BACKUP|HELP)? ?[\\[\\]\\(\\), a-z0-9\\t]{0,80}"
            .prop_map(|s| s.into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn job_lines_never_panic(line in job_like_bytes()) {
        let _ = parse_line(&line);
        let _ = parse_client_line(&line);
    }

    #[test]
    fn the_runners_borrowing_parse_agrees_with_the_owned_one(line in job_like_bytes()) {
        let borrowed = kvs::jobs::parser::parse_line_borrowed(&line).map(|c| c.map(|c| c.to_owned()));
        prop_assert_eq!(borrowed, parse_line(&line));
    }

    #[test]
    fn the_runners_text_parse_agrees_with_the_byte_one(line in job_like_bytes()) {
        if let Ok(text) = std::str::from_utf8(&line) {
            let from_text = kvs::jobs::parser::parse_line_str(text).map(|c| c.map(|c| c.to_owned()));
            prop_assert_eq!(from_text, parse_line(&line));
        }
    }

    /// The job runner's reader hands out the lines a plain split would,
    /// each as text exactly when it is UTF-8, however the input is cut.
    #[test]
    fn line_reader_agrees_with_a_split(
        lines in proptest::collection::vec(job_like_bytes(), 0..20),
        trailing_newline in any::<bool>(),
    ) {
        use kvs::jobs::lines::{Line, LineReader};
        let lines: Vec<Vec<u8>> = lines
            .into_iter()
            .map(|l| l.into_iter().filter(|&b| b != b'\n').collect())
            .collect();
        let mut input = lines.join(&b'\n');
        if trailing_newline && !lines.is_empty() {
            input.push(b'\n');
        }
        // A last line is a line even without its newline; an empty one
        // after the last newline is none.
        let mut want: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        if want.last().is_some_and(|l| l.is_empty()) {
            want.pop();
        }
        let mut reader = LineReader::new(&input[..]);
        let mut got = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            match line {
                Line::Str(t) => got.push((t.as_bytes().to_vec(), true)),
                Line::Text(b) => got.push((b.to_vec(), false)),
                Line::TooLong => prop_assert!(false, "no line here is too long"),
            }
        }
        let want: Vec<(Vec<u8>, bool)> = want
            .iter()
            .map(|l| (l.to_vec(), std::str::from_utf8(l).is_ok()))
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn valid_commands_round_trip(cmd in command()) {
        let text = cmd.to_string();
        prop_assert_eq!(parse_line(text.as_bytes()), Ok(Some(cmd)));
    }

    #[test]
    fn parsed_commands_respect_the_limits(line in job_like_bytes()) {
        if let Ok(Some(cmd)) = parse_line(&line) {
            let strings: Vec<&String> = match &cmd {
                Command::Write(p) => {
                    prop_assert!(p.len() <= MAX_PAIRS);
                    p.iter().flat_map(|(k, v)| [k, v]).collect()
                }
                Command::Read(k) | Command::Delete(k) => {
                    prop_assert!(k.len() <= MAX_PAIRS);
                    k.iter().collect()
                }
                _ => Vec::new(),
            };
            for s in strings {
                prop_assert!(!s.is_empty() && s.len() <= MAX_STRING, "{:?}", s);
            }
        }
    }

    #[test]
    fn request_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        match Request::decode(&bytes) {
            Decoded::Request(_, len) | Decoded::Invalid { len, .. } => prop_assert!(len <= bytes.len()),
            Decoded::Incomplete | Decoded::Unknown(_) => {}
        }
    }

    #[test]
    fn requests_round_trip(r in request()) {
        let bytes = r.encode().expect("valid request encodes");
        prop_assert_eq!(Request::decode(&bytes), Decoded::Request(r, bytes.len()));
    }

    #[test]
    fn connect_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), CONNECT_LEN)) {
        let mut msg = [0u8; CONNECT_LEN];
        msg.copy_from_slice(&bytes);
        let _ = ConnectRequest::decode(&msg);
    }

    #[test]
    fn connects_round_trip(paths in prop::collection::vec("/[a-z0-9/._]{1,39}", 3)) {
        let c = ConnectRequest {
            req: paths[0].clone().into_bytes(),
            resp: paths[1].clone().into_bytes(),
            notif: paths[2].clone().into_bytes(),
            form: if paths[0].len() % 2 == 0 { OpForm::Binary } else { OpForm::Ascii },
        };
        let msg = c.encode().expect("paths fit");
        prop_assert_eq!(ConnectRequest::decode(&msg), Ok(c));
    }

    /// Whatever garbage came before, a well-formed connect in its own read
    /// once the garbage stopped for 100 ms is served (SPEC section 3).
    #[test]
    fn registration_recovers_after_garbage(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..5),
    ) {
        let mut framer = Framer::default();
        let t0 = Instant::now();
        for c in &chunks {
            let _ = framer.push(c, t0);
        }
        let good = ConnectRequest {
            req: b"/tmp/req1".to_vec(),
            resp: b"/tmp/resp1".to_vec(),
            notif: b"/tmp/notif1".to_vec(),
            form: OpForm::Binary,
        };
        let later = t0 + Duration::from_millis(150);
        let got = framer.push(&good.encode().unwrap(), later);
        prop_assert_eq!(got.last().cloned(), Some(Ok(good)));
    }
}

// ----- RESP and glob patterns ---------------------------------------------

use kvs::protocol::resp::{self, Parsed};

fn resp_args() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..50), 1..12)
}

proptest! {
    #[test]
    fn resp_parse_never_panics_nor_overreads(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut rest = &bytes[..];
        while let Parsed::Request(_, len) = resp::parse(rest) {
            prop_assert!(len > 0 && len <= rest.len());
            rest = &rest[len..];
        }
    }

    #[test]
    fn resp_requests_round_trip(args in resp_args()) {
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let bytes = resp::encode_request(&refs);
        prop_assert_eq!(resp::parse(&bytes), Parsed::Request(refs.clone().into(), bytes.len()));
    }

    #[test]
    fn resp_pipeline_cut_anywhere_is_incomplete_or_whole(
        reqs in prop::collection::vec(resp_args(), 1..5),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for r in &reqs {
            let refs: Vec<&[u8]> = r.iter().map(Vec::as_slice).collect();
            bytes.extend(resp::encode_request(&refs));
            ends.push(bytes.len());
        }
        let cut = cut.index(bytes.len() + 1);
        // Parse the prefix: whole requests up to the last end before the
        // cut, then nothing but Incomplete.
        let mut at = 0;
        let mut taken = 0;
        while let Parsed::Request(_, n) = resp::parse(&bytes[at..cut]) {
            at += n;
            prop_assert_eq!(at, ends[taken]);
            taken += 1;
        }
        prop_assert_eq!(resp::parse(&bytes[at..cut]), Parsed::Incomplete);
        prop_assert_eq!(taken, ends.iter().filter(|&&e| e <= cut).count());
    }

    #[test]
    fn glob_literals_and_stars(text in "[a-z:]{0,20}", cut in any::<prop::sample::Index>()) {
        let t = text.as_bytes();
        prop_assert!(kvs::glob::matches(t, t));
        prop_assert!(kvs::glob::matches(b"*", t));
        let head = &t[..cut.index(t.len() + 1)];
        let prefix = [head, b"*"].concat();
        prop_assert!(kvs::glob::matches(&prefix, t));
        let suffix = [b"*", &t[head.len()..]].concat();
        prop_assert!(kvs::glob::matches(&suffix, t));
        let longer = [t, b"x"].concat();
        prop_assert!(!kvs::glob::matches(t, &longer));
    }

    #[test]
    fn glob_never_panics(pattern in prop::collection::vec(any::<u8>(), 0..30),
                         text in prop::collection::vec(any::<u8>(), 0..60)) {
        let _ = kvs::glob::matches(&pattern, &text);
    }
}

// ----- data dir files --------------------------------------------------------

fn data_records() -> impl Strategy<Value = Vec<Vec<(String, String)>>> {
    prop::collection::vec(prop::collection::vec((string(), string()), 1..5), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn data_file_bytes_never_panic_nor_overread(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        use kvs::persist::format::{self, Version};
        let _ = format::read_header(&bytes, format::LOG_MAGIC);
        for version in [Version::V1, Version::V2] {
            if let Ok((_, n)) = format::read_record(&bytes, version) {
                prop_assert!(n >= version.frame_len() && n <= bytes.len());
            }
        }
    }

    #[test]
    fn data_records_round_trip_and_any_flip_is_seen(
        records in data_records(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        use kvs::persist::format::{self, Record, Version};
        let mut bytes = Vec::new();
        for r in &records {
            format::push_set(&mut bytes, r.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
        }
        let mut at = 0;
        let mut back = Vec::new();
        while at < bytes.len() {
            let (r, n) = format::read_record(&bytes[at..], Version::V2).expect("a record");
            let Record::Set(pairs) = r else { panic!("a set was written") };
            back.push(pairs);
            at += n;
        }
        let as_bytes: Vec<Vec<(Vec<u8>, Vec<u8>)>> = records
            .iter()
            .map(|r| r.iter().map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes())).collect())
            .collect();
        prop_assert_eq!(&back, &as_bytes);
        // One flipped bit anywhere: the record holding it does not read.
        let i = flip.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let mut at = 0;
        let mut whole = 0;
        while let Ok((_, n)) = format::read_record(&bytes[at..], Version::V2) {
            at += n;
            whole += 1;
        }
        prop_assert!(whole < records.len(), "a flip at {} went unseen", i);
        prop_assert!(at <= i);
    }
}
