//! One module per Kafka API. Each handler takes the decoded request and returns the response body;
//! this module decodes, routes and encodes.

mod admin;
mod cluster;
mod configs;
mod fetch;
mod groups;
mod list_offsets;
mod metadata;
mod offsets;
mod ownership;
mod produce;
mod producer_id;
mod topics;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind};

use crate::dispatch::{api_versions_body, encode_response, DispatchError};
use crate::errors::ErrorCode;
use crate::legacy;
use crate::Broker;

/// Runs the handler of a decoded request and encodes its answer (`None`: no answer, acks=0).
pub(crate) async fn handle(
    broker: &Broker,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &str,
    // The peer as Kafka prints it ("/127.0.0.1"), empty when unknown.
    client_host: &str,
    body: Option<Box<RequestKind>>,
    // Dropped when this returns, unless a Produce tells it earlier (see `dispatch::handle_frame_ordered`).
    placed: tokio::sync::oneshot::Sender<()>,
) -> Result<Option<Bytes>, DispatchError> {
    macro_rules! answer {
        ($response:expr) => {
            encode_response(api, version, correlation_id, &$response).map(Some)
        };
    }
    let Some(body) = body else {
        return answer!(api_versions_body(ErrorCode::None));
    };
    match *body {
        RequestKind::ApiVersions(_) => answer!(api_versions_body(ErrorCode::None)),
        RequestKind::Produce(request) => {
            let acks = request.acks;
            let response = produce::handle(broker, version, request, placed).await;
            if acks == 0 {
                return Ok(None);
            }
            answer!(response)
        }
        RequestKind::Fetch(r) => answer!(fetch::handle(broker, version, r).await),
        RequestKind::ListOffsets(r) => answer!(list_offsets::handle(broker, version, r).await),
        RequestKind::Metadata(r) => answer!(metadata::handle(broker, version, r).await),
        RequestKind::CreateTopics(r) => answer!(admin::create_topics(broker, version, r).await),
        RequestKind::DeleteTopics(r) => answer!(admin::delete_topics(broker, version, r).await),
        RequestKind::CreatePartitions(r) => {
            answer!(admin::create_partitions(broker, version, r).await)
        }
        RequestKind::DeleteRecords(r) => answer!(admin::delete_records(broker, version, r).await),
        RequestKind::DescribeConfigs(r) if version == legacy::DESCRIBE_CONFIGS_V0 => {
            let as_version = legacy::DESCRIBE_CONFIGS_V0_HANDLED_AS;
            let response = configs::describe_configs(broker, as_version, r).await;
            Ok(Some(legacy::describe_configs_v0_response(
                correlation_id,
                &response,
            )))
        }
        RequestKind::DescribeConfigs(r) => {
            answer!(configs::describe_configs(broker, version, r).await)
        }
        RequestKind::AlterConfigs(r) => answer!(configs::alter_configs(broker, version, r).await),
        RequestKind::IncrementalAlterConfigs(r) => {
            answer!(configs::incremental_alter_configs(broker, version, r).await)
        }
        RequestKind::DescribeCluster(r) => {
            answer!(cluster::describe_cluster(broker, version, r).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            answer!(list_offsets::offset_for_leader_epoch(broker, version, r).await)
        }
        RequestKind::InitProducerId(r) => {
            answer!(producer_id::init_producer_id(broker, version, r).await)
        }
        RequestKind::FindCoordinator(r) => {
            answer!(groups::find_coordinator(broker, version, r).await)
        }
        RequestKind::JoinGroup(r) => {
            answer!(groups::join_group(broker, version, client_id, client_host, r).await)
        }
        RequestKind::SyncGroup(r) => answer!(groups::sync_group(broker, version, r).await),
        RequestKind::Heartbeat(r) => answer!(groups::heartbeat(broker, version, r).await),
        RequestKind::LeaveGroup(r) => answer!(groups::leave_group(broker, version, r).await),
        RequestKind::ListGroups(r) => answer!(groups::list_groups(broker, version, r).await),
        RequestKind::DescribeGroups(r) => {
            answer!(groups::describe_groups(broker, version, r).await)
        }
        RequestKind::DeleteGroups(r) => answer!(groups::delete_groups(broker, version, r).await),
        RequestKind::OffsetCommit(r) => answer!(offsets::offset_commit(broker, version, r).await),
        RequestKind::OffsetFetch(r) => answer!(offsets::offset_fetch(broker, version, r).await),
        RequestKind::OffsetDelete(r) => answer!(offsets::offset_delete(broker, version, r).await),
        _ => Err(DispatchError::Decode {
            api,
            version,
            reason: "api is listed as supported but has no handler".into(),
        }),
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
