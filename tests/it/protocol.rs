//! The Kafka APIs end to end through the wire protocol, against an in-process broker.

use crate::common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{batch, Client, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use ottla::config::Config;
use uuid::Uuid;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.into()))
}

fn produce(topic: &str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

fn fetch(topic: &str, id: Uuid, offset: i64, max_wait_ms: i32, min_bytes: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_topic_id(id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

fn values_of(records: &Bytes) -> Vec<(i64, Vec<u8>)> {
    let mut b = records.clone();
    RecordBatchDecoder::decode_all(&mut b)
        .expect("batches decode")
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| (r.offset, r.value.map(|v| v.to_vec()).unwrap_or_default()))
        .collect()
}

async fn create(c: &mut Client, topic: &str, partitions: i32) -> CreateTopicsResponse {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(1000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)]);
    c.send(&req, 7).await
}

#[tokio::test]
async fn produce_then_fetch_every_codec_byte_for_byte() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "codecs", 1).await;
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    let mut expected = Vec::new();
    for (i, codec) in codecs.into_iter().enumerate() {
        let values: Vec<Vec<u8>> = (0..10).map(|j| format!("v{i}-{j}").into_bytes()).collect();
        let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
        let r = c
            .send(&produce("codecs", 0, -1, batch(&refs, codec)), 9)
            .await;
        let p = &r.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, i as i64 * 10));
        expected.extend(values);
    }
    for version in [4, 11, 12, 13, 17] {
        let id = broker.broker.topics.get("codecs").unwrap().id;
        let r = c.send(&fetch("codecs", id, 0, 0, 0), version).await;
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetch v{version}");
        assert_eq!(p.high_watermark, 50);
        let got = values_of(p.records.as_ref().unwrap());
        assert_eq!(got.len(), 50, "fetch v{version}");
        for (i, (offset, value)) in got.iter().enumerate() {
            assert_eq!(*offset, i as i64);
            assert_eq!(value, &expected[i]);
        }
    }
    broker.stop().await;
}

/// Produce v12 (as v11 while `transaction.version` is below 2) and v13 (topics named by id,
/// KIP-516), fetched back with Fetch v18: by id, byte for byte; an unknown id is
/// UNKNOWN_TOPIC_ID.
#[tokio::test]
async fn produce_v12_v13_by_topic_id_and_fetch_v18() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let topic_id = create(&mut c, "v13", 1).await.topics[0].topic_id;
    let r = c
        .send(
            &produce("v13", 0, -1, batch(&[b"twelve"], Compression::None)),
            12,
        )
        .await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    let by_id = |id: Uuid, value: &'static [u8]| {
        let mut req = produce("", 0, -1, batch(&[value], Compression::Lz4));
        req.topic_data[0].topic_id = id;
        req
    };
    let r = c.send(&by_id(topic_id, b"thirteen"), 13).await;
    assert_eq!(r.responses[0].topic_id, topic_id);
    let p = &r.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 1));
    let r = c.send(&by_id(Uuid::from_u128(7), b"lost"), 13).await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::UnknownTopicId.code()
    );
    let f = c.send(&fetch("", topic_id, 0, 0, 1), 18).await;
    let part = &f.responses[0].partitions[0];
    assert_eq!(part.error_code, 0);
    assert_eq!(
        values_of(part.records.as_ref().expect("records")),
        [(0, b"twelve".to_vec()), (1, b"thirteen".to_vec())]
    );
    broker.stop().await;
}

/// ListConfigResources (v0: KIP-1000's client-metrics listing; v1: KIP-1142's, by type):
/// topics and brokers listed, no client-metrics or group resources (ottla has none), an
/// unknown type UNSUPPORTED_VERSION (the whole request, as Kafka).
#[tokio::test]
async fn list_config_resources_by_type() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "lcr-b", 1).await;
    create(&mut c, "lcr-a", 1).await;
    // The internal topics (created at start) are listed too; left out of the comparisons.
    let listed = |r: &ListConfigResourcesResponse| -> Vec<(i8, String)> {
        r.config_resources
            .iter()
            .map(|c| (c.resource_type, c.resource_name.to_string()))
            .filter(|(_, name)| !name.starts_with("__"))
            .collect()
    };
    let r = c.send(&ListConfigResourcesRequest::default(), 0).await;
    assert_eq!((r.error_code, listed(&r)), (0, vec![]));
    let r = c.send(&ListConfigResourcesRequest::default(), 1).await;
    assert_eq!(r.error_code, 0);
    let node = broker.broker.config.node_id.to_string();
    assert_eq!(
        listed(&r),
        vec![
            (2, "lcr-a".to_string()),
            (2, "lcr-b".to_string()),
            (4, node.clone()),
            (8, node.clone()),
        ]
    );
    let r = c
        .send(
            &ListConfigResourcesRequest::default().with_resource_types(vec![4]),
            1,
        )
        .await;
    assert_eq!(listed(&r), vec![(4, node)]);
    let r = c
        .send(
            &ListConfigResourcesRequest::default().with_resource_types(vec![2, 99]),
            1,
        )
        .await;
    assert_eq!(r.error_code, ResponseError::UnsupportedVersion.code());
    assert!(r.config_resources.is_empty());
    broker.stop().await;
}

#[tokio::test]
async fn fetch_starts_at_the_batch_holding_the_offset_and_reports_out_of_range() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "t", 1).await;
    for _ in 0..3 {
        c.send(
            &produce("t", 0, 1, batch(&[b"a", b"b", b"c"], Compression::None)),
            9,
        )
        .await;
    }
    let r = c.send(&fetch("t", Uuid::nil(), 4, 0, 0), 12).await;
    let got = values_of(r.responses[0].partitions[0].records.as_ref().unwrap());
    assert_eq!(
        got.first().map(|g| g.0),
        Some(3),
        "whole batch containing offset 4"
    );
    let r = c.send(&fetch("t", Uuid::nil(), 10, 0, 0), 12).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, ResponseError::OffsetOutOfRange.code());
    assert_eq!((p.high_watermark, p.log_start_offset), (9, 0));
    let r = c.send(&fetch("nope", Uuid::nil(), 0, 0, 0), 12).await;
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let r = c.send(&fetch("", Uuid::new_v4(), 0, 0, 0), 13).await;
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        ResponseError::UnknownTopicId.code()
    );
    broker.stop().await;
}

#[tokio::test]
async fn fetch_session_ids_and_epochs_are_classified_as_kafka_does() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let topic_id = create(&mut c, "t", 1).await.topics[0].topic_id;
    c.send(&produce("t", 0, 1, batch(&[b"a"], Compression::None)), 9)
        .await;
    // (session id, epoch): full fetches (epoch 0 asks for a session and gets one, -1 is
    // sessionless or closes one: id 0) are served whatever id they name; incremental ones
    // (any other epoch) name a session that does not exist here.
    for (id, epoch, served) in [
        (0, -1, true),
        (0, 0, true),
        (42, 0, true),
        (42, -1, true),
        (0, 1, false),
        (42, 7, false),
        (0, -2, false),
    ] {
        for version in [7, 12, 13] {
            let req = fetch("t", topic_id, 0, 0, 0)
                .with_session_id(id)
                .with_session_epoch(epoch);
            let r = c.send(&req, version).await;
            let case = format!("session {id} epoch {epoch} v{version}");
            assert_eq!(r.session_id != 0, served && epoch == 0, "{case}");
            if served {
                assert_eq!(r.error_code, 0, "{case}");
                let records = r.responses[0].partitions[0].records.as_ref();
                assert_eq!(
                    values_of(records.expect(&case)),
                    [(0, b"a".to_vec())],
                    "{case}"
                );
            } else {
                assert_eq!(
                    r.error_code,
                    ResponseError::FetchSessionIdNotFound.code(),
                    "{case}"
                );
                assert!(r.responses.is_empty(), "{case}");
            }
        }
    }
    broker.stop().await;
}

#[tokio::test]
async fn long_poll_is_woken_by_produce() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "lp", 1).await;
    let addr = broker.addr;
    let waiter = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        let started = Instant::now();
        let r = c.send(&fetch("lp", Uuid::nil(), 0, 20_000, 1), 12).await;
        (started.elapsed(), r)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.send(
        &produce("lp", 0, 1, batch(&[b"wake"], Compression::None)),
        9,
    )
    .await;
    let (elapsed, r) = waiter.await.unwrap();
    assert_eq!(
        values_of(r.responses[0].partitions[0].records.as_ref().unwrap()),
        vec![(0, b"wake".to_vec())]
    );
    // Woken by the append, not by the 20 s timeout (a generous bound: this is not a timing test).
    assert!(
        elapsed < Duration::from_secs(10),
        "fetch waited {elapsed:?}"
    );

    // Nothing arrives: the fetch answers empty when max_wait passes.
    let r = c.send(&fetch("lp", Uuid::nil(), 1, 100, 1), 12).await;
    assert!(r.responses[0].partitions[0]
        .records
        .as_ref()
        .unwrap()
        .is_empty());
    broker.stop().await;
}

#[tokio::test]
async fn acks_zero_gets_no_response() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "a0", 1).await;
    let frame = common::encode_request(
        &produce("a0", 0, 0, batch(&[b"x"], Compression::None)),
        9,
        100,
    );
    c.write_raw(&frame).await.unwrap();
    // The next answer on the connection is the metadata response, not a produce response.
    let r = c
        .send(&MetadataRequest::default().with_topics(None), 12)
        .await;
    // The topic produced to, besides the internal __consumer_offsets.
    assert_eq!(r.topics.iter().filter(|t| !t.is_internal).count(), 1);
    let log = broker
        .broker
        .topics
        .get("a0")
        .unwrap()
        .partition(0)
        .unwrap()
        .log()
        .clone();
    assert_eq!(log.log_end_offset(), 1);
    broker.stop().await;
}

#[tokio::test]
async fn metadata_auto_creates_and_reports_ids() {
    let broker = TestBroker::start(Config {
        memory: true,
        num_partitions: 3,
        ..Config::default()
    })
    .await;
    let mut c = broker.client().await;
    for version in [0, 1, 4, 9, 10, 12, 13] {
        let topic = format!("auto-{version}");
        let req = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(&topic)))
            ]))
            .with_allow_auto_topic_creation(true);
        let r = c.send(&req, version).await;
        assert_eq!(r.topics[0].error_code, 0, "v{version}");
        assert_eq!(r.topics[0].partitions.len(), 3);
        assert_eq!(r.brokers[0].port, broker.addr.port() as i32);
        if version >= 10 {
            assert_eq!(
                r.topics[0].topic_id,
                broker.broker.topics.get(&topic).unwrap().id
            );
        }
        if version >= 2 {
            assert_eq!(
                r.cluster_id.as_deref(),
                Some(broker.broker.node.cluster_id.as_str())
            );
        }
    }
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("no-auto")))
        ]))
        .with_allow_auto_topic_creation(false);
    let r = c.send(&req, 12).await;
    assert_eq!(
        r.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("bad/name")))
        ]))
        .with_allow_auto_topic_creation(true);
    let r = c.send(&req, 12).await;
    assert_eq!(
        r.topics[0].error_code,
        ResponseError::InvalidTopicException.code()
    );
    let r = c
        .send(&MetadataRequest::default().with_topics(Some(vec![])), 12)
        .await;
    assert!(r.topics.is_empty(), "v1+: empty list means no topics");
    broker.stop().await;
}

#[tokio::test]
async fn create_delete_partitions_and_configs() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let r = create(&mut c, "t1", 2).await;
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(r.topics[0].num_partitions, 2);
    assert_eq!(
        create(&mut c, "t1", 2).await.topics[0].error_code,
        ResponseError::TopicAlreadyExists.code()
    );
    assert_eq!(
        create(&mut c, "t2", 0).await.topics[0].error_code,
        ResponseError::InvalidPartitions.code()
    );

    let rf3 = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("rf3"))
        .with_num_partitions(1)
        .with_replication_factor(3)]);
    let r = c.send(&rf3, 7).await;
    assert_eq!(
        r.topics[0].error_code,
        ResponseError::InvalidReplicationFactor.code()
    );

    let with_configs = |validate_only: bool, value: &str| {
        CreateTopicsRequest::default()
            .with_validate_only(validate_only)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name("cfg"))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_string(value.into())))])])
    };
    let r = c.send(&with_configs(false, "soon"), 7).await;
    assert_eq!(r.topics[0].error_code, ResponseError::InvalidConfig.code());
    let r = c.send(&with_configs(true, "12345"), 7).await;
    assert_eq!(r.topics[0].error_code, 0);
    assert!(
        broker.broker.topics.get("cfg").is_none(),
        "validate_only creates nothing"
    );
    let r = c.send(&with_configs(false, "12345"), 7).await;
    assert_eq!(r.topics[0].error_code, 0);
    let shown = r.topics[0].configs.as_ref().unwrap();
    assert!(shown
        .iter()
        .any(|e| e.name.as_str() == "retention.ms" && e.value.as_deref() == Some("12345")));

    let describe = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("cfg"))
            .with_configuration_keys(Some(vec![
                StrBytes::from_static_str("retention.ms"),
                StrBytes::from_static_str("segment.bytes"),
            ])),
        DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_static_str("1")),
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("missing")),
    ]);
    let r = c.send(&describe, 4).await;
    let topic = &r.results[0];
    assert_eq!(topic.configs.len(), 2);
    let retention = topic
        .configs
        .iter()
        .find(|e| e.name.as_str() == "retention.ms")
        .unwrap();
    assert_eq!(
        (retention.value.as_deref(), retention.config_source),
        (Some("12345"), 1)
    );
    let segment = topic
        .configs
        .iter()
        .find(|e| e.name.as_str() == "segment.bytes")
        .unwrap();
    assert_eq!(
        (segment.value.as_deref(), segment.config_source),
        (Some("1073741824"), 5)
    );
    assert!(r.results[1]
        .configs
        .iter()
        .any(|e| e.name.as_str() == "num.partitions"));
    assert_eq!(
        r.results[2].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );

    let grow = |count| {
        CreatePartitionsRequest::default().with_topics(vec![
            kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic::default()
                .with_name(name("t1"))
                .with_count(count),
        ])
    };
    assert_eq!(c.send(&grow(4), 3).await.results[0].error_code, 0);
    assert_eq!(broker.broker.topics.get("t1").unwrap().partition_count(), 4);
    assert_eq!(
        c.send(&grow(3), 3).await.results[0].error_code,
        ResponseError::InvalidPartitions.code()
    );

    let id = broker.broker.topics.get("cfg").unwrap().id;
    let del = DeleteTopicsRequest::default().with_topics(vec![
        DeleteTopicState::default().with_topic_id(id),
        DeleteTopicState::default().with_name(Some(name("t1"))),
        DeleteTopicState::default().with_name(Some(name("ghost"))),
    ]);
    let r = c.send(&del, 6).await;
    let codes: Vec<i16> = r.responses.iter().map(|x| x.error_code).collect();
    assert_eq!(
        codes,
        vec![0, 0, ResponseError::UnknownTopicOrPartition.code()]
    );
    assert!(broker.broker.topics.list().iter().all(|t| t.is_internal()));
    let r = c
        .send(
            &DeleteTopicsRequest::default().with_topic_names(vec![name("t1")]),
            5,
        )
        .await;
    assert_eq!(
        r.responses[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    broker.stop().await;
}

#[tokio::test]
async fn list_offsets_earliest_latest_and_by_time() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "lo", 1).await;
    // batch() stamps records 1_700_000_000_000 + i.
    c.send(
        &produce("lo", 0, 1, batch(&[b"a", b"b", b"c"], Compression::None)),
        9,
    )
    .await;
    c.send(
        &produce("lo", 0, 1, batch(&[b"d", b"e"], Compression::Gzip)),
        9,
    )
    .await;
    let ask = |ts: i64| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name("lo"))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(ts)])])
    };
    let t0 = 1_700_000_000_000;
    for version in [1, 4, 7, 10] {
        let mut q = async |ts: i64| {
            let r = c.send(&ask(ts), version).await;
            let p = r.topics[0].partitions[0].clone();
            (p.error_code, p.offset, p.timestamp)
        };
        assert_eq!(q(-1).await, (0, 5, -1), "latest v{version}");
        assert_eq!(q(-2).await, (0, 0, -1), "earliest v{version}");
        assert_eq!(q(t0 + 1).await, (0, 1, t0 + 1), "by time v{version}");
        assert_eq!(q(t0 + 2).await, (0, 2, t0 + 2));
        assert_eq!(q(t0 + 3).await, (0, -1, -1), "nothing that new");
        if version >= 7 {
            assert_eq!(q(-3).await, (0, 2, t0 + 2), "max timestamp v{version}");
        }
    }
    broker.stop().await;
}

#[tokio::test]
async fn idempotent_retries_are_not_duplicated() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "idem", 1).await;
    let init = c
        .send(
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
            4,
        )
        .await;
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    let stamped = |seq: i32, epoch: i16| {
        let mut b = batch(&[b"x", b"y"], Compression::None).to_vec();
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    };
    let send = |seq, epoch| produce("idem", 0, -1, stamped(seq, epoch));
    let first = c.send(&send(0, 0), 9).await.responses[0].partition_responses[0].clone();
    let retry = c.send(&send(0, 0), 9).await.responses[0].partition_responses[0].clone();
    assert_eq!((first.error_code, first.base_offset), (0, 0));
    assert_eq!(
        (retry.error_code, retry.base_offset),
        (0, 0),
        "retry answered with the original offset"
    );
    let gap = c.send(&send(5, 0), 9).await.responses[0].partition_responses[0].clone();
    assert_eq!(
        gap.error_code,
        ResponseError::OutOfOrderSequenceNumber.code()
    );
    let next = c.send(&send(2, 0), 9).await.responses[0].partition_responses[0].clone();
    assert_eq!((next.error_code, next.base_offset), (0, 2));
    let bumped = c.send(&send(0, 1), 9).await.responses[0].partition_responses[0].clone();
    assert_eq!(bumped.error_code, 0);
    let stale = c.send(&send(4, 0), 9).await.responses[0].partition_responses[0].clone();
    assert_eq!(stale.error_code, ResponseError::InvalidProducerEpoch.code());
    let log = broker
        .broker
        .topics
        .get("idem")
        .unwrap()
        .partition(0)
        .unwrap()
        .log()
        .clone();
    assert_eq!(log.log_end_offset(), 6);
    let txn = c
        .send(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx")))),
            4,
        )
        .await;
    assert_ne!(txn.error_code, 0, "transactions are not served yet");
    broker.stop().await;
}

#[tokio::test]
async fn disk_data_and_topics_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let broker = TestBroker::start(config.clone()).await;
    let mut c = broker.client().await;
    create(&mut c, "durable", 2).await;
    let log_time = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("lat"))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(vec![CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("message.timestamp.type"))
            .with_value(Some(StrBytes::from_static_str("LogAppendTime")))])]);
    assert_eq!(c.send(&log_time, 7).await.topics[0].error_code, 0);
    let r = c
        .send(&produce("lat", 0, 1, batch(&[b"t"], Compression::None)), 9)
        .await;
    let stamped = r.responses[0].partition_responses[0].log_append_time_ms;
    assert!(stamped > 0, "LogAppendTime topics report the append time");
    for i in 0..20u8 {
        c.send(
            &produce(
                "durable",
                (i % 2) as i32,
                -1,
                batch(&[&[i; 100]], Compression::Lz4),
            ),
            9,
        )
        .await;
    }
    let id = broker.broker.topics.get("durable").unwrap().id;
    let cluster_id = broker.broker.node.cluster_id.clone();
    drop(c);
    broker.stop().await;

    let broker = TestBroker::start(config).await;
    assert_eq!(broker.broker.node.cluster_id, cluster_id);
    let t = broker.broker.topics.get("durable").unwrap();
    assert_eq!((t.id, t.partition_count()), (id, 2));
    let mut c = broker.client().await;
    let r = c.send(&fetch("durable", id, 0, 0, 0), 13).await;
    let got = values_of(r.responses[0].partitions[0].records.as_ref().unwrap());
    let want: Vec<(i64, Vec<u8>)> = (0..10u8).map(|j| (j as i64, vec![j * 2; 100])).collect();
    assert_eq!(got, want);
    let r = c.send(&fetch("lat", Uuid::nil(), 0, 0, 0), 12).await;
    let records = r.responses[0].partitions[0].records.clone().unwrap();
    let header = ottla::log::batch::BatchHeader::parse(&records).unwrap();
    assert_eq!(header.max_timestamp, stamped);
    assert_ne!(
        header.attributes & 0x08,
        0,
        "timestamp type is LogAppendTime"
    );
    broker.stop().await;
}

#[tokio::test]
async fn describe_topic_partitions_pages_with_a_cursor() {
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "dtp-b", 3).await;
    create(&mut c, "dtp-a", 2).await;
    let req = |topics: &[&str], limit: i32, cursor: Option<(&str, i32)>| {
        DescribeTopicPartitionsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| TopicRequest::default().with_name(name(t)))
                    .collect(),
            )
            .with_response_partition_limit(limit)
            .with_cursor(cursor.map(|(t, p)| {
                Cursor::default()
                    .with_topic_name(name(t))
                    .with_partition_index(p)
            }))
    };
    let pages = |r: &DescribeTopicPartitionsResponse| {
        r.topics
            .iter()
            .map(|t| {
                let ps: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
                (t.name.as_ref().unwrap().0.to_string(), t.error_code, ps)
            })
            .collect::<Vec<_>>()
    };

    // Sorted by name, the unknown topic reported, one page with everything.
    let all = c
        .send(&req(&["dtp-b", "nope", "dtp-a"], 100, None), 0)
        .await;
    assert_eq!(
        pages(&all),
        vec![
            ("dtp-a".into(), 0, vec![0, 1]),
            ("dtp-b".into(), 0, vec![0, 1, 2]),
            ("nope".into(), 3, vec![]),
        ]
    );
    assert!(all.next_cursor.is_none());

    // Three partitions per page: the cursor points at the first one left out.
    let first = c.send(&req(&["dtp-a", "dtp-b"], 3, None), 0).await;
    assert_eq!(
        pages(&first),
        vec![
            ("dtp-a".into(), 0, vec![0, 1]),
            ("dtp-b".into(), 0, vec![0])
        ]
    );
    let cursor = first.next_cursor.expect("more to come");
    assert_eq!(
        (cursor.topic_name.0.as_str(), cursor.partition_index),
        ("dtp-b", 1)
    );
    let second = c
        .send(&req(&["dtp-a", "dtp-b"], 3, Some(("dtp-b", 1))), 0)
        .await;
    assert_eq!(pages(&second), vec![("dtp-b".into(), 0, vec![1, 2])]);
    assert!(second.next_cursor.is_none());

    // A cursor outside the requested topics fails the request.
    let bad = c.send(&req(&["dtp-a"], 3, Some(("dtp-b", 0))), 0).await;
    assert_eq!(
        pages(&bad),
        vec![("dtp-a".into(), ResponseError::InvalidRequest.code(), vec![])]
    );
    broker.stop().await;
}

fn topic_resource_alter(
    topic: &str,
    entries: &[(&str, Option<&str>)],
) -> alter_configs_request::AlterConfigsResource {
    alter_configs_request::AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_string(topic.into()))
        .with_configs(
            entries
                .iter()
                .map(|(k, v)| {
                    alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(v.map(|v| StrBytes::from_string(v.into())))
                })
                .collect(),
        )
}

fn incremental(
    resource_type: i8,
    resource: &str,
    entries: &[(&str, i8, Option<&str>)],
) -> incremental_alter_configs_request::AlterConfigsResource {
    incremental_alter_configs_request::AlterConfigsResource::default()
        .with_resource_type(resource_type)
        .with_resource_name(StrBytes::from_string(resource.into()))
        .with_configs(
            entries
                .iter()
                .map(|(k, op, v)| {
                    incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_config_operation(*op)
                        .with_value(v.map(|v| StrBytes::from_string(v.into())))
                })
                .collect(),
        )
}

/// Every config of `topic` as DescribeConfigs v4 reports it: name → (value, source).
async fn described(
    c: &mut Client,
    topic: &str,
) -> std::collections::BTreeMap<String, (String, i8)> {
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
                (
                    e.value.as_deref().unwrap_or("").to_string(),
                    e.config_source,
                ),
            )
        })
        .collect()
}

const DYNAMIC_TOPIC: i8 = 1;
const DEFAULT_CONFIG: i8 = 5;

#[tokio::test]
async fn alter_configs_replaces_the_override_set() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let with_configs = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("ac"))
        .with_num_partitions(1)
        .with_replication_factor(-1)
        .with_configs(vec![
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_static_str("12345"))),
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("segment.ms"))
                .with_value(Some(StrBytes::from_static_str("60000"))),
        ])]);
    assert_eq!(c.send(&with_configs, 7).await.topics[0].error_code, 0);
    let alter = |validate_only: bool, entries: &[(&str, Option<&str>)]| {
        AlterConfigsRequest::default()
            .with_validate_only(validate_only)
            .with_resources(vec![topic_resource_alter("ac", entries)])
    };

    for version in 0..=2 {
        let retention = format!("{}", 1000 + version);
        let r = c
            .send(
                &alter(
                    false,
                    &[
                        ("retention.ms", Some(retention.as_str())),
                        ("cleanup.policy", Some("compact")),
                    ],
                ),
                version,
            )
            .await;
        let res = &r.responses[0];
        assert_eq!(
            (
                res.error_code,
                res.resource_type,
                res.resource_name.as_str()
            ),
            (0, 2, "ac"),
            "v{version}: {:?}",
            res.error_message
        );
        let shown = described(&mut c, "ac").await;
        assert_eq!(shown["retention.ms"], (retention.clone(), DYNAMIC_TOPIC));
        assert_eq!(shown["cleanup.policy"], ("compact".into(), DYNAMIC_TOPIC));
        assert_eq!(
            shown["segment.ms"],
            ("604800000".into(), DEFAULT_CONFIG),
            "configs not listed revert to their default"
        );
    }
    let log = broker
        .broker
        .topics
        .get("ac")
        .unwrap()
        .partition(0)
        .unwrap()
        .log()
        .clone();
    let applied = log.config();
    assert_eq!(
        applied.retention_ms, 1002,
        "the partition log uses the new settings"
    );
    assert!(applied.cleanup_compact && !applied.cleanup_delete);

    // validate_only checks but changes nothing.
    let r = c
        .send(&alter(true, &[("retention.ms", Some("1"))]), 2)
        .await;
    assert_eq!(r.responses[0].error_code, 0);
    let shown = described(&mut c, "ac").await;
    assert_eq!(shown["retention.ms"], ("1002".into(), DYNAMIC_TOPIC));
    assert_eq!(shown["cleanup.policy"], ("compact".into(), DYNAMIC_TOPIC));

    // Invalid values and names: INVALID_CONFIG with a message; nothing changes.
    for entries in [
        &[("retention.ms", Some("soon"))][..],
        &[
            ("retention.ms", Some("5")),
            ("cleanup.policy", Some("shred")),
        ][..],
        &[("no.such.config", Some("1"))][..],
    ] {
        for validate_only in [false, true] {
            let r = c.send(&alter(validate_only, entries), 2).await;
            let res = &r.responses[0];
            assert_eq!(
                res.error_code,
                ResponseError::InvalidConfig.code(),
                "{entries:?}"
            );
            assert!(res.error_message.as_ref().is_some_and(|m| !m.is_empty()));
        }
    }
    let r = c
        .send(&alter(false, &[("retention.ms", Some("soon"))]), 2)
        .await;
    assert!(r.responses[0]
        .error_message
        .as_deref()
        .unwrap()
        .contains("retention.ms"));
    assert_eq!(described(&mut c, "ac").await["retention.ms"].0, "1002");

    // A null value is a malformed request in Kafka 4 (INVALID_REQUEST), as are duplicates.
    let r = c.send(&alter(false, &[("retention.ms", None)]), 1).await;
    assert_eq!(
        r.responses[0].error_code,
        ResponseError::InvalidRequest.code()
    );
    let r = c
        .send(
            &alter(
                false,
                &[("retention.ms", Some("1")), ("retention.ms", Some("2"))],
            ),
            1,
        )
        .await;
    assert_eq!(
        r.responses[0].error_code,
        ResponseError::InvalidRequest.code()
    );
    assert_eq!(described(&mut c, "ac").await["retention.ms"].0, "1002");

    // Several resources in one request, each answered on its own.
    let broker_resource = |id: &str, entries: &[(&str, Option<&str>)]| {
        topic_resource_alter(id, entries).with_resource_type(4)
    };
    let req = AlterConfigsRequest::default().with_resources(vec![
        topic_resource_alter("missing", &[("retention.ms", Some("1"))]),
        broker_resource("1", &[("num.partitions", Some("3"))]),
        broker_resource("7", &[]),
        broker_resource("1", &[]).with_resource_name(StrBytes::from_static_str("")),
        topic_resource_alter("x", &[]).with_resource_type(99),
        topic_resource_alter("dup", &[]),
        topic_resource_alter("dup", &[]),
        topic_resource_alter("ac", &[]),
    ]);
    let r = c.send(&req, 2).await;
    let codes: Vec<i16> = r.responses.iter().map(|x| x.error_code).collect();
    let invalid = ResponseError::InvalidRequest.code();
    assert_eq!(
        codes,
        vec![
            ResponseError::UnknownTopicOrPartition.code(),
            invalid,
            invalid,
            0,
            invalid,
            invalid,
            invalid,
            0
        ]
    );
    assert!(r.responses[1]
        .error_message
        .as_deref()
        .unwrap()
        .contains("num.partitions"));
    // The last resource emptied the override set: everything is a default again.
    let shown = described(&mut c, "ac").await;
    assert!(shown.values().all(|(_, source)| *source == DEFAULT_CONFIG));
    assert!(log.config().cleanup_delete && !log.config().cleanup_compact);
    broker.stop().await;
}

#[tokio::test]
async fn incremental_alter_configs_set_delete_append_subtract() {
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    const APPEND: i8 = 2;
    const SUBTRACT: i8 = 3;
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "iac", 2).await;
    let mut send = async |validate_only: bool, entries: &[(&str, i8, Option<&str>)], version| {
        let req = IncrementalAlterConfigsRequest::default()
            .with_validate_only(validate_only)
            .with_resources(vec![incremental(2, "iac", entries)]);
        let r = c.send(&req, version).await;
        let res = r.responses[0].clone();
        assert_eq!((res.resource_type, res.resource_name.as_str()), (2, "iac"));
        (res.error_code, res.error_message.map(|m| m.to_string()))
    };
    // APPEND to a config that is not overridden starts from its default ("delete").
    assert_eq!(
        send(false, &[("cleanup.policy", APPEND, Some("compact"))], 0).await,
        (0, None)
    );
    // Appending what is already there adds nothing.
    assert_eq!(
        send(false, &[("cleanup.policy", APPEND, Some("delete"))], 1)
            .await
            .0,
        0
    );
    let logs = broker.broker.topics.get("iac").unwrap().partitions();
    assert!(logs
        .iter()
        .all(|l| l.log().config().cleanup_compact && l.log().config().cleanup_delete));
    assert_eq!(
        send(
            false,
            &[
                ("retention.ms", SET, Some("5000")),
                ("segment.ms", SET, Some("70000"))
            ],
            1
        )
        .await
        .0,
        0
    );
    let shown = described(&mut c, "iac").await;
    assert_eq!(
        shown["cleanup.policy"],
        ("delete,compact".into(), DYNAMIC_TOPIC)
    );
    assert_eq!(shown["retention.ms"], ("5000".into(), DYNAMIC_TOPIC));
    assert_eq!(shown["segment.ms"], ("70000".into(), DYNAMIC_TOPIC));
    assert!(logs.iter().all(|l| l.log().config().retention_ms == 5000));

    let mut send = async |validate_only: bool, entries: &[(&str, i8, Option<&str>)], version| {
        let req = IncrementalAlterConfigsRequest::default()
            .with_validate_only(validate_only)
            .with_resources(vec![incremental(2, "iac", entries)]);
        let r = c.send(&req, version).await;
        r.responses[0].error_code
    };
    assert_eq!(
        send(
            false,
            &[
                ("cleanup.policy", SUBTRACT, Some("delete")),
                ("retention.ms", DELETE, None)
            ],
            1
        )
        .await,
        0
    );
    // validate_only: checked, not applied.
    assert_eq!(send(true, &[("segment.ms", DELETE, None)], 1).await, 0);
    assert_eq!(send(true, &[("retention.ms", SET, Some("1"))], 0).await, 0);
    // APPEND/SUBTRACT on a non-LIST config: INVALID_CONFIG, as in Kafka.
    let invalid_config = ResponseError::InvalidConfig.code();
    assert_eq!(
        send(false, &[("retention.ms", APPEND, Some("1"))], 1).await,
        invalid_config
    );
    assert_eq!(
        send(false, &[("segment.ms", SUBTRACT, Some("1"))], 1).await,
        invalid_config
    );
    // One bad entry refuses the whole resource.
    assert_eq!(
        send(
            false,
            &[
                ("retention.ms", SET, Some("7")),
                ("cleanup.policy", APPEND, Some("shred"))
            ],
            1
        )
        .await,
        invalid_config
    );
    assert_eq!(
        send(false, &[("retention.ms", SET, Some("x"))], 1).await,
        invalid_config
    );
    // Null values (except for DELETE), duplicate keys, unknown operations: INVALID_REQUEST.
    let invalid_request = ResponseError::InvalidRequest.code();
    assert_eq!(
        send(false, &[("retention.ms", SET, None)], 1).await,
        invalid_request
    );
    assert_eq!(
        send(
            false,
            &[
                ("retention.ms", SET, Some("1")),
                ("retention.ms", DELETE, None)
            ],
            1
        )
        .await,
        invalid_request
    );
    assert_eq!(
        send(false, &[("retention.ms", 9, Some("1"))], 1).await,
        invalid_request
    );
    // Deleting a config that is not overridden changes nothing and succeeds.
    assert_eq!(send(false, &[("flush.ms", DELETE, None)], 1).await, 0);

    let shown = described(&mut c, "iac").await;
    assert_eq!(shown["cleanup.policy"], ("compact".into(), DYNAMIC_TOPIC));
    assert_eq!(shown["retention.ms"], ("604800000".into(), DEFAULT_CONFIG));
    assert_eq!(shown["segment.ms"], ("70000".into(), DYNAMIC_TOPIC));
    assert!(logs
        .iter()
        .all(|l| l.log().config().cleanup_compact && !l.log().config().cleanup_delete));

    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental(2, "missing", &[("retention.ms", SET, Some("1"))]),
        incremental(4, "1", &[("num.partitions", SET, Some("3"))]),
        incremental(4, "1", &[("log.retention.ms", DELETE, None)])
            .with_resource_name(StrBytes::from_static_str("")),
        incremental(4, "2", &[]),
        incremental(8, "1", &[("root", SET, Some("DEBUG"))]),
        incremental(16, "x", &[]),
    ]);
    let r = c.send(&req, 1).await;
    let codes: Vec<i16> = r.responses.iter().map(|x| x.error_code).collect();
    assert_eq!(
        codes,
        vec![
            ResponseError::UnknownTopicOrPartition.code(),
            invalid_request,
            0,
            invalid_request,
            invalid_config,
            invalid_request
        ]
    );
    broker.stop().await;
}

fn delete_records(topic: &str, partition: i32, offset: i64) -> DeleteRecordsRequest {
    DeleteRecordsRequest::default()
        .with_timeout_ms(1000)
        .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(partition)
                    .with_offset(offset),
            ])])
}

async fn earliest(c: &mut Client, topic: &str) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-2)])]);
    let r = c.send(&req, 10).await;
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

#[tokio::test]
async fn delete_records_moves_the_low_watermark() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "dr", 1).await;
    for i in 0..10u8 {
        let r = c
            .send(
                &produce("dr", 0, 1, batch(&[&[b'a' + i]], Compression::None)),
                9,
            )
            .await;
        assert_eq!(r.responses[0].partition_responses[0].base_offset, i as i64);
    }
    let mut delete = async |partition: i32, offset: i64, version: i16| {
        let r = c
            .send(&delete_records("dr", partition, offset), version)
            .await;
        let t = &r.topics[0];
        assert_eq!(t.name.as_str(), "dr");
        let p = &t.partitions[0];
        assert_eq!(p.partition_index, partition);
        (p.error_code, p.low_watermark)
    };
    assert_eq!(delete(0, 4, 0).await, (0, 4));
    // Below the current start: nothing changes, the current low watermark is reported.
    assert_eq!(delete(0, 2, 1).await, (0, 4));
    assert_eq!(delete(0, 4, 2).await, (0, 4));

    let r = c.send(&fetch("dr", Uuid::nil(), 3, 0, 0), 12).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, ResponseError::OffsetOutOfRange.code());
    assert_eq!((p.log_start_offset, p.high_watermark), (4, 10));
    let r = c.send(&fetch("dr", Uuid::nil(), 4, 0, 0), 12).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!((p.error_code, p.log_start_offset), (0, 4));
    let got = values_of(p.records.as_ref().unwrap());
    let want: Vec<(i64, Vec<u8>)> = (4..10u8).map(|i| (i as i64, vec![b'a' + i])).collect();
    assert_eq!(got, want);
    assert_eq!(earliest(&mut c, "dr").await, 4);

    let mut delete = async |partition: i32, offset: i64, version: i16| {
        let r = c
            .send(&delete_records("dr", partition, offset), version)
            .await;
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.low_watermark)
    };
    let out_of_range = ResponseError::OffsetOutOfRange.code();
    assert_eq!(delete(0, 11, 2).await, (out_of_range, -1), "past the end");
    assert_eq!(delete(0, -5, 2).await, (out_of_range, -1));
    assert_eq!(
        delete(1, 0, 2).await,
        (ResponseError::UnknownTopicOrPartition.code(), -1)
    );
    // -1: up to the high watermark.
    assert_eq!(delete(0, -1, 2).await, (0, 10));
    assert_eq!(earliest(&mut c, "dr").await, 10);
    let r = c.send(&fetch("dr", Uuid::nil(), 10, 0, 0), 12).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!(
        (p.error_code, p.log_start_offset, p.high_watermark),
        (0, 10, 10)
    );
    assert!(values_of(p.records.as_ref().unwrap()).is_empty());
    // Appends go on after the new start.
    let r = c
        .send(&produce("dr", 0, 1, batch(&[b"k"], Compression::None)), 9)
        .await;
    assert_eq!(r.responses[0].partition_responses[0].base_offset, 10);

    let r = c.send(&delete_records("nope", 0, 1), 2).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    // A compacted-only topic refuses deletion, as Kafka does.
    create(&mut c, "compacted", 1).await;
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![incremental(
        2,
        "compacted",
        &[("cleanup.policy", 0, Some("compact"))],
    )]);
    assert_eq!(c.send(&req, 1).await.responses[0].error_code, 0);
    let r = c.send(&delete_records("compacted", 0, -1), 2).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::PolicyViolation.code()
    );
    broker.stop().await;
}

#[tokio::test]
async fn disk_altered_configs_and_deleted_records_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let broker = TestBroker::start(config.clone()).await;
    let mut c = broker.client().await;
    create(&mut c, "kept", 1).await;
    for i in 0..6u8 {
        c.send(
            &produce("kept", 0, -1, batch(&[&[i; 10]], Compression::None)),
            9,
        )
        .await;
    }
    let req = AlterConfigsRequest::default().with_resources(vec![topic_resource_alter(
        "kept",
        &[
            ("retention.ms", Some("86400000")),
            ("segment.bytes", Some("1048576")),
        ],
    )]);
    assert_eq!(c.send(&req, 2).await.responses[0].error_code, 0);
    let r = c.send(&delete_records("kept", 0, 3), 2).await;
    assert_eq!(
        (
            r.topics[0].partitions[0].error_code,
            r.topics[0].partitions[0].low_watermark
        ),
        (0, 3)
    );
    drop(c);
    broker.stop().await;

    let broker = TestBroker::start(config).await;
    let mut c = broker.client().await;
    let shown = described(&mut c, "kept").await;
    assert_eq!(shown["retention.ms"], ("86400000".into(), DYNAMIC_TOPIC));
    assert_eq!(shown["segment.bytes"], ("1048576".into(), DYNAMIC_TOPIC));
    let log = broker
        .broker
        .topics
        .get("kept")
        .unwrap()
        .partition(0)
        .unwrap()
        .log()
        .clone();
    assert_eq!(log.config().segment_bytes, 1048576);
    assert_eq!(earliest(&mut c, "kept").await, 3);
    let r = c.send(&fetch("kept", Uuid::nil(), 0, 0, 0), 12).await;
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        ResponseError::OffsetOutOfRange.code()
    );
    let r = c.send(&fetch("kept", Uuid::nil(), 3, 0, 0), 12).await;
    let got = values_of(r.responses[0].partitions[0].records.as_ref().unwrap());
    let want: Vec<(i64, Vec<u8>)> = (3..6u8).map(|i| (i as i64, vec![i; 10])).collect();
    assert_eq!(got, want);
    broker.stop().await;
}

/// Nullable strings are null where Kafka answers null (an error message on success), and
/// the empty string or a text where Kafka does: decoded from the wire at every version.
#[tokio::test]
async fn nullable_strings_are_null_on_success_as_kafka_answers_them() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let s = |v: &str| StrBytes::from_string(v.into());

    for version in 2..=7 {
        let topic = format!("n{version}");
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(1000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name(&topic))
                .with_num_partitions(1)
                .with_replication_factor(-1)]);
        let r = c.send(&req, version).await;
        assert_eq!(r.topics[0].error_code, 0);
        assert_eq!(r.topics[0].error_message, None, "CreateTopics v{version}");
        // The same again: an error, with Kafka's message.
        let r = c.send(&req, version).await;
        assert_eq!(
            r.topics[0].error_code,
            ResponseError::TopicAlreadyExists.code()
        );
        assert!(
            r.topics[0]
                .error_message
                .as_ref()
                .is_some_and(|m| !m.is_empty()),
            "CreateTopics v{version} error"
        );
    }
    for version in 0..=3 {
        let r = c
            .send(
                &CreatePartitionsRequest::default().with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(name("n2"))
                        .with_count(2 + version as i32),
                ]),
                version,
            )
            .await;
        assert_eq!(r.results[0].error_code, 0);
        assert_eq!(
            r.results[0].error_message, None,
            "CreatePartitions v{version}"
        );
    }
    for version in 0..=2 {
        let r = c
            .send(
                &AlterConfigsRequest::default().with_resources(vec![topic_resource_alter(
                    "n3",
                    &[("retention.ms", Some("1000"))],
                )]),
                version,
            )
            .await;
        assert_eq!(r.responses[0].error_code, 0);
        assert_eq!(
            r.responses[0].error_message, None,
            "AlterConfigs v{version}"
        );
    }
    for version in 0..=1 {
        let r = c
            .send(
                &IncrementalAlterConfigsRequest::default().with_resources(vec![incremental(
                    2,
                    "n3",
                    &[("retention.ms", 0, Some("2000"))],
                )]),
                version,
            )
            .await;
        assert_eq!(r.responses[0].error_code, 0);
        assert_eq!(
            r.responses[0].error_message, None,
            "IncrementalAlterConfigs v{version}"
        );
    }
    // DescribeConfigs: Kafka leaves the message at its default, "", and the documentation
    // null unless asked for.
    for version in 1..=4 {
        let r = c
            .send(
                &DescribeConfigsRequest::default().with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("n3")),
                ]),
                version,
            )
            .await;
        assert_eq!(r.results[0].error_code, 0);
        assert_eq!(r.results[0].error_message.as_deref(), Some(""));
        let retention = r.results[0]
            .configs
            .iter()
            .find(|e| e.name.as_str() == "retention.ms")
            .expect("retention.ms is described");
        assert_eq!(retention.value.as_deref(), Some("2000"));
        if version >= 3 {
            assert_eq!(retention.documentation, None, "DescribeConfigs v{version}");
        }
    }
    for version in 5..=6 {
        let topic = format!("n{}", version + 1);
        let req = if version >= 6 {
            DeleteTopicsRequest::default().with_topics(vec![
                DeleteTopicState::default().with_name(Some(name(&topic)))
            ])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![name(&topic)])
        };
        let r = c.send(&req, version).await;
        assert_eq!(r.responses[0].error_code, 0);
        assert_eq!(
            r.responses[0].error_message, None,
            "DeleteTopics v{version}"
        );
    }
    for version in 8..=11 {
        let r = c
            .send(
                &produce("n2", 0, 1, batch(&[b"x"], Compression::None)),
                version,
            )
            .await;
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(
            (p.error_code, &p.error_message),
            (0, &None),
            "Produce v{version}"
        );
    }
    for version in 0..=2 {
        let r = c.send(&DescribeClusterRequest::default(), version).await;
        assert_eq!(r.error_code, 0);
        assert_eq!(r.error_message, None, "DescribeCluster v{version}");
        assert_eq!(r.brokers[0].rack, None);
    }
    let r = c
        .send(&MetadataRequest::default().with_topics(None), 12)
        .await;
    assert_eq!(r.brokers[0].rack, None);
    assert!(r.cluster_id.is_some());
    // FindCoordinator: Kafka answers `Errors.NONE.message()` ("NONE") to v1-3 and leaves a
    // v4+ coordinator's message at its default, "".
    for version in 1..=6 {
        let req = if version >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![s("grp")])
        } else {
            FindCoordinatorRequest::default().with_key(s("grp"))
        };
        let r = c.send(&req, version).await;
        let message = if version >= 4 {
            assert_eq!(r.coordinators[0].error_code, 0);
            r.coordinators[0].error_message.clone()
        } else {
            assert_eq!(r.error_code, 0);
            r.error_message.clone()
        };
        let want = if version >= 4 { "" } else { "NONE" };
        assert_eq!(message.as_deref(), Some(want), "FindCoordinator v{version}");
    }
    broker.stop().await;
}

/// IncrementalAlterConfigs v1 of topic "empty-policy": the resource's error code.
async fn alter_empty_policy(c: &mut Client, entries: &[(&str, i8, Option<&str>)]) -> i16 {
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![incremental(
        2,
        "empty-policy",
        entries,
    )]);
    let r = c.send(&req, 1).await;
    r.responses[0].error_code
}

/// Kafka's `ValidList` accepts an empty list: a SUBTRACT that removes every policy leaves
/// `cleanup.policy` = "" (an override, described as such); the log is then neither deleted by
/// retention nor compacted, and DeleteRecords answers POLICY_VIOLATION (no `delete`).
#[tokio::test]
async fn cleanup_policy_may_become_empty_as_in_kafka() {
    const SET: i8 = 0;
    const SUBTRACT: i8 = 3;
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "empty-policy", 1).await;
    assert_eq!(
        alter_empty_policy(&mut c, &[("cleanup.policy", SET, Some("compact,delete"))]).await,
        0
    );
    assert_eq!(
        alter_empty_policy(
            &mut c,
            &[("cleanup.policy", SUBTRACT, Some("delete,compact"))]
        )
        .await,
        0
    );
    let shown = described(&mut c, "empty-policy").await;
    assert_eq!(shown["cleanup.policy"], ("".into(), DYNAMIC_TOPIC));
    let log = broker
        .broker
        .topics
        .get("empty-policy")
        .unwrap()
        .partition(0)
        .unwrap()
        .log()
        .clone();
    assert!(!log.config().cleanup_delete && !log.config().cleanup_compact);
    let r = c.send(&delete_records("empty-policy", 0, 0), 2).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::PolicyViolation.code()
    );
    // SUBTRACT from the default ("delete") empties it too; an empty item is still refused.
    assert_eq!(
        alter_empty_policy(&mut c, &[("cleanup.policy", SET, Some("compact"))]).await,
        0
    );
    let r = c
        .send(
            &AlterConfigsRequest::default().with_resources(vec![topic_resource_alter(
                "empty-policy",
                &[("cleanup.policy", Some(""))],
            )]),
            2,
        )
        .await;
    assert_eq!(
        r.responses[0].error_code, 0,
        "AlterConfigs may set it empty"
    );
    assert_eq!(
        described(&mut c, "empty-policy").await["cleanup.policy"],
        ("".into(), DYNAMIC_TOPIC)
    );
    assert_eq!(
        alter_empty_policy(&mut c, &[("cleanup.policy", SET, Some("compact,"))]).await,
        ResponseError::InvalidConfig.code()
    );
    broker.stop().await;
}

/// Topic configs Kafka 3.x accepted and 4.0 removed are accepted as deprecated no-ops by
/// CreateTopics, AlterConfigs and IncrementalAlterConfigs: not stored, not described.
#[tokio::test]
async fn configs_removed_in_kafka_4_are_accepted_as_no_ops() {
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    let removed = [
        ("message.format.version", "2.8-IV1"),
        ("message.downconversion.enable", "true"),
        ("message.timestamp.difference.max.ms", "60000"),
    ];
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let mut configs: Vec<CreatableTopicConfig> = removed
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    configs.push(
        CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("retention.ms"))
            .with_value(Some(StrBytes::from_static_str("5000"))),
    );
    let r = c
        .send(
            &CreateTopicsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(name("legacy"))
                    .with_num_partitions(1)
                    .with_replication_factor(1)
                    .with_configs(configs)]),
            7,
        )
        .await;
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
    let listed: Vec<String> = r.topics[0]
        .configs
        .iter()
        .flatten()
        .map(|e| e.name.to_string())
        .collect();
    assert!(listed.iter().any(|n| n == "retention.ms"));
    let stored = |b: &TestBroker| {
        b.broker
            .topics
            .get("legacy")
            .unwrap()
            .configs()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(stored(&broker), vec!["retention.ms".to_string()]);
    let shown = described(&mut c, "legacy").await;
    assert_eq!(shown["retention.ms"], ("5000".into(), DYNAMIC_TOPIC));
    for (k, _) in removed {
        assert!(!shown.contains_key(k), "{k} is not described");
        assert!(
            !listed.iter().any(|n| n == k),
            "{k} is not in CreateTopics' answer"
        );
    }

    // AlterConfigs: the removed ones are skipped, the rest replaces the override set.
    let mut entries: Vec<(&str, Option<&str>)> =
        removed.iter().map(|(k, v)| (*k, Some(*v))).collect();
    entries.push(("segment.ms", Some("70000")));
    let r = c
        .send(
            &AlterConfigsRequest::default()
                .with_resources(vec![topic_resource_alter("legacy", &entries)]),
            2,
        )
        .await;
    assert_eq!(
        r.responses[0].error_code, 0,
        "{:?}",
        r.responses[0].error_message
    );
    assert_eq!(stored(&broker), vec!["segment.ms".to_string()]);

    // IncrementalAlterConfigs: SET and DELETE of them change nothing.
    let mut entries: Vec<(&str, i8, Option<&str>)> =
        removed.iter().map(|(k, v)| (*k, SET, Some(*v))).collect();
    entries.push(("message.format.version", DELETE, None));
    entries.remove(0);
    entries.push(("retention.ms", SET, Some("9000")));
    let r = c
        .send(
            &IncrementalAlterConfigsRequest::default()
                .with_resources(vec![incremental(2, "legacy", &entries)]),
            1,
        )
        .await;
    assert_eq!(
        r.responses[0].error_code, 0,
        "{:?}",
        r.responses[0].error_message
    );
    assert_eq!(
        stored(&broker),
        vec!["retention.ms".to_string(), "segment.ms".to_string()]
    );
    // Unknown names are still refused.
    let r = c
        .send(
            &IncrementalAlterConfigsRequest::default().with_resources(vec![incremental(
                2,
                "legacy",
                &[("message.format.versionx", SET, Some("1"))],
            )]),
            1,
        )
        .await;
    assert_eq!(
        r.responses[0].error_code,
        ResponseError::InvalidConfig.code()
    );
    broker.stop().await;
}
