//! DescribeConfigs, AlterConfigs (replace all) and IncrementalAlterConfigs (SET/DELETE/APPEND/SUBTRACT)
//! for topic configs; broker configs are described read-only.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use metadata::{Command, CommandResponse};

use super::admin::{SOURCE_DEFAULT, SOURCE_DYNAMIC_TOPIC};
use crate::configs::{
    effective, is_ignored_topic_config, topic_config_def, validate_topic_configs, without_ignored,
    TOPIC_CONFIGS,
};
use crate::errors::{rejection_code, ErrorCode};
use crate::Broker;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_STATIC_BROKER: i8 = 4;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub(super) async fn describe_configs(
    broker: &Broker,
    version: i16,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let state = broker.meta.state();
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let wanted = |name: &str| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.is_empty() || keys.iter().any(|k| k.as_str() == name))
            };
            match resource.resource_type {
                RESOURCE_TOPIC => {
                    let Some(topic) = state.topic_by_name(resource.resource_name.as_str()) else {
                        return result
                            .with_error_code(ErrorCode::UnknownTopicOrPartition.code())
                            .with_error_message(Some(text("unknown topic")));
                    };
                    let configs = TOPIC_CONFIGS
                        .iter()
                        .filter(|def| wanted(def.name))
                        .map(|def| {
                            let explicit = topic.configs.get(def.name);
                            let source = if explicit.is_some() {
                                SOURCE_DYNAMIC_TOPIC
                            } else {
                                SOURCE_DEFAULT
                            };
                            let value = effective(&topic.configs, def.name).unwrap_or_default();
                            let mut entry = DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_static_str(def.name))
                                .with_value(Some(text(value)))
                                .with_config_source(source);
                            if version >= 3 {
                                entry = entry.with_config_type(def.config_type as i8);
                            }
                            if version >= 3 {
                                // Null unless asked for, like Kafka (the field's default is "").
                                entry.documentation = request
                                    .include_documentation
                                    .then(|| StrBytes::from_static_str(def.doc));
                            }
                            if request.include_synonyms {
                                let mut synonyms = Vec::new();
                                if let Some(v) = explicit {
                                    synonyms.push(
                                        DescribeConfigsSynonym::default()
                                            .with_name(StrBytes::from_static_str(def.name))
                                            .with_value(Some(text(v.clone())))
                                            .with_source(SOURCE_DYNAMIC_TOPIC),
                                    );
                                }
                                synonyms.push(
                                    DescribeConfigsSynonym::default()
                                        .with_name(StrBytes::from_static_str(def.name))
                                        .with_value(Some(StrBytes::from_static_str(def.default)))
                                        .with_source(SOURCE_DEFAULT),
                                );
                                entry = entry.with_synonyms(synonyms);
                            }
                            entry
                        })
                        .collect();
                    result.with_configs(configs)
                }
                RESOURCE_BROKER => {
                    let c = &broker.config;
                    let entries = [
                        (
                            "auto.create.topics.enable",
                            c.auto_create_topics.to_string(),
                        ),
                        ("num.partitions", c.default_partitions.to_string()),
                        ("socket.request.max.bytes", c.max_request_bytes.to_string()),
                        ("broker.id", c.node_id.to_string()),
                    ];
                    let configs = entries
                        .into_iter()
                        .filter(|(name, _)| wanted(name))
                        .map(|(name, value)| {
                            DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_static_str(name))
                                .with_value(Some(text(value)))
                                .with_read_only(true)
                                .with_config_source(SOURCE_STATIC_BROKER)
                        })
                        .collect();
                    result.with_configs(configs)
                }
                other => result
                    .with_error_code(ErrorCode::InvalidRequest.code())
                    .with_error_message(Some(text(format!(
                        "resource type {other} is not supported"
                    )))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Applies a new full set of explicit configs to a topic (validated first).
async fn apply_topic_configs(
    broker: &Broker,
    topic_name: &str,
    change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String>,
    validate_only: bool,
) -> Result<(), (ErrorCode, String)> {
    let state = broker.meta.state();
    let topic = state.topic_by_name(topic_name).ok_or((
        ErrorCode::UnknownTopicOrPartition,
        format!("unknown topic '{topic_name}'"),
    ))?;
    let configs =
        without_ignored(change(&topic.configs).map_err(|m| (ErrorCode::InvalidConfig, m))?);
    validate_topic_configs(&configs).map_err(|m| (ErrorCode::InvalidConfig, m))?;
    if validate_only {
        return Ok(());
    }
    match broker
        .meta
        .propose(Command::SetTopicConfigs {
            topic_id: topic.id,
            configs,
        })
        .await
    {
        Ok(CommandResponse::Rejected(r)) => Err((rejection_code(&r), r.to_string())),
        Ok(_) => Ok(()),
        Err(e) => Err((ErrorCode::RequestTimedOut, e.to_string())),
    }
}

/// The error code and message fields of a per-resource answer.
fn error_parts(outcome: Result<(), (ErrorCode, String)>) -> (ErrorCode, Option<StrBytes>) {
    match outcome {
        Ok(()) => (ErrorCode::None, None),
        Err((code, message)) => (code, Some(text(message))),
    }
}

fn resource_check(resource_type: i8) -> Result<(), (ErrorCode, String)> {
    match resource_type {
        RESOURCE_TOPIC => Ok(()),
        RESOURCE_BROKER => Err((
            ErrorCode::InvalidRequest,
            "broker configs are static in Sluice".into(),
        )),
        other => Err((
            ErrorCode::InvalidRequest,
            format!("resource type {other} is not supported"),
        )),
    }
}

pub(super) async fn alter_configs(
    broker: &Broker,
    _version: i16,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let mut outcome = resource_check(resource.resource_type);
        if outcome.is_ok() {
            let new: BTreeMap<String, String> = resource
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.as_str().to_string(), v.as_str().to_string()))
                })
                .collect();
            outcome = apply_topic_configs(
                broker,
                resource.resource_name.as_str(),
                |_| Ok(new),
                request.validate_only,
            )
            .await;
        }
        let (code, message) = error_parts(outcome);
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_error_code(code.code())
                .with_error_message(message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub(super) async fn incremental_alter_configs(
    broker: &Broker,
    _version: i16,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let mut outcome = resource_check(resource.resource_type);
        if outcome.is_ok() {
            let ops: Vec<(String, i8, Option<String>)> = resource
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.as_str().to_string(),
                        c.config_operation,
                        c.value.as_ref().map(|v| v.as_str().to_string()),
                    )
                })
                .collect();
            outcome = apply_topic_configs(
                broker,
                resource.resource_name.as_str(),
                |current| apply_ops(current, &ops),
                request.validate_only,
            )
            .await;
        }
        let (code, message) = error_parts(outcome);
        responses.push(
            IncrementalResult::default()
                .with_error_code(code.code())
                .with_error_message(message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// Applies incremental operations to a copy of the explicit configs.
fn apply_ops(
    current: &BTreeMap<String, String>,
    ops: &[(String, i8, Option<String>)],
) -> Result<BTreeMap<String, String>, String> {
    let mut configs = current.clone();
    for (name, op, value) in ops {
        if is_ignored_topic_config(name) {
            continue;
        }
        let def = topic_config_def(name).ok_or_else(|| format!("unknown topic config '{name}'"))?;
        match *op {
            OP_SET => {
                let value = value
                    .clone()
                    .ok_or_else(|| format!("SET of {name} needs a value"))?;
                configs.insert(name.clone(), value);
            }
            OP_DELETE => {
                configs.remove(name);
            }
            OP_APPEND | OP_SUBTRACT => {
                if def.config_type != crate::configs::ConfigType::List {
                    return Err(format!(
                        "{name} is not a list config; APPEND/SUBTRACT do not apply"
                    ));
                }
                let mut items: Vec<String> = effective(&configs, name)
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                let changes = value
                    .as_deref()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty());
                for item in changes {
                    if *op == OP_APPEND {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|i| i != item);
                    }
                }
                configs.insert(name.clone(), items.join(","));
            }
            other => return Err(format!("unknown config operation {other}")),
        }
    }
    Ok(configs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_ops() {
        let current = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        let ops = vec![
            ("retention.ms".to_string(), OP_DELETE, None),
            (
                "max.message.bytes".to_string(),
                OP_SET,
                Some("2048".to_string()),
            ),
        ];
        let new = apply_ops(&current, &ops).unwrap();
        assert_eq!(new.get("retention.ms"), None);
        assert_eq!(
            new.get("max.message.bytes").map(String::as_str),
            Some("2048")
        );

        let append = vec![(
            "cleanup.policy".to_string(),
            OP_APPEND,
            Some("compact".to_string()),
        )];
        let appended = apply_ops(&BTreeMap::new(), &append).unwrap();
        assert_eq!(
            appended.get("cleanup.policy").map(String::as_str),
            Some("delete,compact")
        );
        assert!(
            validate_topic_configs(&appended).is_err(),
            "compact must stay refused"
        );

        let bad = vec![("retention.ms".to_string(), OP_APPEND, Some("5".to_string()))];
        assert!(apply_ops(&BTreeMap::new(), &bad).is_err());
        let unknown = vec![("nope".to_string(), OP_SET, Some("5".to_string()))];
        assert!(apply_ops(&BTreeMap::new(), &unknown).is_err());
    }
}
