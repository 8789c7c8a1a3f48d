//! Client quotas through the wire: AlterClientQuotas / DescribeClientQuotas round trips and
//! errors, quotas kept across a restart of a disk-mode broker (replayed from the metadata
//! log), and a produce quota throttling (KIP-219: `throttle_time_ms` in the answer, the
//! connection not read meanwhile). The test client's id is `ottla-test`.

use crate::common;

use std::time::{Duration, Instant};

use common::{batch, produce_request, Client, TestBroker};
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use ottla::config::Config;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn entry(entity: &[(&str, Option<&str>)], ops: &[(&str, Option<f64>)]) -> EntryData {
    EntryData::default()
        .with_entity(
            entity
                .iter()
                .map(|(t, n)| {
                    EntityData::default()
                        .with_entity_type(s(t))
                        .with_entity_name(n.map(s))
                })
                .collect(),
        )
        .with_ops(
            ops.iter()
                .map(|(k, v)| {
                    OpData::default()
                        .with_key(s(k))
                        .with_value(v.unwrap_or(0.0))
                        .with_remove(v.is_none())
                })
                .collect(),
        )
}

async fn alter(
    c: &mut Client,
    entries: Vec<EntryData>,
    validate_only: bool,
) -> AlterClientQuotasResponse {
    let req = AlterClientQuotasRequest::default()
        .with_entries(entries)
        .with_validate_only(validate_only);
    c.send(&req, 1).await
}

/// An entity as sorted "type=name" parts, and its quotas.
type Described = (Vec<String>, Vec<(String, f64)>);

/// The entities a filter matches: (entity as "type=name" parts, values), sorted.
async fn describe(
    c: &mut Client,
    components: &[(&str, i8, Option<&str>)],
    strict: bool,
) -> Result<Vec<Described>, (i16, String)> {
    let req = DescribeClientQuotasRequest::default()
        .with_components(
            components
                .iter()
                .map(|(t, m, n)| {
                    ComponentData::default()
                        .with_entity_type(s(t))
                        .with_match_type(*m)
                        .with_match(n.map(s))
                })
                .collect(),
        )
        .with_strict(strict);
    let r: DescribeClientQuotasResponse = c.send(&req, 1).await;
    if r.error_code != 0 {
        assert!(r.entries.is_none(), "no entries with an error");
        return Err((
            r.error_code,
            r.error_message.map(|m| m.to_string()).unwrap_or_default(),
        ));
    }
    let mut out: Vec<Described> = r
        .entries
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let mut entity: Vec<String> = e
                .entity
                .iter()
                .map(|d| {
                    format!(
                        "{}={}",
                        d.entity_type,
                        d.entity_name.as_ref().map_or("<default>", |n| n.as_str())
                    )
                })
                .collect();
            entity.sort();
            let values = e
                .values
                .iter()
                .map(|v| (v.key.to_string(), v.value))
                .collect();
            (entity, values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn ok(r: &AlterClientQuotasResponse) {
    for e in &r.entries {
        assert_eq!(e.error_code, 0, "{:?}", e.error_message);
    }
}

#[tokio::test]
async fn alter_then_describe_round_trips_with_kafkas_filters_and_errors() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let r = alter(
        &mut c,
        vec![
            entry(
                &[("client-id", Some("app"))],
                &[("producer_byte_rate", Some(1048576.0))],
            ),
            entry(
                &[("user", Some("alice")), ("client-id", None)],
                &[
                    ("request_percentage", Some(50.0)),
                    ("consumer_byte_rate", Some(2048.0)),
                ],
            ),
            entry(
                &[("user", None)],
                &[("controller_mutation_rate", Some(10.0))],
            ),
            entry(
                &[("ip", Some("10.1.2.3"))],
                &[("connection_creation_rate", Some(5.0))],
            ),
        ],
        false,
    )
    .await;
    assert_eq!(r.entries.len(), 4);
    ok(&r);
    let all = describe(&mut c, &[], false).await.unwrap();
    assert_eq!(
        all,
        vec![
            (
                vec!["client-id=<default>".into(), "user=alice".into()],
                vec![
                    ("consumer_byte_rate".into(), 2048.0),
                    ("request_percentage".into(), 50.0)
                ]
            ),
            (
                vec!["client-id=app".into()],
                vec![("producer_byte_rate".into(), 1048576.0)]
            ),
            (
                vec!["ip=10.1.2.3".into()],
                vec![("connection_creation_rate".into(), 5.0)]
            ),
            (
                vec!["user=<default>".into()],
                vec![("controller_mutation_rate".into(), 10.0)]
            ),
        ]
    );
    // EXACT, DEFAULT, SPECIFIED and strict.
    let names = |v: Vec<Described>| -> Vec<Vec<String>> { v.into_iter().map(|(e, _)| e).collect() };
    assert_eq!(
        names(
            describe(&mut c, &[("user", 0, Some("alice"))], false)
                .await
                .unwrap()
        ),
        vec![vec![
            "client-id=<default>".to_string(),
            "user=alice".to_string()
        ]]
    );
    assert!(describe(&mut c, &[("user", 0, Some("alice"))], true)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        names(describe(&mut c, &[("user", 1, None)], true).await.unwrap()),
        vec![vec!["user=<default>".to_string()]]
    );
    assert_eq!(
        describe(&mut c, &[("user", 2, None)], false)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        describe(&mut c, &[("client-id", 2, None)], true)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(describe(&mut c, &[], true).await.unwrap().is_empty());
    // Filter errors are the answer's (INVALID_REQUEST 42, UNSUPPORTED_VERSION 35).
    assert_eq!(
        describe(&mut c, &[("user", 0, None)], false)
            .await
            .unwrap_err()
            .0,
        42
    );
    assert_eq!(
        describe(&mut c, &[("group", 2, None)], false)
            .await
            .unwrap_err()
            .0,
        35
    );
    let (code, message) = describe(&mut c, &[("ip", 2, None), ("user", 2, None)], false)
        .await
        .unwrap_err();
    assert_eq!(code, 42);
    assert!(message.contains("IP filter component"), "{message}");

    // Validation: per entity, the others applied.
    let r = alter(
        &mut c,
        vec![
            entry(&[("client-id", Some("x"))], &[("retention.ms", Some(1.0))]),
            entry(
                &[("client-id", Some("y"))],
                &[("producer_byte_rate", Some(1.5))],
            ),
            entry(
                &[("ip", Some("1.1.1.1")), ("user", Some("u"))],
                &[("connection_creation_rate", Some(1.0))],
            ),
            entry(&[], &[("producer_byte_rate", Some(1.0))]),
            entry(
                &[("client-id", Some("z"))],
                &[("consumer_byte_rate", Some(4096.0))],
            ),
        ],
        false,
    )
    .await;
    let codes: Vec<i16> = r.entries.iter().map(|e| e.error_code).collect();
    assert_eq!(codes, vec![42, 42, 42, 42, 0]);
    assert!(r.entries[0]
        .error_message
        .as_ref()
        .unwrap()
        .contains("Invalid configuration key retention.ms"));
    assert_eq!(
        describe(&mut c, &[("client-id", 0, Some("z"))], true)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(describe(&mut c, &[("client-id", 0, Some("x"))], true)
        .await
        .unwrap()
        .is_empty());

    // validate_only changes nothing; removal drops the key, and an entity left without keys.
    let r = alter(
        &mut c,
        vec![entry(
            &[("client-id", Some("v"))],
            &[("producer_byte_rate", Some(10.0))],
        )],
        true,
    )
    .await;
    ok(&r);
    assert!(describe(&mut c, &[("client-id", 0, Some("v"))], true)
        .await
        .unwrap()
        .is_empty());
    let r = alter(
        &mut c,
        vec![entry(
            &[("user", Some("alice")), ("client-id", None)],
            &[("request_percentage", None)],
        )],
        false,
    )
    .await;
    ok(&r);
    let left = describe(&mut c, &[("user", 0, Some("alice"))], false)
        .await
        .unwrap();
    assert_eq!(left[0].1, vec![("consumer_byte_rate".to_string(), 2048.0)]);
    let r = alter(
        &mut c,
        vec![entry(
            &[("client-id", Some("z"))],
            &[("consumer_byte_rate", None)],
        )],
        false,
    )
    .await;
    ok(&r);
    assert!(describe(&mut c, &[("client-id", 0, Some("z"))], true)
        .await
        .unwrap()
        .is_empty());
    broker.stop().await;
}

#[tokio::test]
async fn quotas_survive_a_restart_of_a_disk_broker() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let broker = TestBroker::start(config.clone()).await;
    let mut c = broker.client().await;
    let r = alter(
        &mut c,
        vec![
            entry(
                &[("client-id", Some("app"))],
                &[("producer_byte_rate", Some(1048576.0))],
            ),
            entry(
                &[("user", Some("bob"))],
                &[("request_percentage", Some(25.5))],
            ),
        ],
        false,
    )
    .await;
    ok(&r);
    let before = describe(&mut c, &[], false).await.unwrap();
    assert_eq!(before.len(), 2);
    drop(c);
    broker.stop().await;

    let broker = TestBroker::start(config).await;
    let mut c = broker.client().await;
    assert_eq!(describe(&mut c, &[], false).await.unwrap(), before);
    broker.stop().await;
}

#[tokio::test]
async fn a_produce_quota_throttles_and_mutes_the_connection() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let topics = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(common::topic_name("q"))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    let r: CreateTopicsResponse = c.send(&topics, 7).await;
    assert_eq!(r.topics[0].error_code, 0);
    // 10 KB/s for the test client's id: 10 windows' worth (100 KB) passes, then throttles.
    let r = alter(
        &mut c,
        vec![entry(
            &[("client-id", Some("ottla-test"))],
            &[("producer_byte_rate", Some(10_000.0))],
        )],
        false,
    )
    .await;
    ok(&r);
    // The broker picks the change up from its image (asynchronously, as Kafka's brokers).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let value = vec![7u8; 20_000];
    let mut throttles = Vec::new();
    for _ in 0..6 {
        let r: ProduceResponse = c
            .send(
                &produce_request("q", 0, 1, batch(&[&value], Compression::None)),
                9,
            )
            .await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        throttles.push(r.throttle_time_ms);
    }
    assert_eq!(throttles[..4], [0, 0, 0, 0], "{throttles:?}");
    let last = *throttles.last().unwrap();
    assert!(last > 1000, "{throttles:?}");
    // The connection reads nothing more until the throttle has passed.
    let started = Instant::now();
    let _: ApiVersionsResponse = c.send(&ApiVersionsRequest::default(), 3).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(last as u64 - 50),
        "answered after {waited:?}, throttle {last} ms"
    );
    // Without the quota nothing is throttled any more.
    let r = alter(
        &mut c,
        vec![entry(
            &[("client-id", Some("ottla-test"))],
            &[("producer_byte_rate", None)],
        )],
        false,
    )
    .await;
    ok(&r);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r: ProduceResponse = c
        .send(
            &produce_request("q", 0, 1, batch(&[&value], Compression::None)),
            9,
        )
        .await;
    assert_eq!(r.throttle_time_ms, 0);
    broker.stop().await;
}

#[tokio::test]
async fn a_controller_mutation_quota_refuses_topics_once_overdrawn() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    // One partition per second: the bucket holds 10 (10 windows of 1 s).
    let r = alter(
        &mut c,
        vec![entry(
            &[("client-id", Some("ottla-test"))],
            &[("controller_mutation_rate", Some(1.0))],
        )],
        false,
    )
    .await;
    ok(&r);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let create = |name: &str, partitions: i32| {
        CreateTopicsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(common::topic_name(name))
                .with_num_partitions(partitions)
                .with_replication_factor(1)])
    };
    let r: CreateTopicsResponse = c.send(&create("m1", 10), 7).await;
    assert_eq!((r.topics[0].error_code, r.throttle_time_ms), (0, 0));
    // The bucket may go below zero once: this one passes, and leaves it 2 short.
    let r: CreateTopicsResponse = c.send(&create("m2", 2), 7).await;
    assert_eq!((r.topics[0].error_code, r.throttle_time_ms), (0, 0));
    let r: CreateTopicsResponse = c.send(&create("m3", 1), 7).await;
    assert_eq!(r.topics[0].error_code, 89, "THROTTLING_QUOTA_EXCEEDED");
    assert!(
        r.throttle_time_ms > 1500 && r.throttle_time_ms <= 2000,
        "{}",
        r.throttle_time_ms
    );
    assert!(broker.broker.meta.image().topic_by_name("m3").is_none());
    // Permissive before v6: done, and throttled.
    let started = Instant::now();
    let r: CreateTopicsResponse = c.send(&create("m4", 1), 5).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the connection was muted"
    );
    assert_eq!(r.topics[0].error_code, 0);
    assert!(r.throttle_time_ms > 0);
    broker.stop().await;
}
