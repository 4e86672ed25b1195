//! The segment writer: moves WAL-only data of each partition into segment objects once it reaches
//! `segment_bytes` or its oldest batch is `segment_max_age` old, indexes them in metadata, then lets
//! the WAL drop what no partition needs any more (the checkpoint).
//!
//! Order of a flush, which is what keeps data from being lost: PUT the object (retried with backoff)
//! → `AddSegment` in metadata (fenced by the leader epoch) → forget the WAL index entries → later,
//! the checkpoint truncates WAL files below the smallest lsn still indexed or in flight. A crash at
//! any point leaves the batches in the WAL (replayed at open) or in an indexed segment; the worst
//! outcome is an unindexed object, which is never read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use metadata::{Command, CommandResponse, SegmentRef, TopicPartition};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::BatchHeader;
use crate::partition::{Partition, WalEntry};
use crate::segment::{segment_key, BuiltSegment, SegmentBuilder};
use crate::{now_ms, Error, Inner, Result};

/// Partitions flushed at the same time (each holds up to `segment_bytes` in memory while uploading).
const FLUSH_CONCURRENCY: usize = 4;
/// Segments one partition writes per round before others get their turn.
const MAX_SEGMENTS_PER_ROUND: usize = 16;
/// Objects larger than this are uploaded in parts.
const MULTIPART_THRESHOLD: u64 = 32 * 1024 * 1024;
const PUT_ATTEMPTS: u32 = 5;
const PUT_BACKOFF_START: Duration = Duration::from_millis(100);
/// A partition whose flush failed waits this long (doubling, capped) before the next attempt.
const FAILED_FLUSH_BACKOFF_START: Duration = Duration::from_millis(500);
const FAILED_FLUSH_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Per-partition retry delays of a background writer (segment writer, compaction): a partition
/// whose last attempt failed waits, doubling from 500 ms up to 30 s; a success resets it.
#[derive(Default)]
pub(crate) struct PartitionBackoff {
    waits: HashMap<TopicPartition, (Duration, Instant)>,
}

impl PartitionBackoff {
    /// Whether `tp` may be tried at `now`.
    pub(crate) fn ready(&self, tp: TopicPartition, now: Instant) -> bool {
        self.waits
            .get(&tp)
            .is_none_or(|(_, retry_at)| *retry_at <= now)
    }

    pub(crate) fn succeeded(&mut self, tp: TopicPartition) {
        self.waits.remove(&tp);
    }

    /// Records a failure; returns how long `tp` now waits.
    pub(crate) fn failed(&mut self, tp: TopicPartition) -> Duration {
        let delay = self
            .waits
            .get(&tp)
            .map(|(d, _)| (*d * 2).min(FAILED_FLUSH_BACKOFF_MAX))
            .unwrap_or(FAILED_FLUSH_BACKOFF_START);
        self.waits.insert(tp, (delay, Instant::now() + delay));
        delay
    }
}

pub(crate) async fn run(inner: Arc<Inner>, cancel: CancellationToken) {
    let tick =
        (inner.opts.segment_max_age / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = PartitionBackoff::default();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
            _ = inner.writer_wake.notified() => {}
            _ = inner.writer_passes.requested() => {}
        }
        // Dropping a round half-way is safe: see the module docs.
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = inner.writer_passes.run(round(&inner, &mut backoff)) => {}
        }
    }
}

/// Whether a partition's WAL-only data should go to a segment now.
fn due(inner: &Inner, part: &Partition) -> bool {
    let st = part.state();
    let Some(first) = st.wal_index.values().next() else {
        return false;
    };
    st.wal_bytes >= inner.opts.segment_bytes || first.added.elapsed() >= inner.opts.segment_max_age
}

async fn round(inner: &Inner, backoff: &mut PartitionBackoff) {
    let now = Instant::now();
    let candidates: Vec<Arc<Partition>> = inner
        .loaded_partitions()
        .into_iter()
        .filter(|part| backoff.ready(part.tp, now))
        .filter(|part| due(inner, part))
        .collect();
    let results: Vec<(TopicPartition, Result<()>)> = futures::stream::iter(candidates)
        .map(|part| async move { (part.tp, flush_partition(inner, &part).await) })
        .buffer_unordered(FLUSH_CONCURRENCY)
        .collect()
        .await;
    for (tp, result) in results {
        match result {
            Ok(()) => backoff.succeeded(tp),
            Err(err) => {
                let delay = backoff.failed(tp);
                tracing::warn!(?tp, error = %err, retry_in = ?delay, "writing a segment failed; the data stays in the WAL");
            }
        }
    }
    checkpoint(inner);
}

/// Lets the WAL delete files no partition needs: everything below the smallest lsn still indexed or
/// in flight.
pub(crate) fn checkpoint(inner: &Inner) {
    let Some(wal) = &inner.wal else {
        return;
    };
    // Read the end first: a record submitted after this point has an lsn >= end, one submitted
    // before is registered in its partition (see `PartitionState::begin_append`).
    let end = wal.end_lsn();
    let keep_from = inner
        .loaded_partitions()
        .iter()
        .filter_map(|part| part.state().min_lsn())
        .fold(end, u64::min);
    if let Err(err) = wal.truncate_prefix(keep_from) {
        tracing::warn!(error = %err, keep_from, "WAL checkpoint failed");
    }
}

/// Writes the partition's due WAL-only data into segment objects, one segment at a time.
async fn flush_partition(inner: &Inner, part: &Partition) -> Result<()> {
    let tp = part.tp;
    for written in 0..MAX_SEGMENTS_PER_ROUND {
        let state = inner.meta.state();
        let Some(pm) = state.partition(tp) else {
            // The topic was deleted (partitions only come into being from metadata and never come
            // back): its WAL data is garbage and must not hold back the checkpoint.
            part.state().drop_wal_below(i64::MAX);
            return Ok(());
        };
        let segmented_end = pm.segmented_end();
        // The epoch this broker acquired the partition at: if another owner took it over since,
        // metadata rejects the segment (and the producer snapshot) as stale.
        let leader_epoch = part.leader_epoch;
        let entries: Vec<(i64, WalEntry)> = {
            let mut st = part.state();
            st.drop_wal_below(segmented_end);
            let mut total = 0u64;
            st.wal_index
                .iter()
                .take_while(|(_, e)| {
                    // At least one batch, however small `segment_bytes` is.
                    let take = total == 0 || total < inner.opts.segment_bytes;
                    total += e.batch_len as u64;
                    take
                })
                .map(|(&base, e)| (base, *e))
                .collect()
        };
        // After the first segment, only keep going while still over a threshold.
        if entries.is_empty() || (written > 0 && !due(inner, part)) {
            return Ok(());
        }

        let (built, headers) = build_segment(inner, tp, &entries).await?;
        let key = segment_key(
            &inner.opts.cluster_id,
            tp,
            segmented_end,
            inner.opts.node_id,
        );
        put_with_retry(inner, &key, &built).await?;
        let segment = SegmentRef {
            key: key.clone(),
            // A first batch that started before `segmented_end` (a log start moved into it) is
            // kept whole; the segment's offset range starts where the index continues.
            base_offset: segmented_end,
            end_offset: built.footer.end_offset,
            data_start: 0,
            data_len: built.data_len,
            min_timestamp: built.min_timestamp,
            max_timestamp: built.max_timestamp,
            created_ms: now_ms(),
            footer_len: 0,
            producer_batches: false,
        };
        let end_offset = segment.end_offset;
        // The producer snapshot goes in first: once the segment is indexed its WAL data may be
        // truncated, and the sequences of its idempotent batches must survive that.
        if let Err(err) = save_producer_state(inner, tp, leader_epoch, &headers, end_offset).await {
            delete_orphan(inner, &key).await;
            return Err(err);
        }
        let proposal = Command::AddSegment {
            tp,
            leader_epoch,
            segment,
        };
        match inner.meta.propose(proposal).await {
            Ok(CommandResponse::Rejected(rejection)) => {
                // Definitely not indexed: the object is garbage.
                delete_orphan(inner, &key).await;
                return Err(Error::Rejected(rejection));
            }
            Ok(_) => {}
            Err(err) => {
                let indexed = inner
                    .meta
                    .state()
                    .partition(tp)
                    .is_some_and(|pm| pm.segments.iter().any(|s| s.key == key));
                if !indexed {
                    // The proposal may still be applied: keep the object (an unindexed object is
                    // harmless), and keep the data in the WAL.
                    return Err(err.into());
                }
            }
        }
        inner.segments.remember(&key, built.footer);
        part.state().drop_wal_below(end_offset);
        tracing::debug!(?tp, key, end_offset, "segment written");
    }
    Ok(())
}

/// Folds the idempotent batches of a new segment into the partition's producer snapshot in
/// metadata (nothing is proposed when the segment holds none).
pub(crate) async fn save_producer_state(
    inner: &Inner,
    tp: TopicPartition,
    leader_epoch: i32,
    headers: &[BatchHeader],
    end_offset: i64,
) -> Result<()> {
    let Some(snapshot) = producer_snapshot(inner, tp, headers, end_offset).await? else {
        return Ok(());
    };
    let snapshot = crate::producer_snapshots::spill_if_large(inner, tp, snapshot).await?;
    let spilled = snapshot.spilled.as_ref().map(|s| s.key.clone());
    let proposal = Command::SetProducerState {
        tp,
        leader_epoch,
        state: snapshot,
        now_ms: now_ms(),
    };
    match inner.meta.propose(proposal).await? {
        CommandResponse::Rejected(rejection) => {
            // Never referenced: the object of a spilled snapshot is garbage.
            if let Some(key) = spilled {
                delete_orphan(inner, &key).await;
            }
            Err(Error::Rejected(rejection))
        }
        _ => Ok(()),
    }
}

/// The partition's producer snapshot in metadata (read back if spilled) with `headers` folded
/// in, valid at `end_offset`, in full; `None` when the headers hold no idempotent batch newer
/// than the snapshot.
async fn producer_snapshot(
    inner: &Inner,
    tp: TopicPartition,
    headers: &[BatchHeader],
    end_offset: i64,
) -> Result<Option<metadata::PartitionProducers>> {
    let state = inner.meta.state();
    let previous = state.producer_state(tp);
    let as_of = previous.map_or(0, |p| p.as_of_offset);
    let sequenced: Vec<&BatchHeader> = headers
        .iter()
        .filter(|h| h.has_producer_id() && h.base_sequence >= 0 && h.last_offset() >= as_of)
        .collect();
    if sequenced.is_empty() {
        return Ok(None);
    }
    let mut table = crate::producer_snapshots::table(inner, tp, previous).await?;
    for header in sequenced {
        table.record(header, header.base_offset);
    }
    Ok(Some(table.snapshot(end_offset)))
}

async fn build_segment(
    inner: &Inner,
    tp: TopicPartition,
    entries: &[(i64, WalEntry)],
) -> Result<(BuiltSegment, Vec<BatchHeader>)> {
    let mut builder = SegmentBuilder::new();
    let mut headers = Vec::with_capacity(entries.len());
    for (base, entry) in entries {
        let bytes = match inner.tail.get(tp, *base) {
            Some(bytes) => bytes,
            None => inner.read_wal_batch(tp, entry.lsn).await?,
        };
        if let Ok(header) = BatchHeader::parse(&bytes) {
            headers.push(header);
        }
        builder.push(bytes).map_err(|e| {
            Error::Wal(wal::Error::Corrupted {
                file: inner.opts.wal.dir.clone(),
                offset: entry.lsn,
                reason: format!("batch at offset {base} cannot go into a segment: {e}"),
            })
        })?;
    }
    let built = builder.finish().ok_or(Error::ShuttingDown)?;
    Ok((built, headers))
}

pub(crate) async fn put_with_retry(inner: &Inner, key: &str, built: &BuiltSegment) -> Result<()> {
    let path = ObjectPath::from(key);
    let mut delay = PUT_BACKOFF_START;
    let mut attempt = 1;
    loop {
        match upload(inner.objects.as_ref(), &path, built, MULTIPART_THRESHOLD).await {
            Ok(()) => return Ok(()),
            Err(err) if attempt >= PUT_ATTEMPTS => return Err(err.into()),
            Err(err) => {
                tracing::warn!(key, attempt, error = %err, "segment upload failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
        }
    }
}

/// One upload attempt: a single PUT, or a multipart upload above `multipart_threshold` bytes.
async fn upload(
    store: &dyn ObjectStore,
    path: &ObjectPath,
    built: &BuiltSegment,
    multipart_threshold: u64,
) -> object_store::Result<()> {
    if built.object_len() <= multipart_threshold {
        let payload: PutPayload = built.chunks.iter().cloned().collect();
        store.put(path, payload).await?;
        return Ok(());
    }
    let mut upload = WriteMultipart::new(store.put_multipart(path).await?);
    for chunk in &built.chunks {
        // Bounds the parts in flight (and so the extra memory) while streaming.
        if let Err(err) = upload.wait_for_capacity(4).await {
            let _ = upload.abort().await;
            return Err(err);
        }
        upload.put(chunk.clone());
    }
    // `finish` aborts the upload itself when it fails.
    upload.finish().await?;
    Ok(())
}

pub(crate) async fn delete_orphan(inner: &Inner, key: &str) {
    match inner.objects.delete(&ObjectPath::from(key)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(err) => {
            tracing::warn!(key, error = %err, "could not delete an unindexed segment object")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::tests::fake_batch;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn single_and_multipart_uploads_store_the_same_bytes() {
        let mut builder = SegmentBuilder::new();
        // 12 MiB in 3 batches: more than two 5 MiB parts.
        for i in 0..3 {
            builder.push(fake_batch(i, 1, i, 4 * 1024 * 1024)).unwrap();
        }
        let built = builder.finish().unwrap();
        let expected: Vec<u8> = built.chunks.concat();
        let store = InMemory::new();
        for (key, threshold) in [("single", u64::MAX), ("multi", 0)] {
            let path = ObjectPath::from(key);
            upload(&store, &path, &built, threshold).await.unwrap();
            let got = store.get(&path).await.unwrap().bytes().await.unwrap();
            assert_eq!(got.len(), expected.len());
            assert!(got == expected, "{key} upload differs");
        }
    }
}
