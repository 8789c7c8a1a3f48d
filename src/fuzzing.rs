//! The fuzz targets' bodies, as plain functions: libFuzzer drives them from `fuzz/` (cargo-fuzz,
//! nightly), `tests/it/fuzz_replay.rs` on stable (the committed corpus, then a deterministic
//! mutation loop). Each takes arbitrary bytes and must never panic, abort or allocate without
//! bound; errors are the expected outcome for most inputs. Where an input is accepted, some
//! targets also check what the code promises of it (a rebuilt batch passes validation, ...):
//! a broken promise panics, which the fuzzer reports as a crash.
//!
//! Not part of the broker's API (`#[doc(hidden)]`): the targets reach crate-private decoders
//! through it.

pub mod seeds;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind};
use kafka_protocol::records::Record;

use crate::log::batch::{self, BatchHeader, HEADER_BYTES};
use crate::log::codec::Codec;
use crate::log::validate::{self, Checked, Levels, RecordPolicy, TopicPartition};
use crate::protocol::{self, legacy, versions};
use crate::security::oauthbearer::{self, Jwks, OAuthServer, Validator};
use crate::security::{plain, scram};

/// The most a fuzzed batch may be or decompress to: small, so that executions stay fast and a
/// bomb is cut early (the bound itself is what is tested).
pub const FUZZ_BATCH_BYTES: usize = 1 << 20;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The targets, by name (`fuzz/fuzz_targets/<name>.rs`, `fuzz/corpus/<name>/`).
pub const TARGETS: [(&str, Target); 4] = [
    ("request_decoder", request_decoder),
    ("record_batches", record_batches),
    ("internal_records", internal_records),
    ("sasl_messages", sasl_messages),
];

/// A request frame (without its size prefix) through the server's decoding: the header, then
/// the body, for API keys and versions the version table serves. A frame naming an API or
/// version not served is first mapped onto a served one (key and version taken modulo the
/// table), so that every input reaches a body decoder (the server closes the connection on
/// such a frame before decoding anything). Produce requests' record sets then go through the
/// format check, as the produce handler runs it.
pub fn request_decoder(data: &[u8]) {
    let mut frame = data.to_vec();
    if frame.len() >= 4 {
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let served = ApiKey::try_from(key)
            .ok()
            .and_then(versions::supported_range)
            .is_some_and(|(min, max)| (min..=max).contains(&version));
        if !served {
            let (api, min, max) =
                versions::SUPPORTED[key as u16 as usize % versions::SUPPORTED.len()];
            let version = min + (version as u16 % (max - min + 1) as u16) as i16;
            frame[0..2].copy_from_slice(&(api as i16).to_be_bytes());
            frame[2..4].copy_from_slice(&version.to_be_bytes());
        }
    }
    let frame = Bytes::from(frame);
    let Ok((api_key, header, body)) = protocol::decode_header(&frame) else {
        return;
    };
    let version = header.request_api_version;
    if api_key == ApiKey::Produce && version < versions::PRODUCE_MIN_DECODABLE {
        if let Ok(req) = legacy::decode_old_produce(&body) {
            let _ = legacy::old_produce_response(&req, version, header.correlation_id);
        }
        return;
    }
    let Ok(request) = protocol::decode_body(api_key, version, body) else {
        return;
    };
    if let RequestKind::Produce(p) = &request {
        for t in &p.topic_data {
            for part in &t.partition_data {
                if let Some(records) = &part.records {
                    let _ = batch::validate_batches(records, FUZZ_BATCH_BYTES);
                }
            }
        }
    }
}

/// Record batches through the produce path's checks and the stored-batch reader. The first
/// byte is a selector: bit 0 set fixes every batch's CRC first (so that mutations reach the
/// records rather than the checksum), bits 1-3 pick the second topic config's codec
/// (`producer`, none, gzip, snappy, lz4, zstd), bit 4 makes it LogAppendTime. The rest is a
/// record set as a produce request carries it.
///
/// Batches that pass the format check ([`batch::validate_batches`]) are checked against a
/// compacted uncompressed topic and the selected one ([`validate::check_batch`]); a rebuilt
/// batch must pass the format check and read back with as many records. Whatever the format
/// check says, the bytes are then read as stored batches ([`validate::decode_stored_batches`]),
/// and a batch the stored reader accepts must decode to its header's record count.
pub fn record_batches(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut set = rest.to_vec();
    if selector & 1 != 0 {
        fix_crcs(&mut set);
    }
    let codecs = [
        None,
        Some(Codec::None),
        Some(Codec::Gzip),
        Some(Codec::Snappy),
        Some(Codec::Lz4),
        Some(Codec::Zstd),
    ];
    let base = RecordPolicy {
        topic_partition: TopicPartition {
            topic: "fuzz",
            partition: 0,
        },
        compacted: true,
        log_append_time: false,
        timestamp_before_max_ms: i64::MAX,
        timestamp_after_max_ms: i64::MAX,
        now_ms: 1_700_000_000_000,
        target: Some(Codec::None),
        levels: Levels {
            gzip: 1,
            lz4: 1,
            zstd: 1,
        },
        max_batch_bytes: FUZZ_BATCH_BYTES,
        max_decompressed_bytes: FUZZ_BATCH_BYTES,
    };
    let selected = RecordPolicy {
        compacted: false,
        log_append_time: selector & 0x10 != 0,
        timestamp_before_max_ms: 3_600_000,
        timestamp_after_max_ms: 3_600_000,
        target: codecs[(selector as usize >> 1 & 7) % codecs.len()],
        ..base.clone()
    };
    if batch::validate_batches(&set, FUZZ_BATCH_BYTES).is_ok() {
        let mut pos = 0;
        while let Some(h) = BatchHeader::parse(&set[pos..]) {
            let one = &set[pos..pos + h.total_bytes];
            for policy in [&base, &selected] {
                if let Ok(Checked::Rewritten(out)) = validate::check_batch(one, policy) {
                    let summary = batch::validate_batches(&out, FUZZ_BATCH_BYTES);
                    assert!(
                        summary.is_ok(),
                        "a rebuilt batch fails validation: {summary:?}"
                    );
                    let read = validate::stored_records(&out, usize::MAX);
                    assert!(
                        read.as_ref()
                            .is_ok_and(|r| r.len() == h.records_count as usize),
                        "a rebuilt batch does not read back: {:?}",
                        read.map(|r| r.len())
                    );
                }
            }
            pos += h.total_bytes;
            if pos >= set.len() {
                break;
            }
        }
        let mut patched = set.clone();
        batch::assign_offsets(&mut patched, i64::MAX / 2);
        batch::stamp_leader_epoch(&mut patched, 7);
        batch::stamp_log_append_time(&mut patched, 1);
    }
    for (_, stored) in validate::decode_stored_batches(&set, FUZZ_BATCH_BYTES) {
        if let Ok(records) = stored {
            let mut n = 0;
            for r in records.iter() {
                std::hint::black_box(r);
                n += 1;
            }
            assert_eq!(n, records.len(), "a checked batch reads fewer records");
        }
    }
}

/// Recomputes the CRC of every batch of `set` whose header parses (bytes 17-21, over the
/// attributes to the batch's end or the data's).
pub fn fix_crcs(set: &mut [u8]) {
    let mut pos = 0usize;
    while let Some(h) = set.get(pos..).and_then(BatchHeader::parse) {
        let end = pos.saturating_add(h.total_bytes).min(set.len());
        let crc = crc32c::crc32c(&set[pos + 21..end]);
        set[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
        if end >= set.len() {
            break;
        }
        pos = end;
    }
}

/// The internal records' decoders. The first byte selects:
/// - 0: a `__consumer_offsets` record (the rest: a u16 key length, the key, the value; bit 3
///   of the selector makes it a control record, bit 4 transactional), decoded and replayed
///   into a group shard, whose groups are then derived;
/// - 1: a `__transaction_state` record (same layout), decoded and replayed;
/// - 2: stored batches (the load path, `PartitionLog::for_each_record`): every readable
///   record decoded and replayed as both kinds;
/// - 3: a metadata-log entry's JSON ([`crate::meta::records::MetaBatch`]), applied to an
///   empty metadata image;
/// - 4: a metadata-log segment file (the Raft log's scan), its entries applied;
/// - 5: a control batch's control record (the log's transaction markers);
/// - 6: checkpoint texts: the leader-epoch cache, the high watermarks, the transaction index.
pub fn internal_records(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector & 7 {
        0 | 1 => {
            let Some(record) = split_record(rest, selector) else {
                return;
            };
            if selector & 7 == 0 {
                replay_offsets(std::iter::once(record));
            } else {
                replay_txn(std::iter::once(record));
            }
        }
        2 => {
            let mut records = Vec::new();
            for (_, set) in validate::decode_stored_batches(rest, FUZZ_BATCH_BYTES) {
                if let Ok(set) = set {
                    records.extend(set.iter().take(1000));
                }
            }
            replay_offsets(records.iter().cloned());
            replay_txn(records.into_iter());
        }
        3 => {
            if let Ok(batch) = serde_json::from_slice::<crate::meta::records::MetaBatch>(rest) {
                apply_meta(std::iter::once(batch));
            }
        }
        4 => {
            let scan = crate::meta::raft_log::scan_bytes(rest);
            assert!(scan.good_len as usize <= rest.len());
            apply_meta(
                scan.entries
                    .into_iter()
                    .filter_map(|(_, e)| match e.payload {
                        openraft::EntryPayload::Normal(batch) => Some(batch),
                        _ => None,
                    }),
            );
        }
        5 => {
            if let Some(h) = BatchHeader::parse(rest) {
                let _ = crate::log::txn::parse_control_record(&h, &rest[HEADER_BYTES..]);
            }
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let _ = crate::log::epoch_cache::parse(&text);
            let _ = crate::cluster::hw_checkpoint::parse(&text);
            for entry in rest.chunks_exact(crate::log::txn::TXN_ENTRY_BYTES) {
                let _ = crate::log::AbortedTxn::decode(entry);
            }
        }
    }
}

/// `u16 key length, key, value` as one record (key or value absent when empty).
fn split_record(rest: &[u8], selector: u8) -> Option<Record> {
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let len = (u16::from_be_bytes(*len) as usize).min(rest.len());
    let (key, value) = rest.split_at(len);
    let mut r = batch::plain_record(
        0,
        (!key.is_empty()).then(|| Bytes::copy_from_slice(key)),
        (!value.is_empty()).then(|| Bytes::copy_from_slice(value)),
        0,
    );
    r.control = selector & 0x08 != 0;
    r.transactional = selector & 0x10 != 0;
    r.producer_id = 5;
    Some(r)
}

fn replay_offsets(records: impl Iterator<Item = Record>) {
    use crate::coordinator::Shard;
    use crate::groups::shard::GroupShard;
    let mut shard = GroupShard::default();
    for r in records {
        if let Some(record) = GroupShard::decode(r) {
            shard.replay(&record);
        }
    }
    let config = crate::groups::GroupConfig {
        initial_rebalance_delay_ms: 0,
        min_session_timeout_ms: 6000,
        max_session_timeout_ms: 1_800_000,
        offsets_retention_ms: 7 * 24 * 3_600_000,
    };
    let _ = crate::groups::shard::Groups::load(&shard, config, 0);
}

fn replay_txn(records: impl Iterator<Item = Record>) {
    use crate::coordinator::Shard;
    use crate::txn::coordinator::TxnShard;
    let mut shard = TxnShard::default();
    for r in records {
        if let Some(record) = TxnShard::decode(r) {
            shard.replay(&record);
        }
    }
}

fn apply_meta(batches: impl Iterator<Item = crate::meta::records::MetaBatch>) {
    let mut image = crate::meta::image::MetadataImage::default();
    let mut delta = crate::meta::image::Delta::default();
    for (i, batch) in batches.enumerate() {
        let log_id = openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), i as u64 + 1);
        image.apply(log_id, &batch.records, &mut delta);
    }
}

/// The server nonce of the fuzzed SCRAM exchanges (fixed, so that a seed's client-final
/// message can carry the full nonce).
pub const SCRAM_SERVER_NONCE: &str = "fuzzServerNonce0123456789";
/// The user, password, salt and iterations of the fuzzed SCRAM credential.
pub const SCRAM_USER: &str = "fuzz";
pub const SCRAM_PASSWORD: &str = "fuzz-secret";
pub const SCRAM_SALT: &[u8] = b"fuzz-salt";
pub const SCRAM_ITERATIONS: i32 = 4096;
/// The time the OAUTHBEARER tokens are validated at.
pub const OAUTH_NOW_MS: i64 = 1_700_000_000_000;

/// The credential of [`SCRAM_USER`] (PBKDF2 once per process and mechanism).
pub fn scram_credential(m: scram::Mechanism) -> Option<scram::Credential> {
    static SHA256: OnceLock<Option<scram::Credential>> = OnceLock::new();
    static SHA512: OnceLock<Option<scram::Credential>> = OnceLock::new();
    let cell = match m {
        scram::Mechanism::Sha256 => &SHA256,
        scram::Mechanism::Sha512 => &SHA512,
    };
    cell.get_or_init(|| {
        scram::Credential::from_password(m, SCRAM_PASSWORD, SCRAM_SALT, SCRAM_ITERATIONS).ok()
    })
    .clone()
}

/// The SASL parsers. The first byte selects:
/// - 0, 1: a SCRAM-SHA-256 / -512 exchange: the rest is the client-first-message, a NUL, the
///   client-final-message (bit 3 of the selector: the user is unknown, a decoy credential);
/// - 2: a PLAIN message (`authzid NUL user NUL password`);
/// - 3: an OAUTHBEARER exchange with the unsecured validator: the initial response, a NUL-NUL
///   pair, the next message (`%x01` after an error challenge);
/// - 4: a JWKS document; when it parses, a token (after a NUL) validated against it.
pub fn sasl_messages(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector & 7 {
        0 | 1 => {
            let m = if selector & 7 == 0 {
                scram::Mechanism::Sha256
            } else {
                scram::Mechanism::Sha512
            };
            let (first, last) = match rest.iter().position(|&b| b == 0) {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &[][..]),
            };
            let mut server = scram::ScramServer::with_nonce(m, SCRAM_SERVER_NONCE.to_string());
            if server.client_first(first).is_err() {
                return;
            }
            let credential = if selector & 0x08 != 0 {
                None
            } else {
                scram_credential(m)
            };
            if server.server_first(credential).is_err() {
                return;
            }
            let _ = server.client_final(last);
            // Out of order: refused, not a panic.
            let _ = server.client_first(first);
        }
        2 => {
            let _ = plain::parse(rest);
        }
        3 => {
            let (first, next) = match rest.windows(2).position(|w| w == [0, 0]) {
                Some(at) => (&rest[..at], &rest[at + 2..]),
                None => (rest, &[][..]),
            };
            let _ = oauthbearer::parse_client_initial_response(first);
            static UNSECURED: OnceLock<Arc<Validator>> = OnceLock::new();
            let validator = UNSECURED.get_or_init(|| Arc::new(Validator::unsecured()));
            let mut server = OAuthServer::new(validator.clone(), OAUTH_NOW_MS);
            if server.step(first).is_ok() {
                let _ = server.step(next);
            }
        }
        _ => {
            let (jwks, token) = match rest.iter().position(|&b| b == 0) {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &[][..]),
            };
            if let Ok(keys) = Jwks::parse(jwks) {
                if let Ok(token) = std::str::from_utf8(token) {
                    let _ = Validator::jwks(keys).validate(token, OAUTH_NOW_MS);
                }
            }
        }
    }
}

/// The deterministic mutator of the stable replay (`tests/it/fuzz_replay.rs`,
/// `tests/it/fuzz_requests.rs`): xorshift64, bit flips, random bytes, byte inserts and deletes,
/// truncation, splices from another input, and interesting integers (0, -1, i16/i32 bounds,
/// 2^31, varints) written at random positions.
pub struct Mutator(u64);

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// `input` with one to eight mutations; `other` is spliced from.
    pub fn mutate(&mut self, input: &[u8], other: &[u8]) -> Vec<u8> {
        const INTERESTING: [&[u8]; 12] = [
            &[0xff, 0xff, 0xff, 0xff],
            &[0x7f, 0xff, 0xff, 0xff],
            &[0x80, 0x00, 0x00, 0x00],
            &[0x00, 0x00, 0x00, 0x00],
            &[0x7f, 0xff],
            &[0x80, 0x00],
            &[0xff, 0xff],
            &[0x00, 0x00, 0x00, 0x01],
            &[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            // varints: 2^31 and -1 zig-zag, a 10-byte maximum, an unterminated one
            &[0x80, 0x80, 0x80, 0x80, 0x10],
            &[0x01],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ];
        let mut f = input.to_vec();
        for _ in 0..=self.below(8) {
            let at = self.below(f.len() + 1);
            match self.below(9) {
                0 if !f.is_empty() => {
                    let i = at.min(f.len() - 1);
                    f[i] ^= 1 << self.below(8);
                }
                1 if !f.is_empty() => {
                    let i = at.min(f.len() - 1);
                    f[i] = self.next_u64() as u8;
                }
                2 => {
                    let n = self.below(8) + 1;
                    let junk: Vec<u8> = (0..n).map(|_| self.next_u64() as u8).collect();
                    f.splice(at..at, junk);
                }
                3 if !f.is_empty() => {
                    let end = (at + self.below(16) + 1).min(f.len());
                    f.drain(at.min(end)..end);
                }
                4 if self.below(4) == 0 => f.truncate(at),
                5 => {
                    let value = INTERESTING[self.below(INTERESTING.len())];
                    for (i, b) in value.iter().enumerate() {
                        if let Some(x) = f.get_mut(at + i) {
                            *x = *b;
                        }
                    }
                }
                6 => {
                    let value = INTERESTING[self.below(INTERESTING.len())];
                    f.splice(at..at, value.iter().copied());
                }
                7 if !other.is_empty() => {
                    let from = self.below(other.len());
                    let end = (from + self.below(64) + 1).min(other.len());
                    f.splice(at..at, other[from..end].iter().copied());
                }
                _ => {
                    // Overwrite with a piece of itself (a duplicated field or element).
                    if !f.is_empty() {
                        let from = self.below(f.len());
                        let end = (from + self.below(32) + 1).min(f.len());
                        let piece = f[from..end].to_vec();
                        f.splice(at..at, piece);
                    }
                }
            }
        }
        f
    }
}
