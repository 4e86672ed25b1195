//! `loadgen wal`: the `wal` crate on its own, with no Kafka in front: N concurrent tasks each append
//! fixed-size records and await durability, for a bounded time. Shows what group commit makes of one
//! fsync per group, and so how much of the broker's produce cost is the WAL.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use wal::{Wal, WalOptions, WalStats};

use crate::kafka::ProcessMeters;
use crate::payload::PayloadPool;
use crate::report::Outcome;
use crate::stats::LatencySummary;
use crate::units::{mib_per_s, MIB};

#[derive(Args, Debug)]
pub(crate) struct WalArgs {
    /// Directory for the scratch logs (use the file system the broker's data dir is on).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub(crate) dir: PathBuf,
    /// Numbers of concurrent submitters; one result per number.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub(crate) submitters: Vec<usize>,
    /// Bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub(crate) record_size: usize,
    /// Time bound per submitter count.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) seconds: f64,
    /// Sync to disk (false only to see the cost of fsync itself).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) fsync: bool,
}

/// Bound on submitters, so a typo cannot spawn a million tasks.
const MAX_SUBMITTERS: usize = 4096;
/// Distinct payloads the submitters cycle through (cheap `Bytes` clones, no copy per append).
const DISTINCT_PAYLOADS: u64 = 64;

pub(crate) fn run(args: &WalArgs) -> Result<Vec<Outcome>> {
    if args
        .submitters
        .iter()
        .any(|&count| count == 0 || count > MAX_SUBMITTERS)
    {
        bail!("--submitters must be between 1 and {MAX_SUBMITTERS}");
    }
    if args.record_size == 0 || !(args.seconds.is_finite() && args.seconds > 0.0) {
        bail!("--record-size and --seconds must be positive");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the runtime")?;
    let pool = PayloadPool::new(args.record_size);
    let payloads: Vec<Bytes> = (0..DISTINCT_PAYLOADS)
        .map(|index| Bytes::copy_from_slice(pool.get(index)))
        .collect();
    let mut outcomes = Vec::new();
    for &submitters in &args.submitters {
        let scratch = tempfile::Builder::new()
            .prefix("loadgen-wal-")
            .tempdir_in(&args.dir)
            .with_context(|| format!("creating a scratch dir in {}", args.dir.display()))?;
        let mut options = WalOptions::new(scratch.path());
        options.fsync = args.fsync;
        let payloads = payloads.clone();
        let seconds = args.seconds;
        let meters = ProcessMeters::start(None)?;
        // Spawned so that a panic inside the wal crate becomes an error of this scenario.
        let measured = runtime.block_on(async move {
            tokio::spawn(measure(options, submitters, payloads, seconds)).await
        });
        let (appends, elapsed, latencies, stats) = match measured {
            Ok(result) => result?,
            Err(join_error) => {
                return Err(anyhow!("the wal benchmark task failed: {join_error}"));
            }
        };
        let bytes = appends * args.record_size as u64;
        let mut outcome = Outcome::new("wal", &format!("submitters={submitters}"));
        outcome.metric("mib_per_s", mib_per_s(bytes, elapsed));
        outcome.metric("records_per_s", appends as f64 / elapsed);
        outcome.metric("mib", bytes as f64 / MIB);
        if let Some(summary) = LatencySummary::from_samples(latencies) {
            summary.add_to("append", outcome.metrics_mut());
        }
        if stats.groups_committed > 0 {
            // How well group commit groups: records and bytes per write+fsync.
            let groups = stats.groups_committed as f64;
            outcome.metric("groups_per_s", groups / elapsed);
            outcome.metric("records_per_group", stats.records_committed as f64 / groups);
            outcome.metric(
                "kib_per_group",
                stats.bytes_committed as f64 / 1024.0 / groups,
            );
        }
        meters.finish(&mut outcome);
        outcome.info("record_size", args.record_size);
        outcome.info("fsync", args.fsync);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Runs `submitters` tasks appending until `seconds` have passed; returns the number of durable
/// appends, the elapsed seconds, every append's latency in nanoseconds and the wal's counters.
async fn measure(
    options: WalOptions,
    submitters: usize,
    payloads: Vec<Bytes>,
    seconds: f64,
) -> Result<(u64, f64, Vec<u64>, WalStats)> {
    let wal = Wal::open(options).context("opening the wal")?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::with_capacity(submitters);
    for submitter in 0..submitters {
        let wal = wal.clone();
        let payloads = payloads.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut index = submitter;
            while Instant::now() < deadline {
                let record = payloads[index % payloads.len()].clone();
                let append_started = Instant::now();
                wal.append(record).await?;
                latencies.push(append_started.elapsed().as_nanos() as u64);
                index += 1;
            }
            Ok::<_, wal::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let latencies = task
            .await
            .map_err(|error| anyhow!("a submitter failed: {error}"))?
            .context("append")?;
        all.extend(latencies);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = wal.stats();
    wal.close().await.context("closing the wal")?;
    Ok((all.len() as u64, elapsed, all, stats))
}
