//! Partitions as replicas: what Metadata, DescribeTopicPartitions, Produce, Fetch and
//! ListOffsets report and refuse follows the partition's leadership and its high watermark,
//! not literals. Leadership is changed here through the broker's state, as the metadata log
//! will once the cluster exists.

use crate::common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{batch, produce_request, topic_name, Client, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use ottla::cluster::{Partition, Role};
use ottla::meta::records::{Endpoint, MetaRecord};
use uuid::Uuid;

async fn create(c: &mut Client, topic: &str) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(1000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(1)
            .with_replication_factor(-1)]);
    let r = c.send(&req, 7).await;
    assert_eq!(r.topics[0].error_code, 0);
}

fn fetch(topic: &str, offset: i64, epoch: i32, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(epoch)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

fn list_latest(topic: &str, epoch: i32) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_current_leader_epoch(epoch)
                .with_timestamp(-1)])])
}

fn values_of(records: &Option<Bytes>) -> Vec<Vec<u8>> {
    let mut b = records.clone().unwrap_or_default();
    RecordBatchDecoder::decode_all(&mut b)
        .expect("batches decode")
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| r.value.map(|v| v.to_vec()).unwrap_or_default())
        .collect()
}

fn partition(broker: &TestBroker, topic: &str) -> std::sync::Arc<Partition> {
    broker
        .broker
        .topics
        .get(topic)
        .and_then(|t| t.partition(0))
        .expect("partition exists")
}

/// Commits a new leadership for partition 0 of `topic` through the metadata log, as the
/// controller would after an election.
async fn decide(
    broker: &TestBroker,
    topic: &str,
    leader: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: &[i32],
    isr: &[i32],
) {
    let topic_id = broker.broker.meta.image().topic_by_name(topic).unwrap().id;
    broker
        .broker
        .meta
        .controller
        .propose(vec![MetaRecord::Partition {
            topic_id,
            index: 0,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch,
            partition_epoch,
        }])
        .await
        .unwrap();
}

#[tokio::test]
async fn metadata_reports_the_partitions_leadership() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "led").await;
    // This broker is node 1; the controller decides a new leadership for partition 0.
    decide(&broker, "led", 1, 5, 9, &[1, 2, 3], &[1, 3]).await;
    assert_eq!(partition(&broker, "led").leadership().role, Role::Leader);
    let r = c
        .send(
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name("led")))
            ])),
            12,
        )
        .await;
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!((p.leader_id, p.leader_epoch), (BrokerId(1), 5));
    assert_eq!(p.replica_nodes, vec![BrokerId(1), BrokerId(2), BrokerId(3)]);
    assert_eq!(p.isr_nodes, vec![BrokerId(1), BrokerId(3)]);

    let r = c
        .send(
            &DescribeTopicPartitionsRequest::default()
                .with_topics(vec![TopicRequest::default().with_name(topic_name("led"))])
                .with_response_partition_limit(10),
            0,
        )
        .await;
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.leader_id, p.leader_epoch), (BrokerId(1), 5));
    assert_eq!(p.isr_nodes, vec![BrokerId(1), BrokerId(3)]);

    // The epoch a client saw is checked: older is fenced, newer unknown, equal served.
    let r = c.send(&fetch("led", 0, 4, 0), 12).await;
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        ResponseError::FencedLeaderEpoch.code()
    );
    let r = c.send(&fetch("led", 0, 6, 0), 12).await;
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        ResponseError::UnknownLeaderEpoch.code()
    );
    let r = c.send(&fetch("led", 0, 5, 0), 12).await;
    assert_eq!(r.responses[0].partitions[0].error_code, 0);
    let r = c.send(&list_latest("led", 4), 7).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::FencedLeaderEpoch.code()
    );
    let r = c.send(&list_latest("led", 5), 7).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(r.topics[0].partitions[0].leader_epoch, 5);
    broker.stop().await;
}

#[tokio::test]
async fn a_follower_refuses_produce_and_old_consumer_fetches() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "fol").await;
    // Broker 2 registers and becomes the leader.
    broker
        .broker
        .meta
        .controller
        .propose(vec![MetaRecord::RegisterBroker {
            id: 2,
            incarnation: Uuid::new_v4(),
            endpoints: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "broker-two".into(),
                port: 9999,
                security_protocol: 0,
            }],
            rack: Some("r2".into()),
        }])
        .await
        .unwrap();
    decide(&broker, "fol", 2, 1, 1, &[1, 2], &[1, 2]).await;
    assert_eq!(partition(&broker, "fol").leadership().role, Role::Follower);
    for version in [9, 11] {
        let r = c
            .send(
                &produce_request("fol", 0, 1, batch(&[b"x"], Compression::None)),
                version,
            )
            .await;
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, ResponseError::NotLeaderOrFollower.code());
        // KIP-951 (v10+): where the leader is, so the client moves in one round trip.
        if version >= 10 {
            assert_eq!(
                (p.current_leader.leader_id, p.current_leader.leader_epoch),
                (BrokerId(2), 1)
            );
            assert_eq!(r.node_endpoints.len(), 1);
            let e = &r.node_endpoints[0];
            assert_eq!(
                (e.node_id, e.host.as_str(), e.port, e.rack.as_deref()),
                (BrokerId(2), "broker-two", 9999, Some("r2"))
            );
        } else {
            assert!(r.node_endpoints.is_empty());
        }
    }
    let topic_id = broker.broker.meta.image().topic_by_name("fol").unwrap().id;
    // Before v11 consumers read from leaders only; from v11 a follower serves them (KIP-392,
    // below its high watermark: nothing here).
    let r = c.send(&fetch("fol", 0, -1, 0), 10).await;
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        ResponseError::NotLeaderOrFollower.code()
    );
    for version in [12, 16] {
        let mut f = fetch("fol", 0, -1, 0);
        f.topics[0].topic_id = topic_id;
        let r = c.send(&f, version).await;
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "v{version}: a follower serves consumers");
        assert_eq!(p.preferred_read_replica, BrokerId(-1));
        assert!(p.records.as_ref().is_none_or(|r| r.is_empty()));
    }
    let r = c.send(&list_latest("fol", -1), 7).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::NotLeaderOrFollower.code()
    );
    // Metadata names the leader elsewhere.
    let r = c
        .send(
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name("fol")))
            ])),
            12,
        )
        .await;
    assert_eq!(r.topics[0].partitions[0].leader_id, BrokerId(2));
    // By topic id, an unknown id is UNKNOWN_TOPIC_ID.
    let mut by_id = fetch("nope", 0, -1, 0);
    by_id.topics[0].topic_id = Uuid::new_v4();
    let r = c.send(&by_id, 13).await;
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        ResponseError::UnknownTopicId.code()
    );
    broker.stop().await;
}

#[tokio::test]
async fn consumers_read_below_the_high_watermark_and_wake_when_it_moves() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "hw").await;
    let p = partition(&broker, "hw");
    c.send(
        &produce_request("hw", 0, 1, batch(&[b"a"], Compression::None)),
        9,
    )
    .await;
    // From here the high watermark moves only when told (as replication will move it).
    p.log().set_hw_follows_log_end(false);
    let r = c
        .send(
            &produce_request("hw", 0, 1, batch(&[b"b", b"c"], Compression::None)),
            9,
        )
        .await;
    assert_eq!(r.responses[0].partition_responses[0].base_offset, 1);
    assert_eq!((p.high_watermark(), p.log().log_end_offset()), (1, 3));

    let r = c.send(&fetch("hw", 0, -1, 0), 12).await;
    let part = &r.responses[0].partitions[0];
    assert_eq!(part.high_watermark, 1);
    assert_eq!(part.last_stable_offset, 1);
    assert_eq!(values_of(&part.records), vec![b"a".to_vec()]);
    // Between the HW and the log end: an empty answer, not OFFSET_OUT_OF_RANGE.
    let r = c.send(&fetch("hw", 1, -1, 0), 12).await;
    assert_eq!(r.responses[0].partitions[0].error_code, 0);
    assert!(values_of(&r.responses[0].partitions[0].records).is_empty());
    let r = c.send(&list_latest("hw", -1), 7).await;
    assert_eq!(r.topics[0].partitions[0].offset, 1);

    // A waiting consumer is woken by the HW advance, and then sees the records.
    let addr = broker.addr;
    let waiter = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        let started = Instant::now();
        let r = c.send(&fetch("hw", 1, -1, 20_000), 12).await;
        (started.elapsed(), r)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(p.log().advance_high_watermark(3));
    let (elapsed, r) = waiter.await.unwrap();
    let part = &r.responses[0].partitions[0];
    assert_eq!(part.high_watermark, 3);
    assert_eq!(values_of(&part.records), vec![b"b".to_vec(), b"c".to_vec()]);
    assert!(elapsed < Duration::from_secs(10), "waited {elapsed:?}");
    // Never past the log end, never down.
    assert!(!p.log().advance_high_watermark(99));
    assert!(!p.log().advance_high_watermark(2));
    assert_eq!(p.high_watermark(), 3);
    broker.stop().await;
}
