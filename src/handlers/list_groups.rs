//! ListGroups (key 16): every group, filtered by state (v4+) and type (v5+; all groups here
//! are `classic`). With `authorizer = "acl"`: every group for DESCRIBE on the cluster, else
//! only the groups the caller may DESCRIBE (Kafka's filter, no error).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{str_bytes, Broker, NONE};

pub fn handle(
    broker: &Broker,
    req: &ListGroupsRequest,
    caller: &super::Caller,
) -> ListGroupsResponse {
    use crate::security::acl::{AclOperation, ResourceType, CLUSTER_NAME};
    let all = caller.permits(AclOperation::Describe, ResourceType::Cluster, CLUSTER_NAME);
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let (listed, error) = broker.groups.list();
    if let Some(e) = error {
        return ListGroupsResponse::default().with_error_code(e.code());
    }
    let groups = listed
        .into_iter()
        .filter(|(_, _, state)| states.is_empty() || states.contains(&state.name().to_lowercase()))
        .filter(|_| types.is_empty() || types.iter().any(|t| t == "classic"))
        .filter(|(id, _, _)| all || caller.permits(AclOperation::Describe, ResourceType::Group, id))
        .map(|(id, protocol_type, state)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(protocol_type))
                .with_group_state(str_bytes(state.name()))
                .with_group_type(str_bytes("classic"))
        })
        .collect();
    ListGroupsResponse::default()
        .with_error_code(NONE)
        .with_groups(groups)
}
