//! etcd, the engine under a dataset shared by kvs nodes on many machines
//! (`--store etcd://...`): a client of etcd's v3 API through its JSON
//! gateway, over a small blocking HTTP/1.1 client. Chosen over the
//! `etcd-client` crate (tonic and tokio, whose build needs `protoc`): it
//! builds with the Rust toolchain alone, needs no async runtime beside the
//! mio reactor, and each call is a blocking request on the thread that
//! makes it (a store pool thread or the watch thread).

mod client;
mod http;

pub use client::{
    prefix_end, Compare, Etcd, EtcdError, Event, Kv, Op, OpResult, TxnResult, Watch, WatchMessage,
};
pub use http::HttpError;
