//! PUT / GET latency against s3s-fs on loopback through object_store, with the broker's own S3
//! client settings (`storage::objects`). A measurement for sizing the S3 WAL, not a test.
//!
//! `cargo run --release -p sluice-tests --example s3_latency [-- ROUNDS]` (s3s-fs must be installed;
//! scripts/test.sh does it). Prints p50/p90/p99/max per operation and object size, sequential, then
//! PUT throughput with several PUTs in flight, then the same small PUT through the fault proxy
//! (its overhead).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use futures::StreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use sluice_tests::fault_proxy::FaultProxy;
use sluice_tests::s3::S3Server;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().context("ROUNDS must be a number")?,
        None => 200,
    };
    let server = S3Server::start()?;
    let store = server.object_store("bench")?;
    println!(
        "s3s-fs {} on {}, {rounds} rounds per row, {} CPUs",
        sluice_tests::s3::S3S_FS_VERSION,
        server.endpoint(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Warm the connection pool and the server.
    for i in 0..10 {
        store
            .put(
                &Path::from(format!("warm/{i}")),
                Bytes::from(vec![0u8; 4 * KIB]).into(),
            )
            .await?;
    }

    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "operation", "p50 ms", "p90 ms", "p99 ms", "max ms", "MiB/s"
    );
    for size in [4 * KIB, 64 * KIB, MIB, 4 * MIB] {
        let payload = Bytes::from(vec![0x5a; size]);
        let keys: Vec<Path> = (0..rounds)
            .map(|i| Path::from(format!("seq/{size}/{i:06}")))
            .collect();
        let mut puts = Vec::with_capacity(rounds);
        for key in &keys {
            let started = Instant::now();
            store.put(key, payload.clone().into()).await?;
            puts.push(started.elapsed());
        }
        report(&format!("PUT {}", human(size)), &mut puts, size);

        let mut gets = Vec::with_capacity(rounds);
        for key in &keys {
            let started = Instant::now();
            let bytes = store.get(key).await?.bytes().await?;
            gets.push(started.elapsed());
            anyhow::ensure!(bytes.len() == size);
        }
        report(&format!("GET {}", human(size)), &mut gets, size);

        if size >= MIB {
            let range = 64 * KIB;
            let mut ranged = Vec::with_capacity(rounds);
            for (i, key) in keys.iter().enumerate() {
                let start = ((i * 7919 * KIB) % (size - range)) as u64;
                let started = Instant::now();
                let bytes = store.get_range(key, start..start + range as u64).await?;
                ranged.push(started.elapsed());
                anyhow::ensure!(bytes.len() == range);
            }
            report(
                &format!("GET 64 KiB range of {}", human(size)),
                &mut ranged,
                range,
            );
        }
    }

    for (size, in_flight) in [(MIB, 4), (4 * MIB, 4), (4 * MIB, 8)] {
        let payload = Bytes::from(vec![0x33; size]);
        let started = Instant::now();
        let latencies = concurrent_puts(&store, &payload, rounds, in_flight, size).await?;
        let elapsed = started.elapsed();
        let mut latencies = latencies;
        report(
            &format!("PUT {} x{in_flight} in flight", human(size)),
            &mut latencies,
            size,
        );
        println!(
            "    throughput {:.0} MiB/s, {:.0} PUT/s",
            (rounds * size) as f64 / MIB as f64 / elapsed.as_secs_f64(),
            rounds as f64 / elapsed.as_secs_f64()
        );
    }

    let proxy = FaultProxy::start(server.addr())?;
    let via_proxy = server.object_store_with("bench", &server.s3_options_via(&proxy.endpoint()))?;
    for size in [64 * KIB, MIB] {
        let payload = Bytes::from(vec![0x11; size]);
        let mut puts = Vec::with_capacity(rounds);
        for i in 0..rounds {
            let started = Instant::now();
            via_proxy
                .put(
                    &Path::from(format!("proxy/{size}/{i}")),
                    payload.clone().into(),
                )
                .await?;
            puts.push(started.elapsed());
        }
        report(&format!("PUT {} via proxy", human(size)), &mut puts, size);
        let mut gets = Vec::with_capacity(rounds);
        for i in 0..rounds {
            let started = Instant::now();
            via_proxy
                .get(&Path::from(format!("proxy/{size}/{i}")))
                .await?
                .bytes()
                .await?;
            gets.push(started.elapsed());
        }
        report(&format!("GET {} via proxy", human(size)), &mut gets, size);
    }
    let stats = proxy.stats();
    println!(
        "proxy counted {} PUTs, {} MiB of PUT bodies",
        stats.puts(),
        stats.put_bytes() / MIB as u64
    );
    Ok(())
}

async fn concurrent_puts(
    store: &Arc<dyn ObjectStore>,
    payload: &Bytes,
    rounds: usize,
    in_flight: usize,
    size: usize,
) -> Result<Vec<Duration>> {
    let results: Vec<Result<Duration>> = futures::stream::iter(0..rounds)
        .map(|i| {
            let store = store.clone();
            let payload = payload.clone();
            async move {
                let started = Instant::now();
                store
                    .put(
                        &Path::from(format!("par/{size}/{in_flight}/{i:06}")),
                        payload.into(),
                    )
                    .await?;
                Ok(started.elapsed())
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    results.into_iter().collect()
}

fn report(name: &str, latencies: &mut [Duration], bytes_each: usize) {
    latencies.sort();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1e3
    };
    let total: Duration = latencies.iter().sum();
    let mib_s = (bytes_each * latencies.len()) as f64 / MIB as f64 / total.as_secs_f64();
    println!(
        "{name:<28} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.0}",
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0),
        mib_s
    );
}

fn human(size: usize) -> String {
    if size >= MIB {
        format!("{} MiB", size / MIB)
    } else {
        format!("{} KiB", size / KIB)
    }
}
