//! Server mode: the job workers of batch mode plus a long-running server
//! that clients reach through named pipes (SPEC section 3) and, if asked,
//! through RESP on a Unix socket and TCP.
//!
//! - [`crate::protocol`] holds the wire formats, shared with the client.
//! - [`registration`]: framing of the shared registration FIFO.
//! - [`fifo`]: opening FIFOs named by untrusted peers, safely.
//! - [`session`]: one client, whatever its transport.
//! - [`command`]: what a command does to the store, whatever its protocol.
//! - [`pubsub`]: channels, patterns and the filter of wanted changes;
//!   [`notify_flags`]: `notify-keyspace-events`.
//! - [`store_ops`] and [`mailbox`]: store work off the reactor thread, and
//!   the way its results and change events come back.
//! - [`event_loop`]: the reactor itself.

pub mod activity;
pub mod command;
pub mod event_loop;
pub mod expire;
pub mod fifo;
pub mod inbuf;
pub mod linger;
pub mod mailbox;
pub mod notify_flags;
pub mod payoff;
pub mod pubsub;
pub mod registration;
pub mod session;
pub mod settings;
pub mod store_ops;
pub mod strings;

use crate::backup::Backups;
use crate::jobs::run_folder_until;
use crate::persist;
use crate::store::{Change, ChangeHook, Store};
use event_loop::{Reactor, ReactorParts, StreamListeners, WAKER};
use mailbox::{Changed, Event, Mailbox};
use pubsub::ChangeFilter;
use settings::Settings;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use store_ops::StorePool;

/// Why the server could not start or stopped abnormally.
#[derive(Debug)]
pub enum ServerError {
    JobsFolder(PathBuf, io::Error),
    Registration(PathBuf, fifo::RegistrationError),
    Listen(event_loop::streams::ListenError),
    Data(persist::PersistError),
    Password(PathBuf, String),
    /// `--store etcd`: the cluster cannot be used (with the reason).
    Etcd(String),
    Io(&'static str, io::Error),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::JobsFolder(p, e) => {
                write!(f, "cannot read jobs folder {}: {e}", p.display())
            }
            ServerError::Registration(p, e) => write!(f, "registration FIFO {}: {e}", p.display()),
            ServerError::Listen(e) => write!(f, "RESP listener: {e}"),
            ServerError::Data(e) => write!(f, "{e}"),
            ServerError::Password(p, why) => write!(f, "password file {}: {why}", p.display()),
            ServerError::Etcd(why) => write!(f, "--store etcd: {why}"),
            ServerError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// What server mode is asked to do.
pub struct ServerConfig<'a> {
    pub jobs_dir: &'a Path,
    pub max_threads: usize,
    pub max_backups: usize,
    pub registration_fifo: &'a Path,
    pub options: Settings,
}

/// Runs server mode until SIGINT or SIGTERM; returns once the job files
/// have finished, every backup child is reaped and every session closed.
pub fn run_server(cfg: ServerConfig<'_>) -> Result<(), ServerError> {
    // Fail at once, not from a worker thread later.
    std::fs::read_dir(cfg.jobs_dir)
        .map_err(|e| ServerError::JobsFolder(cfg.jobs_dir.to_path_buf(), e))?;

    raise_fd_limit();
    // A write to a client whose read end is gone must fail with EPIPE and
    // end that session, not kill the server. Rust binaries ignore SIGPIPE
    // already; a handler (installed safely by signal-hook) makes sure of it
    // when the server runs inside another program too.
    signal_hook::flag::register(
        signal_hook::consts::SIGPIPE,
        Arc::new(AtomicBool::new(false)),
    )
    .map_err(|e| ServerError::Io("cannot handle SIGPIPE", e))?;
    let poll = mio::Poll::new().map_err(|e| ServerError::Io("cannot create the poller", e))?;
    let waker = mio::Waker::new(poll.registry(), WAKER)
        .map_err(|e| ServerError::Io("cannot create the waker", e))?;
    let (mailbox, inbox) = Mailbox::new(waker);

    // Clients are taken only once the data is loaded.
    let store = Arc::new(Store::new());
    let data_dir = match &cfg.options.data {
        Some(d) => Some(persist::DataDir::open(d, &store).map_err(ServerError::Data)?),
        None => None,
    };
    let password = match &cfg.options.requirepass_file {
        Some(p) => Some(read_password(p)?),
        None => None,
    };
    let streams = bind_streams(&cfg.options)?;

    let filter = Arc::new(ChangeFilter::default());
    if let Some(d) = &data_dir {
        let mailbox = mailbox.clone();
        d.log
            .on_synced(Box::new(move |upto| mailbox.post(Event::Durable(upto))));
    }
    let hook = change_hook(mailbox.clone(), filter.clone());
    // A fresh store has no hook yet.
    let _ = store.set_change_hook(hook);
    // With --store etcd: the dataset loaded, and its feed running, before
    // any client comes (the feed's changes reach subscribers through the
    // hook, as every change does).
    let mirror = match &cfg.options.etcd {
        Some(e) => Some(e.attach(&store).map_err(ServerError::Etcd)?),
        None => None,
    };

    let pool = StorePool::new(
        cfg.options.store_threads,
        store.clone(),
        filter,
        mailbox.clone(),
        data_dir.as_ref().map(|d| d.log.clone()),
    );
    let stop_jobs = Arc::new(AtomicBool::new(false));
    let mut reactor = Reactor::new(ReactorParts {
        stop_jobs: stop_jobs.clone(),
        poll,
        registration_path: cfg.registration_fifo.to_path_buf(),
        inbox,
        mailbox: mailbox.clone(),
        pool,
        opts: cfg.options.clone(),
        password,
        mirror: mirror.clone(),
    })
    .map_err(|e| ServerError::Io("cannot start the reactor", e))?;
    let mut listening = streams.describe();
    reactor
        .listen_streams(streams)
        .map_err(|e| ServerError::Io("cannot watch the RESP listeners", e))?;
    if !listening.is_empty() {
        listening.insert(0, String::new());
    }

    // Last: once the FIFO exists, clients may come, and everything they
    // need is in place.
    let registration = fifo::create_registration(cfg.registration_fifo, cfg.options.fifo_mode)
        .map_err(|e| ServerError::Registration(cfg.registration_fifo.to_path_buf(), e))?;
    if let Err(e) = reactor.listen(registration) {
        let _ = std::fs::remove_file(cfg.registration_fifo);
        return Err(ServerError::Io("cannot watch the registration FIFO", e));
    }

    let o = &cfg.options;
    crate::log_info!(
        "kvs {} serving {} (registration FIFO){}; limits: {} sessions, {} subscriptions per session, {} bytes of output per client, idle timeout {}, {} store threads, {} job workers, {} backups at once; data: {}",
        env!("CARGO_PKG_VERSION"),
        cfg.registration_fifo.display(),
        listening.join(", RESP on "),
        o.max_sessions,
        o.max_subscriptions,
        o.output_buffer,
        o.timeout
            .map_or_else(|| "none".to_string(), |t| format!("{} s", t.as_secs())),
        o.store_threads,
        cfg.max_threads,
        cfg.max_backups,
        match (&o.data, &mirror) {
            (Some(d), _) => format!("{} (--fsync {})", d.dir.display(), d.fsync.name()),
            (None, Some(m)) => format!(
                "etcd at {} (prefix {}), revision {}",
                m.endpoints().join(","),
                String::from_utf8_lossy(o.etcd.as_ref().map_or(&[][..], |e| &e.prefix[..])),
                m.revision()
            ),
            (None, None) => "in memory only".into(),
        }
    );
    let expiry = crate::store::expiry::ExpiryCycle::start(store.clone())
        .map_err(|e| ServerError::Io("cannot start the expire cycle", e))?;
    let backups = Backups::new(cfg.max_backups);
    let jobs = {
        let stop_jobs = stop_jobs.clone();
        let (dir, store, backups, mailbox) = (
            cfg.jobs_dir.to_path_buf(),
            store.clone(),
            backups.clone(),
            mailbox.clone(),
        );
        let workers = cfg.max_threads;
        std::thread::Builder::new()
            .name("kvs-jobs".into())
            .spawn(move || {
                let progress = crate::jobs::progress::Progress::hidden();
                let skipped =
                    match run_folder_until(&dir, &store, &backups, workers, stop_jobs, &progress) {
                        Ok(r) => r.skipped,
                        Err(e) => {
                            crate::log_error!("cannot read jobs folder {}: {e}", dir.display());
                            0
                        }
                    };
                mailbox.post(Event::JobsDone);
                skipped
            })
            .map_err(|e| ServerError::Io("cannot start the job workers", e))?
    };

    let result = reactor.run();
    drop(reactor);
    let skipped = jobs.join().unwrap_or(0);
    backups.wait_all();
    drop(expiry);
    if let Some(d) = data_dir {
        // Everything logged is written and synced before exit.
        d.close();
    }
    if let Some(m) = mirror {
        m.stop();
    }
    let closed = result.map_err(|e| ServerError::Io("reactor failed", e))?;
    crate::log_info!("stopped: closed {closed} sessions; {skipped} job files were not started");
    Ok(())
}

/// The server's store hook. The store calls it only for keys some session
/// watches (see [`Store::watch`]), or for every key while a pattern or
/// key-event subscription exists; then `filter` keeps what nobody wants off
/// the reactor, so a change no one listens to costs no allocation and no
/// wake-up.
pub fn change_hook(mailbox: Arc<Mailbox>, filter: Arc<ChangeFilter>) -> ChangeHook {
    Box::new(move |changes| {
        let wanted = |c: &&Change<'_>| c.watched || filter.wants(c.key, c.event);
        // Most writes change one key: turn it down before anything else.
        if let [one] = changes {
            if !wanted(&one) {
                return;
            }
        }
        let owned: Vec<_> = changes
            .iter()
            .filter(wanted)
            .map(|c| Changed {
                key: c.key.to_vec(),
                value: c.value.map(<[u8]>::to_vec),
                event: c.event,
                origin: store_ops::origin(),
            })
            .collect();
        if !owned.is_empty() {
            mailbox.post(Event::Changes(owned));
        }
    })
}

/// Binds the RESP listeners the options ask for.
fn bind_streams(o: &Settings) -> Result<StreamListeners, ServerError> {
    let mut l = StreamListeners::default();
    if let Some(path) = &o.resp_socket {
        l.bind_unix(path, o.socket_mode)
            .map_err(ServerError::Listen)?;
    }
    if let Some(port) = o.resp_port {
        let ip = o.resp_bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        // On failure `l` is dropped, which removes a socket bound above.
        l.bind_tcp(SocketAddr::new(ip, port))
            .map_err(ServerError::Listen)?;
    }
    Ok(l)
}

/// The password: the file's first line. Empty or unreadable is an error,
/// not a server without a password.
fn read_password(path: &Path) -> Result<Vec<u8>, ServerError> {
    let bad = |why: String| ServerError::Password(path.to_path_buf(), why);
    // A FIFO or a link to a device must not hang or flood the start.
    let text = crate::safe_file::read_regular(path).map_err(|e| bad(e.to_string()))?;
    if crate::safe_file::readable_by_others(path) {
        crate::log_warn!(
            "the password file {} can be read by other users (chmod 600 it)",
            path.display()
        );
    }
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(bad("the first line is empty".into()));
    }
    Ok(line.to_vec())
}

/// Each session holds three descriptors, so the default soft limit (often
/// 1,024) would cap the server near 340 clients: raise it to the hard
/// limit. If that fails the server still runs, and a connect that finds no
/// descriptor left is refused cleanly.
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
