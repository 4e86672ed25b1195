//! The request pipeline as tower layers (axum `from_fn` middleware), outermost first:
//!
//! 1. [`request_context`] — request id (`X-Request-Id` or a new UUID), receive time, client address;
//!    echoes `X-Request-Id` on the response.
//! 2. [`observe`] (route layer) — `ingest_http_requests_total` / duration by matched route.
//! 3. [`buffer_body`] (produce routes) — body limit (413) and the in-flight byte budget (503 +
//!    `Retry-After`); the body is read once, within budget, and handed on as one chunk.
//! 4. *(next issue: authentication → tenant, quotas, schema validation, dead-lettering slot in
//!    here, between the budget and idempotency, each as its own layer)*
//! 5. [`idempotency`] (native produce) — `Idempotency-Key` replay / 409 / 422.
//! 6. the handler.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use tokio::sync::OwnedSemaphorePermit;

use crate::error::{ApiError, ErrorKind, ErrorStyle};
use crate::idempotency::{fingerprint, Begin, StoredResponse};
use crate::{metrics, Shared};

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub(crate) static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Per-request facts stamped into audit headers and error bodies.
#[derive(Debug, Clone)]
pub(crate) struct RequestContext {
    pub(crate) request_id: Arc<str>,
    pub(crate) received_ms: i64,
    pub(crate) client: Option<SocketAddr>,
}

/// A request id from the client is kept if it is short printable ASCII (it ends up in logs and
/// record headers), else a new one is made.
fn request_id_from(headers: &HeaderMap) -> Arc<str> {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(Arc::from)
        .unwrap_or_else(new_request_id)
}

/// A process-unique request id: a random per-process prefix (so ids of different runs and
/// brokers do not collide) and a counter — no random-number syscall per request.
fn new_request_id() -> Arc<str> {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..16].to_string());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Arc::from(format!("{prefix}-{n:x}"))
}

pub(crate) async fn request_context(mut request: Request, next: Next) -> Response {
    let context = RequestContext {
        request_id: request_id_from(request.headers()),
        received_ms: crate::time::now_ms(),
        client: request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
    };
    let id = context.request_id.clone();
    request.extensions_mut().insert(context);
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

pub(crate) async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    metrics::request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// Bytes of the in-flight budget held by one request; returned when dropped.
pub(crate) struct InflightBytes {
    shared: Arc<Shared>,
    permits: Vec<OwnedSemaphorePermit>,
    bytes: usize,
}

impl InflightBytes {
    pub(crate) fn new(shared: Arc<Shared>) -> InflightBytes {
        InflightBytes {
            shared,
            permits: Vec::new(),
            bytes: 0,
        }
    }

    /// Takes `bytes` more from the budget without waiting; `false` when the budget is exhausted.
    pub(crate) fn try_take(&mut self, bytes: usize) -> bool {
        let Ok(count) = u32::try_from(bytes.max(1)) else {
            return false;
        };
        match self.shared.inflight.clone().try_acquire_many_owned(count) {
            Ok(permit) => {
                self.record(permit, bytes);
                true
            }
            Err(_) => false,
        }
    }

    /// Takes `bytes` more, waiting until they are free (streaming: backpressure by not reading).
    pub(crate) async fn take(&mut self, bytes: usize) -> Result<(), ApiError> {
        let count = u32::try_from(bytes.max(1))
            .map_err(|_| ApiError::new(ErrorKind::PayloadTooLarge, "chunk too large"))?;
        match self.shared.inflight.clone().acquire_many_owned(count).await {
            Ok(permit) => {
                self.record(permit, bytes);
                Ok(())
            }
            Err(_) => Err(ApiError::new(ErrorKind::Unavailable, "shutting down")),
        }
    }

    /// Returns everything held so far (streaming: after a chunk's records are acknowledged).
    pub(crate) fn release(&mut self) {
        let total = self
            .shared
            .inflight_used
            .fetch_sub(self.bytes, Ordering::Relaxed)
            .saturating_sub(self.bytes);
        metrics::inflight_bytes(total);
        self.bytes = 0;
        self.permits.clear();
    }

    fn record(&mut self, permit: OwnedSemaphorePermit, bytes: usize) {
        self.permits.push(permit);
        self.bytes += bytes;
        let total = self
            .shared
            .inflight_used
            .fetch_add(bytes, Ordering::Relaxed)
            + bytes;
        metrics::inflight_bytes(total);
    }
}

impl Drop for InflightBytes {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.release();
        }
    }
}

fn content_length(headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad_request("invalid Content-Length")),
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorKind::PayloadTooLarge,
        format!("request body exceeds the limit of {limit} bytes"),
    )
}

fn overloaded() -> ApiError {
    ApiError::new(
        ErrorKind::Overloaded,
        "too many request bytes in flight; retry later",
    )
}

/// Reads a whole body within the size limit and the in-flight budget (never waiting for budget:
/// a full budget answers 503 at once instead of queueing unbounded requests).
pub(crate) async fn read_body(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, InflightBytes), ApiError> {
    let limit = shared.config.max_body_bytes;
    let mut budget = InflightBytes::new(shared.clone());
    if let Some(length) = content_length(headers)? {
        if length > limit {
            return Err(too_large(limit));
        }
        if !budget.try_take(length) {
            return Err(overloaded());
        }
        let collected = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    too_large(limit)
                } else {
                    ApiError::bad_request(format!("cannot read the request body: {error}"))
                }
            })?;
        return Ok((collected.to_bytes(), budget));
    }
    // No length (chunked): take budget chunk by chunk as the body arrives.
    let mut stream = body.into_data_stream();
    let mut buffer = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if buffer.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        if !budget.try_take(chunk.len()) {
            return Err(overloaded());
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok((buffer.freeze(), budget))
}

/// Layer state: the shared service and how this route family renders errors.
#[derive(Clone)]
pub(crate) struct LayerState {
    pub(crate) shared: Arc<Shared>,
    pub(crate) style: ErrorStyle,
}

pub(crate) fn request_id(request: &Request) -> Option<Arc<str>> {
    request
        .extensions()
        .get::<RequestContext>()
        .map(|c| c.request_id.clone())
}

pub(crate) async fn buffer_body(
    State(state): State<LayerState>,
    request: Request,
    next: Next,
) -> Response {
    let id = request_id(&request);
    let (parts, body) = request.into_parts();
    match read_body(&state.shared, &parts.headers, body).await {
        Ok((bytes, budget)) => {
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            // The budget is held until the answer is ready (i.e. the records are durable).
            drop(budget);
            response
        }
        Err(error) => error.render(state.style, id.as_deref()),
    }
}

/// Valid keys: 1..=255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key)
            if !key.is_empty()
                && key.len() <= 255
                && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
        {
            Ok(Some(key.to_string()))
        }
        _ => Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
        )),
    }
}

/// Answers a retried request from the idempotency store. Runs after [`buffer_body`], so the body
/// is one in-memory chunk.
pub(crate) async fn idempotency(
    State(state): State<LayerState>,
    request: Request,
    next: Next,
) -> Response {
    let id = request_id(&request);
    let key = match idempotency_key(request.headers()) {
        Ok(Some(key)) => key,
        Ok(None) => return next.run(request).await,
        Err(error) => return error.render(state.style, id.as_deref()),
    };
    let (parts, body) = request.into_parts();
    // Already buffered by `buffer_body`: collecting is a move, not a copy.
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return ApiError::bad_request(format!("cannot read the request body: {e}"))
                .render(state.style, id.as_deref())
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let target = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    let print = fingerprint(parts.method.as_str(), target, content_type, &body);
    // A retry while the first request with the key runs waits for its outcome (bounded), then
    // looks again: replayed if it was answered, run (and de-duplicated in storage) if not.
    let deadline = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
    let ticket = loop {
        match state.shared.idempotency.begin(&key, print) {
            Begin::Proceed(ticket) => break ticket,
            Begin::Replay(stored) => {
                metrics::idempotency_replay();
                return replayed(stored);
            }
            Begin::Mismatch => {
                metrics::idempotency_conflict();
                return ApiError::new(
                    ErrorKind::IdempotencyMismatch,
                    format!("Idempotency-Key '{key}' was already used with a different request"),
                )
                .render(state.style, id.as_deref());
            }
            Begin::InFlight(mut done) => {
                // `changed` errs once the first request's ticket is gone: look again.
                if tokio::time::timeout_at(deadline, done.changed())
                    .await
                    .is_err()
                {
                    metrics::idempotency_conflict();
                    return ApiError::new(
                        ErrorKind::IdempotencyInFlight,
                        format!("a request with Idempotency-Key '{key}' is still in progress"),
                    )
                    .render(state.style, id.as_deref());
                }
            }
        }
    };
    // Its records are written as an idempotent producer of its own (`produce::key_producer_id`):
    // the key travels with them, in the same WAL write, so a retry after a 503 (the first append
    // may still land) or after a crash between the records and the key is de-duplicated by the
    // partition's producer state.
    let mut parts = parts;
    parts
        .extensions
        .insert(crate::produce::IdempotentWrite::for_key(&key));
    // The request and the recording of its answer run in their own task: a client that hangs up
    // mid-request must not leave records written but the key forgotten.
    let shared = state.shared.clone();
    let task = tokio::spawn(async move {
        let response = next.run(Request::from_parts(parts, Body::from(body))).await;
        finish_idempotent(shared, ticket, key, response).await
    });
    match task.await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "idempotent request task failed");
            ApiError::new(ErrorKind::Internal, "request failed").render(state.style, id.as_deref())
        }
    }
}

/// Longest wait of a retry for the first request with its key (which itself answers 503 after
/// 30 s when its append is not durable).
const IN_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(40);

/// Keeps a successful answer under its key (durably) and hands it back.
async fn finish_idempotent(
    shared: Arc<Shared>,
    ticket: crate::idempotency::Ticket,
    key: String,
    response: Response,
) -> Response {
    let status = response.status();
    // Only answers that reflect a write are kept: a retry after a 4xx/5xx runs again.
    if !status.is_success() && status.as_u16() != 207 {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let stored = StoredResponse {
        status: status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string(),
        body: body.clone(),
    };
    if let Err(error) = shared.idempotency.finish(ticket, stored).await {
        // The records are durable; only a retry's de-duplication is at risk. Say so in the log.
        tracing::error!(%error, key, "cannot persist idempotency key");
    }
    Response::from_parts(parts, Body::from(body))
}

fn replayed(stored: StoredResponse) -> Response {
    let status =
        axum::http::StatusCode::from_u16(stored.status).unwrap_or(axum::http::StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    if let Ok(value) = HeaderValue::from_str(&stored.content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response.headers_mut().insert(
        IDEMPOTENT_REPLAYED.clone(),
        HeaderValue::from_static("true"),
    );
    response
}
