//! `loadgen mock-broker`: librdkafka's in-memory mock cluster on a loopback port, with the same
//! ready-file contract as `sluice serve`. It checks the generator end to end without a Sluice broker,
//! and its figures are the client-side ceiling of this machine: what librdkafka and the generator
//! reach when the "broker" stores nothing and syncs nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use rdkafka::mocking::MockCluster;

#[derive(Args, Debug)]
pub(crate) struct MockArgs {
    /// Written as `{"kafka":"127.0.0.1:PORT"}` once the mock cluster listens.
    #[arg(long)]
    pub(crate) ready_file: PathBuf,
    /// Topics to create up front (the mock cluster does not implement CreateTopics).
    #[arg(long, value_delimiter = ',')]
    pub(crate) topics: Vec<String>,
    /// Partitions of each topic created up front.
    #[arg(long, default_value_t = 6)]
    pub(crate) partitions: i32,
    /// The mock cluster stops by itself after this long.
    #[arg(long, default_value_t = 600)]
    pub(crate) seconds: u64,
}

pub(crate) fn run(args: &MockArgs) -> Result<()> {
    let cluster = MockCluster::new(1).context("starting the mock cluster")?;
    for topic in &args.topics {
        cluster
            .create_topic(topic, args.partitions, 1)
            .with_context(|| format!("creating topic {topic}"))?;
    }
    let bootstrap = cluster.bootstrap_servers();
    let ready = serde_json::json!({ "kafka": bootstrap });
    // Written to a temporary name and renamed, so a reader never sees half a file.
    let partial = args.ready_file.with_extension("partial");
    std::fs::write(&partial, ready.to_string())
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &args.ready_file)
        .with_context(|| format!("renaming to {}", args.ready_file.display()))?;
    eprintln!("mock kafka listening on {bootstrap}");
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
