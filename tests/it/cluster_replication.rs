//! Replication on a 3-node cluster (tests/cluster): the followers of an RF 3 topic pull the
//! leader's batches and hold byte-identical logs (every segment file equal to the leader's,
//! batch for batch); acks=all is answered once every in-sync replica has the batch; a
//! follower killed with SIGKILL leaves the ISR when it is fenced (acks=all works again without
//! it), catches up when it restarts and rejoins the ISR; the copies are still identical after
//! a clean stop of the whole cluster.

use crate::cluster;
use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cluster::{Cluster, Options, SIGKILL, SIGTERM};
use kafka_protocol::error::ResponseError;
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
    // Followers fetch in incremental sessions (KIP-227), as Kafka's replica fetchers do:
    // every broker that follows a partition does it in a session with its leader.
    for id in [1, 2, 3] {
        if placement.values().all(|(leader, _)| *leader == id) {
            continue;
        }
        let sessions = cluster.log_lines(id, "incremental fetch session with the leader");
        assert!(
            !sessions.is_empty(),
            "node {id} follows without a fetch session"
        );
    }

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

/// The leader and ISR of partition `p` of `topic` as broker `via` reports them (leader -1:
/// none, or the broker could not be asked).
async fn leader_of(cluster: &Cluster, via: i32, topic: &str, p: i32) -> (i32, i32, Vec<i32>) {
    // A paused broker accepts connections but never answers: bounded.
    let asked = tokio::time::timeout(Duration::from_secs(2), async {
        let mut c = common::Client::try_connect(cluster.bootstrap(via)).await?;
        c.try_send(
            &kafka_protocol::messages::MetadataRequest::default()
                .with_topics(None)
                .with_allow_auto_topic_creation(false),
            12,
        )
        .await
    });
    let Ok(Some(md)) = asked.await else {
        return (-1, -1, Vec::new());
    };
    md.topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .and_then(|t| t.partitions.iter().find(|x| x.partition_index == p))
        .map_or((-1, -1, Vec::new()), |x| {
            let mut isr: Vec<i32> = x.isr_nodes.iter().map(|r| r.0).collect();
            isr.sort_unstable();
            (x.leader_id.0, x.leader_epoch, isr)
        })
}

/// Produces `{prefix}0`, `{prefix}1`, ... (`n` records, acks=all, each retried until
/// acknowledged within a minute) through the leader broker 1 names; returns them in order.
async fn produce_numbered(cluster: &Cluster, prefix: &str, n: usize) -> Vec<String> {
    let mut acked = Vec::new();
    for i in 0..n {
        let v = format!("{prefix}{i}");
        produce_retrying(cluster, 1, &v, Instant::now() + Duration::from_secs(60)).await;
        acked.push(v);
    }
    acked
}

/// Produces one acks=all batch of `value` to partition 0 of `TOPIC` through whichever broker
/// `via` names as its leader, retrying retriable errors until `deadline`. The leader that
/// acknowledged it.
async fn produce_retrying(cluster: &Cluster, via: i32, value: &str, deadline: Instant) -> i32 {
    loop {
        let (leader, _, _) = leader_of(cluster, via, TOPIC, 0).await;
        if leader > 0 {
            let request = common::produce_request(
                TOPIC,
                0,
                -1,
                common::batch(&[value.as_bytes()], Compression::None),
            )
            .with_timeout_ms(2000);
            let sent = tokio::time::timeout(Duration::from_secs(4), async {
                let mut c = common::Client::try_connect(cluster.bootstrap(leader)).await?;
                c.try_send(&request, 9).await
            });
            if let Ok(Some(r)) = sent.await {
                if r.responses[0].partition_responses[0].error_code == 0 {
                    return leader;
                }
            }
        }
        if Instant::now() > deadline {
            cluster.print_logs();
            panic!("no leader of {TOPIC}-0 acknowledged {value:?} in time");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every record value of partition 0 of `TOPIC` on broker `id`, read from offset 0 up to
/// its high watermark.
async fn values_on(cluster: &Cluster, id: i32) -> Vec<String> {
    values_from(cluster, id, 0).await
}

/// [`values_on`] from `offset` on.
async fn values_from(cluster: &Cluster, id: i32, mut offset: i64) -> Vec<String> {
    use kafka_protocol::messages::{fetch_request, FetchRequest};
    use kafka_protocol::records::RecordBatchDecoder;
    let mut c = cluster.client(id).await;
    let mut values = Vec::new();
    loop {
        let fetch = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(common::topic_name(TOPIC))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]);
        let r = c.send(&fetch, 12).await;
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetch from broker {id} at {offset}");
        let mut data = p.records.clone().unwrap_or_default();
        if data.is_empty() {
            return values;
        }
        while !data.is_empty() {
            let set = RecordBatchDecoder::decode(&mut data).expect("batches decode");
            for r in set.records {
                offset = r.offset + 1;
                values.push(String::from_utf8_lossy(&r.value.unwrap_or_default()).to_string());
            }
        }
    }
}

async fn create_rf3(cluster: &Cluster, min_insync: &str) {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    use kafka_protocol::protocol::StrBytes;
    let mut c = cluster.client(1).await;
    let r = c
        .send(
            &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                .with_name(common::topic_name(TOPIC))
                .with_num_partitions(1)
                .with_replication_factor(3)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("min.insync.replicas"))
                    .with_value(Some(StrBytes::from_string(min_insync.into())))])]),
            7,
        )
        .await;
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
}

/// Failover, default settings: the leader of an RF 3 partition (min.insync.replicas 2) is
/// killed with SIGKILL; its followers' fetches are refused, the controller confirms and fences
/// it (well before its 9 s session would expire) and elects another ISR member at a higher
/// leader epoch; acks=all works through it, and every acknowledged record is there once, in
/// order. The killed broker, restarted, follows the new leader and ends byte-identical; the
/// election repeats over several kills (`OTTLA_TEST_FAILOVER_ROUNDS`, 3 by default: 10 or
/// more for a distribution of failover times).
#[tokio::test]
async fn a_killed_leader_is_replaced_from_the_isr_without_losing_acknowledged_records() {
    let rounds: usize = std::env::var("OTTLA_TEST_FAILOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut cluster = Cluster::start_with(3, Options::default()).await;
    create_rf3(&cluster, "2").await;
    let mut acked = Vec::new();
    let mut failovers = Vec::new();
    let deadline = || Instant::now() + Duration::from_secs(30);
    for i in 0..20 {
        let v = format!("before-{i}");
        produce_retrying(&cluster, 1, &v, deadline()).await;
        acked.push(v);
    }
    for round in 0..rounds {
        let survivor = |leader: i32| if leader == 1 { 2 } else { 1 };
        // The ISR was whole at the end of the last round; on a loaded machine a restarted
        // broker may still leave and rejoin it once (its old incarnation fenced late), so
        // the round waits for it whole (bounded, and printed when it had to wait).
        let waited = wait_isr(&cluster, 1, 0, &[1, 2, 3]).await;
        if waited > Duration::from_millis(100) {
            println!("round {round}: waited {waited:?} for the whole ISR before the kill");
        }
        let (leader, epoch, isr) = leader_of(&cluster, 1, TOPIC, 0).await;
        assert_eq!(
            isr,
            [1, 2, 3],
            "round {round}: the ISR is whole before the kill"
        );
        cluster.kill(leader, SIGKILL);
        let t0 = Instant::now();
        let v = format!("after-kill-{round}");
        let new_leader = produce_retrying(&cluster, survivor(leader), &v, deadline()).await;
        failovers.push(t0.elapsed());
        acked.push(v);
        assert_ne!(new_leader, leader);
        let (_, new_epoch, isr) = leader_of(&cluster, new_leader, TOPIC, 0).await;
        assert!(
            new_epoch > epoch,
            "the leader epoch grew: {epoch} → {new_epoch}"
        );
        assert!(
            !isr.contains(&leader),
            "the killed broker left the ISR: {isr:?}"
        );
        for i in 0..10 {
            let v = format!("round-{round}-{i}");
            produce_retrying(&cluster, new_leader, &v, deadline()).await;
            acked.push(v);
        }
        let values = values_on(&cluster, new_leader).await;
        assert_eq!(
            values, acked,
            "round {round}: every acknowledged record, once, in order"
        );
        cluster.restart(leader).await;
        wait_isr(&cluster, new_leader, 0, &[1, 2, 3]).await;
        let (now_leader, _, _) = leader_of(&cluster, new_leader, TOPIC, 0).await;
        let p = BTreeMap::from([(0, (now_leader, vec![1, 2, 3]))]);
        wait_identical(&cluster, &p, 0).await;
    }
    let ms: Vec<u128> = failovers.iter().map(|d| d.as_millis()).collect();
    println!(
        "FAILOVER kill -9 of the leader → first acks=all produce acknowledged by the new leader (default settings: 9 s session): {ms:?} ms"
    );
    for d in &failovers {
        assert!(
            *d < Duration::from_secs(9),
            "a crash fails over before the session expires: {ms:?} ms"
        );
    }
    for (id, status) in cluster.kill_all(SIGTERM) {
        assert!(status.success(), "node {id}: {status}");
    }
}

/// Divergence: a leader takes acks=1 writes its paused followers never see, is paused itself while they elect
/// a new leader that takes acks=all writes, and when it resumes it finds its log diverged
/// (DIVERGING_EPOCH), truncates the records only it had and ends byte-identical to the new
/// leader, which holds every acknowledged acks=all record, in order.
#[tokio::test]
async fn a_returning_leader_truncates_what_only_it_had() {
    let options = Options {
        env: vec![
            ("OTTLA_BROKER_SESSION_TIMEOUT_MS".into(), "3000".into()),
            ("OTTLA_BROKER_HEARTBEAT_INTERVAL_MS".into(), "500".into()),
        ],
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(3, options).await;
    create_rf3(&cluster, "2").await;
    let deadline = || Instant::now() + Duration::from_secs(60);
    let mut acked = produce_numbered(&cluster, "committed-", 10).await;
    let (old, _, isr) = leader_of(&cluster, 1, TOPIC, 0).await;
    assert_eq!(isr, [1, 2, 3]);
    let followers: Vec<i32> = [1, 2, 3].into_iter().filter(|&r| r != old).collect();
    for f in &followers {
        cluster.signal(*f, cluster::SIGSTOP);
    }
    let mut lc = cluster.client(old).await;
    // A fetch a follower had parked at the leader when it stopped would be answered by the
    // first append, and on a busy machine that answer may be built late enough to carry
    // every acks=1 batch. Waiting out the followers' fetch wait (500 ms) first has those
    // fetches answered empty; stopped, the followers cannot send another.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for i in 0..5 {
        assert_eq!(
            send(&mut lc, 1, 2000, &format!("unreplicated-{i}")).await,
            0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.signal(old, cluster::SIGSTOP);
    for f in &followers {
        cluster.signal(*f, cluster::SIGCONT);
    }
    for i in 0..10 {
        let v = format!("new-leader-{i}");
        let l = produce_retrying(&cluster, followers[0], &v, deadline()).await;
        assert_ne!(l, old);
        acked.push(v);
    }
    cluster.signal(old, cluster::SIGCONT);
    let (new_leader, _, _) = leader_of(&cluster, followers[0], TOPIC, 0).await;
    wait_isr(&cluster, new_leader, 0, &[1, 2, 3]).await;
    let p = BTreeMap::from([(0, (new_leader, vec![1, 2, 3]))]);
    wait_identical(&cluster, &p, 0).await;
    // Should a follower still have read a prefix of the acks=1 batches (a machine stalled for
    // longer than the wait above), that prefix survives (acks=1 makes no promise either way);
    // the rest exist only on the old leader, which must drop them.
    let values = values_on(&cluster, new_leader).await;
    let kept = values
        .iter()
        .filter(|v| v.starts_with("unreplicated-"))
        .count();
    let mut want = acked[..10].to_vec();
    want.extend((0..kept).map(|i| format!("unreplicated-{i}")));
    want.extend_from_slice(&acked[10..]);
    assert_eq!(
        values, want,
        "acknowledged records in order, and a prefix of the acks=1 ones"
    );
    assert!(
        kept < 5,
        "the paused followers cannot have fetched every acks=1 batch"
    );
    println!("DIVERGENCE the old leader truncated {} acks=1 batches only it had; {kept} had reached a follower before the pause", 5 - kept);
    assert!(
        !cluster
            .log_lines(old, "diverged from its leader")
            .is_empty(),
        "the old leader truncated by DIVERGING_EPOCH:\n{}",
        cluster.logs(old)
    );
    for (id, status) in cluster.kill_all(SIGTERM) {
        assert!(status.success(), "node {id}: {status}");
    }
}

/// ElectLeaders v2 for partition 0 of `TOPIC` (preferred), or every partition (`None`):
/// the (topic, partition, error code) results and the top-level error code.
async fn elect(
    cluster: &Cluster,
    via: i32,
    partitions: Option<Vec<i32>>,
    election_type: i8,
) -> (i16, Vec<(String, i32, i16)>) {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::ElectLeadersRequest;
    let mut c = cluster.client(via).await;
    let req = ElectLeadersRequest::default()
        .with_election_type(election_type)
        .with_timeout_ms(10_000)
        .with_topic_partitions(partitions.map(|ps| {
            vec![TopicPartitions::default()
                .with_topic(common::topic_name(TOPIC))
                .with_partitions(ps)]
        }));
    let r = c.send(&req, 2).await;
    let results = r
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result
                .iter()
                .map(|p| (t.topic.0.to_string(), p.partition_id, p.error_code))
        })
        .collect();
    (r.error_code, results)
}

/// A clean stop (SIGTERM) of a partition's leader moves leadership before the broker goes
/// (controlled shutdown): acks=all works through the new leader at once, with the default
/// 9 s session. Restarted, the preferred replica leads again by ElectLeaders (automatic
/// rebalancing off here), and the answers carry Kafka's per-partition errors.
#[tokio::test]
async fn controlled_shutdown_moves_leadership_and_elect_leaders_brings_it_back() {
    let options = Options {
        env: vec![("OTTLA_AUTO_LEADER_REBALANCE_ENABLE".into(), "false".into())],
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(3, options).await;
    create_rf3(&cluster, "2").await;
    let deadline = || Instant::now() + Duration::from_secs(30);
    let mut acked = produce_numbered(&cluster, "before-", 10).await;
    let preferred = placement(&cluster, TOPIC).await[&0].1[0];
    let (leader, _, _) = leader_of(&cluster, 1, TOPIC, 0).await;
    assert_eq!(
        leader, preferred,
        "a new partition is led by its first replica"
    );
    let survivor = if leader == 1 { 2 } else { 1 };
    let t0 = Instant::now();
    let status = cluster.kill(leader, SIGTERM).expect("stopped");
    assert!(status.success(), "{status}");
    let stopped = t0.elapsed();
    let v = "after-stop".to_string();
    let new_leader = produce_retrying(&cluster, survivor, &v, deadline()).await;
    let moved = t0.elapsed();
    acked.push(v);
    assert_ne!(new_leader, leader);
    assert!(
        moved < Duration::from_secs(9),
        "leadership moved before the session could expire: {moved:?}"
    );
    println!(
        "CONTROLLED SHUTDOWN of the leader: stopped in {} ms, acks=all acknowledged by the new leader {} ms after SIGTERM",
        stopped.as_millis(),
        moved.as_millis()
    );
    cluster.restart(leader).await;
    wait_isr(&cluster, new_leader, 0, &[1, 2, 3]).await;
    assert_eq!(
        elect(&cluster, survivor, Some(vec![0, 7]), 0).await,
        (
            0,
            vec![
                (TOPIC.to_string(), 0, 0),
                (
                    TOPIC.to_string(),
                    7,
                    ResponseError::UnknownTopicOrPartition.code()
                )
            ]
        )
    );
    let (now, _, _) = leader_of(&cluster, survivor, TOPIC, 0).await;
    assert_eq!(now, preferred, "the preferred replica leads again");
    assert_eq!(
        elect(&cluster, survivor, Some(vec![0]), 0).await.1,
        vec![(
            TOPIC.to_string(),
            0,
            ResponseError::ElectionNotNeeded.code()
        )]
    );
    assert_eq!(
        elect(&cluster, survivor, None, 0).await,
        (0, vec![]),
        "every partition: only those that needed an election are answered"
    );
    assert_eq!(
        elect(&cluster, survivor, Some(vec![0]), 1).await.1,
        vec![(
            TOPIC.to_string(),
            0,
            ResponseError::ElectionNotNeeded.code()
        )],
        "an unclean election of a partition with a leader"
    );
    for i in 0..10 {
        let v = format!("back-{i}");
        produce_retrying(&cluster, 1, &v, deadline()).await;
        acked.push(v);
    }
    assert_eq!(values_on(&cluster, preferred).await, acked);
    for (id, status) in cluster.kill_all(SIGTERM) {
        assert!(status.success(), "node {id}: {status}");
    }
}

/// Automatic leader rebalancing: after a failover and the preferred replica's return, the
/// controller moves leadership back on its own within a check interval (1 s here).
#[tokio::test]
async fn leadership_returns_to_the_preferred_replica_on_its_own() {
    let options = Options {
        env: vec![
            (
                "OTTLA_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS".into(),
                "1".into(),
            ),
            ("OTTLA_BROKER_SESSION_TIMEOUT_MS".into(), "3000".into()),
            ("OTTLA_BROKER_HEARTBEAT_INTERVAL_MS".into(), "500".into()),
        ],
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(3, options).await;
    create_rf3(&cluster, "1").await;
    let deadline = || Instant::now() + Duration::from_secs(30);
    produce_retrying(&cluster, 1, "first", deadline()).await;
    let preferred = placement(&cluster, TOPIC).await[&0].1[0];
    let survivor = if preferred == 1 { 2 } else { 1 };
    cluster.kill(preferred, SIGKILL);
    let moved_to = produce_retrying(&cluster, survivor, "second", deadline()).await;
    assert_ne!(moved_to, preferred);
    cluster.restart(preferred).await;
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(20);
    loop {
        let (leader, _, _) = leader_of(&cluster, survivor, TOPIC, 0).await;
        if leader == preferred {
            break;
        }
        if Instant::now() > until {
            cluster.print_logs();
            panic!("leadership never returned to {preferred} (now {leader})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "REBALANCE leadership back on the preferred replica {} ms after its restart",
        t0.elapsed().as_millis()
    );
    produce_retrying(&cluster, survivor, "third", deadline()).await;
    assert_eq!(
        values_on(&cluster, preferred).await,
        ["first", "second", "third"]
    );
    let _ = cluster.kill_all(SIGTERM);
}

/// A follower that was down while its leader's log start moved past its log end (here by
/// DeleteRecords) restarts its log at the leader's log start and catches up (back in the
/// ISR); the followers that were up move their log start with the leader's.
#[tokio::test]
async fn a_follower_behind_the_leaders_log_start_starts_afresh_there() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::DeleteRecordsRequest;
    let options = Options {
        env: vec![
            ("OTTLA_BROKER_SESSION_TIMEOUT_MS".into(), "3000".into()),
            ("OTTLA_BROKER_HEARTBEAT_INTERVAL_MS".into(), "500".into()),
        ],
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(3, options).await;
    create_rf3(&cluster, "1").await;
    let deadline = || Instant::now() + Duration::from_secs(30);
    for i in 0..5 {
        produce_retrying(&cluster, 1, &format!("early-{i}"), deadline()).await;
    }
    let (leader, _, _) = leader_of(&cluster, 1, TOPIC, 0).await;
    let followers: Vec<i32> = [1, 2, 3].into_iter().filter(|&r| r != leader).collect();
    let (down, up) = (followers[0], followers[1]);
    cluster.kill(down, SIGKILL);
    wait_isr(&cluster, leader, 0, &{
        let mut two = vec![leader, up];
        two.sort_unstable();
        two
    })
    .await;
    for i in 0..20 {
        produce_retrying(&cluster, leader, &format!("late-{i}"), deadline()).await;
    }
    let mut c = cluster.client(leader).await;
    let r = c
        .send(
            &DeleteRecordsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(common::topic_name(TOPIC))
                    .with_partitions(vec![DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(15)])]),
            2,
        )
        .await;
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 15));
    cluster.restart(down).await;
    wait_isr(&cluster, leader, 0, &[1, 2, 3]).await;
    assert!(
        !cluster
            .log_lines(down, "behind its leader's log start")
            .is_empty(),
        "{}",
        cluster.logs(down)
    );
    // The leader serves from its new log start.
    let expected: Vec<String> = (10..20).map(|i| format!("late-{i}")).collect();
    assert_eq!(values_from(&cluster, leader, 15).await, expected);
    for (id, status) in cluster.kill_all(SIGTERM) {
        assert!(status.success(), "node {id}: {status}");
    }
}

/// Reassignment: an RF 2 partition moves off one of its brokers onto the third
/// (AlterPartitionReassignments v1): while the new replica catches up ListPartitionReassignments
/// shows it adding and the old one removing; then the partition's replicas are the target,
/// the new replica holds the leader's segments byte for byte, the leaving broker deleted its
/// copy, and every acknowledged record is still there. Cancelling with none in progress and
/// bad targets get Kafka's errors.
#[tokio::test]
async fn a_partition_moves_to_another_broker_and_the_old_copy_goes() {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{
        AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest,
    };
    let mut cluster = Cluster::start(3).await;
    let mut c = cluster.client(1).await;
    let r = c
        .send(
            &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                .with_name(common::topic_name(TOPIC))
                .with_num_partitions(1)
                .with_replication_factor(2)]),
            7,
        )
        .await;
    assert_eq!(r.topics[0].error_code, 0);
    let deadline = || Instant::now() + Duration::from_secs(30);
    let mut acked = produce_numbered(&cluster, "before-move-", 200).await;
    let (leader, replicas) = placement(&cluster, TOPIC).await[&0].clone();
    let leaving = *replicas.iter().find(|r| **r != leader).expect("a follower");
    let joining = [1, 2, 3]
        .into_iter()
        .find(|r| !replicas.contains(r))
        .expect("a broker without a replica");
    let target = vec![joining, leader];
    let alter = |target: Option<Vec<i32>>, allow: bool| {
        AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(10_000)
            .with_allow_replication_factor_change(allow)
            .with_topics(vec![ReassignableTopic::default()
                .with_name(common::topic_name(TOPIC))
                .with_partitions(vec![ReassignablePartition::default()
                    .with_partition_index(0)
                    .with_replicas(
                        target.map(|t| t.into_iter().map(BrokerId).collect()),
                    )])])
    };
    let code = |r: &kafka_protocol::messages::AlterPartitionReassignmentsResponse| {
        r.responses[0].partitions[0].error_code
    };
    let r = c.send(&alter(None, true), 1).await;
    assert_eq!(code(&r), ResponseError::NoReassignmentInProgress.code());
    let r = c.send(&alter(Some(vec![joining, joining]), true), 1).await;
    assert_eq!(code(&r), ResponseError::InvalidReplicaAssignment.code());
    let r = c.send(&alter(Some(vec![joining]), false), 1).await;
    assert_eq!(code(&r), ResponseError::InvalidReplicationFactor.code());
    let r = c.send(&alter(Some(target.clone()), false), 1).await;
    assert_eq!((r.error_code, code(&r)), (0, 0), "{r:?}");
    // Done when the partition's replicas are the target (listing it meanwhile, if caught in
    // time, shows the adding and removing replicas).
    let t0 = Instant::now();
    let mut seen_ongoing = None;
    loop {
        let listed = c
            .send(
                &ListPartitionReassignmentsRequest::default().with_topics(None),
                0,
            )
            .await;
        if let Some(p) = listed.topics.first().and_then(|t| t.partitions.first()) {
            seen_ongoing = Some((
                p.adding_replicas.iter().map(|r| r.0).collect::<Vec<_>>(),
                p.removing_replicas.iter().map(|r| r.0).collect::<Vec<_>>(),
            ));
        }
        let (_, now) = placement(&cluster, TOPIC).await[&0].clone();
        if now == target && listed.topics.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline(),
            "the move never completed: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(ongoing) = &seen_ongoing {
        assert_eq!(ongoing, &(vec![joining], vec![leaving]));
    }
    println!(
        "REASSIGNMENT of 200 records from {leaving} to {joining}: done in {} ms (seen in progress: {})",
        t0.elapsed().as_millis(),
        seen_ongoing.is_some()
    );
    let p = BTreeMap::from([(0, (leader, target.clone()))]);
    wait_identical(&cluster, &p, 0).await;
    let gone = cluster.node(leaving).data_dir.join(format!("{TOPIC}-0"));
    let t1 = Instant::now();
    while gone.exists() {
        assert!(
            t1.elapsed() < Duration::from_secs(10),
            "{gone:?} is still there"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..10 {
        let v = format!("after-move-{i}");
        produce_retrying(&cluster, 1, &v, deadline()).await;
        acked.push(v);
    }
    assert_eq!(values_on(&cluster, leader).await, acked);
    for (id, status) in cluster.kill_all(SIGTERM) {
        assert!(status.success(), "node {id}: {status}");
    }
}

/// One consumer Fetch v11 of partition 0 from `offset`, with `rack` as its `rack_id`:
/// (error code, preferred read replica, high watermark, record values).
async fn fetch_as_consumer(
    cluster: &Cluster,
    id: i32,
    rack: &str,
    offset: i64,
) -> (i16, i32, i64, Vec<String>) {
    use kafka_protocol::messages::{fetch_request, FetchRequest};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::RecordBatchDecoder;
    let mut c = cluster.client(id).await;
    let fetch = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_rack_id(StrBytes::from_string(rack.into()))
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(common::topic_name(TOPIC))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let r = c.send(&fetch, 11).await;
    let p = &r.responses[0].partitions[0];
    let mut data = p.records.clone().unwrap_or_default();
    let mut values = Vec::new();
    while !data.is_empty() {
        let set = RecordBatchDecoder::decode(&mut data).expect("batches decode");
        values.extend(
            set.records
                .into_iter()
                .map(|r| String::from_utf8_lossy(&r.value.unwrap_or_default()).to_string()),
        );
    }
    (
        p.error_code,
        p.preferred_read_replica.0,
        p.high_watermark,
        values,
    )
}

/// Fetch from follower (KIP-392): brokers in racks r1-r3; the leader sends a consumer of
/// another rack to the in-sync follower there (`preferred_read_replica`, no records), that
/// follower serves it every record below its high watermark, a consumer of the leader's own
/// rack or of no known rack reads from the leader, and a fetch with a stale leader epoch is
/// fenced on the follower too. Before v11 a follower still refuses consumers.
#[tokio::test]
async fn consumers_fetch_from_a_follower_in_their_rack() {
    let options = Options {
        node_args: (1..=3)
            .map(|id| (id, vec!["--broker-rack".to_string(), format!("r{id}")]))
            .collect(),
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(3, options).await;
    create_rf3(&cluster, "2").await;
    let acked = produce_numbered(&cluster, "v", 20).await;
    let (leader, epoch, _) = leader_of(&cluster, 1, TOPIC, 0).await;
    wait_isr(&cluster, leader, 0, &[1, 2, 3]).await;
    let other = if leader == 3 { 1 } else { leader + 1 };
    // The follower's high watermark comes with its next fetch: until then it serves less.
    let t0 = Instant::now();
    let served = loop {
        let (code, preferred, _, values) =
            fetch_as_consumer(&cluster, leader, &format!("r{other}"), 0).await;
        assert_eq!(code, 0);
        assert_eq!(
            preferred, other,
            "the leader sends the consumer to its rack"
        );
        assert!(values.is_empty(), "a redirect carries no records");
        let (code, preferred, hw, values) =
            fetch_as_consumer(&cluster, other, &format!("r{other}"), 0).await;
        assert_eq!(code, 0, "the follower serves the consumer");
        assert_eq!(preferred, -1);
        assert!(
            values.len() as i64 <= hw,
            "below the follower's high watermark"
        );
        if values.len() == acked.len() || t0.elapsed() > Duration::from_secs(10) {
            break values;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(served, acked, "every record, in order, from the follower");
    // The leader's rack, or a rack with no broker: the leader serves.
    let (_, preferred, _, values) =
        fetch_as_consumer(&cluster, leader, &format!("r{leader}"), 0).await;
    assert_eq!((preferred, values.len()), (-1, acked.len()));
    let (_, preferred, _, values) = fetch_as_consumer(&cluster, leader, "elsewhere", 0).await;
    assert_eq!((preferred, values.len()), (-1, acked.len()));
    // A consumer's stale leader epoch is fenced by a follower as by the leader.
    {
        use kafka_protocol::messages::{fetch_request, FetchRequest};
        let mut c = cluster.client(other).await;
        let part = |epoch: i32| {
            FetchRequest::default()
                .with_replica_id(kafka_protocol::messages::BrokerId(-1))
                .with_max_wait_ms(0)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic(common::topic_name(TOPIC))
                    .with_partitions(vec![fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(epoch)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20)])])
        };
        if epoch > 0 {
            let r = c.send(&part(epoch - 1), 11).await;
            assert_eq!(
                r.responses[0].partitions[0].error_code,
                ResponseError::FencedLeaderEpoch.code()
            );
        }
        let r = c.send(&part(epoch + 1), 11).await;
        assert_eq!(
            r.responses[0].partitions[0].error_code,
            ResponseError::UnknownLeaderEpoch.code()
        );
        let r = c.send(&part(epoch), 10).await;
        assert_eq!(
            r.responses[0].partitions[0].error_code,
            ResponseError::NotLeaderOrFollower.code(),
            "before v11 consumers read from leaders only"
        );
    }
    println!("FETCH-FROM-FOLLOWER leader {leader} sent a consumer of rack r{other} to broker {other}, which served all {} records", acked.len());
    for (id, status) in cluster.kill_all(SIGTERM) {
        assert!(status.success(), "node {id}: {status}");
    }
}
