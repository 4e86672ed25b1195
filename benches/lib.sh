# Shell shared by the benchmark scripts (sourced, not run): stopping a process by PID, starting a
# loopback s3s-fs with a fresh bucket, starting a `sluice serve` and waiting until it is ready.
#
# The caller sets before use:
#   BENCH_NAME   prefix of messages ("s3.sh")
#   LOADGEN      path of the loadgen binary (wait-ready)
#   S3S_FS       path of s3s-fs (see find_s3s_fs)
#   COMMANDS     optional: a file every started command is appended to
# Every process started here is recorded in S3_PID / BROKER_PID so the caller stops it by PID.

S3_PID=""
BROKER_PID=""

bench_log_command() {
    if [[ -n "${COMMANDS:-}" ]]; then
        echo "+ $*" >> "$COMMANDS"
    fi
}

# Sets S3S_FS: $S3S_FS_BIN, else s3s-fs on the PATH, else ~/.cargo/bin/s3s-fs; fails if missing.
find_s3s_fs() {
    S3S_FS=${S3S_FS_BIN:-$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")}
    if [[ ! -x $S3S_FS ]]; then
        echo "$BENCH_NAME: s3s-fs not found (cargo install s3s-fs --version 0.14.1 --features binary --locked)" >&2
        exit 1
    fi
}

# Stops process $1 (started by the caller) by PID: SIGTERM, then SIGKILL after 30 s. $2 names it.
stop_pid() {
    local pid=$1 what=${2:-process}
    [[ -n "$pid" ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "$BENCH_NAME: $what $pid ignored SIGTERM for 30 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}
stop_broker() { stop_pid "$BROKER_PID" broker; BROKER_PID=""; }
stop_s3() { stop_pid "$S3_PID" s3s-fs; S3_PID=""; }

# Starts s3s-fs on a free loopback port with root $1 and an empty bucket "bench", logging to $2;
# sets S3_PID and S3_ENDPOINT and exports fresh AWS_* credentials (the broker reads them). A port
# taken between the pick and the bind is retried.
start_s3() {
    local root=$1 log=$2
    mkdir -p "$root/bench"
    AWS_ACCESS_KEY_ID=AKBENCH$RANDOM$RANDOM
    AWS_SECRET_ACCESS_KEY=$(head -c 30 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40)
    export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
    local attempt port
    for attempt in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        bench_log_command "RUST_LOG=warn $S3S_FS --host 127.0.0.1 --port $port --access-key .. --secret-key .. $root &"
        RUST_LOG=warn NO_COLOR=1 "$S3S_FS" --host 127.0.0.1 --port "$port" \
            --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" "$root" >> "$log" 2>&1 &
        S3_PID=$!
        for _ in $(seq 1 100); do
            kill -0 "$S3_PID" 2>/dev/null || break
            if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then
                S3_ENDPOINT=http://127.0.0.1:$port
                echo "s3s-fs pid $S3_PID on $S3_ENDPOINT" >&2
                return 0
            fi
            sleep 0.1
        done
        echo "$BENCH_NAME: s3s-fs attempt $attempt on port $port failed" >&2
        stop_s3
    done
    echo "$BENCH_NAME: s3s-fs did not start; its log ($log) ends with:" >&2
    tail -n 20 "$log" >&2
    exit 1
}

# Starts `$1 serve` on data dir $2 (log $3), waiting up to $4 seconds for its ready file, with the
# flags every benchmark uses (loopback listeners on free ports, 6 partitions per auto-created topic)
# and any further arguments. Sets BROKER_PID, BOOTSTRAP (Kafka address), HTTP (metrics address) and
# READY_SECONDS (start to ready, e.g. recovery from the bucket on an empty data dir).
start_sluice() {
    local binary=$1 data=$2 log=$3 timeout=$4
    shift 4
    mkdir -p "$data"
    rm -f "$data.ready.json"
    local command=("$binary" serve --data-dir "$data" --kafka-listener 127.0.0.1:0
        --http-listener 127.0.0.1:0 --ready-file "$data.ready.json" --default-partitions 6
        --auto-create-topics true "$@")
    bench_log_command "${command[*]} &"
    local t0
    t0=$(date +%s.%N)
    "${command[@]}" >> "$log" 2>&1 &
    BROKER_PID=$!
    if ! BOOTSTRAP=$("$LOADGEN" wait-ready --file "$data.ready.json" --pid "$BROKER_PID" \
        --timeout-secs "$timeout"); then
        echo "$BENCH_NAME: broker did not become ready; its log ($log) ends with:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    HTTP=$(jq -r .http "$data.ready.json")
    # awk, not bc: bc prints ".99" for a start under a second, which is not valid JSON.
    READY_SECONDS=$(awk -v start="$t0" -v end="$(date +%s.%N)" 'BEGIN { printf "%.3f", end - start }')
    echo "broker pid $BROKER_PID ($binary): Kafka $BOOTSTRAP, HTTP $HTTP" >&2
}
