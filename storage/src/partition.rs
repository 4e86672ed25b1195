//! Per-partition in-memory state: offset assignment, in-flight appends, the high watermark, the log
//! start offset and the WAL index (durable batches not yet in segment objects).
//!
//! The bookkeeping is a plain state machine ([`PartitionState`]) so its rules are unit-tested without
//! a runtime:
//! - offsets are assigned densely in submit order (`next_offset`);
//! - an append becomes visible (enters the WAL index, moves the high watermark) only when it *and
//!   every append submitted before it* are durable — the high watermark never passes a record that
//!   is not durable, nor a gap left by an append still in flight;
//! - once an append fails, none at or after it ever becomes visible (the WAL is poisoned; offsets are
//!   re-derived from the WAL on restart).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use metadata::TopicPartition;

use crate::producers::ProducerTable;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use wal::Lsn;

/// A durable batch that lives only in the WAL (and maybe the tail cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalEntry {
    pub(crate) lsn: Lsn,
    pub(crate) last_offset: i64,
    pub(crate) max_timestamp: i64,
    /// Batch bytes (without the WAL record header).
    pub(crate) batch_len: usize,
    /// When it became durable (or was recovered): drives the segment age threshold.
    pub(crate) added: Instant,
}

/// Answer to an appender: `Ok` once the batch is visible, or why it never will be.
pub(crate) type AppendWaiter = oneshot::Sender<Result<(), wal::Error>>;

enum InflightStatus {
    Pending,
    /// Durable at this WAL lsn (file WAL), or `None`: durable and indexed in a shared WAL object
    /// (S3 WAL), so there is nothing to keep in the WAL index.
    Durable(Option<Lsn>),
    /// The WAL's error for this very append (taken when it is answered).
    Failed(Option<wal::Error>),
}

struct Inflight {
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    batch_len: usize,
    /// `wal.end_lsn()` read before the record was submitted: a lower bound of its lsn, so the WAL
    /// checkpoint never passes a record whose lsn is not known yet.
    lsn_floor: Lsn,
    status: InflightStatus,
    waiter: Option<AppendWaiter>,
}

pub(crate) struct PartitionState {
    pub(crate) next_offset: i64,
    pub(crate) high_watermark: i64,
    pub(crate) log_start_offset: i64,
    /// base offset → entry; offsets below `high_watermark` only.
    pub(crate) wal_index: BTreeMap<i64, WalEntry>,
    /// Sum of `batch_len` over `wal_index`.
    pub(crate) wal_bytes: u64,
    inflight: VecDeque<Inflight>,
    /// Set once an append failed: appends are refused until the store is reopened.
    pub(crate) poisoned: bool,
    /// Idempotent-producer sequences, updated when an append is submitted (under the append lock,
    /// so they follow offset order).
    pub(crate) producers: ProducerTable,
    /// S3 WAL: chunks acknowledged (stored, with every earlier object of their lane) but not yet
    /// in the metadata index, in offset order; reads find them here meanwhile.
    pub(crate) unindexed: Vec<metadata::SegmentRef>,
}

impl PartitionState {
    pub(crate) fn new(log_start_offset: i64, next_offset: i64) -> Self {
        PartitionState {
            next_offset,
            high_watermark: next_offset,
            log_start_offset,
            wal_index: BTreeMap::new(),
            wal_bytes: 0,
            inflight: VecDeque::new(),
            poisoned: false,
            producers: ProducerTable::default(),
            unindexed: Vec::new(),
        }
    }

    pub(crate) fn with_producers(mut self, producers: ProducerTable) -> Self {
        self.producers = producers;
        self
    }

    /// Registers a batch about to be submitted to the WAL with offsets `base_offset..=last_offset`
    /// (which must start at `next_offset`) and advances `next_offset`.
    ///
    /// `lsn_floor` must be `wal.end_lsn()` read while holding the state lock, *before* the submit:
    /// then a checkpoint either sees this entry or read an end lsn that precedes the record.
    pub(crate) fn begin_append(
        &mut self,
        base_offset: i64,
        last_offset: i64,
        max_timestamp: i64,
        batch_len: usize,
        lsn_floor: Lsn,
        waiter: AppendWaiter,
    ) {
        debug_assert_eq!(base_offset, self.next_offset);
        self.next_offset = last_offset + 1;
        self.inflight.push_back(Inflight {
            base_offset,
            last_offset,
            max_timestamp,
            batch_len,
            lsn_floor,
            status: InflightStatus::Pending,
            waiter: Some(waiter),
        });
    }

    /// Undoes [`begin_append`](Self::begin_append) when the WAL refused the record outright (the
    /// caller still holds the append lock, so it is the last entry).
    pub(crate) fn abort_append(&mut self, base_offset: i64) {
        if let Some(last) = self.inflight.back() {
            if last.base_offset == base_offset && matches!(last.status, InflightStatus::Pending) {
                self.inflight.pop_back();
                self.next_offset = base_offset;
            }
        }
    }

    /// Records the WAL's answer for the append at `base_offset`, then makes visible every leading
    /// in-flight append that is durable. Returns the high watermark afterwards.
    #[cfg(test)]
    pub(crate) fn completed(
        &mut self,
        base_offset: i64,
        result: Result<Lsn, wal::Error>,
        now: Instant,
    ) -> i64 {
        self.completed_at(base_offset, result.map(Some), now)
    }

    /// Like [`completed`](Self::completed) for an append that `None` = landed in an indexed object
    /// (S3 WAL): it becomes visible without a WAL index entry.
    pub(crate) fn completed_at(
        &mut self,
        base_offset: i64,
        result: Result<Option<Lsn>, wal::Error>,
        now: Instant,
    ) -> i64 {
        if let Some(entry) = self
            .inflight
            .iter_mut()
            .find(|e| e.base_offset == base_offset)
        {
            entry.status = match result {
                Ok(lsn) => InflightStatus::Durable(lsn),
                Err(err) => InflightStatus::Failed(Some(err)),
            };
        }
        while let Some(front) = self.inflight.front_mut() {
            let answer = match &mut front.status {
                InflightStatus::Pending => break,
                InflightStatus::Durable(lsn) if !self.poisoned => {
                    if let Some(lsn) = *lsn {
                        self.wal_index.insert(
                            front.base_offset,
                            WalEntry {
                                lsn,
                                last_offset: front.last_offset,
                                max_timestamp: front.max_timestamp,
                                batch_len: front.batch_len,
                                added: now,
                            },
                        );
                        self.wal_bytes += front.batch_len as u64;
                    }
                    self.high_watermark = self.high_watermark.max(front.last_offset + 1);
                    Ok(())
                }
                // Durable, but behind an append that failed: it must not become visible (that would
                // leave a hole of offsets with no data) and must not be acknowledged.
                InflightStatus::Durable(_) => Err(wal::Error::Poisoned),
                InflightStatus::Failed(err) => {
                    self.poisoned = true;
                    Err(err.take().unwrap_or(wal::Error::Poisoned))
                }
            };
            if let Some(waiter) = front.waiter.take() {
                // The appender may have gone away; the bookkeeping above is what matters.
                let _ = waiter.send(answer);
            }
            self.inflight.pop_front();
        }
        self.high_watermark
    }

    /// The smallest lsn this partition still needs from the WAL, if any.
    pub(crate) fn min_lsn(&self) -> Option<Lsn> {
        let indexed = self.wal_index.values().next().map(|e| e.lsn);
        let inflight = self.inflight.front().map(|e| e.lsn_floor);
        match (indexed, inflight) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Forgets WAL index entries wholly below `offset` (now in a segment object, or deleted).
    pub(crate) fn drop_wal_below(&mut self, offset: i64) {
        while let Some(entry) = self.wal_index.first_entry() {
            if entry.get().last_offset >= offset {
                break;
            }
            let removed = entry.remove();
            self.wal_bytes -= removed.batch_len as u64;
        }
    }

    /// The acknowledged, not yet indexed chunk holding `offset`, or the first one after it.
    pub(crate) fn unindexed_at_or_after(&self, offset: i64) -> Option<metadata::SegmentRef> {
        self.unindexed
            .iter()
            .find(|chunk| chunk.end_offset > offset)
            .cloned()
    }

    /// Forgets unindexed chunks of `key` (now in the metadata index, or never to be).
    pub(crate) fn forget_unindexed(&mut self, key: &str) {
        self.unindexed.retain(|chunk| chunk.key != key);
    }

    /// The WAL entry holding `offset`, or the first one after it.
    pub(crate) fn wal_entry_at_or_after(&self, offset: i64) -> Option<(i64, WalEntry)> {
        if let Some((&base, entry)) = self.wal_index.range(..=offset).next_back() {
            if entry.last_offset >= offset {
                return Some((base, *entry));
            }
        }
        self.wal_index
            .range(offset..)
            .next()
            .map(|(&base, entry)| (base, *entry))
    }
}

/// One partition of this broker.
pub(crate) struct Partition {
    pub(crate) tp: TopicPartition,
    /// The leader epoch this broker acquired the partition at: stamped into appended batches and
    /// carried by every metadata write for it (a newer owner's epoch fences them).
    pub(crate) leader_epoch: i32,
    /// Serializes offset assignment + WAL submission, so offsets follow WAL order.
    pub(crate) append_lock: tokio::sync::Mutex<()>,
    state: Mutex<PartitionState>,
    hw_tx: watch::Sender<i64>,
}

impl Partition {
    pub(crate) fn new(tp: TopicPartition, leader_epoch: i32, state: PartitionState) -> Self {
        let (hw_tx, _) = watch::channel(state.high_watermark);
        Partition {
            tp,
            leader_epoch,
            append_lock: tokio::sync::Mutex::new(()),
            state: Mutex::new(state),
            hw_tx,
        }
    }

    /// The state lock is only held for short, non-async bookkeeping.
    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, PartitionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// (log start offset, high watermark).
    pub(crate) fn offsets(&self) -> (i64, i64) {
        let st = self.state();
        (st.log_start_offset, st.high_watermark)
    }

    pub(crate) fn completed(
        &self,
        base_offset: i64,
        result: Result<Lsn, wal::Error>,
    ) -> (i64, u64) {
        self.completed_at(base_offset, result.map(Some))
    }

    /// See [`PartitionState::completed_at`]; publishes the new high watermark.
    pub(crate) fn completed_at(
        &self,
        base_offset: i64,
        result: Result<Option<Lsn>, wal::Error>,
    ) -> (i64, u64) {
        let mut st = self.state();
        let hw = st.completed_at(base_offset, result, Instant::now());
        // Published under the state lock so watchers see watermarks in order.
        self.hw_tx.send_if_modified(|current| {
            if *current < hw {
                *current = hw;
                true
            } else {
                false
            }
        });
        (hw, st.wal_bytes)
    }

    pub(crate) fn hw_watch(&self) -> watch::Receiver<i64> {
        self.hw_tx.subscribe()
    }

    /// Moves the log start offset forward (never back, never past the high watermark).
    pub(crate) fn advance_log_start(&self, offset: i64) -> i64 {
        let mut st = self.state();
        let offset = offset.min(st.high_watermark);
        if offset > st.log_start_offset {
            st.log_start_offset = offset;
            st.drop_wal_below(offset);
        }
        st.log_start_offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter() -> (AppendWaiter, oneshot::Receiver<Result<(), wal::Error>>) {
        oneshot::channel()
    }

    #[test]
    fn visible_only_when_all_earlier_appends_are_durable() {
        let now = Instant::now();
        let mut st = PartitionState::new(0, 10);
        let (a, mut ra) = waiter();
        let (b, mut rb) = waiter();
        st.begin_append(10, 14, 1, 100, 500, a);
        st.begin_append(15, 15, 2, 50, 600, b);
        assert_eq!(st.next_offset, 16);
        assert_eq!(st.min_lsn(), Some(500));
        // The later one completes first: nothing visible, nobody answered yet.
        assert_eq!(st.completed(15, Ok(650), now), 10);
        assert!(rb.try_recv().is_err());
        assert!(st.wal_index.is_empty());
        // Then the earlier one: both visible, both answered.
        assert_eq!(st.completed(10, Ok(520), now), 16);
        assert!(matches!(ra.try_recv(), Ok(Ok(()))));
        assert!(matches!(rb.try_recv(), Ok(Ok(()))));
        assert_eq!(st.wal_index.len(), 2);
        assert_eq!(st.wal_bytes, 150);
        assert_eq!(st.min_lsn(), Some(520));
        assert_eq!(st.wal_entry_at_or_after(12).unwrap().0, 10);
        assert_eq!(st.wal_entry_at_or_after(15).unwrap().0, 15);
        assert!(st.wal_entry_at_or_after(16).is_none());
        assert_eq!(st.wal_entry_at_or_after(3).unwrap().0, 10);
        st.drop_wal_below(15);
        assert_eq!(st.wal_index.len(), 1);
        assert_eq!(st.wal_bytes, 50);
    }

    #[test]
    fn failure_poisons_and_hides_everything_after_it() {
        let now = Instant::now();
        let mut st = PartitionState::new(0, 0);
        let (a, mut ra) = waiter();
        let (b, mut rb) = waiter();
        let (c, mut rc) = waiter();
        st.begin_append(0, 0, 1, 10, 0, a);
        st.begin_append(1, 1, 1, 10, 10, b);
        st.begin_append(2, 2, 1, 10, 20, c);
        assert_eq!(st.completed(0, Ok(0), now), 1);
        assert!(matches!(ra.try_recv(), Ok(Ok(()))));
        // A later append reports durable before the failing one resolves: still hidden.
        assert_eq!(st.completed(2, Ok(30), now), 1);
        assert_eq!(st.completed(1, Err(wal::Error::Closed), now), 1);
        assert!(st.poisoned);
        assert!(matches!(rb.try_recv(), Ok(Err(wal::Error::Closed))));
        assert!(matches!(rc.try_recv(), Ok(Err(wal::Error::Poisoned))));
        assert_eq!(st.high_watermark, 1);
        assert_eq!(st.wal_index.len(), 1);
    }

    #[test]
    fn abort_undoes_the_last_append() {
        let mut st = PartitionState::new(0, 7);
        let (a, _ra) = waiter();
        st.begin_append(7, 9, 1, 10, 0, a);
        assert_eq!(st.min_lsn(), Some(0));
        st.abort_append(7);
        assert_eq!(st.next_offset, 7);
        assert_eq!(st.min_lsn(), None);
        assert_eq!(st.completed(7, Ok(0), Instant::now()), 7);
    }

    #[test]
    fn dropped_waiters_do_not_stop_bookkeeping() {
        let mut st = PartitionState::new(0, 0);
        let (a, ra) = waiter();
        drop(ra);
        st.begin_append(0, 4, 1, 10, 0, a);
        assert_eq!(st.completed(0, Ok(0), Instant::now()), 5);
    }

    #[tokio::test]
    async fn hw_watch_and_log_start() {
        let tp = TopicPartition {
            topic_id: uuid::Uuid::nil(),
            partition: 0,
        };
        let part = Partition::new(tp, 0, PartitionState::new(0, 0));
        let mut watch = part.hw_watch();
        let (a, _ra) = waiter();
        part.state().begin_append(0, 9, 1, 10, 0, a);
        part.completed(0, Ok(0));
        assert!(watch.has_changed().unwrap());
        assert_eq!(*watch.borrow_and_update(), 10);
        assert_eq!(part.advance_log_start(5), 5);
        assert_eq!(part.advance_log_start(3), 5);
        assert_eq!(part.advance_log_start(50), 10);
        assert!(part.state().wal_index.is_empty());
        assert_eq!(part.offsets(), (10, 10));
    }
}
