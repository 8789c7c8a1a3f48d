//! Kafka wire protocol: request header decoding, version checks against the one version table,
//! routing by ApiKey to the handlers, and response encoding. Anything that cannot be decoded
//! ends the connection with a logged reason, never a panic.

pub mod fetch_frame;
pub mod legacy;
pub mod versions;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tracing::Instrument;

use crate::broker::Broker;
use crate::config::SecurityProtocol;
use crate::groups::ClientInfo;
use crate::handlers;
use crate::log::Records;
use crate::security::acl::AclOperation;
use crate::security::session::{Authentication, Gate};

/// What the connection should do with a request frame.
#[derive(Debug)]
pub enum Outcome {
    /// Write this size-prefixed response.
    Respond(Response),
    /// Write this response, then close the connection (a failed authentication; the reason
    /// has been logged).
    RespondAndClose(Response),
    /// Send nothing (acks=0 produce).
    NoResponse,
    /// Close the connection; the reason has been logged.
    Close,
}

/// A size-prefixed response frame, in parts written one after the other: encoded bytes, and
/// the record data of fetches, which on disk stays in the segment files until the connection
/// writer sends it (`sendfile`).
#[derive(Debug)]
pub struct Response {
    pub parts: Vec<Records>,
}

impl Response {
    fn whole(frame: Bytes) -> Response {
        Response {
            parts: vec![Records::Bytes(frame)],
        }
    }

    /// Bytes in the frame, size prefix included.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Records::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole frame in memory (file parts read): for tests and benchmarks.
    pub fn to_bytes(&self) -> std::io::Result<Bytes> {
        fetch_frame::bytes_of(&self.parts)
    }
}

/// Identifies a request in logs.
struct Meta<'a> {
    api_key: i16,
    version: i16,
    correlation_id: i32,
    client_id: Option<&'a str>,
}

/// Who is at the other end of a connection, as the handlers and logs need it.
pub struct Session {
    /// `IP:PORT` of the client.
    pub peer: String,
    /// The listener's protocol (Metadata answers with the brokers' endpoints of it).
    pub listener: SecurityProtocol,
    pub auth: Authentication,
}

impl Session {
    /// A connection of a PLAINTEXT listener.
    pub fn plaintext(peer: &str) -> Session {
        Session {
            peer: peer.to_string(),
            listener: SecurityProtocol::Plaintext,
            auth: Authentication::open(crate::security::session::ANONYMOUS.to_string()),
        }
    }
}

/// Handles one request frame (without its 4-byte length prefix) of a PLAINTEXT connection.
pub async fn handle_frame(broker: &Arc<Broker>, frame: Bytes, peer: &str) -> Outcome {
    handle(broker, frame, &mut Session::plaintext(peer)).await
}

/// Handles one request frame (without its 4-byte length prefix) of the session's connection.
pub async fn handle(broker: &Arc<Broker>, frame: Bytes, session: &mut Session) -> Outcome {
    let gate = session.auth.gate(std::time::Instant::now());
    if gate == Gate::RawToken {
        // After SaslHandshake v0 the client's SASL tokens come bare.
        return handlers::sasl_authenticate::raw(broker, frame, session).await;
    }
    let peer = session.peer.clone();
    let peer = peer.as_str();
    if frame.len() < 8 {
        tracing::warn!(%peer, len = frame.len(), "closing connection: request shorter than a header");
        return Outcome::Close;
    }
    let api_key_raw = (&frame[0..2]).get_i16();
    let version = (&frame[2..4]).get_i16();
    let correlation_id = (&frame[4..8]).get_i32();
    let Ok(api_key) = ApiKey::try_from(api_key_raw) else {
        tracing::warn!(%peer, api_key = api_key_raw, version, correlation_id, "closing connection: unknown API key");
        return Outcome::Close;
    };
    let Some((min, max)) = versions::supported_range(api_key) else {
        tracing::warn!(%peer, ?api_key, version, correlation_id, "closing connection: API not supported");
        return Outcome::Close;
    };
    if api_key == ApiKey::ApiVersions && version > max {
        // KIP-511: answer in the v0 layout so the client can read it and retry lower.
        let body = handlers::api_versions::unsupported_version();
        return encode(correlation_id, 0, &ResponseKind::ApiVersions(body), 0);
    }
    if version < min || version > max {
        tracing::warn!(%peer, ?api_key, version, correlation_id, supported = %format!("{min}-{max}"),
            "closing connection: unsupported API version");
        return Outcome::Close;
    }
    let allowed = match gate {
        Gate::Open => true,
        Gate::Handshake => matches!(api_key, ApiKey::ApiVersions | ApiKey::SaslHandshake),
        Gate::Authenticate => api_key == ApiKey::SaslAuthenticate,
        Gate::Expired => api_key == ApiKey::SaslHandshake,
        Gate::RawToken => false,
    };
    if !allowed {
        // Kafka's SaslServerAuthenticator: an unexpected request during authentication ends
        // the connection (IllegalSaslStateException), as does one after the session expired.
        tracing::warn!(%peer, ?api_key, version, correlation_id, state = ?gate,
            "closing connection: request not allowed before authentication completes");
        return Outcome::Close;
    }
    let (header, buf) = match guarded(|| decode_header(&frame)) {
        Ok((_, header, body)) => (header, body),
        Err(e) => {
            tracing::warn!(%peer, ?api_key, version, correlation_id, error = %e, "closing connection: bad request header");
            return Outcome::Close;
        }
    };
    let meta = Meta {
        api_key: api_key_raw,
        version,
        correlation_id,
        client_id: header.client_id.as_ref().map(|c| c.as_str()),
    };
    if api_key == ApiKey::Produce && version < versions::PRODUCE_MIN_DECODABLE {
        return match legacy::refuse_old_produce(buf, version, correlation_id) {
            Ok(Some(frame)) => Outcome::Respond(Response::whole(frame)),
            Ok(None) => Outcome::NoResponse,
            Err(e) => close_undecodable(&meta, peer, &e),
        };
    }
    let request = match guarded(|| decode_body(api_key, version, buf)) {
        Ok(r) => r,
        Err(e) => return close_undecodable(&meta, peer, &e),
    };
    let span = tracing::debug_span!(
        "request",
        ?api_key,
        version,
        correlation_id,
        client_id = meta.client_id
    );
    // The span covers the handler's awaits too (`instrument`, never a guard held across
    // an `.await`, which would mark the wrong task's events while this one is parked).
    async move {
        if let RequestKind::Fetch(r) = &request {
            let caller = handlers::Caller::new(broker, session.auth.principal(), peer);
            let answer =
                handlers::fetch::handle(broker, r, version, session.listener, &caller).await;
            return match fetch_frame::encode(correlation_id, version, answer) {
                Ok(frame) => Outcome::Respond(frame),
                Err(e) => {
                    tracing::error!(correlation_id, version, error = %e, "closing connection: could not encode fetch response");
                    Outcome::Close
                }
            };
        }
        let response = match request {
            RequestKind::SaslHandshake(r) => {
                let (answer, close) = handlers::sasl_handshake::handle(broker, &r, version, session);
                let answer = ResponseKind::SaslHandshake(answer);
                return respond(correlation_id, api_key, version, answer, close);
            }
            RequestKind::SaslAuthenticate(r) => {
                let (answer, close) =
                    handlers::sasl_authenticate::handle(broker, r, version, session).await;
                let answer = ResponseKind::SaslAuthenticate(answer);
                return respond(correlation_id, api_key, version, answer, close);
            }
            request => match dispatch(broker, request, version, &meta, session).await {
                Ok(Some(r)) => r,
                Ok(None) => return Outcome::NoResponse,
                Err(Closed) => return Outcome::Close,
            },
        };
        encode(
            correlation_id,
            api_key.response_header_version(version),
            &response,
            version,
        )
    }
    .instrument(span)
    .await
}

/// Encodes an authentication answer, closing the connection after it when it failed.
fn respond(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: ResponseKind,
    close: bool,
) -> Outcome {
    match encode(
        correlation_id,
        api_key.response_header_version(version),
        &body,
        version,
    ) {
        Outcome::Respond(r) if close => Outcome::RespondAndClose(r),
        other => other,
    }
}

fn close_undecodable(meta: &Meta<'_>, peer: &str, error: &anyhow::Error) -> Outcome {
    tracing::warn!(%peer, api_key = meta.api_key, version = meta.version, correlation_id = meta.correlation_id,
        client_id = meta.client_id, error = %error, "closing connection: undecodable request");
    Outcome::Close
}

/// Who sent a request, as group descriptions show it (built only for the APIs that need it).
fn client_info(meta: &Meta<'_>, peer: &str) -> ClientInfo {
    ClientInfo {
        client_id: meta.client_id.unwrap_or_default().to_string(),
        client_host: format!(
            "/{}",
            peer.rsplit_once(':')
                .map_or(peer, |(host, _)| host)
                .trim_matches(|c| c == '[' || c == ']')
        ),
    }
}

/// Runs a decoder, turning a panic inside it into an error (defence in depth: the decoder
/// reports malformed input as errors, but a client must never be able to kill a worker).
/// Decodes the request header at the start of `frame` (a request without its size prefix) as
/// the server does: its header version from the API key and version of its first four bytes,
/// which must be served ([`versions::supported_range`]). Returns the API key, the header and
/// the body after it. Errors for anything malformed; catches no panic (the server runs it
/// under `guarded`, the fuzz targets without, so that a panic is found).
pub fn decode_header(frame: &Bytes) -> anyhow::Result<(ApiKey, RequestHeader, Bytes)> {
    if frame.len() < 8 {
        anyhow::bail!("request shorter than a header ({} bytes)", frame.len());
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(api_key_raw)
        .map_err(|()| anyhow::anyhow!("unknown API key {api_key_raw}"))?;
    match versions::supported_range(api_key) {
        Some((min, max)) if (min..=max).contains(&version) => {}
        _ => anyhow::bail!("{api_key:?} v{version} is not served"),
    }
    let mut buf = frame.clone();
    let header = RequestHeader::decode(&mut buf, api_key.request_header_version(version))?;
    Ok((api_key, header, buf))
}

/// Decodes a request body (after its header) of a served API version as the server does,
/// Produce v0-2 excepted (see [`legacy`]). Catches no panic (see [`decode_header`]).
pub fn decode_body(api_key: ApiKey, version: i16, mut body: Bytes) -> anyhow::Result<RequestKind> {
    RequestKind::decode(api_key, &mut body, version)
}

fn guarded<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("decoder panicked on malformed input")))
}

/// Runs a handler that may block (file create/delete, directory walks, fsync: topic creation
/// and deletion, config and coordinator writes) on the blocking pool, per the threading rule.
/// [`Closed`] if the handler panicked (logged): the connection is then closed.
async fn blocking<T: Send + 'static>(
    broker: &Arc<Broker>,
    handler: impl FnOnce(&Broker) -> T + Send + 'static,
) -> Result<T, Closed> {
    let b = broker.clone();
    crate::threads::spawn_blocking(move || handler(&b))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "closing connection: a handler failed");
            Closed
        })
}

/// The request cannot be answered: the connection is closed.
struct Closed;

async fn dispatch(
    broker: &Arc<Broker>,
    request: RequestKind,
    version: i16,
    meta: &Meta<'_>,
    session: &Session,
) -> Result<Option<ResponseKind>, Closed> {
    use crate::handlers::*;
    let peer = session.peer.as_str();
    let listener = session.listener;
    let caller = Caller::new(broker, session.auth.principal(), peer);
    if caller.enforcing() && !authorized_here(&request) {
        // Not yet checked per resource: only super users may send it.
        if !caller.allowed_on_cluster(AclOperation::All) {
            tracing::warn!(%peer, principal = %caller.principal, api = ?meta.api_key,
                "closing connection: with authorizer = \"acl\" this API is served only to super users and principals allowed ALL on the cluster (its ACL checks are not built yet)");
            return Err(Closed);
        }
    }
    Ok(Some(match request {
        RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(api_versions::handle(&r, version)),
        RequestKind::Metadata(r) if metadata::may_create_topics(broker, &r, version) => {
            ResponseKind::Metadata(
                blocking(broker, move |b| {
                    metadata::handle(b, &r, version, listener, &caller)
                })
                .await?,
            )
        }
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::handle(broker, &r, version, listener, &caller))
        }
        RequestKind::Produce(r) => match produce::handle(broker, &r, listener, &caller).await {
            Some(answer) => ResponseKind::Produce(answer),
            None => return Ok(None), // acks=0
        },
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(broker, r, version, &caller).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(broker, &r))
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(create_topics::handle(broker, r, version).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(delete_topics::handle(broker, &r, version).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(create_partitions::handle(broker, r).await)
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(broker, &r, listener))
        }
        RequestKind::DescribeQuorum(r) => {
            ResponseKind::DescribeQuorum(describe_quorum::handle(broker, &r, version).await)
        }
        RequestKind::DescribeTopicPartitions(r) => {
            ResponseKind::DescribeTopicPartitions(describe_topic_partitions::handle(broker, &r))
        }
        RequestKind::FindCoordinator(r) => ResponseKind::FindCoordinator(find_coordinator::handle(
            broker, &r, version, listener, &caller,
        )),
        RequestKind::JoinGroup(r) => {
            let client = client_info(meta, peer);
            ResponseKind::JoinGroup(join_group::handle(broker, &r, version, &client, &caller).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(sync_group::handle(broker, &r, version, &caller).await)
        }
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(heartbeat::handle(broker, &r, &caller))
        }
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(
            blocking(broker, move |b| {
                leave_group::handle(b, &r, version, &caller)
            })
            .await?,
        ),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offset_commit::handle(broker, &r, &caller).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(offset_fetch::handle(broker, &r, version, &caller))
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(list_groups::handle(broker, &r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups::handle(broker, &r, version))
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(delete_groups::handle(broker, &r).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(offset_delete::handle(broker, &r).await)
        }
        RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(
            init_producer_id::handle(broker, &r, version, &caller).await,
        ),
        RequestKind::AddPartitionsToTxn(r) => ResponseKind::AddPartitionsToTxn(
            blocking(broker, move |b| {
                add_partitions_to_txn::handle(b, &r, version, &caller)
            })
            .await?,
        ),
        RequestKind::AddOffsetsToTxn(r) => ResponseKind::AddOffsetsToTxn(
            blocking(broker, move |b| {
                add_offsets_to_txn::handle(b, &r, version, &caller)
            })
            .await?,
        ),
        RequestKind::EndTxn(r) => {
            ResponseKind::EndTxn(end_txn::handle(broker, &r, version, &caller).await)
        }
        RequestKind::TxnOffsetCommit(r) => ResponseKind::TxnOffsetCommit(
            txn_offset_commit::handle(broker, &r, version, &caller).await,
        ),
        RequestKind::WriteTxnMarkers(r) => ResponseKind::WriteTxnMarkers(
            blocking(broker, move |b| write_txn_markers::handle(b, &r)).await?,
        ),
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(describe_transactions::handle(broker, &r))
        }
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(list_transactions::handle(broker, &r))
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(broker, &r, version))
        }
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(
            blocking(broker, move |b| alter_configs::handle(b, &r)).await?,
        ),
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            blocking(broker, move |b| incremental_alter_configs::handle(b, &r)).await?,
        ),
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(delete_records::handle(broker, &r).await)
        }
        RequestKind::AlterPartitionReassignments(r) => ResponseKind::AlterPartitionReassignments(
            alter_partition_reassignments::handle(broker, &r, version).await,
        ),
        RequestKind::ListPartitionReassignments(r) => ResponseKind::ListPartitionReassignments(
            list_partition_reassignments::handle(broker, &r),
        ),
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(elect_leaders::handle(broker, &r, version).await)
        }
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(describe_log_dirs::handle(broker, &r).await)
        }
        RequestKind::AlterUserScramCredentials(r) => ResponseKind::AlterUserScramCredentials(
            alter_user_scram_credentials::handle(broker, &r, &caller).await,
        ),
        RequestKind::DescribeUserScramCredentials(r) => ResponseKind::DescribeUserScramCredentials(
            describe_user_scram_credentials::handle(broker, &r, &caller),
        ),
        RequestKind::CreateAcls(r) => {
            ResponseKind::CreateAcls(create_acls::handle(broker, &r, &caller).await)
        }
        RequestKind::DescribeAcls(r) => {
            ResponseKind::DescribeAcls(describe_acls::handle(broker, &r, &caller))
        }
        RequestKind::DeleteAcls(r) => {
            ResponseKind::DeleteAcls(delete_acls::handle(broker, &r, &caller).await)
        }
        other => {
            // Unreachable while the version table and this match agree (a test checks it).
            tracing::error!(request = ?std::mem::discriminant(&other), "closing connection: no handler for a supported API");
            return Err(Closed);
        }
    }))
}

/// Whether the request's handler checks the caller's ACLs itself (with `authorizer = "acl"`
/// the others are served to super users only until their checks exist).
fn authorized_here(request: &RequestKind) -> bool {
    matches!(
        request,
        RequestKind::ApiVersions(_)
            | RequestKind::Metadata(_)
            | RequestKind::Produce(_)
            | RequestKind::Fetch(_)
            | RequestKind::ListOffsets(_)
            | RequestKind::FindCoordinator(_)
            | RequestKind::JoinGroup(_)
            | RequestKind::SyncGroup(_)
            | RequestKind::Heartbeat(_)
            | RequestKind::LeaveGroup(_)
            | RequestKind::OffsetCommit(_)
            | RequestKind::OffsetFetch(_)
            | RequestKind::InitProducerId(_)
            | RequestKind::AddPartitionsToTxn(_)
            | RequestKind::AddOffsetsToTxn(_)
            | RequestKind::EndTxn(_)
            | RequestKind::TxnOffsetCommit(_)
            | RequestKind::CreateAcls(_)
            | RequestKind::DescribeAcls(_)
            | RequestKind::DeleteAcls(_)
            | RequestKind::AlterUserScramCredentials(_)
            | RequestKind::DescribeUserScramCredentials(_)
    )
}

/// Encodes a size-prefixed response frame.
fn encode(correlation_id: i32, header_version: i16, body: &ResponseKind, version: i16) -> Outcome {
    let mut out = BytesMut::with_capacity(64);
    out.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let result = header
        .encode(&mut out, header_version)
        .and_then(|()| body.encode(&mut out, version));
    match result {
        Ok(()) => {
            let len = (out.len() - 4) as i32;
            out[0..4].copy_from_slice(&len.to_be_bytes());
            Outcome::Respond(Response::whole(out.freeze()))
        }
        Err(e) => {
            tracing::error!(correlation_id, version, error = %e, "closing connection: could not encode response");
            Outcome::Close
        }
    }
}
