//! Streams the lines of a job file with `memchr`, without reading the whole
//! file into memory and without allocating per line.

use memchr::memchr;
use std::io::{self, Read};

/// Longest line kept; anything longer cannot be a valid command (256 pairs
/// of two 40-byte strings is about 21 KiB) and is reported as too long.
pub const MAX_LINE: usize = 64 * 1024;

/// One line handed out by [`LineReader`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The line's bytes, without the `\n`.
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
}

impl<R: Read> LineReader<R> {
    pub fn new(inner: R) -> Self {
        LineReader {
            inner,
            buf: vec![0; MAX_LINE + 1],
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// The next line, or `None` at end of input. A last line without `\n`
    /// is still a line.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        let mut skipping = false;
        loop {
            if let Some(pos) = memchr(b'\n', &self.buf[self.start..self.end]) {
                let (s, e) = (self.start, self.start + pos);
                self.start = e + 1;
                return Ok(Some(if skipping {
                    Line::TooLong
                } else {
                    Line::Text(&self.buf[s..e])
                }));
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(if skipping { Some(Line::TooLong) } else { None });
                }
                let (s, e) = (self.start, self.end);
                self.start = self.end;
                return Ok(Some(if skipping {
                    Line::TooLong
                } else {
                    Line::Text(&self.buf[s..e])
                }));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Vec<Result<Vec<u8>, ()>> {
        let mut r = LineReader::new(input);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push(match l {
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
        assert_eq!(r.next_line().unwrap(), Some(Line::Text(b"ab")));
        assert_eq!(r.next_line().unwrap(), Some(Line::Text(b"cd")));
        assert_eq!(r.next_line().unwrap(), None);
    }
}
