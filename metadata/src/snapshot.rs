//! Our own versioned snapshot format and the snapshot files under `{dir}/snapshots`.
//!
//! A snapshot is one JSON document:
//! `{ "format_version": 1, "last_applied": ..., "last_membership": ..., "state": MetadataState }`.
//! Positions and membership are plain records defined here, not openraft's types, so the file stays
//! readable across openraft upgrades (its serialized forms are not stable); the `raft` module converts.
//!
//! Files are named `snapshot-{covered:020}.json`, where `covered` is the number of log entries the
//! snapshot includes (last applied index + 1, or 0), so the newest sorts last. A file is written to a
//! temporary name, fsynced, renamed into place and the directory fsynced, so a crash leaves either
//! the old or the new snapshot, never a torn one. The others are deleted afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::{MetadataState, NodeId};

/// The version written into every snapshot; readers refuse any other.
pub(crate) const FORMAT_VERSION: u32 = 1;

const FILE_PREFIX: &str = "snapshot-";
const FILE_SUFFIX: &str = ".json";
const TEMP_SUFFIX: &str = ".tmp";

/// A log position `(term, leader node, index)`, independent of openraft's serialization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct LogPosition {
    pub(crate) term: u64,
    pub(crate) node_id: NodeId,
    pub(crate) index: u64,
}

/// A cluster membership: the (joint) voter sets and every node with its address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MembershipRecord {
    pub(crate) configs: Vec<BTreeSet<NodeId>>,
    pub(crate) nodes: BTreeMap<NodeId, String>,
}

/// The membership in force and the log position that introduced it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredMembershipRecord {
    pub(crate) log_id: Option<LogPosition>,
    pub(crate) membership: MembershipRecord,
}

/// A decoded snapshot document.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct SnapshotDoc {
    pub(crate) format_version: u32,
    pub(crate) last_applied: Option<LogPosition>,
    pub(crate) last_membership: StoredMembershipRecord,
    pub(crate) state: MetadataState,
}

impl SnapshotDoc {
    /// Number of log entries this snapshot covers (names the file).
    pub(crate) fn covered(&self) -> u64 {
        covered_by(self.last_applied.as_ref())
    }
}

/// Number of log entries a snapshot at `last_applied` covers.
pub(crate) fn covered_by(last_applied: Option<&LogPosition>) -> u64 {
    last_applied
        .map(|position| position.index.saturating_add(1))
        .unwrap_or(0)
}

/// Borrowing twin of [`SnapshotDoc`] so encoding does not clone the state.
#[derive(Serialize)]
struct SnapshotDocRef<'a> {
    format_version: u32,
    last_applied: Option<&'a LogPosition>,
    last_membership: &'a StoredMembershipRecord,
    state: &'a MetadataState,
}

/// Just the version field, read first so a newer format fails with a clear message.
#[derive(Deserialize)]
struct VersionProbe {
    format_version: u32,
}

fn invalid_data(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

pub(crate) fn encode(
    last_applied: Option<&LogPosition>,
    last_membership: &StoredMembershipRecord,
    state: &MetadataState,
) -> io::Result<Vec<u8>> {
    let doc = SnapshotDocRef {
        format_version: FORMAT_VERSION,
        last_applied,
        last_membership,
        state,
    };
    serde_json::to_vec(&doc).map_err(|e| invalid_data(format!("encoding snapshot: {e}")))
}

pub(crate) fn decode(bytes: &[u8]) -> io::Result<SnapshotDoc> {
    let probe: VersionProbe = serde_json::from_slice(bytes)
        .map_err(|e| invalid_data(format!("snapshot without a readable format_version: {e}")))?;
    if probe.format_version != FORMAT_VERSION {
        return Err(invalid_data(format!(
            "snapshot format version {} is not supported (expected {FORMAT_VERSION})",
            probe.format_version
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| invalid_data(format!("decoding snapshot: {e}")))
}

/// The snapshot directory. All methods do blocking file I/O: call them from `spawn_blocking`
/// (or at startup).
#[derive(Debug)]
pub(crate) struct SnapshotStore {
    dir: PathBuf,
    fsync: bool,
    /// Held for the whole of a save; `true` once closed. Snapshots are built on a task of their own,
    /// so closing waits for a save in progress and refuses later ones: after shutdown nothing
    /// writes into the directory any more (a restart in the same process may already own it).
    closed: Mutex<bool>,
}

impl SnapshotStore {
    /// Creates the directory if needed and removes temporary files left by a crash mid-write.
    pub(crate) fn open(dir: PathBuf, fsync: bool) -> io::Result<SnapshotStore> {
        fs::create_dir_all(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(SnapshotStore {
            dir,
            fsync,
            closed: Mutex::new(false),
        })
    }

    /// Waits for a save in progress, then refuses every later one.
    pub(crate) fn close(&self) {
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner) = true;
    }

    /// Durably stores `bytes` (an encoded snapshot covering `covered` entries) as the current
    /// snapshot, then deletes every other one.
    pub(crate) fn save(&self, covered: u64, bytes: &[u8]) -> io::Result<()> {
        let closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
        if *closed {
            return Err(io::Error::other(
                "snapshot store is closed (metadata shut down)",
            ));
        }
        let name = file_name(covered);
        let final_path = self.dir.join(&name);
        let temp_path = self.dir.join(format!("{name}{TEMP_SUFFIX}"));
        {
            let mut file = fs::File::create(&temp_path)?;
            file.write_all(bytes)?;
            if self.fsync {
                file.sync_all()?;
            }
        }
        fs::rename(&temp_path, &final_path)?;
        if self.fsync {
            sync_dir(&self.dir)?;
        }
        // The snapshot just saved is the one openraft now knows about; any other file is either
        // older or (after installing a snapshot received from a leader) inconsistent with it.
        for (other, path) in self.list()? {
            if other != covered {
                fs::remove_file(path)?;
            }
        }
        Ok(())
    }

    /// The bytes of the newest snapshot, if any.
    pub(crate) fn load_latest(&self) -> io::Result<Option<Vec<u8>>> {
        match self.list()?.into_iter().max_by_key(|(covered, _)| *covered) {
            Some((_, path)) => fs::read(path).map(Some),
            None => Ok(None),
        }
    }

    fn list(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if let Some(covered) = parse_file_name(&name.to_string_lossy()) {
                found.push((covered, entry.path()));
            }
        }
        Ok(found)
    }
}

fn file_name(covered: u64) -> String {
    format!("{FILE_PREFIX}{covered:020}{FILE_SUFFIX}")
}

fn parse_file_name(name: &str) -> Option<u64> {
    name.strip_prefix(FILE_PREFIX)?
        .strip_suffix(FILE_SUFFIX)?
        .parse()
        .ok()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_state() -> MetadataState {
        let mut state = MetadataState {
            cluster_id: "c1".into(),
            next_producer_id: 42,
            ..Default::default()
        };
        std::sync::Arc::make_mut(&mut state.deleted_objects).push(("k".into(), 7));
        state
    }

    fn membership() -> StoredMembershipRecord {
        StoredMembershipRecord {
            log_id: Some(LogPosition {
                term: 1,
                node_id: 1,
                index: 0,
            }),
            membership: MembershipRecord {
                configs: vec![BTreeSet::from([1])],
                nodes: BTreeMap::from([(1, String::new())]),
            },
        }
    }

    #[test]
    fn encode_decode_round_trip() -> io::Result<()> {
        let position = LogPosition {
            term: 3,
            node_id: 1,
            index: 99,
        };
        let bytes = encode(Some(&position), &membership(), &sample_state())?;
        let doc = decode(&bytes)?;
        assert_eq!(doc.format_version, FORMAT_VERSION);
        assert_eq!(doc.last_applied, Some(position));
        assert_eq!(doc.last_membership, membership());
        assert_eq!(doc.state, sample_state());
        assert_eq!(doc.covered(), 100);
        Ok(())
    }

    #[test]
    fn decode_refuses_other_versions_and_garbage() -> io::Result<()> {
        let bytes = encode(None, &membership(), &sample_state())?;
        let text = String::from_utf8(bytes).map_err(|e| invalid_data(e.to_string()))?;
        let newer = text.replace("\"format_version\":1", "\"format_version\":2");
        let error = decode(newer.as_bytes())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("version 2"), "{error}");
        assert!(decode(b"not json").is_err());
        assert!(decode(b"{\"format_version\":1}").is_err());
        Ok(())
    }

    #[test]
    fn store_keeps_only_the_newest_and_ignores_temp_files() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("snapshots");
        let store = SnapshotStore::open(path.clone(), true)?;
        assert_eq!(store.load_latest()?, None);
        store.save(5, b"five")?;
        store.save(9, b"nine")?;
        fs::write(
            path.join(format!("{}{TEMP_SUFFIX}", file_name(12))),
            b"torn",
        )?;
        assert_eq!(store.load_latest()?, Some(b"nine".to_vec()));
        assert_eq!(store.list()?.len(), 1);
        // Reopening cleans the leftover temporary file.
        let store = SnapshotStore::open(path.clone(), true)?;
        assert_eq!(fs::read_dir(&path)?.count(), 1);
        assert_eq!(store.load_latest()?, Some(b"nine".to_vec()));
        // Saving replaces every other snapshot, newer-named ones included (installed snapshot).
        store.save(3, b"three")?;
        assert_eq!(store.load_latest()?, Some(b"three".to_vec()));
        assert_eq!(store.list()?.len(), 1);
        // Closed: later saves are refused and leave nothing behind.
        store.close();
        assert!(store.save(20, b"twenty").is_err());
        assert_eq!(fs::read_dir(&path)?.count(), 1);
        Ok(())
    }
}
