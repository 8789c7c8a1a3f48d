//! DescribeClientQuotas v0-1 (key 48, KIP-546): the client quotas of the metadata image that
//! a filter matches, as Kafka's `ClientQuotasImage.describe` (`meta::client_quotas::describe`:
//! components EXACT / DEFAULT / SPECIFIED, `strict`). A bad filter is the answer's
//! INVALID_REQUEST (UNSUPPORTED_VERSION for an unknown entity type) with Kafka's message and
//! no entries. Needs DESCRIBE_CONFIGS on the cluster.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};

use super::{str_bytes, NONE};
use crate::broker::Broker;
use crate::meta::client_quotas::{describe, FilterComponent};
use crate::security::acl::AclOperation;

pub fn handle(
    broker: &Broker,
    req: &DescribeClientQuotasRequest,
    caller: &super::Caller,
) -> DescribeClientQuotasResponse {
    if !caller.allowed_on_cluster(AclOperation::DescribeConfigs) {
        return DescribeClientQuotasResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(str_bytes("Cluster authorization failed.")))
            .with_entries(None);
    }
    let components: Vec<FilterComponent> = req
        .components
        .iter()
        .map(|c| FilterComponent {
            entity_type: c.entity_type.to_string(),
            match_type: c.match_type,
            name: c._match.as_ref().map(|m| m.to_string()),
        })
        .collect();
    let image = broker.meta.image();
    match describe(&image.quotas, &components, req.strict) {
        Err((code, message)) => DescribeClientQuotasResponse::default()
            .with_error_code(code)
            .with_error_message(Some(str_bytes(message)))
            .with_entries(None),
        Ok(found) => DescribeClientQuotasResponse::default()
            .with_error_code(NONE)
            .with_entries(Some(
                found
                    .into_iter()
                    .map(|(entity, values)| {
                        EntryData::default()
                            .with_entity(
                                entity
                                    .into_iter()
                                    .map(|(t, n)| {
                                        EntityData::default()
                                            .with_entity_type(str_bytes(t))
                                            .with_entity_name(n.map(str_bytes))
                                    })
                                    .collect(),
                            )
                            .with_values(
                                values
                                    .into_iter()
                                    .map(|(k, v)| {
                                        ValueData::default().with_key(str_bytes(k)).with_value(v.0)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )),
    }
}
