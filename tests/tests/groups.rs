//! Consumer groups with librdkafka against the real binary: members are separate processes (this
//! test binary re-executed with `SLUICE_GROUP_MEMBER` set), so one can be SIGKILLed.
//!
//! Each member subscribes and writes one JSON [`Event`] per line to its own file: every record it
//! processes, the outcome of the synchronous commit that follows it, and every rebalance (the
//! partitions added or revoked and the assignment the client holds). From those logs the tests
//! check what Kafka promises a group, no more:
//! - at-least-once: every record below the high watermark is processed by some member;
//! - a member that gets a partition starts exactly at the offset its previous owner last
//!   committed successfully, so the records processed twice are exactly those the previous owner
//!   processed past its last successful commit (a commit may legitimately fail during a
//!   rebalance, e.g. REBALANCE_IN_PROGRESS while the group completes it), counted one by one;
//! - with the cooperative protocol, a rebalance never revokes everything a member holds.

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
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
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

/// One line of a member's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event")]
enum Event {
    /// The member process started (a restarted member appends to the same log).
    Start,
    /// Partitions were added; `holds` is the client's whole assignment afterwards.
    Assign {
        added: BTreeSet<i32>,
        holds: BTreeSet<i32>,
    },
    /// Partitions are being revoked; `held` is the client's whole assignment before.
    Revoke {
        revoked: BTreeSet<i32>,
        held: BTreeSet<i32>,
    },
    RebalanceError {
        error: String,
    },
    /// A record was handed to the application (before its offset is committed).
    Record {
        partition: i32,
        offset: i64,
    },
    /// The synchronous commit of `next` (the processed offset + 1) succeeded.
    Committed {
        partition: i32,
        next: i64,
    },
    /// The synchronous commit of `next` failed. Unless `may_have_landed`, it was refused (by the
    /// broker, e.g. ILLEGAL_GENERATION or REBALANCE_IN_PROGRESS during a rebalance, or by the
    /// client before sending), so the committed offset stayed where it was.
    CommitFailed {
        partition: i32,
        next: i64,
        error: String,
        may_have_landed: bool,
    },
    ConsumerError {
        error: String,
    },
    /// The member is about to close; rebalance events after this are the close's own.
    Closing,
}

/// Writes events to the member's log, one JSON object a line.
struct LoggingContext {
    log: Mutex<fs::File>,
}

impl LoggingContext {
    fn write(&self, event: &Event) {
        let mut line = serde_json::to_string(event).unwrap_or_else(|e| format!("{e}"));
        line.push('\n');
        // One write per line, so a reader never sees two lines interleaved.
        let mut file = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let _ = file.write_all(line.as_bytes());
    }
}

impl ClientContext for LoggingContext {}

fn partitions_of(list: &TopicPartitionList) -> BTreeSet<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}

fn held_by(consumer: &BaseConsumer<LoggingContext>) -> BTreeSet<i32> {
    match consumer.assignment() {
        Ok(list) => partitions_of(&list),
        Err(error) => {
            consumer.context().write(&Event::RebalanceError {
                error: format!("reading the assignment: {error}"),
            });
            BTreeSet::new()
        }
    }
}

impl ConsumerContext for LoggingContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            self.write(&Event::Revoke {
                revoked: partitions_of(list),
                held: held_by(consumer),
            });
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => self.write(&Event::Assign {
                added: partitions_of(list),
                holds: held_by(consumer),
            }),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => self.write(&Event::RebalanceError {
                error: error.to_string(),
            }),
        }
    }
}

/// Whether a failed commit may still have been stored: it timed out or its connection broke after
/// it was sent. Any other failure is a refusal.
fn commit_may_have_landed(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::BrokerTransportFailure
        )
    )
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
    context.write(&Event::Start);
    let mut client = clients::base_config(&config.bootstrap);
    client
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
        .set("heartbeat.interval.ms", "500")
        .set("partition.assignment.strategy", &config.strategy)
        .set("fetch.wait.max.ms", "100")
        // One batch per partition per fetch, so a member interleaves its partitions and a
        // rebalance finds it part-way through each of them.
        .set("max.partition.fetch.bytes", "1");
    if let Some(instance) = &config.instance_id {
        client.set("group.instance.id", instance);
    }
    let consumer: BaseConsumer<LoggingContext> = client.create_with_context(context)?;
    consumer.subscribe(&[&config.topic])?;
    let deadline = Instant::now() + MEMBER_LIFETIME;
    while Instant::now() < deadline && !config.stop.exists() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let (partition, offset) = (message.partition(), message.offset());
                consumer
                    .context()
                    .write(&Event::Record { partition, offset });
                // commit_message commits offset + 1, the next record to read.
                let next = offset + 1;
                let outcome = match consumer.commit_message(&message, CommitMode::Sync) {
                    Ok(()) => Event::Committed { partition, next },
                    Err(error) => Event::CommitFailed {
                        partition,
                        next,
                        may_have_landed: commit_may_have_landed(&error),
                        error: error.to_string(),
                    },
                };
                consumer.context().write(&outcome);
            }
            Some(Err(error)) => consumer.context().write(&Event::ConsumerError {
                error: error.to_string(),
            }),
            None => {}
        }
    }
    consumer.context().write(&Event::Closing);
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

    /// The member's events so far. Only complete lines count (the member may be mid-write).
    fn events(&self) -> Vec<Logged> {
        let text = fs::read_to_string(&self.config.log).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|line| match serde_json::from_str(line) {
                Ok(event) => Logged::Event(event),
                Err(_) => Logged::Unreadable(line.to_owned()),
            })
            .collect()
    }

    /// (partition, offset) of every processed record, in order (with repeats).
    fn processed(&self) -> Vec<(i32, i64)> {
        self.events()
            .into_iter()
            .filter_map(|logged| match logged {
                Logged::Event(Event::Record { partition, offset }) => Some((partition, offset)),
                _ => None,
            })
            .collect()
    }

    fn rebalance_events(&self) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter_map(|logged| match logged {
                Logged::Event(event @ (Event::Assign { .. } | Event::Revoke { .. })) => Some(event),
                _ => None,
            })
            .collect()
    }

    /// The partitions the member holds now, as its last rebalance event says (`None` before its
    /// first assignment and after it closed).
    fn assigned(&self) -> Option<BTreeSet<i32>> {
        let mut holds = None;
        for logged in self.events() {
            match logged {
                Logged::Event(Event::Start | Event::Closing) => holds = None,
                Logged::Event(Event::Assign { holds: now, .. }) => holds = Some(now),
                Logged::Event(Event::Revoke { revoked, held }) => {
                    holds = Some(held.difference(&revoked).copied().collect());
                }
                _ => {}
            }
        }
        holds
    }
}

/// A line of a member's log as read back.
#[derive(Debug)]
enum Logged {
    Event(Event),
    Unreadable(String),
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

fn all_partitions() -> BTreeSet<i32> {
    (0..PARTITIONS).collect()
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

/// One member's uninterrupted hold of one partition, read from its log.
#[derive(Debug)]
struct Tenure {
    member: String,
    /// Offsets processed while holding the partition, in order.
    offsets: Vec<i64>,
    /// The last successful commit (the next offset to read), if any.
    committed: Option<i64>,
}

impl Tenure {
    /// The partition's committed offset when this tenure ended, given that it started at its
    /// first processed offset (which [`check_redelivery`] checks was the committed offset then).
    fn committed_at_end(&self) -> Option<i64> {
        self.committed.or(self.offsets.first().copied())
    }
}

/// Every tenure in `member`'s log, per partition. Fails if the member processed or committed a
/// record of a partition it did not hold.
fn tenures(member: &Member) -> Result<BTreeMap<i32, Vec<Tenure>>> {
    let name = &member.name;
    let mut open: BTreeMap<i32, Tenure> = BTreeMap::new();
    let mut ended: BTreeMap<i32, Vec<Tenure>> = BTreeMap::new();
    let end_all = |open: &mut BTreeMap<i32, Tenure>, ended: &mut BTreeMap<i32, Vec<Tenure>>| {
        for (partition, tenure) in std::mem::take(open) {
            ended.entry(partition).or_default().push(tenure);
        }
    };
    // Rebalance events after `Closing` are the close's own; the process's tenures end there.
    let mut closing = false;
    for logged in member.events() {
        let event = match logged {
            Logged::Event(event) => event,
            Logged::Unreadable(line) => bail!("{name} logged an unreadable line: {line}"),
        };
        match event {
            Event::Start => {
                end_all(&mut open, &mut ended);
                closing = false;
            }
            Event::Closing => {
                end_all(&mut open, &mut ended);
                closing = true;
            }
            Event::Assign { added, .. } if !closing => {
                for partition in added {
                    let tenure = Tenure {
                        member: name.clone(),
                        offsets: Vec::new(),
                        committed: None,
                    };
                    ensure!(
                        open.insert(partition, tenure).is_none(),
                        "{name} was assigned partition {partition} while holding it"
                    );
                }
            }
            Event::Revoke { revoked, .. } if !closing => {
                for partition in revoked {
                    let tenure = open.remove(&partition).with_context(|| {
                        format!("{name} had partition {partition} revoked without holding it")
                    })?;
                    ended.entry(partition).or_default().push(tenure);
                }
            }
            Event::Record { partition, offset } => open
                .get_mut(&partition)
                .with_context(|| {
                    format!("{name} processed {partition}@{offset} without holding it")
                })?
                .offsets
                .push(offset),
            Event::CommitFailed {
                partition,
                next,
                error,
                may_have_landed: true,
            } => bail!(
                "{name}'s commit of {partition}@{next} failed with \"{error}\" but may have been \
                 stored, so which records a later owner re-reads is not known"
            ),
            Event::Committed { partition, next } => {
                open.get_mut(&partition)
                    .with_context(|| {
                        format!("{name} committed {partition}@{next} without holding it")
                    })?
                    .committed = Some(next);
            }
            _ => {}
        }
    }
    end_all(&mut open, &mut ended);
    Ok(ended)
}

/// What [`check_redelivery`] found.
#[derive(Debug, Default)]
struct Redelivery {
    /// Partitions that changed hands (with records processed on both sides).
    handovers: usize,
    /// Commits that failed, over all members.
    failed_commits: usize,
    /// Extra deliveries per record: exactly the records past a previous owner's last successful
    /// commit.
    repeated: BTreeMap<(i32, i64), usize>,
}

/// Checks Kafka's delivery promise for a group that consumed `ends` (partition → high watermark)
/// completely and committed through it:
/// - each member processes a partition in offset order without gaps;
/// - the first owner of a partition starts at 0 (nothing was committed), and each later owner
///   starts exactly at the partition's committed offset when it took over — its previous owner's
///   last successful commit, or where that owner itself started if none of its commits succeeded;
/// - the last owner processed and committed through the high watermark;
/// - so the records processed more than once are exactly the previous owners' records past their
///   last successful commit, each counted as often as it was redelivered.
///
/// Each member commits synchronously after each record, so its commit outcomes are in its log
/// before the partition can move. Tenures of one partition are ordered by (first offset, committed
/// offset at their end): a later owner starts at or after an earlier one's committed offset, and
/// only an owner that committed nothing can share a first offset with a later one.
fn check_redelivery(members: &[&Member], ends: &BTreeMap<i32, i64>) -> Result<Redelivery> {
    let mut per_partition: BTreeMap<i32, Vec<Tenure>> = BTreeMap::new();
    let mut found = Redelivery::default();
    for member in members {
        for (partition, tenures) in tenures(member)? {
            per_partition.entry(partition).or_default().extend(tenures);
        }
        found.failed_commits += member
            .events()
            .iter()
            .filter(|logged| matches!(logged, Logged::Event(Event::CommitFailed { .. })))
            .count();
    }
    let mut expected_repeats: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    let mut deliveries: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for (&partition, &end) in ends {
        let mut tenures: Vec<Tenure> = per_partition
            .remove(&partition)
            .unwrap_or_default()
            .into_iter()
            .filter(|tenure| !tenure.offsets.is_empty())
            .collect();
        tenures.sort_by_key(|tenure| (tenure.offsets.first().copied(), tenure.committed_at_end()));
        let mut resume_at = 0;
        let mut previous: Option<&Tenure> = None;
        for tenure in &tenures {
            let first = tenure.offsets[0];
            let who = &tenure.member;
            let expected: Vec<i64> = (first..).take(tenure.offsets.len()).collect();
            ensure!(
                tenure.offsets == expected,
                "{who} processed partition {partition} out of order or with gaps: {:?}",
                tenure.offsets
            );
            match previous {
                None => ensure!(
                    first == 0,
                    "{who}, the first owner of partition {partition}, started at {first}, not 0"
                ),
                Some(before) => {
                    ensure!(
                        first == resume_at,
                        "{who} started partition {partition} at {first}, but its committed \
                         offset was {resume_at} ({}'s last successful commit)",
                        before.member
                    );
                    for offset in resume_at..=*before.offsets.last().unwrap_or(&-1) {
                        *expected_repeats.entry((partition, offset)).or_default() += 1;
                    }
                    if before.member != tenure.member {
                        found.handovers += 1;
                    }
                }
            }
            for &offset in &tenure.offsets {
                *deliveries.entry((partition, offset)).or_default() += 1;
            }
            resume_at = tenure.committed_at_end().unwrap_or(first);
            previous = Some(tenure);
        }
        let last = previous.with_context(|| format!("nobody processed partition {partition}"))?;
        ensure!(
            last.committed == Some(end) && last.offsets.last() == Some(&(end - 1)),
            "the last owner of partition {partition}, {}, did not process and commit through \
             the high watermark {end}: {last:?}",
            last.member
        );
    }
    ensure!(
        per_partition.is_empty(),
        "records processed from partitions the topic does not have: {per_partition:?}"
    );
    let never: Vec<(i32, i64)> = all_records(ends)
        .into_iter()
        .filter(|record| !deliveries.contains_key(record))
        .collect();
    ensure!(never.is_empty(), "records never processed: {never:?}");
    found.repeated = deliveries
        .into_iter()
        .filter(|(_, count)| *count > 1)
        .map(|(record, count)| (record, count - 1))
        .collect();
    ensure!(
        found.repeated == expected_repeats,
        "records processed more than once {:?}, but redelivered past a last successful commit {:?}",
        found.repeated,
        expected_repeats
    );
    Ok(found)
}

/// Waits until, for every partition, some member logged a successful commit of its high watermark
/// (`ends`): the group processed and committed everything.
fn wait_all_committed(members: &[&Member], ends: &BTreeMap<i32, i64>) -> Result<()> {
    wait_until(
        "every partition committed through its high watermark",
        CONSUME_TIMEOUT,
        || {
            let committed: BTreeSet<(i32, i64)> = members
                .iter()
                .flat_map(|member| member.events())
                .filter_map(|logged| match logged {
                    Logged::Event(Event::Committed { partition, next }) => Some((partition, next)),
                    _ => None,
                })
                .collect();
            ends.iter()
                .all(|(&partition, &end)| end == 0 || committed.contains(&(partition, end)))
        },
    )
}

/// Checks the cooperative protocol's promise on `member`'s log: no rebalance (before it closed)
/// revoked everything the member held, and every revoked partition was held. Returns the number
/// of partitions revoked.
fn check_incremental_revokes(member: &Member) -> Result<usize> {
    let mut revoked_partitions = 0;
    for logged in member.events() {
        match logged {
            Logged::Event(Event::Closing) => break,
            Logged::Event(Event::Revoke { revoked, held }) => {
                ensure!(
                    revoked.is_subset(&held) && (revoked.is_empty() || revoked != held),
                    "{} had {revoked:?} revoked while holding {held:?}: a cooperative \
                     rebalance must keep what stays; events {:?}",
                    member.name,
                    member.rebalance_events()
                );
                revoked_partitions += revoked.len();
            }
            _ => {}
        }
    }
    Ok(revoked_partitions)
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

/// Checks that the broker's committed offsets of `group` on `topic` are `ends`.
fn ensure_committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
) -> Result<()> {
    let consumer: BaseConsumer<DefaultConsumerContext> = clients::base_config(bootstrap)
        .set("group.id", group)
        .create()?;
    let committed = consumer.committed_offsets(
        clients::assignment(topic, PARTITIONS, Offset::Invalid)?,
        clients::OP_TIMEOUT,
    )?;
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
            .all(|m| m.assigned().is_some_and(|p| p.len() == 2))
    })?;
    wait_all_processed(&[&a, &b, &c], &bootstrap, topic)?;

    // A leaves cleanly. Across the members joining and A leaving, every record is processed and
    // committed, and only records past a failed commit are processed twice.
    a.stop()?;
    produce_batch(&bootstrap, topic, 300, 300).await?;
    let ends = high_watermarks(&bootstrap, topic)?;
    wait_all_committed(&[&a, &b, &c], &ends)?;
    check_redelivery(&[&a, &b, &c], &ends)?;

    // B is SIGKILLed: after its session timeout C gets its partitions and processes everything.
    b.kill9()?;
    let killed_at = Instant::now();
    produce_batch(&bootstrap, topic, 600, 300).await?;
    wait_until("C owns all partitions", CONSUME_TIMEOUT, || {
        c.assigned() == Some(all_partitions())
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
        d.assigned().is_some_and(|p| p.len() == 3) && c.assigned().is_some_and(|p| p.len() == 3)
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
    ensure_committed(&broker.bootstrap(), group, topic, &ends)
}

/// Two cooperative-sticky members: B joins while A is consuming. A gives up only the partitions
/// that move (never everything at once), the partitions end split three and three, every record
/// is processed and committed, and only records past a failed commit are processed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_members_split_partitions_incrementally() -> Result<()> {
    let broker = SluiceProcess::start(broker_options())?;
    let bootstrap = broker.bootstrap();
    let (topic, group) = ("coop-topic", "coop");
    clients::create_topic(&bootstrap, topic, PARTITIONS, &[]).await?;
    // Ten batches per partition, so a member holding all six is part-way through each for a while.
    for round in 0..10 {
        produce_batch(&bootstrap, topic, round * 60, 60).await?;
    }
    let dir = tempfile::tempdir()?;
    let start = |name: &str| {
        Member::start(
            dir.path(),
            name,
            member_config(&bootstrap, group, topic, None, "cooperative-sticky"),
        )
    };
    let a = start("a")?;
    wait_until(
        "A owns everything and is consuming each partition",
        CONSUME_TIMEOUT,
        || {
            let touched: BTreeSet<i32> = a.processed().iter().map(|(p, _)| *p).collect();
            a.assigned() == Some(all_partitions()) && touched == all_partitions()
        },
    )?;
    // B joins while A works through the first 600 records (one synchronous commit each); the
    // partitions that move therefore have records processed by both.
    let b = start("b")?;
    // Three each covering all six: disjoint.
    let split = |a: &Member, b: &Member| -> bool {
        let (Some(held_by_a), Some(held_by_b)) = (a.assigned(), b.assigned()) else {
            return false;
        };
        let union: BTreeSet<i32> = held_by_a.union(&held_by_b).copied().collect();
        held_by_a.len() == 3 && held_by_b.len() == 3 && union == all_partitions()
    };
    wait_until(
        "A and B hold three partitions each",
        CONSUME_TIMEOUT,
        || split(&a, &b),
    )?;
    produce_batch(&bootstrap, topic, 600, 600).await?;
    let ends = high_watermarks(&bootstrap, topic)?;
    wait_all_committed(&[&a, &b], &ends)?;

    let revoked_from_a = check_incremental_revokes(&a)?;
    ensure!(
        revoked_from_a == 3,
        "A should have had exactly the 3 partitions B got revoked, had {revoked_from_a}: {:?}",
        a.rebalance_events()
    );
    ensure!(
        check_incremental_revokes(&b)? == 0,
        "B lost partitions: {:?}",
        b.rebalance_events()
    );
    // No further rebalance moved anything after the split.
    ensure!(
        split(&a, &b),
        "the split did not last: A {:?}, B {:?}",
        a.rebalance_events(),
        b.rebalance_events()
    );
    let found = check_redelivery(&[&a, &b], &ends)?;
    ensure!(
        found.handovers == 3,
        "expected 3 partitions to change hands with records on both sides: {found:?}"
    );
    eprintln!(
        "cooperative rebalance: {} commits failed, {} records processed twice: {:?}",
        found.failed_commits,
        found.repeated.values().sum::<usize>(),
        found.repeated.keys().collect::<Vec<_>>()
    );

    // The broker kept what the members committed.
    ensure_committed(&bootstrap, group, topic, &ends)
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
