//! The job-line parser: one line of a `.job` file in, one [`Command`] (or a
//! typed reason why not) out. It works on bytes, never panics, and never
//! allocates for a line it rejects before reaching its keys.
//!
//! Grammar (SPEC section 2), with optional spaces or tabs around tokens:
//! ```text
//! line    := blank | '#' anything | command
//! command := "WRITE" ws '[' pair+ ']' | "READ" ws list | "DELETE" ws list
//!          | "SHOW" | "BACKUP" | "HELP" | "WAIT" ws digits
//! pair    := '(' string ',' string ')' [',']
//! list    := '[' string (',' string)* ']'
//! string  := 1 to 40 bytes, none of them whitespace , ( ) [ ]
//! ```

use super::command::{Command, MAX_PAIRS};
use crate::protocol::text_rules::{self, is_string_byte, TextError, MAX_STRING};
use std::fmt;

/// Why a job line is not a valid command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The first word is not a command name.
    UnknownCommand,
    /// A command that takes no argument was given one, or a list was
    /// followed by more text.
    TrailingInput,
    /// Expected the given byte (e.g. `[`) but found something else or the end.
    Expected(char),
    /// A key or value is empty.
    EmptyString,
    /// A key or value is longer than [`MAX_STRING`] bytes.
    StringTooLong,
    /// More than [`MAX_PAIRS`] keys or pairs.
    TooManyItems,
    /// An empty list `[]`.
    EmptyList,
    /// WAIT needs a whole number of milliseconds.
    BadDelay,
    /// A key or value holds a byte SPEC forbids (whitespace, NUL, `,()[]`).
    InvalidChar,
    /// The line is not valid UTF-8.
    NotUtf8,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::UnknownCommand => f.write_str("unknown command"),
            ParseError::TrailingInput => f.write_str("unexpected text after the command"),
            ParseError::Expected(c) => write!(f, "expected '{c}'"),
            ParseError::EmptyString => f.write_str("empty key or value"),
            ParseError::StringTooLong => {
                write!(f, "key or value longer than {MAX_STRING} bytes")
            }
            ParseError::TooManyItems => write!(f, "more than {MAX_PAIRS} keys or pairs"),
            ParseError::EmptyList => f.write_str("empty list"),
            ParseError::BadDelay => f.write_str("WAIT needs a whole number of milliseconds"),
            ParseError::InvalidChar => f.write_str("forbidden character in key or value"),
            ParseError::NotUtf8 => f.write_str("line is not valid UTF-8"),
        }
    }
}

impl std::error::Error for ParseError {}

/// A parsed job line whose keys and values are slices of the line: what
/// the job runner uses, so that running a line allocates no string per key
/// (the store copies what it keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineCommand<'a> {
    Write(Vec<(&'a str, &'a str)>),
    Read(Vec<&'a str>),
    Delete(Vec<&'a str>),
    Show,
    Wait(u64),
    Backup,
    Help,
}

impl LineCommand<'_> {
    /// The same command, owning its strings.
    pub fn to_owned(&self) -> Command {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        match self {
            LineCommand::Write(p) => Command::Write(
                p.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            LineCommand::Read(k) => Command::Read(own(k)),
            LineCommand::Delete(k) => Command::Delete(own(k)),
            LineCommand::Show => Command::Show,
            LineCommand::Wait(ms) => Command::Wait(*ms),
            LineCommand::Backup => Command::Backup,
            LineCommand::Help => Command::Help,
        }
    }
}

/// Parses one line (without its `\n`; a trailing `\r` is ignored).
/// `Ok(None)` is a blank line or a comment.
pub fn parse_line(line: &[u8]) -> Result<Option<Command>, ParseError> {
    parse_line_borrowed(line).map(|c| c.map(|c| c.to_owned()))
}

/// [`parse_line`], keys and values borrowed from `line`.
pub fn parse_line_borrowed(line: &[u8]) -> Result<Option<LineCommand<'_>>, ParseError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.first() == Some(&b'#') {
        return Ok(None);
    }
    // One UTF-8 check for the whole line costs less than one per key and
    // value; a line that fails it is checked string by string, so that its
    // error is the same as ever (a bad byte in a comment is no error).
    parse(line, std::str::from_utf8(line).ok())
}

/// [`parse_line_borrowed`] for a line already known to be UTF-8 (the job
/// runner checks a block of lines at a time).
pub fn parse_line_str(line: &str) -> Result<Option<LineCommand<'_>>, ParseError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.starts_with('#') {
        return Ok(None);
    }
    parse(line.as_bytes(), Some(line))
}

/// Parses `line`; `text` is the same line as `&str` if it is UTF-8.
fn parse<'a>(line: &'a [u8], text: Option<&'a str>) -> Result<Option<LineCommand<'a>>, ParseError> {
    let mut c = Cursor {
        s: line,
        i: 0,
        text,
    };
    c.skip_ws();
    if c.at_end() {
        return Ok(None);
    }
    let word = c.word();
    let cmd = match word {
        b"WRITE" => LineCommand::Write(c.pairs()?),
        b"READ" => LineCommand::Read(c.list()?),
        b"DELETE" => LineCommand::Delete(c.list()?),
        b"SHOW" => LineCommand::Show,
        b"BACKUP" => LineCommand::Backup,
        b"HELP" => LineCommand::Help,
        b"WAIT" => LineCommand::Wait(c.delay()?),
        _ => return Err(ParseError::UnknownCommand),
    };
    c.skip_ws();
    if !c.at_end() {
        return Err(ParseError::TrailingInput);
    }
    Ok(Some(cmd))
}

/// Splits a line into its first word and the rest, for other line-based
/// languages (the client's stdin) that share the argument syntax.
pub fn split_word(line: &[u8]) -> (&[u8], &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut c = Cursor::new(line);
    c.skip_ws();
    let word = c.word();
    (word, &line[c.i..])
}

/// Parses `rest` as a whole argument with `f`: nothing but blanks may follow.
fn whole<'a, T>(
    rest: &'a [u8],
    f: impl FnOnce(&mut Cursor<'a>) -> Result<T, ParseError>,
) -> Result<T, ParseError> {
    let mut c = Cursor::new(rest);
    let v = f(&mut c)?;
    c.skip_ws();
    if c.at_end() {
        Ok(v)
    } else {
        Err(ParseError::TrailingInput)
    }
}

/// A `[k1,k2,...]` argument.
pub fn parse_keys(rest: &[u8]) -> Result<Vec<String>, ParseError> {
    whole(rest, Cursor::list).map(|k| k.into_iter().map(str::to_owned).collect())
}

/// A `[(k1,v1)(k2,v2)...]` argument.
pub fn parse_pairs(rest: &[u8]) -> Result<Vec<(String, String)>, ParseError> {
    whole(rest, Cursor::pairs).map(|p| {
        p.into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    })
}

/// A `<delay_ms>` argument.
pub fn parse_delay(rest: &[u8]) -> Result<u64, ParseError> {
    whole(rest, Cursor::delay)
}

/// Checks a key or value against SPEC's rules ([`text_rules`]).
pub fn validate_string(s: &[u8]) -> Result<&str, ParseError> {
    text_rules::validate(s).map_err(ParseError::from)
}

impl From<TextError> for ParseError {
    fn from(e: TextError) -> Self {
        match e {
            TextError::Empty => ParseError::EmptyString,
            TextError::TooLong => ParseError::StringTooLong,
            TextError::InvalidChar => ParseError::InvalidChar,
            TextError::NotUtf8 => ParseError::NotUtf8,
        }
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
    /// `s` as text, when it is all UTF-8: strings are then cut from it.
    text: Option<&'a str>,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a [u8]) -> Self {
        Cursor {
            s,
            i: 0,
            text: None,
        }
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    /// The run of non-blank bytes up to the next space, tab or `[`.
    fn word(&mut self) -> &'a [u8] {
        let start = self.i;
        while matches!(self.peek(), Some(b) if !matches!(b, b' ' | b'\t' | b'[')) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    fn expect(&mut self, want: u8) -> Result<(), ParseError> {
        self.skip_ws();
        if self.peek() == Some(want) {
            self.i += 1;
            Ok(())
        } else {
            Err(ParseError::Expected(want as char))
        }
    }

    /// A key or value: the bytes up to the next delimiter.
    fn string(&mut self) -> Result<&'a str, ParseError> {
        self.skip_ws();
        let start = self.i;
        let rest = self.s.get(start..).unwrap_or_default();
        let mut len = 0;
        while len < rest.len() && is_string_byte(rest[len]) {
            len += 1;
        }
        self.i += len;
        // Every byte was checked by the scan: only the length and UTF-8
        // are left of `validate_string`'s rules.
        if len == 0 {
            return Err(ParseError::EmptyString);
        }
        if len > MAX_STRING {
            return Err(ParseError::StringTooLong);
        }
        // A string ends at an ASCII delimiter or the end, so it is whole
        // characters of a line that is text.
        match self.text.and_then(|t| t.get(start..self.i)) {
            Some(s) => Ok(s),
            None => std::str::from_utf8(&rest[..len]).map_err(|_| ParseError::NotUtf8),
        }
    }

    fn list(&mut self) -> Result<Vec<&'a str>, ParseError> {
        self.expect(b'[')?;
        self.skip_ws();
        if self.peek() == Some(b']') {
            return Err(ParseError::EmptyList);
        }
        let mut keys = Vec::with_capacity(4);
        loop {
            if keys.len() == MAX_PAIRS {
                return Err(ParseError::TooManyItems);
            }
            keys.push(self.string()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(keys);
                }
                _ => return Err(ParseError::Expected(']')),
            }
        }
    }

    fn pairs(&mut self) -> Result<Vec<(&'a str, &'a str)>, ParseError> {
        self.expect(b'[')?;
        self.skip_ws();
        if self.peek() == Some(b']') {
            return Err(ParseError::EmptyList);
        }
        let mut pairs = Vec::with_capacity(4);
        loop {
            if pairs.len() == MAX_PAIRS {
                return Err(ParseError::TooManyItems);
            }
            self.expect(b'(')?;
            let k = self.string()?;
            self.expect(b',')?;
            let v = self.string()?;
            self.expect(b')')?;
            pairs.push((k, v));
            self.skip_ws();
            // HELP shows `(k,v)(k2,v2),...`: a comma between pairs is allowed.
            if self.peek() == Some(b',') {
                self.i += 1;
                self.skip_ws();
            }
            match self.peek() {
                Some(b']') => {
                    self.i += 1;
                    return Ok(pairs);
                }
                Some(b'(') => {}
                _ => return Err(ParseError::Expected(']')),
            }
        }
    }

    fn delay(&mut self) -> Result<u64, ParseError> {
        self.skip_ws();
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let digits = &self.s[start..self.i];
        if digits.is_empty() {
            return Err(ParseError::BadDelay);
        }
        // ASCII digits are UTF-8; overflow is the only parse failure left.
        std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or(ParseError::BadDelay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse_line(line.as_bytes()).unwrap().unwrap()
    }

    fn err(line: &str) -> ParseError {
        parse_line(line.as_bytes()).unwrap_err()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn blank_and_comment_lines() {
        assert_eq!(parse_line(b""), Ok(None));
        assert_eq!(parse_line(b"   \t"), Ok(None));
        assert_eq!(parse_line(b"\r"), Ok(None));
        assert_eq!(parse_line(b"# WRITE [(a,b)]"), Ok(None));
    }

    #[test]
    fn write() {
        assert_eq!(
            ok("WRITE [(a,1)(b,2)]"),
            Command::Write(vec![("a".into(), "1".into()), ("b".into(), "2".into())])
        );
        assert_eq!(
            ok("WRITE [(a,1),(b,2)]\r"),
            Command::Write(vec![("a".into(), "1".into()), ("b".into(), "2".into())])
        );
        assert_eq!(
            ok("  WRITE  [ ( a , 1 ) ]  "),
            Command::Write(vec![("a".into(), "1".into())])
        );
    }

    #[test]
    fn read_delete() {
        assert_eq!(ok("READ [c,a]"), Command::Read(s(&["c", "a"])));
        assert_eq!(ok("READ[a]"), Command::Read(s(&["a"])));
        assert_eq!(ok("DELETE [x, y]"), Command::Delete(s(&["x", "y"])));
    }

    #[test]
    fn simple_commands() {
        assert_eq!(ok("SHOW"), Command::Show);
        assert_eq!(ok("BACKUP"), Command::Backup);
        assert_eq!(ok("HELP"), Command::Help);
        assert_eq!(ok("WAIT 0"), Command::Wait(0));
        assert_eq!(ok("WAIT 1500"), Command::Wait(1500));
    }

    #[test]
    fn unknown_or_trailing() {
        assert_eq!(err("FOO"), ParseError::UnknownCommand);
        assert_eq!(err("write [(a,1)]"), ParseError::UnknownCommand);
        assert_eq!(err("SHOWX"), ParseError::UnknownCommand);
        assert_eq!(err("SHOW now"), ParseError::TrailingInput);
        assert_eq!(err("READ [a] [b]"), ParseError::TrailingInput);
    }

    #[test]
    fn brackets() {
        assert_eq!(err("WRITE [(a,1)"), ParseError::Expected(']'));
        assert_eq!(err("READ a"), ParseError::Expected('['));
        assert_eq!(err("READ [a"), ParseError::Expected(']'));
        assert_eq!(err("WRITE (a,1)"), ParseError::Expected('['));
        assert_eq!(err("WRITE [a,1]"), ParseError::Expected('('));
        assert_eq!(err("WRITE [(a1)]"), ParseError::Expected(','));
        assert_eq!(err("WRITE [(a,1]"), ParseError::Expected(')'));
        assert_eq!(err("DELETE []"), ParseError::EmptyList);
        assert_eq!(err("WRITE []"), ParseError::EmptyList);
    }

    #[test]
    fn string_bytes_are_spec_s() {
        for b in 0..=255u8 {
            let spec = !(b.is_ascii_whitespace() || b",()[]\0".contains(&b));
            assert_eq!(is_string_byte(b), spec, "byte {b:#x}");
        }
    }

    #[test]
    fn string_rules() {
        let k40 = "k".repeat(40);
        assert_eq!(
            ok(&format!("READ [{k40}]")),
            Command::Read(vec![k40.clone()])
        );
        assert_eq!(err(&format!("READ [{k40}x]")), ParseError::StringTooLong);
        assert_eq!(
            err(&format!("WRITE [(a,{k40}x)]")),
            ParseError::StringTooLong
        );
        assert_eq!(err("READ [a,,b]"), ParseError::EmptyString);
        assert_eq!(err("WRITE [(,1)]"), ParseError::EmptyString);
        assert_eq!(err("WRITE [(a,)]"), ParseError::EmptyString);
        assert_eq!(parse_line(b"READ [\xff]"), Err(ParseError::NotUtf8));
        // Keys from elsewhere (the wire protocol) go through the same check.
        assert_eq!(validate_string(b"a b"), Err(ParseError::InvalidChar));
        assert_eq!(validate_string(b"a\0"), Err(ParseError::InvalidChar));
        assert_eq!(validate_string(b"(x)"), Err(ParseError::InvalidChar));
        assert_eq!(validate_string(b"ok"), Ok("ok"));
        assert_eq!(ok("READ [clé]"), Command::Read(s(&["clé"])));
    }

    #[test]
    fn item_limits() {
        let keys: Vec<String> = (0..256).map(|i| format!("k{i}")).collect();
        assert!(
            matches!(ok(&format!("READ [{}]", keys.join(","))), Command::Read(v) if v.len() == 256)
        );
        let more: Vec<String> = (0..257).map(|i| format!("k{i}")).collect();
        assert_eq!(
            err(&format!("READ [{}]", more.join(","))),
            ParseError::TooManyItems
        );
        let pairs: String = (0..257).map(|i| format!("(k{i},v)")).collect();
        assert_eq!(err(&format!("WRITE [{pairs}]")), ParseError::TooManyItems);
    }

    #[test]
    fn wait_delay() {
        assert_eq!(err("WAIT"), ParseError::BadDelay);
        assert_eq!(err("WAIT -1"), ParseError::BadDelay);
        assert_eq!(err("WAIT ten"), ParseError::BadDelay);
        assert_eq!(err("WAIT 99999999999999999999999"), ParseError::BadDelay);
        assert_eq!(err("WAIT 10 20"), ParseError::TrailingInput);
    }

    #[test]
    fn display_round_trips() {
        for line in [
            "WRITE [(a,1)(b,2)]",
            "READ [a,b]",
            "DELETE [z]",
            "SHOW",
            "WAIT 7",
            "BACKUP",
            "HELP",
        ] {
            assert_eq!(ok(line).to_string(), line);
        }
    }
}
