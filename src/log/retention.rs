//! Moving the log start up (Kafka's `UnifiedLog.deleteOldSegments` and
//! `deleteRecordsOnLeader`): time and size retention for `cleanup.policy=delete`, and
//! DeleteRecords. Both take out the segments wholly below the new start under the state lock,
//! record the new start in the checkpoint, then delete the segments' files outside the lock.

use std::io;

use super::partition::{LogError, PartitionLog};
use super::segment::Segment;

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: i64,
}

impl PartitionLog {
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
            let start = state.log_start_offset;
            let removed = state.local.drop_below(start);
            (start, removed)
        };
        self.write_checkpoint(false)?;
        delete_segment_files(&removed)?;
        Ok(start)
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
                        && s.size_bytes() > 0
                        && now - s.newest_ms() > config.retention_ms
                };
                // Only committed data is deleted (Kafka: segments below the high watermark).
                let hw = state.high_watermark;
                if state.local.segments().iter().all(expired) {
                    // Everything, the active segment included, is past retention.
                    self.roll(&mut state, now)?;
                }
                let segments = state.local.segments();
                let total: u64 = segments.iter().map(|s| s.size_bytes()).sum();
                let mut remaining = total;
                let mut count = 0;
                for s in &segments[..segments.len() - 1] {
                    let over_size = config.retention_bytes >= 0
                        && remaining - s.size_bytes() >= config.retention_bytes as u64;
                    if !(expired(s) || over_size) || s.next_offset() > hw {
                        break;
                    }
                    remaining -= s.size_bytes();
                    count += 1;
                }
                if count > 0 {
                    let new_start = segments[count].base_offset();
                    state.log_start_offset = state.log_start_offset.max(new_start);
                }
            }
            let start = state.log_start_offset;
            let removed = state.local.drop_below(start);
            report.segments_deleted = removed.len();
            report.bytes_deleted = removed.iter().map(|s| s.size_bytes()).sum();
            report.log_start_offset = start;
            (report, removed)
        };
        if !removed.is_empty() {
            self.write_checkpoint(false)?;
            delete_segment_files(&removed)?;
        }
        Ok(report)
    }
}

fn delete_segment_files(removed: &[Segment]) -> io::Result<()> {
    // Readers holding a segment's store keep reading it: an unlinked file lives on while
    // open.
    removed.iter().try_for_each(|s| s.delete_files())
}
