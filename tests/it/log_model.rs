//! Property test of the partition log against a simple model: random sequences of append,
//! read, roll (small segments), restart (clean and unclean), DeleteRecords, size retention,
//! compaction and truncation, on disk and in memory. After every step the log must hold exactly
//! the model's records (offsets, keys, values) between the model's start and end offsets.
//! A second test replicates a leader's log into a follower's with `append_as_follower`, with a
//! divergence cut by `truncate_to`, and checks the replicas byte for byte.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use ottla::log::{now_ms, LogConfig, PartitionLog};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append one batch; each entry is (key index, tombstone?).
    Append(Vec<(u8, bool)>, bool),
    /// DeleteRecords at this fraction of the live range.
    DeleteRecords(f64),
    /// Size retention keeping about this many bytes.
    RetainBytes(u64),
    Compact,
    Restart {
        clean: bool,
    },
    /// Truncation (a follower's) at this fraction of the live range.
    Truncate(f64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec((0u8..6, prop::bool::weighted(0.1)), 1..8), any::<bool>())
            .prop_map(|(r, gzip)| Op::Append(r, gzip)),
        1 => (0.0f64..1.0).prop_map(Op::DeleteRecords),
        1 => (200u64..3000).prop_map(Op::RetainBytes),
        2 => Just(Op::Compact),
        2 => any::<bool>().prop_map(|clean| Op::Restart { clean }),
        1 => (0.0f64..1.0).prop_map(Op::Truncate),
    ]
}

type Value = (Vec<u8>, Option<Vec<u8>>);

struct Model {
    records: BTreeMap<i64, Value>,
    start: i64,
    end: i64,
    next_value: u64,
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 400,
        segment_ms: i64::MAX,
        index_interval_bytes: 150,
        retention_ms: -1,
        retention_bytes: -1,
        cleanup_delete: true,
        cleanup_compact: true,
        // Tombstones stay: compaction is then exactly "drop what a later record superseded".
        delete_retention_ms: i64::MAX / 2,
        ..LogConfig::default()
    }
}

fn encode(base: i64, records: &[(i64, Value)], compression: Compression) -> Vec<u8> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (_, (k, v)))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: base + i as i64,
            sequence: i as i32,
            timestamp: 1_000 + base + i as i64,
            key: Some(Bytes::copy_from_slice(k)),
            value: v.as_ref().map(|v| Bytes::copy_from_slice(v)),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode");
    buf.to_vec()
}

/// Every record the log serves from its start offset, by reading batch after batch; the same
/// with small reads (`max_bytes` below a segment, so reads end at batch boundaries found with
/// the offset index and header walks) and with large ones.
fn read_all(log: &PartitionLog) -> BTreeMap<i64, Value> {
    let small = read_all_by(log, 230);
    let large = read_all_by(log, 1 << 16);
    assert_eq!(small, large, "small and large reads disagree");
    large
}

fn read_all_by(log: &PartitionLog, max_bytes: usize) -> BTreeMap<i64, Value> {
    let mut out = BTreeMap::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let read = log.read(offset, max_bytes, true).expect("read");
        if read.records.is_empty() {
            break;
        }
        let mut b = read.records.clone();
        let mut next = offset;
        for set in RecordBatchDecoder::decode_all(&mut b).expect("decode") {
            for r in set.records {
                if r.offset >= offset {
                    out.insert(
                        r.offset,
                        (
                            r.key.map(|k| k.to_vec()).unwrap_or_default(),
                            r.value.map(|v| v.to_vec()),
                        ),
                    );
                }
                next = next.max(r.offset + 1);
            }
        }
        // A compacted batch may end in a gap: continue after the batch's last offset.
        let mut b = read.records.clone();
        while b.len() >= 61 {
            let base = i64::from_be_bytes(b[..8].try_into().unwrap());
            let len = i32::from_be_bytes(b[8..12].try_into().unwrap()) as usize;
            let delta = i32::from_be_bytes(b[23..27].try_into().unwrap()) as i64;
            next = next.max(base + delta + 1);
            bytes::Buf::advance(&mut b, 12 + len);
        }
        offset = next.max(offset + 1);
    }
    out
}

fn run(ops: Vec<Op>, disk: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let open = |clean| {
        if disk {
            PartitionLog::open(dir.path(), config(), clean).expect("open")
        } else {
            PartitionLog::in_memory(config())
        }
    };
    let mut log = open(false);
    let mut model = Model {
        records: BTreeMap::new(),
        start: 0,
        end: 0,
        next_value: 0,
    };
    for op in ops {
        match op {
            Op::Append(entries, gzip) => {
                let records: Vec<(i64, Value)> = entries
                    .iter()
                    .enumerate()
                    .map(|(i, (k, tomb))| {
                        model.next_value += 1;
                        let value = (!tomb).then(|| format!("v{}", model.next_value).into_bytes());
                        (model.end + i as i64, (vec![b'k', *k], value))
                    })
                    .collect();
                let codec = if gzip {
                    Compression::Gzip
                } else {
                    Compression::None
                };
                let mut batch = encode(0, &records, codec);
                // Both append paths: patched in place, and shared (base offsets written in
                // front of each batch by a vectored write).
                let info = if entries.len() % 2 == 0 {
                    log.append(&mut batch, None).expect("append")
                } else {
                    log.append_shared(&batch).expect("append shared")
                };
                prop_assert_eq!(info.base_offset, model.end);
                for (o, v) in records {
                    model.records.insert(o, v);
                }
                model.end += entries.len() as i64;
            }
            Op::DeleteRecords(f) => {
                let target = model.start + ((model.end - model.start) as f64 * f) as i64;
                let start = log.delete_records(target).expect("delete records");
                model.start = model.start.max(target);
                prop_assert_eq!(start, model.start);
                model.records = model.records.split_off(&model.start);
            }
            Op::RetainBytes(bytes) => {
                log.set_config(LogConfig {
                    retention_bytes: bytes as i64,
                    ..config()
                });
                let report = log.enforce_retention(now_ms()).expect("retention");
                log.set_config(config());
                prop_assert!(report.log_start_offset >= model.start);
                prop_assert!(report.log_start_offset <= model.end);
                model.start = report.log_start_offset;
                model.records = model.records.split_off(&model.start);
            }
            Op::Compact => {
                log.compact(now_ms()).expect("compact");
                let after = read_all(&log);
                // Nothing invented or moved; the newest record of every key survives; anything
                // dropped was superseded by a later record with the same key.
                let mut newest: BTreeMap<&Vec<u8>, i64> = BTreeMap::new();
                for (o, (k, _)) in &model.records {
                    newest.insert(k, *o);
                }
                for (o, v) in &after {
                    prop_assert_eq!(Some(v), model.records.get(o), "offset {} changed", o);
                }
                for (o, (k, _)) in &model.records {
                    if !after.contains_key(o) {
                        prop_assert!(newest[k] > *o, "offset {} dropped but newest of its key", o);
                    }
                }
                model.records = after;
            }
            Op::Truncate(f) => {
                let target = model.start + ((model.end - model.start) as f64 * f) as i64;
                if target >= model.end {
                    continue;
                }
                // Every batch that ends at or after the target goes (the one holding it too):
                // the log then ends after the last batch wholly below it.
                let mut below_end = None;
                let mut offset = model.start;
                while offset < model.end {
                    let read = log.read(offset, 1, true).expect("read");
                    if read.records.is_empty() {
                        break;
                    }
                    let b = &read.records;
                    let base = i64::from_be_bytes(b[..8].try_into().unwrap());
                    let last = base + i32::from_be_bytes(b[23..27].try_into().unwrap()) as i64;
                    if last >= target {
                        break;
                    }
                    below_end = Some(last + 1);
                    offset = last + 1;
                }
                let end = log.truncate_to(target).expect("truncate");
                // At most the target; never below the end of a batch wholly below it (an empty
                // stretch left by compaction may remain: the segment it is in starts later).
                prop_assert!(end <= target);
                if let Some(kept_to) = below_end {
                    prop_assert!(end >= kept_to, "end {} cut a batch below {}", end, kept_to);
                }
                prop_assert!(log.high_watermark() <= end);
                model.end = end;
                model.start = model.start.min(end);
                model.records.split_off(&end);
            }
            Op::Restart { clean } => {
                if !disk {
                    continue;
                }
                if clean {
                    log.sync(true).expect("sync");
                }
                drop(log);
                log = open(clean);
            }
        }
        prop_assert_eq!(log.log_start_offset(), model.start);
        prop_assert_eq!(log.log_end_offset(), model.end);
        prop_assert_eq!(&read_all(&log), &model.records);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn memory_log_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, false)?;
    }

    #[test]
    fn disk_log_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, true)?;
    }
}

/// A leader log and a follower fed with `append_as_follower` from what the leader serves; a
/// leader change (epoch 1) with a divergent tail on the old leader, which truncates to where
/// the new leader's epoch starts and catches up. Replicas end byte-identical, batch by batch,
/// with the same leader-epoch caches.
#[test]
fn followers_replicate_byte_for_byte_and_truncate_a_divergent_tail() {
    let dir = tempfile::tempdir().unwrap();
    let leader = PartitionLog::open(&dir.path().join("leader"), config(), false).unwrap();
    let follower = PartitionLog::open(&dir.path().join("follower"), config(), false).unwrap();
    let batch_of = |n: i64| -> Vec<u8> {
        let records: Vec<(i64, Value)> = (0..3)
            .map(|i| {
                (
                    i,
                    (vec![b'k', i as u8], Some(format!("v{n}-{i}").into_bytes())),
                )
            })
            .collect();
        encode(0, &records, Compression::None)
    };
    let replicate = |from: &PartitionLog, to: &PartitionLog| loop {
        let offset = to.log_end_offset();
        if offset >= from.log_end_offset() {
            break;
        }
        let read = from.read(offset, 1 << 16, true).expect("leader read");
        to.append_as_follower(&read.records)
            .expect("follower append");
    };
    // Epoch 0: the leader appends, the follower follows.
    for n in 0..20 {
        leader.append_shared(&batch_of(n)).unwrap();
    }
    replicate(&leader, &follower);
    assert_eq!(read_all(&follower), read_all(&leader));
    // The old leader (now `leader`) writes a tail the follower never gets; the follower
    // becomes leader at epoch 1 and writes its own.
    for n in 20..25 {
        leader.append_shared(&batch_of(n)).unwrap();
    }
    follower.set_leader_epoch(1);
    let epoch1_start = follower.log_end_offset();
    for n in 100..110 {
        follower.append_shared(&batch_of(n)).unwrap();
    }
    assert_eq!(
        follower.end_offset_for_epoch(0),
        (0, epoch1_start),
        "epoch 0 ends where epoch 1 starts"
    );
    // The old leader asks where its last epoch (0) ends on the new leader, truncates there.
    let (epoch, end) = follower.end_offset_for_epoch(0);
    assert_eq!(epoch, 0);
    assert_eq!(leader.truncate_to(end).unwrap(), end);
    replicate(&follower, &leader);
    assert_eq!(read_all(&leader), read_all(&follower));
    assert_eq!(leader.epoch_entries(), follower.epoch_entries());
    assert_eq!(leader.epoch_entries().len(), 2);
    // Byte for byte: every batch the two serve is the same.
    let mut offset = 0;
    while offset < follower.log_end_offset() {
        let a = leader.read(offset, 1, true).unwrap().records;
        let b = follower.read(offset, 1, true).unwrap().records;
        assert_eq!(a, b, "batch at {offset}");
        let delta = i32::from_be_bytes(a[23..27].try_into().unwrap()) as i64;
        let epoch = i32::from_be_bytes(a[12..16].try_into().unwrap());
        assert_eq!(epoch, if offset < epoch1_start { 0 } else { 1 });
        offset += delta + 1;
    }
    // A batch that does not continue the log is refused.
    let stale = leader.read(0, 1, true).unwrap().records;
    assert!(leader.append_as_follower(&stale).is_err());
    // Both survive an unclean restart with their epochs.
    let epochs = follower.epoch_entries();
    drop(follower);
    let follower = PartitionLog::open(&dir.path().join("follower"), config(), false).unwrap();
    assert_eq!(follower.epoch_entries(), epochs);
    assert_eq!(read_all(&follower), read_all(&leader));
}
