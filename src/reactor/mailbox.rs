//! The way back into the reactor: store threads, the change hook and the job
//! runner post [`Event`]s on a channel and wake the reactor's `Poll` through
//! a `mio::Waker`. The waker is rung once per batch, not once per event: a
//! flag says a wake-up is already on its way.

use super::command::Reply;
use super::pubsub::SessionId;
use mio::Waker;
use std::sync::atomic::{AtomicBool, Ordering};
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
    wake_pending: AtomicBool,
}

impl Mailbox {
    pub fn new(waker: Waker) -> (Arc<Mailbox>, Receiver<Event>) {
        let (tx, rx) = mpsc::channel();
        let mailbox = Mailbox {
            tx,
            waker,
            wake_pending: AtomicBool::new(false),
        };
        (Arc::new(mailbox), rx)
    }

    /// Posts `event` and makes sure the reactor will look at its inbox.
    pub fn post(&self, event: Event) {
        // Send first, then ring: a reactor that cleared the flag before this
        // swap will see the event when it drains after that.
        if self.tx.send(event).is_ok() && !self.wake_pending.swap(true, Ordering::SeqCst) {
            if let Err(e) = self.waker.wake() {
                crate::log_error!("cannot wake the reactor: {e}");
            }
        }
    }

    /// Spins up to `most` for a post; whether one came. It yields the CPU
    /// between looks: a store thread the scheduler put on the reactor's own
    /// CPU would otherwise wait out the spin before it could post (a pure
    /// spin made a lone client's SETs 0.85-0.88x of no spin at all, in
    /// alternating rounds, BENCHMARKS).
    pub fn wait_briefly(&self, most: std::time::Duration) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < most {
            if self.wake_pending.load(Ordering::Acquire) {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }

    /// Called by the reactor just before it drains the inbox.
    pub fn take_wake(&self) {
        self.wake_pending.store(false, Ordering::SeqCst);
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
