//! Sparse indexes of one segment, kept in memory and mirrored to `.index` / `.timeindex`
//! files in Kafka's layout (big-endian):
//! - offset index: 8-byte entries `(relative offset: u32, file position: u32)`, where the
//!   relative offset is the *last* offset of the indexed batch minus the segment's base offset
//!   and the position is where that batch starts;
//! - time index: 12-byte entries `(max timestamp so far: i64, relative offset: u32)`.
//!
//! An entry is added every `index_interval_bytes` of appended data, so a lookup lands at most
//! that many bytes before the wanted batch.

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::open_files::{LazyFile, Mode, OpenFiles};

/// File mirror of an index. New entries are buffered and written in one call when
/// [`PENDING_BYTES`] have gathered, at `sync` (segment roll, clean shutdown) or before a
/// truncation (the file is opened in append mode, so after a truncation writes continue at the
/// new end). A crash may lose the buffered entries: the file then holds a consistent prefix of
/// the index, and loading scans the log from its last entry, so nothing depends on them.
///
/// The file is created with its first entry (a segment without entries has none: a missing
/// index file is an empty index) and opened through the open-file cache when written.
struct IndexFile {
    file: LazyFile,
    pending: Mutex<Vec<u8>>,
    /// Written or cut since the last sync (a sync of an unchanged index opens nothing).
    dirty: AtomicBool,
}

impl Drop for IndexFile {
    fn drop(&mut self) {
        // Best effort: a segment closed without a sync keeps its entries (a lost write only
        // costs a longer scan when the segment is loaded).
        let _ = self.write_pending();
    }
}

/// Buffered entry bytes that trigger a write (saves a write call per indexed batch).
const PENDING_BYTES: usize = 4096;

impl IndexFile {
    /// The index file at `path` (not created if missing) with its current contents.
    fn open(path: &Path, files: &Arc<OpenFiles>) -> io::Result<(IndexFile, Vec<u8>)> {
        let (bytes, exists) = match std::fs::read(path) {
            Ok(bytes) => (bytes, true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Vec::new(), false),
            Err(e) => return Err(e),
        };
        Ok((
            IndexFile {
                file: LazyFile::new(path.to_path_buf(), Mode::Append, exists, files),
                pending: Mutex::new(Vec::new()),
                dirty: AtomicBool::new(false),
            },
            bytes,
        ))
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, entry: &[u8]) -> io::Result<()> {
        let mut pending = self.pending();
        pending.extend_from_slice(entry);
        if pending.len() >= PENDING_BYTES {
            self.write(&pending)?;
            pending.clear();
        }
        Ok(())
    }

    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        self.dirty.store(true, Ordering::Release);
        (&*self.file.get()?).write_all(bytes)
    }

    fn write_pending(&self) -> io::Result<()> {
        let mut pending = self.pending();
        if !pending.is_empty() {
            self.write(&pending)?;
            pending.clear();
        }
        Ok(())
    }

    fn truncate(&self, entries: usize, entry_bytes: usize) -> io::Result<()> {
        self.write_pending()?;
        if !self.file.exists() {
            return Ok(()); // nothing was ever written
        }
        self.dirty.store(true, Ordering::Release);
        self.file.get()?.set_len((entries * entry_bytes) as u64)
    }

    fn sync(&self) -> io::Result<()> {
        self.write_pending()?;
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let synced = self.file.get().and_then(|f| f.sync_data());
        if synced.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        synced
    }

    fn detach(&self) {
        self.pending().clear();
        self.file.detach();
    }
}

/// Relative offset -> file position.
#[derive(Default)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
    file: Option<IndexFile>,
}

impl OffsetIndex {
    /// The index mirrored to `path`, with the entries the file holds if they are consistent
    /// with a segment of `segment_bytes` (strictly increasing offsets and positions, every
    /// position inside the segment). Otherwise the file is emptied and `false` is returned:
    /// the caller rebuilds the index by scanning.
    pub fn open(
        path: &Path,
        segment_bytes: u64,
        files: &Arc<OpenFiles>,
    ) -> io::Result<(OffsetIndex, bool)> {
        let (file, bytes) = IndexFile::open(path, files)?;
        let entries: Vec<(u32, u32)> = bytes
            .chunks_exact(8)
            .map(|c| {
                (
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                    u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect();
        let valid = bytes.len() % 8 == 0
            && entries
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && entries.last().is_none_or(|e| (e.1 as u64) < segment_bytes);
        let mut index = OffsetIndex {
            entries,
            file: Some(file),
        };
        if !valid {
            index.reset()?;
        }
        Ok((index, valid))
    }

    /// Drops every entry (before a rebuild).
    pub fn reset(&mut self) -> io::Result<()> {
        self.entries.clear();
        match &self.file {
            Some(f) => f.truncate(0, 8),
            None => Ok(()),
        }
    }

    pub fn append(&mut self, relative_offset: u32, position: u32) -> io::Result<()> {
        debug_assert!(self.entries.last().is_none_or(|e| e.0 < relative_offset));
        self.entries.push((relative_offset, position));
        if let Some(f) = &self.file {
            let mut entry = [0u8; 8];
            entry[..4].copy_from_slice(&relative_offset.to_be_bytes());
            entry[4..].copy_from_slice(&position.to_be_bytes());
            f.push(&entry)?;
        }
        Ok(())
    }

    /// The last entry, if any: `(relative offset, position)`.
    pub fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    /// Drops the entries at or after byte `position` (the log was cut there).
    pub fn truncate_to_position(&mut self, position: u64) -> io::Result<()> {
        let keep = self.entries.partition_point(|e| (e.1 as u64) < position);
        self.entries.truncate(keep);
        match &self.file {
            Some(f) => f.truncate(keep, 8),
            None => Ok(()),
        }
    }

    /// Position of the last indexed batch whose last offset is below `relative_offset`:
    /// the batch holding `relative_offset` starts at or after it. 0 when none is.
    pub fn floor_position(&self, relative_offset: u32) -> u32 {
        let i = self.entries.partition_point(|e| e.0 < relative_offset);
        if i == 0 {
            0
        } else {
            // The indexed batch ends below the target, so scanning may start after it; its start
            // is a batch boundary, which is all a scan needs.
            self.entries[i - 1].1
        }
    }

    /// The position of the last entry at or before byte `position` (0 when none): the start of
    /// a batch.
    pub fn batch_start_at_or_before(&self, position: u64) -> u32 {
        let i = self.entries.partition_point(|e| (e.1 as u64) <= position);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    pub fn sync(&self) -> io::Result<()> {
        match &self.file {
            Some(f) => f.sync(),
            None => Ok(()),
        }
    }

    /// The segment is gone: never write or create the file again.
    pub fn detach(&self) {
        if let Some(f) = &self.file {
            f.detach();
        }
    }
}

/// Max timestamp so far -> relative offset.
#[derive(Default)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
    file: Option<IndexFile>,
}

impl TimeIndex {
    /// Like [`OffsetIndex::open`]: the file's entries if consistent (timestamps and offsets
    /// increasing, offsets at most `max_relative_offset`), else emptied and `false`.
    pub fn open(
        path: &Path,
        max_relative_offset: Option<u32>,
        files: &Arc<OpenFiles>,
    ) -> io::Result<(TimeIndex, bool)> {
        let (file, bytes) = IndexFile::open(path, files)?;
        let entries: Vec<(i64, u32)> = bytes
            .chunks_exact(12)
            .map(|c| {
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&c[..8]);
                (
                    i64::from_be_bytes(ts),
                    u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                )
            })
            .collect();
        let valid = bytes.len() % 12 == 0
            && entries
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
            && match (entries.last(), max_relative_offset) {
                (None, _) => true,
                (Some(e), Some(max)) => e.1 <= max,
                (Some(_), None) => false,
            };
        let mut index = TimeIndex {
            entries,
            file: Some(file),
        };
        if !valid {
            index.reset()?;
        }
        Ok((index, valid))
    }

    pub fn reset(&mut self) -> io::Result<()> {
        self.entries.clear();
        match &self.file {
            Some(f) => f.truncate(0, 12),
            None => Ok(()),
        }
    }

    /// Records that every offset up to `relative_offset` has a timestamp ≤ `max_timestamp`.
    /// Ignored unless the timestamp grows.
    pub fn maybe_append(&mut self, max_timestamp: i64, relative_offset: u32) -> io::Result<()> {
        if self.entries.last().is_some_and(|e| e.0 >= max_timestamp) {
            return Ok(());
        }
        self.entries.push((max_timestamp, relative_offset));
        if let Some(f) = &self.file {
            let mut entry = [0u8; 12];
            entry[..8].copy_from_slice(&max_timestamp.to_be_bytes());
            entry[8..].copy_from_slice(&relative_offset.to_be_bytes());
            f.push(&entry)?;
        }
        Ok(())
    }

    /// The largest timestamp recorded, if any.
    pub fn last_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|e| e.0)
    }

    /// Drops entries for offsets at or after `relative_offset` (the log was cut there).
    pub fn truncate_to_offset(&mut self, relative_offset: u32) -> io::Result<()> {
        let keep = self.entries.partition_point(|e| e.1 < relative_offset);
        self.entries.truncate(keep);
        match &self.file {
            Some(f) => f.truncate(keep, 12),
            None => Ok(()),
        }
    }

    /// The relative offset after which the first record with timestamp ≥ `target` must lie
    /// (every record up to the returned offset is older than `target`), if any entry says so.
    pub fn offset_before(&self, target: i64) -> Option<u32> {
        let i = self.entries.partition_point(|e| e.0 < target);
        (i > 0).then(|| self.entries[i - 1].1)
    }

    pub fn sync(&self) -> io::Result<()> {
        match &self.file {
            Some(f) => f.sync(),
            None => Ok(()),
        }
    }

    /// The segment is gone: never write or create the file again.
    pub fn detach(&self) {
        if let Some(f) = &self.file {
            f.detach();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Arc<OpenFiles> {
        OpenFiles::shared_default()
    }

    #[test]
    fn offset_floor_lookup() {
        let mut idx = OffsetIndex::default();
        idx.append(9, 0).unwrap();
        idx.append(19, 4096).unwrap();
        idx.append(29, 8192).unwrap();
        assert_eq!(idx.floor_position(0), 0);
        assert_eq!(idx.floor_position(9), 0);
        assert_eq!(idx.floor_position(10), 0);
        assert_eq!(idx.floor_position(20), 4096);
        assert_eq!(idx.floor_position(30), 8192);
        assert_eq!(idx.floor_position(1000), 8192);
    }

    #[test]
    fn time_lookup() {
        let mut idx = TimeIndex::default();
        idx.maybe_append(100, 5).unwrap();
        idx.maybe_append(90, 6).unwrap(); // not growing: ignored
        idx.maybe_append(200, 10).unwrap();
        assert_eq!(idx.offset_before(50), None);
        assert_eq!(idx.offset_before(100), None);
        assert_eq!(idx.offset_before(101), Some(5));
        assert_eq!(idx.offset_before(500), Some(10));
    }

    #[test]
    fn index_files_mirror_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let (mut idx, valid) = OffsetIndex::open(&path, 0, &files()).unwrap();
        assert!(valid, "an empty index is valid");
        assert!(!path.exists(), "an empty index has no file");
        idx.append(1, 2).unwrap();
        idx.append(3, 4).unwrap();
        assert!(!path.exists(), "entries are buffered");
        idx.sync().unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            vec![0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]
        );
        drop(idx);
        let (idx, valid) = OffsetIndex::open(&path, 100, &files()).unwrap();
        assert!(valid);
        assert_eq!(idx.last(), Some((3, 4)));
        // A position beyond the segment: stale, emptied for a rebuild.
        let (idx, valid) = OffsetIndex::open(&path, 4, &files()).unwrap();
        assert!(!valid);
        assert_eq!(idx.last(), None);
        assert_eq!(std::fs::read(&path).unwrap().len(), 0);
    }

    #[test]
    fn torn_index_is_rebuilt_and_truncation_keeps_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let (mut idx, _) = OffsetIndex::open(&path, 0, &files()).unwrap();
        for i in 0..5 {
            idx.append(i * 10 + 9, i * 1000).unwrap();
        }
        idx.truncate_to_position(2500).unwrap();
        assert_eq!(idx.last(), Some((29, 2000)));
        idx.append(39, 3000).unwrap();
        drop(idx);
        assert_eq!(std::fs::read(&path).unwrap().len(), 4 * 8);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.push(1); // torn entry
        std::fs::write(&path, &bytes).unwrap();
        let (_, valid) = OffsetIndex::open(&path, 1 << 20, &files()).unwrap();
        assert!(!valid);
    }
}
