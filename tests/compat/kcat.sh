#!/usr/bin/env bash
# kcat (Debian's, librdkafka 2.0.2) against sluice: metadata, produce with keys and headers,
# consume from the beginning, list offsets (earliest, latest, by timestamp).
# kcat has no admin commands: the topic is created by auto-creation on first produce (checked
# in metadata); topic deletion is covered by the other clients of the matrix.
# Usage: kcat.sh BOOTSTRAP
set -euo pipefail
BOOTSTRAP=$1
TOPIC=compat-kcat
KCAT=(kcat -b "$BOOTSTRAP" -X socket.timeout.ms=10000 -X partitioner=murmur2_random)
fail() { echo "kcat: FAIL: $*" >&2; exit 1; }

echo "kcat: $(kcat -V | grep -o 'Version [0-9.]*'), $(kcat -V | grep -o 'librdkafka [0-9.]*')"

timeout 30 "${KCAT[@]}" -L -J >/dev/null || fail "metadata (-L)"

# Produce 5 keyed records with a header to partition 0; the topic is auto-created.
TS_BEFORE=$(($(date +%s%3N) - 1))
printf 'k1:v1\nk2:v2\nk3:v3\nk4:v4\nk5:v5\n' |
    timeout 60 "${KCAT[@]}" -P -t "$TOPIC" -p 0 -K: -H source=kcat ||
    fail "produce"

timeout 30 "${KCAT[@]}" -L -t "$TOPIC" -J | grep -q "\"topic\":\"$TOPIC\"" ||
    fail "auto-created topic missing from metadata"

# Consume from the beginning; -e exits at the end of the partition.
GOT=$(timeout 60 "${KCAT[@]}" -C -t "$TOPIC" -p 0 -o beginning -e -q -f '%o %k=%s %h\n') ||
    fail "consume"
WANT=$'0 k1=v1 source=kcat\n1 k2=v2 source=kcat\n2 k3=v3 source=kcat\n3 k4=v4 source=kcat\n4 k5=v5 source=kcat'
[ "$GOT" = "$WANT" ] || fail "consumed records differ: got <<$GOT>> want <<$WANT>>"

# List offsets: -1 = latest, -2 = earliest, a timestamp = first offset at or after it.
LATEST=$(timeout 30 "${KCAT[@]}" -Q -t "$TOPIC:0:-1") || fail "query latest"
echo "$LATEST" | grep -Eq "\[0\] +offset 5\b" || fail "latest offset: $LATEST"
EARLIEST=$(timeout 30 "${KCAT[@]}" -Q -t "$TOPIC:0:-2") || fail "query earliest"
echo "$EARLIEST" | grep -Eq "\[0\] +offset 0\b" || fail "earliest offset: $EARLIEST"
BY_TIME=$(timeout 30 "${KCAT[@]}" -Q -t "$TOPIC:0:$TS_BEFORE") || fail "query by timestamp"
echo "$BY_TIME" | grep -Eq "\[0\] +offset 0\b" || fail "offset for timestamp: $BY_TIME"

echo "kcat: OK (metadata, produce, consume, list offsets; create by auto-create; no delete in kcat)"
