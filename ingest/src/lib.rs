//! `ingest` — the HTTP ingest edge: Confluent-REST-Proxy-compatible produce endpoints (v2, v3), a
//! native endpoint (JSON, NDJSON, CloudEvents) with durable acks, `Idempotency-Key` de-duplication
//! and audit headers, and the operations endpoints (`/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`).
//!
//! HTTP producers write into the same log as Kafka producers with no Kafka client in between:
//! records are encoded as record batches v2 and appended through `storage::LogStore::append`, the
//! broker's own partition append path (see `produce`). The request pipeline is a stack of tower
//! layers (see `layers`), so authentication, quotas, schema checks and dead-lettering slot in as
//! further layers.
//!
//! Private modules: `produce` (topic lookup/creation, partitioning, batch building, appends),
//! `partitioner` (Java-compatible murmur2), `rest_v2`, `rest_v3`, `native` (the endpoints and their
//! pure body parsers), `idempotency` (the WAL-backed key store), `layers`, `ops`, `openapi`,
//! `error` (status codes and error bodies), `time`.
//!
//! Architecture invariant: a 2xx (or a success entry in a 207) is sent only after
//! `LogStore::append` returned for that record, i.e. after the WAL commit.
//! Architecture invariant: nothing depends on `ingest` except the `sluice` binary.

#![recursion_limit = "256"]

mod error;
mod idempotency;
mod layers;
pub mod metrics;
mod native;
mod openapi;
mod ops;
#[cfg(test)]
mod parser_props;
pub mod partitioner;
mod produce;
mod rest_v2;
mod rest_v3;
#[cfg(test)]
mod router_tests;
mod time;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use metadata::{MetadataClient, NodeId};
use metrics_exporter_prometheus::PrometheusHandle;
use storage::LogStore;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use error::Error;

use error::ErrorStyle;
use idempotency::{IdempotencyOptions, IdempotencyStore};
use layers::LayerState;
use produce::Producer;

/// Settings of the ingest service (the `serve` command fills these from flags, env and file).
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub node_id: NodeId,
    /// Reported by REST Proxy v3 (`/v3/clusters`) and checked in its paths.
    pub cluster_id: String,
    /// Create unknown topics on produce (v2 and native; v3 answers 40401 like REST Proxy).
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics.
    pub default_partitions: u32,
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Budget of request bytes held by requests in progress; when exhausted new requests get 503
    /// with `Retry-After` (never unbounded memory).
    pub inflight_bytes: usize,
    /// Most events/records in one request (413 beyond).
    pub max_events_per_request: usize,
    /// Where the idempotency-key WAL lives (`{data_dir}/ingest/idempotency`); `None` = memory only.
    pub data_dir: Option<PathBuf>,
    /// How long an answered `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// Most answered keys kept (oldest evicted first).
    pub idempotency_max_keys: usize,
    /// fsync the idempotency WAL (false only for tests/benchmarks).
    pub fsync: bool,
    /// Longest wait for an append to become durable; then the request is answered 503 (the
    /// append carries on; a retry with the same `Idempotency-Key` is de-duplicated).
    pub ack_timeout: Duration,
}

impl IngestConfig {
    pub fn new(node_id: NodeId, cluster_id: impl Into<String>) -> IngestConfig {
        IngestConfig {
            node_id,
            cluster_id: cluster_id.into(),
            auto_create_topics: true,
            default_partitions: 1,
            max_body_bytes: 16 * 1024 * 1024,
            inflight_bytes: 256 * 1024 * 1024,
            max_events_per_request: 100_000,
            data_dir: None,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            idempotency_max_keys: 1_000_000,
            fsync: true,
            ack_timeout: Duration::from_secs(30),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if self.max_body_bytes == 0 || self.max_body_bytes > u32::MAX as usize {
            return Err(Error::Config(
                "max body bytes must be between 1 and 4 GiB".into(),
            ));
        }
        if self.inflight_bytes < self.max_body_bytes || self.inflight_bytes > Semaphore::MAX_PERMITS
        {
            return Err(Error::Config(
                "the in-flight byte budget must be at least the max body size".into(),
            ));
        }
        if self.max_events_per_request == 0 {
            return Err(Error::Config(
                "max events per request must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// State shared by all handlers and layers.
pub(crate) struct Shared {
    pub(crate) config: IngestConfig,
    pub(crate) cluster_id: String,
    pub(crate) producer: Producer,
    pub(crate) inflight: Arc<Semaphore>,
    pub(crate) inflight_used: AtomicUsize,
    pub(crate) idempotency: Arc<IdempotencyStore>,
    pub(crate) ready: AtomicBool,
    pub(crate) prometheus: PrometheusHandle,
}

/// The ingest service: open it, take its [`router`](Ingest::router), [`serve`] it.
pub struct Ingest {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    sweeper: Mutex<Option<JoinHandle<()>>>,
}

impl Ingest {
    /// Opens the idempotency store (replaying its keys) and prepares the service. Not ready until
    /// [`set_ready`](Ingest::set_ready).
    pub async fn open(
        config: IngestConfig,
        store: LogStore,
        meta: MetadataClient,
    ) -> Result<Ingest, Error> {
        config.validate()?;
        let idempotency = IdempotencyStore::open(IdempotencyOptions {
            dir: config
                .data_dir
                .as_ref()
                .map(|dir| dir.join("ingest").join("idempotency")),
            ttl: config.idempotency_ttl,
            max_keys: config.idempotency_max_keys,
            fsync: config.fsync,
            wal_fs: None,
        })
        .await?;
        let cancel = CancellationToken::new();
        let sweeper = tokio::spawn(idempotency.clone().run_sweeper(cancel.clone()));
        let shared = Arc::new(Shared {
            cluster_id: config.cluster_id.clone(),
            producer: Producer::new(
                store,
                meta,
                config.node_id,
                config.auto_create_topics,
                config.default_partitions,
            )
            .with_ack_timeout(config.ack_timeout),
            inflight: Arc::new(Semaphore::new(config.inflight_bytes)),
            inflight_used: AtomicUsize::new(0),
            idempotency,
            ready: AtomicBool::new(false),
            prometheus: metrics::prometheus_handle(),
            config,
        });
        Ok(Ingest {
            shared,
            cancel,
            sweeper: Mutex::new(Some(sweeper)),
        })
    }

    /// `/readyz` answers 200 only while this is set.
    pub fn set_ready(&self, ready: bool) {
        self.shared.ready.store(ready, Ordering::Release);
    }

    /// The HTTP router with every route and layer.
    pub fn router(&self) -> Router {
        build_router(self.shared.clone()).0
    }

    /// Stops the key sweeper and closes the idempotency WAL. Call after the server stopped.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.set_ready(false);
        self.cancel.cancel();
        let sweeper = self
            .sweeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = sweeper {
            let _ = task.await;
        }
        self.shared.idempotency.close().await
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled (in-flight requests finish).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

/// Collects `(method, path)` of every route as the router is built (the OpenAPI test compares).
struct Routes {
    router: Router<Arc<Shared>>,
    list: Vec<(Method, &'static str)>,
}

impl Routes {
    fn new() -> Routes {
        Routes {
            router: Router::new(),
            list: Vec::new(),
        }
    }
    fn add(
        mut self,
        method: Method,
        path: &'static str,
        route: MethodRouter<Arc<Shared>>,
    ) -> Routes {
        self.list.push((method, path));
        self.router = self.router.route(path, route);
        self
    }
    fn merge(mut self, other: Routes) -> Routes {
        self.list.extend(other.list);
        self.router = self.router.merge(other.router);
        self
    }
}

pub(crate) fn build_router(shared: Arc<Shared>) -> (Router, Vec<(Method, &'static str)>) {
    let layer_state = |style| LayerState {
        shared: shared.clone(),
        style,
    };
    // Native produce: budget → (auth, quotas, schema: next issue) → idempotency → handler.
    let mut native = Routes::new().add(Method::POST, "/ingest/v1/{topic}", post(native::produce));
    native.router = native
        .router
        .route_layer(from_fn_with_state(
            layer_state(ErrorStyle::Problem),
            layers::idempotency,
        ))
        .route_layer(from_fn_with_state(
            layer_state(ErrorStyle::Problem),
            layers::buffer_body,
        ));

    let mut v2 = Routes::new()
        .add(
            Method::POST,
            "/topics/{topic}",
            post(rest_v2::produce_topic),
        )
        .add(
            Method::POST,
            "/topics/{topic}/partitions/{partition}",
            post(rest_v2::produce_partition),
        );
    v2.router = v2.router.route_layer(from_fn_with_state(
        layer_state(ErrorStyle::RestV2),
        layers::buffer_body,
    ));

    let mut v3_batch = Routes::new().add(
        Method::POST,
        "/v3/clusters/{cluster_id}/topics/{topic}/records:batch",
        post(rest_v3::produce_batch),
    );
    v3_batch.router = v3_batch.router.route_layer(from_fn_with_state(
        layer_state(ErrorStyle::RestV3),
        layers::buffer_body,
    ));

    // v3 `records` reads its body itself (streaming), within the same budget.
    let reads = Routes::new()
        .add(
            Method::POST,
            "/v3/clusters/{cluster_id}/topics/{topic}/records",
            post(rest_v3::produce_records),
        )
        .add(Method::GET, "/topics", get(rest_v2::list_topics))
        .add(Method::GET, "/topics/{topic}", get(rest_v2::get_topic))
        .add(Method::GET, "/v3/clusters", get(rest_v3::list_clusters))
        .add(
            Method::GET,
            "/v3/clusters/{cluster_id}",
            get(rest_v3::get_cluster),
        )
        .add(
            Method::GET,
            "/v3/clusters/{cluster_id}/topics",
            get(rest_v3::list_topics),
        )
        .add(
            Method::GET,
            "/v3/clusters/{cluster_id}/topics/{topic}",
            get(rest_v3::get_topic),
        )
        .add(Method::GET, "/healthz", get(ops::healthz))
        .add(Method::GET, "/readyz", get(ops::readyz))
        .add(Method::GET, "/metrics", get(ops::metrics))
        .add(Method::GET, "/openapi.json", get(ops::openapi));

    let routes = native.merge(v2).merge(v3_batch).merge(reads);
    let list = routes.list;
    let router = routes
        .router
        .fallback(not_found)
        .route_layer(from_fn(layers::observe))
        .layer(from_fn(layers::request_context))
        // Bodies are limited (and counted against the budget) by `buffer_body` and the v3 reader.
        .layer(DefaultBodyLimit::disable())
        .with_state(shared);
    (router, list)
}

async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    error::ApiError::new(
        error::ErrorKind::UnknownCluster,
        format!("HTTP 404 Not Found: no route for {}", uri.path()),
    )
    .render(ErrorStyle::RestV3, None)
}
