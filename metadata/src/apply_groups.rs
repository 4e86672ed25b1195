//! State transitions for committed offsets and producer snapshots (see [`crate::groups`]). Same
//! rules as `apply`: deterministic, no clock, validate before mutating, never panic.

use std::collections::BTreeSet;
use std::sync::Arc;

use uuid::Uuid;

use crate::apply::{invalid, partition_mut, Outcome};
use crate::{
    CommandResponse, MetadataState, OffsetCommitEntry, PartitionProducers, Rejection,
    TopicPartition,
};

pub(crate) fn commit_offsets(state: &mut MetadataState, commits: &[OffsetCommitEntry]) -> Outcome {
    let mut stored = 0u64;
    for entry in commits {
        // Skipped rather than rejected: one entry of a group-committed batch must not fail the
        // others, and a topic deleted after the coordinator validated the commit is not an error.
        if entry.group.is_empty()
            || entry.committed.offset < 0
            || state.partition(entry.tp).is_none()
        {
            continue;
        }
        let group = state.group_offsets.entry(entry.group.clone()).or_default();
        Arc::make_mut(group)
            .topics
            .entry(entry.tp.topic_id)
            .or_default()
            .insert(entry.tp.partition, entry.committed.clone());
        stored += 1;
    }
    Ok(CommandResponse::Count(stored))
}

pub(crate) fn delete_group_offsets(
    state: &mut MetadataState,
    group: &str,
    partitions: &[TopicPartition],
) -> Outcome {
    let Some(offsets) = state.group_offsets.get_mut(group) else {
        return Ok(CommandResponse::Count(0));
    };
    let offsets = Arc::make_mut(offsets);
    let mut removed = 0u64;
    for tp in partitions {
        if let Some(topic) = offsets.topics.get_mut(&tp.topic_id) {
            if topic.remove(&tp.partition).is_some() {
                removed += 1;
            }
            if topic.is_empty() {
                offsets.topics.remove(&tp.topic_id);
            }
        }
    }
    if offsets.is_empty() {
        state.group_offsets.remove(group);
    }
    Ok(CommandResponse::Count(removed))
}

pub(crate) fn delete_groups(state: &mut MetadataState, groups: &[String]) -> Outcome {
    let names: BTreeSet<&String> = groups.iter().collect();
    let mut removed = 0u64;
    for name in names {
        if state.group_offsets.remove(name).is_some() {
            removed += 1;
        }
    }
    Ok(CommandResponse::Count(removed))
}

pub(crate) fn set_producer_state(
    state: &mut MetadataState,
    tp: TopicPartition,
    leader_epoch: i32,
    producers: &PartitionProducers,
    now_ms: i64,
) -> Outcome {
    let partition = partition_mut(state, tp)?;
    if leader_epoch != partition.leader_epoch {
        return Err(Rejection::StaleLeaderEpoch {
            got: leader_epoch,
            current: partition.leader_epoch,
        });
    }
    if producers.as_of_offset < 0 {
        return Err(invalid("producer snapshot offset is negative"));
    }
    if let Some(spilled) = &producers.spilled {
        if spilled.key.is_empty() || !producers.producers.is_empty() {
            return Err(invalid(
                "a spilled producer snapshot has a key and no inline producers",
            ));
        }
    }
    let mut replaced = None;
    if let Some(current) = state.producer_state(tp) {
        if producers.as_of_offset < current.as_of_offset {
            return Err(invalid(format!(
                "producer snapshot at {} is older than the one at {}",
                producers.as_of_offset, current.as_of_offset
            )));
        }
        replaced = current.spilled.as_ref().map(|s| s.key.clone());
    }
    state
        .producer_states
        .entry(tp.topic_id)
        .or_default()
        .insert(tp.partition, Arc::new(producers.clone()));
    if let Some(old) = replaced {
        if producers.spilled.as_ref().map(|s| &s.key) != Some(&old) {
            crate::apply::release_object(state, old, now_ms);
        }
    }
    Ok(CommandResponse::Ok)
}

/// Drops everything a deleted topic left in groups and producer snapshots (spilled snapshot
/// objects are queued for GC).
pub(crate) fn forget_topic(state: &mut MetadataState, topic_id: Uuid, now_ms: i64) {
    if let Some(snapshots) = state.producer_states.remove(&topic_id) {
        for snapshot in snapshots.values() {
            if let Some(spilled) = &snapshot.spilled {
                crate::apply::release_object(state, spilled.key.clone(), now_ms);
            }
        }
    }
    let mut emptied = Vec::new();
    for (name, offsets) in state.group_offsets.iter_mut() {
        if offsets.topics.contains_key(&topic_id) {
            let offsets = Arc::make_mut(offsets);
            offsets.topics.remove(&topic_id);
            if offsets.is_empty() {
                emptied.push(name.clone());
            }
        }
    }
    for name in emptied {
        state.group_offsets.remove(&name);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::apply::apply_command;
    use crate::{Command, CommittedOffset, ProducerBatchRecord, ProducerSnapshot};

    fn with_topic(partitions: u32) -> (MetadataState, Uuid) {
        let mut state = MetadataState::default();
        let id = Uuid::from_u128(7);
        let response = apply_command(
            &mut state,
            &Command::CreateTopic {
                name: "t".into(),
                topic_id: id,
                partitions,
                configs: BTreeMap::new(),
                owner: 1,
                now_ms: 1,
            },
        );
        assert_eq!(response, CommandResponse::Ok);
        (state, id)
    }

    fn entry(group: &str, topic_id: Uuid, partition: i32, offset: i64) -> OffsetCommitEntry {
        OffsetCommitEntry {
            group: group.into(),
            tp: TopicPartition {
                topic_id,
                partition,
            },
            committed: CommittedOffset {
                offset,
                leader_epoch: 3,
                metadata: format!("m{offset}"),
                commit_ms: 1000 + offset,
            },
        }
    }

    fn tp(topic_id: Uuid, partition: i32) -> TopicPartition {
        TopicPartition {
            topic_id,
            partition,
        }
    }

    #[test]
    fn commits_store_overwrite_and_skip_invalid_entries() {
        let (mut state, id) = with_topic(2);
        let commits = vec![
            entry("g", id, 0, 5),
            entry("g", id, 1, 7),
            entry("h", id, 0, 1),
            entry("g", id, 9, 1),                  // unknown partition
            entry("", id, 0, 1),                   // empty group
            entry("g", Uuid::from_u128(99), 0, 1), // unknown topic
            entry("g", id, 0, -3),                 // negative offset
        ];
        let response = apply_command(&mut state, &Command::CommitOffsets { commits });
        assert_eq!(response, CommandResponse::Count(3));
        assert_eq!(state.committed_offset("g", tp(id, 0)).unwrap().offset, 5);
        assert_eq!(
            state.committed_offset("g", tp(id, 0)).unwrap().metadata,
            "m5"
        );
        assert_eq!(state.committed_offset("h", tp(id, 0)).unwrap().offset, 1);
        assert!(state.committed_offset("g", tp(id, 9)).is_none());
        // A later commit overwrites, and an unrelated group's Arc is shared, not copied.
        let before = state.clone();
        apply_command(
            &mut state,
            &Command::CommitOffsets {
                commits: vec![entry("g", id, 0, 11)],
            },
        );
        assert_eq!(state.committed_offset("g", tp(id, 0)).unwrap().offset, 11);
        assert!(Arc::ptr_eq(
            &before.group_offsets["h"],
            &state.group_offsets["h"]
        ));
        assert_eq!(state.group_offsets["g"].newest_commit_ms(), Some(1011));
        assert_eq!(state.group_offsets["g"].len(), 2);
    }

    #[test]
    fn delete_offsets_groups_and_topic() {
        let (mut state, id) = with_topic(2);
        let commits = vec![
            entry("g", id, 0, 5),
            entry("g", id, 1, 7),
            entry("h", id, 0, 1),
        ];
        apply_command(&mut state, &Command::CommitOffsets { commits });
        let response = apply_command(
            &mut state,
            &Command::DeleteGroupOffsets {
                group: "g".into(),
                partitions: vec![tp(id, 0), tp(id, 5)],
            },
        );
        assert_eq!(response, CommandResponse::Count(1));
        assert!(state.committed_offset("g", tp(id, 0)).is_none());
        assert!(state.committed_offset("g", tp(id, 1)).is_some());
        let response = apply_command(
            &mut state,
            &Command::DeleteGroups {
                groups: vec!["g".into(), "nope".into(), "g".into()],
            },
        );
        assert_eq!(response, CommandResponse::Count(1));
        assert!(!state.group_offsets.contains_key("g"));
        // Deleting the topic removes the remaining group's offsets, and the then-empty group.
        apply_command(
            &mut state,
            &Command::DeleteTopic {
                topic_id: id,
                now_ms: 5,
            },
        );
        assert!(state.group_offsets.is_empty());
    }

    #[test]
    fn spilled_producer_snapshots_are_queued_for_gc_when_replaced_or_their_topic_deleted() {
        let (mut state, id) = with_topic(1);
        let spilled = |as_of: i64, key: &str| PartitionProducers {
            as_of_offset: as_of,
            producers: Vec::new(),
            spilled: Some(crate::SpilledProducers {
                key: key.into(),
                producers: 5000,
            }),
        };
        let set = |state: &mut MetadataState, producers: PartitionProducers, now_ms| {
            apply_command(
                state,
                &Command::SetProducerState {
                    tp: tp(id, 0),
                    leader_epoch: 0,
                    state: producers,
                    now_ms,
                },
            )
        };
        assert_eq!(
            set(&mut state, spilled(10, "snap-a"), 100),
            CommandResponse::Ok
        );
        assert!(state.deleted_objects.is_empty());
        // Re-proposing the same object (a retried proposal) does not delete it.
        assert_eq!(
            set(&mut state, spilled(10, "snap-a"), 150),
            CommandResponse::Ok
        );
        assert!(state.deleted_objects.is_empty());
        // A newer snapshot replaces it: the old object is queued, the new one is live.
        assert_eq!(
            set(&mut state, spilled(20, "snap-b"), 200),
            CommandResponse::Ok
        );
        assert_eq!(*state.deleted_objects, vec![("snap-a".into(), 200)]);
        // Back to inline: the last spilled object is queued too.
        let inline = PartitionProducers {
            as_of_offset: 30,
            ..Default::default()
        };
        assert_eq!(set(&mut state, inline, 300), CommandResponse::Ok);
        assert_eq!(state.deleted_objects.len(), 2);
        assert_eq!(
            set(&mut state, spilled(40, "snap-c"), 400),
            CommandResponse::Ok
        );
        // A spilled snapshot must name its object and carry nothing inline.
        let mut bad = spilled(50, "");
        assert!(matches!(
            set(&mut state, bad.clone(), 500),
            CommandResponse::Rejected(_)
        ));
        bad.spilled = Some(crate::SpilledProducers {
            key: "snap-d".into(),
            producers: 1,
        });
        bad.producers = snapshot_entries();
        assert!(matches!(
            set(&mut state, bad, 500),
            CommandResponse::Rejected(_)
        ));
        // Deleting the topic queues the live spilled object.
        apply_command(
            &mut state,
            &Command::DeleteTopic {
                topic_id: id,
                now_ms: 600,
            },
        );
        assert!(state
            .deleted_objects
            .iter()
            .any(|(key, at)| key == "snap-c" && *at == 600));
    }

    fn snapshot_entries() -> Vec<ProducerSnapshot> {
        vec![ProducerSnapshot {
            producer_id: 1,
            epoch: 0,
            batches: Vec::new(),
            last_timestamp: 0,
        }]
    }

    #[test]
    fn producer_state_is_fenced_by_epoch_and_never_goes_back() {
        let (mut state, id) = with_topic(1);
        let snapshot = |as_of| PartitionProducers {
            as_of_offset: as_of,
            producers: vec![ProducerSnapshot {
                producer_id: 4,
                epoch: 0,
                batches: vec![ProducerBatchRecord {
                    first_seq: 0,
                    last_seq: 9,
                    base_offset: 0,
                    last_offset: 9,
                }],
                last_timestamp: 1,
            }],
            spilled: None,
        };
        let set = |state: &mut MetadataState, epoch, as_of| {
            apply_command(
                state,
                &Command::SetProducerState {
                    tp: tp(id, 0),
                    leader_epoch: epoch,
                    state: snapshot(as_of),
                    now_ms: 1,
                },
            )
        };
        assert_eq!(set(&mut state, 0, 10), CommandResponse::Ok);
        assert_eq!(state.producer_state(tp(id, 0)), Some(&snapshot(10)));
        assert!(matches!(
            set(&mut state, 1, 20),
            CommandResponse::Rejected(Rejection::StaleLeaderEpoch { .. })
        ));
        assert!(matches!(
            set(&mut state, 0, 5),
            CommandResponse::Rejected(Rejection::Invalid(_))
        ));
        assert_eq!(state.producer_state(tp(id, 0)).unwrap().as_of_offset, 10);
        apply_command(
            &mut state,
            &Command::DeleteTopic {
                topic_id: id,
                now_ms: 5,
            },
        );
        assert!(state.producer_states.is_empty());
    }

    #[test]
    fn state_with_groups_round_trips_through_json() {
        let (mut state, id) = with_topic(1);
        apply_command(
            &mut state,
            &Command::CommitOffsets {
                commits: vec![entry("g", id, 0, 5)],
            },
        );
        let json = serde_json::to_string(&state).unwrap();
        let back: MetadataState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);
        // A snapshot written before groups existed still loads.
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
        let object = old.as_object_mut().unwrap();
        object.remove("group_offsets");
        object.remove("producer_states");
        let back: MetadataState = serde_json::from_value(old).unwrap();
        assert!(back.group_offsets.is_empty());
    }
}
