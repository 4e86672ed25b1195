//! The read side of a partition: fetches (tail cache → WAL → segment objects) and the timestamp
//! lookups of ListOffsets.
//!
//! Data moves WAL → segment while readers run. The writer indexes a segment in metadata *before* it
//! drops the WAL index entries, and readers consult the WAL index *before* the metadata state, so a
//! batch is always found in one of the two; a WAL read that races with the WAL checkpoint gets
//! `NotFound` and is retried, by which time the batch is in a segment.

use bytes::Bytes;
use metadata::{SegmentRef, TopicPartition};

use crate::batch::{self, BatchHeader};
use crate::partition::{Partition, WalEntry};
use crate::{wal_record, Error, Inner, ReadResult, Result};

/// How often a read restarts after racing with the segment writer + WAL checkpoint.
const STALE_RETRIES: usize = 3;

/// One step of a read: batches (last offset, bytes), or "the WAL entry moved, look again".
enum Chunk {
    Batches(Vec<(i64, Bytes)>),
    Moved,
}

/// The segment holding `offset` (or the first one after it) in an index sorted by offset.
fn segment_for(segments: &[SegmentRef], offset: i64) -> Option<&SegmentRef> {
    let index = segments.partition_point(|s| s.end_offset <= offset);
    segments.get(index)
}

impl Inner {
    /// The batch stored in the WAL record at `lsn`, checked to belong to `tp`.
    pub(crate) async fn read_wal_batch(&self, tp: TopicPartition, lsn: wal::Lsn) -> Result<Bytes> {
        let record = self
            .wal
            .as_ref()
            .ok_or(Error::Wal(wal::Error::NotFound(lsn)))?
            .read(lsn)
            .await?;
        let corrupt = |reason: String| {
            Error::Wal(wal::Error::Corrupted {
                file: self.opts.wal.dir.clone(),
                offset: lsn,
                reason,
            })
        };
        let (record_tp, batch) = wal_record::decode(&record).map_err(corrupt)?;
        if record_tp != tp {
            return Err(corrupt(format!(
                "record belongs to {record_tp:?}, expected {tp:?}"
            )));
        }
        Ok(batch)
    }

    /// A WAL-only batch's bytes: from the tail cache when still there, else from the WAL.
    async fn wal_batch(
        &self,
        tp: TopicPartition,
        base_offset: i64,
        entry: &WalEntry,
    ) -> Result<Option<Bytes>> {
        if let Some(bytes) = self.tail.get(tp, base_offset) {
            return Ok(Some(bytes));
        }
        match self.read_wal_batch(tp, entry.lsn).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(Error::Wal(wal::Error::NotFound(_))) => Ok(None),
            Err(err) => Err(err),
        }
    }

    pub(crate) async fn read(
        &self,
        tp: TopicPartition,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        let part = self.partition(tp)?;
        let (log_start, high_watermark) = part.offsets();
        if offset < log_start || offset > high_watermark {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start,
                high_watermark,
            });
        }
        let mut result = ReadResult {
            batches: Vec::new(),
            high_watermark,
            log_start_offset: log_start,
        };
        let mut next = offset;
        let mut total = 0usize;
        let mut retries = 0;
        while next < high_watermark {
            let take_first = result.batches.is_empty();
            let budget = max_bytes.saturating_sub(total);
            if !take_first && budget == 0 {
                break;
            }
            match self
                .read_chunk(&part, next, high_watermark, budget, take_first)
                .await?
            {
                Chunk::Moved if retries < STALE_RETRIES => retries += 1,
                Chunk::Moved => {
                    return Err(Error::Wal(wal::Error::NotFound(0)));
                }
                Chunk::Batches(batches) => {
                    if batches.is_empty() {
                        break;
                    }
                    for (last_offset, bytes) in batches {
                        total += bytes.len();
                        next = last_offset + 1;
                        result.batches.push(bytes);
                    }
                }
            }
        }
        Ok(result)
    }

    /// Whole batches from the one containing `offset`, below `end`, within `budget` bytes.
    async fn read_chunk(
        &self,
        part: &Partition,
        offset: i64,
        end: i64,
        budget: usize,
        take_first: bool,
    ) -> Result<Chunk> {
        let tp = part.tp;
        let cached = self.tail.read(tp, offset, end, budget, take_first);
        if !cached.is_empty() {
            return Ok(Chunk::Batches(
                cached
                    .into_iter()
                    .map(|b| (b.last_offset, b.bytes))
                    .collect(),
            ));
        }

        let wal_entry = part.state().wal_entry_at_or_after(offset);
        if let Some((base, entry)) = wal_entry.filter(|(base, _)| *base <= offset) {
            return self
                .wal_chunk(tp, base, &entry, end, budget, take_first)
                .await;
        }

        // S3 WAL: a chunk acknowledged but not indexed yet. Read before the index: the indexer
        // forgets a chunk here only after metadata has it, so one of the two holds it.
        let unindexed = part.state().unindexed_at_or_after(offset);
        let state = self.meta.state();
        let segments = state
            .partition(tp)
            .map(|pm| pm.segments.as_slice())
            .unwrap_or_default();
        if let Some(seg) = segment_for(segments, offset).or(unindexed.as_ref()) {
            // A sequential reader over small WAL chunks: fetch the next ones in the background.
            if seg.footer_len > 0 {
                let index = segments.partition_point(|s| s.end_offset <= offset);
                if let Some(next) = segments.get(index + 1..) {
                    self.segments.prefetch_chunks(next);
                }
            }
            let batches = self
                .segments
                .read(seg, offset, end, budget, take_first)
                .await?;
            // When this segment holds `offset`, its answer is final: nothing means the byte budget
            // is spent, and looking further (the gap handling below) would skip the rest of it.
            if !batches.is_empty() || seg.base_offset <= offset {
                return Ok(Chunk::Batches(
                    batches
                        .into_iter()
                        .map(|(h, bytes)| (h.last_offset(), bytes))
                        .collect(),
                ));
            }
        }

        // Not held anywhere: a gap in the log (offsets that never got data). Continue with the next
        // batch after it, as Kafka does for gaps.
        if let Some((base, entry)) = wal_entry {
            return self
                .wal_chunk(tp, base, &entry, end, budget, take_first)
                .await;
        }
        Ok(Chunk::Batches(Vec::new()))
    }

    async fn wal_chunk(
        &self,
        tp: TopicPartition,
        base: i64,
        entry: &WalEntry,
        end: i64,
        budget: usize,
        take_first: bool,
    ) -> Result<Chunk> {
        if base >= end || (!take_first && entry.batch_len > budget) {
            return Ok(Chunk::Batches(Vec::new()));
        }
        Ok(match self.wal_batch(tp, base, entry).await? {
            Some(bytes) => Chunk::Batches(vec![(entry.last_offset, bytes)]),
            None => Chunk::Moved,
        })
    }

    pub(crate) async fn offset_for_timestamp(
        &self,
        tp: TopicPartition,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>> {
        let part = self.partition(tp)?;
        for _ in 0..=STALE_RETRIES {
            let (log_start, _) = part.offsets();
            // WAL first, then metadata: see the module docs.
            let wal_candidate = part
                .state()
                .wal_index
                .iter()
                .find(|(_, e)| e.last_offset >= log_start && e.max_timestamp >= timestamp)
                .map(|(&base, e)| (base, *e));
            let unindexed = part.state().unindexed.clone();
            let state = self.meta.state();
            if let Some(pm) = state.partition(tp) {
                for seg in pm
                    .segments
                    .iter()
                    .chain(&unindexed)
                    .filter(|s| s.end_offset > log_start && s.max_timestamp >= timestamp)
                {
                    let min_offset = log_start.max(seg.base_offset);
                    if let Some((_, bytes)) = self
                        .segments
                        .find_by_timestamp(seg, min_offset, timestamp)
                        .await?
                    {
                        return exact_offset_for_timestamp(&bytes, min_offset, timestamp).map(Some);
                    }
                }
            }
            let Some((base, entry)) = wal_candidate else {
                return Ok(None);
            };
            if let Some(bytes) = self.wal_batch(tp, base, &entry).await? {
                return exact_offset_for_timestamp(&bytes, log_start, timestamp).map(Some);
            }
        }
        Err(Error::Wal(wal::Error::NotFound(0)))
    }

    /// (largest timestamp, offset of the first record carrying it), as Kafka answers ListOffsets
    /// MAX_TIMESTAMP: the batch with the largest max timestamp (the earliest wins ties), then the
    /// exact record inside it.
    pub(crate) async fn max_timestamp(&self, tp: TopicPartition) -> Result<Option<(i64, i64)>> {
        let part = self.partition(tp)?;
        for _ in 0..=STALE_RETRIES {
            let (log_start, _) = part.offsets();
            // WAL first, then metadata: see the module docs. (max timestamp, base offset, entry).
            let mut best: Option<(i64, i64, WalEntry)> = None;
            for (&base, entry) in part
                .state()
                .wal_index
                .iter()
                .filter(|(_, e)| e.last_offset >= log_start)
            {
                if best.is_none_or(|(ts, _, _)| entry.max_timestamp > ts) {
                    best = Some((entry.max_timestamp, base, *entry));
                }
            }
            let unindexed = part.state().unindexed.clone();
            let state = self.meta.state();
            let mut best_segment: Option<&SegmentRef> = None;
            if let Some(pm) = state.partition(tp) {
                for seg in pm
                    .segments
                    .iter()
                    .chain(&unindexed)
                    .filter(|s| s.end_offset > log_start)
                {
                    if best_segment.is_none_or(|b| seg.max_timestamp > b.max_timestamp) {
                        best_segment = Some(seg);
                    }
                }
            }
            if let Some(seg) = best_segment {
                // Segments precede WAL data, so a tie goes to the segment.
                if best.is_none_or(|(ts, _, _)| seg.max_timestamp >= ts) {
                    let min_offset = log_start.max(seg.base_offset);
                    if let Some((header, bytes)) = self
                        .segments
                        .find_by_timestamp(seg, min_offset, seg.max_timestamp)
                        .await?
                    {
                        let (offset, _) =
                            exact_offset_for_timestamp(&bytes, min_offset, header.max_timestamp)?;
                        return Ok(Some((header.max_timestamp, offset)));
                    }
                }
            }
            let Some((max_timestamp, base, entry)) = best else {
                return Ok(None);
            };
            if let Some(bytes) = self.wal_batch(tp, base, &entry).await? {
                let (offset, _) = exact_offset_for_timestamp(&bytes, log_start, max_timestamp)?;
                return Ok(Some((max_timestamp, offset)));
            }
        }
        Err(Error::Wal(wal::Error::NotFound(0)))
    }
}

fn exact_offset_for_timestamp(batch: &[u8], min_offset: i64, timestamp: i64) -> Result<(i64, i64)> {
    let header = BatchHeader::parse(batch)?;
    let records = batch::record_timestamps(batch)?;
    let found = records
        .into_iter()
        .find(|&(offset, ts)| offset >= min_offset && ts >= timestamp);
    Ok(found.unwrap_or((header.base_offset.max(min_offset), header.max_timestamp)))
}
