//! The Raft log, persisted through the `wal` crate.
//!
//! Every log operation (append, truncate, purge, vote, committed) is one WAL record (see
//! [`LogRecord`]); the live log is kept in memory and rebuilt on open by replaying the records in
//! order. Appends use the WAL's group commit: the record is queued in call order and a flusher task
//! reports durability to openraft (`IOFlushed`) once the group holding it is fsynced, so several
//! appends share one fsync.
//!
//! After a snapshot, purge writes a `Checkpoint` record holding the complete log state and then drops
//! the WAL files that lie wholly before it, so the directory does not grow forever and nothing that
//! lived only in the dropped files (vote, committed, purged position, live entries) is lost.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use tokio::sync::mpsc;
use wal::{PendingAppend, Wal, WalOptions};

use super::codec::{self, CheckpointRecord, LogRecord};
use super::types::{Entry, LogId, TypeConfig, Vote};

/// WAL files of the Raft log are small so that purging can actually delete some.
const WAL_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Room for the largest record we write (an append chunk or a checkpoint).
const WAL_MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;
/// Appends are split into records of about this size.
const APPEND_RECORD_BYTES: usize = 1024 * 1024;
/// A checkpoint larger than this is not written; the purge is then recorded as a plain `Purge` and
/// the WAL prefix is kept until a later, smaller checkpoint.
const CHECKPOINT_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Appends waiting for their group commit before `append` applies backpressure.
const FLUSH_QUEUE: usize = 1024;

/// The in-memory image of the log, shared by the storage and its readers.
#[derive(Debug, Default)]
struct LogMem {
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
}

impl LogMem {
    /// Applies one replayed record.
    fn replay(&mut self, record: LogRecord) -> io::Result<()> {
        match record {
            LogRecord::Append(entries) => {
                for record in &entries {
                    let entry = codec::entry(record)?;
                    self.entries.insert(entry.log_id.index, entry);
                }
            }
            LogRecord::TruncateAfter(last) => self.truncate_after(last.map(|p| p.index)),
            LogRecord::Purge(position) => self.purge(codec::log_id(&position)),
            LogRecord::SaveVote(vote) => self.vote = Some(codec::vote(&vote)),
            LogRecord::SaveCommitted(committed) => {
                self.committed = committed.as_ref().map(codec::log_id)
            }
            LogRecord::Checkpoint(checkpoint) => {
                let mut entries = BTreeMap::new();
                for record in &checkpoint.entries {
                    let entry = codec::entry(record)?;
                    entries.insert(entry.log_id.index, entry);
                }
                *self = LogMem {
                    vote: checkpoint.vote.as_ref().map(codec::vote),
                    committed: checkpoint.committed.as_ref().map(codec::log_id),
                    purged: checkpoint.purged.as_ref().map(codec::log_id),
                    entries,
                };
            }
        }
        Ok(())
    }

    fn truncate_after(&mut self, last_index: Option<u64>) {
        match last_index {
            Some(index) => {
                // Nothing lies after u64::MAX, so an overflow means there is nothing to remove.
                if let Some(first_removed) = index.checked_add(1) {
                    drop(self.entries.split_off(&first_removed));
                }
            }
            None => self.entries.clear(),
        }
    }

    fn purge(&mut self, log_id: LogId) {
        if self.purged.as_ref().is_some_and(|purged| *purged >= log_id) {
            return;
        }
        self.entries = match log_id.index.checked_add(1) {
            Some(first_kept) => self.entries.split_off(&first_kept),
            None => BTreeMap::new(),
        };
        self.purged = Some(log_id);
    }

    fn checkpoint(&self) -> CheckpointRecord {
        CheckpointRecord {
            vote: self.vote.as_ref().map(codec::vote_record),
            committed: self.committed.as_ref().map(codec::position),
            purged: self.purged.as_ref().map(codec::position),
            entries: self.entries.values().map(codec::entry_record).collect(),
        }
    }

    fn entries_in(&self, range: &impl RangeBounds<u64>) -> Vec<Entry> {
        // Walk from the start bound and stop at the end bound instead of `BTreeMap::range`, which
        // panics on inverted ranges.
        let start = match range.start_bound() {
            Bound::Included(start) => *start,
            Bound::Excluded(start) => match start.checked_add(1) {
                Some(start) => start,
                None => return Vec::new(),
            },
            Bound::Unbounded => 0,
        };
        self.entries
            .range(start..)
            .take_while(|(index, _)| match range.end_bound() {
                Bound::Included(end) => *index <= end,
                Bound::Excluded(end) => *index < end,
                Bound::Unbounded => true,
            })
            .map(|(_, entry)| entry.clone())
            .collect()
    }
}

type SharedMem = Arc<Mutex<LogMem>>;

fn lock(mem: &SharedMem) -> MutexGuard<'_, LogMem> {
    // The lock is never held across an await or a panicking call, so poisoning cannot leave the
    // image half-updated; recover the guard rather than propagate a panic.
    mem.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wal_error(error: wal::Error) -> io::Error {
    match error {
        wal::Error::Io(error) => error,
        other => io::Error::other(other),
    }
}

/// An append (or a committed marker) waiting for its group commit.
struct Flush {
    pending: PendingAppend,
    callback: IOFlushed<TypeConfig>,
}

/// The `RaftLogStorage` of the metadata group.
pub(crate) struct LogStore {
    wal: Wal,
    mem: SharedMem,
    flushes: mpsc::Sender<Flush>,
}

impl LogStore {
    /// Opens (creating) the WAL in `dir` and rebuilds the log from its records. Returns the store
    /// and the WAL handle (to close it on shutdown).
    pub(crate) fn open(dir: PathBuf, fsync: bool) -> Result<(LogStore, Wal), crate::Error> {
        Self::open_with_file_bytes(dir, fsync, WAL_FILE_BYTES)
    }

    fn open_with_file_bytes(
        dir: PathBuf,
        fsync: bool,
        file_bytes: u64,
    ) -> Result<(LogStore, Wal), crate::Error> {
        let mut options = WalOptions::new(dir);
        options.file_bytes = file_bytes;
        options.fsync = fsync;
        Self::open_with(options)
    }

    /// Opens with explicit WAL options (tests: small files, a simulated disk).
    fn open_with(mut options: WalOptions) -> Result<(LogStore, Wal), crate::Error> {
        options.max_group_bytes = WAL_MAX_GROUP_BYTES;
        let wal = Wal::open(options)?;
        let mut mem = LogMem::default();
        let mut records = 0u64;
        for item in wal.replay(wal.start_lsn())? {
            let (lsn, bytes) = item?;
            let record = codec::decode_record(&bytes)
                .map_err(|e| crate::Error::Storage(format!("raft log record at lsn {lsn}: {e}")))?;
            mem.replay(record)
                .map_err(|e| crate::Error::Storage(format!("raft log record at lsn {lsn}: {e}")))?;
            records += 1;
        }
        tracing::info!(
            records,
            entries = mem.entries.len(),
            purged = ?mem.purged,
            committed = ?mem.committed,
            "raft log replayed"
        );

        let (flushes, queue) = mpsc::channel(FLUSH_QUEUE);
        tokio::spawn(report_flushes(queue));
        let store = LogStore {
            wal: wal.clone(),
            mem: Arc::new(Mutex::new(mem)),
            flushes,
        };
        Ok((store, wal))
    }

    /// Queues one record for the next group commit.
    async fn submit(&self, record: &LogRecord) -> io::Result<PendingAppend> {
        let bytes = codec::encode_record(record)?;
        self.wal.submit(bytes.into()).await.map_err(wal_error)
    }

    /// Writes one record and waits until it is durable; returns its lsn.
    async fn write_durably(&self, record: &LogRecord) -> io::Result<wal::Lsn> {
        self.submit(record).await?.await.map_err(wal_error)
    }

    async fn track(
        &self,
        pending: PendingAppend,
        callback: IOFlushed<TypeConfig>,
    ) -> io::Result<()> {
        self.flushes
            .send(Flush { pending, callback })
            .await
            .map_err(|_| io::Error::other("raft log flusher has stopped"))
    }
}

/// Completes `IOFlushed` callbacks in submission order as the WAL makes each record durable.
async fn report_flushes(mut queue: mpsc::Receiver<Flush>) {
    while let Some(Flush { pending, callback }) = queue.recv().await {
        let result = pending.await.map(|_lsn| ()).map_err(wal_error);
        if let Err(error) = &result {
            tracing::error!(%error, "raft log write failed");
        }
        callback.io_completed(result);
    }
}

/// Splits entries into append records of about [`APPEND_RECORD_BYTES`] each.
fn append_records(entries: &[Entry]) -> Vec<LogRecord> {
    let mut records = Vec::new();
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0usize;
    for entry in entries {
        let record = codec::entry_record(entry);
        // Sizing by encoding each entry alone (plus its separator) is cheap relative to fsync.
        let size = serde_json::to_vec(&record).map(|v| v.len()).unwrap_or(0) + 1;
        if !chunk.is_empty() && chunk_bytes + size > APPEND_RECORD_BYTES {
            records.push(LogRecord::Append(std::mem::take(&mut chunk)));
            chunk_bytes = 0;
        }
        chunk_bytes += size;
        chunk.push(record);
    }
    if !chunk.is_empty() {
        records.push(LogRecord::Append(chunk));
    }
    records
}

/// A read handle on the log (for replication and applying).
#[derive(Clone)]
pub(crate) struct LogReader {
    mem: SharedMem,
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(lock(&self.mem).entries_in(&range))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(lock(&self.mem).vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let mem = lock(&self.mem);
        let last = mem
            .entries
            .values()
            .next_back()
            .map(|entry| entry.log_id)
            .or(mem.purged);
        Ok(LogState {
            last_purged_log_id: mem.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            mem: self.mem.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // A vote must be durable before openraft acts on it (it answers vote requests with it).
        self.write_durably(&LogRecord::SaveVote(codec::vote_record(vote)))
            .await?;
        lock(&self.mem).vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // The committed position is only a restart hint (entries up to it are re-applied at
        // startup), so it rides along with the next group commit instead of forcing its own fsync.
        let record = LogRecord::SaveCommitted(committed.as_ref().map(codec::position));
        let pending = self.submit(&record).await?;
        lock(&self.mem).committed = committed;
        self.track(pending, IOFlushed::noop()).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(lock(&self.mem).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut last_pending = None;
        for record in append_records(&entries) {
            last_pending = Some(self.submit(&record).await?);
        }
        {
            let mut mem = lock(&self.mem);
            for entry in entries {
                mem.entries.insert(entry.log_id.index, entry);
            }
        }
        match last_pending {
            // Records become durable in order, so the last one covers the whole append.
            Some(pending) => self.track(pending, callback).await,
            None => {
                callback.io_completed(Ok(()));
                Ok(())
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let record = LogRecord::TruncateAfter(last_log_id.as_ref().map(codec::position));
        self.write_durably(&record).await?;
        lock(&self.mem).truncate_after(last_log_id.map(|id| id.index));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let checkpoint = {
            let mut mem = lock(&self.mem);
            mem.purge(log_id);
            LogRecord::Checkpoint(mem.checkpoint())
        };
        let bytes = codec::encode_record(&checkpoint)?;
        if bytes.len() <= CHECKPOINT_MAX_BYTES {
            let lsn = self
                .wal
                .submit(bytes.into())
                .await
                .map_err(wal_error)?
                .await
                .map_err(wal_error)?;
            // Everything before the durable checkpoint is superseded by it.
            self.wal.truncate_prefix(lsn).map_err(wal_error)?;
        } else {
            self.write_durably(&LogRecord::Purge(codec::position(&log_id)))
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::storage::RaftLogStorageExt;
    use openraft::EntryPayload;

    use super::*;
    use crate::raft::types::Request;
    use crate::Command;

    fn id(term: u64, index: u64) -> LogId {
        LogId {
            leader_id: LeaderId { term, node_id: 1 },
            index,
        }
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: id(term, index),
            payload: EntryPayload::Normal(Request(Command::AllocateProducerIds {
                count: i64::try_from(index).unwrap_or(1) + 1,
            })),
        }
    }

    fn indexes(mem: &LogMem) -> Vec<u64> {
        mem.entries.keys().copied().collect()
    }

    #[test]
    fn replay_applies_records_in_order() -> io::Result<()> {
        let mut mem = LogMem::default();
        let records = [
            LogRecord::Append((0..5).map(|i| codec::entry_record(&entry(1, i))).collect()),
            LogRecord::TruncateAfter(Some(codec::position(&id(1, 2)))),
            LogRecord::Append((3..6).map(|i| codec::entry_record(&entry(2, i))).collect()),
            LogRecord::SaveVote(codec::VoteRecord {
                term: 2,
                node_id: 1,
                committed: true,
            }),
            LogRecord::SaveCommitted(Some(codec::position(&id(2, 4)))),
            LogRecord::Purge(codec::position(&id(1, 1))),
        ];
        for record in records {
            mem.replay(codec::decode_record(&codec::encode_record(&record)?)?)?;
        }
        assert_eq!(indexes(&mem), vec![2, 3, 4, 5]);
        assert_eq!(mem.entries[&3].log_id, id(2, 3));
        assert_eq!(mem.purged, Some(id(1, 1)));
        assert_eq!(mem.committed, Some(id(2, 4)));
        assert!(mem
            .vote
            .is_some_and(|v| v.committed && v.leader_id.term == 2));

        // A checkpoint resets to exactly its content.
        let checkpoint = LogRecord::Checkpoint(mem.checkpoint());
        let mut other = LogMem::default();
        other.replay(LogRecord::Append(vec![codec::entry_record(&entry(9, 100))]))?;
        other.replay(checkpoint)?;
        assert_eq!(indexes(&other), indexes(&mem));
        assert_eq!(
            (other.vote, other.committed, other.purged),
            (mem.vote, mem.committed, mem.purged)
        );
        Ok(())
    }

    #[test]
    fn range_reads_never_panic() {
        let mut mem = LogMem::default();
        for i in 0..5 {
            mem.entries.insert(i, entry(1, i));
        }
        let indexes_of = |v: Vec<Entry>| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
        assert_eq!(indexes_of(mem.entries_in(&(1..3))), vec![1, 2]);
        assert_eq!(indexes_of(mem.entries_in(&(1..=3))), vec![1, 2, 3]);
        assert_eq!(indexes_of(mem.entries_in(&(3..))), vec![3, 4]);
        let inverted = (Bound::Included(4), Bound::Excluded(2));
        assert!(mem.entries_in(&inverted).is_empty());
        assert!(mem.entries_in(&(3..3)).is_empty());
        assert!(mem.entries_in(&(u64::MAX..)).is_empty());
        let excluded = (Bound::Excluded(u64::MAX), Bound::Unbounded);
        assert!(mem.entries_in(&excluded).is_empty());
    }

    #[test]
    fn purge_never_moves_back_and_appends_are_chunked() -> io::Result<()> {
        let mut mem = LogMem::default();
        for i in 0..10 {
            mem.entries.insert(i, entry(1, i));
        }
        mem.purge(id(1, 5));
        mem.purge(id(1, 3));
        assert_eq!(mem.purged, Some(id(1, 5)));
        assert_eq!(indexes(&mem), vec![6, 7, 8, 9]);

        let big: Vec<Entry> = (0..20_000).map(|i| entry(1, i)).collect();
        let records = append_records(&big);
        assert!(
            records.len() > 1,
            "expected several records, got {}",
            records.len()
        );
        let mut total = 0;
        for record in &records {
            let LogRecord::Append(chunk) = record else {
                return Err(io::Error::other("variant"));
            };
            assert!(codec::encode_record(record)?.len() <= APPEND_RECORD_BYTES + 1024);
            total += chunk.len();
        }
        assert_eq!(total, big.len());
        Ok(())
    }

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn test_vote() -> Vote {
        Vote {
            leader_id: LeaderId {
                term: 1,
                node_id: 1,
            },
            committed: true,
        }
    }

    /// Votes, appends, truncates, commits, purges (dropping whole WAL files) and appends again;
    /// every step has been acknowledged when this returns.
    async fn write_history(store: &mut LogStore, wal: &Wal) -> TestResult {
        store.save_vote(&test_vote()).await?;
        for batch in 0..20 {
            store
                .blocking_append((batch * 10..batch * 10 + 10).map(|i| entry(1, i)))
                .await?;
        }
        store.truncate_after(Some(id(1, 195))).await?;
        store
            .blocking_append((196..=199).map(|i| entry(2, i)))
            .await?;
        store.save_committed(Some(id(2, 197))).await?;
        let start_before = wal.start_lsn();
        store.purge(id(1, 150)).await?;
        assert!(
            wal.start_lsn() > start_before,
            "purge must drop WAL files before the checkpoint"
        );
        store.blocking_append([entry(2, 200)]).await?;
        Ok(())
    }

    /// The log as [`write_history`] left it.
    async fn assert_history(store: &mut LogStore) -> TestResult {
        let state = store.get_log_state().await?;
        assert_eq!(state.last_purged_log_id, Some(id(1, 150)));
        assert_eq!(state.last_log_id, Some(id(2, 200)));
        assert_eq!(store.read_committed().await?, Some(id(2, 197)));
        let mut reader = store.get_log_reader().await;
        assert_eq!(reader.read_vote().await?, Some(test_vote()));
        let entries = reader.try_get_log_entries(0..1000).await?;
        let ids: Vec<LogId> = entries.iter().map(|e| e.log_id).collect();
        let expected: Vec<LogId> = (151..=195)
            .map(|i| id(1, i))
            .chain((196..=200).map(|i| id(2, i)))
            .collect();
        assert_eq!(ids, expected);
        assert_eq!(entries[0], entry(1, 151));
        Ok(())
    }

    #[tokio::test]
    async fn wal_backed_log_survives_reopen_and_purge_drops_old_files() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("raft-log");
        // Tiny files so that the purge below has whole files to delete.
        let (mut store, wal) = LogStore::open_with_file_bytes(path.clone(), false, 2048)?;
        write_history(&mut store, &wal).await?;
        drop(store);
        wal.close().await?;

        let (mut store, wal) = LogStore::open_with_file_bytes(path, false, 2048)?;
        assert_history(&mut store).await?;
        drop(store);
        wal.close().await?;
        Ok(())
    }

    /// Power loss (the `wal` crate's simulated disk): everything acknowledged — vote, entries,
    /// truncation, purge — is there after the crash, though nothing was closed or flushed.
    #[tokio::test]
    async fn acknowledged_log_operations_survive_power_loss() -> TestResult {
        let disk = wal::PowerLossFs::new();
        disk.create_durable_dir(std::path::Path::new("/node"))?;
        let options = |disk: &wal::PowerLossFs| {
            let mut options = WalOptions::new("/node/raft-log");
            options.file_bytes = 2048;
            options.fs = Arc::new(disk.clone());
            options
        };
        let (mut store, wal) = LogStore::open_with(options(&disk))?;
        write_history(&mut store, &wal).await?;

        let disk = disk.crash();
        drop(store);
        drop(wal);
        let (mut store, wal) = LogStore::open_with(options(&disk))?;
        assert_history(&mut store).await?;
        drop(store);
        wal.close().await?;
        Ok(())
    }
}
