//! AlterConfigs (key 33, the legacy, non-incremental form): each TOPIC resource's override set
//! is replaced by the given entries; overrides not listed revert to their defaults. BROKER
//! resources: ottla has no dynamic broker configs, so any change is refused. The checks and
//! error codes follow Kafka 4's `ConfigAdminManager` (preprocessing) and controller:
//! a resource named twice, duplicate keys and null values are INVALID_REQUEST; a bad topic
//! config is INVALID_CONFIG; a missing topic is UNKNOWN_TOPIC_OR_PARTITION. The helpers here
//! are shared with IncrementalAlterConfigs.
//! With `authorizer = "acl"` a topic needs ALTER_CONFIGS on it (else TOPIC_AUTHORIZATION_FAILED)
//! and a broker resource ALTER_CONFIGS on the cluster (else CLUSTER_AUTHORIZATION_FAILED).

use std::collections::HashSet;
use std::sync::Mutex;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{str_bytes, topic_error_code, Broker, NONE};
use crate::cluster::topic_config::{self, TopicOverrides};
use crate::cluster::TopicError;

/// A refused resource: the error code and the message sent back.
pub type Failure = (ResponseError, String);

/// Serialises config changes made through the two alter APIs, so that an incremental change
/// (read the overrides, apply the operations, write the result) never interleaves with another
/// change to the same topic and loses it. Only metadata work runs under it.
pub(super) static CONFIG_CHANGES: Mutex<()> = Mutex::new(());

pub fn handle(
    broker: &Broker,
    req: &AlterConfigsRequest,
    caller: &super::Caller,
) -> AlterConfigsResponse {
    let responses = outcomes(
        &req.resources,
        |r| (r.resource_type, r.resource_name.as_str()),
        |r| {
            may_alter(caller, r.resource_type, r.resource_name.as_str())?;
            alter_resource(broker, r, req.validate_only)
        },
    )
    .map(|(r, outcome)| {
        let (code, message) = error_fields(outcome);
        AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone())
            .with_error_code(code)
            .with_error_message(message)
    })
    .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// Whether the caller may alter the resource's configs (ALTER_CONFIGS on the topic, or on
/// the cluster for a broker); else the refusal as the resource's failure.
pub fn may_alter(caller: &super::Caller, resource_type: i8, name: &str) -> Result<(), Failure> {
    match super::describe_configs::config_refusal(
        caller,
        crate::security::acl::AclOperation::AlterConfigs,
        resource_type,
        name,
    ) {
        Some(refused) => Err(refused),
        None => Ok(()),
    }
}

/// Each resource with its outcome, in request order: a resource named twice is refused
/// (every copy, as Kafka does), the others get what `alter` says.
pub fn outcomes<'a, R>(
    resources: &'a [R],
    key: impl Fn(&'a R) -> (i8, &'a str),
    alter: impl Fn(&R) -> Result<(), Failure>,
) -> impl Iterator<Item = (&'a R, Result<(), Failure>)> {
    let repeated = repeated_resources(resources.iter().map(&key));
    resources.iter().map(move |r| {
        let outcome = if repeated.contains(&key(r)) {
            Err(resource_repeated())
        } else {
            alter(r)
        };
        (r, outcome)
    })
}

/// A resource answer's error code and message.
pub fn error_fields(outcome: Result<(), Failure>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (NONE, None),
        Err((error, message)) => (error.code(), Some(str_bytes(message))),
    }
}

fn alter_resource(
    broker: &Broker,
    r: &AlterConfigsResource,
    validate_only: bool,
) -> Result<(), Failure> {
    check_unique_keys(r.configs.iter().map(|c| c.name.as_str()))?;
    check_no_nulls(
        r.configs
            .iter()
            .filter(|c| c.value.is_none())
            .map(|c| c.name.as_str()),
    )?;
    let name = r.resource_name.as_str();
    match r.resource_type {
        RESOURCE_TOPIC => {
            let overrides: TopicOverrides = r
                .configs
                .iter()
                .filter(|c| !skip_removed_config(name, c.name.as_str()))
                .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                .collect();
            let _changes = CONFIG_CHANGES.lock().unwrap_or_else(|p| p.into_inner());
            replace_topic_configs(broker, name, overrides, validate_only)
        }
        RESOURCE_BROKER => {
            check_broker_name(broker, name)?;
            refuse_broker_changes(r.configs.iter().map(|c| c.name.as_str()))
        }
        // Legacy AlterConfigs never covered broker loggers; Kafka refuses them the same way.
        other => Err(unsupported_resource_type(other)),
    }
}

/// Whether `config` is one Kafka 4 removed (see `topic_config::REMOVED_IN_KAFKA_4`): the
/// caller skips it, a deprecated no-op, with a warning.
pub fn skip_removed_config(topic: &str, config: &str) -> bool {
    let removed = topic_config::is_removed_in_kafka_4(config);
    if removed {
        tracing::warn!(
            topic,
            config,
            "ignoring a topic config Kafka 4.0 removed (accepted as a deprecated no-op)"
        );
    }
    removed
}

/// The (type, name) pairs that appear more than once: Kafka refuses every copy.
pub fn repeated_resources<'a>(
    resources: impl Iterator<Item = (i8, &'a str)>,
) -> HashSet<(i8, &'a str)> {
    let mut seen = HashSet::new();
    resources.filter(|r| !seen.insert(*r)).collect()
}

pub fn resource_repeated() -> Failure {
    (
        ResponseError::InvalidRequest,
        "Each resource must appear at most once.".into(),
    )
}

/// A config key may be named once per resource.
pub fn check_unique_keys<'a>(keys: impl Iterator<Item = &'a str>) -> Result<(), Failure> {
    let mut seen = HashSet::new();
    for key in keys {
        if !seen.insert(key) {
            return Err((
                ResponseError::InvalidRequest,
                "Error due to duplicate config keys".into(),
            ));
        }
    }
    Ok(())
}

/// Refuses a resource whose entries (those listed) carry a null value.
pub fn check_no_nulls<'a>(null_keys: impl Iterator<Item = &'a str>) -> Result<(), Failure> {
    let nulls: Vec<&str> = null_keys.collect();
    if nulls.is_empty() {
        return Ok(());
    }
    Err((
        ResponseError::InvalidRequest,
        format!("Null value not supported for : {}", nulls.join(", ")),
    ))
}

/// A broker resource names this broker, or is empty (the cluster-wide default).
pub fn check_broker_name(broker: &Broker, name: &str) -> Result<(), Failure> {
    if name.is_empty() {
        return Ok(());
    }
    let node = broker.node.node_id;
    match name.parse::<i32>() {
        Err(_) => Err((
            ResponseError::InvalidRequest,
            format!("Node id must be an integer, but it is: {name}"),
        )),
        Ok(id) if id != node => Err((
            ResponseError::InvalidRequest,
            format!("Unexpected broker id, expected {node}, but received {name}"),
        )),
        Ok(_) => Ok(()),
    }
}

/// Kafka refuses a change to a broker config that cannot be updated dynamically with
/// INVALID_REQUEST ("Cannot update these configs dynamically"). None of ottla's can: they are
/// read at start-up. An empty change (or only deletions) changes nothing and succeeds.
pub fn refuse_broker_changes<'a>(keys: impl Iterator<Item = &'a str>) -> Result<(), Failure> {
    let keys: Vec<&str> = keys.collect();
    if keys.is_empty() {
        return Ok(());
    }
    Err((
        ResponseError::InvalidRequest,
        format!(
            "Cannot update these configs dynamically: {}. ottla has no dynamic broker configs: \
             set them in ottla.toml, OTTLA_* variables or flags and restart.",
            keys.join(", ")
        ),
    ))
}

pub fn unsupported_resource_type(resource_type: i8) -> Failure {
    (
        ResponseError::InvalidRequest,
        format!("Unknown resource type {resource_type}"),
    )
}

/// Installs `overrides` as the topic's whole override set (or, with `validate_only`, checks
/// them). The caller holds [`CONFIG_CHANGES`].
pub fn replace_topic_configs(
    broker: &Broker,
    name: &str,
    overrides: TopicOverrides,
    validate_only: bool,
) -> Result<(), Failure> {
    check_topic_name(name)?;
    for (k, v) in &overrides {
        crate::cluster::topic_config::validate(k, v)
            .map_err(|e| topic_failure(name, &crate::cluster::TopicError::InvalidConfig(e)))?;
    }
    broker
        .submit_blocking(
            crate::meta::controller::ControllerRequest::AlterTopicConfigs {
                name: name.to_string(),
                configs: overrides,
                validate_only,
            },
        )
        .map(|_| ())
        .map_err(|e| match e {
            crate::meta::controller::ControllerError::Topic(t) => topic_failure(name, &t),
            other => super::controller_failure(&other),
        })
}

/// Kafka has no cluster-wide topic config resource (an empty name).
pub fn check_topic_name(name: &str) -> Result<(), Failure> {
    if name.is_empty() {
        return Err((
            ResponseError::InvalidRequest,
            "Default topic resources are not allowed.".into(),
        ));
    }
    Ok(())
}

pub fn topic_failure(name: &str, e: &TopicError) -> Failure {
    let message = match e {
        TopicError::Unknown(_) => format!("The topic '{name}' does not exist."),
        other => other.to_string(),
    };
    (topic_error_code(e), message)
}
