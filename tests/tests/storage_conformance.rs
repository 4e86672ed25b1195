//! Object-store conformance: one set of tests, run against every backend Sluice supports — the
//! in-memory store, the local filesystem, and a real S3 server (s3s-fs), directly and through the
//! fault proxy in pass-through mode (which proves the proxy forwards bodies and signatures
//! intact). It covers what Sluice relies on from an object store, and nothing more:
//!
//! - put / get / head, `NotFound` for missing objects;
//! - ranged gets: bounded, offset (`n..`), suffix (last `n` bytes), several ranges at once, a range
//!   running past the end (clamped, as object_store documents), a range starting past the end
//!   (an error);
//! - list under a prefix (object_store prefixes are whole path segments) and list with delimiter;
//! - delete, and delete of a missing object (`Ok` on S3 and in memory, `NotFound` on the local
//!   filesystem — callers treat `NotFound` as done);
//! - create-if-absent put (`PutMode::Create`): all three backends here refuse the second put with
//!   `AlreadyExists`; some S3-compatible servers ignore `If-None-Match`, so Sluice must not depend on
//!   it for correctness (it fences writers with metadata epochs) — see `honours_create`;
//! - create-if-absent decided when the write completes, as on AWS S3 (`creates_race`): a create
//!   whose body is held while another create of the key completes must fail, and the object is the
//!   other's. The test S3 server gets this from the proxy in front of s3s-fs (`S3Server`);
//!   s3s-fs alone decides on arrival, which `bare_s3s_fs_decides_creates_on_arrival` pins down;
//! - multipart upload above the 5 MiB S3 minimum part size, and abort;
//! - a `LogStore` round trip: append, let segments be written to the store, reopen with the local
//!   WAL removed, read every batch back from segment objects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt as _, TryStreamExt as _};
use kafka_protocol::records::Compression;
use metadata::{Command, CommandResponse, MetadataNode, MetadataOptions, TopicPartition};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload,
};
use sluice_tests::fault_proxy::{FaultProxy, RequestMatch};
use sluice_tests::s3::S3Server;
use storage::objects::S3Options;
use storage::{LogStore, StorageOptions, TimestampType};

/// A backend under test plus whatever keeps it alive (temp dir, server process, proxy).
struct Backend {
    store: Arc<dyn ObjectStore>,
    /// Whether the backend refuses a second `PutMode::Create` of one key.
    honours_create: bool,
    /// Whether deleting a missing object is `Ok` (S3 semantics) rather than `NotFound`.
    delete_missing_is_ok: bool,
    _dir: Option<tempfile::TempDir>,
    _server: Option<S3Server>,
    _proxy: Option<FaultProxy>,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    LocalFileSystem,
    S3,
    S3ThroughProxy,
}

impl Backend {
    fn start(kind: Kind) -> Result<Backend> {
        let dir = tempfile::tempdir().context("tempdir")?;
        let backend = match kind {
            Kind::Memory => Backend {
                store: storage::objects::object_store_from_url(
                    "memory://",
                    dir.path(),
                    &S3Options::default(),
                )?,
                honours_create: true,
                delete_missing_is_ok: true,
                _dir: Some(dir),
                _server: None,
                _proxy: None,
            },
            Kind::LocalFileSystem => Backend {
                store: storage::objects::object_store_from_url(
                    &format!("file://{}", dir.path().join("objects").display()),
                    dir.path(),
                    &S3Options::default(),
                )?,
                honours_create: true,
                delete_missing_is_ok: false,
                _dir: Some(dir),
                _server: None,
                _proxy: None,
            },
            Kind::S3 => {
                let server = S3Server::start()?;
                // A prefix, as in production (`s3://bucket/prefix`).
                let store = server.object_store(STORE_PREFIX)?;
                Backend {
                    store,
                    honours_create: true,
                    delete_missing_is_ok: true,
                    _dir: Some(dir),
                    _server: Some(server),
                    _proxy: None,
                }
            }
            Kind::S3ThroughProxy => {
                let server = S3Server::start()?;
                let proxy = FaultProxy::start(server.addr())?;
                let options = server.s3_options_via(&proxy.endpoint());
                let store = server.object_store_with(STORE_PREFIX, &options)?;
                Backend {
                    store,
                    honours_create: true,
                    delete_missing_is_ok: true,
                    _dir: Some(dir),
                    _server: Some(server),
                    _proxy: Some(proxy),
                }
            }
        };
        Ok(backend)
    }
}

/// Deterministic, position-dependent bytes (a shifted range would not compare equal).
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(u64::from(seed)) as u8)
        .collect::<Vec<u8>>()
        .into()
}

async fn put_get_head(kind: Kind) -> Result<()> {
    let backend = Backend::start(kind)?;
    let store = &backend.store;
    let key = Path::from("topics/t1/0/00000000000000000000-a.seg");
    let data = pattern(100_000, 1);
    store.put(&key, data.clone().into()).await?;

    let got = store.get(&key).await?;
    ensure!(
        got.meta.size == data.len() as u64,
        "meta.size {}",
        got.meta.size
    );
    ensure!(got.bytes().await? == data, "get returned other bytes");
    let head = store.head(&key).await?;
    ensure!(head.size == data.len() as u64, "head size {}", head.size);
    ensure!(head.location == key, "head location {}", head.location);

    // Overwrite (the default put mode) replaces the content.
    let newer = pattern(10, 2);
    store.put(&key, newer.clone().into()).await?;
    ensure!(store.get(&key).await?.bytes().await? == newer);

    // Empty objects are objects.
    let empty = Path::from("empty");
    store.put(&empty, PutPayload::default()).await?;
    ensure!(store.head(&empty).await?.size == 0);
    ensure!(store.get(&empty).await?.bytes().await?.is_empty());

    let missing = Path::from("no/such/object");
    expect_not_found(store.get(&missing).await.map(|_| ()), "get")?;
    expect_not_found(store.head(&missing).await.map(|_| ()), "head")?;
    Ok(())
}

async fn ranged_get(kind: Kind) -> Result<()> {
    let backend = Backend::start(kind)?;
    let store = &backend.store;
    let key = Path::from("ranges/obj");
    let data = pattern(64 * 1024 + 7, 3);
    let len = data.len() as u64;
    store.put(&key, data.clone().into()).await?;

    ensure!(store.get_range(&key, 0..1).await? == data.slice(0..1));
    ensure!(store.get_range(&key, 1000..5000).await? == data.slice(1000..5000));
    ensure!(store.get_range(&key, len - 1..len).await? == data.slice(data.len() - 1..));

    let offset = get_with_range(store, &key, GetRange::Offset(60_000)).await?;
    ensure!(
        offset == data.slice(60_000..),
        "offset range: {} bytes",
        offset.len()
    );
    let suffix = get_with_range(store, &key, GetRange::Suffix(4096)).await?;
    ensure!(
        suffix == data.slice(data.len() - 4096..),
        "suffix range: {} bytes",
        suffix.len()
    );

    let ranges = store
        .get_ranges(&key, &[0..10, 30_000..30_100, len - 5..len])
        .await?;
    ensure!(ranges.len() == 3);
    ensure!(ranges[0] == data.slice(0..10));
    ensure!(ranges[1] == data.slice(30_000..30_100));
    ensure!(ranges[2] == data.slice(data.len() - 5..));

    // object_store documents: a range ending past the end returns the rest of the object...
    let clamped = get_with_range(store, &key, GetRange::Bounded(len - 10..len + 100)).await?;
    ensure!(
        clamped == data.slice(data.len() - 10..),
        "clamped: {} bytes",
        clamped.len()
    );
    // ...and one starting past the end is an error.
    ensure!(
        get_with_range(store, &key, GetRange::Bounded(len + 10..len + 20))
            .await
            .is_err(),
        "a range past the end must fail"
    );
    // The result's own range tells where the bytes are (the segment reader relies on it).
    let result = store
        .get_opts(
            &key,
            GetOptions {
                range: Some(GetRange::Suffix(100)),
                ..GetOptions::default()
            },
        )
        .await?;
    ensure!(result.range == (len - 100..len), "range {:?}", result.range);
    ensure!(result.meta.size == len);
    Ok(())
}

async fn list_with_prefix(kind: Kind) -> Result<()> {
    let backend = Backend::start(kind)?;
    let store = &backend.store;
    for key in ["a/1", "a/2", "a/b/3", "ab/4", "c/5"] {
        store
            .put(&Path::from(key), Bytes::from(key.to_string()).into())
            .await?;
    }
    let listed = list_keys(store, Some("a")).await?;
    ensure!(
        listed == ["a/1", "a/2", "a/b/3"],
        "list a: {listed:?} (a prefix is whole path segments: not ab/4)"
    );
    let all = list_keys(store, None).await?;
    ensure!(
        all == ["a/1", "a/2", "a/b/3", "ab/4", "c/5"],
        "list all: {all:?}"
    );
    let none = list_keys(store, Some("zzz")).await?;
    ensure!(none.is_empty(), "list zzz: {none:?}");

    let result = store.list_with_delimiter(Some(&Path::from("a"))).await?;
    // Order is not part of the contract (the local filesystem lists in directory order).
    let mut objects: Vec<(String, u64)> = result
        .objects
        .iter()
        .map(|o| (o.location.to_string(), o.size))
        .collect();
    objects.sort();
    let mut prefixes: Vec<String> = result
        .common_prefixes
        .iter()
        .map(ToString::to_string)
        .collect();
    prefixes.sort();
    ensure!(
        objects == [("a/1".to_string(), 3), ("a/2".to_string(), 3)],
        "delimited objects {objects:?}"
    );
    ensure!(prefixes == ["a/b"], "common prefixes {prefixes:?}");
    Ok(())
}

async fn delete(kind: Kind) -> Result<()> {
    let backend = Backend::start(kind)?;
    let store = &backend.store;
    let key = Path::from("gc/victim");
    store.put(&key, Bytes::from_static(b"x").into()).await?;
    store.delete(&key).await?;
    expect_not_found(store.head(&key).await.map(|_| ()), "head after delete")?;
    ensure!(list_keys(store, Some("gc")).await?.is_empty());

    // GC may delete an object twice (a retried delete, two GC passes).
    match store.delete(&key).await {
        Ok(()) if backend.delete_missing_is_ok => {}
        Err(object_store::Error::NotFound { .. }) if !backend.delete_missing_is_ok => {}
        other => bail!("delete of a missing object on {kind:?}: {other:?}"),
    }

    // Bulk delete (what GC uses for many objects).
    let keys: Vec<Path> = (0..5).map(|i| Path::from(format!("gc/many/{i}"))).collect();
    for key in &keys {
        store.put(key, Bytes::from_static(b"y").into()).await?;
    }
    let stream = futures::stream::iter(keys.clone().into_iter().map(Ok)).boxed();
    let deleted: Vec<Path> = store.delete_stream(stream).try_collect().await?;
    ensure!(deleted.len() == keys.len(), "deleted {deleted:?}");
    ensure!(list_keys(store, Some("gc")).await?.is_empty());
    Ok(())
}

async fn put_create_if_absent(kind: Kind) -> Result<()> {
    let backend = Backend::start(kind)?;
    let store = &backend.store;
    let key = Path::from("cluster.json");
    let create = PutOptions::from(PutMode::Create);
    store
        .put_opts(&key, Bytes::from_static(b"first").into(), create.clone())
        .await?;
    let second = store
        .put_opts(&key, Bytes::from_static(b"second").into(), create)
        .await;
    let content = store.get(&key).await?.bytes().await?;
    if backend.honours_create {
        match second {
            Err(object_store::Error::AlreadyExists { .. }) => {}
            other => bail!("second create-if-absent put on {kind:?}: {other:?}"),
        }
        ensure!(&content[..] == b"first", "content {content:?}");
    } else {
        // A server that ignores If-None-Match overwrites: allowed, and Sluice does not rely on it.
        ensure!(&content[..] == b"first" || &content[..] == b"second");
    }
    Ok(())
}

/// The prefix every backend's store is rooted at, as the server sees keys.
const STORE_PREFIX: &str = "conformance/run";

/// Two creates of one key overlap: A's body is held until B's create has completed. Returns A's
/// result and the stored bytes.
async fn race_two_creates(
    store: &Arc<dyn ObjectStore>,
    proxy: &FaultProxy,
) -> Result<(object_store::Result<object_store::PutResult>, Bytes)> {
    let key = Path::from("race/0001.json");
    let held = proxy.hold_body(RequestMatch::put(&format!("{STORE_PREFIX}/race/")));
    let create = PutOptions::from(PutMode::Create);
    let writer_a = tokio::spawn({
        let (store, key, create) = (store.clone(), key.clone(), create.clone());
        async move {
            store
                .put_opts(&key, Bytes::from_static(b"from A").into(), create)
                .await
        }
    });
    tokio::time::timeout(Duration::from_secs(10), held.arrived())
        .await
        .context("A's create never reached the proxy")?;
    store
        .put_opts(&key, Bytes::from_static(b"from B").into(), create)
        .await
        .context("B's create, the only one complete")?;
    ensure!(
        !writer_a.is_finished(),
        "A's create was answered while held"
    );
    held.release();
    let result_a = tokio::time::timeout(Duration::from_secs(10), writer_a).await??;
    let stored = store.get(&key).await?.bytes().await?;
    Ok((result_a, stored))
}

async fn creates_race(kind: Kind) -> Result<()> {
    let backend = Backend::start(kind)?;
    // Without a proxy of its own, a backend is raced through the S3 server's front proxy. (The
    // in-process stores cannot be held mid-body; they decide creates under a lock.)
    let proxy = match (&backend._proxy, &backend._server) {
        (Some(proxy), _) => proxy,
        (None, Some(server)) => server.faults(),
        (None, None) => bail!("{kind:?} has no HTTP traffic to hold"),
    };
    let (result_a, stored) = race_two_creates(&backend.store, proxy).await?;
    match result_a {
        Err(object_store::Error::AlreadyExists { .. }) => {}
        other => bail!("{kind:?}: the held create, completing second, got {other:?}"),
    }
    ensure!(&stored[..] == b"from B", "{kind:?}: stored {stored:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_creates_are_decided_at_completion() -> Result<()> {
    creates_race(Kind::S3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_through_proxy_creates_are_decided_at_completion() -> Result<()> {
    creates_race(Kind::S3ThroughProxy).await
}

/// Why the front proxy exists: s3s-fs 0.14.1 alone (here behind a proxy that only streams, so A
/// can be held) checks `If-None-Match` on arrival, so the held create succeeds and overwrites.
/// If this starts failing, s3s-fs decides at completion itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_s3s_fs_decides_creates_on_arrival() -> Result<()> {
    let server = S3Server::start()?;
    let streaming = FaultProxy::start_streaming(server.bare_addr())?;
    let options = server.s3_options_via(&streaming.endpoint());
    let store = server.object_store_with(STORE_PREFIX, &options)?;
    let (result_a, stored) = race_two_creates(&store, &streaming).await?;
    ensure!(
        result_a.is_ok(),
        "s3s-fs refused the held create: {result_a:?}"
    );
    ensure!(&stored[..] == b"from A", "stored {stored:?}");
    Ok(())
}

async fn multipart_upload(kind: Kind) -> Result<()> {
    let backend = Backend::start(kind)?;
    let store = &backend.store;
    let key = Path::from("segments/big.seg");
    const PART: usize = 5 * 1024 * 1024;
    let data = pattern(2 * PART + 1024 * 1024 + 123, 4);
    let mut upload = store.put_multipart(&key).await?;
    for chunk in [
        data.slice(0..PART),
        data.slice(PART..2 * PART),
        data.slice(2 * PART..),
    ] {
        upload.put_part(chunk.into()).await?;
    }
    upload.complete().await?;
    ensure!(store.head(&key).await?.size == data.len() as u64);
    ensure!(
        store.get(&key).await?.bytes().await? == data,
        "multipart content differs"
    );
    // Ranges across part boundaries.
    let across = (PART - 100) as u64..(PART + 100) as u64;
    ensure!(store.get_range(&key, across).await? == data.slice(PART - 100..PART + 100));

    // An aborted upload leaves no object behind.
    let aborted = Path::from("segments/aborted.seg");
    let mut upload = store.put_multipart(&aborted).await?;
    upload.put_part(data.slice(0..PART).into()).await?;
    upload.abort().await?;
    expect_not_found(store.head(&aborted).await.map(|_| ()), "aborted upload")?;
    Ok(())
}

async fn log_store_round_trip(kind: Kind) -> Result<()> {
    let backend = Backend::start(kind)?;
    let dir = tempfile::tempdir()?;
    let meta_options = MetadataOptions {
        dir: dir.path().join("meta"),
        node_id: 1,
        snapshot_every: 10_000,
        fsync: false,
        journal: None,
    };
    let mut options = StorageOptions::new(dir.path().join("data"), 1, "conformance");
    options.wal.fsync = false;
    // Small segments so a few dozen batches make several segment objects.
    options.segment_bytes = 16 * 1024;
    options.segment_max_age = Duration::from_millis(100);
    options.tail_cache_bytes = 4096;
    options.housekeeping_interval = Duration::from_millis(100);

    let node = MetadataNode::start(meta_options.clone()).await?;
    let meta = node.client();
    let topic_id = uuid::Uuid::new_v4();
    let response = meta
        .propose(Command::CreateTopic {
            name: "conformance".into(),
            topic_id,
            partitions: 1,
            configs: BTreeMap::new(),
            owner: 1,
            now_ms: 0,
        })
        .await?;
    ensure!(
        response == CommandResponse::Ok,
        "create topic: {response:?}"
    );
    let tp = TopicPartition {
        topic_id,
        partition: 0,
    };

    let store = LogStore::open(options.clone(), backend.store.clone(), meta.clone()).await?;
    let mut sent = Vec::new();
    for i in 0..40u32 {
        let value = pattern(1000 + (i as usize) * 37, i as u8);
        let batch = sluice_tests::wire::encode_batch(
            &[&value, &value[..10]],
            1_700_000_000_000,
            Compression::None,
        )?;
        let result = store
            .append(tp, BytesMut::from(&batch[..]), TimestampType::CreateTime)
            .await?;
        ensure!(
            result.base_offset == i64::from(i) * 2,
            "base offset {}",
            result.base_offset
        );
        sent.push(batch);
    }
    let high_watermark = store.offsets(tp)?.high_watermark;
    ensure!(high_watermark == 80, "high watermark {high_watermark}");

    // Everything reaches segment objects in the store (by size and then by age).
    sluice_tests::wait_for(
        "all records in segment objects",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let state = meta.state();
            let partition = state.partition(tp)?;
            (partition.segmented_end() == high_watermark).then_some(partition.segments.len())
        },
    )
    .await
    .and_then(|segments| {
        ensure!(segments >= 2, "expected several segments, got {segments}");
        Ok(())
    })?;
    let objects = list_keys(&backend.store, None).await?;
    ensure!(
        objects.iter().filter(|key| key.ends_with(".seg")).count() >= 2,
        "segment objects in the store: {objects:?}"
    );

    store.shutdown().await?;
    node.shutdown().await?;
    // Without the local WAL, every byte must come from the object store.
    std::fs::remove_dir_all(&options.wal.dir).context("removing the WAL")?;

    let node = MetadataNode::start(meta_options).await?;
    let store = LogStore::open(options, backend.store.clone(), node.client()).await?;
    ensure!(store.offsets(tp)?.high_watermark == high_watermark);
    let mut offset = 0;
    let mut read_batches = Vec::new();
    // Bounded: at least one batch per read.
    for _ in 0..sent.len() {
        if offset >= high_watermark {
            break;
        }
        let result = store.read(tp, offset, 8 * 1024).await?;
        ensure!(!result.batches.is_empty(), "empty read at {offset}");
        for batch in result.batches {
            let base = i64::from_be_bytes(batch[0..8].try_into()?);
            ensure!(base == offset, "batch at {base}, expected {offset}");
            offset += 2;
            read_batches.push(batch);
        }
    }
    ensure!(
        read_batches.len() == sent.len(),
        "read {} batches",
        read_batches.len()
    );
    for (i, (read, sent)) in read_batches.iter().zip(&sent).enumerate() {
        // Stored as sent, except baseOffset (bytes 0..8) and partitionLeaderEpoch (12..16,
        // the partition's epoch, 0 here).
        ensure!(read.len() == sent.len(), "batch {i}: length");
        ensure!(
            read[8..12] == sent[8..12],
            "batch {i}: length field differs"
        );
        ensure!(
            read[12..16] == 0i32.to_be_bytes(),
            "batch {i}: leader epoch not stamped"
        );
        ensure!(read[16..] == sent[16..], "batch {i}: bytes differ");
    }
    store.shutdown().await?;
    node.shutdown().await?;
    Ok(())
}

async fn get_with_range(
    store: &Arc<dyn ObjectStore>,
    key: &Path,
    range: GetRange,
) -> Result<Bytes> {
    let options = GetOptions {
        range: Some(range),
        ..GetOptions::default()
    };
    Ok(store.get_opts(key, options).await?.bytes().await?)
}

async fn list_keys(store: &Arc<dyn ObjectStore>, prefix: Option<&str>) -> Result<Vec<String>> {
    let prefix = prefix.map(Path::from);
    let mut keys: Vec<String> = store
        .list(prefix.as_ref())
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await?;
    // Listing order is not part of the contract.
    keys.sort();
    Ok(keys)
}

fn expect_not_found(result: object_store::Result<()>, what: &str) -> Result<()> {
    match result {
        Err(object_store::Error::NotFound { .. }) => Ok(()),
        other => bail!("{what}: expected NotFound, got {other:?}"),
    }
}

/// The same test bodies for every backend: `backend::test_name`.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $test() -> anyhow::Result<()> {
                super::$test(super::Kind::Memory).await
            })*
        }
        mod local_fs {
            $(#[tokio::test] async fn $test() -> anyhow::Result<()> {
                super::$test(super::Kind::LocalFileSystem).await
            })*
        }
        mod s3s_fs {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() -> anyhow::Result<()> {
                super::$test(super::Kind::S3).await
            })*
        }
        mod s3s_fs_through_proxy {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() -> anyhow::Result<()> {
                super::$test(super::Kind::S3ThroughProxy).await
            })*
        }
    };
}

conformance!(
    put_get_head,
    ranged_get,
    list_with_prefix,
    delete,
    put_create_if_absent,
    multipart_upload,
    log_store_round_trip,
);
