//! CreateTopics (key 19): validates names, partition counts, replication (-1 means
//! `default_replication_factor`; a factor above the live brokers, one today, is
//! INVALID_REPLICATION_FACTOR), manual assignments and configs; `validate_only` checks
//! without creating.
//! Creating directories and files is blocking: the request runs on the blocking pool.

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
use super::{str_bytes, topic_error_code, Broker, NONE};
use crate::cluster::topic_config::TopicOverrides;
use crate::cluster::LIVE_BROKERS;

pub async fn handle(
    broker: &Arc<Broker>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let b = broker.clone();
    let names: Vec<_> = req.topics.iter().map(|t| t.name.clone()).collect();
    match crate::threads::spawn_blocking(move || handle_blocking(&b, &req, version)).await {
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
) -> CreateTopicsResponse {
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
                    if version >= 5 {
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

/// Creates (or with `validate_only` checks) one topic: its id, partition count, replication
/// factor and config overrides.
fn create_one(
    broker: &Broker,
    t: &CreatableTopic,
    validate_only: bool,
) -> Result<(Uuid, i32, i16, TopicOverrides), CreateError> {
    let name = t.name.0.as_str();
    let node = broker.node.node_id;
    let mut partitions = (t.num_partitions != -1).then_some(t.num_partitions);
    if !t.assignments.is_empty() {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err((
                ResponseError::InvalidRequest,
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
            ));
        }
        let mut indexes: Vec<i32> = t.assignments.iter().map(|a| a.partition_index).collect();
        indexes.sort_unstable();
        let contiguous = indexes.iter().enumerate().all(|(i, p)| *p == i as i32);
        let on_this_node = t
            .assignments
            .iter()
            .all(|a| a.broker_ids.len() == 1 && a.broker_ids[0].0 == node);
        if !contiguous || !on_this_node {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                format!("Every partition must be assigned, exactly once, to this broker ({node})."),
            ));
        }
        partitions = Some(indexes.len() as i32);
    }
    // Manual assignments give each partition one replica, on this node.
    let replication_factor = match t.replication_factor {
        _ if !t.assignments.is_empty() => 1,
        -1 => broker.config.default_replication_factor,
        rf => rf,
    };
    if replication_factor < 1 {
        return Err((
            ResponseError::InvalidReplicationFactor,
            "Replication factor must be larger than 0, or -1 to use the default value.".into(),
        ));
    }
    if i32::from(replication_factor) > LIVE_BROKERS {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!(
                "Unable to replicate the partition {replication_factor} time(s): The target replication factor of {replication_factor} cannot be reached because only {LIVE_BROKERS} broker(s) are registered."
            ),
        ));
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
    let failed = |e| (topic_error_code(&e), e.to_string());
    if validate_only {
        let count = broker
            .topics
            .check_create(name, partitions, &overrides)
            .map_err(failed)?;
        return Ok((Uuid::nil(), count, replication_factor, overrides));
    }
    let topic = broker
        .topics
        .create(name, partitions, overrides)
        .map_err(failed)?;
    Ok((
        topic.id,
        topic.partition_count(),
        replication_factor,
        (*topic.configs()).clone(),
    ))
}
