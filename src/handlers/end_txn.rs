//! EndTxn (key 26): commit or abort: markers are written to every partition of the transaction
//! before the answer (on the blocking pool).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use super::{producer_fenced_for, Broker, NONE};
use crate::txn::coordinator::ProducerIdent;

pub async fn handle(
    broker: &Arc<Broker>,
    req: &EndTxnRequest,
    version: i16,
    caller: &super::Caller,
) -> EndTxnResponse {
    use crate::security::acl::{AclOperation, ResourceType};
    if !caller.allowed(
        AclOperation::Write,
        ResourceType::TransactionalId,
        req.transactional_id.0.as_str(),
    ) {
        return EndTxnResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch);
    }
    let p = ProducerIdent {
        producer_id: req.producer_id.0,
        producer_epoch: req.producer_epoch,
    };
    let id = req.transactional_id.0.to_string();
    let commit = req.committed;
    let b = broker.clone();
    let result = crate::threads::spawn_blocking(move || {
        b.txns.end_txn(&b.topics, &b.groups, &id, p, commit)
    })
    .await
    .unwrap_or(Err(ResponseError::UnknownServerError));
    EndTxnResponse::default()
        .with_error_code(match result {
            Ok(()) => NONE,
            Err(e) => producer_fenced_for(e, version, 2).code(),
        })
        .with_producer_id(req.producer_id)
        .with_producer_epoch(req.producer_epoch)
}
