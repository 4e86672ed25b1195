//! Everything openraft-specific lives in this module (type config, log storage, state machine,
//! network), so an openraft upgrade touches only these files. The rest of the crate sees
//! [`RaftNode`]: start, propose, read, watch, shut down — no openraft types.

mod codec;
mod log_store;
mod network;
mod state_machine;
mod types;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use tokio::sync::watch;

use self::log_store::LogStore;
use self::network::SingleNodeNetwork;
use self::state_machine::{Published, StateMachine};
use self::types::{Request, TypeConfig};
use crate::journal::{self, Journal, StartPoint};
use crate::restore::{self, Restored};
use crate::snapshot::{self as snapshot_format, LogPosition, SnapshotStore};
use crate::snapshot::{MembershipRecord, StoredMembershipRecord};
use crate::{Command, CommandResponse, Error, MetadataOptions, MetadataState, NodeId, Result};

/// How long `start` waits for this node to become leader and catch up before giving up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct RaftNode {
    node_id: u64,
    raft: Raft<TypeConfig, StateMachine>,
    wal: wal::Wal,
    snapshots: Arc<SnapshotStore>,
    published: Published,
    applied: watch::Receiver<u64>,
    /// The bucket journal (stateless mode).
    journal: Option<Journal>,
    /// The lock on the metadata directory, held until shutdown.
    dir_lock: std::sync::Mutex<Option<std::fs::File>>,
}

fn raft_config(opts: &MetadataOptions) -> Result<Config> {
    let config = Config {
        cluster_name: "sluice-metadata".to_owned(),
        // One voter: elections only happen at startup, and nobody waits on heartbeats.
        election_timeout_min: 150,
        election_timeout_max: 300,
        heartbeat_interval: 50,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_every.max(1)),
        // Snapshots are the only way to catch up (there are no followers to feed from the log),
        // so everything a snapshot covers can go — except, with the bucket journal, entries not
        // yet stored in the bucket: then openraft never purges by itself, and
        // `purge_what_the_bucket_holds` purges up to the stored index.
        max_in_snapshot_log_to_keep: if opts.journal.is_some() { u64::MAX } else { 0 },
        purge_batch_size: 1,
        ..Default::default()
    };
    config
        .validate()
        .map_err(|e| Error::Raft(format!("invalid raft config: {e}")))
}

impl RaftNode {
    pub(crate) async fn start(opts: &MetadataOptions) -> Result<RaftNode> {
        let node_id = opts.node_id;
        // Lock, then wipe: a second process on the same directory is refused before it touches
        // anything in it (or in the bucket).
        let dir_lock = lock_dir(&opts.dir)?;
        // Stateless mode: the directory is only a cache of the bucket; start from the bucket.
        let restored = match &opts.journal {
            Some(journal_opts) => {
                wipe_dir(&opts.dir)?;
                Some(restore::restore(journal_opts).await?)
            }
            None => None,
        };
        let snapshots = Arc::new(SnapshotStore::open(opts.dir.join("snapshots"), opts.fsync)?);
        let (journal, batches) = match (&opts.journal, restored) {
            (Some(journal_opts), Some(restored)) => {
                let start = match restored {
                    Some(restored) => Some(seed_local_snapshot(&snapshots, node_id, restored)?),
                    None => None,
                };
                let (journal, batches) = Journal::start(journal_opts, start);
                (Some(journal), Some(batches))
            }
            _ => (None, None),
        };
        let (state_machine, published, applied) =
            StateMachine::recover(snapshots.clone(), batches)?;
        let (log_store, wal) = LogStore::open(opts.dir.join("raft-log"), opts.fsync)?;
        let config = Arc::new(raft_config(opts)?);
        let raft =
            match Raft::new(node_id, config, SingleNodeNetwork, log_store, state_machine).await {
                Ok(raft) => raft,
                Err(error) => {
                    if let Some(journal) = &journal {
                        journal.shutdown().await;
                    }
                    return Err(Error::Raft(format!("starting raft: {error}")));
                }
            };
        let node = RaftNode {
            node_id,
            raft,
            wal,
            snapshots,
            published,
            applied,
            journal,
            dir_lock: std::sync::Mutex::new(Some(dir_lock)),
        };
        if let Some(journal) = &node.journal {
            tokio::spawn(purge_what_the_bucket_holds(
                node.raft.clone(),
                journal.status(),
            ));
        }
        let started = async {
            node.become_leader().await?;
            // With the bucket log, a start is complete only once this process's first log object
            // is stored: a process that another one has already fenced fails here, before it
            // acknowledges anything.
            if let Some(journal) = &node.journal {
                node.sync().await?;
                tracing::info!(lineage = %journal.lineage(), "metadata log continues in the bucket under this process's lineage");
            }
            Ok::<(), Error>(())
        };
        if let Err(error) = started.await {
            // Do not leave the raft task and the WAL writer running behind a failed start.
            if let Err(shutdown_error) = node.shutdown().await {
                tracing::warn!(%shutdown_error, "shutting down after a failed start");
            }
            return Err(error);
        }
        Ok(node)
    }

    /// Initializes the single-voter membership on first start, then waits until this node leads
    /// and has applied every entry of its log.
    async fn become_leader(&self) -> Result<()> {
        let node_id = self.node_id;
        let initialized = self.raft.is_initialized().await.map_err(fatal_error)?;
        if !initialized {
            tracing::info!(node_id, "initializing single-voter metadata cluster");
            let members = BTreeMap::from([(node_id, BasicNode::default())]);
            self.raft
                .initialize(members)
                .await
                .map_err(|e| Error::Raft(e.to_string()))?;
        } else {
            let voters: Vec<u64> = self
                .raft
                .with_raft_state(|st| st.membership_state.effective().voter_ids().collect())
                .await
                .map_err(fatal_error)?;
            if !voters.contains(&node_id) {
                return Err(Error::Raft(format!(
                    "this metadata directory belongs to voters {voters:?}, not to node {node_id}"
                )));
            }
        }
        let metrics = self
            .raft
            .wait(Some(STARTUP_TIMEOUT))
            .metrics(
                |m| {
                    m.state == ServerState::Leader
                        && m.current_leader == Some(node_id)
                        && m.last_applied.map(|id| id.index) >= m.last_log_index
                },
                "leader with everything applied",
            )
            .await
            .map_err(|e| Error::Raft(format!("waiting for leadership: {e}")))?;
        tracing::info!(
            node_id,
            term = metrics.current_term,
            last_applied = ?metrics.last_applied,
            "metadata node is leader"
        );
        Ok(())
    }

    pub(crate) async fn propose(&self, command: Command) -> Result<CommandResponse> {
        if let Some(reason) = self.journal.as_ref().and_then(Journal::fenced) {
            // Fenced: nothing more is even applied, let alone acknowledged.
            return Err(Error::Fenced(reason.to_string()));
        }
        match self.raft.client_write(Request(command)).await {
            Ok(response) => {
                if let Some(journal) = &self.journal {
                    // Applied locally; answer only once it is in the bucket too.
                    journal.wait_persisted(response.log_id.index).await?;
                }
                Ok(response.data)
            }
            Err(RaftError::Fatal(fatal)) => Err(fatal_error(fatal)),
            Err(RaftError::APIError(error)) => Err(api_error(error)),
        }
    }

    /// Waits until everything applied so far is in the bucket journal. Without a journal an
    /// applied entry is already durable in the local Raft log.
    pub(crate) async fn sync(&self) -> Result<()> {
        match &self.journal {
            Some(journal) => {
                let applied = *self.applied.borrow();
                journal.wait_persisted(applied).await
            }
            None => Ok(()),
        }
    }

    pub(crate) fn state(&self) -> Arc<MetadataState> {
        state_machine::read_published(&self.published)
    }

    /// The latest applied state, once the entries it includes are in the bucket journal.
    pub(crate) async fn durable_state(&self) -> Result<Arc<MetadataState>> {
        let (index, state) = state_machine::read_published_at(&self.published);
        if let Some(journal) = &self.journal {
            journal.wait_persisted(index).await?;
        }
        Ok(state)
    }

    /// Why the journal was fenced, if it was; for tests.
    #[cfg(test)]
    pub(crate) fn fenced_reason(&self) -> Option<String> {
        self.journal
            .as_ref()
            .and_then(Journal::fenced)
            .map(|reason| reason.to_string())
    }

    /// Resolves when the journal is fenced; never without one.
    pub(crate) async fn wait_fenced(&self) -> String {
        match &self.journal {
            Some(journal) => journal.wait_fenced().await.to_string(),
            None => std::future::pending().await,
        }
    }

    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        let mut receiver = self.applied.clone();
        // A new watcher starts from "now": only later applies wake it.
        receiver.mark_unchanged();
        receiver
    }

    /// `(snapshot index, purged index)` as Raft sees them; for tests of the snapshot/purge path.
    #[cfg(test)]
    pub(crate) fn log_progress(&self) -> (Option<u64>, Option<u64>) {
        use openraft::async_runtime::watch::WatchReceiver;
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        (
            metrics.snapshot.map(|id| id.index),
            metrics.purged.map(|id| id.index),
        )
    }

    /// Waits until `condition(snapshot index, purged index)` holds, re-checked at every change of
    /// Raft's metrics; `Err` naming `what` and the last metrics after `limit` (a hang guard).
    #[cfg(test)]
    pub(crate) async fn wait_log_progress(
        &self,
        limit: std::time::Duration,
        what: &str,
        condition: impl Fn(Option<u64>, Option<u64>) -> bool + Send + Sync,
    ) -> std::result::Result<(), String> {
        self.raft
            .wait(Some(limit))
            .metrics(
                |metrics| {
                    condition(
                        metrics.snapshot.map(|id| id.index),
                        metrics.purged.map(|id| id.index),
                    )
                },
                what,
            )
            .await
            .map(|_| ())
            .map_err(|err| err.to_string())
    }

    /// `(current term, last log index)`; for tests of the restore path.
    #[cfg(test)]
    pub(crate) fn term_and_last_index(&self) -> (u64, Option<u64>) {
        use openraft::async_runtime::watch::WatchReceiver;
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        (metrics.current_term, metrics.last_log_index)
    }

    /// Stops Raft (later proposals fail with [`Error::ShuttingDown`]) and closes the WAL.
    pub(crate) async fn shutdown(&self) -> Result<()> {
        let stopped = self
            .raft
            .shutdown()
            .await
            .map_err(|e| Error::Raft(format!("raft shutdown: {e}")));
        // Nothing is applied any more: upload what is queued (bounded), then stop the journal
        // (also when Raft failed to stop cleanly, so the task does not outlive the node).
        if let Some(journal) = &self.journal {
            journal.shutdown().await;
        }
        stopped?;
        // A snapshot build may still run on its own task; let it finish writing (or refuse it).
        let snapshots = self.snapshots.clone();
        tokio::task::spawn_blocking(move || snapshots.close())
            .await
            .map_err(|e| Error::Storage(format!("closing the snapshot store: {e}")))?;
        let closed = match self.wal.close().await {
            Ok(()) | Err(wal::Error::Closed) => Ok(()),
            Err(error) => Err(error.into()),
        };
        // Nothing writes into the directory any more: let the next process have it.
        drop(
            self.dir_lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        closed
    }
}

/// With the bucket journal: purges the Raft log up to the last index stored in the bucket
/// (openraft purges no further than its snapshot either), never past it. Ends with the journal
/// or with Raft.
async fn purge_what_the_bucket_holds(
    raft: Raft<TypeConfig, StateMachine>,
    mut status: watch::Receiver<journal::JournalStatus>,
) {
    let mut purged_to = 0;
    while status.changed().await.is_ok() {
        let stored_through = status.borrow().persisted_next.saturating_sub(1);
        if stored_through <= purged_to {
            continue;
        }
        if raft.trigger().purge_log(stored_through).await.is_err() {
            return;
        }
        purged_to = stored_through;
    }
}

/// Name of the lock file in the metadata directory (never wiped).
const DIR_LOCK_FILE: &str = "LOCK";

/// Creates `dir` if needed and takes an exclusive lock on `{dir}/LOCK`, held as long as the
/// returned file is. Fails at once, changing nothing, when another process holds it.
fn lock_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(DIR_LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!(
                "metadata directory {} is in use by another process (lock {} is held)",
                dir.display(),
                path.display()
            ),
        ))),
        Err(std::fs::TryLockError::Error(error)) => Err(error.into()),
    }
}

/// Removes everything inside `dir` but its lock file (kept itself: it may be a mount point).
/// Stateless mode only, with the lock held.
fn wipe_dir(dir: &std::path::Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    for entry in entries {
        let path = entry?.path();
        if path.file_name().is_some_and(|name| name == DIR_LOCK_FILE) {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Writes the state restored from the bucket as the local snapshot, at log position
/// `(term 0, this node, index)` with this node as the only voter. openraft then starts from it with
/// an empty log (it purges up to the snapshot, which makes the node initialized), elects itself at
/// term 1 and appends from `index + 1`, so the bucket's log chain continues without a gap.
fn seed_local_snapshot(
    snapshots: &SnapshotStore,
    node_id: NodeId,
    restored: Restored,
) -> Result<StartPoint> {
    let position = LogPosition {
        term: 0,
        node_id,
        index: restored.index,
    };
    let membership = StoredMembershipRecord {
        log_id: Some(position),
        membership: MembershipRecord {
            configs: vec![std::collections::BTreeSet::from([node_id])],
            nodes: BTreeMap::from([(node_id, String::new())]),
        },
    };
    let bytes = snapshot_format::encode(Some(&position), &membership, &restored.state)?;
    snapshots.save(snapshot_format::covered_by(Some(&position)), &bytes)?;
    Ok(StartPoint {
        index: restored.index,
        lineage: restored.lineage,
        state: restored.state,
        position,
        membership,
        snapshot: !restored.snapshot_current,
        restored_from: restored.snapshot_index,
    })
}

fn fatal_error(fatal: Fatal<TypeConfig>) -> Error {
    match fatal {
        Fatal::Stopped => Error::ShuttingDown,
        Fatal::StorageError(error) => Error::Storage(error.to_string()),
        other => Error::Raft(other.to_string()),
    }
}

fn api_error(error: ClientWriteError<TypeConfig>) -> Error {
    Error::Raft(error.to_string())
}
