//! OffsetFetch (key 9): committed offsets of a group (v1-7) or of several groups (v8+); all of
//! a group's offsets when no topics are named. Uncommitted partitions answer offset -1;
//! with `require_stable` (v7+), partitions with a pending transactional commit answer
//! UNSTABLE_OFFSET_COMMIT. With `authorizer = "acl"`, as Kafka: the group needs DESCRIBE
//! (else GROUP_AUTHORIZATION_FAILED), a named topic DESCRIBE (else its partitions are
//! TOPIC_AUTHORIZATION_FAILED), and "all offsets" leaves out topics the caller may not describe.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use uuid::Uuid;

use kafka_protocol::error::ResponseError;

use super::{str_bytes, topic_name, Broker, NONE};
use crate::groups::CommittedOffset;

type PerTopic = Vec<(String, Vec<(i32, Result<Option<CommittedOffset>, i16>)>)>;

/// A partition's answer: its committed offset, or the error code it gets.
type Fetched = Vec<(String, i32, Result<Option<CommittedOffset>, i16>)>;

/// With `require_stable` (KIP-447), a partition whose offset a transaction is still committing
/// answers UNSTABLE_OFFSET_COMMIT (the consumer retries until the transaction ends).
/// The group's error (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS) when its coordinator is
/// not loaded here.
fn fetch(
    broker: &Broker,
    caller: &super::Caller,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Fetched, ResponseError> {
    use crate::security::acl::{AclOperation, ResourceType};
    if !caller.allowed(AclOperation::Describe, ResourceType::Group, group) {
        return Err(ResponseError::GroupAuthorizationFailed);
    }
    let coordinator = broker.groups.for_group(group)?;
    let named = topics.is_some();
    let wanted: Option<Vec<(String, i32)>> = topics.map(|ts| {
        ts.into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
            .collect()
    });
    let pending = if require_stable {
        coordinator.pending_txn_partitions(group)
    } else {
        Default::default()
    };
    // One decision per topic, not per partition.
    let mut describable: std::collections::HashMap<String, bool> = Default::default();
    let mut may_describe = |t: &str, log_denial: bool| {
        if !caller.enforcing() {
            return true;
        }
        if let Some(&known) = describable.get(t) {
            return known;
        }
        let ok = if log_denial {
            caller.allowed(AclOperation::Describe, ResourceType::Topic, t)
        } else {
            caller.permits(AclOperation::Describe, ResourceType::Topic, t)
        };
        describable.insert(t.to_string(), ok);
        ok
    };
    Ok(coordinator
        .fetch_offsets(group, wanted.as_deref())
        .into_iter()
        .filter(|(t, _, _)| named || may_describe(t, false))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|(t, p, o)| {
            if named && !may_describe(&t, true) {
                (t, p, Err(ResponseError::TopicAuthorizationFailed.code()))
            } else if pending.contains(&(t.clone(), p)) {
                (t, p, Err(ResponseError::UnstableOffsetCommit.code()))
            } else {
                (t, p, Ok(o))
            }
        })
        .collect())
}

/// Groups consecutive entries of one topic.
fn by_topic(fetched: Fetched) -> PerTopic {
    let mut out: PerTopic = Vec::new();
    for (t, p, o) in fetched {
        match out.last_mut() {
            Some((name, ps)) if *name == t => ps.push((p, o)),
            _ => out.push((t, vec![(p, o)])),
        }
    }
    out
}

fn fields(o: &Result<Option<CommittedOffset>, i16>) -> (i64, i32, String, i16) {
    match o {
        Ok(Some(o)) => (o.offset, o.leader_epoch, o.metadata.clone(), NONE),
        Ok(None) => (-1, -1, String::new(), NONE),
        Err(code) => (-1, -1, String::new(), *code),
    }
}

pub fn handle(
    broker: &Broker,
    req: &OffsetFetchRequest,
    version: i16,
    caller: &super::Caller,
) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req
            .groups
            .iter()
            .map(|g| {
                let topics = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let fetched = match fetch(
                    broker,
                    caller,
                    g.group_id.0.as_str(),
                    topics,
                    req.require_stable,
                ) {
                    Ok(f) => f,
                    Err(e) => {
                        return OffsetFetchResponseGroup::default()
                            .with_group_id(g.group_id.clone())
                            .with_error_code(e.code())
                    }
                };
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_error_code(NONE)
                    .with_topics(
                        by_topic(fetched)
                            .into_iter()
                            .map(|(t, ps)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(topic_name(t))
                                    .with_topic_id(Uuid::nil())
                                    .with_partitions(
                                        ps.into_iter()
                                            .map(|(p, o)| {
                                                let (offset, epoch, metadata, error) = fields(&o);
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(str_bytes(metadata)))
                                                    .with_error_code(error)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let fetched = match fetch(
        broker,
        caller,
        req.group_id.0.as_str(),
        topics.clone(),
        version >= 7 && req.require_stable,
    ) {
        Ok(f) => f,
        // v2+ carry the group's error at the top; v1 only per partition (the requested ones).
        Err(e) if version >= 2 => return OffsetFetchResponse::default().with_error_code(e.code()),
        Err(e) => topics
            .into_iter()
            .flatten()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p, Err(e.code()))))
            .collect(),
    };
    OffsetFetchResponse::default()
        .with_error_code(NONE)
        .with_topics(
            by_topic(fetched)
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(str_bytes(t)))
                        .with_partitions(
                            ps.into_iter()
                                .map(|(p, o)| {
                                    let (offset, epoch, metadata, error) = fields(&o);
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(if version >= 5 {
                                            epoch
                                        } else {
                                            -1
                                        })
                                        .with_metadata(Some(str_bytes(metadata)))
                                        .with_error_code(error)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}
