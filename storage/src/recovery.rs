//! Recovery at open: replays the WAL and rebuilds, per partition, the WAL index (durable batches not
//! yet in segment objects), the next offset and the high watermark.
//!
//! Batches of topics that no longer exist, and batches wholly below a partition's `segmented_end()`
//! (already in segment objects, or deleted by retention/DeleteRecords), are skipped; the WAL
//! checkpoint drops them later. Offsets continue densely: a partition's next offset is the end of its
//! last WAL batch, or its segmented end when the WAL holds nothing newer.

use std::collections::HashMap;
use std::sync::Arc;

use metadata::TopicPartition;
use tokio::time::Instant;

use crate::batch::BatchHeader;
use crate::partition::{Partition, PartitionState, WalEntry};
use crate::producers::ProducerTable;
use crate::{wal_record, Inner, Result};

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RecoveryStats {
    pub(crate) records: u64,
    pub(crate) recovered_batches: u64,
    pub(crate) skipped_unknown_topic: u64,
    pub(crate) skipped_not_owned: u64,
    pub(crate) skipped_segmented: u64,
    pub(crate) skipped_unreadable: u64,
    /// Per partition with recovered WAL data: the highest leader epoch stamped in its batches
    /// and the offset after them.
    pub(crate) tails: Vec<(TopicPartition, i32, i64)>,
}

/// The leader epoch in force was bumped at the index end (registration or acquire), before this
/// store opened; the recovered WAL tail of a partition was written under older epochs, so the
/// current epoch really starts after it. Recorded in metadata (fenced by the captured epoch) so
/// OffsetForLeaderEpoch answers the true end of the older epochs.
pub(crate) async fn record_epoch_starts(inner: &Inner, stats: &RecoveryStats) {
    let mut entries = Vec::new();
    for &(tp, max_batch_epoch, next_offset) in &stats.tails {
        let Some(part) = inner.loaded_partition(tp) else {
            continue;
        };
        if max_batch_epoch >= part.leader_epoch {
            continue;
        }
        let state = inner.meta.state();
        let recorded = state
            .partition(tp)
            .and_then(|pm| pm.epoch_starts.last().copied())
            .filter(|last| last.epoch == part.leader_epoch);
        if recorded.is_some_and(|last| last.start_offset >= next_offset) {
            continue;
        }
        entries.push(metadata::EpochStartEntry {
            tp,
            leader_epoch: part.leader_epoch,
            start_offset: next_offset,
        });
    }
    // Well below the command size limit per proposal.
    for chunk in entries.chunks(EPOCH_STARTS_PER_COMMAND) {
        let proposal = metadata::Command::SetEpochStarts {
            entries: chunk.to_vec(),
        };
        match inner.meta.propose(proposal).await {
            Ok(metadata::CommandResponse::Entries(outcomes)) => {
                for (entry, outcome) in chunk.iter().zip(outcomes) {
                    if let Some(rejection) = outcome {
                        tracing::warn!(tp = ?entry.tp, %rejection, "epoch start not recorded");
                    }
                }
            }
            Ok(other) => tracing::warn!(?other, "epoch starts not recorded"),
            Err(err) => tracing::warn!(error = %err, "epoch starts not recorded"),
        }
    }
}

/// Entries of one `SetEpochStarts` proposal (about 150 bytes each encoded).
const EPOCH_STARTS_PER_COMMAND: usize = 2_000;

pub(crate) fn recover(inner: &Inner) -> Result<RecoveryStats> {
    // The S3 WAL keeps nothing locally: its data is in indexed objects (see `object_recovery`).
    let Some(wal) = &inner.wal else {
        return Ok(RecoveryStats::default());
    };
    let state = inner.meta.state();
    let now = Instant::now();
    let mut stats = RecoveryStats::default();
    let mut partitions: HashMap<TopicPartition, PartitionState> = HashMap::new();
    // Producer sequences: the metadata snapshot plus every WAL batch at or after its offset (the
    // WAL may still hold batches that are already in segments; those count too).
    let mut producers: HashMap<TopicPartition, ProducerTable> = HashMap::new();
    let mut max_epochs: HashMap<TopicPartition, i32> = HashMap::new();
    for item in wal.replay(wal.start_lsn())? {
        let (lsn, record) = item?;
        stats.records += 1;
        let (tp, batch) = match wal_record::decode(&record) {
            Ok(decoded) => decoded,
            Err(reason) => {
                // The WAL's CRC vouched for these bytes, so this is a record we do not understand
                // (a newer format), not a torn write. It cannot be routed; say so loudly.
                tracing::error!(lsn, %reason, "skipping an unreadable data WAL record");
                stats.skipped_unreadable += 1;
                continue;
            }
        };
        let Some(pm) = state.partition(tp) else {
            stats.skipped_unknown_topic += 1;
            continue;
        };
        if pm.owner != inner.opts.node_id {
            // Another broker owns it now and continues from its index: this tail is not ours.
            stats.skipped_not_owned += 1;
            continue;
        }
        let header = match BatchHeader::parse(&batch) {
            Ok(header) if header.total_len() == batch.len() && header.last_offset_delta >= 0 => {
                header
            }
            _ => {
                tracing::error!(
                    lsn,
                    ?tp,
                    "skipping a data WAL record whose batch header is inconsistent"
                );
                stats.skipped_unreadable += 1;
                continue;
            }
        };
        let snapshot = state.producer_state(tp);
        if header.has_producer_id()
            && header.last_offset() >= snapshot.map_or(0, |s| s.as_of_offset)
        {
            let table = match producers.entry(tp) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(restored_producers(inner, tp, snapshot)?)
                }
            };
            table.record(&header, header.base_offset);
        }
        let segmented_end = pm.segmented_end();
        if header.last_offset() < segmented_end {
            stats.skipped_segmented += 1;
            continue;
        }
        let max_epoch = max_epochs.entry(tp).or_insert(i32::MIN);
        *max_epoch = (*max_epoch).max(header.partition_leader_epoch);
        let st = partitions
            .entry(tp)
            .or_insert_with(|| PartitionState::new(pm.log_start_offset, segmented_end));
        if !st.wal_index.is_empty() && header.base_offset < st.next_offset {
            // Offsets are assigned once and the WAL is written in offset order; an overlap can only
            // be a duplicate of data we already hold.
            tracing::warn!(
                lsn,
                ?tp,
                base_offset = header.base_offset,
                next_offset = st.next_offset,
                "skipping a WAL batch that overlaps earlier data"
            );
            stats.skipped_unreadable += 1;
            continue;
        }
        if header.base_offset > st.next_offset {
            tracing::warn!(
                ?tp,
                from = st.next_offset,
                to = header.base_offset,
                "gap of offsets without data in the WAL"
            );
        }
        st.wal_index.insert(
            header.base_offset,
            WalEntry {
                lsn,
                last_offset: header.last_offset(),
                max_timestamp: header.max_timestamp,
                batch_len: batch.len(),
                added: now,
            },
        );
        st.wal_bytes += batch.len() as u64;
        st.next_offset = header.last_offset() + 1;
        st.high_watermark = st.next_offset;
        stats.recovered_batches += 1;
    }
    let mut loaded = inner.partitions.write().unwrap_or_else(|e| e.into_inner());
    for (tp, st) in partitions {
        if let Some(&max_epoch) = max_epochs.get(&tp) {
            stats.tails.push((tp, max_epoch, st.next_offset));
        }
        let table = match producers.remove(&tp) {
            Some(table) => table,
            None => restored_producers(inner, tp, state.producer_state(tp))?,
        };
        let epoch = state
            .partition(tp)
            .map_or(0, |pm| inner.acquired_epoch(tp, pm));
        loaded.insert(
            tp,
            Arc::new(Partition::new(tp, epoch, st.with_producers(table))),
        );
    }
    // Partitions whose WAL batches are all in segments already: their sequences still count.
    for (tp, table) in producers {
        if let Some(pm) = state.partition(tp) {
            let st =
                PartitionState::new(pm.log_start_offset, pm.segmented_end()).with_producers(table);
            let epoch = inner.acquired_epoch(tp, pm);
            loaded.insert(tp, Arc::new(Partition::new(tp, epoch, st)));
        }
    }
    tracing::info!(?stats, "data WAL replayed");
    Ok(stats)
}

/// The producer table of a metadata snapshot, a spilled one from the cache `preload` filled.
fn restored_producers(
    inner: &Inner,
    tp: TopicPartition,
    snapshot: Option<&metadata::PartitionProducers>,
) -> Result<ProducerTable> {
    crate::producer_snapshots::table_now(inner, tp, snapshot).ok_or_else(|| {
        crate::Error::CorruptSegment {
            key: snapshot
                .and_then(|s| s.spilled.as_ref())
                .map_or_else(String::new, |s| s.key.clone()),
            reason: "spilled producer snapshot was not preloaded before the WAL replay".into(),
        }
    })
}
