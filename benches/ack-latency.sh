#!/usr/bin/env bash
# S3-WAL ack latency before/after a broker change (issue 11: "acknowledged after one PUT"), with the
# file WAL as the reference, side by side in one run. Each round runs three arms, in an order that
# flips every round so that the machine's drift hits all alike:
#   s3-before   BINARY_BEFORE, --wal object on a fresh loopback s3s-fs with a fresh bucket
#   s3-after    BINARY_AFTER,  the same
#   file-after  BINARY_AFTER,  the file WAL
# each on a fresh data dir: `loadgen latency` open loop at --rate-records records/s of 1 KiB,
# linger.ms=0, acks=all, 6 partitions, with the broker's /metrics scraped around it (S3 WAL PUTs/s,
# bytes per PUT, metadata commits/s); then, for the S3 arms, `loadgen s3-put` times single
# create-if-absent PUTs of the arm's median object size on the same s3s-fs (the "one PUT" of the
# target p50 ≤ linger + one PUT + 2 ms). `loadgen report` prints medians per arm and after/before
# ratios (report.md).
#
# Usage: benches/ack-latency.sh BINARY_BEFORE BINARY_AFTER [--runs N] [--seconds S]
#            [--rate-records R] [--wal-linger-ms MS] [--out DIR]
# Defaults: 3 runs, 20 s measured (+2 s warm-up) per arm, 2000 records/s, the brokers' default
# linger of 5 ms. Needs target/release/loadgen (cargo build --release -p sluice-benches), s3s-fs
# 0.14.1, curl, jq, bc. Every process started here is stopped by its PID.
set -euo pipefail

BENCH_NAME=ack-latency.sh
[[ $# -ge 2 && $1 != -* && $2 != -* ]] || { sed -n '2,19p' "$0"; exit 2; }
BIN_BEFORE=$(realpath "$1"); BIN_AFTER=$(realpath "$2"); shift 2
RUNS=3
SECONDS_PER_ARM=20
WARMUP_SECONDS=2
RATE_RECORDS=2000
LINGER_MS=5
OUT_DIR=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --seconds) SECONDS_PER_ARM=$2; shift 2 ;;
        --rate-records) RATE_RECORDS=$2; shift 2 ;;
        --wal-linger-ms) LINGER_MS=$2; shift 2 ;;
        --out) OUT_DIR=$2; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "$BENCH_NAME: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ "$RUNS" =~ ^[1-9][0-9]?$ ]] || { echo "$BENCH_NAME: --runs must be 1..99" >&2; exit 2; }
for tool in curl jq bc; do
    command -v "$tool" > /dev/null || { echo "$BENCH_NAME: $tool is required" >&2; exit 1; }
done
REPO=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"
find_s3s_fs
LOADGEN=$REPO/target/release/loadgen
for binary in "$BIN_BEFORE" "$BIN_AFTER" "$LOADGEN"; do
    [[ -x $binary ]] || { echo "$BENCH_NAME: $binary is missing" >&2; exit 1; }
done
OUT_DIR=${OUT_DIR:-$REPO/target/bench-results/ack-latency-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT_DIR"
OUT_DIR=$(realpath "$OUT_DIR")
RESULTS=$OUT_DIR/results.jsonl
COMMANDS=$OUT_DIR/commands.log
LOAD=$OUT_DIR/load.txt
: > "$RESULTS"
: > "$COMMANDS"
: > "$LOAD"
SCRATCH=$(mktemp -d "$REPO/target/bench-ack-scratch.XXXXXX")
FAILURES=0

cleanup() { stop_broker; stop_s3; rm -rf "$SCRATCH"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

scenario() {
    bench_log_command "$*"
    echo "== $*" >&2
    if ! "$@" >> "$RESULTS"; then
        echo "$BENCH_NAME: scenario failed: $*" >&2
        FAILURES=$((FAILURES + 1))
        return 1
    fi
}

# One arm: label $1 in round $2.
arm() {
    local label=$1 round=$2 binary kind
    case "$label" in
        s3-before) binary=$BIN_BEFORE; kind=s3 ;;
        s3-after) binary=$BIN_AFTER; kind=s3 ;;
        file-after) binary=$BIN_AFTER; kind=file ;;
    esac
    local dir=$SCRATCH/round-$round-$label
    local log=$OUT_DIR/broker-$label-round-$round.log
    mkdir -p "$dir"
    echo "round $round $label start: $(uptime)" >> "$LOAD"
    local wal_flags=()
    if [[ $kind == s3 ]]; then
        start_s3 "$dir/s3root" "$OUT_DIR/s3s-fs-$label-round-$round.log"
        wal_flags=(--wal object --object-store s3://bench/sluice --s3-endpoint "$S3_ENDPOINT"
            --s3-region us-east-1 --wal-linger-ms "$LINGER_MS")
    fi
    start_sluice "$binary" "$dir/data" "$log" 120 "${wal_flags[@]}"
    scenario "$LOADGEN" latency --bootstrap "$BOOTSTRAP" --topic "ack-$round" --partitions 6 \
        --record-size 1024 --acks all --linger-ms 0 --rate-records "$RATE_RECORDS" \
        --seconds "$SECONDS_PER_ARM" --warmup-seconds "$WARMUP_SECONDS" --broker-pid "$BROKER_PID" \
        --metrics-addr "$HTTP" --wal-linger-ms "$LINGER_MS" --label "$label" || true
    if [[ $kind == s3 ]]; then
        # One PUT of the size the WAL's objects just had (16 KiB if the run measured none), on the
        # same s3s-fs, beside the now idle broker, under its own prefix.
        local kib size=16384
        kib=$(tail -n 1 "$RESULTS" | jq -r --arg arm "$label" \
            'select(.label == $arm and .scenario == "latency") | .metrics.wal_bytes_per_put_kib // empty')
        if [[ -n $kib ]]; then
            size=$(printf '%.0f' "$(echo "$kib * 1024" | bc)")
        fi
        scenario "$LOADGEN" s3-put --url s3://bench/put-baseline --endpoint "$S3_ENDPOINT" \
            --size-bytes "$size" --count 200 --seconds 30 --label "$label" || true
    fi
    echo "round $round $label end:   $(uptime)" >> "$LOAD"
    stop_broker
    stop_s3
    rm -rf "$dir"
}

echo "machine: $("$LOADGEN" machine)" | tee "$OUT_DIR/machine.txt" >&2
{
    echo "before: $BIN_BEFORE ($(sha256sum "$BIN_BEFORE" | cut -c1-16))"
    echo "after:  $BIN_AFTER ($(sha256sum "$BIN_AFTER" | cut -c1-16))"
    echo "runs $RUNS, $SECONDS_PER_ARM s per arm, $RATE_RECORDS records/s of 1 KiB, broker linger $LINGER_MS ms"
} | tee "$OUT_DIR/setup.txt" >&2
ARMS=(s3-before s3-after file-after)
for round in $(seq 1 "$RUNS"); do
    echo "==== round $round of $RUNS" >&2
    order=("${ARMS[@]}")
    if (( round % 2 == 0 )); then
        order=()
        for (( i=${#ARMS[@]}-1; i>=0; i-- )); do order+=("${ARMS[i]}"); done
    fi
    for label in "${order[@]}"; do
        arm "$label" "$round"
    done
done

"$LOADGEN" report --input "$RESULTS" > "$OUT_DIR/report.md"
sed -n '/^## S3-WAL ack/,/^## All figures/p' "$OUT_DIR/report.md" | sed '$d'
echo "results: $OUT_DIR (results.jsonl, report.md, load.txt, commands.log, logs)" >&2
if [[ $FAILURES -gt 0 ]]; then
    echo "$BENCH_NAME: $FAILURES scenario(s) failed" >&2
    exit 1
fi
