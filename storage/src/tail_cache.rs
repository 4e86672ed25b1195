//! The tail cache: the most recently appended batches of every partition, kept in memory so tailing
//! consumers (and the segment writer) never touch the WAL or the object store.
//!
//! Bounded globally by bytes; the oldest insert is evicted first. Batches enter when they are submitted
//! to the WAL, before they are durable: the cache never decides visibility, readers stop at the high
//! watermark. Eviction is always safe because every durable batch is also in the WAL or in a segment.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use metadata::TopicPartition;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub(crate) struct CachedBatch {
    pub(crate) base_offset: i64,
    pub(crate) last_offset: i64,
    pub(crate) bytes: Bytes,
}

pub(crate) struct TailCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    used: usize,
    live: usize,
    /// Insertion order for eviction. May hold keys already removed (dropped topics); those are
    /// skipped on eviction and compacted away when they outnumber the live entries.
    order: VecDeque<(TopicPartition, i64)>,
    partitions: HashMap<TopicPartition, BTreeMap<i64, CachedBatch>>,
}

impl Inner {
    fn remove(&mut self, tp: TopicPartition, base_offset: i64) {
        let Some(batches) = self.partitions.get_mut(&tp) else {
            return;
        };
        if let Some(removed) = batches.remove(&base_offset) {
            self.used -= removed.bytes.len();
            self.live -= 1;
        }
        if batches.is_empty() {
            self.partitions.remove(&tp);
        }
    }
}

impl TailCache {
    pub(crate) fn new(capacity: usize) -> Self {
        TailCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(
        &self,
        tp: TopicPartition,
        base_offset: i64,
        last_offset: i64,
        bytes: Bytes,
    ) {
        let len = bytes.len();
        if len > self.capacity {
            return;
        }
        let mut inner = self.lock();
        let previous = inner.partitions.entry(tp).or_default().insert(
            base_offset,
            CachedBatch {
                base_offset,
                last_offset,
                bytes,
            },
        );
        match previous {
            Some(old) => inner.used -= old.bytes.len(),
            None => inner.live += 1,
        }
        inner.used += len;
        inner.order.push_back((tp, base_offset));
        while inner.used > self.capacity {
            let Some((old_tp, old_base)) = inner.order.pop_front() else {
                break;
            };
            inner.remove(old_tp, old_base);
        }
        if inner.order.len() > 2 * inner.live + 64 {
            let Inner {
                order, partitions, ..
            } = &mut *inner;
            order.retain(|(tp, base)| partitions.get(tp).is_some_and(|b| b.contains_key(base)));
        }
    }

    /// The batch starting exactly at `base_offset`.
    pub(crate) fn get(&self, tp: TopicPartition, base_offset: i64) -> Option<Bytes> {
        let inner = self.lock();
        inner
            .partitions
            .get(&tp)?
            .get(&base_offset)
            .map(|b| b.bytes.clone())
    }

    /// The cached batch containing `offset` and the contiguous batches after it, stopping before
    /// `end` (the high watermark), at a gap in the cache, or when the next batch would take the total
    /// past `max_bytes`. The first batch is returned even when it alone exceeds `max_bytes` if
    /// `take_first` is set.
    pub(crate) fn read(
        &self,
        tp: TopicPartition,
        offset: i64,
        end: i64,
        max_bytes: usize,
        take_first: bool,
    ) -> Vec<CachedBatch> {
        let inner = self.lock();
        let Some(batches) = inner.partitions.get(&tp) else {
            return Vec::new();
        };
        let Some((&start, first)) = batches.range(..=offset).next_back() else {
            return Vec::new();
        };
        if first.last_offset < offset {
            return Vec::new();
        }
        let mut out: Vec<CachedBatch> = Vec::new();
        let mut total = 0usize;
        for batch in batches.range(start..).map(|(_, b)| b) {
            if batch.base_offset >= end {
                break;
            }
            if let Some(prev) = out.last() {
                if batch.base_offset != prev.last_offset + 1 {
                    break;
                }
            }
            let fits = total + batch.bytes.len() <= max_bytes;
            if !(fits || out.is_empty() && take_first) {
                break;
            }
            total += batch.bytes.len();
            out.push(batch.clone());
        }
        out
    }

    pub(crate) fn remove_topic(&self, topic_id: Uuid) {
        let mut inner = self.lock();
        let doomed: Vec<TopicPartition> = inner
            .partitions
            .keys()
            .filter(|tp| tp.topic_id == topic_id)
            .copied()
            .collect();
        for tp in doomed {
            if let Some(batches) = inner.partitions.remove(&tp) {
                inner.used -= batches.values().map(|b| b.bytes.len()).sum::<usize>();
                inner.live -= batches.len();
            }
        }
    }

    /// Forgets one partition's batches (released by this broker).
    pub(crate) fn remove_partition(&self, tp: TopicPartition) {
        let mut inner = self.lock();
        if let Some(batches) = inner.partitions.remove(&tp) {
            inner.used -= batches.values().map(|b| b.bytes.len()).sum::<usize>();
            inner.live -= batches.len();
        }
    }

    /// Forgets everything (a new incarnation assigns the offsets of batches that failed again).
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        *inner = Inner::default();
    }

    #[cfg(test)]
    pub(crate) fn used_bytes(&self) -> usize {
        self.lock().used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition {
            topic_id: Uuid::from_u128(1),
            partition,
        }
    }

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn reads_contiguous_runs_below_end_and_budget() {
        let cache = TailCache::new(10_000);
        for i in 0..10 {
            cache.insert(tp(0), i * 2, i * 2 + 1, bytes(100));
        }
        // Middle of a batch: the whole batch is returned.
        let got = cache.read(tp(0), 5, 20, 10_000, true);
        assert_eq!(got.first().unwrap().base_offset, 4);
        assert_eq!(got.len(), 8);
        // The end (high watermark) stops the run.
        assert_eq!(cache.read(tp(0), 0, 6, 10_000, true).len(), 3);
        // Budget: whole batches only, at least one when asked.
        assert_eq!(cache.read(tp(0), 0, 20, 250, true).len(), 2);
        assert_eq!(cache.read(tp(0), 0, 20, 50, true).len(), 1);
        assert_eq!(cache.read(tp(0), 0, 20, 50, false).len(), 0);
        // Past the cached range.
        assert!(cache.read(tp(0), 20, 30, 10_000, true).is_empty());
        assert!(cache.read(tp(1), 0, 30, 10_000, true).is_empty());
    }

    #[test]
    fn gap_stops_a_run() {
        let cache = TailCache::new(10_000);
        cache.insert(tp(0), 0, 0, bytes(10));
        cache.insert(tp(0), 5, 5, bytes(10));
        assert_eq!(cache.read(tp(0), 0, 10, 1000, true).len(), 1);
        assert!(cache.read(tp(0), 2, 10, 1000, true).is_empty());
    }

    #[test]
    fn evicts_oldest_first_and_stays_bounded() {
        let cache = TailCache::new(1_000);
        for i in 0..100 {
            cache.insert(tp((i % 3) as i32), i, i, bytes(100));
            assert!(cache.used_bytes() <= 1_000);
        }
        assert_eq!(cache.used_bytes(), 1_000);
        assert!(cache.get(tp(0), 0).is_none());
        assert!(cache.get(tp(0), 99).is_some());
        assert!(cache.get(tp(1), 97).is_some());
        assert!(cache.get(tp(0), 87).is_none());
        // Too big to ever fit: not cached, nothing evicted.
        cache.insert(tp(0), 1000, 1000, bytes(5_000));
        assert!(cache.get(tp(0), 1000).is_none());
        assert_eq!(cache.used_bytes(), 1_000);
    }

    #[test]
    fn remove_topic_frees_bytes_and_order_is_compacted() {
        let cache = TailCache::new(1_000_000);
        for round in 0..50 {
            for i in 0..10 {
                cache.insert(tp(i), round, round, bytes(10));
            }
            cache.remove_topic(Uuid::from_u128(1));
            assert_eq!(cache.used_bytes(), 0);
        }
        assert!(cache.lock().order.len() <= 64 + 10);
    }
}
