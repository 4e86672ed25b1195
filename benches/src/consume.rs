//! `loadgen consume`: catch-up read throughput. One consumer is assigned every partition of an existing
//! topic at the earliest offset and reads up to the high watermarks found at start (or a byte bound);
//! the rate is payload bytes over the time from assignment to the last record.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::kafka::{self, ErrorLog, KafkaArgs, ProcessMeters};
use crate::report::Outcome;
use crate::units::{format_size, mib_per_s, parse_size, MIB};

#[derive(Args, Debug)]
pub(crate) struct ConsumeArgs {
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,
    /// Stop after this many payload bytes (default: everything below the high watermarks at start).
    #[arg(long, value_parser = parse_size)]
    pub(crate) bytes: Option<u64>,
    /// Give up after this long.
    #[arg(long, default_value_t = 300.0)]
    pub(crate) seconds: f64,
    /// Consumer group id (librdkafka needs one to assign; nothing is committed).
    #[arg(long, default_value = "sluice-loadgen")]
    pub(crate) group: String,
}

struct ConsumeContext {
    errors: ErrorLog,
}

impl ClientContext for ConsumeContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors
            .record(&kafka::describe_client_error(&error, reason));
    }
}

impl ConsumerContext for ConsumeContext {}

/// Per-partition progress towards the high watermark seen at start.
struct PartitionGoal {
    high_watermark: i64,
    /// Offset the next record should have if the log is read without holes.
    next_offset: i64,
    done: bool,
}

/// Holes and rewinds in the offsets a consumer was given. A catch-up read of a log written by one
/// producer without transactions or compaction must see every offset once, in order: anything else
/// means the broker skipped or repeated data, and the throughput figure would be flattering.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct OffsetCheck {
    gaps: u64,
    skipped_offsets: u64,
    rewinds: u64,
}

/// How many offset anomalies are described on stderr.
const DESCRIBED_ANOMALIES: u64 = 5;

impl OffsetCheck {
    /// Checks `offset` against the partition's expected next offset and advances it.
    fn observe(&mut self, partition: i32, goal: &mut PartitionGoal, offset: i64) {
        if offset > goal.next_offset {
            if self.gaps + self.rewinds < DESCRIBED_ANOMALIES {
                eprintln!(
                    "loadgen: partition {partition}: expected offset {}, got {offset} ({} skipped)",
                    goal.next_offset,
                    offset - goal.next_offset
                );
            }
            self.gaps += 1;
            self.skipped_offsets += (offset - goal.next_offset) as u64;
        } else if offset < goal.next_offset {
            if self.gaps + self.rewinds < DESCRIBED_ANOMALIES {
                eprintln!(
                    "loadgen: partition {partition}: expected offset {}, got {offset} again",
                    goal.next_offset
                );
            }
            self.rewinds += 1;
        }
        goal.next_offset = goal.next_offset.max(offset + 1);
        if goal.next_offset >= goal.high_watermark {
            goal.done = true;
        }
    }
}

const MAX_CONSUME_ERRORS: u64 = 1000;

pub(crate) fn run(args: &ConsumeArgs) -> Result<Outcome> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        bail!("--seconds must be positive");
    }
    let settings = [
        ("group.id", args.group.clone()),
        ("enable.auto.commit", "false".to_string()),
        ("enable.auto.offset.store", "false".to_string()),
        ("auto.offset.reset", "earliest".to_string()),
        ("enable.partition.eof", "false".to_string()),
    ];
    let consumer: BaseConsumer<ConsumeContext> = kafka::client_config(&args.kafka, &settings)
        .create_with_context(ConsumeContext {
            errors: ErrorLog::default(),
        })
        .context("creating the consumer")?;
    let timeout = Duration::from_secs(args.kafka.setup_timeout_secs);
    let metadata = consumer
        .fetch_metadata(Some(&args.kafka.topic), timeout)
        .context("fetching metadata")?;
    let topic = metadata
        .topics()
        .iter()
        .find(|topic| topic.name() == args.kafka.topic)
        .context("topic missing from metadata")?;
    if topic.error().is_some() || topic.partitions().is_empty() {
        bail!(
            "topic {} is not readable: {:?} ({} partitions)",
            args.kafka.topic,
            topic.error(),
            topic.partitions().len()
        );
    }
    let mut goals = Vec::new();
    let mut assignment = TopicPartitionList::new();
    let mut expected_records: i64 = 0;
    for partition in topic.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(&args.kafka.topic, partition.id(), timeout)
            .with_context(|| format!("watermarks of partition {}", partition.id()))?;
        expected_records += (high - low).max(0);
        let index = usize::try_from(partition.id()).context("negative partition id")?;
        if goals.len() <= index {
            goals.resize_with(index + 1, || PartitionGoal {
                high_watermark: 0,
                next_offset: 0,
                done: true,
            });
        }
        goals[index] = PartitionGoal {
            high_watermark: high,
            next_offset: low,
            done: high <= low,
        };
        assignment
            .add_partition_offset(&args.kafka.topic, partition.id(), Offset::Beginning)
            .context("building the assignment")?;
    }
    if expected_records == 0 {
        bail!("topic {} is empty", args.kafka.topic);
    }
    let byte_bound = args.bytes.unwrap_or(u64::MAX);

    let meters = ProcessMeters::start_for(&args.kafka)?;
    let started = Instant::now();
    let give_up = started + Duration::from_secs_f64(args.seconds);
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;
    let mut records: u64 = 0;
    let mut bytes: u64 = 0;
    let mut consume_errors: u64 = 0;
    let mut first_record_at: Option<Instant> = None;
    let mut last_record_at = started;
    let mut timed_out = false;
    let mut offsets = OffsetCheck::default();
    while bytes < byte_bound && goals.iter().any(|goal| !goal.done) {
        if Instant::now() >= give_up {
            timed_out = true;
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
                let now = Instant::now();
                first_record_at.get_or_insert(now);
                last_record_at = now;
                records += 1;
                bytes += message.payload_len() as u64;
                let partition = message.partition();
                let goal = usize::try_from(partition)
                    .ok()
                    .and_then(|index| goals.get_mut(index));
                if let Some(goal) = goal {
                    offsets.observe(partition, goal, message.offset());
                }
            }
            Some(Err(error)) => {
                consume_errors += 1;
                consumer
                    .context()
                    .errors
                    .record(&format!("consume: {error}"));
                if consume_errors > MAX_CONSUME_ERRORS {
                    bail!("more than {MAX_CONSUME_ERRORS} consume errors; last: {error}");
                }
            }
        }
    }
    let seconds = last_record_at.duration_since(started).as_secs_f64();
    if records == 0 {
        bail!(
            "no record consumed in {:.1}s; first client error: {}",
            started.elapsed().as_secs_f64(),
            consumer.context().errors.first().unwrap_or_default()
        );
    }
    if timed_out {
        bail!(
            "only {records} of {expected_records} records ({:.0} MiB) consumed in {}s",
            bytes as f64 / MIB,
            args.seconds
        );
    }

    let mut outcome = Outcome::new("consume", &args.kafka.label);
    outcome.metric("mib_per_s", mib_per_s(bytes, seconds));
    outcome.metric("records_per_s", records as f64 / seconds);
    outcome.metric("records", records as f64);
    outcome.metric("mib", bytes as f64 / MIB);
    outcome.metric("seconds", seconds);
    if let Some(first) = first_record_at {
        outcome.metric(
            "first_record_ms",
            first.duration_since(started).as_secs_f64() * 1e3,
        );
    }
    outcome.metric("client_errors", consumer.context().errors.count() as f64);
    outcome.metric("offset_gaps", offsets.gaps as f64);
    outcome.metric("skipped_offsets", offsets.skipped_offsets as f64);
    outcome.metric("offset_rewinds", offsets.rewinds as f64);
    if args.bytes.is_none() {
        let missing = u64::try_from(expected_records)
            .unwrap_or(0)
            .saturating_sub(records);
        outcome.metric("missing_records", missing as f64);
        if missing > 0 {
            eprintln!(
                "loadgen: WARNING: read {records} of {expected_records} records below the high \
                 watermarks: {missing} missing ({} offsets skipped in {} gaps)",
                offsets.skipped_offsets, offsets.gaps
            );
        }
    }
    meters.finish(&mut outcome);
    outcome.info("topic", args.kafka.topic.as_str());
    outcome.info("partitions", topic.partitions().len());
    outcome.info("expected_records", expected_records);
    if let Some(bound) = args.bytes {
        outcome.info("bytes_bound", format_size(bound));
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal(low: i64, high: i64) -> PartitionGoal {
        PartitionGoal {
            high_watermark: high,
            next_offset: low,
            done: high <= low,
        }
    }

    #[test]
    fn contiguous_offsets_finish_the_partition_cleanly() {
        let mut check = OffsetCheck::default();
        let mut partition = goal(0, 3);
        for offset in 0..3 {
            assert!(!partition.done);
            check.observe(0, &mut partition, offset);
        }
        assert!(partition.done);
        assert_eq!(check, OffsetCheck::default());
    }

    #[test]
    fn holes_and_rewinds_are_counted() {
        let mut check = OffsetCheck::default();
        let mut partition = goal(10, 100);
        check.observe(0, &mut partition, 10);
        check.observe(0, &mut partition, 15);
        check.observe(0, &mut partition, 12);
        check.observe(0, &mut partition, 16);
        assert_eq!(
            check,
            OffsetCheck {
                gaps: 1,
                skipped_offsets: 4,
                rewinds: 1
            }
        );
        assert!(!partition.done);
        check.observe(0, &mut partition, 99);
        assert!(partition.done);
        assert_eq!(check.skipped_offsets, 4 + 82);
    }
}
