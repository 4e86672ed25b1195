//! The write path shared by every endpoint: topic lookup (and auto-creation), partition choice,
//! building record batches v2 with kafka-protocol's `RecordBatchEncoder`, and appending them through
//! `storage::LogStore::append` — the broker's own partition append path, so HTTP and Kafka producers
//! share offsets, the WAL group commit and durability.
//!
//! Architecture invariant: an [`Outcome`] is `Ok` only after `LogStore::append` returned, i.e. the
//! record's batch is durable in the WAL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType as RecordTsType,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};
use metadata::{
    Command, CommandResponse, MetadataClient, MetadataState, TopicMeta, TopicPartition,
};
use storage::{LogStore, TimestampType};
use uuid::Uuid;

use crate::error::{from_storage, ApiError, ErrorKind};
use crate::metrics;
use crate::partitioner::{partition_for_key, StickyRotation};
use crate::time::now_ms;

/// One record to write, as parsed from any endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    /// Kafka headers in order (names unique: the batch encoder keys them by name).
    pub(crate) headers: Vec<(StrBytes, Option<Bytes>)>,
    /// CreateTime in ms; `None` = receive time.
    pub(crate) timestamp: Option<i64>,
    /// Explicit partition; `None` = by key (murmur2), else sticky per request.
    pub(crate) partition: Option<i32>,
}

impl Event {
    /// Upper bound of the encoded size of this record inside a batch (varints at their widest), so
    /// batches can be cut below `max.message.bytes` before encoding.
    fn encoded_size_bound(&self) -> usize {
        let bytes = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| 10 + name.len() + bytes(value))
            .sum();
        // length + attributes + timestamp delta + offset delta + key/value lengths + header count.
        5 + 1 + 10 + 5 + 5 + 5 + 5 + bytes(&self.key) + bytes(&self.value) + headers
    }
}

/// Where a record landed once durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// The record's timestamp as stored (LogAppendTime topics: the broker's time).
    pub(crate) timestamp: i64,
}

pub(crate) type Outcome = Result<Delivered, ApiError>;

/// Size of the fixed part of a v2 batch header.
const BATCH_HEADER_BYTES: usize = 61;

/// A resolved topic: the metadata snapshot it was found in and its id.
#[derive(Clone)]
pub(crate) struct TopicRef {
    state: Arc<MetadataState>,
    id: Uuid,
}

impl TopicRef {
    pub(crate) fn meta(&self) -> &TopicMeta {
        // The id was looked up in this very snapshot, so it is present.
        &self.state.topics[&self.id]
    }
    pub(crate) fn partitions(&self) -> u32 {
        u32::try_from(self.meta().partitions.len()).unwrap_or(u32::MAX)
    }
}

/// The shared producer: storage, metadata and topic-creation settings.
pub(crate) struct Producer {
    pub(crate) store: LogStore,
    pub(crate) meta: MetadataClient,
    pub(crate) node_id: metadata::NodeId,
    pub(crate) auto_create_topics: bool,
    pub(crate) default_partitions: u32,
    /// Longest wait for an append to become durable before the request is answered 503.
    pub(crate) ack_timeout: std::time::Duration,
    rotation: StickyRotation,
}

impl Producer {
    pub(crate) fn new(
        store: LogStore,
        meta: MetadataClient,
        node_id: metadata::NodeId,
        auto_create_topics: bool,
        default_partitions: u32,
    ) -> Producer {
        Producer {
            store,
            meta,
            node_id,
            auto_create_topics,
            default_partitions,
            ack_timeout: std::time::Duration::from_secs(30),
            rotation: StickyRotation::default(),
        }
    }

    pub(crate) fn with_ack_timeout(mut self, ack_timeout: std::time::Duration) -> Producer {
        self.ack_timeout = ack_timeout;
        self
    }

    /// Finds a topic; creates it when `create` is set and auto-creation is enabled (as a Kafka
    /// producer's metadata request would).
    pub(crate) async fn topic(&self, name: &str, create: bool) -> Result<TopicRef, ApiError> {
        let state = self.meta.state();
        if let Some(id) = state.topic_ids.get(name).copied() {
            return Ok(TopicRef { state, id });
        }
        if !(create && self.auto_create_topics) {
            return Err(ApiError::unknown_topic(name));
        }
        if let Err(reason) = broker::configs::validate_topic_name(name) {
            return Err(ApiError::new(
                ErrorKind::UnknownTopic,
                format!("Topic {name} not found and cannot be created: {reason}"),
            ));
        }
        let command = Command::CreateTopic {
            name: name.to_string(),
            topic_id: Uuid::new_v4(),
            partitions: self.default_partitions.max(1),
            configs: BTreeMap::new(),
            owner: self.node_id,
            now_ms: now_ms(),
        };
        match self.meta.propose(command).await {
            // Created by us, or concurrently by someone else: either way it exists now.
            Ok(CommandResponse::Rejected(metadata::Rejection::TopicExists)) | Ok(_) => {}
            Err(error) => {
                return Err(ApiError::new(
                    ErrorKind::Unavailable,
                    format!("cannot create topic {name}: {error}"),
                ))
            }
        }
        let state = self.meta.state();
        match state.topic_ids.get(name).copied() {
            Some(id) => Ok(TopicRef { state, id }),
            None => Err(ApiError::unknown_topic(name)),
        }
    }

    /// Writes `events` to `topic`; one outcome per event, in order. Every event is checked before
    /// anything is written; events that fail a check are not written and get their error. Appends
    /// to different partitions run concurrently (one WAL group commit can cover them all).
    ///
    /// With `idempotent` (a request with an `Idempotency-Key`) the batches are written as that
    /// key's producer, sequences from 0 per partition, and unkeyed events go to a partition chosen
    /// by the key: the same request again places the same batches, which storage recognises as
    /// retries (answered with their original offsets, written once).
    pub(crate) async fn produce(
        &self,
        topic: &TopicRef,
        events: Vec<Event>,
        idempotent: Option<IdempotentWrite>,
    ) -> Vec<Outcome> {
        let meta = topic.meta();
        let partitions = topic.partitions();
        let max_batch = broker::configs::max_message_bytes(&meta.configs);
        let timestamp_type = broker::configs::timestamp_type(&meta.configs);
        let codec = broker::configs::compression_type(&meta.configs);
        let sticky = match idempotent {
            Some(write) => (write.producer_id.unsigned_abs() % u64::from(partitions.max(1))) as i32,
            None => self.rotation.next_partition(partitions),
        };
        let receive_time = now_ms();

        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        let mut by_partition: BTreeMap<i32, Vec<(usize, Event)>> = BTreeMap::new();
        for (index, event) in events.into_iter().enumerate() {
            let partition = match event.partition {
                Some(p) if p >= 0 && (p as u32) < partitions => p,
                Some(p) => {
                    outcomes[index] = Some(Err(ApiError::new(
                        ErrorKind::UnknownPartition,
                        format!("Partition {p} of topic {} not found.", meta.name),
                    )));
                    continue;
                }
                None => match &event.key {
                    Some(key) => partition_for_key(key, partitions),
                    None => sticky,
                },
            };
            if event.encoded_size_bound() + BATCH_HEADER_BYTES > max_batch {
                outcomes[index] = Some(Err(ApiError::new(
                    ErrorKind::RecordTooLarge,
                    format!(
                        "record of about {} bytes exceeds max.message.bytes={max_batch} of topic {}",
                        event.encoded_size_bound(),
                        meta.name
                    ),
                )));
                continue;
            }
            by_partition
                .entry(partition)
                .or_default()
                .push((index, event));
        }
        let mut checked_failures = 0u64;
        for outcome in outcomes.iter().flatten() {
            if outcome.is_err() {
                checked_failures += 1;
            }
        }
        metrics::records(metrics::RecordOutcome::Rejected, checked_failures);

        let appends = by_partition.into_iter().map(|(partition, events)| {
            let tp = TopicPartition {
                topic_id: topic.id,
                partition,
            };
            self.append_partition(
                tp,
                events,
                max_batch,
                timestamp_type,
                codec,
                receive_time,
                idempotent,
            )
        });
        for results in join_all(appends).await {
            for (index, outcome) in results {
                metrics::records(
                    if outcome.is_ok() {
                        metrics::RecordOutcome::Committed
                    } else {
                        metrics::RecordOutcome::Failed
                    },
                    1,
                );
                outcomes[index] = Some(outcome);
            }
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Err(ApiError::new(
                        ErrorKind::Internal,
                        "record was not processed",
                    ))
                })
            })
            .collect()
    }

    /// Appends one partition's events in order, cut into batches below `max_batch` bytes. After the
    /// first failed append the rest of the partition's events are not attempted (order matters).
    async fn append_partition(
        &self,
        tp: TopicPartition,
        events: Vec<(usize, Event)>,
        max_batch: usize,
        timestamp_type: TimestampType,
        codec: Option<storage::batch::Compression>,
        receive_time: i64,
        idempotent: Option<IdempotentWrite>,
    ) -> Vec<(usize, Outcome)> {
        let mut results = Vec::with_capacity(events.len());
        let mut failed: Option<ApiError> = None;
        let mut next_sequence = 0i32;
        for chunk in cut_batches(events, max_batch) {
            let producer = idempotent.map(|write| (write.producer_id, next_sequence));
            next_sequence = next_sequence.wrapping_add(chunk.len() as i32);
            if let Some(error) = &failed {
                results.extend(chunk.into_iter().map(|(i, _)| (i, Err(error.clone()))));
                continue;
            }
            let timestamps: Vec<i64> = chunk
                .iter()
                .map(|(_, e)| e.timestamp.unwrap_or(receive_time))
                .collect();
            let batch = match encode_in_codec(&chunk, receive_time, codec, producer).await {
                Ok(batch) => batch,
                Err(error) => {
                    results.extend(chunk.into_iter().map(|(i, _)| (i, Err(error.clone()))));
                    failed = Some(error);
                    continue;
                }
            };
            let started = Instant::now();
            // A store that cannot make the batch durable in time (object store down) gets the
            // client a retriable 503, not a hung request; the append itself carries on.
            let appended = tokio::time::timeout(
                self.ack_timeout,
                self.store.append(tp, batch, timestamp_type),
            )
            .await
            .unwrap_or(Err(storage::Error::TimedOut));
            match appended {
                Ok(appended) => {
                    metrics::ack_latency(started.elapsed());
                    for (delta, ((index, _), timestamp)) in
                        chunk.into_iter().zip(timestamps).enumerate()
                    {
                        let timestamp = if appended.log_append_time_ms >= 0 {
                            appended.log_append_time_ms
                        } else {
                            timestamp
                        };
                        results.push((
                            index,
                            Ok(Delivered {
                                partition: tp.partition,
                                offset: appended.base_offset + delta as i64,
                                timestamp,
                            }),
                        ));
                    }
                }
                Err(error) => {
                    tracing::warn!(partition = tp.partition, %error, "http ingest append failed");
                    let error = from_storage(&error);
                    results.extend(chunk.into_iter().map(|(i, _)| (i, Err(error.clone()))));
                    failed = Some(error);
                }
            }
        }
        results
    }
}

/// Splits a partition's events into runs whose encoded batch stays within `max_batch` bytes.
fn cut_batches(events: Vec<(usize, Event)>, max_batch: usize) -> Vec<Vec<(usize, Event)>> {
    let mut batches = Vec::new();
    let mut current: Vec<(usize, Event)> = Vec::new();
    let mut size = BATCH_HEADER_BYTES;
    for (index, event) in events {
        let bound = event.encoded_size_bound();
        if !current.is_empty() && size + bound > max_batch {
            batches.push(std::mem::take(&mut current));
            size = BATCH_HEADER_BYTES;
        }
        size += bound;
        current.push((index, event));
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// [`encode_batch`], compressed with the topic's codec (`compression.type`; `None`: producer,
/// stored uncompressed as before) through the same [`storage::batch::recompress`] the Kafka
/// produce path uses, on a blocking thread.
async fn encode_in_codec(
    events: &[(usize, Event)],
    receive_time: i64,
    codec: Option<storage::batch::Compression>,
    producer: Option<(i64, i32)>,
) -> Result<BytesMut, ApiError> {
    let batch = encode_batch(events, receive_time, producer)?;
    let Some(codec) = codec else {
        return Ok(batch);
    };
    let compressed = tokio::task::spawn_blocking(move || {
        storage::batch::recompress(&batch, codec).map(|rewritten| match rewritten {
            Some(rewritten) => BytesMut::from(bytes::Bytes::from(rewritten)),
            None => batch,
        })
    })
    .await;
    match compressed {
        Ok(Ok(batch)) => Ok(batch),
        Ok(Err(e)) => Err(ApiError::new(
            ErrorKind::Internal,
            format!("cannot compress batch: {e}"),
        )),
        Err(e) => Err(ApiError::new(
            ErrorKind::Internal,
            format!("compression task failed: {e}"),
        )),
    }
}

/// The producer an `Idempotency-Key` request writes as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdempotentWrite {
    pub(crate) producer_id: i64,
}

impl IdempotentWrite {
    /// A producer id of the key's own, from SHA-256 of the key, with bit 62 set: allocated
    /// producer ids count up from 0 and never reach that range, so a key never shares the
    /// sequence space of a Kafka producer.
    pub(crate) fn for_key(key: &str) -> IdempotentWrite {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(key.as_bytes());
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        let bits = u64::from_be_bytes(head) & ((1 << 62) - 1);
        IdempotentWrite {
            producer_id: (bits | (1 << 62)) as i64,
        }
    }
}

/// One uncompressed record batch v2 (base offset 0; storage assigns the real one); with
/// `producer = (id, base sequence)` an idempotent producer's batch (epoch 0).
pub(crate) fn encode_batch(
    events: &[(usize, Event)],
    receive_time: i64,
    producer: Option<(i64, i32)>,
) -> Result<BytesMut, ApiError> {
    let records: Vec<Record> = events
        .iter()
        .enumerate()
        .map(|(delta, (_, event))| {
            let mut headers = IndexMap::with_capacity(event.headers.len());
            for (name, value) in &event.headers {
                headers.insert(name.clone(), value.clone());
            }
            let offset = delta as i64;
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id: producer.map_or(NO_PRODUCER_ID, |(id, _)| id),
                producer_epoch: producer.map_or(NO_PRODUCER_EPOCH, |_| 0),
                timestamp_type: RecordTsType::Creation,
                offset,
                // The encoder keeps records in one batch only while offset - sequence is constant;
                // without a producer, offset - 1 makes the batch's baseSequence -1.
                sequence: match producer {
                    Some((_, base)) => base.wrapping_add(offset as i32),
                    None => (offset as i32).wrapping_sub(1),
                },
                timestamp: event.timestamp.unwrap_or(receive_time),
                key: event.key.clone(),
                value: event.value.clone(),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options)
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("cannot encode batch: {e}")))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    fn event(key: Option<&str>, value: &str) -> Event {
        Event {
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: vec![("h".into(), Some(Bytes::from_static(b"v")))],
            timestamp: Some(1_000),
            partition: None,
        }
    }

    #[test]
    fn many_records_make_one_valid_batch() {
        let events: Vec<(usize, Event)> = (0..100)
            .map(|i| (i, event(Some(&format!("k{i}")), &format!("v{i}"))))
            .collect();
        let batch = encode_batch(&events, 5, None).unwrap().freeze();
        let batches = storage::batch::split_and_validate(&batch).unwrap();
        assert_eq!(batches.len(), 1, "one batch for all records");
        let header = &batches[0].0;
        assert_eq!(header.last_offset_delta, 99);
        assert_eq!(header.base_sequence, -1);
        assert_eq!(header.producer_id, -1);
        let mut bytes = batch.clone();
        let decoded = RecordBatchDecoder::decode(&mut bytes).unwrap();
        assert_eq!(decoded.records.len(), 100);
        assert_eq!(decoded.records[7].key.as_deref(), Some(&b"k7"[..]));
        assert_eq!(decoded.records[7].value.as_deref(), Some(&b"v7"[..]));
        assert_eq!(decoded.records[7].timestamp, 1_000);
    }

    #[test]
    fn batches_are_cut_below_the_limit() {
        let events: Vec<(usize, Event)> = (0..50)
            .map(|i| (i, event(None, &"x".repeat(1000))))
            .collect();
        let cut = cut_batches(events, 10_000);
        assert!(cut.len() >= 5);
        let mut seen = 0;
        for chunk in &cut {
            let batch = encode_batch(chunk, 0, None).unwrap();
            assert!(batch.len() <= 10_000, "batch of {} bytes", batch.len());
            for (index, _) in chunk {
                assert_eq!(*index, seen, "order is kept");
                seen += 1;
            }
        }
        assert_eq!(seen, 50);
    }

    #[test]
    fn size_bound_is_an_upper_bound() {
        let e = event(Some("key"), &"y".repeat(300));
        let batch = encode_batch(&[(0, e.clone())], 0, None).unwrap();
        assert!(batch.len() <= BATCH_HEADER_BYTES + e.encoded_size_bound());
    }
}
