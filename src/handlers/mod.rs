//! One file per Kafka API: each translates its request into calls on the domain (`cluster`,
//! `log`) and builds the response. Handlers never see sockets or files.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_topic_partitions;
pub mod describe_transactions;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod produce;
pub mod sync_group;
pub mod txn_offset_commit;

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::{NodeInfo, Topic, TopicError, TopicRegistry};
use crate::config::Config;
use crate::groups::GroupCoordinator;
use crate::txn::coordinator::TxnCoordinator;
use crate::txn::producer_ids::ProducerIdAllocator;

/// Everything a handler may use: configuration, this node's identity, the topics.
pub struct Broker {
    pub config: Config,
    pub node: NodeInfo,
    pub topics: TopicRegistry,
    pub producer_ids: ProducerIdAllocator,
    pub groups: GroupCoordinator,
    pub txns: TxnCoordinator,
}

impl Broker {
    /// The topic named `name`, auto-creating it when allowed and configured. `None` when it
    /// does not exist (or its creation failed, which is logged).
    pub fn topic_or_auto_create(&self, name: &str, allow_auto_create: bool) -> Option<Arc<Topic>> {
        if let Some(t) = self.topics.get(name) {
            return Some(t);
        }
        if !(allow_auto_create && self.config.auto_create_topics) {
            return None;
        }
        match self.topics.create(name, None, Default::default()) {
            Ok(t) => Some(t),
            Err(TopicError::AlreadyExists(_)) => self.topics.get(name),
            Err(e) => {
                tracing::warn!(topic = name, error = %e, "auto-creating topic failed");
                None
            }
        }
    }
}

/// The Kafka error code for a topic operation's failure.
pub fn topic_error_code(e: &TopicError) -> ResponseError {
    match e {
        TopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
        TopicError::InvalidName(_) => ResponseError::InvalidTopicException,
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicError::Unknown(_) => ResponseError::UnknownTopicOrPartition,
        TopicError::Storage(_) => ResponseError::KafkaStorageError,
    }
}

pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub fn topic_name(s: impl Into<String>) -> TopicName {
    TopicName(str_bytes(s))
}

impl Broker {
    pub fn node_id(&self) -> BrokerId {
        BrokerId(self.node.node_id)
    }
}

/// Kafka's "no error" code.
pub const NONE: i16 = 0;
