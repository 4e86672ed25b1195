//! Idempotent producer (`enable.idempotence=true`): InitProducerId, sequenced batches with
//! several requests in flight, and the data reads back exactly once, in order.
//!
//! A healthy loopback broker never makes librdkafka retry, so the retry tests put a
//! [`KafkaProxy`] between producer and broker (the broker advertises the proxy): it swallows
//! Produce answers the broker already sent after appending and closes the connection, or holds
//! them past the client's timeout. The client resends the same batches; the proxy counts the
//! resent batches, and the data must still read back exactly once, in send order, at the offsets
//! the producer was told.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_tests::clients::{self, produce_many};
use sluice_tests::kafka_proxy::KafkaProxy;
use sluice_tests::{SluiceOptions, SluiceProcess};

const PARTITIONS: i32 = 3;
const RECORDS: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_round_trip() -> Result<()> {
    let mut broker = SluiceProcess::start(SluiceOptions::default())?;
    let topic = "idempotent";
    clients::create_topic(&broker.bootstrap(), topic, PARTITIONS, &[]).await?;

    let producer: FutureProducer = clients::producer_config(&broker.bootstrap())
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "1")
        .set("batch.num.messages", "500")
        .create()
        .context("creating idempotent producer")?;
    let values: Vec<String> = (0..RECORDS).map(|index| format!("idem-{index}")).collect();
    let outcome = produce_many(&producer, RECORDS, |index| {
        FutureRecord::<[u8], [u8]>::to(topic)
            .partition((index % PARTITIONS as usize) as i32)
            .payload(values[index].as_bytes())
    })
    .await?;
    outcome.all_ok()?;
    drop(producer);

    // Everything must survive a crash, and a new idempotent producer (InitProducerId after
    // recovery) must work afterwards.
    broker.kill9()?;
    broker.restart()?;
    let bootstrap = broker.bootstrap();

    let messages = clients::consume_from_beginning(
        &bootstrap,
        topic,
        PARTITIONS,
        RECORDS,
        Duration::from_secs(60),
    )?;
    ensure!(
        messages.len() == RECORDS,
        "consumed {} of {RECORDS}",
        messages.len()
    );
    // Within a partition, records appear exactly once and in send order.
    let mut next_index: [usize; PARTITIONS as usize] = std::array::from_fn(|partition| partition);
    let mut next_offset = [0i64; PARTITIONS as usize];
    for message in &messages {
        let slot = usize::try_from(message.partition()).context("negative partition")?;
        let want = format!("idem-{}", next_index[slot]);
        ensure!(
            message.payload() == Some(want.as_bytes()),
            "{}: expected {want}",
            clients::describe(message)
        );
        ensure!(
            message.offset() == next_offset[slot],
            "{}: expected offset {}",
            clients::describe(message),
            next_offset[slot]
        );
        next_index[slot] += PARTITIONS as usize;
        next_offset[slot] += 1;
    }
    for (index, result) in outcome.results.iter().enumerate() {
        let (partition, offset) = result.as_ref().map_err(|err| anyhow::anyhow!("{err}"))?;
        ensure!(
            *offset == (index / PARTITIONS as usize) as i64
                && *partition == (index % PARTITIONS as usize) as i32,
            "record {index} acked at {partition}@{offset}"
        );
    }

    let producer: FutureProducer = clients::producer_config(&bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .context("creating a second idempotent producer")?;
    let (_, offset) = clients::produce_one(&producer, topic, 0, b"k", b"after-restart").await?;
    let expected = RECORDS.div_ceil(PARTITIONS as usize) as i64;
    ensure!(
        offset == expected,
        "after restart: acked at {offset}, expected {expected}"
    );
    Ok(())
}

/// Records per wave of the retry tests; each wave starts with freshly armed faults and ends when
/// every record of it is acknowledged.
const WAVE_RECORDS: usize = 1_000;

/// How long the delay test holds an answer: far beyond the producer's `socket.timeout.ms`
/// ([`SOCKET_TIMEOUT_MS`]), so librdkafka times the request out and resends first; the hold ends
/// early when librdkafka closes the connection, so it costs no test time.
const ANSWER_DELAY: Duration = Duration::from_secs(20);

/// librdkafka's client-side bound on a Produce request in the delay test.
const SOCKET_TIMEOUT_MS: &str = "1000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_lost_after_the_append_are_resent_and_written_once() -> Result<()> {
    let topic = "retry-dropped";
    let (proxy, _broker, producer) = producer_behind_proxy(topic, &[]).await?;

    // Answers swallowed per wave: a single one, and runs where the answer to the resent batches
    // (the broker's "already written at offset N") is swallowed too.
    let drops_per_wave = [1u64, 2, 1, 3];
    let mut acks = Vec::new();
    let mut dropped = 0;
    for (wave, drops) in drops_per_wave.into_iter().enumerate() {
        proxy.drop_connection_after_produce_answers(drops);
        acks.extend(produce_wave(&producer, topic, wave * WAVE_RECORDS).await?);
        dropped += drops;
        let stats = proxy.stats();
        // Every acknowledgement passed the proxy, so the faults armed before it were applied.
        ensure!(
            stats.dropped_answers == dropped && proxy.pending_faults() == 0,
            "wave {wave}: {stats:?}"
        );
    }
    drop(producer);
    let stats = proxy.stats();
    eprintln!("proxy: {stats:?}");
    // Each swallowed answer acknowledged batches the producer then had to send again.
    ensure!(
        stats.resent_batches >= dropped,
        "no retries seen: {stats:?}"
    );
    check_written_once(&proxy.addr().to_string(), topic, &acks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_delayed_past_the_client_timeout_are_resent_and_written_once() -> Result<()> {
    let topic = "retry-delayed";
    let (proxy, _broker, producer) =
        producer_behind_proxy(topic, &[("socket.timeout.ms", SOCKET_TIMEOUT_MS)]).await?;

    let waves = 2;
    let mut acks = Vec::new();
    for wave in 0..waves {
        proxy.delay_produce_answers(ANSWER_DELAY, 1);
        acks.extend(produce_wave(&producer, topic, wave * WAVE_RECORDS).await?);
        let stats = proxy.stats();
        ensure!(
            stats.delayed_answers == wave as u64 + 1 && proxy.pending_faults() == 0,
            "wave {wave}: {stats:?}"
        );
    }
    drop(producer);
    let stats = proxy.stats();
    eprintln!("proxy: {stats:?}");
    ensure!(
        stats.resent_batches >= waves as u64,
        "no retries seen: {stats:?}"
    );
    check_written_once(&proxy.addr().to_string(), topic, &acks)
}

/// A [`KafkaProxy`], a broker advertising it, `topic` with [`PARTITIONS`] partitions, and an
/// idempotent producer bootstrapping from the proxy: acks=all, five requests in flight and small
/// batches (so a wave is many requests over every partition), plus `settings`.
async fn producer_behind_proxy(
    topic: &str,
    settings: &[(&str, &str)],
) -> Result<(KafkaProxy, SluiceProcess, FutureProducer)> {
    let proxy = KafkaProxy::start()?;
    let broker = SluiceProcess::start(SluiceOptions::default().advertised_kafka(proxy.addr()))?;
    proxy.set_upstream(
        broker
            .bootstrap()
            .parse()
            .context("the broker's listener address")?,
    );
    let bootstrap = proxy.addr().to_string();
    clients::create_topic(&bootstrap, topic, PARTITIONS, &[]).await?;
    let mut config = clients::producer_config(&bootstrap);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "2")
        .set("batch.num.messages", "50")
        .set("retry.backoff.ms", "20");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    let producer = config
        .create()
        .context("creating the idempotent producer")?;
    Ok((proxy, broker, producer))
}

/// The value of record `index` of the retry tests; record `index` goes to partition
/// `index % PARTITIONS`.
fn retry_value(index: usize) -> String {
    format!("retry-{index}")
}

/// Produces records `first..first + WAVE_RECORDS`; fails unless every one is acknowledged.
/// Returns the acknowledged (partition, offset) of each, in order.
async fn produce_wave(
    producer: &FutureProducer,
    topic: &str,
    first: usize,
) -> Result<Vec<(i32, i64)>> {
    let values: Vec<String> = (first..first + WAVE_RECORDS).map(retry_value).collect();
    let outcome = produce_many(producer, WAVE_RECORDS, |index| {
        FutureRecord::<[u8], [u8]>::to(topic)
            .partition(((first + index) % PARTITIONS as usize) as i32)
            .payload(values[index].as_bytes())
    })
    .await?;
    outcome.all_ok()?;
    outcome
        .results
        .into_iter()
        .map(|result| result.map_err(anyhow::Error::from))
        .collect()
}

/// Record `i` of `acks.len()` records, sent in index order, is in its partition exactly once, at
/// the offset the producer was told, and the partition holds nothing else: offsets dense from 0,
/// send order kept.
fn check_written_once(bootstrap: &str, topic: &str, acks: &[(i32, i64)]) -> Result<()> {
    let records = acks.len();
    let per_partition = |partition: i32| {
        (0..records)
            .filter(|index| index % PARTITIONS as usize == partition as usize)
            .count() as i64
    };
    // The high watermarks first: a duplicate makes a partition longer than what was sent, which
    // reading a fixed number of records would not notice.
    let mut stored = 0;
    for partition in 0..PARTITIONS {
        let (low, high) = clients::watermarks(bootstrap, topic, partition)?;
        ensure!(
            (low, high) == (0, per_partition(partition)),
            "partition {partition}: watermarks {low}..{high}, {} records were sent to it",
            per_partition(partition)
        );
        stored += high;
    }
    let messages = clients::consume_from_beginning(
        bootstrap,
        topic,
        PARTITIONS,
        usize::try_from(stored)?,
        Duration::from_secs(60),
    )?;
    ensure!(
        messages.len() == records,
        "consumed {} of {records}",
        messages.len()
    );
    let mut found: HashMap<(i32, i64), usize> = HashMap::with_capacity(records);
    let mut next_offset = [0i64; PARTITIONS as usize];
    for message in &messages {
        let slot = usize::try_from(message.partition()).context("negative partition")?;
        ensure!(
            message.offset() == next_offset[slot],
            "{}: expected offset {}",
            clients::describe(message),
            next_offset[slot]
        );
        next_offset[slot] += 1;
        let index = message
            .payload()
            .and_then(|payload| std::str::from_utf8(payload).ok())
            .and_then(|value| value.strip_prefix("retry-"))
            .and_then(|index| index.parse::<usize>().ok())
            .with_context(|| {
                format!("{}: not a record of this test", clients::describe(message))
            })?;
        ensure!(
            index < records && index % PARTITIONS as usize == slot,
            "{}: record {index} in the wrong place",
            clients::describe(message)
        );
        if let Some(earlier) = found.insert((message.partition(), message.offset()), index) {
            anyhow::bail!("offset read twice: records {earlier} and {index}");
        }
    }
    // Every record once, where its acknowledgement said, in send order within its partition.
    for (index, &(partition, offset)) in acks.iter().enumerate() {
        ensure!(
            found.get(&(partition, offset)) == Some(&index),
            "record {index} acknowledged at {partition}@{offset}, which holds {:?}",
            found.get(&(partition, offset))
        );
        ensure!(
            offset == (index / PARTITIONS as usize) as i64,
            "record {index} at {partition}@{offset}: not in send order"
        );
    }
    Ok(())
}
