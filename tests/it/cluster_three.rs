//! Three `ottla` processes forming one metadata quorum (tests/cluster): topics created through
//! any broker (forwarded to the active controller), the same Metadata from every broker,
//! leaders spread evenly, the active controller killed (a new one elected, CreateTopics works
//! again, the killed node catches up), and the image intact across clean and unclean restarts
//! of the whole cluster. Prints the ready time of a 1-node and a 3-node cluster, the
//! controller failover time and the metadata propagation time.
//!
//! Nothing here uses groups or transactions (their coordinators are not placed on partition
//! leaders yet).

use crate::cluster;
use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster::{Cluster, SIGKILL, SIGTERM};
use common::Client;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    create_partitions_request, CreatePartitionsRequest, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, MetadataResponse,
};
use kafka_protocol::records::Compression;
use uuid::Uuid;

/// The tests of this file run one at a time (each starts three processes; the machine's
/// cores are few and the timings printed would mean little side by side). A tokio mutex: it
/// is held across awaits, and each test has a runtime of its own.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// One partition as Metadata reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionView {
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
}

/// One topic as Metadata reports it: id and partitions by index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TopicView {
    id: Uuid,
    partitions: BTreeMap<i32, PartitionView>,
}

/// `topics` without the ISRs: brokers stopping leave the ISRs (fenced by their controlled
/// shutdown) and rejoin them once they caught up, so an ISR is not part of what a restart must
/// keep.
fn without_isr(mut topics: BTreeMap<String, TopicView>) -> BTreeMap<String, TopicView> {
    for t in topics.values_mut() {
        for p in t.partitions.values_mut() {
            p.isr.clear();
        }
    }
    topics
}

/// What a restart of every node must keep: topics, ids and replicas. Leadership may move
/// (a controlled shutdown hands it to a replica still running; a broker registering again
/// after a crash is fenced and its partitions elected again, at higher epochs), but every
/// partition has a leader among its replicas again, at an epoch not below the one before.
fn placement_kept(after: &BTreeMap<String, TopicView>, before: &BTreeMap<String, TopicView>) {
    let strip = |topics: &BTreeMap<String, TopicView>| {
        let mut topics = without_isr(topics.clone());
        for t in topics.values_mut() {
            for p in t.partitions.values_mut() {
                (p.leader, p.leader_epoch) = (0, 0);
            }
        }
        topics
    };
    assert_eq!(strip(after), strip(before), "topics, ids and replicas");
    for (name, t) in after {
        for (i, p) in &t.partitions {
            assert!(
                p.replicas.contains(&p.leader),
                "{name}-{i} is led by a replica: {p:?}"
            );
            let was = before[name].partitions[i].leader_epoch;
            assert!(
                p.leader_epoch >= was,
                "{name}-{i}: epoch {} < {was}",
                p.leader_epoch
            );
        }
    }
}

/// Every topic of a Metadata answer, by name.
fn topics(md: &MetadataResponse) -> BTreeMap<String, TopicView> {
    md.topics
        .iter()
        .filter(|t| t.error_code == 0)
        .map(|t| {
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    (
                        p.partition_index,
                        PartitionView {
                            leader: p.leader_id.0,
                            leader_epoch: p.leader_epoch,
                            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                        },
                    )
                })
                .collect();
            (
                name,
                TopicView {
                    id: t.topic_id,
                    partitions,
                },
            )
        })
        .collect()
}

/// The offline replicas of each partition of `topic`, by index (empty if it is missing).
fn offline_replicas(md: &MetadataResponse, topic: &str) -> Vec<Vec<i32>> {
    md.topics
        .iter()
        .filter(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .flat_map(|t| {
            let mut ps: Vec<_> = t.partitions.iter().collect();
            ps.sort_by_key(|p| p.partition_index);
            ps.into_iter()
                .map(|p| p.offline_replicas.iter().map(|b| b.0).collect())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn brokers(md: &MetadataResponse) -> Vec<(i32, String, i32)> {
    let mut b: Vec<_> = md
        .brokers
        .iter()
        .map(|b| (b.node_id.0, b.host.to_string(), b.port))
        .collect();
    b.sort();
    b
}

fn create_request(name: &str, partitions: i32, rf: i16) -> CreateTopicsRequest {
    CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(common::topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)])
}

async fn create(c: &mut Client, name: &str, partitions: i32, rf: i16) -> CreateTopicsResponse {
    c.send(&create_request(name, partitions, rf), 7).await
}

/// Creates a topic through node `via`; panics (with the logs) unless it succeeds.
async fn create_ok(cluster: &Cluster, via: i32, name: &str, partitions: i32, rf: i16) {
    let mut c = cluster.client(via).await;
    let r = create(&mut c, name, partitions, rf).await;
    let t = &r.topics[0];
    if t.error_code != 0 {
        cluster.print_logs();
        panic!(
            "CreateTopics {name} through node {via}: error {} {:?}",
            t.error_code, t.error_message
        );
    }
    assert_eq!(t.num_partitions, partitions);
    assert_eq!(t.replication_factor, rf);
}

/// Polls Metadata on every node of `on` until each shows `name` with `partitions`
/// partitions; returns how long that took.
async fn wait_topic_everywhere(
    cluster: &Cluster,
    on: &[i32],
    name: &str,
    partitions: usize,
) -> Duration {
    let t0 = Instant::now();
    let mut pending: Vec<i32> = on.to_vec();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for &id in &pending {
            let md = cluster.metadata(id).await;
            if topics(&md).get(name).map(|t| t.partitions.len()) != Some(partitions) {
                still.push(id);
            }
        }
        pending = still;
        if t0.elapsed() > Duration::from_secs(20) {
            cluster.print_logs();
            panic!("{name} not on nodes {pending:?} after 20 s");
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    t0.elapsed()
}

/// Metadata of every node of `on` agrees (brokers, topics); returns node on[0]'s.
async fn agreeing_metadata(cluster: &Cluster, on: &[i32]) -> MetadataResponse {
    let first = cluster.metadata(on[0]).await;
    for &id in &on[1..] {
        let md = cluster.metadata(id).await;
        // Each broker names itself as the controller to send admin requests to (every
        // broker forwards them); the active controller is DescribeQuorum's.
        assert_eq!(md.controller_id.0, id, "node {id} names itself");
        assert_eq!(
            brokers(&md),
            brokers(&first),
            "brokers of node {id} vs node {}",
            on[0]
        );
        assert_eq!(
            md.cluster_id, first.cluster_id,
            "cluster id of node {id} vs node {}",
            on[0]
        );
        assert_eq!(
            topics(&md),
            topics(&first),
            "topics of node {id} vs node {}",
            on[0]
        );
    }
    first
}

#[tokio::test]
async fn ready_time_of_one_and_three_nodes() {
    let _serial = SERIAL.lock().await;
    let one = Cluster::start(1).await;
    eprintln!(
        "ready: 1-node cluster {} ms from spawn to ready and agreeing (ready line after {} ms)",
        ms(one.startup),
        ms(one.ready_time(1).unwrap_or_default())
    );
    drop(one);
    let three = Cluster::start(3).await;
    eprintln!(
        "ready: 3-node cluster {} ms from spawn to all ready and agreeing (ready lines after {} / {} / {} ms)",
        ms(three.startup),
        ms(three.ready_time(1).unwrap_or_default()),
        ms(three.ready_time(2).unwrap_or_default()),
        ms(three.ready_time(3).unwrap_or_default())
    );
    let md = agreeing_metadata(&three, &[1, 2, 3]).await;
    assert_eq!(brokers(&md).len(), 3);
}

#[tokio::test]
async fn topics_through_any_broker_and_the_same_metadata_everywhere() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3).await;
    let all = [1, 2, 3];
    let controller = cluster.controller(&all).await;

    // RF 3 × 12 through broker 2, whichever node is the controller.
    let mut c2 = cluster.client(2).await;
    let t0 = Instant::now();
    let r = create(&mut c2, "rf3", 12, 3).await;
    let acked = t0.elapsed();
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
    // Broker 2 answered once its own image had the topic: its Metadata shows it at once.
    let md2 = cluster.metadata(2).await;
    assert_eq!(topics(&md2)["rf3"].partitions.len(), 12);
    let propagated = wait_topic_everywhere(&cluster, &all, "rf3", 12).await;
    eprintln!(
        "metadata propagation: CreateTopics through node 2 (controller {controller}) acknowledged in {} ms; every broker's Metadata showed it {} ms later",
        ms(acked),
        ms(propagated)
    );

    let md = agreeing_metadata(&cluster, &all).await;
    assert_eq!(md.controller_id.0, all[0], "the answering broker");
    assert!(all.contains(&controller));
    let ports: Vec<i32> = all
        .iter()
        .map(|&i| cluster.bootstrap(i).port() as i32)
        .collect();
    assert_eq!(
        brokers(&md),
        vec![
            (1, "127.0.0.1".to_string(), ports[0]),
            (2, "127.0.0.1".to_string(), ports[1]),
            (3, "127.0.0.1".to_string(), ports[2])
        ]
    );
    let rf3 = &topics(&md)["rf3"];
    assert_ne!(rf3.id, Uuid::nil());
    let mut led: BTreeMap<i32, usize> = BTreeMap::new();
    for (i, p) in &rf3.partitions {
        let mut distinct = p.replicas.clone();
        distinct.sort_unstable();
        assert_eq!(
            distinct,
            vec![1, 2, 3],
            "partition {i}: replicas {:?}",
            p.replicas
        );
        assert_eq!(
            p.isr, p.replicas,
            "partition {i}: every replica is in the ISR"
        );
        assert_eq!(
            p.leader, p.replicas[0],
            "partition {i}: the first replica leads"
        );
        assert_eq!(p.leader_epoch, 0, "partition {i}");
        *led.entry(p.leader).or_default() += 1;
    }
    assert_eq!(
        led,
        BTreeMap::from([(1, 4), (2, 4), (3, 4)]),
        "leaders per broker"
    );

    // The leaders take produce; a follower refuses it.
    for (i, p) in &rf3.partitions {
        let mut c = cluster.client(p.leader).await;
        let r = c
            .send(
                &common::produce_request("rf3", *i, 1, common::batch(&[b"v"], Compression::None)),
                9,
            )
            .await;
        let pr = &r.responses[0].partition_responses[0];
        assert_eq!(
            pr.error_code, 0,
            "produce to partition {i} on its leader {}",
            p.leader
        );
        let follower = p.replicas[1];
        let mut c = cluster.client(follower).await;
        let r = c
            .send(
                &common::produce_request("rf3", *i, 1, common::batch(&[b"v"], Compression::None)),
                9,
            )
            .await;
        let pr = &r.responses[0].partition_responses[0];
        assert_eq!(
            pr.error_code,
            ResponseError::NotLeaderOrFollower.code(),
            "produce to partition {i} on follower {follower}"
        );
    }

    // CreateTopics through every broker (two of them forward to the controller).
    for via in all {
        let name = format!("via-{via}");
        create_ok(&cluster, via, &name, 3, 3).await;
        let md = cluster.metadata(via).await;
        assert_eq!(
            topics(&md)[&name].partitions.len(),
            3,
            "node {via} sees what it created"
        );
        wait_topic_everywhere(&cluster, &all, &name, 3).await;
    }
    // Errors come back through forwarding too.
    for via in all {
        let mut c = cluster.client(via).await;
        let r = create(&mut c, "rf3", 1, 1).await;
        assert_eq!(
            r.topics[0].error_code,
            ResponseError::TopicAlreadyExists.code(),
            "through node {via}"
        );
        let r = create(&mut c, "too-many-replicas", 1, 4).await;
        assert_eq!(
            r.topics[0].error_code,
            ResponseError::InvalidReplicationFactor.code(),
            "through node {via}"
        );
    }
    // CreatePartitions and DeleteTopics through brokers that are not the controller.
    let followers: Vec<i32> = all.iter().copied().filter(|&i| i != controller).collect();
    let mut c = cluster.client(followers[0]).await;
    let r = c
        .send(
            &CreatePartitionsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(common::topic_name("via-1"))
                        .with_count(6),
                ]),
            3,
        )
        .await;
    assert_eq!(
        r.results[0].error_code, 0,
        "{:?}",
        r.results[0].error_message
    );
    wait_topic_everywhere(&cluster, &all, "via-1", 6).await;
    let mut c = cluster.client(followers[1]).await;
    let r = c
        .send(
            &DeleteTopicsRequest::default()
                .with_timeout_ms(30_000)
                .with_topic_names(vec![common::topic_name("via-2")]),
            5,
        )
        .await;
    assert_eq!(
        r.responses[0].error_code, 0,
        "{:?}",
        r.responses[0].error_message
    );
    for id in all {
        let t0 = Instant::now();
        while topics(&cluster.metadata(id).await).contains_key("via-2") {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "via-2 still on node {id}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let md = agreeing_metadata(&cluster, &all).await;
    let t = topics(&md);
    assert!(!t.contains_key("via-2"));
    assert_eq!(t["via-1"].partitions.len(), 6);
    for (i, p) in &t["via-1"].partitions {
        assert_eq!(p.replicas.len(), 3, "via-1 partition {i}: {:?}", p.replicas);
    }
}

#[tokio::test]
async fn controller_failover_and_the_killed_node_catches_up() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3).await;
    let all = [1, 2, 3];
    let old = cluster.controller(&all).await;
    create_ok(&cluster, old, "before", 3, 3).await;
    wait_topic_everywhere(&cluster, &all, "before", 3).await;
    let survivors: Vec<i32> = all.iter().copied().filter(|&i| i != old).collect();
    let via = survivors[0];
    let mut c = cluster.client(via).await;

    let t0 = Instant::now();
    cluster.kill(old, SIGKILL);
    // CreateTopics through a survivor, retried until it succeeds, while the survivors'
    // DescribeCluster is polled for the new controller.
    let creating = async {
        let mut errors = Vec::new();
        loop {
            let r = tokio::time::timeout(
                Duration::from_secs(30),
                create(&mut c, "after-failover", 3, 3),
            )
            .await
            .expect("CreateTopics answered within 30 s");
            let t = &r.topics[0];
            if t.error_code == 0 {
                return (t0.elapsed(), errors);
            }
            errors.push((
                t.error_code,
                t.error_message.as_ref().map(|m| m.to_string()),
            ));
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "CreateTopics kept failing: {errors:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let electing = async {
        loop {
            let mut views = Vec::new();
            for &id in &survivors {
                views.push(cluster.view(id).await);
            }
            let ids: Vec<Option<i32>> = views
                .iter()
                .map(|v| v.as_ref().map(|v| v.controller_id))
                .collect();
            if ids
                .iter()
                .all(|i| i.is_some_and(|i| i != old && i >= 0) && *i == ids[0])
            {
                return (t0.elapsed(), ids[0].unwrap_or(-1));
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no new controller: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let ((failover, errors), (elected, new)) = tokio::join!(creating, electing);
    eprintln!(
        "failover: {} ms (SIGKILL of controller {old} → CreateTopics through node {via} succeeded; new controller {new} seen by both survivors after {} ms; {} failed attempts first: {errors:?})",
        ms(failover),
        ms(elected),
        errors.len()
    );
    assert!(survivors.contains(&new));
    let t1 = Instant::now();
    let propagated = wait_topic_everywhere(&cluster, &survivors, "after-failover", 3).await;
    eprintln!(
        "metadata propagation after failover: {} ms to both survivors",
        ms(propagated.max(t1.elapsed()))
    );
    agreeing_metadata(&cluster, &survivors).await;

    // The killed node comes back on its data directory and catches up.
    let t2 = Instant::now();
    cluster.restart(old).await;
    let caught_up = wait_topic_everywhere(&cluster, &[old], "after-failover", 3).await;
    eprintln!(
        "restart: node {old} ready in {} ms, its Metadata showed the topic created while it was down {} ms after spawn",
        ms(cluster.ready_time(old).unwrap_or_default()),
        ms(t2.elapsed().max(caught_up))
    );
    let controller = cluster.wait_agree(&all, &all).await;
    assert_eq!(controller, new, "the new controller keeps its place");
    let md = agreeing_metadata(&cluster, &all).await;
    let t = topics(&md);
    assert_eq!(t["before"].partitions.len(), 3);
    assert_eq!(t["after-failover"].partitions.len(), 3);
    // The restarted node serves as a controller's peer again: CreateTopics through it.
    create_ok(&cluster, old, "after-restart", 2, 3).await;
    wait_topic_everywhere(&cluster, &all, "after-restart", 2).await;
}

#[tokio::test]
async fn the_image_survives_clean_and_unclean_restarts_of_every_node() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3).await;
    let all = [1, 2, 3];
    create_ok(&cluster, 1, "keep-rf3", 12, 3).await;
    create_ok(&cluster, 2, "keep-rf1", 5, 1).await;
    create_ok(&cluster, 3, "keep-rf2", 4, 2).await;
    for (name, n) in [("keep-rf3", 12), ("keep-rf1", 5), ("keep-rf2", 4)] {
        wait_topic_everywhere(&cluster, &all, name, n).await;
    }
    let before = agreeing_metadata(&cluster, &all).await;
    let image = topics(&before);
    // (A cluster creates its internal topics on the first FindCoordinator, as Kafka does.)
    assert!(image.contains_key("keep-rf3") && image.contains_key("keep-rf2"));

    // SIGTERM to all three at once: each exits 0.
    let t0 = Instant::now();
    let exits = cluster.kill_all(SIGTERM);
    let stopped = t0.elapsed();
    for (id, status) in &exits {
        assert!(
            status.success(),
            "node {id} exited with {status} after SIGTERM"
        );
        assert!(
            cluster.log_lines(*id, "panicked").is_empty(),
            "node {id} panicked: {}",
            cluster.logs(*id)
        );
        // A whole quorum stopping: no node waits out its controlled shutdown on a controller
        // that is going too (it is answered, finds the controller gone, or skips it).
        assert!(
            cluster
                .log_lines(*id, "controlled shutdown: the controller did not answer")
                .is_empty(),
            "node {id} waited out its controlled shutdown: {}",
            cluster.logs(*id)
        );
    }
    let t1 = Instant::now();
    cluster.restart_all().await;
    cluster.wait_agree(&all, &all).await;
    let restarted = t1.elapsed();
    let after = agreeing_metadata(&cluster, &all).await;
    assert_eq!(after.cluster_id, before.cluster_id);
    // The image after a clean restart of all three.
    placement_kept(&topics(&after), &image);
    eprintln!(
        "clean restart: SIGTERM to all three, every one exited 0 within {} ms; restarted, ready and agreeing in {} ms; image intact ({} topics)",
        ms(stopped),
        ms(restarted),
        image.len()
    );

    // SIGKILL to all three at once.
    cluster.kill_all(SIGKILL);
    let t2 = Instant::now();
    cluster.restart_all().await;
    cluster.wait_agree(&all, &all).await;
    let restarted = t2.elapsed();
    let after = agreeing_metadata(&cluster, &all).await;
    assert_eq!(after.cluster_id, before.cluster_id);
    // The image after SIGKILL of all three.
    placement_kept(&topics(&after), &image);
    eprintln!(
        "unclean restart: SIGKILL to all three; restarted, ready and agreeing in {} ms; image intact",
        ms(restarted)
    );
    // And the quorum still takes changes.
    create_ok(&cluster, 2, "after-restarts", 1, 3).await;
    wait_topic_everywhere(&cluster, &all, "after-restarts", 1).await;
}

/// DescribeCluster from `on` until `pred` holds for its view (fenced brokers excluded).
async fn wait_view(
    cluster: &Cluster,
    on: i32,
    what: &str,
    pred: impl Fn(&cluster::View) -> bool,
) -> Duration {
    let t0 = Instant::now();
    loop {
        if let Some(v) = cluster.view(on).await {
            if pred(&v) {
                return t0.elapsed();
            }
        }
        if t0.elapsed() > Duration::from_secs(20) {
            cluster.print_logs();
            panic!(
                "node {on}: {what}: not within 20 s ({:?})",
                cluster.view(on).await
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_silent_broker_is_fenced_and_unfenced_when_it_is_back() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start_with(
        3,
        cluster::Options {
            env: vec![
                ("OTTLA_BROKER_HEARTBEAT_INTERVAL_MS".into(), "100".into()),
                ("OTTLA_BROKER_SESSION_TIMEOUT_MS".into(), "1000".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    let all = [1, 2, 3];
    let controller = cluster.controller(&all).await;
    let victim = all
        .into_iter()
        .find(|&i| i != controller)
        .expect("a broker");
    let other = all
        .into_iter()
        .find(|&i| i != controller && i != victim)
        .expect("another");

    // Every partition of `spread` has a replica on every broker.
    create_ok(&cluster, other, "spread", 3, 3).await;
    wait_topic_everywhere(&cluster, &all, "spread", 3).await;
    for id in all {
        assert_eq!(
            offline_replicas(&cluster.metadata(id).await, "spread"),
            vec![Vec::<i32>::new(); 3],
            "node {id}: no offline replica while every broker is up"
        );
    }

    // Paused (SIGSTOP): no heartbeats, the controller fences it after the session timeout.
    cluster.signal(victim, cluster::SIGSTOP);
    let fenced = wait_view(&cluster, controller, "fenced", |v| {
        !v.brokers.contains(&victim)
    })
    .await;
    wait_view(&cluster, other, "fenced", |v| !v.brokers.contains(&victim)).await;
    let md = cluster.metadata(other).await;
    assert!(
        brokers(&md).iter().all(|(id, _, _)| *id != victim),
        "Metadata lists no fenced broker"
    );
    // The surviving brokers report the fenced one as an offline replica of every partition
    // of `spread`, as Kafka does, and still name it as a leader where it leads (it is
    // registered; Kafka's metadata cache answers a leader -1 only for an unregistered one).
    for id in [controller, other] {
        let md = cluster.metadata(id).await;
        assert_eq!(
            offline_replicas(&md, "spread"),
            vec![vec![victim]; 3],
            "node {id}: the fenced broker is an offline replica"
        );
        let t = md
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "spread"))
            .expect("spread");
        for p in &t.partitions {
            assert_eq!(
                p.error_code, 0,
                "node {id}: partition {}",
                p.partition_index
            );
        }
    }
    // New partitions get no leader on the fenced broker.
    create_ok(&cluster, other, "while-fenced", 6, 1).await;
    let md = cluster.metadata(other).await;
    for (i, p) in &topics(&md)["while-fenced"].partitions {
        assert_ne!(p.leader, victim, "partition {i} led by the fenced broker");
    }
    cluster.signal(victim, cluster::SIGCONT);
    let back = wait_view(&cluster, controller, "unfenced", |v| {
        v.brokers.contains(&victim)
    })
    .await;
    for id in all {
        wait_view(&cluster, id, "unfenced", |v| v.brokers.contains(&victim)).await;
        assert_eq!(
            offline_replicas(&cluster.metadata(id).await, "spread"),
            vec![Vec::<i32>::new(); 3],
            "node {id}: no offline replica once the broker is back"
        );
    }
    eprintln!(
        "fencing: a paused broker fenced {} ms after SIGSTOP (session timeout 1000 ms), unfenced {} ms after SIGCONT",
        ms(fenced),
        ms(back)
    );

    // Killed: fenced likewise, and unfenced once it is restarted.
    cluster.kill(victim, SIGKILL);
    wait_view(&cluster, controller, "fenced after SIGKILL", |v| {
        !v.brokers.contains(&victim)
    })
    .await;
    cluster.restart(victim).await;
    cluster.wait_agree(&all, &all).await;
    agreeing_metadata(&cluster, &all).await;
}
