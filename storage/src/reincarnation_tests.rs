//! A WAL object that cannot be stored: the store tombstones its seq itself, fails that object's
//! batches and the later ones (retriable), and continues under a new incarnation — no hole in the
//! offsets, no acknowledged offset reused, nothing of the failed batches ever visible. Paused
//! time, an in-memory index and a simulated bucket (see `takeover_tests`).

use std::time::Duration;

use metadata::{MetadataState, TopicPartition};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use uuid::Uuid;

use crate::object_wal_tests::{object_mode, produce, read_all, shared_parts, tp};
use crate::store_tests::{append_one, sequenced};
use crate::test_support::{
    simple_batch, stored, wait_for_state, wait_until, within, Harness, SimStore,
};
use crate::wal_object;
use crate::{Error, StorageOptions, TimestampType};

const GIVE_UP: Duration = Duration::from_secs(2);

fn give_up_soon(opts: &mut StorageOptions) {
    object_mode(opts);
    if let Some(wal) = &mut opts.object_wal {
        wal.lanes = 1;
        wal.put_give_up = GIVE_UP;
    }
}

fn live_incarnations(state: &MetadataState) -> Vec<Uuid> {
    state
        .incarnations
        .iter()
        .filter(|(_, inc)| inc.live)
        .map(|(id, _)| *id)
        .collect()
}

/// The stored form of `batch` at `base_offset` under `epoch`.
fn stored_at(batch: &bytes::BytesMut, base_offset: i64, epoch: i32) -> Vec<u8> {
    let mut bytes = stored(batch, base_offset);
    crate::batch::set_partition_leader_epoch(&mut bytes, epoch);
    bytes
}

#[tokio::test(start_paused = true)]
async fn an_object_that_cannot_be_stored_is_tombstoned_and_the_store_continues_under_a_new_incarnation(
) {
    let (_memory, meta, bucket) = shared_parts();
    let sim = SimStore::faulty(bucket.clone());
    let a = Harness::start_shared(meta.clone(), sim.clone(), give_up_soon).await;
    let topic = a.create_topic("t", 2).await;
    let tps: Vec<TopicPartition> = (0..2).map(|p| tp(topic, p)).collect();
    let mut expected = produce(&a, &tps, 4).await;
    let first = live_incarnations(&meta.state());
    assert_eq!(first.len(), 1);
    let first = first[0];

    // The bucket takes no more data objects: the next object is given up after `GIVE_UP`.
    sim.hold_data_puts(true);
    let mut doomed = Vec::new();
    for tp in &tps {
        doomed.push(
            a.store
                .submit_append(*tp, simple_batch(2, 30, 5), TimestampType::CreateTime)
                .await,
        );
    }
    for ticket in doomed {
        let outcome = ticket.await;
        // Retriable for a Kafka client (KAFKA_STORAGE_ERROR), never an ack.
        assert!(matches!(outcome, Err(Error::Wal(_))), "{outcome:?}");
    }
    sim.hold_data_puts(false);

    // A new incarnation of the same node serves; the old one is retired and sealed at the seq
    // it gave up, with its own tombstone.
    wait_for_state(&meta, "a new incarnation", |state| {
        live_incarnations(state).iter().any(|id| *id != first)
            && state.incarnations[&first].sealed.is_some()
    })
    .await;
    let state = meta.state();
    let old = &state.incarnations[&first];
    assert!(!old.live);
    let seal = old.sealed.as_ref().expect("sealed")[0];
    let key = wal_object::object_key("test-cluster", first, 0, seal);
    let stone = bucket
        .get(&ObjectPath::from(key.as_str()))
        .await
        .expect("the given-up seq holds an object")
        .bytes()
        .await
        .expect("read");
    let manifest = wal_object::parse(&stone).expect("manifest");
    assert_eq!(manifest.sealed_by, Some(first), "tombstoned by itself");
    assert!(manifest.entries.is_empty());
    assert_eq!(a.store.object_wal_stats().expect("stats").given_up, 1);
    assert!(a.store.wal_sealed().is_none(), "not a zombie: it serves");

    // Appends continue right after the last acknowledged batch (the failed batches' offsets are
    // assigned again: no hole), under the bumped epoch.
    let epoch = state.partition(tps[0]).expect("partition").leader_epoch;
    assert!(epoch >= 1);
    for (p, tp) in tps.iter().enumerate() {
        let batch = simple_batch(1, 40, 7);
        let next = append_one(&a, *tp, &batch).await.expect("append after");
        assert_eq!(next, 12, "partition {p}");
        expected[p].push(stored_at(&batch, next, epoch));
    }
    for (p, tp) in tps.iter().enumerate() {
        assert_eq!(read_all(&a, *tp).await, expected[p], "partition {p} on A");
    }

    // A broker started on the same index and bucket reads exactly the same: nothing of the
    // given-up object, nothing lost.
    let b =
        Harness::start_shared(meta.clone(), SimStore::faulty(bucket.clone()), give_up_soon).await;
    for (p, tp) in tps.iter().enumerate() {
        assert_eq!(read_all(&b, *tp).await, expected[p], "partition {p} on B");
    }
    b.stop().await;
    a.stop().await;
}

/// Idempotent producers keep their sequences across the change of incarnation: a retry of a batch
/// acknowledged before it is answered with its original offset, a retry of the failed one is
/// written (once), and the sequence continues.
#[tokio::test(start_paused = true)]
async fn producer_state_survives_a_new_incarnation() {
    let (_memory, meta, bucket) = shared_parts();
    let sim = SimStore::faulty(bucket.clone());
    let a = Harness::start_shared(meta.clone(), sim.clone(), give_up_soon).await;
    let topic = a.create_topic("idem", 1).await;
    let p = tp(topic, 0);
    let acked: Vec<_> = (0..3).map(|i| sequenced(7, 0, i * 2, 2)).collect();
    for (i, batch) in acked.iter().enumerate() {
        assert_eq!(append_one(&a, p, batch).await.unwrap(), i as i64 * 2);
    }
    sim.hold_data_puts(true);
    let failed = sequenced(7, 0, 6, 2);
    assert!(matches!(
        append_one(&a, p, &failed).await,
        Err(Error::Wal(_))
    ));
    sim.hold_data_puts(false);
    wait_until(
        Duration::from_secs(60),
        "appends accepted again",
        || async {
            !matches!(
                a.store.offsets(p),
                Err(Error::ShuttingDown | Error::NotLeader { .. })
            )
        },
    )
    .await;
    assert_eq!(append_one(&a, p, &acked[2]).await.unwrap(), 4, "a retry");
    assert_eq!(append_one(&a, p, &failed).await.unwrap(), 6, "written once");
    assert_eq!(append_one(&a, p, &failed).await.unwrap(), 6, "then a retry");
    assert!(matches!(
        append_one(&a, p, &sequenced(7, 0, 12, 1)).await,
        Err(Error::OutOfOrderSequence {
            expected: 8,
            got: 12
        })
    ));
    assert_eq!(a.store.offsets(p).unwrap().high_watermark, 8);
    a.stop().await;
}

/// A zombie whose object cannot be stored does not come back under a new incarnation when
/// another start took its node over meanwhile: the conditional registration is refused and it
/// stops (fenced), leaving the taker live.
#[tokio::test(start_paused = true)]
async fn a_zombie_that_gives_up_an_object_is_fenced_not_reincarnated() {
    let (_memory, meta, bucket) = shared_parts();
    let sim = SimStore::faulty(bucket.clone());
    let a = Harness::start_shared(meta.clone(), sim.clone(), give_up_soon).await;
    let topic = a.create_topic("t", 1).await;
    let p = tp(topic, 0);
    let expected = produce(&a, &[p], 3).await;
    let first = live_incarnations(&meta.state())[0];

    // A's data PUTs hang (a network partition between A and the bucket). B starts: it registers
    // (retiring A's incarnation), then its own bucket requests are held before it seals A's lane.
    sim.hold_data_puts(true);
    let stuck = a
        .store
        .submit_append(p, simple_batch(1, 10, 1), TimestampType::CreateTime)
        .await;
    let b_sim = SimStore::faulty(bucket.clone());
    b_sim.set_open(false);
    let b_start = tokio::spawn(Harness::start_shared(
        meta.clone(),
        b_sim.clone(),
        give_up_soon,
    ));
    wait_for_state(&meta, "B to register", |state| {
        !live_incarnations(state).contains(&first)
    })
    .await;
    let taker = live_incarnations(&meta.state());
    assert_eq!(taker.len(), 1);

    // A gives its object up and tombstones the seq itself, but may not come back: B took over.
    assert!(stuck.await.is_err(), "a zombie acknowledged");
    within("A to stop as fenced", a.store.wait_wal_sealed()).await;
    assert_eq!(live_incarnations(&meta.state()), taker, "B is still live");
    sim.hold_data_puts(false);
    // B completes its takeover (A's own tombstone is the seal) and serves what A acknowledged.
    b_sim.set_open(true);
    let b = b_start.await.expect("B starts");
    assert_eq!(read_all(&b, p).await, expected[0]);
    let next = append_one(&b, p, &simple_batch(1, 10, 2)).await.unwrap();
    assert_eq!(next, 9);
    b.stop().await;
    a.stop().await;
}
