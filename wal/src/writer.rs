//! The writer thread: group commit.
//!
//! One dedicated std thread owns the active file. It takes everything queued (up to
//! `max_group_bytes`, and never past the point where the active file is full), writes it with as few
//! vectored writes as possible, calls the fault hook and `fdatasync` once for the whole group, and only
//! then publishes the new durable end and completes the group's appends in submission order.
//!
//! A group never spans two files: the group that fills a file ends there and is synced, so every file
//! but the last is complete and synced before the next one is created. Recovery relies on this.

use std::io::{self, IoSlice};
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::files::{file_path, FileRef};
use crate::frame::{frame_len, Header};
use crate::state::{Shared, Submission};
use crate::vfs::{DirLock, OpenMode};
use crate::{Error, Lsn};

/// Payloads up to this size are copied into the group buffer (one syscall for many small records);
/// larger ones are handed to `writev` as they are, without a copy.
const COALESCE_MAX: usize = 16 * 1024;

/// A piece of the group's write: a range of the coalescing buffer or one record's payload.
enum Piece {
    Buffer(Range<usize>),
    Payload(usize),
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    active: FileRef,
    active_start: Lsn,
    active_len: u64,
    group: Vec<Submission>,
    buffer: Vec<u8>,
    pieces: Vec<Piece>,
    /// Exclusive lock on the directory, held as long as this writer can write.
    _dir_lock: Box<dyn DirLock>,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        active: FileRef,
        active_start: Lsn,
        active_len: u64,
        dir_lock: Box<dyn DirLock>,
    ) -> Writer {
        Writer {
            shared,
            active,
            active_start,
            active_len,
            group: Vec::new(),
            buffer: Vec::new(),
            pieces: Vec::new(),
            _dir_lock: dir_lock,
        }
    }

    pub(crate) fn spawn(self) -> io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || {
                let shared = self.shared.clone();
                if catch_unwind(AssertUnwindSafe(move || self.run())).is_err() {
                    // The group being written is dropped with the writer, so its appends resolve
                    // to `Poisoned` through their closed channels; fail the queued ones explicitly.
                    tracing::error!("wal writer panicked; poisoning the wal");
                    for submission in shared.poison() {
                        let _ = submission.done.send(Err(Error::Poisoned));
                    }
                }
                shared.writer_stopped.send_replace(true);
            })
    }

    fn run(mut self) {
        while self.take_group() {
            if let Err(error) = self.commit_group() {
                tracing::error!(%error, "wal write or sync failed; poisoning the wal");
                let queued = self.shared.poison();
                for submission in self.group.drain(..).chain(queued) {
                    let _ = submission.done.send(Err(Error::Poisoned));
                }
                return;
            }
        }
    }

    /// The active file is full and the next record goes to a new file. An empty file never rolls:
    /// the new file would have the same name.
    fn needs_roll(&self) -> bool {
        self.active_len > 0 && self.active_len >= self.shared.opts.file_bytes
    }

    /// Waits for submissions and moves the next group into `self.group`. Returns `false` when the
    /// writer should stop (closing and drained).
    fn take_group(&mut self) -> bool {
        let opts = &self.shared.opts;
        let mut queue = self.shared.lock_queue();
        while queue.pending.is_empty() {
            if queue.closing || queue.poisoned {
                return false;
            }
            queue.writer_waiting = true;
            queue = self
                .shared
                .queue_ready
                .wait(queue)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.writer_waiting = false;
        }
        let file_len = if self.needs_roll() {
            0
        } else {
            self.active_len
        };
        let mut group_bytes = 0u64;
        while let Some(next) = queue.pending.front() {
            let len = frame_len(next.record.len());
            if !self.group.is_empty() && group_bytes + len > opts.max_group_bytes as u64 {
                break;
            }
            if let Some(submission) = queue.pending.pop_front() {
                self.group.push(submission);
            }
            group_bytes += len;
            if file_len + group_bytes >= opts.file_bytes {
                break;
            }
        }
        true
    }

    /// Starts a new file at the current end of the log.
    fn roll(&mut self) -> io::Result<()> {
        let start = self.active_start + self.active_len;
        let dir = &self.shared.opts.dir;
        let path = file_path(dir, start);
        let fs = self.shared.opts.fs.as_ref();
        let file = fs.open(&path, OpenMode::CreateNew)?;
        if self.shared.opts.fsync {
            fs.sync_dir(dir)?;
        }
        let read_handle = fs.open(&path, OpenMode::Read)?;
        self.shared.files_write().insert(start, read_handle);
        tracing::debug!(file = %path.display(), "wal rolled to a new file");
        self.active = file;
        self.active_start = start;
        self.active_len = 0;
        Ok(())
    }

    /// Writes and syncs `self.group`, then completes it.
    fn commit_group(&mut self) -> io::Result<()> {
        if self.needs_roll() {
            self.roll()?;
        }
        debug_assert_eq!(
            self.group.first().map(|s| s.lsn),
            Some(self.active_start + self.active_len),
            "lsns are byte positions in the logical log"
        );

        self.buffer.clear();
        self.pieces.clear();
        let mut mark = 0;
        let mut group_bytes = 0u64;
        for (index, submission) in self.group.iter().enumerate() {
            let record = &submission.record;
            self.buffer
                .extend_from_slice(&Header::for_payload(record).encode());
            if record.len() <= COALESCE_MAX {
                self.buffer.extend_from_slice(record);
            } else {
                self.pieces.push(Piece::Buffer(mark..self.buffer.len()));
                self.pieces.push(Piece::Payload(index));
                mark = self.buffer.len();
            }
            group_bytes += frame_len(record.len());
        }
        if mark < self.buffer.len() {
            self.pieces.push(Piece::Buffer(mark..self.buffer.len()));
        }
        let mut slices: Vec<IoSlice<'_>> = self
            .pieces
            .iter()
            .map(|piece| match piece {
                Piece::Buffer(range) => IoSlice::new(&self.buffer[range.clone()]),
                Piece::Payload(index) => IoSlice::new(&self.group[*index].record),
            })
            .collect();
        write_all_vectored(self.active.as_ref(), &mut slices)?;

        let opts = &self.shared.opts;
        if let Some(fault) = &opts.fault {
            fault.before_sync()?;
        }
        if opts.fsync {
            self.active.sync_data()?;
            self.shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
        }

        self.active_len += group_bytes;
        let end = self.active_start + self.active_len;
        self.shared.durable_end.store(end, Ordering::Release);
        let stats = &self.shared.stats;
        stats.groups_committed.fetch_add(1, Ordering::Relaxed);
        stats
            .records_committed
            .fetch_add(self.group.len() as u64, Ordering::Relaxed);
        stats
            .bytes_committed
            .fetch_add(group_bytes, Ordering::Relaxed);
        for submission in self.group.drain(..) {
            // A dropped `PendingAppend` is fine: the record is durable either way.
            let _ = submission.done.send(Ok(submission.lsn));
        }
        Ok(())
    }
}

/// `write_all` for vectored appends (std's is unstable). On a real file an append is `writev`,
/// which std caps at `IOV_MAX` slices per call, so large groups simply take a few calls.
fn write_all_vectored(
    file: &dyn crate::vfs::WalFile,
    mut slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match file.append(slices) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "wal file accepted no bytes",
                ))
            }
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
