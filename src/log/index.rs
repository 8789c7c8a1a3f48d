//! Sparse indexes of one segment, kept in memory and mirrored to `.index` / `.timeindex`
//! files in Kafka's layout (big-endian):
//! - offset index: 8-byte entries `(relative offset: u32, file position: u32)`, where the
//!   relative offset is the *last* offset of the indexed batch minus the segment's base offset
//!   and the position is where that batch starts;
//! - time index: 12-byte entries `(max timestamp so far: i64, relative offset: u32)`.
//!
//! An entry is added every `index_interval_bytes` of appended data, so a lookup lands at most
//! that many bytes before the wanted batch.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// File mirror of an index: entries are appended as they are made.
struct IndexFile {
    file: File,
}

impl IndexFile {
    fn create(path: &Path) -> io::Result<IndexFile> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        Ok(IndexFile { file })
    }
}

/// Relative offset -> file position.
#[derive(Default)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
    file: Option<IndexFile>,
}

impl OffsetIndex {
    /// An index mirrored to `path` (created empty; recovery rebuilds it by appending).
    pub fn with_file(path: &Path) -> io::Result<OffsetIndex> {
        Ok(OffsetIndex {
            entries: Vec::new(),
            file: Some(IndexFile::create(path)?),
        })
    }

    pub fn append(&mut self, relative_offset: u32, position: u32) -> io::Result<()> {
        debug_assert!(self.entries.last().is_none_or(|e| e.0 < relative_offset));
        self.entries.push((relative_offset, position));
        if let Some(f) = &mut self.file {
            let mut entry = [0u8; 8];
            entry[..4].copy_from_slice(&relative_offset.to_be_bytes());
            entry[4..].copy_from_slice(&position.to_be_bytes());
            f.file.write_all(&entry)?;
        }
        Ok(())
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

    pub fn sync(&self) -> io::Result<()> {
        match &self.file {
            Some(f) => f.file.sync_data(),
            None => Ok(()),
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
    pub fn with_file(path: &Path) -> io::Result<TimeIndex> {
        Ok(TimeIndex {
            entries: Vec::new(),
            file: Some(IndexFile::create(path)?),
        })
    }

    /// Records that every offset up to `relative_offset` has a timestamp ≤ `max_timestamp`.
    /// Ignored unless the timestamp grows.
    pub fn maybe_append(&mut self, max_timestamp: i64, relative_offset: u32) -> io::Result<()> {
        if self.entries.last().is_some_and(|e| e.0 >= max_timestamp) {
            return Ok(());
        }
        self.entries.push((max_timestamp, relative_offset));
        if let Some(f) = &mut self.file {
            let mut entry = [0u8; 12];
            entry[..8].copy_from_slice(&max_timestamp.to_be_bytes());
            entry[8..].copy_from_slice(&relative_offset.to_be_bytes());
            f.file.write_all(&entry)?;
        }
        Ok(())
    }

    /// The relative offset after which the first record with timestamp ≥ `target` must lie
    /// (every record up to the returned offset is older than `target`), if any entry says so.
    pub fn offset_before(&self, target: i64) -> Option<u32> {
        let i = self.entries.partition_point(|e| e.0 < target);
        (i > 0).then(|| self.entries[i - 1].1)
    }

    pub fn sync(&self) -> io::Result<()> {
        match &self.file {
            Some(f) => f.file.sync_data(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut idx = OffsetIndex::with_file(&path).unwrap();
        idx.append(1, 2).unwrap();
        idx.append(3, 4).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            vec![0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]
        );
    }
}
