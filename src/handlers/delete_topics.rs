//! DeleteTopics (key 20): by name (v0-5 `topic_names`, v6 `topics`) or by topic id (v6).
//! The deletions (metadata write, directory renames) run on the blocking pool.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use uuid::Uuid;

use super::{str_bytes, topic_error_code, topic_name, Broker, NONE};

pub async fn handle(
    broker: &Arc<Broker>,
    req: &DeleteTopicsRequest,
    version: i16,
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
    let responses = crate::threads::spawn_blocking(move || {
        wanted
            .into_iter()
            .map(|(name, id)| delete_one(&b, name, id))
            .collect()
    })
    .await
    .unwrap_or_default();
    DeleteTopicsResponse::default().with_responses(responses)
}

fn delete_one(broker: &Broker, name: Option<String>, id: Uuid) -> DeletableTopicResult {
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
        (None, false) => match broker.topics.get_by_id(&id) {
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
    let result = result.with_name(Some(topic_name(name.clone())));
    if broker.topics.get(&name).is_some_and(|t| t.is_internal()) {
        return fail(
            result,
            ResponseError::InvalidTopicException,
            format!("Internal topic {name} cannot be deleted"),
        );
    }
    match broker.topics.delete(&name) {
        Ok(t) => result.with_error_code(NONE).with_topic_id(t.id),
        Err(e) => fail(result, topic_error_code(&e), e.to_string()),
    }
}
