//! DescribeLogDirs (key 35, v1-4) against a disk broker (on the broker's own runtime, workers
//! marked: the file-system stat must not run on one) and a memory broker: null `topics` lists
//! every partition held here, named partitions only those, unknown topics and partitions are
//! absent; each partition's size is the bytes of the batches produced to it and grows with
//! them; v4 reports the directory's file system (memory mode: -1, named `memory`).
//!
//! The brokers listen on a port in 20000-20999 (`TestBroker::start_in_ports`).

use crate::common;

use std::path::Path;

use bytes::Bytes;
use common::{batch, produce_request, topic_name, Client, TestBroker};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::records::Compression;
use ottla::config::Config;

const PORTS: std::ops::RangeInclusive<u16> = 20000..=20999;
const TOPIC: &str = "dirs";

async fn create(c: &mut Client, topic: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)]);
    let r = c.send(&req, 7).await;
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
}

/// Produces `n` batches of one record to `partition`; returns the bytes they take in the log.
async fn produce(c: &mut Client, topic: &str, partition: i32, n: usize) -> i64 {
    let mut bytes = 0;
    for i in 0..n {
        let value = format!("value {i} of partition {partition}");
        let records: Bytes = batch(&[value.as_bytes()], Compression::None);
        bytes += records.len() as i64;
        let r = c
            .send(&produce_request(topic, partition, 1, records), 9)
            .await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    bytes
}

async fn describe(
    c: &mut Client,
    version: i16,
    topics: Option<Vec<(&str, Vec<i32>)>>,
) -> DescribeLogDirsResponse {
    let req = DescribeLogDirsRequest::default().with_topics(topics.map(|ts| {
        ts.into_iter()
            .map(|(t, ps)| {
                DescribableLogDirTopic::default()
                    .with_topic(topic_name(t))
                    .with_partitions(ps)
            })
            .collect()
    }));
    let r = c.send(&req, version).await;
    assert_eq!(r.error_code, 0, "v{version}");
    assert_eq!(r.results.len(), 1, "one log directory (v{version})");
    assert_eq!(r.results[0].error_code, 0, "v{version}");
    r
}

fn topic<'a>(result: &'a DescribeLogDirsResult, name: &str) -> Option<&'a DescribeLogDirsTopic> {
    result.topics.iter().find(|t| t.name.0.as_str() == name)
}

/// `(partition, size)` of every partition of `name` in the result, checking the fields Kafka
/// fixes for a current log.
fn sizes(result: &DescribeLogDirsResult, name: &str) -> Vec<(i32, i64)> {
    let Some(t) = topic(result, name) else {
        return Vec::new();
    };
    t.partitions
        .iter()
        .map(|p| {
            assert_eq!(p.offset_lag, 0, "{name}-{}", p.partition_index);
            assert!(!p.is_future_key, "{name}-{}", p.partition_index);
            (p.partition_index, p.partition_size)
        })
        .collect()
}

/// Bytes of the `.log` files of a partition directory.
fn log_file_bytes(dir: &Path) -> i64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| std::fs::metadata(p).unwrap().len() as i64)
        .sum()
}

/// The scenario both modes share; `check` looks at each result's directory fields.
async fn scenario(broker: &TestBroker, check: impl Fn(i16, &DescribeLogDirsResult)) {
    let mut c = broker.client().await;
    create(&mut c, TOPIC, 2).await;
    create(&mut c, "other", 1).await;
    let mut produced = [
        produce(&mut c, TOPIC, 0, 3).await,
        produce(&mut c, TOPIC, 1, 5).await,
    ];
    produce(&mut c, "other", 0, 1).await;

    for version in [1, 2, 3, 4] {
        // Null topics: every partition held here, this topic's two among them.
        let all = describe(&mut c, version, None).await;
        let result = &all.results[0];
        check(version, result);
        assert_eq!(
            sizes(result, TOPIC),
            vec![(0, produced[0]), (1, produced[1])],
            "v{version}"
        );
        assert_eq!(sizes(result, "other").len(), 1, "v{version}");

        // Named: only what was asked and is held here.
        let named = describe(
            &mut c,
            version,
            Some(vec![(TOPIC, vec![1, 7]), ("no-such-topic", vec![0])]),
        )
        .await;
        let result = &named.results[0];
        check(version, result);
        assert_eq!(result.topics.len(), 1, "v{version}: {:?}", result.topics);
        assert_eq!(sizes(result, TOPIC), vec![(1, produced[1])], "v{version}");
        assert!(topic(result, "no-such-topic").is_none());
        assert!(topic(result, "other").is_none());

        // Only an unknown topic: no topics at all, still the directory.
        let unknown = describe(&mut c, version, Some(vec![("no-such-topic", vec![0])])).await;
        check(version, &unknown.results[0]);
        assert!(unknown.results[0].topics.is_empty());
    }

    // More records: both partitions grow by what was produced.
    let before = sizes(&describe(&mut c, 4, None).await.results[0], TOPIC);
    produced[0] += produce(&mut c, TOPIC, 0, 4).await;
    produced[1] += produce(&mut c, TOPIC, 1, 1).await;
    let after = sizes(&describe(&mut c, 4, None).await.results[0], TOPIC);
    assert_eq!(after, vec![(0, produced[0]), (1, produced[1])]);
    assert!(after[0].1 > before[0].1 && after[1].1 > before[1].1);
}

#[test]
fn disk_broker_reports_its_data_directory() {
    let rt = ottla::threads::runtime().worker_threads(2).build().unwrap();
    let before = ottla::threads::violations();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    rt.block_on(async {
        let broker = TestBroker::start_in_ports(
            Config {
                data_dir: data_dir.clone(),
                ..Config::default()
            },
            PORTS,
        )
        .await;
        let expect_dir = std::path::absolute(&data_dir).unwrap();
        scenario(&broker, |version, result| {
            assert_eq!(result.log_dir.as_str(), expect_dir.to_str().unwrap());
            if version >= 4 {
                assert!(
                    result.total_bytes >= result.usable_bytes && result.usable_bytes > 0,
                    "total {} usable {}",
                    result.total_bytes,
                    result.usable_bytes
                );
            } else {
                // Not on the wire below v4: the decoder's defaults.
                assert_eq!((result.total_bytes, result.usable_bytes), (-1, -1));
            }
        })
        .await;
        // The sizes are the segment files' lengths.
        let mut c = broker.client().await;
        let result = describe(&mut c, 4, None).await.results.remove(0);
        for (p, size) in sizes(&result, TOPIC) {
            assert_eq!(size, log_file_bytes(&data_dir.join(format!("{TOPIC}-{p}"))));
        }
        broker.stop().await;
    });
    assert_eq!(
        ottla::threads::violations() - before,
        0,
        "blocking operations ran on runtime workers: {:?}",
        ottla::threads::violation_kinds()
    );
}

#[tokio::test]
async fn memory_broker_reports_a_memory_directory() {
    let broker = TestBroker::start_in_ports(
        Config {
            memory: true,
            ..Config::default()
        },
        PORTS,
    )
    .await;
    scenario(&broker, |_, result| {
        assert_eq!(result.log_dir.as_str(), "memory");
        assert_eq!((result.total_bytes, result.usable_bytes), (-1, -1));
    })
    .await;
    broker.stop().await;
}
