//! ListPartitionReassignments (key 46, v0): the reassignments in progress, from this broker's
//! metadata image (it follows the controller's log): per partition its replicas (target then
//! leaving), the adding and the removing ones. Null `topics` lists every one; named partitions
//! without a reassignment (or unknown) are left out, as Kafka does.

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};

use super::{str_bytes, Broker, NONE};
use crate::meta::reassign::in_progress;

pub fn handle(
    broker: &Broker,
    req: &ListPartitionReassignmentsRequest,
    caller: &super::Caller,
) -> ListPartitionReassignmentsResponse {
    if let Some(code) = caller.cluster_refusal(crate::security::acl::AclOperation::Describe) {
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(
                "ListPartitionReassignments needs DESCRIBE on the cluster",
            )));
    }
    let only: Option<Vec<(String, i32)>> = req.topics.as_ref().map(|ts| {
        ts.iter()
            .flat_map(|t| {
                t.partition_indexes
                    .iter()
                    .map(move |p| (t.name.0.to_string(), *p))
            })
            .collect()
    });
    let image = broker.meta.image();
    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    for o in in_progress(&image, only.as_deref()) {
        let p = OngoingPartitionReassignment::default()
            .with_partition_index(o.index)
            .with_replicas(ids(o.replicas))
            .with_adding_replicas(ids(o.adding))
            .with_removing_replicas(ids(o.removing));
        let topic = o.topic;
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partitions(vec![p]),
            ),
        }
    }
    ListPartitionReassignmentsResponse::default()
        .with_error_code(NONE)
        .with_topics(topics)
}
