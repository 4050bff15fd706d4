//! Who is subscribed to what: key to sessions, for fan-out. Each session
//! keeps its own set of keys too, so that closing it is cheap.

use std::collections::HashMap;

/// Sessions are named by their slab index.
pub type SessionId = usize;

#[derive(Debug, Default)]
pub struct Subscriptions {
    by_key: HashMap<String, Vec<SessionId>>,
}

impl Subscriptions {
    /// Adds `sid` to `key`'s subscribers; false if it already was one.
    pub fn subscribe(&mut self, key: &str, sid: SessionId) -> bool {
        let subs = self.by_key.entry(key.to_owned()).or_default();
        if subs.contains(&sid) {
            return false;
        }
        subs.push(sid);
        true
    }

    /// Removes `sid` from `key`'s subscribers; false if it was not one.
    pub fn unsubscribe(&mut self, key: &str, sid: SessionId) -> bool {
        let Some(subs) = self.by_key.get_mut(key) else {
            return false;
        };
        let Some(i) = subs.iter().position(|&s| s == sid) else {
            return false;
        };
        subs.swap_remove(i);
        if subs.is_empty() {
            self.by_key.remove(key);
        }
        true
    }

    pub fn subscribers(&self, key: &str) -> &[SessionId] {
        self.by_key.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn clear(&mut self) {
        self.by_key.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_unsubscribe() {
        let mut s = Subscriptions::default();
        assert!(s.subscribe("k", 1));
        assert!(!s.subscribe("k", 1));
        assert!(s.subscribe("k", 2));
        assert_eq!(s.subscribers("k"), &[1, 2]);
        assert!(s.unsubscribe("k", 1));
        assert!(!s.unsubscribe("k", 1));
        assert!(!s.unsubscribe("x", 2));
        assert!(s.unsubscribe("k", 2));
        assert!(s.is_empty());
    }
}
