//! `loadgen latency`: open-loop produce latency at a fixed offered rate.
//!
//! Record `i` is due at `i / rate` seconds after the start, whatever happened to earlier records (open
//! loop: a slow broker does not slow the offered load down, so it cannot hide its own stalls). With
//! `linger.ms=0` the client sends as soon as it can, so the figure is the broker's, not the client's
//! batching. Two latencies are kept per record, both ending at the delivery report:
//! - `ack_*` from the moment `send` was called (the "send to delivery report");
//! - `sched_ack_*` from the moment the record was due, which also charges any delay of the generator
//!   itself (coordinated-omission-free; on a healthy run the two are close).
//!
//! Records of the first `--warmup-seconds` are sent but not counted (connection set-up, first metadata).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
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
use crate::stats::LatencySummary;
use crate::units::{mib_per_s, MIB};

#[derive(Args, Debug, Clone)]
pub(crate) struct LatencyArgs {
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub(crate) record_size: usize,
    /// Offered load in MiB/s of payload.
    #[arg(long, default_value_t = 20.0)]
    pub(crate) rate_mibps: f64,
    /// Offered load in records per second instead (overrides `--rate-mibps`): e.g. the issue's
    /// "2,000 records/s of 1 KiB", which is 1.953 MiB/s.
    #[arg(long)]
    pub(crate) rate_records: Option<f64>,
    /// Measured period (after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    pub(crate) seconds: f64,
    /// Sent but not measured.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) warmup_seconds: f64,
    /// Producer `acks`.
    #[arg(long, default_value = "all")]
    pub(crate) acks: String,
    /// Producer `linger.ms`; 0 so that the latency is the broker's.
    #[arg(long, default_value_t = 0)]
    pub(crate) linger_ms: u64,
    /// Bound on waiting for the last acknowledgements.
    #[arg(long, default_value_t = 30)]
    pub(crate) drain_timeout_secs: u64,
    /// Also write every measured record as "seconds_since_start latency_ms" to this file, to see
    /// when slow acknowledgements happen (stalls, periodic work in the broker).
    #[arg(long)]
    pub(crate) samples_out: Option<std::path::PathBuf>,
}

impl LatencyArgs {
    /// The offered rate in records per second: `--rate-records`, else `--rate-mibps` of
    /// `--record-size` records.
    pub(crate) fn records_per_second(&self) -> f64 {
        self.rate_records
            .unwrap_or(self.rate_mibps * MIB / self.record_size as f64)
    }
}

/// Upper bound of records in one run (8 bytes of bookkeeping each).
const MAX_RECORDS: u64 = 50_000_000;
/// How far past its schedule the generator may run before giving up on the run.
const SCHEDULE_GRACE: Duration = Duration::from_secs(10);

/// Records send times and turns delivery reports into latency samples.
struct LatencyContext {
    started: Instant,
    /// Nanoseconds since `started` at which record `i` was handed to `send`.
    sent_at_ns: Vec<AtomicU64>,
    /// Nanoseconds between two due times.
    interval_ns: f64,
    /// Nanoseconds since `started` at which record 0 is due (set once, before the first send).
    schedule_origin_ns: AtomicU64,
    /// Records below this index are warm-up.
    first_measured: u64,
    samples: Mutex<Samples>,
    failed_records: AtomicU64,
    errors: ErrorLog,
}

#[derive(Default)]
struct Samples {
    from_send_ns: Vec<u64>,
    /// When each `from_send_ns` sample's record was sent (nanoseconds since `started`).
    sent_ns: Vec<u64>,
    from_due_ns: Vec<u64>,
    last_ack_ns: u64,
}

impl LatencyContext {
    /// Nanoseconds since `started` at which record `index` is due.
    fn due_ns(&self, index: u64) -> u64 {
        self.schedule_origin_ns.load(Ordering::Relaxed) + (index as f64 * self.interval_ns) as u64
    }
}

impl ClientContext for LatencyContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors
            .record(&kafka::describe_client_error(&error, reason));
    }
}

impl ProducerContext for LatencyContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let now_ns = self.started.elapsed().as_nanos() as u64;
        if let Err((error, _)) = result {
            self.failed_records.fetch_add(1, Ordering::Relaxed);
            self.errors.record(&format!("delivery failed: {error}"));
            return;
        }
        let index = index as u64;
        let Some(sent_at) = self.sent_at_ns.get(index as usize) else {
            return;
        };
        // Acquire pairs with the Release store made before `send`.
        let sent_ns = sent_at.load(Ordering::Acquire);
        if let Ok(mut samples) = self.samples.lock() {
            samples.last_ack_ns = samples.last_ack_ns.max(now_ns);
            if index >= self.first_measured {
                samples.from_send_ns.push(now_ns.saturating_sub(sent_ns));
                samples.sent_ns.push(sent_ns);
                samples
                    .from_due_ns
                    .push(now_ns.saturating_sub(self.due_ns(index)));
            }
        }
    }
}

pub(crate) fn run(args: &LatencyArgs) -> Result<Outcome> {
    run_with(args, Instant::now(), None).map(|run| run.outcome)
}

/// A latency run with its raw samples, for scenarios that slice it by time.
pub(crate) struct LatencyRun {
    pub(crate) outcome: Outcome,
    /// Per measured record, in acknowledgement order: (sent, latency send→ack), nanoseconds;
    /// "sent" counts from the `started` given to [`run_with`].
    pub(crate) samples: Vec<(u64, u64)>,
}

/// [`run`] with the clock origin chosen by the caller (so it can relate its own events to the
/// samples) and an optional `stop` flag: once it is set, sending ends early — a normal end, not a
/// generator that fell behind — and the records sent so far are drained and measured.
pub(crate) fn run_with(
    args: &LatencyArgs,
    started: Instant,
    stop: Option<&AtomicBool>,
) -> Result<LatencyRun> {
    let valid = |value: f64| value.is_finite() && value > 0.0;
    if args.record_size == 0 || !valid(args.rate_mibps) || !valid(args.seconds) {
        bail!("--record-size, --rate-mibps and --seconds must be positive");
    }
    if args.rate_records.is_some_and(|rate| !valid(rate)) {
        bail!("--rate-records must be positive");
    }
    if !(args.warmup_seconds.is_finite() && args.warmup_seconds >= 0.0) {
        bail!("--warmup-seconds must be zero or positive");
    }
    let records_per_second = args.records_per_second();
    let first_measured = (args.warmup_seconds * records_per_second).ceil() as u64;
    let total_records = first_measured + (args.seconds * records_per_second).ceil() as u64;
    if total_records > MAX_RECORDS {
        bail!("{total_records} records exceed the bound of {MAX_RECORDS}; lower the rate or time");
    }
    let partitions = kafka::ensure_topic(&args.kafka)?;
    let settings = [
        ("acks", args.acks.clone()),
        ("linger.ms", args.linger_ms.to_string()),
        ("compression.type", "none".to_string()),
        ("enable.idempotence", "false".to_string()),
        ("message.timeout.ms", "60000".to_string()),
    ];
    let context = LatencyContext {
        started,
        sent_at_ns: (0..total_records).map(|_| AtomicU64::new(0)).collect(),
        interval_ns: 1e9 / records_per_second,
        schedule_origin_ns: AtomicU64::new(0),
        first_measured,
        samples: Mutex::new(Samples {
            from_send_ns: Vec::with_capacity((total_records - first_measured) as usize),
            from_due_ns: Vec::with_capacity((total_records - first_measured) as usize),
            sent_ns: Vec::with_capacity((total_records - first_measured) as usize),
            last_ack_ns: 0,
        }),
        failed_records: AtomicU64::new(0),
        errors: ErrorLog::default(),
    };
    let producer: ThreadedProducer<LatencyContext> = kafka::client_config(&args.kafka, &settings)
        .create_with_context(context)
        .context("creating the producer")?;
    let pool = PayloadPool::new(args.record_size);
    let context = producer.context().clone();
    // The schedule is laid from here: producer creation is not part of it.
    context.schedule_origin_ns.store(
        context.started.elapsed().as_nanos() as u64,
        Ordering::Relaxed,
    );
    let give_up_ns = context.due_ns(total_records) + SCHEDULE_GRACE.as_nanos() as u64;

    let meters = ProcessMeters::start_for(&args.kafka)?;
    let mut sent: u64 = 0;
    let mut queue_full_waits: u64 = 0;
    let mut max_send_lag_ns: u64 = 0;
    let mut first_measured_send_ns: Option<u64> = None;
    let mut last_send_ns: u64 = 0;
    let mut stopped = false;
    'sending: while sent < total_records {
        if stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            stopped = true;
            break;
        }
        let due_ns = context.due_ns(sent);
        let now_ns = context.started.elapsed().as_nanos() as u64;
        if now_ns < due_ns {
            std::thread::sleep(Duration::from_nanos(due_ns - now_ns));
        }
        if context.failed_records.load(Ordering::Relaxed) > 0 {
            break;
        }
        let send_ns = context.started.elapsed().as_nanos() as u64;
        if send_ns > give_up_ns {
            break;
        }
        max_send_lag_ns = max_send_lag_ns.max(send_ns.saturating_sub(due_ns));
        if sent == first_measured {
            first_measured_send_ns = Some(send_ns);
        }
        last_send_ns = send_ns;
        context.sent_at_ns[sent as usize].store(send_ns, Ordering::Release);
        let partition = (sent % partitions as u64) as i32;
        let mut record: BaseRecord<'_, (), [u8], usize> =
            BaseRecord::with_opaque_to(&args.kafka.topic, sent as usize)
                .payload(pool.get(sent))
                .partition(partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    // The broker is so far behind that 100k records wait: the run is already lost.
                    queue_full_waits += 1;
                    if context.started.elapsed().as_nanos() as u64 > give_up_ns {
                        break 'sending;
                    }
                    record = returned;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((error, _)) => bail!("producing record {sent}: {error}"),
            }
        }
        sent += 1;
    }
    let flushed = producer.flush(Duration::from_secs(args.drain_timeout_secs));
    let failed = context.failed_records.load(Ordering::Relaxed);
    if failed > 0 {
        bail!(
            "{failed} records failed; first error: {}",
            context.errors.first().unwrap_or_default()
        );
    }
    if let Err(error) = flushed {
        bail!(
            "records still unacknowledged after {}s: {error}",
            args.drain_timeout_secs
        );
    }
    if sent < total_records && !stopped {
        bail!(
            "the generator fell more than {SCHEDULE_GRACE:?} behind its schedule after {sent} of \
             {total_records} records; the machine cannot offer this rate"
        );
    }
    let samples = match context.samples.lock() {
        Ok(mut samples) => std::mem::take(&mut *samples),
        Err(_) => bail!("a delivery callback panicked"),
    };
    let measured = samples.from_send_ns.len() as u64;
    if let Some(path) = &args.samples_out {
        write_samples(path, &samples.sent_ns, &samples.from_send_ns)?;
    }
    let pairs: Vec<(u64, u64)> = samples
        .sent_ns
        .iter()
        .copied()
        .zip(samples.from_send_ns.iter().copied())
        .collect();
    let from_send = LatencySummary::from_samples(samples.from_send_ns)
        .context("no measured record was acknowledged")?;
    let from_due = LatencySummary::from_samples(samples.from_due_ns)
        .context("no measured record was acknowledged")?;

    let mut outcome = Outcome::new("latency", &args.kafka.label);
    from_send.add_to("ack", outcome.metrics_mut());
    from_due.add_to("sched_ack", outcome.metrics_mut());
    let offered = records_per_second * args.record_size as f64 / MIB;
    let send_window_s = first_measured_send_ns
        .map(|first| last_send_ns.saturating_sub(first) as f64 / 1e9)
        .unwrap_or(0.0);
    // Rate at which the measured records were really handed to the client.
    let achieved = mib_per_s(
        measured.saturating_sub(1) * args.record_size as u64,
        send_window_s,
    );
    outcome.metric("offered_mib_per_s", offered);
    outcome.metric("offered_records_per_s", records_per_second);
    outcome.metric("achieved_mib_per_s", achieved);
    outcome.metric("offered_rate_ratio", achieved / offered);
    outcome.metric("measured_records", measured as f64);
    outcome.metric("max_send_lag_ms", max_send_lag_ns as f64 / 1e6);
    outcome.metric("queue_full_waits", queue_full_waits as f64);
    outcome.metric("client_errors", context.errors.count() as f64);
    outcome.metric(
        "drain_ms",
        samples.last_ack_ns.saturating_sub(last_send_ns) as f64 / 1e6,
    );
    meters.finish(&mut outcome);
    outcome.info("topic", args.kafka.topic.as_str());
    outcome.info("partitions", partitions);
    outcome.info("record_size", args.record_size);
    outcome.info("acks", args.acks.as_str());
    outcome.info("linger_ms", args.linger_ms);
    outcome.info("warmup_seconds", args.warmup_seconds);
    if stopped {
        outcome.info("stopped_early_after_records", sent);
    }
    Ok(LatencyRun {
        outcome,
        samples: pairs,
    })
}

/// Writes "seconds_since_start latency_ms" lines, in acknowledgement order.
fn write_samples(path: &std::path::Path, sent_ns: &[u64], latency_ns: &[u64]) -> Result<()> {
    use std::io::Write as _;
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for (&sent, &latency) in sent_ns.iter().zip(latency_ns) {
        writeln!(out, "{:.6} {:.3}", sent as f64 / 1e9, latency as f64 / 1e6)?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}
