//! Seed inputs of the fuzz targets, built with the real encoders: requests of every served
//! API (kafka-protocol's encoders), record batches in every codec, SCRAM exchanges computed
//! as a client does, internal records as the coordinators write them. `examples/fuzz_seeds.rs`
//! writes them to `fuzz/corpus/<target>/`; the replay test reads those files.

use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::*;
use crate::log::validate::STORED_DECOMPRESSED_MAX_BYTES;

/// `(file name, bytes)` of one target's seeds.
pub type Seeds = Vec<(String, Vec<u8>)>;

/// The seeds of `target` (a name of [`super::TARGETS`]).
pub fn of(target: &str) -> Seeds {
    match target {
        "request_decoder" => requests(),
        "record_batches" => record_batches(),
        "internal_records" => internal_records(),
        "sasl_messages" => sasl_messages(),
        _ => Vec::new(),
    }
}

/// A request frame (no size prefix): header v1/v2 as the API and version need, then the body.
pub fn frame(kind: &RequestKind, api: ApiKey, version: i16) -> Option<Vec<u8>> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("fuzz-client")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api.request_header_version(version))
        .ok()?;
    kind.encode(&mut buf, version).ok()?;
    Some(buf.to_vec())
}

macro_rules! default_requests {
    ($($api:ident),* $(,)?) => {
        /// An empty (default) request of `api`.
        fn default_request(api: ApiKey) -> Option<RequestKind> {
            match api {
                $(ApiKey::$api => Some(RequestKind::$api(Default::default())),)*
                _ => None,
            }
        }
    };
}

default_requests!(
    Produce,
    Fetch,
    ListOffsets,
    Metadata,
    OffsetCommit,
    OffsetFetch,
    FindCoordinator,
    JoinGroup,
    Heartbeat,
    LeaveGroup,
    SyncGroup,
    DescribeGroups,
    ListGroups,
    SaslHandshake,
    ApiVersions,
    CreateTopics,
    DeleteTopics,
    DeleteRecords,
    InitProducerId,
    OffsetForLeaderEpoch,
    AddPartitionsToTxn,
    AddOffsetsToTxn,
    EndTxn,
    WriteTxnMarkers,
    TxnOffsetCommit,
    DescribeAcls,
    CreateAcls,
    DeleteAcls,
    DescribeConfigs,
    AlterConfigs,
    DescribeLogDirs,
    SaslAuthenticate,
    CreatePartitions,
    DeleteGroups,
    ElectLeaders,
    IncrementalAlterConfigs,
    AlterPartitionReassignments,
    ListPartitionReassignments,
    OffsetDelete,
    DescribeUserScramCredentials,
    AlterUserScramCredentials,
    DescribeQuorum,
    DescribeCluster,
    DescribeTransactions,
    DescribeProducers,
    ListTransactions,
    ListConfigResources,
    DescribeTopicPartitions,
);

fn s(text: &'static str) -> StrBytes {
    StrBytes::from_static_str(text)
}

fn topic() -> TopicName {
    TopicName(s("fuzz"))
}

/// Records as a client produces them: keys (some null), values, a header.
pub fn client_records(n: usize, ts: i64) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let mut r = Record {
                transactional: false,
                control: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: ts + i as i64,
                key: (i % 3 != 1).then(|| Bytes::from(format!("key-{i}"))),
                value: (i % 4 != 3).then(|| Bytes::from(format!("value-{i}-").repeat(i % 5 + 1))),
                headers: Default::default(),
                delete_horizon: false,
            };
            if i % 2 == 0 {
                r.headers.insert(
                    StrBytes::from_string(format!("h{i}")),
                    Some(Bytes::from("hv")),
                );
            }
            r
        })
        .collect()
}

/// `records` as one v2 batch with `compression`.
pub fn encode(records: &[Record], compression: Compression) -> Vec<u8> {
    let mut buf = BytesMut::new();
    // Encoding records built here cannot fail; an empty set marks the impossible.
    if RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .is_err()
    {
        return Vec::new();
    }
    buf.to_vec()
}

const CODECS: [(Compression, &str); 5] = [
    (Compression::None, "none"),
    (Compression::Gzip, "gzip"),
    (Compression::Snappy, "snappy"),
    (Compression::Lz4, "lz4"),
    (Compression::Zstd, "zstd"),
];

fn requests() -> Seeds {
    let out = std::cell::RefCell::new(Seeds::new());
    let push = |name: &str, kind: RequestKind, api: ApiKey, versions: &[i16]| {
        for &v in versions {
            if let Some(f) = frame(&kind, api, v) {
                out.borrow_mut().push((format!("{name}-v{v}"), f));
            }
        }
    };
    // Every served API, empty, at its lowest and highest version (Produce from v3, the
    // first kafka-protocol decodes; v0-2 get a legacy seed below).
    for &(api, min, max) in versions::SUPPORTED {
        let Some(kind) = default_request(api) else {
            continue;
        };
        let min = if api == ApiKey::Produce {
            versions::PRODUCE_MIN_DECODABLE
        } else {
            min
        };
        let vs: Vec<i16> = if min == max {
            vec![min]
        } else {
            vec![min, max]
        };
        push(&format!("{api:?}-empty"), kind, api, &vs);
    }
    // Requests with content.
    for (compression, name) in CODECS {
        let produce = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(topic())
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(encode(
                            &client_records(3, 1_700_000_000_000),
                            compression,
                        )))),
                ])]);
        let vs: &[i16] = if compression == Compression::None {
            &[3, 9, 11]
        } else {
            &[11]
        };
        push(
            &format!("Produce-{name}"),
            RequestKind::Produce(produce),
            ApiKey::Produce,
            vs,
        );
    }
    // Produce v2 (refused by the legacy path): v3's body without the transactional id.
    if let Some(mut f) = frame(
        &RequestKind::Produce(ProduceRequest::default().with_acks(1).with_topic_data(vec![
            produce_request::TopicProduceData::default().with_name(topic()),
        ])),
        ApiKey::Produce,
        3,
    ) {
        // header v1: key, version, correlation id, client id (i16 length + bytes)
        let client_id_len = i16::from_be_bytes([f[8], f[9]]) as usize;
        let body_at = 10 + client_id_len;
        f.drain(body_at..body_at + 2);
        f[2..4].copy_from_slice(&2i16.to_be_bytes());
        out.borrow_mut().push(("Produce-legacy-v2".into(), f));
    }
    let fetch = FetchRequest::default()
        .with_max_wait_ms(100)
        .with_max_bytes(1 << 20)
        .with_isolation_level(1)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(topic())
            .with_topic_id(uuid::Uuid::from_u128(0x1234))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(1)
                .with_fetch_offset(42)
                .with_partition_max_bytes(1 << 20)])]);
    push(
        "Fetch",
        RequestKind::Fetch(fetch),
        ApiKey::Fetch,
        &[4, 12, 17],
    );
    let list = ListOffsetsRequest::default().with_topics(vec![
        list_offsets_request::ListOffsetsTopic::default()
            .with_name(topic())
            .with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default().with_timestamp(-3),
                list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(1)
                    .with_timestamp(1_700_000_000_000),
            ]),
    ]);
    push(
        "ListOffsets",
        RequestKind::ListOffsets(list),
        ApiKey::ListOffsets,
        &[1, 10],
    );
    let meta = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
    ]));
    push(
        "Metadata",
        RequestKind::Metadata(meta),
        ApiKey::Metadata,
        &[0, 9, 13],
    );
    let create = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(topic())
            .with_num_partitions(3)
            .with_replication_factor(1)
            .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                .with_name(s("cleanup.policy"))
                .with_value(Some(s("compact")))]),
    ]);
    push(
        "CreateTopics",
        RequestKind::CreateTopics(create),
        ApiKey::CreateTopics,
        &[2, 7],
    );
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(s("fuzz-group")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(100)
        .with_member_id(s("m-1"))
        .with_group_instance_id(Some(s("i-1")))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(s("range"))
        .with_metadata(Bytes::from_static(b"\0\0\0\0\0\x01\0\x04fuzz"))]);
    push(
        "JoinGroup",
        RequestKind::JoinGroup(join),
        ApiKey::JoinGroup,
        &[0, 5, 9],
    );
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("fuzz-group")))
        .with_generation_id_or_member_epoch(1)
        .with_member_id(s("m-1"))
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_committed_offset(3)
                        .with_committed_metadata(Some(s("meta"))),
                ]),
        ]);
    push(
        "OffsetCommit",
        RequestKind::OffsetCommit(commit),
        ApiKey::OffsetCommit,
        &[2, 9],
    );
    let fetch_offsets = OffsetFetchRequest::default()
        .with_group_id(GroupId(s("fuzz-group")))
        .with_topics(Some(vec![
            offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(topic())
                .with_partition_indexes(vec![0, 1]),
        ]))
        .with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("fuzz-group"))),
        ]);
    push(
        "OffsetFetch",
        RequestKind::OffsetFetch(fetch_offsets),
        ApiKey::OffsetFetch,
        &[1, 7, 8, 9],
    );
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s("tx")))
        .with_v3_and_below_producer_id(ProducerId(5))
        .with_v3_and_below_topics(vec![
            add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                .with_name(topic())
                .with_partitions(vec![0, 1]),
        ]);
    push(
        "AddPartitionsToTxn",
        RequestKind::AddPartitionsToTxn(add),
        ApiKey::AddPartitionsToTxn,
        &[0, 3],
    );
    let sasl = SaslAuthenticateRequest::default()
        .with_auth_bytes(Bytes::from(scram_first("fuzz", "clientNonce")));
    push(
        "SaslAuthenticate",
        RequestKind::SaslAuthenticate(sasl),
        ApiKey::SaslAuthenticate,
        &[0, 2],
    );
    let handshake = SaslHandshakeRequest::default().with_mechanism(s("SCRAM-SHA-256"));
    push(
        "SaslHandshake",
        RequestKind::SaslHandshake(handshake),
        ApiKey::SaslHandshake,
        &[1],
    );
    let configs = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("fuzz"))
            .with_configs(vec![
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(s("retention.ms"))
                    .with_config_operation(0)
                    .with_value(Some(s("60000"))),
            ]),
    ]);
    push(
        "IncrementalAlterConfigs",
        RequestKind::IncrementalAlterConfigs(configs),
        ApiKey::IncrementalAlterConfigs,
        &[0, 1],
    );
    let acls = CreateAclsRequest::default().with_creations(vec![
        create_acls_request::AclCreation::default()
            .with_resource_type(2)
            .with_resource_name(s("fuzz"))
            .with_resource_pattern_type(3)
            .with_principal(s("User:alice"))
            .with_host(s("*"))
            .with_operation(3)
            .with_permission_type(3),
    ]);
    push(
        "CreateAcls",
        RequestKind::CreateAcls(acls),
        ApiKey::CreateAcls,
        &[1, 3],
    );
    let scram = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
            .with_name(s("alice"))
            .with_mechanism(1)
            .with_iterations(4096)
            .with_salt(Bytes::from_static(b"salt"))
            .with_salted_password(Bytes::from(vec![7u8; 32])),
    ]);
    push(
        "AlterUserScramCredentials",
        RequestKind::AlterUserScramCredentials(scram),
        ApiKey::AlterUserScramCredentials,
        &[0],
    );
    let markers = WriteTxnMarkersRequest::default().with_markers(vec![
        write_txn_markers_request::WritableTxnMarker::default()
            .with_producer_id(ProducerId(5))
            .with_producer_epoch(1)
            .with_transaction_result(true)
            .with_coordinator_epoch(2)
            .with_topics(vec![
                write_txn_markers_request::WritableTxnMarkerTopic::default()
                    .with_name(topic())
                    .with_partition_indexes(vec![0]),
            ]),
    ]);
    push(
        "WriteTxnMarkers",
        RequestKind::WriteTxnMarkers(markers),
        ApiKey::WriteTxnMarkers,
        &[1],
    );
    let paged = DescribeTopicPartitionsRequest::default()
        .with_topics(vec![
            describe_topic_partitions_request::TopicRequest::default().with_name(topic()),
        ])
        .with_response_partition_limit(1);
    push(
        "DescribeTopicPartitions",
        RequestKind::DescribeTopicPartitions(paged),
        ApiKey::DescribeTopicPartitions,
        &[0],
    );
    out.into_inner()
}

fn record_batches() -> Seeds {
    let mut out = Seeds::new();
    let ts = 1_700_000_000_000;
    for (compression, name) in CODECS {
        for n in [1usize, 7] {
            let b = encode(&client_records(n, ts), compression);
            // Selectors: CRCs as they are / fixed; the second config's codec varies.
            out.push((format!("{name}-{n}"), [&[0x00][..], &b].concat()));
            out.push((
                format!("{name}-{n}-fix-zstd"),
                [&[0x01 | 5 << 1][..], &b].concat(),
            ));
        }
        let b = encode(&client_records(3, ts), compression);
        out.push((
            format!("{name}-to-gzip"),
            [&[0x01 | 2 << 1][..], &b].concat(),
        ));
        out.push((
            format!("{name}-to-lz4-lat"),
            [&[0x11 | 4 << 1][..], &b].concat(),
        ));
    }
    // Idempotent and transactional batches, a multi-batch set, a marker.
    let mut idem = client_records(4, ts);
    for (i, r) in idem.iter_mut().enumerate() {
        r.producer_id = 9;
        r.producer_epoch = 2;
        r.sequence = i as i32;
        r.transactional = true;
    }
    let idem = encode(&idem, Compression::Lz4);
    out.push(("transactional-lz4".into(), [&[0x01][..], &idem].concat()));
    let set = [
        encode(&client_records(2, ts), Compression::None),
        encode(&client_records(3, ts + 10), Compression::Snappy),
        idem.clone(),
    ]
    .concat();
    out.push((
        "three-batches".into(),
        [&[0x01 | 3 << 1][..], &set].concat(),
    ));
    let marker = crate::log::txn::encode_marker(9, 2, true, 1, ts);
    out.push(("commit-marker".into(), [&[0x01][..], &marker].concat()));
    // Renumbering: inner offsets 0, 5, 2 (rebuilt when read).
    let mut odd = client_records(3, ts);
    odd[1].offset = 5;
    let odd = encode(&odd, Compression::Gzip);
    out.push((
        "odd-offsets-gzip".into(),
        [&[0x01 | 1 << 1][..], &odd].concat(),
    ));
    // Hostile: a record claiming 2^31 headers, and a bomb larger than the fuzz bound.
    let hostile = hostile_header_count_batch();
    out.push(("header-count-2-31".into(), [&[0x01][..], &hostile].concat()));
    let mut bomb = client_records(1, ts);
    bomb[0].value = Some(Bytes::from(vec![0u8; FUZZ_BATCH_BYTES + 1024]));
    for (compression, name) in &CODECS[1..] {
        let b = encode(&bomb, *compression);
        if b.len() < 16 * 1024 {
            out.push((format!("bomb-{name}"), [&[0x01 | 2 << 1][..], &b].concat()));
        }
    }
    const { assert!(FUZZ_BATCH_BYTES < STORED_DECOMPRESSED_MAX_BYTES) };
    out
}

/// A 274-byte uncompressed batch of one record whose header count is 2^31 (the bug
/// kafka-protocol's decoder had: a 2.1 GB table sized from it).
pub fn hostile_header_count_batch() -> Vec<u8> {
    let mut body = vec![0u8, 0, 0, 1]; // attributes, timestamp delta, offset delta, null key
    body.extend_from_slice(&[0x90, 0x03]); // value length 200
    body.extend_from_slice(&[b'v'; 200]);
    body.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x10]); // 2^31 headers
    let mut section = vec![];
    let mut len = (body.len() as u64) << 1;
    while len >= 0x80 {
        section.push(len as u8 | 0x80);
        len >>= 7;
    }
    section.push(len as u8);
    section.extend_from_slice(&body);
    let template = encode(
        &[batch::plain_record(
            0,
            Some(Bytes::from_static(b"k")),
            None,
            1,
        )],
        Compression::None,
    );
    let mut out = template[..HEADER_BYTES.min(template.len())].to_vec();
    out.extend_from_slice(&section);
    if out.len() >= HEADER_BYTES {
        let len = (out.len() - 12) as i32;
        out[8..12].copy_from_slice(&len.to_be_bytes());
        fix_crcs(&mut out);
    }
    out
}

/// A key/value pair in [`internal_records`]' layout (selector, u16 key length, key, value).
fn split_layout(selector: u8, key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value.unwrap_or_default());
    out
}

fn internal_records() -> Seeds {
    use crate::coordinator::Shard;
    use crate::groups::store::{CommittedOffset, GroupRecord, MemberRecord, OffsetsRecord};
    use crate::meta::records::{ConfigResource, Endpoint, MetaBatch, MetaRecord};
    let mut out = Seeds::new();
    let offsets = vec![
        OffsetsRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            value: Some(CommittedOffset {
                offset: 42,
                leader_epoch: 1,
                metadata: "m".into(),
                commit_timestamp_ms: 1000,
            }),
            producer: None,
        },
        OffsetsRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 4,
            value: None,
            producer: None,
        },
        OffsetsRecord::Group {
            group: "g".into(),
            value: Some(GroupRecord {
                protocol_type: "consumer".into(),
                generation: 3,
                protocol: Some("range".into()),
                leader: Some("m-1".into()),
                members: vec![MemberRecord {
                    member_id: "m-1".into(),
                    instance_id: Some("i-1".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 1000,
                    session_timeout_ms: 10_000,
                    subscription: Bytes::from_static(b"\0\0\0\0\0\x01\0\x01t"),
                    assignment: Bytes::from_static(b"\0\0\0\0\0\x01\0\x01t\0\0\0\x01\0\0\0\x03"),
                }],
            }),
        },
        OffsetsRecord::Group {
            group: "g".into(),
            value: None,
        },
    ];
    let txn = crate::txn::coordinator::TxnMetadata {
        transactional_id: "tx".into(),
        producer_id: 9,
        producer_epoch: 2,
        timeout_ms: 60_000,
        state: crate::txn::coordinator::TxnState::Ongoing,
        partitions: [("t".to_string(), 0), ("t".to_string(), 1)].into(),
        groups: ["g".to_string()].into(),
        start_ms: 1000,
        last_update_ms: 2000,
    };
    let txn_records = [crate::txn::coordinator::TxnRecord::put(&txn)];
    let stored = [
        crate::groups::shard::GroupShard::encode(&offsets).unwrap_or_default(),
        crate::txn::coordinator::TxnShard::encode(&txn_records).unwrap_or_default(),
        crate::log::txn::encode_marker(9, 2, true, 1, 3000),
    ];
    // Each record alone, in the split layout (offsets: selector 0; transactions: 1).
    for (selector, set) in [(0u8, &stored[0]), (1, &stored[1])] {
        for (_, batch) in validate::decode_stored_batches(set, FUZZ_BATCH_BYTES) {
            let Ok(batch) = batch else { continue };
            for (i, r) in batch.iter().enumerate() {
                let key = r.key.clone().unwrap_or_default();
                out.push((
                    format!("split-{selector}-{i}"),
                    split_layout(selector, &key, r.value.as_deref()),
                ));
            }
        }
    }
    // A transactional offset commit, then its marker (selector bits 3, 4).
    out.push((
        "split-control".into(),
        split_layout(0x08, b"\0\0\0\x01", Some(b"\0\0\0\0")),
    ));
    // The load path: the stored batches as written, one set.
    out.push(("stored-offsets".into(), [&[2u8][..], &stored[0]].concat()));
    out.push(("stored-all".into(), [&[2u8][..], &stored.concat()].concat()));
    // Metadata records.
    let topic_id = uuid::Uuid::from_u128(0xfeed);
    let meta = MetaBatch {
        records: vec![
            MetaRecord::ClusterId {
                id: "cluster".into(),
            },
            MetaRecord::RegisterBroker {
                id: 1,
                incarnation: uuid::Uuid::from_u128(7),
                endpoints: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "localhost".into(),
                    port: 9092,
                    security_protocol: 0,
                }],
                rack: None,
            },
            MetaRecord::UnfenceBroker { id: 1, epoch: 2 },
            MetaRecord::Topic {
                name: "t".into(),
                id: topic_id,
            },
            MetaRecord::Partition {
                topic_id,
                index: 0,
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            },
            MetaRecord::PartitionChange {
                topic_id,
                index: 0,
                isr: Some(vec![1]),
                leader: Some(1),
                replicas: None,
                elr: None,
            },
            MetaRecord::Config {
                resource: ConfigResource::Topic("t".into()),
                name: "retention.ms".into(),
                value: Some("1000".into()),
            },
            MetaRecord::ScramCredential {
                user: "alice".into(),
                mechanism: "SCRAM-SHA-256".into(),
                salt: b"salt".to_vec(),
                stored_key: vec![1; 32],
                server_key: vec![2; 32],
                iterations: 4096,
            },
            MetaRecord::ProducerIdsBlock {
                broker_id: 1,
                broker_epoch: 2,
                first: 0,
                size: 1000,
            },
            MetaRecord::RemoveTopic { id: topic_id },
        ],
    };
    let json = serde_json::to_vec(&meta).unwrap_or_default();
    out.push(("meta-batch".into(), [&[3u8][..], &json].concat()));
    // A metadata-log segment: frames of (length, CRC32C, entry JSON).
    let mut segment = Vec::new();
    for (index, payload) in [
        (1u64, openraft::EntryPayload::Blank),
        (2, openraft::EntryPayload::Normal(meta.clone())),
    ] {
        let entry: crate::meta::Entry = openraft::Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload,
        };
        let json = serde_json::to_vec(&entry).unwrap_or_default();
        segment.extend_from_slice(&(json.len() as u32).to_be_bytes());
        segment.extend_from_slice(&crc32c::crc32c(&json).to_be_bytes());
        segment.extend_from_slice(&json);
    }
    out.push(("raft-segment".into(), [&[4u8][..], &segment].concat()));
    out.push(("control-record".into(), [&[5u8][..], &stored[2]].concat()));
    out.push((
        "epoch-checkpoint".into(),
        b"\x060\n3\n0 0\n2 100\n5 1000\n".to_vec(),
    ));
    out.push((
        "hw-checkpoint".into(),
        format!(
            "\x06{}",
            crate::cluster::hw_checkpoint::format(&[(topic_id, 0, 42), (topic_id, 1, 7)])
        )
        .into_bytes(),
    ));
    let mut txn_index = vec![6u8];
    for i in 0..2i64 {
        let e = crate::log::AbortedTxn {
            producer_id: 9,
            first_offset: i * 10,
            last_offset: i * 10 + 5,
            last_stable_offset: i * 10 + 6,
        };
        let mut b = Vec::new();
        e.encode(&mut b);
        txn_index.extend_from_slice(&b);
    }
    out.push(("txn-index".into(), txn_index));
    out
}

/// SCRAM's client-first-message.
pub fn scram_first(user: &str, nonce: &str) -> Vec<u8> {
    format!("n,,n={user},r={nonce}").into_bytes()
}

/// The client-final-message a client computes for `first` against the fuzz server (its
/// fixed nonce, the fuzz credential's salt and iterations), `password` being tried.
pub fn scram_final(m: scram::Mechanism, first: &str, password: &str) -> Option<Vec<u8>> {
    let client = scram::ScramClient::of_first_message(m, first, password)?;
    let server_first = format!(
        "r={}{SCRAM_SERVER_NONCE},s={},i={SCRAM_ITERATIONS}",
        client.nonce(),
        BASE64.encode(SCRAM_SALT)
    );
    client
        .finish(server_first.as_bytes())
        .ok()
        .map(|(last, _)| last)
}

/// An unsecured JWS (`alg: none`) with `claims`.
pub fn unsecured_token(claims: &str) -> String {
    format!(
        "{}.{}.",
        B64URL.encode(br#"{"alg":"none"}"#),
        B64URL.encode(claims.as_bytes())
    )
}

fn sasl_messages() -> Seeds {
    let mut out = Seeds::new();
    for (selector, m) in [
        (0u8, scram::Mechanism::Sha256),
        (1, scram::Mechanism::Sha512),
    ] {
        for (name, first) in [
            ("plain", "n,,n=fuzz,r=clientNonce"),
            ("authzid", "n,a=fuzz,n=fuzz,r=clientNonce"),
            ("escaped", "y,,n=fu=2Czz=3D,r=abc,tokenauth=true"),
            ("extension", "n,,n=fuzz,r=clientNonce,ext=1"),
        ] {
            for (p, password) in [("ok", SCRAM_PASSWORD), ("bad", "wrong")] {
                if let Some(last) = scram_final(m, first, password) {
                    out.push((
                        format!("scram-{selector}-{name}-{p}"),
                        [&[selector][..], first.as_bytes(), &[0], &last].concat(),
                    ));
                }
            }
        }
        out.push((
            format!("scram-{selector}-unknown-user"),
            [
                &[selector | 0x08][..],
                b"n,,n=nobody,r=x\0c=biws,r=xy,p=AAAA",
            ]
            .concat(),
        ));
    }
    for (name, msg) in [
        ("plain", &b"\0fuzz\0fuzz-secret"[..]),
        ("plain-authzid", b"fuzz\0fuzz\0fuzz-secret"),
        ("plain-other", b"admin\0fuzz\0x"),
        ("plain-empty", b"\0\0"),
    ] {
        out.push((name.into(), [&[2u8][..], msg].concat()));
    }
    let now_s = OAUTH_NOW_MS / 1000;
    let good = unsecured_token(&format!(
        r#"{{"sub":"fuzz","iat":{},"exp":{},"scope":"a b"}}"#,
        now_s - 10,
        now_s + 3600
    ));
    let expired = unsecured_token(&format!(r#"{{"sub":"fuzz","exp":{}}}"#, now_s - 3600));
    for (name, token, ext) in [
        ("oauth-good", good.as_str(), ""),
        ("oauth-ext", good.as_str(), "\x01traceId=abc"),
        ("oauth-expired", expired.as_str(), ""),
    ] {
        let msg = format!("n,a=fuzz,\x01auth=Bearer {token}{ext}\x01\x01");
        out.push((
            name.into(),
            [&[3u8][..], msg.as_bytes(), &[0, 0, 1]].concat(),
        ));
    }
    let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","use":"sig","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},{"kty":"RSA","kid":"k2","alg":"RS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}]}"#;
    let header = B64URL.encode(br#"{"alg":"ES256","kid":"k1"}"#);
    let claims = B64URL.encode(format!(r#"{{"sub":"fuzz","exp":{}}}"#, now_s + 60).as_bytes());
    let token = format!("{header}.{claims}.{}", B64URL.encode([7u8; 64]));
    out.push((
        "jwks".into(),
        [&[4u8][..], jwks.as_bytes(), &[0], token.as_bytes()].concat(),
    ));
    out
}
