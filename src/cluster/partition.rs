//! A partition replica on this broker: its log and what the cluster decided about it (role,
//! leader, leader epoch, replicas, in-sync replicas). Handlers reach a partition only through
//! [`crate::cluster::TopicRegistry::get_partition`], which checks leadership and the
//! request's leader epoch, so every API answers NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH
//! and UNKNOWN_LEADER_EPOCH by the same rules (Kafka's `Partition.checkCurrentLeaderEpoch`).
//!
//! On a single node every partition is led here at leader epoch 0, with this node as its one
//! replica and in-sync replica, and the log's high watermark follows its end. In a cluster the
//! [`Leadership`] comes from the metadata image; followers pull the leader's batches
//! (`fetcher.rs`) and take its high watermark.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use uuid::Uuid;

use tokio::sync::Notify;

use crate::log::PartitionLog;

/// A request's "no leader epoch given" (Kafka's `RecordBatch.NO_PARTITION_LEADER_EPOCH`).
pub const NO_LEADER_EPOCH: i32 = -1;

/// Why a partition cannot serve a request here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    /// No such topic (by name) or partition.
    #[error("unknown topic or partition")]
    Unknown,
    /// No topic with the requested id.
    #[error("unknown topic id")]
    UnknownTopicId,
    /// This broker is not the partition's leader.
    #[error("this broker is not the partition's leader")]
    NotLeader,
    /// The request's leader epoch is older than the partition's: the client's metadata is stale.
    #[error("the request's leader epoch is older than the partition's")]
    FencedLeaderEpoch,
    /// The request's leader epoch is newer than the partition's: this broker has not yet
    /// learnt of the new leader epoch.
    #[error("the request's leader epoch is newer than the partition's")]
    UnknownLeaderEpoch,
}

/// This broker's part in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves produce and consumer fetches; followers pull from it.
    Leader,
    /// Pulls from the leader; serves no client.
    Follower,
}

/// What the cluster decided about a partition: one consistent snapshot, replaced whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub role: Role,
    /// The leader's node id (-1: none).
    pub leader_id: i32,
    /// Grows with every leader change; stamped on every batch the leader appends.
    pub leader_epoch: i32,
    /// Grows with every change of leader, replicas or ISR (Kafka's partition epoch).
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The ISR size below which the leader's high watermark stands still (Kafka's strict
    /// min ISR, KAFKA-15583): `min.insync.replicas`, at most the replica count. Records
    /// appended meanwhile (acks=1) stay uncommitted until the ISR is back at this size; so
    /// a replica that left the ISR then still holds everything committed (KIP-966's
    /// eligible leader replicas rest on it).
    pub min_isr: usize,
}

impl Leadership {
    /// A leader that moves the high watermark with its log end: alone in its ISR, and
    /// allowed to commit alone.
    fn commits_alone(&self) -> bool {
        self.role == Role::Leader
            && self.isr.iter().all(|r| *r == self.leader_id)
            && self.min_isr <= 1
    }

    /// Whether the committed ISR is below the minimum: the high watermark stands still.
    pub fn under_min_isr(&self) -> bool {
        self.isr.len() < self.min_isr
    }
}

/// What a leader knows of one follower, from its fetches (Kafka's `Replica` state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's log end: the offset of its last fetch.
    pub log_end: i64,
    /// When it last fetched, and the leader's log end then.
    pub last_fetch_ms: i64,
    pub leader_end_at_last_fetch: i64,
    /// The last time it had everything the leader had (Kafka's `lastCaughtUpTimeMs`).
    pub last_caught_up_ms: i64,
}

/// A partition replica: the log plus its [`Leadership`], and as leader its followers'
/// progress.
pub struct Partition {
    index: i32,
    topic_id: Uuid,
    log: Arc<PartitionLog>,
    leadership: RwLock<Arc<Leadership>>,
    /// As leader: each follower's progress (forgotten when the leadership changes hands).
    followers: Mutex<HashMap<i32, FollowerProgress>>,
    /// When this broker was first seen leading at the current epoch by an ISR check (ms, the
    /// broker's clock; 0: not yet): a follower of the ISR that never fetched lags from then.
    leading_since_ms: AtomicI64,
    /// An ISR change is with the controller (one at a time per partition, as Kafka).
    altering: AtomicBool,
    /// The replicas an ISR change in flight adds: they count for the high watermark from the
    /// moment it is asked (KIP-497's maximal ISR), so no record is committed that a joining
    /// replica lacks when the controller accepts it.
    joining: Mutex<Vec<i32>>,
}

impl Partition {
    /// A partition this node leads alone (a cluster of one): leader epoch 0, this node its
    /// only replica and in-sync replica, the high watermark following the log end.
    pub fn sole_leader(index: i32, log: Arc<PartitionLog>, node_id: i32) -> Partition {
        let leadership = Leadership {
            role: Role::Leader,
            leader_id: node_id,
            leader_epoch: 0,
            partition_epoch: 0,
            replicas: vec![node_id],
            isr: vec![node_id],
            min_isr: 1,
        };
        Partition::new(index, log, leadership)
    }

    /// A replica opened with its `leadership` (the metadata image's). Its log keeps the high
    /// watermark it has (a restarted replica's checkpointed one) unless this replica leads
    /// alone in its ISR, which moves it to the log end.
    pub fn new(index: i32, log: Arc<PartitionLog>, leadership: Leadership) -> Partition {
        if leadership.role == Role::Leader {
            log.set_leader_epoch(leadership.leader_epoch);
        } else {
            log.set_following();
        }
        log.set_hw_follows_log_end(leadership.commits_alone());
        Partition {
            index,
            log,
            leadership: RwLock::new(Arc::new(leadership)),
            followers: Mutex::new(HashMap::new()),
            leading_since_ms: AtomicI64::new(0),
            altering: AtomicBool::new(false),
            joining: Mutex::new(Vec::new()),
            topic_id: Uuid::nil(),
        }
    }

    /// The same partition, of topic `id`.
    pub fn of_topic(mut self, id: Uuid) -> Partition {
        self.topic_id = id;
        self
    }

    pub fn topic_id(&self) -> Uuid {
        self.topic_id
    }

    /// As leader, the ISR this partition should have now (Kafka's `maybeShrinkIsr` /
    /// `maybeExpandIsr`), if it differs from the current one: followers of the ISR that have
    /// not caught up with the leader's log end for `lag_max_ms` leave it; replicas outside it
    /// whose log end reached the high watermark (and the start of the current leader epoch)
    /// and that do not lag join it. None when nothing changes or this broker does not lead.
    pub fn wanted_isr(&self, now_ms: i64, lag_max_ms: i64) -> Option<Vec<i32>> {
        let l = self.leadership();
        if l.role != Role::Leader {
            return None;
        }
        let since = match self.leading_since_ms.compare_exchange(
            0,
            now_ms,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => now_ms,
            Err(since) => since,
        };
        let hw = self.log.high_watermark();
        let epoch_start = self
            .log
            .epoch_entries()
            .last()
            .filter(|e| e.epoch == l.leader_epoch)
            .map_or(0, |e| e.start_offset);
        let followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        let mut isr: Vec<i32> = l
            .isr
            .iter()
            .copied()
            .filter(|r| {
                if *r == l.leader_id {
                    return true;
                }
                let caught_up = followers
                    .get(r)
                    .map_or(since, |f| f.last_caught_up_ms.max(since));
                now_ms - caught_up <= lag_max_ms
            })
            .collect();
        for r in &l.replicas {
            if isr.contains(r) {
                continue;
            }
            // It joins at the high watermark, with the current epoch's data, and not lagging
            // by the rule that makes members leave (else a paused follower sitting at a high
            // watermark it holds back would leave and join in turn).
            if let Some(f) = followers.get(r) {
                if f.log_end >= hw
                    && f.log_end >= epoch_start
                    && now_ms - f.last_caught_up_ms <= lag_max_ms
                {
                    isr.push(*r);
                }
            }
        }
        isr.sort_unstable();
        let mut now = l.isr.clone();
        now.sort_unstable();
        (isr != now).then_some(isr)
    }

    /// Takes the one in-flight ISR change slot for a change to `isr`; false when a change is
    /// already asked for, or when a replica it adds no longer holds everything below the
    /// high watermark (it moved since `wanted_isr`). From here until [`end_isr_change`] the
    /// replicas it adds count for the high watermark (the maximal ISR).
    ///
    /// [`end_isr_change`]: Partition::end_isr_change
    pub fn begin_isr_change(&self, isr: &[i32]) -> bool {
        if self.altering.swap(true, Ordering::AcqRel) {
            return false;
        }
        let l = self.leadership();
        let added: Vec<i32> = isr.iter().copied().filter(|r| !l.isr.contains(r)).collect();
        *self.joining.lock().unwrap_or_else(|p| p.into_inner()) = added.clone();
        if !added.is_empty() {
            // A leader alone in its ISR stops moving the high watermark with its log end.
            self.log.set_hw_follows_log_end(false);
        }
        // Checked after the joiners count: the high watermark cannot pass them any more.
        let hw = self.log.high_watermark();
        let followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        if added
            .iter()
            .any(|r| followers.get(r).is_none_or(|f| f.log_end < hw))
        {
            drop(followers);
            self.end_isr_change();
            return false;
        }
        true
    }

    pub fn end_isr_change(&self) {
        self.joining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        // Back to what the leadership (perhaps the changed one) says.
        let l = self.leadership();
        self.log.set_hw_follows_log_end(l.commits_alone());
        self.altering.store(false, Ordering::Release);
        self.maybe_advance_high_watermark(&l);
    }

    /// A follower fetched from `fetch_offset` (its log end) at `now_ms`: remembered, and the
    /// high watermark moved to the smallest log end of the in-sync replicas (this leader's
    /// included). Refused (NOT_LEADER_OR_FOLLOWER) when this broker does not lead or
    /// `replica` is not one of the partition's replicas.
    pub fn follower_fetched(
        &self,
        replica: i32,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Result<(), PartitionError> {
        let l = self.leadership();
        if l.role != Role::Leader || replica == l.leader_id || !l.replicas.contains(&replica) {
            return Err(PartitionError::NotLeader);
        }
        let leader_end = self.log.log_end_offset();
        {
            let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
            let before = followers.get(&replica).copied();
            let caught_up = if fetch_offset >= leader_end {
                now_ms
            } else {
                match before {
                    // It has what the leader had at its previous fetch (Kafka's rule).
                    Some(b) if fetch_offset >= b.leader_end_at_last_fetch => b.last_fetch_ms,
                    Some(b) => b.last_caught_up_ms,
                    None => -1,
                }
            };
            followers.insert(
                replica,
                FollowerProgress {
                    log_end: fetch_offset,
                    last_fetch_ms: now_ms,
                    leader_end_at_last_fetch: leader_end,
                    last_caught_up_ms: caught_up,
                },
            );
        }
        self.maybe_advance_high_watermark(&l);
        Ok(())
    }

    /// A follower's progress as this leader knows it.
    pub fn follower_progress(&self, replica: i32) -> Option<FollowerProgress> {
        self.followers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&replica)
            .copied()
    }

    /// As leader, moves the high watermark to the smallest log end over the ISR (a follower
    /// of the ISR that has not fetched since this broker leads holds it where it is).
    fn maybe_advance_high_watermark(&self, l: &Leadership) {
        if l.role != Role::Leader || l.under_min_isr() {
            return;
        }
        let mut hw = self.log.log_end_offset();
        {
            let joining = self
                .joining
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
            for r in l
                .isr
                .iter()
                .chain(joining.iter().filter(|j| !l.isr.contains(j)))
                .filter(|r| **r != l.leader_id)
            {
                match followers.get(r) {
                    Some(f) => hw = hw.min(f.log_end),
                    None => return,
                }
            }
        }
        self.log.advance_high_watermark(hw);
    }

    pub fn index(&self) -> i32 {
        self.index
    }

    pub fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// The current leadership (a snapshot: later changes replace it, never edit it).
    pub fn leadership(&self) -> Arc<Leadership> {
        self.leadership
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The offset below which records are committed (consumers read below it).
    pub fn high_watermark(&self) -> i64 {
        self.log.high_watermark()
    }

    /// Notified when the high watermark advances; consumer fetches wait on it.
    pub fn hw_advanced(&self) -> &Notify {
        self.log.hw_advanced()
    }

    /// Checks a request against the leadership: the leader epoch first (when the request
    /// names one), then that this broker leads, as Kafka orders them.
    pub fn check_leader(&self, leader_epoch: Option<i32>) -> Result<(), PartitionError> {
        let l = self.leadership();
        match leader_epoch {
            Some(e) if e != NO_LEADER_EPOCH && e < l.leader_epoch => {
                return Err(PartitionError::FencedLeaderEpoch)
            }
            Some(e) if e != NO_LEADER_EPOCH && e > l.leader_epoch => {
                return Err(PartitionError::UnknownLeaderEpoch)
            }
            _ => {}
        }
        if l.role != Role::Leader {
            return Err(PartitionError::NotLeader);
        }
        Ok(())
    }

    /// As [`Partition::check_leader`] for a read any replica may serve (a consumer's fetch
    /// from a follower, KIP-392): the leader epoch only, as Kafka's follower reads check it.
    pub fn check_replica(&self, leader_epoch: Option<i32>) -> Result<(), PartitionError> {
        let l = self.leadership();
        match leader_epoch {
            Some(e) if e != NO_LEADER_EPOCH && e < l.leader_epoch => {
                Err(PartitionError::FencedLeaderEpoch)
            }
            Some(e) if e != NO_LEADER_EPOCH && e > l.leader_epoch => {
                Err(PartitionError::UnknownLeaderEpoch)
            }
            _ => Ok(()),
        }
    }

    /// Replaces the leadership (the metadata log's decisions, and tests). A leader epoch never
    /// goes back.
    pub fn set_leadership(&self, next: Leadership) {
        let mut l = self.leadership.write().unwrap_or_else(|p| p.into_inner());
        assert!(
            next.leader_epoch >= l.leader_epoch,
            "leader epochs only grow: {} after {}",
            next.leader_epoch,
            l.leader_epoch
        );
        if next.role == Role::Leader {
            // What this replica appends as leader from now on carries the new epoch; waits
            // for the replication of an older leadership's appends give up.
            self.log.set_leader_epoch(next.leader_epoch);
        } else {
            // Leader appends are refused from here on, and such waits give up.
            self.log.set_following();
        }
        // A leader alone in its ISR (and allowed to commit alone) moves the high watermark
        // with its log end; a leader with followers in its ISR moves it as they fetch
        // (`follower_fetched`), never while its ISR is below the minimum; a follower's is the
        // leader's, as its fetches learn it (`fetcher.rs`).
        self.log.set_hw_follows_log_end(next.commits_alone());
        if next.role != Role::Leader || next.leader_epoch != l.leader_epoch {
            self.followers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        if next.role != Role::Leader || next.leader_epoch != l.leader_epoch {
            // Set by the first ISR check under the new leadership, in the broker's clock.
            self.leading_since_ms.store(0, Ordering::Relaxed);
        }
        let next = Arc::new(next);
        *l = next.clone();
        drop(l);
        // A smaller ISR may let the high watermark move now.
        self.maybe_advance_high_watermark(&next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogConfig;

    fn partition() -> Partition {
        Partition::sole_leader(
            0,
            Arc::new(PartitionLog::in_memory(LogConfig::default())),
            7,
        )
    }

    #[test]
    fn sole_leader_answers_any_current_epoch() {
        let p = partition();
        let l = p.leadership();
        assert_eq!((l.leader_id, l.leader_epoch), (7, 0));
        assert_eq!((l.replicas.clone(), l.isr.clone()), (vec![7], vec![7]));
        assert_eq!(p.check_leader(None), Ok(()));
        assert_eq!(p.check_leader(Some(NO_LEADER_EPOCH)), Ok(()));
        assert_eq!(p.check_leader(Some(0)), Ok(()));
        assert_eq!(
            p.check_leader(Some(1)),
            Err(PartitionError::UnknownLeaderEpoch)
        );
    }

    #[test]
    fn epochs_are_checked_before_the_role() {
        let p = partition();
        p.set_leadership(Leadership {
            role: Role::Follower,
            leader_id: 8,
            leader_epoch: 3,
            partition_epoch: 4,
            replicas: vec![7, 8],
            isr: vec![8],
            min_isr: 1,
        });
        assert_eq!(
            p.check_leader(Some(2)),
            Err(PartitionError::FencedLeaderEpoch)
        );
        assert_eq!(
            p.check_leader(Some(4)),
            Err(PartitionError::UnknownLeaderEpoch)
        );
        assert_eq!(p.check_leader(Some(3)), Err(PartitionError::NotLeader));
        assert_eq!(p.check_leader(None), Err(PartitionError::NotLeader));
    }

    fn leading(epoch: i32, isr: Vec<i32>) -> Leadership {
        Leadership {
            role: Role::Leader,
            leader_id: 7,
            leader_epoch: epoch,
            partition_epoch: epoch,
            replicas: vec![7, 8],
            isr,
            min_isr: 1,
        }
    }

    fn following(epoch: i32) -> Leadership {
        Leadership {
            role: Role::Follower,
            leader_id: 8,
            ..leading(epoch, vec![7, 8])
        }
    }

    fn append(log: &PartitionLog) -> Result<crate::log::AppendInfo, crate::log::LogError> {
        let mut batch = crate::log::batch::tests::encode_batch(
            1,
            kafka_protocol::records::Compression::None,
            1000,
        );
        log.append(&mut batch, None)
    }

    /// The replication wait of a write holds only while its replica leads at the write's
    /// epoch: a demotion, or a demotion and a new leadership whose high watermark passes the
    /// write's offsets (the write may have been truncated in between), ends it.
    #[test]
    fn a_write_is_committed_only_under_the_leadership_it_was_written_in() {
        use crate::log::HwWaitError;
        use std::time::Duration;
        let log = Arc::new(PartitionLog::in_memory(LogConfig::default()));
        let p = Partition::new(0, log.clone(), leading(1, vec![7, 8]));
        let info = append(&log).unwrap();
        assert_eq!(info.leader_epoch, 1);
        let upto = info.last_offset + 1;
        assert_eq!(
            log.wait_high_watermark(upto, 1, Duration::from_millis(5)),
            Err(HwWaitError::TimedOut)
        );
        p.set_leadership(following(2));
        assert_eq!(
            append(&log).err().map(|e| e.to_string()),
            Some(crate::log::LogError::NotLeader.to_string()),
            "a follower refuses leader appends"
        );
        assert_eq!(
            log.wait_high_watermark(upto, 1, Duration::from_secs(5)),
            Err(HwWaitError::LeadershipChanged)
        );
        // Leading again, alone: the high watermark passes the offsets, not the old write.
        p.set_leadership(leading(3, vec![7]));
        assert!(log.high_watermark() >= upto);
        assert_eq!(
            log.wait_high_watermark(upto, 1, Duration::from_secs(5)),
            Err(HwWaitError::LeadershipChanged)
        );
        assert!(!log.leads_at(1));
        let again = append(&log).unwrap();
        assert_eq!(again.leader_epoch, 3);
        assert_eq!(
            log.wait_high_watermark(again.last_offset + 1, 3, Duration::from_secs(5)),
            Ok(())
        );
    }

    /// A replica opened after a restart keeps the high watermark it is given (its
    /// checkpointed one) as a follower or as a leader with followers in its ISR; only a
    /// leader alone in its ISR takes its log end.
    #[test]
    fn an_opened_replica_keeps_its_restored_high_watermark_unless_alone() {
        for (leadership, want) in [
            (following(4), 1),
            (leading(4, vec![7, 8]), 1),
            (leading(4, vec![7]), 3),
        ] {
            let log = Arc::new(PartitionLog::in_memory(LogConfig::default()));
            for _ in 0..3 {
                append(&log).unwrap();
            }
            log.restore_high_watermark(1);
            assert_eq!(log.high_watermark(), 1);
            let p = Partition::new(0, log.clone(), leadership.clone());
            assert_eq!(p.high_watermark(), want, "{leadership:?}");
        }
        let log = PartitionLog::in_memory(LogConfig::default());
        append(&log).unwrap();
        log.restore_high_watermark(99);
        assert_eq!(log.high_watermark(), 1, "clamped to the log end");
    }

    /// Kafka's strict min ISR: below `min_isr` the high watermark stands still, even for a
    /// leader alone in its ISR whose followers have everything; back at the minimum it moves.
    #[test]
    fn the_high_watermark_stands_still_while_the_isr_is_below_the_minimum() {
        let log = Arc::new(PartitionLog::in_memory(LogConfig::default()));
        let strict = |isr: Vec<i32>| Leadership {
            min_isr: 2,
            ..leading(1, isr)
        };
        let p = Partition::new(0, log.clone(), strict(vec![7, 8]));
        append(&log).unwrap();
        assert_eq!(p.follower_fetched(8, 1, 10), Ok(()));
        assert_eq!(p.high_watermark(), 1, "at the minimum: committed");
        p.set_leadership(strict(vec![7]));
        assert!(p.leadership().under_min_isr());
        append(&log).unwrap();
        append(&log).unwrap();
        assert_eq!(p.follower_fetched(8, 3, 20), Ok(()));
        assert_eq!(
            p.high_watermark(),
            1,
            "alone below the minimum: nothing committed"
        );
        // The follower rejoins: the high watermark moves to what both have.
        p.set_leadership(strict(vec![7, 8]));
        assert_eq!(p.high_watermark(), 3);
        // With a minimum of 1 a leader alone commits as it appends.
        p.set_leadership(leading(1, vec![7]));
        append(&log).unwrap();
        assert_eq!(p.high_watermark(), 4);
    }

    #[test]
    #[should_panic(expected = "leader epochs only grow")]
    fn leader_epochs_never_go_back() {
        let p = partition();
        let mut l = (*p.leadership()).clone();
        l.leader_epoch = 2;
        p.set_leadership(l.clone());
        l.leader_epoch = 1;
        p.set_leadership(l);
    }
}

#[cfg(test)]
mod isr_tests {
    use super::*;
    use crate::log::LogConfig;

    fn led(isr: Vec<i32>) -> Partition {
        let p = Partition::sole_leader(
            0,
            Arc::new(PartitionLog::in_memory(LogConfig::default())),
            1,
        );
        p.set_leadership(Leadership {
            role: Role::Leader,
            leader_id: 1,
            leader_epoch: 1,
            partition_epoch: 1,
            replicas: vec![1, 2, 3],
            isr,
            min_isr: 1,
        });
        p
    }

    #[test]
    fn lagging_followers_leave_and_caught_up_ones_join() {
        let p = led(vec![1, 2, 3]);
        let start = 1_000_000;
        // Nobody fetched yet: within the lag time nothing changes, after it both leave.
        assert_eq!(p.wanted_isr(start, 2000), None);
        assert_eq!(p.wanted_isr(start + 1000, 2000), None);
        assert_eq!(p.wanted_isr(start + 2001, 2000), Some(vec![1]));
        // Follower 2 fetches at the log end: it stays; 3 still leaves.
        assert_eq!(p.follower_fetched(2, 0, start + 2500), Ok(()));
        assert_eq!(p.wanted_isr(start + 3000, 2000), Some(vec![1, 2]));
        // A follower that stopped at the high watermark it holds back leaves and stays out.
        let p2 = led(vec![1, 2]);
        assert_eq!(p2.wanted_isr(start, 2000), None);
        assert_eq!(p2.follower_fetched(2, 0, start), Ok(()));
        assert_eq!(p2.wanted_isr(start + 5000, 2000), Some(vec![1]));
        // The high watermark waits for both in-sync followers.
        let p = led(vec![1, 2]);
        let t = 5_000_000;
        assert_eq!(p.wanted_isr(t, 2000), None);
        assert_eq!(p.follower_fetched(3, 0, t), Ok(()));
        assert_eq!(
            p.wanted_isr(t, 2000),
            Some(vec![1, 2, 3]),
            "3 caught up: joins"
        );
        assert_eq!(
            p.follower_fetched(4, 0, t),
            Err(PartitionError::NotLeader),
            "not a replica"
        );
    }
}
