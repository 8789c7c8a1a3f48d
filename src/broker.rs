//! The broker's state: everything a request may touch (configuration, this node's identity,
//! the topic registry, producer ids, the group and transaction coordinators), opened from
//! the data directory and closed cleanly. The server, the handlers and the maintenance
//! timers all share one [`Broker`]; none of them owns it, and this module imports neither
//! the network nor the handlers.

use std::sync::Arc;

use uuid::Uuid;

use crate::clock::Clock;
use crate::cluster::topics::{legacy_topics, retire_legacy_topics, LegacyTopic};
use crate::cluster::{self, NodeInfo, Topic, TopicError, TopicRegistry};
use crate::config::Config;
use crate::groups::{GroupConfig, GroupCoordinator, OFFSETS_TOPIC};
use crate::log::PartitionLog;
use crate::meta::controller::{
    ControllerDefaults, ControllerError, ControllerRequest, ControllerResponse, NewTopic,
    TopicSummary,
};
use crate::meta::node::{MetaNode, MetaOptions};
use crate::meta::records::{ConfigResource, Endpoint, MetaRecord, Overrides};
use crate::txn::coordinator::{TxnCoordinator, TRANSACTION_TOPIC};
use crate::txn::producer_ids::ProducerIdAllocator;

/// Everything a handler may use: configuration, this node's identity, the topics.
pub struct Broker {
    pub config: Config,
    pub node: NodeInfo,
    /// The local replicas of the image's topics.
    pub topics: Arc<TopicRegistry>,
    /// The metadata quorum: the image every answer about the cluster comes from, and the way
    /// to the active controller.
    pub meta: Arc<MetaNode>,
    pub producer_ids: ProducerIdAllocator,
    pub groups: GroupCoordinator,
    pub txns: TxnCoordinator,
    /// The time every deadline is computed from (group sessions and rebalances,
    /// transactions, the logs' `segment.ms` and `flush.ms`, retention and compaction, offset
    /// retention, timestamp bounds): the system's, or a manual one in tests.
    pub clock: Clock,
    /// This process's registration: a new incarnation per start, and the epoch the
    /// controller gave it.
    pub incarnation: Uuid,
    pub broker_epoch: std::sync::atomic::AtomicI64,
    runtime: tokio::runtime::Handle,
}

impl Broker {
    /// Opens (or creates) the state in `config.data_dir` (nothing on disk in memory mode):
    /// the metadata log and its image, the logs of the partitions placed here, recovered if
    /// the last stop was not clean, the producer id block, and the coordinators loaded from
    /// their internal topics. `host:port` is the address this node advertises.
    pub async fn open(config: Config, host: String, port: i32) -> Result<Broker, String> {
        Broker::open_with_clock(config, host, port, Clock::system(), None).await
    }

    /// As [`Broker::open`], with every deadline computed from `clock`; `serve_controller`
    /// starts the controller listener once the metadata node exists.
    pub async fn open_with_clock(
        config: Config,
        host: String,
        port: i32,
        clock: Clock,
        serve_controller: Option<Box<dyn FnOnce(Arc<MetaNode>) + Send>>,
    ) -> Result<Broker, String> {
        let clean_start = !config.memory && cluster::was_clean_shutdown(&config.data_dir);
        let topics = Arc::new(
            TopicRegistry::open_with_clock(&config, clean_start, clock.clone())
                .map_err(|e| e.to_string())?,
        );
        let data_dir = (!config.memory).then(|| config.data_dir.clone());
        let meta = MetaNode::start(MetaOptions {
            node_id: config.node_id,
            voters: config
                .controller_quorum_voters
                .iter()
                .map(|v| (v.id as u64, v.addr()))
                .collect(),
            dir: data_dir.as_ref().map(|d| d.join("meta").join("raft")),
            defaults: ControllerDefaults {
                num_partitions: config.num_partitions,
                default_replication_factor: config.default_replication_factor,
            },
            publisher: topics.clone(),
            heartbeat_interval_ms: MetaOptions::HEARTBEAT_MS,
            election_timeout_ms: MetaOptions::ELECTION_MS,
            serve: serve_controller,
        })
        .await?;
        // An earlier version's topic list: adopted by the entry that establishes the cluster
        // (so a crash before that entry repeats the migration), retired once it is in the log.
        let legacy = match &data_dir {
            Some(dir) => legacy_topics(dir).map_err(|e| e.to_string())?,
            None => None,
        };
        if legacy.is_some() && meta.voters().len() > 1 {
            return Err("this data directory holds topics of a single-node ottla (meta/topics.json): start this node alone first (without controller_quorum_voters) to migrate them; a cluster of several voters cannot adopt them".into());
        }
        let cluster_id = establish_cluster(&config, &meta, legacy.as_deref()).await?;
        if let Some(missing) = legacy
            .iter()
            .flatten()
            .find(|t| meta.image().topic(&t.id).is_none())
        {
            return Err(format!("meta/topics.json lists topic {} ({}), which this node's metadata log does not have: it was not migrated when the cluster was established; refusing to start rather than dropping its data (move meta/topics.json away to start without it)", missing.name, missing.id));
        }
        let incarnation = Uuid::new_v4();
        let runtime = tokio::runtime::Handle::current();
        // Logs follow the image from here on.
        let registry = topics.clone();
        let image = meta.image();
        crate::threads::spawn_blocking(move || registry.materialize(&image))
            .await
            .map_err(|e| e.to_string())?;
        if let (Some(dir), Some(_)) = (&data_dir, &legacy) {
            retire_legacy_topics(dir)
                .map_err(|e| format!("cannot retire meta/topics.json: {e}"))?;
            tracing::info!("migrated meta/topics.json into the metadata log");
        }
        if !config.memory {
            // From here on a crash is unclean until the next graceful shutdown.
            cluster::forget_clean_shutdown(&config.data_dir).map_err(|e| e.to_string())?;
        }
        let producer_ids =
            ProducerIdAllocator::open((!config.memory).then(|| config.data_dir.clone()))
                .map_err(|e| e.to_string())?;
        let epoch = register(&meta, &config, &cluster_id, incarnation, &host, port).await?;
        for (name, configs) in internal_topics() {
            if meta.image().topic_by_name(name).is_none() {
                let created = meta
                    .submit(ControllerRequest::CreateTopic(NewTopic {
                        name: name.to_string(),
                        partitions: Some(1),
                        replication_factor: Some(1),
                        assignments: None,
                        configs,
                        validate_only: false,
                    }))
                    .await;
                match created {
                    Ok(_) | Err(ControllerError::Topic(TopicError::AlreadyExists(_))) => {}
                    Err(e) => return Err(format!("cannot create {name}: {e}")),
                }
            }
        }
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
            meta,
            producer_ids,
            config,
            incarnation,
            broker_epoch: std::sync::atomic::AtomicI64::new(epoch),
            runtime,
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

    /// Heartbeats to the active controller every `broker_heartbeat_interval_ms` until `stop`,
    /// registering again when the controller no longer knows this broker's epoch.
    pub async fn heartbeat_loop(self: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
        use std::sync::atomic::Ordering;
        let every = std::time::Duration::from_millis(self.config.broker_heartbeat_interval_ms);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            let epoch = self.broker_epoch.load(Ordering::Relaxed);
            let beat = self.meta.submit(ControllerRequest::Heartbeat {
                id: self.config.node_id,
                epoch,
                applied: self.meta.cell.applied_index(),
                want_shutdown: false,
            });
            match tokio::time::timeout(every * 2, beat).await {
                Ok(Ok(_)) => {}
                Ok(Err(
                    ControllerError::StaleBrokerEpoch | ControllerError::BrokerNotRegistered,
                )) => {
                    tracing::warn!(
                        epoch,
                        "the controller does not know this broker's epoch: registering again"
                    );
                    match register(
                        &self.meta,
                        &self.config,
                        &self.node.cluster_id,
                        self.incarnation,
                        &self.node.host,
                        self.node.port,
                    )
                    .await
                    {
                        Ok(e) => self.broker_epoch.store(e, Ordering::Relaxed),
                        Err(e) => tracing::warn!(error = %e, "registering again failed"),
                    }
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "heartbeat failed"),
                Err(_) => tracing::debug!("heartbeat timed out"),
            }
        }
    }

    /// Tells the controller this broker is going (it is fenced at once instead of after its
    /// session times out). Best effort, bounded by a heartbeat interval.
    pub async fn controlled_shutdown(&self) {
        let epoch = self.broker_epoch.load(std::sync::atomic::Ordering::Relaxed);
        let request = self.meta.submit(ControllerRequest::Heartbeat {
            id: self.config.node_id,
            epoch,
            applied: self.meta.cell.applied_index(),
            want_shutdown: true,
        });
        let wait = std::time::Duration::from_millis(self.config.broker_heartbeat_interval_ms);
        match tokio::time::timeout(wait, request).await {
            Ok(Ok(_)) => tracing::info!("controlled shutdown: fenced by the controller"),
            Ok(Err(e)) => tracing::warn!(error = %e, "controlled shutdown refused"),
            Err(_) => tracing::warn!("controlled shutdown: the controller did not answer"),
        }
    }

    /// Runs a controller request from a blocking-pool thread (the handlers of topic changes
    /// run there) and waits for its answer.
    pub fn submit_blocking(
        &self,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, ControllerError> {
        if crate::threads::on_worker() {
            // Waiting here would stall a worker (and block_on inside the runtime panics).
            tracing::error!("a controller request was made on a runtime worker; refused");
            return Err(ControllerError::Internal(
                "a controller request was made from a runtime worker".into(),
            ));
        }
        self.runtime.block_on(self.meta.submit(request))
    }

    /// Creates a topic through the active controller (blocking-pool threads only).
    pub fn create_topic(&self, t: NewTopic) -> Result<TopicSummary, ControllerError> {
        match self.submit_blocking(ControllerRequest::CreateTopic(t))? {
            ControllerResponse::Topic(s) => Ok(s),
            other => Err(ControllerError::Internal(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Creates a topic with the broker defaults for what is not given, through the active
    /// controller, and returns this broker's view of it once its image shows it.
    pub async fn admin_create_topic(
        &self,
        name: &str,
        partitions: Option<i32>,
        configs: Overrides,
    ) -> Result<Arc<Topic>, ControllerError> {
        self.meta
            .submit(ControllerRequest::CreateTopic(NewTopic {
                name: name.to_string(),
                partitions,
                replication_factor: None,
                assignments: None,
                configs,
                validate_only: false,
            }))
            .await?;
        self.topics
            .get(name)
            .ok_or_else(|| ControllerError::Internal(format!("{name} is not on this broker")))
    }

    /// Deletes a topic through the active controller.
    pub async fn admin_delete_topic(&self, name: &str) -> Result<(), ControllerError> {
        self.meta
            .submit(ControllerRequest::DeleteTopic {
                name: name.to_string(),
            })
            .await
            .map(|_| ())
    }

    /// The topic named `name`, auto-creating it when allowed and configured. `None` when it
    /// does not exist (or its creation failed, which is logged). Blocking-pool threads only
    /// when it may create.
    pub fn topic_or_auto_create(&self, name: &str, allow_auto_create: bool) -> Option<Arc<Topic>> {
        if let Some(t) = self.topics.get(name) {
            return Some(t);
        }
        if !(allow_auto_create && self.config.auto_create_topics) {
            return None;
        }
        let created = self.create_topic(NewTopic {
            name: name.to_string(),
            partitions: None,
            replication_factor: None,
            assignments: None,
            configs: Overrides::new(),
            validate_only: false,
        });
        match created {
            Ok(_) | Err(ControllerError::Topic(TopicError::AlreadyExists(_))) => {
                self.topics.get(name)
            }
            Err(ControllerError::InvalidReplicationFactor(why)) => {
                // Refused as CreateTopics refuses it; logged at debug, not per request.
                tracing::debug!(topic = name, %why, "not auto-creating");
                None
            }
            Err(e) => {
                tracing::warn!(topic = name, error = %e, "auto-creating topic failed");
                None
            }
        }
    }
}

/// The internal topics every cluster has, with their configs.
fn internal_topics() -> Vec<(&'static str, Overrides)> {
    let compacted = || -> Overrides {
        [
            ("cleanup.policy", "compact"),
            ("segment.bytes", "104857600"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    vec![
        (OFFSETS_TOPIC, compacted()),
        (TRANSACTION_TOPIC, compacted()),
    ]
}

/// The cluster id: the image's. A new cluster's first controller writes it (the configured
/// one, else `meta/cluster_id` of an earlier version, else a new one), with the migrated
/// topics of `meta/topics.json` in the same entry. A node configured with a different id
/// refuses to start, as Kafka does.
async fn establish_cluster(
    config: &Config,
    meta: &MetaNode,
    legacy: Option<&[LegacyTopic]>,
) -> Result<String, String> {
    loop {
        if let Some(id) = meta.image().cluster_id.clone() {
            if let Some(wanted) = config.cluster_id.as_ref().filter(|w| **w != id) {
                return Err(format!(
                    "cluster_id {wanted} is configured, but this node belongs to cluster {id}"
                ));
            }
            if !config.memory {
                let path = config.data_dir.join("meta").join("cluster_id");
                if std::fs::read_to_string(&path)
                    .map(|s| s.trim().to_string())
                    .ok()
                    .as_deref()
                    != Some(&id)
                {
                    crate::log::fsutil::write_atomically(&path, id.as_bytes())
                        .map_err(|e| e.to_string())?;
                }
            }
            return Ok(id);
        }
        if meta.is_controller() {
            let id = cluster::resolve_cluster_id(config).map_err(|e| e.to_string())?;
            let mut records = vec![MetaRecord::ClusterId { id }];
            records.extend(
                legacy
                    .unwrap_or_default()
                    .iter()
                    .flat_map(|t| legacy_records(config.node_id, t)),
            );
            match meta.controller.propose(records).await {
                Ok(_) | Err(ControllerError::NotController(_)) => continue,
                Err(e) => return Err(format!("cannot write the cluster id: {e}")),
            }
        }
        // Another voter leads: its first entry carries the id.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A topic of `meta/topics.json` as metadata records: every partition on this node, its
/// leader at epoch 0 (a single node's partitions never changed leader).
fn legacy_records(node_id: i32, t: &LegacyTopic) -> Vec<MetaRecord> {
    let mut records = vec![MetaRecord::Topic {
        name: t.name.clone(),
        id: t.id,
    }];
    records.extend((0..t.partitions).map(|index| MetaRecord::Partition {
        topic_id: t.id,
        index,
        replicas: vec![node_id],
        isr: vec![node_id],
        leader: node_id,
        leader_epoch: 0,
        partition_epoch: 0,
    }));
    records.extend(t.configs.iter().map(|(k, v)| MetaRecord::Config {
        resource: ConfigResource::Topic(t.name.clone()),
        name: k.clone(),
        value: Some(v.clone()),
    }));
    records
}

/// Registers this broker with the active controller and waits until it is unfenced (its
/// image has caught up with the registration). Returns its epoch.
async fn register(
    meta: &MetaNode,
    config: &Config,
    cluster_id: &str,
    incarnation: Uuid,
    host: &str,
    port: i32,
) -> Result<i64, String> {
    let registered = meta
        .submit(ControllerRequest::RegisterBroker {
            id: config.node_id,
            cluster_id: cluster_id.to_string(),
            incarnation,
            endpoints: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: host.to_string(),
                port: u16::try_from(port).unwrap_or(0),
                security_protocol: 0,
            }],
            rack: config.broker_rack.clone(),
        })
        .await;
    let epoch = match registered {
        Ok(ControllerResponse::Registered { epoch }) => epoch,
        Ok(other) => return Err(format!("unexpected registration answer {other:?}")),
        Err(e) => return Err(format!("cannot register with the controller: {e}")),
    };
    let unfenced = meta
        .submit(ControllerRequest::Heartbeat {
            id: config.node_id,
            epoch,
            applied: meta.cell.applied_index(),
            want_shutdown: false,
        })
        .await;
    match unfenced {
        Ok(ControllerResponse::Heartbeat { fenced: false, .. }) => {}
        Ok(other) => tracing::warn!(answer = ?other, "still fenced after the first heartbeat"),
        Err(e) => tracing::warn!(error = %e, "first heartbeat failed"),
    }
    tracing::info!(
        broker = config.node_id,
        epoch,
        "registered with the controller"
    );
    Ok(epoch)
}

/// Partition 0 of an internal topic (created through the controller at start).
/// TEMP: a node without partition 0 gets an in-memory log, until the coordinators run on
/// the partition leaders.
fn internal_log(
    topics: &TopicRegistry,
    name: &str,
    clock: &Clock,
) -> Result<Arc<PartitionLog>, String> {
    Ok(topics
        .get(name)
        .and_then(|t| t.partition(0))
        .map(|p| p.log().clone())
        .unwrap_or_else(|| {
            tracing::warn!(
                topic = name,
                "TEMP: partition 0 is not local: coordinator on an in-memory log"
            );
            Arc::new(PartitionLog::in_memory_with_clock(
                Default::default(),
                clock.clone(),
            ))
        }))
}

/// Creates `__transaction_state` if missing and loads the transactions from it.
fn open_txn_coordinator(topics: &TopicRegistry, clock: &Clock) -> Result<TxnCoordinator, String> {
    let log = internal_log(topics, TRANSACTION_TOPIC, clock)?;
    TxnCoordinator::open_with_clock(log, clock.clone())
        .map_err(|e| format!("loading transaction state: {e}"))
}

/// Creates `__consumer_offsets` (compacted, internal) if missing and loads the groups from it.
fn open_group_coordinator(
    topics: &TopicRegistry,
    config: &Config,
    clock: &Clock,
) -> Result<GroupCoordinator, String> {
    let log = internal_log(topics, OFFSETS_TOPIC, clock)?;
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
