//! A session's input: bytes read but not yet taken as requests.
//!
//! A plain `Vec` read into by `resize` then `truncate` zeroed the room of
//! every read again (a 256 KiB `memset` per read of a large value: a fifth
//! of the reactor's time under 100 KiB SETs). This buffer keeps the bytes
//! it has zeroed once, takes requests off its front by moving an index,
//! and moves what is left to the front only when a read needs the room.
//! A session idle for a while gives its room back ([`InBuf::release`]),
//! as Redis shrinks an idle client's query buffer.
//!
//! A large bulk string (a big value) is read apart, into a buffer of its
//! own ([`InBuf::set_apart`]), as Redis reads such an argument into the
//! object it keeps: the command then carries that buffer to the store,
//! which keeps it, instead of the value being copied out of this buffer
//! (a sixth of the reactor's time under 100 KiB SETs from 50 clients).

use crate::protocol::resp::{self, Parsed, BIG_ARG};
use std::io;
use std::ops::Deref;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;

#[derive(Default)]
pub struct InBuf {
    /// Every byte of it initialised; `start..end` is what waits.
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// Bulk strings read apart, in the order of their places in `data`.
    apart: Vec<Apart>,
}

/// A bulk string's bytes read into a buffer of their own.
struct Apart {
    /// Where in `data` its bytes would be: its `$<n>` header ends there
    /// and its `\r\n` follows.
    at: usize,
    /// Its bytes read so far; room for more is reserved as they come,
    /// never past `len`, so a header alone cannot make the server
    /// allocate its declared length.
    bytes: Arc<Vec<u8>>,
    /// Its declared length.
    len: usize,
}

impl InBuf {
    /// Makes `want` bytes of room after the waiting ones.
    fn room(&mut self, want: usize) -> &mut [u8] {
        if self.data.len() - self.end < want {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.shift(self.start);
            }
            if self.data.len() - self.end < want {
                self.data.resize(self.end + want, 0);
            }
        }
        &mut self.data[self.end..self.end + want]
    }

    /// Moves the waiting bytes' indices `by` towards the front.
    fn shift(&mut self, by: usize) {
        self.start -= by;
        self.end -= by;
        for a in &mut self.apart {
            a.at -= by;
        }
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

    /// Takes `n` bytes (at most what waits) off the front, and the bulk
    /// strings read apart within them.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        let start = self.start;
        self.apart.retain(|a| a.at >= start);
        if self.start == self.end {
            self.shift(self.start);
        }
    }

    /// Bytes it holds room for, waiting or not, its bulk strings read
    /// apart included.
    pub fn capacity(&self) -> usize {
        self.data.capacity() + self.apart.iter().map(|a| a.bytes.capacity()).sum::<usize>()
    }

    /// Bytes that wait, those of bulk strings read apart included.
    pub fn held(&self) -> usize {
        self.len() + self.apart.iter().map(|a| a.bytes.len()).sum::<usize>()
    }

    /// Bytes of room it holds beyond what waits (CLIENT LIST's qbuf-free).
    pub fn free(&self) -> usize {
        self.data.capacity() - self.len()
    }

    /// Gives the room back if nothing waits.
    pub fn release(&mut self) {
        if self.start == self.end && self.apart.is_empty() {
            self.data = Vec::new();
        }
    }

    /// The bytes read so far of the bulk string read apart whose bytes
    /// would be at `at` in what waits.
    fn apart_at(&self, at: usize) -> Option<&[u8]> {
        let at = self.start + at;
        self.apart
            .iter()
            .find(|a| a.at == at)
            .map(|a| a.bytes.as_slice())
    }

    /// The RESP request that starts `from` bytes into what waits.
    pub fn parse(&self, from: usize, unauthenticated: bool) -> Parsed<'_> {
        let rest = self.get(from..).unwrap_or_default();
        if self.apart.is_empty() {
            return resp::parse_as(rest, unauthenticated);
        }
        resp::parse_apart(rest, unauthenticated, |at| self.apart_at(from + at))
    }

    /// Where the request being read is cut inside a bulk string, if it is
    /// (see [`resp::cut`]).
    pub fn cut(&self) -> Option<resp::Cut> {
        resp::cut(self, |at| self.apart_at(at))
    }

    /// If the request being read is cut inside a large bulk string
    /// (at least [`BIG_ARG`] bytes) whose bytes are still coming, goes on
    /// reading them apart: what came of them so far moves to a buffer of
    /// their own, into which [`InBuf::read_apart`] reads the rest.
    /// Whether it did.
    pub fn set_apart(&mut self) -> bool {
        let Some(cut) = self.cut() else {
            return false;
        };
        let come = self.len().saturating_sub(cut.start);
        if cut.len < BIG_ARG || come >= cut.len || self.apart_at(cut.start).is_some() {
            return false;
        }
        let mut bytes = Vec::new();
        grow(&mut bytes, come, cut.len);
        bytes.extend_from_slice(&self[cut.start..]);
        self.end = self.start + cut.start;
        self.apart.push(Apart {
            at: self.end,
            bytes: Arc::new(bytes),
            len: cut.len,
        });
        true
    }

    /// Whether a bulk string is being read apart.
    pub fn reading_apart(&self) -> bool {
        self.apart.last().is_some_and(|a| a.bytes.len() < a.len)
    }

    /// One read from `fd` while a bulk string is read apart: up to `most`
    /// of its next bytes straight into its buffer and up to `then` of what
    /// follows (its `\r\n`, the next headers) into this one, in one
    /// `readv`, so its end does not cost a read of its own. Its buffer is
    /// not zeroed first: the kernel writes it. How many bytes came, and
    /// how many were asked for.
    pub fn read_apart(
        &mut self,
        fd: BorrowedFd<'_>,
        most: usize,
        then: usize,
    ) -> io::Result<(usize, usize)> {
        // Called only while one is (none: as if at the end of the input).
        let Some(a) = self.apart.last_mut().filter(|a| a.bytes.len() < a.len) else {
            return Ok((0, 0));
        };
        // Never shared while its bytes are still coming (no request holds
        // them yet): no copy.
        let bytes = Arc::make_mut(&mut a.bytes);
        let filled = bytes.len();
        grow(bytes, filled, a.len);
        let want = (a.len - filled).min(most).min(bytes.capacity() - filled);
        // What follows it only with its last bytes.
        let then = if want == a.len - filled { then } else { 0 };
        self.room(then);
        let next = &mut self.data[self.end..self.end + then];
        let Some(a) = self.apart.last_mut() else {
            return Ok((0, 0));
        };
        let bytes = Arc::make_mut(&mut a.bytes);
        let spare = &mut bytes.spare_capacity_mut()[..want];
        let iov = [
            nix::libc::iovec {
                iov_base: spare.as_mut_ptr().cast(),
                iov_len: spare.len(),
            },
            nix::libc::iovec {
                iov_base: next.as_mut_ptr().cast(),
                iov_len: next.len(),
            },
        ];
        // SAFETY: `readv` writes at most each `iov_len` bytes at each
        // `iov_base`, both within memory borrowed mutably here for the
        // call (the bulk string's reserved room, this buffer's room).
        let n = unsafe { nix::libc::readv(fd.as_raw_fd(), iov.as_ptr(), 2) };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        let into_bulk = n.min(want);
        // SAFETY: the kernel wrote the first `into_bulk` bytes of the
        // spare room, which `grow` reserved.
        unsafe { bytes.set_len(filled + into_bulk) };
        self.end += (n - into_bulk).min(then);
        Ok((n, want + then))
    }

    /// The buffer of `arg`, if it is a bulk string read apart: a command
    /// may take it along instead of a copy.
    pub fn shared(&self, arg: &[u8]) -> Option<Arc<Vec<u8>>> {
        self.apart
            .iter()
            .find(|a| std::ptr::eq(a.bytes.as_slice(), arg))
            .map(|a| a.bytes.clone())
    }
}

/// Reserves room in `bytes` (of which `filled` have come) for what may
/// come next, never past `len`: twice what came, and a large read more,
/// so a peer makes the server allocate little more than it sent.
fn grow(bytes: &mut Vec<u8>, filled: usize, len: usize) {
    let room = (2 * filled).max(filled + BIG_READ_ROOM).min(len);
    bytes.reserve_exact(room.saturating_sub(bytes.len()));
}

/// Room a bulk string read apart gets beyond what came of it: about what
/// a socket holds, as the session's large reads.
const BIG_READ_ROOM: usize = 256 * 1024;

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

    /// Feeds `bytes` through a socket as the session reads: into the
    /// buffer read apart while one is, else into this one, trying to set
    /// one apart after each read; `step` bytes written at a time, and
    /// read at most `step` at a time.
    fn feed(b: &mut InBuf, bytes: &[u8], step: usize) {
        feed_reading(b, bytes, step, step);
    }

    /// [`feed`], reading at most `most` bytes at a time.
    fn feed_reading(b: &mut InBuf, bytes: &[u8], step: usize, most: usize) {
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        let (mut tx, mut rx) = std::os::unix::net::UnixStream::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        for piece in bytes.chunks(step) {
            tx.write_all(piece).unwrap();
            loop {
                let got = if b.reading_apart() {
                    b.read_apart(rx.as_fd(), most, 4096).map(|(n, _)| n)
                } else {
                    let n = b.read_with(most, |room| rx.read(room));
                    b.set_apart();
                    n
                };
                match got {
                    Ok(0) => panic!("socket closed"),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }

    #[test]
    fn large_bulks_are_read_apart_and_taken_along() {
        let big = |n: usize, b: u8| vec![b; n];
        let (v1, v2) = (big(BIG_ARG + 5, 1), big(3 * BIG_READ_ROOM, 2));
        let req = |args: &[&[u8]]| resp::encode_request(args);
        let mut wire = req(&[b"MSET", b"k1", &v1, b"k2", &v2]);
        wire.extend(req(&[b"GET", b"k1"]));
        // Reads of 100,000 bytes bring the first value whole: only the
        // second, still coming, is set apart.
        for (step, most, apart) in [
            (7, 7, 2),
            (4096, 4096, 2),
            (100_000, 100_000, 1),
            (100_000, 5000, 2),
        ] {
            let mut b = InBuf::default();
            feed_reading(&mut b, &wire, step, most);
            assert_eq!(b.apart.len(), apart, "step {step}");
            assert!(
                b.len() < 200 + (2 - apart) * v1.len(),
                "only the headers and the GET are here"
            );
            let Parsed::Request(args, used) = b.parse(0, false) else {
                panic!("step {step}: not a request");
            };
            assert_eq!(args, vec![&b"MSET"[..], b"k1", &v1, b"k2", &v2]);
            // The values are the very buffers, to be taken along.
            let shared = b.shared(args[4]).expect("read apart");
            assert_eq!(shared.as_slice(), v2.as_slice());
            assert!(b.shared(args[1]).is_none());
            assert_eq!(b.shared(args[2]).is_some(), apart == 2);
            assert_eq!(
                b.parse(used, false),
                Parsed::Request(vec![&b"GET"[..], b"k1"].into(), b.len() - used)
            );
            drop(args);
            b.consume(used);
            assert!(b.apart.is_empty());
            assert_eq!(Arc::strong_count(&shared), 1, "the input let it go");
            assert_eq!(
                b.parse(0, false),
                Parsed::Request(vec![&b"GET"[..], b"k1"].into(), b.len())
            );
        }
    }

    #[test]
    fn a_bulk_header_alone_does_not_allocate_its_length() {
        let mut b = InBuf::default();
        let mut head = b"*2\r\n$4\r\nECHO\r\n$536870912\r\n".to_vec();
        head.extend(vec![b'x'; 20_000]);
        feed(&mut b, &head, 20_000);
        assert_eq!(b.apart.len(), 1);
        assert!(b.capacity() < 1 << 20, "{} bytes held", b.capacity());
        assert_eq!(b.parse(0, false), Parsed::Incomplete);
        assert_eq!(b.cut().map(|c| c.len), Some(536_870_912));
        // Small bulks stay where they are.
        let mut s = InBuf::default();
        feed(&mut s, b"*2\r\n$4\r\nECHO\r\n$30000\r\nxxxx", 4096);
        assert!(s.apart.is_empty());
        assert_eq!(s.cut().map(|c| c.len), Some(30_000));
    }
}
