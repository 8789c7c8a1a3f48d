//! Bad input never kills the broker: garbage, oversized and truncated frames, unknown APIs,
//! unsupported versions, corrupt batches and absurd array lengths are answered with an error
//! or end that one connection, while other clients keep being served.

use crate::common;

use bytes::{BufMut, BytesMut};
use common::{batch, encode_request, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::Compression;
use ottla::config::Config;

async fn still_serving(broker: &TestBroker) {
    let mut c = broker.client().await;
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("ottla-test"))
        .with_client_software_version(StrBytes::from_static_str("1.0"));
    let r = c.send(&req, 3).await;
    assert_eq!(r.error_code, 0);
    assert!(!r.api_keys.is_empty());
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut b = (body.len() as i32).to_be_bytes().to_vec();
    b.extend_from_slice(body);
    b
}

#[tokio::test]
async fn garbage_closes_only_that_connection() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    c.write_raw(&frame(b"\xff\xff\xff\xffthis is not kafka"))
        .await
        .unwrap();
    assert!(c.is_closed().await, "unknown api key closes the connection");
    still_serving(&broker).await;

    let mut c = broker.client().await;
    c.write_raw(&frame(&[0, 3])).await.unwrap();
    assert!(c.is_closed().await, "a frame shorter than a header closes");

    let mut c = broker.client().await;
    // Metadata v1 whose body is random bytes.
    c.write_raw(&frame(&[
        0, 3, 0, 1, 0, 0, 0, 9, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3,
    ]))
    .await
    .unwrap();
    assert!(c.is_closed().await, "undecodable body closes");
    still_serving(&broker).await;
    broker.stop().await;
}

#[tokio::test]
async fn oversized_and_truncated_frames() {
    let broker = TestBroker::start(Config {
        memory: true,
        max_frame_bytes: 4096,
        ..Config::default()
    })
    .await;
    let mut c = broker.client().await;
    c.write_raw(&5000i32.to_be_bytes()).await.unwrap();
    assert!(c.is_closed().await, "frame over the limit closes");
    let mut c = broker.client().await;
    c.write_raw(&(-1i32).to_be_bytes()).await.unwrap();
    assert!(c.is_closed().await, "negative length closes");
    {
        let mut c = broker.client().await;
        let full = encode_request(&ApiVersionsRequest::default(), 0, 1);
        c.write_raw(&full[..full.len() - 2]).await.unwrap();
        // dropped mid-frame
    }
    still_serving(&broker).await;
    broker.stop().await;
}

#[tokio::test]
async fn unsupported_versions() {
    let broker = TestBroker::memory().await;
    // ApiVersions newer than ours: a v0-layout answer with UNSUPPORTED_VERSION and our keys.
    let mut c = broker.client().await;
    let mut raw = BytesMut::new();
    raw.put_i16(18);
    raw.put_i16(99);
    raw.put_i32(7);
    raw.put_i16(-1);
    c.write_raw(&frame(&raw)).await.unwrap();
    let mut body = c.read_frame().await.expect("an answer");
    let corr = i32::from_be_bytes(body[..4].try_into().unwrap());
    assert_eq!(corr, 7);
    let _ = bytes::Buf::get_i32(&mut body);
    let r = ApiVersionsResponse::decode(&mut body, 0).expect("v0 layout");
    assert_eq!(r.error_code, ResponseError::UnsupportedVersion.code());
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == 18 && k.max_version == 4));

    // Any other API at a version we do not serve: connection closed.
    let mut c = broker.client().await;
    let mut v14 = encode_request(&MetadataRequest::default(), 13, 1);
    v14[6..8].copy_from_slice(&14i16.to_be_bytes());
    c.write_raw(&v14).await.unwrap();
    assert!(c.is_closed().await);
    // An API we do not serve at all.
    let mut c = broker.client().await;
    let mut raw = BytesMut::new();
    raw.put_i16(57); // UpdateFeatures
    raw.put_i16(0);
    raw.put_i32(1);
    raw.put_i16(-1);
    c.write_raw(&frame(&raw)).await.unwrap();
    assert!(c.is_closed().await);
    still_serving(&broker).await;
    broker.stop().await;
}

fn produce_one(topic: &str, records: bytes::Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])])
}

#[tokio::test]
async fn invalid_client_software_name_is_refused() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let r = c.send(&ApiVersionsRequest::default(), 3).await;
    assert_eq!(r.error_code, ResponseError::InvalidRequest.code());
    broker.stop().await;
}

#[tokio::test]
async fn corrupt_batches_get_error_codes() {
    let broker = TestBroker::memory().await;
    broker
        .broker
        .admin_create_topic("t", Some(1), Default::default())
        .await
        .unwrap();
    let mut c = broker.client().await;
    let good = batch(&[b"a", b"b"], Compression::None);

    let mut bad_crc = good.to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x55;
    let r = c.send(&produce_one("t", bad_crc.into()), 9).await;
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, ResponseError::CorruptMessage.code());
    assert_eq!(p.base_offset, -1);

    let truncated = good.slice(..good.len() - 4);
    let r = c.send(&produce_one("t", truncated), 9).await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::CorruptMessage.code()
    );

    let mut two = good.to_vec();
    two.extend_from_slice(&good);
    let r = c.send(&produce_one("t", two.into()), 9).await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::InvalidRecord.code()
    );

    let big = vec![0u8; 2_000_000];
    let r = c
        .send(&produce_one("t", batch(&[&big], Compression::None)), 9)
        .await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::MessageTooLarge.code()
    );

    // The connection is still usable and a good batch lands at offset 0: nothing bad was stored.
    let r = c.send(&produce_one("t", good), 9).await;
    let p = &r.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    broker.stop().await;
}

#[tokio::test]
async fn absurd_array_length_is_refused_not_fatal() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    // Metadata v1: topics array claiming 2^31-1 entries, then nothing.
    let mut raw = BytesMut::new();
    raw.put_i16(3);
    raw.put_i16(1);
    raw.put_i32(1);
    raw.put_i16(-1);
    raw.put_i32(i32::MAX);
    c.write_raw(&frame(&raw)).await.unwrap();
    assert!(c.is_closed().await);
    // Produce v9 (flexible): compact array length varint of u32::MAX.
    let mut c = broker.client().await;
    let mut raw = BytesMut::new();
    raw.put_i16(0);
    raw.put_i16(9);
    raw.put_i32(1);
    raw.put_i16(-1);
    raw.put_u8(0); // header tagged fields
    raw.put_u8(0); // transactional id: null
    raw.put_i16(1);
    raw.put_i32(1000);
    raw.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    c.write_raw(&frame(&raw)).await.unwrap();
    assert!(c.is_closed().await);
    still_serving(&broker).await;
    broker.stop().await;
}

#[tokio::test]
async fn old_produce_versions_are_refused_cleanly() {
    let broker = TestBroker::memory().await;
    broker
        .broker
        .admin_create_topic("t", Some(1), Default::default())
        .await
        .unwrap();
    let mut c = broker.client().await;
    // Produce v2: acks, timeout, topics[name, partitions[index, records]] (no transactional id).
    let records = batch(&[b"x"], Compression::None);
    let mut raw = BytesMut::new();
    raw.put_i16(0);
    raw.put_i16(2);
    raw.put_i32(11);
    raw.put_i16(-1);
    raw.put_i16(1);
    raw.put_i32(1000);
    raw.put_i32(1);
    raw.put_i16(1);
    raw.put_slice(b"t");
    raw.put_i32(1);
    raw.put_i32(0);
    raw.put_i32(records.len() as i32);
    raw.put_slice(&records);
    c.write_raw(&frame(&raw)).await.unwrap();
    let body = c.read_frame().await.expect("answer");
    // correlation id, 1 topic "t", 1 partition 0 with UNSUPPORTED_VERSION, base offset -1,
    // log append time -1, throttle 0.
    let mut want = BytesMut::new();
    want.put_i32(11);
    want.put_i32(1);
    want.put_i16(1);
    want.put_slice(b"t");
    want.put_i32(1);
    want.put_i32(0);
    want.put_i16(ResponseError::UnsupportedVersion.code());
    want.put_i64(-1);
    want.put_i64(-1);
    want.put_i32(0);
    assert_eq!(&body[..], &want[..]);
    let log = broker
        .broker
        .topics
        .get("t")
        .unwrap()
        .partition(0)
        .unwrap()
        .log()
        .clone();
    assert_eq!(log.log_end_offset(), 0, "nothing appended");
    broker.stop().await;
}
