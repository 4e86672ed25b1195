//! DescribeCluster: cluster id, controller and brokers.
//!
//! Sluice's Kafka listener is a broker endpoint. As Apache Kafka 4.4 does on a broker listener
//! (also on a combined controller + broker node), a v1+ request for the controller endpoints
//! (`endpoint_type` 2) is answered MISMATCHED_ENDPOINT_TYPE and any other type but 1 (brokers)
//! UNSUPPORTED_ENDPOINT_TYPE, with an empty cluster description. Sluice has no fenced brokers, so
//! v2's `include_fenced_brokers` changes nothing and every broker has `is_fenced = false`.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use crate::errors::ErrorCode;
use crate::Broker;

/// DescribeCluster `endpoint_type` values (KIP-919).
const ENDPOINT_BROKERS: i8 = 1;
const ENDPOINT_CONTROLLERS: i8 = 2;

pub(super) async fn describe_cluster(
    broker: &Broker,
    _version: i16,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    // v0 requests carry no endpoint type; the decoder's default is 1 (brokers).
    if let Some((code, message)) = endpoint_type_error(request.endpoint_type) {
        return DescribeClusterResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
            .with_endpoint_type(ENDPOINT_BROKERS)
            .with_cluster_id(StrBytes::default())
            .with_controller_id(BrokerId(-1))
            .with_cluster_authorized_operations(i32::MIN);
    }
    let state = broker.meta.state();
    let brokers = state
        .brokers
        .values()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(i32::try_from(b.node_id).unwrap_or(i32::MAX)))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(i32::from(b.port))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(state.cluster_id.clone()))
        .with_controller_id(BrokerId(
            i32::try_from(broker.config.node_id).unwrap_or(i32::MAX),
        ))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(i32::MIN)
}

/// The error (code, message as Kafka words it) for an endpoint type this listener does not serve.
fn endpoint_type_error(endpoint_type: i8) -> Option<(ErrorCode, String)> {
    match endpoint_type {
        ENDPOINT_BROKERS => None,
        ENDPOINT_CONTROLLERS => Some((
            ErrorCode::MismatchedEndpointType,
            "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER"
                .to_string(),
        )),
        other => Some((
            ErrorCode::UnsupportedEndpointType,
            format!("Unsupported endpoint type {other}"),
        )),
    }
}
