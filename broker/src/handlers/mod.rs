//! One module per Kafka API. Each handler takes the decoded request and returns the response body;
//! this module decodes, routes and encodes.

mod admin;
mod cluster;
mod configs;
mod fetch;
mod list_offsets;
mod metadata;
mod produce;
mod producer_id;
mod topics;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};

use crate::dispatch::{api_versions_body, decode_body, encode_response, DispatchError};
use crate::errors::ErrorCode;
use crate::Broker;

/// Decodes the body of `api`, runs its handler, encodes the answer.
pub(crate) async fn handle(
    broker: &Broker,
    api: ApiKey,
    version: i16,
    header: RequestHeader,
    mut body: Bytes,
) -> Result<Option<Bytes>, DispatchError> {
    let correlation_id = header.correlation_id;
    macro_rules! call {
        ($handler:expr) => {{
            let request = decode_body(api, version, &mut body)?;
            let response = $handler(broker, version, request).await;
            encode_response(api, version, correlation_id, &response).map(Some)
        }};
    }
    match api {
        ApiKey::ApiVersions => {
            // The body (client software name/version) is informational; a body that doesn't decode
            // still gets the version list, as Kafka does, so the client can pick a version.
            let _ = decode_body::<kafka_protocol::messages::ApiVersionsRequest>(
                api, version, &mut body,
            );
            encode_response(
                api,
                version,
                correlation_id,
                &api_versions_body(ErrorCode::None),
            )
            .map(Some)
        }
        ApiKey::Produce => {
            let request: kafka_protocol::messages::ProduceRequest =
                decode_body(api, version, &mut body)?;
            let acks = request.acks;
            let response = produce::handle(broker, version, request).await;
            if acks == 0 {
                return Ok(None);
            }
            encode_response(api, version, correlation_id, &response).map(Some)
        }
        ApiKey::Fetch => call!(fetch::handle),
        ApiKey::ListOffsets => call!(list_offsets::handle),
        ApiKey::Metadata => call!(metadata::handle),
        ApiKey::CreateTopics => call!(admin::create_topics),
        ApiKey::DeleteTopics => call!(admin::delete_topics),
        ApiKey::CreatePartitions => call!(admin::create_partitions),
        ApiKey::DeleteRecords => call!(admin::delete_records),
        ApiKey::DescribeConfigs => call!(configs::describe_configs),
        ApiKey::AlterConfigs => call!(configs::alter_configs),
        ApiKey::IncrementalAlterConfigs => call!(configs::incremental_alter_configs),
        ApiKey::DescribeCluster => call!(cluster::describe_cluster),
        ApiKey::OffsetForLeaderEpoch => call!(list_offsets::offset_for_leader_epoch),
        ApiKey::InitProducerId => call!(producer_id::init_producer_id),
        other => Err(DispatchError::Decode {
            api: other,
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
