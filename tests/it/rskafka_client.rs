//! rskafka (influxdata's pure-Rust Kafka client, unmodified) against ottla: topic admin,
//! produce with every compression, fetch back byte for byte (keys, values, headers,
//! timestamps), offsets, DeleteRecords, its stream consumer; on a single in-process broker
//! and on a 3-node cluster (replication factor 3, the client finding each partition's
//! leader itself).

use crate::cluster::Cluster;
use crate::common::TestBroker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rskafka::chrono::{TimeZone, Utc};
use rskafka::client::consumer::{StartOffset, StreamConsumerBuilder};
use rskafka::client::partition::{Compression, OffsetAt, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;

const COMPRESSIONS: [Compression; 5] = [
    Compression::NoCompression,
    Compression::Gzip,
    Compression::Lz4,
    Compression::Snappy,
    Compression::Zstd,
];

fn record(round: usize, i: usize) -> Record {
    let mut headers = BTreeMap::new();
    headers.insert("round".to_string(), round.to_string().into_bytes());
    headers.insert("bin".to_string(), vec![0, 255, i as u8]);
    Record {
        key: (!i.is_multiple_of(3)).then(|| format!("key-{i}").into_bytes()),
        // Compressible, and not: a repeated run, then bytes that vary.
        value: Some(
            std::iter::repeat_n(b'v', 200)
                .chain((0..64).map(|b| (b as u8).wrapping_mul(i as u8 + 7)))
                .collect(),
        ),
        headers,
        timestamp: Utc
            .timestamp_millis_opt(1_700_000_000_000 + (round * 100 + i) as i64)
            .unwrap(),
    }
}

async fn client(bootstrap: String) -> Client {
    ClientBuilder::new(vec![bootstrap])
        .client_id("ottla-it-rskafka")
        .build()
        .await
        .expect("rskafka connects")
}

/// Creates `topic`, produces with every compression to each partition, reads everything
/// back, checks offsets and DeleteRecords, and streams from the new log start.
async fn exercise(client: &Client, topic: &str, partitions: i32, replication: i16) {
    let controller = client.controller_client().expect("controller client");
    controller
        .create_topic(topic, partitions, replication, 10_000)
        .await
        .expect("create topic");
    let listed = client.list_topics().await.expect("list topics");
    let t = listed
        .iter()
        .find(|t| t.name == topic)
        .expect("topic listed");
    assert_eq!(t.partitions, (0..partitions).collect());
    for p in 0..partitions {
        let pc = Arc::new(
            client
                .partition_client(topic, p, UnknownTopicHandling::Retry)
                .await
                .expect("partition client"),
        );
        let mut produced = Vec::new();
        for (round, compression) in COMPRESSIONS.iter().enumerate() {
            let records: Vec<Record> = (0..10).map(|i| record(round, i)).collect();
            let offsets = pc
                .produce(records.clone(), *compression)
                .await
                .unwrap_or_else(|e| panic!("produce {compression:?}: {e}"));
            let first = produced.len() as i64;
            assert_eq!(
                offsets,
                (first..first + 10).collect::<Vec<_>>(),
                "{compression:?}"
            );
            produced.extend(records);
        }
        assert_eq!(pc.get_offset(OffsetAt::Earliest).await.unwrap(), 0);
        assert_eq!(pc.get_offset(OffsetAt::Latest).await.unwrap(), 50);
        // Everything back, in order, byte for byte.
        let mut got = Vec::new();
        let mut offset = 0;
        while got.len() < produced.len() {
            let (records, hw) = pc
                .fetch_records(offset, 1..1_000_000, 1_000)
                .await
                .expect("fetch");
            assert_eq!(hw, 50);
            for r in records {
                assert_eq!(r.offset, offset);
                offset += 1;
                got.push(r.record);
            }
        }
        assert_eq!(got, produced, "partition {p}: every record, in order");
        // A timestamp lookup finds the first record at or after it.
        let at = Utc.timestamp_millis_opt(1_700_000_000_000 + 205).unwrap();
        assert_eq!(pc.get_offset(OffsetAt::Timestamp(at)).await.unwrap(), 25);
        pc.delete_records(30, 10_000).await.expect("delete records");
        assert_eq!(pc.get_offset(OffsetAt::Earliest).await.unwrap(), 30);
        let mut stream = StreamConsumerBuilder::new(Arc::clone(&pc), StartOffset::Earliest)
            .with_max_wait_ms(200)
            .build();
        let mut streamed = Vec::new();
        while streamed.len() < 20 {
            let (r, hw) = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("stream answers")
                .expect("stream goes on")
                .expect("record");
            assert_eq!(hw, 50);
            assert_eq!(r.offset, 30 + streamed.len() as i64);
            streamed.push(r.record);
        }
        assert_eq!(streamed, produced[30..]);
    }
    controller
        .delete_topic(topic, 10_000)
        .await
        .expect("delete topic");
}

#[tokio::test]
async fn rskafka_against_a_single_broker() {
    let broker = TestBroker::memory().await;
    let c = client(broker.addr.to_string()).await;
    exercise(&c, "rskafka-single", 2, 1).await;
    broker.stop().await;
}

#[tokio::test]
async fn rskafka_against_a_three_node_cluster() {
    let mut cluster = Cluster::start(3).await;
    let c = client(cluster.bootstrap(1).to_string()).await;
    exercise(&c, "rskafka-cluster", 3, 3).await;
    drop(c);
    for (id, status) in cluster.kill_all(libc::SIGTERM) {
        assert!(status.success(), "node {id}: {status}");
    }
}
