//! What a key or value may be in the course's two formats, job files and
//! FIFO frames (SPEC sections 2 and 3): 1 to 40 bytes of UTF-8 with no
//! whitespace, NUL, `,`, `(`, `)`, `[` or `]`. The rules bind what those
//! formats can carry (41-byte frame fields, lines split on spaces and
//! brackets), so the job parser and the FIFO decoder share this one copy.

use std::fmt;

/// Longest key or value, in bytes: the FIFO protocol's field is 41 bytes
/// with its terminating NUL, and every stored key must be subscribable.
pub const MAX_STRING: usize = 40;

/// Why bytes are not a key or value of the course formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextError {
    Empty,
    TooLong,
    /// Whitespace, NUL or one of `,()[]`.
    InvalidChar,
    NotUtf8,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::Empty => f.write_str("empty key or value"),
            TextError::TooLong => write!(f, "key or value longer than {MAX_STRING} bytes"),
            TextError::InvalidChar => f.write_str("forbidden character in key or value"),
            TextError::NotUtf8 => f.write_str("key or value is not valid UTF-8"),
        }
    }
}

impl std::error::Error for TextError {}

/// Whether `b` may appear in a key or value.
#[inline]
pub fn is_string_byte(b: u8) -> bool {
    STRING_BYTES[b as usize]
}

/// [`is_string_byte`] for every byte: the scan of a key is one load per byte.
static STRING_BYTES: [bool; 256] = {
    let mut t = [true; 256];
    let forbidden = *b" \t\n\x0c\r,()[]\0";
    let mut i = 0;
    while i < forbidden.len() {
        t[forbidden[i] as usize] = false;
        i += 1;
    }
    t
};

/// Checks a key or value against the rules above.
pub fn validate(s: &[u8]) -> Result<&str, TextError> {
    if s.is_empty() {
        return Err(TextError::Empty);
    }
    if s.len() > MAX_STRING {
        return Err(TextError::TooLong);
    }
    if !s.iter().all(|&b| is_string_byte(b)) {
        return Err(TextError::InvalidChar);
    }
    std::str::from_utf8(s).map_err(|_| TextError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules() {
        assert_eq!(validate(b"ok"), Ok("ok"));
        assert_eq!(validate(b""), Err(TextError::Empty));
        assert_eq!(validate(&[b'a'; 41]), Err(TextError::TooLong));
        assert!(validate(&[b'a'; 40]).is_ok());
        for bad in [&b"a b"[..], b"a\0", b"(x)", b"a,b", b"[", b"a\tb", b"a\r"] {
            assert_eq!(validate(bad), Err(TextError::InvalidChar), "{bad:?}");
        }
        assert_eq!(validate(b"\xff"), Err(TextError::NotUtf8));
        assert_eq!(validate("é".as_bytes()), Ok("é"));
    }
}
