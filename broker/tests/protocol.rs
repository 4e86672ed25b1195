//! Protocol-level tests of the broker without sockets: request bytes in, response bytes out, against a
//! real metadata node and log store in a temp dir.
//!
//! The central check: every API version advertised in ApiVersions really works — a realistic request
//! at that version is answered with a response that decodes at that version.

#[global_allocator]
static ALLOCATOR: alloc_guard::Guard = alloc_guard::Guard;

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::dispatch::{handle_frame, Outcome};
use broker::{Broker, BrokerConfig};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

struct Harness {
    broker: Arc<Broker>,
    _node: metadata::MetadataNode,
    _dir: tempfile::TempDir,
    correlation: std::sync::atomic::AtomicI32,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let node = metadata::MetadataNode::start(metadata::MetadataOptions {
        dir: dir.path().join("metadata"),
        node_id: 1,
        snapshot_every: 1000,
        fsync: false,
        journal: None,
    })
    .await
    .unwrap();
    let meta = node.client();
    meta.propose(metadata::Command::InitCluster {
        cluster_id: "test-cluster".into(),
    })
    .await
    .unwrap();
    meta.propose(metadata::Command::RegisterBroker {
        node_id: 1,
        host: "127.0.0.1".into(),
        port: 9092,
    })
    .await
    .unwrap();
    let mut options = storage::StorageOptions::new(dir.path(), 1, "test-cluster");
    options.wal.fsync = false;
    let objects: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::memory::InMemory::new());
    let store = storage::LogStore::open(options, objects, meta.clone())
        .await
        .unwrap();
    let mut config = BrokerConfig::new(1, "127.0.0.1", 9092);
    // Groups in these tests have one member: no reason to wait for more.
    config.coordinator.group.initial_rebalance_delay = Duration::ZERO;
    let broker = Broker::new(config, store, meta);
    Harness {
        broker,
        _node: node,
        _dir: dir,
        correlation: 1.into(),
    }
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A plain batch (no producer id) of keyed records `k{i}` with these values.
fn record_batch(values: &[&str]) -> Bytes {
    encode_batch(values, -1, -1, 0, true)
}

/// A batch of an idempotent producer: unkeyed records starting at `base_sequence`.
fn sequenced_batch(producer_id: i64, epoch: i16, base_sequence: i32, values: &[&str]) -> Bytes {
    encode_batch(values, producer_id, epoch, base_sequence, false)
}

fn encode_batch(
    values: &[&str],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    keyed: bool,
) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: base_sequence + i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: keyed.then(|| Bytes::from(format!("k{i}"))),
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

impl Harness {
    /// Sends a request and returns the raw outcome.
    async fn raw<R: Encodable + HeaderVersion>(
        &self,
        api: ApiKey,
        version: i16,
        request: &R,
    ) -> (i32, Outcome) {
        let correlation = self
            .correlation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("protocol-test")));
        let mut buf = BytesMut::new();
        header.encode(&mut buf, R::header_version(version)).unwrap();
        request.encode(&mut buf, version).unwrap();
        (correlation, handle_frame(&self.broker, buf.freeze()).await)
    }

    /// Sends a request and decodes the response at the same version.
    async fn call<R: Encodable + HeaderVersion>(
        &self,
        api: ApiKey,
        version: i16,
        request: &R,
    ) -> ResponseKind {
        let (correlation, outcome) = self.raw(api, version, request).await;
        let Outcome::Respond(mut bytes) = outcome else {
            panic!("{api:?} v{version}: expected a response, got {outcome:?}");
        };
        let header = ResponseHeader::decode(&mut bytes, api.response_header_version(version))
            .unwrap_or_else(|e| panic!("{api:?} v{version}: bad response header: {e}"));
        assert_eq!(header.correlation_id, correlation);
        ResponseKind::decode(api, &mut bytes, version)
            .unwrap_or_else(|e| panic!("{api:?} v{version}: response does not decode: {e}"))
    }
}

use kafka_protocol::protocol::{Decodable, HeaderVersion};

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn join_request(group: &str, member_id: &str, version: i16) -> JoinGroupRequest {
    let mut request = JoinGroupRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_session_timeout_ms(10_000)
        .with_member_id(text(member_id))
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(text("range"))
        .with_metadata(Bytes::from_static(b"\0\0\0\0\0\0"))]);
    if version >= 1 {
        request.rebalance_timeout_ms = 10_000;
    }
    request
}

/// Joins `group` as its only member at JoinGroup `version` (through MEMBER_ID_REQUIRED from v4).
async fn join_at(h: &Harness, group: &str, version: i16) -> JoinGroupResponse {
    let ResponseKind::JoinGroup(first) = h
        .call(
            ApiKey::JoinGroup,
            version,
            &join_request(group, "", version),
        )
        .await
    else {
        panic!()
    };
    if version < 4 {
        return first;
    }
    assert_eq!(
        first.error_code, 79,
        "JoinGroup v{version}: MEMBER_ID_REQUIRED first"
    );
    let ResponseKind::JoinGroup(second) = h
        .call(
            ApiKey::JoinGroup,
            version,
            &join_request(group, first.member_id.as_str(), version),
        )
        .await
    else {
        panic!()
    };
    second
}

/// A stable one-member group: (member id, generation).
async fn stable_group(h: &Harness, group: &str) -> (String, i32) {
    let joined = join_at(h, group, 9).await;
    assert_eq!(joined.error_code, 0);
    let member = joined.member_id.to_string();
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id(joined.generation_id)
        .with_member_id(text(&member))
        .with_protocol_type(Some(text("consumer")))
        .with_protocol_name(Some(text("range")))
        .with_assignments(vec![
            sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(text(&member))
                .with_assignment(Bytes::from_static(b"assigned")),
        ]);
    let ResponseKind::SyncGroup(synced) = h.call(ApiKey::SyncGroup, 5, &sync).await else {
        panic!()
    };
    assert_eq!(synced.error_code, 0);
    (member, joined.generation_id)
}

/// Commits `offset` for partition 0 of topic "versions" without a generation (a "simple" commit).
async fn simple_commit(h: &Harness, group: &str, version: i16, offset: i64) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(topic_name("versions"))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset)
                        .with_committed_metadata(Some(text("meta"))),
                ]),
        ]);
    let ResponseKind::OffsetCommit(r) = h.call(ApiKey::OffsetCommit, version, &request).await
    else {
        panic!()
    };
    r.topics[0].partitions[0].error_code
}

/// One partition of an OffsetCommit v1 body: (partition, offset, metadata).
type V1Partition<'a> = (i32, i64, Option<&'a str>);

/// An OffsetCommit v1 body as Sarama 1.22 encodes it: group, generation, member, then per
/// (topic, partition, offset, metadata) entry, grouped by consecutive topic, a commit timestamp of -1.
fn offset_commit_v1(
    group: &str,
    generation: i32,
    member: &str,
    entries: &[(&str, i32, i64, Option<&str>)],
) -> Bytes {
    fn put_str(out: &mut BytesMut, s: &str) {
        out.put_i16(s.len() as i16);
        out.put_slice(s.as_bytes());
    }
    let mut topics: Vec<(&str, Vec<V1Partition>)> = Vec::new();
    for &(topic, partition, offset, metadata) in entries {
        match topics.last_mut() {
            Some((name, partitions)) if *name == topic => {
                partitions.push((partition, offset, metadata))
            }
            _ => topics.push((topic, vec![(partition, offset, metadata)])),
        }
    }
    let mut out = BytesMut::new();
    put_str(&mut out, group);
    out.put_i32(generation);
    put_str(&mut out, member);
    out.put_i32(topics.len() as i32);
    for (topic, partitions) in topics {
        put_str(&mut out, topic);
        out.put_i32(partitions.len() as i32);
        for (partition, offset, metadata) in partitions {
            out.put_i32(partition);
            out.put_i64(offset);
            out.put_i64(-1); // commit timestamp: "now" (Sarama's ReceiveTime)
            match metadata {
                Some(m) => put_str(&mut out, m),
                None => out.put_i16(-1),
            }
        }
    }
    out.freeze()
}

/// The OffsetCommit v1 response body Kafka 3.x sends (no throttle time): per topic, per partition
/// (index, error code).
fn offset_commit_v1_response(topics: &[(&str, &[(i32, i16)])]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i32(topics.len() as i32);
    for (topic, partitions) in topics {
        out.put_i16(topic.len() as i16);
        out.put_slice(topic.as_bytes());
        out.put_i32(partitions.len() as i32);
        for (partition, error) in partitions.iter() {
            out.put_i32(*partition);
            out.put_i16(*error);
        }
    }
    out.freeze()
}

/// A DescribeConfigs v0 body as Sarama 1.22 encodes it: one topic resource and its keys (none: a
/// null key list, all configs).
fn describe_configs_v0(topic: &str, keys: &[&str]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i32(1);
    out.put_i8(2); // topic
    out.put_i16(topic.len() as i16);
    out.put_slice(topic.as_bytes());
    if keys.is_empty() {
        out.put_i32(-1);
    } else {
        out.put_i32(keys.len() as i32);
        for key in keys {
            out.put_i16(key.len() as i16);
            out.put_slice(key.as_bytes());
        }
    }
    out.freeze()
}

/// A DescribeConfigs v0 response body (Kafka's v0 schema) for one topic without error: throttle
/// time, then per config (name, value, is_default) with read_only and is_sensitive false, no
/// synonyms and no config source.
fn describe_configs_v0_response(topic: &str, configs: &[(&str, &str, bool)]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i32(0); // throttle time
    out.put_i32(1);
    out.put_i16(0); // error code
    out.put_i16(0); // error message: "", as Sluice and Kafka 4.4 answer at v1+
    out.put_i8(2);
    out.put_i16(topic.len() as i16);
    out.put_slice(topic.as_bytes());
    out.put_i32(configs.len() as i32);
    for (name, value, is_default) in configs {
        out.put_i16(name.len() as i16);
        out.put_slice(name.as_bytes());
        out.put_i16(value.len() as i16);
        out.put_slice(value.as_bytes());
        out.put_u8(0); // read_only
        out.put_u8(u8::from(*is_default));
        out.put_u8(0); // is_sensitive
    }
    out.freeze()
}

/// Sends `body` under a request header v1 (client id "sarama") and returns the answer's body after
/// checking its correlation id; panics unless the broker answers.
async fn raw_call(h: &Harness, api: ApiKey, version: i16, correlation: i32, body: &[u8]) -> Bytes {
    let mut frame = BytesMut::new();
    frame.put_i16(api as i16);
    frame.put_i16(version);
    frame.put_i32(correlation);
    frame.put_i16(6);
    frame.put_slice(b"sarama");
    frame.put_slice(body);
    let Outcome::Respond(mut answer) = handle_frame(&h.broker, frame.freeze()).await else {
        panic!("{api:?} v{version}: no answer")
    };
    let header = ResponseHeader::decode(&mut answer, 0).unwrap();
    assert_eq!(header.correlation_id, correlation);
    answer
}

/// (committed offset, metadata) of partition 0 of "versions" for `group`, at OffsetFetch `version`.
async fn fetch_committed(h: &Harness, group: &str, version: i16) -> (i64, String) {
    if version >= 8 {
        let request = OffsetFetchRequest::default().with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(text(group)))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopics::default()
                        .with_name(topic_name("versions"))
                        .with_partition_indexes(vec![0]),
                ])),
        ]);
        let ResponseKind::OffsetFetch(r) = h.call(ApiKey::OffsetFetch, version, &request).await
        else {
            panic!()
        };
        assert_eq!(r.groups[0].error_code, 0);
        let p = &r.groups[0].topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        return (
            p.committed_offset,
            p.metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        );
    }
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_topics(Some(vec![
            offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(topic_name("versions"))
                .with_partition_indexes(vec![0]),
        ]));
    let ResponseKind::OffsetFetch(r) = h.call(ApiKey::OffsetFetch, version, &request).await else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    (
        p.committed_offset,
        p.metadata
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

/// One group API at one version: a realistic request, checked for a correct answer.
async fn group_api_at_version(h: &Harness, api: ApiKey, v: i16) {
    match api {
        ApiKey::FindCoordinator => {
            let request = if v >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![text("g")])
            } else {
                FindCoordinatorRequest::default().with_key(text("g"))
            };
            let ResponseKind::FindCoordinator(r) = h.call(api, v, &request).await else {
                panic!()
            };
            if v >= 4 {
                let c = &r.coordinators[0];
                assert_eq!((c.error_code, c.node_id.0, c.port), (0, 1, 9092));
                assert_eq!(c.key.as_str(), "g");
            } else {
                assert_eq!((r.error_code, r.node_id.0, r.port), (0, 1, 9092));
                assert_eq!(r.host.as_str(), "127.0.0.1");
            }
        }
        ApiKey::JoinGroup => {
            let joined = join_at(h, &format!("join-v{v}"), v).await;
            assert_eq!(joined.error_code, 0, "JoinGroup v{v}");
            assert_eq!(joined.generation_id, 1);
            assert_eq!(joined.leader, joined.member_id);
            assert_eq!(joined.members.len(), 1);
            assert_eq!(
                joined.protocol_name.as_ref().map(|p| p.as_str()),
                Some("range")
            );
        }
        ApiKey::SyncGroup => {
            let group = format!("sync-v{v}");
            let joined = join_at(h, &group, 9).await;
            let member = joined.member_id.clone();
            let mut sync = SyncGroupRequest::default()
                .with_group_id(GroupId(text(&group)))
                .with_generation_id(joined.generation_id)
                .with_member_id(member.clone())
                .with_assignments(vec![
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(member)
                        .with_assignment(Bytes::from_static(b"mine")),
                ]);
            if v >= 5 {
                sync.protocol_type = Some(text("consumer"));
                sync.protocol_name = Some(text("range"));
            }
            let ResponseKind::SyncGroup(r) = h.call(api, v, &sync).await else {
                panic!()
            };
            assert_eq!(r.error_code, 0, "SyncGroup v{v}");
            assert_eq!(r.assignment, Bytes::from_static(b"mine"));
        }
        ApiKey::Heartbeat => {
            let group = format!("heartbeat-v{v}");
            let (member, generation) = stable_group(h, &group).await;
            let request = HeartbeatRequest::default()
                .with_group_id(GroupId(text(&group)))
                .with_generation_id(generation)
                .with_member_id(text(&member));
            let ResponseKind::Heartbeat(r) = h.call(api, v, &request).await else {
                panic!()
            };
            assert_eq!(r.error_code, 0, "Heartbeat v{v}");
            let stale = request.with_generation_id(generation + 7);
            let ResponseKind::Heartbeat(r) = h.call(api, v, &stale).await else {
                panic!()
            };
            assert_eq!(r.error_code, 22, "ILLEGAL_GENERATION");
        }
        ApiKey::LeaveGroup => {
            let group = format!("leave-v{v}");
            let (member, _) = stable_group(h, &group).await;
            let request = if v >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(text(&group)))
                    .with_members(vec![leave_group_request::MemberIdentity::default()
                        .with_member_id(text(&member))])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(text(&group)))
                    .with_member_id(text(&member))
            };
            let ResponseKind::LeaveGroup(r) = h.call(api, v, &request).await else {
                panic!()
            };
            assert_eq!(r.error_code, 0, "LeaveGroup v{v}");
            if v >= 3 {
                assert_eq!(r.members[0].error_code, 0);
            }
        }
        ApiKey::OffsetCommit if v == 1 => {
            // No kafka-protocol schema for v1: the bytes Sarama 1.22 sends, built by hand.
            let group = format!("commit-v{v}");
            let body = offset_commit_v1(&group, -1, "", &[("versions", 0, 2, Some("meta"))]);
            let answer = raw_call(h, ApiKey::OffsetCommit, 1, 1, &body).await;
            assert_eq!(
                answer,
                offset_commit_v1_response(&[("versions", &[(0, 0)])])
            );
            assert_eq!(fetch_committed(h, &group, 9).await, (2, "meta".to_string()));
        }
        ApiKey::OffsetCommit => {
            let group = format!("commit-v{v}");
            assert_eq!(simple_commit(h, &group, v, 2).await, 0, "OffsetCommit v{v}");
            assert_eq!(fetch_committed(h, &group, 9).await, (2, "meta".to_string()));
        }
        ApiKey::OffsetFetch => {
            let group = format!("fetch-v{v}");
            assert_eq!(simple_commit(h, &group, 9, 5).await, 0);
            assert_eq!(fetch_committed(h, &group, v).await, (5, "meta".to_string()));
        }
        ApiKey::ListGroups => {
            let group = format!("list-v{v}");
            stable_group(h, &group).await;
            let ResponseKind::ListGroups(r) = h.call(api, v, &ListGroupsRequest::default()).await
            else {
                panic!()
            };
            assert_eq!(r.error_code, 0);
            let listed = r
                .groups
                .iter()
                .find(|g| g.group_id.0.as_str() == group)
                .expect("the stable group is listed");
            assert_eq!(listed.protocol_type.as_str(), "consumer");
            if v >= 4 {
                assert_eq!(listed.group_state.as_str(), "Stable");
            }
        }
        ApiKey::DescribeGroups => {
            let group = format!("describe-v{v}");
            let (member, _) = stable_group(h, &group).await;
            let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(text(&group))]);
            let ResponseKind::DescribeGroups(r) = h.call(api, v, &request).await else {
                panic!()
            };
            let g = &r.groups[0];
            assert_eq!(g.error_code, 0);
            assert_eq!(g.group_state.as_str(), "Stable");
            assert_eq!(g.protocol_data.as_str(), "range");
            assert_eq!(g.members.len(), 1);
            assert_eq!(g.members[0].member_id.as_str(), member);
            assert_eq!(g.members[0].client_id.as_str(), "protocol-test");
            assert_eq!(
                g.members[0].member_assignment,
                Bytes::from_static(b"assigned")
            );
        }
        ApiKey::DeleteGroups => {
            let group = format!("delete-v{v}");
            assert_eq!(simple_commit(h, &group, 9, 3).await, 0);
            let request = DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(text(&group)), GroupId(text("never-was"))]);
            let ResponseKind::DeleteGroups(r) = h.call(api, v, &request).await else {
                panic!()
            };
            assert_eq!(r.results[0].error_code, 0, "DeleteGroups v{v}");
            assert_eq!(r.results[1].error_code, 69, "GROUP_ID_NOT_FOUND");
            assert_eq!(fetch_committed(h, &group, 9).await.0, -1);
        }
        ApiKey::OffsetDelete => {
            let group = format!("offset-delete-v{v}");
            assert_eq!(simple_commit(h, &group, 9, 3).await, 0);
            let request = OffsetDeleteRequest::default()
                .with_group_id(GroupId(text(&group)))
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(topic_name("versions"))
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default()
                                .with_partition_index(0),
                        ]),
                ]);
            let ResponseKind::OffsetDelete(r) = h.call(api, v, &request).await else {
                panic!()
            };
            assert_eq!(r.error_code, 0);
            assert_eq!(r.topics[0].partitions[0].error_code, 0);
            assert_eq!(fetch_committed(h, &group, 9).await.0, -1);
        }
        other => panic!("{other:?} is not a group API"),
    }
}

async fn create_topic(h: &Harness, name: &str, partitions: i32) -> uuid::Uuid {
    let request = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(1)]);
    match h.call(ApiKey::CreateTopics, 7, &request).await {
        ResponseKind::CreateTopics(r) => {
            assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
            r.topics[0].topic_id
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn produce_request(version: i16, name: &str, id: uuid::Uuid, batch: Bytes) -> ProduceRequest {
    let mut topic = produce_request::TopicProduceData::default().with_partition_data(vec![
        produce_request::PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(batch)),
    ]);
    if version >= 13 {
        topic = topic.with_topic_id(id);
    } else {
        topic = topic.with_name(topic_name(name));
    }
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![topic])
}

fn fetch_request(
    version: i16,
    name: &str,
    id: uuid::Uuid,
    offset: i64,
    wait_ms: i32,
) -> FetchRequest {
    let mut topic = fetch_request::FetchTopic::default().with_partitions(vec![
        fetch_request::FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(1 << 20),
    ]);
    if version >= 13 {
        topic = topic.with_topic_id(id);
    } else {
        topic = topic.with_topic(topic_name(name));
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 24)
        .with_topics(vec![topic])
}

#[tokio::test]
async fn every_advertised_version_is_answered_in_that_version() {
    let h = harness().await;
    let id = create_topic(&h, "versions", 2).await;

    for (api, min, max) in broker::versions::SUPPORTED.iter().copied() {
        for v in min..=max {
            let name = "versions";
            match api {
                ApiKey::ApiVersions => {
                    let r = h.call(api, v, &ApiVersionsRequest::default()).await;
                    let ResponseKind::ApiVersions(r) = r else {
                        panic!()
                    };
                    assert_eq!(r.error_code, 0);
                    assert!(r.api_keys.iter().any(|k| k.api_key == ApiKey::Fetch as i16));
                }
                ApiKey::Produce => {
                    let r = h
                        .call(
                            api,
                            v,
                            &produce_request(v, name, id, record_batch(&["a", "b"])),
                        )
                        .await;
                    let ResponseKind::Produce(r) = r else {
                        panic!()
                    };
                    let p = &r.responses[0].partition_responses[0];
                    assert_eq!(p.error_code, 0, "produce v{v}: {:?}", p.error_message);
                    assert!(p.base_offset >= 0);
                }
                ApiKey::Fetch => {
                    let r = h.call(api, v, &fetch_request(v, name, id, 0, 0)).await;
                    let ResponseKind::Fetch(r) = r else { panic!() };
                    let p = &r.responses[0].partitions[0];
                    assert_eq!(p.error_code, 0, "fetch v{v}");
                    assert!(p.high_watermark >= 2);
                    assert!(
                        p.records.as_ref().is_some_and(|r| !r.is_empty()),
                        "fetch v{v} returned no records"
                    );
                }
                ApiKey::ListOffsets => {
                    let request = ListOffsetsRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                            .with_name(topic_name(name))
                            .with_partitions(vec![
                                list_offsets_request::ListOffsetsPartition::default()
                                    .with_partition_index(0)
                                    .with_timestamp(-1),
                            ])]);
                    let ResponseKind::ListOffsets(r) = h.call(api, v, &request).await else {
                        panic!()
                    };
                    let p = &r.topics[0].partitions[0];
                    assert_eq!(p.error_code, 0);
                    assert!(p.offset >= 2, "latest offset v{v}: {}", p.offset);
                }
                ApiKey::Metadata => {
                    let topics =
                        vec![MetadataRequestTopic::default().with_name(Some(topic_name(name)))];
                    let ResponseKind::Metadata(r) = h
                        .call(
                            api,
                            v,
                            &MetadataRequest::default().with_topics(Some(topics)),
                        )
                        .await
                    else {
                        panic!()
                    };
                    assert_eq!(r.brokers.len(), 1);
                    assert_eq!(r.topics[0].error_code, 0);
                    assert_eq!(r.topics[0].partitions.len(), 2);
                    if v >= 10 {
                        assert_eq!(r.topics[0].topic_id, id);
                    }
                }
                ApiKey::CreateTopics => {
                    let request =
                        CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                            .with_name(topic_name(&format!("created-v{v}")))
                            .with_num_partitions(1)
                            .with_replication_factor(1)]);
                    let ResponseKind::CreateTopics(r) = h.call(api, v, &request).await else {
                        panic!()
                    };
                    assert_eq!(r.topics[0].error_code, 0);
                }
                ApiKey::DeleteTopics => {
                    let doomed = format!("doomed-v{v}");
                    let doomed_id = create_topic(&h, &doomed, 1).await;
                    let request = if v >= 6 {
                        DeleteTopicsRequest::default()
                            .with_topics(vec![delete_topics_request::DeleteTopicState::default()
                                .with_topic_id(doomed_id)])
                    } else {
                        DeleteTopicsRequest::default().with_topic_names(vec![topic_name(&doomed)])
                    };
                    let ResponseKind::DeleteTopics(r) = h.call(api, v, &request).await else {
                        panic!()
                    };
                    assert_eq!(r.responses[0].error_code, 0);
                    let check = MetadataRequest::default()
                        .with_topics(Some(vec![
                            MetadataRequestTopic::default().with_name(Some(topic_name(&doomed)))
                        ]))
                        .with_allow_auto_topic_creation(false);
                    let ResponseKind::Metadata(m) = h.call(ApiKey::Metadata, 12, &check).await
                    else {
                        panic!()
                    };
                    assert_eq!(m.topics[0].error_code, 3, "deleted topic must be unknown");
                }
                ApiKey::DeleteRecords => {
                    let request = DeleteRecordsRequest::default().with_topics(vec![
                        delete_records_request::DeleteRecordsTopic::default()
                            .with_name(topic_name(name))
                            .with_partitions(vec![
                                delete_records_request::DeleteRecordsPartition::default()
                                    .with_partition_index(1)
                                    .with_offset(0),
                            ]),
                    ]);
                    let ResponseKind::DeleteRecords(r) = h.call(api, v, &request).await else {
                        panic!()
                    };
                    assert_eq!(r.topics[0].partitions[0].error_code, 0);
                    assert_eq!(r.topics[0].partitions[0].low_watermark, 0);
                }
                ApiKey::InitProducerId => {
                    let request = InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1);
                    let ResponseKind::InitProducerId(r) = h.call(api, v, &request).await else {
                        panic!()
                    };
                    assert_eq!(r.error_code, 0);
                    assert!(r.producer_id.0 >= 0);
                }
                ApiKey::OffsetForLeaderEpoch => {
                    let request = OffsetForLeaderEpochRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_topics(vec![
                            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                                .with_topic(topic_name(name))
                                .with_partitions(vec![
                            offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                                .with_partition(0)
                                .with_current_leader_epoch(-1)
                                .with_leader_epoch(0),
                        ]),
                        ]);
                    let ResponseKind::OffsetForLeaderEpoch(r) = h.call(api, v, &request).await
                    else {
                        panic!()
                    };
                    let p = &r.topics[0].partitions[0];
                    assert_eq!(p.error_code, 0);
                    assert!(p.end_offset >= 2);
                }
                ApiKey::DescribeConfigs if v == 0 => {
                    // No kafka-protocol schema for v0: Sarama 1.22's bytes, built by hand.
                    let body = describe_configs_v0("versions", &["retention.ms"]);
                    let answer = raw_call(&h, api, 0, 3, &body).await;
                    assert_eq!(
                        answer,
                        describe_configs_v0_response(
                            "versions",
                            &[("retention.ms", "604800000", true)]
                        )
                    );
                }
                ApiKey::DescribeConfigs => {
                    let request = DescribeConfigsRequest::default().with_resources(vec![
                        describe_configs_request::DescribeConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("versions")),
                    ]);
                    let ResponseKind::DescribeConfigs(r) = h.call(api, v, &request).await else {
                        panic!()
                    };
                    assert_eq!(r.results[0].error_code, 0);
                    assert!(r.results[0]
                        .configs
                        .iter()
                        .any(|c| c.name.as_str() == "retention.ms"));
                }
                ApiKey::AlterConfigs => {
                    let request = AlterConfigsRequest::default().with_resources(vec![
                        alter_configs_request::AlterConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("versions"))
                            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                                .with_name(StrBytes::from_static_str("retention.ms"))
                                .with_value(Some(StrBytes::from_static_str("86400000")))]),
                    ]);
                    let ResponseKind::AlterConfigs(r) = h.call(api, v, &request).await else {
                        panic!()
                    };
                    assert_eq!(r.responses[0].error_code, 0);
                }
                ApiKey::IncrementalAlterConfigs => {
                    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
                        incremental_alter_configs_request::AlterConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("versions"))
                            .with_configs(vec![
                                incremental_alter_configs_request::AlterableConfig::default()
                                    .with_name(StrBytes::from_static_str("cleanup.policy"))
                                    .with_config_operation(0)
                                    .with_value(Some(StrBytes::from_static_str("compact"))),
                            ]),
                    ]);
                    let ResponseKind::IncrementalAlterConfigs(r) = h.call(api, v, &request).await
                    else {
                        panic!()
                    };
                    assert_eq!(
                        r.responses[0].error_code, 40,
                        "compact must be refused with INVALID_CONFIG"
                    );
                }
                ApiKey::CreatePartitions => {
                    let grow = format!("grow-v{v}");
                    create_topic(&h, &grow, 1).await;
                    let request = CreatePartitionsRequest::default().with_topics(vec![
                        create_partitions_request::CreatePartitionsTopic::default()
                            .with_name(topic_name(&grow))
                            .with_count(3),
                    ]);
                    let ResponseKind::CreatePartitions(r) = h.call(api, v, &request).await else {
                        panic!()
                    };
                    assert_eq!(r.results[0].error_code, 0);
                }
                ApiKey::DescribeCluster => {
                    let ResponseKind::DescribeCluster(r) =
                        h.call(api, v, &DescribeClusterRequest::default()).await
                    else {
                        panic!()
                    };
                    assert_eq!(r.cluster_id.as_str(), "test-cluster");
                    assert_eq!(r.brokers.len(), 1);
                }
                ApiKey::FindCoordinator
                | ApiKey::JoinGroup
                | ApiKey::SyncGroup
                | ApiKey::Heartbeat
                | ApiKey::LeaveGroup
                | ApiKey::OffsetCommit
                | ApiKey::OffsetFetch
                | ApiKey::ListGroups
                | ApiKey::DescribeGroups
                | ApiKey::DeleteGroups
                | ApiKey::OffsetDelete => group_api_at_version(&h, api, v).await,
                other => panic!("{other:?} is advertised but not covered by this test"),
            }
        }
    }
}

#[tokio::test]
async fn unsupported_versions_and_unknown_keys_get_unsupported_version() {
    let h = harness().await;
    // ApiVersions v99: a v0 answer with UNSUPPORTED_VERSION and the supported ranges.
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::ApiVersions as i16);
    frame.put_i16(99);
    frame.put_i32(42);
    frame.put_i16(-1);
    let Outcome::Respond(mut bytes) = handle_frame(&h.broker, frame.freeze()).await else {
        panic!()
    };
    let header = ResponseHeader::decode(&mut bytes, 0).unwrap();
    assert_eq!(header.correlation_id, 42);
    let body = ApiVersionsResponse::decode(&mut bytes, 0).unwrap();
    assert_eq!(body.error_code, 35);
    assert_eq!(body.api_keys.len(), broker::versions::SUPPORTED.len());

    // An unknown API key: correlation id + UNSUPPORTED_VERSION, connection kept.
    let mut frame = BytesMut::new();
    frame.put_i16(999);
    frame.put_i16(0);
    frame.put_i32(7);
    let Outcome::Respond(bytes) = handle_frame(&h.broker, frame.freeze()).await else {
        panic!()
    };
    assert_eq!(&bytes[..], &[0, 0, 0, 7, 0, 35]);

    // A known API at a version we do not advertise (Produce v2).
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::Produce as i16);
    frame.put_i16(2);
    frame.put_i32(8);
    let Outcome::Respond(bytes) = handle_frame(&h.broker, frame.freeze()).await else {
        panic!()
    };
    assert_eq!(&bytes[..], &[0, 0, 0, 8, 0, 35]);
}

#[tokio::test]
async fn malformed_and_hostile_bodies_close_the_connection_without_harm() {
    let h = harness().await;
    // Metadata v4 whose topic array claims i32::MAX entries in a 4-byte body: must fail to decode
    // (the alloc guard keeps the eager Vec::with_capacity of kafka-protocol from aborting).
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::Metadata as i16);
    frame.put_i16(4);
    frame.put_i32(1);
    frame.put_i16(-1); // client id null
    frame.put_i32(i32::MAX);
    assert!(matches!(
        handle_frame(&h.broker, frame.freeze()).await,
        Outcome::Close(_)
    ));

    // A truncated Produce body.
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::Produce as i16);
    frame.put_i16(7);
    frame.put_i32(2);
    frame.put_i16(-1);
    frame.put_i16(-1); // transactional id null; then nothing
    assert!(matches!(
        handle_frame(&h.broker, frame.freeze()).await,
        Outcome::Close(_)
    ));

    // Trailing bytes after a valid body are ignored, as Kafka does (librdkafka's all-topics Metadata
    // v12 request leaves 3 such bytes).
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Metadata as i16)
        .with_request_api_version(12)
        .with_correlation_id(9)
        .encode(&mut frame, 2)
        .unwrap();
    MetadataRequest::default()
        .with_topics(None)
        .encode(&mut frame, 12)
        .unwrap();
    frame.put_slice(&[0, 0, 0]);
    assert!(matches!(
        handle_frame(&h.broker, frame.freeze()).await,
        Outcome::Respond(_)
    ));

    // The broker still serves.
    let ResponseKind::ApiVersions(r) = h
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await
    else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
}

#[tokio::test]
async fn produce_rejects_bad_batches_per_partition() {
    let h = harness().await;
    let id = create_topic(&h, "strict", 1).await;
    let mut corrupt = BytesMut::from(&record_batch(&["x"])[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let ResponseKind::Produce(r) = h
        .call(
            ApiKey::Produce,
            9,
            &produce_request(9, "strict", id, corrupt.freeze()),
        )
        .await
    else {
        panic!()
    };
    assert_eq!(
        r.responses[0].partition_responses[0].error_code, 2,
        "CORRUPT_MESSAGE"
    );

    // max.message.bytes=100 makes an ordinary batch too large.
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("strict"))
            .with_configs(vec![
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("max.message.bytes"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_static_str("100"))),
            ]),
    ]);
    let ResponseKind::IncrementalAlterConfigs(r) =
        h.call(ApiKey::IncrementalAlterConfigs, 1, &request).await
    else {
        panic!()
    };
    assert_eq!(r.responses[0].error_code, 0);
    let big = record_batch(&[&"v".repeat(200)]);
    let ResponseKind::Produce(r) = h
        .call(ApiKey::Produce, 9, &produce_request(9, "strict", id, big))
        .await
    else {
        panic!()
    };
    assert_eq!(
        r.responses[0].partition_responses[0].error_code, 10,
        "MESSAGE_TOO_LARGE"
    );

    // Nothing was written.
    let ResponseKind::Fetch(r) = h
        .call(ApiKey::Fetch, 12, &fetch_request(12, "strict", id, 0, 0))
        .await
    else {
        panic!()
    };
    assert_eq!(r.responses[0].partitions[0].high_watermark, 0);
}

#[tokio::test]
async fn a_long_poll_is_woken_by_the_append_not_by_the_timeout() {
    let h = Arc::new(harness().await);
    let id = create_topic(&h, "tail", 1).await;
    let waiter = {
        let h = Arc::clone(&h);
        tokio::spawn(async move {
            let started = Instant::now();
            let r = h
                .call(ApiKey::Fetch, 12, &fetch_request(12, "tail", id, 0, 10_000))
                .await;
            (started.elapsed(), r)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ResponseKind::Produce(p) = h
        .call(
            ApiKey::Produce,
            9,
            &produce_request(9, "tail", id, record_batch(&["wake"])),
        )
        .await
    else {
        panic!()
    };
    assert_eq!(p.responses[0].partition_responses[0].error_code, 0);
    let (elapsed, response) = waiter.await.unwrap();
    let ResponseKind::Fetch(r) = response else {
        panic!()
    };
    assert!(r.responses[0].partitions[0]
        .records
        .as_ref()
        .is_some_and(|b| !b.is_empty()));
    assert!(
        elapsed < Duration::from_secs(2),
        "long poll took {elapsed:?}; it must be woken by the append"
    );
}

async fn produce_one(h: &Harness, name: &str, id: uuid::Uuid, batch: Bytes) -> (i16, i64) {
    let ResponseKind::Produce(r) = h
        .call(ApiKey::Produce, 9, &produce_request(9, name, id, batch))
        .await
    else {
        panic!()
    };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[tokio::test]
async fn idempotent_retries_get_their_original_offsets_and_gaps_and_fenced_epochs_fail() {
    let h = harness().await;
    let id = create_topic(&h, "idem", 1).await;
    let ResponseKind::InitProducerId(init) = h
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await
    else {
        panic!()
    };
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    assert!(pid >= 0);
    let first = sequenced_batch(pid, 0, 0, &["a", "b", "c"]);
    let second = sequenced_batch(pid, 0, 3, &["d"]);
    assert_eq!(produce_one(&h, "idem", id, first.clone()).await, (0, 0));
    assert_eq!(produce_one(&h, "idem", id, second.clone()).await, (0, 3));
    // Retries of acknowledged batches: original offsets, nothing written.
    assert_eq!(produce_one(&h, "idem", id, first).await, (0, 0));
    assert_eq!(produce_one(&h, "idem", id, second).await, (0, 3));
    let offsets = h.broker_offsets(id).await;
    assert_eq!(offsets, 4, "duplicates must not be written");
    // A gap in the sequence.
    let gap = sequenced_batch(pid, 0, 9, &["x"]);
    assert_eq!(produce_one(&h, "idem", id, gap).await.0, 45);
    // A newer epoch fences the old one.
    let bumped = sequenced_batch(pid, 1, 0, &["e"]);
    assert_eq!(produce_one(&h, "idem", id, bumped).await, (0, 4));
    let zombie = sequenced_batch(pid, 0, 4, &["z"]);
    assert_eq!(produce_one(&h, "idem", id, zombie).await.0, 47);
    assert_eq!(h.broker_offsets(id).await, 5);
}

impl Harness {
    /// The high watermark of partition 0 of the topic (via ListOffsets latest).
    async fn broker_offsets(&self, id: uuid::Uuid) -> i64 {
        let _ = id;
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic_name("idem"))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ])]);
        let ResponseKind::ListOffsets(r) = self.call(ApiKey::ListOffsets, 7, &request).await else {
            panic!()
        };
        r.topics[0].partitions[0].offset
    }

    /// ListOffsets of partition 0 of `name` at `version` for one timestamp query:
    /// (error code, offset, timestamp).
    async fn list_offset(&self, name: &str, version: i16, timestamp: i64) -> (i16, i64, i64) {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic_name(name))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(timestamp),
                ])]);
        let ResponseKind::ListOffsets(r) = self.call(ApiKey::ListOffsets, version, &request).await
        else {
            panic!()
        };
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.offset, p.timestamp)
    }
}

/// ListOffsets answers (offset, timestamp) in the right fields for every kind of query: the
/// max-timestamp query (-3, v7+) once answered the timestamp as the offset and vice versa (found by
/// the Java AdminClient's `OffsetSpec.maxTimestamp()` in the client matrix).
#[tokio::test]
async fn list_offsets_answers_offset_and_timestamp_in_their_fields() {
    let h = harness().await;
    let id = create_topic(&h, "ts", 1).await;
    let base = 1_700_000_000_000_i64;
    // Offsets 0..=2 with timestamps base+0..=2, then offset 3 with timestamp base+0.
    assert_eq!(
        produce_one(&h, "ts", id, record_batch(&["a", "b", "c"])).await,
        (0, 0)
    );
    assert_eq!(
        produce_one(&h, "ts", id, record_batch(&["d"])).await,
        (0, 3)
    );
    for version in [7, 8, 9, 10] {
        assert_eq!(
            h.list_offset("ts", version, -1).await,
            (0, 4, -1),
            "latest, v{version}"
        );
        assert_eq!(
            h.list_offset("ts", version, -2).await,
            (0, 0, -1),
            "earliest, v{version}"
        );
        assert_eq!(
            h.list_offset("ts", version, -3).await,
            (0, 2, base + 2),
            "max timestamp, v{version}"
        );
        assert_eq!(
            h.list_offset("ts", version, base + 1).await,
            (0, 1, base + 1),
            "by timestamp, v{version}"
        );
        assert_eq!(
            h.list_offset("ts", version, base + 3).await,
            (0, -1, -1),
            "timestamp after every record, v{version}"
        );
        // Earliest local (-4, v8+) is the log start; latest tiered (-5, v9+) has no offset
        // without tiered storage, as Kafka answers (not the high watermark). Older versions get
        // UNSUPPORTED_VERSION (35) in the partition, as Kafka 4.4 answers.
        let earliest_local = if version >= 8 {
            (0, 0, -1)
        } else {
            (35, -1, -1)
        };
        assert_eq!(
            h.list_offset("ts", version, -4).await,
            earliest_local,
            "earliest local, v{version}"
        );
        let latest_tiered = if version >= 9 {
            (0, -1, -1)
        } else {
            (35, -1, -1)
        };
        assert_eq!(
            h.list_offset("ts", version, -5).await,
            latest_tiered,
            "latest tiered, v{version}"
        );
    }
    assert_eq!(
        h.list_offset("ts", 6, -3).await,
        (35, -1, -1),
        "max timestamp, v6"
    );
}

/// DescribeCluster v1+ answers only for the endpoint type this listener is (brokers), with
/// Kafka 4.4's errors for the others (its answers on a combined KRaft node, checked by the
/// differential test).
#[tokio::test]
async fn describe_cluster_answers_by_endpoint_type() {
    let h = harness().await;
    for version in [1, 2] {
        for (endpoint_type, error) in [(1, 0), (2, 114), (3, 115), (0, 115)] {
            let request = DescribeClusterRequest::default()
                .with_endpoint_type(endpoint_type)
                .with_include_fenced_brokers(version >= 2);
            let ResponseKind::DescribeCluster(r) =
                h.call(ApiKey::DescribeCluster, version, &request).await
            else {
                panic!()
            };
            assert_eq!(
                r.error_code, error,
                "v{version} endpoint type {endpoint_type}"
            );
            assert_eq!(
                r.endpoint_type, 1,
                "v{version} endpoint type {endpoint_type}"
            );
            if error == 0 {
                assert_eq!(r.cluster_id.as_str(), "test-cluster");
                assert_eq!(r.controller_id.0, 1);
                assert_eq!(r.brokers.len(), 1);
                assert!(!r.brokers[0].is_fenced);
            } else {
                assert!(r.error_message.is_some());
                assert_eq!(r.cluster_id.as_str(), "");
                assert_eq!(r.controller_id.0, -1);
                assert!(r.brokers.is_empty());
            }
        }
    }
}

/// `message.format.version` (Kafka 3.x: deprecated, accepted and ignored) is accepted and
/// dropped by CreateTopics, AlterConfigs and IncrementalAlterConfigs; nothing else changes.
#[tokio::test]
async fn message_format_version_is_accepted_and_ignored() {
    let h = harness().await;
    let config = |name: &str, value: &str| {
        create_topics_request::CreatableTopicConfig::default()
            .with_name(text(name))
            .with_value(Some(text(value)))
    };
    let request = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(topic_name("mfv"))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(vec![
            config("message.format.version", "0.10.0"),
            config("retention.ms", "3600000"),
        ])]);
    let ResponseKind::CreateTopics(r) = h.call(ApiKey::CreateTopics, 7, &request).await else {
        panic!()
    };
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
    let described = r.topics[0].configs.as_ref().unwrap();
    assert!(described
        .iter()
        .all(|c| c.name.as_str() != "message.format.version"));
    assert!(described
        .iter()
        .any(|c| c.name.as_str() == "retention.ms" && c.value.as_deref() == Some("3600000")));

    let alter = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text("mfv"))
            .with_configs(vec![
                alter_configs_request::AlterableConfig::default()
                    .with_name(text("message.format.version"))
                    .with_value(Some(text("2.8-IV1"))),
                alter_configs_request::AlterableConfig::default()
                    .with_name(text("retention.ms"))
                    .with_value(Some(text("7200000"))),
            ]),
    ]);
    let ResponseKind::AlterConfigs(r) = h.call(ApiKey::AlterConfigs, 2, &alter).await else {
        panic!()
    };
    assert_eq!(
        r.responses[0].error_code, 0,
        "{:?}",
        r.responses[0].error_message
    );
    let incremental = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text("mfv"))
            .with_configs(vec![
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(text("message.format.version"))
                    .with_config_operation(0)
                    .with_value(Some(text("3.0"))),
            ]),
    ]);
    let ResponseKind::IncrementalAlterConfigs(r) = h
        .call(ApiKey::IncrementalAlterConfigs, 1, &incremental)
        .await
    else {
        panic!()
    };
    assert_eq!(
        r.responses[0].error_code, 0,
        "{:?}",
        r.responses[0].error_message
    );
    let describe = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text("mfv"))
            .with_configuration_keys(None),
    ]);
    let ResponseKind::DescribeConfigs(r) = h.call(ApiKey::DescribeConfigs, 4, &describe).await
    else {
        panic!()
    };
    let configs = &r.results[0].configs;
    assert!(configs
        .iter()
        .all(|c| c.name.as_str() != "message.format.version"));
    assert!(configs
        .iter()
        .any(|c| c.name.as_str() == "retention.ms" && c.value.as_deref() == Some("7200000")));
}

/// A batch of `values` compressed with `codec`, from an idempotent producer when `producer_id`
/// is set.
fn codec_batch(values: &[&str], codec: Compression, producer_id: i64, base_sequence: i32) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: if producer_id >= 0 { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if producer_id >= 0 {
                base_sequence + i as i32
            } else {
                -1 + i as i32
            },
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(v.repeat(50))),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
    )
    .unwrap();
    buf.freeze()
}

/// Every stored batch of `name` partition 0 as fetched: (codec bits, decoded records).
async fn fetch_batches(h: &Harness, name: &str, id: uuid::Uuid) -> Vec<(i16, Vec<Record>)> {
    let ResponseKind::Fetch(r) = h
        .call(ApiKey::Fetch, 12, &fetch_request(12, name, id, 0, 0))
        .await
    else {
        panic!()
    };
    let mut records = r.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default();
    let mut batches = Vec::new();
    while !records.is_empty() {
        let header = storage::batch::BatchHeader::parse(&records).unwrap();
        let batch = records.split_to(header.total_len());
        // Valid as stored: framing, CRC-32C, counts.
        storage::batch::validate(&batch).unwrap();
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut batch.clone()).unwrap();
        batches.push((header.attributes & 0x07, set.records));
    }
    batches
}

/// compression.type=<codec>: every batch is stored in the topic's codec whatever the producer
/// used (a batch already in it untouched), with its records, offsets, timestamps and producer
/// fields intact; an idempotent retry of a recompressed batch gets its first offset back;
/// `producer` keeps the producer's codec. Kafka 4.4 accepts the same values (differential test).
#[tokio::test]
async fn topic_compression_type_recompresses_batches_to_its_codec() {
    let h = harness().await;
    for (topic_codec, bits) in [
        ("zstd", 4i16),
        ("lz4", 3),
        ("uncompressed", 0),
        ("gzip", 1),
        ("snappy", 2),
        ("producer", -1),
    ] {
        let name = format!("codec-{topic_codec}");
        let request = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(&name))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                .with_name(text("compression.type"))
                .with_value(Some(text(topic_codec)))])]);
        let ResponseKind::CreateTopics(r) = h.call(ApiKey::CreateTopics, 7, &request).await else {
            panic!()
        };
        assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
        let id = r.topics[0].topic_id;
        let sent = [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        let mut expected = Vec::new();
        for (i, codec) in sent.iter().enumerate() {
            let values = [format!("v{i}a"), format!("v{i}b")];
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            let batch = codec_batch(&values, *codec, 77, 2 * i as i32);
            assert_eq!(
                produce_one(&h, &name, id, batch.clone()).await,
                (0, 2 * i as i64),
                "{topic_codec}: {codec:?}"
            );
            // The same batch again (a producer retry): de-duplicated to its first offset.
            assert_eq!(
                produce_one(&h, &name, id, batch).await,
                (0, 2 * i as i64),
                "{topic_codec}: retry of {codec:?}"
            );
            expected.push(codec_batch(&values, Compression::None, 77, 2 * i as i32));
        }
        let stored = fetch_batches(&h, &name, id).await;
        assert_eq!(stored.len(), sent.len(), "{topic_codec}");
        for (i, ((stored_bits, records), plain)) in stored.iter().zip(&expected).enumerate() {
            let want_bits = if bits >= 0 { bits } else { i as i16 };
            assert_eq!(*stored_bits, want_bits, "{topic_codec}: batch {i}");
            let want =
                kafka_protocol::records::RecordBatchDecoder::decode(&mut plain.clone()).unwrap();
            assert_eq!(records.len(), 2);
            for (j, (got, want)) in records.iter().zip(&want.records).enumerate() {
                assert_eq!(got.offset, 2 * i as i64 + j as i64);
                assert_eq!(got.timestamp, want.timestamp);
                assert_eq!((got.producer_id, got.producer_epoch), (77, 0));
                assert_eq!(got.sequence, want.sequence);
                assert_eq!((&got.key, &got.value), (&want.key, &want.value));
            }
        }
    }
}

#[tokio::test]
async fn group_requests_with_bad_input_get_the_kafka_errors() {
    let h = harness().await;
    create_topic(&h, "versions", 1).await;
    let group = "bad-input";
    let (member, generation) = stable_group(&h, group).await;

    // SyncGroup from a stale generation, and from a member the group does not know.
    let sync = |member: &str, generation: i32| {
        SyncGroupRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_generation_id(generation)
            .with_member_id(text(member))
    };
    let ResponseKind::SyncGroup(r) = h
        .call(ApiKey::SyncGroup, 5, &sync(&member, generation - 1))
        .await
    else {
        panic!()
    };
    assert_eq!(r.error_code, 22, "ILLEGAL_GENERATION");
    let ResponseKind::SyncGroup(r) = h
        .call(ApiKey::SyncGroup, 5, &sync("stranger", generation))
        .await
    else {
        panic!()
    };
    assert_eq!(r.error_code, 25, "UNKNOWN_MEMBER_ID");
    let heartbeat = |member: &str| {
        HeartbeatRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_generation_id(generation)
            .with_member_id(text(member))
    };
    let ResponseKind::Heartbeat(r) = h.call(ApiKey::Heartbeat, 4, &heartbeat("stranger")).await
    else {
        panic!()
    };
    assert_eq!(r.error_code, 25, "UNKNOWN_MEMBER_ID");

    // Commits: to a group that does not exist with a generation, and with a wrong generation.
    let commit = |group: &str, member: &str, generation: i32| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(text(member))
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic_name("versions"))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(1),
                    ]),
            ])
    };
    let error = |r: ResponseKind| {
        let ResponseKind::OffsetCommit(r) = r else {
            panic!()
        };
        r.topics[0].partitions[0].error_code
    };
    let r = h
        .call(ApiKey::OffsetCommit, 9, &commit("no-such-group", "m", 3))
        .await;
    assert_eq!(
        error(r),
        22,
        "commit to a group that never formed: ILLEGAL_GENERATION"
    );
    let r = h
        .call(
            ApiKey::OffsetCommit,
            9,
            &commit(group, &member, generation + 1),
        )
        .await;
    assert_eq!(error(r), 22, "wrong generation: ILLEGAL_GENERATION");
    let r = h
        .call(
            ApiKey::OffsetCommit,
            9,
            &commit(group, "stranger", generation),
        )
        .await;
    assert_eq!(error(r), 25, "unknown member: UNKNOWN_MEMBER_ID");
    let r = h
        .call(ApiKey::OffsetCommit, 9, &commit(group, &member, generation))
        .await;
    assert_eq!(error(r), 0);
    let r = h.call(ApiKey::OffsetCommit, 9, &commit("", "m", -1)).await;
    assert_eq!(error(r), 24, "INVALID_GROUP_ID");

    // A second member joins: the first one's heartbeat says REBALANCE_IN_PROGRESS.
    let ResponseKind::JoinGroup(pending) = h
        .call(ApiKey::JoinGroup, 9, &join_request(group, "", 9))
        .await
    else {
        panic!()
    };
    assert_eq!(pending.error_code, 79);
    let second = join_request(group, pending.member_id.as_str(), 9);
    let join_task = {
        let broker = h.broker.clone();
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::JoinGroup as i16)
            .with_request_api_version(9)
            .with_correlation_id(999)
            .with_client_id(Some(StrBytes::from_static_str("second")));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, JoinGroupRequest::header_version(9))
            .unwrap();
        second.encode(&mut buf, 9).unwrap();
        // The join waits for the rebalance: run it concurrently.
        tokio::spawn(async move { handle_frame(&broker, buf.freeze()).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ResponseKind::Heartbeat(r) = h.call(ApiKey::Heartbeat, 4, &heartbeat(&member)).await
        else {
            panic!()
        };
        if r.error_code == 27 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no REBALANCE_IN_PROGRESS: {}",
            r.error_code
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The first member rejoins; both get generation + 1.
    let ResponseKind::JoinGroup(rejoined) = h
        .call(ApiKey::JoinGroup, 9, &join_request(group, &member, 9))
        .await
    else {
        panic!()
    };
    assert_eq!(rejoined.error_code, 0);
    assert_eq!(rejoined.generation_id, generation + 1);
    assert_eq!(rejoined.members.len(), 2, "the leader sees both members");
    let Outcome::Respond(_) = join_task.await.unwrap() else {
        panic!("the second member's join was not answered")
    };
    // A bad session timeout.
    let mut short = join_request("other", "", 9);
    short.session_timeout_ms = 5;
    let ResponseKind::JoinGroup(r) = h.call(ApiKey::JoinGroup, 9, &short).await else {
        panic!()
    };
    assert_eq!(r.error_code, 26, "INVALID_SESSION_TIMEOUT");
}

/// zstd batches need Produce v7+ (KIP-110): older requests get UNSUPPORTED_COMPRESSION_TYPE (76)
/// in the partition, as Kafka 4.4 answers, also on a zstd topic; uncompressed batches to a zstd
/// topic are fine at any version (recompressed by the broker).
#[tokio::test]
async fn zstd_batches_need_produce_v7() {
    let h = harness().await;
    let id = create_topic(&h, "zstd-old", 1).await;
    for (version, codec, want) in [
        (3, Compression::Zstd, 76),
        (6, Compression::Zstd, 76),
        (7, Compression::Zstd, 0),
        (3, Compression::None, 0),
    ] {
        let ResponseKind::Produce(r) = h
            .call(
                ApiKey::Produce,
                version,
                &produce_request(version, "zstd-old", id, codec_batch(&["z"], codec, -1, 0)),
            )
            .await
        else {
            panic!()
        };
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, want, "Produce v{version} {codec:?}");
    }
}

/// Sarama 1.22 (`Config.Version` V2_2_0_0, as Debian ships it) commits a consumer group's offsets
/// with OffsetCommit v1 and ignores ApiVersions. Before Sluice served v1, the answer was the 6-byte
/// UNSUPPORTED_VERSION stub, which Sarama fails to decode ("insufficient data to decode packet"),
/// and it then closed the connection its partition consumers fetch on, every commit interval.
/// Checked here byte for byte: the answers Kafka 3.x (the last to serve v1) gives.
#[tokio::test]
async fn offset_commit_v1_from_a_sarama_consumer_group_is_served() {
    let h = harness().await;
    create_topic(&h, "versions", 2).await;
    let group = "sarama-122";
    let (member, generation) = stable_group(&h, group).await;

    // The member's commit of both partitions (one without metadata), as Sarama's offset manager
    // sends it; then read back with OffsetFetch v1, which Sarama 1.22 uses.
    let body = offset_commit_v1(
        group,
        generation,
        &member,
        &[("versions", 0, 15, Some("")), ("versions", 1, 7, None)],
    );
    let answer = raw_call(&h, ApiKey::OffsetCommit, 1, 11, &body).await;
    assert_eq!(
        answer,
        offset_commit_v1_response(&[("versions", &[(0, 0), (1, 0)])]),
        "OffsetCommit v1 answer"
    );
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_topics(Some(vec![
            offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(topic_name("versions"))
                .with_partition_indexes(vec![0, 1]),
        ]));
    let ResponseKind::OffsetFetch(r) = h.call(ApiKey::OffsetFetch, 1, &fetch).await else {
        panic!()
    };
    let committed: Vec<_> = r.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset, p.error_code))
        .collect();
    assert_eq!(committed, vec![(0, 15, 0), (1, 7, 0)]);

    // The group rules apply as at v2+: a stale generation, an unknown member, an unknown partition.
    let body = offset_commit_v1(group, generation - 1, &member, &[("versions", 0, 16, None)]);
    let answer = raw_call(&h, ApiKey::OffsetCommit, 1, 12, &body).await;
    assert_eq!(
        answer,
        offset_commit_v1_response(&[("versions", &[(0, 22)])])
    );
    let body = offset_commit_v1(group, generation, "stranger", &[("versions", 0, 16, None)]);
    let answer = raw_call(&h, ApiKey::OffsetCommit, 1, 13, &body).await;
    assert_eq!(
        answer,
        offset_commit_v1_response(&[("versions", &[(0, 25)])])
    );
    let body = offset_commit_v1(
        group,
        generation,
        &member,
        &[("versions", 5, 16, None), ("nope", 0, 1, None)],
    );
    let answer = raw_call(&h, ApiKey::OffsetCommit, 1, 14, &body).await;
    assert_eq!(
        answer,
        offset_commit_v1_response(&[("versions", &[(5, 3)]), ("nope", &[(0, 3)])])
    );

    // A truncated v1 body closes the connection, as any body that does not decode.
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::OffsetCommit as i16);
    frame.put_i16(1);
    frame.put_i32(15);
    frame.put_i16(-1);
    frame.put_slice(&body[..body.len() - 3]);
    assert!(matches!(
        handle_frame(&h.broker, frame.freeze()).await,
        Outcome::Close(_)
    ));

    // v0 (offsets kept in ZooKeeper) stays unsupported: the UNSUPPORTED_VERSION stub.
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::OffsetCommit as i16);
    frame.put_i16(0);
    frame.put_i32(16);
    let Outcome::Respond(bytes) = handle_frame(&h.broker, frame.freeze()).await else {
        panic!()
    };
    assert_eq!(&bytes[..], &[0, 0, 0, 16, 0, 35]);
}

/// Sarama 1.22's ClusterAdmin.DescribeConfig and ListTopics send DescribeConfigs v0, which Kafka 4
/// no longer serves: answered in Kafka's v0 layout (is_default, true for the configs whose source is
/// DEFAULT_CONFIG, instead of the config source; no synonyms), checked byte for byte.
#[tokio::test]
async fn describe_configs_v0_from_sarama_admin_is_answered_in_the_v0_layout() {
    let h = harness().await;
    create_topic(&h, "v0-configs", 1).await;
    let alter = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("v0-configs"))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_static_str("7200000")))]),
    ]);
    let ResponseKind::AlterConfigs(r) = h.call(ApiKey::AlterConfigs, 0, &alter).await else {
        panic!()
    };
    assert_eq!(r.responses[0].error_code, 0);

    let body = describe_configs_v0("v0-configs", &["retention.ms", "max.message.bytes"]);
    let answer = raw_call(&h, ApiKey::DescribeConfigs, 0, 21, &body).await;
    assert_eq!(
        answer,
        describe_configs_v0_response(
            "v0-configs",
            &[
                ("max.message.bytes", "1048588", true),
                ("retention.ms", "7200000", false),
            ]
        )
    );

    // All configs (a null key list): the same entries as v1 lists, with is_default for exactly
    // the configs whose v1 source is DEFAULT_CONFIG.
    let answer = raw_call(
        &h,
        ApiKey::DescribeConfigs,
        0,
        22,
        &describe_configs_v0("v0-configs", &[]),
    )
    .await;
    let v1 = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("v0-configs")),
    ]);
    let ResponseKind::DescribeConfigs(r) = h.call(ApiKey::DescribeConfigs, 1, &v1).await else {
        panic!()
    };
    let all: Vec<(String, String, bool)> = r.results[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                c.config_source == 5,
            )
        })
        .collect();
    assert!(all.len() > 2 && all.iter().filter(|c| !c.2).count() == 1);
    let all: Vec<(&str, &str, bool)> = all
        .iter()
        .map(|(n, v, d)| (n.as_str(), v.as_str(), *d))
        .collect();
    assert_eq!(answer, describe_configs_v0_response("v0-configs", &all));

    // An unknown topic: the error in the v0 layout, no configs.
    let answer = raw_call(
        &h,
        ApiKey::DescribeConfigs,
        0,
        23,
        &describe_configs_v0("nope", &[]),
    )
    .await;
    let mut want = BytesMut::new();
    want.put_i32(0);
    want.put_i32(1);
    want.put_i16(3); // UNKNOWN_TOPIC_OR_PARTITION
    want.put_i16(13);
    want.put_slice(b"unknown topic");
    want.put_i8(2);
    want.put_i16(4);
    want.put_slice(b"nope");
    want.put_i32(0);
    assert_eq!(answer, want.freeze());
}

/// A LogAppendTime topic with a codec: the recompressed batch gets the broker's time and a CRC
/// that covers both rewrites.
#[tokio::test]
async fn log_append_time_and_recompression_together() {
    let h = harness().await;
    let config = |name: &str, value: &str| {
        create_topics_request::CreatableTopicConfig::default()
            .with_name(text(name))
            .with_value(Some(text(value)))
    };
    let request = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(topic_name("lat-zstd"))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(vec![
            config("compression.type", "zstd"),
            config("message.timestamp.type", "LogAppendTime"),
        ])]);
    let ResponseKind::CreateTopics(r) = h.call(ApiKey::CreateTopics, 7, &request).await else {
        panic!()
    };
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
    let id = r.topics[0].topic_id;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let batch = codec_batch(&["a", "b"], Compression::Gzip, -1, 0);
    assert_eq!(produce_one(&h, "lat-zstd", id, batch).await, (0, 0));
    let ResponseKind::Fetch(r) = h
        .call(ApiKey::Fetch, 12, &fetch_request(12, "lat-zstd", id, 0, 0))
        .await
    else {
        panic!()
    };
    let stored = r.responses[0].partitions[0].records.clone().unwrap();
    let header = storage::batch::validate(&stored).expect("valid: one CRC over both rewrites");
    assert_eq!(header.attributes & 0x07, 4, "zstd");
    assert_ne!(header.attributes & 0x08, 0, "LogAppendTime bit");
    assert!(
        header.max_timestamp >= before,
        "broker time {}",
        header.max_timestamp
    );
    // As consumers read LogAppendTime batches: every record at the batch's max timestamp.
    assert_eq!(
        storage::batch::record_timestamps(&stored),
        Ok(vec![(0, header.max_timestamp), (1, header.max_timestamp)])
    );
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut stored.clone()).unwrap();
    let values: Vec<_> = set
        .records
        .iter()
        .map(|r| r.value.clone().unwrap())
        .collect();
    assert_eq!(values, vec!["a".repeat(50), "b".repeat(50)]);
}

/// The partitions of one Fetch are read concurrently but answered as if read one after another
/// under the response limit (KIP-74): the first partition gets what fits, the next one what is
/// left (at least one batch), and partitions past the limit none, with their high watermarks.
#[tokio::test]
async fn fetch_partitions_share_the_response_limit_in_request_order() {
    let h = harness().await;
    let name = "fetch-budget";
    let id = create_topic(&h, name, 3).await;
    let value = "v".repeat(1000);
    let mut batch_len = 0;
    for partition in 0..3 {
        for _ in 0..4 {
            let batch = record_batch(&[value.as_str()]);
            batch_len = batch.len();
            let mut request = produce_request(9, name, id, batch);
            request.topic_data[0].partition_data[0].index = partition;
            let ResponseKind::Produce(r) = h.call(ApiKey::Produce, 9, &request).await else {
                panic!()
            };
            assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        }
    }
    let fetch = |partitions: &[i32], max_bytes: usize| {
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes as i32)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(topic_name(name))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            fetch_request::FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(0)
                                .with_partition_max_bytes(1 << 20)
                        })
                        .collect(),
                )])
    };
    let records = |r: &FetchResponse, p: usize| {
        r.responses[0].partitions[p]
            .records
            .clone()
            .unwrap_or_default()
    };
    // Room for five and a half batches: partition 0 gets its four, partition 1 one of its four
    // (what a read of the one and a half batches left returns), partition 2 nothing.
    let limit = batch_len * 11 / 2;
    let ResponseKind::Fetch(all) = h.call(ApiKey::Fetch, 12, &fetch(&[0, 1, 2], limit)).await
    else {
        panic!()
    };
    let ResponseKind::Fetch(p1_alone) = h
        .call(ApiKey::Fetch, 12, &fetch(&[1], limit - 4 * batch_len))
        .await
    else {
        panic!()
    };
    assert_eq!(records(&all, 0).len(), 4 * batch_len);
    assert_eq!(records(&all, 1), records(&p1_alone, 0));
    assert_eq!(records(&all, 1).len(), batch_len);
    assert!(records(&all, 2).is_empty());
    for p in 0..3 {
        assert_eq!(all.responses[0].partitions[p].error_code, 0);
        assert_eq!(all.responses[0].partitions[p].high_watermark, 4);
    }
    // With room for everything, every partition answers in full.
    let ResponseKind::Fetch(full) = h.call(ApiKey::Fetch, 12, &fetch(&[2, 0, 1], 1 << 20)).await
    else {
        panic!()
    };
    for p in 0..3 {
        assert_eq!(records(&full, p).len(), 4 * batch_len);
        assert_eq!(
            full.responses[0].partitions[p].partition_index,
            [2, 0, 1][p]
        );
    }
}
