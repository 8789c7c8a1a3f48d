//! DeleteGroups (key 42): deletes empty groups and their offsets (NON_EMPTY_GROUP while members
//! remain, GROUP_ID_NOT_FOUND for unknown ones).

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::Broker;

pub fn handle(broker: &Broker, req: &DeleteGroupsRequest) -> DeleteGroupsResponse {
    DeleteGroupsResponse::default().with_results(
        req.groups_names
            .iter()
            .map(|g| {
                DeletableGroupResult::default()
                    .with_group_id(g.clone())
                    .with_error_code(broker.groups.delete_group(g.0.as_str()))
            })
            .collect(),
    )
}
