//! OffsetForLeaderEpoch (key 23, v2-4) against a broker whose partition has been led under
//! several leader epochs (changed through the metadata log, as an election would): where each
//! epoch ends, the current epoch at the log end (not the high watermark), epochs between and
//! below the known ones, the `current_leader_epoch` check, unknown partitions and partitions
//! led elsewhere.

use crate::common;

use common::{batch, produce_request, topic_name, Client, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::records::Compression;
use ottla::meta::records::{Endpoint, MetaRecord};
use uuid::Uuid;

async fn create(c: &mut Client, topic: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(1000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)]);
    let r = c.send(&req, 7).await;
    assert_eq!(r.topics[0].error_code, 0);
}

/// Commits a new leadership of `topic`'s partition 0 through the metadata log.
async fn decide(broker: &TestBroker, topic: &str, leader: i32, leader_epoch: i32) {
    let topic_id = broker.broker.meta.image().topic_by_name(topic).unwrap().id;
    broker
        .broker
        .meta
        .controller
        .propose(vec![MetaRecord::Partition {
            topic_id,
            index: 0,
            replicas: vec![1, 2],
            // The leader alone in the ISR: broker 2 is registered but never fetches, so an
            // ISR holding it would hold the high watermark back.
            isr: vec![leader],
            leader,
            leader_epoch,
            partition_epoch: leader_epoch,
        }])
        .await
        .unwrap();
}

/// Produces `n` single-record batches to partition 0; returns the log end after them.
async fn produce(c: &mut Client, topic: &str, n: usize) -> i64 {
    let mut end = 0;
    for _ in 0..n {
        let r = c
            .send(
                &produce_request(topic, 0, 1, batch(&[b"v"], Compression::None)),
                9,
            )
            .await;
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0);
        end = p.base_offset + 1;
    }
    end
}

fn request(
    replica_id: i32,
    topic: &str,
    partitions: &[(i32, i32, i32)],
) -> OffsetForLeaderEpochRequest {
    OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(replica_id))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&(partition, current, epoch)| {
                        OffsetForLeaderPartition::default()
                            .with_partition(partition)
                            .with_current_leader_epoch(current)
                            .with_leader_epoch(epoch)
                    })
                    .collect(),
            )])
}

/// `(error, leader_epoch, end_offset)` of one partition, asked at `version`.
async fn ask(
    c: &mut Client,
    version: i16,
    topic: &str,
    partition: i32,
    current: i32,
    epoch: i32,
) -> (i16, i32, i64) {
    let r = c
        .send(&request(-1, topic, &[(partition, current, epoch)]), version)
        .await;
    assert_eq!(r.topics.len(), 1);
    assert_eq!(r.topics[0].topic, topic_name(topic));
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.partition, partition);
    (p.error_code, p.leader_epoch, p.end_offset)
}

async fn register_broker_two(broker: &TestBroker) {
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
            rack: None,
        }])
        .await
        .unwrap();
}

#[tokio::test]
async fn epochs_end_where_the_next_one_starts() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "ep", 1).await;
    register_broker_two(&broker).await;
    // Epochs 1, 3 and 5 write: 1 at [0, 4), 3 at [4, 7), 5 from 7.
    decide(&broker, "ep", 1, 1).await;
    assert_eq!(produce(&mut c, "ep", 4).await, 4);
    decide(&broker, "ep", 1, 3).await;
    assert_eq!(produce(&mut c, "ep", 3).await, 7);
    decide(&broker, "ep", 1, 5).await;
    assert_eq!(produce(&mut c, "ep", 2).await, 9);

    for version in 2..=4 {
        // An exact epoch: where the next one starts.
        assert_eq!(ask(&mut c, version, "ep", 0, -1, 1).await, (0, 1, 4));
        assert_eq!(ask(&mut c, version, "ep", 0, -1, 3).await, (0, 3, 7));
        // Between two known epochs: the one below, and where it ends.
        assert_eq!(ask(&mut c, version, "ep", 0, -1, 2).await, (0, 1, 4));
        assert_eq!(ask(&mut c, version, "ep", 0, -1, 4).await, (0, 3, 7));
        // The current epoch: the log end.
        assert_eq!(ask(&mut c, version, "ep", 0, -1, 5).await, (0, 5, 9));
        assert_eq!(ask(&mut c, version, "ep", 0, 5, 5).await, (0, 5, 9));
        // Below every known epoch: Kafka's `LeaderEpochFileCache.endOffsetFor` answers the
        // requested epoch ending where the first known one starts.
        assert_eq!(ask(&mut c, version, "ep", 0, -1, 0).await, (0, 0, 0));
        // No epoch, or one newer than any: undefined.
        assert_eq!(ask(&mut c, version, "ep", 0, -1, -1).await, (0, -1, -1));
        assert_eq!(ask(&mut c, version, "ep", 0, -1, 6).await, (0, -1, -1));
        // The request's current leader epoch is checked.
        let fenced = ResponseError::FencedLeaderEpoch.code();
        let unknown = ResponseError::UnknownLeaderEpoch.code();
        assert_eq!(ask(&mut c, version, "ep", 0, 4, 3).await, (fenced, -1, -1));
        assert_eq!(ask(&mut c, version, "ep", 0, 6, 3).await, (unknown, -1, -1));
        // Unknown topic, unknown partition.
        let unknown_tp = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(
            ask(&mut c, version, "nope", 0, -1, 1).await,
            (unknown_tp, -1, -1)
        );
        assert_eq!(
            ask(&mut c, version, "ep", 7, -1, 1).await,
            (unknown_tp, -1, -1)
        );
    }

    // Several partitions in one request, answered in request order; a follower's replica id
    // (v3+) gets the same answers as a consumer's.
    for replica_id in [-1, 2] {
        let r = c
            .send(
                &request(replica_id, "ep", &[(0, 5, 3), (3, -1, 0), (0, -1, 5)]),
                3,
            )
            .await;
        let got: Vec<_> = r.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition, p.error_code, p.leader_epoch, p.end_offset))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 0, 3, 7),
                (3, ResponseError::UnknownTopicOrPartition.code(), -1, -1),
                (0, 0, 5, 9),
            ]
        );
    }

    // A new leader epoch that has written nothing yet: as Kafka (which caches a new leader's
    // epoch at its log end), it ends at the log end and the previous one ends there too.
    decide(&broker, "ep", 1, 8).await;
    assert_eq!(ask(&mut c, 4, "ep", 0, -1, 8).await, (0, 8, 9));
    assert_eq!(ask(&mut c, 4, "ep", 0, -1, 5).await, (0, 5, 9));
    assert_eq!(ask(&mut c, 4, "ep", 0, -1, 7).await, (0, 5, 9));
    assert_eq!(ask(&mut c, 4, "ep", 0, -1, 3).await, (0, 3, 7));
    assert_eq!(ask(&mut c, 4, "ep", 0, 8, 9).await, (0, -1, -1));
    assert_eq!(
        ask(&mut c, 4, "ep", 0, 5, 5).await,
        (ResponseError::FencedLeaderEpoch.code(), -1, -1)
    );

    // The end offset is the log end, not the high watermark (Kafka does not bound it).
    let partition = broker
        .broker
        .topics
        .get("ep")
        .and_then(|t| t.partition(0))
        .unwrap();
    partition.log().set_hw_follows_log_end(false);
    assert_eq!(produce(&mut c, "ep", 2).await, 11);
    assert_eq!(partition.high_watermark(), 9);
    assert_eq!(ask(&mut c, 4, "ep", 0, 8, 8).await, (0, 8, 11));
    assert_eq!(ask(&mut c, 4, "ep", 0, -1, 5).await, (0, 5, 9));

    // Led elsewhere: only the leader answers, consumers and followers alike.
    decide(&broker, "ep", 2, 9).await;
    for replica_id in [-1, 2] {
        let r = c.send(&request(replica_id, "ep", &[(0, 9, 8)]), 4).await;
        let p = &r.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.leader_epoch, p.end_offset),
            (ResponseError::NotLeaderOrFollower.code(), -1, -1)
        );
    }
    // The epoch check comes first, as Kafka orders it.
    assert_eq!(
        ask(&mut c, 4, "ep", 0, 8, 8).await,
        (ResponseError::FencedLeaderEpoch.code(), -1, -1)
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_fresh_partition_answers_its_first_epoch() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "fresh", 1).await;
    // Led at epoch 0 and empty: epoch 0 ends at the log end, 0.
    assert_eq!(ask(&mut c, 2, "fresh", 0, 0, 0).await, (0, 0, 0));
    assert_eq!(produce(&mut c, "fresh", 3).await, 3);
    assert_eq!(ask(&mut c, 3, "fresh", 0, 0, 0).await, (0, 0, 3));
    assert_eq!(ask(&mut c, 4, "fresh", 0, -1, 1).await, (0, -1, -1));
    broker.stop().await;
}

/// A follower's fetch parked at its leader that outlives the leader's demotion answers the
/// error of its leader epoch, never what the demoted replica appended since as a follower
/// (batches of the new leader's epoch after the older ones the fetcher has would hide its
/// divergence from the next DIVERGING_EPOCH check). Found by the simulation (seed 13183).
#[tokio::test]
async fn a_parked_follower_fetch_outliving_a_demotion_answers_no_records() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    register_broker_two(&broker).await;
    create(&mut c, "demoted", 1).await;
    decide(&broker, "demoted", 1, 1).await;
    let end = produce(&mut c, "demoted", 2).await;
    assert_eq!(end, 2);
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(2))
        .with_max_wait_ms(5000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name("demoted"))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(1)
                .with_last_fetched_epoch(1)
                .with_fetch_offset(end)
                .with_partition_max_bytes(1 << 20)])]);
    let mut follower = broker.client().await;
    let parked = tokio::spawn(async move { follower.send(&fetch, 12).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!parked.is_finished(), "the fetch waits for data");
    // Broker 2 leads at epoch 2; this broker follows and takes a batch of epoch 2.
    decide(&broker, "demoted", 2, 2).await;
    let p = broker
        .broker
        .topics
        .get("demoted")
        .unwrap()
        .partition(0)
        .unwrap();
    let mut b = batch(&[b"from broker 2"], Compression::None).to_vec();
    ottla::log::batch::assign_offsets(&mut b, end);
    ottla::log::batch::stamp_leader_epoch(&mut b, 2);
    p.log().append_as_follower(&b).unwrap();
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), parked)
        .await
        .expect("answered")
        .unwrap();
    let part = &r.responses[0].partitions[0];
    assert_eq!(
        part.error_code,
        ResponseError::FencedLeaderEpoch.code(),
        "the fetch was made at epoch 1"
    );
    assert!(part.records.as_ref().is_none_or(|r| r.is_empty()));
    broker.stop().await;
}
