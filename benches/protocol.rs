//! Micro-benchmarks of the wire-protocol hot paths, using the same calls as
//! `ottla::protocol::handle_frame`: decoding a Produce request frame (16 KB batch) and a Fetch
//! request frame, encoding a Produce response and a Fetch response carrying 1 MB of records
//! (with kafka-protocol, and with `fetch_frame`, the broker's fetch encoder).
//! Then whole requests through `handle_frame` against an in-memory broker (the full request
//! path minus the network): a 16 KB Produce and a 1 MB Fetch.
//! Run: `cargo bench --bench protocol`.

mod common;

use common::batch;
use std::hint::black_box;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, RequestHeader,
    RequestKind, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use ottla::broker::Broker;
use ottla::config::Config;
use ottla::log::{now_ms, LogConfig, PartitionLog, Records};
use ottla::protocol::fetch_frame::{self, FetchAnswer};
use ottla::protocol::{handle_frame, Outcome};
use ottla::server::Server;

/// Produce v9: the first flexible version, what current clients send.
const PRODUCE_VERSION: i16 = 9;
/// Fetch v16: topics by id, as current clients send.
const FETCH_VERSION: i16 = 16;
const PEER: &str = "127.0.0.1:40000";

/// A request frame as `handle_frame` receives it: header and body, no size prefix.
fn request_frame<R: Request>(req: &R, version: i16) -> Bytes {
    let api_key = ApiKey::try_from(R::KEY).expect("known key");
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(42)
        .with_client_id(Some(StrBytes::from_static_str("rdkafka")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api_key.request_header_version(version))
        .expect("header encodes");
    req.encode(&mut buf, version).expect("request encodes");
    buf.freeze()
}

/// Decodes a frame the way `handle_frame` does: the fixed header fields, the request header,
/// then the body by API key, both decoders guarded against panics.
fn decode_frame(frame: &Bytes) -> (RequestHeader, RequestKind) {
    let api_key = ApiKey::try_from((&frame[0..2]).get_i16()).expect("known key");
    let version = (&frame[2..4]).get_i16();
    let mut buf = frame.clone();
    let header = std::panic::catch_unwind(AssertUnwindSafe(|| {
        RequestHeader::decode(&mut buf, api_key.request_header_version(version))
    }))
    .expect("no panic")
    .expect("header decodes");
    let body = std::panic::catch_unwind(AssertUnwindSafe(|| {
        RequestKind::decode(api_key, &mut buf, version)
    }))
    .expect("no panic")
    .expect("body decodes");
    (header, body)
}

/// Encodes a size-prefixed response frame the way the broker's `encode` does.
fn encode_response(api_key: ApiKey, version: i16, body: &ResponseKind) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    out.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(42)
        .encode(&mut out, api_key.response_header_version(version))
        .expect("header encodes");
    body.encode(&mut out, version).expect("body encodes");
    let len = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

fn produce_request(topic: &str, records: Vec<u8>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records.into()))])])
}

fn fetch_request(topic: &str, topic_id: uuid::Uuid, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(52_428_800)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_topic_id(topic_id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(offset)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(1 << 20)])])
}

/// Up to 1 MB of whole 16 KB batches, as a read from the log returns them.
fn one_mb_of_batches(b: &[u8]) -> Bytes {
    let log = PartitionLog::in_memory(LogConfig::default());
    for _ in 0..80 {
        log.append(&mut b.to_vec(), None).expect("append");
    }
    log.read(0, 1 << 20, true).expect("read").records
}

fn codec(c: &mut Criterion) {
    let b = batch(160, 100, now_ms()); // ~16 KB, a typical librdkafka batch
    let mut g = c.benchmark_group("protocol");

    let produce = request_frame(&produce_request("bench", b.clone()), PRODUCE_VERSION);
    g.throughput(Throughput::Bytes(produce.len() as u64));
    g.bench_function("decode_produce_16k", |bench| {
        bench.iter(|| decode_frame(black_box(&produce)))
    });

    let response = ResponseKind::Produce(ProduceResponse::default().with_responses(
        vec![TopicProduceResponse::default()
            .with_name(TopicName(StrBytes::from_static_str("bench")))
            .with_partition_responses(vec![PartitionProduceResponse::default()
                .with_index(0)
                .with_error_code(0)
                .with_base_offset(123_456_789)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(0)])],
    ));
    let encoded = encode_response(ApiKey::Produce, PRODUCE_VERSION, &response);
    g.throughput(Throughput::Bytes(encoded.len() as u64));
    g.bench_function("encode_produce_response", |bench| {
        bench.iter(|| encode_response(ApiKey::Produce, PRODUCE_VERSION, black_box(&response)))
    });

    let fetch = request_frame(
        &fetch_request("bench", uuid::Uuid::new_v4(), 1_000_000),
        FETCH_VERSION,
    );
    g.throughput(Throughput::Bytes(fetch.len() as u64));
    g.bench_function("decode_fetch_request", |bench| {
        bench.iter(|| decode_frame(black_box(&fetch)))
    });

    // A Fetch response carrying 1 MB of records, encoded two ways: by kafka-protocol into one
    // buffer (the broker's `encode` for every other response, and its fallback for fetches
    // with tagged fields: the records are copied), and by `fetch_frame::encode`, the broker's
    // fetch path, which encodes around the records and leaves them in place.
    let records = one_mb_of_batches(&b);
    let fetch_response = FetchResponse::default()
        .with_error_code(0)
        .with_session_id(0)
        .with_responses(vec![FetchableTopicResponse::default()
            .with_topic_id(uuid::Uuid::new_v4())
            .with_partitions(vec![PartitionData::default()
                .with_partition_index(0)
                .with_error_code(0)
                .with_high_watermark(1_000_000)
                .with_last_stable_offset(1_000_000)
                .with_log_start_offset(0)])]);
    let mut with_records = fetch_response.clone();
    with_records.responses[0].partitions[0].records = Some(records.clone());
    let response = ResponseKind::Fetch(with_records);
    let encoded = encode_response(ApiKey::Fetch, FETCH_VERSION, &response);
    g.throughput(Throughput::Bytes(encoded.len() as u64));
    g.bench_function("encode_fetch_response_1mb_kafka_protocol", |bench| {
        bench.iter(|| encode_response(ApiKey::Fetch, FETCH_VERSION, black_box(&response)))
    });
    let answer = || FetchAnswer {
        response: fetch_response.clone(),
        records: vec![Records::Bytes(records.clone())],
    };
    let frame = fetch_frame::encode(42, FETCH_VERSION, answer()).expect("encodes");
    assert_eq!(
        frame.to_bytes().expect("in memory"),
        encoded,
        "both encodings agree"
    );
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("encode_fetch_response_1mb_frame", |bench| {
        bench.iter_batched(
            answer,
            |a| fetch_frame::encode(42, FETCH_VERSION, a).expect("encodes"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// An in-memory broker, as the tests build one (its listener is bound but never served).
fn memory_broker(rt: &tokio::runtime::Runtime) -> Arc<Broker> {
    rt.block_on(async {
        let server = Server::bind(Config {
            listen: vec!["127.0.0.1:0".into()],
            memory: true,
            ..Config::default()
        })
        .await
        .expect("broker binds");
        server.broker()
    })
}

/// The size of the response frame `handle_frame` answered with (only `len` is used, which the
/// response type has whether it is one buffer or a list of parts).
fn response_len(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Respond(frame) => frame.len(),
        other => panic!("expected a response, got {other:?}"),
    }
}

fn request_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let broker = memory_broker(&rt);
    let b = batch(160, 100, now_ms());
    let mut g = c.benchmark_group("request_path");

    // Produce: 1 MB segments and 4 MB retention, enforced between timed runs of 256 requests,
    // so memory stays bounded however many iterations criterion picks.
    let configs = [
        ("segment.bytes".to_string(), (1 << 20).to_string()),
        ("retention.bytes".to_string(), (4 << 20).to_string()),
    ]
    .into_iter()
    .collect();
    let produce_log = rt
        .block_on(broker.admin_create_topic("bench-produce", Some(1), configs))
        .expect("create")
        .partition(0)
        .expect("partition 0")
        .log()
        .clone();
    let produce = request_frame(
        &produce_request("bench-produce", b.clone()),
        PRODUCE_VERSION,
    );
    // Checks that a produce is accepted: its 160 records get appended.
    let produce_ok = || {
        let before = produce_log.log_end_offset();
        response_len(rt.block_on(handle_frame(&broker, produce.clone(), PEER)));
        assert_eq!(
            produce_log.log_end_offset(),
            before + 160,
            "produce refused"
        );
    };
    produce_ok();
    g.throughput(Throughput::Bytes(produce.len() as u64));
    g.bench_function("produce_16k_memory", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(256);
                left -= n;
                broker.topics.enforce_retention(now_ms());
                let start = Instant::now();
                rt.block_on(async {
                    for _ in 0..n {
                        black_box(handle_frame(&broker, produce.clone(), PEER).await);
                    }
                });
                total += start.elapsed();
            }
            total
        })
    });
    produce_ok(); // still accepted after all the iterations and retention passes

    // Fetch: 2000 batches (~33 MB) preloaded; each request reads 1 MB from its own offset.
    let topic = rt
        .block_on(broker.admin_create_topic("bench-fetch", Some(1), Default::default()))
        .expect("create");
    let log = topic.partition(0).expect("partition 0").log().clone();
    for _ in 0..2000 {
        log.append(&mut b.clone(), None).expect("append");
    }
    let span = log.log_end_offset() - 20_000;
    let fetches: Vec<Bytes> = (0..64)
        .map(|i| {
            let offset = i * 7919 * 13 % span;
            request_frame(
                &fetch_request("bench-fetch", topic.id, offset),
                FETCH_VERSION,
            )
        })
        .collect();
    let answer = response_len(rt.block_on(handle_frame(&broker, fetches[0].clone(), PEER)));
    assert!(answer > 1_000_000, "fetch answered {answer} bytes");
    g.throughput(Throughput::Bytes(answer as u64));
    let mut i = 0;
    g.bench_function("fetch_1mb_memory", |bench| {
        bench.iter(|| {
            i = (i + 1) % fetches.len();
            response_len(rt.block_on(handle_frame(&broker, fetches[i].clone(), PEER)))
        })
    });
    g.finish();
}

criterion_group!(protocol_benches, codec, request_path);
criterion_main!(protocol_benches);
