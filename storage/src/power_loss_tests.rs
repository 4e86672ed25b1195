//! Power loss under the data WAL: the broker's WAL runs on the `wal` crate's simulated disk
//! (`PowerLossFs`), the machine loses power with no shutdown, and the next start must serve every
//! acknowledged batch at its offset — from segment objects and from the WAL — and continue the log
//! densely. (The metadata node and the object store are treated as durable here: they are not on
//! the simulated disk.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use metadata::TopicPartition;
use wal::PowerLossFs;

use crate::batch::BatchHeader;
use crate::test_support::{simple_batch, stored, Harness};
use crate::TimestampType;

async fn read_all(h: &Harness, tp: TopicPartition) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut next = 0;
    for _ in 0..10_000 {
        let result = h.store.read(tp, next, 1 << 20).await.expect("read");
        if result.batches.is_empty() {
            return out;
        }
        for batch in result.batches {
            next = BatchHeader::parse(&batch).expect("header").last_offset() + 1;
            out.push(batch.to_vec());
        }
    }
    panic!("read_all did not finish");
}

#[tokio::test]
async fn acknowledged_batches_survive_power_loss() {
    let disk = PowerLossFs::new();
    disk.create_durable_dir(Path::new("/node")).unwrap();
    let batch_len = simple_batch(1, 100, 1_000).len();
    let mut h = Harness::start(|o| {
        o.wal.dir = "/node/data/wal".into();
        o.wal.fs = Arc::new(disk.clone());
        o.wal.fsync = true;
        // Small files (the log rolls, and the checkpoint deletes whole files) and small segments
        // (part of the log is in segment objects, part only in the WAL).
        o.wal.file_bytes = 4 * 1024;
        o.segment_bytes = 10 * batch_len as u64;
        o.segment_max_age = Duration::from_secs(3600);
        o.tail_cache_bytes = 3 * batch_len;
    })
    .await;
    let topic = h.create_topic("t", 1).await;
    let p0 = TopicPartition {
        topic_id: topic,
        partition: 0,
    };
    let mut expected = Vec::new();
    for i in 0..35 {
        let batch: BytesMut = simple_batch(1, 100, 1_000 + i);
        let result = h
            .store
            .append(p0, batch.clone(), TimestampType::CreateTime)
            .await
            .expect("append");
        expected.push(stored(&batch, result.base_offset));
    }
    // One round writes what is due by size (three segments) and checkpoints the WAL.
    h.writer_pass().await;
    assert_eq!(h.segmented_end(p0), 30, "three segments");
    assert!(
        h.store.inner.wal.as_ref().unwrap().start_lsn() > 0,
        "WAL truncated"
    );

    let disk = disk.crash();
    // The dead boot's store fails on its WAL; only its tasks are stopped here.
    let _ = h.store.shutdown().await;
    h.opts.wal.fs = Arc::new(disk);
    h.restart().await;

    let offsets = h.store.offsets(p0).unwrap();
    assert_eq!((offsets.log_start_offset, offsets.high_watermark), (0, 35));
    assert_eq!(read_all(&h, p0).await, expected);
    let more = simple_batch(2, 100, 2_000);
    let result = h
        .store
        .append(p0, more.clone(), TimestampType::CreateTime)
        .await
        .unwrap();
    assert_eq!(result.base_offset, 35);
    expected.push(stored(&more, 35));
    assert_eq!(read_all(&h, p0).await, expected);
    h.stop().await;
}
