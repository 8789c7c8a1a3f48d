//! LeaveGroup (key 13): members leave (v0-2: one member id; v3+: a batch of members by member
//! id and/or group instance id, KIP-345).

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{str_bytes, Broker, NONE};
use crate::security::acl::{AclOperation, ResourceType};

pub fn handle(
    broker: &Broker,
    req: &LeaveGroupRequest,
    version: i16,
    caller: &super::Caller,
) -> LeaveGroupResponse {
    if let Some(e) = caller.refusal(
        AclOperation::Read,
        ResourceType::Group,
        req.group_id.0.as_str(),
    ) {
        return LeaveGroupResponse::default().with_error_code(e.code());
    }
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let left = broker
        .groups
        .for_group(req.group_id.0.as_str())
        .and_then(|c| c.leave(req.group_id.0.as_str(), &members));
    match left {
        Err(e) => LeaveGroupResponse::default().with_error_code(e.code()),
        Ok(errors) if version < 3 => LeaveGroupResponse::default().with_error_code(errors[0]),
        // As Kafka: the top-level error is the first member's error, if any.
        Ok(errors) => LeaveGroupResponse::default()
            .with_error_code(errors.iter().copied().find(|e| *e != NONE).unwrap_or(NONE))
            .with_members(
                members
                    .into_iter()
                    .zip(errors)
                    .map(|((id, instance), error)| {
                        MemberResponse::default()
                            .with_member_id(str_bytes(id))
                            .with_group_instance_id(instance.map(str_bytes))
                            .with_error_code(error)
                    })
                    .collect(),
            ),
    }
}
