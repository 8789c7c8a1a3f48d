//! Replication on a 3-node cluster (tests/cluster): the followers of an RF 3 topic pull the
//! leader's batches and hold byte-identical logs (every segment file equal to the leader's,
//! batch for batch); acks=all is answered once every in-sync replica has the batch; a
//! follower killed with SIGKILL leaves the ISR when it is fenced (acks=all works again without
//! it), catches up when it restarts and rejoins the ISR; the copies are still identical after
//! a clean stop of the whole cluster.

mod cluster;
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cluster::{Cluster, Options, SIGKILL, SIGTERM};
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

/// The ISR of `partition` of `TOPIC` in broker `id`'s Metadata, sorted.
async fn isr(cluster: &Cluster, id: i32, partition: i32) -> Vec<i32> {
    let md = cluster.metadata(id).await;
    let mut isr: Vec<i32> = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(TOPIC))
        .and_then(|t| t.partitions.iter().find(|p| p.partition_index == partition))
        .map(|p| p.isr_nodes.iter().map(|r| r.0).collect())
        .unwrap_or_default();
    isr.sort_unstable();
    isr
}

async fn wait_isr(cluster: &Cluster, via: i32, partition: i32, want: &[i32]) -> Duration {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(30);
    loop {
        let now = isr(cluster, via, partition).await;
        if now == want {
            return t0.elapsed();
        }
        if Instant::now() > deadline {
            cluster.print_logs();
            panic!("ISR of p{partition} is {now:?}, not {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn followers_hold_the_leaders_batches_byte_for_byte() {
    // A short session: a killed broker is fenced (and leaves the ISRs) in about 3 s.
    let options = Options {
        env: vec![
            ("OTTLA_BROKER_SESSION_TIMEOUT_MS".into(), "3000".into()),
            ("OTTLA_BROKER_HEARTBEAT_INTERVAL_MS".into(), "500".into()),
        ],
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(3, options).await;
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
    let survivors: Vec<i32> = [1, 2, 3].into_iter().filter(|&i| i != victim).collect();
    let shrunk = wait_isr(&cluster, *leader0, 0, &survivors).await;
    produce(&cluster, &placement, 10, Some(victim)).await;
    cluster.restart(victim).await;
    wait_identical(&cluster, &placement, before).await;
    let rejoined = wait_isr(&cluster, *leader0, 0, &[1, 2, 3]).await;
    println!(
        "REPLICATION follower {victim} killed: out of the ISR after {} ms (session timeout 3000 ms); restarted, caught up and back in the ISR {} ms after its data matched",
        shrunk.as_millis(),
        rejoined.as_millis()
    );

    // A clean stop of all three leaves the copies identical.
    for (id, status) in cluster.kill_all(SIGTERM) {
        assert!(status.success(), "node {id}: {status}");
    }
    wait_identical(&cluster, &placement, before).await;
}

/// One batch of `value` to partition 0 of `TOPIC`; the partition's error code.
async fn send(c: &mut common::Client, acks: i16, timeout_ms: i32, value: &str) -> i16 {
    let request = common::produce_request(
        TOPIC,
        0,
        acks,
        common::batch(&[value.as_bytes()], Compression::None),
    )
    .with_timeout_ms(timeout_ms);
    let r = c.send(&request, 9).await;
    r.responses[0].partition_responses[0].error_code
}

/// acks=all and the ISR: a paused follower holds acks=all back (REQUEST_TIMED_OUT at the
/// request's timeout) until it lags for `replica_lag_time_max_ms` and leaves the ISR (before
/// its broker is fenced); with the ISR (2) below `min.insync.replicas` (3), acks=all is refused
/// (NOT_ENOUGH_REPLICAS) while acks=1 still works; resumed, the follower rejoins the ISR and
/// acks=all works again. (One follower only: pausing two of three combined nodes would stop
/// the metadata quorum, and with it every ISR change, as in Kafka.)
#[tokio::test]
async fn acks_all_waits_for_the_isr_and_min_insync_replicas() {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    use kafka_protocol::protocol::StrBytes;
    let options = Options {
        env: vec![("OTTLA_REPLICA_LAG_TIME_MAX_MS".into(), "2000".into())],
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(3, options).await;
    let mut c = cluster.client(1).await;
    let r = c
        .send(
            &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                .with_name(common::topic_name(TOPIC))
                .with_num_partitions(1)
                .with_replication_factor(3)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("min.insync.replicas"))
                    .with_value(Some(StrBytes::from_static_str("3")))])]),
            7,
        )
        .await;
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
    let placement = placement(&cluster, TOPIC).await;
    let (leader, replicas) = placement[&0].clone();
    let followers: Vec<i32> = replicas.iter().copied().filter(|r| *r != leader).collect();
    let mut lc = cluster.client(leader).await;
    let mut acked = 0usize;
    assert_eq!(send(&mut lc, -1, 5000, "all three").await, 0);
    acked += 1;

    cluster.signal(followers[0], cluster::SIGSTOP);
    assert_eq!(
        send(&mut lc, -1, 300, "held back").await,
        kafka_protocol::error::ResponseError::RequestTimedOut.code(),
        "a paused follower of the ISR holds acks=all back"
    );
    let mut two = vec![leader, followers[1]];
    two.sort_unstable();
    let shrunk = wait_isr(&cluster, leader, 0, &two).await;
    let brokers: Vec<i32> = cluster
        .metadata(leader)
        .await
        .brokers
        .iter()
        .map(|b| b.node_id.0)
        .collect();
    assert!(
        brokers.contains(&followers[0]),
        "the paused follower left the ISR by lag, before its broker was fenced: {brokers:?}"
    );
    assert_eq!(
        send(&mut lc, -1, 5000, "refused").await,
        kafka_protocol::error::ResponseError::NotEnoughReplicas.code(),
        "ISR 2 < min.insync.replicas 3"
    );
    assert_eq!(send(&mut lc, 1, 5000, "acks=1").await, 0);
    acked += 1;

    cluster.signal(followers[0], cluster::SIGCONT);
    let mut all = replicas.clone();
    all.sort_unstable();
    let rejoined = wait_isr(&cluster, leader, 0, &all).await;
    assert_eq!(send(&mut lc, -1, 5000, "all again").await, 0);
    acked += 1;
    println!(
        "REPLICATION paused follower out of the ISR after {} ms (replica_lag_time_max_ms 2000), back in {} ms after SIGCONT; {acked} batches acknowledged",
        shrunk.as_millis(),
        rejoined.as_millis()
    );
    // Every acknowledged batch (and the timed-out one, appended on the leader) is on every
    // replica once they are back.
    let p = BTreeMap::from([(0, (leader, replicas.clone()))]);
    wait_identical(&cluster, &p, 0).await;
    let _ = cluster.kill_all(SIGTERM);
}
