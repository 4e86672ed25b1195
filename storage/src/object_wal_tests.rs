//! Tests of the S3 WAL mode of [`crate::LogStore`]: group commit into shared WAL objects, acks in
//! offset order, reads of chunks, compaction + GC of WAL objects, backpressure, PUT failures,
//! restart from the index alone.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use metadata::TopicPartition;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::test_support::{simple_batch, stored, Harness, SimStore};
use crate::{ObjectWalOptions, StorageOptions, TimestampType};

pub(crate) fn tp(topic_id: uuid::Uuid, partition: i32) -> TopicPartition {
    TopicPartition {
        topic_id,
        partition,
    }
}

pub(crate) fn object_mode(opts: &mut StorageOptions) {
    opts.object_wal = Some(ObjectWalOptions {
        linger: Duration::from_millis(5),
        flush_bytes: 256 * 1024,
        max_object_bytes: 1024 * 1024,
        max_inflight_puts: 4,
        max_unflushed_bytes: 4 * 1024 * 1024,
        lanes: 2,
        max_unindexed_objects: 16,
        sweep_interval: Duration::from_secs(3600),
        put_give_up: Duration::from_secs(30),
    });
    // Compaction only when asked for by a test.
    opts.segment_bytes = 1 << 40;
    opts.segment_max_age = Duration::from_secs(3600);
}

pub(crate) async fn read_all(h: &Harness, tp: TopicPartition) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut next = 0;
    for _ in 0..10_000 {
        let result = h.store.read(tp, next, 64 * 1024).await.expect("read");
        if result.batches.is_empty() {
            break;
        }
        for bytes in result.batches {
            let header = crate::batch::BatchHeader::parse(&bytes).expect("header");
            next = header.last_offset() + 1;
            out.push(bytes.to_vec());
        }
    }
    out
}

async fn wal_objects(objects: &Arc<dyn ObjectStore>) -> usize {
    objects
        .list(Some(&ObjectPath::from("test-cluster/wal")))
        .filter_map(|item| async move { item.ok() })
        .count()
        .await
}

/// Appends `per_partition` batches to each partition concurrently; returns the expected stored
/// bytes per partition (in offset order).
pub(crate) async fn produce(
    h: &Harness,
    tps: &[TopicPartition],
    per_partition: usize,
) -> Vec<Vec<Vec<u8>>> {
    let mut tickets = Vec::new();
    let mut batches: Vec<Vec<BytesMut>> = vec![Vec::new(); tps.len()];
    for i in 0..per_partition {
        for (p, tp) in tps.iter().enumerate() {
            let batch = simple_batch(3, 100 + i, 1_000 + i as i64);
            batches[p].push(batch.clone());
            tickets.push((
                p,
                i,
                h.store
                    .submit_append(*tp, batch, TimestampType::CreateTime)
                    .await,
            ));
        }
    }
    let mut expected: Vec<Vec<Vec<u8>>> = vec![Vec::new(); tps.len()];
    for (p, i, ticket) in tickets {
        let result = ticket.await.expect("append acknowledged");
        assert_eq!(
            result.base_offset,
            (i * 3) as i64,
            "dense offsets in submit order"
        );
        expected[p].push(stored(&batches[p][i], result.base_offset));
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_group_commit_into_shared_objects_and_read_back() {
    let h = Harness::start(object_mode).await;
    let topic = h.create_topic("t", 3).await;
    let tps: Vec<TopicPartition> = (0..3).map(|p| tp(topic, p)).collect();
    let expected = produce(&h, &tps, 50).await;

    let stats = h.store.object_wal_stats().expect("object WAL stats");
    assert!(stats.objects >= 1);
    assert!(
        stats.objects < 150 / 2,
        "150 batches should share objects, got {} objects",
        stats.objects
    );
    assert_eq!(h.store.wal_stats().syncs, 0, "no file WAL in object mode");
    // Every acknowledged batch reads back before it is indexed, and after.
    for (p, tp) in tps.iter().enumerate() {
        assert_eq!(read_all(&h, *tp).await, expected[p]);
    }
    // Indexing follows the acks, off the latency path.
    h.wait_for_state("everything indexed", |state| {
        tps.iter().all(|tp| {
            state
                .partition(*tp)
                .is_some_and(|pm| pm.segmented_end() == 150)
        })
    })
    .await;
    // Every partition's index points into shared WAL objects.
    let state = h.meta.state();
    for tp in &tps {
        let segments = h.segments(*tp);
        assert!(!segments.is_empty());
        assert!(segments.iter().all(|s| s.footer_len > 0));
        assert!(segments
            .iter()
            .all(|s| state.shared_objects.contains_key(&s.key)));
        assert_eq!(h.segmented_end(*tp), 150);
    }
    for (p, tp) in tps.iter().enumerate() {
        assert_eq!(read_all(&h, *tp).await, expected[p]);
    }
    // Tailing readers are served from the tail cache: not a single GET.
    assert_eq!(h.store.block_cache_stats().gets, 0);
    // Nothing in the data dir: no file WAL was opened.
    assert!(!h.opts.data_dir.join("wal").exists());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reads_everything_back_from_the_objects() {
    let mut h = Harness::start(object_mode).await;
    let topic = h.create_topic("t", 2).await;
    let tps: Vec<TopicPartition> = (0..2).map(|p| tp(topic, p)).collect();
    let expected = produce(&h, &tps, 20).await;
    h.restart().await;
    for (p, tp) in tps.iter().enumerate() {
        let offsets = h.store.offsets(*tp).expect("offsets");
        assert_eq!(offsets.high_watermark, 60);
        // The tail cache is empty after a restart: these reads go to the WAL objects.
        assert_eq!(read_all(&h, *tp).await, expected[p]);
    }
    assert!(
        h.store.block_cache_stats().gets > 0,
        "cold reads come from the objects"
    );
    // Appends continue right after the indexed data.
    let batch = simple_batch(1, 10, 5);
    let result = h
        .store
        .append(tps[0], batch, TimestampType::CreateTime)
        .await
        .expect("append after restart");
    assert_eq!(result.base_offset, 60);
    h.stop().await;
}

/// Whether every segment of `tps` is a segment object of its own (no chunk of a WAL object).
fn all_compacted(h: &Harness, tps: &[TopicPartition]) -> bool {
    let state = h.meta.state();
    tps.iter().all(|tp| {
        h.segments(*tp)
            .iter()
            .all(|s| !state.shared_objects.contains_key(&s.key) && s.footer_len == 0)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_rewrites_chunks_and_gc_deletes_wal_objects() {
    let h = Harness::start(|opts| {
        object_mode(opts);
        opts.segment_bytes = 16 * 1024;
        // Every indexed chunk is due at once: only the rounds' order decides what is merged.
        opts.segment_max_age = Duration::ZERO;
        opts.gc_grace = Duration::ZERO;
    })
    .await;
    let topic = h.create_topic("t", 2).await;
    let tps: Vec<TopicPartition> = (0..2).map(|p| tp(topic, p)).collect();
    let expected = produce(&h, &tps, 40).await;
    assert!(wal_objects(&h.objects).await > 0);
    h.wait_for_state("everything indexed", |state| {
        tps.iter().all(|tp| {
            state
                .partition(*tp)
                .is_some_and(|pm| pm.segmented_end() == 120)
        })
    })
    .await;
    // A round rewrites the first due run of each partition (at most `segment_bytes`): a few
    // rounds rewrite everything. The bound counts rounds, not time.
    let mut rounds = 0;
    while !all_compacted(&h, &tps) {
        assert!(
            rounds < 50,
            "chunks still not compacted after {rounds} rounds"
        );
        h.writer_pass().await;
        rounds += 1;
    }
    assert!(h.meta.state().shared_objects.is_empty());
    // Every WAL object left the index: one GC pass (no grace) deletes them all.
    h.housekeeping_pass().await;
    assert_eq!(wal_objects(&h.objects).await, 0, "WAL objects deleted");
    for (p, tp) in tps.iter().enumerate() {
        assert_eq!(h.segmented_end(*tp), 120);
        assert_eq!(read_all(&h, *tp).await, expected[p]);
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_store_applies_backpressure_and_nothing_is_acked_before_the_put() {
    let faulty = SimStore::faulty(Arc::new(object_store::memory::InMemory::new()));
    let handle = faulty.clone();
    let h = Harness::start_with(
        move |_| faulty,
        |opts| {
            object_mode(opts);
            if let Some(wal) = &mut opts.object_wal {
                wal.max_unflushed_bytes = 64 * 1024;
            }
        },
    )
    .await;
    let topic = h.create_topic("t", 1).await;
    let tp = tp(topic, 0);
    handle.hold_puts(true);
    // ~20 KiB each: the budget (64 KiB) admits three, the fourth waits to be placed.
    let mut tickets = Vec::new();
    for _ in 0..3 {
        let batch = simple_batch(1, 20 * 1024, 1);
        tickets.push(
            h.store
                .submit_append(tp, batch, TimestampType::CreateTime)
                .await,
        );
    }
    // The three placed batches hold their bytes of the budget until their PUT: what is left
    // cannot admit a fourth (the semaphore makes it wait; no waiting needed to show it).
    let fourth_batch = simple_batch(1, 20 * 1024, 1);
    let wal = h.store.inner.object_wal.as_ref().unwrap().current();
    assert!(
        wal.budget_available() < fourth_batch.len(),
        "over budget, yet {} bytes of it are free",
        wal.budget_available()
    );
    let store = h.store.clone();
    let fourth = tokio::spawn(async move {
        store
            .submit_append(tp, fourth_batch, TimestampType::CreateTime)
            .await
            .await
    });
    assert!(!fourth.is_finished(), "over budget: the producer waits");
    assert_eq!(
        h.store.offsets(tp).unwrap().high_watermark,
        0,
        "nothing durable yet"
    );
    handle.hold_puts(false);
    for (i, ticket) in tickets.into_iter().enumerate() {
        assert_eq!(ticket.await.expect("acked").base_offset, i as i64);
    }
    assert_eq!(fourth.await.unwrap().expect("acked").base_offset, 3);
    assert_eq!(h.store.offsets(tp).unwrap().high_watermark, 4);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_puts_are_retried_until_stored() {
    let faulty = SimStore::faulty(Arc::new(object_store::memory::InMemory::new()));
    let handle = faulty.clone();
    let h = Harness::start_with(move |_| faulty, object_mode).await;
    let topic = h.create_topic("t", 1).await;
    let tp = tp(topic, 0);
    handle.fail_puts.store(3, Ordering::SeqCst);
    let expected = produce(&h, &[tp], 5).await;
    let stats = h.store.object_wal_stats().unwrap();
    assert!(stats.put_retries >= 3, "{stats:?}");
    assert_eq!(read_all(&h, tp).await, expected[0]);
    h.stop().await;
}

/// Metadata in memory and an in-memory bucket, both shared by every store of a test.
pub(crate) fn shared_parts() -> (
    Arc<metadata::MemoryMetadata>,
    metadata::MetadataClient,
    Arc<dyn ObjectStore>,
) {
    shared_parts_with_timeout(Duration::from_secs(3600))
}

/// [`shared_parts`] whose metadata answers `NotPersisted` after `persist_timeout`.
pub(crate) fn shared_parts_with_timeout(
    persist_timeout: Duration,
) -> (
    Arc<metadata::MemoryMetadata>,
    metadata::MetadataClient,
    Arc<dyn ObjectStore>,
) {
    let memory = Arc::new(metadata::MemoryMetadata::new(
        "test-cluster",
        persist_timeout,
    ));
    let client = metadata::MetadataClient::new(memory.clone());
    (
        memory,
        client,
        Arc::new(object_store::memory::InMemory::new()),
    )
}

/// Two brokers' storage against one index and one bucket, in one process: a replacement on an
/// empty data dir reads everything the first acknowledged and appends right after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_on_the_same_index_reads_what_the_first_acknowledged() {
    let (_memory, meta, objects) = shared_parts();
    let a = Harness::start_shared(meta.clone(), objects.clone(), object_mode).await;
    let topic = a.create_topic("t", 2).await;
    let tps: Vec<TopicPartition> = (0..2).map(|p| tp(topic, p)).collect();
    let expected = produce(&a, &tps, 20).await;
    a.stop().await;

    let b = Harness::start_shared(meta, objects, object_mode).await;
    for (p, tp) in tps.iter().enumerate() {
        assert_eq!(b.store.offsets(*tp).expect("offsets").high_watermark, 60);
        assert_eq!(read_all(&b, *tp).await, expected[p]);
    }
    let result = b
        .store
        .append(tps[1], simple_batch(2, 10, 5), TimestampType::CreateTime)
        .await
        .expect("append on the replacement");
    assert_eq!(result.base_offset, 60);
    b.stop().await;
}

/// Persisted before acted on, on the shared index: while metadata durability is held, compaction
/// is applied (a WAL object leaves the index) but GC deletes nothing; once released, it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_nothing_the_index_has_not_made_durable() {
    // Held durability answers proposals and `durable_state` with `NotPersisted` after 1 s: a
    // housekeeping pass under the hold then ends instead of waiting for the release. (Nothing
    // has to finish within that second: before the hold metadata answers at once, under it
    // every wait is meant to end this way.)
    let (memory, meta, objects) = shared_parts_with_timeout(Duration::from_secs(1));
    let h = Harness::start_shared(meta, objects, |opts| {
        object_mode(opts);
        // Compaction of every indexed chunk at once, and no GC grace.
        opts.segment_bytes = 1 << 20;
        opts.segment_max_age = Duration::ZERO;
        opts.gc_grace = Duration::ZERO;
        if let Some(wal) = &mut opts.object_wal {
            // Acks never wait for the (held) index.
            wal.max_unindexed_objects = 1024;
        }
    })
    .await;
    let topic = h.create_topic("t", 1).await;
    let tps = [tp(topic, 0)];
    // Held before anything is written: every index change from here on is applied, not durable.
    memory.hold_durability(true);
    let expected = produce(&h, &tps, 40).await;
    let before = wal_objects(&h.objects).await;
    assert!(before > 0);
    // Compaction (by the applied index) retires a WAL object: applied, not durable.
    h.wait_for_state("a WAL object retired", |state| {
        !state.deleted_objects.is_empty()
    })
    .await;
    let retired: Vec<String> = h
        .meta
        .state()
        .deleted_objects
        .iter()
        .map(|(key, _)| key.clone())
        .collect();
    // A whole housekeeping pass on the applied, undurable state: the GC deletes nothing.
    h.housekeeping_pass().await;
    assert_eq!(
        wal_objects(&h.objects).await,
        before,
        "GC deleted WAL objects the durable index still references"
    );
    memory.hold_durability(false);
    h.housekeeping_pass().await;
    for key in &retired {
        let head = h.objects.head(&ObjectPath::from(key.as_str())).await;
        assert!(
            matches!(head, Err(object_store::Error::NotFound { .. })),
            "{key}: retired and durable, yet not deleted ({head:?})"
        );
    }
    for (p, tp) in tps.iter().enumerate() {
        assert_eq!(read_all(&h, *tp).await, expected[p]);
    }
    h.stop().await;
}
