//! The S3 WAL (`--wal object`): this broker's pending batches are group-committed into **WAL
//! objects**, so nothing that matters is kept on local disk, and a produce is acknowledged after
//! one PUT.
//!
//! This process is an **incarnation** (a random id, registered in metadata — and so in the bucket
//! log — before anything is acknowledged; see `takeover`). Partitions are hashed onto a few
//! **lanes**; each lane is a sequence of objects `{cluster}/wal/{incarnation}/{lane}/{seq:020}`
//! (layout: `wal_object`), so one slow PUT stalls only its lane's acks.
//!
//! Life of a batch:
//! 1. `reserve` takes its size from a byte budget (`max_unflushed_bytes`); when the object store is
//!    slow the budget runs out and producers wait here (backpressure), the broker does not grow.
//! 2. `push` queues it on its partition's lane (the caller holds the partition's append lock, so
//!    per partition the queue is in offset order).
//! 3. The lane's flusher cuts an object once `flush_bytes` are queued, or `linger` after the first
//!    queued batch — only when a PUT slot is free (objects grow under load instead of multiplying)
//!    and the lane has fewer than `max_unindexed_objects` stored objects awaiting the index (the
//!    bound on what a taker must read after a crash).
//! 4. An upload task lays the object out (one chunk per partition, then the manifest) and
//!    **creates** it at the next seq of the lane, retrying until it is stored. A create refused
//!    because the key exists is confirmed with a GET: our bytes → stored (an earlier attempt
//!    landed); anything else is a tombstone — a taker sealed the lane: this process is a zombie.
//! 5. The lane's acker **acknowledges** an object once it and every earlier object of the lane are
//!    stored (acks stay in offset order per partition), after listing its chunks as *unindexed* on
//!    their partitions so reads find them.
//! 6. Off the latency path, the indexer adds acknowledged objects to the metadata index in
//!    batches (`AddSegments` with the lanes' marks), then drops them from the unindexed lists.
//!
//! A crash leaves stored, acknowledged, unindexed objects: the next incarnation (or another
//! broker) seals the lanes and indexes them before it serves (`takeover`). A lane whose seq is
//! sealed never acknowledges again, so a paused process that resumes after a takeover loses
//! nothing it acknowledged and acknowledges nothing more.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use metadata::{
    Command, CommandResponse, LaneMark, MetadataClient, Rejection, SegmentEntry, TopicPartition,
};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::partition::Partition;
use crate::segment::SegmentBuilder;
use crate::segment_reader::SegmentReader;
use crate::wal_object::{self, Manifest};
use crate::{lock, now_ms, Error, Result};

/// Settings of the S3 WAL.
#[derive(Debug, Clone)]
pub struct ObjectWalOptions {
    /// How long the first queued batch may wait for company before its object is cut.
    pub linger: Duration,
    /// An object is cut as soon as this many bytes are queued.
    pub flush_bytes: usize,
    /// Upper bound of one WAL object (when PUTs are slow, objects grow up to this).
    pub max_object_bytes: usize,
    /// PUTs of WAL objects in flight at once (all lanes together).
    pub max_inflight_puts: usize,
    /// Bytes accepted but not yet durable; producers wait beyond this (backpressure).
    pub max_unflushed_bytes: usize,
    /// Lanes (independent object sequences); partitions are hashed onto them.
    pub lanes: u32,
    /// Stored objects per lane not yet indexed; beyond it producers wait. Bounds what a taker
    /// reads after a crash (so takeover time) and what reads serve from outside the index.
    pub max_unindexed_objects: usize,
    /// How often housekeeping sweeps the lanes of incarnations for objects that will never be
    /// indexed (above a seal) or left the index without passing through GC.
    pub sweep_interval: Duration,
    /// A WAL object not stored after this long is given up: its seq is tombstoned, its batches
    /// and every later one of the lane fail with a retriable error, and the store continues
    /// under a new incarnation (see `reincarnation`).
    pub put_give_up: Duration,
}

impl Default for ObjectWalOptions {
    fn default() -> Self {
        ObjectWalOptions {
            linger: Duration::from_millis(5),
            flush_bytes: 4 * 1024 * 1024,
            max_object_bytes: 16 * 1024 * 1024,
            max_inflight_puts: 4,
            max_unflushed_bytes: 64 * 1024 * 1024,
            // One lane measured best at 2,000 records/s on 2 cores (benches/RESULTS.md: p99 0.61×
            // and 0.39× the PUTs of four lanes); more lanes keep one slow PUT from stalling
            // every partition's acks.
            lanes: 1,
            max_unindexed_objects: 64,
            sweep_interval: Duration::from_secs(600),
            // A producer's request (30 s by default in Kafka clients) has long timed out by then;
            // a 10 s blackout is ridden out without giving anything up.
            put_give_up: Duration::from_secs(30),
        }
    }
}

/// Counters since open (benchmarks, metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectWalStats {
    /// WAL objects written (successful PUTs).
    pub objects: u64,
    /// Bytes in those objects.
    pub bytes: u64,
    /// PUT attempts that failed and were retried.
    pub put_retries: u64,
    /// `AddSegments` commits (each indexes one or more objects).
    pub commits: u64,
    /// WAL objects given up (not stored within `put_give_up`): each started a new incarnation.
    pub given_up: u64,
}

/// What every incarnation of one store shares: the fence and the counters.
#[derive(Debug, Default)]
pub(crate) struct Common {
    /// Set once a lane was found sealed by another incarnation: nothing more is accepted, by
    /// this incarnation or any later one of this process (it is a zombie).
    pub(crate) sealed: tokio::sync::watch::Sender<Option<String>>,
    objects_written: AtomicU64,
    bytes_written: AtomicU64,
    put_retries: AtomicU64,
    commits: AtomicU64,
    pub(crate) given_up: AtomicU64,
}

impl Common {
    pub(crate) fn stats(&self) -> ObjectWalStats {
        ObjectWalStats {
            objects: self.objects_written.load(Ordering::Relaxed),
            bytes: self.bytes_written.load(Ordering::Relaxed),
            put_retries: self.put_retries.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            given_up: self.given_up.load(Ordering::Relaxed),
        }
    }

    /// Why this process acknowledges nothing more, once a taker sealed one of its lanes.
    pub(crate) fn sealed(&self) -> Option<String> {
        self.sealed.borrow().clone()
    }

    /// Resolves with the reason once a taker sealed one of this process's lanes.
    pub(crate) async fn wait_sealed(&self) -> String {
        first_reason(&self.sealed).await
    }
}

/// Resolves with the reason once `reason` holds one (never while it holds none).
async fn first_reason(reason: &tokio::sync::watch::Sender<Option<String>>) -> String {
    let mut watch = reason.subscribe();
    let found = match watch.wait_for(Option::is_some).await {
        Ok(found) => found.clone(),
        // `reason` is borrowed, so its sender outlives this wait.
        Err(_) => None,
    };
    match found {
        Some(found) => found,
        None => std::future::pending().await,
    }
}

const PUT_BACKOFF_START: Duration = Duration::from_millis(50);
const PUT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// One PUT attempt that takes longer is abandoned and retried (it may still land: the confirming
/// GET then finds our bytes).
const PUT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// One batch waiting for its object.
pub(crate) struct Pending {
    pub(crate) part: Arc<Partition>,
    pub(crate) base_offset: i64,
    pub(crate) bytes: Bytes,
    pub(crate) permit: OwnedSemaphorePermit,
    /// The batch carries a producer id (idempotent producer).
    pub(crate) idempotent: bool,
    /// The partition's leader epoch the batch was appended under (its chunk's index entry
    /// carries it, so a write of a deposed owner is rejected).
    pub(crate) leader_epoch: i32,
}

#[derive(Default)]
struct Queue {
    batches: Vec<Pending>,
    bytes: usize,
    first_at: Option<Instant>,
}

/// How an object's create ended.
enum Outcome {
    Stored,
    /// The key holds another writer's object (a tombstone): the lane is sealed.
    Sealed(String),
    /// Not stored within `put_give_up`: this incarnation tombstoned the seq itself.
    GaveUp(String),
    /// Given up (shutdown).
    Aborted,
}

/// A WAL object whose create has ended.
struct Uploaded {
    seq: u64,
    key: String,
    outcome: Outcome,
    /// Per chunk: its index entry and the batches it holds.
    chunks: Vec<(SegmentEntry, Vec<Pending>)>,
    /// Held until the object is indexed (bounds the lane's unindexed objects).
    unindexed_permit: OwnedSemaphorePermit,
}

/// An acknowledged object, for the indexer.
struct Acked {
    lane: u32,
    seq: u64,
    key: String,
    chunks: Vec<(SegmentEntry, Arc<Partition>)>,
    unindexed_permit: OwnedSemaphorePermit,
}

struct Lane {
    queue: Mutex<Queue>,
    wake: Notify,
    unindexed: Arc<Semaphore>,
    /// Set once the lane gave an object up: it cuts nothing more.
    broken: std::sync::atomic::AtomicBool,
}

struct Shared {
    opts: ObjectWalOptions,
    objects: Arc<dyn ObjectStore>,
    meta: MetadataClient,
    segments: Arc<SegmentReader>,
    cluster_id: String,
    incarnation: Uuid,
    lanes: Vec<Lane>,
    budget: Arc<Semaphore>,
    put_slots: Arc<Semaphore>,
    /// Stops accepting and makes the flushers drain (graceful shutdown).
    draining: CancellationToken,
    /// Gives up on whatever is left (PUT retries, index waits).
    abort: CancellationToken,
    /// The fence and counters, shared with the store's other incarnations.
    common: Arc<Common>,
    /// Set once a lane gave an object up: nothing more is accepted, and the store continues
    /// under a new incarnation.
    failed: tokio::sync::watch::Sender<Option<String>>,
}

/// Handle to the S3 WAL of one [`crate::LogStore`].
pub(crate) struct ObjectWal {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The lane of a partition (stable for the life of an incarnation).
pub(crate) fn lane_of(tp: TopicPartition, lanes: u32) -> u32 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    tp.hash(&mut hasher);
    (hasher.finish() % u64::from(lanes.max(1))) as u32
}

impl ObjectWal {
    /// Starts writing the lanes of `incarnation`, which must already be registered in metadata
    /// (and every earlier incarnation's lanes taken over).
    pub(crate) fn start(
        opts: ObjectWalOptions,
        objects: Arc<dyn ObjectStore>,
        meta: MetadataClient,
        segments: Arc<SegmentReader>,
        cluster_id: &str,
        incarnation: Uuid,
        common: Arc<Common>,
    ) -> ObjectWal {
        let budget = opts.max_unflushed_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let lane_count = opts.lanes.max(1);
        let lanes = (0..lane_count)
            .map(|_| Lane {
                queue: Mutex::new(Queue::default()),
                wake: Notify::new(),
                unindexed: Arc::new(Semaphore::new(opts.max_unindexed_objects.max(1))),
                broken: std::sync::atomic::AtomicBool::new(false),
            })
            .collect();
        let shared = Arc::new(Shared {
            budget: Arc::new(Semaphore::new(budget)),
            put_slots: Arc::new(Semaphore::new(opts.max_inflight_puts.max(1))),
            opts,
            objects,
            meta,
            segments,
            cluster_id: cluster_id.to_owned(),
            incarnation,
            lanes,
            draining: CancellationToken::new(),
            abort: CancellationToken::new(),
            common,
            failed: tokio::sync::watch::Sender::new(None),
        });
        let (acked_tx, acked_rx) = mpsc::unbounded_channel();
        let mut tasks = vec![tokio::spawn(indexer(shared.clone(), acked_rx))];
        for lane in 0..lane_count {
            let (uploaded_tx, uploaded_rx) = mpsc::unbounded_channel();
            tasks.push(tokio::spawn(flusher(shared.clone(), lane, uploaded_tx)));
            tasks.push(tokio::spawn(acker(
                shared.clone(),
                lane,
                uploaded_rx,
                acked_tx.clone(),
            )));
        }
        ObjectWal {
            shared,
            tasks: Mutex::new(tasks),
        }
    }

    /// Takes `len` bytes of the unflushed budget (waits while the object store is behind).
    pub(crate) async fn reserve(&self, len: usize) -> Result<OwnedSemaphorePermit> {
        let max = self
            .shared
            .opts
            .max_unflushed_bytes
            .clamp(1, Semaphore::MAX_PERMITS);
        // A batch larger than the whole budget still goes through, alone.
        let permits = u32::try_from(len.clamp(1, max)).unwrap_or(u32::MAX);
        tokio::select! {
            permit = self.shared.budget.clone().acquire_many_owned(permits) => {
                permit.map_err(|_| Error::ShuttingDown)
            }
            _ = self.shared.draining.cancelled() => Err(Error::ShuttingDown),
        }
    }

    /// Bytes of the unflushed budget not taken now (tests of backpressure).
    #[cfg(test)]
    pub(crate) fn budget_available(&self) -> usize {
        self.shared.budget.available_permits()
    }

    /// Queues a batch whose offsets are assigned (`part.state().begin_append` was called). Its
    /// partition learns the outcome through `Partition::completed_at`.
    pub(crate) fn push(&self, pending: Pending) -> Result<()> {
        if self.shared.draining.is_cancelled()
            || self.shared.common.sealed.borrow().is_some()
            || self.shared.failed.borrow().is_some()
        {
            return Err(Error::ShuttingDown);
        }
        let lane = &self.shared.lanes[lane_of(pending.part.tp, self.shared.opts.lanes) as usize];
        let mut queue = lock(&lane.queue);
        // Checked under the queue lock: a lane that gives up sets it under the same lock while
        // it fails what is queued, so nothing is left behind in a queue nobody cuts.
        if lane.broken.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let was_empty = queue.batches.is_empty();
        queue.bytes += pending.bytes.len();
        queue.batches.push(pending);
        if was_empty {
            queue.first_at = Some(Instant::now());
        }
        let due = was_empty || queue.bytes >= self.shared.opts.flush_bytes;
        drop(queue);
        if due {
            lane.wake.notify_one();
        }
        Ok(())
    }

    pub(crate) fn incarnation(&self) -> Uuid {
        self.shared.incarnation
    }

    /// Resolves with the reason once a lane of this incarnation gave an object up.
    pub(crate) async fn wait_failed(&self) -> String {
        first_reason(&self.shared.failed).await
    }

    /// Flushes, acknowledges and indexes what is queued (bounded by `grace`), then stops. Batches
    /// still not durable after that fail with `Closed` (never acknowledged).
    pub(crate) async fn close(&self, grace: Duration) {
        self.shared.draining.cancel();
        for lane in &self.shared.lanes {
            lane.wake.notify_one();
        }
        let tasks: Vec<_> = lock(&self.tasks).drain(..).collect();
        let joined = async {
            for task in tasks {
                if let Err(err) = task.await {
                    if err.is_panic() {
                        tracing::error!("S3 WAL task panicked: {err}");
                    }
                }
            }
        };
        tokio::pin!(joined);
        if tokio::time::timeout(grace, &mut joined).await.is_err() {
            tracing::warn!(
                ?grace,
                "S3 WAL did not drain in time; giving up on unflushed batches"
            );
            self.shared.abort.cancel();
            joined.await;
        }
        // Anything still queued (a flusher stopped early) is answered.
        for lane in &self.shared.lanes {
            let left = std::mem::take(&mut lock(&lane.queue).batches);
            fail(left, || wal::Error::Closed);
        }
    }
}

/// Answers batches that will never become durable.
fn fail(batches: Vec<Pending>, error: impl Fn() -> wal::Error) {
    for pending in batches {
        pending.part.completed_at(pending.base_offset, Err(error()));
    }
}

/// Cuts one lane's objects from its queue and starts their uploads, seq 1, 2, … in cut order.
async fn flusher(shared: Arc<Shared>, lane: u32, uploaded: mpsc::UnboundedSender<Uploaded>) {
    let me = &shared.lanes[lane as usize];
    let mut seq = 0u64;
    loop {
        // Wait until something is due: enough bytes, linger expired, or draining.
        loop {
            if me.broken.load(Ordering::Acquire) {
                return;
            }
            let (bytes, first_at) = {
                let queue = lock(&me.queue);
                (queue.bytes, queue.first_at)
            };
            let draining = shared.draining.is_cancelled();
            if draining && first_at.is_none() {
                return;
            }
            if bytes >= shared.opts.flush_bytes || draining {
                break;
            }
            match first_at {
                Some(first) => {
                    let due = first + shared.opts.linger;
                    if Instant::now() >= due {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = me.wake.notified() => {}
                        _ = shared.draining.cancelled() => {}
                    }
                }
                None => {
                    tokio::select! {
                        _ = me.wake.notified() => {}
                        _ = shared.draining.cancelled() => {}
                    }
                }
            }
        }
        // Room for one more unindexed object, and a free PUT slot; meanwhile the queue keeps
        // filling (bigger objects under load).
        let unindexed_permit = tokio::select! {
            permit = me.unindexed.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = shared.abort.cancelled() => return,
        };
        let slot = tokio::select! {
            slot = shared.put_slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            _ = shared.abort.cancelled() => return,
        };
        if me.broken.load(Ordering::Acquire) {
            return;
        }
        let batches = take_object(&shared, me);
        if batches.is_empty() {
            continue;
        }
        seq += 1;
        let shared = shared.clone();
        let uploaded = uploaded.clone();
        tokio::spawn(async move {
            let result = upload(&shared, lane, seq, batches, unindexed_permit).await;
            drop(slot);
            // The acker outlives the flusher; a send only fails after an abort.
            let _ = uploaded.send(result);
        });
    }
}

/// Takes whole batches from the front of a lane's queue, up to `max_object_bytes` (at least one).
fn take_object(shared: &Shared, lane: &Lane) -> Vec<Pending> {
    let mut queue = lock(&lane.queue);
    let mut total = 0usize;
    let count = queue
        .batches
        .iter()
        .take_while(|p| {
            let take = total == 0 || total + p.bytes.len() <= shared.opts.max_object_bytes;
            total += p.bytes.len();
            take
        })
        .count();
    let taken: Vec<Pending> = queue.batches.drain(..count).collect();
    queue.bytes -= taken.iter().map(|p| p.bytes.len()).sum::<usize>();
    queue.first_at = if queue.batches.is_empty() {
        None
    } else {
        // What is left was queued while this object waited for a slot: it is due at once.
        queue.first_at.map(|_| Instant::now() - shared.opts.linger)
    };
    taken
}

/// Lays out one WAL object and creates it (retrying until it is stored, found sealed, or the WAL
/// aborts).
async fn upload(
    shared: &Shared,
    lane: u32,
    seq: u64,
    batches: Vec<Pending>,
    unindexed_permit: OwnedSemaphorePermit,
) -> Uploaded {
    let key = wal_object::object_key(&shared.cluster_id, shared.incarnation, lane, seq);
    // Chunks in partition order; inside a partition the queue (= offset) order is kept.
    let mut by_partition: BTreeMap<TopicPartition, Vec<Pending>> = BTreeMap::new();
    for pending in batches {
        by_partition
            .entry(pending.part.tp)
            .or_default()
            .push(pending);
    }
    let mut body = BytesMut::new();
    let mut chunks = Vec::with_capacity(by_partition.len());
    let created_ms = now_ms();
    for (tp, list) in by_partition {
        let position = body.len() as u64;
        let mut builder = SegmentBuilder::with_base_position(position);
        let mut bad = None;
        for pending in &list {
            if let Err(err) = builder.push(pending.bytes.clone()) {
                bad = Some(err);
                break;
            }
        }
        let built = match (bad, builder.finish()) {
            (None, Some(built)) => built,
            (bad, _) => {
                // Batches were validated on the way in; this is a bug, not bad input.
                tracing::error!(?tp, error = ?bad, "batches do not form a WAL chunk");
                fail(list, || wal::Error::Poisoned);
                continue;
            }
        };
        let footer_len = built.object_len() - built.data_len;
        let segment = metadata::SegmentRef {
            key: key.clone(),
            base_offset: built.footer.base_offset,
            end_offset: built.footer.end_offset,
            data_start: position,
            data_len: built.data_len,
            min_timestamp: built.min_timestamp,
            max_timestamp: built.max_timestamp,
            created_ms,
            footer_len,
            producer_batches: list.iter().any(|p| p.idempotent),
        };
        // The oldest epoch among the chunk's batches: a chunk straddling a bump is refused
        // rather than indexed under an epoch some of it was not written under.
        let leader_epoch = list.iter().map(|p| p.leader_epoch).min().unwrap_or(-1);
        // Later reads of this chunk (after the tail cache let go of it) skip the footer GET.
        shared.segments.remember(&key, built.footer.clone());
        for chunk in built.chunks {
            body.extend_from_slice(&chunk);
        }
        chunks.push((
            SegmentEntry {
                tp,
                leader_epoch,
                segment,
            },
            list,
        ));
    }
    let manifest = Manifest {
        incarnation: shared.incarnation,
        lane,
        seq,
        sealed_by: None,
        entries: chunks.iter().map(|(entry, _)| entry.clone()).collect(),
    };
    body.extend_from_slice(&wal_object::manifest_tail(&manifest));
    let body = body.freeze();
    let outcome = create_until_stored(shared, lane, seq, &key, body.clone()).await;
    if matches!(outcome, Outcome::Stored) {
        shared
            .common
            .objects_written
            .fetch_add(1, Ordering::Relaxed);
        shared
            .common
            .bytes_written
            .fetch_add(body.len() as u64, Ordering::Relaxed);
    }
    Uploaded {
        seq,
        key,
        outcome,
        chunks,
        unindexed_permit,
    }
}

/// Creates `body` at `key` until it is stored, the key turns out to hold another writer's object
/// (a tombstone: sealed), or the WAL aborts. Always the same key and bytes, so an earlier attempt
/// that landed after all (a retried or abandoned request) is recognised as ours. The object store
/// client retries transient errors itself; this loop covers longer outages (a blackout), with
/// exponential backoff and jitter.
///
/// Not stored within `put_give_up`: the seq is tombstoned by this incarnation itself (create-if-
/// absent as well), so an attempt still in flight somewhere can never land after it; the object
/// is given up. If our own object wins that race after all, it is stored.
async fn create_until_stored(
    shared: &Shared,
    lane: u32,
    seq: u64,
    key: &str,
    body: Bytes,
) -> Outcome {
    let give_up_at = Instant::now() + shared.opts.put_give_up;
    let data = match create_or_read(shared, key, body.clone(), Some(give_up_at)).await {
        Created::Stored => return Outcome::Stored,
        Created::Aborted => return Outcome::Aborted,
        Created::Found(found) if found == body => return Outcome::Stored,
        Created::Found(found) => return sealed_outcome(key, &found),
        Created::GaveUp(error) => error,
    };
    tracing::error!(
        key,
        error = data,
        give_up = ?shared.opts.put_give_up,
        "WAL object not stored in time; tombstoning its seq and starting a new incarnation"
    );
    let stone = wal_object::tombstone(shared.incarnation, lane, seq, shared.incarnation);
    match create_or_read(shared, key, stone.clone(), None).await {
        Created::Stored => Outcome::GaveUp(format!("{key} not stored: {data}")),
        Created::Aborted => Outcome::Aborted,
        // The object landed after all (an attempt that was still in flight): it is stored.
        Created::Found(found) if found == body => Outcome::Stored,
        // Our own tombstone, from an attempt whose answer was lost.
        Created::Found(found) if found == stone => {
            Outcome::GaveUp(format!("{key} not stored: {data}"))
        }
        Created::Found(found) => sealed_outcome(key, &found),
        Created::GaveUp(_) => Outcome::Aborted,
    }
}

fn sealed_outcome(key: &str, found: &[u8]) -> Outcome {
    let by = wal_object::parse(found)
        .ok()
        .and_then(|manifest| manifest.sealed_by)
        .map_or_else(|| "an unknown writer".to_owned(), |id| id.to_string());
    Outcome::Sealed(format!("{key} was sealed by {by}"))
}

/// How one create-if-absent loop ended.
enum Created {
    Stored,
    /// The key already holds these bytes (ours from an earlier attempt, or another writer's).
    Found(Bytes),
    /// `give_up_at` passed; the last error.
    GaveUp(String),
    Aborted,
}

/// Creates `body` at `key`, retrying until it is stored, the key is found taken (then read), the
/// deadline passes, or the WAL aborts.
async fn create_or_read(
    shared: &Shared,
    key: &str,
    body: Bytes,
    give_up_at: Option<Instant>,
) -> Created {
    let path = ObjectPath::from(key);
    let mut delay = PUT_BACKOFF_START;
    let mut attempt = 1u32;
    loop {
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let put = shared
            .objects
            .put_opts(&path, PutPayload::from_bytes(body.clone()), options);
        // One attempt never outlasts the deadline.
        let attempt_timeout = give_up_at.map_or(PUT_ATTEMPT_TIMEOUT, |at| {
            PUT_ATTEMPT_TIMEOUT.min(at.saturating_duration_since(Instant::now()))
        });
        let result = tokio::select! {
            result = tokio::time::timeout(attempt_timeout, put) => result,
            _ = shared.abort.cancelled() => return Created::Aborted,
        };
        let error = match result {
            Ok(Ok(_)) => return Created::Stored,
            Ok(Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            )) => {
                let read = shared.objects.get(&path);
                let found = tokio::select! {
                    found = async { read.await?.bytes().await } => found,
                    _ = shared.abort.cancelled() => return Created::Aborted,
                };
                match found {
                    Ok(found) => return Created::Found(found),
                    // Reported taken but not there (or unreadable for now): create again.
                    Err(err) => format!("create refused, then GET failed: {err}"),
                }
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("timed out after {attempt_timeout:?}"),
        };
        shared.common.put_retries.fetch_add(1, Ordering::Relaxed);
        if give_up_at.is_some_and(|at| Instant::now() >= at) {
            return Created::GaveUp(error);
        }
        if attempt == 1 || attempt.is_power_of_two() {
            tracing::warn!(key, attempt, error, "WAL object create failed; retrying");
        }
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        let mut pause = delay.mul_f64(jitter);
        if let Some(at) = give_up_at {
            pause = pause.min(at.saturating_duration_since(Instant::now()));
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shared.abort.cancelled() => return Created::Aborted,
        }
        delay = (delay * 2).min(PUT_BACKOFF_MAX);
        attempt = attempt.saturating_add(1);
    }
}

/// Acknowledges one lane's objects in seq order: an object once it and every earlier one are
/// stored. After the first object that is not (sealed by a taker, or given up at shutdown),
/// nothing more of the lane is ever acknowledged.
async fn acker(
    shared: Arc<Shared>,
    lane: u32,
    mut uploaded: mpsc::UnboundedReceiver<Uploaded>,
    acked: mpsc::UnboundedSender<Acked>,
) {
    let mut ready: HashMap<u64, Uploaded> = HashMap::new();
    let mut next = 1u64;
    let mut broken = false;
    while let Some(object) = uploaded.recv().await {
        ready.insert(object.seq, object);
        while let Some(object) = ready.remove(&next) {
            next += 1;
            if broken {
                fail_object(object, || wal::Error::Closed);
                continue;
            }
            match object.outcome {
                Outcome::Stored => acknowledge(lane, object, &acked),
                Outcome::Sealed(ref reason) => {
                    tracing::error!(
                        lane,
                        seq = object.seq,
                        reason,
                        "FENCED: a taker sealed this broker's S3 WAL lane; nothing more is \
                         acknowledged"
                    );
                    shared.common.sealed.send_if_modified(|sealed| {
                        let first = sealed.is_none();
                        if first {
                            *sealed = Some(reason.clone());
                        }
                        first
                    });
                    broken = true;
                    fail_object(object, || wal::Error::Closed);
                }
                Outcome::GaveUp(ref reason) => {
                    broken = true;
                    give_up_lane(&shared, lane, reason);
                    fail_object(object, || wal::Error::Closed);
                }
                Outcome::Aborted => {
                    broken = true;
                    fail_object(object, || wal::Error::Closed);
                }
            }
        }
    }
    // Objects behind a seq that never ended (only after an abort) are never acknowledged.
    for (_, object) in ready.drain() {
        fail_object(object, || wal::Error::Closed);
    }
}

/// A lane gave an object up: it accepts and cuts nothing more (what is queued fails, retriable),
/// and the store is told to continue under a new incarnation.
fn give_up_lane(shared: &Shared, lane: u32, reason: &str) {
    shared.common.given_up.fetch_add(1, Ordering::Relaxed);
    shared.failed.send_if_modified(|failed| {
        let first = failed.is_none();
        if first {
            *failed = Some(reason.to_owned());
        }
        first
    });
    let me = &shared.lanes[lane as usize];
    let queued = {
        let mut queue = lock(&me.queue);
        me.broken.store(true, Ordering::Release);
        queue.bytes = 0;
        queue.first_at = None;
        std::mem::take(&mut queue.batches)
    };
    fail(queued, || wal::Error::Closed);
    me.wake.notify_one();
}

fn fail_object(object: Uploaded, error: impl Fn() -> wal::Error + Copy) {
    for (_, list) in object.chunks {
        fail(list, error);
    }
}

/// Makes an object's batches visible and acknowledges them: first its chunks are listed as
/// unindexed on their partitions (so a reader that sees the new high watermark finds the data),
/// then the batches complete in offset order.
fn acknowledge(lane: u32, object: Uploaded, acked: &mpsc::UnboundedSender<Acked>) {
    let mut chunks = Vec::with_capacity(object.chunks.len());
    for (entry, list) in object.chunks {
        let Some(part) = list.first().map(|p| p.part.clone()) else {
            continue;
        };
        part.state().unindexed.push(entry.segment.clone());
        for pending in list {
            pending.part.completed_at(pending.base_offset, Ok(None));
            drop(pending.permit);
        }
        chunks.push((entry, part));
    }
    // The indexer outlives the ackers; a send only fails after an abort.
    let _ = acked.send(Acked {
        lane,
        seq: object.seq,
        key: object.key,
        chunks,
        unindexed_permit: object.unindexed_permit,
    });
}

/// Indexes acknowledged objects in batches: one `AddSegments` (per `metadata::ENTRIES_PER_COMMAND`) for
/// every object acknowledged by then, carrying the lanes' marks.
async fn indexer(shared: Arc<Shared>, mut acked: mpsc::UnboundedReceiver<Acked>) {
    // Lanes with an object left out of the index: their marks never move again in this process
    // (a later mark would pass that object, and the next start would not index it).
    let mut frozen: HashSet<u32> = HashSet::new();
    while let Some(first) = acked.recv().await {
        let mut group = vec![first];
        while let Ok(more) = acked.try_recv() {
            group.push(more);
        }
        index(&shared, group, &mut frozen).await;
    }
}

async fn index(shared: &Shared, group: Vec<Acked>, frozen: &mut HashSet<u32>) {
    let mut marks: BTreeMap<u32, u64> = BTreeMap::new();
    let mut entries = Vec::new();
    for object in &group {
        if !frozen.contains(&object.lane) {
            let mark = marks.entry(object.lane).or_insert(0);
            *mark = (*mark).max(object.seq);
        }
        entries.extend(object.chunks.iter().map(|(entry, _)| entry.clone()));
    }
    let marks: Vec<LaneMark> = marks
        .into_iter()
        .map(|(lane, through)| LaneMark {
            incarnation: shared.incarnation,
            lane,
            through,
        })
        .collect();
    let started = Instant::now();
    let outcome = propose_until_persisted(shared, &entries, marks).await;
    tracing::debug!(
        objects = group.len(),
        entries = entries.len(),
        commit_ms = ?started.elapsed(),
        "S3 WAL objects indexed"
    );
    shared.common.commits.fetch_add(1, Ordering::Relaxed);
    let results = match outcome {
        Ok(results) => results,
        Err(reason) => {
            // Acknowledged and in the bucket: a taker indexes them. Keep them readable here and
            // their permits held (producers wait rather than grow an unindexed tail).
            tracing::error!(reason, "S3 WAL objects could not be indexed");
            for object in group {
                frozen.insert(object.lane);
                std::mem::forget(object.unindexed_permit);
            }
            return;
        }
    };
    let mut index = 0usize;
    for object in group {
        let mut left_out = false;
        for (entry, part) in &object.chunks {
            let rejection = results.get(index).cloned().flatten();
            index += 1;
            match rejection {
                None | Some(Rejection::UnknownTopicOrPartition) => {}
                Some(rejection @ Rejection::StaleLeaderEpoch { .. }) => tracing::warn!(
                    tp = ?entry.tp,
                    key = %object.key,
                    %rejection,
                    "WAL chunk not indexed: this broker no longer owns the partition"
                ),
                Some(rejection) => {
                    // Metadata held the lane's mark below this object, so the next start indexes
                    // it from the bucket; until then it stays readable from here.
                    tracing::error!(
                        tp = ?entry.tp,
                        key = %object.key,
                        %rejection,
                        "acknowledged WAL chunk not indexed; it is indexed from the bucket at the \
                         next start"
                    );
                    left_out = true;
                    continue;
                }
            }
            part.state().forget_unindexed(&object.key);
        }
        if left_out {
            frozen.insert(object.lane);
            // Its place in the lane's unindexed bound stays taken.
            std::mem::forget(object.unindexed_permit);
        }
    }
}

/// Proposes `AddSegments` (in commands of at most `metadata::ENTRIES_PER_COMMAND` entries, in order; the
/// marks ride on the last) and waits until metadata has them in the bucket. `Ok(results)` = the
/// per-entry answers (all `None` when an answer was lost to a journal retry: metadata holds what
/// it accepted either way); `Err` = unknown after an abort, or metadata refused the command.
async fn propose_until_persisted(
    shared: &Shared,
    entries: &[SegmentEntry],
    marks: Vec<LaneMark>,
) -> std::result::Result<Vec<Option<Rejection>>, String> {
    let mut all: Vec<Option<Rejection>> = Vec::with_capacity(entries.len());
    let parts = metadata::add_segments_runs(entries);
    let last = parts.len() - 1;
    for (i, part) in parts.into_iter().enumerate() {
        // The marks ride on the last command, and only if nothing before it was left out.
        let settled = all
            .iter()
            .all(|result| Rejection::settles_chunk(result.as_ref()));
        let command = Command::AddSegments {
            entries: part.to_vec(),
            now_ms: now_ms(),
            marks: if i == last && settled {
                marks.clone()
            } else {
                Vec::new()
            },
            seal: None,
        };
        match propose_one(shared, command).await? {
            Some(results) if results.len() == part.len() => all.extend(results),
            Some(_) => return Err("metadata answered fewer entries than proposed".into()),
            None => all.extend(std::iter::repeat_n(None, part.len())),
        }
    }
    Ok(all)
}

async fn propose_one(
    shared: &Shared,
    command: Command,
) -> std::result::Result<Option<Vec<Option<Rejection>>>, String> {
    let proposed = tokio::select! {
        result = shared.meta.propose(command) => result,
        _ = shared.abort.cancelled() => return Err("aborted while indexing".into()),
    };
    match proposed {
        Ok(CommandResponse::Entries(results)) => Ok(Some(results)),
        Ok(CommandResponse::Rejected(rejection)) => Err(rejection.to_string()),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(metadata::Error::NotPersisted) => {
            // Applied, but the journal is behind (object store down): keep waiting. Nothing waits
            // on this but the unindexed bound.
            let mut delay = PUT_BACKOFF_START;
            loop {
                let sync = shared.meta.sync();
                let result = tokio::select! {
                    result = sync => result,
                    _ = shared.abort.cancelled() => {
                        return Err("aborted while the metadata journal was behind".into())
                    }
                };
                match result {
                    Ok(()) => return Ok(None),
                    Err(metadata::Error::NotPersisted) => {}
                    Err(err) => return Err(err.to_string()),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(PUT_BACKOFF_MAX);
            }
        }
        Err(err) => Err(err.to_string()),
    }
}
