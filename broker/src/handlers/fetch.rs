//! Fetch: read whole batches as stored, honour byte limits, long-poll until `min_bytes` arrive.
//!
//! Long-polling waits on the high-watermark watches of the requested partitions, so a waiting
//! consumer is woken by the append itself, not by a timer. The partitions of one request are read
//! concurrently (up to [`READ_AHEAD`] at a time: a catch-up read from the object store waits
//! tens of milliseconds per GET) and assembled in request order under the response byte limit
//! as Kafka does: the first partition with data may exceed it by its first batch (KIP-74), later
//! ones keep only the batches that fit. Fetch sessions (KIP-227) are declined:
//! every answer carries session id 0 and clients keep sending full requests.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::select_all;
use futures::StreamExt as _;
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use metadata::{MetadataState, TopicPartition};
use tokio::sync::watch;

use super::topics::{partition_of, resolve};
use crate::errors::{storage_error_code, ErrorCode};
use crate::Broker;

/// Upper bound on a long-poll, whatever the client asks for.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Kafka's broker-side `fetch.max.bytes` default: caps what one response may carry, whatever the
/// client asks for, so a response's memory is bounded.
const FETCH_MAX_BYTES: usize = 57_671_680;

/// Partitions of one Fetch read at the same time.
const READ_AHEAD: usize = 8;

/// One requested partition, resolved against metadata.
struct Target {
    topic_index: usize,
    partition: i32,
    /// `Err` = answer with this error and no data.
    resolved: Result<(TopicPartition, i32), ErrorCode>,
    /// The partition's leader epoch, when it exists.
    leader_epoch: Option<i32>,
    /// Its leader (owner), when it exists.
    leader_id: Option<i32>,
    fetch_offset: i64,
    max_bytes: usize,
}

pub(super) async fn handle(broker: &Broker, version: i16, request: FetchRequest) -> FetchResponse {
    let state = broker.meta.state();
    let (topics, targets) = resolve_targets(broker, &state, version, &request);
    let read_committed = request.isolation_level == 1;
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    // Fetch v3+ carries a response limit; older versions have none (the default is i32::MAX).
    let response_limit = usize::try_from(request.max_bytes)
        .unwrap_or(0)
        .min(FETCH_MAX_BYTES);
    let wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;

    let mut watches: Vec<watch::Receiver<i64>> = targets
        .iter()
        .filter_map(|t| t.resolved.ok())
        .filter_map(|(tp, _)| broker.store.hw_watch(tp).ok())
        .collect();
    loop {
        // Mark what we have seen before reading, so an append between the read and the wait wakes us.
        for w in &mut watches {
            w.borrow_and_update();
        }
        let (partitions, total_bytes, any_error) =
            read_all(broker, version, &targets, response_limit, read_committed).await;
        let done = total_bytes >= min_bytes
            || any_error
            || watches.is_empty()
            || tokio::time::Instant::now() >= deadline;
        if done {
            return build_response(broker, version, topics, partitions);
        }
        let partition_gone = {
            let changed = select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
            tokio::select! {
                (result, _, _) = changed => result.is_err(),
                () = tokio::time::sleep_until(deadline) => false,
            }
        };
        if partition_gone {
            // A partition went away (topic deleted): answer with what we have.
            watches.clear();
        }
    }
}

fn resolve_targets(
    broker: &Broker,
    state: &MetadataState,
    version: i16,
    request: &FetchRequest,
) -> (
    Vec<(kafka_protocol::messages::TopicName, uuid::Uuid)>,
    Vec<Target>,
) {
    let mut topics = Vec::with_capacity(request.topics.len());
    let mut targets = Vec::new();
    for (topic_index, fetch_topic) in request.topics.iter().enumerate() {
        let by_id = version >= 13;
        let topic = if by_id {
            resolve(state, None, fetch_topic.topic_id)
        } else {
            resolve(state, Some(fetch_topic.topic.as_str()), uuid::Uuid::nil())
        };
        topics.push((fetch_topic.topic.clone(), fetch_topic.topic_id));
        for p in &fetch_topic.partitions {
            let mut leader_epoch = None;
            let mut leader_id = None;
            let resolved = match topic.and_then(|t| partition_of(t, p.partition).map(|tp| (t, tp)))
            {
                None if by_id && topic.is_none() => Err(ErrorCode::UnknownTopicId),
                None => Err(ErrorCode::UnknownTopicOrPartition),
                Some((t, tp)) => {
                    let epoch = t
                        .partitions
                        .get(tp.partition as usize)
                        .map_or(0, |m| m.leader_epoch);
                    leader_epoch = Some(epoch);
                    leader_id = super::ownership::leader_of(state, tp).map(|l| l.id);
                    // A partition this broker does not own is refused before its epoch is
                    // looked at (as Kafka does on a broker that holds no replica of it).
                    let owned = super::ownership::check_owned(broker, state, tp).is_ok();
                    match p.current_leader_epoch {
                        _ if !owned => Err(ErrorCode::NotLeaderOrFollower),
                        e if e >= 0 && e < epoch => Err(ErrorCode::FencedLeaderEpoch),
                        e if e > epoch => Err(ErrorCode::UnknownLeaderEpoch),
                        _ => Ok((tp, epoch)),
                    }
                }
            };
            targets.push(Target {
                topic_index,
                partition: p.partition,
                resolved,
                leader_epoch,
                leader_id,
                fetch_offset: p.fetch_offset,
                max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
            });
        }
    }
    (topics, targets)
}

/// The read of one target ahead of its turn: at most its own limit, capped by the response's.
async fn read_ahead(
    broker: &Broker,
    target: &Target,
    response_limit: usize,
) -> Option<storage::Result<storage::ReadResult>> {
    let (tp, _) = target.resolved.ok()?;
    let budget = target.max_bytes.min(response_limit).max(1);
    Some(broker.store.read(tp, target.fetch_offset, budget).await)
}

/// Reads every target within the response byte limit. Returns (per-target data, bytes, any error).
async fn read_all(
    broker: &Broker,
    version: i16,
    targets: &[Target],
    response_limit: usize,
    read_committed: bool,
) -> (Vec<(usize, PartitionData)>, usize, bool) {
    let mut total = 0usize;
    let mut any_error = false;
    let mut out = Vec::with_capacity(targets.len());
    let node_id = i32::try_from(broker.config.node_id).unwrap_or(i32::MAX);
    // Each partition is read ahead with the most it could get (its own limit, capped by the
    // response's); in request order, each keeps what fits in what is left of the response limit.
    let reads: Vec<_> = targets
        .iter()
        .map(|target| read_ahead(broker, target, response_limit))
        .collect();
    let mut ahead = futures::stream::iter(reads).buffered(READ_AHEAD);
    for target in targets {
        let early = ahead.next().await.flatten();
        let mut data = PartitionData::default()
            .with_partition_index(target.partition)
            .with_preferred_read_replica(BrokerId(-1))
            .with_aborted_transactions(read_committed.then(Vec::new));
        // Error partitions look like Kafka's: offsets -1; a partition Kafka refuses before
        // reading (unknown topic or partition) has an empty aborted-transactions list, one
        // refused while reading (leader epoch, offset out of range) a null one; the current
        // leader only with NOT_LEADER_OR_FOLLOWER / FENCED_LEADER_EPOCH (KIP-951, v16+).
        match target.resolved {
            Err(code) => {
                any_error = true;
                data = data
                    .with_error_code(code.code())
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1);
                if matches!(
                    code,
                    ErrorCode::UnknownTopicOrPartition | ErrorCode::UnknownTopicId
                ) {
                    data.aborted_transactions = Some(Vec::new());
                }
                if let (
                    ErrorCode::FencedLeaderEpoch | ErrorCode::NotLeaderOrFollower,
                    Some(epoch),
                ) = (code, target.leader_epoch)
                {
                    // Kafka fills it from v16 (KIP-951), though the field exists from v12.
                    if version >= 16 {
                        data.current_leader = LeaderIdAndEpoch::default()
                            .with_leader_id(BrokerId(target.leader_id.unwrap_or(node_id)))
                            .with_leader_epoch(epoch);
                    }
                }
            }
            Ok((tp, _epoch)) => {
                // KIP-74: the first non-empty partition may exceed the limits by one batch.
                let budget = target.max_bytes.min(response_limit.saturating_sub(total));
                let read = if budget == 0 && total > 0 {
                    broker.store.offsets(tp).map(|o| storage::ReadResult {
                        batches: Vec::new(),
                        high_watermark: o.high_watermark,
                        log_start_offset: o.log_start_offset,
                    })
                } else {
                    match early {
                        Some(read) => read,
                        None => {
                            broker
                                .store
                                .read(tp, target.fetch_offset, budget.max(1))
                                .await
                        }
                    }
                };
                // Read with its whole limit: only the first partition with data may exceed what
                // is left of the response limit (by its first batch, KIP-74); a later one keeps
                // the batches that fit.
                let read = read.map(|mut result| {
                    if total > 0 {
                        let mut kept = 0;
                        let fitting = result
                            .batches
                            .iter()
                            .take_while(|batch| {
                                kept += batch.len();
                                kept <= budget
                            })
                            .count();
                        result.batches.truncate(fitting);
                    }
                    result
                });
                match read {
                    Ok(result) => {
                        let records = concat(result.batches);
                        total += records.len();
                        data = data
                            .with_high_watermark(result.high_watermark)
                            .with_last_stable_offset(result.high_watermark)
                            .with_log_start_offset(if version >= 5 {
                                result.log_start_offset
                            } else {
                                -1
                            })
                            .with_records(Some(records));
                    }
                    Err(error) => {
                        any_error = true;
                        data = data
                            .with_error_code(storage_error_code(&error).code())
                            .with_high_watermark(-1)
                            .with_last_stable_offset(-1)
                            .with_log_start_offset(-1);
                        // The partition moved to another broker since the request was resolved.
                        if let (
                            storage::Error::NotLeader {
                                owner,
                                leader_epoch,
                            },
                            true,
                        ) = (&error, version >= 16)
                        {
                            data.current_leader = LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(super::ownership::broker_id(*owner)))
                                .with_leader_epoch(*leader_epoch);
                        }
                    }
                }
            }
        }
        out.push((target.topic_index, data));
    }
    (out, total, any_error)
}

/// Joins batches into one buffer; a single batch is passed through without a copy.
fn concat(batches: Vec<Bytes>) -> Bytes {
    match batches.len() {
        0 => Bytes::new(),
        1 => batches.into_iter().next().unwrap_or_default(),
        _ => {
            let mut out = BytesMut::with_capacity(batches.iter().map(Bytes::len).sum());
            for batch in &batches {
                out.extend_from_slice(batch);
            }
            out.freeze()
        }
    }
}

fn build_response(
    broker: &Broker,
    version: i16,
    topics: Vec<(kafka_protocol::messages::TopicName, uuid::Uuid)>,
    partitions: Vec<(usize, PartitionData)>,
) -> FetchResponse {
    let mut responses: Vec<FetchableTopicResponse> = topics
        .into_iter()
        .map(|(name, id)| {
            FetchableTopicResponse::default()
                .with_topic(name)
                .with_topic_id(id)
        })
        .collect();
    for (topic_index, data) in partitions {
        if let Some(topic) = responses.get_mut(topic_index) {
            topic.partitions.push(data);
        }
    }
    // KIP-951 (v16+): the endpoints of the leaders named in the partitions' CurrentLeader.
    let node_endpoints = if version >= 16 {
        let leaders = responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| {
                p.error_code == ErrorCode::NotLeaderOrFollower.code()
                    || p.error_code == ErrorCode::FencedLeaderEpoch.code()
            })
            .map(|p| p.current_leader.leader_id.0)
            .filter(|id| *id >= 0);
        super::ownership::endpoints(&broker.meta.state(), leaders, |id, host, port| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(kafka_protocol::protocol::StrBytes::from_string(host))
                .with_port(port)
        })
    } else {
        Vec::new()
    };
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(responses)
        .with_node_endpoints(node_endpoints)
}
