//! The group coordinator: classic consumer groups (membership in memory, per group a plain state
//! machine in [`group`]) and committed offsets (in metadata, group-committed by [`offsets`]).
//!
//! Single node today: FindCoordinator answers this broker for every group. The design keeps the
//! coordinator slot movable: membership is soft state that clients rebuild by rejoining (a moved
//! coordinator answers UNKNOWN_MEMBER_ID and they rejoin), while committed offsets — the only
//! state that must survive — live in replicated metadata, readable by any broker.
//!
//! Runtime: one mutex over the group map (operations are short and never `.await` under it), one
//! ticker task firing session/rebalance deadlines, one commit batcher task, one expiry pass for
//! the offsets of empty groups (`offsets.retention.minutes`).

pub mod group;
pub(crate) mod offsets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use metadata::{Command, MetadataClient};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::group::{Group, GroupConfig};
use self::offsets::OffsetCommitter;

/// How often deadlines are checked: bounds how late a session expiry or rebalance timeout fires.
const TICK: Duration = Duration::from_millis(100);

/// How long a group without members stays in memory.
const FORGET_EMPTY_AFTER: Duration = Duration::from_secs(60);

/// How often the offsets of empty groups are checked for expiry.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

/// Coordinator settings (from the `serve` flags).
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorConfig {
    pub group: GroupConfig,
    /// `offsets.retention.minutes`: offsets of a group without members expire this long after
    /// its newest commit (and after it became empty).
    pub offsets_retention: Duration,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            group: GroupConfig::default(),
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
            offset_metadata_max_bytes: 4096,
        }
    }
}

pub(crate) struct Coordinator {
    pub(crate) config: CoordinatorConfig,
    groups: Mutex<HashMap<String, Group>>,
    pub(crate) committer: OffsetCommitter,
    cancel: CancellationToken,
}

impl Coordinator {
    /// Creates the coordinator and, when called inside a Tokio runtime, starts its tasks (they
    /// stop when the coordinator is dropped).
    pub(crate) fn start(config: CoordinatorConfig, meta: MetadataClient) -> Arc<Coordinator> {
        let cancel = CancellationToken::new();
        let coordinator = Arc::new(Coordinator {
            config,
            groups: Mutex::new(HashMap::new()),
            committer: OffsetCommitter::start(meta.clone(), cancel.clone()),
            cancel: cancel.clone(),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(ticker(Arc::downgrade(&coordinator), cancel.clone()));
            tokio::spawn(expire_offsets(Arc::downgrade(&coordinator), meta, cancel));
        }
        coordinator
    }

    /// The group map. Held only for short, synchronous state-machine calls.
    pub(crate) fn groups(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        // The state machines stay consistent across a panic in a caller; keep serving.
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the group, creating it (Empty) when absent.
    pub(crate) fn with_group<T>(&self, group_id: &str, f: impl FnOnce(&mut Group) -> T) -> T {
        let mut groups = self.groups();
        let group = groups
            .entry(group_id.to_owned())
            .or_insert_with(|| Group::new(group_id, self.config.group, Instant::now()));
        f(group)
    }

    /// Runs `f` on the group if it exists in memory.
    pub(crate) fn with_existing<T>(
        &self,
        group_id: &str,
        f: impl FnOnce(&mut Group) -> T,
    ) -> Option<T> {
        self.groups().get_mut(group_id).map(f)
    }

    fn tick(&self, now: Instant) {
        let mut groups = self.groups();
        for group in groups.values_mut() {
            group.tick(now);
        }
        // A group without members keeps nothing worth remembering (its offsets are in metadata),
        // so it is forgotten after a while: a flood of one-off group ids cannot grow memory.
        groups.retain(|_, group| {
            !(group.is_empty()
                && group
                    .empty_since
                    .is_some_and(|since| now.saturating_duration_since(since) > FORGET_EMPTY_AFTER))
        });
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn ticker(coordinator: Weak<Coordinator>, cancel: CancellationToken) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        let Some(coordinator) = coordinator.upgrade() else {
            return;
        };
        coordinator.tick(Instant::now());
    }
}

/// Deletes the committed offsets of groups that have no members and whose newest commit is older
/// than the retention (KIP-211: offsets of an active group never expire).
async fn expire_offsets(
    coordinator: Weak<Coordinator>,
    meta: MetadataClient,
    cancel: CancellationToken,
) {
    // The first pass runs one interval after start: right after a restart, members have not had
    // a chance to rejoin yet, and their groups would look empty.
    let mut interval = tokio::time::interval_at(Instant::now() + EXPIRY_INTERVAL, EXPIRY_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        let Some(coordinator) = coordinator.upgrade() else {
            return;
        };
        let expired = expired_groups(&coordinator, &meta, crate::handlers::now_ms());
        drop(coordinator);
        if expired.is_empty() {
            continue;
        }
        tracing::info!(groups = ?expired, "committed offsets of empty groups expired");
        if let Err(error) = meta
            .propose(Command::DeleteGroups { groups: expired })
            .await
        {
            tracing::warn!(%error, "expiring group offsets failed; retrying later");
        }
    }
}

fn expired_groups(coordinator: &Coordinator, meta: &MetadataClient, now_ms: i64) -> Vec<String> {
    let retention_ms =
        i64::try_from(coordinator.config.offsets_retention.as_millis()).unwrap_or(i64::MAX);
    let state = meta.state();
    let groups = coordinator.groups();
    state
        .group_offsets
        .iter()
        .filter(|(name, _)| groups.get(*name).is_none_or(Group::is_empty))
        .filter(|(_, offsets)| {
            offsets
                .newest_commit_ms()
                .is_some_and(|newest| now_ms.saturating_sub(newest) > retention_ms)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use metadata::{
        CommittedOffset, MetadataNode, MetadataOptions, OffsetCommitEntry, TopicPartition,
    };
    use tokio::sync::oneshot;

    use super::group::JoinRequest;
    use super::*;

    const MINUTE_MS: i64 = 60_000;

    async fn node(dir: &tempfile::TempDir) -> MetadataNode {
        MetadataNode::start(MetadataOptions {
            dir: dir.path().join("meta"),
            node_id: 1,
            snapshot_every: 1000,
            fsync: false,
            journal: None,
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn offsets_of_empty_groups_expire_after_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let node = node(&dir).await;
        let meta = node.client();
        let topic_id = uuid::Uuid::from_u128(1);
        meta.propose(Command::CreateTopic {
            name: "t".into(),
            topic_id,
            partitions: 1,
            configs: BTreeMap::new(),
            owner: 1,
            now_ms: 0,
        })
        .await
        .unwrap();
        let commit = |group: &str, commit_ms: i64| OffsetCommitEntry {
            group: group.into(),
            tp: TopicPartition {
                topic_id,
                partition: 0,
            },
            committed: CommittedOffset {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_ms,
            },
        };
        let now = 100 * MINUTE_MS;
        let config = CoordinatorConfig {
            offsets_retention: Duration::from_secs(10 * 60),
            ..CoordinatorConfig::default()
        };
        let coordinator = Coordinator::start(config, meta.clone());
        for (group, age) in [("old-empty", 11), ("recent", 9), ("old-active", 11)] {
            coordinator
                .committer
                .commit(vec![commit(group, now - age * MINUTE_MS)])
                .await
                .unwrap();
        }
        // "old-active" has a member: its offsets never expire while it does.
        let (reply, _answer) = oneshot::channel();
        coordinator.with_group("old-active", |group| {
            group.join(
                JoinRequest {
                    member_id: String::new(),
                    group_instance_id: None,
                    client_id: "c".into(),
                    client_host: String::new(),
                    session_timeout: Duration::from_secs(10),
                    rebalance_timeout: Duration::from_secs(10),
                    protocol_type: "consumer".into(),
                    protocols: vec![("range".into(), Bytes::new())],
                    require_known_member_id: false,
                },
                Instant::now(),
                reply,
            )
        });
        assert_eq!(
            expired_groups(&coordinator, &meta, now),
            vec!["old-empty".to_string()]
        );
        node.shutdown().await.unwrap();
    }
}
