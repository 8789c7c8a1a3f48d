//! Log compaction (`cleanup.policy=compact`): keep the newest record of every key. Kafka's
//! `LogCleaner` (its `Cleaner` pass and the segment swap); the pass over one partition is
//! [`PartitionLog::compact`], run by the broker's cleaner timer.
//!
//! A pass over one partition:
//! 1. the cleanable range is every non-active segment whose newest record is older than
//!    `min.compaction.lag.ms`; the active segment is never touched;
//! 2. an offset map (key -> newest offset) is built over that range;
//! 3. each segment is rewritten keeping a record only if it is the newest for its key;
//!    tombstones (null value) are kept until their segment is `delete.retention.ms` old; records
//!    without a key and control batches are kept; offsets never change (a batch keeps its base
//!    offset and last offset delta, its records their offset deltas);
//! 4. the rewrite goes to `<base>.log.cleaned`, is fsynced, renamed to `<base>.log.swap`, then
//!    renamed over `<base>.log`. A crash before the `.swap` rename leaves the old segment (the
//!    `.cleaned` file is deleted at start); after it, the start completes the swap.
//!
//! A batch that loses records is rewritten uncompressed (its records are copied byte for byte;
//! clients read mixed codecs within a partition). A batch that keeps every record is copied as
//! stored; one that keeps none is dropped.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use kafka_protocol::compression::{self as codec, Decompressor};

use super::batch::{read_varint, BatchHeader, HEADER_BYTES};
use super::partition::{LogError, PartitionLog};
use super::segment::{Segment, Window};
use super::store::{FileStore, SegmentStore};

/// Suffix of a finished rewrite not yet swapped in.
pub const CLEANED_SUFFIX: &str = "log.cleaned";
/// Suffix of a rewrite whose swap was interrupted.
pub const SWAP_SUFFIX: &str = "log.swap";

/// Key -> offset of its newest record in the cleanable range.
pub type OffsetMap = HashMap<Bytes, i64>;

/// One record inside a batch, as stored.
struct RawRecord {
    offset_delta: i64,
    key: Option<Bytes>,
    tombstone: bool,
    /// The record including its length prefix.
    bytes: Bytes,
}

/// Deletes half-written rewrites and completes interrupted swaps in a partition directory.
pub fn finish_interrupted_swaps(dir: &Path) -> io::Result<()> {
    let mut changed = false;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(base) = name.strip_suffix(&format!(".{CLEANED_SUFFIX}")) {
            tracing::warn!(dir = %dir.display(), segment = base, "removing an unfinished compaction rewrite");
            std::fs::remove_file(&path)?;
            changed = true;
        } else if let Some(base) = name.strip_suffix(&format!(".{SWAP_SUFFIX}")) {
            tracing::warn!(dir = %dir.display(), segment = base, "completing an interrupted compaction swap");
            std::fs::rename(&path, dir.join(format!("{base}.log")))?;
            for ext in ["index", "timeindex"] {
                match std::fs::remove_file(dir.join(format!("{base}.{ext}"))) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            changed = true;
        }
    }
    if changed {
        super::fsutil::sync_dir(dir)?;
    }
    Ok(())
}

/// The uncompressed records section of a stored batch.
fn records_section(batch: &Bytes, header: &BatchHeader) -> io::Result<Bytes> {
    let mut body = batch.slice(HEADER_BYTES..header.total_bytes);
    let bad = |e: anyhow::Error| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let take = |b: &mut Bytes| Ok(b.copy_to_bytes(b.remaining()));
    match header.compression() {
        0 => Ok(body),
        1 => codec::Gzip::decompress(&mut body, take).map_err(bad),
        2 => codec::Snappy::decompress(&mut body, take).map_err(bad),
        3 => codec::Lz4::decompress(&mut body, take).map_err(bad),
        4 => codec::Zstd::decompress(&mut body, take).map_err(bad),
        c => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown compression codec {c}"),
        )),
    }
}

/// Splits a records section into records, reading what compaction needs of each.
fn walk(section: &Bytes) -> io::Result<Vec<RawRecord>> {
    let corrupt = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "malformed record in a stored batch",
        )
    };
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < section.len() {
        let (len, used) = read_varint(&section[pos..]).ok_or_else(corrupt)?;
        let end = pos + used + usize::try_from(len).map_err(|_| corrupt())?;
        if end > section.len() {
            return Err(corrupt());
        }
        let body = &section[pos + used..end];
        // attributes (1 byte), timestamp delta, offset delta, key length, key, value length
        let mut at = 1usize;
        let next = |at: &mut usize| -> io::Result<i64> {
            let (v, n) = read_varint(body.get(*at..).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
            *at += n;
            Ok(v)
        };
        next(&mut at)?; // timestamp delta
        let offset_delta = next(&mut at)?;
        let key_len = next(&mut at)?;
        let key = if key_len < 0 {
            None
        } else {
            let k = section.slice(pos + used + at..pos + used + at + key_len as usize);
            at += key_len as usize;
            Some(k)
        };
        let value_len = next(&mut at)?;
        out.push(RawRecord {
            offset_delta,
            key,
            tombstone: value_len < 0,
            bytes: section.slice(pos..end),
        });
        pos = end;
    }
    Ok(out)
}

/// Adds the keys of one stored batch to `map` (later offsets win).
pub fn collect_keys(batch: &Bytes, header: &BatchHeader, map: &mut OffsetMap) -> io::Result<()> {
    if header.is_control() {
        return Ok(());
    }
    for r in walk(&records_section(batch, header)?)? {
        if let Some(key) = r.key {
            map.insert(key, header.base_offset + r.offset_delta);
        }
    }
    Ok(())
}

/// What to do with the records of one batch.
pub struct Retain<'a> {
    pub map: &'a OffsetMap,
    /// Whether tombstones in this segment are still within `delete.retention.ms`.
    pub keep_tombstones: bool,
}

/// Filters one stored batch. `None`: nothing is kept. Otherwise the batch to store, either
/// `batch` itself (everything kept) or a rewritten, uncompressed batch with the same base offset
/// and last offset delta.
pub fn filter_batch(
    batch: &Bytes,
    header: &BatchHeader,
    retain: &Retain<'_>,
) -> io::Result<Option<Bytes>> {
    if header.is_control() {
        return Ok(Some(batch.clone()));
    }
    let records = walk(&records_section(batch, header)?)?;
    let kept: Vec<&RawRecord> = records
        .iter()
        .filter(|r| match &r.key {
            None => true,
            Some(key) => {
                let newest = retain.map.get(key).copied();
                let offset = header.base_offset + r.offset_delta;
                newest.is_none_or(|n| n <= offset) && (!r.tombstone || retain.keep_tombstones)
            }
        })
        .collect();
    if kept.len() == records.len() {
        return Ok(Some(batch.clone()));
    }
    if kept.is_empty() {
        return Ok(None);
    }
    let body_len: usize = kept.iter().map(|r| r.bytes.len()).sum();
    let mut out = Vec::with_capacity(HEADER_BYTES + body_len);
    out.extend_from_slice(&batch[..HEADER_BYTES]);
    for r in &kept {
        out.extend_from_slice(&r.bytes);
    }
    let batch_length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    // attributes: clear the compression bits
    let attributes = header.attributes & !0x07;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    out[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(Some(Bytes::from(out)))
}

/// What a compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionReport {
    pub segments_cleaned: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl PartitionLog {
    /// Compacts the log (`cleanup.policy` with `compact`; see the module's steps): rewrites
    /// every non-active segment older than `min.compaction.lag.ms` keeping the newest record
    /// per key. Runs only when segments rolled since the last pass. Reads and appends go on
    /// meanwhile; each rewritten segment is swapped in under the lock.
    pub fn compact(&self, now: i64) -> Result<CompactionReport, LogError> {
        let (config, candidates, aborted) = {
            let state = self.lock();
            if self.check_usable().is_err() {
                return Ok(CompactionReport::default());
            }
            let config = state.config;
            // Never past the LSO: the data of an ongoing transaction may still be aborted.
            let lso = state.last_stable_offset();
            let segments = state.local.segments();
            let cleanable: Vec<(i64, Arc<dyn SegmentStore>, u64, i64)> = segments
                .windows(2)
                .take_while(|w| {
                    now - w[0].newest_ms() >= config.min_compaction_lag_ms
                        && w[1].base_offset() <= lso
                })
                .map(|w| {
                    let s = &w[0];
                    (
                        s.base_offset(),
                        s.store().clone(),
                        s.size_bytes(),
                        s.newest_ms(),
                    )
                })
                .collect();
            let end = segments.get(cleanable.len()).map_or(0, |s| s.base_offset());
            if !config.cleanup_compact || cleanable.is_empty() || end <= state.compacted_upto {
                return Ok(CompactionReport::default());
            }
            // Aborted transactions with data in the range: their records neither supersede
            // others nor survive (as Kafka's cleaner).
            let mut aborted: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
            for e in segments.iter().flat_map(|s| s.txn_index().entries()) {
                if e.first_offset < end {
                    aborted
                        .entry(e.producer_id)
                        .or_default()
                        .push((e.first_offset, e.last_offset));
                }
            }
            (config, cleanable, aborted)
        };
        let is_aborted = |h: &BatchHeader| {
            h.is_transactional()
                && !h.is_control()
                && aborted.get(&h.producer_id).is_some_and(|ranges| {
                    ranges
                        .iter()
                        .any(|&(first, last)| first <= h.base_offset && h.base_offset <= last)
                })
        };
        let mut map = OffsetMap::new();
        for (_, store, size, _) in &candidates {
            for_each_batch(store.as_ref(), *size, |bytes, h| {
                if is_aborted(h) {
                    return Ok(());
                }
                collect_keys(bytes, h, &mut map)
            })?;
        }
        let mut report = CompactionReport::default();
        for (base, store, size, newest) in &candidates {
            let retain = Retain {
                map: &map,
                keep_tombstones: now - newest < config.delete_retention_ms,
            };
            let mut out = Vec::with_capacity(*size as usize);
            for_each_batch(store.as_ref(), *size, |bytes, h| {
                if is_aborted(h) {
                    return Ok(());
                }
                if let Some(kept) = filter_batch(bytes, h, &retain)? {
                    out.extend_from_slice(&kept);
                }
                Ok(())
            })?;
            report.bytes_before += size;
            report.bytes_after += out.len() as u64;
            if out.len() as u64 == *size {
                continue; // nothing removed
            }
            self.swap_in_cleaned(*base, *size, &out)?;
            report.segments_cleaned += 1;
        }
        let mut state = self.lock();
        state.compacted_upto = candidates
            .last()
            .and_then(|(base, ..)| {
                state
                    .local
                    .segments()
                    .iter()
                    .find(|s| s.base_offset() > *base)
                    .map(|s| s.base_offset())
            })
            .unwrap_or(state.compacted_upto);
        Ok(report)
    }

    /// Replaces segment `base` (if it is still there, unchanged at `size` bytes) with the
    /// cleaned bytes, crash-safely on disk (step 4 of the module's).
    fn swap_in_cleaned(&self, base: i64, size: u64, cleaned: &[u8]) -> Result<(), LogError> {
        let cleaned_path = self
            .dir
            .as_ref()
            .map(|d| d.join(format!("{base:020}.{CLEANED_SUFFIX}")));
        if self.is_closed() {
            return Err(LogError::Closed);
        }
        if let Some(path) = &cleaned_path {
            let (store, _) = FileStore::open(path, &self.files)?;
            store.write_at(0, cleaned)?;
            store.sync()?;
            store.detach();
        }
        let mut state = self.lock();
        if self.is_closed() {
            // Deleted meanwhile: the directory may be a recreated topic's.
            if let Some(path) = &cleaned_path {
                let _ = std::fs::remove_file(path);
            }
            return Err(LogError::Closed);
        }
        let Some(i) = state
            .local
            .segments()
            .iter()
            .position(|s| s.base_offset() == base && s.size_bytes() == size)
        else {
            // Deleted (retention, DeleteRecords) while cleaning: drop the rewrite.
            if let Some(path) = &cleaned_path {
                let _ = std::fs::remove_file(path);
            }
            return Ok(());
        };
        if i + 1 == state.local.segments().len() {
            return Ok(()); // never the active segment
        }
        if cleaned.is_empty() && i > 0 {
            // Every record was superseded: the segment goes (reads skip the offset gap). The
            // first segment stays, empty, so that its base still marks the log start.
            let old = state.local.remove(i);
            drop(state);
            if let Some(path) = &cleaned_path {
                let _ = std::fs::remove_file(path);
            }
            old.delete_files()?;
            return Ok(());
        }
        let interval = state.config.index_interval_bytes;
        let old = &mut state.local.segments_mut()[i];
        let created = old.created_ms();
        let mut segment = match (&self.dir, &cleaned_path) {
            (Some(dir), Some(path)) => {
                // Readers holding the old store keep reading the old file; nothing of the old
                // segment touches the names the rewrite takes.
                old.detach_files()?;
                let swap = dir.join(format!("{base:020}.{SWAP_SUFFIX}"));
                std::fs::rename(path, &swap)?;
                super::fsutil::sync_dir(dir)?;
                std::fs::rename(&swap, dir.join(format!("{base:020}.log")))?;
                for ext in ["index", "timeindex"] {
                    let _ = std::fs::remove_file(super::segment::segment_path(dir, base, ext));
                }
                super::fsutil::sync_dir(dir)?;
                Segment::open_on_disk(dir, base, created, &self.files)?
            }
            _ => {
                let s = Segment::new_in_memory(base, created);
                s.store().write_at(0, cleaned)?;
                s
            }
        };
        segment.recover(false, interval, &mut |_, _| {})?;
        // The markers stayed: so do the aborted transactions they index.
        *segment.txn_index_mut() = std::mem::take(old.txn_index_mut());
        *old = segment;
        Ok(())
    }
}

/// Calls `f` with every stored batch of a segment's first `size` bytes.
fn for_each_batch(
    store: &dyn SegmentStore,
    size: u64,
    mut f: impl FnMut(&Bytes, &BatchHeader) -> io::Result<()>,
) -> io::Result<()> {
    let mut window = Window::default();
    let mut pos = 0u64;
    while let Some(h) = window.header(store, pos, size)? {
        if pos + h.total_bytes as u64 > size {
            break;
        }
        let bytes = window.slice(store, pos, h.total_bytes, size)?;
        f(&bytes, &h)?;
        pos += h.total_bytes as u64;
    }
    Ok(())
}

/// Builders shared by tests of the log.
#[cfg(test)]
pub mod tests_support {
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// One uncompressed batch of keyed records (value `None` = tombstone), base offset 0.
    pub fn keyed(kvs: &[(&str, Option<&str>)]) -> Vec<u8> {
        let records: Vec<Record> = kvs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder starts a new batch unless offset - sequence stays constant.
                sequence: i as i32,
                timestamp: 1000 + i as i64,
                key: Some(bytes::Bytes::copy_from_slice(k.as_bytes())),
                value: v.map(|v| bytes::Bytes::copy_from_slice(v.as_bytes())),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    pub fn keyed_batch(base: i64, kvs: &[(&str, Option<&str>)], compression: Compression) -> Bytes {
        let records: Vec<Record> = kvs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                // The encoder starts a new batch unless offset - sequence stays constant.
                sequence: i as i32,
                timestamp: 1000 + i as i64,
                key: Some(Bytes::copy_from_slice(k.as_bytes())),
                value: v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
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
        .unwrap();
        buf.freeze()
    }

    fn kept(batch: &Bytes) -> Vec<(i64, String, Option<String>)> {
        let mut b = batch.clone();
        RecordBatchDecoder::decode_all(&mut b)
            .unwrap()
            .into_iter()
            .flat_map(|s| s.records)
            .map(|r| {
                (
                    r.offset,
                    String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                    r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                )
            })
            .collect()
    }

    #[test]
    fn newest_per_key_survives_with_offsets_kept() {
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let batch = keyed_batch(
                10,
                &[
                    ("a", Some("1")),
                    ("b", Some("2")),
                    ("a", Some("3")),
                    ("c", None),
                ],
                compression,
            );
            let header = BatchHeader::parse(&batch).unwrap();
            let mut map = OffsetMap::new();
            collect_keys(&batch, &header, &mut map).unwrap();
            assert_eq!(map[&Bytes::from_static(b"a")], 12);
            let keep = |keep_tombstones| {
                filter_batch(
                    &batch,
                    &header,
                    &Retain {
                        map: &map,
                        keep_tombstones,
                    },
                )
                .unwrap()
                .unwrap()
            };
            let out = keep(true);
            assert!(crate::log::batch::crc_ok(&out));
            let h = BatchHeader::parse(&out).unwrap();
            assert_eq!(
                (h.base_offset, h.last_offset()),
                (10, 13),
                "offsets preserved"
            );
            assert_eq!(
                kept(&out),
                vec![
                    (11, "b".into(), Some("2".into())),
                    (12, "a".into(), Some("3".into())),
                    (13, "c".into(), None)
                ]
            );
            let out = keep(false);
            assert_eq!(kept(&out).len(), 2, "an expired tombstone goes");
        }
    }

    #[test]
    fn superseded_batch_is_dropped_and_untouched_batch_copied() {
        let old = keyed_batch(0, &[("a", Some("1"))], Compression::None);
        let new = keyed_batch(1, &[("a", Some("2"))], Compression::None);
        let (ho, hn) = (
            BatchHeader::parse(&old).unwrap(),
            BatchHeader::parse(&new).unwrap(),
        );
        let mut map = OffsetMap::new();
        collect_keys(&old, &ho, &mut map).unwrap();
        collect_keys(&new, &hn, &mut map).unwrap();
        let r = Retain {
            map: &map,
            keep_tombstones: true,
        };
        assert!(filter_batch(&old, &ho, &r).unwrap().is_none());
        assert_eq!(filter_batch(&new, &hn, &r).unwrap().unwrap(), new);
    }
}
