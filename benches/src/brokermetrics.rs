//! The broker's own counters around a scenario: `/metrics` (Prometheus text) of its HTTP listener is
//! scraped before and after, and the differences become result metrics — S3 WAL PUTs per second and
//! bytes per PUT, metadata commits, GETs and block-cache hits/misses of catch-up reads.
//!
//! The scrape is a plain HTTP/1.0 GET over a loopback TCP connection (no HTTP client dependency);
//! counters with labels are summed over their label sets.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::report::Outcome;
use crate::units::MIB;

/// Bound on connecting to and reading `/metrics`.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `/metrics` body read (the broker's is a few tens of KiB).
const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// The S3 WAL's default flush threshold: the "one PUT per 4 MiB" is measured against it.
const FLUSH_BYTES: f64 = 4.0 * MIB;

/// Counter name → value, summed over label sets.
pub(crate) type Counters = BTreeMap<String, f64>;

/// Fetches `http://{addr}/metrics` and parses its samples.
pub(crate) fn scrape(addr: &str) -> Result<Counters> {
    let socket = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&socket, SCRAPE_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .context("sending the /metrics request")?;
    let mut response = Vec::new();
    stream
        .take(MAX_BODY_BYTES)
        .read_to_end(&mut response)
        .context("reading /metrics")?;
    let text = String::from_utf8_lossy(&response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("/metrics answer has no header end");
    };
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200") {
        bail!("/metrics answered {status:?}");
    }
    Ok(parse(body))
}

/// Parses Prometheus text: `name{labels} value [timestamp]` lines; comments and junk are skipped.
pub(crate) fn parse(text: &str) -> Counters {
    let mut counters = Counters::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Labels may hold spaces inside quotes: the name ends at '{' or whitespace, the value
        // follows the closing '}' (if any).
        let (name, rest) = match line.find('{') {
            Some(open) => match line.rfind('}') {
                Some(close) if close > open => (&line[..open], &line[close + 1..]),
                _ => continue,
            },
            None => match line.split_once(char::is_whitespace) {
                Some((name, rest)) => (name, rest),
                None => continue,
            },
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|value| value.parse::<f64>().ok())
        else {
            continue;
        };
        *counters.entry(name.to_string()).or_insert(0.0) += value;
    }
    counters
}

/// A scrape taken at the start of a scenario.
pub(crate) struct MetricsMeter {
    addr: String,
    before: Counters,
    started: Instant,
    linger_ms: f64,
}

impl MetricsMeter {
    /// Scrapes `addr` now. `linger_ms` is the broker's `--wal-linger-ms`, for the PUT-rate bound.
    pub(crate) fn start(addr: &str, linger_ms: f64) -> Result<MetricsMeter> {
        Ok(MetricsMeter {
            addr: addr.to_string(),
            before: scrape(addr)?,
            started: Instant::now(),
            linger_ms,
        })
    }

    /// Scrapes again and adds the differences (see [`add_deltas`]).
    pub(crate) fn finish(&self, outcome: &mut Outcome) {
        let seconds = self.started.elapsed().as_secs_f64();
        match scrape(&self.addr) {
            Ok(after) => add_deltas(outcome, &self.before, &after, seconds, self.linger_ms),
            Err(error) => eprintln!("loadgen: scraping {}: {error:#}", self.addr),
        }
    }
}

/// Adds what the broker did between two scrapes `seconds` apart:
/// - `wal_puts`, `wal_puts_per_s`, `wal_bytes_per_put_mib` (and `_kib`), `wal_put_mib_per_s`,
///   `wal_put_retries`, `wal_commits_per_s` (S3 WAL only: the counters exist only there), and
///   `wal_linger_ms` (the broker's linger as given, for the ack-latency target);
/// - `wal_put_rate_bound_per_s` = max(WAL bytes/s ÷ 4 MiB, 1000 ÷ linger_ms) — the issue's "at most
///   one PUT per 4 MiB or per linger window" — and `wal_put_rate_vs_bound` (≤ 1 means met);
/// - `object_gets`, `object_get_mib`, `object_get_mib_per_s`, `block_cache_hits`,
///   `block_cache_misses`.
pub(crate) fn add_deltas(
    outcome: &mut Outcome,
    before: &Counters,
    after: &Counters,
    seconds: f64,
    linger_ms: f64,
) {
    let delta = |name: &str| -> Option<f64> {
        let end = after.get(name)?;
        Some((end - before.get(name).copied().unwrap_or(0.0)).max(0.0))
    };
    if seconds <= 0.0 {
        return;
    }
    if let (Some(puts), Some(bytes)) = (
        delta("wal_objects_written_total"),
        delta("wal_object_bytes_total"),
    ) {
        outcome.metric("wal_puts", puts);
        outcome.metric("wal_linger_ms", linger_ms);
        outcome.metric("wal_puts_per_s", puts / seconds);
        outcome.metric("wal_put_mib_per_s", bytes / MIB / seconds);
        if puts > 0.0 {
            outcome.metric("wal_bytes_per_put_mib", bytes / MIB / puts);
            // Small objects (a low rate and a short linger) read better in KiB.
            outcome.metric("wal_bytes_per_put_kib", bytes / 1024.0 / puts);
        }
        let by_size = bytes / FLUSH_BYTES / seconds;
        let by_linger = if linger_ms > 0.0 {
            1000.0 / linger_ms
        } else {
            f64::INFINITY
        };
        let bound = by_size.max(by_linger);
        if bound.is_finite() {
            outcome.metric("wal_put_rate_bound_per_s", bound);
            outcome.metric("wal_put_rate_vs_bound", puts / seconds / bound);
        }
    }
    if let Some(retries) = delta("wal_object_put_retries_total") {
        outcome.metric("wal_put_retries", retries);
    }
    if let Some(commits) = delta("wal_object_commits_total") {
        outcome.metric("wal_commits_per_s", commits / seconds);
    }
    if let Some(gets) = delta("object_gets_total") {
        outcome.metric("object_gets", gets);
    }
    if let Some(bytes) = delta("object_get_bytes_total") {
        outcome.metric("object_get_mib", bytes / MIB);
        outcome.metric("object_get_mib_per_s", bytes / MIB / seconds);
    }
    for (counter, metric) in [
        ("block_cache_hits_total", "block_cache_hits"),
        ("block_cache_misses_total", "block_cache_misses"),
    ] {
        if let Some(value) = delta(counter) {
            outcome.metric(metric, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_is_summed_over_labels() {
        let text = "# HELP wal_objects_written_total x\n\
                    # TYPE wal_objects_written_total counter\n\
                    wal_objects_written_total 12\n\
                    kafka_requests_total{api=\"Produce\",version=\"9\"} 3\n\
                    kafka_requests_total{api=\"Fetch, x\"} 4 1700000000\n\
                    broken_line\n\
                    bad_value abc\n";
        let counters = parse(text);
        assert_eq!(counters.get("wal_objects_written_total"), Some(&12.0));
        assert_eq!(counters.get("kafka_requests_total"), Some(&7.0));
        assert!(!counters.contains_key("broken_line"));
        assert!(!counters.contains_key("bad_value"));
    }

    #[test]
    fn put_rate_is_checked_against_size_and_linger() {
        let before = parse("wal_objects_written_total 10\nwal_object_bytes_total 0\n");
        // 10 s, 400 PUTs of 200 MiB in all: 40 PUTs/s; bound max(20/4, 1000/5) = 200/s.
        let after = parse(&format!(
            "wal_objects_written_total 410\nwal_object_bytes_total {}\n",
            200.0 * MIB
        ));
        let mut outcome = Outcome::new("latency", "s3");
        add_deltas(&mut outcome, &before, &after, 10.0, 5.0);
        assert_eq!(outcome.get("wal_puts"), Some(400.0));
        assert_eq!(outcome.get("wal_puts_per_s"), Some(40.0));
        assert_eq!(outcome.get("wal_put_rate_bound_per_s"), Some(200.0));
        assert_eq!(outcome.get("wal_put_rate_vs_bound"), Some(0.2));
        assert_eq!(outcome.get("wal_bytes_per_put_mib"), Some(0.5));
        assert_eq!(outcome.get("wal_bytes_per_put_kib"), Some(512.0));
        // A file-WAL broker has no S3 WAL counters: nothing is made up.
        let mut file = Outcome::new("latency", "file");
        add_deltas(&mut file, &Counters::new(), &Counters::new(), 10.0, 5.0);
        assert_eq!(file.get("wal_puts"), None);
    }
}
