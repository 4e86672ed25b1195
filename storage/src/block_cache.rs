//! Block cache for catch-up reads of segment objects and WAL-object chunks.
//!
//! Object bytes are cached in blocks: the aligned `block_size` window around a position, clamped to
//! the readable data range of the segment being read (so a partition's chunk inside a shared WAL
//! object never caches its neighbours' bytes or the footer). A block is identified by
//! `(object key, block start)`; objects are immutable and keys never reused, so a block is never
//! invalidated, only evicted (CLOCK, bounded by `capacity_bytes`) or dropped with [`BlockCache::forget`]
//! when GC deletes the object.
//!
//! A miss starts one background GET per block and parks a shared future in the slot, so concurrent
//! readers of the block wait for the same GET (single-flight). Read-ahead starts GETs of the next
//! `read_ahead_blocks` blocks in parallel — a catch-up consumer then has several GETs in flight, which
//! is what gets throughput from an object store with a per-request latency floor. All GETs go through
//! one semaphore of `max_concurrent_gets` permits, so catch-up reads cannot take every connection of
//! the HTTP pool that the WAL's PUTs use; read-ahead only takes a permit that is free right now (it is
//! skipped otherwise), demand misses queue for one.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Settings of the block cache (part of [`crate::StorageOptions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockCacheOptions {
    /// Bytes of object data kept in memory. Blocks being fetched are not counted (there are at
    /// most `max_concurrent_gets` of them).
    pub capacity_bytes: usize,
    /// Size and alignment of a block, i.e. of one ranged GET.
    pub block_size: u64,
    /// Blocks after the one being read that a fetch starts GETs for in the background (0 = off).
    /// Capped at half the cache, so read-ahead cannot evict what it fetched before it is read.
    pub read_ahead_blocks: usize,
    /// Ranged GETs in flight at most, across all readers.
    pub max_concurrent_gets: usize,
}

impl Default for BlockCacheOptions {
    fn default() -> Self {
        BlockCacheOptions {
            capacity_bytes: 64 * 1024 * 1024,
            // With a ~40 ms floor per GET, throughput is (blocks in flight x block size) / latency:
            // 8 x 4 MiB in flight reads ~640 MB/s (benches/src/catchup.rs).
            block_size: 4 * 1024 * 1024,
            read_ahead_blocks: 8,
            max_concurrent_gets: 8,
        }
    }
}

/// Counters of a block cache (monotonic, except the `cached_*` gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockCacheStats {
    /// Ranged GETs issued (blocks and segment footers).
    pub gets: u64,
    /// Bytes those GETs returned.
    pub get_bytes: u64,
    /// Reads served from a cached block.
    pub hits: u64,
    /// Reads that started a GET.
    pub misses: u64,
    /// Reads that waited for a GET another reader (or read-ahead) had started.
    pub joined: u64,
    /// Read-ahead GETs started.
    pub prefetches: u64,
    /// Read-ahead GETs not started because every GET permit was taken.
    pub prefetches_skipped: u64,
    /// Blocks evicted to stay within the byte bound.
    pub evictions: u64,
    /// Bytes held now.
    pub cached_bytes: usize,
    /// Blocks held now.
    pub cached_blocks: usize,
}

/// Why a block could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum FetchError {
    /// The object store failed; shared by every reader that waited for the GET.
    #[error("{0}")]
    Store(Arc<object_store::Error>),
    /// The object is shorter than the index says.
    #[error("short read: {got} of {expected} bytes at {start}")]
    Short { start: u64, expected: u64, got: u64 },
}

impl FetchError {
    /// An owned `object_store::Error` for the caller (keeps `NotFound` recognisable).
    pub(crate) fn store_error(err: &Arc<object_store::Error>) -> object_store::Error {
        match &**err {
            object_store::Error::NotFound { path, .. } => object_store::Error::NotFound {
                path: path.clone(),
                source: Box::new(err.clone()),
            },
            _ => object_store::Error::Generic {
                store: "block cache",
                source: Box::new(err.clone()),
            },
        }
    }
}

type Pending = Shared<BoxFuture<'static, Result<Bytes, FetchError>>>;

enum Slot {
    Ready {
        data: Bytes,
        /// CLOCK reference bit: set on every hit, cleared by the sweeping hand.
        referenced: bool,
    },
    /// A GET in flight; `id` tells this fetch apart from a later one of the same block.
    Loading { id: u64, pending: Pending },
}

#[derive(Default)]
struct State {
    objects: HashMap<Arc<str>, HashMap<u64, Slot>>,
    /// The CLOCK ring over ready blocks. Entries of blocks dropped by `forget` stay until the hand
    /// passes them (or the ring is compacted).
    clock: VecDeque<(Arc<str>, u64)>,
    bytes: usize,
    ready: usize,
    next_id: u64,
}

impl State {
    fn slot(&mut self, key: &str, start: u64) -> Option<&mut Slot> {
        self.objects.get_mut(key)?.get_mut(&start)
    }

    fn remove(&mut self, key: &str, start: u64) -> Option<Slot> {
        let blocks = self.objects.get_mut(key)?;
        let slot = blocks.remove(&start);
        if blocks.is_empty() {
            self.objects.remove(key);
        }
        if let Some(Slot::Ready { data, .. }) = &slot {
            self.bytes -= data.len();
            self.ready -= 1;
        }
        slot
    }

    /// Evicts unreferenced blocks until the cache fits in `capacity`. Every ring entry is passed at
    /// most twice (once to clear its bit, once to evict), which bounds the sweep.
    fn evict(&mut self, capacity: usize, counters: &Counters) {
        let mut steps = 2 * self.clock.len() + 1;
        while self.bytes > capacity && steps > 0 {
            steps -= 1;
            let Some((key, start)) = self.clock.pop_front() else {
                break;
            };
            match self.slot(&key, start) {
                Some(Slot::Ready { referenced, .. }) if *referenced => {
                    *referenced = false;
                    self.clock.push_back((key, start));
                }
                Some(Slot::Ready { .. }) => {
                    self.remove(&key, start);
                    counters.evictions.fetch_add(1, Ordering::Relaxed);
                }
                // A stale entry: the block was forgotten (or is being fetched again).
                _ => {}
            }
        }
        // Forgotten blocks leave stale ring entries; keep the ring proportional to the cache.
        if self.clock.len() > 2 * self.ready + 1024 {
            let objects = &self.objects;
            self.clock.retain(|(key, start)| {
                matches!(
                    objects.get(key).and_then(|b| b.get(start)),
                    Some(Slot::Ready { .. })
                )
            });
        }
        debug_assert!(self.bytes <= capacity);
    }
}

#[derive(Default)]
struct Counters {
    gets: AtomicU64,
    get_bytes: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    joined: AtomicU64,
    prefetches: AtomicU64,
    prefetches_skipped: AtomicU64,
    evictions: AtomicU64,
}

struct CacheInner {
    store: Arc<dyn ObjectStore>,
    opts: BlockCacheOptions,
    gets: Arc<Semaphore>,
    state: Mutex<State>,
    counters: Counters,
}

/// The block cache; cheap to clone (shared state).
#[derive(Clone)]
pub(crate) struct BlockCache {
    inner: Arc<CacheInner>,
}

impl BlockCache {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, mut opts: BlockCacheOptions) -> Self {
        opts.block_size = opts.block_size.max(1);
        opts.max_concurrent_gets = opts.max_concurrent_gets.max(1);
        let half_cache_blocks = (opts.capacity_bytes as u64 / 2 / opts.block_size).max(1);
        opts.read_ahead_blocks = opts
            .read_ahead_blocks
            .min(usize::try_from(half_cache_blocks).unwrap_or(usize::MAX));
        BlockCache {
            inner: Arc::new(CacheInner {
                store,
                gets: Arc::new(Semaphore::new(opts.max_concurrent_gets)),
                opts,
                state: Mutex::new(State::default()),
                counters: Counters::default(),
            }),
        }
    }

    pub(crate) fn block_size(&self) -> u64 {
        self.inner.opts.block_size
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }

    /// The block holding `pos`: its aligned window clamped to `data`.
    fn block_of(&self, data: &Range<u64>, pos: u64) -> Range<u64> {
        let size = self.inner.opts.block_size;
        let aligned = pos - pos % size;
        aligned.max(data.start)..aligned.saturating_add(size).min(data.end)
    }

    /// The bytes of `key` from `pos` to the end of its block (never empty: `pos` must be inside
    /// `data`, the readable range of the segment). With `read_ahead`, also starts background GETs
    /// of the following blocks within `data`.
    pub(crate) async fn read(
        &self,
        key: &Arc<str>,
        data: &Range<u64>,
        pos: u64,
        read_ahead: bool,
    ) -> Result<Bytes, FetchError> {
        debug_assert!(data.contains(&pos), "{pos} outside {data:?}");
        let block = self.block_of(data, pos);
        let at = usize::try_from(pos - block.start).unwrap_or(usize::MAX);
        let counters = &self.inner.counters;
        let pending = {
            let mut state = self.state();
            match state.slot(key, block.start) {
                Some(Slot::Ready {
                    data: cached,
                    referenced,
                }) => {
                    *referenced = true;
                    counters.hits.fetch_add(1, Ordering::Relaxed);
                    let bytes = cached.slice(at.min(cached.len())..);
                    drop(state);
                    if read_ahead {
                        self.read_ahead(key, block.end..data.end);
                    }
                    return Ok(bytes);
                }
                Some(Slot::Loading { pending, .. }) => {
                    counters.joined.fetch_add(1, Ordering::Relaxed);
                    pending.clone()
                }
                None => {
                    counters.misses.fetch_add(1, Ordering::Relaxed);
                    // Take a permit now when one is free, so read-ahead started just below cannot
                    // take them all and make this demand read wait behind it.
                    let permit = self.inner.gets.clone().try_acquire_owned().ok();
                    self.start_fetch(&mut state, key, block.clone(), permit)
                }
            }
        };
        if read_ahead {
            self.read_ahead(key, block.end..data.end);
        }
        let bytes = pending.await?;
        Ok(bytes.slice(at.min(bytes.len())..))
    }

    /// Starts GETs for up to `read_ahead_blocks` blocks of `range` that are neither cached nor
    /// being fetched, as long as GET permits are free.
    fn read_ahead(&self, key: &Arc<str>, range: Range<u64>) {
        let counters = &self.inner.counters;
        let mut pos = range.start;
        let mut state = self.state();
        for _ in 0..self.inner.opts.read_ahead_blocks {
            if pos >= range.end {
                break;
            }
            let block = self.block_of(&range, pos);
            pos = block.end;
            if state.slot(key, block.start).is_some() {
                continue;
            }
            let Ok(permit) = self.inner.gets.clone().try_acquire_owned() else {
                counters.prefetches_skipped.fetch_add(1, Ordering::Relaxed);
                break;
            };
            counters.prefetches.fetch_add(1, Ordering::Relaxed);
            // The GET runs in its own task; readers find its future in the slot.
            drop(self.start_fetch(&mut state, key, block, Some(permit)));
        }
    }

    /// Parks a shared future for one GET of `block` in its slot. The GET runs in its own task, so
    /// it completes (and fills the cache) even when the reader that started it goes away.
    fn start_fetch(
        &self,
        state: &mut State,
        key: &Arc<str>,
        block: Range<u64>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Pending {
        let id = state.next_id;
        state.next_id += 1;
        let inner = self.inner.clone();
        let task_key = key.clone();
        let start = block.start;
        let task = tokio::spawn(async move {
            let _permit = match permit {
                Some(permit) => permit,
                None => inner
                    .gets
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|err| store_failure(Box::new(err)))?,
            };
            let result = inner.fetch(&task_key, block).await;
            inner.finish(&task_key, start, id, &result);
            result
        });
        let pending = async move {
            match task.await {
                Ok(result) => result,
                Err(join) => Err(store_failure(Box::new(join))),
            }
        }
        .boxed()
        .shared();
        state.objects.entry(key.clone()).or_default().insert(
            start,
            Slot::Loading {
                id,
                pending: pending.clone(),
            },
        );
        pending
    }

    /// Adds bytes the caller already fetched (`bytes` = object bytes from `pos`), block by block,
    /// where the cache has nothing yet — e.g. a small WAL chunk read together with its footer.
    pub(crate) fn insert(&self, key: &Arc<str>, data: &Range<u64>, pos: u64, bytes: &Bytes) {
        let end = pos.saturating_add(bytes.len() as u64).min(data.end);
        let mut at = pos.max(data.start);
        let mut state = self.state();
        let max_blocks = bytes.len() as u64 / self.inner.opts.block_size + 2;
        for _ in 0..max_blocks {
            if at >= end {
                break;
            }
            let block = self.block_of(data, at);
            at = block.end;
            // Only whole blocks: a partial one would be served as if it were complete.
            if block.end > end || state.slot(key, block.start).is_some() {
                continue;
            }
            let (from, to) = ((block.start - pos) as usize, (block.end - pos) as usize);
            self.inner
                .insert_ready(&mut state, key, block.start, bytes.slice(from..to));
        }
    }

    /// Drops every block of `key` (its object was deleted).
    pub(crate) fn forget(&self, key: &str) {
        let mut state = self.state();
        if let Some(blocks) = state.objects.remove(key) {
            for slot in blocks.into_values() {
                if let Slot::Ready { data, .. } = slot {
                    state.bytes -= data.len();
                    state.ready -= 1;
                }
            }
        }
    }

    /// Counts a GET made outside the cache for the same reads (segment footers), so `gets` and
    /// `get_bytes` cover every read of the object store.
    pub(crate) fn count_get(&self, bytes: usize) {
        let c = &self.inner.counters;
        c.gets.fetch_add(1, Ordering::Relaxed);
        c.get_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> BlockCacheStats {
        let c = &self.inner.counters;
        let (cached_bytes, cached_blocks) = {
            let state = self.state();
            (state.bytes, state.ready)
        };
        BlockCacheStats {
            gets: c.gets.load(Ordering::Relaxed),
            get_bytes: c.get_bytes.load(Ordering::Relaxed),
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            joined: c.joined.load(Ordering::Relaxed),
            prefetches: c.prefetches.load(Ordering::Relaxed),
            prefetches_skipped: c.prefetches_skipped.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            cached_bytes,
            cached_blocks,
        }
    }
}

fn store_failure(source: Box<dyn std::error::Error + Send + Sync>) -> FetchError {
    FetchError::Store(Arc::new(object_store::Error::Generic {
        store: "block cache",
        source,
    }))
}

impl CacheInner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn fetch(&self, key: &str, block: Range<u64>) -> Result<Bytes, FetchError> {
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        let bytes = self
            .store
            .get_range(&ObjectPath::from(key), block.clone())
            .await
            .map_err(|err| FetchError::Store(Arc::new(err)))?;
        self.counters
            .get_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let expected = block.end - block.start;
        if bytes.len() as u64 != expected {
            return Err(FetchError::Short {
                start: block.start,
                expected,
                got: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// Moves a finished GET into the cache (or clears the slot after a failure, so the next read
    /// retries). Only the fetch that owns the slot touches it: the block may have been forgotten and
    /// fetched again meanwhile.
    fn finish(&self, key: &Arc<str>, start: u64, id: u64, result: &Result<Bytes, FetchError>) {
        let mut state = self.lock();
        let owns_slot = matches!(
            state.slot(key, start),
            Some(Slot::Loading { id: slot_id, .. }) if *slot_id == id
        );
        if !owns_slot {
            return;
        }
        state.remove(key, start);
        if let Ok(bytes) = result {
            self.insert_ready(&mut state, key, start, bytes.clone());
        }
    }

    fn insert_ready(&self, state: &mut State, key: &Arc<str>, start: u64, data: Bytes) {
        state.bytes += data.len();
        state.ready += 1;
        state.objects.entry(key.clone()).or_default().insert(
            start,
            Slot::Ready {
                data,
                referenced: true,
            },
        );
        state.clock.push_back((key.clone(), start));
        state.evict(self.opts.capacity_bytes, &self.counters);
    }
}

/// An object store wrapper for tests: counts GETs (and their ranges) and adds a per-GET delay.
#[cfg(test)]
pub(crate) mod test_store {
    use std::fmt;
    use std::ops::Range;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::stream::BoxStream;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetRange, GetResult, ListResult, MultipartUpload, ObjectMeta,
        ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
    };

    #[derive(Debug)]
    pub(crate) struct CountingStore {
        inner: Arc<dyn ObjectStore>,
        delay: Duration,
        gets: AtomicU64,
        ranges: Mutex<Vec<(String, Option<Range<u64>>)>>,
    }

    impl fmt::Display for CountingStore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "CountingStore({})", self.inner)
        }
    }

    impl CountingStore {
        pub(crate) fn new(inner: Arc<dyn ObjectStore>, delay: Duration) -> Arc<Self> {
            Arc::new(CountingStore {
                inner,
                delay,
                gets: AtomicU64::new(0),
                ranges: Mutex::new(Vec::new()),
            })
        }

        pub(crate) fn gets(&self) -> u64 {
            self.gets.load(Ordering::SeqCst)
        }

        /// (key, bounded range) of every GET so far.
        pub(crate) fn ranges(&self) -> Vec<(String, Option<Range<u64>>)> {
            self.ranges.lock().unwrap().clone()
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for CountingStore {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            let range = match &options.range {
                Some(GetRange::Bounded(r)) => Some(r.clone()),
                _ => None,
            };
            self.ranges
                .lock()
                .unwrap()
                .push((location.to_string(), range));
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            self.inner.get_opts(location, options).await
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, Result<Path>>,
        ) -> BoxStream<'static, Result<Path>> {
            self.inner.delete_stream(locations)
        }

        fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    use super::test_store::CountingStore;
    use super::*;

    const BLOCK: u64 = 1000;

    /// An object of `len` bytes where byte `i` is `i % 251`, behind a counting store.
    async fn setup(len: usize, delay: Duration) -> (Arc<CountingStore>, Arc<str>) {
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        memory
            .put(&ObjectPath::from("obj"), Bytes::from(body).into())
            .await
            .unwrap();
        (CountingStore::new(memory, delay), "obj".into())
    }

    fn cache(store: &Arc<CountingStore>, capacity: usize, read_ahead: usize) -> BlockCache {
        BlockCache::new(
            store.clone(),
            BlockCacheOptions {
                capacity_bytes: capacity,
                block_size: BLOCK,
                read_ahead_blocks: read_ahead,
                max_concurrent_gets: 8,
            },
        )
    }

    fn expected(range: Range<u64>) -> Vec<u8> {
        range.map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn blocks_are_aligned_clamped_and_read_once() {
        let (store, key) = setup(10_000, Duration::ZERO).await;
        let cache = cache(&store, 1 << 20, 0);
        let data = 1_500..7_250;
        // Mid-block read: the rest of the block, clamped to the data range at both ends.
        let got = cache.read(&key, &data, 1_700, false).await.unwrap();
        assert_eq!(got, expected(1_700..2_000));
        let got = cache.read(&key, &data, 1_500, false).await.unwrap();
        assert_eq!(got, expected(1_500..2_000));
        let got = cache.read(&key, &data, 7_100, false).await.unwrap();
        assert_eq!(got, expected(7_100..7_250));
        assert_eq!(store.gets(), 2);
        assert_eq!(
            store
                .ranges()
                .into_iter()
                .map(|(_, r)| r)
                .collect::<Vec<_>>(),
            vec![Some(1_500..2_000), Some(7_000..7_250)]
        );
        // A second read of the same range issues no GET.
        let got = cache.read(&key, &data, 1_900, false).await.unwrap();
        assert_eq!(got, expected(1_900..2_000));
        assert_eq!(store.gets(), 2);
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.hits, stats.gets), (2, 2, 2));
        assert_eq!(stats.cached_bytes, 500 + 250);
        // Forget drops the object's blocks: the next read goes to the store again.
        cache.forget(&key);
        assert_eq!(cache.stats().cached_bytes, 0);
        cache.read(&key, &data, 1_900, false).await.unwrap();
        assert_eq!(store.gets(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_readers_of_a_block_share_one_get() {
        let (store, key) = setup(10_000, Duration::from_millis(40)).await;
        let cache = cache(&store, 1 << 20, 0);
        let data = 0..10_000;
        let readers: Vec<_> = (0..20u64)
            .map(|i| {
                let (cache, key, data) = (cache.clone(), key.clone(), data.clone());
                tokio::spawn(async move { cache.read(&key, &data, 3_000 + i * 7, false).await })
            })
            .collect();
        for (i, reader) in readers.into_iter().enumerate() {
            let got = reader.await.unwrap().unwrap();
            let from = 3_000 + i as u64 * 7;
            assert_eq!(got, expected(from..4_000));
        }
        assert_eq!(store.gets(), 1);
        let stats = cache.stats();
        assert_eq!(stats.misses + stats.joined, 20);
        assert_eq!(stats.misses, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn read_ahead_fetches_next_blocks_in_parallel_and_a_scan_gets_each_block_once() {
        let blocks = 40u64;
        let (store, key) = setup((blocks * BLOCK) as usize, Duration::from_millis(40)).await;
        let cache = cache(&store, 1 << 20, 4);
        let data = 0..blocks * BLOCK;
        // Reading block 0 starts GETs for blocks 1..=4 in the background.
        let started = tokio::time::Instant::now();
        cache.read(&key, &data, 0, true).await.unwrap();
        tokio::task::yield_now().await;
        let mut ranges: Vec<_> = store.ranges().into_iter().filter_map(|(_, r)| r).collect();
        ranges.sort_by_key(|r| r.start);
        assert_eq!(
            ranges,
            (0..5)
                .map(|b| b * BLOCK..(b + 1) * BLOCK)
                .collect::<Vec<_>>()
        );
        // A sequential scan of every block: one GET per block, no more, and the GETs overlap
        // (40 blocks at 40 ms each would take 1.6 s one at a time).
        let mut pos = 0;
        while pos < data.end {
            let got = cache.read(&key, &data, pos, true).await.unwrap();
            assert_eq!(got, expected(pos..pos + got.len() as u64));
            pos += got.len() as u64;
        }
        assert_eq!(store.gets(), blocks);
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_millis(40 * blocks / 3),
            "{elapsed:?}"
        );
        let stats = cache.stats();
        assert_eq!(stats.gets, blocks);
        assert!(stats.prefetches >= blocks - 5, "{stats:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn read_ahead_never_exceeds_the_get_bound() {
        let (store, key) = setup(100_000, Duration::from_millis(40)).await;
        let cache = BlockCache::new(
            store.clone(),
            BlockCacheOptions {
                capacity_bytes: 1 << 20,
                block_size: BLOCK,
                read_ahead_blocks: 16,
                max_concurrent_gets: 3,
            },
        );
        cache.read(&key, &(0..100_000), 0, true).await.unwrap();
        // The demand GET plus two read-ahead GETs; the rest was skipped, not queued.
        let stats = cache.stats();
        assert_eq!(stats.prefetches, 2, "{stats:?}");
        assert!(stats.prefetches_skipped >= 1);
    }

    #[tokio::test]
    async fn the_byte_bound_holds_and_recently_used_blocks_stay() {
        let (store, key) = setup(50_000, Duration::ZERO).await;
        let capacity = 5_500;
        let cache = cache(&store, capacity, 2);
        let data = 0..50_000;
        for round in 0..3u64 {
            for block in 0..50 {
                let pos = block * BLOCK + round * 13;
                let got = cache.read(&key, &data, pos, round == 1).await.unwrap();
                assert_eq!(got, expected(pos..(block + 1) * BLOCK));
                assert!(cache.stats().cached_bytes <= capacity);
                // Keep block 0 hot: CLOCK keeps referenced blocks.
                cache.read(&key, &data, 0, false).await.unwrap();
                assert!(cache.stats().cached_bytes <= capacity);
            }
        }
        // Let read-ahead GETs land, then check again.
        tokio::task::yield_now().await;
        let stats = cache.stats();
        assert!(stats.cached_bytes <= capacity, "{stats:?}");
        assert!(stats.cached_blocks <= 5);
        assert!(stats.evictions > 0);
        let gets = store.gets();
        cache.read(&key, &data, 0, false).await.unwrap();
        assert_eq!(store.gets(), gets, "the hot block was evicted");
    }

    #[tokio::test]
    async fn errors_are_not_cached_and_short_objects_are_detected() {
        let (store, key) = setup(5_000, Duration::ZERO).await;
        let cache = cache(&store, 1 << 20, 0);
        let missing: Arc<str> = "missing".into();
        let err = cache.read(&missing, &(0..100), 0, false).await.unwrap_err();
        assert!(matches!(
            &err,
            FetchError::Store(e) if matches!(**e, object_store::Error::NotFound { .. })
        ));
        assert!(matches!(
            FetchError::store_error(match &err {
                FetchError::Store(e) => e,
                FetchError::Short { .. } => unreachable!(),
            }),
            object_store::Error::NotFound { .. }
        ));
        assert!(cache.read(&missing, &(0..100), 0, false).await.is_err());
        assert_eq!(store.gets(), 2);
        // The index claims more data than the object holds: a short read, not cached.
        let err = cache.read(&key, &(4_000..5_600), 4_500, false).await;
        assert!(err.is_ok());
        let err = cache.read(&key, &(4_000..5_600), 4_999, false).await;
        assert!(err.is_ok());
        let (short_store, short_key) = setup(5_300, Duration::ZERO).await;
        let short_cache = BlockCache::new(
            short_store.clone(),
            BlockCacheOptions {
                block_size: BLOCK,
                ..BlockCacheOptions::default()
            },
        );
        let err = short_cache
            .read(&short_key, &(4_000..5_600), 5_100, false)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                FetchError::Short {
                    start: 5_000,
                    expected: 600,
                    got: 300
                }
            ),
            "{err:?}"
        );
        assert_eq!(short_cache.stats().cached_bytes, 0);
    }

    #[tokio::test]
    async fn insert_adds_whole_blocks_only() {
        let (store, key) = setup(5_000, Duration::ZERO).await;
        let cache = cache(&store, 1 << 20, 0);
        let data = 1_200..3_500;
        let bytes = Bytes::from(expected(1_200..3_500));
        cache.insert(&key, &data, 1_200, &bytes);
        for pos in [1_200, 1_999, 2_000, 3_499] {
            let got = cache.read(&key, &data, pos, false).await.unwrap();
            let end = ((pos / BLOCK + 1) * BLOCK).min(data.end);
            assert_eq!(got, expected(pos..end));
        }
        assert_eq!(store.gets(), 0);
        // A prefix that ends inside a block leaves that block out.
        cache.forget(&key);
        cache.insert(&key, &data, 1_200, &bytes.slice(..1_000));
        assert_eq!(cache.stats().cached_blocks, 1);
    }
}
