//! State shared by the [`crate::Wal`] handles, the writer thread and readers: the submission queue,
//! the durable/start positions, the table of open file handles and the counters.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};

use bytes::Bytes;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::files::FileRef;
use crate::{Error, Lsn, Result, WalOptions, WalStats};

/// A record waiting for the writer.
pub(crate) struct Submission {
    pub(crate) lsn: Lsn,
    pub(crate) record: Bytes,
    pub(crate) done: oneshot::Sender<Result<Lsn>>,
    /// Backpressure bytes, released once the record is durable (or failed).
    pub(crate) _permit: OwnedSemaphorePermit,
}

/// Records submitted but not yet taken by the writer. Lsns are assigned here, under the lock, so the
/// queue order, the lsn order and the completion order are the same thing.
pub(crate) struct Queue {
    pub(crate) pending: VecDeque<Submission>,
    pub(crate) next_lsn: Lsn,
    /// `close` (or the last handle's drop) asked the writer to drain the queue and stop.
    pub(crate) closing: bool,
    pub(crate) poisoned: bool,
    /// The writer sleeps on the condvar; submitters only pay for a wake-up when this is set.
    pub(crate) writer_waiting: bool,
}

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) groups_committed: AtomicU64,
    pub(crate) records_committed: AtomicU64,
    pub(crate) bytes_committed: AtomicU64,
    pub(crate) syncs: AtomicU64,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> WalStats {
        WalStats {
            groups_committed: self.groups_committed.load(Ordering::Relaxed),
            records_committed: self.records_committed.load(Ordering::Relaxed),
            bytes_committed: self.bytes_committed.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) opts: WalOptions,
    pub(crate) queue: Mutex<Queue>,
    pub(crate) queue_ready: Condvar,
    /// Permits are bytes of frames submitted but not yet durable.
    pub(crate) pending_bytes: Arc<Semaphore>,
    /// Total permits of `pending_bytes`; a single record never asks for more.
    pub(crate) pending_limit: u32,
    /// Every record below this lsn is synced and may be read.
    pub(crate) durable_end: AtomicU64,
    pub(crate) start_lsn: AtomicU64,
    /// Read handles of all live files by start lsn; the last entry is the active file. A new file is
    /// inserted before any record in it becomes durable.
    pub(crate) files: RwLock<BTreeMap<Lsn, FileRef>>,
    /// Serializes `truncate_prefix` so files are always deleted oldest first.
    pub(crate) truncate_lock: Mutex<()>,
    /// Set by `close`: reads and truncation are refused from then on.
    pub(crate) closed: AtomicBool,
    /// Becomes `true` when the writer thread has exited.
    pub(crate) writer_stopped: watch::Sender<bool>,
    pub(crate) stats: Stats,
}

impl Shared {
    pub(crate) fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the queue consistent (all updates are single steps),
        // and the writer's panic path poisons the log anyway.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why new records are refused, once they are.
    pub(crate) fn refusal(&self) -> Error {
        if self.lock_queue().poisoned {
            Error::Poisoned
        } else {
            Error::Closed
        }
    }

    pub(crate) fn ensure_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.lock_queue().poisoned
    }

    /// Asks the writer to flush what is queued and stop; refuses further submits.
    pub(crate) fn request_close(&self) {
        self.lock_queue().closing = true;
        self.queue_ready.notify_all();
        // Wakes submitters waiting for backpressure permits; they get `Closed`.
        self.pending_bytes.close();
    }

    /// Marks the log poisoned and fails everything queued. Returns the queued submissions so the caller
    /// can fail them in order after the group it was writing.
    pub(crate) fn poison(&self) -> VecDeque<Submission> {
        let queued = {
            let mut queue = self.lock_queue();
            queue.poisoned = true;
            std::mem::take(&mut queue.pending)
        };
        self.pending_bytes.close();
        queued
    }

    pub(crate) fn files_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Lsn, FileRef>> {
        self.files.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn files_write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Lsn, FileRef>> {
        self.files.write().unwrap_or_else(PoisonError::into_inner)
    }
}
