//! `loadgen disk-baseline`: what this machine's disk does on its own, measured in the same run as the
//! broker so the two can be set side by side:
//! - append + `fdatasync` per write, for several write sizes (the cost of one durable group commit of
//!   that size: the floor under produce latency, and with large writes the ceiling of durable produce
//!   throughput);
//! - a buffered sequential write with one `fdatasync` at the end (raw write bandwidth);
//! - sequential 1 MiB reads of that just-written file (mostly page cache, as a catch-up consumer of
//!   recently produced data would see).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::kafka::ProcessMeters;
use crate::payload::PayloadPool;
use crate::report::Outcome;
use crate::stats::LatencySummary;
use crate::units::{format_size, mib_per_s, parse_size};

#[derive(Args, Debug)]
pub(crate) struct DiskArgs {
    /// Directory for the scratch files (use the file system the broker's data dir is on).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub(crate) dir: PathBuf,
    /// Write sizes for append + fdatasync.
    #[arg(long, value_parser = parse_size, value_delimiter = ',', default_value = "1k,4k,16k,64k,1M")]
    pub(crate) sizes: Vec<u64>,
    /// Time bound per write size.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) seconds_per_size: f64,
    /// Byte bound per write size.
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    pub(crate) max_bytes_per_size: u64,
    /// Write sizes for overwrite + fdatasync in a preallocated (zero-filled, synced) file: no size or
    /// extent change per write, so fdatasync needs no file-system journal commit. Empty to skip.
    #[arg(long, value_parser = parse_size, value_delimiter = ',', default_value = "4k,16k")]
    pub(crate) prealloc_sizes: Vec<u64>,
    /// Size of the preallocated file (also the byte bound of those runs).
    #[arg(long, value_parser = parse_size, default_value = "64M")]
    pub(crate) prealloc_bytes: u64,
    /// Size of the buffered sequential write / read file.
    #[arg(long, value_parser = parse_size, default_value = "512M")]
    pub(crate) seq_bytes: u64,
    /// Label stored with the result.
    #[arg(long, default_value = "")]
    pub(crate) label: String,
}

/// Largest write size accepted, so a typo cannot allocate gigabytes.
const MAX_WRITE_SIZE: u64 = 64 << 20;
const SEQ_CHUNK: usize = 1 << 20;

pub(crate) fn run(args: &DiskArgs) -> Result<Outcome> {
    if args
        .sizes
        .iter()
        .any(|&size| size == 0 || size > MAX_WRITE_SIZE)
    {
        bail!(
            "write sizes must be between 1 byte and {}",
            format_size(MAX_WRITE_SIZE)
        );
    }
    if !(args.seconds_per_size.is_finite() && args.seconds_per_size > 0.0) {
        bail!("--seconds-per-size must be positive");
    }
    let scratch = tempfile::Builder::new()
        .prefix("loadgen-disk-")
        .tempdir_in(&args.dir)
        .with_context(|| format!("creating a scratch dir in {}", args.dir.display()))?;
    let mut outcome = Outcome::new("disk-baseline", &args.label);
    let meters = ProcessMeters::start(None)?;
    for &size in &args.sizes {
        let path = scratch.path().join(format!("fdatasync-{size}"));
        let (bytes, seconds, latencies) = append_fdatasync(
            &path,
            size as usize,
            Duration::from_secs_f64(args.seconds_per_size),
            args.max_bytes_per_size,
        )?;
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        let name = format!("fdatasync_{}", format_size(size));
        let writes = latencies.len();
        outcome.metric(&format!("{name}_mib_per_s"), mib_per_s(bytes, seconds));
        outcome.metric(&format!("{name}_ops_per_s"), writes as f64 / seconds);
        if let Some(summary) = LatencySummary::from_samples(latencies) {
            summary.add_to(&name, outcome.metrics_mut());
        }
    }
    for &size in &args.prealloc_sizes {
        let path = scratch.path().join(format!("prealloc-{size}"));
        sequential_write(&path, args.prealloc_bytes.max(size))?;
        let (bytes, seconds, latencies) = overwrite_fdatasync(
            &path,
            size as usize,
            Duration::from_secs_f64(args.seconds_per_size),
        )?;
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        let name = format!("fdatasync_prealloc_{}", format_size(size));
        outcome.metric(&format!("{name}_mib_per_s"), mib_per_s(bytes, seconds));
        outcome.metric(
            &format!("{name}_ops_per_s"),
            latencies.len() as f64 / seconds,
        );
        if let Some(summary) = LatencySummary::from_samples(latencies) {
            summary.add_to(&name, outcome.metrics_mut());
        }
    }
    if args.seq_bytes > 0 {
        let path = scratch.path().join("sequential");
        let write_seconds = sequential_write(&path, args.seq_bytes)?;
        outcome.metric(
            "seq_write_mib_per_s",
            mib_per_s(args.seq_bytes, write_seconds),
        );
        let (read_bytes, read_seconds) = sequential_read(&path)?;
        outcome.metric("seq_read_mib_per_s", mib_per_s(read_bytes, read_seconds));
    }
    meters.finish(&mut outcome);
    outcome.info("dir", args.dir.display().to_string());
    outcome.info("seq_bytes", format_size(args.seq_bytes));
    Ok(outcome)
}

/// Appends `size`-byte writes, each followed by `fdatasync`, until the time or byte bound; returns
/// bytes written, elapsed seconds and the latency of each write+sync in nanoseconds.
fn append_fdatasync(
    path: &Path,
    size: usize,
    time_bound: Duration,
    byte_bound: u64,
) -> Result<(u64, f64, Vec<u64>)> {
    let pool = PayloadPool::new(size);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut latencies = Vec::new();
    let mut written: u64 = 0;
    let started = Instant::now();
    let mut index: u64 = 0;
    while started.elapsed() < time_bound && written + size as u64 <= byte_bound.max(size as u64) {
        let write_started = Instant::now();
        file.write_all(pool.get(index)).context("append")?;
        file.sync_data().context("fdatasync")?;
        latencies.push(write_started.elapsed().as_nanos() as u64);
        written += size as u64;
        index += 1;
    }
    Ok((written, started.elapsed().as_secs_f64(), latencies))
}

/// Overwrites an existing file from its start with `size`-byte writes, each followed by `fdatasync`,
/// until the time bound or the end of the file; same results as [`append_fdatasync`].
fn overwrite_fdatasync(
    path: &Path,
    size: usize,
    time_bound: Duration,
) -> Result<(u64, f64, Vec<u64>)> {
    let pool = PayloadPool::new(size);
    let length = std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut latencies = Vec::new();
    let mut written: u64 = 0;
    let started = Instant::now();
    let mut index: u64 = 0;
    while started.elapsed() < time_bound && written + size as u64 <= length {
        let write_started = Instant::now();
        file.write_all(pool.get(index)).context("overwrite")?;
        file.sync_data().context("fdatasync")?;
        latencies.push(write_started.elapsed().as_nanos() as u64);
        written += size as u64;
        index += 1;
    }
    Ok((written, started.elapsed().as_secs_f64(), latencies))
}

/// Writes `bytes` in 1 MiB chunks through the page cache, then one `fdatasync`; returns seconds.
fn sequential_write(path: &Path, bytes: u64) -> Result<f64> {
    let pool = PayloadPool::new(SEQ_CHUNK);
    let mut file =
        File::create_new(path).with_context(|| format!("creating {}", path.display()))?;
    let started = Instant::now();
    let mut remaining = bytes;
    let mut index: u64 = 0;
    while remaining > 0 {
        let chunk = remaining.min(SEQ_CHUNK as u64) as usize;
        file.write_all(&pool.get(index)[..chunk]).context("write")?;
        remaining -= chunk as u64;
        index += 1;
    }
    file.sync_data().context("fdatasync")?;
    Ok(started.elapsed().as_secs_f64())
}

/// Reads the whole file in 1 MiB reads; returns bytes read and seconds.
fn sequential_read(path: &Path) -> Result<(u64, f64)> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buffer = vec![0u8; SEQ_CHUNK];
    let started = Instant::now();
    let mut total: u64 = 0;
    loop {
        let read = file.read(&mut buffer).context("read")?;
        if read == 0 {
            break;
        }
        total += read as u64;
    }
    Ok((total, started.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_baseline_run_reports_every_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = DiskArgs {
            dir: dir.path().to_path_buf(),
            sizes: vec![4096, 16 << 10],
            prealloc_sizes: vec![4096],
            prealloc_bytes: 1 << 20,
            seconds_per_size: 0.05,
            max_bytes_per_size: 1 << 20,
            seq_bytes: 3 << 20,
            label: String::new(),
        };
        let outcome = run(&args).expect("baseline runs");
        let json = format!("{outcome:?}");
        for metric in [
            "fdatasync_4k_mib_per_s",
            "fdatasync_4k_p99_ms",
            "fdatasync_16k_ops_per_s",
            "fdatasync_prealloc_4k_p99_ms",
            "seq_write_mib_per_s",
            "seq_read_mib_per_s",
        ] {
            assert!(json.contains(metric), "{metric} missing from {json}");
        }
        // The scratch directory is removed afterwards.
        let leftovers = std::fs::read_dir(dir.path()).expect("read dir").count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn sequential_read_returns_what_was_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("file");
        sequential_write(&path, (2 << 20) + 5).expect("write");
        let (bytes, _) = sequential_read(&path).expect("read");
        assert_eq!(bytes, (2 << 20) + 5);
    }

    #[test]
    fn byte_bound_stops_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bounded");
        let (bytes, _, latencies) =
            append_fdatasync(&path, 4096, Duration::from_secs(10), 5 * 4096).expect("appends");
        assert_eq!(bytes, 5 * 4096);
        assert_eq!(latencies.len(), 5);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 5 * 4096);
    }

    #[test]
    fn overwrite_stays_inside_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("prealloc");
        sequential_write(&path, 3 * 4096).expect("preallocate");
        let (bytes, _, latencies) =
            overwrite_fdatasync(&path, 4096, Duration::from_secs(10)).expect("overwrites");
        assert_eq!(bytes, 3 * 4096);
        assert_eq!(latencies.len(), 3);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 3 * 4096);
    }

    #[test]
    fn rejects_absurd_sizes() {
        let args = DiskArgs {
            dir: std::env::temp_dir(),
            sizes: vec![1 << 30],
            prealloc_sizes: Vec::new(),
            prealloc_bytes: 1 << 20,
            seconds_per_size: 1.0,
            max_bytes_per_size: 1 << 20,
            seq_bytes: 0,
            label: String::new(),
        };
        assert!(run(&args).is_err());
    }
}
