//! Confluent REST Proxy API v3: `GET /v3/clusters`, `GET /v3/clusters/{cluster_id}`,
//! `GET /v3/clusters/{cluster_id}/topics`, `GET /v3/clusters/{cluster_id}/topics/{topic}`,
//! `POST …/topics/{topic}/records` and `POST …/topics/{topic}/records:batch`.
//!
//! `records` takes one record, or concatenated JSON records: with a `Content-Length` body holding
//! one record the answer is that record's delivery report (or its error, with its HTTP status);
//! with several records, or a chunked body (streaming), the answer is 200 and a stream of delivery
//! reports, one per record, in order, each sent as soon as its record is durable. Records are read
//! as they arrive, so a long-lived stream uses bounded memory (the in-flight budget is awaited,
//! which pushes back on the sender through TCP).
//!
//! Record data types: BINARY (base64), JSON (stored as compact JSON text), STRING; schema-registry
//! types are refused with 42206. `headers` values are base64. Topics are never auto-created here
//! (REST Proxy v3 answers 404 / 40401).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ErrorKind, ErrorStyle};
use crate::layers::{read_body, InflightBytes};
use crate::native::media_type;
use crate::produce::{Delivered, Event, Outcome, TopicRef};
use crate::rest_v2::decode_headers;
use crate::time::{format_rfc3339_ms, parse_rfc3339_ms};
use crate::Shared;

#[derive(Debug, Deserialize)]
pub(crate) struct V3Record {
    #[serde(default)]
    partition_id: Option<i32>,
    #[serde(default)]
    headers: Option<Vec<V3Header>>,
    #[serde(default)]
    key: Option<V3Data>,
    #[serde(default)]
    value: Option<V3Data>,
    #[serde(default)]
    timestamp: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct V3Header {
    name: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
struct V3Data {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    subject: Option<Value>,
    #[serde(default)]
    schema_id: Option<Value>,
    #[serde(default)]
    schema_version: Option<Value>,
    #[serde(default)]
    schema: Option<Value>,
}

/// What a key or value was sent as, for the delivery report (`{"type", "size"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataInfo {
    kind: &'static str,
    size: usize,
}

/// A parsed v3 record: the event plus what its report needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedRecord {
    pub(crate) event: Event,
    key: Option<DataInfo>,
    value: Option<DataInfo>,
}

fn data(field: Option<V3Data>, what: &str) -> Result<(Option<Bytes>, Option<DataInfo>), ApiError> {
    let Some(field) = field else {
        return Ok((None, None));
    };
    if [
        &field.subject,
        &field.schema_id,
        &field.schema_version,
        &field.schema,
    ]
    .iter()
    .any(|v| v.is_some())
    {
        return Err(ApiError::invalid(format!(
            "{what}: schema-registry serialization is not supported"
        )));
    }
    let kind = field.kind.as_deref().unwrap_or("JSON").to_ascii_uppercase();
    let bytes = match (kind.as_str(), field.data) {
        (_, None) => None,
        ("JSON", Some(Value::Null)) => None,
        ("JSON", Some(value)) => Some(Bytes::from(value.to_string())),
        ("BINARY", Some(Value::String(text))) => Some(Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(|e| ApiError::invalid(format!("{what}: data is not valid base64: {e}")))?,
        )),
        ("STRING", Some(Value::String(text))) => Some(Bytes::from(text)),
        ("BINARY" | "STRING", Some(Value::Null)) => None,
        ("BINARY" | "STRING", Some(_)) => {
            return Err(ApiError::invalid(format!(
                "{what}: data of type {kind} must be a string"
            )))
        }
        (other, Some(_)) => {
            return Err(ApiError::invalid(format!(
                "{what}: type {other} is not supported (BINARY, JSON, STRING)"
            )))
        }
    };
    let kind: &'static str = match kind.as_str() {
        "BINARY" => "BINARY",
        "STRING" => "STRING",
        _ => "JSON",
    };
    let info = bytes.as_ref().map(|b| DataInfo {
        kind,
        size: b.len(),
    });
    Ok((bytes, info))
}

pub(crate) fn convert(record: V3Record) -> Result<ParsedRecord, ApiError> {
    let (key, key_info) = data(record.key, "key")?;
    let (value, value_info) = data(record.value, "value")?;
    let timestamp = match record.timestamp {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(parse_rfc3339_ms(&text).ok_or_else(|| {
            ApiError::invalid(format!(
                "timestamp '{text}' is not an ISO-8601 / RFC 3339 date-time"
            ))
        })?),
        Some(Value::Number(n)) => Some(n.as_i64().filter(|ms| *ms >= 0).ok_or_else(|| {
            ApiError::invalid("timestamp must be non-negative milliseconds or an RFC 3339 string")
        })?),
        Some(_) => return Err(ApiError::invalid("timestamp must be a string")),
    };
    let headers = decode_headers(
        record
            .headers
            .unwrap_or_default()
            .into_iter()
            .map(|h| (h.name, h.value)),
    )?;
    Ok(ParsedRecord {
        event: Event {
            key,
            value,
            headers,
            timestamp,
            partition: record.partition_id,
        },
        key: key_info,
        value: value_info,
    })
}

/// Parses one record object. Pure: property-tested.
#[cfg(test)]
pub(crate) fn parse_record(bytes: &[u8]) -> Result<ParsedRecord, ApiError> {
    let record: V3Record = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed record: {e}")))?;
    convert(record)
}

/// Splits concatenated JSON records off the front of `buffer`. Returns the records (or their
/// per-record conversion errors) and how many bytes they used. A syntax error ends the stream
/// (there is no way to find the next record); an incomplete record at the end waits for more bytes.
pub(crate) fn split_records(
    buffer: &[u8],
    at_end: bool,
) -> (Vec<Result<ParsedRecord, ApiError>>, usize, Option<ApiError>) {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(buffer).into_iter::<Value>();
    let mut used = 0;
    loop {
        match stream.next() {
            None => {
                used = buffer.len();
                break;
            }
            Some(Ok(value)) => {
                used = stream.byte_offset();
                out.push(
                    serde_json::from_value::<V3Record>(value)
                        .map_err(|e| ApiError::bad_request(format!("malformed record: {e}")))
                        .and_then(convert),
                );
            }
            Some(Err(error)) if error.is_eof() && !at_end => break,
            Some(Err(error)) => {
                return (
                    out,
                    used,
                    Some(ApiError::bad_request(format!("malformed JSON: {error}"))),
                )
            }
        }
    }
    (out, used, None)
}

fn v3_json(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn check_cluster(shared: &Shared, cluster_id: &str) -> Result<(), ApiError> {
    if cluster_id == shared.cluster_id {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::UnknownCluster,
            format!("Cluster {cluster_id} cannot be found."),
        ))
    }
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    match media_type(headers).as_deref() {
        Some("application/json") => Ok(()),
        other => Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            format!(
                "HTTP 415 Unsupported Media Type: {} (use application/json)",
                other.unwrap_or("no Content-Type")
            ),
        )),
    }
}

fn info_json(info: &Option<DataInfo>) -> Value {
    match info {
        Some(info) => json!({"type": info.kind, "size": info.size}),
        None => Value::Null,
    }
}

fn report(
    shared: &Shared,
    topic: &str,
    record_key: &Option<DataInfo>,
    record_value: &Option<DataInfo>,
    outcome: &Outcome,
) -> (StatusCode, Value) {
    match outcome {
        Ok(Delivered {
            partition,
            offset,
            timestamp,
        }) => (
            StatusCode::OK,
            json!({
                "error_code": 200,
                "cluster_id": shared.cluster_id,
                "topic_name": topic,
                "partition_id": partition,
                "offset": offset,
                "timestamp": format_rfc3339_ms(*timestamp),
                "key": info_json(record_key),
                "value": info_json(record_value),
            }),
        ),
        Err(error) => (
            error.status(),
            json!({"error_code": error.rest_code(), "message": error.message}),
        ),
    }
}

/// Produces parsed records (conversion failures keep their error) in order; one result each.
async fn produce_parsed(
    shared: &Shared,
    topic: &TopicRef,
    parsed: Vec<Result<ParsedRecord, ApiError>>,
) -> Vec<(Option<DataInfo>, Option<DataInfo>, Outcome)> {
    let mut events = Vec::new();
    let mut slots = Vec::with_capacity(parsed.len());
    for item in parsed {
        match item {
            Ok(record) => {
                slots.push((record.key, record.value, None));
                events.push(record.event);
            }
            Err(error) => slots.push((None, None, Some(error))),
        }
    }
    let mut outcomes = shared
        .producer
        .produce(topic, events, None)
        .await
        .into_iter();
    slots
        .into_iter()
        .map(|(key, value, error)| {
            let outcome = match error {
                Some(error) => Err(error),
                None => outcomes.next().unwrap_or_else(|| {
                    Err(ApiError::new(
                        ErrorKind::Internal,
                        "record was not processed",
                    ))
                }),
            };
            (key, value, outcome)
        })
        .collect()
}

pub(crate) async fn produce_records(
    State(shared): State<Arc<Shared>>,
    Path((cluster_id, topic)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let fail = |e: ApiError| e.render(ErrorStyle::RestV3, None);
    if let Err(e) =
        check_cluster(&shared, &cluster_id).and_then(|_| check_json_content_type(&headers))
    {
        return fail(e);
    }
    let topic_ref = match shared.producer.topic(&topic, false).await {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    // A body of known length (Content-Length) is read whole; only a chunked body streams.
    let known_length = headers.contains_key(header::CONTENT_LENGTH)
        || http_body::Body::size_hint(&body).exact().is_some();
    if known_length {
        let (bytes, budget) = match read_body(&shared, &headers, body).await {
            Ok(read) => read,
            Err(e) => return fail(e),
        };
        let (parsed, _, syntax) = split_records(&bytes, true);
        if parsed.is_empty() {
            return fail(
                syntax.unwrap_or_else(|| ApiError::bad_request("empty body: expected a record")),
            );
        }
        let single = parsed.len() == 1 && syntax.is_none();
        let results = produce_parsed(&shared, &topic_ref, parsed).await;
        drop(budget);
        if single {
            if let Some((key, value, outcome)) = results.first() {
                let (status, body) = report(&shared, &topic, key, value, outcome);
                return v3_json(status, body);
            }
        }
        let mut text = String::new();
        for (key, value, outcome) in &results {
            text.push_str(&report(&shared, &topic, key, value, outcome).1.to_string());
            text.push('\n');
        }
        if let Some(error) = syntax {
            text.push_str(
                &json!({"error_code": error.rest_code(), "message": error.message}).to_string(),
            );
            text.push('\n');
        }
        return (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            text,
        )
            .into_response();
    }
    // Streaming: reports flow back while the request body is still arriving.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(stream_records(shared, topic, topic_ref, body, sender));
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn stream_records(
    shared: Arc<Shared>,
    topic: String,
    topic_ref: TopicRef,
    body: Body,
    sender: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let limit = shared.config.max_body_bytes;
    let mut budget = InflightBytes::new(shared.clone());
    let mut buffer = BytesMut::new();
    let mut chunks = body.into_data_stream();
    let send_line = |value: Value| {
        let mut line = value.to_string();
        line.push('\n');
        Bytes::from(line)
    };
    loop {
        let next = chunks.next().await;
        let at_end = next.is_none();
        match next {
            None => {}
            Some(Err(error)) => {
                tracing::debug!(%error, "v3 stream ended with a body error");
                return;
            }
            Some(Ok(chunk)) => {
                if let Err(error) = budget.take(chunk.len()).await {
                    let _ = sender
                        .send(Ok(send_line(
                            json!({"error_code": error.rest_code(), "message": error.message}),
                        )))
                        .await;
                    return;
                }
                buffer.extend_from_slice(&chunk);
            }
        }
        let (parsed, used, syntax) = split_records(&buffer, at_end);
        let _ = buffer.split_to(used.min(buffer.len()));
        if !parsed.is_empty() {
            for (key, value, outcome) in produce_parsed(&shared, &topic_ref, parsed).await {
                let (_, body) = report(&shared, &topic, &key, &value, &outcome);
                if sender.send(Ok(send_line(body))).await.is_err() {
                    return; // The client went away.
                }
            }
        }
        // The records of this chunk are answered; what is still buffered is one incomplete record,
        // bounded by `limit` below. The budget is taken again chunk by chunk.
        budget.release();
        let stop = syntax.or_else(|| {
            (buffer.len() > limit).then(|| {
                ApiError::new(
                    ErrorKind::PayloadTooLarge,
                    format!("a record exceeds the limit of {limit} bytes"),
                )
            })
        });
        if let Some(error) = stop {
            let _ = sender
                .send(Ok(send_line(
                    json!({"error_code": error.rest_code(), "message": error.message}),
                )))
                .await;
            return;
        }
        if at_end {
            return;
        }
    }
}

#[derive(Debug, Deserialize)]
struct BatchRequest {
    entries: Vec<BatchEntry>,
}

#[derive(Debug, Deserialize)]
struct BatchEntry {
    id: String,
    #[serde(flatten)]
    record: V3Record,
}

/// One `records:batch` entry: its id and the record (or why it is unusable).
pub(crate) type BatchItem = (String, Result<ParsedRecord, ApiError>);

/// Parses a `records:batch` body into `(id, record)` pairs. Pure: property-tested.
pub(crate) fn parse_batch(body: &[u8], max_events: usize) -> Result<Vec<BatchItem>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty body: expected {\"entries\": [...]}",
        ));
    }
    let request: BatchRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed request: {e}")))?;
    if request.entries.is_empty() {
        return Err(ApiError::invalid("entries must not be empty"));
    }
    if request.entries.len() > max_events {
        return Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("more than {max_events} entries in one request"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for entry in &request.entries {
        if !seen.insert(entry.id.as_str()) {
            return Err(ApiError::invalid(format!(
                "entry id '{}' is not unique",
                entry.id
            )));
        }
    }
    Ok(request
        .entries
        .into_iter()
        .map(|entry| (entry.id, convert(entry.record)))
        .collect())
}

pub(crate) async fn produce_batch(
    State(shared): State<Arc<Shared>>,
    Path((cluster_id, topic)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        check_cluster(&shared, &cluster_id)?;
        check_json_content_type(&headers)?;
        let entries = parse_batch(&body, shared.config.max_events_per_request)?;
        let topic_ref = shared.producer.topic(&topic, false).await?;
        let (ids, parsed): (Vec<String>, Vec<_>) = entries.into_iter().unzip();
        let results = produce_parsed(&shared, &topic_ref, parsed).await;
        let mut successes = Vec::new();
        let mut failures = Vec::new();
        for (id, (key, value, outcome)) in ids.into_iter().zip(results) {
            let (_, mut body) = report(&shared, &topic, &key, &value, &outcome);
            body["id"] = json!(id);
            if outcome.is_ok() {
                if let Value::Object(map) = &mut body {
                    map.remove("error_code");
                }
                successes.push(body);
            } else {
                failures.push(body);
            }
        }
        Ok::<_, ApiError>(v3_json(
            StatusCode::MULTI_STATUS,
            json!({"successes": successes, "failures": failures}),
        ))
    }
    .await;
    result.unwrap_or_else(|e| e.render(ErrorStyle::RestV3, None))
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}/v3")
}

fn cluster_json(shared: &Shared, base: &str) -> Value {
    let id = &shared.cluster_id;
    let url = format!("{base}/clusters/{id}");
    json!({
        "kind": "KafkaCluster",
        "metadata": {"self": url, "resource_name": format!("crn:///kafka={id}")},
        "cluster_id": id,
        "controller": {"related": format!("{url}/brokers/{}", shared.producer.node_id)},
        "acls": {"related": format!("{url}/acls")},
        "brokers": {"related": format!("{url}/brokers")},
        "broker_configs": {"related": format!("{url}/broker-configs")},
        "consumer_groups": {"related": format!("{url}/consumer-groups")},
        "topics": {"related": format!("{url}/topics")},
        "partition_reassignments": {"related": format!("{url}/topics/-/partitions/-/reassignment")},
    })
}

fn topic_json(shared: &Shared, base: &str, meta: &metadata::TopicMeta) -> Value {
    let id = &shared.cluster_id;
    let url = format!("{base}/clusters/{id}/topics/{}", meta.name);
    json!({
        "kind": "KafkaTopic",
        "metadata": {"self": url, "resource_name": format!("crn:///kafka={id}/topic={}", meta.name)},
        "cluster_id": id,
        "topic_name": meta.name,
        "is_internal": false,
        "replication_factor": 1,
        "partitions_count": meta.partitions.len(),
        "partitions": {"related": format!("{url}/partitions")},
        "configs": {"related": format!("{url}/configs")},
        "partition_reassignments": {"related": format!("{url}/partitions/-/reassignment")},
        "authorized_operations": [],
    })
}

pub(crate) async fn list_clusters(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    let base = base_url(&headers);
    v3_json(
        StatusCode::OK,
        json!({
            "kind": "KafkaClusterList",
            "metadata": {"self": format!("{base}/clusters"), "next": null},
            "data": [cluster_json(&shared, &base)],
        }),
    )
}

pub(crate) async fn get_cluster(
    State(shared): State<Arc<Shared>>,
    Path(cluster_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match check_cluster(&shared, &cluster_id) {
        Ok(()) => v3_json(StatusCode::OK, cluster_json(&shared, &base_url(&headers))),
        Err(e) => e.render(ErrorStyle::RestV3, None),
    }
}

pub(crate) async fn list_topics(
    State(shared): State<Arc<Shared>>,
    Path(cluster_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = check_cluster(&shared, &cluster_id) {
        return e.render(ErrorStyle::RestV3, None);
    }
    let base = base_url(&headers);
    let state = shared.producer.meta.state();
    let data: Vec<Value> = state
        .topic_ids
        .values()
        .filter_map(|id| state.topics.get(id))
        .map(|meta| topic_json(&shared, &base, meta))
        .collect();
    v3_json(
        StatusCode::OK,
        json!({
            "kind": "KafkaTopicList",
            "metadata": {"self": format!("{base}/clusters/{cluster_id}/topics"), "next": null},
            "data": data,
        }),
    )
}

pub(crate) async fn get_topic(
    State(shared): State<Arc<Shared>>,
    Path((cluster_id, topic)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = check_cluster(&shared, &cluster_id) {
        return e.render(ErrorStyle::RestV3, None);
    }
    let state = shared.producer.meta.state();
    match state.topic_by_name(&topic) {
        Some(meta) => v3_json(
            StatusCode::OK,
            topic_json(&shared, &base_url(&headers), meta),
        ),
        None => ApiError::unknown_topic(&topic).render(ErrorStyle::RestV3, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_types_timestamps_and_headers() {
        let r = parse_record(
            br#"{"partition_id":1,"headers":[{"name":"h","value":"aGk="}],"key":{"type":"STRING","data":"k"},"value":{"type":"BINARY","data":"AAEC"},"timestamp":"2021-02-05T19:14:42.123Z"}"#,
        )
        .unwrap();
        assert_eq!(r.event.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.event.value.as_deref(), Some(&[0u8, 1, 2][..]));
        assert_eq!(r.event.partition, Some(1));
        assert_eq!(r.event.timestamp, Some(1_612_552_482_123));
        assert_eq!(
            r.event.headers,
            vec![("h".into(), Some(Bytes::from_static(b"hi")))]
        );
        assert_eq!(
            r.value,
            Some(DataInfo {
                kind: "BINARY",
                size: 3
            })
        );
        let r = parse_record(br#"{"value":{"data":{"a":[1,2]}}}"#).unwrap();
        assert_eq!(r.event.value.as_deref(), Some(&br#"{"a":[1,2]}"#[..]));
        assert_eq!(
            r.value,
            Some(DataInfo {
                kind: "JSON",
                size: 11
            })
        );
    }

    #[test]
    fn bad_records() {
        let kind = |b: &[u8]| parse_record(b).unwrap_err().kind;
        assert_eq!(
            kind(br#"{"value":{"type":"BINARY","data":"%%%"}}"#),
            ErrorKind::InvalidPayload
        );
        assert_eq!(
            kind(br#"{"value":{"type":"AVRO","data":{}}}"#),
            ErrorKind::InvalidPayload
        );
        assert_eq!(
            kind(br#"{"value":{"schema_id":1,"data":{}}}"#),
            ErrorKind::InvalidPayload
        );
        assert_eq!(
            kind(br#"{"timestamp":"yesterday"}"#),
            ErrorKind::InvalidPayload
        );
        assert_eq!(kind(br#"{"value":"#), ErrorKind::BadRequest);
    }

    #[test]
    fn concatenated_records_split_and_wait_for_incomplete_ones() {
        let input = br#"{"value":{"data":1}} {"value":{"data":2}}{"value":{"da"#;
        let (records, used, error) = split_records(input, false);
        assert_eq!(records.len(), 2);
        assert!(error.is_none());
        assert_eq!(&input[used..], br#"{"value":{"da"#);
        let (records, _, error) = split_records(input, true);
        assert_eq!(records.len(), 2);
        assert!(error.is_some(), "a truncated record at the end is an error");
        let (records, _, error) = split_records(b"{} ]", true);
        assert_eq!(records.len(), 1);
        assert!(error.is_some());
    }

    #[test]
    fn batch_entries_need_unique_ids() {
        let ok = parse_batch(
            br#"{"entries":[{"id":"a","value":{"data":1}},{"id":"b"}]}"#,
            10,
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert!(parse_batch(br#"{"entries":[{"id":"a"},{"id":"a"}]}"#, 10).is_err());
        assert!(parse_batch(br#"{"entries":[]}"#, 10).is_err());
        assert!(parse_batch(b"", 10).is_err());
    }
}
