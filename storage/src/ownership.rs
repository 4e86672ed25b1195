//! Acquire and release: a partition's state (index position, high watermark, producer state)
//! exists in this store while, and only while, this broker owns the partition.
//!
//! - **Acquire**: every partition this node owns when the store opens (after registration bumped
//!   the epochs), and each one that becomes this node's later (a new topic, a takeover), gets its
//!   state built from the index — with the producer state the snapshot and the shared WAL chunks
//!   after it hold — at the epoch it has then, which every write the state causes carries.
//! - **Release** (S3 WAL): a loaded partition whose owner is another node, or whose topic is
//!   gone, is dropped: appends still holding it fail (retriable), the tail cache forgets it, and if
//!   it comes back it is acquired again at the epoch it has then. With the file WAL the state is
//!   the only way to the partition's unsegmented data on this disk, so it is kept (fenced by its
//!   epoch) — a file-WAL partition never moves to another broker.
//!
//! A watcher applies both on every metadata change (acquiring only partitions whose producer
//! state needs WAL chunks read: acquiring every new one there broke a Sarama 1.22 read-back on a
//! fresh S3-WAL broker, cause not found — see the stop note). `Inner::partition` also creates the state
//! itself when the watcher has not got to it yet and nothing has to be read for it (a topic just
//! created); a partition whose producer state needs chunk reads waits for the watcher (retriable).

use std::sync::Arc;
use std::time::Duration;

use metadata::TopicPartition;
use tokio_util::sync::CancellationToken;

use crate::{compaction, lock, producer_snapshots, Inner, Result};

/// How soon a failed acquire (the object store down while reading chunks) is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Acquires every partition this node owns that has no state yet; the number acquired.
pub(crate) async fn acquire_owned(inner: &Inner) -> Result<usize> {
    acquire(inner, false).await
}

/// The watcher's acquire: only partitions whose producer state needs objects read (WAL chunks
/// after a takeover or a partition coming back, a spilled producer snapshot);
/// `Inner::partition` builds the others on first use.
async fn acquire_needing_chunks(inner: &Inner) -> Result<usize> {
    acquire(inner, true).await
}

async fn acquire(inner: &Inner, only_needing_chunks: bool) -> Result<usize> {
    let state = inner.meta.state();
    let mut acquired = 0;
    for (tp, pm) in owned(inner, &state) {
        if inner.loaded_partition(tp).is_some() {
            continue;
        }
        if only_needing_chunks
            && compaction::producer_chunks(&state, tp, pm).is_empty()
            && !producer_snapshots::needs_read(inner, &state, tp)
        {
            continue;
        }
        let epoch = inner.acquired_epoch(tp, pm);
        let partition = compaction::acquired_state(inner, &state, tp, pm).await?;
        if inner.install_acquired(tp, epoch, partition) {
            acquired += 1;
        }
    }
    Ok(acquired)
}

/// Releases every loaded partition this node no longer owns (or whose topic is gone). S3 WAL
/// only: with the file WAL a partition's unsegmented data is reachable only through its state
/// here (no other broker can read this disk), so the state is kept, and every write it causes
/// is fenced by the epoch it was acquired at (`ownership_tests`).
pub(crate) fn release_unowned(inner: &Inner) -> usize {
    if inner.object_wal.is_none() {
        return 0;
    }
    let state = inner.meta.state();
    let mut released = 0;
    for part in inner.loaded_partitions() {
        let owned = state
            .partition(part.tp)
            .is_some_and(|pm| pm.owner == inner.opts.node_id);
        if !owned && inner.release(part.tp) {
            released += 1;
        }
    }
    released
}

fn owned<'a>(
    inner: &Inner,
    state: &'a metadata::MetadataState,
) -> Vec<(TopicPartition, &'a metadata::PartitionMeta)> {
    let dropped = lock(&inner.dropped_topics);
    let mut out = Vec::new();
    for topic in state.topics.values() {
        if dropped.contains(&topic.id) {
            continue;
        }
        for (index, pm) in topic.partitions.iter().enumerate() {
            let Ok(partition) = i32::try_from(index) else {
                continue;
            };
            if pm.owner == inner.opts.node_id {
                out.push((
                    TopicPartition {
                        topic_id: topic.id,
                        partition,
                    },
                    &**pm,
                ));
            }
        }
    }
    out
}

/// Acquires and releases on every metadata change.
pub(crate) async fn run(inner: Arc<Inner>, cancel: CancellationToken) {
    let mut applied = inner.meta.watch();
    loop {
        let switching = inner
            .object_wal
            .as_ref()
            .is_some_and(|slot| slot.switching.load(std::sync::atomic::Ordering::Acquire));
        let mut retry = false;
        // A change of incarnation rebuilds every partition itself.
        if !switching {
            let released = release_unowned(&inner);
            if released > 0 {
                tracing::info!(partitions = released, "released partitions");
            }
            match acquire_needing_chunks(&inner).await {
                Ok(0) => {}
                Ok(acquired) => tracing::debug!(partitions = acquired, "acquired partitions"),
                Err(err) => {
                    tracing::warn!(error = %err, "acquiring partitions failed; retrying");
                    retry = true;
                }
            }
        }
        let wait = if retry || switching {
            RETRY
        } else {
            Duration::MAX
        };
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait.min(Duration::from_secs(3600))) => {}
            _ = cancel.cancelled() => return,
        }
    }
}
