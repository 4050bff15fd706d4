//! kvs: a key-value store with live key subscriptions over POSIX named pipes.
//!
//! - [`store`]: the sharded in-memory table and its snapshots.
//! - [`jobs`]: the `.job` language and the pool of job workers (batch mode).
//! - [`backup`]: forked, atomic backups with a limit on concurrent children.
//! - [`cli`]: command-line parsing shared by the binaries.

pub mod backup;
pub mod cli;
pub mod client;
pub mod jobs;
pub mod reactor;
pub mod store;
