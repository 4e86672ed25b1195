//! The openraft type configuration of the metadata Raft group and short names for its types.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Command, CommandResponse};

/// A replicated command as openraft sees it: openraft wants `Display` on its application data, which
/// the public [`Command`] does not need to carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Request(pub(crate) Command);

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

openraft::declare_raft_types!(
    /// Type configuration of the metadata Raft group.
    pub(crate) TypeConfig:
        D = Request,
        R = CommandResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
);

pub(crate) type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub(crate) type Vote = openraft::alias::VoteOf<TypeConfig>;
pub(crate) type Entry = openraft::alias::EntryOf<TypeConfig>;
pub(crate) type Membership = openraft::Membership<u64, openraft::BasicNode>;
pub(crate) type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub(crate) type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// Snapshot bytes are our own encoded document (see `crate::snapshot`).
pub(crate) type SnapshotData = Vec<u8>;
pub(crate) type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;
