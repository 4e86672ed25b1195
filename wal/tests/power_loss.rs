//! Power loss: the log runs on `PowerLossFs`, the machine "loses power" (everything not fsynced is
//! gone, including file creations and removals no directory fsync covered, and the last writes may
//! be torn), and the next boot must find every acknowledged record and a log it can continue.
//!
//! Each fsync of the crate is needed by one of these tests: the group commit's `sync_data`, the
//! directory syncs after creating a directory, the first file and each rolled file, and the one
//! after each file `truncate_prefix` deletes (without it, the deletions may reach the disk in any
//! order and leave a gap), and the one after recovery cuts a torn tail off (without it the tail
//! comes back once the log has rolled past that file).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use wal::{Crash, Error, Lsn, PowerLossFs, Wal, WalOptions};

fn sim_options(fs: &PowerLossFs, dir: &Path) -> WalOptions {
    let mut opts = WalOptions::new(dir);
    opts.fs = Arc::new(fs.clone());
    // A few hundred bytes per file: the tests below roll through several files.
    opts.file_bytes = 2000;
    opts
}

/// A disk with nothing on it but `/srv`, as if it had been there for years; the log goes in a
/// directory two levels below it that does not exist yet.
fn fresh_disk() -> (PowerLossFs, PathBuf) {
    let fs = PowerLossFs::new();
    fs.create_durable_dir(Path::new("/srv")).unwrap();
    (fs, PathBuf::from("/srv/data/wal"))
}

async fn append_acked(wal: &Wal, seeds: std::ops::Range<u64>) -> Vec<(Lsn, Bytes)> {
    let mut acked = Vec::new();
    for seed in seeds {
        let record = payload(seed, 150 + (seed as usize * 37) % 300);
        acked.push((wal.append(record.clone()).await.unwrap(), record));
    }
    acked
}

#[tokio::test]
async fn acknowledged_records_survive_power_loss() {
    let (fs, dir) = fresh_disk();
    let wal = Wal::open(sim_options(&fs, &dir)).unwrap();
    let acked = append_acked(&wal, 0..40).await;
    assert!(
        wal_file_count(&fs, &dir) >= 4,
        "the records should span several files"
    );

    let fs = fs.crash();
    drop(wal);
    let wal = Wal::open(sim_options(&fs, &dir)).unwrap();
    assert_eq!(replay_all(&wal, 0), acked);

    // The log goes on after the reboot, and what it acknowledges then survives the next crash.
    let mut expected = acked;
    expected.extend(append_acked(&wal, 100..120).await);
    let fs = fs.crash();
    drop(wal);
    let wal = Wal::open(sim_options(&fs, &dir)).unwrap();
    assert_eq!(replay_all(&wal, 0), expected);
}

#[tokio::test]
async fn the_first_record_of_a_new_log_survives_power_loss() {
    // Nothing rolls: only the directory creation and the first file's creation make it durable.
    let (fs, dir) = fresh_disk();
    let mut opts = sim_options(&fs, &dir);
    opts.file_bytes = 1 << 20;
    let wal = Wal::open(opts).unwrap();
    let acked = append_acked(&wal, 0..1).await;
    let fs = fs.crash();
    drop(wal);
    let wal = Wal::open(sim_options(&fs, &dir)).unwrap();
    assert_eq!(replay_all(&wal, 0), acked);
}

fn wal_file_count(fs: &PowerLossFs, dir: &Path) -> usize {
    use wal::WalFs as _;
    fs.list_files(dir)
        .unwrap()
        .iter()
        .filter(|name| name.ends_with(".wal"))
        .count()
}

#[tokio::test]
async fn a_torn_group_is_cut_off_and_the_log_continues() {
    // Tear the unsynced group after every interesting number of bytes: inside the first header,
    // inside a payload, exactly after a record, and all of it.
    let group: Vec<Bytes> = (0..3).map(|i| payload(900 + i, 100)).collect();
    let group_bytes: usize = group.iter().map(|r| frame(r.len()) as usize).sum();
    for keep in [0, 3, 8, 50, 108, 115, group_bytes - 1, group_bytes] {
        let (fs, dir) = fresh_disk();
        let mut opts = sim_options(&fs, &dir);
        opts.file_bytes = 1 << 20;
        let wal = Wal::open(opts).unwrap();
        let acked = append_acked(&wal, 0..5).await;

        // The writer writes the next group, then blocks before its fsync: the power goes out.
        let gate = Arc::new(Gate::closed());
        drop(wal);
        let mut opts = sim_options(&fs, &dir);
        opts.file_bytes = 1 << 20;
        opts.fault = Some(gate.clone());
        let wal = Wal::open(opts).unwrap();
        let mut pending = Vec::new();
        for record in &group {
            pending.push(wal.submit(record.clone()).await.unwrap());
        }
        eventually("the group to be written", || gate.entered() > 0).await;
        let fs = fs.crash_with(Crash::tearing(keep));
        gate.open();
        for append in pending {
            assert!(
                matches!(bounded(append).await, Err(Error::Poisoned)),
                "nothing unsynced may be acknowledged"
            );
        }
        drop(wal);

        let wal = Wal::open(sim_options(&fs, &dir)).unwrap();
        let recovered = replay_all(&wal, 0);
        assert_eq!(recovered[..acked.len()], acked[..], "keep {keep}");
        // Whole records of the torn group may have reached the disk; a partial one never shows.
        let whole = recovered.len() - acked.len();
        assert_eq!(
            recovered[acked.len()..]
                .iter()
                .map(|(_, r)| r.clone())
                .collect::<Vec<_>>(),
            group[..whole].to_vec(),
            "keep {keep}"
        );
        let mut expected = recovered;
        expected.extend(append_acked(&wal, 50..53).await);
        let fs = fs.crash();
        drop(wal);
        let wal = Wal::open(sim_options(&fs, &dir)).unwrap();
        assert_eq!(replay_all(&wal, 0), expected, "keep {keep}");
    }
}

#[tokio::test]
async fn truncate_prefix_leaves_a_contiguous_log_whatever_part_of_it_reaches_the_disk() {
    let (fs, dir) = fresh_disk();
    let wal = Wal::open(sim_options(&fs, &dir)).unwrap();
    let acked = append_acked(&wal, 0..40).await;
    let files = wal_files_on(&fs, &dir);
    assert!(files.len() >= 4);
    // Delete the first three files; of unsynced deletions, the OS may write back the last one only.
    let keep_from = files[3];
    wal.truncate_prefix(keep_from).unwrap();
    let fs = fs.crash_with(Crash {
        keep_unsynced_entries: vec![dir.join(format!("{:020}.wal", files[2]))],
        ..Crash::default()
    });
    drop(wal);
    let wal = Wal::open(sim_options(&fs, &dir)).unwrap();
    assert_eq!(wal.start_lsn(), keep_from);
    let kept: Vec<(Lsn, Bytes)> = acked
        .iter()
        .filter(|(lsn, _)| *lsn >= keep_from)
        .cloned()
        .collect();
    assert_eq!(replay_all(&wal, keep_from), kept);
}

fn wal_files_on(fs: &PowerLossFs, dir: &Path) -> Vec<Lsn> {
    use wal::WalFs as _;
    let mut starts: Vec<Lsn> = fs
        .list_files(dir)
        .unwrap()
        .iter()
        .filter_map(|name| name.strip_suffix(".wal")?.parse().ok())
        .collect();
    starts.sort();
    starts
}

#[tokio::test]
async fn a_cut_torn_tail_stays_cut_when_the_log_rolls_past_it() {
    // Recovery cuts the torn tail off the last file. If the next append goes to a new file (the
    // log was reopened with smaller files), nothing else ever syncs the cut file: without its own
    // sync the torn bytes come back in a file that is no longer the last, which is corruption.
    let (fs, dir) = fresh_disk();
    let gate = Arc::new(Gate::closed());
    let mut opts = sim_options(&fs, &dir);
    opts.file_bytes = 1 << 20;
    let wal = Wal::open(opts.clone()).unwrap();
    let acked = append_acked(&wal, 0..20).await;
    drop(wal);
    opts.fault = Some(gate.clone());
    let wal = Wal::open(opts).unwrap();
    let pending = wal.submit(payload(99, 300)).await.unwrap();
    eventually("the group to be written", || gate.entered() > 0).await;
    let fs = fs.crash_with(Crash::tearing(100));
    gate.open();
    assert!(bounded(pending).await.is_err());
    drop(wal);

    // Smaller files than the one on disk: the first append after recovery rolls.
    let wal = Wal::open(sim_options(&fs, &dir)).unwrap();
    assert_eq!(replay_all(&wal, 0), acked);
    let mut expected = acked;
    expected.extend(append_acked(&wal, 40..42).await);
    assert_eq!(wal_files_on(&fs, &dir).len(), 2, "the append rolled");
    let fs = fs.crash();
    drop(wal);
    let wal = Wal::open(sim_options(&fs, &dir)).unwrap();
    assert_eq!(replay_all(&wal, 0), expected);
}
