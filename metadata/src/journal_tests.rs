//! End-to-end tests of the bucket journal: a metadata node mirrored to an in-memory object store
//! (wrapped to fail or block PUTs on demand), restored on an empty directory from the bucket alone.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

use crate::node_tests::{options, workload, TestResult, NOW};
use crate::{
    Command, CommandResponse, Error, JournalOptions, MetadataClient, MetadataNode, MetadataOptions,
    MetadataState,
};

const PREFIX: &str = "cluster-x";

/// An in-memory store whose PUTs can be made to fail or hang.
#[derive(Debug, Default)]
struct FaultyStore {
    inner: InMemory,
    fail_puts: AtomicBool,
    block_puts: AtomicBool,
    puts: AtomicU64,
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore")
    }
}

fn injected() -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: "injected PUT failure".into(),
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        // A blocked PUT hangs (bounded, so a broken test cannot hang forever).
        for _ in 0..6000 {
            if !self.block_puts.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if self.fail_puts.load(Ordering::SeqCst) {
            return Err(injected());
        }
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put_opts(location, payload, opts).await
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
    store: &Arc<FaultyStore>,
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

/// Object names under `{PREFIX}/metadata/{sub}`, sorted.
async fn names(store: &FaultyStore, sub: &str) -> Result<Vec<String>, object_store::Error> {
    let dir = Path::from(format!("{PREFIX}/metadata/{sub}"));
    let metas: Vec<ObjectMeta> = store.list(Some(&dir)).try_collect().await?;
    let mut names: Vec<String> = metas
        .iter()
        .filter_map(|meta| meta.location.filename().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// `(first, last)` of every log object, sorted.
async fn log_ranges(store: &FaultyStore) -> Result<Vec<(u64, u64)>, object_store::Error> {
    Ok(names(store, "log")
        .await?
        .iter()
        .filter_map(|name| crate::journal::parse_log_name(name))
        .collect())
}

async fn snapshot_indexes(store: &FaultyStore) -> Result<Vec<u64>, object_store::Error> {
    Ok(names(store, "snapshot")
        .await?
        .iter()
        .filter_map(|name| name.strip_suffix(".json")?.parse().ok())
        .collect())
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

async fn restored_state(
    store: &Arc<FaultyStore>,
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

#[tokio::test]
async fn a_wiped_node_restores_from_the_bucket_and_continues() -> TestResult {
    let store = Arc::new(FaultyStore::default());
    let dir = tempfile::tempdir()?;
    let opts = journal_options(dir.path(), &store, 10_000, Duration::from_secs(5));
    let node = MetadataNode::start(opts.clone()).await?;
    let client = node.client();
    workload(&client).await?;
    let before = client.state();
    let index = applied(&client);
    node.shutdown().await?;

    // Every entry is in the bucket as a chain of log objects from the first applied index.
    let ranges = log_ranges(&store).await?;
    assert_eq!(ranges.first().map(|r| r.0), Some(0), "{ranges:?}");
    for pair in ranges.windows(2) {
        assert_eq!(pair[1].0, pair[0].1 + 1, "contiguous chain: {ranges:?}");
    }
    assert_eq!(ranges.last().map(|r| r.1), Some(index));

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
    // The restore uploaded a fresh base snapshot at the restored index.
    assert_eq!(snapshot_indexes(&store).await?, vec![index]);

    // New proposals continue after the restored index.
    let alloc = Command::AllocateProducerIds { count: 1 };
    assert_eq!(
        client.propose(alloc).await?,
        CommandResponse::ProducerIdStart(15)
    );
    assert_eq!(
        client.propose(create_topic("later", 77)).await?,
        CommandResponse::Ok
    );
    let after = client.state();
    let index_after = applied(&client);
    assert!(index_after > index + 2);
    node.shutdown().await?;
    let ranges = log_ranges(&store).await?;
    assert_eq!(
        ranges.first().map(|r| r.0),
        Some(index + 1),
        "the chain continues right after the restored index; covered logs are gone: {ranges:?}"
    );
    for pair in ranges.windows(2) {
        assert_eq!(pair[1].0, pair[0].1 + 1, "contiguous chain: {ranges:?}");
    }
    assert_eq!(ranges.last().map(|r| r.1), Some(index_after));

    // A brand-new directory gets the same state, later entries included.
    let state = restored_state(&store, 10_000).await?;
    assert_eq!(state, *after);
    assert!(state.topic_by_name("later").is_some());
    assert_eq!(state.next_producer_id, 16);
    Ok(())
}

/// Polls (bounded) until the bucket holds a snapshot and the log objects it covers are gone.
async fn wait_for_bucket_snapshot(store: &FaultyStore, at_least: u64) -> Result<u64, String> {
    for _ in 0..400 {
        let snapshots = snapshot_indexes(store).await.map_err(|e| e.to_string())?;
        let ranges = log_ranges(store).await.map_err(|e| e.to_string())?;
        if let Some(&newest) = snapshots.last() {
            if newest >= at_least && snapshots.len() <= 2 && ranges.iter().all(|r| r.1 > newest) {
                return Ok(newest);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!(
        "no cleaned-up snapshot at {at_least}+: snapshots {:?}, logs {:?}",
        snapshot_indexes(store).await,
        log_ranges(store).await
    ))
}

#[tokio::test]
async fn restore_goes_through_a_bucket_snapshot_and_later_logs_and_cleans_up() -> TestResult {
    let store = Arc::new(FaultyStore::default());
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
    for _ in 0..20 {
        let alloc = Command::AllocateProducerIds { count: 1 };
        client.propose(alloc).await?;
    }
    let index = applied(&client);
    let snapshot = wait_for_bucket_snapshot(&store, index.saturating_sub(5)).await?;
    // Make sure some log objects lie beyond the snapshot (fewer than 5: no new snapshot).
    for _ in 0..2 {
        let alloc = Command::AllocateProducerIds { count: 1 };
        client.propose(alloc).await?;
    }
    let before = client.state();
    node.shutdown().await?;
    let snapshots = snapshot_indexes(&store).await?;
    assert!(
        snapshots.len() <= 2,
        "only the newest two are kept: {snapshots:?}"
    );
    let ranges = log_ranges(&store).await?;
    assert!(!ranges.is_empty() && ranges.iter().all(|r| r.0 > snapshot));
    assert!(
        ranges.len() < 10,
        "log objects covered by a snapshot are deleted: {ranges:?}"
    );

    // Only the snapshot + later logs are left, so this restore must go through both.
    assert_eq!(restored_state(&store, 5).await?, *before);
    assert_eq!(before.next_producer_id, 15 + 22);
    Ok(())
}

/// Polls (bounded) until some log object in the bucket reaches `index`.
async fn wait_until_in_bucket(store: &FaultyStore, index: u64) -> Result<(), String> {
    for _ in 0..400 {
        let ranges = log_ranges(store).await.map_err(|e| e.to_string())?;
        if ranges.iter().any(|r| r.1 >= index) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("index {index} never reached the bucket"))
}

#[tokio::test]
async fn failing_puts_answer_not_persisted_and_the_entry_lands_later() -> TestResult {
    let store = Arc::new(FaultyStore::default());
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
    // Applied locally all the same (and still queued for the bucket).
    assert!(client.state().topic_by_name("t").is_some());
    let index = applied(&client);

    // The store comes back: the journal gets there by itself, and later proposals succeed.
    store.fail_puts.store(false, Ordering::SeqCst);
    wait_until_in_bucket(&store, index).await?;
    let alloc = Command::AllocateProducerIds { count: 1 };
    assert_eq!(
        client.propose(alloc).await?,
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
async fn a_hung_store_fails_proposals_and_bounds_shutdown() -> TestResult {
    let store = Arc::new(FaultyStore::default());
    let dir = tempfile::tempdir()?;
    let timeout = Duration::from_millis(300);
    let node = MetadataNode::start(journal_options(dir.path(), &store, 10_000, timeout)).await?;
    let client = node.client();
    assert_eq!(
        client.propose(create_topic("kept", 1)).await?,
        CommandResponse::Ok
    );
    let kept = client.state();

    store.block_puts.store(true, Ordering::SeqCst);
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
    store.block_puts.store(false, Ordering::SeqCst);

    // What was never acknowledged may be lost; everything acknowledged is there.
    assert_eq!(restored_state(&store, 10_000).await?, *kept);
    Ok(())
}

#[tokio::test]
async fn gaps_and_garbage_in_the_bucket_are_ignored_and_removed() -> TestResult {
    let store = Arc::new(FaultyStore::default());
    let dir = tempfile::tempdir()?;
    let opts = journal_options(dir.path(), &store, 10_000, Duration::from_secs(5));
    let node = MetadataNode::start(opts.clone()).await?;
    let client = node.client();
    workload(&client).await?;
    let before = client.state();
    let n = applied(&client);
    node.shutdown().await?;

    let log = |first: u64, last: u64| {
        Path::from(format!("{PREFIX}/metadata/log/{first:020}-{last:020}.json"))
    };
    let put = |path: Path, bytes: Vec<u8>| {
        let store = store.clone();
        async move { store.put(&path, PutPayload::from(bytes)).await }
    };
    // A foreign name, garbage where the chain would continue, a well-formed object past a gap
    // (an upload never acknowledged), and an unreadable newest snapshot.
    put(
        Path::from(format!("{PREFIX}/metadata/log/notes.txt")),
        b"hi".to_vec(),
    )
    .await?;
    put(log(n + 1, n + 1), b"{not json".to_vec()).await?;
    let ghost = serde_json::json!({
        "format_version": 1, "first": n + 5, "last": n + 6,
        "entries": [{"index": n + 5, "command": create_topic("ghost", 9)}],
    });
    put(log(n + 5, n + 6), serde_json::to_vec(&ghost)?).await?;
    put(
        Path::from(format!("{PREFIX}/metadata/snapshot/{:020}.json", n + 100)),
        b"garbage".to_vec(),
    )
    .await?;

    let node = MetadataNode::start(opts.clone()).await?;
    let client = node.client();
    assert_eq!(*client.state(), *before);
    // The objects that do not continue the chain were removed before anything new was written
    // (the new node's first entry, its leader blank at n + 1, took the garbage object's key).
    let ranges = log_ranges(&store).await?;
    assert!(!ranges.contains(&(n + 5, n + 6)), "{ranges:?}");
    let continuation = store.get(&log(n + 1, n + 1)).await?.bytes().await?;
    let doc: serde_json::Value = serde_json::from_slice(&continuation)?;
    assert_eq!(doc["first"], serde_json::json!(n + 1));
    assert!(names(&store, "log")
        .await?
        .contains(&"notes.txt".to_owned()));
    for i in 0..8 {
        let alloc = Command::AllocateProducerIds { count: 1 };
        assert_eq!(
            client.propose(alloc).await?,
            CommandResponse::ProducerIdStart(15 + i)
        );
    }
    let after = client.state();
    node.shutdown().await?;
    let state = restored_state(&store, 10_000).await?;
    assert_eq!(state, *after);
    assert!(state.topic_by_name("ghost").is_none());
    Ok(())
}

#[tokio::test]
async fn an_unreadable_journal_fails_the_start_instead_of_starting_fresh() -> TestResult {
    let store = Arc::new(FaultyStore::default());
    store
        .put(
            &Path::from(format!("{PREFIX}/metadata/snapshot/{:020}.json", 7)),
            PutPayload::from_static(b"{\"format_version\":1}"),
        )
        .await?;
    let dir = tempfile::tempdir()?;
    let opts = journal_options(dir.path(), &store, 10_000, Duration::from_secs(1));
    match MetadataNode::start(opts).await {
        Err(Error::Storage(message)) => assert!(message.contains("snapshot"), "{message}"),
        Err(other) => return Err(format!("unexpected error {other}").into()),
        Ok(_) => return Err("an unreadable journal must not start a fresh cluster".into()),
    }
    Ok(())
}

#[tokio::test]
async fn group_commit_puts_fewer_objects_than_entries() -> TestResult {
    let store = Arc::new(FaultyStore::default());
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
        tasks.push(tokio::spawn(async move {
            client
                .propose(Command::AllocateProducerIds { count: 1 })
                .await
        }));
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
