//! Behaviour of an open log: append/read/replay, ordering, group commit, backpressure, rolling,
//! truncation, poisoning and close.

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use wal::{Error, Lsn, PendingAppend, Wal};

#[tokio::test]
async fn append_read_replay_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(options(dir.path())).unwrap();
    assert_eq!((wal.start_lsn(), wal.end_lsn()), (0, 0));
    assert!(replay_all(&wal, 0).is_empty());

    let mut written: Vec<(Lsn, Bytes)> = Vec::new();
    let mut expected_lsn = 0;
    for i in 0..100u64 {
        let record = payload(i, 1 + (i as usize * 97) % 5000);
        let lsn = wal.append(record.clone()).await.unwrap();
        assert_eq!(lsn, expected_lsn, "lsn is the byte position of the frame");
        expected_lsn += frame(record.len());
        written.push((lsn, record));
    }
    assert_eq!(wal.end_lsn(), expected_lsn);
    assert_eq!(wal.durable_lsn(), expected_lsn);
    for (lsn, record) in &written {
        assert_eq!(&wal.read(*lsn).await.unwrap(), record);
    }
    assert_eq!(replay_all(&wal, 0), written);
    wal.close().await.unwrap();
    drop(wal);

    let wal = Wal::open(options(dir.path())).unwrap();
    assert_eq!((wal.start_lsn(), wal.end_lsn()), (0, expected_lsn));
    for (lsn, record) in &written {
        assert_eq!(&wal.read(*lsn).await.unwrap(), record);
    }
    assert_eq!(replay_all(&wal, 0), written);
    assert_eq!(replay_all(&wal, written[60].0), written[60..].to_vec());
    assert!(replay_all(&wal, expected_lsn).is_empty());

    let lsn = wal.append(payload(1000, 10)).await.unwrap();
    assert_eq!(lsn, expected_lsn, "appends continue where the log ended");
    assert_eq!(wal.read(lsn).await.unwrap(), payload(1000, 10));
}

#[tokio::test]
async fn read_and_replay_refuse_positions_that_are_not_records() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(options(dir.path())).unwrap();
    assert!(matches!(wal.read(0).await, Err(Error::NotFound(0))));
    let first = wal.append(payload(1, 100)).await.unwrap();
    let second = wal.append(payload(2, 100)).await.unwrap();
    for lsn in [
        first + 1,
        first + 8,
        second + 3,
        second + frame(100),
        u64::MAX,
    ] {
        assert!(
            matches!(wal.read(lsn).await, Err(Error::NotFound(l)) if l == lsn),
            "read({lsn})"
        );
    }
    assert!(matches!(
        wal.replay(second + frame(100) + 1),
        Err(Error::NotFound(_))
    ));
    let mut reader = wal.replay(first + 1).unwrap();
    assert!(matches!(reader.next(), Some(Err(Error::NotFound(_)))));
    assert!(reader.next().is_none(), "a reader stops after an error");
}

#[tokio::test]
async fn empty_records_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(options(dir.path())).unwrap();
    match wal.submit(Bytes::new()).await {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput),
        other => panic!("expected InvalidInput, got {:?}", other.map(|p| p.lsn())),
    }
    assert_eq!(wal.end_lsn(), 0);
}

fn poll_now(pending: &mut PendingAppend) -> Poll<wal::Result<Lsn>> {
    Pin::new(pending).poll(&mut Context::from_waker(Waker::noop()))
}

use std::future::Future;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earlier_submits_get_lower_lsns_and_complete_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    // Small groups, so the records are spread over many group commits.
    opts.max_group_bytes = 3000;
    let wal = Wal::open(opts).unwrap();

    let mut pending = Vec::new();
    let mut next = 0;
    for i in 0..300u64 {
        let record = payload(i, 1 + (i as usize * 37) % 700);
        let append = wal.submit(record.clone()).await.unwrap();
        assert_eq!(append.lsn(), next);
        next += frame(record.len());
        pending.push((append, record));
    }
    // Once the last record is durable, every earlier one must already be complete.
    let (last, _) = pending.last_mut().unwrap();
    let last_lsn = bounded(last).await.unwrap();
    assert_eq!(last_lsn, next - frame(pending.last().unwrap().1.len()));
    let (_, last_record) = pending.pop().unwrap();
    assert_eq!(&wal.read(last_lsn).await.unwrap(), &last_record);
    for (append, record) in &mut pending {
        let lsn = append.lsn();
        match poll_now(append) {
            Poll::Ready(Ok(done)) => assert_eq!(done, lsn),
            other => panic!("record at {lsn} not complete after a later one: {other:?}"),
        }
        assert_eq!(&wal.read(lsn).await.unwrap(), record);
    }
    assert!(wal.stats().groups_committed > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submitters_keep_their_own_order() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(options(dir.path())).unwrap();
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let wal = wal.clone();
        tasks.push(tokio::spawn(async move {
            let mut pending = Vec::new();
            for i in 0..100u64 {
                pending.push(wal.submit(payload(task * 1000 + i, 64)).await.unwrap());
            }
            let mut lsns = Vec::new();
            for append in pending {
                lsns.push(append.await.unwrap());
            }
            lsns
        }));
    }
    let mut all = Vec::new();
    for (task, handle) in tasks.into_iter().enumerate() {
        let lsns = bounded(handle).await.unwrap();
        assert!(
            lsns.windows(2).all(|w| w[0] < w[1]),
            "task {task} out of order"
        );
        for (i, lsn) in lsns.into_iter().enumerate() {
            all.push((lsn, payload(task as u64 * 1000 + i as u64, 64)));
        }
    }
    all.sort_by_key(|(lsn, _)| *lsn);
    assert_eq!(replay_all(&wal, 0), all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_records_are_committed_as_one_group() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::closed());
    let mut opts = options(dir.path());
    opts.fault = Some(gate.clone());
    let wal = Wal::open(opts).unwrap();

    // The first record holds the writer in its sync while 200 more are queued behind it.
    let first = tokio::spawn({
        let wal = wal.clone();
        async move { wal.append(payload(0, 1024)).await }
    });
    eventually("the writer to reach its first sync", || gate.entered() == 1).await;
    let mut tasks = Vec::new();
    for i in 1..=200u64 {
        let wal = wal.clone();
        tasks.push(tokio::spawn(
            async move { wal.append(payload(i, 1024)).await },
        ));
    }
    let expected_end = 201 * frame(1024);
    eventually("all records to be queued", || wal.end_lsn() == expected_end).await;
    gate.open();
    bounded(first).await.unwrap().unwrap();
    for task in tasks {
        bounded(task).await.unwrap().unwrap();
    }

    let stats = wal.stats();
    assert_eq!(stats.records_committed, 201);
    assert_eq!(stats.bytes_committed, expected_end);
    assert_eq!(stats.groups_committed, 2, "{stats:?}");
    assert_eq!(stats.syncs, 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_appenders_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(options(dir.path())).unwrap();
    let mut tasks = Vec::new();
    for task in 0..32u64 {
        let wal = wal.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40u64 {
                wal.append(payload(task * 100 + i, 1024)).await.unwrap();
            }
        }));
    }
    for task in tasks {
        bounded(task).await.unwrap();
    }
    let stats = wal.stats();
    assert_eq!(stats.records_committed, 32 * 40);
    assert_eq!(stats.syncs, stats.groups_committed);
    assert!(
        stats.syncs < stats.records_committed,
        "group commit should share syncs: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_waits_while_too_many_bytes_are_pending() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::closed());
    let mut opts = options(dir.path());
    opts.fault = Some(gate.clone());
    opts.max_pending_bytes = 4096;
    let wal = Wal::open(opts).unwrap();

    // 4 frames of 1008 bytes fit in 4096 pending bytes; the writer is stuck syncing the first.
    let mut pending = Vec::new();
    for i in 0..4u64 {
        pending.push(bounded(wal.submit(payload(i, 1000))).await.unwrap());
        if i == 0 {
            eventually("the writer to hold the first record", || {
                gate.entered() == 1
            })
            .await;
        }
    }
    let fifth = tokio::spawn({
        let wal = wal.clone();
        async move { wal.submit(payload(4, 1000)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !fifth.is_finished(),
        "submit must wait for pending bytes to drain"
    );
    assert_eq!(
        wal.end_lsn(),
        4 * frame(1000),
        "the waiting record is not queued yet"
    );

    gate.open();
    let fifth = bounded(fifth).await.unwrap().unwrap();
    assert_eq!(bounded(fifth).await.unwrap(), 4 * frame(1000));
    for (i, append) in pending.into_iter().enumerate() {
        assert_eq!(bounded(append).await.unwrap(), i as u64 * frame(1000));
    }
}

#[tokio::test]
async fn a_record_larger_than_the_pending_limit_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.max_pending_bytes = 4096;
    let wal = Wal::open(opts).unwrap();
    let big = payload(7, 64 * 1024);
    let lsn = bounded(wal.append(big.clone())).await.unwrap();
    assert_eq!(wal.read(lsn).await.unwrap(), big);
    // And the permits came back: small records still flow.
    for i in 0..10 {
        bounded(wal.append(payload(i, 1000))).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_100_mib_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(options(dir.path())).unwrap();
    let small = wal.append(payload(1, 10)).await.unwrap();
    let big = payload(2, 100 * 1024 * 1024);
    let big_lsn = bounded(wal.append(big.clone())).await.unwrap();
    let after = wal.append(payload(3, 10)).await.unwrap();
    assert_eq!(after, big_lsn + frame(big.len()));
    assert!(wal.read(big_lsn).await.unwrap() == big);
    wal.close().await.unwrap();
    drop(wal);

    let wal = Wal::open(options(dir.path())).unwrap();
    let records = replay_all(&wal, small);
    assert_eq!(records.len(), 3);
    assert!(records[1] == (big_lsn, big));
    assert_eq!(records[2], (after, payload(3, 10)));
}

#[tokio::test]
async fn files_roll_at_the_size_limit_and_are_named_by_their_first_lsn() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.file_bytes = 10_000;
    let wal = Wal::open(opts.clone()).unwrap();
    let mut written = Vec::new();
    for i in 0..60u64 {
        // Mostly small records, and one bigger than a whole file.
        let len = if i == 30 {
            25_000
        } else {
            100 + (i as usize * 311) % 1500
        };
        let record = payload(i, len);
        written.push((wal.append(record.clone()).await.unwrap(), record));
    }
    let files = wal_files(dir.path());
    assert!(files.len() > 5, "{files:?}");
    let lsns: Vec<Lsn> = written.iter().map(|(lsn, _)| *lsn).collect();
    for (index, (start, path)) in files.iter().enumerate() {
        assert!(
            lsns.contains(start),
            "file {path:?} does not start at a record"
        );
        let len = std::fs::metadata(path).unwrap().len();
        if let Some((next, _)) = files.get(index + 1) {
            assert_eq!(start + len, *next, "files are contiguous");
            assert!(len >= 10_000, "{path:?} rolled before it was full");
            // The file rolled right after the record that filled it.
            let last_record = written.iter().rfind(|(lsn, _)| lsn < next).unwrap();
            assert!(
                last_record.0 - start < 10_000,
                "{path:?} kept taking records when full"
            );
        }
    }
    for (lsn, record) in &written {
        assert_eq!(&wal.read(*lsn).await.unwrap(), record);
    }
    wal.close().await.unwrap();
    drop(wal);
    let wal = Wal::open(opts).unwrap();
    assert_eq!(replay_all(&wal, 0), written);
}

#[tokio::test]
async fn truncate_prefix_deletes_only_whole_old_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.file_bytes = 4096;
    let wal = Wal::open(opts.clone()).unwrap();
    let mut written = Vec::new();
    for i in 0..50u64 {
        let record = payload(i, 1000);
        written.push((wal.append(record.clone()).await.unwrap(), record));
    }
    let files_before = wal_files(dir.path());
    assert!(files_before.len() >= 8, "{files_before:?}");
    // A reader created before the truncation keeps reading deleted files.
    let early_reader = wal.replay(0).unwrap();

    let keep_from = written[23].0;
    wal.truncate_prefix(keep_from).unwrap();
    let files_after = wal_files(dir.path());
    let kept_start = files_before
        .iter()
        .rev()
        .find(|(start, _)| *start <= keep_from)
        .unwrap()
        .0;
    assert_eq!(
        files_after[0].0, kept_start,
        "the file holding keep_from is kept"
    );
    assert_eq!(
        files_after,
        files_before
            .iter()
            .filter(|(start, _)| *start >= kept_start)
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(wal.start_lsn(), kept_start);
    assert!(matches!(wal.read(0).await, Err(Error::NotFound(0))));
    assert!(matches!(wal.replay(0), Err(Error::NotFound(0))));
    let remaining: Vec<_> = written
        .iter()
        .filter(|(lsn, _)| *lsn >= kept_start)
        .cloned()
        .collect();
    for (lsn, record) in &remaining {
        assert_eq!(&wal.read(*lsn).await.unwrap(), record);
    }
    assert_eq!(replay_all(&wal, wal.start_lsn()), remaining);
    let early: Vec<_> = early_reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(early, written);

    // Even "everything" keeps the active file, and appends go on.
    wal.truncate_prefix(u64::MAX).unwrap();
    let files = wal_files(dir.path());
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, files_before.last().unwrap().0);
    let lsn = wal.append(payload(99, 10)).await.unwrap();
    assert_eq!(wal.read(lsn).await.unwrap(), payload(99, 10));
    let start = wal.start_lsn();
    wal.close().await.unwrap();
    drop(wal);

    let wal = Wal::open(opts).unwrap();
    assert_eq!(wal.start_lsn(), start);
    let records = replay_all(&wal, start);
    assert_eq!(records.last().unwrap(), &(lsn, payload(99, 10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sees_the_durable_end_at_creation_while_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.file_bytes = 64 * 1024;
    let wal = Wal::open(opts).unwrap();
    let mut written = Vec::new();
    for i in 0..100u64 {
        let record = payload(i, 500);
        written.push((wal.append(record.clone()).await.unwrap(), record));
    }
    let appender = tokio::spawn({
        let wal = wal.clone();
        async move {
            let mut more = Vec::new();
            for i in 100..600u64 {
                let record = payload(i, 500);
                more.push((wal.append(record.clone()).await.unwrap(), record));
            }
            more
        }
    });
    let reader = wal.replay(0).unwrap();
    let seen = tokio::task::spawn_blocking(move || reader.collect::<Result<Vec<_>, _>>())
        .await
        .unwrap()
        .unwrap();
    assert!(seen.len() >= 100);
    let more = bounded(appender).await.unwrap();
    written.extend(more);
    assert_eq!(seen, written[..seen.len()].to_vec());
    assert_eq!(replay_all(&wal, 0), written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_poisons_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.fault = Some(Arc::new(FailAfter::new(3)));
    let wal = Wal::open(opts).unwrap();
    let mut durable = Vec::new();
    for i in 0..3u64 {
        let record = payload(i, 100);
        durable.push((wal.append(record.clone()).await.unwrap(), record));
    }
    assert!(matches!(
        wal.append(payload(3, 100)).await,
        Err(Error::Poisoned)
    ));
    for i in 4..10u64 {
        assert!(matches!(
            wal.append(payload(i, 100)).await,
            Err(Error::Poisoned)
        ));
    }
    assert!(matches!(
        wal.submit(payload(10, 100)).await,
        Err(Error::Poisoned)
    ));
    assert_eq!(wal.stats().records_committed, 3);
    assert_eq!(
        wal.durable_lsn(),
        3 * frame(100),
        "a failed group never becomes durable"
    );
    // What was durable before stays readable.
    for (lsn, record) in &durable {
        assert_eq!(&wal.read(*lsn).await.unwrap(), record);
    }
    assert!(matches!(
        wal.truncate_prefix(u64::MAX),
        Err(Error::Poisoned)
    ));
    assert!(matches!(wal.close().await, Err(Error::Poisoned)));
    drop(wal);

    // Reopening recovers whatever valid records are on disk, and appending works again.
    let wal = Wal::open(options(dir.path())).unwrap();
    let recovered = replay_all(&wal, 0);
    assert!(
        recovered.len() >= 3 && recovered.len() <= 4,
        "{recovered:?}"
    );
    assert_eq!(recovered[..3].to_vec(), durable);
    let lsn = wal.append(payload(20, 100)).await.unwrap();
    assert_eq!(lsn, wal.durable_lsn() - frame(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_queued_behind_a_failing_group_are_poisoned_too() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::closed());
    let mut opts = options(dir.path());
    opts.fault = Some(gate.clone());
    let wal = Wal::open(opts).unwrap();
    let first = wal.submit(payload(0, 100)).await.unwrap();
    eventually("the writer to hold the first record", || {
        gate.entered() == 1
    })
    .await;
    let mut queued = Vec::new();
    for i in 1..20u64 {
        queued.push(wal.submit(payload(i, 100)).await.unwrap());
    }
    gate.fail_from_now_on();
    gate.open();
    assert!(matches!(bounded(first).await, Err(Error::Poisoned)));
    for append in queued {
        assert!(matches!(bounded(append).await, Err(Error::Poisoned)));
    }
    assert!(matches!(
        wal.append(payload(30, 100)).await,
        Err(Error::Poisoned)
    ));
    assert_eq!(wal.stats().records_committed, 0);
    assert_eq!(wal.durable_lsn(), 0);
    assert!(matches!(wal.read(0).await, Err(Error::NotFound(0))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_flushes_queued_records_then_refuses_everything() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(options(dir.path())).unwrap();
    let mut pending = Vec::new();
    for i in 0..50u64 {
        pending.push(wal.submit(payload(i, 200)).await.unwrap());
    }
    bounded(wal.close()).await.unwrap();
    for (i, append) in pending.into_iter().enumerate() {
        assert_eq!(bounded(append).await.unwrap(), i as u64 * frame(200));
    }
    assert!(matches!(
        wal.submit(payload(0, 1)).await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        wal.append(payload(0, 1)).await,
        Err(Error::Closed)
    ));
    assert!(matches!(wal.read(0).await, Err(Error::Closed)));
    assert!(matches!(wal.replay(0), Err(Error::Closed)));
    assert!(matches!(wal.truncate_prefix(0), Err(Error::Closed)));
    bounded(wal.close()).await.unwrap();
    drop(wal);

    let wal = Wal::open(options(dir.path())).unwrap();
    assert_eq!(replay_all(&wal, 0).len(), 50);
}

#[tokio::test]
async fn a_directory_has_one_writer_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(options(dir.path())).unwrap();
    wal.append(payload(1, 10)).await.unwrap();
    match Wal::open(options(dir.path())) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
        other => panic!("second open should fail, got {other:?}"),
    }
    // Dropping the last handle (without close) flushes and releases the directory.
    let pending = wal.submit(payload(2, 10)).await.unwrap();
    drop(wal);
    assert_eq!(bounded(pending).await.unwrap(), frame(10));
    let wal = Wal::open(options(dir.path())).unwrap();
    assert_eq!(replay_all(&wal, 0).len(), 2);
}

#[tokio::test]
async fn without_fsync_records_are_committed_but_not_synced() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.fsync = false;
    let wal = Wal::open(opts).unwrap();
    for i in 0..10u64 {
        wal.append(payload(i, 100)).await.unwrap();
    }
    let stats = wal.stats();
    assert_eq!(stats.records_committed, 10);
    assert_eq!(stats.syncs, 0);
    assert_eq!(replay_all(&wal, 0).len(), 10);
}
