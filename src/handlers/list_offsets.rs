//! ListOffsets (key 2): earliest, latest, max-timestamp, or first offset at/after a timestamp.
//! With `isolation_level` READ_COMMITTED (v2+) "latest" is the last stable offset and a
//! timestamp lookup finds only offsets below it, as Kafka (`Partition.fetchOffsetForTimestamp`);
//! READ_UNCOMMITTED bounds them by the high watermark.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use std::sync::Arc;

use super::{partition_error_code, Broker, NONE};
use crate::cluster::{Partition, TopicRef};
use crate::log::LogError;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const EARLIEST_PENDING_UPLOAD: i64 = -5;
const LATEST_TIERED: i64 = -6;
const READ_COMMITTED: i8 = 1;

/// Answers from the page cache on the worker (`log::cold`); if a timestamp lookup would wait
/// for the disk, the whole request (read-only) is answered again on the blocking pool.
pub async fn handle(
    broker: &Arc<Broker>,
    req: ListOffsetsRequest,
    version: i16,
    caller: &super::Caller,
) -> ListOffsetsResponse {
    use crate::security::acl::AclOperation;
    // Topics the caller may not describe: TOPIC_AUTHORIZATION_FAILED.
    let denied: std::collections::HashSet<String> = caller
        .denied_topics(
            AclOperation::Describe,
            req.topics.iter().map(|t| t.name.0.as_str()),
        )
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut cold = false;
    let response =
        crate::log::cold::without_blocking(|| answer(broker, &req, version, &denied, &mut cold));
    if !cold {
        return response;
    }
    let b = broker.clone();
    crate::threads::spawn_blocking(move || answer(&b, &req, version, &denied, &mut false))
        .await
        .unwrap_or(response)
}

fn answer(
    broker: &Broker,
    req: &ListOffsetsRequest,
    version: i16,
    denied: &std::collections::HashSet<String>,
    cold: &mut bool,
) -> ListOffsetsResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    // The field exists from v4; -1 (or none) means "do not check".
                    let epoch = (version >= 4).then_some(p.current_leader_epoch);
                    if denied.contains(t.name.0.as_str()) {
                        return base
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code());
                    }
                    match broker.topics.get_partition(
                        TopicRef::Name(t.name.0.as_str()),
                        p.partition_index,
                        epoch,
                    ) {
                        Err(e) => base.with_error_code(partition_error_code(e).code()),
                        Ok(partition) => lookup(
                            &partition,
                            p.timestamp,
                            req.isolation_level,
                            base,
                            version,
                            cold,
                        ),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

fn lookup(
    partition: &Partition,
    timestamp: i64,
    isolation_level: i8,
    base: ListOffsetsPartitionResponse,
    version: i16,
    cold: &mut bool,
) -> ListOffsetsPartitionResponse {
    let log = partition.log();
    // The leader epoch field exists from v4.
    let epoch = if version >= 4 {
        partition.leadership().leader_epoch
    } else {
        -1
    };
    let found = |offset: i64, ts: i64| {
        base.clone()
            .with_error_code(NONE)
            .with_offset(offset)
            .with_timestamp(ts)
            .with_leader_epoch(epoch)
    };
    // The last offset a consumer of this isolation may read, plus one.
    let fetchable = || {
        if isolation_level == READ_COMMITTED {
            log.last_stable_offset()
        } else {
            log.high_watermark()
        }
    };
    let below_fetchable = |found: Option<(i64, i64)>| {
        let limit = fetchable();
        found.filter(|&(offset, _)| offset < limit)
    };
    let result = match timestamp {
        LATEST => Ok(Some((fetchable(), -1))),
        LATEST_TIERED => Ok(Some((log.high_watermark(), -1))),
        EARLIEST | EARLIEST_LOCAL => Ok(Some((log.log_start_offset(), -1))),
        // No tiered storage: nothing is pending upload.
        EARLIEST_PENDING_UPLOAD => Ok(None),
        MAX_TIMESTAMP => log.max_timestamp_offset().map(below_fetchable),
        ts if ts >= 0 => log.offset_for_timestamp(ts).map(below_fetchable),
        _ => {
            return base.with_error_code(ResponseError::InvalidRequest.code());
        }
    };
    match result {
        Ok(Some((offset, ts))) => found(offset, ts),
        // Kafka answers "no such offset" with offset and timestamp -1.
        Ok(None) => found(-1, -1),
        Err(LogError::Io(e)) if crate::log::cold::is_would_block(&e) => {
            *cold = true;
            base.with_error_code(ResponseError::KafkaStorageError.code())
        }
        Err(e) => {
            tracing::warn!(error = %e, "ListOffsets lookup failed");
            base.with_error_code(ResponseError::KafkaStorageError.code())
        }
    }
}
