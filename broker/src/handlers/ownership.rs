//! Partition ownership as the handlers see it: a partition owned by another broker is answered
//! NOT_LEADER_OR_FOLLOWER with its current leader and epoch (KIP-951) and, where the version has
//! them, the leaders' endpoints.

use metadata::{MetadataState, NodeId, TopicPartition};

use crate::Broker;

/// A partition's current leader, as told to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leader {
    pub(crate) id: i32,
    pub(crate) epoch: i32,
}

/// The Kafka broker id of a node id (ids beyond i32 are never handed out; saturate).
pub(crate) fn broker_id(node_id: NodeId) -> i32 {
    i32::try_from(node_id).unwrap_or(i32::MAX)
}

/// `Err(leader)` when `tp` exists and another broker owns it; `Ok` when this broker does or the
/// partition is unknown (the caller answers that on its own).
pub(crate) fn check_owned(
    broker: &Broker,
    state: &MetadataState,
    tp: TopicPartition,
) -> Result<(), Leader> {
    match state.partition(tp) {
        Some(pm) if pm.owner != broker.config.node_id => Err(Leader {
            id: broker_id(pm.owner),
            epoch: pm.leader_epoch,
        }),
        _ => Ok(()),
    }
}

/// The current leader of `tp`, if the partition exists.
pub(crate) fn leader_of(state: &MetadataState, tp: TopicPartition) -> Option<Leader> {
    state.partition(tp).map(|pm| Leader {
        id: broker_id(pm.owner),
        epoch: pm.leader_epoch,
    })
}

/// The endpoint of each distinct registered broker among `ids`, in id order, built by `make`
/// from `(id, host, port)` (Produce and Fetch each have their own `NodeEndpoint` type).
pub(crate) fn endpoints<T>(
    state: &MetadataState,
    ids: impl IntoIterator<Item = i32>,
    make: impl Fn(i32, String, i32) -> T,
) -> Vec<T> {
    let ids: std::collections::BTreeSet<i32> = ids.into_iter().collect();
    ids.into_iter()
        .filter_map(|id| {
            let node = state.brokers.get(&NodeId::try_from(id).ok()?)?;
            Some(make(id, node.host.clone(), i32::from(node.port)))
        })
        .collect()
}
