//! Produce v0-2: advertised (Kafka 4 does too, so that old librdkafka keeps compression on)
//! but refused. kafka-protocol decodes Produce from v3, whose body is v2's with a leading
//! transactional id, so the request is read by prefixing a null one; the answer is written by
//! hand in the v0-2 layout with UNSUPPORTED_VERSION for every partition.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::protocol::Decodable;

/// Decodes a v0-2 produce body and returns the framed error response (`None` for acks=0).
pub fn refuse_old_produce(
    body: Bytes,
    version: i16,
    correlation_id: i32,
) -> anyhow::Result<Option<Bytes>> {
    let req = super::guarded(|| decode_old_produce(&body))?;
    tracing::warn!(
        version,
        correlation_id,
        "refusing a produce request older than v3"
    );
    Ok(old_produce_response(&req, version, correlation_id))
}

/// Decodes a v0-2 produce body (as v3 with a null transactional id). Catches no panic.
pub fn decode_old_produce(body: &Bytes) -> anyhow::Result<ProduceRequest> {
    let mut prefixed = BytesMut::with_capacity(body.len() + 2);
    prefixed.put_i16(-1);
    prefixed.extend_from_slice(body);
    let mut prefixed = prefixed.freeze();
    ProduceRequest::decode(&mut prefixed, 3)
}

/// The framed v0-2 answer to `req`: UNSUPPORTED_VERSION for every partition (`None` for
/// acks=0).
pub fn old_produce_response(
    req: &ProduceRequest,
    version: i16,
    correlation_id: i32,
) -> Option<Bytes> {
    if req.acks == 0 {
        return None;
    }
    let mut out = BytesMut::new();
    out.put_i32(0);
    out.put_i32(correlation_id);
    out.put_i32(req.topic_data.len() as i32);
    for t in &req.topic_data {
        // The name came in an i16-length string, so it fits one; cut to be sure the length
        // written is the length of what follows.
        let name = t.name.0.as_bytes();
        let name = &name[..name.len().min(i16::MAX as usize)];
        out.put_i16(name.len() as i16);
        out.put_slice(name);
        out.put_i32(t.partition_data.len() as i32);
        for p in &t.partition_data {
            out.put_i32(p.index);
            out.put_i16(ResponseError::UnsupportedVersion.code());
            out.put_i64(-1);
            if version >= 2 {
                out.put_i64(-1);
            }
        }
    }
    if version >= 1 {
        out.put_i32(0);
    }
    let len = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&len.to_be_bytes());
    Some(out.freeze())
}
