//! `loadgen s3-put`: the time of one create-if-absent PUT against an S3 endpoint, measured with the
//! broker's own object store client (`storage::objects`, same retry and timeout settings) — the
//! "one PUT" of the S3-WAL latency target (p50 ≤ linger + one PUT + 2 ms).
//!
//! PUTs run one at a time (the broker's ack waits on one PUT of its lane), each to a fresh key under
//! `{prefix}/loadgen-put/`, with `PutMode::Create` like the WAL's objects. Bounded by `--count` and
//! `--seconds`. Credentials come from the environment (`AWS_ACCESS_KEY_ID`, …) as for the broker.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use object_store::path::Path as ObjectPath;
use object_store::{PutMode, PutOptions, PutPayload};

use crate::report::Outcome;
use crate::stats::LatencySummary;

#[derive(Args, Debug, Clone)]
pub(crate) struct S3PutArgs {
    /// Bucket and key prefix, as the broker's `--object-store` (`s3://bucket[/prefix]`).
    #[arg(long)]
    pub(crate) url: String,
    /// S3 endpoint (`http://127.0.0.1:PORT` for a loopback s3s-fs).
    #[arg(long)]
    pub(crate) endpoint: String,
    #[arg(long, default_value = "us-east-1")]
    pub(crate) region: String,
    /// Bytes per object.
    #[arg(long, default_value_t = 16 * 1024)]
    pub(crate) size_bytes: usize,
    /// Measured PUTs (after `--warmup`).
    #[arg(long, default_value_t = 200)]
    pub(crate) count: usize,
    /// PUTs made first and not measured (connection set-up).
    #[arg(long, default_value_t = 5)]
    pub(crate) warmup: usize,
    /// Bound on the whole run; fewer PUTs are measured if it runs out.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) seconds: f64,
    #[arg(long, default_value = "")]
    pub(crate) label: String,
}

pub(crate) fn run(args: &S3PutArgs) -> Result<Outcome> {
    if args.size_bytes == 0 || args.count == 0 {
        bail!("--size-bytes and --count must be positive");
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        bail!("--seconds must be positive");
    }
    let options = storage::objects::S3Options {
        endpoint: Some(args.endpoint.clone()),
        region: Some(args.region.clone()),
        ..Default::default()
    };
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let store = storage::objects::object_store_from_url(&args.url, scratch.path(), &options)
        .with_context(|| format!("opening {}", args.url))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a tokio runtime")?;
    // Distinct keys per run, so that a rerun against the same bucket creates rather than conflicts.
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let body = Bytes::from(vec![0x5a; args.size_bytes]);
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let mut samples = Vec::with_capacity(args.count);
    let started = Instant::now();
    runtime.block_on(async {
        for index in 0..args.warmup + args.count {
            if Instant::now() >= deadline {
                break;
            }
            let path = ObjectPath::from(format!("loadgen-put/{run_id}/{index:08}"));
            let put_options = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            let begin = Instant::now();
            store
                .put_opts(&path, PutPayload::from_bytes(body.clone()), put_options)
                .await
                .with_context(|| format!("PUT {path}"))?;
            if index >= args.warmup {
                samples.push(begin.elapsed().as_nanos() as u64);
            }
        }
        anyhow::Ok(())
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let measured = samples.len();
    let summary = LatencySummary::from_samples(samples).context("no PUT was measured")?;
    let mut outcome = Outcome::new("s3-put", &args.label);
    summary.add_to("put", outcome.metrics_mut());
    outcome.metric("puts", measured as f64);
    outcome.metric("size_kib", args.size_bytes as f64 / 1024.0);
    outcome.metric("puts_per_s", (measured + args.warmup) as f64 / elapsed);
    outcome.info("url", args.url.as_str());
    outcome.info("size_bytes", args.size_bytes);
    Ok(outcome)
}
