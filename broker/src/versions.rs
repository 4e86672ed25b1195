//! The API versions this broker advertises. Only versions that are fully implemented are listed;
//! ApiVersions answers from this table and dispatch refuses anything outside it.

use kafka_protocol::messages::ApiKey;

/// (api, min, max) of every supported API.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    // DescribeConfigs v0, which Kafka 4 no longer serves but Sarama 1.22's admin sends: crate::legacy.
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    // Classic consumer groups and committed offsets (broker/src/groups, handlers/groups.rs,
    // handlers/offsets.rs). OffsetCommit v1, which Kafka 4 no longer serves but Sarama 1.22 sends,
    // is decoded by crate::legacy; v0 (offsets in ZooKeeper) is not served.
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 1, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
];

/// The supported range of `api_key`, if any.
pub fn supported_range(api_key: i16) -> Option<(ApiKey, i16, i16)> {
    SUPPORTED
        .iter()
        .copied()
        .find(|(key, _, _)| *key as i16 == api_key)
}

pub fn is_supported(api_key: i16, version: i16) -> bool {
    supported_range(api_key).is_some_and(|(_, min, max)| (min..=max).contains(&version))
}
