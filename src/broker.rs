//! The broker's state: everything a request may touch (configuration, this node's identity,
//! the topic registry, producer ids, the group and transaction coordinators), opened from
//! the data directory and closed cleanly. The server, the handlers and the maintenance
//! timers all share one [`Broker`]; none of them owns it, and this module imports neither
//! the network nor the handlers.

use std::sync::Arc;

use crate::clock::Clock;
use crate::cluster::{self, NodeInfo, Topic, TopicError, TopicRegistry};
use crate::config::Config;
use crate::groups::{GroupConfig, GroupCoordinator, OFFSETS_TOPIC};
use crate::log::PartitionLog;
use crate::txn::coordinator::{TxnCoordinator, TRANSACTION_TOPIC};
use crate::txn::producer_ids::ProducerIdAllocator;

/// Everything a handler may use: configuration, this node's identity, the topics.
pub struct Broker {
    pub config: Config,
    pub node: NodeInfo,
    pub topics: TopicRegistry,
    pub producer_ids: ProducerIdAllocator,
    pub groups: GroupCoordinator,
    pub txns: TxnCoordinator,
    /// The time every deadline is computed from (group sessions and rebalances,
    /// transactions, the logs' `segment.ms` and `flush.ms`, retention and compaction, offset
    /// retention, timestamp bounds): the system's, or a manual one in tests.
    pub clock: Clock,
}

impl Broker {
    /// Opens (or creates) the state in `config.data_dir` (nothing on disk in memory mode):
    /// the topics and their logs, recovered if the last stop was not clean, the producer id
    /// block, and the coordinators loaded from their internal topics. `host:port` is the
    /// address this node advertises.
    pub fn open(config: Config, host: String, port: i32) -> Result<Broker, String> {
        Broker::open_with_clock(config, host, port, Clock::system())
    }

    /// As [`Broker::open`], with every deadline computed from `clock`.
    pub fn open_with_clock(
        config: Config,
        host: String,
        port: i32,
        clock: Clock,
    ) -> Result<Broker, String> {
        let cluster_id = cluster::resolve_cluster_id(&config).map_err(|e| e.to_string())?;
        let clean_start = !config.memory && cluster::was_clean_shutdown(&config.data_dir);
        let topics = TopicRegistry::open_with_clock(&config, clean_start, clock.clone())
            .map_err(|e| e.to_string())?;
        if !config.memory {
            // From here on a crash is unclean until the next graceful shutdown.
            cluster::forget_clean_shutdown(&config.data_dir).map_err(|e| e.to_string())?;
        }
        let producer_ids =
            ProducerIdAllocator::open((!config.memory).then(|| config.data_dir.clone()))
                .map_err(|e| e.to_string())?;
        let groups = open_group_coordinator(&topics, &config, &clock)?;
        let txns = open_txn_coordinator(&topics, &clock)?;
        Ok(Broker {
            groups,
            txns,
            clock,
            node: NodeInfo {
                node_id: config.node_id,
                host,
                port,
                cluster_id,
                rack: config.broker_rack.clone(),
            },
            topics,
            producer_ids,
            config,
        })
    }

    /// The last step of a graceful stop, once no request can append any more: syncs every
    /// log (data, indexes, checkpoints, producer snapshots), then writes the clean-shutdown
    /// marker that lets the next start skip recovery. Blocking: call it on the blocking pool.
    pub fn close(&self) -> std::io::Result<()> {
        self.topics.sync_all(true)?;
        if !self.config.memory {
            cluster::mark_clean_shutdown(&self.config.data_dir)?;
        }
        Ok(())
    }

    /// The topic named `name`, auto-creating it when allowed and configured. `None` when it
    /// does not exist (or its creation failed, which is logged).
    pub fn topic_or_auto_create(&self, name: &str, allow_auto_create: bool) -> Option<Arc<Topic>> {
        if let Some(t) = self.topics.get(name) {
            return Some(t);
        }
        if !(allow_auto_create && self.config.auto_create_topics) {
            return None;
        }
        if i32::from(self.config.default_replication_factor) > cluster::LIVE_BROKERS {
            // Refused as CreateTopics refuses it; logged once at start, not per request.
            tracing::debug!(
                topic = name,
                "not auto-creating: default_replication_factor exceeds the available brokers"
            );
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

/// An internal compacted topic of one partition, created if missing.
fn internal_log(topics: &TopicRegistry, name: &str) -> Result<Arc<PartitionLog>, String> {
    let topic = match topics.get(name) {
        Some(t) => t,
        None => {
            let configs = [
                ("cleanup.policy", "compact"),
                ("segment.bytes", "104857600"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            topics
                .create(name, Some(1), configs)
                .map_err(|e| e.to_string())?
        }
    };
    topic
        .partition(0)
        .map(|p| p.log().clone())
        .ok_or_else(|| format!("{name} has no partition 0"))
}

/// Creates `__transaction_state` if missing and loads the transactions from it.
fn open_txn_coordinator(topics: &TopicRegistry, clock: &Clock) -> Result<TxnCoordinator, String> {
    let log = internal_log(topics, TRANSACTION_TOPIC)?;
    TxnCoordinator::open_with_clock(log, clock.clone())
        .map_err(|e| format!("loading transaction state: {e}"))
}

/// Creates `__consumer_offsets` (compacted, internal) if missing and loads the groups from it.
fn open_group_coordinator(
    topics: &TopicRegistry,
    config: &Config,
    clock: &Clock,
) -> Result<GroupCoordinator, String> {
    let log = internal_log(topics, OFFSETS_TOPIC)?;
    GroupCoordinator::open_with_clock(
        log,
        GroupConfig {
            initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
            min_session_timeout_ms: config.group_min_session_timeout_ms,
            max_session_timeout_ms: config.group_max_session_timeout_ms,
            offsets_retention_ms: config.offsets_retention_minutes.saturating_mul(60_000),
        },
        clock.clone(),
    )
    .map_err(|e| format!("loading consumer groups: {e}"))
}
