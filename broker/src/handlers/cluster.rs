//! DescribeCluster: cluster id, controller and brokers.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use crate::Broker;

pub(super) async fn describe_cluster(
    broker: &Broker,
    _version: i16,
    _request: DescribeClusterRequest,
) -> DescribeClusterResponse {
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
