//! Heartbeat (key 12): keeps a member's session alive and tells it when to rejoin
//! (REBALANCE_IN_PROGRESS).

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::Broker;
use crate::security::acl::{AclOperation, ResourceType};

pub fn handle(
    broker: &Broker,
    req: &HeartbeatRequest,
    caller: &super::Caller,
) -> HeartbeatResponse {
    if let Some(e) = caller.refusal(
        AclOperation::Read,
        ResourceType::Group,
        req.group_id.0.as_str(),
    ) {
        return HeartbeatResponse::default().with_error_code(e.code());
    }
    let error = match broker.groups.for_group(req.group_id.0.as_str()) {
        Ok(c) => c.heartbeat(
            req.group_id.0.as_str(),
            req.generation_id,
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|s| s.as_str()),
        ),
        Err(e) => e.code(),
    };
    HeartbeatResponse::default().with_error_code(error)
}
