//! The narrow interface storage, the broker and ingest need from metadata, and an in-memory
//! implementation of it.
//!
//! [`MetadataClient`](crate::MetadataClient) is a cheap handle over a [`MetadataBackend`]: the
//! Raft node (with or without the bucket log) in a running broker, or [`MemoryMetadata`] in tests
//! that run several brokers' storage against one index in one process, under paused time. The
//! in-memory backend applies commands with the same `apply` as Raft, so a command rejected there
//! is rejected here; what it drops is replication and the disk, and what it adds is control over
//! durability and fencing, the two things a simulation has to steer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::{apply, Command, CommandResponse, Error, MetadataState, Result};

/// What a metadata implementation offers. Object-safe (boxed futures) so a client can hold any.
pub trait MetadataBackend: Send + Sync + 'static {
    /// Applies `cmd` and answers once it is durable.
    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<CommandResponse>>;
    /// Waits until everything applied so far is durable.
    fn sync(&self) -> BoxFuture<'_, Result<()>>;
    /// The latest applied state (possibly not yet durable).
    fn state(&self) -> Arc<MetadataState>;
    /// The latest applied state, once everything in it is durable.
    fn durable_state(&self) -> BoxFuture<'_, Result<Arc<MetadataState>>>;
    /// Resolves with the reason once this writer is fenced; never otherwise.
    fn wait_fenced(&self) -> BoxFuture<'_, String>;
    /// Changes whenever an entry is applied (value = applied index).
    fn watch(&self) -> watch::Receiver<u64>;
}

struct Inner {
    state: Arc<MetadataState>,
    applied: u64,
    /// Everything at or below this index is durable.
    durable: u64,
    /// While set, `durable` does not advance (a bucket log whose PUTs are held).
    hold_durability: bool,
}

/// Metadata in memory: one state, applied in order, shared by every clone of its client.
///
/// Durability can be held ([`MemoryMetadata::hold_durability`]): proposals are applied but not
/// answered, and `durable_state` keeps waiting, until it is released — or until `persist_timeout`
/// passes, when they fail with [`Error::NotPersisted`] as they do with a slow bucket. A backend can
/// be fenced ([`MemoryMetadata::fence`]): every later proposal fails with [`Error::Fenced`].
pub struct MemoryMetadata {
    inner: Mutex<Inner>,
    /// Serialises proposals: one apply at a time, in arrival order.
    propose_lock: tokio::sync::Mutex<()>,
    applied_tx: watch::Sender<u64>,
    durable_tx: watch::Sender<u64>,
    fenced_tx: watch::Sender<Option<String>>,
    persist_timeout: Duration,
}

impl MemoryMetadata {
    /// An empty cluster named `cluster_id`.
    pub fn new(cluster_id: &str, persist_timeout: Duration) -> MemoryMetadata {
        let state = MetadataState {
            cluster_id: cluster_id.to_owned(),
            ..MetadataState::default()
        };
        MemoryMetadata {
            inner: Mutex::new(Inner {
                state: Arc::new(state),
                applied: 0,
                durable: 0,
                hold_durability: false,
            }),
            propose_lock: tokio::sync::Mutex::new(()),
            applied_tx: watch::Sender::new(0),
            durable_tx: watch::Sender::new(0),
            fenced_tx: watch::Sender::new(None),
            persist_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves a consistent state (it is replaced whole).
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops (`true`) or resumes (`false`) durability. Resuming makes everything applied durable.
    pub fn hold_durability(&self, hold: bool) {
        let durable = {
            let mut inner = self.lock();
            inner.hold_durability = hold;
            if !hold {
                inner.durable = inner.applied;
            }
            inner.durable
        };
        self.durable_tx.send_replace(durable);
    }

    /// Fences this backend: nothing more is applied or acknowledged.
    pub fn fence(&self, reason: &str) {
        self.fenced_tx.send_replace(Some(reason.to_owned()));
    }

    /// `(applied, durable)` indexes.
    pub fn progress(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.applied, inner.durable)
    }

    fn fenced(&self) -> Option<String> {
        self.fenced_tx.borrow().clone()
    }

    async fn wait_durable(&self, index: u64) -> Result<()> {
        let mut durable = self.durable_tx.subscribe();
        let mut fenced = self.fenced_tx.subscribe();
        let wait = async {
            loop {
                if let Some(reason) = fenced.borrow_and_update().clone() {
                    return Err(Error::Fenced(reason));
                }
                if *durable.borrow_and_update() >= index {
                    return Ok(());
                }
                tokio::select! {
                    changed = durable.changed() => changed.map_err(|_| Error::ShuttingDown)?,
                    changed = fenced.changed() => changed.map_err(|_| Error::ShuttingDown)?,
                }
            }
        };
        match tokio::time::timeout(self.persist_timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(Error::NotPersisted),
        }
    }

    async fn propose_inner(&self, cmd: Command) -> Result<CommandResponse> {
        let (index, response) = {
            let _order = self.propose_lock.lock().await;
            if let Some(reason) = self.fenced() {
                return Err(Error::Fenced(reason));
            }
            let mut inner = self.lock();
            let mut next = MetadataState::clone(&inner.state);
            let response = apply::apply_command(&mut next, &cmd);
            inner.state = Arc::new(next);
            inner.applied += 1;
            if !inner.hold_durability {
                inner.durable = inner.applied;
            }
            let (applied, durable) = (inner.applied, inner.durable);
            drop(inner);
            self.applied_tx.send_replace(applied);
            self.durable_tx.send_replace(durable);
            (applied, response)
        };
        self.wait_durable(index).await?;
        Ok(response)
    }
}

impl MetadataBackend for MemoryMetadata {
    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<CommandResponse>> {
        Box::pin(self.propose_inner(cmd))
    }

    fn sync(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let applied = self.lock().applied;
            self.wait_durable(applied).await
        })
    }

    fn state(&self) -> Arc<MetadataState> {
        self.lock().state.clone()
    }

    fn durable_state(&self) -> BoxFuture<'_, Result<Arc<MetadataState>>> {
        Box::pin(async move {
            let (applied, state) = {
                let inner = self.lock();
                (inner.applied, inner.state.clone())
            };
            self.wait_durable(applied).await?;
            Ok(state)
        })
    }

    fn wait_fenced(&self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            let mut fenced = self.fenced_tx.subscribe();
            loop {
                if let Some(reason) = fenced.borrow_and_update().clone() {
                    return reason;
                }
                if fenced.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        })
    }

    fn watch(&self) -> watch::Receiver<u64> {
        let mut receiver = self.applied_tx.subscribe();
        receiver.mark_unchanged();
        receiver
    }
}

impl MetadataBackend for crate::raft::RaftNode {
    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<CommandResponse>> {
        Box::pin(crate::raft::RaftNode::propose(self, cmd))
    }

    fn sync(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(crate::raft::RaftNode::sync(self))
    }

    fn state(&self) -> Arc<MetadataState> {
        crate::raft::RaftNode::state(self)
    }

    fn durable_state(&self) -> BoxFuture<'_, Result<Arc<MetadataState>>> {
        Box::pin(crate::raft::RaftNode::durable_state(self))
    }

    fn wait_fenced(&self) -> BoxFuture<'_, String> {
        Box::pin(crate::raft::RaftNode::wait_fenced(self))
    }

    fn watch(&self) -> watch::Receiver<u64> {
        crate::raft::RaftNode::watch(self)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;
    use crate::{MetadataClient, Rejection};

    fn create(name: &str) -> Command {
        Command::CreateTopic {
            name: name.to_owned(),
            topic_id: Uuid::new_v4(),
            partitions: 1,
            configs: BTreeMap::new(),
            owner: 1,
            now_ms: 0,
        }
    }

    fn client(timeout: Duration) -> (Arc<MemoryMetadata>, MetadataClient) {
        let memory = Arc::new(MemoryMetadata::new("c", timeout));
        (memory.clone(), MetadataClient::new(memory))
    }

    #[tokio::test]
    async fn applies_with_the_state_machine_rules() {
        let (memory, client) = client(Duration::from_secs(5));
        let mut watch = client.watch();
        assert_eq!(
            client.propose(create("t")).await.unwrap(),
            CommandResponse::Ok
        );
        assert_eq!(
            client.propose(create("t")).await.unwrap(),
            CommandResponse::Rejected(Rejection::TopicExists)
        );
        assert!(watch.has_changed().unwrap());
        assert_eq!(*watch.borrow_and_update(), 2);
        assert!(client.state().topic_by_name("t").is_some());
        assert_eq!(client.state().cluster_id, "c");
        assert_eq!(memory.progress(), (2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn held_durability_delays_answers_then_times_out() {
        let (memory, client) = client(Duration::from_secs(30));
        memory.hold_durability(true);
        let pending = tokio::spawn({
            let client = client.clone();
            async move { client.propose(create("a")).await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!pending.is_finished(), "answered before it was durable");
        // Applied, visible in `state`, but `durable_state` waits too.
        assert!(client.state().topic_by_name("a").is_some());
        let durable = tokio::spawn({
            let client = client.clone();
            async move { client.durable_state().await.map(|s| s.topics.len()) }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!durable.is_finished());
        memory.hold_durability(false);
        assert_eq!(pending.await.unwrap().unwrap(), CommandResponse::Ok);
        assert_eq!(durable.await.unwrap().unwrap(), 1);

        memory.hold_durability(true);
        let started = tokio::time::Instant::now();
        let late = client.propose(create("b")).await;
        assert!(matches!(late, Err(Error::NotPersisted)), "{late:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert!(matches!(client.sync().await, Err(Error::NotPersisted)));
        assert_eq!(memory.progress(), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn fenced_answers_nothing_more() {
        let (memory, client) = client(Duration::from_secs(30));
        memory.hold_durability(true);
        let pending = tokio::spawn({
            let client = client.clone();
            async move { client.propose(create("a")).await }
        });
        let fenced = tokio::spawn({
            let client = client.clone();
            async move { client.fenced().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        memory.fence("another writer");
        let pending = pending.await.unwrap();
        assert!(matches!(pending, Err(Error::Fenced(_))), "{pending:?}");
        assert_eq!(fenced.await.unwrap(), "another writer");
        let next = client.propose(create("b")).await;
        assert!(matches!(next, Err(Error::Fenced(_))), "{next:?}");
        assert!(
            client.state().topic_by_name("b").is_none(),
            "applied after fencing"
        );
        assert!(matches!(
            client.durable_state().await,
            Err(Error::Fenced(_))
        ));
    }
}
