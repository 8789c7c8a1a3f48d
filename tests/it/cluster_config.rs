//! The cluster settings (roles, voters, rack, replication defaults) as clients see them:
//! DescribeConfigs, Metadata, DescribeCluster and CreateTopics. The quorum itself is not run
//! yet: a node with voters serves as a cluster of one.

use crate::common;

use std::collections::BTreeMap;

use common::{Client, TestBroker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use ottla::config::{Config, Voter};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const DYNAMIC_TOPIC: i8 = 1;
const STATIC_BROKER: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

fn voters() -> Vec<Voter> {
    (1..=1)
        .map(|id| Voter {
            id,
            host: "127.0.0.1".into(),
            port: 19_092 + id as u16,
        })
        .collect()
}

/// Node 1, the one voter of its quorum, in combined mode, in rack `rack-a`.
fn clustered() -> Config {
    Config {
        memory: true,
        controller_listen: Some("127.0.0.1:19093".into()),
        controller_quorum_voters: voters(),
        broker_rack: Some("rack-a".into()),
        min_insync_replicas: 2,
        ..Config::default()
    }
}

/// Every config of one resource as DescribeConfigs v4 reports it: name → (value, source).
async fn described(
    c: &mut Client,
    resource_type: i8,
    name: &str,
) -> BTreeMap<String, (Option<String>, i8)> {
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(name.into()))]);
    let r = c.send(&req, 4).await;
    assert_eq!(
        r.results[0].error_code, 0,
        "{:?}",
        r.results[0].error_message
    );
    r.results[0]
        .configs
        .iter()
        .map(|e| {
            (
                e.name.to_string(),
                (e.value.as_ref().map(|v| v.to_string()), e.config_source),
            )
        })
        .collect()
}

fn value(configs: &BTreeMap<String, (Option<String>, i8)>, name: &str) -> (Option<String>, i8) {
    configs
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} is not described"))
}

fn some(v: &str, source: i8) -> (Option<String>, i8) {
    (Some(v.to_string()), source)
}

fn create(name: &str, replication_factor: i16, configs: &[(&str, &str)]) -> CreateTopicsRequest {
    CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(name.into())))
        .with_num_partitions(1)
        .with_replication_factor(replication_factor)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(Some(StrBytes::from_string(v.to_string())))
                })
                .collect(),
        )])
}

#[tokio::test]
async fn a_single_node_reports_combined_mode_without_voters_or_rack() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let configs = described(&mut c, RESOURCE_BROKER, "1").await;
    assert_eq!(
        value(&configs, "process.roles"),
        some("broker,controller", STATIC_BROKER)
    );
    assert_eq!(value(&configs, "node.id"), some("1", STATIC_BROKER));
    assert_eq!(
        value(&configs, "controller.quorum.voters"),
        some("", STATIC_BROKER)
    );
    assert_eq!(value(&configs, "broker.rack"), (None, DEFAULT_CONFIG));
    assert_eq!(
        value(&configs, "default.replication.factor"),
        some("1", STATIC_BROKER)
    );
    assert_eq!(
        value(&configs, "min.insync.replicas"),
        some("1", STATIC_BROKER)
    );
    assert_eq!(
        value(&configs, "controller.listener.names"),
        (None, DEFAULT_CONFIG)
    );
    assert!(!value(&configs, "listeners")
        .0
        .unwrap()
        .contains("CONTROLLER"));

    let r = c
        .send(&MetadataRequest::default().with_topics(None), 12)
        .await;
    assert_eq!(r.brokers[0].rack, None);
    let r = c.send(&DescribeClusterRequest::default(), 1).await;
    assert_eq!(r.brokers[0].rack, None);
    broker.stop().await;
}

#[tokio::test]
async fn cluster_settings_are_described_and_the_rack_reported() {
    let broker = TestBroker::start(clustered()).await;
    let mut c = broker.client().await;
    let configs = described(&mut c, RESOURCE_BROKER, "").await;
    assert_eq!(
        value(&configs, "process.roles"),
        some("broker,controller", STATIC_BROKER)
    );
    assert_eq!(
        value(&configs, "controller.quorum.voters"),
        some("1@127.0.0.1:19093", STATIC_BROKER)
    );
    assert_eq!(
        value(&configs, "controller.listener.names"),
        some("CONTROLLER", STATIC_BROKER)
    );
    let listeners = value(&configs, "listeners").0.unwrap();
    assert!(
        listeners.ends_with(",CONTROLLER://127.0.0.1:19093"),
        "{listeners}"
    );
    assert_eq!(
        value(&configs, "broker.rack"),
        some("rack-a", STATIC_BROKER)
    );
    assert_eq!(
        value(&configs, "min.insync.replicas"),
        some("2", STATIC_BROKER)
    );

    for version in [1, 9, 12] {
        let r = c
            .send(&MetadataRequest::default().with_topics(None), version)
            .await;
        assert_eq!(r.brokers.len(), 1, "the one registered broker");
        assert_eq!(
            r.brokers[0].rack.as_deref(),
            Some("rack-a"),
            "Metadata v{version}"
        );
    }
    for version in 0..=1 {
        let r = c.send(&DescribeClusterRequest::default(), version).await;
        assert_eq!(r.brokers[0].rack.as_deref(), Some("rack-a"));
    }

    // A topic's min.insync.replicas defaults to the broker's.
    let r = c.send(&create("isr-default", -1, &[]), 7).await;
    assert_eq!(r.topics[0].error_code, 0);
    let topic = described(&mut c, RESOURCE_TOPIC, "isr-default").await;
    assert_eq!(
        value(&topic, "min.insync.replicas"),
        some("2", DEFAULT_CONFIG)
    );
    broker.stop().await;
}

#[tokio::test]
async fn min_insync_replicas_is_a_topic_config_stored_and_described() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let r = c
        .send(&create("isr", -1, &[("min.insync.replicas", "2")]), 7)
        .await;
    assert_eq!(r.topics[0].error_code, 0);
    let shown = r.topics[0].configs.as_ref().expect("v5+ shows configs");
    assert!(shown
        .iter()
        .any(|e| e.name.as_str() == "min.insync.replicas"
            && e.value.as_deref() == Some("2")
            && e.config_source == DYNAMIC_TOPIC));
    let topic = described(&mut c, RESOURCE_TOPIC, "isr").await;
    assert_eq!(
        value(&topic, "min.insync.replicas"),
        some("2", DYNAMIC_TOPIC)
    );

    let r = c
        .send(&create("isr-bad", -1, &[("min.insync.replicas", "0")]), 7)
        .await;
    assert_eq!(r.topics[0].error_code, ResponseError::InvalidConfig.code());

    let alter = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_static_str("isr"))
            .with_configs(vec![
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("min.insync.replicas"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_static_str("3"))),
            ]),
    ]);
    let r = c.send(&alter, 1).await;
    assert_eq!(r.responses[0].error_code, 0);
    let topic = described(&mut c, RESOURCE_TOPIC, "isr").await;
    assert_eq!(
        value(&topic, "min.insync.replicas"),
        some("3", DYNAMIC_TOPIC)
    );
    broker.stop().await;
}

#[tokio::test]
async fn replication_factor_minus_one_is_the_default_and_capped_by_live_brokers() {
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let r = c.send(&create("rf-default", -1, &[]), 7).await;
    assert_eq!(
        (r.topics[0].error_code, r.topics[0].replication_factor),
        (0, 1)
    );
    for rf in [0, -2, 2, 3] {
        let r = c.send(&create(&format!("rf{rf}"), rf, &[]), 7).await;
        assert_eq!(
            r.topics[0].error_code,
            ResponseError::InvalidReplicationFactor.code(),
            "replication factor {rf}"
        );
    }
    broker.stop().await;

    // A default above the live brokers: Kafka's answer to a factor it cannot place.
    let broker = TestBroker::start(Config {
        memory: true,
        default_replication_factor: 3,
        ..Config::default()
    })
    .await;
    let mut c = broker.client().await;
    let configs = described(&mut c, RESOURCE_BROKER, "1").await;
    assert_eq!(
        value(&configs, "default.replication.factor"),
        some("3", STATIC_BROKER)
    );
    let r = c.send(&create("rf-default", -1, &[]), 7).await;
    assert_eq!(
        r.topics[0].error_code,
        ResponseError::InvalidReplicationFactor.code()
    );
    assert!(
        r.topics[0]
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("only 1 broker(s)")),
        "{:?}",
        r.topics[0].error_message
    );
    let r = c.send(&create("rf-one", 1, &[]), 7).await;
    assert_eq!(
        (r.topics[0].error_code, r.topics[0].replication_factor),
        (0, 1)
    );
    // Auto-creation uses the default factor too, so it creates nothing.
    let r = c
        .send(
            &MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("auto"))))]))
                .with_allow_auto_topic_creation(true),
            12,
        )
        .await;
    assert_eq!(
        r.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert!(broker.broker.topics.get("auto").is_none());
    broker.stop().await;
}

#[tokio::test]
async fn describe_quorum_reports_the_metadata_log() {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    let broker = TestBroker::memory().await;
    let mut c = broker.client().await;
    let request = |topic: &str| {
        DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)])])
    };
    for version in 0..=2 {
        let r = c.send(&request("__cluster_metadata"), version).await;
        assert_eq!(r.error_code, 0);
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.error_code, 0, "v{version}");
        assert_eq!(p.leader_id, BrokerId(1));
        assert!(p.leader_epoch >= 1);
        // Registration, unfencing and the internal topics were committed.
        assert!(p.high_watermark > 3, "{}", p.high_watermark);
        assert_eq!(p.current_voters.len(), 1);
        assert_eq!(p.current_voters[0].replica_id, BrokerId(1));
        assert!(p.current_voters[0].log_end_offset >= p.high_watermark);
        assert!(p.observers.is_empty());
    }
    let r = c.send(&request("other"), 1).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    broker.stop().await;
}
