#!/usr/bin/env bash
# Sluice benchmark suite: builds `sluice` and `loadgen`, then runs ROUNDS rounds. Each round measures the
# baselines (raw disk, the wal crate alone) and then, against a fresh `sluice serve` started here in a
# scratch directory: produce throughput, produce latency at a fixed rate, filling a topic, consume
# throughput from its start, produce throughput of compressible records to topics with
# compression.type producer / lz4 / zstd (the broker recompresses the uncompressed batches of the last
# two), and the broker's peak RSS. Baselines and broker alternate within each round
# so that the machine's noise hits both alike. At the end `loadgen report` prints medians, ratios against
# the targets and ratios against the baselines (markdown), also saved in the output directory.
#
# Usage: benches/run.sh [--runs N] [--consume-bytes SIZE] [--produce-seconds S] [--latency-seconds S]
#                       [--latency-rate MIBPS] [--codec-seconds S] [--smoke] [--debug] [--no-build]
#                       [--mock] [--skip-wal] [--out DIR]
#   --smoke   1 round, short runs, a 256M topic: checks the suite works, figures are not meaningful
#   --debug   use debug builds (quick to build, slow to run)
#   --no-build  use the binaries already in target/ (e.g. while others edit the workspace)
#   --mock    run the Kafka scenarios against librdkafka's in-memory mock broker instead of Sluice
#             (client-side ceiling; the mock keeps little data, so consume reads far less)
# Every scenario is bounded in time; the broker is stopped by its PID (SIGTERM, then SIGKILL after 30 s).
set -euo pipefail

RUNS=3
CONSUME_BYTES=2G
PRODUCE_SECONDS=20
CODEC_SECONDS=10
LATENCY_SECONDS=20
LATENCY_WARMUP_SECONDS=2
LATENCY_RATE=20
DISK_SECONDS_PER_SIZE=2
DISK_SEQ_BYTES=512M
WAL_SUBMITTERS=1,8,64
WAL_SECONDS=3
PROFILE=release
BUILD=1
BROKER_KIND=sluice
OUT_DIR=""

while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --consume-bytes) CONSUME_BYTES=$2; shift 2 ;;
        --produce-seconds) PRODUCE_SECONDS=$2; shift 2 ;;
        --latency-seconds) LATENCY_SECONDS=$2; shift 2 ;;
        --latency-rate) LATENCY_RATE=$2; shift 2 ;;
        --codec-seconds) CODEC_SECONDS=$2; shift 2 ;;
        --smoke)
            RUNS=1; CONSUME_BYTES=256M; PRODUCE_SECONDS=5; LATENCY_SECONDS=5; CODEC_SECONDS=3
            LATENCY_WARMUP_SECONDS=1; DISK_SECONDS_PER_SIZE=0.5; DISK_SEQ_BYTES=64M; WAL_SECONDS=1
            shift ;;
        --debug) PROFILE=debug; shift ;;
        --no-build) BUILD=0; shift ;;
        --mock) BROKER_KIND=mock; shift ;;
        --skip-wal) WAL_SUBMITTERS=""; shift ;;
        --out) OUT_DIR=$2; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if ! [[ "$RUNS" =~ ^[1-9][0-9]?$ ]]; then
    echo "run.sh: --runs must be between 1 and 99" >&2
    exit 2
fi

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
OUT_DIR=${OUT_DIR:-$REPO/target/bench-results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT_DIR"
RESULTS=$OUT_DIR/results.jsonl
COMMANDS=$OUT_DIR/commands.log
: > "$RESULTS"
: > "$COMMANDS"

PACKAGES=(-p sluice-benches)
[[ $BROKER_KIND == mock ]] || PACKAGES+=(-p sluice)
if [[ $PROFILE == release ]]; then
    [[ $BUILD == 0 ]] || cargo build --release "${PACKAGES[@]}"
    BIN=$REPO/target/release
else
    [[ $BUILD == 0 ]] || cargo build "${PACKAGES[@]}"
    BIN=$REPO/target/debug
fi
for binary in "$BIN/loadgen" "$BIN/sluice"; do
    if [[ ! -x $binary && ( $binary == */loadgen || $BROKER_KIND == sluice ) ]]; then
        echo "run.sh: $binary is missing (drop --no-build)" >&2
        exit 1
    fi
done
LOADGEN=$BIN/loadgen
SLUICE=$BIN/sluice

# Scratch space on the same file system as the repository (the broker's data dir and the baselines'
# files must share a disk for the comparison to mean anything).
SCRATCH=$(mktemp -d "$REPO/target/bench-scratch.XXXXXX")
BROKER_PID=""
FAILURES=0

stop_broker() {
    [[ -n "$BROKER_PID" ]] || return 0
    if kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$BROKER_PID" 2>/dev/null; then
            echo "run.sh: broker $BROKER_PID ignored SIGTERM for 30 s; killing it" >&2
            kill -KILL "$BROKER_PID" 2>/dev/null || true
        fi
    fi
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
}

cleanup() {
    stop_broker
    rm -rf "$SCRATCH"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs one scenario: its JSON result lines go to the results file, its summary to the terminal. A
# failed scenario is reported and counted, and the suite goes on.
scenario() {
    echo "+ $*" >> "$COMMANDS"
    echo "== $*" >&2
    if ! "$@" >> "$RESULTS"; then
        echo "run.sh: scenario failed: $*" >&2
        FAILURES=$((FAILURES + 1))
    fi
}

# Starts a broker with a fresh data directory and sets BROKER_PID and BOOTSTRAP.
start_broker() {
    local round=$1
    local dir=$SCRATCH/round-$round
    mkdir -p "$dir/data"
    local log=$OUT_DIR/broker-round-$round.log
    if [[ $BROKER_KIND == mock ]]; then
        local command=("$LOADGEN" mock-broker --ready-file "$dir/ready.json"
            --topics "produce-$round,latency-$round,consume-$round" --partitions 6 --seconds 3600)
    else
        local command=("$SLUICE" serve --data-dir "$dir/data" --kafka-listener 127.0.0.1:0
            --ready-file "$dir/ready.json" --default-partitions 6 --auto-create-topics true)
        # Keep any other listener off fixed ports, where another engineer's broker may be.
        if "$SLUICE" serve --help 2>/dev/null | grep -q -- '--http-listener'; then
            command+=(--http-listener 127.0.0.1:0)
        fi
    fi
    echo "+ ${command[*]} &" >> "$COMMANDS"
    "${command[@]}" > "$log" 2>&1 &
    BROKER_PID=$!
    if ! BOOTSTRAP=$("$LOADGEN" wait-ready --file "$dir/ready.json" --pid "$BROKER_PID" --timeout-secs 120); then
        echo "run.sh: broker did not become ready; its log ($log) ends with:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    echo "broker pid $BROKER_PID serving Kafka on $BOOTSTRAP" >&2
}

echo "machine: $("$LOADGEN" machine)" | tee "$OUT_DIR/machine.txt" >&2
git -C "$REPO" rev-parse HEAD > "$OUT_DIR/commit.txt" 2>/dev/null || true

for round in $(seq 1 "$RUNS"); do
    echo "==== round $round of $RUNS" >&2
    scenario "$LOADGEN" disk-baseline --dir "$SCRATCH" --seconds-per-size "$DISK_SECONDS_PER_SIZE" \
        --seq-bytes "$DISK_SEQ_BYTES"
    if [[ -n "$WAL_SUBMITTERS" ]]; then
        scenario "$LOADGEN" wal --dir "$SCRATCH" --submitters "$WAL_SUBMITTERS" --seconds "$WAL_SECONDS"
    fi

    start_broker "$round"
    scenario "$LOADGEN" produce --bootstrap "$BOOTSTRAP" --topic "produce-$round" --partitions 6 \
        --record-size 1024 --acks all --seconds "$PRODUCE_SECONDS" --broker-pid "$BROKER_PID"
    scenario "$LOADGEN" latency --bootstrap "$BOOTSTRAP" --topic "latency-$round" --partitions 6 \
        --record-size 1024 --acks all --linger-ms 0 --rate-mibps "$LATENCY_RATE" \
        --seconds "$LATENCY_SECONDS" --warmup-seconds "$LATENCY_WARMUP_SECONDS" --broker-pid "$BROKER_PID"
    scenario "$LOADGEN" produce --bootstrap "$BOOTSTRAP" --topic "consume-$round" --partitions 6 \
        --record-size 1024 --acks all --bytes "$CONSUME_BYTES" --seconds 900 --label fill \
        --broker-pid "$BROKER_PID"
    scenario "$LOADGEN" consume --bootstrap "$BOOTSTRAP" --topic "consume-$round" --seconds 600 \
        --broker-pid "$BROKER_PID"
    # Broker-side recompression: the producer sends uncompressed batches of compressible records
    # (not against the mock, which has no topic configs).
    for codec in producer lz4 zstd; do
        [[ $BROKER_KIND == sluice ]] || break
        scenario "$LOADGEN" produce --bootstrap "$BOOTSTRAP" --topic "codec-$codec-$round" \
            --partitions 6 --topic-config "compression.type=$codec" --compressible \
            --record-size 1024 --acks all --seconds "$CODEC_SECONDS" --label "compression.type=$codec" \
            --broker-pid "$BROKER_PID"
    done
    scenario "$LOADGEN" rss --pid "$BROKER_PID"
    stop_broker
    rm -rf "$SCRATCH/round-$round"
done

"$LOADGEN" report --input "$RESULTS" | tee "$OUT_DIR/report.md"
echo >&2
echo "results: $OUT_DIR (results.jsonl, report.md, commands.log, broker logs)" >&2
if [[ $FAILURES -gt 0 ]]; then
    echo "run.sh: $FAILURES scenario(s) failed" >&2
    exit 1
fi
