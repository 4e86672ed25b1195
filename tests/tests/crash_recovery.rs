//! Crash safety: SIGKILL the broker at a random point while records are in flight, restart it
//! on the same data dir, and check that every acknowledged record is there at the offset it
//! was acknowledged with, and that every partition's offsets are dense (0..n, no gaps).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use rand::Rng as _;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, FutureRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use sluice_tests::clients;
use sluice_tests::s3::S3Server;
use sluice_tests::{SluiceOptions, SluiceProcess};

const PARTITIONS: i32 = 3;
/// Upper bound on records sent; the kill happens long before.
const MAX_RECORDS: usize = 1_000_000;

/// Counts delivery reports as librdkafka delivers them (not when a test gets around to
/// awaiting them), so the kill point is chosen on live ack counts.
#[derive(Default)]
struct AckLedger {
    acks: AtomicUsize,
    reports: AtomicUsize,
    acked: Mutex<Vec<(usize, i32, i64)>>,
}

impl ClientContext for AckLedger {}

impl ProducerContext for AckLedger {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        if let Ok(message) = result {
            if let Ok(mut acked) = self.acked.lock() {
                acked.push((*index, message.partition(), message.offset()));
            }
            self.acks.fetch_add(1, Ordering::SeqCst);
        }
        self.reports.fetch_add(1, Ordering::SeqCst);
    }
}

/// Sends records as fast as the local queue allows until `stop` is set; returns how many were
/// handed to librdkafka.
fn send_until_stopped(
    producer: &ThreadedProducer<AckLedger>,
    topic: &str,
    stop: &AtomicBool,
) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut sent = 0;
    while sent < MAX_RECORDS && !stop.load(Ordering::SeqCst) {
        ensure!(
            Instant::now() < deadline,
            "sender ran for 180 s without a stop"
        );
        let key = format!("k{sent}");
        let value = format!("rec-{sent}");
        let record = BaseRecord::with_opaque_to(topic, Box::new(sent))
            .partition((sent % PARTITIONS as usize) as i32)
            .key(&key)
            .payload(&value);
        match producer.send(record) {
            Ok(()) => sent += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((err, _)) => bail!("enqueueing record {sent}: {err}"),
        }
    }
    Ok(sent)
}

/// After the kill, how the next broker starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Restart {
    /// On the same data dir (file WAL: replayed from it).
    SameDataDir,
    /// On an empty data dir, from the bucket alone (S3 WAL: the broker is stateless).
    EmptyDataDir,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_produce_loses_no_acked_record() -> Result<()> {
    sigkill_during_produce(SluiceOptions::default(), Restart::SameDataDir).await
}

/// Stateless mode on a real S3 server: S3 WAL on s3s-fs, SIGKILL mid-load, then a new broker on an
/// **empty** data dir against the same bucket serves every acknowledged record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_wal_sigkill_then_empty_data_dir_loses_no_acked_record() -> Result<()> {
    let s3 = S3Server::start()?;
    let options = SluiceOptions::default().s3(&s3, "sluice").object_wal();
    sigkill_during_produce(options, Restart::EmptyDataDir).await
}

/// The same with tiny segment thresholds: compaction rewrites WAL objects into segments (and the
/// GC deletes them) while producing, so the new broker reads both kinds of objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_wal_sigkill_with_compaction_loses_no_acked_record() -> Result<()> {
    let s3 = S3Server::start()?;
    let options = SluiceOptions::default()
        .s3(&s3, "sluice")
        .object_wal()
        .tiny_segments()
        .arg("--gc-grace-ms", 200)
        .arg("--housekeeping-ms", 100);
    sigkill_during_produce(options, Restart::EmptyDataDir).await
}

/// The same with tiny segment thresholds and tail cache: after the restart the records come back
/// through segment objects and the index, not only through the WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_produce_loses_no_acked_record_with_tiny_segments() -> Result<()> {
    sigkill_during_produce(
        SluiceOptions::default().tiny_segments(),
        Restart::SameDataDir,
    )
    .await
}

async fn sigkill_during_produce(options: SluiceOptions, restart: Restart) -> Result<()> {
    let mut broker = SluiceProcess::start(options)?;
    let topic = "crash".to_string();
    clients::create_topic(&broker.bootstrap(), &topic, PARTITIONS, &[]).await?;

    let producer: Arc<ThreadedProducer<AckLedger>> = Arc::new(
        clients::producer_config(&broker.bootstrap())
            .set("linger.ms", "2")
            // Undeliverable records after the kill fail within seconds, not the default 30 s.
            .set("message.timeout.ms", "5000")
            .set("request.timeout.ms", "3000")
            .set("queue.buffering.max.messages", "20000")
            .create_with_context(AckLedger::default())
            .context("creating producer")?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let producer = Arc::clone(&producer);
        let stop = Arc::clone(&stop);
        let topic = topic.clone();
        std::thread::spawn(move || send_until_stopped(&producer, &topic, &stop))
    };

    let ledger = producer.context();
    let kill_at = rand::rng().random_range(2_000..30_000);
    let deadline = Instant::now() + Duration::from_secs(120);
    while ledger.acks.load(Ordering::SeqCst) < kill_at {
        ensure!(
            Instant::now() < deadline,
            "only {} acks within 120 s",
            ledger.acks.load(Ordering::SeqCst)
        );
        ensure!(!sender.is_finished(), "sender stopped early");
        std::thread::sleep(Duration::from_micros(200));
    }
    broker.kill9()?;
    let acks_at_kill = ledger.acks.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
    let in_flight_at_kill = sent.saturating_sub(ledger.reports.load(Ordering::SeqCst));
    // Every outstanding record gets its (failed) report within message.timeout.ms.
    let _ = producer.flush(Duration::from_secs(30));
    let reports = ledger.reports.load(Ordering::SeqCst);
    ensure!(
        reports == sent,
        "{reports} delivery reports for {sent} records after flush"
    );
    let acked: Vec<(usize, i32, i64)> = ledger
        .acked
        .lock()
        .map_err(|_| anyhow::anyhow!("ack ledger poisoned"))?
        .clone();
    eprintln!(
        "killed at {acks_at_kill} acks (target {kill_at}) with ~{in_flight_at_kill} records in \
         flight; {} of {sent} acked in total",
        acked.len()
    );
    ensure!(acked.len() >= acks_at_kill, "ack count went backwards");
    ensure!(
        acked.len() < sent,
        "every record was acked: nothing was in flight at the kill, the test proves nothing"
    );

    if restart == Restart::EmptyDataDir {
        broker.wipe_data_dir()?;
    }
    broker.restart()?;
    let bootstrap = broker.bootstrap();

    // Acked records per partition, by offset.
    let mut acked_at: HashMap<(i32, i64), usize> = HashMap::with_capacity(acked.len());
    let mut max_acked: BTreeMap<i32, i64> = BTreeMap::new();
    for &(index, partition, offset) in &acked {
        ensure!(
            acked_at.insert((partition, offset), index).is_none(),
            "two records acked at {partition}@{offset}"
        );
        let max = max_acked.entry(partition).or_insert(-1);
        *max = (*max).max(offset);
    }

    let mut total = 0usize;
    let mut high_watermarks = Vec::new();
    for partition in 0..PARTITIONS {
        let (low, high) = clients::watermarks(&bootstrap, &topic, partition)?;
        ensure!(
            low == 0,
            "partition {partition}: log start {low} after restart"
        );
        let max = max_acked.get(&partition).copied().unwrap_or(-1);
        ensure!(
            high > max,
            "partition {partition}: high watermark {high} but offset {max} was acked"
        );
        total += usize::try_from(high).context("negative high watermark")?;
        high_watermarks.push(high);
    }

    let messages = clients::consume_from_beginning(
        &bootstrap,
        &topic,
        PARTITIONS,
        total,
        Duration::from_secs(120),
    )?;
    ensure!(
        messages.len() == total,
        "consumed {} of {total} records below the high watermarks {high_watermarks:?}",
        messages.len()
    );
    let mut next_offset = vec![0i64; PARTITIONS as usize];
    let mut acked_found = 0usize;
    for message in &messages {
        let slot = usize::try_from(message.partition()).context("negative partition")?;
        ensure!(
            message.offset() == next_offset[slot],
            "partition {}: offset {} follows {} — offsets are not dense",
            message.partition(),
            message.offset(),
            next_offset[slot] - 1
        );
        next_offset[slot] += 1;
        if let Some(index) = acked_at.get(&(message.partition(), message.offset())) {
            let want = format!("rec-{index}");
            ensure!(
                message.payload() == Some(want.as_bytes()),
                "acked record {index} at {}@{} reads back as {:?}",
                message.partition(),
                message.offset(),
                message.payload().map(String::from_utf8_lossy)
            );
            acked_found += 1;
        }
    }
    ensure!(
        acked_found == acked.len(),
        "{} acked records missing after the crash",
        acked.len() - acked_found
    );

    // The log continues at the high watermark: no offset is reused or skipped.
    let producer = clients::producer(&bootstrap)?;
    for partition in 0..PARTITIONS {
        let (_, offset) =
            clients::produce_one(&producer, &topic, partition, b"after", b"after-restart").await?;
        ensure!(
            offset == high_watermarks[partition as usize],
            "partition {partition}: first record after restart at {offset}, expected {}",
            high_watermarks[partition as usize]
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully_and_keeps_data() -> Result<()> {
    let mut broker = SluiceProcess::start(SluiceOptions::default())?;
    let topic = "graceful";
    clients::create_topic(&broker.bootstrap(), topic, 1, &[]).await?;
    let producer = clients::producer(&broker.bootstrap())?;
    let outcome = clients::produce_many(&producer, 1000, |index| {
        let _ = index;
        FutureRecord::<[u8], [u8]>::to(topic)
            .partition(0)
            .payload(b"graceful".as_slice())
    })
    .await?;
    outcome.all_ok()?;
    drop(producer);

    let started = Instant::now();
    let status = broker.terminate()?;
    ensure!(status.success(), "SIGTERM exit status {status}");
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "graceful shutdown took {:?}",
        started.elapsed()
    );
    broker.restart()?;
    let (low, high) = clients::watermarks(&broker.bootstrap(), topic, 0)?;
    ensure!(
        (low, high) == (0, 1000),
        "watermarks after restart: ({low}, {high})"
    );
    Ok(())
}
