//! `metadata` — the cluster's replicated metadata: an openraft state machine and the client API to it.
//!
//! Owns: cluster id, brokers, topics (UUID ids, partitions, configs), partition ownership and leader
//! epochs, the per-partition object index (offset ranges → object key + byte range + timestamps), log
//! start offsets, producer-id allocation, consumer-group committed offsets (see [`groups`]) and
//! per-partition idempotent-producer snapshots. Later: users/ACLs, ingest tenants.
//!
//! Everything goes through [`MetadataClient`]: `propose` a [`Command`] (replicated through Raft, applied
//! by the state machine, answered with a [`CommandResponse`]), `state` to read an immutable snapshot of
//! the applied [`MetadataState`], `watch` to learn when something new is applied. The client never
//! exposes openraft types, so a remote-leader forwarding client can replace the local one later.
//!
//! The Raft log is kept by the `wal` crate under `{dir}/raft-log`; snapshots are our own versioned
//! serde format (see `snapshot` module) under `{dir}/snapshots`. With [`JournalOptions`] (stateless
//! mode) every applied entry is also mirrored to the object store before `propose` answers, and the
//! node restores from the bucket at start (see the `journal` module).

mod apply;
mod apply_groups;
mod backend;
mod bucket_format;
pub mod groups;
mod journal;
#[cfg(test)]
mod journal_tests;
#[cfg(test)]
mod node_tests;
#[cfg(test)]
mod ownership_tests;
mod raft;
mod restore;
mod snapshot;
#[cfg(test)]
mod state_format_tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The state machine's transition function, exactly as the Raft state machine applies each
/// committed command. Public only for the `metabench` benchmark (sluice-benches); everything else
/// proposes commands through a [`MetadataClient`].
#[doc(hidden)]
pub use apply::apply_command;
pub use backend::{MemoryMetadata, MetadataBackend};
pub use groups::{
    CommittedOffset, GroupOffsets, OffsetCommitEntry, PartitionProducers, ProducerBatchRecord,
    ProducerSnapshot, SpilledProducers,
};

pub type NodeId = u64;

/// Upper bound on the partitions of one topic; `CreateTopic`/`CreatePartitions` beyond it are
/// rejected (a bad request must not be able to exhaust the controller's memory).
pub const MAX_PARTITIONS_PER_TOPIC: u32 = 100_000;

/// Upper bound on the encoded size of one command; `propose` answers a larger one with
/// [`Rejection::Invalid`] without replicating it.
pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;

/// A topic id and a partition index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    pub topic_id: Uuid,
    pub partition: i32,
}

/// One immutable object holding a contiguous offset range of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    /// Object-store key (never reused).
    pub key: String,
    /// First offset in the object.
    pub base_offset: i64,
    /// One past the last offset in the object.
    pub end_offset: i64,
    /// Byte range of the batches inside the object (the rest is the index footer).
    pub data_start: u64,
    pub data_len: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// Wall-clock ms when the object was written (retention by time uses `max_timestamp`).
    pub created_ms: i64,
    /// Bytes of the index footer (+ trailer) right after the data. 0 = the footer runs to the end of
    /// the object (a segment object of its own). Non-zero for a partition's chunk inside a shared
    /// WAL object (S3 WAL), where other partitions' chunks follow.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub footer_len: u64,
    /// A WAL chunk holding batches of idempotent producers (S3 WAL): recovery reads such chunks
    /// back to rebuild producer sequences; chunks without them are never read at startup.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub producer_batches: bool,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// One partition's chunk of a shared WAL object, for [`Command::AddSegments`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    pub tp: TopicPartition,
    pub leader_epoch: i32,
    pub segment: SegmentRef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    pub owner: NodeId,
    pub leader_epoch: i32,
    pub log_start_offset: i64,
    /// Sorted by `base_offset`, contiguous, non-overlapping.
    pub segments: Vec<SegmentRef>,
    /// Where each leader epoch started (OffsetForLeaderEpoch answers from it): one entry per epoch
    /// bump, sorted by epoch, start offsets non-decreasing; an epoch that saw no record (the next
    /// one starts at the same offset) is dropped at a later bump and ignored by
    /// [`PartitionMeta::end_offset_for_epoch`] (as Kafka's leader-epoch cache drops it), and
    /// entries wholly below the log start are dropped. Empty for partitions created before the
    /// history existed (until their next bump).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub epoch_starts: Vec<EpochStart>,
}

/// The first offset written under a leader epoch (see [`PartitionMeta::epoch_starts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStart {
    pub epoch: i32,
    pub start_offset: i64,
}

/// `AdvanceLogStart::leader_epoch` of a journal entry written before the field existed: applied
/// without the epoch check (old logs must replay as they did). New writers always send the epoch
/// they captured at acquire.
pub const UNCHECKED_EPOCH: i32 = -1;

fn unchecked_epoch() -> i32 {
    UNCHECKED_EPOCH
}

impl PartitionMeta {
    /// One past the last offset held in segment objects (= where data still only in the WAL starts).
    pub fn segmented_end(&self) -> i64 {
        self.segments
            .last()
            .map(|s| s.end_offset)
            .unwrap_or(self.log_start_offset)
    }

    /// OffsetForLeaderEpoch for the leader of this partition: `(epoch, end offset)` of the largest
    /// epoch `<= requested` (the requested one itself when it is older than the whole history),
    /// where an epoch ends where the next higher one starts, and the current epoch at `log_end`.
    /// `None` = undefined (Kafka answers epoch -1, offset -1): a negative or future epoch.
    ///
    /// Without a history (a partition created before it existed) every epoch up to the current
    /// one ends at `log_end`: no client is told of a truncation that cannot have happened.
    pub fn end_offset_for_epoch(&self, requested: i32, log_end: i64) -> Option<(i32, i64)> {
        if requested < 0 || requested > self.leader_epoch {
            return None;
        }
        if requested == self.leader_epoch || self.epoch_starts.is_empty() {
            return Some((requested, log_end));
        }
        // Epochs that saw no record (the next one starts at the same offset) do not count.
        let history: Vec<EpochStart> = self
            .epoch_starts
            .iter()
            .enumerate()
            .filter(|(i, entry)| {
                self.epoch_starts
                    .get(i + 1)
                    .is_none_or(|next| next.start_offset > entry.start_offset)
            })
            .map(|(_, entry)| *entry)
            .collect();
        let Some(higher) = history.iter().find(|e| e.epoch > requested) else {
            // Requested is below the current epoch but above everything recorded: the current
            // epoch's entry is missing (legacy), so it ends at the log end.
            return Some((requested, log_end));
        };
        let end = higher.start_offset.min(log_end);
        match history.iter().rev().find(|e| e.epoch <= requested) {
            Some(floor) => Some((floor.epoch, end)),
            None => Some((requested, end)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub id: Uuid,
    pub name: String,
    /// Only explicitly set configs; defaults are applied by the broker.
    pub configs: BTreeMap<String, String>,
    /// Each partition sits behind its own `Arc` (copy-on-write, like the topics of
    /// [`MetadataState::topics`]): a command that changes one partition copies that partition's
    /// segment list, not every partition's of the topic. Serialized as a plain list.
    pub partitions: Vec<Arc<PartitionMeta>>,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMeta {
    pub node_id: NodeId,
    pub host: String,
    pub port: u16,
    /// Bumped on every registration (restart).
    pub incarnation: u64,
}

/// One broker process (S3 WAL): the WAL lanes it writes under `{cluster}/wal/{id}/{lane}/{seq}` and
/// how far each lane is indexed. Registered (and stored in the bucket log) before its first ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncarnationMeta {
    pub node_id: NodeId,
    pub lanes: u32,
    /// Registration order (takeovers index older incarnations' tails first).
    pub ordinal: u64,
    pub registered_ms: i64,
    /// Per lane: every WAL object at or below this seq is indexed (seqs start at 1; 0 = none).
    /// GC deletes a WAL object only once it is at or below this mark.
    pub indexed_through: Vec<u64>,
    /// `false` once a newer incarnation of the same node registered: its marks are ignored from
    /// then on (and its partitions' epochs were bumped), so a zombie cannot claim objects indexed.
    pub live: bool,
    /// Set by the taker that sealed the lanes and indexed the tail below the seals: per lane, the
    /// seal seq (a tombstone object). Objects above a seal are never indexed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Vec<u64>>,
}

/// `AddSegments` (S3 WAL): every object of `lane` of `incarnation` at or below `through` is indexed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneMark {
    pub incarnation: Uuid,
    pub lane: u32,
    pub through: u64,
}

/// `AddSegments` of a takeover: the dead incarnation's lanes are sealed at `seals` (one per lane)
/// and everything below them is indexed by this very command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealLanes {
    pub incarnation: Uuid,
    pub seals: Vec<u64>,
}

/// Upper bound on the WAL lanes of one incarnation.
pub const MAX_WAL_LANES: u32 = 256;

/// The applied state. Cheap to share (`Arc`), never mutated in place after publication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataState {
    pub cluster_id: String,
    pub brokers: BTreeMap<NodeId, BrokerMeta>,
    /// Each topic, and each partition of it, sits behind an `Arc` (copy-on-write): the state is
    /// cloned for every applied batch — at S3 WAL commit rates, 100+ times a second — and that
    /// clone must copy pointers, not every partition's object index; a command then copies only
    /// the topics and partitions it changes.
    pub topics: BTreeMap<Uuid, Arc<TopicMeta>>,
    pub topic_ids: BTreeMap<String, Uuid>,
    pub next_producer_id: i64,
    /// Objects removed from the index, waiting for GC: (key, removed_ms).
    pub deleted_objects: Arc<Vec<(String, i64)>>,
    /// Committed offsets per consumer group. Each group sits behind an `Arc` so the copy-on-write
    /// clone per applied batch copies pointers, not every group's offsets.
    #[serde(default)]
    pub group_offsets: BTreeMap<String, Arc<GroupOffsets>>,
    /// Idempotent-producer state per partition as of some offset (written by the segment writer
    /// before the WAL data it summarizes is truncated): topic id → partition → snapshot.
    #[serde(default)]
    pub producer_states: BTreeMap<Uuid, BTreeMap<i32, Arc<PartitionProducers>>>,
    /// Shared WAL objects (S3 WAL) still referenced by the index: key → number of chunks indexed.
    /// A persistent map: every `AddSegments` adds keys, and copying tens of thousands of entries
    /// per commit (as a copy-on-write `BTreeMap` would) dominated the apply cost
    /// (`benches/src/metabench.rs`); a change copies O(log n) nodes. Serialized as a plain map.
    #[serde(default)]
    pub shared_objects: imbl::OrdMap<String, u32>,
    /// Broker incarnations that wrote (or write) WAL lanes (S3 WAL).
    #[serde(default)]
    pub incarnations: Arc<BTreeMap<Uuid, IncarnationMeta>>,
    /// The next `IncarnationMeta::ordinal`.
    #[serde(default)]
    pub next_incarnation_ordinal: u64,
}

impl MetadataState {
    pub fn topic_by_name(&self, name: &str) -> Option<&TopicMeta> {
        self.topic_ids
            .get(name)
            .and_then(|id| self.topics.get(id))
            .map(Arc::as_ref)
    }
    /// The producer snapshot of a partition, if one was ever written.
    pub fn producer_state(&self, tp: TopicPartition) -> Option<&PartitionProducers> {
        self.producer_states
            .get(&tp.topic_id)?
            .get(&tp.partition)
            .map(Arc::as_ref)
    }
    /// The committed offset of `group` for `tp`, if any.
    pub fn committed_offset(&self, group: &str, tp: TopicPartition) -> Option<&CommittedOffset> {
        self.group_offsets
            .get(group)?
            .topics
            .get(&tp.topic_id)?
            .get(&tp.partition)
    }
    pub fn partition(&self, tp: TopicPartition) -> Option<&PartitionMeta> {
        self.topics
            .get(&tp.topic_id)?
            .partitions
            .get(usize::try_from(tp.partition).ok()?)
            .map(Arc::as_ref)
    }
}

/// A change to the metadata. Commands are validated by the state machine when applied; an invalid one
/// is answered with [`CommandResponse::Rejected`] and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Sets the cluster id if none is set yet (answered with the id in force).
    InitCluster {
        cluster_id: String,
    },
    /// Registers (or re-registers after restart) a broker; bumps the leader epoch of every partition it owns.
    RegisterBroker {
        node_id: NodeId,
        host: String,
        port: u16,
    },
    CreateTopic {
        name: String,
        topic_id: Uuid,
        partitions: u32,
        configs: BTreeMap<String, String>,
        owner: NodeId,
        now_ms: i64,
    },
    DeleteTopic {
        topic_id: Uuid,
        now_ms: i64,
    },
    /// Grows a topic to `total` partitions (never shrinks).
    CreatePartitions {
        topic_id: Uuid,
        total: u32,
        owner: NodeId,
    },
    /// Replaces the topic's explicitly-set configs.
    SetTopicConfigs {
        topic_id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// Appends a segment to a partition's index. Rejected if `leader_epoch` is not the partition's
    /// current epoch (stale: [`Rejection::StaleLeaderEpoch`]), or the segment does not start exactly
    /// at the partition's `segmented_end()`. When the index is empty, the segment may start below
    /// the log start (which can lie inside a batch after DeleteRecords) but must cover it: it is
    /// rejected if it starts above the log start or ends at/below it.
    AddSegment {
        tp: TopicPartition,
        leader_epoch: i32,
        segment: SegmentRef,
    },
    /// S3 WAL group commit: appends one chunk per partition of one or more shared WAL objects
    /// (entries of the same object carry the same `segment.key`). Each entry is checked like [`Command::AddSegment`] and applied or
    /// rejected on its own (a deleted topic must not fail the other partitions of the object);
    /// answered with [`CommandResponse::Entries`] in entry order. The object is reference-counted
    /// (`MetadataState::shared_objects`): it goes to `deleted_objects` only when the last chunk
    /// referencing it leaves the index (compaction, retention, topic deletion). An object none of
    /// whose entries was accepted goes to `deleted_objects` at once.
    ///
    /// `marks` advance the lanes' `indexed_through` (ignored for an incarnation that is no longer
    /// live; marks and seal are applied only if every entry was accepted or refused because its
    /// partition is gone or its epoch is stale — never past a chunk left out of the index); an object of a lane (named by a mark) none of whose entries was accepted stays out of
    /// `deleted_objects` (it may still be indexed by a taker; retired incarnations are swept).
    /// `seal` (a takeover) records the seals of a dead incarnation and marks its lanes indexed up to
    /// below them.
    AddSegments {
        entries: Vec<SegmentEntry>,
        now_ms: i64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        marks: Vec<LaneMark>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seal: Option<SealLanes>,
    },
    /// A broker process starts writing WAL lanes (S3 WAL): registers `incarnation`, retires the
    /// node's older live incarnations (their marks are ignored from now on) and bumps the leader
    /// epoch of every partition `node_id` owns, so a zombie's index writes are rejected.
    ///
    /// With `successor_of`, only if that incarnation is still live: a process that continues under
    /// a new incarnation (its WAL object could not be stored) must not retire the incarnation of
    /// another process that took its node over meanwhile — it is a zombie, and stops.
    RegisterIncarnation {
        incarnation: Uuid,
        node_id: NodeId,
        lanes: u32,
        now_ms: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        successor_of: Option<Uuid>,
    },
    /// Compaction: atomically replaces the run of consecutive segments of `tp` that exactly covers
    /// `[segment.base_offset, segment.end_offset)` (first one starting at `base_offset`, last one
    /// ending at `end_offset`) with `segment`. Rejected (state unchanged) on a stale epoch or when
    /// no such run exists (e.g. retention removed part of it meanwhile). The replaced objects are
    /// released (exclusive ones to `deleted_objects`, shared ones decremented).
    ReplaceSegments {
        tp: TopicPartition,
        leader_epoch: i32,
        segment: SegmentRef,
        now_ms: i64,
    },
    /// Moves the log start offset forward (retention, DeleteRecords); segments wholly below it are
    /// removed from the index and queued in `deleted_objects`.
    ///
    /// Rejected on a stale `leader_epoch`, like every other partition write; an entry written
    /// before the field existed decodes as [`UNCHECKED_EPOCH`] and is applied unchecked.
    AdvanceLogStart {
        tp: TopicPartition,
        offset: i64,
        now_ms: i64,
        #[serde(default = "unchecked_epoch")]
        leader_epoch: i32,
    },
    /// Forgets objects that the GC has deleted from the object store.
    ForgetDeletedObjects {
        keys: Vec<String>,
    },
    /// Allocates `count` consecutive producer ids; answered with the first.
    AllocateProducerIds {
        count: i64,
    },
    /// Stores committed offsets (many groups and requests group-committed into one entry). Entries
    /// for partitions that no longer exist, with an empty group id or a negative offset are
    /// skipped (the coordinator validated them; a topic may have been deleted since). Answered
    /// with [`CommandResponse::Count`] = entries stored.
    CommitOffsets {
        commits: Vec<OffsetCommitEntry>,
    },
    /// OffsetDelete: forgets the committed offsets of `group` for these partitions.
    DeleteGroupOffsets {
        group: String,
        partitions: Vec<TopicPartition>,
    },
    /// DeleteGroups / offset expiry: forgets every committed offset of these groups. Answered with
    /// [`CommandResponse::Count`] = groups that existed.
    DeleteGroups {
        groups: Vec<String>,
    },
    /// Replaces the idempotent-producer snapshot of a partition. Rejected if `leader_epoch` is not
    /// the partition's current epoch (a zombie owner must not overwrite it), or if it would move
    /// the snapshot's `as_of_offset` backwards.
    SetProducerState {
        tp: TopicPartition,
        leader_epoch: i32,
        state: PartitionProducers,
        /// When it was proposed: a spilled snapshot it replaces is queued for GC at this time.
        #[serde(default)]
        now_ms: i64,
    },
    /// Makes `node_id` (a registered broker) the owner of `partitions` — empty = every partition
    /// not owned by it — and bumps their leader epoch, recording where the new epoch starts (the
    /// partition's index end). Writes captured under an older epoch are rejected from then on.
    /// Answered with [`CommandResponse::Acquired`]: every acquired partition with its new epoch
    /// (the caller captures it). An unknown partition in the list rejects the whole command.
    AcquirePartitions {
        node_id: NodeId,
        partitions: Vec<TopicPartition>,
    },
    /// Moves the recorded start of each partition's current epoch forward (see
    /// [`EpochStartEntry`]): the file WAL's recovery learns the true end of the previous epochs
    /// (data only in the local WAL) after the epoch was bumped at the index end. Each entry is
    /// applied or rejected on its own; answered with [`CommandResponse::Entries`].
    SetEpochStarts {
        entries: Vec<EpochStartEntry>,
    },
}

/// One partition of [`Command::SetEpochStarts`]: its current epoch starts at `start_offset`.
/// Rejected on a stale `leader_epoch`, or when it would move the recorded start backwards or
/// below the log start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStartEntry {
    pub tp: TopicPartition,
    pub leader_epoch: i32,
    pub start_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    Ok,
    ClusterId(String),
    ProducerIdStart(i64),
    /// The epoch in force after `RegisterBroker`.
    Incarnation(u64),
    /// The new log start offset after `AdvanceLogStart`.
    LogStart(i64),
    /// How many items a command affected (`CommitOffsets`, `DeleteGroups`).
    Count(u64),
    /// Per-entry outcome of `AddSegments` (`None` = applied), in entry order.
    Entries(Vec<Option<Rejection>>),
    Rejected(Rejection),
    /// `AcquirePartitions`: each acquired partition with its new leader epoch.
    Acquired(Vec<(TopicPartition, i32)>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("topic already exists")]
    TopicExists,
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("stale leader epoch {got}, current {current}")]
    StaleLeaderEpoch { got: i32, current: i32 },
    #[error("segment does not continue the partition's index: {0}")]
    NonContiguousSegment(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The writer was replaced by another process (a conditional registration found its
    /// incarnation retired).
    #[error("fenced: {0}")]
    Fenced(String),
}

impl Rejection {
    /// An `AddSegments` entry's outcome that settles its chunk (S3 WAL): accepted (`None`), or
    /// refused because the partition is gone or the writer's epoch is stale — nothing is left out
    /// of the index that a lane's mark could pass.
    pub fn settles_chunk(outcome: Option<&Rejection>) -> bool {
        matches!(
            outcome,
            None | Some(Rejection::UnknownTopicOrPartition | Rejection::StaleLeaderEpoch { .. })
        )
    }
}

/// Most entries per `AddSegments` command: keeps every command well under `MAX_COMMAND_BYTES`
/// (an entry encodes to a few hundred bytes) when thousands of partitions share a flush.
pub const ENTRIES_PER_COMMAND: usize = 1000;

/// `entries` cut into `AddSegments`-sized runs, in order; at least one (empty) run, so a command
/// carrying only marks or a seal is still sent.
pub fn add_segments_runs(entries: &[SegmentEntry]) -> Vec<&[SegmentEntry]> {
    if entries.is_empty() {
        vec![&[]]
    } else {
        entries.chunks(ENTRIES_PER_COMMAND).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("raft: {0}")]
    Raft(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("wal: {0}")]
    Wal(#[from] wal::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata is shutting down")]
    ShuttingDown,
    /// Applied locally, but not yet in the bucket journal within `JournalOptions::persist_timeout`
    /// (object store slow or down). The change may still become durable; the caller should answer
    /// with a retriable error.
    #[error("metadata change not persisted to the object store in time")]
    NotPersisted,
    /// Another process continues this cluster's bucket metadata log: this one acknowledges
    /// nothing more and must stop serving writes.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The bucket metadata log cannot be restored as it is (the start is refused; the bucket was
    /// not changed).
    #[error("restore: {0}")]
    Restore(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct MetadataOptions {
    /// Directory for the Raft log and snapshots.
    pub dir: PathBuf,
    pub node_id: NodeId,
    /// Take a snapshot (and purge the log) every this many applied entries.
    pub snapshot_every: u64,
    /// fsync the Raft log (false only in tests/benches).
    pub fsync: bool,
    /// Bucket journal (S3 WAL mode): when set, every applied entry is mirrored to the object store
    /// before `propose` answers, and `start` rebuilds the state from the bucket (the local directory
    /// is only a cache and is wiped).
    pub journal: Option<JournalOptions>,
}

/// Where and how the metadata journal is kept in the object store.
///
/// Layout under `prefix`: `metadata/snapshot/{index:020}.json` (the state at that log index) and
/// `metadata/log/{first:020}.json` (the entries from `first` to the object's `last`), all written
/// create-if-absent; see the `journal` module for the rules.
#[derive(Clone)]
pub struct JournalOptions {
    pub store: Arc<dyn object_store::ObjectStore>,
    /// Key prefix, e.g. the cluster id; no leading or trailing slash.
    pub prefix: String,
    /// Upload a snapshot (and delete the log objects it covers) every this many entries.
    pub snapshot_every: u64,
    /// How long `propose` waits for its entry to reach the bucket before [`Error::NotPersisted`].
    pub persist_timeout: std::time::Duration,
}

impl std::fmt::Debug for JournalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalOptions")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .field("snapshot_every", &self.snapshot_every)
            .field("persist_timeout", &self.persist_timeout)
            .finish()
    }
}

/// A running single-voter metadata node (the controller role of this process).
pub struct MetadataNode {
    inner: Arc<raft::RaftNode>,
}

impl MetadataNode {
    /// Opens the Raft log + latest snapshot under `opts.dir`, starts openraft with this node as the
    /// only voter (initializing the membership on first start), and waits until it is leader.
    pub async fn start(opts: MetadataOptions) -> Result<MetadataNode> {
        let inner = raft::RaftNode::start(&opts).await?;
        Ok(MetadataNode {
            inner: Arc::new(inner),
        })
    }

    pub fn client(&self) -> MetadataClient {
        MetadataClient {
            inner: self.inner.clone(),
        }
    }

    /// Stops Raft; pending proposals fail with [`Error::ShuttingDown`].
    pub async fn shutdown(self) -> Result<()> {
        self.inner.shutdown().await
    }
}

/// The only way the rest of Sluice reads or changes metadata. Cheap to clone.
///
/// A handle over a [`MetadataBackend`]: the Raft node of a running broker, or a
/// [`MemoryMetadata`] shared by several brokers' storage in one test process.
#[derive(Clone)]
pub struct MetadataClient {
    inner: Arc<dyn MetadataBackend>,
}

impl MetadataClient {
    /// A client of `backend` (tests use [`MemoryMetadata`]).
    pub fn new(backend: Arc<dyn MetadataBackend>) -> MetadataClient {
        MetadataClient { inner: backend }
    }

    /// Replicates `cmd` and returns the state machine's answer once it is applied (and durable).
    pub async fn propose(&self, cmd: Command) -> Result<CommandResponse> {
        // Oversized commands are refused before they reach the log, where a record the WAL cannot
        // hold would stop Raft for everyone.
        let size = serde_json::to_vec(&cmd)
            .map(|bytes| bytes.len())
            .unwrap_or(usize::MAX);
        if size > MAX_COMMAND_BYTES {
            return Ok(CommandResponse::Rejected(Rejection::Invalid(format!(
                "command of {size} bytes exceeds the limit of {MAX_COMMAND_BYTES}"
            ))));
        }
        self.inner.propose(cmd).await
    }

    /// Waits until everything applied so far is durable where metadata keeps it (the bucket
    /// journal, when configured; otherwise it already is). `Err(NotPersisted)` after the journal's
    /// `persist_timeout`.
    pub async fn sync(&self) -> Result<()> {
        self.inner.sync().await
    }

    /// The latest applied state. With the bucket journal it may include changes not yet stored
    /// in the bucket: anything that deletes or otherwise acts irreversibly on it must use
    /// [`MetadataClient::durable_state`] instead.
    pub fn state(&self) -> Arc<MetadataState> {
        self.inner.state()
    }

    /// The latest applied state once everything in it is durable (in the bucket journal, when
    /// configured). `Err(NotPersisted)` after the persist timeout, `Err(Fenced)` when fenced.
    pub async fn durable_state(&self) -> Result<Arc<MetadataState>> {
        self.inner.durable_state().await
    }

    /// Resolves when this process is fenced off the bucket metadata log (another process
    /// continues it), with the reason; never without the journal or after a clean shutdown.
    pub async fn fenced(&self) -> String {
        self.inner.wait_fenced().await
    }

    /// Changes whenever a new log entry is applied (value = applied log index).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.watch()
    }
}
