//! Consumer-group benchmarks against a running broker (`--bootstrap`):
//!
//! - `rebalance`: a group of N librdkafka consumers (eager `range` assignor) on a topic of P
//!   partitions with a producer writing all the time; then one more member joins. Measured: from
//!   the new member's subscribe (its first JoinGroup) until every member has its new assignment
//!   and has fetched a record after it ("all members fetching again"). Reported with the
//!   clients' own delay (the heartbeat interval, after which the old members learn about the
//!   rebalance) so the broker's share is visible.
//! - `commits`: C connections each sending OffsetCommit requests (one partition each, simple
//!   commits) back to back for a duration; reports commits/s and request latency percentiles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, Subcommand};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, GroupId, OffsetCommitRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientContext;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(about = "Consumer-group benchmarks: rebalance time and offset commits/s")]
struct Cli {
    /// Kafka listener of the broker under test.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Time for a group of `members` to rebalance when one more member joins.
    Rebalance {
        #[arg(long, default_value_t = 10)]
        members: usize,
        #[arg(long, default_value_t = 60)]
        partitions: i32,
        /// heartbeat.interval.ms of the consumers (their own delay in noticing a rebalance).
        #[arg(long, default_value_t = 1000)]
        heartbeat_ms: u64,
        /// Repetitions (each adds one more member to a fresh group).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Sustained OffsetCommit throughput.
    Commits {
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 16)]
        partitions: i32,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Bench::Rebalance {
            members,
            partitions,
            heartbeat_ms,
            runs,
        } => rebalance(&cli.bootstrap, members, partitions, heartbeat_ms, runs),
        Bench::Commits {
            connections,
            seconds,
            partitions,
        } => {
            // The admin client runs its own runtime: create the topic before entering ours.
            let topic = format!("commit-bench-{}", std::process::id());
            create_topic(&cli.bootstrap, &topic, partitions)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(commits(
                &cli.bootstrap,
                &topic,
                connections,
                seconds,
                partitions,
            ))
        }
    }
}

fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    let results = runtime.block_on(admin.create_topics(
        [&NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(1),
        )],
        &options,
    ))?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("creating {name}: {code:?}");
        }
    }
    Ok(())
}

/// Rebalance and fetch events of all members: (member, when, what).
#[derive(Default)]
struct Events {
    assigned: Mutex<HashMap<usize, Vec<Instant>>>,
    fetched: Mutex<HashMap<usize, Vec<Instant>>>,
}

struct MemberContext {
    member: usize,
    events: Arc<Events>,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            let mut assigned = self
                .events
                .assigned
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            assigned
                .entry(self.member)
                .or_default()
                .push(Instant::now());
        }
    }
}

fn spawn_member(
    bootstrap: &str,
    group: &str,
    topic: &str,
    member: usize,
    heartbeat_ms: u64,
    events: Arc<Events>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let consumer: BaseConsumer<MemberContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", heartbeat_ms.to_string())
        .set("partition.assignment.strategy", "range")
        .set("fetch.wait.max.ms", "50")
        .create_with_context(MemberContext {
            member,
            events: events.clone(),
        })?;
    consumer.subscribe(&[topic])?;
    Ok(std::thread::spawn(move || {
        // Bounded by the stop flag, which the benchmark sets when done (or after its deadline).
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(_)) = consumer.poll(Duration::from_millis(20)) {
                let mut fetched = events.fetched.lock().unwrap_or_else(|e| e.into_inner());
                fetched.entry(member).or_default().push(Instant::now());
            }
        }
    }))
}

fn all_fetching_after(events: &Events, members: usize, since: Instant) -> Option<Instant> {
    let assigned = events.assigned.lock().unwrap_or_else(|e| e.into_inner());
    let fetched = events.fetched.lock().unwrap_or_else(|e| e.into_inner());
    let mut latest = since;
    for member in 0..members {
        let assign = assigned
            .get(&member)?
            .iter()
            .copied()
            .filter(|t| *t >= since)
            .max()?;
        let fetch = fetched
            .get(&member)?
            .iter()
            .copied()
            .find(|t| *t >= assign)?;
        latest = latest.max(fetch);
    }
    Some(latest)
}

fn rebalance(
    bootstrap: &str,
    members: usize,
    partitions: i32,
    heartbeat_ms: u64,
    runs: usize,
) -> Result<()> {
    let run_id = std::process::id();
    let topic = format!("rebalance-bench-{run_id}");
    create_topic(bootstrap, &topic, partitions)?;
    let stop = Arc::new(AtomicBool::new(false));
    // A producer keeps every partition busy, so "fetching again" is observable.
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()?;
    let producing = {
        let stop = stop.clone();
        let topic = topic.clone();
        std::thread::spawn(move || {
            let mut i: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                for partition in 0..partitions {
                    let _ = producer.send(
                        BaseRecord::<(), [u8]>::to(&topic)
                            .partition(partition)
                            .payload(b"x"),
                    );
                }
                i += 1;
                if i.is_multiple_of(10) {
                    producer.poll(Duration::ZERO);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = producer.flush(Duration::from_secs(5));
        })
    };
    let mut results = Vec::new();
    for run in 0..runs {
        let group = format!("rebalance-bench-{run_id}-{run}");
        let events = Arc::new(Events::default());
        let member_stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for member in 0..members {
            threads.push(spawn_member(
                bootstrap,
                &group,
                &topic,
                member,
                heartbeat_ms,
                events.clone(),
                member_stop.clone(),
            )?);
        }
        // Stable: every member assigned and fetching.
        let settle_deadline = Instant::now() + Duration::from_secs(120);
        let start = Instant::now();
        loop {
            if let Some(t) = all_fetching_after(&events, members, start) {
                // Quiet for a while: no rebalance still in progress.
                if t.elapsed() > Duration::from_secs(3) || Instant::now() > settle_deadline {
                    break;
                }
            }
            if Instant::now() > settle_deadline {
                bail!("the initial group of {members} did not settle");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(2));
        let joined_at = Instant::now();
        threads.push(spawn_member(
            bootstrap,
            &group,
            &topic,
            members,
            heartbeat_ms,
            events.clone(),
            member_stop.clone(),
        )?);
        let deadline = joined_at + Duration::from_secs(60);
        let done = loop {
            if let Some(t) = all_fetching_after(&events, members + 1, joined_at) {
                break t;
            }
            if Instant::now() > deadline {
                bail!("the rebalance did not complete within 60 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = done - joined_at;
        println!(
            "run {run}: {members}+1 members, {partitions} partitions: all fetching again after {:.0} ms (heartbeat interval {heartbeat_ms} ms → {:.0} ms beyond it)",
            took.as_secs_f64() * 1000.0,
            (took.as_secs_f64() * 1000.0 - heartbeat_ms as f64).max(0.0)
        );
        results.push(took);
        member_stop.store(true, Ordering::Relaxed);
        for thread in threads {
            let _ = thread.join();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = producing.join();
    results.sort();
    let median = results[results.len() / 2];
    println!(
        "rebalance median: {:.0} ms (max {:.0} ms) over {runs} runs",
        median.as_secs_f64() * 1000.0,
        results.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    );
    Ok(())
}

async fn round_trip<R: Request>(
    stream: &mut TcpStream,
    correlation_id: i32,
    request: &R,
    version: i16,
) -> Result<R::Response> {
    let api = ApiKey::try_from(R::KEY).map_err(|()| anyhow::anyhow!("unknown api"))?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("groupbench")));
    let mut body = BytesMut::new();
    header.encode(&mut body, api.request_header_version(version))?;
    request.encode(&mut body, version)?;
    let mut frame = BytesMut::with_capacity(body.len() + 4);
    frame.put_i32(i32::try_from(body.len())?);
    frame.put_slice(&body);
    stream.write_all(&frame).await?;
    let size = usize::try_from(stream.read_i32().await?)?;
    if size > 16 * 1024 * 1024 {
        bail!("response of {size} bytes");
    }
    let mut buf = vec![0u8; size];
    stream.read_exact(&mut buf).await?;
    let mut bytes = Bytes::from(buf);
    let response_header = ResponseHeader::decode(&mut bytes, api.response_header_version(version))?;
    if response_header.correlation_id != correlation_id {
        bail!("correlation id mismatch");
    }
    R::Response::decode(&mut bytes, version)
}

async fn commits(
    bootstrap: &str,
    topic: &str,
    connections: usize,
    seconds: u64,
    partitions: i32,
) -> Result<()> {
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for connection in 0..connections {
        let mut stream = TcpStream::connect(bootstrap)
            .await
            .with_context(|| format!("connecting to {bootstrap}"))?;
        stream.set_nodelay(true)?;
        let (count, errors, latencies, topic) = (
            count.clone(),
            errors.clone(),
            latencies.clone(),
            topic.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let group = format!("commit-bench-group-{connection}");
            let partition = i32::try_from(connection).unwrap_or(0) % partitions;
            let mut local = Vec::new();
            let mut offset: i64 = 0;
            // Bounded by the benchmark's duration.
            while Instant::now() < end {
                offset += 1;
                let request = OffsetCommitRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(partition)
                            .with_committed_offset(offset)])]);
                let sent = Instant::now();
                let correlation = i32::try_from(offset % i64::from(i32::MAX)).unwrap_or(1);
                match round_trip(&mut stream, correlation, &request, 8).await {
                    Ok(response) if response.topics[0].partitions[0].error_code == 0 => {
                        count.fetch_add(1, Ordering::Relaxed);
                        local.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(local);
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let total = count.load(Ordering::Relaxed);
    let mut latencies = latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    println!(
        "offset commits: {total} in {elapsed:.1} s = {:.0}/s over {connections} connections ({} errors); latency p50 {:.2} ms, p99 {:.2} ms",
        total as f64 / elapsed,
        errors.load(Ordering::Relaxed),
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}
