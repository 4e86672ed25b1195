//! The openraft state machine: applies committed entries with [`crate::apply::apply_command`],
//! publishes the result for readers, and builds/installs snapshots in our own format.
//!
//! Readers never touch this struct: after each applied batch the new state is published as an
//! `Arc<MetadataState>` (copy-on-write; readers keep whatever version they hold) and the applied
//! index is sent on a `watch` channel. Proposers are answered only *after* publication, so a caller
//! that gets its answer also sees its change in `MetadataClient::state`.

use std::io;
use std::sync::{Arc, PoisonError, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tokio::sync::watch;

use super::codec;
use super::types::{
    LogId, Request, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};
use crate::bucket_format::JournalEntry;
use crate::journal::{JournalBatch, JournalFeed, SnapshotJob};
use crate::snapshot::{self, SnapshotStore};
use crate::{CommandResponse, MetadataState};

/// Where readers find the latest applied state, with the log index it is at.
pub(crate) type Published = Arc<RwLock<(u64, Arc<MetadataState>)>>;

pub(crate) fn read_published(published: &Published) -> Arc<MetadataState> {
    read_published_at(published).1
}

/// The latest applied state and the index of the last entry it includes, read together.
pub(crate) fn read_published_at(published: &Published) -> (u64, Arc<MetadataState>) {
    // Writers only swap an `Arc` under the lock and cannot panic meanwhile; recover from poisoning.
    published
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

fn applied_index(log_id: Option<&LogId>) -> u64 {
    log_id.map(|id| id.index).unwrap_or(0)
}

pub(crate) struct StateMachine {
    state: Arc<MetadataState>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    published: Published,
    applied: watch::Sender<u64>,
    snapshots: Arc<SnapshotStore>,
    /// The bucket journal (stateless mode): every applied batch is handed to it.
    journal: Option<JournalFeed>,
}

impl StateMachine {
    /// Starts from the newest snapshot on disk (if any); openraft then re-applies the log after it.
    pub(crate) fn recover(
        snapshots: Arc<SnapshotStore>,
        journal: Option<JournalFeed>,
    ) -> io::Result<(StateMachine, Published, watch::Receiver<u64>)> {
        let (state, last_applied, last_membership) = match snapshots.load_latest()? {
            Some(bytes) => {
                let doc = snapshot::decode(&bytes)?;
                tracing::info!(last_applied = ?doc.last_applied, "metadata snapshot loaded");
                (
                    doc.state,
                    doc.last_applied.as_ref().map(codec::log_id),
                    codec::stored_membership(&doc.last_membership)?,
                )
            }
            None => (MetadataState::default(), None, StoredMembership::default()),
        };
        let state = Arc::new(state);
        let published = Arc::new(RwLock::new((
            applied_index(last_applied.as_ref()),
            state.clone(),
        )));
        let (applied, applied_rx) = watch::channel(applied_index(last_applied.as_ref()));
        let machine = StateMachine {
            state,
            last_applied,
            last_membership,
            published: published.clone(),
            applied,
            snapshots,
            journal,
        };
        Ok((machine, published, applied_rx))
    }

    fn publish(&mut self, state: Arc<MetadataState>) {
        self.state = state.clone();
        let index = applied_index(self.last_applied.as_ref());
        *self
            .published
            .write()
            .unwrap_or_else(PoisonError::into_inner) = (index, state);
        self.applied.send_replace(index);
    }
}

/// A consistent, immutable view of the state machine to write a snapshot from, off the apply path.
pub(crate) struct SnapshotBuilder {
    state: Arc<MetadataState>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    snapshots: Arc<SnapshotStore>,
}

fn join_error(error: tokio::task::JoinError) -> io::Error {
    io::Error::other(format!("snapshot task failed: {error}"))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let state = self.state.clone();
        let position = self.last_applied.as_ref().map(codec::position);
        let membership = codec::stored_membership_record(&self.last_membership);
        let snapshots = self.snapshots.clone();
        // Encoding a large state and fsyncing the file are blocking work.
        let bytes = tokio::task::spawn_blocking(move || -> io::Result<Vec<u8>> {
            let bytes = snapshot::encode(position.as_ref(), &membership, &state)?;
            snapshots.save(snapshot::covered_by(position.as_ref()), &bytes)?;
            Ok(bytes)
        })
        .await
        .map_err(join_error)??;
        tracing::info!(last_applied = ?self.last_applied, bytes = bytes.len(), "metadata snapshot written");
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
        };
        Ok(Snapshot {
            meta,
            snapshot: bytes,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // Copy-on-write: the state is cloned once per batch, and only if the batch holds a command.
        let mut working: Option<MetadataState> = None;
        let mut last_applied = self.last_applied;
        let mut last_membership = None;
        let mut answers = Vec::new();
        let mut first_index = None;
        let mut journaled = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            first_index.get_or_insert(entry.log_id.index);
            if self.journal.is_some() {
                // Every entry goes to the bucket log (blank and membership ones without a
                // command), so its chain has exactly one entry per index.
                let command = match &entry.payload {
                    EntryPayload::Normal(Request(command)) => Some(command.clone()),
                    _ => None,
                };
                journaled.push(JournalEntry {
                    term: entry.log_id.leader_id.term,
                    index: entry.log_id.index,
                    command,
                });
            }
            let response = match &entry.payload {
                EntryPayload::Blank => CommandResponse::Ok,
                EntryPayload::Normal(Request(command)) => {
                    let state = working.get_or_insert_with(|| (*self.state).clone());
                    crate::apply::apply_command(state, command)
                }
                EntryPayload::Membership(membership) => {
                    last_membership = Some(StoredMembership::new(
                        Some(entry.log_id),
                        membership.clone(),
                    ));
                    CommandResponse::Ok
                }
            };
            last_applied = Some(entry.log_id);
            if let Some(responder) = responder {
                answers.push((responder, response));
            }
        }
        self.last_applied = last_applied;
        if let Some(membership) = last_membership {
            self.last_membership = membership;
        }
        let state = match working {
            Some(state) => Arc::new(state),
            None => self.state.clone(),
        };
        self.publish(state.clone());
        if let (Some(feed), Some(first), Some(last)) =
            (&mut self.journal, first_index, last_applied)
        {
            let snapshot = feed.wants_state(last.index).then(|| SnapshotJob {
                state: state.clone(),
                position: codec::position(&last),
                membership: codec::stored_membership_record(&self.last_membership),
            });
            feed.send(JournalBatch {
                first,
                last: last.index,
                entries: journaled,
                snapshot,
            });
        }
        for (responder, response) in answers {
            responder.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            state: self.state.clone(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let snapshots = self.snapshots.clone();
        let doc = tokio::task::spawn_blocking(move || -> io::Result<snapshot::SnapshotDoc> {
            let doc = snapshot::decode(&snapshot)?;
            snapshots.save(doc.covered(), &snapshot)?;
            Ok(doc)
        })
        .await
        .map_err(join_error)??;
        let last_applied = doc.last_applied.as_ref().map(codec::log_id);
        if last_applied != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot document is at {:?} but its metadata says {:?}",
                    last_applied, meta.last_log_id
                ),
            ));
        }
        self.last_membership = codec::stored_membership(&doc.last_membership)?;
        self.last_applied = last_applied;
        self.publish(Arc::new(doc.state));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let snapshots = self.snapshots.clone();
        let loaded = tokio::task::spawn_blocking(
            move || -> io::Result<Option<(Vec<u8>, snapshot::SnapshotDoc)>> {
                let Some(bytes) = snapshots.load_latest()? else {
                    return Ok(None);
                };
                let doc = snapshot::decode(&bytes)?;
                Ok(Some((bytes, doc)))
            },
        )
        .await
        .map_err(join_error)??;
        let Some((bytes, doc)) = loaded else {
            return Ok(None);
        };
        let meta = SnapshotMeta {
            last_log_id: doc.last_applied.as_ref().map(codec::log_id),
            last_membership: codec::stored_membership(&doc.last_membership)?,
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: bytes,
        }))
    }
}
