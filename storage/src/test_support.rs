//! Test helpers: building real record batches and running a LogStore against a real metadata node
//! in a temporary directory.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use metadata::{
    Command, CommandResponse, MetadataClient, MetadataNode, MetadataOptions, TopicPartition,
};
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use tempfile::TempDir;
use uuid::Uuid;

use crate::{LogStore, StorageOptions};

fn put_varint(buf: &mut BytesMut, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// An uncompressed v2 batch (base offset 0) with one record per `(timestamp, value)`.
pub(crate) fn build_batch(records: &[(i64, Vec<u8>)]) -> BytesMut {
    assert!(!records.is_empty());
    let base_ts = records[0].0;
    let max_ts = records.iter().map(|r| r.0).max().unwrap_or(base_ts);
    let mut body = BytesMut::new();
    for (i, (ts, value)) in records.iter().enumerate() {
        let mut rec = BytesMut::new();
        rec.put_i8(0);
        put_varint(&mut rec, ts - base_ts);
        put_varint(&mut rec, i as i64);
        put_varint(&mut rec, -1); // null key
        put_varint(&mut rec, value.len() as i64);
        rec.put_slice(value);
        put_varint(&mut rec, 0); // headers
        put_varint(&mut body, rec.len() as i64);
        body.put_slice(&rec);
    }
    let mut batch = BytesMut::new();
    batch.put_i64(0);
    batch.put_i32((crate::batch::HEADER_LEN - 12 + body.len()) as i32);
    // partitionLeaderEpoch: the store stamps the partition's epoch (0 in these tests), so
    // batches built with 0 read back byte-for-byte.
    batch.put_i32(0);
    batch.put_i8(2);
    batch.put_u32(0);
    batch.put_i16(0);
    batch.put_i32(records.len() as i32 - 1);
    batch.put_i64(base_ts);
    batch.put_i64(max_ts);
    batch.put_i64(-1);
    batch.put_i16(-1);
    batch.put_i32(-1);
    batch.put_i32(records.len() as i32);
    batch.put_slice(&body);
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// A batch of `count` records of `value_len` bytes, all at `timestamp`.
pub(crate) fn simple_batch(count: usize, value_len: usize, timestamp: i64) -> BytesMut {
    let records: Vec<(i64, Vec<u8>)> = (0..count)
        .map(|i| (timestamp, vec![(i % 251) as u8; value_len]))
        .collect();
    build_batch(&records)
}

/// What a stored batch looks like: the appended bytes with `baseOffset` rewritten.
pub(crate) fn stored(batch: &BytesMut, base_offset: i64) -> Vec<u8> {
    let mut bytes = batch.to_vec();
    crate::batch::set_base_offset(&mut bytes, base_offset);
    bytes
}

pub(crate) const NODE: u64 = 1;

/// A LogStore with a metadata node and a local-filesystem object store under one temp dir.
pub(crate) struct Harness {
    pub(crate) dir: TempDir,
    pub(crate) node: Option<MetadataNode>,
    pub(crate) meta: MetadataClient,
    pub(crate) objects: Arc<dyn ObjectStore>,
    pub(crate) opts: StorageOptions,
    pub(crate) store: LogStore,
}

fn meta_options(dir: &TempDir) -> MetadataOptions {
    MetadataOptions {
        dir: dir.path().join("meta"),
        node_id: NODE,
        snapshot_every: 10_000,
        fsync: false,
        journal: None,
    }
}

impl Harness {
    pub(crate) async fn start(configure: impl FnOnce(&mut StorageOptions)) -> Harness {
        Harness::start_with(|store| store, configure).await
    }

    /// Like [`Harness::start`], with the object store wrapped by `wrap` (fault injection).
    pub(crate) async fn start_with(
        wrap: impl FnOnce(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>,
        configure: impl FnOnce(&mut StorageOptions),
    ) -> Harness {
        Harness::start_full(wrap, None, configure).await
    }

    /// Like [`Harness::start`], with metadata mirrored to a bucket log in `journal_store`.
    pub(crate) async fn start_journaled(
        journal_store: Arc<dyn ObjectStore>,
        configure: impl FnOnce(&mut StorageOptions),
    ) -> Harness {
        let journal = metadata::JournalOptions {
            store: journal_store,
            prefix: "test-cluster".to_owned(),
            snapshot_every: 10_000,
            persist_timeout: Duration::from_secs(5),
        };
        Harness::start_full(|store| store, Some(journal), configure).await
    }

    async fn start_full(
        wrap: impl FnOnce(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>,
        journal: Option<metadata::JournalOptions>,
        configure: impl FnOnce(&mut StorageOptions),
    ) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = MetadataNode::start(MetadataOptions {
            journal,
            ..meta_options(&dir)
        })
        .await
        .expect("metadata node");
        let meta = node.client();
        let objects_dir = dir.path().join("objects");
        std::fs::create_dir_all(&objects_dir).expect("objects dir");
        let objects: Arc<dyn ObjectStore> = wrap(Arc::new(
            LocalFileSystem::new_with_prefix(&objects_dir).expect("local store"),
        ));
        Harness::open(dir, Some(node), meta, objects, configure).await
    }

    async fn open(
        dir: TempDir,
        node: Option<MetadataNode>,
        meta: MetadataClient,
        objects: Arc<dyn ObjectStore>,
        configure: impl FnOnce(&mut StorageOptions),
    ) -> Harness {
        let mut opts = StorageOptions::new(dir.path().join("data"), NODE, "test-cluster");
        opts.wal.fsync = false;
        opts.housekeeping_interval = Duration::from_millis(50);
        configure(&mut opts);
        let store = LogStore::open(opts.clone(), objects.clone(), meta.clone())
            .await
            .expect("open store");
        Harness {
            dir,
            node,
            meta,
            objects,
            opts,
            store,
        }
    }

    /// A store on metadata and an object store that other stores in this process may share (one
    /// broker of several against one index: [`metadata::MemoryMetadata`]). Its data dir is its own.
    pub(crate) async fn start_shared(
        meta: MetadataClient,
        objects: Arc<dyn ObjectStore>,
        configure: impl FnOnce(&mut StorageOptions),
    ) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        Harness::open(dir, None, meta, objects, configure).await
    }

    pub(crate) async fn create_topic(&self, name: &str, partitions: u32) -> Uuid {
        let topic_id = Uuid::new_v4();
        let response = self
            .meta
            .propose(Command::CreateTopic {
                name: name.to_string(),
                topic_id,
                partitions,
                configs: BTreeMap::new(),
                owner: NODE,
                now_ms: crate::now_ms(),
            })
            .await
            .expect("create topic");
        assert_eq!(response, CommandResponse::Ok);
        topic_id
    }

    /// Stops the store and the metadata node and starts both again on the same directories.
    pub(crate) async fn restart(&mut self) {
        self.store.shutdown().await.expect("shutdown store");
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("shutdown metadata");
        }
        let node = MetadataNode::start(meta_options(&self.dir))
            .await
            .expect("metadata node restart");
        self.meta = node.client();
        self.node = Some(node);
        self.store = LogStore::open(self.opts.clone(), self.objects.clone(), self.meta.clone())
            .await
            .expect("reopen store");
    }

    pub(crate) fn segments(&self, tp: TopicPartition) -> Vec<metadata::SegmentRef> {
        self.meta
            .state()
            .partition(tp)
            .map(|p| p.segments.clone())
            .unwrap_or_default()
    }

    pub(crate) fn segmented_end(&self, tp: TopicPartition) -> i64 {
        self.meta
            .state()
            .partition(tp)
            .map(|p| p.segmented_end())
            .unwrap_or(-1)
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.store.shutdown().await;
        if let Some(node) = self.node.take() {
            let _ = node.shutdown().await;
        }
    }
}

/// The longest any wait in these tests may take: a guard against a hang, not a guess at how fast
/// the machine is (every wait it bounds ends on an event, normally in milliseconds).
pub(crate) const HANG_GUARD: Duration = Duration::from_secs(120);

/// `future`'s output; panics naming `what` if it takes longer than [`HANG_GUARD`].
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(HANG_GUARD, future).await {
        Ok(output) => output,
        Err(_) => panic!("hung waiting for {what}"),
    }
}

/// Waits until the applied metadata satisfies `condition`, re-checking it at every applied change
/// (the S3 WAL's indexer, compaction, retention and GC all change the index through metadata).
pub(crate) async fn wait_for_state(
    meta: &MetadataClient,
    what: &str,
    condition: impl Fn(&metadata::MetadataState) -> bool,
) {
    // Subscribed before the first check: a change after it wakes the loop.
    let mut applied = meta.watch();
    within(what, async {
        while !condition(&meta.state()) {
            assert!(
                applied.changed().await.is_ok(),
                "metadata stopped before {what}"
            );
        }
    })
    .await;
}

impl Harness {
    /// One round of the segment writer (file WAL) or compaction (S3 WAL): see
    /// [`LogStore::run_writer_pass`].
    pub(crate) async fn writer_pass(&self) {
        within("a segment writer round", self.store.run_writer_pass()).await;
    }

    /// One housekeeping pass (retention, GC, lane sweep): see [`LogStore::run_housekeeping_pass`].
    pub(crate) async fn housekeeping_pass(&self) {
        within("a housekeeping pass", self.store.run_housekeeping_pass()).await;
    }

    /// Waits until this harness's metadata satisfies `condition` ([`wait_for_state`]).
    pub(crate) async fn wait_for_state(
        &self,
        what: &str,
        condition: impl Fn(&metadata::MetadataState) -> bool,
    ) {
        wait_for_state(&self.meta, what, condition).await;
    }
}

/// Polls `condition` every 10 ms for up to `timeout` of tokio time. Only for tests under paused
/// time (`start_paused`), where the clock moves only while every task waits, so the bound counts
/// simulated time, not the machine's speed; anything else waits on an event or drives the pass.
pub(crate) async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn built_batches_are_valid() {
    let batch = build_batch(&[
        (1_000, b"a".to_vec()),
        (900, b"bb".to_vec()),
        (1_200, vec![]),
    ]);
    let header = crate::batch::validate(&batch).expect("valid batch");
    assert_eq!(header.record_count, 3);
    assert_eq!(header.max_timestamp, 1_200);
    let timestamps = crate::batch::record_timestamps(&batch).expect("timestamps");
    assert_eq!(timestamps, vec![(0, 1_000), (1, 900), (2, 1_200)]);
}

/// A simulated bucket for one broker of several sharing `inner`: every request can be held (the
/// broker is paused), PUTs complete after a random delay (so out of order), and a seeded share of
/// them are answered "stored, then 500" or "409 with nothing stored". [`SimStore::faulty`] makes
/// one without randomness, whose PUTs alone can be held or failed a number of times.
#[derive(Debug)]
pub(crate) struct SimStore {
    inner: Arc<dyn ObjectStore>,
    gate: tokio::sync::watch::Sender<bool>,
    /// PUTs (only) wait while this is `true`.
    hold: tokio::sync::watch::Sender<bool>,
    /// PUTs of WAL objects that hold data (not tombstones) wait while this is `true`.
    hold_data: tokio::sync::watch::Sender<bool>,
    /// The next this-many PUTs fail with a generic (retriable) error, nothing stored.
    pub(crate) fail_puts: std::sync::atomic::AtomicU32,
    /// PUTs that reached the inner store.
    pub(crate) puts: std::sync::atomic::AtomicU64,
    rng: std::sync::Mutex<rand::rngs::StdRng>,
    /// Per mille of PUTs stored, then answered with an error.
    pub(crate) stored_then_error: u32,
    /// Per mille of creates answered `AlreadyExists` with nothing stored.
    conflict_nothing_stored: std::sync::atomic::AtomicU32,
    /// Upper bound of the random PUT delay.
    pub(crate) max_delay: Duration,
}

impl SimStore {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, seed: u64) -> Arc<SimStore> {
        use rand::SeedableRng;
        Arc::new(SimStore {
            inner,
            gate: tokio::sync::watch::channel(true).0,
            hold: tokio::sync::watch::channel(false).0,
            hold_data: tokio::sync::watch::channel(false).0,
            fail_puts: Default::default(),
            puts: Default::default(),
            rng: std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            stored_then_error: 50,
            conflict_nothing_stored: std::sync::atomic::AtomicU32::new(50),
            max_delay: Duration::from_millis(20),
        })
    }

    /// No delays and no random faults: only what a test asks for.
    pub(crate) fn faulty(inner: Arc<dyn ObjectStore>) -> Arc<SimStore> {
        let mut store = SimStore::new(inner, 0);
        let sim = Arc::get_mut(&mut store).expect("fresh store");
        sim.stored_then_error = 0;
        sim.max_delay = Duration::ZERO;
        store.set_conflicts(0);
        store
    }

    pub(crate) fn hold_puts(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    /// Holds (or releases) PUTs of WAL objects with data; tombstones still go through.
    pub(crate) fn hold_data_puts(&self, hold: bool) {
        self.hold_data.send_replace(hold);
    }

    /// Per mille of creates answered `AlreadyExists` with nothing stored, from now on.
    pub(crate) fn set_conflicts(&self, per_mille: u32) {
        self.conflict_nothing_stored
            .store(per_mille, std::sync::atomic::Ordering::SeqCst);
    }

    /// Holds (`false`) or releases (`true`) every request of this broker.
    pub(crate) fn set_open(&self, open: bool) {
        self.gate.send_replace(open);
    }

    async fn pass_gate(&self) {
        let mut gate = self.gate.subscribe();
        // Bounded: tests open the gate again; a dropped sender also ends the wait.
        let _ = gate.wait_for(|open| *open).await;
    }

    fn roll(&self) -> (u32, Duration) {
        use rand::Rng;
        let mut rng = crate::lock(&self.rng);
        let dice = rng.random_range(0..1000);
        let delay = rng.random_range(0..=self.max_delay.as_micros() as u64);
        (dice, Duration::from_micros(delay))
    }
}

impl std::fmt::Display for SimStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for SimStore {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        use std::sync::atomic::Ordering;
        self.pass_gate().await;
        let mut hold = self.hold.subscribe();
        // Bounded: tests release the hold; a dropped sender also ends the wait.
        let _ = hold.wait_for(|held| !*held).await;
        let data = crate::wal_object::parse(&bytes::Bytes::from(payload.clone()))
            .is_ok_and(|manifest| manifest.sealed_by.is_none());
        if data {
            let mut hold = self.hold_data.subscribe();
            // Bounded like the hold above.
            let _ = hold.wait_for(|held| !*held).await;
        }
        let failing = self
            .fail_puts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: "injected PUT failure".into(),
            });
        }
        let (dice, delay) = self.roll();
        let create = matches!(opts.mode, object_store::PutMode::Create);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        // Paused while this request was in flight: it completes only after the resume.
        self.pass_gate().await;
        let conflicts = self
            .conflict_nothing_stored
            .load(std::sync::atomic::Ordering::SeqCst);
        if create && dice < conflicts {
            return Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "simulated 409, nothing stored".into(),
            });
        }
        self.puts.fetch_add(1, Ordering::SeqCst);
        let result = self.inner.put_opts(location, payload, opts).await?;
        if dice >= 1000 - self.stored_then_error {
            return Err(object_store::Error::Generic {
                store: "sim",
                source: "simulated 500 after the object was stored".into(),
            });
        }
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.pass_gate().await;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.pass_gate().await;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.pass_gate().await;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.pass_gate().await;
        self.inner.copy_opts(from, to, options).await
    }
}
