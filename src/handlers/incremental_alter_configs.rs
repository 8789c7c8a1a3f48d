//! IncrementalAlterConfigs (key 44): per-entry SET, DELETE, APPEND and SUBTRACT applied to a
//! topic's current overrides; the result replaces the override set (validated as a whole, so
//! one bad entry leaves the resource unchanged). APPEND/SUBTRACT work on LIST configs only
//! (`cleanup.policy`), starting from the default when the config is not overridden, as Kafka's
//! controller does. BROKER resources: ottla has no dynamic broker configs (changes refused,
//! deletions are no-ops); BROKER_LOGGER: there are no runtime-alterable loggers.
//! With `authorizer = "acl"` a topic needs ALTER_CONFIGS on it (else TOPIC_AUTHORIZATION_FAILED)
//! and a broker resource ALTER_CONFIGS on the cluster (else CLUSTER_AUTHORIZATION_FAILED).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::alter_configs::{
    check_broker_name, check_no_nulls, check_topic_name, check_unique_keys, error_fields,
    may_alter, outcomes, refuse_broker_changes, replace_topic_configs, skip_removed_config,
    topic_failure, unsupported_resource_type, Failure, CONFIG_CHANGES,
};
use super::describe_configs::{RESOURCE_BROKER, RESOURCE_BROKER_LOGGER, RESOURCE_TOPIC};
use super::Broker;
use crate::cluster::topic_config::{self, ConfigType, TopicOverrides};
use crate::cluster::TopicError;
use crate::config::Config;

/// Kafka's AlterConfigOp.OpType codes.
pub const OP_SET: i8 = 0;
pub const OP_DELETE: i8 = 1;
pub const OP_APPEND: i8 = 2;
pub const OP_SUBTRACT: i8 = 3;

fn op_name(op: i8) -> &'static str {
    match op {
        OP_SET => "SET",
        OP_DELETE => "DELETE",
        OP_APPEND => "APPEND",
        _ => "SUBTRACT",
    }
}

pub fn handle(
    broker: &Broker,
    req: &IncrementalAlterConfigsRequest,
    caller: &super::Caller,
) -> IncrementalAlterConfigsResponse {
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
    IncrementalAlterConfigsResponse::default().with_responses(responses)
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
            .filter(|c| c.config_operation != OP_DELETE && c.value.is_none())
            .map(|c| c.name.as_str()),
    )?;
    if let Some(c) = r
        .configs
        .iter()
        .find(|c| !(OP_SET..=OP_SUBTRACT).contains(&c.config_operation))
    {
        return Err((
            ResponseError::InvalidRequest,
            format!(
                "Unknown operation type {} for config {}",
                c.config_operation,
                c.name.as_str()
            ),
        ));
    }
    let name = r.resource_name.as_str();
    let ops = r.configs.iter().filter(|c| {
        r.resource_type != RESOURCE_TOPIC || !skip_removed_config(name, c.name.as_str())
    });
    let ops = ops.map(|c| {
        (
            c.name.as_str(),
            c.config_operation,
            c.value.as_ref().map(|v| v.as_str()),
        )
    });
    match r.resource_type {
        RESOURCE_TOPIC => {
            check_topic_name(name)?;
            let _changes = CONFIG_CHANGES.lock().unwrap_or_else(|p| p.into_inner());
            let Some(topic) = broker.topics.get(name) else {
                let missing = TopicError::Unknown(name.to_string());
                return Err(topic_failure(name, &missing));
            };
            let overrides = apply(&topic.configs(), ops, &broker.config)?;
            replace_topic_configs(broker, name, overrides, validate_only)
        }
        RESOURCE_BROKER => {
            check_broker_name(broker, name)?;
            refuse_broker_changes(
                ops.filter(|(_, op, _)| *op != OP_DELETE)
                    .map(|(key, _, _)| key),
            )
        }
        RESOURCE_BROKER_LOGGER => {
            check_broker_name(broker, name)?;
            match ops.map(|(key, op, _)| (key, op)).next() {
                None => Ok(()),
                Some((_, op)) if op == OP_APPEND || op == OP_SUBTRACT => Err((
                    ResponseError::InvalidRequest,
                    format!(
                        "{} operation is not allowed for the BROKER_LOGGER resource",
                        op_name(op)
                    ),
                )),
                Some((key, _)) => Err((
                    ResponseError::InvalidConfig,
                    format!(
                        "Logger {key} does not exist! (ottla's log levels are set with RUST_LOG at start-up)"
                    ),
                )),
            }
        }
        other => Err(unsupported_resource_type(other)),
    }
}

/// Applies `(key, operation, value)` entries to a copy of `current`. Values are checked later,
/// all together, by the registry.
pub fn apply<'a>(
    current: &TopicOverrides,
    ops: impl Iterator<Item = (&'a str, i8, Option<&'a str>)>,
    broker: &Config,
) -> Result<TopicOverrides, Failure> {
    let mut result = current.clone();
    for (key, op, value) in ops {
        let value = value.unwrap_or_default();
        match op {
            OP_SET => {
                result.insert(key.to_string(), value.to_string());
            }
            OP_DELETE => {
                result.remove(key);
            }
            _ => {
                let is_list =
                    topic_config::find(key).is_some_and(|d| d.config_type == ConfigType::List);
                if !is_list {
                    return Err((
                        ResponseError::InvalidConfig,
                        format!(
                            "Can't {} to key {key} because its type is not LIST.",
                            op_name(op)
                        ),
                    ));
                }
                // Not overridden: start from the default (Kafka does the same).
                let start = match result.get(key) {
                    Some(v) => v.clone(),
                    None => topic_config::effective(key, &TopicOverrides::new(), broker).0,
                };
                let mut items: Vec<&str> = list_items(&start).collect();
                for item in list_items(value) {
                    if op == OP_APPEND {
                        if !items.contains(&item) {
                            items.push(item);
                        }
                    } else {
                        items.retain(|i| *i != item);
                    }
                }
                let joined = items.join(",");
                result.insert(key.to_string(), joined);
            }
        }
    }
    Ok(result)
}

fn list_items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        current: &[(&str, &str)],
        ops: &[(&str, i8, Option<&str>)],
    ) -> Result<Vec<(String, String)>, Failure> {
        let current: TopicOverrides = current
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        apply(&current, ops.iter().copied(), &Config::default()).map(|o| o.into_iter().collect())
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn set_and_delete() {
        let got = run(
            &[("retention.ms", "1"), ("segment.ms", "5")],
            &[
                ("retention.ms", OP_SET, Some("2")),
                ("segment.ms", OP_DELETE, None),
            ],
        );
        assert_eq!(got, Ok(pairs(&[("retention.ms", "2")])));
    }

    #[test]
    fn append_starts_from_the_default_and_skips_duplicates() {
        let got = run(
            &[],
            &[("cleanup.policy", OP_APPEND, Some("compact,delete"))],
        );
        assert_eq!(got, Ok(pairs(&[("cleanup.policy", "delete,compact")])));
        let got = run(
            &[("cleanup.policy", "delete,compact")],
            &[("cleanup.policy", OP_SUBTRACT, Some("delete"))],
        );
        assert_eq!(got, Ok(pairs(&[("cleanup.policy", "compact")])));
    }

    #[test]
    fn append_to_a_non_list_is_invalid_config() {
        let got = run(&[], &[("retention.ms", OP_APPEND, Some("1"))]);
        assert_eq!(got.unwrap_err().0, ResponseError::InvalidConfig);
        let got = run(&[], &[("no.such.key", OP_SUBTRACT, Some("1"))]);
        assert_eq!(got.unwrap_err().0, ResponseError::InvalidConfig);
    }
}
