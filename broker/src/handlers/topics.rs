//! Topic lookup and creation shared by Metadata (auto-create), CreateTopics, Produce and Fetch.

use std::collections::BTreeMap;
use std::sync::Arc;

use metadata::{Command, CommandResponse, MetadataState, TopicMeta, TopicPartition};
use uuid::Uuid;

use crate::configs::{validate_topic_configs, validate_topic_name, without_ignored};
use crate::errors::{rejection_code, ErrorCode};
use crate::handlers::now_ms;
use crate::Broker;

/// Upper bound on partitions per topic (protects metadata and memory from typos like 1000000).
pub(crate) const MAX_PARTITIONS: u32 = 10_000;

/// An error for one topic with the message Kafka clients show to users.
#[derive(Debug, Clone)]
pub(crate) struct TopicError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl TopicError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TopicError {
            code,
            message: message.into(),
        }
    }
}

/// Looks a topic up by name, or by id when the request carries ids (newer API versions).
pub(crate) fn resolve<'a>(
    state: &'a MetadataState,
    name: Option<&str>,
    topic_id: Uuid,
) -> Option<&'a TopicMeta> {
    if !topic_id.is_nil() {
        return state.topics.get(&topic_id).map(std::sync::Arc::as_ref);
    }
    name.and_then(|name| state.topic_by_name(name))
}

/// Partition `index` of `topic`, if it exists.
pub(crate) fn partition_of(topic: &TopicMeta, index: i32) -> Option<TopicPartition> {
    let exists = usize::try_from(index).is_ok_and(|i| i < topic.partitions.len());
    exists.then_some(TopicPartition {
        topic_id: topic.id,
        partition: index,
    })
}

/// Validates and (unless `validate_only`) creates a topic; returns the resulting metadata state.
pub(crate) async fn create_topic(
    broker: &Broker,
    name: &str,
    partitions: u32,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(Uuid, Arc<MetadataState>), TopicError> {
    validate_topic_name(name).map_err(|m| TopicError::new(ErrorCode::InvalidTopicException, m))?;
    if partitions == 0 || partitions > MAX_PARTITIONS {
        return Err(TopicError::new(
            ErrorCode::InvalidPartitions,
            format!(
                "number of partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}"
            ),
        ));
    }
    let configs = without_ignored(configs);
    validate_topic_configs(&configs).map_err(|m| TopicError::new(ErrorCode::InvalidConfig, m))?;
    let state = broker.meta.state();
    if let Some(existing) = state.topic_by_name(name) {
        return Err(TopicError::new(
            ErrorCode::TopicAlreadyExists,
            format!("topic '{}' already exists", existing.name),
        ));
    }
    let topic_id = Uuid::new_v4();
    if validate_only {
        return Ok((topic_id, state));
    }
    let command = Command::CreateTopic {
        name: name.to_string(),
        topic_id,
        partitions,
        configs,
        owner: broker.config.node_id,
        now_ms: now_ms(),
    };
    match broker.meta.propose(command).await {
        Ok(CommandResponse::Rejected(rejection)) => Err(TopicError::new(
            rejection_code(&rejection),
            rejection.to_string(),
        )),
        Ok(_) => Ok((topic_id, broker.meta.state())),
        Err(error) => Err(TopicError::new(
            ErrorCode::RequestTimedOut,
            error.to_string(),
        )),
    }
}
