//! One partition's log: an ordered run of segments, the log start and end offsets, and a
//! notifier that wakes fetches waiting for data.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};
use tokio::sync::Notify;

use super::batch::{self, BatchHeader, HEADER_BYTES};
use super::epoch_cache::{EpochCache, EpochEntry};
use super::open_files::OpenFiles;
use super::producer_state::{CompletedTxn, ProducerStates, SequenceCheck, SequenceError};
use super::segment::{Segment, Window};
use super::store::{Records, SegmentStore};
use super::txn::{self, AbortedTxn, ControlRecord};

/// Per-partition storage settings (from the topic's configs over the broker defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before one would exceed this size.
    pub segment_bytes: u64,
    /// Roll to a new segment when the active one is older than this.
    pub segment_ms: i64,
    /// Add an index entry after this many bytes of batches.
    pub index_interval_bytes: u64,
    /// fsync before acknowledging once this many records are not yet durable (1 = every
    /// append is durable before its answer; `i64::MAX` = leave it to the periodic flush).
    pub flush_messages: i64,
    /// fsync when unflushed data is older than this (the periodic flush).
    pub flush_ms: i64,
    /// Delete whole segments whose newest record is older than this (-1: keep forever).
    pub retention_ms: i64,
    /// Delete the oldest segments while the log is larger than this (-1: no limit).
    pub retention_bytes: i64,
    /// `cleanup.policy` contains `delete`: retention applies.
    pub cleanup_delete: bool,
    /// `cleanup.policy` contains `compact`: the cleaner keeps the newest record per key.
    pub cleanup_compact: bool,
    /// How long a tombstone survives compaction, counted from its segment's newest record.
    pub delete_retention_ms: i64,
    /// A record is not compacted before it is this old.
    pub min_compaction_lag_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            flush_messages: i64::MAX,
            flush_ms: 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
        }
    }
}

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

/// What a compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionReport {
    pub segments_cleaned: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: i64,
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
    /// create) or its segment file opened, which must not happen on the async runtime. Nothing was appended; append with
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

struct LogState {
    /// Ordered by base offset; never empty; the last one is active.
    segments: Vec<Segment>,
    log_start_offset: i64,
    producers: ProducerStates,
    config: LogConfig,
    /// What the checkpoint file last recorded (disk mode), to write it only on change.
    checkpointed: Checkpoint,
    /// The producer snapshot file's contents as last read or written (disk mode): a clean stop
    /// rewrites it only when they changed.
    snapshot_on_disk: Option<Vec<u8>>,
    /// The end offset of the range the last compaction pass covered: a new pass runs only
    /// once more segments have rolled.
    compacted_upto: i64,
    /// The offset below which records are committed: what consumers may read, what acks=all
    /// waits for. `log_start_offset <= high_watermark <= log end` always holds.
    high_watermark: i64,
    /// While set (a leader that is its partition's only in-sync replica, as on a single
    /// node) every append moves the high watermark to the new log end; otherwise only
    /// [`PartitionLog::advance_high_watermark`] does (replication: the ISR's minimum).
    hw_follows_log_end: bool,
    /// The epoch a leader append stamps on its batches (`partition_leader_epoch`).
    leader_epoch: i32,
    /// Leader epoch -> first offset, for every epoch that wrote (see `epoch_cache`).
    epochs: EpochCache,
    /// The leader-epoch checkpoint as last written (disk mode), to write it only on change.
    epochs_written: Option<String>,
}

/// Group commit: offsets below `durable` are on stable storage; at most one fsync runs at a
/// time and everyone waiting is covered by the next one.
struct FlushState {
    durable: i64,
    in_progress: bool,
    /// When data first became non-durable after the last flush (for `flush_ms`).
    dirty_since_ms: Option<i64>,
}

/// Per-partition facts that outlive a restart: `<dir>/partition.checkpoint`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// DeleteRecords and retention advance it; reads below it are out of range.
    pub log_start_offset: i64,
    /// Everything below it was fsynced: an unclean start only CRC-scans from here.
    pub recovery_point: i64,
}

impl Checkpoint {
    const FILE: &'static str = "partition.checkpoint";

    fn read(dir: &Path) -> Checkpoint {
        let text = std::fs::read_to_string(dir.join(Self::FILE)).unwrap_or_default();
        let mut fields = text.split_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (Some("v1"), Some(start), Some(recovery)) => Checkpoint {
                log_start_offset: start.parse().unwrap_or(0),
                recovery_point: recovery.parse().unwrap_or(0),
            },
            _ => Checkpoint::default(),
        }
    }

    fn write(&self, dir: &Path) -> io::Result<()> {
        let text = format!("v1 {} {}\n", self.log_start_offset, self.recovery_point);
        super::fsutil::write_atomically(&dir.join(Self::FILE), text.as_bytes())
    }
}

/// The producer-state snapshot written at a clean shutdown: `<dir>/producer.snapshot`.
const PRODUCER_SNAPSHOT: &str = "producer.snapshot";

/// Suffix of a deleted partition's directory, renamed aside until it is removed (Kafka's).
pub const DELETED_DIR_SUFFIX: &str = "-delete";

/// The snapshot's list of the segments (base offsets) whose transaction index has entries:
/// a clean start rebuilds a listed segment's missing `.txnindex`, and needs none for others.
const SNAPSHOT_TXN_INDEX_SEGMENTS: &str = "txn_index_segments";

/// The snapshot: the producer state's JSON plus [`SNAPSHOT_TXN_INDEX_SEGMENTS`].
fn producer_snapshot(state: &LogState) -> io::Result<Vec<u8>> {
    let mut value = serde_json::to_value(&state.producers).map_err(io::Error::other)?;
    let with_entries: Vec<i64> = state
        .segments
        .iter()
        .filter(|s| !s.txn_index.entries().is_empty())
        .map(|s| s.base_offset)
        .collect();
    if let Some(fields) = value.as_object_mut() {
        fields.insert(SNAPSHOT_TXN_INDEX_SEGMENTS.into(), with_entries.into());
    }
    serde_json::to_vec(&value).map_err(io::Error::other)
}

/// The producer state and the segments with transaction index entries from `dir`'s snapshot,
/// and the file's bytes (`None`s when missing or unreadable; the list is `None` in a snapshot
/// of an older version).
type SnapshotRead = (Option<ProducerStates>, Option<Vec<i64>>, Option<Vec<u8>>);

fn read_producer_snapshot(dir: &Path) -> SnapshotRead {
    let Ok(bytes) = std::fs::read(dir.join(PRODUCER_SNAPSHOT)) else {
        return (None, None, None);
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return (None, None, None);
    };
    let segments = value
        .as_object_mut()
        .and_then(|fields| fields.remove(SNAPSHOT_TXN_INDEX_SEGMENTS))
        .and_then(|list| serde_json::from_value(list).ok());
    match serde_json::from_value::<ProducerStates>(value) {
        Ok(producers) => (Some(producers), segments, Some(bytes)),
        Err(_) => (None, None, None),
    }
}

impl LogState {
    fn active(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has an active segment")
    }

    fn log_end_offset(&self) -> i64 {
        self.segments
            .last()
            .expect("a log always has an active segment")
            .next_offset
    }

    /// Index of the segment holding `offset` (the last one starting at or below it).
    fn segment_for(&self, offset: i64) -> usize {
        let i = self.segments.partition_point(|s| s.base_offset <= offset);
        i.saturating_sub(1)
    }

    /// The first offset of the oldest ongoing transaction (never below the log start), else
    /// the high watermark; never above the high watermark.
    fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark;
        match self.producers.first_unstable_offset() {
            Some(first) => first.max(self.log_start_offset).min(hw),
            None => hw,
        }
    }

    /// The aborted transactions overlapping `[from, upper)`: marker at or after `from`, first
    /// offset before `upper`. Segments are searched from the one holding `from` until an
    /// entry shows that no transaction starting before `upper` was still open (see `txn`).
    fn aborted_between(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        let mut out = Vec::new();
        for s in &self.segments[self.segment_for(from)..] {
            for e in s.txn_index.entries() {
                if e.last_offset >= from && e.first_offset < upper {
                    out.push(*e);
                }
                if e.last_stable_offset >= upper {
                    return out;
                }
            }
        }
        out
    }
}

/// The index entry of an aborted transaction, given the producer state right after it ended.
fn aborted_entry(done: &CompletedTxn, producers: &ProducerStates) -> AbortedTxn {
    AbortedTxn {
        producer_id: done.producer_id,
        first_offset: done.first_offset,
        last_offset: done.last_offset,
        last_stable_offset: producers
            .first_unstable_offset()
            .unwrap_or(done.last_offset + 1),
    }
}

/// Rebuilds the transaction index of every segment whose file was missing or inconsistent, by
/// replaying every batch header of the log into a fresh producer state.
fn rebuild_txn_indexes(segments: &mut [Segment]) -> io::Result<()> {
    let mut tracker = ProducerStates::default();
    for segment in segments.iter_mut() {
        let mut aborted = Vec::new();
        segment.for_each_batch_header(&mut |h, c| {
            if let Some(done) = tracker.replay(h, c) {
                if done.aborted {
                    aborted.push(aborted_entry(&done, &tracker));
                }
            }
        })?;
        if !segment.txn_index_loaded {
            segment.txn_index.replace(aborted)?;
            segment.txn_index_loaded = true;
        }
    }
    Ok(())
}

pub struct PartitionLog {
    state: Mutex<LogState>,
    flush: Mutex<FlushState>,
    flushed: Condvar,
    hw_advanced: Notify,
    dir: Option<PathBuf>,
    /// Where segment files are opened (disk mode).
    files: Arc<OpenFiles>,
    /// Held (on the blocking pool only) by whoever creates this log's next segment, so
    /// segment files are created one at a time; taken before the state lock.
    roll_lock: Mutex<()>,
    /// Held while the checkpoint files are written (outside the state lock).
    checkpoint_lock: Mutex<()>,
    /// Latched by the first failed data write or fsync ("fsyncgate": a retried fsync may
    /// succeed although the kernel dropped the dirty pages): from then on appends, reads and
    /// syncs answer [`LogError::Failed`], never success.
    failed: AtomicBool,
    /// Set (under the state lock) when the topic is deleted or the broker stops: appends,
    /// rolls and every file write answer [`LogError::Closed`], so an in-flight handle never
    /// writes into a directory that now belongs to someone else.
    closed: AtomicBool,
    /// A file was created in the directory (a segment at a roll, the directory itself) since
    /// its last fsync: the next sync fsyncs the directory too, before anything is durable.
    dir_dirty: AtomicBool,
}

/// The io::Error form of [`LogError::Failed`] (syncs return io::Result).
fn failed_io() -> io::Error {
    io::Error::other(LogError::Failed)
}

fn closed_io() -> io::Error {
    io::Error::other(LogError::Closed)
}

impl PartitionLog {
    /// An empty log held in memory.
    pub fn in_memory(config: LogConfig) -> PartitionLog {
        PartitionLog::with_state(
            LogState {
                segments: vec![Segment::new_in_memory(0, now_ms())],
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
        let durable = state.log_end_offset();
        // A loaded log's records were all committed when they were written (one replica).
        state.high_watermark = durable;
        PartitionLog {
            state: Mutex::new(state),
            flush: Mutex::new(FlushState {
                durable,
                in_progress: false,
                dirty_since_ms: None,
            }),
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
    fn check_usable(&self) -> Result<(), LogError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(LogError::Failed);
        }
        Ok(())
    }

    /// Latches the log failed (logged at error once, as Kafka's log-dir failure).
    fn fail(&self, what: &str, error: &io::Error) {
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
        let created_dir = !dir.exists();
        std::fs::create_dir_all(dir)?;
        super::cleaner::finish_interrupted_swaps(dir)?;
        let mut bases: Vec<i64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse::<i64>().ok()
            })
            .collect();
        bases.sort_unstable();
        // A new directory or a new first segment file: their entries are not durable yet.
        let created_files = created_dir || bases.is_empty();
        if bases.is_empty() {
            bases.push(0);
        }
        let checkpoint = Checkpoint::read(dir);
        // The snapshot is read only after a clean stop and rewritten at every clean stop, so
        // it is left in place (deleting it costs an unlink per partition at every start).
        let (snapshot, txn_index_segments, snapshot_on_disk) = if clean {
            read_producer_snapshot(dir)
        } else {
            (None, None, None)
        };
        // Without a snapshot the producer state (open transactions included) is rebuilt from
        // every batch of the log, and with it every segment's aborted-transaction index.
        let rebuild_producers = snapshot.is_none();
        let mut producers = snapshot.unwrap_or_default();
        // The leader-epoch checkpoint covers at least what is below the recovery point; the
        // batches a recovery scan reads assign their epochs again.
        let mut epochs = EpochCache::load(dir).unwrap_or_default();
        let epochs_written = Some(epochs.checkpoint_text());
        let now = now_ms();
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
        let mut scanned = 0usize;
        let mut stale_txn_indexes = false;
        for (i, &base) in bases.iter().enumerate() {
            let mut segment = Segment::open_on_disk(dir, base, now, &files)?;
            let below_recovery_point = bases
                .get(i + 1)
                .is_some_and(|&next| next <= checkpoint.recovery_point);
            let mut aborted = Vec::new();
            let mut on_batch = |h: &BatchHeader, c: Option<ControlRecord>| {
                epochs.assign(h.partition_leader_epoch, h.base_offset);
                if !rebuild_producers {
                    return;
                }
                if let Some(done) = producers.replay(h, c) {
                    if done.aborted {
                        aborted.push(aborted_entry(&done, &producers));
                    }
                }
            };
            let report = if clean || below_recovery_point {
                segment.load(
                    config.index_interval_bytes,
                    rebuild_producers,
                    &mut on_batch,
                )?
            } else {
                scanned += 1;
                segment.recover(true, config.index_interval_bytes, &mut on_batch)?
            };
            if rebuild_producers {
                segment.txn_index.replace(aborted)?;
            } else if !segment.txn_index_loaded
                || !segment
                    .txn_index
                    .consistent_with(segment.base_offset, segment.next_offset)
                || (!segment.txn_index.file_exists()
                    && txn_index_segments
                        .as_ref()
                        .is_none_or(|with| with.contains(&base)))
            {
                // Malformed, or naming markers elsewhere, or missing although the snapshot
                // says the segment had aborted transactions (a snapshot of an older version
                // says nothing: every segment had a file then).
                segment.txn_index_loaded = false;
                stale_txn_indexes = true;
            }
            let cut = report.truncated_bytes > 0;
            if cut {
                tracing::warn!(
                    dir = %dir.display(),
                    segment = base,
                    kept_batches = report.batches,
                    truncated_bytes = report.truncated_bytes,
                    "truncated a torn or corrupt tail of the log"
                );
            }
            let empty_follower = segment.size_bytes == 0 && !segments.is_empty();
            if empty_follower && i + 1 < bases.len() {
                // An empty segment in the middle (a crash right after a roll): drop it.
                segment.delete_files()?;
            } else {
                segments.push(segment);
            }
            if cut && i + 1 < bases.len() {
                for &later in &bases[i + 1..] {
                    let s = Segment::open_on_disk(dir, later, now, &files)?;
                    tracing::warn!(dir = %dir.display(), segment = later,
                        "deleted a segment after a corrupt batch");
                    s.delete_files()?;
                }
                break;
            }
        }
        if segments.is_empty() {
            segments.push(Segment::open_on_disk(dir, bases[0], now, &files)?);
        }
        if stale_txn_indexes {
            tracing::warn!(dir = %dir.display(), "rebuilding missing or inconsistent transaction indexes");
            rebuild_txn_indexes(&mut segments)?;
        }
        let log_end = segments.last().map_or(0, |s| s.next_offset);
        let log_start_offset = checkpoint
            .log_start_offset
            .max(segments[0].base_offset)
            .min(log_end);
        epochs.truncate_from_end(log_end);
        epochs.truncate_from_start(log_start_offset);
        if scanned > 0 {
            tracing::info!(dir = %dir.display(), scanned_segments = scanned, "recovered log");
        }
        let log = PartitionLog::with_state(
            LogState {
                segments,
                log_start_offset,
                producers,
                config,
                checkpointed: checkpoint,
                snapshot_on_disk,
                compacted_upto: 0,
                high_watermark: 0,
                hw_follows_log_end: true,
                leader_epoch: 0,
                epochs,
                epochs_written,
            },
            Some(dir.to_path_buf()),
            files,
        );
        // Fsynced by the first sync (on the blocking pool), before anything is acknowledged
        // as durable; the parent's entry for a new directory is the registry's (it fsyncs the
        // data directory before the topic is persisted).
        log.dir_dirty.store(created_files, Ordering::Release);
        Ok(log)
    }

    /// Replaces the storage settings (AlterConfigs); they apply from the next append.
    pub fn set_config(&self, config: LogConfig) {
        self.lock().config = config;
    }

    pub fn config(&self) -> LogConfig {
        self.lock().config
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
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
        self.lock().log_end_offset()
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
        let target = offset.min(state.log_end_offset());
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
        self.lock().aborted_between(from, upper)
    }

    /// Appends validated batches (see [`batch::validate_batches`]), assigning their offsets.
    /// With `log_append_time_ms`, stamps them with that time first. A retried idempotent batch
    /// is not appended again: its original offsets are returned.
    ///
    /// Batches with a producer id go through the producer state: sequence and epoch checks,
    /// a transactional batch opens its producer's transaction, a non-transactional one is
    /// refused while that transaction is open; a control batch holding a transaction marker
    /// ends it (as [`PartitionLog::append_marker`]).
    pub fn append(
        &self,
        batches: &mut [u8],
        log_append_time_ms: Option<i64>,
    ) -> Result<AppendInfo, LogError> {
        if let Some(now) = log_append_time_ms {
            batch::stamp_log_append_time(batches, now);
        }
        self.append_rolling(AppendInput::Patch(batches))
    }

    /// As [`PartitionLog::append`] (without LogAppendTime), for batches in a buffer that is
    /// shared and must not change (a request frame): instead of being patched in, the assigned
    /// base offsets are written in front of the rest of each batch by one vectored write. The
    /// produce path's record bytes are thus never copied by the broker.
    /// Rolls a segment first when it must (a file created, outside the partition lock):
    /// blocking, call it off the async runtime, or try [`PartitionLog::try_append_shared`].
    pub fn append_shared(&self, batches: &[u8]) -> Result<AppendInfo, LogError> {
        self.append_rolling(AppendInput::Shared(batches))
    }

    /// As [`PartitionLog::append_shared`], but never blocks: when the append needs a new
    /// segment it answers [`LogError::RollNeeded`] and appends nothing. The produce path
    /// appends this way on the async runtime and falls back to the blocking pool.
    pub fn try_append_shared(&self, batches: &[u8]) -> Result<AppendInfo, LogError> {
        let rolling = self.rolling_on_runtime()?;
        self.append_batches(&mut AppendInput::Shared(batches), rolling)
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
        state.epochs.end_offset_for(epoch, state.log_end_offset())
    }

    /// Appends a leader's batches as they are (a follower's fetch): offsets, leader epochs,
    /// producer ids and control batches unchanged; the first batch at or after the log end.
    /// The producer state, the aborted-transaction index and the leader-epoch cache are
    /// rebuilt from what is appended; sequences are not checked (the leader did). Rolls when
    /// it must: call it off the async runtime.
    pub fn append_as_follower(&self, batches: &[u8]) -> Result<AppendInfo, LogError> {
        self.append_rolling(AppendInput::Follower(batches))
    }

    /// Cuts the log at `offset` (a follower whose log diverged from its new leader's): every
    /// batch that ends at or after `offset` goes, the one holding `offset` too (the log end
    /// becomes its base). Segments wholly above are deleted; the producer state is rebuilt
    /// from what remains; the leader-epoch cache, the high watermark and the durable point
    /// come down with the end, and the recovery point with them (the log start too, if the
    /// cut batch began below it). Returns the new log end.
    /// Blocking (files cut and deleted): call it off the async runtime.
    pub fn truncate_to(&self, offset: i64) -> Result<i64, LogError> {
        let _rolls = self.roll_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (removed, new_end) = {
            let mut state = self.lock();
            self.check_usable()?;
            let log_end = state.log_end_offset();
            if offset >= log_end {
                return Ok(log_end);
            }
            if offset < state.log_start_offset {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start: state.log_start_offset,
                    log_end,
                });
            }
            crate::threads::may_block("truncating a log");
            let keep = state
                .segments
                .partition_point(|s| s.base_offset < offset)
                .max(1);
            let removed: Vec<Segment> = state.segments.drain(keep..).collect();
            let interval = state.config.index_interval_bytes;
            if let Err(e) = state.active().truncate_to(offset, interval) {
                self.fail("truncating the log", &e);
                return Err(e.into());
            }
            let new_end = state.log_end_offset();
            let mut producers = ProducerStates::default();
            for segment in &state.segments {
                segment.for_each_batch_header(&mut |h, c| {
                    producers.replay(h, c);
                })?;
            }
            state.producers = producers;
            state.epochs.truncate_from_end(new_end);
            state.high_watermark = state.high_watermark.min(new_end);
            // The batch holding `offset` may start below the log start (DeleteRecords into
            // the middle of a batch): the log then starts where it ends, as in Kafka.
            state.log_start_offset = state.log_start_offset.min(new_end);
            (removed, new_end)
        };
        {
            let mut flush = self.lock_flush();
            flush.durable = flush.durable.min(new_end);
        }
        // The recovery point comes down with the durable point.
        self.write_checkpoint(false)?;
        for s in &removed {
            s.detach_files()?;
            s.delete_files()?;
        }
        Ok(new_end)
    }

    /// As [`PartitionLog::append`], but never blocks: [`LogError::RollNeeded`] (nothing
    /// appended) when a segment must be rolled first.
    pub fn try_append(
        &self,
        batches: &mut [u8],
        log_append_time_ms: Option<i64>,
    ) -> Result<AppendInfo, LogError> {
        if let Some(now) = log_append_time_ms {
            batch::stamp_log_append_time(batches, now);
        }
        let rolling = self.rolling_on_runtime()?;
        self.append_batches(&mut AppendInput::Patch(batches), rolling)
    }

    /// How an append on the async runtime may roll: inline in memory mode; on disk not at all,
    /// and only if the active segment's file is open ([`LogError::RollNeeded`] otherwise,
    /// nothing appended: the append moves to the blocking pool).
    fn rolling_on_runtime(&self) -> Result<Rolling, LogError> {
        if self.dir.is_none() {
            return Ok(Rolling::Inline);
        }
        if !self.lock().active().store.is_ready() {
            return Err(LogError::RollNeeded);
        }
        Ok(Rolling::Refuse)
    }

    /// An append that rolls when it must, with the new segment's files created outside the
    /// partition lock: appends are tried without rolling; when a roll is needed, the next
    /// segment (based at the log end) is created unlocked, then installed under the lock if
    /// the log end has not moved meanwhile (else it is removed and the append tried again).
    /// `roll_lock` makes this partition's rolls one at a time, so the created file is ours.
    fn append_rolling(&self, mut input: AppendInput<'_>) -> Result<AppendInfo, LogError> {
        let Some(dir) = &self.dir else {
            // A memory segment is no file: rolling never blocks.
            return self.append_batches(&mut input, Rolling::Inline);
        };
        let _rolls = self.roll_lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // The active segment's file may have been closed by the open-files cache: it is
            // reopened here, not under the partition lock.
            let active = self.lock().active().store.clone();
            crate::threads::may_block("opening a segment file");
            active.prepare()?;
            match self.append_batches(&mut input, Rolling::Refuse) {
                Err(LogError::RollNeeded) => {}
                done => return done,
            }
            let base = self.log_end_offset();
            // A deleted log's directory may be another topic's by now: no file is created for
            // it (deletion takes `roll_lock` too, so it cannot close the log from here on).
            self.check_usable()?;
            crate::threads::may_block("creating a segment");
            let segment = match Segment::open_on_disk(dir, base, now_ms(), &self.files) {
                Ok(segment) => segment,
                Err(e) => {
                    self.fail("rolling a segment", &e);
                    return Err(e.into());
                }
            };
            let sealed = {
                let mut state = self.lock();
                if let Err(e) = self.check_usable() {
                    // Closed by a stop meanwhile: the file was never used.
                    drop(state);
                    segment.delete_files()?;
                    return Err(e);
                }
                let active = state.active();
                if active.next_offset == base && active.base_offset < base {
                    let sealed = (active.store.clone(), active.size_bytes);
                    state.segments.push(segment);
                    // The new file's directory entry is made durable by the next sync_to,
                    // before any append into it is acknowledged as durable.
                    self.dir_dirty.store(true, Ordering::Release);
                    Some(sealed)
                } else {
                    drop(state);
                    // Appends moved the end meanwhile (the batch fitted after all): this
                    // file was never used.
                    segment.delete_files()?;
                    None
                }
            };
            if let Some((store, size)) = sealed {
                // The old segment's reserved blocks are given back outside the lock; its data
                // is fsynced by the next sync (the flush policy's, or the periodic flush).
                if let Err(e) = store.seal(size) {
                    tracing::warn!(error = %e, "giving back a rolled segment's reserved blocks failed");
                }
            }
        }
    }

    fn append_batches(
        &self,
        input: &mut AppendInput<'_>,
        rolling: Rolling,
    ) -> Result<AppendInfo, LogError> {
        let (info, index_error, hw_moved) = {
            let mut parsed: Vec<(BatchHeader, Option<ControlRecord>)> =
                batches_with_control(input.bytes()).collect();
            let mut state = self.lock();
            self.check_usable()?;
            let follower = matches!(input, AppendInput::Follower(_));
            let mut tracked = false;
            for (h, control) in &parsed {
                if !h.has_producer_id() {
                    continue;
                }
                tracked = true;
                if follower {
                    // The leader checked sequences and markers; a follower takes its batches.
                    continue;
                }
                if h.is_control() {
                    if let Some(c) = control.filter(|c| c.marker().is_some()) {
                        state.producers.check_marker(
                            h.producer_id,
                            h.producer_epoch,
                            c.coordinator_epoch,
                        )?;
                    }
                } else if let SequenceCheck::Duplicate {
                    base_offset,
                    last_offset,
                } = state.producers.check(h)?
                {
                    return Ok(AppendInfo {
                        base_offset,
                        last_offset,
                        log_start_offset: state.log_start_offset,
                        needs_sync: state.config.flush_messages <= 1,
                    });
                }
            }
            let log_end = state.log_end_offset();
            if follower {
                check_follower_offsets(&parsed, log_end)?;
            }
            let incoming_offsets: i64 = match (follower, parsed.last()) {
                (true, Some((last, _))) => last.last_offset() + 1 - log_end,
                _ => parsed
                    .iter()
                    .map(|(h, _)| h.last_offset_delta as i64 + 1)
                    .sum(),
            };
            if self.roll_needed(&mut state, input.bytes().len() as u64, incoming_offsets) {
                match rolling {
                    Rolling::Refuse => return Err(LogError::RollNeeded),
                    Rolling::Inline => {
                        if let Err(e) = self.roll(&mut state, now_ms()) {
                            self.fail("rolling a segment", &e);
                            return Err(e.into());
                        }
                    }
                }
            }
            let leader_epoch = state.leader_epoch;
            let (base_offset, next) = if follower {
                // As the leader wrote them: offsets and epochs unchanged.
                let first = parsed.first().map_or(log_end, |(h, _)| h.base_offset);
                let last = parsed.last().map_or(log_end, |(h, _)| h.last_offset() + 1);
                (first, last)
            } else {
                let base_offset = state.log_end_offset();
                let mut next = base_offset;
                for (h, _) in &mut parsed {
                    h.base_offset = next;
                    h.partition_leader_epoch = leader_epoch;
                    next += h.last_offset_delta as i64 + 1;
                }
                (base_offset, next)
            };
            let interval = state.config.index_interval_bytes;
            let flush_messages = state.config.flush_messages;
            let active = state.active();
            let headers: Vec<BatchHeader> = parsed.iter().map(|(h, _)| *h).collect();
            let written = match &mut *input {
                AppendInput::Patch(batches) => {
                    batch::assign_offsets(batches, base_offset);
                    batch::stamp_leader_epoch(batches, leader_epoch);
                    active.append(batches, &headers, false, interval)
                }
                AppendInput::Shared(batches) => active.append(batches, &headers, true, interval),
                AppendInput::Follower(batches) => active.append(batches, &headers, false, interval),
            };
            if let Err(e) = written {
                // Leave no partial bytes behind: the next append overwrites from the old end.
                let _ = active.store.truncate(active.size_bytes);
                self.fail("appending to the log", &e);
                return Err(e.into());
            }
            debug_assert_eq!(active.next_offset, next);
            for h in &headers {
                state.epochs.assign(h.partition_leader_epoch, h.base_offset);
            }
            let hw_moved = state.hw_follows_log_end && Self::raise_hw(&mut state, next);
            let mut index_error = None;
            if tracked {
                for (h, control) in parsed {
                    let Some(done) = state.producers.replay(&h, control) else {
                        continue;
                    };
                    if done.aborted {
                        let entry = aborted_entry(&done, &state.producers);
                        if let Err(e) = state.active().txn_index.append(entry) {
                            index_error = Some(e);
                        }
                    }
                }
            }
            let log_start_offset = state.log_start_offset;
            drop(state);
            let mut flush = self.lock_flush();
            flush.dirty_since_ms.get_or_insert_with(now_ms);
            let info = AppendInfo {
                base_offset,
                last_offset: next - 1,
                log_start_offset,
                needs_sync: next - flush.durable >= flush_messages,
            };
            (info, index_error, hw_moved)
        };
        if hw_moved {
            self.hw_advanced.notify_waiters();
        }
        match index_error {
            // The marker is in the log and the state in memory is right; the index file is
            // not (an unclean start rebuilds it from the log).
            Some(e) => Err(e.into()),
            None => Ok(info),
        }
    }

    /// Ends `producer_id`'s transaction in this partition (the transaction coordinator's
    /// WriteTxnMarkers): appends a control batch (transactional + control attributes) whose
    /// one record has key (version 0, type ABORT = 0 | COMMIT = 1) and value (version 0,
    /// `coordinator_epoch`). Returns the marker's offset. On abort the transaction (producer
    /// id, first offset, marker offset) goes to the aborted-transaction index. A marker for a
    /// producer with no ongoing transaction here is written all the same (as Kafka does), and
    /// indexes nothing.
    ///
    /// Refused (as Kafka's transaction versions 0/1): a producer epoch older than the
    /// producer's (`SequenceError::StaleEpoch`), a coordinator epoch older than the last
    /// marker's (`SequenceError::CoordinatorFenced`).
    ///
    /// Flush policy: when it wants the marker durable (`flush.messages`, `fsync = "always"`),
    /// this fsyncs before returning (group-committed, see [`PartitionLog::sync_to`]), so it
    /// may block: call it off the async runtime. [`PartitionLog::append_marker_unsynced`]
    /// leaves that to the caller.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<i64, LogError> {
        let info =
            self.append_marker_unsynced(producer_id, producer_epoch, commit, coordinator_epoch)?;
        if info.needs_sync {
            self.sync_to(info.last_offset + 1)?;
        }
        Ok(info.base_offset)
    }

    /// As [`PartitionLog::append_marker`] without the fsync: when `needs_sync` is set, call
    /// [`PartitionLog::sync_to`] with `last_offset + 1` before relying on the marker.
    pub fn append_marker_unsynced(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        if producer_id < 0 || producer_epoch < 0 {
            return Err(LogError::InvalidMarker(
                "a marker needs a producer id and epoch",
            ));
        }
        let mut marker = txn::encode_marker(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            now_ms(),
        );
        self.append(&mut marker, None)
    }

    fn lock_flush(&self) -> MutexGuard<'_, FlushState> {
        self.flush.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every offset below `upto` durable (blocking; call it off the async runtime).
    /// Group commit: if an fsync is running, wait for it, then one caller fsyncs everything
    /// appended meanwhile for all waiters.
    ///
    /// Once an fsync failed the log is latched failed: this answers an error from then on,
    /// for every waiter, and never fsyncs again (a retried fsync could report success for
    /// pages the kernel dropped).
    pub fn sync_to(&self, upto: i64) -> io::Result<()> {
        let mut flush = self.lock_flush();
        loop {
            if self.is_failed() {
                return Err(failed_io());
            }
            if flush.durable >= upto {
                return Ok(());
            }
            if self.is_closed() {
                return Err(closed_io());
            }
            if !flush.in_progress {
                break;
            }
            flush = self.flushed.wait(flush).unwrap_or_else(|p| p.into_inner());
        }
        flush.in_progress = true;
        let durable = flush.durable;
        drop(flush);
        let (end, stores) = {
            let state = self.lock();
            let first = state.segment_for(durable);
            let stores: Vec<_> = state.segments[first..]
                .iter()
                .map(|s| s.store.clone())
                .collect();
            (state.log_end_offset(), stores)
        };
        let result = stores
            .iter()
            .try_for_each(|s| s.sync())
            .and_then(|()| self.sync_dir_if_dirty());
        if let Err(e) = &result {
            self.fail("fsync", e);
        }
        let mut flush = self.lock_flush();
        flush.in_progress = false;
        if result.is_ok() {
            flush.durable = flush.durable.max(end);
            if self.log_end_offset() <= flush.durable {
                flush.dirty_since_ms = None;
            }
        }
        drop(flush);
        self.flushed.notify_all();
        result
    }

    /// Fsyncs the directory when a file was created in it since its last fsync.
    fn sync_dir_if_dirty(&self) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        if self.dir_dirty.swap(false, Ordering::AcqRel) {
            if let Err(e) = super::fsutil::sync_dir(dir) {
                self.dir_dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The periodic flush: fsyncs when unflushed data is older than `flush_ms`, then records
    /// the new recovery point. Returns whether it flushed. A failed or closed log is not
    /// flushed (its failure was logged once).
    pub fn flush_if_due(&self, now: i64) -> io::Result<bool> {
        if self.check_usable().is_err() {
            return Ok(false);
        }
        let flush_ms = self.lock().config.flush_ms;
        let due = self
            .lock_flush()
            .dirty_since_ms
            .is_some_and(|since| now - since >= flush_ms);
        if !due {
            return Ok(false);
        }
        self.sync_to(self.log_end_offset())?;
        self.write_checkpoint(false)?;
        Ok(true)
    }

    /// Whether anything appended is not yet durable (one uncontended lock: what the periodic
    /// flush checks first, for every partition, every tick).
    pub fn has_unflushed(&self) -> bool {
        self.lock_flush().dirty_since_ms.is_some()
    }

    /// Offsets below this are durable.
    pub fn durable_offset(&self) -> i64 {
        self.lock_flush().durable
    }

    /// Writes `partition.checkpoint` if its contents changed (disk mode). A closed log's
    /// directory may belong to a recreated topic: only the shutdown sync (`closing`) writes it.
    fn write_checkpoint(&self, closing: bool) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        // One writer at a time, and the files are written without the state lock.
        let _writing = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let durable = self.durable_offset();
        let (next, epochs) = {
            let state = self.lock();
            if self.is_closed() && !closing {
                return Err(closed_io());
            }
            let next = Checkpoint {
                log_start_offset: state.log_start_offset,
                recovery_point: durable.min(state.log_end_offset()),
            };
            let text = state.epochs.checkpoint_text();
            let epochs = (state.epochs_written.as_deref() != Some(text.as_str())).then_some(text);
            ((next != state.checkpointed).then_some(next), epochs)
        };
        // The epochs first: the file must cover everything below the new recovery point.
        if let Some(text) = &epochs {
            EpochCache::write(dir, text)?;
        }
        if let Some(next) = &next {
            next.write(dir)?;
        }
        let mut state = self.lock();
        if let Some(text) = epochs {
            state.epochs_written = Some(text);
        }
        if let Some(next) = next {
            state.checkpointed = next;
        }
        Ok(())
    }

    /// Rolls before an append of `incoming_bytes` holding `incoming_offsets` offsets when the
    /// active segment would exceed `segment.bytes`, is older than `segment.ms`, or its
    /// relative offsets would no longer fit the indexes (as Kafka, at most `i32::MAX` past
    /// the segment's base offset).
    fn roll_needed(
        &self,
        state: &mut LogState,
        incoming_bytes: u64,
        incoming_offsets: i64,
    ) -> bool {
        let now = now_ms();
        let config = state.config;
        let active = state.active();
        let full =
            active.size_bytes > 0 && active.size_bytes + incoming_bytes > config.segment_bytes;
        let old = active.size_bytes > 0 && now - active.created_ms >= config.segment_ms;
        let offsets_overflow = active.size_bytes > 0
            && active.next_offset + incoming_offsets - 1 - active.base_offset
                > super::segment::RELATIVE_OFFSET_MAX;
        full || old || offsets_overflow
    }

    fn roll(&self, state: &mut LogState, now: i64) -> io::Result<()> {
        if self.is_closed() {
            // A deleted topic's log: its directory may be another topic's by now.
            return Err(closed_io());
        }
        let active = state.active();
        let base = active.next_offset;
        let segment = match &self.dir {
            Some(dir) => {
                // The old segment's data is fsynced by the next sync, not here under the lock.
                crate::threads::may_block("rolling a segment");
                active.store.seal(active.size_bytes)?;
                let segment = Segment::open_on_disk(dir, base, now, &self.files)?;
                // The new file's directory entry is made durable by the next sync_to, before
                // any append into it is acknowledged as durable.
                self.dir_dirty.store(true, Ordering::Release);
                segment
            }
            None => Segment::new_in_memory(base, now),
        };
        state.segments.push(segment);
        Ok(())
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
        let log_end = state.log_end_offset();
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
        let mut i = state.segment_for(offset);
        while state.segments[i].next_offset <= offset && i + 1 < state.segments.len() {
            i += 1;
        }
        let s = &state.segments[i];
        let store = s.store.as_ref();
        let size = s.size_bytes;
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
        let all_below_limit = s.next_offset <= limit;
        if all_below_limit && size <= budget_end {
            end = size;
            end_offset = s.next_offset;
        } else {
            if all_below_limit {
                // Every batch of the segment is below the limit: jump to the last indexed
                // batch boundary within the budget; the header there starts the next batch.
                let boundary = s.batch_start_at_or_before(budget_end);
                if boundary > end {
                    end = boundary;
                    end_offset = window
                        .header(store, end, size)?
                        .map_or(s.next_offset, |h| h.base_offset);
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
            out.aborted_transactions = state.aborted_between(offset, end_offset);
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
        let (store, start, size) =
            {
                let state = self.lock();
                let Some(s) = state.segments.iter().find(|s| {
                    s.max_timestamp >= timestamp && s.next_offset > state.log_start_offset
                }) else {
                    return Ok(None);
                };
                (
                    s.store.clone(),
                    s.scan_start_for_time(timestamp),
                    s.size_bytes,
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
                .segments
                .iter()
                .filter(|s| s.max_timestamp >= 0 && s.next_offset > state.log_start_offset)
                .reduce(|best, s| {
                    if s.max_timestamp > best.max_timestamp {
                        s
                    } else {
                        best
                    }
                })
            else {
                return Ok(None);
            };
            (
                s.store.clone(),
                s.size_bytes,
                s.max_timestamp,
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

    /// Makes everything appended so far durable, indexes included, and records the recovery
    /// point. With `shutdown`, also writes the producer-state snapshot a clean start reads.
    ///
    /// With `shutdown` the log is closed first (under its lock): an append still in flight
    /// either completed before and is covered, or is refused; nothing appends after the sync.
    /// A failed log answers an error (and the broker must not mark a clean shutdown).
    pub fn sync(&self, shutdown: bool) -> io::Result<()> {
        if self.is_failed() {
            return Err(failed_io());
        }
        {
            let state = self.lock();
            if shutdown {
                self.closed.store(true, Ordering::Release);
            }
            if let Err(e) = state
                .segments
                .iter()
                .try_for_each(|s| s.sync())
                .and_then(|()| self.sync_dir_if_dirty())
            {
                self.fail("fsync", &e);
                return Err(e);
            }
        }
        let end = self.log_end_offset();
        {
            let mut flush = self.lock_flush();
            flush.durable = flush.durable.max(end);
            flush.dirty_since_ms = None;
        }
        self.write_checkpoint(shutdown)?;
        if let (true, Some(dir)) = (shutdown, &self.dir) {
            let mut state = self.lock();
            if let Some(active) = state.segments.last() {
                active.store.seal(active.size_bytes)?;
            }
            let json = producer_snapshot(&state)?;
            if state.snapshot_on_disk.as_ref() != Some(&json) {
                // Not fsynced here: the broker syncs the file system once after every
                // partition, before the clean-shutdown marker (the only thing that makes a
                // start read snapshots).
                super::fsutil::replace_unsynced(&dir.join(PRODUCER_SNAPSHOT), &json)?;
                state.snapshot_on_disk = Some(json);
            }
        }
        Ok(())
    }

    /// DeleteRecords: moves the log start offset up to `offset` (-1: the high watermark; never
    /// past it, as Kafka refuses) and drops the segments wholly below it. Returns the new log
    /// start offset (the low watermark). The new start is durable before this returns.
    pub fn delete_records(&self, offset: i64) -> Result<i64, LogError> {
        let (start, removed) = {
            let mut state = self.lock();
            self.check_usable()?;
            let hw = state.high_watermark;
            let target = if offset == -1 { hw } else { offset };
            if target < 0 || target > hw {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start: state.log_start_offset,
                    log_end: hw,
                });
            }
            if target > state.log_start_offset {
                state.log_start_offset = target;
            }
            let removed = Self::drop_segments_below_start(&mut state);
            (state.log_start_offset, removed)
        };
        self.write_checkpoint(false)?;
        Self::delete_segment_files(&removed)?;
        Ok(start)
    }

    /// Removes non-active segments that end at or below the log start offset.
    fn drop_segments_below_start(state: &mut LogState) -> Vec<Segment> {
        // A segment ends where the next one begins (compaction may leave a gap after its last
        // batch): it is wholly below the start when the next segment begins at or below it.
        let keep_from = state
            .segments
            .windows(2)
            .position(|w| w[1].base_offset > state.log_start_offset)
            .unwrap_or(state.segments.len() - 1);
        state.segments.drain(..keep_from).collect()
    }

    fn delete_segment_files(removed: &[Segment]) -> io::Result<()> {
        // Readers holding a segment's store keep reading it: an unlinked file lives on while
        // open.
        removed.iter().try_for_each(|s| s.delete_files())
    }

    /// Compacts the log (`cleanup.policy` with `compact`; see `cleaner`): rewrites every
    /// non-active segment older than `min.compaction.lag.ms` keeping the newest record per key.
    /// Runs only when segments rolled since the last pass. Reads and appends go on meanwhile;
    /// each rewritten segment is swapped in under the lock.
    pub fn compact(&self, now: i64) -> Result<CompactionReport, LogError> {
        use super::cleaner::{self, OffsetMap, Retain};
        let (config, candidates, aborted) = {
            let state = self.lock();
            if self.check_usable().is_err() {
                return Ok(CompactionReport::default());
            }
            let config = state.config;
            // Never past the LSO: the data of an ongoing transaction may still be aborted.
            let lso = state.last_stable_offset();
            let cleanable: Vec<(i64, Arc<dyn SegmentStore>, u64, i64)> = state
                .segments
                .windows(2)
                .take_while(|w| {
                    now - w[0].newest_ms() >= config.min_compaction_lag_ms
                        && w[1].base_offset <= lso
                })
                .map(|w| {
                    let s = &w[0];
                    (s.base_offset, s.store.clone(), s.size_bytes, s.newest_ms())
                })
                .collect();
            let end = state
                .segments
                .get(cleanable.len())
                .map_or(0, |s| s.base_offset);
            if !config.cleanup_compact || cleanable.is_empty() || end <= state.compacted_upto {
                return Ok(CompactionReport::default());
            }
            // Aborted transactions with data in the range: their records neither supersede
            // others nor survive (as Kafka's cleaner).
            let mut aborted: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
            for e in state.segments.iter().flat_map(|s| s.txn_index.entries()) {
                if e.first_offset < end {
                    aborted
                        .entry(e.producer_id)
                        .or_default()
                        .push((e.first_offset, e.last_offset));
                }
            }
            (config, cleanable, aborted)
        };
        let is_aborted = |h: &BatchHeader| {
            h.is_transactional()
                && !h.is_control()
                && aborted.get(&h.producer_id).is_some_and(|ranges| {
                    ranges
                        .iter()
                        .any(|&(first, last)| first <= h.base_offset && h.base_offset <= last)
                })
        };
        let mut map = OffsetMap::new();
        for (_, store, size, _) in &candidates {
            for_each_batch(store.as_ref(), *size, |bytes, h| {
                if is_aborted(h) {
                    return Ok(());
                }
                cleaner::collect_keys(bytes, h, &mut map)
            })?;
        }
        let mut report = CompactionReport::default();
        for (base, store, size, newest) in &candidates {
            let retain = Retain {
                map: &map,
                keep_tombstones: now - newest < config.delete_retention_ms,
            };
            let mut out = Vec::with_capacity(*size as usize);
            for_each_batch(store.as_ref(), *size, |bytes, h| {
                if is_aborted(h) {
                    return Ok(());
                }
                if let Some(kept) = cleaner::filter_batch(bytes, h, &retain)? {
                    out.extend_from_slice(&kept);
                }
                Ok(())
            })?;
            report.bytes_before += size;
            report.bytes_after += out.len() as u64;
            if out.len() as u64 == *size {
                continue; // nothing removed
            }
            self.swap_in_cleaned(*base, *size, &out)?;
            report.segments_cleaned += 1;
        }
        let mut state = self.lock();
        state.compacted_upto = candidates
            .last()
            .and_then(|(base, ..)| {
                state
                    .segments
                    .iter()
                    .find(|s| s.base_offset > *base)
                    .map(|s| s.base_offset)
            })
            .unwrap_or(state.compacted_upto);
        Ok(report)
    }

    /// Replaces segment `base` (if it is still there, unchanged at `size` bytes) with the
    /// cleaned bytes, crash-safely on disk (see `cleaner`).
    fn swap_in_cleaned(&self, base: i64, size: u64, cleaned: &[u8]) -> Result<(), LogError> {
        use super::cleaner::{CLEANED_SUFFIX, SWAP_SUFFIX};
        let cleaned_path = self
            .dir
            .as_ref()
            .map(|d| d.join(format!("{base:020}.{CLEANED_SUFFIX}")));
        if self.is_closed() {
            return Err(LogError::Closed);
        }
        if let Some(path) = &cleaned_path {
            let (store, _) = super::store::FileStore::open(path, &self.files)?;
            store.write_at(0, cleaned)?;
            store.sync()?;
            store.detach();
        }
        let mut state = self.lock();
        if self.is_closed() {
            // Deleted meanwhile: the directory may be a recreated topic's.
            if let Some(path) = &cleaned_path {
                let _ = std::fs::remove_file(path);
            }
            return Err(LogError::Closed);
        }
        let Some(i) = state
            .segments
            .iter()
            .position(|s| s.base_offset == base && s.size_bytes == size)
        else {
            // Deleted (retention, DeleteRecords) while cleaning: drop the rewrite.
            if let Some(path) = &cleaned_path {
                let _ = std::fs::remove_file(path);
            }
            return Ok(());
        };
        if i + 1 == state.segments.len() {
            return Ok(()); // never the active segment
        }
        if cleaned.is_empty() && i > 0 {
            // Every record was superseded: the segment goes (reads skip the offset gap). The
            // first segment stays, empty, so that its base still marks the log start.
            let old = state.segments.remove(i);
            drop(state);
            if let Some(path) = &cleaned_path {
                let _ = std::fs::remove_file(path);
            }
            old.delete_files()?;
            return Ok(());
        }
        let interval = state.config.index_interval_bytes;
        let created = state.segments[i].created_ms;
        let mut segment = match (&self.dir, &cleaned_path) {
            (Some(dir), Some(path)) => {
                // Readers holding the old store keep reading the old file; nothing of the old
                // segment touches the names the rewrite takes.
                state.segments[i].detach_files()?;
                let swap = dir.join(format!("{base:020}.{SWAP_SUFFIX}"));
                std::fs::rename(path, &swap)?;
                super::fsutil::sync_dir(dir)?;
                std::fs::rename(&swap, dir.join(format!("{base:020}.log")))?;
                for ext in ["index", "timeindex"] {
                    let _ = std::fs::remove_file(super::segment::segment_path(dir, base, ext));
                }
                super::fsutil::sync_dir(dir)?;
                Segment::open_on_disk(dir, base, created, &self.files)?
            }
            _ => {
                let s = Segment::new_in_memory(base, created);
                s.store.write_at(0, cleaned)?;
                s
            }
        };
        segment.recover(false, interval, &mut |_, _| {})?;
        // The markers stayed: so do the aborted transactions they index.
        segment.txn_index = std::mem::take(&mut state.segments[i].txn_index);
        state.segments[i] = segment;
        Ok(())
    }

    /// Forgets idle producers (see `ProducerStates::expire`). Returns how many.
    pub fn expire_producers(&self, now: i64, expiration_ms: i64) -> usize {
        self.lock().producers.expire(now, expiration_ms)
    }

    /// Applies retention (`cleanup.policy` with `delete`): deletes the oldest whole segments
    /// whose newest record is older than `retention.ms`, then while the log exceeds
    /// `retention.bytes`. The active segment is rolled first when it alone is expired by time,
    /// as Kafka does. The log start offset moves to the first remaining segment.
    pub fn enforce_retention(&self, now: i64) -> Result<RetentionReport, LogError> {
        // It may roll the active segment: rolls are one at a time (see `append_rolling`).
        let _rolls = self.roll_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (report, removed) = {
            let mut state = self.lock();
            if self.check_usable().is_err() {
                return Ok(RetentionReport::default());
            }
            let config = state.config;
            let mut report = RetentionReport::default();
            if config.cleanup_delete {
                let expired = |s: &Segment| {
                    config.retention_ms >= 0
                        && s.size_bytes > 0
                        && now - s.newest_ms() > config.retention_ms
                };
                // Only committed data is deleted (Kafka: segments below the high watermark).
                let hw = state.high_watermark;
                if state.segments.iter().all(expired) {
                    // Everything, the active segment included, is past retention.
                    self.roll(&mut state, now)?;
                }
                let total: u64 = state.segments.iter().map(|s| s.size_bytes).sum();
                let mut remaining = total;
                let mut count = 0;
                for s in &state.segments[..state.segments.len() - 1] {
                    let over_size = config.retention_bytes >= 0
                        && remaining - s.size_bytes >= config.retention_bytes as u64;
                    if !(expired(s) || over_size) || s.next_offset > hw {
                        break;
                    }
                    remaining -= s.size_bytes;
                    count += 1;
                }
                if count > 0 {
                    let new_start = state.segments[count].base_offset;
                    state.log_start_offset = state.log_start_offset.max(new_start);
                }
            }
            let removed = Self::drop_segments_below_start(&mut state);
            report.segments_deleted = removed.len();
            report.bytes_deleted = removed.iter().map(|s| s.size_bytes).sum();
            report.log_start_offset = state.log_start_offset;
            (report, removed)
        };
        if !removed.is_empty() {
            self.write_checkpoint(false)?;
            Self::delete_segment_files(&removed)?;
        }
        Ok(report)
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
        for s in &self.lock().segments {
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

/// Calls `f` with every stored batch of a segment's first `size` bytes.
fn for_each_batch(
    store: &dyn SegmentStore,
    size: u64,
    mut f: impl FnMut(&Bytes, &BatchHeader) -> io::Result<()>,
) -> io::Result<()> {
    let mut window = Window::default();
    let mut pos = 0u64;
    while let Some(h) = window.header(store, pos, size)? {
        if pos + h.total_bytes as u64 > size {
            break;
        }
        let bytes = window.slice(store, pos, h.total_bytes, size)?;
        f(&bytes, &h)?;
        pos += h.total_bytes as u64;
    }
    Ok(())
}

/// Whether an append may roll a segment where it stands (memory mode; the blocking pool) or
/// must answer [`LogError::RollNeeded`] instead (the async runtime).
#[derive(Clone, Copy)]
enum Rolling {
    Inline,
    Refuse,
}

/// Batches to append: patched in place, or shared (see [`PartitionLog::append_shared`]).
enum AppendInput<'a> {
    Patch(&'a mut [u8]),
    Shared(&'a [u8]),
    /// A follower's: the leader's batches with their offsets and epochs, written unchanged.
    Follower(&'a [u8]),
}

impl AppendInput<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            AppendInput::Patch(b) => b,
            AppendInput::Shared(b) => b,
            AppendInput::Follower(b) => b,
        }
    }
}

/// A follower's batches must continue the log: the first at or after its end (a compacted
/// leader's log may leave gaps), each after the one before.
fn check_follower_offsets(
    parsed: &[(BatchHeader, Option<ControlRecord>)],
    log_end: i64,
) -> Result<(), LogError> {
    let mut next = log_end;
    for (h, _) in parsed {
        if h.base_offset < next {
            return Err(LogError::UnexpectedOffset {
                expected_at_least: next,
                got: h.base_offset,
            });
        }
        next = h.last_offset() + 1;
    }
    Ok(())
}

/// The whole batches in `buf`, each with its control record when it is a control batch.
fn batches_with_control(
    buf: &[u8],
) -> impl Iterator<Item = (BatchHeader, Option<ControlRecord>)> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let h = BatchHeader::parse(buf.get(pos..)?)?;
        let body = buf
            .get(pos + HEADER_BYTES..pos + h.total_bytes)
            .unwrap_or_default();
        pos += h.total_bytes;
        Some((h, txn::parse_control_record(&h, body)))
    })
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
    use crate::log::batch::tests::encode_batch;
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
            let active = state.active();
            active.store = Arc::new(FlakySync {
                inner: active.store.clone(),
                failing: failing.clone(),
            });
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
        let segments = log.lock().segments.len();
        fill(&log, 10);
        assert!(log.lock().segments.len() > segments, "rolled");
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
            state.segments.len() >= 3,
            "rolled before relative offsets overflowed"
        );
        for s in &state.segments {
            assert!(
                s.next_offset - 1 - s.base_offset <= super::super::segment::RELATIVE_OFFSET_MAX
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
        assert!(log.lock().segments.len() > 3, "segments rolled");
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
            let segments = log.lock().segments.len();
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
                log.lock().segments.len(),
                segments - report.segments_deleted
            );
            let start = log.log_start_offset();
            assert_eq!(start, log.lock().segments[0].base_offset);
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
            let active_base = log.lock().segments.last().unwrap().base_offset;
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
        assert!(log.lock().segments.len() > 2, "rolled");
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
            assert!(log.lock().segments.len() > 2);
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
        let segments_before = log.lock().segments.len();
        assert_eq!(count_txnindex(), segments_before);
        // DeleteRecords to the middle of the log: entries of dropped segments go with them;
        // those wholly below the log start are never reported.
        let start = log.delete_records(9).unwrap();
        assert!(log.lock().segments.len() < segments_before);
        assert_eq!(count_txnindex(), log.lock().segments.len());
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
        assert_eq!(count_txnindex(), log.lock().segments.len());
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
            assert!(log.lock().segments.len() > 3);
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
