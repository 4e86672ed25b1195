//! Producer snapshots too large for a metadata command: stored as objects of their own.
//!
//! A partition's idempotent-producer snapshot (`metadata::PartitionProducers`, written by the
//! segment writer and compaction before the WAL data it summarizes can go) is kept inline in
//! metadata while it holds at most [`INLINE_PRODUCERS`] producers. A larger one is written as an
//! object — `{cluster}/topics/{topic_id}/{partition}/producers-{as_of:020}-{node}-{unique}.json`,
//! the JSON of the inline form, under a fresh key, never overwritten — and metadata records only
//! its key ([`metadata::SpilledProducers`]). So every live producer survives a restart or a move
//! of the partition, however many there are, and metadata stays small. The object is written
//! before the command that names it; a rejected command deletes it again, and a replaced or
//! deleted-topic snapshot is queued for GC by metadata itself.
//!
//! Reading one back needs the object store, so it happens where the store may be awaited: before
//! the file-WAL replay ([`preload`]), when the ownership watcher acquires a partition, and in the
//! segment writer. Each store keeps the last spilled snapshot it wrote or read per partition, so
//! the segment writer folds new batches into it without a GET per segment.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use metadata::{MetadataState, PartitionProducers, SpilledProducers, TopicPartition};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};

use crate::producers::ProducerTable;
use crate::{lock, Error, Inner, Result};

/// Most producers a snapshot keeps inline in metadata (about 100 KB of command); more are spilled.
pub(crate) const INLINE_PRODUCERS: usize = 1_000;

const PUT_ATTEMPTS: u32 = 5;
const PUT_BACKOFF_START: Duration = Duration::from_millis(100);

/// A new, unique key for a spilled snapshot of `tp` valid at `as_of_offset`.
fn key(cluster_id: &str, tp: TopicPartition, as_of_offset: i64, node_id: u64) -> String {
    let unique: u64 = rand::random();
    format!(
        "{cluster_id}/topics/{}/{}/producers-{as_of_offset:020}-{node_id}-{unique:016x}.json",
        tp.topic_id, tp.partition
    )
}

/// The producer table a metadata snapshot describes, if it can be had without I/O: inline, or
/// spilled and already in this store's cache. `None` means an object must be read ([`table`]).
pub(crate) fn table_now(
    inner: &Inner,
    tp: TopicPartition,
    snapshot: Option<&PartitionProducers>,
) -> Option<ProducerTable> {
    match snapshot {
        None => Some(ProducerTable::default()),
        Some(s) => match &s.spilled {
            None => Some(ProducerTable::from_snapshot(s)),
            Some(spilled) => {
                cached(inner, tp, &spilled.key).map(|full| ProducerTable::from_snapshot(&full))
            }
        },
    }
}

/// Whether acquiring `tp` must read its spilled producer snapshot (not cached here).
pub(crate) fn needs_read(inner: &Inner, state: &MetadataState, tp: TopicPartition) -> bool {
    state
        .producer_state(tp)
        .and_then(|s| s.spilled.as_ref())
        .is_some_and(|spilled| cached(inner, tp, &spilled.key).is_none())
}

/// The full (inline) form of the snapshot metadata holds for `tp`, reading a spilled one.
pub(crate) async fn full(
    inner: &Inner,
    tp: TopicPartition,
    snapshot: Option<&PartitionProducers>,
) -> Result<Option<Arc<PartitionProducers>>> {
    let Some(snapshot) = snapshot else {
        return Ok(None);
    };
    let Some(spilled) = &snapshot.spilled else {
        return Ok(Some(Arc::new(snapshot.clone())));
    };
    if let Some(full) = cached(inner, tp, &spilled.key) {
        return Ok(Some(full));
    }
    let bytes = inner
        .objects
        .get(&ObjectPath::from(spilled.key.as_str()))
        .await?
        .bytes()
        .await?;
    let corrupt = |reason: String| Error::CorruptSegment {
        key: spilled.key.clone(),
        reason,
    };
    let full: PartitionProducers = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("producer snapshot does not decode: {e}")))?;
    if full.as_of_offset != snapshot.as_of_offset || full.spilled.is_some() {
        return Err(corrupt(format!(
            "producer snapshot valid at {}, metadata says {}",
            full.as_of_offset, snapshot.as_of_offset
        )));
    }
    let full = Arc::new(full);
    remember(inner, tp, &spilled.key, full.clone());
    Ok(Some(full))
}

/// The producer table of the snapshot metadata holds for `tp` (reading a spilled one).
pub(crate) async fn table(
    inner: &Inner,
    tp: TopicPartition,
    snapshot: Option<&PartitionProducers>,
) -> Result<ProducerTable> {
    Ok(full(inner, tp, snapshot)
        .await?
        .map(|full| ProducerTable::from_snapshot(&full))
        .unwrap_or_default())
}

/// What to propose for the inline snapshot `full`: itself when small enough, else a reference to
/// the object it has just been written to.
pub(crate) async fn spill_if_large(
    inner: &Inner,
    tp: TopicPartition,
    full: PartitionProducers,
) -> Result<PartitionProducers> {
    if full.producers.len() <= INLINE_PRODUCERS {
        return Ok(full);
    }
    let key = key(
        &inner.opts.cluster_id,
        tp,
        full.as_of_offset,
        inner.opts.node_id,
    );
    let body = Bytes::from(
        serde_json::to_vec(&full).map_err(|e| Error::CorruptSegment {
            key: key.clone(),
            reason: format!("producer snapshot does not encode: {e}"),
        })?,
    );
    let path = ObjectPath::from(key.as_str());
    let mut delay = PUT_BACKOFF_START;
    let mut attempt = 1;
    loop {
        match inner
            .objects
            .put(&path, PutPayload::from_bytes(body.clone()))
            .await
        {
            Ok(_) => break,
            Err(err) if attempt >= PUT_ATTEMPTS => return Err(err.into()),
            Err(err) => {
                tracing::warn!(key, attempt, error = %err, "producer snapshot upload failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
        }
    }
    let reference = PartitionProducers {
        as_of_offset: full.as_of_offset,
        producers: Vec::new(),
        spilled: Some(SpilledProducers {
            key: key.clone(),
            producers: full.producers.len() as u64,
        }),
    };
    remember(inner, tp, &key, Arc::new(full));
    Ok(reference)
}

/// Reads the spilled snapshot of every partition this node owns into the cache (before the
/// file-WAL replay, which cannot await the object store).
pub(crate) async fn preload(inner: &Inner) -> Result<usize> {
    let state = inner.meta.state();
    let mut loaded = 0;
    for (topic_id, partitions) in state.producer_states.iter() {
        for (&partition, snapshot) in partitions.iter() {
            let tp = TopicPartition {
                topic_id: *topic_id,
                partition,
            };
            let owned = state
                .partition(tp)
                .is_some_and(|pm| pm.owner == inner.opts.node_id);
            if owned && snapshot.spilled.is_some() {
                full(inner, tp, Some(snapshot)).await?;
                loaded += 1;
            }
        }
    }
    Ok(loaded)
}

/// Forgets cached snapshots of a topic (dropped) or partition (released).
pub(crate) fn forget(inner: &Inner, matches: impl Fn(&TopicPartition) -> bool) {
    lock(&inner.producer_snapshots).retain(|tp, _| !matches(tp));
}

fn cached(inner: &Inner, tp: TopicPartition, key: &str) -> Option<Arc<PartitionProducers>> {
    lock(&inner.producer_snapshots)
        .get(&tp)
        .filter(|(cached_key, _)| cached_key == key)
        .map(|(_, full)| full.clone())
}

fn remember(inner: &Inner, tp: TopicPartition, key: &str, full: Arc<PartitionProducers>) {
    lock(&inner.producer_snapshots).insert(tp, (key.to_string(), full));
}
