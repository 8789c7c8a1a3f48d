//! DeleteTopics (key 20): by name (v0-5 `topic_names`, v6 `topics`) or by topic id (v6).
//! The active controller removes the topics (the request may arrive at any broker); every
//! replica's broker deletes its logs when it applies the removal. Waits on the blocking pool.
//! With `authorizer = "acl"` a topic needs DELETE, else TOPIC_AUTHORIZATION_FAILED; one named
//! by id also needs DESCRIBE, without which its name is left out of the answer (as Kafka).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use uuid::Uuid;

use super::{controller_failure, str_bytes, topic_name, Broker, NONE};
use crate::meta::controller::{ControllerRequest, ControllerResponse};

pub async fn handle(
    broker: &Arc<Broker>,
    req: &DeleteTopicsRequest,
    version: i16,
    caller: &super::Caller,
) -> DeleteTopicsResponse {
    let wanted: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let b = broker.clone();
    let caller = caller.clone();
    let responses = crate::threads::spawn_blocking(move || {
        wanted
            .into_iter()
            .map(|(name, id)| delete_one(&b, name, id, &caller))
            .collect()
    })
    .await
    .unwrap_or_default();
    DeleteTopicsResponse::default().with_responses(responses)
}

fn delete_one(
    broker: &Broker,
    name: Option<String>,
    id: Uuid,
    caller: &super::Caller,
) -> DeletableTopicResult {
    use crate::security::acl::{AclOperation, ResourceType};
    let result = DeletableTopicResult::default()
        .with_name(name.clone().map(topic_name))
        .with_topic_id(id);
    let fail = |result: DeletableTopicResult, e: ResponseError, msg: String| {
        result
            .with_error_code(e.code())
            .with_error_message(Some(str_bytes(msg)))
    };
    let name = match (name, id.is_nil()) {
        (Some(n), true) => n,
        (None, false) => match broker.meta.image().topic(&id) {
            Some(t) => t.name.clone(),
            None => {
                return fail(
                    result,
                    ResponseError::UnknownTopicId,
                    format!("Topic id {id} not found"),
                )
            }
        },
        _ => {
            return fail(
                result,
                ResponseError::InvalidRequest,
                "Give either a topic name or a topic id".into(),
            )
        }
    };
    if !id.is_nil() && !caller.allowed(AclOperation::Describe, ResourceType::Topic, &name) {
        return fail(
            result,
            ResponseError::TopicAuthorizationFailed,
            "Authorization failed.".into(),
        );
    }
    let result = result.with_name(Some(topic_name(name.clone())));
    if !caller.allowed(AclOperation::Delete, ResourceType::Topic, &name) {
        return fail(
            result,
            ResponseError::TopicAuthorizationFailed,
            "Authorization failed.".into(),
        );
    }
    if broker
        .meta
        .image()
        .topic_by_name(&name)
        .is_some_and(|t| t.is_internal())
    {
        return fail(
            result,
            ResponseError::InvalidTopicException,
            format!("Internal topic {name} cannot be deleted"),
        );
    }
    match broker.submit_blocking(ControllerRequest::DeleteTopic { name }) {
        Ok(ControllerResponse::Topic(t)) => result.with_error_code(NONE).with_topic_id(t.id),
        Ok(_) => result.with_error_code(NONE),
        Err(e) => {
            let (code, message) = controller_failure(&e);
            fail(result, code, message)
        }
    }
}
