//! `loadgen` — Sluice's benchmark load generator.
//!
//! Each subcommand runs one bounded scenario and prints one JSON result line per measurement on stdout
//! (a readable summary goes to stderr); `loadgen report` turns a file of such lines from several runs
//! into medians, ratios against the targets and ratios against the baselines of the same run.
//! `benches/run.sh` drives the whole suite against a `sluice serve` it starts itself.
//!
//! Kafka scenarios (`produce`, `latency`, `consume`, `tail-during-catchup`) use librdkafka through the `rdkafka` crate, as a
//! real client would. Baselines (`disk-baseline`, `wal`) need no broker; `s3-put` needs only an S3
//! endpoint.

mod brokermetrics;
mod consume;
mod disk;
mod kafka;
mod latency;
mod mock;
mod payload;
mod procstat;
mod produce;
mod report;
mod s3put;
#[cfg(test)]
mod scenario_tests;
mod stats;
mod tailcatchup;
mod units;
mod walbench;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::report::Outcome;

#[derive(Parser, Debug)]
#[command(name = "loadgen", about = "Sluice benchmark load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Closed-loop produce throughput (acks=all by default).
    Produce(produce::ProduceArgs),
    /// Open-loop produce latency at a fixed rate (linger.ms=0 by default).
    Latency(latency::LatencyArgs),
    /// Catch-up consume throughput from the start of a topic.
    Consume(consume::ConsumeArgs),
    /// Tail-produce latency alone, then while a catch-up read of another topic runs.
    TailDuringCatchup(tailcatchup::TailCatchupArgs),
    /// Time of one create-if-absent PUT to an S3 endpoint, one at a time (the S3 WAL's "one PUT").
    S3Put(s3put::S3PutArgs),
    /// Raw disk baseline: append+fdatasync per size, sequential write and read.
    DiskBaseline(disk::DiskArgs),
    /// Group-commit throughput of the `wal` crate with N concurrent submitters.
    Wal(walbench::WalArgs),
    /// Peak (VmHWM) and current RSS of a process, as a `broker-rss` result.
    Rss {
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Waits for a broker's ready file and prints its Kafka address.
    WaitReady {
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
        /// Fail early if this process exits while waiting.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Medians and ratios of a file of result lines, as markdown.
    Report(report::ReportArgs),
    /// Prints the machine description used in reports.
    Machine,
    /// librdkafka's in-memory mock broker (smoke tests; the client-side ceiling).
    MockBroker(mock::MockArgs),
}

fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli.command) {
        eprintln!("loadgen: error: {error:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Produce(args) => produce::run(&args)?.emit(),
        Command::Latency(args) => latency::run(&args)?.emit(),
        Command::Consume(args) => consume::run(&args)?.emit(),
        Command::TailDuringCatchup(args) => {
            for outcome in tailcatchup::run(&args)? {
                outcome.emit();
            }
        }
        Command::S3Put(args) => s3put::run(&args)?.emit(),
        Command::DiskBaseline(args) => disk::run(&args)?.emit(),
        Command::Wal(args) => {
            for outcome in walbench::run(&args)? {
                outcome.emit();
            }
        }
        Command::Rss { pid, label } => {
            let memory = procstat::read_memory(pid)?;
            let mut outcome = Outcome::new("broker-rss", &label);
            outcome.metric("peak_rss_mib", memory.peak_rss_mib());
            outcome.metric("rss_mib", memory.rss_mib());
            outcome.emit();
        }
        Command::WaitReady {
            file,
            timeout_secs,
            pid,
        } => println!(
            "{}",
            wait_ready(&file, Duration::from_secs(timeout_secs), pid)?
        ),
        Command::Report(args) => report::run(&args)?,
        Command::Machine => println!("{}", report::machine_description()),
        Command::MockBroker(args) => mock::run(&args)?,
    }
    Ok(())
}

/// Polls the broker's ready file until it holds JSON with a `kafka` address.
fn wait_ready(file: &PathBuf, timeout: Duration, pid: Option<u32>) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(file) {
            // The file may be caught half-written; only a complete JSON document counts.
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
                let address = value
                    .get("kafka")
                    .and_then(serde_json::Value::as_str)
                    .with_context(|| {
                        format!("{} has no \"kafka\" address: {text}", file.display())
                    })?;
                return Ok(address.to_string());
            }
        }
        if let Some(pid) = pid {
            if !procstat::is_alive(pid) {
                bail!("process {pid} exited before writing {}", file.display());
            }
        }
        if Instant::now() >= deadline {
            bail!("{} not written within {timeout:?}", file.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
