//! Compaction (S3 WAL mode): rewrites a partition's chunks in shared WAL objects — and small
//! segment objects — into one per-partition segment object, then swaps the index atomically with
//! `ReplaceSegments`. A WAL object is released once no partition's index references it, and the GC
//! deletes it after the grace period (so a reader holding an old index never reads a deleted
//! object). This keeps the object count and the metadata index bounded under steady load.
//!
//! Order, which is what makes a crash harmless: PUT the new segment → save the producer snapshot →
//! `ReplaceSegments` (fenced by the leader epoch; rejected if the run changed meanwhile) → remember
//! the footer. A crash before the swap leaves an unindexed object that is never read.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use metadata::{Command, CommandResponse, MetadataState, SegmentRef, TopicPartition};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::BatchHeader;
use crate::segment::{segment_key, SegmentBuilder};
use crate::segment_writer::{delete_orphan, put_with_retry, save_producer_state, PartitionBackoff};
use crate::{now_ms, Error, Inner, Result};

/// Partitions compacted at the same time.
const CONCURRENCY: usize = 2;
/// A partition with this many WAL chunks in its index is compacted even if they are young and
/// small: it bounds the index (and the metadata state) under a high flush rate. Not much lower:
/// at ~100 WAL objects/s a low bound makes many tiny segments (and metadata commits) per second.
const MAX_CHUNKS: usize = 256;
/// Small exclusive segments are merged once this many are in a row.
const MAX_SMALL_SEGMENTS: usize = 16;
/// Chunks read at once by compaction and by producer-state recovery.
const READ_CONCURRENCY: usize = 8;
/// Bytes read per GET while copying a chunk.
const READ_BYTES: usize = 8 * 1024 * 1024;

pub(crate) async fn run(inner: Arc<Inner>, cancel: CancellationToken) {
    let tick =
        (inner.opts.segment_max_age / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = PartitionBackoff::default();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
            _ = inner.writer_passes.requested() => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = inner.writer_passes.run(round(&inner, &mut backoff)) => {}
        }
    }
}

/// A run of consecutive segments worth rewriting into one.
struct Run {
    tp: TopicPartition,
    leader_epoch: i32,
    segments: Vec<SegmentRef>,
}

fn is_shared(state: &MetadataState, seg: &SegmentRef) -> bool {
    state.shared_objects.contains_key(&seg.key)
}

/// The first run of small segments of a partition, if it is due for compaction.
fn due_run(
    state: &MetadataState,
    segments: &[SegmentRef],
    segment_bytes: u64,
    max_age_ms: i64,
    now_ms: i64,
) -> Option<Vec<SegmentRef>> {
    let small = |seg: &SegmentRef| is_shared(state, seg) || seg.data_len < segment_bytes / 4;
    let start = segments.iter().position(small)?;
    let mut total = 0u64;
    let run: Vec<SegmentRef> = segments[start..]
        .iter()
        .take_while(|seg| small(seg))
        .take_while(|seg| {
            let take = total == 0 || total + seg.data_len <= segment_bytes;
            total += seg.data_len;
            take
        })
        .cloned()
        .collect();
    let total: u64 = run.iter().map(|s| s.data_len).sum();
    let shared = run.iter().filter(|s| is_shared(state, s)).count();
    let oldest = run.iter().map(|s| s.created_ms).min().unwrap_or(now_ms);
    // `take_while` stopped early = the next small segment did not fit: the run is full.
    let full =
        start + run.len() < segments.len() && small(&segments[start + run.len()]) && total > 0;
    let due = if shared > 0 {
        full || total >= segment_bytes
            || now_ms.saturating_sub(oldest) >= max_age_ms
            || shared >= MAX_CHUNKS
    } else {
        run.len() >= 2 && (full || total >= segment_bytes || run.len() >= MAX_SMALL_SEGMENTS)
    };
    due.then_some(run)
}

async fn round(inner: &Inner, backoff: &mut PartitionBackoff) {
    let state = inner.meta.state();
    let now = Instant::now();
    let wall = now_ms();
    let max_age_ms = i64::try_from(inner.opts.segment_max_age.as_millis()).unwrap_or(i64::MAX);
    let mut runs = Vec::new();
    for topic in state.topics.values() {
        for (index, pm) in topic.partitions.iter().enumerate() {
            if pm.owner != inner.opts.node_id {
                continue;
            }
            let Ok(partition) = i32::try_from(index) else {
                continue;
            };
            let tp = TopicPartition {
                topic_id: topic.id,
                partition,
            };
            if !backoff.ready(tp, now) {
                continue;
            }
            if let Some(segments) = due_run(
                &state,
                &pm.segments,
                inner.opts.segment_bytes,
                max_age_ms,
                wall,
            ) {
                // Proposed under the epoch this broker acquired the partition at.
                let Ok(part) = inner.partition(tp) else {
                    continue;
                };
                runs.push(Run {
                    tp,
                    leader_epoch: part.leader_epoch,
                    segments,
                });
            }
        }
    }
    let results: Vec<(TopicPartition, Result<()>)> = futures::stream::iter(runs)
        .map(|run| async move { (run.tp, compact(inner, &run).await) })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for (tp, result) in results {
        match result {
            Ok(()) => backoff.succeeded(tp),
            Err(err) => {
                let delay = backoff.failed(tp);
                tracing::warn!(?tp, error = %err, retry_in = ?delay, "compaction failed; the chunks stay indexed");
            }
        }
    }
}

/// Every batch of `seg`, in order: from the tail cache when it still holds them, else from the
/// object (ranged GETs).
async fn batches_of(inner: &Inner, tp: TopicPartition, seg: &SegmentRef) -> Result<Vec<Bytes>> {
    let mut out = Vec::new();
    let mut next = seg.base_offset;
    // Each round moves `next` past at least one batch.
    for _ in 0..=(seg.end_offset - seg.base_offset) {
        if next >= seg.end_offset {
            return Ok(out);
        }
        if let Some(bytes) = inner.tail.get(tp, next) {
            let header = BatchHeader::parse(&bytes)?;
            next = header.last_offset() + 1;
            out.push(bytes);
            continue;
        }
        let read = inner
            .segments
            .read(seg, next, seg.end_offset, READ_BYTES, true)
            .await?;
        let Some((last, _)) = read.last() else {
            return Err(Error::CorruptSegment {
                key: seg.key.clone(),
                reason: format!("no batch at offset {next} below {}", seg.end_offset),
            });
        };
        let last_offset = last.last_offset();
        if last_offset < next {
            return Err(Error::CorruptSegment {
                key: seg.key.clone(),
                reason: format!("read at {next} returned batches ending at {last_offset}"),
            });
        }
        next = last_offset + 1;
        out.extend(read.into_iter().map(|(_, bytes)| bytes));
    }
    Ok(out)
}

async fn compact(inner: &Inner, run: &Run) -> Result<()> {
    let tp = run.tp;
    let (Some(first), Some(last)) = (run.segments.first(), run.segments.last()) else {
        return Ok(());
    };
    let (base_offset, end_offset) = (first.base_offset, last.end_offset);
    let mut builder = SegmentBuilder::new();
    let mut headers = Vec::new();
    // The run's chunks are fetched concurrently (a run can be hundreds of small chunks, each its
    // own GET) and pushed in offset order.
    // (Futures built up front: a closure inside the stream trips the `Send` check of the spawned
    // task — rust-lang/rust#102211.)
    let reads: Vec<_> = run
        .segments
        .iter()
        .map(|seg| batches_of(inner, tp, seg))
        .collect();
    let mut fetched = futures::stream::iter(reads).buffered(READ_CONCURRENCY);
    let mut segments = run.segments.iter();
    while let Some(batches) = fetched.next().await {
        let Some(seg) = segments.next() else {
            break;
        };
        for bytes in batches? {
            // Consecutive segments may share a batch only if the log start moved into it;
            // a batch already pushed is not pushed again.
            let header = BatchHeader::parse(&bytes)?;
            if !builder.is_empty() && header.base_offset < builder.end_offset() {
                continue;
            }
            builder.push(bytes).map_err(|e| Error::CorruptSegment {
                key: seg.key.clone(),
                reason: e.0,
            })?;
            headers.push(header);
        }
    }
    let built = builder.finish().ok_or(Error::ShuttingDown)?;
    if built.footer.end_offset != end_offset {
        return Err(Error::CorruptSegment {
            key: last.key.clone(),
            reason: format!(
                "chunks end at offset {} but the index says {end_offset}",
                built.footer.end_offset
            ),
        });
    }
    let key = segment_key(&inner.opts.cluster_id, tp, base_offset, inner.opts.node_id);
    put_with_retry(inner, &key, &built).await?;
    let segment = SegmentRef {
        key: key.clone(),
        base_offset,
        end_offset,
        data_start: 0,
        data_len: built.data_len,
        min_timestamp: built.min_timestamp,
        max_timestamp: built.max_timestamp,
        created_ms: now_ms(),
        footer_len: 0,
        producer_batches: false,
    };
    if let Err(err) = save_producer_state(inner, tp, run.leader_epoch, &headers, end_offset).await {
        delete_orphan(inner, &key).await;
        return Err(err);
    }
    let proposal = Command::ReplaceSegments {
        tp,
        leader_epoch: run.leader_epoch,
        segment,
        now_ms: now_ms(),
    };
    match inner.meta.propose(proposal).await {
        Ok(CommandResponse::Rejected(rejection)) => {
            delete_orphan(inner, &key).await;
            return Err(Error::Rejected(rejection));
        }
        Ok(_) => {}
        // Maybe applied (e.g. journal behind): keep the object; the next round sees the index.
        Err(err) => return Err(err.into()),
    }
    inner.segments.remember(&key, built.footer);
    tracing::debug!(
        ?tp,
        key,
        base_offset,
        end_offset,
        chunks = run.segments.len(),
        "compacted"
    );
    Ok(())
}

/// The partition state of `tp` as it is acquired: log start and next offset from the index, and
/// the idempotent-producer state — the snapshot in metadata (it covers compacted data) plus the
/// batch headers of the shared WAL chunks after it (S3 WAL mode has no local WAL to replay; the
/// chunks are bounded by the compaction age and include a tail a takeover just indexed).
pub(crate) async fn acquired_state(
    inner: &Inner,
    state: &MetadataState,
    tp: TopicPartition,
    pm: &metadata::PartitionMeta,
) -> Result<crate::partition::PartitionState> {
    let snapshot = state.producer_state(tp);
    let mut table = crate::producer_snapshots::table(inner, tp, snapshot).await?;
    let chunks = producer_chunks(state, tp, pm);
    if !chunks.is_empty() {
        let as_of = snapshot.map_or(i64::MIN, |p| p.as_of_offset);
        // Chunks are fetched concurrently (an object store's per-GET latency would make a
        // sequential read of hundreds of chunks take minutes) and folded in offset order.
        let reads: Vec<_> = chunks
            .into_iter()
            .map(|seg| batches_of(inner, tp, seg))
            .collect();
        let mut fetched = futures::stream::iter(reads).buffered(READ_CONCURRENCY);
        while let Some(batches) = fetched.next().await {
            for bytes in batches? {
                let header = BatchHeader::parse(&bytes)?;
                if header.has_producer_id()
                    && header.base_sequence >= 0
                    && header.last_offset() >= as_of
                {
                    table.record(&header, header.base_offset);
                }
            }
        }
    }
    Ok(
        crate::partition::PartitionState::new(pm.log_start_offset, pm.segmented_end())
            .with_producers(table),
    )
}

/// The shared WAL chunks of `tp` whose idempotent batches the producer snapshot does not cover
/// (flagged when they were written): what acquiring the partition must read.
pub(crate) fn producer_chunks<'a>(
    state: &MetadataState,
    tp: TopicPartition,
    pm: &'a metadata::PartitionMeta,
) -> Vec<&'a SegmentRef> {
    let as_of = state
        .producer_state(tp)
        .map_or(i64::MIN, |p| p.as_of_offset);
    pm.segments
        .iter()
        .filter(|seg| seg.producer_batches && is_shared(state, seg) && seg.end_offset > as_of)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(key: &str, base: i64, end: i64, len: u64, created: i64) -> SegmentRef {
        SegmentRef {
            key: key.into(),
            base_offset: base,
            end_offset: end,
            data_start: 0,
            data_len: len,
            min_timestamp: 0,
            max_timestamp: 0,
            created_ms: created,
            footer_len: 0,
            producer_batches: false,
        }
    }

    fn state_with_shared(keys: &[&str]) -> MetadataState {
        let mut state = MetadataState::default();
        for key in keys {
            state.shared_objects.insert((*key).to_string(), 1);
        }
        state
    }

    #[test]
    fn young_small_chunks_wait_old_or_full_ones_go() {
        let state = state_with_shared(&["w1", "w2"]);
        let big = seg("s0", 0, 10, 1000, 0);
        let segs = vec![
            big,
            seg("w1", 10, 20, 10, 1000),
            seg("w2", 20, 30, 10, 1000),
        ];
        // Young and far below the size: not due.
        assert!(due_run(&state, &segs, 1000, 5000, 2000).is_none());
        // Old: due, and the big exclusive segment is not part of the run.
        let run = due_run(&state, &segs, 1000, 5000, 7000).unwrap();
        assert_eq!(
            run.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
            ["w1", "w2"]
        );
        // Size reached: due although young.
        let run = due_run(&state, &segs, 20, 5000, 2000).unwrap();
        assert_eq!(run.len(), 2);
    }

    #[test]
    fn runs_stop_at_the_size_threshold_and_many_chunks_force_compaction() {
        let keys: Vec<String> = (0..70).map(|i| format!("w{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let state = state_with_shared(&refs);
        let segs: Vec<SegmentRef> = (0..70)
            .map(|i| seg(&keys[i as usize], i * 10, i * 10 + 10, 100, 1000))
            .collect();
        let run = due_run(&state, &segs, 1000, 60_000, 1000).unwrap();
        assert_eq!(run.len(), 10, "capped at segment_bytes");
        assert!(
            due_run(&state, &segs, 1_000_000, 60_000, 1000).is_none(),
            "70 young small chunks wait"
        );
        let keys: Vec<String> = (0..300).map(|i| format!("w{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let state = state_with_shared(&refs);
        let segs: Vec<SegmentRef> = (0..300)
            .map(|i| seg(&keys[i as usize], i * 10, i * 10 + 10, 100, 1000))
            .collect();
        let run = due_run(&state, &segs, 1_000_000, 60_000, 1000).unwrap();
        assert_eq!(
            run.len(),
            300,
            "256+ chunks are due even when young and small"
        );
    }

    #[test]
    fn small_exclusive_segments_merge_only_in_numbers() {
        let state = MetadataState::default();
        let one = vec![seg("a", 0, 10, 10, 0)];
        assert!(due_run(&state, &one, 1000, 10, 100_000).is_none());
        let many: Vec<SegmentRef> = (0..16)
            .map(|i| seg(&format!("s{i}"), i * 10, i * 10 + 10, 10, 0))
            .collect();
        assert_eq!(due_run(&state, &many, 1000, 10, 0).unwrap().len(), 16);
        assert!(due_run(&state, &many[..3], 1000, 10, 100_000).is_none());
    }
}
