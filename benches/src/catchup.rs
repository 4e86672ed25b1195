//! `catchup` — cold catch-up read throughput of the storage read path (segment reader + block cache).
//!
//! Writes one segment object into an object store, then reads it from the first offset to the end
//! the way the fetch path does (`SegmentReader::read` with a per-partition byte budget, one call after
//! the other), each run with a fresh reader so every byte is a cold read. The store is in memory with
//! an injected per-GET latency (s3s-fs and real S3 have a floor of tens of milliseconds per request,
//! which is what read-ahead and parallel GETs are for), or any object store URL (e.g. s3s-fs).
//! Prints one JSON line per configuration with the median MB/s of `--runs` runs.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use storage::block_cache::BlockCacheOptions;
use storage::segment::SegmentBuilder;
use storage::segment_reader::SegmentReader;

#[derive(Parser, Debug)]
#[command(
    name = "catchup",
    about = "Cold catch-up read MB/s through the block cache"
)]
struct Cli {
    /// Segment size in MiB.
    #[arg(long, default_value_t = 128)]
    segment_mib: u64,
    /// Record batch size in KiB.
    #[arg(long, default_value_t = 64)]
    batch_kib: usize,
    /// Injected latency per GET, in ms (in-memory store only).
    #[arg(long, default_value_t = 40)]
    get_latency_ms: u64,
    /// Bytes one read may return (a fetch's per-partition budget), in KiB.
    #[arg(long, default_value_t = 1024)]
    fetch_kib: usize,
    /// Read-ahead settings to compare (blocks).
    #[arg(long, value_delimiter = ',', default_value = "0,4,8,16")]
    read_ahead: Vec<usize>,
    /// Block sizes to compare, in KiB.
    #[arg(long, value_delimiter = ',', default_value = "1024")]
    block_kib: Vec<u64>,
    /// GETs in flight at most.
    #[arg(long, default_value_t = 16)]
    max_gets: usize,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// An object store URL instead of the in-memory store (e.g. s3://bucket/prefix; S3 settings from
    /// the AWS_* environment, AWS_ENDPOINT for a local server).
    #[arg(long)]
    store: Option<String>,
}

/// Adds a fixed delay to every GET and counts them.
#[derive(Debug)]
struct LatencyStore {
    inner: Arc<dyn ObjectStore>,
    latency: Duration,
    gets: AtomicU64,
}

impl fmt::Display for LatencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LatencyStore({:?}, {})", self.latency, self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for LatencyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.latency).await;
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A record batch header (v2) with `payload` filler bytes: the read path never decodes records.
fn batch(base_offset: i64, count: i32, payload: usize) -> Bytes {
    const HEADER_LEN: usize = 61;
    let mut buf = BytesMut::with_capacity(HEADER_LEN + payload);
    buf.put_i64(base_offset);
    buf.put_i32((HEADER_LEN + payload - 12) as i32);
    buf.put_i32(0);
    buf.put_i8(2);
    buf.put_u32(0);
    buf.put_i16(0);
    buf.put_i32(count - 1);
    buf.put_i64(1_000);
    buf.put_i64(1_000);
    buf.put_i64(-1);
    buf.put_i16(-1);
    buf.put_i32(-1);
    buf.put_i32(count);
    buf.put_bytes(0xab, payload);
    buf.freeze()
}

async fn put_segment(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    cli: &Cli,
) -> Result<metadata::SegmentRef> {
    let mut builder = SegmentBuilder::new();
    let batch_bytes = cli.batch_kib * 1024;
    let count = (cli.segment_mib * 1024 * 1024) as usize / batch_bytes;
    for i in 0..count {
        builder.push(batch(i as i64 * 100, 100, batch_bytes - 61))?;
    }
    let built = builder.finish().context("empty segment")?;
    let payload: PutPayload = built.chunks.iter().cloned().collect();
    store.put(&Path::from(key), payload).await?;
    Ok(metadata::SegmentRef {
        key: key.to_string(),
        base_offset: 0,
        end_offset: built.footer.end_offset,
        data_start: 0,
        data_len: built.data_len,
        min_timestamp: built.min_timestamp,
        max_timestamp: built.max_timestamp,
        created_ms: 0,
        footer_len: 0,
        producer_batches: false,
    })
}

/// Reads the whole segment with a fresh (cold) reader; returns MB/s and GETs issued.
async fn catch_up(
    store: &Arc<dyn ObjectStore>,
    seg: &metadata::SegmentRef,
    opts: BlockCacheOptions,
    fetch_bytes: usize,
) -> Result<(f64, u64)> {
    let reader = SegmentReader::new(store.clone(), opts);
    let started = Instant::now();
    let mut next = seg.base_offset;
    let mut bytes = 0u64;
    let max_reads = seg.data_len as usize / 61 + 2;
    for _ in 0..max_reads {
        if next >= seg.end_offset {
            break;
        }
        let got = reader
            .read(seg, next, seg.end_offset, fetch_bytes, true)
            .await?;
        let (last, _) = got.last().context("empty read before the end")?;
        next = last.last_offset() + 1;
        bytes += got.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
    }
    anyhow::ensure!(next >= seg.end_offset, "read did not reach the end");
    let secs = started.elapsed().as_secs_f64();
    Ok((bytes as f64 / 1e6 / secs, reader.stats().gets))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let store: Arc<dyn ObjectStore> = match &cli.store {
        Some(url) => storage::objects::object_store_from_url(
            url,
            std::path::Path::new("."),
            &storage::objects::S3Options::default(),
        )?,
        None => Arc::new(LatencyStore {
            inner: Arc::new(InMemory::new()),
            latency: Duration::from_millis(cli.get_latency_ms),
            gets: AtomicU64::new(0),
        }),
    };
    let key = format!("catchup-bench/{:016x}.seg", rand_key());
    let seg = put_segment(&store, &key, &cli).await?;
    for &block_kib in &cli.block_kib {
        for &read_ahead in &cli.read_ahead {
            let opts = BlockCacheOptions {
                capacity_bytes: 64 * 1024 * 1024,
                block_size: block_kib * 1024,
                read_ahead_blocks: read_ahead,
                max_concurrent_gets: cli.max_gets,
            };
            let mut rates = Vec::new();
            let mut gets = 0;
            for _ in 0..cli.runs {
                let (rate, run_gets) =
                    catch_up(&store, &seg, opts.clone(), cli.fetch_kib * 1024).await?;
                rates.push(rate);
                gets = run_gets;
            }
            let line = serde_json::json!({
                "scenario": "catchup-read",
                "store": cli.store.as_deref().unwrap_or("memory+latency"),
                "get_latency_ms": if cli.store.is_some() { None } else { Some(cli.get_latency_ms) },
                "segment_mib": cli.segment_mib,
                "block_kib": block_kib,
                "read_ahead_blocks": read_ahead,
                "max_gets": cli.max_gets,
                "fetch_kib": cli.fetch_kib,
                "gets_per_run": gets,
                "runs_mb_s": rates.iter().map(|r| (r * 10.0).round() / 10.0).collect::<Vec<_>>(),
                "median_mb_s": (median(rates) * 10.0).round() / 10.0,
            });
            println!("{line}");
        }
    }
    store.delete(&Path::from(key)).await?;
    Ok(())
}

/// A per-run key suffix, so runs against a shared bucket never collide.
fn rand_key() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ u64::from(std::process::id()) << 32
}
