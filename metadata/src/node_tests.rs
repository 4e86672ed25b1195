//! End-to-end tests of a metadata node on a real directory: every command through Raft, restart
//! with log replay, restart through a snapshot and a purged log, `watch`, shutdown.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use uuid::Uuid;

use crate::{
    Command, CommandResponse, Error, MetadataClient, MetadataNode, MetadataOptions, Rejection,
    SegmentRef, TopicPartition,
};

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

pub(crate) const NOW: i64 = 1_700_000_000_000;

/// The longest any wait in these tests may take: a guard against a hang, not a guess at how fast
/// the machine is (every wait it bounds ends on an event).
pub(crate) const HANG_GUARD: Duration = Duration::from_secs(120);

pub(crate) fn options(dir: &Path, snapshot_every: u64) -> MetadataOptions {
    MetadataOptions {
        dir: dir.to_path_buf(),
        node_id: 1,
        snapshot_every,
        fsync: true,
        journal: None,
    }
}

fn segment(key: &str, base: i64, end: i64) -> SegmentRef {
    SegmentRef {
        key: key.to_owned(),
        base_offset: base,
        end_offset: end,
        data_start: 0,
        data_len: 64,
        min_timestamp: NOW,
        max_timestamp: NOW,
        footer_len: 0,
        producer_batches: false,
        created_ms: NOW,
    }
}

async fn propose(client: &MetadataClient, command: Command) -> Result<CommandResponse, Error> {
    client.propose(command).await
}

fn create_topic(name: &str, topic_id: Uuid, partitions: u32) -> Command {
    Command::CreateTopic {
        name: name.to_owned(),
        topic_id,
        partitions,
        configs: BTreeMap::new(),
        owner: 1,
        now_ms: NOW,
    }
}

/// Exercises every command through Raft and checks the answers.
pub(crate) async fn workload(client: &MetadataClient) -> TestResult {
    let orders = Uuid::from_u128(1);
    let audit = Uuid::from_u128(2);
    let scratch = Uuid::from_u128(3);
    let init = Command::InitCluster {
        cluster_id: "cluster-a".into(),
    };
    assert_eq!(
        propose(client, init).await?,
        CommandResponse::ClusterId("cluster-a".into())
    );
    let register = Command::RegisterBroker {
        node_id: 1,
        host: "127.0.0.1".into(),
        port: 9092,
    };
    assert_eq!(
        propose(client, register).await?,
        CommandResponse::Incarnation(1)
    );
    assert_eq!(
        propose(client, create_topic("orders", orders, 3)).await?,
        CommandResponse::Ok
    );
    assert_eq!(
        propose(client, create_topic("audit", audit, 1)).await?,
        CommandResponse::Ok
    );
    assert_eq!(
        propose(client, create_topic("scratch", scratch, 1)).await?,
        CommandResponse::Ok
    );
    assert_eq!(
        propose(client, create_topic("orders", Uuid::from_u128(9), 1)).await?,
        CommandResponse::Rejected(Rejection::TopicExists)
    );
    let tp = TopicPartition {
        topic_id: orders,
        partition: 0,
    };
    for (key, base, end) in [("o0-a", 0, 10), ("o0-b", 10, 20), ("o0-c", 20, 30)] {
        let add = Command::AddSegment {
            tp,
            leader_epoch: 0,
            segment: segment(key, base, end),
        };
        assert_eq!(propose(client, add).await?, CommandResponse::Ok);
    }
    let gap = Command::AddSegment {
        tp,
        leader_epoch: 0,
        segment: segment("o0-x", 31, 40),
    };
    assert!(matches!(
        propose(client, gap).await?,
        CommandResponse::Rejected(Rejection::NonContiguousSegment(_))
    ));
    let advance = Command::AdvanceLogStart {
        leader_epoch: crate::UNCHECKED_EPOCH,
        tp,
        offset: 15,
        now_ms: NOW,
    };
    assert_eq!(
        propose(client, advance).await?,
        CommandResponse::LogStart(15)
    );
    let scratch_tp = TopicPartition {
        topic_id: scratch,
        partition: 0,
    };
    let add = Command::AddSegment {
        tp: scratch_tp,
        leader_epoch: 0,
        segment: segment("s-a", 0, 5),
    };
    assert_eq!(propose(client, add).await?, CommandResponse::Ok);
    let delete = Command::DeleteTopic {
        topic_id: scratch,
        now_ms: NOW,
    };
    assert_eq!(propose(client, delete).await?, CommandResponse::Ok);
    let forget = Command::ForgetDeletedObjects {
        keys: vec!["s-a".into()],
    };
    assert_eq!(propose(client, forget).await?, CommandResponse::Ok);
    let configs = BTreeMap::from([("retention.ms".to_owned(), "60000".to_owned())]);
    let set = Command::SetTopicConfigs {
        topic_id: audit,
        configs: configs.clone(),
    };
    assert_eq!(propose(client, set).await?, CommandResponse::Ok);
    let grow = Command::CreatePartitions {
        topic_id: audit,
        total: 4,
        owner: 1,
    };
    assert_eq!(propose(client, grow).await?, CommandResponse::Ok);
    let alloc = |count| Command::AllocateProducerIds { count };
    assert_eq!(
        propose(client, alloc(10)).await?,
        CommandResponse::ProducerIdStart(0)
    );
    assert_eq!(
        propose(client, alloc(5)).await?,
        CommandResponse::ProducerIdStart(10)
    );

    // Every answer above was given after the change was published.
    let state = client.state();
    assert_eq!(state.cluster_id, "cluster-a");
    assert_eq!(state.next_producer_id, 15);
    assert!(state.topic_by_name("scratch").is_none());
    let audit_meta = state.topic_by_name("audit").ok_or("audit missing")?;
    assert_eq!(
        (audit_meta.partitions.len(), &audit_meta.configs),
        (4, &configs)
    );
    let partition = state.partition(tp).ok_or("orders-0 missing")?;
    assert_eq!(partition.log_start_offset, 15);
    let keys: Vec<&str> = partition.segments.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, vec!["o0-b", "o0-c"]);
    assert_eq!(*state.deleted_objects, vec![("o0-a".to_owned(), NOW)]);
    Ok(())
}

#[tokio::test]
async fn restart_replays_the_log_to_the_same_state() -> TestResult {
    let dir = tempfile::tempdir()?;
    let node = MetadataNode::start(options(dir.path(), 10_000)).await?;
    let client = node.client();
    workload(&client).await?;
    let before = client.state();
    let applied_before = *client.watch().borrow();
    node.shutdown().await?;
    assert!(matches!(
        client
            .propose(Command::AllocateProducerIds { count: 1 })
            .await,
        Err(Error::ShuttingDown)
    ));

    let node = MetadataNode::start(options(dir.path(), 10_000)).await?;
    let client = node.client();
    assert_eq!(*client.state(), *before);
    assert!(*client.watch().borrow() >= applied_before);
    let (snapshot, purged) = node.inner.log_progress();
    assert_eq!(
        (snapshot, purged),
        (None, None),
        "this restart must come from the log alone"
    );

    // The restarted node keeps going from where it was: re-registration fences the old epoch.
    let register = Command::RegisterBroker {
        node_id: 1,
        host: "127.0.0.1".into(),
        port: 9092,
    };
    assert_eq!(
        client.propose(register).await?,
        CommandResponse::Incarnation(2)
    );
    let tp = TopicPartition {
        topic_id: Uuid::from_u128(1),
        partition: 0,
    };
    let stale = Command::AddSegment {
        tp,
        leader_epoch: 0,
        segment: segment("o0-d", 30, 40),
    };
    assert_eq!(
        client.propose(stale).await?,
        CommandResponse::Rejected(Rejection::StaleLeaderEpoch { got: 0, current: 1 })
    );
    let fresh = Command::AddSegment {
        tp,
        leader_epoch: 1,
        segment: segment("o0-d", 30, 40),
    };
    assert_eq!(client.propose(fresh).await?, CommandResponse::Ok);
    let alloc = Command::AllocateProducerIds { count: 1 };
    assert_eq!(
        client.propose(alloc).await?,
        CommandResponse::ProducerIdStart(15)
    );
    node.shutdown().await?;
    Ok(())
}

/// Waits until Raft reports a snapshot and a purge at or beyond `index` (woken by its metrics).
async fn wait_for_purge(node: &MetadataNode, index: u64) -> Result<(), String> {
    node.inner
        .wait_log_progress(HANG_GUARD, "a snapshot and a purge", |snapshot, purged| {
            snapshot >= Some(index) && purged >= Some(index)
        })
        .await
}

#[tokio::test]
async fn restart_goes_through_snapshot_and_purged_log() -> TestResult {
    let dir = tempfile::tempdir()?;
    let node = MetadataNode::start(options(dir.path(), 5)).await?;
    let client = node.client();
    workload(&client).await?;
    let tp = TopicPartition {
        topic_id: Uuid::from_u128(1),
        partition: 1,
    };
    for i in 0..40 {
        let seg = segment(&format!("o1-{i}"), i * 10, i * 10 + 10);
        let add = Command::AddSegment {
            tp,
            leader_epoch: 0,
            segment: seg,
        };
        assert_eq!(client.propose(add).await?, CommandResponse::Ok);
    }
    let applied = *client.watch().borrow();
    // Snapshots are taken every 5 entries, so one within the last 5 entries must exist.
    wait_for_purge(&node, applied.saturating_sub(5)).await?;
    let before = client.state();
    node.shutdown().await?;

    let snapshots: Vec<String> = std::fs::read_dir(dir.path().join("snapshots"))?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        snapshots.len(),
        1,
        "only the newest snapshot is kept: {snapshots:?}"
    );
    let bytes = std::fs::read(dir.path().join("snapshots").join(&snapshots[0]))?;
    let doc = crate::snapshot::decode(&bytes)?;
    assert_eq!(doc.format_version, 1);
    assert!(doc.last_applied.is_some_and(|p| p.index + 5 >= applied));

    let node = MetadataNode::start(options(dir.path(), 5)).await?;
    let client = node.client();
    assert_eq!(*client.state(), *before);
    let (snapshot, purged) = node.inner.log_progress();
    assert!(
        purged.is_some_and(|p| p > 0),
        "the log before the snapshot is gone: {purged:?}"
    );
    assert!(snapshot >= purged);
    let alloc = Command::AllocateProducerIds { count: 2 };
    assert_eq!(
        client.propose(alloc).await?,
        CommandResponse::ProducerIdStart(15)
    );
    node.shutdown().await?;

    // And once more, with the post-restart entries on top of the snapshot.
    let node = MetadataNode::start(options(dir.path(), 5)).await?;
    assert_eq!(node.client().state().next_producer_id, 17);
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn watch_fires_on_apply() -> TestResult {
    let dir = tempfile::tempdir()?;
    let node = MetadataNode::start(options(dir.path(), 10_000)).await?;
    let client = node.client();
    let mut watch = client.watch();
    let start = *watch.borrow_and_update();
    let waiter = tokio::spawn(async move {
        tokio::time::timeout(HANG_GUARD, watch.changed())
            .await
            .map(|r| r.is_ok())
    });
    let init = Command::InitCluster {
        cluster_id: "c".into(),
    };
    assert_eq!(
        client.propose(init).await?,
        CommandResponse::ClusterId("c".into())
    );
    assert_eq!(waiter.await?, Ok(true));
    let applied = *client.watch().borrow();
    assert!(
        applied > start,
        "applied index {applied} must move past {start}"
    );
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn oversized_commands_are_refused_before_replication() -> TestResult {
    let dir = tempfile::tempdir()?;
    let node = MetadataNode::start(options(dir.path(), 10_000)).await?;
    let client = node.client();
    let applied = *client.watch().borrow();
    let huge = "x".repeat(crate::MAX_COMMAND_BYTES);
    let command = Command::CreateTopic {
        name: "big".into(),
        topic_id: Uuid::from_u128(5),
        partitions: 1,
        configs: BTreeMap::from([("k".to_owned(), huge)]),
        owner: 1,
        now_ms: NOW,
    };
    assert!(matches!(
        client.propose(command).await?,
        CommandResponse::Rejected(Rejection::Invalid(_))
    ));
    assert_eq!(*client.watch().borrow(), applied);
    assert!(client.state().topics.is_empty());
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_directory_of_another_node_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let node = MetadataNode::start(options(dir.path(), 10_000)).await?;
    node.shutdown().await?;
    let mut other = options(dir.path(), 10_000);
    other.node_id = 2;
    match MetadataNode::start(other).await {
        Err(Error::Raft(message)) => assert!(message.contains("node 2"), "{message}"),
        Err(other) => return Err(format!("unexpected error {other}").into()),
        Ok(_) => return Err("node 2 must not start on node 1's directory".into()),
    }
    Ok(())
}

#[tokio::test]
async fn a_corrupt_snapshot_fails_the_start_without_panicking() -> TestResult {
    let dir = tempfile::tempdir()?;
    let node = MetadataNode::start(options(dir.path(), 10_000)).await?;
    node.shutdown().await?;
    let path = dir
        .path()
        .join("snapshots")
        .join("snapshot-00000000000000000001.json");
    std::fs::write(path, b"{\"format_version\": 1, \"state\": 42}")?;
    match MetadataNode::start(options(dir.path(), 10_000)).await {
        Err(Error::Io(error)) => assert!(error.to_string().contains("snapshot"), "{error}"),
        Err(other) => return Err(format!("unexpected error {other}").into()),
        Ok(_) => return Err("a corrupt snapshot must not be accepted".into()),
    }
    Ok(())
}
