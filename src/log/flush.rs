//! Durability: the group-committed fsync (`sync_to`), the periodic flush (`flush_if_due`),
//! the directory fsync owed after a file was created in it, the stop-time sync, and the files
//! that record what is durable: `partition.checkpoint` (log start, recovery point) and, at a
//! clean stop, `producer.snapshot`. Kafka spreads this over `UnifiedLog.flush`, the log
//! manager's recovery-point and log-start checkpoints and the producer-state snapshot.
//!
//! The flush state has its own lock, taken before or after the partition's state lock but
//! never inside it; no fsync runs under either.

use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

use super::epoch_cache::EpochCache;
use super::partition::{LogError, LogState, PartitionLog};
use super::producer_state::ProducerStates;

/// Group commit: offsets below `durable` are on stable storage; at most one fsync runs at a
/// time and everyone waiting is covered by the next one.
pub(super) struct FlushState {
    pub(super) durable: i64,
    pub(super) in_progress: bool,
    /// When data first became non-durable after the last flush (for `flush_ms`).
    pub(super) dirty_since_ms: Option<i64>,
}

impl FlushState {
    /// Nothing in flight; everything below `durable` on stable storage.
    pub(super) fn new(durable: i64) -> FlushState {
        FlushState {
            durable,
            in_progress: false,
            dirty_since_ms: None,
        }
    }
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

    pub(super) fn read(dir: &Path) -> Checkpoint {
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
pub(super) const PRODUCER_SNAPSHOT: &str = "producer.snapshot";

/// The snapshot's list of the segments (base offsets) whose transaction index has entries:
/// a clean start rebuilds a listed segment's missing `.txnindex`, and needs none for others.
const SNAPSHOT_TXN_INDEX_SEGMENTS: &str = "txn_index_segments";

/// The snapshot: the producer state's JSON plus [`SNAPSHOT_TXN_INDEX_SEGMENTS`].
fn producer_snapshot(state: &LogState) -> io::Result<Vec<u8>> {
    let mut value = serde_json::to_value(&state.producers).map_err(io::Error::other)?;
    let with_entries: Vec<i64> = state
        .local
        .segments()
        .iter()
        .filter(|s| !s.txn_index().entries().is_empty())
        .map(|s| s.base_offset())
        .collect();
    if let Some(fields) = value.as_object_mut() {
        fields.insert(SNAPSHOT_TXN_INDEX_SEGMENTS.into(), with_entries.into());
    }
    serde_json::to_vec(&value).map_err(io::Error::other)
}

/// The producer state and the segments with transaction index entries from `dir`'s snapshot,
/// and the file's bytes (`None`s when missing or unreadable; the list is `None` in a snapshot
/// of an older version).
pub(super) type SnapshotRead = (Option<ProducerStates>, Option<Vec<i64>>, Option<Vec<u8>>);

pub(super) fn read_producer_snapshot(dir: &Path) -> SnapshotRead {
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

/// The io::Error form of [`LogError::Failed`] (syncs return io::Result).
pub(super) fn failed_io() -> io::Error {
    io::Error::other(LogError::Failed)
}

pub(super) fn closed_io() -> io::Error {
    io::Error::other(LogError::Closed)
}

impl PartitionLog {
    pub(super) fn lock_flush(&self) -> MutexGuard<'_, FlushState> {
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
            let first = state.local.segment_for(durable);
            let stores: Vec<_> = state.local.segments()[first..]
                .iter()
                .map(|s| s.store().clone())
                .collect();
            (state.local.log_end_offset(), stores)
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
    pub(super) fn write_checkpoint(&self, closing: bool) -> io::Result<()> {
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
                recovery_point: durable.min(state.local.log_end_offset()),
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
                .local
                .segments()
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
            let active = state.local.active();
            active.store().seal(active.size_bytes())?;
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
}
