//! The S3 client settings against injected faults: an object store built by
//! `storage::objects` (the broker's own code) talks to s3s-fs through the fault proxy. Checks that
//! 500 / 503 SlowDown bursts, blackouts and hung requests are retried with backoff until S3 answers
//! again, that a persistent failure surfaces as an error once retries are exhausted, and that the
//! proxy's counters see what went over the wire. And the per-request fault model other tests
//! build races with: a held body, "stored, then 500", 409 with nothing stored, and PUTs completing
//! out of order.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions};
use sluice_tests::fault_proxy::{
    BlackoutMode, FaultProxy, RequestKind, RequestMatch, S3Fault, When,
};
use sluice_tests::s3::S3Server;
use storage::objects::S3Options;

fn setup(
    configure: impl FnOnce(&mut S3Options),
) -> Result<(
    S3Server,
    FaultProxy,
    std::sync::Arc<dyn object_store::ObjectStore>,
)> {
    let server = S3Server::start()?;
    let proxy = FaultProxy::start(server.addr())?;
    let mut options = server.s3_options_via(&proxy.endpoint());
    configure(&mut options);
    let store = server.object_store_with("faults", &options)?;
    Ok((server, proxy, store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bursts_are_retried_and_counted() -> Result<()> {
    let (_server, proxy, store) = setup(|_| {})?;
    let key = Path::from("wal/1");
    let payload = Bytes::from(vec![7u8; 64 * 1024]);

    proxy.fail_next(2, S3Fault::SlowDown);
    store.put(&key, payload.clone().into()).await?;
    let stats = proxy.stats();
    ensure!(stats.puts() == 3, "PUTs seen: {stats:?}");
    ensure!(stats.kind(RequestKind::Put).faults == 2, "{stats:?}");
    // Every attempt carried the whole body.
    ensure!(stats.put_bytes() == 3 * payload.len() as u64, "{stats:?}");

    proxy.fail_next(2, S3Fault::InternalError);
    ensure!(store.get(&key).await?.bytes().await? == payload);
    let stats = proxy.stats();
    ensure!(stats.gets() == 3, "{stats:?}");
    ensure!(stats.kind(RequestKind::Get).response_bytes == payload.len() as u64);

    // Faults limited to one kind leave the others alone.
    proxy.reset_stats();
    proxy.only_kind(Some(RequestKind::Put));
    proxy.fail_next(1, S3Fault::ServiceUnavailable);
    store.head(&key).await?;
    ensure!(proxy.pending_failures() == 1);
    store.put(&key, payload.clone().into()).await?;
    ensure!(proxy.pending_failures() == 0);
    ensure!(proxy.stats().total_faults() == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_failure_surfaces_after_the_retries() -> Result<()> {
    let (_server, proxy, store) = setup(|options| options.max_retries = 2)?;
    proxy.fail_fraction(1.0, S3Fault::SlowDown);
    let result = store
        .put(&Path::from("wal/never"), Bytes::from_static(b"x").into())
        .await;
    ensure!(result.is_err(), "put succeeded through a permanent 503");
    // First attempt + 2 retries.
    ensure!(proxy.stats().puts() == 3, "{:?}", proxy.stats());

    proxy.pass_through();
    store
        .put(&Path::from("wal/later"), Bytes::from_static(b"x").into())
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackouts_are_ridden_out() -> Result<()> {
    let (_server, proxy, store) = setup(|options| {
        options.max_retries = 50;
        options.request_timeout = Duration::from_millis(500);
        options.max_backoff = Duration::from_millis(100);
    })?;
    let key = Path::from("wal/blackout");
    store.put(&key, Bytes::from_static(b"v").into()).await?;

    for mode in [
        BlackoutMode::Unavailable,
        BlackoutMode::Refuse,
        BlackoutMode::Hang,
    ] {
        let blackout = Duration::from_millis(800);
        let started = Instant::now();
        proxy.blackout(blackout, mode);
        // GET is idempotent: object_store retries it on 503, refused connections and timeouts.
        // Its retry loop may still give up inside a refused-connection blackout (hyper reports a
        // canceled pooled connection, which object_store does not always retry), so — like
        // Sluice's own callers — try again, bounded; the value must come back, and never before
        // the blackout ends.
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            match store.get(&key).await {
                Ok(result) => break result.bytes().await?,
                Err(error) => {
                    ensure!(
                        Instant::now() < deadline,
                        "{mode:?}: GET still failing 5 s after the blackout started: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        ensure!(&got[..] == b"v");
        let elapsed = started.elapsed();
        ensure!(
            elapsed >= blackout - Duration::from_millis(50),
            "{mode:?}: answered after {elapsed:?}, during the blackout"
        );
        ensure!(
            elapsed < Duration::from_secs(5),
            "{mode:?}: took {elapsed:?}"
        );
    }
    let stats = proxy.stats();
    ensure!(
        stats.total_faults() > 0 || stats.refused_connections > 0,
        "{stats:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_added_per_request() -> Result<()> {
    let (_server, proxy, store) = setup(|_| {})?;
    let key = Path::from("slow");
    store.put(&key, Bytes::from_static(b"v").into()).await?;
    proxy.set_latency(Duration::from_millis(150));
    let started = Instant::now();
    store.head(&key).await?;
    ensure!(started.elapsed() >= Duration::from_millis(150));
    Ok(())
}

/// A create-if-absent PUT of `bytes` at `key`.
async fn create(
    store: &std::sync::Arc<dyn ObjectStore>,
    key: &Path,
    bytes: &'static [u8],
) -> object_store::Result<object_store::PutResult> {
    store
        .put_opts(
            key,
            Bytes::from_static(bytes).into(),
            PutOptions::from(PutMode::Create),
        )
        .await
}

async fn content(store: &std::sync::Arc<dyn ObjectStore>, key: &Path) -> Result<Bytes> {
    Ok(store.get(key).await?.bytes().await?)
}

/// Upper bound for a step of the fault-model tests.
const STEP: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_body_is_not_stored_until_released() -> Result<()> {
    let server = S3Server::start()?;
    let store = server.object_store("model")?;
    let key = Path::from("held/1");
    let held = server.faults().hold_body(RequestMatch::put("model/held/"));
    let put = tokio::spawn({
        let store = store.clone();
        let key = key.clone();
        async move { store.put(&key, Bytes::from_static(b"v").into()).await }
    });
    tokio::time::timeout(STEP, held.arrived()).await?;
    // Held: the server has not stored anything, and the writer has no answer.
    ensure!(matches!(
        store.head(&key).await,
        Err(object_store::Error::NotFound { .. })
    ));
    ensure!(!put.is_finished());
    held.release();
    tokio::time::timeout(STEP, put).await???;
    ensure!(&content(&store, &key).await?[..] == b"v");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_then_500_makes_the_retried_create_fail_on_its_own_object() -> Result<()> {
    let server = S3Server::start()?;
    let store = server.object_store("model")?;
    let key = Path::from("log/1");
    server.faults().fail_matching(
        RequestMatch::put("model/log/"),
        1,
        S3Fault::InternalError,
        When::AfterStoring,
    );
    // object_store retries the 500; the retry finds the object its first attempt stored.
    let result = create(&store, &key, b"mine").await;
    ensure!(
        matches!(result, Err(object_store::Error::AlreadyExists { .. })),
        "{result:?}"
    );
    ensure!(&content(&store, &key).await?[..] == b"mine");
    let stats = server.faults().stats();
    ensure!(stats.puts() == 2, "{stats:?}");
    ensure!(stats.kind(RequestKind::Put).faults == 1, "{stats:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_stores_nothing() -> Result<()> {
    let server = S3Server::start()?;
    let store = server.object_store("model")?;
    let key = Path::from("log/1");
    server.faults().fail_matching(
        RequestMatch::put("model/log/"),
        1,
        S3Fault::ConditionalRequestConflict,
        When::BeforeForwarding,
    );
    let result = create(&store, &key, b"mine").await;
    ensure!(
        matches!(result, Err(object_store::Error::AlreadyExists { .. })),
        "{result:?}"
    );
    ensure!(matches!(
        store.head(&key).await,
        Err(object_store::Error::NotFound { .. })
    ));
    // The rule is used up: the next create goes through.
    create(&store, &key, b"mine").await?;
    ensure!(&content(&store, &key).await?[..] == b"mine");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_complete_out_of_order() -> Result<()> {
    let server = S3Server::start()?;
    let store = server.object_store("model")?;
    let key = Path::from("obj");
    let held = server
        .faults()
        .hold_response(RequestMatch::put("model/obj"));
    let first = tokio::spawn({
        let store = store.clone();
        let key = key.clone();
        async move { store.put(&key, Bytes::from_static(b"one").into()).await }
    });
    tokio::time::timeout(STEP, held.arrived()).await?;
    // PUT #1 is stored, but its writer has no answer yet.
    ensure!(&content(&store, &key).await?[..] == b"one");
    store.put(&key, Bytes::from_static(b"two").into()).await?;
    ensure!(
        !first.is_finished(),
        "PUT #1 answered before it was released"
    );
    held.release();
    tokio::time::timeout(STEP, first).await???;
    ensure!(&content(&store, &key).await?[..] == b"two");
    Ok(())
}
