//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DeleteRecords.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use metadata::{Command, CommandResponse};

use super::now_ms;
use super::topics::{create_topic, partition_of, resolve, TopicError, MAX_PARTITIONS};
use crate::configs::{effective, TOPIC_CONFIGS};
use crate::errors::{rejection_code, storage_error_code, ErrorCode};
use crate::Broker;

/// DescribeConfigs/CreateTopics config source codes.
pub(super) const SOURCE_DYNAMIC_TOPIC: i8 = 1;
pub(super) const SOURCE_DEFAULT: i8 = 5;

fn message(text: String) -> Option<StrBytes> {
    Some(StrBytes::from_string(text))
}

pub(super) async fn create_topics(
    broker: &Broker,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    let mut seen = std::collections::HashSet::new();
    for topic in request.topics {
        let name = topic.name.as_str().to_string();
        let result = CreatableTopicResult::default().with_name(topic.name.clone());
        if !seen.insert(name.clone()) {
            results.push(
                result
                    .with_error_code(ErrorCode::InvalidRequest.code())
                    .with_error_message(message(format!(
                        "topic '{name}' appears twice in the request"
                    ))),
            );
            continue;
        }
        let partitions = if !topic.assignments.is_empty() {
            if topic.num_partitions != -1 || topic.replication_factor != -1 {
                results.push(
                    result
                        .with_error_code(ErrorCode::InvalidRequest.code())
                        .with_error_message(message(
                        "replica assignments and partition count/replication factor are exclusive"
                            .into(),
                    )),
                );
                continue;
            }
            i64::try_from(topic.assignments.len()).unwrap_or(i64::MAX)
        } else if topic.num_partitions == -1 {
            i64::from(broker.config.default_partitions)
        } else {
            i64::from(topic.num_partitions)
        };
        // Replication is the object store's job: any factor is accepted and reported as 1 replica.
        if topic.replication_factor == 0 || topic.replication_factor < -1 {
            results.push(
                result
                    .with_error_code(ErrorCode::InvalidReplicationFactor.code())
                    .with_error_message(message(
                        "replication factor must be -1 or at least 1".into(),
                    )),
            );
            continue;
        }
        let Ok(partitions) = u32::try_from(partitions) else {
            results.push(
                result
                    .with_error_code(ErrorCode::InvalidPartitions.code())
                    .with_error_message(message(format!("invalid partition count {partitions}"))),
            );
            continue;
        };
        let mut configs = BTreeMap::new();
        for config in &topic.configs {
            if let Some(value) = &config.value {
                configs.insert(config.name.as_str().to_string(), value.as_str().to_string());
            }
        }
        match create_topic(
            broker,
            &name,
            partitions,
            configs.clone(),
            request.validate_only,
        )
        .await
        {
            Ok((topic_id, _)) => {
                let mut result = result;
                if version >= 7 && !request.validate_only {
                    result = result.with_topic_id(topic_id);
                }
                if version >= 5 {
                    result = result
                        .with_num_partitions(i32::try_from(partitions).unwrap_or(i32::MAX))
                        .with_replication_factor(1)
                        .with_configs(Some(describe_created(&configs)));
                }
                results.push(result);
            }
            Err(TopicError {
                code,
                message: text,
            }) => {
                results.push(
                    result
                        .with_error_code(code.code())
                        .with_error_message(message(text)),
                );
            }
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn describe_created(configs: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let explicit = configs.contains_key(def.name);
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_static_str(def.name))
                .with_value(
                    effective(configs, def.name).map(|v| StrBytes::from_string(v.to_string())),
                )
                .with_config_source(if explicit {
                    SOURCE_DYNAMIC_TOPIC
                } else {
                    SOURCE_DEFAULT
                })
        })
        .collect()
}

pub(super) async fn delete_topics(
    broker: &Broker,
    version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // v6 carries (name | id) pairs; older versions a list of names.
    let wanted: Vec<(Option<TopicName>, uuid::Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, topic_id) in wanted {
        let state = broker.meta.state();
        let topic = resolve(&state, name.as_ref().map(|n| n.as_str()), topic_id);
        let response = DeletableTopicResult::default()
            .with_name(name.clone())
            .with_topic_id(topic_id);
        let Some(topic) = topic else {
            let code = if topic_id.is_nil() {
                ErrorCode::UnknownTopicOrPartition
            } else {
                ErrorCode::UnknownTopicId
            };
            responses.push(response.with_error_code(code.code()));
            continue;
        };
        let response = response
            .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
            .with_topic_id(topic.id);
        match broker
            .meta
            .propose(Command::DeleteTopic {
                topic_id: topic.id,
                now_ms: now_ms(),
            })
            .await
        {
            Ok(CommandResponse::Rejected(rejection)) => responses.push(
                response
                    .with_error_code(rejection_code(&rejection).code())
                    .with_error_message(message(rejection.to_string())),
            ),
            Ok(_) => {
                broker.store.drop_topic(topic.id);
                responses.push(response);
            }
            Err(error) => responses.push(
                response
                    .with_error_code(ErrorCode::RequestTimedOut.code())
                    .with_error_message(message(error.to_string())),
            ),
        }
    }
    if version < 6 {
        responses
            .iter_mut()
            .for_each(|r| r.topic_id = uuid::Uuid::nil());
    }
    if version < 5 {
        responses.iter_mut().for_each(|r| r.error_message = None);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(super) async fn create_partitions(
    broker: &Broker,
    _version: i16,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        let state = broker.meta.state();
        let Some(meta) = state.topic_by_name(topic.name.as_str()) else {
            results.push(result.with_error_code(ErrorCode::UnknownTopicOrPartition.code()));
            continue;
        };
        let current = meta.partitions.len();
        let Ok(total) = u32::try_from(topic.count) else {
            results.push(
                result
                    .with_error_code(ErrorCode::InvalidPartitions.code())
                    .with_error_message(message(format!(
                        "invalid partition count {}",
                        topic.count
                    ))),
            );
            continue;
        };
        if (total as usize) <= current || total > MAX_PARTITIONS {
            results.push(result.with_error_code(ErrorCode::InvalidPartitions.code()).with_error_message(
                message(format!(
                    "topic has {current} partitions; the new count must be larger (and at most {MAX_PARTITIONS}), got {total}"
                )),
            ));
            continue;
        }
        if let Some(assignments) = topic.assignments.as_ref().filter(|a| !a.is_empty()) {
            if assignments.len() != total as usize - current {
                results.push(
                    result
                        .with_error_code(ErrorCode::InvalidReplicaAssignment.code())
                        .with_error_message(message(
                            "one assignment is needed per new partition".into(),
                        )),
                );
                continue;
            }
        }
        if request.validate_only {
            results.push(result);
            continue;
        }
        let command = Command::CreatePartitions {
            topic_id: meta.id,
            total,
            owner: broker.config.node_id,
        };
        results.push(match broker.meta.propose(command).await {
            Ok(CommandResponse::Rejected(rejection)) => result
                .with_error_code(rejection_code(&rejection).code())
                .with_error_message(message(rejection.to_string())),
            Ok(_) => result,
            Err(error) => result
                .with_error_code(ErrorCode::RequestTimedOut.code())
                .with_error_message(message(error.to_string())),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

pub(super) async fn delete_records(
    broker: &Broker,
    _version: i16,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let state = broker.meta.state();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let meta = state.topic_by_name(topic.name.as_str());
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let result = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let Some(tp) = meta.and_then(|m| partition_of(m, p.partition_index)) else {
                partitions.push(result.with_error_code(ErrorCode::UnknownTopicOrPartition.code()));
                continue;
            };
            if super::ownership::check_owned(broker, &state, tp).is_err() {
                partitions.push(result.with_error_code(ErrorCode::NotLeaderOrFollower.code()));
                continue;
            }
            let offsets = match broker.store.offsets(tp) {
                Ok(offsets) => offsets,
                Err(e) => {
                    partitions.push(result.with_error_code(storage_error_code(&e).code()));
                    continue;
                }
            };
            // -1 means "up to the high watermark"; anything beyond it is out of range.
            let target = if p.offset == -1 {
                offsets.high_watermark
            } else {
                p.offset
            };
            if target < 0 || target > offsets.high_watermark {
                partitions.push(result.with_error_code(ErrorCode::OffsetOutOfRange.code()));
                continue;
            }
            partitions.push(match broker.store.delete_records(tp, target).await {
                Ok(low_watermark) => result.with_low_watermark(low_watermark),
                Err(e) => result.with_error_code(storage_error_code(&e).code()),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
