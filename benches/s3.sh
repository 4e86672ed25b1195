#!/usr/bin/env bash
# S3 WAL vs file WAL, side by side in one run. Each round measures both WAL kinds (the order flips
# every round so that the machine's drift hits both alike); each kind gets a fresh broker on a fresh
# data dir — and for the S3 WAL a fresh s3s-fs on loopback with a fresh bucket — and runs:
#   1. produce   closed-loop throughput (loadgen produce, 20 s), with S3 WAL PUTs/s and bytes per PUT
#   2. latency   open loop at 20 MiB/s, linger.ms=0, acks=all (loadgen latency), with PUTs/s
#   3. fill      a topic of --consume-bytes, then `loadgen rss` (peak RSS so far)
#   4. restart   SIGTERM the broker, start a new one: the S3 WAL one on an EMPTY data dir (it recovers
#                from the bucket; tail cache and block cache are cold), the file WAL one on its data dir
#   5. catch-up  loadgen tail-during-catchup: a tail producer at 20 MiB/s alone, then while one consumer
#                reads the filled topic from its start (cold catch-up MiB/s, tail p99 alone vs during)
# The broker's /metrics is scraped around every scenario (WAL PUTs, GETs, block cache). At the end
# `loadgen report` prints the "S3 WAL vs file WAL" table of medians (also in report.md).
#
# Usage: benches/s3.sh [--runs N] [--consume-bytes SIZE] [--produce-seconds S] [--latency-seconds S]
#                      [--latency-rate MIBPS] [--linger-ms MS] [--kinds "file s3"] [--smoke]
#                      [--no-build] [--out DIR] [-- extra sluice serve flags for the S3 WAL broker]
# Needs s3s-fs 0.14.1 (`cargo install s3s-fs --version 0.14.1 --features binary --locked`; $S3S_FS_BIN
# overrides the path), curl, jq and bc. Every scenario is bounded in time; every process started here is
# stopped by its PID (SIGTERM, then SIGKILL after 30 s).
set -euo pipefail

RUNS=3
CONSUME_BYTES=2G
PRODUCE_SECONDS=20
LATENCY_SECONDS=20
LATENCY_WARMUP_SECONDS=2
LATENCY_RATE=20
ALONE_SECONDS=8
LINGER_MS=5
KINDS="file s3"
BUILD=1
OUT_DIR=""
EXTRA_S3_FLAGS=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --consume-bytes) CONSUME_BYTES=$2; shift 2 ;;
        --produce-seconds) PRODUCE_SECONDS=$2; shift 2 ;;
        --latency-seconds) LATENCY_SECONDS=$2; shift 2 ;;
        --latency-rate) LATENCY_RATE=$2; shift 2 ;;
        --linger-ms) LINGER_MS=$2; shift 2 ;;
        --kinds) KINDS=$2; shift 2 ;;
        --smoke)
            RUNS=1; CONSUME_BYTES=256M; PRODUCE_SECONDS=5; LATENCY_SECONDS=5
            LATENCY_WARMUP_SECONDS=1; ALONE_SECONDS=3
            shift ;;
        --no-build) BUILD=0; shift ;;
        --out) OUT_DIR=$2; shift 2 ;;
        --) shift; EXTRA_S3_FLAGS=("$@"); break ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "s3.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if ! [[ "$RUNS" =~ ^[1-9][0-9]?$ ]]; then
    echo "s3.sh: --runs must be between 1 and 99" >&2
    exit 2
fi
for tool in curl jq bc; do
    command -v "$tool" > /dev/null || { echo "s3.sh: $tool is required" >&2; exit 1; }
done
REPO=$(cd "$(dirname "$0")/.." && pwd)
BENCH_NAME=s3.sh
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"
find_s3s_fs
cd "$REPO"
OUT_DIR=${OUT_DIR:-$REPO/target/bench-results/s3-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT_DIR"
RESULTS=$OUT_DIR/results.jsonl
COMMANDS=$OUT_DIR/commands.log
: > "$RESULTS"
: > "$COMMANDS"

[[ $BUILD == 0 ]] || cargo build --release -p sluice -p sluice-benches
BIN=$REPO/target/release
LOADGEN=$BIN/loadgen
SLUICE=$BIN/sluice
for binary in "$LOADGEN" "$SLUICE"; do
    [[ -x $binary ]] || { echo "s3.sh: $binary is missing (drop --no-build)" >&2; exit 1; }
done

SCRATCH=$(mktemp -d "$REPO/target/bench-s3-scratch.XXXXXX")
FAILURES=0

cleanup() {
    stop_broker
    stop_s3
    rm -rf "$SCRATCH"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scenario() {
    echo "+ $*" >> "$COMMANDS"
    echo "== $*" >&2
    if ! "$@" >> "$RESULTS"; then
        echo "s3.sh: scenario failed: $*" >&2
        FAILURES=$((FAILURES + 1))
    fi
}

# Starts a broker of kind $1 on data dir $2 (log $3); sets BROKER_PID, BOOTSTRAP, HTTP and
# READY_SECONDS (start_sluice in lib.sh). A broker on an empty data dir first rebuilds its state from
# the bucket: allow for it.
start_broker() {
    local kind=$1 data=$2 log=$3
    local flags=()
    if [[ $kind == s3 ]]; then
        flags+=(--wal object --object-store s3://bench/sluice --s3-endpoint "$S3_ENDPOINT"
            --s3-region us-east-1 --wal-linger-ms "$LINGER_MS" "${EXTRA_S3_FLAGS[@]}")
    fi
    start_sluice "$SLUICE" "$data" "$log" 900 "${flags[@]}"
}

# One kind's scenarios in round $2.
run_kind() {
    local kind=$1 round=$2
    local dir=$SCRATCH/round-$round-$kind
    local log=$OUT_DIR/broker-$kind-round-$round.log
    mkdir -p "$dir"
    if [[ $kind == s3 ]]; then
        start_s3 "$dir/s3root" "$OUT_DIR/s3s-fs-round-$round.log"
    fi
    start_broker "$kind" "$dir/data" "$log"
    local common=(--partitions 6 --record-size 1024 --acks all --broker-pid "$BROKER_PID"
        --metrics-addr "$HTTP" --wal-linger-ms "$LINGER_MS")
    scenario "$LOADGEN" produce --bootstrap "$BOOTSTRAP" --topic "produce-$round" "${common[@]}" \
        --seconds "$PRODUCE_SECONDS" --label "$kind"
    scenario "$LOADGEN" latency --bootstrap "$BOOTSTRAP" --topic "latency-$round" "${common[@]}" \
        --linger-ms 0 --rate-mibps "$LATENCY_RATE" --seconds "$LATENCY_SECONDS" \
        --warmup-seconds "$LATENCY_WARMUP_SECONDS" --label "$kind"
    scenario "$LOADGEN" produce --bootstrap "$BOOTSTRAP" --topic "consume-$round" "${common[@]}" \
        --bytes "$CONSUME_BYTES" --seconds 900 --label "fill-$kind"
    scenario "$LOADGEN" rss --pid "$BROKER_PID" --label "$kind"
    stop_broker

    # Cold restart: the S3 WAL broker gets an empty data dir and must rebuild from the bucket.
    local data=$dir/data
    if [[ $kind == s3 ]]; then
        data=$dir/data-empty
    fi
    start_broker "$kind" "$data" "$log"
    echo "{\"scenario\":\"broker-start\",\"label\":\"$kind-cold\",\"metrics\":{\"ready_seconds\":$READY_SECONDS},\"info\":{}}" >> "$RESULTS"
    echo "[broker-start $kind-cold] ready_seconds=$READY_SECONDS" >&2
    common=(--partitions 6 --record-size 1024 --acks all --broker-pid "$BROKER_PID"
        --metrics-addr "$HTTP" --wal-linger-ms "$LINGER_MS")
    scenario "$LOADGEN" tail-during-catchup --bootstrap "$BOOTSTRAP" --topic "tail-$round" \
        --catchup-topic "consume-$round" "${common[@]}" --linger-ms 0 --rate-mibps "$LATENCY_RATE" \
        --warmup-seconds "$LATENCY_WARMUP_SECONDS" --alone-seconds "$ALONE_SECONDS" \
        --catchup-max-seconds 300 --label "$kind-cold"
    scenario "$LOADGEN" rss --pid "$BROKER_PID" --label "$kind-cold"
    stop_broker
    stop_s3
    du -sh "$dir" >&2 || true
    rm -rf "$dir"
}

echo "machine: $("$LOADGEN" machine)" | tee "$OUT_DIR/machine.txt" >&2
git -C "$REPO" rev-parse HEAD > "$OUT_DIR/commit.txt" 2>/dev/null || true
read -r -a kinds <<< "$KINDS"
for round in $(seq 1 "$RUNS"); do
    echo "==== round $round of $RUNS" >&2
    order=("${kinds[@]}")
    if (( round % 2 == 0 )); then
        # Flip the order on even rounds.
        order=()
        for (( i=${#kinds[@]}-1; i>=0; i-- )); do order+=("${kinds[i]}"); done
    fi
    for kind in "${order[@]}"; do
        run_kind "$kind" "$round"
    done
done

"$LOADGEN" report --input "$RESULTS" | tee "$OUT_DIR/report.md"
echo >&2
echo "results: $OUT_DIR (results.jsonl, report.md, commands.log, broker and s3s-fs logs)" >&2
if [[ $FAILURES -gt 0 ]]; then
    echo "s3.sh: $FAILURES scenario(s) failed" >&2
    exit 1
fi
