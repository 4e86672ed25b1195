//! S3 request signing: with `--s3-unsigned-payload` (here through its environment variable) every
//! request the broker sends is signed with `UNSIGNED-PAYLOAD`, so no body is hashed, and the data
//! still round-trips through a real S3 server; without it, every request carries the body's
//! SHA-256 as before. The fault proxy in front of s3s-fs reads the SigV4 header of each request.

use anyhow::{ensure, Result};
use rdkafka::producer::FutureRecord;
use sluice_tests::fault_proxy::RequestKind;
use sluice_tests::s3::S3Server;
use sluice_tests::{clients, SluiceOptions, SluiceProcess};

const RECORDS: usize = 200;

/// Produces and consumes back `RECORDS` records through a broker on `s3` (S3 WAL), and returns
/// (PUTs, PUTs with an unsigned payload, requests, unsigned requests) seen meanwhile.
async fn round_trip(s3: &S3Server, options: SluiceOptions, topic: &str) -> Result<[u64; 4]> {
    s3.faults().reset_stats();
    let broker = SluiceProcess::start(options)?;
    let bootstrap = broker.bootstrap();
    clients::create_topic(&bootstrap, topic, 2, &[]).await?;
    let producer = clients::producer(&bootstrap)?;
    let values: Vec<String> = (0..RECORDS).map(|i| format!("{topic}-{i}")).collect();
    clients::produce_many(&producer, RECORDS, |i| {
        FutureRecord::<[u8], [u8]>::to(topic)
            .partition((i % 2) as i32)
            .payload(values[i].as_bytes())
    })
    .await?
    .all_ok()?;
    let consumed = clients::consume_from_beginning(
        &bootstrap,
        topic,
        2,
        RECORDS,
        std::time::Duration::from_secs(60),
    )?;
    ensure!(
        consumed.len() == RECORDS,
        "{topic}: consumed {} of {RECORDS}",
        consumed.len()
    );
    let stats = s3.faults().stats();
    let put = stats.kind(RequestKind::Put);
    let all = stats.kinds.values();
    Ok([
        put.requests,
        put.unsigned_payload,
        all.clone().map(|k| k.requests).sum(),
        all.map(|k| k.unsigned_payload).sum(),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_payload_is_opt_in_and_round_trips() -> Result<()> {
    let s3 = S3Server::start()?;
    let [puts, unsigned_puts, requests, unsigned] = round_trip(
        &s3,
        SluiceOptions::default()
            .s3(&s3, "unsigned")
            .object_wal()
            .env("SLUICE_S3_UNSIGNED_PAYLOAD", "true"),
        "unsigned",
    )
    .await?;
    ensure!(puts > 0, "no PUT reached the server");
    ensure!(
        unsigned_puts == puts && unsigned == requests,
        "with --s3-unsigned-payload: {unsigned_puts} of {puts} PUTs and {unsigned} of \
         {requests} requests unsigned"
    );
    let [puts, unsigned_puts, requests, unsigned] = round_trip(
        &s3,
        SluiceOptions::default().s3(&s3, "signed").object_wal(),
        "signed",
    )
    .await?;
    ensure!(
        puts > 0 && unsigned_puts == 0 && unsigned == 0,
        "by default: {unsigned_puts} of {puts} PUTs and {unsigned} of {requests} requests unsigned"
    );
    Ok(())
}
