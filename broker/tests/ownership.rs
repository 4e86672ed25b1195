//! Partition ownership at the protocol level, on in-memory metadata shared with "another broker"
//! (node 2) that only exists in metadata: partitions it owns are answered NOT_LEADER_OR_FOLLOWER
//! with its id, epoch and endpoint where the version carries them; OffsetForLeaderEpoch answers
//! from the per-epoch history that restarts build.

use std::sync::Arc;
use std::time::Duration;

use broker::dispatch::{handle_frame, Outcome};
use broker::{Broker, BrokerConfig};
use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use metadata::{Command, CommandResponse, MemoryMetadata, MetadataClient, TopicPartition};

const NOT_LEADER: i16 = 6;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;

struct Node {
    broker: Arc<Broker>,
    store: storage::LogStore,
}

struct Harness {
    meta: MetadataClient,
    objects: Arc<dyn object_store::ObjectStore>,
    dir: tempfile::TempDir,
    node: Node,
    topic_id: uuid::Uuid,
}

async fn register(meta: &MetadataClient, node_id: u64, host: &str, port: u16) {
    let response = meta
        .propose(Command::RegisterBroker {
            node_id,
            host: host.into(),
            port,
        })
        .await
        .unwrap();
    assert!(matches!(response, CommandResponse::Incarnation(_)));
}

async fn open_node(
    meta: &MetadataClient,
    objects: &Arc<dyn object_store::ObjectStore>,
    dir: &std::path::Path,
) -> Node {
    let mut options = storage::StorageOptions::new(dir, 1, "test-cluster");
    options.wal.fsync = false;
    options.segment_max_age = Duration::from_secs(3600);
    let store = storage::LogStore::open(options, objects.clone(), meta.clone())
        .await
        .unwrap();
    let broker = Broker::new(
        BrokerConfig::new(1, "127.0.0.1", 9092),
        store.clone(),
        meta.clone(),
    );
    Node { broker, store }
}

/// Broker 1 (served here) and broker 2 (metadata only); topic `t` with 2 partitions owned by 1.
async fn harness() -> Harness {
    let meta = MetadataClient::new(Arc::new(MemoryMetadata::new(
        "test-cluster",
        Duration::from_secs(60),
    )));
    register(&meta, 1, "127.0.0.1", 9092).await;
    register(&meta, 2, "127.0.0.2", 9093).await;
    let topic_id = uuid::Uuid::new_v4();
    let created = meta
        .propose(Command::CreateTopic {
            name: "t".into(),
            topic_id,
            partitions: 2,
            configs: Default::default(),
            owner: 1,
            now_ms: 0,
        })
        .await
        .unwrap();
    assert_eq!(created, CommandResponse::Ok);
    let objects: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::memory::InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let node = open_node(&meta, &objects, dir.path()).await;
    Harness {
        meta,
        objects,
        dir,
        node,
        topic_id,
    }
}

impl Harness {
    async fn call<R: Encodable + HeaderVersion>(
        &self,
        api: ApiKey,
        version: i16,
        request: &R,
    ) -> ResponseKind {
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("ownership-test")));
        let mut buf = BytesMut::new();
        header.encode(&mut buf, R::header_version(version)).unwrap();
        request.encode(&mut buf, version).unwrap();
        let Outcome::Respond(mut bytes) = handle_frame(&self.node.broker, buf.freeze()).await
        else {
            panic!("{api:?} v{version}: no response");
        };
        ResponseHeader::decode(&mut bytes, api.response_header_version(version)).unwrap();
        ResponseKind::decode(api, &mut bytes, version).unwrap()
    }

    fn tp(&self, partition: i32) -> TopicPartition {
        TopicPartition {
            topic_id: self.topic_id,
            partition,
        }
    }

    async fn produce(&self, version: i16, partitions: &[i32]) -> ProduceResponse {
        let mut topic = produce_request::TopicProduceData::default().with_partition_data(
            partitions
                .iter()
                .map(|&p| {
                    produce_request::PartitionProduceData::default()
                        .with_index(p)
                        .with_records(Some(batch(&["a", "b"])))
                })
                .collect(),
        );
        topic = if version >= 13 {
            topic.with_topic_id(self.topic_id)
        } else {
            topic.with_name(TopicName(StrBytes::from_static_str("t")))
        };
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![topic]);
        match self.call(ApiKey::Produce, version, &request).await {
            ResponseKind::Produce(r) => r,
            other => panic!("{other:?}"),
        }
    }

    async fn fetch(
        &self,
        version: i16,
        partition: i32,
        current_leader_epoch: i32,
    ) -> FetchResponse {
        let mut topic = fetch_request::FetchTopic::default().with_partitions(vec![
            fetch_request::FetchPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(current_leader_epoch)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20),
        ]);
        topic = if version >= 13 {
            topic.with_topic_id(self.topic_id)
        } else {
            topic.with_topic(TopicName(StrBytes::from_static_str("t")))
        };
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 24)
            .with_topics(vec![topic]);
        match self.call(ApiKey::Fetch, version, &request).await {
            ResponseKind::Fetch(r) => r,
            other => panic!("{other:?}"),
        }
    }

    /// (error, leader epoch, end offset) of OffsetForLeaderEpoch v4.
    async fn epoch_end(&self, partition: i32, current: i32, epoch: i32) -> (i16, i32, i64) {
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_partition(partition)
                            .with_current_leader_epoch(current)
                            .with_leader_epoch(epoch),
                    ]),
            ]);
        match self.call(ApiKey::OffsetForLeaderEpoch, 4, &request).await {
            ResponseKind::OffsetForLeaderEpoch(r) => {
                let p = &r.topics[0].partitions[0];
                (p.error_code, p.leader_epoch, p.end_offset)
            }
            other => panic!("{other:?}"),
        }
    }

    /// Stops this node's store, re-registers broker 1 (a restart: epochs bump) and opens again.
    async fn restart(&mut self) {
        self.node.store.shutdown().await.unwrap();
        register(&self.meta, 1, "127.0.0.1", 9092).await;
        self.node = open_node(&self.meta, &self.objects, self.dir.path()).await;
    }
}

fn batch(values: &[&str]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(v.to_string())),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_of_another_broker_answer_not_leader_with_the_leader() {
    let h = harness().await;
    // Both partitions served (and loaded in storage) before partition 1 moves.
    let before = h.produce(9, &[0, 1]).await;
    assert!(before.responses[0]
        .partition_responses
        .iter()
        .all(|p| p.error_code == 0));
    let acquired = h
        .meta
        .propose(Command::AcquirePartitions {
            node_id: 2,
            partitions: vec![h.tp(1)],
        })
        .await
        .unwrap();
    assert_eq!(acquired, CommandResponse::Acquired(vec![(h.tp(1), 1)]));

    // Produce: partition 0 still written here; partition 1 refused with the leader from v10.
    for version in [9, 10, 13] {
        let response = h.produce(version, &[0, 1]).await;
        let parts = &response.responses[0].partition_responses;
        assert_eq!(parts[0].error_code, 0, "v{version}");
        assert_eq!(parts[1].error_code, NOT_LEADER, "v{version}");
        if version >= 10 {
            assert_eq!(parts[1].current_leader.leader_id, BrokerId(2), "v{version}");
            assert_eq!(parts[1].current_leader.leader_epoch, 1, "v{version}");
            assert_eq!(response.node_endpoints.len(), 1, "v{version}");
            let node = &response.node_endpoints[0];
            assert_eq!(
                (node.node_id, node.host.as_str(), node.port),
                (BrokerId(2), "127.0.0.2", 9093)
            );
        } else {
            assert_eq!(parts[1].current_leader.leader_id, BrokerId(-1));
            assert!(response.node_endpoints.is_empty());
        }
    }
    // Nothing reached partition 1 here after the move.
    assert!(matches!(
        h.node.store.offsets(h.tp(1)),
        Err(storage::Error::NotLeader {
            owner: 2,
            leader_epoch: 1
        })
    ));

    // Fetch: refused before the epoch is looked at; leader + endpoint from v16 (as Kafka).
    for (version, epoch) in [(11, -1), (12, 0), (15, -1), (16, -1), (17, 5)] {
        let response = h.fetch(version, 1, epoch).await;
        let p = &response.responses[0].partitions[0];
        assert_eq!(p.error_code, NOT_LEADER, "v{version}");
        assert_eq!(p.high_watermark, -1);
        if version >= 16 {
            assert_eq!(p.current_leader.leader_id, BrokerId(2));
            assert_eq!(p.current_leader.leader_epoch, 1);
            assert_eq!(response.node_endpoints[0].node_id, BrokerId(2));
            assert_eq!(response.node_endpoints[0].port, 9093);
        } else {
            assert_eq!(p.current_leader.leader_id, BrokerId(-1), "v{version}");
            assert!(response.node_endpoints.is_empty());
        }
    }
    // Partition 0 still fetches, and its epoch is checked as before.
    let ok = h.fetch(17, 0, 0).await;
    assert_eq!(ok.responses[0].partitions[0].error_code, 0);
    assert_eq!(ok.responses[0].partitions[0].high_watermark, 8);

    // ListOffsets, OffsetForLeaderEpoch, DeleteRecords.
    let list = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(1)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(-1),
            ])]);
    match h.call(ApiKey::ListOffsets, 10, &list).await {
        ResponseKind::ListOffsets(r) => {
            let p = &r.topics[0].partitions[0];
            assert_eq!(
                (p.error_code, p.offset, p.leader_epoch),
                (NOT_LEADER, -1, -1)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.epoch_end(1, -1, 0).await, (NOT_LEADER, -1, -1));
    let delete = DeleteRecordsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(1)
                    .with_offset(1),
            ])]);
    match h.call(ApiKey::DeleteRecords, 2, &delete).await {
        ResponseKind::DeleteRecords(r) => {
            let p = &r.topics[0].partitions[0];
            assert_eq!((p.error_code, p.low_watermark), (NOT_LEADER, -1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.meta.state().partition(h.tp(1)).unwrap().log_start_offset,
        0
    );

    // Metadata names broker 2 as the leader.
    let request = MetadataRequest::default().with_topics(None);
    match h.call(ApiKey::Metadata, 12, &request).await {
        ResponseKind::Metadata(r) => {
            let p1 = r.topics[0]
                .partitions
                .iter()
                .find(|p| p.partition_index == 1)
                .unwrap();
            assert_eq!((p1.leader_id, p1.leader_epoch), (BrokerId(2), 1));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_for_leader_epoch_answers_from_the_epoch_history() {
    let mut h = harness().await;
    h.produce(9, &[0]).await; // epoch 0: offsets 0..2 (only in the WAL)
    h.restart().await; // epoch 1 starts at 2
    h.produce(9, &[0]).await;
    h.produce(9, &[0]).await; // epoch 1: 2..6
    h.restart().await; // epoch 2 starts at 6
    h.produce(9, &[0]).await; // epoch 2: 6..8
    assert_eq!(h.epoch_end(0, -1, 0).await, (0, 0, 2));
    assert_eq!(h.epoch_end(0, -1, 1).await, (0, 1, 6));
    assert_eq!(h.epoch_end(0, 2, 2).await, (0, 2, 8));
    // A future epoch is undefined; the caller's current epoch is checked first.
    assert_eq!(h.epoch_end(0, -1, 3).await, (0, -1, -1));
    assert_eq!(h.epoch_end(0, 1, 1).await.0, FENCED_LEADER_EPOCH);
    assert_eq!(h.epoch_end(0, 3, 1).await.0, UNKNOWN_LEADER_EPOCH);
    // Partition 1 never saw a record: its empty epochs collapse into the current one (as in
    // Kafka's leader-epoch cache), so epoch 1 ends where epoch 2 starts, at 0.
    assert_eq!(h.epoch_end(1, -1, 1).await, (0, 1, 0));
    // Fetch honours the caller's epoch too.
    assert_eq!(
        h.fetch(12, 0, 1).await.responses[0].partitions[0].error_code,
        FENCED_LEADER_EPOCH
    );
    assert_eq!(
        h.fetch(12, 0, 3).await.responses[0].partitions[0].error_code,
        UNKNOWN_LEADER_EPOCH
    );
    assert_eq!(
        h.fetch(12, 0, 2).await.responses[0].partitions[0].high_watermark,
        8
    );
}
