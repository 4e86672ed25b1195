//! Partition ownership with real processes: every restart bumps the leader epoch and records
//! where the new epoch starts (OffsetForLeaderEpoch answers from that history, also for data
//! that was only in the file WAL at the restart), and a restart under another `--node-id` on the
//! same bucket takes every partition over: produce, consume, DeleteRecords and retention work.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use kafka_protocol::messages::{
    delete_records_request, offset_for_leader_epoch_request, BrokerId, DeleteRecordsRequest,
    MetadataRequest, OffsetForLeaderEpochRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::FutureRecord;
use sluice_tests::clients::{self, produce_many};
use sluice_tests::s3::S3Server;
use sluice_tests::wire::RawConnection;
use sluice_tests::{SluiceOptions, SluiceProcess};

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

async fn produce(bootstrap: &str, topic: &str, partition: i32, count: usize) -> Result<()> {
    let producer = clients::producer(bootstrap)?;
    produce_many(&producer, count, |_| {
        FutureRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .payload(b"v".as_slice())
    })
    .await?
    .all_ok()
}

/// (error, epoch, end offset) of OffsetForLeaderEpoch v4 for `epoch` of partition `partition`.
fn epoch_end(bootstrap: &str, topic: &str, partition: i32, epoch: i32) -> Result<(i16, i32, i64)> {
    let mut conn = RawConnection::connect(bootstrap)?;
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                        .with_partition(partition)
                        .with_current_leader_epoch(-1)
                        .with_leader_epoch(epoch),
                ]),
        ]);
    let response = conn.request(&request, 4)?;
    let p = &response.topics[0].partitions[0];
    Ok((p.error_code, p.leader_epoch, p.end_offset))
}

/// (leader id, leader epoch) of every partition of `topic`, from Metadata v12.
fn leaders(bootstrap: &str, topic: &str) -> Result<Vec<(i32, i32)>> {
    let mut conn = RawConnection::connect(bootstrap)?;
    let request = MetadataRequest::default().with_topics(None);
    let response = conn.request(&request, 12)?;
    let t = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
        .context("topic not in metadata")?;
    let mut out: Vec<(i32, i32, i32)> = t
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0, p.leader_epoch))
        .collect();
    out.sort();
    Ok(out.into_iter().map(|(_, id, epoch)| (id, epoch)).collect())
}

/// The file WAL: records still only in the WAL at a restart belong to the older epoch; the new
/// epoch starts after them (recovery records it), across two restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_build_the_epoch_history_offset_for_leader_epoch_answers_from() -> Result<()> {
    // Segments are written after an hour only: everything stays in the file WAL.
    let mut broker = SluiceProcess::start(SluiceOptions::default().arg("--segment-ms", 3_600_000))?;
    let topic = "epochs";
    clients::create_topic(&broker.bootstrap(), topic, 1, &[]).await?;
    produce(&broker.bootstrap(), topic, 0, 3).await?;
    broker.restart()?;
    produce(&broker.bootstrap(), topic, 0, 2).await?;
    broker.restart()?;
    let bootstrap = broker.bootstrap();
    produce(&bootstrap, topic, 0, 1).await?;
    ensure!(
        leaders(&bootstrap, topic)? == vec![(1, 2)],
        "two restarts: epoch 2"
    );
    let answers: Vec<(i16, i32, i64)> = (0..=3)
        .map(|epoch| epoch_end(&bootstrap, topic, 0, epoch))
        .collect::<Result<_>>()?;
    ensure!(
        answers == vec![(0, 0, 3), (0, 1, 5), (0, 2, 6), (0, -1, -1)],
        "OffsetForLeaderEpoch for epochs 0..=3: {answers:?}\n{}",
        broker.log_tail(30)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_another_node_id_takes_every_partition_over() -> Result<()> {
    let s3 = S3Server::start()?;
    let mut broker = SluiceProcess::start(
        SluiceOptions::default()
            .s3(&s3, "takeover")
            .object_wal()
            .arg("--segment-ms", 300)
            .arg("--housekeeping-ms", 100)
            .arg("--gc-grace-ms", 200),
    )?;
    let topic = "takeover";
    clients::create_topic(&broker.bootstrap(), topic, 2, &[]).await?;
    for partition in 0..2 {
        produce(&broker.bootstrap(), topic, partition, 10).await?;
    }
    ensure!(leaders(&broker.bootstrap(), topic)? == vec![(1, 0), (1, 0)]);

    // Same bucket and data dir, new node id.
    broker.terminate()?;
    broker.set_arg("--node-id", 2);
    broker.restart()?;
    let bootstrap = broker.bootstrap();
    // Two bumps: the acquire, then the registration of the new S3-WAL incarnation.
    ensure!(
        leaders(&bootstrap, topic)? == vec![(2, 2), (2, 2)],
        "leaders after the takeover: {:?}",
        leaders(&bootstrap, topic)?
    );
    // Epoch 0 ended where the takeover's epochs started.
    ensure!(epoch_end(&bootstrap, topic, 0, 0)? == (0, 0, 10));

    // Produce and consume work on every partition.
    for partition in 0..2 {
        produce(&bootstrap, topic, partition, 5).await?;
        let (low, high) = clients::watermarks(&bootstrap, topic, partition)?;
        ensure!(
            (low, high) == (0, 15),
            "partition {partition}: {low}..{high}"
        );
    }
    let read = clients::consume_from_beginning(&bootstrap, topic, 2, 30, Duration::from_secs(60))?;
    ensure!(read.len() == 30, "read back {} of 30", read.len());

    // DeleteRecords moves the log start (an epoch-fenced metadata write of the new owner).
    let mut conn = RawConnection::connect(&bootstrap)?;
    let delete = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(4),
            ])]);
    let deleted = conn.request(&delete, 2)?;
    let p = &deleted.topics[0].partitions[0];
    ensure!(
        (p.error_code, p.low_watermark) == (0, 4),
        "DeleteRecords: {p:?}"
    );
    ensure!(clients::watermarks(&bootstrap, topic, 0)? == (4, 15));

    // Retention runs on the taken-over partitions: with retention.ms=1 partition 1's log start
    // moves past its indexed records.
    let admin = clients::admin(&bootstrap)?;
    let config = rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic(topic))
        .set("retention.ms", "1");
    admin
        .alter_configs(&[config], &clients::admin_options())
        .await
        .context("alter retention.ms")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (low, _) = clients::watermarks(&bootstrap, topic, 1)?;
        if low > 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "retention never advanced partition 1's log start\n{}",
            broker.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The file WAL keeps metadata in a local Raft log that belongs to its node id: a start under
/// another id on the same data dir is refused (takeover by node id is a bucket-mode feature).
#[test]
fn the_file_wal_refuses_another_node_id_on_its_data_dir() -> Result<()> {
    let mut broker = SluiceProcess::start(SluiceOptions::default())?;
    broker.terminate()?;
    broker.set_arg("--node-id", 2);
    let restarted = broker.restart();
    ensure!(restarted.is_err(), "a start under node id 2 was accepted");
    let log = std::fs::read_to_string(broker.log_path())?;
    ensure!(
        log.contains("belongs to voters [1], not to node 2"),
        "{}",
        broker.log_tail(40)
    );
    Ok(())
}
