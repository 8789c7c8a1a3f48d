//! Property test of the partition log against a simple model: random sequences of append,
//! read, roll (small segments), restart (clean and unclean), DeleteRecords, size retention and
//! compaction, on disk and in memory. After every step the log must hold exactly the model's
//! records (offsets, keys, values) between the model's start and end offsets.

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
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec((0u8..6, prop::bool::weighted(0.1)), 1..8), any::<bool>())
            .prop_map(|(r, gzip)| Op::Append(r, gzip)),
        1 => (0.0f64..1.0).prop_map(Op::DeleteRecords),
        1 => (200u64..3000).prop_map(Op::RetainBytes),
        2 => Just(Op::Compact),
        2 => any::<bool>().prop_map(|clean| Op::Restart { clean }),
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
