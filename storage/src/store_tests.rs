//! LogStore end to end against a real metadata node, a real WAL and a local-filesystem object store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use metadata::{Command, TopicPartition};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use crate::batch::BatchHeader;
use crate::test_support::{build_batch, simple_batch, stored, within, Harness};
use crate::{Error, Retention, TimestampType};

fn tp(topic_id: uuid::Uuid, partition: i32) -> TopicPartition {
    TopicPartition {
        topic_id,
        partition,
    }
}

/// Appends `batches` in order and returns what each should look like when read back.
async fn append_all(h: &Harness, tp: TopicPartition, batches: &[BytesMut]) -> Vec<Vec<u8>> {
    let mut expected = Vec::new();
    for batch in batches {
        let result = h
            .store
            .append(tp, batch.clone(), TimestampType::CreateTime)
            .await
            .expect("append");
        expected.push(stored(batch, result.base_offset));
    }
    expected
}

/// Reads the whole log from `from` in calls of `max_bytes` and returns the batches.
async fn read_all(h: &Harness, tp: TopicPartition, from: i64, max_bytes: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut next = from;
    for _ in 0..10_000 {
        let result = h.store.read(tp, next, max_bytes).await.expect("read");
        if result.batches.is_empty() {
            assert_eq!(next, result.high_watermark);
            return out;
        }
        for batch in result.batches {
            let header = BatchHeader::parse(&batch).expect("header");
            next = header.last_offset() + 1;
            out.push(batch.to_vec());
        }
    }
    panic!("read_all did not finish");
}

#[tokio::test]
async fn append_assigns_dense_offsets_and_reads_back_exactly() {
    let h = Harness::start(|_| {}).await;
    let topic = h.create_topic("t", 2).await;
    let p0 = tp(topic, 0);
    let batches: Vec<BytesMut> = (1..=20)
        .map(|n| simple_batch(n % 4 + 1, 30, 1_000 + n as i64))
        .collect();
    let mut next = 0;
    let mut expected = Vec::new();
    for batch in &batches {
        let result = h
            .store
            .append(p0, batch.clone(), TimestampType::CreateTime)
            .await
            .unwrap();
        assert_eq!(result.base_offset, next);
        assert_eq!(result.log_append_time_ms, -1);
        assert_eq!(result.log_start_offset, 0);
        next += i64::from(BatchHeader::parse(batch).unwrap().record_count);
        expected.push(stored(batch, result.base_offset));
    }
    let offsets = h.store.offsets(p0).unwrap();
    assert_eq!(
        (offsets.log_start_offset, offsets.high_watermark),
        (0, next)
    );
    // The other partition is independent.
    assert_eq!(h.store.offsets(tp(topic, 1)).unwrap().high_watermark, 0);

    assert_eq!(read_all(&h, p0, 0, 1 << 20).await, expected);
    // One batch at a time (max_bytes smaller than any batch still yields one).
    assert_eq!(read_all(&h, p0, 0, 1).await, expected);
    // An offset inside a batch returns that whole batch.
    let second = BatchHeader::parse(&expected[1]).unwrap();
    let inside = h.store.read(p0, second.last_offset(), 1).await.unwrap();
    assert_eq!(inside.batches.len(), 1);
    assert_eq!(inside.batches[0].to_vec(), expected[1]);
    // At the high watermark: empty; past it or unknown: errors.
    let at_end = h.store.read(p0, next, 1 << 20).await.unwrap();
    assert!(at_end.batches.is_empty());
    assert_eq!(at_end.high_watermark, next);
    assert!(matches!(
        h.store.read(p0, next + 1, 100).await,
        Err(Error::OffsetOutOfRange { offset, log_start: 0, high_watermark }) if offset == next + 1 && high_watermark == next
    ));
    let unknown = tp(uuid::Uuid::new_v4(), 0);
    assert!(matches!(
        h.store.read(unknown, 0, 100).await,
        Err(Error::UnknownTopicOrPartition)
    ));
    assert!(matches!(
        h.store
            .append(unknown, simple_batch(1, 1, 1), TimestampType::CreateTime)
            .await,
        Err(Error::UnknownTopicOrPartition)
    ));
    assert!(matches!(
        h.store.offsets(tp(topic, 2)),
        Err(Error::UnknownTopicOrPartition)
    ));
    // A buffer that is not exactly one batch is refused before anything is assigned.
    let mut torn = simple_batch(1, 10, 1);
    torn.truncate(torn.len() - 1);
    assert!(matches!(
        h.store.append(p0, torn, TimestampType::CreateTime).await,
        Err(Error::InvalidBatch(_))
    ));
    assert_eq!(h.store.offsets(p0).unwrap().high_watermark, next);
    h.stop().await;
}

#[tokio::test]
async fn log_append_time_rewrites_timestamp_and_crc() {
    let h = Harness::start(|_| {}).await;
    let p0 = tp(h.create_topic("t", 1).await, 0);
    let before = crate::now_ms();
    let result = h
        .store
        .append(p0, simple_batch(3, 10, 5), TimestampType::LogAppendTime)
        .await
        .unwrap();
    assert!(result.log_append_time_ms >= before);
    let read = h.store.read(p0, 0, 1 << 20).await.unwrap();
    let header = crate::batch::validate(&read.batches[0]).expect("CRC recomputed");
    assert_eq!(header.max_timestamp, result.log_append_time_ms);
    assert_ne!(header.attributes & 0x08, 0);
    assert_eq!(
        h.store
            .offset_for_timestamp(p0, result.log_append_time_ms)
            .await
            .unwrap(),
        Some((0, result.log_append_time_ms))
    );
    h.stop().await;
}

/// Tiny tail cache and segment size: the log ends up in segment objects, WAL-only and tail-cached
/// batches; reads across all three are byte-exact, and survive a restart.
#[tokio::test]
async fn reads_from_tail_cache_wal_and_segments_and_recovers() {
    let batch = simple_batch(1, 100, 1_000);
    let batch_len = batch.len();
    let mut h = Harness::start(|o| {
        o.segment_bytes = 10 * batch_len as u64;
        o.segment_max_age = Duration::from_secs(3600);
        o.tail_cache_bytes = 3 * batch_len;
        // Small WAL files so the checkpoint can delete some.
        o.wal.file_bytes = 4 * 1024;
    })
    .await;
    let p0 = tp(h.create_topic("t", 1).await, 0);
    let batches: Vec<BytesMut> = (0..55).map(|i| simple_batch(1, 100, 1_000 + i)).collect();
    let expected = append_all(&h, p0, &batches).await;
    // One round writes everything due by size: five segments; the last five batches stay.
    h.writer_pass().await;
    assert_eq!(h.segmented_end(p0), 50);
    assert_eq!(
        h.store
            .inner
            .loaded_partition(p0)
            .unwrap()
            .state()
            .wal_index
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![50, 51, 52, 53, 54]
    );
    let segments = h.segments(p0);
    assert_eq!(segments.len(), 5);
    assert!(segments.iter().all(|s| s.end_offset - s.base_offset == 10));
    // Which path holds what: 50 and 51 only in the WAL, 52..55 in the tail cache.
    let tail = &h.store.inner.tail;
    assert!(tail.get(p0, 49).is_none() && tail.get(p0, 50).is_none() && tail.get(p0, 51).is_none());
    assert!(tail.get(p0, 52).is_some() && tail.get(p0, 54).is_some());
    // The round's checkpoint let the WAL drop files whose records are all in segments.
    assert!(h.store.inner.wal.as_ref().unwrap().start_lsn() > 0);

    assert_eq!(read_all(&h, p0, 0, 1 << 20).await, expected);
    assert_eq!(read_all(&h, p0, 0, 1).await, expected);
    assert_eq!(read_all(&h, p0, 3, 5 * batch_len).await, expected[3..]);
    for offset in [0, 9, 10, 37, 49, 50, 51, 52, 54] {
        let read = h.store.read(p0, offset, 1).await.unwrap();
        assert_eq!(read.batches.len(), 1);
        assert_eq!(
            read.batches[0].to_vec(),
            expected[offset as usize],
            "offset {offset}"
        );
    }
    // A read that spans segment → WAL → tail cache in one call.
    let spanning = h.store.read(p0, 48, 1 << 20).await.unwrap();
    let got: Vec<Vec<u8>> = spanning.batches.iter().map(|b| b.to_vec()).collect();
    assert_eq!(got, expected[48..]);
    // Every segment object is as indexed: data then a footer that parses.
    for seg in &segments {
        let object = h
            .objects
            .get(&ObjectPath::from(seg.key.as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let footer =
            crate::segment::SegmentFooter::parse(&object[seg.data_len as usize..]).unwrap();
        assert_eq!(footer.end_offset, seg.end_offset);
        let data: Vec<u8> = expected[seg.base_offset as usize..seg.end_offset as usize].concat();
        assert_eq!(&object[..seg.data_len as usize], &data[..]);
    }

    h.restart().await;
    let offsets = h.store.offsets(p0).unwrap();
    assert_eq!((offsets.log_start_offset, offsets.high_watermark), (0, 55));
    {
        let part = h
            .store
            .inner
            .loaded_partition(p0)
            .expect("recovered from the WAL");
        assert_eq!(
            part.state().wal_index.keys().copied().collect::<Vec<_>>(),
            vec![50, 51, 52, 53, 54]
        );
    }
    assert_eq!(read_all(&h, p0, 0, 1 << 20).await, expected);
    // Offsets continue densely after the restart.
    let more = simple_batch(2, 100, 2_000);
    let result = h
        .store
        .append(p0, more.clone(), TimestampType::CreateTime)
        .await
        .unwrap();
    assert_eq!(result.base_offset, 55);
    let mut all = expected.clone();
    all.push(stored(&more, 55));
    assert_eq!(read_all(&h, p0, 0, 1 << 20).await, all);
    h.stop().await;
}

#[tokio::test]
async fn age_threshold_moves_wal_data_to_segments_and_restart_keeps_it() {
    let max_age = Duration::from_millis(100);
    let mut h = Harness::start(|o| {
        o.segment_max_age = max_age;
    })
    .await;
    let topic = h.create_topic("t", 3).await;
    let mut expected = Vec::new();
    for p in 0..3 {
        let batches: Vec<BytesMut> = (0..5).map(|i| simple_batch(2, 20, 100 * i)).collect();
        expected.push(append_all(&h, tp(topic, p), &batches).await);
    }
    // Far below `segment_bytes`: only age makes it due. Once the newest batch is `max_age` old
    // (the wait is a lower bound: a slow machine only makes the batches older), one round writes
    // every partition.
    tokio::time::sleep(max_age).await;
    h.writer_pass().await;
    for p in 0..3 {
        assert_eq!(h.segmented_end(tp(topic, p)), 10, "partition {p}");
    }
    h.restart().await;
    for p in 0..3 {
        assert_eq!(h.store.offsets(tp(topic, p)).unwrap().high_watermark, 10);
        assert_eq!(
            read_all(&h, tp(topic, p), 0, 1 << 20).await,
            expected[p as usize]
        );
        // Nothing was replayed into the WAL index: everything is in segments.
        assert!(h
            .store
            .inner
            .loaded_partition(tp(topic, p))
            .is_none_or(|part| part.state().wal_index.is_empty()));
    }
    let result = h
        .store
        .append(
            tp(topic, 1),
            simple_batch(1, 1, 1),
            TimestampType::CreateTime,
        )
        .await
        .unwrap();
    assert_eq!(result.base_offset, 10);
    h.stop().await;
}

#[tokio::test]
async fn concurrent_appends_get_unique_dense_offsets() {
    let h = Harness::start(|_| {}).await;
    let topic = h.create_topic("t", 3).await;
    let mut tasks = Vec::new();
    for p in 0..3 {
        for i in 0..40 {
            let store = h.store.clone();
            tasks.push(tokio::spawn(async move {
                let batch = simple_batch(1 + (i % 3), 10, i as i64);
                let result = store
                    .append(tp(topic, p), batch.clone(), TimestampType::CreateTime)
                    .await
                    .unwrap();
                (p, result.base_offset, batch.len())
            }));
        }
    }
    let mut bases: Vec<Vec<i64>> = vec![Vec::new(); 3];
    for task in tasks {
        let (p, base, _) = task.await.unwrap();
        bases[p as usize].push(base);
    }
    for p in 0..3 {
        let hw = h.store.offsets(tp(topic, p)).unwrap().high_watermark;
        assert_eq!(hw, (0..40).map(|i| 1 + (i % 3) as i64).sum::<i64>());
        // Batches read back tile [0, hw) exactly.
        let batches = read_all(&h, tp(topic, p), 0, 1 << 20).await;
        let mut next = 0;
        for batch in &batches {
            let header = BatchHeader::parse(batch).unwrap();
            assert_eq!(header.base_offset, next);
            crate::batch::validate(batch).unwrap();
            next = header.last_offset() + 1;
        }
        assert_eq!(next, hw);
        let mut sorted = bases[p as usize].clone();
        sorted.sort();
        assert_eq!(
            sorted,
            batches
                .iter()
                .map(|b| BatchHeader::parse(b).unwrap().base_offset)
                .collect::<Vec<_>>()
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn hw_watch_fires_on_append() {
    let h = Harness::start(|_| {}).await;
    let p0 = tp(h.create_topic("t", 1).await, 0);
    let mut watch = h.store.hw_watch(p0).unwrap();
    assert_eq!(*watch.borrow_and_update(), 0);
    let store = h.store.clone();
    let append = tokio::spawn(async move {
        store
            .append(p0, simple_batch(4, 1, 1), TimestampType::CreateTime)
            .await
    });
    within("the watch to fire", watch.changed()).await.unwrap();
    assert_eq!(*watch.borrow_and_update(), 4);
    append.await.unwrap().unwrap();
    h.stop().await;
}

#[derive(Debug, Default)]
struct FailingDisk {
    fail: AtomicBool,
}

impl wal::FaultInjector for FailingDisk {
    fn before_sync(&self) -> std::io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            Err(std::io::Error::other("injected fsync failure"))
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn failed_fsync_fails_the_append_and_keeps_the_high_watermark() {
    let disk = Arc::new(FailingDisk::default());
    let fault = disk.clone();
    let h = Harness::start(move |o| {
        o.wal.fsync = true;
        o.wal.fault = Some(fault);
    })
    .await;
    let p0 = tp(h.create_topic("t", 1).await, 0);
    let first = simple_batch(2, 10, 1);
    h.store
        .append(p0, first.clone(), TimestampType::CreateTime)
        .await
        .unwrap();
    let mut watch = h.store.hw_watch(p0).unwrap();
    watch.borrow_and_update();
    disk.fail.store(true, Ordering::SeqCst);
    let failed = h
        .store
        .append(p0, simple_batch(3, 10, 2), TimestampType::CreateTime)
        .await;
    assert!(matches!(failed, Err(Error::Wal(_))), "{failed:?}");
    assert_eq!(h.store.offsets(p0).unwrap().high_watermark, 2);
    assert!(!watch.has_changed().unwrap());
    // The WAL is out until restart, even when the disk is fine again.
    disk.fail.store(false, Ordering::SeqCst);
    let later = h
        .store
        .append(p0, simple_batch(1, 10, 3), TimestampType::CreateTime)
        .await;
    assert!(matches!(later, Err(Error::Wal(_))), "{later:?}");
    assert_eq!(h.store.offsets(p0).unwrap().high_watermark, 2);
    // What was acknowledged is still readable; nothing beyond it is.
    let read = h.store.read(p0, 0, 1 << 20).await.unwrap();
    assert_eq!(read.batches.len(), 1);
    assert_eq!(read.batches[0].to_vec(), stored(&first, 0));
    assert!(h
        .store
        .read(p0, 2, 1 << 20)
        .await
        .unwrap()
        .batches
        .is_empty());
    h.stop().await;
}

#[tokio::test]
async fn delete_records_moves_log_start_and_survives_restart() {
    let mut h = Harness::start(|_| {}).await;
    let p0 = tp(h.create_topic("t", 1).await, 0);
    let batches: Vec<BytesMut> = (0..10).map(|i| simple_batch(1, 10, i)).collect();
    let expected = append_all(&h, p0, &batches).await;
    assert_eq!(h.store.delete_records(p0, 5).await.unwrap(), 5);
    assert_eq!(
        h.store.delete_records(p0, 3).await.unwrap(),
        5,
        "never moves back"
    );
    assert!(matches!(
        h.store.read(p0, 4, 100).await,
        Err(Error::OffsetOutOfRange { log_start: 5, .. })
    ));
    let read = h.store.read(p0, 5, 1 << 20).await.unwrap();
    assert_eq!(read.log_start_offset, 5);
    assert_eq!(
        read.batches.iter().map(|b| b.to_vec()).collect::<Vec<_>>(),
        expected[5..]
    );
    assert!(matches!(
        h.store.delete_records(p0, 11).await,
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(h.meta.state().partition(p0).unwrap().log_start_offset, 5);

    h.restart().await;
    assert_eq!(h.store.offsets(p0).unwrap().log_start_offset, 5);
    assert_eq!(read_all(&h, p0, 5, 1 << 20).await, expected[5..]);
    // -1 = up to the high watermark; then the log is empty and continues at 10.
    assert_eq!(h.store.delete_records(p0, -1).await.unwrap(), 10);
    h.restart().await;
    let offsets = h.store.offsets(p0).unwrap();
    assert_eq!((offsets.log_start_offset, offsets.high_watermark), (10, 10));
    let result = h
        .store
        .append(p0, simple_batch(1, 1, 1), TimestampType::CreateTime)
        .await
        .unwrap();
    assert_eq!(result.base_offset, 10);
    h.stop().await;
}

async fn object_exists(h: &Harness, key: &str) -> bool {
    match h.objects.head(&ObjectPath::from(key)).await {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(err) => panic!("head {key}: {err}"),
    }
}

#[tokio::test]
async fn time_retention_deletes_old_segments_after_grace() {
    let mut h = Harness::start(|o| {
        // Every round writes whatever the WAL holds.
        o.segment_max_age = Duration::ZERO;
        o.gc_grace = Duration::from_secs(3600);
    })
    .await;
    let topic = h.create_topic("t", 1).await;
    let p0 = tp(topic, 0);
    let now = crate::now_ms();
    let old: Vec<BytesMut> = (0..6)
        .map(|i| simple_batch(1, 10, now - 3_600_000 + i))
        .collect();
    append_all(&h, p0, &old).await;
    h.writer_pass().await;
    assert_eq!(h.segmented_end(p0), 6, "old data segmented");
    let fresh: Vec<BytesMut> = (0..4).map(|i| simple_batch(1, 10, now + i)).collect();
    let fresh_expected = append_all(&h, p0, &fresh).await;
    h.writer_pass().await;
    assert_eq!(h.segmented_end(p0), 10, "new data segmented");
    let old_keys: Vec<String> = h
        .segments(p0)
        .into_iter()
        .filter(|s| s.end_offset <= 6)
        .map(|s| s.key)
        .collect();
    let fresh_keys: Vec<String> = h
        .segments(p0)
        .into_iter()
        .filter(|s| s.base_offset >= 6)
        .map(|s| s.key)
        .collect();
    assert!(!old_keys.is_empty() && !fresh_keys.is_empty());

    h.store.set_retention(
        topic,
        Retention {
            ms: 60_000,
            bytes: -1,
        },
    );
    // One pass: retention moves the log start; its GC step sees the old objects removed from
    // the index, but not for an hour yet: they stay.
    h.housekeeping_pass().await;
    assert_eq!(h.store.offsets(p0).unwrap().log_start_offset, 6);
    assert_eq!(h.meta.state().deleted_objects.len(), old_keys.len());
    for key in &old_keys {
        assert!(
            object_exists(&h, key).await,
            "deleted before the grace period"
        );
    }
    // Past the grace period (here: the same store with none left) the GC deletes them.
    h.opts.gc_grace = Duration::ZERO;
    h.restart().await;
    h.housekeeping_pass().await;
    for key in &old_keys {
        assert!(
            !object_exists(&h, key).await,
            "{key} not deleted after the grace period"
        );
    }
    assert!(h.meta.state().deleted_objects.is_empty());
    for key in &fresh_keys {
        assert!(object_exists(&h, key).await);
    }
    assert!(matches!(
        h.store.read(p0, 0, 100).await,
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&h, p0, 6, 1 << 20).await, fresh_expected);
    h.stop().await;
}

#[tokio::test]
async fn size_retention_keeps_at_least_retention_bytes() {
    let batch_len = simple_batch(1, 100, 0).len();
    let h = Harness::start(|o| {
        o.segment_bytes = 10 * batch_len as u64;
        o.segment_max_age = Duration::from_secs(3600);
        o.gc_grace = Duration::from_millis(0);
    })
    .await;
    let topic = h.create_topic("t", 1).await;
    let p0 = tp(topic, 0);
    let batches: Vec<BytesMut> = (0..40).map(|i| simple_batch(1, 100, i)).collect();
    let expected = append_all(&h, p0, &batches).await;
    h.writer_pass().await;
    assert_eq!(h.segmented_end(p0), 40);
    let segments = h.segments(p0);
    assert_eq!(segments.len(), 4);
    let seg_len = segments[0].data_len as i64;
    h.store.set_retention(
        topic,
        Retention {
            ms: -1,
            bytes: 2 * seg_len,
        },
    );
    // One pass: retention moves the log start, then the GC (no grace) deletes the objects.
    h.housekeeping_pass().await;
    assert_eq!(h.store.offsets(p0).unwrap().log_start_offset, 20);
    assert!(
        !object_exists(&h, &segments[0].key).await && !object_exists(&h, &segments[1].key).await
    );
    assert!(object_exists(&h, &segments[2].key).await && object_exists(&h, &segments[3].key).await);
    // Stable: the remaining two segments are exactly the limit, so the next pass keeps them.
    h.housekeeping_pass().await;
    assert_eq!(h.store.offsets(p0).unwrap().log_start_offset, 20);
    assert!(object_exists(&h, &segments[2].key).await);
    assert_eq!(read_all(&h, p0, 20, 1 << 20).await, expected[20..]);
    h.stop().await;
}

#[tokio::test]
async fn timestamp_lookups_cover_segments_and_wal() {
    let batch_len = build_batch(&[(0, vec![0; 20]), (10, vec![0; 20]), (20, vec![0; 20])]).len();
    let h = Harness::start(|o| {
        o.segment_bytes = 4 * batch_len as u64;
        o.segment_max_age = Duration::from_secs(3600);
    })
    .await;
    let p0 = tp(h.create_topic("t", 1).await, 0);
    assert_eq!(h.store.offset_for_timestamp(p0, 0).await.unwrap(), None);
    assert_eq!(h.store.max_timestamp(p0).await.unwrap(), None);
    // Batch i holds offsets 3i..3i+3 with timestamps 1000i, 1000i+10, 1000i+20, except that batch
    // 5's middle record is late (8500).
    let batches: Vec<BytesMut> = (0..10i64)
        .map(|i| {
            let base = 1_000 * i;
            let middle = if i == 5 { 8_500 } else { base + 10 };
            build_batch(&[
                (base, vec![0; 20]),
                (middle, vec![0; 20]),
                (base + 20, vec![0; 20]),
            ])
        })
        .collect();
    append_all(&h, p0, &batches[..8]).await;
    h.writer_pass().await;
    assert_eq!(h.segmented_end(p0), 24, "two segments");
    // Everything is in segments: the maximum is batch 5's middle record (the exact offset, not
    // the batch's last).
    assert_eq!(h.store.max_timestamp(p0).await.unwrap(), Some((8_500, 16)));
    append_all(&h, p0, &batches[8..]).await;
    h.writer_pass().await;
    assert_eq!(h.segmented_end(p0), 24, "offsets 24..30 stay in the WAL");

    // In a segment: the exact record, not just the batch.
    assert_eq!(
        h.store.offset_for_timestamp(p0, 2_005).await.unwrap(),
        Some((7, 2_010))
    );
    assert_eq!(
        h.store.offset_for_timestamp(p0, 0).await.unwrap(),
        Some((0, 0))
    );
    // The late record (offset 16) comes before batch 6's earlier timestamps.
    assert_eq!(
        h.store.offset_for_timestamp(p0, 6_000).await.unwrap(),
        Some((16, 8_500))
    );
    // In the WAL.
    assert_eq!(
        h.store.offset_for_timestamp(p0, 9_001).await.unwrap(),
        Some((28, 9_010))
    );
    assert_eq!(
        h.store.offset_for_timestamp(p0, 8_600).await.unwrap(),
        Some((27, 9_000))
    );
    assert_eq!(
        h.store.offset_for_timestamp(p0, 100_000).await.unwrap(),
        None
    );
    assert_eq!(h.store.max_timestamp(p0).await.unwrap(), Some((9_020, 29)));
    h.store
        .append(
            p0,
            build_batch(&[(200_000, vec![1]), (1, vec![2])]),
            TimestampType::CreateTime,
        )
        .await
        .unwrap();
    // The exact record, not the batch's last offset (as Kafka answers MAX_TIMESTAMP).
    assert_eq!(
        h.store.max_timestamp(p0).await.unwrap(),
        Some((200_000, 30))
    );
    // Below the log start nothing is found.
    h.store.delete_records(p0, 8).await.unwrap();
    assert_eq!(
        h.store.offset_for_timestamp(p0, 0).await.unwrap(),
        Some((8, 2_020))
    );
    h.stop().await;
}

#[tokio::test]
async fn dropped_topics_are_unknown_and_their_objects_collected() {
    let h = Harness::start(|o| {
        // Every round writes whatever the WAL holds.
        o.segment_max_age = Duration::ZERO;
        o.gc_grace = Duration::from_millis(0);
    })
    .await;
    let topic = h.create_topic("t", 1).await;
    let p0 = tp(topic, 0);
    append_all(&h, p0, &[simple_batch(1, 10, 1), simple_batch(1, 10, 2)]).await;
    h.writer_pass().await;
    assert_eq!(h.segmented_end(p0), 2, "segmented");
    let keys: Vec<String> = h.segments(p0).into_iter().map(|s| s.key).collect();
    h.meta
        .propose(Command::DeleteTopic {
            topic_id: topic,
            now_ms: crate::now_ms(),
        })
        .await
        .unwrap();
    h.store.drop_topic(topic);
    assert!(matches!(
        h.store
            .append(p0, simple_batch(1, 1, 1), TimestampType::CreateTime)
            .await,
        Err(Error::UnknownTopicOrPartition)
    ));
    assert!(matches!(
        h.store.read(p0, 0, 100).await,
        Err(Error::UnknownTopicOrPartition)
    ));
    // The topic's segments left the index with it: the next GC pass (no grace) deletes them.
    assert!(!keys.is_empty());
    h.housekeeping_pass().await;
    for key in &keys {
        assert!(
            !object_exists(&h, key).await,
            "{key} of the deleted topic not collected"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn shutdown_refuses_new_appends() {
    let h = Harness::start(|_| {}).await;
    let p0 = tp(h.create_topic("t", 1).await, 0);
    h.store
        .append(p0, simple_batch(1, 1, 1), TimestampType::CreateTime)
        .await
        .unwrap();
    h.store.shutdown().await.unwrap();
    h.store.shutdown().await.unwrap();
    assert!(matches!(
        h.store
            .append(p0, simple_batch(1, 1, 1), TimestampType::CreateTime)
            .await,
        Err(Error::ShuttingDown)
    ));
    h.stop().await;
}

/// Batches bigger than one ranged GET of a segment scan, read from the WAL and from segments.
#[tokio::test]
async fn large_batches_round_trip_through_wal_and_segments() {
    let big = simple_batch(3, 600 * 1024, 1);
    let h = Harness::start(|o| {
        o.segment_bytes = 2 * big.len() as u64;
        o.segment_max_age = Duration::from_secs(3600);
        o.tail_cache_bytes = 1024;
    })
    .await;
    let p0 = tp(h.create_topic("t", 1).await, 0);
    let batches: Vec<BytesMut> = (0..5).map(|i| simple_batch(3, 600 * 1024, i)).collect();
    let expected = append_all(&h, p0, &batches).await;
    h.writer_pass().await;
    assert_eq!(h.segmented_end(p0), 12, "two segments");
    // 0..12 from segments, 12..15 from the WAL; nothing fits the tail cache.
    assert!(h.store.inner.tail.get(p0, 12).is_none());
    assert_eq!(read_all(&h, p0, 0, 1).await, expected);
    assert_eq!(read_all(&h, p0, 4, 3 * big.len()).await, expected[1..]);
    h.stop().await;
}

/// Catch-up readers racing the segment writer and WAL truncation must see every offset exactly once,
/// in order: a read never jumps over data, whichever of tail cache, WAL or segment holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_reads_racing_the_segment_writer_never_skip() {
    let h = Arc::new(
        Harness::start(|o| {
            o.tail_cache_bytes = 32 * 1024;
            o.segment_bytes = 64 * 1024;
            o.segment_max_age = Duration::from_millis(20);
        })
        .await,
    );
    let topic = h.create_topic("race", 3).await;
    const BATCHES: usize = 1500;
    let writer = {
        let h = Arc::clone(&h);
        tokio::spawn(async move {
            for i in 0..BATCHES {
                let part = tp(topic, (i % 3) as i32);
                h.store
                    .append(
                        part,
                        simple_batch(3, 300, 1_000 + i as i64),
                        TimestampType::CreateTime,
                    )
                    .await
                    .expect("append");
            }
        })
    };
    let mut readers = Vec::new();
    for partition in 0..3 {
        let h = Arc::clone(&h);
        readers.push(tokio::spawn(async move {
            let part = tp(topic, partition);
            let total = (BATCHES / 3) as i64 * 3;
            let mut next = 0i64;
            let mut hw = h.store.hw_watch(part).expect("hw watch");
            // Reads that came back empty although the high watermark was past `next`.
            let mut empty_below_hw = 0;
            while next < total {
                let result = h.store.read(part, next, 4096).await.expect("read");
                if result.batches.is_empty() {
                    if result.high_watermark > next {
                        empty_below_hw += 1;
                        assert!(
                            empty_below_hw < 10_000,
                            "partition {partition}: reads at {next} return nothing below the high watermark {}",
                            result.high_watermark
                        );
                        tokio::task::yield_now().await;
                    } else {
                        // Caught up with the writer: wait for its next append.
                        within(
                            "the next append",
                            hw.wait_for(|&high_watermark| high_watermark > next),
                        )
                        .await
                        .expect("partition open");
                    }
                    continue;
                }
                empty_below_hw = 0;
                for batch in result.batches {
                    let header = BatchHeader::parse(&batch).expect("header");
                    assert!(
                        header.base_offset <= next && header.last_offset() >= next,
                        "partition {partition}: asked for {next}, got batch {}..={}",
                        header.base_offset,
                        header.last_offset()
                    );
                    next = header.last_offset() + 1;
                }
            }
            next
        }));
    }
    writer.await.expect("writer");
    for reader in readers {
        reader.await.expect("reader");
    }
}

/// A read whose byte budget runs out inside a segment must stop there, not continue with the first
/// WAL-only batch further on (which would silently skip everything in between).
#[tokio::test]
async fn a_spent_budget_inside_a_segment_stops_the_read_instead_of_skipping_ahead() {
    let big: Vec<BytesMut> = (0..8).map(|i| simple_batch(4, 2000, 1_000 + i)).collect();
    let big_bytes: usize = big.iter().map(|b| b.len()).sum();
    let h = Harness::start(|o| {
        o.tail_cache_bytes = 1024;
        // The big batches fill a segment exactly; what comes after stays in the WAL.
        o.segment_bytes = big_bytes as u64;
        o.segment_max_age = Duration::from_secs(3600);
    })
    .await;
    let topic = h.create_topic("budget", 1).await;
    let part = tp(topic, 0);
    // Large batches: moved to a segment object by the size threshold.
    append_all(&h, part, &big).await;
    h.writer_pass().await;
    assert_eq!(h.segmented_end(part), 32, "big batches in segments");
    // Small batches, far below both thresholds: WAL-only.
    let small: Vec<BytesMut> = (0..4).map(|i| simple_batch(1, 10, 2_000 + i)).collect();
    append_all(&h, part, &small).await;

    // Budget for one and a half big batches: the first is taken whole, the second does not fit.
    let one_big = big[0].len();
    let result = h
        .store
        .read(part, 0, one_big + one_big / 2)
        .await
        .expect("read");
    let offsets: Vec<(i64, i64)> = result
        .batches
        .iter()
        .map(|b| {
            let header = BatchHeader::parse(b).expect("header");
            (header.base_offset, header.last_offset())
        })
        .collect();
    assert_eq!(
        offsets,
        vec![(0, 3)],
        "the read must stop at the budget, contiguously"
    );
    let wal_only = h
        .store
        .inner
        .loaded_partition(part)
        .unwrap()
        .state()
        .wal_index
        .len();
    assert_eq!(
        wal_only, 4,
        "the small batches must still be WAL-only for this test to mean anything"
    );
}

/// A batch of `count` records from idempotent producer `pid`/`epoch` starting at `sequence`.
pub(crate) fn sequenced(pid: i64, epoch: i16, sequence: i32, count: usize) -> BytesMut {
    let mut batch = simple_batch(count, 8, 1_000);
    batch[43..51].copy_from_slice(&pid.to_be_bytes());
    batch[51..53].copy_from_slice(&epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

pub(crate) async fn append_one(
    h: &Harness,
    tp: TopicPartition,
    batch: &BytesMut,
) -> crate::Result<i64> {
    h.store
        .append(tp, batch.clone(), TimestampType::CreateTime)
        .await
        .map(|r| r.base_offset)
}

/// Retries, gaps and fenced epochs are recognized, before and after restarts — whether the
/// original batches are still in the WAL or were moved to segments and the WAL truncated.
/// With `object`, the same through the S3 WAL: no local WAL, so recovery rebuilds the sequences
/// from the WAL objects' chunks flagged as holding idempotent batches (or from the producer
/// snapshot compaction saved).
async fn producer_state_survives_restart(segment_first: bool, object: bool) {
    let mut h = Harness::start(|o| {
        // Segment first: every round writes (or compacts) whatever there is.
        o.segment_max_age = if segment_first {
            Duration::ZERO
        } else {
            Duration::from_secs(3600)
        };
        if object {
            o.object_wal = Some(crate::ObjectWalOptions::default());
        }
    })
    .await;
    let topic = h.create_topic("idem", 1).await;
    let p = tp(topic, 0);
    let batches: Vec<BytesMut> = (0..3).map(|i| sequenced(7, 0, i * 2, 2)).collect();
    for (i, batch) in batches.iter().enumerate() {
        assert_eq!(append_one(&h, p, batch).await.unwrap(), i as i64 * 2);
    }
    assert_eq!(append_one(&h, p, &batches[1]).await.unwrap(), 2, "retry");
    if object {
        // Indexed after the ack, off the latency path.
        h.wait_for_state("indexed", |state| {
            state.partition(p).is_some_and(|pm| pm.segmented_end() == 6)
        })
        .await;
    }
    if segment_first {
        // The segment writer (or compaction) saves the producer snapshot with the segment.
        h.writer_pass().await;
        assert_eq!(h.segmented_end(p), 6);
        assert!(h.meta.state().producer_state(p).is_some());
        if object {
            let state = h.meta.state();
            assert!(h
                .segments(p)
                .iter()
                .all(|s| !state.shared_objects.contains_key(&s.key)));
        }
    } else if object {
        let segments = h.segments(p);
        assert!(!segments.is_empty() && segments.iter().all(|s| s.producer_batches));
    }
    h.restart().await;
    if segment_first {
        assert!(h
            .store
            .inner
            .loaded_partition(p)
            .is_none_or(|part| part.state().wal_index.is_empty()));
    }
    assert_eq!(
        append_one(&h, p, &batches[0]).await.unwrap(),
        0,
        "retry after restart"
    );
    assert_eq!(append_one(&h, p, &batches[2]).await.unwrap(), 4);
    assert!(matches!(
        append_one(&h, p, &sequenced(7, 0, 9, 1)).await,
        Err(Error::OutOfOrderSequence {
            expected: 6,
            got: 9
        })
    ));
    assert_eq!(append_one(&h, p, &sequenced(7, 1, 0, 1)).await.unwrap(), 6);
    assert!(matches!(
        append_one(&h, p, &sequenced(7, 0, 6, 1)).await,
        Err(Error::InvalidProducerEpoch { current: 1, got: 0 })
    ));
    assert_eq!(h.store.offsets(p).unwrap().high_watermark, 7);
    h.restart().await;
    assert_eq!(append_one(&h, p, &sequenced(7, 1, 0, 1)).await.unwrap(), 6);
    assert_eq!(h.store.offsets(p).unwrap().high_watermark, 7);
    h.stop().await;
}

#[tokio::test]
async fn producer_state_survives_restart_from_the_wal() {
    producer_state_survives_restart(false, false).await;
}

#[tokio::test]
async fn producer_state_survives_restart_after_wal_truncation() {
    producer_state_survives_restart(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_state_survives_restart_from_wal_objects() {
    producer_state_survives_restart(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_state_survives_restart_after_compaction() {
    producer_state_survives_restart(true, true).await;
}

#[tokio::test]
async fn gc_deletes_only_objects_whose_removal_is_in_the_bucket_log() {
    use crate::test_support::SimStore;
    let journal_store = SimStore::faulty(Arc::new(object_store::memory::InMemory::new()));
    let batch_len = simple_batch(1, 100, 0).len();
    let h = Harness::start_journaled(journal_store.clone(), |o| {
        o.segment_bytes = 10 * batch_len as u64;
        o.segment_max_age = Duration::from_secs(3600);
        o.gc_grace = Duration::from_millis(0);
    })
    .await;
    let p0 = tp(h.create_topic("t", 1).await, 0);
    let batches: Vec<BytesMut> = (0..20).map(|i| simple_batch(1, 100, i)).collect();
    append_all(&h, p0, &batches).await;
    h.writer_pass().await;
    assert_eq!(h.segmented_end(p0), 20, "two segments");
    let first_segment = h.segments(p0)[0].key.clone();

    // The bucket log stalls; the log start moves past the first segment, applied but not stored.
    journal_store.hold_puts(true);
    let meta = h.meta.clone();
    let advancing = tokio::spawn(async move {
        meta.propose(Command::AdvanceLogStart {
            tp: p0,
            offset: 10,
            now_ms: crate::now_ms(),
            leader_epoch: 0,
        })
        .await
    });
    h.wait_for_state("removal applied", |state| {
        state
            .deleted_objects
            .iter()
            .any(|(key, _)| *key == first_segment)
    })
    .await;
    // A whole housekeeping pass with no grace, started after the removal was applied: its GC
    // waits for the bucket log up to the persist timeout (5 s), gives up, and the object must
    // stay (a crash now would restore an index that still points at it).
    h.housekeeping_pass().await;
    assert!(
        object_exists(&h, &first_segment).await,
        "GC deleted an object whose removal is not in the bucket log yet"
    );
    // The proposal timed out too (it started waiting before the pass): applied, not stored.
    let answer = advancing.await.expect("join");
    assert!(
        matches!(answer, Err(metadata::Error::NotPersisted)),
        "{answer:?}"
    );

    journal_store.hold_puts(false);
    within("the bucket log to catch up", h.meta.sync())
        .await
        .expect("stored once released");
    assert_eq!(
        h.meta
            .durable_state()
            .await
            .unwrap()
            .partition(p0)
            .unwrap()
            .log_start_offset,
        10
    );
    h.housekeeping_pass().await;
    assert!(
        !object_exists(&h, &first_segment).await,
        "GC kept an object whose removal is stored"
    );
    h.stop().await;
}

/// Housekeeping forgets a producer not heard from for `producer_id_expiration` (Kafka's
/// `producer.id.expiration.ms`): its next batch is taken as a new producer's, where before the
/// expiry the same batch is out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_producers_expire() {
    let expiration = Duration::from_millis(300);
    let h = Harness::start(|opts| {
        opts.producer_id_expiration = expiration;
        // No pass but the one at open (before the producer exists) and those asked for below.
        opts.housekeeping_interval = Duration::from_secs(3600);
    })
    .await;
    let topic = h.create_topic("expire", 1).await;
    let p = TopicPartition {
        topic_id: topic,
        partition: 0,
    };
    assert_eq!(append_one(&h, p, &sequenced(9, 0, 0, 1)).await.unwrap(), 0);
    assert!(matches!(
        append_one(&h, p, &sequenced(9, 0, 5, 1)).await,
        Err(crate::Error::OutOfOrderSequence { .. })
    ));
    // Expiry compares wall-clock milliseconds: wait until the producer's last write (before
    // `written`) is more than `expiration` ago on that clock. A lower bound: waiting longer
    // changes nothing.
    let written = crate::now_ms();
    let expiration_ms = i64::try_from(expiration.as_millis()).unwrap();
    for _ in 0..100 {
        let left = written + expiration_ms + 1 - crate::now_ms();
        if left < 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(left.unsigned_abs() + 1)).await;
    }
    assert!(crate::now_ms() > written + expiration_ms);
    h.housekeeping_pass().await;
    assert_eq!(
        h.store
            .inner
            .loaded_partition(p)
            .unwrap()
            .state()
            .producers
            .len(),
        0,
        "the producer expired"
    );
    assert_eq!(append_one(&h, p, &sequenced(9, 0, 5, 1)).await.unwrap(), 1);
    h.stop().await;
}
