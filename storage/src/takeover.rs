//! Starting an S3-WAL incarnation: register it, then take over the lanes of every dead one.
//!
//! Order (each step only after the previous is stored in the bucket log):
//! 1. **Register** this incarnation. Metadata retires the node's older incarnations and bumps the
//!    leader epoch of the node's partitions, so a zombie's index writes are rejected from here on.
//! 2. **Seal** each lane of each dead, unsealed incarnation (oldest first): walk the lane from its
//!    `indexed_through + 1`, reading each object, until the first seq with no object (create a
//!    tombstone there; if the create loses to the zombie's object, read that one too and go on) or
//!    with a tombstone already (a taker before us got that far: reuse it).
//! 3. **Index** every chunk below the seals at the current epochs, in offset order per partition,
//!    and record the seals — one `AddSegments`, conditional (per entry) on the partition's index
//!    end. Chunks already indexed are skipped; a chunk that would leave a gap stops the start with
//!    an error naming the object.
//!
//! Then the store serves. A zombie resumed after step 2 can never complete the sealed seq, and an
//! ack needs every earlier object of the lane, so it acknowledges nothing more; everything it did
//! acknowledge is below the seal and indexed in step 3.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use metadata::{
    Command, CommandResponse, MetadataClient, MetadataState, NodeId, SealLanes, SegmentEntry,
    TopicPartition,
};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use uuid::Uuid;

use crate::wal_object::{self, Manifest};
use crate::{now_ms, Error, Result};

/// Attempts of one object-store call before the start fails.
const ATTEMPTS: u32 = 8;
const BACKOFF_START: Duration = Duration::from_millis(100);

/// What a start took over (logs, tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Takeover {
    /// Dead incarnations sealed.
    pub(crate) incarnations: usize,
    /// WAL objects found below the seals.
    pub(crate) objects: usize,
    /// Chunks newly indexed from them.
    pub(crate) indexed: usize,
}

fn corrupt(key: &str, reason: impl Into<String>) -> Error {
    Error::CorruptSegment {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Registers `incarnation` of `node_id` with `lanes` lanes and takes over every dead incarnation
/// not sealed yet. With `successor_of`, only if that incarnation is still live (else
/// `Rejection::Fenced`: another start took the node over). Fails (nothing acknowledged by this incarnation yet) when the bucket or
/// metadata cannot complete it.
pub(crate) async fn register_and_take_over(
    objects: &Arc<dyn ObjectStore>,
    meta: &MetadataClient,
    cluster_id: &str,
    node_id: NodeId,
    incarnation: Uuid,
    lanes: u32,
    successor_of: Option<Uuid>,
) -> Result<Takeover> {
    let registered = meta
        .propose(Command::RegisterIncarnation {
            incarnation,
            node_id,
            lanes,
            now_ms: now_ms(),
            successor_of,
        })
        .await?;
    if let CommandResponse::Rejected(rejection) = registered {
        return Err(rejection.into());
    }
    let mut report = Takeover::default();
    let state = meta.state();
    let mut dead: Vec<(Uuid, &metadata::IncarnationMeta)> = state
        .incarnations
        .iter()
        .filter(|(_, inc)| !inc.live && inc.sealed.is_none())
        .map(|(id, inc)| (*id, inc))
        .collect();
    dead.sort_by_key(|(_, inc)| inc.ordinal);
    for (id, inc) in dead {
        let mut seals = Vec::with_capacity(inc.lanes as usize);
        let mut tail: Vec<(String, Manifest)> = Vec::new();
        for lane in 0..inc.lanes {
            let from = inc.indexed_through.get(lane as usize).copied().unwrap_or(0) + 1;
            let (seal, found) = seal_lane(objects, cluster_id, id, lane, from, incarnation).await?;
            seals.push(seal);
            tail.extend(found);
        }
        report.incarnations += 1;
        report.objects += tail.len();
        report.indexed += index_tail(meta, id, seals, tail).await?;
    }
    if report.incarnations > 0 {
        tracing::info!(
            %incarnation,
            sealed = report.incarnations,
            objects = report.objects,
            chunks = report.indexed,
            "S3 WAL: sealed dead incarnations and indexed their tails"
        );
    }
    Ok(report)
}

/// Seals one lane: the objects found from `from` up to the seal, and the seal's seq.
async fn seal_lane(
    objects: &Arc<dyn ObjectStore>,
    cluster_id: &str,
    dead: Uuid,
    lane: u32,
    from: u64,
    by: Uuid,
) -> Result<(u64, Vec<(String, Manifest)>)> {
    let mut found = Vec::new();
    let mut seq = from;
    loop {
        let key = wal_object::object_key(cluster_id, dead, lane, seq);
        let path = ObjectPath::from(key.as_str());
        match get(objects, &path).await? {
            Some(bytes) => {
                let manifest = wal_object::parse(&bytes).map_err(|reason| corrupt(&key, reason))?;
                if manifest.incarnation != dead || manifest.lane != lane || manifest.seq != seq {
                    return Err(corrupt(&key, "manifest names another lane position"));
                }
                if manifest.sealed_by.is_some() {
                    return Ok((seq, found));
                }
                found.push((key, manifest));
                seq += 1;
            }
            None => {
                let stone = wal_object::tombstone(dead, lane, seq, by);
                if create(objects, &path, stone).await? {
                    check_no_seal_above(objects, cluster_id, dead, lane, seq).await?;
                    return Ok((seq, found));
                }
                // Lost the race to the zombie's own object (or an earlier attempt of ours):
                // read the key again.
            }
        }
    }
}

/// A lane sealed at `seq` must not hold an older seal above it: that would mean an object below
/// the older seal — one a zombie may have acknowledged — is missing from the bucket.
async fn check_no_seal_above(
    objects: &Arc<dyn ObjectStore>,
    cluster_id: &str,
    dead: Uuid,
    lane: u32,
    seq: u64,
) -> Result<()> {
    let own_key = wal_object::object_key(cluster_id, dead, lane, seq);
    let prefix = ObjectPath::from(format!("{cluster_id}/wal/{}/{lane}", dead.as_simple()));
    let listed: Vec<object_store::ObjectMeta> = objects.list(Some(&prefix)).try_collect().await?;
    for meta in listed {
        let key = meta.location.to_string();
        if key <= own_key {
            continue;
        }
        let Some(bytes) = get(objects, &meta.location).await? else {
            continue;
        };
        if wal_object::parse(&bytes).is_ok_and(|manifest| manifest.sealed_by.is_some()) {
            return Err(corrupt(
                &own_key,
                format!(
                    "lane {lane} of incarnation {dead} has no object at seq {seq}, below an \
                     earlier seal at {key}: an object the old owner may have acknowledged is \
                     missing from the bucket"
                ),
            ));
        }
    }
    Ok(())
}

/// Indexes the chunks of `tail` (in lane, seq order) that continue their partitions' index, at the
/// current epochs, and records the seals. Returns the chunks indexed.
async fn index_tail(
    meta: &MetadataClient,
    dead: Uuid,
    seals: Vec<u64>,
    tail: Vec<(String, Manifest)>,
) -> Result<usize> {
    let state = meta.state();
    let entries = tail_entries(&state, &tail)?;
    let count = entries.len();
    let parts = metadata::add_segments_runs(&entries);
    let last = parts.len() - 1;
    for (i, part) in parts.into_iter().enumerate() {
        let seal = (i == last).then(|| SealLanes {
            incarnation: dead,
            seals: seals.clone(),
        });
        let response = meta
            .propose(Command::AddSegments {
                entries: part.to_vec(),
                now_ms: now_ms(),
                marks: Vec::new(),
                seal,
            })
            .await?;
        match response {
            CommandResponse::Entries(results) => {
                if let Some((entry, rejection)) = part
                    .iter()
                    .zip(&results)
                    .find_map(|(entry, result)| result.as_ref().map(|r| (entry, r)))
                {
                    return Err(corrupt(
                        &entry.segment.key,
                        format!("takeover could not index {:?}: {rejection}", entry.tp),
                    ));
                }
            }
            CommandResponse::Rejected(rejection) => return Err(rejection.into()),
            other => {
                return Err(Error::Metadata(metadata::Error::Storage(format!(
                    "unexpected answer {other:?}"
                ))))
            }
        }
    }
    Ok(count)
}

/// The entries that continue each partition's index, at its current epoch. Chunks of deleted
/// partitions and chunks already indexed are skipped; a chunk past the index end is an error.
fn tail_entries(state: &MetadataState, tail: &[(String, Manifest)]) -> Result<Vec<SegmentEntry>> {
    let mut ends: HashMap<TopicPartition, i64> = HashMap::new();
    let mut entries = Vec::new();
    for (key, manifest) in tail {
        for entry in &manifest.entries {
            let Some(pm) = state.partition(entry.tp) else {
                continue;
            };
            let end = ends.entry(entry.tp).or_insert_with(|| pm.segmented_end());
            if entry.segment.end_offset <= *end {
                continue;
            }
            if entry.segment.base_offset != *end {
                return Err(corrupt(
                    key,
                    format!(
                        "chunk of {:?} starts at {} but the index ends at {}: acknowledged data \
                         before it is missing",
                        entry.tp, entry.segment.base_offset, end
                    ),
                ));
            }
            *end = entry.segment.end_offset;
            entries.push(SegmentEntry {
                tp: entry.tp,
                leader_epoch: pm.leader_epoch,
                segment: metadata::SegmentRef {
                    key: key.clone(),
                    ..entry.segment.clone()
                },
            });
        }
    }
    Ok(entries)
}

/// GETs a whole object (`None` = absent), retrying other errors a few times.
async fn get(objects: &Arc<dyn ObjectStore>, path: &ObjectPath) -> Result<Option<bytes::Bytes>> {
    let mut delay = BACKOFF_START;
    let mut attempt = 1;
    loop {
        let read = async { objects.get(path).await?.bytes().await };
        match read.await {
            Ok(bytes) => return Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(err) if attempt >= ATTEMPTS => return Err(err.into()),
            Err(err) => {
                tracing::warn!(%path, attempt, error = %err, "takeover GET failed; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
        attempt += 1;
    }
}

/// Creates `bytes` at `path` if absent: `true` = ours is there, `false` = something else was.
async fn create(
    objects: &Arc<dyn ObjectStore>,
    path: &ObjectPath,
    bytes: bytes::Bytes,
) -> Result<bool> {
    let mut delay = BACKOFF_START;
    let mut attempt = 1;
    loop {
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match objects
            .put_opts(path, PutPayload::from_bytes(bytes.clone()), options)
            .await
        {
            Ok(_) => return Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                // Ours from an earlier attempt, or the zombie's: the caller reads it either way.
                return Ok(get(objects, path)
                    .await?
                    .is_some_and(|found| found == bytes));
            }
            Err(err) if attempt >= ATTEMPTS => return Err(err.into()),
            Err(err) => {
                tracing::warn!(%path, attempt, error = %err, "takeover create failed; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
        attempt += 1;
    }
}
