#!/usr/bin/env bash
# A/B of two `sluice` binaries on the S3 WAL (loopback s3s-fs), alternating A and B within each round:
# per round and binary a fresh s3s-fs + bucket + broker, then `loadgen latency` (20 MiB/s, linger.ms=0,
# acks=all, 6 partitions, 1 KiB) and `loadgen produce` (closed loop), with /metrics scraped around each;
# with --consume-bytes SIZE also a fill of SIZE then `loadgen consume` of it from offset 0 right after
# (the data still in WAL objects: the catch-up read path).
# Used to measure a broker change (e.g. a tuning default) before/after; `loadgen report` on the
# result file shows medians per label (`A`, `B`).
#
# Usage: benches/s3-ab.sh BINARY_A BINARY_B [--runs N] [--latency-seconds S] [--produce-seconds S]
#                         [--consume-bytes SIZE] [--skip-latency] [--out DIR]
# Every process started here is stopped by its PID (start/stop code in benches/lib.sh).
set -euo pipefail

[[ $# -ge 2 ]] || { sed -n '2,10p' "$0"; exit 2; }
BIN_A=$1; BIN_B=$2; shift 2
RUNS=3
LATENCY_SECONDS=15
PRODUCE_SECONDS=10
OUT_DIR=""
CONSUME_BYTES=""
SKIP_LATENCY=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --latency-seconds) LATENCY_SECONDS=$2; shift 2 ;;
        --produce-seconds) PRODUCE_SECONDS=$2; shift 2 ;;
        --out) OUT_DIR=$2; shift 2 ;;
        --consume-bytes) CONSUME_BYTES=$2; shift 2 ;;
        --skip-latency) SKIP_LATENCY=1; shift ;;
        *) echo "s3-ab.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ "$RUNS" =~ ^[1-9][0-9]?$ ]] || { echo "s3-ab.sh: --runs must be 1..99" >&2; exit 2; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
BENCH_NAME=s3-ab.sh
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"
find_s3s_fs
LOADGEN=$REPO/target/release/loadgen
for binary in "$BIN_A" "$BIN_B" "$LOADGEN"; do
    [[ -x $binary ]] || { echo "s3-ab.sh: $binary is missing" >&2; exit 1; }
done
OUT_DIR=${OUT_DIR:-$REPO/target/bench-results/s3-ab-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT_DIR"
RESULTS=$OUT_DIR/results.jsonl
: > "$RESULTS"
SCRATCH=$(mktemp -d "$REPO/target/bench-s3ab-scratch.XXXXXX")

cleanup() { stop_broker; stop_s3; rm -rf "$SCRATCH"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

one() {
    local label=$1 binary=$2 round=$3
    local dir=$SCRATCH/$round-$label
    start_s3 "$dir/root" "$OUT_DIR/s3s-fs.log"
    start_sluice "$binary" "$dir/data" "$OUT_DIR/broker-$label.log" 120 \
        --wal object --object-store s3://bench/sluice --s3-endpoint "$S3_ENDPOINT" --s3-region us-east-1
    local base=(--bootstrap "$BOOTSTRAP" --partitions 6 --broker-pid "$BROKER_PID" --metrics-addr "$HTTP")
    local common=("${base[@]}" --record-size 1024 --acks all --label "$label")
    if (( ! SKIP_LATENCY )); then
        "$LOADGEN" latency --topic "latency-$round" "${common[@]}" --linger-ms 0 --rate-mibps 20 \
            --seconds "$LATENCY_SECONDS" --warmup-seconds 2 >> "$RESULTS" || echo "s3-ab.sh: latency $label failed" >&2
    fi
    "$LOADGEN" produce --topic "produce-$round" "${common[@]}" --seconds "$PRODUCE_SECONDS" \
        >> "$RESULTS" || echo "s3-ab.sh: produce $label failed" >&2
    if [[ -n $CONSUME_BYTES ]]; then
        "$LOADGEN" produce --topic "consume-$round" "${base[@]}" --record-size 1024 --acks all \
            --bytes "$CONSUME_BYTES" --seconds 600 --label "fill-$label" > /dev/null \
            || echo "s3-ab.sh: fill $label failed" >&2
        "$LOADGEN" consume --topic "consume-$round" "${base[@]}" --label "$label" --seconds 300 \
            >> "$RESULTS" || echo "s3-ab.sh: consume $label failed" >&2
    fi
    "$LOADGEN" rss --pid "$BROKER_PID" --label "$label" >> "$RESULTS"
    stop_broker
    stop_s3
    rm -rf "$dir"
}

echo "machine: $("$LOADGEN" machine)" | tee "$OUT_DIR/machine.txt" >&2
for round in $(seq 1 "$RUNS"); do
    echo "==== round $round of $RUNS" >&2
    if (( round % 2 == 1 )); then one A "$BIN_A" "$round"; one B "$BIN_B" "$round"
    else one B "$BIN_B" "$round"; one A "$BIN_A" "$round"; fi
done
"$LOADGEN" report --input "$RESULTS" > "$OUT_DIR/report.md"
echo "results: $OUT_DIR" >&2
