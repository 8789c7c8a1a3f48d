//! CreateTopics (key 19): the active controller validates names, partition counts,
//! replication (-1 means `default_replication_factor`; a factor above the registered brokers
//! is INVALID_REPLICATION_FACTOR), manual assignments and configs, places the replicas and
//! commits the topic; `validate_only` checks without creating. The request may arrive at any
//! broker (it is forwarded) and waits on the blocking pool until this broker's image shows
//! the topic.
//!
//! With `authorizer = "acl"` (Kafka's rules): a topic needs CREATE on the cluster or on the
//! topic, else TOPIC_AUTHORIZATION_FAILED; its configs (v5+) are answered only with
//! DESCRIBE_CONFIGS on the topic, else `topic_config_error_code` is
//! TOPIC_AUTHORIZATION_FAILED and the configs are absent.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use uuid::Uuid;

use super::alter_configs::skip_removed_config;
use super::describe_configs::topic_entries;
use super::{controller_failure, str_bytes, Broker, NONE};
use crate::cluster::topic_config::TopicOverrides;
use crate::meta::controller::NewTopic;

pub async fn handle(
    broker: &Arc<Broker>,
    req: CreateTopicsRequest,
    version: i16,
    caller: &super::Caller,
) -> CreateTopicsResponse {
    let b = broker.clone();
    let names: Vec<_> = req.topics.iter().map(|t| t.name.clone()).collect();
    let caller = caller.clone();
    match crate::threads::spawn_blocking(move || handle_blocking(&b, &req, version, &caller)).await
    {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "CreateTopics failed");
            CreateTopicsResponse::default().with_topics(
                names
                    .into_iter()
                    .map(|name| {
                        error(
                            CreatableTopicResult::default().with_name(name),
                            ResponseError::UnknownServerError,
                            "The topic creation failed.".into(),
                        )
                    })
                    .collect(),
            )
        }
    }
}

fn handle_blocking(
    broker: &Broker,
    req: &CreateTopicsRequest,
    version: i16,
    caller: &super::Caller,
) -> CreateTopicsResponse {
    use crate::security::acl::{AclOperation, ResourceType};
    let cluster_create = caller.allowed_on_cluster(AclOperation::Create);
    let mut seen = HashSet::new();
    let duplicates: HashSet<&str> = req
        .topics
        .iter()
        .map(|t| t.name.0.as_str())
        .filter(|n| !seen.insert(*n))
        .collect();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let result = CreatableTopicResult::default().with_name(t.name.clone());
            if duplicates.contains(t.name.0.as_str()) {
                return error(
                    result,
                    ResponseError::InvalidRequest,
                    "Duplicate topic name in the request.".into(),
                );
            }
            if !cluster_create
                && !caller.allowed(AclOperation::Create, ResourceType::Topic, t.name.0.as_str())
            {
                return error(
                    result,
                    ResponseError::TopicAuthorizationFailed,
                    "Authorization failed.".into(),
                );
            }
            match create_one(broker, t, req.validate_only) {
                Ok((id, partitions, replication_factor, overrides)) => {
                    // Kafka answers a null error message on success (kafka-protocol's
                    // default is the empty string).
                    let result = result
                        .with_error_code(NONE)
                        .with_error_message(None)
                        .with_topic_id(id)
                        .with_num_partitions(partitions)
                        .with_replication_factor(replication_factor);
                    let describe_configs = || {
                        caller.allowed(
                            AclOperation::DescribeConfigs,
                            ResourceType::Topic,
                            t.name.0.as_str(),
                        )
                    };
                    if version >= 5 && !describe_configs() {
                        result.with_topic_config_error_code(
                            ResponseError::TopicAuthorizationFailed.code(),
                        )
                    } else if version >= 5 {
                        result.with_configs(Some(
                            topic_entries(&overrides, &broker.config)
                                .into_iter()
                                .map(|e| {
                                    CreatableTopicConfigs::default()
                                        .with_name(str_bytes(e.name))
                                        .with_value(e.value.map(str_bytes))
                                        .with_read_only(e.read_only)
                                        .with_config_source(e.source)
                                })
                                .collect(),
                        ))
                    } else {
                        result
                    }
                }
                Err((code, message)) => error(result, code, message),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

fn error(
    result: CreatableTopicResult,
    code: ResponseError,
    message: String,
) -> CreatableTopicResult {
    result
        .with_error_code(code.code())
        .with_error_message(Some(str_bytes(message)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
}

type CreateError = (ResponseError, String);

/// Creates (or with `validate_only` checks) one topic through the active controller: its id,
/// partition count, replication factor and config overrides.
fn create_one(
    broker: &Broker,
    t: &CreatableTopic,
    validate_only: bool,
) -> Result<(Uuid, i32, i16, TopicOverrides), CreateError> {
    let name = t.name.0.as_str();
    let mut assignments = None;
    if !t.assignments.is_empty() {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err((
                ResponseError::InvalidRequest,
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
            ));
        }
        let mut by_index: Vec<_> = t.assignments.iter().collect();
        by_index.sort_by_key(|a| a.partition_index);
        let contiguous = by_index
            .iter()
            .enumerate()
            .all(|(i, a)| a.partition_index == i as i32);
        if !contiguous {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                "Partitions should be a consecutive 0-based integer sequence".into(),
            ));
        }
        assignments = Some(
            by_index
                .iter()
                .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                .collect(),
        );
    }
    let mut overrides = TopicOverrides::new();
    for c in &t.configs {
        let Some(value) = &c.value else {
            return Err((
                ResponseError::InvalidConfig,
                format!(
                    "Null value not supported for topic config {}",
                    c.name.as_str()
                ),
            ));
        };
        if skip_removed_config(name, c.name.as_str()) {
            continue;
        }
        overrides.insert(c.name.as_str().to_string(), value.as_str().to_string());
    }
    let summary = broker
        .create_topic(NewTopic {
            name: name.to_string(),
            partitions: (t.num_partitions != -1).then_some(t.num_partitions),
            replication_factor: (t.replication_factor != -1).then_some(t.replication_factor),
            assignments,
            configs: overrides,
            validate_only,
        })
        .map_err(|e| controller_failure(&e))?;
    Ok((
        summary.id,
        summary.partitions,
        summary.replication_factor,
        summary.configs,
    ))
}
