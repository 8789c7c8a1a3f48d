//! Produce (key 0): validates each partition's batches (magic 2, lengths, CRC32C, record
//! counts, size limit), checks its records where the topic's rules need them and recompresses
//! it into the topic's `compression.type` ([`check_records`], `log::validate`), assigns
//! offsets and appends. When the flush policy asks for it
//! (`fsync = "always"`, `flush.messages`), the answer waits until the appended data is durable;
//! the fsyncs run off the async runtime and are group-committed per partition. acks=0 gets no
//! response at all.
//!
//! Transactions (KIP-98), as Kafka checks them: a request holding transactional batches needs a
//! transactional id (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED on every partition) and one
//! producer id/epoch (else INVALID_PRODUCER_ID_MAPPING); clients may not write control batches
//! (INVALID_RECORD), nor batches with a producer id but no sequence (INVALID_RECORD). The log
//! refuses a non-transactional batch while its producer's transaction is open
//! (INVALID_TXN_STATE). Whether the partition was added to the transaction is the
//! coordinator's to say: see [`verify_transaction`].

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{partition_error_code, str_bytes, wants_leader_hint, Broker, LeaderHints, NONE};
use crate::cluster::{topic_config, Topic, TopicRef};
use crate::log::batch::{self, BatchError, BatchHeader};
use crate::log::producer_state::{SequenceError, VerificationGuard};
use crate::log::validate::{self, Checked, Rejection};
use crate::log::{AppendInfo, ClientBatches, LogError, PartitionLog};
use kafka_protocol::messages::produce_response::{LeaderIdAndEpoch, NodeEndpoint};
use kafka_protocol::messages::BrokerId;

/// An appended partition that must be durable before the answer: where its response is, the
/// log, and the offset everything below which must be synced.
struct PendingSync {
    topic: usize,
    partition: usize,
    log: Arc<PartitionLog>,
    upto: i64,
}

/// An acks=all partition whose answer waits until the high watermark passes `upto`.
struct PendingReplication {
    topic: usize,
    partition: usize,
    replica: Arc<crate::cluster::Partition>,
    upto: i64,
    /// The leader epoch of the append.
    leader_epoch: i32,
    min_insync: usize,
}

/// What one partition's append leaves to do before the answer.
#[derive(Default)]
struct Pending {
    /// Make it durable up to this offset first (the flush policy).
    sync: Option<(Arc<PartitionLog>, i64)>,
    /// acks=all: wait for the in-sync replicas (the replica, the offset after the batch, the
    /// leader epoch it was appended at, and `min.insync.replicas`).
    replication: Option<(Arc<crate::cluster::Partition>, i64, i32, usize)>,
}

/// Waits until the high watermark of `replica` passes `upto` (every in-sync replica has the
/// batch), as Kafka's `checkEnoughReplicasReachOffset`: then NOT_ENOUGH_REPLICAS_AFTER_APPEND
/// if the ISR shrank below `min_insync` meanwhile; REQUEST_TIMED_OUT at `deadline`;
/// NOT_LEADER_OR_FOLLOWER once this broker no longer leads at `leader_epoch`, the epoch it
/// appended at: a demoted leader may truncate the batch, and a later leadership's high
/// watermark would pass whatever took its offsets (Kafka completes such waits when the
/// replica becomes a follower). A leadership change wakes the wait.
async fn wait_replicated(
    replica: &crate::cluster::Partition,
    upto: i64,
    leader_epoch: i32,
    min_insync: usize,
    deadline: tokio::time::Instant,
) -> Option<ResponseError> {
    loop {
        let advanced = replica.hw_advanced().notified();
        tokio::pin!(advanced);
        advanced.as_mut().enable();
        let l = replica.leadership();
        if l.role != crate::cluster::Role::Leader
            || l.leader_epoch != leader_epoch
            || !replica.log().leads_at(leader_epoch)
        {
            return Some(ResponseError::NotLeaderOrFollower);
        }
        if replica.high_watermark() >= upto {
            return (l.isr.len() < min_insync)
                .then_some(ResponseError::NotEnoughReplicasAfterAppend);
        }
        if tokio::time::timeout_at(deadline, advanced).await.is_err() {
            return Some(ResponseError::RequestTimedOut);
        }
    }
}

/// Handles a decoded produce request. `None` means "send no response" (acks=0).
pub async fn handle(
    broker: &Broker,
    req: &ProduceRequest,
    version: i16,
    listener: crate::config::SecurityProtocol,
    caller: &super::Caller,
) -> Option<ProduceResponse> {
    // v13 (KIP-516) names topics by id only.
    let by_id = version >= 13;
    use crate::security::acl::{AclOperation, ResourceType};
    let error = transactional_request_error(req).or_else(|| {
        let id = req.transactional_id.as_ref()?;
        (!caller.allowed(
            AclOperation::Write,
            ResourceType::TransactionalId,
            id.0.as_str(),
        ))
        .then_some(ResponseError::TransactionalIdAuthorizationFailed)
    });
    if let Some(error) = error {
        let responses = req
            .topic_data
            .iter()
            .map(|t| {
                TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_partition_responses(
                        t.partition_data
                            .iter()
                            .map(|p| {
                                PartitionProduceResponse::default()
                                    .with_index(p.index)
                                    .with_base_offset(-1)
                                    .with_error_code(error.code())
                            })
                            .collect(),
                    )
            })
            .collect();
        tracing::debug!(?error, "transactional produce refused");
        return (req.acks != 0).then(|| ProduceResponse::default().with_responses(responses));
    }
    let acks_valid = matches!(req.acks, -1..=1);
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(req.timeout_ms.max(0) as u64);
    let mut pending = Vec::new();
    let mut replicating = Vec::new();
    // Partitions in request order, one at a time (an append that must roll a segment waits for
    // the blocking pool; the next partition's append comes after it).
    let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(req.topic_data.len());
    for (ti, t) in req.topic_data.iter().enumerate() {
        let topic = if by_id {
            broker.topics.get_by_id(&t.topic_id)
        } else {
            broker.topics.get(t.name.0.as_str())
        };
        // An unknown topic id has no name to authorize: it is unknown (Kafka's order).
        let name = topic
            .as_ref()
            .map_or(t.name.0.as_str(), |t| t.name.as_str());
        let writable = (by_id && topic.is_none())
            || caller.allowed(AclOperation::Write, ResourceType::Topic, name);
        let unknown = if by_id {
            ResponseError::UnknownTopicId
        } else {
            ResponseError::UnknownTopicOrPartition
        };
        let mut partition_responses = Vec::with_capacity(t.partition_data.len());
        for (pi, p) in t.partition_data.iter().enumerate() {
            let base = PartitionProduceResponse::default()
                .with_index(p.index)
                .with_base_offset(-1);
            let response = match &topic {
                _ if !writable => {
                    base.with_error_code(ResponseError::TopicAuthorizationFailed.code())
                }
                _ if !acks_valid => base.with_error_code(ResponseError::InvalidRequiredAcks.code()),
                None => base.with_error_code(unknown.code()),
                Some(topic) => {
                    let (response, then) = produce_partition(
                        broker,
                        req.transactional_id.as_ref().map(|t| t.0.as_str()),
                        req.acks,
                        topic,
                        p,
                        base,
                    )
                    .await;
                    if let Some((log, upto)) = then.sync {
                        pending.push(PendingSync {
                            topic: ti,
                            partition: pi,
                            log,
                            upto,
                        });
                    }
                    if let Some((replica, upto, leader_epoch, min_insync)) = then.replication {
                        replicating.push(PendingReplication {
                            topic: ti,
                            partition: pi,
                            replica,
                            upto,
                            leader_epoch,
                            min_insync,
                        });
                    }
                    response
                }
            };
            partition_responses.push(response);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id)
                .with_partition_responses(partition_responses),
        );
    }
    let node_endpoints = add_leader_hints(broker, req, by_id, &mut responses, listener);
    let syncs = pending.into_iter().map(|p| async move {
        let log = p.log.clone();
        let upto = p.upto;
        let result = crate::threads::spawn_blocking(move || log.sync_to(upto)).await;
        (p, result)
    });
    for (p, result) in futures::future::join_all(syncs).await {
        let error = match result {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        // A failed fsync latches the partition failed and is logged there, once.
        tracing::debug!(error = %error, "fsync of produced data failed");
        let response = &mut responses[p.topic].partition_responses[p.partition];
        response.error_code = ResponseError::KafkaStorageError.code();
        response.error_message = Some(str_bytes(format!("fsync failed: {error}")));
        response.base_offset = -1;
    }
    let waits = replicating.iter().map(|r| async move {
        let error =
            wait_replicated(&r.replica, r.upto, r.leader_epoch, r.min_insync, deadline).await;
        (r, error)
    });
    for (r, error) in futures::future::join_all(waits).await {
        let response = &mut responses[r.topic].partition_responses[r.partition];
        if let (Some(error), 0) = (error, response.error_code) {
            response.error_code = error.code();
            response.error_message = Some(str_bytes(match error {
                ResponseError::RequestTimedOut => {
                    "the in-sync replicas did not all have the batch before the request's timeout"
                        .to_string()
                }
                e => e.to_string(),
            }));
        }
    }
    (req.acks != 0).then(|| {
        ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(node_endpoints)
    })
}

/// The headers of the whole batches in `records`.
fn headers(records: &[u8]) -> impl Iterator<Item = BatchHeader> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let h = BatchHeader::parse(records.get(pos..)?)?;
        pos += h.total_bytes;
        Some(h)
    })
}

/// Kafka's request-wide checks of transactional produce requests: transactional batches need
/// the request's transactional id (Kafka: TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as when the
/// id is not authorized) and a single producer id/epoch (INVALID_PRODUCER_ID_MAPPING).
fn transactional_request_error(req: &ProduceRequest) -> Option<ResponseError> {
    let mut transactional = false;
    let mut producer: Option<(i64, i16)> = None;
    let mut several = false;
    let batches = req
        .topic_data
        .iter()
        .flat_map(|t| t.partition_data.iter())
        .filter_map(|p| p.records.as_deref())
        .flat_map(headers);
    for h in batches.filter(|h| h.is_transactional()) {
        transactional = true;
        if h.has_producer_id() {
            let this = (h.producer_id, h.producer_epoch);
            several |= producer.is_some_and(|p| p != this);
            producer = Some(this);
        }
    }
    if transactional && req.transactional_id.is_none() {
        Some(ResponseError::TransactionalIdAuthorizationFailed)
    } else if several {
        Some(ResponseError::InvalidProducerIdMapping)
    } else {
        None
    }
}

/// As Kafka with partition verification (KIP-890 part 1, on by default since 3.6): the first
/// transactional write of a producer to a partition (the log holds no open transaction of
/// that producer id) is accepted only if the transactional id's coordinator, on this broker or
/// another, says AddPartitionsToTxn added this partition to the producer's ongoing
/// transaction. This stops a zombie from starting a transaction that nobody will end (a
/// hanging transaction would pin the last stable offset). The coordinator's refusals become
/// what Kafka's produce path answers (`ReplicaManager`, `AddPartitionsToTxnManager`):
/// INVALID_TXN_STATE ("Partition was not added to the transaction"), INVALID_PRODUCER_EPOCH
/// for a fenced producer (not PRODUCER_FENCED: it aborts the transaction rather than killing
/// the producer), INVALID_PRODUCER_ID_MAPPING; a coordinator that cannot answer now (moving,
/// loading, busy ending a transaction) gives the retriable NOT_ENOUGH_REPLICAS.
///
/// The coordinator's yes may be stale by the time the batch is appended (the transaction
/// aborted meanwhile and its marker is already in this log): the guard taken before asking
/// is returned, for the append to present; the log refuses it if a marker came since
/// (Kafka's `VerificationGuard`). None when no verification was needed.
async fn verify_transaction(
    broker: &Broker,
    log: &PartitionLog,
    transactional_id: &str,
    h: &BatchHeader,
    topic: &str,
    partition: i32,
) -> Result<Option<VerificationGuard>, (ResponseError, String)> {
    if !h.is_transactional() {
        return Ok(None);
    }
    let guard = match log.begin_verification(h.producer_id) {
        Ok(Some(guard)) => guard,
        // Its transaction is open here: the append checks it still is.
        Ok(None) => return Ok(None),
        Err(e) => {
            return Err((
                ResponseError::ThrottlingQuotaExceeded,
                format!("Unable to verify the transaction now: {e}"),
            ))
        }
    };
    let producer = crate::txn::coordinator::ProducerIdent {
        producer_id: h.producer_id,
        producer_epoch: h.producer_epoch,
    };
    let Err(e) = broker
        .verify_transaction(transactional_id, producer, topic, partition)
        .await
    else {
        return Ok(Some(guard));
    };
    Err(match e {
        ResponseError::InvalidTxnState => (e, "Partition was not added to the transaction".into()),
        ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch => (
            ResponseError::InvalidProducerEpoch,
            format!("Producer epoch {} is fenced", h.producer_epoch),
        ),
        ResponseError::ConcurrentTransactions
        | ResponseError::CoordinatorLoadInProgress
        | ResponseError::CoordinatorNotAvailable
        | ResponseError::NotCoordinator => (
            ResponseError::NotEnoughReplicas,
            format!("Unable to verify the partition has been added to the transaction: {e}"),
        ),
        e => (e, format!("Transaction verification failed: {e}")),
    })
}

/// Kafka's checks of a client's batch beyond its format (`LogValidator.validateBatch`). The
/// message is Kafka's.
fn check_client_batch(
    topic: &str,
    partition: i32,
    h: &BatchHeader,
) -> Result<(), (ResponseError, String)> {
    if h.is_control() {
        return Err((
            ResponseError::InvalidRecord,
            format!("Clients are not allowed to write control records in topic partition {topic}-{partition}"),
        ));
    }
    if h.has_producer_id() && h.base_sequence < 0 {
        return Err((
            ResponseError::InvalidRecord,
            format!(
                "Invalid sequence number {} in record batch with producerId {} in topic partition {topic}-{partition}",
                h.base_sequence, h.producer_id
            ),
        ));
    }
    if h.is_transactional() && !h.has_producer_id() {
        // Kafka would store it untracked, as plain data; refusing it keeps the LSO honest.
        return Err((
            ResponseError::InvalidRecord,
            format!("Transactional record batch without a producer id in topic partition {topic}-{partition}"),
        ));
    }
    Ok(())
}

/// KIP-951: a partition refused because this broker does not lead it names its leader, and
/// the response carries the leaders' endpoints.
fn add_leader_hints(
    broker: &Broker,
    req: &ProduceRequest,
    by_id: bool,
    responses: &mut [TopicProduceResponse],
    listener: crate::config::SecurityProtocol,
) -> Vec<NodeEndpoint> {
    let mut hints: Option<LeaderHints> = None;
    for (t, r) in req.topic_data.iter().zip(responses.iter_mut()) {
        for p in r.partition_responses.iter_mut() {
            if !wants_leader_hint(p.error_code) {
                continue;
            }
            let hints = hints.get_or_insert_with(|| LeaderHints::new(broker, listener));
            let topic = if by_id {
                TopicRef::Id(t.topic_id)
            } else {
                TopicRef::Name(t.name.0.as_str())
            };
            if let Some((leader, epoch)) = hints.leader(topic, p.index) {
                p.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
            }
        }
    }
    hints.map_or_else(Vec::new, |h| {
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
    })
}

/// Appends one partition's batch. Returns the response and, when the flush policy wants it
/// durable before the answer, the log and offset to sync to.
async fn produce_partition(
    broker: &Broker,
    transactional_id: Option<&str>,
    acks: i16,
    topic: &Topic,
    p: &PartitionProduceData,
    base: PartitionProduceResponse,
) -> (PartitionProduceResponse, Pending) {
    let partition = match broker
        .topics
        .get_partition(TopicRef::Name(&topic.name), p.index, None)
    {
        Ok(partition) => partition,
        Err(e) => {
            return (
                base.with_error_code(partition_error_code(e).code()),
                Pending::default(),
            )
        }
    };
    let log = partition.log();
    let fail = |error: ResponseError, message: String| {
        tracing::debug!(topic = %topic.name, partition = p.index, %message, "produce refused");
        base.clone()
            .with_error_code(error.code())
            .with_error_message(Some(str_bytes(message)))
    };
    if topic.is_internal() {
        return (
            fail(
                ResponseError::InvalidTopicException,
                format!("Cannot append to internal topic {}", topic.name),
            ),
            Pending::default(),
        );
    }
    let Some(records) = &p.records else {
        return (
            fail(ResponseError::CorruptMessage, "null record set".into()),
            Pending::default(),
        );
    };
    let rules = topic.produce_rules();
    let max_bytes = rules.max_message_bytes;
    match batch::validate_batches(records, max_bytes) {
        Err(e) => {
            let error = match e {
                BatchError::Corrupt(_) => ResponseError::CorruptMessage,
                BatchError::Invalid(_) => ResponseError::InvalidRecord,
                BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
                BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
            };
            return (fail(error, e.to_string()), Pending::default());
        }
        // Kafka's rule for magic v2: exactly one batch per partition in a produce request.
        Ok(summary) if summary.batch_count != 1 => {
            return (
                fail(
                    ResponseError::InvalidRecord,
                    format!(
                        "expected one record batch per partition, got {}",
                        summary.batch_count
                    ),
                ),
                Pending::default(),
            );
        }
        Ok(_) => {}
    }
    let mut guard = None;
    if let Some(h) = BatchHeader::parse(records) {
        let checked = match check_client_batch(&topic.name, p.index, &h) {
            Ok(()) => {
                let id = transactional_id.unwrap_or_default();
                verify_transaction(broker, log, id, &h, &topic.name, p.index).await
            }
            Err(refused) => Err(refused),
        };
        match checked {
            Ok(g) => guard = g,
            Err((error, message)) => return (fail(error, message), Pending::default()),
        }
    }
    // KIP-966's effective min ISR: `min.insync.replicas`, at most the replica count.
    let min_isr = partition.leadership().min_isr;
    if acks == -1 {
        let isr = partition.leadership().isr.len();
        if isr < min_isr {
            return (
                fail(
                    ResponseError::NotEnoughReplicas,
                    format!(
                        "The size of the current ISR ({isr}) is insufficient to satisfy the min.isr requirement of {min_isr} for partition {}-{}",
                        topic.name, p.index
                    ),
                ),
                Pending::default(),
            );
        }
    }
    let log_append_time = rules.log_append_time.then(|| broker.clock.now_ms());
    let checked = match check_records(broker, topic, p.index, records, &rules) {
        Ok(checked) => checked,
        Err(refused) => return (refused.into_response(&fail), Pending::default()),
    };
    let appended = match (checked, log_append_time) {
        // The frame is shared and immutable: the log writes the assigned base offsets in front
        // of the batches (one vectored write), no copy of the records. On the runtime, unless
        // a segment must be rolled first (a file created): then on the blocking pool.
        (Checked::AsIs, None) => match log.try_append_client(ClientBatches::Shared(records), guard)
        {
            Err(LogError::RollNeeded) => {
                let (log, records) = (log.clone(), records.clone());
                off_runtime(move || log.append_client(ClientBatches::Shared(&records), guard)).await
            }
            done => done,
        },
        // LogAppendTime rewrites timestamps and the CRC (a copy to patch); a recompressed batch
        // is the broker's own. Likewise on the runtime unless a roll is needed.
        (Checked::AsIs, Some(now)) => append_owned(log, records.to_vec(), Some(now), guard).await,
        (Checked::Rewritten(batch), now) => append_owned(log, batch, now, guard).await,
    };
    match appended {
        Ok(info) => (
            base.with_error_code(NONE)
                .with_base_offset(info.base_offset)
                .with_log_append_time_ms(log_append_time.unwrap_or(-1))
                .with_log_start_offset(info.log_start_offset),
            Pending {
                sync: info.needs_sync.then(|| (log.clone(), info.last_offset + 1)),
                replication: (acks == -1).then(|| {
                    (
                        partition.clone(),
                        info.last_offset + 1,
                        info.leader_epoch,
                        min_isr,
                    )
                }),
            },
        ),
        Err(LogError::Sequence(e)) => {
            let error = match e {
                SequenceError::StaleEpoch { .. } => ResponseError::InvalidProducerEpoch,
                SequenceError::OutOfOrder { .. } => ResponseError::OutOfOrderSequenceNumber,
                SequenceError::InvalidTxnState { .. } | SequenceError::NotVerified { .. } => {
                    ResponseError::InvalidTxnState
                }
                SequenceError::CoordinatorFenced { .. } => {
                    ResponseError::TransactionCoordinatorFenced
                }
                // Retriable: expiry of idle producer ids frees room.
                SequenceError::TooManyProducers { .. } => ResponseError::ThrottlingQuotaExceeded,
            };
            (fail(error, e.to_string()), Pending::default())
        }
        // The topic was deleted while this request held its partition.
        Err(e @ LogError::Closed) => (
            fail(ResponseError::UnknownTopicOrPartition, e.to_string()),
            Pending::default(),
        ),
        // Demoted while this request held the partition: nothing was appended.
        Err(e @ LogError::NotLeader) => (
            fail(ResponseError::NotLeaderOrFollower, e.to_string()),
            Pending::default(),
        ),
        // Latched by an earlier failure, which was logged then.
        Err(e @ LogError::Failed) => (
            fail(ResponseError::KafkaStorageError, e.to_string()),
            Pending::default(),
        ),
        Err(e) => {
            tracing::error!(topic = %topic.name, partition = p.index, error = %e, "append failed");
            (
                fail(ResponseError::KafkaStorageError, e.to_string()),
                Pending::default(),
            )
        }
    }
}

/// Appends a batch the broker owns: on the runtime, or on the blocking pool when a segment must
/// be rolled first.
async fn append_owned(
    log: &Arc<PartitionLog>,
    mut batch: Vec<u8>,
    log_append_time_ms: Option<i64>,
    guard: Option<VerificationGuard>,
) -> Result<AppendInfo, LogError> {
    let now = log_append_time_ms;
    match log.try_append_client(ClientBatches::Owned(&mut batch, now), guard) {
        Err(LogError::RollNeeded) => {
            let log = log.clone();
            off_runtime(move || log.append_client(ClientBatches::Owned(&mut batch, now), guard))
                .await
        }
        done => done,
    }
}

/// Runs an append that may block on the blocking pool.
async fn off_runtime(
    append: impl FnOnce() -> Result<AppendInfo, LogError> + Send + 'static,
) -> Result<AppendInfo, LogError> {
    crate::threads::spawn_blocking(append)
        .await
        .unwrap_or_else(|e| Err(LogError::Io(std::io::Error::other(e.to_string()))))
}

/// A batch refused by [`check_records`]: the partition's error and message, and the records
/// at fault (KIP-467).
struct RecordsRefused {
    error: ResponseError,
    message: String,
    record_errors: Vec<BatchIndexAndErrorMessage>,
}

impl RecordsRefused {
    fn into_response(
        self,
        fail: &impl Fn(ResponseError, String) -> PartitionProduceResponse,
    ) -> PartitionProduceResponse {
        fail(self.error, self.message).with_record_errors(self.record_errors)
    }
}

/// The record-level step of a produce (Kafka's `LogValidator` looking inside the batch): keys
/// on compacted topics, timestamp bounds (KIP-937), and recompression into the topic's
/// `compression.type`. The batch comes back untouched unless the topic's codec differs from
/// it (then a recompressed copy): see [`validate::check_batch`].
fn check_records(
    broker: &Broker,
    topic: &Topic,
    partition: i32,
    batch: &[u8],
    rules: &topic_config::ProduceRules,
) -> Result<Checked, RecordsRefused> {
    let policy = validate::RecordPolicy {
        topic_partition: validate::TopicPartition {
            topic: &topic.name,
            partition,
        },
        compacted: rules.compacted,
        log_append_time: rules.log_append_time,
        timestamp_before_max_ms: rules.timestamp_before_max_ms,
        timestamp_after_max_ms: rules.timestamp_after_max_ms,
        now_ms: broker.clock.now_ms(),
        target: rules.compression,
        levels: rules.levels,
        max_batch_bytes: rules.max_message_bytes,
        max_decompressed_bytes: broker.config.max_decompressed_batch_bytes,
    };
    validate::check_batch(batch, &policy).map_err(|rejection| {
        let plain = |error, message| RecordsRefused {
            error,
            message,
            record_errors: Vec::new(),
        };
        match rejection {
            Rejection::Records {
                invalid_timestamp,
                message,
                errors,
            } => RecordsRefused {
                error: if invalid_timestamp {
                    ResponseError::InvalidTimestamp
                } else {
                    ResponseError::InvalidRecord
                },
                message,
                record_errors: errors
                    .into_iter()
                    .map(|e| {
                        BatchIndexAndErrorMessage::default()
                            .with_batch_index(e.batch_index)
                            .with_batch_index_error_message(Some(str_bytes(e.message)))
                    })
                    .collect(),
            },
            Rejection::Corrupt(m) => plain(ResponseError::CorruptMessage, m),
            Rejection::Invalid(m) => plain(ResponseError::InvalidRecord, m),
            Rejection::TooLarge(m) => plain(ResponseError::MessageTooLarge, m),
        }
    })
}
