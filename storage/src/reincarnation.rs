//! A new S3-WAL incarnation in the same process, after a WAL object could not be stored.
//!
//! A lane that gives an object up (not stored within `put_give_up`) has tombstoned that seq
//! itself, failed the object's batches and every later one of the lane with a retriable error,
//! and stopped accepting (`object_wal`). Offsets were assigned to those batches; they must be
//! neither a hole nor ever visible, and the partitions must go on. So the store continues the way
//! a new broker would after a crash of this one:
//! 1. the old incarnation is closed: its other lanes store, acknowledge and index what they can
//!    (bounded by a grace period; the rest fails, retriable);
//! 2. every partition's state is retired (appends still holding it fail, retriable) and no new
//!    state is created until step 4;
//! 3. a new incarnation is registered and takes over the old one like any dead incarnation
//!    (`takeover`): its lanes are sealed — the given-up seq is the seal of its lane, so a PUT of
//!    it still in flight somewhere can never land in the log — and the tail below the seals is
//!    indexed;
//! 4. the partitions are acquired again at the bumped epochs, from the index (producer state
//!    included), and the new incarnation serves. Offsets continue right after the last
//!    acknowledged batch: never a hole, and never an acknowledged offset reused.
//!
//! A process found sealed by *another* incarnation (a zombie) is not reincarnated: it stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::object_wal::{Common, ObjectWal, ObjectWalOptions};
use crate::{lock, ownership, takeover, Inner, Result};

/// The store's current S3-WAL incarnation, swapped by [`run`].
pub(crate) struct ObjectWalSlot {
    current: RwLock<Arc<ObjectWal>>,
    pub(crate) common: Arc<Common>,
    pub(crate) opts: ObjectWalOptions,
    /// Set while the store changes incarnation: no partition state is created meanwhile (it would
    /// be built from an index the takeover has not completed).
    pub(crate) switching: AtomicBool,
}

impl ObjectWalSlot {
    pub(crate) fn new(opts: ObjectWalOptions, common: Arc<Common>, wal: ObjectWal) -> Self {
        ObjectWalSlot {
            current: RwLock::new(Arc::new(wal)),
            common,
            opts,
            switching: AtomicBool::new(false),
        }
    }

    pub(crate) fn current(&self) -> Arc<ObjectWal> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace(&self, wal: ObjectWal) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(wal);
    }
}

/// Pause between attempts to register a new incarnation (the bucket or metadata may be down:
/// the reason the object was given up).
const RETRY_START: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long the old incarnation's healthy lanes get to store and index what they hold.
const DRAIN: Duration = Duration::from_secs(10);

/// Watches the current incarnation; when it gives an object up, continues under a new one.
pub(crate) async fn run(inner: Arc<Inner>, cancel: CancellationToken) {
    let Some(slot) = &inner.object_wal else {
        return;
    };
    loop {
        let wal = slot.current();
        let reason = tokio::select! {
            reason = wal.wait_failed() => reason,
            _ = cancel.cancelled() => return,
        };
        if slot.common.sealed().is_some() {
            return;
        }
        tracing::warn!(
            incarnation = %wal.incarnation(),
            reason,
            "S3 WAL: continuing under a new incarnation"
        );
        if !reincarnate(&inner, slot, &wal, &cancel).await {
            return;
        }
    }
}

/// Steps 1–4 of the module doc. `false` when the store is closing or fenced instead.
async fn reincarnate(
    inner: &Arc<Inner>,
    slot: &ObjectWalSlot,
    old: &ObjectWal,
    cancel: &CancellationToken,
) -> bool {
    slot.switching.store(true, Ordering::Release);
    old.close(DRAIN).await;
    inner.retire_partitions();
    let mut delay = RETRY_START;
    let incarnation = loop {
        let incarnation = Uuid::new_v4();
        match start_incarnation(inner, slot, old.incarnation(), incarnation).await {
            Ok(()) => break incarnation,
            Err(
                crate::Error::Metadata(metadata::Error::Fenced(reason))
                | crate::Error::Rejected(metadata::Rejection::Fenced(reason)),
            ) => {
                slot.common.sealed.send_replace(Some(format!(
                    "metadata is fenced while starting a new incarnation: {reason}"
                )));
                return false;
            }
            Err(err) => {
                tracing::warn!(%incarnation, error = %err, "S3 WAL: new incarnation failed; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return false,
        }
        delay = (delay * 2).min(RETRY_MAX);
    };
    let wal = ObjectWal::start(
        slot.opts.clone(),
        inner.objects.clone(),
        inner.meta.clone(),
        inner.segments.clone(),
        &inner.opts.cluster_id,
        incarnation,
        slot.common.clone(),
    );
    slot.replace(wal);
    slot.switching.store(false, Ordering::Release);
    tracing::info!(%incarnation, "S3 WAL: serving under a new incarnation");
    true
}

/// Registers `incarnation`, takes the old ones over, and acquires the partitions again from the
/// index (with their producer state).
async fn start_incarnation(
    inner: &Inner,
    slot: &ObjectWalSlot,
    previous: Uuid,
    incarnation: Uuid,
) -> Result<()> {
    takeover::register_and_take_over(
        &inner.objects,
        &inner.meta,
        &inner.opts.cluster_id,
        inner.opts.node_id,
        incarnation,
        slot.opts.lanes.max(1),
        Some(previous),
    )
    .await?;
    lock(&inner.acquired).clear();
    inner.capture_owned_epochs();
    // Partitions installed by an attempt that failed half-way are rebuilt.
    inner
        .partitions
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    ownership::acquire_owned(inner).await?;
    Ok(())
}
