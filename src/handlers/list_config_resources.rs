//! ListConfigResources (key 74; v0 was KIP-1000's ListClientMetricsResources, v1 is
//! KIP-1142's): the resources whose configs DescribeConfigs can show. v0 lists client-metrics
//! resources only; v1 the types asked for, or every type when none is named. As Kafka 4.1:
//! the caller needs DESCRIBE_CONFIGS on the cluster (else CLUSTER_AUTHORIZATION_FAILED), an
//! unknown type fails the whole request with UNSUPPORTED_VERSION. Topics and brokers come from the metadata image (the
//! whole cluster's, the same on every broker); broker loggers are listed per broker as
//! Kafka does. ottla has no client-metrics (KIP-714) or group config resources yet, so those
//! types list nothing.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_config_resources_response::ConfigResource;
use kafka_protocol::messages::{ListConfigResourcesRequest, ListConfigResourcesResponse};

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_BROKER_LOGGER, RESOURCE_TOPIC};
use super::{str_bytes, Broker};
use crate::security::acl::AclOperation;

/// Kafka's `ConfigResource.Type.CLIENT_METRICS`.
pub const RESOURCE_CLIENT_METRICS: i8 = 16;
/// Kafka's `ConfigResource.Type.GROUP`.
pub const RESOURCE_GROUP: i8 = 32;

/// Every type v1 lists when the request names none.
const ALL: [i8; 5] = [
    RESOURCE_TOPIC,
    RESOURCE_BROKER,
    RESOURCE_BROKER_LOGGER,
    RESOURCE_CLIENT_METRICS,
    RESOURCE_GROUP,
];

pub fn handle(
    broker: &Broker,
    req: &ListConfigResourcesRequest,
    version: i16,
    caller: &super::Caller,
) -> ListConfigResourcesResponse {
    if !caller.allowed_on_cluster(AclOperation::DescribeConfigs) {
        return ListConfigResourcesResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let types: Vec<i8> = if version == 0 {
        vec![RESOURCE_CLIENT_METRICS]
    } else if req.resource_types.is_empty() {
        ALL.to_vec()
    } else {
        req.resource_types.clone()
    };
    if let Some(t) = types.iter().find(|t| !ALL.contains(t)) {
        tracing::debug!(resource_type = t, "ListConfigResources of an unknown type");
        return ListConfigResourcesResponse::default()
            .with_error_code(ResponseError::UnsupportedVersion.code());
    }
    let image = broker.meta.image();
    let mut resources = Vec::new();
    let mut add = |name: String, resource_type: i8| {
        resources.push(
            ConfigResource::default()
                .with_resource_name(str_bytes(name))
                .with_resource_type(resource_type),
        )
    };
    for t in types {
        match t {
            RESOURCE_TOPIC => {
                let mut names: Vec<&str> = image.topics.values().map(|t| t.name.as_str()).collect();
                names.sort_unstable();
                for name in names {
                    add(name.to_string(), t);
                }
            }
            RESOURCE_BROKER | RESOURCE_BROKER_LOGGER => {
                // A single node without a quorum's registrations still is a broker.
                let ids: Vec<i32> = if image.brokers.is_empty() {
                    vec![broker.config.node_id]
                } else {
                    image.brokers.keys().copied().collect()
                };
                for id in ids {
                    add(id.to_string(), t);
                }
            }
            _ => {}
        }
    }
    ListConfigResourcesResponse::default().with_config_resources(resources)
}
