//! The bucket metadata log's objects: their names, their documents and the lineage id.
//!
//! Layout under the journal prefix:
//! - `metadata/log/{first:020}.json`: one log object per appended run, keyed by its first index,
//!   written create-if-absent. The document (format version [`FORMAT_VERSION`]):
//!   `{"format_version":2,"lineage":"<32 hex>","previous_lineage":"<32 hex>"|null,"first":F,"last":L,
//!   "entries":[{"term":T,"index":I,"command":{..}}, ..]}` with exactly one entry per index
//!   `F..=L` (blank and membership entries carry no command).
//! - `metadata/snapshot/{index:020}.json`: the state at a log object boundary, create-only:
//!   `{"format_version":2,"lineage":"<hex>","index":N,"snapshot":<crate::snapshot document>}`.
//!
//! `lineage` is the id of the process history that wrote the object; `previous_lineage` (log) and a
//! snapshot's `lineage` name the history the entry at `first - 1` (resp. `index`) belongs to, so a
//! restore can tell a continuation from a splice. Any other name in these two directories is
//! unrecognised, and a restore refuses to start on it (objects of format version 1,
//! `{first}-{last}.json`, included).

use serde::{Deserialize, Serialize};

use crate::snapshot::{self, SnapshotDoc};
use crate::Command;

/// The version written into every log and snapshot object; readers refuse any other.
pub(crate) const FORMAT_VERSION: u32 = 2;

/// The random 128-bit id of one process history (chosen at a fresh cluster or a restore).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Lineage(pub(crate) u128);

impl Lineage {
    pub(crate) fn random() -> Lineage {
        Lineage(rand::random())
    }

    fn parse(text: &str) -> Option<Lineage> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(Lineage)
    }
}

impl std::fmt::Display for Lineage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// `{first:020}.json` → `first`. Exactly 20 digits: anything else is not ours.
pub(crate) fn parse_log_name(name: &str) -> Option<u64> {
    parse_index_name(name)
}

/// `{index:020}.json` → `index`.
pub(crate) fn parse_snapshot_name(name: &str) -> Option<u64> {
    parse_index_name(name)
}

fn parse_index_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn index_name(index: u64) -> String {
    format!("{index:020}.json")
}

/// One entry as handed to the journal: its Raft position and its command (none for blank and
/// membership entries).
#[derive(Debug, Clone)]
pub(crate) struct JournalEntry {
    pub(crate) term: u64,
    pub(crate) index: u64,
    pub(crate) command: Option<Command>,
}

#[derive(Serialize)]
struct EntryRef<'a> {
    term: u64,
    index: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<&'a Command>,
}

/// One entry encoded as its JSON value.
pub(crate) fn encode_entry(entry: &JournalEntry) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&EntryRef {
        term: entry.term,
        index: entry.index,
        command: entry.command.as_ref(),
    })
}

/// A log object from already encoded entries (`first..=last`, one each, in order).
pub(crate) fn encode_log<'a>(
    lineage: Lineage,
    previous_lineage: Option<Lineage>,
    first: u64,
    last: u64,
    entries: impl Iterator<Item = &'a [u8]>,
    size_hint: usize,
) -> Vec<u8> {
    let previous = match previous_lineage {
        Some(lineage) => format!("\"{lineage}\""),
        None => "null".to_owned(),
    };
    let mut out = Vec::with_capacity(size_hint + 192);
    out.extend_from_slice(
        format!(
            "{{\"format_version\":{FORMAT_VERSION},\"lineage\":\"{lineage}\",\
             \"previous_lineage\":{previous},\"first\":{first},\"last\":{last},\"entries\":["
        )
        .as_bytes(),
    );
    let mut separator = false;
    for entry in entries {
        if separator {
            out.push(b',');
        }
        out.extend_from_slice(entry);
        separator = true;
    }
    out.extend_from_slice(b"]}");
    out
}

/// Read first, so a document of another version fails with a clear message, not a parse error.
#[derive(Deserialize)]
struct VersionProbe {
    format_version: u32,
}

#[derive(Deserialize)]
struct LogDocRaw {
    lineage: String,
    previous_lineage: Option<String>,
    first: u64,
    last: u64,
    entries: Vec<LogEntryRaw>,
}

#[derive(Deserialize)]
struct LogEntryRaw {
    term: u64,
    index: u64,
    #[serde(default)]
    command: Option<Command>,
}

/// A decoded, checked log object.
#[derive(Debug)]
pub(crate) struct LogObject {
    pub(crate) lineage: Lineage,
    pub(crate) previous_lineage: Option<Lineage>,
    pub(crate) last: u64,
    pub(crate) entries: Vec<JournalEntry>,
}

/// Why a document was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Written by another format version.
    Version(u32),
    /// Not a well-formed document of ours.
    Damaged(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Version(version) => write!(
                f,
                "format version {version} is not supported (this build reads {FORMAT_VERSION}); \
                 it was written by another Sluice version"
            ),
            Refusal::Damaged(reason) => write!(f, "damaged or foreign object: {reason}"),
        }
    }
}

fn probe_version(bytes: &[u8]) -> Result<(), Refusal> {
    let probe: VersionProbe = serde_json::from_slice(bytes)
        .map_err(|e| Refusal::Damaged(format!("no readable format_version: {e}")))?;
    if probe.format_version != FORMAT_VERSION {
        return Err(Refusal::Version(probe.format_version));
    }
    Ok(())
}

/// Decodes the log object stored under key `key_first` and checks it: version, key, one entry
/// per index in order, terms never going back.
pub(crate) fn decode_log(bytes: &[u8], key_first: u64) -> Result<LogObject, Refusal> {
    probe_version(bytes)?;
    let raw: LogDocRaw =
        serde_json::from_slice(bytes).map_err(|e| Refusal::Damaged(e.to_string()))?;
    let damaged = |reason: String| Err(Refusal::Damaged(reason));
    let Some(lineage) = Lineage::parse(&raw.lineage) else {
        return damaged(format!("bad lineage {:?}", raw.lineage));
    };
    let previous_lineage = match &raw.previous_lineage {
        None => None,
        Some(text) => match Lineage::parse(text) {
            Some(lineage) => Some(lineage),
            None => return damaged(format!("bad previous_lineage {text:?}")),
        },
    };
    if raw.first != key_first {
        return damaged(format!(
            "the object starts at {} but its key says {key_first}",
            raw.first
        ));
    }
    if raw.last < raw.first {
        return damaged(format!("empty range {}..={}", raw.first, raw.last));
    }
    let expected = raw.last - raw.first + 1;
    if u64::try_from(raw.entries.len()).ok() != Some(expected) {
        return damaged(format!(
            "{} entries for the range {}..={}",
            raw.entries.len(),
            raw.first,
            raw.last
        ));
    }
    let mut term = 0;
    let mut entries = Vec::with_capacity(raw.entries.len());
    for (offset, entry) in (0u64..).zip(raw.entries) {
        if entry.index != raw.first + offset {
            return damaged(format!(
                "entry index {} where {} belongs",
                entry.index,
                raw.first + offset
            ));
        }
        if entry.term < term {
            return damaged(format!(
                "term goes back from {term} to {} at index {}",
                entry.term, entry.index
            ));
        }
        term = entry.term;
        entries.push(JournalEntry {
            term: entry.term,
            index: entry.index,
            command: entry.command,
        });
    }
    Ok(LogObject {
        lineage,
        previous_lineage,
        last: raw.last,
        entries,
    })
}

/// The lineage a log object claims, if it can be read at all (for messages about a conflict).
pub(crate) fn lineage_of(bytes: &[u8]) -> Option<Lineage> {
    #[derive(Deserialize)]
    struct LineageProbe {
        lineage: String,
    }
    let probe: LineageProbe = serde_json::from_slice(bytes).ok()?;
    Lineage::parse(&probe.lineage)
}

/// A bucket snapshot around an already encoded [`crate::snapshot`] document.
pub(crate) fn encode_snapshot(lineage: Lineage, index: u64, document: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(document.len() + 128);
    out.extend_from_slice(
        format!(
            "{{\"format_version\":{FORMAT_VERSION},\"lineage\":\"{lineage}\",\"index\":{index},\
             \"snapshot\":"
        )
        .as_bytes(),
    );
    out.extend_from_slice(document);
    out.push(b'}');
    out
}

#[derive(Deserialize)]
struct SnapshotObjectRaw {
    lineage: String,
    index: u64,
    snapshot: serde_json::Value,
}

/// A decoded, checked bucket snapshot.
pub(crate) struct SnapshotObject {
    /// The lineage of the entry at `index`.
    pub(crate) lineage: Lineage,
    pub(crate) index: u64,
    pub(crate) doc: SnapshotDoc,
}

pub(crate) fn decode_snapshot(bytes: &[u8], key_index: u64) -> Result<SnapshotObject, Refusal> {
    probe_version(bytes)?;
    let raw: SnapshotObjectRaw =
        serde_json::from_slice(bytes).map_err(|e| Refusal::Damaged(e.to_string()))?;
    let Some(lineage) = Lineage::parse(&raw.lineage) else {
        return Err(Refusal::Damaged(format!("bad lineage {:?}", raw.lineage)));
    };
    let inner = serde_json::to_vec(&raw.snapshot).map_err(|e| Refusal::Damaged(e.to_string()))?;
    let doc = snapshot::decode(&inner).map_err(|e| Refusal::Damaged(e.to_string()))?;
    let at = doc.last_applied.map(|position| position.index);
    if raw.index != key_index || at != Some(key_index) {
        return Err(Refusal::Damaged(format!(
            "the snapshot is at {at:?} (document index {}) but its key says {key_index}",
            raw.index
        )));
    }
    Ok(SnapshotObject {
        lineage,
        index: raw.index,
        doc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, index: u64, command: Option<Command>) -> JournalEntry {
        JournalEntry {
            term,
            index,
            command,
        }
    }

    fn encode(lineage: Lineage, previous: Option<Lineage>, entries: &[JournalEntry]) -> Vec<u8> {
        let encoded: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| encode_entry(e).unwrap_or_default())
            .collect();
        let first = entries.first().map_or(0, |e| e.index);
        let last = entries.last().map_or(0, |e| e.index);
        encode_log(
            lineage,
            previous,
            first,
            last,
            encoded.iter().map(Vec::as_slice),
            0,
        )
    }

    #[test]
    fn names_are_exactly_twenty_digits() {
        assert_eq!(index_name(7), "00000000000000000007.json");
        assert_eq!(parse_log_name(&index_name(7)), Some(7));
        assert_eq!(parse_snapshot_name(&index_name(u64::MAX)), Some(u64::MAX));
        for foreign in [
            "00000000000000000007-00000000000000000012.json",
            "7.json",
            "0000000000000000000x.json",
            "00000000000000000007.json.tmp",
            "notes.txt",
            "000000000000000000007.json",
        ] {
            assert_eq!(parse_log_name(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn log_objects_round_trip_and_are_checked() -> Result<(), String> {
        let ours = Lineage(0xabc);
        let before = Lineage(0xdef);
        let command = Command::AllocateProducerIds { count: 3 };
        let entries = [
            entry(1, 5, None),
            entry(1, 6, Some(command.clone())),
            entry(2, 7, Some(command.clone())),
        ];
        let bytes = encode(ours, Some(before), &entries);
        let object = decode_log(&bytes, 5).map_err(|e| e.to_string())?;
        assert_eq!(object.lineage, ours);
        assert_eq!(object.previous_lineage, Some(before));
        assert_eq!(object.last, 7);
        assert_eq!(object.entries.first().map(|e| e.index), Some(5));
        let commands: Vec<Option<Command>> =
            object.entries.iter().map(|e| e.command.clone()).collect();
        assert_eq!(
            commands,
            vec![None, Some(command.clone()), Some(command.clone())]
        );
        assert_eq!(lineage_of(&bytes), Some(ours));

        assert!(
            matches!(decode_log(&bytes, 6), Err(Refusal::Damaged(_))),
            "key mismatch"
        );
        assert!(matches!(
            decode_log(b"garbage", 5),
            Err(Refusal::Damaged(_))
        ));
        let text = String::from_utf8_lossy(&bytes).to_string();
        let newer = text.replace("\"format_version\":2", "\"format_version\":3");
        assert_eq!(
            decode_log(newer.as_bytes(), 5).err(),
            Some(Refusal::Version(3))
        );
        let older = text.replace("\"format_version\":2", "\"format_version\":1");
        assert_eq!(
            decode_log(older.as_bytes(), 5).err(),
            Some(Refusal::Version(1))
        );
        // A missing index, and a term going back, are refused.
        let gap = encode(ours, None, &[entry(1, 5, None), entry(1, 7, None)]);
        assert!(decode_log(&gap, 5).is_err());
        let back = encode(ours, None, &[entry(2, 5, None), entry(1, 6, None)]);
        assert!(decode_log(&back, 5).is_err());
        Ok(())
    }
}
