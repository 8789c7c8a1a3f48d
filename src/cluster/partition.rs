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

use std::sync::{Arc, RwLock};

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
}

/// A partition replica: the log plus its [`Leadership`].
pub struct Partition {
    index: i32,
    log: Arc<PartitionLog>,
    leadership: RwLock<Arc<Leadership>>,
}

impl Partition {
    /// A partition this node leads alone (a cluster of one): leader epoch 0, this node its
    /// only replica and in-sync replica, the high watermark following the log end.
    pub fn sole_leader(index: i32, log: Arc<PartitionLog>, node_id: i32) -> Partition {
        log.set_hw_follows_log_end(true);
        Partition {
            index,
            log,
            leadership: RwLock::new(Arc::new(Leadership {
                role: Role::Leader,
                leader_id: node_id,
                leader_epoch: 0,
                partition_epoch: 0,
                replicas: vec![node_id],
                isr: vec![node_id],
            })),
        }
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
            // What this replica appends as leader from now on carries the new epoch.
            self.log.set_leader_epoch(next.leader_epoch);
        }
        // A leader's high watermark follows its log end (followers are not counted yet: the
        // replication issue's next step); a follower's is the leader's, as its fetches learn
        // it (`fetcher.rs`).
        self.log.set_hw_follows_log_end(next.role == Role::Leader);
        *l = Arc::new(next);
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
