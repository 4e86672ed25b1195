//! An HTTP/1.1 reverse proxy for S3 traffic with faults that tests switch at runtime: placed
//! between the broker (or an in-process object store) and the S3 server.
//!
//! Owns: accepting connections on a loopback port, forwarding each request unchanged to the
//! upstream server (same method, target, headers — including the signed `Host` — and a streamed
//! body, whether sized by `Content-Length` or chunked), and on the way injecting what tests ask
//! for. It counts requests and body bytes per kind (PUT, GET, HEAD, DELETE, LIST, POST) so tests
//! and benchmarks can report PUTs and bytes per PUT.
//!
//! **Create-if-absent decided at completion.** s3s-fs 0.14.1 checks `If-None-Match` when a PUT
//! arrives, streams the body, then renames over the key: two overlapping creates of one key both
//! succeed. AWS S3 and MinIO decide when the write completes. The proxy makes the server behave
//! like S3: a conditional request (`If-None-Match` or `If-Match` on a PUT or a multipart-complete
//! POST) has its body read completely first, and only then is forwarded, under a per-key lock
//! held until the upstream answers — so the server's check and its write happen with no other
//! conditional write of that key in between, and a create whose body is still arriving has not
//! been decided yet. [`crate::s3::S3Server`] always puts a proxy in front of s3s-fs, so every S3
//! test gets this behaviour; [`FaultProxy::start_streaming`] turns it off (only to show why it
//! exists).
//!
//! Faults, all switched at runtime:
//! - for every request (or one kind, [`FaultProxy::only_kind`]): S3 error answers (500
//!   `InternalError`, 503 `SlowDown`, 503 `ServiceUnavailable`, 409 `ConditionalRequestConflict`)
//!   for the next N requests ([`FaultProxy::fail_next`]) or a fraction of them
//!   ([`FaultProxy::fail_fraction`]), added latency, and blackouts (connections refused, requests
//!   held without an answer, or every request answered 503);
//! - for requests matching a [`RequestMatch`] (a kind and an object-key prefix):
//!   - [`FaultProxy::hold_body`]: the next matching request's body is held back (the upstream
//!     has its headers, not its body) until the test releases the returned [`Held`];
//!   - [`FaultProxy::hold_response`]: the next matching request is forwarded and completed
//!     upstream (stored), but its answer is held until released — so a later request can complete
//!     first (PUTs completing out of order);
//!   - [`FaultProxy::fail_matching`] with [`When::BeforeForwarding`]: answer the fault, nothing
//!     reaches the server (e.g. 409 with nothing stored);
//!   - [`FaultProxy::fail_matching`] with [`When::AfterStoring`]: forward, let the server store,
//!     then answer the fault instead of its answer ("stored, then 500").
//!
//!   Each rule applies to the given number of matching requests, first rule first; a request
//!   takes at most one rule. A [`Held`] is released by [`Held::release`], by being dropped, or
//!   after [`HOLD_LIMIT`] at the latest (so a failing test never hangs on it). The client's own
//!   request timeout keeps running while its request is held (`S3Server::s3_options`: 10 s; the
//!   broker: `request_timeout_ms` of its `[s3]` settings): a longer hold makes the client give
//!   up and retry, and the retry is a new request that no used-up rule matches.
//!
//! The proxy runs on its own small tokio runtime ([`crate::loopback_server`]): tests that block
//! their thread (the process harness polls with `std::thread::sleep`) must not stall the broker's
//! S3 traffic.
//!
//! ```ignore
//! let held = proxy.hold_body(RequestMatch::put("prefix/journal/"));
//! // ... start a writer; wait until its PUT is held:
//! held.arrived().await;              // or held.wait_arrived(timeout) from a blocking test
//! // ... let another writer complete its PUT of the same key, then:
//! held.release();
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::loopback_server::LoopbackServer;

type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Poll step while a request is held by a [`BlackoutMode::Hang`] blackout.
const HANG_POLL: Duration = Duration::from_millis(20);

/// How long connecting to the upstream server may take before the request gets a 502.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a [`Held`] request waits for its release: then it goes on by itself.
pub const HOLD_LIMIT: Duration = Duration::from_secs(120);

/// An S3 error answer the proxy can inject (status + S3 error code in an XML body).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Fault {
    /// 500 `InternalError`.
    InternalError,
    /// 503 `SlowDown` (request rate throttling).
    SlowDown,
    /// 503 `ServiceUnavailable`.
    ServiceUnavailable,
    /// 409 `ConditionalRequestConflict` (AWS: another conditional write of the key is in
    /// progress). object_store reports it as `AlreadyExists`.
    ConditionalRequestConflict,
}

impl S3Fault {
    pub fn status(self) -> StatusCode {
        match self {
            S3Fault::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            S3Fault::SlowDown | S3Fault::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            S3Fault::ConditionalRequestConflict => StatusCode::CONFLICT,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            S3Fault::InternalError => "InternalError",
            S3Fault::SlowDown => "SlowDown",
            S3Fault::ServiceUnavailable => "ServiceUnavailable",
            S3Fault::ConditionalRequestConflict => "ConditionalRequestConflict",
        }
    }

    fn message(self) -> &'static str {
        match self {
            S3Fault::InternalError => "We encountered an internal error. Please try again.",
            S3Fault::SlowDown => "Please reduce your request rate.",
            S3Fault::ServiceUnavailable => "Service is unable to handle request.",
            S3Fault::ConditionalRequestConflict => {
                "A conflicting conditional action is currently in progress against this resource."
            }
        }
    }
}

/// What the proxy does with traffic during a blackout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlackoutMode {
    /// New connections are closed at once; requests on open connections get the connection
    /// closed without an answer (like a crashed server or a firewall reset).
    Refuse,
    /// Requests are held without an answer until the blackout ends, then their connection is
    /// closed (like a network partition: clients see timeouts).
    Hang,
    /// Every request is answered 503 `ServiceUnavailable`.
    Unavailable,
}

/// Request kinds counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestKind {
    Put,
    Get,
    Head,
    Delete,
    /// `GET` on the bucket itself (ListObjects / ListObjectsV2).
    List,
    /// Multipart create/complete, bulk delete.
    Post,
    Other,
}

impl RequestKind {
    /// Classifies a path-style S3 request (`/bucket/key?query`).
    pub fn classify(method: &Method, path: &str, query: Option<&str>) -> RequestKind {
        let key = path
            .trim_start_matches('/')
            .split_once('/')
            .map(|(_, key)| key);
        let lists = query.is_some_and(|q| q.split('&').any(|p| p.starts_with("list-type=")))
            || key.is_none_or(str::is_empty);
        match *method {
            Method::PUT => RequestKind::Put,
            Method::GET if lists => RequestKind::List,
            Method::GET => RequestKind::Get,
            Method::HEAD => RequestKind::Head,
            Method::DELETE => RequestKind::Delete,
            Method::POST => RequestKind::Post,
            _ => RequestKind::Other,
        }
    }
}

/// Counters of one request kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    /// Requests received (including those answered with an injected fault).
    pub requests: u64,
    /// Request body bytes received from the client.
    pub request_bytes: u64,
    /// Response body bytes from the upstream server passed to the client.
    pub response_bytes: u64,
    /// Requests answered with an injected fault or dropped by a blackout.
    pub faults: u64,
    /// Requests whose SigV4 `x-amz-content-sha256` header is `UNSIGNED-PAYLOAD` (the client did
    /// not hash the body).
    pub unsigned_payload: u64,
}

/// Snapshot of the proxy's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub kinds: BTreeMap<RequestKind, KindStats>,
    /// Connections closed at accept time by a [`BlackoutMode::Refuse`] blackout.
    pub refused_connections: u64,
}

impl ProxyStats {
    pub fn kind(&self, kind: RequestKind) -> KindStats {
        self.kinds.get(&kind).copied().unwrap_or_default()
    }

    pub fn puts(&self) -> u64 {
        self.kind(RequestKind::Put).requests
    }

    pub fn put_bytes(&self) -> u64 {
        self.kind(RequestKind::Put).request_bytes
    }

    pub fn gets(&self) -> u64 {
        self.kind(RequestKind::Get).requests
    }

    pub fn total_requests(&self) -> u64 {
        self.kinds.values().map(|k| k.requests).sum()
    }

    pub fn total_faults(&self) -> u64 {
        self.kinds.values().map(|k| k.faults).sum()
    }
}

/// Which requests a per-request rule applies to: one kind (or any), and an object key prefix.
///
/// The key is the request path after the bucket (`/bucket/KEY`), as the server sees it: the
/// object store's own prefix (`s3://bucket/PREFIX`) is part of it, and it is not
/// percent-decoded (Sluice's keys need no escaping).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestMatch {
    pub kind: Option<RequestKind>,
    pub key_prefix: String,
}

impl RequestMatch {
    /// PUTs of keys starting with `key_prefix`.
    pub fn put(key_prefix: &str) -> RequestMatch {
        RequestMatch {
            kind: Some(RequestKind::Put),
            key_prefix: key_prefix.to_string(),
        }
    }

    /// Requests of any kind on keys starting with `key_prefix`.
    pub fn any(key_prefix: &str) -> RequestMatch {
        RequestMatch {
            kind: None,
            key_prefix: key_prefix.to_string(),
        }
    }

    fn matches(&self, kind: RequestKind, key: &str) -> bool {
        self.kind.is_none_or(|wanted| wanted == kind) && key.starts_with(&self.key_prefix)
    }
}

/// When a [`FaultProxy::fail_matching`] fault is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Instead of forwarding: the server never sees the request.
    BeforeForwarding,
    /// After the server has answered (and, for a PUT, stored the object): its answer is dropped.
    AfterStoring,
}

/// One held request (see [`FaultProxy::hold_body`] and [`FaultProxy::hold_response`]). Dropping
/// it releases the request.
#[derive(Debug)]
pub struct Held {
    state: Arc<HoldState>,
}

#[derive(Debug)]
struct HoldState {
    arrived: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

impl HoldState {
    fn new() -> Arc<HoldState> {
        Arc::new(HoldState {
            arrived: watch::channel(false).0,
            released: watch::channel(false).0,
        })
    }

    /// Proxy side: reports the hold and waits for the release (at most [`HOLD_LIMIT`]).
    async fn hold(&self) {
        self.arrived.send_replace(true);
        let mut released = self.released.subscribe();
        if tokio::time::timeout(HOLD_LIMIT, released.wait_for(|released| *released))
            .await
            .is_err()
        {
            eprintln!(
                "fault proxy: a held request was never released; going on after {HOLD_LIMIT:?}"
            );
        }
    }
}

impl Held {
    /// Whether a request is being held now (it arrived and is not released yet).
    pub fn is_holding(&self) -> bool {
        *self.state.arrived.borrow() && !*self.state.released.borrow()
    }

    /// Waits until a matching request is being held.
    pub async fn arrived(&self) {
        let mut arrived = self.state.arrived.subscribe();
        // The sender lives in `self.state`, which we hold: this ends only when a request arrives.
        let _ = arrived.wait_for(|arrived| *arrived).await;
    }

    /// Blocking variant of [`Held::arrived`] (for tests that do not run async), bounded by
    /// `timeout`.
    pub fn wait_arrived(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !*self.state.arrived.borrow() {
            if Instant::now() >= deadline {
                anyhow::bail!("no matching request reached the proxy within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Lets the held request go on.
    pub fn release(&self) {
        self.state.released.send_replace(true);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

#[derive(Debug)]
enum RuleAction {
    Fail { fault: S3Fault, when: When },
    HoldBody(Arc<HoldState>),
    HoldResponse(Arc<HoldState>),
}

#[derive(Debug)]
struct Rule {
    matches: RequestMatch,
    remaining: u64,
    action: RuleAction,
}

/// What a request does because of a matching rule.
enum Planned {
    Nothing,
    Fail(S3Fault, When),
    HoldBody(Arc<HoldState>),
    HoldResponse(Arc<HoldState>),
}

#[derive(Debug)]
struct Faults {
    fail_next: u64,
    fail_next_fault: S3Fault,
    /// Only requests of this kind are failed (both by count and by fraction); `None` = all.
    fail_only: Option<RequestKind>,
    fail_fraction: f64,
    fraction_fault: S3Fault,
    latency: Duration,
    blackout: Option<(Instant, BlackoutMode)>,
    /// Per-request rules, first match first.
    rules: Vec<Rule>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fail_next: 0,
            fail_next_fault: S3Fault::InternalError,
            fail_only: None,
            fail_fraction: 0.0,
            fraction_fault: S3Fault::SlowDown,
            latency: Duration::ZERO,
            blackout: None,
            rules: Vec::new(),
        }
    }
}

impl Faults {
    fn active_blackout(&mut self) -> Option<(Instant, BlackoutMode)> {
        match self.blackout {
            Some((until, _)) if Instant::now() >= until => {
                self.blackout = None;
                None
            }
            other => other,
        }
    }

    /// Decides (and consumes) an injected fault for one request.
    fn take_fault(&mut self, kind: RequestKind) -> Option<S3Fault> {
        if self.fail_only.is_some_and(|only| only != kind) {
            return None;
        }
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Some(self.fail_next_fault);
        }
        if self.fail_fraction > 0.0 && rand::random::<f64>() < self.fail_fraction {
            return Some(self.fraction_fault);
        }
        None
    }

    /// Takes (consumes one use of) the first rule matching the request.
    fn take_rule(&mut self, kind: RequestKind, key: &str) -> Planned {
        let Some(index) = self
            .rules
            .iter()
            .position(|rule| rule.remaining > 0 && rule.matches.matches(kind, key))
        else {
            return Planned::Nothing;
        };
        let rule = &mut self.rules[index];
        rule.remaining -= 1;
        let planned = match &rule.action {
            RuleAction::Fail { fault, when } => Planned::Fail(*fault, *when),
            RuleAction::HoldBody(state) => Planned::HoldBody(state.clone()),
            RuleAction::HoldResponse(state) => Planned::HoldResponse(state.clone()),
        };
        if rule.remaining == 0 {
            self.rules.remove(index);
        }
        planned
    }
}

struct Shared {
    upstream: SocketAddr,
    /// Conditional requests are buffered and serialised per key (create-if-absent decided at
    /// completion); off only in [`FaultProxy::start_streaming`].
    atomic_conditional: bool,
    faults: Mutex<Faults>,
    stats: Mutex<ProxyStats>,
    request_ids: std::sync::atomic::AtomicU64,
    /// One lock per object key with a conditional request in flight.
    key_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Shared {
    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn count(&self, kind: RequestKind, update: impl FnOnce(&mut KindStats)) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        update(stats.kinds.entry(kind).or_default());
    }

    /// Locks `key` against other conditional writes; the entry is dropped with the last user.
    async fn lock_key(self: &Arc<Self>, key: &str) -> KeyGuard {
        let lock = self
            .key_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        KeyGuard {
            shared: self.clone(),
            key: key.to_string(),
            lock,
            _guard: Some(guard),
        }
    }
}

struct KeyGuard {
    shared: Arc<Shared>,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self._guard = None;
        let mut locks = self
            .shared
            .key_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Ours plus the map's: nobody else waits for this key.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.key);
        }
    }
}

/// A running fault proxy in front of one upstream S3 server. Stops when dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    server: LoopbackServer,
}

impl FaultProxy {
    /// Starts a pass-through proxy on a free loopback port in front of `upstream`, deciding
    /// conditional writes at completion (see the module header).
    pub fn start(upstream: SocketAddr) -> Result<FaultProxy> {
        Self::start_with(upstream, true)
    }

    /// Like [`FaultProxy::start`], but conditional requests are streamed like any other: the
    /// upstream's own create-if-absent semantics show through (s3s-fs: decided on arrival). Only
    /// for tests that show why the default exists.
    pub fn start_streaming(upstream: SocketAddr) -> Result<FaultProxy> {
        Self::start_with(upstream, false)
    }

    fn start_with(upstream: SocketAddr, atomic_conditional: bool) -> Result<FaultProxy> {
        let shared = Arc::new(Shared {
            upstream,
            atomic_conditional,
            key_locks: Mutex::new(HashMap::new()),
            faults: Mutex::new(Faults::default()),
            stats: Mutex::new(ProxyStats::default()),
            request_ids: std::sync::atomic::AtomicU64::new(0),
        });
        let server = {
            let shared = shared.clone();
            LoopbackServer::start("fault-proxy", 2, move |stream| accept(stream, &shared))?
        };
        Ok(FaultProxy { shared, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT`: the endpoint to give clients instead of the server's.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Removes every fault: no failures, no latency, no blackout, no rules (requests already
    /// held stay held until their [`Held`] is released or dropped). Counters are kept.
    pub fn pass_through(&self) {
        *self.shared.faults() = Faults::default();
    }

    /// Holds the body of the next request matching `matches`: the upstream gets its headers (or,
    /// for a conditional request, nothing yet), and its body only once the returned [`Held`] is
    /// released. Used to pause a writer in the middle of a PUT.
    pub fn hold_body(&self, matches: RequestMatch) -> Held {
        self.hold(matches, RuleAction::HoldBody)
    }

    /// Forwards the next request matching `matches` and lets the upstream complete it (a PUT is
    /// stored), but holds its answer until the returned [`Held`] is released: a later request
    /// can complete before it.
    pub fn hold_response(&self, matches: RequestMatch) -> Held {
        self.hold(matches, RuleAction::HoldResponse)
    }

    fn hold(&self, matches: RequestMatch, action: fn(Arc<HoldState>) -> RuleAction) -> Held {
        let state = HoldState::new();
        self.shared.faults().rules.push(Rule {
            matches,
            remaining: 1,
            action: action(state.clone()),
        });
        Held { state }
    }

    /// Answers the next `count` requests matching `matches` with `fault`, either instead of
    /// forwarding them or after the upstream has handled (stored) them.
    pub fn fail_matching(&self, matches: RequestMatch, count: u64, fault: S3Fault, when: When) {
        self.shared.faults().rules.push(Rule {
            matches,
            remaining: count,
            action: RuleAction::Fail { fault, when },
        });
    }

    /// Answers the next `count` requests with `fault` (of any kind, or of the kind set with
    /// [`FaultProxy::only_kind`]).
    pub fn fail_next(&self, count: u64, fault: S3Fault) {
        let mut faults = self.shared.faults();
        faults.fail_next = count;
        faults.fail_next_fault = fault;
    }

    /// Answers each request with `fault` with probability `fraction` (0 turns it off).
    pub fn fail_fraction(&self, fraction: f64, fault: S3Fault) {
        let mut faults = self.shared.faults();
        faults.fail_fraction = fraction.clamp(0.0, 1.0);
        faults.fraction_fault = fault;
    }

    /// Restricts injected failures to requests of one kind (`None`: all kinds).
    pub fn only_kind(&self, kind: Option<RequestKind>) {
        self.shared.faults().fail_only = kind;
    }

    /// Delays every request by `latency` before forwarding it.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults().latency = latency;
    }

    /// Starts a blackout of `duration` from now.
    pub fn blackout(&self, duration: Duration, mode: BlackoutMode) {
        self.shared.faults().blackout = Some((Instant::now() + duration, mode));
    }

    /// Ends a blackout early.
    pub fn end_blackout(&self) {
        self.shared.faults().blackout = None;
    }

    /// Requests still to be failed by [`FaultProxy::fail_next`].
    pub fn pending_failures(&self) -> u64 {
        self.shared.faults().fail_next
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Zeroes the counters (e.g. after setup, before the measured part of a test).
    pub fn reset_stats(&self) {
        *self.shared.stats.lock().unwrap_or_else(|p| p.into_inner()) = ProxyStats::default();
    }
}

/// Serves one accepted connection (inside the proxy's runtime), unless a
/// [`BlackoutMode::Refuse`] blackout closes it at once.
fn accept(stream: TcpStream, shared: &Arc<Shared>) {
    let refuse = matches!(
        shared.faults().active_blackout(),
        Some((_, BlackoutMode::Refuse))
    );
    if refuse {
        shared
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refused_connections += 1;
        // Closed before reading anything: the client's request fails without an answer.
        drop(stream);
        return;
    }
    tokio::spawn(serve_connection(stream, shared.clone()));
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    // One upstream connection per client connection, reused for its (sequential) requests.
    let upstream: Arc<tokio::sync::Mutex<Option<SendRequest<ProxyBody>>>> =
        Arc::new(tokio::sync::Mutex::new(None));
    let service = service_fn(move |request| handle(request, shared.clone(), upstream.clone()));
    // Errors here are client disconnects or deliberate drops (blackouts): nothing to report.
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    upstream: Arc<tokio::sync::Mutex<Option<SendRequest<ProxyBody>>>>,
) -> Result<Response<ProxyBody>, BoxError> {
    let kind = RequestKind::classify(
        request.method(),
        request.uri().path(),
        request.uri().query(),
    );
    let unsigned = request
        .headers()
        .get("x-amz-content-sha256")
        .is_some_and(|value| value.as_bytes() == b"UNSIGNED-PAYLOAD");
    shared.count(kind, |stats| {
        stats.requests += 1;
        stats.unsigned_payload += u64::from(unsigned);
    });

    // Blackout first: it overrides everything else.
    let blackout = shared.faults().active_blackout();
    if let Some((_, mode)) = blackout {
        shared.count(kind, |stats| stats.faults += 1);
        match mode {
            BlackoutMode::Refuse => return Err("blackout: connection refused".into()),
            BlackoutMode::Hang => {
                // Bounded by the blackout's end (or end_blackout / pass_through).
                while shared.faults().active_blackout().is_some() {
                    tokio::time::sleep(HANG_POLL).await;
                }
                return Err("blackout: request dropped unanswered".into());
            }
            BlackoutMode::Unavailable => {
                let resource = request.uri().path().to_string();
                drain(request.into_body(), &shared, kind).await;
                return Ok(error_response(
                    S3Fault::ServiceUnavailable,
                    &resource,
                    &shared,
                ));
            }
        }
    }

    let (latency, fault) = {
        let mut faults = shared.faults();
        (faults.latency, faults.take_fault(kind))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(fault) = fault {
        shared.count(kind, |stats| stats.faults += 1);
        let resource = request.uri().path().to_string();
        // Read the body as a server would before answering, so the connection stays usable.
        drain(request.into_body(), &shared, kind).await;
        return Ok(error_response(fault, &resource, &shared));
    }

    let key = object_key(request.uri().path()).to_string();
    let planned = shared.faults().take_rule(kind, &key);
    if let Planned::Fail(fault, When::BeforeForwarding) = planned {
        shared.count(kind, |stats| stats.faults += 1);
        let resource = request.uri().path().to_string();
        drain(request.into_body(), &shared, kind).await;
        return Ok(error_response(fault, &resource, &shared));
    }
    let resource = request.uri().path().to_string();
    let conditional = shared.atomic_conditional && is_conditional_write(&request);

    let (parts, body) = request.into_parts();
    let hold_body = match &planned {
        Planned::HoldBody(state) => Some(state.clone()),
        _ => None,
    };
    let (forwarded, _key_guard) = if conditional {
        // Decided at completion: the whole body first, then the server's check and write under
        // the key's lock (see the module header).
        let body = match collect(body, &shared, kind).await {
            Ok(body) => body,
            Err(err) => return Err(err),
        };
        if let Some(state) = hold_body {
            state.hold().await;
        }
        let guard = shared.lock_key(&key).await;
        let body = Full::new(body)
            .map_err(|never| -> BoxError { match never {} })
            .boxed_unsync();
        (Request::from_parts(parts, body), Some(guard))
    } else {
        let counting = {
            let shared = shared.clone();
            body.map_frame(move |frame| {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    shared.count(kind, |stats| stats.request_bytes += len);
                }
                frame
            })
            .map_err(|err| -> BoxError { Box::new(err) })
            .boxed_unsync()
        };
        let body = match hold_body {
            Some(state) => {
                GatedBody::new(counting, async move { state.hold().await }).boxed_unsync()
            }
            None => counting,
        };
        // Method, target, version and every header (Host, Content-Length, Transfer-Encoding, the
        // SigV4 headers) go upstream unchanged.
        (Request::from_parts(parts, body), None)
    };

    let mut slot = upstream.lock().await;
    let reusable = match slot.take() {
        // Not ready = the upstream closed it (e.g. after `Connection: close`): reconnect.
        Some(mut sender) => sender.ready().await.is_ok().then_some(sender),
        None => None,
    };
    let mut sender = match reusable {
        Some(sender) => sender,
        None => match connect_upstream(shared.upstream).await {
            Ok(sender) => sender,
            Err(err) => {
                eprintln!(
                    "fault proxy: upstream {} unreachable: {err}",
                    shared.upstream
                );
                return Ok(bad_gateway(&shared));
            }
        },
    };
    let response = match sender.send_request(forwarded).await {
        Ok(response) => response,
        Err(err) => {
            eprintln!("fault proxy: upstream request failed: {err}");
            return Ok(bad_gateway(&shared));
        }
    };
    *slot = Some(sender);
    drop(slot);

    let (parts, body) = response.into_parts();
    match planned {
        Planned::Fail(fault, When::AfterStoring) => {
            // Read the server's answer so the upstream connection stays usable, then lie.
            let _ = body.collect().await;
            drop(_key_guard);
            shared.count(kind, |stats| stats.faults += 1);
            return Ok(error_response(fault, &resource, &shared));
        }
        Planned::HoldResponse(state) => {
            // The server has answered (stored): read its answer whole so the key is free for
            // other writers while this one's answer waits.
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(err) => return Err(Box::new(err)),
            };
            drop(_key_guard);
            state.hold().await;
            shared.count(kind, |stats| stats.response_bytes += body.len() as u64);
            let body = Full::new(body)
                .map_err(|never| -> BoxError { match never {} })
                .boxed_unsync();
            return Ok(Response::from_parts(parts, body));
        }
        Planned::Nothing | Planned::HoldBody(_) | Planned::Fail(_, When::BeforeForwarding) => {}
    }
    drop(_key_guard);
    let counting = {
        let shared = shared.clone();
        body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                let len = data.len() as u64;
                shared.count(kind, |stats| stats.response_bytes += len);
            }
            frame
        })
        .map_err(|err| -> BoxError { Box::new(err) })
        .boxed_unsync()
    };
    Ok(Response::from_parts(parts, counting))
}

/// The object key of a path-style request (`/bucket/KEY`); empty for bucket-level requests.
fn object_key(path: &str) -> &str {
    path.trim_start_matches('/')
        .split_once('/')
        .map_or("", |(_, key)| key)
}

/// A write the server must decide atomically: a PUT or a POST (multipart complete) carrying a
/// precondition.
fn is_conditional_write<B>(request: &Request<B>) -> bool {
    matches!(*request.method(), Method::PUT | Method::POST)
        && (request.headers().contains_key(http::header::IF_NONE_MATCH)
            || request.headers().contains_key(http::header::IF_MATCH))
}

/// Reads a whole request body (counting its bytes); bounded by the body's length.
async fn collect(
    mut body: Incoming,
    shared: &Shared,
    kind: RequestKind,
) -> Result<Bytes, BoxError> {
    let mut buffer = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            shared.count(kind, |stats| stats.request_bytes += len);
            buffer.extend_from_slice(data);
        }
    }
    Ok(buffer.freeze())
}

/// A body that yields nothing until `gate` completes, then the inner body (its size hint is the
/// inner one's, so a `Content-Length` body stays one).
struct GatedBody {
    gate: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    inner: ProxyBody,
}

impl GatedBody {
    fn new(inner: ProxyBody, gate: impl Future<Output = ()> + Send + 'static) -> GatedBody {
        GatedBody {
            gate: Some(Box::pin(gate)),
            inner,
        }
    }
}

impl Body for GatedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(gate) = self.gate.as_mut() {
            match gate.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => self.gate = None,
            }
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.gate.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

async fn connect_upstream(upstream: SocketAddr) -> Result<SendRequest<ProxyBody>, BoxError> {
    let stream = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream))
        .await
        .map_err(|_| "connect timed out")??;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Ends when either side closes the connection.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Reads and discards a request body (counting its bytes); bounded by the body's length.
async fn drain(mut body: Incoming, shared: &Shared, kind: RequestKind) {
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    shared.count(kind, |stats| stats.request_bytes += len);
                }
            }
            Err(_) => return,
        }
    }
}

fn error_response(fault: S3Fault, resource: &str, shared: &Shared) -> Response<ProxyBody> {
    let id = shared
        .request_ids
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>\
         <Resource>{}</Resource><RequestId>sluice-fault-{id}</RequestId></Error>",
        fault.code(),
        fault.message(),
        xml_escape(resource),
    );
    xml_response(fault.status(), body)
}

fn bad_gateway(shared: &Shared) -> Response<ProxyBody> {
    let id = shared
        .request_ids
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>BadGateway</Code>\
         <Message>fault proxy could not reach the upstream server</Message>\
         <RequestId>sluice-fault-{id}</RequestId></Error>"
    );
    xml_response(StatusCode::BAD_GATEWAY, body)
}

fn xml_response(status: StatusCode, body: String) -> Response<ProxyBody> {
    let len = body.len();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| -> BoxError { match never {} })
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    response
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_by_method_and_target() {
        let classify =
            |m: Method, path: &str, query: Option<&str>| RequestKind::classify(&m, path, query);
        assert_eq!(classify(Method::PUT, "/b/k", None), RequestKind::Put);
        assert_eq!(
            classify(Method::PUT, "/b/k", Some("partNumber=1&uploadId=x")),
            RequestKind::Put
        );
        assert_eq!(classify(Method::GET, "/b/a/k", None), RequestKind::Get);
        assert_eq!(
            classify(Method::GET, "/b", Some("list-type=2&prefix=a")),
            RequestKind::List
        );
        assert_eq!(classify(Method::GET, "/b/", None), RequestKind::List);
        assert_eq!(classify(Method::HEAD, "/b/k", None), RequestKind::Head);
        assert_eq!(classify(Method::DELETE, "/b/k", None), RequestKind::Delete);
        assert_eq!(
            classify(Method::POST, "/b", Some("delete")),
            RequestKind::Post
        );
    }

    #[test]
    fn faults_are_consumed_in_order_and_respect_the_kind_filter() {
        let mut faults = Faults {
            fail_next: 2,
            fail_next_fault: S3Fault::SlowDown,
            fail_only: Some(RequestKind::Put),
            ..Faults::default()
        };
        assert_eq!(faults.take_fault(RequestKind::Get), None);
        assert_eq!(faults.take_fault(RequestKind::Put), Some(S3Fault::SlowDown));
        assert_eq!(faults.take_fault(RequestKind::Put), Some(S3Fault::SlowDown));
        assert_eq!(faults.take_fault(RequestKind::Put), None);

        let mut always = Faults {
            fail_fraction: 1.0,
            fraction_fault: S3Fault::InternalError,
            ..Faults::default()
        };
        assert_eq!(
            always.take_fault(RequestKind::Get),
            Some(S3Fault::InternalError)
        );
    }

    #[test]
    fn blackouts_expire() {
        let mut faults = Faults {
            blackout: Some((Instant::now(), BlackoutMode::Refuse)),
            ..Faults::default()
        };
        assert_eq!(faults.active_blackout(), None);
        faults.blackout = Some((Instant::now() + Duration::from_secs(60), BlackoutMode::Hang));
        assert!(matches!(
            faults.active_blackout(),
            Some((_, BlackoutMode::Hang))
        ));
    }
}
