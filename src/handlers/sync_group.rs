//! SyncGroup (key 14): the leader hands in the assignment; every member gets its own once the
//! leader's arrives.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use std::sync::Arc;

use super::{str_bytes, Broker};
use crate::groups::{Reply, SyncRequest, SyncResult};
use crate::security::acl::{AclOperation, ResourceType};

pub async fn handle(
    broker: &Arc<Broker>,
    req: &SyncGroupRequest,
    version: i16,
    caller: &super::Caller,
) -> SyncGroupResponse {
    if let Some(e) = caller.refusal(
        AclOperation::Read,
        ResourceType::Group,
        req.group_id.0.as_str(),
    ) {
        return SyncGroupResponse::default().with_error_code(e.code());
    }
    let fit = super::internal_strings_fit(
        [req.group_id.0.as_str(), req.member_id.as_str()]
            .into_iter()
            .chain(req.group_instance_id.as_ref().map(|s| s.as_str()))
            .chain(req.protocol_type.as_ref().map(|s| s.as_str()))
            .chain(req.protocol_name.as_ref().map(|s| s.as_str())),
    );
    if !fit {
        return SyncGroupResponse::default().with_error_code(ResponseError::InvalidRequest.code());
    }
    let coordinator = match broker.groups.for_group(req.group_id.0.as_str()) {
        Ok(c) => c,
        Err(e) => return SyncGroupResponse::default().with_error_code(e.code()),
    };
    // The leader's sync writes the group's metadata to `__consumer_offsets`: off the runtime.
    let req_owned = req.clone();
    let reply = crate::threads::spawn_blocking(move || {
        let req = &req_owned;
        coordinator.sync(SyncRequest {
            group_id: req.group_id.0.as_str(),
            generation: req.generation_id,
            member_id: req.member_id.as_str(),
            instance_id: req.group_instance_id.as_ref().map(|s| s.as_str()),
            protocol_type: req.protocol_type.as_ref().map(|s| s.as_str()),
            protocol_name: req.protocol_name.as_ref().map(|s| s.as_str()),
            assignments: req
                .assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                .collect(),
        })
    })
    .await
    .unwrap_or_else(|_| {
        Reply::Now(SyncResult {
            error: ResponseError::UnknownServerError.code(),
            ..Default::default()
        })
    });
    let result = match reply {
        Reply::Now(r) => r,
        Reply::Later(rx) => rx.await.unwrap_or_else(|_| SyncResult {
            error: ResponseError::RebalanceInProgress.code(),
            ..Default::default()
        }),
    };
    // The assignment is answered once the group metadata holding it is durable (as Kafka,
    // which maps a failed store to NOT_COORDINATOR).
    if result.error == 0 {
        if let Err(e) = super::durable(result.durability).await {
            return SyncGroupResponse::default().with_error_code(e.code());
        }
    }
    let v5 = version >= 5;
    SyncGroupResponse::default()
        .with_error_code(result.error)
        .with_protocol_type(if v5 {
            result.protocol_type.map(str_bytes)
        } else {
            None
        })
        .with_protocol_name(if v5 {
            result.protocol_name.map(str_bytes)
        } else {
            None
        })
        .with_assignment(result.assignment)
}
