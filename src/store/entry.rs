//! One key-value pair in one heap block: the key's bytes, then the value's.
//!
//! A `HashMap<String, String>` spends 48 bytes of table per pair plus two
//! heap blocks; a set of `Entry` spends 24 bytes of table and one block.
//! For 1 M pairs of 16-byte keys and 32-byte values that is the difference
//! between about 183 and 120 resident bytes per pair (see BENCHMARKS.md).
//! The price is that changing a value builds a new block instead of
//! overwriting the old value in place.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

#[derive(Debug, Clone)]
pub struct Entry {
    data: Box<str>,
    key_len: usize,
}

impl Entry {
    pub fn new(key: &str, value: &str) -> Entry {
        let mut data = String::with_capacity(key.len() + value.len());
        data.push_str(key);
        data.push_str(value);
        Entry {
            data: data.into_boxed_str(),
            key_len: key.len(),
        }
    }

    pub fn key(&self) -> &str {
        // `key_len` is the length of a `&str` pushed first: a char boundary.
        self.data.get(..self.key_len).unwrap_or_default()
    }

    pub fn value(&self) -> &str {
        self.data.get(self.key_len..).unwrap_or_default()
    }
}

/// Looked up by its key, so a `HashSet<Entry>` works as a map from `&str`.
impl Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        self.key()
    }
}

/// Hashes exactly as its key does, as `Borrow` requires.
impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn key_and_value_share_one_block() {
        let e = Entry::new("clé", "välue");
        assert_eq!(e.key(), "clé");
        assert_eq!(e.value(), "välue");
        let mut set = HashSet::new();
        set.insert(e);
        assert_eq!(set.get("clé").map(Entry::value), Some("välue"));
        // Equal keys are the same entry whatever the value.
        set.replace(Entry::new("clé", "new"));
        assert_eq!(set.len(), 1);
        assert_eq!(set.get("clé").map(Entry::value), Some("new"));
    }
}
