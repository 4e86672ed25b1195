//! End-to-end HTTP ingest: records posted over real HTTP to `sluice serve` (REST Proxy v2, v3
//! single / streaming / batch, native) are read back by a librdkafka consumer with key, value,
//! headers and timestamp intact; keyed records land where a Kafka producer puts the same key;
//! an idempotent retry after SIGKILL + restart is still de-duplicated; bad input gets its
//! documented status and writes nothing.

use std::convert::Infallible;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use sluice_tests::clients;
use sluice_tests::{SluiceOptions, SluiceProcess};
use tokio::net::TcpStream;

/// Bound on one HTTP exchange.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
const CONSUME_TIMEOUT: Duration = Duration::from_secs(30);

struct HttpResponse {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl HttpResponse {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request body: whole (with Content-Length) or chunked (no length: streaming).
enum Body {
    Full(Bytes),
    Chunked(Vec<Bytes>),
}

/// One request on a fresh HTTP/1.1 connection, bounded by [`HTTP_TIMEOUT`].
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Result<HttpResponse> {
    tokio::time::timeout(HTTP_TIMEOUT, http_inner(addr, method, path, headers, body))
        .await
        .with_context(|| format!("{method} {path} timed out"))?
}

async fn http_inner(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Result<HttpResponse> {
    let stream = TcpStream::connect(addr).await.context("connect")?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("handshake")?;
    tokio::spawn(connection);
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body: http_body_util::combinators::BoxBody<Bytes, Infallible> = match body {
        Body::Full(bytes) => Full::new(bytes).boxed(),
        Body::Chunked(chunks) => StreamBody::new(futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, Infallible>(Frame::data(c))),
        ))
        .boxed(),
    };
    let response = sender
        .send_request(builder.body(body)?)
        .await
        .context("send")?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

async fn post(
    addr: &str,
    path: &str,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Result<HttpResponse> {
    http(
        addr,
        "POST",
        path,
        &[("content-type", content_type)],
        Body::Full(body.into()),
    )
    .await
}

fn http_addr(sluice: &SluiceProcess) -> Result<String> {
    sluice
        .ready_info()
        .and_then(|r| r.http.clone())
        .context("the ready file has no http address")
}

fn cluster_id(sluice: &SluiceProcess) -> Result<String> {
    sluice
        .ready_info()
        .and_then(|r| r.cluster_id.clone())
        .context("the ready file has no cluster id")
}

fn header<'a>(message: &'a OwnedMessage, name: &str) -> Option<&'a [u8]> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_every_endpoint_are_read_back_by_kafka() -> Result<()> {
    let sluice = SluiceProcess::start(SluiceOptions::default())?;
    let bootstrap = sluice.bootstrap();
    let addr = http_addr(&sluice)?;
    let cluster = cluster_id(&sluice)?;
    clients::create_topic(&bootstrap, "orders", 3, &[]).await?;
    let clusters = http(&addr, "GET", "/v3/clusters", &[], Body::Full(Bytes::new())).await?;
    assert_eq!(clusters.json()["data"][0]["cluster_id"], cluster.as_str());

    // v2, binary format, with a header, to partition 0.
    let v2 = post(
        &addr,
        "/topics/orders/partitions/0",
        "application/vnd.kafka.binary.v2+json",
        json!({"records": [{"key": b64(b"v2-key"), "value": b64(b"v2-value"),
                            "headers": [{"key": "hv2", "value": b64(b"x")}]}]})
        .to_string(),
    )
    .await?;
    assert_eq!(v2.status, 200, "{}", v2.text());

    // v3 single record with timestamp, STRING key, JSON value, header, partition 1.
    let v3 = post(
        &addr,
        &format!("/v3/clusters/{cluster}/topics/orders/records"),
        "application/json",
        json!({"partition_id": 1, "key": {"type": "STRING", "data": "v3-key"},
               "value": {"type": "JSON", "data": {"n": 3}},
               "headers": [{"name": "hv3", "value": b64(b"y")}],
               "timestamp": "2024-05-06T07:08:09.010Z"})
        .to_string(),
    )
    .await?;
    assert_eq!(v3.status, 200, "{}", v3.text());
    assert_eq!(v3.json()["partition_id"], 1);

    // v3 streaming: chunked body, records split across chunks, reports in order.
    let stream = http(
        &addr,
        "POST",
        &format!("/v3/clusters/{cluster}/topics/orders/records"),
        &[("content-type", "application/json")],
        Body::Chunked(vec![
            Bytes::from(
                r#"{"partition_id":2,"value":{"type":"STRING","data":"s1"}}{"partition_id":2,"val"#,
            ),
            Bytes::from(r#"ue":{"type":"STRING","data":"s2"}}"#),
            Bytes::from(r#"{"partition_id":2,"value":{"type":"STRING","data":"s3"}}"#),
        ]),
    )
    .await?;
    assert_eq!(stream.status, 200, "{}", stream.text());
    let reports: Vec<Value> = serde_json::Deserializer::from_slice(&stream.body)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()?;
    let offsets: Vec<i64> = reports
        .iter()
        .filter_map(|r| r["offset"].as_i64())
        .collect();
    assert_eq!(offsets, vec![0, 1, 2], "{}", stream.text());

    // v3 batch.
    let batch = post(
        &addr,
        &format!("/v3/clusters/{cluster}/topics/orders/records:batch"),
        "application/json",
        json!({"entries": [{"id": "1", "partition_id": 2,
                            "value": {"type": "BINARY", "data": b64(&[0, 255])}}]})
        .to_string(),
    )
    .await?;
    assert_eq!(batch.status, 207, "{}", batch.text());
    assert_eq!(batch.json()["successes"][0]["offset"], 3);

    // Native with key, request id, source and trace context.
    let native = http(
        &addr,
        "POST",
        "/ingest/v1/orders?key=native-key&partition=0",
        &[
            ("content-type", "application/json"),
            ("x-request-id", "req-e2e"),
            ("x-source", "checkout"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ],
        Body::Full(Bytes::from(r#"{"total": 42}"#)),
    )
    .await?;
    assert_eq!(native.status, 200, "{}", native.text());
    assert_eq!(native.json()["durability"], "committed");
    let native_ts = native.json()["results"][0]["timestamp"]
        .as_i64()
        .context("timestamp")?;

    let messages = tokio::task::spawn_blocking(move || {
        clients::consume_from_beginning(&bootstrap, "orders", 3, 7, CONSUME_TIMEOUT)
    })
    .await??;
    assert_eq!(
        messages.len(),
        7,
        "{:?}",
        messages.iter().map(clients::describe).collect::<Vec<_>>()
    );
    let find = |partition: i32, offset: i64| {
        messages
            .iter()
            .find(|m| m.partition() == partition && m.offset() == offset)
            .with_context(|| format!("no message at {partition}/{offset}"))
    };
    let m = find(0, 0)?;
    assert_eq!(m.key(), Some(&b"v2-key"[..]));
    assert_eq!(m.payload(), Some(&b"v2-value"[..]));
    assert_eq!(header(m, "hv2"), Some(&b"x"[..]));

    let m = find(1, 0)?;
    assert_eq!(m.key(), Some(&b"v3-key"[..]));
    assert_eq!(m.payload(), Some(&br#"{"n":3}"#[..]));
    assert_eq!(header(m, "hv3"), Some(&b"y"[..]));
    assert_eq!(m.timestamp().to_millis(), Some(1_714_979_289_010));

    let values: Vec<&[u8]> = (0..4)
        .map(|o| find(2, o).map(|m| m.payload().unwrap_or_default()))
        .collect::<Result<_>>()?;
    assert_eq!(values, vec![&b"s1"[..], b"s2", b"s3", &[0, 255]]);

    let m = find(0, 1)?;
    assert_eq!(m.key(), Some(&b"native-key"[..]));
    assert_eq!(m.payload(), Some(&br#"{"total": 42}"#[..]));
    assert_eq!(m.timestamp().to_millis(), Some(native_ts));
    assert_eq!(header(m, "x-request-id"), Some(&b"req-e2e"[..]));
    assert_eq!(header(m, "x-source"), Some(&b"checkout"[..]));
    assert!(header(m, "x-client-addr").is_some_and(|a| a.starts_with(b"127.0.0.1:")));
    assert_eq!(
        header(m, "traceparent"),
        Some(&b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"[..])
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_same_partition_over_http_and_kafka() -> Result<()> {
    let sluice = SluiceProcess::start(SluiceOptions::default())?;
    let bootstrap = sluice.bootstrap();
    let addr = http_addr(&sluice)?;
    let cluster = cluster_id(&sluice)?;
    clients::create_topic(&bootstrap, "keyed", 8, &[]).await?;
    let producer = clients::producer(&bootstrap)?;
    for i in 0..24 {
        let key = format!("customer-{i}");
        let kafka_partition = producer
            .send(
                FutureRecord::to("keyed").key(key.as_bytes()).payload("k"),
                Duration::from_secs(10),
            )
            .await
            .map(|d| d.partition)
            .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
        let native = post(
            &addr,
            &format!("/ingest/v1/keyed?key={key}"),
            "application/json",
            "{}",
        )
        .await?;
        assert_eq!(native.status, 200, "{}", native.text());
        assert_eq!(
            native.json()["results"][0]["partition"],
            kafka_partition,
            "key {key} (native)"
        );
        let v3 = post(
            &addr,
            &format!("/v3/clusters/{cluster}/topics/keyed/records"),
            "application/json",
            json!({"key": {"type": "STRING", "data": key}, "value": {"data": 1}}).to_string(),
        )
        .await?;
        assert_eq!(v3.json()["partition_id"], kafka_partition, "key {key} (v3)");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retry_after_sigkill_and_restart_is_deduplicated() -> Result<()> {
    let mut sluice = SluiceProcess::start(SluiceOptions::default())?;
    clients::create_topic(&sluice.bootstrap(), "idem", 1, &[]).await?;
    let send = |addr: String, body: &'static str| async move {
        http(
            &addr,
            "POST",
            "/ingest/v1/idem",
            &[
                ("content-type", "application/x-ndjson"),
                ("idempotency-key", "order-7"),
            ],
            Body::Full(Bytes::from(body)),
        )
        .await
    };
    let first = send(http_addr(&sluice)?, "{\"a\":1}\n{\"a\":2}\n").await?;
    assert_eq!(first.status, 200, "{}", first.text());
    sluice.kill9()?;
    sluice.restart()?;
    let retry = send(http_addr(&sluice)?, "{\"a\":1}\n{\"a\":2}\n").await?;
    assert_eq!(retry.status, 200, "{}", retry.text());
    assert_eq!(
        retry
            .headers
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(retry.body, first.body, "the original answer comes back");
    // Same key, different body: refused.
    let other = send(http_addr(&sluice)?, "{\"a\":3}\n").await?;
    assert_eq!(other.status, 422, "{}", other.text());
    let bootstrap = sluice.bootstrap();
    let (low, high) =
        tokio::task::spawn_blocking(move || clients::watermarks(&bootstrap, "idem", 0)).await??;
    assert_eq!((low, high), (0, 2), "the retry wrote nothing");
    Ok(())
}

/// (what, path, content type, body, expected status, expected REST Proxy `error_code`; `None` =
/// a problem+json answer).
type BadCase = (&'static str, String, &'static str, Bytes, u16, Option<i64>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_documented_statuses_and_writes_nothing() -> Result<()> {
    let sluice = SluiceProcess::start(
        SluiceOptions::default()
            .auto_create_topics(false)
            .arg("--http-max-body-bytes", 2 * 1024 * 1024),
    )?;
    let bootstrap = sluice.bootstrap();
    let addr = http_addr(&sluice)?;
    let cluster = cluster_id(&sluice)?;
    clients::create_topic(&bootstrap, "strict", 1, &[]).await?;
    let v3 = format!("/v3/clusters/{cluster}/topics/strict/records");
    let native = "/ingest/v1/strict".to_string();
    let json_ct = "application/json";
    let cases: Vec<BadCase> = vec![
        (
            "malformed JSON",
            native.clone(),
            json_ct,
            Bytes::from("{oops"),
            400,
            None,
        ),
        (
            "wrong content type",
            native.clone(),
            "text/csv",
            Bytes::from("a,b"),
            415,
            None,
        ),
        (
            "empty body",
            native.clone(),
            json_ct,
            Bytes::new(),
            400,
            None,
        ),
        (
            "unknown topic (native)",
            "/ingest/v1/nope".into(),
            json_ct,
            Bytes::from("{}"),
            404,
            None,
        ),
        (
            "unknown topic (v3)",
            format!("/v3/clusters/{cluster}/topics/nope/records"),
            json_ct,
            Bytes::from("{}"),
            404,
            Some(40401),
        ),
        (
            "unknown topic (v2)",
            "/topics/nope".into(),
            "application/vnd.kafka.json.v2+json",
            Bytes::from(r#"{"records":[{"value":1}]}"#),
            404,
            Some(40401),
        ),
        (
            "invalid base64 (v3)",
            v3.clone(),
            json_ct,
            Bytes::from(r#"{"value":{"type":"BINARY","data":"***"}}"#),
            422,
            Some(42206),
        ),
        (
            "invalid base64 (v2)",
            "/topics/strict".into(),
            "application/vnd.kafka.binary.v2+json",
            Bytes::from(r#"{"records":[{"value":"***"}]}"#),
            422,
            Some(42206),
        ),
        (
            "malformed (v2)",
            "/topics/strict".into(),
            "application/vnd.kafka.json.v2+json",
            Bytes::from("{"),
            400,
            Some(400),
        ),
        (
            "empty (v3)",
            v3.clone(),
            json_ct,
            Bytes::new(),
            400,
            Some(400),
        ),
    ];
    for (what, path, content_type, body, status, code) in cases {
        let response = post(&addr, &path, content_type, body).await?;
        assert_eq!(response.status, status, "{what}: {}", response.text());
        match code {
            Some(code) => assert_eq!(
                response.json()["error_code"],
                code,
                "{what}: {}",
                response.text()
            ),
            None => assert_eq!(
                response.headers.get("content-type").map(|v| v.as_bytes()),
                Some(&b"application/problem+json"[..]),
                "{what}"
            ),
        }
    }
    assert_eq!(declared_too_large(&addr, &native).await?, 413);
    let b = bootstrap.clone();
    let (_, high) =
        tokio::task::spawn_blocking(move || clients::watermarks(&b, "strict", 0)).await??;
    assert_eq!(high, 0, "no bad request wrote anything");

    // A 10,000-record batch is accepted whole.
    let body: String = (0..10_000).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let response = post(&addr, "/ingest/v1/strict", "application/x-ndjson", body).await?;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json()["results"].as_array().map(Vec::len),
        Some(10_000)
    );
    let (_, high) =
        tokio::task::spawn_blocking(move || clients::watermarks(&bootstrap, "strict", 0)).await??;
    if high != 10_000 {
        bail!("high watermark {high} after a 10,000-record batch");
    }
    Ok(())
}

/// Declares a 3 MiB body (over the 2 MiB limit), sends only its first KiB and reads the answer.
/// The server answers from the declared length without reading the body and closes the connection;
/// a client still writing megabytes at that point may see a reset instead of the answer, so this
/// check uses a raw socket that stops writing early.
async fn declared_too_large(addr: &str, path: &str) -> Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            3 * 1024 * 1024
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&[b' '; 1024]).await?;
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        // Bounded: stops at the end of the headers, at EOF, or after 64 KiB.
        while answer.len() < 64 * 1024 && !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
        }
        let status_line = String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .with_context(|| format!("no status line in {status_line:?}"))
    };
    tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .context("over-limit request timed out")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_endpoints_over_http() -> Result<()> {
    let sluice = SluiceProcess::start(SluiceOptions::default())?;
    let addr = http_addr(&sluice)?;
    let get = |path: &'static str| {
        let addr = addr.clone();
        async move { http(&addr, "GET", path, &[], Body::Full(Bytes::new())).await }
    };
    assert_eq!(get("/healthz").await?.status, 200);
    assert_eq!(get("/readyz").await?.status, 200);
    let doc = get("/openapi.json").await?.json();
    assert!(doc["paths"]["/ingest/v1/{topic}"]["post"].is_object());
    post(&addr, "/ingest/v1/m", "application/json", "{}").await?;
    // A Kafka request too: the broker's metrics are on the same page.
    clients::create_topic(&sluice.bootstrap(), "via-kafka", 1, &[]).await?;
    let metrics = get("/metrics").await?.text();
    for name in [
        "ingest_http_requests_total",
        "ingest_records_total",
        "ingest_ack_latency_seconds_bucket",
        "ingest_inflight_bytes",
        "broker_requests_total{api=\"CreateTopics\"}",
        "broker_request_duration_seconds_bucket",
        "wal_syncs_total",
        "wal_records_committed_total",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    Ok(())
}

/// The `offset` of every event in a native answer.
fn offsets_of(response: &HttpResponse) -> Result<Vec<i64>> {
    let value: Value = serde_json::from_slice(&response.body)
        .with_context(|| format!("answer is not JSON: {}", response.text()))?;
    let mut out = Vec::new();
    let mut stack = vec![&value];
    while let Some(item) = stack.pop() {
        match item {
            Value::Object(map) => {
                if let Some(offset) = map.get("offset").and_then(Value::as_i64) {
                    out.push(offset);
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// `Idempotency-Key` holds where the records are (S3 WAL, the object store's WAL PUT held at the
/// proxy): a request answered 503 because its append was not durable in time, retried with the
/// same key while that append is still pending, is written once and the retry gets its offset; a
/// retry sent while the first request is still running waits for it and gets the same answer; and
/// after a SIGKILL a new broker on an **empty data dir** (the key store gone with it) still
/// recognises a retry from the records' producer state in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_live_with_their_records() -> Result<()> {
    use sluice_tests::fault_proxy::RequestMatch;
    use sluice_tests::s3::S3Server;
    const CLUSTER: &str = "idem-records";
    let s3 = S3Server::start()?;
    let options = || {
        SluiceOptions::default()
            .s3(&s3, "idem")
            .object_wal()
            .arg("--cluster-id", CLUSTER)
            .arg("--http-ack-timeout-ms", 1500)
            // The held PUT must not be given up meanwhile.
            .arg("--wal-put-give-up-ms", 120_000)
    };
    let mut sluice = SluiceProcess::start(options())?;
    clients::create_topic(&sluice.bootstrap(), "idem", 1, &[]).await?;
    let addr = http_addr(&sluice)?;
    let send = |addr: String, key: &'static str, body: &'static str| async move {
        http(
            &addr,
            "POST",
            "/ingest/v1/idem",
            &[
                ("content-type", "application/x-ndjson"),
                ("idempotency-key", key),
            ],
            Body::Full(Bytes::from(body)),
        )
        .await
    };
    let wal_puts = || RequestMatch::put(&format!("idem/{CLUSTER}/wal/"));

    // 1. Answered 503 (not durable within 1.5 s), then retried while the append is pending.
    let held = s3.faults().hold_body(wal_puts());
    let first = send(addr.clone(), "k-503", "{\"n\":1}\n").await?;
    assert_eq!(first.status, 503, "{}", first.text());
    let retry = tokio::spawn(send(addr.clone(), "k-503", "{\"n\":1}\n"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !retry.is_finished(),
        "the retry did not wait for the pending append"
    );
    drop(held);
    let retry = retry.await??;
    assert_eq!(retry.status, 200, "{}", retry.text());
    assert_eq!(offsets_of(&retry)?, vec![0]);

    // 2. A retry while the first request still runs waits for it: the same answer.
    let held = s3.faults().hold_body(wal_puts());
    let one = tokio::spawn(send(addr.clone(), "k-pending", "{\"n\":2}\n"));
    tokio::time::timeout(Duration::from_secs(10), held.arrived()).await?;
    let two = tokio::spawn(send(addr.clone(), "k-pending", "{\"n\":2}\n"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    let (one, two) = (one.await??, two.await??);
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(two.status, 200, "{}", two.text());
    assert_eq!(offsets_of(&one)?, vec![1]);
    assert_eq!(offsets_of(&two)?, vec![1]);

    // 3. SIGKILL, then a new broker on an empty data dir: the key store is gone, the records'
    // producer state is in the bucket.
    let third = send(addr.clone(), "k-crash", "{\"n\":3}\n{\"n\":4}\n").await?;
    assert_eq!(offsets_of(&third)?, vec![2, 3]);
    sluice.kill9()?;
    let fresh = SluiceProcess::start(options())?;
    let again = send(http_addr(&fresh)?, "k-crash", "{\"n\":3}\n{\"n\":4}\n").await?;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(offsets_of(&again)?, vec![2, 3], "the original offsets");

    let bootstrap = fresh.bootstrap();
    let messages = tokio::task::spawn_blocking(move || {
        clients::consume_from_beginning(&bootstrap, "idem", 1, 4, Duration::from_secs(30))
    })
    .await??;
    let values: Vec<String> = messages
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string())
        .collect();
    assert_eq!(values.len(), 4, "{values:?}");
    for (n, value) in values.iter().enumerate() {
        let parsed: Value = serde_json::from_str(value)?;
        assert_eq!(parsed, json!({ "n": n + 1 }), "offset {n}");
    }
    let (_, high) = tokio::task::spawn_blocking({
        let bootstrap = fresh.bootstrap();
        move || clients::watermarks(&bootstrap, "idem", 0)
    })
    .await??;
    assert_eq!(high, 4, "every event exactly once");
    Ok(())
}
