//! CreatePartitions (key 37): grows a topic's partition count (never shrinks it), placing the
//! new replicas or taking the request's assignments; the active controller decides (the
//! request may arrive at any broker). The request waits on the blocking pool. With
//! `authorizer = "acl"` a topic needs ALTER, else TOPIC_AUTHORIZATION_FAILED (checked before
//! whether it exists, as Kafka does).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{controller_failure, str_bytes, Broker, NONE};
use crate::meta::controller::ControllerRequest;

pub async fn handle(
    broker: &Arc<Broker>,
    req: CreatePartitionsRequest,
    caller: &super::Caller,
) -> CreatePartitionsResponse {
    let b = broker.clone();
    let names: Vec<_> = req.topics.iter().map(|t| t.name.clone()).collect();
    let caller = caller.clone();
    match crate::threads::spawn_blocking(move || handle_blocking(&b, &req, &caller)).await {
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

fn handle_blocking(
    broker: &Broker,
    req: &CreatePartitionsRequest,
    caller: &super::Caller,
) -> CreatePartitionsResponse {
    use crate::security::acl::{AclOperation, ResourceType};
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
            if !caller.allowed(AclOperation::Alter, ResourceType::Topic, name) {
                return fail(
                    ResponseError::TopicAuthorizationFailed,
                    "Authorization failed.".into(),
                );
            }
            let Some(topic) = broker.topics.get(name) else {
                return fail(
                    ResponseError::UnknownTopicOrPartition,
                    format!("The topic '{name}' does not exist."),
                );
            };
            let assignments = t.assignments.as_ref().filter(|a| !a.is_empty()).map(|a| {
                a.iter()
                    .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            });
            let _ = topic;
            match broker.submit_blocking(ControllerRequest::CreatePartitions {
                name: name.to_string(),
                count: t.count,
                assignments,
                validate_only: req.validate_only,
            }) {
                Ok(_) => result.with_error_code(NONE),
                Err(e) => {
                    let (code, message) = controller_failure(&e);
                    fail(code, message)
                }
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
