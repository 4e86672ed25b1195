//! Stateless mode: with `--wal object` on a real S3 server (s3s-fs), *everything* acknowledged —
//! records from Kafka and HTTP producers, topics and their configs, consumer-group offsets, the
//! cluster id — is rebuilt from the bucket alone by a broker started on an empty data dir.

use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rdkafka::admin::ResourceSpecifier;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, DefaultConsumerContext};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use sluice_tests::s3::S3Server;
use sluice_tests::{clients, SluiceOptions, SluiceProcess};
use tokio::net::TcpStream;

const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// POSTs `body` to `path` on a fresh HTTP/1.1 connection; returns (status, body).
async fn post(addr: &str, path: &str, content_type: &str, body: &str) -> Result<(u16, String)> {
    let request = async {
        let stream = TcpStream::connect(addr).await.context("connect")?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method("POST")
            .uri(path)
            .header("host", addr)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body.to_string())))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).to_string()))
    };
    tokio::time::timeout(HTTP_TIMEOUT, request)
        .await
        .context("HTTP request timed out")?
}

async fn config_value(bootstrap: &str, topic: &str, name: &str) -> Result<Option<String>> {
    let admin = clients::admin(bootstrap)?;
    let results = admin
        .describe_configs(
            [&ResourceSpecifier::Topic(topic)],
            &clients::admin_options(),
        )
        .await
        .context("DescribeConfigs")?;
    match results.into_iter().next() {
        Some(Ok(resource)) => Ok(resource.get(name).and_then(|entry| entry.value.clone())),
        Some(Err(code)) => bail!("DescribeConfigs {topic}: {code:?}"),
        None => bail!("DescribeConfigs {topic}: empty result"),
    }
}

fn group_consumer(bootstrap: &str, group: &str) -> Result<BaseConsumer<DefaultConsumerContext>> {
    clients::base_config(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating group consumer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_acknowledged_comes_back_from_the_bucket_alone() -> Result<()> {
    let s3 = S3Server::start()?;
    let mut broker = SluiceProcess::start(
        SluiceOptions::default()
            .s3(&s3, "stateless")
            .object_wal()
            // Compaction and GC run during the test too.
            .arg("--segment-ms", 300)
            .arg("--gc-grace-ms", 200)
            .arg("--housekeeping-ms", 100),
    )?;
    let bootstrap = broker.bootstrap();
    let cluster_id = broker
        .ready_info()
        .and_then(|r| r.cluster_id.clone())
        .context("no cluster id")?;

    // A topic with a config, records from an idempotent Kafka producer and from HTTP.
    let topic = "stateless";
    clients::create_topic(&bootstrap, topic, 2, &[("retention.ms", "86400123")]).await?;
    let producer = clients::producer_config(&bootstrap)
        .set("enable.idempotence", "true")
        .create::<rdkafka::producer::FutureProducer>()?;
    let outcome = clients::produce_many(&producer, 200, |i| {
        FutureRecord::<[u8], [u8]>::to(topic)
            .partition((i % 2) as i32)
            .payload(b"kafka".as_slice())
    })
    .await?;
    outcome.all_ok()?;
    drop(producer);
    let http = broker
        .ready_info()
        .and_then(|r| r.http.clone())
        .context("no http address")?;
    let (status, body) = post(
        &http,
        &format!("/topics/{topic}"),
        "application/vnd.kafka.json.v2+json",
        r#"{"records":[{"value":{"from":"http"},"partition":1}]}"#,
    )
    .await?;
    ensure!(status == 200, "REST produce answered {status}: {body}");

    // Committed offsets of a group.
    let consumer = group_consumer(&bootstrap, "dr-group")?;
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(topic, 0, Offset::Offset(42))?;
    offsets.add_partition_offset(topic, 1, Offset::Offset(7))?;
    consumer.commit(&offsets, CommitMode::Sync)?;
    drop(consumer);

    let before: Vec<(i64, i64)> = (0..2)
        .map(|p| clients::watermarks(&bootstrap, topic, p))
        .collect::<Result<_>>()?;
    ensure!(
        before == vec![(0, 100), (0, 101)],
        "watermarks before: {before:?}"
    );

    // Lose the machine: SIGKILL, empty data dir, new process on the same bucket.
    broker.kill9()?;
    broker.wipe_data_dir()?;
    broker.restart()?;
    let bootstrap = broker.bootstrap();

    let restored_id = broker.ready_info().and_then(|r| r.cluster_id.clone());
    ensure!(
        restored_id.as_deref() == Some(cluster_id.as_str()),
        "cluster id {restored_id:?} after recovery, was {cluster_id}"
    );
    let after: Vec<(i64, i64)> = (0..2)
        .map(|p| clients::watermarks(&bootstrap, topic, p))
        .collect::<Result<_>>()?;
    ensure!(
        after == before,
        "watermarks {after:?} after recovery, {before:?} before"
    );
    ensure!(
        config_value(&bootstrap, topic, "retention.ms")
            .await?
            .as_deref()
            == Some("86400123"),
        "topic config lost"
    );
    let consumer = group_consumer(&bootstrap, "dr-group")?;
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, 0);
    wanted.add_partition(topic, 1);
    let committed = consumer.committed_offsets(wanted, clients::OP_TIMEOUT)?;
    let got: Vec<Offset> = committed.elements().iter().map(|e| e.offset()).collect();
    ensure!(
        got == vec![Offset::Offset(42), Offset::Offset(7)],
        "committed offsets after recovery: {got:?}"
    );

    let messages =
        clients::consume_from_beginning(&bootstrap, topic, 2, 201, Duration::from_secs(60))?;
    ensure!(
        messages.len() == 201,
        "read back {} of 201 records",
        messages.len()
    );
    let from_http = messages
        .iter()
        .filter(|m| m.payload().is_some_and(|p| p == br#"{"from":"http"}"#))
        .count();
    ensure!(from_http == 1, "{from_http} HTTP records after recovery");

    // The log continues: new records (Kafka, idempotent) land right after.
    let producer = clients::producer_config(&bootstrap)
        .set("enable.idempotence", "true")
        .create::<rdkafka::producer::FutureProducer>()?;
    let (_, offset) = clients::produce_one(&producer, topic, 0, b"k", b"after").await?;
    ensure!(
        offset == 100,
        "first record after recovery at offset {offset}"
    );
    Ok(())
}
