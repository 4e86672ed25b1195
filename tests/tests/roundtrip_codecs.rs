//! 100,000 keyed records with headers and timestamps over 6 partitions, once per compression
//! codec, read back byte-exact after a broker restart.
//!
//! The broker runs with tiny segment thresholds and a tiny tail cache, so by the time the
//! consumer reads, the data has been moved from the WAL into segment objects and is served
//! through their index, not from memory.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context as _, Result};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::Timestamp;
use sluice_tests::clients::{self, produce_many};
use sluice_tests::{wait_for, SluiceOptions, SluiceProcess};

const RECORDS: usize = 100_000;
const PARTITIONS: i32 = 6;

/// One expected record, derived deterministically from its index.
struct Expected {
    partition: i32,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: i64,
}

/// Small deterministic PRNG so the payloads mix compressible and incompressible bytes.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn expected_record(index: usize, base_timestamp: i64) -> Expected {
    let seed = mix(index as u64 + 1);
    let partition = (seed % PARTITIONS as u64) as i32;
    // Null keys, null values (tombstones), empty values and null header values all have to
    // survive: they are distinct from empty on the wire.
    let key = if index.is_multiple_of(13) {
        None
    } else {
        Some(format!("key-{index}").into_bytes())
    };
    let value = match index % 19 {
        0 => None,
        1 => Some(Vec::new()),
        _ => {
            let random_len = (seed >> 8) % 24;
            let mut value = format!("value {index} of the codec round trip ").into_bytes();
            value.extend((0..random_len).map(|byte| (mix(seed ^ byte) & 0xff) as u8));
            Some(value)
        }
    };
    let mut headers = vec![("trace".to_string(), Some(mix(seed).to_be_bytes().to_vec()))];
    if index.is_multiple_of(11) {
        headers.push(("null-header".to_string(), None));
    }
    if index.is_multiple_of(7) {
        headers.push(("empty".to_string(), Some(Vec::new())));
        // Duplicate header keys are legal and order matters.
        headers.push(("trace".to_string(), Some(b"second".to_vec())));
    }
    if index.is_multiple_of(29) {
        headers.clear();
    }
    Expected {
        partition,
        key,
        value,
        headers,
        timestamp: base_timestamp + index as i64,
    }
}

fn owned_headers(expected: &Expected) -> Option<OwnedHeaders> {
    if expected.headers.is_empty() {
        return None;
    }
    let mut headers = OwnedHeaders::new_with_capacity(expected.headers.len());
    for (key, value) in &expected.headers {
        headers = headers.insert(Header {
            key,
            value: value.as_ref(),
        });
    }
    Some(headers)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

async fn roundtrip(codec: &str) -> Result<()> {
    let mut broker = SluiceProcess::start(SluiceOptions::default().tiny_segments())?;
    let topic = format!("codec-{codec}");
    clients::create_topic(&broker.bootstrap(), &topic, PARTITIONS, &[]).await?;

    // An hour in the past: inside any default retention, and clearly not broker-assigned.
    let base_timestamp = now_ms() - 3_600_000;
    let expected: Vec<Expected> = (0..RECORDS)
        .map(|index| expected_record(index, base_timestamp))
        .collect();

    let producer = clients::producer_config(&broker.bootstrap())
        .set("compression.type", codec)
        .set("linger.ms", "20")
        .create()
        .context("creating producer")?;
    let outcome = produce_many(&producer, RECORDS, |index| {
        let record = &expected[index];
        let mut future_record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic)
            .partition(record.partition)
            .timestamp(record.timestamp);
        if let Some(key) = &record.key {
            future_record = future_record.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            future_record = future_record.payload(value.as_slice());
        }
        if let Some(headers) = owned_headers(record) {
            future_record = future_record.headers(headers);
        }
        future_record
    })
    .await?;
    outcome.all_ok()?;
    drop(producer);

    // Where each record landed, from the delivery reports.
    let mut index_at: HashMap<(i32, i64), usize> = HashMap::with_capacity(RECORDS);
    let mut per_partition = [0i64; PARTITIONS as usize];
    for (index, result) in outcome.results.iter().enumerate() {
        let (partition, offset) = result.as_ref().map_err(|err| anyhow::anyhow!("{err}"))?;
        ensure!(
            *partition == expected[index].partition,
            "record {index} acked on partition {partition}, sent to {}",
            expected[index].partition
        );
        ensure!(
            index_at.insert((*partition, *offset), index).is_none(),
            "two records acked at {partition}@{offset}"
        );
        per_partition[*partition as usize] += 1;
    }

    // With 64 KiB / 200 ms thresholds the data must reach segment objects.
    let segments = wait_for(
        "segment objects under the data dir",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let files = broker.segment_files();
            (files.len() >= PARTITIONS as usize).then_some(files)
        },
    )
    .await?;
    eprintln!("{codec}: {} segment files before restart", segments.len());

    let status = broker.terminate()?;
    ensure!(status.success(), "graceful shutdown exited with {status}");
    broker.restart()?;
    let bootstrap = broker.bootstrap();

    for partition in 0..PARTITIONS {
        let (low, high) = clients::watermarks(&bootstrap, &topic, partition)?;
        ensure!(
            (low, high) == (0, per_partition[partition as usize]),
            "partition {partition}: watermarks ({low}, {high}), expected (0, {})",
            per_partition[partition as usize]
        );
    }

    let messages = clients::consume_from_beginning(
        &bootstrap,
        &topic,
        PARTITIONS,
        RECORDS,
        Duration::from_secs(180),
    )?;
    ensure!(
        messages.len() == RECORDS,
        "consumed {} of {RECORDS} records",
        messages.len()
    );

    let mut seen = HashSet::with_capacity(RECORDS);
    let mut next_offset = [0i64; PARTITIONS as usize];
    for message in &messages {
        let place = (message.partition(), message.offset());
        let index = *index_at
            .get(&place)
            .with_context(|| format!("unexpected record {}", clients::describe(message)))?;
        ensure!(seen.insert(index), "record {index} delivered twice");
        let slot = usize::try_from(message.partition()).context("negative partition")?;
        ensure!(
            message.offset() == next_offset[slot],
            "partition {}: offset {} after {} (gap or reorder)",
            message.partition(),
            message.offset(),
            next_offset[slot] - 1
        );
        next_offset[slot] += 1;

        let want = &expected[index];
        ensure!(
            message.key() == want.key.as_deref(),
            "record {index}: key {:?} != {:?}",
            message.key(),
            want.key
        );
        ensure!(
            message.payload() == want.value.as_deref(),
            "record {index}: value {:?} != {:?}",
            message.payload(),
            want.value
        );
        ensure!(
            message.timestamp() == Timestamp::CreateTime(want.timestamp),
            "record {index}: timestamp {:?} != CreateTime({})",
            message.timestamp(),
            want.timestamp
        );
        let got_headers: Vec<(String, Option<Vec<u8>>)> = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| (header.key.to_string(), header.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        ensure!(
            got_headers == want.headers,
            "record {index}: headers {got_headers:?} != {:?}",
            want.headers
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_uncompressed() -> Result<()> {
    roundtrip("none").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_gzip() -> Result<()> {
    roundtrip("gzip").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_snappy() -> Result<()> {
    roundtrip("snappy").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_lz4() -> Result<()> {
    roundtrip("lz4").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_zstd() -> Result<()> {
    roundtrip("zstd").await
}
