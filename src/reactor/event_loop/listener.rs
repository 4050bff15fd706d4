//! The registration side of the reactor: reading connect requests off the
//! registration FIFO through the [`Framer`](crate::reactor::registration::Framer),
//! and keeping that FIFO at its path: created again when someone removes
//! it, left alone (and no longer used) when someone replaces it.

use super::{Reactor, REGISTRATION};
use crate::reactor::fifo::{create_registration, identity, FifoId, RegistrationFifo};
use crate::reactor::registration::Dropped;
use mio::unix::pipe::Receiver;
use mio::{Interest, Poll};
use std::io::{self, Read};
use std::time::{Duration, Instant};

/// How often the registration path is checked (see `check_registration`).
/// Most reads of the registration FIFO in one turn of the loop (64 KiB).
const READS_PER_TURN: usize = 16;

pub(super) const REGISTRATION_CHECK: Duration = Duration::from_secs(1);

/// The registration FIFO as a source of the poller.
pub(super) struct Listener {
    pub(super) reader: Receiver,
    pub(super) fifo: RegistrationFifo,
}

impl Listener {
    pub(super) fn new(poll: &Poll, fifo: RegistrationFifo) -> io::Result<Listener> {
        let mut reader = Receiver::from(fifo.reader.try_clone()?);
        poll.registry()
            .register(&mut reader, REGISTRATION, Interest::READABLE)?;
        Ok(Listener { reader, fifo })
    }
}

impl Reactor {
    /// Reads connect requests, at most [`READS_PER_TURN`] chunks, so that
    /// a process flooding the registration FIFO cannot keep the reactor from
    /// its sessions. Returns whether the FIFO may hold more.
    pub(super) fn read_registrations(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        for _ in 0..READS_PER_TURN {
            let Some(listener) = self.listener.as_mut() else {
                return false;
            };
            let n = match listener.reader.read(&mut chunk) {
                Ok(0) => return false, // cannot happen while we hold a write end
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::log_warn!("reading the registration FIFO failed: {e}");
                    return false;
                }
            };
            for msg in self.framer.push(&chunk[..n], Instant::now()) {
                match msg {
                    Ok(c) => self.connect(c),
                    Err(e) => self.log_dropped(e),
                }
            }
        }
        true
    }

    /// Logs a dropped connect request, at most once a second (with the
    /// count since), so a flood of garbage cannot flood the log too.
    fn log_dropped(&mut self, e: Dropped) {
        if let Some(n) = self.drop_log.admit() {
            crate::log_warn!(
                "dropped a bad connect request: {e}{}",
                crate::logging::held_back_note(n)
            );
        }
    }

    pub(super) fn registration_id(&self) -> Option<FifoId> {
        self.listener.as_ref().map(|l| l.fifo.id)
    }

    /// Stops taking new clients; removes the registration FIFO if asked
    /// and if the path still names it (never a file someone put there).
    pub(super) fn stop_listening(&mut self, unlink: bool) {
        let Some(mut listener) = self.listener.take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut listener.reader);
        let path = &self.registration_path;
        if unlink && identity(path) == Ok(Some(listener.fifo.id)) {
            if let Err(e) = std::fs::remove_file(path) {
                crate::log_warn!("cannot remove {}: {e}", path.display());
            }
        }
    }

    /// The registration FIFO may be removed or replaced while the server
    /// runs. Removed: it is created again, so clients can still connect.
    /// Replaced by anything else: that is left alone, and the server stops
    /// taking new clients but serves the ones it has.
    pub(super) fn check_registration(&mut self) {
        let Some(ours) = self.registration_id() else {
            return;
        };
        let path = self.registration_path.clone();
        match identity(&path) {
            Ok(Some(id)) if id == ours => {}
            Ok(None) => {
                self.stop_listening(false);
                let created = create_registration(&path, self.opts.fifo_mode)
                    .map_err(|e| e.to_string())
                    .and_then(|fifo| Listener::new(&self.poll, fifo).map_err(|e| e.to_string()));
                match created {
                    Ok(listener) => {
                        self.listener = Some(listener);
                        crate::log_warn!("registration FIFO {} was removed; created it again", path.display());
                    }
                    Err(e) => crate::log_warn!(
                        "registration FIFO {} was removed and cannot be created again ({e}); not taking new clients",
                        path.display()
                    ),
                }
            }
            Ok(Some(_)) => {
                self.stop_listening(false);
                crate::log_warn!(
                    "registration FIFO {} was replaced by another file; left alone, not taking new clients",
                    path.display()
                );
            }
            Err(e) => crate::log_warn!(
                "cannot check registration FIFO {}: {}",
                path.display(),
                e.desc()
            ),
        }
    }
}
