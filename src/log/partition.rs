//! The partition log (Kafka's `UnifiedLog`): one partition's log as the broker sees it. It
//! owns the state lock, under which the local log of segments (`local_log`), the producer
//! state, the leader-epoch cache, the high watermark and the log start offset change
//! together, and answers for them: the high watermark and who moves it, the last stable
//! offset and read isolation, reads of whole batches and timestamp lookups, the latches
//! (failed, closed), and the notifier that wakes fetches waiting for data. Its write path,
//! `append_as_leader` (offsets assigned, the leader epoch stamped, sequences checked),
//! `append_as_follower` (a leader's batches as they are), markers, rolls and `truncate_to`,
//! is the child module `append`.
//!
//! The rest of the log's work lives beside it: opening and recovery in `loader`, fsyncs and
//! checkpoint files in `flush`, retention and DeleteRecords in `retention`, compaction in
//! `cleaner`.

use crate::clock::Clock;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use kafka_protocol::records::Record;
use tokio::sync::Notify;

use super::batch::BatchHeader;
use super::config::LogConfig;
use super::epoch_cache::{EpochCache, EpochEntry};
use super::flush::{Checkpoint, FlushState};
use super::local_log::LocalLog;
use super::open_files::OpenFiles;
use super::producer_state::{ProducerStates, SequenceError};
use super::segment::{Segment, Window};
use super::store::Records;
use super::txn::AbortedTxn;
use super::validate::{
    decode_stored_batches, stored_records, StoredBatchError, STORED_DECOMPRESSED_MAX_BYTES,
};
use crate::log_every::LogLimit;

mod append;
pub use append::ClientBatches;

/// Where a successful append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
    /// The flush policy wants this append durable before it is acknowledged: call
    /// [`PartitionLog::sync_to`] with `last_offset + 1`.
    pub needs_sync: bool,
    /// The leader epoch this replica led at when it appended (or found the duplicate): a
    /// wait for the batch's replication holds only while it still leads at this epoch (see
    /// [`PartitionLog::wait_high_watermark`]).
    pub leader_epoch: i32,
}

/// Bytes read per header read while locating a fetch's batches: a few headers' worth, as an
/// index lookup lands at most an index interval (4 KB by default) before the wanted batch.
const FETCH_WINDOW_BYTES: usize = 8 * 1024;

/// Whole batches read from the log, with the offsets a fetch response reports.
#[derive(Debug, Clone)]
pub struct ReadInfo<R = Bytes> {
    pub records: R,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// The LSO when the read began (reported whatever the isolation, as Kafka does).
    pub last_stable_offset: i64,
    /// With [`Isolation::ReadCommitted`]: the aborted transactions overlapping the returned
    /// batches (what a fetch response's `aborted_transactions` lists). Empty otherwise.
    pub aborted_transactions: Vec<AbortedTxn>,
}

/// What a read may return (Fetch's `isolation_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Everything below the high watermark.
    #[default]
    ReadUncommitted,
    /// Only batches below the last stable offset.
    ReadCommitted,
    /// Everything up to the log end: a follower's fetch (it replicates what the high
    /// watermark does not cover yet).
    LogEnd,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("offset {offset} is outside the log range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Sequence(#[from] SequenceError),
    #[error("invalid transaction marker: {0}")]
    InvalidMarker(&'static str),
    /// An earlier write or fsync of this log failed: what the kernel kept is unknown, so the
    /// log answers nothing until a restart recovers it (Kafka's log-dir failure).
    #[error("the partition's log is offline after a failed write or fsync")]
    Failed,
    /// The log was closed: its topic was deleted, or the broker is stopping.
    #[error("the partition's log is closed (topic deleted or broker stopping)")]
    Closed,
    /// [`PartitionLog::try_append_client`]: the append needs a new segment first (a file to
    /// create) or its segment file opened, which must not happen on the async runtime. Nothing was appended; append with
    /// [`PartitionLog::append_client`] on the blocking pool.
    #[error("the append needs a new segment")]
    RollNeeded,
    /// [`PartitionLog::append_as_follower`]: a batch does not continue the log.
    #[error("follower append at offset {got}, expected at least {expected_at_least}")]
    UnexpectedOffset { expected_at_least: i64, got: i64 },
    /// A leader append (a produce, a coordinator's write, a marker) to a replica that no
    /// longer leads ([`PartitionLog::set_following`]): nothing was appended.
    #[error("this replica does not lead the partition")]
    NotLeader,
}

/// Why [`PartitionLog::wait_high_watermark`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HwWaitError {
    /// The timeout passed first.
    #[error("the high watermark did not reach the offset in time")]
    TimedOut,
    /// The replica stopped leading at the epoch of the write (demoted, or leading again at a
    /// newer epoch): the write may have been truncated since.
    #[error("the replica no longer leads at the leader epoch of the write")]
    LeadershipChanged,
    /// The log was closed (topic deleted, broker stopping).
    #[error("the log was closed")]
    Closed,
}

impl LogError {
    /// Whether this error was already reported (the latch logs once): callers need not log it.
    pub fn is_latched(&self) -> bool {
        matches!(self, LogError::Failed | LogError::Closed)
    }
}

/// What the state lock guards.
pub(super) struct LogState {
    /// The segments (no lock of their own: this one guards them).
    pub(super) local: LocalLog,
    pub(super) log_start_offset: i64,
    pub(super) producers: ProducerStates,
    pub(super) config: LogConfig,
    /// What the checkpoint file last recorded (disk mode), to write it only on change.
    pub(super) checkpointed: Checkpoint,
    /// The producer snapshot file's contents as last read or written (disk mode): a clean stop
    /// rewrites it only when they changed.
    pub(super) snapshot_on_disk: Option<Vec<u8>>,
    /// The end offset of the range the last compaction pass covered: a new pass runs only
    /// once more segments have rolled.
    pub(super) compacted_upto: i64,
    /// The offset below which records are committed: what consumers may read, what acks=all
    /// waits for. `log_start_offset <= high_watermark <= log end` always holds.
    pub(super) high_watermark: i64,
    /// While set (a leader that is its partition's only in-sync replica, as on a single
    /// node) every append moves the high watermark to the new log end; otherwise only
    /// [`PartitionLog::advance_high_watermark`] does (replication: the ISR's minimum).
    pub(super) hw_follows_log_end: bool,
    /// The epoch a leader append stamps on its batches (`partition_leader_epoch`).
    pub(super) leader_epoch: i32,
    /// This replica leads (at `leader_epoch`): leader appends are refused otherwise. True
    /// for a log of its own (one replica); the partition's leadership sets it.
    pub(super) leading: bool,
    /// Transactions whose marker is in the log but not yet below the high watermark: (first
    /// offset, marker offset). They still hold the LSO (Kafka's `unreplicatedTxns`): a
    /// read_committed consumer sees a transaction only once its marker is committed, so a
    /// new leader without the marker never shows it as ongoing after it was read.
    pub(super) unreplicated_txns: std::collections::BTreeSet<(i64, i64)>,
    /// Leader epoch -> first offset, for every epoch that wrote (see `epoch_cache`).
    pub(super) epochs: EpochCache,
    /// The leader-epoch checkpoint as last written (disk mode), to write it only on change.
    pub(super) epochs_written: Option<String>,
}

/// Suffix of a deleted partition's directory, renamed aside until it is removed (Kafka's).
pub const DELETED_DIR_SUFFIX: &str = "-delete";

impl LogState {
    /// The first offset of the oldest ongoing transaction (never below the log start), else
    /// the high watermark; never above the high watermark.
    pub(super) fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark;
        let unreplicated = self.unreplicated_txns.first().map(|&(first, _)| first);
        match self
            .producers
            .first_unstable_offset()
            .into_iter()
            .chain(unreplicated)
            .min()
        {
            Some(first) => first.max(self.log_start_offset).min(hw),
            None => hw,
        }
    }
}

pub struct PartitionLog {
    pub(super) state: Mutex<LogState>,
    pub(super) flush: Mutex<FlushState>,
    pub(super) flushed: Condvar,
    pub(super) hw_advanced: Notify,
    /// Notified after every append: followers' fetches wait on it.
    pub(super) appended: Notify,
    pub(super) dir: Option<PathBuf>,
    /// Where segment files are opened (disk mode).
    pub(super) files: Arc<OpenFiles>,
    /// The time of the log's own timers: segment creation (`segment.ms`), when data became
    /// dirty (`flush.ms`), marker timestamps.
    pub(super) clock: Clock,
    /// Held (on the blocking pool only) by whoever creates this log's next segment, so
    /// segment files are created one at a time; taken before the state lock.
    pub(super) roll_lock: Mutex<()>,
    /// Held while the checkpoint files are written (outside the state lock).
    pub(super) checkpoint_lock: Mutex<()>,
    /// Latched by the first failed data write or fsync ("fsyncgate": a retried fsync may
    /// succeed although the kernel dropped the dirty pages): from then on appends, reads and
    /// syncs answer [`LogError::Failed`], never success.
    pub(super) failed: AtomicBool,
    /// Set (under the state lock) when the topic is deleted or the broker stops: appends,
    /// rolls and every file write answer [`LogError::Closed`], so an in-flight handle never
    /// writes into a directory that now belongs to someone else.
    pub(super) closed: AtomicBool,
    /// A file was created in the directory (a segment at a roll, the directory itself) since
    /// its last fsync: the next sync fsyncs the directory too, before anything is durable.
    pub(super) dir_dirty: AtomicBool,
}

impl PartitionLog {
    /// An empty log held in memory.
    pub fn in_memory(config: LogConfig) -> PartitionLog {
        PartitionLog::in_memory_with_clock(config, Clock::system())
    }

    /// As [`PartitionLog::in_memory`], with its timers (`segment.ms`, `flush.ms`) on `clock`.
    pub fn in_memory_with_clock(config: LogConfig, clock: Clock) -> PartitionLog {
        PartitionLog::with_state(
            LogState {
                local: LocalLog::new(vec![Segment::new_in_memory(0, clock.now_ms())]),
                log_start_offset: 0,
                producers: ProducerStates::default(),
                config,
                checkpointed: Checkpoint::default(),
                snapshot_on_disk: None,
                compacted_upto: 0,
                high_watermark: 0,
                hw_follows_log_end: true,
                leader_epoch: 0,
                leading: true,
                unreplicated_txns: Default::default(),
                epochs: EpochCache::default(),
                epochs_written: None,
            },
            None,
            OpenFiles::shared_default(),
            clock,
        )
    }

    fn with_state(
        mut state: LogState,
        dir: Option<PathBuf>,
        files: Arc<OpenFiles>,
        clock: Clock,
    ) -> PartitionLog {
        let durable = state.local.log_end_offset();
        // A loaded log's records were all committed when they were written (one replica).
        state.high_watermark = durable;
        PartitionLog {
            state: Mutex::new(state),
            flush: Mutex::new(FlushState::new(durable)),
            flushed: Condvar::new(),
            hw_advanced: Notify::new(),
            appended: Notify::new(),
            dir,
            roll_lock: Mutex::new(()),
            checkpoint_lock: Mutex::new(()),
            failed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            dir_dirty: AtomicBool::new(false),
            files,
            clock,
        }
    }

    /// `Failed` once a write or fsync failed, `Closed` once closed.
    pub(super) fn check_usable(&self) -> Result<(), LogError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(LogError::Failed);
        }
        Ok(())
    }

    /// Latches the log failed (logged at error once, as Kafka's log-dir failure).
    pub(super) fn fail(&self, what: &str, error: &io::Error) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            tracing::error!(dir = ?self.dir, error = %error,
                "{what} failed: the partition is offline (KAFKA_STORAGE_ERROR) until a restart recovers it");
        }
    }

    /// Whether a write or fsync failed (the log is offline).
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Closes the log: every later append, roll, sync or file write answers
    /// [`LogError::Closed`]; reads of what is there go on. Taken under the state lock, so an
    /// append either completed before (and a following sync covers it) or is refused.
    pub fn close(&self) {
        let _state = self.lock();
        self.closed.store(true, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Opens the log in `dir` (created if missing). After a `clean` shutdown every segment is
    /// trusted with its index files (only the bytes after each last index entry are read).
    /// Otherwise the segments from the recovery point on are CRC-scanned and their indexes
    /// rebuilt; the first torn or corrupt batch ends the log (it and everything after it is
    /// cut, and logged).
    pub fn open(dir: &Path, config: LogConfig, clean: bool) -> io::Result<PartitionLog> {
        Self::open_with_files(
            dir,
            config,
            clean,
            OpenFiles::shared_default(),
            Clock::system(),
        )
    }

    /// As [`PartitionLog::open`], with segment files opened through `files` (the broker's
    /// bounded cache of open files) and the log's timers (`segment.ms`, `flush.ms`) on
    /// `clock`.
    pub fn open_with_files(
        dir: &Path,
        config: LogConfig,
        clean: bool,
        files: Arc<OpenFiles>,
        clock: Clock,
    ) -> io::Result<PartitionLog> {
        crate::threads::may_block("opening a partition log");
        let loaded = super::loader::load(dir, config, clean, &files, clock.now_ms())?;
        let log = PartitionLog::with_state(
            LogState {
                local: loaded.local,
                log_start_offset: loaded.log_start_offset,
                producers: loaded.producers,
                config,
                checkpointed: loaded.checkpoint,
                snapshot_on_disk: loaded.snapshot_on_disk,
                compacted_upto: 0,
                high_watermark: 0,
                hw_follows_log_end: true,
                leader_epoch: 0,
                leading: true,
                unreplicated_txns: Default::default(),
                epochs: loaded.epochs,
                epochs_written: loaded.epochs_written,
            },
            Some(dir.to_path_buf()),
            files,
            clock,
        );
        // Fsynced by the first sync (on the blocking pool), before anything is acknowledged
        // as durable; the parent's entry for a new directory is the registry's (it fsyncs the
        // data directory before the topic is persisted).
        log.dir_dirty.store(loaded.created_files, Ordering::Release);
        Ok(log)
    }

    /// Replaces the storage settings (AlterConfigs); they apply from the next append.
    pub fn set_config(&self, config: LogConfig) {
        self.lock().config = config;
    }

    pub fn config(&self) -> LogConfig {
        self.lock().config
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, LogState> {
        // A panic while holding the lock cannot leave the state half-written in a way that
        // matters more than refusing all further service, so recover the guard.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notified whenever the high watermark advances (with it the LSO may move); consumer
    /// fetches wait on it for new data.
    pub fn hw_advanced(&self) -> &Notify {
        &self.hw_advanced
    }

    /// Notified after every append (the log end moved); followers' fetches wait on it.
    pub fn appended(&self) -> &Notify {
        &self.appended
    }

    pub fn log_end_offset(&self) -> i64 {
        self.lock().local.log_end_offset()
    }

    /// The offset up to which consumers may read (see `LogState::high_watermark`).
    pub fn high_watermark(&self) -> i64 {
        self.lock().high_watermark
    }

    /// Chooses who moves the high watermark: with `follows`, every append moves it to the new
    /// log end (and it is moved there now); without, only
    /// [`PartitionLog::advance_high_watermark`] does.
    pub fn set_hw_follows_log_end(&self, follows: bool) {
        let advanced = {
            let mut state = self.lock();
            state.hw_follows_log_end = follows;
            follows && Self::raise_hw(&mut state, i64::MAX)
        };
        if advanced {
            self.hw_advanced.notify_waiters();
        }
    }

    /// Sets the high watermark of a replica being opened (its checkpointed one), clamped to
    /// `[log start, log end]`: the one call that may lower it, before the log serves anyone.
    pub fn restore_high_watermark(&self, offset: i64) {
        let mut state = self.lock();
        let end = state.local.log_end_offset();
        state.high_watermark = offset.clamp(state.log_start_offset, end);
    }

    /// Moves the high watermark up to `offset` (clamped to the log end; never down). Returns
    /// whether it moved; waiting fetches are woken when it did.
    pub fn advance_high_watermark(&self, offset: i64) -> bool {
        let advanced = Self::raise_hw(&mut self.lock(), offset);
        if advanced {
            self.hw_advanced.notify_waiters();
        }
        advanced
    }

    fn raise_hw(state: &mut LogState, offset: i64) -> bool {
        let target = offset.min(state.local.log_end_offset());
        if target <= state.high_watermark {
            return false;
        }
        state.high_watermark = target;
        // Transactions whose marker is now committed stop holding the LSO.
        state
            .unreplicated_txns
            .retain(|&(_, marker)| marker >= target);
        debug_assert!(state.log_start_offset <= state.high_watermark);
        true
    }

    pub fn log_start_offset(&self) -> i64 {
        self.lock().log_start_offset
    }

    /// The log's size in bytes: the record batches of all its segments (Kafka's
    /// `UnifiedLog.size`, what DescribeLogDirs reports). Known in memory: no file is stat'ed.
    pub fn size_bytes(&self) -> u64 {
        self.lock().local.size_bytes()
    }

    /// The last stable offset: the first offset of the oldest ongoing transaction (not below
    /// the log start), else the high watermark. read_committed consumers read below it.
    pub fn last_stable_offset(&self) -> i64 {
        self.lock().last_stable_offset()
    }

    /// The ongoing transactions in this partition: (producer id, first offset), oldest first.
    pub fn ongoing_transactions(&self) -> Vec<(i64, i64)> {
        self.lock().producers.ongoing_transactions()
    }

    /// The producers this partition tracks (DescribeProducers).
    pub fn active_producers(&self) -> Vec<crate::log::producer_state::ActiveProducer> {
        self.lock().producers.active()
    }

    /// The first offset of `producer_id`'s ongoing transaction in this partition, if any.
    pub fn ongoing_transaction(&self, producer_id: i64) -> Option<i64> {
        self.lock().producers.ongoing_transaction(producer_id)
    }

    /// The aborted transactions overlapping offsets `[from, upper)` (marker at or after
    /// `from`, first offset before `upper`), in marker order: what a read_committed fetch of
    /// that range reports.
    pub fn aborted_transactions(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        self.lock().local.aborted_between(from, upper)
    }

    /// This replica leads at `epoch`: what it appends from now on carries it, and the
    /// leader-epoch cache has the epoch start at the log end (Kafka's `makeLeader`), before
    /// anything is appended, so a follower of an older epoch learns where that epoch ended
    /// here (DIVERGING_EPOCH, OffsetForLeaderEpoch) even while the new one has written
    /// nothing. An epoch not above the cache's newest leaves the cache alone.
    pub fn set_leader_epoch(&self, epoch: i32) {
        let changed = {
            let mut state = self.lock();
            let changed = !state.leading || state.leader_epoch != epoch;
            state.leader_epoch = epoch;
            state.leading = true;
            if state.epochs.latest_epoch().is_none_or(|e| e < epoch) {
                let end = state.local.log_end_offset();
                state.epochs.assign(epoch, end);
            }
            changed
        };
        if changed {
            // Waits for the replication of an older leadership's writes give up.
            self.hw_advanced.notify_waiters();
        }
    }

    /// This replica follows: leader appends are refused from now on ([`LogError::NotLeader`],
    /// atomically with the appends: none lands after this returns), and waits for the
    /// replication of what it appended as leader give up.
    pub fn set_following(&self) {
        let was_leading = std::mem::replace(&mut self.lock().leading, false);
        if was_leading {
            self.hw_advanced.notify_waiters();
        }
    }

    /// Whether this replica leads at `epoch`.
    pub fn leads_at(&self, epoch: i32) -> bool {
        let state = self.lock();
        state.leading && state.leader_epoch == epoch
    }

    /// The leader-epoch cache: (epoch, first offset) of every epoch that wrote.
    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.lock().epochs.entries().to_vec()
    }

    /// Where `epoch` ends in this log (OffsetForLeaderEpoch): see [`EpochCache::end_offset_for`].
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let state = self.lock();
        state
            .epochs
            .end_offset_for(epoch, state.local.log_end_offset())
    }

    /// Where `epoch` ends in this log as its leader at `leader_epoch` answers it
    /// (OffsetForLeaderEpoch): see [`EpochCache::end_offset_for_leader`].
    pub fn end_offset_for_epoch_as_leader(&self, epoch: i32, leader_epoch: i32) -> (i32, i64) {
        let state = self.lock();
        state
            .epochs
            .end_offset_for_leader(epoch, leader_epoch, state.local.log_end_offset())
    }

    /// Reads whole batches starting with the one that holds `offset`, up to `max_bytes`
    /// (but at least one batch when `min_one`, even a larger one: KIP-74), below the high
    /// watermark (read_uncommitted).
    pub fn read(&self, offset: i64, max_bytes: usize, min_one: bool) -> Result<ReadInfo, LogError> {
        self.read_with_isolation(offset, max_bytes, min_one, Isolation::ReadUncommitted)
    }

    /// As [`PartitionLog::read`], with read_committed returning only batches that end below
    /// the last stable offset (never one that starts at or after it), and the aborted
    /// transactions overlapping what it returns.
    pub fn read_with_isolation(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
        isolation: Isolation,
    ) -> Result<ReadInfo, LogError> {
        let read = self.read_records(offset, max_bytes, min_one, isolation)?;
        Ok(ReadInfo {
            records: read.records.to_bytes()?,
            high_watermark: read.high_watermark,
            log_start_offset: read.log_start_offset,
            last_stable_offset: read.last_stable_offset,
            aborted_transactions: read.aborted_transactions,
        })
    }

    /// Brings into the page cache what a read of up to `max_bytes` from `offset` will touch
    /// (batch headers and records), reading the segment file without the partition lock:
    /// blocking, for the blocking pool, before a [`PartitionLog::read_records`] of data that
    /// was not cached (`log::cold`), so that read holds the lock only for cached reads.
    pub fn prefetch(&self, offset: i64, max_bytes: usize) -> io::Result<()> {
        let (store, start, len) = {
            let state = self.lock();
            if offset < state.log_start_offset || offset >= state.local.log_end_offset() {
                return Ok(());
            }
            let s = state.local.segment_to_read(offset);
            let start = s.scan_start(offset);
            let len = s
                .size_bytes()
                .saturating_sub(start)
                .min((max_bytes + FETCH_WINDOW_BYTES) as u64);
            (s.store().clone(), start, len as usize)
        };
        store.prefetch(start, len)
    }

    /// Fetch's read: as [`PartitionLog::read_with_isolation`], but on disk the records are a
    /// stretch of the segment file ([`Records::File`]) that the broker never reads into memory;
    /// only batch headers are read, to find where the stretch starts and ends:
    /// - start: the offset index gives a batch boundary at most an index interval before the
    ///   batch holding `offset`; headers are read from there (in windows of
    ///   [`FETCH_WINDOW_BYTES`]) up to that batch;
    /// - end: when the limit (high watermark, or LSO for read_committed) is the log end, every
    ///   batch of the segment is below it, so the stretch runs to the segment's end or to the
    ///   last batch boundary within `max_bytes` (offset index, then headers for less than an
    ///   index interval); below the log end (an open transaction), headers are walked.
    ///
    /// Whole batches only, never across a segment boundary (the next fetch continues in the
    /// next segment), at least one batch when `min_one` even if larger than `max_bytes`
    /// (KIP-74). The partition lock is held throughout, for a handful of header reads.
    pub fn read_records(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
        isolation: Isolation,
    ) -> Result<ReadInfo<Records>, LogError> {
        if self.is_failed() {
            return Err(LogError::Failed);
        }
        let state = self.lock();
        let log_end = state.local.log_end_offset();
        if offset < state.log_start_offset || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: state.log_start_offset,
                log_end,
            });
        }
        let last_stable_offset = state.last_stable_offset();
        let mut out = ReadInfo {
            records: Records::Bytes(Bytes::new()),
            high_watermark: state.high_watermark,
            log_start_offset: state.log_start_offset,
            last_stable_offset,
            aborted_transactions: Vec::new(),
        };
        let limit = match isolation {
            Isolation::ReadUncommitted => state.high_watermark,
            Isolation::ReadCommitted => last_stable_offset,
            Isolation::LogEnd => log_end,
        };
        if offset >= limit {
            return Ok(out);
        }
        let s = state.local.segment_to_read(offset);
        let store = s.store().as_ref();
        let size = s.size_bytes();
        let mut window = Window::with_size(FETCH_WINDOW_BYTES);
        let mut pos = s.scan_start(offset);
        let first_batch = loop {
            match window.header(store, pos, size)? {
                Some(h) if h.last_offset() < offset => pos += h.total_bytes as u64,
                other => break other,
            }
        };
        let Some(h0) = first_batch.filter(|h| h.last_offset() < limit) else {
            return Ok(out);
        };
        let first = pos;
        if h0.total_bytes > max_bytes && !min_one {
            return Ok(out);
        }
        // [first, end) holds whole batches; `end_offset` is the offset after the last one.
        let mut end = first + h0.total_bytes as u64;
        let mut end_offset = h0.last_offset() + 1;
        let budget_end = first + max_bytes as u64;
        let all_below_limit = s.next_offset() <= limit;
        if all_below_limit && size <= budget_end {
            end = size;
            end_offset = s.next_offset();
        } else {
            if all_below_limit {
                // Every batch of the segment is below the limit: jump to the last indexed
                // batch boundary within the budget; the header there starts the next batch.
                let boundary = s.batch_start_at_or_before(budget_end);
                if boundary > end {
                    end = boundary;
                    end_offset = window
                        .header(store, end, size)?
                        .map_or(s.next_offset(), |h| h.base_offset);
                }
            }
            while end < size {
                let Some(h) = window.header(store, end, size)? else {
                    break;
                };
                if end + h.total_bytes as u64 > budget_end || h.last_offset() >= limit {
                    break;
                }
                end += h.total_bytes as u64;
                end_offset = h.last_offset() + 1;
            }
        }
        out.records = store.records(first, (end - first) as usize)?;
        if isolation == Isolation::ReadCommitted {
            out.aborted_transactions = state.local.aborted_between(offset, end_offset);
        }
        Ok(out)
    }

    /// Blocks until the high watermark reaches `offset` (the in-sync replicas all have what
    /// is below it) while this replica leads at `leader_epoch`, the epoch it appended at
    /// ([`AppendInfo::leader_epoch`]). A leader alone in its ISR, or of a single node,
    /// answers at once. Gives up when the leadership changes (a demoted leader may truncate
    /// the write, and a later leadership's high watermark passes whatever replaced it), when
    /// the log closes, or after `timeout`. Polls every millisecond: call it off the async
    /// runtime.
    pub fn wait_high_watermark(
        &self,
        offset: i64,
        leader_epoch: i32,
        timeout: std::time::Duration,
    ) -> Result<(), HwWaitError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            {
                let state = self.lock();
                if !state.leading || state.leader_epoch != leader_epoch {
                    return Err(HwWaitError::LeadershipChanged);
                }
                if state.high_watermark >= offset {
                    return Ok(());
                }
            }
            if self.is_closed() {
                return Err(HwWaitError::Closed);
            }
            if std::time::Instant::now() >= deadline {
                return Err(HwWaitError::TimedOut);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Calls `on_record` with every record from the log start to the log end, in offset order,
    /// control records included: how internal topics (`__consumer_offsets`,
    /// `__transaction_state`) rebuild their state at start. Gaps left by compaction are
    /// skipped.
    pub fn for_each_record(&self, mut on_record: impl FnMut(Record)) -> io::Result<()> {
        let mut offset = self.log_start_offset();
        let end = self.log_end_offset();
        while offset < end {
            // To the log end, not the high watermark: a replica that just became leader may
            // not know yet that its followers have everything it has (a leader never
            // truncates its own log, so all of it becomes committed).
            let read = self
                .read_with_isolation(offset, 1 << 20, true, Isolation::LogEnd)
                .map_err(|e| io::Error::other(e.to_string()))?;
            if read.records.is_empty() {
                break;
            }
            let mut next = offset + 1;
            // Bounded and checked before anything is allocated: a batch that cannot be read is
            // skipped (logged), never trusted (see `validate::stored_records`).
            for (base_offset, set) in
                decode_stored_batches(&read.records, STORED_DECOMPRESSED_MAX_BYTES)
            {
                let set = match set {
                    Ok(set) => set,
                    Err(e) => {
                        self.warn_unreadable(base_offset, &e);
                        continue;
                    }
                };
                for r in set.iter() {
                    next = next.max(r.offset.saturating_add(1));
                    if r.offset >= offset {
                        on_record(r);
                    }
                }
            }
            // A batch may end in a compaction gap: continue after its last offset.
            let mut pos = 0;
            while let Some(h) = BatchHeader::parse(&read.records[pos..]) {
                next = next.max(h.last_offset().saturating_add(1));
                pos += h.total_bytes;
                if pos >= read.records.len() {
                    break;
                }
            }
            offset = next;
        }
        Ok(())
    }

    /// The first offset whose record timestamp is ≥ `timestamp`, with that timestamp
    /// (ListOffsets by time). `None` when every record is older.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        let (store, start, size) = {
            let state = self.lock();
            let Some(s) = state.local.segments().iter().find(|s| {
                s.max_timestamp() >= timestamp && s.next_offset() > state.log_start_offset
            }) else {
                return Ok(None);
            };
            (
                s.store().clone(),
                s.scan_start_for_time(timestamp),
                s.size_bytes(),
            )
        };
        let mut window = Window::default();
        let mut pos = start;
        while let Some(h) = window.header(store.as_ref(), pos, size)? {
            if h.max_timestamp >= timestamp {
                let bytes = window.slice(store.as_ref(), pos, h.total_bytes, size)?;
                return Ok(self.first_record_at_or_after(&bytes, &h, |ts| ts >= timestamp));
            }
            pos += h.total_bytes as u64;
        }
        Ok(None)
    }

    /// The offset and timestamp of the record with the largest timestamp (ListOffsets -3):
    /// the first batch reaching the largest segment maximum, then its first such record.
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        let (store, size, max_ts, log_start) = {
            let state = self.lock();
            let Some(s) = state
                .local
                .segments()
                .iter()
                .filter(|s| s.max_timestamp() >= 0 && s.next_offset() > state.log_start_offset)
                .reduce(|best, s| {
                    if s.max_timestamp() > best.max_timestamp() {
                        s
                    } else {
                        best
                    }
                })
            else {
                return Ok(None);
            };
            (
                s.store().clone(),
                s.size_bytes(),
                s.max_timestamp(),
                state.log_start_offset,
            )
        };
        let mut window = Window::default();
        let mut pos = 0;
        while let Some(h) = window.header(store.as_ref(), pos, size)? {
            if h.max_timestamp == max_ts && h.last_offset() >= log_start {
                let bytes = window.slice(store.as_ref(), pos, h.total_bytes, size)?;
                return Ok(self.first_record_at_or_after(&bytes, &h, |ts| ts == max_ts));
            }
            pos += h.total_bytes as u64;
        }
        Ok(None)
    }

    /// Reads one stored batch (bounded, see `validate::stored_records`) and returns its first
    /// record whose timestamp satisfies `want`. An unreadable batch is logged and answers
    /// `None`.
    fn first_record_at_or_after(
        &self,
        bytes: &[u8],
        header: &BatchHeader,
        want: impl Fn(i64) -> bool,
    ) -> Option<(i64, i64)> {
        if header.attributes & 0x08 != 0 {
            // LogAppendTime: every record carries the batch's max timestamp.
            return Some((header.base_offset, header.max_timestamp));
        }
        match stored_records(bytes, STORED_DECOMPRESSED_MAX_BYTES) {
            Ok(set) => set
                .iter()
                .find(|r| want(r.timestamp))
                .map(|r| (r.offset, r.timestamp)),
            Err(e) => {
                self.warn_unreadable(header.base_offset, &e);
                None
            }
        }
    }

    /// Logs (at most every 10 s for all logs together) a stored batch whose records cannot be
    /// read, naming the partition (its directory; memory logs have none) and the offset.
    fn warn_unreadable(&self, offset: i64, error: &StoredBatchError) {
        static LIMIT: LogLimit = LogLimit::new();
        if LIMIT.allow(std::time::Duration::from_secs(10)) {
            let partition = self
                .dir
                .as_ref()
                .and_then(|d| d.file_name())
                .map_or_else(|| "(in memory)".into(), |n| n.to_string_lossy());
            tracing::warn!(%partition, offset, %error, "skipping a stored batch whose records cannot be read");
        }
    }

    /// Forgets idle producers (see `ProducerStates::expire`). Returns how many.
    pub fn expire_producers(&self, now: i64, expiration_ms: i64) -> usize {
        self.lock().producers.expire(now, expiration_ms)
    }

    /// Deletes the log (its topic was deleted): closes it, so that handles still in flight
    /// get [`LogError::Closed`] instead of writing, and renames its directory aside to
    /// `<dir>.<uuid>-delete` (Kafka's suffix), so that a topic recreated under the same name
    /// starts in a fresh directory. Returns the renamed directory, for the caller to remove in
    /// the background (a start removes any left over). Blocking (a rename).
    pub fn delete(&self) -> io::Result<Option<PathBuf>> {
        // No roll may be creating a file while the directory is renamed away.
        let _rolls = self.roll_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.close();
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        // Before the rename: no segment file may be (re)opened by its path again, which after
        // the rename could name a recreated topic's file.
        for s in self.lock().local.segments() {
            s.detach_files()?;
        }
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            return Err(io::Error::other(format!("{} has no name", dir.display())));
        };
        let aside = dir.with_file_name(format!(
            "{name}.{}{DELETED_DIR_SUFFIX}",
            uuid::Uuid::new_v4().simple()
        ));
        match std::fs::rename(dir, &aside) {
            Ok(()) => Ok(Some(aside)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
