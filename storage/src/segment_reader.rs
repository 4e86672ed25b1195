//! Reading segment objects and WAL-object chunks: footers (one ranged GET, cached in memory per
//! chunk) and forward scans over the batches through the [`BlockCache`].
//!
//! A [`SegmentRef`] names the readable range `data_start..data_start + data_len` of an object. With
//! `footer_len == 0` the footer runs from there to the end of the object (a segment object of its
//! own); otherwise the footer is exactly `footer_len` bytes and other partitions' chunks of a shared
//! WAL object follow it. Footer positions are absolute object positions either way.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use metadata::SegmentRef;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore};

use crate::batch::{BatchHeader, HEADER_LEN};
use crate::block_cache::{BlockCache, BlockCacheOptions, BlockCacheStats, FetchError};
use crate::segment::{split_batches, SegmentFooter, ENTRY_LEN, TRAILER_LEN};
use crate::{Error, Result};

/// Memory the footer cache may hold (index entries plus per-footer overhead).
const FOOTER_CACHE_BYTES: usize = 16 * 1024 * 1024;
/// Bookkeeping counted per cached footer besides its entries (key, map slots).
const FOOTER_OVERHEAD: usize = 96;

/// What a scan does with a batch.
pub(crate) enum Step {
    Skip,
    Take,
    TakeAndStop,
    Stop,
}

/// Reads batches out of segment objects and WAL-object chunks; see the module docs.
pub struct SegmentReader {
    store: Arc<dyn ObjectStore>,
    blocks: BlockCache,
    footers: Mutex<FooterCache>,
    /// Chunks whose footer (and, when small, data) a prefetch is fetching: no second GET for them.
    prefetching: Mutex<std::collections::HashSet<(String, u64)>>,
}

/// Small WAL chunks of the same partition read ahead of a sequential reader (each is one GET:
/// footer and data together), so a catch-up over uncompacted chunks has several GETs in flight
/// instead of one chunk at a time.
pub(crate) const CHUNK_READ_AHEAD: usize = 8;

/// Footers by (object key, data start): one shared WAL object holds many partitions' chunks.
#[derive(Default)]
struct FooterCache {
    bytes: usize,
    map: HashMap<Arc<str>, HashMap<u64, Arc<SegmentFooter>>>,
    /// Insertion order for eviction; entries of forgotten keys are skipped when reached.
    order: VecDeque<(Arc<str>, u64)>,
    count: usize,
}

fn footer_cost(key: &str, footer: &SegmentFooter) -> usize {
    footer.entries.len() * ENTRY_LEN + TRAILER_LEN + key.len() + FOOTER_OVERHEAD
}

impl FooterCache {
    fn get(&self, key: &str, data_start: u64) -> Option<Arc<SegmentFooter>> {
        self.map.get(key)?.get(&data_start).cloned()
    }

    fn insert(&mut self, key: &str, data_start: u64, footer: Arc<SegmentFooter>) {
        let cost = footer_cost(key, &footer);
        let key: Arc<str> = match self.map.get_key_value(key) {
            Some((existing, _)) => existing.clone(),
            None => key.into(),
        };
        let chunks = self.map.entry(key.clone()).or_default();
        if chunks.contains_key(&data_start) {
            return;
        }
        chunks.insert(data_start, footer);
        self.bytes += cost;
        self.count += 1;
        self.order.push_back((key, data_start));
        // Each pop removes an entry or drops a stale one: bounded by the queue length.
        while self.bytes > FOOTER_CACHE_BYTES {
            let Some((old, start)) = self.order.pop_front() else {
                break;
            };
            self.remove_one(&old, start);
        }
        if self.order.len() > 2 * self.count + 1024 {
            let map = &self.map;
            self.order
                .retain(|(k, start)| map.get(k).is_some_and(|c| c.contains_key(start)));
        }
    }

    fn remove_one(&mut self, key: &str, data_start: u64) {
        let Some(chunks) = self.map.get_mut(key) else {
            return;
        };
        if let Some(removed) = chunks.remove(&data_start) {
            self.bytes -= footer_cost(key, &removed);
            self.count -= 1;
        }
        if chunks.is_empty() {
            self.map.remove(key);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(chunks) = self.map.remove(key) {
            for footer in chunks.values() {
                self.bytes -= footer_cost(key, footer);
                self.count -= 1;
            }
        }
    }
}

fn corrupt(seg: &SegmentRef, reason: impl Into<String>) -> Error {
    Error::CorruptSegment {
        key: seg.key.clone(),
        reason: reason.into(),
    }
}

fn fetch_error(seg: &SegmentRef, err: FetchError) -> Error {
    match err {
        FetchError::Store(err) => Error::ObjectStore(FetchError::store_error(&err)),
        short @ FetchError::Short { .. } => corrupt(seg, short.to_string()),
    }
}

/// The readable data range of `seg` in its object.
fn data_range(seg: &SegmentRef) -> Result<Range<u64>> {
    let end = seg
        .data_start
        .checked_add(seg.data_len)
        .ok_or_else(|| corrupt(seg, "data range overflows"))?;
    Ok(seg.data_start..end)
}

impl SegmentReader {
    /// A reader over `store` with its own block cache.
    pub fn new(store: Arc<dyn ObjectStore>, blocks: BlockCacheOptions) -> Self {
        SegmentReader {
            blocks: BlockCache::new(store.clone(), blocks),
            store,
            footers: Mutex::new(FooterCache::default()),
            prefetching: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Starts background fetches of the footers (and data, for small chunks) of `next` — the
    /// segments after the one being read — unless cached or already being fetched.
    pub(crate) fn prefetch_chunks(self: &Arc<Self>, next: &[SegmentRef]) {
        for seg in next.iter().take(CHUNK_READ_AHEAD) {
            if seg.footer_len == 0 || self.cache().get(&seg.key, seg.data_start).is_some() {
                continue;
            }
            let id = (seg.key.clone(), seg.data_start);
            {
                let mut prefetching = self.prefetching.lock().unwrap_or_else(|e| e.into_inner());
                if !prefetching.insert(id.clone()) {
                    continue;
                }
            }
            let reader = self.clone();
            let seg = seg.clone();
            tokio::spawn(async move {
                if let Err(error) = reader.footer(&seg).await {
                    tracing::debug!(key = %seg.key, %error, "chunk prefetch failed");
                }
                reader
                    .prefetching
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            });
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, FooterCache> {
        self.footers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counters of the block cache.
    pub fn stats(&self) -> BlockCacheStats {
        self.blocks.stats()
    }

    /// Remembers the footer of a segment or chunk this process just wrote (saves the first GET).
    /// The chunk's data start is the position of its first index entry (the first batch).
    pub(crate) fn remember(&self, key: &str, footer: SegmentFooter) {
        let data_start = footer.entries.first().map_or(0, |e| e.position);
        self.cache().insert(key, data_start, Arc::new(footer));
    }

    /// Drops everything cached about `key` (GC deleted the object).
    pub(crate) fn forget(&self, key: &str) {
        self.cache().remove(key);
        self.blocks.forget(key);
    }

    /// The footer of `seg`, from the cache or with one ranged GET: from the end of its data to the
    /// end of the object, or exactly `footer_len` bytes for a chunk of a shared object. A chunk no
    /// larger than a block is read whole in that GET and its data goes to the block cache.
    pub async fn footer(&self, seg: &SegmentRef) -> Result<Arc<SegmentFooter>> {
        if let Some(footer) = self.cache().get(&seg.key, seg.data_start) {
            return Ok(footer);
        }
        let data = data_range(seg)?;
        let footer_at = data.end;
        let path = ObjectPath::from(seg.key.as_str());
        let bytes = if seg.footer_len == 0 {
            let options = GetOptions::new().with_range(Some(GetRange::Offset(footer_at)));
            let got = self.store.get_opts(&path, options).await?.bytes().await?;
            self.blocks.count_get(got.len());
            got
        } else {
            let chunk_end = footer_at
                .checked_add(seg.footer_len)
                .ok_or_else(|| corrupt(seg, "footer range overflows"))?;
            let whole_chunk = seg.data_len + seg.footer_len <= self.blocks.block_size();
            let from = if whole_chunk { data.start } else { footer_at };
            let options = GetOptions::new().with_range(Some(GetRange::Bounded(from..chunk_end)));
            let got = self.store.get_opts(&path, options).await?.bytes().await?;
            self.blocks.count_get(got.len());
            if got.len() as u64 != chunk_end - from {
                return Err(corrupt(
                    seg,
                    format!(
                        "short read: {} of {} bytes at {from}",
                        got.len(),
                        chunk_end - from
                    ),
                ));
            }
            if whole_chunk {
                let key: Arc<str> = seg.key.as_str().into();
                let data_bytes = got.slice(..seg.data_len as usize);
                self.blocks.insert(&key, &data, data.start, &data_bytes);
                got.slice(seg.data_len as usize..)
            } else {
                got
            }
        };
        let footer = SegmentFooter::parse(&bytes).map_err(|e| corrupt(seg, e.0))?;
        let first_position = footer.entries.first().map(|e| e.position);
        if footer.index_position != footer_at
            || footer.end_offset != seg.end_offset
            || first_position != Some(seg.data_start)
        {
            return Err(corrupt(
                seg,
                format!(
                    "footer says data is {first_position:?}..{} and offsets end at {}, the index says \
                     {}..{footer_at} and {}",
                    footer.index_position, footer.end_offset, seg.data_start, seg.end_offset
                ),
            ));
        }
        let footer = Arc::new(footer);
        self.cache()
            .insert(&seg.key, seg.data_start, footer.clone());
        Ok(footer)
    }

    /// Bytes `pos..pos + len` of `seg`'s data, assembled from blocks (a batch spanning blocks).
    async fn read_across(
        &self,
        seg: &SegmentRef,
        key: &Arc<str>,
        data: &Range<u64>,
        pos: u64,
        len: usize,
        read_ahead: bool,
    ) -> Result<Bytes> {
        let mut joined = BytesMut::with_capacity(len);
        // The first read may start mid-block; every later one is a whole block.
        let max_reads = len as u64 / self.blocks.block_size() + 2;
        for _ in 0..max_reads {
            if joined.len() >= len {
                break;
            }
            let block = self
                .blocks
                .read(key, data, pos + joined.len() as u64, read_ahead)
                .await
                .map_err(|e| fetch_error(seg, e))?;
            let take = block.len().min(len - joined.len());
            joined.extend_from_slice(&block[..take]);
        }
        if joined.len() < len {
            return Err(corrupt(
                seg,
                format!("could not assemble {len} bytes at {pos}"),
            ));
        }
        Ok(joined.freeze())
    }

    /// Scans the batches of `seg` forward from object position `from` (a batch boundary, e.g. an
    /// index entry's position) and returns those `step` takes, reading through the block cache
    /// (with read-ahead when `read_ahead`). Stops at `Stop`/`TakeAndStop` or at the end of the data.
    pub(crate) async fn scan(
        &self,
        seg: &SegmentRef,
        from: u64,
        read_ahead: bool,
        mut step: impl FnMut(&BatchHeader, &Bytes) -> Step,
    ) -> Result<Vec<(BatchHeader, Bytes)>> {
        let data = data_range(seg)?;
        let key: Arc<str> = seg.key.as_str().into();
        let mut pos = from.max(data.start);
        let mut out = Vec::new();
        // Bytes of the data from `pos` on that are already in hand.
        let mut buf = Bytes::new();
        // A round consumes at least one batch, or brings the next batch's header or the whole
        // batch into `buf`; batches are at least HEADER_LEN bytes: never reached on valid data.
        let max_rounds = 3 * (seg.data_len / HEADER_LEN as u64 + 2);
        for _ in 0..max_rounds {
            if pos >= data.end {
                return Ok(out);
            }
            if buf.is_empty() {
                buf = self
                    .blocks
                    .read(&key, &data, pos, read_ahead)
                    .await
                    .map_err(|e| fetch_error(seg, e))?;
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
            // What is left of `buf` is the start of a batch that continues in the next block(s).
            buf = match split.incomplete_len {
                None => Bytes::new(),
                Some(need) if pos + need as u64 > data.end => {
                    return Err(corrupt(
                        seg,
                        format!("batch at byte {pos} runs past the data end {}", data.end),
                    ));
                }
                Some(need) => {
                    self.read_across(seg, &key, &data, pos, need, read_ahead)
                        .await?
                }
            };
        }
        Err(corrupt(seg, "scan did not make progress"))
    }

    /// Whole batches of `seg` from the one containing `offset` (or the first after it), stopping
    /// before offset `end`, within `max_bytes` (the first batch always when `take_first`).
    pub async fn read(
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
        // A fetch reads forward (consumers read sequentially), so it reads ahead.
        self.scan(seg, from, true, |header, bytes| {
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
            .scan(seg, from, false, |header, _| {
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
    use crate::block_cache::test_store::CountingStore;
    use crate::segment::tests::fake_batch;
    use crate::segment::SegmentBuilder;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;
    use std::time::Duration;

    fn small_blocks(block_size: u64) -> BlockCacheOptions {
        BlockCacheOptions {
            block_size,
            ..BlockCacheOptions::default()
        }
    }

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
            producer_batches: false,
        };
        (seg, batches)
    }

    #[tokio::test]
    async fn reads_by_offset_and_timestamp() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (seg, batches) = put_segment(&store, "s1", 40, 300).await;
        let reader = SegmentReader::new(store.clone(), BlockCacheOptions::default());
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
        let reader = SegmentReader::new(store, small_blocks(1_000));
        // Blocks smaller than one batch: batches are assembled from several blocks.
        let got = reader
            .scan(&seg, 0, false, |h, _| {
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
        let got = reader.scan(&seg, 0, true, |_, _| Step::Take).await.unwrap();
        assert_eq!(got.into_iter().map(|(_, b)| b).collect::<Vec<_>>(), batches);
        for offset in 100..112 {
            let got = reader.read(&seg, offset, 112, 1, true).await.unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].1, batches[((offset - 100) / 2) as usize]);
        }
    }

    #[tokio::test]
    async fn corrupt_or_mismatched_objects_are_errors() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (seg, _) = put_segment(&store, "s3", 4, 10).await;
        let reader = SegmentReader::new(store.clone(), BlockCacheOptions::default());
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

    /// Puts one object holding two partitions' chunks (and unrelated bytes around them), the way
    /// the S3 WAL writes them: each chunk is a mini segment with absolute positions.
    async fn put_shared_object(
        store: &Arc<dyn ObjectStore>,
        key: &str,
        payload: usize,
    ) -> Vec<(SegmentRef, Vec<Bytes>)> {
        let mut object = BytesMut::new();
        object.extend_from_slice(&[0x5a; 77]);
        let mut chunks = Vec::new();
        for (partition, count) in [(0i64, 30i64), (1, 7)] {
            let data_start = object.len() as u64;
            let mut builder = SegmentBuilder::with_base_position(data_start);
            let mut batches = Vec::new();
            for i in 0..count {
                let batch = fake_batch(1_000 * partition + 3 * i, 3, 50 + i, payload);
                batches.push(batch.clone());
                builder.push(batch).unwrap();
            }
            let built = builder.finish().unwrap();
            for chunk in &built.chunks {
                object.extend_from_slice(chunk);
            }
            let footer_len = built.footer.encoded_len() as u64;
            chunks.push((
                SegmentRef {
                    key: key.to_string(),
                    base_offset: 1_000 * partition,
                    end_offset: built.footer.end_offset,
                    data_start,
                    data_len: built.data_len,
                    min_timestamp: built.min_timestamp,
                    max_timestamp: built.max_timestamp,
                    created_ms: 0,
                    footer_len,
                    producer_batches: false,
                },
                batches,
            ));
        }
        object.extend_from_slice(&[0xa5; 55]);
        store
            .put(&ObjectPath::from(key), object.freeze().into())
            .await
            .unwrap();
        chunks
    }

    #[tokio::test]
    async fn chunks_of_a_shared_object_read_correctly() {
        for block_size in [1_000u64, 1 << 20] {
            let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let chunks = put_shared_object(&memory, "wal/1", 700).await;
            let counting = CountingStore::new(memory, Duration::ZERO);
            let reader = SegmentReader::new(counting.clone(), small_blocks(block_size));
            for (seg, batches) in chunks.iter().rev() {
                let end = seg.end_offset;
                let all = reader
                    .read(seg, seg.base_offset, end, usize::MAX, true)
                    .await
                    .unwrap();
                assert_eq!(
                    &all.into_iter().map(|(_, b)| b).collect::<Vec<_>>(),
                    batches
                );
                for offset in seg.base_offset..end {
                    let got = reader.read(seg, offset, end, 1, true).await.unwrap();
                    let index = ((offset - seg.base_offset) / 3) as usize;
                    assert_eq!(got[0].1, batches[index], "offset {offset}");
                }
                let (h, _) = reader
                    .find_by_timestamp(seg, seg.base_offset, 52)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(h.base_offset, seg.base_offset + 6);
            }
            // Every GET was bounded, never "to the end of the object", and within the chunk.
            for (key, range) in counting.ranges() {
                let range = range.unwrap_or_else(|| panic!("unbounded GET of {key}"));
                assert!(
                    chunks.iter().any(|(seg, _)| {
                        seg.data_start <= range.start
                            && range.end <= seg.data_start + seg.data_len + seg.footer_len
                    }),
                    "{range:?}"
                );
            }
            // Small chunks come whole with their footer: one GET each in total.
            if block_size == 1 << 20 {
                assert_eq!(counting.gets(), 2);
            }
            // The footer cache tells the chunks apart.
            for (seg, _) in &chunks {
                assert_eq!(reader.footer(seg).await.unwrap().end_offset, seg.end_offset);
            }
            // GC forgets the object: footers and blocks go.
            let gets = counting.gets();
            reader.forget("wal/1");
            assert_eq!(reader.stats().cached_bytes, 0);
            reader.footer(&chunks[0].0).await.unwrap();
            assert_eq!(counting.gets(), gets + 1);
        }
    }

    #[tokio::test]
    async fn a_second_read_issues_no_get() {
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (seg, _) = put_segment(&memory, "s5", 100, 1_000).await;
        let counting = CountingStore::new(memory, Duration::ZERO);
        let reader = SegmentReader::new(counting.clone(), small_blocks(8_192));
        let first = reader.read(&seg, 150, 250, 20_000, true).await.unwrap();
        let gets = counting.gets();
        assert!(gets >= 2);
        let second = reader.read(&seg, 150, 250, 20_000, true).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(counting.gets(), gets);
    }

    #[tokio::test(start_paused = true)]
    async fn a_catch_up_scan_issues_one_get_per_block_with_several_in_flight() {
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        // ~100 KB of data in 10 KB blocks.
        let (seg, batches) = put_segment(&memory, "s6", 100, 1_000).await;
        let counting = CountingStore::new(memory, Duration::from_millis(40));
        let reader = SegmentReader::new(
            counting.clone(),
            BlockCacheOptions {
                block_size: 10_000,
                read_ahead_blocks: 4,
                max_concurrent_gets: 8,
                ..BlockCacheOptions::default()
            },
        );
        let blocks = seg.data_len.div_ceil(10_000);
        let started = tokio::time::Instant::now();
        // A consumer fetching 3 KB at a time, like the fetch loop in read.rs.
        let mut next = seg.base_offset;
        let mut got = Vec::new();
        for _ in 0..1_000 {
            if next >= seg.end_offset {
                break;
            }
            let batch = reader
                .read(&seg, next, seg.end_offset, 3_000, true)
                .await
                .unwrap();
            next = batch.last().unwrap().0.last_offset() + 1;
            got.extend(batch.into_iter().map(|(_, b)| b));
        }
        assert_eq!(got, batches);
        // The footer plus one GET per block, no more.
        assert_eq!(counting.gets(), 1 + blocks);
        // Read-ahead overlaps the GETs: well under one round trip per block.
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_millis(40 * (blocks + 1) / 2),
            "{elapsed:?} for {blocks} blocks"
        );
        // Without read-ahead, each block costs a round trip.
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (seg, _) = put_segment(&memory, "s7", 100, 1_000).await;
        let counting = CountingStore::new(memory, Duration::from_millis(40));
        let reader = SegmentReader::new(
            counting.clone(),
            BlockCacheOptions {
                block_size: 10_000,
                read_ahead_blocks: 0,
                ..BlockCacheOptions::default()
            },
        );
        let started = tokio::time::Instant::now();
        let all = reader
            .read(&seg, seg.base_offset, seg.end_offset, usize::MAX, true)
            .await
            .unwrap();
        assert_eq!(all.len(), 100);
        assert_eq!(counting.gets(), 1 + blocks);
        assert!(started.elapsed() >= Duration::from_millis(40 * (blocks + 1)));
    }

    #[tokio::test]
    async fn corrupt_data_and_chunk_refs_are_errors() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (seg, _) = put_segment(&store, "s8", 20, 500).await;
        let object = store
            .get(&ObjectPath::from("s8"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        // A batch length that claims more than the data holds, one that is too small for a batch,
        // and one that ends a batch in the middle of the next one's bytes.
        let batch_len = 561usize;
        for (at, length) in [(8usize, 0x7f00_0000i32), (8 + 3 * batch_len, 0), (8, 512)] {
            let mut damaged = object.to_vec();
            damaged[at..at + 4].copy_from_slice(&length.to_be_bytes());
            let key = format!("bad-{at}");
            store
                .put(&ObjectPath::from(key.as_str()), Bytes::from(damaged).into())
                .await
                .unwrap();
            let mut bad = seg.clone();
            bad.key = key;
            for block_size in [300, 1 << 20] {
                let reader = SegmentReader::new(store.clone(), small_blocks(block_size));
                let err = reader
                    .read(&bad, bad.base_offset, bad.end_offset, usize::MAX, true)
                    .await
                    .unwrap_err();
                assert!(matches!(err, Error::CorruptSegment { .. }), "{err}");
            }
        }
        let reader = SegmentReader::new(store.clone(), small_blocks(1_000));
        // The index claims more data than the object has (the footer check catches it first, so
        // read the data directly).
        let mut long = seg.clone();
        long.data_len += 10_000;
        assert!(matches!(
            reader.scan(&long, 0, true, |_, _| Step::Take).await,
            Err(Error::CorruptSegment { .. })
        ));
        // A chunk ref whose footer length or data start is wrong.
        let chunks = put_shared_object(&store, "wal/2", 100).await;
        for change in 0..3 {
            let mut wrong = chunks[1].0.clone();
            match change {
                0 => wrong.footer_len -= 1,
                1 => wrong.footer_len += 24,
                _ => {
                    wrong.data_start += 1;
                    wrong.data_len -= 1;
                }
            }
            let err = reader.footer(&wrong).await.unwrap_err();
            assert!(matches!(err, Error::CorruptSegment { .. }), "{err}");
        }
        assert!(reader.footer(&chunks[1].0).await.is_ok());
    }
}
