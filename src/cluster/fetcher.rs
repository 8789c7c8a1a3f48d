//! Follower fetching (the first step of replication): for every broker that leads partitions
//! this broker follows, one task pulls them from it with Fetch (one connection per leader,
//! all its partitions in one request, long-polling as a consumer does), appends the leader's
//! batches unchanged (`PartitionLog::append_as_follower`: same offsets, epochs, producer ids
//! and control batches, so replicas are byte-identical batch by batch) and learns the high
//! watermark from each answer.
//!
//! Each fetch names the epoch of the replica's last batch (`last_fetched_epoch`); a leader
//! whose log differs after it answers DIVERGING_EPOCH with where that epoch ends on its side,
//! and the replica truncates to the divergence point ([`truncation_point`]) before it fetches
//! on (KIP-279 / KIP-595's scheme; no separate OffsetForLeaderEpoch round trip). An answer
//! that arrives after the partition's leadership changed is dropped. A follower that is ahead
//! of its leader with no epoch to compare (the leader lost unflushed data in a crash)
//! truncates to the leader's high watermark; one that fell below the leader's log start
//! (retention or DeleteRecords removed what it lacks) empties its log and starts afresh at the
//! leader's log start.
//!
//! Each fetcher keeps an incremental fetch session (KIP-227) with its leader, as Kafka's
//! replica fetchers do ([`FollowerSession`], Kafka's `FetchSessionHandler`): a full fetch
//! first, then only the partitions whose fetch parameters changed (their log end moved,
//! a new leader epoch) and those no longer followed from this leader (forgotten); the
//! leader answers only partitions with news. A session error, or an answer with no session,
//! starts again with a full fetch.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Partition, Role, TopicRegistry};
use crate::log::batch::BatchHeader;
use crate::log::LogError;
use crate::meta::image::MetadataImage;
use crate::meta::node::MetaNode;
use crate::meta::rpc::RpcClient;

/// The Fetch version followers send (topic names; the last before topic ids).
pub const FOLLOWER_FETCH_VERSION: i16 = 12;
/// How long the leader may hold a follower's fetch when it has nothing new (Kafka's
/// `replica.fetch.wait.max.ms`).
const MAX_WAIT_MS: i32 = 500;
/// Bytes per partition and per answer (Kafka's `replica.fetch.max.bytes`,
/// `replica.fetch.response.max.bytes`).
const PARTITION_MAX_BYTES: i32 = 1024 * 1024;
const RESPONSE_MAX_BYTES: i32 = 10 * 1024 * 1024;
/// The wait after a failed round (Kafka's `replica.fetch.backoff.ms`), doubled up to a second
/// while failures last.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The fetchers of this broker, one per leader it follows partitions from.
pub struct ReplicaFetchers {
    node_id: i32,
    topics: Arc<TopicRegistry>,
    meta: Arc<MetaNode>,
    /// TLS and SASL to the leaders (`inter_broker_listener`); None: TCP.
    connector: Option<Arc<crate::meta::connector::Connector>>,
    running: Mutex<HashMap<i32, Fetcher>>,
    /// When each leader was last reported unreachable to the controller.
    reported: Mutex<HashMap<i32, std::time::Instant>>,
}

/// A running fetcher: how to stop it, and its task.
type Fetcher = (watch::Sender<bool>, JoinHandle<()>);

/// What a follower asked of a partition, as its session holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Asked {
    fetch_offset: i64,
    leader_epoch: i32,
    last_fetched_epoch: i32,
    log_start_offset: i64,
}

/// The follower's side of a fetch session with one leader (Kafka's `FetchSessionHandler`).
#[derive(Debug, Default)]
struct FollowerSession {
    /// The leader's session id (0: none yet, the next fetch is a full one).
    id: i32,
    /// The epoch of the next incremental fetch.
    epoch: i32,
    /// What the session holds of each partition.
    asked: HashMap<(String, i32), Asked>,
}

impl FollowerSession {
    fn reset(&mut self) {
        *self = FollowerSession::default();
    }
}

/// A partition this broker follows from one leader.
struct Followed {
    topic: String,
    partition: Arc<Partition>,
}

impl ReplicaFetchers {
    pub fn new(
        node_id: i32,
        topics: Arc<TopicRegistry>,
        meta: Arc<MetaNode>,
        connector: Option<Arc<crate::meta::connector::Connector>>,
    ) -> Arc<ReplicaFetchers> {
        Arc::new(ReplicaFetchers {
            node_id,
            topics,
            meta,
            connector,
            running: Mutex::new(HashMap::new()),
            reported: Mutex::new(HashMap::new()),
        })
    }

    /// Starts a fetcher for every leader this broker now follows partitions from and stops
    /// those of leaders it no longer does. Call on the runtime after every image change.
    pub fn reconcile(self: &Arc<Self>) {
        let mut wanted: Vec<i32> = self
            .followed()
            .into_iter()
            .map(|(leader, _)| leader)
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|leader, (stop, _)| {
            let keep = wanted.contains(leader);
            if !keep {
                let _ = stop.send(true);
                tracing::debug!(leader, "stopped fetching from a leader");
            }
            keep
        });
        for leader in wanted {
            if running.contains_key(&leader) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let me = self.clone();
            let task = tokio::spawn(async move { me.run(leader, stopped).await });
            running.insert(leader, (stop, task));
            tracing::debug!(leader, "fetching from a leader");
        }
    }

    /// Stops every fetcher and waits until none appends any more (before the logs are
    /// closed at shutdown).
    pub async fn stop_all(&self) {
        let tasks: Vec<_> = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            running
                .drain()
                .map(|(_, (stop, task))| {
                    let _ = stop.send(true);
                    task
                })
                .collect()
        };
        for task in tasks {
            let _ = task.await;
        }
    }

    /// The leader at `addr` refused a connection: tells the controller (at most once a
    /// second per leader), which checks and fences it at once when it refuses the controller
    /// too (see `ControllerRequest::ReportUnreachable`). In the background.
    fn report_refused(&self, addr: &str) {
        let image = self.meta.image();
        let Some(b) = image
            .brokers
            .values()
            .find(|b| !b.fenced && b.peer_addr(self.protocol()).as_deref() == Some(addr))
        else {
            return;
        };
        let (broker, epoch) = (b.id, b.epoch);
        {
            let now = std::time::Instant::now();
            let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
            match reported.get(&broker) {
                Some(at) if now.duration_since(*at) < Duration::from_secs(1) => return,
                _ => {
                    reported.insert(broker, now);
                }
            }
        }
        let meta = self.meta.clone();
        let reporter = self.node_id;
        tokio::spawn(async move {
            let request = crate::meta::controller::ControllerRequest::ReportUnreachable {
                reporter,
                broker,
                epoch,
            };
            if let Err(e) = meta.submit(request).await {
                tracing::debug!(broker, error = %e, "reporting an unreachable leader failed");
            }
        });
    }

    /// Every partition replica here that follows a leader, with that leader's id.
    fn followed(&self) -> Vec<(i32, Followed)> {
        let mut out = Vec::new();
        for topic in self.topics.list() {
            for partition in topic.partitions() {
                let l = partition.leadership();
                if l.role == Role::Follower && l.leader_id >= 0 && l.leader_id != self.node_id {
                    out.push((
                        l.leader_id,
                        Followed {
                            topic: topic.name.clone(),
                            partition,
                        },
                    ));
                }
            }
        }
        out
    }

    /// The address at which `leader`'s listener is reached from here (its inter-broker
    /// endpoint, else its client one), from the image.
    /// The listener protocol peers are reached at (None: the default inter-broker address).
    fn protocol(&self) -> Option<crate::config::SecurityProtocol> {
        self.connector.as_ref().map(|c| c.protocol())
    }

    fn leader_addr(&self, image: &MetadataImage, leader: i32) -> Option<String> {
        image
            .brokers
            .get(&leader)
            .filter(|b| !b.fenced)
            .and_then(|b| b.peer_addr(self.protocol()))
    }

    /// One leader's fetch loop, until `stop`.
    async fn run(self: Arc<Self>, leader: i32, mut stop: watch::Receiver<bool>) {
        let mut client: Option<RpcClient> = None;
        let mut session = FollowerSession::default();
        let mut backoff = BACKOFF_MIN;
        loop {
            if *stop.borrow() {
                return;
            }
            let parts: Vec<Followed> = self
                .followed()
                .into_iter()
                .filter(|(l, _)| *l == leader)
                .map(|(_, f)| f)
                .collect();
            let image = self.meta.image();
            let addr = self.leader_addr(&image, leader);
            let round = match (&addr, parts.is_empty()) {
                (Some(addr), false) => {
                    if client.as_ref().map(|c| c.addr()) != Some(addr.as_str()) {
                        // Another address: the session, if any, was with another process.
                        session.reset();
                        client = Some(
                            RpcClient::new(addr.clone(), format!("ottla-replica-{}", self.node_id))
                                .with_max_response_bytes(RESPONSE_MAX_BYTES as usize + (1 << 20))
                                .with_connector(self.connector.clone()),
                        );
                    }
                    match &client {
                        Some(c) => self.fetch_round(c, &parts, &mut session, &mut stop).await,
                        None => Err("no client".to_string()),
                    }
                }
                // Nothing to fetch, or the leader is not reachable per the image: wait for
                // the image to change.
                _ => {
                    let next = image.applied.map_or(0, |l| l.index) + 1;
                    tokio::select! {
                        _ = self.meta.cell.wait_applied(next) => {}
                        _ = tokio::time::sleep(BACKOFF_MAX) => {}
                        _ = stop.changed() => return,
                    }
                    continue;
                }
            };
            match round {
                Ok(progress) => {
                    backoff = BACKOFF_MIN;
                    if !progress {
                        // Every partition answered an error (a leadership change under way):
                        // do not spin while the image catches up.
                        tokio::select! {
                            _ = tokio::time::sleep(BACKOFF_MIN) => {}
                            _ = stop.changed() => return,
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(leader, error = %e, "follower fetch failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// One Fetch to the leader for `parts`, and what its answer means for each. Ok(false)
    /// when no partition could be served. `stop` interrupts the wait for the answer, never
    /// the appends that follow it (shutdown waits for them before it syncs the logs).
    async fn fetch_round(
        &self,
        client: &RpcClient,
        parts: &[Followed],
        session: &mut FollowerSession,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, String> {
        let incremental = session.id != 0;
        let mut by_topic: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
        // Each partition with the leader epoch it was asked at.
        let mut local: HashMap<(String, i32), (&Arc<Partition>, i32)> = HashMap::new();
        // What this round asks of every followed partition (the session's next view).
        let mut asking: HashMap<(String, i32), Asked> = HashMap::new();
        for f in parts {
            let log = f.partition.log();
            let key = (f.topic.clone(), f.partition.index());
            let asked = Asked {
                fetch_offset: log.log_end_offset(),
                leader_epoch: f.partition.leadership().leader_epoch,
                last_fetched_epoch: log.epoch_entries().last().map_or(-1, |e| e.epoch),
                log_start_offset: log.log_start_offset(),
            };
            // An incremental fetch carries only what the session does not hold already.
            if !incremental || session.asked.get(&key) != Some(&asked) {
                by_topic.entry(&f.topic).or_default().push(
                    FetchPartition::default()
                        .with_partition(f.partition.index())
                        .with_current_leader_epoch(asked.leader_epoch)
                        .with_fetch_offset(asked.fetch_offset)
                        .with_last_fetched_epoch(asked.last_fetched_epoch)
                        .with_log_start_offset(asked.log_start_offset)
                        .with_partition_max_bytes(PARTITION_MAX_BYTES),
                );
            }
            local.insert(key.clone(), (&f.partition, asked.leader_epoch));
            asking.insert(key, asked);
        }
        // Partitions no longer followed from this leader leave the session.
        let mut forgotten: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        if incremental {
            for (topic, p) in session.asked.keys() {
                if !asking.contains_key(&(topic.clone(), *p)) {
                    forgotten.entry(topic).or_default().push(*p);
                }
            }
        }
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(self.node_id))
            .with_max_wait_ms(MAX_WAIT_MS)
            .with_min_bytes(1)
            .with_max_bytes(RESPONSE_MAX_BYTES)
            .with_isolation_level(0)
            .with_session_id(session.id)
            .with_session_epoch(if incremental { session.epoch } else { 0 })
            .with_forgotten_topics_data(
                forgotten
                    .into_iter()
                    .map(|(name, partitions)| {
                        ForgottenTopic::default()
                            .with_topic(topic_name(name))
                            .with_partitions(partitions)
                    })
                    .collect(),
            )
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(name, partitions)| {
                        FetchTopic::default()
                            .with_topic(topic_name(name))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        let mut body = BytesMut::new();
        request
            .encode(&mut body, FOLLOWER_FETCH_VERSION)
            .map_err(|e| format!("encoding a follower fetch: {e}"))?;
        let timeout = Duration::from_millis(MAX_WAIT_MS as u64) + Duration::from_secs(10);
        let call = client.call(ApiKey::Fetch as i16, FOLLOWER_FETCH_VERSION, &body, timeout);
        let mut answer = tokio::select! {
            answer = call => match answer {
                Ok(a) => a,
                Err(e) => {
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        self.report_refused(client.addr());
                    }
                    // The leader may or may not have taken that epoch: start afresh.
                    session.reset();
                    return Err(e.to_string());
                }
            },
            _ = stop.changed() => return Ok(false),
        };
        let response = match FetchResponse::decode(&mut answer, FOLLOWER_FETCH_VERSION) {
            Ok(r) => r,
            Err(e) => {
                session.reset();
                return Err(format!("undecodable fetch answer: {e}"));
            }
        };
        if let Some(e) = ResponseError::try_from_code(response.error_code) {
            // FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH, anything else: the
            // next fetch is a full one.
            session.reset();
            return Err(format!("the leader refused the fetch: {e}"));
        }
        // The session now holds what this round asked (or there is none: full fetches on).
        if response.session_id == 0 {
            session.reset();
        } else {
            session.epoch = if incremental {
                crate::cluster::fetch_session::next_epoch(session.epoch)
            } else {
                tracing::info!(
                    session_id = response.session_id,
                    partitions = asking.len(),
                    "incremental fetch session with the leader"
                );
                1
            };
            session.id = response.session_id;
            session.asked = asking;
        }
        // Whether every partition answered was refused (a leadership change under way).
        let mut answered = 0;
        let mut progress = false;
        for t in response.responses {
            let name = t.topic.0.to_string();
            for p in t.partitions {
                answered += 1;
                let Some((partition, asked_at)) = local.get(&(name.clone(), p.partition_index))
                else {
                    continue;
                };
                let partition = Arc::clone(partition);
                // The leadership moved while the fetch was out: its answer is stale (the
                // next round asks the new leader, at the new epoch).
                let l = partition.leadership();
                if l.role != Role::Follower || l.leader_epoch != *asked_at {
                    continue;
                }
                let diverging = (p.diverging_epoch.epoch >= 0 && p.diverging_epoch.end_offset >= 0)
                    .then_some((p.diverging_epoch.epoch, p.diverging_epoch.end_offset));
                match ResponseError::try_from_code(p.error_code) {
                    None if diverging.is_some() => {
                        progress = true;
                        let (epoch, end) = diverging.unwrap_or_default();
                        truncate_diverged(&name, partition, epoch, end).await;
                    }
                    None => {
                        progress = true;
                        let records = p.records.unwrap_or_default();
                        apply(
                            &name,
                            partition,
                            whole_batches(records),
                            p.high_watermark,
                            p.log_start_offset,
                        )
                        .await;
                    }
                    Some(ResponseError::OffsetOutOfRange) => {
                        progress = true;
                        out_of_range(&name, partition, p.high_watermark, p.log_start_offset).await;
                    }
                    Some(e) => {
                        tracing::debug!(topic = %name, partition = p.partition_index, error = %e,
                            "the leader did not serve a followed partition");
                    }
                }
            }
        }
        // An incremental answer with nothing new is progress too.
        Ok(progress || answered == 0)
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// The whole batches at the front of `records` (a leader may cut the last one short at its
/// size limit, as Kafka's do).
fn whole_batches(records: Bytes) -> Bytes {
    let mut end = 0;
    while let Some(h) = records.get(end..).and_then(BatchHeader::parse) {
        if end + h.total_bytes > records.len() {
            break;
        }
        end += h.total_bytes;
    }
    records.slice(..end)
}

/// Appends what the leader sent (off the runtime: it may roll a segment or fsync) and moves
/// the high watermark to the leader's, as far as this replica has the data; an answer with
/// no records only moves the high watermark, on the runtime.
async fn apply(
    topic: &str,
    partition: Arc<Partition>,
    records: Bytes,
    leader_hw: i64,
    leader_start: i64,
) {
    let log = partition.log().clone();
    // The leader's log start moved up (retention, DeleteRecords): this replica follows, as
    // far as its own high watermark (Kafka's `maybeIncrementLogStartOffset`).
    let start_moves = move |log: &crate::log::PartitionLog| {
        leader_start > log.log_start_offset() && log.high_watermark() > log.log_start_offset()
    };
    if records.is_empty() {
        // Nothing to write: moving the high watermark only takes the log's lock.
        log.advance_high_watermark(leader_hw);
        if !start_moves(&log) {
            return;
        }
    }
    let appended = crate::threads::spawn_blocking(move || {
        if !records.is_empty() {
            log.append_as_follower(&records)?;
            log.advance_high_watermark(leader_hw);
        }
        if start_moves(&log) {
            log.delete_records(leader_start.min(log.high_watermark()))?;
        }
        Ok::<_, LogError>(())
    })
    .await;
    match appended {
        Ok(Ok(())) => {}
        // The topic was deleted meanwhile (the next image stops this fetch).
        Ok(Err(LogError::Closed)) => {}
        Ok(Err(e)) => {
            tracing::warn!(topic, partition = partition.index(), error = %e, "cannot append the leader's batches")
        }
        Err(e) => {
            tracing::warn!(topic, partition = partition.index(), error = %e, "cannot append the leader's batches")
        }
    }
}

/// Where a follower whose log diverges from its leader's cuts it (Kafka's
/// `getOffsetTruncationState`), given the leader's end of the follower's last fetched epoch
/// (`leader_epoch` ending at `leader_end`) and this replica's own end of that epoch and log
/// end. When this replica does not have the leader's epoch it cuts where its newest epoch
/// below that one ends; its next fetch then names an older last epoch, and the leader answers
/// again until the logs agree.
pub fn truncation_point(
    leader_epoch: i32,
    leader_end: i64,
    local_epoch: i32,
    local_end: i64,
    log_end: i64,
) -> i64 {
    if local_epoch < 0 || local_end < 0 {
        // This replica knows no such epoch: it keeps what the leader has.
        leader_end.min(log_end)
    } else if local_epoch != leader_epoch {
        local_end.min(log_end)
    } else {
        local_end.min(leader_end).min(log_end)
    }
}

/// The leader answered that this replica's log diverges from its own after `epoch`, which
/// ends at `end` there: the replica cuts its log at the [`truncation_point`] (off the
/// runtime) and the next round fetches from there.
async fn truncate_diverged(topic: &str, partition: Arc<Partition>, epoch: i32, end: i64) {
    let log = partition.log().clone();
    let cut = crate::threads::spawn_blocking(move || {
        let before = log.log_end_offset();
        let (local_epoch, local_end) = log.end_offset_for_epoch(epoch);
        let at = truncation_point(epoch, end, local_epoch, local_end, before);
        log.truncate_to(at).map(|after| (before, after))
    })
    .await;
    match cut {
        Ok(Ok((before, after))) if after < before => {
            tracing::warn!(
                topic,
                partition = partition.index(),
                from = before,
                to = after,
                leader_epoch = epoch,
                leader_end = end,
                "this replica's log diverged from its leader's: truncated to the divergence point"
            )
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(topic, partition = partition.index(), error = %e, "cannot truncate a diverged replica")
        }
        Err(e) => {
            tracing::warn!(topic, partition = partition.index(), error = %e, "cannot truncate a diverged replica")
        }
    }
}

/// The leader has no data at this replica's log end: this replica is ahead (its leader lost
/// data it had not flushed) and truncates to the leader's high watermark, or behind the
/// leader's log start and starts afresh there (Kafka's `truncateFullyAndStartAt`).
async fn out_of_range(topic: &str, partition: Arc<Partition>, leader_hw: i64, leader_start: i64) {
    let log = partition.log().clone();
    let end = log.log_end_offset();
    if end > leader_hw {
        let cut = crate::threads::spawn_blocking(move || log.truncate_to(leader_hw)).await;
        match cut {
            Ok(Ok(new_end)) => {
                tracing::warn!(topic, partition = partition.index(), from = end, to = new_end,
                    "this replica was ahead of its leader: truncated to the leader's high watermark")
            }
            Ok(Err(e)) => {
                tracing::warn!(topic, partition = partition.index(), error = %e, "cannot truncate a replica ahead of its leader")
            }
            Err(e) => {
                tracing::warn!(topic, partition = partition.index(), error = %e, "cannot truncate a replica ahead of its leader")
            }
        }
    } else if end < leader_start {
        // What it lacks is gone on the leader (retention, DeleteRecords): it starts afresh
        // at the leader's log start and fetches on from there.
        let restart =
            crate::threads::spawn_blocking(move || log.truncate_fully_and_start_at(leader_start))
                .await;
        match restart {
            Ok(Ok(())) => tracing::warn!(
                topic,
                partition = partition.index(),
                log_end = end,
                leader_log_start = leader_start,
                "this replica was behind its leader's log start: emptied, it restarts there"
            ),
            Ok(Err(e)) => {
                tracing::warn!(topic, partition = partition.index(), error = %e, "cannot restart a replica at its leader's log start")
            }
            Err(e) => {
                tracing::warn!(topic, partition = partition.index(), error = %e, "cannot restart a replica at its leader's log start")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::truncation_point;

    #[test]
    fn truncation_points_follow_kafkas_rules() {
        // Same epoch on both: the smaller end.
        assert_eq!(truncation_point(4, 100, 4, 120, 120), 100);
        assert_eq!(truncation_point(4, 130, 4, 120, 120), 120);
        // The leader names an epoch this replica does not have: cut where this replica's
        // newest epoch below it ends, and ask again.
        assert_eq!(truncation_point(4, 100, 3, 90, 120), 90);
        // This replica knows no epoch there: keep what the leader has.
        assert_eq!(truncation_point(4, 100, -1, -1, 120), 100);
        assert_eq!(truncation_point(4, 100, -1, -1, 80), 80);
    }
}
