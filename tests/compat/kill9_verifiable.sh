#!/usr/bin/env bash
# kill -9 with Kafka's system-test tools (kafka-tools 4.4.0): VerifiableProducer (acks=all,
# idempotent) produces a bounded number of records while sluice is SIGKILLed mid-run and restarted
# on the same data dir and the same port; the producer's retries carry it across the restart until
# it has sent everything. VerifiableConsumer then reads the whole topic in a consumer group, and every
# record the producer reported as acknowledged (its `producer_send_success` events) must be consumed,
# at the acknowledged partition and offset, with its value; no record may be stored twice.
# Usage: kill9_verifiable.sh SLUICE_BIN   (run tests/java/setup.sh first)
# Environment: COMPAT_SLUICE_ARGS, extra `sluice serve` arguments (e.g. "--wal object").
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SLUICE_BIN=$1
TOPIC=compat-kill9
RECORDS=${KILL9_RECORDS:-20000}
RATE=2500         # records/s: the run takes ~8 s plus the outage
KILL_AFTER=6000   # acknowledged records before the SIGKILL
CP=$("$HERE/../java/classpath.sh")
JAVA=(java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$CP")

WORK=$(mktemp -d -t sluice-kill9.XXXXXX)
SLUICE_PID=
PRODUCER_PID=
stop_pid() {
    local pid=$1
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
cleanup() {
    local status=$?
    stop_pid "$PRODUCER_PID"
    stop_pid "$SLUICE_PID"
    if [ "$status" -ne 0 ]; then
        for f in "$WORK"/sluice-*.log "$WORK/producer.err" "$WORK/consumer.err"; do
            [ -f "$f" ] || continue
            echo "kill9: --- last 20 lines of $(basename "$f") ---" >&2
            tail -n 20 "$f" >&2
        done
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
fail() { echo "kill9: FAIL: $*" >&2; exit 1; }

EXTRA=()
if [ -n "${COMPAT_SLUICE_ARGS:-}" ]; then
    read -r -a EXTRA <<<"$COMPAT_SLUICE_ARGS"
fi
# start_sluice N LISTENER: starts sluice on the data dir, waits for its ready file, sets BOOTSTRAP.
start_sluice() {
    local n=$1 listener=$2
    rm -f "$WORK/ready.json"
    NO_COLOR=1 RUST_LOG=${RUST_LOG:-info,openraft=warn} "$SLUICE_BIN" serve --data-dir "$WORK/data" \
        --kafka-listener "$listener" --http-listener 127.0.0.1:0 --ready-file "$WORK/ready.json" \
        "${EXTRA[@]}" >"$WORK/sluice-$n.log" 2>&1 </dev/null &
    SLUICE_PID=$!
    BOOTSTRAP=
    for _ in $(seq 1 600); do
        if [ -s "$WORK/ready.json" ] &&
            BOOTSTRAP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kafka"])' \
                "$WORK/ready.json" 2>/dev/null); then
            return 0
        fi
        kill -0 "$SLUICE_PID" 2>/dev/null || fail "sluice ($n) exited before becoming ready"
        sleep 0.1
    done
    fail "sluice ($n) wrote no ready file within 60 s"
}
acked() { grep -c '"name":"producer_send_success"' "$WORK/producer.jsonl" 2>/dev/null || true; }

# A fixed port below the ephemeral range (32768+ on Linux), so that no outgoing connection (not
# even the producer reconnecting while sluice is down, which can connect to itself on an
# ephemeral port) takes it between the kill and the restart.
PORT=$(python3 -c '
import random, socket
for _ in range(100):
    port = random.randrange(20000, 32000)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
')
[ -n "$PORT" ] || fail "no free loopback port in 20000..32000"
start_sluice 1 "127.0.0.1:$PORT"
echo "kill9: sluice (pid $SLUICE_PID) on $BOOTSTRAP${EXTRA[*]:+ with ${EXTRA[*]}}"
timeout 60 "${JAVA[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --create \
    --topic $TOPIC --partitions 3 --replication-factor 1 >"$WORK/topic.out" 2>&1 ||
    { cat "$WORK/topic.out" >&2; fail "create topic"; }

# The producer keeps retrying through the outage: long delivery and blocking timeouts, quick
# reconnects. Idempotence makes the retries of batches that were stored before the kill harmless.
cat >"$WORK/producer.properties" <<EOF
acks=all
enable.idempotence=true
# VerifiableProducer defaults to retries=0.
retries=2147483647
delivery.timeout.ms=120000
max.block.ms=120000
request.timeout.ms=10000
retry.backoff.ms=100
retry.backoff.max.ms=1000
reconnect.backoff.ms=100
reconnect.backoff.max.ms=1000
linger.ms=5
EOF
"${JAVA[@]}" org.apache.kafka.tools.VerifiableProducer --bootstrap-server "$BOOTSTRAP" --topic $TOPIC \
    --max-messages "$RECORDS" --throughput $RATE --acks -1 --command-config "$WORK/producer.properties" \
    >"$WORK/producer.jsonl" 2>"$WORK/producer.err" </dev/null &
PRODUCER_PID=$!

for _ in $(seq 1 600); do
    [ "$(acked)" -ge $KILL_AFTER ] && break
    kill -0 "$PRODUCER_PID" 2>/dev/null || fail "the producer exited early"
    sleep 0.1
done
[ "$(acked)" -ge $KILL_AFTER ] || fail "the producer had only $(acked) acknowledgements after 60 s"
kill -KILL "$SLUICE_PID"
wait "$SLUICE_PID" 2>/dev/null || true
AT_KILL=$(acked)
echo "kill9: SIGKILLed sluice after $AT_KILL acknowledged records; restarting it on port $PORT"
sleep 0.5
start_sluice 2 "127.0.0.1:$PORT"
[ "$BOOTSTRAP" = "127.0.0.1:$PORT" ] || fail "restarted sluice serves $BOOTSTRAP, not port $PORT"

PRODUCER_STATUS=0
for _ in $(seq 1 1500); do
    kill -0 "$PRODUCER_PID" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$PRODUCER_PID" 2>/dev/null && fail "the producer did not finish within 150 s ($(acked) acknowledged)"
wait "$PRODUCER_PID" || PRODUCER_STATUS=$?
PRODUCER_PID=
[ "$PRODUCER_STATUS" = 0 ] || fail "the producer exited with $PRODUCER_STATUS"
echo "kill9: the producer finished: $(acked) of $RECORDS acknowledged"

# Everything the log holds, read back through a consumer group.
timeout 60 "${JAVA[@]}" org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$BOOTSTRAP" \
    --topic $TOPIC --time latest >"$WORK/latest.out" 2>&1 || { cat "$WORK/latest.out" >&2; fail "get offsets"; }
STORED=$(awk -F: -v t=$TOPIC '$1 == t { s += $3 } END { print s + 0 }' "$WORK/latest.out")
[ "$STORED" -gt 0 ] || fail "no records stored: $(cat "$WORK/latest.out")"
timeout 120 "${JAVA[@]}" org.apache.kafka.tools.VerifiableConsumer --bootstrap-server "$BOOTSTRAP" \
    --topic $TOPIC --group-id compat-kill9 --max-messages "$STORED" --verbose --reset-policy earliest \
    >"$WORK/consumer.jsonl" 2>"$WORK/consumer.err" </dev/null || fail "the consumer exited with $?"

python3 - "$WORK/producer.jsonl" "$WORK/consumer.jsonl" "$RECORDS" "$AT_KILL" "$STORED" <<'EOF'
import json
import sys

producer_file, consumer_file, records, at_kill, stored = sys.argv[1:6]
records, at_kill, stored = int(records), int(at_kill), int(stored)


def events(path):
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                yield json.loads(line)


def fail(message):
    print(f"kill9: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


acked = {}
errors = []
for e in events(producer_file):
    if e["name"] == "producer_send_success":
        position = (e["partition"], e["offset"])
        if position in acked:
            fail(f"two acknowledgements for partition {position[0]} offset {position[1]}")
        acked[position] = e["value"]
    elif e["name"] == "producer_send_error":
        errors.append(e)
consumed = {}
for e in events(consumer_file):
    if e["name"] == "record_data":
        position = (e["partition"], e["offset"])
        if position in consumed:
            fail(f"partition {position[0]} offset {position[1]} consumed twice")
        consumed[position] = e["value"]

if errors:
    fail(f"{len(errors)} sends failed, e.g. {errors[0]}")
if len(acked) != records:
    fail(f"{len(acked)} of {records} records acknowledged")
if len(acked) <= at_kill:
    fail("no record was acknowledged after the restart")
missing = [(p, v) for p, v in acked.items() if consumed.get(p) != v]
if missing:
    (p, o), v = missing[0]
    fail(f"{len(missing)} acknowledged records not consumed as acknowledged, e.g. value {v!r} "
         f"acknowledged at partition {p} offset {o}, consumed there: {consumed.get((p, o))!r}")
values = list(consumed.values())
if len(set(values)) != len(values):
    fail(f"{len(values) - len(set(values))} values stored twice (idempotent producer)")
if len(consumed) != stored:
    fail(f"consumed {len(consumed)} records, the log holds {stored}")
print(f"kill9: all {len(acked)} acknowledged records consumed at their acknowledged offsets "
      f"({at_kill} acknowledged before the SIGKILL, {stored} stored, no duplicates)")
EOF
echo "kill9: OK"
