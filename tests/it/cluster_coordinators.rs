//! Groups, transactions and producer ids on a 3-node cluster (tests/cluster): every broker
//! names the same coordinator for a group (the leader of its `__consumer_offsets` partition)
//! and for a transactional id, committed offsets follow the coordinator across its restart,
//! and producer ids (allocated in blocks by the controller) are unique across brokers.

use crate::cluster;
use crate::common;

use std::collections::BTreeSet;

use cluster::{Cluster, SIGKILL, SIGTERM};
use common::Client;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The coordinator node broker `via` names for `key`. As Kafka, a cluster creates its internal
/// topic on the first FindCoordinator and answers COORDINATOR_NOT_AVAILABLE (or
/// COORDINATOR_LOAD_IN_PROGRESS) until its coordinator runs: asked again, as clients do.
async fn coordinator(cluster: &Cluster, via: i32, key_type: i8, key: &str) -> i32 {
    let mut c = cluster.client(via).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = c
            .send(
                &FindCoordinatorRequest::default()
                    .with_key(s(key))
                    .with_key_type(key_type),
                3,
            )
            .await;
        let retriable = r.error_code == ResponseError::CoordinatorNotAvailable.code()
            || r.error_code == ResponseError::CoordinatorLoadInProgress.code();
        if retriable && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(
            r.error_code, 0,
            "FindCoordinator via {via}: {:?}",
            r.error_message
        );
        return r.node_id.0;
    }
}

/// Kafka's choice of an internal partition for `key`: `Utils.abs(key.hashCode()) % count`,
/// Java's String.hashCode over UTF-16 code units.
fn partition_for(key: &str, count: usize) -> i32 {
    let h = key
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % count as i32
}

/// The leader of the internal topic's partition that coordinates `key`, from node 1's
/// Metadata.
async fn internal_leader(cluster: &Cluster, topic: &str, key: &str) -> i32 {
    let md = cluster.metadata(1).await;
    let t = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .unwrap_or_else(|| panic!("{topic} is not in the metadata"));
    let index = partition_for(key, t.partitions.len());
    t.partitions
        .iter()
        .find(|p| p.partition_index == index)
        .map(|p| p.leader_id.0)
        .expect("the key's partition")
}

fn commit(group: &str, topic: &str, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(s(""))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(common::topic_name(topic))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_metadata(Some(s("m")))])])
}

async fn fetched(c: &mut Client, group: &str, topic: &str) -> (i16, i64) {
    let r = c
        .send(
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(common::topic_name(topic))
                    .with_partition_indexes(vec![0])])),
            7,
        )
        .await;
    if r.error_code != 0 {
        return (r.error_code, -1);
    }
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.committed_offset)
}

async fn create(cluster: &Cluster, name: &str, partitions: i32, rf: i16) {
    let mut c = cluster.client(1).await;
    let r = c
        .send(
            &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                .with_name(common::topic_name(name))
                .with_num_partitions(partitions)
                .with_replication_factor(rf)]),
            7,
        )
        .await;
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
}

#[tokio::test]
async fn every_broker_names_one_group_coordinator_and_offsets_follow_it() {
    let mut cluster = Cluster::start(3).await;
    let all = [1, 2, 3];
    create(&cluster, "offsets-t", 1, 3).await;
    let mut named = BTreeSet::new();
    for via in all {
        named.insert(coordinator(&cluster, via, KEY_GROUP, "g").await);
    }
    assert_eq!(
        named.len(),
        1,
        "every broker names the same coordinator: {named:?}"
    );
    let coord = *named.iter().next().expect("one");
    assert_eq!(
        coord,
        internal_leader(&cluster, "__consumer_offsets", "g").await
    );

    let mut c = cluster.client(coord).await;
    let r = c.send(&commit("g", "offsets-t", 42), 8).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(fetched(&mut c, "g", "offsets-t").await, (0, 42));
    // A broker that does not coordinate the group says so.
    for other in all.into_iter().filter(|&i| i != coord) {
        let mut c = cluster.client(other).await;
        let r = c.send(&commit("g", "offsets-t", 7), 8).await;
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            ResponseError::NotCoordinator.code(),
            "commit through non-coordinator {other}"
        );
    }

    // A clean restart of the coordinator keeps the offsets.
    cluster.kill(coord, SIGTERM);
    cluster.restart(coord).await;
    cluster.wait_agree(&all, &all).await;
    let coord_after = coordinator(&cluster, 1, KEY_GROUP, "g").await;
    let mut c = cluster.client(coord_after).await;
    let got = fetched(&mut c, "g", "offsets-t").await;
    if got != (0, 42) {
        eprintln!("the offset committed at coordinator {coord} is not at {coord_after}");
        cluster.print_logs();
    }
    assert_eq!(got, (0, 42));

    // Losing a broker that does not coordinate the group changes nothing for it.
    let other = all
        .into_iter()
        .find(|&i| i != coord_after)
        .expect("another node");
    cluster.kill(other, SIGKILL);
    let mut c = cluster.client(coord_after).await;
    // A commit waits for the in-sync replicas (acks=all, as Kafka's coordinator writes): it
    // may time out (a retriable error) until the killed broker is fenced and leaves the ISR;
    // the client retries, as Kafka clients do.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = c.send(&commit("g", "offsets-t", 43), 8).await;
        let code = r.topics[0].partitions[0].error_code;
        if code == 0 {
            break;
        }
        let retriable = ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable());
        assert!(
            retriable && std::time::Instant::now() < deadline,
            "commit: {code}"
        );
    }
    assert_eq!(fetched(&mut c, "g", "offsets-t").await, (0, 43));
}

fn init_producer_id(transactional_id: Option<&str>) -> InitProducerIdRequest {
    InitProducerIdRequest::default()
        .with_transactional_id(transactional_id.map(|t| TransactionalId(s(t))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

#[tokio::test]
async fn every_broker_names_one_transaction_coordinator() {
    let cluster = Cluster::start(3).await;
    let all = [1, 2, 3];
    let mut named = BTreeSet::new();
    for via in all {
        named.insert(coordinator(&cluster, via, KEY_TRANSACTION, "tx").await);
    }
    assert_eq!(
        named.len(),
        1,
        "every broker names the same coordinator: {named:?}"
    );
    let coord = *named.iter().next().expect("one");
    assert_eq!(
        coord,
        internal_leader(&cluster, "__transaction_state", "tx").await
    );

    let mut c = cluster.client(coord).await;
    let first = c.send(&init_producer_id(Some("tx")), 4).await;
    assert_eq!(first.error_code, 0);
    let again = c.send(&init_producer_id(Some("tx")), 4).await;
    assert_eq!(again.error_code, 0);
    assert_eq!(
        again.producer_id, first.producer_id,
        "one transactional id, one producer id"
    );
    assert_eq!(
        again.producer_epoch,
        first.producer_epoch + 1,
        "the epoch is bumped"
    );
    for other in all.into_iter().filter(|&i| i != coord) {
        let mut c = cluster.client(other).await;
        let r = c.send(&init_producer_id(Some("tx")), 4).await;
        assert_eq!(
            r.error_code,
            ResponseError::NotCoordinator.code(),
            "InitProducerId through non-coordinator {other}"
        );
    }
}

/// One idempotent batch (producer id, epoch, first sequence 0) holding `value`.
fn idempotent_batch(producer_id: i64, epoch: i16, value: &[u8]) -> bytes::Bytes {
    batch(false, producer_id, epoch, value)
}

/// One batch of producer `producer_id` at `epoch` (first sequence 0) holding `value`,
/// transactional or not.
fn batch(transactional: bool, producer_id: i64, epoch: i16, value: &[u8]) -> bytes::Bytes {
    let record = Record {
        transactional,
        control: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: 0,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(bytes::Bytes::copy_from_slice(value)),
        headers: Default::default(),
        delete_horizon: false,
    };
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &[record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("batch encodes");
    buf.freeze()
}

/// Groups spread over the brokers: each group's coordinator is the leader of its
/// `__consumer_offsets` partition, and those leaders are spread evenly, so 60 groups land on
/// every broker (a broker with none: probability 3 × (2/3)^60, about 1e-10).
#[tokio::test]
async fn many_groups_spread_over_every_broker() {
    let cluster = Cluster::start(3).await;
    let mut per_broker = std::collections::BTreeMap::new();
    for g in 0..60 {
        let group = format!("spread-{g}");
        let coord = coordinator(&cluster, 1 + g % 3, KEY_GROUP, &group).await;
        assert_eq!(
            coord,
            internal_leader(&cluster, "__consumer_offsets", &group).await
        );
        *per_broker.entry(coord).or_insert(0) += 1;
    }
    assert_eq!(
        per_broker.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3],
        "groups per coordinator: {per_broker:?}"
    );
}

/// The leader of each partition of `topic`, from node 1's Metadata.
async fn leaders(cluster: &Cluster, topic: &str) -> Vec<i32> {
    let md = cluster.metadata(1).await;
    let t = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .unwrap_or_else(|| panic!("{topic} is not in the metadata"));
    let mut parts: Vec<_> = t
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    parts.sort();
    parts.into_iter().map(|(_, l)| l).collect()
}

/// A transactional producer writing to a partition whose leader is not its transaction
/// coordinator: the leader asks the coordinator's broker (KIP-890 verification over the wire)
/// before the first write of the transaction, as Kafka does.
#[tokio::test]
async fn transactional_produce_is_verified_at_a_coordinator_on_another_broker() {
    let cluster = Cluster::start(3).await;
    create(&cluster, "txp", 6, 1).await;
    let coord = coordinator(&cluster, 1, KEY_TRANSACTION, "tx-remote").await;
    let led = leaders(&cluster, "txp").await;
    let elsewhere: Vec<i32> = (0..led.len() as i32)
        .filter(|&p| led[p as usize] != coord)
        .collect();
    assert!(elsewhere.len() >= 2, "leaders {led:?}, coordinator {coord}");
    let (p1, p2) = (elsewhere[0], elsewhere[1]);
    let mut c = cluster.client(coord).await;
    // The coordinator's broker may learn it leads the partition a moment after node 1 names
    // it (NOT_COORDINATOR, then COORDINATOR_LOAD_IN_PROGRESS): asked again, as clients do.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let init = loop {
        let r = c.send(&init_producer_id(Some("tx-remote")), 4).await;
        let retriable = [
            ResponseError::NotCoordinator,
            ResponseError::CoordinatorLoadInProgress,
            ResponseError::CoordinatorNotAvailable,
        ]
        .iter()
        .any(|e| e.code() == r.error_code);
        if !retriable || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);

    let produce = |partition: i32, epoch: i16, value: &'static [u8]| {
        let leader = led[partition as usize];
        let cluster = &cluster;
        async move {
            let mut c = cluster.client(leader).await;
            let request =
                common::produce_request("txp", partition, -1, batch(true, pid, epoch, value))
                    .with_transactional_id(Some(TransactionalId(s("tx-remote"))));
            let r = c.send(&request, 9).await;
            r.responses[0].partition_responses[0].error_code
        }
    };
    assert_eq!(
        produce(p1, epoch, b"early").await,
        ResponseError::InvalidTxnState.code(),
        "a partition not added to the transaction is refused by its leader {}",
        led[p1 as usize]
    );
    let add = |partition: i32| {
        AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s("tx-remote")))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(common::topic_name("txp"))
                    .with_partitions(vec![partition]),
            ])
    };
    let added = c.send(&add(p1), 3).await;
    assert_eq!(
        added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
    assert_eq!(produce(p1, epoch, b"in").await, 0, "added, then accepted");

    // A new InitProducerId fences the producer (a higher epoch) and aborts its transaction:
    // the old epoch is refused by a partition it never wrote, on the coordinator's word.
    let again = c.send(&init_producer_id(Some("tx-remote")), 4).await;
    assert_eq!(again.error_code, 0);
    assert!(
        again.producer_epoch > epoch,
        "fenced: {epoch} -> {}",
        again.producer_epoch
    );
    assert_eq!(
        produce(p2, epoch, b"zombie").await,
        ResponseError::InvalidProducerEpoch.code(),
        "the fenced epoch, on a partition it never wrote"
    );
}

#[tokio::test]
async fn producer_ids_are_unique_across_brokers() {
    let cluster = Cluster::start(3).await;
    let all = [1, 2, 3];
    let mut ids = Vec::new();
    for via in all {
        let mut c = cluster.client(via).await;
        for _ in 0..2 {
            let r = c.send(&init_producer_id(None), 4).await;
            assert_eq!(r.error_code, 0, "InitProducerId via {via}");
            ids.push((via, r.producer_id.0, r.producer_epoch));
        }
    }
    let distinct: BTreeSet<i64> = ids.iter().map(|(_, id, _)| *id).collect();

    // What a clash costs: two idempotent producers, bootstrapped through brokers 1 and 2, each
    // send their first batch (sequence 0) to one partition; both must be stored.
    create(&cluster, "pid-clash", 1, 1).await;
    let md = cluster.metadata(1).await;
    let leader = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("pid-clash"))
        .map(|t| t.partitions[0].leader_id.0)
        .expect("pid-clash");
    let (a, b) = (ids[0], ids[2]);
    let mut c = cluster.client(leader).await;
    let mut offsets = Vec::new();
    for (who, (_, id, epoch)) in [("a", a), ("b", b)] {
        let r = c
            .send(
                &common::produce_request(
                    "pid-clash",
                    0,
                    -1,
                    idempotent_batch(id, epoch, who.as_bytes()),
                ),
                9,
            )
            .await;
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "producer {who} (id {id})");
        offsets.push(p.base_offset);
    }
    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(common::topic_name("pid-clash"))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let r = c.send(&fetch, 12).await;
    let mut data = r.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default();
    let mut values = Vec::new();
    while !data.is_empty() {
        let set = RecordBatchDecoder::decode(&mut data).expect("batches decode");
        values.extend(set.records.into_iter().filter_map(|r| r.value));
    }
    assert_eq!(
        distinct.len(),
        ids.len(),
        "producer ids handed out by brokers 1, 2, 3 (via, id, epoch): {ids:?}; the two producers' batches were acknowledged at offsets {offsets:?} and the partition holds {values:?}"
    );
    assert_eq!(
        values.len(),
        2,
        "both producers' records are stored: {values:?}"
    );
}
