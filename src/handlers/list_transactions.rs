//! ListTransactions (key 66): transactional ids filtered by state, producer id and (v1+) how
//! long their transaction has been running. Unknown state names are echoed back. With
//! `authorizer = "acl"` only the ids the caller may DESCRIBE are listed (Kafka's filter).

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};

use super::{str_bytes, Broker, NONE};
use crate::txn::coordinator::TxnState;

pub fn handle(
    broker: &Broker,
    req: &ListTransactionsRequest,
    caller: &super::Caller,
) -> ListTransactionsResponse {
    use crate::security::acl::{AclOperation, ResourceType};
    let now = broker.clock.now_ms();
    let unknown: Vec<_> = req
        .state_filters
        .iter()
        .filter(|s| !TxnState::ALL.contains(&s.as_str()))
        .cloned()
        .collect();
    let listed = match broker.txns.list() {
        Ok(l) => l,
        Err(e) => {
            return ListTransactionsResponse::default()
                .with_error_code(e.code())
                .with_unknown_state_filters(unknown)
        }
    };
    let states = listed
        .into_iter()
        .filter(|m| {
            req.state_filters.is_empty()
                || req
                    .state_filters
                    .iter()
                    .any(|s| s.as_str() == m.state.name())
        })
        .filter(|m| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.iter().any(|p| p.0 == m.producer_id)
        })
        .filter(|m| {
            req.duration_filter < 0
                || (m.state == TxnState::Ongoing && now - m.start_ms >= req.duration_filter)
        })
        .filter(|m| {
            caller.permits(
                AclOperation::Describe,
                ResourceType::TransactionalId,
                &m.transactional_id,
            )
        })
        .map(|m| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(str_bytes(m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(str_bytes(m.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_error_code(NONE)
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}
