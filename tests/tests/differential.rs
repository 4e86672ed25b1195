//! Differential tests: Sluice against Apache Kafka 4.4.0 (the reference broker, started from the
//! jars `tests/java/setup.sh` resolves).
//!
//! One test function runs every case in sequence against one Kafka JVM and one Sluice process
//! (a JVM start costs seconds; nextest runs each test function in its own process). Each case
//! sends the same request sequence to both brokers, at every version Sluice advertises, and
//! compares the decoded responses field by field after the normalisation in
//! `sluice_tests::diff` (the one place that maps ids, ports and other legitimately different
//! values to fixed ones; known differences are rows of the "Differences from Apache Kafka" table
//! in ARCHITECTURE.md). Behaviour cases (long polls, leader epochs, rebalances) compare what
//! both brokers do over a sequence of requests.
//!
//! Every difference is collected; the test fails at the end listing all of them.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use sluice_tests::diff::{api_name, Broker, Differ, Side};
use sluice_tests::kafka_ref::{KafkaOptions, KafkaProcess};
use sluice_tests::wire::encode_batch;
use sluice_tests::{SluiceOptions, SluiceProcess};

/// Creation timestamps of produced records: fixed (so both brokers store identical batches) and
/// in the past (Kafka 4 refuses timestamps more than an hour in the future).
const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn str(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// One differential case: a request sequence sent to both brokers.
type Case = fn(&mut Differ) -> Result<()>;

#[test]
fn differential_against_apache_kafka() -> Result<()> {
    let started = Instant::now();
    let kafka = KafkaProcess::start(&KafkaOptions::default()).context("starting Apache Kafka")?;
    let kafka_ready = started.elapsed();
    let sluice = SluiceProcess::start(
        SluiceOptions::default().arg("--group-initial-rebalance-delay-ms", 0),
    )?;
    // A second Sluice that never auto-creates topics (unknown_topics).
    let strict = SluiceProcess::start(SluiceOptions::default().auto_create_topics(false))?;
    let mut d = Differ::new(kafka.bootstrap(), &sluice.bootstrap())?;
    eprintln!(
        "kafka {} (ready after {kafka_ready:?}), sluice {}",
        kafka.bootstrap(),
        sluice.bootstrap()
    );

    let cases: &[(&str, Case)] = &[
        ("api_versions", api_versions),
        ("create_topics", create_topics),
        ("metadata", metadata),
        ("produce", produce),
        ("fetch", fetch),
        ("list_offsets", list_offsets),
        ("offset_for_leader_epoch", offset_for_leader_epoch),
        ("find_coordinator", find_coordinator),
        ("groups", groups),
        ("offsets", offsets),
        ("describe_and_list_groups", describe_and_list_groups),
        ("describe_configs", describe_configs),
        ("describe_cluster", describe_cluster),
        ("delete_records", delete_records),
        ("create_partitions", create_partitions),
        ("init_producer_id", init_producer_id),
        ("delete_topics", delete_topics),
        ("long_polls", long_polls),
        ("leader_epochs", leader_epochs),
        ("rebalance", rebalance),
    ];
    for (name, case) in cases {
        let case_started = Instant::now();
        if let Err(err) = case(&mut d) {
            d.fail(format!("case {name} aborted: {err:#}"));
        }
        eprintln!("case {name}: {:?}", case_started.elapsed());
    }
    let case_started = Instant::now();
    if let Err(err) = unknown_topics(&mut d, &strict.bootstrap()) {
        d.fail(format!("case unknown_topics aborted: {err:#}"));
    }
    eprintln!("case unknown_topics: {:?}", case_started.elapsed());

    eprintln!(
        "{} responses compared field by field; versions only Sluice serves (ARCHITECTURE.md D1): {}",
        d.compared,
        d.sluice_only
            .iter()
            .map(|(key, version)| format!("{} v{version}", api_name(*key)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    eprintln!("total {:?}", started.elapsed());
    if !d.failures.is_empty() {
        bail!(
            "{} differences between Sluice and Apache Kafka 4.4.0:\n\n{}\n\nkafka log: {}\n{}",
            d.failures.len(),
            d.failures.join("\n\n"),
            kafka.log_path().display(),
            sluice.log_tail(40)
        );
    }
    Ok(())
}

// --- helpers -----------------------------------------------------------------------------------

/// Creates `topics` (name, partitions) on both brokers at the newest common CreateTopics version
/// and learns their ids.
fn create_on_both(d: &mut Differ, topics: &[(&str, i32)]) -> Result<()> {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(
            topics
                .iter()
                .map(|(name, partitions)| {
                    CreatableTopic::default()
                        .with_name(topic_name(name))
                        .with_num_partitions(*partitions)
                        .with_replication_factor(1)
                })
                .collect(),
        );
    for side in [Side::Kafka, Side::Sluice] {
        let response = d.send(side, "setup", 5, |_| request.clone())?;
        for topic in &response.topics {
            if topic.error_code != 0 {
                bail!(
                    "setup: creating {} on {} failed with error {}",
                    topic.name.0.as_str(),
                    side.name(),
                    topic.error_code
                );
            }
        }
    }
    learn_ids(d, &topics.iter().map(|(name, _)| *name).collect::<Vec<_>>())?;
    for (name, partitions) in topics {
        wait_leaders(d, name, *partitions)?;
    }
    Ok(())
}

/// Waits (bounded) until every partition of `topic` answers ListOffsets without error on both
/// brokers: Kafka's metadata can name a leader a moment before the partition serves requests.
fn wait_leaders(d: &mut Differ, topic: &str, partitions: i32) -> Result<()> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                (0..partitions)
                    .map(|partition| {
                        ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(-1)
                    })
                    .collect(),
            )]);
    let deadline = Instant::now() + Duration::from_secs(15);
    for side in [Side::Kafka, Side::Sluice] {
        loop {
            let response = d.send(side, "setup", 7, |_| request.clone())?;
            let ready = response
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .all(|p| p.error_code == 0);
            if ready {
                break;
            }
            if Instant::now() >= deadline {
                bail!("setup: {topic} not served by {} after 15 s", side.name());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// Asks both brokers for the ids of `topics` (Metadata v12) and remembers them.
fn learn_ids(d: &mut Differ, topics: &[&str]) -> Result<()> {
    let request = MetadataRequest::default().with_topics(Some(
        topics
            .iter()
            .map(|name| MetadataRequestTopic::default().with_name(Some(topic_name(name))))
            .collect(),
    ));
    // Until every partition of every topic has a leader on both brokers (Kafka elects one
    // shortly after creating a topic), bounded.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut ids = Vec::new();
    for side in [Side::Kafka, Side::Sluice] {
        loop {
            let response = d.send(side, "setup", 12, |_| request.clone())?;
            let settled = response.topics.len() == topics.len()
                && response.topics.iter().all(|topic| {
                    topic.error_code == 0
                        && !topic.partitions.is_empty()
                        && topic
                            .partitions
                            .iter()
                            .all(|p| p.error_code == 0 && p.leader_id.0 >= 0)
                });
            if settled {
                ids.push(response.topics);
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "setup: {topics:?} have no leaders on {} after 15 s",
                    side.name()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for topic in topics {
        let find = |list: &Vec<MetadataResponseTopic>| {
            list.iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == *topic))
                .map(|t| t.topic_id)
                .unwrap_or_default()
        };
        let (kafka_id, sluice_id) = (find(&ids[0]), find(&ids[1]));
        d.learn_topic_ids(topic, kafka_id, sluice_id);
    }
    Ok(())
}

/// A batch of `count` records `{prefix}-{i}` with creation timestamps from `timestamp`.
fn batch(prefix: &str, count: usize, timestamp: i64) -> Result<Bytes> {
    let values: Vec<Vec<u8>> = (0..count)
        .map(|index| format!("{prefix}-{index}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    encode_batch(&refs, timestamp, Compression::None)
}

/// A produce request (acks=-1) for `partitions` of `topic`; from v13 the topic goes by id.
fn produce_request(
    broker: &Broker,
    version: i16,
    topic: &str,
    partitions: &[(i32, Bytes)],
) -> ProduceRequest {
    let mut data = TopicProduceData::default().with_partition_data(
        partitions
            .iter()
            .map(|(index, records)| {
                PartitionProduceData::default()
                    .with_index(*index)
                    .with_records(Some(records.clone()))
            })
            .collect(),
    );
    if version >= 13 {
        data = data.with_topic_id(broker.topic_id(topic));
    } else {
        data = data.with_name(topic_name(topic));
    }
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![data])
}

/// Produces the same batches to both brokers (no comparison), failing on any error code.
fn produce_on_both(d: &mut Differ, topic: &str, partitions: &[(i32, Bytes)]) -> Result<()> {
    for side in [Side::Kafka, Side::Sluice] {
        let response = d.send(side, "setup", 9, |broker| {
            produce_request(broker, 9, topic, partitions)
        })?;
        for partition in response
            .responses
            .iter()
            .flat_map(|topic| &topic.partition_responses)
        {
            if partition.error_code != 0 {
                bail!(
                    "setup: produce to {topic} on {} failed with error {}",
                    side.name(),
                    partition.error_code
                );
            }
        }
    }
    Ok(())
}

/// One fetch topic entry (by name, from v13 by id).
fn fetch_topic(
    broker: &Broker,
    version: i16,
    topic: &str,
    partitions: Vec<FetchPartition>,
) -> FetchTopic {
    let entry = FetchTopic::default().with_partitions(partitions);
    if version >= 13 {
        entry.with_topic_id(broker.topic_id(topic))
    } else {
        entry.with_topic(topic_name(topic))
    }
}

fn fetch_partition(partition: i32, offset: i64) -> FetchPartition {
    FetchPartition::default()
        .with_partition(partition)
        .with_fetch_offset(offset)
        .with_current_leader_epoch(-1)
        .with_last_fetched_epoch(-1)
        .with_log_start_offset(-1)
        .with_partition_max_bytes(1024 * 1024)
}

/// A sessionless fetch (session epoch -1: what a client without fetch sessions sends).
fn fetch_request(max_wait_ms: i32, min_bytes: i32, topics: Vec<FetchTopic>) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(50 * 1024 * 1024)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

// --- cases -------------------------------------------------------------------------------------

/// ApiVersions at every version, and the advertised ranges: every API Sluice lists exists in
/// Kafka 4.4 with a max version Kafka serves too (Sluice may keep older versions, D1).
fn api_versions(d: &mut Differ) -> Result<()> {
    for version in d.versions::<ApiVersionsRequest>() {
        d.diff("api_versions", version, |_| {
            let request = ApiVersionsRequest::default();
            if version >= 3 {
                request
                    .with_client_software_name(str("sluice-diff"))
                    .with_client_software_version(str("1.0"))
            } else {
                request
            }
        })?;
    }
    let sluice_versions = d.sluice.versions.clone();
    let mut keys: Vec<_> = sluice_versions.into_iter().collect();
    keys.sort();
    for (key, (_, sluice_max)) in keys {
        match d.kafka.versions.get(&key).copied() {
            None => d.fail(format!(
                "api_versions: Sluice advertises {} which Kafka 4.4 does not have",
                api_name(key)
            )),
            Some((_, kafka_max)) if sluice_max > kafka_max => d.fail(format!(
                "api_versions: Sluice advertises {} up to v{sluice_max}, Kafka 4.4 only to v{kafka_max}",
                api_name(key)
            )),
            Some(_) => {}
        }
    }
    Ok(())
}

/// CreateTopics at every version: a new topic, an existing one, validate-only, bad partition
/// counts, an invalid name, an unknown config.
fn create_topics(d: &mut Differ) -> Result<()> {
    for version in d.versions::<CreateTopicsRequest>() {
        let fresh = format!("ct-{version}");
        let validate_only = format!("ct-validate-{version}");
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(topic_name(&fresh))
                    .with_num_partitions(2)
                    .with_replication_factor(1)
                    .with_configs(vec![CreatableTopicConfig::default()
                        .with_name(str("retention.ms"))
                        .with_value(Some(str("3600000")))]),
                CreatableTopic::default()
                    .with_name(topic_name("ct-bad-partitions"))
                    .with_num_partitions(-5)
                    .with_replication_factor(1),
                CreatableTopic::default()
                    .with_name(topic_name("ct bad name!"))
                    .with_num_partitions(1)
                    .with_replication_factor(1),
                CreatableTopic::default()
                    .with_name(topic_name(&format!("ct-zstd-{version}")))
                    .with_num_partitions(1)
                    .with_replication_factor(1)
                    .with_configs(vec![CreatableTopicConfig::default()
                        .with_name(str("compression.type"))
                        .with_value(Some(str("zstd")))]),
                CreatableTopic::default()
                    .with_name(topic_name("ct-bad-codec"))
                    .with_num_partitions(1)
                    .with_replication_factor(1)
                    .with_configs(vec![CreatableTopicConfig::default()
                        .with_name(str("compression.type"))
                        .with_value(Some(str("none")))]),
                CreatableTopic::default()
                    .with_name(topic_name("ct-bad-config"))
                    .with_num_partitions(1)
                    .with_replication_factor(1)
                    .with_configs(vec![CreatableTopicConfig::default()
                        .with_name(str("no.such.config"))
                        .with_value(Some(str("1")))]),
            ]);
        d.diff("create_topics: new + invalid", version, |_| request.clone())?;
        learn_ids(d, &[&fresh, &format!("ct-zstd-{version}")])?;
        // The same topic again: TOPIC_ALREADY_EXISTS.
        let again = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(&fresh))
                .with_num_partitions(2)
                .with_replication_factor(1)]);
        d.diff("create_topics: already exists", version, |_| again.clone())?;
        let validate = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_validate_only(true)
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(&validate_only))
                .with_num_partitions(3)
                .with_replication_factor(1)]);
        d.diff("create_topics: validate only", version, |_| {
            validate.clone()
        })?;
    }
    Ok(())
}

/// Metadata at every version: all topics, named topics (known, unknown without auto-create),
/// and an unknown topic with auto-create.
fn metadata(d: &mut Differ) -> Result<()> {
    create_on_both(d, &[("md-three", 3)])?;
    for version in d.versions::<MetadataRequest>() {
        // All topics: v0 says so with an empty list, later versions with null.
        let all = if version == 0 { Some(vec![]) } else { None };
        d.diff("metadata: all topics", version, |_| {
            MetadataRequest::default()
                .with_topics(all.clone())
                .with_allow_auto_topic_creation(true)
        })?;
        // Named topics; before v4 every unknown name is auto-created, so only known ones there.
        let mut names = vec!["md-three"];
        if version >= 4 {
            names.push("md-unknown");
        }
        d.diff("metadata: named, no auto-create", version, |_| {
            MetadataRequest::default()
                .with_topics(Some(
                    names
                        .iter()
                        .map(|name| {
                            MetadataRequestTopic::default().with_name(Some(topic_name(name)))
                        })
                        .collect(),
                ))
                .with_allow_auto_topic_creation(version < 4)
        })?;
        if version >= 1 {
            d.diff("metadata: no topics", version, |_| {
                MetadataRequest::default().with_topics(Some(vec![]))
            })?;
        }
        let auto = format!("md-auto-{version}");
        // ARCHITECTURE.md D4: Kafka creates the topic asynchronously and answers this request
        // with UNKNOWN_TOPIC_OR_PARTITION or LEADER_NOT_AVAILABLE and no partitions; Sluice
        // creates it before answering. Both must create it; compared once settled.
        let answers = d.exchange("metadata: unknown topic, auto-create", version, |_| {
            MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(topic_name(&auto)))
                ]))
                .with_allow_auto_topic_creation(true)
        })?;
        if let Some((kafka, sluice)) = answers {
            let code = |r: &MetadataResponse| r.topics.first().map_or(-1, |t| t.error_code);
            let sluice_partitions = sluice.topics.first().map_or(0, |t| t.partitions.len());
            if ![0, 3, 5].contains(&code(&kafka)) || code(&sluice) != 0 || sluice_partitions != 1 {
                d.fail(format!(
                    "metadata v{version}: auto-create answered kafka {}, sluice {} with {sluice_partitions} partitions",
                    code(&kafka),
                    code(&sluice)
                ));
            }
        }
        learn_ids(d, &[&auto])?;
        d.diff("metadata: auto-created topic, settled", version, |_| {
            MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(topic_name(&auto)))
                ]))
                .with_allow_auto_topic_creation(version < 4)
        })?;
    }
    Ok(())
}

/// Produce at every version: two partitions, an unknown partition, an unknown topic.
fn produce(d: &mut Differ) -> Result<()> {
    create_on_both(d, &[("pr-two", 2)])?;
    for version in d.versions::<ProduceRequest>() {
        let timestamp = BASE_TIMESTAMP + i64::from(version) * 1000;
        let first = batch(&format!("v{version}-p0"), 3, timestamp)?;
        let second = batch(&format!("v{version}-p1"), 1, timestamp)?;
        let unknown_partition = batch("nowhere", 1, timestamp)?;
        d.diff(
            "produce: two partitions + unknown partition",
            version,
            |broker| {
                produce_request(
                    broker,
                    version,
                    "pr-two",
                    &[
                        (0, first.clone()),
                        (1, second.clone()),
                        (7, unknown_partition.clone()),
                    ],
                )
            },
        )?;
        // A zstd batch: UNSUPPORTED_COMPRESSION_TYPE below v7 (KIP-110), stored from v7.
        let values = [format!("v{version}-zstd")];
        let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        let zstd = encode_batch(&values, timestamp, Compression::Zstd)?;
        d.diff("produce: zstd batch", version, |broker| {
            produce_request(broker, version, "pr-two", &[(1, zstd.clone())])
        })?;
        if version < 13 {
            // By name; an unknown topic (Produce never auto-creates in Kafka 4).
            let topic = format!("pr-unknown-{version}");
            d.diff("produce: unknown topic", version, |broker| {
                produce_request(broker, version, &topic, &[(0, first.clone())])
            })?;
        } else {
            d.diff("produce: unknown topic id", version, |_| {
                ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(10_000)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_topic_id(uuid::Uuid::from_u128(0x5eed))
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(first.clone()))])])
            })?;
        }
    }
    Ok(())
}

/// Fetch at every version: everything from offset 0, from an offset in the middle of a batch,
/// at the high watermark (empty, short wait), past it (OFFSET_OUT_OF_RANGE), and an unknown
/// partition next to a good one.
fn fetch(d: &mut Differ) -> Result<()> {
    create_on_both(d, &[("fe-two", 2)])?;
    produce_on_both(
        d,
        "fe-two",
        &[
            (0, batch("a", 4, BASE_TIMESTAMP)?),
            (1, batch("b", 2, BASE_TIMESTAMP)?),
        ],
    )?;
    produce_on_both(d, "fe-two", &[(0, batch("c", 3, BASE_TIMESTAMP + 10)?)])?;
    for version in d.versions::<FetchRequest>() {
        d.diff("fetch: from 0, both partitions", version, |broker| {
            fetch_request(
                0,
                1,
                vec![fetch_topic(
                    broker,
                    version,
                    "fe-two",
                    vec![fetch_partition(0, 0), fetch_partition(1, 0)],
                )],
            )
        })?;
        d.diff("fetch: middle of a batch", version, |broker| {
            fetch_request(
                0,
                1,
                vec![fetch_topic(
                    broker,
                    version,
                    "fe-two",
                    vec![fetch_partition(0, 5)],
                )],
            )
        })?;
        d.diff("fetch: at the high watermark", version, |broker| {
            fetch_request(
                50,
                1,
                vec![fetch_topic(
                    broker,
                    version,
                    "fe-two",
                    vec![fetch_partition(1, 2)],
                )],
            )
        })?;
        d.diff("fetch: past the high watermark", version, |broker| {
            fetch_request(
                0,
                1,
                vec![fetch_topic(
                    broker,
                    version,
                    "fe-two",
                    vec![fetch_partition(1, 50)],
                )],
            )
        })?;
        // read_committed: the aborted-transactions list is present (empty), not null.
        d.diff("fetch: read_committed", version, |broker| {
            fetch_request(
                0,
                1,
                vec![fetch_topic(
                    broker,
                    version,
                    "fe-two",
                    vec![fetch_partition(0, 0), fetch_partition(9, 0)],
                )],
            )
            .with_isolation_level(1)
        })?;
        if version >= 7 {
            // A client opening a fetch session (epoch 0, as the Java client and librdkafka do):
            // Kafka creates one, Sluice declines (session id 0, D7); everything else is equal.
            let answers = d.exchange("fetch: session requested", version, |broker| {
                fetch_request(
                    0,
                    1,
                    vec![fetch_topic(
                        broker,
                        version,
                        "fe-two",
                        vec![fetch_partition(1, 0)],
                    )],
                )
                .with_session_epoch(0)
            })?;
            if let Some((mut kafka, sluice)) = answers {
                if kafka.session_id == 0 || sluice.session_id != 0 {
                    d.fail(format!(
                        "fetch v{version}: session ids kafka {}, sluice {} (expected a session from Kafka only)",
                        kafka.session_id, sluice.session_id
                    ));
                }
                kafka.session_id = 0;
                d.compare(
                    &format!("fetch: session requested (Fetch v{version})"),
                    &kafka,
                    &sluice,
                );
            }
        }
        d.diff(
            "fetch: unknown partition next to a good one",
            version,
            |broker| {
                fetch_request(
                    0,
                    1,
                    vec![fetch_topic(
                        broker,
                        version,
                        "fe-two",
                        vec![fetch_partition(0, 7), fetch_partition(9, 0)],
                    )],
                )
            },
        )?;
    }
    Ok(())
}

/// ListOffsets at every version: earliest, latest, by timestamp (inside and past the data), max
/// timestamp (v7+), an unknown partition; from v4 with the current leader epoch and a future one.
fn list_offsets(d: &mut Differ) -> Result<()> {
    create_on_both(d, &[("lo-two", 2)])?;
    produce_on_both(d, "lo-two", &[(0, batch("x", 5, BASE_TIMESTAMP)?)])?;
    produce_on_both(d, "lo-two", &[(0, batch("y", 2, BASE_TIMESTAMP + 100)?)])?;
    for version in d.versions::<ListOffsetsRequest>() {
        // -3 max timestamp (v7+), -4 earliest local (v8+), -5 latest tiered (v9+; no tiered
        // storage: no offset) at every version: older versions get UNSUPPORTED_VERSION.
        let mut queries: Vec<(i32, i64, i32)> = vec![
            (0, -2, -1),
            (0, -1, -1),
            (0, BASE_TIMESTAMP + 2, -1),
            (0, BASE_TIMESTAMP + 50, -1),
            (0, BASE_TIMESTAMP + 10_000, -1),
            (1, -1, -1),
            (0, -3, -1),
            (0, -4, -1),
            (0, -5, -1),
            (1, -5, -1),
        ];
        if version >= 4 {
            queries.push((0, -1, 0));
        }
        for (index, (partition, timestamp, epoch)) in queries.into_iter().enumerate() {
            d.diff(&format!("list_offsets: query {index}"), version, |_| {
                list_offsets_request(version, "lo-two", &[(partition, timestamp, epoch)])
            })?;
        }
        if version >= 4 {
            d.diff(
                "list_offsets: future leader epoch + good partition",
                version,
                |_| list_offsets_request(version, "lo-two", &[(0, -1, 5), (1, -1, -1)]),
            )?;
        }
        d.diff(
            "list_offsets: unknown partition + good partition",
            version,
            |_| list_offsets_request(version, "lo-two", &[(0, -1, -1), (9, -1, -1)]),
        )?;
        d.diff("list_offsets: unknown topic", version, |_| {
            list_offsets_request(version, "lo-unknown", &[(0, -1, -1)])
        })?;
    }
    Ok(())
}

fn list_offsets_request(
    version: i16,
    topic: &str,
    queries: &[(i32, i64, i32)],
) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(0)
        .with_timeout_ms(if version >= 10 { 10_000 } else { 0 })
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                queries
                    .iter()
                    .map(|(partition, timestamp, epoch)| {
                        ListOffsetsPartition::default()
                            .with_partition_index(*partition)
                            .with_timestamp(*timestamp)
                            .with_current_leader_epoch(if version >= 4 { *epoch } else { -1 })
                    })
                    .collect(),
            )])
}

/// OffsetForLeaderEpoch at every version: the current epoch, with and without fencing, a future
/// current epoch (UNKNOWN_LEADER_EPOCH), an unknown partition.
fn offset_for_leader_epoch(d: &mut Differ) -> Result<()> {
    create_on_both(d, &[("ep-one", 1)])?;
    produce_on_both(d, "ep-one", &[(0, batch("e", 3, BASE_TIMESTAMP)?)])?;
    for version in d.versions::<OffsetForLeaderEpochRequest>() {
        for (index, (partition, current, epoch)) in
            [(0, -1, 0), (0, 0, 0), (0, 7, 0), (0, 0, 3), (4, -1, 0)]
                .into_iter()
                .enumerate()
        {
            d.diff(
                &format!("offset_for_leader_epoch: query {index}"),
                version,
                |_| {
                    OffsetForLeaderEpochRequest::default()
                        .with_replica_id(BrokerId(if version >= 3 { -1 } else { -2 }))
                        .with_topics(vec![OffsetForLeaderTopic::default()
                            .with_topic(topic_name("ep-one"))
                            .with_partitions(vec![OffsetForLeaderPartition::default()
                                .with_partition(partition)
                                .with_current_leader_epoch(current)
                                .with_leader_epoch(epoch)])])
                },
            )?;
        }
    }
    Ok(())
}

/// Repeats `request` on Kafka alone until `ready` accepts the answer (bounded): Kafka creates
/// internal state lazily (ARCHITECTURE.md D5) and answers "try again" meanwhile.
fn warm_up_kafka<R, F>(d: &mut Differ, what: &str, version: i16, request: R, ready: F) -> Result<()>
where
    R: kafka_protocol::protocol::Request + Clone,
    F: Fn(&R::Response) -> bool,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = d.send(Side::Kafka, what, version, |_| request.clone())?;
        if ready(&response) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what}: Kafka not ready after 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// FindCoordinator at every version (a group; from v4 a batch of two keys). Kafka creates
/// __consumer_offsets on the first lookup and answers COORDINATOR_NOT_AVAILABLE until it exists
/// (D5); Sluice answers at once. Compared once Kafka has it.
fn find_coordinator(d: &mut Differ) -> Result<()> {
    let first = d.send(Side::Sluice, "find_coordinator: first lookup", 3, |_| {
        FindCoordinatorRequest::default()
            .with_key(str("fc-first"))
            .with_key_type(0)
    })?;
    if first.error_code != 0 {
        d.fail(format!(
            "find_coordinator: Sluice's first lookup answered {}",
            first.error_code
        ));
    }
    warm_up_kafka(
        d,
        "find_coordinator warm-up",
        3,
        FindCoordinatorRequest::default()
            .with_key(str("fc-first"))
            .with_key_type(0),
        |r| r.error_code == 0,
    )?;
    for version in d.versions::<FindCoordinatorRequest>() {
        d.diff("find_coordinator: group", version, |_| {
            if version >= 4 {
                FindCoordinatorRequest::default()
                    .with_key_type(0)
                    .with_coordinator_keys(vec![str("fc-group-a"), str("fc-group-b")])
            } else {
                let request = FindCoordinatorRequest::default().with_key(str("fc-group-a"));
                if version >= 1 {
                    request.with_key_type(0)
                } else {
                    request
                }
            }
        })?;
    }
    Ok(())
}

/// Consumer-protocol subscription metadata for `topics` (version 0, no user data).
fn subscription(topics: &[&str]) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for topic in topics {
        out.extend_from_slice(&(topic.len() as i16).to_be_bytes());
        out.extend_from_slice(topic.as_bytes());
    }
    out.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(out)
}

/// Consumer-protocol assignment: `topic` → `partitions` (version 0, no user data).
fn assignment(topic: &str, partitions: &[i32]) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
    for partition in partitions {
        out.extend_from_slice(&partition.to_be_bytes());
    }
    out.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(out)
}

fn join_request(version: i16, group: &str, member_id: &str) -> JoinGroupRequest {
    let mut request = JoinGroupRequest::default()
        .with_group_id(GroupId(str(group)))
        .with_session_timeout_ms(10_000)
        .with_member_id(str(member_id))
        .with_protocol_type(str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(str("range"))
            .with_metadata(subscription(&["gr-topic"]))]);
    if version >= 1 {
        request = request.with_rebalance_timeout_ms(10_000);
    }
    request
}

/// The member id a JoinGroup answer gives (from the MEMBER_ID_REQUIRED answer or the join).
fn member_of(response: &JoinGroupResponse) -> String {
    response.member_id.as_str().to_string()
}

/// Joins `group` alone on each broker (first asking for a member id from v4), compared step by
/// step; returns (kafka member id, sluice member id, generation).
fn join_alone(d: &mut Differ, version: i16, group: &str) -> Result<Option<(String, String, i32)>> {
    let Some((kafka, sluice)) = d.diff("groups: join", version, |_| {
        join_request(version, group, "")
    })?
    else {
        return Ok(None);
    };
    let (kafka, sluice) = if kafka.error_code == 79 {
        let (kafka_id, sluice_id) = (member_of(&kafka), member_of(&sluice));
        let Some(pair) = d.diff("groups: join with member id", version, |broker| {
            let id = if broker.side == Side::Kafka {
                &kafka_id
            } else {
                &sluice_id
            };
            join_request(version, group, id)
        })?
        else {
            return Ok(None);
        };
        pair
    } else {
        (kafka, sluice)
    };
    Ok(Some((
        member_of(&kafka),
        member_of(&sluice),
        kafka.generation_id,
    )))
}

fn member_for(broker: &Broker, ids: &(String, String)) -> StrBytes {
    str(if broker.side == Side::Kafka {
        &ids.0
    } else {
        &ids.1
    })
}

/// A whole classic group life cycle at every JoinGroup version (SyncGroup, Heartbeat and
/// LeaveGroup at the same version, capped at theirs): join (MEMBER_ID_REQUIRED first from v4),
/// sync as leader, heartbeat, commit and fetch offsets, describe, leave, heartbeat after leaving.
fn groups(d: &mut Differ) -> Result<()> {
    create_on_both(d, &[("gr-topic", 2)])?;
    let sync_max = *d.versions::<SyncGroupRequest>().last().unwrap_or(&0);
    let heartbeat_max = *d.versions::<HeartbeatRequest>().last().unwrap_or(&0);
    let leave_max = *d.versions::<LeaveGroupRequest>().last().unwrap_or(&0);
    for version in d.versions::<JoinGroupRequest>() {
        let group = format!("gr-{version}");
        let Some((kafka_id, sluice_id, generation)) = join_alone(d, version, &group)? else {
            continue;
        };
        let ids = (kafka_id, sluice_id);
        let sync_version = version.min(sync_max);
        d.diff("groups: sync as leader", sync_version, |broker| {
            let mut request = SyncGroupRequest::default()
                .with_group_id(GroupId(str(&group)))
                .with_generation_id(generation)
                .with_member_id(member_for(broker, &ids))
                .with_assignments(vec![SyncGroupRequestAssignment::default()
                    .with_member_id(member_for(broker, &ids))
                    .with_assignment(assignment("gr-topic", &[0, 1]))]);
            if sync_version >= 5 {
                request = request
                    .with_protocol_type(Some(str("consumer")))
                    .with_protocol_name(Some(str("range")));
            }
            request
        })?;
        let heartbeat_version = version.min(heartbeat_max);
        let heartbeat = |generation: i32| {
            let group = group.clone();
            let ids = ids.clone();
            move |broker: &Broker| {
                HeartbeatRequest::default()
                    .with_group_id(GroupId(str(&group)))
                    .with_generation_id(generation)
                    .with_member_id(member_for(broker, &ids))
            }
        };
        d.diff(
            "groups: heartbeat",
            heartbeat_version,
            heartbeat(generation),
        )?;
        d.diff(
            "groups: heartbeat, wrong generation",
            heartbeat_version,
            heartbeat(generation + 5),
        )?;
        let leave_version = version.min(leave_max);
        d.diff("groups: leave", leave_version, |broker| {
            let request = LeaveGroupRequest::default().with_group_id(GroupId(str(&group)));
            if leave_version >= 3 {
                request.with_members(vec![
                    MemberIdentity::default().with_member_id(member_for(broker, &ids))
                ])
            } else {
                request.with_member_id(member_for(broker, &ids))
            }
        })?;
        d.diff(
            "groups: heartbeat after leaving",
            heartbeat_version,
            heartbeat(generation),
        )?;
        // D6: Kafka keeps listing a group whose last member left as Empty until its periodic
        // cleanup even without committed offsets; Sluice lists an empty group only while it has
        // offsets. Committing one makes both list it (describe_and_list_groups).
        let commit_version = *d.versions::<OffsetCommitRequest>().last().unwrap_or(&2);
        d.diff("groups: commit after leaving", commit_version, |_| {
            OffsetCommitRequest::default()
                .with_group_id(GroupId(str(&group)))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(topic_name("gr-topic"))
                    .with_partitions(vec![OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(0)])])
        })?;
    }
    Ok(())
}

/// A stable one-member group `group` at the newest common versions, with offsets committed for
/// partition 0 of gr-topic; returns the member ids.
fn stable_group(d: &mut Differ, group: &str) -> Result<(String, String)> {
    let join_version = *d.versions::<JoinGroupRequest>().last().unwrap_or(&0);
    let (kafka_id, sluice_id, generation) =
        join_alone(d, join_version, group)?.context("JoinGroup not served by Kafka")?;
    let ids = (kafka_id, sluice_id);
    let sync_version = *d.versions::<SyncGroupRequest>().last().unwrap_or(&0);
    d.diff("groups: sync (stable group)", sync_version, |broker| {
        SyncGroupRequest::default()
            .with_group_id(GroupId(str(group)))
            .with_generation_id(generation)
            .with_member_id(member_for(broker, &ids))
            .with_protocol_type(Some(str("consumer")))
            .with_protocol_name(Some(str("range")))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(member_for(broker, &ids))
                .with_assignment(assignment("gr-topic", &[0, 1]))])
    })?;
    Ok(ids)
}

/// OffsetCommit at every version (a standalone group: generation -1, no member) and OffsetFetch
/// at every version: committed, uncommitted and unknown partitions, all topics (v2+), several
/// groups (v8+).
fn offsets(d: &mut Differ) -> Result<()> {
    create_on_both(d, &[("of-topic", 3)])?;
    produce_on_both(d, "of-topic", &[(0, batch("o", 10, BASE_TIMESTAMP)?)])?;
    for version in d.versions::<OffsetCommitRequest>() {
        let group = format!("oc-{version}");
        d.diff("offset_commit: standalone group", version, |_| {
            let mut request = OffsetCommitRequest::default()
                .with_group_id(GroupId(str(&group)))
                .with_generation_id_or_member_epoch(-1)
                .with_member_id(str(""))
                .with_topics(vec![
                    OffsetCommitRequestTopic::default()
                        .with_name(topic_name("of-topic"))
                        .with_partitions(vec![
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(7)
                                .with_committed_leader_epoch(if version >= 6 { 0 } else { -1 })
                                .with_committed_metadata(Some(str("meta"))),
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(1)
                                .with_committed_offset(0)
                                .with_committed_metadata(None),
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(9)
                                .with_committed_offset(1),
                        ]),
                    OffsetCommitRequestTopic::default()
                        .with_name(topic_name("of-unknown"))
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(1)]),
                ]);
            if (2..=4).contains(&version) {
                request = request.with_retention_time_ms(-1);
            }
            request
        })?;
    }
    let commit_max = *d.versions::<OffsetCommitRequest>().last().unwrap_or(&2);
    let committed_group = format!("oc-{commit_max}");
    for version in d.versions::<OffsetFetchRequest>() {
        let partitions = vec![0, 1, 2, 9];
        if version < 8 {
            d.diff("offset_fetch: named partitions", version, |_| {
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(str(&committed_group)))
                    .with_topics(Some(vec![
                        OffsetFetchRequestTopic::default()
                            .with_name(topic_name("of-topic"))
                            .with_partition_indexes(partitions.clone()),
                        OffsetFetchRequestTopic::default()
                            .with_name(topic_name("of-unknown"))
                            .with_partition_indexes(vec![0]),
                    ]))
            })?;
            if version >= 2 {
                d.diff("offset_fetch: all topics", version, |_| {
                    OffsetFetchRequest::default()
                        .with_group_id(GroupId(str(&committed_group)))
                        .with_topics(None)
                })?;
                d.diff("offset_fetch: unknown group", version, |_| {
                    OffsetFetchRequest::default()
                        .with_group_id(GroupId(str("of-nobody")))
                        .with_topics(None)
                })?;
            }
        } else {
            d.diff("offset_fetch: several groups", version, |_| {
                OffsetFetchRequest::default().with_groups(vec![
                    OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(str(&committed_group)))
                        .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                            .with_name(topic_name("of-topic"))
                            .with_partition_indexes(partitions.clone())])),
                    OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(str(&committed_group)))
                        .with_topics(None),
                    OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(str("of-nobody")))
                        .with_topics(None),
                ])
            })?;
        }
    }
    Ok(())
}

/// DescribeGroups and ListGroups at every version, with a stable group, an empty (standalone)
/// group with offsets and an unknown group.
fn describe_and_list_groups(d: &mut Differ) -> Result<()> {
    let _ids = stable_group(d, "dg-stable")?;
    for version in d.versions::<DescribeGroupsRequest>() {
        d.diff("describe_groups", version, |_| {
            DescribeGroupsRequest::default().with_groups(vec![
                GroupId(str("dg-stable")),
                GroupId(str("oc-2")),
                GroupId(str("dg-unknown")),
            ])
        })?;
    }
    for version in d.versions::<ListGroupsRequest>() {
        d.diff("list_groups", version, |_| ListGroupsRequest::default())?;
        if version >= 4 {
            d.diff("list_groups: stable only", version, |_| {
                ListGroupsRequest::default().with_states_filter(vec![str("Stable")])
            })?;
        }
    }
    Ok(())
}

/// DescribeConfigs at every version: a topic's named configs, all its configs (compared on the
/// configs Sluice implements, D3), an unknown topic.
fn describe_configs(d: &mut Differ) -> Result<()> {
    create_on_both(d, &[("dc-topic", 1)])?;
    for version in d.versions::<DescribeConfigsRequest>() {
        let resource = |name: &str, keys: Option<Vec<StrBytes>>| {
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(str(name))
                .with_configuration_keys(keys)
        };
        d.diff("describe_configs: named keys", version, |_| {
            DescribeConfigsRequest::default().with_resources(vec![resource(
                "dc-topic",
                Some(vec![
                    str("retention.ms"),
                    str("cleanup.policy"),
                    str("max.message.bytes"),
                ]),
            )])
        })?;
        d.diff("describe_configs: all keys", version, |_| {
            DescribeConfigsRequest::default().with_resources(vec![resource("dc-topic", None)])
        })?;
        d.diff("describe_configs: unknown topic", version, |_| {
            DescribeConfigsRequest::default().with_resources(vec![resource("dc-unknown", None)])
        })?;
    }
    Ok(())
}

/// DescribeCluster at every version: brokers (v1+: the endpoint type asked for), controllers
/// (v1+: MISMATCHED_ENDPOINT_TYPE on a broker listener, also on Kafka's combined node), unknown
/// endpoint types (UNSUPPORTED_ENDPOINT_TYPE), v2 with fenced brokers included.
fn describe_cluster(d: &mut Differ) -> Result<()> {
    for version in d.versions::<DescribeClusterRequest>() {
        let endpoint_types: &[i8] = if version >= 1 { &[1, 2, 3, 0] } else { &[1] };
        for endpoint_type in endpoint_types {
            for include_fenced in [false, version >= 2] {
                d.diff(
                    &format!(
                        "describe_cluster: endpoint type {endpoint_type}, fenced {include_fenced}"
                    ),
                    version,
                    |_| {
                        DescribeClusterRequest::default()
                            .with_include_cluster_authorized_operations(false)
                            .with_endpoint_type(*endpoint_type)
                            .with_include_fenced_brokers(include_fenced)
                    },
                )?;
            }
        }
    }
    Ok(())
}

/// DeleteRecords at every version: below the high watermark, at it (-1), past it, an unknown
/// partition.
fn delete_records(d: &mut Differ) -> Result<()> {
    for version in d.versions::<DeleteRecordsRequest>() {
        let topic = format!("dr-{version}");
        create_on_both(d, &[(&topic, 2)])?;
        produce_on_both(
            d,
            &topic,
            &[
                (0, batch("d", 6, BASE_TIMESTAMP)?),
                (1, batch("d", 2, BASE_TIMESTAMP)?),
            ],
        )?;
        d.diff("delete_records", version, |_| {
            DeleteRecordsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(topic_name(&topic))
                    .with_partitions(vec![
                        DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(3),
                        DeleteRecordsPartition::default()
                            .with_partition_index(1)
                            .with_offset(-1),
                        DeleteRecordsPartition::default()
                            .with_partition_index(7)
                            .with_offset(1),
                    ])])
        })?;
        d.diff("delete_records: past the high watermark", version, |_| {
            DeleteRecordsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(topic_name(&topic))
                    .with_partitions(vec![DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(60)])])
        })?;
        // The log start moved: ListOffsets earliest and a fetch below it.
        d.diff("delete_records: earliest after", 7, |_| {
            list_offsets_request(7, &topic, &[(0, -2, -1), (1, -2, -1)])
        })?;
        d.diff("delete_records: fetch below the log start", 12, |broker| {
            fetch_request(
                0,
                1,
                vec![fetch_topic(broker, 12, &topic, vec![fetch_partition(0, 1)])],
            )
        })?;
    }
    Ok(())
}

/// CreatePartitions at every version: grow, same count, shrink, unknown topic, validate only.
fn create_partitions(d: &mut Differ) -> Result<()> {
    for version in d.versions::<CreatePartitionsRequest>() {
        let topic = format!("cp-{version}");
        create_on_both(d, &[(&topic, 1)])?;
        let request = |count: i32, validate_only: bool, name: &str| {
            CreatePartitionsRequest::default()
                .with_timeout_ms(10_000)
                .with_validate_only(validate_only)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(topic_name(name))
                    .with_count(count)
                    .with_assignments(None)])
        };
        d.diff("create_partitions: validate only", version, |_| {
            request(4, true, &topic)
        })?;
        d.diff("create_partitions: grow", version, |_| {
            request(3, false, &topic)
        })?;
        d.diff("create_partitions: same count", version, |_| {
            request(3, false, &topic)
        })?;
        d.diff("create_partitions: shrink", version, |_| {
            request(2, false, &topic)
        })?;
        d.diff("create_partitions: unknown topic", version, |_| {
            request(2, false, "cp-unknown")
        })?;
        learn_ids(d, &[&topic])?;
        // Kafka's metadata cache follows the controller asynchronously.
        warm_up_kafka(
            d,
            "create_partitions: metadata settles",
            12,
            MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(&topic)))
            ])),
            |r| r.topics.first().is_some_and(|t| t.partitions.len() == 3),
        )?;
        d.diff("create_partitions: metadata after", 12, |_| {
            MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(&topic)))
            ]))
        })?;
    }
    Ok(())
}

/// InitProducerId at every version (idempotent producer, no transactional id). Kafka answers
/// COORDINATOR_LOAD_IN_PROGRESS until its first block of producer ids arrives from the
/// controller (D5); compared once it has one.
fn init_producer_id(d: &mut Differ) -> Result<()> {
    warm_up_kafka(
        d,
        "init_producer_id warm-up",
        4,
        InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
        |r| r.error_code == 0,
    )?;
    for version in d.versions::<InitProducerIdRequest>() {
        d.diff("init_producer_id", version, |_| {
            let request = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000);
            if version >= 3 {
                request
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
            } else {
                request
            }
        })?;
        // KIP-360 (v3+): a producer presenting the id and epoch it was given. Without a
        // transactional id Kafka hands out a fresh id at epoch 0 (the pair is not checked, the
        // epoch not bumped); a broker that bumped it would answer epoch 1.
        let first = if version >= 3 {
            d.diff("init_producer_id: first", version, |_| {
                InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_transaction_timeout_ms(60_000)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
            })?
        } else {
            None
        };
        if let Some((kafka, sluice)) = first {
            let again = d.diff("init_producer_id: KIP-360 bump", version, |broker| {
                let first = match broker.side {
                    Side::Kafka => &kafka,
                    Side::Sluice => &sluice,
                };
                InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_transaction_timeout_ms(60_000)
                    .with_producer_id(first.producer_id)
                    .with_producer_epoch(first.producer_epoch)
            })?;
            if let Some((_, sluice_again)) = again {
                if sluice_again.producer_id == sluice.producer_id {
                    d.fail(format!(
                        "init_producer_id v{version}: presenting id {} gave the same id back",
                        sluice.producer_id.0
                    ));
                }
            }
        }
        // An empty transactional id is not "no transactional id".
        d.diff("init_producer_id: empty transactional id", version, |_| {
            InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(str(""))))
                .with_transaction_timeout_ms(60_000)
        })?;
    }
    Ok(())
}

/// DeleteTopics at every version: an existing topic and an unknown one (by id from v6).
fn delete_topics(d: &mut Differ) -> Result<()> {
    for version in d.versions::<DeleteTopicsRequest>() {
        let topic = format!("dt-{version}");
        create_on_both(d, &[(&topic, 1)])?;
        d.diff("delete_topics", version, |_| {
            let request = DeleteTopicsRequest::default().with_timeout_ms(10_000);
            if version >= 6 {
                request.with_topics(vec![
                    DeleteTopicState::default().with_name(Some(topic_name(&topic))),
                    DeleteTopicState::default().with_name(Some(topic_name("dt-unknown"))),
                    DeleteTopicState::default().with_topic_id(uuid::Uuid::from_u128(0xdead)),
                ])
            } else {
                request.with_topic_names(vec![topic_name(&topic), topic_name("dt-unknown")])
            }
        })?;
        let gone = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(&topic)))
            ]))
            .with_allow_auto_topic_creation(false);
        // Kafka's metadata cache follows the controller asynchronously.
        warm_up_kafka(d, "delete_topics: metadata settles", 12, gone, |r| {
            r.topics.first().is_some_and(|t| t.error_code == 3)
        })?;
        d.diff("delete_topics: metadata after", 12, |_| {
            MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(topic_name(&topic)))
                ]))
                .with_allow_auto_topic_creation(false)
        })?;
    }
    Ok(())
}

// --- behaviour ---------------------------------------------------------------------------------

/// The newest version of `R` both brokers serve.
fn newest<R: kafka_protocol::protocol::Request>(d: &Differ) -> i16 {
    d.versions::<R>()
        .into_iter()
        .filter(|v| d.kafka.supports(R::KEY, *v))
        .max()
        .unwrap_or(0)
}

/// Long polls: an empty fetch waits out max_wait; a fetch short of min_bytes waits too and then
/// returns what there is; a waiting fetch is answered soon after a produce lands.
fn long_polls(d: &mut Differ) -> Result<()> {
    create_on_both(d, &[("lp-topic", 1), ("lp-three", 3)])?;
    let version = newest::<FetchRequest>(d);
    let max_wait = Duration::from_millis(400);
    let wait_ms = max_wait.as_millis() as i32;
    // Empty partition: waits max_wait, answers empty.
    let mut answers = Vec::new();
    for side in [Side::Kafka, Side::Sluice] {
        let started = Instant::now();
        let response = d.send(side, "long poll: empty", version, |broker| {
            fetch_request(
                wait_ms,
                1,
                vec![fetch_topic(
                    broker,
                    version,
                    "lp-topic",
                    vec![fetch_partition(0, 0)],
                )],
            )
        })?;
        let elapsed = started.elapsed();
        if elapsed < max_wait - Duration::from_millis(50)
            || elapsed > max_wait + Duration::from_secs(5)
        {
            d.fail(format!(
                "long poll: empty fetch with max_wait {max_wait:?} answered after {elapsed:?} by {}",
                side.name()
            ));
        }
        answers.push(response);
    }
    d.compare("long poll: empty fetch", &answers[0], &answers[1]);

    // Some data but less than min_bytes: waits max_wait, then answers with the data.
    produce_on_both(d, "lp-topic", &[(0, batch("l", 2, BASE_TIMESTAMP)?)])?;
    let mut answers = Vec::new();
    for side in [Side::Kafka, Side::Sluice] {
        let started = Instant::now();
        let response = d.send(side, "long poll: below min_bytes", version, |broker| {
            fetch_request(
                wait_ms,
                1 << 20,
                vec![fetch_topic(
                    broker,
                    version,
                    "lp-topic",
                    vec![fetch_partition(0, 0)],
                )],
            )
        })?;
        let elapsed = started.elapsed();
        if elapsed < max_wait - Duration::from_millis(50)
            || elapsed > max_wait + Duration::from_secs(5)
        {
            d.fail(format!(
                "long poll: fetch below min_bytes with max_wait {max_wait:?} answered after {elapsed:?} by {}",
                side.name()
            ));
        }
        answers.push(response);
    }
    d.compare("long poll: below min_bytes", &answers[0], &answers[1]);

    // A fetch waiting (max_wait 5 s) at the end of the log is answered once a produce lands.
    let mut answers = Vec::new();
    for side in [Side::Kafka, Side::Sluice] {
        let records = batch("late", 1, BASE_TIMESTAMP + 5)?;
        let broker = d.broker(side);
        let mut producer = broker.another()?;
        // Not woken, it would wait 20 s; woken, it answers soon after the produce.
        let request = fetch_request(
            20_000,
            1,
            vec![fetch_topic(
                broker,
                version,
                "lp-topic",
                vec![fetch_partition(0, 2)],
            )],
        );
        let started = Instant::now();
        let correlation_id = broker.start(&request, version)?;
        std::thread::sleep(Duration::from_millis(200));
        let produced = producer.conn.request(
            &produce_request(&producer, 9, "lp-topic", &[(0, records)]),
            9,
        )?;
        let code = produced.responses[0].partition_responses[0].error_code;
        let response =
            broker.finish::<FetchRequest>(correlation_id, version, Duration::from_secs(30))?;
        let elapsed = started.elapsed();
        if code != 0 || elapsed > Duration::from_secs(10) {
            d.fail(format!(
                "long poll: {} answered a waiting fetch {elapsed:?} after it was sent (produce error {code})",
                side.name()
            ));
        }
        answers.push(response);
    }
    d.compare("long poll: woken by a produce", &answers[0], &answers[1]);

    // The same with three empty partitions in one request (what a consumer-group member fetching
    // all its partitions from one broker sends) and a produce to the middle one.
    // At Fetch v4 (the oldest), v10 (what Sarama 1.2x sends) and the newest.
    for (round, version) in [4, 10, version].into_iter().enumerate() {
        let middle_offset = 2 * round as i64;
        let mut answers = Vec::new();
        for side in [Side::Kafka, Side::Sluice] {
            let records = batch("mid", 2, BASE_TIMESTAMP + 7)?;
            let broker = d.broker(side);
            let mut producer = broker.another()?;
            let request = fetch_request(
                20_000,
                1,
                vec![fetch_topic(
                    broker,
                    version,
                    "lp-three",
                    vec![
                        fetch_partition(0, 0),
                        fetch_partition(1, middle_offset),
                        fetch_partition(2, 0),
                    ],
                )],
            );
            let started = Instant::now();
            let correlation_id = broker.start(&request, version)?;
            std::thread::sleep(Duration::from_millis(200));
            let produced = producer.conn.request(
                &produce_request(&producer, 9, "lp-three", &[(1, records)]),
                9,
            )?;
            let code = produced.responses[0].partition_responses[0].error_code;
            let response =
                broker.finish::<FetchRequest>(correlation_id, version, Duration::from_secs(30))?;
            let elapsed = started.elapsed();
            if code != 0 || elapsed > Duration::from_secs(10) {
                d.fail(format!(
                "long poll: {} answered a waiting three-partition fetch {elapsed:?} after it was sent (produce error {code})",
                side.name()
            ));
            }
            answers.push(response);
        }
        d.compare(
            &format!("long poll: three partitions, one woken (Fetch v{version})"),
            &answers[0],
            &answers[1],
        );
    }
    Ok(())
}

/// Leader epochs and errors in one partition of a multi-partition request: a fetch naming the
/// current epoch, a future epoch (UNKNOWN_LEADER_EPOCH) and an unknown partition, next to a
/// good partition; the same for ListOffsets.
fn leader_epochs(d: &mut Differ) -> Result<()> {
    create_on_both(d, &[("le-three", 3)])?;
    produce_on_both(
        d,
        "le-three",
        &[
            (0, batch("p", 2, BASE_TIMESTAMP)?),
            (1, batch("q", 2, BASE_TIMESTAMP)?),
            (2, batch("r", 2, BASE_TIMESTAMP)?),
        ],
    )?;
    for version in d.versions::<FetchRequest>().into_iter().filter(|v| *v >= 9) {
        d.diff(
            "leader epochs: fetch with current, future, none, unknown partition",
            version,
            |broker| {
                let with_epoch = |partition: i32, epoch: i32| {
                    fetch_partition(partition, 0).with_current_leader_epoch(epoch)
                };
                fetch_request(
                    0,
                    1,
                    vec![fetch_topic(
                        broker,
                        version,
                        "le-three",
                        vec![
                            with_epoch(0, 0),
                            with_epoch(1, 9),
                            with_epoch(2, -1),
                            with_epoch(5, 0),
                        ],
                    )],
                )
            },
        )?;
    }
    let version = newest::<ListOffsetsRequest>(d);
    d.diff(
        "leader epochs: list offsets with current, future epoch",
        version,
        |_| list_offsets_request(version, "le-three", &[(0, -1, 0), (1, -1, 9), (2, -2, -1)]),
    )?;
    Ok(())
}

/// Two members: A joins and syncs alone; B joins; A's heartbeat learns of the rebalance, A
/// rejoins; both get generation 2 (the leader with both members), sync their assignments,
/// heartbeat; B leaves and A rebalances alone again. Every answer compared step by step.
fn rebalance(d: &mut Differ) -> Result<()> {
    let join_v = newest::<JoinGroupRequest>(d);
    let sync_v = newest::<SyncGroupRequest>(d);
    let heartbeat_v = newest::<HeartbeatRequest>(d);
    let leave_v = newest::<LeaveGroupRequest>(d);
    let group = "rb-group";
    let timeout = Duration::from_secs(15);
    let mut steps: Vec<Vec<(String, String)>> = Vec::new();
    for side in [Side::Kafka, Side::Sluice] {
        let mut log: Vec<(String, String)> = Vec::new();
        let a = d.broker(side);
        let mut b = a.another()?;
        let join = |broker: &mut Broker, member: &str| -> Result<JoinGroupResponse> {
            let request = join_request(join_v, group, member);
            broker.conn.request(&request, join_v)
        };
        // A alone.
        let mut a_join = join(a, "")?;
        if a_join.error_code == 79 {
            let id = member_of(&a_join);
            a_join = join(a, &id)?;
        }
        let a_id = member_of(&a_join);
        log.push(("A joins alone".into(), text(&a_join, a)));
        let sync = |broker: &mut Broker,
                    member: &str,
                    generation: i32,
                    assignments: Vec<SyncGroupRequestAssignment>|
         -> Result<SyncGroupResponse> {
            let request = SyncGroupRequest::default()
                .with_group_id(GroupId(str(group)))
                .with_generation_id(generation)
                .with_member_id(str(member))
                .with_protocol_type(Some(str("consumer")))
                .with_protocol_name(Some(str("range")))
                .with_assignments(assignments);
            broker.conn.request(&request, sync_v)
        };
        let a_sync = sync(
            a,
            &a_id,
            a_join.generation_id,
            vec![SyncGroupRequestAssignment::default()
                .with_member_id(str(&a_id))
                .with_assignment(assignment("gr-topic", &[0, 1]))],
        )?;
        log.push(("A syncs alone".into(), text(&a_sync, a)));
        // B asks to join (member id first), then waits in the join.
        let mut b_id = String::new();
        let first = join(&mut b, "")?;
        log.push(("B's first join".into(), text(&first, &b)));
        if first.error_code == 79 {
            b_id = member_of(&first);
        }
        let b_join_id = b.start(&join_request(join_v, group, &b_id), join_v)?;
        std::thread::sleep(Duration::from_millis(300));
        let heartbeat = |broker: &mut Broker, member: &str, generation: i32| {
            broker.conn.request(
                &HeartbeatRequest::default()
                    .with_group_id(GroupId(str(group)))
                    .with_generation_id(generation)
                    .with_member_id(str(member)),
                heartbeat_v,
            )
        };
        // Until A's heartbeat sees the rebalance B's join started (bounded: B's join may take a
        // moment to reach the coordinator from its own connection).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut a_heartbeat = heartbeat(a, &a_id, a_join.generation_id)?;
        while a_heartbeat.error_code == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            a_heartbeat = heartbeat(a, &a_id, a_join.generation_id)?;
        }
        log.push((
            "A's heartbeat during the rebalance".into(),
            text(&a_heartbeat, a),
        ));
        let a_rejoin = join(a, &a_id)?;
        let b_join = b.finish::<JoinGroupRequest>(b_join_id, join_v, timeout)?;
        log.push(("A rejoins (leader)".into(), text(&a_rejoin, a)));
        log.push(("B's join completes".into(), text(&b_join, &b)));
        let b_id = member_of(&b_join);
        let generation = a_rejoin.generation_id;
        // B's sync waits for the leader's.
        let b_sync_id = b.start(
            &SyncGroupRequest::default()
                .with_group_id(GroupId(str(group)))
                .with_generation_id(generation)
                .with_member_id(str(&b_id))
                .with_protocol_type(Some(str("consumer")))
                .with_protocol_name(Some(str("range"))),
            sync_v,
        )?;
        let a_sync = sync(
            a,
            &a_id,
            generation,
            vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(str(&a_id))
                    .with_assignment(assignment("gr-topic", &[0])),
                SyncGroupRequestAssignment::default()
                    .with_member_id(str(&b_id))
                    .with_assignment(assignment("gr-topic", &[1])),
            ],
        )?;
        let b_sync = b.finish::<SyncGroupRequest>(b_sync_id, sync_v, timeout)?;
        log.push(("A syncs generation 2".into(), text(&a_sync, a)));
        log.push(("B syncs generation 2".into(), text(&b_sync, &b)));
        log.push((
            "A heartbeats".into(),
            text(&heartbeat(a, &a_id, generation)?, a),
        ));
        log.push((
            "B heartbeats".into(),
            text(&heartbeat(&mut b, &b_id, generation)?, &b),
        ));
        let leave = b.conn.request(
            &LeaveGroupRequest::default()
                .with_group_id(GroupId(str(group)))
                .with_members(vec![MemberIdentity::default().with_member_id(str(&b_id))]),
            leave_v,
        )?;
        log.push(("B leaves".into(), text(&leave, &b)));
        log.push((
            "A's heartbeat after B left".into(),
            text(&heartbeat(a, &a_id, generation)?, a),
        ));
        let a_alone = join(a, &a_id)?;
        log.push(("A rejoins alone".into(), text(&a_alone, a)));
        steps.push(log);
    }
    let (kafka, sluice) = (&steps[0], &steps[1]);
    for ((step, kafka_text), (_, sluice_text)) in kafka.iter().zip(sluice) {
        d.compared += 1;
        if kafka_text != sluice_text {
            d.fail(format!(
                "rebalance, {step}: responses differ (- kafka, + sluice)\n{}",
                sluice_tests::diff::line_diff(kafka_text, sluice_text)
            ));
        }
    }
    Ok(())
}

fn text<T: sluice_tests::diff::Normalize + Clone>(response: &T, broker: &Broker) -> String {
    sluice_tests::diff::describe(response, broker)
}

/// Unknown topics without auto-create: a Sluice started with `--auto-create-topics false`
/// answers Metadata (auto-create allowed by the request) like Kafka does when it may not create
/// (Kafka's broker setting is static; the request flag gives the same answer) and creates
/// nothing; Produce, Fetch and ListOffsets to unknown topics never create one on either broker.
fn unknown_topics(d: &mut Differ, no_auto_create: &str) -> Result<()> {
    let mut strict = Differ::new(&d.kafka.addr.clone(), no_auto_create)?;
    for version in strict
        .versions::<MetadataRequest>()
        .into_iter()
        .filter(|v| *v >= 4)
    {
        let topic = format!("ut-meta-{version}");
        for _ in 0..2 {
            strict.diff(
                "unknown topics: metadata, auto-create off",
                version,
                |broker| {
                    MetadataRequest::default()
                        .with_topics(Some(vec![
                            MetadataRequestTopic::default().with_name(Some(topic_name(&topic)))
                        ]))
                        .with_allow_auto_topic_creation(broker.side == Side::Sluice)
                },
            )?;
        }
    }
    d.failures.append(&mut strict.failures);
    d.compared += strict.compared;
    // Produce / Fetch / ListOffsets to an unknown topic, then Metadata: still unknown.
    let produce_v = newest::<ProduceRequest>(d).min(12);
    let records = batch("u", 1, BASE_TIMESTAMP)?;
    d.diff("unknown topics: produce", produce_v, |broker| {
        produce_request(broker, produce_v, "ut-produce", &[(0, records.clone())])
    })?;
    d.diff("unknown topics: fetch by name", 12, |broker| {
        fetch_request(
            0,
            1,
            vec![fetch_topic(
                broker,
                12,
                "ut-fetch",
                vec![fetch_partition(0, 0)],
            )],
        )
    })?;
    let fetch_v = newest::<FetchRequest>(d);
    if fetch_v >= 13 {
        d.diff("unknown topics: fetch by unknown id", fetch_v, |_| {
            fetch_request(
                0,
                1,
                vec![FetchTopic::default()
                    .with_topic_id(uuid::Uuid::from_u128(0xbad))
                    .with_partitions(vec![fetch_partition(0, 0)])],
            )
        })?;
    }
    d.diff("unknown topics: list offsets", 7, |_| {
        list_offsets_request(7, "ut-list", &[(0, -1, -1)])
    })?;
    d.diff("unknown topics: still unknown", 12, |_| {
        MetadataRequest::default()
            .with_topics(Some(
                ["ut-produce", "ut-fetch", "ut-list"]
                    .iter()
                    .map(|name| MetadataRequestTopic::default().with_name(Some(topic_name(name))))
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false)
    })?;
    Ok(())
}
