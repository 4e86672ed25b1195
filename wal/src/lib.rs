//! `wal` — the durable, append-only log of opaque records with group commit.
//!
//! This crate owns one thing: making bytes durable in order. Both the data WAL (record batches of every
//! partition of a broker) and the Raft log of `metadata` are built on it, so there is one fsync
//! discipline in the project, not two.
//!
//! A log is a directory of files named by the [`Lsn`] of their first record. An [`Lsn`] is the byte
//! position of a record in the logical log (the concatenation of all files), so a record can be read
//! back by position. Records are framed `[len: u32 LE][crc32c(payload): u32 LE][payload]`.
//!
//! Concurrency: [`Wal::submit`] enqueues a record (in call order) and returns a [`PendingAppend`];
//! one writer task writes everything queued as one group and issues **one fsync per group**, then
//! completes the group's appends in order. Callers that must keep an order (offsets of one partition)
//! submit under their own lock and await durability outside it.
//!
//! Failure model: if a write or fsync fails, the WAL is *poisoned*: the failing group and every later
//! append get [`Error::Poisoned`] until the log is reopened. Nothing that was not durably synced is
//! ever reported as durable.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

/// Byte position of a record in the logical log.
pub type Lsn = u64;

/// Hook called before every fsync; returning an error simulates a failing disk (tests, `--fail-fsync-file`).
pub trait FaultInjector: Send + Sync + Debug {
    fn before_sync(&self) -> std::io::Result<()>;
}

#[derive(Debug, Clone)]
pub struct WalOptions {
    pub dir: PathBuf,
    /// A new file is started once the current one exceeds this size.
    pub file_bytes: u64,
    /// Upper bound of bytes written in one group commit.
    pub max_group_bytes: usize,
    /// Upper bound of bytes submitted but not yet durable; `submit` waits beyond it (backpressure).
    pub max_pending_bytes: usize,
    /// `false` only in tests/benchmarks that explicitly trade durability away.
    pub fsync: bool,
    pub fault: Option<Arc<dyn FaultInjector>>,
}

impl WalOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalOptions {
            dir: dir.into(),
            file_bytes: 64 * 1024 * 1024,
            max_group_bytes: 4 * 1024 * 1024,
            max_pending_bytes: 64 * 1024 * 1024,
            fsync: true,
            fault: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("wal i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("wal corrupted in {file} at byte {offset}: {reason}")]
    Corrupted { file: PathBuf, offset: u64, reason: String },
    #[error("wal is poisoned by an earlier write/fsync failure; reopen it")]
    Poisoned,
    #[error("wal is closed")]
    Closed,
    #[error("no record at lsn {0}")]
    NotFound(Lsn),
    #[error("record of {0} bytes is too large")]
    TooLarge(usize),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Handle to an open log. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Wal {
    _inner: Arc<()>,
}

/// Resolves once the submitted record is durable (or failed).
pub struct PendingAppend {
    _p: (),
}

impl std::future::Future for PendingAppend {
    type Output = Result<Lsn>;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        todo!()
    }
}

/// Sequential reader over records `[from, end)` as of its creation.
pub struct WalReader {
    _p: (),
}

impl Iterator for WalReader {
    type Item = Result<(Lsn, Bytes)>;
    fn next(&mut self) -> Option<Self::Item> {
        todo!()
    }
}

impl Wal {
    /// Opens (creating if needed) the log in `opts.dir` and recovers it: a torn last record (partial
    /// write at the tail of the last file) is dropped and the file truncated; a bad record followed by
    /// valid data, or in a non-last file, is corruption and returns [`Error::Corrupted`].
    /// Must be called inside a tokio runtime (spawns the writer).
    pub fn open(_opts: WalOptions) -> Result<Wal> {
        todo!()
    }

    /// Enqueues a record; waits only when `max_pending_bytes` are already queued.
    pub async fn submit(&self, _record: Bytes) -> Result<PendingAppend> {
        todo!()
    }

    /// `submit` + await durability.
    pub async fn append(&self, record: Bytes) -> Result<Lsn> {
        self.submit(record).await?.await
    }

    /// Reads back one durable record.
    pub async fn read(&self, _lsn: Lsn) -> Result<Bytes> {
        todo!()
    }

    /// Streams durable records from `from` (a record boundary, or `start_lsn()`) to the current end.
    pub fn replay(&self, _from: Lsn) -> Result<WalReader> {
        todo!()
    }

    /// First lsn still stored.
    pub fn start_lsn(&self) -> Lsn {
        todo!()
    }

    /// Lsn the next record will get (= end of the durable log when nothing is pending).
    pub fn end_lsn(&self) -> Lsn {
        todo!()
    }

    /// Deletes whole files that lie entirely below `keep_from`. Never deletes the active file.
    pub fn truncate_prefix(&self, _keep_from: Lsn) -> Result<()> {
        todo!()
    }

    /// Flushes what is queued and stops the writer; later calls get [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        todo!()
    }
}
