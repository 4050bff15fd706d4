//! Store work asked for by clients runs on a fixed thread pool, never on
//! the reactor thread, which must not wait on a shard lock. Each result goes
//! back to the reactor through the [`Mailbox`]. A session's pipelined
//! commands travel as one batch: one hand-off each way, however many.

use super::command::{execute, Command, Reply};
use super::mailbox::{Event, Mailbox, OpResult};
use super::pubsub::{ChangeFilter, FilterList, SessionId};
use crate::store::Store;
use std::sync::Arc;
use threadpool::ThreadPool;

/// One entry of a batch: a command to run, or the reply a command that
/// needed no store already has (an error, say), kept in its place so
/// replies leave in request order.
pub type BatchItem = Result<Command, Reply>;

/// A store operation on behalf of a session.
#[derive(Debug)]
pub enum StoreOp {
    /// A FIFO SUBSCRIBE: watch the key if it exists (SPEC section 3).
    Subscribe(String),
    /// Commands, run in order.
    Batch(Vec<BatchItem>),
    /// Start watching keys (RESP keyspace channels) and install a new
    /// filter for patterns and key-event channels, before the reply.
    Watch {
        keys: Vec<String>,
        filter: Option<(u64, FilterList)>,
    },
}

pub struct StorePool {
    pool: ThreadPool,
    store: Arc<Store>,
    filter: Arc<ChangeFilter>,
    mailbox: Arc<Mailbox>,
}

impl StorePool {
    pub fn new(
        threads: usize,
        store: Arc<Store>,
        filter: Arc<ChangeFilter>,
        mailbox: Arc<Mailbox>,
    ) -> Self {
        StorePool {
            pool: ThreadPool::with_name("kvs-store".into(), threads.max(1)),
            store,
            filter,
            mailbox,
        }
    }

    /// Runs `op` on the pool; its [`Event::Done`] names `sid` and `generation`.
    pub fn submit(&self, sid: SessionId, generation: u64, op: StoreOp) {
        let (store, filter, mailbox) = (
            self.store.clone(),
            self.filter.clone(),
            self.mailbox.clone(),
        );
        self.pool.execute(move || {
            let done = |result| Event::Done {
                sid,
                generation,
                result,
            };
            let result = match op {
                StoreOp::Subscribe(key) => {
                    // Posted under the shard lock: every change to the key
                    // is posted either before this answer or after it, so
                    // the reactor starts forwarding at exactly the right one.
                    return store.watch(&key, |exists| {
                        mailbox.post(done(OpResult::Subscribe {
                            key: key.clone(),
                            exists,
                        }))
                    });
                }
                StoreOp::Batch(items) => OpResult::Replies(
                    items
                        .into_iter()
                        .map(|item| match item {
                            Ok(cmd) => execute(&store, cmd),
                            Err(reply) => reply,
                        })
                        .collect(),
                ),
                StoreOp::Watch { keys, filter: list } => {
                    for k in &keys {
                        store.watch_key(k);
                    }
                    if let Some((generation, list)) = list {
                        filter.install(generation, list, &store);
                    }
                    OpResult::Watched(keys)
                }
            };
            mailbox.post(done(result));
        });
    }

    /// Drops one watcher of each key (see [`Store::watch`]), on the pool:
    /// it takes shard locks, which the reactor never does.
    pub fn unwatch(&self, keys: Vec<String>) {
        let store = self.store.clone();
        self.pool.execute(move || store.unwatch(&keys));
    }

    /// Installs a filter nobody waits for (after unsubscribing).
    pub fn install_filter(&self, generation: u64, list: FilterList) {
        let (store, filter) = (self.store.clone(), self.filter.clone());
        self.pool
            .execute(move || filter.install(generation, list, &store));
    }

    /// The store the pool works on, for the reactor's lock-free fast path.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Waits for every submitted operation to finish.
    pub fn join(&self) {
        self.pool.join();
    }
}
