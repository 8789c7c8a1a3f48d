//! The active controller: turns requests (create or delete topics, add partitions, change
//! configs, register brokers, hand out producer-id blocks) into metadata records, proposes
//! them to the quorum and answers once they are committed and applied here. It runs on
//! whichever node leads the raft quorum; one request at a time (as Kafka's single-threaded
//! controller), each validated against the image every earlier request has already changed.
//! Requests arriving at another node are forwarded here ([`ControllerRequest`] is their wire
//! form).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::image::MetadataImage;
use super::network::{wall_clock_ms, Contacts};
use super::records::{ConfigResource, Endpoint, MetaRecord, Overrides};
use super::state_machine::ImageCell;
use super::{MetaBatch, Raft};
use crate::cluster::placement::{self, BrokerSlot, PlacementError};
use crate::cluster::topic_config;
use crate::cluster::topics::{validate_name, TopicError, PARTITIONS_MAX};
use crate::security::acl::{validate_binding, AclBinding, AclBindingFilter};

/// Producer ids per block (Kafka's `ProducerIdManager` block size).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    /// None: `num_partitions`.
    pub partitions: Option<i32>,
    /// None: `default_replication_factor`.
    pub replication_factor: Option<i16>,
    /// Manual assignment: the replicas of each partition, in partition order.
    pub assignments: Option<Vec<Vec<i32>>>,
    pub configs: Overrides,
    pub validate_only: bool,
}

impl NewTopic {
    /// A topic with the broker defaults for partitions and replication factor.
    pub fn with_defaults(name: &str, partitions: Option<i32>, configs: Overrides) -> NewTopic {
        NewTopic {
            name: name.to_string(),
            partitions,
            replication_factor: None,
            assignments: None,
            configs,
            validate_only: false,
        }
    }
}

/// What a created (or validated) topic looks like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSummary {
    /// Nil when only validated.
    pub id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: Overrides,
}

/// A request to the controller (also the body of a forwarded one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControllerRequest {
    CreateTopic(NewTopic),
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    },
    /// Replaces the topic's whole override set.
    AlterTopicConfigs {
        name: String,
        configs: Overrides,
        validate_only: bool,
    },
    RegisterBroker {
        id: i32,
        /// The cluster the broker believes it joins.
        cluster_id: String,
        incarnation: Uuid,
        /// The epoch this broker's clean shutdown recorded (Kafka's `PreviousBrokerEpoch`):
        /// None after a crash, or when the process lost its data (memory mode).
        #[serde(default)]
        previous_epoch: Option<i64>,
        endpoints: Vec<Endpoint>,
        rack: Option<String>,
    },
    /// A broker's heartbeat: `applied` is how far its image has caught up.
    Heartbeat {
        id: i32,
        epoch: i64,
        applied: u64,
        want_shutdown: bool,
    },
    AllocateProducerIds {
        broker_id: i32,
        broker_epoch: i64,
        /// The block starts at or above this id (a node upgraded from a version that kept
        /// its block in `meta/producer_id_block` sends that file's value; 0 otherwise).
        #[serde(default)]
        at_least: i64,
    },
    /// The quorum as the active controller sees it (DescribeQuorum).
    DescribeQuorum,
    /// A broker-only node asks to follow the metadata log as an observer (an openraft
    /// learner: the active controller replicates the log to `addr`, its controller listener;
    /// it never votes).
    JoinAsObserver {
        id: i32,
        addr: String,
    },
    /// Elections by request (ElectLeaders): of `partitions` (topic name, index), or of every
    /// partition when None.
    ElectLeaders {
        kind: super::election::ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    },
    /// Reassignments (AlterPartitionReassignments): per partition (topic, index) its target
    /// replicas, or None to cancel the one in progress.
    AlterReassignments {
        items: Vec<(String, i32, Option<Vec<i32>>)>,
        /// The targets may change a partition's replication factor (v1's flag; v0: yes).
        allow_rf_change: bool,
    },
    /// A follower's fetches to `broker`, which leads partitions it follows, are refused at
    /// connect (its listener is closed: the process is most likely gone). The controller
    /// checks for itself and, when its own connection is refused too, fences the broker at
    /// once instead of after its session times out, so its partitions fail over in well
    /// under a session (not in Kafka, whose failover waits for the session; a pause or a
    /// network cut does not refuse connections and still waits for it).
    ReportUnreachable {
        reporter: i32,
        broker: i32,
        epoch: i64,
    },
    /// SCRAM credentials to set and delete (AlterUserScramCredentials, validated by the
    /// broker first). A user with a deletion of a credential it does not have gets an error
    /// and none of its changes. `only_if_absent` (bootstrap users): a user that already has
    /// any credential is left alone.
    AlterScramCredentials {
        upserts: Vec<ScramUpsert>,
        /// (user, mechanism)
        deletions: Vec<(String, String)>,
        #[serde(default)]
        only_if_absent: bool,
    },
    /// Client quotas to set and remove (AlterClientQuotas), validated here as Kafka's
    /// controller does; `validate_only` writes nothing.
    AlterClientQuotas {
        alterations: Vec<super::client_quotas::QuotaAlteration>,
        validate_only: bool,
    },
    /// ACLs to create (CreateAcls): each validated as Kafka does; one already there is no
    /// change.
    CreateAcls {
        bindings: Vec<AclBinding>,
    },
    /// ACLs to delete (DeleteAcls): every stored ACL each filter matches.
    DeleteAcls {
        filters: Vec<AclBindingFilter>,
    },
    /// A partition leader asks to change its ISR (Kafka's AlterPartition): a follower caught
    /// up joins, one that lags leaves. Valid only from the current leader at the current
    /// leader and partition epochs.
    AlterPartition {
        broker_id: i32,
        broker_epoch: i64,
        topic_id: Uuid,
        index: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
}

/// A SCRAM credential to store (see [`ControllerRequest::AlterScramCredentials`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramUpsert {
    pub user: String,
    pub mechanism: String,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

/// One voter or observer of the metadata log, as DescribeQuorum reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaProgress {
    pub id: i32,
    /// The next offset after its last log entry (-1: unknown).
    pub log_end_offset: i64,
    /// When it last fetched / was last caught up, ms since the epoch (-1: unknown).
    pub last_fetch_ms: i64,
    pub last_caught_up_ms: i64,
}

/// The metadata quorum's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumState {
    pub leader: i32,
    pub epoch: i64,
    pub high_watermark: i64,
    pub voters: Vec<ReplicaProgress>,
    pub observers: Vec<ReplicaProgress>,
}

/// The controller's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ControllerResponse {
    Topic(TopicSummary),
    Done,
    Registered {
        epoch: i64,
    },
    Heartbeat {
        fenced: bool,
        shutdown_ok: bool,
    },
    ProducerIds {
        first: i64,
        size: i64,
    },
    Quorum(QuorumState),
    /// Per partition of an ElectLeaders request: (topic, index, why it was not elected).
    /// (Struct variants: the answer is internally tagged, which a bare list cannot be.)
    Elections {
        results: Vec<(String, i32, Option<super::election::ElectionError>)>,
    },
    /// Per partition of an AlterReassignments request: (topic, index, why it was refused).
    Reassignments {
        results: Vec<(String, i32, Option<super::reassign::ReassignError>)>,
    },
    /// Per user of an AlterScramCredentials request: the deletion that named a missing
    /// credential (Kafka's RESOURCE_NOT_FOUND), if any; `skipped`: left alone because it
    /// already had a credential (`only_if_absent`).
    Credentials {
        results: Vec<(String, Option<String>)>,
        #[serde(default)]
        skipped: Vec<String>,
    },
    /// Per distinct entity of an AlterClientQuotas request (first appearance order): its
    /// error (code, message), if any.
    QuotasAltered {
        results: Vec<(
            super::records::QuotaEntity,
            Option<super::client_quotas::QuotaError>,
        )>,
    },
    /// Per binding of a CreateAcls request: why it was refused (INVALID_REQUEST), if it was.
    AclsCreated {
        results: Vec<Option<String>>,
    },
    /// Per filter of a DeleteAcls request: the ACLs it deleted (each once: an ACL two
    /// filters match is listed under the first).
    AclsDeleted {
        matched: Vec<Vec<AclBinding>>,
    },
}

/// Why the controller refused or could not complete a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ControllerError {
    #[error("{0}")]
    Topic(TopicError),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidRequest(String),
    /// This node is not the active controller (the leader's id when known).
    #[error("this node is not the active controller")]
    NotController(Option<i32>),
    #[error("stale broker epoch")]
    StaleBrokerEpoch,
    #[error("the broker is not registered")]
    BrokerNotRegistered,
    #[error("the broker belongs to another cluster")]
    InconsistentClusterId,
    #[error("the controller did not answer in time")]
    Timeout,
    #[error("{0}")]
    Internal(String),
}

impl From<TopicError> for ControllerError {
    fn from(e: TopicError) -> Self {
        ControllerError::Topic(e)
    }
}

pub type ControllerResult = Result<ControllerResponse, ControllerError>;

/// Broker defaults the controller applies (from this node's configuration).
#[derive(Debug, Clone)]
pub struct ControllerDefaults {
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    /// What elections follow (ELR, the default `min.insync.replicas`).
    pub election: super::election::Rules,
}

/// The active controller's state on this node (idle unless it leads the quorum).
pub struct Controller {
    raft: Raft,
    cell: Arc<ImageCell>,
    defaults: ControllerDefaults,
    /// One request at a time, each seeing what the previous one committed.
    lock: tokio::sync::Mutex<()>,
    /// When each broker last heartbeated (volatile: a new controller starts every session
    /// afresh).
    sessions: std::sync::Mutex<HashMap<i32, Instant>>,
    /// The followers' last AppendEntries answers (DescribeQuorum's timestamps).
    contacts: Arc<Contacts>,
}

/// The records a request turns into, or its answer without records.
/// The records of an AlterScramCredentials request, per user all or nothing.
fn scram_changes(
    image: &MetadataImage,
    upserts: Vec<ScramUpsert>,
    deletions: Vec<(String, String)>,
    only_if_absent: bool,
) -> Decision {
    let mut users: Vec<String> = upserts
        .iter()
        .map(|u| u.user.clone())
        .chain(deletions.iter().map(|(u, _)| u.clone()))
        .collect();
    users.sort();
    users.dedup();
    let mut records = Vec::new();
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for user in users {
        let stored = image.scram.get(&user);
        if only_if_absent && stored.is_some_and(|m| !m.is_empty()) {
            skipped.push(user);
            continue;
        }
        let missing = deletions
            .iter()
            .filter(|(u, _)| *u == user)
            .find(|(_, m)| !stored.is_some_and(|s| s.contains_key(m)));
        if let Some((_, m)) = missing {
            results.push((
                user.clone(),
                Some(format!(
                    "Attempt to delete a user credential that does not exist: {user} {m}"
                )),
            ));
            continue;
        }
        records.extend(deletions.iter().filter(|(u, _)| *u == user).map(|(u, m)| {
            MetaRecord::RemoveScramCredential {
                user: u.clone(),
                mechanism: m.clone(),
            }
        }));
        records.extend(upserts.iter().filter(|u| u.user == user).map(|u| {
            MetaRecord::ScramCredential {
                user: u.user.clone(),
                mechanism: u.mechanism.clone(),
                salt: u.salt.clone(),
                stored_key: u.stored_key.clone(),
                server_key: u.server_key.clone(),
                iterations: u.iterations,
            }
        }));
        results.push((user, None));
    }
    let answer = ControllerResponse::Credentials { results, skipped };
    if records.is_empty() {
        Decision::Answer(answer)
    } else {
        Decision::Records(records, answer)
    }
}

enum Decision {
    Records(Vec<MetaRecord>, ControllerResponse),
    Answer(ControllerResponse),
}

impl Controller {
    pub fn new(
        raft: Raft,
        cell: Arc<ImageCell>,
        defaults: ControllerDefaults,
        contacts: Arc<Contacts>,
    ) -> Controller {
        Controller {
            raft,
            cell,
            defaults,
            contacts,
            lock: tokio::sync::Mutex::new(()),
            sessions: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// What this controller's elections follow.
    pub fn rules(&self) -> &super::election::Rules {
        &self.defaults.election
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Instant>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every broker's session starts now (this node just became the controller).
    pub fn reset_sessions(&self) {
        let now = Instant::now();
        let mut sessions = self.sessions();
        for t in sessions.values_mut() {
            *t = now;
        }
    }

    /// Unfenced brokers (id, epoch) whose last heartbeat is older than `timeout`; brokers
    /// never heard from start their session now.
    pub fn expired_sessions(&self, image: &MetadataImage, timeout: Duration) -> Vec<(i32, i64)> {
        let now = Instant::now();
        let mut sessions = self.sessions();
        image
            .live_brokers()
            .filter(|b| now.duration_since(*sessions.entry(b.id).or_insert(now)) > timeout)
            .map(|b| (b.id, b.epoch))
            .collect()
    }

    /// Validates `request` against the image, proposes its records and waits until they are
    /// applied here. Returns the answer and the log index the caller's image must reach to
    /// see the change (0 when nothing was written).
    pub async fn execute(&self, request: ControllerRequest) -> (ControllerResult, u64) {
        match &request {
            ControllerRequest::Heartbeat { id, .. }
            | ControllerRequest::RegisterBroker { id, .. } => {
                self.sessions().insert(*id, Instant::now());
            }
            _ => {}
        }
        if let ControllerRequest::JoinAsObserver { id, addr } = &request {
            return self.add_observer(*id, addr).await;
        }
        if let ControllerRequest::ReportUnreachable {
            reporter,
            broker,
            epoch,
        } = &request
        {
            return self.check_unreachable(*reporter, *broker, *epoch).await;
        }
        let _one_at_a_time = self.lock.lock().await;
        let image = self.cell.current();
        let decision = match self.decide(&image, request) {
            Ok(d) => d,
            Err(e) => return (Err(e), 0),
        };
        match decision {
            Decision::Answer(a) => (Ok(a), 0),
            Decision::Records(records, answer) => match self.propose(records).await {
                Ok(index) => {
                    let answer = match answer {
                        // A broker's epoch is the index of its registration record.
                        ControllerResponse::Registered { .. } => ControllerResponse::Registered {
                            epoch: index as i64,
                        },
                        a => a,
                    };
                    (Ok(answer), index)
                }
                Err(e) => (Err(e), 0),
            },
        }
    }

    /// [`ControllerRequest::ReportUnreachable`]: when `broker` is alive at `epoch` in the
    /// image and a connection to its client listener is refused here too, fences it with the
    /// elections that follow ([`super::election::on_fence`]). Anything else (it answers, the
    /// connection times out, it is fenced already) changes nothing.
    async fn check_unreachable(
        &self,
        reporter: i32,
        broker: i32,
        epoch: i64,
    ) -> (ControllerResult, u64) {
        let addr = {
            let image = self.cell.current();
            match image.brokers.get(&broker) {
                Some(b) if b.epoch == epoch && !b.fenced => b.inter_broker_addr(),
                _ => None,
            }
        };
        let Some(addr) = addr else {
            return (Ok(ControllerResponse::Done), 0);
        };
        let probe = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(&addr),
        )
        .await;
        match probe {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            _ => return (Ok(ControllerResponse::Done), 0),
        }
        let _one_at_a_time = self.lock.lock().await;
        let image = self.cell.current();
        if !image
            .brokers
            .get(&broker)
            .is_some_and(|b| b.epoch == epoch && !b.fenced)
        {
            return (Ok(ControllerResponse::Done), 0);
        }
        let mut records = vec![MetaRecord::FenceBroker { id: broker, epoch }];
        records.extend(super::election::on_fence(
            &image,
            &self.defaults.election,
            &[broker],
            false,
        ));
        match self.propose(records).await {
            Ok(index) => {
                tracing::warn!(broker, reporter, addr = %addr,
                    "fenced a broker whose listener refuses connections (reported by a follower, checked here)");
                (Ok(ControllerResponse::Done), index)
            }
            Err(e) => (Err(e), 0),
        }
    }

    /// Makes broker-only node `id` an observer of the metadata log (an openraft learner at
    /// `addr`): added when new, its address updated when it moved (safe for a learner: it
    /// has no vote), nothing to do when it is there already. A voter's id is refused. The
    /// index is that of the membership entry, committed and applied.
    async fn add_observer(&self, id: i32, addr: &str) -> (ControllerResult, u64) {
        let Ok(node_id) = u64::try_from(id) else {
            return (
                Err(ControllerError::InvalidRequest(format!("bad node id {id}"))),
                0,
            );
        };
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(metrics.id) {
            let leader = metrics.current_leader.and_then(|l| i32::try_from(l).ok());
            return (Err(ControllerError::NotController(leader)), 0);
        }
        let membership = metrics.membership_config.membership().clone();
        if membership.voter_ids().any(|v| v == node_id) {
            return (
                Err(ControllerError::InvalidRequest(format!(
                    "node {id} is a voter of the metadata quorum: a broker-only node needs an id of its own"
                ))),
                0,
            );
        }
        let node = openraft::BasicNode {
            addr: addr.to_string(),
        };
        let changed = match membership.get_node(&node_id) {
            Some(known) if known.addr == addr => {
                let index = metrics.membership_config.log_id().map_or(0, |l| l.index);
                return (Ok(ControllerResponse::Done), index);
            }
            Some(_) => {
                let nodes = [(node_id, node)].into_iter().collect();
                self.raft
                    .change_membership(openraft::ChangeMembers::SetNodes(nodes), true)
                    .await
            }
            None => self.raft.add_learner(node_id, node, false).await,
        };
        match changed {
            Ok(r) => {
                let index = r.log_id.index;
                self.cell.wait_applied(index).await;
                tracing::info!(
                    node = id,
                    addr,
                    "a broker-only node observes the metadata log"
                );
                (Ok(ControllerResponse::Done), index)
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => (
                Err(ControllerError::NotController(
                    f.leader_id.and_then(|id| i32::try_from(id).ok()),
                )),
                0,
            ),
            Err(e) => (
                Err(ControllerError::Internal(format!(
                    "the metadata quorum refused the observer: {e}"
                ))),
                0,
            ),
        }
    }

    /// Proposes one entry; its index once committed and applied.
    pub async fn propose(&self, records: Vec<MetaRecord>) -> Result<u64, ControllerError> {
        match self.raft.client_write(MetaBatch { records }).await {
            Ok(r) => {
                let index = r.log_id.index;
                self.cell.wait_applied(index).await;
                Ok(index)
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(
                ControllerError::NotController(f.leader_id.and_then(|id| i32::try_from(id).ok())),
            ),
            Err(e) => Err(ControllerError::Internal(format!(
                "the metadata quorum refused the change: {e}"
            ))),
        }
    }

    /// The quorum from this node's raft metrics (meaningful on the leader, which tracks every
    /// follower's progress). Log offsets are raft indexes + 1 (the next offset, as Kafka's log
    /// end offsets).
    pub fn quorum_state(&self) -> QuorumState {
        let m = self.raft.metrics().borrow().clone();
        let now_ms = wall_clock_ms();
        let next = |index: Option<u64>| index.map_or(0, |i| i as i64 + 1);
        let replication = m.replication.clone().unwrap_or_default();
        let progress = |id: u64| {
            if Some(id) == m.current_leader && id == m.id {
                ReplicaProgress {
                    id: id as i32,
                    log_end_offset: next(m.last_log_index),
                    last_fetch_ms: now_ms,
                    last_caught_up_ms: now_ms,
                }
            } else {
                let matched = replication.get(&id).cloned().flatten();
                let contact = self.contacts.get(id, m.current_term);
                ReplicaProgress {
                    id: id as i32,
                    log_end_offset: matched.map_or(-1, |l| l.index as i64 + 1),
                    last_fetch_ms: contact.map_or(-1, |c| c.last_fetch_ms),
                    last_caught_up_ms: contact.map_or(-1, |c| c.last_caught_up_ms),
                }
            }
        };
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        QuorumState {
            leader: m.current_leader.map_or(-1, |l| l as i32),
            epoch: m.current_term as i64,
            high_watermark: next(m.last_applied.map(|l| l.index)),
            voters: voters.iter().map(|id| progress(*id)).collect(),
            observers: membership
                .learner_ids()
                .filter(|id| !voters.contains(id))
                .map(progress)
                .collect(),
        }
    }

    fn decide(
        &self,
        image: &MetadataImage,
        request: ControllerRequest,
    ) -> Result<Decision, ControllerError> {
        match request {
            ControllerRequest::DescribeQuorum => Ok(Decision::Answer(ControllerResponse::Quorum(
                self.quorum_state(),
            ))),
            ControllerRequest::CreateTopic(t) => self.create_topic(image, t),
            ControllerRequest::AlterPartition {
                broker_id,
                broker_epoch,
                topic_id,
                index,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let stale = |why: String| Err(ControllerError::InvalidRequest(why));
                match image.brokers.get(&broker_id) {
                    Some(b) if b.epoch == broker_epoch && !b.fenced => {}
                    _ => return Err(ControllerError::StaleBrokerEpoch),
                }
                let topic = image
                    .topic(&topic_id)
                    .ok_or_else(|| TopicError::Unknown(topic_id.to_string()))?;
                let Some(p) = usize::try_from(index)
                    .ok()
                    .and_then(|i| topic.partitions.get(i))
                else {
                    return Err(TopicError::Unknown(format!("{}-{index}", topic.name)).into());
                };
                if p.leader != broker_id || p.leader_epoch != leader_epoch {
                    return stale(format!(
                        "broker {broker_id} at leader epoch {leader_epoch} does not lead {}-{index} (leader {} at epoch {})",
                        topic.name, p.leader, p.leader_epoch
                    ));
                }
                if p.partition_epoch != partition_epoch {
                    return stale(format!(
                        "partition epoch {partition_epoch} of {}-{index} is stale (now {})",
                        topic.name, p.partition_epoch
                    ));
                }
                if !isr.contains(&broker_id) || isr.iter().any(|r| !p.replicas.contains(r)) {
                    return stale(format!(
                        "ISR {isr:?} of {}-{index} must hold the leader and only replicas ({:?})",
                        topic.name, p.replicas
                    ));
                }
                // A replica joins only while its broker is alive (KIP-903's intent).
                if let Some(r) = isr
                    .iter()
                    .find(|r| !p.isr.contains(r) && image.brokers.get(r).is_none_or(|b| b.fenced))
                {
                    return stale(format!(
                        "replica {r} of {}-{index} is on a fenced broker",
                        topic.name
                    ));
                }
                let mut sorted = isr.clone();
                sorted.sort_unstable();
                sorted.dedup();
                // The last target replica of a reassignment caught up: it completes here.
                if let Some(records) =
                    super::reassign::complete_if_caught_up(image, topic_id, index, p, &sorted)
                {
                    tracing::info!(topic = %topic.name, partition = index, isr = ?sorted, "reassignment completed");
                    return Ok(Decision::Records(records, ControllerResponse::Done));
                }
                let i = usize::try_from(index).unwrap_or_default();
                Ok(Decision::Records(
                    vec![super::election::isr_change(
                        topic,
                        i,
                        p,
                        &self.defaults.election,
                        sorted,
                    )],
                    ControllerResponse::Done,
                ))
            }
            // A membership change, not records: `execute` runs it before this.
            ControllerRequest::JoinAsObserver { .. } => Err(ControllerError::Internal(
                "an observer joins through the membership, not records".into(),
            )),
            ControllerRequest::ElectLeaders { kind, partitions } => Ok(elect_leaders(
                image,
                &self.defaults.election,
                kind,
                partitions,
            )),
            ControllerRequest::AlterReassignments {
                items,
                allow_rf_change,
            } => {
                let mut records = Vec::new();
                let mut outcomes = Vec::new();
                let mut seen = std::collections::BTreeSet::new();
                for (name, index, target) in items {
                    let outcome = if !seen.insert((name.clone(), index)) {
                        Err(super::reassign::ReassignError::Invalid(
                            "the partition is named twice".into(),
                        ))
                    } else {
                        match image.topic_by_name(&name) {
                            None => Err(super::reassign::ReassignError::Unknown),
                            Some(t) => super::reassign::reassign(
                                image,
                                t,
                                index,
                                target.as_deref(),
                                allow_rf_change,
                            ),
                        }
                    };
                    match outcome {
                        Ok(r) => {
                            records.extend(r);
                            outcomes.push((name, index, None));
                        }
                        Err(e) => outcomes.push((name, index, Some(e))),
                    }
                }
                let answer = ControllerResponse::Reassignments { results: outcomes };
                Ok(if records.is_empty() {
                    Decision::Answer(answer)
                } else {
                    Decision::Records(records, answer)
                })
            }
            ControllerRequest::AlterScramCredentials {
                upserts,
                deletions,
                only_if_absent,
            } => Ok(scram_changes(image, upserts, deletions, only_if_absent)),
            ControllerRequest::AlterClientQuotas {
                alterations,
                validate_only,
            } => {
                let (records, results) = super::client_quotas::alter(image, &alterations);
                let answer = ControllerResponse::QuotasAltered { results };
                Ok(if records.is_empty() || validate_only {
                    Decision::Answer(answer)
                } else {
                    Decision::Records(records, answer)
                })
            }
            ControllerRequest::CreateAcls { bindings } => {
                let mut records = Vec::new();
                let mut results = Vec::new();
                for b in bindings {
                    match validate_binding(&b) {
                        Err(e) => results.push(Some(e.to_string())),
                        Ok(()) => {
                            let new = !image.acls.contains(&b)
                                && !records.iter().any(
                                    |r| matches!(r, MetaRecord::Acl { binding } if *binding == b),
                                );
                            if new {
                                records.push(MetaRecord::Acl { binding: b });
                            }
                            results.push(None);
                        }
                    }
                }
                let answer = ControllerResponse::AclsCreated { results };
                Ok(if records.is_empty() {
                    Decision::Answer(answer)
                } else {
                    Decision::Records(records, answer)
                })
            }
            ControllerRequest::DeleteAcls { filters } => {
                let mut taken = std::collections::BTreeSet::new();
                let matched: Vec<Vec<AclBinding>> = filters
                    .iter()
                    .map(|f| {
                        image
                            .acls
                            .iter()
                            .filter(|b| f.matches(b) && taken.insert((*b).clone()))
                            .cloned()
                            .collect()
                    })
                    .collect();
                let records: Vec<MetaRecord> = taken
                    .into_iter()
                    .map(|binding| MetaRecord::RemoveAcl { binding })
                    .collect();
                let answer = ControllerResponse::AclsDeleted { matched };
                Ok(if records.is_empty() {
                    Decision::Answer(answer)
                } else {
                    Decision::Records(records, answer)
                })
            }
            ControllerRequest::ReportUnreachable { .. } => Err(ControllerError::Internal(
                "a report of an unreachable broker is checked before records".into(),
            )),
            ControllerRequest::DeleteTopic { name } => {
                let topic = image
                    .topic_by_name(&name)
                    .ok_or_else(|| TopicError::Unknown(name.clone()))?;
                Ok(Decision::Records(
                    vec![MetaRecord::RemoveTopic { id: topic.id }],
                    ControllerResponse::Topic(summary(topic.id, topic)),
                ))
            }
            ControllerRequest::CreatePartitions {
                name,
                count,
                assignments,
                validate_only,
            } => self.create_partitions(image, &name, count, assignments, validate_only),
            ControllerRequest::AlterTopicConfigs {
                name,
                configs,
                validate_only,
            } => {
                let topic = image
                    .topic_by_name(&name)
                    .ok_or_else(|| TopicError::Unknown(name.clone()))?;
                for (k, v) in &configs {
                    topic_config::validate(k, v).map_err(TopicError::InvalidConfig)?;
                }
                if validate_only {
                    return Ok(Decision::Answer(ControllerResponse::Done));
                }
                let resource = ConfigResource::Topic(name.clone());
                let mut records: Vec<MetaRecord> = topic
                    .configs
                    .keys()
                    .filter(|k| !configs.contains_key(*k))
                    .map(|k| MetaRecord::Config {
                        resource: resource.clone(),
                        name: k.clone(),
                        value: None,
                    })
                    .collect();
                records.extend(
                    configs
                        .iter()
                        .filter(|(k, v)| topic.configs.get(*k) != Some(*v))
                        .map(|(k, v)| MetaRecord::Config {
                            resource: resource.clone(),
                            name: k.clone(),
                            value: Some(v.clone()),
                        }),
                );
                if records.is_empty() {
                    return Ok(Decision::Answer(ControllerResponse::Done));
                }
                // What the ELR promised rested on the old min.insync.replicas.
                if topic.configs.get("min.insync.replicas") != configs.get("min.insync.replicas") {
                    records.extend(super::election::clear_elr(topic));
                }
                Ok(Decision::Records(records, ControllerResponse::Done))
            }
            ControllerRequest::RegisterBroker {
                id,
                cluster_id,
                incarnation,
                previous_epoch,
                endpoints,
                rack,
            } => {
                if image.cluster_id.as_ref().is_some_and(|c| *c != cluster_id) {
                    return Err(ControllerError::InconsistentClusterId);
                }
                // A broker registering again comes back fenced: what it led moves away now
                // (Kafka fences the old registration the same way). A new process that
                // cannot prove a clean shutdown (the epoch it recorded then is not its last
                // registration's) may have lost what it had not fsynced: with ELR it leaves
                // every ISR and ELR (Kafka's `handleBrokerShutdown`).
                let before = image.brokers.get(&id);
                let new_process = before.is_none_or(|b| b.incarnation != incarnation);
                let clean = before.is_some_and(|b| previous_epoch == Some(b.epoch));
                let rules = &self.defaults.election;
                let changes = if new_process && !clean {
                    if before.is_some() {
                        tracing::info!(broker = id, previous_epoch = ?previous_epoch,
                            "a broker registers after an unclean shutdown");
                    }
                    super::election::on_unclean_shutdown(image, rules, id)
                } else if image.is_alive(id) {
                    super::election::on_fence(image, rules, &[id], false)
                } else {
                    Vec::new()
                };
                let mut records = vec![MetaRecord::RegisterBroker {
                    id,
                    incarnation,
                    endpoints,
                    rack,
                }];
                records.extend(changes);
                Ok(Decision::Records(
                    records,
                    ControllerResponse::Registered { epoch: 0 },
                ))
            }
            ControllerRequest::Heartbeat {
                id,
                epoch,
                applied,
                want_shutdown,
            } => {
                let b = image
                    .brokers
                    .get(&id)
                    .ok_or(ControllerError::BrokerNotRegistered)?;
                if b.epoch != epoch {
                    return Err(ControllerError::StaleBrokerEpoch);
                }
                let registered_at = u64::try_from(b.epoch).unwrap_or(0);
                if want_shutdown && !b.in_shutdown {
                    return Ok(Decision::Records(
                        [
                            MetaRecord::BrokerShutdown { id, epoch },
                            MetaRecord::FenceBroker { id, epoch },
                        ]
                        .into_iter()
                        .chain(super::election::on_fence(
                            image,
                            &self.defaults.election,
                            &[id],
                            true,
                        ))
                        .collect(),
                        ControllerResponse::Heartbeat {
                            fenced: true,
                            shutdown_ok: true,
                        },
                    ));
                }
                if b.fenced && !want_shutdown && applied >= registered_at {
                    let mut records = vec![MetaRecord::UnfenceBroker { id, epoch }];
                    records.extend(super::election::on_unfence(
                        image,
                        &self.defaults.election,
                        id,
                    ));
                    return Ok(Decision::Records(
                        records,
                        ControllerResponse::Heartbeat {
                            fenced: false,
                            shutdown_ok: false,
                        },
                    ));
                }
                Ok(Decision::Answer(ControllerResponse::Heartbeat {
                    fenced: b.fenced,
                    shutdown_ok: b.in_shutdown,
                }))
            }
            ControllerRequest::AllocateProducerIds {
                broker_id,
                broker_epoch,
                at_least,
            } => {
                let b = image
                    .brokers
                    .get(&broker_id)
                    .ok_or(ControllerError::BrokerNotRegistered)?;
                if b.epoch != broker_epoch {
                    return Err(ControllerError::StaleBrokerEpoch);
                }
                let first = image.next_producer_id.max(at_least);
                Ok(Decision::Records(
                    vec![MetaRecord::ProducerIdsBlock {
                        broker_id,
                        broker_epoch,
                        first,
                        size: PRODUCER_ID_BLOCK_SIZE,
                    }],
                    ControllerResponse::ProducerIds {
                        first,
                        size: PRODUCER_ID_BLOCK_SIZE,
                    },
                ))
            }
        }
    }

    fn create_topic(
        &self,
        image: &MetadataImage,
        t: NewTopic,
    ) -> Result<Decision, ControllerError> {
        validate_name(&t.name)?;
        if image.names.contains_key(&t.name) {
            return Err(TopicError::AlreadyExists(t.name.clone()).into());
        }
        if let Some(clash) = collision(image, &t.name) {
            return Err(TopicError::InvalidName(format!(
                "Topic '{}' collides with existing topic: {clash}",
                t.name
            ))
            .into());
        }
        for (k, v) in &t.configs {
            topic_config::validate(k, v).map_err(TopicError::InvalidConfig)?;
        }
        let assignment = match &t.assignments {
            Some(a) => {
                check_assignment(image, a, None)?;
                a.clone()
            }
            None => {
                let count = t.partitions.unwrap_or(self.defaults.num_partitions);
                check_count(count)?;
                let rf = t
                    .replication_factor
                    .unwrap_or(self.defaults.default_replication_factor);
                place(image, 0, count, rf)?
            }
        };
        let replication_factor = assignment.first().map_or(0, |r| r.len() as i16);
        let id = if t.validate_only {
            Uuid::nil()
        } else {
            Uuid::new_v4()
        };
        let answer = ControllerResponse::Topic(TopicSummary {
            id,
            partitions: assignment.len() as i32,
            replication_factor,
            configs: t.configs.clone(),
        });
        if t.validate_only {
            return Ok(Decision::Answer(answer));
        }
        let mut records = vec![MetaRecord::Topic {
            name: t.name.clone(),
            id,
        }];
        records.extend(partition_records(image, id, 0, &assignment));
        records.extend(t.configs.iter().map(|(k, v)| MetaRecord::Config {
            resource: ConfigResource::Topic(t.name.clone()),
            name: k.clone(),
            value: Some(v.clone()),
        }));
        Ok(Decision::Records(records, answer))
    }

    fn create_partitions(
        &self,
        image: &MetadataImage,
        name: &str,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<Decision, ControllerError> {
        let topic = image
            .topic_by_name(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let current = topic.partitions.len() as i32;
        if count < current {
            return Err(TopicError::InvalidPartitions(format!(
                "Topic currently has {current} partitions, which is higher than the requested {count}."
            ))
            .into());
        }
        if count == current {
            return Err(TopicError::InvalidPartitions(format!(
                "Topic already has {current} partitions."
            ))
            .into());
        }
        check_count(count)?;
        let added = match assignments {
            Some(a) => {
                if a.len() as i32 != count - current {
                    return Err(ControllerError::InvalidReplicaAssignment(format!(
                        "Increasing the number of partitions by {} but {} assignments provided.",
                        count - current,
                        a.len()
                    )));
                }
                check_assignment(image, &a, None)?;
                a
            }
            None => {
                let rf = topic
                    .partitions
                    .first()
                    .map_or(1, |p| p.replicas.len() as i16);
                place(image, current, count - current, rf)?
            }
        };
        if validate_only {
            return Ok(Decision::Answer(ControllerResponse::Done));
        }
        Ok(Decision::Records(
            partition_records(image, topic.id, current, &added),
            ControllerResponse::Done,
        ))
    }
}

/// Kafka refuses topic names that differ only in '.' versus '_' (they clash in metric names).
fn collision(image: &MetadataImage, name: &str) -> Option<String> {
    let norm = |n: &str| n.replace('.', "_");
    let wanted = norm(name);
    image.names.keys().find(|n| norm(n) == wanted).cloned()
}

fn check_count(count: i32) -> Result<(), ControllerError> {
    if count < 1 {
        return Err(TopicError::InvalidPartitions(
            "Number of partitions must be larger than 0.".into(),
        )
        .into());
    }
    if count > PARTITIONS_MAX {
        return Err(TopicError::InvalidPartitions(format!(
            "Number of partitions must be at most {PARTITIONS_MAX}."
        ))
        .into());
    }
    Ok(())
}

/// Brokers that may receive replicas: every registered broker, fenced ones marked.
fn slots(image: &MetadataImage) -> Vec<BrokerSlot> {
    image
        .brokers
        .values()
        .map(|b| BrokerSlot {
            id: b.id,
            rack: b.rack.clone(),
            fenced: b.fenced || b.in_shutdown,
        })
        .collect()
}

fn place(
    image: &MetadataImage,
    first: i32,
    count: i32,
    rf: i16,
) -> Result<Vec<Vec<i32>>, ControllerError> {
    if rf < 1 {
        return Err(ControllerError::InvalidReplicationFactor(
            "Replication factor must be larger than 0, or -1 to use the default value.".into(),
        ));
    }
    let mut seed = Uuid::new_v4().as_u128();
    let mut rng = move |n: usize| {
        seed = seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
        (seed % n.max(1) as u128) as usize
    };
    placement::place(&slots(image), first, count, rf, &mut rng).map_err(|e| match e {
        PlacementError::NotEnoughBrokers { wanted, available } => {
            ControllerError::InvalidReplicationFactor(format!(
                "Unable to replicate the partition {wanted} time(s): The target replication factor of {wanted} cannot be reached because only {available} broker(s) are registered."
            ))
        }
        PlacementError::InvalidReplicationFactor => ControllerError::InvalidReplicationFactor(
            "Replication factor must be larger than 0, or -1 to use the default value.".into(),
        ),
        e @ PlacementError::AllBrokersFenced => ControllerError::InvalidReplicationFactor(e.to_string()),
    })
}

/// A manual assignment: every partition's replicas distinct, registered brokers, and one
/// replication factor for all.
fn check_assignment(
    image: &MetadataImage,
    assignment: &[Vec<i32>],
    _existing_rf: Option<usize>,
) -> Result<(), ControllerError> {
    if assignment.is_empty() {
        return Err(ControllerError::InvalidReplicaAssignment(
            "The manual partition assignment is empty.".into(),
        ));
    }
    check_count(assignment.len() as i32)?;
    let rf = assignment[0].len();
    for (p, replicas) in assignment.iter().enumerate() {
        if replicas.is_empty() {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "The manual partition assignment includes an empty replica list for partition {p}."
            )));
        }
        if replicas.len() != rf {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {rf} replica(s).",
                replicas.len()
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in replicas {
            if !seen.insert(r) {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "The manual partition assignment includes the broker {r} more than once."
                )));
            }
            if !image.brokers.contains_key(r) {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "The manual partition assignment includes broker {r}, but no such broker is registered."
                )));
            }
        }
    }
    Ok(())
}

/// The partition records of a new assignment: all replicas in the ISR, the first live
/// replica the leader (none if every replica is fenced), epochs 0.
fn partition_records(
    image: &MetadataImage,
    topic_id: Uuid,
    first: i32,
    assignment: &[Vec<i32>],
) -> Vec<MetaRecord> {
    let live = |id: &i32| image.brokers.get(id).is_some_and(|b| !b.fenced);
    assignment
        .iter()
        .enumerate()
        .map(|(i, replicas)| {
            let isr: Vec<i32> = replicas.iter().copied().filter(live).collect();
            MetaRecord::Partition {
                topic_id,
                index: first + i as i32,
                replicas: replicas.clone(),
                leader: isr.first().copied().unwrap_or(-1),
                isr,
                leader_epoch: 0,
                partition_epoch: 0,
            }
        })
        .collect()
}

fn summary(id: Uuid, topic: &super::image::TopicImage) -> TopicSummary {
    TopicSummary {
        id,
        partitions: topic.partitions.len() as i32,
        replication_factor: topic
            .partitions
            .first()
            .map_or(0, |p| p.replicas.len() as i16),
        configs: topic.configs.clone(),
    }
}

/// The elections of an ElectLeaders request: one record per partition whose leader changes,
/// and each requested partition's outcome (for every partition, only those that needed one,
/// as Kafka answers).
fn elect_leaders(
    image: &MetadataImage,
    rules: &super::election::Rules,
    kind: super::election::ElectionType,
    partitions: Option<Vec<(String, i32)>>,
) -> Decision {
    use super::election::{elect, ElectionError};
    let every = partitions.is_none();
    let mut wanted = partitions.unwrap_or_else(|| {
        image
            .topics_by_name()
            .flat_map(|t| (0..t.partitions.len() as i32).map(|i| (t.name.clone(), i)))
            .collect()
    });
    wanted.sort();
    wanted.dedup();
    let mut records = Vec::new();
    let mut outcomes = Vec::new();
    for (name, index) in wanted {
        let outcome = match image.topic_by_name(&name) {
            None => Err(ElectionError::Unknown),
            Some(t) => elect(image, rules, t, index, kind),
        };
        let error = match outcome {
            Ok(r) => {
                records.push(r);
                None
            }
            Err(e) => Some(e),
        };
        if every && error == Some(ElectionError::NotNeeded) {
            continue;
        }
        outcomes.push((name, index, error));
    }
    let answer = ControllerResponse::Elections { results: outcomes };
    if records.is_empty() {
        Decision::Answer(answer)
    } else {
        Decision::Records(records, answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forwarded answers travel as JSON: every answer that carries a list must encode.
    #[test]
    fn answers_with_lists_round_trip_through_json() {
        use super::super::election::ElectionError;
        use super::super::reassign::ReassignError;
        let answers: Vec<ControllerResult> = vec![
            Ok(ControllerResponse::Elections {
                results: vec![
                    ("t".into(), 0, None),
                    ("t".into(), 1, Some(ElectionError::NotNeeded)),
                ],
            }),
            Ok(ControllerResponse::Reassignments {
                results: vec![("t".into(), 0, Some(ReassignError::Invalid("x".into())))],
            }),
            Err(ControllerError::Timeout),
        ];
        for a in answers {
            let text = serde_json::to_string(&a).expect("encodes");
            let back: ControllerResult = serde_json::from_str(&text).expect("decodes");
            assert_eq!(back, a);
        }
    }
}
