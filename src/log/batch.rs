//! Record batch (magic v2) header parsing, validation and in-place patching.
//!
//! Batches travel opaque: the broker reads only the fixed 61-byte header, checks the CRC32C,
//! and patches the base offset (and, for LogAppendTime topics, the max timestamp and CRC).
//! Records are decoded only where a feature truly needs them (ListOffsets by timestamp).

use bytes::Buf;

/// Size of the fixed v2 batch header, in bytes.
pub const HEADER_BYTES: usize = 61;
/// Bytes before the `batch_length` field's coverage begins (base offset + length).
pub const LOG_OVERHEAD_BYTES: usize = 12;

const OFF_LENGTH: usize = 8;
/// The partition leader epoch (bytes 12-15): outside the CRC, set by the leader that appends.
const OFF_PARTITION_LEADER_EPOCH: usize = 12;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_BASE_TIMESTAMP: usize = 27;
const OFF_MAX_TIMESTAMP: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_RECORDS_COUNT: usize = 57;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
/// Attributes bit 4: the batch belongs to a transaction (KIP-98).
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attributes bit 5: a control batch (transaction markers).
pub const ATTR_CONTROL: i16 = 0x20;

/// Why a batch was refused. Maps onto Kafka error codes in the produce handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Truncated, bad length or bad CRC: Kafka's CORRUPT_MESSAGE.
    #[error("corrupt batch: {0}")]
    Corrupt(&'static str),
    /// Structurally sound but semantically invalid: Kafka's INVALID_RECORD.
    #[error("invalid batch: {0}")]
    Invalid(&'static str),
    /// Magic other than 2: Kafka 4 accepts only the v2 format.
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// Larger than the configured `message_max_bytes`.
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

/// The fixed header of one batch, read without touching its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Size of the whole batch in bytes, including the 12-byte log overhead.
    pub total_bytes: usize,
    /// The epoch of the leader that appended the batch (-1: none yet, as producers send it).
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Reads the header at the start of `buf`. Returns `None` when `buf` holds less than a
    /// header or a declared length that cannot be a v2 batch.
    pub fn parse(buf: &[u8]) -> Option<BatchHeader> {
        if buf.len() < HEADER_BYTES {
            return None;
        }
        let batch_length = (&buf[OFF_LENGTH..]).get_i32();
        if batch_length < (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
            return None;
        }
        Some(BatchHeader {
            base_offset: (&buf[0..]).get_i64(),
            total_bytes: batch_length as usize + LOG_OVERHEAD_BYTES,
            partition_leader_epoch: (&buf[OFF_PARTITION_LEADER_EPOCH..]).get_i32(),
            attributes: (&buf[OFF_ATTRIBUTES..]).get_i16(),
            last_offset_delta: (&buf[OFF_LAST_OFFSET_DELTA..]).get_i32(),
            base_timestamp: (&buf[OFF_BASE_TIMESTAMP..]).get_i64(),
            max_timestamp: (&buf[OFF_MAX_TIMESTAMP..]).get_i64(),
            producer_id: (&buf[OFF_PRODUCER_ID..]).get_i64(),
            producer_epoch: (&buf[OFF_PRODUCER_EPOCH..]).get_i16(),
            base_sequence: (&buf[OFF_BASE_SEQUENCE..]).get_i32(),
            records_count: (&buf[OFF_RECORDS_COUNT..]).get_i32(),
        })
    }

    /// The last offset this batch covers (in i64, saturating: a stored or replicated batch's
    /// base offset and delta are not checked against each other, and must not overflow).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(self.last_offset_delta as i64)
    }

    /// The offset after this batch, `None` when it would pass `i64::MAX` (a hostile base
    /// offset or delta).
    pub fn next_offset(&self) -> Option<i64> {
        self.base_offset
            .checked_add(self.last_offset_delta as i64)?
            .checked_add(1)
    }

    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Part of a transaction (attributes bit 4): data of an ongoing transaction, or a marker.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Carries a producer id (idempotent or transactional producer, or a marker).
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// Written by an idempotent (or transactional) producer: carries a producer id and sequence.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0 && self.base_sequence >= 0 && !self.is_control()
    }

    /// Sequence number of the batch's last record (sequences wrap at `i32::MAX`).
    pub fn last_sequence(&self) -> i32 {
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        if last > i32::MAX as i64 {
            (last - i32::MAX as i64 - 1) as i32
        } else {
            last as i32
        }
    }
}

/// Summary of the batches of one produce payload, after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchesSummary {
    pub batch_count: usize,
    /// Sum of `last_offset_delta + 1` over all batches: how many offsets the append takes.
    pub offset_count: i64,
    pub max_timestamp: i64,
}

/// Validates every batch in `buf` (one produce partition payload): whole batches only, magic 2,
/// CRC32C, record count, size limit. Nothing is modified.
pub fn validate_batches(buf: &[u8], max_batch_bytes: usize) -> Result<BatchesSummary, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::Corrupt("empty record set"));
    }
    let mut pos = 0;
    let mut summary = BatchesSummary {
        batch_count: 0,
        offset_count: 0,
        max_timestamp: -1,
    };
    while pos < buf.len() {
        let rest = &buf[pos..];
        if rest.len() < LOG_OVERHEAD_BYTES + 5 {
            return Err(BatchError::Corrupt("truncated batch header"));
        }
        let magic = rest[OFF_MAGIC] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        let header = BatchHeader::parse(rest).ok_or(BatchError::Corrupt("bad batch length"))?;
        if header.total_bytes > rest.len() {
            return Err(BatchError::Corrupt("batch length exceeds the record set"));
        }
        if header.total_bytes > max_batch_bytes {
            return Err(BatchError::TooLarge {
                size: header.total_bytes,
                limit: max_batch_bytes,
            });
        }
        let batch = &rest[..header.total_bytes];
        let stored_crc = (&batch[OFF_CRC..]).get_u32();
        if crc32c::crc32c(&batch[OFF_ATTRIBUTES..]) != stored_crc {
            return Err(BatchError::Corrupt("CRC32C mismatch"));
        }
        if header.records_count <= 0 {
            return Err(BatchError::Invalid("batch has no records"));
        }
        // In i64: `last_offset_delta + 1` overflows an i32 at i32::MAX.
        if header.last_offset_delta < 0
            || header.records_count as i64 != header.last_offset_delta as i64 + 1
        {
            return Err(BatchError::Invalid(
                "record count does not match the last offset delta",
            ));
        }
        if header.compression() == 0 {
            check_uncompressed_records(&batch[HEADER_BYTES..], header.records_count)?;
        } else if header.compression() > 4 {
            return Err(BatchError::Invalid("unknown compression codec"));
        }
        summary.batch_count += 1;
        summary.offset_count += header.last_offset_delta as i64 + 1;
        summary.max_timestamp = summary.max_timestamp.max(header.max_timestamp);
        pos += header.total_bytes;
    }
    Ok(summary)
}

/// Walks the length prefixes of uncompressed records: their number must match the header and
/// they must fill the batch exactly.
fn check_uncompressed_records(mut records: &[u8], expected: i32) -> Result<(), BatchError> {
    let mut seen = 0;
    while !records.is_empty() {
        let (len, used) = read_varint(records).ok_or(BatchError::Corrupt("bad record length"))?;
        if len < 0 || used + len as usize > records.len() {
            return Err(BatchError::Corrupt("record overruns its batch"));
        }
        records = &records[used + len as usize..];
        seen += 1;
        if seen > expected {
            break;
        }
    }
    if seen != expected {
        return Err(BatchError::Invalid(
            "record count does not match the records in the batch",
        ));
    }
    Ok(())
}

/// Zig-zag varint (Kafka's record encoding). Returns the value and bytes consumed.
pub fn read_varint(buf: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, byte) in buf.iter().take(10).enumerate() {
        raw |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            let value = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            return Some((value, i + 1));
        }
    }
    None
}

/// Rewrites the base offset of every batch in `buf` so that they take consecutive offsets from
/// `first_offset`. Returns the next free offset. `buf` must have passed [`validate_batches`].
/// Sets every whole batch's partition leader epoch (bytes 12-15, outside the CRC).
pub fn stamp_leader_epoch(buf: &mut [u8], epoch: i32) {
    let mut pos = 0;
    while let Some(header) = BatchHeader::parse(&buf[pos..]) {
        let at = pos + OFF_PARTITION_LEADER_EPOCH;
        buf[at..at + 4].copy_from_slice(&epoch.to_be_bytes());
        pos += header.total_bytes;
        if pos >= buf.len() {
            break;
        }
    }
}

pub fn assign_offsets(buf: &mut [u8], first_offset: i64) -> i64 {
    let mut next = first_offset;
    let mut pos = 0;
    while let Some(header) = BatchHeader::parse(&buf[pos..]) {
        buf[pos..pos + 8].copy_from_slice(&next.to_be_bytes());
        next += header.last_offset_delta as i64 + 1;
        pos += header.total_bytes;
        if pos >= buf.len() {
            break;
        }
    }
    next
}

/// Stamps every batch in `buf` with LogAppendTime `now_ms` (attributes bit 3 and max timestamp)
/// and recomputes its CRC, as Kafka does for `message.timestamp.type=LogAppendTime` topics.
pub fn stamp_log_append_time(buf: &mut [u8], now_ms: i64) {
    let mut pos = 0;
    while let Some(header) = BatchHeader::parse(&buf[pos..]) {
        let batch = &mut buf[pos..pos + header.total_bytes];
        let attributes = header.attributes | ATTR_LOG_APPEND_TIME;
        batch[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        batch[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
        let crc = crc32c::crc32c(&batch[OFF_ATTRIBUTES..]);
        batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        pos += header.total_bytes;
        if pos >= buf.len() {
            break;
        }
    }
}

/// The `index`-th record of a batch the broker writes itself (internal topics): no producer,
/// not transactional, CreateTime; offset and sequence both `index`, so that
/// [`encode_records`] keeps the records in one batch.
pub fn plain_record(
    index: usize,
    key: Option<bytes::Bytes>,
    value: Option<bytes::Bytes>,
    timestamp: i64,
) -> kafka_protocol::records::Record {
    kafka_protocol::records::Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: kafka_protocol::records::TimestampType::Creation,
        offset: index as i64,
        sequence: index as i32,
        timestamp,
        key,
        value,
        headers: Default::default(),
    }
}

/// Encodes `records` as uncompressed v2 batches (what the broker writes itself: internal
/// topics' records). The encoder starts a new batch wherever offset - sequence changes.
pub fn encode_records(records: &[kafka_protocol::records::Record]) -> std::io::Result<Vec<u8>> {
    use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(buf.to_vec())
}

/// Checks one stored batch's CRC (used by recovery).
pub fn crc_ok(batch: &[u8]) -> bool {
    batch.len() >= HEADER_BYTES
        && crc32c::crc32c(&batch[OFF_ATTRIBUTES..]) == (&batch[OFF_CRC..]).get_u32()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Encodes `n` records with kafka-protocol's encoder, as a client would.
    pub fn encode_batch(n: usize, compression: Compression, ts: i64) -> Vec<u8> {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: ts + i as i64,
                key: Some(format!("k{i}").into()),
                value: Some(vec![i as u8; 10].into()),
                headers: Default::default(),
                delete_horizon: false,
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
        .expect("encoding test records");
        buf.to_vec()
    }

    #[test]
    fn valid_batches_pass_and_take_offsets() {
        let mut buf = encode_batch(3, Compression::None, 1000);
        buf.extend(encode_batch(2, Compression::Gzip, 2000));
        let s = validate_batches(&buf, 1 << 20).expect("valid");
        assert_eq!(s.batch_count, 2);
        assert_eq!(s.offset_count, 5);
        assert_eq!(assign_offsets(&mut buf, 40), 45);
        let first = BatchHeader::parse(&buf).expect("header");
        assert_eq!(first.base_offset, 40);
        let second = BatchHeader::parse(&buf[first.total_bytes..]).expect("header");
        assert_eq!(second.base_offset, 43);
        // The base offset lies outside the CRC: still valid after patching.
        validate_batches(&buf, 1 << 20).expect("still valid");
    }

    #[test]
    fn corruption_is_detected() {
        let good = encode_batch(3, Compression::None, 1000);
        let mut bad_crc = good.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xff;
        assert_eq!(
            validate_batches(&bad_crc, 1 << 20),
            Err(BatchError::Corrupt("CRC32C mismatch"))
        );
        assert!(matches!(
            validate_batches(&good[..good.len() - 3], 1 << 20),
            Err(BatchError::Corrupt(_))
        ));
        let mut magic1 = good.clone();
        magic1[OFF_MAGIC] = 1;
        assert_eq!(
            validate_batches(&magic1, 1 << 20),
            Err(BatchError::UnsupportedMagic(1))
        );
        assert!(matches!(
            validate_batches(&good, 10),
            Err(BatchError::TooLarge { .. })
        ));
        assert!(validate_batches(&[], 100).is_err());
    }

    #[test]
    fn record_count_must_match() {
        let mut buf = encode_batch(3, Compression::None, 1000);
        buf[OFF_RECORDS_COUNT..OFF_RECORDS_COUNT + 4].copy_from_slice(&4i32.to_be_bytes());
        buf[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4].copy_from_slice(&3i32.to_be_bytes());
        let crc = crc32c::crc32c(&buf[OFF_ATTRIBUTES..]);
        buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_batches(&buf, 1 << 20),
            Err(BatchError::Invalid(_))
        ));
    }

    #[test]
    fn log_append_time_keeps_crc_valid() {
        let mut buf = encode_batch(2, Compression::Lz4, 5);
        stamp_log_append_time(&mut buf, 123_456);
        validate_batches(&buf, 1 << 20).expect("valid after stamping");
        let h = BatchHeader::parse(&buf).expect("header");
        assert_eq!(h.max_timestamp, 123_456);
        assert_ne!(h.attributes & ATTR_LOG_APPEND_TIME, 0);
    }

    /// Rewrites header fields of a batch and recomputes its CRC.
    fn patch(buf: &mut [u8], at: usize, bytes: &[u8]) {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        let crc = crc32c::crc32c(&buf[OFF_ATTRIBUTES..]);
        buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn extreme_deltas_and_base_offsets_do_not_overflow() {
        // last_offset_delta = i32::MAX: `delta + 1` overflowed an i32 (a panic with overflow
        // checks, a wrapped comparison without).
        let mut buf = encode_batch(1, Compression::None, 1000);
        patch(&mut buf, OFF_LAST_OFFSET_DELTA, &i32::MAX.to_be_bytes());
        assert_eq!(
            validate_batches(&buf, 1 << 20),
            Err(BatchError::Invalid(
                "record count does not match the last offset delta"
            ))
        );
        patch(&mut buf, OFF_RECORDS_COUNT, &i32::MAX.to_be_bytes());
        assert!(validate_batches(&buf, 1 << 20).is_err());
        // A hostile base offset (outside the CRC): the last and next offsets stay defined.
        let mut h = BatchHeader::parse(&buf).expect("header");
        h.base_offset = i64::MAX - 1;
        assert_eq!(h.last_offset(), i64::MAX);
        assert_eq!(h.next_offset(), None);
        h.base_offset = i64::MAX;
        h.last_offset_delta = 0;
        assert_eq!(h.last_offset(), i64::MAX);
        assert_eq!(h.next_offset(), None);
        h.base_offset = i64::MIN;
        h.last_offset_delta = i32::MIN;
        assert_eq!(h.last_offset(), i64::MIN);
        h.base_offset = 10;
        h.last_offset_delta = 4;
        assert_eq!((h.last_offset(), h.next_offset()), (14, Some(15)));
    }

    #[test]
    fn varints_decode() {
        assert_eq!(read_varint(&[0x00]), Some((0, 1)));
        assert_eq!(read_varint(&[0x01]), Some((-1, 1)));
        assert_eq!(read_varint(&[0x02]), Some((1, 1)));
        assert_eq!(read_varint(&[0xac, 0x02]), Some((150, 2)));
        assert_eq!(read_varint(&[0x80]), None);
    }
}
