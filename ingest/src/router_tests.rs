//! Router-level tests: every route and every documented error through `Router::oneshot`, against a
//! real metadata node and log store in a temporary directory (memory object store, WAL without
//! fsync). Records are read back from the log store and decoded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use kafka_protocol::records::{Record, RecordBatchDecoder};
use metadata::{Command, MetadataClient, MetadataNode, MetadataOptions, TopicPartition};
use serde_json::{json, Value};
use storage::{LogStore, StorageOptions};
use tower::ServiceExt;

use crate::{build_router, Ingest, IngestConfig, Shared};

const CLUSTER: &str = "test-cluster";

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    _node: MetadataNode,
    pub(crate) meta: MetadataClient,
    pub(crate) store: LogStore,
    pub(crate) ingest: Ingest,
    pub(crate) router: Router,
}

impl Fixture {
    pub(crate) async fn new(tweak: impl FnOnce(&mut IngestConfig)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let node = MetadataNode::start(MetadataOptions {
            dir: dir.path().join("metadata"),
            node_id: 1,
            snapshot_every: 1024,
            fsync: false,
            journal: None,
        })
        .await
        .unwrap();
        let meta = node.client();
        meta.propose(Command::InitCluster {
            cluster_id: CLUSTER.into(),
        })
        .await
        .unwrap();
        meta.propose(Command::RegisterBroker {
            node_id: 1,
            host: "127.0.0.1".into(),
            port: 9092,
        })
        .await
        .unwrap();
        let mut options = StorageOptions::new(dir.path().join("data"), 1, CLUSTER);
        options.wal.fsync = false;
        let store = LogStore::open(
            options,
            Arc::new(object_store::memory::InMemory::new()),
            meta.clone(),
        )
        .await
        .unwrap();
        let mut config = IngestConfig::new(1, CLUSTER);
        config.data_dir = Some(dir.path().to_path_buf());
        config.fsync = false;
        tweak(&mut config);
        let ingest = Ingest::open(config, store.clone(), meta.clone())
            .await
            .unwrap();
        ingest.set_ready(true);
        let router = ingest.router();
        Fixture {
            _dir: dir,
            _node: node,
            meta,
            store,
            ingest,
            router,
        }
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.ingest.shared.clone()
    }

    pub(crate) async fn create_topic(&self, name: &str, partitions: u32, configs: &[(&str, &str)]) {
        let configs: BTreeMap<String, String> = configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.meta
            .propose(Command::CreateTopic {
                name: name.into(),
                topic_id: uuid::Uuid::new_v4(),
                partitions,
                configs,
                owner: 1,
                now_ms: 0,
            })
            .await
            .unwrap();
    }

    pub(crate) async fn send(
        &self,
        request: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, Bytes) {
        let response: Response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(body.into())
            .unwrap();
        let (status, _, body) = self.send(request).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = self
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Every record of a partition, decoded.
    pub(crate) async fn records(&self, topic: &str, partition: i32) -> Vec<Record> {
        let state = self.meta.state();
        let topic_id = state.topic_ids[topic];
        let tp = TopicPartition {
            topic_id,
            partition,
        };
        let read = self.store.read(tp, 0, 64 * 1024 * 1024).await.unwrap();
        let mut records = Vec::new();
        for batch in read.batches {
            let mut bytes = batch.clone();
            records.extend(RecordBatchDecoder::decode(&mut bytes).unwrap().records);
        }
        records
    }

    pub(crate) fn high_watermark(&self, topic: &str, partition: i32) -> i64 {
        let topic_id = self.meta.state().topic_ids[topic];
        self.store
            .offsets(TopicPartition {
                topic_id,
                partition,
            })
            .unwrap()
            .high_watermark
    }
}

fn header_value<'a>(record: &'a Record, name: &str) -> Option<&'a [u8]> {
    record
        .headers
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .and_then(|(_, v)| v.as_deref())
}

#[tokio::test]
async fn ops_endpoints() {
    let fx = Fixture::new(|_| {}).await;
    let (status, body) = fx.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(fx.get("/readyz").await.0, StatusCode::OK);
    fx.ingest.set_ready(false);
    let (status, body) = fx.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "not ready");
    fx.ingest.set_ready(true);

    let (status, headers, body) = fx
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains("ingest_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/healthz\""), "{text}");

    let (status, headers, _) = fx
        .send(Request::get("/no/such/route").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn openapi_document_matches_the_router() {
    let fx = Fixture::new(|_| {}).await;
    let (_, routes) = build_router(fx.shared());
    let in_router: BTreeSet<(String, String)> = routes
        .iter()
        .map(|(m, p)| (m.as_str().to_ascii_lowercase(), p.to_string()))
        .collect();
    let (status, doc) = fx.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut in_doc = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            in_doc.insert((method.clone(), path.clone()));
        }
    }
    assert_eq!(in_router, in_doc, "router routes and OpenAPI paths differ");
    // And every documented route answers (not the fallback 404 / 405).
    for (method, path) in &in_doc {
        let concrete = path
            .replace("{cluster_id}", CLUSTER)
            .replace("{topic}", "t")
            .replace("{partition}", "0");
        let request = Request::builder()
            .method(Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap())
            .uri(concrete)
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = fx.send(request).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !String::from_utf8_lossy(&body).contains("no route"),
            "{method} {path} fell through to the fallback"
        );
    }
}

#[tokio::test]
async fn v2_produce_in_every_format_and_read_back() {
    let fx = Fixture::new(|_| {}).await;
    fx.create_topic("v2", 3, &[]).await;
    let (status, body) = fx
        .post(
            "/topics/v2",
            "application/vnd.kafka.json.v2+json",
            r#"{"records":[{"key":"user-1","value":{"n":1},"headers":[{"key":"h","value":"aGk="}]},{"value":[1,2],"partition":2}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let offsets = body["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 2);
    let p0 = offsets[0]["partition"].as_i64().unwrap() as i32;
    // The key is the JSON text "user-1" (with quotes), partitioned like the Java client.
    assert_eq!(p0, crate::partitioner::partition_for_key(br#""user-1""#, 3));
    assert_eq!(offsets[0]["error_code"], Value::Null);
    assert_eq!(offsets[1]["partition"], 2);
    let records = fx.records("v2", p0).await;
    assert_eq!(records[0].key.as_deref(), Some(&br#""user-1""#[..]));
    assert_eq!(records[0].value.as_deref(), Some(&br#"{"n":1}"#[..]));
    assert_eq!(header_value(&records[0], "h"), Some(&b"hi"[..]));

    let (status, body) = fx
        .post(
            "/topics/v2/partitions/1",
            "application/vnd.kafka.binary.v2+json",
            r#"{"records":[{"key":"AAE=","value":"AgM="}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["offsets"][0]["partition"], 1);
    let records = fx.records("v2", 1).await;
    let last = records.last().unwrap();
    assert_eq!(last.key.as_deref(), Some(&[0u8, 1][..]));
    assert_eq!(last.value.as_deref(), Some(&[2u8, 3][..]));

    let (status, _) = fx
        .post(
            "/topics/v2/partitions/1",
            "application/vnd.kafka.text.v2+json",
            r#"{"records":[{"value":"hello"}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let records = fx.records("v2", 1).await;
    assert_eq!(
        records.last().unwrap().value.as_deref(),
        Some(&b"hello"[..])
    );

    // Topic listing and description.
    let (status, body) = fx.get("/topics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!(["v2"]));
    let (status, body) = fx.get("/topics/v2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(body["configs"]["cleanup.policy"], "delete");
}

#[tokio::test]
async fn v2_errors() {
    let fx = Fixture::new(|c| {
        c.auto_create_topics = false;
        c.max_body_bytes = 1024;
        c.inflight_bytes = 1024;
    })
    .await;
    fx.create_topic("t", 2, &[]).await;
    let json = "application/vnd.kafka.json.v2+json";
    let cases: Vec<(&str, &str, String, StatusCode, i64)> = vec![
        (
            "/topics/missing",
            json,
            r#"{"records":[{"value":1}]}"#.into(),
            StatusCode::NOT_FOUND,
            40401,
        ),
        (
            "/topics/t/partitions/9",
            json,
            r#"{"records":[{"value":1}]}"#.into(),
            StatusCode::NOT_FOUND,
            40402,
        ),
        (
            "/topics/t/partitions/x",
            json,
            r#"{"records":[{"value":1}]}"#.into(),
            StatusCode::NOT_FOUND,
            40402,
        ),
        (
            "/topics/t",
            "application/json",
            r#"{"records":[{"value":1}]}"#.into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
        ),
        (
            "/topics/t",
            "application/vnd.kafka.avro.v2+json",
            r#"{"records":[{"value":1}]}"#.into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
        ),
        (
            "/topics/t",
            json,
            r#"{"records":[{"value":1}"#.into(),
            StatusCode::BAD_REQUEST,
            400,
        ),
        ("/topics/t", json, "".into(), StatusCode::BAD_REQUEST, 400),
        (
            "/topics/t",
            json,
            r#"{"records":[]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            42206,
        ),
        (
            "/topics/t",
            "application/vnd.kafka.binary.v2+json",
            r#"{"records":[{"value":"not base64!"}]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            42206,
        ),
        (
            "/topics/t",
            json,
            format!(r#"{{"records":[{{"value":"{}"}}]}}"#, "x".repeat(2000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            413,
        ),
    ];
    for (path, content_type, body, status, code) in cases {
        let (got, answer) = fx.post(path, content_type, body.clone()).await;
        assert_eq!(got, status, "{path} {content_type} {body:.60}: {answer}");
        assert_eq!(answer["error_code"], code, "{path}: {answer}");
        assert!(answer["message"].is_string());
    }
    assert_eq!(fx.get("/topics/missing").await.1["error_code"], 40401);
    // Nothing was written by any of them.
    assert_eq!(fx.high_watermark("t", 0), 0);
    assert_eq!(fx.high_watermark("t", 1), 0);
}

#[tokio::test]
async fn v2_auto_creates_topics_when_enabled() {
    let fx = Fixture::new(|c| c.default_partitions = 2).await;
    let (status, body) = fx
        .post(
            "/topics/fresh",
            "application/vnd.kafka.json.v2+json",
            r#"{"records":[{"value":1}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        fx.meta
            .state()
            .topic_by_name("fresh")
            .unwrap()
            .partitions
            .len(),
        2
    );
    let (status, body) = fx
        .post(
            "/topics/bad%20name",
            "application/vnd.kafka.json.v2+json",
            r#"{"records":[{"value":1}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn v3_cluster_and_topic_reads() {
    let fx = Fixture::new(|_| {}).await;
    fx.create_topic("t3", 4, &[]).await;
    let (status, body) = fx.get("/v3/clusters").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"][0]["cluster_id"], CLUSTER);
    assert_eq!(
        fx.get(&format!("/v3/clusters/{CLUSTER}")).await.1["kind"],
        "KafkaCluster"
    );
    let (status, body) = fx.get("/v3/clusters/other").await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (StatusCode::NOT_FOUND, json!(404))
    );
    let (_, body) = fx.get(&format!("/v3/clusters/{CLUSTER}/topics")).await;
    assert_eq!(body["data"][0]["topic_name"], "t3");
    assert_eq!(body["data"][0]["partitions_count"], 4);
    let (status, body) = fx.get(&format!("/v3/clusters/{CLUSTER}/topics/t3")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["topic_name"], "t3");
    let (status, body) = fx.get(&format!("/v3/clusters/{CLUSTER}/topics/nope")).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (StatusCode::NOT_FOUND, json!(40401))
    );
    assert_eq!(
        fx.get("/v3/clusters/other/topics").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        fx.get("/v3/clusters/other/topics/t3").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn v3_single_concatenated_streaming_and_batch() {
    let fx = Fixture::new(|_| {}).await;
    fx.create_topic("t", 2, &[]).await;
    let path = format!("/v3/clusters/{CLUSTER}/topics/t/records");
    let (status, body) = fx
        .post(
            &path,
            "application/json",
            r#"{"partition_id":1,"headers":[{"name":"h","value":"aGk="}],"key":{"type":"STRING","data":"k"},"value":{"type":"JSON","data":{"a":1}},"timestamp":"2021-02-05T19:14:42.123Z"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["error_code"], 200);
    assert_eq!(body["partition_id"], 1);
    assert_eq!(body["offset"], 0);
    assert_eq!(body["timestamp"], "2021-02-05T19:14:42.123Z");
    assert_eq!(body["key"], json!({"type": "STRING", "size": 1}));
    assert_eq!(body["value"], json!({"type": "JSON", "size": 7}));
    let record = &fx.records("t", 1).await[0];
    assert_eq!(record.timestamp, 1_612_552_482_123);
    assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(header_value(record, "h"), Some(&b"hi"[..]));

    // Concatenated records with a length: one report per record, in order.
    let (status, _, text) = fx
        .send(
            Request::post(&path)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, 90)
                .body(Body::from(r#"{"partition_id":0,"value":{"data":1}}{"partition_id":0,"value":{"data":"two"}}      "#))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let reports: Vec<Value> = serde_json::Deserializer::from_slice(&text)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    assert_eq!(reports.len(), 2);
    assert_eq!(
        (reports[0]["offset"].clone(), reports[1]["offset"].clone()),
        (json!(0), json!(1))
    );

    // Streaming (chunked, no length): records split across chunks, one bad record in the middle.
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(
            br#"{"partition_id":0,"value":{"data":3}}{"partition_id":0,"va"#,
        )),
        Ok(Bytes::from_static(
            br#"lue":{"data":4}}{"partition_id":0,"value":{"type":"BINARY","data":"!!"}}"#,
        )),
        Ok(Bytes::from_static(
            br#"{"partition_id":0,"value":{"data":5}}"#,
        )),
    ];
    let (status, _, text) = fx
        .send(
            Request::post(&path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let reports: Vec<Value> = serde_json::Deserializer::from_slice(&text)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    let codes: Vec<i64> = reports
        .iter()
        .map(|r| r["error_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, vec![200, 200, 42206, 200]);
    let offsets: Vec<Value> = reports.iter().map(|r| r["offset"].clone()).collect();
    assert_eq!(offsets, vec![json!(2), json!(3), Value::Null, json!(4)]);
    let values: Vec<Option<Bytes>> = fx
        .records("t", 0)
        .await
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(values.len(), 5);
    assert_eq!(values[4].as_deref(), Some(&b"5"[..]));

    // Batch: 207 with successes and failures by id.
    let (status, body) = fx
        .post(
            &format!("{path}:batch"),
            "application/json",
            r#"{"entries":[{"id":"a","partition_id":1,"value":{"type":"STRING","data":"x"}},{"id":"b","partition_id":7},{"id":"c","value":{"type":"BINARY","data":"%"}}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{body}");
    assert_eq!(body["successes"][0]["id"], "a");
    assert_eq!(body["successes"][0]["partition_id"], 1);
    let failures = body["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2);
    assert_eq!(
        (failures[0]["id"].clone(), failures[0]["error_code"].clone()),
        (json!("b"), json!(40402))
    );
    assert_eq!(
        (failures[1]["id"].clone(), failures[1]["error_code"].clone()),
        (json!("c"), json!(42206))
    );
}

#[tokio::test]
async fn v3_errors() {
    let fx = Fixture::new(|c| {
        c.max_body_bytes = 1024;
        c.inflight_bytes = 1024;
    })
    .await;
    fx.create_topic("t", 1, &[]).await;
    let records = format!("/v3/clusters/{CLUSTER}/topics/t/records");
    let batch = format!("{records}:batch");
    let cases: Vec<(String, &str, String, StatusCode, i64)> = vec![
        (
            format!("/v3/clusters/{CLUSTER}/topics/missing/records"),
            "application/json",
            "{}".into(),
            StatusCode::NOT_FOUND,
            40401,
        ),
        (
            format!("/v3/clusters/{CLUSTER}/topics/missing/records:batch"),
            "application/json",
            r#"{"entries":[{"id":"1"}]}"#.into(),
            StatusCode::NOT_FOUND,
            40401,
        ),
        (
            "/v3/clusters/wrong/topics/t/records".into(),
            "application/json",
            "{}".into(),
            StatusCode::NOT_FOUND,
            404,
        ),
        (
            records.clone(),
            "text/plain",
            "{}".into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
        ),
        (
            batch.clone(),
            "text/plain",
            "{}".into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
        ),
        (
            records.clone(),
            "application/json",
            r#"{"value":"#.into(),
            StatusCode::BAD_REQUEST,
            400,
        ),
        (
            records.clone(),
            "application/json",
            "".into(),
            StatusCode::BAD_REQUEST,
            400,
        ),
        (
            batch.clone(),
            "application/json",
            "[".into(),
            StatusCode::BAD_REQUEST,
            400,
        ),
        (
            records.clone(),
            "application/json",
            r#"{"value":{"type":"BINARY","data":"@@"}}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            42206,
        ),
        (
            records.clone(),
            "application/json",
            r#"{"partition_id":3,"value":{"data":1}}"#.into(),
            StatusCode::NOT_FOUND,
            40402,
        ),
        (
            records.clone(),
            "application/json",
            format!(r#"{{"value":{{"data":"{}"}}}}"#, "x".repeat(2000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            413,
        ),
        (
            batch.clone(),
            "application/json",
            format!(
                r#"{{"entries":[{{"id":"1","value":{{"data":"{}"}}}}]}}"#,
                "x".repeat(2000)
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            413,
        ),
    ];
    for (path, content_type, body, status, code) in cases {
        let (got, answer) = fx.post(&path, content_type, body.clone()).await;
        assert_eq!(got, status, "{path} {body:.60}: {answer}");
        assert_eq!(answer["error_code"], code, "{path} {body:.60}: {answer}");
    }
    assert_eq!(fx.high_watermark("t", 0), 0, "nothing was written");
}

#[tokio::test]
async fn native_json_ndjson_and_cloudevents_with_audit_headers() {
    let fx = Fixture::new(|_| {}).await;
    fx.create_topic("events", 1, &[]).await;
    let request = Request::post("/ingest/v1/events?key=k1")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-request-id", "req-123")
        .header("x-source", "billing")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Body::from(r#"{"amount": 5}"#))
        .unwrap();
    let (status, headers, body) = fx.send(request).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-request-id"], "req-123");
    assert_eq!(body["durability"], "committed");
    assert_eq!(body["request_id"], "req-123");
    assert_eq!(body["results"][0]["offset"], 0);
    assert_eq!(body["results"][0]["partition"], 0);
    assert!(body["results"][0]["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    let record = &fx.records("events", 0).await[0];
    assert_eq!(
        record.value.as_deref(),
        Some(&br#"{"amount": 5}"#[..]),
        "stored as sent"
    );
    assert_eq!(record.key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(header_value(record, "x-request-id"), Some(&b"req-123"[..]));
    assert_eq!(header_value(record, "x-source"), Some(&b"billing"[..]));
    assert!(header_value(record, "x-received-at").is_some());
    assert!(header_value(record, "x-client-addr").is_some());
    assert_eq!(
        header_value(record, "traceparent"),
        Some(&b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..])
    );

    let (status, body) = fx
        .post(
            "/ingest/v1/events",
            "application/x-ndjson",
            "{\"a\":1}\n{\"a\":2}\n\n{\"a\":3}\n",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let offsets: Vec<i64> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, vec![1, 2, 3]);

    let (status, body) = fx
        .post(
            "/ingest/v1/events",
            "application/cloudevents+json",
            r#"{"specversion":"1.0","id":"e-1","source":"/orders","type":"order.created","data":{"id":9}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let record = &fx.records("events", 0).await[4];
    assert_eq!(record.value.as_deref(), Some(&br#"{"id":9}"#[..]));
    assert_eq!(header_value(record, "ce_id"), Some(&b"e-1"[..]));
    assert_eq!(header_value(record, "ce_type"), Some(&b"order.created"[..]));

    let request = Request::post("/ingest/v1/events")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("ce-specversion", "1.0")
        .header("ce-id", "e-2")
        .header("ce-source", "/s")
        .header("ce-type", "blob")
        .body(Body::from(vec![0u8, 159, 255]))
        .unwrap();
    let (status, _, _) = fx.send(request).await;
    assert_eq!(status, StatusCode::OK);
    let record = &fx.records("events", 0).await[5];
    assert_eq!(record.value.as_deref(), Some(&[0u8, 159, 255][..]));
    assert_eq!(header_value(record, "ce_id"), Some(&b"e-2"[..]));
    assert_eq!(
        header_value(record, "content-type"),
        Some(&b"application/octet-stream"[..])
    );
}

#[tokio::test]
async fn native_errors_are_problem_documents() {
    let fx = Fixture::new(|c| {
        c.auto_create_topics = false;
        c.max_body_bytes = 4096;
        c.inflight_bytes = 4096;
    })
    .await;
    fx.create_topic("t", 1, &[]).await;
    let cases: Vec<(&str, &str, String, StatusCode)> = vec![
        (
            "/ingest/v1/missing",
            "application/json",
            "{}".into(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/ingest/v1/t",
            "text/plain",
            "{}".into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "/ingest/v1/t",
            "application/json",
            "{not json".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/ingest/v1/t",
            "application/json",
            "".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/ingest/v1/t",
            "application/x-ndjson",
            "\n\n".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/ingest/v1/t",
            "application/x-ndjson",
            "{}\n{oops}\n".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/ingest/v1/t?partition=nope",
            "application/json",
            "{}".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/ingest/v1/t?partition=5",
            "application/json",
            "{}".into(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/ingest/v1/t",
            "application/cloudevents+json",
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"**"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/ingest/v1/t",
            "application/json",
            format!("\"{}\"", "x".repeat(5000)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (path, content_type, body, status) in cases {
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.clone()))
            .unwrap();
        let (got, headers, answer) = fx.send(request).await;
        assert_eq!(
            got,
            status,
            "{path} {content_type} {body:.40}: {}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        let problem: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(problem["status"], status.as_u16());
        assert!(problem["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:sluice:problem:"));
        assert!(problem["request_id"].is_string());
    }
    assert_eq!(fx.high_watermark("t", 0), 0, "nothing was written");
}

#[tokio::test]
async fn backpressure_answers_503_with_retry_after() {
    let fx = Fixture::new(|c| {
        c.max_body_bytes = 1000;
        c.inflight_bytes = 1000;
    })
    .await;
    fx.create_topic("t", 1, &[]).await;
    // Hold most of the budget as if another request were in progress.
    let held = fx
        .shared()
        .inflight
        .clone()
        .try_acquire_many_owned(990)
        .unwrap();
    let request = Request::post("/ingest/v1/t")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, 40)
        .body(Body::from(format!("{{\"pad\":\"{}\"}}", "x".repeat(30))))
        .unwrap();
    let (status, headers, _) = fx.send(request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    drop(held);
    let (status, _) = fx.post("/ingest/v1/t", "application/json", "{}").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        fx.shared().inflight.available_permits(),
        1000,
        "budget fully returned"
    );
}

#[tokio::test]
async fn ten_thousand_event_batch_and_partial_failure() {
    let fx = Fixture::new(|_| {}).await;
    fx.create_topic("big", 1, &[("max.message.bytes", "1000")])
        .await;
    let body: String = (0..10_000).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let (status, answer) = fx
        .post("/ingest/v1/big", "application/x-ndjson", body)
        .await;
    assert_eq!(status, StatusCode::OK);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 10_000);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["offset"], i as i64);
    }
    assert_eq!(fx.high_watermark("big", 0), 10_000);
    let records = fx.records("big", 0).await;
    assert_eq!(records[9_999].value.as_deref(), Some(&b"{\"i\":9999}"[..]));

    // One event over max.message.bytes: 207, the others are written and say where.
    let body = format!("{{\"a\":1}}\n\"{}\"\n{{\"a\":2}}\n", "x".repeat(2000));
    let (status, answer) = fx
        .post("/ingest/v1/big", "application/x-ndjson", body)
        .await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{answer}");
    let statuses: Vec<i64> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, vec![200, 413, 200]);
    assert_eq!(
        answer["results"][1]["error"]["type"],
        "urn:sluice:problem:record-too-large"
    );
    assert_eq!(answer["accepted"], 2);
    assert_eq!(fx.high_watermark("big", 0), 10_002);
}

#[tokio::test]
async fn idempotency_replays_refuses_and_survives_reopen() {
    let fx = Fixture::new(|_| {}).await;
    fx.create_topic("t", 1, &[]).await;
    let request = |key: &str, body: &'static str| {
        Request::post("/ingest/v1/t")
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(Body::from(body))
            .unwrap()
    };
    let (status, headers, first) = fx.send(request("k-1", r#"{"n":1}"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key("idempotent-replayed"));
    let (status, headers, again) = fx.send(request("k-1", r#"{"n":1}"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(first, again, "the original response comes back");
    assert_eq!(fx.high_watermark("t", 0), 1, "the retry wrote nothing");

    let (status, _, body) = fx.send(request("k-1", r#"{"n":2}"#)).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&body)
    );

    // In flight: hold the key as a concurrent first request would.
    let fp =
        crate::idempotency::fingerprint("POST", "/ingest/v1/t", "application/json", br#"{"n":3}"#);
    let crate::idempotency::Begin::Proceed(ticket) = fx.shared().idempotency.begin("k-3", fp)
    else {
        panic!("fresh key")
    };
    let (status, _, _) = fx.send(request("k-3", r#"{"n":3}"#)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    drop(ticket);
    assert_eq!(
        fx.send(request("k-3", r#"{"n":3}"#)).await.0,
        StatusCode::OK
    );

    let bad = Request::post("/ingest/v1/t")
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", "")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(fx.send(bad).await.0, StatusCode::BAD_REQUEST);
    // Failed requests are not remembered: the retry runs again.
    assert_eq!(
        fx.send(request("k-4", "{bad")).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        fx.send(request("k-4", "{bad")).await.0,
        StatusCode::BAD_REQUEST
    );

    // A second service over the same data dir (a restart) still knows k-1.
    let dir = fx.shared().config.data_dir.clone();
    fx.ingest.shutdown().await.unwrap();
    let mut config = IngestConfig::new(1, CLUSTER);
    config.data_dir = dir;
    config.fsync = false;
    let reopened = Ingest::open(config, fx.store.clone(), fx.meta.clone())
        .await
        .unwrap();
    let response = reopened
        .router()
        .oneshot(request("k-1", r#"{"n":1}"#))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, first);
    assert_eq!(fx.high_watermark("t", 0), 2);
    reopened.shutdown().await.unwrap();
}

#[tokio::test]
async fn keyed_records_use_the_java_partitioner() {
    let fx = Fixture::new(|_| {}).await;
    fx.create_topic("keyed", 12, &[]).await;
    for key in ["alpha", "beta", "gamma", "delta", "21", "foobar"] {
        let (status, body) = fx
            .post(
                &format!("/ingest/v1/keyed?key={key}"),
                "application/json",
                "{}",
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["results"][0]["partition"],
            crate::partitioner::partition_for_key(key.as_bytes(), 12),
            "{key}"
        );
    }
    // "21": toPositive(-973932308) % 12 = 1173551340 % 12 = 0.
    assert_eq!(crate::partitioner::partition_for_key(b"21", 12), 0);
}

#[tokio::test]
async fn log_append_time_topics_report_the_broker_time() {
    let fx = Fixture::new(|_| {}).await;
    fx.create_topic("lat", 1, &[("message.timestamp.type", "LogAppendTime")])
        .await;
    let (status, body) = fx
        .post(
            &format!("/v3/clusters/{CLUSTER}/topics/lat/records"),
            "application/json",
            r#"{"value":{"data":1},"timestamp":"2001-01-01T00:00:00Z"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(body["timestamp"], "2001-01-01T00:00:00.000Z");
    assert!(body["timestamp"].as_str().unwrap().starts_with("20"));
}

/// A partition another broker owns is not written here: 503 naming the owner, nothing appended.
#[tokio::test]
async fn a_partition_owned_by_another_broker_answers_503_with_the_owner() {
    let fx = Fixture::new(|_| {}).await;
    fx.create_topic("t", 1, &[]).await;
    fx.meta
        .propose(Command::RegisterBroker {
            node_id: 2,
            host: "127.0.0.2".into(),
            port: 9092,
        })
        .await
        .unwrap();
    let acquired = fx
        .meta
        .propose(Command::AcquirePartitions {
            node_id: 2,
            partitions: Vec::new(),
        })
        .await
        .unwrap();
    assert!(matches!(acquired, metadata::CommandResponse::Acquired(ref a) if a.len() == 1));
    let (status, body) = fx.post("/ingest/v1/t", "application/json", "{}").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let text = body.to_string();
    assert!(text.contains("broker 2 does"), "{text}");
    // Taken back: served again.
    fx.meta
        .propose(Command::AcquirePartitions {
            node_id: 1,
            partitions: Vec::new(),
        })
        .await
        .unwrap();
    let (status, body) = fx.post("/ingest/v1/t", "application/json", "{}").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
