//! An HTTP/1.1 reverse proxy for S3 traffic with faults that tests switch at runtime: placed
//! between the broker (or an in-process object store) and the S3 server.
//!
//! Owns: accepting connections on a loopback port, forwarding each request unchanged to the
//! upstream server (same method, target, headers — including the signed `Host` — and a streamed
//! body, whether sized by `Content-Length` or chunked), and on the way injecting what tests ask
//! for: S3 error responses (500 InternalError, 503 SlowDown, 503 ServiceUnavailable) for the next N
//! requests or a fraction of them, added latency, and blackouts (connections refused, requests held
//! without an answer, or every request answered 503). It counts requests and body bytes per kind
//! (PUT, GET, HEAD, DELETE, LIST, POST) so tests and benchmarks can report PUTs and bytes per PUT.
//!
//! The proxy runs on its own small tokio runtime: tests that block their thread (the process
//! harness polls with `std::thread::sleep`) must not stall the broker's S3 traffic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Poll step while a request is held by a [`BlackoutMode::Hang`] blackout.
const HANG_POLL: Duration = Duration::from_millis(20);

/// How long connecting to the upstream server may take before the request gets a 502.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An S3 error answer the proxy can inject (status + S3 error code in an XML body).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Fault {
    /// 500 `InternalError`.
    InternalError,
    /// 503 `SlowDown` (request rate throttling).
    SlowDown,
    /// 503 `ServiceUnavailable`.
    ServiceUnavailable,
}

impl S3Fault {
    pub fn status(self) -> StatusCode {
        match self {
            S3Fault::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            S3Fault::SlowDown | S3Fault::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            S3Fault::InternalError => "InternalError",
            S3Fault::SlowDown => "SlowDown",
            S3Fault::ServiceUnavailable => "ServiceUnavailable",
        }
    }

    fn message(self) -> &'static str {
        match self {
            S3Fault::InternalError => "We encountered an internal error. Please try again.",
            S3Fault::SlowDown => "Please reduce your request rate.",
            S3Fault::ServiceUnavailable => "Service is unable to handle request.",
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
}

struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Faults>,
    stats: Mutex<ProxyStats>,
    request_ids: std::sync::atomic::AtomicU64,
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
}

/// A running fault proxy in front of one upstream S3 server. Stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Starts a pass-through proxy on a free loopback port in front of `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<FaultProxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .context("building the proxy runtime")?;
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding the proxy port")?;
        listener
            .set_nonblocking(true)
            .context("setting the proxy socket non-blocking")?;
        let addr = listener.local_addr().context("proxy address")?;
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(Faults::default()),
            stats: Mutex::new(ProxyStats::default()),
            request_ids: std::sync::atomic::AtomicU64::new(0),
        });
        let listener = {
            let _context = runtime.enter();
            TcpListener::from_std(listener).context("registering the proxy socket")?
        };
        runtime.spawn(accept_loop(listener, shared.clone()));
        Ok(FaultProxy {
            addr,
            shared,
            runtime: Some(runtime),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the endpoint to give clients instead of the server's.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Removes every fault: no failures, no latency, no blackout. Counters are kept.
    pub fn pass_through(&self) {
        *self.shared.faults() = Faults::default();
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

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Does not block, so the proxy may be dropped inside an async test.
            runtime.shutdown_background();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Runs until the proxy's runtime shuts down (FaultProxy dropped).
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // E.g. EMFILE: back off instead of spinning.
                eprintln!("fault proxy: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
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
            continue;
        }
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(stream, shared.clone()));
    }
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
    shared.count(kind, |stats| stats.requests += 1);

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

    let (parts, body) = request.into_parts();
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
    // Method, target, version and every header (Host, Content-Length, Transfer-Encoding, the
    // SigV4 headers) go upstream unchanged.
    let forwarded = Request::from_parts(parts, counting);

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
