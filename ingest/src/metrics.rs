//! Prometheus metrics of the ingest edge, recorded with the `metrics` facade into one process-wide
//! Prometheus recorder, so whatever else in the process records through `metrics` (broker, storage,
//! WAL) appears on the same `/metrics` page.
//!
//! Names: `ingest_http_requests_total{route,status}`, `ingest_http_request_duration_seconds{route}`,
//! `ingest_records_total{outcome}` (committed / failed / rejected), `ingest_ack_latency_seconds`
//! (append until durable), `ingest_inflight_bytes`, `ingest_idempotency_replays_total`,
//! `ingest_idempotency_conflicts_total`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 0.1 ms .. 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often queued histogram samples are folded into buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// The process-wide Prometheus recorder, installed as the global `metrics` recorder on first use.
/// If another global recorder was installed first, the handle still renders (ingest's own metrics
/// then go to that recorder instead).
pub fn prometheus_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets(LATENCY_BUCKETS) {
                Ok(builder) => builder,
                // Only fails for an empty bucket list, which the constant is not.
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Histogram samples queue up inside the recorder until upkeep folds them into their
            // buckets; without a regular upkeep an unscraped process would grow without bound.
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start the metrics upkeep thread; histograms fold only on scrape");
            }
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a global metrics recorder was already installed; /metrics shows only what this recorder sees");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "ingest_http_requests_total",
        "HTTP requests answered, by route and status"
    );
    metrics::describe_histogram!(
        "ingest_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from request to response, by route"
    );
    metrics::describe_counter!(
        "ingest_records_total",
        "Records by outcome: committed (durable), failed (append failed), rejected (refused before writing)"
    );
    metrics::describe_histogram!(
        "ingest_ack_latency_seconds",
        metrics::Unit::Seconds,
        "Time from handing a batch to the log store until it is durable"
    );
    metrics::describe_gauge!(
        "ingest_inflight_bytes",
        metrics::Unit::Bytes,
        "Request body bytes held by requests in progress"
    );
    metrics::describe_gauge!("broker_connections", "Open Kafka connections");
    metrics::describe_gauge!(
        "broker_inflight_bytes",
        metrics::Unit::Bytes,
        "Kafka in-flight budget in use: requests being read or handled, responses not yet written"
    );
    metrics::describe_counter!(
        "broker_connections_closed_by_limit_total",
        "Kafka connections closed by a limit: max_connections_per_ip, connections_max_idle, request_read_timeout"
    );
    metrics::describe_counter!(
        "wal_objects_written_total",
        "S3 WAL: WAL objects stored (one PUT each, many partitions per object)"
    );
    metrics::describe_counter!(
        "wal_object_bytes_total",
        metrics::Unit::Bytes,
        "S3 WAL: bytes in stored WAL objects"
    );
    metrics::describe_counter!(
        "wal_object_put_retries_total",
        "S3 WAL: failed WAL object PUTs that were retried"
    );
    metrics::describe_counter!(
        "wal_object_commits_total",
        "S3 WAL: metadata commits indexing WAL objects"
    );
    metrics::describe_counter!(
        "ingest_idempotency_replays_total",
        "Requests answered from the idempotency store"
    );
    metrics::describe_counter!(
        "ingest_idempotency_conflicts_total",
        "Idempotency keys refused: in flight (409) or reused with another body (422)"
    );
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum RecordOutcome {
    Committed,
    Failed,
    Rejected,
}

pub(crate) fn records(outcome: RecordOutcome, count: u64) {
    if count == 0 {
        return;
    }
    let label = match outcome {
        RecordOutcome::Committed => "committed",
        RecordOutcome::Failed => "failed",
        RecordOutcome::Rejected => "rejected",
    };
    metrics::counter!("ingest_records_total", "outcome" => label).increment(count);
}

pub(crate) fn ack_latency(elapsed: Duration) {
    metrics::histogram!("ingest_ack_latency_seconds").record(elapsed.as_secs_f64());
}

pub(crate) fn request(route: &str, status: u16, elapsed: Duration) {
    metrics::counter!(
        "ingest_http_requests_total",
        "route" => route.to_string(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!("ingest_http_request_duration_seconds", "route" => route.to_string())
        .record(elapsed.as_secs_f64());
}

pub(crate) fn inflight_bytes(bytes: usize) {
    metrics::gauge!("ingest_inflight_bytes").set(bytes as f64);
}

pub(crate) fn idempotency_replay() {
    metrics::counter!("ingest_idempotency_replays_total").increment(1);
}

pub(crate) fn idempotency_conflict() {
    metrics::counter!("ingest_idempotency_conflicts_total").increment(1);
}
