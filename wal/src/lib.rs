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

//!
//! Layout: `frame` (the record format), `files` (names, directory, positional reads), `recovery` (the
//! scan at open), `writer` (the group-commit thread), `reader` (`read` and `replay`), `state` (what
//! they share), `vfs` (the file layer every file operation goes through: [`OsFs`] in production)
//! and `power_loss` ([`PowerLossFs`], a simulated disk that loses unsynced writes, for crash
//! tests of the log and of everything built on it).

mod files;
mod frame;
mod power_loss;
mod reader;
mod recovery;
mod state;
mod vfs;
mod writer;

pub use crate::power_loss::{Crash, PowerLossFs};
pub use crate::vfs::{DirLock, OpenMode, OsFs, WalFile, WalFs};

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::{oneshot, watch, Semaphore};

use crate::files::{file_path, FileRef};
use crate::frame::{frame_len, MAX_PAYLOAD};
use crate::reader::Replay;
use crate::state::{Queue, Shared, Stats, Submission};
use crate::writer::Writer;

/// Byte position of a record in the logical log.
pub type Lsn = u64;

/// Hook called before every fsync; returning an error simulates a failing disk (tests, `--fail-fsync-file`).
///
/// It is called once per group commit, from the writer thread, even when `fsync` is off; a slow hook
/// stalls the writer, which tests use to build up backpressure.
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
    /// The file system the log lives on: [`OsFs`], or [`PowerLossFs`] in crash tests.
    pub fs: Arc<dyn WalFs>,
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
            fs: Arc::new(OsFs),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("wal i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("wal corrupted in {file} at byte {offset}: {reason}")]
    Corrupted {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
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

/// Counters since open, for tests, benchmarks and metrics. `syncs` counts data fsyncs (one per group
/// commit when `fsync` is on, zero otherwise); `bytes_committed` counts frame bytes (headers included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    pub groups_committed: u64,
    pub records_committed: u64,
    pub bytes_committed: u64,
    pub syncs: u64,
}

/// Handle to an open log. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Wal {
    inner: Arc<WalInner>,
}

/// Owned by the handles only (not by the writer), so dropping the last handle stops the writer.
struct WalInner {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Debug for WalInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.opts.dir)
            .field("start_lsn", &self.shared.start_lsn.load(Ordering::Relaxed))
            .field(
                "durable_lsn",
                &self.shared.durable_end.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl Drop for WalInner {
    fn drop(&mut self) {
        // Dropping the last handle without `close` still flushes what is queued; joining makes sure
        // the directory lock is released before a reopen in the same process.
        self.shared.request_close();
        let handle = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// Resolves once the submitted record is durable (or failed).
pub struct PendingAppend {
    lsn: Lsn,
    done: oneshot::Receiver<Result<Lsn>>,
}

impl PendingAppend {
    /// The lsn the record gets if it becomes durable (known at submit; the future resolves to it).
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }
}

impl std::future::Future for PendingAppend {
    type Output = Result<Lsn>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.done).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            // The writer died (panicked) with this record in hand: it may not be durable.
            Poll::Ready(Err(_)) => Poll::Ready(Err(Error::Poisoned)),
        }
    }
}

/// Sequential reader over records `[from, end)` as of its creation.
///
/// It does blocking file reads: iterate it on a blocking thread (`spawn_blocking`) when inside async
/// code. It stops after the first error.
pub struct WalReader {
    replay: Option<Replay>,
}

impl Iterator for WalReader {
    type Item = Result<(Lsn, Bytes)>;
    fn next(&mut self) -> Option<Self::Item> {
        let replay = self.replay.as_mut()?;
        match replay.next_record() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => {
                self.replay = None;
                None
            }
            Err(e) => {
                self.replay = None;
                Some(Err(e))
            }
        }
    }
}

const LOCK_FILE: &str = "LOCK";

impl Wal {
    /// Opens (creating if needed) the log in `opts.dir` and recovers it: a torn last record (partial
    /// write at the tail of the last file) is dropped and the file truncated; a bad record followed by
    /// valid data, or in a non-last file, is corruption and returns [`Error::Corrupted`].
    /// Must be called inside a tokio runtime (spawns the writer).
    ///
    /// The directory is locked (`LOCK` file) while a writer is running, so a second `open` of the same
    /// directory fails with an I/O error of kind `WouldBlock` until the first handle is closed, dropped
    /// or poisoned.
    pub fn open(opts: WalOptions) -> Result<Wal> {
        let dir = &opts.dir;
        let fs = opts.fs.as_ref();
        vfs::create_dir_durably(fs, dir, opts.fsync)?;
        let dir_lock = match fs.lock(&dir.join(LOCK_FILE)) {
            Ok(lock) => lock,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "wal directory {} is in use by another writer",
                        dir.display()
                    ),
                )))
            }
            Err(e) => return Err(Error::Io(e)),
        };

        let recovered = recovery::recover(fs, dir, opts.fsync)?;
        let mut files: BTreeMap<Lsn, FileRef> = BTreeMap::new();
        for (start, path) in &recovered.files {
            files.insert(*start, fs.open(path, OpenMode::Read)?);
        }
        let (active_start, active_path) = recovered
            .files
            .last()
            .cloned()
            .ok_or_else(|| io::Error::other("recovery returned no wal file"))?;
        let start_lsn = recovered.files[0].0;
        let active_len = recovered.end - active_start;
        // Appends go to the end of the file, which recovery cut back to the last valid record.
        let active = fs.open(&active_path, OpenMode::Append)?;
        debug_assert_eq!(active.len().ok(), Some(active_len));

        // A semaphore cannot hand out more than `MAX_PERMITS`, and one acquire takes a `u32`.
        let pending_limit =
            opts.max_pending_bytes
                .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                pending: VecDeque::new(),
                next_lsn: recovered.end,
                closing: false,
                poisoned: false,
                writer_waiting: false,
            }),
            queue_ready: Condvar::new(),
            pending_bytes: Arc::new(Semaphore::new(pending_limit as usize)),
            pending_limit,
            durable_end: AtomicU64::new(recovered.end),
            start_lsn: AtomicU64::new(start_lsn),
            files: RwLock::new(files),
            truncate_lock: Mutex::new(()),
            closed: AtomicBool::new(false),
            writer_stopped: watch::channel(false).0,
            stats: Stats::default(),
            opts,
        });
        let handle =
            Writer::new(shared.clone(), active, active_start, active_len, dir_lock).spawn()?;
        Ok(Wal {
            inner: Arc::new(WalInner {
                shared,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Enqueues a record; waits only when `max_pending_bytes` are already queued.
    ///
    /// A record larger than `max_pending_bytes` is accepted: it waits until nothing else is pending.
    /// Empty records are refused (an I/O error of kind `InvalidInput`): a zero-length frame is what
    /// zero-filled garbage looks like, so the format reserves it. Records longer than
    /// `u32::MAX - 8` bytes get [`Error::TooLarge`].
    pub async fn submit(&self, record: Bytes) -> Result<PendingAppend> {
        if record.is_empty() {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty wal records are not allowed",
            )));
        }
        if record.len() > MAX_PAYLOAD {
            return Err(Error::TooLarge(record.len()));
        }
        let shared = &self.inner.shared;
        let frame = frame_len(record.len());
        let permits = frame.min(u64::from(shared.pending_limit)) as u32;
        let Ok(permit) = shared
            .pending_bytes
            .clone()
            .acquire_many_owned(permits)
            .await
        else {
            return Err(shared.refusal());
        };

        let (done, receiver) = oneshot::channel();
        let mut queue = shared.lock_queue();
        if queue.poisoned {
            return Err(Error::Poisoned);
        }
        if queue.closing {
            return Err(Error::Closed);
        }
        let lsn = queue.next_lsn;
        queue.next_lsn += frame;
        queue.pending.push_back(Submission {
            lsn,
            record,
            done,
            _permit: permit,
        });
        let wake_writer = std::mem::take(&mut queue.writer_waiting);
        drop(queue);
        if wake_writer {
            shared.queue_ready.notify_one();
        }
        Ok(PendingAppend {
            lsn,
            done: receiver,
        })
    }

    /// `submit` + await durability.
    pub async fn append(&self, record: Bytes) -> Result<Lsn> {
        self.submit(record).await?.await
    }

    /// Reads back one durable record.
    pub async fn read(&self, lsn: Lsn) -> Result<Bytes> {
        let shared = &self.inner.shared;
        shared.ensure_open()?;
        let end = shared.durable_end.load(Ordering::Acquire);
        if lsn >= end || lsn < shared.start_lsn.load(Ordering::Acquire) {
            return Err(Error::NotFound(lsn));
        }
        let (file_start, file, limit) = {
            let files = shared.files_read();
            let (start, file) = files
                .range(..=lsn)
                .next_back()
                .ok_or(Error::NotFound(lsn))?;
            let next_start = files.range(lsn + 1..).next().map(|(next, _)| *next);
            (
                *start,
                file.clone(),
                next_start.map_or(end, |next| next.min(end)),
            )
        };
        tokio::task::spawn_blocking(move || {
            reader::read_record(file.as_ref(), file_start, lsn, limit)
        })
        .await
        .map_err(|e| Error::Io(io::Error::other(e)))?
    }

    /// Streams durable records from `from` (a record boundary, or `start_lsn()`) to the current end.
    ///
    /// `from` below `start_lsn()` or above the durable end is [`Error::NotFound`]; so is a `from` that
    /// turns out not to be a record boundary (the iterator's first item). Appends may continue while
    /// the reader is used; it does not see them.
    pub fn replay(&self, from: Lsn) -> Result<WalReader> {
        let shared = &self.inner.shared;
        shared.ensure_open()?;
        // Load the end before looking at the files: every file holding records below it is already in
        // the table.
        let end = shared.durable_end.load(Ordering::Acquire);
        if from > end {
            return Err(Error::NotFound(from));
        }
        let files: Vec<(Lsn, FileRef)> = {
            let table = shared.files_read();
            let first = table
                .range(..=from)
                .next_back()
                .map(|(start, file)| (*start, file.clone()));
            let Some(first) = first else {
                return Err(Error::NotFound(from));
            };
            std::iter::once(first)
                .chain(
                    table
                        .range(from.saturating_add(1)..end.max(from.saturating_add(1)))
                        .map(|(start, file)| (*start, file.clone())),
                )
                .collect()
        };
        Ok(WalReader {
            replay: Some(Replay::new(shared.opts.dir.clone(), files, from, end)),
        })
    }

    /// First lsn still stored.
    pub fn start_lsn(&self) -> Lsn {
        self.inner.shared.start_lsn.load(Ordering::Acquire)
    }

    /// Lsn the next record will get (= end of the durable log when nothing is pending).
    pub fn end_lsn(&self) -> Lsn {
        self.inner.shared.lock_queue().next_lsn
    }

    /// End of the durable log: every record below it is synced and readable (`read`, `replay`).
    pub fn durable_lsn(&self) -> Lsn {
        self.inner.shared.durable_end.load(Ordering::Acquire)
    }

    /// Counters since open.
    pub fn stats(&self) -> WalStats {
        self.inner.shared.stats.snapshot()
    }

    /// Deletes whole files that lie entirely below `keep_from`. Never deletes the active file.
    ///
    /// Blocking (unlink + directory sync per file); files are deleted oldest first so a crash midway
    /// leaves a contiguous log. Readers that already hold a deleted file keep reading it. Refused with
    /// [`Error::Poisoned`] on a poisoned log.
    pub fn truncate_prefix(&self, keep_from: Lsn) -> Result<()> {
        let shared = &self.inner.shared;
        shared.ensure_open()?;
        // After a failure the directory may already be reopened by a new `Wal`; a poisoned handle
        // must not delete files under it.
        if shared.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let _serial = shared
            .truncate_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let doomed: Vec<Lsn> = {
            let mut files = shared.files_write();
            let starts: Vec<Lsn> = files.keys().copied().collect();
            // File i holds [starts[i], starts[i + 1]); the last (active) file is never a candidate.
            let doomed: Vec<Lsn> = starts
                .windows(2)
                .take_while(|pair| pair[1] <= keep_from)
                .map(|pair| pair[0])
                .collect();
            for start in &doomed {
                files.remove(start);
            }
            if let Some(first) = files.keys().next() {
                shared.start_lsn.store(*first, Ordering::Release);
            }
            doomed
        };
        for start in doomed {
            let path = file_path(&shared.opts.dir, start);
            shared.opts.fs.remove_file(&path)?;
            if shared.opts.fsync {
                shared.opts.fs.sync_dir(&shared.opts.dir)?;
            }
            tracing::debug!(file = %path.display(), "deleted wal file");
        }
        Ok(())
    }

    /// Flushes what is queued and stops the writer; later calls get [`Error::Closed`].
    ///
    /// Submits still waiting for backpressure are refused with [`Error::Closed`]. Returns
    /// [`Error::Poisoned`] if the log is (or became, while flushing) poisoned. Calling it again is a
    /// no-op with the same result.
    pub async fn close(&self) -> Result<()> {
        let shared = &self.inner.shared;
        shared.closed.store(true, Ordering::Release);
        shared.request_close();
        let mut stopped = shared.writer_stopped.subscribe();
        // The sender lives in `shared`, which we hold, so this only ends when the writer has exited.
        let _ = stopped.wait_for(|stopped| *stopped).await;
        shared.files_write().clear();
        if shared.is_poisoned() {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }
}
