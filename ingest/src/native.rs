//! Native endpoint `POST /ingest/v1/{topic}`: one JSON event (`application/json`), a batch
//! (`application/x-ndjson`, one event per line) or CloudEvents — structured (`application/
//! cloudevents+json`, `application/cloudevents-batch+json`) and binary mode (`ce-*` HTTP headers →
//! `ce_*` record headers, per the CloudEvents Kafka protocol binding).
//!
//! Answers 200 only once every record is durable (`"durability": "committed"`, with partition,
//! offset and timestamp per event), 207 with a status per event when some failed, and errors as
//! RFC 9457 problem details. Every record gets the audit headers `x-request-id`, `x-source`,
//! `x-client-addr`, `x-received-at` and, when the request has them, `traceparent`/`tracestate`.
//!
//! Keys: `?key=` (one key for every event), `?key_field=` (a top-level field of each JSON event;
//! strings as UTF-8, other values as JSON text), or the CloudEvents `partitionkey` extension.
//! `?partition=` picks a partition explicitly.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ErrorKind, ErrorStyle};
use kafka_protocol::protocol::StrBytes;

use crate::layers::RequestContext;
use crate::produce::{Event, Outcome};
use crate::Shared;

/// Query parameters of the native endpoint.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct NativeParams {
    pub(crate) key: Option<String>,
    pub(crate) key_field: Option<String>,
    pub(crate) partition: Option<i32>,
}

pub(crate) fn parse_params(query: Option<&str>) -> Result<NativeParams, ApiError> {
    match query {
        None | Some("") => Ok(NativeParams::default()),
        Some(query) => serde_urlencoded_params(query),
    }
}

fn serde_urlencoded_params(query: &str) -> Result<NativeParams, ApiError> {
    axum::extract::Query::<NativeParams>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| ApiError::bad_request("malformed query string"))?,
    )
    .map(|q| q.0)
    .map_err(|e| ApiError::bad_request(format!("invalid query parameters: {}", e.body_text())))
}

/// The media type of a Content-Type value, lower-cased, without parameters.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

const CE_REQUIRED: [&str; 4] = ["specversion", "id", "source", "type"];

/// Parses a native request body into events (no audit headers yet). Pure: property-tested.
pub(crate) fn parse_events(
    headers: &HeaderMap,
    body: &Bytes,
    params: &NativeParams,
    max_events: usize,
) -> Result<Vec<Event>, ApiError> {
    let media = media_type(headers);
    let binary_cloudevent = headers.contains_key("ce-specversion");
    let mut events = match media.as_deref() {
        Some("application/cloudevents+json") => {
            let value = parse_json(body)?;
            vec![structured_cloudevent(value)?]
        }
        Some("application/cloudevents-batch+json") => match parse_json(body)? {
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(ApiError::bad_request("empty CloudEvents batch"));
                }
                check_count(items.len(), max_events)?;
                items
                    .into_iter()
                    .map(structured_cloudevent)
                    .collect::<Result<Vec<_>, _>>()?
            }
            _ => return Err(ApiError::bad_request("a CloudEvents batch is a JSON array")),
        },
        _ if binary_cloudevent => vec![binary_cloudevent_event(headers, body)?],
        Some("application/json") => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Err(ApiError::bad_request("empty body: expected one JSON event"));
            }
            check_json(body, None)?;
            vec![json_event(body.clone(), params)?]
        }
        Some("application/x-ndjson" | "application/ndjson" | "application/jsonl") => {
            let mut events = Vec::new();
            for (number, line) in body.split(|b| *b == b'\n').enumerate() {
                let line = trim_ascii(line);
                if line.is_empty() {
                    continue;
                }
                check_count(events.len() + 1, max_events)?;
                check_json(line, Some(number + 1))?;
                events.push(json_event(body.slice_ref(line), params)?);
            }
            if events.is_empty() {
                return Err(ApiError::bad_request("empty body: expected NDJSON events"));
            }
            events
        }
        other => {
            return Err(ApiError::new(
                ErrorKind::UnsupportedMediaType,
                format!(
                    "unsupported Content-Type {}: use application/json, application/x-ndjson, application/cloudevents+json, application/cloudevents-batch+json, or CloudEvents binary mode (ce-* headers)",
                    other.unwrap_or("(none)")
                ),
            ))
        }
    };
    for event in &mut events {
        if params.partition.is_some() {
            event.partition = params.partition;
        }
        if let Some(key) = &params.key {
            event.key = Some(Bytes::copy_from_slice(key.as_bytes()));
        }
    }
    Ok(events)
}

fn check_count(count: usize, max: usize) -> Result<(), ApiError> {
    if count > max {
        return Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("more than {max} events in one request"),
        ));
    }
    Ok(())
}

fn trim_ascii(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if first.is_ascii_whitespace() {
            bytes = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = bytes {
        if last.is_ascii_whitespace() {
            bytes = rest;
        } else {
            break;
        }
    }
    bytes
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("empty body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

fn check_json(bytes: &[u8], line: Option<usize>) -> Result<(), ApiError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(|_| ())
        .map_err(|e| match line {
            Some(line) => ApiError::bad_request(format!("malformed JSON on line {line}: {e}")),
            None => ApiError::bad_request(format!("malformed JSON: {e}")),
        })
}

/// A plain JSON event: the value is the event's text as sent.
fn json_event(value: Bytes, params: &NativeParams) -> Result<Event, ApiError> {
    let key = match &params.key_field {
        None => None,
        Some(field) => {
            let parsed: Value = serde_json::from_slice(&value)
                .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
            match parsed.get(field) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(Bytes::from(s.clone())),
                Some(other) => Some(Bytes::from(other.to_string())),
            }
        }
    };
    Ok(Event {
        key,
        value: Some(value),
        ..Event::default()
    })
}

fn attribute_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// CloudEvents attribute names: lower-case letters and digits (spec v1.0).
fn valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn structured_cloudevent(value: Value) -> Result<Event, ApiError> {
    let Value::Object(mut object) = value else {
        return Err(ApiError::bad_request("a CloudEvent is a JSON object"));
    };
    check_required(|name| object.get(name).and_then(Value::as_str).map(str::to_string))?;
    let data = object.remove("data");
    let data_base64 = object.remove("data_base64");
    let content_type = object.remove("datacontenttype");
    let value = match (data, data_base64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "a CloudEvent has either data or data_base64, not both",
            ))
        }
        (None, Some(Value::String(encoded))) => Some(Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| ApiError::invalid(format!("data_base64 is not valid base64: {e}")))?,
        )),
        (None, Some(_)) => return Err(ApiError::invalid("data_base64 must be a string")),
        (Some(Value::String(text)), None)
            if content_type
                .as_ref()
                .and_then(Value::as_str)
                .is_some_and(|ct| !is_json_media(ct)) =>
        {
            Some(Bytes::from(text))
        }
        (Some(data), None) => Some(Bytes::from(data.to_string())),
        (None, None) => None,
    };
    let mut headers = Vec::with_capacity(object.len() + 1);
    let key = object
        .get("partitionkey")
        .map(|k| Bytes::from(attribute_text(k)));
    for (name, value) in object_sorted(object) {
        if !valid_attribute_name(&name) {
            return Err(ApiError::invalid(format!(
                "invalid CloudEvents attribute name '{name}'"
            )));
        }
        headers.push((
            StrBytes::from(format!("ce_{name}")),
            Some(Bytes::from(attribute_text(&value))),
        ));
    }
    if let Some(content_type) = content_type {
        headers.push((
            StrBytes::from_static_str("content-type"),
            Some(Bytes::from(attribute_text(&content_type))),
        ));
    }
    Ok(Event {
        key,
        value,
        headers,
        ..Event::default()
    })
}

/// Required attributes first (in spec order), then the rest by name, so headers are stable.
fn object_sorted(mut object: Map<String, Value>) -> Vec<(String, Value)> {
    let mut out = Vec::with_capacity(object.len());
    for name in CE_REQUIRED {
        if let Some(value) = object.remove(name) {
            out.push((name.to_string(), value));
        }
    }
    let mut rest: Vec<(String, Value)> = object.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    out.extend(rest);
    out
}

fn is_json_media(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json") || media.ends_with("+json")
}

fn check_required(get: impl Fn(&str) -> Option<String>) -> Result<(), ApiError> {
    for name in CE_REQUIRED {
        match get(name) {
            Some(value) if !value.is_empty() => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "CloudEvent attribute '{name}' is required"
                )))
            }
        }
    }
    match get("specversion").as_deref() {
        Some("1.0") => Ok(()),
        other => Err(ApiError::invalid(format!(
            "unsupported CloudEvents specversion {other:?}: only 1.0"
        ))),
    }
}

fn binary_cloudevent_event(headers: &HeaderMap, body: &Bytes) -> Result<Event, ApiError> {
    let text = |name: &str| {
        headers
            .get(format!("ce-{name}"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    check_required(text)?;
    let mut attributes: Vec<(String, Bytes)> = Vec::new();
    for (name, value) in headers {
        if let Some(attribute) = name.as_str().strip_prefix("ce-") {
            if !valid_attribute_name(attribute) {
                return Err(ApiError::invalid(format!(
                    "invalid CloudEvents attribute header '{name}'"
                )));
            }
            if attributes.iter().any(|(n, _)| n == attribute) {
                return Err(ApiError::invalid(format!("header '{name}' given twice")));
            }
            attributes.push((
                attribute.to_string(),
                Bytes::copy_from_slice(value.as_bytes()),
            ));
        }
    }
    attributes.sort_by_key(|(name, _)| {
        (
            CE_REQUIRED
                .iter()
                .position(|r| r == name)
                .unwrap_or(CE_REQUIRED.len()),
            name.clone(),
        )
    });
    let key = attributes
        .iter()
        .find(|(name, _)| name == "partitionkey")
        .map(|(_, v)| v.clone());
    let mut record_headers: Vec<(StrBytes, Option<Bytes>)> = attributes
        .into_iter()
        .map(|(name, value)| (StrBytes::from(format!("ce_{name}")), Some(value)))
        .collect();
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        record_headers.push((
            StrBytes::from_static_str("content-type"),
            Some(Bytes::copy_from_slice(content_type.as_bytes())),
        ));
    }
    Ok(Event {
        key,
        value: (!body.is_empty()).then(|| body.clone()),
        headers: record_headers,
        ..Event::default()
    })
}

/// Audit headers stamped on every record; the server's values win over nothing else (event
/// headers only carry `ce_*` and `content-type`).
fn audit_headers(context: &RequestContext, headers: &HeaderMap) -> Vec<(StrBytes, Option<Bytes>)> {
    let client = context
        .client
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let declared = headers
        .get("x-source")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let mut audit = vec![
        (
            StrBytes::from_static_str("x-request-id"),
            Some(Bytes::copy_from_slice(context.request_id.as_bytes())),
        ),
        (
            StrBytes::from_static_str("x-source"),
            Some(Bytes::from(declared.unwrap_or(&client).to_string())),
        ),
        (
            StrBytes::from_static_str("x-client-addr"),
            Some(Bytes::from(client)),
        ),
        (
            StrBytes::from_static_str("x-received-at"),
            Some(Bytes::from(crate::time::format_rfc3339_ms(
                context.received_ms,
            ))),
        ),
    ];
    for name in ["traceparent", "tracestate"] {
        if let Some(value) = headers.get(name) {
            audit.push((
                StrBytes::from_static_str(name),
                Some(Bytes::copy_from_slice(value.as_bytes())),
            ));
        }
    }
    audit
}

pub(crate) async fn produce(
    State(shared): State<Arc<Shared>>,
    Path(topic): Path<String>,
    Extension(context): Extension<RequestContext>,
    idempotent: Option<Extension<crate::produce::IdempotentWrite>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = context.request_id.clone();
    let fail = |error: ApiError| error.render(ErrorStyle::Problem, Some(&id));
    let params = match parse_params(query.as_deref()) {
        Ok(params) => params,
        Err(error) => return fail(error),
    };
    let mut events = match parse_events(
        &headers,
        &body,
        &params,
        shared.config.max_events_per_request,
    ) {
        Ok(events) => events,
        Err(error) => return fail(error),
    };
    let topic_ref = match shared.producer.topic(&topic, true).await {
        Ok(topic_ref) => topic_ref,
        Err(error) => return fail(error),
    };
    let audit = audit_headers(&context, &headers);
    for event in &mut events {
        event.headers.extend(audit.iter().cloned());
    }
    let outcomes = shared
        .producer
        .produce(&topic_ref, events, idempotent.map(|Extension(write)| write))
        .await;
    respond(&topic, &id, outcomes)
}

fn respond(topic: &str, request_id: &str, outcomes: Vec<Outcome>) -> Response {
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    // Every event failed the same way: answer with that error.
    if failed == outcomes.len() {
        if let Some(Err(first)) = outcomes.first() {
            if outcomes
                .iter()
                .all(|o| matches!(o, Err(e) if e.kind == first.kind))
            {
                return first.render(ErrorStyle::Problem, Some(request_id));
            }
        }
    }
    let status = if failed == 0 {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    // Written directly (no JSON tree): this answer is built once per request on the hot path.
    use std::fmt::Write as _;
    let mut body = String::with_capacity(160 + 64 * outcomes.len());
    let _ = write!(
        body,
        "{{\"durability\":\"committed\",\"request_id\":{},\"topic\":{},\"accepted\":{},\"rejected\":{},\"results\":[",
        Value::from(request_id),
        Value::from(topic),
        outcomes.len() - failed,
        failed
    );
    for (index, outcome) in outcomes.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        let _ = match outcome {
            Ok(d) => write!(
                body,
                "{{\"status\":200,\"partition\":{},\"offset\":{},\"timestamp\":{}}}",
                d.partition, d.offset, d.timestamp
            ),
            Err(error) => write!(
                body,
                "{}",
                json!({"status": error.status().as_u16(), "error": error.problem_json(None)})
            ),
        };
    }
    body.push_str("]}");
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn ndjson_lines_become_events_with_keys_from_a_field() {
        let body = Bytes::from_static(b"{\"user\":\"a\",\"n\":1}\n\n  {\"user\":7}\r\n{\"n\":3}\n");
        let params = NativeParams {
            key_field: Some("user".into()),
            ..NativeParams::default()
        };
        let events = parse_events(
            &headers(&[("content-type", "application/x-ndjson")]),
            &body,
            &params,
            10,
        )
        .unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0].value.as_deref(),
            Some(&b"{\"user\":\"a\",\"n\":1}"[..])
        );
        assert_eq!(events[0].key.as_deref(), Some(&b"a"[..]));
        assert_eq!(events[1].key.as_deref(), Some(&b"7"[..]));
        assert_eq!(events[2].key, None);
        let err = parse_events(
            &headers(&[("content-type", "application/x-ndjson")]),
            &Bytes::from_static(b"{}\n{bad\n"),
            &NativeParams::default(),
            10,
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(err.message.contains("line 2"), "{}", err.message);
    }

    #[test]
    fn structured_and_binary_cloudevents() {
        let body = Bytes::from_static(
            br#"{"specversion":"1.0","id":"e1","source":"/s","type":"t.created","time":"2024-01-01T00:00:00Z","partitionkey":"pk","datacontenttype":"application/json","data":{"a":1}}"#,
        );
        let events = parse_events(
            &headers(&[(
                "content-type",
                "application/cloudevents+json; charset=utf-8",
            )]),
            &body,
            &NativeParams::default(),
            10,
        )
        .unwrap();
        let e = &events[0];
        assert_eq!(e.value.as_deref(), Some(&br#"{"a":1}"#[..]));
        assert_eq!(e.key.as_deref(), Some(&b"pk"[..]));
        let names: Vec<&str> = e.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "ce_specversion",
                "ce_id",
                "ce_source",
                "ce_type",
                "ce_partitionkey",
                "ce_time",
                "content-type"
            ]
        );

        let binary = parse_events(
            &headers(&[
                ("content-type", "text/plain"),
                ("ce-specversion", "1.0"),
                ("ce-id", "x"),
                ("ce-source", "/src"),
                ("ce-type", "t"),
                ("ce-subject", "sub"),
            ]),
            &Bytes::from_static(b"hello"),
            &NativeParams::default(),
            10,
        )
        .unwrap();
        assert_eq!(binary[0].value.as_deref(), Some(&b"hello"[..]));
        assert!(binary[0]
            .headers
            .contains(&("ce_subject".into(), Some(Bytes::from_static(b"sub")))));
        assert!(binary[0].headers.contains(&(
            "content-type".into(),
            Some(Bytes::from_static(b"text/plain"))
        )));

        let missing = parse_events(
            &headers(&[("content-type", "application/cloudevents+json")]),
            &Bytes::from_static(br#"{"specversion":"1.0","id":"1","type":"t"}"#),
            &NativeParams::default(),
            10,
        )
        .unwrap_err();
        assert!(missing.message.contains("source"));
    }

    #[test]
    fn wrong_content_type_empty_body_and_too_many_events() {
        let p = NativeParams::default();
        let e = parse_events(
            &headers(&[("content-type", "text/plain")]),
            &Bytes::from_static(b"x"),
            &p,
            10,
        )
        .unwrap_err();
        assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let e = parse_events(&HeaderMap::new(), &Bytes::from_static(b"{}"), &p, 10).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let e = parse_events(
            &headers(&[("content-type", "application/json")]),
            &Bytes::new(),
            &p,
            10,
        )
        .unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let many = Bytes::from("{}\n".repeat(11));
        let e = parse_events(
            &headers(&[("content-type", "application/x-ndjson")]),
            &many,
            &p,
            10,
        )
        .unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn query_parameters() {
        assert_eq!(parse_params(None).unwrap(), NativeParams::default());
        let p = parse_params(Some("key=abc&partition=2")).unwrap();
        assert_eq!(p.key.as_deref(), Some("abc"));
        assert_eq!(p.partition, Some(2));
        assert!(parse_params(Some("partition=x")).is_err());
        assert!(parse_params(Some("nope=1")).is_err());
    }
}
