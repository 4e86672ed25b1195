//! Property tests of the request parsers: no body, content type or header combination makes them
//! panic, and well-formed inputs parse to what was encoded.

use axum::http::{HeaderMap, HeaderValue};
use bytes::Bytes;
use proptest::prelude::*;

use crate::native::{parse_events, NativeParams};
use crate::rest_v2::{parse_request, EmbeddedFormat};
use crate::rest_v3::{parse_batch, parse_record, split_records};
use crate::time::parse_rfc3339_ms;

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/x-ndjson",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "text/plain",
];

/// Bytes biased towards JSON-ish input so parsers get past their first check.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        proptest::collection::vec(
            prop_oneof![
                Just(b'{'),
                Just(b'}'),
                Just(b'['),
                Just(b']'),
                Just(b'"'),
                Just(b':'),
                Just(b','),
                Just(b'\n'),
                Just(b'1'),
                Just(b'a'),
                Just(b' '),
                Just(b'\\'),
            ],
            0..256
        ),
        "[ -~]{0,200}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn native_parser_never_panics(body in jsonish(), ct in 0..CONTENT_TYPES.len(), binary in any::<bool>(), key_field in any::<bool>()) {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static(CONTENT_TYPES[ct]));
        if binary {
            for (name, value) in [("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "s"), ("ce-type", "t")] {
                headers.insert(name, HeaderValue::from_static(value));
            }
        }
        let params = NativeParams { key_field: key_field.then(|| "a".to_string()), ..NativeParams::default() };
        let _ = parse_events(&headers, &Bytes::from(body), &params, 1000);
    }

    #[test]
    fn rest_parsers_never_panic(body in jsonish(), at_end in any::<bool>()) {
        for format in [EmbeddedFormat::Json, EmbeddedFormat::Binary, EmbeddedFormat::Text] {
            let _ = parse_request(&body, format, None, 1000);
        }
        let _ = parse_record(&body);
        let _ = parse_batch(&body, 1000);
        let (records, used, _) = split_records(&body, at_end);
        prop_assert!(used <= body.len());
        prop_assert!(records.len() <= body.len());
        let _ = parse_rfc3339_ms(&String::from_utf8_lossy(&body));
    }

    #[test]
    fn ndjson_round_trips(values in proptest::collection::vec(any::<i64>(), 1..50)) {
        let body: String = values.iter().map(|v| format!("{{\"v\":{v}}}\n")).collect();
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/x-ndjson"));
        let events = parse_events(&headers, &Bytes::from(body), &NativeParams::default(), 1000).unwrap();
        prop_assert_eq!(events.len(), values.len());
        for (event, v) in events.iter().zip(&values) {
            let expected = format!("{{\"v\":{v}}}");
            prop_assert_eq!(event.value.as_deref(), Some(expected.as_bytes()));
        }
    }

    #[test]
    fn v2_binary_round_trips(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..20)) {
        use base64::Engine as _;
        let records: Vec<serde_json::Value> = payloads
            .iter()
            .map(|p| serde_json::json!({"value": base64::engine::general_purpose::STANDARD.encode(p)}))
            .collect();
        let body = serde_json::json!({"records": records}).to_string();
        let events = parse_request(body.as_bytes(), EmbeddedFormat::Binary, None, 1000).unwrap();
        for (event, payload) in events.iter().zip(&payloads) {
            prop_assert_eq!(event.value.as_deref(), Some(payload.as_slice()));
        }
    }

    #[test]
    fn v3_stream_split_at_any_point_gives_the_same_records(values in proptest::collection::vec(0u32..1000, 1..20), cut in any::<prop::sample::Index>()) {
        let text: String = values.iter().map(|v| format!("{{\"value\":{{\"data\":{v}}}}}")).collect();
        let bytes = text.as_bytes();
        let cut = cut.index(bytes.len() + 1);
        let (mut first, used, error) = split_records(&bytes[..cut], false);
        prop_assert!(error.is_none());
        let mut rest = bytes[used..cut].to_vec();
        rest.extend_from_slice(&bytes[cut..]);
        let (second, _, error) = split_records(&rest, true);
        prop_assert!(error.is_none());
        first.extend(second);
        let got: Vec<Vec<u8>> = first.into_iter().map(|r| r.unwrap().event.value.unwrap().to_vec()).collect();
        let expected: Vec<Vec<u8>> = values.iter().map(|v| v.to_string().into_bytes()).collect();
        prop_assert_eq!(got, expected);
    }
}
