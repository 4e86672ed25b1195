//! Idempotent producer (`enable.idempotence=true`): InitProducerId, sequenced batches with
//! several requests in flight, and the data reads back exactly once, in order.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_tests::clients::{self, produce_many};
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
