//! A request's arguments as the RESP parser finds them: slices of the
//! read buffer. Nearly every request has a handful (GET 2, SET 3, SET with
//! EX 5), and a `Vec` for them was an allocation and a free per request on
//! the reactor; up to [`INLINE`] are kept in place, more in a `Vec`.

use std::ops::Deref;

/// Arguments kept without allocating.
const INLINE: usize = 5;

#[derive(Clone, Default)]
pub struct Args<'a> {
    inline: [&'a [u8]; INLINE],
    /// How many of `inline` are used while `spilled` is empty.
    len: usize,
    /// Every argument, once there are more than [`INLINE`].
    spilled: Vec<&'a [u8]>,
}

impl<'a> Args<'a> {
    pub fn new() -> Self {
        Args::default()
    }

    #[inline]
    pub fn push(&mut self, arg: &'a [u8]) {
        if self.spilled.is_empty() && self.len < INLINE {
            self.inline[self.len] = arg;
            self.len += 1;
            return;
        }
        self.spill(arg);
    }

    /// Past [`INLINE`]: every argument moves to the `Vec`.
    #[cold]
    fn spill(&mut self, arg: &'a [u8]) {
        if self.spilled.is_empty() {
            self.spilled.reserve(INLINE * 2);
            self.spilled.extend_from_slice(&self.inline[..self.len]);
        }
        self.spilled.push(arg);
    }
}

impl<'a> Deref for Args<'a> {
    type Target = [&'a [u8]];

    #[inline]
    fn deref(&self) -> &[&'a [u8]] {
        if self.spilled.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }
}

impl<'a> FromIterator<&'a [u8]> for Args<'a> {
    fn from_iter<I: IntoIterator<Item = &'a [u8]>>(iter: I) -> Self {
        let mut args = Args::new();
        for a in iter {
            args.push(a);
        }
        args
    }
}

impl<'a> From<Vec<&'a [u8]>> for Args<'a> {
    fn from(v: Vec<&'a [u8]>) -> Self {
        v.into_iter().collect()
    }
}

impl PartialEq for Args<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Args<'_> {}

impl PartialEq<Vec<&[u8]>> for Args<'_> {
    fn eq(&self, other: &Vec<&[u8]>) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for Args<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_keep_their_order_in_place_and_past_it() {
        let words: Vec<Vec<u8>> = (0..12).map(|i| format!("a{i}").into_bytes()).collect();
        for n in 0..words.len() {
            let args: Args<'_> = words[..n].iter().map(Vec::as_slice).collect();
            let want: Vec<&[u8]> = words[..n].iter().map(Vec::as_slice).collect();
            assert_eq!(&*args, want.as_slice(), "{n} arguments");
            assert_eq!(args, Args::from(want));
        }
    }
}
