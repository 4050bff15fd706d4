//! Store work asked for by clients runs on a fixed thread pool, never on
//! the reactor thread, which must not wait on a shard lock. Each result goes
//! back to the reactor through the [`Mailbox`].

use super::mailbox::{Event, Mailbox, OpResult};
use super::subscriptions::SessionId;
use crate::store::Store;
use std::sync::Arc;
use threadpool::ThreadPool;

/// A store operation on behalf of a session.
#[derive(Debug)]
pub enum StoreOp {
    Subscribe(String),
    Read(String),
    Write(String, String),
    Delete(String),
}

pub struct StorePool {
    pool: ThreadPool,
    store: Arc<Store>,
    mailbox: Arc<Mailbox>,
}

impl StorePool {
    pub fn new(threads: usize, store: Arc<Store>, mailbox: Arc<Mailbox>) -> Self {
        StorePool {
            pool: ThreadPool::with_name("kvs-store".into(), threads.max(1)),
            store,
            mailbox,
        }
    }

    /// Runs `op` on the pool; its [`Event::Done`] names `sid` and `generation`.
    pub fn submit(&self, sid: SessionId, generation: u64, op: StoreOp) {
        let (store, mailbox) = (self.store.clone(), self.mailbox.clone());
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
                StoreOp::Read(key) => OpResult::Read(store.get(&key)),
                StoreOp::Write(key, value) => {
                    store.write(&[(key, value)]);
                    OpResult::Write
                }
                StoreOp::Delete(key) => {
                    OpResult::Delete(store.delete(&[key]).first().copied().unwrap_or(false))
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

    /// The store the pool works on, for the reactor's lock-free fast path.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Waits for every submitted operation to finish.
    pub fn join(&self) {
        self.pool.join();
    }
}
