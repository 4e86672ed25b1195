//! OffsetCommit, OffsetFetch (single- and multi-group forms) and OffsetDelete. Committed offsets
//! are stored in metadata (group-committed by `crate::groups::offsets`), so they survive restarts
//! and are readable by whichever broker coordinates the group next.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use metadata::{
    Command, CommandResponse, CommittedOffset, MetadataState, OffsetCommitEntry, TopicPartition,
};

use super::topics::partition_of;
use crate::errors::ErrorCode;
use crate::groups::group::GroupState;
use crate::handlers::now_ms;
use crate::Broker;

/// Per topic (as named in the request): per partition, its outcome so far.
type CommitResults = Vec<(TopicName, Vec<(i32, Result<(), ErrorCode>)>)>;

/// Per topic: per partition, the committed offset if any.
type FetchedOffsets = Vec<(TopicName, Vec<(i32, Option<CommittedOffset>)>)>;

pub(super) async fn offset_commit(
    broker: &Broker,
    version: i16,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let group_error = if group_id.is_empty() {
        Some(ErrorCode::InvalidGroupId)
    } else {
        let member = request.member_id.as_str();
        let instance = request.group_instance_id.as_deref();
        let generation = request.generation_id_or_member_epoch;
        match broker.groups.with_existing(&group_id, |group| {
            group.validate_commit(member, instance, generation)
        }) {
            Some(result) => result.err(),
            // Kafka: a group it does not know accepts only "simple" commits (no generation);
            // a generation means a member of a group this coordinator never formed.
            None if generation < 0 => None,
            None => Some(ErrorCode::IllegalGeneration),
        }
    };
    let state = broker.meta.state();
    let now = now_ms();
    let max_metadata = broker.groups.config.offset_metadata_max_bytes;
    let mut commits = Vec::new();
    let mut topics: CommitResults = Vec::new();
    for topic in request.topics {
        let meta = state.topic_by_name(topic.name.as_str());
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let index = partition.partition_index;
            let metadata_len = partition.committed_metadata.as_ref().map_or(0, |m| m.len());
            let result = if let Some(error) = group_error {
                Err(error)
            } else if let Some(tp) = meta.and_then(|t| partition_of(t, index)) {
                if metadata_len > max_metadata {
                    Err(ErrorCode::OffsetMetadataTooLarge)
                } else if partition.committed_offset < 0 {
                    Err(ErrorCode::InvalidRequest)
                } else {
                    commits.push(OffsetCommitEntry {
                        group: group_id.clone(),
                        tp,
                        committed: CommittedOffset {
                            offset: partition.committed_offset,
                            leader_epoch: if version >= 6 {
                                partition.committed_leader_epoch
                            } else {
                                -1
                            },
                            metadata: partition
                                .committed_metadata
                                .map(|m| m.to_string())
                                .unwrap_or_default(),
                            commit_ms: now,
                        },
                    });
                    Ok(())
                }
            } else {
                Err(ErrorCode::UnknownTopicOrPartition)
            };
            partitions.push((index, result));
        }
        topics.push((topic.name, partitions));
    }
    let stored = broker.groups.committer.commit(commits).await;
    let topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, result)| {
                    let error = match result.and(stored) {
                        Ok(()) => ErrorCode::None,
                        Err(error) => error,
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(error.code())
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// The committed offsets of one group for the requested partitions (`None`: all it has).
fn fetch_group(
    state: &MetadataState,
    group_id: &str,
    requested: Option<Vec<(TopicName, Vec<i32>)>>,
) -> FetchedOffsets {
    match requested {
        Some(topics) => topics
            .into_iter()
            .map(|(name, partitions)| {
                let topic = state.topic_by_name(name.as_str());
                let partitions = partitions
                    .into_iter()
                    .map(|index| {
                        let committed = topic
                            .and_then(|t| partition_of(t, index))
                            .and_then(|tp| state.committed_offset(group_id, tp))
                            .cloned();
                        (index, committed)
                    })
                    .collect();
                (name, partitions)
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<String, Vec<(i32, Option<CommittedOffset>)>> =
                BTreeMap::new();
            if let Some(offsets) = state.group_offsets.get(group_id) {
                for (tp, committed) in offsets.iter() {
                    if let Some(topic) = state.topics.get(&tp.topic_id) {
                        by_topic
                            .entry(topic.name.clone())
                            .or_default()
                            .push((tp.partition, Some(committed.clone())));
                    }
                }
            }
            by_topic
                .into_iter()
                .map(|(name, partitions)| (TopicName(StrBytes::from_string(name)), partitions))
                .collect()
        }
    }
}

fn metadata_text(committed: &Option<CommittedOffset>) -> Option<StrBytes> {
    Some(StrBytes::from_string(
        committed
            .as_ref()
            .map(|c| c.metadata.clone())
            .unwrap_or_default(),
    ))
}

pub(super) async fn offset_fetch(
    broker: &Broker,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let state = broker.meta.state();
    if version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|group| {
                let id = group.group_id.0.to_string();
                let requested = group.topics.map(|topics| {
                    topics
                        .into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let response = OffsetFetchResponseGroup::default().with_group_id(group.group_id);
                if id.is_empty() {
                    return response.with_error_code(ErrorCode::InvalidGroupId.code());
                }
                let topics = fetch_group(&state, &id, requested)
                    .into_iter()
                    .map(|(name, partitions)| {
                        let partitions = partitions
                            .into_iter()
                            .map(|(index, committed)| {
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(index)
                                    .with_committed_offset(
                                        committed.as_ref().map_or(-1, |c| c.offset),
                                    )
                                    .with_committed_leader_epoch(
                                        committed.as_ref().map_or(-1, |c| c.leader_epoch),
                                    )
                                    .with_metadata(metadata_text(&committed))
                            })
                            .collect();
                        OffsetFetchResponseTopics::default()
                            .with_name(name)
                            .with_partitions(partitions)
                    })
                    .collect();
                response.with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let id = request.group_id.0.to_string();
    if id.is_empty() {
        let response = OffsetFetchResponse::default();
        return if version >= 2 {
            response.with_error_code(ErrorCode::InvalidGroupId.code())
        } else {
            response
        };
    }
    let requested = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let topics = fetch_group(&state, &id, requested)
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, committed)| {
                    let partition = OffsetFetchResponsePartition::default()
                        .with_partition_index(index)
                        .with_committed_offset(committed.as_ref().map_or(-1, |c| c.offset))
                        .with_metadata(metadata_text(&committed));
                    if version >= 5 {
                        partition.with_committed_leader_epoch(
                            committed.as_ref().map_or(-1, |c| c.leader_epoch),
                        )
                    } else {
                        partition
                    }
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

/// Topics the group's members subscribe to (from their consumer-protocol metadata).
fn subscribed_topics(broker: &Broker, group_id: &str) -> BTreeSet<String> {
    broker
        .groups
        .with_existing(group_id, |group| {
            let protocol = group.protocol_name.clone().unwrap_or_default();
            if group.state == GroupState::Empty
                || group.protocol_type.as_deref() != Some("consumer")
            {
                return BTreeSet::new();
            }
            group
                .members
                .values()
                .filter_map(|member| decode_subscription(member.metadata_for(&protocol)))
                .flatten()
                .collect()
        })
        .unwrap_or_default()
}

fn decode_subscription(mut metadata: Bytes) -> Option<Vec<String>> {
    if metadata.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([metadata[0], metadata[1]]);
    let _ = metadata.split_to(2);
    // Newer clients may send a newer version; its prefix is compatible with the newest we know.
    let subscription =
        ConsumerProtocolSubscription::decode(&mut metadata, version.clamp(0, 3)).ok()?;
    Some(subscription.topics.iter().map(|t| t.to_string()).collect())
}

pub(super) async fn offset_delete(
    broker: &Broker,
    _version: i16,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let id = request.group_id.0.to_string();
    let state = broker.meta.state();
    let known =
        broker.groups.with_existing(&id, |_| ()).is_some() || state.group_offsets.contains_key(&id);
    if id.is_empty() {
        return OffsetDeleteResponse::default().with_error_code(ErrorCode::InvalidGroupId.code());
    }
    if !known {
        return OffsetDeleteResponse::default().with_error_code(ErrorCode::GroupIdNotFound.code());
    }
    let subscribed = subscribed_topics(broker, &id);
    let mut delete: Vec<TopicPartition> = Vec::new();
    let mut topics: Vec<(TopicName, Vec<(i32, ErrorCode)>)> = Vec::new();
    for topic in request.topics {
        let meta = state.topic_by_name(topic.name.as_str());
        let is_subscribed = subscribed.contains(topic.name.as_str());
        let partitions = topic
            .partitions
            .into_iter()
            .map(|p| {
                let index = p.partition_index;
                let error = match meta.and_then(|t| partition_of(t, index)) {
                    None => ErrorCode::UnknownTopicOrPartition,
                    Some(_) if is_subscribed => ErrorCode::GroupSubscribedToTopic,
                    Some(tp) => {
                        delete.push(tp);
                        ErrorCode::None
                    }
                };
                (index, error)
            })
            .collect();
        topics.push((topic.name, partitions));
    }
    let mut top_error = ErrorCode::None;
    if !delete.is_empty() {
        match broker
            .meta
            .propose(Command::DeleteGroupOffsets {
                group: id,
                partitions: delete,
            })
            .await
        {
            Ok(CommandResponse::Rejected(_)) | Err(_) => {
                top_error = ErrorCode::CoordinatorNotAvailable
            }
            Ok(_) => {}
        }
    }
    if top_error != ErrorCode::None {
        return OffsetDeleteResponse::default().with_error_code(top_error.code());
    }
    let topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            OffsetDeleteResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, error)| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(index)
                                .with_error_code(error.code())
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
