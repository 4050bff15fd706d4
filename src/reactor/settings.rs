//! The server's settings: what a server-mode run was asked for (limits,
//! listeners, the data dir, logging). The command line fills them in
//! (`cli.rs`); the reactor only reads them, so it knows nothing of how
//! they were given.

use crate::logging::Level;
use crate::persist::DataDirOptions;
use std::net::IpAddr;
use std::path::PathBuf;

/// Limits and listeners of server mode; `kvs --help` describes each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub max_sessions: usize,
    pub max_subscriptions: usize,
    pub output_buffer: usize,
    /// Close sessions idle this long (Redis's `timeout`); `None`: never.
    pub timeout: Option<std::time::Duration>,
    pub store_threads: usize,
    /// `--spin`; `None`: the default for the store in use.
    pub spin: Option<std::time::Duration>,
    pub fifo_mode: u32,
    pub resp_socket: Option<PathBuf>,
    pub socket_mode: u32,
    pub resp_port: Option<u16>,
    pub resp_bind: Option<IpAddr>,
    pub requirepass_file: Option<PathBuf>,
    pub data: Option<DataDirOptions>,
    /// `--store etcd://...`: the dataset is shared through etcd.
    pub etcd: Option<crate::etcd::EtcdOptions>,
    pub log_level: Level,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_sessions: 1024,
            max_subscriptions: 1024,
            output_buffer: 1 << 20,
            timeout: None,
            store_threads: 2,
            spin: None,
            fifo_mode: 0o600,
            resp_socket: None,
            socket_mode: 0o600,
            resp_port: None,
            resp_bind: None,
            requirepass_file: None,
            data: None,
            etcd: None,
            log_level: Level::Info,
        }
    }
}
