//! The pure, deterministic transition function of the metadata state machine: `(state, command) →
//! (state', response)`.
//!
//! No Raft, no I/O, no clock: time arrives inside the command (`now_ms`), so every replica (and every
//! replay after a restart) computes exactly the same state from the same log. Every command is
//! validated *before* anything is mutated, so a rejected command leaves the state untouched; nothing
//! here may panic, whatever the command carries (it comes from the replicated log).

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::{
    Command, CommandResponse, MetadataState, NodeId, PartitionMeta, Rejection, SegmentRef,
    TopicMeta, TopicPartition, MAX_PARTITIONS_PER_TOPIC,
};

/// Applies one command to `state` and returns the answer for the proposer.
pub(crate) fn apply_command(state: &mut MetadataState, command: &Command) -> CommandResponse {
    let result = match command {
        Command::InitCluster { cluster_id } => init_cluster(state, cluster_id),
        Command::RegisterBroker {
            node_id,
            host,
            port,
        } => register_broker(state, *node_id, host, *port),
        Command::CreateTopic {
            name,
            topic_id,
            partitions,
            configs,
            owner,
            now_ms,
        } => create_topic(
            state,
            name,
            *topic_id,
            *partitions,
            configs,
            *owner,
            *now_ms,
        ),
        Command::DeleteTopic { topic_id, now_ms } => delete_topic(state, *topic_id, *now_ms),
        Command::CreatePartitions {
            topic_id,
            total,
            owner,
        } => create_partitions(state, *topic_id, *total, *owner),
        Command::SetTopicConfigs { topic_id, configs } => {
            set_topic_configs(state, *topic_id, configs)
        }
        Command::AddSegment {
            tp,
            leader_epoch,
            segment,
        } => add_segment(state, *tp, *leader_epoch, segment),
        Command::AdvanceLogStart { tp, offset, now_ms } => {
            advance_log_start(state, *tp, *offset, *now_ms)
        }
        Command::ForgetDeletedObjects { keys } => forget_deleted_objects(state, keys),
        // TODO(issue 3, metadata helper): implemented on the metadata branch.
        Command::AddSegments { .. } | Command::ReplaceSegments { .. } => {
            Err(invalid("not implemented yet"))
        }
        Command::AllocateProducerIds { count } => allocate_producer_ids(state, *count),
        Command::CommitOffsets { commits } => crate::apply_groups::commit_offsets(state, commits),
        Command::DeleteGroupOffsets { group, partitions } => {
            crate::apply_groups::delete_group_offsets(state, group, partitions)
        }
        Command::DeleteGroups { groups } => crate::apply_groups::delete_groups(state, groups),
        Command::SetProducerState {
            tp,
            leader_epoch,
            state: producers,
        } => crate::apply_groups::set_producer_state(state, *tp, *leader_epoch, producers),
    };
    result.unwrap_or_else(CommandResponse::Rejected)
}

pub(crate) type Outcome = Result<CommandResponse, Rejection>;

pub(crate) fn invalid(reason: impl Into<String>) -> Rejection {
    Rejection::Invalid(reason.into())
}

fn init_cluster(state: &mut MetadataState, cluster_id: &str) -> Outcome {
    if state.cluster_id.is_empty() {
        if cluster_id.is_empty() {
            return Err(invalid("cluster id must not be empty"));
        }
        state.cluster_id = cluster_id.to_owned();
    }
    Ok(CommandResponse::ClusterId(state.cluster_id.clone()))
}

fn register_broker(state: &mut MetadataState, node_id: NodeId, host: &str, port: u16) -> Outcome {
    if host.is_empty() {
        return Err(invalid("broker host must not be empty"));
    }
    let incarnation = match state.brokers.get(&node_id) {
        Some(previous) => previous
            .incarnation
            .checked_add(1)
            .ok_or_else(|| invalid("broker incarnation overflow"))?,
        None => 1,
    };
    // A re-registration means the broker restarted: every partition it owns gets a new leader epoch
    // so that writes of its previous incarnation are fenced. Check for overflow before mutating.
    let owned_epochs_overflow = state
        .topics
        .values()
        .flat_map(|topic| topic.partitions.iter())
        .any(|partition| partition.owner == node_id && partition.leader_epoch == i32::MAX);
    if owned_epochs_overflow {
        return Err(invalid("leader epoch overflow"));
    }
    for partition in state
        .topics
        .values_mut()
        .flat_map(|topic| topic.partitions.iter_mut())
    {
        if partition.owner == node_id {
            partition.leader_epoch += 1;
        }
    }
    state.brokers.insert(
        node_id,
        crate::BrokerMeta {
            node_id,
            host: host.to_owned(),
            port,
            incarnation,
        },
    );
    Ok(CommandResponse::Incarnation(incarnation))
}

fn validate_partition_count(total: u32) -> Result<usize, Rejection> {
    if total == 0 {
        return Err(invalid("a topic needs at least one partition"));
    }
    if total > MAX_PARTITIONS_PER_TOPIC {
        return Err(invalid(format!(
            "{total} partitions exceed the limit of {MAX_PARTITIONS_PER_TOPIC} per topic"
        )));
    }
    usize::try_from(total).map_err(|_| invalid("partition count does not fit in memory"))
}

fn new_partition(owner: NodeId) -> PartitionMeta {
    PartitionMeta {
        owner,
        leader_epoch: 0,
        log_start_offset: 0,
        segments: Vec::new(),
    }
}

fn create_topic(
    state: &mut MetadataState,
    name: &str,
    topic_id: Uuid,
    partitions: u32,
    configs: &BTreeMap<String, String>,
    owner: NodeId,
    now_ms: i64,
) -> Outcome {
    if state.topic_ids.contains_key(name) {
        return Err(Rejection::TopicExists);
    }
    if name.is_empty() {
        return Err(invalid("topic name must not be empty"));
    }
    if topic_id.is_nil() {
        return Err(invalid("topic id must not be nil"));
    }
    if state.topics.contains_key(&topic_id) {
        return Err(invalid(format!("topic id {topic_id} is already in use")));
    }
    let count = validate_partition_count(partitions)?;
    let topic = TopicMeta {
        id: topic_id,
        name: name.to_owned(),
        configs: configs.clone(),
        partitions: (0..count).map(|_| new_partition(owner)).collect(),
        created_ms: now_ms,
    };
    state.topic_ids.insert(name.to_owned(), topic_id);
    state.topics.insert(topic_id, topic);
    Ok(CommandResponse::Ok)
}

fn delete_topic(state: &mut MetadataState, topic_id: Uuid, now_ms: i64) -> Outcome {
    let topic = state
        .topics
        .remove(&topic_id)
        .ok_or(Rejection::UnknownTopicOrPartition)?;
    state.topic_ids.remove(&topic.name);
    crate::apply_groups::forget_topic(state, topic_id);
    // The topic's objects become garbage; the GC deletes them after its grace period.
    for partition in topic.partitions {
        for segment in partition.segments {
            state.deleted_objects.push((segment.key, now_ms));
        }
    }
    Ok(CommandResponse::Ok)
}

fn create_partitions(
    state: &mut MetadataState,
    topic_id: Uuid,
    total: u32,
    owner: NodeId,
) -> Outcome {
    let topic = state
        .topics
        .get_mut(&topic_id)
        .ok_or(Rejection::UnknownTopicOrPartition)?;
    let count = validate_partition_count(total)?;
    let current = topic.partitions.len();
    if count <= current {
        return Err(invalid(format!(
            "topic already has {current} partitions; the count can only grow (asked for {total})"
        )));
    }
    topic.partitions.resize_with(count, || new_partition(owner));
    Ok(CommandResponse::Ok)
}

fn set_topic_configs(
    state: &mut MetadataState,
    topic_id: Uuid,
    configs: &BTreeMap<String, String>,
) -> Outcome {
    let topic = state
        .topics
        .get_mut(&topic_id)
        .ok_or(Rejection::UnknownTopicOrPartition)?;
    topic.configs = configs.clone();
    Ok(CommandResponse::Ok)
}

pub(crate) fn partition_mut(
    state: &mut MetadataState,
    tp: TopicPartition,
) -> Result<&mut PartitionMeta, Rejection> {
    let index = usize::try_from(tp.partition).map_err(|_| Rejection::UnknownTopicOrPartition)?;
    state
        .topics
        .get_mut(&tp.topic_id)
        .and_then(|topic| topic.partitions.get_mut(index))
        .ok_or(Rejection::UnknownTopicOrPartition)
}

fn add_segment(
    state: &mut MetadataState,
    tp: TopicPartition,
    leader_epoch: i32,
    segment: &SegmentRef,
) -> Outcome {
    let partition = partition_mut(state, tp)?;
    if leader_epoch < partition.leader_epoch {
        return Err(Rejection::StaleLeaderEpoch {
            got: leader_epoch,
            current: partition.leader_epoch,
        });
    }
    if leader_epoch > partition.leader_epoch {
        // Epochs are only ever handed out by metadata, so a writer ahead of it is a bug, not a
        // newer owner; refuse rather than let it through the fence.
        return Err(invalid(format!(
            "leader epoch {leader_epoch} is ahead of the current epoch {}",
            partition.leader_epoch
        )));
    }
    if segment.key.is_empty() {
        return Err(invalid("segment key must not be empty"));
    }
    if segment.base_offset < 0 || segment.end_offset <= segment.base_offset {
        return Err(invalid(format!(
            "segment offset range [{}, {}) is empty or negative",
            segment.base_offset, segment.end_offset
        )));
    }
    match partition.segments.last() {
        Some(last) => {
            if segment.base_offset != last.end_offset {
                return Err(Rejection::NonContiguousSegment(format!(
                    "segment starts at {} but the index ends at {}",
                    segment.base_offset, last.end_offset
                )));
            }
        }
        None => {
            // With no segments the index continues at the log start. The log start may lie inside
            // a batch (DeleteRecords), so the first segment may begin before it, but it must cover
            // it: no gap above the log start, and not wholly below it (already deleted data).
            let log_start = partition.log_start_offset;
            if segment.base_offset > log_start {
                return Err(Rejection::NonContiguousSegment(format!(
                    "segment starts at {} but the log starts at {log_start}",
                    segment.base_offset
                )));
            }
            if segment.end_offset <= log_start {
                return Err(Rejection::NonContiguousSegment(format!(
                    "segment [{}, {}) lies wholly below the log start {log_start}",
                    segment.base_offset, segment.end_offset
                )));
            }
        }
    }
    if partition
        .segments
        .iter()
        .any(|existing| existing.key == segment.key)
    {
        return Err(invalid(format!(
            "segment key {} is already indexed",
            segment.key
        )));
    }
    partition.segments.push(segment.clone());
    Ok(CommandResponse::Ok)
}

fn advance_log_start(
    state: &mut MetadataState,
    tp: TopicPartition,
    offset: i64,
    now_ms: i64,
) -> Outcome {
    let partition = partition_mut(state, tp)?;
    if offset < 0 {
        return Err(invalid(format!("log start offset {offset} is negative")));
    }
    if offset <= partition.log_start_offset {
        // Never backwards; a retried or late request just learns where the log starts now.
        return Ok(CommandResponse::LogStart(partition.log_start_offset));
    }
    partition.log_start_offset = offset;
    // Segments are sorted and contiguous, so the wholly-covered ones form a prefix.
    let covered = partition
        .segments
        .iter()
        .take_while(|s| s.end_offset <= offset)
        .count();
    let removed: Vec<SegmentRef> = partition.segments.drain(..covered).collect();
    state
        .deleted_objects
        .extend(removed.into_iter().map(|segment| (segment.key, now_ms)));
    Ok(CommandResponse::LogStart(offset))
}

fn forget_deleted_objects(state: &mut MetadataState, keys: &[String]) -> Outcome {
    let forget: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
    state
        .deleted_objects
        .retain(|(key, _)| !forget.contains(key.as_str()));
    Ok(CommandResponse::Ok)
}

fn allocate_producer_ids(state: &mut MetadataState, count: i64) -> Outcome {
    if count <= 0 {
        return Err(invalid(format!(
            "producer id count must be positive, got {count}"
        )));
    }
    let start = state.next_producer_id;
    let next = start
        .checked_add(count)
        .ok_or_else(|| invalid("producer id space exhausted"))?;
    state.next_producer_id = next;
    Ok(CommandResponse::ProducerIdStart(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn topic_id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn create(state: &mut MetadataState, name: &str, id: Uuid, partitions: u32) -> CommandResponse {
        apply_command(
            state,
            &Command::CreateTopic {
                name: name.to_owned(),
                topic_id: id,
                partitions,
                configs: BTreeMap::new(),
                owner: 1,
                now_ms: NOW,
            },
        )
    }

    fn segment(key: &str, base: i64, end: i64) -> SegmentRef {
        SegmentRef {
            key: key.to_owned(),
            base_offset: base,
            end_offset: end,
            data_start: 0,
            data_len: 100,
            min_timestamp: NOW,
            max_timestamp: NOW + 10,
            created_ms: NOW,
            footer_len: 0,
        }
    }

    fn add(
        state: &mut MetadataState,
        tp: TopicPartition,
        epoch: i32,
        seg: SegmentRef,
    ) -> CommandResponse {
        apply_command(
            state,
            &Command::AddSegment {
                tp,
                leader_epoch: epoch,
                segment: seg,
            },
        )
    }

    fn tp(id: Uuid, partition: i32) -> TopicPartition {
        TopicPartition {
            topic_id: id,
            partition,
        }
    }

    fn rejected_invalid(response: &CommandResponse) -> bool {
        matches!(response, CommandResponse::Rejected(Rejection::Invalid(_)))
    }

    /// Asserts that a rejected command left the state exactly as it was.
    fn assert_rejected_unchanged(state: &mut MetadataState, command: Command) -> Rejection {
        let before = state.clone();
        let response = apply_command(state, &command);
        assert_eq!(
            *state, before,
            "a rejected command must not change the state"
        );
        match response {
            CommandResponse::Rejected(rejection) => rejection,
            other => panic!("expected a rejection for {command:?}, got {other:?}"),
        }
    }

    #[test]
    fn init_cluster_sets_once_and_answers_the_id_in_force() {
        let mut state = MetadataState::default();
        let first = apply_command(
            &mut state,
            &Command::InitCluster {
                cluster_id: "a".into(),
            },
        );
        assert_eq!(first, CommandResponse::ClusterId("a".into()));
        let second = apply_command(
            &mut state,
            &Command::InitCluster {
                cluster_id: "b".into(),
            },
        );
        assert_eq!(second, CommandResponse::ClusterId("a".into()));
        assert_eq!(state.cluster_id, "a");
    }

    #[test]
    fn init_cluster_rejects_empty_id() {
        let mut state = MetadataState::default();
        let rejection = assert_rejected_unchanged(
            &mut state,
            Command::InitCluster {
                cluster_id: String::new(),
            },
        );
        assert!(matches!(rejection, Rejection::Invalid(_)));
    }

    #[test]
    fn register_broker_bumps_incarnation_and_owned_epochs() {
        let mut state = MetadataState::default();
        let register = Command::RegisterBroker {
            node_id: 1,
            host: "127.0.0.1".into(),
            port: 9092,
        };
        assert_eq!(
            apply_command(&mut state, &register),
            CommandResponse::Incarnation(1)
        );
        let id = topic_id(1);
        assert_eq!(create(&mut state, "t", id, 2), CommandResponse::Ok);
        // A partition owned by another broker must keep its epoch.
        apply_command(
            &mut state,
            &Command::CreatePartitions {
                topic_id: id,
                total: 3,
                owner: 2,
            },
        );
        let again = Command::RegisterBroker {
            node_id: 1,
            host: "10.0.0.1".into(),
            port: 9093,
        };
        assert_eq!(
            apply_command(&mut state, &again),
            CommandResponse::Incarnation(2)
        );
        let broker = &state.brokers[&1];
        assert_eq!(
            (broker.host.as_str(), broker.port, broker.incarnation),
            ("10.0.0.1", 9093, 2)
        );
        let epochs: Vec<i32> = state.topics[&id]
            .partitions
            .iter()
            .map(|p| p.leader_epoch)
            .collect();
        assert_eq!(epochs, vec![1, 1, 0]);
    }

    #[test]
    fn register_broker_rejects_empty_host_and_epoch_overflow() {
        let mut state = MetadataState::default();
        let rejection = assert_rejected_unchanged(
            &mut state,
            Command::RegisterBroker {
                node_id: 1,
                host: String::new(),
                port: 1,
            },
        );
        assert!(matches!(rejection, Rejection::Invalid(_)));

        let id = topic_id(1);
        create(&mut state, "t", id, 1);
        if let Some(topic) = state.topics.get_mut(&id) {
            topic.partitions[0].leader_epoch = i32::MAX;
        }
        let rejection = assert_rejected_unchanged(
            &mut state,
            Command::RegisterBroker {
                node_id: 1,
                host: "h".into(),
                port: 1,
            },
        );
        assert!(matches!(rejection, Rejection::Invalid(_)));
    }

    #[test]
    fn create_topic_builds_partitions_and_name_index() {
        let mut state = MetadataState::default();
        let id = topic_id(7);
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_owned(), "1000".to_owned());
        let response = apply_command(
            &mut state,
            &Command::CreateTopic {
                name: "orders".into(),
                topic_id: id,
                partitions: 3,
                configs: configs.clone(),
                owner: 4,
                now_ms: NOW,
            },
        );
        assert_eq!(response, CommandResponse::Ok);
        let topic = state.topic_by_name("orders").expect("topic by name");
        assert_eq!(
            (topic.id, topic.created_ms, &topic.configs),
            (id, NOW, &configs)
        );
        assert_eq!(topic.partitions.len(), 3);
        assert!(topic.partitions.iter().all(|p| *p == new_partition(4)));
        assert_eq!(state.partition(tp(id, 2)).map(|p| p.owner), Some(4));
        assert!(state.partition(tp(id, 3)).is_none());
        assert!(state.partition(tp(id, -1)).is_none());
    }

    #[test]
    fn create_topic_rejections() {
        let mut state = MetadataState::default();
        let id = topic_id(1);
        create(&mut state, "t", id, 1);
        let command = |name: &str, id: Uuid, partitions: u32| Command::CreateTopic {
            name: name.into(),
            topic_id: id,
            partitions,
            configs: BTreeMap::new(),
            owner: 1,
            now_ms: NOW,
        };
        assert_eq!(
            assert_rejected_unchanged(&mut state, command("t", topic_id(2), 1)),
            Rejection::TopicExists
        );
        for bad in [
            command("u", id, 1),                                     // id in use
            command("", topic_id(3), 1),                             // empty name
            command("u", Uuid::nil(), 1),                            // nil id
            command("u", topic_id(3), 0),                            // no partitions
            command("u", topic_id(3), MAX_PARTITIONS_PER_TOPIC + 1), // too many
            command("u", topic_id(3), u32::MAX),
        ] {
            let rejection = assert_rejected_unchanged(&mut state, bad);
            assert!(matches!(rejection, Rejection::Invalid(_)), "{rejection:?}");
        }
    }

    #[test]
    fn delete_topic_queues_its_segments_for_gc() {
        let mut state = MetadataState::default();
        let id = topic_id(1);
        create(&mut state, "t", id, 2);
        assert_eq!(
            add(&mut state, tp(id, 0), 0, segment("a", 0, 10)),
            CommandResponse::Ok
        );
        assert_eq!(
            add(&mut state, tp(id, 1), 0, segment("b", 0, 5)),
            CommandResponse::Ok
        );
        let response = apply_command(
            &mut state,
            &Command::DeleteTopic {
                topic_id: id,
                now_ms: NOW + 1,
            },
        );
        assert_eq!(response, CommandResponse::Ok);
        assert!(state.topics.is_empty() && state.topic_ids.is_empty());
        assert_eq!(
            state.deleted_objects,
            vec![("a".into(), NOW + 1), ("b".into(), NOW + 1)]
        );
        // The name can be reused by a new topic.
        assert_eq!(create(&mut state, "t", topic_id(2), 1), CommandResponse::Ok);
    }

    #[test]
    fn delete_unknown_topic_is_rejected() {
        let mut state = MetadataState::default();
        let rejection = assert_rejected_unchanged(
            &mut state,
            Command::DeleteTopic {
                topic_id: topic_id(9),
                now_ms: NOW,
            },
        );
        assert_eq!(rejection, Rejection::UnknownTopicOrPartition);
    }

    #[test]
    fn create_partitions_grows_only() {
        let mut state = MetadataState::default();
        let id = topic_id(1);
        create(&mut state, "t", id, 2);
        let grow = Command::CreatePartitions {
            topic_id: id,
            total: 4,
            owner: 3,
        };
        assert_eq!(apply_command(&mut state, &grow), CommandResponse::Ok);
        let owners: Vec<NodeId> = state.topics[&id]
            .partitions
            .iter()
            .map(|p| p.owner)
            .collect();
        assert_eq!(owners, vec![1, 1, 3, 3]);
        for total in [4, 3, 0, MAX_PARTITIONS_PER_TOPIC + 1] {
            let rejection = assert_rejected_unchanged(
                &mut state,
                Command::CreatePartitions {
                    topic_id: id,
                    total,
                    owner: 3,
                },
            );
            assert!(
                matches!(rejection, Rejection::Invalid(_)),
                "total {total}: {rejection:?}"
            );
        }
        let rejection = assert_rejected_unchanged(
            &mut state,
            Command::CreatePartitions {
                topic_id: topic_id(2),
                total: 8,
                owner: 1,
            },
        );
        assert_eq!(rejection, Rejection::UnknownTopicOrPartition);
    }

    #[test]
    fn set_topic_configs_replaces_and_rejects_unknown() {
        let mut state = MetadataState::default();
        let id = topic_id(1);
        let mut first = BTreeMap::new();
        first.insert("a".to_owned(), "1".to_owned());
        apply_command(
            &mut state,
            &Command::CreateTopic {
                name: "t".into(),
                topic_id: id,
                partitions: 1,
                configs: first,
                owner: 1,
                now_ms: NOW,
            },
        );
        let mut second = BTreeMap::new();
        second.insert("b".to_owned(), "2".to_owned());
        let set = Command::SetTopicConfigs {
            topic_id: id,
            configs: second.clone(),
        };
        assert_eq!(apply_command(&mut state, &set), CommandResponse::Ok);
        assert_eq!(state.topics[&id].configs, second);
        let rejection = assert_rejected_unchanged(
            &mut state,
            Command::SetTopicConfigs {
                topic_id: topic_id(2),
                configs: BTreeMap::new(),
            },
        );
        assert_eq!(rejection, Rejection::UnknownTopicOrPartition);
    }

    #[test]
    fn add_segment_appends_contiguous_segments() {
        let mut state = MetadataState::default();
        let id = topic_id(1);
        create(&mut state, "t", id, 1);
        assert_eq!(
            add(&mut state, tp(id, 0), 0, segment("s0", 0, 10)),
            CommandResponse::Ok
        );
        assert_eq!(
            add(&mut state, tp(id, 0), 0, segment("s1", 10, 25)),
            CommandResponse::Ok
        );
        let partition = state.partition(tp(id, 0)).expect("partition");
        assert_eq!(partition.segmented_end(), 25);
        assert_eq!(partition.segments.len(), 2);
    }

    #[test]
    fn add_segment_rejections() {
        let mut state = MetadataState::default();
        let id = topic_id(1);
        create(&mut state, "t", id, 1);
        apply_command(
            &mut state,
            &Command::RegisterBroker {
                node_id: 1,
                host: "h".into(),
                port: 1,
            },
        );
        // Registering the owner fenced its earlier writes: the epoch is now 1.
        assert_eq!(state.topics[&id].partitions[0].leader_epoch, 1);
        assert_eq!(
            add(&mut state, tp(id, 0), 1, segment("s0", 0, 10)),
            CommandResponse::Ok
        );

        let cmd = |tp: TopicPartition, epoch: i32, seg: SegmentRef| Command::AddSegment {
            tp,
            leader_epoch: epoch,
            segment: seg,
        };
        assert_eq!(
            assert_rejected_unchanged(&mut state, cmd(tp(id, 0), 0, segment("s1", 10, 20))),
            Rejection::StaleLeaderEpoch { got: 0, current: 1 }
        );
        assert!(matches!(
            assert_rejected_unchanged(&mut state, cmd(tp(id, 0), 1, segment("s1", 11, 20))),
            Rejection::NonContiguousSegment(_)
        ));
        assert!(matches!(
            assert_rejected_unchanged(&mut state, cmd(tp(id, 0), 1, segment("s1", 5, 20))),
            Rejection::NonContiguousSegment(_)
        ));
        for bad in [
            cmd(tp(id, 0), 2, segment("s1", 10, 20)), // epoch ahead of metadata
            cmd(tp(id, 0), 1, segment("s1", 10, 10)), // empty range
            cmd(tp(id, 0), 1, segment("", 10, 20)),   // empty key
            cmd(tp(id, 0), 1, segment("s0", 10, 20)), // key reuse
        ] {
            let rejection = assert_rejected_unchanged(&mut state, bad);
            assert!(matches!(rejection, Rejection::Invalid(_)), "{rejection:?}");
        }
        for unknown in [tp(id, 1), tp(id, -1), tp(topic_id(2), 0)] {
            assert_eq!(
                assert_rejected_unchanged(&mut state, cmd(unknown, 1, segment("x", 10, 20))),
                Rejection::UnknownTopicOrPartition
            );
        }
    }

    #[test]
    fn first_segment_must_cover_the_log_start() {
        let mut state = MetadataState::default();
        let id = topic_id(1);
        create(&mut state, "t", id, 1);
        let advance = Command::AdvanceLogStart {
            tp: tp(id, 0),
            offset: 15,
            now_ms: NOW,
        };
        assert_eq!(
            apply_command(&mut state, &advance),
            CommandResponse::LogStart(15)
        );
        let cmd = |seg| Command::AddSegment {
            tp: tp(id, 0),
            leader_epoch: 0,
            segment: seg,
        };
        // A gap above the log start, and a segment wholly below it.
        for bad in [segment("a", 16, 30), segment("b", 0, 15)] {
            let rejection = assert_rejected_unchanged(&mut state, cmd(bad));
            assert!(
                matches!(rejection, Rejection::NonContiguousSegment(_)),
                "{rejection:?}"
            );
        }
        // A batch boundary below the log start is fine as long as the segment covers it.
        assert_eq!(
            add(&mut state, tp(id, 0), 0, segment("c", 10, 30)),
            CommandResponse::Ok
        );
        assert_eq!(
            state.partition(tp(id, 0)).map(PartitionMeta::segmented_end),
            Some(30)
        );
    }

    #[test]
    fn advance_log_start_removes_covered_segments_and_never_goes_back() {
        let mut state = MetadataState::default();
        let id = topic_id(1);
        create(&mut state, "t", id, 1);
        for (key, base, end) in [("a", 0, 10), ("b", 10, 20), ("c", 20, 30)] {
            assert_eq!(
                add(&mut state, tp(id, 0), 0, segment(key, base, end)),
                CommandResponse::Ok
            );
        }
        let advance = |offset, now_ms| Command::AdvanceLogStart {
            tp: tp(id, 0),
            offset,
            now_ms,
        };
        // Inside "b": only "a" is wholly covered.
        assert_eq!(
            apply_command(&mut state, &advance(15, NOW)),
            CommandResponse::LogStart(15)
        );
        let partition = state.partition(tp(id, 0)).expect("partition");
        assert_eq!(partition.log_start_offset, 15);
        let keys: Vec<&str> = partition.segments.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, vec!["b", "c"]);
        assert_eq!(state.deleted_objects, vec![("a".into(), NOW)]);
        // Backwards and equal moves change nothing and answer the current start.
        let before = state.clone();
        assert_eq!(
            apply_command(&mut state, &advance(5, NOW + 1)),
            CommandResponse::LogStart(15)
        );
        assert_eq!(
            apply_command(&mut state, &advance(15, NOW + 1)),
            CommandResponse::LogStart(15)
        );
        assert_eq!(state, before);
        // Exactly at a segment end removes that segment too.
        assert_eq!(
            apply_command(&mut state, &advance(20, NOW + 2)),
            CommandResponse::LogStart(20)
        );
        assert_eq!(
            state.deleted_objects,
            vec![("a".into(), NOW), ("b".into(), NOW + 2)]
        );
        // Past every segment: the index is empty and continues at the log start.
        assert_eq!(
            apply_command(&mut state, &advance(40, NOW + 3)),
            CommandResponse::LogStart(40)
        );
        let partition = state.partition(tp(id, 0)).expect("partition");
        assert!(partition.segments.is_empty());
        assert_eq!(partition.segmented_end(), 40);
        assert_eq!(state.deleted_objects.len(), 3);
    }

    #[test]
    fn advance_log_start_rejections() {
        let mut state = MetadataState::default();
        let id = topic_id(1);
        create(&mut state, "t", id, 1);
        let rejection = assert_rejected_unchanged(
            &mut state,
            Command::AdvanceLogStart {
                tp: tp(id, 0),
                offset: -1,
                now_ms: NOW,
            },
        );
        assert!(matches!(rejection, Rejection::Invalid(_)));
        let rejection = assert_rejected_unchanged(
            &mut state,
            Command::AdvanceLogStart {
                tp: tp(id, 5),
                offset: 1,
                now_ms: NOW,
            },
        );
        assert_eq!(rejection, Rejection::UnknownTopicOrPartition);
    }

    #[test]
    fn forget_deleted_objects_removes_only_named_keys() {
        let mut state = MetadataState {
            deleted_objects: vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 3)],
            ..Default::default()
        };
        let forget = Command::ForgetDeletedObjects {
            keys: vec!["a".into(), "c".into(), "zz".into()],
        };
        assert_eq!(apply_command(&mut state, &forget), CommandResponse::Ok);
        assert_eq!(state.deleted_objects, vec![("b".into(), 2)]);
    }

    #[test]
    fn allocate_producer_ids_hands_out_disjoint_ranges() {
        let mut state = MetadataState::default();
        let alloc = |count| Command::AllocateProducerIds { count };
        assert_eq!(
            apply_command(&mut state, &alloc(10)),
            CommandResponse::ProducerIdStart(0)
        );
        assert_eq!(
            apply_command(&mut state, &alloc(1)),
            CommandResponse::ProducerIdStart(10)
        );
        assert_eq!(state.next_producer_id, 11);
        for bad in [0, -5] {
            assert!(rejected_invalid(&apply_command(&mut state, &alloc(bad))));
        }
        state.next_producer_id = i64::MAX - 1;
        let rejection = assert_rejected_unchanged(&mut state, alloc(2));
        assert!(matches!(rejection, Rejection::Invalid(_)));
        assert_eq!(
            apply_command(&mut state, &alloc(1)),
            CommandResponse::ProducerIdStart(i64::MAX - 1)
        );
    }

    #[test]
    fn replay_is_deterministic() {
        let id = topic_id(3);
        let commands = [
            Command::InitCluster {
                cluster_id: "c".into(),
            },
            Command::RegisterBroker {
                node_id: 1,
                host: "h".into(),
                port: 9,
            },
            Command::CreateTopic {
                name: "t".into(),
                topic_id: id,
                partitions: 2,
                configs: BTreeMap::new(),
                owner: 1,
                now_ms: NOW,
            },
            Command::AddSegment {
                tp: tp(id, 1),
                leader_epoch: 0,
                segment: segment("k", 0, 4),
            },
            Command::AdvanceLogStart {
                tp: tp(id, 1),
                offset: 4,
                now_ms: NOW,
            },
            Command::AllocateProducerIds { count: 3 },
            Command::AddSegment {
                tp: tp(id, 0),
                leader_epoch: 9,
                segment: segment("x", 0, 4),
            },
        ];
        let run = || {
            let mut state = MetadataState::default();
            let responses: Vec<CommandResponse> = commands
                .iter()
                .map(|c| apply_command(&mut state, c))
                .collect();
            (state, responses)
        };
        assert_eq!(run(), run());
    }
}
