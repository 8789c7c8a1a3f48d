//! Follower fetching on a 3-node cluster (tests/cluster): the followers of an RF 3 topic pull
//! the leader's batches and hold byte-identical logs (every segment file equal to the
//! leader's, batch for batch), a follower killed with SIGKILL catches up when it restarts, and
//! the copies are still identical after a clean stop of the whole cluster.

mod cluster;
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cluster::{Cluster, SIGKILL, SIGTERM};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::records::Compression;

const TOPIC: &str = "replicated";
const PARTITIONS: i32 = 3;

/// `(leader, replicas)` of every partition of `topic`, from node 1's Metadata.
async fn placement(cluster: &Cluster, topic: &str) -> BTreeMap<i32, (i32, Vec<i32>)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let md = cluster.metadata(1).await;
        let found = md
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic) && t.error_code == 0);
        if let Some(t) = found {
            return t
                .partitions
                .iter()
                .map(|p| {
                    let replicas = p.replica_nodes.iter().map(|r| r.0).collect();
                    (p.partition_index, (p.leader_id.0, replicas))
                })
                .collect();
        }
        assert!(Instant::now() < deadline, "{topic} never showed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The bytes of every segment file (`*.log`, by base offset) of a partition replica.
fn segments(data_dir: &Path, topic: &str, partition: i32) -> Vec<(String, Vec<u8>)> {
    let dir = data_dir.join(format!("{topic}-{partition}"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            (name, std::fs::read(&p).unwrap_or_default())
        })
        .collect()
}

/// Waits until every replica of every partition holds the leader's segment files exactly
/// (partition 0 holding more than `p0_above` bytes); panics with the sizes seen when they do
/// not within 20 s.
async fn wait_identical(
    cluster: &Cluster,
    placement: &BTreeMap<i32, (i32, Vec<i32>)>,
    p0_above: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut differ = Vec::new();
        for (&p, (leader, replicas)) in placement {
            let want = segments(&cluster.node(*leader).data_dir, TOPIC, p);
            let size: usize = want.iter().map(|(_, b)| b.len()).sum();
            for r in replicas {
                let got = segments(&cluster.node(*r).data_dir, TOPIC, p);
                if got != want || (p == 0 && size <= p0_above) {
                    let sizes: Vec<usize> = got.iter().map(|(_, b)| b.len()).collect();
                    differ.push(format!(
                        "p{p} replica {r}: {sizes:?} vs leader {leader}: {size}"
                    ));
                }
            }
        }
        if differ.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            cluster.print_logs();
            panic!("replicas differ from their leaders: {differ:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Produces `batches` batches to every partition of `placement` whose leader is running (not
/// `skip`), with every compression in turn, acks=all.
async fn produce(
    cluster: &Cluster,
    placement: &BTreeMap<i32, (i32, Vec<i32>)>,
    batches: usize,
    skip: Option<i32>,
) {
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for (&p, (leader, _)) in placement {
        if Some(*leader) == skip {
            continue;
        }
        let mut c = cluster.client(*leader).await;
        for i in 0..batches {
            let v1 = format!("p{p}-b{i}-first");
            let v2 = vec![b'x'; 100 + i * 7];
            let records = common::batch(&[v1.as_bytes(), &v2], codecs[i % codecs.len()]);
            let r = c
                .send(&common::produce_request(TOPIC, p, -1, records), 9)
                .await;
            let pr = &r.responses[0].partition_responses[0];
            assert_eq!(pr.error_code, 0, "produce to p{p} via leader {leader}");
        }
    }
}

#[tokio::test]
async fn followers_hold_the_leaders_batches_byte_for_byte() {
    let mut cluster = Cluster::start(3).await;
    let mut c = cluster.client(1).await;
    let r = c
        .send(
            &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                .with_name(common::topic_name(TOPIC))
                .with_num_partitions(PARTITIONS)
                .with_replication_factor(3)]),
            7,
        )
        .await;
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
    let placement = placement(&cluster, TOPIC).await;
    for (leader, replicas) in placement.values() {
        assert_eq!(replicas.len(), 3);
        assert!(replicas.contains(leader));
    }

    let t0 = Instant::now();
    produce(&cluster, &placement, 25, None).await;
    wait_identical(&cluster, &placement, 0).await;
    println!(
        "REPLICATION 3 partitions x 25 batches: every follower identical to its leader {} ms after the first produce",
        t0.elapsed().as_millis()
    );

    // A follower killed: the others go on; restarted, it fetches what it missed.
    let (leader0, replicas0) = &placement[&0];
    let victim = *replicas0
        .iter()
        .find(|r| *r != leader0)
        .expect("a follower of partition 0");
    let before: usize = segments(&cluster.node(victim).data_dir, TOPIC, 0)
        .iter()
        .map(|(_, b)| b.len())
        .sum();
    cluster.kill(victim, SIGKILL);
    produce(&cluster, &placement, 10, Some(victim)).await;
    cluster.restart(victim).await;
    wait_identical(&cluster, &placement, before).await;

    // A clean stop of all three leaves the copies identical.
    for (id, status) in cluster.kill_all(SIGTERM) {
        assert!(status.success(), "node {id}: {status}");
    }
    wait_identical(&cluster, &placement, before).await;
}
