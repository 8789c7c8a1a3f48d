//! OffsetForLeaderEpoch (key 23, v2-4; KIP-279, KIP-320, KIP-392): where a leader epoch ends
//! in a partition's log. Per partition: the largest epoch not above the requested one and its
//! end offset (the start of the next epoch, the log end for the current one), from the
//! partition's epoch cache; (-1, -1) for an undefined or a too-new epoch. As Kafka 4.1
//! (`ReplicaManager.lastOffsetForLeaderEpoch`) only the leader answers, whoever asks
//! (`replica_id`, v3+, does not change the answer: consumers and followers alike), after the
//! request's `current_leader_epoch` is checked; the end offset is the log end, not bounded by
//! the high watermark (Kafka's `Partition.lastOffsetForLeaderEpoch` does not bound it).
//! Read-only and in memory: answered on the worker. With `authorizer = "acl"`: CLUSTER_ACTION
//! on the cluster (followers) or DESCRIBE on the topic (consumers, KIP-320), else the
//! topic's partitions are TOPIC_AUTHORIZATION_FAILED.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{partition_error_code, Broker, NONE};
use crate::cluster::TopicRef;

pub fn handle(
    broker: &Broker,
    req: &OffsetForLeaderEpochRequest,
    caller: &super::Caller,
) -> OffsetForLeaderEpochResponse {
    use crate::security::acl::{AclOperation, ResourceType, CLUSTER_NAME};
    let denied = if caller.permits(
        AclOperation::ClusterAction,
        ResourceType::Cluster,
        CLUSTER_NAME,
    ) {
        Default::default()
    } else {
        caller.denied_topics(
            AclOperation::Describe,
            req.topics.iter().map(|t| t.topic.0.as_str()),
        )
    };
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = EpochEndOffset::default().with_partition(p.partition);
                    if denied.contains(t.topic.0.as_str()) {
                        return base.with_error_code(
                            kafka_protocol::error::ResponseError::TopicAuthorizationFailed.code(),
                        );
                    }
                    // -1 means "do not check" (the partition lookup's rule).
                    match broker.topics.get_partition(
                        TopicRef::Name(t.topic.0.as_str()),
                        p.partition,
                        Some(p.current_leader_epoch),
                    ) {
                        Err(e) => base.with_error_code(partition_error_code(e).code()),
                        Ok(partition) => {
                            let leader_epoch = partition.leadership().leader_epoch;
                            let (epoch, end_offset) = partition
                                .log()
                                .end_offset_for_epoch_as_leader(p.leader_epoch, leader_epoch);
                            base.with_error_code(NONE)
                                .with_leader_epoch(epoch)
                                .with_end_offset(end_offset)
                        }
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
