//! Produce: validate every batch, append through the log store, answer once durable.
//!
//! All partitions of a request are appended concurrently, so the WAL group-commits them together.
//! `acks=1` and `acks=-1` both mean "durable in the WAL"; `acks=0` does the same work without answer.
//!
//! A topic whose `compression.type` is a codec gets every batch in another codec recompressed to
//! it before it is placed, once per batch, on a blocking thread (not the reactor), as Kafka does;
//! `max.message.bytes` is checked before and after, as Kafka does.

use std::future::IntoFuture;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use storage::batch;

use super::topics::{partition_of, resolve};
use crate::configs::{compression_type, max_message_bytes, timestamp_type};
use crate::errors::{batch_error_code, storage_error_code, ErrorCode};
use crate::Broker;

pub(super) async fn handle(
    broker: &Broker,
    version: i16,
    request: ProduceRequest,
    placed: tokio::sync::oneshot::Sender<()>,
) -> ProduceResponse {
    let state = broker.meta.state();
    let request_error = if !matches!(request.acks, -1..=1) {
        Some((
            ErrorCode::InvalidRequiredAcks,
            "acks must be -1, 0 or 1".to_string(),
        ))
    } else if request.transactional_id.is_some() {
        Some((
            ErrorCode::TransactionalIdAuthorizationFailed,
            "transactions are not supported by Sluice yet".to_string(),
        ))
    } else {
        None
    };

    // Phase 1, in request order: validate and place every partition's batches (offsets assigned,
    // queued in the WAL). The connection's next request may start once this is done.
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let topic = resolve(&state, Some(topic_data.name.as_str()), topic_data.topic_id);
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for data in topic_data.partition_data {
            let index = data.index;
            let target = topic.and_then(|t| partition_of(t, index).map(|tp| (t, tp)));
            let pending =
                match (&request_error, target) {
                    (Some((code, message)), _) => {
                        Pending::Done(error_response(index, *code, message.clone()))
                    }
                    // Like Kafka: an unknown topic id is UNKNOWN_TOPIC_ID, an unknown partition of
                    // a known topic UNKNOWN_TOPIC_OR_PARTITION.
                    (None, None) if version >= 13 && topic.is_none() => Pending::Done(
                        error_response(index, ErrorCode::UnknownTopicId, "unknown topic id".into()),
                    ),
                    (None, None) => Pending::Done(error_response(
                        index,
                        ErrorCode::UnknownTopicOrPartition,
                        "unknown topic or partition".into(),
                    )),
                    (None, Some((topic, tp))) => {
                        match super::ownership::check_owned(broker, &state, tp) {
                            Err(leader) => Pending::Done(not_leader_response(index, leader)),
                            Ok(()) => place_partition(broker, version, topic, tp, data).await,
                        }
                    }
                };
            partitions.push(pending);
        }
        topics.push((topic_data.name, topic_data.topic_id, partitions));
    }
    let _ = placed.send(());

    // Phase 2: wait for durability, every partition at once (they share WAL group commits), up to
    // the request's timeout: a partition not durable by then is answered REQUEST_TIMED_OUT
    // (retriable; the append carries on and may still land, as with a Kafka replication timeout).
    let deadline = (request.timeout_ms > 0).then(|| {
        tokio::time::Instant::now()
            + Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0))
                .min(MAX_PRODUCE_TIMEOUT)
    });
    let mut responses = join_all(topics.into_iter().map(
        |(name, topic_id, partitions)| async move {
            let partitions =
                join_all(partitions.into_iter().map(|p| p.finish(broker, deadline))).await;
            TopicProduceResponse::default()
                .with_name(name)
                .with_topic_id(topic_id)
                .with_partition_responses(partitions)
        },
    ))
    .await;
    // KIP-951 (v10+): the endpoints of the leaders named in NOT_LEADER_OR_FOLLOWER answers.
    let node_endpoints = if version >= 10 {
        let leaders = responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .filter(|p| p.error_code == ErrorCode::NotLeaderOrFollower.code())
            .map(|p| p.current_leader.leader_id.0)
            .filter(|id| *id >= 0);
        super::ownership::endpoints(&broker.meta.state(), leaders, |id, host, port| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
        })
    } else {
        Vec::new()
    };
    for partition in responses
        .iter_mut()
        .flat_map(|t| t.partition_responses.iter_mut())
    {
        for_version(partition, version);
    }
    ProduceResponse::default()
        .with_responses(responses)
        .with_node_endpoints(node_endpoints)
}

/// Upper bound of the time a produce waits for durability, whatever the client asks for.
const MAX_PRODUCE_TIMEOUT: Duration = Duration::from_secs(300);

/// One partition of a produce request after phase 1.
enum Pending {
    /// Answered without appending (bad input, unknown partition).
    Done(PartitionProduceResponse),
    /// Batches placed in the partition, waiting to be durable.
    Placed {
        index: i32,
        tp: metadata::TopicPartition,
        topic: String,
        partition: i32,
        tickets: Vec<storage::AppendTicket>,
    },
}

impl Pending {
    async fn finish(
        self,
        broker: &Broker,
        deadline: Option<tokio::time::Instant>,
    ) -> PartitionProduceResponse {
        let (index, tp, topic, partition, tickets) = match self {
            Pending::Done(response) => return response,
            Pending::Placed {
                index,
                tp,
                topic,
                partition,
                tickets,
            } => (index, tp, topic, partition, tickets),
        };
        let mut first: Option<storage::AppendResult> = None;
        for ticket in tickets {
            let outcome = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, ticket.into_future())
                    .await
                    .unwrap_or(Err(storage::Error::TimedOut)),
                None => ticket.await,
            };
            match outcome {
                Ok(result) => {
                    first.get_or_insert(result);
                }
                Err(error) => {
                    tracing::debug!(%topic, partition, %error, "append failed");
                    let code = storage_error_code(&error);
                    let mut response = error_response(index, code, error.to_string());
                    // KIP-951: the current leader (from metadata now: the partition may have
                    // moved meanwhile) goes with NOT_LEADER_OR_FOLLOWER only; Kafka leaves it
                    // -1/-1 everywhere else.
                    if code == ErrorCode::NotLeaderOrFollower {
                        if let Some(leader) = super::ownership::leader_of(&broker.meta.state(), tp)
                        {
                            response.current_leader = LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(leader.id))
                                .with_leader_epoch(leader.epoch);
                        }
                    }
                    return response;
                }
            }
        }
        let result = first.unwrap_or(storage::AppendResult {
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
        });
        PartitionProduceResponse::default()
            .with_index(index)
            .with_base_offset(result.base_offset)
            .with_log_append_time_ms(result.log_append_time_ms)
            .with_log_start_offset(result.log_start_offset)
    }
}

/// Clears the fields the negotiated version does not have (the encoder refuses them).
fn for_version(response: &mut PartitionProduceResponse, version: i16) {
    if version < 10 {
        response.current_leader = LeaderIdAndEpoch::default();
    }
    if version < 8 {
        response.error_message = None;
    }
    if version < 5 {
        response.log_start_offset = -1;
    }
}

/// A partition another broker owns: NOT_LEADER_OR_FOLLOWER with its leader (KIP-951).
fn not_leader_response(index: i32, leader: super::ownership::Leader) -> PartitionProduceResponse {
    let mut response = error_response(
        index,
        ErrorCode::NotLeaderOrFollower,
        format!("this broker is not the leader; broker {} is", leader.id),
    );
    response.current_leader = LeaderIdAndEpoch::default()
        .with_leader_id(BrokerId(leader.id))
        .with_leader_epoch(leader.epoch);
    response
}

fn error_response(index: i32, code: ErrorCode, message: String) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(Some(StrBytes::from_string(message)))
}

/// Recompresses one partition's validated batches to the topic's codec on a blocking thread
/// (a batch already in it is kept as it is); fails as a whole on the first batch that does not
/// decompress or grows past `max_bytes`.
async fn recompress_all(
    batches: Vec<(batch::BatchHeader, Bytes)>,
    codec: batch::Compression,
    max_bytes: usize,
) -> Result<Vec<bytes::BytesMut>, (ErrorCode, String)> {
    let work = move || {
        batches
            .into_iter()
            .map(|(_, bytes)| match batch::recompress(&bytes, codec) {
                Ok(None) => Ok(bytes::BytesMut::from(bytes)),
                Ok(Some(rewritten)) if rewritten.len() > max_bytes => Err((
                    ErrorCode::MessageTooLarge,
                    format!(
                        "batch recompressed to {codec:?} is {} bytes, over max.message.bytes={max_bytes}",
                        rewritten.len()
                    ),
                )),
                Ok(Some(rewritten)) => Ok(bytes::BytesMut::from(Bytes::from(rewritten))),
                Err(error) => Err((batch_error_code(&error), error.to_string())),
            })
            .collect::<Result<Vec<_>, _>>()
    };
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err((
            ErrorCode::UnknownServerError,
            format!("recompression task failed: {e}"),
        ))
    })
}

/// Validates every batch of one partition first (nothing is placed if any is bad), then places them
/// in order.
async fn place_partition(
    broker: &Broker,
    version: i16,
    topic: &metadata::TopicMeta,
    tp: metadata::TopicPartition,
    data: PartitionProduceData,
) -> Pending {
    let index = data.index;
    let records: Bytes = data.records.unwrap_or_default();
    let batches = match batch::split_and_validate(&records) {
        Ok(batches) => batches,
        Err(error) => {
            return Pending::Done(error_response(
                index,
                batch_error_code(&error),
                error.to_string(),
            ))
        }
    };
    let max_bytes = max_message_bytes(&topic.configs);
    for (header, bytes) in &batches {
        let refusal = if bytes.len() > max_bytes {
            Some((
                ErrorCode::MessageTooLarge,
                format!(
                    "batch of {} bytes exceeds max.message.bytes={max_bytes}",
                    bytes.len()
                ),
            ))
        } else if version < 7 && header.compression() == Ok(batch::Compression::Zstd) {
            // As Kafka: zstd batches need Produce v7+ (KIP-110), whatever the topic's codec.
            Some((
                ErrorCode::UnsupportedCompressionType,
                "zstd-compressed batches need Produce v7 or later".into(),
            ))
        } else if header.is_control() {
            Some((
                ErrorCode::InvalidRecord,
                "clients may not produce control batches".into(),
            ))
        } else if header.is_transactional() {
            Some((
                ErrorCode::InvalidTxnState,
                "transactional batches are not supported by Sluice yet".into(),
            ))
        } else {
            None
        };
        if let Some((code, message)) = refusal {
            return Pending::Done(error_response(index, code, message));
        }
    }
    let batches = match compression_type(&topic.configs) {
        None => batches
            .into_iter()
            .map(|(_, bytes)| bytes::BytesMut::from(bytes))
            .collect(),
        Some(codec) => match recompress_all(batches, codec, max_bytes).await {
            Ok(batches) => batches,
            Err((code, message)) => return Pending::Done(error_response(index, code, message)),
        },
    };
    let timestamp_type = timestamp_type(&topic.configs);
    let mut tickets = Vec::with_capacity(batches.len());
    for batch in batches {
        tickets.push(broker.store.submit_append(tp, batch, timestamp_type).await);
    }
    Pending::Placed {
        index,
        tp,
        topic: topic.name.clone(),
        partition: tp.partition,
        tickets,
    }
}
