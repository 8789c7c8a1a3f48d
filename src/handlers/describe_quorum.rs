//! DescribeQuorum (key 55, v0-2): the metadata quorum as the active controller sees it:
//! leader, epoch, high watermark, each voter's log end offset (`__cluster_metadata`
//! partition 0, as KRaft names its log). Any broker answers: the request goes to the
//! active controller. v2 adds the voters' controller endpoints.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};

use super::{controller_failure, str_bytes, Broker};
use crate::meta::controller::{ControllerRequest, ControllerResponse, ReplicaProgress};

/// The name Kafka gives the metadata log.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

pub async fn handle(
    broker: &Broker,
    req: &DescribeQuorumRequest,
    version: i16,
    caller: &super::Caller,
) -> DescribeQuorumResponse {
    if let Some(code) = caller.cluster_refusal(crate::security::acl::AclOperation::Describe) {
        return DescribeQuorumResponse::default()
            .with_error_code(code.code())
            .with_error_message(
                (version >= 2).then(|| str_bytes("DescribeQuorum needs DESCRIBE on the cluster")),
            );
    }
    let state = match broker.meta.submit(ControllerRequest::DescribeQuorum).await {
        Ok(ControllerResponse::Quorum(q)) => Ok(q),
        Ok(other) => Err((
            ResponseError::UnknownServerError,
            format!("unexpected answer {other:?}"),
        )),
        Err(e) => Err(controller_failure(&e)),
    };
    let state = match state {
        Ok(s) => s,
        Err((code, message)) => {
            return DescribeQuorumResponse::default()
                .with_error_code(code.code())
                .with_error_message((version >= 2).then(|| str_bytes(message)))
        }
    };
    let replica = |r: &ReplicaProgress| {
        ReplicaState::default()
            .with_replica_id(BrokerId(r.id))
            .with_log_end_offset(r.log_end_offset)
            .with_last_fetch_timestamp(r.last_fetch_ms)
            .with_last_caught_up_timestamp(r.last_caught_up_ms)
    };
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = PartitionData::default().with_partition_index(p.partition_index);
                    if t.topic_name.0.as_str() != METADATA_TOPIC || p.partition_index != 0 {
                        return base.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    }
                    base.with_leader_id(BrokerId(state.leader))
                        .with_leader_epoch(i32::try_from(state.epoch).unwrap_or(i32::MAX))
                        .with_high_watermark(state.high_watermark)
                        .with_current_voters(state.voters.iter().map(replica).collect())
                        .with_observers(state.observers.iter().map(replica).collect())
                })
                .collect();
            TopicData::default()
                .with_topic_name(TopicName(t.topic_name.0.clone()))
                .with_partitions(partitions)
        })
        .collect();
    let nodes = if version >= 2 {
        broker
            .meta
            .voters()
            .iter()
            .filter_map(|(id, addr)| {
                let (host, port) = addr.rsplit_once(':')?;
                Some(
                    Node::default()
                        .with_node_id(BrokerId(*id as i32))
                        .with_listeners(vec![Listener::default()
                            .with_name(str_bytes("CONTROLLER".to_string()))
                            .with_host(str_bytes(
                                host.trim_matches(|c| c == '[' || c == ']').to_string(),
                            ))
                            .with_port(port.parse().unwrap_or(0))]),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    DescribeQuorumResponse::default()
        .with_topics(topics)
        .with_nodes(nodes)
}
