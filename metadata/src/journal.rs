//! The bucket metadata log: the metadata's durable copy in the object store (S3 WAL / stateless
//! mode), written so that no second process can fork it and no restore can shorten it.
//!
//! With [`crate::JournalOptions`] set, the local directory is only a cache. Every batch the state
//! machine applies is handed to the journal task, which group-commits what is queued into one log
//! object `{prefix}/metadata/log/{first:020}.json` (format in `bucket_format`). Rules:
//!
//! - **Create-if-absent, one at a time, exact chain.** Each object is created with
//!   `PutMode::Create`, starts exactly at the previous one's `last + 1`, and carries this process's
//!   lineage id. The next create starts only once the previous one is confirmed stored.
//! - **A failed create is confirmed with a GET.** The object store client retries creates and may
//!   report `AlreadyExists` for our own earlier attempt; an abandoned attempt can land late. So on a
//!   conflict the task reads the key: our exact bytes → stored; nothing there → create again;
//!   anything else → **fenced**: another process continues the log. Every pending and later
//!   proposal fails with [`crate::Error::Fenced`] (nothing more is acknowledged), the task stops,
//!   and the reason is logged at error level.
//! - `propose` answers only once its entry is stored ([`crate::Error::NotPersisted`] after the
//!   persist timeout; the entry stays queued).
//! - **Snapshots** are create-only, at an object boundary (a batch carrying the state ends its
//!   object), and name the lineage of the entry they end at. After one is stored, snapshots older
//!   than the newest two and log objects that end at or below the *older* of those two are deleted,
//!   so a damaged newest snapshot never makes the bucket unrestorable. A restored process uploads
//!   a fresh base snapshot only after its own first log object is stored.
//!
//! Restoring is in the `restore` module; it never deletes anything.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::bucket_format::{self, JournalEntry, Lineage};
use crate::snapshot::{self, LogPosition, StoredMembershipRecord};
use crate::{Error, JournalOptions, MetadataState, Result};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// One PUT/GET/DELETE attempt that takes longer than this is abandoned and retried (a hung
/// connection must not stop the journal for good). An abandoned create may still land: the
/// confirming GET then finds our own bytes.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// A log object stops taking more batches past this size (a backlog after an outage is uploaded as
/// several objects rather than one huge one). One batch is always taken whole.
const MAX_LOG_OBJECT_BYTES: usize = 8 * 1024 * 1024;
/// Attempts of a read during `restore` before the start fails.
const RESTORE_ATTEMPTS: u32 = 5;
/// Snapshots kept in the bucket (the newest one might be unreadable; the previous is the fallback).
const SNAPSHOTS_KEPT: usize = 2;

/// One batch applied by the state machine, as handed to the journal.
pub(crate) struct JournalBatch {
    /// Log index of the first and last entry of the batch.
    pub(crate) first: u64,
    pub(crate) last: u64,
    /// Every entry of the batch, in index order (blank/membership entries carry no command).
    pub(crate) entries: Vec<JournalEntry>,
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
    /// Set once the task is gone (warned once, not per batch).
    gone: bool,
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
        // The task only goes away at shutdown or when fenced; proposers learn it from
        // `wait_persisted`.
        if self.sender.send(batch).is_err() && !self.gone {
            self.gone = true;
            tracing::warn!(
                first,
                last,
                "metadata journal has stopped; later entries are not mirrored"
            );
        }
    }
}

/// Object keys of the journal under the configured prefix.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) log_dir: Path,
    pub(crate) snapshot_dir: Path,
}

impl Layout {
    pub(crate) fn new(prefix: &str) -> Layout {
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

    pub(crate) fn log_key(&self, first: u64) -> Path {
        self.log_dir.clone().join(bucket_format::index_name(first))
    }

    pub(crate) fn snapshot_key(&self, index: u64) -> Path {
        self.snapshot_dir
            .clone()
            .join(bucket_format::index_name(index))
    }
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

/// Runs `op` up to [`RESTORE_ATTEMPTS`] times with backoff (startup reads: a transient error must
/// not be mistaken for a missing object, or acknowledged entries would be skipped).
pub(crate) async fn with_retries<T, F, Fut>(what: &str, mut op: F) -> Result<T>
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

/// A snapshot the journal task may upload: the state at a log position, with the membership.
pub(crate) struct SnapshotJob {
    pub(crate) state: Arc<MetadataState>,
    pub(crate) position: LogPosition,
    pub(crate) membership: StoredMembershipRecord,
}

/// What the journal has reached: every entry below `persisted_next` is in the bucket. Once
/// `fenced` is set, nothing more will be.
#[derive(Debug, Clone, Default)]
pub(crate) struct JournalStatus {
    pub(crate) persisted_next: u64,
    pub(crate) fenced: Option<Arc<str>>,
}

/// The handle `RaftNode` keeps: waits for persistence, stops the task.
pub(crate) struct Journal {
    status: watch::Receiver<JournalStatus>,
    persist_timeout: Duration,
    shutdown: watch::Sender<Option<Instant>>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    lineage: Lineage,
}

/// What the journal task starts from after a restore.
pub(crate) struct StartPoint {
    pub(crate) index: u64,
    /// The lineage of the entry at `index`.
    pub(crate) lineage: Lineage,
    pub(crate) state: Arc<MetadataState>,
    pub(crate) position: LogPosition,
    pub(crate) membership: StoredMembershipRecord,
    /// Upload a snapshot at `index` once our first object is stored (the bucket's newest one is
    /// older).
    pub(crate) snapshot: bool,
    /// The index of the bucket snapshot the restore started from (known readable).
    pub(crate) restored_from: Option<u64>,
}

impl Journal {
    /// Spawns the journal task with a new lineage. `start` is `None` on a fresh cluster.
    pub(crate) fn start(
        opts: &JournalOptions,
        start: Option<StartPoint>,
    ) -> (Journal, JournalFeed) {
        let lineage = Lineage::random();
        let (sender, receiver) = mpsc::unbounded_channel();
        let persisted_next = start.as_ref().map_or(0, |s| s.index.saturating_add(1));
        let previous_lineage = start.as_ref().map(|s| s.lineage);
        let good_snapshots: Vec<u64> = start
            .as_ref()
            .and_then(|s| s.restored_from)
            .into_iter()
            .collect();
        let (status_tx, status) = watch::channel(JournalStatus {
            persisted_next,
            fenced: None,
        });
        let (shutdown, shutdown_rx) = watch::channel(None);
        let mut initial_snapshot = None;
        if let Some(start) = start.filter(|start| start.snapshot) {
            initial_snapshot = Some((
                start.lineage,
                SnapshotJob {
                    state: start.state,
                    position: start.position,
                    membership: start.membership,
                },
            ));
        }
        let snapshot_every = opts.snapshot_every.max(1);
        let feed = JournalFeed {
            sender,
            snapshot_every,
            last_state_at: persisted_next.saturating_sub(1),
            gone: false,
        };
        tracing::info!(
            %lineage, first_index = persisted_next,
            previous_lineage = ?previous_lineage.map(|l| l.to_string()),
            "metadata journal starts a new lineage"
        );
        let task = Task {
            store: opts.store.clone(),
            layout: Layout::new(&opts.prefix),
            snapshot_every,
            batches: receiver,
            carry: None,
            status: status_tx,
            shutdown: shutdown_rx,
            forced_stop: None,
            last_snapshot: persisted_next.saturating_sub(1),
            lineage,
            previous_lineage,
            next: persisted_next,
            good_snapshots,
        };
        let handle = tokio::spawn(task.run(initial_snapshot));
        let journal = Journal {
            status,
            persist_timeout: opts.persist_timeout,
            shutdown,
            task: tokio::sync::Mutex::new(Some(handle)),
            lineage,
        };
        (journal, feed)
    }

    /// Follows what the journal has stored.
    pub(crate) fn status(&self) -> watch::Receiver<JournalStatus> {
        self.status.clone()
    }

    /// The lineage this process writes.
    pub(crate) fn lineage(&self) -> Lineage {
        self.lineage
    }

    /// Why this process was fenced, once it is.
    pub(crate) fn fenced(&self) -> Option<Arc<str>> {
        self.status.borrow().fenced.clone()
    }

    /// Resolves once the journal is fenced (never, if it stops for another reason).
    pub(crate) async fn wait_fenced(&self) -> Arc<str> {
        let mut status = self.status.clone();
        let fenced = status
            .wait_for(|s| s.fenced.is_some())
            .await
            .map(|s| s.fenced.clone());
        match fenced {
            Ok(reason) => reason.unwrap_or_else(|| Arc::from("")),
            Err(_) => std::future::pending().await,
        }
    }

    /// Waits until the entry at `index` is in the bucket, up to the persist timeout.
    pub(crate) async fn wait_persisted(&self, index: u64) -> Result<()> {
        let mut status = self.status.clone();
        let waited = tokio::time::timeout(self.persist_timeout, async {
            status
                .wait_for(|s| s.persisted_next > index || s.fenced.is_some())
                .await
                .map(|s| (s.persisted_next > index, s.fenced.clone()))
        })
        .await;
        match waited {
            Ok(Ok((true, _))) => Ok(()),
            Ok(Ok((false, fenced))) => Err(Error::Fenced(
                fenced.map_or_else(String::new, |reason| reason.to_string()),
            )),
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
    /// One encoded entry per index of the batch.
    entries: Vec<Vec<u8>>,
    bytes: usize,
    snapshot: Option<SnapshotJob>,
    /// Set when an entry could not be encoded (never expected: commands are plain data).
    broken: Option<String>,
}

fn prepare(batch: JournalBatch) -> Prepared {
    let mut entries = Vec::with_capacity(batch.entries.len());
    let mut bytes = 0;
    let mut broken = None;
    for entry in &batch.entries {
        match bucket_format::encode_entry(entry) {
            Ok(encoded) => {
                bytes += encoded.len() + 1;
                entries.push(encoded);
            }
            Err(error) => {
                broken.get_or_insert(format!("cannot encode entry {}: {error}", entry.index));
            }
        }
    }
    Prepared {
        first: batch.first,
        last: batch.last,
        entries,
        bytes,
        snapshot: batch.snapshot,
        broken,
    }
}

/// How one create of a log object ended.
enum Created {
    Stored,
    Fenced(String),
    /// The shutdown deadline passed first.
    Abandoned,
}

struct Task {
    store: Arc<dyn ObjectStore>,
    layout: Layout,
    snapshot_every: u64,
    batches: mpsc::UnboundedReceiver<JournalBatch>,
    /// A batch taken from the queue that did not fit into the previous log object.
    carry: Option<Prepared>,
    status: watch::Sender<JournalStatus>,
    shutdown: watch::Receiver<Option<Instant>>,
    /// Set when the handle is gone without a shutdown (stop at once).
    forced_stop: Option<Instant>,
    /// Index of the newest snapshot in the bucket this task knows of.
    last_snapshot: u64,
    lineage: Lineage,
    /// The lineage of the entry at `next - 1` (`None` before the first entry of the log).
    previous_lineage: Option<Lineage>,
    /// The index the next log object starts at.
    next: u64,
    /// Bucket snapshots known to be readable (created by this task, or restored from), ascending.
    /// Cleanup trusts only these: a damaged snapshot never counts as a fallback.
    good_snapshots: Vec<u64>,
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

    /// Stops the journal for good: nothing more is acknowledged.
    fn fence(&self, reason: String) {
        tracing::error!(
            lineage = %self.lineage,
            "FENCED: {reason}. This process no longer owns the cluster's metadata log: every \
             pending and later metadata change fails, and it serves no more writes"
        );
        self.status.send_modify(|status| {
            status.fenced = Some(Arc::from(reason.as_str()));
        });
    }

    async fn run(mut self, mut initial_snapshot: Option<(Lineage, SnapshotJob)>) {
        while let Some(head) = self.next_batch().await {
            // Group commit: everything queued meanwhile goes into the same object, up to a batch
            // that carries the state (a snapshot sits at an object boundary).
            let mut size = head.bytes;
            let mut ends_with_state = head.snapshot.is_some();
            let mut group = vec![head];
            while !ends_with_state {
                let Ok(batch) = self.batches.try_recv() else {
                    break;
                };
                let batch = prepare(batch);
                if size + batch.bytes > MAX_LOG_OBJECT_BYTES {
                    self.carry = Some(batch);
                    break;
                }
                size += batch.bytes;
                ends_with_state = batch.snapshot.is_some();
                group.push(batch);
            }
            let first = group.first().map_or(0, |p| p.first);
            let last = group.last().map_or(0, |p| p.last);
            if let Some(reason) = self.refuse_group(&group, first, last) {
                self.fence(reason);
                return;
            }
            let key = self.layout.log_key(first);
            let bytes = Bytes::from(bucket_format::encode_log(
                self.lineage,
                self.previous_lineage,
                first,
                last,
                group
                    .iter()
                    .flat_map(|p| p.entries.iter().map(Vec::as_slice)),
                size,
            ));
            match self.create_until_stored(&key, bytes).await {
                Created::Stored => {}
                Created::Fenced(reason) => {
                    self.fence(reason);
                    return;
                }
                Created::Abandoned => {
                    tracing::warn!(
                        first,
                        last,
                        "metadata journal stopped with entries not uploaded (shutdown deadline)"
                    );
                    return;
                }
            }
            self.next = last.saturating_add(1);
            self.previous_lineage = Some(self.lineage);
            self.status
                .send_modify(|status| status.persisted_next = last.saturating_add(1));
            if self.deadline().is_some() {
                continue;
            }
            // A restored process's fresh base, once its own first object is stored.
            if let Some((lineage, job)) = initial_snapshot.take() {
                self.upload_snapshot(lineage, &job).await;
            }
            let Some(job) = group.iter_mut().rev().find_map(|p| p.snapshot.take()) else {
                continue;
            };
            let due = job.position.index.saturating_sub(self.last_snapshot) >= self.snapshot_every;
            if due && job.position.index == last {
                self.upload_snapshot(self.lineage, &job).await;
            }
        }
    }

    /// Whether the group must not be written: it does not start where the chain continues, or an
    /// entry is missing. Either would be a bug; the log is never written with a hole.
    fn refuse_group(&self, group: &[Prepared], first: u64, last: u64) -> Option<String> {
        if first != self.next {
            return Some(format!(
                "internal error: the journal expected index {} next but got {first}..={last}",
                self.next
            ));
        }
        let mut expected = first;
        for prepared in group {
            if let Some(broken) = &prepared.broken {
                return Some(format!("internal error: {broken}"));
            }
            let count = u64::try_from(prepared.entries.len()).unwrap_or(u64::MAX);
            let holds_one_per_index =
                prepared.last >= prepared.first && prepared.last - prepared.first + 1 == count;
            if prepared.first != expected || !holds_one_per_index {
                return Some(format!(
                    "internal error: batch {}..={} with {count} entries does not continue at {expected}",
                    prepared.first, prepared.last
                ));
            }
            expected = prepared.last.saturating_add(1);
        }
        None
    }

    /// One create, as a future that does not borrow the task.
    fn create(
        &self,
        key: &Path,
        bytes: Bytes,
    ) -> impl std::future::Future<Output = object_store::Result<object_store::PutResult>> + use<>
    {
        let store = self.store.clone();
        let key = key.clone();
        async move {
            let options = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            store
                .put_opts(&key, PutPayload::from_bytes(bytes), options)
                .await
        }
    }

    /// Creates `bytes` at `key` until it is confirmed stored, the key turns out to hold another
    /// writer's object (fenced), or the shutdown deadline passes. Always the same key and bytes,
    /// so an earlier attempt that did land is recognised as ours.
    async fn create_until_stored(&mut self, key: &Path, bytes: Bytes) -> Created {
        let mut delay = FIRST_BACKOFF;
        let mut attempt: u64 = 0;
        loop {
            attempt += 1;
            let create = self.create(key, bytes.clone());
            let error = match self
                .until_deadline(tokio::time::timeout(ATTEMPT_TIMEOUT, create))
                .await
            {
                None => return Created::Abandoned,
                Some(Ok(Ok(_))) => return Created::Stored,
                Some(Ok(Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ))) => match self.confirm(key, &bytes).await {
                    Some(Confirmed::Ours) => return Created::Stored,
                    Some(Confirmed::Other(reason)) => return Created::Fenced(reason),
                    Some(Confirmed::Absent) => {
                        "the key was reported taken but holds nothing".into()
                    }
                    None => return Created::Abandoned,
                },
                Some(Ok(Err(error))) => error.to_string(),
                Some(Err(_)) => format!("timed out after {ATTEMPT_TIMEOUT:?}"),
            };
            tracing::warn!(%key, attempt, %error, "metadata journal create failed; retrying");
            if self
                .until_deadline(tokio::time::sleep(jittered(delay)))
                .await
                .is_none()
            {
                return Created::Abandoned;
            }
            delay = next_backoff(delay);
        }
    }

    /// Reads the key a create was refused at (retrying read errors); `None` past the deadline.
    async fn confirm(&mut self, key: &Path, ours: &Bytes) -> Option<Confirmed> {
        let mut delay = FIRST_BACKOFF;
        loop {
            let store = self.store.clone();
            let path = key.clone();
            let read = async move { store.get(&path).await?.bytes().await };
            let error = match self
                .until_deadline(tokio::time::timeout(ATTEMPT_TIMEOUT, read))
                .await?
            {
                Ok(Ok(found)) if found == *ours => return Some(Confirmed::Ours),
                Ok(Ok(found)) => {
                    let theirs = bucket_format::lineage_of(&found);
                    let who = match theirs {
                        Some(lineage) if lineage == self.lineage => {
                            format!("this lineage ({lineage}) but other bytes")
                        }
                        Some(lineage) => format!("lineage {lineage}"),
                        None => "an object this build cannot read".to_owned(),
                    };
                    return Some(Confirmed::Other(format!(
                        "metadata log object {key} already exists, written by {who}; this \
                         process writes lineage {}: another process continues this cluster's \
                         metadata log",
                        self.lineage
                    )));
                }
                Ok(Err(object_store::Error::NotFound { .. })) => return Some(Confirmed::Absent),
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("timed out after {ATTEMPT_TIMEOUT:?}"),
            };
            tracing::warn!(%key, %error, "metadata journal: reading a conflicting object failed; retrying");
            self.until_deadline(tokio::time::sleep(jittered(delay)))
                .await?;
            delay = next_backoff(delay);
        }
    }

    /// One attempt to create a snapshot of the state at `job`'s index (whose entry belongs to
    /// `lineage`), then cleanup. A failure is left to the next periodic snapshot; the log objects
    /// stay until one succeeds.
    async fn upload_snapshot(&mut self, lineage: Lineage, job: &SnapshotJob) {
        let index = job.position.index;
        let (state, position, membership) =
            (job.state.clone(), job.position, job.membership.clone());
        let encoded = tokio::task::spawn_blocking(move || {
            snapshot::encode(Some(&position), &membership, &state)
                .map(|document| bucket_format::encode_snapshot(lineage, index, &document))
        })
        .await;
        let bytes = match encoded {
            Ok(Ok(bytes)) => Bytes::from(bytes),
            Ok(Err(error)) => {
                tracing::warn!(%error, "metadata journal: encoding the snapshot failed");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "metadata journal: snapshot task failed");
                return;
            }
        };
        let key = self.layout.snapshot_key(index);
        let create = self.create(&key, bytes);
        match self
            .until_deadline(tokio::time::timeout(ATTEMPT_TIMEOUT, create))
            .await
        {
            Some(Ok(Ok(_))) => {}
            Some(Ok(Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ))) => {
                // Only one entry is ever stored at an index, so whatever is there is a snapshot of
                // the same state (e.g. an earlier attempt of ours that landed).
                tracing::info!(%key, "metadata snapshot already in the bucket");
                self.last_snapshot = index;
                return;
            }
            Some(Ok(Err(error))) => {
                tracing::warn!(%key, %error, "metadata journal: snapshot upload failed");
                return;
            }
            Some(Err(_)) | None => {
                tracing::warn!(%key, "metadata journal: snapshot upload timed out");
                return;
            }
        }
        self.last_snapshot = index;
        tracing::info!(index, "metadata snapshot uploaded to the bucket");
        self.good_snapshots.push(index);
        let kept_from = self.good_snapshots.len().saturating_sub(SNAPSHOTS_KEPT);
        self.good_snapshots.drain(..kept_from);
        if let [older, _] = self.good_snapshots[..] {
            self.cleanup(older).await;
        }
    }

    /// Best effort, once two snapshots known to be readable are stored, the older at
    /// `older_kept`: deletes the snapshots below it and the log objects that end at or below it.
    /// Only names it recognises.
    async fn cleanup(&mut self, older_kept: u64) {
        let index = older_kept;
        let store = self.store.clone();
        let layout = self.layout.clone();
        let work = async move {
            let listed: Vec<_> = store.list(Some(&layout.snapshot_dir)).try_collect().await?;
            let snapshots: Vec<(u64, Path)> = listed
                .into_iter()
                .filter_map(|meta| {
                    let at = meta
                        .location
                        .filename()
                        .and_then(bucket_format::parse_snapshot_name)?;
                    Some((at, meta.location))
                })
                .filter(|(at, _)| *at < older_kept)
                .collect();
            let listed: Vec<_> = store.list(Some(&layout.log_dir)).try_collect().await?;
            let mut firsts: Vec<(u64, Path)> = listed
                .into_iter()
                .filter_map(|meta| {
                    let first = meta
                        .location
                        .filename()
                        .and_then(bucket_format::parse_log_name)?;
                    Some((first, meta.location))
                })
                .collect();
            firsts.sort_by_key(|l| l.0);
            // An object ends right before the next one starts; it goes when that is at or below
            // the older kept snapshot's index + 1. Oldest first, so an interrupted cleanup leaves
            // a suffix of the chain.
            let mut doomed: Vec<Path> = firsts
                .windows(2)
                .filter(|pair| pair[1].0 <= older_kept.saturating_add(1))
                .map(|pair| pair[0].1.clone())
                .collect();
            doomed.extend(snapshots.into_iter().map(|(_, path)| path));
            for path in &doomed {
                match store.delete(path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(error) => return Err(error),
                }
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

enum Confirmed {
    Ours,
    Other(String),
    Absent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_named_by_first_index() {
        let layout = Layout::new("cluster-1");
        assert_eq!(
            layout.log_key(7).as_ref(),
            "cluster-1/metadata/log/00000000000000000007.json"
        );
        assert_eq!(
            layout.snapshot_key(42).as_ref(),
            "cluster-1/metadata/snapshot/00000000000000000042.json"
        );
        assert_eq!(
            Layout::new("").log_dir.as_ref(),
            "metadata/log",
            "an empty prefix puts the journal at the bucket root"
        );
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
