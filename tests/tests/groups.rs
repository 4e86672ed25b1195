//! Consumer groups with librdkafka against the real binary: members are separate processes (this
//! test binary re-executed with `SLUICE_GROUP_MEMBER` set), so one can be SIGKILLed.
//!
//! Each member subscribes, writes every record it processes (`MSG partition offset`) and every
//! rebalance event (`ASSIGN`/`REVOKE`) to its own file, and commits synchronously after each
//! record — so a clean rebalance must not hand a record to two members.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, DefaultConsumerContext, Rebalance,
};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sluice_tests::clients::{self, produce_many};
use sluice_tests::{SluiceOptions, SluiceProcess};

const MEMBER_ENV: &str = "SLUICE_GROUP_MEMBER";
const PARTITIONS: i32 = 6;
const SESSION_TIMEOUT_MS: u64 = 6_000;
/// Bound on every wait for consumption.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a member process's life.
const MEMBER_LIFETIME: Duration = Duration::from_secs(240);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MemberConfig {
    bootstrap: String,
    group: String,
    topic: String,
    instance_id: Option<String>,
    strategy: String,
    log: PathBuf,
    stop: PathBuf,
}

/// Writes rebalance events to the member's log.
struct LoggingContext {
    log: Mutex<fs::File>,
}

impl LoggingContext {
    fn write(&self, line: &str) {
        let mut file = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(file, "{line}");
        let _ = file.flush();
    }
}

impl ClientContext for LoggingContext {}

fn partitions_of(list: &TopicPartitionList) -> String {
    let mut partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
    partitions.sort_unstable();
    partitions
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl ConsumerContext for LoggingContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => self.write(&format!("ASSIGN {}", partitions_of(list))),
            Rebalance::Revoke(list) => self.write(&format!("REVOKE {}", partitions_of(list))),
            Rebalance::Error(error) => self.write(&format!("REBALANCE-ERROR {error}")),
        }
    }
}

/// The member process body: runs only when re-executed by a test with `SLUICE_GROUP_MEMBER`.
#[test]
fn group_member_process() -> Result<()> {
    let Ok(config) = std::env::var(MEMBER_ENV) else {
        return Ok(());
    };
    let config: MemberConfig = serde_json::from_str(&config)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.log)?;
    let context = LoggingContext {
        log: Mutex::new(log),
    };
    let mut client = clients::base_config(&config.bootstrap);
    client
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
        .set("heartbeat.interval.ms", "500")
        .set("partition.assignment.strategy", &config.strategy)
        .set("fetch.wait.max.ms", "100");
    if let Some(instance) = &config.instance_id {
        client.set("group.instance.id", instance);
    }
    let consumer: BaseConsumer<LoggingContext> = client.create_with_context(context)?;
    consumer.subscribe(&[&config.topic])?;
    let deadline = Instant::now() + MEMBER_LIFETIME;
    while Instant::now() < deadline && !config.stop.exists() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                consumer.context().write(&format!(
                    "MSG {} {}",
                    message.partition(),
                    message.offset()
                ));
                if let Err(error) = consumer.commit_message(&message, CommitMode::Sync) {
                    consumer.context().write(&format!("COMMIT-ERROR {error}"));
                }
            }
            Some(Err(error)) => consumer.context().write(&format!("ERROR {error}")),
            None => {}
        }
    }
    consumer.context().write("CLOSING");
    // Dropping closes the consumer: a dynamic member sends LeaveGroup (a static one does not).
    drop(consumer);
    Ok(())
}

/// A member process and its files.
struct Member {
    name: String,
    config: MemberConfig,
    child: Option<Child>,
}

impl Member {
    fn start(
        dir: &Path,
        name: &str,
        config_for: impl FnOnce(PathBuf, PathBuf) -> MemberConfig,
    ) -> Result<Member> {
        let config = config_for(
            dir.join(format!("{name}.log")),
            dir.join(format!("{name}.stop")),
        );
        let mut member = Member {
            name: name.to_owned(),
            config,
            child: None,
        };
        member.spawn()?;
        Ok(member)
    }

    fn spawn(&mut self) -> Result<()> {
        let _ = fs::remove_file(&self.config.stop);
        let child = Command::new(std::env::current_exe()?)
            .args(["group_member_process", "--exact", "--nocapture"])
            .env(MEMBER_ENV, serde_json::to_string(&self.config)?)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning member {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// Asks the member to close cleanly and waits (bounded) for it to exit.
    fn stop(&mut self) -> Result<()> {
        fs::write(&self.config.stop, b"stop")?;
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("member {} did not stop within 30 s", self.name)
    }

    fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.config.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// (partition, offset) of every processed record, in order (with repeats).
    fn processed(&self) -> Vec<(i32, i64)> {
        self.lines()
            .iter()
            .filter_map(|line| {
                let mut parts = line.strip_prefix("MSG ")?.split(' ');
                Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
            })
            .collect()
    }

    fn rebalance_events(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.starts_with("ASSIGN") || l.starts_with("REVOKE"))
            .collect()
    }

    fn assigned(&self) -> Option<String> {
        self.lines()
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("ASSIGN ").map(str::to_owned))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn member_config(
    bootstrap: &str,
    group: &str,
    topic: &str,
    instance_id: Option<&str>,
    strategy: &str,
) -> impl FnOnce(PathBuf, PathBuf) -> MemberConfig {
    let (bootstrap, group, topic) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
    let instance_id = instance_id.map(str::to_owned);
    let strategy = strategy.to_owned();
    move |log, stop| MemberConfig {
        bootstrap,
        group,
        topic,
        instance_id,
        strategy,
        log,
        stop,
    }
}

/// Every (partition, offset) below the high watermarks.
fn all_records(ends: &BTreeMap<i32, i64>) -> BTreeSet<(i32, i64)> {
    ends.iter()
        .flat_map(|(p, end)| (0..*end).map(move |o| (*p, o)))
        .collect()
}

fn high_watermarks(bootstrap: &str, topic: &str) -> Result<BTreeMap<i32, i64>> {
    (0..PARTITIONS)
        .map(|p| Ok((p, clients::watermarks(bootstrap, topic, p)?.1)))
        .collect()
}

/// Waits until the members together processed every record below the high watermarks.
fn wait_all_processed(members: &[&Member], bootstrap: &str, topic: &str) -> Result<()> {
    let expected = all_records(&high_watermarks(bootstrap, topic)?);
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    loop {
        let seen: BTreeSet<(i32, i64)> = members.iter().flat_map(|m| m.processed()).collect();
        let missing = expected.difference(&seen).count();
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = members
                .iter()
                .map(|m| format!("{}: {:?}", m.name, m.rebalance_events()))
                .collect();
            bail!(
                "{missing} of {} records never processed; {logs:?}",
                expected.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn produce_batch(bootstrap: &str, topic: &str, start: usize, count: usize) -> Result<()> {
    let producer = clients::producer(bootstrap)?;
    let values: Vec<String> = (start..start + count).map(|i| format!("r{i}")).collect();
    produce_many(&producer, count, |i| {
        FutureRecord::<[u8], [u8]>::to(topic)
            .partition((i % PARTITIONS as usize) as i32)
            .payload(values[i].as_bytes())
    })
    .await?
    .all_ok()
}

fn duplicates(members: &[&Member]) -> Vec<(i32, i64)> {
    let mut seen = BTreeSet::new();
    let mut repeated = Vec::new();
    for record in members.iter().flat_map(|m| m.processed()) {
        if !seen.insert(record) {
            repeated.push(record);
        }
    }
    repeated
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn broker_options() -> SluiceOptions {
    SluiceOptions::default().arg("--group-initial-rebalance-delay-ms", 500)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_leave_kill_static_rejoin_and_offsets_survive_restart() -> Result<()> {
    let mut broker = SluiceProcess::start(broker_options())?;
    let bootstrap = broker.bootstrap();
    let (topic, group) = ("group-topic", "group-a");
    clients::create_topic(&bootstrap, topic, PARTITIONS, &[]).await?;
    produce_batch(&bootstrap, topic, 0, 300).await?;
    let dir = tempfile::tempdir()?;
    let start = |name: &str, instance: Option<&str>| {
        Member::start(
            dir.path(),
            name,
            member_config(&bootstrap, group, topic, instance, "range"),
        )
    };

    // Three members share the six partitions and process everything.
    let mut a = start("a", None)?;
    let mut b = start("b", None)?;
    let mut c = start("c", Some("static-c"))?;
    wait_until("three members with assignments", CONSUME_TIMEOUT, || {
        [&a, &b, &c]
            .iter()
            .all(|m| m.assigned().is_some_and(|p| p.split(',').count() == 2))
    })?;
    wait_all_processed(&[&a, &b, &c], &bootstrap, topic)?;

    // A leaves cleanly: a clean rebalance, nothing is processed twice.
    a.stop()?;
    produce_batch(&bootstrap, topic, 300, 300).await?;
    wait_all_processed(&[&a, &b, &c], &bootstrap, topic)?;
    let repeated = duplicates(&[&a, &b, &c]);
    ensure!(
        repeated.is_empty(),
        "processed twice across a clean rebalance: {repeated:?}"
    );

    // B is SIGKILLed: after its session timeout C gets its partitions and processes everything.
    b.kill9()?;
    let killed_at = Instant::now();
    produce_batch(&bootstrap, topic, 600, 300).await?;
    wait_until("C owns all partitions", CONSUME_TIMEOUT, || {
        c.assigned().as_deref() == Some("0,1,2,3,4,5")
    })?;
    let takeover = killed_at.elapsed();
    ensure!(
        takeover < Duration::from_millis(SESSION_TIMEOUT_MS) + Duration::from_secs(10),
        "takeover took {takeover:?}"
    );
    wait_all_processed(&[&a, &b, &c], &bootstrap, topic)?;

    // D joins; then static C restarts quickly with the same group.instance.id: no rebalance, so D
    // sees no new rebalance event.
    let d = start("d", None)?;
    wait_until("C and D share the partitions", CONSUME_TIMEOUT, || {
        d.assigned().is_some_and(|p| p.split(',').count() == 3)
            && c.assigned().is_some_and(|p| p.split(',').count() == 3)
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let d_events = d.rebalance_events();
    c.kill9()?;
    c.spawn()?;
    produce_batch(&bootstrap, topic, 900, 300).await?;
    wait_all_processed(&[&a, &b, &c, &d], &bootstrap, topic)?;
    // Past C's session timeout: had the restart not been recognized, a rebalance would show now.
    std::thread::sleep(Duration::from_millis(SESSION_TIMEOUT_MS + 1_000));
    ensure!(
        d.rebalance_events() == d_events,
        "the static member's restart caused a rebalance: before {d_events:?}, after {:?}",
        d.rebalance_events()
    );

    // Committed offsets (everything) survive a broker SIGKILL + restart.
    let ends = high_watermarks(&bootstrap, topic)?;
    let (mut c, mut d) = (c, d);
    c.stop()?;
    d.stop()?;
    broker.kill9()?;
    broker.restart()?;
    let bootstrap = broker.bootstrap();
    let consumer: BaseConsumer<DefaultConsumerContext> = clients::base_config(&bootstrap)
        .set("group.id", group)
        .create()?;
    let mut wanted = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        wanted.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(wanted, clients::OP_TIMEOUT)?;
    for element in committed.elements() {
        let end = ends[&element.partition()];
        ensure!(
            element.offset() == Offset::Offset(end),
            "partition {} committed {:?}, expected {end}",
            element.partition(),
            element.offset()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_members_split_partitions_incrementally() -> Result<()> {
    let broker = SluiceProcess::start(broker_options())?;
    let bootstrap = broker.bootstrap();
    let (topic, group) = ("coop-topic", "coop");
    clients::create_topic(&bootstrap, topic, PARTITIONS, &[]).await?;
    produce_batch(&bootstrap, topic, 0, 600).await?;
    let dir = tempfile::tempdir()?;
    let start = |name: &str| {
        Member::start(
            dir.path(),
            name,
            member_config(&bootstrap, group, topic, None, "cooperative-sticky"),
        )
    };
    let a = start("a")?;
    wait_until("A owns everything", CONSUME_TIMEOUT, || {
        a.assigned().as_deref() == Some("0,1,2,3,4,5")
    })?;
    let b = start("b")?;
    // Incremental: B gets partitions, A only ever revokes a subset (never everything at once).
    wait_until("B gets partitions", CONSUME_TIMEOUT, || {
        b.assigned().is_some_and(|p| !p.is_empty())
    })?;
    produce_batch(&bootstrap, topic, 600, 600).await?;
    wait_all_processed(&[&a, &b], &bootstrap, topic)?;
    for event in a.rebalance_events() {
        ensure!(
            event != "REVOKE 0,1,2,3,4,5",
            "a cooperative rebalance revoked everything: {:?}",
            a.rebalance_events()
        );
    }
    let repeated = duplicates(&[&a, &b]);
    ensure!(repeated.is_empty(), "processed twice: {repeated:?}");
    Ok(())
}

/// `sluice groups list|describe` shows the group and its per-partition lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_cli_lists_and_describes_with_lag() -> Result<()> {
    let broker = SluiceProcess::start(broker_options())?;
    let bootstrap = broker.bootstrap();
    let (topic, group) = ("cli-topic", "cli-group");
    clients::create_topic(&bootstrap, topic, 2, &[]).await?;
    let producer = clients::producer(&bootstrap)?;
    produce_many(&producer, 30, |i| {
        FutureRecord::<[u8], [u8]>::to(topic)
            .partition((i % 2) as i32)
            .payload(b"x")
    })
    .await?
    .all_ok()?;
    // Commit offsets 10 (partition 0) and 5 (partition 1): lags 5 and 10.
    let consumer: BaseConsumer<DefaultConsumerContext> = clients::base_config(&bootstrap)
        .set("group.id", group)
        .create()?;
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(topic, 0, Offset::Offset(10))?;
    offsets.add_partition_offset(topic, 1, Offset::Offset(5))?;
    consumer.commit(&offsets, CommitMode::Sync)?;
    drop(consumer);

    let binary = sluice_tests::sluice_binary()?;
    let run = |args: &[&str]| -> Result<String> {
        let output = Command::new(&binary)
            .arg("groups")
            .args(args)
            .args(["--bootstrap", &bootstrap])
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            output.status.success(),
            "sluice groups {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let listed = run(&["list"])?;
    ensure!(
        listed
            .lines()
            .any(|l| l.starts_with(group) && l.contains("Empty")),
        "list:\n{listed}"
    );
    let described = run(&["describe", group])?;
    let row = |partition: i32| {
        described
            .lines()
            .find(|l| {
                let mut columns = l.split_whitespace();
                columns.next() == Some(topic)
                    && columns.next() == Some(partition.to_string().as_str())
            })
            .map(|l| l.split_whitespace().take(5).collect::<Vec<_>>().join(" "))
    };
    ensure!(
        row(0).as_deref() == Some("cli-topic 0 10 15 5"),
        "describe:\n{described}"
    );
    ensure!(
        row(1).as_deref() == Some("cli-topic 1 5 15 10"),
        "describe:\n{described}"
    );
    ensure!(
        described.contains("total lag: 15"),
        "describe:\n{described}"
    );
    Ok(())
}
