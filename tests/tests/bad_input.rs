//! Hostile and invalid input over raw TCP: malformed, truncated and oversized frames, unknown
//! API keys and versions, corrupted batches, oversized batches, unknown topics and invalid topic
//! names. A bad connection is closed on its own; every other client keeps working; request-level
//! errors come back with the Kafka error code a real broker would use.

use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsResponse, CreateTopicsRequest, MetadataRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::Compression;
use sluice_tests::clients;
use sluice_tests::wire::{self, FrameRead, RawConnection};

/// Kafka's INVALID_REQUEST, an acceptable answer to an unknown API key.
const INVALID_REQUEST: i16 = 42;
use sluice_tests::{SluiceOptions, SluiceProcess};

const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const UNSUPPORTED_VERSION: i16 = 35;

const API_PRODUCE: i16 = 0;
const API_FETCH: i16 = 1;
const API_METADATA: i16 = 3;
const API_VERSIONS: i16 = 18;

/// How fast a connection with bad input must be closed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Proves a connection is healthy: a Metadata round trip listing the brokers.
fn assert_works(connection: &mut RawConnection) -> Result<()> {
    let version = connection.negotiate::<MetadataRequest>(12)?;
    let response = connection
        .request(
            &MetadataRequest::default().with_topics(Some(Vec::new())),
            version,
        )
        .context("metadata on a healthy connection")?;
    ensure!(
        !response.brokers.is_empty(),
        "metadata lists no brokers on a healthy connection"
    );
    Ok(())
}

/// Produces one batch to `topic`/0 and returns (error_code, base_offset).
fn produce_batch(connection: &mut RawConnection, topic: &str, batch: Bytes) -> Result<(i16, i64)> {
    let version = connection.negotiate::<ProduceRequest>(9)?;
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let response = connection.request(&request, version)?;
    let partition = response
        .responses
        .first()
        .and_then(|topic| topic.partition_responses.first())
        .context("produce response without a partition result")?;
    Ok((partition.error_code, partition.base_offset))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

#[test]
fn malformed_frames_close_only_their_connection() -> Result<()> {
    let broker = SluiceProcess::start_default()?;
    let addr = broker.bootstrap();
    let mut healthy = RawConnection::connect(&addr)?;
    assert_works(&mut healthy)?;

    // A frame too short to hold a request header.
    let mut short_header = RawConnection::connect(&addr)?;
    short_header.send_frame(&[0, 3, 0, 9, 0xde, 0xad])?;
    short_header
        .expect_closed(CLOSE_TIMEOUT)
        .context("frame shorter than a request header")?;

    // A valid Metadata v9 header followed by a body that is not a Metadata request (an invalid
    // varint for the topics array length).
    let mut garbage_body = RawConnection::connect(&addr)?;
    let frame = wire::raw_request_v2(API_METADATA, 9, 1, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    garbage_body.send_frame(&frame)?;
    garbage_body
        .expect_closed(CLOSE_TIMEOUT)
        .context("metadata request with a garbage body")?;

    // A valid Produce v9 header followed by noise.
    let mut noisy_produce = RawConnection::connect(&addr)?;
    let noise: Vec<u8> = (0..64u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    noisy_produce.send_frame(&wire::raw_request_v2(API_PRODUCE, 9, 1, &noise))?;
    noisy_produce
        .expect_closed(CLOSE_TIMEOUT)
        .context("produce request with a noise body")?;

    assert_works(&mut healthy).context("the healthy connection after the malformed ones")?;
    assert_works(&mut RawConnection::connect(&addr)?).context("a new connection")?;
    Ok(())
}

#[test]
fn truncated_frame_blocks_nobody_and_is_closed_at_eof() -> Result<()> {
    let broker = SluiceProcess::start_default()?;
    let addr = broker.bootstrap();

    // Claims 100 bytes, sends 20 of them, then stalls.
    let mut truncated = RawConnection::connect(&addr)?;
    let mut partial = Vec::new();
    partial.extend_from_slice(&100i32.to_be_bytes());
    partial.extend_from_slice(&wire::raw_request_v1(API_METADATA, 1, 1, &[])[..12]);
    partial.resize(4 + 20, 0);
    truncated.send_raw(&partial)?;

    // While that connection waits for the rest, everybody else is served.
    assert_works(&mut RawConnection::connect(&addr)?).context("while a frame is half-sent")?;

    // EOF in the middle of a frame closes the connection.
    truncated.shutdown_write()?;
    truncated
        .expect_closed(CLOSE_TIMEOUT)
        .context("EOF in the middle of a frame")?;
    assert_works(&mut RawConnection::connect(&addr)?).context("after the truncated frame")?;
    Ok(())
}

#[test]
fn oversized_frame_is_refused_without_allocation() -> Result<()> {
    let broker = SluiceProcess::start_default()?;
    let addr = broker.bootstrap();
    let mut healthy = RawConnection::connect(&addr)?;
    assert_works(&mut healthy)?;
    let rss_before = broker.rss_kib()?;

    // Claims 200 MiB, above socket.request.max.bytes (100 MiB); sends nothing more. The broker
    // must close at once instead of waiting for (and buffering) 200 MiB.
    let mut oversized = RawConnection::connect(&addr)?;
    oversized.send_raw(&(200i32 * 1024 * 1024).to_be_bytes())?;
    oversized
        .expect_closed(CLOSE_TIMEOUT)
        .context("a 200 MiB size header")?;

    // A negative size is just as invalid.
    let mut negative = RawConnection::connect(&addr)?;
    negative.send_raw(&(-1i32).to_be_bytes())?;
    negative
        .expect_closed(CLOSE_TIMEOUT)
        .context("a negative size header")?;

    let rss_after = broker.rss_kib()?;
    ensure!(
        rss_after < rss_before + 64 * 1024,
        "broker RSS grew from {rss_before} KiB to {rss_after} KiB after a 200 MiB size header"
    );
    assert_works(&mut healthy).context("the healthy connection after the oversized frame")?;
    Ok(())
}

#[test]
fn unknown_api_key_and_unsupported_version() -> Result<()> {
    let broker = SluiceProcess::start_default()?;
    let addr = broker.bootstrap();
    let mut healthy = RawConnection::connect(&addr)?;
    assert_works(&mut healthy)?;

    // An API key no Kafka version defines, and versions of known APIs that nobody supports.
    // Kafka closes such a connection; answering the same correlation id with an error code
    // (UNSUPPORTED_VERSION; INVALID_REQUEST for an unknown key) and staying usable is
    // acceptable too. Hanging or answering anything else is not.
    for (api_key, api_version, what, acceptable) in [
        (
            1000i16,
            0i16,
            "unknown api key 1000",
            &[UNSUPPORTED_VERSION, INVALID_REQUEST][..],
        ),
        (API_METADATA, 99, "Metadata v99", &[UNSUPPORTED_VERSION][..]),
        (API_PRODUCE, 99, "Produce v99", &[UNSUPPORTED_VERSION][..]),
    ] {
        let mut connection = RawConnection::connect(&addr)?;
        let correlation_id = 4242;
        connection.send_frame(&wire::raw_request_v1(
            api_key,
            api_version,
            correlation_id,
            &[],
        ))?;
        match connection.read_frame(CLOSE_TIMEOUT)? {
            FrameRead::Closed => {}
            FrameRead::Frame(mut frame) => {
                ensure!(
                    frame.len() >= 4,
                    "{what}: response frame of {} bytes",
                    frame.len()
                );
                let got = frame.get_i32();
                ensure!(
                    got == correlation_id,
                    "{what}: response for correlation id {got}, sent {correlation_id}"
                );
                // The error code follows the header, after an empty tagged-field section when
                // the broker uses a flexible response header.
                let code_at = |offset: usize| {
                    frame
                        .get(offset..offset + 2)
                        .map(|bytes| i16::from_be_bytes([bytes[0], bytes[1]]))
                };
                let answered_with_error = code_at(0).is_some_and(|code| acceptable.contains(&code))
                    || (frame.first() == Some(&0)
                        && code_at(1).is_some_and(|code| acceptable.contains(&code)));
                ensure!(
                    answered_with_error,
                    "{what}: answer {:?} carries none of the error codes {acceptable:?}",
                    &frame[..frame.len().min(16)]
                );
                assert_works(&mut connection)
                    .with_context(|| format!("{what}: connection kept open after the answer"))?;
            }
            FrameRead::TimedOut => {
                bail!("{what}: neither an answer nor a close within {CLOSE_TIMEOUT:?}")
            }
        }
    }
    assert_works(&mut healthy).context("the healthy connection afterwards")?;
    // The operator sees why: one log line per refused request, naming the API key, the version
    // asked for and the supported range.
    let log = std::fs::read_to_string(broker.log_path())?;
    for (api_key, api_version, supported) in [
        ("api_key=1000", "api_version=0", "API not supported"),
        ("api_key=3", "api_version=99", "Metadata v"),
        ("api_key=0", "api_version=99", "Produce v"),
    ] {
        ensure!(
            log.lines()
                .any(|line| line.contains("answering UNSUPPORTED_VERSION")
                    && line.contains(api_key)
                    && line.contains(api_version)
                    && line.contains(supported)),
            "no UNSUPPORTED_VERSION log line with {api_key} {api_version} {supported:?}\n{}",
            broker.log_tail(30)
        );
    }
    Ok(())
}

#[test]
fn api_versions_from_the_future_gets_a_v0_answer() -> Result<()> {
    let broker = SluiceProcess::start_default()?;
    let mut connection = RawConnection::connect(&broker.bootstrap())?;

    // ApiVersions v99 with a v3-shaped body (compact client name and version, no tags). The
    // broker cannot parse a version it does not know, so it must answer in v0 with
    // UNSUPPORTED_VERSION and its supported ranges, so the client can retry lower.
    let mut body = BytesMut::new();
    for text in ["sluice-e2e", "9.9.9"] {
        body.extend_from_slice(&[(text.len() + 1) as u8]);
        body.extend_from_slice(text.as_bytes());
    }
    body.extend_from_slice(&[0]);
    let correlation_id = 99;
    connection.send_frame(&wire::raw_request_v2(
        API_VERSIONS,
        99,
        correlation_id,
        &body,
    ))?;
    let mut frame = match connection.read_frame(Duration::from_secs(10))? {
        FrameRead::Frame(frame) => frame,
        other => bail!("ApiVersions v99: expected a response, got {other:?}"),
    };
    ensure!(frame.len() >= 4, "response frame of {} bytes", frame.len());
    let got = frame.get_i32();
    ensure!(
        got == correlation_id,
        "correlation id {got}, sent {correlation_id}"
    );
    let response = ApiVersionsResponse::decode(&mut frame, 0).context("decoding as v0")?;
    ensure!(
        response.error_code == UNSUPPORTED_VERSION,
        "error code {}, expected UNSUPPORTED_VERSION (35)",
        response.error_code
    );
    let range = |key: i16| {
        response
            .api_keys
            .iter()
            .find(|api| api.api_key == key)
            .map(|api| (api.min_version, api.max_version))
    };
    let api_versions = range(API_VERSIONS).context("ApiVersions missing from the ranges")?;
    ensure!(
        api_versions.0 == 0 && api_versions.1 >= 3,
        "ApiVersions range {api_versions:?}"
    );
    ensure!(
        range(API_PRODUCE).is_some(),
        "Produce missing from the ranges"
    );
    ensure!(range(API_FETCH).is_some(), "Fetch missing from the ranges");
    ensure!(
        range(API_METADATA).is_some(),
        "Metadata missing from the ranges"
    );

    // The client retries with a supported version on the same connection.
    connection
        .api_versions()
        .context("ApiVersions v3 after the v99 answer")?;
    assert_works(&mut connection)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_crc_is_refused_with_corrupt_message() -> Result<()> {
    let broker = SluiceProcess::start_default()?;
    let addr = broker.bootstrap();
    clients::create_topic(&addr, "crc", 1, &[]).await?;
    let mut connection = RawConnection::connect(&addr)?;

    let batch = wire::encode_batch(&[b"hello", b"world"], now_ms(), Compression::None)?;
    let (error, _) = produce_batch(&mut connection, "crc", wire::corrupt_crc(&batch)?)?;
    ensure!(
        error == CORRUPT_MESSAGE,
        "batch with a wrong CRC: error {error}, expected CORRUPT_MESSAGE (2)"
    );

    // Payload changed after the CRC was computed.
    let mut tampered = BytesMut::from(&batch[..]);
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let (error, _) = produce_batch(&mut connection, "crc", tampered.freeze())?;
    ensure!(
        error == CORRUPT_MESSAGE,
        "batch with a tampered payload: error {error}, expected CORRUPT_MESSAGE (2)"
    );

    // The connection is still usable and the refused batches took no offsets.
    let (error, base_offset) = produce_batch(&mut connection, "crc", batch)?;
    ensure!(error == 0, "valid batch after corrupt ones: error {error}");
    ensure!(
        base_offset == 0,
        "valid batch stored at {base_offset}, expected 0"
    );
    let (low, high) = clients::watermarks(&addr, "crc", 0)?;
    ensure!(
        (low, high) == (0, 2),
        "watermarks ({low}, {high}), expected (0, 2)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_above_max_message_bytes_is_refused() -> Result<()> {
    let broker = SluiceProcess::start_default()?;
    let addr = broker.bootstrap();
    clients::create_topic(&addr, "small-messages", 1, &[("max.message.bytes", "1024")]).await?;
    let mut connection = RawConnection::connect(&addr)?;

    let big_value = vec![b'x'; 4096];
    let big = wire::encode_batch(&[&big_value], now_ms(), Compression::None)?;
    let (error, _) = produce_batch(&mut connection, "small-messages", big)?;
    ensure!(
        error == MESSAGE_TOO_LARGE,
        "4 KiB batch vs max.message.bytes=1024: error {error}, expected MESSAGE_TOO_LARGE (10)"
    );

    let small = wire::encode_batch(&[b"fits"], now_ms(), Compression::None)?;
    let (error, base_offset) = produce_batch(&mut connection, "small-messages", small)?;
    ensure!(
        (error, base_offset) == (0, 0),
        "small batch: error {error} at {base_offset}"
    );
    Ok(())
}

#[test]
fn unknown_topic_without_auto_create() -> Result<()> {
    let broker = SluiceProcess::start(SluiceOptions::default().auto_create_topics(false))?;
    let mut connection = RawConnection::connect(&broker.bootstrap())?;

    let batch = wire::encode_batch(&[b"nobody"], now_ms(), Compression::None)?;
    let (error, _) = produce_batch(&mut connection, "no-such-topic", batch)?;
    ensure!(
        error == UNKNOWN_TOPIC_OR_PARTITION,
        "produce to an unknown topic: error {error}, expected UNKNOWN_TOPIC_OR_PARTITION (3)"
    );

    // Metadata asking for auto-creation must not create it either (the broker setting wins).
    let version = connection.negotiate::<MetadataRequest>(12)?;
    for attempt in 0..2 {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name("no-such-topic")))
            ]))
            .with_allow_auto_topic_creation(true);
        let response = connection.request(&request, version)?;
        let topic = response
            .topics
            .first()
            .context("metadata response without the topic")?;
        ensure!(
            topic.error_code == UNKNOWN_TOPIC_OR_PARTITION,
            "metadata attempt {attempt}: topic error {}, expected 3",
            topic.error_code
        );
    }
    Ok(())
}

#[test]
fn invalid_topic_names_are_refused() -> Result<()> {
    let broker = SluiceProcess::start_default()?;
    let mut connection = RawConnection::connect(&broker.bootstrap())?;
    let version = connection.negotiate::<CreateTopicsRequest>(7)?;

    let too_long = "a".repeat(250);
    let bad_names = ["bad/name", "..", ".", "white space", too_long.as_str(), ""];
    let mut topics: Vec<CreatableTopic> = bad_names
        .iter()
        .map(|name| {
            CreatableTopic::default()
                .with_name(topic_name(name))
                .with_num_partitions(1)
                .with_replication_factor(1)
        })
        .collect();
    topics.push(
        CreatableTopic::default()
            .with_name(topic_name("good.name_249-ok"))
            .with_num_partitions(1)
            .with_replication_factor(1),
    );
    let response = connection.request(
        &CreateTopicsRequest::default()
            .with_topics(topics)
            .with_timeout_ms(10_000),
        version,
    )?;
    ensure!(
        response.topics.len() == bad_names.len() + 1,
        "{} results for {} topics",
        response.topics.len(),
        bad_names.len() + 1
    );
    for result in &response.topics {
        let name = result.name.0.as_str();
        let expected = if name == "good.name_249-ok" {
            0
        } else {
            INVALID_TOPIC_EXCEPTION
        };
        ensure!(
            result.error_code == expected,
            "CreateTopics {:?}: error {}, expected {expected}",
            if name.len() > 20 { &name[..20] } else { name },
            result.error_code
        );
    }
    Ok(())
}
