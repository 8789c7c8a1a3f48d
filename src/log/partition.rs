//! One partition's log: an ordered run of segments, the log start and end offsets, and a
//! notifier that wakes fetches waiting for data.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use tokio::sync::Notify;

use super::batch::{self, BatchHeader};
use super::producer_state::{ProducerStates, SequenceCheck, SequenceError};
use super::segment::{Segment, Window};

/// Per-partition storage settings (from the topic's configs over the broker defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before one would exceed this size.
    pub segment_bytes: u64,
    /// Roll to a new segment when the active one is older than this.
    pub segment_ms: i64,
    /// Add an index entry after this many bytes of batches.
    pub index_interval_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
        }
    }
}

/// Where a successful append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
}

/// Whole batches read from the log, with the offsets a fetch response reports.
#[derive(Debug, Clone)]
pub struct ReadInfo {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
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
}

struct LogState {
    /// Ordered by base offset; never empty; the last one is active.
    segments: Vec<Segment>,
    log_start_offset: i64,
    producers: ProducerStates,
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
}

pub struct PartitionLog {
    state: Mutex<LogState>,
    appended: Notify,
    dir: Option<PathBuf>,
    config: LogConfig,
}

impl PartitionLog {
    /// An empty log held in memory.
    pub fn in_memory(config: LogConfig) -> PartitionLog {
        PartitionLog {
            state: Mutex::new(LogState {
                segments: vec![Segment::new_in_memory(0, now_ms())],
                log_start_offset: 0,
                producers: ProducerStates::default(),
            }),
            appended: Notify::new(),
            dir: None,
            config,
        }
    }

    /// Opens the log in `dir` (created if missing), rebuilding indexes and truncating a torn or
    /// corrupt tail of the last segment.
    pub fn open(dir: &Path, config: LogConfig) -> io::Result<PartitionLog> {
        std::fs::create_dir_all(dir)?;
        let mut bases: Vec<i64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse::<i64>().ok()
            })
            .collect();
        bases.sort_unstable();
        if bases.is_empty() {
            bases.push(0);
        }
        let now = now_ms();
        let mut segments = Vec::with_capacity(bases.len());
        let mut producers = ProducerStates::default();
        let last = bases.len() - 1;
        for (i, base) in bases.into_iter().enumerate() {
            let mut segment = Segment::open_on_disk(dir, base, now)?;
            let report = segment.recover(i == last, config.index_interval_bytes, &mut |h| {
                if h.is_idempotent() {
                    producers.record(h);
                }
            })?;
            if report.truncated_bytes > 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    segment = base,
                    kept_batches = report.batches,
                    truncated_bytes = report.truncated_bytes,
                    "truncated a torn or corrupt tail of the log"
                );
            }
            segments.push(segment);
        }
        let log_start_offset = segments[0].base_offset;
        Ok(PartitionLog {
            state: Mutex::new(LogState {
                segments,
                log_start_offset,
                producers,
            }),
            appended: Notify::new(),
            dir: Some(dir.to_path_buf()),
            config,
        })
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A panic while holding the lock cannot leave the state half-written in a way that
        // matters more than refusing all further service, so recover the guard.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notified after every append; fetches wait on it for new data.
    pub fn appended(&self) -> &Notify {
        &self.appended
    }

    pub fn log_end_offset(&self) -> i64 {
        self.lock().log_end_offset()
    }

    /// The offset up to which consumers may read. A single node's high watermark is its log end.
    pub fn high_watermark(&self) -> i64 {
        self.log_end_offset()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.lock().log_start_offset
    }

    /// Appends validated batches (see [`batch::validate_batches`]), assigning their offsets.
    /// With `log_append_time_ms`, stamps them with that time first. A retried idempotent batch
    /// is not appended again: its original offsets are returned.
    pub fn append(
        &self,
        batches: &mut [u8],
        log_append_time_ms: Option<i64>,
    ) -> Result<AppendInfo, LogError> {
        if let Some(now) = log_append_time_ms {
            batch::stamp_log_append_time(batches, now);
        }
        let info = {
            let mut state = self.lock();
            let idempotent: Vec<BatchHeader> =
                headers(batches).filter(|h| h.is_idempotent()).collect();
            for h in &idempotent {
                if let SequenceCheck::Duplicate {
                    base_offset,
                    last_offset,
                } = state.producers.check(h)?
                {
                    return Ok(AppendInfo {
                        base_offset,
                        last_offset,
                        log_start_offset: state.log_start_offset,
                    });
                }
            }
            self.maybe_roll(&mut state, batches.len() as u64)?;
            let base_offset = state.log_end_offset();
            let next = batch::assign_offsets(batches, base_offset);
            let active = state.active();
            if let Err(e) = active.append(batches, self.config.index_interval_bytes) {
                // Leave no partial bytes behind: the next append overwrites from the old end.
                let _ = active.store.truncate(active.size_bytes);
                return Err(e.into());
            }
            debug_assert_eq!(active.next_offset, next);
            if !idempotent.is_empty() {
                for h in headers(batches).filter(|h| h.is_idempotent()) {
                    state.producers.record(&h);
                }
            }
            AppendInfo {
                base_offset,
                last_offset: next - 1,
                log_start_offset: state.log_start_offset,
            }
        };
        self.appended.notify_waiters();
        Ok(info)
    }

    fn maybe_roll(&self, state: &mut LogState, incoming_bytes: u64) -> io::Result<()> {
        let now = now_ms();
        let active = state.active();
        let full =
            active.size_bytes > 0 && active.size_bytes + incoming_bytes > self.config.segment_bytes;
        let old = active.size_bytes > 0 && now - active.created_ms >= self.config.segment_ms;
        if !(full || old) {
            return Ok(());
        }
        let base = active.next_offset;
        let segment = match &self.dir {
            Some(dir) => {
                active.sync()?;
                Segment::open_on_disk(dir, base, now)?
            }
            None => Segment::new_in_memory(base, now),
        };
        state.segments.push(segment);
        Ok(())
    }

    /// Reads whole batches starting with the one that holds `offset`, up to `max_bytes`
    /// (but at least one batch when `min_one`, even a larger one: KIP-74).
    pub fn read(&self, offset: i64, max_bytes: usize, min_one: bool) -> Result<ReadInfo, LogError> {
        let (store, start, size, high_watermark, log_start_offset) = {
            let state = self.lock();
            let log_end = state.log_end_offset();
            if offset < state.log_start_offset || offset > log_end {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start: state.log_start_offset,
                    log_end,
                });
            }
            let mut i = state.segment_for(offset);
            while state.segments[i].next_offset <= offset && i + 1 < state.segments.len() {
                i += 1;
            }
            let s = &state.segments[i];
            (
                s.store.clone(),
                s.scan_start(offset),
                s.size_bytes,
                log_end,
                state.log_start_offset,
            )
        };
        let empty = ReadInfo {
            records: Bytes::new(),
            high_watermark,
            log_start_offset,
        };
        if offset >= high_watermark {
            return Ok(empty);
        }
        let mut window = Window::default();
        // Prime the window with everything this read may return, so a fetch is one read.
        let prime = (size - start).min(max_bytes as u64 + 2 * self.config.index_interval_bytes);
        window.slice(store.as_ref(), start, prime as usize, size)?;
        let mut pos = start;
        while let Some(h) = window.header(store.as_ref(), pos, size)? {
            if h.last_offset() >= offset {
                break;
            }
            pos += h.total_bytes as u64;
        }
        let first = pos;
        let mut taken = 0usize;
        while let Some(h) = window.header(store.as_ref(), pos, size)? {
            let fits = taken + h.total_bytes <= max_bytes;
            if !(fits || (taken == 0 && min_one)) || pos + h.total_bytes as u64 > size {
                break;
            }
            taken += h.total_bytes;
            pos += h.total_bytes as u64;
        }
        if taken == 0 {
            return Ok(empty);
        }
        Ok(ReadInfo {
            records: window.slice(store.as_ref(), first, taken, size)?,
            high_watermark,
            log_start_offset,
        })
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

    /// The offset and timestamp of the record with the largest timestamp (ListOffsets -3).
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        let (store, start, size, max_ts, batch_offset) = {
            let state = self.lock();
            let Some(s) = state
                .segments
                .iter()
                .filter(|s| s.max_timestamp_batch_offset >= 0)
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
                s.scan_start(s.max_timestamp_batch_offset),
                s.size_bytes,
                s.max_timestamp,
                s.max_timestamp_batch_offset,
            )
        };
        let mut window = Window::default();
        let mut pos = start;
        while let Some(h) = window.header(store.as_ref(), pos, size)? {
            if h.base_offset == batch_offset {
                let bytes = window.slice(store.as_ref(), pos, h.total_bytes, size)?;
                return Ok(first_record_at_or_after(bytes, &h, |ts| ts == max_ts));
            }
            pos += h.total_bytes as u64;
        }
        Ok(None)
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> io::Result<()> {
        let state = self.lock();
        state.segments.iter().try_for_each(|s| s.sync())
    }

    /// Deletes every segment file and the partition directory.
    pub fn delete(&self) -> io::Result<()> {
        let state = self.lock();
        for s in &state.segments {
            s.delete_files()?;
        }
        if let Some(dir) = &self.dir {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The headers of the whole batches in `buf`.
fn headers(buf: &[u8]) -> impl Iterator<Item = BatchHeader> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let h = BatchHeader::parse(buf.get(pos..)?)?;
        pos += h.total_bytes;
        Some(h)
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
            let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
            fill(&log, 40)
        };
        let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
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
        let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
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
}
