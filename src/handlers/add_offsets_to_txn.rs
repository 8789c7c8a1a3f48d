//! AddOffsetsToTxn (key 25): the transaction will commit offsets of a group: the
//! `__consumer_offsets` partition joins the transaction (its marker applies the offsets).

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::{producer_fenced_for, Broker, NONE};
use crate::coordinator::partitions::partition_for;
use crate::groups::OFFSETS_TOPIC;
use crate::txn::coordinator::ProducerIdent;

pub fn handle(
    broker: &Broker,
    req: &AddOffsetsToTxnRequest,
    version: i16,
    caller: &super::Caller,
) -> AddOffsetsToTxnResponse {
    use crate::security::acl::{AclOperation, ResourceType};
    use kafka_protocol::error::ResponseError as E;
    let txn = req.transactional_id.0.as_str();
    if !caller.allowed(AclOperation::Write, ResourceType::TransactionalId, txn) {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(E::TransactionalIdAuthorizationFailed.code());
    }
    if !caller.allowed(
        AclOperation::Read,
        ResourceType::Group,
        req.group_id.0.as_str(),
    ) {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(E::GroupAuthorizationFailed.code());
    }
    let p = ProducerIdent {
        producer_id: req.producer_id.0,
        producer_epoch: req.producer_epoch,
    };
    let error = if req.group_id.0.is_empty() {
        kafka_protocol::error::ResponseError::InvalidGroupId.code()
    } else if !super::internal_strings_fit([
        req.group_id.0.as_str(),
        req.transactional_id.0.as_str(),
    ]) {
        kafka_protocol::error::ResponseError::InvalidRequest.code()
    } else {
        // The group's `__consumer_offsets` partition joins the transaction (Kafka's
        // `partitionFor(groupId)`, from the topic's partition count, else the configured one).
        let group = req.group_id.0.as_str();
        let partition = broker.groups.partition_of(group).unwrap_or_else(|| {
            partition_for(group, broker.config.offsets_topic_num_partitions).unwrap_or(0)
        });
        match broker.txns.add_partitions(
            req.transactional_id.0.as_str(),
            p,
            &[(OFFSETS_TOPIC.to_string(), partition)],
            Some(group),
        ) {
            Ok(()) => NONE,
            Err(e) => producer_fenced_for(e, version, 2).code(),
        }
    };
    AddOffsetsToTxnResponse::default().with_error_code(error)
}
