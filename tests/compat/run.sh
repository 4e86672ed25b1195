#!/usr/bin/env bash
# Client compatibility matrix: starts its own sluice (port 0 + ready file), runs every client
# against it, stops it by PID. Fails if any client fails; there are no silent skips — a client
# that cannot run (not installed) is a failure.
#
# Clients: kcat (librdkafka 2.0.2, Debian), confluent-kafka and kafka-python (PyPI, pinned in
# requirements.txt), kafkajs (npm, pinned by kafkajs/package-lock.json), franz-go and Sarama (Go,
# pinned by go/go.mod, built by setup.sh into go/bin), Sarama 1.22.1 (pinned by sarama122/go.mod,
# built into sarama122/bin), the Java client and Kafka's own tools
# (kafka-clients / kafka-tools 4.4.0 from Maven Central, see tests/java); the kill -9 scenario
# (kill9_verifiable.sh) starts and kills a sluice of its own.
# Environment: SLUICE_BIN (default: target/debug/sluice, built first by `cargo build -p sluice`
# so a stale binary is never the one tested; a given SLUICE_BIN is run as is), COMPAT_SKIP_SETUP=1 to not run setup.sh,
# COMPAT_SLUICE_ARGS: extra `sluice serve` arguments (e.g. "--wal object"), split on spaces.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
if [ -z "${SLUICE_BIN:-}" ]; then
    (cd "$ROOT" && cargo build -p sluice --bin sluice)
    SLUICE_BIN=$ROOT/target/debug/sluice
fi
CLIENT_TIMEOUT=${COMPAT_CLIENT_TIMEOUT:-300}

if [ ! -x "$SLUICE_BIN" ]; then
    echo "compat: $SLUICE_BIN not found" >&2
    exit 1
fi
if [ "${COMPAT_SKIP_SETUP:-0}" != 1 ]; then
    "$HERE/setup.sh"
    "$ROOT/tests/java/setup.sh"
fi

WORK=$(mktemp -d -t sluice-compat.XXXXXX)
SLUICE_PID=
stop_sluice() {
    if [ -n "$SLUICE_PID" ] && kill -0 "$SLUICE_PID" 2>/dev/null; then
        kill -TERM "$SLUICE_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SLUICE_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SLUICE_PID" 2>/dev/null || true
        wait "$SLUICE_PID" 2>/dev/null || true
    fi
    SLUICE_PID=
}
cleanup() {
    local status=$?
    stop_sluice
    if [ "$status" -ne 0 ]; then
        echo "compat: --- last 40 lines of the sluice log ---" >&2
        tail -n 40 "$WORK/sluice.log" >&2 || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

ARGS=(serve --data-dir "$WORK/data" --kafka-listener 127.0.0.1:0 --ready-file "$WORK/ready.json")
# The HTTP listener (default 127.0.0.1:8082) goes on port 0 too, once the binary has it.
if "$SLUICE_BIN" serve --help 2>/dev/null | grep -q -- '--http-listener'; then
    ARGS+=(--http-listener 127.0.0.1:0)
fi
if [ -n "${COMPAT_SLUICE_ARGS:-}" ]; then
    read -r -a EXTRA <<<"$COMPAT_SLUICE_ARGS"
    ARGS+=("${EXTRA[@]}")
    echo "compat: extra sluice arguments: ${EXTRA[*]}"
fi
NO_COLOR=1 RUST_LOG=${RUST_LOG:-info,openraft=warn} "$SLUICE_BIN" "${ARGS[@]}" >"$WORK/sluice.log" 2>&1 </dev/null &
SLUICE_PID=$!

for _ in $(seq 1 600); do
    if [ -s "$WORK/ready.json" ] &&
        BOOTSTRAP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kafka"])' \
            "$WORK/ready.json" 2>/dev/null); then
        break
    fi
    if ! kill -0 "$SLUICE_PID" 2>/dev/null; then
        echo "compat: sluice exited before becoming ready" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "${BOOTSTRAP:-}" ]; then
    echo "compat: sluice wrote no ready file within 60 s" >&2
    exit 1
fi
echo "compat: sluice (pid $SLUICE_PID) serving Kafka on $BOOTSTRAP"

PASSED=()
FAILED=()
run_client() {
    local name=$1
    shift
    local started=$SECONDS
    echo "compat: === $name ==="
    if timeout "$CLIENT_TIMEOUT" "$@"; then
        PASSED+=("$name")
        echo "compat: $name passed in $((SECONDS - started)) s"
    else
        echo "compat: $name FAILED (exit $?) after $((SECONDS - started)) s" >&2
        FAILED+=("$name")
    fi
}

run_client kcat "$HERE/kcat.sh" "$BOOTSTRAP"
run_client confluent-kafka "$HERE/.venv/bin/python" "$HERE/confluent_kafka_client.py" "$BOOTSTRAP"
run_client kafka-python "$HERE/.venv/bin/python" "$HERE/kafka_python_client.py" "$BOOTSTRAP"
run_client kafkajs node "$HERE/kafkajs/compat.js" "$BOOTSTRAP"
run_client kafka-python-groups "$HERE/.venv/bin/python" "$HERE/groups_kafka_python.py" "$BOOTSTRAP"
run_client kafkajs-groups node "$HERE/kafkajs/groups.js" "$BOOTSTRAP"
run_client franz-go "$HERE/go/bin/compat-go" franz-go "$BOOTSTRAP"
run_client sarama "$HERE/go/bin/compat-go" sarama "$BOOTSTRAP"
run_client sarama-1.22.1 "$HERE/sarama122/bin/compat-sarama122" "$BOOTSTRAP"
run_client java java -cp "$("$ROOT/tests/java/classpath.sh")" io.sluice.compat.JavaClientCompat "$BOOTSTRAP"
run_client kafka-tools "$HERE/kafka_tools.sh" "$BOOTSTRAP"
run_client kill9-verifiable "$HERE/kill9_verifiable.sh" "$SLUICE_BIN"

if ! kill -0 "$SLUICE_PID" 2>/dev/null; then
    echo "compat: sluice died during the run" >&2
    FAILED+=("sluice-alive")
fi

echo "compat: passed: ${PASSED[*]:-none}; failed: ${FAILED[*]:-none}"
echo "compat: ${#PASSED[@]} passed, ${#FAILED[@]} failed"
[ "${#FAILED[@]}" -eq 0 ]
