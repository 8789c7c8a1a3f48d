//! The leader-epoch cache of a partition (Kafka's `LeaderEpochFileCache`): for every leader
//! epoch that wrote to the log, the first offset it wrote. Replication needs it: a follower
//! asks the leader where its last epoch ends (OffsetForLeaderEpoch, DIVERGING_EPOCH) and
//! truncates what the leader does not have before it fetches on.
//!
//! Entries are strictly increasing in both epoch and start offset. On disk it is Kafka's
//! `leader-epoch-checkpoint`: a version line (`0`), a count line, then `epoch start_offset`
//! per line. The cache changes in memory (an append under the partition lock must not write a
//! file); the log writes the file when it writes its own checkpoint (off the runtime, outside
//! the lock), so the file covers at least everything below the recovery point, and a recovery
//! scan reassigns the epochs of the batches it reads.

use std::io;
use std::path::Path;

/// Kafka's "no epoch" and "no offset" answers (`UNDEFINED_EPOCH`, `UNDEFINED_EPOCH_OFFSET`).
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// The checkpoint file's name in a partition directory.
pub const FILE: &str = "leader-epoch-checkpoint";

/// One entry: `epoch` wrote first at `start_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// The cache (in memory; see the module docs for the file).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    /// The cache of the partition in `dir`, from its checkpoint file. `None` when the file
    /// is missing or not a valid checkpoint.
    pub fn load(dir: &Path) -> Option<EpochCache> {
        let text = std::fs::read_to_string(dir.join(FILE)).ok()?;
        Some(EpochCache {
            entries: parse(&text)?,
        })
    }

    /// The checkpoint file's text for these entries.
    pub fn checkpoint_text(&self) -> String {
        let mut text = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        text
    }

    /// Replaces `dir`'s checkpoint file with `text` (atomically, fsynced). Blocking.
    pub fn write(dir: &Path, text: &str) -> io::Result<()> {
        super::fsutil::write_atomically(&dir.join(FILE), text.as_bytes())
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest epoch that wrote, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` writes from `start_offset` on (an append of a batch of that epoch
    /// at that offset). Nothing changes when the newest entry already is this epoch at or
    /// before this offset; entries that would break monotonicity (an epoch at or above
    /// `epoch`, or starting at or after `start_offset`) are dropped first, as Kafka does.
    /// Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        let needed = match self.entries.last() {
            Some(last) => epoch != last.epoch || start_offset < last.start_offset,
            None => true,
        };
        if !needed {
            return false;
        }
        self.entries
            .retain(|e| e.epoch < epoch && e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Where `requested` epoch ends (Kafka's `endOffsetFor`), given the log end: `(epoch,
    /// end_offset)` where `epoch` is the largest known epoch not above `requested` and
    /// `end_offset` the start of the next epoch (the log end for the newest epoch).
    /// `(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)` for an undefined or a too-new epoch.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        let undefined = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested == UNDEFINED_EPOCH {
            return undefined;
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        let Some(higher) = self.entries.iter().find(|e| e.epoch > requested) else {
            return undefined;
        };
        match self.entries.iter().rev().find(|e| e.epoch <= requested) {
            Some(floor) => (floor.epoch, higher.start_offset),
            // Older than every epoch known: it ends where the first known one starts.
            None => (requested, higher.start_offset),
        }
    }

    /// [`EpochCache::end_offset_for`] on a leader at `leader_epoch`: Kafka caches a new
    /// leader's epoch at its log end when it becomes leader (`Partition.makeLeader`), before
    /// it appends, so the current epoch ends at the log end and an older one ends where the
    /// current one starts even when the current epoch has written nothing yet. The cache is
    /// left unchanged: the entry is only assumed for the answer.
    pub fn end_offset_for_leader(
        &self,
        requested: i32,
        leader_epoch: i32,
        log_end_offset: i64,
    ) -> (i32, i64) {
        if leader_epoch >= 0 && self.latest_epoch().is_none_or(|e| e < leader_epoch) {
            let mut led = self.clone();
            led.assign(leader_epoch, log_end_offset);
            return led.end_offset_for(requested, log_end_offset);
        }
        self.end_offset_for(requested, log_end_offset)
    }

    /// The log was cut at `end_offset` (a follower's truncation, a torn tail): entries that
    /// start at or after it go. Returns whether the cache changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        self.entries.len() != before
    }

    /// The log now starts at `start_offset` (retention, DeleteRecords): entries wholly below
    /// it go, and the one covering it starts there. Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let Some(floor) = self
            .entries
            .iter()
            .rposition(|e| e.start_offset <= start_offset)
        else {
            return false;
        };
        if floor == 0 && self.entries[0].start_offset == start_offset {
            return false;
        }
        self.entries.drain(..floor);
        self.entries[0].start_offset = start_offset;
        true
    }
}

/// Parses a checkpoint file: version 0, a count, then that many increasing entries.
pub(crate) fn parse(text: &str) -> Option<Vec<EpochEntry>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut entries: Vec<EpochEntry> = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let mut fields = lines.next()?.split_whitespace();
        let epoch: i32 = fields.next()?.parse().ok()?;
        let start_offset: i64 = fields.next()?.parse().ok()?;
        let increasing = entries
            .last()
            .is_none_or(|l| epoch > l.epoch && start_offset > l.start_offset);
        if epoch < 0 || start_offset < 0 || !increasing {
            return None;
        }
        entries.push(EpochEntry {
            epoch,
            start_offset,
        });
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(epoch: i32, start_offset: i64) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
        }
    }

    #[test]
    fn assign_keeps_entries_monotonic() {
        let mut c = EpochCache::default();
        assert!(c.assign(0, 0));
        assert!(!c.assign(0, 5), "same epoch later: nothing new");
        assert!(c.assign(2, 10));
        assert!(c.assign(3, 20));
        assert_eq!(c.entries(), &[e(0, 0), e(2, 10), e(3, 20)]);
        // A new leader's epoch 3 restarting at 15 (after a truncation the cache missed)
        // replaces what it contradicts.
        assert!(c.assign(3, 15));
        assert_eq!(c.entries(), &[e(0, 0), e(2, 10), e(3, 15)]);
        assert!(c.assign(4, 12));
        assert_eq!(c.entries(), &[e(0, 0), e(2, 10), e(4, 12)]);
        assert!(!c.assign(-1, 30), "no epoch: ignored");
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let mut c = EpochCache::default();
        c.assign(1, 0);
        c.assign(3, 10);
        c.assign(5, 20);
        assert_eq!(c.end_offset_for(5, 27), (5, 27), "the newest: the log end");
        assert_eq!(c.end_offset_for(3, 27), (3, 20));
        assert_eq!(c.end_offset_for(4, 27), (3, 20), "unknown epoch: its floor");
        assert_eq!(c.end_offset_for(0, 27), (0, 0), "older than all");
        assert_eq!(c.end_offset_for(6, 27), (-1, -1), "too new");
        assert_eq!(c.end_offset_for(-1, 27), (-1, -1));
    }

    #[test]
    fn a_leader_answers_for_its_epoch_before_it_writes() {
        let mut c = EpochCache::default();
        c.assign(1, 0);
        c.assign(3, 10);
        // Leader at 7 with nothing written in 7 yet (log end 27).
        assert_eq!(c.end_offset_for_leader(7, 7, 27), (7, 27));
        assert_eq!(
            c.end_offset_for_leader(3, 7, 27),
            (3, 27),
            "3 ends where 7 starts"
        );
        assert_eq!(c.end_offset_for_leader(5, 7, 27), (3, 27));
        assert_eq!(c.end_offset_for_leader(1, 7, 27), (1, 10));
        assert_eq!(c.end_offset_for_leader(0, 7, 27), (0, 0));
        assert_eq!(c.end_offset_for_leader(8, 7, 27), (-1, -1));
        assert_eq!(c.entries(), &[e(1, 0), e(3, 10)], "the cache is unchanged");
        // Already written in the leader's epoch: the plain answer.
        assert_eq!(c.end_offset_for_leader(3, 3, 27), (3, 27));
        // An empty log led at 0.
        let empty = EpochCache::default();
        assert_eq!(empty.end_offset_for_leader(0, 0, 0), (0, 0));
        assert_eq!(empty.end_offset_for_leader(-1, 0, 0), (-1, -1));
    }

    #[test]
    fn truncation_from_either_end() {
        let mut c = EpochCache::default();
        for (ep, off) in [(1, 0), (3, 10), (5, 20)] {
            c.assign(ep, off);
        }
        assert!(c.truncate_from_end(20));
        assert_eq!(c.entries(), &[e(1, 0), e(3, 10)]);
        assert!(c.truncate_from_start(12));
        assert_eq!(c.entries(), &[e(3, 12)]);
        assert!(!c.truncate_from_start(5));
        assert_eq!(c.entries(), &[e(3, 12)], "never moves back");
    }

    #[test]
    fn the_checkpoint_file_round_trips_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EpochCache::default();
        c.assign(0, 0);
        c.assign(7, 42);
        EpochCache::write(dir.path(), &c.checkpoint_text()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE)).unwrap(),
            "0\n2\n0 0\n7 42\n"
        );
        let loaded = EpochCache::load(dir.path()).unwrap();
        assert_eq!(loaded.entries(), &[e(0, 0), e(7, 42)]);
        for bad in [
            "",
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n2\n3 5\n2 9\n",
            "0\n1\nx y\n",
        ] {
            std::fs::write(dir.path().join(FILE), bad).unwrap();
            assert!(EpochCache::load(dir.path()).is_none(), "{bad:?}");
        }
    }
}
