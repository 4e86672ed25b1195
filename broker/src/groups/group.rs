//! The classic consumer-group protocol for one group as a plain state machine: JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, session and rebalance timeouts, static membership.
//!
//! No I/O and no clock: every call takes `now`, and delayed answers (a JoinGroup waits for the
//! rebalance to complete, a SyncGroup for the leader's assignment) are `oneshot` senders kept in the
//! member until the group can answer. [`Group::tick`] fires expired deadlines. So the rules are
//! unit-tested without a runtime (see `tests` below, which drive time by hand).
//!
//! States (as in Kafka's GroupMetadata):
//! - `Empty`: no members (offsets may still exist in metadata);
//! - `PreparingRebalance`: waiting for every known member to (re)send JoinGroup, until the
//!   rebalance timeout; members that did not rejoin are removed;
//! - `CompletingRebalance`: join answered (the leader got the member list), waiting for the
//!   leader's SyncGroup with the assignment;
//! - `Stable`: assignment handed out; heartbeats keep members alive;
//! - `Dead`: what DescribeGroups reports for an unknown group (a deleted group leaves the map).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::errors::ErrorCode;

/// Coordinator settings that shape the state machine (Kafka's `group.*` broker configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`.
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits for
    /// more members, so a group starting up does not rebalance once per member.
    pub initial_rebalance_delay: Duration,
    /// `group.max.size`.
    pub max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout: Duration::from_millis(6_000),
            max_session_timeout: Duration::from_millis(1_800_000),
            initial_rebalance_delay: Duration::from_millis(3_000),
            max_size: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in ListGroups/DescribeGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup as the state machine needs it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a member without an id first gets one with MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOutcome {
    pub error: ErrorCode,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the members (with their metadata for the chosen protocol).
    pub members: Vec<JoinedMember>,
    /// KIP-814: a static leader rejoining a stable group must not re-run the assignment.
    pub skip_assignment: bool,
}

impl JoinOutcome {
    pub fn error(error: ErrorCode, member_id: impl Into<String>) -> Self {
        JoinOutcome {
            error,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.into(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncOutcome {
    pub fn error(error: ErrorCode) -> Self {
        SyncOutcome {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

pub type JoinReply = oneshot::Sender<JoinOutcome>;
pub type SyncReply = oneshot::Sender<SyncOutcome>;

/// A SyncGroup as the state machine needs it.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// Only the leader sends assignments: (member id, assignment).
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// Session deadline: the member is removed if it neither heartbeats nor joins by then.
    session_deadline: Instant,
    awaiting_join: Option<JoinReply>,
    awaiting_sync: Option<SyncReply>,
}

impl Member {
    /// The member's metadata for `protocol` (empty if it does not support it).
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, request: &JoinRequest) -> bool {
        self.protocol_type == request.protocol_type && self.protocols == request.protocols
    }
}

/// One consumer group's membership and generation.
#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id → current member id.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join (or their session passes).
    pending_members: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    /// While set, an initial rebalance waits even if every member has joined.
    initial_delay_until: Option<Instant>,
    /// When the group last became Empty (a memberless group is forgotten some time after).
    pub empty_since: Option<Instant>,
    config: GroupConfig,
}

impl Group {
    pub fn new(id: impl Into<String>, config: GroupConfig, now: Instant) -> Self {
        Group {
            id: id.into(),
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            empty_since: Some(now),
            config,
        }
    }

    fn new_member_id(&self, client_id: &str, instance_id: Option<&str>) -> String {
        // Unique across restarts of the coordinator (a uuid), readable (the client or instance id).
        let prefix = instance_id.unwrap_or(client_id);
        format!("{prefix}-{}", uuid::Uuid::new_v4())
    }

    /// Whether `member_id` (with `instance_id`) may act in this group: UNKNOWN_MEMBER_ID for a
    /// stranger, FENCED_INSTANCE_ID for an old member id of a static member that was replaced.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), ErrorCode> {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                Some(current) if current != member_id => return Err(ErrorCode::FencedInstanceId),
                Some(_) => {}
                None => return Err(ErrorCode::UnknownMemberId),
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ErrorCode::UnknownMemberId);
        }
        Ok(())
    }

    /// The protocols every member supports.
    fn candidate_protocols(&self) -> Vec<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else {
            return Vec::new();
        };
        let mut candidates: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for member in members {
            candidates.retain(|name| member.protocols.iter().any(|(n, _)| n == name));
        }
        candidates
    }

    /// Whether a joining member fits the group's protocol type and shares a protocol with everyone.
    fn supports(&self, request: &JoinRequest, joining: &str) -> bool {
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return false;
        }
        let others: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.member_id != joining)
            .collect();
        if others.is_empty() {
            return true;
        }
        if others
            .iter()
            .any(|m| m.protocol_type != request.protocol_type)
        {
            return false;
        }
        request.protocols.iter().any(|(name, _)| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Kafka's vote: each member votes for its most preferred candidate; most votes wins (ties go
    /// to the protocol the first member prefers).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: Vec<(String, usize)> = candidates.iter().map(|c| (c.clone(), 0)).collect();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(name))
            {
                if let Some(vote) = votes.iter_mut().find(|(c, _)| c == name) {
                    vote.1 += 1;
                }
            }
        }
        let best = votes.iter().map(|(_, n)| *n).max()?;
        votes
            .into_iter()
            .find(|(_, n)| *n == best)
            .map(|(name, _)| name)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending_members.is_empty()
    }

    /// Handles a JoinGroup; `reply` is answered now or when the rebalance completes.
    pub fn join(&mut self, request: JoinRequest, now: Instant, reply: JoinReply) {
        let member_id = request.member_id.clone();
        if self.state == GroupState::Dead {
            let _ = reply.send(JoinOutcome::error(
                ErrorCode::CoordinatorNotAvailable,
                member_id,
            ));
            return;
        }
        if request.session_timeout < self.config.min_session_timeout
            || request.session_timeout > self.config.max_session_timeout
        {
            let _ = reply.send(JoinOutcome::error(
                ErrorCode::InvalidSessionTimeout,
                member_id,
            ));
            return;
        }
        if !self.supports(&request, &member_id) {
            let _ = reply.send(JoinOutcome::error(
                ErrorCode::InconsistentGroupProtocol,
                member_id,
            ));
            return;
        }
        if member_id.is_empty() {
            self.join_unknown_member(request, now, reply);
        } else {
            self.join_known_member(request, now, reply);
        }
    }

    fn join_unknown_member(&mut self, request: JoinRequest, now: Instant, reply: JoinReply) {
        if let Some(instance) = request.group_instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&instance).cloned() {
                self.replace_static_member(&instance, &old_id, request, now, reply);
                return;
            }
        }
        if self.members.len() + self.pending_members.len() >= self.config.max_size {
            let _ = reply.send(JoinOutcome::error(ErrorCode::GroupMaxSizeReached, ""));
            return;
        }
        let new_id = self.new_member_id(&request.client_id, request.group_instance_id.as_deref());
        if request.require_known_member_id && request.group_instance_id.is_none() {
            // KIP-394: hand out the id first, so a client that times out and retries the join does
            // not leave a member behind with an id it never learned.
            self.pending_members
                .insert(new_id.clone(), now + request.session_timeout);
            let _ = reply.send(JoinOutcome::error(ErrorCode::MemberIdRequired, new_id));
            return;
        }
        self.add_member(new_id, request, now, reply);
    }

    /// A static member restarted (same `group.instance.id`, no member id): it takes over the old
    /// member's place and assignment. In a stable group with unchanged protocols there is no
    /// rebalance — the point of static membership.
    fn replace_static_member(
        &mut self,
        instance: &str,
        old_id: &str,
        request: JoinRequest,
        now: Instant,
        reply: JoinReply,
    ) {
        let Some(mut member) = self.members.remove(old_id) else {
            self.static_members.remove(instance);
            return self.join_unknown_member(request, now, reply);
        };
        let new_id = self.new_member_id(&request.client_id, Some(instance));
        if let Some(waiting) = member.awaiting_join.take() {
            let _ = waiting.send(JoinOutcome::error(ErrorCode::FencedInstanceId, old_id));
        }
        if let Some(waiting) = member.awaiting_sync.take() {
            let _ = waiting.send(SyncOutcome::error(ErrorCode::FencedInstanceId));
        }
        let protocols_unchanged = member.same_protocols(&request);
        member.member_id = new_id.clone();
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        member.session_timeout = request.session_timeout;
        member.rebalance_timeout = request.rebalance_timeout;
        member.session_deadline = now + request.session_timeout;
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        self.static_members
            .insert(instance.to_owned(), new_id.clone());
        self.members.insert(new_id.clone(), member);
        match self.state {
            GroupState::Stable if protocols_unchanged => {
                let is_leader = self.leader.as_deref() == Some(new_id.as_str());
                let mut outcome = self.current_generation(&new_id, is_leader);
                outcome.skip_assignment = is_leader;
                let _ = reply.send(outcome);
            }
            _ => {
                let mut request = request;
                request.member_id = new_id;
                self.join_known_member(request, now, reply);
            }
        }
    }

    fn join_known_member(&mut self, request: JoinRequest, now: Instant, reply: JoinReply) {
        let member_id = request.member_id.clone();
        if self.pending_members.remove(&member_id).is_some() {
            self.add_member(member_id, request, now, reply);
            return;
        }
        if let Err(error) = self.check_member(&member_id, request.group_instance_id.as_deref()) {
            let _ = reply.send(JoinOutcome::error(error, member_id));
            return;
        }
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        let unchanged = self
            .members
            .get(&member_id)
            .is_some_and(|m| m.same_protocols(&request));
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member(&member_id, request, now, Some(reply));
                self.maybe_complete_join(now);
            }
            GroupState::CompletingRebalance if unchanged => {
                // The join answer was lost (a client retry): answer it again.
                let outcome = self.current_generation(&member_id, is_leader);
                self.touch(&member_id, now);
                let _ = reply.send(outcome);
            }
            GroupState::Stable if unchanged && !is_leader => {
                // A follower rejoining with nothing new: hand it the current generation.
                let outcome = self.current_generation(&member_id, false);
                self.touch(&member_id, now);
                let _ = reply.send(outcome);
            }
            _ => {
                // Changed protocols, or the leader rejoining (it wants a new assignment, e.g.
                // a changed subscription, or the second phase of a cooperative rebalance).
                self.update_member(&member_id, request, now, Some(reply));
                self.prepare_rebalance(now);
            }
        }
    }

    fn add_member(
        &mut self,
        member_id: String,
        request: JoinRequest,
        now: Instant,
        reply: JoinReply,
    ) {
        if let Some(instance) = &request.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        let member = Member {
            member_id: member_id.clone(),
            group_instance_id: request.group_instance_id,
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout: request.session_timeout,
            rebalance_timeout: request.rebalance_timeout,
            protocol_type: request.protocol_type,
            protocols: request.protocols,
            assignment: Bytes::new(),
            session_deadline: now + request.session_timeout,
            awaiting_join: Some(reply),
            awaiting_sync: None,
        };
        self.members.insert(member_id, member);
        if self.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(now);
        } else {
            self.prepare_rebalance(now);
        }
    }

    fn update_member(
        &mut self,
        member_id: &str,
        request: JoinRequest,
        now: Instant,
        reply: Option<JoinReply>,
    ) {
        if let Some(member) = self.members.get_mut(member_id) {
            member.protocol_type = request.protocol_type;
            member.protocols = request.protocols;
            member.session_timeout = request.session_timeout;
            member.rebalance_timeout = request.rebalance_timeout;
            member.client_id = request.client_id;
            member.client_host = request.client_host;
            member.session_deadline = now + member.session_timeout;
            if let Some(reply) = reply {
                if let Some(previous) = member.awaiting_join.replace(reply) {
                    // A second join from the same member supersedes the first.
                    let _ = previous.send(JoinOutcome::error(
                        ErrorCode::UnknownMemberId,
                        member_id.to_owned(),
                    ));
                }
            }
        }
    }

    fn touch(&mut self, member_id: &str, now: Instant) {
        if let Some(member) = self.members.get_mut(member_id) {
            member.session_deadline = now + member.session_timeout;
        }
    }

    fn current_generation(&self, member_id: &str, include_members: bool) -> JoinOutcome {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        JoinOutcome {
            error: ErrorCode::None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_owned(),
            members: if include_members {
                self.members
                    .values()
                    .map(|m| JoinedMember {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        metadata: m.metadata_for(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment: false,
        }
    }

    /// Starts (or continues) a rebalance: waits for every member to rejoin.
    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            // The assignment being computed is for a generation that will not happen.
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(waiting) = member.awaiting_sync.take() {
                    let _ = waiting.send(SyncOutcome::error(ErrorCode::RebalanceInProgress));
                }
            }
        }
        let rebalance_timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        if self.state == GroupState::Empty {
            let delay = self.config.initial_rebalance_delay.min(rebalance_timeout);
            self.initial_delay_until = Some(now + delay);
        }
        if self.state != GroupState::PreparingRebalance {
            self.rebalance_deadline = Some(now + rebalance_timeout);
        }
        self.state = GroupState::PreparingRebalance;
        self.empty_since = None;
        self.maybe_complete_join(now);
    }

    fn all_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if self.initial_delay_until.is_some_and(|until| now < until) {
            return;
        }
        self.initial_delay_until = None;
        let timed_out = self
            .rebalance_deadline
            .is_some_and(|deadline| now >= deadline);
        if !self.all_joined() && !timed_out {
            return;
        }
        self.complete_join(now);
    }

    /// Ends the join phase: members that did not rejoin are removed, a new generation starts and
    /// every joined member gets its answer.
    fn complete_join(&mut self, now: Instant) {
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in missing {
            self.remove_member(&member_id);
        }
        self.pending_members.clear();
        self.rebalance_deadline = None;
        self.generation_id = self.generation_id.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            // Like Kafka, an empty group keeps its protocol type (ListGroups/DescribeGroups
            // still say "consumer"); only the selected protocol goes.
            self.protocol_name = None;
            self.leader = None;
            self.empty_since = Some(now);
            return;
        }
        self.protocol_type = self
            .members
            .values()
            .next()
            .map(|m| m.protocol_type.clone());
        self.protocol_name = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|leader| self.members.contains_key(leader))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let leader = self.leader.clone().unwrap_or_default();
        let full = self.current_generation(&leader, true);
        for member in self.members.values_mut() {
            member.session_deadline = now + member.session_timeout;
            if let Some(reply) = member.awaiting_join.take() {
                let mut outcome = full.clone();
                outcome.member_id = member.member_id.clone();
                if member.member_id != leader {
                    outcome.members = Vec::new();
                }
                let _ = reply.send(outcome);
            }
        }
    }

    fn remove_member(&mut self, member_id: &str) {
        if let Some(mut member) = self.members.remove(member_id) {
            if let Some(instance) = &member.group_instance_id {
                if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                    self.static_members.remove(instance);
                }
            }
            if let Some(waiting) = member.awaiting_join.take() {
                let _ = waiting.send(JoinOutcome::error(ErrorCode::UnknownMemberId, member_id));
            }
            if let Some(waiting) = member.awaiting_sync.take() {
                let _ = waiting.send(SyncOutcome::error(ErrorCode::UnknownMemberId));
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
    }

    /// A member is gone (left, or its session expired): the others must rebalance.
    fn member_gone(&mut self, member_id: &str, now: Instant) {
        self.remove_member(member_id);
        match self.state {
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now),
            GroupState::Empty | GroupState::Dead => {}
        }
        if self.members.is_empty() && self.state == GroupState::PreparingRebalance {
            // Nobody left to wait for: complete now (the group becomes Empty).
            self.complete_join(now);
        }
    }

    /// Handles a SyncGroup; `reply` is answered now or when the leader's assignment arrives.
    pub fn sync(&mut self, request: SyncRequest, now: Instant, reply: SyncReply) {
        if self.state == GroupState::Dead {
            let _ = reply.send(SyncOutcome::error(ErrorCode::CoordinatorNotAvailable));
            return;
        }
        if let Err(error) =
            self.check_member(&request.member_id, request.group_instance_id.as_deref())
        {
            let _ = reply.send(SyncOutcome::error(error));
            return;
        }
        if request.generation_id != self.generation_id {
            let _ = reply.send(SyncOutcome::error(ErrorCode::IllegalGeneration));
            return;
        }
        let mismatched = |sent: &Option<String>, ours: &Option<String>| {
            sent.as_ref()
                .is_some_and(|sent| Some(sent) != ours.as_ref())
        };
        if mismatched(&request.protocol_type, &self.protocol_type)
            || mismatched(&request.protocol_name, &self.protocol_name)
        {
            let _ = reply.send(SyncOutcome::error(ErrorCode::InconsistentGroupProtocol));
            return;
        }
        match self.state {
            GroupState::Empty => {
                let _ = reply.send(SyncOutcome::error(ErrorCode::UnknownMemberId));
            }
            GroupState::PreparingRebalance => {
                let _ = reply.send(SyncOutcome::error(ErrorCode::RebalanceInProgress));
            }
            GroupState::CompletingRebalance => {
                self.touch(&request.member_id, now);
                let is_leader = self.leader.as_deref() == Some(request.member_id.as_str());
                if let Some(member) = self.members.get_mut(&request.member_id) {
                    if let Some(previous) = member.awaiting_sync.replace(reply) {
                        let _ = previous.send(SyncOutcome::error(ErrorCode::UnknownMemberId));
                    }
                }
                if is_leader {
                    let mut assignments: HashMap<String, Bytes> =
                        request.assignments.into_iter().collect();
                    for member in self.members.values_mut() {
                        member.assignment =
                            assignments.remove(&member.member_id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    let (protocol_type, protocol_name) =
                        (self.protocol_type.clone(), self.protocol_name.clone());
                    for member in self.members.values_mut() {
                        if let Some(waiting) = member.awaiting_sync.take() {
                            let _ = waiting.send(SyncOutcome {
                                error: ErrorCode::None,
                                protocol_type: protocol_type.clone(),
                                protocol_name: protocol_name.clone(),
                                assignment: member.assignment.clone(),
                            });
                        }
                    }
                }
            }
            GroupState::Stable => {
                self.touch(&request.member_id, now);
                let assignment = self
                    .members
                    .get(&request.member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                let _ = reply.send(SyncOutcome {
                    error: ErrorCode::None,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    assignment,
                });
            }
            GroupState::Dead => {}
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        now: Instant,
    ) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ErrorCode::CoordinatorNotAvailable;
        }
        if let Err(error) = self.check_member(member_id, instance_id) {
            return error;
        }
        if generation_id != self.generation_id {
            return ErrorCode::IllegalGeneration;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => ErrorCode::UnknownMemberId,
            GroupState::PreparingRebalance => {
                self.touch(member_id, now);
                ErrorCode::RebalanceInProgress
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.touch(member_id, now);
                ErrorCode::None
            }
        }
    }

    /// LeaveGroup for one member (by member id, or by instance id with an unknown member id).
    pub fn leave(&mut self, member_id: &str, instance_id: Option<&str>, now: Instant) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ErrorCode::CoordinatorNotAvailable;
        }
        let member_id = match instance_id {
            Some(instance) => match self.static_members.get(instance) {
                Some(current) if member_id.is_empty() || current == member_id => current.clone(),
                Some(_) => return ErrorCode::FencedInstanceId,
                None => return ErrorCode::UnknownMemberId,
            },
            None => member_id.to_owned(),
        };
        if self.pending_members.remove(&member_id).is_some() {
            self.maybe_complete_join(now);
            return ErrorCode::None;
        }
        if !self.members.contains_key(&member_id) {
            return ErrorCode::UnknownMemberId;
        }
        self.member_gone(&member_id, now);
        ErrorCode::None
    }

    /// Fires expired deadlines: sessions of members (and pending member ids), the rebalance
    /// timeout and the initial rebalance delay.
    pub fn tick(&mut self, now: Instant) {
        if self.state == GroupState::Dead {
            return;
        }
        self.pending_members.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            // A member waiting for its join answer is alive by definition (Kafka does the same).
            .filter(|m| m.awaiting_join.is_none() && m.session_deadline <= now)
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in expired {
            tracing::info!(group = %self.id, member = %member_id, "member session expired");
            self.member_gone(&member_id, now);
        }
        self.maybe_complete_join(now);
    }

    /// Whether an OffsetCommit from this member/generation may be stored (Kafka's rules:
    /// a generation < 0 is a "simple" commit, allowed only while the group has no members).
    pub fn validate_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), ErrorCode> {
        if self.state == GroupState::Dead {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        if generation_id < 0 && self.members.is_empty() {
            return Ok(());
        }
        self.check_member(member_id, instance_id)?;
        if generation_id != self.generation_id {
            return Err(ErrorCode::IllegalGeneration);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(ErrorCode::RebalanceInProgress);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(10);
    const REBALANCE: Duration = Duration::from_secs(30);

    fn config() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay: Duration::ZERO,
            ..GroupConfig::default()
        }
    }

    fn request(member_id: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            group_instance_id: instance.map(str::to_owned),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: SESSION,
            rebalance_timeout: REBALANCE,
            protocol_type: "consumer".into(),
            protocols: vec![
                ("range".into(), Bytes::from_static(b"r")),
                ("roundrobin".into(), Bytes::from_static(b"rr")),
            ],
            require_known_member_id: true,
        }
    }

    fn join(
        group: &mut Group,
        request: JoinRequest,
        now: Instant,
    ) -> oneshot::Receiver<JoinOutcome> {
        let (tx, rx) = oneshot::channel();
        group.join(request, now, tx);
        rx
    }

    fn sync(
        group: &mut Group,
        member: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> oneshot::Receiver<SyncOutcome> {
        let (tx, rx) = oneshot::channel();
        let request = SyncRequest {
            member_id: member.into(),
            generation_id: generation,
            assignments,
            ..SyncRequest::default()
        };
        group.sync(request, now, tx);
        rx
    }

    /// Joins a new dynamic member through the MEMBER_ID_REQUIRED round trip.
    fn join_new(group: &mut Group, now: Instant) -> (String, oneshot::Receiver<JoinOutcome>) {
        let first = join(group, request("", None), now).try_recv().unwrap();
        assert_eq!(first.error, ErrorCode::MemberIdRequired);
        let rx = join(group, request(&first.member_id, None), now);
        (first.member_id, rx)
    }

    fn stable_pair(now: Instant) -> (Group, String, String) {
        let mut group = Group::new("g", config(), now);
        let (a, mut ra) = join_new(&mut group, now);
        // One member and everyone joined: the generation completes at once.
        let ja = ra.try_recv().unwrap();
        assert_eq!(ja.error, ErrorCode::None);
        assert_eq!(ja.generation_id, 1);
        assert_eq!(ja.leader, a);
        assert_eq!(ja.protocol_name.as_deref(), Some("range"));
        assert_eq!(ja.members.len(), 1);
        let mut sa = sync(
            &mut group,
            &a,
            1,
            vec![(a.clone(), Bytes::from_static(b"A"))],
            now,
        );
        assert_eq!(sa.try_recv().unwrap().assignment, Bytes::from_static(b"A"));
        assert_eq!(group.state, GroupState::Stable);
        // A second member triggers a rebalance; the leader learns it through its heartbeat.
        let (b, mut rb) = join_new(&mut group, now);
        assert!(rb.try_recv().is_err());
        assert_eq!(group.state, GroupState::PreparingRebalance);
        assert_eq!(
            group.heartbeat(&a, None, 1, now),
            ErrorCode::RebalanceInProgress
        );
        let mut ra = join(&mut group, request(&a, None), now);
        let (ja, jb) = (ra.try_recv().unwrap(), rb.try_recv().unwrap());
        assert_eq!((ja.generation_id, jb.generation_id), (2, 2));
        assert_eq!(ja.members.len(), 2);
        assert!(jb.members.is_empty());
        assert_eq!(jb.leader, a);
        // The follower syncs first and waits for the leader's assignment.
        let mut sb = sync(&mut group, &b, 2, vec![], now);
        assert!(sb.try_recv().is_err());
        let assignments = vec![
            (a.clone(), Bytes::from_static(b"A2")),
            (b.clone(), Bytes::from_static(b"B2")),
        ];
        let mut sa = sync(&mut group, &a, 2, assignments, now);
        assert_eq!(sa.try_recv().unwrap().assignment, Bytes::from_static(b"A2"));
        assert_eq!(sb.try_recv().unwrap().assignment, Bytes::from_static(b"B2"));
        assert_eq!(group.state, GroupState::Stable);
        (group, a, b)
    }

    #[test]
    fn two_members_join_sync_and_get_their_assignments() {
        let now = Instant::now();
        let (group, a, b) = stable_pair(now);
        assert_eq!(group.members.len(), 2);
        assert!(group.members.contains_key(&a) && group.members.contains_key(&b));
    }

    #[test]
    fn bad_generation_unknown_member_and_rebalance_errors() {
        let now = Instant::now();
        let (mut group, a, _b) = stable_pair(now);
        assert_eq!(
            group.heartbeat(&a, None, 1, now),
            ErrorCode::IllegalGeneration
        );
        assert_eq!(
            group.heartbeat("who", None, 2, now),
            ErrorCode::UnknownMemberId
        );
        let mut stale = sync(&mut group, &a, 1, vec![], now);
        assert_eq!(
            stale.try_recv().unwrap().error,
            ErrorCode::IllegalGeneration
        );
        let mut unknown = sync(&mut group, "who", 2, vec![], now);
        assert_eq!(
            unknown.try_recv().unwrap().error,
            ErrorCode::UnknownMemberId
        );
        assert_eq!(
            group.validate_commit(&a, None, 1),
            Err(ErrorCode::IllegalGeneration)
        );
        assert_eq!(
            group.validate_commit("who", None, 2),
            Err(ErrorCode::UnknownMemberId)
        );
        assert_eq!(group.validate_commit(&a, None, 2), Ok(()));
        // Simple commits (generation -1) are refused while the group has members.
        assert_eq!(
            group.validate_commit("", None, -1),
            Err(ErrorCode::UnknownMemberId)
        );
        // A third member: heartbeats now say REBALANCE_IN_PROGRESS, syncs too.
        let (_c, _rc) = join_new(&mut group, now);
        assert_eq!(
            group.heartbeat(&a, None, 2, now),
            ErrorCode::RebalanceInProgress
        );
        let mut during = sync(&mut group, &a, 2, vec![], now);
        assert_eq!(
            during.try_recv().unwrap().error,
            ErrorCode::RebalanceInProgress
        );
    }

    #[test]
    fn leaving_member_triggers_rebalance_and_leader_moves() {
        let now = Instant::now();
        let (mut group, a, b) = stable_pair(now);
        assert_eq!(group.leave(&a, None, now), ErrorCode::None);
        assert_eq!(group.state, GroupState::PreparingRebalance);
        assert_eq!(group.leave(&a, None, now), ErrorCode::UnknownMemberId);
        let mut rb = join(&mut group, request(&b, None), now);
        let jb = rb.try_recv().unwrap();
        assert_eq!(jb.generation_id, 3);
        assert_eq!(jb.leader, b);
        assert_eq!(jb.members.len(), 1);
        // The last member leaves: the group is empty and simple commits are allowed again.
        assert_eq!(group.leave(&b, None, now), ErrorCode::None);
        assert_eq!(group.state, GroupState::Empty);
        assert!(group.is_empty());
        assert_eq!(group.validate_commit("", None, -1), Ok(()));
    }

    #[test]
    fn expired_sessions_are_removed_and_rebalance_times_out_missing_members() {
        let start = Instant::now();
        let (mut group, a, b) = stable_pair(start);
        // Only `a` heartbeats; `b` goes silent.
        let half = start + SESSION / 2;
        assert_eq!(group.heartbeat(&a, None, 2, half), ErrorCode::None);
        group.tick(start + SESSION);
        assert!(!group.members.contains_key(&b), "b's session expired");
        assert_eq!(group.state, GroupState::PreparingRebalance);
        // `a` never rejoins either: at the rebalance timeout it is dropped and the group empties.
        group.tick(start + SESSION + REBALANCE);
        assert_eq!(group.state, GroupState::Empty);
        assert!(group.members.is_empty());
    }

    #[test]
    fn pending_member_ids_expire() {
        let now = Instant::now();
        let mut group = Group::new("g", config(), now);
        let first = join(&mut group, request("", None), now).try_recv().unwrap();
        assert_eq!(first.error, ErrorCode::MemberIdRequired);
        assert!(!group.is_empty());
        group.tick(now + SESSION);
        assert!(group.is_empty());
        let late = join(&mut group, request(&first.member_id, None), now + SESSION)
            .try_recv()
            .unwrap();
        assert_eq!(late.error, ErrorCode::UnknownMemberId);
    }

    #[test]
    fn static_member_restart_keeps_assignment_without_rebalance() {
        let now = Instant::now();
        let mut group = Group::new("g", config(), now);
        let mut r1 = join(&mut group, request("", Some("i1")), now);
        let j1 = r1.try_recv().unwrap();
        assert_eq!(
            j1.error,
            ErrorCode::None,
            "static members skip MEMBER_ID_REQUIRED"
        );
        let mut r2 = join(&mut group, request("", Some("i2")), now);
        assert!(r2.try_recv().is_err());
        let mut r1 = join(&mut group, request(&j1.member_id, Some("i1")), now);
        let (j1, j2) = (r1.try_recv().unwrap(), r2.try_recv().unwrap());
        assert_eq!(j1.generation_id, 2);
        let assignments = vec![
            (j1.member_id.clone(), Bytes::from_static(b"one")),
            (j2.member_id.clone(), Bytes::from_static(b"two")),
        ];
        let leader = j1.leader.clone();
        let follower = if leader == j1.member_id { &j2 } else { &j1 };
        let follower_instance = if leader == j1.member_id { "i2" } else { "i1" };
        let expected = if leader == j1.member_id { "two" } else { "one" };
        sync(&mut group, &leader, 2, assignments, now);
        assert_eq!(group.state, GroupState::Stable);
        // The follower restarts quickly: new member id, same generation, same assignment.
        let mut again = join(&mut group, request("", Some(follower_instance)), now);
        let rejoined = again.try_recv().unwrap();
        assert_eq!(rejoined.error, ErrorCode::None);
        assert_eq!(rejoined.generation_id, 2);
        assert_ne!(rejoined.member_id, follower.member_id);
        assert_eq!(group.state, GroupState::Stable, "no rebalance");
        let mut s = sync(&mut group, &rejoined.member_id, 2, vec![], now);
        assert_eq!(s.try_recv().unwrap().assignment, Bytes::from(expected));
        // The old incarnation is fenced.
        assert_eq!(
            group.heartbeat(&follower.member_id, Some(follower_instance), 2, now),
            ErrorCode::FencedInstanceId
        );
    }

    #[test]
    fn initial_delay_waits_for_more_members() {
        let now = Instant::now();
        let cfg = GroupConfig {
            initial_rebalance_delay: Duration::from_secs(3),
            ..GroupConfig::default()
        };
        let mut group = Group::new("g", cfg, now);
        let (_a, mut ra) = join_new(&mut group, now);
        assert!(ra.try_recv().is_err(), "waits for the initial delay");
        let (_b, mut rb) = join_new(&mut group, now + Duration::from_secs(1));
        group.tick(now + Duration::from_secs(2));
        assert!(ra.try_recv().is_err());
        group.tick(now + Duration::from_secs(3));
        let (ja, jb) = (ra.try_recv().unwrap(), rb.try_recv().unwrap());
        assert_eq!((ja.generation_id, jb.generation_id), (1, 1));
    }

    #[test]
    fn protocol_mismatch_and_bad_session_timeouts_are_refused() {
        let now = Instant::now();
        let (mut group, _a, _b) = stable_pair(now);
        let mut other = request("", None);
        other.protocols = vec![("sticky".into(), Bytes::new())];
        let mut r = join(&mut group, other, now);
        assert_eq!(
            r.try_recv().unwrap().error,
            ErrorCode::InconsistentGroupProtocol
        );
        let mut short = request("", None);
        short.session_timeout = Duration::from_millis(10);
        let mut r = join(&mut group, short, now);
        assert_eq!(
            r.try_recv().unwrap().error,
            ErrorCode::InvalidSessionTimeout
        );
    }

    #[test]
    fn protocol_vote_picks_what_most_members_prefer() {
        let now = Instant::now();
        let mut group = Group::new("g", config(), now);
        let mut prefer_rr = request("", Some("x"));
        prefer_rr.protocols.reverse();
        let mut r1 = join(&mut group, prefer_rr.clone(), now);
        let j1 = r1.try_recv().unwrap();
        assert_eq!(j1.protocol_name.as_deref(), Some("roundrobin"));
        let mut y = prefer_rr.clone();
        y.group_instance_id = Some("y".into());
        let _r2 = join(&mut group, y, now);
        let mut r3 = join(&mut group, request("", Some("z")), now);
        let mut x = prefer_rr;
        x.member_id = j1.member_id.clone();
        let _r1 = join(&mut group, x, now);
        let j3 = r3.try_recv().unwrap();
        assert_eq!(
            j3.protocol_name.as_deref(),
            Some("roundrobin"),
            "2 votes to 1"
        );
    }

    mod model {
        //! Random sequences of requests and clock advances against one group: nothing panics and
        //! the group's invariants hold after every step.

        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Op {
            /// Join as a new member (static when `instance` is set) or rejoin as a known one.
            Join {
                known: Option<usize>,
                instance: Option<u8>,
                protocol: bool,
            },
            Sync {
                known: usize,
                generation_delta: i32,
            },
            Heartbeat {
                known: usize,
            },
            Leave {
                known: usize,
            },
            Tick {
                millis: u64,
            },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (
                    proptest::option::of(0usize..6),
                    proptest::option::of(0u8..3),
                    any::<bool>()
                )
                    .prop_map(|(known, instance, protocol)| Op::Join {
                        known,
                        instance,
                        protocol
                    }),
                (0usize..6, -1i32..=1).prop_map(|(known, generation_delta)| Op::Sync {
                    known,
                    generation_delta
                }),
                (0usize..6).prop_map(|known| Op::Heartbeat { known }),
                (0usize..6).prop_map(|known| Op::Leave { known }),
                (0u64..20_000).prop_map(|millis| Op::Tick { millis }),
            ]
        }

        fn check_invariants(group: &Group, last_generation: i32) {
            assert!(
                group.generation_id >= last_generation,
                "generation went back"
            );
            match group.state {
                GroupState::Empty => assert!(group.members.is_empty()),
                GroupState::CompletingRebalance | GroupState::Stable => {
                    let leader = group.leader.as_ref().expect("a formed group has a leader");
                    assert!(group.members.contains_key(leader), "leader is a member");
                    assert!(group.members.values().all(|m| m.awaiting_join.is_none()));
                }
                GroupState::PreparingRebalance => {
                    assert!(group.rebalance_deadline.is_some());
                }
                GroupState::Dead => {}
            }
            if group.state == GroupState::Stable {
                assert!(group.members.values().all(|m| m.awaiting_sync.is_none()));
            }
            for (instance, member_id) in &group.static_members {
                let member = group
                    .members
                    .get(member_id)
                    .expect("static mapping points to a member");
                assert_eq!(member.group_instance_id.as_deref(), Some(instance.as_str()));
            }
        }

        proptest! {
            #[test]
            fn random_requests_keep_the_group_consistent(ops in proptest::collection::vec(op(), 1..80)) {
                let start = Instant::now();
                let mut now = start;
                let mut group = Group::new("g", GroupConfig {
                    initial_rebalance_delay: Duration::from_millis(500),
                    ..GroupConfig::default()
                }, now);
                let mut known: Vec<String> = Vec::new();
                let mut pending_joins: Vec<oneshot::Receiver<JoinOutcome>> = Vec::new();
                let mut pending_syncs: Vec<oneshot::Receiver<SyncOutcome>> = Vec::new();
                let mut last_generation = 0;
                for op in ops {
                    match op {
                        Op::Join { known: index, instance, protocol } => {
                            let member_id = index
                                .and_then(|i| known.get(i).cloned())
                                .unwrap_or_default();
                            let mut join = request(&member_id, None);
                            join.group_instance_id = instance.map(|i| format!("instance-{i}"));
                            if !protocol {
                                join.protocols.reverse();
                            }
                            pending_joins.push(super::join(&mut group, join, now));
                        }
                        Op::Sync { known: index, generation_delta } => {
                            if let Some(member) = known.get(index).cloned() {
                                let assignments = group
                                    .members
                                    .keys()
                                    .map(|m| (m.clone(), Bytes::from(m.clone())))
                                    .collect();
                                let generation = group.generation_id + generation_delta;
                                pending_syncs.push(sync(&mut group, &member, generation, assignments, now));
                            }
                        }
                        Op::Heartbeat { known: index } => {
                            if let Some(member) = known.get(index) {
                                let generation = group.generation_id;
                                let _ = group.heartbeat(member, None, generation, now);
                            }
                        }
                        Op::Leave { known: index } => {
                            if let Some(member) = known.get(index).cloned() {
                                let _ = group.leave(&member, None, now);
                            }
                        }
                        Op::Tick { millis } => {
                            now += Duration::from_millis(millis);
                            group.tick(now);
                        }
                    }
                    // Learn the member ids handed out, and check what was answered.
                    pending_joins.retain_mut(|rx| match rx.try_recv() {
                        Ok(outcome) => {
                            if !outcome.member_id.is_empty() && !known.contains(&outcome.member_id) {
                                known.push(outcome.member_id.clone());
                            }
                            if outcome.error == ErrorCode::None {
                                assert!(outcome.generation_id >= 1);
                            }
                            false
                        }
                        Err(oneshot::error::TryRecvError::Empty) => true,
                        Err(oneshot::error::TryRecvError::Closed) => false,
                    });
                    pending_syncs.retain_mut(|rx| match rx.try_recv() {
                        Ok(outcome) => {
                            if outcome.error == ErrorCode::None {
                                assert_eq!(group.state, GroupState::Stable);
                            }
                            false
                        }
                        Err(oneshot::error::TryRecvError::Empty) => true,
                        Err(oneshot::error::TryRecvError::Closed) => false,
                    });
                    check_invariants(&group, last_generation);
                    last_generation = group.generation_id;
                }
            }
        }
    }
}
