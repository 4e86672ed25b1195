#!/usr/bin/env bash
# Apache Kafka's own command-line tools (kafka-tools 4.4.0, tests/java) against sluice, each run as
# `java -cp ... <main class>` (what bin/kafka-*.sh run): kafka-topics (create, list, describe, alter
# partitions, delete), kafka-configs (describe, alter: add + delete, a refused value),
# kafka-console-producer/-consumer, kafka-get-offsets (earliest, latest, max timestamp),
# kafka-consumer-groups (list, describe, reset offsets --to-earliest --execute, delete),
# kafka-delete-records, kafka-cluster cluster-id; and kafka-metadata-quorum, kafka-acls,
# kafka-log-dirs, kafka-transactions, whose APIs sluice does not implement yet: their clear
# UNSUPPORTED_VERSION failure is asserted (no hang), so each check flips when the API lands.
# Every step asserts on the tool's exit code and output.
# Usage: kafka_tools.sh BOOTSTRAP   (run tests/java/setup.sh first)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BOOTSTRAP=$1
TOPIC=compat-tools
GROUP=compat-tools-group
TMP=$(mktemp -d -t sluice-kafka-tools.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
OUT=$TMP/out
# One JVM per tool run, made cheaper: C1 only, the serial collector, and a class-data-sharing
# archive of the Kafka classes written by the first run and mapped by the others (about half the
# start-up CPU). CDS needs a classpath of jars only, so the jars of tests/java without its classes
# dir; the SLF4J level (WARN) is then given as a property.
JARS=$(cat "$HERE/../java/target/classpath.txt")
JAVA_BASE=(java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xlog:cds=off -Xlog:cds+dynamic=off
    -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$JARS")
JAVA=("${JAVA_BASE[@]}" -XX:ArchiveClassesAtExit="$TMP/kafka-tools.jsa")
# After the first run: map the archive it wrote (if it could not, each run just loads from the jars).
use_archive() {
    if [ -s "$TMP/kafka-tools.jsa" ]; then
        JAVA=("${JAVA_BASE[@]}" -XX:SharedArchiveFile="$TMP/kafka-tools.jsa")
    else
        JAVA=("${JAVA_BASE[@]}")
    fi
}

fail() {
    echo "kafka-tools: FAIL: $*" >&2
    echo "kafka-tools: --- output of the last tool ---" >&2
    cat "$OUT" >&2
    exit 1
}
# tool CLASS ARGS...: runs a tool with stdout+stderr in $OUT; fails the script on a non-zero exit.
tool() {
    local class=$1
    shift
    local status=0
    timeout 60 "${JAVA[@]}" "$class" "$@" >"$OUT" 2>&1 </dev/null || status=$?
    use_archive
    [ "$status" = 0 ] || fail "${class##*.} $* exited with $status"
}
# tool_fails CLASS ARGS...: the tool must exit non-zero.
tool_fails() {
    local class=$1
    shift
    local status=0
    timeout 60 "${JAVA[@]}" "$class" "$@" >"$OUT" 2>&1 </dev/null || status=$?
    use_archive
    [ "$status" != 0 ] || fail "${class##*.} $* succeeded; it must fail"
    # A timeout (124) is a hang, not the clear failure expected.
    [ "$status" != 124 ] || fail "${class##*.} $* hung (killed after 60 s)"
}
expect() { grep -Eq -- "$1" "$OUT" || fail "expected /$1/ in the output"; }
expect_not() { ! grep -Eq -- "$1" "$OUT" || fail "unexpected /$1/ in the output"; }

TOPICS=org.apache.kafka.tools.TopicCommand
CONFIGS=org.apache.kafka.tools.ConfigCommand
CONSUMER_GROUPS=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
OFFSETS=org.apache.kafka.tools.GetOffsetShell
DELETE_RECORDS=org.apache.kafka.tools.DeleteRecordsCommand
B=(--bootstrap-server "$BOOTSTRAP")

# --- kafka-topics ---
tool $TOPICS "${B[@]}" --create --topic $TOPIC --partitions 3 --replication-factor 1 \
    --config retention.ms=86400000
expect "^Created topic $TOPIC\.$"
tool_fails $TOPICS "${B[@]}" --create --topic $TOPIC --partitions 3 --replication-factor 1
expect "TopicExistsException"
tool $TOPICS "${B[@]}" --list
expect "^$TOPIC\$"
tool $TOPICS "${B[@]}" --describe --topic $TOPIC
expect "^Topic: $TOPIC\s+TopicId: \S+\s+PartitionCount: 3\s+ReplicationFactor: 1\s+Configs: retention.ms=86400000"
[ "$(grep -Ec "Partition: [0-2]\s+Leader: [0-9]+\s+Replicas: [0-9]+\s+Isr: [0-9]+" "$OUT")" = 3 ] ||
    fail "describe: 3 partition lines with a leader expected"
tool $TOPICS "${B[@]}" --alter --topic $TOPIC --partitions 4
tool $TOPICS "${B[@]}" --describe --topic $TOPIC
expect "PartitionCount: 4\s"
expect "Partition: 3\s+Leader: [0-9]+"
echo "kafka-tools: kafka-topics create/list/describe/alter OK"

# --- kafka-configs ---
tool $CONFIGS "${B[@]}" --entity-type topics --entity-name $TOPIC --describe
expect "^Dynamic configs for topic $TOPIC are:"
expect "^  retention.ms=86400000 sensitive=false synonyms=\{DYNAMIC_TOPIC_CONFIG:retention.ms=86400000"
tool $CONFIGS "${B[@]}" --entity-type topics --entity-name $TOPIC --alter \
    --add-config retention.ms=3600000,max.message.bytes=2000000
expect "^Completed updating config for topic $TOPIC\."
tool $CONFIGS "${B[@]}" --entity-type topics --entity-name $TOPIC --describe
expect "^  retention.ms=3600000 "
expect "^  max.message.bytes=2000000 "
tool $CONFIGS "${B[@]}" --entity-type topics --entity-name $TOPIC --alter --delete-config retention.ms
tool $CONFIGS "${B[@]}" --entity-type topics --entity-name $TOPIC --describe
expect_not "^  retention.ms="
expect "^  max.message.bytes=2000000 "
tool $CONFIGS "${B[@]}" --entity-type topics --entity-name $TOPIC --describe --all
expect "^  retention.ms=604800000 sensitive=false synonyms=\{DEFAULT_CONFIG:retention.ms=604800000\}"
expect "^  cleanup.policy=delete "
# A value sluice does not support is refused with INVALID_CONFIG and a reason.
tool_fails $CONFIGS "${B[@]}" --entity-type topics --entity-name $TOPIC --alter --add-config cleanup.policy=compact
expect "InvalidConfigurationException: .*cleanup.policy"
echo "kafka-tools: kafka-configs describe/alter OK"

# --- produce 40 keyed records (kafka-console-producer), consume them in a group ---
seq 1 40 | sed 's/.*/key&:value&/' | timeout 60 "${JAVA[@]}" org.apache.kafka.tools.ConsoleProducer \
    "${B[@]}" --topic $TOPIC --reader-property parse.key=true --reader-property key.separator=: \
    --command-property acks=all >"$OUT" 2>&1 || fail "console producer exited with $?"
tool $OFFSETS "${B[@]}" --topic $TOPIC --time latest
declare -A LATEST
TOTAL=0
while IFS=: read -r t p o; do
    [ "$t" = $TOPIC ] || continue
    LATEST[$p]=$o
    TOTAL=$((TOTAL + o))
done <"$OUT"
[ "${#LATEST[@]}" = 4 ] && [ "$TOTAL" = 40 ] ||
    fail "kafka-get-offsets latest: ${#LATEST[@]} partitions, $TOTAL records; expected 4 and 40"
tool $OFFSETS "${B[@]}" --topic $TOPIC --time earliest
[ "$(grep -Ec "^$TOPIC:[0-3]:0\$" "$OUT")" = 4 ] || fail "kafka-get-offsets earliest: all 0 expected"
# Max timestamp (-3): an offset inside each non-empty partition (not a timestamp, not past the end).
tool $OFFSETS "${B[@]}" --topic $TOPIC --time max-timestamp
for p in 0 1 2 3; do
    o=$(sed -n "s/^$TOPIC:$p://p" "$OUT")
    if [ "${LATEST[$p]}" -gt 0 ]; then
        [ -n "$o" ] && [ "$o" -ge 0 ] && [ "$o" -lt "${LATEST[$p]}" ] ||
            fail "kafka-get-offsets max-timestamp of partition $p: '$o' (latest ${LATEST[$p]})"
    fi
done
echo "kafka-tools: console producer + kafka-get-offsets earliest/latest/max-timestamp OK"

tool org.apache.kafka.tools.consumer.ConsoleConsumer "${B[@]}" --topic $TOPIC --group $GROUP \
    --from-beginning --max-messages 40 --timeout-ms 30000 --formatter-property print.key=true
[ "$(grep -Ec "^key([0-9]+)\s+value\1\$" "$OUT")" = 40 ] || fail "console consumer: 40 records expected"
[ "$(grep -E "^key[0-9]+\s" "$OUT" | sort -u | wc -l)" = 40 ] || fail "console consumer: duplicates"
echo "kafka-tools: console consumer read the 40 records in group $GROUP"

# --- kafka-consumer-groups ---
tool $CONSUMER_GROUPS "${B[@]}" --list
expect "^$GROUP\$"
tool $CONSUMER_GROUPS "${B[@]}" --describe --group $GROUP
for p in 0 1 2 3; do
    # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...: everything consumed, lag 0.
    grep -Eq "^$GROUP\s+$TOPIC\s+$p\s+${LATEST[$p]}\s+${LATEST[$p]}\s+0\s" "$OUT" ||
        fail "describe: partition $p must be at ${LATEST[$p]} with lag 0"
done
tool $CONSUMER_GROUPS "${B[@]}" --reset-offsets --group $GROUP --topic $TOPIC --to-earliest --execute
[ "$(grep -Ec "^$GROUP\s+$TOPIC\s+[0-3]\s+0\$" "$OUT")" = 4 ] || fail "reset-offsets: NEW-OFFSET 0 x4 expected"
tool $CONSUMER_GROUPS "${B[@]}" --describe --group $GROUP --offsets
for p in 0 1 2 3; do
    grep -Eq "^$GROUP\s+$TOPIC\s+$p\s+0\s+${LATEST[$p]}\s+${LATEST[$p]}\s" "$OUT" ||
        fail "describe after reset: partition $p must be at 0 with lag ${LATEST[$p]}"
done
tool $CONSUMER_GROUPS "${B[@]}" --delete --group $GROUP
expect "Deletion of requested consumer groups \('$GROUP'\) was successful"
tool $CONSUMER_GROUPS "${B[@]}" --list
expect_not "^$GROUP\$"
# As with Kafka: the tool reports the missing group (and exits 0).
tool $CONSUMER_GROUPS "${B[@]}" --describe --group $GROUP
expect "^Error: Consumer group '$GROUP' does not exist\.$"
echo "kafka-tools: kafka-consumer-groups list/describe/reset-offsets/delete OK"

# --- kafka-delete-records ---
P=0
for p in 1 2 3; do [ "${LATEST[$p]}" -gt "${LATEST[$P]}" ] && P=$p; done
CUT=$((LATEST[$P] / 2))
[ "$CUT" -ge 1 ] || fail "partition $P has too few records (${LATEST[$P]})"
JSON=$TMP/delete-records.json
printf '{"version":1,"partitions":[{"topic":"%s","partition":%d,"offset":%d}]}\n' $TOPIC "$P" "$CUT" >"$JSON"
tool $DELETE_RECORDS "${B[@]}" --offset-json-file "$JSON"
expect "^partition: $TOPIC-$P\s+low_watermark: $CUT\$"
tool $OFFSETS "${B[@]}" --topic $TOPIC --partitions "$P" --time earliest
expect "^$TOPIC:$P:$CUT\$"
# Beyond the high watermark: OFFSET_OUT_OF_RANGE (the tool reports it per partition, exit 0).
printf '{"version":1,"partitions":[{"topic":"%s","partition":%d,"offset":%d}]}\n' $TOPIC "$P" $((LATEST[$P] + 5)) >"$JSON"
tool $DELETE_RECORDS "${B[@]}" --offset-json-file "$JSON"
expect "^partition: $TOPIC-$P\s+error: .*OffsetOutOfRangeException"
tool $OFFSETS "${B[@]}" --topic $TOPIC --partitions "$P" --time earliest
expect "^$TOPIC:$P:$CUT\$"
echo "kafka-tools: kafka-delete-records OK (partition $P cut at $CUT)"

# --- kafka-metadata-quorum: DescribeQuorum is not implemented yet (expected, clear failure) ---
tool_fails org.apache.kafka.tools.MetadataQuorumCommand "${B[@]}" describe --status
expect "UnsupportedVersionException: The node does not support DESCRIBE_QUORUM"
echo "kafka-tools: kafka-metadata-quorum refused with UNSUPPORTED_VERSION as expected (no DescribeQuorum yet)"

# --- kafka-cluster; tools for APIs sluice does not implement fail fast and clearly, never hang ---
tool org.apache.kafka.tools.ClusterTool cluster-id "${B[@]}"
expect "^Cluster ID: [A-Za-z0-9_-]{22}\$"
tool_fails org.apache.kafka.tools.AclCommand "${B[@]}" --list
expect "UnsupportedVersionException: The node does not support DESCRIBE_ACLS"
tool_fails org.apache.kafka.tools.LogDirsCommand "${B[@]}" --describe
expect "UnsupportedVersionException: The node does not support DESCRIBE_LOG_DIRS"
tool_fails org.apache.kafka.tools.TransactionsCommand "${B[@]}" list
expect "The node does not support LIST_TRANSACTIONS"
echo "kafka-tools: kafka-cluster cluster-id OK; kafka-acls, kafka-log-dirs, kafka-transactions refused with UNSUPPORTED_VERSION as expected"

# --- kafka-topics --delete ---
tool $TOPICS "${B[@]}" --delete --topic $TOPIC
for _ in $(seq 1 50); do
    tool $TOPICS "${B[@]}" --list
    grep -q "^$TOPIC\$" "$OUT" || break
    sleep 0.2
done
expect_not "^$TOPIC\$"
tool_fails $TOPICS "${B[@]}" --describe --topic $TOPIC
expect "Topic '$TOPIC' does not exist|UnknownTopicOrPartitionException"
echo "kafka-tools: kafka-topics delete OK"

echo "kafka-tools: OK (kafka-topics, kafka-configs, console producer/consumer, kafka-get-offsets," \
    "kafka-consumer-groups, kafka-delete-records, kafka-cluster; unsupported APIs refused as expected)"
