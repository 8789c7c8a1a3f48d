//! OffsetCommit (key 8): validates the committer against its group (generation, member id,
//! instance id) and stores the offsets in `__consumer_offsets`; with a flush policy asking for
//! it the answer waits until they are durable.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;

use std::sync::Arc;

use super::Broker;
use crate::cluster::Topic;
use crate::groups::{CommittedOffset, Durability};

pub async fn handle(
    broker: &Arc<Broker>,
    req: &OffsetCommitRequest,
    caller: &super::Caller,
) -> OffsetCommitResponse {
    use crate::security::acl::{AclOperation, ResourceType};
    let now = broker.clock.now_ms();
    let group_allowed = caller.allowed(
        AclOperation::Read,
        ResourceType::Group,
        req.group_id.0.as_str(),
    );
    // Topics the caller may not read: TOPIC_AUTHORIZATION_FAILED, not committed (Kafka).
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
    let fit = super::internal_strings_fit(
        [req.group_id.0.as_str(), req.member_id.as_str()]
            .into_iter()
            .chain(req.group_instance_id.as_ref().map(|s| s.as_str()))
            .chain(req.topics.iter().map(|t| t.name.0.as_str())),
    );
    let coordinator = if !group_allowed {
        Err(ResponseError::GroupAuthorizationFailed)
    } else if req.group_id.0.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        broker.groups.for_group(req.group_id.0.as_str())
    };
    let result = match (fit, coordinator) {
        (false, _) => Err(ResponseError::InvalidRequest),
        (true, Err(e)) => Err(e),
        (true, Ok(b)) => {
            // The commit appends to `__consumer_offsets` (a roll there may create a file): off
            // the runtime.
            let (group, generation) = (
                req.group_id.0.to_string(),
                req.generation_id_or_member_epoch,
            );
            let (member, instance) = (
                req.member_id.to_string(),
                req.group_instance_id.as_ref().map(|s| s.to_string()),
            );
            crate::threads::spawn_blocking(move || {
                b.commit_offsets(&group, generation, &member, instance.as_deref(), offsets)
            })
            .await
            .unwrap_or(Err(ResponseError::UnknownServerError))
        }
    };
    let errors = settle(result, count).await;
    let mut errors = errors.into_iter();
    OffsetCommitResponse::default().with_topics(
        req.topics
            .iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let code = if !group_allowed {
                                    ResponseError::GroupAuthorizationFailed.code()
                                } else if denied.contains(t.name.0.as_str()) {
                                    ResponseError::TopicAuthorizationFailed.code()
                                } else {
                                    errors.next().unwrap_or_default()
                                };
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// An offset as the group coordinator stores it.
pub(super) fn committed(
    offset: i64,
    leader_epoch: i32,
    metadata: Option<&StrBytes>,
    now: i64,
) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch,
        metadata: metadata.map(|m| m.to_string()).unwrap_or_default(),
        commit_timestamp_ms: now,
    }
}

/// Whether `topic` (if it exists) has partition `index`.
pub(super) fn partition_exists(topic: Option<&Topic>, index: i32) -> bool {
    topic.is_some_and(|t| index >= 0 && index < t.partition_count())
}

/// The per-partition error codes of a commit (`count` partitions), once it is committed: a
/// write that was not (a failed fsync, a timeout waiting for the in-sync replicas, a lost
/// leadership) turns every code into its error (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE,
/// as Kafka's coordinator).
pub(super) async fn settle(
    result: Result<(Vec<i16>, Durability), ResponseError>,
    count: usize,
) -> Vec<i16> {
    match result {
        Err(e) => vec![e.code(); count],
        Ok((errors, Durability::Done)) => errors,
        Ok((mut errors, durability)) => {
            if let Err(e) = super::durable(durability).await {
                errors.iter_mut().for_each(|code| *code = e.code());
            }
            errors
        }
    }
}
