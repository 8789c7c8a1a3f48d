//! DeleteRecords (key 21): moves each partition's log start offset (the low watermark) up to
//! the requested offset (-1: the high watermark); whole segments below it are removed. As in
//! Kafka: an offset below 0 or past the high watermark is OFFSET_OUT_OF_RANGE, a topic whose
//! `cleanup.policy` lacks `delete` is POLICY_VIOLATION, and an offset below the current start
//! changes nothing and answers the current low watermark. Each deletion makes the new start
//! durable (an fsynced checkpoint), so, like Produce's fsyncs, it runs off the async runtime,
//! the partitions concurrently. With `authorizer = "acl"` a topic needs DELETE, else its
//! partitions are TOPIC_AUTHORIZATION_FAILED.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::{partition_error_code, Broker, NONE};
use crate::cluster::TopicRef;
use crate::log::{LogError, PartitionLog};

/// A partition whose deletion is to run: where its result goes, the log, the offset.
struct Job {
    topic: usize,
    partition: usize,
    log: Arc<PartitionLog>,
    offset: i64,
}

pub async fn handle(
    broker: &Broker,
    req: &DeleteRecordsRequest,
    caller: &super::Caller,
) -> DeleteRecordsResponse {
    let denied = caller.denied_topics(
        crate::security::acl::AclOperation::Delete,
        req.topics.iter().map(|t| t.name.0.as_str()),
    );
    let mut jobs = Vec::new();
    let mut topics: Vec<DeleteRecordsTopicResult> = req
        .topics
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let partitions = t
                .partitions
                .iter()
                .enumerate()
                .map(|(pi, p)| {
                    let result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    if denied.contains(t.name.0.as_str()) {
                        return result
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code());
                    }
                    let log = match broker.topics.get_partition(
                        TopicRef::Name(t.name.0.as_str()),
                        p.partition_index,
                        None,
                    ) {
                        Ok(partition) => partition.log().clone(),
                        Err(e) => return result.with_error_code(partition_error_code(e).code()),
                    };
                    if !log.config().cleanup_delete {
                        return result.with_error_code(ResponseError::PolicyViolation.code());
                    }
                    jobs.push(Job {
                        topic: ti,
                        partition: pi,
                        log,
                        offset: p.offset,
                    });
                    result
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    let runs = jobs.into_iter().map(|job| async move {
        let log = job.log.clone();
        let offset = job.offset;
        let outcome = crate::threads::spawn_blocking(move || log.delete_records(offset)).await;
        (job, outcome)
    });
    for (job, outcome) in futures::future::join_all(runs).await {
        let name = &req.topics[job.topic].name.0;
        let partition = req.topics[job.topic].partitions[job.partition].partition_index;
        let result = &mut topics[job.topic].partitions[job.partition];
        match outcome {
            Ok(Ok(low_watermark)) => {
                tracing::info!(topic = %name, partition, low_watermark, "deleted records");
                result.error_code = NONE;
                result.low_watermark = low_watermark;
            }
            Ok(Err(LogError::OffsetOutOfRange { .. })) => {
                result.error_code = ResponseError::OffsetOutOfRange.code();
            }
            Ok(Err(e @ LogError::Io(_))) => {
                tracing::error!(topic = %name, partition, error = %e, "DeleteRecords failed");
                result.error_code = ResponseError::KafkaStorageError.code();
            }
            Ok(Err(e)) => {
                tracing::error!(topic = %name, partition, error = %e, "DeleteRecords failed");
                result.error_code = ResponseError::UnknownServerError.code();
            }
            Err(e) => {
                tracing::error!(topic = %name, partition, error = %e, "DeleteRecords task failed");
                result.error_code = ResponseError::UnknownServerError.code();
            }
        }
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
