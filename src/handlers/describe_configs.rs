//! DescribeConfigs (key 32): topic configs (overrides and defaults, with their sources) and
//! this broker's settings. Topic overrides change through AlterConfigs and
//! IncrementalAlterConfigs; broker settings are static (read at start-up). With
//! `authorizer = "acl"` a topic needs DESCRIBE_CONFIGS on it (else TOPIC_AUTHORIZATION_FAILED)
//! and a broker resource DESCRIBE_CONFIGS on the cluster (else CLUSTER_AUTHORIZATION_FAILED).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::{str_bytes, Broker, NONE};
use crate::cluster::topic_config::{self, ConfigType, TopicOverrides, TOPIC_CONFIGS};
use crate::cluster::NodeInfo;
use crate::config::Config;

/// The name `listeners` gives `controller_listen` (Kafka's usual `controller.listener.names`).
const CONTROLLER_LISTENER: &str = "CONTROLLER";

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
pub const RESOURCE_BROKER_LOGGER: i8 = 8;

/// Kafka's ConfigSource codes.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

/// One described config.
pub struct ConfigEntry {
    pub name: String,
    /// `None`: unset, with no default (Kafka answers a null value, e.g. `broker.rack`).
    pub value: Option<String>,
    pub source: i8,
    pub read_only: bool,
    pub config_type: ConfigType,
    pub doc: &'static str,
    /// The broker setting that provides the default (a synonym, in Kafka's terms).
    pub broker_synonym: Option<(&'static str, String)>,
}

/// Every topic config with its effective value for a topic with `overrides`.
pub fn topic_entries(overrides: &TopicOverrides, broker: &Config) -> Vec<ConfigEntry> {
    TOPIC_CONFIGS
        .iter()
        // Kafka describes an internal key only where the topic sets it.
        .filter(|def| !def.name.starts_with("internal.") || overrides.contains_key(def.name))
        .map(|def| {
            let default = topic_config::default_value(def, broker);
            let (value, overridden) = topic_config::effective(def.name, overrides, broker);
            ConfigEntry {
                name: def.name.to_string(),
                value: Some(value),
                source: if overridden {
                    SOURCE_TOPIC
                } else {
                    SOURCE_DEFAULT
                },
                read_only: false,
                config_type: def.config_type,
                doc: def.doc,
                broker_synonym: Some((def.broker_synonym, default)),
            }
        })
        .collect()
}

/// This broker's settings under their Kafka names.
fn broker_entries(config: &Config, node: &NodeInfo) -> Vec<ConfigEntry> {
    let listeners = config
        .listeners()
        .unwrap_or_default()
        .into_iter()
        .map(|(p, l)| format!("{}://{l}", p.name()))
        .chain(
            config
                .controller_addr()
                .map(|l| format!("{CONTROLLER_LISTENER}://{l}")),
        )
        .collect::<Vec<_>>()
        .join(",");
    let advertised = node
        .endpoints
        .iter()
        .map(|e| format!("{}://{}", e.name, e.addr()))
        .collect::<Vec<_>>()
        .join(",");
    let data_dir = if config.memory {
        "(memory)".to_string()
    } else {
        config.data_dir.display().to_string()
    };
    let rows: Vec<(&str, Option<String>, ConfigType, &'static str)> = vec![
        (
            "listeners",
            Some(listeners),
            ConfigType::List,
            "Addresses the broker listens on.",
        ),
        (
            "advertised.listeners",
            Some(advertised),
            ConfigType::List,
            "Address given to clients in Metadata.",
        ),
        (
            "node.id",
            Some(config.node_id.to_string()),
            ConfigType::Int,
            "This broker's id.",
        ),
        (
            "process.roles",
            Some(config.process_roles_csv()),
            ConfigType::List,
            "The roles this node runs: broker, controller, or both (combined mode).",
        ),
        (
            "controller.quorum.voters",
            Some(config.controller_quorum_voters_csv()),
            ConfigType::List,
            "The controller voters, id@host:port (empty: a cluster of one).",
        ),
        (
            "controller.listener.names",
            config
                .controller_listen
                .as_ref()
                .map(|_| CONTROLLER_LISTENER.to_string()),
            ConfigType::List,
            "The listener the controller serves on.",
        ),
        (
            "broker.rack",
            config.broker_rack.clone(),
            ConfigType::String,
            "This broker's rack.",
        ),
        (
            "broker.id",
            Some(config.node_id.to_string()),
            ConfigType::Int,
            "This broker's id.",
        ),
        (
            "num.partitions",
            Some(config.num_partitions.to_string()),
            ConfigType::Int,
            "Default partition count of new topics.",
        ),
        (
            "auto.create.topics.enable",
            Some(config.auto_create_topics.to_string()),
            ConfigType::Boolean,
            "Create unknown topics on metadata requests.",
        ),
        (
            "message.max.bytes",
            Some(config.message_max_bytes.to_string()),
            ConfigType::Int,
            "Largest record batch accepted.",
        ),
        (
            "socket.request.max.bytes",
            Some(config.max_frame_bytes.to_string()),
            ConfigType::Int,
            "Largest request accepted.",
        ),
        (
            "log.dirs",
            Some(data_dir),
            ConfigType::String,
            "Where partition logs are stored.",
        ),
        (
            "log.segment.bytes",
            Some(config.log_segment_bytes.to_string()),
            ConfigType::Int,
            "Default segment size.",
        ),
        (
            "log.roll.ms",
            Some(config.log_segment_ms.to_string()),
            ConfigType::Long,
            "Default segment age before rolling.",
        ),
        (
            "log.retention.ms",
            Some(config.log_retention_ms.to_string()),
            ConfigType::Long,
            "Default retention time.",
        ),
        (
            "log.retention.bytes",
            Some(config.log_retention_bytes.to_string()),
            ConfigType::Long,
            "Default retention size.",
        ),
        (
            "log.index.interval.bytes",
            Some(config.log_index_interval_bytes.to_string()),
            ConfigType::Int,
            "Bytes between offset index entries.",
        ),
        (
            "log.message.timestamp.type",
            Some(config.log_message_timestamp_type.clone()),
            ConfigType::String,
            "Default timestamp type of topics.",
        ),
        (
            "default.replication.factor",
            Some(config.default_replication_factor.to_string()),
            ConfigType::Int,
            "Replication factor of auto-created topics.",
        ),
        (
            "min.insync.replicas",
            Some(config.min_insync_replicas.to_string()),
            ConfigType::Int,
            "Replicas that must acknowledge an acks=all write.",
        ),
        (
            "offsets.topic.num.partitions",
            Some(config.offsets_topic_num_partitions.to_string()),
            ConfigType::Int,
            "Partitions of __consumer_offsets when it is created.",
        ),
        (
            "offsets.topic.replication.factor",
            Some(config.offsets_topic_replication_factor.to_string()),
            ConfigType::Short,
            "Replication factor of __consumer_offsets when it is created (1 on a cluster of one).",
        ),
        (
            "transaction.state.log.num.partitions",
            Some(config.transaction_state_log_num_partitions.to_string()),
            ConfigType::Int,
            "Partitions of __transaction_state when it is created.",
        ),
        (
            "transaction.state.log.replication.factor",
            Some(config.transaction_state_log_replication_factor.to_string()),
            ConfigType::Short,
            "Replication factor of __transaction_state when it is created (1 on a cluster of one).",
        ),
    ];
    rows.into_iter()
        .map(|(name, value, config_type, doc)| ConfigEntry {
            name: name.to_string(),
            source: if value.is_some() {
                SOURCE_STATIC_BROKER
            } else {
                SOURCE_DEFAULT
            },
            value,
            read_only: true,
            config_type,
            doc,
            broker_synonym: None,
        })
        .collect()
}

/// Kafka's authorization of a config resource for `op` (DESCRIBE_CONFIGS or ALTER_CONFIGS):
/// a topic's on the topic, a broker's (and its loggers') on the cluster. The error and
/// message when refused; other resource types are left to the handler's own errors.
pub fn config_refusal(
    caller: &super::Caller,
    op: crate::security::acl::AclOperation,
    resource_type: i8,
    name: &str,
) -> Option<(ResponseError, String)> {
    use crate::security::acl::ResourceType;
    let code = match resource_type {
        RESOURCE_TOPIC => caller.refusal(op, ResourceType::Topic, name),
        RESOURCE_BROKER | RESOURCE_BROKER_LOGGER => caller.cluster_refusal(op),
        _ => None,
    }?;
    Some((code, format!("{op} on {name:?} is not authorized")))
}

pub fn handle(
    broker: &Broker,
    req: &DescribeConfigsRequest,
    version: i16,
    caller: &super::Caller,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .iter()
        .map(|r| {
            let name = r.resource_name.as_str();
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let refused = config_refusal(
                caller,
                crate::security::acl::AclOperation::DescribeConfigs,
                r.resource_type,
                name,
            );
            let entries = match (r.resource_type, refused) {
                (_, Some(refused)) => Err(refused),
                (RESOURCE_TOPIC, None) => match broker.topics.get(name) {
                    Some(t) => Ok(topic_entries(&t.configs(), &broker.config)),
                    None => Err((
                        ResponseError::UnknownTopicOrPartition,
                        format!("Topic {name} not found"),
                    )),
                },
                (RESOURCE_BROKER | RESOURCE_BROKER_LOGGER, None)
                    if !(name.is_empty() || name == broker.node.node_id.to_string()) =>
                {
                    Err((
                        ResponseError::InvalidRequest,
                        format!("Unexpected broker id {name}"),
                    ))
                }
                (RESOURCE_BROKER, None) => Ok(broker_entries(&broker.config, &broker.node)),
                (RESOURCE_BROKER_LOGGER, None) => Ok(Vec::new()),
                (other, None) => Err((
                    ResponseError::InvalidRequest,
                    format!("Unsupported resource type {other}"),
                )),
            };
            match entries {
                Err((error, message)) => base
                    .with_error_code(error.code())
                    .with_error_message(Some(str_bytes(message))),
                Ok(entries) => base.with_error_code(NONE).with_configs(
                    entries
                        .into_iter()
                        .filter(|e| {
                            r.configuration_keys.as_ref().is_none_or(|keys| {
                                keys.is_empty() || keys.iter().any(|k| k.as_str() == e.name)
                            })
                        })
                        .map(|e| {
                            describe_entry(
                                e,
                                req.include_synonyms,
                                req.include_documentation,
                                version,
                            )
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe_entry(
    e: ConfigEntry,
    include_synonyms: bool,
    include_documentation: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let mut synonyms = Vec::new();
    if include_synonyms {
        if e.source == SOURCE_TOPIC {
            synonyms.push(
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(e.name.clone()))
                    .with_value(e.value.clone().map(str_bytes))
                    .with_source(SOURCE_TOPIC),
            );
        }
        if let Some((name, value)) = &e.broker_synonym {
            synonyms.push(
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(*name))
                    .with_value(Some(str_bytes(value.clone())))
                    .with_source(SOURCE_DEFAULT),
            );
        }
    }
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(e.name))
        .with_value(e.value.map(str_bytes))
        .with_read_only(e.read_only)
        .with_config_source(e.source)
        .with_is_sensitive(false)
        .with_synonyms(synonyms)
        .with_config_type(if version >= 3 { e.config_type as i8 } else { 0 })
        .with_documentation(include_documentation.then(|| str_bytes(e.doc)))
}
