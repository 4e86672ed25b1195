//! Results: every scenario emits one JSON line ([`Outcome`]) on stdout; `loadgen report` reads a file
//! of such lines from several runs and prints markdown tables of medians, ratios against the issue's
//! targets and ratios against the baselines measured in the same run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use serde_json::{json, Map, Value};

use crate::stats::median;

/// The result of one run of one scenario.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    scenario: String,
    label: String,
    metrics: BTreeMap<String, f64>,
    info: Map<String, Value>,
}

impl Outcome {
    pub(crate) fn new(scenario: &str, label: &str) -> Outcome {
        Outcome {
            scenario: scenario.to_string(),
            label: label.to_string(),
            metrics: BTreeMap::new(),
            info: Map::new(),
        }
    }

    pub(crate) fn metric(&mut self, name: &str, value: f64) {
        self.metrics.insert(name.to_string(), value);
    }

    #[cfg(test)]
    pub(crate) fn get(&self, name: &str) -> Option<f64> {
        self.metric_value(name)
    }

    pub(crate) fn metric_value(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).copied()
    }

    pub(crate) fn metrics_mut(&mut self) -> &mut BTreeMap<String, f64> {
        &mut self.metrics
    }

    pub(crate) fn info(&mut self, name: &str, value: impl Into<Value>) {
        self.info.insert(name.to_string(), value.into());
    }

    fn to_json(&self) -> Value {
        // JSON has no NaN/inf: a non-finite metric is left out rather than written as null.
        let metrics: Map<String, Value> = self
            .metrics
            .iter()
            .filter(|(_, value)| value.is_finite())
            .map(|(name, &value)| (name.clone(), json!(value)))
            .collect();
        json!({
            "scenario": self.scenario,
            "label": self.label,
            "metrics": metrics,
            "info": self.info,
        })
    }

    /// Writes the JSON line to stdout (for the result file) and a readable summary to stderr.
    pub(crate) fn emit(&self) {
        println!("{}", self.to_json());
        let mut summary = format!("[{}", self.scenario);
        if !self.label.is_empty() {
            let _ = write!(summary, " {}", self.label);
        }
        summary.push(']');
        for (name, value) in &self.metrics {
            let _ = write!(summary, " {name}={value:.3}");
        }
        eprintln!("{summary}");
    }
}

#[derive(Args, Debug)]
pub(crate) struct ReportArgs {
    /// File of JSON result lines (the stdout of the scenario runs).
    #[arg(long)]
    pub(crate) input: PathBuf,
}

/// All samples of a result file: (scenario, label) → metric → one value per run.
type Samples = BTreeMap<(String, String), BTreeMap<String, Vec<f64>>>;

pub(crate) fn run(args: &ReportArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let samples = parse_results(&text)?;
    print!("{}", render(&samples, &machine_description()));
    Ok(())
}

fn parse_results(text: &str) -> Result<Samples> {
    let mut samples = Samples::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("result line {} is not JSON", index + 1))?;
        let field = |name: &str| -> Result<String> {
            value
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| anyhow!("result line {} has no string {name:?}", index + 1))
        };
        let key = (field("scenario")?, field("label")?);
        let metrics = value
            .get("metrics")
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow!("result line {} has no metrics object", index + 1))?;
        let entry = samples.entry(key).or_default();
        for (name, metric) in metrics {
            if let Some(number) = metric.as_f64().filter(|number| number.is_finite()) {
                entry.entry(name.clone()).or_default().push(number);
            }
        }
    }
    Ok(samples)
}

fn sample_median(samples: &Samples, scenario: &str, label: &str, metric: &str) -> Option<f64> {
    samples
        .get(&(scenario.to_string(), label.to_string()))
        .and_then(|metrics| metrics.get(metric))
        .and_then(|values| median(values))
}

/// The run furthest from the target's goal (lowest for "at least", highest for "at most").
fn sample_worst(samples: &Samples, target: &Target) -> Option<f64> {
    let values = samples
        .get(&(target.scenario.to_string(), target.label.to_string()))?
        .get(target.metric)?;
    match target.goal {
        Goal::AtLeast => values.iter().copied().reduce(f64::min),
        Goal::AtMost => values.iter().copied().reduce(f64::max),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Goal {
    AtLeast,
    AtMost,
}

/// A target from the issue, checked against the median of a scenario's metric.
struct Target {
    what: &'static str,
    scenario: &'static str,
    label: &'static str,
    metric: &'static str,
    goal: Goal,
    value: f64,
    unit: &'static str,
    /// Judge the worst run rather than the median (validity checks: one bad run is one too many).
    worst_run: bool,
}

const TARGETS: [Target; 6] = [
    Target {
        what: "produce throughput, 1 KiB, acks=all, 6 partitions",
        scenario: "produce",
        label: "",
        metric: "mib_per_s",
        goal: Goal::AtLeast,
        value: 200.0,
        unit: "MiB/s",
        worst_run: false,
    },
    Target {
        what: "produce p99 send→ack at 20 MiB/s, linger.ms=0",
        scenario: "latency",
        label: "",
        metric: "ack_p99_ms",
        goal: Goal::AtMost,
        value: 3.0,
        unit: "ms",
        worst_run: false,
    },
    Target {
        what: "consume throughput from the start of the topic",
        scenario: "consume",
        label: "",
        metric: "mib_per_s",
        goal: Goal::AtLeast,
        value: 400.0,
        unit: "MiB/s",
        worst_run: false,
    },
    Target {
        what: "broker peak RSS (VmHWM) over a whole round",
        scenario: "broker-rss",
        label: "",
        metric: "peak_rss_mib",
        goal: Goal::AtMost,
        value: 256.0,
        unit: "MiB",
        worst_run: false,
    },
    Target {
        what: "validity check: the latency run held the offered rate (achieved / offered)",
        scenario: "latency",
        label: "",
        metric: "offered_rate_ratio",
        goal: Goal::AtLeast,
        value: 0.98,
        unit: "",
        worst_run: true,
    },
    Target {
        what: "validity check: consume read every record below the high watermarks (missing)",
        scenario: "consume",
        label: "",
        metric: "missing_records",
        goal: Goal::AtMost,
        value: 0.0,
        unit: "",
        worst_run: true,
    },
];

/// A Sluice figure next to the baseline figure measured in the same run.
struct Comparison {
    what: &'static str,
    sluice: (&'static str, &'static str, &'static str),
    baseline: (&'static str, &'static str, &'static str),
    unit: &'static str,
}

const COMPARISONS: [Comparison; 8] = [
    Comparison {
        what: "produce vs. disk: 1 MiB append+fdatasync (durable group-commit ceiling)",
        sluice: ("produce", "", "mib_per_s"),
        baseline: ("disk-baseline", "", "fdatasync_1M_mib_per_s"),
        unit: "MiB/s",
    },
    Comparison {
        what: "produce vs. disk: buffered sequential write, one fdatasync at the end",
        sluice: ("produce", "", "mib_per_s"),
        baseline: ("disk-baseline", "", "seq_write_mib_per_s"),
        unit: "MiB/s",
    },
    Comparison {
        what: "produce vs. the wal crate alone, 64 concurrent 1 KiB submitters",
        sluice: ("produce", "", "mib_per_s"),
        baseline: ("wal", "submitters=64", "mib_per_s"),
        unit: "MiB/s",
    },
    Comparison {
        what: "latency p50 vs. disk: 16 KiB append+fdatasync p50 (≈0.8 ms of 20 MiB/s)",
        sluice: ("latency", "", "ack_p50_ms"),
        baseline: ("disk-baseline", "", "fdatasync_16k_p50_ms"),
        unit: "ms",
    },
    Comparison {
        what: "latency p99 vs. disk: 16 KiB append+fdatasync p99",
        sluice: ("latency", "", "ack_p99_ms"),
        baseline: ("disk-baseline", "", "fdatasync_16k_p99_ms"),
        unit: "ms",
    },
    Comparison {
        what: "latency p999 vs. disk: 16 KiB append+fdatasync p999",
        sluice: ("latency", "", "ack_p999_ms"),
        baseline: ("disk-baseline", "", "fdatasync_16k_p999_ms"),
        unit: "ms",
    },
    Comparison {
        what: "latency p99 vs. disk: 16 KiB overwrite+fdatasync p99 in a preallocated file",
        sluice: ("latency", "", "ack_p99_ms"),
        baseline: ("disk-baseline", "", "fdatasync_prealloc_16k_p99_ms"),
        unit: "ms",
    },
    Comparison {
        what: "consume vs. disk: sequential 1 MiB reads of a just-written file",
        sluice: ("consume", "", "mib_per_s"),
        baseline: ("disk-baseline", "", "seq_read_mib_per_s"),
        unit: "MiB/s",
    },
];

fn format_value(value: Option<f64>) -> String {
    match value {
        Some(value) if value.abs() >= 100.0 => format!("{value:.0}"),
        Some(value) if value.abs() >= 1.0 => format!("{value:.2}"),
        Some(value) => format!("{value:.3}"),
        None => "n/a".to_string(),
    }
}

/// A value with its unit ("12.5 ms"), or "n/a" alone.
fn with_unit(value: Option<f64>, unit: &str) -> String {
    match value {
        Some(_) if !unit.is_empty() => format!("{} {unit}", format_value(value)),
        _ => format_value(value),
    }
}

fn render(samples: &Samples, machine: &str) -> String {
    let mut out = String::new();
    let runs = samples
        .values()
        .flat_map(|metrics| metrics.values().map(Vec::len))
        .max()
        .unwrap_or(0);
    let _ = writeln!(out, "Machine: {machine}\n");
    let _ = writeln!(
        out,
        "Figures are medians over runs (up to {runs}); MiB = 2^20 bytes, the issue's MB/s targets are read as MiB/s.\n"
    );

    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(
        out,
        "| target | measured (median) | goal | measured / goal | verdict |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for target in &TARGETS {
        let measured = if target.worst_run {
            sample_worst(samples, target)
        } else {
            sample_median(samples, target.scenario, target.label, target.metric)
        };
        let comparator = match target.goal {
            Goal::AtLeast => "≥",
            Goal::AtMost => "≤",
        };
        let verdict = match (measured, target.goal) {
            (None, _) => "not measured",
            (Some(value), Goal::AtLeast) if value >= target.value => "met",
            (Some(value), Goal::AtMost) if value <= target.value => "met",
            (Some(_), _) => "MISSED",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {comparator} {} | {} | {verdict} |",
            target.what,
            with_unit(measured, target.unit),
            with_unit(Some(target.value), target.unit),
            format_value(
                measured
                    .filter(|_| target.value != 0.0)
                    .map(|value| value / target.value)
            ),
        );
    }

    let _ = writeln!(out, "\n## Against the baselines measured in the same run\n");
    let _ = writeln!(
        out,
        "| comparison | broker | baseline | broker / baseline |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for comparison in &COMPARISONS {
        let (scenario, label, metric) = comparison.sluice;
        let sluice = sample_median(samples, scenario, label, metric);
        let (scenario, label, metric) = comparison.baseline;
        let baseline = sample_median(samples, scenario, label, metric);
        let ratio = match (sluice, baseline) {
            (Some(sluice), Some(baseline)) if baseline != 0.0 => Some(sluice / baseline),
            _ => None,
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            comparison.what,
            with_unit(sluice, comparison.unit),
            with_unit(baseline, comparison.unit),
            format_value(ratio),
        );
    }

    render_wal_comparison(samples, &mut out);
    render_ack_comparison(samples, &mut out);

    let _ = writeln!(out, "\n## All figures\n");
    let _ = writeln!(out, "| scenario | metric | median | min | max | runs |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for ((scenario, label), metrics) in samples {
        let name = if label.is_empty() {
            scenario.clone()
        } else {
            format!("{scenario} [{label}]")
        };
        for (metric, values) in metrics {
            let min = values.iter().copied().reduce(f64::min);
            let max = values.iter().copied().reduce(f64::max);
            let _ = writeln!(
                out,
                "| {name} | {metric} | {} | {} | {} | {} |",
                format_value(median(values)),
                format_value(min),
                format_value(max),
                values.len(),
            );
        }
    }
    out
}

/// One row of the S3 WAL vs file WAL table: the same metric under the labels of both WAL kinds.
struct WalRow {
    what: &'static str,
    scenario: &'static str,
    /// Label with `{}` standing for the WAL kind (`file` or `s3`).
    label: &'static str,
    metric: &'static str,
    unit: &'static str,
    /// The target for the S3 WAL, if any.
    target: Option<(Goal, f64)>,
}

const fn row(
    what: &'static str,
    scenario: &'static str,
    label: &'static str,
    metric: &'static str,
    unit: &'static str,
    target: Option<(Goal, f64)>,
) -> WalRow {
    WalRow {
        what,
        scenario,
        label,
        metric,
        unit,
        target,
    }
}

/// What `benches/s3.sh` measures for both WAL kinds, with the S3 targets.
const WAL_ROWS: [WalRow; 26] = [
    row(
        "produce throughput (closed loop, linger 5)",
        "produce",
        "{}",
        "mib_per_s",
        "MiB/s",
        Some((Goal::AtLeast, 150.0)),
    ),
    row(
        "  PUTs/s during it",
        "produce",
        "{}",
        "wal_puts_per_s",
        "/s",
        None,
    ),
    row(
        "  MiB per PUT",
        "produce",
        "{}",
        "wal_bytes_per_put_mib",
        "MiB",
        None,
    ),
    row(
        "  PUTs/s ÷ max(bytes/s ÷ 4 MiB, 1000 ÷ linger)",
        "produce",
        "{}",
        "wal_put_rate_vs_bound",
        "",
        Some((Goal::AtMost, 1.0)),
    ),
    row(
        "  metadata commits/s",
        "produce",
        "{}",
        "wal_commits_per_s",
        "/s",
        None,
    ),
    row("  broker CPU", "produce", "{}", "broker_cpu_pct", "%", None),
    row(
        "latency at 20 MiB/s, linger 0: p50",
        "latency",
        "{}",
        "ack_p50_ms",
        "ms",
        None,
    ),
    row(
        "  p99",
        "latency",
        "{}",
        "ack_p99_ms",
        "ms",
        Some((Goal::AtMost, 20.0)),
    ),
    row("  p999", "latency", "{}", "ack_p999_ms", "ms", None),
    row(
        "  p99 from the due time (no coordinated omission)",
        "latency",
        "{}",
        "sched_ack_p99_ms",
        "ms",
        None,
    ),
    row(
        "  PUTs/s during it",
        "latency",
        "{}",
        "wal_puts_per_s",
        "/s",
        None,
    ),
    row(
        "  MiB per PUT",
        "latency",
        "{}",
        "wal_bytes_per_put_mib",
        "MiB",
        None,
    ),
    row(
        "  PUTs/s ÷ max(bytes/s ÷ 4 MiB, 1000 ÷ linger)",
        "latency",
        "{}",
        "wal_put_rate_vs_bound",
        "",
        Some((Goal::AtMost, 1.0)),
    ),
    row(
        "  validity: achieved / offered rate",
        "latency",
        "{}",
        "offered_rate_ratio",
        "",
        None,
    ),
    row(
        "fill (closed loop, the catch-up topic)",
        "produce",
        "fill-{}",
        "mib_per_s",
        "MiB/s",
        None,
    ),
    row(
        "restart to ready (S3 WAL: empty data dir, rebuilt from the bucket)",
        "broker-start",
        "{}-cold",
        "ready_seconds",
        "s",
        None,
    ),
    row(
        "cold catch-up read after a restart",
        "consume",
        "{}-cold",
        "mib_per_s",
        "MiB/s",
        Some((Goal::AtLeast, 500.0)),
    ),
    row(
        "  GETs during it",
        "consume",
        "{}-cold",
        "object_gets",
        "",
        None,
    ),
    row(
        "  GET MiB/s",
        "consume",
        "{}-cold",
        "object_get_mib_per_s",
        "MiB/s",
        None,
    ),
    row(
        "  validity: missing records",
        "consume",
        "{}-cold",
        "missing_records",
        "",
        None,
    ),
    row(
        "tail produce p99 at 20 MiB/s alone",
        "tail-during-catchup",
        "{}-cold",
        "alone_p99_ms",
        "ms",
        None,
    ),
    row(
        "  … during the catch-up read",
        "tail-during-catchup",
        "{}-cold",
        "during_p99_ms",
        "ms",
        None,
    ),
    row(
        "  p99 rise",
        "tail-during-catchup",
        "{}-cold",
        "p99_rise_pct",
        "%",
        Some((Goal::AtMost, 10.0)),
    ),
    row(
        "broker peak RSS: produce, latency, fill",
        "broker-rss",
        "{}",
        "peak_rss_mib",
        "MiB",
        None,
    ),
    row(
        "broker peak RSS: restart + catch-up",
        "broker-rss",
        "{}-cold",
        "peak_rss_mib",
        "MiB",
        None,
    ),
    row(
        "machine CPU pressure during the latency run",
        "latency",
        "{}",
        "machine_cpu_pressure_pct",
        "%",
        None,
    ),
];

/// The "S3 WAL vs file WAL" table, when the results hold both kinds.
fn render_wal_comparison(samples: &Samples, out: &mut String) {
    let has = |kind: &str| samples.keys().any(|(_, label)| label == kind);
    if !has("file") || !has("s3") {
        return;
    }
    let _ = writeln!(out, "\n## S3 WAL vs file WAL (medians)\n");
    let _ = writeln!(
        out,
        "| measure | file WAL | S3 WAL | S3 / file | S3 target | verdict |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for row in &WAL_ROWS {
        let value = |kind: &str| {
            sample_median(
                samples,
                row.scenario,
                &row.label.replace("{}", kind),
                row.metric,
            )
        };
        let (file, s3) = (value("file"), value("s3"));
        let ratio = match (file, s3) {
            (Some(file), Some(s3)) if file != 0.0 => Some(s3 / file),
            _ => None,
        };
        let (target, verdict) = match row.target {
            None => (String::new(), ""),
            Some((goal, goal_value)) => {
                let comparator = if goal == Goal::AtLeast { "≥" } else { "≤" };
                let verdict = match (s3, goal) {
                    (None, _) => "not measured",
                    (Some(v), Goal::AtLeast) if v >= goal_value => "met",
                    (Some(v), Goal::AtMost) if v <= goal_value => "met",
                    (Some(_), _) => "MISSED",
                };
                (
                    format!("{comparator} {}", with_unit(Some(goal_value), row.unit)),
                    verdict,
                )
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {target} | {verdict} |",
            row.what,
            with_unit(file, row.unit),
            with_unit(s3, row.unit),
            format_value(ratio),
        );
    }
}

/// Labels of `benches/ack-latency.sh`'s three arms: S3 WAL with the binary before the change, S3
/// WAL after it, and the file WAL after it (the reference).
const ACK_BEFORE: &str = "s3-before";
const ACK_AFTER: &str = "s3-after";
const ACK_FILE: &str = "file-after";

/// One row of the S3-WAL ack table: `(what, scenario, metric, unit)`.
const ACK_ROWS: [(&str, &str, &str, &str); 13] = [
    ("produce p50 send→ack", "latency", "ack_p50_ms", "ms"),
    ("produce p99 send→ack", "latency", "ack_p99_ms", "ms"),
    ("produce p999 send→ack", "latency", "ack_p999_ms", "ms"),
    ("produce max send→ack", "latency", "ack_max_ms", "ms"),
    (
        "p99 from the due time (no coordinated omission)",
        "latency",
        "sched_ack_p99_ms",
        "ms",
    ),
    ("S3 WAL PUTs/s", "latency", "wal_puts_per_s", "/s"),
    ("KiB per PUT", "latency", "wal_bytes_per_put_kib", "KiB"),
    ("metadata commits/s", "latency", "wal_commits_per_s", "/s"),
    ("broker CPU", "latency", "broker_cpu_pct", "%"),
    (
        "machine CPU pressure (other load)",
        "latency",
        "machine_cpu_pressure_pct",
        "%",
    ),
    (
        "validity: achieved / offered rate",
        "latency",
        "offered_rate_ratio",
        "",
    ),
    (
        "one create-if-absent PUT on the same s3s-fs, p50",
        "s3-put",
        "put_p50_ms",
        "ms",
    ),
    ("  … its size", "s3-put", "size_kib", "KiB"),
];

/// The S3-WAL ack targets: p99 at most this.
const ACK_P99_TARGET_MS: f64 = 10.0;
/// … and p50 at most linger + one PUT + this.
const ACK_P50_SLACK_MS: f64 = 2.0;

/// The "S3-WAL ack: before / after" table, when the results hold both S3 arms.
fn render_ack_comparison(samples: &Samples, out: &mut String) {
    let has = |label: &str| samples.keys().any(|(_, l)| l == label);
    if !has(ACK_BEFORE) || !has(ACK_AFTER) {
        return;
    }
    let _ = writeln!(out, "\n## S3-WAL ack: before / after (medians)\n");
    let _ = writeln!(
        out,
        "| measure | S3 WAL before | S3 WAL after | after / before | file WAL (after) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (what, scenario, metric, unit) in ACK_ROWS {
        let value = |label: &str| sample_median(samples, scenario, label, metric);
        let (before, after, file) = (value(ACK_BEFORE), value(ACK_AFTER), value(ACK_FILE));
        let ratio = match (before, after) {
            (Some(before), Some(after)) if before != 0.0 => Some(after / before),
            _ => None,
        };
        let _ = writeln!(
            out,
            "| {what} | {} | {} | {} | {} |",
            with_unit(before, unit),
            with_unit(after, unit),
            format_value(ratio),
            with_unit(file, unit),
        );
    }
    let _ = writeln!(out, "\n### Targets (S3 WAL)\n");
    let _ = writeln!(out, "| target | before | after | verdict (after) |");
    let _ = writeln!(out, "|---|---|---|---|");
    let verdict = |value: Option<f64>, goal: Option<f64>| match (value, goal) {
        (Some(value), Some(goal)) if value <= goal => "met",
        (Some(_), Some(_)) => "MISSED",
        _ => "not measured",
    };
    let p99 = |label: &str| sample_median(samples, "latency", label, "ack_p99_ms");
    let _ = writeln!(
        out,
        "| p99 ≤ {} | {} | {} | {} |",
        with_unit(Some(ACK_P99_TARGET_MS), "ms"),
        with_unit(p99(ACK_BEFORE), "ms"),
        with_unit(p99(ACK_AFTER), "ms"),
        verdict(p99(ACK_AFTER), Some(ACK_P99_TARGET_MS)),
    );
    // The p50 bound uses each arm's own linger and its own median PUT time on its s3s-fs.
    let bound = |label: &str| {
        let linger = sample_median(samples, "latency", label, "wal_linger_ms")?;
        let put = sample_median(samples, "s3-put", label, "put_p50_ms")?;
        Some(linger + put + ACK_P50_SLACK_MS)
    };
    let p50 = |label: &str| sample_median(samples, "latency", label, "ack_p50_ms");
    let show = |label: &str| {
        format!(
            "{} (bound {})",
            with_unit(p50(label), "ms"),
            with_unit(bound(label), "ms")
        )
    };
    let _ = writeln!(
        out,
        "| p50 ≤ linger + one PUT (p50) + {} | {} | {} | {} |",
        with_unit(Some(ACK_P50_SLACK_MS), "ms"),
        show(ACK_BEFORE),
        show(ACK_AFTER),
        verdict(p50(ACK_AFTER), bound(ACK_AFTER)),
    );
}

/// One line naming the machine: cores, CPU model, memory, kernel.
pub(crate) fn machine_description() -> String {
    let cores = std::thread::available_parallelism()
        .map(|count| count.get().to_string())
        .unwrap_or_else(|_| "?".to_string());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB RAM", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown RAM".to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "unknown kernel".to_string());
    format!("{cores} cores, {model}, {memory}, Linux {kernel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(scenario: &str, label: &str, metrics: &[(&str, f64)]) -> String {
        let mut outcome = Outcome::new(scenario, label);
        for &(name, value) in metrics {
            outcome.metric(name, value);
        }
        outcome.to_json().to_string()
    }

    #[test]
    fn medians_targets_and_ratios() {
        let text = [
            line("produce", "", &[("mib_per_s", 150.0)]),
            line("produce", "", &[("mib_per_s", 250.0)]),
            line("produce", "", &[("mib_per_s", 210.0)]),
            line("produce", "fill", &[("mib_per_s", 1.0)]),
            line(
                "latency",
                "",
                &[("ack_p99_ms", 4.0), ("offered_rate_ratio", 1.0)],
            ),
            line("disk-baseline", "", &[("fdatasync_1M_mib_per_s", 420.0)]),
            line("consume", "", &[("missing_records", 0.0)]),
            line("consume", "", &[("missing_records", 7.0)]),
            line("consume", "", &[("missing_records", 0.0)]),
            String::new(),
        ]
        .join("\n");
        let samples = parse_results(&text).expect("parses");
        assert_eq!(
            sample_median(&samples, "produce", "", "mib_per_s"),
            Some(210.0)
        );
        assert_eq!(
            sample_median(&samples, "produce", "fill", "mib_per_s"),
            Some(1.0)
        );
        let report = render(&samples, "test machine");
        assert!(
            report.contains("| 210 MiB/s | ≥ 200 MiB/s | 1.05 | met |"),
            "{report}"
        );
        assert!(
            report.contains("| 4.00 ms | ≤ 3.00 ms | 1.33 | MISSED |"),
            "{report}"
        );
        assert!(
            report.contains("| 210 MiB/s | 420 MiB/s | 0.500 |"),
            "{report}"
        );
        assert!(
            report.contains("| n/a | ≤ 256 MiB | n/a | not measured |"),
            "{report}"
        );
        assert!(
            report.contains("| 1.00 | ≥ 0.980 | 1.02 | met |"),
            "{report}"
        );
        // The median of missing records is 0, but a validity check judges the worst run.
        assert!(
            report.contains("| 7.00 | ≤ 0.000 | n/a | MISSED |"),
            "{report}"
        );
    }

    #[test]
    fn wal_kinds_side_by_side() {
        let text = [
            line("produce", "file", &[("mib_per_s", 200.0)]),
            line("produce", "s3", &[("mib_per_s", 100.0)]),
            line("latency", "s3", &[("ack_p99_ms", 12.0)]),
            line("tail-during-catchup", "s3-cold", &[("p99_rise_pct", 25.0)]),
        ]
        .join("\n");
        let report = render(&parse_results(&text).expect("parses"), "test machine");
        assert!(report.contains("## S3 WAL vs file WAL"), "{report}");
        assert!(
            report.contains("| 200 MiB/s | 100 MiB/s | 0.500 | ≥ 150 MiB/s | MISSED |"),
            "{report}"
        );
        assert!(
            report.contains("| n/a | 12.00 ms | n/a | ≤ 20.00 ms | met |"),
            "{report}"
        );
        assert!(
            report.contains("| n/a | 25.00 % | n/a | ≤ 10.00 % | MISSED |"),
            "{report}"
        );
        // Without both kinds there is no such table.
        let single = render(
            &parse_results(&line("produce", "", &[])).expect("parses"),
            "m",
        );
        assert!(!single.contains("S3 WAL vs file WAL"), "{single}");
    }

    #[test]
    fn ack_arms_before_after_and_targets() {
        let text = [
            line(
                "latency",
                "s3-before",
                &[
                    ("ack_p50_ms", 8.0),
                    ("ack_p99_ms", 20.0),
                    ("wal_linger_ms", 5.0),
                ],
            ),
            line(
                "latency",
                "s3-after",
                &[
                    ("ack_p50_ms", 4.0),
                    ("ack_p99_ms", 12.0),
                    ("wal_linger_ms", 5.0),
                    ("wal_bytes_per_put_kib", 9.5),
                ],
            ),
            line("latency", "file-after", &[("ack_p50_ms", 1.0)]),
            line("s3-put", "s3-before", &[("put_p50_ms", 2.0)]),
            line("s3-put", "s3-after", &[("put_p50_ms", 1.5)]),
        ]
        .join("\n");
        let report = render(&parse_results(&text).expect("parses"), "test machine");
        assert!(report.contains("## S3-WAL ack: before / after"), "{report}");
        assert!(
            report.contains("| produce p50 send→ack | 8.00 ms | 4.00 ms | 0.500 | 1.00 ms |"),
            "{report}"
        );
        assert!(
            report.contains("| KiB per PUT | n/a | 9.50 KiB | n/a | n/a |"),
            "{report}"
        );
        assert!(
            report.contains("| p99 ≤ 10.00 ms | 20.00 ms | 12.00 ms | MISSED |"),
            "{report}"
        );
        // Bound: 5 ms linger + 1.5 ms PUT + 2 ms = 8.5 ms ≥ 4 ms.
        assert!(
            report.contains("| 8.00 ms (bound 9.00 ms) | 4.00 ms (bound 8.50 ms) | met |"),
            "{report}"
        );
        // Without both S3 arms there is no such table.
        let single = render(
            &parse_results(&line("latency", "s3-after", &[])).expect("parses"),
            "m",
        );
        assert!(!single.contains("S3-WAL ack"), "{single}");
    }

    #[test]
    fn non_finite_metrics_are_dropped_and_bad_lines_rejected() {
        let mut outcome = Outcome::new("consume", "");
        outcome.metric("mib_per_s", f64::NAN);
        outcome.metric("records", 3.0);
        let samples = parse_results(&outcome.to_json().to_string()).expect("parses");
        let metrics = &samples[&("consume".to_string(), String::new())];
        assert!(!metrics.contains_key("mib_per_s"));
        assert_eq!(metrics["records"], vec![3.0]);
        assert!(parse_results("not json").is_err());
        assert!(parse_results("{\"scenario\":\"x\"}").is_err());
    }

    #[test]
    fn machine_description_names_cores_and_memory() {
        let description = machine_description();
        assert!(description.contains("cores"), "{description}");
        assert!(description.contains("RAM"), "{description}");
    }
}
