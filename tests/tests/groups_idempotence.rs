//! Idempotent producers across a broker SIGKILL: librdkafka keeps producing while the broker is
//! killed and restarted; consuming everything afterwards finds every record exactly once, in
//! order. Then a raw-protocol client resends an already-acknowledged sequenced batch and gets its
//! original offset back — after a restart, so the producer state really was recovered.
//!
//! The broker gets a new port on every start, so clients talk to it through a small TCP proxy on
//! a fixed port that the broker advertises (`--advertised-kafka`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::consumer::Consumer as _;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_tests::clients::{self, produce_many};
use sluice_tests::wire::RawConnection;
use sluice_tests::{SluiceOptions, SluiceProcess};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const PARTITIONS: i32 = 3;
const RECORDS: usize = 30_000;

/// Forwards every accepted connection to the current target; connections made before a
/// retarget die with the old broker, as real connections would.
async fn proxy(listener: TcpListener, target: Arc<Mutex<String>>) {
    // Bounded by the test's life: the task is aborted at the end.
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let address = target.lock().unwrap_or_else(|e| e.into_inner()).clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(&address).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

fn sequenced_batch(producer_id: i64, epoch: i16, sequence: i32, values: &[&str]) -> Result<Bytes> {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: sequence + i as i32,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(value.to_string())),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .context("encoding batch")?;
    Ok(buf.freeze())
}

/// (error code, base offset) of producing `batch` to partition 0 of `topic`.
fn raw_produce(connection: &mut RawConnection, topic: &str, batch: Bytes) -> Result<(i16, i64)> {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let response = connection.request(&request, 9)?;
    let partition = &response.responses[0].partition_responses[0];
    Ok((partition.error_code, partition.base_offset))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_across_broker_sigkill_has_no_duplicates_or_gaps() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_address: SocketAddr = listener.local_addr()?;
    let options = SluiceOptions::default().arg("--advertised-kafka", proxy_address);
    let mut broker = SluiceProcess::start(options)?;
    let target = Arc::new(Mutex::new(broker.bootstrap()));
    let proxy_task: JoinHandle<()> = tokio::spawn(proxy(listener, target.clone()));
    let bootstrap = proxy_address.to_string();
    let topic = "idempotent-kill";
    clients::create_topic(&bootstrap, topic, PARTITIONS, &[]).await?;

    let producer: FutureProducer = clients::producer_config(&bootstrap)
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "2")
        .set("batch.num.messages", "200")
        .set("message.timeout.ms", "120000")
        .create()
        .context("creating idempotent producer")?;
    let values: Arc<Vec<String>> = Arc::new((0..RECORDS).map(|i| format!("v{i}")).collect());
    // Watches the broker's high watermarks directly, connected before the first record is sent
    // (the whole run can take well under a second).
    let watcher = clients::consumer(&broker.bootstrap())?;
    watcher.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    let produce = {
        let values = values.clone();
        tokio::spawn(async move {
            let outcome = produce_many(&producer, RECORDS, |i| {
                FutureRecord::<[u8], [u8]>::to(topic)
                    .partition((i % PARTITIONS as usize) as i32)
                    .payload(values[i].as_bytes())
            })
            .await;
            drop(producer);
            outcome
        })
    };
    // Kill the broker while records are in flight — once a twentieth of them are stored (the
    // broker's own high watermarks), not after a time tuned to this machine's speed — then bring
    // it back behind the same address. A run that finished before the kill fails: it would test
    // nothing.
    sluice_tests::wait_for(
        "a twentieth of the records stored",
        Duration::from_secs(120),
        Duration::from_millis(5),
        || {
            let stored: i64 = (0..PARTITIONS)
                .map(|p| {
                    watcher
                        .fetch_watermarks(topic, p, Duration::from_secs(5))
                        .map_or(0, |(_, high)| high)
                })
                .sum();
            (stored >= (RECORDS / 20) as i64).then_some(())
        },
    )
    .await?;
    drop(watcher);
    if produce.is_finished() {
        let acked = produce.await?.map(|outcome| outcome.acked());
        anyhow::bail!("the producer finished before the kill (acknowledged: {acked:?}): nothing was in flight");
    }
    broker.kill9()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.restart()?;
    *target.lock().unwrap_or_else(|e| e.into_inner()) = broker.bootstrap();
    let outcome = produce.await??;
    outcome.all_ok()?;

    let messages = clients::consume_from_beginning(
        &bootstrap,
        topic,
        PARTITIONS,
        RECORDS,
        Duration::from_secs(90),
    )?;
    // Exactly once and in send order within each partition: no duplicates, no gaps.
    let mut next_index: [usize; PARTITIONS as usize] = std::array::from_fn(|p| p);
    for message in &messages {
        let slot = usize::try_from(message.partition())?;
        let want = format!("v{}", next_index[slot]);
        ensure!(
            message.payload() == Some(want.as_bytes()),
            "{}: expected {want}",
            clients::describe(message)
        );
        next_index[slot] += PARTITIONS as usize;
    }
    ensure!(
        messages.len() == RECORDS,
        "consumed {} of {RECORDS}",
        messages.len()
    );
    let extra = clients::consume_from_beginning(
        &bootstrap,
        topic,
        PARTITIONS,
        RECORDS + 1,
        Duration::from_secs(3),
    )?;
    ensure!(
        extra.len() == RECORDS,
        "{} records stored, expected {RECORDS}",
        extra.len()
    );

    // Raw protocol: an acknowledged batch, resent after a restart, gets its original offset.
    let mut connection = RawConnection::connect(&broker.bootstrap())?;
    let init = connection.request(
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
        4,
    )?;
    ensure!(init.error_code == 0, "InitProducerId: {}", init.error_code);
    let pid = init.producer_id.0;
    let first = sequenced_batch(pid, init.producer_epoch, 0, &["x", "y"])?;
    let (error, original) = raw_produce(&mut connection, topic, first.clone())?;
    ensure!(error == 0, "first produce: {error}");
    broker.kill9()?;
    broker.restart()?;
    *target.lock().unwrap_or_else(|e| e.into_inner()) = broker.bootstrap();
    let mut connection = RawConnection::connect(&broker.bootstrap())?;
    let (error, again) = raw_produce(&mut connection, topic, first)?;
    ensure!(
        error == 0 && again == original,
        "resend: error {error}, offset {again} (original {original})"
    );
    let (error, _) = raw_produce(
        &mut connection,
        topic,
        sequenced_batch(pid, init.producer_epoch, 5, &["gap"])?,
    )?;
    ensure!(
        error == 45,
        "a sequence gap must be OUT_OF_ORDER_SEQUENCE_NUMBER, got {error}"
    );
    let (_, end) = clients::watermarks(&broker.bootstrap(), topic, 0)?;
    ensure!(
        end == original + 2,
        "the resend was written again: end {end}, original {original}"
    );
    proxy_task.abort();
    Ok(())
}
