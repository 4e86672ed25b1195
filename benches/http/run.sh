#!/usr/bin/env bash
# HTTP ingest benchmark: starts a release `sluice serve` (file WAL, fsync on) on loopback and runs
# wrk against the native endpoint — single-event POSTs and NDJSON batches of 100 — with 64
# connections, RUNS times each. Prints wrk's summary, the broker's CPU per request, the machine load.
# Needs wrk (`apt-get install wrk`); not part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-15s}
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }
cargo build --release -p sluice
dir=$(mktemp -d /tmp/sluice-httpbench.XXXX)
./target/release/sluice serve --data-dir "$dir/data" --kafka-listener 127.0.0.1:0 \
  --http-listener 127.0.0.1:0 --ready-file "$dir/ready.json" >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do [ -s "$dir/ready.json" ] && break; sleep 0.1; done
http=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['http'])" "$dir/ready.json")
# Create the topics before measuring (auto-created with the default partition count).
for topic in bench bench-batch; do
  curl -sf -XPOST -H 'content-type: application/json' "http://$http/ingest/v1/$topic" -d '{}' >/dev/null
done
cpu() { awk '{print $14+$15}' "/proc/$pid/stat"; }
for run in $(seq 1 "$RUNS"); do
  for kind in single batch; do
    topic=bench; [ "$kind" = batch ] && topic=bench-batch
    echo "=== $kind, run $run, $(uptime | sed 's/.*load/load/')"
    before=$(cpu)
    wrk -t2 -c64 -d"$DURATION" --latency -s "benches/http/$kind.lua" "http://$http/ingest/v1/$topic" | tee "$dir/out"
    after=$(cpu)
    requests=$(awk '/requests in/ {print $1}' "$dir/out")
    python3 -c "import sys; print('broker cpu per request: %.1f us' % ((int(sys.argv[2]) - int(sys.argv[1])) * 1e4 / int(sys.argv[3])))" "$before" "$after" "$requests"
  done
done
curl -s "http://$http/metrics" | grep -E '^(wal_(groups|records|syncs)|ingest_records_total)'
