//! Transaction markers (Kafka's `TransactionMarkerChannelManager`): the commit/abort control
//! batch a transaction coordinator writes on every partition of a transaction once its
//! outcome is decided. Where a partition goes:
//! - a `__consumer_offsets` partition whose group coordinator is loaded here: through that
//!   coordinator's runtime (the marker's replay applies or drops the transaction's offsets);
//! - a data partition this broker leads: appended to its log ([`write_local`]);
//! - anything else: WriteTxnMarkers (API 27, v1) to the partition's leader over its client
//!   listener ([`MarkerChannel`]), whose handler does the local step there.
//!
//! A partition whose topic is gone is skipped; a newer coordinator's fence
//! (TRANSACTION_COORDINATOR_FENCED, INVALID_PRODUCER_EPOCH) abandons the marker, as Kafka's
//! completion handler does; any other failure (no leader, a leader away, loading) fails the
//! write so that the transaction stays prepared and the timer tries again.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::peers::Peers;
use crate::cluster::{Role, TopicRegistry};
use crate::coordinator::partitions::Lookup;
use crate::groups::{GroupCoordinators, OFFSETS_TOPIC};
use crate::log::producer_state::SequenceError;
use crate::log::LogError;
use crate::meta::node::MetaNode;

/// The WriteTxnMarkers version ottla sends and serves (Kafka 4 serves only v1 and up).
pub const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// How long one WriteTxnMarkers call may take before the marker is retried later.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(10);

/// One transaction's marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// Writes markers on partitions this broker does not lead, at their leaders. Blocking.
pub trait RemoteMarkers: Send + Sync {
    /// Ok once every partition has the marker (or its topic is gone).
    fn write(&self, marker: &Marker, partitions: &[(String, i32)]) -> io::Result<()>;
}

/// No other broker to send to (unit tests): a partition not led here is an error.
pub struct NoRemote;

impl RemoteMarkers for NoRemote {
    fn write(&self, _: &Marker, partitions: &[(String, i32)]) -> io::Result<()> {
        Err(io::Error::other(format!(
            "partitions {partitions:?} are not led by this broker"
        )))
    }
}

/// Everything a transaction coordinator needs to write its markers.
pub struct Markers<'a> {
    pub topics: &'a TopicRegistry,
    pub groups: &'a GroupCoordinators,
    pub remote: &'a dyn RemoteMarkers,
}

/// The outcome of one marker on one partition, as a WriteTxnMarkers answer codes it.
fn marker_error(e: &LogError) -> ResponseError {
    match e {
        LogError::Sequence(SequenceError::CoordinatorFenced { .. }) => {
            ResponseError::TransactionCoordinatorFenced
        }
        LogError::Sequence(SequenceError::StaleEpoch { .. }) => ResponseError::InvalidProducerEpoch,
        LogError::Closed => ResponseError::UnknownTopicOrPartition,
        LogError::NotLeader => ResponseError::NotLeaderOrFollower,
        LogError::InvalidMarker(_) => ResponseError::InvalidRequest,
        _ => ResponseError::KafkaStorageError,
    }
}

/// Whether a marker's failure means it is not needed any more: the partition is gone, or a
/// newer coordinator (epoch) or producer (epoch) took over.
fn abandoned(code: ResponseError) -> bool {
    matches!(
        code,
        ResponseError::TransactionCoordinatorFenced | ResponseError::InvalidProducerEpoch
    )
}

/// Writes `marker` on a partition led here: a `__consumer_offsets` partition through its
/// group coordinator, any other through its log (as leader). The error is the code a
/// WriteTxnMarkers answer gives (NOT_LEADER_OR_FOLLOWER, NOT_COORDINATOR... when this broker
/// does not lead it). Done once the marker is committed, as Kafka appends markers with
/// acks=all: durable by the flush policy and on every in-sync replica (REQUEST_TIMED_OUT
/// after [`crate::coordinator::COMMIT_TIMEOUT`], NOT_LEADER_OR_FOLLOWER when the leadership
/// changed meanwhile; the coordinator retries both). Blocking (the append may roll; the
/// flush policy's fsync; the wait for the followers).
pub fn write_local(
    topics: &TopicRegistry,
    groups: &GroupCoordinators,
    marker: &Marker,
    topic: &str,
    partition: i32,
) -> Result<(), ResponseError> {
    if topic == OFFSETS_TOPIC {
        return match groups.write_txn_marker(
            partition,
            marker.producer_id,
            marker.producer_epoch,
            marker.commit,
        )? {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(partition, error = %e, "writing a transaction marker to __consumer_offsets failed");
                Err(ResponseError::KafkaStorageError)
            }
        };
    }
    let p = topics
        .get_partition(crate::cluster::TopicRef::Name(topic), partition, None)
        .map_err(|e| match e {
            crate::cluster::PartitionError::NotLeader => ResponseError::NotLeaderOrFollower,
            _ => ResponseError::UnknownTopicOrPartition,
        })?;
    let log = p.log();
    let info = log
        .append_marker_unsynced(
            marker.producer_id,
            marker.producer_epoch,
            marker.commit,
            marker.coordinator_epoch,
        )
        .and_then(|info| {
            if info.needs_sync {
                log.sync_to(info.last_offset + 1)?;
            }
            Ok(info)
        })
        .map_err(|e| {
            let code = marker_error(&e);
            if code == ResponseError::KafkaStorageError && !e.is_latched() {
                tracing::error!(topic, partition, error = %e, "writing a transaction marker failed");
            }
            code
        })?;
    log.wait_high_watermark(
        info.last_offset + 1,
        info.leader_epoch,
        crate::coordinator::COMMIT_TIMEOUT,
    )
    .map_err(|e| match e {
        crate::log::HwWaitError::TimedOut => ResponseError::RequestTimedOut,
        crate::log::HwWaitError::LeadershipChanged => ResponseError::NotLeaderOrFollower,
        crate::log::HwWaitError::Closed => ResponseError::UnknownTopicOrPartition,
    })
}

impl Markers<'_> {
    /// Writes `marker` on every partition of the transaction: here where this broker leads
    /// the partition (or coordinates its groups), at the leader elsewhere. Blocking.
    pub fn write(&self, marker: &Marker, partitions: &BTreeSet<(String, i32)>) -> io::Result<()> {
        let mut remote = Vec::new();
        let mut failed: Option<String> = None;
        for (topic, partition) in partitions {
            let here = if topic == OFFSETS_TOPIC {
                match self.groups.at(*partition) {
                    Lookup::Active(_) => true,
                    Lookup::Loading => {
                        failed.get_or_insert(format!("{topic}-{partition} is loading"));
                        continue;
                    }
                    Lookup::NotHere => false,
                }
            } else {
                match self.topics.get(topic) {
                    // Deleted meanwhile: nothing to mark.
                    None => continue,
                    Some(t) => t
                        .partition(*partition)
                        .is_some_and(|p| p.leadership().role == Role::Leader),
                }
            };
            if !here {
                remote.push((topic.clone(), *partition));
                continue;
            }
            match write_local(self.topics, self.groups, marker, topic, *partition) {
                Ok(()) | Err(ResponseError::UnknownTopicOrPartition) => {}
                Err(code) if abandoned(code) => {
                    tracing::warn!(topic = %topic, partition, ?marker, error = ?code, "transaction marker fenced: abandoned");
                }
                Err(code) => {
                    failed.get_or_insert(format!("{topic}-{partition}: {code:?}"));
                }
            }
        }
        if !remote.is_empty() {
            if let Err(e) = self.remote.write(marker, &remote) {
                failed.get_or_insert(e.to_string());
            }
        }
        match failed {
            None => Ok(()),
            Some(why) => Err(io::Error::other(format!(
                "transaction markers not written: {why}"
            ))),
        }
    }
}

/// Sends markers to other brokers with WriteTxnMarkers, one connection per broker (its
/// client listener, from the metadata image's endpoints), one request per leader per
/// transaction. Blocking callers (the coordinator runs on the blocking pool).
pub struct MarkerChannel {
    peers: Arc<Peers>,
    runtime: tokio::runtime::Handle,
}

impl MarkerChannel {
    pub fn new(meta: Arc<MetaNode>, runtime: tokio::runtime::Handle) -> MarkerChannel {
        MarkerChannel::with_peers(Arc::new(Peers::new(meta)), runtime)
    }

    /// A channel over connections shared with other broker-to-broker requests.
    pub fn with_peers(peers: Arc<Peers>, runtime: tokio::runtime::Handle) -> MarkerChannel {
        MarkerChannel { peers, runtime }
    }

    /// Writes `marker` on `partitions` at broker `leader` (one WriteTxnMarkers call to its
    /// client listener); Ok once it wrote every one (or its topic is gone). Blocking: call it
    /// from the blocking pool.
    pub fn send_to(
        &self,
        leader: i32,
        marker: &Marker,
        partitions: &[(String, i32)],
    ) -> io::Result<()> {
        let body = encode_request(marker, partitions)?;
        let client = self.peers.client(leader)?;
        let answer = self.runtime.block_on(client.call(
            ApiKey::WriteTxnMarkers as i16,
            WRITE_TXN_MARKERS_VERSION,
            &body,
            REMOTE_TIMEOUT,
        ))?;
        let mut answer = answer;
        let response = WriteTxnMarkersResponse::decode(&mut answer, WRITE_TXN_MARKERS_VERSION)
            .map_err(|e| io::Error::other(format!("bad WriteTxnMarkers answer: {e}")))?;
        let mut failed = Vec::new();
        for m in &response.markers {
            for t in &m.topics {
                for p in &t.partitions {
                    let code = ResponseError::try_from_code(p.error_code);
                    match code {
                        None => {}
                        Some(ResponseError::UnknownTopicOrPartition)
                            if self
                                .peers
                                .meta()
                                .image()
                                .topic_by_name(t.name.0.as_str())
                                .is_none() => {}
                        Some(c) if abandoned(c) => {
                            tracing::warn!(topic = %t.name.0, partition = p.partition_index, ?marker, error = ?c,
                                "transaction marker fenced at the leader: abandoned");
                        }
                        Some(c) => {
                            failed.push(format!("{}-{}: {c:?}", t.name.0, p.partition_index))
                        }
                    }
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "broker {leader} refused markers: {}",
                failed.join(", ")
            )))
        }
    }
}

/// The WriteTxnMarkers request of one marker on `partitions`.
fn encode_request(marker: &Marker, partitions: &[(String, i32)]) -> io::Result<BytesMut> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t.as_str()).or_default().push(*p);
    }
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(marker.producer_id))
            .with_producer_epoch(marker.producer_epoch)
            .with_transaction_result(marker.commit)
            .with_coordinator_epoch(marker.coordinator_epoch)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            )]);
    let mut body = BytesMut::new();
    request
        .encode(&mut body, WRITE_TXN_MARKERS_VERSION)
        .map_err(|e| io::Error::other(format!("cannot encode WriteTxnMarkers: {e}")))?;
    Ok(body)
}

impl RemoteMarkers for MarkerChannel {
    fn write(&self, marker: &Marker, partitions: &[(String, i32)]) -> io::Result<()> {
        let image = self.peers.meta().image();
        let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        for (topic, partition) in partitions {
            let Some(t) = image.topic_by_name(topic) else {
                continue; // deleted: nothing to mark
            };
            let Some(p) = usize::try_from(*partition)
                .ok()
                .and_then(|i| t.partitions.get(i))
            else {
                continue;
            };
            if p.leader < 0 {
                return Err(io::Error::other(format!(
                    "{topic}-{partition} has no leader"
                )));
            }
            if p.leader == self.peers.node_id() {
                // The image names this broker but its replica does not lead yet.
                return Err(io::Error::other(format!(
                    "{topic}-{partition} is becoming led here"
                )));
            }
            by_leader
                .entry(p.leader)
                .or_default()
                .push((topic.clone(), *partition));
        }
        let mut first_error = None;
        for (leader, parts) in by_leader {
            if let Err(e) = self.send_to(leader, marker, &parts) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
