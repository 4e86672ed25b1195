"""kafka-python (pure Python) against sluice: create a topic, produce keyed records with headers,
consume them from the beginning, list offsets (earliest, latest, by timestamp), delete the topic.

No api_version is configured: kafka-python detects the broker version by sending ApiVersions,
which is what this checks first.

Usage: kafka_python_client.py BOOTSTRAP
"""

import sys
import time

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

BOOTSTRAP = sys.argv[1]
TOPIC = "compat-kafka-python"
PARTITIONS = 2
RECORDS = 100
TIMEOUT_S = 30


def fail(message):
    print(f"kafka-python: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=TIMEOUT_S * 1000)
    # Auto-detected from ApiVersions (no api_version given).
    brokers = admin.describe_cluster()["brokers"]
    if not brokers:
        fail("describe_cluster lists no brokers")
    detected = admin.get_broker_version_data(brokers[0]["broker_id"])
    print(f"kafka-python: {kafka.__version__}, detected broker version {detected}")
    if detected is None or not detected.api_versions:
        fail("broker version was not detected from ApiVersions")

    # Create.
    admin.create_topics({TOPIC: {"num_partitions": PARTITIONS, "replication_factor": 1}},
                        timeout_ms=TIMEOUT_S * 1000)
    if TOPIC not in admin.list_topics():
        fail("created topic not listed")

    # Produce.
    base_ts = int(time.time() * 1000) - 60_000
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    futures = [producer.send(TOPIC, key=f"k{i}".encode(), value=f"v{i}".encode(),
                             partition=i % PARTITIONS, headers=[("idx", str(i).encode())],
                             timestamp_ms=base_ts + i)
               for i in range(RECORDS)]
    producer.flush(timeout=TIMEOUT_S)
    for i, future in enumerate(futures):
        metadata = future.get(timeout=TIMEOUT_S)
        if (metadata.partition, metadata.offset) != (i % PARTITIONS, i // PARTITIONS):
            fail(f"record {i} acked at {metadata.partition}@{metadata.offset}")
    producer.close()

    # Consume from the beginning (assign: no consumer group needed).
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    seen = {}
    deadline = time.time() + TIMEOUT_S
    while len(seen) < RECORDS and time.time() < deadline:
        for tp, messages in consumer.poll(timeout_ms=500).items():
            for msg in messages:
                i = int(dict(msg.headers)["idx"])
                expected = (f"k{i}".encode(), f"v{i}".encode(), i % PARTITIONS, base_ts + i)
                got = (msg.key, msg.value, msg.partition, msg.timestamp)
                if got != expected:
                    fail(f"record {i}: got {got}, expected {expected}")
                seen[i] = msg.offset
    if len(seen) != RECORDS:
        fail(f"consumed {len(seen)} of {RECORDS}")

    # List offsets.
    per_partition = RECORDS // PARTITIONS
    begin = consumer.beginning_offsets(partitions)
    end = consumer.end_offsets(partitions)
    for tp in partitions:
        if (begin[tp], end[tp]) != (0, per_partition):
            fail(f"offsets of {tp}: {(begin[tp], end[tp])}")
    by_time = consumer.offsets_for_times({partitions[0]: base_ts + 10})
    if by_time[partitions[0]] is None or by_time[partitions[0]].offset != 5:
        fail(f"offsets_for_times: {by_time}")
    consumer.close()

    # Delete.
    admin.delete_topics([TOPIC], timeout_ms=TIMEOUT_S * 1000)
    deadline = time.time() + TIMEOUT_S
    while TOPIC in admin.list_topics():
        if time.time() > deadline:
            fail("deleted topic still listed")
        time.sleep(0.2)
    admin.close()
    print("kafka-python: OK (api_version detection, create, produce, consume, list offsets, delete)")


if __name__ == "__main__":
    main()
