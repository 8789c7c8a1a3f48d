//! AddPartitionsToTxn (key 24): a transactional producer names the partitions it is about to
//! write. v0-3 (clients): one transaction; v4+ (brokers, KIP-890): a batch of transactions,
//! possibly `verify_only`.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use super::{producer_fenced_for, Broker, NONE};
use crate::txn::coordinator::ProducerIdent;

/// Every partition of `topics` with the code `code(topic)` gives.
fn coded(
    topics: &[AddPartitionsToTxnTopic],
    code: impl Fn(&str) -> i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|&p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code(t.name.0.as_str()))
                        })
                        .collect(),
                )
        })
        .collect()
}

fn one(
    broker: &Broker,
    transactional_id: &str,
    p: ProducerIdent,
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
    version: i16,
    caller: &super::Caller,
) -> Vec<AddPartitionsToTxnTopicResult> {
    use crate::security::acl::{AclOperation, ResourceType};
    // Kafka: TransactionalId WRITE, then WRITE on every topic (the others not attempted).
    if !caller.allowed(
        AclOperation::Write,
        ResourceType::TransactionalId,
        transactional_id,
    ) {
        return coded(topics, |_| {
            ResponseError::TransactionalIdAuthorizationFailed.code()
        });
    }
    let denied = caller.denied_topics(
        AclOperation::Write,
        topics.iter().map(|t| t.name.0.as_str()),
    );
    if !denied.is_empty() {
        return coded(topics, |n| {
            if denied.contains(n) {
                ResponseError::TopicAuthorizationFailed.code()
            } else {
                ResponseError::OperationNotAttempted.code()
            }
        });
    }
    let mut wanted = Vec::new();
    let mut unknown = false;
    for t in topics {
        let topic = broker.topics.get(t.name.0.as_str());
        for &p in &t.partitions {
            if topic
                .as_ref()
                .is_none_or(|x| p < 0 || p >= x.partition_count())
            {
                unknown = true;
            }
            wanted.push((t.name.0.to_string(), p));
        }
    }
    if verify_only && !unknown {
        // KIP-890 verification (another broker asks): per partition, whether it is in the
        // producer's ongoing transaction.
        let n = wanted.len();
        let verified = broker
            .txns
            .for_txn(transactional_id)
            .and_then(|c| c.verify_partitions(transactional_id, p, &wanted))
            .unwrap_or_else(|e| vec![Err(e); n]);
        let mut codes = verified.into_iter().map(|r| match r {
            Ok(()) => NONE,
            Err(e) => producer_fenced_for(e, version, 2).code(),
        });
        return topics
            .iter()
            .map(|t| {
                AddPartitionsToTxnTopicResult::default()
                    .with_name(t.name.clone())
                    .with_results_by_partition(
                        t.partitions
                            .iter()
                            .map(|&p| {
                                AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(p)
                                    .with_partition_error_code(codes.next().unwrap_or(NONE))
                            })
                            .collect(),
                    )
            })
            .collect();
    }
    // As Kafka: one unknown partition fails the request; the others are not attempted.
    let outcome: Result<(), ResponseError> = if unknown {
        Err(ResponseError::UnknownTopicOrPartition)
    } else {
        broker
            .txns
            .add_partitions(transactional_id, p, &wanted, None)
    };
    topics
        .iter()
        .map(|t| {
            let topic = broker.topics.get(t.name.0.as_str());
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|&p| {
                            let exists = topic
                                .as_ref()
                                .is_some_and(|x| p >= 0 && p < x.partition_count());
                            let code = match &outcome {
                                Ok(()) => NONE,
                                Err(ResponseError::UnknownTopicOrPartition) if !exists => {
                                    ResponseError::UnknownTopicOrPartition.code()
                                }
                                Err(ResponseError::UnknownTopicOrPartition) => {
                                    ResponseError::OperationNotAttempted.code()
                                }
                                Err(e) => producer_fenced_for(*e, version, 2).code(),
                            };
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect()
}

pub fn handle(
    broker: &Broker,
    req: &AddPartitionsToTxnRequest,
    version: i16,
    caller: &super::Caller,
) -> AddPartitionsToTxnResponse {
    // v4+ come from brokers (KIP-890 verification).
    if version >= 4 && !caller.allowed_on_cluster(crate::security::acl::AclOperation::ClusterAction)
    {
        return AddPartitionsToTxnResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    if version <= 3 {
        let p = ProducerIdent {
            producer_id: req.v3_and_below_producer_id.0,
            producer_epoch: req.v3_and_below_producer_epoch,
        };
        let results = one(
            broker,
            req.v3_and_below_transactional_id.0.as_str(),
            p,
            &req.v3_and_below_topics,
            false,
            version,
            caller,
        );
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    AddPartitionsToTxnResponse::default()
        .with_error_code(NONE)
        .with_results_by_transaction(
            req.transactions
                .iter()
                .map(|t| {
                    let p = ProducerIdent {
                        producer_id: t.producer_id.0,
                        producer_epoch: t.producer_epoch,
                    };
                    AddPartitionsToTxnResult::default()
                        .with_transactional_id(t.transactional_id.clone())
                        .with_topic_results(one(
                            broker,
                            t.transactional_id.0.as_str(),
                            p,
                            &t.topics,
                            t.verify_only,
                            version,
                            caller,
                        ))
                })
                .collect(),
        )
}
