//! Idempotent-producer sequence state of one partition: for every producer id its epoch and its
//! last [`BATCHES_PER_PRODUCER`] batches (sequence range → offsets).
//!
//! Rules (what Kafka brokers do and clients expect), checked before a batch gets offsets:
//! - a batch without a producer id is not tracked;
//! - an epoch below the producer's current one is fenced: INVALID_PRODUCER_EPOCH;
//! - a batch whose sequence range equals one of the cached batches is a retry: the append returns
//!   that batch's original base offset and writes nothing;
//! - otherwise the base sequence must follow the newest batch's last sequence (wrapping at
//!   `i32::MAX`), or be 0 for a new epoch: else OUT_OF_ORDER_SEQUENCE_NUMBER; a sequence older than
//!   every cached batch is DUPLICATE_SEQUENCE_NUMBER;
//! - a producer never seen (or whose state expired) is accepted at any sequence.
//!
//! Durability of this state: the in-memory table is rebuilt at open from the producer snapshot in
//! metadata (`MetadataState::producer_state`, written by the segment writer *before* the WAL data
//! it summarizes can be truncated) plus the headers of the WAL batches at or after the snapshot's
//! `as_of_offset`. So a retry is recognized after a restart whether its original is still in the
//! WAL or already in a segment object, and the state moves with the partition (it is in metadata).

use std::collections::{HashMap, VecDeque};

use metadata::{PartitionProducers, ProducerBatchRecord, ProducerSnapshot};

use crate::batch::BatchHeader;

/// How many batches per producer are remembered (librdkafka and the Java client keep at most
/// five requests in flight per connection with idempotence on).
pub(crate) const BATCHES_PER_PRODUCER: usize = 5;

/// Why a sequenced batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceError {
    InvalidProducerEpoch { current: i16, got: i16 },
    OutOfOrder { expected: i32, got: i32 },
    Duplicate { got: i32 },
}

/// Outcome of checking a batch against the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// Not sequenced, or the next batch of its producer: append it, then [`ProducerTable::record`].
    Append,
    /// A retry of a batch already appended at these offsets.
    Duplicate(ProducerBatchRecord),
}

#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<ProducerBatchRecord>,
    last_timestamp: i64,
    /// Broker wall clock of its last write (or of the restore that loaded it): what expiry counts
    /// from. Not the batches' own timestamps, which clients (and HTTP events) may set to any
    /// time in the past.
    last_write_ms: i64,
}

/// Equal when they de-duplicate the same way: `last_write_ms` is a clock reading, not carried by
/// snapshots (a restored entry gets a fresh one).
impl PartialEq for ProducerEntry {
    fn eq(&self, other: &Self) -> bool {
        self.epoch == other.epoch
            && self.batches == other.batches
            && self.last_timestamp == other.last_timestamp
    }
}

impl Eq for ProducerEntry {}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
}

/// The last sequence of a batch starting at `base` with `delta` more records (sequences wrap from
/// `i32::MAX` to 0, as in Kafka).
fn last_sequence(base: i32, delta: i32) -> i32 {
    let wrapped = (i64::from(base) + i64::from(delta)) % (i64::from(i32::MAX) + 1);
    // In range by construction; the fallback only guards negative input from an unchecked header.
    i32::try_from(wrapped).unwrap_or(0)
}

fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX {
        0
    } else {
        last + 1
    }
}

impl ProducerTable {
    pub(crate) fn from_snapshot(snapshot: &PartitionProducers) -> Self {
        // Restored producers get a full expiration period from now.
        let now = crate::now_ms();
        let producers = snapshot
            .producers
            .iter()
            .map(|p| {
                (
                    p.producer_id,
                    ProducerEntry {
                        epoch: p.epoch,
                        batches: p
                            .batches
                            .iter()
                            .rev()
                            .take(BATCHES_PER_PRODUCER)
                            .rev()
                            .copied()
                            .collect(),
                        last_timestamp: p.last_timestamp,
                        last_write_ms: now,
                    },
                )
            })
            .collect();
        ProducerTable { producers }
    }

    /// Checks a batch that is about to be appended (see the module rules).
    pub(crate) fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        if !header.has_producer_id() || header.base_sequence < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&header.producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        let epoch = header.producer_epoch;
        if epoch < entry.epoch {
            return Err(SequenceError::InvalidProducerEpoch {
                current: entry.epoch,
                got: epoch,
            });
        }
        if epoch > entry.epoch {
            return if header.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    expected: 0,
                    got: header.base_sequence,
                })
            };
        }
        let first_seq = header.base_sequence;
        let last_seq = last_sequence(first_seq, header.last_offset_delta);
        if let Some(original) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(SequenceCheck::Duplicate(*original));
        }
        let Some(newest) = entry.batches.back() else {
            return Ok(SequenceCheck::Append);
        };
        let expected = next_sequence(newest.last_seq);
        if first_seq == expected {
            return Ok(SequenceCheck::Append);
        }
        // Older than anything cached (and not wrapped around): a retry of a batch we no longer
        // remember — it was written, so it must not be written again.
        let oldest = entry.batches.front().map_or(expected, |b| b.first_seq);
        if first_seq < oldest && oldest - first_seq < i32::MAX / 2 {
            return Err(SequenceError::Duplicate { got: first_seq });
        }
        Err(SequenceError::OutOfOrder {
            expected,
            got: first_seq,
        })
    }

    /// Records an appended batch (after [`check`](Self::check) answered `Append`, or during replay).
    pub(crate) fn record(&mut self, header: &BatchHeader, base_offset: i64) {
        if !header.has_producer_id() || header.base_sequence < 0 {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch != entry.epoch {
            // A new epoch starts a new sequence space; the old batches can never be retried again.
            entry.batches.clear();
            entry.epoch = header.producer_epoch;
        }
        entry.batches.push_back(ProducerBatchRecord {
            first_seq: header.base_sequence,
            last_seq: last_sequence(header.base_sequence, header.last_offset_delta),
            base_offset,
            last_offset: base_offset.saturating_add(i64::from(header.last_offset_delta)),
        });
        while entry.batches.len() > BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.last_timestamp = entry.last_timestamp.max(header.max_timestamp);
        entry.last_write_ms = crate::now_ms();
    }

    /// Forgets producers whose last write is older than `cutoff_ms` (Kafka's
    /// `producer.id.expiration.ms`): a later batch of one is accepted as from a new producer.
    /// Returns how many were forgotten.
    pub(crate) fn expire(&mut self, cutoff_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, entry| entry.last_write_ms >= cutoff_ms);
        before - self.producers.len()
    }

    /// Keeps the table within `cap` producers: once it holds more, the least recently written
    /// sixteenth of `cap` (at least the excess) is forgotten in one go, never `keep` (the
    /// producer just written). A forgotten producer's next batch is accepted as from a new one,
    /// as after expiry. Returns how many were forgotten.
    pub(crate) fn bound(&mut self, cap: usize, keep: i64) -> usize {
        if self.producers.len() <= cap {
            return 0;
        }
        let target = cap.saturating_sub(cap / 16);
        let excess = self.producers.len() - target;
        let mut by_age: Vec<(i64, i64)> = self
            .producers
            .iter()
            .filter(|(id, _)| **id != keep)
            .map(|(id, entry)| (entry.last_write_ms, *id))
            .collect();
        let excess = excess.min(by_age.len());
        if excess == 0 {
            return 0;
        }
        if excess < by_age.len() {
            by_age.select_nth_unstable(excess);
        }
        for (_, id) in &by_age[..excess] {
            self.producers.remove(id);
        }
        excess
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }

    /// The table as a metadata snapshot valid at `as_of_offset`: every producer it holds (a large
    /// one is stored as an object, `producer_snapshots`), sorted by id so equal tables give equal
    /// snapshots.
    pub(crate) fn snapshot(&self, as_of_offset: i64) -> PartitionProducers {
        let mut producers: Vec<ProducerSnapshot> = self
            .producers
            .iter()
            .map(|(id, entry)| ProducerSnapshot {
                producer_id: *id,
                epoch: entry.epoch,
                batches: entry.batches.iter().copied().collect(),
                last_timestamp: entry.last_timestamp,
            })
            .collect();
        producers.sort_by_key(|p| p.producer_id);
        PartitionProducers {
            as_of_offset,
            producers,
            spilled: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_bounded_by_forgetting_the_least_recently_written() {
        let mut table = ProducerTable::default();
        for id in 0..32 {
            table.record(&header(id, 0, 0, 1), id);
            // Distinct write times: producer `id` last wrote at `id` ms.
            if let Some(entry) = table.producers.get_mut(&id) {
                entry.last_write_ms = id;
            }
        }
        assert_eq!(table.bound(32, 31), 0, "at the cap nothing goes");
        // Producer 0 writes again (now the most recent), then a 33rd arrives.
        table.record(&header(0, 0, 1, 1), 40);
        table.record(&header(99, 0, 0, 1), 41);
        // Down to 32 - 32/16 = 30: the three least recently written (1, 2, 3) are forgotten.
        assert_eq!(table.bound(32, 99), 3);
        assert_eq!(table.len(), 30);
        for gone in 1..=3 {
            assert!(!table.producers.contains_key(&gone), "{gone} forgotten");
        }
        for kept in [0, 4, 31, 99] {
            assert!(table.producers.contains_key(&kept), "{kept} kept");
        }
        // The producer just written is never the one forgotten, even when it is the oldest.
        let mut tiny = ProducerTable::default();
        tiny.record(&header(1, 0, 0, 1), 0);
        tiny.record(&header(2, 0, 0, 1), 1);
        if let Some(entry) = tiny.producers.get_mut(&2) {
            entry.last_write_ms = 0;
        }
        assert_eq!(tiny.bound(1, 2), 1);
        assert!(tiny.producers.contains_key(&2));
    }

    #[test]
    fn producers_expire_by_their_last_write_not_their_batch_timestamps() {
        let mut table = ProducerTable::default();
        // Batch timestamps far in the past (5 ms after the epoch) do not expire a producer.
        table.record(&header(1, 0, 0, 1), 0);
        table.record(&header(2, 0, 0, 1), 1);
        let now = crate::now_ms();
        assert_eq!(table.expire(now - 60_000), 0);
        assert_eq!(table.len(), 2);
        // Producer 2 writes again; a cutoff between the two writes forgets producer 1 only.
        if let Some(entry) = table.producers.get_mut(&1) {
            entry.last_write_ms = now - 120_000;
        }
        table.record(&header(2, 0, 1, 1), 2);
        assert_eq!(table.expire(now - 60_000), 1);
        assert_eq!(table.len(), 1);
        // A forgotten producer is new again: any sequence is accepted.
        assert_eq!(table.check(&header(1, 0, 7, 1)), Ok(SequenceCheck::Append));
        assert!(matches!(
            table.check(&header(2, 0, 1, 1)),
            Ok(SequenceCheck::Duplicate(_))
        ));
    }

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 1,
            max_timestamp: 5,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: records,
        }
    }

    #[test]
    fn in_order_batches_append_and_retries_get_their_offsets() {
        let mut table = ProducerTable::default();
        let a = header(7, 0, 0, 10);
        assert_eq!(table.check(&a), Ok(SequenceCheck::Append));
        table.record(&a, 100);
        let b = header(7, 0, 10, 5);
        assert_eq!(table.check(&b), Ok(SequenceCheck::Append));
        table.record(&b, 110);
        match table.check(&a) {
            Ok(SequenceCheck::Duplicate(original)) => {
                assert_eq!((original.base_offset, original.last_offset), (100, 109))
            }
            other => panic!("expected a duplicate, got {other:?}"),
        }
        assert!(matches!(
            table.check(&b),
            Ok(SequenceCheck::Duplicate(ProducerBatchRecord {
                base_offset: 110,
                ..
            }))
        ));
        // A gap, and a range that overlaps a cached one without matching it.
        assert_eq!(
            table.check(&header(7, 0, 16, 1)),
            Err(SequenceError::OutOfOrder {
                expected: 15,
                got: 16
            })
        );
        assert!(matches!(
            table.check(&header(7, 0, 12, 1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        // Unsequenced batches and unknown producers are not checked.
        assert_eq!(
            table.check(&header(-1, -1, -1, 3)),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(table.check(&header(8, 0, 42, 3)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn epochs_fence_and_reset_sequences() {
        let mut table = ProducerTable::default();
        table.record(&header(7, 3, 0, 2), 0);
        assert_eq!(
            table.check(&header(7, 2, 2, 1)),
            Err(SequenceError::InvalidProducerEpoch { current: 3, got: 2 })
        );
        assert!(matches!(
            table.check(&header(7, 4, 2, 1)),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
        let bumped = header(7, 4, 0, 1);
        assert_eq!(table.check(&bumped), Ok(SequenceCheck::Append));
        table.record(&bumped, 2);
        // The old epoch is now fenced, and its batches are forgotten.
        assert!(matches!(
            table.check(&header(7, 3, 0, 2)),
            Err(SequenceError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut table = ProducerTable::default();
        for i in 0..8 {
            table.record(&header(1, 0, i, 1), i64::from(i));
        }
        assert!(matches!(
            table.check(&header(1, 0, 3, 1)),
            Ok(SequenceCheck::Duplicate(_))
        ));
        assert_eq!(
            table.check(&header(1, 0, 2, 1)),
            Err(SequenceError::Duplicate { got: 2 })
        );
        assert_eq!(table.check(&header(1, 0, 8, 1)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut table = ProducerTable::default();
        let near_end = header(1, 0, i32::MAX - 1, 3);
        table.record(&near_end, 0);
        assert_eq!(table.check(&header(1, 0, 1, 1)), Ok(SequenceCheck::Append));
        assert!(matches!(
            table.check(&near_end),
            Ok(SequenceCheck::Duplicate(_))
        ));
    }

    #[test]
    fn snapshot_round_trip_keeps_duplicates_detectable() {
        let mut table = ProducerTable::default();
        for producer in 0..3 {
            for i in 0..7 {
                table.record(&header(producer, 1, i * 2, 2), i64::from(i) * 10);
            }
        }
        let snapshot = table.snapshot(99);
        assert_eq!(snapshot.as_of_offset, 99);
        assert!(snapshot
            .producers
            .iter()
            .all(|p| p.batches.len() == BATCHES_PER_PRODUCER));
        let restored = ProducerTable::from_snapshot(&snapshot);
        assert_eq!(restored, table);
        assert!(matches!(
            restored.check(&header(2, 1, 12, 2)),
            Ok(SequenceCheck::Duplicate(ProducerBatchRecord {
                base_offset: 60,
                ..
            }))
        ));
    }
}
