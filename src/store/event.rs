//! What a change to a key was, by Redis's keyspace event names: a SET is
//! `set`, an INCR `incrby`, a RENAME `rename_from` and `rename_to`, and so
//! on. The store reports each change with its event; the server publishes
//! it under that name and class (`notify-keyspace-events`), and tells FIFO
//! subscribers of the changes to values.

/// One kind of change, named as Redis names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyEvent {
    Set,
    Del,
    IncrBy,
    IncrByFloat,
    Append,
    SetRange,
    SetBit,
    RenameFrom,
    RenameTo,
    CopyTo,
    /// A deadline was set (EXPIRE, SET ... EX).
    Expire,
    /// A deadline was removed (PERSIST).
    Persist,
    /// The key's deadline passed: it is gone.
    Expired,
    /// A key that did not exist was made (before its `set`, `incrby`...).
    New,
    /// FLUSHALL or FLUSHDB took the key away. Redis publishes no keyspace
    /// event for a flush, so neither does kvs on RESP; FIFO subscribers,
    /// whose contract is to hear every change to a value, hear it deleted.
    /// Not in [`KeyEvent::ALL`]: it has no channel.
    Flushed,
}

/// Redis's classes of events (`notify-keyspace-events` letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    /// `g`: DEL, RENAME, COPY, EXPIRE and the like.
    Generic,
    /// `$`: string commands.
    String,
    /// `x`: expiry.
    Expired,
    /// `n`: new keys (not part of `A`, as in Redis).
    New,
    /// Published under no letter (a flush).
    Unpublished,
}

impl KeyEvent {
    pub const ALL: [KeyEvent; 14] = [
        KeyEvent::Set,
        KeyEvent::Del,
        KeyEvent::IncrBy,
        KeyEvent::IncrByFloat,
        KeyEvent::Append,
        KeyEvent::SetRange,
        KeyEvent::SetBit,
        KeyEvent::RenameFrom,
        KeyEvent::RenameTo,
        KeyEvent::CopyTo,
        KeyEvent::Expire,
        KeyEvent::Persist,
        KeyEvent::Expired,
        KeyEvent::New,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KeyEvent::Set => "set",
            KeyEvent::Del => "del",
            KeyEvent::IncrBy => "incrby",
            KeyEvent::IncrByFloat => "incrbyfloat",
            KeyEvent::Append => "append",
            KeyEvent::SetRange => "setrange",
            KeyEvent::SetBit => "setbit",
            KeyEvent::RenameFrom => "rename_from",
            KeyEvent::RenameTo => "rename_to",
            KeyEvent::CopyTo => "copy_to",
            KeyEvent::Expire => "expire",
            KeyEvent::Persist => "persist",
            KeyEvent::Expired => "expired",
            KeyEvent::New => "new",
            KeyEvent::Flushed => "flushed",
        }
    }

    /// The key-event channel it is published on: a fixed name, so nothing
    /// is built for it on each change.
    pub fn channel(self) -> &'static [u8] {
        match self {
            KeyEvent::Set => b"__keyevent@0__:set",
            KeyEvent::Del => b"__keyevent@0__:del",
            KeyEvent::IncrBy => b"__keyevent@0__:incrby",
            KeyEvent::IncrByFloat => b"__keyevent@0__:incrbyfloat",
            KeyEvent::Append => b"__keyevent@0__:append",
            KeyEvent::SetRange => b"__keyevent@0__:setrange",
            KeyEvent::SetBit => b"__keyevent@0__:setbit",
            KeyEvent::RenameFrom => b"__keyevent@0__:rename_from",
            KeyEvent::RenameTo => b"__keyevent@0__:rename_to",
            KeyEvent::CopyTo => b"__keyevent@0__:copy_to",
            KeyEvent::Expire => b"__keyevent@0__:expire",
            KeyEvent::Persist => b"__keyevent@0__:persist",
            KeyEvent::Expired => b"__keyevent@0__:expired",
            KeyEvent::New => b"__keyevent@0__:new",
            // Never published (see the variant).
            KeyEvent::Flushed => b"",
        }
    }

    pub fn class(self) -> EventClass {
        match self {
            KeyEvent::Set
            | KeyEvent::IncrBy
            | KeyEvent::IncrByFloat
            | KeyEvent::Append
            | KeyEvent::SetRange
            | KeyEvent::SetBit => EventClass::String,
            KeyEvent::Del
            | KeyEvent::RenameFrom
            | KeyEvent::RenameTo
            | KeyEvent::CopyTo
            | KeyEvent::Expire
            | KeyEvent::Persist => EventClass::Generic,
            KeyEvent::Expired => EventClass::Expired,
            KeyEvent::New => EventClass::New,
            KeyEvent::Flushed => EventClass::Unpublished,
        }
    }

    /// Whether the key's value changed (or it went): what a FIFO
    /// subscriber hears of. A new deadline alone is not.
    pub fn changes_value(self) -> bool {
        !matches!(self, KeyEvent::Expire | KeyEvent::Persist | KeyEvent::New)
    }

    /// Its place in a bit set of events.
    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// The event of a key-event channel's name, if kvs publishes it.
    pub fn of_channel(channel: &[u8]) -> Option<KeyEvent> {
        KeyEvent::ALL.into_iter().find(|e| e.channel() == channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_named_for_their_events() {
        for e in KeyEvent::ALL {
            assert_eq!(
                e.channel(),
                format!("__keyevent@0__:{}", e.name()).as_bytes()
            );
            assert_eq!(KeyEvent::of_channel(e.channel()), Some(e));
        }
        assert_eq!(KeyEvent::of_channel(b"__keyevent@0__:nope"), None);
    }
}
