//! The produce path's record-level work through the wire: topic `compression.type` (stored
//! batches recompressed into the topic's codec, every record read back intact), decompression
//! bounds, and per-record errors (KIP-467 `record_errors`) for keyless records on compacted
//! topics and timestamps outside `message.timestamp.before/after.max.ms` (KIP-937).

use crate::common;

use bytes::{Bytes, BytesMut};
use common::{Client, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use ottla::config::Config;
use ottla::log::batch::BatchHeader;
use ottla::log::now_ms;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.into()))
}

const CODECS: [(Compression, &str); 5] = [
    (Compression::None, "uncompressed"),
    (Compression::Gzip, "gzip"),
    (Compression::Snappy, "snappy"),
    (Compression::Lz4, "lz4"),
    (Compression::Zstd, "zstd"),
];

/// A record as a producer sends it: key (optional), value, two headers, its own timestamp.
fn record(i: usize, key: Option<&str>, value: &[u8], timestamp: i64) -> Record {
    let mut r = Record {
        transactional: false,
        control: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: i as i64,
        sequence: i as i32,
        timestamp,
        key: key.map(|k| Bytes::from(k.to_string())),
        value: Some(Bytes::copy_from_slice(value)),
        headers: Default::default(),
        delete_horizon: false,
    };
    r.headers.insert(
        StrBytes::from_string(format!("trace-{i}")),
        Some(Bytes::from(vec![i as u8; 4])),
    );
    r.headers.insert(StrBytes::from_static_str("empty"), None);
    r
}

fn encode(records: &[Record], compression: Compression) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("batch encodes");
    buf.freeze()
}

fn produce(topic: &str, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])])
}

async fn send_produce(c: &mut Client, topic: &str, records: Bytes) -> PartitionProduceResponse {
    let r = c.send(&produce(topic, records), 11).await;
    r.responses[0].partition_responses[0].clone()
}

async fn create(c: &mut Client, topic: &str, configs: &[(&str, &str)]) -> i16 {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(1000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(1)
            .with_replication_factor(-1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.to_string()))
                            .with_value(Some(StrBytes::from_string(v.to_string())))
                    })
                    .collect(),
            )]);
    c.send(&req, 7).await.topics[0].error_code
}

/// The raw record data of partition 0 from offset 0.
async fn fetch_all(c: &mut Client, broker: &TestBroker, topic: &str) -> Bytes {
    let id = broker.broker.topics.get(topic).expect("topic").id;
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(64 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_topic_id(id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(64 << 20)])]);
    let r = c.send(&req, 13).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.records.clone().unwrap_or_default()
}

/// Every stored batch: its header and its records.
fn stored_batches(data: &Bytes) -> Vec<(BatchHeader, Vec<Record>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(h) = BatchHeader::parse(&data[pos..]) {
        let mut one = data.slice(pos..pos + h.total_bytes);
        let set = RecordBatchDecoder::decode(&mut one).expect("stored batch decodes");
        out.push((h, set.records));
        pos += h.total_bytes;
        if pos >= data.len() {
            break;
        }
    }
    out
}

/// What a consumer compares: offset, timestamp, key, value, headers.
type Essence = (
    i64,
    i64,
    Option<Bytes>,
    Option<Bytes>,
    Vec<(String, Option<Bytes>)>,
);

fn essence(r: &Record) -> Essence {
    (
        r.offset,
        r.timestamp,
        r.key.clone(),
        r.value.clone(),
        r.headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

#[tokio::test]
async fn topic_compression_type_recompresses_into_the_topic_codec() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let now = now_ms();
    for (target, target_name) in CODECS {
        let topic = format!("into-{target_name}");
        let level = match target_name {
            "gzip" => vec![("compression.gzip.level", "1")],
            "lz4" => vec![("compression.lz4.level", "12")],
            "zstd" => vec![("compression.zstd.level", "19")],
            _ => vec![],
        };
        let mut configs = vec![("compression.type", target_name)];
        configs.extend(level);
        assert_eq!(create(&mut c, &topic, &configs).await, 0, "{topic}");
        let mut sent = Vec::new();
        let mut as_sent = Vec::new();
        for (i, (source, _)) in CODECS.into_iter().enumerate() {
            let records: Vec<Record> = (0..20)
                .map(|j| {
                    let value = format!("{target_name}<-{i}-{j}-").repeat(j + 1);
                    record(
                        j,
                        Some(&format!("key-{j}")),
                        value.as_bytes(),
                        now - 100 + j as i64,
                    )
                })
                .collect();
            let batch = encode(&records, source);
            let p = send_produce(&mut c, &topic, batch.clone()).await;
            assert_eq!(
                p.error_code, 0,
                "{source:?} into {topic}: {:?}",
                p.error_message
            );
            assert_eq!(p.base_offset, i as i64 * 20);
            as_sent.push((source == target, batch));
            sent.extend(records.into_iter().map(|r| Record {
                offset: r.offset + i as i64 * 20,
                ..r
            }));
        }
        let data = fetch_all(&mut c, &broker, &topic).await;
        let batches = stored_batches(&data);
        assert_eq!(batches.len(), CODECS.len());
        let mut got = Vec::new();
        for ((h, records), (same, original)) in batches.iter().zip(&as_sent) {
            assert_eq!(h.compression(), target as i16, "{topic}: stored codec");
            assert_eq!(h.records_count, 20);
            assert_eq!(h.max_timestamp, now - 100 + 19);
            if *same {
                // Same codec: stored exactly as sent (the base offset and the leader epoch the
                // leader stamps, bytes 0-7 and 12-15, aside).
                let pos = data
                    .windows(original.len() - 16)
                    .position(|w| w == &original[16..]);
                assert!(
                    pos.is_some(),
                    "{topic}: the producer's batch is stored untouched"
                );
            }
            got.extend(records.iter().map(essence));
        }
        let want: Vec<_> = sent.iter().map(essence).collect();
        assert_eq!(got, want, "{topic}: every record byte for byte");
    }
    // `producer` keeps every codec as sent.
    assert_eq!(create(&mut c, "as-sent", &[]).await, 0);
    for (source, _) in CODECS {
        let batch = encode(&[record(0, Some("k"), b"v", now)], source);
        assert_eq!(send_produce(&mut c, "as-sent", batch).await.error_code, 0);
    }
    let data = fetch_all(&mut c, &broker, "as-sent").await;
    let codecs: Vec<i16> = stored_batches(&data)
        .iter()
        .map(|(h, _)| h.compression())
        .collect();
    assert_eq!(codecs, [0, 1, 2, 3, 4]);
    broker.stop().await;
}

async fn describe(c: &mut Client, topic: &str) -> std::collections::BTreeMap<String, String> {
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.into()))]);
    let r = c.send(&req, 4).await;
    assert_eq!(r.results[0].error_code, 0);
    r.results[0]
        .configs
        .iter()
        .map(|e| {
            (
                e.name.to_string(),
                e.value.as_deref().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn compression_configs_are_validated_described_and_altered() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let invalid = ResponseError::InvalidConfig.code();
    assert_eq!(
        create(&mut c, "x", &[("compression.type", "brotli")]).await,
        invalid
    );
    assert_eq!(
        create(&mut c, "x", &[("compression.gzip.level", "10")]).await,
        invalid
    );
    assert_eq!(
        create(&mut c, "x", &[("compression.lz4.level", "0")]).await,
        invalid
    );
    assert_eq!(
        create(&mut c, "x", &[("compression.zstd.level", "23")]).await,
        invalid
    );
    assert_eq!(
        create(&mut c, "x", &[("message.timestamp.after.max.ms", "-1")]).await,
        invalid
    );
    assert_eq!(
        create(&mut c, "t", &[("compression.zstd.level", "-5")]).await,
        0
    );
    let shown = describe(&mut c, "t").await;
    assert_eq!(shown["compression.type"], "producer");
    assert_eq!(shown["compression.gzip.level"], "-1");
    assert_eq!(shown["compression.lz4.level"], "9");
    assert_eq!(shown["compression.zstd.level"], "-5");

    // IncrementalAlterConfigs SET compression.type=lz4: the next batch is stored as lz4.
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("t"))
            .with_configs(vec![
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("compression.type"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_static_str("lz4"))),
            ]),
    ]);
    let r = c.send(&req, 1).await;
    assert_eq!(r.responses[0].error_code, 0);
    assert_eq!(describe(&mut c, "t").await["compression.type"], "lz4");
    let sent = record(0, Some("k"), b"altered", now_ms());
    let p = send_produce(
        &mut c,
        "t",
        encode(std::slice::from_ref(&sent), Compression::Gzip),
    )
    .await;
    assert_eq!(p.error_code, 0);
    // AlterConfigs (full replacement) to uncompressed.
    let req = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("t"))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(StrBytes::from_static_str("compression.type"))
                .with_value(Some(StrBytes::from_static_str("uncompressed")))]),
    ]);
    assert_eq!(c.send(&req, 2).await.responses[0].error_code, 0);
    let p = send_produce(
        &mut c,
        "t",
        encode(std::slice::from_ref(&sent), Compression::Zstd),
    )
    .await;
    assert_eq!(p.error_code, 0);
    let data = fetch_all(&mut c, &broker, "t").await;
    let batches = stored_batches(&data);
    let codecs: Vec<i16> = batches.iter().map(|(h, _)| h.compression()).collect();
    assert_eq!(codecs, [3, 0]);
    for (i, (_, records)) in batches.iter().enumerate() {
        assert_eq!(
            essence(&records[0]),
            essence(&Record {
                offset: i as i64,
                ..sent.clone()
            })
        );
    }
    broker.stop().await;
}

#[tokio::test]
async fn decompression_is_bounded_and_garbage_is_corrupt() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    // 64 KB batches at most; a 4 MB zstd bomb (a few hundred bytes) into an uncompressed topic.
    assert_eq!(
        create(
            &mut c,
            "plain",
            &[
                ("compression.type", "uncompressed"),
                ("max.message.bytes", "65536")
            ]
        )
        .await,
        0
    );
    let bomb = encode(
        &[record(0, Some("k"), &vec![0u8; 4 << 20], now_ms())],
        Compression::Zstd,
    );
    assert!(bomb.len() < 65536);
    let p = send_produce(&mut c, "plain", bomb).await;
    assert_eq!(
        p.error_code,
        ResponseError::MessageTooLarge.code(),
        "{:?}",
        p.error_message
    );
    // A gzip batch whose compressed bytes are garbage (valid CRC): CORRUPT_MESSAGE.
    assert_eq!(
        create(&mut c, "z", &[("compression.type", "zstd")]).await,
        0
    );
    let mut bad = encode(
        &[record(0, Some("k"), b"value", now_ms())],
        Compression::Gzip,
    )
    .to_vec();
    let n = bad.len();
    bad[n - 12..].fill(0x5a);
    let crc = crc32c::crc32c(&bad[21..]);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    let p = send_produce(&mut c, "z", Bytes::from(bad)).await;
    assert_eq!(
        p.error_code,
        ResponseError::CorruptMessage.code(),
        "{:?}",
        p.error_message
    );
    assert_eq!(
        broker
            .broker
            .topics
            .get("plain")
            .unwrap()
            .partition(0)
            .unwrap()
            .log()
            .log_end_offset(),
        0
    );
    assert_eq!(
        broker
            .broker
            .topics
            .get("z")
            .unwrap()
            .partition(0)
            .unwrap()
            .log()
            .log_end_offset(),
        0
    );
    broker.stop().await;
}

#[tokio::test]
async fn keyless_records_on_a_compacted_topic_are_listed_in_record_errors() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    assert_eq!(
        create(&mut c, "compacted", &[("cleanup.policy", "compact")]).await,
        0
    );
    let now = now_ms();
    for (compression, _) in CODECS {
        let records = [
            record(0, Some("a"), b"1", now),
            record(1, None, b"2", now),
            record(2, Some("b"), b"3", now),
            record(3, None, b"4", now),
        ];
        let p = send_produce(&mut c, "compacted", encode(&records, compression)).await;
        assert_eq!(
            p.error_code,
            ResponseError::InvalidRecord.code(),
            "{compression:?}"
        );
        assert_eq!(p.base_offset, -1);
        let indexes: Vec<i32> = p.record_errors.iter().map(|e| e.batch_index).collect();
        assert_eq!(indexes, [1, 3], "{compression:?}");
        assert_eq!(
            p.record_errors[0].batch_index_error_message.as_deref(),
            Some(
                "Compacted topic cannot accept message without key in topic partition compacted-0"
            )
        );
        assert_eq!(
            p.error_message.as_deref(),
            Some("One or more records have been rejected due to 2 record errors in total, and only showing the first three errors at most: [RecordError(batchIndex=1, message='Compacted topic cannot accept message without key in topic partition compacted-0'), RecordError(batchIndex=3, message='Compacted topic cannot accept message without key in topic partition compacted-0')]")
        );
        // Keyed records alone go in.
        let ok = send_produce(
            &mut c,
            "compacted",
            encode(&[records[0].clone()], compression),
        )
        .await;
        assert_eq!(ok.error_code, 0);
    }
    let data = fetch_all(&mut c, &broker, "compacted").await;
    assert_eq!(stored_batches(&data).len(), CODECS.len());
    broker.stop().await;
}

/// The bounds are checked against the broker's clock (injected: a manual clock here), not
/// the system's: a record stamped with the system's time is an hour and more in the future of
/// a broker clock set a day back, and the clock moving forward makes it acceptable.
#[tokio::test]
async fn timestamp_bounds_follow_the_broker_clock() {
    let day = 86_400_000i64;
    let clock = ottla::clock::Clock::manual(now_ms() - day);
    let broker = TestBroker::start_with_clock(
        Config {
            memory: true,
            ..Config::default()
        },
        clock.clone(),
    )
    .await;
    let mut c = broker.client().await;
    let bounds = [("message.timestamp.after.max.ms", "3600000")];
    assert_eq!(create(&mut c, "clocked", &bounds).await, 0);
    let records = [record(0, Some("k"), b"now", now_ms())];
    let p = send_produce(&mut c, "clocked", encode(&records, Compression::None)).await;
    assert_eq!(p.error_code, ResponseError::InvalidTimestamp.code());
    clock.advance(day);
    let p = send_produce(&mut c, "clocked", encode(&records, Compression::None)).await;
    assert_eq!(p.error_code, 0);
    broker.stop().await;
}

#[tokio::test]
async fn timestamps_outside_the_topic_bounds_are_refused_per_record() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let hour = 3_600_000i64;
    let bounds = [
        ("message.timestamp.before.max.ms", "3600000"),
        ("message.timestamp.after.max.ms", "3600000"),
    ];
    assert_eq!(create(&mut c, "bounded", &bounds).await, 0);
    let mut lat = bounds.to_vec();
    lat.push(("message.timestamp.type", "LogAppendTime"));
    assert_eq!(create(&mut c, "stamped", &lat).await, 0);
    let now = now_ms();
    let records = [
        record(0, Some("k"), b"old", now - 2 * hour),
        record(1, Some("k"), b"fine", now),
        record(2, Some("k"), b"future", now + 2 * hour),
        record(3, Some("k"), b"fine too", now - hour / 2),
    ];
    for (compression, _) in CODECS {
        let p = send_produce(&mut c, "bounded", encode(&records, compression)).await;
        assert_eq!(
            p.error_code,
            ResponseError::InvalidTimestamp.code(),
            "{compression:?}"
        );
        let indexes: Vec<i32> = p.record_errors.iter().map(|e| e.batch_index).collect();
        assert_eq!(indexes, [0, 2], "{compression:?}");
        let first = p.record_errors[0]
            .batch_index_error_message
            .as_deref()
            .unwrap_or("");
        assert!(
            first.starts_with(&format!(
                "Timestamp {} of message with offset 0 is out of range. The timestamp should be within [",
                now - 2 * hour
            )),
            "{first}"
        );
        assert_eq!(
            p.error_message.as_deref(),
            Some("One or more records have been rejected due to invalid timestamp")
        );
        // LogAppendTime topics are exempt.
        let p = send_produce(&mut c, "stamped", encode(&records, compression)).await;
        assert_eq!(p.error_code, 0, "{compression:?}");
        // In-range records go in.
        let p = send_produce(&mut c, "bounded", encode(&records[1..2], compression)).await;
        assert_eq!(p.error_code, 0);
    }
    let data = fetch_all(&mut c, &broker, "bounded").await;
    assert_eq!(stored_batches(&data).len(), CODECS.len());
    broker.stop().await;
}
