//! openraft's network between controllers: [`Network`] (the `RaftNetworkFactory`) makes one
//! [`PeerClient`] (a `RaftNetwork`) per target, which sends openraft's RPCs to the target's
//! controller listener with [`RpcClient`] under ottla's private API keys (version 0).
//!
//! Wire format (the server side is `meta::service`):
//! - Vote ([`rpc::VOTE`]), AppendEntries ([`rpc::APPEND_ENTRIES`]): the request body is the
//!   JSON of [`Envelope`], `{"digest": D, "rpc": <openraft request>}`, D being the sender's
//!   [`voters_digest`].
//! - InstallSnapshot ([`rpc::INSTALL_SNAPSHOT`], one chunk): a 4-byte big-endian length, the
//!   JSON of the envelope with the chunk's `data` left empty, then the chunk's bytes raw (JSON
//!   would spell them as an array of numbers).
//! - The response body is the JSON of [`Reply`]: `{"ok": <openraft response>}`,
//!   `{"raft_error": <openraft RaftError>}`, `{"digest_mismatch": {"server": D1, "client":
//!   D2}}` (the target's voter list differs from the sender's: the RPC was refused), or
//!   `{"error": "<text>"}` (the target could not handle the request).
//!
//! Errors as openraft wants them: no connection, a broken one, an undecodable reply, a
//! refusal → `RPCError::Unreachable` (openraft backs off, [`PeerClient`]'s backoff: 50 ms
//! doubling to 1 s); no answer within `RPCOption::hard_ttl` → `RPCError::Timeout`; the
//! target's own raft error → `RPCError::RemoteError`; an AppendEntries over the frame limit
//! ([`Network::with_max_request_bytes`]) → `RPCError::PayloadTooLarge` with fewer entries.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;

use bytes::{BufMut, Bytes};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::connector::Connector;
use super::rpc::{self, RpcClient};
use super::{TypeConfig, Vote};

/// A raft request on the wire: the sender's voter-list digest and openraft's request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub digest: u64,
    pub rpc: T,
}

/// A raft RPC's answer on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T, E> {
    /// openraft's response.
    Ok(T),
    /// openraft's error on the target.
    RaftError(E),
    /// Refused: the target's voter list (`server`) is not the sender's (`client`).
    DigestMismatch { server: u64, client: u64 },
    /// The target could not handle the request.
    Error(String),
}

/// A stable digest of the configured voters (`(node id, controller listener address)`), the
/// same whatever the order of the list: FNV-1a (64 bits) over the sorted `id@addr` entries,
/// each followed by a newline. Not std's hasher, whose seed differs per process.
pub fn voters_digest(voters: &[(u64, String)]) -> u64 {
    let mut sorted: Vec<&(u64, String)> = voters.iter().collect();
    sorted.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (id, addr) in sorted {
        for byte in format!("{id}@{addr}\n").bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// The body of an InstallSnapshot request: JSON length, JSON (without the data), data.
pub fn encode_snapshot_request(
    digest: u64,
    mut request: InstallSnapshotRequest<TypeConfig>,
) -> io::Result<Vec<u8>> {
    let data = std::mem::take(&mut request.data);
    let json = serde_json::to_vec(&Envelope {
        digest,
        rpc: request,
    })?;
    let len = u32::try_from(json.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "snapshot header too large"))?;
    let mut body = Vec::with_capacity(4 + json.len() + data.len());
    body.put_u32(len);
    body.extend_from_slice(&json);
    body.extend_from_slice(&data);
    Ok(body)
}

/// Decodes [`encode_snapshot_request`]'s body.
pub fn decode_snapshot_request(
    body: &[u8],
) -> Result<Envelope<InstallSnapshotRequest<TypeConfig>>, String> {
    let Some((len, rest)) = body.split_first_chunk::<4>() else {
        return Err("snapshot request shorter than its length".into());
    };
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(format!(
            "snapshot request header of {len} bytes, only {} present",
            rest.len()
        ));
    }
    let (json, data) = rest.split_at(len);
    let mut envelope: Envelope<InstallSnapshotRequest<TypeConfig>> =
        serde_json::from_slice(json).map_err(|e| e.to_string())?;
    envelope.rpc.data = data.to_vec();
    Ok(envelope)
}

pub(crate) use crate::log_every::LogLimit;

/// How often a digest mismatch is logged at most (each side).
pub(crate) const MISMATCH_LOG_EVERY: Duration = Duration::from_secs(5);

static CLIENT_MISMATCH_LOG: LogLimit = LogLimit::new();
static OVERSIZE_LOG: LogLimit = LogLimit::new();

/// openraft's network factory: a [`PeerClient`] per target, each with its own connection.
#[derive(Debug, Clone)]
pub struct Network {
    digest: u64,
    client_id: String,
    max_request_bytes: usize,
    contacts: Arc<Contacts>,
    /// TLS and SASL to the peers' controller listeners; None: plain TCP.
    connector: Option<Arc<Connector>>,
}

/// When each follower last answered this node's AppendEntries and when it was last caught up
/// to this node's log (DescribeQuorum's `last_fetch_timestamp` and
/// `last_caught_up_timestamp`; a KRaft follower fetches, openraft's leader pushes, so an
/// answered AppendEntries stands for a fetch). Kept per raft term: a new leadership starts
/// with no contact, as Kafka's leader state does.
#[derive(Debug, Default)]
pub struct Contacts {
    by_node: Mutex<BTreeMap<u64, Contact>>,
    /// This node's raft metrics (its last log index), once the raft exists.
    metrics: OnceLock<watch::Receiver<openraft::RaftMetrics<u64, BasicNode>>>,
}

/// One follower's last contact with this node as leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contact {
    /// The raft term of the leadership the contact belongs to.
    pub term: u64,
    /// Wall-clock milliseconds of the last answered AppendEntries.
    pub last_fetch_ms: i64,
    /// Wall-clock milliseconds of the last answered AppendEntries that reached this node's
    /// last log entry (-1: none yet in this term).
    pub last_caught_up_ms: i64,
}

impl Contacts {
    /// Gives the contacts the raft's metrics (call it once the raft is made).
    pub fn watch(&self, metrics: watch::Receiver<openraft::RaftMetrics<u64, BasicNode>>) {
        let _ = self.metrics.set(metrics);
    }

    /// `target` answered an AppendEntries of `term` that carried the log up to index `upto`.
    fn answered(&self, target: u64, term: u64, upto: Option<u64>) {
        let now = wall_clock_ms();
        let last = self
            .metrics
            .get()
            .map(|m| m.borrow().last_log_index)
            .unwrap_or_default();
        let caught_up = upto >= last;
        let mut by_node = self.by_node.lock().unwrap_or_else(|p| p.into_inner());
        let c = by_node.entry(target).or_insert(Contact {
            term,
            last_fetch_ms: -1,
            last_caught_up_ms: -1,
        });
        if c.term != term {
            *c = Contact {
                term,
                last_fetch_ms: -1,
                last_caught_up_ms: -1,
            };
        }
        c.last_fetch_ms = now;
        if caught_up {
            c.last_caught_up_ms = now;
        }
    }

    /// `node`'s last contact in `term`, if it had one.
    pub fn get(&self, node: u64, term: u64) -> Option<Contact> {
        let by_node = self.by_node.lock().unwrap_or_else(|p| p.into_inner());
        by_node.get(&node).copied().filter(|c| c.term == term)
    }
}

/// Milliseconds since the Unix epoch.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The largest request body [`Network`] sends unless told otherwise.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// Room for the size prefix and the request header (client id apart) in a frame.
const HEADER_BYTES: usize = 32;

impl Network {
    /// `digest`: [`voters_digest`] of the configured voters, sent with every RPC;
    /// `client_id`: the request header's client id (names this node in the peer's logs).
    pub fn new(digest: u64, client_id: String) -> Network {
        Network {
            digest,
            client_id,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            contacts: Arc::default(),
            connector: None,
        }
    }

    /// The same network connecting through `connector` (TLS, SASL) when one is given.
    pub fn with_connector(mut self, connector: Option<Arc<Connector>>) -> Network {
        self.connector = connector;
        self
    }

    /// The followers' contacts this network's clients record.
    pub fn contacts(&self) -> Arc<Contacts> {
        self.contacts.clone()
    }

    /// The same network with another bound on request frames: set it to the peers' controller
    /// listener frame limit. An AppendEntries over it is answered `PayloadTooLarge` with a
    /// smaller entry count (openraft retries with fewer entries) instead of being sent to a
    /// listener that would close the connection. InstallSnapshot chunks are openraft's
    /// `snapshot_max_chunk_size` and must fit under it.
    pub fn with_max_request_bytes(mut self, max: usize) -> Network {
        self.max_request_bytes = max;
        self
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            node: node.clone(),
            digest: self.digest,
            max_body: self
                .max_request_bytes
                .saturating_sub(HEADER_BYTES + self.client_id.len()),
            rpc: RpcClient::new(node.addr.clone(), self.client_id.clone())
                .with_connector(self.connector.clone()),
            contacts: self.contacts.clone(),
        }
    }
}

/// openraft's client of one target (connects on its first RPC).
#[derive(Debug)]
pub struct PeerClient {
    target: u64,
    node: BasicNode,
    digest: u64,
    /// The largest request body that fits the peer's frame limit.
    max_body: usize,
    rpc: RpcClient,
    contacts: Arc<Contacts>,
}

impl PeerClient {
    /// Sends one request body and decodes the reply; `sender`: this node (for a timeout's
    /// report), from the request's vote.
    async fn send<T, E>(
        &self,
        action: RPCTypes,
        sender: Option<u64>,
        api_key: i16,
        body: &[u8],
        option: &RPCOption,
    ) -> Result<T, RPCError<u64, BasicNode, E>>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let ttl = option.hard_ttl();
        let answer: Bytes = match self.rpc.call(api_key, 0, body, ttl).await {
            Ok(answer) => answer,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(RPCError::Timeout(Timeout {
                    action,
                    id: sender.unwrap_or_default(),
                    target: self.target,
                    timeout: ttl,
                }))
            }
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&e))),
        };
        let reply: Reply<T, E> = serde_json::from_slice(&answer).map_err(|e| {
            let e = io::Error::new(
                io::ErrorKind::InvalidData,
                format!("undecodable {action} reply from node {}: {e}", self.target),
            );
            RPCError::Unreachable(Unreachable::new(&e))
        })?;
        match reply {
            Reply::Ok(response) => Ok(response),
            Reply::RaftError(e) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))),
            Reply::DigestMismatch { server, client } => {
                let message = format!(
                    "node {} at {} refused {action}: its controller quorum voters digest is \
                     {server:016x}, ours is {client:016x}; every voter must be configured with \
                     the same controller_quorum_voters",
                    self.target, self.node.addr
                );
                if CLIENT_MISMATCH_LOG.allow(MISMATCH_LOG_EVERY) {
                    tracing::error!(target_node = self.target, addr = %self.node.addr,
                        server_digest = %format!("{server:016x}"), our_digest = %format!("{client:016x}"),
                        "{message}");
                }
                Err(RPCError::Unreachable(Unreachable::new(&io::Error::other(
                    message,
                ))))
            }
            Reply::Error(text) => Err(RPCError::Unreachable(Unreachable::new(&io::Error::other(
                format!("node {} could not handle {action}: {text}", self.target),
            )))),
        }
    }

    fn encode<T: Serialize>(&self, rpc: T) -> Result<Vec<u8>, NetworkError> {
        serde_json::to_vec(&Envelope {
            digest: self.digest,
            rpc,
        })
        .map_err(|e| NetworkError::new(&e))
    }
}

fn sender(vote: &Vote) -> Option<u64> {
    vote.leader_id().voted_for()
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let from = sender(&rpc.vote);
        let entries = rpc.entries.len();
        let term = rpc.vote.leader_id().term;
        let upto = rpc
            .entries
            .last()
            .map(|e| e.log_id.index)
            .or(rpc.prev_log_id.map(|l| l.index));
        let body = self.encode(rpc).map_err(RPCError::Network)?;
        if body.len() > self.max_body {
            if entries > 1 {
                let fit = (entries as u128 * self.max_body as u128 / body.len() as u128) as u64;
                let hint = fit.clamp(1, entries as u64 - 1);
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(hint),
                ));
            }
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "an AppendEntries of one entry to node {} is {} bytes, over the frame \
                     limit ({} bytes of body)",
                    self.target,
                    body.len(),
                    self.max_body
                ),
            );
            if OVERSIZE_LOG.allow(MISMATCH_LOG_EVERY) {
                tracing::error!(error = %e, "cannot replicate an entry");
            }
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        let answer = self
            .send(
                RPCTypes::AppendEntries,
                from,
                rpc::APPEND_ENTRIES,
                &body,
                &option,
            )
            .await;
        match &answer {
            Ok(AppendEntriesResponse::Success) => self.contacts.answered(self.target, term, upto),
            Ok(AppendEntriesResponse::PartialSuccess(matched)) => {
                self.contacts
                    .answered(self.target, term, matched.map(|l| l.index))
            }
            _ => {}
        }
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let from = sender(&rpc.vote);
        let body = encode_snapshot_request(self.digest, rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(
            RPCTypes::InstallSnapshot,
            from,
            rpc::INSTALL_SNAPSHOT,
            &body,
            &option,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let from = sender(&rpc.vote);
        let body = self.encode(rpc).map_err(RPCError::Network)?;
        self.send(RPCTypes::Vote, from, rpc::VOTE, &body, &option)
            .await
    }

    /// 50 ms doubling to 1 s (openraft's default is a flat 500 ms), reset by openraft after a
    /// successful RPC.
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::successors(
            Some(Duration::from_millis(50)),
            |d| Some(d.saturating_mul(2).min(Duration::from_secs(1))),
        ))
    }
}

#[cfg(test)]
mod tests {
    /// DescribeQuorum's follower times: every answered AppendEntries is a fetch; only one that
    /// reached the leader's last entry is a catch-up; a new term starts afresh.
    #[test]
    fn contacts_record_fetches_and_catch_ups_per_term() {
        let contacts = Contacts::default();
        let mut m = openraft::RaftMetrics::new_initial(1);
        m.last_log_index = Some(10);
        let (tx, rx) = watch::channel(m.clone());
        contacts.watch(rx);
        assert_eq!(contacts.get(2, 3), None);
        contacts.answered(2, 3, Some(10));
        let c = contacts.get(2, 3).expect("contact");
        assert!(
            c.last_fetch_ms > 0 && c.last_caught_up_ms == c.last_fetch_ms,
            "{c:?}"
        );
        m.last_log_index = Some(12);
        tx.send(m).expect("watched");
        std::thread::sleep(Duration::from_millis(5));
        contacts.answered(2, 3, Some(11));
        let behind = contacts.get(2, 3).expect("contact");
        assert!(behind.last_fetch_ms > c.last_fetch_ms, "{behind:?}");
        assert_eq!(
            behind.last_caught_up_ms, c.last_caught_up_ms,
            "not at the leader's end"
        );
        assert_eq!(contacts.get(2, 4), None, "another term");
        contacts.answered(2, 4, Some(5));
        let next = contacts.get(2, 4).expect("contact");
        assert_eq!(next.last_caught_up_ms, -1, "a new term has no catch-up yet");
        assert_eq!(contacts.get(2, 3), None);
    }

    use openraft::{CommittedLeaderId, EntryPayload, LogId, SnapshotMeta, StoredMembership};

    use super::*;
    use crate::meta::{Entry, MetaBatch, MetaRecord};

    #[test]
    fn the_voters_digest_is_stable_and_ignores_order() {
        let a = vec![(1, "h1:9093".to_string()), (2, "h2:9093".to_string())];
        let b = vec![(2, "h2:9093".to_string()), (1, "h1:9093".to_string())];
        assert_eq!(voters_digest(&a), voters_digest(&b));
        assert_ne!(voters_digest(&a), voters_digest(&a[..1]));
        assert_ne!(
            voters_digest(&a),
            voters_digest(&[(1, "h1:9093".into()), (2, "h2:9094".into())])
        );
        assert_ne!(
            voters_digest(&a),
            voters_digest(&[(1, "h2:9093".into()), (2, "h1:9093".into())])
        );
        // Pinned (FNV-1a of "1@h1:9093\n2@h2:9093\n"): every version of ottla must compute
        // the same digest for the same voters.
        assert_eq!(voters_digest(&a), 0x0bbd_0b1d_355b_481f);
    }

    #[test]
    fn snapshot_chunks_carry_their_bytes_raw() {
        let request = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 42)),
                last_membership: StoredMembership::default(),
                snapshot_id: "s-42".into(),
            },
            offset: 1024,
            data: (0..=255u8).cycle().take(5000).collect(),
            done: false,
        };
        let body = encode_snapshot_request(77, request.clone()).unwrap();
        assert!(
            body.len() < 5000 + 1000,
            "data spelled out: {} bytes",
            body.len()
        );
        let decoded = decode_snapshot_request(&body).unwrap();
        assert_eq!(decoded.digest, 77);
        assert_eq!(decoded.rpc, request);
        for cut in [0, 3, 10] {
            assert!(decode_snapshot_request(&body[..cut]).is_err());
        }
    }

    fn entries(n: u64, records: usize) -> Vec<Entry> {
        (1..=n)
            .map(|i| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
                payload: EntryPayload::Normal(MetaBatch {
                    records: (0..records)
                        .map(|r| MetaRecord::ClusterId {
                            id: format!("{i}-{r}"),
                        })
                        .collect(),
                }),
            })
            .collect()
    }

    #[tokio::test]
    async fn an_append_over_the_frame_limit_asks_openraft_for_fewer_entries() {
        let mut network = Network::new(1, "n".into()).with_max_request_bytes(4096);
        // Nothing listens there: an RPC actually sent would fail as unreachable.
        let node = BasicNode::new("127.0.0.1:1");
        let mut client = network.new_client(2, &node).await;
        let request = |entries| AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries,
            leader_commit: None,
        };
        let option = RPCOption::new(Duration::from_millis(100));
        match client
            .append_entries(request(entries(20, 10)), option.clone())
            .await
        {
            Err(RPCError::PayloadTooLarge(p)) => {
                assert!((1..20).contains(&p.entries_hint()), "{p}")
            }
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
        match client
            .append_entries(request(entries(1, 500)), option.clone())
            .await
        {
            Err(RPCError::Unreachable(u)) => assert!(u.to_string().contains("frame limit"), "{u}"),
            other => panic!("expected Unreachable, got {other:?}"),
        }
        match client.append_entries(request(entries(1, 1)), option).await {
            Err(RPCError::Unreachable(u)) => assert!(u.to_string().contains("connect"), "{u}"),
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
}
