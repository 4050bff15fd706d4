//! SHUTDOWN: a RESP client stops the server as SIGTERM does (job files
//! already running finish, nothing new starts, every client is let go),
//! so scripts and test rigs that end a Redis with `redis-cli shutdown` end
//! kvs the same way. kvs has no dataset to save on the way out (its data
//! dir, if any, is the log, already written), so NOSAVE and SAVE mean the
//! same; NOW and FORCE are accepted, as nothing waits on replicas.

use crate::protocol::resp;
use crate::reactor::event_loop::Reactor;
use crate::reactor::pubsub::SessionId;

impl Reactor {
    pub(super) fn shutdown_command(&mut self, sid: SessionId, args: &[&[u8]], out: &mut Vec<u8>) {
        let opts: Vec<Vec<u8>> = args[1..].iter().map(|a| a.to_ascii_lowercase()).collect();
        if opts.iter().any(|o| o.as_slice() == b"abort") {
            // Redis's answer when no shutdown waits on replicas to abort.
            return resp::push_error(out, "ERR No shutdown in progress.");
        }
        let known = |o: &Vec<u8>| matches!(o.as_slice(), b"nosave" | b"save" | b"now" | b"force");
        let save_and_nosave =
            opts.iter().any(|o| o == b"save") && opts.iter().any(|o| o == b"nosave");
        if !opts.iter().all(known) || save_and_nosave {
            return resp::push_error(out, "ERR syntax error");
        }
        let id = self.sessions.get(sid).map_or(0, |s| s.generation + 1);
        crate::log_info!("SHUTDOWN from RESP client id={id}: stopping as on SIGTERM");
        // As Redis: no reply; the connection closes with the server.
        if let Some(st) = self.resp_state(sid) {
            st.quitting = true;
        }
        self.begin_shutdown();
    }
}
