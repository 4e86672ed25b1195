//! The S3 WAL under object-store faults, end to end: `sluice serve --wal object` talks to s3s-fs
//! through the harness's fault proxy while a librdkafka producer (acks=all, idempotent) keeps
//! producing. Bursts of 500 and 503 SlowDown, added latency and a 10 s blackout must cost no
//! crash, no acknowledged record, no duplicate; producers resume by themselves afterwards; and a
//! produce that cannot become durable within its timeout is answered REQUEST_TIMED_OUT, never
//! acknowledged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use sluice_tests::fault_proxy::{BlackoutMode, FaultProxy, RequestKind, S3Fault};
use sluice_tests::s3::S3Server;
use sluice_tests::wire::{self, RawConnection};
use sluice_tests::{clients, SluiceOptions, SluiceProcess};

const PARTITIONS: i32 = 2;
const REQUEST_TIMED_OUT: i16 = 7;

#[derive(Default)]
struct Ledger {
    acks: AtomicUsize,
    failures: AtomicUsize,
    reports: AtomicUsize,
    acked: Mutex<Vec<(usize, i32, i64)>>,
    last_failure: Mutex<Option<String>>,
}

impl ClientContext for Ledger {}

impl ProducerContext for Ledger {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        match result {
            Ok(message) => {
                if let Ok(mut acked) = self.acked.lock() {
                    acked.push((*index, message.partition(), message.offset()));
                }
                self.acks.fetch_add(1, Ordering::SeqCst);
            }
            Err((err, _)) => {
                if let Ok(mut last) = self.last_failure.lock() {
                    *last = Some(err.to_string());
                }
                self.failures.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.reports.fetch_add(1, Ordering::SeqCst);
    }
}

/// Sends about `rate` records per second until `stop`; bounded by 5 minutes and 100k records.
fn paced_sender(
    producer: &ThreadedProducer<Ledger>,
    topic: &str,
    rate: u32,
    stop: &AtomicBool,
) -> Result<usize> {
    let started = Instant::now();
    let mut sent = 0usize;
    while !stop.load(Ordering::SeqCst) && sent < 100_000 {
        ensure!(
            started.elapsed() < Duration::from_secs(300),
            "sender ran 5 minutes"
        );
        let due = started + Duration::from_secs_f64(sent as f64 / f64::from(rate));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait.min(Duration::from_millis(50)));
            continue;
        }
        let value = format!("rec-{sent}");
        let record = BaseRecord::<str, String, Box<usize>>::with_opaque_to(topic, Box::new(sent))
            .partition((sent % PARTITIONS as usize) as i32)
            .payload(&value);
        match producer.send(record) {
            Ok(()) => sent += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((err, _)) => bail!("enqueueing record {sent}: {err}"),
        }
    }
    Ok(sent)
}

/// Waits (bounded) until the ledger counts `more` acks beyond `from`.
fn wait_for_acks(
    ledger: &Ledger,
    from: usize,
    more: usize,
    within: Duration,
    what: &str,
) -> Result<()> {
    let deadline = Instant::now() + within;
    while ledger.acks.load(Ordering::SeqCst) < from + more {
        ensure!(
            Instant::now() < deadline,
            "{what}: only {} new acks within {within:?} (failures: {}, last: {:?})",
            ledger.acks.load(Ordering::SeqCst) - from,
            ledger.failures.load(Ordering::SeqCst),
            ledger.last_failure.lock().ok().and_then(|l| l.clone())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// One raw Produce (acks=-1) with `timeout_ms`; returns (error code, base offset, elapsed).
fn raw_produce(addr: &str, topic: &str, timeout_ms: i32) -> Result<(i16, i64, Duration)> {
    let mut connection = RawConnection::connect(addr)?;
    let version = connection.negotiate::<ProduceRequest>(9)?;
    let batch: Bytes = wire::encode_batch(&[b"during-blackout"], 1_000, Compression::None)?;
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let started = Instant::now();
    let response = connection.request(&request, version)?;
    let partition = response
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .context("produce response without a partition")?;
    Ok((
        partition.error_code,
        partition.base_offset,
        started.elapsed(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_faults_and_a_blackout_lose_nothing_and_producers_resume() -> Result<()> {
    let s3 = S3Server::start()?;
    let proxy = FaultProxy::start(s3.addr())?;
    let mut broker = SluiceProcess::start(
        SluiceOptions::default()
            .s3_via(&s3, &proxy.endpoint(), "sluice")
            .object_wal(),
    )?;
    let bootstrap = broker.bootstrap();
    let topic = "faults";
    clients::create_topic(&bootstrap, topic, PARTITIONS, &[]).await?;

    let producer: Arc<ThreadedProducer<Ledger>> = Arc::new(
        clients::producer_config(&bootstrap)
            .set("enable.idempotence", "true")
            // Rides out the 10 s blackout: records wait and are retried, not failed.
            .set("message.timeout.ms", "120000")
            .set("request.timeout.ms", "5000")
            .create_with_context(Ledger::default())
            .context("creating producer")?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let producer = Arc::clone(&producer);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || paced_sender(&producer, topic, 400, &stop))
    };
    let ledger = producer.context();

    wait_for_acks(ledger, 0, 200, Duration::from_secs(30), "before faults")?;

    // Bursts of 500 and 503 SlowDown on WAL PUTs: retried, nobody notices.
    proxy.only_kind(Some(RequestKind::Put));
    proxy.fail_next(15, S3Fault::InternalError);
    let acks = ledger.acks.load(Ordering::SeqCst);
    wait_for_acks(
        ledger,
        acks,
        200,
        Duration::from_secs(30),
        "after a 500 burst",
    )?;
    proxy.fail_next(15, S3Fault::SlowDown);
    let acks = ledger.acks.load(Ordering::SeqCst);
    wait_for_acks(
        ledger,
        acks,
        200,
        Duration::from_secs(30),
        "after a 503 burst",
    )?;
    proxy.only_kind(None);
    ensure!(
        proxy.stats().total_faults() >= 30,
        "faults were not injected: {:?}",
        proxy.stats()
    );

    // Added latency on every request.
    proxy.set_latency(Duration::from_millis(60));
    let acks = ledger.acks.load(Ordering::SeqCst);
    wait_for_acks(
        ledger,
        acks,
        200,
        Duration::from_secs(30),
        "with 60 ms latency",
    )?;
    proxy.set_latency(Duration::ZERO);

    // A 10 s blackout (requests hang, like a partition). Meanwhile a produce with a 1 s timeout
    // is answered REQUEST_TIMED_OUT (retriable) and never acknowledged.
    proxy.blackout(Duration::from_secs(10), BlackoutMode::Hang);
    let blackout_started = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let acks_in_blackout = ledger.acks.load(Ordering::SeqCst);
    let (code, base_offset, elapsed) = raw_produce(&broker.bootstrap(), topic, 1000)?;
    ensure!(
        code == REQUEST_TIMED_OUT,
        "produce during the blackout answered error {code} (offset {base_offset}) after {elapsed:?}"
    );
    ensure!(
        elapsed < Duration::from_secs(5),
        "timeout answer took {elapsed:?}"
    );
    ensure!(broker.is_running(), "broker died during the blackout");
    let remaining = Duration::from_secs(10).saturating_sub(blackout_started.elapsed());
    std::thread::sleep(remaining.saturating_sub(Duration::from_secs(2)));
    // A few acks may land right at the start (PUTs that completed just before); the bulk waits.
    let acks_late_blackout = ledger.acks.load(Ordering::SeqCst);
    ensure!(
        acks_late_blackout.saturating_sub(acks_in_blackout) < 200,
        "{} records were acked while the object store was unreachable",
        acks_late_blackout - acks_in_blackout
    );
    // Producers resume by themselves once the store is back.
    wait_for_acks(
        ledger,
        acks_late_blackout,
        1000,
        Duration::from_secs(90),
        "after the blackout",
    )?;

    stop.store(true, Ordering::SeqCst);
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the producer")?;
    ensure!(broker.is_running(), "broker died");
    let failures = ledger.failures.load(Ordering::SeqCst);
    ensure!(
        failures == 0,
        "{failures} records failed (last: {:?})",
        ledger.last_failure.lock().ok().and_then(|l| l.clone())
    );
    let acked: Vec<(usize, i32, i64)> = ledger
        .acked
        .lock()
        .map_err(|_| anyhow::anyhow!("ledger poisoned"))?
        .clone();
    ensure!(
        acked.len() == sent,
        "{} of {sent} records acked",
        acked.len()
    );

    // Everything acked is there exactly once (idempotent producer: no duplicates), at the offset
    // it was acked with; offsets are dense. The raw produce that timed out may or may not have
    // landed later (a timeout is not a failure) — it is the only record allowed besides these.
    let mut total = 0usize;
    for partition in 0..PARTITIONS {
        let (_, high) = clients::watermarks(&bootstrap, topic, partition)?;
        total += usize::try_from(high)?;
    }
    let messages = clients::consume_from_beginning(
        &bootstrap,
        topic,
        PARTITIONS,
        total,
        Duration::from_secs(120),
    )?;
    ensure!(
        messages.len() == total,
        "consumed {} of {total}",
        messages.len()
    );
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut at: HashMap<(i32, i64), String> = HashMap::new();
    let mut next = [0i64; PARTITIONS as usize];
    for message in &messages {
        let slot = usize::try_from(message.partition())?;
        ensure!(
            message.offset() == next[slot],
            "offsets not dense at {}@{}",
            message.partition(),
            message.offset()
        );
        next[slot] += 1;
        let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string();
        *seen.entry(value.clone()).or_default() += 1;
        at.insert((message.partition(), message.offset()), value);
    }
    for (index, partition, offset) in &acked {
        let want = format!("rec-{index}");
        ensure!(
            at.get(&(*partition, *offset)) == Some(&want),
            "acked record {index} at {partition}@{offset} reads back as {:?}",
            at.get(&(*partition, *offset))
        );
        ensure!(
            seen.get(&want) == Some(&1),
            "record {index} stored {:?} times",
            seen.get(&want)
        );
    }
    let extra = total - acked.len();
    ensure!(extra <= 1, "{extra} records beyond the acked ones");
    eprintln!(
        "sent {sent}, all acked; proxy saw {} PUTs, {} faults",
        proxy.stats().puts(),
        proxy.stats().total_faults()
    );
    Ok(())
}
