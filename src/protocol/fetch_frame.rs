//! Fetch responses encoded around their record data: the response is a list of parts where
//! each partition's records stay a [`Records`] value (on disk a stretch of a segment file), so
//! the connection writer sends them with `sendfile` and the broker never copies record bytes.
//!
//! The layout is FetchResponse v4-v18 as the schema gives it (flexible from v12); a unit test
//! checks that the parts, concatenated, equal the `kafka-protocol` encoding of the same
//! response for every version. Responses using a field this encoder does not write (tagged
//! fields: diverging epoch, current leader, snapshot id, node endpoints) are encoded by
//! `kafka-protocol` instead, with the records read into memory.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{FetchResponse, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;

pub use crate::handlers::fetch::FetchAnswer;
use crate::log::Records;

use super::Response;

/// First version with flexible (compact) encoding and tagged fields.
const FLEXIBLE: i16 = 12;

/// Encodes `answer` as a size-prefixed response frame.
pub fn encode(correlation_id: i32, version: i16, answer: FetchAnswer) -> anyhow::Result<Response> {
    if !plain(&answer.response) {
        return encode_materialized(correlation_id, version, answer);
    }
    let flexible = version >= FLEXIBLE;
    let r = &answer.response;
    let mut parts: Vec<Records> = Vec::with_capacity(2 * answer.records.len() + 1);
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(correlation_id);
    if flexible {
        out.put_u8(0); // response header tagged fields
    }
    out.put_i32(r.throttle_time_ms);
    if version >= 7 {
        out.put_i16(r.error_code);
        out.put_i32(r.session_id);
    }
    put_len(&mut out, flexible, r.responses.len());
    let mut records = answer.records.into_iter();
    for t in &r.responses {
        if version >= 13 {
            out.put_slice(t.topic_id.as_bytes());
        } else {
            put_str(&mut out, flexible, t.topic.0.as_str());
        }
        put_len(&mut out, flexible, t.partitions.len());
        for p in &t.partitions {
            put_partition_head(&mut out, version, p);
            let data = records
                .next()
                .ok_or_else(|| anyhow::anyhow!("fetch answer has fewer records than partitions"))?;
            put_len(&mut out, flexible, data.len());
            if !data.is_empty() {
                parts.push(Records::Bytes(out.split().freeze()));
                parts.push(data);
            }
            if flexible {
                out.put_u8(0); // partition tagged fields
            }
        }
        if flexible {
            out.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        out.put_u8(0); // response tagged fields (node endpoints: none)
    }
    parts.push(Records::Bytes(out.freeze()));
    // The size prefix is a part of its own (the writer's buffer joins the small parts).
    let size = i32::try_from(parts.iter().map(Records::len).sum::<usize>())?;
    parts.insert(
        0,
        Records::Bytes(Bytes::copy_from_slice(&size.to_be_bytes())),
    );
    Ok(Response { parts })
}

/// Whether the response uses only fields this encoder writes (`records` is ignored: the
/// answer's records replace it).
fn plain(r: &FetchResponse) -> bool {
    r.node_endpoints.is_empty()
        && r.unknown_tagged_fields.is_empty()
        && r.responses.iter().all(|t| {
            t.unknown_tagged_fields.is_empty()
                && t.partitions.iter().all(|p| {
                    p.diverging_epoch == Default::default()
                        && p.current_leader == Default::default()
                        && p.snapshot_id == Default::default()
                        && p.unknown_tagged_fields.is_empty()
                        && p.aborted_transactions
                            .iter()
                            .flatten()
                            .all(|a| a.unknown_tagged_fields.is_empty())
                })
        })
}

/// The `kafka-protocol` encoding, records read into memory.
fn encode_materialized(
    correlation_id: i32,
    version: i16,
    answer: FetchAnswer,
) -> anyhow::Result<Response> {
    let mut response = answer.response;
    let mut records = answer.records.into_iter();
    for p in response
        .responses
        .iter_mut()
        .flat_map(|t| t.partitions.iter_mut())
    {
        if let Some(data) = records.next() {
            p.records = Some(data.to_bytes()?);
        }
    }
    let mut out = BytesMut::new();
    out.put_i32(0);
    let header_version = if version >= FLEXIBLE { 1 } else { 0 };
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, header_version)?;
    ResponseKind::Fetch(response).encode(&mut out, version)?;
    let size = i32::try_from(out.len() - 4)?;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(Response {
        parts: vec![Records::Bytes(out.freeze())],
    })
}

/// A partition's fields before its records (whose length comes next).
fn put_partition_head(out: &mut BytesMut, version: i16, p: &PartitionData) {
    let flexible = version >= FLEXIBLE;
    out.put_i32(p.partition_index);
    out.put_i16(p.error_code);
    out.put_i64(p.high_watermark);
    out.put_i64(p.last_stable_offset);
    if version >= 5 {
        out.put_i64(p.log_start_offset);
    }
    match &p.aborted_transactions {
        None if flexible => out.put_u8(0),
        None => out.put_i32(-1),
        Some(list) => {
            put_len(out, flexible, list.len());
            for a in list {
                out.put_i64(a.producer_id.0);
                out.put_i64(a.first_offset);
                if flexible {
                    out.put_u8(0);
                }
            }
        }
    }
    if version >= 11 {
        out.put_i32(p.preferred_read_replica.0);
    }
}

/// An array count or a bytes/string length (never null here).
fn put_len(out: &mut BytesMut, flexible: bool, len: usize) {
    if flexible {
        put_uvarint(out, len as u64 + 1);
    } else {
        out.put_i32(len as i32);
    }
}

fn put_str(out: &mut BytesMut, flexible: bool, s: &str) {
    if flexible {
        put_uvarint(out, s.len() as u64 + 1);
    } else {
        out.put_i16(s.len() as i16);
    }
    out.put_slice(s.as_bytes());
}

fn put_uvarint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// The records of a fetch answer as one buffer (tests and benchmarks).
pub fn bytes_of(parts: &[Records]) -> std::io::Result<Bytes> {
    let mut out = BytesMut::new();
    for p in parts {
        out.extend_from_slice(&p.to_bytes()?);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse};
    use kafka_protocol::messages::{BrokerId, ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn answer(with_file: bool) -> (FetchAnswer, Vec<Option<Bytes>>) {
        use std::io::Write;
        let file_bytes: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(&file_bytes).expect("write");
        let file = std::sync::Arc::new(file);
        let mut records = Vec::new();
        let mut expected = Vec::new();
        let mut topics = Vec::new();
        for (ti, name) in ["alpha", "b"].iter().enumerate() {
            let mut partitions = Vec::new();
            for pi in 0..3 {
                let p = PartitionData::default()
                    .with_partition_index(pi)
                    .with_error_code(if pi == 2 { 1 } else { 0 })
                    .with_high_watermark(1000 + pi as i64)
                    .with_last_stable_offset(900 + pi as i64)
                    .with_log_start_offset(7)
                    .with_preferred_read_replica(BrokerId(-1))
                    .with_aborted_transactions(match pi {
                        0 => None,
                        1 => Some(vec![]),
                        _ => Some(vec![AbortedTransaction::default()
                            .with_producer_id(ProducerId(42))
                            .with_first_offset(17)]),
                    });
                partitions.push(p);
                let (r, bytes) = match (pi, with_file) {
                    (0, true) => {
                        let slice = crate::log::FileSlice {
                            file: file.clone(),
                            pos: 100 + ti as u64,
                            len: 3000,
                        };
                        let b = Bytes::copy_from_slice(&file_bytes[100 + ti..3100 + ti]);
                        (Records::File(slice), b)
                    }
                    (1, _) => (Records::Bytes(Bytes::new()), Bytes::new()),
                    _ => {
                        let b = Bytes::from(vec![ti as u8 + pi as u8; 10 + pi as usize]);
                        (Records::Bytes(b.clone()), b)
                    }
                };
                records.push(r);
                expected.push(Some(bytes));
            }
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_static_str(name)))
                    .with_topic_id(uuid::Uuid::from_u128(0x1234 + ti as u128))
                    .with_partitions(partitions),
            );
        }
        let response = FetchResponse::default()
            .with_throttle_time_ms(3)
            .with_error_code(0)
            .with_session_id(0)
            .with_responses(topics);
        (FetchAnswer { response, records }, expected)
    }

    fn reference(version: i16, answer: &FetchAnswer, expected: &[Option<Bytes>]) -> Bytes {
        let mut response = answer.response.clone();
        let mut it = expected.iter();
        for p in response
            .responses
            .iter_mut()
            .flat_map(|t| t.partitions.iter_mut())
        {
            p.records = it.next().cloned().flatten();
        }
        let mut out = BytesMut::new();
        out.put_i32(0);
        let hv = if version >= FLEXIBLE { 1 } else { 0 };
        ResponseHeader::default()
            .with_correlation_id(77)
            .encode(&mut out, hv)
            .expect("header");
        response.encode(&mut out, version).expect("body");
        let size = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&size.to_be_bytes());
        out.freeze()
    }

    #[test]
    fn parts_equal_the_reference_encoding_for_every_version() {
        for with_file in [false, true] {
            for version in 4..=18 {
                let (a, expected) = answer(with_file);
                let want = reference(version, &a, &expected);
                let got = encode(77, version, a).expect("encode");
                assert!(got.parts.len() > 1, "records are separate parts");
                assert_eq!(
                    bytes_of(&got.parts).expect("bytes"),
                    want,
                    "version {version}, file {with_file}"
                );
            }
        }
    }

    #[test]
    fn tagged_fields_fall_back_to_the_reference_encoder() {
        let (mut a, expected) = answer(true);
        a.response.responses[0].partitions[0]
            .current_leader
            .leader_id = BrokerId(1);
        let want = reference(15, &a, &expected);
        let got = encode(77, 15, a).expect("encode");
        assert_eq!(got.parts.len(), 1);
        assert_eq!(bytes_of(&got.parts).expect("bytes"), want);
    }
}
