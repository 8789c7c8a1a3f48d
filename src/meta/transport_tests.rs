//! The raft transport end to end: openraft clusters in one process whose nodes talk over real
//! TCP controller listeners (`server::controller_listener` + [`super::service`]) through
//! [`super::network`], each with a tiny in-memory log and state machine (the real ones are
//! `raft_log.rs` and `state_machine.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, EntryPayload, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    ServerState, Snapshot, SnapshotMeta, StoredMembership,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::network::{voters_digest, Network};
use super::rpc::{self, RpcClient};
use super::service::handle_raft_rpc;
use super::{Entry, LogId, MetaBatch, MetaRecord, MetaReply, Raft, StorageError, TypeConfig, Vote};
use crate::server::controller_auth::PeerSecurity;
use crate::server::controller_listener::{serve, ControllerHandler};

// ---- a minimal in-memory log store ----

#[derive(Default)]
struct LogInner {
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
}

#[derive(Clone, Default)]
struct MemLog(Arc<Mutex<LogInner>>);

impl RaftLogReader<TypeConfig> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let log = self.0.lock().unwrap();
        Ok(log.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLog {
    type LogReader = MemLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = self.0.lock().unwrap();
        let last = log.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: log.purged,
            last_log_id: last.or(log.purged),
        })
    }

    async fn get_log_reader(&mut self) -> MemLog {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.0.lock().unwrap().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.0.lock().unwrap().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.0.lock().unwrap().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.0.lock().unwrap().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut log = self.0.lock().unwrap();
            for entry in entries {
                log.entries.insert(entry.log_id.index, entry);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.0.lock().unwrap().entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut log = self.0.lock().unwrap();
        log.purged = Some(log_id);
        log.entries = log.entries.split_off(&(log_id.index + 1));
        Ok(())
    }
}

// ---- a minimal in-memory state machine: the batches applied, in order ----

#[derive(Default)]
struct SmInner {
    applied: Option<LogId>,
    membership: StoredMembership<u64, BasicNode>,
    batches: Vec<MetaBatch>,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    /// Snapshots installed from the leader.
    installed: usize,
}

#[derive(Clone, Default)]
struct MemSm(Arc<Mutex<SmInner>>);

impl MemSm {
    fn has(&self, batch: &MetaBatch) -> bool {
        self.0.lock().unwrap().batches.contains(batch)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MemSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let mut sm = self.0.lock().unwrap();
        let data = serde_json::to_vec(&sm.batches).unwrap();
        let meta = SnapshotMeta {
            last_log_id: sm.applied,
            last_membership: sm.membership.clone(),
            snapshot_id: format!("{:?}", sm.applied.map(|l| l.index)),
        };
        sm.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MemSm {
    type SnapshotBuilder = MemSm;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, BasicNode>), StorageError> {
        let sm = self.0.lock().unwrap();
        Ok((sm.applied, sm.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaReply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut sm = self.0.lock().unwrap();
        let mut replies = Vec::new();
        for entry in entries {
            sm.applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => sm.batches.push(batch),
                EntryPayload::Membership(m) => {
                    sm.membership = StoredMembership::new(Some(entry.log_id), m)
                }
            }
            replies.push(MetaReply {
                index: entry.log_id.index,
            });
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> MemSm {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut sm = self.0.lock().unwrap();
        sm.batches = serde_json::from_slice(&data).unwrap();
        sm.applied = meta.last_log_id;
        sm.membership = meta.last_membership.clone();
        sm.snapshot = Some((meta.clone(), data));
        sm.installed += 1;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let sm = self.0.lock().unwrap();
        Ok(sm.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

// ---- nodes over real controller listeners ----

fn raft_config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "ottla-test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        // Small chunks: a snapshot of a few KB crosses in several InstallSnapshot RPCs.
        snapshot_max_chunk_size: 1024,
        max_in_snapshot_log_to_keep: 0,
        ..Default::default()
    };
    Arc::new(config.validate().unwrap())
}

fn raft_handler(raft: Raft, digest: u64) -> ControllerHandler {
    Arc::new(move |key, version, body: Bytes| {
        let raft = raft.clone();
        Box::pin(async move {
            if version != 0 {
                return None;
            }
            handle_raft_rpc(&raft, digest, key, body).await
        })
    })
}

struct Node {
    id: u64,
    addr: String,
    raft: Raft,
    sm: MemSm,
    stop: watch::Sender<bool>,
    listener: JoinHandle<()>,
}

impl Node {
    async fn start(id: u64, listener: TcpListener, digest: u64) -> Node {
        let addr = listener.local_addr().unwrap().to_string();
        let sm = MemSm::default();
        let raft = Raft::new(
            id,
            raft_config(),
            Network::new(digest, format!("node-{id}")),
            MemLog::default(),
            sm.clone(),
        )
        .await
        .unwrap();
        let (stop, rx) = watch::channel(false);
        let listener = tokio::spawn(serve(
            listener,
            raft_handler(raft.clone(), digest),
            16 << 20,
            Arc::new(PeerSecurity::plaintext()),
            rx,
        ));
        Node {
            id,
            addr,
            raft,
            sm,
            stop,
            listener,
        }
    }

    fn node(&self) -> BasicNode {
        BasicNode::new(self.addr.clone())
    }

    fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Stops the listener (its connections close) and the raft.
    async fn shutdown(self) {
        self.stop.send(true).unwrap();
        self.listener.await.unwrap();
        self.raft.shutdown().await.unwrap();
    }
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The id every node agrees leads (and which says it leads).
async fn agreed_leader(nodes: &[&Node]) -> u64 {
    let mut leader = None;
    wait_for(
        "a leader all nodes agree on",
        Duration::from_secs(10),
        || {
            let first = nodes[0].leader();
            let agreed = first.is_some()
                && nodes.iter().all(|n| n.leader() == first)
                && nodes.iter().any(|n| Some(n.id) == first && n.is_leader());
            leader = first;
            agreed
        },
    )
    .await;
    leader.unwrap()
}

fn batch(records: usize) -> MetaBatch {
    MetaBatch {
        records: (0..records)
            .map(|i| MetaRecord::Topic {
                name: format!("topic-{i}"),
                id: Uuid::new_v4(),
            })
            .collect(),
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_elect_replicate_fail_over_and_refuse_a_foreign_digest() {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let voters: Vec<(u64, String)> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap().to_string()))
        .collect();
    let digest = voters_digest(&voters);
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        nodes.push(Node::start(i as u64 + 1, listener, digest).await);
    }
    let members: BTreeMap<u64, BasicNode> = nodes.iter().map(|n| (n.id, n.node())).collect();

    // Every voter initializes the same membership at once: one leader comes out.
    let inits =
        futures::future::join_all(nodes.iter().map(|n| n.raft.initialize(members.clone()))).await;
    for result in inits {
        if let Err(e) = result {
            assert!(
                e.to_string().contains("not allowed"),
                "initialize failed: {e}"
            );
        }
    }
    let all: Vec<&Node> = nodes.iter().collect();
    let first_leader = agreed_leader(&all).await;

    // A write reaches every state machine.
    let a = batch(60);
    let leader = nodes.iter().find(|n| n.id == first_leader).unwrap();
    let written = leader.raft.client_write(a.clone()).await.unwrap();
    assert_eq!(written.data.index, written.log_id.index);
    wait_for("the first write everywhere", WAIT, || {
        nodes.iter().all(|n| n.sm.has(&a))
    })
    .await;

    // A node configured with other voters is refused: directly...
    let foreign_digest = voters_digest(&[(1, "elsewhere:1".to_string())]);
    assert_ne!(foreign_digest, digest);
    let follower = nodes.iter().find(|n| n.id != first_leader).unwrap();
    let mut foreign = Network::new(foreign_digest, "foreign".into());
    let mut client = foreign.new_client(follower.id, &follower.node()).await;
    let refused = client
        .vote(
            VoteRequest {
                vote: Vote::new(1000, 9),
                last_log_id: None,
            },
            RPCOption::new(Duration::from_secs(1)),
        )
        .await
        .unwrap_err();
    let text = refused.to_string();
    assert!(matches!(refused, RPCError::Unreachable(_)), "{text}");
    assert!(
        text.contains(&format!("{digest:016x}"))
            && text.contains(&format!("{foreign_digest:016x}")),
        "{text}"
    );
    assert!(follower.term() < 1000);
    // A body that does not decode closes the connection; the node serves on.
    let raw = RpcClient::new(follower.addr.clone(), "garbage".into());
    for key in [
        rpc::VOTE,
        rpc::APPEND_ENTRIES,
        rpc::INSTALL_SNAPSHOT,
        rpc::FORWARD,
    ] {
        let sent = raw.call(key, 0, b"{not json", Duration::from_secs(1)).await;
        assert!(sent.is_err(), "key {key}: {sent:?}");
    }
    // ...and a whole raft node with another voter list, campaigning, disturbs nothing.
    let term_before = leader.term();
    let rogue_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rogue = Node::start(9, rogue_listener, foreign_digest).await;
    let mut rogue_members = members.clone();
    rogue_members.insert(9, rogue.node());
    rogue.raft.initialize(rogue_members).await.unwrap();
    let campaigned = Instant::now();
    wait_for("the rogue node to campaign", WAIT, || rogue.term() >= 3).await;
    tokio::time::sleep(Duration::from_millis(300).saturating_sub(campaigned.elapsed())).await;
    assert_eq!(leader.term(), term_before);
    assert!(leader.is_leader());
    assert!(nodes.iter().all(|n| n.leader() == Some(first_leader)));
    rogue.shutdown().await;

    // A snapshot crosses the wire in chunks: the leader snapshots and purges its log, then a
    // new learner can only catch up from the snapshot.
    leader.raft.trigger().snapshot().await.unwrap();
    wait_for("the leader's snapshot", WAIT, || {
        leader.raft.metrics().borrow().snapshot.map(|l| l.index) >= Some(written.log_id.index)
    })
    .await;
    leader
        .raft
        .trigger()
        .purge_log(written.log_id.index)
        .await
        .unwrap();
    wait_for("the leader's purge", WAIT, || {
        leader.raft.metrics().borrow().purged.map(|l| l.index) >= Some(written.log_id.index)
    })
    .await;
    let learner_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let learner = Node::start(4, learner_listener, digest).await;
    leader
        .raft
        .add_learner(4, learner.node(), true)
        .await
        .unwrap();
    wait_for("the learner to catch up", WAIT, || learner.sm.has(&a)).await;
    {
        let sm = learner.sm.0.lock().unwrap();
        assert!(sm.installed >= 1);
        // Several chunks of `snapshot_max_chunk_size`.
        assert!(sm.snapshot.as_ref().map(|(_, data)| data.len()) > Some(3 * 1024));
    }

    // The leader goes away: the others elect another and take writes.
    let old = nodes.iter().position(|n| n.id == first_leader).unwrap();
    nodes.remove(old).shutdown().await;
    let mut rest: Vec<&Node> = nodes.iter().collect();
    rest.push(&learner);
    let new_leader = agreed_leader(&rest).await;
    assert_ne!(new_leader, first_leader);
    let b = batch(3);
    let leader = nodes.iter().find(|n| n.id == new_leader).unwrap();
    leader.raft.client_write(b.clone()).await.unwrap();
    wait_for("the second write everywhere", WAIT, || {
        rest.iter().all(|n| n.sm.has(&b) && n.sm.has(&a))
    })
    .await;
    let ids: BTreeSet<u64> = rest.iter().map(|n| n.id).collect();
    assert_eq!(ids.len(), 3);
    for node in nodes {
        node.shutdown().await;
    }
    learner.shutdown().await;
}
