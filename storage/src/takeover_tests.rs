//! Takeover of S3-WAL lanes: two or more brokers' storage against one in-memory index and one
//! simulated bucket, in one process, under paused time. The bucket completes PUTs out of order,
//! stores-then-errors and answers 409 with nothing stored; a broker is "paused" by holding every
//! request of its bucket client, as a SIGSTOPped process would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use metadata::{MetadataClient, MetadataState, TopicPartition};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::object_wal_tests::{
    object_mode, produce, read_all, shared_parts, shared_parts_with_timeout, tp,
};
use crate::test_support::{simple_batch, within, Harness, SimStore};
use crate::wal_object::{self, Manifest};
use crate::{AppendTicket, Error, TimestampType};

/// A broker whose bucket client never fails (deterministic schedules).
fn calm(bucket: &Arc<dyn ObjectStore>, seed: u64) -> Arc<SimStore> {
    let mut store = SimStore::new(bucket.clone(), seed);
    Arc::get_mut(&mut store)
        .expect("fresh store")
        .stored_then_error = 0;
    store.set_conflicts(0);
    store
}

/// (incarnation, lane, seq) of a WAL object key of the lane layout.
fn lane_position(key: &str) -> Option<(Uuid, u32, u64)> {
    let mut parts = key.rsplit('/');
    let seq = parts.next()?.parse().ok()?;
    let lane = parts.next()?.parse().ok()?;
    let incarnation = Uuid::parse_str(parts.next()?).ok()?;
    Some((incarnation, lane, seq))
}

/// Nothing at or above a seal is in the index.
fn assert_nothing_indexed_at_or_above_a_seal(state: &MetadataState) {
    for topic in state.topics.values() {
        for pm in &topic.partitions {
            for segment in &pm.segments {
                let Some((incarnation, lane, seq)) = lane_position(&segment.key) else {
                    continue;
                };
                if let Some(seals) = state
                    .incarnations
                    .get(&incarnation)
                    .and_then(|inc| inc.sealed.as_ref())
                {
                    assert!(
                        seq < seals[lane as usize],
                        "{} is indexed but lane {lane} is sealed at {}",
                        segment.key,
                        seals[lane as usize]
                    );
                }
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_zombie_resumed_after_a_takeover_acknowledges_nothing_more_and_loses_nothing() {
    let (_memory, meta, bucket) = shared_parts();
    let store_a = calm(&bucket, 1);
    let a = Harness::start_shared(meta.clone(), store_a.clone(), object_mode).await;
    let topic = a.create_topic("t", 3).await;
    let tps: Vec<TopicPartition> = (0..3).map(|p| tp(topic, p)).collect();
    let expected = produce(&a, &tps, 10).await;

    // A is paused with appends in flight: their objects are cut, their PUTs held.
    store_a.set_open(false);
    let mut in_flight = Vec::new();
    for tp in &tps {
        in_flight.push(
            a.store
                .submit_append(*tp, simple_batch(2, 50, 9), TimestampType::CreateTime)
                .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // B starts on the same index and bucket: it seals A's lanes and serves all A acknowledged.
    let b = Harness::start_shared(meta.clone(), calm(&bucket, 2), object_mode).await;
    for (p, tp) in tps.iter().enumerate() {
        assert_eq!(read_all(&b, *tp).await, expected[p], "partition {p}");
    }

    // A resumes: its held creates meet the seals; nothing more is acknowledged.
    store_a.set_open(true);
    for ticket in in_flight {
        let outcome = ticket.await;
        assert!(outcome.is_err(), "a zombie acknowledged {outcome:?}");
    }
    within("A to learn it is sealed", a.store.wait_wal_sealed()).await;
    let late = a
        .store
        .append(tps[0], simple_batch(1, 5, 1), TimestampType::CreateTime)
        .await;
    assert!(
        matches!(late, Err(Error::ShuttingDown | Error::Wal(_))),
        "{late:?}"
    );

    // B continues right after what A acknowledged; nothing above a seal became visible.
    let next = b
        .store
        .append(tps[1], simple_batch(1, 5, 1), TimestampType::CreateTime)
        .await
        .expect("append on B");
    assert_eq!(next.base_offset, 30);
    assert_nothing_indexed_at_or_above_a_seal(&meta.state());
    for (p, tp) in tps.iter().enumerate() {
        assert_eq!(
            read_all(&b, *tp).await[..10],
            expected[p][..],
            "partition {p}"
        );
    }
    b.stop().await;
    a.stop().await;
}

/// Writes a WAL object of the lane layout straight into the bucket.
async fn put_object(bucket: &Arc<dyn ObjectStore>, manifest: &Manifest) {
    let key = wal_object::object_key(
        "test-cluster",
        manifest.incarnation,
        manifest.lane,
        manifest.seq,
    );
    bucket
        .put(
            &ObjectPath::from(key.as_str()),
            PutPayload::from_bytes(wal_object::manifest_tail(manifest)),
        )
        .await
        .expect("put");
}

fn empty_object(incarnation: Uuid, lane: u32, seq: u64, sealed_by: Option<Uuid>) -> Manifest {
    Manifest {
        incarnation,
        lane,
        seq,
        sealed_by,
        entries: Vec::new(),
    }
}

/// Registers a dead incarnation (`lanes` lanes) and a newer one of the same node.
async fn dead_incarnation(meta: &MetadataClient, lanes: u32) -> Uuid {
    let dead = Uuid::new_v4();
    for id in [dead, Uuid::new_v4()] {
        meta.propose(metadata::Command::RegisterIncarnation {
            incarnation: id,
            node_id: crate::test_support::NODE,
            lanes,
            now_ms: 0,
            successor_of: None,
        })
        .await
        .expect("register");
    }
    dead
}

#[tokio::test(start_paused = true)]
async fn a_taker_reuses_a_seal_and_refuses_a_missing_object_below_one() {
    let (_memory, meta, bucket) = shared_parts();
    let dead = dead_incarnation(&meta, 2).await;
    let earlier_taker = Uuid::new_v4();
    // Lane 0: 1, 2 stored, a seal at 3 left by a taker that died before recording it.
    // Lane 1: 1 stored, 2 missing, a seal at 3: what the zombie may have acknowledged at 2 is gone.
    for manifest in [
        empty_object(dead, 0, 1, None),
        empty_object(dead, 0, 2, None),
        empty_object(dead, 0, 3, Some(earlier_taker)),
        empty_object(dead, 1, 1, None),
        empty_object(dead, 1, 3, Some(earlier_taker)),
    ] {
        put_object(&bucket, &manifest).await;
    }
    let opened = crate::LogStore::open(
        {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut opts = crate::StorageOptions::new(dir.keep().join("data"), 1, "test-cluster");
            object_mode(&mut opts);
            opts
        },
        bucket.clone(),
        meta.clone(),
    )
    .await;
    let err = opened.err().expect("the start must fail");
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "lane 1 of incarnation {dead} has no object at seq 2"
        )),
        "{message}"
    );
    // Nothing was recorded as sealed; the bucket still holds every object.
    assert!(meta.state().incarnations[&dead].sealed.is_none());

    // With the missing object back, a taker reuses both seals.
    put_object(&bucket, &empty_object(dead, 1, 2, None)).await;
    let b = Harness::start_shared(meta.clone(), bucket.clone(), object_mode).await;
    assert_eq!(
        meta.state().incarnations[&dead].sealed,
        Some(vec![3, 3]),
        "the earlier seals are reused"
    );
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_create_that_loses_to_the_zombies_object_indexes_it() {
    let (_memory, meta, bucket) = shared_parts();
    let store_a = calm(&bucket, 3);
    let a = Harness::start_shared(meta.clone(), store_a.clone(), |opts| {
        object_mode(opts);
        if let Some(wal) = &mut opts.object_wal {
            wal.lanes = 1;
        }
    })
    .await;
    let topic = a.create_topic("t", 1).await;
    let tp0 = tp(topic, 0);
    let expected = produce(&a, &[tp0], 3).await;
    // B's bucket client answers its first create with 409 (nothing stored): it must read the key
    // and, finding nothing there, create the seal again.
    let mut store_b = SimStore::new(bucket.clone(), 4);
    Arc::get_mut(&mut store_b).expect("fresh").stored_then_error = 0;
    store_b.set_conflicts(1000);
    let b_opened = tokio::spawn({
        let meta = meta.clone();
        let store_b = store_b.clone();
        async move { Harness::start_shared(meta, store_b, object_mode).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !b_opened.is_finished(),
        "a 409 with nothing stored is not a seal"
    );
    // Meanwhile the zombie's next object lands at the very seq B wants to seal.
    a.store
        .append(tp0, simple_batch(1, 7, 2), TimestampType::CreateTime)
        .await
        .expect("A's object lands before the seal");
    store_b.set_conflicts(0);
    let b = b_opened.await.expect("B opened");
    let mut read = read_all(&b, tp0).await;
    assert_eq!(read.len(), 4, "B indexed the object that won the race");
    read.truncate(3);
    assert_eq!(read, expected[0]);
    b.stop().await;
    a.stop().await;
}

/// What a schedule did to one partition: batches acknowledged (base offset → batch with the
/// epoch field cleared).
type Acked = BTreeMap<(TopicPartition, i64), Vec<u8>>;

fn without_epoch(batch: &[u8]) -> Vec<u8> {
    let mut bytes = batch.to_vec();
    bytes[12..16].copy_from_slice(&[0; 4]);
    bytes
}

fn retriable(error: &Error) -> bool {
    matches!(
        error,
        Error::ShuttingDown | Error::TimedOut | Error::Wal(_) | Error::Metadata(_)
    )
}

/// One random schedule of appends, pauses, takeovers and zombie resumes.
async fn run_schedule(seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_memory, meta, bucket) = shared_parts();
    let lanes = rng.random_range(1..=3);
    let configure = move |opts: &mut crate::StorageOptions| {
        object_mode(opts);
        if let Some(wal) = &mut opts.object_wal {
            wal.lanes = lanes;
            wal.max_inflight_puts = 3;
            // Sweeps run throughout: the read-back below also shows they delete nothing read.
            wal.sweep_interval = Duration::from_millis(100);
        }
    };
    let mut stores = vec![SimStore::new(bucket.clone(), seed)];
    let mut brokers = vec![Harness::start_shared(meta.clone(), stores[0].clone(), configure).await];
    let topic = brokers[0].create_topic("t", 4).await;
    let tps: Vec<TopicPartition> = (0..4).map(|p| tp(topic, p)).collect();
    let mut tickets: Vec<(TopicPartition, BytesMut, AppendTicket)> = Vec::new();
    for _step in 0..60 {
        let current = brokers.len() - 1;
        match rng.random_range(0..100) {
            0..60 => {
                for _ in 0..rng.random_range(1..6) {
                    let tp = tps[rng.random_range(0..tps.len())];
                    let batch = simple_batch(rng.random_range(1..4), rng.random_range(1..200), 7);
                    let broker = if rng.random_bool(0.15) {
                        // A zombie keeps trying too.
                        rng.random_range(0..brokers.len())
                    } else {
                        current
                    };
                    let ticket = brokers[broker]
                        .store
                        .submit_append(tp, batch.clone(), TimestampType::CreateTime)
                        .await;
                    tickets.push((tp, batch, ticket));
                }
            }
            60..80 => {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
            }
            80..90 if brokers.len() < 5 => {
                // The current broker is paused; a new one takes over.
                stores[current].set_open(false);
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
                let store = SimStore::new(bucket.clone(), seed.wrapping_add(brokers.len() as u64));
                brokers.push(Harness::start_shared(meta.clone(), store.clone(), configure).await);
                stores.push(store);
            }
            _ => {
                // A paused broker (a zombie, if another took over) resumes.
                stores[rng.random_range(0..stores.len())].set_open(true);
            }
        }
    }
    for store in &stores {
        store.set_open(true);
    }
    let mut acked = Acked::new();
    for (tp, batch, ticket) in tickets {
        match ticket.await {
            Ok(result) => {
                let mut stored = batch.to_vec();
                crate::batch::set_base_offset(&mut stored, result.base_offset);
                let previous = acked.insert((tp, result.base_offset), without_epoch(&stored));
                assert!(
                    previous.is_none(),
                    "seed {seed}: offset {} of {tp:?} acknowledged twice",
                    result.base_offset
                );
            }
            Err(error) => assert!(retriable(&error), "seed {seed}: non-retriable {error:?}"),
        }
    }
    let current = brokers.last().expect("a broker");
    for tp in &tps {
        let batches = read_all(current, *tp).await;
        let mut next = 0i64;
        let mut by_offset = BTreeMap::new();
        for bytes in &batches {
            let header = crate::batch::BatchHeader::parse(bytes).expect("header");
            assert_eq!(
                header.base_offset, next,
                "seed {seed}: offsets of {tp:?} not dense"
            );
            next = header.last_offset() + 1;
            by_offset.insert(header.base_offset, without_epoch(bytes));
        }
        for ((acked_tp, offset), bytes) in acked.range((*tp, i64::MIN)..=(*tp, i64::MAX)) {
            assert_eq!(acked_tp, tp);
            assert_eq!(
                by_offset.get(offset),
                Some(bytes),
                "seed {seed}: acknowledged batch at {offset} of {tp:?} is not readable"
            );
        }
    }
    assert_nothing_indexed_at_or_above_a_seal(&meta.state());
    for broker in brokers {
        broker.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn random_takeover_schedules_lose_no_acknowledged_batch() {
    let base: u64 = std::env::var("SLUICE_SIM_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random);
    println!("simulation seed {base} (rerun with SLUICE_SIM_SEED={base})");
    for round in 0..16 {
        run_schedule(base.wrapping_add(round)).await;
    }
}

/// An index commit that is not persisted does not refuse appends (nothing is poisoned): acks go
/// on while metadata is stuck — up to the lane's unindexed bound, then producers wait — and once
/// metadata is back everything is indexed.
#[tokio::test(start_paused = true)]
async fn stuck_metadata_neither_stops_acks_nor_poisons_a_partition() {
    let (memory, meta, bucket) = shared_parts_with_timeout(Duration::from_secs(2));
    let a = Harness::start_shared(meta.clone(), bucket.clone(), |opts| {
        object_mode(opts);
        if let Some(wal) = &mut opts.object_wal {
            wal.lanes = 1;
            wal.max_unindexed_objects = 8;
        }
    })
    .await;
    let topic = a.create_topic("t", 2).await;
    let tps: Vec<TopicPartition> = (0..2).map(|p| tp(topic, p)).collect();
    memory.hold_durability(true);
    // Acknowledged while no index change can be persisted, well past the persist timeout.
    let expected = produce(&a, &tps, 3).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let more = a
        .store
        .append(tps[0], simple_batch(1, 10, 3), TimestampType::CreateTime)
        .await
        .expect("acknowledged with metadata stuck for 10 s");
    assert_eq!(more.base_offset, 9);
    // Beyond the bound producers wait instead of growing the unindexed tail.
    let mut waiting = Vec::new();
    for i in 0..40 {
        waiting.push(
            a.store
                .submit_append(tps[1], simple_batch(1, 10, i), TimestampType::CreateTime)
                .await,
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stuck = waiting
        .iter()
        .filter(|ticket| !ticket.is_finished())
        .count();
    assert!(stuck > 0, "the unindexed bound did not hold producers back");
    memory.hold_durability(false);
    for ticket in waiting {
        ticket.await.expect("acknowledged once metadata is back");
    }
    a.wait_for_state("everything indexed", |state| {
        let end = |tp| state.partition(tp).map(|pm| pm.segmented_end());
        end(tps[0]) == Some(10) && end(tps[1]) == Some(49)
    })
    .await;
    assert_eq!(read_all(&a, tps[0]).await[..3], expected[0][..]);
    a.stop().await;
}

/// Metadata for one broker whose index commits (`AddSegments`) can be held, as when its process is
/// paused right after an ack: everything else goes straight through to the shared metadata.
struct HeldIndex {
    inner: MetadataClient,
    open: tokio::sync::watch::Sender<bool>,
}

impl metadata::MetadataBackend for HeldIndex {
    fn propose(
        &self,
        cmd: metadata::Command,
    ) -> futures::future::BoxFuture<'_, metadata::Result<metadata::CommandResponse>> {
        Box::pin(async move {
            if matches!(cmd, metadata::Command::AddSegments { .. }) {
                let _ = self.open.subscribe().wait_for(|open| *open).await;
            }
            self.inner.propose(cmd).await
        })
    }

    fn sync(&self) -> futures::future::BoxFuture<'_, metadata::Result<()>> {
        Box::pin(self.inner.sync())
    }

    fn state(&self) -> Arc<MetadataState> {
        self.inner.state()
    }

    fn durable_state(
        &self,
    ) -> futures::future::BoxFuture<'_, metadata::Result<Arc<MetadataState>>> {
        Box::pin(self.inner.durable_state())
    }

    fn wait_fenced(&self) -> futures::future::BoxFuture<'_, String> {
        Box::pin(self.inner.fenced())
    }

    fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.watch()
    }
}

/// Idempotent batches A acknowledged but never indexed come back as producer state on the taker:
/// a retry of one is answered with its original offset, the next sequence continues after them.
#[tokio::test(start_paused = true)]
async fn producer_state_after_a_takeover_includes_the_indexed_tail() {
    use crate::store_tests::{append_one, sequenced};
    let (_memory, meta, bucket) = shared_parts();
    let held = Arc::new(HeldIndex {
        inner: meta.clone(),
        open: tokio::sync::watch::channel(false).0,
    });
    let a = Harness::start_shared(
        MetadataClient::new(held.clone()),
        bucket.clone(),
        object_mode,
    )
    .await;
    let topic = a.create_topic("idem", 1).await;
    let p = tp(topic, 0);
    let batches: Vec<BytesMut> = (0..3).map(|i| sequenced(7, 0, i * 2, 2)).collect();
    for (i, batch) in batches.iter().enumerate() {
        assert_eq!(append_one(&a, p, batch).await.unwrap(), i as i64 * 2);
    }
    assert_eq!(a.segmented_end(p), 0, "A's index commits are held");

    let b = Harness::start_shared(meta.clone(), bucket.clone(), object_mode).await;
    assert_eq!(b.segmented_end(p), 6, "B indexed A's tail");
    assert_eq!(b.store.offsets(p).unwrap().high_watermark, 6);
    assert_eq!(append_one(&b, p, &batches[1]).await.unwrap(), 2, "a retry");
    assert!(matches!(
        append_one(&b, p, &sequenced(7, 0, 9, 1)).await,
        Err(Error::OutOfOrderSequence {
            expected: 6,
            got: 9
        })
    ));
    assert_eq!(append_one(&b, p, &sequenced(7, 0, 6, 1)).await.unwrap(), 6);
    // A's held commits, released now, are refused: B owns the partition at a newer epoch.
    held.open.send_replace(true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.segmented_end(p), 7);
    b.stop().await;
    a.stop().await;
}

/// DeleteRecords past acknowledged chunks that are not indexed yet: once their index commit goes
/// through they are settled (nothing to index), the lane's mark moves on, and later appends are
/// indexed as usual — nothing is left out, nothing freezes.
#[tokio::test(start_paused = true)]
async fn delete_records_past_unindexed_chunks_settles_them() {
    let (_memory, meta, bucket) = shared_parts();
    let held = Arc::new(HeldIndex {
        inner: meta.clone(),
        open: tokio::sync::watch::channel(false).0,
    });
    let a = Harness::start_shared(MetadataClient::new(held.clone()), bucket.clone(), |opts| {
        object_mode(opts);
        if let Some(wal) = &mut opts.object_wal {
            wal.lanes = 1;
        }
    })
    .await;
    let topic = a.create_topic("t", 1).await;
    let p = tp(topic, 0);
    produce(&a, &[p], 4).await;
    assert_eq!(a.store.delete_records(p, 12).await.unwrap(), 12);
    held.open.send_replace(true);
    let more = produce_after(&a, p, 12).await;
    a.wait_for_state("indexed", |state| {
        state
            .partition(p)
            .is_some_and(|pm| pm.segmented_end() == 15)
    })
    .await;
    let state = meta.state();
    let incarnation = state
        .incarnations
        .values()
        .find(|inc| inc.live)
        .expect("A's incarnation");
    assert!(incarnation.indexed_through[0] >= 2, "{incarnation:?}");
    let read = a.store.read(p, 12, 64 * 1024).await.expect("read");
    let batches: Vec<Vec<u8>> = read.batches.iter().map(|b| b.to_vec()).collect();
    assert_eq!(batches, vec![more]);
    a.stop().await;
}

/// One batch of 3 records appended at `expected` offset; its stored bytes.
async fn produce_after(h: &Harness, p: TopicPartition, expected: i64) -> Vec<u8> {
    let batch = simple_batch(3, 20, 5);
    let result = h
        .store
        .append(p, batch.clone(), TimestampType::CreateTime)
        .await
        .expect("append");
    assert_eq!(result.base_offset, expected);
    crate::test_support::stored(&batch, expected)
}

/// Keys under one incarnation's lanes: (lane, seq) → is a tombstone.
async fn lane_objects(
    bucket: &Arc<dyn ObjectStore>,
    incarnation: Uuid,
) -> BTreeMap<(u32, u64), bool> {
    use futures::TryStreamExt;
    let prefix = ObjectPath::from(format!("test-cluster/wal/{}", incarnation.as_simple()));
    let listed: Vec<object_store::ObjectMeta> = bucket
        .list(Some(&prefix))
        .try_collect()
        .await
        .expect("list");
    let mut out = BTreeMap::new();
    for meta in listed {
        let (_, lane, seq) = lane_position(meta.location.as_ref()).expect("a lane key");
        let bytes = bucket
            .get(&meta.location)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        let tombstone = wal_object::parse(&bytes)
            .expect("manifest")
            .sealed_by
            .is_some();
        out.insert((lane, seq), tombstone);
    }
    out
}

/// A zombie's creates above the seal land after the takeover; the taker's sweep deletes them and
/// keeps the seal (a tombstone) and every object the index references.
#[tokio::test(start_paused = true)]
async fn objects_above_a_seal_are_swept_and_the_seal_stays() {
    let (_memory, meta, bucket) = shared_parts();
    let one_lane = |opts: &mut crate::StorageOptions| {
        object_mode(opts);
        if let Some(wal) = &mut opts.object_wal {
            wal.lanes = 1;
            wal.sweep_interval = Duration::from_secs(5);
        }
    };
    let store_a = calm(&bucket, 5);
    let a = Harness::start_shared(meta.clone(), store_a.clone(), one_lane).await;
    let a_id = *meta
        .state()
        .incarnations
        .iter()
        .find(|(_, inc)| inc.live)
        .expect("A registered")
        .0;
    let topic = a.create_topic("t", 1).await;
    let p = tp(topic, 0);
    let expected = produce(&a, &[p], 3).await;
    a.wait_for_state("A indexed", |state| {
        state.partition(p).is_some_and(|pm| pm.segmented_end() == 9)
    })
    .await;
    // Three more objects cut while A is paused, all held: the first is where B will seal.
    let seal = meta.state().incarnations[&a_id].indexed_through[0] + 1;
    store_a.set_open(false);
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(
            a.store
                .submit_append(p, simple_batch(1, 10, i), TimestampType::CreateTime)
                .await,
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let b = Harness::start_shared(meta.clone(), calm(&bucket, 6), one_lane).await;
    assert_eq!(meta.state().incarnations[&a_id].sealed, Some(vec![seal]));
    store_a.set_open(true);
    for ticket in held {
        assert!(ticket.await.is_err(), "a zombie acknowledged");
    }
    let before = lane_objects(&bucket, a_id).await;
    assert_eq!(before.get(&(0, seal)), Some(&true), "the seal: {before:?}");
    assert!(
        before.keys().any(|&(_, seq)| seq > seal),
        "the zombie's creates above the seal landed: {before:?}"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = lane_objects(&bucket, a_id).await;
    assert_eq!(
        after.keys().copied().collect::<Vec<_>>(),
        (1..=seal).map(|seq| (0, seq)).collect::<Vec<_>>(),
        "indexed objects and the seal stay, everything above goes"
    );
    assert_eq!(read_all(&b, p).await, expected[0]);
    b.stop().await;
    a.stop().await;
}
