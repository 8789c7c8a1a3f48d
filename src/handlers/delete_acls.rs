//! DeleteAcls v1-3: every stored ACL each filter matches is deleted by the active
//! controller, and listed in that filter's result. Needs Cluster ALTER; without an
//! authorizer, SECURITY_DISABLED; an invalid filter, INVALID_REQUEST for that filter.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};

use super::{controller_failure, str_bytes, Caller, NONE};
use crate::broker::Broker;
use crate::meta::controller::{ControllerRequest, ControllerResponse};
use crate::security::acl::{
    validate_filter, AclBindingFilter, AclOperation, AclPermissionType, PatternType, ResourceType,
};

pub async fn handle(
    broker: &Broker,
    req: &DeleteAclsRequest,
    caller: &Caller,
) -> DeleteAclsResponse {
    let all = |code: ResponseError, message: &str| {
        DeleteAclsResponse::default().with_filter_results(
            req.filters
                .iter()
                .map(|_| {
                    DeleteAclsFilterResult::default()
                        .with_error_code(code.code())
                        .with_error_message(Some(str_bytes(message)))
                })
                .collect(),
        )
    };
    if let Some((code, message)) = super::create_acls::refusal(caller, AclOperation::Alter) {
        return all(code, message);
    }
    let filters: Vec<Result<AclBindingFilter, String>> = req
        .filters
        .iter()
        .map(|f| {
            let filter = filter(f);
            validate_filter(&filter)
                .map(|()| filter)
                .map_err(|e| e.to_string())
        })
        .collect();
    let valid: Vec<AclBindingFilter> = filters.iter().filter_map(|f| f.clone().ok()).collect();
    let mut matched = if valid.is_empty() {
        Vec::new()
    } else {
        match broker
            .meta
            .submit(ControllerRequest::DeleteAcls { filters: valid })
            .await
        {
            Ok(ControllerResponse::AclsDeleted { matched }) => matched,
            Ok(other) => {
                return all(
                    ResponseError::UnknownServerError,
                    &format!("unexpected controller answer {other:?}"),
                )
            }
            Err(e) => {
                let (code, message) = controller_failure(&e);
                return all(code, &message);
            }
        }
    }
    .into_iter();
    DeleteAclsResponse::default().with_filter_results(
        filters
            .into_iter()
            .map(|f| match f {
                Err(message) => DeleteAclsFilterResult::default()
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(message))),
                Ok(_) => DeleteAclsFilterResult::default()
                    .with_error_code(NONE)
                    .with_matching_acls(
                        matched
                            .next()
                            .unwrap_or_default()
                            .into_iter()
                            .map(|b| {
                                DeleteAclsMatchingAcl::default()
                                    .with_error_code(NONE)
                                    .with_resource_type(b.resource_type.code())
                                    .with_resource_name(str_bytes(b.resource_name))
                                    .with_pattern_type(b.pattern_type.code())
                                    .with_principal(str_bytes(b.principal))
                                    .with_host(str_bytes(b.host))
                                    .with_operation(b.operation.code())
                                    .with_permission_type(b.permission.code())
                            })
                            .collect(),
                    ),
            })
            .collect(),
    )
}

fn filter(f: &DeleteAclsFilter) -> AclBindingFilter {
    AclBindingFilter {
        resource_type: ResourceType::from_code(f.resource_type_filter),
        resource_name: f.resource_name_filter.as_ref().map(|s| s.to_string()),
        pattern_type: PatternType::from_code(f.pattern_type_filter),
        principal: f.principal_filter.as_ref().map(|s| s.to_string()),
        host: f.host_filter.as_ref().map(|s| s.to_string()),
        operation: AclOperation::from_code(f.operation),
        permission: AclPermissionType::from_code(f.permission_type),
    }
}
