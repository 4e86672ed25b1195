//! Resource bounds of the Kafka listener against misbehaving raw-socket clients, each while a
//! well-behaved librdkafka producer on its own connection keeps getting its acks: a client that
//! never reads its Fetch responses, `--max-connections`, `--max-connections-per-ip`,
//! `--connections-max-idle-ms`, and a request that is announced and never completed
//! (`--request-read-timeout-ms`).

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, FetchRequest, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::producer::FutureRecord;
use sluice_tests::wire::{FrameRead, RawConnection};
use sluice_tests::{clients, SluiceOptions, SluiceProcess};

const MIB: usize = 1024 * 1024;

/// Longest wait for one acknowledgement of the steady producer (generous: the suite runs in
/// parallel on small machines; the failures this catches are stalls of 30 s or forever).
const ACK_BOUND: Duration = Duration::from_secs(10);

/// Acknowledgements the steady producer must get during each test (one at a time, each a few
/// milliseconds on an idle machine).
const MIN_ACKS: usize = 3;

/// A librdkafka producer acknowledging one record at a time in the background until stopped.
struct SteadyProducer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<usize>>,
}

impl SteadyProducer {
    /// Starts producing to `topic` (created here) once a first record is acknowledged, so its
    /// connections are open before the misbehaving client starts.
    async fn start(bootstrap: &str, topic: &'static str) -> Result<Self> {
        clients::create_topic(bootstrap, topic, 1, &[]).await?;
        let producer = clients::producer(bootstrap)?;
        clients::produce_one(&producer, topic, 0, b"k", b"warm-up").await?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut acked = 0;
            // Bounded in count and, through the caller's stop, in time.
            while !stopping.load(Ordering::Relaxed) && acked < 100_000 {
                let started = Instant::now();
                tokio::time::timeout(
                    ACK_BOUND,
                    clients::produce_one(&producer, topic, 0, b"k", b"steady"),
                )
                .await
                .with_context(|| format!("no ack within {ACK_BOUND:?} after {acked} acks"))??;
                ensure!(
                    started.elapsed() < ACK_BOUND,
                    "an ack took {:?}",
                    started.elapsed()
                );
                acked += 1;
            }
            Ok(acked)
        });
        Ok(SteadyProducer { stop, task })
    }

    /// Stops and checks that at least `min_acks` records were acknowledged meanwhile.
    async fn finish(self, min_acks: usize) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let acked = self.task.await.context("steady producer task")??;
        ensure!(
            acked >= min_acks,
            "the well-behaved producer got only {acked} acks (expected at least {min_acks})"
        );
        Ok(())
    }
}

/// One sample from the broker's `/metrics` page: the first line naming `name` (with `labels`
/// inside its braces when given).
fn metric(broker: &SluiceProcess, name: &str, labels: Option<&str>) -> Result<Option<f64>> {
    let http = broker
        .ready_info()
        .and_then(|ready| ready.http.clone())
        .context("the broker has no HTTP listener")?;
    let mut stream = TcpStream::connect(&http).with_context(|| format!("connecting to {http}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )?;
    let mut page = String::new();
    stream
        .take(8 * MIB as u64)
        .read_to_string(&mut page)
        .context("reading /metrics")?;
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match (rest.strip_prefix(' '), labels) {
            (Some(value), None) => value,
            _ => match (rest.strip_prefix('{'), labels) {
                (Some(labelled), Some(wanted)) if labelled.contains(wanted) => {
                    labelled.rsplit_once(' ').map(|(_, v)| v).unwrap_or("")
                }
                _ => continue,
            },
        };
        return Ok(Some(
            value
                .trim()
                .parse()
                .with_context(|| format!("metric line {line:?}"))?,
        ));
    }
    Ok(None)
}

/// Sends ApiVersions v0; `Some(true)` if answered within `timeout`, `Some(false)` if the
/// connection was closed, `None` if nothing came.
fn api_versions_answered(
    connection: &mut RawConnection,
    timeout: Duration,
) -> Result<Option<bool>> {
    let (_, body) = connection.encode_request(&ApiVersionsRequest::default(), 0)?;
    if connection.send_frame(&body).is_err() {
        return Ok(Some(false));
    }
    Ok(match connection.read_frame(timeout)? {
        FrameRead::Frame(_) => Some(true),
        FrameRead::Closed => Some(false),
        FrameRead::TimedOut => None,
    })
}

fn fetch_from_start(topic: &str, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 * MIB as i32)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_current_leader_epoch(-1)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(50 * MIB as i32)])])
}

/// Fetch requests pipelined by the client that never reads.
const PIPELINED_FETCHES: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_fetch_responses_stalls_only_itself() -> Result<()> {
    let broker = SluiceProcess::start_default()?;
    let bootstrap = broker.bootstrap();
    clients::create_topic(&bootstrap, "big", 1, &[]).await?;
    let producer = clients::producer(&bootstrap)?;
    let value = vec![b'x'; 256 * 1024];
    clients::produce_many(&producer, 40, |_| {
        FutureRecord::<(), [u8]>::to("big")
            .partition(0)
            .payload(&value[..])
    })
    .await?
    .all_ok()?;
    drop(producer);
    let steady = SteadyProducer::start(&bootstrap, "steady").await?;
    let rss_before = broker.rss_kib()?;

    // One Fetch read normally shows a response holds the whole 10 MiB; then many pipelined
    // Fetches, none of whose responses is read.
    let addr = bootstrap.clone();
    let (mut slow, version, sent) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut connection = RawConnection::connect(&addr)?;
        let version = connection.negotiate::<FetchRequest>(11)?;
        let (_, body) = connection.encode_request(&fetch_from_start("big", 0), version)?;
        connection.send_frame(&body)?;
        let FrameRead::Frame(first) = connection.read_frame(Duration::from_secs(20))? else {
            bail!("no answer to the first Fetch");
        };
        ensure!(
            first.len() >= 9 * MIB,
            "a Fetch from the start returned {} bytes",
            first.len()
        );
        let mut sent = Vec::new();
        for _ in 0..PIPELINED_FETCHES {
            let (correlation_id, body) =
                connection.encode_request(&fetch_from_start("big", 0), version)?;
            connection.send_frame(&body)?;
            sent.push(correlation_id);
        }
        Ok((connection, version, sent))
    })
    .await??;

    // Unbounded, the broker would build and queue all 30 responses (~300 MiB).
    let mut max_inflight = 0.0f64;
    let mut max_rss = rss_before;
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let inflight = metric(&broker, "broker_inflight_bytes", None)?
            .context("broker_inflight_bytes missing from /metrics")?;
        max_inflight = max_inflight.max(inflight);
        max_rss = max_rss.max(broker.rss_kib()?);
    }
    ensure!(
        max_inflight >= 10.0 * MIB as f64,
        "the queued responses should be charged to the in-flight budget: at most {max_inflight} bytes"
    );
    ensure!(
        max_inflight <= 40.0 * MIB as f64,
        "in-flight bytes reached {max_inflight} with a client that never reads"
    );
    ensure!(
        max_rss < rss_before + 160 * 1024,
        "broker RSS grew from {rss_before} KiB to {max_rss} KiB with a client that never reads"
    );
    steady.finish(MIN_ACKS).await?;

    // Once the client reads, every response arrives, in order, and the budget is returned.
    tokio::task::spawn_blocking(move || -> Result<()> {
        let header_version = ApiKey::Fetch.response_header_version(version);
        for (i, correlation_id) in sent.into_iter().enumerate() {
            let FrameRead::Frame(mut frame) = slow.read_frame(Duration::from_secs(20))? else {
                bail!("no response to pipelined Fetch {i}");
            };
            ensure!(frame.len() >= 9 * MIB, "Fetch {i}: {} bytes", frame.len());
            let header = ResponseHeader::decode(&mut frame, header_version)?;
            ensure!(
                header.correlation_id == correlation_id,
                "responses out of order at {i}"
            );
        }
        Ok(())
    })
    .await??;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let inflight = metric(&broker, "broker_inflight_bytes", None)?.unwrap_or(f64::MAX);
        if inflight < MIB as f64 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{inflight} in-flight bytes left after every response was read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_stops_accepting_until_a_connection_closes() -> Result<()> {
    const LIMIT: usize = 6;
    let broker = SluiceProcess::start(SluiceOptions::default().arg("--max-connections", LIMIT))?;
    let bootstrap = broker.bootstrap();
    let steady = SteadyProducer::start(&bootstrap, "steady").await?;

    let addr = bootstrap.clone();
    let (mut served, mut waiting) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut served = Vec::new();
        // Bounded: the producer holds at least one of the LIMIT slots.
        for _ in 0..LIMIT {
            let mut connection = RawConnection::connect(&addr)?;
            match api_versions_answered(&mut connection, Duration::from_secs(4))? {
                Some(true) => served.push(connection),
                Some(false) => bail!("a connection beyond max.connections was closed"),
                None => return Ok((served, connection)),
            }
        }
        bail!("{LIMIT} more connections were all served with --max-connections {LIMIT}");
    })
    .await??;
    ensure!(!served.is_empty(), "no connection was served");
    let open = metric(&broker, "broker_connections", None)?.context("broker_connections")?;
    ensure!(
        open == LIMIT as f64,
        "{open} connections open while one waits at --max-connections {LIMIT}"
    );
    // The producer keeps its acks meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    steady.finish(MIN_ACKS).await?;

    // A slot frees: the waiting connection is accepted and answered.
    served.pop();
    tokio::task::spawn_blocking(move || -> Result<()> {
        match waiting.read_frame(Duration::from_secs(10))? {
            FrameRead::Frame(_) => Ok(()),
            other => bail!("the waiting connection got {other:?} after a slot freed"),
        }
    })
    .await??;
    drop(served);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_per_ip_closes_the_excess_from_that_address_only() -> Result<()> {
    const LIMIT: usize = 4;
    let broker =
        SluiceProcess::start(SluiceOptions::default().arg("--max-connections-per-ip", LIMIT))?;
    let bootstrap = broker.bootstrap();
    let steady = SteadyProducer::start(&bootstrap, "steady").await?;

    let other_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut abuser = Vec::new();
    for _ in 0..LIMIT {
        abuser.push(RawConnection::connect_from(&bootstrap, other_ip).await?);
    }
    let mut excess = RawConnection::connect_from(&bootstrap, other_ip).await?;
    let (mut abuser, excess) = tokio::task::spawn_blocking(move || -> Result<_> {
        for (i, connection) in abuser.iter_mut().enumerate() {
            ensure!(
                api_versions_answered(connection, Duration::from_secs(10))? == Some(true),
                "connection {i} from 127.0.0.2 (within the limit) was not served"
            );
        }
        excess
            .expect_closed(Duration::from_secs(10))
            .context("a connection beyond max.connections.per.ip")?;
        Ok((abuser, excess))
    })
    .await??;
    drop(excess);
    let closed = metric(
        &broker,
        "broker_connections_closed_by_limit_total",
        Some("max_connections_per_ip"),
    )?
    .unwrap_or(0.0);
    ensure!(closed >= 1.0, "per-IP closes counted: {closed}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    steady.finish(MIN_ACKS).await?;

    // Closing one frees its slot for that address (once the broker has seen the close).
    abuser.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = RawConnection::connect_from(&bootstrap, other_ip).await?;
        let answered = tokio::task::spawn_blocking(move || {
            api_versions_answered(&mut again, Duration::from_secs(5))
        })
        .await??;
        if answered == Some(true) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no slot for 127.0.0.2 after one of its connections closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(abuser);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_not_during_a_long_poll() -> Result<()> {
    const IDLE: Duration = Duration::from_millis(2000);
    let broker = SluiceProcess::start(
        SluiceOptions::default().arg("--connections-max-idle-ms", IDLE.as_millis()),
    )?;
    let bootstrap = broker.bootstrap();
    let steady = SteadyProducer::start(&bootstrap, "steady").await?;
    clients::create_topic(&bootstrap, "empty", 1, &[]).await?;

    let addr = bootstrap.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        // Served once, then silent: closed after the idle time.
        let mut idle = RawConnection::connect(&addr)?;
        ensure!(api_versions_answered(&mut idle, Duration::from_secs(10))? == Some(true));
        let since = Instant::now();
        idle.expect_closed(Duration::from_secs(10))
            .context("an idle connection")?;
        ensure!(
            since.elapsed() >= IDLE - Duration::from_millis(100),
            "closed after {:?}, before connections.max.idle.ms",
            since.elapsed()
        );

        // A long-poll Fetch outlasting the idle time is a request in progress: answered.
        let mut polling = RawConnection::connect(&addr)?;
        let version = polling.negotiate::<FetchRequest>(11)?;
        let (_, body) = polling.encode_request(&fetch_from_start("empty", 4000), version)?;
        let since = Instant::now();
        polling.send_frame(&body)?;
        match polling.read_frame(Duration::from_secs(10))? {
            FrameRead::Frame(_) => {}
            other => bail!("long poll got {other:?}"),
        }
        ensure!(
            since.elapsed() >= Duration::from_millis(3500),
            "the long poll returned after {:?}",
            since.elapsed()
        );

        // A connection with a request every 300 ms stays open past the idle time.
        let mut active = RawConnection::connect(&addr)?;
        for i in 0..10 {
            ensure!(
                api_versions_answered(&mut active, Duration::from_secs(10))? == Some(true),
                "request {i} of an active connection was not answered"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(())
    })
    .await??;
    let closed = metric(
        &broker,
        "broker_connections_closed_by_limit_total",
        Some("connections_max_idle"),
    )?
    .unwrap_or(0.0);
    ensure!(closed >= 1.0, "idle closes counted: {closed}");
    steady.finish(MIN_ACKS).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_announced_and_never_completed_is_closed_and_its_bytes_freed() -> Result<()> {
    const READ_TIMEOUT: Duration = Duration::from_millis(1500);
    let broker = SluiceProcess::start(
        SluiceOptions::default().arg("--request-read-timeout-ms", READ_TIMEOUT.as_millis()),
    )?;
    let bootstrap = broker.bootstrap();
    let steady = SteadyProducer::start(&bootstrap, "steady").await?;

    // Announces 100 MiB (socket.request.max.bytes), sends 10 bytes of it and stops; another
    // sends half a size prefix and stops.
    let mut announced = RawConnection::connect(&bootstrap)?;
    let mut bytes = (100 * MIB as i32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 10]);
    announced.send_raw(&bytes)?;
    let since = Instant::now();
    let mut half_prefix = RawConnection::connect(&bootstrap)?;
    half_prefix.send_raw(&[0, 0])?;

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let inflight = metric(&broker, "broker_inflight_bytes", None)?.unwrap_or(0.0);
        if inflight >= (100 * MIB) as f64 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the announced request's bytes are not reserved ({inflight})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (since_closed, half_closed) = tokio::task::spawn_blocking(move || -> Result<_> {
        announced
            .expect_closed(Duration::from_secs(10))
            .context("a stalled request body")?;
        let since_closed = since.elapsed();
        half_prefix
            .expect_closed(Duration::from_secs(10))
            .context("a stalled size prefix")?;
        Ok((since_closed, since.elapsed()))
    })
    .await??;
    ensure!(
        since_closed >= READ_TIMEOUT - Duration::from_millis(100),
        "closed after {since_closed:?}, before the read timeout"
    );
    ensure!(half_closed >= READ_TIMEOUT - Duration::from_millis(100));

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let inflight = metric(&broker, "broker_inflight_bytes", None)?.unwrap_or(f64::MAX);
        if inflight < MIB as f64 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{inflight} in-flight bytes still reserved after the stalled request was closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let closed = metric(
        &broker,
        "broker_connections_closed_by_limit_total",
        Some("request_read_timeout"),
    )?
    .unwrap_or(0.0);
    ensure!(closed >= 2.0, "stalled-request closes counted: {closed}");
    steady.finish(MIN_ACKS).await?;
    Ok(())
}

/// Requests the client that never reads pipelines: their responses (~400 bytes each) are more
/// than the loopback socket buffers hold, so the broker's writer stalls.
const UNREAD_REQUESTS: usize = 40_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_responses_are_never_read_is_closed_as_idle() -> Result<()> {
    const IDLE: Duration = Duration::from_millis(1000);
    let broker = SluiceProcess::start(
        SluiceOptions::default().arg("--connections-max-idle-ms", IDLE.as_millis()),
    )?;
    let bootstrap = broker.bootstrap();
    let steady = SteadyProducer::start(&bootstrap, "steady").await?;
    let idle_closes = |broker: &SluiceProcess| -> Result<f64> {
        Ok(metric(
            broker,
            "broker_connections_closed_by_limit_total",
            Some("connections_max_idle"),
        )?
        .unwrap_or(0.0))
    };
    let before = idle_closes(&broker)?;

    let addr = bootstrap.clone();
    let mut unread = tokio::task::spawn_blocking(move || -> Result<RawConnection> {
        let mut connection = RawConnection::connect(&addr)?;
        let mut frames = Vec::new();
        for _ in 0..UNREAD_REQUESTS {
            let (_, body) = connection.encode_request(&ApiVersionsRequest::default(), 0)?;
            frames.extend_from_slice(&(body.len() as i32).to_be_bytes());
            frames.extend_from_slice(&body);
        }
        connection.send_raw(&frames)?;
        Ok(connection)
    })
    .await??;

    let deadline = Instant::now() + Duration::from_secs(15);
    while idle_closes(&broker)? <= before {
        ensure!(
            Instant::now() < deadline,
            "a connection whose responses are never read was not closed as idle"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What the broker had written is still readable, then the connection ends.
    tokio::task::spawn_blocking(move || -> Result<()> {
        for read in 0..=UNREAD_REQUESTS {
            match unread.read_frame(Duration::from_secs(10))? {
                FrameRead::Frame(_) => {}
                FrameRead::Closed => {
                    ensure!(
                        read < UNREAD_REQUESTS,
                        "every response was written: the writer never stalled"
                    );
                    return Ok(());
                }
                FrameRead::TimedOut => bail!("connection still open after {read} responses"),
            }
        }
        bail!("more responses than requests")
    })
    .await??;
    steady.finish(MIN_ACKS).await?;
    Ok(())
}
