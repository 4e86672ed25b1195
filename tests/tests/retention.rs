//! Time retention: with `retention.ms` small and tiny segment thresholds, the log start offset
//! moves forward (ListOffsets earliest) and the expired segment objects disappear from the
//! object store under the data dir.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::Offset;
use sluice_tests::clients::{self, produce_many};
use sluice_tests::{SluiceOptions, SluiceProcess};

const RETENTION_MS: &str = "5000";
const FIRST_BATCH_ROUNDS: usize = 5;
const RECORDS_PER_ROUND: usize = 600;
/// Retention checks, segment rolling and object GC (with its grace period) all have to happen
/// within this bound.
const RETENTION_DEADLINE: Duration = Duration::from_secs(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_moves_log_start_and_deletes_segment_objects() -> Result<()> {
    let broker = SluiceProcess::start(
        SluiceOptions::default()
            .arg("--segment-bytes", 16384)
            .arg("--segment-ms", 200)
            .arg("--tail-cache-bytes", 65536)
            // Run retention and object GC often, with a short grace period before deletion.
            .arg("--housekeeping-ms", 200)
            .arg("--gc-grace-ms", 1000),
    )?;
    let bootstrap = broker.bootstrap();
    let topic = "retention";
    clients::create_topic(&bootstrap, topic, 1, &[("retention.ms", RETENTION_MS)]).await?;

    // The first batch arrives in rounds further apart than --segment-ms, so it ends up in
    // several segment objects. Every segment object seen before the trickle below starts holds
    // only first-batch records, all of which expire.
    let producer = clients::producer(&bootstrap)?;
    let value = vec![b'r'; 100];
    let mut initial: BTreeSet<PathBuf> = BTreeSet::new();
    for _round in 0..FIRST_BATCH_ROUNDS {
        let round = produce_many(&producer, RECORDS_PER_ROUND, |_| {
            FutureRecord::<[u8], [u8]>::to(topic)
                .partition(0)
                .payload(value.as_slice())
        })
        .await?;
        round.all_ok()?;
        tokio::time::sleep(Duration::from_millis(400)).await;
        initial.extend(broker.segment_files());
    }
    // Let the tail of the first batch reach a segment too.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        initial.extend(broker.segment_files());
    }
    ensure!(
        !initial.is_empty(),
        "no segment object appeared under {} for the first batch",
        broker.data_dir().display()
    );
    eprintln!("{} segment files seen for the first batch", initial.len());
    let first_batch = (FIRST_BATCH_ROUNDS * RECORDS_PER_ROUND) as i64;

    // Keep a trickle of new records coming so the expired data is never the newest segment.
    let deadline = Instant::now() + RETENTION_DEADLINE;
    let mut log_start = 0;
    let mut remaining_initial = initial.len();
    while Instant::now() < deadline {
        clients::produce_one(&producer, topic, 0, b"trickle", &value).await?;
        let (low, _) = clients::watermarks(&bootstrap, topic, 0)?;
        log_start = low;
        let now: BTreeSet<PathBuf> = broker.segment_files().into_iter().collect();
        remaining_initial = initial.intersection(&now).count();
        if log_start >= first_batch && remaining_initial == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure!(
        log_start >= first_batch,
        "log start offset is {log_start} after {RETENTION_DEADLINE:?}; all {first_batch} first \
         records are older than retention.ms={RETENTION_MS}"
    );
    ensure!(
        remaining_initial == 0,
        "{remaining_initial} of {} expired segment objects still on disk after \
         {RETENTION_DEADLINE:?}",
        initial.len()
    );

    // Reading from the beginning starts at the new log start.
    let consumer = clients::consumer(&bootstrap)?;
    consumer.assign(&clients::assignment(topic, 1, Offset::Beginning)?)?;
    let messages = clients::consume_n(&consumer, 1, Duration::from_secs(30))?;
    let first_message = messages
        .first()
        .context("no record readable after retention")?;
    let (low_now, _) = clients::watermarks(&bootstrap, topic, 0)?;
    ensure!(
        first_message.offset() >= log_start && first_message.offset() <= low_now,
        "first readable offset {} is outside the log start range {log_start}..={low_now}",
        first_message.offset()
    );
    Ok(())
}
