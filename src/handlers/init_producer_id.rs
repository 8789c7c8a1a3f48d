//! InitProducerId (key 22): hands idempotent producers a fresh producer id at epoch 0; for a
//! transactional id the transaction coordinator gives the id's producer id with a bumped epoch
//! (aborting and fencing a previous producer's ongoing transaction).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use std::sync::Arc;

use super::{producer_fenced_for, Broker, NONE};
use crate::txn::coordinator::ProducerIdent;

pub async fn handle(
    broker: &Arc<Broker>,
    req: &InitProducerIdRequest,
    version: i16,
    caller: &super::Caller,
) -> InitProducerIdResponse {
    let failed = |e: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(producer_fenced_for(e, version, 4).code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    // Kafka: a transactional id needs WRITE on it; an idempotent producer IDEMPOTENT_WRITE on
    // the cluster or WRITE on some topic (KIP-679).
    {
        use crate::security::acl::{AclOperation, ResourceType};
        match &req.transactional_id {
            Some(id)
                if !caller.allowed(
                    AclOperation::Write,
                    ResourceType::TransactionalId,
                    id.0.as_str(),
                ) =>
            {
                return failed(ResponseError::TransactionalIdAuthorizationFailed)
            }
            None if !caller.allowed_on_cluster(AclOperation::IdempotentWrite)
                && !caller.allowed_on_some(AclOperation::Write, ResourceType::Topic) =>
            {
                return failed(ResponseError::ClusterAuthorizationFailed)
            }
            _ => {}
        }
    }
    // Empty, or too long for `__transaction_state`'s i16-length strings (never truncated).
    if req
        .transactional_id
        .as_ref()
        .is_some_and(|id| id.0.is_empty() || !super::internal_strings_fit([id.0.as_str()]))
    {
        return failed(ResponseError::InvalidRequest);
    }
    if let Some(id) = &req.transactional_id {
        let id = id.0.to_string();
        let timeout = req.transaction_timeout_ms;
        let expected = (req.producer_id.0 >= 0).then_some(ProducerIdent {
            producer_id: req.producer_id.0,
            producer_epoch: req.producer_epoch,
        });
        let b = broker.clone();
        let result = crate::threads::spawn_blocking(move || {
            b.txns.init_producer_id(
                &b.topics,
                &b.groups,
                &b.producer_ids,
                &id,
                timeout,
                expected,
            )
        })
        .await
        .unwrap_or(Err(ResponseError::UnknownServerError));
        return match result {
            Ok(p) => InitProducerIdResponse::default()
                .with_error_code(NONE)
                .with_producer_id(ProducerId(p.producer_id))
                .with_producer_epoch(p.producer_epoch),
            Err(e) => failed(e),
        };
    }
    // Without a transactional id Kafka always allocates a new id (also on an epoch-bump
    // request from an idempotent producer, KIP-360).
    match broker.producer_ids.allocate().await {
        Ok(id) => InitProducerIdResponse::default()
            .with_error_code(NONE)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            // Kafka answers COORDINATOR_LOAD_IN_PROGRESS while it has no block: the client
            // retries.
            tracing::warn!(error = %e, "allocating a producer id failed");
            failed(ResponseError::CoordinatorLoadInProgress)
        }
    }
}
