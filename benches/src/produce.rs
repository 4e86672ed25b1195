//! `loadgen produce`: closed-loop produce throughput. One producer sends fixed-size records round-robin
//! over the topic's partitions as fast as librdkafka's queue accepts them, for a bounded time and/or
//! byte count, and the rate is acknowledged payload bytes over the time until the last acknowledgement.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::kafka::{self, ErrorLog, KafkaArgs, ProcessMeters};
use crate::payload::PayloadPool;
use crate::report::Outcome;
use crate::units::{format_size, mib_per_s, parse_size, MIB};

#[derive(Args, Debug)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,
    /// Payload bytes per record (no key).
    #[arg(long, default_value_t = 1024)]
    pub(crate) record_size: usize,
    /// Stop sending after this long.
    #[arg(long, default_value_t = 20.0)]
    pub(crate) seconds: f64,
    /// Stop sending after this many payload bytes (e.g. 2G to fill a topic for `consume`).
    #[arg(long, value_parser = parse_size)]
    pub(crate) bytes: Option<u64>,
    /// Producer `acks`.
    #[arg(long, default_value = "all")]
    pub(crate) acks: String,
    /// Producer `linger.ms` (client-side batching).
    #[arg(long, default_value_t = 5)]
    pub(crate) linger_ms: u64,
    /// Compressible payloads (text-like, about 3:1 with lz4) instead of incompressible bytes:
    /// for topics whose `compression.type` makes the broker recompress.
    #[arg(long)]
    pub(crate) compressible: bool,
    /// Bound on waiting for the last acknowledgements after sending stops.
    #[arg(long, default_value_t = 60)]
    pub(crate) flush_timeout_secs: u64,
}

/// Counts acknowledgements in librdkafka's delivery-report thread.
struct ProduceContext {
    started: Instant,
    acked_records: AtomicU64,
    acked_bytes: AtomicU64,
    failed_records: AtomicU64,
    last_ack_ns: AtomicU64,
    errors: ErrorLog,
}

impl ClientContext for ProduceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors
            .record(&kafka::describe_client_error(&error, reason));
    }
}

impl ProducerContext for ProduceContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                self.acked_records.fetch_add(1, Ordering::Relaxed);
                self.acked_bytes
                    .fetch_add(message.payload_len() as u64, Ordering::Relaxed);
                let now_ns = self.started.elapsed().as_nanos() as u64;
                self.last_ack_ns.fetch_max(now_ns, Ordering::Relaxed);
            }
            Err((error, _)) => {
                self.failed_records.fetch_add(1, Ordering::Relaxed);
                self.errors.record(&format!("delivery failed: {error}"));
            }
        }
    }
}

/// Longest single wait for room in librdkafka's queue; short, so the deadline is noticed promptly.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_micros(200);

pub(crate) fn run(args: &ProduceArgs) -> Result<Outcome> {
    if args.record_size == 0 || args.seconds.is_nan() || args.seconds <= 0.0 {
        bail!("--record-size and --seconds must be positive");
    }
    let partitions = kafka::ensure_topic(&args.kafka)?;
    let settings = [
        ("acks", args.acks.clone()),
        ("linger.ms", args.linger_ms.to_string()),
        ("compression.type", "none".to_string()),
        ("enable.idempotence", "false".to_string()),
        // Bounds client memory: at most 64 MiB of records wait in the producer.
        ("queue.buffering.max.kbytes", (64 * 1024).to_string()),
        ("message.timeout.ms", "120000".to_string()),
    ];
    let context = ProduceContext {
        started: Instant::now(),
        acked_records: AtomicU64::new(0),
        acked_bytes: AtomicU64::new(0),
        failed_records: AtomicU64::new(0),
        last_ack_ns: AtomicU64::new(0),
        errors: ErrorLog::default(),
    };
    let producer: ThreadedProducer<ProduceContext> = kafka::client_config(&args.kafka, &settings)
        .create_with_context(context)
        .context("creating the producer")?;
    let pool = if args.compressible {
        PayloadPool::compressible(args.record_size)
    } else {
        PayloadPool::new(args.record_size)
    };
    let max_records = args
        .bytes
        .map(|bytes| bytes.div_ceil(args.record_size as u64))
        .unwrap_or(u64::MAX);
    let meters = ProcessMeters::start_for(&args.kafka)?;

    let context = producer.context().clone();
    // Acknowledgement times are measured from the context's creation; the clock of the run starts
    // here, after the producer exists, so client start-up is not charged to the broker.
    let send_start_ns = context.started.elapsed().as_nanos() as u64;
    let send_until = Instant::now() + Duration::from_secs_f64(args.seconds);
    let mut sent: u64 = 0;
    let mut queue_full_waits: u64 = 0;
    'sending: while sent < max_records {
        if Instant::now() >= send_until || context.failed_records.load(Ordering::Relaxed) > 0 {
            break;
        }
        let partition = (sent % partitions as u64) as i32;
        let mut record: BaseRecord<'_, (), [u8], ()> = BaseRecord::to(&args.kafka.topic)
            .payload(pool.get(sent))
            .partition(partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    queue_full_waits += 1;
                    if Instant::now() >= send_until {
                        break 'sending;
                    }
                    record = returned;
                    std::thread::sleep(QUEUE_FULL_BACKOFF);
                }
                Err((error, _)) => bail!("producing record {sent}: {error}"),
            }
        }
        sent += 1;
    }
    let send_seconds =
        (context.started.elapsed().as_nanos() as u64).saturating_sub(send_start_ns) as f64 / 1e9;
    let flushed = producer.flush(Duration::from_secs(args.flush_timeout_secs));

    let acked_records = context.acked_records.load(Ordering::Relaxed);
    let acked_bytes = context.acked_bytes.load(Ordering::Relaxed);
    let failed = context.failed_records.load(Ordering::Relaxed);
    let seconds = context
        .last_ack_ns
        .load(Ordering::Relaxed)
        .saturating_sub(send_start_ns) as f64
        / 1e9;
    if failed > 0 {
        bail!(
            "{failed} of {sent} records failed; first error: {}",
            context.errors.first().unwrap_or_default()
        );
    }
    if let Err(error) = flushed {
        bail!(
            "{} records still unacknowledged after flush: {error}",
            sent - acked_records
        );
    }
    if acked_records == 0 {
        bail!(
            "no record was acknowledged; first client error: {}",
            context.errors.first().unwrap_or_default()
        );
    }

    let mut outcome = Outcome::new("produce", &args.kafka.label);
    outcome.metric("mib_per_s", mib_per_s(acked_bytes, seconds));
    outcome.metric("records_per_s", acked_records as f64 / seconds);
    outcome.metric("records", acked_records as f64);
    outcome.metric("mib", acked_bytes as f64 / MIB);
    outcome.metric("seconds", seconds);
    outcome.metric("send_seconds", send_seconds);
    outcome.metric("queue_full_waits", queue_full_waits as f64);
    outcome.metric("client_errors", context.errors.count() as f64);
    meters.finish(&mut outcome);
    outcome.info("topic", args.kafka.topic.as_str());
    outcome.info("partitions", partitions);
    outcome.info("record_size", args.record_size);
    outcome.info("acks", args.acks.as_str());
    outcome.info("linger_ms", args.linger_ms);
    if let Some(bytes) = args.bytes {
        outcome.info("bytes_bound", format_size(bytes));
    }
    Ok(outcome)
}
