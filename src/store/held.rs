//! A transaction's changes, held while it runs and reported to the change
//! hook in one call when it ends, still under its locks. A listener (the
//! server's reactor) then sees one transaction as one batch, as Redis's
//! clients see an EXEC: its keyspace events together and a BCAST tracking
//! client told of all its keys in one message per prefix, never split
//! across the reactor's turns. Held per thread, since a transaction runs
//! on the thread that called [`super::Store::transaction`].

use super::{Change, KeyEvent};
use std::cell::RefCell;

struct HeldChange {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    event: KeyEvent,
    watched: bool,
}

thread_local! {
    static HELD: RefCell<Option<Vec<HeldChange>>> = const { RefCell::new(None) };
}

/// Holding on this thread until dropped or [`Hold::release`]d; dropped
/// without release (a panic in the transaction), what it held is let go.
pub(super) struct Hold(());

impl Hold {
    pub(super) fn start() -> Hold {
        HELD.with(|h| *h.borrow_mut() = Some(Vec::new()));
        Hold(())
    }

    /// Ends the hold and hands what it held to `hook`, in order, at once.
    pub(super) fn release(self, hook: Option<&super::ChangeHook>) {
        let held = HELD.with(|h| h.borrow_mut().take()).unwrap_or_default();
        if let (Some(hook), false) = (hook, held.is_empty()) {
            let changes: Vec<Change<'_>> = held
                .iter()
                .map(|c| Change {
                    key: &c.key,
                    value: c.value.as_deref(),
                    event: c.event,
                    watched: c.watched,
                })
                .collect();
            hook(&changes);
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        HELD.with(|h| h.borrow_mut().take());
    }
}

/// Keeps `change` if a hold is on; gives it back if not.
pub(super) fn keep(change: Change<'_>) -> Option<Change<'_>> {
    HELD.with(|h| match h.borrow_mut().as_mut() {
        Some(held) => {
            held.push(HeldChange {
                key: change.key.to_vec(),
                value: change.value.map(<[u8]>::to_vec),
                event: change.event,
                watched: change.watched,
            });
            None
        }
        None => Some(change),
    })
}
