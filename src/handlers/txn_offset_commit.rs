//! TxnOffsetCommit (key 28): offsets committed as part of a transaction; they become visible
//! (OffsetFetch) only when the transaction commits.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::Broker;
use crate::groups::CommittedOffset;
use crate::log::now_ms;
use crate::txn::coordinator::ProducerIdent;

pub async fn handle(
    broker: &Broker,
    req: &TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let now = now_ms();
    let mut offsets = Vec::new();
    for t in &req.topics {
        let topic = broker.topics.get(t.name.0.as_str());
        for p in &t.partitions {
            let exists = topic
                .as_ref()
                .is_some_and(|x| p.partition_index >= 0 && p.partition_index < x.partition_count());
            offsets.push((
                t.name.0.to_string(),
                p.partition_index,
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    commit_timestamp_ms: now,
                },
                exists,
            ));
        }
    }
    let count = offsets.len();
    let ident = ProducerIdent {
        producer_id: req.producer_id.0,
        producer_epoch: req.producer_epoch,
    };
    let member = (version >= 3).then(|| {
        (
            req.generation_id,
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|s| s.as_str()),
        )
    });
    let errors = match broker
        .txns
        .is_ongoing(req.transactional_id.0.as_str(), ident)
        .and_then(|()| {
            broker.groups.commit_txn_offsets(
                req.group_id.0.as_str(),
                ident.producer_id,
                ident.producer_epoch,
                member,
                offsets,
            )
        }) {
        Err(e) => vec![e.code(); count],
        Ok((errors, None)) => errors,
        Ok((mut errors, Some(upto))) => {
            let log = broker.groups.log().clone();
            let synced = tokio::task::spawn_blocking(move || log.sync_to(upto)).await;
            if !matches!(synced, Ok(Ok(()))) {
                let storage = ResponseError::KafkaStorageError.code();
                errors.iter_mut().for_each(|e| *e = storage);
            }
            errors
        }
    };
    let mut errors = errors.into_iter();
    TxnOffsetCommitResponse::default().with_topics(
        req.topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(errors.next().unwrap_or_default())
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
