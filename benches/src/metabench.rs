//! `metabench`: the cost of one metadata commit on a large index, as the S3-WAL indexer makes them.
//!
//! Builds a state of `--topics` × `--partitions` partitions holding `--segments` WAL chunks each
//! (every shared WAL object carries `--chunks-per-object` chunks, so `shared_objects` holds
//! topics × partitions × segments / chunks-per-object keys), then applies `--commands`
//! `AddSegments` commands, each indexing one new WAL object with a chunk for `--per-command`
//! partitions of one topic plus a lane mark. Every command is applied as the Raft state machine
//! applies a batch of one: the published state is cloned, the command applied to the clone with
//! [`metadata::apply_command`], and the clone published — while a reader still holds the previous
//! state (readers always do), so copy-on-write has to copy whatever the command touches. The
//! timed part is clone + apply + publish + dropping the reader's old state (where the copied
//! parts of the old state are freed).
//!
//! Reported per run: ns per command, and the segment refs one command copied (every partition
//! whose segment list no longer shares storage with the held state). `shared_objects` is a
//! persistent map since this benchmark was written: a change copies O(log n) of its nodes, never
//! the whole map, so there is nothing of it to count.
//! The last line is the median over `--runs` runs. Pure CPU, no I/O: run it on an idle machine, or
//! alternate two builds run after run so that noise hits both alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use metadata::{
    apply_command, Command, CommandResponse, LaneMark, MetadataState, SegmentEntry, SegmentRef,
    TopicPartition,
};
use uuid::Uuid;

#[derive(Parser)]
#[command(
    about = "Time metadata commits (S3-WAL AddSegments) on a large index while readers hold the old state"
)]
struct Cli {
    #[arg(long, default_value_t = 4)]
    topics: u32,
    #[arg(long, default_value_t = 24)]
    partitions: u32,
    /// WAL chunks per partition in the initial index.
    #[arg(long, default_value_t = 2_000)]
    segments: u32,
    /// Chunks per shared WAL object in the initial index.
    #[arg(long, default_value_t = 4)]
    chunks_per_object: u32,
    /// Timed commands per run.
    #[arg(long, default_value_t = 1_000)]
    commands: u32,
    /// Partitions (of one topic) each timed command indexes a chunk for.
    #[arg(long, default_value_t = 4)]
    per_command: u32,
    #[arg(long, default_value_t = 5)]
    runs: u32,
}

const NODE: u64 = 1;
const LANES: u32 = 4;
const NOW_MS: i64 = 1_700_000_000_000;
/// Records per chunk (only the offsets matter).
const CHUNK_RECORDS: i64 = 100;

/// Builds the commands in order, keeping each partition's index end so that every chunk appends.
struct Indexer {
    incarnation: Uuid,
    topics: Vec<Uuid>,
    partitions: u32,
    /// Index end per (topic, partition).
    ends: Vec<Vec<i64>>,
    next_seq: u64,
}

impl Indexer {
    /// One WAL object with a chunk for each of `targets`, and the mark of its lane.
    fn add_segments(&mut self, targets: &[(usize, u32)]) -> Command {
        let seq = self.next_seq;
        self.next_seq += 1;
        let lane = u32::try_from(seq % u64::from(LANES)).expect("lane fits");
        let key = format!(
            "bench/wal/{}/{lane}/{seq:020}",
            self.incarnation.as_simple()
        );
        let entries = targets
            .iter()
            .enumerate()
            .map(|(index, &(topic, partition))| {
                let end = &mut self.ends[topic][partition as usize];
                let base = *end;
                *end += CHUNK_RECORDS;
                let chunk = u64::try_from(index).expect("small");
                SegmentEntry {
                    tp: TopicPartition {
                        topic_id: self.topics[topic],
                        partition: i32::try_from(partition).expect("partition fits"),
                    },
                    leader_epoch: 0,
                    segment: SegmentRef {
                        key: key.clone(),
                        base_offset: base,
                        end_offset: base + CHUNK_RECORDS,
                        data_start: chunk * 65_536,
                        data_len: 60_000,
                        min_timestamp: NOW_MS,
                        max_timestamp: NOW_MS,
                        created_ms: NOW_MS,
                        footer_len: 2_000,
                        producer_batches: false,
                    },
                }
            })
            .collect();
        Command::AddSegments {
            entries,
            now_ms: NOW_MS,
            marks: vec![LaneMark {
                incarnation: self.incarnation,
                lane,
                through: seq,
            }],
            seal: None,
        }
    }
}

fn apply_checked(state: &mut MetadataState, command: &Command) -> Result<()> {
    match apply_command(state, command) {
        CommandResponse::Rejected(rejection) => bail!("command rejected: {rejection:?}"),
        CommandResponse::Entries(outcomes) if outcomes.iter().any(Option::is_some) => {
            bail!("chunks rejected: {outcomes:?}")
        }
        _ => Ok(()),
    }
}

fn initial_state(cli: &Cli) -> Result<(MetadataState, Indexer)> {
    let mut state = MetadataState::default();
    let incarnation = Uuid::from_u128(0x5eed);
    let mut setup = vec![
        Command::InitCluster {
            cluster_id: "bench".into(),
        },
        Command::RegisterBroker {
            node_id: NODE,
            host: "127.0.0.1".into(),
            port: 9092,
        },
        Command::RegisterIncarnation {
            incarnation,
            node_id: NODE,
            lanes: LANES,
            now_ms: NOW_MS,
            successor_of: None,
        },
    ];
    let topics: Vec<Uuid> = (0..cli.topics)
        .map(|t| Uuid::from_u128(0x1000 + u128::from(t)))
        .collect();
    for (t, &topic_id) in topics.iter().enumerate() {
        setup.push(Command::CreateTopic {
            name: format!("topic-{t}"),
            topic_id,
            partitions: cli.partitions,
            configs: Default::default(),
            owner: NODE,
            now_ms: NOW_MS,
        });
    }
    for command in &setup {
        apply_checked(&mut state, command)?;
    }
    let mut indexer = Indexer {
        incarnation,
        topics,
        partitions: cli.partitions,
        ends: vec![vec![0; cli.partitions as usize]; cli.topics as usize],
        next_seq: 1,
    };
    // Nothing else holds `state` while it is filled, so no copy-on-write copies here.
    let all: Vec<(usize, u32)> = (0..cli.topics as usize)
        .flat_map(|t| (0..cli.partitions).map(move |p| (t, p)))
        .collect();
    let total = all.len() * cli.segments as usize;
    let per_object = cli.chunks_per_object.max(1) as usize;
    for first in (0..total).step_by(per_object) {
        let targets: Vec<(usize, u32)> = (first..(first + per_object).min(total))
            .map(|i| all[i % all.len()])
            .collect();
        apply_checked(&mut state, &indexer.add_segments(&targets))?;
    }
    Ok((state, indexer))
}

/// What publishing `new` copied of `old`: segment refs in partitions whose segment list moved.
fn copied(old: &MetadataState, new: &MetadataState) -> usize {
    let mut segments = 0;
    for (id, topic) in &new.topics {
        let Some(before) = old.topics.get(id) else {
            continue;
        };
        if Arc::ptr_eq(topic, before) {
            continue;
        }
        for (partition, previous) in topic.partitions.iter().zip(before.partitions.iter()) {
            if partition.segments.as_ptr() != previous.segments.as_ptr() {
                segments += partition.segments.len();
            }
        }
    }
    segments
}

struct Run {
    per_command: Duration,
    segments_copied: f64,
}

fn run(cli: &Cli, published: &mut Arc<MetadataState>, indexer: &mut Indexer) -> Result<Run> {
    let touched = cli.per_command.clamp(1, cli.partitions);
    let commands: Vec<Command> = (0..cli.commands)
        .map(|i| {
            let topic = (i % cli.topics) as usize;
            let first = (i / cli.topics) * touched;
            let targets: Vec<(usize, u32)> = (0..touched)
                .map(|k| (topic, (first + k) % indexer.partitions))
                .collect();
            indexer.add_segments(&targets)
        })
        .collect();
    let (mut elapsed, mut segments) = (Duration::ZERO, 0usize);
    for command in &commands {
        let start = Instant::now();
        let held = Arc::clone(published); // a reader of the published state
        let mut working = MetadataState::clone(published);
        apply_checked(&mut working, command)?;
        *published = Arc::new(working);
        elapsed += start.elapsed();
        segments += copied(&held, published);
        let start = Instant::now();
        drop(held); // the reader lets go: the old state's copied parts are freed
        elapsed += start.elapsed();
    }
    let n = cli.commands.max(1);
    Ok(Run {
        per_command: elapsed / n,
        segments_copied: segments as f64 / f64::from(n),
    })
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.topics == 0 || cli.partitions == 0 || cli.commands == 0 || cli.runs == 0 {
        bail!("--topics, --partitions, --commands and --runs must be positive");
    }
    let built = Instant::now();
    let (state, mut indexer) = initial_state(&cli)?;
    println!(
        "state: {} topics x {} partitions x {} segments, {} shared objects (built in {:.1} s)",
        cli.topics,
        cli.partitions,
        cli.segments,
        state.shared_objects.len(),
        built.elapsed().as_secs_f64()
    );
    let mut published = Arc::new(state);
    let mut times = Vec::new();
    for round in 1..=cli.runs {
        let result = run(&cli, &mut published, &mut indexer)?;
        println!(
            "run {round}: {} ns/command, copied per command: {:.0} segment refs",
            result.per_command.as_nanos(),
            result.segments_copied,
        );
        times.push(result.per_command);
    }
    times.sort();
    println!(
        "median: {} ns/command over {} runs of {} AddSegments ({} partitions each)",
        times[times.len() / 2].as_nanos(),
        cli.runs,
        cli.commands,
        cli.per_command
    );
    Ok(())
}
