//! DescribeCluster (key 60): cluster id, controller and brokers (this node).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};

use super::{str_bytes, Broker};

/// `endpoint_type` 1 = brokers (KIP-919); 2 = controllers, which a broker does not serve.
const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub fn handle(broker: &Broker, req: &DescribeClusterRequest) -> DescribeClusterResponse {
    if req.endpoint_type != ENDPOINT_TYPE_BROKERS {
        return DescribeClusterResponse::default()
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes("This endpoint serves brokers only")))
            .with_endpoint_type(req.endpoint_type);
    }
    let node = &broker.node;
    DescribeClusterResponse::default()
        .with_endpoint_type(ENDPOINT_TYPE_BROKERS)
        .with_cluster_id(str_bytes(node.cluster_id.clone()))
        .with_controller_id(broker.node_id())
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(broker.node_id())
            .with_host(str_bytes(node.host.clone()))
            .with_port(node.port)
            .with_rack(node.rack.clone().map(str_bytes))])
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            super::metadata::CLUSTER_OPERATIONS_ALL
        } else {
            i32::MIN
        })
}
