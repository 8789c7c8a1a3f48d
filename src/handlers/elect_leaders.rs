//! ElectLeaders (key 43, v0-2): preferred-leader elections (election type 0; v0 knows only
//! these) and unclean elections of offline partitions (type 1, v1+), decided by the active
//! controller (`meta::election::elect`) and applied before the answer. Per partition:
//! NONE (elected), ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE,
//! ELIGIBLE_LEADERS_NOT_AVAILABLE or UNKNOWN_TOPIC_OR_PARTITION; a null partition list means
//! every partition, answered only for those that needed an election, as Kafka does. A
//! controller that cannot be reached answers every requested partition with its error (v1+
//! also at the top level).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};

use super::{controller_failure, str_bytes, Broker, NONE};
use crate::meta::controller::{ControllerRequest, ControllerResponse};
use crate::meta::election::{ElectionError, ElectionType};

/// One partition's answer: topic, index, error code, error message.
type Outcome = (String, i32, i16, Option<String>);

fn code(e: ElectionError) -> ResponseError {
    match e {
        ElectionError::Unknown => ResponseError::UnknownTopicOrPartition,
        ElectionError::NotNeeded => ResponseError::ElectionNotNeeded,
        ElectionError::PreferredNotAvailable => ResponseError::PreferredLeaderNotAvailable,
        ElectionError::EligibleNotAvailable => ResponseError::EligibleLeadersNotAvailable,
    }
}

pub async fn handle(
    broker: &Broker,
    req: &ElectLeadersRequest,
    version: i16,
    caller: &super::Caller,
) -> ElectLeadersResponse {
    let requested: Option<Vec<(String, i32)>> = req.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.topic.0.to_string(), *p))
                    .collect::<Vec<_>>()
            })
            .collect()
    });
    let kind = match (version, req.election_type) {
        (0, _) | (_, 0) => Some(ElectionType::Preferred),
        (_, 1) => Some(ElectionType::Unclean),
        _ => None,
    };
    let refused = caller.cluster_refusal(crate::security::acl::AclOperation::Alter);
    let outcome = match kind {
        _ if refused.is_some() => Err((
            ResponseError::ClusterAuthorizationFailed,
            "ElectLeaders needs ALTER on the cluster".to_string(),
        )),
        None => Err((
            ResponseError::InvalidRequest,
            format!("unknown election type {}", req.election_type),
        )),
        Some(kind) => match broker
            .meta
            .submit(ControllerRequest::ElectLeaders {
                kind,
                partitions: requested.clone(),
            })
            .await
        {
            Ok(ControllerResponse::Elections { results }) => Ok(results),
            Ok(other) => Err((
                ResponseError::UnknownServerError,
                format!("unexpected answer {other:?}"),
            )),
            Err(e) => Err(controller_failure(&e)),
        },
    };
    let (top, results): (i16, Vec<Outcome>) = match outcome {
        Ok(results) => (
            NONE,
            results
                .into_iter()
                .map(|(t, p, e)| match e {
                    None => (t, p, NONE, None),
                    Some(e) => {
                        let c = code(e);
                        (t, p, c.code(), Some(c.to_string()))
                    }
                })
                .collect(),
        ),
        Err((code, message)) => (
            code.code(),
            requested
                .unwrap_or_default()
                .into_iter()
                .map(|(t, p)| (t, p, code.code(), Some(message.clone())))
                .collect(),
        ),
    };
    let mut by_topic: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, error_code, message) in results {
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(error_code)
            .with_error_message(message.map(str_bytes));
        match by_topic.iter_mut().find(|r| r.topic.0.as_str() == topic) {
            Some(r) => r.partition_result.push(result),
            None => by_topic.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(str_bytes(topic)))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    ElectLeadersResponse::default()
        .with_error_code(if version >= 1 { top } else { NONE })
        .with_replica_election_results(by_topic)
}
