//! Request versions that Sluice serves but kafka-protocol 0.18 has no schema for (ARCHITECTURE.md,
//! D1: a version only Sluice serves is checked on Sluice alone).
//!
//! Kafka 4.0 removed old versions of several APIs (KIP-896), but Sarama up to at least 1.22 (the
//! version Debian ships) picks its request versions from `Config.Version` alone, never from
//! ApiVersions, and two of the versions it sends at any `Config.Version` are among the removed:
//!
//! - OffsetCommit v1, from its offset manager (v2 only when `Consumer.Offsets.Retention` is set).
//!   Without it a consumer group cannot commit, and every failed commit makes Sarama close the
//!   connection its partition consumers share. The v1 body is read here into the v2 message the
//!   offsets handler serves; the v1 response has the v2 layout (the throttle time only comes in v3,
//!   flexible versions in v8), so the request is handled and answered at v2, which gives a v1 client
//!   exactly the bytes it expects.
//! - DescribeConfigs v0, from `ClusterAdmin.DescribeConfig` and `ListTopics`. The request is v1's
//!   without `include_synonyms`; it is handled as v1 (no synonyms), and the answer written here in
//!   the v0 layout: `is_default` (true where the source is DEFAULT_CONFIG) where v1 has
//!   `config_source`, and no synonyms.
//!
//! Decoding is bounded like kafka-protocol's: every length is checked against the bytes left before
//! anything is allocated, and a body that does not decode closes the connection (as any other).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeConfigsResponse, GroupId, OffsetCommitRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

/// The OffsetCommit version decoded by [`decode_offset_commit_v1`].
pub(crate) const OFFSET_COMMIT_V1: i16 = 1;
/// The version a v1 OffsetCommit is handled and answered at (same response bytes).
pub(crate) const OFFSET_COMMIT_V1_ANSWERED_AS: i16 = 2;

/// The DescribeConfigs version decoded by [`decode_describe_configs_v0`] and answered by
/// [`describe_configs_v0_response`].
pub(crate) const DESCRIBE_CONFIGS_V0: i16 = 0;
/// The version a v0 DescribeConfigs is handled at (v1 without synonyms has the same content).
pub(crate) const DESCRIBE_CONFIGS_V0_HANDLED_AS: i16 = 1;
/// Kafka's DEFAULT_CONFIG config source, which v0 reports as `is_default`.
const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// Smallest encoding of a v1 topic (name length + partition count) and partition (index, offset,
/// timestamp, metadata length): bounds array lengths by the bytes left.
const MIN_TOPIC_BYTES: usize = 2 + 4;
const MIN_PARTITION_BYTES: usize = 4 + 8 + 8 + 2;
/// Smallest DescribeConfigs v0 resource (type, name length, key count) and key (length).
const MIN_RESOURCE_BYTES: usize = 1 + 2 + 4;
const MIN_KEY_BYTES: usize = 2;

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

/// Decodes a DescribeConfigs v0 body: per resource `resource_type`, `resource_name` and
/// `configuration_keys` (nullable: all keys). The v1 request it becomes asks for no synonyms.
pub(crate) fn decode_describe_configs_v0(
    body: &mut Bytes,
) -> Result<DescribeConfigsRequest, String> {
    let count = array_len(body, MIN_RESOURCE_BYTES, "resources")?;
    let mut resources = Vec::with_capacity(count);
    for _ in 0..count {
        need(body, 1, "resource_type")?;
        let resource_type = body.get_i8();
        let resource_name = string(body, "resource_name")?;
        let keys = match nullable_array_len(body, MIN_KEY_BYTES, "configuration_keys")? {
            None => None,
            Some(count) => Some(
                (0..count)
                    .map(|_| string(body, "configuration key"))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        resources.push(
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(resource_name)
                .with_configuration_keys(keys),
        );
    }
    Ok(DescribeConfigsRequest::default()
        .with_resources(resources)
        .with_include_synonyms(false))
}

/// The whole v0 answer (response header v0 + body) to a DescribeConfigs handled as v1.
pub(crate) fn describe_configs_v0_response(
    correlation_id: i32,
    response: &DescribeConfigsResponse,
) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i32(correlation_id);
    out.put_i32(response.throttle_time_ms);
    put_array_len(&mut out, response.results.len());
    for result in &response.results {
        out.put_i16(result.error_code);
        put_nullable_string(&mut out, result.error_message.as_deref());
        out.put_i8(result.resource_type);
        put_nullable_string(&mut out, Some(&result.resource_name));
        put_array_len(&mut out, result.configs.len());
        for config in &result.configs {
            put_nullable_string(&mut out, Some(&config.name));
            put_nullable_string(&mut out, config.value.as_deref());
            out.put_u8(u8::from(config.read_only));
            out.put_u8(u8::from(config.config_source == SOURCE_DEFAULT_CONFIG));
            out.put_u8(u8::from(config.is_sensitive));
        }
    }
    out.freeze()
}

fn put_array_len(out: &mut BytesMut, len: usize) {
    // Lengths come from our own answers (config names and values, a bounded resource list).
    out.put_i32(i32::try_from(len).unwrap_or(i32::MAX));
}

fn put_nullable_string(out: &mut BytesMut, value: Option<&str>) {
    match value {
        None => out.put_i16(-1),
        Some(value) => {
            let len = value.len().min(i16::MAX as usize);
            out.put_i16(len as i16);
            out.put_slice(&value.as_bytes()[..len]);
        }
    }
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
    nullable_array_len(body, min_element_bytes, field)?.ok_or_else(|| format!("{field}: null"))
}

/// A nullable array length (-1: null), at most what the bytes left can hold.
fn nullable_array_len(
    body: &mut Bytes,
    min_element_bytes: usize,
    field: &str,
) -> Result<Option<usize>, String> {
    let len = int32(body, field)?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| format!("{field}: length {len}"))?;
    if len > body.remaining() / min_element_bytes {
        return Err(format!(
            "{field}: {len} entries cannot fit in {} bytes",
            body.remaining()
        ));
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_configs_response::{
        DescribeConfigsResourceResult, DescribeConfigsResult,
    };

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

    #[test]
    fn a_describe_configs_v0_body_becomes_the_v1_request() {
        // Two resources: a topic with two keys, a broker with all keys (null).
        let mut body = BytesMut::new();
        body.put_i32(2);
        body.put_i8(2);
        put_str(&mut body, "topic");
        body.put_i32(2);
        put_str(&mut body, "retention.ms");
        put_str(&mut body, "cleanup.policy");
        body.put_i8(4);
        put_str(&mut body, "1");
        body.put_i32(-1);
        let body = body.freeze();
        let request = decode_describe_configs_v0(&mut body.clone()).unwrap();
        assert!(!request.include_synonyms);
        let got: Vec<_> = request
            .resources
            .iter()
            .map(|r| {
                (
                    r.resource_type,
                    r.resource_name.to_string(),
                    r.configuration_keys
                        .as_ref()
                        .map(|keys| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>()),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    2,
                    "topic".to_string(),
                    Some(vec![
                        "retention.ms".to_string(),
                        "cleanup.policy".to_string()
                    ])
                ),
                (4, "1".to_string(), None),
            ]
        );
        for len in 0..body.len() {
            assert!(decode_describe_configs_v0(&mut body.slice(..len)).is_err());
        }
        let mut hostile = BytesMut::new();
        hostile.put_i32(1);
        hostile.put_i8(2);
        put_str(&mut hostile, "t");
        hostile.put_i32(i32::MAX);
        assert!(decode_describe_configs_v0(&mut hostile.freeze()).is_err());
    }

    #[test]
    fn the_describe_configs_v0_answer_has_is_default_and_no_synonyms() {
        let response = DescribeConfigsResponse::default()
            .with_throttle_time_ms(0)
            .with_results(vec![DescribeConfigsResult::default()
                .with_error_code(0)
                .with_error_message(None)
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("t"))
                .with_configs(vec![
                    DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_static_str("a"))
                        .with_value(Some(StrBytes::from_static_str("1")))
                        .with_config_source(1),
                    DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_static_str("b"))
                        .with_value(None)
                        .with_read_only(true)
                        .with_is_sensitive(true)
                        .with_config_source(SOURCE_DEFAULT_CONFIG),
                ])]);
        let bytes = describe_configs_v0_response(7, &response);
        #[rustfmt::skip]
        let want: &[u8] = &[
            0, 0, 0, 7, // correlation id
            0, 0, 0, 0, // throttle time
            0, 0, 0, 1, // one resource
            0, 0, 0xff, 0xff, 2, 0, 1, b't', // no error, null message, topic "t"
            0, 0, 0, 2, // two configs
            0, 1, b'a', 0, 1, b'1', 0, 0, 0, // "a" = "1", not read-only, not default, not sensitive
            0, 1, b'b', 0xff, 0xff, 1, 1, 1, // "b" = null, read-only, default, sensitive
        ];
        assert_eq!(&bytes[..], want);
    }

    #[test]
    fn random_bodies_never_panic() {
        // A fixed xorshift sequence: 20,000 bodies of up to 64 bytes, biased towards small
        // lengths and -1 so that the nested arrays and nullable fields are reached.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 65) as usize;
            let mut body = BytesMut::with_capacity(len);
            while body.len() < len {
                match next() % 4 {
                    0 => body.put_u8(0),
                    1 => body.put_u8(0xff),
                    2 => body.put_u8(1),
                    _ => body.put_u8(next() as u8),
                }
            }
            let body = body.freeze();
            let _ = decode_offset_commit_v1(&mut body.clone());
            let _ = decode_describe_configs_v0(&mut body.clone());
        }
    }
}
