//! The transaction coordinator (KIP-98, transaction protocol version 1): transactional ids,
//! their producer id and epoch, the partitions and groups of the ongoing transaction, and its
//! state (Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort).
//!
//! EndTxn runs two phases on this single node: the state goes to Prepare{Commit,Abort}
//! (persisted), a commit/abort marker is appended to every partition of the transaction (and
//! the group coordinator applies or drops the transaction's offset commits), then the state
//! goes to Complete{Commit,Abort} (persisted). A start that finds a Prepare state finishes it.
//! Transactions older than their timeout are aborted with a bumped epoch, which fences the
//! producer. State lives in the compacted internal topic `__transaction_state` in Kafka's record
//! format (TransactionLogKey v0, TransactionLogValue v0).

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::{Record, TimestampType};

use super::producer_ids::ProducerIdAllocator;
use crate::cluster::TopicRegistry;
use crate::groups::GroupCoordinator;
use crate::log::{now_ms, PartitionLog};

pub const TRANSACTION_TOPIC: &str = "__transaction_state";
/// Kafka's `transaction.max.timeout.ms`.
pub const MAX_TRANSACTION_TIMEOUT_MS: i32 = 900_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    fn code(self) -> i8 {
        self as i8
    }

    fn from_code(c: i8) -> Option<TxnState> {
        use TxnState::*;
        [
            Empty,
            Ongoing,
            PrepareCommit,
            PrepareAbort,
            CompleteCommit,
            CompleteAbort,
            Dead,
            PrepareEpochFence,
        ]
        .get(usize::try_from(c).ok()?)
        .copied()
    }

    pub const ALL: [&'static str; 8] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ];
}

/// What the coordinator knows of one transactional id.
#[derive(Debug, Clone)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups whose offsets this transaction commits (AddOffsetsToTxn).
    pub groups: BTreeSet<String>,
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// Which producer a request says it is.
#[derive(Debug, Clone, Copy)]
pub struct ProducerIdent {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

pub struct TxnCoordinator {
    txns: Mutex<HashMap<String, TxnMetadata>>,
    log: Arc<PartitionLog>,
}

impl TxnCoordinator {
    pub fn open(log: Arc<PartitionLog>) -> io::Result<TxnCoordinator> {
        let txns = replay(&log)?;
        if !txns.is_empty() {
            tracing::info!(transactional_ids = txns.len(), "loaded transaction state");
        }
        Ok(TxnCoordinator {
            txns: Mutex::new(txns),
            log,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, TxnMetadata>> {
        self.txns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends the state of `m` to `__transaction_state` and waits for durability when the
    /// flush policy asks for it (blocking).
    fn persist(&self, m: &TxnMetadata) -> io::Result<()> {
        let mut batch = encode(&[(m.transactional_id.clone(), Some(m))])?;
        let info = self
            .log
            .append(&mut batch, None)
            .map_err(|e| io::Error::other(e.to_string()))?;
        if info.needs_sync {
            self.log.sync_to(info.last_offset + 1)?;
        }
        Ok(())
    }

    /// InitProducerId with a transactional id: a new producer id at epoch 0 for a new id,
    /// else the epoch bumped (aborting an ongoing transaction first: this fences the previous
    /// producer with the same transactional id). Blocking (file I/O).
    pub fn init_producer_id(
        &self,
        topics: &TopicRegistry,
        groups: &GroupCoordinator,
        ids: &ProducerIdAllocator,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<ProducerIdent>,
    ) -> Result<ProducerIdent, ResponseError> {
        if timeout_ms <= 0 || timeout_ms > MAX_TRANSACTION_TIMEOUT_MS {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let mut txns = self.lock();
        let now = now_ms();
        let Some(m) = txns.get_mut(transactional_id) else {
            let producer_id = ids
                .allocate()
                .map_err(|_| ResponseError::KafkaStorageError)?;
            let m = TxnMetadata {
                transactional_id: transactional_id.to_string(),
                producer_id,
                producer_epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                groups: BTreeSet::new(),
                start_ms: -1,
                last_update_ms: now,
            };
            self.persist(&m)
                .map_err(|_| ResponseError::KafkaStorageError)?;
            txns.insert(transactional_id.to_string(), m.clone());
            return Ok(ProducerIdent {
                producer_id,
                producer_epoch: 0,
            });
        };
        if let Some(e) = expected {
            // KIP-360: a producer re-initialising must name its current id and epoch.
            if e.producer_id >= 0
                && (e.producer_id != m.producer_id || e.producer_epoch != m.producer_epoch)
            {
                return Err(ResponseError::ProducerFenced);
            }
        }
        match m.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                return Err(ResponseError::ConcurrentTransactions)
            }
            TxnState::Ongoing => {
                // Fence the old producer: abort its transaction with a bumped epoch.
                m.producer_epoch = m.producer_epoch.saturating_add(1);
                self.finish(topics, groups, m, false)
                    .map_err(|_| ResponseError::KafkaStorageError)?;
            }
            _ => {}
        }
        if m.producer_epoch >= i16::MAX - 1 {
            m.producer_id = ids
                .allocate()
                .map_err(|_| ResponseError::KafkaStorageError)?;
            m.producer_epoch = 0;
        } else {
            m.producer_epoch += 1;
        }
        m.timeout_ms = timeout_ms;
        m.state = TxnState::Empty;
        m.partitions.clear();
        m.groups.clear();
        m.last_update_ms = now;
        self.persist(m)
            .map_err(|_| ResponseError::KafkaStorageError)?;
        Ok(ProducerIdent {
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
        })
    }

    fn check<'a>(
        txns: &'a mut HashMap<String, TxnMetadata>,
        transactional_id: &str,
        p: ProducerIdent,
    ) -> Result<&'a mut TxnMetadata, ResponseError> {
        let m = txns
            .get_mut(transactional_id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        if m.producer_id != p.producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if p.producer_epoch < m.producer_epoch {
            return Err(ResponseError::ProducerFenced);
        }
        if p.producer_epoch > m.producer_epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        Ok(m)
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the transaction now spans these partitions.
    pub fn add_partitions(
        &self,
        transactional_id: &str,
        p: ProducerIdent,
        partitions: &[(String, i32)],
        group: Option<&str>,
    ) -> Result<(), ResponseError> {
        let mut txns = self.lock();
        let m = Self::check(&mut txns, transactional_id, p)?;
        match m.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                return Err(ResponseError::ConcurrentTransactions)
            }
            TxnState::Dead => return Err(ResponseError::InvalidTxnState),
            _ => {}
        }
        let new = partitions.iter().any(|x| !m.partitions.contains(x))
            || group.is_some_and(|g| !m.groups.contains(g))
            || m.state != TxnState::Ongoing;
        if !new {
            return Ok(());
        }
        let mut next = m.clone();
        if next.state != TxnState::Ongoing {
            next.start_ms = now_ms();
            next.partitions.clear();
            next.groups.clear();
        }
        next.state = TxnState::Ongoing;
        next.partitions.extend(partitions.iter().cloned());
        if let Some(g) = group {
            next.groups.insert(g.to_string());
        }
        next.last_update_ms = now_ms();
        self.persist(&next)
            .map_err(|_| ResponseError::KafkaStorageError)?;
        *m = next;
        Ok(())
    }

    /// Whether `p` is the current producer of `transactional_id` with an ongoing transaction
    /// (TxnOffsetCommit checks it).
    pub fn is_ongoing(
        &self,
        transactional_id: &str,
        p: ProducerIdent,
    ) -> Result<(), ResponseError> {
        let mut txns = self.lock();
        let m = Self::check(&mut txns, transactional_id, p)?;
        if m.state == TxnState::Ongoing {
            Ok(())
        } else {
            Err(ResponseError::InvalidTxnState)
        }
    }

    /// EndTxn. Blocking (writes markers).
    pub fn end_txn(
        &self,
        topics: &TopicRegistry,
        groups: &GroupCoordinator,
        transactional_id: &str,
        p: ProducerIdent,
        commit: bool,
    ) -> Result<(), ResponseError> {
        let mut txns = self.lock();
        let m = Self::check(&mut txns, transactional_id, p)?;
        match (m.state, commit) {
            (TxnState::Ongoing, _) => {}
            // A retried EndTxn that already completed.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => return Ok(()),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                return Err(ResponseError::ConcurrentTransactions)
            }
            // Aborting an empty transaction is allowed (clients do it after an error).
            (TxnState::Empty, false) => return Ok(()),
            _ => return Err(ResponseError::InvalidTxnState),
        }
        self.finish(topics, groups, m, commit)
            .map_err(|_| ResponseError::KafkaStorageError)
    }

    /// Both phases of ending `m`'s transaction with markers at its current epoch.
    fn finish(
        &self,
        topics: &TopicRegistry,
        groups: &GroupCoordinator,
        m: &mut TxnMetadata,
        commit: bool,
    ) -> io::Result<()> {
        let mut prepared = m.clone();
        prepared.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        prepared.last_update_ms = now_ms();
        self.persist(&prepared)?;
        *m = prepared;
        write_markers(topics, groups, m, commit)?;
        let mut done = m.clone();
        done.state = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        done.partitions.clear();
        done.groups.clear();
        done.last_update_ms = now_ms();
        self.persist(&done)?;
        *m = done;
        tracing::debug!(transactional_id = %m.transactional_id, commit, "transaction ended");
        Ok(())
    }

    /// The timer: aborts transactions past their timeout (bumping the epoch, which fences the
    /// producer) and finishes transactions a crash left prepared. Blocking.
    pub fn tick(&self, topics: &TopicRegistry, groups: &GroupCoordinator, expiration_ms: i64) {
        let now = now_ms();
        let mut txns = self.lock();
        // Transactional ids idle for `transactional.id.expiration.ms` with no transaction in
        // flight are forgotten (a tombstone in __transaction_state).
        let idle: Vec<String> = txns
            .values()
            .filter(|m| {
                matches!(
                    m.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && now - m.last_update_ms > expiration_ms
            })
            .map(|m| m.transactional_id.clone())
            .collect();
        if !idle.is_empty() {
            let entries: Vec<(String, Option<&TxnMetadata>)> =
                idle.iter().map(|id| (id.clone(), None)).collect();
            let written = encode(&entries).and_then(|mut batch| {
                self.log
                    .append(&mut batch, None)
                    .map(|_| ())
                    .map_err(|e| io::Error::other(e.to_string()))
            });
            match written {
                Ok(()) => {
                    for id in &idle {
                        txns.remove(id);
                    }
                    tracing::info!(
                        transactional_ids = idle.len(),
                        "expired idle transactional ids"
                    );
                }
                Err(e) => tracing::error!(error = %e, "expiring transactional ids failed"),
            }
        }
        for m in txns.values_mut() {
            let result = match m.state {
                TxnState::Ongoing if now - m.start_ms > m.timeout_ms as i64 => {
                    tracing::info!(transactional_id = %m.transactional_id,
                        timeout_ms = m.timeout_ms, "aborting a transaction past its timeout");
                    m.producer_epoch = m.producer_epoch.saturating_add(1);
                    self.finish(topics, groups, m, false)
                }
                TxnState::PrepareCommit => self.finish(topics, groups, m, true),
                TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                    self.finish(topics, groups, m, false)
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::error!(transactional_id = %m.transactional_id, error = %e,
                    "ending a transaction failed; retrying later");
            }
        }
    }

    pub fn describe(&self, transactional_id: &str) -> Option<TxnMetadata> {
        self.lock().get(transactional_id).cloned()
    }

    pub fn list(&self) -> Vec<TxnMetadata> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        all
    }
}

/// Appends a marker to every partition of the transaction; the group coordinator applies or
/// drops the transaction's offsets.
fn write_markers(
    topics: &TopicRegistry,
    groups: &GroupCoordinator,
    m: &TxnMetadata,
    commit: bool,
) -> io::Result<()> {
    for (topic, partition) in &m.partitions {
        let Some(log) = topics.get(topic).and_then(|t| t.partition(*partition)) else {
            continue; // deleted meanwhile
        };
        // Synced inside when the flush policy asks for it.
        log.append_marker(m.producer_id, m.producer_epoch, commit, 0)
            .map_err(|e| io::Error::other(e.to_string()))?;
    }
    for group in &m.groups {
        groups.complete_txn_offsets(group, m.producer_id, commit);
    }
    Ok(())
}

/// An i16-length string; longer than `i16::MAX` bytes is an error (never wrapped).
fn put_str(b: &mut BytesMut, s: &str) -> io::Result<()> {
    crate::groups::store::put_str(b, Some(s))
}

fn get_str(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let len = b.get_i16();
    if len < 0 || b.remaining() < len as usize {
        return None;
    }
    Some(String::from_utf8_lossy(&b.split_to(len as usize)).into_owned())
}

fn encode_value(m: &TxnMetadata) -> io::Result<Bytes> {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i64(m.producer_id);
    b.put_i16(m.producer_epoch);
    b.put_i32(m.timeout_ms);
    b.put_i8(m.state.code());
    let mut by_topic: Vec<(&str, Vec<i32>)> = Vec::new();
    for (t, p) in &m.partitions {
        match by_topic.last_mut() {
            Some((name, ps)) if *name == t => ps.push(*p),
            _ => by_topic.push((t, vec![*p])),
        }
    }
    b.put_i32(by_topic.len() as i32);
    for (t, ps) in by_topic {
        put_str(&mut b, t)?;
        b.put_i32(ps.len() as i32);
        ps.iter().for_each(|p| b.put_i32(*p));
    }
    b.put_i64(m.last_update_ms);
    b.put_i64(m.start_ms);
    // ottla extension after Kafka's fields: the groups of AddOffsetsToTxn.
    b.put_i32(m.groups.len() as i32);
    for g in &m.groups {
        put_str(&mut b, g)?;
    }
    Ok(b.freeze())
}

fn decode_value(transactional_id: String, mut b: Bytes) -> Option<TxnMetadata> {
    if b.remaining() < 2 + 8 + 2 + 4 + 1 + 4 {
        return None;
    }
    let _version = b.get_i16();
    let producer_id = b.get_i64();
    let producer_epoch = b.get_i16();
    let timeout_ms = b.get_i32();
    let state = TxnState::from_code(b.get_i8())?;
    let mut partitions = BTreeSet::new();
    let topics = b.get_i32();
    for _ in 0..topics.max(0) {
        let t = get_str(&mut b)?;
        if b.remaining() < 4 {
            return None;
        }
        let n = b.get_i32();
        for _ in 0..n.max(0) {
            if b.remaining() < 4 {
                return None;
            }
            partitions.insert((t.clone(), b.get_i32()));
        }
    }
    if b.remaining() < 16 {
        return None;
    }
    let last_update_ms = b.get_i64();
    let start_ms = b.get_i64();
    let mut groups = BTreeSet::new();
    if b.remaining() >= 4 {
        let n = b.get_i32();
        for _ in 0..n.max(0) {
            groups.insert(get_str(&mut b)?);
        }
    }
    Some(TxnMetadata {
        transactional_id,
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        groups,
        start_ms,
        last_update_ms,
    })
}

fn encode(entries: &[(String, Option<&TxnMetadata>)]) -> io::Result<Vec<u8>> {
    let now = now_ms();
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, (id, m))| {
            let mut key = BytesMut::new();
            key.put_i16(0);
            put_str(&mut key, id)?;
            Ok(Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: now,
                key: Some(key.freeze()),
                value: m.map(encode_value).transpose()?,
                headers: Default::default(),
            })
        })
        .collect::<io::Result<_>>()?;
    crate::log::batch::encode_records(&records)
}

fn replay(log: &Arc<PartitionLog>) -> io::Result<HashMap<String, TxnMetadata>> {
    let mut txns = HashMap::new();
    log.for_each_record(|r| {
        if r.control {
            return;
        }
        let Some(mut key) = r.key else { return };
        if key.remaining() < 2 || key.get_i16() != 0 {
            return;
        }
        let Some(id) = get_str(&mut key) else {
            return;
        };
        match r.value.and_then(|v| decode_value(id.clone(), v)) {
            Some(m) => {
                txns.insert(id, m);
            }
            None => {
                txns.remove(&id);
            }
        }
    })?;
    Ok(txns)
}
