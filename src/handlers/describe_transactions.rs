//! DescribeTransactions (key 65): state, producer, timeout and partitions of transactional ids
//! (TRANSACTIONAL_ID_NOT_FOUND for unknown ones). With `authorizer = "acl"`, as Kafka: an id
//! needs DESCRIBE (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED), and only the partitions of
//! topics the caller may DESCRIBE are listed.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId,
};

use super::{str_bytes, topic_name, Broker, NONE};

pub fn handle(
    broker: &Broker,
    req: &DescribeTransactionsRequest,
    caller: &super::Caller,
) -> DescribeTransactionsResponse {
    use crate::security::acl::{AclOperation, ResourceType};
    DescribeTransactionsResponse::default().with_transaction_states(
        req.transactional_ids
            .iter()
            .map(|id| {
                let base = TransactionState::default().with_transactional_id(id.clone());
                if let Some(code) =
                    caller.refusal(AclOperation::Describe, ResourceType::TransactionalId, id)
                {
                    return base
                        .with_error_code(code.code())
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1)
                        .with_transaction_start_time_ms(-1);
                }
                let described = match broker.txns.for_txn(id.0.as_str()) {
                    Ok(c) => c.describe(id.0.as_str()),
                    Err(e) => {
                        return base
                            .with_error_code(e.code())
                            .with_producer_id(ProducerId(-1))
                            .with_producer_epoch(-1)
                            .with_transaction_start_time_ms(-1)
                    }
                };
                match described {
                    None => base
                        .with_error_code(ResponseError::TransactionalIdNotFound.code())
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1)
                        .with_transaction_start_time_ms(-1),
                    Some(m) => {
                        let mut topics: Vec<TopicData> = Vec::new();
                        for (t, p) in m.partitions.iter().filter(|(t, _)| {
                            caller.permits(AclOperation::Describe, ResourceType::Topic, t)
                        }) {
                            match topics.last_mut() {
                                Some(d) if d.topic.0.as_str() == t => d.partitions.push(*p),
                                _ => topics.push(
                                    TopicData::default()
                                        .with_topic(topic_name(t.clone()))
                                        .with_partitions(vec![*p]),
                                ),
                            }
                        }
                        base.with_error_code(NONE)
                            .with_transaction_state(str_bytes(m.state.name()))
                            .with_transaction_timeout_ms(m.timeout_ms)
                            .with_transaction_start_time_ms(m.start_ms)
                            .with_producer_id(ProducerId(m.producer_id))
                            .with_producer_epoch(m.producer_epoch)
                            .with_topics(topics)
                    }
                }
            })
            .collect(),
    )
}
