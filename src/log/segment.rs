//! One segment: a run of whole batches starting at `base_offset`, its store and its indexes.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::batch::{self, BatchHeader, HEADER_BYTES};
use super::index::{OffsetIndex, TimeIndex};
use super::open_files::OpenFiles;
use super::store::{FileStore, MemStore, SegmentStore};
use super::txn::{self, ControlRecord, TxnIndex};

/// Sees each batch of a scan: its header and, for a control batch, its control record.
pub type OnBatch<'a> = dyn FnMut(&BatchHeader, Option<ControlRecord>) + 'a;

/// Bytes read per header when batches are large (see `Segment::for_each_header`): a header
/// and a control record's prefix fit.
const SPARSE_HEADER_READ_BYTES: usize = 4096;

/// Bytes read per positional read while scanning batch headers.
const SCAN_WINDOW_BYTES: usize = 256 * 1024;

/// Largest offset past a segment's base offset (Kafka's: an int): the log rolls before an
/// append would pass it, so relative offsets always fit the indexes' u32 entries.
pub const RELATIVE_OFFSET_MAX: i64 = i32::MAX as i64;

/// The index entry fields of a batch, checked: never a silently truncated u32.
fn index_u32(value: i64, what: &str) -> io::Result<u32> {
    u32::try_from(value).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} {value} does not fit a segment index entry"),
        )
    })
}

/// `<dir>/<20-digit base offset>.<ext>`, as Kafka names segment files.
pub fn segment_path(dir: &Path, base_offset: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

pub struct Segment {
    base_offset: i64,
    /// Offset after the last batch in this segment (= `base_offset` when empty).
    next_offset: i64,
    size_bytes: u64,
    store: Arc<dyn SegmentStore>,
    index: OffsetIndex,
    time_index: TimeIndex,
    /// Aborted transactions whose markers are in this segment (`<base>.txnindex`).
    txn_index: TxnIndex,
    /// Whether the transaction index file existed and was well-formed when opened.
    txn_index_loaded: bool,
    bytes_since_index_entry: u64,
    /// Largest batch max-timestamp in the segment (-1 when empty).
    max_timestamp: i64,
    created_ms: i64,
    /// Whether the index files held consistent entries when opened (else they need a rebuild).
    indexes_loaded: bool,
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
            TxnIndex::default(),
            None,
            now_ms,
        )
    }

    /// Opens the segment under `dir` (its `.log` created empty if missing; index files are
    /// created only when they get entries) and reads its index files. Files are opened through
    /// `files` when used, not kept open. Before use the segment must be brought up to date by
    /// [`Segment::load`] or [`Segment::recover`].
    pub fn open_on_disk(
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
        files: &Arc<OpenFiles>,
    ) -> io::Result<Segment> {
        let (store, stored) = FileStore::open(&segment_path(dir, base_offset, "log"), files)?;
        let (index, offsets_ok) =
            OffsetIndex::open(&segment_path(dir, base_offset, "index"), stored, files)?;
        let (time_index, times_ok) = TimeIndex::open(
            &segment_path(dir, base_offset, "timeindex"),
            Some(index.last().map_or(0, |e| e.0)),
            files,
        )?;
        let (txn_index, txns_ok) =
            TxnIndex::open(&segment_path(dir, base_offset, "txnindex"), files)?;
        let mut segment = Segment::with_parts(
            base_offset,
            Arc::new(store),
            index,
            time_index,
            txn_index,
            Some(dir.to_path_buf()),
            now_ms,
        );
        segment.indexes_loaded = offsets_ok && times_ok;
        segment.txn_index_loaded = txns_ok;
        Ok(segment)
    }

    fn with_parts(
        base_offset: i64,
        store: Arc<dyn SegmentStore>,
        index: OffsetIndex,
        time_index: TimeIndex,
        txn_index: TxnIndex,
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
            txn_index,
            txn_index_loaded: true,
            bytes_since_index_entry: 0,
            max_timestamp: -1,
            created_ms: now_ms,
            indexes_loaded: true,
            dir,
        }
    }

    /// The offset of the segment's first batch (its files' name).
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// The offset after the segment's last batch (= `base_offset` when empty).
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Bytes of whole batches in the segment (its store may hold a torn tail beyond, until
    /// a recovery cuts it).
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Where the segment's batches are stored.
    pub fn store(&self) -> &Arc<dyn SegmentStore> {
        &self.store
    }

    /// Largest batch max-timestamp in the segment (-1 when empty).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// When the segment was created (or opened, for one found on disk).
    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    /// The aborted transactions whose markers are in this segment.
    pub fn txn_index(&self) -> &TxnIndex {
        &self.txn_index
    }

    pub fn txn_index_mut(&mut self) -> &mut TxnIndex {
        &mut self.txn_index
    }

    /// Whether the transaction index is trusted: its file existed and was well-formed when
    /// opened (and nothing marked it stale since), or it was rebuilt.
    pub fn txn_index_loaded(&self) -> bool {
        self.txn_index_loaded
    }

    /// The transaction index cannot be trusted: [`Segment::rebuild_txn_index`] must replace it.
    pub fn mark_txn_index_stale(&mut self) {
        self.txn_index_loaded = false;
    }

    /// Replaces the transaction index with `entries` (rebuilt from the log), trusted from now on.
    pub fn rebuild_txn_index(&mut self, entries: Vec<txn::AbortedTxn>) -> io::Result<()> {
        self.txn_index.replace(entries)?;
        self.txn_index_loaded = true;
        Ok(())
    }

    /// Swaps the store (tests: a store that fails on demand).
    #[cfg(test)]
    pub fn set_store(&mut self, store: Arc<dyn SegmentStore>) {
        self.store = store;
    }

    /// Brings an opened segment up to date trusting its index files: only the batches from the
    /// last index entry on are read (and CRC-checked). Falls back to [`Segment::recover`] when
    /// the index files were inconsistent or that tail turns out torn or corrupt.
    ///
    /// With `every_header`, `on_batch` sees every batch of the segment (the producer state is
    /// being rebuilt), not only the tail's.
    pub fn load(
        &mut self,
        index_interval_bytes: u64,
        every_header: bool,
        on_batch: &mut OnBatch<'_>,
    ) -> io::Result<RecoveryReport> {
        if self.indexes_loaded {
            let from = self.index.last().map_or(0, |e| e.1 as u64);
            self.max_timestamp = self.time_index.last_timestamp().unwrap_or(-1);
            // The scan starts at an indexed batch: no new entry for it (bytes since entry = 0).
            self.bytes_since_index_entry = 0;
            let mut tail = Vec::new();
            let report = self.scan(from, true, index_interval_bytes, false, &mut |h, c| {
                tail.push((*h, c))
            })?;
            if report.truncated_bytes == 0 {
                if every_header {
                    self.for_each_header(0, from, on_batch)?;
                }
                tail.iter().for_each(|(h, c)| on_batch(h, *c));
                return Ok(report);
            }
            tracing::warn!(
                segment = self.base_offset,
                "the tail after the last index entry is damaged; rescanning the segment"
            );
        }
        self.recover(true, index_interval_bytes, on_batch)
    }

    /// Rebuilds the offset and time indexes by scanning every stored batch. With `check_crc`,
    /// the first batch that is torn, out of sequence or fails its CRC ends the log: it and
    /// everything after it is cut. (The transaction index is rebuilt by the caller, which
    /// replays the producer state.)
    pub fn recover(
        &mut self,
        check_crc: bool,
        index_interval_bytes: u64,
        on_batch: &mut OnBatch<'_>,
    ) -> io::Result<RecoveryReport> {
        self.index.reset()?;
        self.time_index.reset()?;
        // Bytes found after an unclean stop may not be on stable storage yet.
        self.store.mark_unsynced();
        self.next_offset = self.base_offset;
        self.size_bytes = 0;
        self.max_timestamp = -1;
        self.bytes_since_index_entry = 0;
        self.indexes_loaded = true;
        self.scan(0, check_crc, index_interval_bytes, true, on_batch)
    }

    /// Reads batches from byte `from` (a batch boundary) to the end of the store, tracking
    /// them, up to the first torn, out-of-sequence or (with `check_crc`) corrupt batch; with
    /// `cut`, the store and the indexes are cut there.
    fn scan(
        &mut self,
        from: u64,
        check_crc: bool,
        index_interval_bytes: u64,
        cut: bool,
        on_batch: &mut OnBatch<'_>,
    ) -> io::Result<RecoveryReport> {
        let stored = self.store.stored_bytes()?;
        let mut pos = from;
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
            let control =
                read_control_record(&mut window, self.store.as_ref(), pos, &header, stored)?;
            on_batch(&header, control);
            pos += header.total_bytes as u64;
            self.size_bytes = pos;
            batches += 1;
        }
        if batches == 0 {
            self.size_bytes = pos;
        }
        let truncated_bytes = stored - pos;
        if truncated_bytes > 0 && cut {
            self.store.truncate(pos)?;
            self.index.truncate_to_position(pos)?;
            self.time_index
                .truncate_to_offset((self.next_offset - self.base_offset) as u32)?;
        }
        Ok(RecoveryReport {
            batches,
            truncated_bytes,
        })
    }

    /// Cuts the segment before the first batch that ends at or after `offset` (so the batch
    /// holding `offset` goes too), then rebuilds the tracking and the indexes from what
    /// remains, and drops the aborted transactions whose markers were cut. Blocking.
    pub fn truncate_to(&mut self, offset: i64, index_interval_bytes: u64) -> io::Result<()> {
        let mut window = Window::default();
        let mut pos = self.scan_start(offset);
        while let Some(h) = window.header(self.store.as_ref(), pos, self.size_bytes)? {
            if h.last_offset() >= offset {
                break;
            }
            pos += h.total_bytes as u64;
        }
        self.store.truncate(pos)?;
        self.recover(false, index_interval_bytes, &mut |_, _| {})?;
        let end = self.next_offset;
        let kept: Vec<_> = self
            .txn_index
            .entries()
            .iter()
            .filter(|e| e.last_offset < end)
            .copied()
            .collect();
        if kept.len() != self.txn_index.entries().len() {
            self.txn_index.replace(kept)?;
        }
        Ok(())
    }

    /// Calls `on_batch` with the header of every batch in bytes `[from, to)` (no tracking).
    ///
    /// Only headers (and control records) are wanted: after a large batch the next header is
    /// read with a small read ([`SPARSE_HEADER_READ_BYTES`]) rather than a whole window, so a
    /// log of 1 MB batches costs a few KB of reads per batch, not the data.
    fn for_each_header(&self, from: u64, to: u64, on_batch: &mut OnBatch<'_>) -> io::Result<()> {
        let mut window = Window::default();
        let mut pos = from;
        while pos < to {
            let Some(h) = window.header(self.store.as_ref(), pos, to)? else {
                break;
            };
            if pos + h.total_bytes as u64 > to {
                break;
            }
            let control = read_control_record(&mut window, self.store.as_ref(), pos, &h, to)?;
            on_batch(&h, control);
            pos += h.total_bytes as u64;
            window.read_bytes = if h.total_bytes >= SCAN_WINDOW_BYTES / 4 {
                SPARSE_HEADER_READ_BYTES
            } else {
                0
            };
        }
        Ok(())
    }

    /// Calls `on_batch` with every batch of the segment, in order (no tracking).
    pub fn for_each_batch_header(&self, on_batch: &mut OnBatch<'_>) -> io::Result<()> {
        self.for_each_header(0, self.size_bytes, on_batch)
    }

    /// When the segment's data was last written, by its newest record's timestamp (or its
    /// creation when it has none): what retention by time compares.
    pub fn newest_ms(&self) -> i64 {
        if self.max_timestamp >= 0 {
            self.max_timestamp
        } else {
            self.created_ms
        }
    }

    /// Appends validated batches; `headers` are those of `buf`'s batches with their assigned
    /// base offsets (the first is `self.next_offset`). With `rebase`, `buf` still holds the
    /// producer's base offsets: the assigned ones are written in front of the rest of each
    /// batch by one vectored write (with its length and the leader epoch of `headers`: the
    /// first 16 bytes), and `buf` is never copied or modified. Without, `buf` is already
    /// patched (or a follower's, as the leader wrote it) and written as it is.
    pub fn append(
        &mut self,
        buf: &[u8],
        headers: &[BatchHeader],
        rebase: bool,
        index_interval_bytes: u64,
    ) -> io::Result<()> {
        if rebase {
            // Each batch's first 16 bytes come from here: its assigned base offset, its length
            // (as sent) and the leader epoch in `headers`; the rest straight from `buf`.
            let mut fronts: Vec<[u8; 16]> = Vec::with_capacity(headers.len());
            let mut pos = 0usize;
            for h in headers {
                let mut front = [0u8; 16];
                front[..8].copy_from_slice(&h.base_offset.to_be_bytes());
                front[8..12].copy_from_slice(&buf[pos + 8..pos + 12]);
                front[12..].copy_from_slice(&h.partition_leader_epoch.to_be_bytes());
                fronts.push(front);
                pos += h.total_bytes;
            }
            let mut slices = Vec::with_capacity(2 * headers.len());
            let mut pos = 0usize;
            for (h, front) in headers.iter().zip(&fronts) {
                slices.push(io::IoSlice::new(front));
                slices.push(io::IoSlice::new(&buf[pos + 16..pos + h.total_bytes]));
                pos += h.total_bytes;
            }
            self.store.write_vectored_at(self.size_bytes, &mut slices)?;
        } else {
            self.store.write_at(self.size_bytes, buf)?;
        }
        let mut pos = self.size_bytes;
        for h in headers {
            self.track_batch_indexed(h, pos, index_interval_bytes)?;
            pos += h.total_bytes as u64;
        }
        self.size_bytes = pos;
        Ok(())
    }

    fn track_batch_indexed(
        &mut self,
        header: &BatchHeader,
        position: u64,
        index_interval_bytes: u64,
    ) -> io::Result<()> {
        let relative_last = index_u32(header.last_offset() - self.base_offset, "relative offset")?;
        if self.bytes_since_index_entry >= index_interval_bytes {
            let position = index_u32(position as i64, "file position")?;
            self.index.append(relative_last, position)?;
            self.time_index
                .maybe_append(self.max_timestamp.max(header.max_timestamp), relative_last)?;
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.total_bytes as u64;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        self.next_offset = header.last_offset().saturating_add(1);
        Ok(())
    }

    /// Where to start scanning for `offset` (a batch boundary at or before it).
    pub fn scan_start(&self, offset: i64) -> u64 {
        self.index
            .floor_position((offset - self.base_offset).max(0) as u32) as u64
    }

    /// The start of the last indexed batch that starts at or before byte `position` (0 when
    /// none): a batch boundary.
    pub fn batch_start_at_or_before(&self, position: u64) -> u64 {
        self.index.batch_start_at_or_before(position) as u64
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
        self.time_index.sync()?;
        self.txn_index.sync()
    }

    /// The segment's files are about to be removed or replaced: holders of its store keep
    /// reading the current `.log` (kept open), and no file of it is written, reopened or
    /// created again through this segment.
    pub fn detach_files(&self) -> io::Result<()> {
        // Only a reader's clone of the store needs the file kept open (segments are detached
        // once out of the log's list, or under its lock, so no new reader can appear); pinning
        // nothing else keeps a mass deletion from opening every file at once.
        if Arc::strong_count(&self.store) > 1 {
            self.store.pin()?;
        }
        self.store.detach();
        self.index.detach();
        self.time_index.detach();
        self.txn_index.detach();
        Ok(())
    }

    /// Removes the segment's files (disk mode).
    pub fn delete_files(&self) -> io::Result<()> {
        crate::threads::may_block("deleting segment files");
        if let Some(dir) = &self.dir {
            self.detach_files()?;
            for ext in ["log", "index", "timeindex", "txnindex"] {
                match std::fs::remove_file(segment_path(dir, self.base_offset, ext)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// The control record of the control batch `h` stored at `pos` (`None` for data batches).
fn read_control_record(
    window: &mut Window,
    store: &dyn SegmentStore,
    pos: u64,
    h: &BatchHeader,
    limit: u64,
) -> io::Result<Option<ControlRecord>> {
    if !h.is_control() || h.total_bytes <= HEADER_BYTES {
        return Ok(None);
    }
    let len = (h.total_bytes - HEADER_BYTES).min(txn::CONTROL_RECORD_PREFIX_BYTES);
    let bytes = window.slice(store, pos + HEADER_BYTES as u64, len, limit)?;
    Ok(txn::parse_control_record(h, &bytes))
}

/// A cached stretch of a store, so that scanning many small batch headers costs one read per
/// window rather than one per batch.
#[derive(Default)]
pub struct Window {
    start: u64,
    bytes: Bytes,
    /// Bytes per read (0: [`SCAN_WINDOW_BYTES`]).
    read_bytes: usize,
}

impl Window {
    /// A window reading `read_bytes` at a time (small for a few header reads).
    pub fn with_size(read_bytes: usize) -> Window {
        Window {
            read_bytes,
            ..Window::default()
        }
    }

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
            let window = if self.read_bytes == 0 {
                SCAN_WINDOW_BYTES
            } else {
                self.read_bytes
            };
            let read_len = (len.max(window) as u64).min(limit - pos) as usize;
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
