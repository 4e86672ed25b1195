//! The bucket journal: the metadata's durable copy in the object store (S3 WAL / stateless mode).
//!
//! With [`crate::JournalOptions`] set, the local directory is only a cache. Every batch the state
//! machine applies is handed to the journal task, which group-commits everything queued into one
//! log object `{prefix}/metadata/log/{first:020}-{last:020}.json` (entries `first..=last`; blank
//! and membership entries carry no command but still advance the range), strictly in index order,
//! retrying the same key and bytes until it succeeds, and then publishes the persisted index.
//! `propose` answers only once its entry is persisted (or fails with `NotPersisted`).
//!
//! Every `snapshot_every` entries the task also uploads `{prefix}/metadata/snapshot/{index:020}.json`
//! (the versioned document of `crate::snapshot`, for the state at a persisted index) and then deletes
//! the log objects it covers and all but the newest two snapshots.
//!
//! [`restore`] rebuilds the state at startup: the newest decodable snapshot, then every log object
//! that continues the chain (`first == previous last + 1`). A gap can only follow an upload that
//! was never acknowledged, so replay stops there; objects past the end of the chain are deleted
//! before anything new is written, so a later restore can never splice them onto the new chain.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::snapshot::{self, LogPosition, StoredMembershipRecord};
use crate::{Command, Error, JournalOptions, MetadataState, Result};

/// The version written into every log object; readers refuse any other.
const LOG_FORMAT_VERSION: u32 = 1;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// One PUT/GET/DELETE attempt that takes longer than this is abandoned and retried (a hung
/// connection must not stop the journal for good).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// A log object stops taking more batches past this size (a backlog after an outage is uploaded as
/// several objects rather than one huge one). One batch is always taken whole.
const MAX_LOG_OBJECT_BYTES: usize = 8 * 1024 * 1024;
/// Attempts of a read or delete during `restore` before the start fails.
const RESTORE_ATTEMPTS: u32 = 5;
/// Snapshots kept in the bucket (the newest one might be unreadable; the previous is the fallback).
const SNAPSHOTS_KEPT: usize = 2;

/// One batch applied by the state machine, as handed to the journal.
pub(crate) struct JournalBatch {
    /// Log index of the first and last entry of the batch.
    pub(crate) first: u64,
    pub(crate) last: u64,
    /// The commands of the batch with their log indexes (blank/membership entries carry none).
    pub(crate) entries: Vec<(u64, Command)>,
    /// The state after the batch, for a snapshot; attached only every `snapshot_every` entries
    /// (see [`JournalFeed::wants_state`]).
    pub(crate) snapshot: Option<SnapshotJob>,
}

/// The state machine's end of the journal queue.
pub(crate) struct JournalFeed {
    sender: mpsc::UnboundedSender<JournalBatch>,
    snapshot_every: u64,
    /// Index of the last batch that carried the state.
    last_state_at: u64,
}

impl JournalFeed {
    /// Whether the batch ending at `last` should carry the state. Only every `snapshot_every`
    /// entries: while the store is down, the queued batches must not each pin their own
    /// copy-on-write copy of the whole state.
    pub(crate) fn wants_state(&self, last: u64) -> bool {
        last.saturating_sub(self.last_state_at) >= self.snapshot_every
    }

    pub(crate) fn send(&mut self, batch: JournalBatch) {
        if let Some(job) = &batch.snapshot {
            self.last_state_at = job.position.index;
        }
        let (first, last) = (batch.first, batch.last);
        // The task only goes away at shutdown; the proposer then learns it from `wait_persisted`.
        if self.sender.send(batch).is_err() {
            tracing::warn!(first, last, "metadata journal is gone; batch not mirrored");
        }
    }
}

/// Object keys of the journal under the configured prefix.
#[derive(Debug, Clone)]
struct Layout {
    log_dir: Path,
    snapshot_dir: Path,
}

impl Layout {
    fn new(prefix: &str) -> Layout {
        let dir = |sub: &str| {
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Path::from(format!("metadata/{sub}"))
            } else {
                Path::from(format!("{prefix}/metadata/{sub}"))
            }
        };
        Layout {
            log_dir: dir("log"),
            snapshot_dir: dir("snapshot"),
        }
    }

    fn log_key(&self, first: u64, last: u64) -> Path {
        self.log_dir
            .clone()
            .join(format!("{first:020}-{last:020}.json"))
    }

    fn snapshot_key(&self, index: u64) -> Path {
        self.snapshot_dir.clone().join(format!("{index:020}.json"))
    }
}

pub(crate) fn parse_log_name(name: &str) -> Option<(u64, u64)> {
    let (first, last) = name.strip_suffix(".json")?.split_once('-')?;
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some((first, last))
}

fn parse_snapshot_name(name: &str) -> Option<u64> {
    name.strip_suffix(".json")?.parse().ok()
}

/// A log object as written: borrowed entries, so encoding does not clone commands.
#[derive(Serialize)]
struct LogEntryRef<'a> {
    index: u64,
    command: &'a Command,
}

#[derive(Deserialize)]
struct LogEntry {
    index: u64,
    command: Command,
}

#[derive(Deserialize)]
struct LogDoc {
    format_version: u32,
    first: u64,
    last: u64,
    entries: Vec<LogEntry>,
}

/// Checks a downloaded log object against its key and returns its entries.
fn decode_log(bytes: &[u8], first: u64, last: u64) -> std::result::Result<Vec<LogEntry>, String> {
    let doc: LogDoc =
        serde_json::from_slice(bytes).map_err(|e| format!("not a log object: {e}"))?;
    if doc.format_version != LOG_FORMAT_VERSION {
        return Err(format!(
            "log format version {} is not supported (expected {LOG_FORMAT_VERSION})",
            doc.format_version
        ));
    }
    if (doc.first, doc.last) != (first, last) {
        return Err(format!(
            "object holds {}..={} but its key says {first}..={last}",
            doc.first, doc.last
        ));
    }
    let mut previous = None;
    for entry in &doc.entries {
        let in_range = entry.index >= first && entry.index <= last;
        if !in_range || previous.is_some_and(|p| entry.index <= p) {
            return Err(format!("entry index {} out of order or range", entry.index));
        }
        previous = Some(entry.index);
    }
    Ok(doc.entries)
}

fn storage_error(what: &str, error: impl std::fmt::Display) -> Error {
    Error::Storage(format!("metadata journal: {what}: {error}"))
}

/// Exponential backoff with jitter: a random delay in `[delay/2, delay]`.
fn jittered(delay: Duration) -> Duration {
    let half = delay / 2;
    let spread = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(rand::random_range(0..=spread))
}

fn next_backoff(delay: Duration) -> Duration {
    (delay * 2).min(MAX_BACKOFF)
}

/// Runs `op` up to [`RESTORE_ATTEMPTS`] times with backoff (startup reads and deletes: a transient
/// error must not be mistaken for a missing object, or acknowledged entries would be skipped).
async fn with_retries<T, F, Fut>(what: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = object_store::Result<T>>,
{
    let mut delay = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let error = match tokio::time::timeout(ATTEMPT_TIMEOUT, op()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("timed out after {ATTEMPT_TIMEOUT:?}"),
        };
        if attempt >= RESTORE_ATTEMPTS {
            return Err(storage_error(what, error));
        }
        tracing::warn!(what, attempt, %error, "metadata journal: retrying");
        tokio::time::sleep(jittered(delay)).await;
        delay = next_backoff(delay);
        attempt += 1;
    }
}

async fn list(store: &Arc<dyn ObjectStore>, dir: &Path) -> Result<Vec<Path>> {
    with_retries("listing", || async {
        let metas: Vec<_> = store.list(Some(dir)).try_collect().await?;
        Ok(metas.into_iter().map(|meta| meta.location).collect())
    })
    .await
}

async fn get(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Bytes> {
    with_retries("reading", || async { store.get(path).await?.bytes().await }).await
}

/// The state rebuilt from the bucket by [`restore`].
pub(crate) struct Restored {
    pub(crate) state: Arc<MetadataState>,
    /// Log index the state is at (the last entry replayed).
    pub(crate) index: u64,
    /// Whether the bucket's newest snapshot is already at `index` (no fresh base needed).
    pub(crate) snapshot_current: bool,
}

/// Rebuilds the metadata state from the bucket. `Ok(None)` for an empty journal (fresh cluster).
/// Fails (rather than start a new cluster over it) when the journal has objects but none of them
/// can be used, and on read errors that persist over a few retries.
/// Log objects fetched at once while restoring.
const RESTORE_CONCURRENCY: usize = 16;

pub(crate) async fn restore(opts: &JournalOptions) -> Result<Option<Restored>> {
    let layout = Layout::new(&opts.prefix);
    let store = &opts.store;

    let mut snapshots: Vec<(u64, Path)> = Vec::new();
    for path in list(store, &layout.snapshot_dir).await? {
        match path.filename().and_then(parse_snapshot_name) {
            Some(index) => snapshots.push((index, path)),
            None => {
                tracing::warn!(%path, "metadata journal: ignoring an object with a foreign name")
            }
        }
    }
    snapshots.sort_by_key(|s| std::cmp::Reverse(s.0));
    let mut base: Option<(u64, MetadataState)> = None;
    for (index, path) in &snapshots {
        let bytes = get(store, path).await?;
        match snapshot::decode(&bytes) {
            Ok(doc) if doc.last_applied.map(|p| p.index) == Some(*index) => {
                base = Some((*index, doc.state));
                break;
            }
            Ok(doc) => tracing::warn!(
                %path, last_applied = ?doc.last_applied,
                "metadata journal: snapshot does not match its key; trying an older one"
            ),
            Err(error) => tracing::warn!(
                %path, %error, "metadata journal: unreadable snapshot; trying an older one"
            ),
        }
    }
    let snapshot_index = base.as_ref().map(|(index, _)| *index);
    let (mut next, mut state) = match base {
        Some((index, state)) => (index.saturating_add(1), state),
        None => (0, MetadataState::default()),
    };

    let mut logs: Vec<(u64, u64, Path)> = Vec::new();
    for path in list(store, &layout.log_dir).await? {
        match path.filename().and_then(parse_log_name) {
            Some((first, last)) => logs.push((first, last, path)),
            None => {
                tracing::warn!(%path, "metadata journal: ignoring an object with a foreign name")
            }
        }
    }
    logs.sort_by_key(|l| (l.0, l.1));
    // Objects wholly covered by the snapshot are never read (cleanup deletes them); the others are
    // fetched RESTORE_CONCURRENCY at a time — one GET after another would make a restart wait out
    // the object store's per-request latency hundreds of times — and used in order.
    let logs: Vec<(u64, u64, Path)> = logs.into_iter().filter(|l| l.1 >= next).collect();
    let fetches: Vec<_> = logs.iter().map(|(_, _, path)| get(store, path)).collect();
    let mut fetched = futures::stream::iter(fetches).buffered(RESTORE_CONCURRENCY);
    let mut replayed_any = false;
    let mut unused: Vec<(u64, u64, Path)> = Vec::new();
    for (first, last, path) in logs.iter().cloned() {
        let bytes = fetched.next().await;
        if last < next {
            continue; // covered by an earlier object; cleanup deletes it
        }
        if first > next {
            unused.push((first, last, path));
            continue;
        }
        let Some(bytes) = bytes else {
            return Err(storage_error(
                "restoring",
                "a log object fetch went missing",
            ));
        };
        let bytes = bytes?;
        match decode_log(&bytes, first, last) {
            Ok(entries) => {
                for entry in entries.iter().filter(|entry| entry.index >= next) {
                    crate::apply::apply_command(&mut state, &entry.command);
                }
                next = last.saturating_add(1);
                replayed_any = true;
            }
            Err(error) => {
                tracing::warn!(%path, %error, "metadata journal: ignoring an unreadable log object");
                unused.push((first, last, path));
            }
        }
    }
    // Anything left reaching `next` or beyond lies past a gap (an upload never acknowledged) or is
    // unreadable. New objects will be written from `next` on; these must go first, or a later
    // restore could take one of them for the continuation of the new chain.
    for (first, last, path) in unused.into_iter().filter(|(_, last, _)| *last >= next) {
        tracing::warn!(
            %path, first, last, next,
            "metadata journal: deleting a log object that does not continue the chain"
        );
        with_retries("deleting", || store.delete(&path)).await?;
    }

    if snapshot_index.is_none() && !replayed_any {
        if snapshots.is_empty() {
            return Ok(None);
        }
        return Err(storage_error(
            "restoring",
            format!(
                "the bucket holds {} metadata snapshot(s) but none is readable",
                snapshots.len()
            ),
        ));
    }
    let index = next.saturating_sub(1);
    tracing::info!(
        index, snapshot = ?snapshot_index, replayed_logs = replayed_any,
        "metadata restored from the bucket"
    );
    Ok(Some(Restored {
        state: Arc::new(state),
        index,
        snapshot_current: snapshot_index == Some(index),
    }))
}

/// A snapshot the journal task may upload: the state at a log position, with the membership.
pub(crate) struct SnapshotJob {
    pub(crate) state: Arc<MetadataState>,
    pub(crate) position: LogPosition,
    pub(crate) membership: StoredMembershipRecord,
}

/// The handle `RaftNode` keeps: waits for persistence, stops the task.
pub(crate) struct Journal {
    persisted: watch::Receiver<u64>,
    persist_timeout: Duration,
    shutdown: watch::Sender<Option<Instant>>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What the journal task starts from after a restore.
pub(crate) struct StartPoint {
    pub(crate) index: u64,
    pub(crate) state: Arc<MetadataState>,
    pub(crate) position: LogPosition,
    pub(crate) membership: StoredMembershipRecord,
    /// Upload a snapshot at `index` first (the bucket's newest one is older).
    pub(crate) snapshot: bool,
}

impl Journal {
    /// Spawns the journal task. `start` is `None` on a fresh cluster.
    pub(crate) fn start(
        opts: &JournalOptions,
        start: Option<StartPoint>,
    ) -> (Journal, JournalFeed) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let persisted_index = start.as_ref().map(|s| s.index).unwrap_or(0);
        let (persisted_tx, persisted) = watch::channel(persisted_index);
        let (shutdown, shutdown_rx) = watch::channel(None);
        let mut initial_snapshot = None;
        if let Some(start) = start.filter(|start| start.snapshot) {
            initial_snapshot = Some(SnapshotJob {
                state: start.state,
                position: start.position,
                membership: start.membership,
            });
        }
        let snapshot_every = opts.snapshot_every.max(1);
        let feed = JournalFeed {
            sender,
            snapshot_every,
            last_state_at: persisted_index,
        };
        let task = Task {
            store: opts.store.clone(),
            layout: Layout::new(&opts.prefix),
            snapshot_every,
            batches: receiver,
            carry: None,
            persisted: persisted_tx,
            shutdown: shutdown_rx,
            forced_stop: None,
            last_snapshot: persisted_index,
        };
        let handle = tokio::spawn(task.run(initial_snapshot));
        let journal = Journal {
            persisted,
            persist_timeout: opts.persist_timeout,
            shutdown,
            task: tokio::sync::Mutex::new(Some(handle)),
        };
        (journal, feed)
    }

    /// Waits until the entry at `index` is in the bucket, up to the persist timeout.
    pub(crate) async fn wait_persisted(&self, index: u64) -> Result<()> {
        let mut persisted = self.persisted.clone();
        let waited = tokio::time::timeout(self.persist_timeout, async {
            persisted.wait_for(|p| *p >= index).await.map(|_| ())
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            // The task is gone: shut down with this entry still queued.
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::NotPersisted),
        }
    }

    /// Uploads what is queued (bounded by the persist timeout), then stops the task.
    pub(crate) async fn shutdown(&self) {
        let deadline = Instant::now() + self.persist_timeout;
        self.shutdown.send_replace(Some(deadline));
        let Some(handle) = self.task.lock().await.take() else {
            return;
        };
        if let Err(error) = handle.await {
            tracing::warn!(%error, "metadata journal task failed");
        }
    }
}

/// One batch ready to go into a log object.
struct Prepared {
    first: u64,
    last: u64,
    /// The batch's entries, each one encoded `{"index":..,"command":..}` JSON value.
    entries: Vec<Vec<u8>>,
    bytes: usize,
    snapshot: Option<SnapshotJob>,
}

fn prepare(batch: JournalBatch) -> Prepared {
    let mut entries = Vec::with_capacity(batch.entries.len());
    let mut bytes = 0;
    for (index, command) in &batch.entries {
        match serde_json::to_vec(&LogEntryRef {
            index: *index,
            command,
        }) {
            Ok(encoded) => {
                bytes += encoded.len() + 1;
                entries.push(encoded);
            }
            // A `Command` always serializes (plain data, string keys); were it ever not to, the
            // entry would be missing from the bucket, so say so loudly.
            Err(error) => {
                tracing::error!(index, %error, "metadata journal: cannot encode a command")
            }
        }
    }
    Prepared {
        first: batch.first,
        last: batch.last,
        entries,
        bytes,
        snapshot: batch.snapshot,
    }
}

/// Builds the log object document from the encoded entries of several batches.
fn encode_log(first: u64, last: u64, group: &[Prepared]) -> Vec<u8> {
    let size: usize = group.iter().map(|p| p.bytes).sum();
    let mut out = Vec::with_capacity(size + 96);
    out.extend_from_slice(
        format!(
            "{{\"format_version\":{LOG_FORMAT_VERSION},\"first\":{first},\"last\":{last},\"entries\":["
        )
        .as_bytes(),
    );
    let mut separator = false;
    for entry in group.iter().flat_map(|p| p.entries.iter()) {
        if separator {
            out.push(b',');
        }
        out.extend_from_slice(entry);
        separator = true;
    }
    out.extend_from_slice(b"]}");
    out
}

struct Task {
    store: Arc<dyn ObjectStore>,
    layout: Layout,
    snapshot_every: u64,
    batches: mpsc::UnboundedReceiver<JournalBatch>,
    /// A batch taken from the queue that did not fit into the previous log object.
    carry: Option<Prepared>,
    persisted: watch::Sender<u64>,
    shutdown: watch::Receiver<Option<Instant>>,
    /// Set when the handle is gone without a shutdown (stop at once).
    forced_stop: Option<Instant>,
    /// Index of the newest snapshot in the bucket (0 if none).
    last_snapshot: u64,
}

impl Task {
    fn deadline(&self) -> Option<Instant> {
        self.forced_stop.or(*self.shutdown.borrow())
    }

    /// Runs `future` until it completes or the shutdown deadline passes (`None`).
    async fn until_deadline<F: std::future::Future>(&mut self, future: F) -> Option<F::Output> {
        tokio::pin!(future);
        loop {
            if let Some(deadline) = self.deadline() {
                return tokio::time::timeout_at(deadline, &mut future).await.ok();
            }
            tokio::select! {
                output = &mut future => return Some(output),
                changed = self.shutdown.changed() => {
                    if changed.is_err() {
                        self.forced_stop = Some(Instant::now());
                    }
                }
            }
        }
    }

    /// The next batch: waits while running; after shutdown only takes what is already queued.
    async fn next_batch(&mut self) -> Option<Prepared> {
        if let Some(carried) = self.carry.take() {
            return Some(carried);
        }
        loop {
            if self.deadline().is_some() {
                return self.batches.try_recv().ok().map(prepare);
            }
            tokio::select! {
                batch = self.batches.recv() => return batch.map(prepare),
                changed = self.shutdown.changed() => {
                    if changed.is_err() {
                        self.forced_stop = Some(Instant::now());
                    }
                }
            }
        }
    }

    async fn run(mut self, initial_snapshot: Option<SnapshotJob>) {
        if let Some(job) = initial_snapshot {
            // A fresh base right after a restore; on failure the next periodic one catches up.
            if !self.upload_snapshot(&job).await {
                self.last_snapshot = 0;
            }
        }
        while let Some(head) = self.next_batch().await {
            // Group commit: everything queued meanwhile goes into the same object.
            let mut size = head.bytes;
            let mut group = vec![head];
            while let Ok(batch) = self.batches.try_recv() {
                let batch = prepare(batch);
                if size + batch.bytes > MAX_LOG_OBJECT_BYTES {
                    self.carry = Some(batch);
                    break;
                }
                size += batch.bytes;
                group.push(batch);
            }
            let first = group.first().map(|p| p.first).unwrap_or_default();
            let last = group.last().map(|p| p.last).unwrap_or_default();
            let key = self.layout.log_key(first, last);
            let bytes = Bytes::from(encode_log(first, last, &group));
            if !self.put_until_done(&key, bytes).await {
                tracing::warn!(
                    first,
                    last,
                    "metadata journal stopped with entries not uploaded (shutdown deadline)"
                );
                return;
            }
            self.persisted.send_replace(last);
            // The newest state in the group is at a persisted index now.
            let Some(job) = group.iter_mut().rev().find_map(|p| p.snapshot.take()) else {
                continue;
            };
            let due = job.position.index.saturating_sub(self.last_snapshot) >= self.snapshot_every;
            if due && self.deadline().is_none() {
                self.upload_snapshot(&job).await;
            }
        }
    }

    /// One PUT, as a future that does not borrow the task.
    fn put(
        &self,
        key: &Path,
        bytes: Bytes,
    ) -> impl std::future::Future<Output = object_store::Result<object_store::PutResult>> + use<>
    {
        let store = self.store.clone();
        let key = key.clone();
        async move { store.put(&key, PutPayload::from_bytes(bytes)).await }
    }

    /// PUTs `bytes` at `key` until it succeeds, with backoff and jitter; `false` if the shutdown
    /// deadline passed first. Always the same key and bytes, so a retry after an ambiguous failure
    /// (the first attempt did land) is harmless.
    async fn put_until_done(&mut self, key: &Path, bytes: Bytes) -> bool {
        let mut delay = FIRST_BACKOFF;
        let mut attempt: u64 = 0;
        loop {
            attempt += 1;
            let put = self.put(key, bytes.clone());
            let error = match self
                .until_deadline(tokio::time::timeout(ATTEMPT_TIMEOUT, put))
                .await
            {
                None => return false,
                Some(Ok(Ok(_))) => return true,
                Some(Ok(Err(error))) => error.to_string(),
                Some(Err(_)) => format!("timed out after {ATTEMPT_TIMEOUT:?}"),
            };
            tracing::warn!(%key, attempt, %error, "metadata journal upload failed; retrying");
            if self
                .until_deadline(tokio::time::sleep(jittered(delay)))
                .await
                .is_none()
            {
                return false;
            }
            delay = next_backoff(delay);
        }
    }

    /// One attempt to upload a snapshot, then cleanup; `false` if the upload failed (the next
    /// periodic snapshot tries again; the log objects stay until one succeeds).
    async fn upload_snapshot(&mut self, job: &SnapshotJob) -> bool {
        let index = job.position.index;
        let (state, position, membership) =
            (job.state.clone(), job.position, job.membership.clone());
        let encoded = tokio::task::spawn_blocking(move || {
            snapshot::encode(Some(&position), &membership, &state)
        })
        .await;
        let bytes = match encoded {
            Ok(Ok(bytes)) => Bytes::from(bytes),
            Ok(Err(error)) => {
                tracing::warn!(%error, "metadata journal: encoding the snapshot failed");
                return false;
            }
            Err(error) => {
                tracing::warn!(%error, "metadata journal: snapshot task failed");
                return false;
            }
        };
        let key = self.layout.snapshot_key(index);
        let put = self.put(&key, bytes);
        match self
            .until_deadline(tokio::time::timeout(ATTEMPT_TIMEOUT, put))
            .await
        {
            Some(Ok(Ok(_))) => {}
            Some(Ok(Err(error))) => {
                tracing::warn!(%key, %error, "metadata journal: snapshot upload failed");
                return false;
            }
            Some(Err(_)) | None => {
                tracing::warn!(%key, "metadata journal: snapshot upload timed out");
                return false;
            }
        }
        self.last_snapshot = index;
        tracing::info!(index, "metadata snapshot uploaded to the bucket");
        self.cleanup(index).await;
        true
    }

    /// Best effort: deletes log objects the snapshot at `index` covers and old snapshots.
    async fn cleanup(&mut self, index: u64) {
        let store = self.store.clone();
        let log_dir = self.layout.log_dir.clone();
        let snapshot_dir = self.layout.snapshot_dir.clone();
        let work = async move {
            let logs: Vec<_> = store.list(Some(&log_dir)).try_collect().await?;
            let mut doomed: Vec<Path> = logs
                .into_iter()
                .map(|meta| meta.location)
                .filter(|path| {
                    path.filename()
                        .and_then(parse_log_name)
                        .is_some_and(|(_, last)| last <= index)
                })
                .collect();
            let snapshots: Vec<_> = store.list(Some(&snapshot_dir)).try_collect().await?;
            let mut indexed: Vec<(u64, Path)> = snapshots
                .into_iter()
                .filter_map(|meta| {
                    let index = meta.location.filename().and_then(parse_snapshot_name)?;
                    Some((index, meta.location))
                })
                .collect();
            indexed.sort_by_key(|s| std::cmp::Reverse(s.0));
            doomed.extend(
                indexed
                    .into_iter()
                    .skip(SNAPSHOTS_KEPT)
                    .map(|(_, path)| path),
            );
            for path in &doomed {
                store.delete(path).await?;
            }
            Ok::<usize, object_store::Error>(doomed.len())
        };
        match self
            .until_deadline(tokio::time::timeout(ATTEMPT_TIMEOUT, work))
            .await
        {
            Some(Ok(Ok(deleted))) => tracing::debug!(index, deleted, "metadata journal cleaned up"),
            Some(Ok(Err(error))) => tracing::warn!(%error, "metadata journal cleanup failed"),
            Some(Err(_)) | None => tracing::warn!("metadata journal cleanup timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_reject_foreign_ones() {
        let layout = Layout::new("cluster-1");
        let key = layout.log_key(7, 12);
        assert_eq!(
            key.as_ref(),
            "cluster-1/metadata/log/00000000000000000007-00000000000000000012.json"
        );
        assert_eq!(key.filename().and_then(parse_log_name), Some((7, 12)));
        let key = layout.snapshot_key(42);
        assert_eq!(
            key.as_ref(),
            "cluster-1/metadata/snapshot/00000000000000000042.json"
        );
        assert_eq!(key.filename().and_then(parse_snapshot_name), Some(42));
        for bad in [
            "x.json",
            "1-2",
            "3-1.json",
            "a-b.json",
            "1-2-3.json",
            "-1-2.json",
        ] {
            assert_eq!(parse_log_name(bad), None, "{bad}");
        }
        assert_eq!(parse_snapshot_name("nope.json"), None);
        assert_eq!(
            Layout::new("").log_dir.as_ref(),
            "metadata/log",
            "an empty prefix puts the journal at the bucket root"
        );
    }

    #[test]
    fn log_objects_round_trip_and_are_checked_against_their_key() {
        let command = Command::AllocateProducerIds { count: 3 };
        let batch = |first, last, entries: Vec<(u64, Command)>| {
            prepare(JournalBatch {
                first,
                last,
                entries,
                snapshot: None,
            })
        };
        let group = [
            batch(5, 6, vec![(6, command.clone())]),
            batch(7, 9, vec![(7, command.clone()), (9, command.clone())]),
        ];
        let bytes = encode_log(5, 9, &group);
        let entries = decode_log(&bytes, 5, 9).map_err(|e| e.to_string());
        let indexes: Vec<u64> = entries
            .as_ref()
            .map(|e| e.iter().map(|e| e.index).collect())
            .unwrap_or_default();
        assert_eq!(
            indexes,
            vec![6, 7, 9],
            "{entries:?}",
            entries = entries.err()
        );
        assert!(decode_log(&bytes, 5, 10).is_err(), "key mismatch");
        assert!(decode_log(b"garbage", 5, 9).is_err());
        let out_of_range = encode_log(5, 6, &group);
        assert!(decode_log(&out_of_range, 5, 6).is_err());
        let newer =
            String::from_utf8_lossy(&bytes).replace("\"format_version\":1", "\"format_version\":2");
        assert!(decode_log(newer.as_bytes(), 5, 9).is_err());
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_below_the_delay() {
        let mut delay = FIRST_BACKOFF;
        for _ in 0..20 {
            let slept = jittered(delay);
            assert!(
                slept >= delay / 2 && slept <= delay,
                "{slept:?} for {delay:?}"
            );
            delay = next_backoff(delay);
        }
        assert_eq!(delay, MAX_BACKOFF);
    }
}
