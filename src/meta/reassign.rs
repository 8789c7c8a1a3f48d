//! Partition reassignment (Kafka's AlterPartitionReassignments, KIP-455), decided by the
//! active controller as pure functions of the image:
//!
//! 1. Start: the partition's replicas become the target followed by the original replicas
//!    that leave; `adding` are the target's new ones, `removing` the original ones not in it.
//!    The new replicas open their logs and fetch from the leader like any follower.
//! 2. Each ISR change (AlterPartition) checks whether every target replica is in the ISR; then
//!    the reassignment completes in the same entry: replicas = the target, ISR = ISR ∩ target,
//!    and a leader that leaves gives way to the first target replica of the ISR (a clean
//!    election). The leaving replicas' brokers delete their copies when they apply it.
//! 3. Cancel (a null target): back to the original replicas (the current ones but the
//!    adding), the adding ones out of the ISR.
//!
//! A reassignment whose target is already in the ISR completes at once (a reorder, or a
//! smaller replication factor); a new one replacing one in progress starts from the original
//! replicas, as Kafka does.

use uuid::Uuid;

use super::image::{MetadataImage, PartitionImage, TopicImage};
use super::records::MetaRecord;

/// Why a reassignment request was refused for one partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ReassignError {
    /// No such topic or partition (UNKNOWN_TOPIC_OR_PARTITION).
    Unknown,
    /// The target is empty, repeats a broker or names one that is not registered
    /// (INVALID_REPLICA_ASSIGNMENT).
    Invalid(String),
    /// A cancel for a partition without a reassignment (NO_REASSIGNMENT_IN_PROGRESS).
    NoneInProgress,
    /// The target changes the replication factor and the request does not allow it
    /// (AlterPartitionReassignments v1, KIP-860: INVALID_REPLICATION_FACTOR).
    ReplicationFactorChange,
}

/// The replicas a partition had before its reassignment started.
pub fn original(p: &PartitionImage) -> Vec<i32> {
    p.replicas
        .iter()
        .copied()
        .filter(|r| !p.adding.contains(r))
        .collect()
}

/// The records of a reassignment of `topic`'s partition `index` to `target` (None: cancel).
pub fn reassign(
    image: &MetadataImage,
    topic: &TopicImage,
    index: i32,
    target: Option<&[i32]>,
    allow_rf_change: bool,
) -> Result<Vec<MetaRecord>, ReassignError> {
    let i = usize::try_from(index).map_err(|_| ReassignError::Unknown)?;
    let p = topic.partitions.get(i).ok_or(ReassignError::Unknown)?;
    let Some(target) = target else {
        if p.adding.is_empty() && p.removing.is_empty() {
            return Err(ReassignError::NoneInProgress);
        }
        let replicas = original(p);
        let mut isr: Vec<i32> = p
            .isr
            .iter()
            .copied()
            .filter(|r| replicas.contains(r))
            .collect();
        if isr.is_empty() {
            isr = p.isr.clone();
        }
        return Ok(finish(topic.id, index, p, replicas, isr, image));
    };
    if target.is_empty() {
        return Err(ReassignError::Invalid("an empty replica list".into()));
    }
    let mut seen = target.to_vec();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != target.len() {
        return Err(ReassignError::Invalid(format!(
            "{target:?} names a broker twice"
        )));
    }
    if let Some(b) = target.iter().find(|b| !image.brokers.contains_key(b)) {
        return Err(ReassignError::Invalid(format!(
            "broker {b} is not registered"
        )));
    }
    let from = original(p);
    if !allow_rf_change && target.len() != from.len() {
        return Err(ReassignError::ReplicationFactorChange);
    }
    if target.iter().all(|r| p.isr.contains(r)) {
        // Nothing to copy: complete now.
        let isr: Vec<i32> = p
            .isr
            .iter()
            .copied()
            .filter(|r| target.contains(r))
            .collect();
        return Ok(finish(topic.id, index, p, target.to_vec(), isr, image));
    }
    let mut replicas = target.to_vec();
    replicas.extend(from.iter().copied().filter(|r| !target.contains(r)));
    let adding: Vec<i32> = target
        .iter()
        .copied()
        .filter(|r| !from.contains(r))
        .collect();
    let removing: Vec<i32> = from
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    // Replicas added by a reassignment this one replaces leave the ISR with it.
    let isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| replicas.contains(r))
        .collect();
    Ok(vec![
        MetaRecord::PartitionChange {
            topic_id: topic.id,
            index,
            isr: (isr != p.isr).then_some(isr),
            leader: None,
            replicas: (replicas != p.replicas).then_some(replicas),
            elr: None,
        },
        MetaRecord::PartitionReassignment {
            topic_id: topic.id,
            index,
            adding,
            removing,
        },
    ])
}

/// The records that end a reassignment with `replicas` and `isr`: the reassignment cleared,
/// and a leader outside the new replicas replaced by the first of them in the ISR.
fn finish(
    topic_id: Uuid,
    index: i32,
    p: &PartitionImage,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    image: &MetadataImage,
) -> Vec<MetaRecord> {
    let leader = if replicas.contains(&p.leader) {
        p.leader
    } else {
        replicas
            .iter()
            .copied()
            .find(|r| isr.contains(r) && image.is_alive(*r))
            .unwrap_or(super::election::NO_LEADER)
    };
    let mut out = vec![MetaRecord::PartitionChange {
        topic_id,
        index,
        isr: (isr != p.isr).then_some(isr),
        leader: (leader != p.leader).then_some(leader),
        replicas: (replicas != p.replicas).then_some(replicas),
        elr: None,
    }];
    if !p.adding.is_empty() || !p.removing.is_empty() {
        out.push(MetaRecord::PartitionReassignment {
            topic_id,
            index,
            adding: Vec::new(),
            removing: Vec::new(),
        });
    }
    out
}

/// An ISR change of a partition under reassignment: when the new ISR holds every target
/// replica, the records that complete it (replacing the plain ISR change); None otherwise.
pub fn complete_if_caught_up(
    image: &MetadataImage,
    topic_id: Uuid,
    index: i32,
    p: &PartitionImage,
    new_isr: &[i32],
) -> Option<Vec<MetaRecord>> {
    if p.adding.is_empty() && p.removing.is_empty() {
        return None;
    }
    let target: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| !p.removing.contains(r))
        .collect();
    if !target.iter().all(|r| new_isr.contains(r)) {
        return None;
    }
    let isr: Vec<i32> = new_isr
        .iter()
        .copied()
        .filter(|r| target.contains(r))
        .collect();
    // The ISR change itself is part of the completion: compare against the old partition.
    Some(finish(topic_id, index, p, target, isr, image))
}

/// A reassignment in progress (ListPartitionReassignments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ongoing {
    pub topic: String,
    pub index: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// The partitions with a reassignment in progress (of `only`, when given).
pub fn in_progress(image: &MetadataImage, only: Option<&[(String, i32)]>) -> Vec<Ongoing> {
    let mut out = Vec::new();
    for t in image.topics_by_name() {
        for (i, p) in t.partitions.iter().enumerate() {
            if p.adding.is_empty() && p.removing.is_empty() {
                continue;
            }
            if only.is_some_and(|o| !o.iter().any(|(n, x)| *n == t.name && *x == i as i32)) {
                continue;
            }
            out.push(Ongoing {
                topic: t.name.clone(),
                index: i as i32,
                replicas: p.replicas.clone(),
                adding: p.adding.clone(),
                removing: p.removing.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::image::Delta;
    use crate::meta::records::Endpoint;

    const T: Uuid = Uuid::from_u128(9);

    fn log_id(index: u64) -> crate::meta::LogId {
        openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index)
    }

    /// Brokers 1..=4 alive, topic "t" with one partition on 1, 2, 3 led by 1.
    fn image() -> MetadataImage {
        let mut img = MetadataImage::default();
        let mut delta = Delta::default();
        let mut n = 0;
        let mut apply = |img: &mut MetadataImage, r: MetaRecord| {
            n += 1;
            img.apply(log_id(n), &[r], &mut delta);
        };
        for id in 1..=4 {
            apply(
                &mut img,
                MetaRecord::RegisterBroker {
                    id,
                    incarnation: Uuid::from_u128(id as u128),
                    endpoints: vec![Endpoint {
                        name: "PLAINTEXT".into(),
                        host: "h".into(),
                        port: 1,
                        security_protocol: 0,
                    }],
                    rack: None,
                },
            );
            let epoch = img.brokers[&id].epoch;
            apply(&mut img, MetaRecord::UnfenceBroker { id, epoch });
        }
        apply(
            &mut img,
            MetaRecord::Topic {
                name: "t".into(),
                id: T,
            },
        );
        apply(
            &mut img,
            MetaRecord::Partition {
                topic_id: T,
                index: 0,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            },
        );
        img
    }

    fn applied(img: &MetadataImage, records: Vec<MetaRecord>) -> MetadataImage {
        let mut next = img.clone();
        let mut delta = Delta::default();
        next.apply(log_id(100), &records, &mut delta);
        next
    }

    fn part(img: &MetadataImage) -> PartitionImage {
        img.topics[&T].partitions[0].clone()
    }

    #[test]
    fn a_move_adds_then_switches_once_the_new_replica_caught_up() {
        let img = image();
        let t = img.topics[&T].clone();
        let img = applied(
            &img,
            reassign(&img, &t, 0, Some(&[4, 2, 3]), true).expect("starts"),
        );
        let p = part(&img);
        assert_eq!(p.replicas, [4, 2, 3, 1]);
        assert_eq!((p.adding.clone(), p.removing.clone()), (vec![4], vec![1]));
        assert_eq!(p.leader, 1);
        assert_eq!(
            in_progress(&img, None),
            [Ongoing {
                topic: "t".into(),
                index: 0,
                replicas: vec![4, 2, 3, 1],
                adding: vec![4],
                removing: vec![1]
            }]
        );
        // Not caught up: a plain ISR change.
        assert!(complete_if_caught_up(&img, T, 0, &p, &[1, 2]).is_none());
        let done = complete_if_caught_up(&img, T, 0, &p, &[1, 2, 3, 4]).expect("completes");
        let img = applied(&img, done);
        let p = part(&img);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone()),
            (vec![4, 2, 3], vec![2, 3, 4])
        );
        assert_eq!(
            p.leader, 4,
            "the leaving leader gives way to the first target replica"
        );
        assert!(p.adding.is_empty() && p.removing.is_empty());
        assert!(in_progress(&img, None).is_empty());
    }

    #[test]
    fn cancels_reorders_and_bad_targets() {
        let img = image();
        let t = img.topics[&T].clone();
        assert_eq!(
            reassign(&img, &t, 0, None, true),
            Err(ReassignError::NoneInProgress)
        );
        assert_eq!(
            reassign(&img, &t, 3, Some(&[1]), true),
            Err(ReassignError::Unknown)
        );
        assert!(matches!(
            reassign(&img, &t, 0, Some(&[1, 1]), true),
            Err(ReassignError::Invalid(_))
        ));
        assert!(matches!(
            reassign(&img, &t, 0, Some(&[1, 9]), true),
            Err(ReassignError::Invalid(_))
        ));
        assert_eq!(
            reassign(&img, &t, 0, Some(&[3, 1]), false),
            Err(ReassignError::ReplicationFactorChange)
        );
        // A reorder / a smaller replication factor completes at once.
        let now = applied(
            &img,
            reassign(&img, &t, 0, Some(&[3, 1]), true).expect("shrinks"),
        );
        let p = part(&now);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![3, 1], vec![1, 3], 1)
        );
        // Started, then cancelled: the original replicas (in the order the move left them,
        // as Kafka's revert does), the added one out of the ISR.
        let started = applied(
            &img,
            reassign(&img, &t, 0, Some(&[4, 2, 3]), true).expect("starts"),
        );
        let t2 = started.topics[&T].clone();
        let cancelled = applied(
            &started,
            reassign(&started, &t2, 0, None, true).expect("cancels"),
        );
        let p = part(&cancelled);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone()),
            (vec![2, 3, 1], vec![1, 2, 3])
        );
        assert!(p.adding.is_empty() && p.removing.is_empty());
    }
}
