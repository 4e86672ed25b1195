#!/usr/bin/env bash
# A/B of two `sluice` binaries on the S3 WAL (loopback s3s-fs), alternating A and B within each round:
# per round and binary a fresh s3s-fs + bucket + broker, then `loadgen latency` (20 MiB/s, linger.ms=0,
# acks=all, 6 partitions, 1 KiB) and `loadgen produce` (closed loop), with /metrics scraped around each.
# Used to measure a broker change (e.g. a tuning default) before/after; `loadgen report` on the
# result file shows medians per label (`A`, `B`).
#
# Usage: benches/s3-ab.sh BINARY_A BINARY_B [--runs N] [--latency-seconds S] [--produce-seconds S]
#                         [--out DIR]
# Every process started here is stopped by its PID.
set -euo pipefail

[[ $# -ge 2 ]] || { sed -n '2,10p' "$0"; exit 2; }
BIN_A=$1; BIN_B=$2; shift 2
RUNS=3
LATENCY_SECONDS=15
PRODUCE_SECONDS=10
OUT_DIR=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --latency-seconds) LATENCY_SECONDS=$2; shift 2 ;;
        --produce-seconds) PRODUCE_SECONDS=$2; shift 2 ;;
        --out) OUT_DIR=$2; shift 2 ;;
        *) echo "s3-ab.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ "$RUNS" =~ ^[1-9][0-9]?$ ]] || { echo "s3-ab.sh: --runs must be 1..99" >&2; exit 2; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
LOADGEN=$REPO/target/release/loadgen
S3S_FS=${S3S_FS_BIN:-$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")}
for binary in "$BIN_A" "$BIN_B" "$LOADGEN" "$S3S_FS"; do
    [[ -x $binary ]] || { echo "s3-ab.sh: $binary is missing" >&2; exit 1; }
done
OUT_DIR=${OUT_DIR:-$REPO/target/bench-results/s3-ab-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT_DIR"
RESULTS=$OUT_DIR/results.jsonl
: > "$RESULTS"
SCRATCH=$(mktemp -d "$REPO/target/bench-s3ab-scratch.XXXXXX")
BROKER_PID=""
S3_PID=""

stop_pid() {
    local pid=$1
    [[ -n "$pid" ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() { stop_pid "$BROKER_PID"; stop_pid "$S3_PID"; rm -rf "$SCRATCH"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

one() {
    local label=$1 binary=$2 round=$3
    local dir=$SCRATCH/$round-$label
    mkdir -p "$dir/root/bench"
    export AWS_ACCESS_KEY_ID=AKAB$RANDOM$RANDOM
    export AWS_SECRET_ACCESS_KEY=secret$RANDOM$RANDOM$RANDOM
    local port endpoint=""
    for _ in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        RUST_LOG=warn "$S3S_FS" --host 127.0.0.1 --port "$port" --access-key "$AWS_ACCESS_KEY_ID" \
            --secret-key "$AWS_SECRET_ACCESS_KEY" "$dir/root" >> "$OUT_DIR/s3s-fs.log" 2>&1 &
        S3_PID=$!
        for _ in $(seq 1 100); do
            kill -0 "$S3_PID" 2>/dev/null || break
            if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then endpoint=http://127.0.0.1:$port; break; fi
            sleep 0.1
        done
        [[ -n $endpoint ]] && break
        stop_pid "$S3_PID"; S3_PID=""
    done
    [[ -n $endpoint ]] || { echo "s3-ab.sh: s3s-fs did not start" >&2; exit 1; }
    "$binary" serve --data-dir "$dir/data" --kafka-listener 127.0.0.1:0 --http-listener 127.0.0.1:0 \
        --ready-file "$dir/ready.json" --default-partitions 6 --auto-create-topics true \
        --wal object --object-store s3://bench/sluice --s3-endpoint "$endpoint" --s3-region us-east-1 \
        >> "$OUT_DIR/broker-$label.log" 2>&1 &
    BROKER_PID=$!
    local bootstrap http
    bootstrap=$("$LOADGEN" wait-ready --file "$dir/ready.json" --pid "$BROKER_PID" --timeout-secs 120)
    http=$(jq -r .http "$dir/ready.json")
    local common=(--bootstrap "$bootstrap" --partitions 6 --record-size 1024 --acks all
        --broker-pid "$BROKER_PID" --metrics-addr "$http" --label "$label")
    "$LOADGEN" latency --topic "latency-$round" "${common[@]}" --linger-ms 0 --rate-mibps 20 \
        --seconds "$LATENCY_SECONDS" --warmup-seconds 2 >> "$RESULTS" || echo "s3-ab.sh: latency $label failed" >&2
    "$LOADGEN" produce --topic "produce-$round" "${common[@]}" --seconds "$PRODUCE_SECONDS" \
        >> "$RESULTS" || echo "s3-ab.sh: produce $label failed" >&2
    "$LOADGEN" rss --pid "$BROKER_PID" --label "$label" >> "$RESULTS"
    stop_pid "$BROKER_PID"; BROKER_PID=""
    stop_pid "$S3_PID"; S3_PID=""
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
