//! The pure, deterministic transition function of the metadata state machine: `(state, command) →
//! (state', response)`.
//!
//! No Raft, no I/O, no clock: time arrives inside the command (`now_ms`), so every replica (and every
//! replay after a restart) computes exactly the same state from the same log. Every command is
//! validated *before* anything is mutated, so a rejected command leaves the state untouched; nothing
//! here may panic, whatever the command carries (it comes from the replicated log).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use uuid::Uuid;

use crate::{
    Command, CommandResponse, EpochStart, IncarnationMeta, LaneMark, MetadataState, NodeId,
    PartitionMeta, Rejection, SealLanes, SegmentEntry, SegmentRef, TopicMeta, TopicPartition,
    MAX_PARTITIONS_PER_TOPIC,
};

/// Applies one command to `state` and returns the answer for the proposer.
pub fn apply_command(state: &mut MetadataState, command: &Command) -> CommandResponse {
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
        Command::AdvanceLogStart {
            tp,
            offset,
            now_ms,
            leader_epoch,
        } => advance_log_start(state, *tp, *offset, *now_ms, *leader_epoch),
        Command::ForgetDeletedObjects { keys } => forget_deleted_objects(state, keys),
        Command::AddSegments {
            entries,
            now_ms,
            marks,
            seal,
        } => add_segments(state, entries, *now_ms, marks, seal.as_ref()),
        Command::RegisterIncarnation {
            incarnation,
            node_id,
            lanes,
            now_ms,
            successor_of,
        } => register_incarnation(
            state,
            *incarnation,
            *node_id,
            *lanes,
            *now_ms,
            *successor_of,
        ),
        Command::ReplaceSegments {
            tp,
            leader_epoch,
            segment,
            now_ms,
        } => replace_segments(state, *tp, *leader_epoch, segment, *now_ms),
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
            now_ms,
        } => crate::apply_groups::set_producer_state(state, *tp, *leader_epoch, producers, *now_ms),
        Command::AcquirePartitions {
            node_id,
            partitions,
        } => acquire_partitions(state, *node_id, partitions),
        Command::SetEpochStarts { entries } => Ok(CommandResponse::Entries(
            entries
                .iter()
                .map(|e| set_epoch_start(state, e.tp, e.leader_epoch, e.start_offset).err())
                .collect(),
        )),
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
    // so that writes of its previous incarnation are fenced.
    bump_owned_epochs(state, node_id)?;
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
        epoch_starts: vec![EpochStart {
            epoch: 0,
            start_offset: 0,
        }],
    }
}

/// Bumps the partition's leader epoch (the caller checked it is below `i32::MAX`) and records
/// that the new epoch starts at the index end (never before the previous epoch's start).
///
/// Entries whose successor starts at the same offset saw no record and are dropped (as Kafka's
/// leader-epoch cache does), except the newest one before the bump: its records may live only in
/// a WAL tail metadata does not know yet, and recovery moves the new epoch's start past them
/// ([`Command::SetEpochStarts`]). So the history grows only with epochs that wrote something.
fn bump_epoch(partition: &mut PartitionMeta) {
    partition.leader_epoch += 1;
    let history = &partition.epoch_starts;
    let mut kept: Vec<EpochStart> = history
        .iter()
        .enumerate()
        .filter(|(i, entry)| {
            history
                .get(i + 1)
                .is_none_or(|next| next.start_offset > entry.start_offset)
        })
        .map(|(_, entry)| *entry)
        .collect();
    let start = partition
        .segmented_end()
        .max(kept.last().map_or(i64::MIN, |last| last.start_offset));
    kept.push(EpochStart {
        epoch: partition.leader_epoch,
        start_offset: start,
    });
    partition.epoch_starts = kept;
}

/// Records that `epoch` starts at `start`: like Kafka's leader-epoch cache, entries of this or a
/// later epoch, or starting at or after `start` (epochs that saw no record), are replaced.
fn record_epoch_start(partition: &mut PartitionMeta, epoch: i32, start: i64) {
    let history = &mut partition.epoch_starts;
    while history
        .last()
        .is_some_and(|last| last.epoch >= epoch || last.start_offset >= start)
    {
        history.pop();
    }
    history.push(EpochStart {
        epoch,
        start_offset: start,
    });
}

/// Drops the history entries that lie wholly below the log start (the next entry starts at or
/// before it); the entry in force at the log start stays.
fn trim_epoch_history(partition: &mut PartitionMeta) {
    let log_start = partition.log_start_offset;
    let below = partition
        .epoch_starts
        .windows(2)
        .take_while(|pair| pair[1].start_offset <= log_start)
        .count();
    partition.epoch_starts.drain(..below);
}

fn acquire_partitions(
    state: &mut MetadataState,
    node_id: NodeId,
    partitions: &[TopicPartition],
) -> Outcome {
    if !state.brokers.contains_key(&node_id) {
        return Err(invalid(format!(
            "broker {node_id} is not registered and cannot acquire partitions"
        )));
    }
    // Validate everything before mutating: the whole command applies or nothing does.
    let targets: Vec<TopicPartition> = if partitions.is_empty() {
        state
            .topics
            .values()
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, pm)| pm.owner != node_id)
                    .filter_map(|(index, _)| {
                        Some(TopicPartition {
                            topic_id: topic.id,
                            partition: i32::try_from(index).ok()?,
                        })
                    })
            })
            .collect()
    } else {
        let unique: BTreeSet<TopicPartition> = partitions.iter().copied().collect();
        unique.into_iter().collect()
    };
    for tp in &targets {
        let pm = state
            .partition(*tp)
            .ok_or(Rejection::UnknownTopicOrPartition)?;
        if pm.leader_epoch == i32::MAX {
            return Err(invalid(format!("leader epoch overflow on {tp:?}")));
        }
    }
    let mut acquired = Vec::with_capacity(targets.len());
    for tp in targets {
        let partition = partition_mut(state, tp)?;
        partition.owner = node_id;
        bump_epoch(partition);
        acquired.push((tp, partition.leader_epoch));
    }
    Ok(CommandResponse::Acquired(acquired))
}

fn set_epoch_start(
    state: &mut MetadataState,
    tp: TopicPartition,
    leader_epoch: i32,
    start_offset: i64,
) -> Result<(), Rejection> {
    let partition = partition_mut(state, tp)?;
    check_epoch(partition, leader_epoch)?;
    let recorded = partition
        .epoch_starts
        .last()
        .filter(|last| last.epoch == leader_epoch)
        .map(|last| last.start_offset);
    if start_offset < partition.log_start_offset || recorded.is_some_and(|r| start_offset < r) {
        return Err(invalid(format!(
            "epoch {leader_epoch} cannot start at {start_offset}: below its recorded start or the log start"
        )));
    }
    record_epoch_start(partition, leader_epoch, start_offset);
    Ok(())
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
        partitions: (0..count).map(|_| Arc::new(new_partition(owner))).collect(),
        created_ms: now_ms,
    };
    state.topic_ids.insert(name.to_owned(), topic_id);
    state.topics.insert(topic_id, Arc::new(topic));
    Ok(CommandResponse::Ok)
}

fn delete_topic(state: &mut MetadataState, topic_id: Uuid, now_ms: i64) -> Outcome {
    let topic = state
        .topics
        .remove(&topic_id)
        .ok_or(Rejection::UnknownTopicOrPartition)?;
    state.topic_ids.remove(&topic.name);
    crate::apply_groups::forget_topic(state, topic_id, now_ms);
    // The topic's objects become garbage (the GC deletes them after its grace period), except
    // shared WAL objects that other topics' partitions still reference.
    for partition in &topic.partitions {
        for segment in &partition.segments {
            release_object(state, segment.key.clone(), now_ms);
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
        .map(Arc::make_mut)
        .ok_or(Rejection::UnknownTopicOrPartition)?;
    let count = validate_partition_count(total)?;
    let current = topic.partitions.len();
    if count <= current {
        return Err(invalid(format!(
            "topic already has {current} partitions; the count can only grow (asked for {total})"
        )));
    }
    topic
        .partitions
        .resize_with(count, || Arc::new(new_partition(owner)));
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
        .map(Arc::make_mut)
        .ok_or(Rejection::UnknownTopicOrPartition)?;
    topic.configs = configs.clone();
    Ok(CommandResponse::Ok)
}

/// The partition `tp` for changing: copies the topic's list of partition pointers and this one
/// partition if a published state still shares them, never the other partitions' segment lists.
pub(crate) fn partition_mut(
    state: &mut MetadataState,
    tp: TopicPartition,
) -> Result<&mut PartitionMeta, Rejection> {
    let index = usize::try_from(tp.partition).map_err(|_| Rejection::UnknownTopicOrPartition)?;
    // Read-only lookup first: a rejected command must not copy the topic.
    let exists = state
        .topics
        .get(&tp.topic_id)
        .is_some_and(|topic| index < topic.partitions.len());
    if !exists {
        return Err(Rejection::UnknownTopicOrPartition);
    }
    state
        .topics
        .get_mut(&tp.topic_id)
        .and_then(|topic| Arc::make_mut(topic).partitions.get_mut(index))
        .map(Arc::make_mut)
        .ok_or(Rejection::UnknownTopicOrPartition)
}

/// Checks the epoch fence: stale → [`Rejection::StaleLeaderEpoch`], ahead → invalid.
fn check_epoch(partition: &PartitionMeta, leader_epoch: i32) -> Result<(), Rejection> {
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
    Ok(())
}

/// Checks what every indexed segment must satisfy on its own: a key and a non-empty range.
fn check_segment_shape(segment: &SegmentRef) -> Result<(), Rejection> {
    if segment.key.is_empty() {
        return Err(invalid("segment key must not be empty"));
    }
    if segment.base_offset < 0 || segment.end_offset <= segment.base_offset {
        return Err(invalid(format!(
            "segment offset range [{}, {}) is empty or negative",
            segment.base_offset, segment.end_offset
        )));
    }
    Ok(())
}

fn check_key_not_indexed(partition: &PartitionMeta, key: &str) -> Result<(), Rejection> {
    if partition
        .segments
        .iter()
        .any(|existing| existing.key == key)
    {
        return Err(invalid(format!("segment key {key} is already indexed")));
    }
    Ok(())
}

/// Checks that `segment` may be appended to `partition` by a writer at `leader_epoch` (the rules
/// of [`Command::AddSegment`]); mutates nothing.
fn check_append(
    partition: &PartitionMeta,
    leader_epoch: i32,
    segment: &SegmentRef,
) -> Result<(), Rejection> {
    check_epoch(partition, leader_epoch)?;
    check_segment_shape(segment)?;
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
    check_key_not_indexed(partition, &segment.key)
}

/// A segment object of its own must not reuse the key of a shared WAL object: releasing it would
/// decrement the shared object's count and could queue it for GC while other chunks still use it.
fn check_not_shared(state: &MetadataState, key: &str) -> Result<(), Rejection> {
    if state.shared_objects.contains_key(key) {
        return Err(invalid(format!(
            "segment key {key} belongs to a shared WAL object"
        )));
    }
    Ok(())
}

fn add_segment(
    state: &mut MetadataState,
    tp: TopicPartition,
    leader_epoch: i32,
    segment: &SegmentRef,
) -> Outcome {
    check_not_shared(state, &segment.key)?;
    let partition = partition_mut(state, tp)?;
    check_append(partition, leader_epoch, segment)?;
    partition.segments.push(segment.clone());
    Ok(CommandResponse::Ok)
}

/// S3 WAL group commit: one chunk per entry of one or more shared objects (a commit may index
/// several WAL objects at once), each applied or rejected on its own; every object's reference
/// count grows by the number of its accepted chunks.
fn add_segments(
    state: &mut MetadataState,
    entries: &[SegmentEntry],
    now_ms: i64,
    marks: &[LaneMark],
    seal: Option<&SealLanes>,
) -> Outcome {
    // Whole-command checks first: nothing is applied if any of them fails.
    if entries.is_empty() && marks.is_empty() && seal.is_none() {
        return Err(invalid(
            "AddSegments needs at least one entry, mark or seal",
        ));
    }
    check_lane_marks(state, marks, seal)?;
    let mut per_key: BTreeMap<&str, u32> = BTreeMap::new();
    for entry in entries {
        let count = per_key.entry(entry.segment.key.as_str()).or_insert(0);
        *count = count.saturating_add(1);
    }
    for (&key, &count) in &per_key {
        if key.is_empty() {
            return Err(invalid("segment key must not be empty"));
        }
        // An object already released (queued for GC) must not come back into the index: the GC
        // could delete it under the new references.
        if state
            .deleted_objects
            .iter()
            .any(|(deleted, _)| deleted == key)
        {
            return Err(invalid(format!(
                "object {key} was already released for deletion"
            )));
        }
        let held = state.shared_objects.get(key).copied().unwrap_or(0);
        if held.checked_add(count).is_none() {
            return Err(invalid(format!("too many chunks referencing object {key}")));
        }
    }

    let lanes = !marks.is_empty() || seal.is_some();
    let mut outcomes = Vec::with_capacity(entries.len());
    let mut accepted: BTreeMap<&str, u32> = BTreeMap::new();
    for entry in entries {
        // Entries apply in order, so a later entry of the same partition continues after an
        // earlier accepted one (and a repeated chunk is refused as a duplicate key).
        let outcome = partition_mut(state, entry.tp).and_then(|partition| {
            check_epoch(partition, entry.leader_epoch)?;
            // A lane's chunk that DeleteRecords or retention passed before it was indexed (the
            // log start moved beyond it and emptied the index) is settled, with nothing to index.
            if lanes
                && partition.segments.is_empty()
                && entry.segment.end_offset <= partition.log_start_offset
            {
                return Ok(false);
            }
            check_append(partition, entry.leader_epoch, &entry.segment)?;
            partition.segments.push(entry.segment.clone());
            if seal.is_some() {
                // A takeover's tail was written under the older epochs: the current one starts
                // after it.
                let (epoch, end) = (partition.leader_epoch, partition.segmented_end());
                record_epoch_start(partition, epoch, end);
            }
            Ok(true)
        });
        match outcome {
            Ok(indexed) => {
                if indexed {
                    *accepted.entry(entry.segment.key.as_str()).or_insert(0) += 1;
                }
                outcomes.push(None);
            }
            Err(rejection) => outcomes.push(Some(rejection)),
        }
    }
    for &key in per_key.keys() {
        let held = state.shared_objects.get(key).copied().unwrap_or(0);
        match accepted.get(key).copied().unwrap_or(0) {
            // Cannot overflow: checked against `held + count` above.
            0 if held == 0 && marks.is_empty() && seal.is_none() => {
                // Nothing references the object (and nothing did before): it is garbage already.
                Arc::make_mut(&mut state.deleted_objects).push((key.to_owned(), now_ms));
            }
            0 => {}
            count => {
                state.shared_objects.insert(key.to_owned(), held + count);
            }
        }
    }
    // A mark says "every object up to here is indexed": it must not pass a chunk that was
    // refused for any reason other than its partition being gone or no longer this writer's.
    let all_settled = outcomes
        .iter()
        .all(|outcome| Rejection::settles_chunk(outcome.as_ref()));
    if all_settled {
        apply_lane_marks(state, marks, seal);
    }
    Ok(CommandResponse::Entries(outcomes))
}

/// Marks name registered incarnations and lanes; a seal names a dead incarnation, one seal per
/// lane, each above its lane's mark, and agrees with an earlier seal of the same incarnation.
fn check_lane_marks(
    state: &MetadataState,
    marks: &[LaneMark],
    seal: Option<&SealLanes>,
) -> Result<(), Rejection> {
    for mark in marks {
        let incarnation = state
            .incarnations
            .get(&mark.incarnation)
            .ok_or_else(|| invalid(format!("unknown incarnation {}", mark.incarnation)))?;
        if mark.lane >= incarnation.lanes {
            return Err(invalid(format!(
                "incarnation {} has no lane {}",
                mark.incarnation, mark.lane
            )));
        }
    }
    if let Some(seal) = seal {
        let incarnation = state
            .incarnations
            .get(&seal.incarnation)
            .ok_or_else(|| invalid(format!("unknown incarnation {}", seal.incarnation)))?;
        if incarnation.live {
            return Err(invalid(format!(
                "incarnation {} is live: it cannot be sealed",
                seal.incarnation
            )));
        }
        if seal.seals.len() != incarnation.lanes as usize {
            return Err(invalid(format!(
                "{} seals for {} lanes",
                seal.seals.len(),
                incarnation.lanes
            )));
        }
        if let Some(previous) = &incarnation.sealed {
            if previous != &seal.seals {
                return Err(invalid(format!(
                    "incarnation {} is already sealed at {previous:?}",
                    seal.incarnation
                )));
            }
        }
        for (lane, (&at, &through)) in seal
            .seals
            .iter()
            .zip(&incarnation.indexed_through)
            .enumerate()
        {
            if at <= through {
                return Err(invalid(format!(
                    "seal {at} of lane {lane} is not above its mark {through}"
                )));
            }
        }
    }
    Ok(())
}

/// Advances the marks of live incarnations (never backwards), then applies the seal.
fn apply_lane_marks(state: &mut MetadataState, marks: &[LaneMark], seal: Option<&SealLanes>) {
    if marks.is_empty() && seal.is_none() {
        return;
    }
    let incarnations = Arc::make_mut(&mut state.incarnations);
    for mark in marks {
        if let Some(incarnation) = incarnations.get_mut(&mark.incarnation) {
            if let Some(through) = incarnation.indexed_through.get_mut(mark.lane as usize) {
                if incarnation.live && *through < mark.through {
                    *through = mark.through;
                }
            }
        }
    }
    if let Some(seal) = seal {
        if let Some(incarnation) = incarnations.get_mut(&seal.incarnation) {
            for (through, &at) in incarnation.indexed_through.iter_mut().zip(&seal.seals) {
                *through = (*through).max(at - 1);
            }
            incarnation.sealed = Some(seal.seals.clone());
        }
    }
}

/// Bumps the leader epoch of every partition `node_id` owns; nothing changes on overflow.
fn bump_owned_epochs(state: &mut MetadataState, node_id: NodeId) -> Result<(), Rejection> {
    let owned_epochs_overflow = state
        .topics
        .values()
        .flat_map(|topic| topic.partitions.iter())
        .any(|partition| partition.owner == node_id && partition.leader_epoch == i32::MAX);
    if owned_epochs_overflow {
        return Err(invalid("leader epoch overflow"));
    }
    for topic in state.topics.values_mut() {
        if topic.partitions.iter().any(|p| p.owner == node_id) {
            for partition in Arc::make_mut(topic).partitions.iter_mut() {
                if partition.owner == node_id {
                    bump_epoch(Arc::make_mut(partition));
                }
            }
        }
    }
    Ok(())
}

/// Registers a broker incarnation: older live incarnations of the node die, and every partition
/// the node owns gets a new leader epoch (checked for overflow before anything changes).
fn register_incarnation(
    state: &mut MetadataState,
    id: Uuid,
    node_id: NodeId,
    lanes: u32,
    now_ms: i64,
    successor_of: Option<Uuid>,
) -> Outcome {
    if state.incarnations.contains_key(&id) {
        return Err(invalid(format!("incarnation {id} is already registered")));
    }
    if let Some(previous) = successor_of {
        if !state
            .incarnations
            .get(&previous)
            .is_some_and(|inc| inc.live)
        {
            return Err(Rejection::Fenced(format!(
                "incarnation {previous} was retired by another start of node {node_id}"
            )));
        }
    }
    if lanes == 0 || lanes > crate::MAX_WAL_LANES {
        return Err(invalid(format!(
            "an incarnation has 1..={} lanes, not {lanes}",
            crate::MAX_WAL_LANES
        )));
    }
    bump_owned_epochs(state, node_id)?;
    let ordinal = state.next_incarnation_ordinal;
    state.next_incarnation_ordinal = ordinal.saturating_add(1);
    let incarnations = Arc::make_mut(&mut state.incarnations);
    for incarnation in incarnations.values_mut() {
        if incarnation.node_id == node_id {
            incarnation.live = false;
        }
    }
    incarnations.insert(
        id,
        IncarnationMeta {
            node_id,
            lanes,
            ordinal,
            registered_ms: now_ms,
            indexed_through: vec![0; lanes as usize],
            live: true,
            sealed: None,
        },
    );
    Ok(CommandResponse::Ok)
}

/// Compaction: swaps the run of segments exactly covering `segment`'s range for `segment`.
fn replace_segments(
    state: &mut MetadataState,
    tp: TopicPartition,
    leader_epoch: i32,
    segment: &SegmentRef,
    now_ms: i64,
) -> Outcome {
    check_not_shared(state, &segment.key)?;
    let partition = partition_mut(state, tp)?;
    check_epoch(partition, leader_epoch)?;
    check_segment_shape(segment)?;
    // Segments are sorted and contiguous: the run is [first, last] with first starting at the
    // new base and last ending at the new end.
    let first = partition
        .segments
        .iter()
        .position(|s| s.base_offset == segment.base_offset);
    let last = first.and_then(|first| {
        partition.segments[first..]
            .iter()
            .position(|s| s.end_offset == segment.end_offset)
            .map(|len| first + len)
    });
    let (Some(first), Some(last)) = (first, last) else {
        return Err(Rejection::NonContiguousSegment(format!(
            "no run of segments covers exactly [{}, {})",
            segment.base_offset, segment.end_offset
        )));
    };
    check_key_not_indexed(partition, &segment.key)?;
    let removed: Vec<SegmentRef> = partition
        .segments
        .splice(first..=last, [segment.clone()])
        .collect();
    for old in removed {
        release_object(state, old.key, now_ms);
    }
    Ok(CommandResponse::Ok)
}

/// Drops one index reference to the object `key`. A shared WAL object is queued for GC only when
/// its last chunk leaves the index; a segment object of its own is queued at once. Every path that
/// removes a [`SegmentRef`] from the index goes through here.
pub(crate) fn release_object(state: &mut MetadataState, key: String, now_ms: i64) {
    if !state.shared_objects.contains_key(&key) {
        Arc::make_mut(&mut state.deleted_objects).push((key, now_ms));
        return;
    }
    match state.shared_objects.get_mut(&key) {
        Some(count) if *count > 1 => *count -= 1,
        _ => {
            state.shared_objects.remove(&key);
            Arc::make_mut(&mut state.deleted_objects).push((key, now_ms));
        }
    }
}

fn advance_log_start(
    state: &mut MetadataState,
    tp: TopicPartition,
    offset: i64,
    now_ms: i64,
    leader_epoch: i32,
) -> Outcome {
    let partition = partition_mut(state, tp)?;
    if leader_epoch != crate::UNCHECKED_EPOCH {
        check_epoch(partition, leader_epoch)?;
    }
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
    trim_epoch_history(partition);
    for segment in removed {
        release_object(state, segment.key, now_ms);
    }
    Ok(CommandResponse::LogStart(offset))
}

fn forget_deleted_objects(state: &mut MetadataState, keys: &[String]) -> Outcome {
    let forget: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
    Arc::make_mut(&mut state.deleted_objects).retain(|(key, _)| !forget.contains(key.as_str()));
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
            producer_batches: false,
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
        if let Some(topic) = state.topics.get_mut(&id).map(Arc::make_mut) {
            Arc::make_mut(&mut topic.partitions[0]).leader_epoch = i32::MAX;
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
        assert!(topic.partitions.iter().all(|p| **p == new_partition(4)));
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
            *state.deleted_objects,
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
            leader_epoch: crate::UNCHECKED_EPOCH,
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
            leader_epoch: crate::UNCHECKED_EPOCH,
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
        assert_eq!(*state.deleted_objects, vec![("a".into(), NOW)]);
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
            *state.deleted_objects,
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
                leader_epoch: crate::UNCHECKED_EPOCH,
                tp: tp(id, 0),
                offset: -1,
                now_ms: NOW,
            },
        );
        assert!(matches!(rejection, Rejection::Invalid(_)));
        let rejection = assert_rejected_unchanged(
            &mut state,
            Command::AdvanceLogStart {
                leader_epoch: crate::UNCHECKED_EPOCH,
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
            deleted_objects: Arc::new(vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]),
            ..Default::default()
        };
        let forget = Command::ForgetDeletedObjects {
            keys: vec!["a".into(), "c".into(), "zz".into()],
        };
        assert_eq!(apply_command(&mut state, &forget), CommandResponse::Ok);
        assert_eq!(*state.deleted_objects, vec![("b".into(), 2)]);
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
                leader_epoch: crate::UNCHECKED_EPOCH,
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

    // ---- S3 WAL: shared objects (AddSegments, ReplaceSegments, release_object) ----

    fn chunk(key: &str, base: i64, end: i64) -> SegmentRef {
        SegmentRef {
            footer_len: 40,
            producer_batches: false,
            ..segment(key, base, end)
        }
    }

    fn entry(tp: TopicPartition, epoch: i32, seg: SegmentRef) -> SegmentEntry {
        SegmentEntry {
            tp,
            leader_epoch: epoch,
            segment: seg,
        }
    }

    fn add_many(state: &mut MetadataState, entries: Vec<SegmentEntry>) -> Vec<Option<Rejection>> {
        match apply_command(
            state,
            &Command::AddSegments {
                entries,
                now_ms: NOW,
                marks: Vec::new(),
                seal: None,
            },
        ) {
            CommandResponse::Entries(outcomes) => outcomes,
            other => panic!("expected per-entry outcomes, got {other:?}"),
        }
    }

    fn replace(tp: TopicPartition, epoch: i32, seg: SegmentRef, now_ms: i64) -> Command {
        Command::ReplaceSegments {
            tp,
            leader_epoch: epoch,
            segment: seg,
            now_ms,
        }
    }

    fn keys_of(state: &MetadataState, tp: TopicPartition) -> Vec<String> {
        state
            .partition(tp)
            .map(|p| p.segments.iter().map(|s| s.key.clone()).collect())
            .unwrap_or_default()
    }

    fn deleted_keys(state: &MetadataState) -> Vec<&str> {
        state
            .deleted_objects
            .iter()
            .map(|(key, _)| key.as_str())
            .collect()
    }

    #[test]
    fn add_segments_applies_or_rejects_each_entry() {
        let mut state = MetadataState::default();
        let (a, b, gone) = (topic_id(1), topic_id(2), topic_id(3));
        create(&mut state, "a", a, 2);
        create(&mut state, "b", b, 1);
        create(&mut state, "gone", gone, 1);
        apply_command(
            &mut state,
            &Command::DeleteTopic {
                topic_id: gone,
                now_ms: NOW,
            },
        );
        if let Some(topic) = state.topics.get_mut(&a).map(Arc::make_mut) {
            Arc::make_mut(&mut topic.partitions[1]).leader_epoch = 2;
        }
        let outcomes = add_many(
            &mut state,
            vec![
                entry(tp(a, 0), 0, chunk("w1", 0, 10)),
                entry(tp(a, 1), 1, chunk("w1", 0, 5)), // stale epoch
                entry(tp(gone, 0), 0, chunk("w1", 0, 3)), // deleted topic
                entry(tp(b, 0), 0, chunk("w1", 0, 7)),
                entry(tp(a, 0), 0, chunk("w1", 10, 12)), // same object twice in one partition
            ],
        );
        assert_eq!(outcomes.len(), 5);
        assert_eq!(outcomes[0], None);
        assert_eq!(
            outcomes[1],
            Some(Rejection::StaleLeaderEpoch { got: 1, current: 2 })
        );
        assert_eq!(outcomes[2], Some(Rejection::UnknownTopicOrPartition));
        assert_eq!(outcomes[3], None);
        assert!(matches!(outcomes[4], Some(Rejection::Invalid(_))));
        assert_eq!(keys_of(&state, tp(a, 0)), vec!["w1"]);
        assert!(keys_of(&state, tp(a, 1)).is_empty());
        assert_eq!(keys_of(&state, tp(b, 0)), vec!["w1"]);
        assert_eq!(state.shared_objects.get("w1"), Some(&2));
        assert!(state.deleted_objects.is_empty());

        // The next object continues each partition's index; a gap is refused for that entry only.
        let outcomes = add_many(
            &mut state,
            vec![
                entry(tp(a, 0), 0, chunk("w2", 10, 20)),
                entry(tp(b, 0), 0, chunk("w2", 8, 9)),
                entry(tp(a, 1), 2, chunk("w2", 0, 4)),
            ],
        );
        assert!(matches!(
            outcomes.as_slice(),
            [None, Some(Rejection::NonContiguousSegment(_)), None]
        ));
        assert_eq!(state.shared_objects.get("w2"), Some(&2));
        assert_eq!(
            state.partition(tp(a, 0)).map(PartitionMeta::segmented_end),
            Some(20)
        );
    }

    #[test]
    fn add_segments_whole_command_rejections_change_nothing() {
        let mut state = MetadataState::default();
        let id = topic_id(1);
        create(&mut state, "t", id, 2);
        Arc::make_mut(&mut state.deleted_objects).push(("released".into(), NOW));
        let cmd = |entries| Command::AddSegments {
            entries,
            now_ms: NOW,
            marks: Vec::new(),
            seal: None,
        };
        for bad in [
            cmd(vec![]),
            cmd(vec![entry(tp(id, 0), 0, chunk("", 0, 10))]),
            // A released object anywhere in the command refuses all of it.
            cmd(vec![
                entry(tp(id, 1), 0, chunk("w2", 0, 10)),
                entry(tp(id, 0), 0, chunk("released", 0, 10)),
            ]),
            cmd(vec![entry(tp(id, 0), 0, chunk("released", 0, 10))]),
        ] {
            let rejection = assert_rejected_unchanged(&mut state, bad);
            assert!(matches!(rejection, Rejection::Invalid(_)), "{rejection:?}");
        }
    }

    #[test]
    fn add_segments_indexes_several_objects_in_one_command() {
        let mut state = MetadataState::default();
        let id = topic_id(1);
        create(&mut state, "t", id, 2);
        let outcomes = add_many(
            &mut state,
            vec![
                entry(tp(id, 0), 0, chunk("w1", 0, 10)),
                entry(tp(id, 1), 0, chunk("w1", 0, 5)),
                entry(tp(id, 0), 0, chunk("w2", 10, 20)),
                // Stale epoch: rejected alone; w3 had nothing accepted, so it is garbage.
                entry(tp(id, 1), 7, chunk("w3", 5, 9)),
            ],
        );
        assert_eq!(outcomes[..3], [None, None, None]);
        assert!(outcomes[3].is_some());
        assert_eq!(state.shared_objects.get("w1"), Some(&2));
        assert_eq!(state.shared_objects.get("w2"), Some(&1));
        assert!(!state.shared_objects.contains_key("w3"));
        assert_eq!(*state.deleted_objects, vec![("w3".into(), NOW)]);
        assert_eq!(keys_of(&state, tp(id, 0)), ["w1", "w2"]);
    }

    #[test]
    fn add_segments_with_nothing_accepted_queues_the_object() {
        let mut state = MetadataState::default();
        let id = topic_id(1);
        create(&mut state, "t", id, 1);
        let outcomes = add_many(
            &mut state,
            vec![
                entry(tp(id, 0), 3, chunk("w1", 0, 10)),
                entry(tp(topic_id(9), 0), 0, chunk("w1", 0, 10)),
            ],
        );
        assert!(outcomes.iter().all(Option::is_some), "{outcomes:?}");
        assert!(state.shared_objects.is_empty());
        assert_eq!(*state.deleted_objects, vec![("w1".into(), NOW)]);
        assert!(keys_of(&state, tp(id, 0)).is_empty());
    }

    #[test]
    fn a_retried_add_segments_neither_double_counts_nor_queues_a_live_object() {
        let mut state = MetadataState::default();
        let id = topic_id(1);
        create(&mut state, "t", id, 2);
        let entries = vec![
            entry(tp(id, 0), 0, chunk("w1", 0, 10)),
            entry(tp(id, 1), 0, chunk("w1", 0, 4)),
        ];
        assert_eq!(add_many(&mut state, entries.clone()), vec![None, None]);
        let before = state.clone();
        // The same command again (a proposer retrying after NotPersisted): every chunk is already
        // indexed, so every entry is refused and the object stays live with its count.
        let outcomes = add_many(&mut state, entries);
        assert!(outcomes.iter().all(Option::is_some), "{outcomes:?}");
        assert_eq!(state, before);
    }

    #[test]
    fn a_shared_object_is_released_only_when_its_last_chunk_leaves() {
        let mut state = MetadataState::default();
        let (a, b, c) = (topic_id(1), topic_id(2), topic_id(3));
        create(&mut state, "a", a, 2);
        create(&mut state, "b", b, 1);
        create(&mut state, "c", c, 1);
        let outcomes = add_many(
            &mut state,
            vec![
                entry(tp(a, 0), 0, chunk("w1", 0, 10)),
                entry(tp(a, 1), 0, chunk("w1", 0, 10)),
                entry(tp(b, 0), 0, chunk("w1", 0, 10)),
                entry(tp(c, 0), 0, chunk("w1", 0, 10)),
            ],
        );
        assert_eq!(outcomes, vec![None; 4]);
        assert_eq!(state.shared_objects.get("w1"), Some(&4));

        // Retention removes a-0's chunk.
        let advance = Command::AdvanceLogStart {
            leader_epoch: crate::UNCHECKED_EPOCH,
            tp: tp(a, 0),
            offset: 10,
            now_ms: NOW + 1,
        };
        assert_eq!(
            apply_command(&mut state, &advance),
            CommandResponse::LogStart(10)
        );
        assert_eq!(state.shared_objects.get("w1"), Some(&3));
        // Compaction rewrites a-1's chunk into a segment object of its own.
        assert_eq!(
            apply_command(
                &mut state,
                &replace(tp(a, 1), 0, segment("a1-seg", 0, 10), NOW + 2)
            ),
            CommandResponse::Ok
        );
        assert_eq!(state.shared_objects.get("w1"), Some(&2));
        assert_eq!(keys_of(&state, tp(a, 1)), vec!["a1-seg"]);
        // Deleting topic b while c still references the object must not queue it.
        let delete = |topic_id, now_ms| Command::DeleteTopic { topic_id, now_ms };
        assert_eq!(
            apply_command(&mut state, &delete(b, NOW + 3)),
            CommandResponse::Ok
        );
        assert_eq!(state.shared_objects.get("w1"), Some(&1));
        assert!(
            state.deleted_objects.is_empty(),
            "{:?}",
            state.deleted_objects
        );
        // The last reference goes with topic c: now the object is garbage, queued once.
        assert_eq!(
            apply_command(&mut state, &delete(c, NOW + 4)),
            CommandResponse::Ok
        );
        assert!(state.shared_objects.is_empty());
        assert_eq!(*state.deleted_objects, vec![("w1".into(), NOW + 4)]);
        // Deleting topic a queues its own segment object, exclusive, at once.
        assert_eq!(
            apply_command(&mut state, &delete(a, NOW + 5)),
            CommandResponse::Ok
        );
        assert_eq!(deleted_keys(&state), vec!["w1", "a1-seg"]);
    }

    #[test]
    fn replace_segments_swaps_the_exact_run() {
        let mut state = MetadataState::default();
        let id = topic_id(1);
        create(&mut state, "t", id, 2);
        // Partition 0: chunks of three WAL objects; partition 1 shares w1 and w2.
        for (key, base, end) in [("w1", 0, 10), ("w2", 10, 20), ("w3", 20, 30)] {
            let mut entries = vec![entry(tp(id, 0), 0, chunk(key, base, end))];
            if key != "w3" {
                entries.push(entry(tp(id, 1), 0, chunk(key, base, end)));
            }
            let count = entries.len();
            assert_eq!(add_many(&mut state, entries), vec![None; count]);
        }
        assert_eq!(
            apply_command(
                &mut state,
                &replace(tp(id, 0), 0, segment("p0-a", 0, 20), NOW + 1)
            ),
            CommandResponse::Ok
        );
        assert_eq!(keys_of(&state, tp(id, 0)), vec!["p0-a", "w3"]);
        // w1 and w2 are still referenced by partition 1; w3 untouched.
        assert_eq!(state.shared_objects.get("w1"), Some(&1));
        assert_eq!(state.shared_objects.get("w2"), Some(&1));
        assert_eq!(state.shared_objects.get("w3"), Some(&1));
        assert!(state.deleted_objects.is_empty());
        // Replacing a run whose members are exclusive objects queues them.
        assert_eq!(
            apply_command(
                &mut state,
                &replace(tp(id, 0), 0, segment("p0-b", 0, 30), NOW + 2)
            ),
            CommandResponse::Ok
        );
        assert_eq!(keys_of(&state, tp(id, 0)), vec!["p0-b"]);
        assert_eq!(deleted_keys(&state), vec!["p0-a", "w3"]);
        assert!(!state.shared_objects.contains_key("w3"));
        // Partition 1 compacts w1+w2: both objects are released for good.
        assert_eq!(
            apply_command(
                &mut state,
                &replace(tp(id, 1), 0, segment("p1-a", 0, 20), NOW + 3)
            ),
            CommandResponse::Ok
        );
        assert!(state.shared_objects.is_empty());
        assert_eq!(deleted_keys(&state), vec!["p0-a", "w3", "w1", "w2"]);
        // The index continues after the replacement.
        assert_eq!(
            add(&mut state, tp(id, 1), 0, segment("p1-b", 20, 25)),
            CommandResponse::Ok
        );
    }

    #[test]
    fn replace_segments_rejections_change_nothing() {
        let mut state = MetadataState::default();
        let id = topic_id(1);
        create(&mut state, "t", id, 1);
        for (key, base, end) in [("a", 0, 10), ("b", 10, 20), ("c", 20, 30)] {
            assert_eq!(
                add(&mut state, tp(id, 0), 0, segment(key, base, end)),
                CommandResponse::Ok
            );
        }
        assert_eq!(
            add_many(&mut state, vec![entry(tp(id, 0), 0, chunk("w", 30, 40))]),
            vec![None]
        );
        let t0 = tp(id, 0);
        // Stale epoch: the owner re-registered meanwhile.
        if let Some(topic) = state.topics.get_mut(&id).map(Arc::make_mut) {
            Arc::make_mut(&mut topic.partitions[0]).leader_epoch = 1;
        }
        assert_eq!(
            assert_rejected_unchanged(&mut state, replace(t0, 0, segment("x", 0, 20), NOW)),
            Rejection::StaleLeaderEpoch { got: 0, current: 1 }
        );
        // No run: wrong start, wrong end, past the index.
        for (base, end) in [(5, 20), (0, 15), (10, 35), (30, 50), (40, 50)] {
            let rejection =
                assert_rejected_unchanged(&mut state, replace(t0, 1, segment("x", base, end), NOW));
            assert!(
                matches!(rejection, Rejection::NonContiguousSegment(_)),
                "[{base}, {end}): {rejection:?}"
            );
        }
        for bad in [
            replace(t0, 2, segment("x", 0, 20), NOW),  // epoch ahead
            replace(t0, 1, segment("", 0, 20), NOW),   // empty key
            replace(t0, 1, segment("x", 10, 10), NOW), // empty range
            replace(t0, 1, segment("c", 0, 20), NOW),  // key indexed in the partition
            replace(t0, 1, segment("a", 0, 10), NOW),  // the replaced segment's own key
            replace(t0, 1, segment("w", 0, 20), NOW),  // key of a shared object
        ] {
            let rejection = assert_rejected_unchanged(&mut state, bad);
            assert!(matches!(rejection, Rejection::Invalid(_)), "{rejection:?}");
        }
        assert_eq!(
            assert_rejected_unchanged(&mut state, replace(tp(id, 1), 1, segment("x", 0, 20), NOW)),
            Rejection::UnknownTopicOrPartition
        );

        // Retention removed the head of the run meanwhile: the compacted object is refused.
        let advance = Command::AdvanceLogStart {
            leader_epoch: crate::UNCHECKED_EPOCH,
            tp: t0,
            offset: 12,
            now_ms: NOW,
        };
        assert_eq!(
            apply_command(&mut state, &advance),
            CommandResponse::LogStart(12)
        );
        assert_eq!(keys_of(&state, t0), vec!["b", "c", "w"]);
        assert!(matches!(
            assert_rejected_unchanged(&mut state, replace(t0, 1, segment("x", 0, 30), NOW)),
            Rejection::NonContiguousSegment(_)
        ));
        // A run starting below the log start (inside its first segment) is still replaceable.
        assert_eq!(
            apply_command(&mut state, &replace(t0, 1, segment("x", 10, 40), NOW + 1)),
            CommandResponse::Ok
        );
        assert_eq!(keys_of(&state, t0), vec!["x"]);
        assert_eq!(deleted_keys(&state), vec!["a", "b", "c", "w"]);
    }

    #[test]
    fn add_segment_refuses_the_key_of_a_shared_object() {
        let mut state = MetadataState::default();
        let id = topic_id(1);
        create(&mut state, "t", id, 2);
        assert_eq!(
            add_many(&mut state, vec![entry(tp(id, 0), 0, chunk("w", 0, 10))]),
            vec![None]
        );
        let rejection = assert_rejected_unchanged(
            &mut state,
            Command::AddSegment {
                tp: tp(id, 1),
                leader_epoch: 0,
                segment: segment("w", 0, 10),
            },
        );
        assert!(matches!(rejection, Rejection::Invalid(_)));
    }

    /// A small deterministic generator (no dependency needed for a property-style test).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n.max(1)
        }
    }

    /// The reference-count invariants: every shared object's count equals the chunks indexed
    /// under its key; nothing indexed is queued for deletion; nothing is queued twice.
    fn check_refcounts(state: &MetadataState) {
        let mut indexed: BTreeMap<&str, u32> = BTreeMap::new();
        for partition in state.topics.values().flat_map(|t| t.partitions.iter()) {
            for segment in &partition.segments {
                *indexed.entry(segment.key.as_str()).or_default() += 1;
            }
        }
        for (key, count) in state.shared_objects.iter() {
            assert_eq!(indexed.get(key.as_str()), Some(count), "count of {key}");
        }
        // Chunks (footer_len != 0 in these tests) are always counted.
        for partition in state.topics.values().flat_map(|t| t.partitions.iter()) {
            for segment in partition.segments.iter().filter(|s| s.footer_len != 0) {
                assert!(
                    state.shared_objects.contains_key(&segment.key),
                    "{} uncounted",
                    segment.key
                );
            }
        }
        let mut queued = BTreeSet::new();
        for (key, _) in state.deleted_objects.iter() {
            assert!(
                !indexed.contains_key(key.as_str()),
                "{key} queued while indexed"
            );
            assert!(queued.insert(key.as_str()), "{key} queued twice");
        }
    }

    #[test]
    fn random_operations_keep_refcounts_exact() {
        let topics = [topic_id(1), topic_id(2), topic_id(3)];
        for seed in 0..200u64 {
            let mut rng = Lcg(seed);
            let mut state = MetadataState::default();
            let mut next_key = 0u64;
            let mut fresh = |prefix: &str| {
                next_key += 1;
                format!("{prefix}{next_key}")
            };
            for step in 0..80 {
                let id = topics[rng.below(3) as usize];
                let partition = rng.below(3) as i32;
                let now = NOW + step;
                let command = match rng.below(8) {
                    0 => Command::CreateTopic {
                        name: id.to_string(),
                        topic_id: id,
                        partitions: 3,
                        configs: BTreeMap::new(),
                        owner: 1,
                        now_ms: now,
                    },
                    1 => Command::DeleteTopic {
                        topic_id: id,
                        now_ms: now,
                    },
                    2..=4 => {
                        // One WAL object with a chunk for a few partitions at their index end.
                        let key = fresh("w");
                        let entries = (0..=rng.below(5))
                            .map(|_| {
                                let id = topics[rng.below(3) as usize];
                                let tp = tp(id, rng.below(3) as i32);
                                let base = state
                                    .partition(tp)
                                    .map(PartitionMeta::segmented_end)
                                    .unwrap_or(0);
                                let len = 1 + rng.below(10) as i64;
                                entry(tp, 0, chunk(&key, base, base + len))
                            })
                            .collect();
                        Command::AddSegments {
                            entries,
                            now_ms: now,
                            marks: Vec::new(),
                            seal: None,
                        }
                    }
                    5 => {
                        let tp = tp(id, partition);
                        let end = state
                            .partition(tp)
                            .map(PartitionMeta::segmented_end)
                            .unwrap_or(0);
                        Command::AdvanceLogStart {
                            leader_epoch: crate::UNCHECKED_EPOCH,
                            tp,
                            offset: rng.below(end.max(0) as u64 + 2) as i64,
                            now_ms: now,
                        }
                    }
                    _ => {
                        // Compact a random run (sometimes not an exact one).
                        let tp = tp(id, partition);
                        let segments = state
                            .partition(tp)
                            .map(|p| p.segments.clone())
                            .unwrap_or_default();
                        let n = segments.len() as u64;
                        let first = rng.below(n) as usize;
                        let last = first + rng.below(n - first as u64) as usize;
                        let (base, end) = match (segments.get(first), segments.get(last)) {
                            (Some(f), Some(l)) => {
                                (f.base_offset, l.end_offset + rng.below(2) as i64)
                            }
                            _ => (0, 1),
                        };
                        replace(tp, 0, segment(&fresh("s"), base, end), now)
                    }
                };
                let before = state.clone();
                let response = apply_command(&mut state, &command);
                if matches!(response, CommandResponse::Rejected(_)) {
                    assert_eq!(state, before, "seed {seed} step {step}: {command:?}");
                }
                check_refcounts(&state);
            }
            // Deleting everything leaves no shared object and every key queued exactly once.
            for id in topics {
                apply_command(
                    &mut state,
                    &Command::DeleteTopic {
                        topic_id: id,
                        now_ms: NOW,
                    },
                );
            }
            assert!(state.shared_objects.is_empty(), "seed {seed}");
            check_refcounts(&state);
        }
    }

    fn register(
        state: &mut MetadataState,
        id: Uuid,
        node_id: NodeId,
        lanes: u32,
    ) -> CommandResponse {
        apply_command(
            state,
            &Command::RegisterIncarnation {
                incarnation: id,
                node_id,
                lanes,
                now_ms: NOW,
                successor_of: None,
            },
        )
    }

    #[test]
    fn a_successor_registers_only_while_its_predecessor_is_live() {
        let mut state = MetadataState::default();
        let t = topic_id(1);
        create(&mut state, "t", t, 1);
        let (first, second, taker) = (topic_id(10), topic_id(11), topic_id(12));
        assert_eq!(register(&mut state, first, 1, 1), CommandResponse::Ok);
        let successor = |state: &mut MetadataState, id, of| {
            apply_command(
                state,
                &Command::RegisterIncarnation {
                    incarnation: id,
                    node_id: 1,
                    lanes: 1,
                    now_ms: NOW,
                    successor_of: Some(of),
                },
            )
        };
        // The process continues under a new incarnation: the old one is retired as usual.
        assert_eq!(successor(&mut state, second, first), CommandResponse::Ok);
        assert!(!state.incarnations[&first].live);
        // Another start takes the node over; a zombie's conditional registration is refused and
        // changes nothing.
        assert_eq!(register(&mut state, taker, 1, 1), CommandResponse::Ok);
        let epoch = state.partition(tp(t, 0)).unwrap().leader_epoch;
        let zombie = successor(&mut state, topic_id(13), second);
        assert!(
            matches!(zombie, CommandResponse::Rejected(Rejection::Fenced(_))),
            "{zombie:?}"
        );
        assert!(state.incarnations[&taker].live);
        assert!(!state.incarnations.contains_key(&topic_id(13)));
        assert_eq!(state.partition(tp(t, 0)).unwrap().leader_epoch, epoch);
    }

    fn lanes_command(
        entries: Vec<SegmentEntry>,
        marks: Vec<LaneMark>,
        seal: Option<SealLanes>,
    ) -> Command {
        Command::AddSegments {
            entries,
            now_ms: NOW,
            marks,
            seal,
        }
    }

    fn mark(incarnation: Uuid, lane: u32, through: u64) -> LaneMark {
        LaneMark {
            incarnation,
            lane,
            through,
        }
    }

    #[test]
    fn register_incarnation_retires_the_nodes_older_ones_and_bumps_its_epochs() {
        let mut state = MetadataState::default();
        let t = topic_id(1);
        create(&mut state, "t", t, 2);
        let (old, new, other) = (topic_id(10), topic_id(11), topic_id(12));
        assert_eq!(register(&mut state, old, 1, 2), CommandResponse::Ok);
        assert_eq!(register(&mut state, other, 2, 1), CommandResponse::Ok);
        assert_eq!(state.partition(tp(t, 0)).unwrap().leader_epoch, 1);
        assert_eq!(register(&mut state, new, 1, 2), CommandResponse::Ok);
        assert_eq!(state.partition(tp(t, 1)).unwrap().leader_epoch, 2);
        assert!(!state.incarnations[&old].live);
        assert!(state.incarnations[&new].live);
        assert!(
            state.incarnations[&other].live,
            "another node's incarnation"
        );
        assert_eq!(state.incarnations[&new].ordinal, 2);
        assert_eq!(state.incarnations[&new].indexed_through, vec![0, 0]);
        for (id, lanes) in [
            (new, 2),
            (topic_id(13), 0),
            (topic_id(14), crate::MAX_WAL_LANES + 1),
        ] {
            assert!(rejected_invalid(&register(&mut state, id, 1, lanes)));
        }
        assert_eq!(state.partition(tp(t, 0)).unwrap().leader_epoch, 2);
    }

    #[test]
    fn marks_advance_only_for_live_incarnations_and_never_back() {
        let mut state = MetadataState::default();
        let t = topic_id(1);
        create(&mut state, "t", t, 1);
        let (zombie, taker) = (topic_id(10), topic_id(11));
        register(&mut state, zombie, 1, 2);
        let e = |key: &str, base, end| vec![entry(tp(t, 0), 1, chunk(key, base, end))];
        apply_command(
            &mut state,
            &lanes_command(e("w1", 0, 5), vec![mark(zombie, 1, 3)], None),
        );
        apply_command(
            &mut state,
            &lanes_command(e("w2", 5, 6), vec![mark(zombie, 1, 2)], None),
        );
        assert_eq!(state.incarnations[&zombie].indexed_through, vec![0, 3]);
        // A chunk that does not continue the index holds the mark where it is.
        let gap = apply_command(
            &mut state,
            &lanes_command(e("gap", 9, 12), vec![mark(zombie, 1, 5)], None),
        );
        assert!(matches!(
            gap,
            CommandResponse::Entries(ref outcomes)
                if matches!(outcomes[0], Some(Rejection::NonContiguousSegment(_)))
        ));
        assert_eq!(state.incarnations[&zombie].indexed_through, vec![0, 3]);
        // A chunk that DeleteRecords passed before it was indexed is settled: the mark moves.
        apply_command(
            &mut state,
            &Command::AdvanceLogStart {
                tp: tp(t, 0),
                offset: 20,
                now_ms: NOW,
                leader_epoch: 1,
            },
        );
        let passed = apply_command(
            &mut state,
            &lanes_command(e("passed", 6, 9), vec![mark(zombie, 1, 4)], None),
        );
        assert_eq!(passed, CommandResponse::Entries(vec![None]));
        assert!(keys_of(&state, tp(t, 0)).is_empty());
        assert_eq!(state.incarnations[&zombie].indexed_through, vec![0, 4]);
        register(&mut state, taker, 1, 1);
        // The zombie's index write: its entry is stale, its mark ignored, its object not garbage
        // (the taker may still index it from the bucket).
        let response = apply_command(
            &mut state,
            &lanes_command(e("w3", 20, 23), vec![mark(zombie, 1, 5)], None),
        );
        assert!(matches!(
            response,
            CommandResponse::Entries(ref outcomes)
                if matches!(outcomes[0], Some(Rejection::StaleLeaderEpoch { .. }))
        ));
        assert_eq!(state.incarnations[&zombie].indexed_through, vec![0, 4]);
        assert!(!deleted_keys(&state).contains(&"w3"));
        assert!(rejected_invalid(&apply_command(
            &mut state,
            &lanes_command(Vec::new(), vec![mark(zombie, 2, 1)], None)
        )));
        assert!(rejected_invalid(&apply_command(
            &mut state,
            &lanes_command(Vec::new(), vec![mark(topic_id(99), 0, 1)], None)
        )));
    }

    #[test]
    fn a_seal_indexes_below_itself_once_and_only_for_a_dead_incarnation() {
        let mut state = MetadataState::default();
        let t = topic_id(1);
        create(&mut state, "t", t, 1);
        let (dead, taker) = (topic_id(10), topic_id(11));
        register(&mut state, dead, 1, 2);
        let seal = |seals: Vec<u64>| {
            Some(SealLanes {
                incarnation: dead,
                seals,
            })
        };
        assert!(rejected_invalid(&apply_command(
            &mut state,
            &lanes_command(Vec::new(), Vec::new(), seal(vec![1, 1]))
        )));
        register(&mut state, taker, 1, 1);
        for bad in [vec![1], vec![1, 1, 1], vec![0, 4]] {
            let before = state.clone();
            assert!(rejected_invalid(&apply_command(
                &mut state,
                &lanes_command(Vec::new(), Vec::new(), seal(bad))
            )));
            assert_eq!(state, before);
        }
        let tail = vec![entry(tp(t, 0), 2, chunk("tail", 0, 4))];
        let response = apply_command(
            &mut state,
            &lanes_command(tail, Vec::new(), seal(vec![3, 1])),
        );
        assert_eq!(response, CommandResponse::Entries(vec![None]));
        // The tail was written under older epochs: the current one starts after it.
        let pm = state.partition(tp(t, 0)).unwrap();
        assert_eq!(
            pm.epoch_starts.last().map(|e| (e.epoch, e.start_offset)),
            Some((2, 4))
        );
        assert_eq!(state.incarnations[&dead].indexed_through, vec![2, 0]);
        assert_eq!(state.incarnations[&dead].sealed, Some(vec![3, 1]));
        assert_eq!(keys_of(&state, tp(t, 0)), vec!["tail".to_owned()]);
        // A second taker reuses the seal; another seal is refused.
        assert!(matches!(
            apply_command(
                &mut state,
                &lanes_command(Vec::new(), Vec::new(), seal(vec![3, 1]))
            ),
            CommandResponse::Entries(_)
        ));
        assert!(rejected_invalid(&apply_command(
            &mut state,
            &lanes_command(Vec::new(), Vec::new(), seal(vec![4, 1]))
        )));
    }
}
