//! AlterPartitionReassignments (key 45, v0-1): moves partitions to new replicas, or cancels a
//! move (a null replica list), decided by the active controller (`meta::reassign`): the new
//! replicas join as followers, and once they are in the ISR the partition switches to the
//! target and the leaving replicas delete their copies. Per partition: NONE (started, or
//! done at once), UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICA_ASSIGNMENT (empty, a broker
//! twice, an unregistered broker, a partition named twice), NO_REASSIGNMENT_IN_PROGRESS (a
//! cancel with none), INVALID_REPLICATION_FACTOR (v1 with `allow_replication_factor_change`
//! false and a target of another size, KIP-860). A controller out of reach answers every
//! partition and the top level with its error.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, TopicName,
};

use super::{controller_failure, str_bytes, Broker, NONE};
use crate::meta::controller::{ControllerRequest, ControllerResponse};
use crate::meta::reassign::ReassignError;

fn code(e: &ReassignError) -> (ResponseError, String) {
    match e {
        ReassignError::Unknown => (
            ResponseError::UnknownTopicOrPartition,
            "unknown topic or partition".into(),
        ),
        ReassignError::Invalid(why) => (ResponseError::InvalidReplicaAssignment, why.clone()),
        ReassignError::NoneInProgress => (
            ResponseError::NoReassignmentInProgress,
            "no reassignment in progress".into(),
        ),
        ReassignError::ReplicationFactorChange => (
            ResponseError::InvalidReplicationFactor,
            "the reassignment changes the replication factor".into(),
        ),
    }
}

pub async fn handle(
    broker: &Broker,
    req: &AlterPartitionReassignmentsRequest,
    version: i16,
    caller: &super::Caller,
) -> AlterPartitionReassignmentsResponse {
    let items: Vec<(String, i32, Option<Vec<i32>>)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.replicas
                        .as_ref()
                        .map(|rs| rs.iter().map(|r| r.0).collect()),
                )
            })
        })
        .collect();
    let allow_rf_change = version < 1 || req.allow_replication_factor_change;
    if let Some(code) = caller.cluster_refusal(crate::security::acl::AclOperation::Alter) {
        // Kafka answers the top level only.
        return AlterPartitionReassignmentsResponse::default()
            .with_allow_replication_factor_change(allow_rf_change)
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(
                "AlterPartitionReassignments needs ALTER on the cluster",
            )));
    }
    let answer = broker
        .meta
        .submit(ControllerRequest::AlterReassignments {
            items: items.clone(),
            allow_rf_change,
        })
        .await;
    let (top, results): (Option<(ResponseError, String)>, Vec<_>) = match answer {
        Ok(ControllerResponse::Reassignments { results }) => (
            None,
            results
                .into_iter()
                .map(|(t, p, e)| (t, p, e.as_ref().map(code)))
                .collect(),
        ),
        Ok(other) => {
            let e = (
                ResponseError::UnknownServerError,
                format!("unexpected answer {other:?}"),
            );
            let all = items
                .into_iter()
                .map(|(t, p, _)| (t, p, Some(e.clone())))
                .collect();
            (Some(e), all)
        }
        Err(err) => {
            let e = controller_failure(&err);
            let all = items
                .into_iter()
                .map(|(t, p, _)| (t, p, Some(e.clone())))
                .collect();
            (Some(e), all)
        }
    };
    let mut responses: Vec<ReassignableTopicResponse> = Vec::new();
    for (topic, partition, error) in results {
        let (error_code, message) = match error {
            None => (NONE, None),
            Some((c, m)) => (c.code(), Some(str_bytes(m))),
        };
        let r = ReassignablePartitionResponse::default()
            .with_partition_index(partition)
            .with_error_code(error_code)
            .with_error_message(message);
        match responses.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(r),
            None => responses.push(
                ReassignableTopicResponse::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partitions(vec![r]),
            ),
        }
    }
    let (top_code, top_message) = match top {
        None => (NONE, None),
        Some((c, m)) => (c.code(), Some(str_bytes(m))),
    };
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change)
        .with_error_code(top_code)
        .with_error_message(top_message)
        .with_responses(responses)
}
