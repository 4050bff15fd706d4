//! Streams the lines of a job file with `memchr`, without reading the whole
//! file into memory and without allocating per line.
//!
//! Complete lines are checked for UTF-8 a block at a time and handed out
//! as `&str`: one check over many lines costs a fraction of one check per
//! line, which was the parser's largest single cost. A block that is not
//! UTF-8 is handed out line by line as bytes up to the line at fault, so
//! the parser can say which line is wrong.

use memchr::{memchr, memrchr};
use std::io::{self, Read};

/// Longest line kept; anything longer cannot be a valid command (256 pairs
/// of two 40-byte strings is about 21 KiB) and is reported as too long.
pub const MAX_LINE: usize = 64 * 1024;

/// One line handed out by [`LineReader`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The line, without the `\n`, known to be UTF-8.
    Str(&'a str),
    /// The line's bytes, without the `\n`: a line that is not UTF-8.
    Text(&'a [u8]),
    /// The line was longer than [`MAX_LINE`]; its bytes were skipped.
    TooLong,
}

pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Start and end of the unread bytes in `buf`.
    start: usize,
    end: usize,
    eof: bool,
    /// Complete lines taken from `buf` and checked, and how far they were
    /// handed out.
    text: String,
    text_pos: usize,
}

impl<R: Read> LineReader<R> {
    pub fn new(inner: R) -> Self {
        LineReader {
            inner,
            buf: vec![0; MAX_LINE + 1],
            start: 0,
            end: 0,
            eof: false,
            text: String::new(),
            text_pos: 0,
        }
    }

    /// The next line, or `None` at end of input. A last line without `\n`
    /// is still a line.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        if self.text_pos < self.text.len() {
            return Ok(Some(self.text_line()));
        }
        let mut skipping = false;
        loop {
            if let Some(pos) = memchr(b'\n', &self.buf[self.start..self.end]) {
                if skipping {
                    self.start += pos + 1;
                    return Ok(Some(Line::TooLong));
                }
                return Ok(Some(self.block(self.start + pos)));
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(if skipping { Some(Line::TooLong) } else { None });
                }
                if skipping {
                    self.start = self.end;
                    return Ok(Some(Line::TooLong));
                }
                return Ok(Some(self.block(self.end)));
            }
            if self.end - self.start > MAX_LINE {
                // No newline within the limit: drop what we have and skip to
                // the next newline.
                skipping = true;
                self.start = 0;
                self.end = 0;
            } else if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = loop {
                match self.inner.read(&mut self.buf[self.end..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                self.eof = true;
            }
            self.end += n;
        }
    }

    /// Takes every complete line from `start` on into `text` if they are
    /// UTF-8, and returns the first; `first_end` is where the first ends
    /// (its `\n`, or the end of input for a last line without one).
    fn block(&mut self, first_end: usize) -> Line<'_> {
        let (start, end) = (self.start, self.end);
        let block_end = if first_end == end {
            end
        } else {
            memrchr(b'\n', &self.buf[first_end..end]).map_or(end, |p| first_end + p + 1)
        };
        let block = &self.buf[start..block_end];
        let text = match std::str::from_utf8(block) {
            Ok(t) => Some(t),
            // The whole lines before the first bad byte, if any (checked
            // again, but only in this rare case).
            Err(e) => memrchr(b'\n', &block[..e.valid_up_to()])
                .and_then(|p| std::str::from_utf8(&block[..=p]).ok()),
        };
        match text {
            Some(t) if !t.is_empty() => {
                self.text.clear();
                self.text.push_str(t);
                self.text_pos = 0;
                self.start = start + t.len();
                self.text_line()
            }
            // The first line itself is not UTF-8: as bytes.
            _ => {
                self.start = (first_end + 1).min(end);
                Line::Text(&self.buf[start..first_end])
            }
        }
    }

    /// The next line of `text`.
    fn text_line(&mut self) -> Line<'_> {
        let rest = self.text.get(self.text_pos..).unwrap_or_default();
        let len = memchr(b'\n', rest.as_bytes()).unwrap_or(rest.len());
        self.text_pos += len + 1;
        Line::Str(rest.get(..len).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Vec<Result<Vec<u8>, ()>> {
        let mut r = LineReader::new(input);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push(match l {
                Line::Str(t) => Ok(t.as_bytes().to_vec()),
                Line::Text(t) => Ok(t.to_vec()),
                Line::TooLong => Err(()),
            });
        }
        out
    }

    #[test]
    fn splits_lines() {
        assert_eq!(all(b""), Vec::<Result<Vec<u8>, ()>>::new());
        assert_eq!(
            all(b"a\n\nb"),
            vec![Ok(b"a".to_vec()), Ok(vec![]), Ok(b"b".to_vec())]
        );
        assert_eq!(all(b"a\n"), vec![Ok(b"a".to_vec())]);
    }

    #[test]
    fn long_lines_are_skipped_and_reading_goes_on() {
        let mut input = vec![b'x'; MAX_LINE * 3];
        input.extend_from_slice(b"\nSHOW\n");
        input.extend(vec![b'y'; MAX_LINE + 5]);
        assert_eq!(all(&input), vec![Err(()), Ok(b"SHOW".to_vec()), Err(())]);
    }

    #[test]
    fn lines_across_small_reads() {
        // A reader that returns one byte at a time.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let mut r = LineReader::new(Trickle(b"ab\ncd\n"));
        assert_eq!(r.next_line().unwrap(), Some(Line::Str("ab")));
        assert_eq!(r.next_line().unwrap(), Some(Line::Str("cd")));
        assert_eq!(r.next_line().unwrap(), None);
    }

    #[test]
    fn a_line_that_is_not_utf8_comes_as_bytes_and_the_rest_as_text() {
        let mut r = LineReader::new(&b"a\nb\xff\nc\xc3\xa9\nd"[..]);
        assert_eq!(r.next_line().unwrap(), Some(Line::Str("a")));
        assert_eq!(r.next_line().unwrap(), Some(Line::Text(b"b\xff")));
        assert_eq!(r.next_line().unwrap(), Some(Line::Str("c\u{e9}")));
        assert_eq!(r.next_line().unwrap(), Some(Line::Str("d")));
        assert_eq!(r.next_line().unwrap(), None);
        // A bad last line without a newline.
        let mut r = LineReader::new(&b"\xff"[..]);
        assert_eq!(r.next_line().unwrap(), Some(Line::Text(b"\xff")));
        assert_eq!(r.next_line().unwrap(), None);
    }
}
