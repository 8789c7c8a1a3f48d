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

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};
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

mod append;

/// Where a successful append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
    /// The flush policy wants this append durable before it is acknowledged: call
    /// [`PartitionLog::sync_to`] with `last_offset + 1`.
    pub needs_sync: bool,
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
    /// [`PartitionLog::try_append_shared`]: the append needs a new segment first (a file to
    /// create), which must not happen on the async runtime. Nothing was appended; append with
    /// [`PartitionLog::append_shared`] on the blocking pool.
    #[error("the append needs a new segment")]
    RollNeeded,
    /// [`PartitionLog::append_as_follower`]: a batch does not continue the log.
    #[error("follower append at offset {got}, expected at least {expected_at_least}")]
    UnexpectedOffset { expected_at_least: i64, got: i64 },
}

impl LogError {
    /// Whether this error was already reported (the latch logs once): callers need not log it.
    pub fn is_latched(&self) -> bool {
        matches!(self, LogError::Failed | LogError::Closed)
    }
}

/// What the state lock guards.
pub(super) struct LogState {
    /// The segments.
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
        match self.producers.first_unstable_offset() {
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
    pub(super) dir: Option<PathBuf>,
    /// Where segment files are opened (disk mode).
    pub(super) files: Arc<OpenFiles>,
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
        PartitionLog::with_state(
            LogState {
                local: LocalLog::new(vec![Segment::new_in_memory(0, now_ms())]),
                log_start_offset: 0,
                producers: ProducerStates::default(),
                config,
                checkpointed: Checkpoint::default(),
                snapshot_on_disk: None,
                compacted_upto: 0,
                high_watermark: 0,
                hw_follows_log_end: true,
                leader_epoch: 0,
                epochs: EpochCache::default(),
                epochs_written: None,
            },
            None,
            OpenFiles::shared_default(),
        )
    }

    fn with_state(
        mut state: LogState,
        dir: Option<PathBuf>,
        files: Arc<OpenFiles>,
    ) -> PartitionLog {
        let durable = state.local.log_end_offset();
        // A loaded log's records were all committed when they were written (one replica).
        state.high_watermark = durable;
        PartitionLog {
            state: Mutex::new(state),
            flush: Mutex::new(FlushState::new(durable)),
            flushed: Condvar::new(),
            hw_advanced: Notify::new(),
            dir,
            roll_lock: Mutex::new(()),
            checkpoint_lock: Mutex::new(()),
            failed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            dir_dirty: AtomicBool::new(false),
            files,
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
        Self::open_with_files(dir, config, clean, OpenFiles::shared_default())
    }

    /// As [`PartitionLog::open`], with segment files opened through `files` (the broker's
    /// bounded cache of open files).
    pub fn open_with_files(
        dir: &Path,
        config: LogConfig,
        clean: bool,
        files: Arc<OpenFiles>,
    ) -> io::Result<PartitionLog> {
        crate::threads::may_block("opening a partition log");
        let loaded = super::loader::load(dir, config, clean, &files)?;
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
                epochs: loaded.epochs,
                epochs_written: loaded.epochs_written,
            },
            Some(dir.to_path_buf()),
            files,
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
        debug_assert!(state.log_start_offset <= state.high_watermark);
        true
    }

    pub fn log_start_offset(&self) -> i64 {
        self.lock().log_start_offset
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

    /// The leader epoch stamped on what this log appends as leader from now on.
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.lock().leader_epoch = epoch;
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

    /// Calls `on_record` with every record from the log start to the log end, in offset order,
    /// control records included: how internal topics (`__consumer_offsets`,
    /// `__transaction_state`) rebuild their state at start. Gaps left by compaction are
    /// skipped.
    pub fn for_each_record(&self, mut on_record: impl FnMut(Record)) -> io::Result<()> {
        let mut offset = self.log_start_offset();
        let end = self.log_end_offset();
        while offset < end {
            let read = self
                .read(offset, 1 << 20, true)
                .map_err(|e| io::Error::other(e.to_string()))?;
            if read.records.is_empty() {
                break;
            }
            let mut next = offset + 1;
            let mut bytes = read.records.clone();
            for set in RecordBatchDecoder::decode_all(&mut bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
            {
                for r in set.records {
                    next = next.max(r.offset + 1);
                    if r.offset >= offset {
                        on_record(r);
                    }
                }
            }
            // A batch may end in a compaction gap: continue after its last offset.
            let mut pos = 0;
            while let Some(h) = BatchHeader::parse(&read.records[pos..]) {
                next = next.max(h.last_offset() + 1);
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
                return Ok(first_record_at_or_after(bytes, &h, |ts| ts >= timestamp));
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
                return Ok(first_record_at_or_after(bytes, &h, |ts| ts == max_ts));
            }
            pos += h.total_bytes as u64;
        }
        Ok(None)
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

/// Decodes one stored batch and returns the first record whose timestamp satisfies `want`.
fn first_record_at_or_after(
    mut bytes: Bytes,
    header: &BatchHeader,
    want: impl Fn(i64) -> bool,
) -> Option<(i64, i64)> {
    if header.attributes & 0x08 != 0 {
        // LogAppendTime: every record carries the batch's max timestamp.
        return Some((header.base_offset, header.max_timestamp));
    }
    match RecordBatchDecoder::decode(&mut bytes) {
        Ok(set) => set
            .records
            .iter()
            .find(|r| want(r.timestamp))
            .map(|r| (r.offset, r.timestamp)),
        Err(e) => {
            tracing::warn!(offset = header.base_offset, error = %e, "could not decode a stored batch");
            None
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
mod tests {
    use super::*;
    use crate::log::batch::{self, tests::encode_batch, HEADER_BYTES};
    use crate::log::flush::PRODUCER_SNAPSHOT;
    use crate::log::store::SegmentStore;
    use crate::log::txn;
    use kafka_protocol::records::Compression;

    fn small_segments() -> LogConfig {
        LogConfig {
            segment_bytes: 1000,
            segment_ms: i64::MAX,
            index_interval_bytes: 100,
            ..LogConfig::default()
        }
    }

    fn fill(log: &PartitionLog, batches: usize) -> Vec<Vec<u8>> {
        let mut appended = Vec::new();
        for i in 0..batches {
            let mut b = encode_batch(3, Compression::None, 1_000 + 10 * i as i64);
            log.append(&mut b, None).expect("append");
            appended.push(b);
        }
        appended
    }

    fn check_reads(log: &PartitionLog, appended: &[Vec<u8>]) {
        for (i, b) in appended.iter().enumerate() {
            for delta in 0..3 {
                let got = log.read(i as i64 * 3 + delta, 1, true).expect("read");
                assert_eq!(&got.records[..], &b[..], "batch {i} via offset +{delta}");
            }
        }
        let all = log.read(0, usize::MAX / 2, true).expect("read");
        assert!(all.records.len() <= 1000, "a read stays within one segment");
        assert_eq!(log.log_end_offset(), appended.len() as i64 * 3);
    }

    /// A store whose fsync fails while `failing` is set (then succeeds again, as a retried
    /// fsync may after the kernel dropped the dirty pages).
    struct FlakySync {
        inner: Arc<dyn SegmentStore>,
        failing: Arc<AtomicBool>,
    }

    impl SegmentStore for FlakySync {
        fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
            self.inner.write_at(pos, data)
        }
        fn write_vectored_at(&self, pos: u64, data: &mut [io::IoSlice<'_>]) -> io::Result<()> {
            self.inner.write_vectored_at(pos, data)
        }
        fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
            self.inner.read_at(pos, len)
        }
        fn records(&self, pos: u64, len: usize) -> io::Result<Records> {
            self.inner.records(pos, len)
        }
        fn sync(&self) -> io::Result<()> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            self.inner.sync()
        }
        fn truncate(&self, len: u64) -> io::Result<()> {
            self.inner.truncate(len)
        }
        fn stored_bytes(&self) -> io::Result<u64> {
            self.inner.stored_bytes()
        }
    }

    #[test]
    fn a_failed_fsync_latches_the_log_failed() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            flush_messages: 1,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir.path(), config, false).unwrap();
        let failing = Arc::new(AtomicBool::new(true));
        {
            let mut state = log.lock();
            let active = state.local.active_mut();
            let inner = active.store().clone();
            active.set_store(Arc::new(FlakySync {
                inner,
                failing: failing.clone(),
            }));
        }
        let mut b = encode_batch(3, Compression::None, 1_000);
        let info = log.append(&mut b, None).unwrap();
        assert!(info.needs_sync);
        assert!(
            log.sync_to(info.last_offset + 1).is_err(),
            "the fsync failed"
        );
        // The device "recovers": a retried fsync would now succeed, for data the kernel may
        // have dropped. The log must never report success again.
        failing.store(false, Ordering::SeqCst);
        assert!(
            log.sync_to(info.last_offset + 1).is_err(),
            "no success after a failure"
        );
        assert!(
            log.durable_offset() <= info.base_offset,
            "nothing became durable"
        );
        let mut b = encode_batch(3, Compression::None, 2_000);
        assert!(matches!(log.append(&mut b, None), Err(LogError::Failed)));
        assert!(matches!(log.read(0, 1 << 20, true), Err(LogError::Failed)));
        assert!(log.sync(false).is_err());
        assert!(
            log.sync(true).is_err(),
            "a failed log never syncs for a clean shutdown"
        );
        assert!(
            !log.flush_if_due(i64::MAX).unwrap(),
            "the periodic flush skips it"
        );
        assert!(matches!(log.delete_records(1), Err(LogError::Failed)));
        assert!(log.is_failed());
    }

    #[test]
    fn new_segments_and_directories_are_fsynced_before_durability() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let log = PartitionLog::open(&path, small_segments(), false).unwrap();
        assert!(
            log.dir_dirty.load(Ordering::SeqCst),
            "a new directory awaits its fsync"
        );
        fill(&log, 1);
        log.sync_to(log.log_end_offset()).unwrap();
        assert!(
            !log.dir_dirty.load(Ordering::SeqCst),
            "fsynced with the data"
        );
        let segments = log.lock().local.segments().len();
        fill(&log, 10);
        assert!(log.lock().local.segments().len() > segments, "rolled");
        assert!(
            log.dir_dirty.load(Ordering::SeqCst),
            "a rolled segment's entry awaits its fsync"
        );
        log.sync_to(log.log_end_offset()).unwrap();
        assert!(!log.dir_dirty.load(Ordering::SeqCst));
        drop(log);
        // Reopening an existing directory with its segments creates nothing.
        let log = PartitionLog::open(&path, small_segments(), true).unwrap();
        assert!(!log.dir_dirty.load(Ordering::SeqCst));
    }

    #[test]
    fn relative_offsets_never_overflow_a_segment() {
        let log = PartitionLog::in_memory(LogConfig::default());
        fill(&log, 1);
        for _ in 0..3 {
            // A batch claiming 2^31 offsets (appends take validated batches; the header alone
            // decides how many offsets a batch takes; last offset delta at byte 23).
            let mut b = encode_batch(1, Compression::None, 1_000);
            b[23..23 + 4].copy_from_slice(&i32::MAX.to_be_bytes());
            log.append(&mut b, None).unwrap();
        }
        let state = log.lock();
        assert!(
            state.local.segments().len() >= 3,
            "rolled before relative offsets overflowed"
        );
        for s in state.local.segments() {
            assert!(
                s.next_offset() - 1 - s.base_offset() <= super::super::segment::RELATIVE_OFFSET_MAX
            );
        }
    }

    #[test]
    fn a_deleted_log_never_writes_into_a_recreated_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let old = Arc::new(PartitionLog::open(&path, small_segments(), false).unwrap());
        fill(&old, 2);
        let aside = old.delete().unwrap().expect("renamed aside");
        assert!(!path.exists());
        let name = aside.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            name.starts_with("t-0.") && name.ends_with(DELETED_DIR_SUFFIX),
            "{name}"
        );
        // The topic is recreated under the same name.
        let new = PartitionLog::open(&path, small_segments(), false).unwrap();
        // The old handle (a request in flight) can neither append nor roll into it.
        for _ in 0..20 {
            let mut b = encode_batch(3, Compression::None, 1_000);
            assert!(matches!(old.append(&mut b, None), Err(LogError::Closed)));
        }
        assert!(old.enforce_retention(i64::MAX).is_ok());
        assert!(!old.flush_if_due(i64::MAX).unwrap());
        assert!(matches!(old.delete_records(1), Err(LogError::Closed)));
        let files: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            files.iter().all(|f| f.starts_with(&format!("{:020}", 0))),
            "only the new log's first segment: {files:?}"
        );
        assert_eq!(new.log_end_offset(), 0);
        // What the old log held is still readable by handles that had it.
        assert!(!old.read(0, 1 << 20, true).unwrap().records.is_empty());
    }

    #[test]
    fn nothing_above_the_high_watermark_is_read_deleted_or_expired() {
        let log = PartitionLog::in_memory(LogConfig {
            retention_ms: 1,
            ..small_segments()
        });
        fill(&log, 10);
        log.set_hw_follows_log_end(false);
        fill(&log, 30);
        assert_eq!((log.high_watermark(), log.log_end_offset()), (30, 120));
        // Reads stop at the HW, across segments.
        let mut offset = 0;
        while let Ok(r) = log.read(offset, 1 << 20, true) {
            if r.records.is_empty() {
                break;
            }
            assert_eq!(r.high_watermark, 30);
            let batches = batch::validate_batches(&r.records, usize::MAX).unwrap();
            offset += batches.batch_count as i64 * 3;
        }
        assert_eq!(offset, 30);
        // DeleteRecords may not pass it (-1 means the HW itself).
        assert!(matches!(
            log.delete_records(31),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // Retention keeps every segment that is not wholly below it, however old.
        log.enforce_retention(now_ms() + 1_000_000).unwrap();
        let start = log.log_start_offset();
        assert!(start <= 30, "log start {start} passed the high watermark");
        assert_eq!(log.delete_records(-1).unwrap(), 30);
        // The LSO never exceeds the HW.
        assert_eq!(log.last_stable_offset(), 30);
        log.set_hw_follows_log_end(true);
        assert_eq!(log.high_watermark(), 120);
    }

    #[test]
    fn memory_log_appends_rolls_and_reads() {
        let log = PartitionLog::in_memory(small_segments());
        let appended = fill(&log, 40);
        assert!(log.lock().local.segments().len() > 3, "segments rolled");
        check_reads(&log, &appended);
        assert!(matches!(
            log.read(121, 100, true),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(log.read(120, 100, true).unwrap().records.is_empty());
    }

    #[test]
    fn disk_log_survives_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let appended = {
            let log = PartitionLog::open(dir.path(), small_segments(), false).unwrap();
            fill(&log, 40)
        };
        let log = PartitionLog::open(dir.path(), small_segments(), false).unwrap();
        check_reads(&log, &appended);
        drop(log);
        // Append garbage to the last segment: it must be cut on open.
        let mut last = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect::<Vec<_>>();
        last.sort();
        let path = last.last().unwrap();
        let len = std::fs::metadata(path).unwrap().len();
        let mut data = std::fs::read(path).unwrap();
        data.extend_from_slice(&[0xAB; 100]);
        std::fs::write(path, &data).unwrap();
        let log = PartitionLog::open(dir.path(), small_segments(), false).unwrap();
        assert_eq!(std::fs::metadata(path).unwrap().len(), len);
        check_reads(&log, &appended);
        let mut more = encode_batch(2, Compression::None, 5);
        assert_eq!(log.append(&mut more, None).unwrap().base_offset, 120);
    }

    #[test]
    fn timestamps_lookup() {
        let log = PartitionLog::in_memory(small_segments());
        fill(&log, 20); // batch i has records with ts 1000+10i, +1, +2
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1000)));
        assert_eq!(log.offset_for_timestamp(1001).unwrap(), Some((1, 1001)));
        assert_eq!(log.offset_for_timestamp(1003).unwrap(), Some((3, 1010)));
        assert_eq!(log.offset_for_timestamp(1192).unwrap(), Some((59, 1192)));
        assert_eq!(log.offset_for_timestamp(1193).unwrap(), None);
        assert_eq!(log.max_timestamp_offset().unwrap(), Some((59, 1192)));
    }

    #[test]
    fn log_append_time_is_stamped() {
        let log = PartitionLog::in_memory(LogConfig::default());
        let mut b = encode_batch(2, Compression::None, 5);
        log.append(&mut b, Some(777)).unwrap();
        let read = log.read(0, 1 << 20, true).unwrap();
        assert_eq!(
            BatchHeader::parse(&read.records).unwrap().max_timestamp,
            777
        );
        assert_eq!(log.max_timestamp_offset().unwrap(), Some((0, 777)));
    }

    #[test]
    fn clean_reopen_uses_the_index_files_and_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let appended = {
            let log = PartitionLog::open(dir.path(), small_segments(), false).unwrap();
            let appended = fill(&log, 40);
            log.sync(true).unwrap();
            appended
        };
        // The snapshot and checkpoint exist after a clean sync.
        assert!(dir.path().join(PRODUCER_SNAPSHOT).exists());
        let cp = Checkpoint::read(dir.path());
        assert_eq!(cp.recovery_point, 120);
        let log = PartitionLog::open(dir.path(), small_segments(), true).unwrap();
        check_reads(&log, &appended);
        assert_eq!(log.max_timestamp_offset().unwrap(), Some((119, 1392)));
        assert_eq!(log.offset_for_timestamp(1201).unwrap(), Some((61, 1201)));
        let mut more = encode_batch(2, Compression::None, 5);
        assert_eq!(log.append(&mut more, None).unwrap().base_offset, 120);
    }

    #[test]
    fn unclean_reopen_cuts_a_corrupt_batch_and_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let appended = {
            let log = PartitionLog::open(dir.path(), small_segments(), false).unwrap();
            fill(&log, 40)
        };
        let mut logs: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        // Flip a byte inside the second batch of the second-to-last segment.
        let victim = &logs[logs.len() - 2];
        let mut data = std::fs::read(victim).unwrap();
        let first_len = BatchHeader::parse(&data).unwrap().total_bytes;
        let base_of_victim = BatchHeader::parse(&data).unwrap().base_offset;
        data[first_len + 70] ^= 0xFF;
        std::fs::write(victim, &data).unwrap();
        let log = PartitionLog::open(dir.path(), small_segments(), false).unwrap();
        let end = base_of_victim + 3;
        assert_eq!(log.log_end_offset(), end, "cut after the last good batch");
        assert!(!logs.last().unwrap().exists(), "later segments deleted");
        let kept = (end / 3) as usize;
        check_reads_prefix(&log, &appended[..kept]);
    }

    fn check_reads_prefix(log: &PartitionLog, appended: &[Vec<u8>]) {
        for (i, b) in appended.iter().enumerate() {
            let got = log.read(i as i64 * 3, 1, true).expect("read");
            assert_eq!(&got.records[..], &b[..], "batch {i}");
        }
    }

    #[test]
    fn delete_records_and_retention_move_the_log_start() {
        for disk in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let open = |clean| {
                if disk {
                    PartitionLog::open(dir.path(), small_segments(), clean).unwrap()
                } else {
                    PartitionLog::in_memory(small_segments())
                }
            };
            let log = open(false);
            fill(&log, 40);
            let segments = log.lock().local.segments().len();
            assert_eq!(log.delete_records(10).unwrap(), 10);
            assert!(matches!(
                log.read(9, 100, true),
                Err(LogError::OffsetOutOfRange { .. })
            ));
            assert!(!log.read(10, 100, true).unwrap().records.is_empty());
            assert!(matches!(
                log.delete_records(121),
                Err(LogError::OffsetOutOfRange { .. })
            ));
            assert_eq!(log.delete_records(5).unwrap(), 10, "never moves back");
            // Size retention: keep about 3000 bytes.
            log.set_config(LogConfig {
                retention_bytes: 3000,
                retention_ms: -1,
                ..small_segments()
            });
            let report = log.enforce_retention(now_ms()).unwrap();
            assert!(report.segments_deleted > 0);
            assert_eq!(
                log.lock().local.segments().len(),
                segments - report.segments_deleted
            );
            let start = log.log_start_offset();
            assert_eq!(start, log.lock().local.segments()[0].base_offset());
            assert!(start > 10);
            // Time retention: the records' timestamps (1000..) are ancient: everything goes,
            // the active segment is rolled first.
            log.set_config(LogConfig {
                retention_ms: 1000,
                ..small_segments()
            });
            log.enforce_retention(now_ms()).unwrap();
            assert_eq!(log.log_start_offset(), 120);
            assert_eq!(log.log_end_offset(), 120);
            if disk {
                drop(log);
                let log = open(false);
                assert_eq!(log.log_start_offset(), 120, "persisted");
                let mut more = encode_batch(2, Compression::None, 5);
                assert_eq!(log.append(&mut more, None).unwrap().base_offset, 120);
            }
        }
    }

    #[test]
    fn group_commit_makes_appends_durable() {
        let dir = tempfile::tempdir().unwrap();
        let log = std::sync::Arc::new(
            PartitionLog::open(
                dir.path(),
                LogConfig {
                    flush_messages: 1,
                    ..small_segments()
                },
                false,
            )
            .unwrap(),
        );
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let mut b = encode_batch(3, Compression::None, 1);
                        let info = log.append(&mut b, None).unwrap();
                        // Unless another thread's fsync already covered it, it needs one.
                        assert!(info.needs_sync || log.durable_offset() > info.last_offset);
                        log.sync_to(info.last_offset + 1).unwrap();
                        assert!(log.durable_offset() > info.last_offset);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(log.durable_offset(), 240);
    }

    #[test]
    fn compaction_keeps_the_newest_value_per_key() {
        use crate::log::cleaner::tests_support::keyed;
        for disk in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                cleanup_compact: true,
                cleanup_delete: false,
                segment_bytes: 300,
                ..small_segments()
            };
            let log = if disk {
                PartitionLog::open(dir.path(), config, false).unwrap()
            } else {
                PartitionLog::in_memory(config)
            };
            // 60 records over keys k0..k4, then a tombstone for k0.
            for i in 0..60 {
                let key = format!("k{}", i % 5);
                let value = format!("v{i}");
                let mut b = keyed(&[(key.as_str(), Some(value.as_str()))]);
                log.append(&mut b, None).unwrap();
            }
            let mut t = keyed(&[("k0", None)]);
            log.append(&mut t, None).unwrap();
            let mut last = keyed(&[("k9", Some("tail"))]);
            log.append(&mut last, None).unwrap();
            let report = log.compact(now_ms()).unwrap();
            assert!(report.segments_cleaned > 0 && report.bytes_after < report.bytes_before);
            let records = all_records(&log);
            // In the compacted range (below the active segment) one record per key; overall the
            // last record of each key is its newest value, at its original offset.
            let active_base = log.lock().local.segments().last().unwrap().base_offset();
            let mut in_range = std::collections::HashSet::new();
            let mut seen = std::collections::HashMap::new();
            for (offset, key, value) in &records {
                if *offset < active_base {
                    assert!(
                        in_range.insert(key.clone()),
                        "one per key below {active_base}"
                    );
                }
                seen.insert(key.clone(), (*offset, value.clone()));
            }
            assert!(records.windows(2).all(|w| w[0].0 < w[1].0));
            assert!(records.len() < 30, "most records were compacted away");
            assert_eq!(seen["k1"], (56, Some("v56".into())));
            assert_eq!(seen["k4"], (59, Some("v59".into())));
            assert_eq!(seen["k0"], (60, None), "the fresh tombstone is kept");
            assert_eq!(seen["k9"], (61, Some("tail".into())));
            assert_eq!(log.log_end_offset(), 62);
            // Nothing rolled since: a second pass does nothing.
            assert_eq!(log.compact(now_ms()).unwrap().segments_cleaned, 0);
            if disk {
                drop(log);
                let log = PartitionLog::open(dir.path(), config, false).unwrap();
                assert_eq!(all_records(&log), records, "survives a restart");
            }
        }
    }

    fn all_records(log: &PartitionLog) -> Vec<(i64, String, Option<String>)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let read = log.read(offset, 1 << 20, true).unwrap();
            if read.records.is_empty() {
                break;
            }
            let mut b = read.records.clone();
            for set in RecordBatchDecoder::decode_all(&mut b).unwrap() {
                for r in set.records {
                    if r.offset >= offset {
                        out.push((
                            r.offset,
                            String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                            r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                        ));
                    }
                }
            }
            offset = out.last().map_or(offset + 1, |r| r.0 + 1).max(offset + 1);
            // skip gaps left by compaction
            let next_batch = {
                let mut b = read.records.clone();
                RecordBatchDecoder::decode_all(&mut b)
                    .unwrap()
                    .last()
                    .and_then(|s| s.records.last().map(|r| r.offset + 1))
            };
            if let Some(n) = next_batch {
                offset = offset.max(n);
            }
        }
        out
    }

    // ---- transactions (KIP-98) ----

    use crate::log::cleaner;
    use bytes::BytesMut;
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    /// One batch of keyed records from producer `pid` (transactional or merely idempotent).
    fn producer_batch(
        pid: i64,
        epoch: i16,
        seq: i32,
        kvs: &[(&str, &str)],
        transactional: bool,
    ) -> Vec<u8> {
        let records: Vec<Record> = kvs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                transactional,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: pid,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: seq + i as i32,
                timestamp: now_ms(),
                key: Some(Bytes::copy_from_slice(k.as_bytes())),
                value: Some(Bytes::copy_from_slice(v.as_bytes())),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    fn txn(pid: i64, seq: i32, n: usize) -> Vec<u8> {
        let kvs: Vec<(String, String)> = (0..n)
            .map(|i| (format!("k{i}"), format!("p{pid}s{}", seq + i as i32)))
            .collect();
        let kvs: Vec<(&str, &str)> = kvs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        producer_batch(pid, 0, seq, &kvs, true)
    }

    fn append(log: &PartitionLog, mut batch: Vec<u8>) -> AppendInfo {
        log.append(&mut batch, None).expect("append")
    }

    /// Base offsets of the batches a read returns.
    fn batch_bases(read: &ReadInfo) -> Vec<i64> {
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some(h) = BatchHeader::parse(&read.records[pos..]) {
            out.push(h.base_offset);
            pos += h.total_bytes;
            if pos >= read.records.len() {
                break;
            }
        }
        out
    }

    fn aborted(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    #[test]
    fn lso_follows_ongoing_transactions_and_markers() {
        let log = PartitionLog::in_memory(LogConfig::default());
        append(&log, encode_batch(3, Compression::None, 1)); // 0..=2
        assert_eq!(
            log.last_stable_offset(),
            3,
            "no transaction: the high watermark"
        );
        assert_eq!(append(&log, txn(1, 0, 3)).base_offset, 3); // 3..=5
        assert_eq!(log.last_stable_offset(), 3);
        assert_eq!(append(&log, txn(2, 0, 3)).base_offset, 6); // 6..=8
        append(&log, txn(1, 3, 2)); // 9..=10, same transaction
        append(&log, encode_batch(1, Compression::None, 1)); // 11
        assert_eq!(log.last_stable_offset(), 3);
        assert_eq!(log.high_watermark(), 12);
        assert_eq!(log.ongoing_transactions(), vec![(1, 3), (2, 6)]);

        // read_committed stops before the first open transaction; read_uncommitted does not.
        let rc = log
            .read_with_isolation(0, 1 << 20, true, Isolation::ReadCommitted)
            .unwrap();
        assert_eq!(batch_bases(&rc), vec![0]);
        assert_eq!((rc.last_stable_offset, rc.high_watermark), (3, 12));
        assert!(log
            .read_with_isolation(3, 1 << 20, true, Isolation::ReadCommitted)
            .unwrap()
            .records
            .is_empty());
        let ru = log.read(0, 1 << 20, true).unwrap();
        assert_eq!(batch_bases(&ru), vec![0, 3, 6, 9, 11]);
        assert_eq!(ru.last_stable_offset, 3, "the LSO is reported either way");
        assert!(ru.aborted_transactions.is_empty());

        // A non-transactional write by a producer in a transaction is refused.
        let mut plain = producer_batch(1, 0, 5, &[("k", "v")], false);
        assert!(matches!(
            log.append(&mut plain, None),
            Err(LogError::Sequence(SequenceError::InvalidTxnState {
                producer_id: 1
            }))
        ));

        assert_eq!(log.append_marker(1, 0, true, 0).unwrap(), 12);
        assert_eq!(log.last_stable_offset(), 6);
        assert_eq!(log.append_marker(2, 0, false, 0).unwrap(), 13);
        assert_eq!(log.last_stable_offset(), 14);
        assert_eq!(log.high_watermark(), 14);
        assert!(log.ongoing_transactions().is_empty());
        assert_eq!(log.aborted_transactions(0, 14), vec![aborted(2, 6, 13, 14)]);

        let rc = log
            .read_with_isolation(0, 1 << 20, true, Isolation::ReadCommitted)
            .unwrap();
        assert_eq!(batch_bases(&rc), vec![0, 3, 6, 9, 11, 12, 13]);
        assert_eq!(rc.aborted_transactions, vec![aborted(2, 6, 13, 14)]);
        // A read ending before the aborted transaction starts does not list it.
        let first = log
            .read_with_isolation(0, 1, true, Isolation::ReadCommitted)
            .unwrap();
        assert_eq!(batch_bases(&first), vec![0]);
        assert!(first.aborted_transactions.is_empty());
        // A read starting after its marker does not either.
        let tail = log
            .read_with_isolation(14, 1 << 20, true, Isolation::ReadCommitted)
            .unwrap();
        assert!(tail.records.is_empty() && tail.aborted_transactions.is_empty());

        // The marker is a control batch with Kafka's control record.
        let marker = log.read(13, 1 << 20, true).unwrap();
        let h = BatchHeader::parse(&marker.records).unwrap();
        assert!(h.is_control() && h.is_transactional() && h.producer_id == 2);
        let c = txn::parse_control_record(&h, &marker.records[HEADER_BYTES..]).unwrap();
        assert_eq!(c.marker(), Some(false));

        // A marker with no transaction open is still written, and indexes nothing.
        assert_eq!(log.append_marker(7, 0, false, 0).unwrap(), 14);
        assert_eq!(log.aborted_transactions(0, 15).len(), 1);
        // Stale producer epoch, older coordinator: refused.
        append(&log, producer_batch(3, 2, 0, &[("k", "v")], true)); // 15
        assert!(matches!(
            log.append_marker(3, 1, false, 0),
            Err(LogError::Sequence(SequenceError::StaleEpoch { .. }))
        ));
        log.append_marker(3, 2, false, 5).unwrap(); // 16
        assert!(matches!(
            log.append_marker(3, 2, true, 4),
            Err(LogError::Sequence(SequenceError::CoordinatorFenced {
                got: 4,
                current: 5
            }))
        ));
        assert!(matches!(
            log.append_marker(-1, 0, true, 0),
            Err(LogError::InvalidMarker(_))
        ));
        assert_eq!(log.log_end_offset(), 17);
        assert_eq!(
            log.aborted_transactions(0, 17),
            vec![aborted(2, 6, 13, 14), aborted(3, 15, 16, 17)]
        );
    }

    #[test]
    fn aborted_lookup_spans_segments_and_stops_early() {
        let log = PartitionLog::in_memory(LogConfig {
            segment_bytes: 300,
            ..small_segments()
        });
        // pid 1 opens at 0; pid 2's transactions come and go meanwhile; pid 1 aborts last.
        append(&log, txn(1, 0, 2)); // 0..=1
        append(&log, txn(2, 0, 2)); // 2..=3
        log.append_marker(2, 0, false, 0).unwrap(); // 4: LSO after = 0 (pid 1 open)
        append(&log, txn(2, 2, 2)); // 5..=6
        log.append_marker(2, 0, true, 0).unwrap(); // 7
        for _ in 0..4 {
            append(&log, encode_batch(3, Compression::None, 1));
        } // 8..=19
        log.append_marker(1, 0, false, 0).unwrap(); // 20
        assert!(log.lock().local.segments().len() > 2, "rolled");
        let all = vec![aborted(2, 2, 4, 0), aborted(1, 0, 20, 21)];
        assert_eq!(log.aborted_transactions(0, 21), all);
        // From inside pid 1's transaction, after pid 2's abort: only pid 1's.
        assert_eq!(log.aborted_transactions(8, 21), all[1..].to_vec());
        let rc = log
            .read_with_isolation(5, 1 << 20, true, Isolation::ReadCommitted)
            .unwrap();
        assert_eq!(rc.aborted_transactions, all[1..].to_vec());
    }

    #[test]
    fn transactions_survive_clean_and_unclean_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 400,
            ..small_segments()
        };
        let expected_aborts;
        {
            let log = PartitionLog::open(dir.path(), config, false).unwrap();
            append(&log, txn(1, 0, 2)); // 0..=1
            append(&log, txn(2, 0, 2)); // 2..=3
            log.append_marker(1, 0, false, 0).unwrap(); // 4
            for _ in 0..4 {
                append(&log, encode_batch(3, Compression::None, 1)); // 5..=16
            }
            append(&log, txn(3, 0, 2)); // 17..=18
            log.append_marker(2, 0, false, 0).unwrap(); // 19
            log.append_marker(3, 0, true, 0).unwrap(); // 20
            append(&log, txn(4, 0, 1)); // 21: stays open
            append(&log, encode_batch(2, Compression::None, 1)); // 22..=23
            assert!(log.lock().local.segments().len() > 2);
            expected_aborts = vec![aborted(1, 0, 4, 2), aborted(2, 2, 19, 17)];
            assert_eq!(log.aborted_transactions(0, 24), expected_aborts);
            assert_eq!(log.last_stable_offset(), 21);
            log.sync(true).unwrap();
        }
        let txnindex_bytes = || -> u64 {
            std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "txnindex"))
                .map(|p| std::fs::metadata(p).unwrap().len())
                .sum()
        };
        assert_eq!(txnindex_bytes(), 2 * txn::TXN_ENTRY_BYTES as u64);
        let check = |log: &PartitionLog, what: &str| {
            assert_eq!(log.last_stable_offset(), 21, "{what}: LSO");
            assert_eq!(log.ongoing_transactions(), vec![(4, 21)], "{what}");
            assert_eq!(
                log.aborted_transactions(0, 24),
                expected_aborts,
                "{what}: aborted"
            );
        };
        // Clean: snapshot + index files.
        let log = PartitionLog::open(dir.path(), config, true).unwrap();
        check(&log, "clean");
        log.sync(true).unwrap();
        drop(log);
        // Clean, but the index files are gone or damaged: rebuilt from the log.
        let mut victims: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "txnindex"))
            .collect();
        victims.sort();
        std::fs::remove_file(&victims[0]).unwrap();
        std::fs::write(&victims[victims.len() - 2], [1, 2, 3]).unwrap();
        let log = PartitionLog::open(dir.path(), config, true).unwrap();
        check(&log, "clean, indexes rebuilt");
        assert!(victims[0].exists());
        assert_eq!(txnindex_bytes(), 2 * txn::TXN_ENTRY_BYTES as u64);
        // Unclean (no snapshot; everything after the recovery point scanned).
        drop(log);
        std::fs::remove_file(dir.path().join(PRODUCER_SNAPSHOT)).ok();
        let log = PartitionLog::open(dir.path(), config, false).unwrap();
        check(&log, "unclean");
        // The restored state goes on: the open transaction commits, its pid's next batch
        // continues its sequence.
        log.append_marker(4, 0, true, 0).unwrap();
        assert_eq!(log.last_stable_offset(), log.high_watermark());
        let mut next = txn(4, 1, 1);
        log.append(&mut next, None).unwrap();
        let mut gap = txn(4, 5, 1);
        assert!(matches!(
            log.append(&mut gap, None),
            Err(LogError::Sequence(SequenceError::OutOfOrder { .. }))
        ));
    }

    #[test]
    fn unclean_restart_restores_an_open_transaction_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = PartitionLog::open(dir.path(), small_segments(), false).unwrap();
            append(&log, encode_batch(2, Compression::None, 1)); // 0..=1
            append(&log, txn(9, 0, 2)); // 2..=3
            append(&log, encode_batch(2, Compression::None, 1)); // 4..=5
                                                                 // dropped without a clean shutdown
        }
        let log = PartitionLog::open(dir.path(), small_segments(), false).unwrap();
        assert_eq!(log.last_stable_offset(), 2);
        assert_eq!(log.ongoing_transaction(9), Some(2));
        log.append_marker(9, 0, false, 0).unwrap();
        assert_eq!(log.aborted_transactions(0, 7), vec![aborted(9, 2, 6, 7)]);
    }

    #[test]
    fn retention_and_delete_records_drop_aborted_entries_with_their_segments() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 300,
            ..small_segments()
        };
        let log = PartitionLog::open(dir.path(), config, false).unwrap();
        for pid in 0..6 {
            append(&log, txn(pid, 0, 2));
            log.append_marker(pid, 0, false, 0).unwrap();
        }
        let end = log.log_end_offset();
        assert_eq!(log.aborted_transactions(0, end).len(), 6);
        let count_txnindex = || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "txnindex")
                })
                .count()
        };
        let segments_before = log.lock().local.segments().len();
        assert_eq!(count_txnindex(), segments_before);
        // DeleteRecords to the middle of the log: entries of dropped segments go with them;
        // those wholly below the log start are never reported.
        let start = log.delete_records(9).unwrap();
        assert!(log.lock().local.segments().len() < segments_before);
        assert_eq!(count_txnindex(), log.lock().local.segments().len());
        let left = log.aborted_transactions(start, end);
        assert!(left.iter().all(|e| e.last_offset >= start));
        assert_eq!(
            left.iter().map(|e| e.producer_id).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        // Size retention keeps the newest segments only.
        log.set_config(LogConfig {
            retention_bytes: 150,
            retention_ms: -1,
            ..config
        });
        log.enforce_retention(now_ms()).unwrap();
        let start = log.log_start_offset();
        assert!(log
            .aborted_transactions(start, end)
            .iter()
            .all(|e| e.last_offset >= start));
        assert_eq!(count_txnindex(), log.lock().local.segments().len());
        drop(log);
        let log = PartitionLog::open(dir.path(), config, false).unwrap();
        assert!(log
            .aborted_transactions(start, end)
            .iter()
            .all(|e| e.last_offset >= start));
    }

    #[test]
    fn retention_past_an_open_transaction_keeps_the_lso_at_the_log_start() {
        let log = PartitionLog::in_memory(small_segments());
        append(&log, txn(1, 0, 3)); // 0..=2, stays open
        append(&log, encode_batch(3, Compression::None, 1)); // 3..=5
        assert_eq!(log.last_stable_offset(), 0);
        log.delete_records(4).unwrap();
        assert_eq!(log.last_stable_offset(), 4);
        log.append_marker(1, 0, true, 0).unwrap();
        assert_eq!(log.last_stable_offset(), 7);
    }

    #[test]
    fn compaction_stops_at_the_lso_and_ignores_aborted_data() {
        for disk in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                cleanup_compact: true,
                cleanup_delete: false,
                segment_bytes: 250,
                ..small_segments()
            };
            let log = if disk {
                PartitionLog::open(dir.path(), config, false).unwrap()
            } else {
                PartitionLog::in_memory(config)
            };
            let plain = |k: &str, v: &str| cleaner::tests_support::keyed(&[(k, Some(v))]);
            append(&log, plain("a", "a1")); // 0
            append(&log, plain("b", "b1")); // 1
                                            // An aborted transaction overwrites a: read_committed consumers never saw it.
            append(&log, producer_batch(5, 0, 0, &[("a", "aborted")], true)); // 2
            log.append_marker(5, 0, false, 0).unwrap(); // 3
            append(&log, plain("b", "b2")); // 4
            for i in 0..6 {
                append(&log, plain("c", &format!("c{i}"))); // 5..=10
            }
            // An open transaction, then more data that would otherwise be cleanable.
            append(&log, producer_batch(6, 0, 0, &[("c", "open")], true)); // 11
            for i in 0..8 {
                append(&log, plain("d", &format!("d{i}"))); // 12..=19
            }
            assert_eq!(log.last_stable_offset(), 11);
            assert!(log.lock().local.segments().len() > 3);
            let report = log.compact(now_ms()).unwrap();
            assert!(report.segments_cleaned > 0);
            let values = data_records(&log);
            let get = |k: &str| -> Vec<(i64, String)> {
                values
                    .iter()
                    .filter(|(_, key, _)| key == k)
                    .map(|(o, _, v)| (*o, v.clone()))
                    .collect()
            };
            assert_eq!(
                get("a"),
                vec![(0, "a1".to_string())],
                "the committed value stays, the aborted one goes"
            );
            assert_eq!(get("b"), vec![(4, "b2".to_string())]);
            assert!(
                get("c").contains(&(11, "open".to_string())),
                "open transaction untouched"
            );
            // Nothing at or above the LSO was cleaned: every d is still there.
            assert_eq!(get("d").len(), 8);
            // The abort marker and its index entry are kept.
            assert_eq!(log.aborted_transactions(0, 20), vec![aborted(5, 2, 3, 4)]);
            let marker = log.read(3, 1 << 20, true).unwrap();
            assert!(BatchHeader::parse(&marker.records).unwrap().is_control());
            if disk {
                drop(log);
                let log = PartitionLog::open(dir.path(), config, false).unwrap();
                assert_eq!(data_records(&log), values, "survives a restart");
                assert_eq!(log.last_stable_offset(), 11);
                // The rebuilt index may drop the entry: none of that transaction's data is left.
                assert!(log.aborted_transactions(0, 20).len() <= 1);
            }
        }
    }

    /// Every data record of the log: (offset, key, value).
    fn data_records(log: &PartitionLog) -> Vec<(i64, String, String)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let read = log.read(offset, 1 << 20, true).unwrap();
            if read.records.is_empty() {
                break;
            }
            let mut b = read.records.clone();
            for set in RecordBatchDecoder::decode_all(&mut b).unwrap() {
                for r in set.records {
                    offset = offset.max(r.offset + 1);
                    if !r.control && r.offset >= log.log_start_offset() {
                        out.push((
                            r.offset,
                            String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                            String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                        ));
                    }
                }
            }
            let mut pos = 0;
            while let Some(h) = BatchHeader::parse(&read.records[pos..]) {
                offset = offset.max(h.last_offset() + 1);
                pos += h.total_bytes;
                if pos >= read.records.len() {
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn markers_obey_the_flush_policy() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(
            dir.path(),
            LogConfig {
                flush_messages: 1,
                ..small_segments()
            },
            false,
        )
        .unwrap();
        let info = append(&log, txn(1, 0, 2));
        log.sync_to(info.last_offset + 1).unwrap();
        let marker = log.append_marker(1, 0, true, 0).unwrap();
        assert!(log.durable_offset() > marker, "synced before returning");
        append(&log, txn(1, 2, 1));
        let info = log.append_marker_unsynced(1, 0, false, 0).unwrap();
        assert!(info.needs_sync);
        assert_eq!(info.base_offset, info.last_offset);
        assert!(log.durable_offset() <= info.last_offset);
        log.sync_to(info.last_offset + 1).unwrap();
        assert!(log.durable_offset() > info.last_offset);
    }
}
