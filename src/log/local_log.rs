//! The local log: a partition's segments in offset order, and what is done to that list
//! (Kafka's `LocalLog`): which segment holds an offset, the log end, rolling to a new active
//! segment, cutting the end (`truncate_to`), dropping segments below the log start, the
//! aborted transactions of a range.
//!
//! It has no lock of its own: it lives in the partition log's state and its lock guards it
//! (see `partition`). Blocking file work (a roll's create, a cut) happens where the caller
//! decides; files of segments taken out of the list are deleted by the caller, after the lock.

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::config::LogConfig;
use super::open_files::OpenFiles;
use super::segment::{Segment, RELATIVE_OFFSET_MAX};
use super::store::SegmentStore;
use super::txn::AbortedTxn;

pub(crate) struct LocalLog {
    /// Ordered by base offset; never empty; the last one is active.
    segments: Vec<Segment>,
}

impl LocalLog {
    /// A log of `segments` (ordered by base offset, at least one).
    pub(crate) fn new(segments: Vec<Segment>) -> LocalLog {
        assert!(!segments.is_empty(), "a log always has an active segment");
        LocalLog { segments }
    }

    /// Every segment, oldest first; the last is the active one.
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Every segment, to change in place (not the list itself).
    pub(crate) fn segments_mut(&mut self) -> &mut [Segment] {
        &mut self.segments
    }

    pub(crate) fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    pub(crate) fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has an active segment")
    }

    pub(crate) fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// Bytes of record batches in every segment (their `.log` files' lengths, indexes not
    /// counted: Kafka's `LocalLog.size`), from what the segments know in memory.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size_bytes).sum()
    }

    /// Index of the segment holding `offset` (the last one starting at or below it).
    pub(crate) fn segment_for(&self, offset: i64) -> usize {
        let i = self.segments.partition_point(|s| s.base_offset() <= offset);
        i.saturating_sub(1)
    }

    /// The segment a read from `offset` starts in: the one holding it, or the next one when
    /// that one ends at or before `offset` (compaction removed the tail).
    pub(crate) fn segment_to_read(&self, offset: i64) -> &Segment {
        let mut i = self.segment_for(offset);
        while self.segments[i].next_offset() <= offset && i + 1 < self.segments.len() {
            i += 1;
        }
        &self.segments[i]
    }

    /// Whether to roll before an append of `incoming_bytes` holding `incoming_offsets`
    /// offsets: the active segment would exceed `segment.bytes`, is older than `segment.ms`,
    /// or its relative offsets would no longer fit the indexes (as Kafka, at most `i32::MAX`
    /// past the segment's base offset).
    pub(crate) fn roll_needed(
        &self,
        config: &LogConfig,
        incoming_bytes: u64,
        incoming_offsets: i64,
        now: i64,
    ) -> bool {
        let active = self.active();
        let size = active.size_bytes();
        let full = size > 0 && size + incoming_bytes > config.segment_bytes;
        let old = size > 0 && now - active.created_ms() >= config.segment_ms;
        let offsets_overflow = size > 0
            && active.next_offset() + incoming_offsets - 1 - active.base_offset()
                > RELATIVE_OFFSET_MAX;
        full || old || offsets_overflow
    }

    /// Seals the active segment and starts the next one at the log end: on disk in `dir`
    /// (its file created here: blocking), else in memory. The old segment's data is fsynced
    /// by the next sync, not here.
    pub(crate) fn roll(
        &mut self,
        dir: Option<&Path>,
        files: &Arc<OpenFiles>,
        now: i64,
    ) -> io::Result<()> {
        let base = self.active().next_offset();
        self.roll_at(dir, files, now, base)
    }

    /// [`LocalLog::roll`] with the next segment starting at `base` (at or above the log end:
    /// a log that starts afresh further on, see `PartitionLog::truncate_fully_and_start_at`).
    pub(crate) fn roll_at(
        &mut self,
        dir: Option<&Path>,
        files: &Arc<OpenFiles>,
        now: i64,
        base: i64,
    ) -> io::Result<()> {
        let active = self.active();
        debug_assert!(base >= active.next_offset());
        let segment = match dir {
            Some(dir) => {
                crate::threads::may_block("rolling a segment");
                active.store().seal(active.size_bytes())?;
                Segment::open_on_disk(dir, base, now, files)?
            }
            None => Segment::new_in_memory(base, now),
        };
        self.segments.push(segment);
        Ok(())
    }

    /// Installs `next`, a segment created (outside the lock) at what was then the log end, as
    /// the active segment, if the log end is still its base and the active segment is not
    /// empty. Returns the old active segment's store and size, for its reserved blocks to be
    /// given back outside the lock; or `next` itself, unused, when appends moved the end.
    pub(crate) fn install_rolled(
        &mut self,
        next: Segment,
    ) -> Result<(Arc<dyn SegmentStore>, u64), Box<Segment>> {
        let base = next.base_offset();
        let active = self.active();
        if active.next_offset() == base && active.base_offset() < base {
            let sealed = (active.store().clone(), active.size_bytes());
            self.segments.push(next);
            Ok(sealed)
        } else {
            Err(Box::new(next))
        }
    }

    /// Cuts the log before the first batch that ends at or after `offset`: the segments
    /// wholly above are taken out of the list and returned (their files are the caller's to
    /// delete), the one holding it cut and rescanned. Blocking.
    pub(crate) fn truncate_to(
        &mut self,
        offset: i64,
        index_interval_bytes: u64,
    ) -> io::Result<Vec<Segment>> {
        let keep = self
            .segments
            .partition_point(|s| s.base_offset() < offset)
            .max(1);
        let removed: Vec<Segment> = self.segments.drain(keep..).collect();
        self.active_mut()
            .truncate_to(offset, index_interval_bytes)?;
        Ok(removed)
    }

    /// Takes out the non-active segments that end at or below `log_start_offset`.
    pub(crate) fn drop_below(&mut self, log_start_offset: i64) -> Vec<Segment> {
        // A segment ends where the next one begins (compaction may leave a gap after its last
        // batch): it is wholly below the start when the next segment begins at or below it.
        let keep_from = self
            .segments
            .windows(2)
            .position(|w| w[1].base_offset() > log_start_offset)
            .unwrap_or(self.segments.len() - 1);
        self.segments.drain(..keep_from).collect()
    }

    /// Takes segment `i` out of the list (never the active one).
    pub(crate) fn remove(&mut self, i: usize) -> Segment {
        assert!(i + 1 < self.segments.len(), "the active segment stays");
        self.segments.remove(i)
    }

    /// The aborted transactions overlapping `[from, upper)`: marker at or after `from`, first
    /// offset before `upper`. Segments are searched from the one holding `from` until an
    /// entry shows that no transaction starting before `upper` was still open (see `txn`).
    pub(crate) fn aborted_between(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        let mut out = Vec::new();
        for s in &self.segments[self.segment_for(from)..] {
            for e in s.txn_index().entries() {
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
