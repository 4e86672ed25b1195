//! Rebuilding the metadata state from the bucket log at start (see `bucket_format` for the layout).
//!
//! Restore never deletes or writes anything. It starts from the newest snapshot it can read (a
//! damaged one — unparsable, or not matching its key — falls back to the older one; the log objects
//! are kept from the older of the two kept snapshots, so that loses nothing), then follows the
//! exact chain of log objects after it: the object keyed `s + 1`, then the one keyed by that
//! object's `last + 1`, and so on, each naming the lineage of the entry before it. Every log object
//! above the snapshot must lie on that chain.
//!
//! The start fails — with an error naming the object — on an object name it does not recognise,
//! a log object it cannot read, a format version it does not know, a log object off the chain (a
//! gap, an overlap) or one that does not continue the lineage before it. A bucket written by another
//! version or damaged by hand is never taken for a fresh cluster and never shortened.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::bucket_format::{self, Lineage, Refusal};
use crate::journal::{with_retries, Layout};
use crate::{Error, JournalOptions, MetadataState, Result};

/// Log objects fetched at once while restoring (one GET after another would make a restart wait
/// out the object store's latency hundreds of times).
const RESTORE_CONCURRENCY: usize = 16;

/// The state rebuilt from the bucket by [`restore`].
pub(crate) struct Restored {
    pub(crate) state: Arc<MetadataState>,
    /// Log index the state is at (the last entry of the chain).
    pub(crate) index: u64,
    /// The lineage of the entry at `index` (the new history continues after it).
    pub(crate) lineage: Lineage,
    /// Whether the bucket's newest snapshot is already at `index` (no fresh base needed).
    pub(crate) snapshot_current: bool,
    /// The index of the snapshot the state was rebuilt from.
    pub(crate) snapshot_index: Option<u64>,
}

fn refused(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Restore(format!(
        "metadata log object {path}: {why}; refusing to start (nothing was changed in the bucket)"
    ))
}

async fn list(store: &Arc<dyn ObjectStore>, dir: &Path) -> Result<Vec<Path>> {
    with_retries("listing", || async {
        let metas: Vec<_> = store.list(Some(dir)).try_collect().await?;
        Ok(metas.into_iter().map(|meta| meta.location).collect())
    })
    .await
}

async fn get(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<bytes::Bytes> {
    with_retries("reading", || async { store.get(path).await?.bytes().await }).await
}

/// Lists `dir` and parses every name with `parse`; an unrecognised name fails the restore.
async fn list_indexed(
    store: &Arc<dyn ObjectStore>,
    dir: &Path,
    parse: fn(&str) -> Option<u64>,
) -> Result<BTreeMap<u64, Path>> {
    let mut found = BTreeMap::new();
    for path in list(store, dir).await? {
        match path.filename().and_then(parse) {
            Some(index) => {
                found.insert(index, path);
            }
            None => return Err(refused(
                &path,
                "unrecognised object name (written by another Sluice version, or not by Sluice)",
            )),
        }
    }
    Ok(found)
}

/// Rebuilds the metadata state from the bucket. `Ok(None)` for a bucket without any metadata
/// object (a fresh cluster). Never modifies the bucket.
pub(crate) async fn restore(opts: &JournalOptions) -> Result<Option<Restored>> {
    let layout = Layout::new(&opts.prefix);
    let store = &opts.store;
    let snapshots = list_indexed(
        store,
        &layout.snapshot_dir,
        bucket_format::parse_snapshot_name,
    )
    .await?;
    let logs = list_indexed(store, &layout.log_dir, bucket_format::parse_log_name).await?;
    if snapshots.is_empty() && logs.is_empty() {
        return Ok(None);
    }

    // The newest snapshot that can be read.
    let mut base: Option<(u64, Lineage, MetadataState)> = None;
    let mut damaged = Vec::new();
    for (&index, path) in snapshots.iter().rev() {
        let bytes = get(store, path).await?;
        match bucket_format::decode_snapshot(&bytes, index) {
            Ok(object) => {
                base = Some((object.index, object.lineage, object.doc.state));
                break;
            }
            Err(refusal @ Refusal::Version(_)) => return Err(refused(path, refusal)),
            Err(refusal) => {
                tracing::warn!(%path, %refusal, "metadata snapshot unreadable; trying the older one");
                damaged.push(format!("{path}: {refusal}"));
            }
        }
    }
    let snapshot_index = base.as_ref().map(|(index, _, _)| *index);
    let (mut next, mut lineage, mut state) = match base {
        Some((index, lineage, state)) => (index.saturating_add(1), Some(lineage), state),
        None => (0, None, MetadataState::default()),
    };
    if snapshot_index.is_none() && !snapshots.is_empty() {
        // Without a snapshot the chain must start at the very first entry.
        if !logs.contains_key(&0) {
            return Err(Error::Restore(format!(
                "none of the bucket's {} metadata snapshot(s) is readable ({}) and the log does not \
                 start at index 0; refusing to start",
                snapshots.len(),
                damaged.join("; ")
            )));
        }
    }

    // Every log object above the snapshot, fetched a few at a time, must continue the chain.
    let chain: Vec<(u64, Path)> = logs
        .range(next..)
        .map(|(first, path)| (*first, path.clone()))
        .collect();
    let fetches: Vec<_> = chain.iter().map(|(_, path)| get(store, path)).collect();
    let mut fetched = futures::stream::iter(fetches).buffered(RESTORE_CONCURRENCY);
    for (first, path) in &chain {
        let Some(bytes) = fetched.next().await else {
            return Err(Error::Restore("a log object fetch went missing".into()));
        };
        let bytes = bytes?;
        if *first != next {
            return Err(refused(
                path,
                format!(
                    "does not continue the chain (the chain reaches index {}, so the next object \
                     must start at {next}): a gap or an overlap in the log",
                    next.saturating_sub(1)
                ),
            ));
        }
        let object = bucket_format::decode_log(&bytes, *first).map_err(|r| refused(path, r))?;
        if object.previous_lineage != lineage {
            return Err(refused(
                path,
                format!(
                    "continues lineage {} but the entry before it belongs to lineage {}: two \
                     histories were spliced",
                    describe(object.previous_lineage),
                    describe(lineage)
                ),
            ));
        }
        for entry in &object.entries {
            if let Some(command) = &entry.command {
                crate::apply::apply_command(&mut state, command);
            }
        }
        next = object.last.saturating_add(1);
        lineage = Some(object.lineage);
    }
    let Some(lineage) = lineage else {
        return Err(Error::Restore(
            "the bucket log has neither a readable snapshot nor a first log object".into(),
        ));
    };
    let index = next.saturating_sub(1);
    tracing::info!(
        index, snapshot = ?snapshot_index, log_objects = chain.len(), %lineage,
        "metadata restored from the bucket"
    );
    Ok(Some(Restored {
        state: Arc::new(state),
        index,
        lineage,
        snapshot_current: snapshot_index == Some(index),
        snapshot_index,
    }))
}

fn describe(lineage: Option<Lineage>) -> String {
    lineage.map_or_else(
        || "none (the start of the log)".to_owned(),
        |l| l.to_string(),
    )
}
