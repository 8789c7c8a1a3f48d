//! The broker's state: everything a request may touch (configuration, this node's identity,
//! the topic registry, producer ids, the group and transaction coordinators), opened from
//! the data directory and closed cleanly. The server, the handlers and the maintenance
//! timers all share one [`Broker`]; none of them owns it, and this module imports neither
//! the network nor the handlers.
//!
//! The coordinators follow this broker's leadership of the internal topics' partitions: one
//! group coordinator per `__consumer_offsets` partition and one transaction coordinator per
//! `__transaction_state` partition it leads, loaded when it becomes leader and resigned when
//! it stops (after every metadata change, [`follow_leadership`]).

use std::collections::HashSet;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::clock::Clock;
use crate::cluster::fetcher::ReplicaFetchers;
use crate::cluster::topics::{legacy_topics, retire_legacy_topics, LegacyTopic};
use crate::cluster::{self, NodeInfo, Role, Topic, TopicError, TopicRegistry};
use crate::config::Config;
use crate::coordinator::partitions::{Load, Wanted};
use crate::groups::{GroupConfig, GroupCoordinators, OFFSETS_TOPIC};
use crate::meta::controller::{
    ControllerDefaults, ControllerError, ControllerRequest, ControllerResponse, NewTopic,
    TopicSummary,
};
use crate::meta::image::MetadataImage;
use crate::meta::node::{MetaNode, MetaOptions};
use crate::meta::records::{ConfigResource, Endpoint, MetaRecord, Overrides};
use crate::txn::coordinator::TRANSACTION_TOPIC;
use crate::txn::markers::MarkerChannel;
use crate::txn::peers::Peers;
use crate::txn::producer_ids::ProducerIdAllocator;
use crate::txn::verify::TxnVerifier;
use crate::txn::TxnCoordinators;

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
    /// One group coordinator per `__consumer_offsets` partition led here.
    pub groups: Arc<GroupCoordinators>,
    /// One transaction coordinator per `__transaction_state` partition led here.
    pub txns: Arc<TxnCoordinators>,
    /// Asks a transactional id's coordinator (here or on another broker) whether a
    /// partition is in a producer's ongoing transaction (KIP-890 verification).
    pub txn_verifier: TxnVerifier,
    /// Incremental fetch sessions (KIP-227).
    pub fetch_sessions: crate::cluster::fetch_session::FetchSessionCache,
    /// The time every deadline is computed from (group sessions and rebalances,
    /// transactions, the logs' `segment.ms` and `flush.ms`, retention and compaction, offset
    /// retention, timestamp bounds): the system's, or a manual one in tests.
    pub clock: Clock,
    /// This process's registration: a new incarnation per start, and the epoch the
    /// controller gave it.
    pub incarnation: Uuid,
    pub broker_epoch: Arc<AtomicI64>,
    runtime: tokio::runtime::Handle,
    /// Internal topics whose creation FindCoordinator asked for and the controller has not
    /// answered yet (one request at a time per topic).
    creating: Arc<Mutex<HashSet<&'static str>>>,
    /// Dropped with the broker: stops the task that follows leadership.
    _follower: tokio::sync::watch::Sender<bool>,
    /// The follower fetchers (one per leader this broker follows partitions from).
    pub fetchers: Arc<ReplicaFetchers>,
    /// The authorizer built from the image's ACL set it was built for (rebuilt when the
    /// image holds another set).
    acl_cache: Mutex<Option<AclCacheEntry>>,
    /// How OAUTHBEARER tokens are checked, when that mechanism is enabled.
    oauth: Option<Arc<crate::security::oauthbearer::Validator>>,
    /// The client quotas of the image and their sensors (kept current by
    /// `follow_leadership`).
    pub quotas: Arc<crate::quota::QuotaManager>,
}

type AclCacheEntry = (
    Arc<std::collections::BTreeSet<crate::security::acl::AclBinding>>,
    Arc<crate::security::acl::Authorizer>,
);

impl Broker {
    /// How OAUTHBEARER tokens are checked (None: the mechanism is not enabled).
    pub fn oauth_validator(&self) -> Option<Arc<crate::security::oauthbearer::Validator>> {
        self.oauth.clone()
    }

    /// The authorizer of the current ACLs, with `authorizer = "acl"`; None with `"none"`
    /// (everyone may do everything).
    pub fn authorizer(&self) -> Option<Arc<crate::security::acl::Authorizer>> {
        if self.config.authorizer != "acl" {
            return None;
        }
        let acls = self.meta.image().acls.clone();
        let mut cache = self.acl_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((set, authorizer)) = &*cache {
            if Arc::ptr_eq(set, &acls) {
                return Some(authorizer.clone());
            }
        }
        let authorizer = Arc::new(crate::security::acl::Authorizer::new(
            acls.iter().cloned(),
            self.config.super_users.clone(),
            self.config.allow_everyone_if_no_acl_found,
        ));
        *cache = Some((acls, authorizer.clone()));
        Some(authorizer)
    }

    /// Opens (or creates) the state in `config.data_dir` (nothing on disk in memory mode):
    /// the metadata log and its image, the logs of the partitions placed here, recovered if
    /// the last stop was not clean, the producer id block, and the coordinators loaded from
    /// their internal topics. `host:port` is the PLAINTEXT address this node advertises.
    pub async fn open(config: Config, host: String, port: i32) -> Result<Broker, String> {
        let endpoint = Endpoint {
            name: "PLAINTEXT".into(),
            host,
            port: u16::try_from(port).unwrap_or(0),
            security_protocol: 0,
        };
        Broker::open_with_clock(config, vec![endpoint], Clock::system(), None).await
    }

    /// As [`Broker::open`], with every deadline computed from `clock`; `serve_controller`
    /// starts the controller listener once the metadata node exists. `advertised`: each
    /// listener's endpoint (at least one), the first one's address being this node's.
    pub async fn open_with_clock(
        config: Config,
        advertised: Vec<Endpoint>,
        clock: Clock,
        serve_controller: Option<Box<dyn FnOnce(Arc<MetaNode>) + Send>>,
    ) -> Result<Broker, String> {
        let host = advertised
            .first()
            .map_or_else(|| "localhost".to_string(), |e| e.host.clone());
        let port = advertised.first().map_or(0, |e| i32::from(e.port));
        let oauth = oauth_validator(&config)?;
        // A memory-mode broker has lost everything when it starts: never a clean shutdown.
        let clean_shutdown = (!config.memory)
            .then(|| cluster::was_clean_shutdown(&config.data_dir))
            .flatten();
        let clean_start = clean_shutdown.is_some();
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
            observer_addr: (!config.is_controller())
                .then(|| cluster::observer_addr(&config, &host))
                .flatten(),
            dir: data_dir.as_ref().map(|d| d.join("meta").join("raft")),
            defaults: ControllerDefaults {
                num_partitions: config.num_partitions,
                default_replication_factor: config.default_replication_factor,
                election: crate::meta::election::Rules {
                    elr: config.eligible_leader_replicas_enable,
                    default_min_insync: usize::try_from(config.min_insync_replicas)
                        .unwrap_or(1)
                        .max(1),
                },
            },
            publisher: topics.clone(),
            heartbeat_interval_ms: MetaOptions::HEARTBEAT_MS,
            election_timeout_ms: MetaOptions::ELECTION_MS,
            serve: serve_controller,
            connector: crate::meta::connector::Connector::for_controller(&config)?,
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
        let broker_epoch = Arc::new(AtomicI64::new(0));
        let producer_ids = ProducerIdAllocator::new(
            meta.clone(),
            config.node_id,
            broker_epoch.clone(),
            (!config.memory).then(|| config.data_dir.clone()),
        )
        .map_err(|e| e.to_string())?;
        // A controller-only node is no broker: it never registers, so it is never placed on.
        if config.is_broker() {
            let previous = clean_shutdown.filter(|e| *e > 0);
            let epoch = register(
                &meta,
                &config,
                &cluster_id,
                incarnation,
                previous,
                &advertised,
            )
            .await?;
            broker_epoch.store(epoch, std::sync::atomic::Ordering::Relaxed);
            create_bootstrap_users(&meta, &config).await?;
        }
        if config.is_single_node() {
            // A cluster of one has every broker it will have: the internal topics are created
            // now (tens of milliseconds), so that its coordinators serve from the start.
            // Several nodes create them on the first FindCoordinator, as Kafka does, once
            // enough brokers are there for their replication factor.
            for name in [OFFSETS_TOPIC, TRANSACTION_TOPIC] {
                if meta.image().topic_by_name(name).is_none() {
                    match meta
                        .submit(ControllerRequest::CreateTopic(internal_topic(
                            &config, name,
                        )))
                        .await
                    {
                        Ok(_) | Err(ControllerError::Topic(TopicError::AlreadyExists(_))) => {}
                        Err(e) => return Err(format!("cannot create {name}: {e}")),
                    }
                }
            }
        }
        let groups = Arc::new(GroupCoordinators::new(group_config(&config), clock.clone()));
        let connector = crate::meta::connector::Connector::from_config(&config)
            .map_err(|e| format!("inter-broker connections: {e}"))?;
        let peers = Arc::new(Peers::new(meta.clone()).with_connector(connector.clone()));
        let txns = Arc::new(TxnCoordinators::new(
            clock.clone(),
            Arc::new(MarkerChannel::with_peers(peers.clone(), runtime.clone())),
        ));
        // The coordinators of what this broker leads now are loaded before it serves.
        let image = meta.image();
        let loads = reconcile(&image, &topics, &groups, &txns, config.node_id);
        run_loads(&groups, &txns, loads)
            .await
            .map_err(|e| format!("loading the coordinators: {e}"))?;
        let fetchers =
            ReplicaFetchers::new(config.node_id, topics.clone(), meta.clone(), connector);
        fetchers.reconcile();
        let (follower, stop) = tokio::sync::watch::channel(false);
        let quotas = Arc::new(crate::quota::QuotaManager::new(
            crate::quota::rate::Windows::new(
                config.quota_window_num,
                config.quota_window_size_seconds,
            ),
        ));
        quotas.update(&image.quotas);
        tokio::spawn(follow_leadership(
            Followers {
                meta: meta.clone(),
                topics: topics.clone(),
                groups: groups.clone(),
                txns: txns.clone(),
                fetchers: fetchers.clone(),
                quotas: quotas.clone(),
            },
            config.node_id,
            image.applied.map_or(0, |l| l.index),
            stop,
        ));
        Ok(Broker {
            groups,
            txns,
            txn_verifier: TxnVerifier::new(peers),
            fetch_sessions: crate::cluster::fetch_session::FetchSessionCache::new(
                config.max_incremental_fetch_session_cache_slots,
                config.max_incremental_fetch_session_partitions,
            ),
            clock,
            node: NodeInfo {
                node_id: config.node_id,
                host,
                port,
                endpoints: advertised,
                cluster_id,
                rack: config.broker_rack.clone(),
            },
            topics,
            meta,
            producer_ids,
            config,
            incarnation,
            broker_epoch,
            runtime,
            creating: Arc::default(),
            _follower: follower,
            fetchers,
            acl_cache: Mutex::new(None),
            oauth,
            quotas,
        })
    }

    /// Whether `topic`-`partition` is in the ongoing transaction of producer `p` of
    /// `transactional_id`, at its coordinator (this broker's, or another's over the network):
    /// see [`TxnVerifier::verify`].
    pub async fn verify_transaction(
        &self,
        transactional_id: &str,
        p: crate::txn::coordinator::ProducerIdent,
        topic: &str,
        partition: i32,
    ) -> Result<(), kafka_protocol::error::ResponseError> {
        self.txn_verifier
            .verify(&self.txns, transactional_id, p, topic, partition)
            .await
    }

    /// Asks the active controller to create internal topic `name` (`__consumer_offsets`,
    /// `__transaction_state`) with its configured partitions and replication factor, in the
    /// background: FindCoordinator answers COORDINATOR_NOT_AVAILABLE meanwhile, as Kafka's
    /// auto-creation of internal topics does. A creation already asked for is not repeated.
    pub fn create_internal_topic(&self, name: &'static str) {
        {
            let mut creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
            if !creating.insert(name) {
                return;
            }
        }
        let (meta, creating) = (self.meta.clone(), self.creating.clone());
        let topic = internal_topic(&self.config, name);
        self.runtime.spawn(async move {
            match meta.submit(ControllerRequest::CreateTopic(topic)).await {
                Ok(_) => tracing::info!(topic = name, "created internal topic"),
                Err(ControllerError::Topic(TopicError::AlreadyExists(_))) => {}
                Err(e) => {
                    tracing::info!(topic = name, error = %e, "cannot create internal topic yet")
                }
            }
            creating
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
        });
    }

    /// The last step of a graceful stop, once no request can append any more: syncs every
    /// log (data, indexes, checkpoints, producer snapshots), then writes the clean-shutdown
    /// marker that lets the next start skip recovery. Blocking: call it on the blocking pool.
    pub fn close(&self) -> std::io::Result<()> {
        self.topics.sync_all(true)?;
        self.topics.checkpoint_high_watermarks()?;
        if !self.config.memory {
            let epoch = self.broker_epoch.load(std::sync::atomic::Ordering::Relaxed);
            cluster::mark_clean_shutdown(&self.config.data_dir, epoch)?;
        }
        Ok(())
    }

    /// Heartbeats to the active controller every `broker_heartbeat_interval_ms` until `stop`,
    /// registering again when the controller no longer knows this broker's epoch.
    pub async fn heartbeat_loop(self: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
        use std::sync::atomic::Ordering;
        if !self.config.is_broker() {
            return;
        }
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
            // A beat in flight when the broker stops is dropped, not waited out.
            let answer = tokio::select! {
                a = tokio::time::timeout(every * 2, beat) => a,
                _ = stop.changed() => return,
            };
            match answer {
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
                        // The same process: its registration's incarnation tells the controller.
                        None,
                        &self.node.endpoints,
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

    /// As a partition's leader, asks the controller for the ISR it should have now
    /// ([`cluster::Partition::wanted_isr`]), in the background, one change at a time per
    /// partition (a refused or failed change is asked again by a later fetch or pass).
    pub fn maybe_alter_isr(&self, partition: &Arc<cluster::Partition>) {
        let now = self.clock.now_ms();
        let lag_max = i64::try_from(self.config.replica_lag_time_max_ms).unwrap_or(i64::MAX);
        let Some(isr) = partition.wanted_isr(now, lag_max) else {
            return;
        };
        if !partition.begin_isr_change(&isr) {
            return;
        }
        let l = partition.leadership();
        let request = ControllerRequest::AlterPartition {
            broker_id: self.config.node_id,
            broker_epoch: self.broker_epoch.load(std::sync::atomic::Ordering::Relaxed),
            topic_id: partition.topic_id(),
            index: partition.index(),
            leader_epoch: l.leader_epoch,
            partition_epoch: l.partition_epoch,
            isr: isr.clone(),
        };
        let (meta, partition) = (self.meta.clone(), partition.clone());
        self.runtime.spawn(async move {
            match meta.submit(request).await {
                Ok(_) => {
                    tracing::info!(topic_id = %partition.topic_id(), partition = partition.index(),
                    from = ?l.isr, to = ?isr, "ISR changed")
                }
                Err(e) => {
                    tracing::debug!(partition = partition.index(), error = %e, "ISR change refused")
                }
            }
            partition.end_isr_change();
        });
    }

    /// One pass over the partitions led here: each asks for the ISR it should have (a
    /// follower that lags leaves it). Run by the maintenance timers.
    pub fn check_isrs(&self) {
        for topic in self.topics.list() {
            for partition in topic.partitions() {
                let l = partition.leadership();
                if l.role == Role::Leader && l.replicas.len() > 1 {
                    self.maybe_alter_isr(&partition);
                }
            }
        }
    }

    /// Tells the controller this broker is going (it is fenced at once instead of after its
    /// session times out, and the partitions it leads get new leaders from their ISRs in the
    /// same metadata entry, which this waits to apply). Best effort: one attempt, bounded by a heartbeat interval, that
    /// waits neither for an election nor for a controller out of reach (see
    /// [`MetaNode::submit_once`]); skipped, or given up, once every other voter has had its
    /// own controlled shutdown (the whole quorum is going: the record may find no majority
    /// left to commit it, and the brokers register afresh when they come back).
    ///
    /// [`MetaNode::submit_once`]: crate::meta::node::MetaNode::submit_once
    pub async fn controlled_shutdown(&self) {
        if !self.config.is_broker() {
            return;
        }
        let me = self.config.node_id;
        let voters: Vec<i32> = self
            .meta
            .voters()
            .keys()
            .filter_map(|&v| i32::try_from(v).ok())
            .collect();
        let quorum_stopping = async {
            loop {
                let applied = self.meta.cell.applied_index();
                if self
                    .meta
                    .image()
                    .others_stopping(me, voters.iter().copied())
                {
                    return;
                }
                self.meta.cell.wait_applied(applied + 1).await;
            }
        };
        let epoch = self.broker_epoch.load(std::sync::atomic::Ordering::Relaxed);
        let request = ControllerRequest::Heartbeat {
            id: me,
            epoch,
            applied: self.meta.cell.applied_index(),
            want_shutdown: true,
        };
        let wait = std::time::Duration::from_millis(self.config.broker_heartbeat_interval_ms);
        // Biased: a quorum already stopping is not asked at all.
        let answer = tokio::select! {
            biased;
            _ = quorum_stopping => {
                tracing::info!("controlled shutdown skipped: every other voter is stopping too");
                return;
            }
            a = self.meta.submit_once(request, wait) => a,
        };
        match answer {
            Ok(_) => {
                // The same entry moved leadership away: once it is applied here, this
                // broker's partitions follow (waiting acks=all answers NOT_LEADER, clients go
                // to the new leaders) before the listener closes.
                let applied = async {
                    loop {
                        let index = self.meta.cell.applied_index();
                        if self.meta.image().brokers.get(&me).is_none_or(|b| b.fenced) {
                            return;
                        }
                        self.meta.cell.wait_applied(index + 1).await;
                    }
                };
                let _ = tokio::time::timeout(wait, applied).await;
                tracing::info!(
                    "controlled shutdown: fenced by the controller, leadership moved away"
                )
            }
            Err(ControllerError::NotController(_)) => {
                tracing::warn!("controlled shutdown: no controller in reach; not waiting for one")
            }
            Err(ControllerError::Timeout) => {
                tracing::warn!("controlled shutdown: the controller did not answer")
            }
            Err(e) => tracing::warn!(error = %e, "controlled shutdown refused"),
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
            .submit(ControllerRequest::CreateTopic(NewTopic::with_defaults(
                name, partitions, configs,
            )))
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
        let created = self.create_topic(NewTopic::with_defaults(name, None, Overrides::new()));
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

/// The CreateTopics of internal topic `name`: compacted, with its configured partitions and
/// replication factor (1 on a cluster of one).
fn internal_topic(config: &Config, name: &str) -> NewTopic {
    let (partitions, replication_factor) = if name == OFFSETS_TOPIC {
        (
            config.offsets_topic_num_partitions,
            config.offsets_topic_effective_replication_factor(),
        )
    } else {
        (
            config.transaction_state_log_num_partitions,
            config.transaction_state_log_effective_replication_factor(),
        )
    };
    NewTopic {
        name: name.to_string(),
        partitions: Some(partitions),
        replication_factor: Some(replication_factor),
        assignments: None,
        configs: [
            ("cleanup.policy", "compact"),
            ("segment.bytes", "104857600"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        validate_only: false,
    }
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

/// The listeners this broker registers: each listener's advertised endpoint, then
/// (`inter_broker_advertise`) the address the other brokers use, when it differs.
fn endpoints(config: &Config, advertised: &[Endpoint]) -> Vec<Endpoint> {
    let mut out = advertised.to_vec();
    if let Some((h, p)) = config
        .inter_broker_advertise
        .as_deref()
        .and_then(crate::config::split_host_port)
    {
        out.push(Endpoint {
            name: crate::meta::records::INTER_BROKER_ENDPOINT.into(),
            host: h.to_string(),
            port: p,
            security_protocol: 0,
        });
    }
    out
}

/// The OAUTHBEARER validator the configuration asks for: JWKS-signed tokens with
/// `sasl_oauthbearer_jwks_file`, else Kafka's unsecured ones (logged as such).
fn oauth_validator(
    config: &Config,
) -> Result<Option<Arc<crate::security::oauthbearer::Validator>>, String> {
    use crate::security::oauthbearer::{Jwks, Validator};
    if !config
        .sasl_enabled_mechanisms
        .iter()
        .any(|m| m == "OAUTHBEARER")
    {
        return Ok(None);
    }
    let validator = match &config.sasl_oauthbearer_jwks_file {
        Some(path) => {
            let json = std::fs::read(path)
                .map_err(|e| format!("cannot read the JWKS file {}: {e}", path.display()))?;
            let keys =
                Jwks::parse(&json).map_err(|e| format!("bad JWKS file {}: {e}", path.display()))?;
            match Validator::jwks(keys) {
                Validator::Jwks {
                    keys,
                    scope_claim,
                    required_scopes,
                    allowable_clock_skew_ms,
                    ..
                } => Validator::Jwks {
                    keys,
                    expected_audience: config.sasl_oauthbearer_expected_audience.clone(),
                    expected_issuer: config.sasl_oauthbearer_expected_issuer.clone(),
                    principal_claim: config.sasl_oauthbearer_sub_claim_name.clone(),
                    scope_claim,
                    required_scopes,
                    allowable_clock_skew_ms,
                },
                other => other,
            }
        }
        None => {
            tracing::warn!("SASL/OAUTHBEARER takes unsecured tokens (alg none): anyone can claim any principal; set sasl_oauthbearer_jwks_file outside development");
            match Validator::unsecured() {
                Validator::Unsecured {
                    scope_claim,
                    required_scopes,
                    allowable_clock_skew_ms,
                    ..
                } => Validator::Unsecured {
                    principal_claim: config.sasl_oauthbearer_sub_claim_name.clone(),
                    scope_claim,
                    required_scopes,
                    allowable_clock_skew_ms,
                },
                other => other,
            }
        }
    };
    Ok(Some(Arc::new(validator)))
}

/// Creates the `bootstrap_users` that have no credential yet: SCRAM-SHA-256 and SCRAM-SHA-512
/// credentials with a random salt and 4096 iterations (Kafka's default), derived on the
/// blocking pool, stored through the controller.
async fn create_bootstrap_users(meta: &MetaNode, config: &Config) -> Result<(), String> {
    use crate::meta::controller::ScramUpsert;
    use crate::security::scram::{Credential, Mechanism};
    let users = config.bootstrap_credentials()?;
    if users.is_empty() {
        return Ok(());
    }
    let image = meta.image();
    let wanted: Vec<(String, String)> = users
        .into_iter()
        .filter(|(name, _)| !image.scram.contains_key(name))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let upserts = crate::threads::spawn_blocking(move || {
        let mut out = Vec::new();
        for (name, password) in wanted {
            for m in [Mechanism::Sha256, Mechanism::Sha512] {
                let salt = Credential::random_salt().map_err(|e| e.to_string())?;
                let c = Credential::from_password(m, &password, &salt, Mechanism::MIN_ITERATIONS)
                    .map_err(|e| e.to_string())?;
                out.push(ScramUpsert {
                    user: name.clone(),
                    mechanism: m.name().to_string(),
                    salt: c.salt,
                    stored_key: c.stored_key,
                    server_key: c.server_key,
                    iterations: c.iterations,
                });
            }
        }
        Ok::<_, String>(out)
    })
    .await
    .map_err(|e| e.to_string())??;
    let answer = meta
        .submit(ControllerRequest::AlterScramCredentials {
            upserts: upserts.clone(),
            deletions: Vec::new(),
            only_if_absent: true,
        })
        .await
        .map_err(|e| format!("cannot create the bootstrap users: {e}"))?;
    let skipped = match answer {
        ControllerResponse::Credentials { skipped, .. } => skipped,
        other => {
            return Err(format!(
                "unexpected answer creating bootstrap users: {other:?}"
            ))
        }
    };
    for u in upserts.iter().filter(|u| !skipped.contains(&u.user)) {
        tracing::info!(user = %u.user, mechanism = %u.mechanism, "applied SCRAM credential");
    }
    for user in skipped {
        tracing::info!(%user, "bootstrap user already has credentials: left as it is");
    }
    Ok(())
}

/// Registers this broker with the active controller and waits until it is unfenced (its
/// image has caught up with the registration). Returns its epoch.
async fn register(
    meta: &MetaNode,
    config: &Config,
    cluster_id: &str,
    incarnation: Uuid,
    previous_epoch: Option<i64>,
    advertised: &[Endpoint],
) -> Result<i64, String> {
    let registered = meta
        .submit(ControllerRequest::RegisterBroker {
            id: config.node_id,
            cluster_id: cluster_id.to_string(),
            incarnation,
            previous_epoch,
            endpoints: endpoints(config, advertised),
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

fn group_config(config: &Config) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
        min_session_timeout_ms: config.group_min_session_timeout_ms,
        max_session_timeout_ms: config.group_max_session_timeout_ms,
        offsets_retention_ms: config.offsets_retention_minutes.saturating_mul(60_000),
    }
}

/// The partitions of internal topic `name` that this broker leads: those the image gives it
/// whose local replica leads (the registry applied the change before the image was
/// published), with their leader epochs and logs; and the topic's partition count.
fn led_here(
    image: &MetadataImage,
    topics: &TopicRegistry,
    name: &str,
    node_id: i32,
) -> (i32, Vec<Wanted>) {
    let Some(t) = image.topic_by_name(name) else {
        return (0, Vec::new());
    };
    let local = topics.get_by_id(&t.id);
    let wanted = t
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.leader == node_id)
        .filter_map(|(i, _)| {
            let part = local.as_ref()?.partition(i as i32)?;
            let l = part.leadership();
            (l.role == Role::Leader).then(|| Wanted {
                partition: i as i32,
                epoch: l.leader_epoch,
                log: part.log().clone(),
            })
        })
        .collect();
    (t.partitions.len() as i32, wanted)
}

/// The loads of one reconciliation: group coordinators, then transaction coordinators.
pub struct Loads {
    groups: Vec<Load>,
    txns: Vec<Load>,
}

/// Brings the coordinators in line with what this broker leads in `image`: coordinators
/// that stop here are resigned at once; the loads to run are returned ([`run_loads`]).
pub fn reconcile(
    image: &MetadataImage,
    topics: &TopicRegistry,
    groups: &GroupCoordinators,
    txns: &TxnCoordinators,
    node_id: i32,
) -> Loads {
    let (count, wanted) = led_here(image, topics, OFFSETS_TOPIC, node_id);
    let group_loads = groups.reconcile(count, &wanted);
    let (count, wanted) = led_here(image, topics, TRANSACTION_TOPIC, node_id);
    let txn_loads = txns.reconcile(count, &wanted);
    if !group_loads.is_empty() || !txn_loads.is_empty() {
        tracing::debug!(
            groups = group_loads.len(),
            transactions = txn_loads.len(),
            "loading coordinators"
        );
    }
    Loads {
        groups: group_loads,
        txns: txn_loads,
    }
}

/// Runs the loads of a reconciliation on the blocking pool (replays of the partitions' logs),
/// one after the other, and waits for them.
pub async fn run_loads(
    groups: &Arc<GroupCoordinators>,
    txns: &Arc<TxnCoordinators>,
    loads: Loads,
) -> Result<(), tokio::task::JoinError> {
    if loads.groups.is_empty() && loads.txns.is_empty() {
        return Ok(());
    }
    let (groups, txns) = (groups.clone(), txns.clone());
    crate::threads::spawn_blocking(move || {
        for l in &loads.groups {
            groups.load(l);
        }
        for l in &loads.txns {
            txns.load(l);
        }
    })
    .await
}

/// Follows every metadata change after index `seen`: coordinators of partitions that stop
/// being led here are resigned, those of partitions newly led here (or at a new leader epoch)
/// loaded, in the background (a later change does not wait for a long load; a load that a
/// later change made stale is discarded). Ends when `stop` changes or its sender is dropped.
/// What follows leadership changes: the coordinators and the follower fetchers.
struct Followers {
    meta: Arc<MetaNode>,
    topics: Arc<TopicRegistry>,
    groups: Arc<GroupCoordinators>,
    txns: Arc<TxnCoordinators>,
    fetchers: Arc<ReplicaFetchers>,
    quotas: Arc<crate::quota::QuotaManager>,
}

async fn follow_leadership(
    followers: Followers,
    node_id: i32,
    mut seen: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Followers {
        meta,
        topics,
        groups,
        txns,
        fetchers,
        quotas,
    } = followers;
    loop {
        tokio::select! {
            _ = meta.cell.wait_applied(seen + 1) => {}
            _ = stop.changed() => return,
        }
        let image = meta.image();
        seen = image.applied.map_or(seen + 1, |l| l.index).max(seen + 1);
        quotas.update(&image.quotas);
        fetchers.reconcile();
        // On the blocking pool (resigning takes the coordinators' shard locks, which their
        // writes hold while they append), one change after the other, in log order.
        let (r, g, t) = (topics.clone(), groups.clone(), txns.clone());
        let loads =
            match crate::threads::spawn_blocking(move || reconcile(&image, &r, &g, &t, node_id))
                .await
            {
                Ok(loads) => loads,
                Err(e) => {
                    tracing::error!(error = %e, "reconciling the coordinators failed");
                    continue;
                }
            };
        let (g, t) = (groups.clone(), txns.clone());
        tokio::spawn(async move {
            if let Err(e) = run_loads(&g, &t, loads).await {
                tracing::error!(error = %e, "loading coordinators failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::partitions::partition_for;
    use crate::meta::image::Delta;
    use crate::meta::state_machine::Publisher;
    use crate::txn::coordinator::TxnState;
    use crate::txn::markers::{Marker, RemoteMarkers};
    use crate::txn::producer_ids::{BlockFuture, BlockSource};
    use kafka_protocol::error::ResponseError;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn apply(
        image: &MetadataImage,
        index: u64,
        records: Vec<MetaRecord>,
    ) -> (Arc<MetadataImage>, Delta) {
        image.with_entry(index, &records)
    }

    /// A topic whose partition `i` has replicas `replicas[i]`, the first one leading.
    fn topic(name: &str, id: Uuid, replicas: &[&[i32]]) -> Vec<MetaRecord> {
        let mut r = vec![MetaRecord::Topic {
            name: name.into(),
            id,
        }];
        r.extend(
            replicas
                .iter()
                .enumerate()
                .map(|(i, rs)| MetaRecord::Partition {
                    topic_id: id,
                    index: i as i32,
                    replicas: rs.to_vec(),
                    // The leader alone in sync: no follower fetches in these tests, and a
                    // coordinator's write waits for its ISR.
                    isr: vec![rs[0]],
                    leader: rs[0],
                    leader_epoch: 0,
                    partition_epoch: 0,
                }),
        );
        r
    }

    fn move_leader(id: Uuid, index: i32, leader: i32) -> MetaRecord {
        MetaRecord::PartitionChange {
            topic_id: id,
            index,
            isr: Some(vec![leader]),
            leader: Some(leader),
            replicas: None,
            elr: None,
        }
    }

    /// A marker and the partitions it was sent for.
    type Sent = (Marker, Vec<(String, i32)>);

    /// Markers for other brokers, recorded; failing while `fail` is set.
    #[derive(Default)]
    struct Recorder {
        sent: Mutex<Vec<Sent>>,
        fail: AtomicBool,
    }

    impl RemoteMarkers for Recorder {
        fn write(&self, marker: &Marker, partitions: &[(String, i32)]) -> std::io::Result<()> {
            if self.fail.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("broker 2 is away"));
            }
            self.sent
                .lock()
                .unwrap()
                .push((*marker, partitions.to_vec()));
            Ok(())
        }
    }

    struct Counter(Mutex<i64>);

    impl BlockSource for Counter {
        fn next_block(&self, at_least: i64) -> BlockFuture<'_> {
            let mut next = self.0.lock().unwrap();
            let first = (*next).max(at_least);
            *next = first + 1000;
            Box::pin(async move { Ok((first, 1000)) })
        }
    }

    /// A key of `partitions` partitions that lands on partition `p`.
    fn key_on(prefix: &str, p: i32, partitions: i32) -> String {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|k| partition_for(k, partitions) == Some(p))
            .unwrap()
    }

    /// Broker 1 of a hand-made two-broker image: it loads the coordinators of the internal
    /// partitions it leads, answers NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS for the
    /// others, resigns and loads as leaders move, and sends the markers of partitions broker 2
    /// leads to the remote channel (the transaction staying prepared while that fails).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn coordinators_follow_leadership_and_markers_go_to_the_leaders() {
        let config = Config {
            memory: true,
            node_id: 1,
            ..Config::default()
        };
        let registry = Arc::new(TopicRegistry::open(&config, false).unwrap());
        let (offsets, txn_state, data) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut records = topic(OFFSETS_TOPIC, offsets, &[&[1, 2], &[2, 1], &[1], &[2]]);
        records.extend(topic(TRANSACTION_TOPIC, txn_state, &[&[1, 2], &[2]]));
        records.extend(topic("d", data, &[&[1], &[2]]));
        let (image, _) = apply(&MetadataImage::default(), 1, records);
        registry.materialize(&image);

        let groups = Arc::new(GroupCoordinators::new(
            group_config(&config),
            Clock::system(),
        ));
        let remote = Arc::new(Recorder::default());
        let txns = Arc::new(TxnCoordinators::new(Clock::system(), remote.clone()));
        let loads = reconcile(&image, &registry, &groups, &txns, 1);
        assert_eq!((loads.groups.len(), loads.txns.len()), (2, 1));
        let (g0, g1) = (key_on("g", 0, 4), key_on("g", 1, 4));
        let err = |r: Result<Arc<crate::groups::GroupCoordinator>, ResponseError>| r.err();
        assert_eq!(
            err(groups.for_group(&g0)),
            Some(ResponseError::CoordinatorLoadInProgress)
        );
        assert_eq!(
            err(groups.for_group(&g1)),
            Some(ResponseError::NotCoordinator)
        );
        run_loads(&groups, &txns, loads).await.unwrap();
        assert_eq!(err(groups.for_group(&g0)), None);
        assert_eq!(
            err(groups.for_group(&g1)),
            Some(ResponseError::NotCoordinator)
        );
        let active: Vec<i32> = groups.active().iter().map(|(p, _)| *p).collect();
        assert_eq!(active, vec![0, 2]);
        let (t0, t1) = (key_on("t", 0, 2), key_on("t", 1, 2));
        assert!(txns.for_txn(&t0).is_ok());
        assert_eq!(txns.for_txn(&t1).err(), Some(ResponseError::NotCoordinator));

        // A transaction on partitions led here and by broker 2.
        let ids = ProducerIdAllocator::with_source(Box::new(Counter(Mutex::new(0))), None).unwrap();
        let (r, g, t, id) = (registry.clone(), groups.clone(), txns.clone(), t0.clone());
        let ident = crate::threads::spawn_blocking(move || {
            let p = t.init_producer_id(&r, &g, &ids, &id, 60_000, None).unwrap();
            let spans = [
                ("d".to_string(), 0),
                ("d".to_string(), 1),
                (OFFSETS_TOPIC.to_string(), 1),
            ];
            t.add_partitions(&id, p, &spans, None).unwrap();
            p
        })
        .await
        .unwrap();
        assert_eq!(ident.producer_id, 0);
        remote.fail.store(true, Ordering::Relaxed);
        let end = |commit: bool| {
            let (r, g, t, id) = (registry.clone(), groups.clone(), txns.clone(), t0.clone());
            crate::threads::spawn_blocking(move || t.end_txn(&r, &g, &id, ident, commit))
        };
        assert_eq!(end(true).await.unwrap(), Ok(()), "decided once prepared");
        let state = |t: &TxnCoordinators| t.describe(&t0).unwrap().state;
        assert_eq!(
            state(&txns),
            TxnState::PrepareCommit,
            "broker 2's markers owed"
        );
        let local = registry
            .get("d")
            .unwrap()
            .partition(0)
            .unwrap()
            .log()
            .clone();
        assert_eq!(local.log_end_offset(), 1, "the local marker is written");
        assert_eq!(
            end(true).await.unwrap(),
            Err(ResponseError::ConcurrentTransactions)
        );
        // Broker 2 is back: the timer finishes the transaction.
        remote.fail.store(false, Ordering::Relaxed);
        let (r, g, t) = (registry.clone(), groups.clone(), txns.clone());
        crate::threads::spawn_blocking(move || t.tick(&r, &g, i64::MAX))
            .await
            .unwrap();
        assert_eq!(state(&txns), TxnState::CompleteCommit);
        let sent = remote.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        let (marker, parts) = &sent[0];
        assert_eq!(
            *marker,
            Marker {
                producer_id: ident.producer_id,
                producer_epoch: ident.producer_epoch,
                commit: true,
                coordinator_epoch: 0,
            }
        );
        assert_eq!(
            parts,
            &vec![(OFFSETS_TOPIC.to_string(), 1), ("d".to_string(), 1)]
        );

        // Leadership moves: __consumer_offsets 0 to broker 2, 1 to this broker (epoch 1);
        // __transaction_state 0 to broker 2.
        let (moved, delta) = apply(
            &image,
            2,
            vec![
                move_leader(offsets, 0, 2),
                move_leader(offsets, 1, 1),
                move_leader(txn_state, 0, 2),
            ],
        );
        registry.publish(&moved, &delta);
        let loads = reconcile(&moved, &registry, &groups, &txns, 1);
        assert_eq!((loads.groups.len(), loads.txns.len()), (1, 0));
        assert_eq!(
            err(groups.for_group(&g0)),
            Some(ResponseError::NotCoordinator)
        );
        assert_eq!(txns.for_txn(&t0).err(), Some(ResponseError::NotCoordinator));
        assert!(txns.describe(&t0).is_none());
        run_loads(&groups, &txns, loads).await.unwrap();
        assert_eq!(err(groups.for_group(&g1)), None);
        let active: Vec<i32> = groups.active().iter().map(|(p, _)| *p).collect();
        assert_eq!(active, vec![1, 2]);
    }
}
