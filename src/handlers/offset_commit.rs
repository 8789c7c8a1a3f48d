//! OffsetCommit (key 8): validates the committer against its group (generation, member id,
//! instance id) and stores the offsets in `__consumer_offsets`; with a flush policy asking for
//! it the answer waits until they are durable.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::Broker;
use crate::groups::CommittedOffset;
use crate::log::now_ms;

pub async fn handle(broker: &Broker, req: &OffsetCommitRequest) -> OffsetCommitResponse {
    let now = now_ms();
    let mut offsets = Vec::new();
    for t in &req.topics {
        let topic = broker.topics.get(t.name.0.as_str());
        for p in &t.partitions {
            let exists = topic.as_ref().is_some_and(|topic| {
                p.partition_index >= 0 && p.partition_index < topic.partition_count()
            });
            offsets.push((
                t.name.0.to_string(),
                p.partition_index,
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    commit_timestamp_ms: now,
                },
                exists,
            ));
        }
    }
    let count = offsets.len();
    let errors = match broker.groups.commit_offsets(
        req.group_id.0.as_str(),
        req.generation_id_or_member_epoch,
        req.member_id.as_str(),
        req.group_instance_id.as_ref().map(|s| s.as_str()),
        offsets,
    ) {
        Err(e) => vec![e.code(); count],
        Ok((errors, None)) => errors,
        Ok((mut errors, Some(upto))) => {
            let log = broker.groups.log().clone();
            let synced = tokio::task::spawn_blocking(move || log.sync_to(upto)).await;
            if !matches!(synced, Ok(Ok(()))) {
                tracing::error!("fsync of committed offsets failed");
                let storage = kafka_protocol::error::ResponseError::KafkaStorageError.code();
                errors.iter_mut().for_each(|e| *e = storage);
            }
            errors
        }
    };
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
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(errors.next().unwrap_or_default())
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
