//! DescribeProducers (key 61, KIP-664): the producers a partition's leader tracks (producer
//! id, epoch, last sequence and timestamp, the epoch of the coordinator that wrote its last
//! marker, the start of its ongoing transaction), what `kafka-transactions.sh
//! describe-producers` shows to find a hanging transaction. As Kafka's
//! `ReplicaManager.activeProducerState`: only the leader answers (NOT_LEADER_OR_FOLLOWER
//! elsewhere), an unknown partition is UNKNOWN_TOPIC_OR_PARTITION, and with `authorizer =
//! "acl"` a topic needs READ (else TOPIC_AUTHORIZATION_FAILED).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::{partition_error_code, str_bytes, Broker};
use crate::cluster::TopicRef;
use crate::security::acl::AclOperation;

pub fn handle(
    broker: &Broker,
    req: &DescribeProducersRequest,
    caller: &super::Caller,
) -> DescribeProducersResponse {
    let denied = caller.denied_topics(
        AclOperation::Read,
        req.topics.iter().map(|t| t.name.0.as_str()),
    );
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.as_str();
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&index| {
                    let fail = |e: ResponseError| {
                        PartitionResponse::default()
                            .with_partition_index(index)
                            .with_error_code(e.code())
                            .with_error_message(Some(str_bytes(e.to_string())))
                    };
                    if denied.contains(name) {
                        return fail(ResponseError::TopicAuthorizationFailed);
                    }
                    let partition =
                        match broker
                            .topics
                            .get_partition(TopicRef::Name(name), index, None)
                        {
                            Ok(p) => p,
                            Err(e) => return fail(partition_error_code(e)),
                        };
                    let producers = partition
                        .log()
                        .active_producers()
                        .into_iter()
                        .map(|p| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(p.producer_id))
                                .with_producer_epoch(i32::from(p.producer_epoch))
                                .with_last_sequence(p.last_sequence)
                                .with_last_timestamp(p.last_timestamp_ms)
                                .with_coordinator_epoch(p.coordinator_epoch)
                                .with_current_txn_start_offset(p.current_txn_start_offset)
                        })
                        .collect();
                    PartitionResponse::default()
                        .with_partition_index(index)
                        .with_active_producers(producers)
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
