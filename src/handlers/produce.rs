//! Produce (key 0): validates each partition's batches (magic 2, lengths, CRC32C, record
//! counts, size limit), assigns offsets and appends. acks=0 gets no response at all.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{str_bytes, Broker, NONE};
use crate::cluster::{topic_config, Topic};
use crate::log::batch::{self, BatchError};
use crate::log::producer_state::SequenceError;
use crate::log::{now_ms, LogError};

/// Handles a decoded produce request. `None` means "send no response" (acks=0).
pub fn handle(broker: &Broker, req: &ProduceRequest) -> Option<ProduceResponse> {
    let acks_valid = matches!(req.acks, -1..=1);
    let responses = req
        .topic_data
        .iter()
        .map(|t| {
            let topic = broker.topics.get(t.name.0.as_str());
            let partition_responses = t
                .partition_data
                .iter()
                .map(|p| {
                    let base = PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_base_offset(-1);
                    if !acks_valid {
                        return base.with_error_code(ResponseError::InvalidRequiredAcks.code());
                    }
                    match &topic {
                        None => base.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                        Some(topic) => produce_partition(broker, topic, p, base),
                    }
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id)
                .with_partition_responses(partition_responses)
        })
        .collect();
    (req.acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

fn produce_partition(
    broker: &Broker,
    topic: &Topic,
    p: &PartitionProduceData,
    base: PartitionProduceResponse,
) -> PartitionProduceResponse {
    let Some(log) = topic.partition(p.index) else {
        return base.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    };
    let fail = |error: ResponseError, message: String| {
        tracing::debug!(topic = %topic.name, partition = p.index, %message, "produce refused");
        base.clone()
            .with_error_code(error.code())
            .with_error_message(Some(str_bytes(message)))
    };
    let Some(records) = &p.records else {
        return fail(ResponseError::CorruptMessage, "null record set".into());
    };
    let max_bytes = topic_config::max_message_bytes(&topic.configs, &broker.config);
    match batch::validate_batches(records, max_bytes) {
        Err(e) => {
            let error = match e {
                BatchError::Corrupt(_) => ResponseError::CorruptMessage,
                BatchError::Invalid(_) => ResponseError::InvalidRecord,
                BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
                BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
            };
            return fail(error, e.to_string());
        }
        // Kafka's rule for magic v2: exactly one batch per partition in a produce request.
        Ok(summary) if summary.batch_count != 1 => {
            return fail(
                ResponseError::InvalidRecord,
                format!(
                    "expected one record batch per partition, got {}",
                    summary.batch_count
                ),
            );
        }
        Ok(_) => {}
    }
    let log_append_time =
        topic_config::log_append_time(&topic.configs, &broker.config).then(now_ms);
    // The one copy of the produce path: the frame is shared and immutable, offsets are patched
    // into this buffer, which is then written with one call.
    let mut buf = records.to_vec();
    match log.append(&mut buf, log_append_time) {
        Ok(info) => base
            .with_error_code(NONE)
            .with_base_offset(info.base_offset)
            .with_log_append_time_ms(log_append_time.unwrap_or(-1))
            .with_log_start_offset(info.log_start_offset),
        Err(LogError::Sequence(e)) => {
            let error = match e {
                SequenceError::StaleEpoch { .. } => ResponseError::InvalidProducerEpoch,
                SequenceError::OutOfOrder { .. } => ResponseError::OutOfOrderSequenceNumber,
            };
            fail(error, e.to_string())
        }
        Err(e) => {
            tracing::error!(topic = %topic.name, partition = p.index, error = %e, "append failed");
            fail(ResponseError::KafkaStorageError, e.to_string())
        }
    }
}
