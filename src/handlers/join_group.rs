//! JoinGroup (key 11): join or rejoin a group; answered when the rebalance's join phase
//! completes (see `groups`). v4+ unknown members first get MEMBER_ID_REQUIRED.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use std::sync::Arc;

use super::{str_bytes, Broker};
use crate::groups::{ClientInfo, JoinRequest, JoinResult, Reply};

pub async fn handle(
    broker: &Arc<Broker>,
    req: &JoinGroupRequest,
    version: i16,
    client: &ClientInfo,
    caller: &super::Caller,
) -> JoinGroupResponse {
    use crate::security::acl::{AclOperation, ResourceType};
    if let Some(e) = caller.refusal(
        AclOperation::Read,
        ResourceType::Group,
        req.group_id.0.as_str(),
    ) {
        return JoinGroupResponse::default()
            .with_error_code(e.code())
            .with_generation_id(-1)
            .with_member_id(req.member_id.clone());
    }
    let join = JoinRequest {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: it is the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let member_id = join.member_id.clone();
    let fit = super::internal_strings_fit(
        [
            join.group_id.as_str(),
            &join.member_id,
            &join.protocol_type,
            &client.client_id,
            &client.client_host,
        ]
        .into_iter()
        .chain(join.group_instance_id.as_deref())
        .chain(join.protocols.iter().map(|(name, _)| name.as_str())),
    );
    if !fit {
        return JoinGroupResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_generation_id(-1)
            .with_member_id(str_bytes(member_id));
    }
    if join.group_id.is_empty() {
        return JoinGroupResponse::default()
            .with_error_code(ResponseError::InvalidGroupId.code())
            .with_generation_id(-1)
            .with_member_id(str_bytes(member_id));
    }
    let coordinator = match broker.groups.for_group(&join.group_id) {
        Ok(c) => c,
        Err(e) => {
            return JoinGroupResponse::default()
                .with_error_code(e.code())
                .with_generation_id(-1)
                .with_member_id(str_bytes(member_id))
        }
    };
    // A completed join writes the group's metadata to `__consumer_offsets`: off the runtime.
    let client = client.clone();
    let reply = match crate::threads::spawn_blocking(move || coordinator.join(join, client)).await {
        Ok(reply) => reply,
        Err(_) => Reply::Now(JoinResult {
            error: ResponseError::UnknownServerError.code(),
            generation_id: -1,
            member_id: member_id.clone(),
            ..Default::default()
        }),
    };
    let result = match reply {
        Reply::Now(r) => r,
        Reply::Later(rx) => rx.await.unwrap_or_else(|_| JoinResult {
            error: ResponseError::UnknownMemberId.code(),
            generation_id: -1,
            member_id,
            ..Default::default()
        }),
    };
    let stored = match result.error {
        0 => super::durable(result.durability).await,
        _ => Ok(()),
    };
    if let Err(e) = stored {
        return JoinGroupResponse::default()
            .with_error_code(e.code())
            .with_generation_id(-1)
            .with_member_id(str_bytes(result.member_id));
    }
    JoinGroupResponse::default()
        .with_error_code(result.error)
        .with_generation_id(result.generation_id)
        .with_protocol_type(if version >= 7 {
            result.protocol_type.map(str_bytes)
        } else {
            None
        })
        .with_protocol_name(match (version >= 7, result.protocol_name) {
            (true, name) => name.map(str_bytes),
            (false, name) => Some(str_bytes(name.unwrap_or_default())),
        })
        .with_leader(str_bytes(result.leader))
        .with_skip_assignment(version >= 9 && result.skip_assignment)
        .with_member_id(str_bytes(result.member_id))
        .with_members(
            result
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(id))
                        .with_group_instance_id(if version >= 5 {
                            instance.map(str_bytes)
                        } else {
                            None
                        })
                        .with_metadata(metadata)
                })
                .collect(),
        )
}
