//! The transaction coordinator (KIP-98, transaction protocol version 1): transactional ids,
//! their producer id and epoch, the partitions and groups of the ongoing transaction, and its
//! state (Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort).
//!
//! One `TxnCoordinator` serves the transactional ids of one `__transaction_state` partition
//! (`coordinators.rs` holds one per partition this broker leads and routes ids to them).
//!
//! EndTxn runs two phases: the state goes to Prepare{Commit,Abort} (persisted: from here on
//! the outcome is decided and EndTxn succeeds), a commit/abort marker is written to every
//! partition of the transaction (`markers.rs`: locally where this broker leads the partition,
//! and the group coordinator of a `__consumer_offsets` partition applies or drops the
//! transaction's offset commits; with WriteTxnMarkers at the leader elsewhere), then the state
//! goes to Complete{Commit,Abort} (persisted). A marker that cannot be written yet (a leader
//! away, a partition loading) leaves the Prepare state, which the timer finishes later, as a
//! start that finds a Prepare state does. The markers carry the coordinator epoch, the leader
//! epoch of this coordinator's `__transaction_state` partition.
//! Transactions older than their timeout are aborted with a bumped epoch, which fences the
//! producer. State lives in the compacted internal topic `__transaction_state` in Kafka's record
//! format (TransactionLogKey v0, TransactionLogValue v0), and runs on the coordinator runtime
//! (`crate::coordinator`): every change is a record, replayed at once and at load alike; no
//! coordinator lock is held while records are fsynced or markers written, so requests for
//! other transactional ids never wait behind one transaction's I/O. A request that finds its
//! id mid-transition (a Prepare state) gets CONCURRENT_TRANSACTIONS, as in Kafka.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::Record;

use super::markers::{Marker, Markers};
use super::producer_ids::ProducerIdAllocator;
use crate::clock::Clock;
use crate::coordinator::{Runtime, Shard, WriteError};
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

/// The transaction coordinator's state machine (a [`Shard`]): every transactional id's
/// metadata, changed only by replaying `__transaction_state` records.
#[derive(Default)]
pub struct TxnShard {
    txns: HashMap<String, TxnMetadata>,
}

/// One `__transaction_state` record: a transactional id's new metadata, or its tombstone.
pub struct TxnRecord {
    transactional_id: String,
    value: Option<TxnMetadata>,
}

impl TxnRecord {
    pub(crate) fn put(m: &TxnMetadata) -> TxnRecord {
        TxnRecord {
            transactional_id: m.transactional_id.clone(),
            value: Some(m.clone()),
        }
    }
}

impl Shard for TxnShard {
    type Record = TxnRecord;
    /// Everything the transaction coordinator knows is in its log.
    type Volatile = ();

    fn decode(r: Record) -> Option<TxnRecord> {
        if r.control {
            return None;
        }
        let mut key = r.key?;
        if key.remaining() < 2 || key.get_i16() != 0 {
            return None;
        }
        let id = get_str(&mut key)?;
        Some(TxnRecord {
            value: r.value.and_then(|v| decode_value(id.clone(), v)),
            transactional_id: id,
        })
    }

    fn encode(records: &[TxnRecord]) -> io::Result<Vec<u8>> {
        let entries: Vec<(String, Option<&TxnMetadata>)> = records
            .iter()
            .map(|r| (r.transactional_id.clone(), r.value.as_ref()))
            .collect();
        encode(&entries)
    }

    fn replay(&mut self, r: &TxnRecord) {
        match &r.value {
            Some(m) => {
                self.txns.insert(r.transactional_id.clone(), m.clone());
            }
            None => {
                self.txns.remove(&r.transactional_id);
            }
        }
    }
}

/// The transaction coordinator: [`TxnShard`] on the coordinator runtime. Every state change is
/// a record written through the runtime (which serialises them and never holds the shard
/// while waiting for durability); markers are written with no coordinator lock held.
pub struct TxnCoordinator {
    runtime: Runtime<TxnShard>,
    clock: Clock,
    /// The `__transaction_state` partition whose transactional ids it coordinates.
    partition: i32,
    /// The leader epoch of that partition when it was loaded: the coordinator epoch of the
    /// markers it writes (a newer coordinator's markers fence an older one's).
    coordinator_epoch: i32,
}

/// A runtime write's failure as the client sees it.
fn refused(e: WriteError<ResponseError>) -> ResponseError {
    match e {
        WriteError::Refused(e) => e,
        WriteError::Storage(e) => {
            tracing::warn!(error = %e, "a write to __transaction_state was not committed");
            crate::coordinator::not_committed(&e)
        }
    }
}

/// Checks that `p` is the current producer of `transactional_id`.
fn check<'a>(
    txns: &'a HashMap<String, TxnMetadata>,
    transactional_id: &str,
    p: ProducerIdent,
) -> Result<&'a TxnMetadata, ResponseError> {
    let m = txns
        .get(transactional_id)
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

/// `m` moved to the first phase of ending its transaction.
fn prepared(m: &TxnMetadata, commit: bool, now: i64) -> TxnMetadata {
    let mut next = m.clone();
    next.state = if commit {
        TxnState::PrepareCommit
    } else {
        TxnState::PrepareAbort
    };
    next.last_update_ms = now;
    next
}

/// What InitProducerId's write decided.
enum InitStep {
    /// The producer's identity to answer with.
    Done(ProducerIdent),
    /// An ongoing transaction was fenced (epoch bumped, PrepareAbort written): finish its
    /// abort, then bump again.
    Fenced(TxnMetadata),
}

/// InitProducerId's write may also need a fresh producer id it does not have.
enum InitError {
    Client(ResponseError),
    NeedsProducerId,
}

impl TxnCoordinator {
    pub fn open(log: Arc<PartitionLog>) -> io::Result<TxnCoordinator> {
        Self::open_with_clock(log, Clock::system())
    }

    /// As [`TxnCoordinator::open`], with every deadline (timeouts, expiration) from `clock`.
    pub fn open_with_clock(log: Arc<PartitionLog>, clock: Clock) -> io::Result<TxnCoordinator> {
        let runtime = Runtime::load(log, TxnShard::default(), |_| ())?;
        let count = runtime.read(|s| s.txns.len());
        if count > 0 {
            tracing::info!(transactional_ids = count, "loaded transaction state");
        }
        Ok(TxnCoordinator {
            runtime,
            clock,
            partition: 0,
            coordinator_epoch: 0,
        })
    }

    /// The same coordinator, as the one of `__transaction_state` partition `partition` at
    /// leader epoch `epoch`.
    pub fn with_partition(mut self, partition: i32, epoch: i32) -> TxnCoordinator {
        self.partition = partition;
        self.coordinator_epoch = epoch;
        self
    }

    /// The `__transaction_state` partition whose transactional ids it coordinates.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The coordinator epoch of its markers.
    pub fn coordinator_epoch(&self) -> i32 {
        self.coordinator_epoch
    }

    /// InitProducerId with a transactional id: a new producer id at epoch 0 for a new id,
    /// else the epoch bumped (aborting an ongoing transaction first: this fences the previous
    /// producer with the same transactional id). Blocking (file I/O).
    pub fn init_producer_id(
        &self,
        markers: &Markers<'_>,
        ids: &ProducerIdAllocator,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<ProducerIdent>,
    ) -> Result<ProducerIdent, ResponseError> {
        if timeout_ms <= 0 || timeout_ms > MAX_TRANSACTION_TIMEOUT_MS {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let mut fresh_id: Option<i64> = None;
        // Each turn either answers, or changes state (a fence, an abort completed, a fresh id
        // allocated); a few turns always suffice.
        for _ in 0..8 {
            let now = self.clock.now_ms();
            let step = self.runtime.write_and_wait(|s: &TxnShard| {
                let Some(m) = s.txns.get(transactional_id) else {
                    let producer_id = fresh_id.ok_or(InitError::NeedsProducerId)?;
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
                    let ident = ProducerIdent {
                        producer_id,
                        producer_epoch: 0,
                    };
                    return Ok((vec![TxnRecord::put(&m)], InitStep::Done(ident)));
                };
                if let Some(e) = expected {
                    // KIP-360: a producer re-initialising must name its current id and epoch.
                    if e.producer_id >= 0
                        && (e.producer_id != m.producer_id || e.producer_epoch != m.producer_epoch)
                    {
                        return Err(InitError::Client(ResponseError::ProducerFenced));
                    }
                }
                match m.state {
                    TxnState::PrepareCommit
                    | TxnState::PrepareAbort
                    | TxnState::PrepareEpochFence => {
                        Err(InitError::Client(ResponseError::ConcurrentTransactions))
                    }
                    TxnState::Ongoing => {
                        // Fence the old producer: abort its transaction with a bumped epoch.
                        let mut fenced = prepared(m, false, now);
                        fenced.producer_epoch = fenced.producer_epoch.saturating_add(1);
                        Ok((vec![TxnRecord::put(&fenced)], InitStep::Fenced(fenced)))
                    }
                    _ => {
                        let mut next = m.clone();
                        if m.producer_epoch >= i16::MAX - 1 {
                            next.producer_id = fresh_id.ok_or(InitError::NeedsProducerId)?;
                            next.producer_epoch = 0;
                        } else {
                            next.producer_epoch += 1;
                        }
                        next.timeout_ms = timeout_ms;
                        next.state = TxnState::Empty;
                        next.partitions.clear();
                        next.groups.clear();
                        next.last_update_ms = now;
                        let ident = ProducerIdent {
                            producer_id: next.producer_id,
                            producer_epoch: next.producer_epoch,
                        };
                        Ok((vec![TxnRecord::put(&next)], InitStep::Done(ident)))
                    }
                }
            });
            match step {
                Ok(InitStep::Done(ident)) => return Ok(ident),
                Ok(InitStep::Fenced(fenced)) => {
                    if let Err(e) = self.complete(markers, &fenced, false) {
                        // The abort is decided (PrepareAbort is written); the timer finishes
                        // it and the producer retries meanwhile (as Kafka answers then).
                        tracing::warn!(transactional_id, error = %e,
                            "aborting a fenced transaction: markers not all written yet; retrying later");
                        return Err(ResponseError::ConcurrentTransactions);
                    }
                }
                Err(WriteError::Refused(InitError::NeedsProducerId)) => {
                    // Allocated outside the shard (it may write the id block); an id taken
                    // for a race that was lost is simply never used.
                    fresh_id = Some(ids.allocate_blocking().map_err(|e| {
                        tracing::warn!(error = %e, "no producer id block from the controller");
                        ResponseError::CoordinatorLoadInProgress
                    })?);
                }
                Err(WriteError::Refused(InitError::Client(e))) => return Err(e),
                Err(WriteError::Storage(e)) => return Err(refused(WriteError::Storage(e))),
            }
        }
        Err(ResponseError::ConcurrentTransactions)
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the transaction now spans these partitions.
    pub fn add_partitions(
        &self,
        transactional_id: &str,
        p: ProducerIdent,
        partitions: &[(String, i32)],
        group: Option<&str>,
    ) -> Result<(), ResponseError> {
        let now = self.clock.now_ms();
        self.runtime
            .write_and_wait(|s: &TxnShard| {
                let m = check(&s.txns, transactional_id, p)?;
                match m.state {
                    TxnState::PrepareCommit
                    | TxnState::PrepareAbort
                    | TxnState::PrepareEpochFence => {
                        return Err(ResponseError::ConcurrentTransactions)
                    }
                    TxnState::Dead => return Err(ResponseError::InvalidTxnState),
                    _ => {}
                }
                let new = partitions.iter().any(|x| !m.partitions.contains(x))
                    || group.is_some_and(|g| !m.groups.contains(g))
                    || m.state != TxnState::Ongoing;
                if !new {
                    return Ok((Vec::new(), ()));
                }
                let mut next = m.clone();
                if next.state != TxnState::Ongoing {
                    next.start_ms = now;
                    next.partitions.clear();
                    next.groups.clear();
                }
                next.state = TxnState::Ongoing;
                next.partitions.extend(partitions.iter().cloned());
                if let Some(g) = group {
                    next.groups.insert(g.to_string());
                }
                next.last_update_ms = now;
                Ok((vec![TxnRecord::put(&next)], ()))
            })
            .map_err(refused)
    }

    /// Whether every one of `partitions` is in the ongoing transaction of producer `p` of
    /// `transactional_id` (AddPartitionsToTxn `verify_only`, Kafka's
    /// `handleVerifyPartitionsInTransaction`): INVALID_PRODUCER_ID_MAPPING for another producer
    /// id (or an unknown transactional id), PRODUCER_FENCED for another epoch,
    /// CONCURRENT_TRANSACTIONS while the transaction ends, else per partition NONE or
    /// INVALID_TXN_STATE (not added to the transaction).
    pub fn verify_partitions(
        &self,
        transactional_id: &str,
        p: ProducerIdent,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        self.runtime.read(|s| {
            let m = s
                .txns
                .get(transactional_id)
                .ok_or(ResponseError::InvalidProducerIdMapping)?;
            if m.producer_id != p.producer_id {
                return Err(ResponseError::InvalidProducerIdMapping);
            }
            if m.producer_epoch != p.producer_epoch {
                return Err(ResponseError::ProducerFenced);
            }
            if matches!(
                m.state,
                TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence
            ) {
                return Err(ResponseError::ConcurrentTransactions);
            }
            let ongoing = m.state == TxnState::Ongoing;
            Ok(partitions
                .iter()
                .map(|x| {
                    if ongoing && m.partitions.contains(x) {
                        Ok(())
                    } else {
                        Err(ResponseError::InvalidTxnState)
                    }
                })
                .collect())
        })
    }

    /// Whether `p` is the current producer of `transactional_id` with an ongoing transaction
    /// (TxnOffsetCommit checks it).
    pub fn is_ongoing(
        &self,
        transactional_id: &str,
        p: ProducerIdent,
    ) -> Result<(), ResponseError> {
        self.runtime.read(|s| {
            let m = check(&s.txns, transactional_id, p)?;
            if m.state == TxnState::Ongoing {
                Ok(())
            } else {
                Err(ResponseError::InvalidTxnState)
            }
        })
    }

    /// EndTxn. Blocking (writes markers).
    pub fn end_txn(
        &self,
        markers: &Markers<'_>,
        transactional_id: &str,
        p: ProducerIdent,
        commit: bool,
    ) -> Result<(), ResponseError> {
        let now = self.clock.now_ms();
        let to_finish = self
            .runtime
            .write_and_wait(|s: &TxnShard| {
                let m = check(&s.txns, transactional_id, p)?;
                match (m.state, commit) {
                    (TxnState::Ongoing, _) => {
                        let next = prepared(m, commit, now);
                        Ok((vec![TxnRecord::put(&next)], Some(next)))
                    }
                    // A retried EndTxn that already completed.
                    (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                        Ok((Vec::new(), None))
                    }
                    (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                        Err(ResponseError::ConcurrentTransactions)
                    }
                    // Aborting an empty transaction is allowed (clients do it after an error).
                    (TxnState::Empty, false) => Ok((Vec::new(), None)),
                    _ => Err(ResponseError::InvalidTxnState),
                }
            })
            .map_err(refused)?;
        if let Some(m) = to_finish {
            // The outcome is decided once Prepare is written (Kafka answers EndTxn then and
            // writes the markers afterwards): markers that cannot be written now are the
            // timer's to finish; meanwhile the producer's next request for this id gets
            // CONCURRENT_TRANSACTIONS.
            if let Err(e) = self.complete(markers, &m, commit) {
                tracing::warn!(transactional_id, commit, error = %e,
                    "ending a transaction: markers not all written yet; the timer retries");
            }
        }
        Ok(())
    }

    /// The second phase of ending a transaction whose Prepare state is written: markers on
    /// every partition (and the group offsets applied or dropped), then Complete. Complete is
    /// written only if the id is still in that Prepare state (nobody finished it meanwhile).
    fn complete(
        &self,
        markers: &Markers<'_>,
        prepared: &TxnMetadata,
        commit: bool,
    ) -> io::Result<()> {
        let marker = Marker {
            producer_id: prepared.producer_id,
            producer_epoch: prepared.producer_epoch,
            commit,
            coordinator_epoch: self.coordinator_epoch,
        };
        markers.write(&marker, &prepared.partitions)?;
        let mut done = prepared.clone();
        done.state = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        done.partitions.clear();
        done.groups.clear();
        done.last_update_ms = self.clock.now_ms();
        self.runtime
            .write_and_wait(|s: &TxnShard| {
                let current = s.txns.get(&prepared.transactional_id);
                let unchanged = current.is_some_and(|m| {
                    m.state == prepared.state
                        && m.producer_id == prepared.producer_id
                        && m.producer_epoch == prepared.producer_epoch
                });
                let records = if unchanged {
                    vec![TxnRecord::put(&done)]
                } else {
                    Vec::new()
                };
                Ok::<_, ()>((records, ()))
            })
            .map_err(|e| match e {
                WriteError::Storage(e) => e,
                WriteError::Refused(()) => io::Error::other("unreachable: never refused"),
            })?;
        tracing::debug!(transactional_id = %prepared.transactional_id, commit, "transaction ended");
        Ok(())
    }

    /// The timer: aborts transactions past their timeout (bumping the epoch, which fences the
    /// producer) and finishes transactions a crash left prepared. Blocking.
    pub fn tick(&self, markers: &Markers<'_>, expiration_ms: i64) {
        let now = self.clock.now_ms();
        // Transactional ids idle for `transactional.id.expiration.ms` with no transaction in
        // flight are forgotten (a tombstone in __transaction_state).
        let idle = |m: &&TxnMetadata| {
            matches!(
                m.state,
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
            ) && now - m.last_update_ms > expiration_ms
        };
        // Checked first: a write of nothing would still wait for the last one (see
        // `Runtime::write`), which a paused follower can hold up.
        let expired = if !self.runtime.read(|s| s.txns.values().any(|m| idle(&m))) {
            Ok(0)
        } else {
            self.runtime.write_and_wait(|s: &TxnShard| {
                let tombstones: Vec<TxnRecord> = s
                    .txns
                    .values()
                    .filter(idle)
                    .map(|m| TxnRecord {
                        transactional_id: m.transactional_id.clone(),
                        value: None,
                    })
                    .collect();
                let count = tombstones.len();
                Ok::<_, ()>((tombstones, count))
            })
        };
        match expired {
            Ok(0) => {}
            Ok(n) => tracing::info!(transactional_ids = n, "expired idle transactional ids"),
            Err(e) => tracing::error!(error = ?e, "expiring transactional ids failed"),
        }
        let due: Vec<TxnMetadata> = self.runtime.read(|s| {
            s.txns
                .values()
                .filter(|m| match m.state {
                    TxnState::Ongoing => now - m.start_ms > m.timeout_ms as i64,
                    TxnState::PrepareCommit
                    | TxnState::PrepareAbort
                    | TxnState::PrepareEpochFence => true,
                    _ => false,
                })
                .cloned()
                .collect()
        });
        for m in due {
            let result = match m.state {
                TxnState::Ongoing => self.abort_timed_out(markers, &m, now),
                TxnState::PrepareCommit => self.complete(markers, &m, true),
                _ => self.complete(markers, &m, false),
            };
            if let Err(e) = result {
                tracing::warn!(transactional_id = %m.transactional_id, error = %e,
                    "ending a transaction failed; retrying later");
            }
        }
    }

    /// Aborts `seen`'s transaction with a bumped epoch (which fences its producer), if it is
    /// still that ongoing transaction.
    fn abort_timed_out(
        &self,
        markers: &Markers<'_>,
        seen: &TxnMetadata,
        now: i64,
    ) -> io::Result<()> {
        let fenced = self
            .runtime
            .write_and_wait(|s: &TxnShard| {
                let Some(m) = s.txns.get(&seen.transactional_id) else {
                    return Ok((Vec::new(), None));
                };
                if m.state != TxnState::Ongoing
                    || m.producer_epoch != seen.producer_epoch
                    || m.start_ms != seen.start_ms
                {
                    return Ok((Vec::new(), None));
                }
                tracing::info!(transactional_id = %m.transactional_id,
                    timeout_ms = m.timeout_ms, "aborting a transaction past its timeout");
                let mut fenced = prepared(m, false, now);
                fenced.producer_epoch = fenced.producer_epoch.saturating_add(1);
                Ok::<_, ()>((vec![TxnRecord::put(&fenced)], Some(fenced)))
            })
            .map_err(|e| match e {
                WriteError::Storage(e) => e,
                WriteError::Refused(()) => io::Error::other("unreachable: never refused"),
            })?;
        match fenced {
            Some(m) => self.complete(markers, &m, false),
            None => Ok(()),
        }
    }

    pub fn describe(&self, transactional_id: &str) -> Option<TxnMetadata> {
        self.runtime.read(|s| s.txns.get(transactional_id).cloned())
    }

    pub fn list(&self) -> Vec<TxnMetadata> {
        let mut all: Vec<_> = self.runtime.read(|s| s.txns.values().cloned().collect());
        all.sort_by(|a: &TxnMetadata, b| a.transactional_id.cmp(&b.transactional_id));
        all
    }
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
            Ok(crate::log::batch::plain_record(
                i,
                Some(key.freeze()),
                m.map(encode_value).transpose()?,
                now,
            ))
        })
        .collect::<io::Result<_>>()?;
    crate::log::batch::encode_records(&records)
}
