//! The state's JSON (the body of every snapshot) is a stored format: how the state is shared in
//! memory (the `Arc`s of copy-on-write) must not show in it. `SAMPLE_STATE_JSON` was written by the
//! state as it was before partitions went behind an `Arc` (commit f12bec9): today's state must read
//! it back and write exactly those bytes again.

use std::sync::Arc;

use uuid::Uuid;

use crate::apply::apply_command;
use crate::{
    Command, CommandResponse, LaneMark, MetadataState, SegmentEntry, SegmentRef, TopicPartition,
};

const NOW: i64 = 1_700_000_000_000;

fn topic_id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn tp(topic: u128, partition: i32) -> TopicPartition {
    TopicPartition {
        topic_id: topic_id(topic),
        partition,
    }
}

fn segment(key: &str, base_offset: i64, end_offset: i64) -> SegmentRef {
    SegmentRef {
        key: key.into(),
        base_offset,
        end_offset,
        data_start: 0,
        data_len: 1_000,
        min_timestamp: NOW - 10,
        max_timestamp: NOW,
        created_ms: NOW,
        footer_len: 0,
        producer_batches: false,
    }
}

fn apply(state: &mut MetadataState, command: Command) {
    let response = apply_command(state, &command);
    let applied = match &response {
        CommandResponse::Entries(outcomes) => outcomes.iter().all(Option::is_none),
        CommandResponse::Rejected(_) => false,
        _ => true,
    };
    assert!(applied, "{command:?} → {response:?}");
}

/// Two topics (one with configs), own segments and chunks of a shared WAL object, a moved log
/// start, lane marks and bumped epochs (an epoch history with several entries).
fn sample_state() -> MetadataState {
    let mut state = MetadataState::default();
    let incarnation = Uuid::from_u128(0xabc);
    apply(
        &mut state,
        Command::InitCluster {
            cluster_id: "format".into(),
        },
    );
    for node_id in [1, 2] {
        apply(
            &mut state,
            Command::RegisterBroker {
                node_id,
                host: "127.0.0.1".into(),
                port: 9090 + u16::try_from(node_id).unwrap(),
            },
        );
    }
    apply(
        &mut state,
        Command::RegisterIncarnation {
            incarnation,
            node_id: 1,
            lanes: 2,
            now_ms: NOW,
            successor_of: None,
        },
    );
    apply(
        &mut state,
        Command::CreateTopic {
            name: "orders".into(),
            topic_id: topic_id(1),
            partitions: 3,
            configs: [("retention.ms".to_string(), "60000".to_string())].into(),
            owner: 1,
            now_ms: NOW,
        },
    );
    apply(
        &mut state,
        Command::CreateTopic {
            name: "events".into(),
            topic_id: topic_id(2),
            partitions: 1,
            configs: Default::default(),
            owner: 1,
            now_ms: NOW,
        },
    );
    apply(
        &mut state,
        Command::AddSegment {
            tp: tp(1, 0),
            leader_epoch: 0,
            segment: segment("own/0", 0, 10),
        },
    );
    apply(
        &mut state,
        Command::AddSegment {
            tp: tp(1, 0),
            leader_epoch: 0,
            segment: segment("own/1", 10, 25),
        },
    );
    let shared = |tp, base, end| SegmentEntry {
        tp,
        leader_epoch: 0,
        segment: SegmentRef {
            footer_len: 64,
            producer_batches: base == 0,
            ..segment("wal/1", base, end)
        },
    };
    apply(
        &mut state,
        Command::AddSegments {
            entries: vec![shared(tp(1, 1), 0, 7), shared(tp(2, 0), 0, 3)],
            now_ms: NOW,
            marks: vec![LaneMark {
                incarnation,
                lane: 1,
                through: 1,
            }],
            seal: None,
        },
    );
    apply(
        &mut state,
        Command::AdvanceLogStart {
            tp: tp(1, 0),
            offset: 12,
            now_ms: NOW,
            leader_epoch: 0,
        },
    );
    apply(
        &mut state,
        Command::AcquirePartitions {
            node_id: 2,
            partitions: vec![tp(1, 1), tp(1, 2)],
        },
    );
    apply(
        &mut state,
        Command::AcquirePartitions {
            node_id: 1,
            partitions: vec![tp(1, 1)],
        },
    );
    apply(&mut state, Command::AllocateProducerIds { count: 5 });
    state
}

const SAMPLE_STATE_JSON: &str = r#"{"cluster_id":"format","brokers":{"1":{"node_id":1,"host":"127.0.0.1","port":9091,"incarnation":1},"2":{"node_id":2,"host":"127.0.0.1","port":9092,"incarnation":1}},"topics":{"00000000-0000-0000-0000-000000000001":{"id":"00000000-0000-0000-0000-000000000001","name":"orders","configs":{"retention.ms":"60000"},"partitions":[{"owner":1,"leader_epoch":0,"log_start_offset":12,"segments":[{"key":"own/1","base_offset":10,"end_offset":25,"data_start":0,"data_len":1000,"min_timestamp":1699999999990,"max_timestamp":1700000000000,"created_ms":1700000000000}],"epoch_starts":[{"epoch":0,"start_offset":0}]},{"owner":1,"leader_epoch":2,"log_start_offset":0,"segments":[{"key":"wal/1","base_offset":0,"end_offset":7,"data_start":0,"data_len":1000,"min_timestamp":1699999999990,"max_timestamp":1700000000000,"created_ms":1700000000000,"footer_len":64,"producer_batches":true}],"epoch_starts":[{"epoch":0,"start_offset":0},{"epoch":1,"start_offset":7},{"epoch":2,"start_offset":7}]},{"owner":2,"leader_epoch":1,"log_start_offset":0,"segments":[],"epoch_starts":[{"epoch":0,"start_offset":0},{"epoch":1,"start_offset":0}]}],"created_ms":1700000000000},"00000000-0000-0000-0000-000000000002":{"id":"00000000-0000-0000-0000-000000000002","name":"events","configs":{},"partitions":[{"owner":1,"leader_epoch":0,"log_start_offset":0,"segments":[{"key":"wal/1","base_offset":0,"end_offset":3,"data_start":0,"data_len":1000,"min_timestamp":1699999999990,"max_timestamp":1700000000000,"created_ms":1700000000000,"footer_len":64,"producer_batches":true}],"epoch_starts":[{"epoch":0,"start_offset":0}]}],"created_ms":1700000000000}},"topic_ids":{"events":"00000000-0000-0000-0000-000000000002","orders":"00000000-0000-0000-0000-000000000001"},"next_producer_id":5,"deleted_objects":[["own/0",1700000000000]],"group_offsets":{},"producer_states":{},"shared_objects":{"wal/1":2},"incarnations":{"00000000-0000-0000-0000-000000000abc":{"node_id":1,"lanes":2,"ordinal":0,"registered_ms":1700000000000,"indexed_through":[0,1],"live":true}},"next_incarnation_ordinal":1}"#;

#[test]
fn state_json_is_unchanged_by_the_in_memory_layout() {
    let state = sample_state();
    let encoded = serde_json::to_string(&state).unwrap();
    assert_eq!(encoded, SAMPLE_STATE_JSON);
    let decoded: MetadataState = serde_json::from_str(SAMPLE_STATE_JSON).unwrap();
    assert_eq!(decoded, state);
}

/// A command that changes one partition copies that partition only: a reader holding the previous
/// state keeps sharing every other partition (and their segment lists) with the new one.
#[test]
fn changing_one_partition_shares_the_others_with_the_previous_state() {
    let published = Arc::new(sample_state());
    let mut next = MetadataState::clone(&published);
    apply(
        &mut next,
        Command::AddSegment {
            tp: tp(1, 0),
            leader_epoch: 0,
            segment: segment("own/2", 25, 30),
        },
    );
    let before = &published.topics[&topic_id(1)];
    let after = &next.topics[&topic_id(1)];
    assert!(!Arc::ptr_eq(before, after), "the changed topic is copied");
    assert_eq!(after.partitions[0].segments.len(), 2);
    assert_eq!(before.partitions[0].segments.len(), 1, "the reader's copy");
    for index in 1..3 {
        assert!(
            Arc::ptr_eq(&before.partitions[index], &after.partitions[index]),
            "partition {index} was copied"
        );
    }
    assert!(Arc::ptr_eq(
        &published.topics[&topic_id(2)],
        &next.topics[&topic_id(2)]
    ));
}
