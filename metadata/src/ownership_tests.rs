//! `apply` tests of partition ownership: every partition write is fenced by the leader epoch,
//! `AcquirePartitions` moves ownership and bumps epochs, and each bump is recorded in the
//! per-epoch start-offset history that OffsetForLeaderEpoch answers from.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::apply::apply_command;
use crate::{
    Command, CommandResponse, EpochStart, EpochStartEntry, MetadataState, PartitionProducers,
    Rejection, SegmentEntry, SegmentRef, TopicPartition, UNCHECKED_EPOCH,
};

const NOW: i64 = 1_700_000_000_000;

fn seg(key: &str, base: i64, end: i64) -> SegmentRef {
    SegmentRef {
        key: key.to_owned(),
        base_offset: base,
        end_offset: end,
        data_start: 0,
        data_len: 10,
        min_timestamp: NOW,
        max_timestamp: NOW,
        created_ms: NOW,
        footer_len: 0,
        producer_batches: false,
    }
}

fn register(state: &mut MetadataState, node_id: u64) {
    let response = apply_command(
        state,
        &Command::RegisterBroker {
            node_id,
            host: "127.0.0.1".into(),
            port: 9092,
        },
    );
    assert!(matches!(response, CommandResponse::Incarnation(_)));
}

/// A cluster with brokers 1 and 2 and topic `t` (2 partitions) owned by broker 1.
fn cluster() -> (MetadataState, Uuid) {
    let mut state = MetadataState::default();
    register(&mut state, 1);
    register(&mut state, 2);
    let id = Uuid::from_u128(7);
    let created = apply_command(
        &mut state,
        &Command::CreateTopic {
            name: "t".into(),
            topic_id: id,
            partitions: 2,
            configs: BTreeMap::new(),
            owner: 1,
            now_ms: NOW,
        },
    );
    assert_eq!(created, CommandResponse::Ok);
    (state, id)
}

fn tp(topic_id: Uuid, partition: i32) -> TopicPartition {
    TopicPartition {
        topic_id,
        partition,
    }
}

fn add(state: &mut MetadataState, tp: TopicPartition, epoch: i32, s: SegmentRef) {
    let response = apply_command(
        state,
        &Command::AddSegment {
            tp,
            leader_epoch: epoch,
            segment: s,
        },
    );
    assert_eq!(response, CommandResponse::Ok);
}

fn acquire(
    state: &mut MetadataState,
    node_id: u64,
    partitions: Vec<TopicPartition>,
) -> Vec<(TopicPartition, i32)> {
    match apply_command(
        state,
        &Command::AcquirePartitions {
            node_id,
            partitions,
        },
    ) {
        CommandResponse::Acquired(acquired) => acquired,
        other => panic!("acquire answered {other:?}"),
    }
}

fn history(state: &MetadataState, tp: TopicPartition) -> Vec<(i32, i64)> {
    state
        .partition(tp)
        .unwrap()
        .epoch_starts
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect()
}

fn assert_stale(state: &mut MetadataState, command: Command) {
    let before = state.clone();
    let response = apply_command(state, &command);
    assert!(
        matches!(
            response,
            CommandResponse::Rejected(Rejection::StaleLeaderEpoch { .. })
        ),
        "{command:?} answered {response:?}"
    );
    assert_eq!(*state, before, "a rejected {command:?} changed the state");
}

#[test]
fn every_partition_write_under_an_older_epoch_is_rejected() {
    let (mut state, id) = cluster();
    let p0 = tp(id, 0);
    add(&mut state, p0, 0, seg("a", 0, 10));
    add(&mut state, p0, 0, seg("b", 10, 20));
    // Broker 2 takes the partition over: epoch 1. Everything broker 1 captured at 0 is fenced.
    assert_eq!(acquire(&mut state, 2, vec![p0]), vec![(p0, 1)]);
    assert_stale(
        &mut state,
        Command::AddSegment {
            tp: p0,
            leader_epoch: 0,
            segment: seg("c", 20, 30),
        },
    );
    let entries = apply_command(
        &mut state,
        &Command::AddSegments {
            entries: vec![
                SegmentEntry {
                    tp: p0,
                    leader_epoch: 0,
                    segment: seg("w", 20, 30),
                },
                SegmentEntry {
                    tp: tp(id, 1),
                    leader_epoch: 0,
                    segment: seg("w", 0, 5),
                },
            ],
            now_ms: NOW,
            marks: Vec::new(),
            seal: None,
        },
    );
    // Only the stale entry is refused; partition 1 is still broker 1's at epoch 0.
    assert_eq!(
        entries,
        CommandResponse::Entries(vec![
            Some(Rejection::StaleLeaderEpoch { got: 0, current: 1 }),
            None
        ])
    );
    assert_eq!(state.partition(p0).unwrap().segmented_end(), 20);
    assert_stale(
        &mut state,
        Command::ReplaceSegments {
            tp: p0,
            leader_epoch: 0,
            segment: seg("ab", 0, 20),
            now_ms: NOW,
        },
    );
    assert_stale(
        &mut state,
        Command::AdvanceLogStart {
            tp: p0,
            offset: 15,
            now_ms: NOW,
            leader_epoch: 0,
        },
    );
    assert_stale(
        &mut state,
        Command::SetProducerState {
            tp: p0,
            leader_epoch: 0,
            state: PartitionProducers {
                as_of_offset: 20,
                ..Default::default()
            },
            now_ms: NOW,
        },
    );
    let before = state.clone();
    let starts = apply_command(
        &mut state,
        &Command::SetEpochStarts {
            entries: vec![EpochStartEntry {
                tp: p0,
                leader_epoch: 0,
                start_offset: 25,
            }],
        },
    );
    assert_eq!(
        starts,
        CommandResponse::Entries(vec![Some(Rejection::StaleLeaderEpoch {
            got: 0,
            current: 1
        })])
    );
    assert_eq!(state, before);
    // The new owner's epoch passes the fence.
    let advanced = apply_command(
        &mut state,
        &Command::AdvanceLogStart {
            tp: p0,
            offset: 15,
            now_ms: NOW,
            leader_epoch: 1,
        },
    );
    assert_eq!(advanced, CommandResponse::LogStart(15));
    add(&mut state, p0, 1, seg("c", 20, 30));
}

#[test]
fn a_legacy_advance_log_start_without_an_epoch_decodes_and_applies_unchecked() {
    let (mut state, id) = cluster();
    let p0 = tp(id, 0);
    add(&mut state, p0, 0, seg("a", 0, 10));
    acquire(&mut state, 2, vec![p0]);
    let old = format!(
        r#"{{"AdvanceLogStart":{{"tp":{{"topic_id":"{id}","partition":0}},"offset":5,"now_ms":1}}}}"#
    );
    let command: Command = serde_json::from_str(&old).unwrap();
    assert_eq!(
        command,
        Command::AdvanceLogStart {
            tp: p0,
            offset: 5,
            now_ms: 1,
            leader_epoch: UNCHECKED_EPOCH,
        }
    );
    assert_eq!(
        apply_command(&mut state, &command),
        CommandResponse::LogStart(5)
    );
    // A partition without history (written before it existed) still decodes.
    let mut legacy = serde_json::to_value(state.partition(p0).unwrap()).unwrap();
    legacy.as_object_mut().unwrap().remove("epoch_starts");
    let decoded: crate::PartitionMeta = serde_json::from_value(legacy).unwrap();
    assert!(decoded.epoch_starts.is_empty());
}

#[test]
fn acquire_moves_ownership_bumps_epochs_and_answers_them() {
    let (mut state, id) = cluster();
    let (p0, p1) = (tp(id, 0), tp(id, 1));
    // Empty list = every partition not owned by the node: both, each bumped once.
    assert_eq!(acquire(&mut state, 2, vec![]), vec![(p0, 1), (p1, 1)]);
    for p in [p0, p1] {
        let pm = state.partition(p).unwrap();
        assert_eq!((pm.owner, pm.leader_epoch), (2, 1));
    }
    // Nothing left to take: nothing changes.
    let before = state.clone();
    assert_eq!(acquire(&mut state, 2, vec![]), vec![]);
    assert_eq!(state, before);
    // An explicit list bumps even a partition the node already owns (re-acquire), once per
    // partition however often it is named.
    assert_eq!(acquire(&mut state, 2, vec![p1, p1]), vec![(p1, 2)]);
    // Broker 1 takes back only partition 0.
    assert_eq!(acquire(&mut state, 1, vec![p0]), vec![(p0, 2)]);
    assert_eq!(state.partition(p0).unwrap().owner, 1);
    assert_eq!(state.partition(p1).unwrap().owner, 2);
    // A re-registration bumps only what the node owns now.
    register(&mut state, 1);
    assert_eq!(state.partition(p0).unwrap().leader_epoch, 3);
    assert_eq!(state.partition(p1).unwrap().leader_epoch, 2);

    // Rejections change nothing: unknown partition, unregistered broker, epoch overflow.
    let before = state.clone();
    for bad in [
        Command::AcquirePartitions {
            node_id: 1,
            partitions: vec![p0, tp(id, 5)],
        },
        Command::AcquirePartitions {
            node_id: 1,
            partitions: vec![tp(Uuid::from_u128(99), 0)],
        },
        Command::AcquirePartitions {
            node_id: 9,
            partitions: vec![],
        },
    ] {
        let response = apply_command(&mut state, &bad);
        assert!(matches!(response, CommandResponse::Rejected(_)), "{bad:?}");
        assert_eq!(state, before);
    }
    let topic = std::sync::Arc::make_mut(state.topics.get_mut(&id).unwrap());
    std::sync::Arc::make_mut(&mut topic.partitions[1]).leader_epoch = i32::MAX;
    let before = state.clone();
    let response = apply_command(
        &mut state,
        &Command::AcquirePartitions {
            node_id: 1,
            partitions: vec![],
        },
    );
    assert!(matches!(
        response,
        CommandResponse::Rejected(Rejection::Invalid(_))
    ));
    assert_eq!(state, before);
}

#[test]
fn each_epoch_bump_records_where_the_epoch_starts() {
    let (mut state, id) = cluster();
    let p0 = tp(id, 0);
    assert_eq!(history(&state, p0), vec![(0, 0)]);
    add(&mut state, p0, 0, seg("a", 0, 10));
    register(&mut state, 1); // restart: epoch 1 starts at the index end
    add(&mut state, p0, 1, seg("b", 10, 25));
    acquire(&mut state, 2, vec![p0]); // takeover: epoch 2
    assert_eq!(history(&state, p0), vec![(0, 0), (1, 10), (2, 25)]);
    // An epoch that saw no record is dropped at a later bump, except the newest before it (its
    // records may be in a WAL tail only recovery knows about).
    register(&mut state, 2);
    assert_eq!(history(&state, p0), vec![(0, 0), (1, 10), (2, 25), (3, 25)]);
    register(&mut state, 2);
    assert_eq!(history(&state, p0), vec![(0, 0), (1, 10), (3, 25), (4, 25)]);
    // Recovery of a local WAL tail moves the current epoch's start forward (never back).
    let set = |start| Command::SetEpochStarts {
        entries: vec![EpochStartEntry {
            tp: p0,
            leader_epoch: 4,
            start_offset: start,
        }],
    };
    assert_eq!(
        apply_command(&mut state, &set(31)),
        CommandResponse::Entries(vec![None])
    );
    assert_eq!(history(&state, p0), vec![(0, 0), (1, 10), (3, 25), (4, 31)]);
    let before = state.clone();
    assert!(matches!(
        apply_command(&mut state, &set(30)),
        CommandResponse::Entries(ref e) if matches!(e[..], [Some(Rejection::Invalid(_))])
    ));
    assert_eq!(state, before);
    // Entries wholly below the log start are dropped; the one in force there stays.
    let advance = apply_command(
        &mut state,
        &Command::AdvanceLogStart {
            tp: p0,
            offset: 12,
            now_ms: NOW,
            leader_epoch: 4,
        },
    );
    assert_eq!(advance, CommandResponse::LogStart(12));
    assert_eq!(history(&state, p0), vec![(1, 10), (3, 25), (4, 31)]);
    // New partitions start with epoch 0 at offset 0.
    apply_command(
        &mut state,
        &Command::CreatePartitions {
            topic_id: id,
            total: 3,
            owner: 2,
        },
    );
    assert_eq!(history(&state, tp(id, 2)), vec![(0, 0)]);
}

#[test]
fn end_offset_for_epoch_follows_kafkas_rules() {
    let (mut state, id) = cluster();
    let p0 = tp(id, 0);
    let topic = std::sync::Arc::make_mut(state.topics.get_mut(&id).unwrap());
    let pm = std::sync::Arc::make_mut(&mut topic.partitions[0]);
    pm.leader_epoch = 5;
    pm.epoch_starts = [(1, 10), (3, 25), (5, 40)]
        .into_iter()
        .map(|(epoch, start_offset)| EpochStart {
            epoch,
            start_offset,
        })
        .collect();
    let pm = state.partition(p0).unwrap();
    let end = |epoch| pm.end_offset_for_epoch(epoch, 47);
    assert_eq!(end(5), Some((5, 47))); // current epoch: the log end
    assert_eq!(end(3), Some((3, 40))); // ends where the next starts
    assert_eq!(end(4), Some((3, 40))); // unknown epoch between: the floor epoch's answer
    assert_eq!(end(2), Some((1, 25)));
    assert_eq!(end(0), Some((0, 10))); // older than the history: the requested one, first start
    assert_eq!(end(6), None); // a future epoch is undefined
    assert_eq!(end(-1), None);
    // Epochs that saw no record (the next starts at the same offset) do not count.
    let mut gaps = pm.clone();
    gaps.leader_epoch = 3;
    gaps.epoch_starts = [(0, 0), (1, 10), (2, 10), (3, 20)]
        .into_iter()
        .map(|(epoch, start_offset)| EpochStart {
            epoch,
            start_offset,
        })
        .collect();
    assert_eq!(gaps.end_offset_for_epoch(1, 30), Some((0, 10)));
    assert_eq!(gaps.end_offset_for_epoch(2, 30), Some((2, 20)));
    // A legacy partition without history: every epoch up to the current ends at the log end.
    let mut legacy = pm.clone();
    legacy.epoch_starts.clear();
    assert_eq!(legacy.end_offset_for_epoch(2, 47), Some((2, 47)));
    assert_eq!(legacy.end_offset_for_epoch(6, 47), None);
}
