//! Topic `compression.type` end to end: topics created by librdkafka's admin client with
//! `compression.type` zstd, lz4 and uncompressed (and one left at `producer`) get records from
//! idempotent librdkafka producers sending uncompressed and gzip batches, and from HTTP ingest.
//! A librdkafka consumer reads every record back intact, and a raw Fetch shows every stored batch
//! in the topic's codec with a valid CRC-32C and the producer id kept (`producer`: the codec as
//! sent). A second test has Kafka's Java client (4.4.0, `tests/java` TopicCodecCompat) produce to
//! and read back (CRC-checked) topics of every codec.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Timestamp;
use sluice_tests::clients::{self, produce_many};
use sluice_tests::wire::RawConnection;
use sluice_tests::{SluiceOptions, SluiceProcess};

const PER_PRODUCER: usize = 300;
const BASE_TIMESTAMP: i64 = 1_700_000_000_000;
const CONSUME_TIMEOUT: Duration = Duration::from_secs(30);

/// Value of record `i` of the producer using `codec`: compressible, different per record.
fn value(codec: &str, i: usize) -> Vec<u8> {
    format!("{codec} record {i} of the topic compression test; ")
        .repeat(1 + i % 5)
        .into_bytes()
}

fn key(codec: &str, i: usize) -> String {
    format!("{codec}-{i}")
}

/// Codec bits (attributes & 7) and producer id of every batch stored in partition 0 of `topic`,
/// read with raw Fetch requests (v12) from offset 0 up to `records` records; each batch's
/// framing and CRC-32C checked.
fn stored_batches(bootstrap: &str, topic: &str, records: i64) -> Result<Vec<(i16, i64)>> {
    let mut conn = RawConnection::connect(bootstrap)?;
    let mut batches = Vec::new();
    let mut offset = 0;
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    while offset < records {
        ensure!(
            Instant::now() < deadline,
            "{topic}: fetched {offset} of {records}"
        );
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(16 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(8 << 20)])]);
        let response = conn.request(&request, 12)?;
        let partition = &response.responses[0].partitions[0];
        ensure!(
            partition.error_code == 0,
            "{topic}: fetch error {}",
            partition.error_code
        );
        let mut bytes = partition.records.clone().unwrap_or_default();
        while !bytes.is_empty() {
            let header = storage::batch::BatchHeader::parse(&bytes)?;
            ensure!(header.total_len() <= bytes.len(), "{topic}: partial batch");
            let batch = bytes.split_to(header.total_len());
            storage::batch::validate(&batch)
                .with_context(|| format!("{topic}: batch at {}", header.base_offset))?;
            if header.last_offset() >= offset {
                batches.push((header.attributes & 0x07, header.producer_id));
                offset = header.last_offset() + 1;
            }
        }
    }
    Ok(batches)
}

/// Consumes `expected` records of `topic` and checks each against what its producer sent.
fn check_kafka_records(bootstrap: &str, topic: &str, codecs: &[&str]) -> Result<()> {
    let expected = codecs.len() * PER_PRODUCER;
    let messages = clients::consume_from_beginning(bootstrap, topic, 1, expected, CONSUME_TIMEOUT)?;
    ensure!(
        messages.len() == expected,
        "{topic}: consumed {} of {expected}",
        messages.len()
    );
    for (index, message) in messages.iter().enumerate() {
        ensure!(
            message.offset() == index as i64,
            "{topic}: offsets not dense"
        );
        let codec = codecs[index / PER_PRODUCER];
        let i = index % PER_PRODUCER;
        ensure!(
            message.key() == Some(key(codec, i).as_bytes()),
            "{topic}@{index}: key"
        );
        ensure!(
            message.payload() == Some(&value(codec, i)[..]),
            "{topic}@{index}: value"
        );
        ensure!(
            message.timestamp() == Timestamp::CreateTime(BASE_TIMESTAMP + i as i64),
            "{topic}@{index}: timestamp {:?}",
            message.timestamp()
        );
        let headers = message.headers().context("headers")?;
        let header = headers.iter().next().context("a header")?;
        ensure!(
            header.key == "n" && header.value == Some(i.to_string().as_bytes()),
            "{topic}@{index}: header"
        );
    }
    Ok(())
}

/// POSTs an NDJSON body to the native ingest endpoint of `topic`; returns the HTTP status.
fn post_ndjson(http: &str, topic: &str, body: &str) -> Result<u16> {
    let mut stream = TcpStream::connect(http)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST /ingest/v1/{topic} HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {answer:?}"))?;
    if status != 200 {
        bail!("POST {topic}: {answer}");
    }
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_stored_in_the_topic_codec() -> Result<()> {
    let sluice = SluiceProcess::start(SluiceOptions::default())?;
    let bootstrap = sluice.bootstrap();
    // (topic, compression.type, codec bits every stored batch must carry; None: as sent)
    let topics: [(&str, Option<&str>, Option<i16>); 4] = [
        ("tc-zstd", Some("zstd"), Some(4)),
        ("tc-lz4", Some("lz4"), Some(3)),
        ("tc-uncompressed", Some("uncompressed"), Some(0)),
        ("tc-producer", None, None),
    ];
    for (topic, codec, _) in &topics {
        let configs: Vec<(&str, &str)> = codec.iter().map(|c| ("compression.type", *c)).collect();
        clients::create_topic(&bootstrap, topic, 1, &configs).await?;
    }

    // librdkafka's compression.codec names, and the codec bits of what they send.
    let producer_codecs = [("none", 0i16), ("gzip", 1)];
    for (codec, _) in producer_codecs {
        let producer: FutureProducer = clients::producer_config(&bootstrap)
            .set("compression.codec", codec)
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .create()?;
        for (topic, _, _) in &topics {
            let keys: Vec<String> = (0..PER_PRODUCER).map(|i| key(codec, i)).collect();
            let values: Vec<Vec<u8>> = (0..PER_PRODUCER).map(|i| value(codec, i)).collect();
            let numbers: Vec<String> = (0..PER_PRODUCER).map(|i| i.to_string()).collect();
            produce_many(&producer, PER_PRODUCER, |i| {
                FutureRecord::to(topic)
                    .partition(0)
                    .key(&keys[i])
                    .payload(&values[i])
                    .timestamp(BASE_TIMESTAMP + i as i64)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "n",
                        value: Some(&numbers[i]),
                    }))
            })
            .await?
            .all_ok()
            .with_context(|| format!("producing {codec} to {topic}"))?;
        }
    }

    let codec_names: Vec<&str> = producer_codecs.iter().map(|(name, _)| *name).collect();
    for (topic, _, want) in &topics {
        let records = (codec_names.len() * PER_PRODUCER) as i64;
        let (bootstrap, name, names) = (bootstrap.clone(), topic.to_string(), codec_names.clone());
        let stored = tokio::task::spawn_blocking(move || {
            check_kafka_records(&bootstrap, &name, &names)?;
            stored_batches(&bootstrap, &name, records)
        })
        .await??;
        ensure!(!stored.is_empty());
        for (index, (bits, producer_id)) in stored.iter().enumerate() {
            ensure!(*producer_id >= 0, "{topic} batch {index}: producer id lost");
            match want {
                Some(want) => ensure!(
                    bits == want,
                    "{topic} batch {index}: codec bits {bits}, want {want}: {stored:?}"
                ),
                None => ensure!(
                    producer_codecs.iter().any(|(_, sent)| sent == bits),
                    "{topic} batch {index}: codec bits {bits}"
                ),
            }
        }
        if want.is_none() {
            // `producer`: stored as sent, so both producers' codecs are there.
            for (_, sent) in producer_codecs {
                ensure!(
                    stored.iter().any(|(bits, _)| *bits == sent),
                    "{topic}: no batch with codec bits {sent}: {stored:?}"
                );
            }
        }
    }

    // HTTP ingest into a zstd topic: its batches are built in the topic codec too.
    clients::create_topic(
        &bootstrap,
        "tc-http-zstd",
        1,
        &[("compression.type", "zstd")],
    )
    .await?;
    let http = sluice
        .ready_info()
        .and_then(|r| r.http.clone())
        .context("the ready file has no http address")?;
    let body: String = (0..50)
        .map(|i| {
            format!(
                "{{\"event\":{i},\"text\":\"{}\"}}\n",
                "compressible ".repeat(10)
            )
        })
        .collect();
    let status =
        tokio::task::spawn_blocking(move || post_ndjson(&http, "tc-http-zstd", &body)).await??;
    ensure!(status == 200);
    let bootstrap_http = bootstrap.clone();
    let (messages, stored) = tokio::task::spawn_blocking(move || -> Result<_> {
        let messages = clients::consume_from_beginning(
            &bootstrap_http,
            "tc-http-zstd",
            1,
            50,
            CONSUME_TIMEOUT,
        )?;
        Ok((
            messages,
            stored_batches(&bootstrap_http, "tc-http-zstd", 50)?,
        ))
    })
    .await??;
    ensure!(messages.len() == 50, "http: consumed {}", messages.len());
    for (i, message) in messages.iter().enumerate() {
        let payload: serde_json::Value =
            serde_json::from_slice(message.payload().context("payload")?)?;
        ensure!(payload["event"] == i, "http record {i}: {payload}");
    }
    ensure!(
        stored.iter().all(|(bits, _)| *bits == 4),
        "http batches: {stored:?}"
    );
    Ok(())
}

/// Kafka's Java client 4.4.0 (`tests/java`, TopicCodecCompat): a Java producer's uncompressed
/// and gzip batches recompressed to lz4, snappy, gzip, zstd and uncompressed topics are read back
/// intact by a Java consumer checking CRCs (the codecs' framing is what Kafka's own readers take).
#[test]
fn java_client_reads_recompressed_batches() -> Result<()> {
    let sluice = SluiceProcess::start(SluiceOptions::default())?;
    let classpath = sluice_tests::kafka_ref::java_classpath()?;
    let mut child = std::process::Command::new(sluice_tests::kafka_ref::java_binary()?)
        .arg("-cp")
        .arg(classpath)
        .arg("io.sluice.compat.TopicCodecCompat")
        .arg(sluice.bootstrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting java")?;
    // Bounded: the program's own polls end within 30 s per topic.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            child.kill()?;
            bail!("TopicCodecCompat did not finish within 240 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "TopicCodecCompat failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for codec in ["lz4", "snappy", "gzip", "zstd", "uncompressed"] {
        ensure!(
            stdout.contains(&format!("read 10000 records of jc-{codec} intact")),
            "{stdout}"
        );
    }
    Ok(())
}
