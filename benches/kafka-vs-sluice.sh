#!/usr/bin/env bash
# Sluice side by side with Apache Kafka 4.4.0 on the same machine, in the same run.
#
# Every round runs each system in turn (the order rotates from round to round, so the machine's noise
# hits all of them alike), each on a fresh broker with a fresh data directory under target/:
#   kafka        Apache Kafka 4.4.0, KRaft combined mode (one node), default flush policy: the log is
#                NOT fsynced per write (the page cache holds acknowledged records; Kafka relies on
#                replication for durability, which a single node does not have)
#   kafka-fsync  the same with log.flush.interval.messages=1: every append is fsynced before the produce
#                response, i.e. an acks=all acknowledgement is durable on disk, like Sluice's
#   sluice-file  `sluice serve` (release build), file WAL, fsync before every acknowledgement
#   sluice-s3    `sluice serve --wal object` on its local object store (a directory under the data dir):
#                one WAL object per group commit; the acknowledgement waits for the object's write +
#                rename, which object_store's LocalFileSystem does NOT fsync (on S3 the PUT is durable):
#                the code path of the S3 WAL without the network, comparable to Kafka's default
# and measures, against each:
#   warmup         loadgen produce for a few seconds (not reported; JIT and caches warm for all systems)
#   kperf-produce  Kafka's own org.apache.kafka.tools.ProducerPerformance: acks=all, 1 KiB records,
#                  --num-records N, 6 partitions, Java client defaults otherwise (linger.ms=5,
#                  batch.size=16384, idempotence on)
#   lg-produce     loadgen produce: closed loop, librdkafka, acks=all, linger.ms=5, 1 KiB, 6 partitions
#   lg-latency     loadgen latency: open loop at a fixed rate, acks=all, linger.ms=0
#   kperf-consume  Kafka's org.apache.kafka.tools.ConsumerPerformance reading the N records of kperf-produce
#   lg-consume     loadgen consume reading the same N records (checks every offset arrives once, in order)
# For every step the broker's CPU time (utime+stime of /proc/PID/stat) before and after, the wall
# time, the machine's CPU pressure (/proc/pressure/cpu) and the broker's VmHWM are recorded.
# At the end benches/kafka_vs_sluice_report.py prints medians and Sluice/Kafka ratios (markdown).
#
# Usage: benches/kafka-vs-sluice.sh [--runs N] [--records N] [--produce-seconds S]
#            [--latency-seconds S] [--latency-rate MIBPS] [--systems LIST] [--smoke] [--no-build]
#            [--sluice BIN] [--loadgen BIN] [--out DIR]
#   --systems  comma-separated subset of kafka,kafka-fsync,sluice-file,sluice-s3 (default: all four)
#   --smoke    1 round, short runs, few records: checks the script works, figures are not meaningful
#   --no-build use target/release/{sluice,loadgen} as they are (or the --sluice / --loadgen binaries)
# Every step is bounded in records and in time (`timeout`); every broker is stopped by its PID
# (SIGTERM, then SIGKILL after 30 s).
set -euo pipefail

RUNS=3
RECORDS=500000
WARMUP_SECONDS=3
PRODUCE_SECONDS=15
LATENCY_SECONDS=10
LATENCY_WARMUP_SECONDS=2
LATENCY_RATE=20
SYSTEMS=kafka,kafka-fsync,sluice-file,sluice-s3
BUILD=1
SLUICE=""
LOADGEN=""
OUT_DIR=""
# Bounds of the steps whose own options do not bound their time.
STEP_TIMEOUT=300
START_TIMEOUT=180

while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --records) RECORDS=$2; shift 2 ;;
        --produce-seconds) PRODUCE_SECONDS=$2; shift 2 ;;
        --latency-seconds) LATENCY_SECONDS=$2; shift 2 ;;
        --latency-rate) LATENCY_RATE=$2; shift 2 ;;
        --systems) SYSTEMS=$2; shift 2 ;;
        --smoke)
            RUNS=1; RECORDS=50000; WARMUP_SECONDS=1; PRODUCE_SECONDS=3; LATENCY_SECONDS=3
            LATENCY_WARMUP_SECONDS=1; STEP_TIMEOUT=120
            shift ;;
        --no-build) BUILD=0; shift ;;
        --sluice) SLUICE=$2; shift 2 ;;
        --loadgen) LOADGEN=$2; shift 2 ;;
        --out) OUT_DIR=$2; shift 2 ;;
        -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
        *) echo "kafka-vs-sluice.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if ! [[ "$RUNS" =~ ^[1-9][0-9]?$ ]]; then
    echo "kafka-vs-sluice.sh: --runs must be between 1 and 99" >&2
    exit 2
fi
if ! [[ "$RECORDS" =~ ^[1-9][0-9]{0,8}$ ]]; then
    echo "kafka-vs-sluice.sh: --records must be a positive count below 10^9" >&2
    exit 2
fi
IFS=, read -r -a SYSTEM_LIST <<< "$SYSTEMS"
for system in "${SYSTEM_LIST[@]}"; do
    case "$system" in
        kafka|kafka-fsync|sluice-file|sluice-s3) ;;
        *) echo "kafka-vs-sluice.sh: unknown system $system" >&2; exit 2 ;;
    esac
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
for tool in java mvn python3 timeout; do
    command -v "$tool" >/dev/null 2>&1 || { echo "kafka-vs-sluice.sh: $tool not found" >&2; exit 1; }
done
OUT_DIR=${OUT_DIR:-$REPO/target/bench-results/kafka-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT_DIR/steps"
STEPS=$OUT_DIR/steps.jsonl
COMMANDS=$OUT_DIR/commands.log
: > "$STEPS"
: > "$COMMANDS"

if [[ $BUILD == 1 ]]; then
    cargo build --release -p sluice -p sluice-benches
fi
SLUICE=${SLUICE:-$REPO/target/release/sluice}
LOADGEN=${LOADGEN:-$REPO/target/release/loadgen}
for binary in "$SLUICE" "$LOADGEN"; do
    [[ -x $binary ]] || { echo "kafka-vs-sluice.sh: $binary is missing (drop --no-build)" >&2; exit 1; }
done
"$REPO/tests/java/setup.sh" >&2
CLASSPATH_JVM=$("$REPO/tests/java/classpath.sh")
# The same JVM options as Kafka's own scripts (kafka-server-start.sh: 1 GiB heap, G1; the perf tools:
# 512 MiB heap).
KAFKA_JVM=(-Xms1G -Xmx1G -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true)
TOOL_JVM=(-Xmx512M -Djava.awt.headless=true)

SCRATCH=$(mktemp -d "$REPO/target/bench-kafka-scratch.XXXXXX")
BROKER_PID=""
BOOTSTRAP=""
FAILURES=0
TICKS_PER_SECOND=$(getconf CLK_TCK 2>/dev/null || echo 100)

stop_broker() {
    [[ -n "$BROKER_PID" ]] || return 0
    if kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$BROKER_PID" 2>/dev/null; then
            echo "kafka-vs-sluice.sh: broker $BROKER_PID ignored SIGTERM for 30 s; killing it" >&2
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

# utime+stime of process $1 in clock ticks (all threads); empty if it is gone. The command name in
# field 2 may hold spaces, so the fields are counted after its closing parenthesis.
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    awk '{print $12 + $13}' <<< "$stat"
}

peak_rss_kib() {
    awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || true
}

cpu_pressure_us() {
    sed -n 's/^some .*total=\([0-9]*\).*/\1/p' /proc/pressure/cpu 2>/dev/null || true
}

now() { date +%s.%N; }

# A free loopback TCP port (nothing listening on it now; a race with another process is caught when
# the broker fails to start).
free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "kafka-vs-sluice.sh: no free port found" >&2
    return 1
}

# Appends one JSON line to steps.jsonl. Arguments: round system step rc wall_s cpu_ticks_before
# cpu_ticks_after pressure_before pressure_after output_file.
record_step() {
    local round=$1 system=$2 step=$3 rc=$4 wall=$5 t0=$6 t1=$7 p0=$8 p1=$9 out=${10}
    local cpu=null pressure=null hwm
    if [[ -n $t0 && -n $t1 ]]; then
        cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$TICKS_PER_SECOND" 'BEGIN {printf "%.3f", (b - a) / hz}')
    fi
    if [[ -n $p0 && -n $p1 ]]; then
        pressure=$(awk -v a="$p0" -v b="$p1" -v w="$wall" 'BEGIN {printf "%.1f", (w > 0) ? (b - a) / 1e4 / w : 0}')
    fi
    hwm=$(peak_rss_kib "$BROKER_PID")
    [[ -n $hwm ]] || hwm=null
    printf '{"round":%s,"system":"%s","step":"%s","rc":%s,"wall_s":%s,"broker_cpu_s":%s,"cpu_pressure_pct":%s,"broker_peak_rss_kib":%s,"output":"%s"}\n' \
        "$round" "$system" "$step" "$rc" "$wall" "$cpu" "$pressure" "$hwm" "$out" >> "$STEPS"
}

# Runs one bounded step against the current broker: `step ROUND SYSTEM NAME TIMEOUT_S COMMAND...`.
# Its stdout goes to steps/ROUND-SYSTEM-NAME.out (stderr to .err); the broker's CPU time, the wall
# time and the CPU pressure around it go to steps.jsonl.
step() {
    local round=$1 system=$2 name=$3 limit=$4
    shift 4
    local base=$OUT_DIR/steps/$round-$system-$name
    echo "+ $*" >> "$COMMANDS"
    echo "== round $round $system $name" >&2
    local t0 p0 w0 rc=0 w1 t1 p1
    t0=$(cpu_ticks "$BROKER_PID"); p0=$(cpu_pressure_us); w0=$(now)
    timeout --kill-after=10 "$limit" "$@" > "$base.out" 2> "$base.err" || rc=$?
    w1=$(now); t1=$(cpu_ticks "$BROKER_PID"); p1=$(cpu_pressure_us)
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        echo "kafka-vs-sluice.sh: the broker died during $name" >&2
        t1=""
        [[ $rc != 0 ]] || rc=99
    fi
    local wall
    wall=$(awk -v a="$w0" -v b="$w1" 'BEGIN {printf "%.3f", b - a}')
    record_step "$round" "$system" "$name" "$rc" "$wall" "$t0" "$t1" "$p0" "$p1" "$(basename "$base").out"
    if [[ $rc != 0 ]]; then
        echo "kafka-vs-sluice.sh: step $name against $system failed (exit $rc); stderr ends with:" >&2
        grep -v '^SLF4J' "$base.err" | tail -n 5 >&2 || true
        FAILURES=$((FAILURES + 1))
    fi
    return 0
}

java_tool() {
    java "${TOOL_JVM[@]}" -cp "$CLASSPATH_JVM" "$@"
}

# Starts Apache Kafka in KRaft combined mode in $1 (flush policy $2: default|fsync); sets BROKER_PID
# and BOOTSTRAP once the broker listens.
start_kafka() {
    local dir=$1 flush=$2
    local port controller_port cluster_id
    port=$(free_port); controller_port=$(free_port)
    while [[ $controller_port == "$port" ]]; do controller_port=$(free_port); done
    # A Kafka cluster id is 16 random bytes in URL-safe base64 without padding.
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    mkdir -p "$dir/logs"
    cat > "$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/logs
num.partitions=6
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
EOF
    if [[ $flush == fsync ]]; then
        echo "log.flush.interval.messages=1" >> "$dir/server.properties"
    fi
    echo "+ java -cp \$CP kafka.tools.StorageTool format --config $dir/server.properties --cluster-id $cluster_id" >> "$COMMANDS"
    if ! timeout 120 java "${TOOL_JVM[@]}" -cp "$CLASSPATH_JVM" kafka.tools.StorageTool format \
        --config "$dir/server.properties" --cluster-id "$cluster_id" > "$dir/format.log" 2>&1; then
        echo "kafka-vs-sluice.sh: formatting the Kafka log dir failed:" >&2
        tail -n 20 "$dir/format.log" >&2
        return 1
    fi
    echo "+ java ${KAFKA_JVM[*]} -cp \$CP kafka.Kafka $dir/server.properties &" >> "$COMMANDS"
    java "${KAFKA_JVM[@]}" -cp "$CLASSPATH_JVM" kafka.Kafka "$dir/server.properties" > "$dir/kafka.log" 2>&1 &
    BROKER_PID=$!
    BOOTSTRAP=127.0.0.1:$port
    local deadline=$((SECONDS + START_TIMEOUT))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "$BROKER_PID" 2>/dev/null || ((SECONDS > deadline)); then
            echo "kafka-vs-sluice.sh: Kafka did not start listening; its output ends with:" >&2
            tail -n 20 "$dir/kafka.log" >&2
            return 1
        fi
        sleep 0.2
    done
}

# Starts `sluice serve` with WAL kind $2 (file|object) in $1; sets BROKER_PID and BOOTSTRAP.
start_sluice() {
    local dir=$1 wal=$2
    mkdir -p "$dir/data"
    local command=("$SLUICE" serve --data-dir "$dir/data" --kafka-listener 127.0.0.1:0
        --http-listener 127.0.0.1:0 --ready-file "$dir/ready.json" --default-partitions 6
        --auto-create-topics true --group-initial-rebalance-delay-ms 0 --wal "$wal")
    echo "+ ${command[*]} &" >> "$COMMANDS"
    "${command[@]}" > "$dir/sluice.log" 2>&1 &
    BROKER_PID=$!
    if ! BOOTSTRAP=$("$LOADGEN" wait-ready --file "$dir/ready.json" --pid "$BROKER_PID" \
        --timeout-secs "$START_TIMEOUT"); then
        echo "kafka-vs-sluice.sh: sluice did not become ready; its log ends with:" >&2
        tail -n 20 "$dir/sluice.log" >&2
        return 1
    fi
}

# Starts system $2 for round $1, then creates the topic of Kafka's perf tools with Kafka's own
# kafka-topics (TopicCommand): its success is also the sign that the broker serves requests.
start_system() {
    local round=$1 system=$2 dir=$3
    local w0 rc=0
    w0=$(now)
    case "$system" in
        kafka) start_kafka "$dir" default || rc=$? ;;
        kafka-fsync) start_kafka "$dir" fsync || rc=$? ;;
        sluice-file) start_sluice "$dir" file || rc=$? ;;
        sluice-s3) start_sluice "$dir" object || rc=$? ;;
    esac
    if [[ $rc == 0 ]]; then
        echo "+ java -cp \$CP org.apache.kafka.tools.TopicCommand --bootstrap-server $BOOTSTRAP --create --topic kperf-$round --partitions 6 --replication-factor 1" >> "$COMMANDS"
        timeout 120 java "${TOOL_JVM[@]}" -cp "$CLASSPATH_JVM" org.apache.kafka.tools.TopicCommand \
            --bootstrap-server "$BOOTSTRAP" --create --if-not-exists --topic "kperf-$round" \
            --partitions 6 --replication-factor 1 > "$dir/create-topic.log" 2>&1 || rc=$?
        [[ $rc == 0 ]] || { echo "kafka-vs-sluice.sh: creating kperf-$round failed:" >&2
            grep -v '^SLF4J' "$dir/create-topic.log" | tail -n 10 >&2; }
    fi
    local wall
    wall=$(awk -v a="$w0" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}')
    # Start-up: from launch (Kafka: from formatting the log dir) to a created topic.
    record_step "$round" "$system" start "$rc" "$wall" "" "" "" "" ""
    echo "$system pid ${BROKER_PID:-none} on ${BOOTSTRAP:-?} (round $round, ready after $wall s)" >&2
    return "$rc"
}

run_system() {
    local round=$1 system=$2
    local dir=$SCRATCH/$round-$system
    mkdir -p "$dir"
    if ! start_system "$round" "$system" "$dir"; then
        FAILURES=$((FAILURES + 1))
        cp "$dir"/*.log "$OUT_DIR/" 2>/dev/null || true
        stop_broker
        rm -rf "$dir"
        return 0
    fi
    local kafka_args=(--bootstrap "$BOOTSTRAP" --partitions 6 --broker-pid "$BROKER_PID")
    step "$round" "$system" warmup $((WARMUP_SECONDS + 90)) "$LOADGEN" produce "${kafka_args[@]}" \
        --topic "warmup-$round" --record-size 1024 --acks all --seconds "$WARMUP_SECONDS" --flush-timeout-secs 60
    step "$round" "$system" kperf-produce "$STEP_TIMEOUT" java "${TOOL_JVM[@]}" -cp "$CLASSPATH_JVM" \
        org.apache.kafka.tools.ProducerPerformance --topic "kperf-$round" --num-records "$RECORDS" \
        --record-size 1024 --throughput -1 \
        --command-property acks=all "bootstrap.servers=$BOOTSTRAP" client.id=kperf
    step "$round" "$system" lg-produce $((PRODUCE_SECONDS + 90)) "$LOADGEN" produce "${kafka_args[@]}" \
        --topic "produce-$round" --record-size 1024 --acks all --linger-ms 5 --seconds "$PRODUCE_SECONDS" \
        --flush-timeout-secs 60
    step "$round" "$system" lg-latency $((LATENCY_SECONDS + LATENCY_WARMUP_SECONDS + 90)) "$LOADGEN" latency \
        "${kafka_args[@]}" --topic "latency-$round" --record-size 1024 --acks all --linger-ms 0 \
        --rate-mibps "$LATENCY_RATE" --seconds "$LATENCY_SECONDS" --warmup-seconds "$LATENCY_WARMUP_SECONDS" \
        --drain-timeout-secs 30
    step "$round" "$system" kperf-consume "$STEP_TIMEOUT" java "${TOOL_JVM[@]}" -cp "$CLASSPATH_JVM" \
        org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$BOOTSTRAP" --topic "kperf-$round" \
        --num-records "$RECORDS" --timeout 30000 --group "kperf-$round-$system"
    step "$round" "$system" lg-consume "$STEP_TIMEOUT" "$LOADGEN" consume "${kafka_args[@]}" \
        --topic "kperf-$round" --seconds $((STEP_TIMEOUT - 30)) --group "lg-$round-$system"
    step "$round" "$system" rss 30 "$LOADGEN" rss --pid "$BROKER_PID"
    local log
    for log in "$dir"/*.log; do cp "$log" "$OUT_DIR/$round-$system-$(basename "$log")"; done
    stop_broker
    rm -rf "$dir"
}

echo "machine: $("$LOADGEN" machine)" | tee "$OUT_DIR/machine.txt" >&2
git -C "$REPO" rev-parse HEAD > "$OUT_DIR/commit.txt" 2>/dev/null || true
{
    echo "runs=$RUNS records=$RECORDS produce_seconds=$PRODUCE_SECONDS latency_seconds=$LATENCY_SECONDS"
    echo "latency_warmup_seconds=$LATENCY_WARMUP_SECONDS latency_rate_mibps=$LATENCY_RATE systems=$SYSTEMS"
    echo "sluice=$SLUICE loadgen=$LOADGEN"
} > "$OUT_DIR/settings.txt"
echo "started $(date -u +%FT%TZ)" >> "$OUT_DIR/settings.txt"

for round in $(seq 1 "$RUNS"); do
    echo "==== round $round of $RUNS" >&2
    count=${#SYSTEM_LIST[@]}
    for index in $(seq 0 $((count - 1))); do
        # Rotate the order each round: round 1 starts with the first system, round 2 with the second …
        run_system "$round" "${SYSTEM_LIST[$(((index + round - 1) % count))]}"
    done
done
echo "finished $(date -u +%FT%TZ)" >> "$OUT_DIR/settings.txt"

python3 "$REPO/benches/kafka_vs_sluice_report.py" --dir "$OUT_DIR" | tee "$OUT_DIR/report.md"
echo >&2
echo "results: $OUT_DIR (steps.jsonl, steps/, report.md, commands.log, broker logs)" >&2
if [[ $FAILURES -gt 0 ]]; then
    echo "kafka-vs-sluice.sh: $FAILURES step(s) failed" >&2
    exit 1
fi
