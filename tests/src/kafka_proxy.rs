//! A Kafka-protocol TCP proxy for tests, placed between Kafka clients and one broker, with faults
//! switched at runtime — so that a client really retries against a healthy broker.
//!
//! Owns: accepting connections on a loopback port, opening one upstream connection to the broker
//! for each, and forwarding the size-prefixed frames both ways unchanged. On the way it reads each
//! request's header (api key, version, correlation id) and matches every answer to its request by
//! correlation id, per connection; of a Produce request it also reads `acks` and the identity of
//! each sequenced record batch (topic, partition, producer id, epoch, base sequence), so it can
//! count the batches a client sent again ([`KafkaProxyStats::resent_batches`]). The byte-level
//! reading is in [`parse`] (no I/O).
//!
//! Faults, for Produce answers only (every other request passes untouched):
//! - [`KafkaProxy::drop_connection_after_produce_answers`]: the broker has appended the batches
//!   and answered, but the proxy swallows the answer and closes both connections — the client
//!   never hears of the append and must send the same batches again;
//! - [`KafkaProxy::delay_produce_answers`]: the answer is held for a while before it is passed on
//!   (answers behind it on the connection wait too, keeping Kafka's order); a delay beyond the
//!   client's request timeout (librdkafka: `socket.timeout.ms`) makes the client give up on the
//!   connection and resend.
//!
//! The broker must advertise the proxy's address (`sluice serve --advertised-kafka`, see
//! [`crate::SluiceOptions::advertised_kafka`]), or clients would follow Metadata to the broker
//! itself. So the proxy starts first, on a port of its own, without an upstream; the broker is
//! started advertising it, and [`KafkaProxy::set_upstream`] names the broker's listener (again
//! after a restart: its port changes). Connections arriving while there is no upstream are closed
//! at once.
//!
//! Bounds: a frame larger than [`MAX_FRAME_BYTES`] or with a negative size closes its connection
//! (counted in [`KafkaProxyStats::bad_frames`]); frames are read into memory as their bytes arrive,
//! never allocated from the size they claim. A frame whose header cannot be read is forwarded as is
//! and never faulted. At most [`MAX_IN_FLIGHT_PER_CONNECTION`] requests are remembered per
//! connection and [`MAX_TRACKED_BATCHES`] batch identities in all; beyond that the oldest request
//! is forgotten (its answer passes unfaulted) and new batches are not tracked. The proxy runs on
//! its own small tokio runtime ([`crate::loopback_server`]), so tests that block their thread
//! do not stall it; dropping the [`KafkaProxy`] stops it.
//!
//! ```ignore
//! let proxy = KafkaProxy::start()?;
//! let broker = SluiceProcess::start(SluiceOptions::default().advertised_kafka(proxy.addr()))?;
//! proxy.set_upstream(broker.bootstrap().parse()?);
//! proxy.drop_connection_after_produce_answers(1);
//! // ... produce through proxy.addr() ...
//! assert!(proxy.stats().dropped_answers == 1 && proxy.stats().resent_batches >= 1);
//! ```

mod parse;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::loopback_server::LoopbackServer;
use parse::{BatchKey, ProduceSummary, PRODUCE};

/// Largest frame forwarded (either way); a larger one closes its connection. Above the broker's
/// own request limit, so the broker, not the proxy, is what refuses oversized requests.
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// Requests remembered per connection while their answer is outstanding.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 4096;

/// Batch identities remembered to recognise resent batches.
pub const MAX_TRACKED_BATCHES: usize = 1_000_000;

/// How long connecting to the broker may take before the client's connection is closed.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Snapshot of the proxy's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KafkaProxyStats {
    /// Client connections forwarded to the broker.
    pub connections: u64,
    /// Client connections closed at once because no upstream was set or it was unreachable.
    pub refused_connections: u64,
    /// Produce requests forwarded to the broker (each attempt of a resent batch counts).
    pub produce_requests: u64,
    /// Sequenced record batches in those requests (a resent batch counts again).
    pub produce_batches: u64,
    /// Batches whose identity (topic, partition, producer id, epoch, base sequence) the proxy had
    /// forwarded before: retries that reached the broker.
    pub resent_batches: u64,
    /// Produce answers swallowed, each closing its connection
    /// ([`KafkaProxy::drop_connection_after_produce_answers`]).
    pub dropped_answers: u64,
    /// Produce answers held back ([`KafkaProxy::delay_produce_answers`]); counted when the hold
    /// starts, whether or not the client is still there at its end.
    pub delayed_answers: u64,
    /// Connections closed because of a frame with a negative size or above [`MAX_FRAME_BYTES`].
    pub bad_frames: u64,
    /// Frames forwarded that the proxy could not read: a request header, a Produce request's
    /// body, or an answer to no request it knows.
    pub unparsed_frames: u64,
}

/// What happens to the next Produce answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AnswerFault {
    DropConnection,
    Delay(Duration),
}

#[derive(Debug, Default)]
struct Faults {
    drop_connection: u64,
    delay: Duration,
    delay_count: u64,
}

impl Faults {
    /// Decides (and consumes) the fault for one Produce answer: dropping first, then delaying.
    fn take(&mut self) -> Option<AnswerFault> {
        if self.drop_connection > 0 {
            self.drop_connection -= 1;
            return Some(AnswerFault::DropConnection);
        }
        if self.delay_count > 0 {
            self.delay_count -= 1;
            return Some(AnswerFault::Delay(self.delay));
        }
        None
    }
}

#[derive(Debug, Default)]
struct Shared {
    upstream: Mutex<Option<SocketAddr>>,
    faults: Mutex<Faults>,
    stats: Mutex<KafkaProxyStats>,
    seen_batches: Mutex<HashSet<BatchKey>>,
}

impl Shared {
    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, update: impl FnOnce(&mut KafkaProxyStats)) {
        update(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn upstream(&self) -> Option<SocketAddr> {
        *self.upstream.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a request about to be forwarded (a Produce with its batches, and those forwarded
    /// before). Returns its header when the broker will answer it.
    fn note_request(&self, payload: &[u8]) -> Option<parse::RequestInfo> {
        let Some(info) = parse::request_info(payload) else {
            self.count(|stats| stats.unparsed_frames += 1);
            return None;
        };
        if info.api_key != PRODUCE {
            return Some(info);
        }
        // An unreadable Produce body is still forwarded, and still answered unless acks=0.
        let summary = parse::produce_summary(payload);
        let understood = summary.is_some();
        let ProduceSummary {
            acks,
            sequenced_batches,
        } = summary.unwrap_or(ProduceSummary {
            acks: -1,
            sequenced_batches: Vec::new(),
        });
        let total = sequenced_batches.len() as u64;
        let mut resent = 0;
        {
            let mut seen = self.seen_batches.lock().unwrap_or_else(|p| p.into_inner());
            for batch in sequenced_batches {
                if seen.contains(&batch) {
                    resent += 1;
                } else if seen.len() < MAX_TRACKED_BATCHES {
                    seen.insert(batch);
                }
            }
        }
        self.count(|stats| {
            stats.produce_requests += 1;
            stats.produce_batches += total;
            stats.resent_batches += resent;
            stats.unparsed_frames += u64::from(!understood);
        });
        (acks != 0).then_some(info)
    }
}

/// A running Kafka proxy. Stops (closing every connection) when dropped.
pub struct KafkaProxy {
    shared: Arc<Shared>,
    server: LoopbackServer,
}

impl KafkaProxy {
    /// Starts a pass-through proxy on a free loopback port, without an upstream yet
    /// ([`KafkaProxy::set_upstream`]).
    pub fn start() -> Result<KafkaProxy> {
        let shared = Arc::new(Shared::default());
        let server = {
            let shared = shared.clone();
            LoopbackServer::start("kafka-proxy", 1, move |stream| {
                tokio::spawn(serve_connection(stream, shared.clone()));
            })?
        };
        Ok(KafkaProxy { shared, server })
    }

    /// The proxy's address: what the broker advertises and clients bootstrap from.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The broker's listener; connections accepted from now on are forwarded to it (open ones
    /// stay with the broker they were opened to).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(upstream);
    }

    /// The next `count` Produce answers (added to any still pending) are swallowed: the broker
    /// has handled the request, the proxy closes the client's connection (and its own to the
    /// broker) instead of passing the answer on.
    pub fn drop_connection_after_produce_answers(&self, count: u64) {
        self.shared.faults().drop_connection += count;
    }

    /// The next `count` Produce answers are passed on only after `delay` (unless the client
    /// closes the connection first, which ends the hold). Replaces an earlier delay setting.
    pub fn delay_produce_answers(&self, delay: Duration, count: u64) {
        let mut faults = self.shared.faults();
        faults.delay = delay;
        faults.delay_count = count;
    }

    /// Cancels the faults not applied yet (answers already held stay held). Counters are kept.
    pub fn pass_through(&self) {
        *self.shared.faults() = Faults::default();
    }

    /// Faults armed and not applied yet.
    pub fn pending_faults(&self) -> u64 {
        let faults = self.shared.faults();
        faults.drop_connection + faults.delay_count
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> KafkaProxyStats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Requests of one connection whose answer is outstanding: correlation id → api key.
#[derive(Debug, Default)]
struct InFlight {
    requests: BTreeMap<i32, i16>,
}

impl InFlight {
    fn insert(&mut self, correlation_id: i32, api_key: i16) {
        if self.requests.len() >= MAX_IN_FLIGHT_PER_CONNECTION {
            self.requests.pop_first();
        }
        self.requests.insert(correlation_id, api_key);
    }

    fn take(&mut self, correlation_id: i32) -> Option<i16> {
        self.requests.remove(&correlation_id)
    }
}

async fn serve_connection(client: TcpStream, shared: Arc<Shared>) {
    let Some(upstream_addr) = shared.upstream() else {
        shared.count(|stats| stats.refused_connections += 1);
        return;
    };
    let upstream =
        match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream_addr))
            .await
        {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(err)) => {
                eprintln!("kafka proxy: upstream {upstream_addr} unreachable: {err}");
                shared.count(|stats| stats.refused_connections += 1);
                return;
            }
            Err(_) => {
                eprintln!("kafka proxy: connecting to {upstream_addr} timed out");
                shared.count(|stats| stats.refused_connections += 1);
                return;
            }
        };
    let _ = upstream.set_nodelay(true);
    shared.count(|stats| stats.connections += 1);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let in_flight = Mutex::new(InFlight::default());
    // Whichever direction ends (EOF, error, bad frame, dropped answer) ends both: the sockets are
    // dropped here, closing the client's connection and the broker's.
    tokio::select! {
        () = forward_requests(client_read, upstream_write, &shared, &in_flight) => {}
        () = forward_answers(upstream_read, client_write, &shared, &in_flight) => {}
    }
}

/// Client → broker: registers each request (with the batches of a Produce), then forwards it.
async fn forward_requests(
    mut client: impl AsyncRead + Unpin,
    mut upstream: impl AsyncWrite + Unpin,
    shared: &Shared,
    in_flight: &Mutex<InFlight>,
) {
    while let Some(frame) = read_frame(&mut client, shared).await {
        if let Some(info) = shared.note_request(&frame[4..]) {
            in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(info.correlation_id, info.api_key);
        }
        if upstream.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// Broker → client: matches each answer to its request and applies a Produce answer's fault.
async fn forward_answers(
    mut upstream: impl AsyncRead + Unpin,
    mut client: impl AsyncWrite + Unpin,
    shared: &Shared,
    in_flight: &Mutex<InFlight>,
) {
    while let Some(frame) = read_frame(&mut upstream, shared).await {
        let api_key = parse::response_correlation_id(&frame[4..]).and_then(|correlation_id| {
            in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(correlation_id)
        });
        let fault = match api_key {
            Some(PRODUCE) => shared.faults().take(),
            Some(_) => None,
            None => {
                shared.count(|stats| stats.unparsed_frames += 1);
                None
            }
        };
        match fault {
            Some(AnswerFault::DropConnection) => {
                shared.count(|stats| stats.dropped_answers += 1);
                return;
            }
            Some(AnswerFault::Delay(delay)) => {
                shared.count(|stats| stats.delayed_answers += 1);
                tokio::time::sleep(delay).await;
            }
            None => {}
        }
        if client.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// Reads one whole frame, its 4-byte size included. `None` at EOF, on an error, or for a size
/// that is negative or above [`MAX_FRAME_BYTES`] (counted).
async fn read_frame(reader: &mut (impl AsyncRead + Unpin), shared: &Shared) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    reader.read_exact(&mut size).await.ok()?;
    let Some(length) = usize::try_from(i32::from_be_bytes(size))
        .ok()
        .filter(|&length| length <= MAX_FRAME_BYTES)
    else {
        shared.count(|stats| stats.bad_frames += 1);
        return None;
    };
    // Grows as bytes arrive (capped at 64 KiB up front): a claimed size allocates nothing.
    let mut frame = Vec::with_capacity(4 + length.min(64 * 1024));
    frame.extend_from_slice(&size);
    let read = reader
        .take(length as u64)
        .read_to_end(&mut frame)
        .await
        .ok()?;
    (read == length).then_some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_come_before_delays_and_are_consumed() {
        let mut faults = Faults {
            drop_connection: 1,
            delay: Duration::from_secs(2),
            delay_count: 2,
        };
        assert_eq!(faults.take(), Some(AnswerFault::DropConnection));
        assert_eq!(
            faults.take(),
            Some(AnswerFault::Delay(Duration::from_secs(2)))
        );
        assert_eq!(
            faults.take(),
            Some(AnswerFault::Delay(Duration::from_secs(2)))
        );
        assert_eq!(faults.take(), None);
    }

    #[test]
    fn in_flight_requests_are_bounded_by_forgetting_the_oldest() {
        let mut in_flight = InFlight::default();
        for correlation_id in 0..(MAX_IN_FLIGHT_PER_CONNECTION as i32 + 2) {
            in_flight.insert(correlation_id, PRODUCE);
        }
        assert_eq!(in_flight.requests.len(), MAX_IN_FLIGHT_PER_CONNECTION);
        assert_eq!(in_flight.take(0), None);
        assert_eq!(in_flight.take(2), Some(PRODUCE));
        assert_eq!(in_flight.take(2), None);
    }

    #[test]
    fn resent_batches_are_counted_and_acks_0_requests_are_not_awaited() {
        let shared = Shared::default();
        let request = parse::tests::produce_request(9, -1);
        let info = shared.note_request(&request).expect("answered");
        assert_eq!((info.api_key, info.correlation_id), (PRODUCE, 42));
        assert!(shared.note_request(&request).is_some());
        let stats = shared.stats.lock().unwrap().clone();
        assert_eq!(
            (
                stats.produce_requests,
                stats.produce_batches,
                stats.resent_batches
            ),
            (2, 6, 3)
        );
        // Unanswered (acks=0), but still counted; its batches were seen before.
        assert_eq!(
            shared.note_request(&parse::tests::produce_request(9, 0)),
            None
        );
        // Not a Produce: awaited, not counted; unreadable: forwarded, not awaited.
        let mut metadata = request.clone();
        metadata[1] = 3;
        assert!(shared.note_request(&metadata).is_some());
        assert_eq!(shared.note_request(&[0, 0, 1]), None);
        let stats = shared.stats.lock().unwrap().clone();
        assert_eq!(
            (
                stats.produce_requests,
                stats.resent_batches,
                stats.unparsed_frames
            ),
            (3, 6, 1)
        );
    }

    #[tokio::test]
    async fn frames_are_read_whole_and_odd_sizes_end_the_connection() {
        let shared = Shared::default();
        let mut two = &[0u8, 0, 0, 2, 7, 8, 0, 0, 0, 0][..];
        assert_eq!(
            read_frame(&mut two, &shared).await,
            Some(vec![0, 0, 0, 2, 7, 8])
        );
        assert_eq!(read_frame(&mut two, &shared).await, Some(vec![0, 0, 0, 0]));
        assert_eq!(read_frame(&mut two, &shared).await, None, "EOF");
        let mut truncated = &[0u8, 0, 0, 9, 1, 2][..];
        assert_eq!(read_frame(&mut truncated, &shared).await, None);
        assert_eq!(shared.stats.lock().unwrap().bad_frames, 0);
        let mut negative = &[0xffu8, 0xff, 0xff, 0xfe, 1][..];
        assert_eq!(read_frame(&mut negative, &shared).await, None);
        // Claims 2 GiB with nothing behind it: refused without allocating it.
        let mut huge = &[0x7fu8, 0xff, 0xff, 0xff][..];
        assert_eq!(read_frame(&mut huge, &shared).await, None);
        assert_eq!(shared.stats.lock().unwrap().bad_frames, 2);
    }
}
