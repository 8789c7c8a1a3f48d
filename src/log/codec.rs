//! Record batch compression codecs (attributes bits 0-2) with Kafka's levels (KIP-390), and
//! bounded decompression.
//!
//! kafka-protocol's own codecs fix the level (gzip 6, lz4 4, zstd 3) and decompress without a
//! bound; the broker needs the topic's level when it recompresses, and must not let a small
//! compressed batch expand into gigabytes (a decompression bomb). The same codec crates are
//! used directly here (they are already kafka-protocol's dependencies).
//!
//! Formats are Kafka's: gzip (RFC 1952, concatenated members accepted), xerial-framed snappy
//! (raw snappy accepted too, as Kafka's reader does), LZ4 frames (64 KB independent blocks, no
//! checksums, as Kafka's `Lz4BlockOutputStream` writes them), zstd frames.

use std::io::{self, Read, Write};

/// A batch's compression codec, as attributes bits 0-2 encode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Codec {
    /// The codec of attributes bits 0-2 (`None` for 5-7, which validation refuses).
    pub fn from_attributes(attributes: i16) -> Option<Codec> {
        Some(match attributes & 0x07 {
            0 => Codec::None,
            1 => Codec::Gzip,
            2 => Codec::Snappy,
            3 => Codec::Lz4,
            4 => Codec::Zstd,
            _ => return None,
        })
    }

    /// Kafka's name for it (`compression.type`); `uncompressed` for none.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "uncompressed",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

/// Kafka's `compression.type` values.
pub const COMPRESSION_TYPES: [&str; 6] =
    ["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

/// What a `compression.type` value asks for: `Some(None)` for `producer` (batches stored as
/// sent), `Some(Some(codec))` for a codec (`uncompressed` = [`Codec::None`]), `None` if it is
/// not a Kafka value.
pub fn target_of(compression_type: &str) -> Option<Option<Codec>> {
    Some(Some(match compression_type {
        "producer" => return Some(None),
        "uncompressed" => Codec::None,
        "gzip" => Codec::Gzip,
        "snappy" => Codec::Snappy,
        "lz4" => Codec::Lz4,
        "zstd" => Codec::Zstd,
        _ => return None,
    }))
}

/// Kafka's validation of `compression.<codec>.level`; the message is Kafka's.
pub fn check_level(codec: Codec, level: i32) -> Result<(), String> {
    use levels::*;
    let ok = match codec {
        Codec::Gzip => (GZIP_MIN..=GZIP_MAX).contains(&level) || level == GZIP_DEFAULT,
        Codec::Lz4 => (LZ4_MIN..=LZ4_MAX).contains(&level),
        Codec::Zstd => (ZSTD_MIN..=ZSTD_MAX).contains(&level),
        Codec::None | Codec::Snappy => true,
    };
    if ok {
        return Ok(());
    }
    Err(match codec {
        Codec::Gzip => {
            format!("Value must be between {GZIP_MIN} and {GZIP_MAX} or equal to {GZIP_DEFAULT}")
        }
        Codec::Lz4 if level < LZ4_MIN => format!("Value must be at least {LZ4_MIN}"),
        Codec::Lz4 => format!("Value must be no more than {LZ4_MAX}"),
        Codec::Zstd if level < ZSTD_MIN => format!("Value must be at least {ZSTD_MIN}"),
        _ => format!("Value must be no more than {ZSTD_MAX}"),
    })
}

/// Kafka's compression levels (KIP-390): ranges and defaults of `compression.<codec>.level`.
pub mod levels {
    /// gzip: 1..=9, or -1 (zlib's default, 6).
    pub const GZIP_MIN: i32 = 1;
    pub const GZIP_MAX: i32 = 9;
    pub const GZIP_DEFAULT: i32 = -1;
    /// lz4: 1..=17, default 9 (Kafka's fast compressor; other levels are LZ4 HC).
    pub const LZ4_MIN: i32 = 1;
    pub const LZ4_MAX: i32 = 17;
    pub const LZ4_DEFAULT: i32 = 9;
    /// zstd: -131072..=22, default 3 (the library's own bounds and default).
    pub const ZSTD_MIN: i32 = -131072;
    pub const ZSTD_MAX: i32 = 22;
    pub const ZSTD_DEFAULT: i32 = 3;
}

/// Why decompression failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// Not valid data of the codec (Kafka's CORRUPT_MESSAGE).
    #[error("cannot decompress {codec} data: {reason}")]
    Corrupt { codec: &'static str, reason: String },
    /// The data expands to more than the limit (MESSAGE_TOO_LARGE).
    #[error("{codec} data decompresses to more than {limit} bytes")]
    TooLarge { codec: &'static str, limit: usize },
}

/// Compresses `data` with `codec` at `level` (a Kafka level, checked by the config layer;
/// out-of-range values are clamped by the libraries).
pub fn compress(codec: Codec, level: i32, data: &[u8]) -> io::Result<Vec<u8>> {
    match codec {
        Codec::None => Ok(data.to_vec()),
        Codec::Gzip => {
            let level = if level == levels::GZIP_DEFAULT {
                flate2::Compression::default()
            } else {
                flate2::Compression::new(level.clamp(0, 9) as u32)
            };
            let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2), level);
            e.write_all(data)?;
            e.finish()
        }
        Codec::Snappy => snappy_xerial(data),
        Codec::Lz4 => {
            // Kafka: the default level uses lz4's fast compressor, any other the HC one.
            let lz4_level = if level == levels::LZ4_DEFAULT {
                0
            } else {
                level.max(0) as u32
            };
            let mut e = lz4::EncoderBuilder::new()
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .level(lz4_level)
                .build(Vec::with_capacity(data.len() / 2))?;
            e.write_all(data)?;
            let (out, result) = e.finish();
            result.map(|()| out)
        }
        Codec::Zstd => zstd::stream::encode_all(data, level),
    }
}

/// xerial snappy framing (what Kafka's snappy-java writes): a 16-byte header, then blocks of
/// at most 32 KB of input, each a big-endian u32 length and a raw snappy block.
const XERIAL_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

fn snappy_xerial(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(16 + data.len() / 2);
    out.extend_from_slice(XERIAL_MAGIC);
    let mut encoder = snap::raw::Encoder::new();
    for block in data.chunks(XERIAL_BLOCK_BYTES) {
        let compressed = encoder.compress_vec(block).map_err(io::Error::other)?;
        out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        out.extend_from_slice(&compressed);
    }
    Ok(out)
}

/// Decompresses `data`, refusing output larger than `limit` bytes without ever holding more
/// than `limit` (plus one read buffer) in memory.
pub fn decompress(codec: Codec, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let name = codec.name();
    let corrupt = |e: &dyn std::fmt::Display| DecompressError::Corrupt {
        codec: name,
        reason: e.to_string(),
    };
    match codec {
        Codec::None if data.len() > limit => Err(DecompressError::TooLarge { codec: name, limit }),
        Codec::None => Ok(data.to_vec()),
        Codec::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(data), name, limit),
        Codec::Lz4 => {
            let decoder = lz4::Decoder::new(data).map_err(|e| corrupt(&e))?;
            read_bounded(decoder, name, limit)
        }
        Codec::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(data).map_err(|e| corrupt(&e))?;
            read_bounded(decoder, name, limit)
        }
        Codec::Snappy => snappy_decompress(data, limit),
    }
}

/// Reads `reader` to its end into memory, at most `limit` bytes.
fn read_bounded(
    reader: impl Read,
    codec: &'static str,
    limit: usize,
) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::Corrupt {
            codec,
            reason: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { codec, limit });
    }
    Ok(out)
}

fn snappy_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let corrupt = |reason: String| DecompressError::Corrupt {
        codec: "snappy",
        reason,
    };
    let too_large = DecompressError::TooLarge {
        codec: "snappy",
        limit,
    };
    let mut decoder = snap::raw::Decoder::new();
    let mut raw = |block: &[u8], out: &mut Vec<u8>| -> Result<(), DecompressError> {
        let len = snap::raw::decompress_len(block).map_err(|e| corrupt(e.to_string()))?;
        if len > limit.saturating_sub(out.len()) {
            return Err(too_large.clone());
        }
        let start = out.len();
        out.resize(start + len, 0);
        let n = decoder
            .decompress(block, &mut out[start..])
            .map_err(|e| corrupt(e.to_string()))?;
        out.truncate(start + n);
        Ok(())
    };
    let mut out = Vec::new();
    let Some(mut rest) = data.strip_prefix(&XERIAL_MAGIC[..8]) else {
        // Not xerial-framed: one raw snappy block (Kafka's reader accepts both).
        raw(data, &mut out)?;
        return Ok(out);
    };
    // Version and minimum compatible version (4 bytes each), then blocks.
    rest = rest
        .get(8..)
        .ok_or_else(|| corrupt("truncated xerial header".into()))?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("truncated block length".into()))?;
        let len = u32::from_be_bytes(*len) as usize;
        let block = tail
            .get(..len)
            .ok_or_else(|| corrupt("block overruns the data".into()))?;
        raw(block, &mut out)?;
        rest = &tail[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn round_trips_at_every_level_bound() {
        let data = sample();
        for (codec, levels) in [
            (Codec::None, vec![0]),
            (Codec::Gzip, vec![-1, 1, 9]),
            (Codec::Snappy, vec![0]),
            (Codec::Lz4, vec![1, 9, 17]),
            (Codec::Zstd, vec![-131072, -5, 3, 22]),
        ] {
            for level in levels {
                let c = compress(codec, level, &data).expect("compress");
                assert_eq!(
                    decompress(codec, &c, data.len()).expect("decompress"),
                    data,
                    "{codec:?} level {level}"
                );
            }
        }
    }

    #[test]
    fn kafka_protocol_encodings_decode() {
        use kafka_protocol::compression::{self as kp, Compressor};
        let data = sample();
        let mut outs = Vec::new();
        let fill = |b: &mut bytes::BytesMut| {
            b.extend_from_slice(&data);
            Ok(())
        };
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let mut out = bytes::BytesMut::new();
            match codec {
                Codec::Gzip => kp::Gzip::compress(&mut out, fill),
                Codec::Snappy => kp::Snappy::compress(&mut out, fill),
                Codec::Lz4 => kp::Lz4::compress(&mut out, fill),
                _ => kp::Zstd::compress(&mut out, fill),
            }
            .expect("kafka-protocol compress");
            outs.push((codec, out));
        }
        for (codec, out) in outs {
            assert_eq!(decompress(codec, &out, data.len()).expect("decode"), data);
        }
        // raw (unframed) snappy
        let raw = snap::raw::Encoder::new().compress_vec(&data).expect("raw");
        assert_eq!(
            decompress(Codec::Snappy, &raw, data.len()).expect("raw"),
            data
        );
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let zeros = vec![0u8; 4 << 20];
        for codec in ALL {
            let c = compress(codec, 1, &zeros).expect("compress");
            assert!(
                matches!(
                    decompress(codec, &c, 1 << 20),
                    Err(DecompressError::TooLarge { .. })
                ),
                "{codec:?}"
            );
            assert_eq!(
                decompress(codec, &c, 4 << 20).expect("at the limit").len(),
                4 << 20
            );
        }
    }

    #[test]
    fn garbage_is_corrupt() {
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            assert!(
                matches!(
                    decompress(codec, b"\x82SNAPPY\x00garbage-garbage-garbage", 1 << 20),
                    Err(DecompressError::Corrupt { .. })
                ),
                "{codec:?}"
            );
        }
    }
}
