//! The controller listener's raft side: decodes openraft's RPCs as `meta::network` sends
//! them (see its wire format), refuses those from a node configured with other voters, hands
//! the rest to the local [`Raft`] and encodes its answer.

use bytes::Bytes;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::network::{decode_snapshot_request, Envelope, LogLimit, Reply, MISMATCH_LOG_EVERY};
use super::rpc;
use super::{Raft, TypeConfig};

static SERVER_MISMATCH_LOG: LogLimit = LogLimit::new();

/// Answers one raft RPC (`api_key` one of [`rpc::VOTE`], [`rpc::APPEND_ENTRIES`],
/// [`rpc::INSTALL_SNAPSHOT`]; `body` after the request header) with the response body.
/// A request whose digest is not `digest` (this node's [`super::network::voters_digest`]) is
/// refused with a `digest_mismatch` reply and an error log (at most one per 5 s). `None`
/// (logged) when the body does not decode or the key is not a raft RPC: the connection is
/// then closed.
pub async fn handle_raft_rpc(raft: &Raft, digest: u64, api_key: i16, body: Bytes) -> Option<Bytes> {
    match api_key {
        rpc::VOTE => {
            let request: Envelope<VoteRequest<u64>> = decode(api_key, &body)?;
            if request.digest != digest {
                return refuse(digest, request.digest, "Vote");
            }
            encode(raft.vote(request.rpc).await)
        }
        rpc::APPEND_ENTRIES => {
            let request: Envelope<AppendEntriesRequest<TypeConfig>> = decode(api_key, &body)?;
            if request.digest != digest {
                return refuse(digest, request.digest, "AppendEntries");
            }
            encode(raft.append_entries(request.rpc).await)
        }
        rpc::INSTALL_SNAPSHOT => {
            let request = match decode_snapshot_request(&body) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(api_key, error = %e, "undecodable InstallSnapshot request; closing connection");
                    return None;
                }
            };
            if request.digest != digest {
                return refuse(digest, request.digest, "InstallSnapshot");
            }
            encode(raft.install_snapshot(request.rpc).await)
        }
        _ => {
            tracing::warn!(
                api_key,
                "not a raft RPC on the raft service; closing connection"
            );
            None
        }
    }
}

fn decode<T: DeserializeOwned>(api_key: i16, body: &[u8]) -> Option<T> {
    match serde_json::from_slice(body) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(api_key, error = %e, "undecodable raft request; closing connection");
            None
        }
    }
}

fn refuse(ours: u64, theirs: u64, rpc: &str) -> Option<Bytes> {
    if SERVER_MISMATCH_LOG.allow(MISMATCH_LOG_EVERY) {
        tracing::error!(
            our_digest = %format!("{ours:016x}"),
            peer_digest = %format!("{theirs:016x}"),
            "refusing a raft {rpc} from a node whose controller quorum voters digest is \
             {theirs:016x} (ours: {ours:016x}): every voter must be configured with the same \
             controller_quorum_voters"
        );
    }
    let reply: Reply<(), ()> = Reply::DigestMismatch {
        server: ours,
        client: theirs,
    };
    to_bytes(&reply)
}

fn encode<T: Serialize, E: Serialize>(result: Result<T, E>) -> Option<Bytes> {
    let reply = match result {
        Ok(t) => Reply::Ok(t),
        Err(e) => Reply::RaftError(e),
    };
    to_bytes(&reply)
}

fn to_bytes<T: Serialize, E: Serialize>(reply: &Reply<T, E>) -> Option<Bytes> {
    match serde_json::to_vec(reply) {
        Ok(v) => Some(Bytes::from(v)),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a raft reply; closing connection");
            None
        }
    }
}
