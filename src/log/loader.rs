//! Opening a partition's directory (Kafka's `LogLoader`): interrupted compaction swaps
//! finished, segments found and brought up to date (trusted with their indexes after a clean
//! stop, else CRC-scanned from the recovery point with their indexes rebuilt and a torn or
//! corrupt tail cut), the producer state read from its snapshot or replayed from the log, the
//! transaction indexes rebuilt where missing or stale, the leader-epoch cache loaded and
//! trimmed to the log. The result is a [`LoadedLog`], from which the partition log is made.

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::batch::BatchHeader;
use super::config::LogConfig;
use super::epoch_cache::EpochCache;
use super::flush::{read_producer_snapshot, Checkpoint};
use super::local_log::LocalLog;
use super::open_files::OpenFiles;
use super::producer_state::ProducerStates;
use super::segment::Segment;
use super::txn::ControlRecord;

/// A partition's log as found on disk, recovered.
pub(super) struct LoadedLog {
    pub(super) local: LocalLog,
    pub(super) log_start_offset: i64,
    pub(super) producers: ProducerStates,
    /// The checkpoint file's contents as read.
    pub(super) checkpoint: Checkpoint,
    /// The producer snapshot file's bytes, when it was read (after a clean stop).
    pub(super) snapshot_on_disk: Option<Vec<u8>>,
    pub(super) epochs: EpochCache,
    /// The leader-epoch checkpoint's contents as read.
    pub(super) epochs_written: Option<String>,
    /// The directory or its first segment file was created: their entries are not durable.
    pub(super) created_files: bool,
}

/// Loads the log in `dir` (created if missing). After a `clean` shutdown every segment is
/// trusted with its index files (only the bytes after each last index entry are read).
/// Otherwise the segments from the recovery point on are CRC-scanned and their indexes
/// rebuilt; the first torn or corrupt batch ends the log (it and everything after it is
/// cut, and logged). Blocking.
pub(super) fn load(
    dir: &Path,
    config: LogConfig,
    clean: bool,
    files: &Arc<OpenFiles>,
    now: i64,
) -> io::Result<LoadedLog> {
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
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
    let mut scanned = 0usize;
    let mut stale_txn_indexes = false;
    for (i, &base) in bases.iter().enumerate() {
        let mut segment = Segment::open_on_disk(dir, base, now, files)?;
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
                    aborted.push(done.index_entry(&producers));
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
            segment.txn_index_mut().replace(aborted)?;
        } else if !segment.txn_index_loaded()
            || !segment
                .txn_index()
                .consistent_with(segment.base_offset(), segment.next_offset())
            || (!segment.txn_index().file_exists()
                && txn_index_segments
                    .as_ref()
                    .is_none_or(|with| with.contains(&base)))
        {
            // Malformed, or naming markers elsewhere, or missing although the snapshot
            // says the segment had aborted transactions (a snapshot of an older version
            // says nothing: every segment had a file then).
            segment.mark_txn_index_stale();
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
        let empty_follower = segment.size_bytes() == 0 && !segments.is_empty();
        if empty_follower && i + 1 < bases.len() {
            // An empty segment in the middle (a crash right after a roll): drop it.
            segment.delete_files()?;
        } else {
            segments.push(segment);
        }
        if cut && i + 1 < bases.len() {
            for &later in &bases[i + 1..] {
                let s = Segment::open_on_disk(dir, later, now, files)?;
                tracing::warn!(dir = %dir.display(), segment = later,
                    "deleted a segment after a corrupt batch");
                s.delete_files()?;
            }
            break;
        }
    }
    if segments.is_empty() {
        segments.push(Segment::open_on_disk(dir, bases[0], now, files)?);
    }
    if stale_txn_indexes {
        tracing::warn!(dir = %dir.display(), "rebuilding missing or inconsistent transaction indexes");
        rebuild_txn_indexes(&mut segments)?;
    }
    let log_end = segments.last().map_or(0, |s| s.next_offset());
    let log_start_offset = checkpoint
        .log_start_offset
        .max(segments[0].base_offset())
        .min(log_end);
    epochs.truncate_from_end(log_end);
    epochs.truncate_from_start(log_start_offset);
    // A directory created just now held nothing to recover.
    if scanned > 0 && !created_files {
        tracing::info!(dir = %dir.display(), scanned_segments = scanned, "recovered log");
    }
    Ok(LoadedLog {
        local: LocalLog::new(segments),
        log_start_offset,
        producers,
        checkpoint,
        snapshot_on_disk,
        epochs,
        epochs_written,
        created_files,
    })
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
                    aborted.push(done.index_entry(&tracker));
                }
            }
        })?;
        if !segment.txn_index_loaded() {
            segment.rebuild_txn_index(aborted)?;
        }
    }
    Ok(())
}
