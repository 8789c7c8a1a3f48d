//! Incremental fetch sessions (KIP-227) through the wire: a full fetch creates a session,
//! incremental fetches carry only what changed and are answered only what is new, epochs and
//! ids are checked as Kafka checks them, forgotten partitions leave, a close ends the
//! session, a retried duplicate is refused while the original waits, and partitions the
//! metadata refuses do not end the long poll.

use crate::common;

use std::time::Duration;

use common::{Client, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::*;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use ottla::config::Config;

const V: i16 = 12;

async fn create(c: &mut Client, name: &str, partitions: i32) -> Uuid {
    let r = c
        .send(
            &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                .with_name(common::topic_name(name))
                .with_num_partitions(partitions)
                .with_replication_factor(1)]),
            7,
        )
        .await;
    assert_eq!(r.topics[0].error_code, 0);
    r.topics[0].topic_id
}

use uuid::Uuid;

async fn produce(c: &mut Client, topic: &str, partition: i32, values: &[&[u8]]) {
    let r = c
        .send(
            &common::produce_request(
                topic,
                partition,
                -1,
                common::batch(values, Compression::None),
            ),
            9,
        )
        .await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
}

fn part(p: i32, offset: i64) -> FetchPartition {
    FetchPartition::default()
        .with_partition(p)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(1 << 20)
}

fn fetch(session_id: i32, epoch: i32, topics: Vec<FetchTopic>, wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(topics)
}

fn topic(name: &str, parts: Vec<FetchPartition>) -> FetchTopic {
    FetchTopic::default()
        .with_topic(common::topic_name(name))
        .with_partitions(parts)
}

/// (topic, partition, error, high watermark, record values) of each partition answered.
fn answered(r: &FetchResponse) -> Vec<(String, i32, i16, i64, Vec<String>)> {
    let mut out = Vec::new();
    for t in &r.responses {
        for p in &t.partitions {
            let mut values = Vec::new();
            let mut data = p.records.clone().unwrap_or_default();
            while !data.is_empty() {
                let set = RecordBatchDecoder::decode(&mut data).expect("batches decode");
                for rec in set.records {
                    values.push(String::from_utf8_lossy(&rec.value.unwrap_or_default()).into());
                }
            }
            out.push((
                t.topic.0.to_string(),
                p.partition_index,
                p.error_code,
                p.high_watermark,
                values,
            ));
        }
    }
    out
}

fn parts_of(r: &FetchResponse) -> Vec<(String, i32)> {
    answered(r).into_iter().map(|(t, p, ..)| (t, p)).collect()
}

#[tokio::test]
async fn a_session_answers_only_what_changed() {
    let b = TestBroker::memory().await;
    let mut c = b.client().await;
    create(&mut c, "s1", 4).await;
    produce(&mut c, "s1", 2, &[b"before"]).await;
    // Full fetch, epoch 0: a session, every partition answered.
    let r = c
        .send(
            &fetch(
                0,
                0,
                vec![topic("s1", (0..4).map(|p| part(p, 0)).collect())],
                0,
            ),
            V,
        )
        .await;
    assert_eq!(r.error_code, 0);
    let id = r.session_id;
    assert!(id > 0, "a session was created");
    let all = answered(&r);
    assert_eq!(all.len(), 4);
    assert_eq!(all[2].4, vec!["before".to_string()]);
    // Epoch 1: partition 2 moves on (it got its record); nothing new anywhere.
    let r = c
        .send(&fetch(id, 1, vec![topic("s1", vec![part(2, 1)])], 0), V)
        .await;
    assert_eq!((r.error_code, r.session_id), (0, id));
    assert!(r.responses.is_empty(), "nothing new: {:?}", answered(&r));
    // A record to partition 1: only it comes back, from its cached offset 0.
    produce(&mut c, "s1", 1, &[b"one", b"two"]).await;
    let r = c.send(&fetch(id, 2, vec![], 500), V).await;
    assert_eq!(
        answered(&r),
        vec![("s1".into(), 1, 0, 2, vec!["one".into(), "two".into()])]
    );
    // It moves on; the next incremental fetch waits, then answers nothing.
    let r = c
        .send(&fetch(id, 3, vec![topic("s1", vec![part(1, 2)])], 50), V)
        .await;
    assert_eq!((r.error_code, r.session_id), (0, id));
    assert!(r.responses.is_empty());
    // A parked incremental fetch is woken by a produce to a partition it did not name.
    let addr = b.addr;
    let producer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut c = Client::connect(addr).await;
        produce(&mut c, "s1", 3, &[b"late"]).await;
    });
    let r = c.send(&fetch(id, 4, vec![], 5_000), V).await;
    producer.await.unwrap();
    assert_eq!(
        answered(&r),
        vec![("s1".into(), 3, 0, 1, vec!["late".into()])]
    );
    // Forgotten: partition 3 leaves the session; a record to it is not answered.
    let forget = fetch(id, 5, vec![], 0)
        .with_forgotten_topics_data(vec![ForgottenTopic::default()
            .with_topic(common::topic_name("s1"))
            .with_partitions(vec![3])]);
    let r = c.send(&forget, V).await;
    assert_eq!(r.error_code, 0);
    produce(&mut c, "s1", 3, &[b"unseen"]).await;
    produce(&mut c, "s1", 0, &[b"zero"]).await;
    let r = c.send(&fetch(id, 6, vec![], 500), V).await;
    assert_eq!(parts_of(&r), vec![("s1".into(), 0)]);
    // Epoch errors: the same epoch again, a skipped one, an unknown id, a v13 request.
    for (sid, epoch, code) in [
        (id, 6, ResponseError::InvalidFetchSessionEpoch),
        (id, 9, ResponseError::InvalidFetchSessionEpoch),
        (id + 1, 7, ResponseError::FetchSessionIdNotFound),
        (0, 1, ResponseError::FetchSessionIdNotFound),
    ] {
        let r = c.send(&fetch(sid, epoch, vec![], 0), V).await;
        assert_eq!(
            (r.error_code, r.session_id),
            (code.code(), 0),
            "({sid}, {epoch})"
        );
        assert!(r.responses.is_empty());
    }
    let r = c.send(&fetch(id, 7, vec![], 0), 13).await;
    assert_eq!(r.error_code, ResponseError::FetchSessionTopicIdError.code());
    // The session survived the errors; from another connection (sessions are not tied to
    // one) it goes on at epoch 7.
    let mut other = b.client().await;
    let r = other.send(&fetch(id, 7, vec![], 0), V).await;
    assert_eq!((r.error_code, r.session_id), (0, id));
    // Closing it (epoch -1) answers sessionless; it is gone.
    let r = c
        .send(&fetch(id, -1, vec![topic("s1", vec![part(0, 1)])], 0), V)
        .await;
    assert_eq!((r.error_code, r.session_id), (0, 0));
    assert_eq!(parts_of(&r), vec![("s1".into(), 0)]);
    let r = c.send(&fetch(id, 8, vec![], 0), V).await;
    assert_eq!(r.error_code, ResponseError::FetchSessionIdNotFound.code());
    assert_eq!(b.broker.fetch_sessions.stats().sessions, 0);
    b.stop().await;
}

#[tokio::test]
async fn a_retried_duplicate_is_refused_while_the_original_waits() {
    let b = TestBroker::memory().await;
    let mut c = b.client().await;
    create(&mut c, "s2", 2).await;
    let r = c
        .send(
            &fetch(0, 0, vec![topic("s2", vec![part(0, 0), part(1, 0)])], 0),
            V,
        )
        .await;
    let id = r.session_id;
    assert!(id > 0);
    let addr = b.addr;
    let parked = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        c.send(&fetch(id, 1, vec![], 3_000), V).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The epoch moved on before the original's read: its duplicate is refused at once.
    let r = c.send(&fetch(id, 1, vec![], 0), V).await;
    assert_eq!(r.error_code, ResponseError::InvalidFetchSessionEpoch.code());
    produce(&mut c, "s2", 1, &[b"data"]).await;
    let r = parked.await.unwrap();
    assert_eq!(
        answered(&r),
        vec![("s2".into(), 1, 0, 1, vec!["data".into()])]
    );
    // And epoch 2 is next.
    let r = c.send(&fetch(id, 2, vec![], 0), V).await;
    assert_eq!((r.error_code, r.session_id), (0, id));
    b.stop().await;
}

/// A partition the metadata refuses (an unknown topic) is answered, last, but does not end
/// the wait for the others, as Kafka's; with sessions it is answered on every fetch (its
/// error is news each time) and still does not end the wait.
#[tokio::test]
async fn partitions_the_metadata_refuses_do_not_end_the_long_poll() {
    let b = TestBroker::memory().await;
    let mut c = b.client().await;
    create(&mut c, "s3", 1).await;
    let addr = b.addr;
    let later = |value: &'static [u8]| {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut c = Client::connect(addr).await;
            produce(&mut c, "s3", 0, &[value]).await;
        })
    };
    let producer = later(b"first");
    let r = c
        .send(
            &fetch(
                0,
                0,
                vec![
                    topic("nope", vec![part(0, 0)]),
                    topic("s3", vec![part(0, 0)]),
                ],
                5_000,
            ),
            V,
        )
        .await;
    producer.await.unwrap();
    let id = r.session_id;
    assert!(id > 0);
    assert_eq!(
        answered(&r),
        vec![
            ("s3".into(), 0, 0, 1, vec!["first".into()]),
            (
                "nope".into(),
                0,
                ResponseError::UnknownTopicOrPartition.code(),
                -1,
                vec![]
            ),
        ],
        "the readable partition waited for its record, the unknown one answered last"
    );
    let producer = later(b"second");
    let r = c
        .send(&fetch(id, 1, vec![topic("s3", vec![part(0, 1)])], 5_000), V)
        .await;
    producer.await.unwrap();
    let got = answered(&r);
    assert_eq!(got[0], ("s3".into(), 0, 0, 2, vec!["second".into()]));
    assert_eq!(
        (got[1].1, got[1].2),
        (0, ResponseError::UnknownTopicOrPartition.code())
    );
    b.stop().await;
}

/// `max_incremental_fetch_session_cache_slots = 0`: every full fetch is served with no
/// session (id 0), which tells the client to keep sending full fetches.
#[tokio::test]
async fn no_slots_no_sessions() {
    let b = TestBroker::start(Config {
        memory: true,
        max_incremental_fetch_session_cache_slots: 0,
        ..Config::default()
    })
    .await;
    let mut c = b.client().await;
    create(&mut c, "s4", 2).await;
    produce(&mut c, "s4", 0, &[b"x"]).await;
    let r = c
        .send(
            &fetch(0, 0, vec![topic("s4", vec![part(0, 0), part(1, 0)])], 0),
            V,
        )
        .await;
    assert_eq!((r.error_code, r.session_id), (0, 0));
    assert_eq!(parts_of(&r).len(), 2);
    b.stop().await;
}

/// Topic-id sessions (v13+): keyed by id; a log start moved by DeleteRecords is news.
#[tokio::test]
async fn an_id_session_reports_a_moved_log_start() {
    let b = TestBroker::memory().await;
    let mut c = b.client().await;
    let id_s5 = create(&mut c, "s5", 2).await;
    produce(&mut c, "s5", 0, &[b"a", b"b", b"c"]).await;
    let by_id = |parts| {
        FetchTopic::default()
            .with_topic_id(id_s5)
            .with_partitions(parts)
    };
    let r = c
        .send(
            &fetch(0, 0, vec![by_id(vec![part(0, 3), part(1, 0)])], 0),
            13,
        )
        .await;
    let id = r.session_id;
    assert!(id > 0);
    assert_eq!(r.responses.len(), 1);
    assert_eq!(r.responses[0].topic_id, id_s5);
    let r = c.send(&fetch(id, 1, vec![], 0), 13).await;
    assert!(r.responses.is_empty());
    let del = DeleteRecordsRequest::default().with_topics(vec![
        kafka_protocol::messages::delete_records_request::DeleteRecordsTopic::default()
            .with_name(common::topic_name("s5"))
            .with_partitions(vec![
                kafka_protocol::messages::delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(2),
            ]),
    ]);
    let d = c.send(&del, 2).await;
    assert_eq!(d.topics[0].partitions[0].error_code, 0);
    let r = c.send(&fetch(id, 2, vec![], 0), 13).await;
    assert_eq!(r.responses.len(), 1);
    let p = &r.responses[0].partitions;
    assert_eq!(
        (p.len(), p[0].partition_index, p[0].log_start_offset),
        (1, 0, 2)
    );
    // A v12 request on an id session: refused.
    let r = c.send(&fetch(id, 3, vec![], 0), 12).await;
    assert_eq!(r.error_code, ResponseError::FetchSessionTopicIdError.code());
    b.stop().await;
}
