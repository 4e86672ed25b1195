//! Admin API through rdkafka's AdminClient: CreateTopics (configs, validate_only, duplicates,
//! refused configs), DescribeConfigs, AlterConfigs, CreatePartitions, DeleteTopics,
//! DeleteRecords, and ListOffsets (earliest, latest, by timestamp), plus auto-creation.

use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use kafka_protocol::messages::{
    alter_configs_request, incremental_alter_configs_request, AlterConfigsRequest,
    IncrementalAlterConfigsRequest,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use sluice_tests::clients::{self, admin_options, OP_TIMEOUT};
use sluice_tests::wire::RawConnection;
use sluice_tests::{wait_for, SluiceOptions, SluiceProcess};

/// Partition count of `topic` from a Metadata request for that topic, or None when the broker
/// does not know it. Uses a consumer, which never asks for auto-creation.
fn partition_count(consumer: &BaseConsumer, topic: &str) -> Result<Option<usize>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), OP_TIMEOUT)
        .context("Metadata")?;
    let Some(listed) = metadata
        .topics()
        .iter()
        .find(|listed| listed.name() == topic)
    else {
        return Ok(None);
    };
    match listed.error() {
        None => Ok(Some(listed.partitions().len())),
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Ok(None),
        Some(error) => bail!("Metadata for {topic}: {error:?}"),
    }
}

/// Current value of one topic config.
async fn config_value(bootstrap: &str, topic: &str, name: &str) -> Result<Option<String>> {
    let admin = clients::admin(bootstrap)?;
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &admin_options())
        .await
        .context("DescribeConfigs")?;
    let resource = match results.into_iter().next() {
        Some(Ok(resource)) => resource,
        Some(Err(code)) => bail!("DescribeConfigs {topic}: {code:?}"),
        None => bail!("DescribeConfigs {topic}: empty result"),
    };
    Ok(resource.get(name).and_then(|entry| entry.value.clone()))
}

fn single_result<T>(
    results: Vec<Result<T, (String, RDKafkaErrorCode)>>,
) -> Result<Result<T, RDKafkaErrorCode>> {
    match results.into_iter().next() {
        Some(Ok(value)) => Ok(Ok(value)),
        Some(Err((_, code))) => Ok(Err(code)),
        None => bail!("admin operation returned no result"),
    }
}

const INVALID_CONFIG: i16 = 40;
const RESOURCE_TOPIC: i8 = 2;
const OP_SET: i8 = 0;

/// Tries `cleanup.policy=compact` (together with a valid change, which must not be applied
/// either) through AlterConfigs and IncrementalAlterConfigs; returns each API's error code.
fn alter_cleanup_policy_to_compact(
    connection: &mut RawConnection,
    topic: &str,
) -> Result<Vec<(&'static str, i16)>> {
    let name = |text: &str| StrBytes::from_string(text.to_string());
    let mut errors = Vec::new();

    let version = connection.negotiate::<AlterConfigsRequest>(2)?;
    let request = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(name(topic))
            .with_configs(vec![
                alter_configs_request::AlterableConfig::default()
                    .with_name(name("cleanup.policy"))
                    .with_value(Some(name("compact"))),
                alter_configs_request::AlterableConfig::default()
                    .with_name(name("retention.ms"))
                    .with_value(Some(name("1234567"))),
            ]),
    ]);
    let response = connection.request(&request, version)?;
    let result = response
        .responses
        .first()
        .context("AlterConfigs response without a resource")?;
    errors.push(("AlterConfigs", result.error_code));

    let version = connection.negotiate::<IncrementalAlterConfigsRequest>(1)?;
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(name(topic))
            .with_configs(vec![
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(name("cleanup.policy"))
                    .with_config_operation(OP_SET)
                    .with_value(Some(name("compact"))),
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(name("retention.ms"))
                    .with_config_operation(OP_SET)
                    .with_value(Some(name("1234567"))),
            ]),
    ]);
    let response = connection.request(&request, version)?;
    let result = response
        .responses
        .first()
        .context("IncrementalAlterConfigs response without a resource")?;
    errors.push(("IncrementalAlterConfigs", result.error_code));
    Ok(errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_lifecycle_and_configs() -> Result<()> {
    let broker = SluiceProcess::start(SluiceOptions::default().auto_create_topics(false))?;
    let bootstrap = broker.bootstrap();
    let admin = clients::admin(&bootstrap)?;
    let consumer = clients::consumer(&bootstrap)?;
    let options = admin_options();

    // Create with per-topic configs.
    let orders = NewTopic::new("orders", 3, TopicReplication::Fixed(1))
        .set("retention.ms", "3600000")
        .set("max.message.bytes", "2000000");
    let created = single_result(admin.create_topics([&orders], &options).await?)?;
    ensure!(created.is_ok(), "CreateTopics orders: {created:?}");
    ensure!(
        partition_count(&consumer, "orders")? == Some(3),
        "orders does not have 3 partitions"
    );

    // Creating it again is refused.
    let again = single_result(admin.create_topics([&orders], &options).await?)?;
    ensure!(
        again == Err(RDKafkaErrorCode::TopicAlreadyExists),
        "second CreateTopics orders: {again:?}"
    );

    // validate_only checks but creates nothing.
    let dry_run = NewTopic::new("dry-run", 2, TopicReplication::Fixed(1));
    let validated = single_result(
        admin
            .create_topics([&dry_run], &admin_options().validate_only(true))
            .await?,
    )?;
    ensure!(
        validated.is_ok(),
        "validate_only CreateTopics: {validated:?}"
    );
    ensure!(
        partition_count(&consumer, "dry-run")?.is_none(),
        "validate_only created the topic"
    );

    // Configs that are not implemented are refused, not ignored; unknown configs too.
    for (key, value) in [("cleanup.policy", "compact"), ("no.such.config", "1")] {
        let refused_topic = NewTopic::new("refused", 1, TopicReplication::Fixed(1)).set(key, value);
        for validate_only in [true, false] {
            let refused = single_result(
                admin
                    .create_topics(
                        [&refused_topic],
                        &admin_options().validate_only(validate_only),
                    )
                    .await?,
            )?;
            ensure!(
                refused == Err(RDKafkaErrorCode::InvalidConfig),
                "CreateTopics with {key}={value} (validate_only={validate_only}): {refused:?}"
            );
        }
    }
    ensure!(
        partition_count(&consumer, "refused")?.is_none(),
        "a refused topic exists"
    );

    // DescribeConfigs reports the per-topic values and the defaults.
    ensure!(
        config_value(&bootstrap, "orders", "retention.ms")
            .await?
            .as_deref()
            == Some("3600000"),
        "retention.ms not as created"
    );
    ensure!(
        config_value(&bootstrap, "orders", "max.message.bytes")
            .await?
            .as_deref()
            == Some("2000000"),
        "max.message.bytes not as created"
    );
    ensure!(
        config_value(&bootstrap, "orders", "cleanup.policy")
            .await?
            .as_deref()
            == Some("delete"),
        "cleanup.policy default is not delete"
    );

    // AlterConfigs changes a value; compaction is refused with INVALID_CONFIG and changes
    // nothing.
    let alter = AlterConfig::new(ResourceSpecifier::Topic("orders")).set("retention.ms", "7200000");
    let altered = admin.alter_configs([&alter], &options).await?;
    ensure!(
        altered.iter().all(Result::is_ok),
        "AlterConfigs retention.ms: {altered:?}"
    );
    ensure!(
        config_value(&bootstrap, "orders", "retention.ms")
            .await?
            .as_deref()
            == Some("7200000"),
        "retention.ms not altered"
    );
    // rdkafka 0.38 reports every AlterConfigs resource as Ok (it never reads the per-resource
    // error), so the refusal is checked on the wire, for both AlterConfigs flavours.
    let mut connection = RawConnection::connect(&bootstrap)?;
    for (api, error) in alter_cleanup_policy_to_compact(&mut connection, "orders")? {
        ensure!(
            error == INVALID_CONFIG,
            "{api} cleanup.policy=compact: error {error}, expected INVALID_CONFIG (40)"
        );
    }
    ensure!(
        config_value(&bootstrap, "orders", "cleanup.policy")
            .await?
            .as_deref()
            == Some("delete"),
        "a refused AlterConfigs changed cleanup.policy"
    );
    ensure!(
        config_value(&bootstrap, "orders", "retention.ms")
            .await?
            .as_deref()
            == Some("7200000"),
        "a refused AlterConfigs applied its other change (retention.ms)"
    );

    // CreatePartitions grows; shrinking is refused.
    let grow = NewPartitions::new("orders", 5);
    let grown = single_result(admin.create_partitions([&grow], &options).await?)?;
    ensure!(grown.is_ok(), "CreatePartitions orders -> 5: {grown:?}");
    wait_for(
        "orders to have 5 partitions",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || matches!(partition_count(&consumer, "orders"), Ok(Some(5))).then_some(()),
    )
    .await?;
    let shrink = NewPartitions::new("orders", 2);
    let shrunk = single_result(admin.create_partitions([&shrink], &options).await?)?;
    ensure!(
        shrunk == Err(RDKafkaErrorCode::InvalidPartitions),
        "CreatePartitions orders -> 2: {shrunk:?}"
    );
    // The new partitions take writes.
    let producer = clients::producer(&bootstrap)?;
    let (_, offset) = clients::produce_one(&producer, "orders", 4, b"k", b"new partition").await?;
    ensure!(offset == 0, "first record in partition 4 at {offset}");

    // DeleteTopics removes it; deleting again reports an unknown topic.
    let deleted = single_result(admin.delete_topics(&["orders"], &options).await?)?;
    ensure!(deleted.is_ok(), "DeleteTopics orders: {deleted:?}");
    wait_for(
        "orders to disappear from metadata",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || matches!(partition_count(&consumer, "orders"), Ok(None)).then_some(()),
    )
    .await?;
    let deleted_again = single_result(admin.delete_topics(&["orders"], &options).await?)?;
    ensure!(
        deleted_again == Err(RDKafkaErrorCode::UnknownTopicOrPartition),
        "second DeleteTopics orders: {deleted_again:?}"
    );

    // A topic of the same name can be created again and starts empty.
    let recreated = single_result(
        admin
            .create_topics(
                [&NewTopic::new("orders", 1, TopicReplication::Fixed(1))],
                &options,
            )
            .await?,
    )?;
    ensure!(recreated.is_ok(), "re-creating orders: {recreated:?}");
    let (low, high) = clients::watermarks(&bootstrap, "orders", 0)?;
    ensure!(
        (low, high) == (0, 0),
        "re-created orders has watermarks ({low}, {high})"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_and_delete_records() -> Result<()> {
    let broker = SluiceProcess::start_default()?;
    let bootstrap = broker.bootstrap();
    let topic = "offsets";
    clients::create_topic(&bootstrap, topic, 1, &[]).await?;

    // Ten records, one second apart in (creation) time.
    let base = 1_700_000_000_000i64;
    let producer = clients::producer(&bootstrap)?;
    let outcome = clients::produce_many(&producer, 10, |index| {
        FutureRecord::<[u8], [u8]>::to(topic)
            .partition(0)
            .payload(b"timed".as_slice())
            .timestamp(base + index as i64 * 1000)
    })
    .await?;
    outcome.all_ok()?;

    let consumer = clients::consumer(&bootstrap)?;
    let (low, high) = consumer.fetch_watermarks(topic, 0, OP_TIMEOUT)?;
    ensure!((low, high) == (0, 10), "watermarks ({low}, {high})");

    let offset_for_time = |timestamp: i64| -> Result<Offset> {
        let mut query = TopicPartitionList::new();
        query.add_partition_offset(topic, 0, Offset::Offset(timestamp))?;
        let answer = consumer
            .offsets_for_times(query, OP_TIMEOUT)
            .context("ListOffsets by timestamp")?;
        let element = answer
            .find_partition(topic, 0)
            .context("no answer for the partition")?;
        element.error().context("ListOffsets partition error")?;
        Ok(element.offset())
    };
    for (timestamp, expected) in [
        (base - 5_000, Offset::Offset(0)),
        (base, Offset::Offset(0)),
        (base + 2_500, Offset::Offset(3)),
        (base + 9_000, Offset::Offset(9)),
        (base + 100_000, Offset::End),
    ] {
        let got = offset_for_time(timestamp)?;
        ensure!(
            got == expected,
            "offset for timestamp base{:+}: {got:?}, expected {expected:?}",
            timestamp - base
        );
    }

    // DeleteRecords before offset 4 moves the log start.
    let admin = clients::admin(&bootstrap)?;
    let mut before = TopicPartitionList::new();
    before.add_partition_offset(topic, 0, Offset::Offset(4))?;
    let result = admin
        .delete_records(&before, &admin_options())
        .await
        .context("DeleteRecords")?;
    let element = result
        .find_partition(topic, 0)
        .context("DeleteRecords result lacks the partition")?;
    element.error().context("DeleteRecords partition error")?;
    ensure!(
        element.offset() == Offset::Offset(4),
        "DeleteRecords low watermark {:?}",
        element.offset()
    );
    let (low, high) = consumer.fetch_watermarks(topic, 0, OP_TIMEOUT)?;
    ensure!(
        (low, high) == (4, 10),
        "watermarks after DeleteRecords ({low}, {high})"
    );
    ensure!(
        offset_for_time(base)? == Offset::Offset(4),
        "timestamp lookup returned a deleted offset"
    );

    // Reading from the beginning starts at the new log start.
    let reader = clients::consumer(&bootstrap)?;
    reader.assign(&clients::assignment(topic, 1, Offset::Beginning)?)?;
    let messages = clients::consume_n(&reader, 6, Duration::from_secs(30))?;
    let offsets: Vec<i64> = messages.iter().map(|message| message.offset()).collect();
    ensure!(
        offsets == (4..10).collect::<Vec<_>>(),
        "read offsets {offsets:?}"
    );

    // Offset::End deletes everything.
    let mut all = TopicPartitionList::new();
    all.add_partition_offset(topic, 0, Offset::End)?;
    admin
        .delete_records(&all, &admin_options())
        .await
        .context("DeleteRecords to the end")?;
    let (low, high) = consumer.fetch_watermarks(topic, 0, OP_TIMEOUT)?;
    ensure!(
        (low, high) == (10, 10),
        "watermarks after deleting all ({low}, {high})"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_auto_creates_topic_with_default_partitions() -> Result<()> {
    let broker = SluiceProcess::start(SluiceOptions::default().default_partitions(4))?;
    let bootstrap = broker.bootstrap();
    let producer = clients::producer(&bootstrap)?;
    let record = FutureRecord::to("auto-created").key("k").payload("v");
    producer
        .send(record, Duration::from_secs(5))
        .await
        .map_err(|(err, _)| anyhow::anyhow!("produce to an auto-created topic: {err}"))?;
    let consumer = clients::consumer(&bootstrap)?;
    ensure!(
        partition_count(&consumer, "auto-created")? == Some(4),
        "auto-created topic does not have --default-partitions 4"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_lists_all_topics() -> Result<()> {
    let broker = SluiceProcess::start_default()?;
    let bootstrap = broker.bootstrap();
    clients::create_topic(&bootstrap, "listed-a", 1, &[]).await?;
    clients::create_topic(&bootstrap, "listed-b", 3, &[]).await?;

    // A Metadata request for all topics, as librdkafka sends it (admin list_topics, consumers
    // refreshing metadata).
    let consumer = clients::consumer(&bootstrap)?;
    let metadata = consumer
        .fetch_metadata(None, OP_TIMEOUT)
        .context("Metadata for all topics")?;
    let mut listed: Vec<(String, usize)> = metadata
        .topics()
        .iter()
        .map(|topic| (topic.name().to_string(), topic.partitions().len()))
        .collect();
    listed.sort();
    ensure!(
        listed == [("listed-a".to_string(), 1), ("listed-b".to_string(), 3)],
        "all-topics metadata: {listed:?}"
    );
    ensure!(
        metadata.brokers().len() == 1,
        "brokers: {:?}",
        metadata
            .brokers()
            .iter()
            .map(|broker| (broker.id(), broker.host().to_string(), broker.port()))
            .collect::<Vec<_>>()
    );
    Ok(())
}
