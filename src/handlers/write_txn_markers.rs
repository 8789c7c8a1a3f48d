//! WriteTxnMarkers (key 27, v1): a transaction coordinator on another broker has this broker,
//! the partitions' leader, write a transaction's commit or abort marker. Each partition is
//! written as leader (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION otherwise); on a
//! `__consumer_offsets` partition through its group coordinator, which applies or drops the
//! transaction's offset commits (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS otherwise). A
//! marker of an older coordinator epoch is TRANSACTION_COORDINATOR_FENCED, of an older
//! producer epoch INVALID_PRODUCER_EPOCH. Runs on the blocking pool (appends, fsync). Only
//! brokers send it: with `authorizer = "acl"` it needs CLUSTER_ACTION on the cluster, else
//! every partition is CLUSTER_AUTHORIZATION_FAILED and nothing is written.

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::{Broker, NONE};
use crate::txn::markers::{write_local, Marker};

pub fn handle(
    broker: &Broker,
    req: &WriteTxnMarkersRequest,
    caller: &super::Caller,
) -> WriteTxnMarkersResponse {
    let refused = caller.cluster_refusal(crate::security::acl::AclOperation::ClusterAction);
    let markers = req
        .markers
        .iter()
        .map(|m| {
            let marker = Marker {
                producer_id: m.producer_id.0,
                producer_epoch: m.producer_epoch,
                commit: m.transaction_result,
                coordinator_epoch: m.coordinator_epoch,
            };
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(
                    m.topics
                        .iter()
                        .map(|t| {
                            WritableTxnMarkerTopicResult::default()
                                .with_name(t.name.clone())
                                .with_partitions(
                                    t.partition_indexes
                                        .iter()
                                        .map(|&p| {
                                            let written = match refused {
                                                Some(code) => Err(code),
                                                None => write_local(
                                                    &broker.topics,
                                                    &broker.groups,
                                                    &marker,
                                                    t.name.0.as_str(),
                                                    p,
                                                ),
                                            };
                                            let code = match written {
                                                Ok(()) => NONE,
                                                Err(e) => e.code(),
                                            };
                                            WritableTxnMarkerPartitionResult::default()
                                                .with_partition_index(p)
                                                .with_error_code(code)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                )
        })
        .collect();
    WriteTxnMarkersResponse::default().with_markers(markers)
}
