//! Pipelined requests on one connection: the broker handles them in the order they were sent, as
//! Kafka does, so a producer's batches for a partition land in send order even with many requests in
//! flight (max.in.flight > 1 without idempotence relies on this).

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use bytes::Buf;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::Compression;
use sluice_tests::wire::{self, FrameRead, RawConnection};
use sluice_tests::{clients, SluiceProcess};

const REQUESTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_produces_append_in_send_order() -> Result<()> {
    let broker = SluiceProcess::start_default()?;
    clients::create_topic(&broker.bootstrap(), "ordered", 1, &[]).await?;
    let bootstrap = broker.bootstrap();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut connection = RawConnection::connect(&bootstrap)?;
        let version = connection.negotiate::<ProduceRequest>(9)?;
        // Send every request before reading any response; batch i carries value "i".
        let mut sent = Vec::with_capacity(REQUESTS);
        for i in 0..REQUESTS {
            let value = i.to_string();
            let batch =
                wire::encode_batch(&[value.as_bytes()], 1_700_000_000_000, Compression::None)?;
            let request = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(10_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("ordered")))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch))])]);
            let (correlation_id, body) = connection.encode_request(&request, version)?;
            connection.send_frame(&body)?;
            sent.push(correlation_id);
        }
        let header_version = ApiKey::Produce.response_header_version(version);
        for (i, correlation_id) in sent.into_iter().enumerate() {
            let FrameRead::Frame(mut frame) = connection.read_frame(Duration::from_secs(20))?
            else {
                anyhow::bail!("no response to request {i}");
            };
            let header = ResponseHeader::decode(&mut frame, header_version)?;
            ensure!(
                header.correlation_id == correlation_id,
                "responses out of order at {i}"
            );
            let response = ProduceResponse::decode(&mut frame, version)?;
            ensure!(
                !frame.has_remaining(),
                "trailing bytes in a produce response"
            );
            let partition = &response.responses[0].partition_responses[0];
            ensure!(
                partition.error_code == 0,
                "request {i} failed with {}",
                partition.error_code
            );
            ensure!(
                partition.base_offset == i as i64,
                "request {i} (sent {i}th) was appended at offset {}",
                partition.base_offset
            );
        }
        Ok(())
    })
    .await
    .context("pipelining task")??;
    Ok(())
}
