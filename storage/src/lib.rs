//! `storage` — partition logs on top of the WAL and the object store.
//!
//! Owns: the record-batch format checks and the one rewrite we allow ([`batch`]), the segment object
//! format ([`segment`]), building an object store from a URL ([`objects`]), and [`LogStore`]: offset
//! assignment, the in-memory tail cache, reads from tail cache → WAL → segment objects, moving WAL data
//! into segment objects by Sluice's own size/time thresholds, retention, DeleteRecords, object GC, and
//! recovery of WAL data not yet in segments after a restart.
//!
//! Architecture invariant: a record is acknowledged (its append returns `Ok`) only after the WAL
//! reports it durable; the high watermark never passes a record that is not durable.
//! Architecture invariant: `storage` never depends on `broker`.

pub mod batch;
pub mod objects;
pub mod segment;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use metadata::{MetadataClient, NodeId, TopicPartition};
use object_store::ObjectStore;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("offset {offset} out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange { offset: i64, log_start: i64, high_watermark: i64 },
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] batch::BatchError),
    #[error("wal: {0}")]
    Wal(#[from] wal::Error),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("metadata: {0}")]
    Metadata(#[from] metadata::Error),
    #[error("metadata rejected the change: {0}")]
    Rejected(#[from] metadata::Rejection),
    #[error("corrupt segment object {key}: {reason}")]
    CorruptSegment { key: String, reason: String },
    #[error("storage is shutting down")]
    ShuttingDown,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Local directory; the file WAL lives in `{data_dir}/wal`.
    pub data_dir: PathBuf,
    pub node_id: NodeId,
    pub wal: wal::WalOptions,
    /// Cluster id, the first component of every object key.
    pub cluster_id: String,
    /// A partition's WAL data is written to a segment object once it reaches this many bytes...
    pub segment_bytes: u64,
    /// ...or once its oldest WAL record is this old.
    pub segment_max_age: Duration,
    /// Bytes of recent batches kept in memory across all partitions (tailing consumers read these).
    pub tail_cache_bytes: usize,
    /// How often retention and GC run.
    pub housekeeping_interval: Duration,
    /// Objects removed from the index are deleted from the store only after this grace period.
    pub gc_grace: Duration,
}

impl StorageOptions {
    pub fn new(data_dir: impl Into<PathBuf>, node_id: NodeId, cluster_id: impl Into<String>) -> Self {
        let data_dir = data_dir.into();
        StorageOptions {
            wal: wal::WalOptions::new(data_dir.join("wal")),
            data_dir,
            node_id,
            cluster_id: cluster_id.into(),
            segment_bytes: 16 * 1024 * 1024,
            segment_max_age: Duration::from_secs(30),
            tail_cache_bytes: 64 * 1024 * 1024,
            housekeeping_interval: Duration::from_secs(5),
            gc_grace: Duration::from_secs(60),
        }
    }
}

/// Result of an append: where the batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: i64,
    /// Broker time stamped into the batch for LogAppendTime topics, else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// Batches read from a partition, as stored (byte-for-byte).
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub batches: Vec<Bytes>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

/// How the timestamp of appended batches is set (topic config `message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Retention settings of a topic, read by housekeeping from the topic configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// -1 = unlimited.
    pub ms: i64,
    /// -1 = unlimited.
    pub bytes: i64,
}

/// All partition logs of this broker. Cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    _p: Arc<()>,
}

impl LogStore {
    /// Opens the WAL, replays records not yet in segment objects (per the metadata index) and starts
    /// the background tasks (segment writer, retention, GC).
    pub async fn open(
        _opts: StorageOptions,
        _objects: Arc<dyn ObjectStore>,
        _meta: MetadataClient,
    ) -> Result<LogStore> {
        todo!()
    }

    /// Assigns offsets to one validated batch (rewriting its `baseOffset`; for LogAppendTime also its
    /// max timestamp + CRC), writes it to the WAL and returns once it is durable.
    pub async fn append(
        &self,
        _tp: TopicPartition,
        _batch: BytesMut,
        _timestamp_type: TimestampType,
    ) -> Result<AppendResult> {
        todo!()
    }

    /// Reads whole batches starting with the one containing `offset`, up to about `max_bytes` (at least
    /// one batch is returned when any exists, as Kafka does). Reads never go past the high watermark.
    pub async fn read(&self, _tp: TopicPartition, _offset: i64, _max_bytes: usize) -> Result<ReadResult> {
        todo!()
    }

    pub fn offsets(&self, _tp: TopicPartition) -> Result<PartitionOffsets> {
        todo!()
    }

    /// Earliest offset whose record timestamp is >= `timestamp`, with that timestamp; `None` past the end.
    pub async fn offset_for_timestamp(
        &self,
        _tp: TopicPartition,
        _timestamp: i64,
    ) -> Result<Option<(i64, i64)>> {
        todo!()
    }

    /// Largest timestamp in the partition and the offset it belongs to (batch granularity: the last
    /// offset of the batch with the largest max timestamp).
    pub async fn max_timestamp(&self, _tp: TopicPartition) -> Result<Option<(i64, i64)>> {
        todo!()
    }

    /// Moves the log start offset to `offset` (DeleteRecords); returns the new low watermark.
    pub async fn delete_records(&self, _tp: TopicPartition, _offset: i64) -> Result<i64> {
        todo!()
    }

    /// Changes whenever the partition's high watermark moves (long-poll fetches wait on this).
    pub fn hw_watch(&self, _tp: TopicPartition) -> Result<tokio::sync::watch::Receiver<i64>> {
        todo!()
    }

    /// Sets the retention of a topic (called when its configs are created or changed).
    pub fn set_retention(&self, _topic_id: uuid::Uuid, _retention: Retention) {
        todo!()
    }

    /// Forgets the in-memory state of a deleted topic (its objects are GC'd via metadata).
    pub fn drop_topic(&self, _topic_id: uuid::Uuid) {
        todo!()
    }

    /// Stops background tasks and closes the WAL (everything acknowledged is already durable).
    pub async fn shutdown(&self) -> Result<()> {
        todo!()
    }
}
