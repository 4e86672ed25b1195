//! Long-poll fetch: a consumer parked on an empty partition with `fetch.wait.max.ms=30000` must
//! receive a new record long before its fetch would have expired — the append wakes the waiting
//! fetch; nothing sleeps out the 30 s. The bound (5 s) is no speed assumption: the record is
//! produced 1.5 s into a 30 s wait, so a fetch that is not woken answers after ~28 s.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::Offset;
use sluice_tests::clients;
use sluice_tests::{SluiceOptions, SluiceProcess};

/// Rounds of produce-then-receive; each must be fast, not just the first.
const ROUNDS: usize = 5;

/// Far below the 30 s wait: only a wake-up by the append can meet it, on any machine that
/// answers a produce and a fetch within seconds.
const MAX_LATENCY: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_fetch_is_woken_by_append() -> Result<()> {
    let broker = SluiceProcess::start(SluiceOptions::default())?;
    let bootstrap = broker.bootstrap();
    let topic = "long-poll";
    clients::create_topic(&bootstrap, topic, 1, &[]).await?;

    let consumer = clients::consumer_config(&bootstrap)
        .set("fetch.wait.max.ms", "30000")
        .set("socket.timeout.ms", "60000")
        .set("fetch.min.bytes", "1")
        .create::<rdkafka::consumer::BaseConsumer>()
        .context("creating consumer")?;
    // A concrete offset: no ListOffsets round trip before the first fetch.
    consumer.assign(&clients::assignment(topic, 1, Offset::Offset(0))?)?;

    // linger.ms=0 so the producer adds no delay of its own.
    let producer = clients::producer_config(&bootstrap)
        .set("linger.ms", "0")
        .create::<rdkafka::producer::FutureProducer>()
        .context("creating producer")?;
    // Warm the producer's connection and metadata on another topic, so the measured produce
    // is a single round trip.
    clients::create_topic(&bootstrap, "long-poll-warmup", 1, &[]).await?;
    clients::produce_one(&producer, "long-poll-warmup", 0, b"w", b"warmup").await?;

    let mut latencies = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        // Let the consumer park in a long poll on the empty partition; nothing may arrive.
        let idle_until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < idle_until {
            if let Some(result) = consumer.poll(Duration::from_millis(100)) {
                let message = result.context("consumer error while idle")?;
                anyhow::bail!("unexpected message while idle: offset {}", message.offset());
            }
        }

        let value = format!("round {round}");
        let sent_at = Instant::now();
        let (_, offset) =
            clients::produce_one(&producer, topic, 0, b"key", value.as_bytes()).await?;
        ensure!(
            offset == round as i64,
            "round {round}: acked at offset {offset}"
        );

        let deadline = sent_at + Duration::from_secs(45);
        let received_at = loop {
            ensure!(
                Instant::now() < deadline,
                "round {round}: record not received within 45 s"
            );
            if let Some(result) = consumer.poll(Duration::from_millis(5)) {
                let message = result.context("consumer error")?;
                ensure!(
                    message.payload() == Some(value.as_bytes()),
                    "round {round}: got {:?}",
                    message.payload().map(String::from_utf8_lossy)
                );
                break Instant::now();
            }
        };
        let latency = received_at - sent_at;
        eprintln!("round {round}: produce-to-consume latency {latency:?}");
        latencies.push(latency);
    }

    for (round, latency) in latencies.iter().enumerate() {
        ensure!(
            *latency < MAX_LATENCY,
            "round {round}: record took {latency:?} to reach a long-polling consumer \
             (all rounds: {latencies:?}); the fetch is not woken by the append"
        );
    }
    Ok(())
}
