//! A data directory of the single-node version (topics in `meta/topics.json`) starts on the
//! metadata log: the same topics, ids, configs and data, the same cluster id; the old file is
//! retired; later starts use the log alone.

use crate::common;

use common::{batch, topic_name, TestBroker};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use ottla::config::Config;
use ottla::log::PartitionLog;
use uuid::Uuid;

fn fetch(topic: &str, partition: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])])
}

#[tokio::test]
async fn a_single_node_data_dir_migrates_into_the_metadata_log() {
    let dir = tempfile::tempdir().unwrap();
    let id = Uuid::new_v4();
    let offsets_id = Uuid::new_v4();
    std::fs::create_dir_all(dir.path().join("meta")).unwrap();
    std::fs::write(dir.path().join("meta/cluster_id"), "Old-Cluster-Id-1234567").unwrap();
    std::fs::write(
        dir.path().join("meta/topics.json"),
        format!(
            r#"[{{"name":"old","id":"{id}","partitions":2,"configs":{{"retention.ms":"86400000"}}}},
               {{"name":"__consumer_offsets","id":"{offsets_id}","partitions":1,"configs":{{"cleanup.policy":"compact"}}}}]"#
        ),
    )
    .unwrap();
    // Data written by the old version into partition 1.
    {
        let log = PartitionLog::open(&dir.path().join("old-1"), Default::default(), false).unwrap();
        let mut b = batch(&[b"before", b"migration"], Compression::None).to_vec();
        log.append(&mut b, None).unwrap();
        log.sync(true).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("old-0")).unwrap();
    std::fs::create_dir_all(dir.path().join("__consumer_offsets-0")).unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    for start in 0..2 {
        let broker = TestBroker::start(config.clone()).await;
        assert!(
            !dir.path().join("meta/topics.json").exists(),
            "start {start}"
        );
        assert!(dir.path().join("meta/topics.json.migrated").exists());
        let mut c = broker.client().await;
        let r = c
            .send(
                &MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default(
                )
                .with_name(Some(topic_name("old")))])),
                12,
            )
            .await;
        assert_eq!(r.cluster_id.as_deref(), Some("Old-Cluster-Id-1234567"));
        assert_eq!(r.topics[0].error_code, 0);
        assert_eq!(r.topics[0].topic_id, id, "the same topic id");
        assert_eq!(r.topics[0].partitions.len(), 2);
        let image = broker.broker.meta.image();
        assert_eq!(
            image.topic_by_name("__consumer_offsets").unwrap().id,
            offsets_id
        );
        assert_eq!(
            image
                .topic(&id)
                .unwrap()
                .configs
                .get("retention.ms")
                .map(String::as_str),
            Some("86400000")
        );
        let f = c.send(&fetch("old", 1), 12).await;
        let mut records = f.responses[0].partitions[0]
            .records
            .clone()
            .unwrap_or_default();
        let values: Vec<Vec<u8>> = RecordBatchDecoder::decode_all(&mut records)
            .unwrap()
            .into_iter()
            .flat_map(|s| s.records)
            .map(|r| r.value.unwrap().to_vec())
            .collect();
        assert_eq!(values, vec![b"before".to_vec(), b"migration".to_vec()]);
        broker.stop().await;
    }
}
