//! The S3 WAL (`--wal object`): every partition's pending batches of this broker are group-committed
//! into one **WAL object** per flush, so nothing that matters is kept on local disk.
//!
//! Life of a batch:
//! 1. `reserve` takes its size from a byte budget (`max_unflushed_bytes`); when the object store is
//!    slow the budget runs out and producers wait here (backpressure), the broker does not grow.
//! 2. `push` queues it (the caller holds the partition's append lock, so per partition the queue is
//!    in offset order).
//! 3. The flusher cuts an object once `flush_bytes` are queued, or `linger` after the first queued
//!    batch — but only when one of `max_inflight_puts` PUT slots is free: while all slots are busy
//!    the queue keeps growing (up to `max_object_bytes` per object), so objects get bigger under load
//!    instead of more numerous (adaptive batching).
//! 4. An upload task lays the object out as one *chunk per partition* — a mini segment in the
//!    segment format (batches + offset/time footer, positions absolute in the object) — and PUTs it,
//!    retrying with backoff and jitter until it succeeds or the store shuts down. Several PUTs run at
//!    once.
//! 5. The sequencer indexes uploaded objects **in flush order** with one `AddSegments` metadata
//!    command for every object ready at that moment (group commit); metadata answers only once the
//!    change is in the bucket journal. Only then are the batches visible (high watermark) and
//!    acknowledged — in per-partition offset order, since flush order is queue order.
//!
//! A crash before step 5 leaves an unindexed object, which is never read (the index in metadata is
//! what makes an object visible); its batches were never acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use metadata::{
    Command, CommandResponse, MetadataClient, SegmentEntry, SegmentRef, TopicPartition,
};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::partition::Partition;
use crate::segment::SegmentBuilder;
use crate::segment_reader::SegmentReader;
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
    /// PUTs of WAL objects in flight at once.
    pub max_inflight_puts: usize,
    /// Bytes accepted but not yet durable; producers wait beyond this (backpressure).
    pub max_unflushed_bytes: usize,
}

impl Default for ObjectWalOptions {
    fn default() -> Self {
        ObjectWalOptions {
            linger: Duration::from_millis(5),
            flush_bytes: 4 * 1024 * 1024,
            max_object_bytes: 16 * 1024 * 1024,
            max_inflight_puts: 4,
            max_unflushed_bytes: 64 * 1024 * 1024,
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
}

const PUT_BACKOFF_START: Duration = Duration::from_millis(50);
const PUT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// One batch waiting for its object.
pub(crate) struct Pending {
    pub(crate) part: Arc<Partition>,
    pub(crate) base_offset: i64,
    pub(crate) bytes: Bytes,
    pub(crate) permit: OwnedSemaphorePermit,
    /// The batch carries a producer id (idempotent producer).
    pub(crate) idempotent: bool,
}

#[derive(Default)]
struct Queue {
    batches: Vec<Pending>,
    bytes: usize,
    first_at: Option<Instant>,
}

/// A WAL object that is in the store, waiting to be indexed.
struct Uploaded {
    seq: u64,
    key: String,
    /// When the object was cut from the queue and when its PUT finished (stage timings).
    cut_at: Instant,
    stored_at: Instant,
    /// Per chunk: the partition, its segment ref and the batches it holds.
    chunks: Vec<(TopicPartition, SegmentRef, Vec<Pending>)>,
}

struct Shared {
    opts: ObjectWalOptions,
    objects: Arc<dyn ObjectStore>,
    meta: MetadataClient,
    segments: Arc<SegmentReader>,
    key_prefix: String,
    queue: Mutex<Queue>,
    wake: Notify,
    budget: Arc<Semaphore>,
    put_slots: Arc<Semaphore>,
    /// Stops accepting and makes the flusher drain (graceful shutdown).
    draining: CancellationToken,
    /// Gives up on whatever is left (PUT retries, journal waits).
    abort: CancellationToken,
    objects_written: AtomicU64,
    bytes_written: AtomicU64,
    put_retries: AtomicU64,
    commits: AtomicU64,
}

/// Handle to the S3 WAL of one [`crate::LogStore`].
pub(crate) struct ObjectWal {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl ObjectWal {
    pub(crate) fn start(
        opts: ObjectWalOptions,
        objects: Arc<dyn ObjectStore>,
        meta: MetadataClient,
        segments: Arc<SegmentReader>,
        cluster_id: &str,
        node_id: metadata::NodeId,
    ) -> ObjectWal {
        // Keys are never reused: node id + a random per-process value + a sequence number.
        let unique: u64 = rand::random();
        let budget = opts.max_unflushed_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared {
            budget: Arc::new(Semaphore::new(budget)),
            put_slots: Arc::new(Semaphore::new(opts.max_inflight_puts.max(1))),
            opts,
            objects,
            meta,
            segments,
            key_prefix: format!("{cluster_id}/wal/{node_id}-{unique:016x}"),
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            draining: CancellationToken::new(),
            abort: CancellationToken::new(),
            objects_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            put_retries: AtomicU64::new(0),
            commits: AtomicU64::new(0),
        });
        let (uploaded_tx, uploaded_rx) = mpsc::unbounded_channel();
        let flusher = tokio::spawn(flusher(shared.clone(), uploaded_tx));
        let sequencer = tokio::spawn(sequencer(shared.clone(), uploaded_rx));
        ObjectWal {
            shared,
            tasks: Mutex::new(vec![flusher, sequencer]),
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

    /// Queues a batch whose offsets are assigned (`part.state().begin_append` was called). Its
    /// partition learns the outcome through `Partition::completed_at`.
    pub(crate) fn push(&self, pending: Pending) -> Result<()> {
        if self.shared.draining.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let mut queue = lock(&self.shared.queue);
        let was_empty = queue.batches.is_empty();
        queue.bytes += pending.bytes.len();
        queue.batches.push(pending);
        if was_empty {
            queue.first_at = Some(Instant::now());
        }
        let due = was_empty || queue.bytes >= self.shared.opts.flush_bytes;
        drop(queue);
        if due {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> ObjectWalStats {
        let s = &self.shared;
        ObjectWalStats {
            objects: s.objects_written.load(Ordering::Relaxed),
            bytes: s.bytes_written.load(Ordering::Relaxed),
            put_retries: s.put_retries.load(Ordering::Relaxed),
            commits: s.commits.load(Ordering::Relaxed),
        }
    }

    /// Flushes and indexes what is queued (bounded by `grace`), then stops. Batches still not
    /// durable after that fail with `Closed` (never acknowledged).
    pub(crate) async fn close(&self, grace: Duration) {
        self.shared.draining.cancel();
        self.shared.wake.notify_one();
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
        // Anything still queued (the flusher stopped early) is answered.
        let left = std::mem::take(&mut lock(&self.shared.queue).batches);
        fail(left, || wal::Error::Closed);
    }
}

/// Answers batches that will never become durable.
fn fail(batches: Vec<Pending>, error: impl Fn() -> wal::Error) {
    for pending in batches {
        pending.part.completed_at(pending.base_offset, Err(error()));
    }
}

/// Cuts objects from the queue and starts their uploads.
async fn flusher(shared: Arc<Shared>, uploaded: mpsc::UnboundedSender<Uploaded>) {
    let mut seq = 0u64;
    loop {
        // Wait until something is due: enough bytes, linger expired, or draining.
        loop {
            let (bytes, first_at) = {
                let queue = lock(&shared.queue);
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
                        _ = shared.wake.notified() => {}
                        _ = shared.draining.cancelled() => {}
                    }
                }
                None => {
                    tokio::select! {
                        _ = shared.wake.notified() => {}
                        _ = shared.draining.cancelled() => {}
                    }
                }
            }
        }
        // A free PUT slot; meanwhile the queue keeps filling (bigger objects under load).
        let slot = tokio::select! {
            slot = shared.put_slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            _ = shared.abort.cancelled() => return,
        };
        let batches = take_object(&shared);
        if batches.is_empty() {
            continue;
        }
        seq += 1;
        let shared = shared.clone();
        let uploaded = uploaded.clone();
        tokio::spawn(async move {
            let result = upload(&shared, seq, batches).await;
            drop(slot);
            // The sequencer outlives the flusher; a send only fails after an abort.
            let _ = uploaded.send(result);
        });
    }
}

/// Takes whole batches from the front of the queue, up to `max_object_bytes` (at least one).
fn take_object(shared: &Shared) -> Vec<Pending> {
    let mut queue = lock(&shared.queue);
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

/// Lays out and PUTs one WAL object (retrying until it is stored or the WAL aborts).
async fn upload(shared: &Shared, seq: u64, batches: Vec<Pending>) -> Uploaded {
    let cut_at = Instant::now();
    let key = format!("{}-{seq:012}.wal", shared.key_prefix);
    // Chunks in partition order; inside a partition the queue (= offset) order is kept.
    let mut by_partition: BTreeMap<TopicPartition, Vec<Pending>> = BTreeMap::new();
    for pending in batches {
        by_partition
            .entry(pending.part.tp)
            .or_default()
            .push(pending);
    }
    let mut payload: Vec<Bytes> = Vec::new();
    let mut chunks = Vec::with_capacity(by_partition.len());
    let mut position = 0u64;
    let created_ms = now_ms();
    for (tp, list) in by_partition {
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
        let segment = SegmentRef {
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
        position += built.object_len();
        // Later reads of this chunk (after the tail cache let go of it) skip the footer GET.
        shared.segments.remember(&key, built.footer.clone());
        payload.extend(built.chunks);
        chunks.push((tp, segment, list));
    }
    if !chunks.is_empty() {
        let body: PutPayload = payload.into_iter().collect();
        if put_until_stored(shared, &key, body).await {
            shared.objects_written.fetch_add(1, Ordering::Relaxed);
            shared.bytes_written.fetch_add(position, Ordering::Relaxed);
        } else {
            for (_, _, list) in chunks.drain(..) {
                fail(list, || wal::Error::Closed);
            }
        }
    }
    Uploaded {
        seq,
        key,
        cut_at,
        stored_at: Instant::now(),
        chunks,
    }
}

/// PUTs `body` at `key` until it succeeds (`true`) or the WAL aborts (`false`). The object store
/// client retries transient errors itself; this loop covers longer outages (a blackout), with
/// exponential backoff and jitter.
async fn put_until_stored(shared: &Shared, key: &str, body: PutPayload) -> bool {
    let path = ObjectPath::from(key);
    let mut delay = PUT_BACKOFF_START;
    let mut attempt = 1u32;
    loop {
        let put = shared.objects.put(&path, body.clone());
        let result = tokio::select! {
            result = put => result,
            _ = shared.abort.cancelled() => return false,
        };
        match result {
            Ok(_) => return true,
            Err(err) => {
                shared.put_retries.fetch_add(1, Ordering::Relaxed);
                if attempt == 1 || attempt.is_power_of_two() {
                    tracing::warn!(key, attempt, error = %err, "WAL object PUT failed; retrying");
                }
                let jitter = rand::random::<f64>() * 0.5 + 0.75;
                tokio::select! {
                    _ = tokio::time::sleep(delay.mul_f64(jitter)) => {}
                    _ = shared.abort.cancelled() => return false,
                }
                delay = (delay * 2).min(PUT_BACKOFF_MAX);
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// Indexes uploaded objects in flush order and answers their batches.
async fn sequencer(shared: Arc<Shared>, mut uploaded: mpsc::UnboundedReceiver<Uploaded>) {
    let mut ready: HashMap<u64, Uploaded> = HashMap::new();
    let mut next = 1u64;
    loop {
        // Block for one upload, then take whatever else already arrived.
        let Some(first) = uploaded.recv().await else {
            // The flusher and every upload are done.
            break;
        };
        ready.insert(first.seq, first);
        while let Ok(more) = uploaded.try_recv() {
            ready.insert(more.seq, more);
        }
        let mut group = Vec::new();
        while let Some(object) = ready.remove(&next) {
            group.push(object);
            next += 1;
        }
        if !group.is_empty() {
            commit(&shared, group).await;
        }
    }
    // Objects stuck behind a missing sequence number (only after an abort) are never indexed.
    for (_, object) in ready.drain() {
        for (_, _, list) in object.chunks {
            fail(list, || wal::Error::Closed);
        }
    }
}

/// One `AddSegments` for all chunks of `group`, then the answers.
async fn commit(shared: &Shared, group: Vec<Uploaded>) {
    let state = shared.meta.state();
    let mut entries = Vec::new();
    for object in &group {
        for (tp, segment, _) in &object.chunks {
            let leader_epoch = state.partition(*tp).map_or(-1, |pm| pm.leader_epoch);
            entries.push(SegmentEntry {
                tp: *tp,
                leader_epoch,
                segment: segment.clone(),
            });
        }
    }
    if entries.is_empty() {
        return;
    }
    let keys: Vec<String> = group.iter().map(|o| o.key.clone()).collect();
    let commit_start = Instant::now();
    let oldest_cut = group.iter().map(|o| o.cut_at).min();
    let last_stored = group.iter().map(|o| o.stored_at).max();
    let outcome = propose_until_persisted(shared, &entries).await;
    tracing::debug!(
        objects = group.len(),
        put_ms = ?oldest_cut.zip(last_stored).map(|(c, s)| s.duration_since(c)),
        wait_ms = ?last_stored.map(|s| commit_start.duration_since(s)),
        commit_ms = ?commit_start.elapsed(),
        "S3 WAL commit"
    );
    shared.commits.fetch_add(1, Ordering::Relaxed);
    let mut index = 0usize;
    for object in group {
        for (tp, segment, list) in object.chunks {
            let verdict = match &outcome {
                Ok(Some(results)) => match results.get(index) {
                    Some(None) => Ok(()),
                    Some(Some(rejection)) => Err(rejection.to_string()),
                    None => Err("metadata answered fewer entries than proposed".to_string()),
                },
                // Not answered per entry (the journal wait was retried): what is indexed now is
                // the truth — only this broker adds to its partitions' index.
                Ok(None) => {
                    let state = shared.meta.state();
                    match state.partition(tp) {
                        Some(pm) if pm.segmented_end() >= segment.end_offset => Ok(()),
                        _ => Err("not indexed".to_string()),
                    }
                }
                Err(err) => Err(err.clone()),
            };
            index += 1;
            match verdict {
                Ok(()) => {
                    for pending in list {
                        pending.part.completed_at(pending.base_offset, Ok(None));
                        drop(pending.permit);
                    }
                }
                Err(reason) => {
                    tracing::warn!(?tp, key = %segment.key, reason, "WAL chunk not indexed; its batches fail");
                    fail(list, || wal::Error::Poisoned);
                }
            }
        }
    }
    tracing::trace!(?keys, "WAL objects indexed");
}

/// Entries per `AddSegments` command: keeps every command well under `MAX_COMMAND_BYTES` (an
/// entry encodes to a few hundred bytes) when thousands of partitions share a flush.
const ENTRIES_PER_COMMAND: usize = 1000;

/// Proposes `AddSegments` (in commands of at most [`ENTRIES_PER_COMMAND`] entries, in order) and
/// waits until metadata has them in the bucket. `Ok(Some(results))` = the per-entry answers;
/// `Ok(None)` = applied and persisted but an answer was lost to a journal retry (read the state);
/// `Err` = not indexed, or unknown after an abort.
async fn propose_until_persisted(
    shared: &Shared,
    entries: &[SegmentEntry],
) -> std::result::Result<Option<Vec<Option<metadata::Rejection>>>, String> {
    let mut all = Some(Vec::with_capacity(entries.len()));
    for part in entries.chunks(ENTRIES_PER_COMMAND) {
        match propose_part(shared, part).await? {
            Some(results) => {
                if let Some(all) = &mut all {
                    all.extend(results);
                }
            }
            None => all = None,
        }
    }
    Ok(all)
}

async fn propose_part(
    shared: &Shared,
    entries: &[SegmentEntry],
) -> std::result::Result<Option<Vec<Option<metadata::Rejection>>>, String> {
    let command = Command::AddSegments {
        entries: entries.to_vec(),
        now_ms: now_ms(),
        marks: Vec::new(),
        seal: None,
    };
    match shared.meta.propose(command).await {
        Ok(CommandResponse::Entries(results)) if results.len() == entries.len() => {
            Ok(Some(results))
        }
        Ok(CommandResponse::Rejected(rejection)) => Err(rejection.to_string()),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(metadata::Error::NotPersisted) => {
            // Applied, but the journal is behind (object store down): keep waiting — the batches'
            // producers get a timeout meanwhile and nothing is acknowledged early.
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
