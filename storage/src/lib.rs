//! `storage` — partition logs on top of the WAL and the object store.
//!
//! Owns: the record-batch format checks and the one rewrite we allow ([`batch`]), the segment object
//! format ([`segment`]), reading it through a byte-bounded block cache with read-ahead ([`segment_reader`],
//! [`block_cache`]), building an object store from a URL ([`objects`]), and [`LogStore`]: offset
//! assignment, the in-memory tail cache, reads from tail cache → WAL → segment objects, moving WAL data
//! into segment objects by Sluice's own size/time thresholds, retention, DeleteRecords, object GC, and
//! recovery of WAL data not yet in segments after a restart.
//!
//! Private modules: `partition` (offset assignment, in-flight appends, high watermark, WAL index),
//! `wal_record` (the routing header in front of each batch in the WAL), `tail_cache`, `read` (fetch
//! and timestamp lookups), `segment_writer` (WAL →
//! segment objects + WAL checkpoint), `housekeeping` (retention + object GC), `recovery` (WAL replay),
//! `passes` (counted passes of those background loops, which tests ask for instead of waiting).
//!
//! Architecture invariant: a record is acknowledged (its append returns `Ok`) only after the WAL
//! reports it durable; the high watermark never passes a record that is not durable.
//! Architecture invariant: `storage` never depends on `broker`.

pub mod batch;
pub mod block_cache;
pub mod objects;
pub mod segment;
pub mod segment_reader;

mod compaction;
mod object_wal;
mod ownership;

mod housekeeping;
#[cfg(test)]
mod object_wal_tests;
#[cfg(test)]
mod ownership_tests;
mod partition;
mod passes;
#[cfg(test)]
mod power_loss_tests;
#[cfg(test)]
mod producer_snapshot_tests;
mod producer_snapshots;
mod producers;
mod read;
mod recovery;
mod reincarnation;
#[cfg(test)]
mod reincarnation_tests;
mod segment_writer;
#[cfg(test)]
mod store_tests;
mod tail_cache;
mod takeover;
#[cfg(test)]
mod takeover_tests;
#[cfg(test)]
mod test_support;
mod wal_object;
mod wal_record;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use metadata::{Command, CommandResponse, MetadataClient, NodeId, TopicPartition};
use object_store::ObjectStore;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wal::Wal;

use crate::batch::{BatchError, BatchHeader};
use crate::partition::{Partition, PartitionState};
use crate::producers::{ProducerTable, SequenceCheck};
use crate::segment_reader::SegmentReader;
use crate::tail_cache::TailCache;

use crate::object_wal::{ObjectWal, Pending};
pub use crate::object_wal::{ObjectWalOptions, ObjectWalStats};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// The partition is owned by another broker (`owner`, at `leader_epoch`): not served here.
    #[error("partition owned by broker {owner} at epoch {leader_epoch}")]
    NotLeader { owner: NodeId, leader_epoch: i32 },
    #[error("offset {offset} out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        high_watermark: i64,
    },
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
    /// The append did not become durable within the caller's timeout; it may still land later.
    #[error("timed out waiting for the append to become durable")]
    TimedOut,
    /// Idempotent producer: the batch's sequence does not follow the producer's last one.
    #[error("out of order sequence number: expected {expected}, got {got}")]
    OutOfOrderSequence { expected: i32, got: i32 },
    /// Idempotent producer: a newer epoch of this producer id has written to the partition.
    #[error("producer epoch {got} is fenced by epoch {current}")]
    InvalidProducerEpoch { current: i16, got: i16 },
    /// Idempotent producer: a retry of a batch older than the remembered ones (already written).
    #[error("duplicate sequence number {got}")]
    DuplicateSequence { got: i32 },
}

impl From<producers::SequenceError> for Error {
    fn from(error: producers::SequenceError) -> Self {
        match error {
            producers::SequenceError::InvalidProducerEpoch { current, got } => {
                Error::InvalidProducerEpoch { current, got }
            }
            producers::SequenceError::OutOfOrder { expected, got } => {
                Error::OutOfOrderSequence { expected, got }
            }
            producers::SequenceError::Duplicate { got } => Error::DuplicateSequence { got },
        }
    }
}

/// How long the retry of a batch still in flight waits for the original to become durable.
const DUPLICATE_WAIT: Duration = Duration::from_secs(30);

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Local directory; the file WAL lives in `{data_dir}/wal`.
    pub data_dir: PathBuf,
    pub node_id: NodeId,
    pub wal: wal::WalOptions,
    /// `Some` = the S3 WAL (`--wal object`): batches go to shared WAL objects in the object store
    /// and no file WAL is opened; `None` = the file WAL (`wal`).
    pub object_wal: Option<ObjectWalOptions>,
    /// Cluster id, the first component of every object key.
    pub cluster_id: String,
    /// A partition's WAL data is written to a segment object once it reaches this many bytes...
    pub segment_bytes: u64,
    /// ...or once its oldest WAL record is this old.
    pub segment_max_age: Duration,
    /// Bytes of recent batches kept in memory across all partitions (tailing consumers read these).
    pub tail_cache_bytes: usize,
    /// Catch-up reads of objects: block cache size, block size, read-ahead, GET concurrency.
    pub block_cache: block_cache::BlockCacheOptions,
    /// How often retention and GC run.
    pub housekeeping_interval: Duration,
    /// Objects removed from the index are deleted from the store only after this grace period.
    pub gc_grace: Duration,
    /// Kafka's `producer.id.expiration.ms`: an idempotent producer not heard from for this long is
    /// forgotten (its next batch is taken as a new producer's).
    pub producer_id_expiration: Duration,
    /// Most idempotent producers remembered per partition; beyond it the least recently written
    /// are forgotten (bounds memory against a flood of producer ids).
    pub max_producers_per_partition: usize,
}

impl StorageOptions {
    pub fn new(
        data_dir: impl Into<PathBuf>,
        node_id: NodeId,
        cluster_id: impl Into<String>,
    ) -> Self {
        let data_dir = data_dir.into();
        StorageOptions {
            wal: wal::WalOptions::new(data_dir.join("wal")),
            object_wal: None,
            data_dir,
            node_id,
            cluster_id: cluster_id.into(),
            segment_bytes: 16 * 1024 * 1024,
            segment_max_age: Duration::from_secs(30),
            tail_cache_bytes: 64 * 1024 * 1024,
            block_cache: block_cache::BlockCacheOptions::default(),
            housekeeping_interval: Duration::from_secs(5),
            gc_grace: Duration::from_secs(60),
            producer_id_expiration: Duration::from_secs(24 * 3600),
            max_producers_per_partition: 100_000,
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

/// An append whose place in the partition is fixed; await it for the durable result.
pub struct AppendTicket {
    task: tokio::task::JoinHandle<Result<AppendResult>>,
}

impl AppendTicket {
    /// Answered already (tests of backpressure).
    #[cfg(test)]
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl std::future::IntoFuture for AppendTicket {
    type Output = Result<AppendResult>;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            match self.task.await {
                Ok(result) => result,
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                Err(_) => Err(Error::ShuttingDown),
            }
        })
    }
}

/// All partition logs of this broker. Cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    pub(crate) inner: Arc<Inner>,
}

/// Shared state of a [`LogStore`] and its background tasks.
pub(crate) struct Inner {
    pub(crate) opts: StorageOptions,
    pub(crate) objects: Arc<dyn ObjectStore>,
    pub(crate) meta: MetadataClient,
    /// The file WAL; `None` with the S3 WAL.
    pub(crate) wal: Option<Wal>,
    /// The S3 WAL's current incarnation; `None` with the file WAL.
    pub(crate) object_wal: Option<reincarnation::ObjectWalSlot>,
    pub(crate) partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    /// Topics forgotten by `drop_topic`: never lazily re-created from a stale metadata view.
    pub(crate) dropped_topics: Mutex<HashSet<uuid::Uuid>>,
    /// The leader epoch each partition was acquired at by this store: every partition this node
    /// owned when the store opened (after registration and acquire), and each one that became
    /// this node's later (created, or taken over) at the epoch it had then. A later bump while
    /// the node still owns it (another process registering under the same id) does not change
    /// it, so that process's writes fence this one's.
    pub(crate) acquired: Mutex<HashMap<TopicPartition, i32>>,
    pub(crate) retention: Mutex<HashMap<uuid::Uuid, Retention>>,
    /// The last spilled producer snapshot this store wrote or read, per partition
    /// (`producer_snapshots`).
    pub(crate) producer_snapshots:
        Mutex<HashMap<TopicPartition, (String, Arc<metadata::PartitionProducers>)>>,
    pub(crate) tail: TailCache,
    pub(crate) segments: Arc<SegmentReader>,
    /// Woken when a partition's WAL-only bytes reach `segment_bytes`.
    pub(crate) writer_wake: Notify,
    /// Rounds of the segment writer (file WAL) or of compaction (S3 WAL).
    pub(crate) writer_passes: passes::Passes,
    /// Passes of housekeeping (retention, GC, S3 WAL lane sweeps).
    pub(crate) housekeeping_passes: passes::Passes,
    cancel: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every mutex here guards plain data that stays consistent across a panic; keep serving.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// The partition's state, created from metadata on first use, with the epoch this store
    /// acquired it at (`Inner::acquired`): every write it causes carries that epoch. Only for
    /// partitions this broker owns: another broker's answer [`Error::NotLeader`].
    pub(crate) fn partition(&self, tp: TopicPartition) -> Result<Arc<Partition>> {
        let state = self.meta.state();
        let pm = state.partition(tp).ok_or(Error::UnknownTopicOrPartition)?;
        if pm.owner != self.opts.node_id {
            // Released: if it comes back, it is acquired again at the epoch it has then.
            lock(&self.acquired).remove(&tp);
            return Err(Error::NotLeader {
                owner: pm.owner,
                leader_epoch: pm.leader_epoch,
            });
        }
        if let Some(part) = self
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tp)
        {
            return Ok(part.clone());
        }
        let mut partitions = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        // Checked under the write lock: `drop_topic` marks the topic before it takes this lock to
        // remove its partitions, so a partition is never re-created behind its back.
        if lock(&self.dropped_topics).contains(&tp.topic_id) {
            return Err(Error::UnknownTopicOrPartition);
        }
        // Same for a change of S3-WAL incarnation (`retire_partitions`): the index is not complete
        // until the new one has taken the old one over.
        if self
            .object_wal
            .as_ref()
            .is_some_and(|slot| slot.switching.load(Ordering::Acquire))
        {
            return Err(Error::ShuttingDown);
        }
        // Not acquired yet by the ownership watcher (a topic just created). Everything this broker
        // has in its file WAL was loaded by recovery, so the state continues right after the
        // index; a partition whose producer state needs objects read (WAL chunks, a spilled
        // snapshot) waits for the watcher.
        if !compaction::producer_chunks(&state, tp, pm).is_empty() {
            return Err(Error::ShuttingDown);
        }
        let Some(producers) = producer_snapshots::table_now(self, tp, state.producer_state(tp))
        else {
            return Err(Error::ShuttingDown);
        };
        let part = partitions
            .entry(tp)
            .or_insert_with(|| {
                Arc::new(Partition::new(
                    tp,
                    self.acquired_epoch(tp, pm),
                    PartitionState::new(pm.log_start_offset, pm.segmented_end())
                        .with_producers(producers),
                ))
            })
            .clone();
        Ok(part)
    }

    /// Keeps a partition's producer table within `max_producers_per_partition`.
    fn bound_producers(&self, tp: TopicPartition, table: &mut ProducerTable, written: i64) {
        let forgotten = table.bound(self.opts.max_producers_per_partition, written);
        if forgotten > 0 {
            tracing::warn!(
                ?tp,
                forgotten,
                cap = self.opts.max_producers_per_partition,
                "idempotent producers forgotten before their expiry: more producers than \
                 --max-producers-per-partition wrote to this partition"
            );
        }
    }

    /// Installs the state of a partition acquired by the ownership watcher, unless one exists
    /// already (or its topic was dropped, or the incarnation is changing). `true` if installed.
    pub(crate) fn install_acquired(
        &self,
        tp: TopicPartition,
        leader_epoch: i32,
        state: PartitionState,
    ) -> bool {
        let mut partitions = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        let switching = self
            .object_wal
            .as_ref()
            .is_some_and(|slot| slot.switching.load(Ordering::Acquire));
        if switching
            || partitions.contains_key(&tp)
            || lock(&self.dropped_topics).contains(&tp.topic_id)
        {
            return false;
        }
        partitions.insert(tp, Arc::new(Partition::new(tp, leader_epoch, state)));
        true
    }

    /// Releases a partition this broker no longer owns: its state is dropped (appends still
    /// holding it fail, retriable) and if it comes back it is acquired again at the epoch it has
    /// then. `true` if it was loaded.
    pub(crate) fn release(&self, tp: TopicPartition) -> bool {
        let removed = self
            .partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&tp);
        lock(&self.acquired).remove(&tp);
        producer_snapshots::forget(self, |t| *t == tp);
        let Some(part) = removed else {
            return false;
        };
        part.state().poisoned = true;
        self.tail.remove_partition(tp);
        true
    }

    /// Retires every partition's state (a new S3-WAL incarnation acquires them again): appends
    /// still holding one fail (retriable), and the tail cache forgets batches whose offsets are
    /// assigned again. Called with `switching` set, so no state is created meanwhile.
    pub(crate) fn retire_partitions(&self) {
        let retired: Vec<Arc<Partition>> = self
            .partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, part)| part)
            .collect();
        for part in retired {
            part.state().poisoned = true;
        }
        self.tail.clear();
        lock(&self.acquired).clear();
    }

    /// Captures the epoch of every partition this node owns now (at open: after registration
    /// and acquire bumped them).
    pub(crate) fn capture_owned_epochs(&self) {
        let state = self.meta.state();
        let mut acquired = lock(&self.acquired);
        for topic in state.topics.values() {
            for (index, pm) in topic.partitions.iter().enumerate() {
                if pm.owner != self.opts.node_id {
                    continue;
                }
                if let Ok(partition) = i32::try_from(index) {
                    let tp = TopicPartition {
                        topic_id: topic.id,
                        partition,
                    };
                    acquired.insert(tp, pm.leader_epoch);
                }
            }
        }
    }

    /// The epoch `tp` was acquired at (see `Inner::acquired`); first seen owned now: its
    /// current epoch, captured from here on.
    pub(crate) fn acquired_epoch(&self, tp: TopicPartition, pm: &metadata::PartitionMeta) -> i32 {
        *lock(&self.acquired).entry(tp).or_insert(pm.leader_epoch)
    }

    /// The partition's state if it is loaded (background tasks use this to avoid creating state).
    pub(crate) fn loaded_partition(&self, tp: TopicPartition) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tp)
            .cloned()
    }

    pub(crate) fn loaded_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// `ordered` is told (or dropped, on an early error) once the batch's place in the partition is
    /// fixed: its offsets are assigned and it is queued in the WAL, or it is known to be a duplicate.
    async fn append(
        &self,
        tp: TopicPartition,
        mut batch: BytesMut,
        timestamp_type: TimestampType,
        mut ordered: Option<oneshot::Sender<()>>,
    ) -> Result<AppendResult> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let part = self.partition(tp)?;
        let header = BatchHeader::parse(&batch)?;
        if header.total_len() != batch.len() {
            return Err(BatchError::Malformed(format!(
                "batch is {} bytes but its header says {}",
                batch.len(),
                header.total_len()
            ))
            .into());
        }
        if header.last_offset_delta < 0 {
            return Err(BatchError::InvalidRecord("negative lastOffsetDelta".into()).into());
        }

        if let Some(slot) = &self.object_wal {
            // Taken after the partition: if the incarnation changes in between, the partition is
            // retired (poisoned) before the new one is installed, and the append is refused.
            let object_wal = slot.current();
            let permit = object_wal.reserve(batch.len()).await?;
            return self
                .append_object(
                    &object_wal,
                    part,
                    header,
                    batch,
                    timestamp_type,
                    ordered,
                    permit,
                )
                .await;
        }
        let Some(wal) = &self.wal else {
            return Err(Error::ShuttingDown);
        };
        // The epoch captured when this broker acquired the partition.
        let leader_epoch = part.leader_epoch;
        let guard = part.append_lock.lock().await;
        let placed = match assign_offsets(&part, &header, &mut batch, timestamp_type, leader_epoch)?
        {
            Assigned::Append(placed) => placed,
            Assigned::Duplicate(original) => {
                drop(guard);
                drop(ordered.take());
                return duplicate_result(&part, original).await;
            }
        };
        let Placed {
            base_offset,
            last_offset,
            max_timestamp,
            ..
        } = placed;
        let (record, stored) = wal_record::encode(tp, &batch);
        let (waiter, answer) = oneshot::channel();
        {
            let mut st = part.state();
            let lsn_floor = wal.end_lsn();
            st.producers.record(&header, base_offset);
            self.bound_producers(tp, &mut st.producers, header.producer_id);
            st.begin_append(
                base_offset,
                last_offset,
                max_timestamp,
                stored.len(),
                lsn_floor,
                waiter,
            );
        }
        let pending = match wal.submit(record).await {
            Ok(pending) => pending,
            Err(err) => {
                part.state().abort_append(base_offset);
                return Err(err.into());
            }
        };
        self.tail.insert(tp, base_offset, last_offset, stored);
        drop(guard);
        if let Some(ordered) = ordered.take() {
            let _ = ordered.send(());
        }

        let (_, wal_bytes) = part.completed(base_offset, pending.await);
        if wal_bytes >= self.opts.segment_bytes {
            self.writer_wake.notify_one();
        }
        placed.answered(answer).await
    }

    /// The S3 WAL twin of the file-WAL path in [`Inner::append`]: same checks and offset
    /// assignment, then the batch is queued for its lane's next WAL object; it is acknowledged once
    /// that object and every earlier one of the lane are stored (see `object_wal`).
    #[allow(clippy::too_many_arguments)]
    async fn append_object(
        &self,
        object_wal: &ObjectWal,
        part: Arc<Partition>,
        header: BatchHeader,
        mut batch: BytesMut,
        timestamp_type: TimestampType,
        mut ordered: Option<oneshot::Sender<()>>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<AppendResult> {
        let tp = part.tp;
        // The epoch captured when this broker acquired the partition.
        let leader_epoch = part.leader_epoch;
        let guard = part.append_lock.lock().await;
        let placed = match assign_offsets(&part, &header, &mut batch, timestamp_type, leader_epoch)?
        {
            Assigned::Append(placed) => placed,
            Assigned::Duplicate(original) => {
                drop(guard);
                drop(ordered.take());
                return duplicate_result(&part, original).await;
            }
        };
        let Placed {
            base_offset,
            last_offset,
            max_timestamp,
            ..
        } = placed;
        let stored = batch.freeze();
        let (waiter, answer) = oneshot::channel();
        {
            let mut st = part.state();
            st.producers.record(&header, base_offset);
            self.bound_producers(tp, &mut st.producers, header.producer_id);
            st.begin_append(
                base_offset,
                last_offset,
                max_timestamp,
                stored.len(),
                0,
                waiter,
            );
        }
        let pushed = object_wal.push(Pending {
            part: part.clone(),
            base_offset,
            bytes: stored.clone(),
            permit,
            idempotent: header.has_producer_id(),
            leader_epoch,
        });
        if let Err(err) = pushed {
            part.state().abort_append(base_offset);
            return Err(err);
        }
        self.tail.insert(tp, base_offset, last_offset, stored);
        drop(guard);
        if let Some(ordered) = ordered.take() {
            let _ = ordered.send(());
        }
        placed.answered(answer).await
    }

    async fn delete_records(&self, tp: TopicPartition, offset: i64) -> Result<i64> {
        let part = self.partition(tp)?;
        let (log_start, high_watermark) = part.offsets();
        // Kafka's DeleteRecords uses -1 for "up to the high watermark".
        let offset = if offset == -1 { high_watermark } else { offset };
        if offset < 0 || offset > high_watermark {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start,
                high_watermark,
            });
        }
        if offset <= log_start {
            return Ok(log_start);
        }
        let response = self
            .meta
            .propose(Command::AdvanceLogStart {
                tp,
                offset,
                now_ms: now_ms(),
                leader_epoch: part.leader_epoch,
            })
            .await?;
        match response {
            CommandResponse::LogStart(new_start) => Ok(part.advance_log_start(new_start)),
            CommandResponse::Rejected(rejection) => Err(rejection.into()),
            _ => Ok(part.advance_log_start(offset)),
        }
    }
}

/// Where a batch goes, fixed under the partition's append lock by [`assign_offsets`].
#[derive(Clone, Copy)]
struct Placed {
    base_offset: i64,
    last_offset: i64,
    log_start_offset: i64,
    /// Broker time stamped into a LogAppendTime batch, else -1.
    log_append_time_ms: i64,
    max_timestamp: i64,
}

impl Placed {
    /// The appender's answer once the partition reports the batch visible (or why it never is).
    async fn answered(
        self,
        answer: oneshot::Receiver<Result<(), wal::Error>>,
    ) -> Result<AppendResult> {
        match answer.await {
            Ok(Ok(())) => Ok(AppendResult {
                base_offset: self.base_offset,
                log_append_time_ms: self.log_append_time_ms,
                log_start_offset: self.log_start_offset,
            }),
            Ok(Err(err)) => Err(Error::Wal(err)),
            Err(_) => Err(Error::ShuttingDown),
        }
    }
}

enum Assigned {
    Append(Placed),
    /// A retry of an idempotent batch already placed at this original.
    Duplicate(metadata::ProducerBatchRecord),
}

/// The part of an append both WAL backends share, under the partition's append lock: refuse a
/// poisoned partition, check the producer sequence, take the next offsets, and rewrite
/// `baseOffset` (and for LogAppendTime the timestamp + CRC). Nothing is registered yet.
fn assign_offsets(
    part: &Partition,
    header: &BatchHeader,
    batch: &mut BytesMut,
    timestamp_type: TimestampType,
    leader_epoch: i32,
) -> Result<Assigned> {
    let (base_offset, log_start_offset, sequence) = {
        let st = part.state();
        if st.poisoned {
            return Err(Error::Wal(wal::Error::Poisoned));
        }
        (
            st.next_offset,
            st.log_start_offset,
            st.producers.check(header),
        )
    };
    if let SequenceCheck::Duplicate(original) = sequence? {
        return Ok(Assigned::Duplicate(original));
    }
    batch::set_base_offset(batch, base_offset);
    batch::set_partition_leader_epoch(batch, leader_epoch);
    let (log_append_time_ms, max_timestamp) = match timestamp_type {
        TimestampType::CreateTime => (-1, header.max_timestamp),
        TimestampType::LogAppendTime => {
            let now = now_ms();
            batch::set_log_append_time(batch, now);
            (now, now)
        }
    };
    Ok(Assigned::Append(Placed {
        base_offset,
        last_offset: base_offset + i64::from(header.last_offset_delta),
        log_start_offset,
        log_append_time_ms,
        max_timestamp,
    }))
}

/// The answer to a retried idempotent batch: its original offsets, once they are visible (the
/// original may still be in flight — a retry must not be acknowledged before the data is durable).
async fn duplicate_result(
    part: &Partition,
    original: metadata::ProducerBatchRecord,
) -> Result<AppendResult> {
    let deadline = tokio::time::Instant::now() + DUPLICATE_WAIT;
    let mut hw = part.hw_watch();
    loop {
        {
            let st = part.state();
            if st.high_watermark > original.last_offset {
                return Ok(AppendResult {
                    base_offset: original.base_offset,
                    log_append_time_ms: -1,
                    log_start_offset: st.log_start_offset,
                });
            }
            if st.poisoned {
                return Err(Error::Wal(wal::Error::Poisoned));
            }
        }
        match tokio::time::timeout_at(deadline, hw.changed()).await {
            Ok(Ok(())) => {}
            // Timed out or the partition went away: the client retries (retriable error).
            Ok(Err(_)) | Err(_) => return Err(Error::ShuttingDown),
        }
    }
}

impl LogStore {
    /// Opens the WAL, replays records not yet in segment objects (per the metadata index) and starts
    /// the background tasks (segment writer, retention, GC).
    pub async fn open(
        opts: StorageOptions,
        objects: Arc<dyn ObjectStore>,
        meta: MetadataClient,
    ) -> Result<LogStore> {
        let segments = Arc::new(SegmentReader::new(
            objects.clone(),
            opts.block_cache.clone(),
        ));
        let (wal, object_wal) = match &opts.object_wal {
            Some(object_opts) => {
                // Registered and every dead incarnation's tail indexed before anything is served.
                let incarnation = uuid::Uuid::new_v4();
                takeover::register_and_take_over(
                    &objects,
                    &meta,
                    &opts.cluster_id,
                    opts.node_id,
                    incarnation,
                    object_opts.lanes.max(1),
                    None,
                )
                .await?;
                let common = Arc::new(object_wal::Common::default());
                let wal = ObjectWal::start(
                    object_opts.clone(),
                    objects.clone(),
                    meta.clone(),
                    segments.clone(),
                    &opts.cluster_id,
                    incarnation,
                    common.clone(),
                );
                (
                    None,
                    Some(reincarnation::ObjectWalSlot::new(
                        object_opts.clone(),
                        common,
                        wal,
                    )),
                )
            }
            None => (Some(Wal::open(opts.wal.clone())?), None),
        };
        let inner = Arc::new(Inner {
            tail: TailCache::new(opts.tail_cache_bytes),
            segments: segments.clone(),
            opts,
            objects,
            meta,
            wal,
            object_wal,
            partitions: RwLock::new(HashMap::new()),
            dropped_topics: Mutex::new(HashSet::new()),
            acquired: Mutex::new(HashMap::new()),
            retention: Mutex::new(HashMap::new()),
            producer_snapshots: Mutex::new(HashMap::new()),
            writer_wake: Notify::new(),
            writer_passes: passes::Passes::default(),
            housekeeping_passes: passes::Passes::default(),
            cancel: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        inner.capture_owned_epochs();
        // Replay cannot await the object store: spilled producer snapshots are read first.
        if let Err(err) = producer_snapshots::preload(&inner).await {
            inner.close_wal().await;
            return Err(err);
        }
        // Replay reads the whole WAL with blocking file I/O: keep it off the async workers.
        let replay = {
            let inner = inner.clone();
            tokio::task::spawn_blocking(move || recovery::recover(&inner))
        };
        let recovered = match replay.await {
            Ok(Ok(stats)) => {
                recovery::record_epoch_starts(&inner, &stats).await;
                Ok(())
            }
            Ok(Err(err)) => Err(err),
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(_) => Err(Error::ShuttingDown),
        };
        let recovered = match recovered {
            Ok(()) => ownership::acquire_owned(&inner).await.map(|count| {
                tracing::info!(partitions = count, "partitions acquired");
            }),
            other => other,
        };
        if let Err(err) = recovered {
            // Do not leave the WAL writer running behind a failed open.
            inner.close_wal().await;
            return Err(err);
        }
        let writer = if inner.object_wal.is_some() {
            tokio::spawn(compaction::run(inner.clone(), inner.cancel.clone()))
        } else {
            tokio::spawn(segment_writer::run(inner.clone(), inner.cancel.clone()))
        };
        let housekeeping = tokio::spawn(housekeeping::run(inner.clone(), inner.cancel.clone()));
        let reincarnations = tokio::spawn(reincarnation::run(inner.clone(), inner.cancel.clone()));
        let acquire_release = tokio::spawn(ownership::run(inner.clone(), inner.cancel.clone()));
        lock(&inner.tasks).extend([writer, housekeeping, reincarnations, acquire_release]);
        Ok(LogStore { inner })
    }

    /// Assigns offsets to one validated batch (rewriting its `baseOffset`; for LogAppendTime also its
    /// max timestamp + CRC), writes it to the WAL and returns once it is durable.
    ///
    /// The work runs in its own task: if the caller stops waiting, the append still completes and
    /// its bookkeeping stays consistent.
    pub async fn append(
        &self,
        tp: TopicPartition,
        batch: BytesMut,
        timestamp_type: TimestampType,
    ) -> Result<AppendResult> {
        self.submit_append(tp, batch, timestamp_type).await.await
    }

    /// Like [`LogStore::append`], in two steps: the returned future resolves once the batch's place in
    /// the partition is fixed (offsets assigned, queued in the WAL in that order); awaiting the
    /// [`AppendTicket`] then waits for durability. A caller that must keep an order between appends
    /// (the requests of one Kafka connection) submits the next only after the previous is placed,
    /// while the durability waits overlap and share WAL group commits.
    pub async fn submit_append(
        &self,
        tp: TopicPartition,
        batch: BytesMut,
        timestamp_type: TimestampType,
    ) -> AppendTicket {
        let inner = self.inner.clone();
        let (ordered_tx, ordered_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            inner
                .append(tp, batch, timestamp_type, Some(ordered_tx))
                .await
        });
        // Told once placed; dropped unanswered when the append failed before that.
        let _ = ordered_rx.await;
        AppendTicket { task }
    }

    /// Reads whole batches starting with the one containing `offset`, up to about `max_bytes` (at least
    /// one batch is returned when any exists, as Kafka does). Reads never go past the high watermark.
    pub async fn read(
        &self,
        tp: TopicPartition,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        self.inner.read(tp, offset, max_bytes).await
    }

    pub fn offsets(&self, tp: TopicPartition) -> Result<PartitionOffsets> {
        let (log_start_offset, high_watermark) = self.inner.partition(tp)?.offsets();
        Ok(PartitionOffsets {
            log_start_offset,
            high_watermark,
        })
    }

    /// Earliest offset whose record timestamp is >= `timestamp`, with that timestamp; `None` past the end.
    pub async fn offset_for_timestamp(
        &self,
        tp: TopicPartition,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>> {
        self.inner.offset_for_timestamp(tp, timestamp).await
    }

    /// `(timestamp, offset)`: the largest timestamp in the partition and the offset of the first
    /// record that carries it (ListOffsets MAX_TIMESTAMP).
    pub async fn max_timestamp(&self, tp: TopicPartition) -> Result<Option<(i64, i64)>> {
        self.inner.max_timestamp(tp).await
    }

    /// Moves the log start offset to `offset` (DeleteRecords); returns the new low watermark.
    /// `-1` means the high watermark (as in Kafka's DeleteRecords); beyond it is `OffsetOutOfRange`.
    pub async fn delete_records(&self, tp: TopicPartition, offset: i64) -> Result<i64> {
        self.inner.delete_records(tp, offset).await
    }

    /// Changes whenever the partition's high watermark moves (long-poll fetches wait on this).
    pub fn hw_watch(&self, tp: TopicPartition) -> Result<tokio::sync::watch::Receiver<i64>> {
        Ok(self.inner.partition(tp)?.hw_watch())
    }

    /// Counters of the file WAL since open (metrics pages, benchmarks); zeros with the S3 WAL.
    pub fn wal_stats(&self) -> wal::WalStats {
        self.inner.wal.as_ref().map(Wal::stats).unwrap_or_default()
    }

    /// Counters of the block cache (catch-up reads from objects) since open.
    pub fn block_cache_stats(&self) -> block_cache::BlockCacheStats {
        self.inner.segments.stats()
    }

    /// Counters of the S3 WAL since open; `None` with the file WAL.
    /// S3 WAL: why this incarnation acknowledges nothing more, once a taker sealed one of its
    /// lanes (another process took its partitions over).
    pub fn wal_sealed(&self) -> Option<String> {
        self.inner
            .object_wal
            .as_ref()
            .and_then(|slot| slot.common.sealed())
    }

    /// Resolves once [`LogStore::wal_sealed`] has a reason; never with the file WAL.
    pub async fn wait_wal_sealed(&self) -> String {
        match &self.inner.object_wal {
            Some(slot) => slot.common.wait_sealed().await,
            None => std::future::pending().await,
        }
    }

    pub fn object_wal_stats(&self) -> Option<ObjectWalStats> {
        self.inner
            .object_wal
            .as_ref()
            .map(|slot| slot.common.stats())
    }

    /// Sets the retention of a topic (called when its configs are created or changed).
    pub fn set_retention(&self, topic_id: uuid::Uuid, retention: Retention) {
        lock(&self.inner.retention).insert(topic_id, retention);
    }

    /// Forgets the in-memory state of a deleted topic (its objects are GC'd via metadata).
    pub fn drop_topic(&self, topic_id: uuid::Uuid) {
        lock(&self.inner.dropped_topics).insert(topic_id);
        self.inner
            .partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|tp, _| tp.topic_id != topic_id);
        self.inner.tail.remove_topic(topic_id);
        lock(&self.inner.retention).remove(&topic_id);
        lock(&self.inner.acquired).retain(|tp, _| tp.topic_id != topic_id);
        producer_snapshots::forget(&self.inner, |tp| tp.topic_id == topic_id);
    }

    /// Stops background tasks and closes the WAL (everything acknowledged is already durable).
    pub async fn shutdown(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.cancel.cancel();
        let tasks: Vec<JoinHandle<()>> = lock(&self.inner.tasks).drain(..).collect();
        for task in tasks {
            if let Err(err) = task.await {
                if err.is_panic() {
                    tracing::error!("storage background task panicked: {err}");
                }
            }
        }
        if let Some(wal) = &self.inner.wal {
            wal.close().await?;
        }
        if let Some(slot) = &self.inner.object_wal {
            slot.current().close(OBJECT_WAL_DRAIN).await;
        }
        Ok(())
    }
}

#[cfg(test)]
impl LogStore {
    /// Runs one round of the segment writer (file WAL) or of compaction (S3 WAL) — the loop's
    /// own, after whatever it is doing now — and returns once it is done. What is due then
    /// (by size or by age) is written; one round writes up to 16 segments per partition, and
    /// compaction rewrites the first due run of each partition.
    pub(crate) async fn run_writer_pass(&self) {
        self.inner.writer_passes.run_one().await;
    }

    /// Runs one housekeeping pass (producer expiry, retention, GC; the S3 WAL lane sweep when its
    /// interval has passed) and returns once it is done.
    pub(crate) async fn run_housekeeping_pass(&self) {
        self.inner.housekeeping_passes.run_one().await;
    }
}

/// How long a graceful shutdown waits for the S3 WAL to store and index what is queued.
const OBJECT_WAL_DRAIN: Duration = Duration::from_secs(10);

impl Inner {
    /// Closes whichever WAL is open (after a failed open).
    async fn close_wal(&self) {
        if let Some(wal) = &self.wal {
            let _ = wal.close().await;
        }
        if let Some(slot) = &self.object_wal {
            slot.current().close(OBJECT_WAL_DRAIN).await;
        }
    }
}
