//! The threading rule, checked: a workload of every kind of blocking storage work (segment
//! rolls under produce and under group commits, fsyncs of `fsync = "always"`, topic creation
//! and deletion, config writes, DeleteRecords, transactions) runs against a disk broker on the broker's own
//! runtime (`threads::runtime`, workers marked), and no blocking operation may have run on a
//! worker thread. Every record produced is read back byte for byte.

use crate::common;

use common::{batch, produce_request, topic_name, Client, TestBroker};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use ottla::config::{Config, FsyncPolicy};

async fn create(c: &mut Client, topic: &str, segment_bytes: &str) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(2)
            .with_replication_factor(-1)
            .with_configs(vec![CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("segment.bytes"))
                .with_value(Some(StrBytes::from_string(segment_bytes.into())))])]);
    let r = c.send(&req, 7).await;
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
}

async fn read_all(c: &mut Client, topic: &str, partition: i32) -> Vec<Vec<u8>> {
    let mut values = Vec::new();
    let mut offset = 0;
    loop {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(8 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(8 << 20)])]);
        let r = c.send(&req, 12).await;
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let mut records = p.records.clone().unwrap_or_default();
        if records.is_empty() {
            return values;
        }
        for set in RecordBatchDecoder::decode_all(&mut records).expect("batches decode") {
            for r in set.records {
                offset = r.offset + 1;
                values.push(r.value.map(|v| v.to_vec()).unwrap_or_default());
            }
        }
    }
}

/// Drops the pages of the topic's segment files from the page cache (they are clean: every
/// append was fsynced). Returns how many files are then not wholly cached.
fn drop_page_cache(data_dir: &std::path::Path, topic: &str) -> usize {
    let mut dropped = 0;
    for partition in 0..2 {
        let pdir = data_dir.join(format!("{topic}-{partition}"));
        for entry in std::fs::read_dir(&pdir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                let f = std::fs::File::open(&path).unwrap();
                let len = f.metadata().unwrap().len() as usize;
                // SAFETY: plain system call on an open descriptor.
                let rc = unsafe {
                    libc::posix_fadvise(
                        std::os::fd::AsRawFd::as_raw_fd(&f),
                        0,
                        0,
                        libc::POSIX_FADV_DONTNEED,
                    )
                };
                assert_eq!(rc, 0);
                if !ottla::log::cold::resident(&f, 0, len) {
                    dropped += 1;
                }
            }
        }
    }
    dropped
}

#[test]
fn blocking_storage_work_never_runs_on_a_runtime_worker() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ottla::threads::runtime().worker_threads(2).build().unwrap();
    let before = ottla::threads::violations();
    rt.block_on(async {
        let broker = TestBroker::start(Config {
            data_dir: dir.path().to_path_buf(),
            fsync: FsyncPolicy::Always,
            ..Config::default()
        })
        .await;
        let mut c = broker.client().await;
        // 1 MiB segments (Kafka's minimum) and ~100 KB batches: several rolls per partition.
        create(&mut c, "rolls", "1048576").await;
        let mut sent: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
        for i in 0..60u32 {
            let partition = (i % 2) as i32;
            let values: Vec<Vec<u8>> = (0..4)
                .map(|j| format!("{i}-{j}-").into_bytes().repeat(2_000))
                .collect();
            let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
            let r = c
                .send(
                    &produce_request("rolls", partition, -1, batch(&refs, Compression::None)),
                    9,
                )
                .await;
            assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
            sent[partition as usize].extend(values);
        }
        for partition in 0..2 {
            assert_eq!(
                read_all(&mut c, "rolls", partition).await,
                sent[partition as usize],
                "partition {partition} reads back byte for byte"
            );
        }
        // Cold reads: drop the segments' pages from the page cache (clean, since every
        // append was fsynced), then read everything again. The fetches' reads would wait for
        // the disk; they must happen on the blocking pool, never on a worker.
        let dropped = drop_page_cache(dir.path(), "rolls");
        assert!(dropped > 0, "no segment left the page cache");
        for partition in 0..2 {
            assert_eq!(
                read_all(&mut c, "rolls", partition).await,
                sent[partition as usize],
                "partition {partition} reads back byte for byte from cold segments"
            );
        }
        // Timestamp lookups read batch headers from cold segments too.
        assert!(drop_page_cache(dir.path(), "rolls") > 0);
        // (MAX_TIMESTAMP's answer depends on the batches' clock: only its range is checked.)
        for (timestamp, want) in [(0i64, 0..1), (-3, 0..120)] {
            let lo = c
                .send(
                    &ListOffsetsRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                            .with_name(topic_name("rolls"))
                            .with_partitions(vec![
                                list_offsets_request::ListOffsetsPartition::default()
                                    .with_partition_index(0)
                                    .with_timestamp(timestamp),
                            ])]),
                    7,
                )
                .await;
            let p = &lo.topics[0].partitions[0];
            assert_eq!(p.error_code, 0, "timestamp {timestamp}");
            assert!(
                want.contains(&p.offset),
                "timestamp {timestamp}: {}",
                p.offset
            );
        }
        let dr = c
            .send(
                &DeleteRecordsRequest::default()
                    .with_timeout_ms(5000)
                    .with_topics(vec![DeleteRecordsTopic::default()
                        .with_name(topic_name("rolls"))
                        .with_partitions(vec![DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(40)])]),
                2,
            )
            .await;
        assert_eq!(dr.topics[0].partitions[0].error_code, 0);
        // Transactions: InitProducerId, AddPartitionsToTxn, EndTxn write and fsync
        // __transaction_state and markers.
        let init = c
            .send(
                &InitProducerIdRequest::default()
                    .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx"))))
                    .with_transaction_timeout_ms(60_000),
                4,
            )
            .await;
        assert_eq!(init.error_code, 0);
        let add = c
            .send(
                &AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_static_str(
                        "tx",
                    )))
                    .with_v3_and_below_producer_id(init.producer_id)
                    .with_v3_and_below_producer_epoch(init.producer_epoch)
                    .with_v3_and_below_topics(vec![
                        add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                            .with_name(topic_name("rolls"))
                            .with_partitions(vec![1]),
                    ]),
                3,
            )
            .await;
        assert_eq!(
            add.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
            0
        );
        let end = c
            .send(
                &EndTxnRequest::default()
                    .with_transactional_id(TransactionalId(StrBytes::from_static_str("tx")))
                    .with_producer_id(init.producer_id)
                    .with_producer_epoch(init.producer_epoch)
                    .with_committed(false),
                3,
            )
            .await;
        assert_eq!(end.error_code, 0);
        // Group commits append to __consumer_offsets; with tiny segments they roll there.
        let alter = c
            .send(
                &IncrementalAlterConfigsRequest::default().with_resources(vec![
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_static_str("__consumer_offsets"))
                        .with_configs(vec![
                            incremental_alter_configs_request::AlterableConfig::default()
                                .with_name(StrBytes::from_static_str("internal.segment.bytes"))
                                .with_config_operation(0)
                                .with_value(Some(StrBytes::from_static_str("1024"))),
                        ]),
                ]),
                1,
            )
            .await;
        assert_eq!(alter.responses[0].error_code, 0);
        let before_commits = broker
            .broker
            .groups
            .for_group("committer")
            .unwrap()
            .log()
            .log_end_offset();
        for i in 0..40 {
            let commit = c
                .send(
                    &OffsetCommitRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("committer")))
                        .with_generation_id_or_member_epoch(-1)
                        .with_topics(vec![
                            offset_commit_request::OffsetCommitRequestTopic::default()
                                .with_name(topic_name("rolls"))
                                .with_partitions(vec![
                                    offset_commit_request::OffsetCommitRequestPartition::default()
                                        .with_partition_index(0)
                                        .with_committed_offset(i)
                                        .with_committed_metadata(Some(StrBytes::from_string(
                                            "m".repeat(100),
                                        ))),
                                ]),
                        ]),
                    8,
                )
                .await;
            assert_eq!(commit.topics[0].partitions[0].error_code, 0);
        }
        assert!(
            broker
                .broker
                .groups
                .for_group("committer")
                .unwrap()
                .log()
                .log_end_offset()
                >= before_commits + 40
        );
        let del = c
            .send(
                &DeleteTopicsRequest::default()
                    .with_timeout_ms(5000)
                    .with_topic_names(vec![topic_name("rolls")]),
                5,
            )
            .await;
        assert_eq!(del.responses[0].error_code, 0);
        create(&mut c, "rolls", "1048576").await;
        broker.stop().await;
    });
    assert_eq!(
        ottla::threads::violations() - before,
        0,
        "blocking operations ran on runtime workers: {:?}",
        ottla::threads::violation_kinds()
    );
}
