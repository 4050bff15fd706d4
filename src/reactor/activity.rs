//! How many clients are at work: the distinct sessions that had events in
//! the last whole millisecond. The store pool holds new work back for a
//! job out only when many are (see `StorePool::dispatch`): with many
//! clients the work of several turns then goes as one job; with a few, each
//! waiting on one request, holding one's request for another's job only
//! adds that job's round trip to it. With a few, the reactor and the store
//! threads spin for each other instead.

use super::pubsub::SessionId;
use std::time::{Duration, Instant};

/// Fewer clients at work than this are a few: the reactor watches, busy,
/// for the answers of their operations, and a store thread for their next
/// operations after a short job (see `Reactor::wait` and
/// `StorePool::dispatch`), since their requests come within the spin.
/// With more, the spinning took CPU the reactor or store thread needed.
pub const FEW_CLIENTS: usize = 32;

/// How long a window of counting lasts.
const WINDOW: Duration = Duration::from_millis(1);

pub struct Activity {
    /// The window being counted, and when it began.
    window: u32,
    began: Instant,
    /// Sessions seen in it so far, and in the last whole window.
    now: usize,
    last: usize,
    /// The window each session (by slab index) was last seen in.
    seen: Vec<u32>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            window: 1,
            began: Instant::now(),
            now: 0,
            last: 0,
            seen: Vec::new(),
        }
    }
}

impl Activity {
    /// `sid` had an event.
    pub fn saw(&mut self, sid: SessionId) {
        if sid >= self.seen.len() {
            self.seen.resize(sid + 1, 0);
        }
        if self.seen[sid] != self.window {
            self.seen[sid] = self.window;
            self.now += 1;
        }
    }

    /// Starts a new window if this one is over (once a turn, at `at`).
    pub fn tick(&mut self, at: Instant) {
        let over = at.saturating_duration_since(self.began);
        if over < WINDOW {
            return;
        }
        // A window with no turn in it saw nobody.
        self.last = if over < 2 * WINDOW { self.now } else { 0 };
        self.now = 0;
        self.began = at;
        self.window = self.window.wrapping_add(1);
        if self.window == 0 {
            // Stamps of long ago could match again: forget them.
            self.seen.iter_mut().for_each(|w| *w = 0);
            self.window = 1;
        }
    }

    /// Clients at work: those seen in the last whole window, or in this
    /// one so far if more.
    pub fn clients(&self) -> usize {
        self.last.max(self.now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_session_once_a_window() {
        let mut a = Activity::default();
        let t0 = a.began;
        for _ in 0..3 {
            a.saw(4);
            a.saw(7);
        }
        assert_eq!(a.clients(), 2);
        a.tick(t0 + WINDOW);
        a.saw(4);
        // The last window's two still count until this one has more.
        assert_eq!(a.clients(), 2);
        a.saw(1);
        a.saw(2);
        assert_eq!(a.clients(), 3);
        a.tick(t0 + 2 * WINDOW);
        assert_eq!(a.clients(), 3);
    }

    #[test]
    fn a_quiet_spell_counts_nobody() {
        let mut a = Activity::default();
        let t0 = a.began;
        a.saw(0);
        a.saw(1);
        // The next turn comes long after: the window it ends saw two, but
        // the windows between saw none.
        a.tick(t0 + 5 * WINDOW);
        assert_eq!(a.clients(), 0);
    }
}
