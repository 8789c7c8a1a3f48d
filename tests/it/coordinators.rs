//! The coordinators of the internal topics' partitions, through the wire against an
//! in-process single-node broker: FindCoordinator's partition choice (Kafka's
//! `abs(hashCode) % partitions`), NOT_COORDINATOR and the reload when a partition's leadership
//! moves away and back (crafted on one node by proposing leadership changes to its
//! controller), WriteTxnMarkers (server and client side), producer-id blocks from the
//! controller, and data directories of earlier versions (a one-partition `__consumer_offsets`,
//! a `meta/producer_id_block` file).

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{Client, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use ottla::config::Config;
use ottla::coordinator::partitions::partition_for;
use ottla::groups::OFFSETS_TOPIC;
use ottla::meta::records::MetaRecord;
use ottla::txn::markers::{Marker, MarkerChannel};
use ottla::txn::producer_ids::ProducerIdAllocator;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn name(v: &str) -> TopicName {
    TopicName(s(v))
}

async fn find(c: &mut Client, key: &str, key_type: i8) -> FindCoordinatorResponse {
    c.send(
        &FindCoordinatorRequest::default()
            .with_key(s(key))
            .with_key_type(key_type),
        3,
    )
    .await
}

fn commit(group: &str, topic: &str, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])])
}

/// Commits `offset` for partition 0 of `topic`; the partition's error code.
async fn commit_code(c: &mut Client, group: &str, topic: &str, offset: i64) -> i16 {
    c.send(&commit(group, topic, offset), 8).await.topics[0].partitions[0].error_code
}

/// OffsetFetch v7 of partition 0 of `topic`: (top-level error, committed offset).
async fn fetched(c: &mut Client, group: &str, topic: &str) -> (i16, i64) {
    let r = c
        .send(
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(name(topic))
                    .with_partition_indexes(vec![0])])),
            7,
        )
        .await;
    let offset = r
        .topics
        .first()
        .map_or(-1, |t| t.partitions[0].committed_offset);
    (r.error_code, offset)
}

fn join(group: &str, member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"m"))])
}

/// Changes the leader of partition `index` of `topic` through the controller (a cluster of
/// one leads everything: this is how a test makes a partition led "elsewhere").
async fn set_leader(broker: &TestBroker, topic: &str, index: i32, leader: i32) {
    let meta = &broker.broker.meta;
    let id = meta.image().topic_by_name(topic).expect("topic").id;
    meta.controller
        .propose(vec![MetaRecord::PartitionChange {
            topic_id: id,
            index,
            isr: None,
            leader: Some(leader),
            replicas: None,
            elr: None,
        }])
        .await
        .expect("leadership change committed");
}

/// Waits until `done` holds (the coordinators follow the image in the background).
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn find_coordinator_answers_the_leader_of_the_keys_partition() {
    let broker = TestBroker::memory().await;
    let b = &broker.broker;
    // Java's "group-1".hashCode(), by hand (h = 31 * h + c, wrapping at 32 bits):
    //   'g' 103 -> 103; 'r' 114 -> 3307; 'o' 111 -> 102628; 'u' 117 -> 3181585;
    //   'p' 112 -> 98629247; '-' 45 -> 3057506702, which wraps to -1237460594;
    //   '1' 49 -> -1237460594 * 31 + 49 = -38361278365, which wraps to 293427299.
    // Utils.abs(293427299) % 50 = 49.
    assert_eq!(partition_for("group-1", 50), Some(49));
    assert_eq!(b.groups.partition_of("group-1"), Some(49));
    assert_eq!(b.groups.for_group("group-1").unwrap().partition(), 49);
    // "txn-1".hashCode() = 110810510: partition 10 of __transaction_state.
    assert_eq!(b.txns.partition_of("txn-1"), Some(10));
    assert_eq!(b.txns.for_txn("txn-1").unwrap().partition(), 10);
    assert_eq!(
        b.groups.active().len(),
        50,
        "a cluster of one leads every partition"
    );
    assert_eq!(b.txns.active().len(), 50);

    let mut c = broker.client().await;
    for key_type in [0, 1] {
        let r = find(&mut c, "group-1", key_type).await;
        assert_eq!(r.error_code, 0);
        assert_eq!(r.node_id.0, 1);
        assert_eq!(r.host.as_str(), b.node.host);
        assert_eq!(r.port, broker.addr.port() as i32);
    }
    let r = c
        .send(
            &FindCoordinatorRequest::default()
                .with_key_type(0)
                .with_coordinator_keys(vec![s("group-1"), s("my-group"), s("")]),
            4,
        )
        .await;
    let codes: Vec<i16> = r.coordinators.iter().map(|c| c.error_code).collect();
    assert_eq!(codes, vec![0, 0, ResponseError::InvalidGroupId.code()]);
    assert_eq!(r.coordinators[1].port, broker.addr.port() as i32);

    // The broker reports the internal topics' settings.
    let r = c
        .send(
            &DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(s("1"))
                    .with_configuration_keys(Some(vec![
                        s("offsets.topic.num.partitions"),
                        s("offsets.topic.replication.factor"),
                        s("transaction.state.log.num.partitions"),
                        s("transaction.state.log.replication.factor"),
                    ])),
            ]),
            4,
        )
        .await;
    let values: Vec<(String, String)> = r.results[0]
        .configs
        .iter()
        .map(|e| (e.name.to_string(), e.value.as_ref().unwrap().to_string()))
        .collect();
    assert_eq!(
        values,
        vec![
            ("offsets.topic.num.partitions".into(), "50".into()),
            ("offsets.topic.replication.factor".into(), "3".into()),
            ("transaction.state.log.num.partitions".into(), "50".into()),
            (
                "transaction.state.log.replication.factor".into(),
                "3".into()
            ),
        ]
    );
    // Created with one replica on a cluster of one.
    let image = b.meta.image();
    let offsets = image.topic_by_name(OFFSETS_TOPIC).unwrap();
    assert_eq!(offsets.partitions.len(), 50);
    assert!(offsets.partitions.iter().all(|p| p.replicas == vec![1]));
    broker.stop().await;
}

#[tokio::test]
async fn a_partition_led_elsewhere_answers_not_coordinator_and_reloads_when_led_again() {
    let broker = TestBroker::memory().await;
    let b = broker.broker.clone();
    let mut c = broker.client().await;
    b.admin_create_topic("t", Some(1), Default::default())
        .await
        .unwrap();
    assert_eq!(commit_code(&mut c, "group-1", "t", 7).await, 0);

    // A stable group of one member, and a second member waiting in JoinGroup for the first
    // to rejoin.
    let first = c.send(&join("group-1", ""), 5).await;
    let a = c.send(&join("group-1", first.member_id.as_str()), 5).await;
    assert_eq!(a.error_code, 0);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("group-1")))
        .with_generation_id(a.generation_id)
        .with_member_id(a.member_id.clone())
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(a.member_id.clone())
            .with_assignment(Bytes::from_static(b"x"))]);
    assert_eq!(c.send(&sync, 3).await.error_code, 0);
    let mut other = broker.client().await;
    let first_b = other.send(&join("group-1", ""), 5).await;
    let waiting = tokio::spawn(async move {
        other
            .send(&join("group-1", first_b.member_id.as_str()), 5)
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());

    // Partition 49 of __consumer_offsets ("group-1"'s) loses its leader: this broker resigns.
    set_leader(&broker, OFFSETS_TOPIC, 49, -1).await;
    eventually("the coordinator to resign", || {
        b.groups.for_group("group-1").is_err()
    })
    .await;
    let answered = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting join is answered")
        .unwrap();
    assert_eq!(answered.error_code, ResponseError::NotCoordinator.code());
    let not_coordinator = ResponseError::NotCoordinator.code();
    assert_eq!(fetched(&mut c, "group-1", "t").await.0, not_coordinator);
    assert_eq!(
        commit_code(&mut c, "group-1", "t", 8).await,
        not_coordinator
    );
    let hb = c
        .send(
            &HeartbeatRequest::default()
                .with_group_id(GroupId(s("group-1")))
                .with_generation_id(a.generation_id)
                .with_member_id(a.member_id.clone()),
            4,
        )
        .await;
    assert_eq!(hb.error_code, not_coordinator);
    let d = c
        .send(
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("group-1"))]),
            5,
        )
        .await;
    assert_eq!(d.groups[0].error_code, not_coordinator);
    // No leader: no coordinator to find.
    assert_eq!(
        find(&mut c, "group-1", 0).await.error_code,
        ResponseError::CoordinatorNotAvailable.code()
    );
    // Groups of the other partitions carry on ("g" is on partition 3).
    assert_eq!(partition_for("g", 50), Some(3));
    assert_eq!(commit_code(&mut c, "g", "t", 1).await, 0);
    assert_eq!(fetched(&mut c, "g", "t").await, (0, 1));

    // Led here again (a new leader epoch): loaded from the log, the offsets are back.
    set_leader(&broker, OFFSETS_TOPIC, 49, 1).await;
    eventually("the coordinator to load", || {
        b.groups.for_group("group-1").is_ok()
    })
    .await;
    assert_eq!(fetched(&mut c, "group-1", "t").await, (0, 7));
    assert_eq!(find(&mut c, "group-1", 0).await.error_code, 0);

    // The same for a transactional id: "txn-1" is on partition 10 of __transaction_state.
    set_leader(&broker, "__transaction_state", 10, -1).await;
    eventually("the transaction coordinator to resign", || {
        b.txns.for_txn("txn-1").is_err()
    })
    .await;
    let init = c
        .send(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s("txn-1"))))
                .with_transaction_timeout_ms(10_000),
            4,
        )
        .await;
    assert_eq!(init.error_code, not_coordinator);
    let d = c
        .send(
            &DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(s("txn-1"))]),
            0,
        )
        .await;
    assert_eq!(d.transaction_states[0].error_code, not_coordinator);
    set_leader(&broker, "__transaction_state", 10, 1).await;
    eventually("the transaction coordinator to load", || {
        b.txns.for_txn("txn-1").is_ok()
    })
    .await;
    let init = c
        .send(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s("txn-1"))))
                .with_transaction_timeout_ms(10_000),
            4,
        )
        .await;
    assert_eq!(init.error_code, 0);
    broker.stop().await;
}

/// One transactional batch of producer `pid` (epoch 0) with `n` records.
fn txn_batch(pid: i64, n: usize) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: true,
            control: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

/// A transaction of `transactional_id` with 3 records in partition 0 of `topic`, not ended;
/// returns its producer id.
async fn open_transaction(c: &mut Client, transactional_id: &str, topic: &str) -> i64 {
    let tid = TransactionalId(s(transactional_id));
    let init = c
        .send(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(tid.clone()))
                .with_transaction_timeout_ms(60_000),
            4,
        )
        .await;
    assert_eq!(init.error_code, 0);
    let added = c
        .send(
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(tid)
                .with_v3_and_below_producer_id(init.producer_id)
                .with_v3_and_below_producer_epoch(0)
                .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(name(topic))
                    .with_partitions(vec![0])]),
            3,
        )
        .await;
    assert_eq!(
        added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
    let produce = common::produce_request(topic, 0, -1, txn_batch(init.producer_id.0, 3))
        .with_transactional_id(Some(TransactionalId(s(transactional_id))));
    let r = c.send(&produce, 9).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    init.producer_id.0
}

fn markers(
    pid: i64,
    commit: bool,
    coordinator_epoch: i32,
    parts: &[(&str, i32)],
) -> WriteTxnMarkersRequest {
    WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(0)
        .with_transaction_result(commit)
        .with_coordinator_epoch(coordinator_epoch)
        .with_topics(
            parts
                .iter()
                .map(|(t, p)| {
                    WritableTxnMarkerTopic::default()
                        .with_name(name(t))
                        .with_partition_indexes(vec![*p])
                })
                .collect(),
        )])
}

fn codes(r: &WriteTxnMarkersResponse) -> Vec<i16> {
    r.markers[0]
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

#[tokio::test]
async fn write_txn_markers_end_transactions_on_data_and_group_partitions() {
    let broker = TestBroker::memory().await;
    let b = broker.broker.clone();
    let mut c = broker.client().await;
    b.admin_create_topic("t", Some(1), Default::default())
        .await
        .unwrap();
    let log = b
        .topics
        .get("t")
        .unwrap()
        .partition(0)
        .unwrap()
        .log()
        .clone();
    let pid = open_transaction(&mut c, "tx", "t").await;
    assert_eq!(
        log.last_stable_offset(),
        0,
        "the open transaction pins the LSO"
    );

    // A group's transactional offsets on its __consumer_offsets partition.
    let r = c
        .send(
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(0)
                .with_group_id(GroupId(s("txg"))),
            3,
        )
        .await;
    assert_eq!(r.error_code, 0);
    let group_partition = partition_for("txg", 50).unwrap();
    let described = b.txns.describe("tx").unwrap();
    assert!(described
        .partitions
        .contains(&(OFFSETS_TOPIC.to_string(), group_partition)));
    let r = c
        .send(
            &TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_group_id(GroupId(s("txg")))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(0)
                .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                    .with_name(name("t"))
                    .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(3)])]),
            3,
        )
        .await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(
        fetched(&mut c, "txg", "t").await,
        (0, -1),
        "not before the marker"
    );

    // What another broker's transaction coordinator would send this one.
    let r = c
        .send(
            &markers(
                pid,
                true,
                0,
                &[("t", 0), (OFFSETS_TOPIC, group_partition), ("gone", 0)],
            ),
            1,
        )
        .await;
    assert_eq!(r.markers[0].producer_id.0, pid);
    assert_eq!(
        codes(&r),
        vec![0, 0, ResponseError::UnknownTopicOrPartition.code()]
    );
    assert_eq!(log.last_stable_offset(), 4, "3 records and the marker");
    assert_eq!(
        fetched(&mut c, "txg", "t").await,
        (0, 3),
        "applied by the marker"
    );

    // A marker of an older coordinator epoch than the partition has seen is fenced.
    let r = c.send(&markers(pid, false, 5, &[("t", 0)]), 1).await;
    assert_eq!(codes(&r), vec![0]);
    let r = c.send(&markers(pid, false, 3, &[("t", 0)]), 1).await;
    assert_eq!(
        codes(&r),
        vec![ResponseError::TransactionCoordinatorFenced.code()]
    );
    // A partition this broker does not lead.
    set_leader(&broker, "t", 0, -1).await;
    eventually("t-0 to lose its leader", || {
        b.topics
            .get_partition(ottla::cluster::TopicRef::Name("t"), 0, None)
            .is_err()
    })
    .await;
    let r = c.send(&markers(pid, true, 6, &[("t", 0)]), 1).await;
    assert_eq!(codes(&r), vec![ResponseError::NotLeaderOrFollower.code()]);
    broker.stop().await;
}

/// The client side: the marker channel sends WriteTxnMarkers to a broker's client listener
/// (here this broker's own, the only one a cluster of one has).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_marker_channel_writes_markers_at_the_leader() {
    let broker = TestBroker::memory().await;
    let b = broker.broker.clone();
    let mut c = broker.client().await;
    b.admin_create_topic("t", Some(1), Default::default())
        .await
        .unwrap();
    let log = b
        .topics
        .get("t")
        .unwrap()
        .partition(0)
        .unwrap()
        .log()
        .clone();
    let pid = open_transaction(&mut c, "tx", "t").await;
    let channel = Arc::new(MarkerChannel::new(
        b.meta.clone(),
        tokio::runtime::Handle::current(),
    ));
    let marker = Marker {
        producer_id: pid,
        producer_epoch: 0,
        commit: false,
        coordinator_epoch: 0,
    };
    let ch = channel.clone();
    tokio::task::spawn_blocking(move || ch.send_to(1, &marker, &[("t".to_string(), 0)]))
        .await
        .unwrap()
        .expect("the leader wrote the marker");
    assert_eq!(log.last_stable_offset(), 4);
    // A broker that is not registered cannot be sent to.
    let ch = channel.clone();
    let refused =
        tokio::task::spawn_blocking(move || ch.send_to(7, &marker, &[("t".to_string(), 0)]))
            .await
            .unwrap();
    assert!(refused.is_err());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_id_blocks_are_unique_across_allocators() {
    let broker = TestBroker::memory().await;
    let b = broker.broker.clone();
    let allocator =
        || ProducerIdAllocator::new(b.meta.clone(), 1, b.broker_epoch.clone(), None).unwrap();
    let (x, y) = (allocator(), allocator());
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1200 {
        assert!(seen.insert(x.allocate().await.unwrap()));
        assert!(seen.insert(y.allocate().await.unwrap()));
        assert!(seen.insert(b.producer_ids.allocate().await.unwrap()));
    }
    // Every block the controller handed out is in the image, none overlapping.
    assert!(b.meta.image().next_producer_id >= 3 * 1200);
    // A stale broker epoch gets no block.
    let stale = ProducerIdAllocator::new(
        b.meta.clone(),
        1,
        Arc::new(std::sync::atomic::AtomicI64::new(-5)),
        None,
    )
    .unwrap();
    assert!(stale.allocate().await.is_err());
    broker.stop().await;
}

#[tokio::test]
async fn data_directories_of_earlier_versions_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    // The previous version: a one-partition __consumer_offsets and __transaction_state, and
    // producer ids reserved up to 123000 in meta/producer_id_block.
    let old = Config {
        data_dir: dir.path().to_path_buf(),
        offsets_topic_num_partitions: 1,
        transaction_state_log_num_partitions: 1,
        ..Config::default()
    };
    let broker = TestBroker::start(old).await;
    let mut c = broker.client().await;
    broker
        .broker
        .admin_create_topic("t", Some(1), Default::default())
        .await
        .unwrap();
    assert_eq!(commit_code(&mut c, "group-1", "t", 11).await, 0);
    broker.stop().await;
    std::fs::write(dir.path().join("meta/producer_id_block"), "123000").unwrap();

    let broker = TestBroker::start(Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    })
    .await;
    let b = broker.broker.clone();
    let mut c = broker.client().await;
    // The partition count is the topic's, not the configured 50.
    assert_eq!(b.groups.partition_of("group-1"), Some(0));
    assert_eq!(
        b.meta
            .image()
            .topic_by_name(OFFSETS_TOPIC)
            .unwrap()
            .partitions
            .len(),
        1
    );
    assert_eq!(find(&mut c, "group-1", 0).await.error_code, 0);
    assert_eq!(fetched(&mut c, "group-1", "t").await, (0, 11));
    let init = c
        .send(
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(-1),
            4,
        )
        .await;
    assert_eq!(init.error_code, 0);
    assert_eq!(init.producer_id.0, 123_000, "above the old file's block");
    assert!(!dir.path().join("meta/producer_id_block").exists());
    broker.stop().await;

    let broker = TestBroker::start(Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    })
    .await;
    let mut c = broker.client().await;
    let init = c
        .send(
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(-1),
            4,
        )
        .await;
    assert!(
        init.producer_id.0 >= 124_000,
        "a new block: {}",
        init.producer_id.0
    );
    broker.stop().await;
}

/// KIP-890 verification: whether a partition is in a producer's ongoing transaction, asked of
/// the coordinator here and over the wire (AddPartitionsToTxn v4 `verify_only` to the
/// coordinator's broker, this one on a cluster of one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_verified_at_their_coordinator() {
    use ottla::txn::coordinator::ProducerIdent;
    let broker = TestBroker::memory().await;
    let b = broker.broker.clone();
    let mut c = broker.client().await;
    b.admin_create_topic("t", Some(2), Default::default())
        .await
        .unwrap();
    let pid = open_transaction(&mut c, "tx", "t").await;
    let ident = |epoch| ProducerIdent {
        producer_id: pid,
        producer_epoch: epoch,
    };
    for remote in [false, true] {
        let verify = |id: &'static str, p: ProducerIdent, partition: i32| {
            let b = b.clone();
            async move {
                if remote {
                    b.txn_verifier.verify_remote(id, p, "t", partition).await
                } else {
                    b.verify_transaction(id, p, "t", partition).await
                }
            }
        };
        assert_eq!(verify("tx", ident(0), 0).await, Ok(()), "remote: {remote}");
        assert_eq!(
            verify("tx", ident(0), 1).await,
            Err(ResponseError::InvalidTxnState),
            "not added"
        );
        assert_eq!(
            verify("tx", ident(1), 0).await,
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            verify("nobody", ident(0), 0).await,
            Err(ResponseError::InvalidProducerIdMapping)
        );
    }
    broker.stop().await;
}
