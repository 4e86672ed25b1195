//! Classic consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! ListGroups, DescribeGroups, DeleteGroups. The rules live in `crate::groups::group`; these
//! handlers translate requests and answers, and set only the fields the negotiated version has.

use std::collections::BTreeSet;
use std::time::Duration;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use metadata::{Command, CommandResponse};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::errors::ErrorCode;
use crate::groups::group::{GroupState, JoinOutcome, JoinRequest, SyncOutcome, SyncRequest};
use crate::Broker;

/// The group type reported by ListGroups v5 (KIP-848 groups would be "consumer").
const CLASSIC: &str = "classic";

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

fn opt_text(value: Option<&str>) -> Option<StrBytes> {
    value.map(text)
}

fn node_id(broker: &Broker) -> i32 {
    i32::try_from(broker.config.node_id).unwrap_or(i32::MAX)
}

fn millis(value: i32) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or(0))
}

pub(super) async fn find_coordinator(
    broker: &Broker,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if version >= 4 {
        request.coordinator_keys
    } else {
        vec![request.key]
    };
    let answers: Vec<CoordinatorEntry> = keys
        .into_iter()
        .map(|key| {
            let (error, message) = match request.key_type {
                // This broker coordinates every group (single node). A multi-node cluster maps
                // the group to its coordinator slot's owner here.
                0 if !key.is_empty() => (ErrorCode::None, None),
                0 => (ErrorCode::InvalidRequest, Some("empty group id")),
                1 => (
                    ErrorCode::CoordinatorNotAvailable,
                    Some("transactions are not supported by Sluice yet"),
                ),
                _ => (ErrorCode::InvalidRequest, Some("unsupported key type")),
            };
            let ok = error == ErrorCode::None;
            CoordinatorEntry::default()
                .with_key(key)
                .with_node_id(BrokerId(if ok { node_id(broker) } else { -1 }))
                .with_host(if ok {
                    text(&broker.config.advertised_host)
                } else {
                    StrBytes::default()
                })
                .with_port(if ok {
                    i32::from(broker.config.advertised_port)
                } else {
                    -1
                })
                .with_error_code(error.code())
                .with_error_message(message.map(text))
        })
        .collect();
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(answers);
    }
    let Some(answer) = answers.into_iter().next() else {
        return FindCoordinatorResponse::default()
            .with_error_code(ErrorCode::InvalidRequest.code());
    };
    let response = FindCoordinatorResponse::default()
        .with_error_code(answer.error_code)
        .with_node_id(answer.node_id)
        .with_host(answer.host)
        .with_port(answer.port);
    if version >= 1 {
        response.with_error_message(answer.error_message)
    } else {
        response
    }
}

pub(super) async fn join_group(
    broker: &Broker,
    version: i16,
    client_id: &str,
    client_host: &str,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let outcome = if group_id.is_empty() {
        JoinOutcome::error(ErrorCode::InvalidGroupId, member_id)
    } else {
        let join = JoinRequest {
            member_id: member_id.clone(),
            group_instance_id: request.group_instance_id.map(|id| id.to_string()),
            client_id: client_id.to_owned(),
            client_host: client_host.to_owned(),
            session_timeout: millis(request.session_timeout_ms),
            // v0 has no rebalance timeout: Kafka uses the session timeout.
            rebalance_timeout: if version >= 1 && request.rebalance_timeout_ms > 0 {
                millis(request.rebalance_timeout_ms)
            } else {
                millis(request.session_timeout_ms)
            },
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), p.metadata))
                .collect(),
            require_known_member_id: version >= 4,
        };
        let (reply, answer) = oneshot::channel();
        broker
            .groups
            .with_group(&group_id, |group| group.join(join, Instant::now(), reply));
        answer
            .await
            .unwrap_or_else(|_| JoinOutcome::error(ErrorCode::CoordinatorNotAvailable, member_id))
    };
    let members = outcome
        .members
        .iter()
        .map(|m| {
            let member = JoinGroupResponseMember::default()
                .with_member_id(text(&m.member_id))
                .with_metadata(m.metadata.clone());
            if version >= 5 {
                member.with_group_instance_id(opt_text(m.group_instance_id.as_deref()))
            } else {
                member
            }
        })
        .collect();
    let mut response = JoinGroupResponse::default()
        .with_error_code(outcome.error.code())
        .with_generation_id(outcome.generation_id)
        // Before v7 the protocol name is a non-nullable string.
        .with_protocol_name(Some(text(outcome.protocol_name.as_deref().unwrap_or(""))))
        .with_leader(text(&outcome.leader))
        .with_member_id(text(&outcome.member_id))
        .with_members(members);
    if version >= 7 {
        response.protocol_type = opt_text(outcome.protocol_type.as_deref());
        response.protocol_name = opt_text(outcome.protocol_name.as_deref());
    }
    if version >= 9 {
        response.skip_assignment = outcome.skip_assignment;
    }
    response
}

pub(super) async fn sync_group(
    broker: &Broker,
    version: i16,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let group_id = request.group_id.0.to_string();
    let outcome = if group_id.is_empty() {
        SyncOutcome::error(ErrorCode::InvalidGroupId)
    } else {
        let sync = SyncRequest {
            member_id: request.member_id.to_string(),
            group_instance_id: request.group_instance_id.map(|id| id.to_string()),
            generation_id: request.generation_id,
            protocol_type: request.protocol_type.map(|p| p.to_string()),
            protocol_name: request.protocol_name.map(|p| p.to_string()),
            assignments: request
                .assignments
                .into_iter()
                .map(|a| (a.member_id.to_string(), a.assignment))
                .collect(),
        };
        let (reply, answer) = oneshot::channel();
        let found = broker
            .groups
            .with_existing(&group_id, |group| group.sync(sync, Instant::now(), reply));
        match found {
            Some(()) => answer
                .await
                .unwrap_or_else(|_| SyncOutcome::error(ErrorCode::CoordinatorNotAvailable)),
            None => SyncOutcome::error(ErrorCode::UnknownMemberId),
        }
    };
    let mut response = SyncGroupResponse::default()
        .with_error_code(outcome.error.code())
        .with_assignment(outcome.assignment);
    if version >= 5 {
        response.protocol_type = opt_text(outcome.protocol_type.as_deref());
        response.protocol_name = opt_text(outcome.protocol_name.as_deref());
    }
    response
}

pub(super) async fn heartbeat(
    broker: &Broker,
    _version: i16,
    request: HeartbeatRequest,
) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let error = if group_id.is_empty() {
        ErrorCode::InvalidGroupId
    } else {
        broker
            .groups
            .with_existing(&group_id, |group| {
                group.heartbeat(
                    request.member_id.as_str(),
                    request.group_instance_id.as_deref(),
                    request.generation_id,
                    Instant::now(),
                )
            })
            .unwrap_or(ErrorCode::UnknownMemberId)
    };
    HeartbeatResponse::default().with_error_code(error.code())
}

pub(super) async fn leave_group(
    broker: &Broker,
    version: i16,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let group_id = request.group_id.0.to_string();
    // v0-2 name one member; v3+ a batch (KIP-345), each with its own answer.
    let identities: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    if group_id.is_empty() {
        return LeaveGroupResponse::default().with_error_code(ErrorCode::InvalidGroupId.code());
    }
    let now = Instant::now();
    let results: Option<Vec<ErrorCode>> = broker.groups.with_existing(&group_id, |group| {
        identities
            .iter()
            .map(|(member, instance)| group.leave(member, instance.as_deref(), now))
            .collect()
    });
    let Some(results) = results else {
        return LeaveGroupResponse::default().with_error_code(ErrorCode::UnknownMemberId.code());
    };
    if version < 3 {
        let error = results.first().copied().unwrap_or(ErrorCode::None);
        return LeaveGroupResponse::default().with_error_code(error.code());
    }
    let members = identities
        .into_iter()
        .zip(results)
        .map(|((member, instance), error)| {
            MemberResponse::default()
                .with_member_id(text(&member))
                .with_group_instance_id(opt_text(instance.as_deref()))
                .with_error_code(error.code())
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

/// (group id, state, protocol type) of every group: those with members in memory and those that
/// exist only through committed offsets in metadata (reported Empty).
fn all_groups(broker: &Broker) -> Vec<(String, GroupState, String)> {
    let state = broker.meta.state();
    let mut seen = BTreeSet::new();
    let mut listed = Vec::new();
    for (id, group) in broker.groups.groups().iter() {
        if group.state == GroupState::Dead {
            continue;
        }
        if group.state == GroupState::Empty && !state.group_offsets.contains_key(id) {
            // An empty group without offsets has nothing left to describe (Kafka drops it too).
            continue;
        }
        seen.insert(id.clone());
        listed.push((
            id.clone(),
            group.state,
            group.protocol_type.clone().unwrap_or_default(),
        ));
    }
    // A group known only by its committed offsets (committed without joining, or members gone
    // since a restart): Kafka reports such a group with an empty protocol type.
    for id in state.group_offsets.keys() {
        if !seen.contains(id) {
            listed.push((id.clone(), GroupState::Empty, String::new()));
        }
    }
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    listed
}

pub(super) async fn list_groups(
    broker: &Broker,
    version: i16,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if !types.is_empty() && !types.iter().any(|t| t == CLASSIC) {
        return ListGroupsResponse::default();
    }
    let groups = all_groups(broker)
        .into_iter()
        .filter(|(_, state, _)| {
            states.is_empty() || states.contains(&state.name().to_ascii_lowercase())
        })
        .map(|(id, state, protocol_type)| {
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(text(&id)))
                .with_protocol_type(text(&protocol_type));
            if version >= 4 {
                listed.group_state = text(state.name());
            }
            if version >= 5 {
                listed.group_type = text(CLASSIC);
            }
            listed
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub(super) async fn describe_groups(
    broker: &Broker,
    version: i16,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let state = broker.meta.state();
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| {
            let id = group_id.0.to_string();
            let mut described = DescribedGroup::default().with_group_id(group_id);
            if id.is_empty() {
                return described.with_error_code(ErrorCode::InvalidGroupId.code());
            }
            let in_memory = broker.groups.with_existing(&id, |group| {
                let protocol = group.protocol_name.clone().unwrap_or_default();
                let members: Vec<DescribedGroupMember> = if group.state == GroupState::Stable
                    || group.state == GroupState::CompletingRebalance
                    || group.state == GroupState::PreparingRebalance
                {
                    group
                        .members
                        .values()
                        .map(|m| {
                            let member = DescribedGroupMember::default()
                                .with_member_id(text(&m.member_id))
                                .with_client_id(text(&m.client_id))
                                .with_client_host(text(&m.client_host))
                                .with_member_metadata(m.metadata_for(&protocol))
                                .with_member_assignment(m.assignment.clone());
                            if version >= 4 {
                                member.with_group_instance_id(opt_text(
                                    m.group_instance_id.as_deref(),
                                ))
                            } else {
                                member
                            }
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                (
                    group.state,
                    group.protocol_type.clone().unwrap_or_default(),
                    protocol,
                    members,
                )
            });
            let (group_state, protocol_type, protocol, members) = match in_memory {
                Some(found) if found.0 != GroupState::Dead => found,
                // Kafka describes an unknown group as Dead with no error.
                _ if state.group_offsets.contains_key(&id) => {
                    (GroupState::Empty, String::new(), String::new(), Vec::new())
                }
                _ => (GroupState::Dead, String::new(), String::new(), Vec::new()),
            };
            described.group_state = text(group_state.name());
            described.protocol_type = text(&protocol_type);
            described.protocol_data = text(&protocol);
            described.members = members;
            if version >= 3 {
                // No ACLs yet: every operation is allowed; -2^31 means "not requested".
                described.authorized_operations = if request.include_authorized_operations {
                    0
                } else {
                    i32::MIN
                };
            }
            described
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub(super) async fn delete_groups(
    broker: &Broker,
    _version: i16,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let state = broker.meta.state();
    let mut results = Vec::with_capacity(request.groups_names.len());
    let mut to_delete = Vec::new();
    for group_id in request.groups_names {
        let id = group_id.0.to_string();
        let in_memory = broker
            .groups
            .with_existing(&id, |group| (group.state, group.is_empty()));
        let error = if id.is_empty() {
            ErrorCode::InvalidGroupId
        } else {
            match in_memory {
                Some((GroupState::Dead, _)) => ErrorCode::GroupIdNotFound,
                Some((_, false)) => ErrorCode::NonEmptyGroup,
                Some((_, true)) => ErrorCode::None,
                None if state.group_offsets.contains_key(&id) => ErrorCode::None,
                None => ErrorCode::GroupIdNotFound,
            }
        };
        if error == ErrorCode::None {
            to_delete.push(id);
        }
        results.push((group_id, error));
    }
    if !to_delete.is_empty() {
        let failed = match broker
            .meta
            .propose(Command::DeleteGroups {
                groups: to_delete.clone(),
            })
            .await
        {
            Ok(CommandResponse::Rejected(_)) | Err(_) => true,
            Ok(_) => false,
        };
        if failed {
            for (group_id, error) in results.iter_mut() {
                if to_delete.contains(&group_id.0.to_string()) {
                    *error = ErrorCode::CoordinatorNotAvailable;
                }
            }
        } else {
            let mut groups = broker.groups.groups();
            for id in &to_delete {
                // Only if it is still empty: a member may have joined meanwhile.
                if groups.get(id).is_some_and(|g| g.is_empty()) {
                    groups.remove(id);
                }
            }
        }
    }
    let results = results
        .into_iter()
        .map(|(group_id, error)| {
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(error.code())
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
