//! Reading segment objects: footers (one ranged GET, cached in memory per object) and forward scans
//! over the batches with ranged GETs of bounded size.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use metadata::SegmentRef;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};

use crate::batch::{BatchHeader, HEADER_LEN};
use crate::segment::{split_batches, SegmentFooter, ENTRY_LEN};
use crate::{Error, Result};

/// Smallest ranged GET issued for a scan: object stores charge per request, not per byte.
pub(crate) const MIN_SCAN_CHUNK: u64 = 1024 * 1024;
/// Memory the footer cache may hold (index entries).
const FOOTER_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// What a scan does with a batch.
pub(crate) enum Step {
    Skip,
    Take,
    TakeAndStop,
    Stop,
}

pub(crate) struct SegmentReader {
    store: Arc<dyn ObjectStore>,
    footers: Mutex<FooterCache>,
}

#[derive(Default)]
struct FooterCache {
    bytes: usize,
    map: HashMap<String, Arc<SegmentFooter>>,
    order: VecDeque<String>,
}

impl FooterCache {
    fn insert(&mut self, key: String, footer: Arc<SegmentFooter>) {
        if self.map.contains_key(&key) {
            return;
        }
        self.bytes += footer.entries.len() * ENTRY_LEN;
        self.map.insert(key.clone(), footer);
        self.order.push_back(key);
        while self.bytes > FOOTER_CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(removed) = self.map.remove(&old) {
                self.bytes -= removed.entries.len() * ENTRY_LEN;
            }
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(removed) = self.map.remove(key) {
            self.bytes -= removed.entries.len() * ENTRY_LEN;
            self.order.retain(|k| k != key);
        }
    }
}

fn corrupt(seg: &SegmentRef, reason: impl Into<String>) -> Error {
    Error::CorruptSegment {
        key: seg.key.clone(),
        reason: reason.into(),
    }
}

impl SegmentReader {
    pub(crate) fn new(store: Arc<dyn ObjectStore>) -> Self {
        SegmentReader {
            store,
            footers: Mutex::new(FooterCache::default()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, FooterCache> {
        self.footers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers the footer of a segment this process just wrote (saves the first GET).
    pub(crate) fn remember(&self, key: &str, footer: SegmentFooter) {
        self.cache().insert(key.to_string(), Arc::new(footer));
    }

    pub(crate) fn forget(&self, key: &str) {
        self.cache().remove(key);
    }

    /// The footer of `seg`, from the cache or with one ranged GET from the end of its data.
    pub(crate) async fn footer(&self, seg: &SegmentRef) -> Result<Arc<SegmentFooter>> {
        if let Some(footer) = self.cache().map.get(&seg.key) {
            return Ok(footer.clone());
        }
        let footer_at = seg.data_start + seg.data_len;
        let options = GetOptions::new().with_range(Some(GetRange::Offset(footer_at)));
        let bytes = self
            .store
            .get_opts(&ObjectPath::from(seg.key.as_str()), options)
            .await?
            .bytes()
            .await?;
        let footer = SegmentFooter::parse(&bytes).map_err(|e| corrupt(seg, e.0))?;
        if footer.index_position != footer_at || footer.end_offset != seg.end_offset {
            return Err(corrupt(
                seg,
                format!(
                    "footer says data ends at {} and offsets end at {}, the index says {} and {}",
                    footer.index_position, footer.end_offset, footer_at, seg.end_offset
                ),
            ));
        }
        let footer = Arc::new(footer);
        self.cache().insert(seg.key.clone(), footer.clone());
        Ok(footer)
    }

    /// Scans the batches of `seg` forward from object position `from` (a batch boundary, e.g. an
    /// index entry's position) and returns those `step` takes. Reads at least `chunk` bytes per GET; stops at
    /// `Stop`/`TakeAndStop`, at the end of the data, or after the first GET that yielded something.
    pub(crate) async fn scan(
        &self,
        seg: &SegmentRef,
        from: u64,
        chunk: u64,
        mut step: impl FnMut(&BatchHeader, &Bytes) -> Step,
    ) -> Result<Vec<(BatchHeader, Bytes)>> {
        let data_end = seg.data_start + seg.data_len;
        let mut pos = from.max(seg.data_start);
        let mut want = chunk.max(HEADER_LEN as u64);
        let mut out = Vec::new();
        let path = ObjectPath::from(seg.key.as_str());
        // Each round consumes at least one batch or grows `want` to hold the next one whole, and
        // batches are at least HEADER_LEN bytes: the bound below is never reached on valid data.
        let max_rounds = seg.data_len / HEADER_LEN as u64 + 2;
        for _ in 0..max_rounds {
            if pos >= data_end {
                return Ok(out);
            }
            let end = data_end.min(pos.saturating_add(want));
            let buf = self.store.get_range(&path, pos..end).await?;
            if buf.len() as u64 != end - pos {
                return Err(corrupt(
                    seg,
                    format!("short read: {} of {} bytes at {pos}", buf.len(), end - pos),
                ));
            }
            let split = split_batches(&buf).map_err(|e| corrupt(seg, e.0))?;
            for (header, bytes) in split.batches {
                pos += bytes.len() as u64;
                match step(&header, &bytes) {
                    Step::Skip => {}
                    Step::Take => out.push((header, bytes)),
                    Step::TakeAndStop => {
                        out.push((header, bytes));
                        return Ok(out);
                    }
                    Step::Stop => return Ok(out),
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            match split.incomplete_len {
                Some(need) if pos + need as u64 > data_end => {
                    return Err(corrupt(
                        seg,
                        format!("batch at byte {pos} runs past the data end {data_end}"),
                    ));
                }
                Some(need) => want = want.max(need as u64),
                None => {}
            }
        }
        Err(corrupt(seg, "scan did not make progress"))
    }

    /// Whole batches of `seg` from the one containing `offset` (or the first after it), stopping
    /// before offset `end`, within `max_bytes` (the first batch always when `take_first`).
    pub(crate) async fn read(
        &self,
        seg: &SegmentRef,
        offset: i64,
        end: i64,
        max_bytes: usize,
        take_first: bool,
    ) -> Result<Vec<(BatchHeader, Bytes)>> {
        let footer = self.footer(seg).await?;
        let from = footer.position_for_offset(offset);
        let mut total = 0usize;
        let mut taken = 0usize;
        let chunk = (max_bytes as u64).max(MIN_SCAN_CHUNK);
        self.scan(seg, from, chunk, |header, bytes| {
            if header.last_offset() < offset {
                return Step::Skip;
            }
            if header.base_offset >= end {
                return Step::Stop;
            }
            let fits = total + bytes.len() <= max_bytes;
            if !(fits || taken == 0 && take_first) {
                return Step::Stop;
            }
            total += bytes.len();
            taken += 1;
            Step::Take
        })
        .await
    }

    /// The first batch of `seg` at or after `min_offset` whose max timestamp is `>= timestamp`.
    pub(crate) async fn find_by_timestamp(
        &self,
        seg: &SegmentRef,
        min_offset: i64,
        timestamp: i64,
    ) -> Result<Option<(BatchHeader, Bytes)>> {
        let footer = self.footer(seg).await?;
        // The first entry whose span reaches the timestamp, but not before the entry holding
        // `min_offset` (earlier batches are deleted).
        let Some(by_time) = footer.position_for_timestamp(timestamp) else {
            return Ok(None);
        };
        let from = by_time.max(footer.position_for_offset(min_offset));
        let found = self
            .scan(seg, from, MIN_SCAN_CHUNK / 16, |header, _| {
                if header.last_offset() >= min_offset && header.max_timestamp >= timestamp {
                    Step::TakeAndStop
                } else {
                    Step::Skip
                }
            })
            .await?;
        Ok(found.into_iter().next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::tests::fake_batch;
    use crate::segment::SegmentBuilder;
    use object_store::memory::InMemory;

    /// Puts a segment of `count` batches (2 offsets each, `payload` bytes) at `key`.
    async fn put_segment(
        store: &Arc<dyn ObjectStore>,
        key: &str,
        count: i64,
        payload: usize,
    ) -> (SegmentRef, Vec<Bytes>) {
        let mut builder = SegmentBuilder::new();
        let mut batches = Vec::new();
        for i in 0..count {
            let batch = fake_batch(100 + 2 * i, 2, 1_000 + i, payload);
            batches.push(batch.clone());
            builder.push(batch).unwrap();
        }
        let built = builder.finish().unwrap();
        let payload: object_store::PutPayload = built.chunks.iter().cloned().collect();
        store.put(&ObjectPath::from(key), payload).await.unwrap();
        let seg = SegmentRef {
            key: key.to_string(),
            base_offset: 100,
            end_offset: built.footer.end_offset,
            data_start: 0,
            data_len: built.data_len,
            min_timestamp: built.min_timestamp,
            max_timestamp: built.max_timestamp,
            created_ms: 0,
            footer_len: 0,
        };
        (seg, batches)
    }

    #[tokio::test]
    async fn reads_by_offset_and_timestamp() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (seg, batches) = put_segment(&store, "s1", 40, 300).await;
        let reader = SegmentReader::new(store.clone());
        // Every offset: the containing batch first, then as many as fit.
        for offset in 100..180 {
            let got = reader.read(&seg, offset, 180, 1, true).await.unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].1, batches[((offset - 100) / 2) as usize]);
        }
        let all = reader.read(&seg, 100, 180, usize::MAX, true).await.unwrap();
        assert_eq!(all.into_iter().map(|(_, b)| b).collect::<Vec<_>>(), batches);
        // The end bound (a high watermark) and the budget are respected.
        assert_eq!(
            reader
                .read(&seg, 100, 110, usize::MAX, true)
                .await
                .unwrap()
                .len(),
            5
        );
        let three = 3 * batches[0].len();
        assert_eq!(
            reader
                .read(&seg, 100, 180, three, true)
                .await
                .unwrap()
                .len(),
            3
        );
        assert!(reader
            .read(&seg, 100, 180, 10, false)
            .await
            .unwrap()
            .is_empty());
        // Timestamps.
        let (h, _) = reader
            .find_by_timestamp(&seg, 100, 1_017)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(h.base_offset, 134);
        let (h, _) = reader
            .find_by_timestamp(&seg, 150, 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(h.base_offset, 150);
        assert!(reader
            .find_by_timestamp(&seg, 100, 5_000)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn small_chunks_and_batches_larger_than_a_chunk() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (seg, batches) = put_segment(&store, "s2", 6, 5_000).await;
        let reader = SegmentReader::new(store);
        // A chunk smaller than one batch: every GET is extended to hold the batch whole, and
        // skipped batches cost further GETs.
        let got = reader
            .scan(&seg, 0, 100, |h, _| {
                if h.base_offset >= 104 {
                    Step::TakeAndStop
                } else {
                    Step::Skip
                }
            })
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, batches[2]);
        let got = reader.scan(&seg, 0, 100, |_, _| Step::Take).await.unwrap();
        assert_eq!(got[0].1, batches[0]);
    }

    #[tokio::test]
    async fn corrupt_or_mismatched_objects_are_errors() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (seg, _) = put_segment(&store, "s3", 4, 10).await;
        let reader = SegmentReader::new(store.clone());
        // Index and object disagree about where the data ends.
        let mut wrong = seg.clone();
        wrong.data_len -= 1;
        assert!(matches!(
            reader.footer(&wrong).await,
            Err(Error::CorruptSegment { .. })
        ));
        let mut wrong = seg.clone();
        wrong.end_offset += 1;
        assert!(matches!(
            reader.footer(&wrong).await,
            Err(Error::CorruptSegment { .. })
        ));
        // A damaged footer.
        let object = store
            .get(&ObjectPath::from("s3"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let mut damaged = object.to_vec();
        let last = damaged.len() - 6;
        damaged[last] ^= 1;
        store
            .put(&ObjectPath::from("s4"), Bytes::from(damaged).into())
            .await
            .unwrap();
        let mut other = seg.clone();
        other.key = "s4".into();
        assert!(matches!(
            reader.footer(&other).await,
            Err(Error::CorruptSegment { .. })
        ));
        // Missing object.
        let mut missing = seg.clone();
        missing.key = "nope".into();
        assert!(matches!(
            reader.footer(&missing).await,
            Err(Error::ObjectStore(_))
        ));
        // The good one still works, and is cached (served even after the object is gone).
        assert_eq!(
            reader.footer(&seg).await.unwrap().end_offset,
            seg.end_offset
        );
        store.delete(&ObjectPath::from("s3")).await.unwrap();
        assert!(reader.footer(&seg).await.is_ok());
        reader.forget("s3");
        assert!(reader.footer(&seg).await.is_err());
    }
}
