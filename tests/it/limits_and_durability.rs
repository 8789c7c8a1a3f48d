//! Bounds and durability found missing by a code review, through the wire against an
//! in-process broker: a graceful stop aborts connections stuck past the grace period before
//! it syncs; strings too long for the internal topics' records are refused; member ids handed
//! out with MEMBER_ID_REQUIRED are bounded; fetch responses are capped by `fetch_max_bytes`;
//! a deleted topic's in-flight partition handle cannot write into its recreated directory; no
//! tracing span guard is held across an `.await`.

use crate::common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{batch, Client, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use ottla::config::Config;
use ottla::groups::PENDING_MEMBERS_PER_GROUP_MAX;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn join(group: &str, member: &str, rebalance_timeout_ms: i32) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(rebalance_timeout_ms)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"m"))])
}

async fn join_new(c: &mut Client, group: &str, rebalance_timeout_ms: i32) -> JoinGroupResponse {
    let first = c.send(&join(group, "", rebalance_timeout_ms), 5).await;
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    c.send(
        &join(group, first.member_id.as_str(), rebalance_timeout_ms),
        5,
    )
    .await
}

/// A connection stuck in a request (a JoinGroup waiting for a member that never rejoins) is
/// aborted once the grace period is over, before the logs are synced: its task is gone (the
/// socket closes) when the server's `run` returns, and every log refuses appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_aborts_connections_still_busy_after_the_grace_period() {
    let broker = TestBroker::start(Config {
        memory: true,
        shutdown_grace_ms: 300,
        ..Config::default()
    })
    .await;
    let mut a = broker.client().await;
    let joined = join_new(&mut a, "g", 60_000).await;
    assert_eq!(joined.error_code, 0);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone());
    assert_eq!(a.send(&sync, 3).await.error_code, 0);
    // B joins: a rebalance that waits up to 60 s for A to rejoin (it never does).
    let mut b = broker.client().await;
    let first = b.send(&join("g", "", 60_000), 5).await;
    let frame = common::encode_request(&join("g", first.member_id.as_str(), 60_000), 5, 99);
    b.write_raw(&frame).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let inner = broker.broker.clone();
    let started = Instant::now();
    broker.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the stop did not wait for the stuck request ({:?})",
        started.elapsed()
    );
    assert!(
        b.is_closed().await,
        "the stuck connection's task was aborted"
    );
    // The logs were closed before their final sync: nothing appends after it.
    let log = inner.groups.for_group("g").unwrap().log().clone();
    assert!(log.is_closed());
    let mut late = batch(&[b"late"], Compression::None).to_vec();
    assert!(log.append(&mut late, None).is_err());
}

fn produce(topic: &str, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])])
}

/// Strings that the internal records (`__consumer_offsets`, `__transaction_state`) hold with
/// an i16 length are refused with INVALID_REQUEST when longer, never truncated or wrapped.
#[tokio::test]
async fn strings_too_long_for_internal_records_are_refused() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let long = "g".repeat(i16::MAX as usize + 1);
    let longest = "g".repeat(i16::MAX as usize);

    // JoinGroup v6+ (flexible: compact strings) can carry a group id of any length.
    let r = c.send(&join(&long, "", 5000), 6).await;
    assert_eq!(r.error_code, ResponseError::InvalidRequest.code());
    let r = c.send(&join(&longest, "", 5000), 6).await;
    assert_eq!(
        r.error_code,
        ResponseError::MemberIdRequired.code(),
        "the longest that fits"
    );

    let r = c
        .send(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s(&long))))
                .with_transaction_timeout_ms(10_000),
            4,
        )
        .await;
    assert_eq!(r.error_code, ResponseError::InvalidRequest.code());

    broker
        .broker
        .admin_create_topic("t", Some(1), Default::default())
        .await
        .unwrap();
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(&long)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)])]);
    let r = c.send(&commit, 8).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::InvalidRequest.code()
    );
    assert!(
        broker
            .broker
            .groups
            .for_group(&long)
            .unwrap()
            .describe(&long)
            .is_none(),
        "nothing stored"
    );
}

/// Member ids handed out with MEMBER_ID_REQUIRED are bounded per group.
#[tokio::test]
async fn pending_member_ids_are_bounded() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    for _ in 0..PENDING_MEMBERS_PER_GROUP_MAX {
        let r = c.send(&join("p", "", 5000), 5).await;
        assert_eq!(r.error_code, ResponseError::MemberIdRequired.code());
    }
    let r = c.send(&join("p", "", 5000), 5).await;
    assert_eq!(r.error_code, ResponseError::GroupMaxSizeReached.code());
    // Another group is not affected.
    let r = c.send(&join("q", "", 5000), 5).await;
    assert_eq!(r.error_code, ResponseError::MemberIdRequired.code());
}

/// A fetch gathers at most `fetch_max_bytes`, whatever the client asks (the first batch
/// whole, KIP-74).
#[tokio::test]
async fn fetch_responses_are_capped_by_fetch_max_bytes() {
    let broker = TestBroker::start(Config {
        memory: true,
        fetch_max_bytes: 4096,
        fetch_max_wait_ms: 0,
        ..Config::default()
    })
    .await;
    broker
        .broker
        .admin_create_topic("f", Some(1), Default::default())
        .await
        .unwrap();
    let mut c = broker.client().await;
    let value = vec![7u8; 1000];
    for _ in 0..20 {
        let r = c
            .send(&produce("f", batch(&[&value], Compression::None)), 9)
            .await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(i32::MAX)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(TopicName(s("f")))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(i32::MAX)])]);
    let r = c.send(&fetch, 12).await;
    let records = r.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default();
    assert!(!records.is_empty());
    assert!(records.len() <= 4096, "capped: {} bytes", records.len());
}

/// A request holding a deleted topic's partition (an in-flight handle) gets an error instead
/// of writing, and the recreated topic's directory holds nothing of it.
#[tokio::test]
async fn a_deleted_topics_handle_cannot_write_into_the_recreated_topic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    })
    .await;
    let topics = &broker.broker.topics;
    broker
        .broker
        .admin_create_topic("d", Some(1), Default::default())
        .await
        .unwrap();
    let old = topics.get("d").unwrap().partition(0).unwrap().log().clone();
    let mut one = batch(&[b"x"], Compression::None).to_vec();
    old.append(&mut one, None).unwrap();
    broker.broker.admin_delete_topic("d").await.unwrap();
    broker
        .broker
        .admin_create_topic("d", Some(1), Default::default())
        .await
        .unwrap();
    let mut late = batch(&[b"late"], Compression::None).to_vec();
    assert!(matches!(
        old.append(&mut late, None),
        Err(ottla::log::LogError::Closed)
    ));
    let new = topics.get("d").unwrap().partition(0).unwrap().log().clone();
    assert_eq!(new.log_end_offset(), 0, "the recreated topic starts empty");
    // The renamed-aside directory is removed in the background.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let leftovers: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with("-delete"))
            .collect();
        if leftovers.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not removed: {leftovers:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.stop().await;
}

/// Group metadata written at SyncGroup completion is durable (fsynced under
/// `fsync = "always"`) before the answer: the answer's durability is an fsync to wait for.
#[tokio::test]
async fn group_metadata_answers_wait_for_durability_under_fsync_always() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(Config {
        data_dir: dir.path().to_path_buf(),
        fsync: ottla::config::FsyncPolicy::Always,
        ..Config::default()
    })
    .await;
    let mut c = broker.client().await;
    let joined = join_new(&mut c, "dg", 5000).await;
    assert_eq!(joined.error_code, 0);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("dg")))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone());
    assert_eq!(c.send(&sync, 3).await.error_code, 0);
    let log = broker.broker.groups.for_group("dg").unwrap().log().clone();
    assert_eq!(
        log.durable_offset(),
        log.log_end_offset(),
        "the group's metadata record was fsynced before SyncGroup answered"
    );
    // DeleteGroups' tombstones likewise.
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("dg")))
        .with_member_id(joined.member_id.clone());
    assert_eq!(c.send(&leave, 1).await.error_code, 0);
    let delete = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("dg"))]);
    let r = c.send(&delete, 2).await;
    assert_eq!(r.results[0].error_code, 0);
    assert_eq!(
        log.durable_offset(),
        log.log_end_offset(),
        "tombstones fsynced"
    );
    broker.stop().await;
}

/// No `span.enter()` guard in the sources: held across an `.await` it would attribute other
/// tasks' events to the span (use `Instrument::instrument`).
#[test]
fn no_span_guard_is_held_in_the_sources() {
    fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                if text.contains(concat!(".enter", "()")) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    let mut found = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut found,
    );
    assert!(found.is_empty(), "span guards in {found:?}");
}
