//! Recovery at open: torn tails are dropped and the log continues; damage anywhere else is reported as
//! corruption. The files are damaged directly on disk between a close and a reopen.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::*;
use wal::{Error, Lsn, Wal, WalOptions};

/// Writes `count` records into a fresh log, closes it, and returns what was written.
async fn write_log(opts: WalOptions, count: u64) -> Vec<(Lsn, Bytes)> {
    let wal = Wal::open(opts).unwrap();
    let mut written = Vec::new();
    for i in 0..count {
        let record = payload(i, 200 + (i as usize * 53) % 400);
        written.push((wal.append(record.clone()).await.unwrap(), record));
    }
    wal.close().await.unwrap();
    written
}

fn last_file(dir: &Path) -> (Lsn, PathBuf) {
    wal_files(dir).pop().unwrap()
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn flip_byte(path: &Path, offset: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[offset as usize] ^= 0x40;
    std::fs::write(path, data).unwrap();
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Reopens after damage that must be treated as a torn tail: the first `kept` records survive, the
/// file is cut back to them, and the log accepts and recovers new appends after them.
async fn assert_torn_tail_recovered(dir: &Path, written: &[(Lsn, Bytes)], kept: usize) {
    let kept_records = written[..kept].to_vec();
    let end = kept_records
        .last()
        .map_or(0, |(lsn, record)| lsn + frame(record.len()));
    let wal = Wal::open(options(dir)).unwrap();
    assert_eq!(wal.end_lsn(), end);
    assert_eq!(replay_all(&wal, 0), kept_records);
    let (start, path) = last_file(dir);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        end - start,
        "the torn tail is cut off the file"
    );

    let mut expected = kept_records;
    for i in 0..5u64 {
        let record = payload(500 + i, 300);
        let lsn = wal.append(record.clone()).await.unwrap();
        expected.push((lsn, record));
    }
    wal.close().await.unwrap();
    drop(wal);
    let wal = Wal::open(options(dir)).unwrap();
    assert_eq!(replay_all(&wal, 0), expected);
}

fn assert_corrupted(dir: &Path, expected_file: &Path, expected_offset: u64) {
    match Wal::open(options(dir)) {
        Err(Error::Corrupted {
            file,
            offset,
            reason,
        }) => {
            assert_eq!(file, expected_file, "{reason}");
            assert_eq!(offset, expected_offset, "{reason}");
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
}

#[tokio::test]
async fn a_record_cut_in_its_payload_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(options(dir.path()), 20).await;
    let (lsn, record) = written.last().unwrap();
    set_len(&last_file(dir.path()).1, lsn + 8 + record.len() as u64 / 2);
    assert_torn_tail_recovered(dir.path(), &written, 19).await;
}

#[tokio::test]
async fn a_record_cut_in_its_header_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(options(dir.path()), 20).await;
    set_len(&last_file(dir.path()).1, written.last().unwrap().0 + 3);
    assert_torn_tail_recovered(dir.path(), &written, 19).await;
}

#[tokio::test]
async fn garbage_after_the_last_record_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(options(dir.path()), 20).await;
    append_bytes(&last_file(dir.path()).1, &[0xAB; 100]);
    assert_torn_tail_recovered(dir.path(), &written, 20).await;
}

#[tokio::test]
async fn random_bytes_after_the_last_record_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(options(dir.path()), 20).await;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let garbage: Vec<u8> = (0..512 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    append_bytes(&last_file(dir.path()).1, &garbage);
    assert_torn_tail_recovered(dir.path(), &written, 20).await;
}

#[tokio::test]
async fn zeros_after_the_last_record_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(options(dir.path()), 20).await;
    // Several read chunks' worth, as a preallocated file would leave.
    append_bytes(&last_file(dir.path()).1, &vec![0; 4 * 1024 * 1024 + 5]);
    assert_torn_tail_recovered(dir.path(), &written, 20).await;
}

#[tokio::test]
async fn a_zero_filled_last_record_is_dropped() {
    // The file size reached the disk but the data blocks did not.
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(options(dir.path()), 20).await;
    let (lsn, record) = written.last().unwrap();
    let path = last_file(dir.path()).1;
    set_len(&path, *lsn);
    append_bytes(&path, &vec![0; 8 + record.len()]);
    assert_torn_tail_recovered(dir.path(), &written, 19).await;
}

#[tokio::test]
async fn a_damaged_last_record_with_nothing_after_it_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(options(dir.path()), 20).await;
    flip_byte(&last_file(dir.path()).1, written.last().unwrap().0 + 20);
    assert_torn_tail_recovered(dir.path(), &written, 19).await;
}

#[tokio::test]
async fn a_header_promising_more_than_the_file_holds_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(options(dir.path()), 20).await;
    let mut partial = Vec::new();
    partial.extend_from_slice(&1000u32.to_le_bytes());
    partial.extend_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
    partial.extend_from_slice(&[7; 10]);
    append_bytes(&last_file(dir.path()).1, &partial);
    assert_torn_tail_recovered(dir.path(), &written, 20).await;
}

#[tokio::test]
async fn a_log_whose_only_record_is_torn_recovers_empty() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(options(dir.path()), 1).await;
    set_len(&last_file(dir.path()).1, 5);
    assert_torn_tail_recovered(dir.path(), &written, 0).await;
}

#[tokio::test]
async fn a_damaged_record_followed_by_valid_ones_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(options(dir.path()), 20).await;
    let path = last_file(dir.path()).1;
    let damaged = written[5].0;
    flip_byte(&path, damaged + 8 + 10);
    assert_corrupted(dir.path(), &path, damaged);
}

#[tokio::test]
async fn a_damaged_length_followed_by_valid_records_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(options(dir.path()), 20).await;
    let path = last_file(dir.path()).1;
    let damaged = written[5].0;
    // Bit 30 of the length: the frame now claims to run past the end of the file.
    flip_byte(&path, damaged + 3);
    assert_corrupted(dir.path(), &path, damaged);
}

#[tokio::test]
async fn zeros_in_the_middle_of_the_last_file_are_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(options(dir.path()), 20).await;
    let path = last_file(dir.path()).1;
    let mut data = std::fs::read(&path).unwrap();
    let from = written[8].0 as usize;
    let to = written[10].0 as usize;
    data[from..to].fill(0);
    std::fs::write(&path, data).unwrap();
    assert_corrupted(dir.path(), &path, from as u64);
}

fn rolling_options(dir: &Path) -> WalOptions {
    let mut opts = options(dir);
    opts.file_bytes = 2000;
    opts
}

#[tokio::test]
async fn damage_in_an_older_file_is_corruption_even_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(rolling_options(dir.path()), 40).await;
    let files = wal_files(dir.path());
    assert!(files.len() >= 3);
    let (start, path) = &files[0];
    let next_start = files[1].0;
    let last_in_first = written.iter().rfind(|(lsn, _)| *lsn < next_start).unwrap();
    flip_byte(path, last_in_first.0 - start + 8 + 1);
    assert_corrupted(dir.path(), path, last_in_first.0 - start);
}

#[tokio::test]
async fn an_older_file_cut_short_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(rolling_options(dir.path()), 40).await;
    let files = wal_files(dir.path());
    let (start, path) = &files[1];
    let next_start = files[2].0;
    // Cut exactly at a record boundary: every frame in the file is valid, but the log has a gap.
    let last_in_file = written.iter().rfind(|(lsn, _)| *lsn < next_start).unwrap();
    set_len(path, last_in_file.0 - start);
    assert_corrupted(dir.path(), path, last_in_file.0 - start);
}

#[tokio::test]
async fn a_torn_tail_after_rolling_is_dropped_from_the_last_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_log(rolling_options(dir.path()), 40).await;
    let (start, path) = last_file(dir.path());
    assert!(start > 0);
    let (lsn, record) = written.last().unwrap();
    set_len(&path, lsn - start + 8 + record.len() as u64 - 1);

    let wal = Wal::open(rolling_options(dir.path())).unwrap();
    assert_eq!(replay_all(&wal, 0), written[..39].to_vec());
    assert_eq!(wal.end_lsn(), *lsn);
    let new = wal.append(payload(99, 100)).await.unwrap();
    assert_eq!(new, *lsn);
    assert_eq!(wal.read(new).await.unwrap(), payload(99, 100));
}
