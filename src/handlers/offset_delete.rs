//! OffsetDelete (key 47): deletes a group's committed offsets for some partitions, refused per
//! partition (GROUP_SUBSCRIBED_TO_TOPIC) while the group's members consume that topic. With
//! `authorizer = "acl"`, as Kafka: the group needs DELETE (else GROUP_AUTHORIZATION_FAILED for
//! the request) and each topic READ (else TOPIC_AUTHORIZATION_FAILED for its partitions).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use std::sync::Arc;

use super::{durable, Broker, NONE};

pub async fn handle(
    broker: &Arc<Broker>,
    req: &OffsetDeleteRequest,
    caller: &super::Caller,
) -> OffsetDeleteResponse {
    use crate::security::acl::{AclOperation, ResourceType};
    if let Some(code) = caller.refusal(
        AclOperation::Delete,
        ResourceType::Group,
        req.group_id.0.as_str(),
    ) {
        return OffsetDeleteResponse::default().with_error_code(code.code());
    }
    let denied = caller.denied_topics(
        AclOperation::Read,
        req.topics.iter().map(|t| t.name.0.as_str()),
    );
    let mut partitions = Vec::new();
    // Per requested partition, the error decided before the deletion, if any.
    let mut refused: Vec<Option<ResponseError>> = Vec::new();
    for t in &req.topics {
        let topic = broker.topics.get(t.name.0.as_str());
        for p in &t.partitions {
            let exists = topic.as_ref().is_some_and(|topic| {
                p.partition_index >= 0 && p.partition_index < topic.partition_count()
            });
            let error = if denied.contains(t.name.0.as_str()) {
                Some(ResponseError::TopicAuthorizationFailed)
            } else if !exists {
                Some(ResponseError::UnknownTopicOrPartition)
            } else {
                partitions.push((t.name.0.to_string(), p.partition_index));
                None
            };
            refused.push(error);
        }
    }
    // The tombstones are appended to `__consumer_offsets` (a roll may create a file): off
    // the runtime.
    let coordinator = match broker.groups.for_group(req.group_id.0.as_str()) {
        Ok(c) => c,
        Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
    };
    let group = req.group_id.0.to_string();
    let deleted =
        crate::threads::spawn_blocking(move || coordinator.delete_offsets(&group, &partitions))
            .await
            .unwrap_or(Err(ResponseError::UnknownServerError));
    let results = match deleted {
        Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
        Ok(r) => r,
    };
    let (results, durability) = results;
    // Acknowledged once the tombstones are as durable as the flush policy promises.
    if let Err(e) = durable(durability).await {
        return OffsetDeleteResponse::default().with_error_code(e.code());
    }
    let mut results = results.into_iter();
    let mut refused = refused.into_iter();
    OffsetDeleteResponse::default()
        .with_error_code(NONE)
        .with_topics(
            req.topics
                .iter()
                .map(|t| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    let error = match refused.next().flatten() {
                                        Some(e) => e.code(),
                                        None => results.next().unwrap_or(NONE),
                                    };
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(error)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}
