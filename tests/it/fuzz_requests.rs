//! Mutation fuzzing of the whole request path, handlers included: valid requests of every
//! served API and version (built here, plus the request_decoder seed corpus of `fuzz/`) are
//! corrupted by `ottla::fuzzing::Mutator` (the mutator of `tests/fuzz_replay.rs`, which fuzzes
//! the decoders alone) and fed to the protocol layer of an in-process broker. Every outcome
//! must be an answer or a closed connection: no panic, no abort, no hang. Deterministic (fixed
//! seed); `OTTLA_FUZZ_ITERATIONS` raises the count.

use crate::common;

use bytes::Bytes;
use common::{batch, encode_request, try_encode_request};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::records::Compression;
use ottla::config::Config;
use ottla::fuzzing::Mutator;
use ottla::protocol::{handle_frame, versions::SUPPORTED, Outcome};
use ottla::server::Server;

fn push<R: Request>(out: &mut Vec<Vec<u8>>, req: R, versions: (i16, i16)) {
    for v in versions.0..=versions.1 {
        // Some defaults cannot be encoded at every version; those seeds are simply skipped.
        if let Some(frame) = try_encode_request(&req, v, 1) {
            out.push(frame[4..].to_vec());
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let topic = TopicName(StrBytes::from_static_str("fuzz"));
    let range = |k: ApiKey| {
        let (_, min, max) = *SUPPORTED.iter().find(|(key, _, _)| *key == k).unwrap();
        (min.max(if k == ApiKey::Produce { 3 } else { min }), max)
    };
    let mut out = Vec::new();
    let produce =
        ProduceRequest::default()
            .with_acks(1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic.clone())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch(&[b"a", b"bb"], Compression::Gzip)))])]);
    push(&mut out, produce, range(ApiKey::Produce));
    let fetch = FetchRequest::default()
        .with_max_bytes(1 << 20)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(topic.clone())
            .with_partitions(vec![
                fetch_request::FetchPartition::default().with_partition_max_bytes(1 << 20)
            ])]);
    push(&mut out, fetch, range(ApiKey::Fetch));
    let list = ListOffsetsRequest::default().with_topics(vec![
        list_offsets_request::ListOffsetsTopic::default()
            .with_name(topic.clone())
            .with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default().with_timestamp(-3)
            ]),
    ]);
    push(&mut out, list, range(ApiKey::ListOffsets));
    let meta = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(topic.clone())),
    ]));
    push(&mut out, meta, range(ApiKey::Metadata));
    push(
        &mut out,
        ApiVersionsRequest::default(),
        range(ApiKey::ApiVersions),
    );
    let create = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("fz2")))
            .with_num_partitions(2)
            .with_replication_factor(1),
    ]);
    push(&mut out, create, range(ApiKey::CreateTopics));
    let delete = DeleteTopicsRequest::default().with_topic_names(vec![topic.clone()]);
    push(&mut out, delete, range(ApiKey::DeleteTopics));
    push(
        &mut out,
        InitProducerIdRequest::default().with_transactional_id(None),
        range(ApiKey::InitProducerId),
    );
    let describe = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("fuzz")),
    ]);
    push(&mut out, describe, range(ApiKey::DescribeConfigs));
    let grow = CreatePartitionsRequest::default().with_topics(vec![
        create_partitions_request::CreatePartitionsTopic::default()
            .with_name(topic.clone())
            .with_count(3),
    ]);
    push(&mut out, grow, range(ApiKey::CreatePartitions));
    push(
        &mut out,
        DescribeClusterRequest::default(),
        range(ApiKey::DescribeCluster),
    );
    let paged = DescribeTopicPartitionsRequest::default()
        .with_topics(vec![
            describe_topic_partitions_request::TopicRequest::default().with_name(topic.clone()),
        ])
        .with_response_partition_limit(1);
    push(&mut out, paged, range(ApiKey::DescribeTopicPartitions));
    let log_dirs = DescribeLogDirsRequest::default().with_topics(Some(vec![
        describe_log_dirs_request::DescribableLogDirTopic::default()
            .with_topic(topic.clone())
            .with_partitions(vec![0, 1]),
    ]));
    push(&mut out, log_dirs, range(ApiKey::DescribeLogDirs));
    push(
        &mut out,
        DescribeLogDirsRequest::default().with_topics(None),
        range(ApiKey::DescribeLogDirs),
    );
    let alter = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("fuzz"))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_static_str("60000")))]),
    ]);
    push(&mut out, alter, range(ApiKey::AlterConfigs));
    let incremental = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("fuzz"))
            .with_configs(vec![
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("cleanup.policy"))
                    .with_config_operation(2)
                    .with_value(Some(StrBytes::from_static_str("compact"))),
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_config_operation(1)
                    .with_value(None),
            ]),
    ]);
    push(
        &mut out,
        incremental,
        range(ApiKey::IncrementalAlterConfigs),
    );
    let delete_records = DeleteRecordsRequest::default().with_topics(vec![
        delete_records_request::DeleteRecordsTopic::default()
            .with_name(topic.clone())
            .with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default().with_offset(1),
            ]),
    ]);
    push(&mut out, delete_records, range(ApiKey::DeleteRecords));
    let epochs = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(topic.clone())
                .with_partitions(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                        .with_current_leader_epoch(-1)
                        .with_leader_epoch(0),
                ]),
        ]);
    push(&mut out, epochs, range(ApiKey::OffsetForLeaderEpoch));
    // Consumer groups.
    let group = GroupId(StrBytes::from_static_str("fuzz-group"));
    let member = StrBytes::from_static_str("m");
    push(
        &mut out,
        FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str("fuzz-group"))
            .with_coordinator_keys(vec![StrBytes::from_static_str("fuzz-group")]),
        range(ApiKey::FindCoordinator),
    );
    push(
        &mut out,
        JoinGroupRequest::default()
            .with_group_id(group.clone())
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(100)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(Bytes::from_static(b"\0\0\0\0\0\x01\0\x04fuzz"))]),
        range(ApiKey::JoinGroup),
    );
    push(
        &mut out,
        SyncGroupRequest::default()
            .with_group_id(group.clone())
            .with_generation_id(1)
            .with_member_id(member.clone())
            .with_assignments(vec![
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(member.clone())
                    .with_assignment(Bytes::from_static(b"x")),
            ]),
        range(ApiKey::SyncGroup),
    );
    push(
        &mut out,
        HeartbeatRequest::default()
            .with_group_id(group.clone())
            .with_generation_id(1)
            .with_member_id(member.clone()),
        range(ApiKey::Heartbeat),
    );
    push(
        &mut out,
        LeaveGroupRequest::default()
            .with_group_id(group.clone())
            .with_member_id(member.clone())
            .with_members(vec![
                leave_group_request::MemberIdentity::default().with_member_id(member.clone())
            ]),
        range(ApiKey::LeaveGroup),
    );
    push(
        &mut out,
        OffsetCommitRequest::default()
            .with_group_id(group.clone())
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic.clone())
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_committed_offset(3),
                    ]),
            ]),
        range(ApiKey::OffsetCommit),
    );
    push(
        &mut out,
        OffsetFetchRequest::default()
            .with_group_id(group.clone())
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(topic.clone())
                    .with_partition_indexes(vec![0, 1]),
            ]))
            .with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(group.clone()),
            ]),
        range(ApiKey::OffsetFetch),
    );
    push(
        &mut out,
        ListGroupsRequest::default(),
        range(ApiKey::ListGroups),
    );
    push(
        &mut out,
        DescribeGroupsRequest::default().with_groups(vec![group.clone()]),
        range(ApiKey::DescribeGroups),
    );
    push(
        &mut out,
        DeleteGroupsRequest::default().with_groups_names(vec![group.clone()]),
        range(ApiKey::DeleteGroups),
    );
    push(
        &mut out,
        OffsetDeleteRequest::default()
            .with_group_id(group)
            .with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(topic.clone())
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default(),
                    ]),
            ]),
        range(ApiKey::OffsetDelete),
    );
    out
}

/// How long a group join or sync frame is given before it counts as waiting for a rebalance.
const GROUP_WAIT: std::time::Duration = std::time::Duration::from_millis(200);
/// Any other request not answered within this is a hang (generous: the machine is shared).
const HANG: std::time::Duration = std::time::Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_never_crash_the_broker() {
    let server = Server::bind(Config {
        memory: true,
        listen: vec!["127.0.0.1:0".into()],
        fetch_max_wait_ms: 0,
        ..Config::default()
    })
    .await
    .unwrap();
    let broker = server.broker();
    broker
        .admin_create_topic("fuzz", Some(2), Default::default())
        .await
        .unwrap();
    let mut seeds = seeds();
    let corpus =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/request_decoder");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .expect("the request_decoder corpus")
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    seeds.extend(files.iter().map(|p| std::fs::read(p).expect("corpus file")));
    assert!(
        seeds.len() > 50,
        "every served API contributes seeds ({})",
        seeds.len()
    );
    let iterations: usize = std::env::var("OTTLA_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut rng = Mutator::new(0x9e37_79b9_7f4a_7c15);
    let (mut answered, mut closed, mut silent, mut pending) = (0, 0, 0, 0);
    for _ in 0..iterations {
        let seed = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let frame = Bytes::from(rng.mutate(seed, other));
        // Only a group join or sync may legitimately wait (a rebalance waiting for members
        // that never rejoin, up to the client-chosen rebalance timeout): such frames may be
        // left pending. Any other request that does not answer promptly is a hang: it fails.
        let api_key = (frame.len() >= 2).then(|| i16::from_be_bytes([frame[0], frame[1]]));
        let may_wait = matches!(api_key, Some(k) if k == ApiKey::JoinGroup as i16 || k == ApiKey::SyncGroup as i16);
        let limit = if may_wait { GROUP_WAIT } else { HANG };
        match tokio::time::timeout(limit, handle_frame(&broker, frame.clone(), "fuzz")).await {
            Ok(Outcome::Respond(_)) => answered += 1,
            Ok(Outcome::Close) => closed += 1,
            Ok(Outcome::RespondAndClose(_)) => {
                answered += 1;
                closed += 1;
            }
            Ok(Outcome::NoResponse) => silent += 1,
            Err(_) if may_wait => pending += 1,
            Err(_) => panic!(
                "a request hung for {HANG:?} (api key {api_key:?}): frame {:02x?}",
                &frame[..frame.len().min(256)]
            ),
        }
    }
    println!(
        "fuzz: {iterations} frames, {answered} answered, {closed} closed, {silent} no-response, {pending} waiting (group rebalances)"
    );
    assert!(
        answered > 0 && closed > 0,
        "mutations exercise both outcomes"
    );
    // The broker still works afterwards.
    let ok = encode_request(&ApiVersionsRequest::default(), 0, 9);
    assert!(matches!(
        handle_frame(&broker, Bytes::from(ok[4..].to_vec()), "fuzz").await,
        Outcome::Respond(_)
    ));
}
