//! Metadata (key 3): brokers, cluster id, controller, and topics with their partitions, from
//! the metadata image (the same answer on every broker).
//! Unknown topics are auto-created when the broker and the request allow it.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use uuid::Uuid;

use super::{str_bytes, topic_name, Broker, NONE};
use crate::cluster::topics::validate_name;
use crate::security::acl::{AclOperation, ResourceType, CLUSTER_NAME};
use std::sync::Arc;

use crate::meta::image::{MetadataImage, PartitionImage, TopicImage};

/// Every topic operation allowed (no ACLs yet): READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE,
/// DESCRIBE_CONFIGS, ALTER_CONFIGS as bits of Kafka's AclOperation codes.
pub const TOPIC_OPERATIONS_ALL: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// Every cluster operation allowed: CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
/// ALTER_CONFIGS, IDEMPOTENT_WRITE.
pub const CLUSTER_OPERATIONS_ALL: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

/// Whether answering may auto-create a topic (file creation: the protocol layer then runs
/// [`handle`] on the blocking pool).
pub fn may_create_topics(broker: &Broker, req: &MetadataRequest, version: i16) -> bool {
    let allow_auto_create = version < 4 || req.allow_auto_topic_creation;
    if !(broker.config.auto_create_topics && allow_auto_create) {
        return false;
    }
    let image = broker.meta.image();
    req.topics.iter().flatten().any(|t| {
        t.name
            .as_ref()
            .is_some_and(|n| image.topic_by_name(n.0.as_str()).is_none())
    })
}

pub fn handle(
    broker: &Broker,
    req: &MetadataRequest,
    version: i16,
    listener: crate::config::SecurityProtocol,
    caller: &super::Caller,
) -> MetadataResponse {
    let include_ops = req.include_topic_authorized_operations;
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let all_topics =
        req.topics.is_none() || (version == 0 && req.topics.as_ref().is_some_and(|t| t.is_empty()));
    // One image for the answer; only an auto-creation reads the newer one it made.
    let mut image = broker.meta.image();
    let topics = if all_topics {
        // Topics the caller may not describe are left out (Kafka: never revealed).
        image
            .topics_by_name()
            .filter(|t| caller.permits(AclOperation::Describe, ResourceType::Topic, &t.name))
            .map(|t| topic_response(&image, t, include_ops, version))
            .collect()
    } else {
        let allow_auto_create = version < 4 || req.allow_auto_topic_creation;
        req.topics
            .iter()
            .flatten()
            .map(|requested| match &requested.name {
                Some(name) => {
                    let name = name.0.as_str();
                    if !caller.allowed(AclOperation::Describe, ResourceType::Topic, name) {
                        error_topic(
                            Some(name),
                            Uuid::nil(),
                            ResponseError::TopicAuthorizationFailed,
                        )
                    } else {
                        // Auto-creation needs CREATE on the cluster or the topic (Kafka).
                        let may_create = allow_auto_create
                            && (caller.permits(
                                AclOperation::Create,
                                ResourceType::Cluster,
                                CLUSTER_NAME,
                            ) || caller.allowed(
                                AclOperation::Create,
                                ResourceType::Topic,
                                name,
                            ));
                        by_name(broker, &mut image, name, may_create, include_ops, version)
                    }
                }
                None => match image.topic(&requested.topic_id) {
                    Some(t)
                        if !caller.allowed(
                            AclOperation::Describe,
                            ResourceType::Topic,
                            &t.name,
                        ) =>
                    {
                        error_topic(
                            None,
                            requested.topic_id,
                            ResponseError::TopicAuthorizationFailed,
                        )
                    }
                    _ => by_id(&image, requested.topic_id, include_ops, version),
                },
            })
            .collect()
    };
    let mut topics: Vec<MetadataResponseTopic> = topics;
    if include_ops && caller.enforcing() {
        // The caller's own operations on each topic it was answered (Kafka's
        // `authorizedOperations`); without an authorizer every operation stays set.
        for t in topics.iter_mut().filter(|t| t.error_code == NONE) {
            if let Some(name) = &t.name {
                t.topic_authorized_operations = caller.authorized_operations(
                    ResourceType::Topic,
                    name.0.as_str(),
                    TOPIC_OPERATIONS_ALL,
                );
            }
        }
    }
    MetadataResponse::default()
        .with_brokers(
            image
                .live_brokers()
                .filter_map(|b| {
                    let e = b.endpoint(listener)?;
                    Some(
                        MetadataResponseBroker::default()
                            .with_node_id(BrokerId(b.id))
                            .with_host(str_bytes(e.host.clone()))
                            .with_port(i32::from(e.port))
                            .with_rack(b.rack.clone().map(str_bytes)),
                    )
                })
                .collect(),
        )
        .with_cluster_id(Some(str_bytes(broker.node.cluster_id.clone())))
        .with_controller_id(super::admin_controller_id(broker))
        .with_topics(topics)
        .with_cluster_authorized_operations(
            if req.include_cluster_authorized_operations && (8..=10).contains(&version) {
                caller.authorized_operations(
                    ResourceType::Cluster,
                    CLUSTER_NAME,
                    CLUSTER_OPERATIONS_ALL,
                )
            } else {
                i32::MIN
            },
        )
}

fn by_name(
    broker: &Broker,
    image: &mut Arc<MetadataImage>,
    name: &str,
    auto_create: bool,
    include_ops: bool,
    version: i16,
) -> MetadataResponseTopic {
    if validate_name(name).is_err() {
        return error_topic(
            Some(name),
            Uuid::nil(),
            ResponseError::InvalidTopicException,
        );
    }
    if image.topic_by_name(name).is_none()
        && broker.topic_or_auto_create(name, auto_create).is_some()
    {
        *image = broker.meta.image();
    }
    let found = image.topic_by_name(name).cloned();
    match found {
        Some(t) => topic_response(image, &t, include_ops, version),
        None => error_topic(
            Some(name),
            Uuid::nil(),
            ResponseError::UnknownTopicOrPartition,
        ),
    }
}

fn by_id(
    image: &MetadataImage,
    id: Uuid,
    include_ops: bool,
    version: i16,
) -> MetadataResponseTopic {
    match image.topic(&id) {
        Some(t) => topic_response(image, t, include_ops, version),
        None => error_topic(None, id, ResponseError::UnknownTopicId),
    }
}

fn error_topic(name: Option<&str>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(topic_name))
        .with_topic_id(id)
}

/// One partition as Metadata reports it, after Kafka's `KRaftMetadataCache`: a leader whose
/// broker is not registered (or none) is answered as leader -1 with LEADER_NOT_AVAILABLE;
/// `offline_replicas` lists the replicas whose broker is fenced or not registered. Version 0
/// (`filter_unavailable`) lists only alive replicas and ISR members, and answers
/// REPLICA_NOT_AVAILABLE when it left one out.
fn partition_response(
    image: &MetadataImage,
    p: &PartitionImage,
    index: i32,
    filter_unavailable: bool,
) -> MetadataResponsePartition {
    let alive = |ids: &[i32]| -> Vec<BrokerId> {
        ids.iter()
            .copied()
            .filter(|&id| !filter_unavailable || image.is_alive(id))
            .map(BrokerId)
            .collect()
    };
    let (replicas, isr) = (alive(&p.replicas), alive(&p.isr));
    let leader = image.reported_leader(p);
    let error = match leader {
        None => ResponseError::LeaderNotAvailable.code(),
        Some(_) if replicas.len() < p.replicas.len() || isr.len() < p.isr.len() => {
            ResponseError::ReplicaNotAvailable.code()
        }
        Some(_) => NONE,
    };
    MetadataResponsePartition::default()
        .with_error_code(error)
        .with_partition_index(index)
        .with_leader_id(BrokerId(leader.unwrap_or(-1)))
        .with_leader_epoch(p.leader_epoch)
        .with_replica_nodes(replicas)
        .with_isr_nodes(isr)
        .with_offline_replicas(
            image
                .offline_replicas(p)
                .into_iter()
                .map(BrokerId)
                .collect(),
        )
}

fn topic_response(
    image: &MetadataImage,
    topic: &TopicImage,
    include_ops: bool,
    version: i16,
) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .zip(0..)
        .map(|(p, index)| partition_response(image, p, index, version == 0))
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(NONE)
        .with_name(Some(topic_name(topic.name.clone())))
        .with_topic_id(topic.id)
        .with_is_internal(topic.is_internal())
        .with_partitions(partitions)
        .with_topic_authorized_operations(if include_ops {
            TOPIC_OPERATIONS_ALL
        } else {
            i32::MIN
        })
}
