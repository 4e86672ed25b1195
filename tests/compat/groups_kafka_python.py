"""kafka-python consumer groups against sluice: two members of one group split a topic's
partitions and process every record exactly once (commits after processing); after both close, a
new member resumes from the committed offsets; the admin client lists and describes the group and
its committed offsets, and deletes it.

Usage: groups_kafka_python.py BOOTSTRAP
"""

import sys
import threading
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

BOOTSTRAP = sys.argv[1]
# Unique per run, so a rerun against the same broker starts clean.
RUN = int(time.time() * 1000)
TOPIC = f"compat-groups-kafka-python-{RUN}"
GROUP = f"compat-kafka-python-group-{RUN}"
PARTITIONS = 4
RECORDS = 200
TIMEOUT_S = 60


def fail(message):
    print(f"kafka-python groups: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def produce(start, count):
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    for i in range(start, start + count):
        producer.send(TOPIC, value=f"r{i}".encode(), partition=i % PARTITIONS)
    producer.flush(timeout=TIMEOUT_S)
    producer.close()


def member(name, seen, stop, lock):
    consumer = KafkaConsumer(
        TOPIC,
        bootstrap_servers=BOOTSTRAP,
        group_id=GROUP,
        client_id=name,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10000,
        heartbeat_interval_ms=500,
    )
    deadline = time.time() + TIMEOUT_S
    while not stop.is_set() and time.time() < deadline:
        batch = consumer.poll(timeout_ms=200)
        for records in batch.values():
            with lock:
                for record in records:
                    seen.append((name, record.value.decode()))
        if batch:
            consumer.commit()
    consumer.close()


def main():
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=TIMEOUT_S * 1000)
    admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])
    produce(0, RECORDS)

    seen, lock, stop = [], threading.Lock(), threading.Event()
    threads = [threading.Thread(target=member, args=(f"m{i}", seen, stop, lock)) for i in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline:
        with lock:
            if len(seen) >= RECORDS and len({n for n, _ in seen}) == 2:
                break
        time.sleep(0.2)
    # Both members are in the group while it is stable: list and describe it.
    groups = [g["group_id"] for g in admin.list_groups()]
    if GROUP not in groups:
        fail(f"{GROUP} not listed in {groups}")
    described = admin.describe_groups([GROUP])[GROUP]
    if described["error"]:
        fail(f"describe_groups: {described['error']}")
    print(f"kafka-python groups: {GROUP} is {described['group_state']} "
          f"with {len(described['members'])} members")
    stop.set()
    for thread in threads:
        thread.join(TIMEOUT_S)
    values = [v for _, v in seen]
    if sorted(set(values)) != sorted(f"r{i}" for i in range(RECORDS)):
        fail(f"processed {len(set(values))} distinct of {RECORDS}")
    members = {n for n, _ in seen}
    print(f"kafka-python groups: {len(values)} records processed by {sorted(members)}")

    # OffsetFetch in the multi-group form (v8+) when the broker offers it.
    offsets = admin.list_group_offsets({GROUP: None})[GROUP]
    total = sum(meta.offset for meta in offsets.values())
    if total != RECORDS:
        fail(f"committed offsets sum to {total}, expected {RECORDS}: {offsets}")

    # A new member resumes after the committed offsets: it sees only the new records.
    produce(RECORDS, 20)
    later, stop2 = [], threading.Event()
    thread = threading.Thread(target=member, args=("m-late", later, stop2, lock))
    thread.start()
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline:
        with lock:
            if len(later) >= 20:
                break
        time.sleep(0.2)
    stop2.set()
    thread.join(TIMEOUT_S)
    late_values = sorted(v for _, v in later)
    if late_values != sorted(f"r{i}" for i in range(RECORDS, RECORDS + 20)):
        fail(f"the resumed member saw {late_values}")

    deleted = admin.delete_groups([GROUP])
    if deleted != {GROUP: "OK"}:
        fail(f"delete_groups: {deleted}")
    if GROUP in [g["group_id"] for g in admin.list_groups()]:
        fail("the deleted group is still listed")
    admin.delete_topics([TOPIC])
    admin.close()
    print("kafka-python groups: OK")


if __name__ == "__main__":
    main()
