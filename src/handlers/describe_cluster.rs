//! DescribeCluster (key 60): cluster id, the active controller and the registered brokers,
//! from the metadata image (fenced ones only when asked, v2+).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{str_bytes, Broker};

/// `endpoint_type` 1 = brokers (KIP-919); 2 = controllers, which a broker does not serve.
const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub fn handle(
    broker: &Broker,
    req: &DescribeClusterRequest,
    listener: crate::config::SecurityProtocol,
    caller: &super::Caller,
) -> DescribeClusterResponse {
    if req.endpoint_type != ENDPOINT_TYPE_BROKERS {
        return DescribeClusterResponse::default()
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes("This endpoint serves brokers only")))
            .with_endpoint_type(req.endpoint_type);
    }
    let image = broker.meta.image();
    DescribeClusterResponse::default()
        .with_endpoint_type(ENDPOINT_TYPE_BROKERS)
        .with_cluster_id(str_bytes(broker.node.cluster_id.clone()))
        .with_controller_id(super::admin_controller_id(broker))
        .with_brokers(
            image
                .brokers
                .values()
                .filter(|b| req.include_fenced_brokers || !b.fenced)
                .filter_map(|b| {
                    let e = b.endpoint(listener)?;
                    Some(
                        DescribeClusterBroker::default()
                            .with_broker_id(BrokerId(b.id))
                            .with_host(str_bytes(e.host.clone()))
                            .with_port(i32::from(e.port))
                            .with_rack(b.rack.clone().map(str_bytes))
                            .with_is_fenced(b.fenced),
                    )
                })
                .collect(),
        )
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            caller.authorized_operations(
                crate::security::acl::ResourceType::Cluster,
                crate::security::acl::CLUSTER_NAME,
                super::metadata::CLUSTER_OPERATIONS_ALL,
            )
        } else {
            i32::MIN
        })
}
