//! InitProducerId (key 22): hands idempotent producers a fresh producer id at epoch 0.
//! Transactional ids are refused until the transaction coordinator exists.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{Broker, NONE};

pub fn handle(broker: &Broker, req: &InitProducerIdRequest) -> InitProducerIdResponse {
    let failed = |e: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if req
        .transactional_id
        .as_ref()
        .is_some_and(|id| id.0.is_empty())
    {
        return failed(ResponseError::InvalidRequest);
    }
    if req.transactional_id.is_some() {
        tracing::info!(
            "refusing InitProducerId with a transactional id: transactions are not supported yet"
        );
        return failed(ResponseError::TransactionalIdAuthorizationFailed);
    }
    // Without a transactional id Kafka always allocates a new id (also on an epoch-bump
    // request from an idempotent producer, KIP-360).
    match broker.producer_ids.allocate() {
        Ok(id) => InitProducerIdResponse::default()
            .with_error_code(NONE)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "allocating a producer id failed");
            failed(ResponseError::KafkaStorageError)
        }
    }
}
