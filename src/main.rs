//! `sluice` — the binary: wires metadata (openraft), storage (WAL + object store) and the Kafka
//! broker together. `sluice serve` with no flags runs a single node on 127.0.0.1:9092 with its data
//! under `./sluice-data`.

#[global_allocator]
static ALLOCATOR: alloc_guard::Guard = alloc_guard::Guard;

mod config;
mod groups_cli;
mod identity;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Kafka-compatible broker on object storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (controller + broker) until SIGINT/SIGTERM.
    Serve(Box<config::ServeArgs>),
    /// Inspect consumer groups: `groups list`, `groups describe GROUP` (with per-partition lag).
    Groups(groups_cli::GroupsArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(args) => {
            let config = config::ServeConfig::resolve(*args)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve::run(config))
        }
        Command::Groups(args) => groups_cli::run(args),
    }
}
