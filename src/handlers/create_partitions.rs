//! CreatePartitions (key 37): grows a topic's partition count (never shrinks it). Creating
//! directories and files is blocking: the request runs on the blocking pool.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{str_bytes, topic_error_code, Broker, NONE};

pub async fn handle(
    broker: &Arc<Broker>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let b = broker.clone();
    let names: Vec<_> = req.topics.iter().map(|t| t.name.clone()).collect();
    match crate::threads::spawn_blocking(move || handle_blocking(&b, &req)).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "CreatePartitions failed");
            CreatePartitionsResponse::default().with_results(
                names
                    .into_iter()
                    .map(|name| {
                        CreatePartitionsTopicResult::default()
                            .with_name(name)
                            .with_error_code(ResponseError::UnknownServerError.code())
                    })
                    .collect(),
            )
        }
    }
}

fn handle_blocking(broker: &Broker, req: &CreatePartitionsRequest) -> CreatePartitionsResponse {
    let node = broker.node.node_id;
    let results = req
        .topics
        .iter()
        .map(|t| {
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let fail = |e: ResponseError, msg: String| {
                result
                    .clone()
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(msg)))
            };
            let name = t.name.0.as_str();
            let Some(topic) = broker.topics.get(name) else {
                return fail(
                    ResponseError::UnknownTopicOrPartition,
                    format!("The topic '{name}' does not exist."),
                );
            };
            if let Some(assignments) = t.assignments.as_ref().filter(|a| !a.is_empty()) {
                let added = (t.count - topic.partition_count()).max(0) as usize;
                let valid = assignments.len() == added
                    && assignments
                        .iter()
                        .all(|a| a.broker_ids.len() == 1 && a.broker_ids[0].0 == node);
                if !valid {
                    return fail(
                        ResponseError::InvalidReplicaAssignment,
                        format!(
                            "Each new partition needs one assignment, to this broker ({node})."
                        ),
                    );
                }
            }
            match broker
                .topics
                .add_partitions(name, t.count, req.validate_only)
            {
                Ok(()) => result.with_error_code(NONE),
                Err(e) => fail(topic_error_code(&e), e.to_string()),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
