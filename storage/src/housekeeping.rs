//! Housekeeping, every `housekeeping_interval`: retention (time and size) moves the log start offset
//! past whole segment objects, and the object GC deletes objects that left the index more than
//! `gc_grace` ago.
//!
//! Both only ever act through metadata first: retention proposes `AdvanceLogStart` (the state machine
//! moves the removed segments to `deleted_objects`), the GC deletes an object only once it has been
//! out of the index for the grace period (so in-flight reads of it finish), then proposes
//! `ForgetDeletedObjects`.
//!
//! Persisted before acted on: the GC reads `MetadataClient::durable_state`, so it deletes only
//! objects whose removal from the index is stored in the bucket metadata log. A crash while the
//! log lags can then never restore an index that points at a deleted object.
//!
//! S3 WAL lanes are swept every `sweep_interval`, never by an object's age (a paused process's PUT
//! has no time bound) but by what the durable metadata says of its incarnation and lane: an object
//! above a sealed lane's seal is never indexed; an object at or below a lane's mark that neither
//! the index nor the GC queue references has no chunk anyone reads. Both are deleted. Tombstones
//! (the seals) and everything of an incarnation that is dead but not sealed yet stay.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use metadata::{Command, CommandResponse, PartitionMeta, TopicPartition};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use tokio_util::sync::CancellationToken;

use crate::{lock, now_ms, Inner, Result, Retention};

/// Object deletions issued at the same time.
const DELETE_CONCURRENCY: usize = 8;
/// Objects handled per GC pass (and per `ForgetDeletedObjects` proposal).
const GC_BATCH: usize = 1000;

pub(crate) async fn run(inner: Arc<Inner>, cancel: CancellationToken) {
    let mut interval = tokio::time::interval(inner.opts.housekeeping_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
            _ = inner.housekeeping_passes.requested() => {}
        }
        // Abandoning a pass half-way is safe: every step is idempotent and ordered metadata-first.
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = inner.housekeeping_passes.run(pass_and_sweep(&inner, &mut last_sweep)) => {}
        }
    }
}

/// One pass, then a sweep of the S3 WAL lanes when `sweep_interval` has passed since the last.
async fn pass_and_sweep(inner: &Inner, last_sweep: &mut Option<tokio::time::Instant>) {
    pass(inner).await;
    let Some(wal) = &inner.opts.object_wal else {
        return;
    };
    if last_sweep.is_some_and(|at| at.elapsed() < wal.sweep_interval) {
        return;
    }
    *last_sweep = Some(tokio::time::Instant::now());
    match sweep_wal_lanes(inner).await {
        Ok(0) => {}
        Ok(count) => tracing::info!(count, "swept WAL objects no index will ever reference"),
        Err(err) => tracing::warn!(error = %err, "WAL lane sweep failed"),
    }
}

/// Deletes the lane objects that the durable metadata shows nobody will ever read (module docs).
async fn sweep_wal_lanes(inner: &Inner) -> Result<usize> {
    let state = inner.meta.durable_state().await?;
    let mut garbage = Vec::new();
    for (id, incarnation) in state.incarnations.iter() {
        if !incarnation.live && incarnation.sealed.is_none() {
            continue;
        }
        let prefix = ObjectPath::from(format!("{}/wal/{}", inner.opts.cluster_id, id.as_simple()));
        let listed: Vec<object_store::ObjectMeta> =
            inner.objects.list(Some(&prefix)).try_collect().await?;
        for meta in listed {
            let key = meta.location.to_string();
            let mut parts = key.rsplit('/');
            let (Some(Ok(seq)), Some(Ok(lane))) = (
                parts.next().map(str::parse::<u64>),
                parts.next().map(str::parse::<usize>),
            ) else {
                continue;
            };
            let unreferenced = || {
                !state.shared_objects.contains_key(&key)
                    && !state.deleted_objects.iter().any(|(k, _)| *k == key)
            };
            let sweep = match &incarnation.sealed {
                Some(seals) => seals
                    .get(lane)
                    .is_some_and(|&seal| seq > seal || (seq < seal && unreferenced())),
                None => incarnation
                    .indexed_through
                    .get(lane)
                    .is_some_and(|&mark| seq <= mark && unreferenced()),
            };
            if sweep {
                garbage.push(meta.location);
            }
        }
    }
    let count = garbage.len();
    let results: Vec<_> = futures::stream::iter(garbage)
        .map(|path| async move {
            match inner.objects.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(err) => Err(err),
            }
        })
        .buffer_unordered(DELETE_CONCURRENCY)
        .collect()
        .await;
    results
        .into_iter()
        .collect::<std::result::Result<Vec<()>, _>>()?;
    Ok(count)
}

async fn pass(inner: &Inner) {
    expire_producers(inner);
    if let Err(err) = apply_retention(inner).await {
        tracing::warn!(error = %err, "retention pass failed");
    }
    if let Err(err) = collect_garbage(inner).await {
        tracing::warn!(error = %err, "object GC pass failed");
    }
}

/// Forgets idempotent producers not heard from for `producer_id_expiration` (bounds the tables:
/// every `Idempotency-Key` of HTTP ingest is a producer of its own).
fn expire_producers(inner: &Inner) {
    let cutoff = crate::now_ms().saturating_sub(
        i64::try_from(inner.opts.producer_id_expiration.as_millis()).unwrap_or(i64::MAX),
    );
    let mut expired = 0;
    for part in inner.loaded_partitions() {
        expired += part.state().producers.expire(cutoff);
    }
    if expired > 0 {
        tracing::debug!(expired, "idempotent producers expired");
    }
}

/// Where retention moves the log start of a partition, if anywhere: the end of the longest prefix
/// of its segments that is expired by time (`max_timestamp` older than `retention.ms`), or that can
/// go while the partition keeps at least `retention.bytes` (Kafka's rule). Data only in the WAL
/// counts towards the size but is never deleted here.
pub(crate) fn retention_cut(
    pm: &PartitionMeta,
    retention: Retention,
    now_ms: i64,
    wal_bytes: u64,
) -> Option<i64> {
    let mut cut: Option<i64> = None;
    if retention.ms >= 0 {
        let oldest_kept = now_ms.saturating_sub(retention.ms);
        for seg in pm
            .segments
            .iter()
            .take_while(|s| s.max_timestamp < oldest_kept)
        {
            cut = Some(seg.end_offset);
        }
    }
    if retention.bytes >= 0 {
        let limit = retention.bytes as u64;
        let mut total = pm.segments.iter().map(|s| s.data_len).sum::<u64>() + wal_bytes;
        for seg in &pm.segments {
            if total.saturating_sub(seg.data_len) < limit {
                break;
            }
            total -= seg.data_len;
            cut = Some(cut.map_or(seg.end_offset, |c| c.max(seg.end_offset)));
        }
    }
    cut.filter(|&c| c > pm.log_start_offset)
}

fn wal_bytes_of(inner: &Inner, tp: TopicPartition) -> u64 {
    inner
        .loaded_partition(tp)
        .map_or(0, |part| part.state().wal_bytes)
}

async fn apply_retention(inner: &Inner) -> Result<()> {
    let policies: Vec<(uuid::Uuid, Retention)> = lock(&inner.retention)
        .iter()
        .map(|(id, r)| (*id, *r))
        .collect();
    let state = inner.meta.state();
    let now = now_ms();
    for (topic_id, retention) in policies {
        if retention.ms < 0 && retention.bytes < 0 {
            continue;
        }
        let Some(topic) = state.topics.get(&topic_id) else {
            continue;
        };
        for (index, pm) in topic.partitions.iter().enumerate() {
            if pm.owner != inner.opts.node_id {
                continue;
            }
            let Ok(partition) = i32::try_from(index) else {
                continue;
            };
            let tp = TopicPartition {
                topic_id,
                partition,
            };
            let Some(cut) = retention_cut(pm, retention, now, wal_bytes_of(inner, tp)) else {
                continue;
            };
            // The partition's state (created now if it was never used) holds the epoch it was
            // acquired at; the cut is proposed under it.
            let part = match inner.partition(tp) {
                Ok(part) => part,
                Err(err) => {
                    tracing::debug!(?tp, error = %err, "retention: partition not served here");
                    continue;
                }
            };
            let response = inner
                .meta
                .propose(Command::AdvanceLogStart {
                    tp,
                    offset: cut,
                    now_ms: now,
                    leader_epoch: part.leader_epoch,
                })
                .await?;
            match response {
                CommandResponse::LogStart(new_start) => {
                    tracing::info!(?tp, new_start, "retention advanced the log start");
                    part.advance_log_start(new_start);
                }
                CommandResponse::Rejected(rejection) => {
                    tracing::warn!(?tp, %rejection, "retention: log start not advanced");
                }
                _ => {}
            }
        }
    }
    Ok(())
}

async fn collect_garbage(inner: &Inner) -> Result<()> {
    // Only what the bucket log already holds (a pass waits at most the persist timeout).
    let state = inner.meta.durable_state().await?;
    let grace_ms = i64::try_from(inner.opts.gc_grace.as_millis()).unwrap_or(i64::MAX);
    let now = now_ms();
    let expired: Vec<String> = state
        .deleted_objects
        .iter()
        .filter(|(_, removed_ms)| now.saturating_sub(*removed_ms) >= grace_ms)
        .take(GC_BATCH)
        .map(|(key, _)| key.clone())
        .collect();
    if expired.is_empty() {
        return Ok(());
    }
    let deleted: Vec<String> = futures::stream::iter(expired)
        .map(|key| async move {
            match inner.objects.delete(&ObjectPath::from(key.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Some(key),
                Err(err) => {
                    tracing::warn!(key, error = %err, "GC could not delete an object; will retry");
                    None
                }
            }
        })
        .buffer_unordered(DELETE_CONCURRENCY)
        .filter_map(|key| async move { key })
        .collect()
        .await;
    if deleted.is_empty() {
        return Ok(());
    }
    for key in &deleted {
        inner.segments.forget(key);
    }
    tracing::info!(count = deleted.len(), "GC deleted objects");
    inner
        .meta
        .propose(Command::ForgetDeletedObjects { keys: deleted })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use metadata::SegmentRef;

    fn seg(base: i64, end: i64, len: u64, max_ts: i64) -> SegmentRef {
        SegmentRef {
            key: format!("k{base}"),
            base_offset: base,
            end_offset: end,
            data_start: 0,
            data_len: len,
            min_timestamp: max_ts - 5,
            max_timestamp: max_ts,
            created_ms: 0,
            footer_len: 0,
            producer_batches: false,
        }
    }

    fn pm(segments: Vec<SegmentRef>) -> PartitionMeta {
        PartitionMeta {
            owner: 1,
            leader_epoch: 0,
            log_start_offset: 0,
            segments,
            epoch_starts: Vec::new(),
        }
    }

    #[test]
    fn time_retention_cuts_an_expired_prefix() {
        let p = pm(vec![
            seg(0, 10, 100, 1_000),
            seg(10, 20, 100, 5_000),
            seg(20, 30, 100, 2_000),
        ]);
        let unlimited = Retention { ms: -1, bytes: -1 };
        assert_eq!(retention_cut(&p, unlimited, 10_000, 0), None);
        let r = Retention {
            ms: 6_000,
            bytes: -1,
        };
        // Cutoff 4_000: only the first segment is older; the third is older too but not a prefix.
        assert_eq!(retention_cut(&p, r, 10_000, 0), Some(10));
        assert_eq!(retention_cut(&p, r, 20_000, 0), Some(30));
        assert_eq!(retention_cut(&p, r, 6_500, 0), None);
    }

    #[test]
    fn size_retention_keeps_at_least_the_limit() {
        let p = pm(vec![
            seg(0, 10, 100, 1),
            seg(10, 20, 100, 1),
            seg(20, 30, 100, 1),
        ]);
        let r = |bytes| Retention { ms: -1, bytes };
        assert_eq!(retention_cut(&p, r(300), 0, 0), None);
        assert_eq!(retention_cut(&p, r(200), 0, 0), Some(10));
        assert_eq!(retention_cut(&p, r(150), 0, 0), Some(10));
        assert_eq!(retention_cut(&p, r(100), 0, 0), Some(20));
        // WAL-only data counts towards the size.
        assert_eq!(retention_cut(&p, r(100), 0, 100), Some(30));
        assert_eq!(retention_cut(&p, r(0), 0, 0), Some(30));
        // Already there: nothing to do.
        let mut moved = p.clone();
        moved.log_start_offset = 20;
        assert_eq!(retention_cut(&moved, r(100), 0, 0), None);
    }
}
