//! Partitions at scale: all-or-nothing topic changes, lazily created index files, the bounded
//! cache of open segment files, and a broker process under a low open-file limit.

use crate::common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use common::{batch, Client};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use std::sync::Arc;

use openraft::{CommittedLeaderId, LogId};
use ottla::cluster::TopicRegistry;
use ottla::config::Config;
use ottla::log::Isolation;
use ottla::meta::image::{Delta, MetadataImage};
use ottla::meta::records::MetaRecord;
use uuid::Uuid;

fn disk(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    }
}

fn partition_dirs(dir: &Path, topic: &str) -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| {
            n.rsplit_once('-')
                .is_some_and(|(t, p)| t == topic && p.parse::<u32>().is_ok())
        })
        .collect();
    dirs.sort();
    dirs
}

/// An image holding `topics` (name, partitions), every partition on node 1.
fn image_of(topics: &[(&str, i32)]) -> Arc<MetadataImage> {
    let mut records = Vec::new();
    for (name, partitions) in topics {
        let id = Uuid::new_v4();
        records.push(MetaRecord::Topic {
            name: name.to_string(),
            id,
        });
        records.extend((0..*partitions).map(|index| MetaRecord::Partition {
            topic_id: id,
            index,
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
        }));
    }
    let mut image = MetadataImage::default();
    image.apply(
        LogId::new(CommittedLeaderId::new(1, 1), 1),
        &records,
        &mut Delta::default(),
    );
    Arc::new(image)
}

/// The metadata log decides that a topic exists; a partition whose log cannot be opened here
/// is offline on this broker while the others serve, and opens on the next start once the
/// obstacle is gone.
#[test]
fn a_partition_that_cannot_be_opened_is_offline_and_the_rest_serve() {
    let dir = tempfile::tempdir().unwrap();
    let config = disk(dir.path());
    let image = image_of(&[("keep", 1), ("t", 10)]);
    // Partition 5's directory cannot be created: a file is in the way.
    std::fs::write(dir.path().join("t-5"), b"in the way").unwrap();
    let r = TopicRegistry::open(&config, false).unwrap();
    r.materialize(&image);
    let t = r.get("t").unwrap();
    assert_eq!(t.partition_count(), 10);
    assert!(t.partition(5).is_none(), "offline here");
    assert_eq!(t.partitions().len(), 9);
    assert!(r.get("keep").unwrap().partition(0).is_some());
    drop((t, r));
    std::fs::remove_file(dir.path().join("t-5")).unwrap();
    let r = TopicRegistry::open(&config, false).unwrap();
    r.materialize(&image);
    assert_eq!(r.get("t").unwrap().partitions().len(), 10);
    assert_eq!(partition_dirs(dir.path(), "t").len(), 10);
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn value_of(records: &Bytes) -> Vec<Vec<u8>> {
    let mut b = records.clone();
    RecordBatchDecoder::decode_all(&mut b)
        .unwrap()
        .into_iter()
        .flat_map(|s| s.records)
        .map(|r| r.value.unwrap().to_vec())
        .collect()
}

/// 300 partitions through a cache of 16 open files: nothing open or indexed before data, at
/// most 16 open while writing and reading every partition, a reader's file survives eviction,
/// and every record reads back after a clean and an unclean restart.
#[test]
fn many_partitions_share_a_small_cache_of_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        max_open_segment_files: 16,
        ..disk(dir.path())
    };
    const N: i32 = 300;
    let image = image_of(&[("many", N)]);
    let r = TopicRegistry::open(&config, false).unwrap();
    r.materialize(&image);
    let t = r.get("many").unwrap();
    assert_eq!(r.open_files().stats().open, 0, "creating opens nothing");
    assert_eq!(
        files_in(&dir.path().join("many-0")),
        vec!["00000000000000000000.log"],
        "an empty partition has no index files"
    );
    let value = |p: i32, i: usize| format!("p{p}-r{i}").into_bytes();
    for round in 0..3 {
        for p in 0..N {
            let v = value(p, round);
            let mut b = batch(&[&v], Compression::None).to_vec();
            t.partition(p).unwrap().log().append(&mut b, None).unwrap();
            assert!(r.open_files().stats().open <= 16);
        }
    }
    let slice = t
        .partition(0)
        .unwrap()
        .log()
        .read_records(0, 1 << 20, true, Isolation::ReadUncommitted)
        .unwrap()
        .records;
    let read_all = |t: &ottla::cluster::Topic| {
        for p in 0..N {
            let got = t
                .partition(p)
                .unwrap()
                .log()
                .read(0, 1 << 20, true)
                .unwrap();
            assert_eq!(
                value_of(&got.records),
                (0..3).map(|i| value(p, i)).collect::<Vec<_>>()
            );
        }
    };
    read_all(&t);
    assert!(r.open_files().stats().open <= 16);
    assert!(r.open_files().stats().evictions > 0);
    assert_eq!(
        value_of(&slice.to_bytes().unwrap()),
        (0..3).map(|i| value(0, i)).collect::<Vec<_>>(),
        "a reader's file outlives its eviction"
    );
    // Small batches: still below the index interval, no index entries, no index files.
    assert_eq!(
        files_in(&dir.path().join("many-7")),
        vec!["00000000000000000000.log", "partition.checkpoint"]
            .into_iter()
            .filter(|f| dir.path().join("many-7").join(f).exists())
            .collect::<Vec<_>>()
    );
    r.sync_all(true).unwrap();
    drop((t, r));
    let r = TopicRegistry::open(&config, true).unwrap();
    r.materialize(&image);
    read_all(&r.get("many").unwrap());
    // Unclean: dropped without a sync.
    drop(r);
    let r = TopicRegistry::open(&config, false).unwrap();
    r.materialize(&image);
    let t = r.get("many").unwrap();
    read_all(&t);
    assert!(r.open_files().stats().open <= 16);
}

/// Enough data for index entries: the index files appear then, and a clean start uses them.
#[test]
fn index_files_appear_with_their_first_entries() {
    let dir = tempfile::tempdir().unwrap();
    let log = ottla::log::PartitionLog::open(dir.path(), Default::default(), false).unwrap();
    let big = vec![7u8; 3000];
    for _ in 0..2 {
        let mut b = batch(&[&big], Compression::None).to_vec();
        log.append(&mut b, None).unwrap();
    }
    assert!(!dir.path().join("00000000000000000000.index").exists());
    for _ in 0..4 {
        let mut b = batch(&[&big], Compression::None).to_vec();
        log.append(&mut b, None).unwrap();
    }
    log.sync(true).unwrap();
    let names = files_in(dir.path());
    assert!(names.contains(&"00000000000000000000.index".to_string()));
    assert!(names.contains(&"00000000000000000000.timeindex".to_string()));
    assert!(!names.contains(&"00000000000000000000.txnindex".to_string()));
    drop(log);
    let log = ottla::log::PartitionLog::open(dir.path(), Default::default(), true).unwrap();
    assert_eq!(log.log_end_offset(), 6);
    for o in 0..6 {
        let got = log.read(o, 1, true).unwrap();
        assert_eq!(value_of(&got.records), vec![big.clone()]);
    }
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.into()))
}

/// The broker binary under an open-file limit of 256 (soft = hard): a topic of 3,000
/// partitions is created (12,000 files' worth of segments before this change), and records
/// produced to a sample of its partitions fetch back.
#[tokio::test]
async fn a_broker_with_256_descriptors_serves_3000_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let bin =
        std::env::var("OTTLA_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ottla").into());
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = KillOnDrop(cmd.spawn().expect("broker starts"));
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && line.contains("ottla ready on ") {
                let _ = tx.send(line.clone());
                sent = true;
            }
        }
    });
    let ready = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("ready line");
    let addr: std::net::SocketAddr = ready
        .split("ottla ready on ")
        .nth(1)
        .and_then(|rest| rest.split([' ', ',']).next())
        .and_then(|a| a.parse().ok())
        .expect("address in the ready line");
    let mut c = Client::connect(addr).await;
    let created = c
        .send(
            &CreateTopicsRequest::default()
                .with_timeout_ms(60_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(topic_name("wide"))
                    .with_num_partitions(3000)
                    .with_replication_factor(-1)]),
            7,
        )
        .await;
    assert_eq!(
        created.topics[0].error_code, 0,
        "{:?}",
        created.topics[0].error_message
    );
    let sample: Vec<i32> = (0..3000).step_by(7).collect();
    for &p in &sample {
        let v = format!("record of {p}");
        let r = c
            .send(
                &ProduceRequest::default()
                    .with_acks(1)
                    .with_timeout_ms(1000)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(topic_name("wide"))
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(batch(&[v.as_bytes()], Compression::None)))])]),
                9,
            )
            .await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    for &p in &sample {
        let r = c
            .send(
                &FetchRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_max_bytes(1 << 20)
                    .with_session_epoch(-1)
                    .with_topics(vec![FetchTopic::default()
                        .with_topic(topic_name("wide"))
                        .with_partitions(vec![FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(1 << 20)])]),
                12,
            )
            .await;
        let part = &r.responses[0].partitions[0];
        assert_eq!(part.error_code, 0);
        assert_eq!(
            value_of(part.records.as_ref().unwrap()),
            vec![format!("record of {p}").into_bytes()]
        );
    }
    let metadata = c
        .send(&MetadataRequest::default().with_topics(None), 12)
        .await;
    let wide = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "wide"))
        .unwrap();
    assert_eq!(wide.partitions.len(), 3000);
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.0.id() as i32, libc::SIGTERM);
    }
    assert!(child.0.wait().unwrap().success(), "clean stop");
}

/// The broker process, killed if the test fails before stopping it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
