//! InitProducerId for idempotent producers: ids are allocated through metadata, so they are unique
//! across restarts (and, later, across brokers). Transactions are not supported yet.
//!
//! KIP-360: a producer that presents its current id and epoch gets the same id with the epoch bumped
//! (a new id once the epoch would overflow).

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
    let existing = request.producer_id.0;
    // KIP-360 bump of an id we handed out; an id we never handed out gets a fresh one instead.
    let known = existing >= 0 && existing < broker.meta.state().next_producer_id;
    if known && request.producer_epoch >= 0 && request.producer_epoch < i16::MAX - 1 {
        return response
            .with_producer_id(ProducerId(existing))
            .with_producer_epoch(request.producer_epoch + 1);
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
