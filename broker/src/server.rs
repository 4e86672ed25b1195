//! The TCP server: accept loop, one task pair per connection, pipelined requests answered in order.
//!
//! Each connection has a reader (frames in) and a writer (responses out, strictly in request order,
//! as Kafka requires). Requests of one connection keep Kafka's order: the next one starts only once
//! the previous one is *placed* — for a Produce, once every batch has its offsets and its place in the
//! WAL queue; for anything else, once it is done and its response is charged. Two pipelined Produces
//! for a partition therefore append in send order (and two OffsetCommits cannot overtake each other),
//! while their durability waits overlap and share WAL group commits.
//!
//! Memory invariant: the broker-wide `inflight` semaphore counts every request byte from before its
//! body is read until it is handled, and every response byte from when it is built until it is
//! written to the socket. A request's reservation becomes its response's (the excess is returned, or
//! the reservation is released and the response's size acquired afresh, so no task waits for budget
//! while holding some). Beyond the budget, at most one built response per connection waits for its
//! charge, and the connection reads nothing more meanwhile. A connection whose unwritten responses
//! reach `max_queued_response_bytes` is not read either, so a client that never reads its responses
//! stalls only itself.
//!
//! Connection limits (Kafka's): `max.connections` stops the accept loop at the limit (connections
//! wait in the kernel backlog, as in Kafka), `max.connections.per.ip` closes the excess connection
//! right after accept, `connections.max.idle.ms` closes a connection with nothing in progress and
//! no traffic, and a request whose first byte arrived must be complete within
//! `request_read_timeout` (time spent waiting for budget excluded).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dispatch::{handle_frame_ordered, Outcome};
use crate::frame::payload_len;
use crate::Broker;

/// Accepts connections until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, shutdown: CancellationToken) {
    let limits = broker.config.connections;
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let per_ip: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        // `max.connections`: no slot, no accept (the kernel backlog holds new connections).
        let slot = tokio::select! {
            () = shutdown.cancelled() => return,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(ip_slot) = IpSlot::take(&per_ip, peer.ip(), limits.max_connections_per_ip)
                else {
                    tracing::info!(%peer, limit = limits.max_connections_per_ip, "max.connections.per.ip reached: closing the new connection");
                    closed_by_limit("max_connections_per_ip");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let broker = Arc::clone(&broker);
                let shutdown = shutdown.child_token();
                tokio::spawn(async move {
                    let _slots = (slot, ip_slot);
                    metrics::gauge!("broker_connections").increment(1.0);
                    if let Err(reason) = handle_connection(stream, peer, &broker, shutdown).await {
                        tracing::info!(%peer, %reason, "connection closed");
                    }
                    metrics::gauge!("broker_connections").decrement(1.0);
                    report_inflight(&broker);
                });
            }
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn closed_by_limit(reason: &'static str) {
    metrics::counter!("broker_connections_closed_by_limit_total", "limit" => reason).increment(1);
}

fn report_inflight(broker: &Broker) {
    metrics::gauge!("broker_inflight_bytes").set(broker.inflight_bytes() as f64);
}

/// One connection's share of `max.connections.per.ip`; released on drop.
struct IpSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl IpSlot {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, limit: usize) -> Option<Self> {
        let mut map = counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = map.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            counts: Arc::clone(counts),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// What the reader, the writer, the request tasks and the idle watchdog of one connection share.
struct ConnectionState {
    opened: Instant,
    /// Milliseconds since `opened` of the last byte read or written, or the last request handled.
    last_activity_ms: AtomicU64,
    /// Requests being read or handled (a connection is idle only when this is 0).
    busy: AtomicUsize,
    /// Bytes of charged responses not yet written.
    queued_response_bytes: AtomicUsize,
    /// The writer wrote a response.
    written: Notify,
}

impl ConnectionState {
    fn new() -> Self {
        ConnectionState {
            opened: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            queued_response_bytes: AtomicUsize::new(0),
            written: Notify::new(),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// Completes once the connection has had nothing in progress and no traffic for `max_idle`.
    async fn idle_expired(&self, max_idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
            let deadline = after(self.opened, last.saturating_add(max_idle));
            if self.busy.load(Ordering::Relaxed) > 0 {
                // Finishing the request touches the connection: look again a whole period later.
                tokio::time::sleep(max_idle).await;
            } else if Instant::now() >= deadline {
                return;
            } else {
                tokio::time::sleep_until(deadline).await;
            }
        }
    }
}

/// A request's answer with the budget its response holds until written.
struct Answer {
    outcome: Outcome,
    charge: Option<OwnedSemaphorePermit>,
}

type Pending = oneshot::Receiver<Answer>;

async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let (mut reader, writer) = stream.into_split();
    let (queue_tx, queue_rx) =
        mpsc::channel::<Pending>(broker.config.max_pipelined_requests.max(1));
    let closing = shutdown.child_token();
    let state = Arc::new(ConnectionState::new());
    let writer_task = tokio::spawn(write_responses(
        writer,
        queue_rx,
        Arc::clone(&state),
        Arc::clone(broker),
        closing.clone(),
    ));

    let max_idle = broker.config.connections.max_idle;
    let served = async {
        let read_result =
            read_requests(&mut reader, peer, broker, &queue_tx, &state, &closing).await;
        if read_result.is_err() {
            closing.cancel();
        }
        drop(queue_tx);
        let write_result = match writer_task.await {
            Ok(result) => result,
            Err(e) => Err(format!("writer task failed: {e}")),
        };
        read_result.and(write_result)
    };
    let result = tokio::select! {
        result = served => result,
        () = state.idle_expired(max_idle) => {
            closing.cancel();
            closed_by_limit("connections_max_idle");
            Err(format!("idle for {} ms (connections.max.idle.ms)", max_idle.as_millis()))
        }
    };
    tracing::debug!(%peer, "connection finished");
    result
}

async fn write_responses(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    mut queue: mpsc::Receiver<Pending>,
    state: Arc<ConnectionState>,
    broker: Arc<Broker>,
    closing: CancellationToken,
) -> Result<(), String> {
    let result = async {
        while let Some(pending) = queue.recv().await {
            let answer = tokio::select! {
                () = closing.cancelled() => return Ok(()),
                answer = pending => answer,
            };
            let Ok(Answer { outcome, charge }) = answer else {
                return Err("request task ended without an answer".to_string());
            };
            match outcome {
                Outcome::Respond(payload) => {
                    let len = payload.len() + 4;
                    let prefix = u32::try_from(payload.len())
                        .unwrap_or(u32::MAX)
                        .to_be_bytes();
                    let mut frame = Bytes::copy_from_slice(&prefix).chain(payload);
                    while frame.has_remaining() {
                        tokio::select! {
                            () = closing.cancelled() => return Ok(()),
                            written = writer.write_buf(&mut frame) => match written {
                                Ok(0) => return Err("write: connection closed".to_string()),
                                Ok(_) => state.touch(),
                                Err(e) => return Err(format!("write: {e}")),
                            },
                        }
                    }
                    drop(charge);
                    report_inflight(&broker);
                    state
                        .queued_response_bytes
                        .fetch_sub(len, Ordering::Relaxed);
                    state.written.notify_waiters();
                }
                Outcome::NoResponse => drop(charge),
                Outcome::Close(reason) => return Err(reason),
            }
        }
        Ok(())
    }
    .await;
    closing.cancel();
    let _ = writer.shutdown().await;
    result
}

/// `from + wait`, or about 30 years on when that overflows (a huge configured limit).
fn after(from: Instant, wait: Duration) -> Instant {
    from.checked_add(wait)
        .unwrap_or_else(|| from + Duration::from_secs(30 * 365 * 86_400))
}

/// Reads until `buf` is full; `Ok(false)` when the bound passed or the connection is closing.
async fn read_within(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut [u8],
    deadline: Instant,
    closing: &CancellationToken,
) -> Result<bool, std::io::Error> {
    tokio::select! {
        () = closing.cancelled() => Ok(false),
        () = tokio::time::sleep_until(deadline) => Ok(false),
        read = reader.read_exact(buf) => read.map(|_| true),
    }
}

async fn read_requests(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    queue: &mpsc::Sender<Pending>,
    state: &Arc<ConnectionState>,
    closing: &CancellationToken,
) -> Result<(), String> {
    let read_timeout = broker.config.connections.request_read_timeout;
    let stalled = |what: &str| {
        closed_by_limit("request_read_timeout");
        Err(format!(
            "{what} not received within {} ms",
            read_timeout.as_millis()
        ))
    };
    loop {
        // Backpressure: a connection whose responses are not being read is not read either.
        loop {
            let written = state.written.notified();
            if state.queued_response_bytes.load(Ordering::Relaxed)
                < broker.config.max_queued_response_bytes.max(1)
            {
                break;
            }
            tokio::select! {
                () = closing.cancelled() => return Ok(()),
                () = written => {}
            }
        }

        let mut prefix = [0u8; 4];
        let first = tokio::select! {
            () = closing.cancelled() => return Ok(()),
            read = reader.read(&mut prefix) => read.map_err(|e| format!("read: {e}"))?,
        };
        if first == 0 {
            return Ok(());
        }
        let busy = BusyGuard::enter(state);
        match read_within(
            reader,
            &mut prefix[first..],
            after(Instant::now(), read_timeout),
            closing,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) if closing.is_cancelled() => return Ok(()),
            Ok(false) => return stalled("request size"),
            Err(e) => return Err(format!("truncated request size: {e}")),
        }
        let len =
            payload_len(prefix, broker.config.max_request_bytes).map_err(|e| e.to_string())?;
        // Charge the request's bytes before reading them; a request larger than the whole budget takes
        // all of it.
        let permits = len.clamp(1, broker.inflight_budget());
        let permit = tokio::select! {
            () = closing.cancelled() => return Ok(()),
            permit = Arc::clone(&broker.inflight).acquire_many_owned(u32::try_from(permits).unwrap_or(u32::MAX)) => {
                permit.map_err(|_| "broker is shutting down".to_string())?
            }
        };
        report_inflight(broker);
        let mut payload = BytesMut::zeroed(len);
        match read_within(
            reader,
            &mut payload,
            after(Instant::now(), read_timeout),
            closing,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) if closing.is_cancelled() => return Ok(()),
            Ok(false) => return stalled(&format!("request body ({len} bytes announced)")),
            Err(e) => return Err(format!("truncated request ({len} bytes announced): {e}")),
        }
        let payload: Bytes = payload.freeze();
        // Reserve the response slot first so answers keep request order. Waiting for one means
        // waiting for the writer, i.e. for the client to read: idle time if it never does.
        drop(busy);
        let slot = tokio::select! {
            () = closing.cancelled() => return Ok(()),
            slot = queue.reserve() => match slot {
                Ok(slot) => slot,
                Err(_) => return Ok(()),
            },
        };
        let busy = BusyGuard::enter(state);
        let (answer_tx, answer_rx) = oneshot::channel();
        slot.send(answer_rx);
        let (placed_tx, placed_rx) = oneshot::channel();
        let (charged_tx, charged_rx) = oneshot::channel::<()>();
        let task_broker = Arc::clone(broker);
        let task_state = Arc::clone(state);
        let task_closing = closing.clone();
        tokio::spawn(async move {
            let outcome =
                handle_frame_ordered(&task_broker, payload, Some(peer.ip()), placed_tx).await;
            drop(busy);
            let charge = match &outcome {
                Outcome::Respond(response) => {
                    let bytes = response.len() + 4;
                    let charged = tokio::select! {
                        () = task_closing.cancelled() => return,
                        charged = charge_response(&task_broker, permit, bytes) => charged,
                    };
                    task_state
                        .queued_response_bytes
                        .fetch_add(bytes, Ordering::Relaxed);
                    charged
                }
                Outcome::NoResponse | Outcome::Close(_) => {
                    drop(permit);
                    None
                }
            };
            report_inflight(&task_broker);
            let _ = answer_tx.send(Answer { outcome, charge });
            drop(charged_tx);
        });
        // Told when placed (a Produce, early); otherwise the sender is dropped when the request is
        // done, and the next one waits until this one's response is charged.
        tokio::select! {
            () = closing.cancelled() => return Ok(()),
            placed = placed_rx => {
                if placed.is_err() {
                    tokio::select! {
                        () = closing.cancelled() => return Ok(()),
                        _ = charged_rx => {}
                    }
                }
            }
        }
    }
}

/// One request's busy period, from its first byte until it is handled.
struct BusyGuard(Arc<ConnectionState>);

impl BusyGuard {
    fn enter(state: &Arc<ConnectionState>) -> Self {
        state.busy.fetch_add(1, Ordering::Relaxed);
        state.touch();
        BusyGuard(Arc::clone(state))
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Turns a request's reservation into its response's: returns the excess, or — for a response
/// larger than its request — releases the reservation and waits for the response's size, so no
/// task waits for budget while holding some. A response larger than the whole budget takes all
/// of it. `None` only when the budget is closed (never, in practice).
async fn charge_response(
    broker: &Broker,
    mut permit: OwnedSemaphorePermit,
    bytes: usize,
) -> Option<OwnedSemaphorePermit> {
    let wanted = bytes.clamp(1, broker.inflight_budget());
    let held = permit.num_permits();
    if wanted <= held {
        drop(permit.split(held - wanted));
        return Some(permit);
    }
    drop(permit);
    Arc::clone(&broker.inflight)
        .acquire_many_owned(u32::try_from(wanted).unwrap_or(u32::MAX))
        .await
        .ok()
}
