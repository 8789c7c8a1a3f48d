//! DescribeTopicPartitions (key 75, KIP-966): topics with their partitions, paginated by a
//! partition limit and a cursor. Kafka 3.8+ admin clients describe topics with it.
//!
//! As in Kafka: topics are answered in name order (all topics when none are named), the cursor
//! names the first topic and partition to describe and must be one of the requested topics, the
//! page holds at most `response_partition_limit` partitions (capped by the broker), and
//! `next_cursor` points at the first partition left out. With `authorizer = "acl"` a topic
//! needs DESCRIBE: when all topics are asked for, the others are left out; a named one is
//! answered TOPIC_AUTHORIZATION_FAILED. `topic_authorized_operations` is the caller's.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
};
use uuid::Uuid;

use super::metadata::TOPIC_OPERATIONS_ALL;
use super::{topic_name, Broker, NONE};

/// Kafka's `max.request.partition.size.limit` default: the most partitions in one answer.
pub const MAX_PARTITIONS_PER_RESPONSE: i32 = 2000;

pub fn handle(
    broker: &Broker,
    req: &DescribeTopicPartitionsRequest,
    caller: &super::Caller,
) -> DescribeTopicPartitionsResponse {
    use crate::security::acl::{AclOperation, ResourceType};
    let image = broker.meta.image();
    let mut names: Vec<String> = if req.topics.is_empty() {
        image
            .names
            .keys()
            .filter(|n| caller.permits(AclOperation::Describe, ResourceType::Topic, n))
            .cloned()
            .collect()
    } else {
        req.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort();
    names.dedup();

    let (first_topic, mut first_partition) = match &req.cursor {
        Some(c) => (Some(c.topic_name.0.to_string()), c.partition_index.max(0)),
        None => (None, 0),
    };
    if let Some(first) = &first_topic {
        if req.topics.is_empty() {
            names.retain(|n| n >= first);
        } else if !names.contains(first) {
            // Kafka fails the whole request: every requested topic carries the error.
            return DescribeTopicPartitionsResponse::default().with_topics(
                names
                    .into_iter()
                    .map(|n| error_topic(n, ResponseError::InvalidRequest))
                    .collect(),
            );
        } else {
            names.retain(|n| n >= first);
        }
    }

    let mut budget = if req.response_partition_limit > 0 {
        req.response_partition_limit
            .min(MAX_PARTITIONS_PER_RESPONSE)
    } else {
        MAX_PARTITIONS_PER_RESPONSE
    };
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names {
        if budget == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(name))
                    .with_partition_index(0),
            );
            break;
        }
        if !req.topics.is_empty()
            && !caller.allowed(AclOperation::Describe, ResourceType::Topic, &name)
        {
            topics.push(error_topic(name, ResponseError::TopicAuthorizationFailed));
            continue;
        }
        let Some(topic) = image.topic_by_name(&name) else {
            topics.push(error_topic(name, ResponseError::UnknownTopicOrPartition));
            continue;
        };
        let count = topic.partitions.len() as i32;
        let start = first_partition.min(count);
        first_partition = 0;
        let end = (start + budget).min(count);
        budget -= end - start;
        let partitions = topic.partitions[start as usize..end as usize]
            .iter()
            .zip(start..)
            .map(|(p, index)| {
                // As Kafka's: no error code, a leader whose broker is not registered is -1;
                // offline replicas are the fenced or unregistered ones.
                DescribeTopicPartitionsResponsePartition::default()
                    .with_error_code(NONE)
                    .with_partition_index(index)
                    .with_leader_id(BrokerId(image.reported_leader(p).unwrap_or(-1)))
                    .with_leader_epoch(p.leader_epoch)
                    .with_replica_nodes(p.replicas.iter().copied().map(BrokerId).collect())
                    .with_isr_nodes(p.isr.iter().copied().map(BrokerId).collect())
                    .with_offline_replicas(
                        image
                            .offline_replicas(p)
                            .into_iter()
                            .map(BrokerId)
                            .collect(),
                    )
                    .with_eligible_leader_replicas(Some(
                        p.elr.iter().copied().map(BrokerId).collect(),
                    ))
                    .with_last_known_elr(Some(
                        p.last_known_elr.iter().copied().map(BrokerId).collect(),
                    ))
            })
            .collect();
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_error_code(NONE)
                .with_name(Some(topic_name(topic.name.clone())))
                .with_topic_id(topic.id)
                .with_is_internal(topic.is_internal())
                .with_partitions(partitions)
                .with_topic_authorized_operations(caller.authorized_operations(
                    ResourceType::Topic,
                    &topic.name,
                    TOPIC_OPERATIONS_ALL,
                )),
        );
        if end < count {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(topic.name.clone()))
                    .with_partition_index(end),
            );
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}

fn error_topic(name: String, error: ResponseError) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(error.code())
        .with_name(Some(topic_name(name)))
        .with_topic_id(Uuid::nil())
        .with_topic_authorized_operations(i32::MIN)
}
