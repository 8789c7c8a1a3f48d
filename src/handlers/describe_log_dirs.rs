//! DescribeLogDirs (key 35, v1-4): the log directories of this broker and, per directory,
//! the partitions it holds, as Kafka 4.1's `ReplicaManager.describeLogDirs` answers it.
//!
//! - One result per log directory: ottla has one, the data directory, named by its absolute
//!   path. In memory mode the partitions live in the broker's memory: the result is named
//!   `memory` and `total_bytes` / `usable_bytes` are -1 (the schema's "unknown").
//! - Null `topics`: every partition this broker holds a replica of (leader or follower,
//!   internal topics included); otherwise the named partitions that are held here. Partitions
//!   and topics not held here are simply absent (no error), and a topic left with no
//!   partition is left out.
//! - Per partition: `partition_size` is the bytes of its record batches in all segments
//!   (`PartitionLog::size_bytes`, known in memory, nothing stat'ed); `offset_lag` is Kafka's
//!   for a current (not future) log, max(0, high watermark - log end), so 0; `is_future_key`
//!   is false (no AlterReplicaLogDirs).
//! - v4's `total_bytes` / `usable_bytes`: the directory's file system (`statvfs`, on the
//!   blocking pool). When that fails the result carries KAFKA_STORAGE_ERROR and no topics
//!   (Kafka's answer for a directory it cannot use).
//! - Without DESCRIBE on the cluster (`authorizer = "acl"`): no results and the top-level
//!   `error_code` (v3+) CLUSTER_AUTHORIZATION_FAILED, as Kafka answers.

use std::collections::HashSet;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

use super::{str_bytes, topic_name, Broker, NONE};
use crate::cluster::Partition;

/// The directory name a memory-mode broker reports.
pub const MEMORY_LOG_DIR: &str = "memory";

pub async fn handle(
    broker: &Broker,
    req: &DescribeLogDirsRequest,
    caller: &super::Caller,
) -> DescribeLogDirsResponse {
    if let Some(code) = caller.cluster_refusal(crate::security::acl::AclOperation::Describe) {
        return DescribeLogDirsResponse::default().with_error_code(code.code());
    }
    let result = match broker.topics.log_dir() {
        None => DescribeLogDirsResult::default()
            .with_log_dir(str_bytes(MEMORY_LOG_DIR))
            .with_topics(topics(broker, req)),
        Some(dir) => {
            let name = str_bytes(dir.to_string_lossy());
            let path = dir.clone();
            let space =
                crate::threads::spawn_blocking(move || crate::log::fsutil::volume_space(&path))
                    .await;
            let result = DescribeLogDirsResult::default().with_log_dir(name);
            match space {
                // Java's FileStore sizes are longs; Kafka reports Long.MAX_VALUE for larger.
                Ok(Ok((total, usable))) => result
                    .with_total_bytes(i64::try_from(total).unwrap_or(i64::MAX))
                    .with_usable_bytes(i64::try_from(usable).unwrap_or(i64::MAX))
                    .with_topics(topics(broker, req)),
                Ok(Err(e)) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "DescribeLogDirs: cannot stat the log directory");
                    result.with_error_code(ResponseError::KafkaStorageError.code())
                }
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "DescribeLogDirs: stat task failed");
                    result.with_error_code(ResponseError::UnknownServerError.code())
                }
            }
        }
    };
    DescribeLogDirsResponse::default()
        .with_error_code(NONE)
        .with_results(vec![result])
}

/// The requested partitions held here, by topic name, each topic's by index.
fn topics(broker: &Broker, req: &DescribeLogDirsRequest) -> Vec<DescribeLogDirsTopic> {
    let wanted: Option<HashSet<(&str, i32)>> = req.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |&p| (t.topic.0.as_str(), p)))
            .collect()
    });
    broker
        .topics
        .list()
        .into_iter()
        .filter_map(|topic| {
            let mut partitions: Vec<DescribeLogDirsPartition> = topic
                .partitions()
                .iter()
                .filter(|p| {
                    wanted
                        .as_ref()
                        .is_none_or(|w| w.contains(&(topic.name.as_str(), p.index())))
                })
                .map(|p| describe(p))
                .collect();
            if partitions.is_empty() {
                return None;
            }
            partitions.sort_by_key(|p| p.partition_index);
            Some(
                DescribeLogDirsTopic::default()
                    .with_name(topic_name(topic.name.as_str()))
                    .with_partitions(partitions),
            )
        })
        .collect()
}

fn describe(p: &Partition) -> DescribeLogDirsPartition {
    let log = p.log();
    // Kafka's lag of a current log: its high watermark over its log end, never below 0.
    let lag = (log.high_watermark() - log.log_end_offset()).max(0);
    DescribeLogDirsPartition::default()
        .with_partition_index(p.index())
        .with_partition_size(i64::try_from(log.size_bytes()).unwrap_or(i64::MAX))
        .with_offset_lag(lag)
        .with_is_future_key(false)
}
