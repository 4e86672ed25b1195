//! Operations endpoints: `/healthz` (the process answers), `/readyz` (serving: metadata has a
//! cluster id and the service is not shutting down), `/metrics` (Prometheus text format: the
//! ingest metrics, the broker's per-API request counters/latencies and the WAL's counters) and
//! `/openapi.json`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Shared;

pub(crate) async fn healthz() -> Response {
    json_response(StatusCode::OK, json!({"status": "ok"}))
}

pub(crate) async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let serving = shared.ready.load(Ordering::Acquire);
    let has_cluster = !shared.producer.meta.state().cluster_id.is_empty();
    if serving && has_cluster {
        json_response(StatusCode::OK, json!({"status": "ready"}))
    } else {
        let reason = if !has_cluster {
            "metadata has no cluster id yet"
        } else {
            "not serving (starting or shutting down)"
        };
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not ready", "reason": reason}),
        )
    }
}

pub(crate) async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    // The WAL keeps its own counters; publish their current values with every scrape.
    let wal = shared.producer.store.wal_stats();
    metrics::counter!("wal_groups_committed_total").absolute(wal.groups_committed);
    metrics::counter!("wal_records_committed_total").absolute(wal.records_committed);
    metrics::counter!("wal_bytes_committed_total").absolute(wal.bytes_committed);
    metrics::counter!("wal_syncs_total").absolute(wal.syncs);
    if let Some(objects) = shared.producer.store.object_wal_stats() {
        metrics::counter!("wal_objects_written_total").absolute(objects.objects);
        metrics::counter!("wal_object_bytes_total").absolute(objects.bytes);
        metrics::counter!("wal_object_put_retries_total").absolute(objects.put_retries);
        metrics::counter!("wal_object_commits_total").absolute(objects.commits);
    }
    let cache = shared.producer.store.block_cache_stats();
    metrics::counter!("block_cache_hits_total").absolute(cache.hits);
    metrics::counter!("block_cache_misses_total").absolute(cache.misses);
    metrics::counter!("object_gets_total").absolute(cache.gets);
    metrics::counter!("object_get_bytes_total").absolute(cache.get_bytes);
    shared.prometheus.run_upkeep();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        shared.prometheus.render(),
    )
        .into_response()
}

pub(crate) async fn openapi() -> Response {
    json_response(StatusCode::OK, crate::openapi::document())
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
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
