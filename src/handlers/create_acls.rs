//! CreateAcls v1-3: ACLs stored by the active controller in the metadata log (every broker
//! of a cluster enforces the same set). Needs Cluster ALTER (CLUSTER_AUTHORIZATION_FAILED);
//! without an authorizer, SECURITY_DISABLED as Kafka answers. An invalid binding (unknown or
//! ANY types, a bad principal, a prefixed wildcard, a cluster named other than
//! `kafka-cluster`...) is INVALID_REQUEST; an ACL that exists already is a success.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};

use super::{controller_failure, str_bytes, Caller, NONE};
use crate::broker::Broker;
use crate::meta::controller::{ControllerRequest, ControllerResponse};
use crate::security::acl::{
    AclBinding, AclOperation, AclPermissionType, PatternType, ResourceType,
};

/// Kafka's message when no authorizer is configured.
pub const SECURITY_DISABLED: &str = "No Authorizer is configured on the broker";

/// Why an ACL API is refused before anything is looked at: no authorizer
/// (SECURITY_DISABLED), or the caller may not do `op` on the cluster.
pub fn refusal(caller: &Caller, op: AclOperation) -> Option<(ResponseError, &'static str)> {
    if !caller.enforcing() {
        return Some((ResponseError::SecurityDisabled, SECURITY_DISABLED));
    }
    if !caller.allowed_on_cluster(op) {
        return Some((
            ResponseError::ClusterAuthorizationFailed,
            "Cluster authorization failed.",
        ));
    }
    None
}

pub async fn handle(
    broker: &Broker,
    req: &CreateAclsRequest,
    caller: &Caller,
) -> CreateAclsResponse {
    let all = |code: ResponseError, message: &str| {
        CreateAclsResponse::default().with_results(
            req.creations
                .iter()
                .map(|_| {
                    AclCreationResult::default()
                        .with_error_code(code.code())
                        .with_error_message(Some(str_bytes(message)))
                })
                .collect(),
        )
    };
    if let Some((code, message)) = refusal(caller, AclOperation::Alter) {
        return all(code, message);
    }
    let bindings: Vec<AclBinding> = req.creations.iter().map(binding).collect();
    let answer = broker
        .meta
        .submit(ControllerRequest::CreateAcls { bindings })
        .await;
    let results = match answer {
        Ok(ControllerResponse::AclsCreated { results }) => results,
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
    };
    CreateAclsResponse::default().with_results(
        results
            .into_iter()
            .map(|r| match r {
                None => AclCreationResult::default().with_error_code(NONE),
                Some(message) => AclCreationResult::default()
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(message))),
            })
            .collect(),
    )
}

fn binding(c: &AclCreation) -> AclBinding {
    AclBinding {
        resource_type: ResourceType::from_code(c.resource_type),
        resource_name: c.resource_name.to_string(),
        pattern_type: PatternType::from_code(c.resource_pattern_type),
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: AclOperation::from_code(c.operation),
        permission: AclPermissionType::from_code(c.permission_type),
    }
}
