//! TxnOffsetCommit (key 28): offsets committed as part of a transaction; they become visible
//! (OffsetFetch) only when the transaction commits.

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use std::sync::Arc;

use super::offset_commit::{committed, partition_exists, settle};
use super::Broker;
use crate::groups::OFFSETS_TOPIC;
use crate::txn::coordinator::ProducerIdent;
use kafka_protocol::error::ResponseError;

pub async fn handle(
    broker: &Arc<Broker>,
    req: &TxnOffsetCommitRequest,
    version: i16,
    caller: &super::Caller,
) -> TxnOffsetCommitResponse {
    use crate::security::acl::{AclOperation, ResourceType};
    let now = broker.clock.now_ms();
    // Kafka: WRITE on the transactional id and READ on the group fail the whole request;
    // topics without READ get TOPIC_AUTHORIZATION_FAILED, the others are committed.
    let refused = if !caller.allowed(
        AclOperation::Write,
        ResourceType::TransactionalId,
        req.transactional_id.0.as_str(),
    ) {
        Some(ResponseError::TransactionalIdAuthorizationFailed)
    } else if !caller.allowed(
        AclOperation::Read,
        ResourceType::Group,
        req.group_id.0.as_str(),
    ) {
        Some(ResponseError::GroupAuthorizationFailed)
    } else {
        None
    };
    let denied = caller.denied_topics(
        AclOperation::Read,
        req.topics.iter().map(|t| t.name.0.as_str()),
    );
    let mut offsets = Vec::new();
    for t in req
        .topics
        .iter()
        .filter(|t| !denied.contains(t.name.0.as_str()))
    {
        let topic = broker.topics.get(t.name.0.as_str());
        for p in &t.partitions {
            offsets.push((
                t.name.0.to_string(),
                p.partition_index,
                committed(
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.committed_metadata.as_ref(),
                    now,
                ),
                partition_exists(topic.as_deref(), p.partition_index),
            ));
        }
    }
    let count = offsets.len();
    let ident = ProducerIdent {
        producer_id: req.producer_id.0,
        producer_epoch: req.producer_epoch,
    };
    let member = (version >= 3).then(|| {
        (
            req.generation_id,
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|s| s.as_str()),
        )
    });
    let fit = super::internal_strings_fit(
        [
            req.transactional_id.0.as_str(),
            req.group_id.0.as_str(),
            req.member_id.as_str(),
        ]
        .into_iter()
        .chain(req.group_instance_id.as_ref().map(|s| s.as_str()))
        .chain(req.topics.iter().map(|t| t.name.0.as_str())),
    );
    let result = if let Some(e) = refused {
        Err(e)
    } else if !fit {
        Err(kafka_protocol::error::ResponseError::InvalidRequest)
    } else if req.group_id.0.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        broker.groups.for_group(req.group_id.0.as_str())
    };
    let transactional_id = req.transactional_id.0.as_str();
    let result = match result {
        Ok(coordinator) => {
            let verified = match broker.txns.is_ongoing(transactional_id, ident) {
                // The transaction's coordinator is another broker: it is asked whether the
                // group's partition is in the transaction (AddPartitionsToTxn `verify_only`).
                Err(ResponseError::NotCoordinator) => {
                    let partition = coordinator.partition();
                    broker
                        .txn_verifier
                        .verify_remote(transactional_id, ident, OFFSETS_TOPIC, partition)
                        .await
                }
                other => other,
            };
            // Kafka's group coordinator checks the producer through the transaction
            // coordinator's verification, which answers a fenced producer with
            // INVALID_PRODUCER_EPOCH (`AddPartitionsToTxnManager`), at every version.
            verified
                .map_err(|e| match e {
                    ResponseError::ProducerFenced => ResponseError::InvalidProducerEpoch,
                    e => e,
                })
                .map(|()| coordinator)
        }
        Err(e) => Err(e),
    };
    let result = result.map(|coordinator| {
        let group = req.group_id.0.to_string();
        let member = member.map(|(generation, id, instance)| {
            (generation, id.to_string(), instance.map(str::to_string))
        });
        // Appends to `__consumer_offsets`: off the runtime.
        crate::threads::spawn_blocking(move || {
            let member = member
                .as_ref()
                .map(|(generation, id, instance)| (*generation, id.as_str(), instance.as_deref()));
            coordinator.commit_txn_offsets(
                &group,
                ident.producer_id,
                ident.producer_epoch,
                member,
                offsets,
            )
        })
    });
    let result = match result {
        Ok(commit) => commit
            .await
            .unwrap_or(Err(ResponseError::UnknownServerError)),
        Err(e) => Err(e),
    };
    let errors = settle(result, count).await;
    let mut errors = errors.into_iter();
    TxnOffsetCommitResponse::default().with_topics(
        req.topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let code = match refused {
                                    Some(e) => e.code(),
                                    None if denied.contains(t.name.0.as_str()) => {
                                        ResponseError::TopicAuthorizationFailed.code()
                                    }
                                    None => errors.next().unwrap_or_default(),
                                };
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
