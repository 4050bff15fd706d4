//! A store thread's short wait for a lone client's next operation. Handing
//! a job to a sleeping pool thread costs a futex wake, the thread's wake-up
//! on another CPU, and its futex sleep after: on this kind of machine that
//! is most of a lone client's round trip beside Redis's single thread. So a
//! store thread that has just answered a lone client (or a few clients,
//! see `StorePool::dispatch`) lingers for up to `--spin` on its [`Lane`],
//! and the reactor hands the next job straight to it there; when nothing
//! comes in time, the thread goes back to its pool's queue as before. The
//! reactor spins for such clients' answers the same way (see the
//! mailbox); this is the other half of the round trip.

use super::payoff::Payoff;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A pool job: whether its thread should linger after it (it answered a
/// lone client, or a short job of a few clients').
pub type Job = Box<dyn FnOnce() -> bool + Send + 'static>;

/// The thread is not lingering: jobs go through the pool's queue.
const AWAY: u8 = 0;
/// The thread is lingering and looks at the state now and then.
const LINGERING: u8 = 1;
/// A job was handed over and is in the slot.
const HANDED: u8 = 2;

/// Where one store thread lingers.
pub struct Lane {
    state: AtomicU8,
    slot: Mutex<Option<Job>>,
    /// Whether lingering has paid lately; only the lane's thread takes it.
    payoff: Mutex<Payoff>,
}

impl Default for Lane {
    fn default() -> Self {
        Lane {
            state: AtomicU8::new(AWAY),
            slot: Mutex::new(None),
            payoff: Mutex::default(),
        }
    }
}

impl Lane {
    /// Hands `job` to the lane's thread if it is lingering; gives it back
    /// otherwise, for the pool's queue.
    pub fn hand(&self, job: Job) -> Result<(), Job> {
        if self.state.load(Ordering::Acquire) != LINGERING {
            return Err(job);
        }
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the slot's lock: the thread takes the job only after it
        // sees HANDED, and then only through this lock, so it finds it.
        match self
            .state
            .compare_exchange(LINGERING, HANDED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                *slot = Some(job);
                Ok(())
            }
            Err(_) => Err(job),
        }
    }

    /// Runs `job` on the calling (pool) thread, and while the job it ran
    /// asks for it, lingers up to `most` for the next one handed over.
    pub fn run(&self, job: Job, most: Duration) {
        let mut job = job;
        while job() && !most.is_zero() && self.payoff().worth() {
            let next = self.next(most);
            self.payoff().paid(next.is_some());
            match next {
                Some(next) => job = next,
                None => return,
            }
        }
    }

    /// Lingers up to `most` for a job; yields the CPU between looks, since
    /// on two cores the client whose request it waits for may need this one.
    fn next(&self, most: Duration) -> Option<Job> {
        self.state.store(LINGERING, Ordering::Release);
        let until = Instant::now() + most;
        loop {
            if self.state.load(Ordering::Acquire) == HANDED {
                return self.take();
            }
            if Instant::now() >= until {
                // A hand-over may have won the race; then it is run.
                return match self.state.compare_exchange(
                    LINGERING,
                    AWAY,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => None,
                    Err(_) => self.take(),
                };
            }
            std::thread::yield_now();
        }
    }

    fn payoff(&self) -> std::sync::MutexGuard<'_, Payoff> {
        self.payoff.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The handed job, the lane away again.
    fn take(&self) -> Option<Job> {
        let job = self
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.state.store(AWAY, Ordering::Release);
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn a_thread_not_lingering_gives_the_job_back() {
        let lane = Lane::default();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let back = lane.hand(Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
            false
        }));
        let Err(job) = back else {
            panic!("nobody lingers: the job must come back")
        };
        lane.run(job, Duration::from_millis(1));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn every_job_handed_runs_once_on_the_lingering_thread() {
        let lane = Arc::new(Lane::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::current().id();
        let counted = |ran: &Arc<AtomicUsize>, linger: bool| -> Job {
            let ran = ran.clone();
            Box::new(move || {
                ran.fetch_add(1, Ordering::SeqCst);
                linger
            })
        };
        let worker = {
            let (lane, first) = (lane.clone(), counted(&ran, true));
            std::thread::spawn(move || {
                lane.run(first, Duration::from_secs(5));
                std::thread::current().id()
            })
        };
        // Jobs handed while the thread lingers run there; one not handed
        // (the thread was busy or gone) comes back and is counted here.
        let mut handed = 0;
        let mut returned = 0;
        for i in 0..200 {
            let last = i == 199;
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut job = counted(&ran, !last);
            loop {
                match lane.hand(job) {
                    Ok(()) => {
                        handed += 1;
                        break;
                    }
                    Err(back) if Instant::now() >= deadline => {
                        back();
                        returned += 1;
                        break;
                    }
                    Err(back) => {
                        job = back;
                        std::thread::yield_now();
                    }
                }
            }
        }
        let worker_id = worker.join().expect("the lingering thread ended");
        assert_ne!(worker_id, thread);
        assert_eq!(handed + returned, 200);
        assert!(handed > 0, "no job was ever handed over");
        assert_eq!(ran.load(Ordering::SeqCst), 201, "a job ran twice or never");
    }

    #[test]
    fn a_thread_stops_lingering_when_nothing_comes() {
        let lane = Lane::default();
        let started = Instant::now();
        lane.run(Box::new(|| true), Duration::from_millis(20));
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert!(lane.hand(Box::new(|| false)).is_err());
    }
}
