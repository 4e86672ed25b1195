//! Metadata: brokers, topics with ids, partitions with `leader = replicas = isr = [owner]`, and
//! topic auto-creation when both the request and `auto.create.topics.enable` allow it.

use std::collections::BTreeMap;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use metadata::{MetadataState, TopicMeta};

use super::topics::create_topic;
use crate::errors::ErrorCode;
use crate::Broker;

/// Kafka's "authorized operations not requested" sentinel.
const OPERATIONS_OMITTED: i32 = i32::MIN;

pub(super) async fn handle(
    broker: &Broker,
    version: i16,
    request: MetadataRequest,
) -> MetadataResponse {
    // v0: an empty list means "all topics"; v1+: null means all, empty means none.
    let requested = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && version == 0 => None,
        Some(topics) => Some(topics),
    };
    // Before v4 there is no flag and auto-creation is governed by the broker setting alone.
    let allow_auto_create =
        broker.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);

    let mut state = broker.meta.state();
    let mut topics = Vec::new();
    match requested {
        None => {
            topics.extend(state.topics.values().map(|t| topic_response(version, t)));
        }
        Some(requested) => {
            for wanted in requested {
                let name = wanted.name.as_ref().map(|n| n.as_str().to_string());
                let found = if !wanted.topic_id.is_nil() {
                    state.topics.get(&wanted.topic_id).map(|t| (**t).clone())
                } else {
                    name.as_deref()
                        .and_then(|n| state.topic_by_name(n))
                        .cloned()
                };
                if let Some(topic) = found {
                    topics.push(topic_response(version, &topic));
                    continue;
                }
                let Some(name) = name.filter(|_| wanted.topic_id.is_nil()) else {
                    topics.push(
                        MetadataResponseTopic::default()
                            .with_error_code(ErrorCode::UnknownTopicId.code())
                            .with_topic_id(if version >= 10 {
                                wanted.topic_id
                            } else {
                                uuid::Uuid::nil()
                            })
                            .with_topic_authorized_operations(OPERATIONS_OMITTED),
                    );
                    continue;
                };
                if !allow_auto_create {
                    topics.push(error_topic(&name, ErrorCode::UnknownTopicOrPartition));
                    continue;
                }
                let partitions = broker.config.default_partitions;
                match create_topic(broker, &name, partitions, BTreeMap::new(), false).await {
                    Ok((_, new_state)) => {
                        state = new_state;
                        match state.topic_by_name(&name) {
                            Some(topic) => topics.push(topic_response(version, topic)),
                            None => topics.push(error_topic(&name, ErrorCode::LeaderNotAvailable)),
                        }
                    }
                    // Raced with another creator: the topic exists now.
                    Err(e) if e.code == ErrorCode::TopicAlreadyExists => {
                        state = broker.meta.state();
                        match state.topic_by_name(&name) {
                            Some(topic) => topics.push(topic_response(version, topic)),
                            None => topics.push(error_topic(&name, ErrorCode::LeaderNotAvailable)),
                        }
                    }
                    Err(e) => topics.push(error_topic(&name, e.code)),
                }
            }
        }
    }

    MetadataResponse::default()
        .with_brokers(brokers(&state))
        .with_cluster_id(Some(StrBytes::from_string(state.cluster_id.clone())))
        .with_controller_id(BrokerId(node_id(broker.config.node_id)))
        .with_topics(topics)
        .with_cluster_authorized_operations(OPERATIONS_OMITTED)
}

fn node_id(id: u64) -> i32 {
    i32::try_from(id).unwrap_or(i32::MAX)
}

pub(super) fn brokers(state: &MetadataState) -> Vec<MetadataResponseBroker> {
    state
        .brokers
        .values()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(node_id(b.node_id)))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(i32::from(b.port))
        })
        .collect()
}

fn error_topic(name: &str, code: ErrorCode) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code.code())
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_topic_authorized_operations(OPERATIONS_OMITTED)
}

fn topic_response(version: i16, topic: &TopicMeta) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let owner = BrokerId(node_id(p.owner));
            MetadataResponsePartition::default()
                .with_partition_index(i32::try_from(index).unwrap_or(i32::MAX))
                .with_leader_id(owner)
                .with_leader_epoch(if version >= 7 { p.leader_epoch } else { -1 })
                .with_replica_nodes(vec![owner])
                .with_isr_nodes(vec![owner])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(if version >= 10 {
            topic.id
        } else {
            uuid::Uuid::nil()
        })
        .with_partitions(partitions)
        .with_topic_authorized_operations(OPERATIONS_OMITTED)
}
