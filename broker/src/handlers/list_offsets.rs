//! ListOffsets (earliest, latest, by timestamp, max timestamp) and OffsetForLeaderEpoch.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};
use metadata::TopicPartition;

use super::topics::{partition_of, resolve};
use crate::errors::{storage_error_code, ErrorCode};
use crate::Broker;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// The first ListOffsets version that may ask for `timestamp`; Kafka answers an older request
/// for it UNSUPPORTED_VERSION in that partition.
fn first_version_for(timestamp: i64) -> i16 {
    match timestamp {
        MAX_TIMESTAMP => 7,
        EARLIEST_LOCAL => 8,
        LATEST_TIERED => 9,
        _ => 0,
    }
}

pub(super) async fn handle(
    broker: &Broker,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let state = broker.meta.state();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let meta = resolve(&state, Some(topic.name.as_str()), uuid::Uuid::nil());
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let response = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            let Some((meta, tp)) =
                meta.and_then(|m| partition_of(m, p.partition_index).map(|tp| (m, tp)))
            else {
                partitions
                    .push(response.with_error_code(ErrorCode::UnknownTopicOrPartition.code()));
                continue;
            };
            if super::ownership::check_owned(broker, &state, tp).is_err() {
                partitions.push(response.with_error_code(ErrorCode::NotLeaderOrFollower.code()));
                continue;
            }
            let epoch = meta
                .partitions
                .get(tp.partition as usize)
                .map_or(0, |m| m.leader_epoch);
            if p.current_leader_epoch >= 0 && p.current_leader_epoch < epoch {
                partitions.push(response.with_error_code(ErrorCode::FencedLeaderEpoch.code()));
                continue;
            }
            if p.current_leader_epoch > epoch {
                partitions.push(response.with_error_code(ErrorCode::UnknownLeaderEpoch.code()));
                continue;
            }
            if version < first_version_for(p.timestamp) {
                partitions.push(response.with_error_code(ErrorCode::UnsupportedVersion.code()));
                continue;
            }
            let response = if version >= 4 {
                response.with_leader_epoch(epoch)
            } else {
                response
            };
            partitions.push(match lookup(broker, tp, p.timestamp).await {
                // No record matches: Kafka answers offset, timestamp and epoch -1.
                Ok((-1, _)) => response.with_leader_epoch(-1),
                Ok((offset, timestamp)) => response.with_offset(offset).with_timestamp(timestamp),
                Err(code) => response.with_error_code(code.code()),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp) for a ListOffsets query; (-1, -1) when no record matches.
async fn lookup(
    broker: &Broker,
    tp: TopicPartition,
    timestamp: i64,
) -> Result<(i64, i64), ErrorCode> {
    let store = &broker.store;
    let offsets = store.offsets(tp).map_err(|e| storage_error_code(&e))?;
    match timestamp {
        // With no transactions, the last stable offset equals the high watermark.
        LATEST => Ok((offsets.high_watermark, -1)),
        // Nothing is in tiered storage (Kafka's remote log): Kafka answers "no offset" without it.
        LATEST_TIERED => Ok((-1, -1)),
        EARLIEST | EARLIEST_LOCAL => Ok((offsets.log_start_offset, -1)),
        MAX_TIMESTAMP => match store.max_timestamp(tp).await {
            // The store answers (timestamp, offset), the reverse of `offset_for_timestamp`.
            Ok(Some((max_timestamp, offset))) => Ok((offset, max_timestamp)),
            Ok(None) => Ok((-1, -1)),
            Err(e) => Err(storage_error_code(&e)),
        },
        ts if ts < 0 => Err(ErrorCode::InvalidRequest),
        ts => match store.offset_for_timestamp(tp, ts).await {
            Ok(Some((offset, found))) => Ok((offset, found)),
            Ok(None) => Ok((-1, -1)),
            Err(e) => Err(storage_error_code(&e)),
        },
    }
}

/// The end of the requested epoch from the partition's per-epoch start-offset history (see
/// [`metadata::PartitionMeta::end_offset_for_epoch`]): where the next higher epoch starts, or the
/// high watermark for the current epoch.
pub(super) async fn offset_for_leader_epoch(
    broker: &Broker,
    _version: i16,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let state = broker.meta.state();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let meta = resolve(&state, Some(topic.topic.as_str()), uuid::Uuid::nil());
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let response = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let Some((meta, tp)) =
                        meta.and_then(|m| partition_of(m, p.partition).map(|tp| (m, tp)))
                    else {
                        return response.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                    };
                    if super::ownership::check_owned(broker, &state, tp).is_err() {
                        return response.with_error_code(ErrorCode::NotLeaderOrFollower.code());
                    }
                    let Some(pm) = meta.partitions.get(tp.partition as usize) else {
                        return response.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                    };
                    let epoch = pm.leader_epoch;
                    if p.current_leader_epoch >= 0 && p.current_leader_epoch < epoch {
                        return response.with_error_code(ErrorCode::FencedLeaderEpoch.code());
                    }
                    if p.current_leader_epoch > epoch {
                        return response.with_error_code(ErrorCode::UnknownLeaderEpoch.code());
                    }
                    match broker.store.offsets(tp) {
                        Ok(offsets) => {
                            match pm.end_offset_for_epoch(p.leader_epoch, offsets.high_watermark) {
                                Some((leader_epoch, end_offset)) => response
                                    .with_leader_epoch(leader_epoch)
                                    .with_end_offset(end_offset),
                                None => response,
                            }
                        }
                        Err(e) => response.with_error_code(storage_error_code(&e).code()),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
