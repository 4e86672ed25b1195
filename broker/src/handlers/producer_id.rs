//! InitProducerId for idempotent producers: ids are allocated through metadata, so they are unique
//! across restarts (and, later, across brokers). Transactions are not supported yet.
//!
//! KIP-360: an idempotent producer that lost track of its sequences sends InitProducerId again with
//! its current id and epoch. Without a transactional id there is nothing to check that pair
//! against (the broker keeps no per-id epoch outside the partitions' sequence state), so, as
//! Apache Kafka's transaction coordinator does for a null transactional id, it always gets a
//! fresh id at epoch 0 — never the id it presented with a bumped epoch, which would let any
//! client take over any other producer's id by naming it.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use metadata::{Command, CommandResponse};

use crate::errors::ErrorCode;
use crate::Broker;

pub(super) async fn init_producer_id(
    broker: &Broker,
    _version: i16,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    match request.transactional_id.as_ref() {
        // Kafka refuses an empty transactional id as a malformed request.
        Some(id) if id.is_empty() => {
            return response.with_error_code(ErrorCode::InvalidRequest.code());
        }
        Some(_) => {
            return response.with_error_code(ErrorCode::TransactionalIdAuthorizationFailed.code());
        }
        None => {}
    }
    match broker
        .meta
        .propose(Command::AllocateProducerIds { count: 1 })
        .await
    {
        Ok(CommandResponse::ProducerIdStart(id)) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Ok(_) | Err(_) => response.with_error_code(ErrorCode::RequestTimedOut.code()),
    }
}
