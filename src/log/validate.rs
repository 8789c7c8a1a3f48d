//! Record-level validation and recompression of a produced batch: the part of Kafka's
//! `LogValidator` that looks inside the batch, after its format was checked
//! ([`super::batch::validate_batches`]).
//!
//! - Compacted topics refuse records without a key (INVALID_RECORD).
//! - CreateTime topics refuse records whose timestamp is more than
//!   `message.timestamp.before.max.ms` behind or `message.timestamp.after.max.ms` ahead of the
//!   broker's clock (INVALID_TIMESTAMP, KIP-937); a batch claiming LogAppendTime with no
//!   timestamp, or sent to a LogAppendTime topic, is refused the same way.
//! - The culprits are listed by index (KIP-467 `record_errors`), so that a client fails those
//!   records and not the others.
//! - A topic whose `compression.type` names a codec stores every batch with it: a batch with
//!   another codec is decompressed and recompressed at the topic's level (new length,
//!   attributes, max timestamp and CRC; offset deltas, timestamps, keys, values, headers,
//!   producer id/epoch/sequence and the transactional bit kept, the records byte for byte).
//!   As in Kafka, a compressed batch whose inner offsets do not count 0, 1, 2… is rebuilt with
//!   those offsets rather than refused.
//!
//! Only when one of these needs the records are they read: a batch on a `producer` topic
//! without key or timestamp rules is not decompressed, and is stored as it came (zero copy).
//! (Kafka reads every compressed batch's records to check its inner offsets; ottla checks them
//! only when it reads the records anyway.) Decompression is bounded: by `max.message.bytes`
//! when the batch will be stored uncompressed, else by `max_decompressed_batch_bytes`.

use std::borrow::Cow;

use bytes::Bytes;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record, TimestampType};

use super::batch::{read_varint, BatchHeader, ATTR_CONTROL, HEADER_BYTES};
use super::codec::{self, Codec, DecompressError};

const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const OFF_LENGTH: usize = 8;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_MAX_TIMESTAMP: usize = 35;

/// Compression levels of a topic (`compression.<codec>.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    pub gzip: i32,
    pub lz4: i32,
    pub zstd: i32,
}

impl Default for Levels {
    fn default() -> Self {
        Levels {
            gzip: codec::levels::GZIP_DEFAULT,
            lz4: codec::levels::LZ4_DEFAULT,
            zstd: codec::levels::ZSTD_DEFAULT,
        }
    }
}

impl Levels {
    pub fn of(&self, c: Codec) -> i32 {
        match c {
            Codec::Gzip => self.gzip,
            Codec::Lz4 => self.lz4,
            Codec::Zstd => self.zstd,
            Codec::None | Codec::Snappy => 0,
        }
    }
}

/// A partition named as Kafka's messages name it: `topic-partition`.
#[derive(Debug, Clone, Copy)]
pub struct TopicPartition<'a> {
    pub topic: &'a str,
    pub partition: i32,
}

impl std::fmt::Display for TopicPartition<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// What a topic asks of the records of a produced batch.
#[derive(Debug, Clone)]
pub struct RecordPolicy<'a> {
    /// The partition, for messages (formatted only when a batch is refused).
    pub topic_partition: TopicPartition<'a>,
    /// `cleanup.policy` includes `compact`.
    pub compacted: bool,
    /// `message.timestamp.type=LogAppendTime`.
    pub log_append_time: bool,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub now_ms: i64,
    /// `compression.type`: `None` for `producer`, else the codec batches are stored with.
    pub target: Option<Codec>,
    /// Levels for recompression with the target codec.
    pub levels: Levels,
    /// `max.message.bytes`: the largest batch stored.
    pub max_batch_bytes: usize,
    /// The most a batch may decompress to when its records must be read.
    pub max_decompressed_bytes: usize,
}

/// The batch to append.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// The batch as the client sent it.
    AsIs,
    /// A rebuilt batch (recompressed, or inner offsets renumbered).
    Rewritten(Vec<u8>),
}

/// One refused record (KIP-467): its index in the batch and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub batch_index: i32,
    pub message: String,
}

/// Why a batch was refused, with Kafka's error for each case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Some records were refused: INVALID_TIMESTAMP if any for its timestamp, else
    /// INVALID_RECORD. `message` is Kafka's partition-level message.
    Records {
        invalid_timestamp: bool,
        message: String,
        errors: Vec<RecordError>,
    },
    /// Undecodable compressed data or malformed records: CORRUPT_MESSAGE.
    Corrupt(String),
    /// The record count does not match the records: INVALID_RECORD.
    Invalid(String),
    /// Too large once decompressed or recompressed: MESSAGE_TOO_LARGE.
    TooLarge(String),
}

/// One record as found in the records section.
struct RawRecord {
    /// Range of the whole record (length prefix included) in the section.
    start: usize,
    end: usize,
    /// Range of its offset-delta varint.
    offset_delta_at: (usize, usize),
    offset_delta: i64,
    timestamp_delta: i64,
    key_len: i64,
    value_len: i64,
}

/// Checks the records of one validated client batch against the topic's rules and says what
/// to append. A batch nobody needs to look into is not read at all.
pub fn check_batch(batch: &[u8], p: &RecordPolicy<'_>) -> Result<Checked, Rejection> {
    let Some(h) = BatchHeader::parse(batch) else {
        return Err(Rejection::Corrupt("truncated batch header".into()));
    };
    let source = Codec::from_attributes(h.attributes)
        .ok_or_else(|| Rejection::Invalid("unknown compression codec".into()))?;
    // Kafka: control batches are never recompressed unless written compressed.
    let control = h.attributes & ATTR_CONTROL != 0;
    let target = match p.target {
        Some(t) if !(control && source == Codec::None) => t,
        _ => source,
    };
    let claims_log_append_time = h.attributes & ATTR_LOG_APPEND_TIME != 0;
    let check_timestamps = !p.log_append_time
        && (p.timestamp_before_max_ms != i64::MAX || p.timestamp_after_max_ms != i64::MAX);
    let bad_timestamp_type = claims_log_append_time && (p.log_append_time || h.max_timestamp == -1);
    let recompress = target != source;
    if !recompress && !p.compacted && !check_timestamps && !bad_timestamp_type {
        return Ok(Checked::AsIs);
    }

    let body = &batch[HEADER_BYTES..h.total_bytes.min(batch.len())];
    let section: Cow<'_, [u8]> = if source == Codec::None {
        Cow::Borrowed(body)
    } else {
        // Stored uncompressed, the records must fit the batch limit; otherwise the named bound.
        let (limit, stored_plain) = if recompress && target == Codec::None {
            (p.max_batch_bytes.saturating_sub(HEADER_BYTES), true)
        } else {
            (p.max_decompressed_bytes, false)
        };
        match codec::decompress(source, body, limit) {
            Ok(v) => Cow::Owned(v),
            Err(DecompressError::TooLarge { .. }) if stored_plain => {
                return Err(Rejection::TooLarge(format!(
                    "Message batch size is more than {} bytes uncompressed in append to partition {} which exceeds the maximum configured size of {}.",
                    p.max_batch_bytes, p.topic_partition, p.max_batch_bytes
                )))
            }
            Err(DecompressError::TooLarge { codec, limit }) => {
                return Err(Rejection::TooLarge(format!(
                    "Record batch ({codec}) decompresses to more than {limit} bytes (max_decompressed_batch_bytes) in topic partition {}",
                    p.topic_partition
                )))
            }
            Err(e) => {
                return Err(Rejection::Corrupt(format!(
                    "{e} in topic partition {}",
                    p.topic_partition
                )))
            }
        }
    };
    let mut errors = Vec::new();
    let mut error_count = 0usize;
    let mut invalid_timestamp = false;
    let mut max_timestamp = -1i64;
    let mut renumber = false;
    let mut count = 0usize;
    for (i, r) in walk(&section).enumerate() {
        let r = r.map_err(|why| {
            Rejection::Corrupt(format!("{why} in topic partition {}", p.topic_partition))
        })?;
        count += 1;
        let timestamp = if claims_log_append_time {
            h.max_timestamp
        } else {
            h.base_timestamp.wrapping_add(r.timestamp_delta)
        };
        let offset = h.base_offset.wrapping_add(r.offset_delta);
        max_timestamp = max_timestamp.max(timestamp);
        // Kafka checks inner offsets where it reads compressed records: off-count ones are
        // renumbered by a rebuild.
        renumber |= r.offset_delta != i as i64 && (source != Codec::None || target != Codec::None);
        let error = if p.compacted && r.key_len < 0 {
            Some(format!(
                "Compacted topic cannot accept message without key in topic partition {}",
                p.topic_partition
            ))
        } else if !p.log_append_time && timestamp != -1 {
            let diff = p.now_ms.wrapping_sub(timestamp);
            (check_timestamps
                && (diff > p.timestamp_before_max_ms
                    || diff.wrapping_neg() > p.timestamp_after_max_ms))
                .then(|| {
                    invalid_timestamp = true;
                    format!(
                        "Timestamp {timestamp} of message with offset {offset} is out of range. The timestamp should be within [{}, {}]",
                        p.now_ms.wrapping_sub(p.timestamp_before_max_ms),
                        p.now_ms.wrapping_add(p.timestamp_after_max_ms)
                    )
                })
        } else if claims_log_append_time {
            invalid_timestamp = true;
            Some(format!(
                "Invalid timestamp type in message DefaultRecord(offset={offset}, timestamp={timestamp}, key={} bytes, value={} bytes). Producer should not set timestamp type to LogAppendTime.",
                r.key_len.max(0),
                r.value_len.max(0)
            ))
        } else {
            None
        };
        if let Some(message) = error {
            error_count += 1;
            if errors.len() < MAX_RECORD_ERRORS {
                errors.push(RecordError {
                    batch_index: i as i32,
                    message,
                });
            }
        }
    }
    if count != h.records_count as usize {
        return Err(Rejection::Invalid(format!(
            "Record batch declares {} records but holds {count} in topic partition {}",
            h.records_count, p.topic_partition
        )));
    }
    if !errors.is_empty() {
        let message = if invalid_timestamp {
            "One or more records have been rejected due to invalid timestamp".to_string()
        } else {
            let shown: Vec<String> = errors
                .iter()
                .take(3)
                .map(|e| {
                    format!(
                        "RecordError(batchIndex={}, message='{}')",
                        e.batch_index, e.message
                    )
                })
                .collect();
            format!(
                "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
                error_count,
                shown.join(", ")
            )
        };
        return Err(Rejection::Records {
            invalid_timestamp,
            message,
            errors,
        });
    }
    if !recompress && !renumber {
        return Ok(Checked::AsIs);
    }
    let level = match p.target {
        Some(_) => p.levels.of(target),
        None => Levels::default().of(target),
    };
    let rebuilt = rebuild(
        batch,
        &h,
        &section,
        count,
        renumber,
        target,
        level,
        max_timestamp,
    )
    .map_err(|e| Rejection::Corrupt(format!("recompression failed: {e}")))?;
    if rebuilt.len() > p.max_batch_bytes {
        return Err(Rejection::TooLarge(format!(
            "Message batch size is {} bytes in append to partition {} which exceeds the maximum configured size of {}.",
            rebuilt.len(),
            p.topic_partition,
            p.max_batch_bytes
        )));
    }
    Ok(Checked::Rewritten(rebuilt))
}

/// The batch header of `batch` around `records` (renumbered 0, 1, 2… if asked), compressed
/// with `target` at `level`; length, attributes, max timestamp and CRC rewritten.
#[allow(clippy::too_many_arguments)]
fn rebuild(
    batch: &[u8],
    h: &BatchHeader,
    section: &[u8],
    count: usize,
    renumber: bool,
    target: Codec,
    level: i32,
    max_timestamp: i64,
) -> std::io::Result<Vec<u8>> {
    let renumbered;
    let plain: &[u8] = if renumber {
        let mut out = Vec::with_capacity(section.len() + count);
        for (i, r) in walk(section).enumerate() {
            // (Checked by the caller's walk: an error cannot happen here.)
            let r = r.map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            // length | attributes + timestamp delta | offset delta | the rest
            let (_, len_bytes) = read_varint(&section[r.start..]).unwrap_or((0, 0));
            let head = &section[r.start + len_bytes..r.offset_delta_at.0];
            let tail = &section[r.offset_delta_at.1..r.end];
            let mut delta = Vec::with_capacity(5);
            write_varint(&mut delta, i as i64);
            write_varint(&mut out, (head.len() + delta.len() + tail.len()) as i64);
            out.extend_from_slice(head);
            out.extend_from_slice(&delta);
            out.extend_from_slice(tail);
        }
        renumbered = out;
        &renumbered
    } else {
        section
    };
    let compressed = codec::compress(target, level, plain)?;
    let mut out = Vec::with_capacity(HEADER_BYTES + compressed.len());
    out.extend_from_slice(&batch[..HEADER_BYTES]);
    out.extend_from_slice(&compressed);
    let batch_length = (out.len() - 12) as i32;
    out[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = (h.attributes & !0x07) | target as i16;
    out[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    if h.attributes & ATTR_LOG_APPEND_TIME == 0 {
        out[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    }
    let crc = crc32c::crc32c(&out[OFF_ATTRIBUTES..]);
    out[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Zig-zag varint, as Kafka's records encode their fields.
fn write_varint(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

/// Where one record's parts lie in its records section (ranges are section offsets).
struct RecordFields {
    /// The whole record, its length prefix included.
    start: usize,
    end: usize,
    /// Its offset-delta varint.
    offset_delta_at: (usize, usize),
    offset_delta: i64,
    timestamp_delta: i64,
    /// Key and value (`None`: null).
    key: Option<(usize, usize)>,
    value: Option<(usize, usize)>,
}

/// Reads the record at `pos` of `section`, checking its structure (Kafka's
/// `DefaultRecord.readFrom`): length, attributes, timestamp and offset deltas, key, value,
/// headers (keys not null), nothing left over. Every count and length is checked against the
/// bytes that remain before anything is read or allocated; `on_header` gets each header's
/// key and value ranges.
fn parse_record(
    section: &[u8],
    pos: usize,
    mut on_header: impl FnMut((usize, usize), Option<(usize, usize)>),
) -> Result<RecordFields, &'static str> {
    let (len, used) =
        read_varint(section.get(pos..).unwrap_or_default()).ok_or("bad record length")?;
    let len = usize::try_from(len).map_err(|_| "negative record length")?;
    let start_body = pos + used;
    let end = start_body
        .checked_add(len)
        .filter(|&e| e <= section.len())
        .ok_or("record overruns its batch")?;
    let body = &section[start_body..end];
    if body.is_empty() {
        return Err("empty record");
    }
    let mut at = 1usize; // after the attributes
    let varint = |at: &mut usize| -> Result<(i64, (usize, usize)), &'static str> {
        let (v, n) =
            read_varint(body.get(*at..).ok_or("truncated record")?).ok_or("truncated record")?;
        let range = (start_body + *at, start_body + *at + n);
        *at += n;
        Ok((v, range))
    };
    let (timestamp_delta, _) = varint(&mut at)?;
    let (offset_delta, offset_delta_at) = varint(&mut at)?;
    let bytes = |at: &mut usize, nullable: bool| -> Result<Option<(usize, usize)>, &'static str> {
        let (n, _) = varint(at)?;
        if n < 0 {
            return if nullable && n == -1 {
                Ok(None)
            } else {
                Err("invalid field length in record")
            };
        }
        let from = *at;
        *at = usize::try_from(n)
            .ok()
            .and_then(|n| from.checked_add(n))
            .filter(|&e| e <= body.len())
            .ok_or("record field overruns the record")?;
        Ok(Some((start_body + from, start_body + *at)))
    };
    let key = bytes(&mut at, true)?;
    let value = bytes(&mut at, true)?;
    let (headers, _) = varint(&mut at)?;
    if headers < 0 {
        return Err("invalid negative header count in record");
    }
    // Each header takes at least two bytes (its key and value lengths): a count the record
    // cannot hold is refused before the loop.
    if headers as u64 > (body.len() - at) as u64 / 2 {
        return Err("header count overruns the record");
    }
    for _ in 0..headers {
        let Some(k) = bytes(&mut at, false)? else {
            return Err("invalid field length in record");
        };
        let v = bytes(&mut at, true)?;
        on_header(k, v);
    }
    if at != body.len() {
        return Err("record size does not match its fields");
    }
    Ok(RecordFields {
        start: pos,
        end,
        offset_delta_at,
        offset_delta,
        timestamp_delta,
        key,
        value,
    })
}

/// The records of a records section one by one, each one's structure checked (see
/// [`parse_record`]); nothing is kept per record, so memory does not grow with the count.
fn walk(section: &[u8]) -> Walk<'_> {
    Walk { section, pos: 0 }
}

struct Walk<'a> {
    section: &'a [u8],
    pos: usize,
}

impl Iterator for Walk<'_> {
    type Item = Result<RawRecord, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.section.len() {
            return None;
        }
        let f = match parse_record(self.section, self.pos, |_, _| ()) {
            Ok(f) => f,
            Err(e) => {
                self.pos = self.section.len();
                return Some(Err(e));
            }
        };
        let len = |r: Option<(usize, usize)>| r.map_or(-1, |(a, b)| (b - a) as i64);
        self.pos = f.end;
        Some(Ok(RawRecord {
            start: f.start,
            end: f.end,
            offset_delta_at: f.offset_delta_at,
            offset_delta: f.offset_delta,
            timestamp_delta: f.timestamp_delta,
            key_len: len(f.key),
            value_len: len(f.value),
        }))
    }
}

/// Per-record errors kept for the response at most (all are counted in its message): a
/// batch of millions of keyless records for a compacted topic must not make millions of
/// strings.
const MAX_RECORD_ERRORS: usize = 1000;

/// The most one stored batch may decompress to when the broker reads its records (internal
/// topics at load, ListOffsets by timestamp): `max_decompressed_batch_bytes`' default. A
/// stored batch may never have been decompressed before (the zero-copy produce path).
pub const STORED_DECOMPRESSED_MAX_BYTES: usize = 100 * 1024 * 1024;

/// Why a stored batch's records cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoredBatchError(pub String);

/// The records of one stored batch, checked and ready to be read one at a time (see
/// [`stored_records`]).
#[derive(Debug, Clone)]
pub struct StoredRecords {
    header: BatchHeader,
    /// The records section, decompressed.
    section: Bytes,
    count: usize,
}

impl StoredRecords {
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// How many records the batch holds.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records, as kafka-protocol's `RecordBatchDecoder` would give them, decoded one at a
    /// time (header keys that are not UTF-8 are read lossily).
    pub fn iter(&self) -> StoredRecordIter<'_> {
        StoredRecordIter { of: self, pos: 0 }
    }
}

/// The records of a [`StoredRecords`], one by one.
pub struct StoredRecordIter<'a> {
    of: &'a StoredRecords,
    pos: usize,
}

impl Iterator for StoredRecordIter<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        let s = &self.of.section;
        if self.pos >= s.len() {
            return None;
        }
        let mut headers = Vec::new();
        // Checked by `stored_records`: an error here cannot happen, and would end the records.
        let f = parse_record(s, self.pos, |k, v| headers.push((k, v))).ok()?;
        self.pos = f.end;
        let h = &self.of.header;
        let slice = |r: Option<(usize, usize)>| r.map(|(a, b)| s.slice(a..b));
        let mut record = Record {
            transactional: h.is_transactional(),
            control: h.is_control(),
            delete_horizon: h.attributes & ATTR_DELETE_HORIZON != 0,
            partition_leader_epoch: h.partition_leader_epoch,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            timestamp_type: if h.attributes & ATTR_LOG_APPEND_TIME != 0 {
                TimestampType::LogAppend
            } else {
                TimestampType::Creation
            },
            offset: h.base_offset.wrapping_add(f.offset_delta),
            sequence: h.base_sequence.wrapping_add(f.offset_delta as i32),
            timestamp: h.base_timestamp.wrapping_add(f.timestamp_delta),
            key: slice(f.key),
            value: slice(f.value),
            headers: Default::default(),
        };
        record.headers.reserve(headers.len());
        for ((ka, kb), v) in headers {
            let key = StrBytes::from_utf8(s.slice(ka..kb)).unwrap_or_else(|_| {
                StrBytes::from_string(String::from_utf8_lossy(&s[ka..kb]).into_owned())
            });
            record.headers.insert(key, slice(v));
        }
        Some(record)
    }
}

/// Attributes bit 6: the batch's delete horizon is set (compaction, KIP-534).
const ATTR_DELETE_HORIZON: i16 = 0x40;

/// Checks one stored batch (`batch` holds exactly it, or starts with it) and readies its
/// records without trusting anything it claims: magic 2, the length, the CRC, a known codec,
/// decompression bounded by `max_decompressed` bytes, then every record's structure checked
/// against the bytes that remain (see [`parse_record`]) and their number against the header.
/// Only then may the records be read ([`StoredRecords::iter`]). The cost is bounded by
/// `max_decompressed` whatever the batch claims (kafka-protocol's `RecordBatchDecoder` trusts
/// the record and header counts and decompresses without bound).
pub fn stored_records(
    batch: &[u8],
    max_decompressed: usize,
) -> Result<StoredRecords, StoredBatchError> {
    let bad = |why: &str| StoredBatchError(why.to_string());
    let header = BatchHeader::parse(batch).ok_or_else(|| bad("truncated batch header"))?;
    let magic = batch[OFF_MAGIC] as i8;
    if magic != 2 {
        return Err(StoredBatchError(format!("unsupported batch magic {magic}")));
    }
    let batch = batch
        .get(..header.total_bytes)
        .ok_or_else(|| bad("batch length exceeds the data"))?;
    let stored_crc = u32::from_be_bytes([
        batch[OFF_CRC],
        batch[OFF_CRC + 1],
        batch[OFF_CRC + 2],
        batch[OFF_CRC + 3],
    ]);
    if crc32c::crc32c(&batch[OFF_ATTRIBUTES..]) != stored_crc {
        return Err(bad("CRC32C mismatch"));
    }
    if header.records_count < 0 {
        return Err(bad("negative record count"));
    }
    let codec = Codec::from_attributes(header.attributes)
        .ok_or_else(|| bad("unknown compression codec"))?;
    let body = &batch[HEADER_BYTES..];
    let section = match codec {
        Codec::None => Bytes::copy_from_slice(body),
        _ => Bytes::from(
            codec::decompress(codec, body, max_decompressed)
                .map_err(|e| StoredBatchError(e.to_string()))?,
        ),
    };
    // Each record takes at least seven bytes: a count the section cannot hold is refused
    // before the walk.
    if header.records_count as u64 > section.len() as u64 / 7 {
        return Err(StoredBatchError(format!(
            "batch declares {} records in {} bytes",
            header.records_count,
            section.len()
        )));
    }
    let mut count = 0usize;
    let mut pos = 0usize;
    while pos < section.len() {
        pos = parse_record(&section, pos, |_, _| ()).map_err(bad)?.end;
        count += 1;
    }
    if count != header.records_count as usize {
        return Err(StoredBatchError(format!(
            "batch declares {} records but holds {count}",
            header.records_count
        )));
    }
    Ok(StoredRecords {
        header,
        section,
        count,
    })
}

/// The stored batches of `bytes` (whole batches one after the other, as a log read returns
/// them), each checked by [`stored_records`] as it is reached: `(base offset, records or
/// why not)`. A batch that cannot be read is reported and the next one tried; a torn tail
/// (an incomplete header or a length past the data) is reported last.
pub fn decode_stored_batches(
    bytes: &[u8],
    max_decompressed: usize,
) -> impl Iterator<Item = (i64, Result<StoredRecords, StoredBatchError>)> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let rest = bytes.get(pos..).filter(|r| !r.is_empty())?;
        let Some(h) = BatchHeader::parse(rest) else {
            pos = bytes.len();
            let offset = rest.get(..8).map_or(-1, |b| {
                i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            });
            return Some((offset, Err(StoredBatchError("torn batch header".into()))));
        };
        if h.total_bytes > rest.len() {
            pos = bytes.len();
            return Some((
                h.base_offset,
                Err(StoredBatchError("batch length exceeds the data".into())),
            ));
        }
        pos += h.total_bytes;
        Some((
            h.base_offset,
            stored_records(&rest[..h.total_bytes], max_decompressed),
        ))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::log::batch::validate_batches;
    use bytes::Bytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    fn record(i: usize, key: Option<&str>, ts: i64) -> Record {
        let mut r = Record {
            transactional: true,
            control: false,
            partition_leader_epoch: -1,
            producer_id: 77,
            producer_epoch: 3,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: 10 + i as i32,
            timestamp: ts,
            key: key.map(|k| Bytes::from(k.to_string())),
            value: Some(Bytes::from(format!("value-{i}-").repeat(20))),
            headers: Default::default(),
            delete_horizon: false,
        };
        r.headers.insert(
            kafka_protocol::protocol::StrBytes::from_string(format!("h{i}")),
            Some(Bytes::from(vec![i as u8; 3])),
        );
        r
    }

    fn encode(records: &[Record], compression: Compression) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode");
        buf.to_vec()
    }

    fn policy(target: Option<Codec>) -> RecordPolicy<'static> {
        RecordPolicy {
            topic_partition: TopicPartition {
                topic: "t",
                partition: 0,
            },
            compacted: false,
            log_append_time: false,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
            now_ms: 1_000_000,
            target,
            levels: Levels::default(),
            max_batch_bytes: 1 << 20,
            max_decompressed_bytes: 1 << 20,
        }
    }

    fn decode(batch: &[u8]) -> (Compression, Vec<Record>) {
        let set = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(batch)).expect("decode");
        (set.compression, set.records)
    }

    const CODECS: [(Compression, Codec); 5] = [
        (Compression::None, Codec::None),
        (Compression::Gzip, Codec::Gzip),
        (Compression::Snappy, Codec::Snappy),
        (Compression::Lz4, Codec::Lz4),
        (Compression::Zstd, Codec::Zstd),
    ];

    #[test]
    fn every_codec_pair_recompresses_keeping_every_record() {
        let records: Vec<Record> = (0..7)
            .map(|i| record(i, Some("k"), 5000 + i as i64))
            .collect();
        for (from, _) in CODECS {
            let batch = encode(&records, from);
            for (to, codec) in CODECS {
                let checked = check_batch(&batch, &policy(Some(codec))).expect("accepted");
                if from == to {
                    assert_eq!(checked, Checked::AsIs, "{from:?} into {to:?}");
                    continue;
                }
                let Checked::Rewritten(out) = checked else {
                    panic!("{from:?} into {to:?} not rewritten");
                };
                validate_batches(&out, 1 << 20).expect("valid batch");
                let h = BatchHeader::parse(&out).expect("header");
                assert_eq!(h.compression(), codec as i16);
                assert_eq!(
                    (h.producer_id, h.producer_epoch, h.base_sequence),
                    (77, 3, 10)
                );
                assert!(h.is_transactional());
                assert_eq!(h.max_timestamp, 5006);
                let (compression, got) = decode(&out);
                assert_eq!(compression, to);
                assert_eq!(got, records, "{from:?} into {to:?}");
            }
        }
    }

    #[test]
    fn producer_topics_are_not_read() {
        // Garbage inside a gzip batch: on a `producer` topic nobody looks.
        let mut batch = encode(&[record(0, None, 1)], Compression::Gzip);
        let n = batch.len();
        batch[n - 8..].fill(0xAA);
        assert_eq!(check_batch(&batch, &policy(None)), Ok(Checked::AsIs));
        assert!(matches!(
            check_batch(&batch, &policy(Some(Codec::Zstd))),
            Err(Rejection::Corrupt(_))
        ));
    }

    #[test]
    fn keyless_records_on_compacted_topics_are_listed() {
        let records = [
            record(0, Some("a"), 1),
            record(1, None, 1),
            record(2, Some("b"), 1),
            record(3, None, 1),
        ];
        for (compression, _) in CODECS {
            let batch = encode(&records, compression);
            let p = RecordPolicy {
                compacted: true,
                ..policy(None)
            };
            let Err(Rejection::Records {
                invalid_timestamp,
                message,
                errors,
            }) = check_batch(&batch, &p)
            else {
                panic!("accepted");
            };
            assert!(!invalid_timestamp);
            assert_eq!(
                errors.iter().map(|e| e.batch_index).collect::<Vec<_>>(),
                [1, 3]
            );
            assert_eq!(
                errors[0].message,
                "Compacted topic cannot accept message without key in topic partition t-0"
            );
            assert!(message.starts_with("One or more records have been rejected due to 2 record errors in total, and only showing the first three errors at most: [RecordError(batchIndex=1, message='Compacted topic"), "{message}");
        }
    }

    #[test]
    fn record_errors_kept_are_bounded_but_all_are_counted() {
        let records: Vec<Record> = (0..5000).map(|i| record(i, None, 1)).collect();
        let batch = encode(&records, Compression::None);
        let p = RecordPolicy {
            compacted: true,
            ..policy(None)
        };
        let Err(Rejection::Records {
            message, errors, ..
        }) = check_batch(&batch, &p)
        else {
            panic!("accepted");
        };
        assert_eq!(errors.len(), MAX_RECORD_ERRORS);
        assert_eq!(errors.last().map(|e| e.batch_index), Some(999));
        assert!(
            message.contains("due to 5000 record errors in total"),
            "{message}"
        );
    }

    #[test]
    fn timestamps_out_of_bounds_are_listed() {
        let now = 1_000_000;
        let records = [
            record(0, Some("a"), now - 5000), // too old
            record(1, Some("a"), now),
            record(2, Some("a"), now + 2000), // too new
            record(3, Some("a"), now - 1000),
        ];
        let p = RecordPolicy {
            timestamp_before_max_ms: 1000,
            timestamp_after_max_ms: 1000,
            ..policy(None)
        };
        for (compression, _) in CODECS {
            let batch = encode(&records, compression);
            let Err(Rejection::Records {
                invalid_timestamp,
                message,
                errors,
            }) = check_batch(&batch, &p)
            else {
                panic!("accepted");
            };
            assert!(invalid_timestamp);
            assert_eq!(
                message,
                "One or more records have been rejected due to invalid timestamp"
            );
            assert_eq!(
                errors.iter().map(|e| e.batch_index).collect::<Vec<_>>(),
                [0, 2]
            );
            assert_eq!(errors[0].message, "Timestamp 995000 of message with offset 0 is out of range. The timestamp should be within [999000, 1001000]");
            // LogAppendTime topics are exempt.
            let lat = RecordPolicy {
                log_append_time: true,
                ..p.clone()
            };
            assert_eq!(check_batch(&batch, &lat), Ok(Checked::AsIs));
        }
        // In range: accepted as is.
        let batch = encode(&records[1..2], Compression::Lz4);
        assert_eq!(check_batch(&batch, &p), Ok(Checked::AsIs));
    }

    #[test]
    fn decompression_is_bounded() {
        let big = Record {
            value: Some(Bytes::from(vec![0u8; 600_000])),
            ..record(0, Some("k"), 1)
        };
        let second = Record {
            offset: 1,
            sequence: 11,
            ..big.clone()
        };
        let batch = encode(&[big, second], Compression::Zstd);
        assert_eq!(
            BatchHeader::parse(&batch).expect("header").total_bytes,
            batch.len()
        );
        assert!(batch.len() < 10_000);
        // Into an uncompressed topic: beyond max.message.bytes.
        assert!(matches!(
            check_batch(&batch, &policy(Some(Codec::None))),
            Err(Rejection::TooLarge(_))
        ));
        // Into gzip: beyond the decompression bound.
        assert!(matches!(
            check_batch(&batch, &policy(Some(Codec::Gzip))),
            Err(Rejection::TooLarge(_))
        ));
        let roomy = RecordPolicy {
            max_decompressed_bytes: 2 << 20,
            ..policy(Some(Codec::Gzip))
        };
        assert!(matches!(
            check_batch(&batch, &roomy),
            Ok(Checked::Rewritten(_))
        ));
    }

    #[test]
    fn inner_offsets_are_renumbered_when_rebuilt() {
        // Offsets 0, 2, 4: records_count 3 needs last delta 2; patch by hand in an
        // uncompressed batch, then recompress.
        let records: Vec<Record> = (0..3).map(|i| record(i, Some("k"), 9)).collect();
        let mut section = Vec::new();
        let plain = encode(&records, Compression::None);
        let walked: Vec<RawRecord> = walk(&plain[HEADER_BYTES..])
            .collect::<Result<_, _>>()
            .expect("walk");
        for (i, r) in walked.iter().enumerate() {
            let s = &plain[HEADER_BYTES..];
            let (_, lb) = read_varint(&s[r.start..]).expect("len");
            let head = &s[r.start + lb..r.offset_delta_at.0];
            let tail = &s[r.offset_delta_at.1..r.end];
            let delta = if i == 1 { 5 } else { i as i64 };
            let mut d = Vec::new();
            write_varint(&mut d, delta);
            write_varint(&mut section, (head.len() + d.len() + tail.len()) as i64);
            section.extend_from_slice(head);
            section.extend_from_slice(&d);
            section.extend_from_slice(tail);
        }
        let mut batch = plain[..HEADER_BYTES].to_vec();
        batch.extend_from_slice(&section);
        let len = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&batch[OFF_ATTRIBUTES..]);
        batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        validate_batches(&batch, 1 << 20).expect("valid");
        let Ok(Checked::Rewritten(out)) = check_batch(&batch, &policy(Some(Codec::Snappy))) else {
            panic!("not rebuilt");
        };
        assert_eq!(decode(&out).1, records);
    }

    /// A batch around a hand-made records section: the header of an encoded one-record
    /// batch with `count` records, the section compressed with `codec`, length and CRC fixed.
    pub(crate) fn batch_around(section: &[u8], codec: Codec, count: i32) -> Vec<u8> {
        let plain = crate::log::batch::encode_records(&[crate::log::batch::plain_record(
            0,
            Some(Bytes::from_static(b"k")),
            None,
            1,
        )])
        .expect("encode");
        let mut batch = plain[..HEADER_BYTES].to_vec();
        batch.extend_from_slice(&codec::compress(codec, 1, section).expect("compress"));
        let len = (batch.len() - 12) as i32;
        batch[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
        let attributes = (i16::from_be_bytes([batch[21], batch[22]]) & !0x07) | codec as i16;
        batch[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        batch[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        batch[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&batch[OFF_ATTRIBUTES..]);
        batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    /// One record whose header count is 2^31 (a 274-byte batch): kafka-protocol's decoder
    /// sized a 2.1 GB hash table from it.
    pub(crate) fn record_claiming_2_31_headers() -> Vec<u8> {
        let mut body = vec![0u8]; // attributes
        write_varint(&mut body, 0); // timestamp delta
        write_varint(&mut body, 0); // offset delta
        write_varint(&mut body, -1); // null key
        write_varint(&mut body, 200);
        body.extend_from_slice(&[b'v'; 200]);
        write_varint(&mut body, 1 << 31); // header count
        let mut section = Vec::new();
        write_varint(&mut section, body.len() as i64);
        section.extend_from_slice(&body);
        section
    }

    fn all_records(batch: &[u8]) -> Vec<Record> {
        stored_records(batch, 1 << 20)
            .expect("readable")
            .iter()
            .collect()
    }

    #[test]
    fn stored_records_match_kafka_protocols_decoder() {
        let mut records: Vec<Record> = (0..9)
            .map(|i| {
                record(
                    i,
                    if i % 3 == 0 { None } else { Some("k") },
                    5000 - i as i64,
                )
            })
            .collect();
        records[4].value = None;
        records[5].headers.clear();
        records[6].headers.insert(
            kafka_protocol::protocol::StrBytes::from_static_str("second"),
            None,
        );
        for (compression, _) in CODECS {
            let batch = encode(&records, compression);
            let got = stored_records(&batch, 1 << 20).expect("readable");
            assert_eq!(got.len(), records.len());
            assert_eq!(
                got.iter().collect::<Vec<_>>(),
                decode(&batch).1,
                "{compression:?}"
            );
            // A control batch, a LogAppendTime one: the flags come from the header.
            let mut b = batch.clone();
            let attributes = i16::from_be_bytes([b[21], b[22]]) | 0x08 | ATTR_CONTROL;
            b[21..23].copy_from_slice(&attributes.to_be_bytes());
            let crc = crc32c::crc32c(&b[OFF_ATTRIBUTES..]);
            b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
            assert_eq!(all_records(&b), decode(&b).1, "{compression:?} control");
        }
        // Several batches; a bad one among them is reported and the others read.
        let mut bytes = encode(&records[..2], Compression::None);
        let mut broken = encode(&records[2..4], Compression::Gzip);
        let n = broken.len();
        broken[n - 1] ^= 0xff; // CRC mismatch
        bytes.extend_from_slice(&broken);
        bytes.extend_from_slice(&encode(&records[4..], Compression::Lz4));
        bytes.extend_from_slice(&[0u8; 20]); // a torn tail
        let got: Vec<(i64, Result<usize, StoredBatchError>)> =
            decode_stored_batches(&bytes, 1 << 20)
                .map(|(o, r)| (o, r.map(|s| s.len())))
                .collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], (0, Ok(2)));
        assert_eq!(got[1].0, 2);
        assert_eq!(got[1].1, Err(StoredBatchError("CRC32C mismatch".into())));
        assert_eq!(got[2], (4, Ok(5)));
        assert!(got[3].1.is_err());
    }

    #[test]
    fn a_record_claiming_2_31_headers_is_refused_cheaply() {
        let section = record_claiming_2_31_headers();
        // It passes the produce path's format check (only record lengths are walked there)
        // and is stored as it came on a topic without key or timestamp rules.
        let batch = batch_around(&section, Codec::None, 1);
        assert_eq!(batch.len(), 274);
        validate_batches(&batch, 1 << 20).expect("format-valid");
        assert_eq!(check_batch(&batch, &policy(None)), Ok(Checked::AsIs));
        let started = std::time::Instant::now();
        assert_eq!(
            stored_records(&batch, STORED_DECOMPRESSED_MAX_BYTES).map(|s| s.len()),
            Err(StoredBatchError("header count overruns the record".into()))
        );
        // Compressed the same.
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let batch = batch_around(&section, codec, 1);
            assert!(stored_records(&batch, STORED_DECOMPRESSED_MAX_BYTES).is_err());
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // The produce-side walk refuses it too when it reads the records.
        assert!(matches!(
            check_batch(&batch, &policy(Some(Codec::Zstd))),
            Err(Rejection::Corrupt(_))
        ));
        // A record count the section cannot hold is refused before the walk.
        let mut claims = batch_around(
            &encode(&[record(0, None, 1)], Compression::None)[HEADER_BYTES..],
            Codec::None,
            1,
        );
        claims[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&claims[OFF_ATTRIBUTES..]);
        claims[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(stored_records(&claims, 1 << 20)
            .is_err_and(|e| e.0.starts_with("batch declares 2147483647 records")));
    }

    #[test]
    fn a_stored_decompression_bomb_is_bounded() {
        // 8 MiB of zeros in one record, gzip: about 8 KB stored.
        let bomb = Record {
            value: Some(Bytes::from(vec![0u8; 8 << 20])),
            ..record(0, Some("k"), 1)
        };
        for (compression, _) in &CODECS[1..] {
            let batch = encode(std::slice::from_ref(&bomb), *compression);
            assert!(batch.len() < 1 << 20, "{compression:?}: {}", batch.len());
            assert!(
                stored_records(&batch, 1 << 20)
                    .is_err_and(|e| e.0.contains("decompresses to more than 1048576 bytes")),
                "{compression:?}"
            );
            assert_eq!(stored_records(&batch, 9 << 20).expect("within").len(), 1);
        }
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ] {
            let mut b = Vec::new();
            write_varint(&mut b, v);
            assert_eq!(read_varint(&b), Some((v, b.len())));
        }
    }
}
