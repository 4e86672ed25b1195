//! The bucket metadata log with two real `sluice serve` processes on one bucket (s3s-fs, `--wal
//! object`), as an operator could get by mistake: one paused and resumed while another took over,
//! a second one started while the first runs, a second one that cannot bind its port, and a
//! restore from a damaged bucket. In every case at most one process serves writes, the other
//! says why in its log, and every record either acknowledged is read back at its acked offset.
//!
//! The test S3 server (s3s-fs behind the fault proxy) decides create-if-absent when a create
//! completes, as S3 does; one test holds A's bucket-log create mid-body while B creates the same
//! key, so overlapping creates are exercised on purpose, not left to timing.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use futures::TryStreamExt;
use object_store::ObjectStore;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use sluice_tests::fault_proxy::RequestMatch;
use sluice_tests::s3::S3Server;
use sluice_tests::{clients, SluiceOptions, SluiceProcess};

const TOPIC: &str = "fenced";
const PARTITIONS: i32 = 2;
/// Records per produce round of the background load, and the bound on rounds.
const ROUND: usize = 20;
const MAX_ROUNDS: usize = 400;

fn options(s3: &S3Server) -> SluiceOptions {
    SluiceOptions::default()
        .s3(s3, "bucket-log")
        .object_wal()
        // No compaction, GC or retention writes during the test: every bucket write is a produce.
        .arg("--segment-ms", 3_600_000)
        .arg("--housekeeping-ms", 3_600_000)
        // A failed start's error, not a backtrace, ends its log (the harness shows the tail).
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
}

/// Sends a signal with the `kill` utility (the workspace forbids `unsafe`).
fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .stdin(Stdio::null())
        .status()
        .context("running kill")?;
    ensure!(status.success(), "kill -s {name} {pid}: {status}");
    Ok(())
}

/// Every key in the bucket with its size, sorted.
async fn bucket_listing(store: &Arc<dyn ObjectStore>) -> Result<BTreeMap<String, u64>> {
    let metas: Vec<_> = store.list(None).try_collect().await?;
    Ok(metas
        .into_iter()
        .map(|meta| (meta.location.to_string(), meta.size))
        .collect())
}

fn producer(bootstrap: &str) -> Result<FutureProducer> {
    clients::producer_config(bootstrap)
        .set("message.timeout.ms", "8000")
        .set("request.timeout.ms", "4000")
        .set("retries", "3")
        .create()
        .context("creating producer")
}

/// Acknowledged records: payload → (partition, offset).
type Acked = BTreeMap<String, (i32, i64)>;

/// Produces rounds of records `{tag}-{n}` to `bootstrap` until `stop` is set (bounded by
/// [`MAX_ROUNDS`] and 90 s), collecting every acknowledged one.
fn spawn_load(
    bootstrap: String,
    tag: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<Acked>> {
    tokio::spawn(async move {
        let producer = producer(&bootstrap)?;
        let mut acked = Acked::new();
        let started = Instant::now();
        for round in 0..MAX_ROUNDS {
            if stop.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(90) {
                break;
            }
            let payloads: Vec<String> = (0..ROUND)
                .map(|i| format!("{tag}-{}", round * ROUND + i))
                .collect();
            let outcome = clients::produce_many(&producer, ROUND, |i| {
                FutureRecord::<[u8], [u8]>::to(TOPIC)
                    .partition((i % PARTITIONS as usize) as i32)
                    .payload(payloads[i].as_bytes())
            })
            .await?;
            for (payload, result) in payloads.iter().zip(outcome.results) {
                if let Ok(position) = result {
                    acked.insert(payload.clone(), position);
                }
            }
        }
        Ok(acked)
    })
}

/// One produce with a short timeout: `Ok` if acknowledged.
async fn try_produce(bootstrap: &str, payload: &str) -> Result<(i32, i64)> {
    let producer = producer(bootstrap)?;
    producer
        .send(
            FutureRecord::<[u8], [u8]>::to(TOPIC)
                .partition(0)
                .payload(payload.as_bytes()),
            Timeout::After(Duration::from_secs(8)),
        )
        .await
        .map(|delivery| (delivery.partition, delivery.offset))
        .map_err(|(error, _)| anyhow::anyhow!("produce to {bootstrap}: {error}"))
}

/// Waits (bounded) until the process has exited.
async fn wait_exit(process: &mut SluiceProcess, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !process.is_running() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn log_of(process: &SluiceProcess) -> String {
    std::fs::read_to_string(process.log_path()).unwrap_or_default()
}

/// Reads the whole topic from `bootstrap`: every acknowledged record is at its acked offset, and
/// the offsets of each partition are dense from 0 to the high watermark.
fn check_read_back(bootstrap: &str, acked: &Acked) -> Result<()> {
    let mut total = 0usize;
    for partition in 0..PARTITIONS {
        let (low, high) = clients::watermarks(bootstrap, TOPIC, partition)?;
        ensure!(low == 0, "partition {partition} starts at {low}");
        total += usize::try_from(high)?;
    }
    let messages = clients::consume_from_beginning(
        bootstrap,
        TOPIC,
        PARTITIONS,
        total,
        Duration::from_secs(60),
    )?;
    ensure!(
        messages.len() == total,
        "read {} of {total} records",
        messages.len()
    );
    let mut seen: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for message in &messages {
        let payload = String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string();
        if seen
            .insert((message.partition(), message.offset()), payload)
            .is_some()
        {
            bail!(
                "offset {}/{} read twice",
                message.partition(),
                message.offset()
            );
        }
    }
    for partition in 0..PARTITIONS {
        let offsets: Vec<i64> = seen
            .keys()
            .filter(|(p, _)| *p == partition)
            .map(|(_, o)| *o)
            .collect();
        let dense: Vec<i64> = (0..i64::try_from(offsets.len())?).collect();
        ensure!(
            offsets == dense,
            "partition {partition} offsets are not dense: {offsets:?}"
        );
    }
    for (payload, position) in acked {
        match seen.get(position) {
            Some(found) if found == payload => {}
            other => bail!("acknowledged {payload} at {position:?}, read back {other:?}"),
        }
    }
    Ok(())
}

/// After a takeover: `winner` serves writes, `loser` does not and its log says it was fenced.
async fn exactly_one_serves(
    winner: &SluiceProcess,
    loser: &mut SluiceProcess,
    loser_bootstrap: &str,
) -> Result<()> {
    try_produce(&winner.bootstrap(), "winner-probe")
        .await
        .context("the winner does not serve writes")?;
    if loser.is_running() {
        let answer = try_produce(loser_bootstrap, "loser-probe").await;
        ensure!(
            answer.is_err(),
            "the fenced process acknowledged a write: {answer:?}"
        );
    }
    ensure!(
        wait_exit(loser, Duration::from_secs(30)).await,
        "the fenced process is still running"
    );
    let log = log_of(loser);
    ensure!(
        log.contains("FENCED")
            && (log.contains("fenced off the cluster's metadata log")
                || log.contains("sealed this process's S3 WAL lanes")),
        "the fenced process does not say why\n{}",
        loser.log_tail(40)
    );
    ensure!(
        !log_of(winner).contains("FENCED"),
        "the winner was fenced too"
    );
    Ok(())
}

/// A background load and the flag that stops it.
type Load = (Arc<AtomicBool>, tokio::task::JoinHandle<Result<Acked>>);

/// The end of a takeover by B of A's bucket: both loads stopped; B acknowledged something and A
/// at least `min_acked_a` records; exactly one of them serves writes; every record either
/// acknowledged is read back from B at its acked offset.
async fn finish_takeover(
    a: &mut SluiceProcess,
    a_bootstrap: &str,
    b: &SluiceProcess,
    (stop_a, load_a): Load,
    (stop_b, load_b): Load,
    min_acked_a: usize,
) -> Result<()> {
    stop_a.store(true, Ordering::SeqCst);
    stop_b.store(true, Ordering::SeqCst);
    let mut acked = load_a.await??;
    let acked_b = load_b.await??;
    ensure!(!acked_b.is_empty(), "B acknowledged nothing");
    ensure!(
        acked.len() >= min_acked_a,
        "A acknowledged only {} records before it was paused",
        acked.len()
    );
    acked.extend(acked_b);
    exactly_one_serves(b, a, a_bootstrap).await?;
    check_read_back(&b.bootstrap(), &acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_process_resumed_after_another_took_over_is_fenced() -> Result<()> {
    let s3 = S3Server::start()?;
    let mut a = SluiceProcess::start(options(&s3))?;
    let a_bootstrap = a.bootstrap();
    clients::create_topic(&a_bootstrap, TOPIC, PARTITIONS, &[]).await?;

    // A under load, then paused mid-flight.
    let stop_a = Arc::new(AtomicBool::new(false));
    let load_a = spawn_load(a_bootstrap.clone(), "a", stop_a.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a_pid = a.pid().context("A is not running")?;
    signal(a_pid, "STOP")?;

    // B on an empty data dir takes over and serves.
    let b = SluiceProcess::start(options(&s3))?;
    let b_bootstrap = b.bootstrap();
    let stop_b = Arc::new(AtomicBool::new(false));
    let load_b = spawn_load(b_bootstrap.clone(), "b", stop_b.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // A resumes with its produces still in flight: its next metadata write meets B's log.
    signal(a_pid, "CONT")?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    finish_takeover(
        &mut a,
        &a_bootstrap,
        &b,
        (stop_a, load_a),
        (stop_b, load_b),
        ROUND,
    )
    .await?;
    drop(b);
    Ok(())
}

/// Test (a) with the race exercised on purpose: A is paused while its bucket-log create is in
/// flight (the proxy holds the request's body), B takes over and creates the same key, then A's
/// create is let go and A resumes. The test server decides the create at completion, as S3 does,
/// so A's create must fail, A must find B's lineage there and be fenced — without acknowledging
/// anything its held object would have covered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_paused_in_the_middle_of_a_log_create_is_fenced_when_resumed() -> Result<()> {
    const CLUSTER: &str = "held-create";
    let s3 = S3Server::start()?;
    let cluster_options = || options(&s3).arg("--cluster-id", CLUSTER);
    let mut a = SluiceProcess::start(cluster_options())?;
    let a_bootstrap = a.bootstrap();
    clients::create_topic(&a_bootstrap, TOPIC, PARTITIONS, &[]).await?;

    // A under load; its next bucket-log create is held mid-body, then A is paused.
    let stop_a = Arc::new(AtomicBool::new(false));
    let load_a = spawn_load(a_bootstrap.clone(), "a", stop_a.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let held = s3.faults().hold_body(RequestMatch::put(&format!(
        "bucket-log/{CLUSTER}/metadata/log/"
    )));
    tokio::time::timeout(Duration::from_secs(30), held.arrived())
        .await
        .context("A made no bucket-log create within 30 s")?;
    let a_pid = a.pid().context("A is not running")?;
    signal(a_pid, "STOP")?;
    let before_b = bucket_listing(&s3.object_store("")?).await?;

    // B on an empty data dir restores the chain A stored and creates the key A is writing.
    let b = SluiceProcess::start(cluster_options())?;
    let b_bootstrap = b.bootstrap();
    let stop_b = Arc::new(AtomicBool::new(false));
    let load_b = spawn_load(b_bootstrap.clone(), "b", stop_b.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after_b = bucket_listing(&s3.object_store("")?).await?;
    ensure!(
        after_b
            .keys()
            .any(|key| key.contains("/metadata/log/") && !before_b.contains_key(key)),
        "B stored no bucket-log object while A's create was held"
    );

    // A's create completes now (after B's), then A runs again.
    held.release();
    signal(a_pid, "CONT")?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    finish_takeover(
        &mut a,
        &a_bootstrap,
        &b,
        (stop_a, load_a),
        (stop_b, load_b),
        1,
    )
    .await?;
    drop(b);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_started_while_the_first_runs_leaves_one_writer() -> Result<()> {
    let s3 = S3Server::start()?;
    let mut a = SluiceProcess::start(options(&s3))?;
    let a_bootstrap = a.bootstrap();
    clients::create_topic(&a_bootstrap, TOPIC, PARTITIONS, &[]).await?;
    let stop_a = Arc::new(AtomicBool::new(false));
    let load_a = spawn_load(a_bootstrap.clone(), "a", stop_a.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // B starts on the same bucket while A is busy. Either B's first log object is taken by A
    // (B's start fails, A goes on) or B's is stored first (A is fenced at its next write).
    let started_b = SluiceProcess::start(options(&s3));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop_a.store(true, Ordering::SeqCst);
    let mut acked = load_a.await??;
    ensure!(!acked.is_empty(), "A acknowledged nothing");
    match started_b {
        Ok(b) => {
            let b_bootstrap = b.bootstrap();
            let stop_b = Arc::new(AtomicBool::new(false));
            let load_b = spawn_load(b_bootstrap.clone(), "b", stop_b.clone());
            tokio::time::sleep(Duration::from_millis(500)).await;
            stop_b.store(true, Ordering::SeqCst);
            acked.extend(load_b.await??);
            exactly_one_serves(&b, &mut a, &a_bootstrap).await?;
            check_read_back(&b_bootstrap, &acked)?;
        }
        Err(error) => {
            let message = format!("{error:#}");
            ensure!(
                message.contains("fenced") && message.contains("already exists"),
                "B failed to start for another reason: {message}"
            );
            try_produce(&a_bootstrap, "a-after")
                .await
                .context("A no longer serves")?;
            ensure!(
                !log_of(&a).contains("FENCED"),
                "A was fenced although B never started"
            );
            check_read_back(&a_bootstrap, &acked)?;
        }
    }
    Ok(())
}

/// Runs `sluice serve` on `data_dir` with the Kafka listener `kafka` until it exits (bounded);
/// for starts that must fail (the harness always asks for a free port and its own data dir).
async fn run_to_exit(
    s3: &S3Server,
    data_dir: &std::path::Path,
    kafka: &str,
) -> Result<std::process::Output> {
    let options = options(s3);
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(sluice_tests::sluice_binary()?)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--kafka-listener", kafka, "--http-listener", "127.0.0.1:0"])
            .args(&options.extra_args)
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the start did not exit")??;
    Ok(output)
}

/// Every file under `dir` (relative paths), sorted.
fn files_under(dir: &std::path::Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir)?.display().to_string());
            }
        }
    }
    found.sort();
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_data_dir_is_refused_and_changes_nothing() -> Result<()> {
    let s3 = S3Server::start()?;
    let a = SluiceProcess::start(options(&s3))?;
    let a_bootstrap = a.bootstrap();
    clients::create_topic(&a_bootstrap, TOPIC, PARTITIONS, &[]).await?;
    let (_, first) = try_produce(&a_bootstrap, "before").await?;
    let store = s3.object_store("")?;
    let bucket_before = bucket_listing(&store).await?;
    let files_before = files_under(&a.data_dir())?;

    let output = run_to_exit(&s3, &a.data_dir(), "127.0.0.1:0").await?;
    let error = String::from_utf8_lossy(&output.stderr).to_string();
    ensure!(!output.status.success(), "two processes on one data dir");
    ensure!(
        error.contains("is in use by another sluice process"),
        "failed for another reason: {error}"
    );
    ensure!(
        files_under(&a.data_dir())? == files_before,
        "the refused start changed the data dir"
    );
    ensure!(
        bucket_listing(&store).await? == bucket_before,
        "the refused start changed the bucket"
    );
    let (_, next) = try_produce(&a_bootstrap, "after").await?;
    ensure!(next == first + 1, "offset {next} after {first}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_that_cannot_bind_its_port_leaves_the_bucket_untouched() -> Result<()> {
    let s3 = S3Server::start()?;
    let a = SluiceProcess::start(options(&s3))?;
    let a_bootstrap = a.bootstrap();
    clients::create_topic(&a_bootstrap, TOPIC, PARTITIONS, &[]).await?;
    let (_, first) = try_produce(&a_bootstrap, "before").await?;
    let store = s3.object_store("")?;
    let before = bucket_listing(&store).await?;
    ensure!(
        before.keys().any(|k| k.contains("/metadata/log/")),
        "no log objects: {before:?}"
    );

    // C, on its own data dir, asks for A's port: it must fail before it writes anything to the
    // bucket (it used to restore, write to the metadata log — fencing A — and only then bind).
    let c_dir = tempfile::tempdir()?;
    let output = run_to_exit(&s3, c_dir.path(), &a_bootstrap).await?;
    let error = String::from_utf8_lossy(&output.stderr).to_string();
    ensure!(
        !output.status.success(),
        "a second process bound an occupied port"
    );
    ensure!(
        error.contains("cannot listen on"),
        "failed for another reason: {error}"
    );
    ensure!(
        bucket_listing(&store).await? == before,
        "the failed start changed the bucket"
    );

    // A was not fenced by it.
    let (_, next) = try_produce(&a_bootstrap, "after").await?;
    ensure!(next == first + 1, "offset {next} after {first}");
    ensure!(
        !log_of(&a).contains("FENCED"),
        "A was fenced\n{}",
        a.log_tail(30)
    );
    Ok(())
}

/// The bucket's metadata log objects of the cluster, as files of the s3s-fs root, sorted.
fn log_object_files(s3: &S3Server) -> Result<Vec<std::path::PathBuf>> {
    let root = s3.bucket_dir().join("bucket-log");
    let clusters: Vec<_> = std::fs::read_dir(&root)?.collect::<std::io::Result<_>>()?;
    let mut files = Vec::new();
    for cluster in clusters {
        let dir = cluster.path().join("metadata").join("log");
        if dir.is_dir() {
            for entry in std::fs::read_dir(&dir)? {
                files.push(entry?.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_from_a_damaged_log_refuses_to_start_and_deletes_nothing() -> Result<()> {
    let s3 = S3Server::start()?;
    let mut a = SluiceProcess::start(options(&s3))?;
    let a_bootstrap = a.bootstrap();
    clients::create_topic(&a_bootstrap, TOPIC, PARTITIONS, &[]).await?;
    let producer = producer(&a_bootstrap)?;
    for i in 0..5 {
        clients::produce_one(
            &producer,
            TOPIC,
            i % PARTITIONS,
            b"k",
            format!("v{i}").as_bytes(),
        )
        .await?;
    }
    drop(producer);
    a.terminate()?;
    let files = log_object_files(&s3)?;
    ensure!(files.len() >= 3, "log objects: {files:?}");
    let victim = files[files.len() / 2].clone();
    let name = victim
        .file_name()
        .and_then(|n| n.to_str())
        .context("name")?
        .to_string();
    let original = std::fs::read(&victim)?;
    let store = s3.object_store("")?;

    let text = String::from_utf8(original.clone())?;
    let future = text.replace("\"format_version\":2", "\"format_version\":3");
    ensure!(future != text, "no format version in {name}");
    let damaged = original[..original.len() / 2].to_vec();
    for (what, bytes) in [
        ("damaged", damaged),
        ("future-version", future.into_bytes()),
    ] {
        std::fs::write(&victim, &bytes)?;
        let before = bucket_listing(&store).await?;
        a.wipe_data_dir()?;
        let error = match a.restart() {
            Ok(()) => bail!("started on a {what} log object"),
            Err(error) => format!("{error:#}"),
        };
        ensure!(
            error.contains(&name),
            "the {what} start failure does not name {name}: {error}"
        );
        if what == "future-version" {
            ensure!(error.contains("version 3"), "{error}");
        }
        ensure!(
            bucket_listing(&store).await? == before,
            "the refused start changed the bucket"
        );
    }

    // Repaired, the same bucket restores everything.
    std::fs::write(&victim, &original)?;
    a.restart()?;
    let (_, offset) = try_produce(&a.bootstrap(), "after-repair").await?;
    ensure!(offset == 3, "offset {offset} after the repair");
    Ok(())
}

/// GC acts only on metadata stored in the bucket: A compacts and would garbage-collect WAL
/// objects while its bucket-log create of that compaction is held (the journal lags past the GC
/// grace), then A is SIGKILLed. B restores the log without that compaction, so its index still
/// points at the WAL objects: every one of them must still be there and every acked record
/// readable at its acked offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_lagging_past_the_gc_grace_then_a_crash_loses_nothing() -> Result<()> {
    const CLUSTER: &str = "journal-lag";
    let s3 = S3Server::start()?;
    let lag_options = || {
        SluiceOptions::default()
            .s3(&s3, "bucket-log")
            .object_wal()
            .arg("--cluster-id", CLUSTER)
            // Compaction soon after the load stops; GC as eager as it can be.
            .arg("--segment-ms", 300)
            .arg("--housekeeping-ms", 100)
            .arg("--gc-grace-ms", 200)
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0")
    };
    let mut a = SluiceProcess::start(lag_options())?;
    let a_bootstrap = a.bootstrap();
    clients::create_topic(&a_bootstrap, TOPIC, PARTITIONS, &[]).await?;
    let stop_a = Arc::new(AtomicBool::new(false));
    let load_a = spawn_load(a_bootstrap.clone(), "a", stop_a.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop_a.store(true, Ordering::SeqCst);
    let acked = load_a.await??;
    ensure!(acked.len() >= ROUND, "A acknowledged only {}", acked.len());

    // The next bucket-log create (the compaction of the last WAL chunks) is held; the journal
    // lags while housekeeping runs many times past the GC grace.
    let held = s3.faults().hold_body(RequestMatch::put(&format!(
        "bucket-log/{CLUSTER}/metadata/log/"
    )));
    tokio::time::timeout(Duration::from_secs(8), held.arrived())
        .await
        .context("A made no bucket-log create within 8 s of the load (no compaction?)")?;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    a.kill9()?;
    drop(held);

    let b = SluiceProcess::start(lag_options())?;
    check_read_back(&b.bootstrap(), &acked)?;
    Ok(())
}

/// An S3-WAL ack costs one PUT: it does not wait for the metadata commit. With every bucket-log
/// create held (the journal is stuck, so no index change reaches the bucket), produces are still
/// acknowledged; then A is SIGKILLed. B, on an empty data dir, restores a log that indexes none
/// of them: it must find them in A's WAL lanes (seal, index the tail) and serve every one at its
/// acked offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_do_not_wait_for_the_bucket_log_and_a_crash_loses_none() -> Result<()> {
    const CLUSTER: &str = "ack-one-put";
    let s3 = S3Server::start()?;
    let options = || options(&s3).arg("--cluster-id", CLUSTER);
    let mut a = SluiceProcess::start(options())?;
    let a_bootstrap = a.bootstrap();
    clients::create_topic(&a_bootstrap, TOPIC, PARTITIONS, &[]).await?;
    // A first acked record, whose index commit is the bucket-log create that gets held.
    let held = s3.faults().hold_body(RequestMatch::put(&format!(
        "bucket-log/{CLUSTER}/metadata/log/"
    )));
    let first = try_produce(&a_bootstrap, "first").await?;
    tokio::time::timeout(Duration::from_secs(8), held.arrived())
        .await
        .context("A made no bucket-log create after an acked produce")?;

    // The journal is stuck behind the held create; acks go on.
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(a_bootstrap.clone(), "a", stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = load.await??;
    ensure!(
        acked.len() >= ROUND,
        "only {} records acknowledged while the bucket log was held: acks wait for it",
        acked.len()
    );
    acked.insert("first".to_owned(), first);
    a.kill9()?;
    drop(held);

    let b = SluiceProcess::start(options())?;
    check_read_back(&b.bootstrap(), &acked)?;
    ensure!(
        log_of(&b).contains("sealed dead incarnations and indexed their tails"),
        "B did not take A's WAL lanes over:\n{}",
        log_of(&b)
    );
    Ok(())
}

/// A WAL object the bucket does not store in time (its create hangs mid-body at the proxy): the
/// broker gives it up after `--wal-put-give-up-ms`, tombstones that seq itself and goes on under a
/// new incarnation — while a load runs. The hung create is then let go: it completes at the server
/// after the tombstone, so it is refused and none of it ever appears. Everything acknowledged is
/// read back at its offset with dense offsets, from the broker and, after a SIGKILL, from a new
/// broker on an empty data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_object_not_stored_in_time_is_given_up_and_the_broker_goes_on() -> Result<()> {
    const CLUSTER: &str = "give-up";
    let s3 = S3Server::start()?;
    let options = || {
        options(&s3)
            .arg("--cluster-id", CLUSTER)
            .arg("--wal-put-give-up-ms", 2000)
    };
    let mut a = SluiceProcess::start(options())?;
    let bootstrap = a.bootstrap();
    clients::create_topic(&bootstrap, TOPIC, PARTITIONS, &[]).await?;
    let mut acked = Acked::new();
    acked.insert(
        "before".to_owned(),
        try_produce(&bootstrap, "before").await?,
    );

    let held = s3
        .faults()
        .hold_body(RequestMatch::put(&format!("bucket-log/{CLUSTER}/wal/")));
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(bootstrap.clone(), "a", stop.clone());
    tokio::time::timeout(Duration::from_secs(30), held.arrived())
        .await
        .context("no WAL object create reached the proxy")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log_of(&a).contains("serving under a new incarnation") {
        ensure!(
            Instant::now() < deadline,
            "the broker did not give the held object up:\n{}",
            a.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The hung create completes now, after the tombstone: refused.
    drop(held);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let loaded = load.await??;
    ensure!(
        loaded.len() >= ROUND,
        "only {} records acknowledged around the give-up",
        loaded.len()
    );
    acked.extend(loaded);
    acked.insert("after".to_owned(), try_produce(&bootstrap, "after").await?);
    ensure!(a.is_running(), "the broker stopped:\n{}", a.log_tail(40));
    check_read_back(&bootstrap, &acked)?;

    a.kill9()?;
    let b = SluiceProcess::start(options())?;
    check_read_back(&b.bootstrap(), &acked)?;
    Ok(())
}
