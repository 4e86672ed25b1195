//! Ownership in storage: a partition owned by another broker is not served, and every metadata
//! write a store causes carries the epoch it acquired the partition at, so a write caused under
//! an older epoch is fenced even when the same node owns the partition again.

use std::time::Duration;

use metadata::{Command, CommandResponse, MetadataClient, TopicPartition};

use crate::batch::BatchHeader;
use crate::object_wal_tests::shared_parts;
use crate::test_support::{simple_batch, Harness, SimStore, NODE};
use crate::{Error, LogStore, TimestampType};

fn tp(topic_id: uuid::Uuid, partition: i32) -> TopicPartition {
    TopicPartition {
        topic_id,
        partition,
    }
}

async fn register(meta: &MetadataClient, node_id: u64) {
    let response = meta
        .propose(Command::RegisterBroker {
            node_id,
            host: "127.0.0.1".into(),
            port: 9092,
        })
        .await
        .expect("register");
    assert!(matches!(response, CommandResponse::Incarnation(_)));
}

async fn acquire(meta: &MetadataClient, node_id: u64, tp: TopicPartition) -> i32 {
    match meta
        .propose(Command::AcquirePartitions {
            node_id,
            partitions: vec![tp],
        })
        .await
        .expect("acquire")
    {
        CommandResponse::Acquired(acquired) => acquired[0].1,
        other => panic!("acquire answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_owners_partition_is_not_served_and_stale_epoch_writes_are_fenced() {
    let (_memory, meta, bucket) = shared_parts();
    let objects = SimStore::faulty(bucket);
    // Segment uploads wait until released below: the data written under epoch 0 stays WAL-only
    // until the epoch has moved on, however fast or slow the steps in between are.
    objects.hold_puts(true);
    let h = Harness::start_shared(meta.clone(), objects.clone(), |opts| {
        // Every round of the segment writer flushes what it holds.
        opts.segment_max_age = Duration::ZERO;
    })
    .await;
    register(&meta, NODE).await;
    register(&meta, 2).await;
    let topic = h.create_topic("t", 1).await;
    let p0 = tp(topic, 0);
    for _ in 0..3 {
        h.store
            .append(p0, simple_batch(2, 10, 1_000), TimestampType::CreateTime)
            .await
            .expect("append while owned");
    }

    // Broker 2 takes the partition over: nothing of it is served here any more.
    assert_eq!(acquire(&meta, 2, p0).await, 1);
    let not_leader = |result: Result<(), Error>| {
        assert!(
            matches!(
                result,
                Err(Error::NotLeader {
                    owner: 2,
                    leader_epoch: 1
                })
            ),
            "{result:?}"
        )
    };
    not_leader(
        h.store
            .append(p0, simple_batch(1, 10, 1_000), TimestampType::CreateTime)
            .await
            .map(|_| ()),
    );
    not_leader(h.store.read(p0, 0, 1 << 20).await.map(|_| ()));
    not_leader(h.store.offsets(p0).map(|_| ()));
    not_leader(h.store.delete_records(p0, 2).await.map(|_| ()));

    // Broker 1 acquires it back at epoch 2. This store still holds the state it captured at
    // epoch 0: every write it causes from that state is fenced.
    assert_eq!(acquire(&meta, NODE, p0).await, 2);
    let deleted = h.store.delete_records(p0, 2).await;
    assert!(
        matches!(
            deleted,
            Err(Error::Rejected(metadata::Rejection::StaleLeaderEpoch {
                got: 0,
                current: 2
            }))
        ),
        "{deleted:?}"
    );
    // The segment writer's flush of the epoch-0 data (held at its upload, or started by this
    // round) is rejected too: nothing gets indexed.
    objects.hold_puts(false);
    h.writer_pass().await;
    let pm = meta.state().partition(p0).cloned().expect("partition");
    assert_eq!(pm.log_start_offset, 0);
    assert!(
        pm.segments.is_empty(),
        "a segment written under epoch 0 was indexed at epoch 2: {:?}",
        pm.segments
    );
    assert!(meta.state().producer_state(p0).is_none());
    h.stop().await;
}

/// A restart bumps the epoch at the index end before the store opens; the file WAL's recovered
/// tail was written under the older epoch, so the store records that the new epoch starts after
/// it, and stamps the new epoch into new batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_wal_tail_moves_the_new_epochs_start_after_it() {
    let mut h = Harness::start(|opts| opts.segment_max_age = Duration::from_secs(3600)).await;
    register(&h.meta, NODE).await;
    let topic = h.create_topic("t", 1).await;
    let p0 = tp(topic, 0);
    for _ in 0..5 {
        h.store
            .append(p0, simple_batch(2, 10, 1_000), TimestampType::CreateTime)
            .await
            .expect("append");
    }
    h.store.shutdown().await.expect("shutdown");
    register(&h.meta, NODE).await;
    let pm = h.meta.state().partition(p0).cloned().expect("partition");
    assert_eq!(pm.leader_epoch, 1);
    // Metadata alone only knows the index end (nothing indexed yet).
    assert_eq!(pm.epoch_starts.last().map(|e| e.start_offset), Some(0));

    h.store = LogStore::open(h.opts.clone(), h.objects.clone(), h.meta.clone())
        .await
        .expect("reopen");
    let pm = h.meta.state().partition(p0).cloned().expect("partition");
    let history: Vec<(i32, i64)> = pm
        .epoch_starts
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect();
    assert_eq!(history, vec![(0, 0), (1, 10)]);
    assert_eq!(pm.end_offset_for_epoch(0, 12), Some((0, 10)));
    let appended = h
        .store
        .append(p0, simple_batch(2, 10, 1_000), TimestampType::CreateTime)
        .await
        .expect("append after restart");
    assert_eq!(appended.base_offset, 10);
    let read = h.store.read(p0, 0, 1 << 20).await.expect("read");
    let epochs: Vec<(i64, i32)> = read
        .batches
        .iter()
        .map(|b| {
            let header = BatchHeader::parse(b).expect("header");
            (header.base_offset, header.partition_leader_epoch)
        })
        .collect();
    assert_eq!(
        epochs,
        vec![(0, 0), (2, 0), (4, 0), (6, 0), (8, 0), (10, 1)]
    );
    h.stop().await;
}

/// The epoch is captured when the store acquires its partitions (at open), not when a partition
/// is first used: a bump while this store runs (another process registering under the same node
/// id) fences even partitions this store loads only afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_first_used_after_a_bump_still_writes_under_the_acquired_epoch() {
    let (_memory, meta, objects) = shared_parts();
    register(&meta, NODE).await;
    let topic = uuid::Uuid::new_v4();
    let created = meta
        .propose(Command::CreateTopic {
            name: "t".into(),
            topic_id: topic,
            partitions: 1,
            configs: Default::default(),
            owner: NODE,
            now_ms: crate::now_ms(),
        })
        .await
        .unwrap();
    assert_eq!(created, CommandResponse::Ok);
    let p0 = tp(topic, 0);
    let h = Harness::start_shared(meta.clone(), objects, |opts| {
        opts.segment_max_age = Duration::from_secs(3600);
    })
    .await;
    // Another process registers as the same node: epoch 1. This store acquired p0 at 0.
    register(&meta, NODE).await;
    assert_eq!(meta.state().partition(p0).unwrap().leader_epoch, 1);
    h.store
        .append(p0, simple_batch(2, 10, 1_000), TimestampType::CreateTime)
        .await
        .expect("local append");
    let read = h.store.read(p0, 0, 1 << 20).await.expect("read");
    let header = BatchHeader::parse(&read.batches[0]).expect("header");
    assert_eq!(
        header.partition_leader_epoch, 0,
        "stamped with the acquired epoch"
    );
    let deleted = h.store.delete_records(p0, 1).await;
    assert!(
        matches!(
            deleted,
            Err(Error::Rejected(metadata::Rejection::StaleLeaderEpoch {
                got: 0,
                current: 1
            }))
        ),
        "{deleted:?}"
    );
    assert_eq!(meta.state().partition(p0).unwrap().log_start_offset, 0);
    h.stop().await;
}

/// S3 WAL: a partition's state exists while, and only while, this broker owns it. Released when
/// another broker acquires it (appends fail, nothing is served), acquired again — before anything
/// asks for it — when it comes back, at the new epoch, from the index, with its producer state.
#[tokio::test(start_paused = true)]
async fn s3_wal_partitions_are_released_and_acquired_with_ownership() {
    use crate::object_wal_tests::object_mode;
    use crate::store_tests::{append_one, sequenced};
    use crate::test_support::wait_until;
    let (_memory, meta, bucket) = shared_parts();
    let h = Harness::start_shared(meta.clone(), bucket, object_mode).await;
    register(&meta, NODE).await;
    register(&meta, 2).await;
    let topic = h.create_topic("t", 1).await;
    let p0 = tp(topic, 0);
    for i in 0..3 {
        assert_eq!(
            append_one(&h, p0, &sequenced(5, 0, i * 2, 2))
                .await
                .unwrap(),
            i64::from(i) * 2
        );
    }
    h.wait_for_state("the chunks indexed", |state| {
        state
            .partition(p0)
            .is_some_and(|pm| pm.segmented_end() == 6)
    })
    .await;
    assert!(h.store.inner.loaded_partition(p0).is_some());

    let epoch = acquire(&meta, 2, p0).await;
    wait_until(
        Duration::from_secs(10),
        "the partition released",
        || async { h.store.inner.loaded_partition(p0).is_none() },
    )
    .await;
    assert!(matches!(
        append_one(&h, p0, &sequenced(5, 0, 6, 1)).await,
        Err(Error::NotLeader { owner: 2, .. })
    ));
    assert!(h.store.inner.tail.read(p0, 0, 6, 1 << 20, true).is_empty());

    assert_eq!(acquire(&meta, NODE, p0).await, epoch + 1);
    wait_until(
        Duration::from_secs(10),
        "the partition acquired",
        || async { h.store.inner.loaded_partition(p0).is_some() },
    )
    .await;
    let part = h.store.inner.loaded_partition(p0).expect("loaded");
    assert_eq!(
        part.leader_epoch,
        epoch + 1,
        "acquired at the epoch it has now"
    );
    assert_eq!(part.offsets(), (0, 6));
    // The producer state came with it: a retry is answered with its original offset.
    assert_eq!(append_one(&h, p0, &sequenced(5, 0, 2, 2)).await.unwrap(), 2);
    assert_eq!(append_one(&h, p0, &sequenced(5, 0, 6, 1)).await.unwrap(), 6);
    h.stop().await;
}
