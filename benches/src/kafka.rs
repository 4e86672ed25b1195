//! What every Kafka scenario shares: the common command-line arguments, the client configuration
//! (scenario defaults, then `-X key=value` overrides from the command line), a client context that
//! surfaces librdkafka errors instead of dropping them, creating the topic, and measuring the broker
//! process (CPU share, peak RSS) around a scenario.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::brokermetrics::MetricsMeter;
use crate::procstat::{self, CpuMeter};
use crate::report::Outcome;

#[derive(Args, Debug, Clone)]
pub(crate) struct KafkaArgs {
    /// Broker address (the `kafka` entry of the broker's ready file).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub(crate) bootstrap: String,
    /// Topic to use; created with `--partitions` if it does not exist.
    #[arg(long)]
    pub(crate) topic: String,
    /// Partitions of the topic when this run creates it.
    #[arg(long, default_value_t = 6)]
    pub(crate) partitions: i32,
    /// Topic config for a topic this run creates, `--topic-config key=value` (repeatable), e.g.
    /// `compression.type=zstd`.
    #[arg(long = "topic-config", value_parser = parse_key_value)]
    pub(crate) topic_configs: Vec<(String, String)>,
    /// Extra librdkafka setting, `-X key=value` (repeatable; wins over the scenario's defaults).
    #[arg(short = 'X', value_parser = parse_key_value)]
    pub(crate) extra: Vec<(String, String)>,
    /// PID of the broker: adds its CPU share and peak RSS to the results.
    #[arg(long)]
    pub(crate) broker_pid: Option<u32>,
    /// Label stored with the result, to tell apart runs of one scenario with different purposes.
    #[arg(long, default_value = "")]
    pub(crate) label: String,
    /// Bound on topic creation and metadata discovery.
    #[arg(long, default_value_t = 30)]
    pub(crate) setup_timeout_secs: u64,
    /// The broker's HTTP listener (`host:port`): its `/metrics` is scraped before and after the
    /// scenario (S3 WAL PUTs, GETs, block cache).
    #[arg(long)]
    pub(crate) metrics_addr: Option<String>,
    /// The broker's `--wal-linger-ms`, for the "one PUT per 4 MiB or per linger window" check.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) wal_linger_ms: f64,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected key=value, got {text:?}")),
    }
}

/// Client configuration: the bootstrap address, then the scenario's settings, then `-X` overrides.
pub(crate) fn client_config(
    args: &KafkaArgs,
    scenario_settings: &[(&str, String)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &args.bootstrap);
    config.set("client.id", "sluice-loadgen");
    for (key, value) in scenario_settings {
        config.set(*key, value);
    }
    for (key, value) in &args.extra {
        config.set(key, value);
    }
    config
}

/// Collects librdkafka's asynchronous errors (connection refused, broker down …): the first few are
/// printed, all are counted, so a run against a sick broker does not look merely slow.
#[derive(Debug, Default)]
pub(crate) struct ErrorLog {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

const PRINTED_ERRORS: u64 = 10;

impl ErrorLog {
    pub(crate) fn record(&self, error: &str) {
        let number = self.count.fetch_add(1, Ordering::Relaxed);
        if number < PRINTED_ERRORS {
            eprintln!("loadgen: client error: {error}");
        }
        if let Ok(mut first) = self.first.lock() {
            first.get_or_insert_with(|| error.to_string());
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn first(&self) -> Option<String> {
        self.first.lock().ok().and_then(|first| first.clone())
    }
}

/// Formats a librdkafka global error the same way for every context.
pub(crate) fn describe_client_error(error: &KafkaError, reason: &str) -> String {
    format!("{error}: {reason}")
}

const CREATE_TOPIC_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes sure `args.topic` exists and returns its partition count.
///
/// An existing topic is used as it is. Otherwise CreateTopics is tried; if the broker refuses it for
/// any reason other than "already exists", the topic may still appear through auto-creation on a
/// producer's metadata request, so the error is only printed. Then waits (bounded by
/// `setup_timeout_secs`) until metadata shows every partition with a leader.
pub(crate) fn ensure_topic(args: &KafkaArgs) -> Result<i32> {
    let timeout = Duration::from_secs(args.setup_timeout_secs);
    // A consumer without a group asks for metadata without auto-creating the topic.
    let observer: BaseConsumer =
        client_config(args, &[("allow.auto.create.topics", "false".into())])
            .create()
            .context("creating the metadata client")?;
    let exists = observer
        .fetch_metadata(Some(&args.topic), timeout)
        .map(|metadata| usable_partitions(&metadata, &args.topic).is_ok())
        .unwrap_or(false);
    if !exists {
        create_topic(args, timeout)?;
    }

    // A producer's metadata request may auto-create the topic.
    let probe: BaseProducer = client_config(args, &[])
        .create()
        .context("creating the metadata client")?;
    let deadline = Instant::now() + timeout;
    loop {
        let problem = match probe
            .client()
            .fetch_metadata(Some(&args.topic), Duration::from_secs(5))
        {
            Ok(metadata) => match usable_partitions(&metadata, &args.topic) {
                Ok(count) => {
                    if count != args.partitions {
                        eprintln!(
                            "loadgen: topic {} has {count} partitions, not the {} asked for",
                            args.topic, args.partitions
                        );
                    }
                    return Ok(count);
                }
                Err(problem) => problem,
            },
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            bail!(
                "topic {} not usable within {timeout:?} at {}: {problem}",
                args.topic,
                args.bootstrap
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Partition count of `topic` if metadata shows it without error and with a leader for every
/// partition; otherwise what is wrong.
fn usable_partitions(metadata: &Metadata, topic: &str) -> Result<i32, String> {
    let Some(topic) = metadata.topics().iter().find(|entry| entry.name() == topic) else {
        return Err("topic missing from metadata".to_string());
    };
    if let Some(error) = topic.error() {
        return Err(format!("topic error {error:?}"));
    }
    if topic.partitions().is_empty() {
        return Err("topic has no partitions".to_string());
    }
    if topic
        .partitions()
        .iter()
        .any(|partition| partition.leader() < 0)
    {
        return Err("a partition has no leader".to_string());
    }
    i32::try_from(topic.partitions().len()).map_err(|_| "absurd partition count".to_string())
}

/// Sends CreateTopics; failures other than "already exists" are printed, not returned (with
/// `--topic-config` they fail the run: an auto-created topic would lack them).
fn create_topic(args: &KafkaArgs, timeout: Duration) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(args, &[])
        .create()
        .context("creating the admin client")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a runtime for the admin client")?;
    let mut new_topic = NewTopic::new(&args.topic, args.partitions, TopicReplication::Fixed(1));
    for (key, value) in &args.topic_configs {
        new_topic = new_topic.set(key, value);
    }
    // A broker without CreateTopics (librdkafka's mock) never answers: don't spend the whole
    // set-up time on it.
    let create_timeout = timeout.min(CREATE_TOPIC_TIMEOUT);
    let options = AdminOptions::new()
        .request_timeout(Some(create_timeout))
        .operation_timeout(Some(create_timeout));
    match runtime.block_on(admin.create_topics([&new_topic], &options)) {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) if !args.topic_configs.is_empty() => {
                        bail!(
                            "CreateTopics {topic} with {:?} failed ({code})",
                            args.topic_configs
                        )
                    }
                    Err((topic, code)) => eprintln!(
                        "loadgen: CreateTopics {topic} failed ({code}); relying on auto-creation"
                    ),
                }
            }
        }
        Err(error) => {
            eprintln!("loadgen: CreateTopics failed ({error}); relying on auto-creation")
        }
    }
    Ok(())
}

/// The broker's PID, its CPU meter and its threads' (on-CPU, waiting) nanoseconds at the start.
type BrokerMeters = (u32, CpuMeter, Option<(u64, u64)>);

/// Meters started together around a scenario: CPU share and scheduler wait of the broker (if its PID
/// is known) and of this process, and how contended the whole machine was (pressure stall
/// information). On a shared machine the last two say how much of a figure is the neighbours'.
pub(crate) struct ProcessMeters {
    broker: Option<BrokerMeters>,
    own: Option<CpuMeter>,
    started: Instant,
    cpu_pressure_us: Option<u64>,
    io_pressure_us: Option<u64>,
    metrics: Option<MetricsMeter>,
}

impl ProcessMeters {
    pub(crate) fn start(broker_pid: Option<u32>) -> Result<ProcessMeters> {
        let broker = match broker_pid {
            Some(pid) => Some((
                pid,
                CpuMeter::start(pid).with_context(|| format!("broker pid {pid}"))?,
                procstat::read_sched_times(pid).ok(),
            )),
            None => None,
        };
        Ok(ProcessMeters {
            broker,
            own: CpuMeter::start(std::process::id()).ok(),
            started: Instant::now(),
            cpu_pressure_us: procstat::read_pressure_some_us("cpu").ok(),
            io_pressure_us: procstat::read_pressure_some_us("io").ok(),
            metrics: None,
        })
    }

    /// [`ProcessMeters::start`] for a Kafka scenario: also scrapes the broker's `/metrics` when
    /// `--metrics-addr` is given (a failed scrape fails the scenario: the figures were asked for).
    pub(crate) fn start_for(args: &KafkaArgs) -> Result<ProcessMeters> {
        let mut meters = ProcessMeters::start(args.broker_pid)?;
        if let Some(addr) = &args.metrics_addr {
            meters.metrics = Some(
                MetricsMeter::start(addr, args.wal_linger_ms)
                    .with_context(|| format!("scraping the broker's /metrics at {addr}"))?,
            );
        }
        Ok(meters)
    }

    /// Adds `broker_cpu_pct`, `broker_runqueue_wait_pct`, `broker_peak_rss_mib`, `broker_rss_mib`,
    /// `loadgen_cpu_pct`, `machine_cpu_pressure_pct` and `machine_io_pressure_pct`; with
    /// `--metrics-addr`, the broker's counters too (see [`crate::brokermetrics::add_deltas`]).
    pub(crate) fn finish(&self, outcome: &mut Outcome) {
        let wall_us = self.started.elapsed().as_micros() as f64;
        if let Some(metrics) = &self.metrics {
            metrics.finish(outcome);
        }
        if let Some((pid, meter, sched_start)) = &self.broker {
            match meter.finish() {
                Ok((_, percent)) => outcome.metric("broker_cpu_pct", percent),
                Err(error) => eprintln!("loadgen: broker cpu: {error:#}"),
            }
            if let (Some((_, wait_start)), Ok((_, wait_end))) =
                (sched_start, procstat::read_sched_times(*pid))
            {
                // Time the broker's threads were runnable but had no CPU, as a share of wall time
                // (summed over threads, so it can exceed 100).
                let waited_us = wait_end.saturating_sub(*wait_start) as f64 / 1e3;
                if wall_us > 0.0 {
                    outcome.metric("broker_runqueue_wait_pct", 100.0 * waited_us / wall_us);
                }
            }
            match procstat::read_memory(*pid) {
                Ok(memory) => {
                    outcome.metric("broker_peak_rss_mib", memory.peak_rss_mib());
                    outcome.metric("broker_rss_mib", memory.rss_mib());
                }
                Err(error) => eprintln!("loadgen: broker memory: {error:#}"),
            }
        }
        if let Some(meter) = &self.own {
            if let Ok((_, percent)) = meter.finish() {
                outcome.metric("loadgen_cpu_pct", percent);
            }
        }
        for (resource, start, metric) in [
            ("cpu", self.cpu_pressure_us, "machine_cpu_pressure_pct"),
            ("io", self.io_pressure_us, "machine_io_pressure_pct"),
        ] {
            if let (Some(start), Ok(end)) = (start, procstat::read_pressure_some_us(resource)) {
                if wall_us > 0.0 {
                    outcome.metric(metric, 100.0 * end.saturating_sub(start) as f64 / wall_us);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_parse() {
        assert_eq!(
            parse_key_value("linger.ms=5"),
            Ok(("linger.ms".to_string(), "5".to_string()))
        );
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_string(), "b=c".to_string()))
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn command_line_overrides_win() {
        let args = KafkaArgs {
            bootstrap: "127.0.0.1:1".to_string(),
            topic: "t".to_string(),
            partitions: 6,
            topic_configs: Vec::new(),
            extra: vec![("linger.ms".to_string(), "7".to_string())],
            broker_pid: None,
            label: String::new(),
            setup_timeout_secs: 1,
            metrics_addr: None,
            wal_linger_ms: 5.0,
        };
        let config = client_config(
            &args,
            &[("linger.ms", "0".to_string()), ("acks", "all".to_string())],
        );
        assert_eq!(config.get("linger.ms"), Some("7"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:1"));
    }

    #[test]
    fn error_log_counts_and_keeps_first() {
        let log = ErrorLog::default();
        log.record("one");
        log.record("two");
        assert_eq!(log.count(), 2);
        assert_eq!(log.first().as_deref(), Some("one"));
    }
}
