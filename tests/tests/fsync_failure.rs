//! A failing WAL fsync must fail the produce — never a false acknowledgement.
//!
//! `--fail-fsync-file PATH` makes every WAL fsync fail while PATH exists; after the first
//! failure the WAL is poisoned and produces keep failing until the process restarts. Every
//! record acknowledged before the fault must be readable after a restart, and produce must
//! work again once the broker restarts without the fault.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_tests::clients::{self, produce_many};
use sluice_tests::{touch, SluiceOptions, SluiceProcess};

const PARTITIONS: i32 = 2;
const BEFORE_FAULT: usize = 2_000;
const DURING_FAULT: usize = 200;

fn record_value(phase: &str, index: usize) -> String {
    format!("{phase}-{index}")
}

async fn produce_phase(
    producer: &FutureProducer,
    topic: &str,
    phase: &str,
    count: usize,
) -> Result<clients::ProduceOutcome> {
    let values: Vec<String> = (0..count).map(|index| record_value(phase, index)).collect();
    produce_many(producer, count, |index| {
        FutureRecord::<[u8], [u8]>::to(topic)
            .partition((index % PARTITIONS as usize) as i32)
            .payload(values[index].as_bytes())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_fsync_fails_produce_and_never_acks_falsely() -> Result<()> {
    let failpoint_dir = tempfile::tempdir().context("failpoint dir")?;
    let failpoint = failpoint_dir.path().join("fail-fsync");
    let mut broker = SluiceProcess::start(
        SluiceOptions::default().arg("--fail-fsync-file", failpoint.display()),
    )?;
    let topic = "fsync-fault";
    clients::create_topic(&broker.bootstrap(), topic, PARTITIONS, &[]).await?;

    // Phase 1: healthy disk, everything acked.
    let producer = clients::producer(&broker.bootstrap())?;
    let before = produce_phase(&producer, topic, "before", BEFORE_FAULT).await?;
    before.all_ok()?;
    drop(producer);

    // Phase 2: every fsync fails. No retries, so each record reports the broker's answer (or
    // a timeout if the broker never answers) instead of being retried for the whole timeout.
    touch(&failpoint)?;
    let faulty_producer: FutureProducer = clients::producer_config(&broker.bootstrap())
        .set("retries", "0")
        .set("message.timeout.ms", "10000")
        .set("request.timeout.ms", "8000")
        .create()
        .context("creating producer")?;
    let during = produce_phase(&faulty_producer, topic, "during", DURING_FAULT).await?;
    if let Some(Err(first_error)) = during.results.first() {
        eprintln!("produce during the fault fails with: {first_error}");
    }
    ensure!(
        during.acked() == 0,
        "{} of {DURING_FAULT} records were acknowledged while every fsync failed",
        during.acked()
    );

    // Phase 3: the failpoint is gone, but the WAL stays poisoned until restart.
    std::fs::remove_file(&failpoint).context("removing the failpoint file")?;
    let poisoned = produce_phase(&faulty_producer, topic, "poisoned", 10).await?;
    ensure!(
        poisoned.acked() == 0,
        "{} records acknowledged by a poisoned WAL",
        poisoned.acked()
    );
    drop(faulty_producer);
    ensure!(
        broker.is_running(),
        "the broker exited on an fsync failure instead of poisoning the WAL\n{}",
        broker.log_tail(40)
    );

    broker.kill9()?;
    broker.restart()?;
    let bootstrap = broker.bootstrap();

    // Every record acked in phase 1 is where its delivery report said.
    let mut high_watermarks = Vec::new();
    let mut total = 0usize;
    for partition in 0..PARTITIONS {
        let (low, high) = clients::watermarks(&bootstrap, topic, partition)?;
        ensure!(low == 0, "partition {partition}: log start {low}");
        high_watermarks.push(high);
        total += usize::try_from(high).context("negative high watermark")?;
    }
    let messages = clients::consume_from_beginning(
        &bootstrap,
        topic,
        PARTITIONS,
        total,
        Duration::from_secs(60),
    )?;
    ensure!(
        messages.len() == total,
        "consumed {} of {total}",
        messages.len()
    );
    let mut stored = std::collections::HashMap::new();
    let mut next_offset = vec![0i64; PARTITIONS as usize];
    for message in &messages {
        let slot = usize::try_from(message.partition()).context("negative partition")?;
        ensure!(
            message.offset() == next_offset[slot],
            "partition {}: offset {} after {} — not dense",
            message.partition(),
            message.offset(),
            next_offset[slot] - 1
        );
        next_offset[slot] += 1;
        stored.insert(
            (message.partition(), message.offset()),
            message.payload().map(<[u8]>::to_vec),
        );
    }
    for (index, result) in before.results.iter().enumerate() {
        let (partition, offset) = result.as_ref().map_err(|err| anyhow::anyhow!("{err}"))?;
        let want = record_value("before", index);
        let got = stored.get(&(*partition, *offset));
        ensure!(
            got == Some(&Some(want.clone().into_bytes())),
            "acked record {want} at {partition}@{offset} reads back as {:?}",
            got.map(|value| value.as_ref().map(|bytes| String::from_utf8_lossy(bytes)))
        );
    }

    // Healthy again after the restart, continuing at the high watermark.
    let producer = clients::producer(&bootstrap)?;
    for partition in 0..PARTITIONS {
        let (_, offset) =
            clients::produce_one(&producer, topic, partition, b"k", b"after-restart").await?;
        ensure!(
            offset == high_watermarks[partition as usize],
            "partition {partition}: first record after restart at {offset}, expected {}",
            high_watermarks[partition as usize]
        );
    }
    Ok(())
}
