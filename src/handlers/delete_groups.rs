//! DeleteGroups (key 42): deletes empty groups and their offsets (NON_EMPTY_GROUP while members
//! remain, GROUP_ID_NOT_FOUND for unknown ones). The answer waits until the tombstones are as
//! durable as the flush policy promises (KAFKA_STORAGE_ERROR if that fails).

use kafka_protocol::error::ResponseError;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::{durable, Broker, NONE};

pub async fn handle(broker: &Broker, req: &DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in &req.groups_names {
        let (code, durability) = broker.groups.delete_group(g.0.as_str());
        results.push((g.clone(), code, durability));
    }
    // The log's offsets only grow: one wait for the last write covers the others.
    let last = results.iter().filter_map(|r| match r.2 {
        crate::groups::Durability::SyncTo(upto) => Some(upto),
        _ => None,
    });
    let synced = match last.max() {
        Some(upto) => durable(broker, crate::groups::Durability::SyncTo(upto)).await,
        None => true,
    };
    DeleteGroupsResponse::default().with_results(
        results
            .into_iter()
            .map(|(g, code, durability)| {
                let failed = code == NONE
                    && (durability == crate::groups::Durability::Failed
                        || (matches!(durability, crate::groups::Durability::SyncTo(_)) && !synced));
                DeletableGroupResult::default()
                    .with_group_id(g)
                    .with_error_code(if failed {
                        ResponseError::KafkaStorageError.code()
                    } else {
                        code
                    })
            })
            .collect(),
    )
}
