//! One segment: a run of whole batches starting at `base_offset`, its store and its indexes.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::batch::{self, BatchHeader, HEADER_BYTES};
use super::index::{OffsetIndex, TimeIndex};
use super::store::{FileStore, MemStore, SegmentStore};

/// Bytes read per positional read while scanning batch headers.
const SCAN_WINDOW_BYTES: usize = 256 * 1024;

/// `<dir>/<20-digit base offset>.<ext>`, as Kafka names segment files.
pub fn segment_path(dir: &Path, base_offset: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

pub struct Segment {
    pub base_offset: i64,
    /// Offset after the last batch in this segment (= `base_offset` when empty).
    pub next_offset: i64,
    pub size_bytes: u64,
    pub store: Arc<dyn SegmentStore>,
    index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index_entry: u64,
    /// Largest batch max-timestamp in the segment, and the base offset of that batch.
    pub max_timestamp: i64,
    pub max_timestamp_batch_offset: i64,
    pub created_ms: i64,
    /// The segment's directory when on disk (for deletion of its files).
    dir: Option<PathBuf>,
}

/// How a recovery scan ended.
pub struct RecoveryReport {
    pub batches: u64,
    pub truncated_bytes: u64,
}

impl Segment {
    pub fn new_in_memory(base_offset: i64, now_ms: i64) -> Segment {
        Segment::with_parts(
            base_offset,
            Arc::new(MemStore::default()),
            OffsetIndex::default(),
            TimeIndex::default(),
            None,
            now_ms,
        )
    }

    /// Opens (or creates) the segment files under `dir`. Indexes are rebuilt by
    /// [`Segment::recover`].
    pub fn open_on_disk(dir: &Path, base_offset: i64, now_ms: i64) -> io::Result<Segment> {
        let store = FileStore::open(&segment_path(dir, base_offset, "log"))?;
        let index = OffsetIndex::with_file(&segment_path(dir, base_offset, "index"))?;
        let time_index = TimeIndex::with_file(&segment_path(dir, base_offset, "timeindex"))?;
        Ok(Segment::with_parts(
            base_offset,
            Arc::new(store),
            index,
            time_index,
            Some(dir.to_path_buf()),
            now_ms,
        ))
    }

    fn with_parts(
        base_offset: i64,
        store: Arc<dyn SegmentStore>,
        index: OffsetIndex,
        time_index: TimeIndex,
        dir: Option<PathBuf>,
        now_ms: i64,
    ) -> Segment {
        Segment {
            base_offset,
            next_offset: base_offset,
            size_bytes: 0,
            store,
            index,
            time_index,
            bytes_since_index_entry: 0,
            max_timestamp: -1,
            max_timestamp_batch_offset: -1,
            created_ms: now_ms,
            dir,
        }
    }

    /// Scans the stored bytes, rebuilding the indexes. With `check_crc`, the first batch that is
    /// torn, out of sequence or fails its CRC ends the log: it and everything after it is cut.
    pub fn recover(
        &mut self,
        check_crc: bool,
        index_interval_bytes: u64,
        on_batch: &mut dyn FnMut(&BatchHeader),
    ) -> io::Result<RecoveryReport> {
        let stored = self.store.stored_bytes()?;
        let mut pos = 0u64;
        let mut batches = 0;
        let mut window = Window::default();
        while pos < stored {
            let Some(header) = window.header(self.store.as_ref(), pos, stored)? else {
                break;
            };
            if pos + header.total_bytes as u64 > stored || header.base_offset < self.next_offset {
                break;
            }
            if check_crc {
                let bytes = window.slice(self.store.as_ref(), pos, header.total_bytes, stored)?;
                if !batch::crc_ok(&bytes) {
                    break;
                }
            }
            self.track_batch_indexed(&header, pos, index_interval_bytes)?;
            on_batch(&header);
            self.size_bytes = pos + header.total_bytes as u64;
            pos += header.total_bytes as u64;
            batches += 1;
        }
        let truncated_bytes = stored - pos;
        if truncated_bytes > 0 {
            self.store.truncate(pos)?;
        }
        Ok(RecoveryReport {
            batches,
            truncated_bytes,
        })
    }

    /// Appends validated, offset-assigned batches. `buf` starts at `self.next_offset`.
    pub fn append(&mut self, buf: &[u8], index_interval_bytes: u64) -> io::Result<()> {
        self.store.write_at(self.size_bytes, buf)?;
        let mut pos = 0usize;
        while let Some(header) = BatchHeader::parse(&buf[pos..]) {
            self.track_batch_indexed(&header, self.size_bytes + pos as u64, index_interval_bytes)?;
            pos += header.total_bytes;
            if pos >= buf.len() {
                break;
            }
        }
        self.size_bytes += buf.len() as u64;
        Ok(())
    }

    fn track_batch_indexed(
        &mut self,
        header: &BatchHeader,
        position: u64,
        index_interval_bytes: u64,
    ) -> io::Result<()> {
        let relative_last = (header.last_offset() - self.base_offset) as u32;
        if self.bytes_since_index_entry >= index_interval_bytes {
            self.index.append(relative_last, position as u32)?;
            self.time_index
                .maybe_append(self.max_timestamp.max(header.max_timestamp), relative_last)?;
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.total_bytes as u64;
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.max_timestamp_batch_offset = header.base_offset;
        }
        self.next_offset = header.last_offset() + 1;
        Ok(())
    }

    /// Where to start scanning for `offset` (a batch boundary at or before it).
    pub fn scan_start(&self, offset: i64) -> u64 {
        self.index
            .floor_position((offset - self.base_offset).max(0) as u32) as u64
    }

    /// Where to start scanning for the first record with timestamp ≥ `ts`.
    pub fn scan_start_for_time(&self, ts: i64) -> u64 {
        match self.time_index.offset_before(ts) {
            Some(rel) => self.scan_start(self.base_offset + rel as i64 + 1),
            None => 0,
        }
    }

    pub fn sync(&self) -> io::Result<()> {
        self.store.sync()?;
        self.index.sync()?;
        self.time_index.sync()
    }

    /// Removes the segment's files (disk mode).
    pub fn delete_files(&self) -> io::Result<()> {
        if let Some(dir) = &self.dir {
            for ext in ["log", "index", "timeindex"] {
                match std::fs::remove_file(segment_path(dir, self.base_offset, ext)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// A cached stretch of a store, so that scanning many small batch headers costs one read per
/// window rather than one per batch.
#[derive(Default)]
pub struct Window {
    start: u64,
    bytes: Bytes,
}

impl Window {
    /// The bytes `[pos, pos + len)`; a slice of the window when it covers them, else a fresh read.
    pub fn slice(
        &mut self,
        store: &dyn SegmentStore,
        pos: u64,
        len: usize,
        limit: u64,
    ) -> io::Result<Bytes> {
        let end = pos + len as u64;
        if pos < self.start || end > self.start + self.bytes.len() as u64 {
            let read_len = (len.max(SCAN_WINDOW_BYTES) as u64).min(limit - pos) as usize;
            self.bytes = store.read_at(pos, read_len.max(len))?;
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        Ok(self.bytes.slice(from..from + len))
    }

    /// The batch header at `pos`, or `None` if fewer than a header's bytes remain before
    /// `limit` or the header is not a plausible batch.
    pub fn header(
        &mut self,
        store: &dyn SegmentStore,
        pos: u64,
        limit: u64,
    ) -> io::Result<Option<BatchHeader>> {
        if limit - pos < HEADER_BYTES as u64 {
            return Ok(None);
        }
        let bytes = self.slice(store, pos, HEADER_BYTES, limit)?;
        Ok(BatchHeader::parse(&bytes))
    }
}
