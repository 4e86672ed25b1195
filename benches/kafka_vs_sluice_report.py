#!/usr/bin/env python3
"""Report of a benches/kafka-vs-sluice.sh run: medians over rounds per system, and Sluice/Kafka ratios.

Reads DIR/steps.jsonl (one line per step: round, system, step, exit code, wall time, the broker's CPU
seconds, the machine's CPU pressure, the broker's VmHWM) and each step's output in DIR/steps/:
ProducerPerformance's summary line, ConsumerPerformance's CSV line, loadgen's JSON result line.
Prints markdown. Ratios are taken per round (the systems of one round shared its noise) and the
median of those per-round ratios is shown.
"""

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path

RECORD_SIZE = 1024
MIB = float(1 << 20)
GIB = float(1 << 30)
SYSTEMS = ["kafka", "kafka-fsync", "sluice-file", "sluice-s3"]
SYSTEM_TITLES = {
    "kafka": "Kafka (no fsync)",
    "kafka-fsync": "Kafka (fsync per append)",
    "sluice-file": "Sluice file WAL",
    "sluice-s3": "Sluice S3 WAL (local store, no fsync)",
}
# (numerator, denominator) pairs of the ratio table. The S3 WAL on a local object store (object_store's
# LocalFileSystem: write + rename, no fsync) is paired with Kafka's default, which does not fsync either.
RATIOS = [
    ("sluice-file", "kafka"),
    ("sluice-file", "kafka-fsync"),
    ("sluice-s3", "kafka"),
]

PRODUCER_PERF = re.compile(
    r"^(\d+) records sent, ([\d.]+) records/sec \([\d.]+ MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99\.9th"
)


def parse_settings(directory):
    settings = {}
    path = directory / "settings.txt"
    if path.exists():
        for line in path.read_text().splitlines():
            for word in line.split():
                if "=" in word:
                    key, value = word.split("=", 1)
                    settings[key] = value
    return settings


def producer_performance(text):
    """The final summary line of ProducerPerformance (the last one, after the progress lines)."""
    found = None
    for line in text.splitlines():
        match = PRODUCER_PERF.match(line.strip())
        if match:
            found = match
    if not found:
        return None
    records = int(found.group(1))
    return {
        "records": records,
        "mib": records * RECORD_SIZE / MIB,
        "mib_per_s": float(found.group(2)) * RECORD_SIZE / MIB,
        "p50_ms": float(found.group(5)),
        "p99_ms": float(found.group(7)),
        "p999_ms": float(found.group(8)),
    }


def consumer_performance(text):
    """ConsumerPerformance's CSV: a header line, then one line of figures (MB there is 2^20 bytes)."""
    lines = [line for line in text.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("start.time"):
            header = [field.strip() for field in line.split(",")]
            if index + 1 >= len(lines):
                return None
            values = [field.strip() for field in lines[index + 1].split(",")]
            row = dict(zip(header, values))
            try:
                return {
                    "mib": float(row["data.consumed.in.MB"]),
                    "records": float(row["data.consumed.in.nMsg"]),
                    "mib_per_s_total": float(row["MB.sec"]),
                    "mib_per_s": float(row["fetch.MB.sec"]),
                    "rebalance_ms": float(row["rebalance.time.ms"]),
                }
            except (KeyError, ValueError):
                return None
    return None


def loadgen_result(text):
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line).get("metrics", {})
            except json.JSONDecodeError:
                return None
    return None


def measures_of(step, output_text, settings):
    """The figures of one successful step, or None if its output cannot be read."""
    name = step["step"]
    if name == "kperf-produce":
        figures = producer_performance(output_text)
    elif name == "kperf-consume":
        figures = consumer_performance(output_text)
    elif name in ("lg-produce", "lg-consume", "lg-latency", "rss"):
        figures = loadgen_result(output_text)
        if figures is not None and name == "lg-latency":
            seconds = float(settings.get("latency_seconds", "0")) + float(
                settings.get("latency_warmup_seconds", "0")
            )
            figures = dict(figures)
            figures["mib"] = figures.get("achieved_mib_per_s", 0.0) * seconds
            ratio = figures.get("offered_rate_ratio", 1.0)
            if ratio < 0.95:
                # The generator fell behind its schedule (the broker pushed back): latency from the
                # send call understates; the one from the due time (sched_ack) does not.
                figures["warning"] = (
                    "sent only %.2f of the offered rate (max send lag %.0f ms): ack_* latencies are "
                    "lower bounds, see the sched_ack p99 row" % (ratio, figures.get("max_send_lag_ms", 0.0))
                )
        if figures is not None and name == "lg-consume" and figures.get("missing_records", 0) > 0:
            # A consume that skipped records read less than it claims: not a valid figure.
            figures = dict(figures)
            figures["invalid"] = "missing_records=%d" % figures["missing_records"]
    elif name in ("start", "warmup"):
        figures = {}
    else:
        return None
    if figures is None:
        return None
    figures = dict(figures)
    figures["wall_s"] = step["wall_s"]
    cpu = step.get("broker_cpu_s")
    if cpu is not None and figures.get("mib"):
        figures["cpu_s_per_gib"] = cpu / (figures["mib"] * MIB / GIB)
    if step.get("cpu_pressure_pct") is not None:
        figures["cpu_pressure_pct"] = step["cpu_pressure_pct"]
    if step.get("broker_peak_rss_kib") is not None:
        figures["broker_peak_rss_mib"] = step["broker_peak_rss_kib"] / 1024.0
    return figures


# Rows of the tables: (title, step, metric, number format, better: "high"|"low").
ROWS = [
    ("start to a created topic (s)", "start", "wall_s", "{:.1f}", "low"),
    ("ProducerPerformance throughput (MiB/s)", "kperf-produce", "mib_per_s", "{:.1f}", "high"),
    ("ProducerPerformance latency p50 (ms, closed loop)", "kperf-produce", "p50_ms", "{:.0f}", "low"),
    ("ProducerPerformance latency p99 (ms, closed loop)", "kperf-produce", "p99_ms", "{:.0f}", "low"),
    ("ProducerPerformance broker CPU (s/GiB)", "kperf-produce", "cpu_s_per_gib", "{:.2f}", "low"),
    ("loadgen produce throughput (MiB/s)", "lg-produce", "mib_per_s", "{:.1f}", "high"),
    ("loadgen produce broker CPU (s/GiB)", "lg-produce", "cpu_s_per_gib", "{:.2f}", "low"),
    ("loadgen latency p50 (ms, open loop)", "lg-latency", "ack_p50_ms", "{:.2f}", "low"),
    ("loadgen latency p99 (ms, open loop)", "lg-latency", "ack_p99_ms", "{:.1f}", "low"),
    ("loadgen latency p99 from the due time (ms)", "lg-latency", "sched_ack_p99_ms", "{:.1f}", "low"),
    ("loadgen latency: achieved / offered rate", "lg-latency", "offered_rate_ratio", "{:.2f}", "high"),
    ("loadgen latency broker CPU (s/GiB)", "lg-latency", "cpu_s_per_gib", "{:.2f}", "low"),
    ("ConsumerPerformance fetch throughput (MiB/s)", "kperf-consume", "mib_per_s", "{:.1f}", "high"),
    ("ConsumerPerformance incl. group join (MiB/s)", "kperf-consume", "mib_per_s_total", "{:.1f}", "high"),
    ("ConsumerPerformance broker CPU (s/GiB)", "kperf-consume", "cpu_s_per_gib", "{:.2f}", "low"),
    ("loadgen consume throughput (MiB/s)", "lg-consume", "mib_per_s", "{:.1f}", "high"),
    ("loadgen consume broker CPU (s/GiB)", "lg-consume", "cpu_s_per_gib", "{:.2f}", "low"),
    ("broker peak RSS after the round (VmHWM, MiB)", "rss", "broker_peak_rss_mib", "{:.0f}", "low"),
]
PRESSURE_STEPS = ["kperf-produce", "lg-produce", "lg-latency", "kperf-consume", "lg-consume"]


def fmt(value, pattern):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return pattern.format(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True, type=Path)
    args = parser.parse_args()
    directory = args.dir
    settings = parse_settings(directory)
    steps = [
        json.loads(line)
        for line in (directory / "steps.jsonl").read_text().splitlines()
        if line.strip()
    ]

    # figures[(system, step)][round] = dict of metrics; failures[(system, step)] = [reasons]
    figures = {}
    failures = {}
    warnings = {}
    for step in steps:
        key = (step["system"], step["step"])
        reason = None
        result = None
        if step["rc"] != 0:
            reason = "round %d: exit %d" % (step["round"], step["rc"])
        else:
            output = step.get("output") or ""
            text = (directory / "steps" / output).read_text() if output else ""
            result = measures_of(step, text, settings)
            if result is None:
                reason = "round %d: output not understood" % step["round"]
            elif result.get("invalid"):
                reason = "round %d: %s" % (step["round"], result["invalid"])
                result = None
        if reason:
            failures.setdefault(key, []).append(reason)
        if result is not None:
            figures.setdefault(key, {})[step["round"]] = result
            if result.get("warning"):
                warnings.setdefault(key, []).append("round %d: %s" % (step["round"], result["warning"]))

    systems = [system for system in SYSTEMS if any(key[0] == system for key in figures)]
    rounds = sorted({step["round"] for step in steps})

    def values(system, step, metric):
        per_round = figures.get((system, step), {})
        return {r: f[metric] for r, f in per_round.items() if f.get(metric) is not None}

    out = sys.stdout
    machine = (directory / "machine.txt").read_text().strip() if (directory / "machine.txt").exists() else "?"
    out.write("%s; %d round(s); settings: %s\n\n" % (
        machine, len(rounds), " ".join("%s=%s" % kv for kv in sorted(settings.items())
                                        if kv[0] not in ("sluice", "loadgen"))))

    out.write("### Medians over rounds (min–max)\n\n")
    out.write("| measure | " + " | ".join(SYSTEM_TITLES[s] for s in systems) + " |\n")
    out.write("|---" * (len(systems) + 1) + "|\n")
    for title, step, metric, pattern, _ in ROWS:
        cells = []
        for system in systems:
            found = list(values(system, step, metric).values())
            failed = len(failures.get((system, step), []))
            if not found:
                cells.append("failed ×%d" % failed if failed else "–")
                continue
            cell = fmt(statistics.median(found), pattern)
            if len(found) > 1:
                cell += " (%s–%s)" % (fmt(min(found), pattern), fmt(max(found), pattern))
            if failed:
                cell += ", failed ×%d" % failed
            cells.append(cell)
        out.write("| %s | %s |\n" % (title, " | ".join(cells)))
    pressure_cells = []
    for system in systems:
        found = [
            f["cpu_pressure_pct"]
            for step in PRESSURE_STEPS
            for f in figures.get((system, step), {}).values()
            if f.get("cpu_pressure_pct") is not None
        ]
        pressure_cells.append(
            "%s (%s–%s)" % (fmt(statistics.median(found), "{:.0f}"), fmt(min(found), "{:.0f}"),
                            fmt(max(found), "{:.0f}")) if found else "–")
    out.write("| machine CPU pressure during the measured steps (%%) | %s |\n\n" % " | ".join(pressure_cells))

    ratio_pairs = [(a, b) for a, b in RATIOS if a in systems and b in systems]
    if ratio_pairs:
        out.write("### Sluice / Kafka, per round, median of the per-round ratios\n\n")
        out.write("| measure | better | " + " | ".join(
            "%s / %s" % (SYSTEM_TITLES[a], SYSTEM_TITLES[b]) for a, b in ratio_pairs) + " |\n")
        out.write("|---" * (len(ratio_pairs) + 2) + "|\n")
        for title, step, metric, _, better in ROWS:
            cells = []
            for a, b in ratio_pairs:
                va, vb = values(a, step, metric), values(b, step, metric)
                ratios = [va[r] / vb[r] for r in sorted(va) if r in vb and vb[r] > 0]
                if not ratios:
                    cells.append("–")
                    continue
                cell = fmt(statistics.median(ratios), "{:.2f}")
                if len(ratios) > 1:
                    cell += " [%s]" % ", ".join(fmt(x, "{:.2f}") for x in ratios)
                cells.append(cell)
            out.write("| %s | %s | %s |\n" % (title, "higher" if better == "high" else "lower",
                                               " | ".join(cells)))
        out.write("\n")

    if warnings:
        out.write("### Caveats\n\n")
        for (system, step), reasons in sorted(warnings.items()):
            out.write("- %s %s: %s\n" % (system, step, "; ".join(reasons)))
        out.write("\n")

    if failures:
        out.write("### Failed or invalid steps\n\n")
        for (system, step), reasons in sorted(failures.items()):
            out.write("- %s %s: %s\n" % (system, step, "; ".join(reasons)))
        out.write("\n")


if __name__ == "__main__":
    main()
