//! Checkpoint writes go through one writer thread: they leave the actor's
//! thread (a sled flush is an fsync) and land in the order they were
//! issued, so a later state never loses to an earlier one.

use berth_state::{ContainerId, ContainerRecord, Store};
use futures::channel::oneshot;
use std::sync::mpsc;
use std::sync::Arc;

enum Op {
    Put(Box<ContainerRecord>),
    Delete(ContainerId),
}

type Reply = oneshot::Sender<Result<(), String>>;

/// A handle to the writer thread.
#[derive(Clone)]
pub(crate) struct Checkpointer {
    tx: mpsc::Sender<(Op, Reply)>,
    store: Arc<Store>,
}

impl Checkpointer {
    pub fn start(store: Store) -> std::io::Result<Self> {
        let store = Arc::new(store);
        let (tx, rx) = mpsc::channel::<(Op, Reply)>();
        let s = store.clone();
        std::thread::Builder::new()
            .name("berth-checkpoint".into())
            .spawn(move || {
                for (op, reply) in rx {
                    let r = match op {
                        Op::Put(rec) => s.put(&rec).inspect(|_| {
                            // Here, in the writer: nothing queued after this
                            // record is written, even when the actor went on
                            // without waiting for it (ISOLATING, FETCHING).
                            crate::failpoint::hit(&format!(
                                "after-checkpoint:{}",
                                crate::error::state_name(rec.state)
                            ))
                        }),
                        Op::Delete(id) => s.delete(&id),
                    };
                    let _ = reply.send(r.map_err(|e| e.to_string()));
                }
            })?;
        Ok(Checkpointer { tx, store })
    }

    fn send(&self, op: Op) -> impl std::future::Future<Output = Result<(), String>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send((op, reply));
        async move {
            sent.map_err(|_| "checkpoint writer stopped".to_string())?;
            rx.await
                .map_err(|_| "checkpoint writer stopped".to_string())?
        }
    }

    /// Writes `record`; resolves once it is durable.
    pub fn put(
        &self,
        record: ContainerRecord,
    ) -> impl std::future::Future<Output = Result<(), String>> {
        self.send(Op::Put(Box::new(record)))
    }

    /// Deletes the record of `id`; resolves once that is durable.
    pub fn delete(&self, id: ContainerId) -> impl std::future::Future<Output = Result<(), String>> {
        self.send(Op::Delete(id))
    }

    /// The store, for reads at recovery.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}
