//! Confluent REST Proxy API v2: `POST /topics/{topic}`, `POST /topics/{topic}/partitions/{p}`,
//! `GET /topics`, `GET /topics/{topic}`.
//!
//! Embedded formats by Content-Type: `application/vnd.kafka.json.v2+json` (key/value any JSON,
//! stored as compact JSON text), `application/vnd.kafka.binary.v2+json` (base64),
//! `application/vnd.kafka.text.v2+json` (strings, as Strimzi's bridge accepts). Records may carry
//! `partition` and a `headers` list (`[{"key"|"name": ..., "value": base64}]`, Strimzi/Karapace style).
//! Answers one `offsets[]` entry per record with `partition`, `offset`, `error_code` (REST Proxy's
//! 1 = not retriable, 2 = retriable) and `error`. Schema-registry formats (avro, jsonschema,
//! protobuf) are refused with 415.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use kafka_protocol::protocol::StrBytes;

use crate::error::{ApiError, ErrorKind, ErrorStyle};
use crate::native::media_type;
use crate::produce::{Event, Outcome};
use crate::Shared;

pub(crate) const V2_CONTENT_TYPE: &str = "application/vnd.kafka.v2+json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EmbeddedFormat {
    Json,
    Binary,
    Text,
}

pub(crate) fn embedded_format(headers: &HeaderMap) -> Result<EmbeddedFormat, ApiError> {
    let media = media_type(headers);
    match media.as_deref() {
        Some("application/vnd.kafka.json.v2+json") => Ok(EmbeddedFormat::Json),
        Some("application/vnd.kafka.binary.v2+json") => Ok(EmbeddedFormat::Binary),
        Some("application/vnd.kafka.text.v2+json") => Ok(EmbeddedFormat::Text),
        other => Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            format!(
                "HTTP 415 Unsupported Media Type: {} (use application/vnd.kafka.{{json,binary,text}}.v2+json; schema-registry formats are not supported)",
                other.unwrap_or("no Content-Type")
            ),
        )),
    }
}

#[derive(Debug, Deserialize)]
struct V2Request {
    records: Vec<V2Record>,
    #[serde(default)]
    key_schema: Option<Value>,
    #[serde(default)]
    value_schema: Option<Value>,
    #[serde(default)]
    key_schema_id: Option<Value>,
    #[serde(default)]
    value_schema_id: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct V2Record {
    #[serde(default)]
    key: Option<Value>,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    partition: Option<i32>,
    #[serde(default)]
    headers: Option<Vec<V2Header>>,
}

#[derive(Debug, Deserialize)]
struct V2Header {
    #[serde(alias = "name")]
    key: String,
    #[serde(default)]
    value: Option<String>,
}

fn embedded(
    value: Option<Value>,
    format: EmbeddedFormat,
    what: &str,
) -> Result<Option<Bytes>, ApiError> {
    match (value, format) {
        (None | Some(Value::Null), _) => Ok(None),
        (Some(value), EmbeddedFormat::Json) => Ok(Some(Bytes::from(value.to_string()))),
        (Some(Value::String(text)), EmbeddedFormat::Binary) => {
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map(|b| Some(Bytes::from(b)))
                .map_err(|e| ApiError::invalid(format!("record {what} is not valid base64: {e}")))
        }
        (Some(Value::String(text)), EmbeddedFormat::Text) => Ok(Some(Bytes::from(text))),
        (Some(_), _) => Err(ApiError::invalid(format!(
            "record {what} must be a string in this embedded format"
        ))),
    }
}

pub(crate) fn decode_headers(
    list: impl IntoIterator<Item = (String, Option<String>)>,
) -> Result<Vec<(StrBytes, Option<Bytes>)>, ApiError> {
    let mut headers: Vec<(StrBytes, Option<Bytes>)> = Vec::new();
    for (name, value) in list {
        if headers.iter().any(|(n, _)| **n == *name) {
            // The batch encoder keys headers by name; refusing beats silently dropping one.
            return Err(ApiError::invalid(format!(
                "header '{name}' appears twice in one record"
            )));
        }
        let value = match value {
            None => None,
            Some(encoded) => Some(Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.as_bytes())
                    .map_err(|e| {
                        ApiError::invalid(format!("header '{name}' value is not valid base64: {e}"))
                    })?,
            )),
        };
        headers.push((StrBytes::from(name), value));
    }
    Ok(headers)
}

/// Parses a v2 produce body into events. Pure: property-tested.
pub(crate) fn parse_request(
    body: &[u8],
    format: EmbeddedFormat,
    partition: Option<i32>,
    max_events: usize,
) -> Result<Vec<Event>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty body: expected {\"records\": [...]}",
        ));
    }
    let request: V2Request = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed request: {e}")))?;
    if [
        &request.key_schema,
        &request.value_schema,
        &request.key_schema_id,
        &request.value_schema_id,
    ]
    .iter()
    .any(|s| s.as_ref().is_some_and(|v| !v.is_null()))
    {
        return Err(ApiError::invalid(
            "schemas are not supported: no schema registry",
        ));
    }
    if request.records.is_empty() {
        return Err(ApiError::invalid("records must not be empty"));
    }
    if request.records.len() > max_events {
        return Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("more than {max_events} records in one request"),
        ));
    }
    request
        .records
        .into_iter()
        .map(|record| {
            Ok(Event {
                key: embedded(record.key, format, "key")?,
                value: embedded(record.value, format, "value")?,
                headers: decode_headers(
                    record
                        .headers
                        .unwrap_or_default()
                        .into_iter()
                        .map(|h| (h.key, h.value)),
                )?,
                timestamp: None,
                partition: partition.or(record.partition),
            })
        })
        .collect()
}

fn v2_json(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(V2_CONTENT_TYPE),
        )],
        body.to_string(),
    )
        .into_response()
}

fn offsets_body(outcomes: &[Outcome]) -> Value {
    let offsets: Vec<Value> = outcomes
        .iter()
        .map(|outcome| match outcome {
            Ok(d) => json!({"partition": d.partition, "offset": d.offset, "error_code": null, "error": null}),
            Err(e) => json!({"partition": null, "offset": null, "error_code": e.v2_record_code(), "error": e.message}),
        })
        .collect();
    json!({"key_schema_id": null, "value_schema_id": null, "offsets": offsets})
}

async fn produce_to(
    shared: &Shared,
    topic: &str,
    partition: Option<i32>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let format = embedded_format(headers)?;
    let events = parse_request(
        body,
        format,
        partition,
        shared.config.max_events_per_request,
    )?;
    let topic_ref = shared.producer.topic(topic, true).await?;
    if let Some(p) = partition {
        if p < 0 || p as u32 >= topic_ref.partitions() {
            return Err(ApiError::new(
                ErrorKind::UnknownPartition,
                format!("Partition {p} of topic {topic} not found."),
            ));
        }
    }
    let outcomes = shared.producer.produce(&topic_ref, events, None).await;
    Ok(v2_json(StatusCode::OK, offsets_body(&outcomes)))
}

pub(crate) async fn produce_topic(
    State(shared): State<Arc<Shared>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    produce_to(&shared, &topic, None, &headers, &body)
        .await
        .unwrap_or_else(|e| e.render(ErrorStyle::RestV2, None))
}

pub(crate) async fn produce_partition(
    State(shared): State<Arc<Shared>>,
    Path((topic, partition)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(partition) = partition.parse::<i32>() else {
        return ApiError::new(
            ErrorKind::UnknownPartition,
            format!("Partition {partition} of topic {topic} not found."),
        )
        .render(ErrorStyle::RestV2, None);
    };
    produce_to(&shared, &topic, Some(partition), &headers, &body)
        .await
        .unwrap_or_else(|e| e.render(ErrorStyle::RestV2, None))
}

pub(crate) async fn list_topics(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.producer.meta.state();
    let names: Vec<&String> = state.topic_ids.keys().collect();
    v2_json(StatusCode::OK, json!(names))
}

pub(crate) async fn get_topic(
    State(shared): State<Arc<Shared>>,
    Path(topic): Path<String>,
) -> Response {
    let state = shared.producer.meta.state();
    let Some(meta) = state.topic_by_name(&topic) else {
        return ApiError::unknown_topic(&topic).render(ErrorStyle::RestV2, None);
    };
    let mut configs = serde_json::Map::new();
    for def in broker::configs::TOPIC_CONFIGS {
        let value = broker::configs::effective(&meta.configs, def.name).unwrap_or(def.default);
        configs.insert(def.name.to_string(), json!(value));
    }
    let partitions: Vec<Value> = meta
        .partitions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            json!({
                "partition": index,
                "leader": p.owner,
                "replicas": [{"broker": p.owner, "leader": true, "in_sync": true}],
            })
        })
        .collect();
    v2_json(
        StatusCode::OK,
        json!({"name": meta.name, "configs": configs, "partitions": partitions}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_decode_keys_values_and_headers() {
        let body = br#"{"records":[{"key":{"id":1},"value":[1,"two"],"partition":0,"headers":[{"key":"h","value":"dmFsdWU="}]},{"value":null}]}"#;
        let events = parse_request(body, EmbeddedFormat::Json, None, 10).unwrap();
        assert_eq!(events[0].key.as_deref(), Some(&br#"{"id":1}"#[..]));
        assert_eq!(events[0].value.as_deref(), Some(&br#"[1,"two"]"#[..]));
        assert_eq!(events[0].partition, Some(0));
        assert_eq!(
            events[0].headers,
            vec![("h".into(), Some(Bytes::from_static(b"value")))]
        );
        assert_eq!(events[1].value, None);

        let body = br#"{"records":[{"key":"a2V5","value":"dmFs"}]}"#;
        let events = parse_request(body, EmbeddedFormat::Binary, Some(3), 10).unwrap();
        assert_eq!(events[0].key.as_deref(), Some(&b"key"[..]));
        assert_eq!(events[0].value.as_deref(), Some(&b"val"[..]));
        assert_eq!(events[0].partition, Some(3));

        let body = br#"{"records":[{"value":"plain text"}]}"#;
        let events = parse_request(body, EmbeddedFormat::Text, None, 10).unwrap();
        assert_eq!(events[0].value.as_deref(), Some(&b"plain text"[..]));
    }

    #[test]
    fn bad_input_is_refused_with_the_documented_kind() {
        let kind = |body: &[u8], format| parse_request(body, format, None, 2).unwrap_err().kind;
        assert_eq!(kind(b"", EmbeddedFormat::Json), ErrorKind::BadRequest);
        assert_eq!(
            kind(b"{\"records\":[", EmbeddedFormat::Json),
            ErrorKind::BadRequest
        );
        assert_eq!(
            kind(b"{\"records\":[]}", EmbeddedFormat::Json),
            ErrorKind::InvalidPayload
        );
        assert_eq!(
            kind(br#"{"records":[{"value":"!!"}]}"#, EmbeddedFormat::Binary),
            ErrorKind::InvalidPayload
        );
        assert_eq!(
            kind(br#"{"records":[{"value":1}]}"#, EmbeddedFormat::Text),
            ErrorKind::InvalidPayload
        );
        assert_eq!(
            kind(br#"{"records":[{},{},{}]}"#, EmbeddedFormat::Json),
            ErrorKind::PayloadTooLarge
        );
        assert_eq!(
            kind(
                br#"{"value_schema":"x","records":[{}]}"#,
                EmbeddedFormat::Json
            ),
            ErrorKind::InvalidPayload
        );
        assert_eq!(
            kind(br#"{"records":[{"headers":[{"key":"a","value":"YQ=="},{"key":"a","value":null}]}]}"#, EmbeddedFormat::Json),
            ErrorKind::InvalidPayload
        );
    }
}
