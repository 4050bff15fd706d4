//! A session's input: bytes read but not yet taken as requests.
//!
//! A plain `Vec` read into by `resize` then `truncate` zeroed the room of
//! every read again (a 256 KiB `memset` per read of a large value: a fifth
//! of the reactor's time under 100 KiB SETs). This buffer keeps the bytes
//! it has zeroed once, takes requests off its front by moving an index,
//! and moves what is left to the front only when a read needs the room.
//! A session idle for a while gives its room back ([`InBuf::release`]),
//! as Redis shrinks an idle client's query buffer.

use std::io;
use std::ops::Deref;

#[derive(Default)]
pub struct InBuf {
    /// Every byte of it initialised; `start..end` is what waits.
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl InBuf {
    /// Makes `want` bytes of room after the waiting ones.
    fn room(&mut self, want: usize) -> &mut [u8] {
        if self.data.len() - self.end < want {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.data.len() - self.end < want {
                self.data.resize(self.end + want, 0);
            }
        }
        &mut self.data[self.end..self.end + want]
    }

    /// One `read` into up to `want` bytes of room; what it read is kept.
    pub fn read_with(
        &mut self,
        want: usize,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let n = read(self.room(want))?;
        self.end += n.min(want);
        Ok(n)
    }

    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.room(bytes.len()).copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Takes `n` bytes (at most what waits) off the front.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Bytes it holds room for, waiting or not.
    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }

    /// Bytes of room it holds beyond what waits (CLIENT LIST's qbuf-free).
    pub fn free(&self) -> usize {
        self.capacity() - self.len()
    }

    /// Gives the room back if nothing waits.
    pub fn release(&mut self) {
        if self.start == self.end {
            self.data = Vec::new();
        }
    }
}

impl Deref for InBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_out_in_order_across_reads_and_takes() {
        let mut b = InBuf::default();
        b.extend_from_slice(b"hello ");
        b.read_with(8, |room| {
            room[..5].copy_from_slice(b"world");
            Ok(5)
        })
        .unwrap();
        assert_eq!(&*b, b"hello world");
        b.consume(6);
        assert_eq!(&*b, b"world");
        // Room past the end moves what waits to the front.
        let big = vec![7u8; 100];
        b.extend_from_slice(&big);
        assert_eq!(&b[..5], b"world");
        assert_eq!(b.len(), 105);
        b.consume(1000);
        assert!(b.is_empty());
    }

    #[test]
    fn a_failed_read_keeps_nothing_and_room_is_given_back_only_when_empty() {
        let mut b = InBuf::default();
        let e = b.read_with(16, |_| Err(io::ErrorKind::WouldBlock.into()));
        assert!(e.is_err());
        assert!(b.is_empty());
        b.read_with(1000, |room| Ok(room.len())).unwrap();
        b.consume(999);
        b.release();
        assert!(b.capacity() >= 1000, "a byte still waits");
        assert_eq!(b.len(), 1);
        b.consume(1);
        b.release();
        assert_eq!(b.capacity(), 0);
    }
}
