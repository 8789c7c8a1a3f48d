//! The partition log's unit tests: appends, reads, rolls, recovery, durability, retention,
//! transactions and compaction through `PartitionLog`'s API.

use super::*;
use crate::log::batch::{self, tests::encode_batch, HEADER_BYTES};
use crate::log::flush::PRODUCER_SNAPSHOT;
use crate::log::store::SegmentStore;
use crate::log::txn;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1000,
        segment_ms: i64::MAX,
        index_interval_bytes: 100,
        ..LogConfig::default()
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

/// A store whose fsync fails while `failing` is set (then succeeds again, as a retried
/// fsync may after the kernel dropped the dirty pages).
struct FlakySync {
    inner: Arc<dyn SegmentStore>,
    failing: Arc<AtomicBool>,
}

impl SegmentStore for FlakySync {
    fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write_at(pos, data)
    }
    fn write_vectored_at(&self, pos: u64, data: &mut [io::IoSlice<'_>]) -> io::Result<()> {
        self.inner.write_vectored_at(pos, data)
    }
    fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        self.inner.read_at(pos, len)
    }
    fn records(&self, pos: u64, len: usize) -> io::Result<Records> {
        self.inner.records(pos, len)
    }
    fn sync(&self) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.sync()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
    fn stored_bytes(&self) -> io::Result<u64> {
        self.inner.stored_bytes()
    }
}

#[test]
fn a_failed_fsync_latches_the_log_failed() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush_messages: 1,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir.path(), config, false).unwrap();
    let failing = Arc::new(AtomicBool::new(true));
    {
        let mut state = log.lock();
        let active = state.local.active_mut();
        let inner = active.store().clone();
        active.set_store(Arc::new(FlakySync {
            inner,
            failing: failing.clone(),
        }));
    }
    let mut b = encode_batch(3, Compression::None, 1_000);
    let info = log.append(&mut b, None).unwrap();
    assert!(info.needs_sync);
    assert!(
        log.sync_to(info.last_offset + 1).is_err(),
        "the fsync failed"
    );
    // The device "recovers": a retried fsync would now succeed, for data the kernel may
    // have dropped. The log must never report success again.
    failing.store(false, Ordering::SeqCst);
    assert!(
        log.sync_to(info.last_offset + 1).is_err(),
        "no success after a failure"
    );
    assert!(
        log.durable_offset() <= info.base_offset,
        "nothing became durable"
    );
    let mut b = encode_batch(3, Compression::None, 2_000);
    assert!(matches!(log.append(&mut b, None), Err(LogError::Failed)));
    assert!(matches!(log.read(0, 1 << 20, true), Err(LogError::Failed)));
    assert!(log.sync(false).is_err());
    assert!(
        log.sync(true).is_err(),
        "a failed log never syncs for a clean shutdown"
    );
    assert!(
        !log.flush_if_due(i64::MAX).unwrap(),
        "the periodic flush skips it"
    );
    assert!(matches!(log.delete_records(1), Err(LogError::Failed)));
    assert!(log.is_failed());
}

#[test]
fn new_segments_and_directories_are_fsynced_before_durability() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let log = PartitionLog::open(&path, small_segments(), false).unwrap();
    assert!(
        log.dir_dirty.load(Ordering::SeqCst),
        "a new directory awaits its fsync"
    );
    fill(&log, 1);
    log.sync_to(log.log_end_offset()).unwrap();
    assert!(
        !log.dir_dirty.load(Ordering::SeqCst),
        "fsynced with the data"
    );
    let segments = log.lock().local.segments().len();
    fill(&log, 10);
    assert!(log.lock().local.segments().len() > segments, "rolled");
    assert!(
        log.dir_dirty.load(Ordering::SeqCst),
        "a rolled segment's entry awaits its fsync"
    );
    log.sync_to(log.log_end_offset()).unwrap();
    assert!(!log.dir_dirty.load(Ordering::SeqCst));
    drop(log);
    // Reopening an existing directory with its segments creates nothing.
    let log = PartitionLog::open(&path, small_segments(), true).unwrap();
    assert!(!log.dir_dirty.load(Ordering::SeqCst));
}

#[test]
fn relative_offsets_never_overflow_a_segment() {
    let log = PartitionLog::in_memory(LogConfig::default());
    fill(&log, 1);
    for _ in 0..3 {
        // A batch claiming 2^31 offsets (appends take validated batches; the header alone
        // decides how many offsets a batch takes; last offset delta at byte 23).
        let mut b = encode_batch(1, Compression::None, 1_000);
        b[23..23 + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        log.append(&mut b, None).unwrap();
    }
    let state = log.lock();
    assert!(
        state.local.segments().len() >= 3,
        "rolled before relative offsets overflowed"
    );
    for s in state.local.segments() {
        assert!(
            s.next_offset() - 1 - s.base_offset() <= super::super::segment::RELATIVE_OFFSET_MAX
        );
    }
}

#[test]
fn a_deleted_log_never_writes_into_a_recreated_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let old = Arc::new(PartitionLog::open(&path, small_segments(), false).unwrap());
    fill(&old, 2);
    let aside = old.delete().unwrap().expect("renamed aside");
    assert!(!path.exists());
    let name = aside.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with("t-0.") && name.ends_with(DELETED_DIR_SUFFIX),
        "{name}"
    );
    // The topic is recreated under the same name.
    let new = PartitionLog::open(&path, small_segments(), false).unwrap();
    // The old handle (a request in flight) can neither append nor roll into it.
    for _ in 0..20 {
        let mut b = encode_batch(3, Compression::None, 1_000);
        assert!(matches!(old.append(&mut b, None), Err(LogError::Closed)));
    }
    assert!(old.enforce_retention(i64::MAX).is_ok());
    assert!(!old.flush_if_due(i64::MAX).unwrap());
    assert!(matches!(old.delete_records(1), Err(LogError::Closed)));
    let files: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        files.iter().all(|f| f.starts_with(&format!("{:020}", 0))),
        "only the new log's first segment: {files:?}"
    );
    assert_eq!(new.log_end_offset(), 0);
    // What the old log held is still readable by handles that had it.
    assert!(!old.read(0, 1 << 20, true).unwrap().records.is_empty());
}

#[test]
fn nothing_above_the_high_watermark_is_read_deleted_or_expired() {
    let log = PartitionLog::in_memory(LogConfig {
        retention_ms: 1,
        ..small_segments()
    });
    fill(&log, 10);
    log.set_hw_follows_log_end(false);
    fill(&log, 30);
    assert_eq!((log.high_watermark(), log.log_end_offset()), (30, 120));
    // Reads stop at the HW, across segments.
    let mut offset = 0;
    while let Ok(r) = log.read(offset, 1 << 20, true) {
        if r.records.is_empty() {
            break;
        }
        assert_eq!(r.high_watermark, 30);
        let batches = batch::validate_batches(&r.records, usize::MAX).unwrap();
        offset += batches.batch_count as i64 * 3;
    }
    assert_eq!(offset, 30);
    // DeleteRecords may not pass it (-1 means the HW itself).
    assert!(matches!(
        log.delete_records(31),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Retention keeps every segment that is not wholly below it, however old.
    log.enforce_retention(now_ms() + 1_000_000).unwrap();
    let start = log.log_start_offset();
    assert!(start <= 30, "log start {start} passed the high watermark");
    assert_eq!(log.delete_records(-1).unwrap(), 30);
    // The LSO never exceeds the HW.
    assert_eq!(log.last_stable_offset(), 30);
    log.set_hw_follows_log_end(true);
    assert_eq!(log.high_watermark(), 120);
}

#[test]
fn memory_log_appends_rolls_and_reads() {
    let log = PartitionLog::in_memory(small_segments());
    let appended = fill(&log, 40);
    assert!(log.lock().local.segments().len() > 3, "segments rolled");
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
        let log = PartitionLog::open(dir.path(), small_segments(), false).unwrap();
        fill(&log, 40)
    };
    let log = PartitionLog::open(dir.path(), small_segments(), false).unwrap();
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
    let log = PartitionLog::open(dir.path(), small_segments(), false).unwrap();
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

#[test]
fn clean_reopen_uses_the_index_files_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let appended = {
        let log = PartitionLog::open(dir.path(), small_segments(), false).unwrap();
        let appended = fill(&log, 40);
        log.sync(true).unwrap();
        appended
    };
    // The snapshot and checkpoint exist after a clean sync.
    assert!(dir.path().join(PRODUCER_SNAPSHOT).exists());
    let cp = Checkpoint::read(dir.path());
    assert_eq!(cp.recovery_point, 120);
    let log = PartitionLog::open(dir.path(), small_segments(), true).unwrap();
    check_reads(&log, &appended);
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((119, 1392)));
    assert_eq!(log.offset_for_timestamp(1201).unwrap(), Some((61, 1201)));
    let mut more = encode_batch(2, Compression::None, 5);
    assert_eq!(log.append(&mut more, None).unwrap().base_offset, 120);
}

#[test]
fn unclean_reopen_cuts_a_corrupt_batch_and_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let appended = {
        let log = PartitionLog::open(dir.path(), small_segments(), false).unwrap();
        fill(&log, 40)
    };
    let mut logs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    // Flip a byte inside the second batch of the second-to-last segment.
    let victim = &logs[logs.len() - 2];
    let mut data = std::fs::read(victim).unwrap();
    let first_len = BatchHeader::parse(&data).unwrap().total_bytes;
    let base_of_victim = BatchHeader::parse(&data).unwrap().base_offset;
    data[first_len + 70] ^= 0xFF;
    std::fs::write(victim, &data).unwrap();
    let log = PartitionLog::open(dir.path(), small_segments(), false).unwrap();
    let end = base_of_victim + 3;
    assert_eq!(log.log_end_offset(), end, "cut after the last good batch");
    assert!(!logs.last().unwrap().exists(), "later segments deleted");
    let kept = (end / 3) as usize;
    check_reads_prefix(&log, &appended[..kept]);
}

fn check_reads_prefix(log: &PartitionLog, appended: &[Vec<u8>]) {
    for (i, b) in appended.iter().enumerate() {
        let got = log.read(i as i64 * 3, 1, true).expect("read");
        assert_eq!(&got.records[..], &b[..], "batch {i}");
    }
}

#[test]
fn delete_records_and_retention_move_the_log_start() {
    for disk in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let open = |clean| {
            if disk {
                PartitionLog::open(dir.path(), small_segments(), clean).unwrap()
            } else {
                PartitionLog::in_memory(small_segments())
            }
        };
        let log = open(false);
        fill(&log, 40);
        let segments = log.lock().local.segments().len();
        assert_eq!(log.delete_records(10).unwrap(), 10);
        assert!(matches!(
            log.read(9, 100, true),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(!log.read(10, 100, true).unwrap().records.is_empty());
        assert!(matches!(
            log.delete_records(121),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.delete_records(5).unwrap(), 10, "never moves back");
        // Size retention: keep about 3000 bytes.
        log.set_config(LogConfig {
            retention_bytes: 3000,
            retention_ms: -1,
            ..small_segments()
        });
        let report = log.enforce_retention(now_ms()).unwrap();
        assert!(report.segments_deleted > 0);
        assert_eq!(
            log.lock().local.segments().len(),
            segments - report.segments_deleted
        );
        let start = log.log_start_offset();
        assert_eq!(start, log.lock().local.segments()[0].base_offset());
        assert!(start > 10);
        // Time retention: the records' timestamps (1000..) are ancient: everything goes,
        // the active segment is rolled first.
        log.set_config(LogConfig {
            retention_ms: 1000,
            ..small_segments()
        });
        log.enforce_retention(now_ms()).unwrap();
        assert_eq!(log.log_start_offset(), 120);
        assert_eq!(log.log_end_offset(), 120);
        if disk {
            drop(log);
            let log = open(false);
            assert_eq!(log.log_start_offset(), 120, "persisted");
            let mut more = encode_batch(2, Compression::None, 5);
            assert_eq!(log.append(&mut more, None).unwrap().base_offset, 120);
        }
    }
}

#[test]
fn group_commit_makes_appends_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(
        PartitionLog::open(
            dir.path(),
            LogConfig {
                flush_messages: 1,
                ..small_segments()
            },
            false,
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let log = log.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let mut b = encode_batch(3, Compression::None, 1);
                    let info = log.append(&mut b, None).unwrap();
                    // Unless another thread's fsync already covered it, it needs one.
                    assert!(info.needs_sync || log.durable_offset() > info.last_offset);
                    log.sync_to(info.last_offset + 1).unwrap();
                    assert!(log.durable_offset() > info.last_offset);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(log.durable_offset(), 240);
}

#[test]
fn compaction_keeps_the_newest_value_per_key() {
    use crate::log::cleaner::tests_support::keyed;
    for disk in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            cleanup_compact: true,
            cleanup_delete: false,
            segment_bytes: 300,
            ..small_segments()
        };
        let log = if disk {
            PartitionLog::open(dir.path(), config, false).unwrap()
        } else {
            PartitionLog::in_memory(config)
        };
        // 60 records over keys k0..k4, then a tombstone for k0.
        for i in 0..60 {
            let key = format!("k{}", i % 5);
            let value = format!("v{i}");
            let mut b = keyed(&[(key.as_str(), Some(value.as_str()))]);
            log.append(&mut b, None).unwrap();
        }
        let mut t = keyed(&[("k0", None)]);
        log.append(&mut t, None).unwrap();
        let mut last = keyed(&[("k9", Some("tail"))]);
        log.append(&mut last, None).unwrap();
        let report = log.compact(now_ms()).unwrap();
        assert!(report.segments_cleaned > 0 && report.bytes_after < report.bytes_before);
        let records = all_records(&log);
        // In the compacted range (below the active segment) one record per key; overall the
        // last record of each key is its newest value, at its original offset.
        let active_base = log.lock().local.segments().last().unwrap().base_offset();
        let mut in_range = std::collections::HashSet::new();
        let mut seen = std::collections::HashMap::new();
        for (offset, key, value) in &records {
            if *offset < active_base {
                assert!(
                    in_range.insert(key.clone()),
                    "one per key below {active_base}"
                );
            }
            seen.insert(key.clone(), (*offset, value.clone()));
        }
        assert!(records.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(records.len() < 30, "most records were compacted away");
        assert_eq!(seen["k1"], (56, Some("v56".into())));
        assert_eq!(seen["k4"], (59, Some("v59".into())));
        assert_eq!(seen["k0"], (60, None), "the fresh tombstone is kept");
        assert_eq!(seen["k9"], (61, Some("tail".into())));
        assert_eq!(log.log_end_offset(), 62);
        // Nothing rolled since: a second pass does nothing.
        assert_eq!(log.compact(now_ms()).unwrap().segments_cleaned, 0);
        if disk {
            drop(log);
            let log = PartitionLog::open(dir.path(), config, false).unwrap();
            assert_eq!(all_records(&log), records, "survives a restart");
        }
    }
}

fn all_records(log: &PartitionLog) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20, true).unwrap();
        if read.records.is_empty() {
            break;
        }
        let mut b = read.records.clone();
        for set in RecordBatchDecoder::decode_all(&mut b).unwrap() {
            for r in set.records {
                if r.offset >= offset {
                    out.push((
                        r.offset,
                        String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                        r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                    ));
                }
            }
        }
        offset = out.last().map_or(offset + 1, |r| r.0 + 1).max(offset + 1);
        // skip gaps left by compaction
        let next_batch = {
            let mut b = read.records.clone();
            RecordBatchDecoder::decode_all(&mut b)
                .unwrap()
                .last()
                .and_then(|s| s.records.last().map(|r| r.offset + 1))
        };
        if let Some(n) = next_batch {
            offset = offset.max(n);
        }
    }
    out
}

// ---- transactions (KIP-98) ----

use crate::log::cleaner;
use bytes::BytesMut;
use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// One batch of keyed records from producer `pid` (transactional or merely idempotent).
fn producer_batch(
    pid: i64,
    epoch: i16,
    seq: i32,
    kvs: &[(&str, &str)],
    transactional: bool,
) -> Vec<u8> {
    let records: Vec<Record> = kvs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: now_ms(),
            key: Some(Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.to_vec()
}

fn txn(pid: i64, seq: i32, n: usize) -> Vec<u8> {
    let kvs: Vec<(String, String)> = (0..n)
        .map(|i| (format!("k{i}"), format!("p{pid}s{}", seq + i as i32)))
        .collect();
    let kvs: Vec<(&str, &str)> = kvs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    producer_batch(pid, 0, seq, &kvs, true)
}

fn append(log: &PartitionLog, mut batch: Vec<u8>) -> AppendInfo {
    log.append(&mut batch, None).expect("append")
}

/// Base offsets of the batches a read returns.
fn batch_bases(read: &ReadInfo) -> Vec<i64> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(h) = BatchHeader::parse(&read.records[pos..]) {
        out.push(h.base_offset);
        pos += h.total_bytes;
        if pos >= read.records.len() {
            break;
        }
    }
    out
}

fn aborted(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
    AbortedTxn {
        producer_id: pid,
        first_offset: first,
        last_offset: last,
        last_stable_offset: lso,
    }
}

#[test]
fn lso_follows_ongoing_transactions_and_markers() {
    let log = PartitionLog::in_memory(LogConfig::default());
    append(&log, encode_batch(3, Compression::None, 1)); // 0..=2
    assert_eq!(
        log.last_stable_offset(),
        3,
        "no transaction: the high watermark"
    );
    assert_eq!(append(&log, txn(1, 0, 3)).base_offset, 3); // 3..=5
    assert_eq!(log.last_stable_offset(), 3);
    assert_eq!(append(&log, txn(2, 0, 3)).base_offset, 6); // 6..=8
    append(&log, txn(1, 3, 2)); // 9..=10, same transaction
    append(&log, encode_batch(1, Compression::None, 1)); // 11
    assert_eq!(log.last_stable_offset(), 3);
    assert_eq!(log.high_watermark(), 12);
    assert_eq!(log.ongoing_transactions(), vec![(1, 3), (2, 6)]);

    // read_committed stops before the first open transaction; read_uncommitted does not.
    let rc = log
        .read_with_isolation(0, 1 << 20, true, Isolation::ReadCommitted)
        .unwrap();
    assert_eq!(batch_bases(&rc), vec![0]);
    assert_eq!((rc.last_stable_offset, rc.high_watermark), (3, 12));
    assert!(log
        .read_with_isolation(3, 1 << 20, true, Isolation::ReadCommitted)
        .unwrap()
        .records
        .is_empty());
    let ru = log.read(0, 1 << 20, true).unwrap();
    assert_eq!(batch_bases(&ru), vec![0, 3, 6, 9, 11]);
    assert_eq!(ru.last_stable_offset, 3, "the LSO is reported either way");
    assert!(ru.aborted_transactions.is_empty());

    // A non-transactional write by a producer in a transaction is refused.
    let mut plain = producer_batch(1, 0, 5, &[("k", "v")], false);
    assert!(matches!(
        log.append(&mut plain, None),
        Err(LogError::Sequence(SequenceError::InvalidTxnState {
            producer_id: 1
        }))
    ));

    assert_eq!(log.append_marker(1, 0, true, 0).unwrap(), 12);
    assert_eq!(log.last_stable_offset(), 6);
    assert_eq!(log.append_marker(2, 0, false, 0).unwrap(), 13);
    assert_eq!(log.last_stable_offset(), 14);
    assert_eq!(log.high_watermark(), 14);
    assert!(log.ongoing_transactions().is_empty());
    assert_eq!(log.aborted_transactions(0, 14), vec![aborted(2, 6, 13, 14)]);

    let rc = log
        .read_with_isolation(0, 1 << 20, true, Isolation::ReadCommitted)
        .unwrap();
    assert_eq!(batch_bases(&rc), vec![0, 3, 6, 9, 11, 12, 13]);
    assert_eq!(rc.aborted_transactions, vec![aborted(2, 6, 13, 14)]);
    // A read ending before the aborted transaction starts does not list it.
    let first = log
        .read_with_isolation(0, 1, true, Isolation::ReadCommitted)
        .unwrap();
    assert_eq!(batch_bases(&first), vec![0]);
    assert!(first.aborted_transactions.is_empty());
    // A read starting after its marker does not either.
    let tail = log
        .read_with_isolation(14, 1 << 20, true, Isolation::ReadCommitted)
        .unwrap();
    assert!(tail.records.is_empty() && tail.aborted_transactions.is_empty());

    // The marker is a control batch with Kafka's control record.
    let marker = log.read(13, 1 << 20, true).unwrap();
    let h = BatchHeader::parse(&marker.records).unwrap();
    assert!(h.is_control() && h.is_transactional() && h.producer_id == 2);
    let c = txn::parse_control_record(&h, &marker.records[HEADER_BYTES..]).unwrap();
    assert_eq!(c.marker(), Some(false));

    // A marker with no transaction open is still written, and indexes nothing.
    assert_eq!(log.append_marker(7, 0, false, 0).unwrap(), 14);
    assert_eq!(log.aborted_transactions(0, 15).len(), 1);
    // Stale producer epoch, older coordinator: refused.
    append(&log, producer_batch(3, 2, 0, &[("k", "v")], true)); // 15
    assert!(matches!(
        log.append_marker(3, 1, false, 0),
        Err(LogError::Sequence(SequenceError::StaleEpoch { .. }))
    ));
    log.append_marker(3, 2, false, 5).unwrap(); // 16
    assert!(matches!(
        log.append_marker(3, 2, true, 4),
        Err(LogError::Sequence(SequenceError::CoordinatorFenced {
            got: 4,
            current: 5
        }))
    ));
    assert!(matches!(
        log.append_marker(-1, 0, true, 0),
        Err(LogError::InvalidMarker(_))
    ));
    assert_eq!(log.log_end_offset(), 17);
    assert_eq!(
        log.aborted_transactions(0, 17),
        vec![aborted(2, 6, 13, 14), aborted(3, 15, 16, 17)]
    );
}

#[test]
fn aborted_lookup_spans_segments_and_stops_early() {
    let log = PartitionLog::in_memory(LogConfig {
        segment_bytes: 300,
        ..small_segments()
    });
    // pid 1 opens at 0; pid 2's transactions come and go meanwhile; pid 1 aborts last.
    append(&log, txn(1, 0, 2)); // 0..=1
    append(&log, txn(2, 0, 2)); // 2..=3
    log.append_marker(2, 0, false, 0).unwrap(); // 4: LSO after = 0 (pid 1 open)
    append(&log, txn(2, 2, 2)); // 5..=6
    log.append_marker(2, 0, true, 0).unwrap(); // 7
    for _ in 0..4 {
        append(&log, encode_batch(3, Compression::None, 1));
    } // 8..=19
    log.append_marker(1, 0, false, 0).unwrap(); // 20
    assert!(log.lock().local.segments().len() > 2, "rolled");
    let all = vec![aborted(2, 2, 4, 0), aborted(1, 0, 20, 21)];
    assert_eq!(log.aborted_transactions(0, 21), all);
    // From inside pid 1's transaction, after pid 2's abort: only pid 1's.
    assert_eq!(log.aborted_transactions(8, 21), all[1..].to_vec());
    let rc = log
        .read_with_isolation(5, 1 << 20, true, Isolation::ReadCommitted)
        .unwrap();
    assert_eq!(rc.aborted_transactions, all[1..].to_vec());
}

#[test]
fn transactions_survive_clean_and_unclean_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 400,
        ..small_segments()
    };
    let expected_aborts;
    {
        let log = PartitionLog::open(dir.path(), config, false).unwrap();
        append(&log, txn(1, 0, 2)); // 0..=1
        append(&log, txn(2, 0, 2)); // 2..=3
        log.append_marker(1, 0, false, 0).unwrap(); // 4
        for _ in 0..4 {
            append(&log, encode_batch(3, Compression::None, 1)); // 5..=16
        }
        append(&log, txn(3, 0, 2)); // 17..=18
        log.append_marker(2, 0, false, 0).unwrap(); // 19
        log.append_marker(3, 0, true, 0).unwrap(); // 20
        append(&log, txn(4, 0, 1)); // 21: stays open
        append(&log, encode_batch(2, Compression::None, 1)); // 22..=23
        assert!(log.lock().local.segments().len() > 2);
        expected_aborts = vec![aborted(1, 0, 4, 2), aborted(2, 2, 19, 17)];
        assert_eq!(log.aborted_transactions(0, 24), expected_aborts);
        assert_eq!(log.last_stable_offset(), 21);
        log.sync(true).unwrap();
    }
    let txnindex_bytes = || -> u64 {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "txnindex"))
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum()
    };
    assert_eq!(txnindex_bytes(), 2 * txn::TXN_ENTRY_BYTES as u64);
    let check = |log: &PartitionLog, what: &str| {
        assert_eq!(log.last_stable_offset(), 21, "{what}: LSO");
        assert_eq!(log.ongoing_transactions(), vec![(4, 21)], "{what}");
        assert_eq!(
            log.aborted_transactions(0, 24),
            expected_aborts,
            "{what}: aborted"
        );
    };
    // Clean: snapshot + index files.
    let log = PartitionLog::open(dir.path(), config, true).unwrap();
    check(&log, "clean");
    log.sync(true).unwrap();
    drop(log);
    // Clean, but the index files are gone or damaged: rebuilt from the log.
    let mut victims: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txnindex"))
        .collect();
    victims.sort();
    std::fs::remove_file(&victims[0]).unwrap();
    std::fs::write(&victims[victims.len() - 2], [1, 2, 3]).unwrap();
    let log = PartitionLog::open(dir.path(), config, true).unwrap();
    check(&log, "clean, indexes rebuilt");
    assert!(victims[0].exists());
    assert_eq!(txnindex_bytes(), 2 * txn::TXN_ENTRY_BYTES as u64);
    // Unclean (no snapshot; everything after the recovery point scanned).
    drop(log);
    std::fs::remove_file(dir.path().join(PRODUCER_SNAPSHOT)).ok();
    let log = PartitionLog::open(dir.path(), config, false).unwrap();
    check(&log, "unclean");
    // The restored state goes on: the open transaction commits, its pid's next batch
    // continues its sequence.
    log.append_marker(4, 0, true, 0).unwrap();
    assert_eq!(log.last_stable_offset(), log.high_watermark());
    let mut next = txn(4, 1, 1);
    log.append(&mut next, None).unwrap();
    let mut gap = txn(4, 5, 1);
    assert!(matches!(
        log.append(&mut gap, None),
        Err(LogError::Sequence(SequenceError::OutOfOrder { .. }))
    ));
}

#[test]
fn unclean_restart_restores_an_open_transaction_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = PartitionLog::open(dir.path(), small_segments(), false).unwrap();
        append(&log, encode_batch(2, Compression::None, 1)); // 0..=1
        append(&log, txn(9, 0, 2)); // 2..=3
        append(&log, encode_batch(2, Compression::None, 1)); // 4..=5
                                                             // dropped without a clean shutdown
    }
    let log = PartitionLog::open(dir.path(), small_segments(), false).unwrap();
    assert_eq!(log.last_stable_offset(), 2);
    assert_eq!(log.ongoing_transaction(9), Some(2));
    log.append_marker(9, 0, false, 0).unwrap();
    assert_eq!(log.aborted_transactions(0, 7), vec![aborted(9, 2, 6, 7)]);
}

#[test]
fn retention_and_delete_records_drop_aborted_entries_with_their_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 300,
        ..small_segments()
    };
    let log = PartitionLog::open(dir.path(), config, false).unwrap();
    for pid in 0..6 {
        append(&log, txn(pid, 0, 2));
        log.append_marker(pid, 0, false, 0).unwrap();
    }
    let end = log.log_end_offset();
    assert_eq!(log.aborted_transactions(0, end).len(), 6);
    let count_txnindex = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "txnindex")
            })
            .count()
    };
    let segments_before = log.lock().local.segments().len();
    assert_eq!(count_txnindex(), segments_before);
    // DeleteRecords to the middle of the log: entries of dropped segments go with them;
    // those wholly below the log start are never reported.
    let start = log.delete_records(9).unwrap();
    assert!(log.lock().local.segments().len() < segments_before);
    assert_eq!(count_txnindex(), log.lock().local.segments().len());
    let left = log.aborted_transactions(start, end);
    assert!(left.iter().all(|e| e.last_offset >= start));
    assert_eq!(
        left.iter().map(|e| e.producer_id).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    // Size retention keeps the newest segments only.
    log.set_config(LogConfig {
        retention_bytes: 150,
        retention_ms: -1,
        ..config
    });
    log.enforce_retention(now_ms()).unwrap();
    let start = log.log_start_offset();
    assert!(log
        .aborted_transactions(start, end)
        .iter()
        .all(|e| e.last_offset >= start));
    assert_eq!(count_txnindex(), log.lock().local.segments().len());
    drop(log);
    let log = PartitionLog::open(dir.path(), config, false).unwrap();
    assert!(log
        .aborted_transactions(start, end)
        .iter()
        .all(|e| e.last_offset >= start));
}

#[test]
fn retention_past_an_open_transaction_keeps_the_lso_at_the_log_start() {
    let log = PartitionLog::in_memory(small_segments());
    append(&log, txn(1, 0, 3)); // 0..=2, stays open
    append(&log, encode_batch(3, Compression::None, 1)); // 3..=5
    assert_eq!(log.last_stable_offset(), 0);
    log.delete_records(4).unwrap();
    assert_eq!(log.last_stable_offset(), 4);
    log.append_marker(1, 0, true, 0).unwrap();
    assert_eq!(log.last_stable_offset(), 7);
}

#[test]
fn compaction_stops_at_the_lso_and_ignores_aborted_data() {
    for disk in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            cleanup_compact: true,
            cleanup_delete: false,
            segment_bytes: 250,
            ..small_segments()
        };
        let log = if disk {
            PartitionLog::open(dir.path(), config, false).unwrap()
        } else {
            PartitionLog::in_memory(config)
        };
        let plain = |k: &str, v: &str| cleaner::tests_support::keyed(&[(k, Some(v))]);
        append(&log, plain("a", "a1")); // 0
        append(&log, plain("b", "b1")); // 1
                                        // An aborted transaction overwrites a: read_committed consumers never saw it.
        append(&log, producer_batch(5, 0, 0, &[("a", "aborted")], true)); // 2
        log.append_marker(5, 0, false, 0).unwrap(); // 3
        append(&log, plain("b", "b2")); // 4
        for i in 0..6 {
            append(&log, plain("c", &format!("c{i}"))); // 5..=10
        }
        // An open transaction, then more data that would otherwise be cleanable.
        append(&log, producer_batch(6, 0, 0, &[("c", "open")], true)); // 11
        for i in 0..8 {
            append(&log, plain("d", &format!("d{i}"))); // 12..=19
        }
        assert_eq!(log.last_stable_offset(), 11);
        assert!(log.lock().local.segments().len() > 3);
        let report = log.compact(now_ms()).unwrap();
        assert!(report.segments_cleaned > 0);
        let values = data_records(&log);
        let get = |k: &str| -> Vec<(i64, String)> {
            values
                .iter()
                .filter(|(_, key, _)| key == k)
                .map(|(o, _, v)| (*o, v.clone()))
                .collect()
        };
        assert_eq!(
            get("a"),
            vec![(0, "a1".to_string())],
            "the committed value stays, the aborted one goes"
        );
        assert_eq!(get("b"), vec![(4, "b2".to_string())]);
        assert!(
            get("c").contains(&(11, "open".to_string())),
            "open transaction untouched"
        );
        // Nothing at or above the LSO was cleaned: every d is still there.
        assert_eq!(get("d").len(), 8);
        // The abort marker and its index entry are kept.
        assert_eq!(log.aborted_transactions(0, 20), vec![aborted(5, 2, 3, 4)]);
        let marker = log.read(3, 1 << 20, true).unwrap();
        assert!(BatchHeader::parse(&marker.records).unwrap().is_control());
        if disk {
            drop(log);
            let log = PartitionLog::open(dir.path(), config, false).unwrap();
            assert_eq!(data_records(&log), values, "survives a restart");
            assert_eq!(log.last_stable_offset(), 11);
            // The rebuilt index may drop the entry: none of that transaction's data is left.
            assert!(log.aborted_transactions(0, 20).len() <= 1);
        }
    }
}

/// Every data record of the log: (offset, key, value).
fn data_records(log: &PartitionLog) -> Vec<(i64, String, String)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20, true).unwrap();
        if read.records.is_empty() {
            break;
        }
        let mut b = read.records.clone();
        for set in RecordBatchDecoder::decode_all(&mut b).unwrap() {
            for r in set.records {
                offset = offset.max(r.offset + 1);
                if !r.control && r.offset >= log.log_start_offset() {
                    out.push((
                        r.offset,
                        String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                        String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                    ));
                }
            }
        }
        let mut pos = 0;
        while let Some(h) = BatchHeader::parse(&read.records[pos..]) {
            offset = offset.max(h.last_offset() + 1);
            pos += h.total_bytes;
            if pos >= read.records.len() {
                break;
            }
        }
    }
    out
}

#[test]
fn markers_obey_the_flush_policy() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(
        dir.path(),
        LogConfig {
            flush_messages: 1,
            ..small_segments()
        },
        false,
    )
    .unwrap();
    let info = append(&log, txn(1, 0, 2));
    log.sync_to(info.last_offset + 1).unwrap();
    let marker = log.append_marker(1, 0, true, 0).unwrap();
    assert!(log.durable_offset() > marker, "synced before returning");
    append(&log, txn(1, 2, 1));
    let info = log.append_marker_unsynced(1, 0, false, 0).unwrap();
    assert!(info.needs_sync);
    assert_eq!(info.base_offset, info.last_offset);
    assert!(log.durable_offset() <= info.last_offset);
    log.sync_to(info.last_offset + 1).unwrap();
    assert!(log.durable_offset() > info.last_offset);
}

/// The log's own timers run on its clock: a manual clock that stands still never rolls by
/// `segment.ms` nor makes a flush due, and moving it does both (no sleeps).
#[test]
fn segment_ms_rolls_and_flush_ms_follow_the_log_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(1_000_000);
    let config = LogConfig {
        segment_ms: 60_000,
        flush_ms: 5_000,
        ..LogConfig::default()
    };
    let log =
        PartitionLog::open_with_files(dir.path(), config, false, OpenFiles::new(64), clock.clone())
            .unwrap();
    fill(&log, 2);
    let segments = || log.lock().local.segments().len();
    assert_eq!(segments(), 1);
    assert!(!log.flush_if_due(clock.now_ms()).unwrap(), "not due yet");
    clock.advance(5_000);
    assert!(
        log.flush_if_due(clock.now_ms()).unwrap(),
        "due after flush.ms"
    );
    assert_eq!(log.durable_offset(), log.log_end_offset());
    clock.advance(54_999);
    fill(&log, 1);
    assert_eq!(segments(), 1, "younger than segment.ms");
    clock.advance(1);
    fill(&log, 1);
    assert_eq!(
        segments(),
        2,
        "rolled once segment.ms passed on the log's clock"
    );
}

#[test]
fn a_log_restarted_further_on_starts_empty_there_and_survives_a_reopen() {
    for disk in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let open = |clean| {
            if disk {
                PartitionLog::open(dir.path(), small_segments(), clean).unwrap()
            } else {
                PartitionLog::in_memory(small_segments())
            }
        };
        let log = open(false);
        fill(&log, 20);
        log.advance_high_watermark(60);
        assert!(matches!(
            log.truncate_fully_and_start_at(59),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        log.truncate_fully_and_start_at(100).unwrap();
        assert_eq!(
            (
                log.log_start_offset(),
                log.log_end_offset(),
                log.high_watermark()
            ),
            (100, 100, 100)
        );
        assert_eq!(log.lock().local.segments().len(), 1);
        assert!(log.epoch_entries().is_empty());
        assert!(matches!(
            log.read(99, 100, true),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        let mut b = encode_batch(3, Compression::None, 5_000);
        let info = log.append(&mut b, None).unwrap();
        assert_eq!(info.base_offset, 100);
        assert_eq!(log.log_end_offset(), 103);
        if disk {
            let logs: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.ends_with(".log"))
                .collect();
            assert_eq!(logs, ["00000000000000000100.log"], "older segments deleted");
            log.close();
            drop(log);
            let log = open(true);
            assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 103));
            assert_eq!(&log.read(100, 1000, true).unwrap().records[..], &b[..]);
        }
    }
}

/// With followers (the high watermark moved by their fetches), a transaction holds the LSO
/// until its marker is below the high watermark, not only until the marker is appended
/// (Kafka's unreplicated transactions): a new leader lacking the marker would show it as
/// ongoing again after read_committed consumers read it.
#[test]
fn a_transaction_holds_the_lso_until_its_marker_is_committed() {
    let log = PartitionLog::in_memory(LogConfig::default());
    log.set_hw_follows_log_end(false);
    append(&log, txn(1, 0, 2)); // 0..=1
    append(&log, encode_batch(1, Compression::None, 1)); // 2
    assert_eq!(log.append_marker(1, 0, true, 0).unwrap(), 3);
    assert!(log.ongoing_transactions().is_empty());
    log.advance_high_watermark(3);
    assert_eq!(log.high_watermark(), 3);
    assert_eq!(
        log.last_stable_offset(),
        0,
        "the marker at 3 is not committed yet"
    );
    log.advance_high_watermark(4);
    assert_eq!(log.last_stable_offset(), 4, "committed with its marker");
    // A follower's truncation drops a marker it loses, and its transaction is ongoing again.
    append(&log, txn(2, 0, 1)); // 4
    assert_eq!(log.append_marker(2, 0, false, 0).unwrap(), 5);
    assert_eq!(log.last_stable_offset(), 4);
    log.truncate_to(5).unwrap();
    assert_eq!(log.ongoing_transactions(), vec![(2, 4)]);
    log.advance_high_watermark(5);
    assert_eq!(log.last_stable_offset(), 4);
}

#[test]
fn unreadable_stored_batches_are_skipped_not_trusted() {
    use crate::log::codec::Codec;
    use crate::log::validate::tests::{batch_around, record_claiming_2_31_headers};
    // A record claiming 2^31 headers passes the produce path's format check and is stored
    // as it came: reading the log's records (internal topics at load, ListOffsets by time)
    // must skip it instead of sizing a 2 GB table from it.
    let log = PartitionLog::in_memory(LogConfig::default());
    let mut first = encode_batch(2, Compression::None, 1000);
    log.append(&mut first, None).expect("append");
    let mut hostile = batch_around(&record_claiming_2_31_headers(), Codec::None, 1);
    // Its max timestamp 2000, for ListOffsets by time to land on it.
    hostile[35..43].copy_from_slice(&2000i64.to_be_bytes());
    let crc = crc32c::crc32c(&hostile[21..]);
    hostile[17..21].copy_from_slice(&crc.to_be_bytes());
    batch::validate_batches(&hostile, 1 << 20).expect("format-valid");
    log.append(&mut hostile, None).expect("append");
    let mut last = encode_batch(2, Compression::Gzip, 3000);
    log.append(&mut last, None).expect("append");
    let mut offsets = Vec::new();
    log.for_each_record(|r| offsets.push(r.offset))
        .expect("replay");
    assert_eq!(offsets, [0, 1, 3, 4]);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1000)));
    assert_eq!(log.offset_for_timestamp(3000).unwrap(), Some((3, 3000)));
    // A lookup landing on the hostile batch finds nothing there (logged), cheaply.
    assert_eq!(log.offset_for_timestamp(1500).unwrap(), None);
}

// ---- KIP-890 verification guards ----

/// A client's transactional batch through the guarded path.
fn client_append(
    log: &PartitionLog,
    mut batch: Vec<u8>,
    guard: Option<crate::log::producer_state::VerificationGuard>,
) -> Result<AppendInfo, LogError> {
    log.append_client(ClientBatches::Owned(&mut batch, None), guard)
}

fn not_verified(r: Result<AppendInfo, LogError>) -> bool {
    matches!(
        r,
        Err(LogError::Sequence(SequenceError::NotVerified { .. }))
    )
}

/// The fault checker's seed 494289372 (docs/design/bug-aborted-record-read-committed.md): a
/// produce verified by the coordinator, its answer late, lands after its own transaction's
/// abort marker. Without a guard the batch opened a new transaction that the producer's next
/// commit swallowed, and a read_committed consumer saw an aborted record. With the guard the
/// late batch is refused and the log shows read_committed nothing of that transaction.
#[test]
fn a_verified_batch_overtaken_by_its_abort_marker_is_refused() {
    let log = PartitionLog::in_memory(LogConfig::default());
    // Transaction 1 of producer 7: one batch, committed.
    let g = log.begin_verification(7).unwrap();
    assert!(g.is_some(), "no transaction open: a guard is taken");
    client_append(&log, txn(7, 0, 1), g).unwrap(); // 0
    assert_eq!(
        log.begin_verification(7).unwrap(),
        None,
        "its transaction is open here: nothing to verify"
    );
    assert_eq!(log.append_marker(7, 0, true, 0).unwrap(), 1);
    // Transaction 2: verification begins (the coordinator is asked)...
    let late = log.begin_verification(7).unwrap();
    assert!(late.is_some());
    // ...the transaction is aborted meanwhile: its marker lands first, indexing nothing.
    assert_eq!(log.append_marker(7, 0, false, 0).unwrap(), 2);
    assert!(log.aborted_transactions(0, i64::MAX).is_empty());
    // The verified batch, late: refused, nothing appended.
    assert!(not_verified(client_append(&log, txn(7, 1, 1), late)));
    assert_eq!(log.log_end_offset(), 3);
    assert!(log.ongoing_transactions().is_empty());
    // Transaction 3 verifies afresh (the retried batch is its own, the next sequence) and
    // commits: nothing of transaction 2 is in the log.
    let g3 = log.begin_verification(7).unwrap();
    assert!(g3.is_some() && g3 != late);
    client_append(&log, txn(7, 1, 1), g3).unwrap(); // 3
    assert_eq!(log.append_marker(7, 0, true, 0).unwrap(), 4);
    let rc = log
        .read_with_isolation(0, 1 << 20, true, Isolation::ReadCommitted)
        .unwrap();
    assert_eq!(batch_bases(&rc), vec![0, 1, 2, 3, 4]);
    assert!(rc.aborted_transactions.is_empty());
}

/// The narrower window (cause 2 of the same document): the produce saw its producer's
/// transaction open here and skipped verification, and the marker ended it before the
/// append. The batch may not open a transaction of its own.
#[test]
fn a_batch_that_skipped_verification_cannot_outlive_its_transaction() {
    let log = PartitionLog::in_memory(LogConfig::default());
    let g = log.begin_verification(3).unwrap();
    client_append(&log, txn(3, 0, 1), g).unwrap(); // 0
    let skipped = log.begin_verification(3).unwrap();
    assert_eq!(skipped, None);
    assert_eq!(log.append_marker(3, 0, false, 0).unwrap(), 1);
    assert!(not_verified(client_append(&log, txn(3, 1, 1), skipped)));
    // While the transaction is open, a batch without a guard is fine (it is already verified).
    let g = log.begin_verification(3).unwrap();
    client_append(&log, txn(3, 1, 1), g).unwrap(); // 2
    client_append(&log, txn(3, 2, 1), None).unwrap(); // 3
    assert_eq!(log.ongoing_transactions(), vec![(3, 2)]);
}

/// In-flight requests of one transaction share the pending guard; a guard from another
/// partition's log, or none at all, does not open a transaction; the broker's own
/// transactional writes (coordinators) need no guard; non-transactional batches are not
/// concerned.
#[test]
fn guards_are_shared_by_in_flight_batches_and_required_only_of_clients() {
    let log = PartitionLog::in_memory(LogConfig::default());
    let other = PartitionLog::in_memory(LogConfig::default());
    let a = log.begin_verification(5).unwrap();
    let b = log.begin_verification(5).unwrap();
    assert_eq!(
        a, b,
        "two batches of one transaction in flight share the guard"
    );
    let foreign = other.begin_verification(5).unwrap();
    assert_ne!(foreign, a);
    assert!(not_verified(client_append(&log, txn(5, 0, 1), foreign)));
    assert!(not_verified(client_append(&log, txn(5, 0, 1), None)));
    client_append(&log, txn(5, 0, 1), a).unwrap(); // 0
    client_append(&log, txn(5, 1, 1), b).unwrap(); // 1: the transaction is open
                                                   // A retry of an appended batch is answered with its offsets, guard or not.
    assert_eq!(
        client_append(&log, txn(5, 0, 1), None).unwrap().base_offset,
        0
    );
    // The broker's own transactional append (a group coordinator's offsets) is not guarded.
    append(&log, producer_batch(9, 0, -1, &[("k", "v")], true)); // 2
    assert_eq!(log.ongoing_transactions(), vec![(5, 0), (9, 2)]);
    // Idempotent and plain client batches need no guard.
    client_append(&log, producer_batch(11, 0, 0, &[("k", "v")], false), None).unwrap();
    client_append(&log, encode_batch(2, Compression::None, 1), None).unwrap();
}

/// Guards are memory only and expire with idle producers: a verification whose produce
/// never came does not stay forever.
#[test]
fn pending_verifications_expire() {
    let mut states = crate::log::producer_state::ProducerStates::default();
    let g = states.begin_verification(1, 1_000).unwrap();
    assert!(g.is_some());
    states.expire(1_000 + 10, 60_000);
    assert_eq!(
        states.begin_verification(1, 1_010).unwrap(),
        g,
        "still pending"
    );
    states.expire(1_000 + 60_000, 60_000);
    let after = states.begin_verification(1, 61_000).unwrap();
    assert!(after.is_some() && after != g, "expired: a fresh guard");
}
