//! DeleteGroups (key 42): deletes empty groups and their offsets (NON_EMPTY_GROUP while members
//! remain, GROUP_ID_NOT_FOUND for unknown ones). The answer waits until the tombstones are as
//! durable as the flush policy promises (KAFKA_STORAGE_ERROR if that fails). With
//! `authorizer = "acl"` a group needs DELETE, else GROUP_AUTHORIZATION_FAILED.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::{Broker, NONE};

pub async fn handle(
    broker: &Arc<Broker>,
    req: &DeleteGroupsRequest,
    caller: &super::Caller,
) -> DeleteGroupsResponse {
    use crate::security::acl::{AclOperation, ResourceType};
    // The tombstones are appended to `__consumer_offsets` (a roll there may create a file),
    // then waited for: off the runtime, the wait with no lock held.
    let (b, names) = (broker.clone(), req.groups_names.clone());
    let allowed: Vec<bool> = names
        .iter()
        .map(|g| caller.allowed(AclOperation::Delete, ResourceType::Group, g.0.as_str()))
        .collect();
    let codes = crate::threads::spawn_blocking(move || {
        let deleted: Vec<_> = names
            .iter()
            .zip(allowed)
            .map(|(g, allowed)| match b.groups.for_group(g.0.as_str()) {
                _ if !allowed => (
                    ResponseError::GroupAuthorizationFailed.code(),
                    crate::groups::Durability::Done,
                ),
                Ok(c) => c.delete_group(g.0.as_str()),
                Err(e) => (e.code(), crate::groups::Durability::Done),
            })
            .collect();
        deleted
            .into_iter()
            .map(|(code, durability)| match code {
                NONE => durability.wait().err().map_or(code, |e| e.code()),
                _ => code,
            })
            .collect::<Vec<i16>>()
    })
    .await
    .unwrap_or_else(|_| vec![ResponseError::UnknownServerError.code(); req.groups_names.len()]);
    DeleteGroupsResponse::default().with_results(
        req.groups_names
            .iter()
            .zip(codes)
            .map(|(g, code)| {
                DeletableGroupResult::default()
                    .with_group_id(g.clone())
                    .with_error_code(code)
            })
            .collect(),
    )
}
