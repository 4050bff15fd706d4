//! The way back into the reactor: store threads, the change hook and the job
//! runner post [`Event`]s on a channel and wake the reactor's `Poll` through
//! a `mio::Waker`. The waker is rung once per batch, not once per event: a
//! flag says a wake-up is already on its way, or that the reactor is awake
//! and watching the flag (its spin for a lone client's answer), when a post
//! needs no wake-up at all.

use super::command::Reply;
use super::pubsub::SessionId;
use mio::Waker;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

/// The answer of a store operation done for a session.
#[derive(Debug)]
pub enum OpResult {
    /// Whether the key existed (and so the subscription was taken).
    Subscribe { key: Vec<u8>, exists: bool },
    /// The replies of a batch, in its order, and the log sequence number
    /// that must be synced before they are sent (`--fsync always`).
    Replies {
        replies: Vec<Reply>,
        sync: Option<u64>,
        /// Microseconds each command of the batch ran (INFO commandstats).
        micros: Vec<u32>,
    },
    /// WATCH: each key and its change count now.
    Versions(Vec<(Vec<u8>, u64)>),
    /// A [`super::store_ops::StoreOp::Watch`] is in force; the keys it
    /// watched, to unwatch if the session is gone meanwhile.
    Watched(Vec<Vec<u8>>),
}

#[derive(Debug)]
pub enum Event {
    /// Changes to the store, in the order they were applied.
    Changes(Vec<Changed>),
    /// Store operations finished: each session's answer, with the
    /// session's slab index and generation.
    Done(Vec<(SessionId, u64, OpResult)>),
    /// The job files of the served folder have all run.
    JobsDone,
    /// The log is synced up to this sequence number.
    Durable(u64),
}

pub struct Mailbox {
    tx: Sender<Event>,
    waker: Waker,
    /// [`IDLE`], [`POSTED`] or [`WATCHING`].
    state: AtomicU8,
}

/// Nothing posted since the reactor last drained its inbox; it may be
/// asleep, so the next post rings the waker.
const IDLE: u8 = 0;
/// Posted since: the waker was rung, or the reactor was watching.
const POSTED: u8 = 1;
/// The reactor is awake and looks at the state (see [`Mailbox::watch`]): a
/// post needs no wake-up, which would cost the poster a write and the
/// reactor a turn of its loop for the waker's event.
const WATCHING: u8 = 2;

impl Mailbox {
    pub fn new(waker: Waker) -> (Arc<Mailbox>, Receiver<Event>) {
        let (tx, rx) = mpsc::channel();
        let mailbox = Mailbox {
            tx,
            waker,
            state: AtomicU8::new(IDLE),
        };
        (Arc::new(mailbox), rx)
    }

    /// Posts `event` and makes sure the reactor will look at its inbox.
    pub fn post(&self, event: Event) {
        // Send first, then ring: a reactor that cleared the flag before this
        // swap will see the event when it drains after that.
        if self.tx.send(event).is_ok() && self.state.swap(POSTED, Ordering::SeqCst) == IDLE {
            if let Err(e) = self.waker.wake() {
                crate::log_error!("cannot wake the reactor: {e}");
            }
        }
    }

    /// The reactor is awake and will look at the state (through
    /// [`Mailbox::wait_briefly`]) until [`Mailbox::unwatch`]: posts meanwhile
    /// need not ring.
    pub fn watch(&self) {
        // Already posted: stays so.
        let _ = self
            .state
            .compare_exchange(IDLE, WATCHING, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The reactor may sleep from here on: posts ring again. Whether one
    /// came while it watched.
    pub fn unwatch(&self) -> bool {
        self.state
            .compare_exchange(WATCHING, IDLE, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
    }

    /// Spins up to `most` for a post; whether one came. It yields the CPU
    /// between looks: a store thread the scheduler put on the reactor's own
    /// CPU would otherwise wait out the spin before it could post (a pure
    /// spin made a lone client's SETs 0.85-0.88x of no spin at all, in
    /// alternating rounds, BENCHMARKS).
    pub fn wait_briefly(&self, most: std::time::Duration) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < most {
            if self.state.load(Ordering::Acquire) == POSTED {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }

    /// Called by the reactor just before it drains the inbox.
    pub fn take_wake(&self) {
        self.state.store(IDLE, Ordering::SeqCst);
    }
}

/// A change as the store reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub key: Vec<u8>,
    /// The new value; `None`: the key is gone.
    pub value: Option<Vec<u8>>,
    pub event: crate::store::KeyEvent,
    /// The session whose command made it, if a session's (CLIENT
    /// TRACKING's NOLOOP leaves a client's own changes untold).
    pub origin: Option<crate::reactor::pubsub::SessionId>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Duration;

    /// Whether the waker rang since the last look.
    fn rang(poll: &mut Poll) -> bool {
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        !events.is_empty()
    }

    #[test]
    fn a_post_rings_once_and_not_while_the_reactor_watches() {
        let mut poll = Poll::new().unwrap();
        let waker = Waker::new(poll.registry(), Token(7)).unwrap();
        let (mailbox, rx) = Mailbox::new(waker);

        // Asleep: the first post rings, the next needs not.
        mailbox.post(Event::JobsDone);
        mailbox.post(Event::JobsDone);
        assert!(rang(&mut poll));
        assert!(!rang(&mut poll));
        mailbox.take_wake();
        assert_eq!(rx.try_iter().count(), 2);

        // Watching: a post is seen without a ring, and unwatch says so.
        mailbox.watch();
        assert!(!mailbox.wait_briefly(Duration::from_micros(50)));
        mailbox.post(Event::JobsDone);
        assert!(mailbox.wait_briefly(Duration::from_micros(50)));
        assert!(mailbox.unwatch());
        assert!(!rang(&mut poll));
        mailbox.take_wake();
        assert_eq!(rx.try_iter().count(), 1);

        // A watch that saw nothing: posts ring again after it.
        mailbox.watch();
        assert!(!mailbox.unwatch());
        mailbox.post(Event::JobsDone);
        assert!(rang(&mut poll));

        // Posted before the watch began: the watch sees it at once.
        mailbox.take_wake();
        mailbox.post(Event::JobsDone);
        assert!(rang(&mut poll));
        mailbox.watch();
        assert!(mailbox.wait_briefly(Duration::from_micros(50)));
        assert!(mailbox.unwatch());
    }
}
