//! The layout of S3-WAL objects and their keys.
//!
//! An incarnation (one broker process) writes each of its lanes as a sequence of objects,
//! `{cluster}/wal/{incarnation}/{lane}/{seq:020}`, created if absent, seq from 1 and dense. An
//! object is its chunks (one per partition, each in the segment format with its own footer)
//! followed by a **manifest** — JSON naming the writer, lane, seq and, per chunk, the partition,
//! owner epoch and `SegmentRef` — then the manifest's length (u32, big endian) and a magic. A
//! taker that reads an object it never indexed needs nothing else to index it.
//!
//! A **tombstone** is an object of the same layout with no chunks and `sealed_by` set: a taker
//! (or the writer itself, for a PUT it gave up on) creates it at a seq nobody wrote, so the lane's
//! writer can never complete that seq — and, since an ack needs every earlier object of its lane,
//! never acknowledges anything at or after it.

use bytes::{Bytes, BytesMut};
use metadata::SegmentEntry;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const MAGIC: &[u8; 4] = b"SLW1";
const TRAILER_LEN: usize = 8;
/// A manifest larger than this is not one of ours (a chunk per partition of one object).
const MAX_MANIFEST_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) incarnation: Uuid,
    pub(crate) lane: u32,
    pub(crate) seq: u64,
    /// Set on a tombstone: the incarnation that sealed the lane here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sealed_by: Option<Uuid>,
    /// One per chunk, in object order.
    #[serde(default)]
    pub(crate) entries: Vec<SegmentEntry>,
}

/// The key of `seq` of `lane` of `incarnation`.
pub(crate) fn object_key(cluster_id: &str, incarnation: Uuid, lane: u32, seq: u64) -> String {
    format!(
        "{cluster_id}/wal/{}/{lane}/{seq:020}",
        incarnation.as_simple()
    )
}

/// The manifest and trailer that end an object whose chunks are `data_len` bytes.
pub(crate) fn manifest_tail(manifest: &Manifest) -> Bytes {
    // Serialising plain data into a Vec cannot fail.
    let json = serde_json::to_vec(manifest).unwrap_or_default();
    let mut tail = BytesMut::with_capacity(json.len() + TRAILER_LEN);
    tail.extend_from_slice(&json);
    tail.extend_from_slice(&(json.len() as u32).to_be_bytes());
    tail.extend_from_slice(MAGIC);
    tail.freeze()
}

/// A whole tombstone object: `sealed_by` seals `seq` of `lane` of `incarnation`.
pub(crate) fn tombstone(incarnation: Uuid, lane: u32, seq: u64, sealed_by: Uuid) -> Bytes {
    manifest_tail(&Manifest {
        incarnation,
        lane,
        seq,
        sealed_by: Some(sealed_by),
        entries: Vec::new(),
    })
}

/// Reads the manifest at the end of a whole object.
pub(crate) fn parse(object: &[u8]) -> Result<Manifest, String> {
    let Some(trailer_at) = object.len().checked_sub(TRAILER_LEN) else {
        return Err(format!("{} bytes: shorter than the trailer", object.len()));
    };
    let trailer = &object[trailer_at..];
    if &trailer[4..] != MAGIC {
        return Err("no S3-WAL trailer".to_owned());
    }
    let len = u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) as usize;
    if len > MAX_MANIFEST_BYTES || len > trailer_at {
        return Err(format!("manifest length {len} does not fit the object"));
    }
    let manifest: Manifest = serde_json::from_slice(&object[trailer_at - len..trailer_at])
        .map_err(|err| format!("unreadable manifest: {err}"))?;
    for entry in &manifest.entries {
        let end = entry.segment.data_start + entry.segment.data_len + entry.segment.footer_len;
        if end > (trailer_at - len) as u64 {
            return Err(format!("chunk of {:?} runs past the chunks", entry.tp));
        }
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use metadata::{SegmentRef, TopicPartition};

    use super::*;

    #[test]
    fn manifests_round_trip_and_damage_is_refused() {
        let incarnation = Uuid::from_u128(7);
        let entry = SegmentEntry {
            tp: TopicPartition {
                topic_id: Uuid::from_u128(1),
                partition: 2,
            },
            leader_epoch: 3,
            segment: SegmentRef {
                key: object_key("c", incarnation, 1, 5),
                base_offset: 10,
                end_offset: 12,
                data_start: 0,
                data_len: 90,
                min_timestamp: 1,
                max_timestamp: 2,
                created_ms: 3,
                footer_len: 10,
                producer_batches: false,
            },
        };
        let manifest = Manifest {
            incarnation,
            lane: 1,
            seq: 5,
            sealed_by: None,
            entries: vec![entry],
        };
        let mut object = vec![0u8; 100];
        object.extend_from_slice(&manifest_tail(&manifest));
        assert_eq!(parse(&object), Ok(manifest));
        assert_eq!(
            object_key("c", incarnation, 1, 5),
            "c/wal/00000000000000000000000000000007/1/00000000000000000005"
        );
        // A chunk that would overlap the manifest, a bad magic, a cut object.
        assert!(parse(&object[40..]).is_err());
        let mut bad = object.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(parse(&bad).is_err());
        assert!(parse(&object[..object.len() - 3]).is_err());
        assert!(parse(b"xx").is_err());

        let stone = tombstone(incarnation, 0, 9, Uuid::from_u128(8));
        let parsed = parse(&stone).expect("tombstone");
        assert_eq!(parsed.sealed_by, Some(Uuid::from_u128(8)));
        assert!(parsed.entries.is_empty());
    }
}
