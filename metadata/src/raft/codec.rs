//! The on-disk records of the Raft log (one WAL record each) and the conversions between openraft's
//! types and our plain records.
//!
//! The log never stores openraft's own serialized forms: an openraft upgrade only has to keep these
//! conversions compiling, and old logs stay readable. Records are JSON (the metadata log is small and
//! this keeps it inspectable); an unknown or malformed record is reported, never unwrapped.

use std::collections::BTreeMap;
use std::io;

use openraft::impls::leader_id_adv::LeaderId;
use openraft::{BasicNode, EntryPayload};
use serde::{Deserialize, Serialize};

use super::types::{Entry, LogId, Membership, Request, StoredMembership, Vote};
use crate::snapshot::{LogPosition, MembershipRecord, StoredMembershipRecord};
use crate::Command;

/// One WAL record of the Raft log. Replayed in order, the records rebuild the log state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum LogRecord {
    /// Entries appended (an existing index is overwritten).
    Append(Vec<EntryRecord>),
    /// Every entry after this position (all entries if `None`) was removed.
    TruncateAfter(Option<LogPosition>),
    /// Every entry up to and including this position was removed (covered by a snapshot).
    Purge(LogPosition),
    SaveVote(VoteRecord),
    SaveCommitted(Option<LogPosition>),
    /// The complete log state at one point: replay resets to it. Written on purge so that the WAL
    /// files before it can be deleted without losing the vote, committed or purged position.
    Checkpoint(CheckpointRecord),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CheckpointRecord {
    pub(crate) vote: Option<VoteRecord>,
    pub(crate) committed: Option<LogPosition>,
    pub(crate) purged: Option<LogPosition>,
    pub(crate) entries: Vec<EntryRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct EntryRecord {
    pub(crate) log_id: LogPosition,
    pub(crate) payload: PayloadRecord,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum PayloadRecord {
    Blank,
    Command(Command),
    Membership(MembershipRecord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VoteRecord {
    pub(crate) term: u64,
    pub(crate) node_id: u64,
    pub(crate) committed: bool,
}

pub(crate) fn encode_record(record: &LogRecord) -> io::Result<Vec<u8>> {
    serde_json::to_vec(record)
        .map_err(|e| io::Error::other(format!("encoding raft log record: {e}")))
}

pub(crate) fn decode_record(bytes: &[u8]) -> io::Result<LogRecord> {
    serde_json::from_slice(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("decoding raft log record: {e}"),
        )
    })
}

pub(crate) fn position(log_id: &LogId) -> LogPosition {
    LogPosition {
        term: log_id.leader_id.term,
        node_id: log_id.leader_id.node_id,
        index: log_id.index,
    }
}

pub(crate) fn log_id(position: &LogPosition) -> LogId {
    LogId {
        leader_id: LeaderId {
            term: position.term,
            node_id: position.node_id,
        },
        index: position.index,
    }
}

pub(crate) fn vote_record(vote: &Vote) -> VoteRecord {
    VoteRecord {
        term: vote.leader_id.term,
        node_id: vote.leader_id.node_id,
        committed: vote.committed,
    }
}

pub(crate) fn vote(record: &VoteRecord) -> Vote {
    Vote {
        leader_id: LeaderId {
            term: record.term,
            node_id: record.node_id,
        },
        committed: record.committed,
    }
}

pub(crate) fn membership_record(membership: &Membership) -> MembershipRecord {
    MembershipRecord {
        configs: membership.get_joint_config().clone(),
        nodes: membership
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect(),
    }
}

pub(crate) fn membership(record: &MembershipRecord) -> io::Result<Membership> {
    let nodes: BTreeMap<u64, BasicNode> = record
        .nodes
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect();
    Membership::new(record.configs.clone(), nodes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("invalid stored membership: {e}"),
        )
    })
}

pub(crate) fn stored_membership_record(stored: &StoredMembership) -> StoredMembershipRecord {
    StoredMembershipRecord {
        log_id: stored.log_id().as_ref().map(position),
        membership: membership_record(stored.membership()),
    }
}

pub(crate) fn stored_membership(record: &StoredMembershipRecord) -> io::Result<StoredMembership> {
    Ok(StoredMembership::new(
        record.log_id.as_ref().map(log_id),
        membership(&record.membership)?,
    ))
}

pub(crate) fn entry_record(entry: &Entry) -> EntryRecord {
    let payload = match &entry.payload {
        EntryPayload::Blank => PayloadRecord::Blank,
        EntryPayload::Normal(Request(command)) => PayloadRecord::Command(command.clone()),
        EntryPayload::Membership(membership) => {
            PayloadRecord::Membership(membership_record(membership))
        }
    };
    EntryRecord {
        log_id: position(&entry.log_id),
        payload,
    }
}

pub(crate) fn entry(record: &EntryRecord) -> io::Result<Entry> {
    let payload = match &record.payload {
        PayloadRecord::Blank => EntryPayload::Blank,
        PayloadRecord::Command(command) => EntryPayload::Normal(Request(command.clone())),
        PayloadRecord::Membership(membership_record) => {
            EntryPayload::Membership(membership(membership_record)?)
        }
    };
    Ok(Entry {
        log_id: log_id(&record.log_id),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn entries_round_trip_through_records() -> io::Result<()> {
        let nodes = BTreeMap::from([(1, BasicNode { addr: "a".into() })]);
        let membership = Membership::new(vec![BTreeSet::from([1])], nodes)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let entries = vec![
            Entry {
                log_id: log_id(&LogPosition {
                    term: 1,
                    node_id: 1,
                    index: 0,
                }),
                payload: EntryPayload::Membership(membership),
            },
            Entry {
                log_id: log_id(&LogPosition {
                    term: 1,
                    node_id: 1,
                    index: 1,
                }),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(&LogPosition {
                    term: 2,
                    node_id: 1,
                    index: 2,
                }),
                payload: EntryPayload::Normal(Request(Command::AllocateProducerIds { count: 3 })),
            },
        ];
        let record = LogRecord::Append(entries.iter().map(entry_record).collect());
        let decoded = decode_record(&encode_record(&record)?)?;
        assert_eq!(decoded, record);
        let LogRecord::Append(records) = decoded else {
            return Err(io::Error::other("variant"));
        };
        let back = records.iter().map(entry).collect::<io::Result<Vec<_>>>()?;
        assert_eq!(back, entries);
        Ok(())
    }

    #[test]
    fn vote_and_positions_round_trip() {
        let v = Vote {
            leader_id: LeaderId {
                term: 4,
                node_id: 2,
            },
            committed: true,
        };
        assert_eq!(vote(&vote_record(&v)), v);
        let id = log_id(&LogPosition {
            term: 3,
            node_id: 9,
            index: 17,
        });
        assert_eq!(log_id(&position(&id)), id);
    }

    #[test]
    fn invalid_records_are_errors() {
        assert!(decode_record(b"{\"Nope\":1}").is_err());
        assert!(decode_record(b"\xff").is_err());
        // A voter without a node entry is not a valid membership.
        let record = MembershipRecord {
            configs: vec![BTreeSet::from([1])],
            nodes: BTreeMap::new(),
        };
        assert!(membership(&record).is_err());
    }
}
