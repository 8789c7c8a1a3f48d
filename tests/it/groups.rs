//! Consumer-group coordination through the wire protocol, against an in-process broker:
//! the JoinGroup/SyncGroup dance, Kafka's error codes, static membership, offsets that survive
//! a restart, DeleteGroups and OffsetDelete.

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::{Client, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use ottla::config::Config;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn join(member: &str, instance: Option<&str>, meta: &'static [u8]) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(5_000)
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(meta))])
}

fn sync(member: &str, generation: i32, assignments: &[(&str, &'static [u8])]) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::from_static(a))
                })
                .collect(),
        )
}

fn heartbeat(member: &str, generation: i32) -> HeartbeatRequest {
    HeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(generation)
        .with_member_id(s(member))
}

/// First join of a new dynamic member (v5): MEMBER_ID_REQUIRED, then the real join.
async fn join_new(c: &mut Client, meta: &'static [u8]) -> JoinGroupResponse {
    let first = c.send(&join("", None, meta), 5).await;
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    assert!(!first.member_id.is_empty());
    c.send(&join(first.member_id.as_str(), None, meta), 5).await
}

/// The coordinator's timer must not forget a group whose only content is a member id handed
/// out with MEMBER_ID_REQUIRED (the member's second JoinGroup would get UNKNOWN_MEMBER_ID).
#[tokio::test]
async fn a_pending_member_survives_the_timer() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let first = c.send(&join("", None, b"m"), 5).await;
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    broker.broker.groups.tick();
    let second = c.send(&join(first.member_id.as_str(), None, b"m"), 5).await;
    assert_eq!((second.error_code, second.generation_id), (0, 1));
    broker.stop().await;
}

#[tokio::test]
async fn two_members_rebalance_and_sync() {
    let broker = TestBroker::memory().await;
    let mut a = broker.client().await;
    let mut b = broker.client().await;

    // A alone: leader of generation 1 at once (no initial delay).
    let ja = join_new(&mut a, b"meta-a").await;
    assert_eq!(ja.error_code, 0);
    assert_eq!(ja.generation_id, 1);
    assert_eq!(ja.leader, ja.member_id);
    assert_eq!(ja.members.len(), 1);
    let a_id = ja.member_id.to_string();
    let sa = a.send(&sync(&a_id, 1, &[(&a_id, b"all")]), 5).await;
    assert_eq!((sa.error_code, &sa.assignment[..]), (0, &b"all"[..]));
    assert_eq!(a.send(&heartbeat(&a_id, 1), 4).await.error_code, 0);

    // B joins: the group rebalances; A learns it from its heartbeat and rejoins.
    let b_first = b.send(&join("", None, b"meta-b"), 5).await;
    let b_id = b_first.member_id.to_string();
    let b_join = tokio::spawn(async move {
        let r = b.send(&join(&b_id, None, b"meta-b"), 5).await;
        (b, r)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        a.send(&heartbeat(&a_id, 1), 4).await.error_code,
        ResponseError::RebalanceInProgress.code()
    );
    let ja2 = a.send(&join(&a_id, None, b"meta-a"), 5).await;
    let (mut b, jb) = b_join.await.unwrap();
    assert_eq!((ja2.generation_id, jb.generation_id), (2, 2));
    assert_eq!(ja2.leader.as_str(), a_id, "the leader stays");
    assert_eq!(
        ja2.members.len(),
        2,
        "the leader sees every member's metadata"
    );
    assert!(jb.members.is_empty());
    let b_id = jb.member_id.to_string();

    // Old generation is refused; B's sync waits for the leader's assignment.
    assert_eq!(
        a.send(&sync(&a_id, 1, &[]), 5).await.error_code,
        ResponseError::IllegalGeneration.code()
    );
    let b_sync = tokio::spawn(async move {
        let r = b.send(&sync(&b_id, 2, &[]), 5).await;
        (b, r)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sa = a
        .send(
            &sync(&a_id, 2, &[(&a_id, b"p0"), (&jb.member_id, b"p1")]),
            5,
        )
        .await;
    let (mut b, sb) = b_sync.await.unwrap();
    assert_eq!(&sa.assignment[..], b"p0");
    assert_eq!(&sb.assignment[..], b"p1");

    // DescribeGroups shows both, stable.
    let d = a
        .send(
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
            5,
        )
        .await;
    assert_eq!(d.groups[0].group_state.as_str(), "Stable");
    assert_eq!(d.groups[0].members.len(), 2);

    // B leaves: A must rejoin; afterwards A alone in generation 3.
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_members(vec![
            leave_group_request::MemberIdentity::default().with_member_id(jb.member_id.clone())
        ]);
    assert_eq!(b.send(&leave, 4).await.error_code, 0);
    assert_eq!(
        a.send(&heartbeat(&a_id, 2), 4).await.error_code,
        ResponseError::RebalanceInProgress.code()
    );
    let ja3 = a.send(&join(&a_id, None, b"meta-a"), 5).await;
    assert_eq!((ja3.generation_id, ja3.members.len()), (3, 1));
    // Unknown members are told so.
    assert_eq!(
        b.send(&heartbeat(jb.member_id.as_str(), 3), 4)
            .await
            .error_code,
        ResponseError::UnknownMemberId.code()
    );
    broker.stop().await;
}

#[tokio::test]
async fn static_member_rejoins_without_rebalance_and_old_id_is_fenced() {
    let broker = TestBroker::memory().await;
    let mut a = broker.client().await;
    let ja = a.send(&join("", Some("inst-a"), b"m"), 5).await;
    assert_eq!(
        ja.error_code, 0,
        "static members need no MEMBER_ID_REQUIRED round"
    );
    let old = ja.member_id.to_string();
    a.send(&sync(&old, ja.generation_id, &[(&old, b"mine")]), 5)
        .await;
    // The process restarts: same instance id, no member id.
    let mut a2 = broker.client().await;
    let j2 = a2.send(&join("", Some("inst-a"), b"m"), 5).await;
    assert_eq!(j2.error_code, 0);
    assert_eq!(j2.generation_id, ja.generation_id, "no rebalance");
    assert_ne!(j2.member_id.as_str(), old);
    let s2 = a2
        .send(&sync(j2.member_id.as_str(), j2.generation_id, &[]), 5)
        .await;
    assert_eq!(&s2.assignment[..], b"mine", "same assignment");
    // The old incarnation is fenced.
    let hb = HeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(ja.generation_id)
        .with_member_id(s(&old))
        .with_group_instance_id(Some(s("inst-a")));
    assert_eq!(
        a.send(&hb, 4).await.error_code,
        ResponseError::FencedInstanceId.code()
    );
    broker.stop().await;
}

fn commit(
    group: &str,
    generation: i32,
    member: &str,
    topic: &str,
    offset: i64,
) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(2)
                .with_committed_metadata(Some(s("meta")))])])
}

async fn fetched(c: &mut Client, group: &str, topic: &str) -> (i64, i32, String) {
    let r = c
        .send(
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partition_indexes(vec![0])])),
            7,
        )
        .await;
    let p = &r.topics[0].partitions[0];
    (
        p.committed_offset,
        p.committed_leader_epoch,
        p.metadata
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn offsets_survive_a_restart_and_groups_can_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let broker = TestBroker::start(config.clone()).await;
    let mut c = broker.client().await;
    // Auto-create the topic through Metadata.
    c.send(
        &MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s("t")))),
        ])),
        12,
    )
    .await;
    // A simple (group-less) commit: generation -1.
    let r = c.send(&commit("simple", -1, "", "t", 42), 8).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let r = c.send(&commit("simple", -1, "", "nope", 1), 8).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    // A commit from a generation that does not exist.
    let r = c.send(&commit("other", 5, "m", "t", 1), 8).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(fetched(&mut c, "simple", "t").await, (42, 2, "meta".into()));
    assert_eq!(fetched(&mut c, "unknown", "t").await.0, -1);
    broker.stop().await;

    let broker = TestBroker::start(config.clone()).await;
    let mut c = broker.client().await;
    assert_eq!(
        fetched(&mut c, "simple", "t").await,
        (42, 2, "meta".into()),
        "replayed"
    );
    let groups = c.send(&ListGroupsRequest::default(), 4).await;
    assert!(groups
        .groups
        .iter()
        .any(|g| g.group_id.0.as_str() == "simple"));
    // OffsetDelete, then DeleteGroups.
    let del = OffsetDeleteRequest::default()
        .with_group_id(GroupId(s("simple")))
        .with_topics(vec![
            offset_delete_request::OffsetDeleteRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![
                    offset_delete_request::OffsetDeleteRequestPartition::default()
                        .with_partition_index(0),
                ]),
        ]);
    let r = c.send(&del, 0).await;
    assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 0));
    assert_eq!(fetched(&mut c, "simple", "t").await.0, -1);
    c.send(&commit("simple", -1, "", "t", 7), 8).await;
    let r = c
        .send(
            &DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(s("simple")), GroupId(s("ghost"))]),
            2,
        )
        .await;
    let codes: Vec<i16> = r.results.iter().map(|x| x.error_code).collect();
    assert_eq!(codes, vec![0, ResponseError::GroupIdNotFound.code()]);
    broker.stop().await;

    let broker = TestBroker::start(config).await;
    let mut c = broker.client().await;
    assert_eq!(
        fetched(&mut c, "simple", "t").await.0,
        -1,
        "deletion survives a restart"
    );
    broker.stop().await;
}

/// Kafka's ClassicGroup accepts an OffsetCommit from a member of the current generation
/// while the group is PreparingRebalance (consumers commit on revoke, before rejoining);
/// only CompletingRebalance answers REBALANCE_IN_PROGRESS.
#[tokio::test]
async fn commits_are_accepted_while_preparing_a_rebalance() {
    let broker = TestBroker::memory().await;
    let mut a = broker.client().await;
    let mut b = broker.client().await;
    a.send(
        &MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s("t")))),
        ])),
        12,
    )
    .await;
    let ja = join_new(&mut a, b"meta-a").await;
    let a_id = ja.member_id.to_string();
    a.send(&sync(&a_id, 1, &[(&a_id, b"all")]), 5).await;
    let r = a.send(&commit("g", 1, &a_id, "t", 10), 8).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0, "stable");

    // B joins: the group is PreparingRebalance, still in generation 1, until A rejoins.
    let b_first = b.send(&join("", None, b"meta-b"), 5).await;
    let b_id = b_first.member_id.to_string();
    let b_join = tokio::spawn(async move {
        let r = b.send(&join(&b_id, None, b"meta-b"), 5).await;
        (b, r)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let d = a
        .send(
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
            5,
        )
        .await;
    assert_eq!(d.groups[0].group_state.as_str(), "PreparingRebalance");
    // A commits what it processed before giving its partitions up: accepted.
    let r = a.send(&commit("g", 1, &a_id, "t", 20), 8).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0, "preparing");
    assert_eq!(fetched(&mut a, "g", "t").await.0, 20);

    // A rejoins: generation 2, CompletingRebalance until the leader syncs.
    let ja2 = a.send(&join(&a_id, None, b"meta-a"), 5).await;
    let (_b, jb) = b_join.await.unwrap();
    assert_eq!((ja2.generation_id, jb.generation_id), (2, 2));
    let r = a.send(&commit("g", 2, &a_id, "t", 30), 8).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::RebalanceInProgress.code(),
        "completing"
    );
    let r = a.send(&commit("g", 1, &a_id, "t", 30), 8).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::IllegalGeneration.code(),
        "old generation"
    );
    assert_eq!(
        fetched(&mut a, "g", "t").await.0,
        20,
        "nothing refused was stored"
    );
    broker.stop().await;
}

#[tokio::test]
async fn non_empty_groups_cannot_be_deleted_and_bad_requests_are_refused() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let j = join_new(&mut c, b"x").await;
    let r = c
        .send(
            &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g"))]),
            2,
        )
        .await;
    assert_eq!(r.results[0].error_code, ResponseError::NonEmptyGroup.code());
    // Session timeout out of range, empty group id, inconsistent protocol type.
    let bad = join("", None, b"x").with_session_timeout_ms(10);
    assert_eq!(
        c.send(&bad, 5).await.error_code,
        ResponseError::InvalidSessionTimeout.code()
    );
    let bad = join("", None, b"x").with_group_id(GroupId(s("")));
    assert_eq!(
        c.send(&bad, 5).await.error_code,
        ResponseError::InvalidGroupId.code()
    );
    let mut other = broker.client().await;
    let bad = join("", None, b"x").with_protocol_type(s("connect"));
    assert_eq!(
        other.send(&bad, 5).await.error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    // FindCoordinator, batched (v4+) and single.
    let f = c
        .send(
            &FindCoordinatorRequest::default()
                .with_key_type(0)
                .with_coordinator_keys(vec![s("g"), s("h")]),
            4,
        )
        .await;
    assert_eq!(f.coordinators.len(), 2);
    assert!(f
        .coordinators
        .iter()
        .all(|x| x.error_code == 0 && x.port == broker.addr.port() as i32));
    let f = c
        .send(&FindCoordinatorRequest::default().with_key(s("g")), 3)
        .await;
    assert_eq!((f.error_code, f.port), (0, broker.addr.port() as i32));
    let _ = j;
    broker.stop().await;
}

#[tokio::test]
async fn a_stable_group_survives_a_restart_without_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let broker = TestBroker::start(config.clone()).await;
    let mut c = broker.client().await;
    let j = join_new(&mut c, b"meta").await;
    let id = j.member_id.to_string();
    let s1 = c
        .send(&sync(&id, j.generation_id, &[(&id, b"assigned")]), 5)
        .await;
    assert_eq!(s1.error_code, 0);
    broker.stop().await;

    let broker = TestBroker::start(config).await;
    let mut c = broker.client().await;
    // The member heartbeats on as if nothing happened: same member id, same generation.
    assert_eq!(
        c.send(&heartbeat(&id, j.generation_id), 4).await.error_code,
        0
    );
    let s2 = c.send(&sync(&id, j.generation_id, &[]), 5).await;
    assert_eq!((s2.error_code, &s2.assignment[..]), (0, &b"assigned"[..]));
    let d = c
        .send(
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
            5,
        )
        .await;
    assert_eq!(d.groups[0].group_state.as_str(), "Stable");
    assert_eq!(d.groups[0].members[0].member_id.as_str(), id);
    broker.stop().await;
}

#[tokio::test]
async fn transactional_offsets_show_only_after_commit_and_require_stable_waits() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    c.send(
        &MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s("t")))),
        ])),
        12,
    )
    .await;
    let tid = TransactionalId(s("txo"));
    let init = c
        .send(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(tid.clone()))
                .with_transaction_timeout_ms(60_000),
            4,
        )
        .await;
    assert_eq!(init.error_code, 0);
    let add = c
        .send(
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(tid.clone())
                .with_producer_id(init.producer_id)
                .with_producer_epoch(init.producer_epoch)
                .with_group_id(GroupId(s("txg"))),
            3,
        )
        .await;
    assert_eq!(add.error_code, 0);
    let commit = c
        .send(
            &TxnOffsetCommitRequest::default()
                .with_transactional_id(tid.clone())
                .with_group_id(GroupId(s("txg")))
                .with_producer_id(init.producer_id)
                .with_producer_epoch(init.producer_epoch)
                .with_generation_id(-1)
                .with_topics(vec![
                    txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                        .with_name(TopicName(s("t")))
                        .with_partitions(vec![
                            txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(9),
                        ]),
                ]),
            3,
        )
        .await;
    assert_eq!(commit.topics[0].partitions[0].error_code, 0);
    // Not visible yet; require_stable says so.
    assert_eq!(fetched(&mut c, "txg", "t").await.0, -1);
    let stable = c
        .send(
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(s("txg")))
                .with_require_stable(true)
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0])])),
            7,
        )
        .await;
    assert_eq!(
        stable.topics[0].partitions[0].error_code,
        ResponseError::UnstableOffsetCommit.code()
    );
    let end = c
        .send(
            &EndTxnRequest::default()
                .with_transactional_id(tid)
                .with_producer_id(init.producer_id)
                .with_producer_epoch(init.producer_epoch)
                .with_committed(true),
            3,
        )
        .await;
    assert_eq!(end.error_code, 0);
    assert_eq!(
        fetched(&mut c, "txg", "t").await.0,
        9,
        "applied by the commit marker"
    );

    // transactional.id.expiration.ms: an idle, finished transactional id is forgotten.
    let b = &broker.broker;
    b.txns.tick(&b.topics, &b.groups, 60_000);
    assert!(b.txns.describe("txo").is_some(), "not idle long enough");
    std::thread::sleep(std::time::Duration::from_millis(5));
    b.txns.tick(&b.topics, &b.groups, 1);
    let d = c
        .send(
            &DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(s("txo"))]),
            0,
        )
        .await;
    assert_eq!(
        d.transaction_states[0].error_code,
        ResponseError::TransactionalIdNotFound.code()
    );
    broker.stop().await;
}
