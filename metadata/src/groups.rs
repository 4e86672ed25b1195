//! Consumer-group committed offsets and idempotent-producer snapshots: the plain data kept in
//! [`crate::MetadataState`] so that it survives broker restarts and moves with a coordinator or a
//! partition owner (any broker reads the same replicated state).
//!
//! Group *membership* is deliberately not here: it is soft state of the coordinator (rebuilt by
//! clients rejoining), while a committed offset is an acknowledged write that must never be lost.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::TopicPartition;

/// One committed offset with what the client sent along and when it was committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    /// -1 when the client did not send one.
    pub leader_epoch: i32,
    /// The client's metadata string (empty when it sent none).
    pub metadata: String,
    /// Coordinator wall-clock ms of the commit (offset expiry counts from the newest one).
    pub commit_ms: i64,
}

/// Every committed offset of one group: topic id → partition → offset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsets {
    pub topics: BTreeMap<Uuid, BTreeMap<i32, CommittedOffset>>,
}

impl GroupOffsets {
    /// Number of committed partitions.
    pub fn len(&self) -> usize {
        self.topics.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.values().all(BTreeMap::is_empty)
    }

    /// Commit time of the newest committed offset (None when empty).
    pub fn newest_commit_ms(&self) -> Option<i64> {
        self.topics
            .values()
            .flat_map(BTreeMap::values)
            .map(|committed| committed.commit_ms)
            .max()
    }

    /// Every (partition, offset) pair, in topic-id/partition order.
    pub fn iter(&self) -> impl Iterator<Item = (TopicPartition, &CommittedOffset)> {
        self.topics.iter().flat_map(|(topic_id, partitions)| {
            partitions.iter().map(move |(partition, committed)| {
                (
                    TopicPartition {
                        topic_id: *topic_id,
                        partition: *partition,
                    },
                    committed,
                )
            })
        })
    }
}

/// One offset to store for one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommitEntry {
    pub group: String,
    pub tp: TopicPartition,
    pub committed: CommittedOffset,
}

/// One of the last batches of an idempotent producer on a partition: its sequence range and where
/// it landed, so a retry gets its original offset back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerBatchRecord {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

/// The sequence state of one producer id on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerSnapshot {
    pub producer_id: i64,
    pub epoch: i16,
    /// Oldest first; at most the last five batches (what a client may have in flight).
    pub batches: Vec<ProducerBatchRecord>,
    /// Max timestamp of its newest batch (the oldest producers are dropped first when bounded).
    pub last_timestamp: i64,
}

/// The idempotent-producer state of one partition after applying every batch below `as_of_offset`:
/// either inline in `producers`, or — for a partition with more producers than fit a metadata
/// command comfortably — in an object of its own named by `spilled` (`producers` is then empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionProducers {
    pub as_of_offset: i64,
    pub producers: Vec<ProducerSnapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spilled: Option<SpilledProducers>,
}

/// A producer snapshot stored as an object (the JSON of an inline [`PartitionProducers`] at the
/// same `as_of_offset`). Written once under a unique key, never overwritten; the key is queued for
/// GC when a newer snapshot replaces it or its topic is deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpilledProducers {
    pub key: String,
    /// How many producers it holds (for logs and status; the object is the truth).
    pub producers: u64,
}
