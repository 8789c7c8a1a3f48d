//! Fetch (key 1): reads whole batches from each requested partition. When fewer than
//! `min_bytes` are ready, waits on the partitions' high-watermark notifiers (never a sleep
//! loop) until enough data arrives or `max_wait_ms` passes. Consumers read below the high
//! watermark; partitions are looked up with the request's current leader epoch (v9+), see
//! `cluster::partition`.
//!
//! Incremental fetch sessions (KIP-227, v7+, see `fetch_session`): the session decides which
//! partitions are read and from where (a full fetch's, or every partition of an incremental
//! fetch's session), and the answer of an incremental fetch leaves out those with nothing
//! new. As Kafka, partitions the metadata refuses (unknown topic or id, not authorized) are
//! answered after the others and do not end the long poll; errors of the read do.
//!
//! Fetch from follower (KIP-392): from v11 a consumer's fetch may be served by a follower,
//! from its log below its high watermark (the leader epoch checked, not the role); a leader
//! asked by a consumer with a `rack_id` answers `preferred_read_replica` (and no records)
//! when an in-sync follower in that rack should serve it (`replica_selector = "rack_aware"`,
//! the default; `preferred_read_replica`).
//!
//! Every read is checked against the request's leader epoch (or, without one, that this
//! broker leads) once it is done: a fetch that waited past a demotion answers
//! NOT_LEADER_OR_FOLLOWER / FENCED_LEADER_EPOCH, never batches this replica took from
//! another leader meanwhile (as Kafka's `DelayedFetch`).
//!
//! A fetch naming the epoch of its last fetched batch (`last_fetched_epoch`, v12+) whose log
//! diverges from this one after it gets `diverging_epoch` (that epoch's end here) instead of
//! records, as Kafka answers; a follower's progress is not recorded from such a fetch.
//!
//! Isolation (KIP-98): read_committed (`isolation_level` 1, v4+) returns only batches below the
//! last stable offset, with the aborted transactions (producer id, first offset) overlapping
//! them; every answer reports the LSO in `last_stable_offset`, as Kafka's do whatever the
//! isolation. A read_committed fetch waiting for data is woken by transaction markers too (they
//! are appends), which is when its LSO moves.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId};
use tokio::sync::futures::Notified;
use uuid::Uuid;

use super::{partition_error_code, str_bytes, wants_leader_hint, Broker, LeaderHints, NONE};
use crate::cluster::fetch_session::{self, Context, FetchParams, Requested, Session, TopicKey};
use crate::cluster::{Partition, TopicRef};
use crate::log::{cold, Isolation, LogError, ReadInfo, Records};
use crate::threads;
use kafka_protocol::messages::fetch_response::{LeaderIdAndEpoch, NodeEndpoint};
use kafka_protocol::messages::BrokerId;

const READ_COMMITTED: i8 = 1;

/// A fetch answer: the response with every partition's `records` left `None`, and the records
/// of each partition in response order (topics, then their partitions); the protocol layer
/// encodes them around the records (`protocol::fetch_frame`).
#[derive(Clone)]
pub struct FetchAnswer {
    pub response: FetchResponse,
    pub records: Vec<Records>,
}

/// A topic a fetch names, looked up (or why not).
type Resolved = Result<Arc<crate::cluster::Topic>, ResponseError>;

/// One requested partition, resolved.
struct Wanted {
    /// What the fetch asked of it.
    req: Requested,
    fetch_offset: i64,
    max_bytes: usize,
    partition: Result<Arc<Partition>, ResponseError>,
    /// The request's current leader epoch (v9+): checked again after every read, so a
    /// fetch that waited answers only what this broker had as the leader it was asked as.
    leader_epoch: Option<i32>,
    /// A consumer's read a follower may serve (v11+, KIP-392): the epoch is checked, not
    /// the role.
    any_replica: bool,
    /// The replica the leader tells the consumer to fetch from instead (KIP-392): no
    /// records, answered at once.
    preferred: Option<i32>,
    /// Where the fetcher's last fetched epoch ends here, when its log diverges from this one
    /// (`diverging_epoch`, v12+): it truncates there before it fetches on; no records.
    diverging: Option<(i32, i64)>,
}

/// Handles a decoded fetch request. The records of each partition stay [`Records`] (on disk,
/// stretches of segment files), see [`FetchAnswer`].
pub async fn handle(
    broker: &Broker,
    req: &FetchRequest,
    version: i16,
    listener: crate::config::SecurityProtocol,
    caller: &super::Caller,
) -> FetchAnswer {
    prepare(broker, req, version, listener, caller)
        .await
        .finish(broker)
}

/// How a prepared answer meets its session.
enum Kind {
    /// Sessionless, or a session-level error: sent as it is.
    Plain,
    /// A full fetch asking for a session: one is created when the answer is sent.
    Full { privileged: bool, by_id: bool },
    /// An incremental fetch: the session filters the answer when it is sent.
    Incremental {
        session: Arc<std::sync::Mutex<Session>>,
        epoch_after: i32,
    },
}

/// A fetch's answer once read, before its session takes it: [`PreparedFetch::finish`] (sent
/// as is), or, under a fetch quota, [`PreparedFetch::preview`] to size it and then
/// `finish` or [`PreparedFetch::throttled`] (Kafka's throttled answer leaves the session's
/// response side as it was). Partition answers stay compact ([`Outcome`]) until sent: an
/// incremental fetch's quiet partitions never become response entries.
pub struct PreparedFetch {
    /// Every partition read, in response order, with what it asked.
    parts: Vec<(Requested, Outcome)>,
    kind: Kind,
    listener: crate::config::SecurityProtocol,
    /// A session-level error: answered with no partitions.
    error: Option<ResponseError>,
}

fn lock_session(s: &std::sync::Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl PreparedFetch {
    fn error(error: ResponseError) -> PreparedFetch {
        PreparedFetch {
            parts: Vec::new(),
            kind: Kind::Plain,
            listener: crate::config::SecurityProtocol::Plaintext,
            error: Some(error),
        }
    }

    /// What each answer says, as the session's inclusion rule reads it, and whether an
    /// incremental answer sends it (Kafka's rule).
    fn included(&self) -> (Vec<fetch_session::Answered>, Vec<bool>) {
        let answered: Vec<fetch_session::Answered> =
            self.parts.iter().map(|(_, o)| o.summary()).collect();
        let included = self
            .parts
            .iter()
            .zip(&answered)
            .map(|((r, _), a)| fetch_session::includes(r, a))
            .collect();
        (answered, included)
    }

    /// The answer to send: a full fetch's session created (its id in the answer, or 0 when
    /// the cache has no room), an incremental fetch's filtered by its session, which takes
    /// what is sent (or INVALID_FETCH_SESSION_EPOCH when another request used the session
    /// meanwhile).
    pub fn finish(self, broker: &Broker) -> FetchAnswer {
        if let Some(e) = self.error {
            return error_answer(e, 0);
        }
        match self.kind {
            Kind::Plain => respond(broker, self.listener, self.parts, 0),
            Kind::Full { privileged, by_id } => {
                let created = self
                    .parts
                    .iter()
                    .map(|(r, o)| {
                        let hw = if o.error != NONE {
                            -1
                        } else {
                            o.high_watermark
                        };
                        (r.clone(), hw, o.log_start_offset)
                    })
                    .collect();
                let id =
                    broker
                        .fetch_sessions
                        .create(privileged, by_id, created, broker.clock.now_ms());
                respond(broker, self.listener, self.parts, id)
            }
            Kind::Incremental {
                ref session,
                epoch_after,
            } => {
                let (answered, included) = self.included();
                let mut s = lock_session(session);
                let id = s.id();
                let sent = self
                    .parts
                    .iter()
                    .zip(&answered)
                    .zip(&included)
                    .filter(|(_, &i)| i)
                    .map(|(((r, _), a), _)| (r, a));
                if !fetch_session::commit(&mut s, epoch_after, sent) {
                    return error_answer(ResponseError::InvalidFetchSessionEpoch, id);
                }
                drop(s);
                let parts = self
                    .parts
                    .into_iter()
                    .zip(included)
                    .filter_map(|(p, i)| i.then_some(p))
                    .collect();
                respond(broker, self.listener, parts, id)
            }
        }
    }

    /// What [`PreparedFetch::finish`] would send (a new session's id aside), the session
    /// unchanged: a quota measures it.
    pub fn preview(&self, broker: &Broker) -> FetchAnswer {
        if let Some(e) = self.error {
            return error_answer(e, 0);
        }
        let (parts, id) = match &self.kind {
            Kind::Incremental {
                session,
                epoch_after,
            } => {
                let s = lock_session(session);
                if !fetch_session::current(&s, *epoch_after) {
                    return error_answer(ResponseError::InvalidFetchSessionEpoch, s.id());
                }
                let id = s.id();
                drop(s);
                let parts = self
                    .parts
                    .iter()
                    .zip(self.included().1)
                    .filter(|(_, i)| *i)
                    .map(|(p, _)| p.clone())
                    .collect();
                (parts, id)
            }
            _ => (self.parts.clone(), 0),
        };
        respond(broker, self.listener, parts, id)
    }

    /// The answer of a throttled fetch (Kafka's `getThrottledResponse`): no partitions; no
    /// session created; an incremental fetch keeps its session (its epoch checked) and what
    /// the session had sent.
    pub fn throttled(self, throttle_ms: i32) -> FetchAnswer {
        let mut answer = match (&self.error, &self.kind) {
            (Some(e), _) => error_answer(*e, 0),
            (
                None,
                Kind::Incremental {
                    session,
                    epoch_after,
                },
            ) => {
                let s = lock_session(session);
                if fetch_session::current(&s, *epoch_after) {
                    error_answer_code(NONE, s.id())
                } else {
                    error_answer(ResponseError::InvalidFetchSessionEpoch, s.id())
                }
            }
            (None, _) => error_answer_code(NONE, 0),
        };
        answer.response.throttle_time_ms = throttle_ms;
        answer
    }
}

/// One partition's answer before it is a response entry.
#[derive(Clone)]
struct Outcome {
    error: i16,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    /// read_committed: the aborted transactions overlapping the records.
    aborted: Option<Vec<AbortedTransaction>>,
    preferred: i32,
    diverging: Option<(i32, i64)>,
    records: Records,
}

impl Outcome {
    /// A partition in error: offsets unknown (-1), as Kafka answers.
    fn failed(error: i16, read_committed: bool) -> Outcome {
        Outcome {
            error,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted: read_committed.then(Vec::new),
            preferred: -1,
            diverging: None,
            records: Records::Bytes(Bytes::new()),
        }
    }

    /// Offsets as `log` has them now, no records.
    fn offsets(log: &crate::log::PartitionLog, read_committed: bool) -> Outcome {
        Outcome {
            error: NONE,
            high_watermark: log.high_watermark(),
            last_stable_offset: log.last_stable_offset(),
            log_start_offset: log.log_start_offset(),
            ..Outcome::failed(NONE, read_committed)
        }
    }

    fn summary(&self) -> fetch_session::Answered {
        fetch_session::Answered {
            has_records: !self.records.is_empty(),
            high_watermark: self.high_watermark,
            log_start_offset: self.log_start_offset,
            error_code: self.error,
            preferred_read_replica: self.preferred,
            diverging_epoch: self.diverging.map_or(-1, |(epoch, _)| epoch),
        }
    }

    fn into_data(self, partition: i32) -> (PartitionData, Records) {
        let mut data = PartitionData::default()
            .with_partition_index(partition)
            .with_error_code(self.error)
            .with_high_watermark(self.high_watermark)
            .with_last_stable_offset(self.last_stable_offset)
            .with_log_start_offset(self.log_start_offset)
            .with_aborted_transactions(self.aborted)
            .with_preferred_read_replica(BrokerId(self.preferred));
        if let Some((epoch, end_offset)) = self.diverging {
            data.diverging_epoch = EpochEndOffset::default()
                .with_epoch(epoch)
                .with_end_offset(end_offset);
        }
        (data, self.records)
    }
}

/// Partition errors of the metadata, not of the read (Kafka sorts these out before
/// `ReplicaManager.fetchMessages`): answered last, and they do not end the long poll.
fn outside_read(e: ResponseError) -> bool {
    matches!(
        e,
        ResponseError::UnknownTopicOrPartition
            | ResponseError::UnknownTopicId
            | ResponseError::TopicAuthorizationFailed
    )
}

/// Reads a decoded fetch request's partitions (as its session says, waiting as long as it
/// asks), without sending: see [`PreparedFetch`].
pub async fn prepare(
    broker: &Broker,
    req: &FetchRequest,
    version: i16,
    listener: crate::config::SecurityProtocol,
    caller: &super::Caller,
) -> PreparedFetch {
    use crate::security::acl::{AclOperation, ResourceType};
    let by_id = version >= 13;
    // A follower's fetch (Kafka: replica id ≥ 0, in `replica_state` from v15): it reads up
    // to the log end, its fetch offset is its log end (the leader's high watermark follows
    // the in-sync followers'), and it is woken by appends, not by the high watermark.
    let replica = if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let follower = (replica >= 0).then_some(replica);
    if follower.is_some() && !caller.allowed_on_cluster(AclOperation::ClusterAction) {
        return PreparedFetch::error(ResponseError::ClusterAuthorizationFailed);
    }
    let key_of = |name: &kafka_protocol::messages::TopicName, id: Uuid| {
        if by_id {
            TopicKey::Id(id)
        } else {
            TopicKey::Name(Arc::from(name.0.as_str()))
        }
    };
    let requested: Vec<Requested> = req
        .topics
        .iter()
        .flat_map(|t| {
            let topic = key_of(&t.topic, t.topic_id);
            t.partitions.iter().map(move |p| Requested {
                topic: topic.clone(),
                partition: p.partition,
                params: FetchParams {
                    fetch_offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes,
                    current_leader_epoch: p.current_leader_epoch,
                    last_fetched_epoch: p.last_fetched_epoch,
                    log_start_offset: p.log_start_offset,
                },
                sent: fetch_session::Sent::NOTHING,
            })
        })
        .collect();
    let forgotten: Vec<fetch_session::Key> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            let topic = key_of(&t.topic, t.topic_id);
            t.partitions.iter().map(move |&p| (topic.clone(), p))
        })
        .collect();
    let meta = fetch_session::SessionMeta {
        version,
        session_id: req.session_id,
        epoch: req.session_epoch,
        privileged: follower.is_some(),
    };
    let context =
        broker
            .fetch_sessions
            .new_context(meta, requested, forgotten, broker.clock.now_ms());
    if let Context::Error(e) = context {
        return PreparedFetch::error(e);
    }
    let image = caller.enforcing().then(|| broker.meta.image());
    // KIP-392: from v11 a consumer may read from a follower (below its high watermark), and
    // the leader may send it to a replica in its rack.
    let any_replica = follower.is_none() && version >= 11;
    let rack =
        (any_replica && !req.rack_id.is_empty() && broker.config.replica_selector == "rack_aware")
            .then(|| req.rack_id.as_str());
    let mut wanted = Vec::with_capacity(context.parts().len());
    // A topic is resolved, and READ on it asked, once per run of its partitions.
    let mut current: Option<(&TopicKey, Resolved, bool)> = None;
    for r in context.parts() {
        let topic = match &r.topic {
            TopicKey::Id(id) => TopicRef::Id(*id),
            TopicKey::Name(n) => TopicRef::Name(n),
        };
        if current.as_ref().is_none_or(|(k, _, _)| **k != r.topic) {
            // Consumers need READ on the topic (followers were checked above).
            let name = match (&image, topic) {
                (Some(image), TopicRef::Id(id)) => image.topic(&id).map(|t| t.name.clone()),
                (_, TopicRef::Name(n)) => Some(n.to_string()),
                (None, _) => None,
            };
            let readable = follower.is_some()
                || name.is_none_or(|n| caller.allowed(AclOperation::Read, ResourceType::Topic, &n));
            let resolved = broker.topics.resolve(topic).map_err(partition_error_code);
            current = Some((&r.topic, resolved, readable));
        }
        let Some((_, resolved, readable)) = &current else {
            continue;
        };
        let p = &r.params;
        // current_leader_epoch exists from v9 (-1: not checked).
        let epoch = (version >= 9).then_some(p.current_leader_epoch);
        let mut partition = match resolved {
            Ok(t) => {
                crate::cluster::TopicRegistry::partition_in(t, r.partition, epoch, any_replica)
                    .map_err(partition_error_code)
            }
            Err(e) => Err(*e),
        };
        let preferred = match (&partition, rack) {
            (Ok(found), Some(rack)) => preferred_read_replica(broker, found, rack, p.fetch_offset),
            _ => None,
        };
        let diverging = match &partition {
            Ok(found) if version >= 12 => {
                diverging_epoch(found, p.last_fetched_epoch, p.fetch_offset)
            }
            _ => None,
        };
        if let (Some(replica), Ok(found), None) = (follower, &partition, diverging) {
            match found.follower_fetched(replica, p.fetch_offset, broker.clock.now_ms()) {
                Err(e) => partition = Err(partition_error_code(e)),
                // A follower outside the ISR may have caught up: it joins.
                Ok(()) if !found.leadership().isr.contains(&replica) => {
                    broker.maybe_alter_isr(found)
                }
                Ok(()) => {}
            }
        }
        wanted.push(Wanted {
            req: r.clone(),
            fetch_offset: p.fetch_offset,
            max_bytes: p.max_bytes.max(0) as usize,
            partition: if *readable {
                partition
            } else {
                Err(ResponseError::TopicAuthorizationFailed)
            },
            leader_epoch: epoch,
            any_replica,
            preferred,
            diverging,
        });
    }
    drop(current);
    // Kafka's order: the partitions read, then those the metadata refused.
    wanted.sort_by_key(|w| matches!(w.partition, Err(e) if outside_read(e)));
    let kind = match context {
        Context::Full {
            privileged, by_id, ..
        } => Kind::Full { privileged, by_id },
        Context::Incremental {
            session,
            epoch_after,
            ..
        } => Kind::Incremental {
            session,
            epoch_after,
        },
        Context::Error(_) | Context::Sessionless(_) => Kind::Plain,
    };
    // Kafka's `fetch.max.bytes` caps what the client asks for (KIP-74 still returns a first
    // batch larger than that whole).
    let max_bytes = if req.max_bytes <= 0 {
        broker.config.fetch_max_bytes
    } else {
        (req.max_bytes as usize).min(broker.config.fetch_max_bytes)
    };
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_wait =
        Duration::from_millis((req.max_wait_ms.max(0) as u64).min(broker.config.fetch_max_wait_ms));
    let deadline = tokio::time::Instant::now() + max_wait;
    let isolation = match (follower, req.isolation_level) {
        (Some(_), _) => Isolation::LogEnd,
        (None, READ_COMMITTED) => Isolation::ReadCommitted,
        (None, _) => Isolation::ReadUncommitted,
    };
    let partitions: Vec<Arc<Partition>> = wanted
        .iter()
        .filter_map(|w| w.partition.clone().ok())
        .collect();
    let outcomes = loop {
        // Register for wake-ups before reading, so a high watermark advance between the read
        // and the wait is not missed.
        let mut waits: Vec<Pin<Box<Notified<'_>>>> = partitions
            .iter()
            .map(|p| {
                Box::pin(if follower.is_some() {
                    p.log().appended().notified()
                } else {
                    p.hw_advanced().notified()
                })
            })
            .collect();
        for w in &mut waits {
            w.as_mut().enable();
        }
        let (outcomes, bytes, errors) = read_all(&wanted, max_bytes, isolation).await;
        let now = tokio::time::Instant::now();
        if bytes >= min_bytes || errors || now >= deadline || waits.is_empty() {
            break outcomes;
        }
        let any_append = futures::future::select_all(waits);
        if tokio::time::timeout_at(deadline, any_append).await.is_err() {
            break read_all(&wanted, max_bytes, isolation).await.0;
        }
    };
    PreparedFetch {
        parts: wanted.into_iter().map(|w| w.req).zip(outcomes).collect(),
        kind,
        listener,
        error: None,
    }
}

/// Whether a fetch from `fetch_offset` whose last fetched batch had `last_fetched_epoch`
/// diverges from this leader's log (Kafka's `validateFetchOffsetAndMaybeGetDivergingEpoch`):
/// this log's end of that epoch (the newest epoch not above it, and where it ends) when that
/// end is below the fetch offset or the epoch is older. None when it does not, or when the
/// fetcher gave no epoch (-1).
fn diverging_epoch(
    partition: &Partition,
    last_fetched_epoch: i32,
    fetch_offset: i64,
) -> Option<(i32, i64)> {
    if last_fetched_epoch < 0 {
        return None;
    }
    let leader_epoch = partition.leadership().leader_epoch;
    let (epoch, end) = partition
        .log()
        .end_offset_for_epoch_as_leader(last_fetched_epoch, leader_epoch);
    // No answer for an epoch this log cannot place (it names a newer epoch than this
    // leader's, which its epoch check refuses first): the fetch reads on.
    if epoch < 0 || end < 0 {
        return None;
    }
    (end < fetch_offset || epoch < last_fetched_epoch).then_some((epoch, end))
}

/// The replica a consumer in `rack` should fetch from, when not this leader (Kafka's
/// `RackAwareReplicaSelector`, as `ReplicaManager.findPreferredReadReplica` feeds it): the
/// leader when it is in the consumer's rack or no eligible replica is; else, of the in-sync
/// followers in that rack whose broker is registered and unfenced and whose log holds the
/// fetch offset, the one furthest ahead. None on a follower, or when the leader it is.
fn preferred_read_replica(
    broker: &Broker,
    partition: &Partition,
    rack: &str,
    fetch_offset: i64,
) -> Option<i32> {
    let l = partition.leadership();
    if l.role != crate::cluster::Role::Leader || broker.config.broker_rack.as_deref() == Some(rack)
    {
        return None;
    }
    let image = broker.meta.image();
    l.isr
        .iter()
        .copied()
        .filter(|r| *r != l.leader_id)
        .filter(|r| {
            image
                .brokers
                .get(r)
                .is_some_and(|b| !b.fenced && b.rack.as_deref() == Some(rack))
        })
        .filter_map(|r| {
            let f = partition.follower_progress(r)?;
            (f.log_end >= fetch_offset).then_some((f.log_end, f.last_caught_up_ms, r))
        })
        .max()
        .map(|(_, _, r)| r)
}

fn error_answer(error: ResponseError, session_id: i32) -> FetchAnswer {
    error_answer_code(error.code(), session_id)
}

fn error_answer_code(code: i16, session_id: i32) -> FetchAnswer {
    FetchAnswer {
        response: FetchResponse::default()
            .with_error_code(code)
            .with_session_id(session_id),
        records: Vec::new(),
    }
}

/// Reads every wanted partition once. Returns the partition answers (in wanted order), the
/// bytes gathered and whether any partition's read answered what ends a long poll (an error
/// of the read, a preferred replica, a diverging epoch).
async fn read_all(
    wanted: &[Wanted],
    max_bytes: usize,
    isolation: Isolation,
) -> (Vec<Outcome>, usize, bool) {
    let mut total = 0usize;
    let mut errors = false;
    let read_committed = isolation == Isolation::ReadCommitted;
    let mut out = Vec::with_capacity(wanted.len());
    for w in wanted {
        let outcome = match &w.partition {
            Err(e) => {
                errors |= !outside_read(*e);
                Outcome::failed(e.code(), read_committed)
            }
            Ok(partition) if w.preferred.is_some() => {
                // Answered now, without records: the consumer fetches from that replica.
                errors = true;
                Outcome {
                    preferred: w.preferred.unwrap_or(-1),
                    ..Outcome::offsets(partition.log(), read_committed)
                }
            }
            Ok(partition) if w.diverging.is_some() => {
                // An answer the fetcher must act on now: no waiting for data.
                errors = true;
                Outcome {
                    diverging: w.diverging,
                    ..Outcome::offsets(partition.log(), read_committed)
                }
            }
            Ok(partition) => {
                let log = partition.log();
                let budget = w.max_bytes.min(max_bytes.saturating_sub(total));
                let read = read_partition(partition, w.fetch_offset, budget, total == 0, isolation);
                let read = read.await;
                // Leader epochs only grow and a leader never truncates its own log: still the
                // leader asked for after the read, it was all along, and what it read holds.
                // Else (a waiting fetch outlived a demotion, after which this replica may have
                // truncated and taken another leader's batches) the read is dropped, as
                // Kafka's delayed fetch checks the epoch when it completes.
                let still = if w.any_replica {
                    partition.check_replica(w.leader_epoch)
                } else {
                    partition.check_leader(w.leader_epoch)
                };
                match still.map_err(partition_error_code).map(|()| read) {
                    Err(e) => {
                        errors = true;
                        Outcome::failed(e.code(), read_committed)
                    }
                    Ok(Ok(read)) => {
                        total += read.records.len();
                        let aborted = read_committed.then(|| {
                            read.aborted_transactions
                                .iter()
                                .map(|t| {
                                    AbortedTransaction::default()
                                        .with_producer_id(ProducerId(t.producer_id))
                                        .with_first_offset(t.first_offset)
                                })
                                .collect()
                        });
                        Outcome {
                            error: NONE,
                            high_watermark: read.high_watermark,
                            last_stable_offset: read.last_stable_offset,
                            log_start_offset: read.log_start_offset,
                            aborted,
                            preferred: -1,
                            diverging: None,
                            records: read.records,
                        }
                    }
                    Ok(Err(LogError::OffsetOutOfRange { log_start, .. })) => {
                        errors = true;
                        Outcome {
                            error: ResponseError::OffsetOutOfRange.code(),
                            log_start_offset: log_start,
                            ..Outcome::offsets(log, read_committed)
                        }
                    }
                    Ok(Err(LogError::Closed)) => {
                        // The topic was deleted while this fetch held its partition.
                        errors = true;
                        Outcome::failed(
                            ResponseError::UnknownTopicOrPartition.code(),
                            read_committed,
                        )
                    }
                    Ok(Err(e)) => {
                        if !e.is_latched() {
                            tracing::error!(partition = w.req.partition, error = %e, "fetch read failed");
                        }
                        errors = true;
                        Outcome::failed(ResponseError::KafkaStorageError.code(), read_committed)
                    }
                }
            }
        };
        out.push(outcome);
    }
    (out, total, errors)
}

/// Reads one partition without ever waiting for the disk on this worker (`log::cold`): first
/// from the page cache only; a read that would wait (data or file not cached) is done again
/// on the blocking pool, after the data it touches was read into the page cache there without
/// the partition lock; and a stretch of records the cache does not wholly hold is read into
/// it on the pool before the connection sends it.
async fn read_partition(
    partition: &Arc<Partition>,
    offset: i64,
    budget: usize,
    min_one: bool,
    isolation: Isolation,
) -> Result<ReadInfo<Records>, LogError> {
    let first = cold::without_blocking(|| {
        partition
            .log()
            .read_records(offset, budget, min_one, isolation)
    });
    let read = match first {
        Err(LogError::Io(e)) if cold::is_would_block(&e) => {
            let log = partition.log().clone();
            return threads::spawn_blocking(move || {
                log.prefetch(offset, budget)?;
                let read = log.read_records(offset, budget, min_one, isolation)?;
                if let Records::File(slice) = &read.records {
                    if !slice.is_resident() {
                        slice.warm()?;
                    }
                }
                Ok(read)
            })
            .await
            .unwrap_or_else(|e| Err(LogError::Io(std::io::Error::other(e.to_string()))));
        }
        other => other?,
    };
    if let Records::File(slice) = &read.records {
        if !slice.is_resident() {
            let slice = slice.clone();
            threads::spawn_blocking(move || slice.warm())
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
        }
    }
    Ok(read)
}

/// The answer of the partitions read, in their order: a topic's consecutive partitions in
/// one topic entry (a session's order may name a topic again later: another entry, as
/// Kafka's).
fn respond(
    broker: &Broker,
    listener: crate::config::SecurityProtocol,
    parts: Vec<(Requested, Outcome)>,
    session_id: i32,
) -> FetchAnswer {
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut records = Vec::with_capacity(parts.len());
    let mut last: Option<TopicKey> = None;
    let mut hints: Option<LeaderHints> = None;
    for (r, outcome) in parts {
        let (mut p, data) = outcome.into_data(r.partition);
        if wants_leader_hint(p.error_code) {
            let topic = match &r.topic {
                TopicKey::Id(id) => TopicRef::Id(*id),
                TopicKey::Name(n) => TopicRef::Name(n),
            };
            let hints = hints.get_or_insert_with(|| LeaderHints::new(broker, listener));
            if let Some((leader, epoch)) = hints.leader(topic, p.partition_index) {
                p.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
            }
        }
        if last.as_ref() != Some(&r.topic) {
            let t = match &r.topic {
                TopicKey::Id(id) => FetchableTopicResponse::default().with_topic_id(*id),
                TopicKey::Name(n) => {
                    FetchableTopicResponse::default().with_topic(super::topic_name(n.to_string()))
                }
            };
            topics.push(t);
            last = Some(r.topic);
        }
        if let Some(t) = topics.last_mut() {
            t.partitions.push(p);
        }
        records.push(data);
    }
    let node_endpoints = hints.map_or_else(Vec::new, |h| {
        h.endpoints()
            .into_iter()
            .map(|(id, host, port, rack)| {
                NodeEndpoint::default()
                    .with_node_id(BrokerId(id))
                    .with_host(str_bytes(host))
                    .with_port(port)
                    .with_rack(rack.map(str_bytes))
            })
            .collect()
    });
    FetchAnswer {
        response: FetchResponse::default()
            .with_error_code(NONE)
            .with_session_id(session_id)
            .with_responses(topics)
            .with_node_endpoints(node_endpoints),
        records,
    }
}
