"""confluent-kafka (Python, bundled librdkafka) against sluice: create a topic, produce keyed
records with headers, consume them from the beginning, list offsets (earliest, latest, by
timestamp, through both the consumer and the admin ListOffsets API), delete the topic.

Usage: confluent_kafka_client.py BOOTSTRAP
"""

import sys
import time

import confluent_kafka
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

BOOTSTRAP = sys.argv[1]
TOPIC = "compat-confluent-kafka"
PARTITIONS = 2
RECORDS = 100
TIMEOUT_S = 30


def fail(message):
    print(f"confluent-kafka: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    print(f"confluent-kafka: {confluent_kafka.version()[0]}, librdkafka {confluent_kafka.libversion()[0]}")
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})

    # Create.
    futures = admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)],
                                  request_timeout=TIMEOUT_S)
    futures[TOPIC].result(timeout=TIMEOUT_S)
    metadata = admin.list_topics(timeout=TIMEOUT_S)
    if TOPIC not in metadata.topics or len(metadata.topics[TOPIC].partitions) != PARTITIONS:
        fail(f"created topic not in metadata with {PARTITIONS} partitions")

    # Produce.
    base_ts = int(time.time() * 1000) - 60_000
    delivered = []
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset()))

    producer = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "linger.ms": 5,
                         "enable.idempotence": True, "message.timeout.ms": TIMEOUT_S * 1000})
    for i in range(RECORDS):
        producer.produce(TOPIC, key=f"k{i}", value=f"v{i}", partition=i % PARTITIONS,
                         headers=[("idx", str(i).encode())], timestamp=base_ts + i,
                         on_delivery=on_delivery)
    remaining = producer.flush(TIMEOUT_S)
    if remaining or errors or len(delivered) != RECORDS:
        fail(f"produce: {len(delivered)} delivered, {remaining} pending, errors {errors[:3]}")

    # Consume from the beginning (assign: no consumer group needed).
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "compat-unused",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(TOPIC, p, confluent_kafka.OFFSET_BEGINNING)
                     for p in range(PARTITIONS)])
    seen = {}
    deadline = time.time() + TIMEOUT_S
    while len(seen) < RECORDS and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            fail(f"consume error: {msg.error()}")
        i = int(dict(msg.headers())["idx"])
        expected = (f"k{i}".encode(), f"v{i}".encode(), i % PARTITIONS, base_ts + i)
        got = (msg.key(), msg.value(), msg.partition(), msg.timestamp()[1])
        if got != expected:
            fail(f"record {i}: got {got}, expected {expected}")
        seen[i] = msg.offset()
    if len(seen) != RECORDS:
        fail(f"consumed {len(seen)} of {RECORDS}")

    # List offsets through the consumer.
    per_partition = RECORDS // PARTITIONS
    for p in range(PARTITIONS):
        low, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=TIMEOUT_S)
        if (low, high) != (0, per_partition):
            fail(f"watermarks of partition {p}: {(low, high)}")
    # Record 10 (partition 0, offset 5) has timestamp base_ts + 10.
    answer = consumer.offsets_for_times([TopicPartition(TOPIC, 0, base_ts + 10)], timeout=TIMEOUT_S)
    if answer[0].error or answer[0].offset != 5:
        fail(f"offsets_for_times: {answer[0]}")
    consumer.close()

    # List offsets through the admin API (ListOffsets).
    tp = TopicPartition(TOPIC, 1)
    for spec, expected in [(OffsetSpec.earliest(), 0), (OffsetSpec.latest(), per_partition),
                           (OffsetSpec.for_timestamp(base_ts + 11), 5)]:
        result = admin.list_offsets({tp: spec}, request_timeout=TIMEOUT_S)[tp].result(timeout=TIMEOUT_S)
        if result.offset != expected:
            fail(f"admin list_offsets {spec}: {result.offset}, expected {expected}")

    # Delete.
    admin.delete_topics([TOPIC], request_timeout=TIMEOUT_S)[TOPIC].result(timeout=TIMEOUT_S)
    deadline = time.time() + TIMEOUT_S
    while TOPIC in admin.list_topics(timeout=TIMEOUT_S).topics:
        if time.time() > deadline:
            fail("deleted topic still in metadata")
        time.sleep(0.2)

    print("confluent-kafka: OK (create, produce, consume, list offsets, delete)")


if __name__ == "__main__":
    main()
