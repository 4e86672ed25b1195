//! Tests of the bucket metadata log: metadata nodes mirrored to an in-memory object store (each node
//! through its own wrapper that can fail, hold or fake the outcome of its PUTs), restored on empty
//! directories from the bucket alone, fenced when another process continues the log.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use uuid::Uuid;

use crate::bucket_format::{self, Lineage};
use crate::node_tests::{options, workload, TestResult, HANG_GUARD, NOW};
use crate::{
    Command, CommandResponse, Error, JournalOptions, MetadataClient, MetadataNode, MetadataOptions,
    MetadataState,
};

const PREFIX: &str = "cluster-x";

/// One process's view of a shared in-memory bucket; its PUTs can be made to fail, hang, or end
/// ambiguously.
#[derive(Debug)]
struct TestStore {
    inner: Arc<InMemory>,
    fail_puts: AtomicBool,
    /// PUTs wait while set (bounded by the hang guard), counted in `held`.
    block_puts: tokio::sync::watch::Sender<bool>,
    held: AtomicU64,
    /// Bumped whenever a PUT is held or stored: what [`TestStore::wait_for`] re-checks on.
    events: tokio::sync::watch::Sender<u64>,
    /// The next this many creates are stored, then answered with an error (a 500 after storing).
    store_then_fail: AtomicU32,
    /// The next this many creates are answered `AlreadyExists` without storing anything (a 409
    /// from an object store that stored nothing).
    conflict_without_storing: AtomicU32,
    puts: AtomicU64,
}

impl TestStore {
    fn new() -> Arc<TestStore> {
        TestStore::sharing(&Arc::new(InMemory::new()))
    }

    /// Another process's view of the same bucket.
    fn sharing(inner: &Arc<InMemory>) -> Arc<TestStore> {
        Arc::new(TestStore {
            inner: inner.clone(),
            fail_puts: AtomicBool::new(false),
            block_puts: tokio::sync::watch::Sender::new(false),
            held: AtomicU64::new(0),
            events: tokio::sync::watch::Sender::new(0),
            store_then_fail: AtomicU32::new(0),
            conflict_without_storing: AtomicU32::new(0),
            puts: AtomicU64::new(0),
        })
    }

    /// Holds (`true`) or releases (`false`) this process's PUTs.
    fn hold_puts(&self, hold: bool) {
        self.block_puts.send_replace(hold);
    }

    /// Waits until `check` answers `true`, re-checking after every PUT this store holds or
    /// stores; `Err` naming `what` after the hang guard.
    async fn wait_for<F, Fut>(&self, what: &str, mut check: F) -> Result<(), String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, String>>,
    {
        // Subscribed before the first check: an event after it wakes the loop.
        let mut events = self.events.subscribe();
        let waited = tokio::time::timeout(HANG_GUARD, async {
            while !check().await? {
                events
                    .changed()
                    .await
                    .map_err(|_| format!("the store went away before {what}"))?;
            }
            Ok(())
        })
        .await;
        waited.unwrap_or_else(|_| Err(format!("hung waiting for {what}")))
    }
}

impl fmt::Display for TestStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TestStore")
    }
}

fn injected(what: &'static str) -> object_store::Error {
    object_store::Error::Generic {
        store: "test",
        source: what.into(),
    }
}

fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[async_trait::async_trait]
impl ObjectStore for TestStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        // A held PUT hangs (bounded, so a broken test cannot hang forever).
        if *self.block_puts.borrow() {
            self.held.fetch_add(1, Ordering::SeqCst);
            self.events.send_modify(|count| *count += 1);
            let mut block = self.block_puts.subscribe();
            let _ = tokio::time::timeout(HANG_GUARD, block.wait_for(|held| !held)).await;
        }
        if self.fail_puts.load(Ordering::SeqCst) {
            return Err(injected("injected PUT failure"));
        }
        if take_one(&self.conflict_without_storing) {
            return Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "injected 409, nothing stored".into(),
            });
        }
        self.puts.fetch_add(1, Ordering::SeqCst);
        let stored = self.inner.put_opts(location, payload, opts).await?;
        self.events.send_modify(|count| *count += 1);
        if take_one(&self.store_then_fail) {
            return Err(injected("injected 500 after storing"));
        }
        Ok(stored)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn journal_options(
    dir: &FsPath,
    store: &Arc<TestStore>,
    snapshot_every: u64,
    persist_timeout: Duration,
) -> MetadataOptions {
    MetadataOptions {
        journal: Some(JournalOptions {
            store: store.clone(),
            prefix: PREFIX.to_owned(),
            snapshot_every,
            persist_timeout,
        }),
        ..options(dir, 10_000)
    }
}

fn log_key(first: u64) -> Path {
    Path::from(format!("{PREFIX}/metadata/log/{first:020}.json"))
}

fn snapshot_key(index: u64) -> Path {
    Path::from(format!("{PREFIX}/metadata/snapshot/{index:020}.json"))
}

/// Every object under `{PREFIX}/metadata/`, sorted, with its bytes.
async fn everything(
    store: &TestStore,
) -> Result<Vec<(String, Vec<u8>)>, Box<dyn std::error::Error>> {
    let dir = Path::from(format!("{PREFIX}/metadata"));
    let metas: Vec<ObjectMeta> = store.list(Some(&dir)).try_collect().await?;
    let mut all = Vec::new();
    for meta in metas {
        let bytes = store.get(&meta.location).await?.bytes().await?;
        all.push((meta.location.to_string(), bytes.to_vec()));
    }
    all.sort();
    Ok(all)
}

/// `(first, last, lineage)` of every log object, sorted (each one decoded and checked).
async fn log_objects(
    store: &TestStore,
) -> Result<Vec<(u64, u64, Lineage)>, Box<dyn std::error::Error>> {
    let dir = Path::from(format!("{PREFIX}/metadata/log"));
    let metas: Vec<ObjectMeta> = store.list(Some(&dir)).try_collect().await?;
    let mut objects = Vec::new();
    for meta in metas {
        let name = meta.location.filename().unwrap_or_default();
        let first = bucket_format::parse_log_name(name).ok_or(format!("foreign name {name}"))?;
        let bytes = store.get(&meta.location).await?.bytes().await?;
        let object = bucket_format::decode_log(&bytes, first).map_err(|e| e.to_string())?;
        objects.push((first, object.last, object.lineage));
    }
    objects.sort_by_key(|o| o.0);
    Ok(objects)
}

fn assert_exact_chain(objects: &[(u64, u64, Lineage)]) {
    for pair in objects.windows(2) {
        assert_eq!(pair[1].0, pair[0].1 + 1, "exact chain: {objects:?}");
    }
}

async fn snapshot_indexes(store: &TestStore) -> Result<Vec<u64>, object_store::Error> {
    let dir = Path::from(format!("{PREFIX}/metadata/snapshot"));
    let metas: Vec<ObjectMeta> = store.list(Some(&dir)).try_collect().await?;
    let mut indexes: Vec<u64> = metas
        .iter()
        .filter_map(|meta| bucket_format::parse_snapshot_name(meta.location.filename()?))
        .collect();
    indexes.sort();
    Ok(indexes)
}

fn applied(client: &MetadataClient) -> u64 {
    *client.watch().borrow()
}

fn create_topic(name: &str, id: u128) -> Command {
    Command::CreateTopic {
        name: name.to_owned(),
        topic_id: Uuid::from_u128(id),
        partitions: 1,
        configs: BTreeMap::new(),
        owner: 1,
        now_ms: NOW,
    }
}

fn alloc() -> Command {
    Command::AllocateProducerIds { count: 1 }
}

async fn restored_state(
    store: &Arc<TestStore>,
    snapshot_every: u64,
) -> Result<MetadataState, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let node = MetadataNode::start(journal_options(
        dir.path(),
        store,
        snapshot_every,
        Duration::from_secs(5),
    ))
    .await?;
    let state = (*node.client().state()).clone();
    node.shutdown().await?;
    Ok(state)
}

/// A start that must fail with a restore error naming `object`.
async fn assert_start_refused(
    store: &Arc<TestStore>,
    object: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let opts = journal_options(dir.path(), store, 10_000, Duration::from_secs(2));
    match MetadataNode::start(opts).await {
        Err(Error::Restore(message)) => {
            assert!(message.contains(object), "{message} should name {object}");
            Ok(message)
        }
        Err(other) => Err(format!("unexpected error {other}").into()),
        Ok(node) => {
            node.shutdown().await?;
            Err(format!("started although {object} is unusable").into())
        }
    }
}

#[tokio::test]
async fn a_wiped_node_restores_from_the_bucket_and_continues_under_a_new_lineage() -> TestResult {
    let store = TestStore::new();
    let dir = tempfile::tempdir()?;
    let opts = journal_options(dir.path(), &store, 10_000, Duration::from_secs(5));
    let node = MetadataNode::start(opts.clone()).await?;
    let client = node.client();
    workload(&client).await?;
    let before = client.state();
    let index = applied(&client);
    node.shutdown().await?;

    // Every entry is in the bucket as an exact chain from index 0, all of one lineage.
    let objects = log_objects(&store).await?;
    assert_eq!(objects.first().map(|o| o.0), Some(0), "{objects:?}");
    assert_exact_chain(&objects);
    assert_eq!(objects.last().map(|o| o.1), Some(index));
    let first_lineage = objects[0].2;
    assert!(objects.iter().all(|o| o.2 == first_lineage));

    // Junk in the directory (a cache only) is wiped; the state comes from the bucket.
    std::fs::write(dir.path().join("junk"), b"junk")?;
    let node = MetadataNode::start(opts.clone()).await?;
    let client = node.client();
    assert!(!dir.path().join("junk").exists());
    assert_eq!(*client.state(), *before);
    assert!(applied(&client) > index);
    // openraft started from the seeded local snapshot at `index` with an empty log and no vote:
    // it elected itself at term 1 and wrote its leader blank entry at `index + 1`.
    assert_eq!(node.inner.log_progress(), (Some(index), Some(index)));
    assert_eq!(node.inner.term_and_last_index(), (1, Some(index + 1)));
    // The start stored the new lineage's first object right after the restored index.
    let objects = log_objects(&store).await?;
    let new = objects
        .iter()
        .find(|o| o.0 == index + 1)
        .ok_or("no object at index + 1")?;
    assert_ne!(new.2, first_lineage, "a restore starts a new lineage");

    assert_eq!(
        client.propose(alloc()).await?,
        CommandResponse::ProducerIdStart(15)
    );
    assert_eq!(
        client.propose(create_topic("later", 77)).await?,
        CommandResponse::Ok
    );
    let after = client.state();
    let index_after = applied(&client);
    node.shutdown().await?;
    let objects = log_objects(&store).await?;
    assert_exact_chain(&objects);
    assert_eq!(objects.first().map(|o| o.0), Some(0), "nothing was deleted");
    assert_eq!(objects.last().map(|o| o.1), Some(index_after));
    // The restore's fresh base snapshot at the restored index, uploaded once the new lineage's
    // first object was stored.
    assert_eq!(snapshot_indexes(&store).await?, vec![index]);

    // A brand-new directory gets the same state, later entries included.
    let state = restored_state(&store, 10_000).await?;
    assert_eq!(state, *after);
    assert!(state.topic_by_name("later").is_some());
    assert_eq!(state.next_producer_id, 16);
    Ok(())
}

/// Waits until the bucket holds at least `count` snapshots, the newest at `at_least`+ (re-listed
/// after every PUT of this store).
async fn wait_for_snapshots(
    store: &TestStore,
    count: usize,
    at_least: u64,
) -> Result<Vec<u64>, String> {
    let enough = |snapshots: &[u64]| {
        snapshots.len() >= count && snapshots.last().is_some_and(|&s| s >= at_least)
    };
    store
        .wait_for(&format!("{count} snapshots at {at_least}+"), || async {
            let snapshots = snapshot_indexes(store).await.map_err(|e| e.to_string())?;
            Ok(enough(&snapshots))
        })
        .await?;
    snapshot_indexes(store).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn snapshots_sit_at_object_boundaries_and_logs_are_kept_from_the_older_one() -> TestResult {
    let store = TestStore::new();
    let dir = tempfile::tempdir()?;
    let node = MetadataNode::start(journal_options(
        dir.path(),
        &store,
        5,
        Duration::from_secs(5),
    ))
    .await?;
    let client = node.client();
    workload(&client).await?;
    for _ in 0..30 {
        client.propose(alloc()).await?;
    }
    let index = applied(&client);
    wait_for_snapshots(&store, 2, index.saturating_sub(10)).await?;
    for _ in 0..2 {
        client.propose(alloc()).await?;
    }
    let before = client.state();
    node.shutdown().await?;

    let snapshots = snapshot_indexes(&store).await?;
    assert_eq!(
        snapshots.len(),
        2,
        "only the newest two are kept: {snapshots:?}"
    );
    let objects = log_objects(&store).await?;
    assert_exact_chain(&objects);
    // Logs are kept from the older snapshot on: the chain starts right after it.
    assert_eq!(
        objects.first().map(|o| o.0),
        Some(snapshots[0] + 1),
        "{objects:?} {snapshots:?}"
    );
    // The older snapshot's boundary is where the chain starts; the newer one ends an object.
    assert!(
        objects.iter().any(|o| o.1 == snapshots[1]),
        "snapshot {} is not at an object boundary: {objects:?}",
        snapshots[1]
    );
    assert_eq!(restored_state(&store, 5).await?, *before);

    // A damaged newest snapshot: the older one plus the kept log objects give the same state,
    // and the damaged one is not trusted as a fallback (nothing it would cover is deleted).
    let newest = *snapshot_indexes(&store)
        .await?
        .last()
        .ok_or("no snapshot")?;
    let stored = store.get(&snapshot_key(newest)).await?.bytes().await?;
    store
        .inner
        .put(
            &snapshot_key(newest),
            PutPayload::from(stored[..stored.len() / 2].to_vec()),
        )
        .await?;
    let listed_before = everything(&store).await?;
    let state = restored_state(&store, 1_000_000).await?;
    assert_eq!(
        state.topics, before.topics,
        "nothing acknowledged is lost when the newest snapshot is damaged"
    );
    assert_eq!(state.next_producer_id, before.next_producer_id);
    let listed_after = everything(&store).await?;
    for (key, _) in &listed_before {
        assert!(
            listed_after.iter().any(|(k, _)| k == key),
            "{key} was deleted"
        );
    }
    Ok(())
}

/// Waits until some log object in the bucket reaches `index` (re-listed after every PUT of this
/// store).
async fn wait_until_in_bucket(store: &TestStore, index: u64) -> Result<(), String> {
    store
        .wait_for(&format!("index {index} in the bucket"), || async {
            let objects = log_objects(store).await.map_err(|e| e.to_string())?;
            Ok(objects.iter().any(|o| o.1 >= index))
        })
        .await
}

#[tokio::test]
async fn failing_puts_answer_not_persisted_and_the_entry_lands_later() -> TestResult {
    let store = TestStore::new();
    let dir = tempfile::tempdir()?;
    let timeout = Duration::from_millis(300);
    let node = MetadataNode::start(journal_options(dir.path(), &store, 10_000, timeout)).await?;
    let client = node.client();
    let init = Command::InitCluster {
        cluster_id: "c".into(),
    };
    assert_eq!(
        client.propose(init).await?,
        CommandResponse::ClusterId("c".into())
    );

    store.fail_puts.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let result = client.propose(create_topic("t", 1)).await;
    assert!(matches!(result, Err(Error::NotPersisted)), "{result:?}");
    assert!(started.elapsed() >= timeout);
    // Applied locally all the same (and still queued for the bucket), but not durable: anything
    // that acts irreversibly on the state gets no state that includes it.
    assert!(client.state().topic_by_name("t").is_some());
    let durable = client.durable_state().await;
    assert!(
        matches!(durable, Err(Error::NotPersisted)),
        "{:?}",
        durable.map(|_| ())
    );
    let index = applied(&client);

    // The store comes back: the journal gets there by itself, and later proposals succeed.
    store.fail_puts.store(false, Ordering::SeqCst);
    wait_until_in_bucket(&store, index).await?;
    assert!(client.durable_state().await?.topic_by_name("t").is_some());
    assert_eq!(
        client.propose(alloc()).await?,
        CommandResponse::ProducerIdStart(0)
    );
    let before = client.state();
    node.shutdown().await?;
    let state = restored_state(&store, 10_000).await?;
    assert_eq!(state, *before);
    assert!(state.topic_by_name("t").is_some());
    Ok(())
}

#[tokio::test]
async fn ambiguous_create_outcomes_are_confirmed_by_reading_the_key() -> TestResult {
    let store = TestStore::new();
    let dir = tempfile::tempdir()?;
    let node = MetadataNode::start(journal_options(
        dir.path(),
        &store,
        10_000,
        Duration::from_secs(10),
    ))
    .await?;
    let client = node.client();
    // Stored, then answered with an error: the retry meets our own object and goes on.
    store.store_then_fail.store(1, Ordering::SeqCst);
    assert_eq!(
        client.propose(create_topic("a", 1)).await?,
        CommandResponse::Ok
    );
    // Refused as existing although nothing was stored: the read finds nothing, the create is
    // retried and succeeds.
    store.conflict_without_storing.store(1, Ordering::SeqCst);
    assert_eq!(
        client.propose(create_topic("b", 2)).await?,
        CommandResponse::Ok
    );
    assert_eq!(store.store_then_fail.load(Ordering::SeqCst), 0);
    assert_eq!(store.conflict_without_storing.load(Ordering::SeqCst), 0);
    assert!(node.inner.fenced_reason().is_none());
    let before = client.state();
    node.shutdown().await?;
    let objects = log_objects(&store).await?;
    assert_exact_chain(&objects);
    assert_eq!(restored_state(&store, 10_000).await?, *before);
    Ok(())
}

#[tokio::test]
async fn a_hung_store_fails_proposals_and_bounds_shutdown() -> TestResult {
    let store = TestStore::new();
    let dir = tempfile::tempdir()?;
    let timeout = Duration::from_millis(300);
    let node = MetadataNode::start(journal_options(dir.path(), &store, 10_000, timeout)).await?;
    let client = node.client();
    assert_eq!(
        client.propose(create_topic("kept", 1)).await?,
        CommandResponse::Ok
    );
    let kept = client.state();

    store.hold_puts(true);
    let result = client.propose(create_topic("lost", 2)).await;
    assert!(matches!(result, Err(Error::NotPersisted)), "{result:?}");
    // Shutdown tries to flush for at most the persist timeout, then gives up.
    let started = Instant::now();
    node.shutdown().await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    store.hold_puts(false);

    // What was never acknowledged may be lost; everything acknowledged is there.
    assert_eq!(restored_state(&store, 10_000).await?, *kept);
    Ok(())
}

#[tokio::test]
async fn a_second_process_on_the_bucket_fences_the_first() -> TestResult {
    let bucket = Arc::new(InMemory::new());
    let (store_a, store_b) = (TestStore::sharing(&bucket), TestStore::sharing(&bucket));
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let node_a = MetadataNode::start(journal_options(
        dir_a.path(),
        &store_a,
        10_000,
        Duration::from_secs(5),
    ))
    .await?;
    let a = node_a.client();
    workload(&a).await?;
    let acknowledged_by_a = a.state();

    // A is paused in the middle of a create (its PUT held) with a proposal pending.
    store_a.hold_puts(true);
    let pending = tokio::spawn({
        let a = a.clone();
        async move { a.propose(create_topic("from-a", 10)).await }
    });
    store_a
        .wait_for("A's create held", || async {
            Ok(store_a.held.load(Ordering::SeqCst) > 0)
        })
        .await?;

    // B starts on an empty directory: it restores what A stored and takes the next key.
    let node_b = MetadataNode::start(journal_options(
        dir_b.path(),
        &store_b,
        10_000,
        Duration::from_secs(5),
    ))
    .await?;
    let b = node_b.client();
    assert_eq!(b.state().topics, acknowledged_by_a.topics);
    assert_eq!(
        b.propose(create_topic("from-b", 11)).await?,
        CommandResponse::Ok
    );

    // A resumes: its create meets B's object, so A is fenced and acknowledges nothing more.
    store_a.hold_puts(false);
    let answer = tokio::time::timeout(HANG_GUARD, pending).await??;
    assert!(matches!(answer, Err(Error::Fenced(_))), "{answer:?}");
    let reason = tokio::time::timeout(HANG_GUARD, a.fenced()).await?;
    assert!(reason.contains("already exists"), "{reason}");
    let later = a.propose(alloc()).await;
    assert!(matches!(later, Err(Error::Fenced(_))), "{later:?}");
    assert!(matches!(a.sync().await, Err(Error::Fenced(_))));

    // B is unaffected; the bucket holds one exact chain: A's objects, then B's.
    assert_eq!(
        b.propose(alloc()).await?,
        CommandResponse::ProducerIdStart(15)
    );
    let final_state = b.state();
    node_b.shutdown().await?;
    node_a.shutdown().await?;
    let objects = log_objects(&store_b).await?;
    assert_exact_chain(&objects);
    let restored = restored_state(&store_b, 10_000).await?;
    assert_eq!(restored, *final_state);
    assert!(restored.topic_by_name("from-a").is_none());
    assert!(restored.topic_by_name("from-b").is_some());
    Ok(())
}

#[tokio::test]
async fn a_start_that_loses_the_race_for_its_first_object_fails_before_acknowledging() -> TestResult
{
    let bucket = Arc::new(InMemory::new());
    let (store_a, store_b) = (TestStore::sharing(&bucket), TestStore::sharing(&bucket));
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let node_a = MetadataNode::start(journal_options(
        dir_a.path(),
        &store_a,
        10_000,
        Duration::from_secs(5),
    ))
    .await?;
    let a = node_a.client();
    workload(&a).await?;

    // B restores, but its first create is held; meanwhile A (still running) appends.
    store_b.hold_puts(true);
    let starting_b = tokio::spawn({
        let store_b = store_b.clone();
        let dir = dir_b.path().to_path_buf();
        async move {
            MetadataNode::start(journal_options(
                &dir,
                &store_b,
                10_000,
                Duration::from_secs(5),
            ))
            .await
        }
    });
    store_b
        .wait_for("B's first create held", || async {
            Ok(store_b.held.load(Ordering::SeqCst) > 0)
        })
        .await?;
    assert_eq!(
        a.propose(create_topic("from-a", 10)).await?,
        CommandResponse::Ok
    );
    store_b.hold_puts(false);
    match tokio::time::timeout(HANG_GUARD, starting_b).await?? {
        Err(Error::Fenced(reason)) => assert!(reason.contains("already exists"), "{reason}"),
        Err(other) => return Err(format!("B failed for another reason: {other}").into()),
        Ok(node) => {
            node.shutdown().await?;
            return Err("B started although A had taken its first key".into());
        }
    }
    // A goes on serving.
    assert_eq!(
        a.propose(alloc()).await?,
        CommandResponse::ProducerIdStart(15)
    );
    let final_state = a.state();
    node_a.shutdown().await?;
    assert_eq!(restored_state(&store_a, 10_000).await?, *final_state);
    Ok(())
}

#[tokio::test]
async fn restore_refuses_what_it_cannot_read_and_deletes_nothing() -> TestResult {
    let store = TestStore::new();
    let dir = tempfile::tempdir()?;
    let node = MetadataNode::start(journal_options(
        dir.path(),
        &store,
        10_000,
        Duration::from_secs(5),
    ))
    .await?;
    workload(&node.client()).await?;
    node.shutdown().await?;
    let objects = log_objects(&store).await?;
    let (middle, _, _) = objects[objects.len() / 2];
    let original = store.get(&log_key(middle)).await?.bytes().await?;
    let key_name = format!("{middle:020}.json");

    // A damaged log object in the middle of the chain (it used to be taken for a gap, and
    // everything after it deleted).
    store
        .inner
        .put(
            &log_key(middle),
            PutPayload::from(original[..original.len() - 7].to_vec()),
        )
        .await?;
    let before = everything(&store).await?;
    assert_start_refused(&store, &key_name).await?;
    assert_eq!(everything(&store).await?, before, "the bucket was changed");

    // A log object of a future format version.
    let future = String::from_utf8(original.to_vec())?
        .replace("\"format_version\":2", "\"format_version\":3");
    store
        .inner
        .put(&log_key(middle), PutPayload::from(future.into_bytes()))
        .await?;
    let before = everything(&store).await?;
    let message = assert_start_refused(&store, &key_name).await?;
    assert!(message.contains("version 3"), "{message}");
    assert_eq!(everything(&store).await?, before, "the bucket was changed");
    store
        .inner
        .put(&log_key(middle), PutPayload::from(original.clone()))
        .await?;
    let good = restored_state(&store, 10_000).await?;

    // An object off the chain (past a gap), and a name of the old format: refused, never
    // deleted, never taken for an empty bucket.
    let last = objects.last().map_or(0, |o| o.1);
    let ghost = log_key(last + 50);
    store
        .inner
        .put(&ghost, PutPayload::from(original.clone()))
        .await?;
    assert_start_refused(&store, &format!("{:020}.json", last + 50)).await?;
    store.inner.delete(&ghost).await?;
    let old_name = Path::from(format!("{PREFIX}/metadata/log/{:020}-{:020}.json", 0, 3));
    store
        .inner
        .put(&old_name, PutPayload::from_static(b"{}"))
        .await?;
    let before = everything(&store).await?;
    assert_start_refused(&store, "00000000000000000000-00000000000000000003.json").await?;
    assert_eq!(everything(&store).await?, before, "the bucket was changed");
    store.inner.delete(&old_name).await?;

    // Only old-format objects: not a fresh cluster either.
    let old_only = TestStore::new();
    old_only
        .inner
        .put(&old_name, PutPayload::from_static(b"{}"))
        .await?;
    assert_start_refused(&old_only, "00000000000000000000-00000000000000000003.json").await?;

    // Put back, the bucket restores as before.
    assert_eq!(restored_state(&store, 10_000).await?, good);
    Ok(())
}

#[tokio::test]
async fn restore_refuses_a_spliced_history() -> TestResult {
    let store = TestStore::new();
    let dir = tempfile::tempdir()?;
    let node = MetadataNode::start(journal_options(
        dir.path(),
        &store,
        10_000,
        Duration::from_secs(5),
    ))
    .await?;
    workload(&node.client()).await?;
    node.shutdown().await?;
    let objects = log_objects(&store).await?;
    let last = objects.last().map_or(0, |o| o.1);
    // An object at the next key claiming to continue another lineage (what a writer that was
    // not fenced on a store ignoring create-if-absent could leave).
    let entry = format!("{{\"term\":1,\"index\":{}}}", last + 1);
    let stranger = bucket_format::encode_log(
        Lineage(7),
        Some(Lineage(8)),
        last + 1,
        last + 1,
        std::iter::once(entry.as_bytes()),
        0,
    );
    store
        .inner
        .put(&log_key(last + 1), PutPayload::from(stranger))
        .await?;
    let message = assert_start_refused(&store, &format!("{:020}.json", last + 1)).await?;
    assert!(message.contains("spliced"), "{message}");
    Ok(())
}

#[tokio::test]
async fn an_unreadable_journal_fails_the_start_instead_of_starting_fresh() -> TestResult {
    let store = TestStore::new();
    store
        .put(
            &snapshot_key(7),
            PutPayload::from_static(b"{\"format_version\":2}"),
        )
        .await?;
    let dir = tempfile::tempdir()?;
    let opts = journal_options(dir.path(), &store, 10_000, Duration::from_secs(1));
    match MetadataNode::start(opts).await {
        Err(Error::Restore(message)) => assert!(message.contains("snapshot"), "{message}"),
        Err(other) => return Err(format!("unexpected error {other}").into()),
        Ok(_) => return Err("an unreadable journal must not start a fresh cluster".into()),
    }
    Ok(())
}

#[tokio::test]
async fn a_second_node_on_a_locked_directory_is_refused_and_changes_nothing() -> TestResult {
    let store = TestStore::new();
    let dir = tempfile::tempdir()?;
    let opts = journal_options(dir.path(), &store, 10_000, Duration::from_secs(5));
    let node = MetadataNode::start(opts.clone()).await?;
    workload(&node.client()).await?;
    let files = |dir: &FsPath| -> std::io::Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        Ok(names)
    };
    let files_before = files(dir.path())?;
    let bucket_before = everything(&store).await?;
    match MetadataNode::start(opts.clone()).await {
        Err(Error::Io(error)) => assert!(error.to_string().contains("in use"), "{error}"),
        Err(other) => return Err(format!("unexpected error {other}").into()),
        Ok(_) => return Err("two nodes on one directory".into()),
    }
    assert_eq!(files(dir.path())?, files_before);
    assert_eq!(everything(&store).await?, bucket_before);
    // The first node is untouched and goes on.
    assert_eq!(
        node.client().propose(alloc()).await?,
        CommandResponse::ProducerIdStart(15)
    );
    node.shutdown().await?;
    // Released at shutdown.
    let node = MetadataNode::start(opts).await?;
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn group_commit_puts_fewer_objects_than_entries() -> TestResult {
    let store = TestStore::new();
    let dir = tempfile::tempdir()?;
    let node = MetadataNode::start(journal_options(
        dir.path(),
        &store,
        10_000,
        Duration::from_secs(5),
    ))
    .await?;
    let client = node.client();
    let puts_before = store.puts.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move { client.propose(alloc()).await }));
    }
    for task in tasks {
        assert!(matches!(
            task.await?,
            Ok(CommandResponse::ProducerIdStart(_))
        ));
    }
    let puts = store.puts.load(Ordering::SeqCst) - puts_before;
    assert!(puts < 200, "{puts} PUTs for 200 concurrent proposals");
    let before = client.state();
    node.shutdown().await?;
    assert_eq!(restored_state(&store, 10_000).await?, *before);
    Ok(())
}

#[tokio::test]
async fn raft_never_purges_its_log_past_what_the_bucket_holds() -> TestResult {
    let store = TestStore::new();
    let dir = tempfile::tempdir()?;
    let opts = MetadataOptions {
        snapshot_every: 5,
        ..journal_options(dir.path(), &store, 10_000, Duration::from_millis(200))
    };
    let node = MetadataNode::start(opts).await?;
    let client = node.client();
    workload(&client).await?;
    let stored = applied(&client);

    // The store fails: entries are applied and local snapshots are taken, but the log keeps
    // everything the bucket does not hold yet.
    store.fail_puts.store(true, Ordering::SeqCst);
    for _ in 0..20 {
        assert!(matches!(
            client.propose(alloc()).await,
            Err(Error::NotPersisted)
        ));
    }
    node.inner
        .wait_log_progress(HANG_GUARD, "a local snapshot", |snapshot, _| {
            snapshot.is_some_and(|s| s > stored)
        })
        .await?;
    let (_, purged) = node.inner.log_progress();
    assert!(
        purged.is_none_or(|p| p <= stored),
        "purged to {purged:?}, bucket holds {stored}"
    );

    // Once the bucket has them, the log is purged up to the snapshot.
    store.fail_puts.store(false, Ordering::SeqCst);
    client.sync().await.ok();
    wait_until_in_bucket(&store, applied(&client)).await?;
    node.inner
        .wait_log_progress(
            HANG_GUARD,
            "a purge past what the bucket held",
            |_, purged| purged.is_some_and(|p| p > stored),
        )
        .await?;
    node.shutdown().await?;
    Ok(())
}
