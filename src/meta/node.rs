//! This node's part in the metadata quorum: opens the raft log and the state machine, forms
//! or joins the quorum (no format step: every pristine voter initializes with the same
//! membership), waits until its image has caught up, and routes controller requests to the
//! active controller (here, or forwarded over the controller listener).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::broker_lifecycle::{self, HEARTBEAT_KEY, REGISTRATION_KEY};
use super::connector::Connector;
use super::controller::{
    Controller, ControllerDefaults, ControllerError, ControllerRequest, ControllerResult,
};
use super::image::MetadataImage;
use super::network::{voters_digest, Network};
use super::raft_log::LogStore;
use super::rpc::{RpcClient, APPEND_ENTRIES, FORWARD, INSTALL_SNAPSHOT, VOTE};
use super::service::handle_raft_rpc;
use super::state_machine::{ImageCell, Publisher, StateMachine};
use super::Raft;

/// How long a request waits for the quorum (a leader, a commit) before it times out.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the metadata layer needs to start.
pub struct MetaOptions {
    pub node_id: i32,
    /// `(id, controller HOST:PORT)` of every voter; empty: a cluster of one.
    pub voters: Vec<(u64, String)>,
    /// A broker-only node: the HOST:PORT where it receives the metadata log as an observer
    /// (an openraft learner; it asks the active controller to add it). None: a voter.
    pub observer_addr: Option<String>,
    /// `<data>/meta/raft`, or None in memory mode.
    pub dir: Option<PathBuf>,
    pub defaults: ControllerDefaults,
    pub publisher: Arc<dyn Publisher>,
    /// Raft timings (tests shorten them).
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: (u64, u64),
    /// Starts serving the controller listener for this node (raft RPCs from peers, forwarded
    /// requests), before the node waits for the quorum. None: no listener (a cluster of one).
    pub serve: Option<Box<dyn FnOnce(Arc<MetaNode>) + Send>>,
    /// TLS and SASL of this node's connections to controller listeners (the protocol of
    /// `controller_listen`); None: plain TCP.
    pub connector: Option<Arc<Connector>>,
}

impl MetaOptions {
    /// Kafka-like timings: a heartbeat every 100 ms, elections after 0.5-1 s of silence.
    pub const HEARTBEAT_MS: u64 = 100;
    pub const ELECTION_MS: (u64, u64) = (500, 1000);
}

/// A forwarded request's answer: the result and the index to wait for.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardReply {
    pub result: ControllerResult,
    pub index: u64,
}

pub struct MetaNode {
    pub raft: Raft,
    pub cell: Arc<ImageCell>,
    pub controller: Controller,
    node_id: i32,
    voters: BTreeMap<u64, String>,
    digest: u64,
    forward: Mutex<HashMap<u64, Arc<RpcClient>>>,
    connector: Option<Arc<Connector>>,
    /// The raft directory was empty at start (a new node or a new cluster).
    pristine: bool,
    /// A broker-only node: an observer of the log, never a voter.
    observer: bool,
}

/// Logs every change of the active controller (one line per change, for operators).
async fn log_leader_changes(
    mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, BasicNode>>,
    node_id: i32,
) {
    let mut last = None;
    loop {
        let (leader, term) = {
            let m = metrics.borrow_and_update();
            (m.current_leader, m.current_term)
        };
        if leader != last {
            match leader {
                Some(l) if l == node_id as u64 => {
                    tracing::info!(term, "this node is now the active controller")
                }
                Some(l) => tracing::info!(controller = l, term, "the active controller changed"),
                None => tracing::info!(term, "no active controller"),
            }
            last = leader;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

impl MetaNode {
    /// Opens the log and the image, starts raft and waits until this node knows a leader and
    /// has applied what was committed when it stopped.
    pub async fn start(mut opts: MetaOptions) -> Result<Arc<MetaNode>, String> {
        let node_id = opts.node_id;
        let id = node_id as u64;
        let voters: BTreeMap<u64, String> = if opts.voters.is_empty() {
            [(id, String::new())].into_iter().collect()
        } else {
            opts.voters.iter().cloned().collect()
        };
        let digest = voters_digest(
            &voters
                .iter()
                .map(|(i, a)| (*i, a.clone()))
                .collect::<Vec<_>>(),
        );
        let dir = opts.dir.clone();
        let publisher = opts.publisher.clone();
        let opened = crate::threads::spawn_blocking(move || {
            let log = LogStore::open(dir.as_deref())?;
            let (sm, cell) = StateMachine::open(dir.as_deref(), publisher)?;
            std::io::Result::Ok((log, sm, cell))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot open the metadata log: {e}"))?;
        let (mut log, sm, cell) = opened;
        let state = log
            .get_log_state()
            .await
            .map_err(|e| format!("cannot read the metadata log: {e}"))?;
        let committed = log
            .read_committed()
            .await
            .map_err(|e| format!("cannot read the metadata log: {e}"))?;
        let pristine = log.is_pristine();
        let config = openraft::Config {
            cluster_name: "ottla-metadata".into(),
            heartbeat_interval: opts.heartbeat_interval_ms,
            election_timeout_min: opts.election_timeout_ms.0,
            election_timeout_max: opts.election_timeout_ms.1,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
            max_in_snapshot_log_to_keep: 1_000,
            // openraft's 200 ms per snapshot chunk is tight for multi-MB chunks.
            install_snapshot_timeout: 5_000,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| format!("metadata quorum settings: {e}"))?,
        );
        let network = Network::new(digest, format!("ottla-controller-{node_id}"))
            .with_connector(opts.connector.clone());
        let contacts = network.contacts();
        let raft = Raft::new(id, config, network, log, sm)
            .await
            .map_err(|e| format!("cannot start the metadata quorum: {e}"))?;
        contacts.watch(raft.metrics());
        let controller =
            Controller::new(raft.clone(), cell.clone(), opts.defaults.clone(), contacts);
        let node = Arc::new(MetaNode {
            raft,
            cell,
            controller,
            node_id,
            voters,
            digest,
            forward: Mutex::new(HashMap::new()),
            connector: opts.connector.clone(),
            pristine,
            observer: opts.observer_addr.is_some(),
        });
        if let Some(serve) = opts.serve.take() {
            serve(node.clone());
        }
        tokio::spawn(log_leader_changes(node.raft.metrics(), node_id));
        if let Some(addr) = &opts.observer_addr {
            node.join_as_observer(addr).await;
        } else if pristine {
            node.initialize_if_alone(opts.election_timeout_ms.0).await;
        }
        // Caught up: applied what was committed at the last stop (on a cluster of one, the
        // whole log: it commits it as soon as it leads again).
        let target = if node.voters.len() == 1 && !node.observer {
            state.last_log_id.map_or(0, |l| l.index)
        } else {
            committed.map_or(0, |l| l.index)
        };
        node.wait_for_leader().await;
        let mut waited = 0u64;
        while tokio::time::timeout(Duration::from_secs(5), node.cell.wait_applied(target))
            .await
            .is_err()
        {
            waited += 5;
            tracing::warn!(
                applied = node.cell.applied_index(),
                target,
                waited_s = waited,
                "waiting for the metadata log to catch up"
            );
        }
        Ok(node)
    }

    /// A pristine voter initializes the quorum with the full configured membership, unless a
    /// leader reaches it first. With peers it first listens for a moment (a random part of an
    /// election timeout): a voter that starts after the others then joins the leader they
    /// elected instead of campaigning against it, and voters started together rarely split
    /// their first vote.
    async fn initialize_if_alone(&self, election_timeout_min_ms: u64) {
        if self.voters.len() > 1 {
            let jitter = Uuid::new_v4().as_u128() as u64 % (election_timeout_min_ms / 2).max(1);
            let listen = Duration::from_millis(election_timeout_min_ms / 4 + jitter);
            let contacted = self
                .raft
                .wait(Some(listen))
                .metrics(
                    |m| m.current_leader.is_some() || m.vote.leader_id.term > 0,
                    "contact from a peer",
                )
                .await;
            if contacted.is_ok() {
                tracing::info!("joined the metadata quorum the other voters formed");
                return;
            }
        }
        let members: BTreeMap<u64, BasicNode> = self
            .voters
            .iter()
            .map(|(i, addr)| (*i, BasicNode { addr: addr.clone() }))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => tracing::info!(
                voters = self.voters.len(),
                "initialized the metadata quorum"
            ),
            // Another voter got there first and this node already took part.
            Err(e) => tracing::info!(error = %e, "metadata quorum already initialized"),
        }
    }

    /// A broker-only node asks the active controller to replicate the metadata log to `addr`
    /// (it is added as an observer, or its address updated; nothing changes when it is known
    /// already), trying the voters in turn until one that leads says yes; logged every 5 s
    /// while none does.
    async fn join_as_observer(&self, addr: &str) {
        let request = ControllerRequest::JoinAsObserver {
            id: self.node_id,
            addr: addr.to_string(),
        };
        let voters: Vec<i32> = self.voters.keys().map(|&v| v as i32).collect();
        let started = tokio::time::Instant::now();
        let mut next_log = started + Duration::from_secs(5);
        let mut ask = voters.first().copied().unwrap_or(0);
        let mut turn = 0usize;
        loop {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            let answer = self.forward(ask, &request, deadline).await;
            match answer.map(|r| r.result) {
                Ok(Ok(_)) => {
                    tracing::info!(
                        controller = ask,
                        addr,
                        "following the metadata log as an observer"
                    );
                    return;
                }
                Ok(Err(ControllerError::NotController(Some(leader))))
                    if leader != ask && self.voters.contains_key(&(leader as u64)) =>
                {
                    ask = leader;
                    continue;
                }
                Ok(Err(e @ ControllerError::InvalidRequest(_))) => {
                    // A voter's id: this node can never join; say so, keep trying (an operator
                    // fixes the configuration and restarts).
                    tracing::error!(error = %e, "the controller refuses this node as an observer");
                }
                Ok(Err(e)) => {
                    tracing::debug!(controller = ask, error = %e, "joining as an observer")
                }
                Err(e) => tracing::debug!(controller = ask, error = %e, "joining as an observer"),
            }
            if tokio::time::Instant::now() >= next_log {
                next_log += Duration::from_secs(5);
                tracing::warn!(
                    waited_s = started.elapsed().as_secs(),
                    "no active controller has added this broker-only node yet: waiting for the controller quorum"
                );
            }
            turn += 1;
            ask = voters
                .get(turn % voters.len().max(1))
                .copied()
                .unwrap_or(ask);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until some node leads the quorum (logged every 5 s while none does).
    pub async fn wait_for_leader(&self) {
        let mut waited = 0u64;
        loop {
            let found = self
                .raft
                .wait(Some(Duration::from_secs(5)))
                .metrics(|m| m.current_leader.is_some(), "a metadata leader")
                .await;
            if found.is_ok() {
                return;
            }
            waited += 5;
            tracing::warn!(
                waited_s = waited,
                voters = self.voters.len(),
                "no metadata leader yet: waiting for a majority of the controller quorum"
            );
        }
    }

    /// The raft directory was empty when this node started.
    pub fn was_pristine(&self) -> bool {
        self.pristine
    }

    /// The digest of the configured voter list every raft RPC carries.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// The image handlers read.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.cell.current()
    }

    /// The active controller's node id, if known.
    pub fn controller_id(&self) -> Option<i32> {
        self.raft
            .metrics()
            .borrow()
            .current_leader
            .and_then(|l| i32::try_from(l).ok())
    }

    /// Whether this node is the active controller.
    pub fn is_controller(&self) -> bool {
        self.controller_id() == Some(self.node_id)
    }

    /// The voters as configured: `(id, controller HOST:PORT)`.
    pub fn voters(&self) -> &BTreeMap<u64, String> {
        &self.voters
    }

    /// Runs a controller request wherever the active controller is, then waits until this
    /// node's image includes its effect.
    pub async fn submit(&self, request: ControllerRequest) -> ControllerResult {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        let mut last_error = ControllerError::Timeout;
        while tokio::time::Instant::now() < deadline {
            let leader = match self.controller_id() {
                Some(l) => l,
                None => {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(500), self.wait_for_leader())
                            .await;
                    continue;
                }
            };
            let (result, index) = if leader == self.node_id {
                self.controller.execute(request.clone()).await
            } else {
                match self.forward(leader, &request, deadline).await {
                    Ok(reply) => (reply.result, reply.index),
                    Err(e) => {
                        tracing::debug!(leader, error = %e, "forwarding to the controller failed; retrying");
                        last_error = ControllerError::Timeout;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            };
            match result {
                Err(ControllerError::NotController(_)) => {
                    last_error = ControllerError::NotController(None);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                other => {
                    if index > 0
                        && tokio::time::timeout_at(deadline, self.cell.wait_applied(index))
                            .await
                            .is_err()
                    {
                        return Err(ControllerError::Timeout);
                    }
                    return other;
                }
            }
        }
        Err(last_error)
    }

    /// A controller request from a node that is stopping: one attempt at the controller
    /// known now, within `wait`. No retry, and no wait for an election: a controller that is
    /// gone (stopping too, perhaps: a whole cluster stopped at once) is not waited for, and
    /// no controller known is an answer too. Does not wait for the local image.
    pub async fn submit_once(
        &self,
        request: ControllerRequest,
        wait: Duration,
    ) -> ControllerResult {
        let deadline = tokio::time::Instant::now() + wait;
        let leader = self
            .controller_id()
            .ok_or(ControllerError::NotController(None))?;
        let attempt = async {
            if leader == self.node_id {
                self.controller.execute(request).await.0
            } else {
                match self.forward(leader, &request, deadline).await {
                    Ok(reply) => reply.result,
                    Err(e) => {
                        tracing::debug!(leader, error = %e, "the controller is out of reach; not retrying");
                        Err(ControllerError::NotController(None))
                    }
                }
            }
        };
        tokio::time::timeout_at(deadline, attempt)
            .await
            .unwrap_or(Err(ControllerError::Timeout))
    }

    async fn forward(
        &self,
        leader: i32,
        request: &ControllerRequest,
        deadline: tokio::time::Instant,
    ) -> Result<ForwardReply, String> {
        let id = leader as u64;
        let addr = self
            .voters
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("controller {leader} is not a configured voter"))?;
        let client = {
            let mut clients = self.forward.lock().unwrap_or_else(|p| p.into_inner());
            clients
                .entry(id)
                .or_insert_with(|| {
                    Arc::new(
                        RpcClient::new(addr, format!("ottla-broker-{}", self.node_id))
                            .with_connector(self.connector.clone()),
                    )
                })
                .clone()
        };
        // A controller that failed lately (killed, say) is backed off for up to a second:
        // wait that out only while it still leads, so a newly elected controller is asked
        // as soon as it is known.
        if let Some(at) = client.backoff_until() {
            let wait = at
                .min(deadline)
                .saturating_duration_since(tokio::time::Instant::now());
            let moved = self
                .raft
                .wait(Some(wait))
                .metrics(|m| m.current_leader != Some(id), "the controller to move")
                .await;
            if moved.is_ok() {
                return Err(format!("controller {leader} is no longer the leader"));
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Some(wire) = broker_lifecycle::to_wire(request) {
            let (key, version, body) = wire.map_err(|e| e.to_string())?;
            let answer = client
                .call(key, version, &body, left)
                .await
                .map_err(|e| e.to_string())?;
            let (result, index) = broker_lifecycle::from_wire(key, version, answer);
            return Ok(ForwardReply { result, index });
        }
        let body = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        let answer = client
            .call(FORWARD, 0, &body, left)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&answer).map_err(|e| format!("bad forward reply: {e}"))
    }

    /// Answers one request of the controller listener: raft RPCs from peers and requests
    /// forwarded by brokers. None closes the connection (logged).
    pub async fn handle_controller_request(
        self: Arc<Self>,
        api_key: i16,
        version: i16,
        body: Bytes,
    ) -> Option<Bytes> {
        match api_key {
            VOTE | APPEND_ENTRIES | INSTALL_SNAPSHOT => {
                handle_raft_rpc(&self.raft, self.digest, api_key, body).await
            }
            FORWARD => self.handle_forward(body).await,
            REGISTRATION_KEY | HEARTBEAT_KEY => {
                let Some(request) = broker_lifecycle::request_from_wire(api_key, version, body)
                else {
                    tracing::warn!(api_key, version, "closing controller connection: undecodable broker registration or heartbeat");
                    return None;
                };
                let result = if self.is_controller() {
                    self.controller.execute(request).await.0
                } else {
                    Err(ControllerError::NotController(self.controller_id()))
                };
                broker_lifecycle::response_to_wire(api_key, version, &result)
            }
            other => {
                tracing::warn!(
                    api_key = other,
                    "closing controller connection: API not served on the controller listener"
                );
                None
            }
        }
    }

    /// The controller listener's side of a forwarded request.
    pub async fn handle_forward(&self, body: Bytes) -> Option<Bytes> {
        let request: ControllerRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "closing controller connection: undecodable forwarded request");
                return None;
            }
        };
        let reply = if self.is_controller() {
            let (result, index) = self.controller.execute(request).await;
            ForwardReply { result, index }
        } else {
            ForwardReply {
                result: Err(ControllerError::NotController(self.controller_id())),
                index: 0,
            }
        };
        serde_json::to_vec(&reply).ok().map(Bytes::from)
    }

    /// While this node is the active controller, fences every unfenced broker that has not
    /// heartbeated for `session_timeout` (a new controller first gives every broker a fresh
    /// session). Runs until `stop`.
    pub async fn fencing_loop(
        self: Arc<Self>,
        session_timeout: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let tick = (session_timeout / 4).max(Duration::from_millis(50));
        let mut led_term = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.changed() => return,
            }
            let metrics = self.raft.metrics().borrow().clone();
            if metrics.current_leader != Some(self.node_id as u64) {
                led_term = None;
                continue;
            }
            if led_term != Some(metrics.current_term) {
                led_term = Some(metrics.current_term);
                self.controller.reset_sessions();
            }
            let image = self.image();
            let expired = self.controller.expired_sessions(&image, session_timeout);
            if expired.is_empty() {
                continue;
            }
            let ids: Vec<i32> = expired.iter().map(|(id, _)| *id).collect();
            let records = expired
                .iter()
                .map(|(id, epoch)| super::records::MetaRecord::FenceBroker {
                    id: *id,
                    epoch: *epoch,
                })
                .chain(super::election::on_fence(
                    &image,
                    self.controller.rules(),
                    &ids,
                    false,
                ))
                .collect();
            match self.controller.propose(records).await {
                Ok(_) => {
                    tracing::warn!(brokers = ?expired.iter().map(|(id, _)| id).collect::<Vec<_>>(),
                    timeout_ms = session_timeout.as_millis() as u64, "fenced brokers whose session expired")
                }
                Err(e) => tracing::warn!(error = %e, "cannot fence brokers whose session expired"),
            }
        }
    }

    /// While this node is the active controller, every `every` moves leadership back to
    /// preferred replicas for brokers that lead more than `percent` % too few of the
    /// partitions they prefer ([`super::election::rebalance`], Kafka's automatic leader
    /// rebalancing). Runs until `stop`.
    pub async fn rebalance_loop(
        self: Arc<Self>,
        every: Duration,
        percent: u32,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if !self.is_controller() {
                continue;
            }
            let records =
                super::election::rebalance(&self.image(), self.controller.rules(), percent);
            if records.is_empty() {
                continue;
            }
            let n = records.len();
            match self.controller.propose(records).await {
                Ok(_) => tracing::info!(
                    partitions = n,
                    "moved leadership back to preferred replicas"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot rebalance leadership"),
            }
        }
    }

    /// Stops raft (its tasks end; the log's writer thread finishes its queue).
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "stopping the metadata quorum");
        }
    }
}
