//! Job lines and client stdin lines: any bytes give a command or a typed
//! error, and a parsed command printed and parsed again is the same.
#![no_main]

use kvs::client::commands::parse_client_line;
use kvs::jobs::parse_line;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_client_line(data);
    if let Ok(Some(cmd)) = parse_line(data) {
        let again = parse_line(cmd.to_string().as_bytes());
        assert_eq!(again, Ok(Some(cmd)));
    }
});
