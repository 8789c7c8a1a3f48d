//! The log's share of transactions (KIP-98): control records (commit/abort markers) and the
//! aborted-transaction index of a segment.
//!
//! A transactional producer's batches carry attributes bit 4. The partition remembers the first
//! offset of each producer's ongoing transaction (`producer_state`); the last stable offset (LSO)
//! is the smallest of them, else the high watermark. The transaction coordinator ends a
//! transaction in a partition by appending a control batch (attributes bits 4 and 5) holding one
//! control record: key = (version i16 = 0, type i16: 0 = ABORT, 1 = COMMIT), value =
//! (version i16 = 0, coordinator epoch i32). An aborted transaction is recorded in the
//! transaction index of the segment holding its marker, so read_committed fetches can tell
//! consumers which producers' data to drop.
//!
//! `<base>.txnindex` has Kafka's layout: 34-byte big-endian entries `(version i16 = 0,
//! producer id i64, first offset i64, last offset i64, last stable offset i64)`, in marker
//! (last offset) order. The last stable offset of an entry is the LSO right after its abort:
//! once a lookup meets an entry whose LSO is at or beyond the end of the fetched range, every
//! transaction overlapping that range has been seen (Kafka's early stop).

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Buf;

use super::batch::{read_varint, BatchHeader, ATTR_CONTROL, ATTR_TRANSACTIONAL, HEADER_BYTES};
use super::open_files::{LazyFile, Mode, OpenFiles};

/// Control record types (Kafka's `ControlRecordType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
    /// Another control record (KRaft's leader change, snapshot header, ...): no transaction.
    Other(i16),
}

/// The control record of a control batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRecord {
    pub kind: ControlType,
    /// From a transaction marker's value; -1 when absent.
    pub coordinator_epoch: i32,
}

impl ControlRecord {
    /// `Some(commit)` for a transaction marker.
    pub fn marker(&self) -> Option<bool> {
        match self.kind {
            ControlType::Abort => Some(false),
            ControlType::Commit => Some(true),
            ControlType::Other(_) => None,
        }
    }
}

/// How many bytes after the batch header hold a marker's control record (with room to spare).
pub const CONTROL_RECORD_PREFIX_BYTES: usize = 64;

/// Reads the first control record of a control batch from the bytes that follow its header
/// (at least the first [`CONTROL_RECORD_PREFIX_BYTES`], or all of them). `None` when the batch
/// is not a control batch, is compressed or its first record cannot be read.
pub fn parse_control_record(header: &BatchHeader, after_header: &[u8]) -> Option<ControlRecord> {
    if !header.is_control() || header.compression() != 0 {
        return None;
    }
    let mut pos = 0usize;
    let varint = |pos: &mut usize| -> Option<i64> {
        let (v, n) = read_varint(after_header.get(*pos..)?)?;
        *pos += n;
        Some(v)
    };
    varint(&mut pos)?; // record length
    pos += 1; // record attributes
    varint(&mut pos)?; // timestamp delta
    varint(&mut pos)?; // offset delta
    let key_len = varint(&mut pos)?;
    if key_len < 4 {
        return None;
    }
    let mut key = after_header.get(pos..pos + key_len as usize)?;
    pos += key_len as usize;
    let _version = key.get_i16();
    let kind = match key.get_i16() {
        0 => ControlType::Abort,
        1 => ControlType::Commit,
        t => ControlType::Other(t),
    };
    let value_len = varint(&mut pos)?;
    let coordinator_epoch = match after_header.get(pos..pos + value_len.max(0) as usize) {
        Some(mut value) if value_len >= 6 => {
            value.advance(2); // version
            value.get_i32()
        }
        _ => -1,
    };
    Some(ControlRecord {
        kind,
        coordinator_epoch,
    })
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A transaction marker batch (base offset 0, to be patched by the append): attributes
/// transactional + control, no sequence, one control record with key (0, ABORT=0 | COMMIT=1)
/// and value (0, coordinator epoch), timestamps `timestamp_ms`. As Kafka writes them,
/// uncompressed.
pub fn encode_marker(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(16);
    body.push(0); // record attributes
    put_varint(&mut body, 0); // timestamp delta
    put_varint(&mut body, 0); // offset delta
    put_varint(&mut body, 4);
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&(commit as i16).to_be_bytes());
    put_varint(&mut body, 6);
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&coordinator_epoch.to_be_bytes());
    put_varint(&mut body, 0); // headers
    let mut record = Vec::with_capacity(body.len() + 2);
    put_varint(&mut record, body.len() as i64);
    record.extend_from_slice(&body);

    let mut out = Vec::with_capacity(HEADER_BYTES + record.len());
    out.extend_from_slice(&0i64.to_be_bytes()); // base offset
    out.extend_from_slice(&((HEADER_BYTES - 12 + record.len()) as i32).to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    out.push(2); // magic
    out.extend_from_slice(&[0; 4]); // crc, below
    out.extend_from_slice(&(ATTR_TRANSACTIONAL | ATTR_CONTROL).to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&producer_id.to_be_bytes());
    out.extend_from_slice(&producer_epoch.to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    out.extend_from_slice(&1i32.to_be_bytes()); // records count
    out.extend_from_slice(&record);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// One aborted transaction of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    /// The offset of the transaction's first batch in this partition.
    pub first_offset: i64,
    /// The offset of its ABORT marker.
    pub last_offset: i64,
    /// The partition's LSO right after the abort (see the module docs).
    pub last_stable_offset: i64,
}

/// Bytes of one `.txnindex` entry.
pub const TXN_ENTRY_BYTES: usize = 34;

impl AbortedTxn {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.first_offset.to_be_bytes());
        out.extend_from_slice(&self.last_offset.to_be_bytes());
        out.extend_from_slice(&self.last_stable_offset.to_be_bytes());
    }

    pub(crate) fn decode(mut b: &[u8]) -> Option<AbortedTxn> {
        if b.get_i16() != 0 {
            return None;
        }
        Some(AbortedTxn {
            producer_id: b.get_i64(),
            first_offset: b.get_i64(),
            last_offset: b.get_i64(),
            last_stable_offset: b.get_i64(),
        })
    }
}

/// The aborted transactions whose markers lie in one segment, in memory and mirrored to
/// `<base>.txnindex` (disk mode). The file is created with the first entry: a segment without
/// aborted transactions has none.
#[derive(Default)]
pub struct TxnIndex {
    entries: Vec<AbortedTxn>,
    /// Opened in append mode: after a rewrite (truncate) writes continue at the new end.
    file: Option<LazyFile>,
    /// Written since the last sync.
    dirty: AtomicBool,
}

impl TxnIndex {
    /// Reads `path` if it exists. The flag is false when the file is malformed (then the
    /// index is empty and must be rebuilt from the log); a missing file is an empty index
    /// (see [`TxnIndex::file_exists`] for callers that expected one).
    pub fn open(path: &Path, files: &Arc<OpenFiles>) -> io::Result<(TxnIndex, bool)> {
        let (bytes, exists) = match std::fs::read(path) {
            Ok(bytes) => (bytes, true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Vec::new(), false),
            Err(e) => return Err(e),
        };
        let entries: Option<Vec<AbortedTxn>> = bytes
            .chunks_exact(TXN_ENTRY_BYTES)
            .map(AbortedTxn::decode)
            .collect();
        let well_formed = bytes.len() % TXN_ENTRY_BYTES == 0
            && entries.as_ref().is_some_and(|e| {
                e.windows(2).all(|w| w[0].last_offset < w[1].last_offset)
                    && e.iter().all(|t| t.first_offset <= t.last_offset)
            });
        let mut index = TxnIndex {
            entries: if well_formed {
                entries.unwrap_or_default()
            } else {
                Vec::new()
            },
            file: Some(LazyFile::new(
                path.to_path_buf(),
                Mode::Append,
                exists,
                files,
            )),
            dirty: AtomicBool::new(false),
        };
        if !well_formed {
            index.rewrite()?;
        }
        Ok((index, well_formed))
    }

    /// Whether the index has a file on disk (memory mode: always).
    pub fn file_exists(&self) -> bool {
        self.file.as_ref().is_none_or(|f| f.exists())
    }

    pub fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    /// Whether every entry's marker lies in `[base_offset, next_offset)`.
    pub fn consistent_with(&self, base_offset: i64, next_offset: i64) -> bool {
        self.entries
            .iter()
            .all(|e| e.last_offset >= base_offset && e.last_offset < next_offset)
    }

    /// Records an abort (its marker is the newest in the segment).
    pub fn append(&mut self, entry: AbortedTxn) -> io::Result<()> {
        self.entries.push(entry);
        if let Some(file) = &self.file {
            let mut buf = Vec::with_capacity(TXN_ENTRY_BYTES);
            entry.encode(&mut buf);
            self.dirty.store(true, Ordering::Release);
            (&*file.get()?).write_all(&buf)?;
        }
        Ok(())
    }

    /// Replaces every entry (a rebuild); the file is rewritten only when they differ.
    pub fn replace(&mut self, entries: Vec<AbortedTxn>) -> io::Result<()> {
        let stored_len = match &self.file {
            Some(f) if f.exists() => Some(std::fs::metadata(f.path())?.len()),
            _ => None,
        };
        let unchanged = entries == self.entries
            && stored_len.unwrap_or(0) == (entries.len() * TXN_ENTRY_BYTES) as u64;
        self.entries = entries;
        if unchanged {
            return Ok(());
        }
        self.rewrite()
    }

    /// Writes the file anew from the entries (none created for no entries).
    fn rewrite(&mut self) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if self.entries.is_empty() && !file.exists() {
            return Ok(());
        }
        let f = file.get()?;
        self.dirty.store(true, Ordering::Release);
        f.set_len(0)?;
        let mut buf = Vec::with_capacity(self.entries.len() * TXN_ENTRY_BYTES);
        self.entries.iter().for_each(|e| e.encode(&mut buf));
        (&*f).write_all(&buf)
    }

    pub fn sync(&self) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let synced = file.get().and_then(|f| f.sync_data());
        if synced.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        synced
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
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn markers_encode_as_kafka_control_batches() {
        for commit in [false, true] {
            let bytes = encode_marker(42, 3, commit, 7, 1_000);
            assert!(super::super::batch::crc_ok(&bytes));
            super::super::batch::validate_batches(&bytes, 1 << 20).expect("valid batch");
            let h = BatchHeader::parse(&bytes).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            let c = parse_control_record(&h, &bytes[HEADER_BYTES..]).unwrap();
            assert_eq!(c.marker(), Some(commit));
            assert_eq!(c.coordinator_epoch, 7);
            // kafka-protocol's decoder reads it as a control record with Kafka's key/value.
            let mut b = bytes::Bytes::from(bytes);
            let set = RecordBatchDecoder::decode(&mut b).unwrap();
            let r = &set.records[0];
            assert!(r.control && r.transactional);
            assert_eq!(&r.key.as_ref().unwrap()[..], &[0, 0, 0, commit as u8]);
            assert_eq!(&r.value.as_ref().unwrap()[..], &[0, 0, 0, 0, 0, 7]);
        }
    }

    #[test]
    fn index_file_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let files = super::super::open_files::OpenFiles::shared_default();
        let (mut index, ok) = TxnIndex::open(&path, &files).unwrap();
        assert!(
            ok && !index.file_exists(),
            "a missing file is an empty index"
        );
        assert!(!path.exists(), "not created before the first entry");
        let e = |pid, first, last| AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: last + 1,
        };
        index.append(e(1, 0, 5)).unwrap();
        index.append(e(2, 3, 9)).unwrap();
        drop(index);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 68);
        let (index, ok) = TxnIndex::open(&path, &files).unwrap();
        assert!(ok);
        assert_eq!(index.entries(), &[e(1, 0, 5), e(2, 3, 9)]);
        assert!(index.consistent_with(0, 10));
        assert!(!index.consistent_with(0, 9));
        drop(index);
        let mut data = std::fs::read(&path).unwrap();
        data.push(1);
        std::fs::write(&path, &data).unwrap();
        let (index, ok) = TxnIndex::open(&path, &files).unwrap();
        assert!(!ok && index.entries().is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
