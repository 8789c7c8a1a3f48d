//! DescribeAcls v1-3: the stored ACLs a filter matches (Kafka's `AclBindingFilter` rules:
//! ANY, MATCH, literal and prefixed patterns), grouped by resource. Needs Cluster DESCRIBE;
//! without an authorizer, SECURITY_DISABLED; an invalid filter, INVALID_REQUEST.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{DescribeAclsRequest, DescribeAclsResponse};

use super::{str_bytes, Caller, NONE};
use crate::broker::Broker;
use crate::security::acl::{
    validate_filter, AclBinding, AclBindingFilter, AclOperation, AclPermissionType, PatternType,
    ResourceType,
};

pub fn handle(broker: &Broker, req: &DescribeAclsRequest, caller: &Caller) -> DescribeAclsResponse {
    let error = |code: ResponseError, message: String| {
        DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(message)))
    };
    if let Some((code, message)) = super::create_acls::refusal(caller, AclOperation::Describe) {
        return error(code, message.into());
    }
    let filter = AclBindingFilter {
        resource_type: ResourceType::from_code(req.resource_type_filter),
        resource_name: req.resource_name_filter.as_ref().map(|s| s.to_string()),
        pattern_type: PatternType::from_code(req.pattern_type_filter),
        principal: req.principal_filter.as_ref().map(|s| s.to_string()),
        host: req.host_filter.as_ref().map(|s| s.to_string()),
        operation: AclOperation::from_code(req.operation),
        permission: AclPermissionType::from_code(req.permission_type),
    };
    if let Err(e) = validate_filter(&filter) {
        return error(ResponseError::InvalidRequest, e.to_string());
    }
    let image = broker.meta.image();
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<&AclBinding>> = BTreeMap::new();
    for b in image.acls.iter().filter(|b| filter.matches(b)) {
        by_resource
            .entry((
                b.resource_type.code(),
                b.resource_name.clone(),
                b.pattern_type.code(),
            ))
            .or_default()
            .push(b);
    }
    DescribeAclsResponse::default()
        .with_error_code(NONE)
        .with_resources(
            by_resource
                .into_iter()
                .map(|((rt, name, pt), acls)| {
                    DescribeAclsResource::default()
                        .with_resource_type(rt)
                        .with_resource_name(str_bytes(name))
                        .with_pattern_type(pt)
                        .with_acls(
                            acls.into_iter()
                                .map(|b| {
                                    AclDescription::default()
                                        .with_principal(str_bytes(b.principal.clone()))
                                        .with_host(str_bytes(b.host.clone()))
                                        .with_operation(b.operation.code())
                                        .with_permission_type(b.permission.code())
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}
