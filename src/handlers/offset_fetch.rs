//! OffsetFetch (key 9): committed offsets of a group (v1-7) or of several groups (v8+); all of
//! a group's offsets when no topics are named. Uncommitted partitions answer offset -1.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use uuid::Uuid;

use super::{str_bytes, topic_name, Broker, NONE};
use crate::groups::CommittedOffset;

type Fetched = Vec<(String, i32, Option<CommittedOffset>)>;
type PerTopic = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

fn fetch(broker: &Broker, group: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> Fetched {
    let wanted: Option<Vec<(String, i32)>> = topics.map(|ts| {
        ts.into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
            .collect()
    });
    broker.groups.fetch_offsets(group, wanted.as_deref())
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

fn fields(o: &Option<CommittedOffset>) -> (i64, i32, String) {
    match o {
        Some(o) => (o.offset, o.leader_epoch, o.metadata.clone()),
        None => (-1, -1, String::new()),
    }
}

pub fn handle(broker: &Broker, req: &OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
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
                let fetched = fetch(broker, g.group_id.0.as_str(), topics);
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
                                                let (offset, epoch, metadata) = fields(&o);
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(str_bytes(metadata)))
                                                    .with_error_code(NONE)
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
    let fetched = fetch(broker, req.group_id.0.as_str(), topics);
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
                                    let (offset, epoch, metadata) = fields(&o);
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(if version >= 5 {
                                            epoch
                                        } else {
                                            -1
                                        })
                                        .with_metadata(Some(str_bytes(metadata)))
                                        .with_error_code(NONE)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}
