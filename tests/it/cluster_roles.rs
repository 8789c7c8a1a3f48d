//! Process roles (tests/cluster): a cluster of two combined nodes (1, 2), a controller-only
//! node (3) and a broker-only node (4). The voters are 1, 2 and 3; node 4 follows the
//! metadata log as an observer (an openraft learner the active controller adds when it asks).
//! Brokers are 1, 2 and 4: node 3 serves no clients, registers no broker and holds no
//! replica; node 4 gets replicas and leaders, forwards topic changes, and catches up after
//! a kill -9; every node stops cleanly.

use crate::cluster;
use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cluster::{Cluster, Options, SIGKILL, SIGTERM};
use common::Client;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    CreateTopicsRequest, DescribeQuorumRequest, DescribeQuorumResponse, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

fn roles() -> Options {
    Options {
        roles: vec![(3, "controller"), (4, "broker")],
        ..Options::default()
    }
}

async fn create(c: &mut Client, name: &str, partitions: i32, rf: i16) {
    let r = c
        .send(
            &CreateTopicsRequest::default()
                .with_topics(vec![CreatableTopic::default()
                    .with_name(common::topic_name(name))
                    .with_num_partitions(partitions)
                    .with_replication_factor(rf)])
                .with_timeout_ms(10_000),
            7,
        )
        .await;
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
}

/// `(partition, leader, replicas)` of `topic` in a Metadata answer, sorted by partition.
fn partitions(md: &MetadataResponse, topic: &str) -> Option<Vec<(i32, i32, Vec<i32>)>> {
    let t = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic) && t.error_code == 0)?;
    let mut out: Vec<_> = t
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition_index,
                p.leader_id.0,
                p.replica_nodes.iter().map(|r| r.0).collect(),
            )
        })
        .collect();
    out.sort();
    Some(out)
}

/// Waits until broker `id`'s Metadata has `topic`; returns its partitions.
async fn wait_topic(cluster: &Cluster, id: i32, topic: &str) -> Vec<(i32, i32, Vec<i32>)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(p) = partitions(&cluster.metadata(id).await, topic) {
            return p;
        }
        if Instant::now() > deadline {
            cluster.print_logs();
            panic!("broker {id} never showed topic {topic}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn describe_quorum(c: &mut Client) -> DescribeQuorumResponse {
    let request = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
    c.send(&request, 1).await
}

#[tokio::test]
async fn controller_only_and_broker_only_nodes() {
    let mut cluster = Cluster::start_with(4, roles()).await;
    assert_eq!(cluster.brokers(), vec![1, 2, 4]);
    assert!(
        cluster.voters.contains("3@") && !cluster.voters.contains("4@"),
        "{}",
        cluster.voters
    );
    println!(
        "ROLES cluster of 2 combined + 1 controller-only + 1 broker-only ready in {} ms",
        cluster.startup.as_millis()
    );

    // Node 3 serves no clients: nothing listens on the client port it was given.
    assert!(
        Client::try_connect(cluster.bootstrap(3)).await.is_none(),
        "a controller-only node must not serve clients"
    );
    assert!(cluster
        .log_lines(3, "ottla ready on controller listener")
        .iter()
        .any(|l| l.contains("controller only")));

    // The quorum: voters 1, 2, 3; node 4 an observer.
    let mut c4 = cluster.client(4).await;
    let q = describe_quorum(&mut c4).await;
    assert_eq!(q.error_code, 0);
    let p = &q.topics[0].partitions[0];
    let voters: BTreeSet<i32> = p.current_voters.iter().map(|v| v.replica_id.0).collect();
    let observers: BTreeSet<i32> = p.observers.iter().map(|v| v.replica_id.0).collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 3]), "{q:?}");
    assert_eq!(observers, BTreeSet::from([4]), "{q:?}");

    // Every broker lists brokers 1, 2, 4 and nothing of node 3.
    for id in [1, 2, 4] {
        let md = cluster.metadata(id).await;
        let mut brokers: Vec<i32> = md.brokers.iter().map(|b| b.node_id.0).collect();
        brokers.sort_unstable();
        assert_eq!(brokers, vec![1, 2, 4], "brokers in broker {id}'s Metadata");
    }

    // A topic through the broker-only node: replicas only on brokers, leaders spread.
    create(&mut c4, "roles", 6, 3).await;
    let mut views = Vec::new();
    for id in [1, 2, 4] {
        views.push(wait_topic(&cluster, id, "roles").await);
    }
    assert!(views.windows(2).all(|w| w[0] == w[1]), "{views:?}");
    let mut led = std::collections::BTreeMap::new();
    for (_, leader, replicas) in &views[0] {
        let set: BTreeSet<i32> = replicas.iter().copied().collect();
        assert_eq!(set, BTreeSet::from([1, 2, 4]), "replicas {replicas:?}");
        *led.entry(*leader).or_insert(0) += 1;
    }
    assert_eq!(
        led,
        [(1, 2), (2, 2), (4, 2)].into_iter().collect(),
        "leaders per broker"
    );

    // The broker-only node killed: topic changes go on without it; back, it catches up from
    // its own log and the controller's appends, and serves what it leads.
    cluster.kill(4, SIGKILL);
    let mut c1 = cluster.client(1).await;
    create(&mut c1, "while-away", 2, 2).await;
    cluster.restart(4).await;
    let seen = wait_topic(&cluster, 4, "while-away").await;
    assert_eq!(seen, wait_topic(&cluster, 1, "while-away").await);
    cluster.wait_agree(&[1, 2, 4], &[1, 2, 4]).await;
    assert!(!cluster.logs(4).contains("panicked"), "broker 4 panicked");

    for (id, status) in cluster.kill_all(SIGTERM) {
        assert!(
            status.success(),
            "node {id} exited with {status} on SIGTERM"
        );
    }
    for id in cluster.ids() {
        assert!(!cluster.logs(id).contains("panicked"), "node {id} panicked");
    }
}
