//! Producer state of one partition: for each producer id, its epoch, the sequence ranges and
//! offsets of its last few batches, and the first offset of its ongoing transaction.
//!
//! Idempotence: a retried batch is recognised and answered with its original offsets instead of
//! being appended twice; a gap in sequences or a stale epoch is refused as Kafka does.
//!
//! Transactions (KIP-98): a producer's first transactional batch in this partition opens its
//! transaction here (its base offset is remembered); a commit or abort marker closes it. The
//! smallest first offset of the open transactions bounds the last stable offset. While a
//! producer's transaction is open its non-transactional batches are refused (Kafka's
//! INVALID_TXN_STATE); markers with a stale producer epoch or coordinator epoch are refused.
//!
//! Verification (KIP-890 part 1, Kafka's `VerificationGuard`): before a client's batch may
//! open a transaction here, the produce path asks the transaction coordinator whether this
//! partition is in the producer's ongoing transaction. That answer can be stale by the time
//! the batch is appended (the transaction aborted meanwhile, its marker already written): so
//! a guard is taken before asking ([`ProducerStates::begin_verification`]), any marker or
//! transaction start of that producer here clears it, and the append of a batch that would
//! open a transaction is accepted only with the guard still in place
//! ([`ProducerStates::check_verified`]). Guards live in memory only, as Kafka's.
//!
//! A clean shutdown saves the state beside the segments (`producer.snapshot`, JSON, open
//! transactions included); otherwise it is rebuilt from batch headers (and markers' control
//! records) when the log is opened. Expiry of idle producers (`producer.id.expiration.ms`) is
//! not done yet.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::batch::BatchHeader;
use super::txn::{AbortedTxn, ControlRecord};

/// Batches remembered per producer: clients keep at most 5 in flight per partition.
pub const BATCHES_REMEMBERED: usize = 5;

/// Most producer ids one partition tracks. Any client may write batches under a producer id
/// of its choosing, and each one seen is remembered until `producer.id.expiration.ms` of
/// idleness: past this, batches from producer ids not yet tracked are refused (retriably)
/// until expiry frees room. Producers already tracked are never affected. (Kafka bounds the
/// same growth by expiry plus KIP-936's rate limit on new producer ids.)
pub const PRODUCERS_PER_PARTITION_MAX: usize = 100_000;

/// A producer's pending transaction verification in one partition (see the module docs):
/// taken before the coordinator is asked, required by the append that opens the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerificationGuard(u64);

/// Where the next [`VerificationGuard`] comes from (unique in the process).
static NEXT_GUARD: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Clone, Copy)]
struct Verifying {
    guard: VerificationGuard,
    since_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct BatchSeq {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
    last_offset: i64,
}

fn no_epoch() -> i32 {
    -1
}

#[derive(Debug, Serialize, Deserialize)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchSeq>,
    /// Epoch of the coordinator that wrote this producer's last marker (-1: none yet).
    #[serde(default = "no_epoch")]
    coordinator_epoch: i32,
    /// First offset of the producer's ongoing transaction in this partition.
    #[serde(default)]
    txn_first_offset: Option<i64>,
    /// Largest timestamp of the producer's batches: what `producer.id.expiration.ms` counts
    /// from (as Kafka, so that a state rebuilt from the log expires the same way).
    #[serde(default)]
    last_timestamp_ms: i64,
}

impl Default for ProducerEntry {
    fn default() -> Self {
        ProducerEntry {
            epoch: -1,
            batches: VecDeque::new(),
            coordinator_epoch: -1,
            last_timestamp_ms: -1,
            txn_first_offset: None,
        }
    }
}

impl ProducerEntry {
    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New data in sequence: append it.
    Append,
    /// A retry of a batch already in the log, at these offsets.
    Duplicate { base_offset: i64, last_offset: i64 },
}

/// Why a producer's batch or marker was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// Kafka's INVALID_PRODUCER_EPOCH.
    #[error("producer epoch {got} is older than the current epoch {current}")]
    StaleEpoch { got: i16, current: i16 },
    /// Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER.
    #[error("out of order sequence number: expected {expected}, got {got}")]
    OutOfOrder { expected: i32, got: i32 },
    /// Kafka's INVALID_TXN_STATE: a non-transactional batch while the producer's transaction is open.
    #[error("expected a transactional write from producer {producer_id}: its transaction in this partition is ongoing")]
    InvalidTxnState { producer_id: i64 },
    /// Kafka's INVALID_TXN_STATE: a client's batch would open a transaction here without a
    /// verification still standing (none asked, or the transaction ended meanwhile).
    #[error("the transaction of producer {producer_id} was not verified for this partition, or ended since")]
    NotVerified { producer_id: i64 },
    /// Kafka's TRANSACTION_COORDINATOR_FENCED: a marker from an older coordinator.
    #[error("coordinator epoch {got} is older than the current coordinator epoch {current}")]
    CoordinatorFenced { got: i32, current: i32 },
    /// The partition already tracks [`PRODUCERS_PER_PARTITION_MAX`] producer ids.
    #[error("the partition already tracks {limit} producer ids; retry once idle ones expire")]
    TooManyProducers { limit: usize },
}

/// One producer's state in a partition, as DescribeProducers reports it (-1: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp_ms: i64,
    pub coordinator_epoch: i32,
    pub current_txn_start_offset: i64,
}

/// A transaction ended in this partition by a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub aborted: bool,
}

impl CompletedTxn {
    /// The transaction index entry of this (aborted) transaction, given the producer state
    /// right after it ended.
    pub fn index_entry(&self, producers: &ProducerStates) -> AbortedTxn {
        AbortedTxn {
            producer_id: self.producer_id,
            first_offset: self.first_offset,
            last_offset: self.last_offset,
            last_stable_offset: producers
                .first_unstable_offset()
                .unwrap_or(self.last_offset + 1),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(from = "StoredProducerStates")]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: (first offset, producer id). Derived from `producers`.
    #[serde(skip)]
    ongoing: BTreeSet<(i64, i64)>,
    /// Pending verifications by producer id (never saved).
    #[serde(skip)]
    verifying: HashMap<i64, Verifying>,
}

/// The snapshot's shape (the open-transaction set is derived on load).
#[derive(Deserialize)]
struct StoredProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

impl From<StoredProducerStates> for ProducerStates {
    fn from(stored: StoredProducerStates) -> Self {
        let ongoing = stored
            .producers
            .iter()
            .filter_map(|(&pid, e)| e.txn_first_offset.map(|first| (first, pid)))
            .collect();
        ProducerStates {
            producers: stored.producers,
            ongoing,
            verifying: HashMap::new(),
        }
    }
}

fn next_sequence(s: i32) -> i32 {
    if s == i32::MAX {
        0
    } else {
        s + 1
    }
}

impl ProducerStates {
    /// Checks a data batch carrying a producer id before it is appended. Batches without a
    /// sequence (internal appends such as the coordinators') get only the epoch and
    /// transaction-state checks.
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        let Some(entry) = self.producers.get(&h.producer_id) else {
            if self.producers.len() >= PRODUCERS_PER_PARTITION_MAX {
                return Err(SequenceError::TooManyProducers {
                    limit: PRODUCERS_PER_PARTITION_MAX,
                });
            }
            // Unknown producer (new, or its state predates this log): accept its sequence.
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                got: h.producer_epoch,
                current: entry.epoch,
            });
        }
        if h.base_sequence >= 0 {
            if let Some(duplicate) = Self::check_sequence(entry, h)? {
                return Ok(duplicate);
            }
        }
        if entry.txn_first_offset.is_some() && !h.is_transactional() {
            return Err(SequenceError::InvalidTxnState {
                producer_id: h.producer_id,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Sequence rules of an idempotent batch: `Some(Duplicate)` for a retry.
    fn check_sequence(
        entry: &ProducerEntry,
        h: &BatchHeader,
    ) -> Result<Option<SequenceCheck>, SequenceError> {
        if h.producer_epoch > entry.epoch {
            // A bumped epoch starts its sequences again at 0.
            return if h.base_sequence == 0 {
                Ok(None)
            } else {
                Err(SequenceError::OutOfOrder {
                    expected: 0,
                    got: h.base_sequence,
                })
            };
        }
        let last_sequence = h.last_sequence();
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == h.base_sequence && b.last_sequence == last_sequence)
        {
            return Ok(Some(SequenceCheck::Duplicate {
                base_offset: b.base_offset,
                last_offset: b.last_offset,
            }));
        }
        let expected = entry
            .batches
            .back()
            .map(|b| next_sequence(b.last_sequence))
            .unwrap_or(h.base_sequence);
        if h.base_sequence != expected {
            return Err(SequenceError::OutOfOrder {
                expected,
                got: h.base_sequence,
            });
        }
        Ok(None)
    }

    /// Records an appended data batch carrying a producer id (`h` has its assigned base
    /// offset): its sequences, and the start of a transaction for a producer's first
    /// transactional batch.
    /// Forgets producers idle for `expiration_ms` (Kafka's `producer.id.expiration.ms`) that
    /// have no ongoing transaction here. Returns how many were forgotten. A forgotten
    /// producer's next batch is accepted as from a new producer.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        // A verification whose produce never came (refused by the coordinator, or the
        // client gone) is forgotten on the same clock.
        self.verifying
            .retain(|_, v| now_ms - v.since_ms < expiration_ms);
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms - e.last_timestamp_ms < expiration_ms
        });
        before - self.producers.len()
    }

    pub fn record(&mut self, h: &BatchHeader) {
        let entry = self.producers.entry(h.producer_id).or_default();
        entry.set_epoch(h.producer_epoch);
        entry.last_timestamp_ms = entry.last_timestamp_ms.max(h.max_timestamp);
        if h.base_sequence >= 0 {
            if entry.batches.len() == BATCHES_REMEMBERED {
                entry.batches.pop_front();
            }
            entry.batches.push_back(BatchSeq {
                first_sequence: h.base_sequence,
                last_sequence: h.last_sequence(),
                base_offset: h.base_offset,
                last_offset: h.last_offset(),
            });
        }
        if h.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(h.base_offset);
            self.ongoing.insert((h.base_offset, h.producer_id));
            // The verified transaction has started: the guard is spent.
            self.verifying.remove(&h.producer_id);
        }
    }

    /// Before asking the coordinator whether `producer_id`'s transaction includes this
    /// partition: None when the producer's transaction is already open here (nothing to
    /// verify), else the guard the append must present (the pending one if another request
    /// of the same transaction took it first: in-flight batches share it).
    pub fn begin_verification(
        &mut self,
        producer_id: i64,
        now_ms: i64,
    ) -> Result<Option<VerificationGuard>, SequenceError> {
        if self.ongoing_transaction(producer_id).is_some() {
            return Ok(None);
        }
        if let Some(v) = self.verifying.get(&producer_id) {
            return Ok(Some(v.guard));
        }
        if self.verifying.len() >= PRODUCERS_PER_PARTITION_MAX {
            return Err(SequenceError::TooManyProducers {
                limit: PRODUCERS_PER_PARTITION_MAX,
            });
        }
        let guard = VerificationGuard(NEXT_GUARD.fetch_add(1, Ordering::Relaxed));
        self.verifying.insert(
            producer_id,
            Verifying {
                guard,
                since_ms: now_ms,
            },
        );
        Ok(Some(guard))
    }

    /// Whether a client's batch may be appended as far as verification goes: a
    /// transactional batch that would open its producer's transaction here needs `guard` to
    /// be the one still pending (a marker or another transaction start since clears it).
    pub fn check_verified(
        &self,
        h: &BatchHeader,
        guard: Option<VerificationGuard>,
    ) -> Result<(), SequenceError> {
        if !h.is_transactional()
            || h.is_control()
            || self.ongoing_transaction(h.producer_id).is_some()
        {
            return Ok(());
        }
        match (self.verifying.get(&h.producer_id), guard) {
            (Some(v), Some(g)) if v.guard == g => Ok(()),
            _ => Err(SequenceError::NotVerified {
                producer_id: h.producer_id,
            }),
        }
    }

    /// Checks a transaction marker before it is appended (Kafka's rules for transaction
    /// versions 0/1): the producer epoch may not go back, nor the coordinator epoch.
    pub fn check_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), SequenceError> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if producer_epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                got: producer_epoch,
                current: entry.epoch,
            });
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return Err(SequenceError::CoordinatorFenced {
                got: coordinator_epoch,
                current: entry.coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Records an appended marker at `marker_offset`: ends the producer's transaction here (if
    /// one is open: returns it) and takes the marker's epochs.
    pub fn complete_txn(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        marker_offset: i64,
        commit: bool,
    ) -> Option<CompletedTxn> {
        // Whatever was verified before this marker belongs to a transaction that has ended.
        self.verifying.remove(&producer_id);
        let entry = self.producers.entry(producer_id).or_default();
        entry.set_epoch(producer_epoch);
        entry.coordinator_epoch = coordinator_epoch;
        let first_offset = entry.txn_first_offset.take()?;
        self.ongoing.remove(&(first_offset, producer_id));
        Some(CompletedTxn {
            producer_id,
            first_offset,
            last_offset: marker_offset,
            aborted: !commit,
        })
    }

    /// Replays one stored batch (rebuilding the state from the log): data batches as
    /// [`ProducerStates::record`], transaction markers as [`ProducerStates::complete_txn`].
    /// No checks: the log is what it is.
    pub fn replay(
        &mut self,
        h: &BatchHeader,
        control: Option<ControlRecord>,
    ) -> Option<CompletedTxn> {
        if !h.has_producer_id() {
            return None;
        }
        if !h.is_control() {
            self.record(h);
            return None;
        }
        let c = control?;
        let commit = c.marker()?;
        self.complete_txn(
            h.producer_id,
            h.producer_epoch,
            c.coordinator_epoch,
            h.base_offset,
            commit,
        )
    }

    /// The first offset of the oldest ongoing transaction.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.first().map(|&(first, _)| first)
    }

    /// The ongoing transactions: (producer id, first offset), oldest first.
    pub fn ongoing_transactions(&self) -> Vec<(i64, i64)> {
        self.ongoing
            .iter()
            .map(|&(first, pid)| (pid, first))
            .collect()
    }

    /// Every producer this partition tracks (Kafka's `activeProducers`, what
    /// DescribeProducers lists), by producer id.
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut out: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(&producer_id, e)| ActiveProducer {
                producer_id,
                producer_epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_sequence),
                last_timestamp_ms: e.last_timestamp_ms,
                coordinator_epoch: e.coordinator_epoch,
                current_txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_unstable_by_key(|p| p.producer_id);
        out
    }

    /// The first offset of `producer_id`'s ongoing transaction here.
    pub fn ongoing_transaction(&self, producer_id: i64) -> Option<i64> {
        self.producers.get(&producer_id)?.txn_first_offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            total_bytes: 100,
            partition_leader_epoch: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn new_producer_ids_are_bounded_per_partition() {
        let mut states = ProducerStates::default();
        for pid in 0..PRODUCERS_PER_PARTITION_MAX as i64 {
            let h = header(pid, 0, 0, 1, pid);
            assert_eq!(states.check(&h), Ok(SequenceCheck::Append));
            states.record(&h);
        }
        let newcomer = header(PRODUCERS_PER_PARTITION_MAX as i64, 0, 0, 1, 0);
        assert_eq!(
            states.check(&newcomer),
            Err(SequenceError::TooManyProducers {
                limit: PRODUCERS_PER_PARTITION_MAX
            })
        );
        // A tracked producer carries on.
        assert_eq!(
            states.check(&header(7, 0, 1, 1, 0)),
            Ok(SequenceCheck::Append)
        );
        // Expiry frees room.
        assert!(states.expire(i64::MAX, 1) > 0);
        assert_eq!(states.check(&newcomer), Ok(SequenceCheck::Append));
    }

    #[test]
    fn idle_producers_expire_unless_in_a_transaction() {
        let mut s = ProducerStates::default();
        let mut old = header(1, 0, 0, 1, 0);
        old.max_timestamp = 1_000;
        let mut fresh = header(2, 0, 0, 1, 1);
        fresh.max_timestamp = 9_000;
        s.record(&old);
        s.record(&fresh);
        assert_eq!(s.expire(10_000, 5_000), 1, "producer 1 idle for 9 s");
        // Producer 2 is still known: its retry is a duplicate.
        assert!(matches!(
            s.check(&fresh),
            Ok(SequenceCheck::Duplicate { .. })
        ));
        // Producer 1 is forgotten: its next batch is accepted as from a new producer.
        assert_eq!(s.check(&header(1, 0, 7, 1, 2)), Ok(SequenceCheck::Append));
        assert_eq!(s.expire(100_000, 5_000), 1);
    }

    #[test]
    fn duplicates_gaps_and_epochs() {
        let mut s = ProducerStates::default();
        let first = header(7, 0, 0, 3, 10);
        assert_eq!(s.check(&first), Ok(SequenceCheck::Append));
        s.record(&first);
        assert_eq!(
            s.check(&header(7, 0, 0, 3, -1)),
            Ok(SequenceCheck::Duplicate {
                base_offset: 10,
                last_offset: 12
            })
        );
        assert_eq!(
            s.check(&header(7, 0, 4, 1, -1)),
            Err(SequenceError::OutOfOrder {
                expected: 3,
                got: 4
            })
        );
        let second = header(7, 0, 3, 2, 13);
        assert_eq!(s.check(&second), Ok(SequenceCheck::Append));
        s.record(&second);
        assert_eq!(s.check(&header(7, 1, 0, 1, -1)), Ok(SequenceCheck::Append));
        s.record(&header(7, 1, 0, 1, 15));
        assert!(matches!(
            s.check(&header(7, 0, 5, 1, -1)),
            Err(SequenceError::StaleEpoch { .. })
        ));
        assert_eq!(s.check(&header(8, 0, 42, 1, -1)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn sequences_wrap() {
        let h = header(1, 0, i32::MAX - 1, 3, 0);
        assert_eq!(h.last_sequence(), 0);
        let mut s = ProducerStates::default();
        s.record(&h);
        assert_eq!(s.check(&header(1, 0, 1, 1, -1)), Ok(SequenceCheck::Append));
    }

    fn txn_header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            attributes: crate::log::batch::ATTR_TRANSACTIONAL,
            ..header(pid, epoch, seq, count, base_offset)
        }
    }

    #[test]
    fn transactions_open_and_close() {
        let mut s = ProducerStates::default();
        assert_eq!(s.first_unstable_offset(), None);
        s.record(&txn_header(1, 0, 0, 2, 10));
        s.record(&txn_header(2, 0, 0, 1, 12));
        s.record(&txn_header(1, 0, 2, 1, 13)); // same transaction
        assert_eq!(s.first_unstable_offset(), Some(10));
        assert_eq!(s.ongoing_transactions(), vec![(1, 10), (2, 12)]);
        // A plain batch from a producer inside a transaction: refused; from another: fine.
        assert_eq!(
            s.check(&header(1, 0, 3, 1, -1)),
            Err(SequenceError::InvalidTxnState { producer_id: 1 })
        );
        assert_eq!(
            s.check(&txn_header(1, 0, 3, 1, -1)),
            Ok(SequenceCheck::Append)
        );
        // Markers: stale epochs refused, a commit closes, a marker without a transaction too.
        assert!(s.check_marker(1, 0, 0).is_ok());
        let done = s.complete_txn(1, 0, 3, 14, true).unwrap();
        assert_eq!(
            (done.first_offset, done.last_offset, done.aborted),
            (10, 14, false)
        );
        assert_eq!(
            s.check_marker(1, 0, 2),
            Err(SequenceError::CoordinatorFenced { got: 2, current: 3 })
        );
        assert_eq!(s.complete_txn(1, 0, 3, 15, false), None);
        assert_eq!(s.first_unstable_offset(), Some(12));
        // The sequence survives a marker of the same epoch; an epoch bump resets it.
        assert_eq!(s.check(&header(1, 0, 3, 1, -1)), Ok(SequenceCheck::Append));
        s.complete_txn(2, 1, 3, 16, false).unwrap();
        assert_eq!(
            s.check(&header(2, 0, 1, 1, -1)),
            Err(SequenceError::StaleEpoch { got: 0, current: 1 })
        );
        assert!(matches!(
            s.check_marker(2, 0, 3),
            Err(SequenceError::StaleEpoch { .. })
        ));
        // Coordinator writes (no sequence) open transactions too, with no sequence checks.
        s.record(&txn_header(9, 0, -1, 3, 20));
        assert_eq!(
            s.check(&txn_header(9, 0, -1, 1, -1)),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(s.ongoing_transaction(9), Some(20));
    }

    #[test]
    fn snapshot_keeps_open_transactions_and_reads_old_snapshots() {
        let mut s = ProducerStates::default();
        s.record(&header(1, 0, 0, 1, 0));
        s.record(&txn_header(2, 3, 0, 2, 1));
        s.complete_txn(3, 0, 7, 5, false);
        let json = serde_json::to_vec(&s).unwrap();
        let back: ProducerStates = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.first_unstable_offset(), Some(1));
        assert_eq!(back.ongoing_transactions(), vec![(2, 1)]);
        assert_eq!(
            back.check_marker(3, 0, 6),
            Err(SequenceError::CoordinatorFenced { got: 6, current: 7 })
        );
        assert_eq!(
            back.check(&header(1, 0, 0, 1, -1)),
            Ok(SequenceCheck::Duplicate {
                base_offset: 0,
                last_offset: 0
            })
        );
        // A snapshot written before transactions existed.
        let old = br#"{"producers":{"5":{"epoch":2,"batches":[{"first_sequence":0,"last_sequence":4,"base_offset":0,"last_offset":4}]}}}"#;
        let old: ProducerStates = serde_json::from_slice(old).unwrap();
        assert_eq!(old.first_unstable_offset(), None);
        assert_eq!(
            old.check(&header(5, 2, 5, 1, -1)),
            Ok(SequenceCheck::Append)
        );
    }
}
