//! What the Kafka proxy reads from the frames it forwards, from bytes alone (no I/O): the request
//! header's api key, version and correlation id; a response's correlation id; and of a Produce
//! request its `acks` and the identity of each sequenced record batch (topic, partition, producer
//! id, epoch, base sequence).
//!
//! Every function takes a frame's payload (after its 4-byte size) and answers `None` for anything
//! it does not understand: truncated, inconsistent or from a version it does not know. Nothing is
//! allocated from a length the input claims: arrays and batch lists grow one decoded entry at a
//! time, so their size is bounded by the frame's.

/// The API key of Produce.
pub(super) const PRODUCE: i16 = 0;

/// The fixed part of a request header (v1 and v2 start alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RequestInfo {
    pub(super) api_key: i16,
    pub(super) api_version: i16,
    pub(super) correlation_id: i32,
}

/// Reads the fixed part of a request header.
pub(super) fn request_info(payload: &[u8]) -> Option<RequestInfo> {
    let mut cursor = Cursor::new(payload);
    Some(RequestInfo {
        api_key: cursor.i16()?,
        api_version: cursor.i16()?,
        correlation_id: cursor.i32()?,
    })
}

/// The correlation id a response starts with (every response header version).
pub(super) fn response_correlation_id(payload: &[u8]) -> Option<i32> {
    Cursor::new(payload).i32()
}

/// One sequenced record batch of a Produce request. A retry sends the same key again.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct BatchKey {
    /// The topic name (v3–v12) or topic id (v13+), as sent.
    pub(super) topic: Vec<u8>,
    pub(super) partition: i32,
    pub(super) producer_id: i64,
    pub(super) producer_epoch: i16,
    pub(super) base_sequence: i32,
}

/// What the proxy needs of a Produce request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct ProduceSummary {
    /// 0 means the broker sends no answer.
    pub(super) acks: i16,
    /// Batches with a producer id (idempotent or transactional), in request order.
    pub(super) sequenced_batches: Vec<BatchKey>,
}

/// Reads a whole Produce request (header included), versions 0 to 13.
pub(super) fn produce_summary(payload: &[u8]) -> Option<ProduceSummary> {
    let mut cursor = Cursor::new(payload);
    let api_key = cursor.i16()?;
    let version = cursor.i16()?;
    if api_key != PRODUCE || !(0..=13).contains(&version) {
        return None;
    }
    let flexible = version >= 9;
    cursor.skip(4)?; // correlation id
    cursor.nullable_string()?; // client id: never compact, also in header v2
    if flexible {
        cursor.tagged_fields()?;
    }
    if version >= 3 {
        // transactional id
        if flexible {
            cursor.compact_nullable_bytes()?;
        } else {
            cursor.nullable_string()?;
        }
    }
    let acks = cursor.i16()?;
    cursor.skip(4)?; // timeout
    let mut summary = ProduceSummary {
        acks,
        sequenced_batches: Vec::new(),
    };
    let topics = cursor.array_len(flexible)?;
    for _ in 0..topics {
        let topic = if version >= 13 {
            cursor.bytes(16)?
        } else if flexible {
            cursor.compact_nullable_bytes()??
        } else {
            cursor.nullable_string()??
        };
        let partitions = cursor.array_len(flexible)?;
        for _ in 0..partitions {
            let partition = cursor.i32()?;
            let records = if flexible {
                cursor.compact_nullable_bytes()?
            } else {
                cursor.nullable_bytes()?
            };
            if flexible {
                cursor.tagged_fields()?;
            }
            for batch in records.map(record_batches).into_iter().flatten() {
                summary.sequenced_batches.push(BatchKey {
                    topic: topic.to_vec(),
                    partition,
                    producer_id: batch.producer_id,
                    producer_epoch: batch.producer_epoch,
                    base_sequence: batch.base_sequence,
                });
            }
        }
        if flexible {
            cursor.tagged_fields()?;
        }
    }
    Some(summary)
}

/// The producer fields of one v2 record batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchProducer {
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

/// Size of a v2 record batch header: base offset (8), length (4), leader epoch (4), magic (1),
/// CRC (4), attributes (2), last offset delta (4), base and max timestamp (16), producer id (8),
/// producer epoch (2), base sequence (4), record count (4).
const BATCH_HEADER_BYTES: usize = 61;

/// The sequenced (producer id ≥ 0) batches of a `records` field; stops at the first batch that is
/// not a complete magic-2 batch.
fn record_batches(records: &[u8]) -> Vec<BatchProducer> {
    let mut batches = Vec::new();
    let mut rest = records;
    while rest.len() >= BATCH_HEADER_BYTES {
        let mut cursor = Cursor::new(rest);
        let parsed = (|| {
            cursor.skip(8)?; // base offset
            let length = usize::try_from(cursor.i32()?).ok()?;
            cursor.skip(4)?; // partition leader epoch
            let magic = cursor.i8()?;
            cursor.skip(4 + 2 + 4 + 8 + 8)?; // CRC, attributes, delta, timestamps
            let producer = BatchProducer {
                producer_id: cursor.i64()?,
                producer_epoch: cursor.i16()?,
                base_sequence: cursor.i32()?,
            };
            let total = length.checked_add(12)?;
            (magic == 2 && total >= BATCH_HEADER_BYTES && total <= rest.len())
                .then_some((producer, total))
        })();
        let Some((producer, total)) = parsed else {
            break;
        };
        if producer.producer_id >= 0 {
            batches.push(producer);
        }
        rest = &rest[total..];
    }
    batches
}

/// A bounds-checked reader over a byte slice: every read answers `None` past the end.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { rest: bytes }
    }

    fn bytes(&mut self, count: usize) -> Option<&'a [u8]> {
        if count > self.rest.len() {
            return None;
        }
        let (taken, rest) = self.rest.split_at(count);
        self.rest = rest;
        Some(taken)
    }

    fn skip(&mut self, count: usize) -> Option<()> {
        self.bytes(count).map(|_| ())
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }

    fn i8(&mut self) -> Option<i8> {
        self.array().map(i8::from_be_bytes)
    }

    fn i16(&mut self) -> Option<i16> {
        self.array().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_be_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_be_bytes)
    }

    /// An unsigned varint of at most 5 bytes (a `u32`).
    fn unsigned_varint(&mut self) -> Option<u32> {
        let mut value: u32 = 0;
        for index in 0..5 {
            let byte = self.i8()? as u8;
            value |= u32::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// `i16` length then bytes; `Some(None)` for null (-1).
    fn nullable_string(&mut self) -> Option<Option<&'a [u8]>> {
        match self.i16()? {
            -1 => Some(None),
            length => self.bytes(usize::try_from(length).ok()?).map(Some),
        }
    }

    /// `i32` length then bytes; `Some(None)` for null (-1).
    fn nullable_bytes(&mut self) -> Option<Option<&'a [u8]>> {
        match self.i32()? {
            -1 => Some(None),
            length => self.bytes(usize::try_from(length).ok()?).map(Some),
        }
    }

    /// Unsigned varint length + 1 then bytes (compact string or bytes); `Some(None)` for null (0).
    fn compact_nullable_bytes(&mut self) -> Option<Option<&'a [u8]>> {
        match self.unsigned_varint()? {
            0 => Some(None),
            length_plus_one => self
                .bytes(usize::try_from(length_plus_one - 1).ok()?)
                .map(Some),
        }
    }

    /// The entry count of an array (a null array counts as empty).
    fn array_len(&mut self, compact: bool) -> Option<u32> {
        if compact {
            Some(self.unsigned_varint()?.saturating_sub(1))
        } else {
            match self.i32()? {
                -1 => Some(0),
                count => u32::try_from(count).ok(),
            }
        }
    }

    fn tagged_fields(&mut self) -> Option<()> {
        let count = self.unsigned_varint()?;
        for _ in 0..count {
            self.unsigned_varint()?; // tag
            let size = self.unsigned_varint()?;
            self.skip(usize::try_from(size).ok()?)?;
        }
        Some(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use bytes::{BufMut as _, BytesMut};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
    use kafka_protocol::protocol::{Encodable as _, StrBytes};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use super::*;

    fn batch(producer_id: i64, epoch: i16, base_sequence: i32, records: i32) -> BytesMut {
        let records: Vec<Record> = (0..records)
            .map(|index| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i64::from(index),
                sequence: base_sequence + index,
                timestamp: 0,
                key: None,
                value: Some(bytes::Bytes::from_static(b"v")),
                headers: Default::default(),
            })
            .collect();
        let mut encoded = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut encoded,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .expect("encoding a record batch");
        encoded
    }

    /// A Produce request's frame payload (header + body) of `version` with two topics: three
    /// sequenced batches (producers 7 and 8) and one batch without a producer id.
    pub(in crate::kafka_proxy) fn produce_request(version: i16, acks: i16) -> Vec<u8> {
        let mut two_batches = batch(7, 1, 10, 3);
        two_batches.extend_from_slice(&batch(7, 1, 13, 2));
        let topic = |name: &'static str, partitions: Vec<PartitionProduceData>| {
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(name)))
                .with_topic_id(uuid::Uuid::from_u128(u128::from(name.len() as u32)))
                .with_partition_data(partitions)
        };
        let request = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(1000)
            .with_topic_data(vec![
                topic(
                    "alpha",
                    vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(two_batches.freeze())),
                        PartitionProduceData::default()
                            .with_index(1)
                            // Not sequenced: not reported.
                            .with_records(Some(batch(-1, -1, -1, 1).freeze())),
                    ],
                ),
                topic(
                    "be",
                    vec![PartitionProduceData::default()
                        .with_index(2)
                        .with_records(Some(batch(8, 0, 0, 1).freeze()))],
                ),
            ]);
        let header = RequestHeader::default()
            .with_request_api_key(PRODUCE)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let mut buffer = BytesMut::new();
        header
            .encode(&mut buffer, ApiKey::Produce.request_header_version(version))
            .expect("encoding the header");
        request
            .encode(&mut buffer, version)
            .expect("encoding the request");
        buffer.to_vec()
    }

    #[test]
    fn produce_requests_of_every_version_are_read() {
        for version in 3..=13 {
            let payload = produce_request(version, -1);
            assert_eq!(
                request_info(&payload),
                Some(RequestInfo {
                    api_key: PRODUCE,
                    api_version: version,
                    correlation_id: 42
                })
            );
            let summary = produce_summary(&payload).expect("a produce request");
            assert_eq!(summary.acks, -1, "v{version}");
            let keys: Vec<(usize, i32, i64, i16, i32)> = summary
                .sequenced_batches
                .iter()
                .map(|key| {
                    (
                        key.topic.len(),
                        key.partition,
                        key.producer_id,
                        key.producer_epoch,
                        key.base_sequence,
                    )
                })
                .collect();
            let (alpha, be) = if version >= 13 { (16, 16) } else { (5, 2) };
            assert_eq!(
                keys,
                vec![(alpha, 0, 7, 1, 10), (alpha, 0, 7, 1, 13), (be, 2, 8, 0, 0)],
                "v{version}"
            );
            assert_ne!(
                summary.sequenced_batches[0].topic, summary.sequenced_batches[2].topic,
                "v{version}: topics are told apart"
            );
        }
        assert_eq!(
            produce_summary(&produce_request(7, 0)).map(|s| s.acks),
            Some(0)
        );
    }

    #[test]
    fn odd_input_is_not_understood_and_never_panics() {
        let payload = produce_request(9, 1);
        // Every truncation: no panic; a short header is not understood.
        for end in 0..payload.len() {
            let _ = produce_summary(&payload[..end]);
            assert_eq!(request_info(&payload[..end]).is_some(), end >= 8);
        }
        // Every single-byte corruption: no panic.
        for at in 0..payload.len() {
            for value in [0x00, 0x7f, 0x80, 0xff] {
                let mut corrupt = payload.clone();
                corrupt[at] = value;
                let _ = produce_summary(&corrupt);
            }
        }
        // Not a produce request, or an unknown version.
        let mut other = payload.clone();
        other[1] = 1;
        assert_eq!(produce_summary(&other), None);
        let mut future = payload.clone();
        future[3] = 99;
        assert_eq!(produce_summary(&future), None);
        // Lengths claiming more than there is.
        let mut huge = BytesMut::new();
        huge.put_i16(PRODUCE);
        huge.put_i16(3);
        huge.put_i32(1);
        huge.put_i16(-1); // client id
        huge.put_i16(-1); // transactional id
        huge.put_i16(1);
        huge.put_i32(0);
        huge.put_i32(i32::MAX); // topics
        assert_eq!(produce_summary(&huge), None);
        assert_eq!(response_correlation_id(&[0, 0, 1]), None);
        assert_eq!(response_correlation_id(&[0, 0, 1, 2, 9]), Some(258));
    }

    #[test]
    fn a_batch_list_stops_at_the_first_incomplete_batch() {
        let mut records = batch(3, 0, 0, 2);
        let first = records.len();
        records.extend_from_slice(&batch(3, 0, 2, 2));
        let whole = record_batches(&records);
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[1].base_sequence, 2);
        assert_eq!(record_batches(&records[..records.len() - 1]).len(), 1);
        assert_eq!(record_batches(&records[..first - 1]).len(), 0);
        let mut wrong_magic = records.clone();
        wrong_magic[16] = 1;
        assert_eq!(record_batches(&wrong_magic).len(), 0);
    }
}
