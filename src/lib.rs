//! kvs: a key-value store with live key subscriptions over POSIX named pipes.
//!
//! - [`store`]: the sharded in-memory table and its snapshots.
//! - [`jobs`]: the `.job` language and the pool of job workers (batch mode).
//! - [`backup`]: forked, atomic backups with a limit on concurrent children.
//! - [`persist`]: the data dir: snapshot and append-only log, recovery.
//! - [`protocol`]: wire formats (FIFO and RESP), shared by server and client.
//! - [`reactor`]: server mode: the mio reactor, FIFO sessions, the wire
//!   protocol and subscriptions.
//! - [`client`]: the client side of the wire protocol, used by `kvs-client`.
//! - [`cli`]: command-line parsing of `kvs`.
//! - [`etcd`]: the client of etcd, under a dataset shared by many nodes.
//! - [`safe_file`]: opening files without following links or blocking.
//! - [`glob`]: Redis's glob patterns; [`sysinfo`]: what the process knows of itself.

pub mod backup;
pub mod cli;
pub mod client;
pub mod etcd;
pub mod glob;
pub mod jobs;
pub mod logging;
pub mod persist;
pub mod protocol;
pub mod reactor;
pub mod safe_file;
pub mod store;
pub mod sysinfo;
