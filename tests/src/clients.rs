//! rdkafka client builders with test-friendly settings, and small helpers on top of them
//! (produce-and-count, bounded consume, topic creation).
//!
//! Timeouts are short so a broker bug fails a test in seconds, not minutes; the partitioner is
//! `murmur2_random` to match the Java client (librdkafka's default is CRC32-based).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

/// Bound on metadata/admin round trips made by helpers.
pub const OP_TIMEOUT: Duration = Duration::from_secs(15);

/// Common settings for every client.
pub fn base_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "sluice-e2e")
        // Fail fast instead of backing off for long when the broker is down.
        .set("reconnect.backoff.max.ms", "500")
        .set("socket.timeout.ms", "30000")
        .set("log_level", "4");
    config
}

/// Producer settings: acks=all, short delivery timeout, Java-compatible partitioner.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = base_config(bootstrap);
    config
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .set("request.timeout.ms", "10000")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random");
    config
}

/// A `FutureProducer` with [`producer_config`].
pub fn producer(bootstrap: &str) -> Result<FutureProducer> {
    producer_config(bootstrap)
        .create()
        .context("creating producer")
}

/// Consumer settings for `assign()`-based consumption: no commits, start from the earliest
/// offset when asked for a logical offset. librdkafka refuses `assign()` without a `group.id`
/// ("Unknown group"), so one is set, but nothing here joins the group or commits to it.
pub fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut config = base_config(bootstrap);
    config
        .set("group.id", "sluice-e2e-assign")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100");
    config
}

/// A `BaseConsumer` with [`consumer_config`].
pub fn consumer(bootstrap: &str) -> Result<BaseConsumer> {
    consumer_config(bootstrap)
        .create()
        .context("creating consumer")
}

/// An admin client.
pub fn admin(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>> {
    base_config(bootstrap)
        .create()
        .context("creating admin client")
}

/// Admin options with a bounded operation timeout.
pub fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(OP_TIMEOUT))
        .operation_timeout(Some(OP_TIMEOUT))
}

/// Creates one topic with `partitions` partitions and the given configs; fails on any error.
pub async fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<()> {
    let admin = admin(bootstrap)?;
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    let results = admin
        .create_topics([&new_topic], &admin_options())
        .await
        .with_context(|| format!("CreateTopics {topic}"))?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("CreateTopics {name} failed: {code:?}");
        }
    }
    Ok(())
}

/// Topic partition list assigning `partitions` of `topic`, each starting at `offset`.
pub fn assignment(topic: &str, partitions: i32, offset: Offset) -> Result<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(topic, partition, offset)
            .context("building assignment")?;
    }
    Ok(list)
}

/// Assigns all `partitions` of `topic` from the beginning and polls until `expected` messages
/// arrived or `timeout` passed. Returns what arrived (possibly fewer than expected: callers
/// assert). Consumer errors are retried until the deadline, since a broker restart or a leader
/// change legitimately produces transient errors.
pub fn consume_from_beginning(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
) -> Result<Vec<OwnedMessage>> {
    let consumer = consumer(bootstrap)?;
    consumer
        .assign(&assignment(topic, partitions, Offset::Beginning)?)
        .context("assign")?;
    consume_n(&consumer, expected, timeout)
}

/// Polls `consumer` until `expected` messages arrived or `timeout` passed.
pub fn consume_n(
    consumer: &BaseConsumer,
    expected: usize,
    timeout: Duration,
) -> Result<Vec<OwnedMessage>> {
    let deadline = Instant::now() + timeout;
    let mut messages = Vec::with_capacity(expected);
    let mut last_error: Option<KafkaError> = None;
    while messages.len() < expected && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => messages.push(message.detach()),
            Some(Err(err)) => last_error = Some(err),
            None => {}
        }
    }
    if messages.len() < expected {
        if let Some(err) = last_error {
            eprintln!(
                "consume_n: got {} of {expected} messages; last consumer error: {err}",
                messages.len()
            );
        }
    }
    Ok(messages)
}

/// Low and high watermark of one partition.
pub fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> Result<(i64, i64)> {
    let consumer = consumer(bootstrap)?;
    consumer
        .fetch_watermarks(topic, partition, OP_TIMEOUT)
        .with_context(|| format!("ListOffsets {topic}/{partition}"))
}

/// Result of producing many records: per record in send order, the delivery result.
pub struct ProduceOutcome {
    /// `Ok((partition, offset))` or the delivery error, in send order.
    pub results: Vec<std::result::Result<(i32, i64), KafkaError>>,
}

impl ProduceOutcome {
    /// Number of records acknowledged by the broker.
    pub fn acked(&self) -> usize {
        self.results.iter().filter(|result| result.is_ok()).count()
    }

    /// Fails with the first error, if any record failed.
    pub fn all_ok(&self) -> Result<()> {
        if let Some((index, Err(err))) = self
            .results
            .iter()
            .enumerate()
            .find(|(_, result)| result.is_err())
        {
            bail!(
                "record {index} failed: {err} ({} of {} acked)",
                self.acked(),
                self.results.len()
            );
        }
        Ok(())
    }
}

/// Maximum delivery futures outstanding in [`produce_many`]; bounds client memory and keeps
/// librdkafka's queue from filling.
const MAX_IN_FLIGHT: usize = 20_000;

/// Produces `count` records built by `make_record(i)` and waits for every delivery report.
/// Enqueueing retries on a full local queue by first waiting for the oldest outstanding record.
pub async fn produce_many<'a, K, P, F>(
    producer: &FutureProducer,
    count: usize,
    mut make_record: F,
) -> Result<ProduceOutcome>
where
    K: rdkafka::message::ToBytes + ?Sized + 'a,
    P: rdkafka::message::ToBytes + ?Sized + 'a,
    F: FnMut(usize) -> FutureRecord<'a, K, P>,
{
    let mut results = Vec::with_capacity(count);
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::new();
    for index in 0..count {
        let mut record = make_record(index);
        // Bounded: each retry first completes one outstanding delivery (each of which is
        // bounded by message.timeout.ms); with nothing outstanding, a full queue is a bug.
        loop {
            if pending.len() >= MAX_IN_FLIGHT {
                let oldest = pending.pop_front().context("pending is non-empty")?;
                results.push(settle(oldest.await));
            }
            match producer.send_result(record) {
                Ok(future) => {
                    pending.push_back(future);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    match pending.pop_front() {
                        Some(oldest) => results.push(settle(oldest.await)),
                        None => bail!("producer queue full with nothing in flight"),
                    }
                }
                Err((err, _)) => return Err(anyhow!("enqueueing record {index}: {err}")),
            }
        }
    }
    while let Some(future) = pending.pop_front() {
        results.push(settle(future.await));
    }
    Ok(ProduceOutcome { results })
}

/// What awaiting a `DeliveryFuture` yields (the oneshot error means the producer was dropped).
type DeliveryOutput = <DeliveryFuture as std::future::Future>::Output;

fn settle(delivery: DeliveryOutput) -> std::result::Result<(i32, i64), KafkaError> {
    match delivery {
        Ok(Ok(delivery)) => Ok((delivery.partition, delivery.offset)),
        Ok(Err((err, _message))) => Err(err),
        Err(_canceled) => Err(KafkaError::Canceled),
    }
}

/// Produces one record and waits for its delivery report.
pub async fn produce_one(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &[u8],
    value: &[u8],
) -> Result<(i32, i64)> {
    let record = FutureRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(value);
    producer
        .send(record, Timeout::After(Duration::from_secs(5)))
        .await
        .map(|delivery| (delivery.partition, delivery.offset))
        .map_err(|(err, _)| anyhow!("produce to {topic}/{partition}: {err}"))
}

/// The key/value/partition/offset of a consumed message, for assertions.
pub fn describe(message: &OwnedMessage) -> String {
    format!(
        "{}/{}@{} key={:?} value_len={}",
        message.topic(),
        message.partition(),
        message.offset(),
        message.key().map(String::from_utf8_lossy),
        message.payload().map_or(0, <[u8]>::len)
    )
}
