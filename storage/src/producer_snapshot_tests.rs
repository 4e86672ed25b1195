//! Producer snapshots larger than metadata keeps inline (`producer_snapshots`): every producer
//! survives a restart — after the WAL was truncated (file WAL) or compacted (S3 WAL) — and
//! replaced snapshot objects are queued for GC.

use std::time::Duration;

use bytes::BytesMut;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use crate::object_wal_tests::tp;
use crate::producer_snapshots::INLINE_PRODUCERS;
use crate::store_tests::{append_one, sequenced};
use crate::test_support::Harness;

/// Waits until every append is indexed (the S3 WAL indexes after the ack), then runs one segment
/// writer (or compaction) round, which saves the producer snapshot.
async fn segment_everything(h: &Harness, p: metadata::TopicPartition, end: i64, object: bool) {
    if object {
        h.wait_for_state("everything indexed", |state| {
            state
                .partition(p)
                .is_some_and(|pm| pm.segmented_end() == end)
        })
        .await;
    }
    h.writer_pass().await;
    let state = h.meta.state();
    assert_eq!(h.segmented_end(p), end);
    assert!(h
        .segments(p)
        .iter()
        .all(|s| !state.shared_objects.contains_key(&s.key)));
}

async fn every_producer_survives_a_restart(object: bool) {
    let mut h = Harness::start(|o| {
        // Every writer round writes (or compacts) whatever there is.
        o.segment_max_age = Duration::ZERO;
        if object {
            o.object_wal = Some(crate::ObjectWalOptions::default());
        }
    })
    .await;
    let topic = h.create_topic("many-producers", 1).await;
    let p = tp(topic, 0);
    // More producers than a snapshot keeps inline; one batch each, appended concurrently.
    let producers = INLINE_PRODUCERS as i64 + 500;
    let batches: Vec<BytesMut> = (0..producers)
        .map(|i| sequenced(10_000 + i, 0, 0, 1))
        .collect();
    let offsets: Vec<i64> =
        futures::future::join_all(batches.iter().map(|batch| append_one(&h, p, batch)))
            .await
            .into_iter()
            .map(|r| r.expect("append"))
            .collect();
    segment_everything(&h, p, producers, object).await;
    let state = h.meta.state();
    let snapshot = state.producer_state(p).expect("snapshot").clone();
    assert_eq!(
        snapshot.spilled.as_ref().map(|s| s.producers),
        Some(producers as u64),
        "every producer in one spilled snapshot"
    );
    let first_key = snapshot.spilled.as_ref().expect("spilled").key.clone();
    assert!(snapshot.producers.is_empty(), "nothing inline once spilled");
    h.objects
        .head(&ObjectPath::from(first_key.as_str()))
        .await
        .expect("the snapshot object exists");
    h.restart().await;
    // Every producer's batch is still recognized as a retry, the oldest ones included (a
    // snapshot cut to the most recent 1,000 would have forgotten 500 of them).
    for (i, batch) in batches.iter().enumerate() {
        assert_eq!(
            append_one(&h, p, batch).await.expect("retry"),
            offsets[i],
            "retry of producer {} after a restart",
            10_000 + i
        );
    }
    assert_eq!(h.store.offsets(p).unwrap().high_watermark, producers);
    // The next batch of every producer continues its sequence; a new snapshot replaces the old
    // object, which is queued for GC.
    let next: Vec<BytesMut> = (0..producers)
        .map(|i| sequenced(10_000 + i, 0, 1, 1))
        .collect();
    futures::future::join_all(next.iter().map(|batch| append_one(&h, p, batch)))
        .await
        .into_iter()
        .for_each(|r| {
            r.expect("next batch");
        });
    segment_everything(&h, p, 2 * producers, object).await;
    assert!(h
        .meta
        .state()
        .producer_state(p)
        .and_then(|s| s.spilled.clone())
        .is_some_and(|s| s.key != first_key && s.producers == producers as u64));
    assert!(h
        .meta
        .state()
        .deleted_objects
        .iter()
        .any(|(key, _)| *key == first_key));
    h.restart().await;
    assert!(matches!(
        append_one(&h, p, &sequenced(10_000, 0, 5, 1)).await,
        Err(crate::Error::OutOfOrderSequence {
            expected: 2,
            got: 5
        })
    ));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_producer_survives_a_restart_after_wal_truncation() {
    every_producer_survives_a_restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_producer_survives_a_restart_after_compaction() {
    every_producer_survives_a_restart(true).await;
}
