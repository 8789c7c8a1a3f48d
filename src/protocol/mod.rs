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
    /// The connection's client quota bounds and the throttle its last request earned.
    pub quota: crate::quota::SessionQuotas,
}

impl Session {
    /// A connection of a PLAINTEXT listener.
    pub fn plaintext(peer: &str) -> Session {
        Session {
            peer: peer.to_string(),
            listener: SecurityProtocol::Plaintext,
            auth: Authentication::open(crate::security::session::ANONYMOUS.to_string()),
            quota: Default::default(),
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
    // Client quotas (None unless some are configured: one atomic load).
    let bounds = broker.quotas.bounds(
        &mut session.quota,
        crate::quota::quota_user(session.auth.principal()),
        meta.client_id.unwrap_or_default(),
    );
    let request_size = frame.len();
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
            if let Some(bounds) = bounds {
                let r = r.clone();
                return throttled_fetch(broker, r, version, session, &caller, bounds, correlation_id)
                    .await;
            }
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
            request => match bounds {
                None => match dispatch(broker, request, version, &meta, session).await {
                    Ok(Some(r)) => r,
                    Ok(None) => return Outcome::NoResponse,
                    Err(Closed) => return Outcome::Close,
                },
                Some(bounds) => {
                    let (answer, throttle) =
                        throttled_dispatch(broker, request, version, &meta, session, &bounds, request_size)
                            .await;
                    session.quota.throttle_ms = throttle;
                    match answer {
                        Ok(Some(mut r)) => {
                            if throttle > 0 {
                                // Versions older than the field's (KIP-219) leave it out; the
                                // connection's pause throttles those clients just the same.
                                set_throttle(&mut r, i32::try_from(throttle).unwrap_or(i32::MAX));
                            }
                            r
                        }
                        Ok(None) => return Outcome::NoResponse,
                        Err(Closed) => return Outcome::Close,
                    }
                }
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
        RequestKind::Produce(r) => {
            match produce::handle(broker, &r, version, listener, &caller).await {
                Some(answer) => ResponseKind::Produce(answer),
                None => return Ok(None), // acks=0
            }
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(broker, r, version, &caller).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(broker, &r, &caller))
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(create_topics::handle(broker, r, version, &caller).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(delete_topics::handle(broker, &r, version, &caller).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(create_partitions::handle(broker, r, &caller).await)
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(broker, &r, listener, &caller))
        }
        RequestKind::DescribeQuorum(r) => ResponseKind::DescribeQuorum(
            describe_quorum::handle(broker, &r, version, &caller).await,
        ),
        RequestKind::DescribeTopicPartitions(r) => ResponseKind::DescribeTopicPartitions(
            describe_topic_partitions::handle(broker, &r, &caller),
        ),
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
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(list_groups::handle(broker, &r, &caller))
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups::handle(broker, &r, version, &caller))
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(delete_groups::handle(broker, &r, &caller).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(offset_delete::handle(broker, &r, &caller).await)
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
            blocking(broker, move |b| write_txn_markers::handle(b, &r, &caller)).await?,
        ),
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(describe_transactions::handle(broker, &r, &caller))
        }
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(describe_producers::handle(broker, &r, &caller))
        }
        RequestKind::ListConfigResources(r) => ResponseKind::ListConfigResources(
            list_config_resources::handle(broker, &r, version, &caller),
        ),
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(list_transactions::handle(broker, &r, &caller))
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(broker, &r, version, &caller))
        }
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(
            blocking(broker, move |b| alter_configs::handle(b, &r, &caller)).await?,
        ),
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            blocking(broker, move |b| {
                incremental_alter_configs::handle(b, &r, &caller)
            })
            .await?,
        ),
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(delete_records::handle(broker, &r, &caller).await)
        }
        RequestKind::AlterPartitionReassignments(r) => ResponseKind::AlterPartitionReassignments(
            alter_partition_reassignments::handle(broker, &r, version, &caller).await,
        ),
        RequestKind::ListPartitionReassignments(r) => ResponseKind::ListPartitionReassignments(
            list_partition_reassignments::handle(broker, &r, &caller),
        ),
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(elect_leaders::handle(broker, &r, version, &caller).await)
        }
        RequestKind::AlterReplicaLogDirs(r) => {
            ResponseKind::AlterReplicaLogDirs(alter_replica_log_dirs::handle(broker, &r, &caller))
        }
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(describe_log_dirs::handle(broker, &r, &caller).await)
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
        RequestKind::DescribeClientQuotas(r) => {
            ResponseKind::DescribeClientQuotas(describe_client_quotas::handle(broker, &r, &caller))
        }
        RequestKind::AlterClientQuotas(r) => {
            ResponseKind::AlterClientQuotas(alter_client_quotas::handle(broker, &r, &caller).await)
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

/// A consumer's fetch under client quotas (Kafka's `handleFetchRequest`): the response is
/// capped at what the fetch quota allows in one window, its size counts toward
/// `consumer_byte_rate` and the handler's time toward `request_percentage`; when either
/// throttles, the answer carries no records (the bytes are taken back from the sensor) and
/// the throttle time. A follower's fetch is exempt.
async fn throttled_fetch(
    broker: &Arc<Broker>,
    mut r: kafka_protocol::messages::FetchRequest,
    version: i16,
    session: &mut Session,
    caller: &handlers::Caller,
    bounds: crate::quota::Bounds,
    correlation_id: i32,
) -> Outcome {
    use crate::quota::Kind;
    let replica = if version >= 15 {
        r.replica_state.replica_id.0
    } else {
        r.replica_id.0
    };
    let quotas = &broker.quotas;
    let (fetch_bound, request_bound) = if replica >= 0 {
        (None, None)
    } else {
        (bounds.get(Kind::Fetch), bounds.get(Kind::Request))
    };
    if let Some(b) = fetch_bound {
        let cap = quotas.max_in_window(b).clamp(1.0, i32::MAX as f64) as i32;
        r.max_bytes = r.max_bytes.min(cap);
        r.min_bytes = r.min_bytes.min(r.max_bytes);
    }
    let mut timed = crate::quota::Timed::new(Box::pin(handlers::fetch::prepare(
        broker,
        &r,
        version,
        session.listener,
        caller,
    )));
    let prepared = (&mut timed).await;
    // Kafka sizes the answer it would send (an incremental one filtered by its session)
    // without the session taking it yet: a throttled answer leaves the session as it was.
    let size = match fetch_frame::encode(correlation_id, version, prepared.preview(broker)) {
        Ok(frame) => frame.len() as f64,
        Err(e) => {
            tracing::error!(correlation_id, version, error = %e, "closing connection: could not encode fetch response");
            return Outcome::Close;
        }
    };
    let request_throttle = request_bound.map_or(0, |b| {
        quotas
            .record(b, crate::quota::percentage(timed.spent()))
            .min(quotas.windows().window_ms)
    });
    let fetch_throttle = fetch_bound.map_or(0, |b| quotas.record(b, size));
    let throttle = request_throttle.max(fetch_throttle).max(0) as u64;
    session.quota.throttle_ms = throttle;
    let answer = if throttle == 0 {
        prepared.finish(broker)
    } else {
        if let Some(b) = fetch_bound {
            quotas.unrecord(b, size);
        }
        prepared.throttled(i32::try_from(throttle).unwrap_or(i32::MAX))
    };
    match fetch_frame::encode(correlation_id, version, answer) {
        Ok(frame) => Outcome::Respond(frame),
        Err(e) => {
            tracing::error!(correlation_id, version, error = %e, "closing connection: could not encode fetch response");
            Outcome::Close
        }
    }
}

/// A request under client quotas (Kafka's `sendResponseMaybeThrottle` and the produce
/// path): the handler's own time counts toward `request_percentage` (throttle bounded by one
/// quota window, as Kafka's `ClientRequestQuotaManager`; acks=0 produces are exempt), a
/// produce request's size toward `producer_byte_rate`, after the append. Answers the
/// response and the throttle time (ms, the larger of the two).
async fn throttled_dispatch(
    broker: &Arc<Broker>,
    request: RequestKind,
    version: i16,
    meta: &Meta<'_>,
    session: &Session,
    bounds: &crate::quota::Bounds,
    request_size: usize,
) -> (Result<Option<ResponseKind>, Closed>, u64) {
    use crate::quota::Kind;
    let quotas = &broker.quotas;
    let produce = matches!(request, RequestKind::Produce(_));
    let mut request = request;
    let (refused, mutation_throttle) = match bounds.get(Kind::Mutation) {
        Some(b) => take_mutations(broker, &mut request, version, b),
        None => (Refused::None, 0),
    };
    let request_bound = bounds.get(Kind::Request);
    let (answer, spent) = if request_bound.is_some() {
        let mut timed =
            crate::quota::Timed::new(Box::pin(dispatch(broker, request, version, meta, session)));
        let answer = (&mut timed).await;
        (answer, timed.spent())
    } else {
        (
            dispatch(broker, request, version, meta, session).await,
            std::time::Duration::ZERO,
        )
    };
    let mut answer = answer;
    if let Ok(Some(r)) = &mut answer {
        refused.merge(r);
    }
    let acks0 = produce && matches!(answer, Ok(None));
    let produce_throttle = match bounds.get(Kind::Produce) {
        Some(b) if produce => quotas.record(b, request_size as f64),
        _ => 0,
    };
    let request_throttle = match request_bound {
        Some(b) if !acks0 => quotas
            .record(b, crate::quota::percentage(spent))
            .min(quotas.windows().window_ms),
        _ => 0,
    };
    let throttle = produce_throttle
        .max(request_throttle)
        .max(mutation_throttle)
        .max(0) as u64;
    (answer, throttle)
}

/// Topics a controller mutation quota refused (THROTTLING_QUOTA_EXCEEDED), answered with
/// the ones the handler did.
enum Refused {
    None,
    Create(Vec<kafka_protocol::messages::create_topics_response::CreatableTopicResult>),
    Delete(Vec<kafka_protocol::messages::delete_topics_response::DeletableTopicResult>),
    Partitions(
        Vec<kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult>,
    ),
}

impl Refused {
    fn merge(self, response: &mut ResponseKind) {
        match (self, response) {
            (Refused::Create(t), ResponseKind::CreateTopics(r)) => r.topics.extend(t),
            (Refused::Delete(t), ResponseKind::DeleteTopics(r)) => r.responses.extend(t),
            (Refused::Partitions(t), ResponseKind::CreatePartitions(r)) => r.results.extend(t),
            _ => {}
        }
    }
}

const THROTTLING_QUOTA_EXCEEDED: i16 = 89;
const THROTTLED_MESSAGE: &str = "The throttling quota has been exceeded.";

/// KIP-599's `controller_mutation_rate`: each topic created or deleted takes its partition
/// count from the client's token bucket, CreatePartitions the partitions it adds. From the
/// versions that know THROTTLING_QUOTA_EXCEEDED (CreateTopics v6, CreatePartitions v3,
/// DeleteTopics v5) the quota is strict, as Kafka's `StrictControllerMutationQuota`: once
/// the bucket is overdrawn the next topics are refused (and left out of the request);
/// older versions are permissive: everything is done and the response throttled. Answers
/// the refusals and the throttle time (ms).
fn take_mutations(
    broker: &Arc<Broker>,
    request: &mut RequestKind,
    version: i16,
    bound: &crate::quota::Bound,
) -> (Refused, i64) {
    use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
    use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
    use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
    let quotas = &broker.quotas;
    let strict = match request {
        RequestKind::CreateTopics(_) => version >= 6,
        RequestKind::CreatePartitions(_) => version >= 3,
        RequestKind::DeleteTopics(_) => version >= 5,
        _ => return (Refused::None, 0),
    };
    let image = broker.meta.image();
    let partitions_of = |name: Option<&str>, id: Option<uuid::Uuid>| -> f64 {
        let topic = match (name, id) {
            (Some(n), _) => image.topic_by_name(n),
            (None, Some(id)) => image.topic(&id),
            _ => None,
        };
        topic.map_or(0.0, |t| t.partitions.len() as f64)
    };
    let mut throttle = 0;
    let mut permissive = 0.0;
    // Takes `permits` for one topic: whether it may go ahead.
    let mut take = |permits: f64| -> bool {
        if !strict {
            permissive += permits;
            return true;
        }
        match quotas.take_mutations_strict(bound, permits) {
            Ok(()) => true,
            Err(t) => {
                throttle = throttle.max(t);
                false
            }
        }
    };
    let refused = match request {
        RequestKind::CreateTopics(r) => {
            let default = broker.config.num_partitions as f64;
            let mut refused = Vec::new();
            r.topics.retain(|t| {
                let permits = if !t.assignments.is_empty() {
                    t.assignments.len() as f64
                } else if t.num_partitions < 0 {
                    default
                } else {
                    t.num_partitions as f64
                };
                let go = take(permits);
                if !go {
                    refused.push(
                        CreatableTopicResult::default()
                            .with_name(t.name.clone())
                            .with_error_code(THROTTLING_QUOTA_EXCEEDED)
                            .with_error_message(Some(handlers::str_bytes(THROTTLED_MESSAGE)))
                            .with_num_partitions(-1)
                            .with_replication_factor(-1),
                    );
                }
                go
            });
            Refused::Create(refused)
        }
        RequestKind::DeleteTopics(r) => {
            let mut refused = Vec::new();
            r.topic_names.retain(|n| {
                let go = take(partitions_of(Some(n.as_str()), None));
                if !go {
                    refused.push(
                        DeletableTopicResult::default()
                            .with_name(Some(n.clone()))
                            .with_error_code(THROTTLING_QUOTA_EXCEEDED)
                            .with_error_message(Some(handlers::str_bytes(THROTTLED_MESSAGE))),
                    );
                }
                go
            });
            r.topics.retain(|t| {
                let go = take(partitions_of(
                    t.name.as_ref().map(|n| n.as_str()),
                    Some(t.topic_id),
                ));
                if !go {
                    refused.push(
                        DeletableTopicResult::default()
                            .with_name(t.name.clone())
                            .with_topic_id(t.topic_id)
                            .with_error_code(THROTTLING_QUOTA_EXCEEDED)
                            .with_error_message(Some(handlers::str_bytes(THROTTLED_MESSAGE))),
                    );
                }
                go
            });
            Refused::Delete(refused)
        }
        RequestKind::CreatePartitions(r) => {
            let mut refused = Vec::new();
            r.topics.retain(|t| {
                let added = (t.count as f64 - partitions_of(Some(t.name.as_str()), None)).max(0.0);
                let go = take(added);
                if !go {
                    refused.push(
                        CreatePartitionsTopicResult::default()
                            .with_name(t.name.clone())
                            .with_error_code(THROTTLING_QUOTA_EXCEEDED)
                            .with_error_message(Some(handlers::str_bytes(THROTTLED_MESSAGE))),
                    );
                }
                go
            });
            Refused::Partitions(refused)
        }
        _ => Refused::None,
    };
    if !strict && permissive > 0.0 {
        throttle = quotas.record(bound, permissive);
    }
    (refused, throttle)
}

/// Sets a response's `throttle_time_ms` (KIP-219: the client waits that long before its next
/// request to this broker, and the broker reads nothing from it meanwhile).
fn set_throttle(response: &mut ResponseKind, ms: i32) {
    macro_rules! throttle {
        ($($kind:ident),* $(,)?) => {
            match response {
                $(ResponseKind::$kind(r) => r.throttle_time_ms = ms,)*
                _ => {}
            }
        };
    }
    throttle!(
        Produce,
        ListOffsets,
        Metadata,
        OffsetCommit,
        OffsetFetch,
        FindCoordinator,
        JoinGroup,
        Heartbeat,
        LeaveGroup,
        SyncGroup,
        DescribeGroups,
        ListGroups,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        InitProducerId,
        OffsetForLeaderEpoch,
        AddPartitionsToTxn,
        AddOffsetsToTxn,
        EndTxn,
        TxnOffsetCommit,
        DescribeAcls,
        CreateAcls,
        DeleteAcls,
        DescribeConfigs,
        AlterConfigs,
        DescribeLogDirs,
        CreatePartitions,
        DeleteGroups,
        ElectLeaders,
        IncrementalAlterConfigs,
        AlterPartitionReassignments,
        ListPartitionReassignments,
        OffsetDelete,
        DescribeClientQuotas,
        AlterClientQuotas,
        DescribeUserScramCredentials,
        AlterUserScramCredentials,
        DescribeCluster,
        DescribeTransactions,
        DescribeProducers,
        ListTransactions,
        ListConfigResources,
        DescribeTopicPartitions,
    );
}

/// Encodes a size-prefixed response frame.
fn encode(correlation_id: i32, header_version: i16, body: &ResponseKind, version: i16) -> Outcome {
    match try_encode(correlation_id, header_version, body, version) {
        Ok(r) => Outcome::Respond(r),
        Err(e) => {
            tracing::error!(correlation_id, version, error = %e, "closing connection: could not encode response");
            Outcome::Close
        }
    }
}

fn try_encode(
    correlation_id: i32,
    header_version: i16,
    body: &ResponseKind,
    version: i16,
) -> anyhow::Result<Response> {
    let mut out = BytesMut::with_capacity(64);
    out.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut out, header_version)?;
    body.encode(&mut out, version)?;
    let len = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(Response::whole(out.freeze()))
}
