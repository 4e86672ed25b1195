//! `loadgen tail-during-catchup`: does a catch-up read starve the produce path?
//!
//! One run, one broker, one clock: the open-loop latency generator of `loadgen latency` produces to a
//! tail topic at a fixed rate; after its warm-up it runs **alone** for `--alone-seconds`, then a
//! catch-up consumer (`loadgen consume`) reads another topic from its start to the end; when that read
//! is done the generator stops. Produce latencies are split by the time each record was sent — alone vs
//! during the read — so the two percentiles come from the same producer, connection and broker state,
//! and the catch-up throughput comes from the same read.
//!
//! Results: the consume outcome (label as given), and a `tail-during-catchup` outcome with
//! `alone_*`/`during_*` latency summaries, `p99_rise_pct` (the "tail-produce p99 rising ≤ 10 %")
//! and the generator's own validity figures.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use crate::consume::{self, ConsumeArgs};
use crate::latency::{self, LatencyArgs};
use crate::report::Outcome;
use crate::stats::LatencySummary;

#[derive(Args, Debug)]
pub(crate) struct TailCatchupArgs {
    /// The tail producer (`--topic` is the tail topic; `--seconds` is ignored: it runs until the
    /// catch-up read ends).
    #[command(flatten)]
    pub(crate) tail: LatencyArgs,
    /// Existing topic read from its start while the tail producer runs.
    #[arg(long)]
    pub(crate) catchup_topic: String,
    /// Measured time the tail producer runs alone before the read starts.
    #[arg(long, default_value_t = 8.0)]
    pub(crate) alone_seconds: f64,
    /// Bound on the catch-up read.
    #[arg(long, default_value_t = 300.0)]
    pub(crate) catchup_max_seconds: f64,
}

/// Slack for the generator's set-up (topic, producer) before its schedule starts.
const SETUP_SLACK: Duration = Duration::from_secs(2);

pub(crate) fn run(args: &TailCatchupArgs) -> Result<Vec<Outcome>> {
    let positive = |value: f64| value.is_finite() && value > 0.0;
    if !positive(args.alone_seconds) || !positive(args.catchup_max_seconds) {
        bail!("--alone-seconds and --catchup-max-seconds must be positive");
    }
    let mut tail = args.tail.clone();
    // Long enough for alone + the whole read; the stop flag ends it earlier.
    tail.seconds = args.alone_seconds + args.catchup_max_seconds + SETUP_SLACK.as_secs_f64();
    let mut catchup_kafka = args.tail.kafka.clone();
    catchup_kafka.topic = args.catchup_topic.clone();
    let consume_args = ConsumeArgs {
        kafka: catchup_kafka,
        bytes: None,
        seconds: args.catchup_max_seconds,
        group: "sluice-loadgen-catchup".to_string(),
    };

    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let (tail_run, read) = std::thread::scope(|scope| {
        let generator = scope.spawn(|| latency::run_with(&tail, started, Some(&stop)));
        // Wait for warm-up + the alone window, bounded; give up early if the generator died.
        let alone_until = Instant::now()
            + SETUP_SLACK
            + Duration::from_secs_f64(tail.warmup_seconds + args.alone_seconds);
        while Instant::now() < alone_until && !generator.is_finished() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let read = if generator.is_finished() {
            Err(anyhow!(
                "the tail producer ended before the catch-up read started"
            ))
        } else {
            let from_ns = started.elapsed().as_nanos() as u64;
            let result = consume::run(&consume_args);
            let to_ns = started.elapsed().as_nanos() as u64;
            result.map(|outcome| (outcome, from_ns, to_ns))
        };
        stop.store(true, Ordering::Relaxed);
        let tail_run = generator
            .join()
            .map_err(|_| anyhow!("the tail producer panicked"));
        (tail_run, read)
    });
    let tail_run = tail_run?.context("tail producer")?;
    let (consume_outcome, from_ns, to_ns) = read.context("catch-up read")?;

    let mut alone = Vec::new();
    let mut during = Vec::new();
    for &(sent_ns, latency_ns) in &tail_run.samples {
        if sent_ns < from_ns {
            alone.push(latency_ns);
        } else if sent_ns <= to_ns {
            during.push(latency_ns);
        }
    }
    let (alone_count, during_count) = (alone.len(), during.len());
    let alone = LatencySummary::from_samples(alone)
        .context("no tail record was measured before the catch-up read")?;
    let during = LatencySummary::from_samples(during)
        .context("no tail record was sent during the catch-up read")?;

    let mut outcome = Outcome::new("tail-during-catchup", &args.tail.kafka.label);
    alone.add_to("alone", outcome.metrics_mut());
    during.add_to("during", outcome.metrics_mut());
    outcome.metric("alone_records", alone_count as f64);
    outcome.metric("during_records", during_count as f64);
    outcome.metric(
        "p99_rise_pct",
        100.0 * (during.p99_ns as f64 / alone.p99_ns.max(1) as f64 - 1.0),
    );
    outcome.metric(
        "p50_rise_pct",
        100.0 * (during.p50_ns as f64 / alone.p50_ns.max(1) as f64 - 1.0),
    );
    outcome.metric("catchup_seconds", (to_ns - from_ns) as f64 / 1e9);
    // The generator's validity figures and the broker meters over the whole tail run.
    for name in [
        "offered_rate_ratio",
        "max_send_lag_ms",
        "queue_full_waits",
        "client_errors",
        "broker_cpu_pct",
        "broker_peak_rss_mib",
        "machine_cpu_pressure_pct",
        "wal_puts_per_s",
        "wal_bytes_per_put_mib",
    ] {
        if let Some(value) = tail_run.outcome.metric_value(name) {
            outcome.metric(name, value);
        }
    }
    outcome.info("tail_topic", args.tail.kafka.topic.as_str());
    outcome.info("catchup_topic", args.catchup_topic.as_str());
    outcome.info("rate_mibps", args.tail.rate_mibps);
    Ok(vec![consume_outcome, outcome])
}
