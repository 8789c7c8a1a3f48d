//! The log layer's transactions (KIP-98): the partition log's API (LSO, markers, aborted
//! transactions, restarts) and, through the wire, Fetch's read_committed isolation,
//! ListOffsets' READ_COMMITTED latest offset and Produce's transactional checks.

use crate::common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{Client, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use ottla::log::{AbortedTxn, Isolation, LogConfig, LogError, PartitionLog};

const READ_UNCOMMITTED: i8 = 0;
const READ_COMMITTED: i8 = 1;

/// One batch of `n` records from producer `pid` starting at sequence `seq`; transactional or
/// merely idempotent.
fn producer_batch(pid: i64, epoch: i16, seq: i32, n: usize, transactional: bool) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional,
            control: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("p{pid}-s{}", seq + i as i32))),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("batch encodes");
    buf.freeze()
}

fn txn(pid: i64, seq: i32, n: usize) -> Bytes {
    producer_batch(pid, 0, seq, n, true)
}

fn plain(n: usize) -> Bytes {
    producer_batch(-1, -1, -1, n, false)
}

fn append(log: &PartitionLog, batch: Bytes) -> i64 {
    log.append(&mut batch.to_vec(), None)
        .expect("append")
        .base_offset
}

fn aborted(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
    AbortedTxn {
        producer_id: pid,
        first_offset: first,
        last_offset: last,
        last_stable_offset: lso,
    }
}

/// (offset, value, control) of every record in `records`.
fn records_of(records: &Bytes) -> Vec<(i64, String, bool)> {
    let mut b = records.clone();
    RecordBatchDecoder::decode_all(&mut b)
        .expect("batches decode")
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| {
            let value = if r.control {
                String::new()
            } else {
                String::from_utf8(r.value.unwrap_or_default().to_vec()).unwrap()
            };
            (r.offset, value, r.control)
        })
        .collect()
}

// ---- the log API ----

#[test]
fn log_api_lso_markers_and_read_committed() {
    let log = PartitionLog::in_memory(LogConfig::default());
    assert_eq!(append(&log, plain(2)), 0); // 0..=1
    assert_eq!(append(&log, txn(10, 0, 2)), 2); // 2..=3
    assert_eq!(append(&log, txn(11, 0, 2)), 4); // 4..=5
    assert_eq!(append(&log, plain(1)), 6);
    assert_eq!(log.last_stable_offset(), 2);
    assert_eq!(log.high_watermark(), 7);

    let committed = |from| {
        log.read_with_isolation(from, 1 << 20, true, Isolation::ReadCommitted)
            .unwrap()
    };
    let rc = committed(0);
    assert_eq!(
        records_of(&rc.records).len(),
        2,
        "only the batch below the LSO"
    );
    assert_eq!(rc.last_stable_offset, 2);
    assert!(committed(2).records.is_empty());

    // Commit 10, abort 11: the LSO reaches the end, 11 is listed as aborted.
    assert_eq!(log.append_marker(10, 0, true, 1).unwrap(), 7);
    assert_eq!(log.last_stable_offset(), 4);
    assert_eq!(log.append_marker(11, 0, false, 1).unwrap(), 8);
    assert_eq!(log.last_stable_offset(), 9);
    let rc = committed(0);
    assert_eq!(
        records_of(&rc.records)
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        (0..9).collect::<Vec<_>>()
    );
    assert_eq!(rc.aborted_transactions, vec![aborted(11, 4, 8, 9)]);
    // read_uncommitted lists no aborted transactions.
    assert!(log
        .read(0, 1 << 20, true)
        .unwrap()
        .aborted_transactions
        .is_empty());
    // A marker without a transaction: written, nothing indexed.
    assert_eq!(log.append_marker(12, 0, false, 1).unwrap(), 9);
    assert_eq!(log.aborted_transactions(0, 10), vec![aborted(11, 4, 8, 9)]);
    // A fenced coordinator and a stale producer epoch are refused.
    assert!(matches!(
        log.append_marker(10, 0, true, 0),
        Err(LogError::Sequence(_))
    ));
    append(&log, producer_batch(13, 4, 0, 1, true));
    assert!(matches!(
        log.append_marker(13, 3, false, 1),
        Err(LogError::Sequence(_))
    ));
}

#[test]
fn log_api_transactions_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 400,
        segment_ms: i64::MAX,
        index_interval_bytes: 100,
        ..LogConfig::default()
    };
    {
        let log = PartitionLog::open(dir.path(), config, false).unwrap();
        for pid in 0..4 {
            append(&log, txn(pid, 0, 2));
            append(&log, plain(2));
            log.append_marker(pid, 0, pid % 2 == 1, 0).unwrap();
        }
        append(&log, txn(99, 0, 1)); // stays open: 20
        append(&log, plain(3)); // 21..=23
        log.sync(true).unwrap(); // a clean shutdown
    }
    let expected = vec![aborted(0, 0, 4, 5), aborted(2, 10, 14, 15)];
    for clean in [true, false] {
        let log = PartitionLog::open(dir.path(), config, clean).unwrap();
        assert_eq!(log.last_stable_offset(), 20, "clean={clean}");
        assert_eq!(log.ongoing_transactions(), vec![(99, 20)]);
        assert_eq!(log.aborted_transactions(0, 24), expected, "clean={clean}");
        let rc = log
            .read_with_isolation(15, 1 << 20, true, Isolation::ReadCommitted)
            .unwrap();
        assert!(records_of(&rc.records).iter().all(|r| r.0 < 20));
        if clean {
            log.sync(true).unwrap();
        }
    }
    // The index files hold Kafka's 34-byte entries.
    let txnindex: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txnindex"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(txnindex, 2 * 34);
}

// ---- through the wire ----

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.into()))
}

async fn create(c: &mut Client, topic: &str) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(1000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(1)
            .with_replication_factor(-1)]);
    let r = c.send(&req, 7).await;
    assert_eq!(r.topics[0].error_code, 0);
}

fn produce_to(transactional_id: Option<&str>, parts: Vec<(&str, i32, Bytes)>) -> ProduceRequest {
    let topic_data = parts
        .into_iter()
        .map(|(topic, partition, records)| {
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records))])
        })
        .collect();
    ProduceRequest::default()
        .with_transactional_id(
            transactional_id.map(|t| TransactionalId(StrBytes::from_string(t.into()))),
        )
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(topic_data)
}

/// InitProducerId for a transactional id, then AddPartitionsToTxn of partition 0 of `topic`
/// (the broker verifies a transactional produce's partition was added). Returns the producer
/// id (epoch 0).
async fn begin(c: &mut Client, transactional_id: &str, topic: &str) -> i64 {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    let tid = TransactionalId(StrBytes::from_string(transactional_id.into()));
    let r = c
        .send(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(tid.clone()))
                .with_transaction_timeout_ms(60_000),
            4,
        )
        .await;
    assert_eq!((r.error_code, r.producer_epoch), (0, 0));
    let a = c
        .send(
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(tid)
                .with_v3_and_below_producer_id(r.producer_id)
                .with_v3_and_below_producer_epoch(0)
                .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(name(topic))
                    .with_partitions(vec![0])]),
            3,
        )
        .await;
    assert_eq!(
        a.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
    r.producer_id.0
}

async fn produce_code(c: &mut Client, txn_id: Option<&str>, topic: &str, records: Bytes) -> i16 {
    let r = c
        .send(&produce_to(txn_id, vec![(topic, 0, records)]), 9)
        .await;
    r.responses[0].partition_responses[0].error_code
}

fn fetch(topic: &str, offset: i64, isolation: i8, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(isolation)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

async fn fetch_partition(c: &mut Client, req: &FetchRequest) -> PartitionData {
    let r = c.send(req, 12).await;
    r.responses[0].partitions[0].clone()
}

#[tokio::test]
async fn fetch_read_committed_vs_read_uncommitted() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "t").await;
    let log = broker
        .broker
        .topics
        .get("t")
        .unwrap()
        .partition(0)
        .unwrap()
        .log()
        .clone();
    assert_eq!(produce_code(&mut c, None, "t", plain(2)).await, 0); // 0..=1
    let (pa, pb, pc) = (
        begin(&mut c, "tx-a", "t").await,
        begin(&mut c, "tx-b", "t").await,
        begin(&mut c, "tx-c", "t").await,
    );
    assert_eq!(
        produce_code(&mut c, Some("tx-a"), "t", txn(pa, 0, 2)).await,
        0
    ); // 2..=3
    assert_eq!(
        produce_code(&mut c, Some("tx-b"), "t", txn(pb, 0, 1)).await,
        0
    ); // 4
    assert_eq!(produce_code(&mut c, None, "t", plain(1)).await, 0); // 5

    let ru = fetch_partition(&mut c, &fetch("t", 0, READ_UNCOMMITTED, 0)).await;
    assert_eq!(ru.error_code, 0);
    assert_eq!(ru.high_watermark, 6);
    assert_eq!(ru.last_stable_offset, 2, "the LSO whatever the isolation");
    assert_eq!(ru.aborted_transactions, None);
    assert_eq!(records_of(ru.records.as_ref().unwrap()).len(), 6);

    let rc = fetch_partition(&mut c, &fetch("t", 0, READ_COMMITTED, 0)).await;
    assert_eq!((rc.high_watermark, rc.last_stable_offset), (6, 2));
    assert_eq!(rc.aborted_transactions, Some(vec![]));
    let got = records_of(rc.records.as_ref().unwrap());
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1]);
    let rc = fetch_partition(&mut c, &fetch("t", 2, READ_COMMITTED, 0)).await;
    assert!(
        rc.records.as_ref().unwrap().is_empty(),
        "nothing below the LSO"
    );

    // 7 aborts, 8 commits: everything is stable; 7's transaction is reported as aborted.
    assert_eq!(log.append_marker(pa, 0, false, 0).unwrap(), 6);
    assert_eq!(log.append_marker(pb, 0, true, 0).unwrap(), 7);
    let rc = fetch_partition(&mut c, &fetch("t", 0, READ_COMMITTED, 0)).await;
    assert_eq!((rc.high_watermark, rc.last_stable_offset), (8, 8));
    let aborted = rc.aborted_transactions.unwrap();
    assert_eq!(aborted.len(), 1);
    assert_eq!((aborted[0].producer_id.0, aborted[0].first_offset), (pa, 2));
    let got = records_of(rc.records.as_ref().unwrap());
    assert_eq!(got.len(), 8);
    assert_eq!(got.iter().filter(|r| r.2).count(), 2, "both markers");
    // Fetching after the aborted transaction's marker: not listed.
    let rc = fetch_partition(&mut c, &fetch("t", 7, READ_COMMITTED, 0)).await;
    assert_eq!(rc.aborted_transactions, Some(vec![]));

    // ListOffsets latest: the LSO for READ_COMMITTED, the high watermark otherwise.
    assert_eq!(
        produce_code(&mut c, Some("tx-c"), "t", txn(pc, 0, 1)).await,
        0
    ); // 8
    assert_eq!(produce_code(&mut c, None, "t", plain(1)).await, 0); // 9
    for (isolation, expected) in [(READ_UNCOMMITTED, 10), (READ_COMMITTED, 8)] {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name("t"))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])]);
        let r = c.send(&req, 5).await;
        let p = &r.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.offset),
            (0, expected),
            "isolation {isolation}"
        );
        // By timestamp: the batch at 9 is past the LSO for READ_COMMITTED.
        let by_time = req.clone().with_topics(vec![ListOffsetsTopic::default()
            .with_name(name("t"))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(1_700_000_000_000)])]);
        let r = c.send(&by_time, 5).await;
        assert_eq!(r.topics[0].partitions[0].offset, 0);
    }
    broker.stop().await;
}

#[tokio::test]
async fn read_committed_long_poll_wakes_when_the_lso_moves() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "lp").await;
    let log = broker
        .broker
        .topics
        .get("lp")
        .unwrap()
        .partition(0)
        .unwrap()
        .log()
        .clone();
    let p5 = begin(&mut c, "tx", "lp").await;
    assert_eq!(
        produce_code(&mut c, Some("tx"), "lp", txn(p5, 0, 3)).await,
        0
    ); // 0..=2

    // Data of another transaction does not move the LSO: the wait runs its course.
    let l = log.clone();
    let more_txn = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        l.append(&mut txn(6, 0, 1).to_vec(), None).unwrap();
    });
    let t0 = Instant::now();
    let p = fetch_partition(&mut c, &fetch("lp", 0, READ_COMMITTED, 1000)).await;
    more_txn.await.unwrap();
    assert!(p.records.as_ref().unwrap().is_empty());
    assert!(t0.elapsed() >= Duration::from_millis(900), "kept waiting");
    assert_eq!(p.last_stable_offset, 0);

    // A commit marker moves it: the waiting fetch answers at once.
    let l = log.clone();
    let commit = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tokio::task::spawn_blocking(move || l.append_marker(p5, 0, true, 0))
            .await
            .unwrap()
            .unwrap()
    });
    let t0 = Instant::now();
    let p = fetch_partition(&mut c, &fetch("lp", 0, READ_COMMITTED, 10_000)).await;
    assert_eq!(commit.await.unwrap(), 4);
    assert!(t0.elapsed() < Duration::from_secs(5), "woken by the marker");
    assert_eq!(
        p.last_stable_offset, 3,
        "pid 6's transaction still open at 3"
    );
    let got = records_of(p.records.as_ref().unwrap());
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    broker.stop().await;
}

#[tokio::test]
async fn produce_refuses_bad_transactional_writes() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "p").await;
    create(&mut c, "q").await;
    let code = |e: ResponseError| e.code();

    // Transactional batches without a transactional id: Kafka's answer for every partition.
    let r = c
        .send(
            &produce_to(None, vec![("p", 0, txn(1, 0, 1)), ("q", 0, plain(1))]),
            9,
        )
        .await;
    for t in &r.responses {
        assert_eq!(
            t.partition_responses[0].error_code,
            code(ResponseError::TransactionalIdAuthorizationFailed)
        );
    }
    // Two producers in one transactional request.
    let r = c
        .send(
            &produce_to(
                Some("x"),
                vec![("p", 0, txn(1, 0, 1)), ("q", 0, txn(2, 0, 1))],
            ),
            9,
        )
        .await;
    for t in &r.responses {
        assert_eq!(
            t.partition_responses[0].error_code,
            code(ResponseError::InvalidProducerIdMapping)
        );
    }
    // Clients may not write control batches.
    let marker = Bytes::from(ottla::log::txn::encode_marker(1, 0, true, 0, 0));
    assert_eq!(
        produce_code(&mut c, Some("x"), "p", marker).await,
        code(ResponseError::InvalidRecord)
    );
    // A producer id without a sequence; a transactional batch without a producer id.
    assert_eq!(
        produce_code(&mut c, None, "p", producer_batch(3, 0, -1, 1, false)).await,
        code(ResponseError::InvalidRecord)
    );
    assert_eq!(
        produce_code(&mut c, Some("x"), "p", producer_batch(-1, -1, -1, 1, true)).await,
        code(ResponseError::InvalidRecord)
    );
    assert_eq!(
        broker
            .broker
            .topics
            .get("p")
            .unwrap()
            .partition(0)
            .unwrap()
            .log()
            .log_end_offset(),
        0
    );

    // Inside its transaction a producer may not write non-transactionally.
    let px = begin(&mut c, "x", "p").await;
    // KIP-890 verification: "q" was never added to x's transaction.
    assert_eq!(
        produce_code(&mut c, Some("x"), "q", txn(px, 0, 1)).await,
        code(ResponseError::InvalidTxnState)
    );
    assert_eq!(produce_code(&mut c, Some("x"), "p", txn(px, 0, 2)).await, 0);
    assert_eq!(
        produce_code(&mut c, None, "p", producer_batch(px, 0, 2, 1, false)).await,
        code(ResponseError::InvalidTxnState)
    );
    // A retried transactional batch is a duplicate, answered with its offsets.
    let r = c
        .send(&produce_to(Some("x"), vec![("p", 0, txn(px, 0, 2))]), 9)
        .await;
    let p = &r.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    let log = broker
        .broker
        .topics
        .get("p")
        .unwrap()
        .partition(0)
        .unwrap()
        .log()
        .clone();
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.last_stable_offset(), 0);
    broker.stop().await;
}

/// PRODUCER_FENCED (90) reaches only request versions that know it, as Kafka's `KafkaApis`
/// maps it: InitProducerId v4+, AddPartitionsToTxn / AddOffsetsToTxn / EndTxn v2+; older
/// versions get INVALID_PRODUCER_EPOCH (47). TxnOffsetCommit and Produce answer 47 at every
/// version (Kafka's transaction verification turns 90 into 47 for them).
#[tokio::test]
async fn producer_fenced_is_answered_only_to_versions_that_know_it() {
    use kafka_protocol::messages::add_partitions_to_txn_request::{
        AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
    };
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    let fenced = ResponseError::ProducerFenced.code();
    let stale = ResponseError::InvalidProducerEpoch.code();
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "f").await;
    let tid = TransactionalId(StrBytes::from_string("fenced".into()));
    let init = InitProducerIdRequest::default()
        .with_transactional_id(Some(tid.clone()))
        .with_transaction_timeout_ms(60_000);
    let old = c.send(&init, 4).await;
    assert_eq!((old.error_code, old.producer_epoch), (0, 0));
    // A new incarnation of the producer: epoch 1; epoch 0 is now fenced.
    let new = c.send(&init, 4).await;
    assert_eq!((new.error_code, new.producer_epoch), (0, 1));
    let pid = old.producer_id;

    // KIP-360 re-initialisation naming a producer id that is not the current one.
    for version in 3..=5 {
        let r = c
            .send(
                &init
                    .clone()
                    .with_producer_id(ProducerId(pid.0 + 1000))
                    .with_producer_epoch(0),
                version,
            )
            .await;
        let want = if version < 4 { stale } else { fenced };
        assert_eq!(r.error_code, want, "InitProducerId v{version}");
    }
    for version in 0..=3 {
        let r = c
            .send(
                &AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(tid.clone())
                    .with_v3_and_below_producer_id(pid)
                    .with_v3_and_below_producer_epoch(0)
                    .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                        .with_name(name("f"))
                        .with_partitions(vec![0])]),
                version,
            )
            .await;
        let want = if version < 2 { stale } else { fenced };
        assert_eq!(
            r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, want,
            "AddPartitionsToTxn v{version}"
        );
    }
    // v4+ is the brokers' batched form: it knows PRODUCER_FENCED.
    let r = c
        .send(
            &AddPartitionsToTxnRequest::default().with_transactions(vec![
                AddPartitionsToTxnTransaction::default()
                    .with_transactional_id(tid.clone())
                    .with_producer_id(pid)
                    .with_producer_epoch(0)
                    .with_topics(vec![AddPartitionsToTxnTopic::default()
                        .with_name(name("f"))
                        .with_partitions(vec![0])]),
            ]),
            4,
        )
        .await;
    assert_eq!(
        r.results_by_transaction[0].topic_results[0].results_by_partition[0].partition_error_code,
        fenced,
        "AddPartitionsToTxn v4"
    );
    for version in 0..=4 {
        let r = c
            .send(
                &AddOffsetsToTxnRequest::default()
                    .with_transactional_id(tid.clone())
                    .with_producer_id(pid)
                    .with_producer_epoch(0)
                    .with_group_id(GroupId(StrBytes::from_string("g".into()))),
                version,
            )
            .await;
        let want = if version < 2 { stale } else { fenced };
        assert_eq!(r.error_code, want, "AddOffsetsToTxn v{version}");
    }
    for version in 0..=4 {
        let r = c
            .send(
                &EndTxnRequest::default()
                    .with_transactional_id(tid.clone())
                    .with_producer_id(pid)
                    .with_producer_epoch(0)
                    .with_committed(true),
                version,
            )
            .await;
        let want = if version < 2 { stale } else { fenced };
        assert_eq!(r.error_code, want, "EndTxn v{version}");
    }
    for version in 0..=4 {
        let r = c
            .send(
                &TxnOffsetCommitRequest::default()
                    .with_transactional_id(tid.clone())
                    .with_group_id(GroupId(StrBytes::from_string("g".into())))
                    .with_producer_id(pid)
                    .with_producer_epoch(0)
                    .with_generation_id(-1)
                    .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                        .with_name(name("f"))
                        .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(5)])]),
                version,
            )
            .await;
        assert_eq!(
            r.topics[0].partitions[0].error_code, stale,
            "TxnOffsetCommit v{version}"
        );
    }
    // A transactional batch of the fenced epoch (the partition has no state of this producer:
    // the transaction coordinator's verification refuses it).
    for version in [3, 9, 11] {
        let r = c
            .send(
                &produce_to(
                    Some("fenced"),
                    vec![("f", 0, producer_batch(pid.0, 0, 0, 1, true))],
                ),
                version,
            )
            .await;
        assert_eq!(
            r.responses[0].partition_responses[0].error_code, stale,
            "Produce v{version}"
        );
    }
    assert_eq!(
        broker
            .broker
            .topics
            .get("f")
            .unwrap()
            .partition(0)
            .unwrap()
            .log()
            .log_end_offset(),
        0
    );
    broker.stop().await;
}

/// DescribeProducers (KIP-664): a partition's leader lists the producers it tracks, with
/// the start of an open transaction; an unknown partition is UNKNOWN_TOPIC_OR_PARTITION.
#[tokio::test]
async fn describe_producers_lists_the_partitions_producers_and_open_transactions() {
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    create(&mut c, "dp").await;
    // An idempotent producer (id 500, three records), and a transactional one left open.
    assert_eq!(
        produce_code(&mut c, None, "dp", producer_batch(500, 2, 0, 3, false)).await,
        0
    );
    let pid = begin(&mut c, "dp-txn", "dp").await;
    assert_eq!(
        produce_code(
            &mut c,
            Some("dp-txn"),
            "dp",
            producer_batch(pid, 0, 0, 2, true)
        )
        .await,
        0
    );
    let req = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
        .with_name(name("dp"))
        .with_partition_indexes(vec![0, 7])]);
    let r = c.send(&req, 0).await;
    let parts = &r.topics[0].partitions;
    assert_eq!(parts[0].error_code, 0);
    let mut producers: Vec<(i64, i32, i32, i64)> = parts[0]
        .active_producers
        .iter()
        .map(|p| {
            (
                p.producer_id.0,
                p.producer_epoch,
                p.last_sequence,
                p.current_txn_start_offset,
            )
        })
        .collect();
    producers.sort_unstable();
    let mut want = vec![(500, 2, 2, -1), (pid, 0, 1, 3)];
    want.sort_unstable();
    assert_eq!(producers, want);
    assert!(parts[0]
        .active_producers
        .iter()
        .all(|p| p.last_timestamp > 1_600_000_000_000));
    assert_eq!(
        (parts[1].partition_index, parts[1].error_code),
        (7, ResponseError::UnknownTopicOrPartition.code())
    );
    broker.stop().await;
}
