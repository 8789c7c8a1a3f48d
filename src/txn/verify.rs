//! Transaction verification (KIP-890 part 1, Kafka's `AddPartitionsToTxnManager`): before a
//! partition's leader accepts a producer's first transactional write (or a group coordinator
//! its transactional offsets), it asks the transactional id's coordinator whether the
//! partition is in that producer's ongoing transaction. Here when this broker coordinates the
//! id; otherwise with AddPartitionsToTxn v4 `verify_only` to the coordinator's broker (the
//! leader of the id's `__transaction_state` partition).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::coordinator::{ProducerIdent, TRANSACTION_TOPIC};
use super::coordinators::TxnCoordinators;
use super::peers::Peers;

/// The AddPartitionsToTxn version of a verification (the first with `verify_only`).
pub const VERIFY_VERSION: i16 = 4;

/// How long a verification may take.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TxnVerifier {
    peers: Arc<Peers>,
}

impl TxnVerifier {
    pub fn new(peers: Arc<Peers>) -> TxnVerifier {
        TxnVerifier { peers }
    }

    /// Whether `topic`-`partition` is in the ongoing transaction of producer `p` of
    /// `transactional_id`, asked of its coordinator: `local` when this broker coordinates
    /// it, else the coordinator's broker. The error is the coordinator's (INVALID_TXN_STATE,
    /// INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED, CONCURRENT_TRANSACTIONS) or, when it
    /// cannot be asked, COORDINATOR_NOT_AVAILABLE / NOT_COORDINATOR /
    /// COORDINATOR_LOAD_IN_PROGRESS (Kafka's produce path turns those into the retriable
    /// NOT_ENOUGH_REPLICAS).
    pub async fn verify(
        &self,
        local: &TxnCoordinators,
        transactional_id: &str,
        p: ProducerIdent,
        topic: &str,
        partition: i32,
    ) -> Result<(), ResponseError> {
        let wanted = [(topic.to_string(), partition)];
        match local.for_txn(transactional_id) {
            Ok(c) => c
                .verify_partitions(transactional_id, p, &wanted)?
                .into_iter()
                .next()
                .unwrap_or(Ok(())),
            Err(ResponseError::NotCoordinator) => {
                self.verify_remote(transactional_id, p, topic, partition)
                    .await
            }
            Err(e) => Err(e),
        }
    }

    /// [`Self::verify`] at the coordinator's broker, whoever it is (this one included).
    pub async fn verify_remote(
        &self,
        transactional_id: &str,
        p: ProducerIdent,
        topic: &str,
        partition: i32,
    ) -> Result<(), ResponseError> {
        let coordinator = self
            .peers
            .coordinator_of(TRANSACTION_TOPIC, transactional_id)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let client = self
            .peers
            .client(coordinator)
            .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(
                    transactional_id.to_string(),
                )))
                .with_producer_id(ProducerId(p.producer_id))
                .with_producer_epoch(p.producer_epoch)
                .with_verify_only(true)
                .with_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![partition])]),
        ]);
        let mut body = BytesMut::new();
        request
            .encode(&mut body, VERIFY_VERSION)
            .map_err(|_| ResponseError::InvalidRequest)?;
        let mut answer = client
            .call(
                ApiKey::AddPartitionsToTxn as i16,
                VERIFY_VERSION,
                &body,
                VERIFY_TIMEOUT,
            )
            .await
            .map_err(|e| {
                tracing::debug!(coordinator, error = %e, "transaction verification failed");
                ResponseError::CoordinatorNotAvailable
            })?;
        let response = AddPartitionsToTxnResponse::decode(&mut answer, VERIFY_VERSION)
            .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        if let Some(e) = ResponseError::try_from_code(response.error_code) {
            return Err(e);
        }
        let code = response
            .results_by_transaction
            .iter()
            .flat_map(|t| &t.topic_results)
            .flat_map(|t| &t.results_by_partition)
            .find(|r| r.partition_index == partition)
            .map_or(ResponseError::CoordinatorNotAvailable.code(), |r| {
                r.partition_error_code
            });
        match ResponseError::try_from_code(code) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}
