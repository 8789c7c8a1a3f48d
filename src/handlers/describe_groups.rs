//! DescribeGroups (key 15): state, protocol and members (with their metadata and assignment
//! once stable). An unknown group is described as Dead (v6+: with GROUP_ID_NOT_FOUND). With
//! `authorizer = "acl"` a group needs DESCRIBE, else GROUP_AUTHORIZATION_FAILED; the
//! authorized operations (v3+, when asked) are the caller's.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{str_bytes, Broker, NONE};

/// Every group operation: READ, DELETE, DESCRIBE as AclOperation bits.
const GROUP_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub fn handle(
    broker: &Broker,
    req: &DescribeGroupsRequest,
    version: i16,
    caller: &super::Caller,
) -> DescribeGroupsResponse {
    use crate::security::acl::{AclOperation, ResourceType};
    let groups = req
        .groups
        .iter()
        .map(|id| {
            if !caller.allowed(AclOperation::Describe, ResourceType::Group, id.0.as_str()) {
                return DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(ResponseError::GroupAuthorizationFailed.code())
                    .with_group_state(str_bytes(""))
                    .with_authorized_operations(i32::MIN);
            }
            let ops = if req.include_authorized_operations {
                caller.authorized_operations(
                    ResourceType::Group,
                    id.0.as_str(),
                    GROUP_OPERATIONS_ALL,
                )
            } else {
                i32::MIN
            };
            let base = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(ops);
            let described = match broker.groups.for_group(id.0.as_str()) {
                Ok(c) => c.describe(id.0.as_str()),
                Err(e) => {
                    return base
                        .with_error_code(e.code())
                        .with_group_state(str_bytes(""))
                }
            };
            match described {
                None => base
                    .with_error_code(if version >= 6 {
                        ResponseError::GroupIdNotFound.code()
                    } else {
                        NONE
                    })
                    .with_error_message(
                        (version >= 6).then(|| str_bytes(format!("Group {} not found.", id.0))),
                    )
                    .with_group_state(str_bytes("Dead")),
                Some(d) => base
                    .with_error_code(NONE)
                    .with_group_state(str_bytes(d.state.name()))
                    .with_protocol_type(str_bytes(d.protocol_type))
                    .with_protocol_data(str_bytes(d.protocol))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(m.member_id))
                                    .with_group_instance_id(if version >= 4 {
                                        m.instance_id.map(str_bytes)
                                    } else {
                                        None
                                    })
                                    .with_client_id(str_bytes(m.client_id))
                                    .with_client_host(str_bytes(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
