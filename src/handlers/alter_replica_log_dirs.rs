//! AlterReplicaLogDirs (key 34, v1-2): moves replicas held here to another of this broker's
//! log directories. ottla has one log directory per broker (DescribeLogDirs names it; in
//! memory mode `memory`), so the only destination there is is the current one, and moving a
//! replica to the directory it is in is a no-op that succeeds, as in Kafka. Per partition:
//! NONE for a replica held here and this broker's directory; LOG_DIR_NOT_FOUND for any other
//! path; REPLICA_NOT_AVAILABLE for a partition this broker holds no replica of (Kafka's
//! answer when the partition is unknown here). With `authorizer = "acl"` it needs ALTER on
//! the cluster, else every partition is CLUSTER_AUTHORIZATION_FAILED.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::{AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse};

use super::describe_log_dirs::MEMORY_LOG_DIR;
use super::{Broker, NONE};

pub fn handle(
    broker: &Broker,
    req: &AlterReplicaLogDirsRequest,
    caller: &super::Caller,
) -> AlterReplicaLogDirsResponse {
    let refused = caller.cluster_refusal(crate::security::acl::AclOperation::Alter);
    let ours = match broker.topics.log_dir() {
        None => MEMORY_LOG_DIR.to_string(),
        Some(dir) => dir.to_string_lossy().into_owned(),
    };
    let mut results: Vec<AlterReplicaLogDirTopicResult> = Vec::new();
    for dir in &req.dirs {
        let known_dir = dir.path.as_str() == ours;
        for t in &dir.topics {
            let topic = broker.topics.get(t.name.0.as_str());
            let partitions = t.partitions.iter().map(|&index| {
                let held = topic
                    .as_ref()
                    .is_some_and(|topic| topic.partitions().iter().any(|p| p.index() == index));
                let code = match refused {
                    Some(code) => code.code(),
                    None if !known_dir => ResponseError::LogDirNotFound.code(),
                    None if !held => ResponseError::ReplicaNotAvailable.code(),
                    None => NONE,
                };
                AlterReplicaLogDirPartitionResult::default()
                    .with_partition_index(index)
                    .with_error_code(code)
            });
            match results.iter_mut().find(|r| r.topic_name == t.name) {
                Some(r) => r.partitions.extend(partitions),
                None => results.push(
                    AlterReplicaLogDirTopicResult::default()
                        .with_topic_name(t.name.clone())
                        .with_partitions(partitions.collect()),
                ),
            }
        }
    }
    AlterReplicaLogDirsResponse::default().with_results(results)
}
