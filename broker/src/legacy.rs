//! Request versions that Sluice serves but kafka-protocol 0.18 has no schema for (ARCHITECTURE.md,
//! D1: a version only Sluice serves is checked on Sluice alone).
//!
//! OffsetCommit v1. Kafka 4.0 removed OffsetCommit v0 and v1 (KIP-896), but Sarama up to at least
//! 1.22 (the version Debian ships) commits with v1 whatever `Config.Version` says, unless
//! `Consumer.Offsets.Retention` is set, and never looks at ApiVersions. Without v1 its consumer
//! group cannot commit, and every failed commit closes the connection its partition consumers share.
//! The v1 body is read here into the v2 message the offsets handler serves; the v1 response has the
//! v2 layout (the throttle time only comes in v3, flexible versions in v8), so the request is handled
//! and answered at v2, which gives a v1 client exactly the bytes it expects.
//!
//! Decoding is bounded like kafka-protocol's: every length is checked against the bytes left before
//! anything is allocated, and a body that does not decode closes the connection (as any other).

use bytes::{Buf, Bytes};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

/// The OffsetCommit version decoded by [`decode_offset_commit_v1`].
pub(crate) const OFFSET_COMMIT_V1: i16 = 1;
/// The version a v1 OffsetCommit is handled and answered at (same response bytes).
pub(crate) const OFFSET_COMMIT_V1_ANSWERED_AS: i16 = 2;

/// Smallest encoding of a v1 topic (name length + partition count) and partition (index, offset,
/// timestamp, metadata length): bounds array lengths by the bytes left.
const MIN_TOPIC_BYTES: usize = 2 + 4;
const MIN_PARTITION_BYTES: usize = 4 + 8 + 8 + 2;

/// Decodes an OffsetCommit v1 body (after the request header) as the equivalent v2 request.
///
/// v1: `group_id`, `generation_id`, `member_id`, then per topic `name` and per partition
/// `partition_index`, `committed_offset`, `commit_timestamp`, `committed_metadata` (nullable).
/// v2 has the same fields less `commit_timestamp` plus a request-level `retention_time_ms`; both
/// are left at "broker default" (-1): the commit time is the broker's, as for every other version.
pub(crate) fn decode_offset_commit_v1(body: &mut Bytes) -> Result<OffsetCommitRequest, String> {
    let group_id = string(body, "group_id")?;
    let generation = int32(body, "generation_id")?;
    let member_id = string(body, "member_id")?;
    let topic_count = array_len(body, MIN_TOPIC_BYTES, "topics")?;
    let mut topics = Vec::with_capacity(topic_count);
    for _ in 0..topic_count {
        let name = string(body, "topic name")?;
        let partition_count = array_len(body, MIN_PARTITION_BYTES, "partitions")?;
        let mut partitions = Vec::with_capacity(partition_count);
        for _ in 0..partition_count {
            let partition_index = int32(body, "partition_index")?;
            let committed_offset = int64(body, "committed_offset")?;
            let _commit_timestamp = int64(body, "commit_timestamp")?;
            let committed_metadata = nullable_string(body, "committed_metadata")?;
            partitions.push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(partition_index)
                    .with_committed_offset(committed_offset)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(committed_metadata),
            );
        }
        topics.push(
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(name))
                .with_partitions(partitions),
        );
    }
    Ok(OffsetCommitRequest::default()
        .with_group_id(GroupId(group_id))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(member_id)
        .with_retention_time_ms(-1)
        .with_topics(topics))
}

fn need(body: &Bytes, bytes: usize, field: &str) -> Result<(), String> {
    if body.remaining() < bytes {
        return Err(format!(
            "{field}: {bytes} bytes needed, {} left",
            body.remaining()
        ));
    }
    Ok(())
}

fn int16(body: &mut Bytes, field: &str) -> Result<i16, String> {
    need(body, 2, field)?;
    Ok(body.get_i16())
}

fn int32(body: &mut Bytes, field: &str) -> Result<i32, String> {
    need(body, 4, field)?;
    Ok(body.get_i32())
}

fn int64(body: &mut Bytes, field: &str) -> Result<i64, String> {
    need(body, 8, field)?;
    Ok(body.get_i64())
}

fn nullable_string(body: &mut Bytes, field: &str) -> Result<Option<StrBytes>, String> {
    let len = int16(body, field)?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| format!("{field}: length {len}"))?;
    need(body, len, field)?;
    StrBytes::from_utf8(body.split_to(len))
        .map(Some)
        .map_err(|e| format!("{field}: {e}"))
}

fn string(body: &mut Bytes, field: &str) -> Result<StrBytes, String> {
    nullable_string(body, field)?.ok_or_else(|| format!("{field}: null"))
}

/// A non-nullable array length, at most what the bytes left can hold.
fn array_len(body: &mut Bytes, min_element_bytes: usize, field: &str) -> Result<usize, String> {
    let len = int32(body, field)?;
    let len = usize::try_from(len).map_err(|_| format!("{field}: length {len}"))?;
    if len > body.remaining() / min_element_bytes {
        return Err(format!(
            "{field}: {len} entries cannot fit in {} bytes",
            body.remaining()
        ));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn put_str(out: &mut BytesMut, s: &str) {
        out.put_i16(s.len() as i16);
        out.put_slice(s.as_bytes());
    }

    /// The body Sarama 1.22 sends: one topic, two partitions, one without metadata (null).
    fn sarama_body() -> BytesMut {
        let mut out = BytesMut::new();
        put_str(&mut out, "group");
        out.put_i32(3);
        put_str(&mut out, "member-1");
        out.put_i32(1);
        put_str(&mut out, "topic");
        out.put_i32(2);
        out.put_i32(0);
        out.put_i64(15);
        out.put_i64(-1);
        put_str(&mut out, "meta");
        out.put_i32(2);
        out.put_i64(7);
        out.put_i64(1_700_000_000_000);
        out.put_i16(-1);
        out
    }

    #[test]
    fn a_v1_body_becomes_the_v2_request() {
        let request = decode_offset_commit_v1(&mut sarama_body().freeze()).unwrap();
        assert_eq!(request.group_id.0.as_str(), "group");
        assert_eq!(request.generation_id_or_member_epoch, 3);
        assert_eq!(request.member_id.as_str(), "member-1");
        assert_eq!(request.retention_time_ms, -1);
        assert_eq!(request.topics.len(), 1);
        let topic = &request.topics[0];
        assert_eq!(topic.name.0.as_str(), "topic");
        let got: Vec<_> = topic
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.committed_metadata.as_ref().map(|m| m.to_string()),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![(0, 15, -1, Some("meta".into())), (2, 7, -1, None)]
        );
    }

    #[test]
    fn every_truncation_and_hostile_length_is_an_error() {
        let body = sarama_body().freeze();
        for len in 0..body.len() {
            assert!(
                decode_offset_commit_v1(&mut body.slice(..len)).is_err(),
                "a body cut at {len} of {} bytes decoded",
                body.len()
            );
        }
        // A topic count of i32::MAX in a short body; a negative (null) topic array; a null group.
        let mut hostile = BytesMut::new();
        put_str(&mut hostile, "g");
        hostile.put_i32(1);
        put_str(&mut hostile, "m");
        hostile.put_i32(i32::MAX);
        assert!(decode_offset_commit_v1(&mut hostile.freeze()).is_err());
        let mut null_topics = BytesMut::new();
        put_str(&mut null_topics, "g");
        null_topics.put_i32(1);
        put_str(&mut null_topics, "m");
        null_topics.put_i32(-1);
        assert!(decode_offset_commit_v1(&mut null_topics.freeze()).is_err());
        let mut null_group = BytesMut::new();
        null_group.put_i16(-1);
        null_group.put_i32(1);
        put_str(&mut null_group, "m");
        null_group.put_i32(0);
        assert!(decode_offset_commit_v1(&mut null_group.freeze()).is_err());
    }
}
