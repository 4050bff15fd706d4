//! `notify-keyspace-events`, as Redis parses and prints it: which keyspace
//! notifications RESP subscribers get. kvs's own FIFO subscriptions are
//! always on, whatever this says; and kvs starts with everything on
//! (Redis starts with nothing), so code that expects notifications without
//! asking gets them.

use crate::store::{EventClass, KeyEvent};

/// The classes kvs's changes fall in ([`KeyEvent::class`]): a SET is a
/// string event (`$`), a deletion a generic one (`g`).
const GENERIC: u16 = 1 << 0;
const STRING: u16 = 1 << 1;
const EXPIRED: u16 = 1 << 6;
const KEYSPACE: u16 = 1 << 11;
const KEYEVENT: u16 = 1 << 12;
const KEY_MISS: u16 = 1 << 13;
const NEW: u16 = 1 << 14;

/// Redis's letters for its classes, in the order it prints them; `A` is
/// all of these.
const CLASSES: &[(u8, u16)] = &[
    (b'g', GENERIC),
    (b'$', STRING),
    (b'l', 1 << 2),
    (b's', 1 << 3),
    (b'h', 1 << 4),
    (b'z', 1 << 5),
    (b'x', EXPIRED),
    (b'e', 1 << 7),
    (b't', 1 << 8),
    (b'd', 1 << 9),
];
const ALL: u16 = GENERIC
    | STRING
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | EXPIRED
    | (1 << 7)
    | (1 << 8)
    | (1 << 9);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyFlags(u16);

impl Default for NotifyFlags {
    /// Everything on (`AKE`): kvs's default, see the module's doc.
    fn default() -> Self {
        NotifyFlags(ALL | KEYSPACE | KEYEVENT)
    }
}

impl NotifyFlags {
    /// Parses CONFIG SET's value; `None` for a letter Redis does not know.
    pub fn parse(s: &[u8]) -> Option<NotifyFlags> {
        let mut f = 0;
        for &c in s {
            f |= match c {
                b'A' => ALL,
                b'K' => KEYSPACE,
                b'E' => KEYEVENT,
                b'm' => KEY_MISS,
                b'n' => NEW,
                _ => CLASSES.iter().find(|(l, _)| *l == c)?.1,
            };
        }
        Some(NotifyFlags(f))
    }

    /// What CONFIG GET answers (Redis's form: `AKE` for `KEA`).
    pub fn text(self) -> String {
        let mut s = String::new();
        if self.0 & ALL == ALL {
            s.push('A');
        } else {
            s.extend(
                CLASSES
                    .iter()
                    .filter(|(_, bit)| self.0 & bit != 0)
                    .map(|(l, _)| *l as char),
            );
        }
        for (bit, l) in [
            (KEYSPACE, 'K'),
            (KEYEVENT, 'E'),
            (KEY_MISS, 'm'),
            (NEW, 'n'),
        ] {
            if self.0 & bit != 0 {
                s.push(l);
            }
        }
        s
    }

    fn class(event: KeyEvent) -> u16 {
        match event.class() {
            EventClass::Generic => GENERIC,
            EventClass::String => STRING,
            EventClass::Expired => EXPIRED,
            EventClass::New => NEW,
            EventClass::Unpublished => 0,
        }
    }

    /// Whether a change's message goes out on its key's keyspace channel.
    pub fn keyspace(self, event: KeyEvent) -> bool {
        self.0 & KEYSPACE != 0 && self.0 & Self::class(event) != 0
    }

    /// Whether `new` events are wanted at all (the store reports them
    /// only then: they double the changes of every write of a new key).
    pub fn new_keys(self) -> bool {
        self.0 & NEW != 0 && self.0 & (KEYSPACE | KEYEVENT) != 0
    }

    /// Whether it goes out on the key-event channel.
    pub fn keyevent(self, event: KeyEvent) -> bool {
        self.0 & KEYEVENT != 0 && self.0 & Self::class(event) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_print_as_redis_does() {
        assert_eq!(NotifyFlags::default().text(), "AKE");
        assert_eq!(NotifyFlags::parse(b"KEA").unwrap().text(), "AKE");
        assert_eq!(NotifyFlags::parse(b"").unwrap().text(), "");
        assert_eq!(NotifyFlags::parse(b"E$g").unwrap().text(), "g$E");
        assert_eq!(NotifyFlags::parse(b"Kx").unwrap().text(), "xK");
        assert!(NotifyFlags::parse(b"Q").is_none());
        let f = NotifyFlags::parse(b"E$").unwrap();
        let (set, del) = (KeyEvent::Set, KeyEvent::Del);
        assert!(f.keyevent(set) && !f.keyevent(del) && !f.keyspace(set));
        let f = NotifyFlags::parse(b"Kg").unwrap();
        assert!(f.keyspace(del) && !f.keyspace(set) && !f.keyevent(del));
    }
}
