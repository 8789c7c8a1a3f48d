//! With `authorizer = "acl"`, the cluster-level APIs answer CLUSTER_AUTHORIZATION_FAILED to
//! a principal without the cluster operation Kafka requires (here `User:ANONYMOUS` on a
//! PLAINTEXT listener, no ACLs), and are served when the principal is a super user:
//! ElectLeaders, AlterPartitionReassignments and AlterReplicaLogDirs (ALTER), ListPartitionReassignments,
//! DescribeLogDirs and DescribeQuorum (DESCRIBE), WriteTxnMarkers (CLUSTER_ACTION); the
//! topic-level CreateTopics and OffsetForLeaderEpoch; DescribeCluster's authorized
//! operations are the caller's (none, then all). AlterReplicaLogDirs (ALTER) moves a replica
//! only to the one directory it is in (a no-op) and answers LOG_DIR_NOT_FOUND for others.

use crate::common;

use common::{topic_name, Client, TestBroker};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::alter_replica_log_dirs_request::{
    AlterReplicaLogDir, AlterReplicaLogDirTopic,
};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::*;
use ottla::config::Config;

const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

async fn broker(super_users: Vec<String>) -> TestBroker {
    TestBroker::start(Config {
        memory: true,
        authorizer: "acl".into(),
        super_users,
        ..Config::default()
    })
    .await
}

/// The error codes of each cluster API, in a fixed order, for the connection's principal.
async fn cluster_codes(c: &mut Client) -> Vec<(&'static str, i16)> {
    let elect = c
        .send(
            &ElectLeadersRequest::default()
                .with_election_type(0)
                .with_timeout_ms(5000),
            2,
        )
        .await;
    let reassign = c
        .send(
            &AlterPartitionReassignmentsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(vec![ReassignableTopic::default()
                    .with_name(topic_name("acl-t"))
                    .with_partitions(vec![ReassignablePartition::default()
                        .with_partition_index(0)
                        .with_replicas(None)])]),
            0,
        )
        .await;
    let list = c
        .send(
            &ListPartitionReassignmentsRequest::default().with_timeout_ms(5000),
            0,
        )
        .await;
    let dirs = c.send(&DescribeLogDirsRequest::default(), 4).await;
    let quorum = c.send(&DescribeQuorumRequest::default(), 2).await;
    let markers = c
        .send(
            &WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
                .with_producer_id(ProducerId(4711))
                .with_producer_epoch(0)
                .with_transaction_result(false)
                .with_coordinator_epoch(0)
                .with_topics(vec![WritableTxnMarkerTopic::default()
                    .with_name(topic_name("acl-t"))
                    .with_partition_indexes(vec![0])])]),
            1,
        )
        .await;
    let dirs_alter = alter_dir(c, "memory").await;
    vec![
        ("ElectLeaders", elect.error_code),
        ("AlterReplicaLogDirs", dirs_alter),
        ("AlterPartitionReassignments", reassign.error_code),
        ("ListPartitionReassignments", list.error_code),
        ("DescribeLogDirs", dirs.error_code),
        ("DescribeQuorum", quorum.error_code),
        (
            "WriteTxnMarkers",
            markers.markers[0].topics[0].partitions[0].error_code,
        ),
    ]
}

/// AlterReplicaLogDirs of partition 0 to `path`: its error code.
async fn alter_dir(c: &mut Client, path: &str) -> i16 {
    let r = c
        .send(
            &AlterReplicaLogDirsRequest::default().with_dirs(vec![AlterReplicaLogDir::default()
                .with_path(path.to_string().into())
                .with_topics(vec![AlterReplicaLogDirTopic::default()
                    .with_name(topic_name("acl-t"))
                    .with_partitions(vec![0])])]),
            2,
        )
        .await;
    r.results[0].partitions[0].error_code
}

async fn create_topic(c: &mut Client) -> i16 {
    let r = c
        .send(
            &CreateTopicsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(topic_name("acl-t"))
                    .with_num_partitions(1)
                    .with_replication_factor(-1)]),
            7,
        )
        .await;
    r.topics[0].error_code
}

async fn epoch_code(c: &mut Client) -> i16 {
    let r = c
        .send(
            &OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![OffsetForLeaderTopic::default()
                    .with_topic(topic_name("acl-t"))
                    .with_partitions(vec![OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(-1)
                        .with_leader_epoch(0)])]),
            4,
        )
        .await;
    r.topics[0].partitions[0].error_code
}

async fn cluster_operations(c: &mut Client) -> i32 {
    c.send(
        &DescribeClusterRequest::default()
            .with_include_cluster_authorized_operations(true)
            .with_endpoint_type(1),
        1,
    )
    .await
    .cluster_authorized_operations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_apis_need_their_cluster_operations() {
    let b = broker(Vec::new()).await;
    let mut c = b.client().await;
    assert_eq!(create_topic(&mut c).await, TOPIC_AUTHORIZATION_FAILED);
    for (api, code) in cluster_codes(&mut c).await {
        assert_eq!(code, CLUSTER_AUTHORIZATION_FAILED, "{api}");
    }
    assert_eq!(epoch_code(&mut c).await, TOPIC_AUTHORIZATION_FAILED);
    assert_eq!(cluster_operations(&mut c).await, 0);
    b.stop().await;

    let b = broker(vec!["User:ANONYMOUS".into()]).await;
    let mut c = b.client().await;
    assert_eq!(create_topic(&mut c).await, 0);
    for (api, code) in cluster_codes(&mut c).await {
        // A super user passes the check: what follows is each API's own answer (a cancel of
        // no reassignment is per partition, the marker of an unknown producer is written).
        assert_ne!(code, CLUSTER_AUTHORIZATION_FAILED, "{api}");
        assert_eq!(code, 0, "{api}");
    }
    assert_eq!(epoch_code(&mut c).await, 0);
    // One log directory (memory mode: `memory`): another path does not exist.
    const LOG_DIR_NOT_FOUND: i16 = 57;
    assert_eq!(alter_dir(&mut c, "/elsewhere").await, LOG_DIR_NOT_FOUND);
    let all = (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
    assert_eq!(cluster_operations(&mut c).await, all);
    b.stop().await;
}
