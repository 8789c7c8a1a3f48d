//! Leader election, decided by the active controller (Kafka's `PartitionChangeBuilder` and
//! `ReplicationControlManager`): which partition changes follow when brokers are fenced or
//! unfenced, and preferred-leader elections (ElectLeaders, automatic rebalancing).
//!
//! The rules (Kafka's, without KIP-966's eligible leader replicas):
//! - A fenced broker leaves every ISR; a partition it led gets the first replica (in replica
//!   order) that is in the remaining ISR and alive. That is a clean election: every
//!   acknowledged record is on every ISR member, so on the new leader.
//! - With no such replica the partition goes offline (leader -1) and its ISR keeps its last
//!   member: only that replica is known to hold everything acknowledged, and it leads again
//!   when it comes back. Nothing is elected from outside the ISR unless the topic sets
//!   `unclean.leader.election.enable=true` (then the first alive replica leads, alone in the
//!   ISR, and what only the old ISR held is lost, as in Kafka).
//! - An unfenced broker leads the offline partitions whose ISR holds it (or, with unclean
//!   election, those with no ISR member alive).
//! - A leader change bumps the leader epoch (the image does it when it applies the record).

use uuid::Uuid;

use super::image::{MetadataImage, PartitionImage, TopicImage};
use super::records::MetaRecord;

/// Kafka's "no leader".
pub const NO_LEADER: i32 = -1;

/// Whether `topic` allows electing a leader from outside the ISR.
pub fn unclean_allowed(topic: &TopicImage) -> bool {
    topic
        .configs
        .get("unclean.leader.election.enable")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The change of one partition, if anything changes.
fn change(
    topic_id: Uuid,
    index: usize,
    p: &PartitionImage,
    leader: i32,
    isr: Vec<i32>,
) -> Option<MetaRecord> {
    let leader_changes = leader != p.leader;
    let isr_changes = isr != p.isr;
    (leader_changes || isr_changes).then(|| MetaRecord::PartitionChange {
        topic_id,
        index: index as i32,
        isr: isr_changes.then_some(isr),
        leader: leader_changes.then_some(leader),
        replicas: None,
    })
}

/// The partition changes fencing `fenced` implies: they leave every ISR, and the partitions
/// they led get new leaders by the module's rules. Several brokers fenced together are taken
/// one after the other, in the order given (Kafka fences one per decision), so an ISR whose
/// members all go keeps the last of them.
///
/// `controlled`: the brokers asked to stop (controlled shutdown). A partition with a single
/// replica then keeps its leader (fenced, so offline until it returns): no other replica can
/// ever lead it, so a single node or an RF 1 partition restarts without an election and its
/// coordinators are not resigned on the way down. A replicated partition goes by the rules
/// above, as in Kafka.
pub fn on_fence(image: &MetadataImage, fenced: &[i32], controlled: bool) -> Vec<MetaRecord> {
    let alive = |r: &i32| image.is_alive(*r) && !fenced.contains(r);
    let mut out = Vec::new();
    for t in image.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            if !fenced.contains(&p.leader) && !p.isr.iter().any(|r| fenced.contains(r)) {
                continue;
            }
            let (mut leader, mut isr) = (p.leader, p.isr.clone());
            for b in fenced {
                // The last ISR member stays in it: it alone is known to hold every
                // acknowledged record, and leads again when it comes back.
                if isr.len() > 1 {
                    isr.retain(|r| r != b);
                }
                if leader != *b {
                    continue;
                }
                if let Some(&c) = p.replicas.iter().find(|r| isr.contains(r) && alive(r)) {
                    leader = c;
                } else if controlled && p.replicas.len() == 1 {
                    // Stays (see the doc comment).
                } else if let Some(&c) = p
                    .replicas
                    .iter()
                    .find(|r| alive(r))
                    .filter(|_| unclean_allowed(t))
                {
                    tracing::warn!(topic = %t.name, partition = i, leader = c, isr = ?isr,
                        "unclean leader election: records only the old ISR held are lost");
                    (leader, isr) = (c, vec![c]);
                } else {
                    leader = NO_LEADER;
                }
            }
            out.extend(change(t.id, i, p, leader, isr));
        }
    }
    out
}

/// The partition changes unfencing `broker` implies: it leads the offline partitions whose
/// ISR holds it, and with unclean election those whose ISR has no alive member.
pub fn on_unfence(image: &MetadataImage, broker: i32) -> Vec<MetaRecord> {
    let mut out = Vec::new();
    for t in image.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            if p.leader != NO_LEADER || !p.replicas.contains(&broker) {
                continue;
            }
            if p.isr.contains(&broker) {
                out.extend(change(t.id, i, p, broker, p.isr.clone()));
            } else if unclean_allowed(t) && !p.isr.iter().any(|r| image.is_alive(*r)) {
                tracing::warn!(topic = %t.name, partition = i, leader = broker, isr = ?p.isr,
                    "unclean leader election: records only the old ISR held are lost");
                out.extend(change(t.id, i, p, broker, vec![broker]));
            }
        }
    }
    out
}

/// Why a requested election did not happen (ElectLeaders' per-partition errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ElectionError {
    /// No such topic or partition.
    Unknown,
    /// The wanted leader already leads.
    NotNeeded,
    /// The preferred replica is not alive or not in the ISR (PREFERRED_LEADER_NOT_AVAILABLE).
    PreferredNotAvailable,
    /// No replica can lead (ELIGIBLE_LEADERS_NOT_AVAILABLE).
    EligibleNotAvailable,
}

/// Kafka's ElectLeaders election types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElectionType {
    /// The first replica leads, if it is alive and in the ISR.
    Preferred,
    /// An offline partition gets the first alive replica, even outside the ISR.
    Unclean,
}

/// The election of one partition by `kind`: its change record, or why there is none.
pub fn elect(
    image: &MetadataImage,
    topic: &TopicImage,
    index: i32,
    kind: ElectionType,
) -> Result<MetaRecord, ElectionError> {
    let i = usize::try_from(index).map_err(|_| ElectionError::Unknown)?;
    let p = topic.partitions.get(i).ok_or(ElectionError::Unknown)?;
    match kind {
        ElectionType::Preferred => {
            let &preferred = p.replicas.first().ok_or(ElectionError::Unknown)?;
            if p.leader == preferred {
                return Err(ElectionError::NotNeeded);
            }
            if !image.is_alive(preferred) || !p.isr.contains(&preferred) {
                return Err(ElectionError::PreferredNotAvailable);
            }
            change(topic.id, i, p, preferred, p.isr.clone()).ok_or(ElectionError::NotNeeded)
        }
        ElectionType::Unclean => {
            if p.leader != NO_LEADER && image.is_alive(p.leader) {
                return Err(ElectionError::NotNeeded);
            }
            if let Some(&c) = p
                .replicas
                .iter()
                .find(|r| p.isr.contains(r) && image.is_alive(**r))
            {
                return change(topic.id, i, p, c, p.isr.clone()).ok_or(ElectionError::NotNeeded);
            }
            let &c = p
                .replicas
                .iter()
                .find(|r| image.is_alive(**r))
                .ok_or(ElectionError::EligibleNotAvailable)?;
            tracing::warn!(topic = %topic.name, partition = index, leader = c, isr = ?p.isr,
                "unclean leader election (ElectLeaders): records only the old ISR held are lost");
            change(topic.id, i, p, c, vec![c]).ok_or(ElectionError::NotNeeded)
        }
    }
}

/// Automatic leader rebalancing (Kafka's `auto.leader.rebalance.enable`): for every broker
/// whose share of partitions it should lead (as their first replica) but does not exceeds
/// `imbalance_percent` (Kafka's `leader.imbalance.per.broker.percentage`, 10), the preferred
/// elections that can happen now.
pub fn rebalance(image: &MetadataImage, imbalance_percent: u32) -> Vec<MetaRecord> {
    use std::collections::BTreeMap;
    // Per preferred broker: (partitions it prefers, of which it does not lead).
    let mut counts: BTreeMap<i32, (usize, usize)> = BTreeMap::new();
    for t in image.topics.values() {
        for p in &t.partitions {
            if let Some(&preferred) = p.replicas.first() {
                let c = counts.entry(preferred).or_default();
                c.0 += 1;
                if p.leader != preferred {
                    c.1 += 1;
                }
            }
        }
    }
    let over: Vec<i32> = counts
        .into_iter()
        .filter(|(b, (all, not_led))| {
            image.is_alive(*b) && *not_led * 100 > *all * imbalance_percent as usize
        })
        .map(|(b, _)| b)
        .collect();
    let mut out = Vec::new();
    for t in image.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            if p.replicas.first().is_some_and(|b| over.contains(b)) {
                if let Ok(r) = elect(image, t, i as i32, ElectionType::Preferred) {
                    out.push(r);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::image::Delta;
    use crate::meta::records::Endpoint;

    const T: Uuid = Uuid::from_u128(7);

    fn log_id(index: u64) -> crate::meta::LogId {
        openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index)
    }

    /// An image with brokers 1..=3 registered and unfenced but `fenced`, and topic "t" with
    /// one partition of `replicas`, `isr` and `leader`.
    fn image(fenced: &[i32], replicas: &[i32], isr: &[i32], leader: i32) -> MetadataImage {
        let mut records = Vec::new();
        for id in 1..=3 {
            records.push(MetaRecord::RegisterBroker {
                id,
                incarnation: Uuid::from_u128(id as u128),
                endpoints: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "h".into(),
                    port: 1,
                    security_protocol: 0,
                }],
                rack: None,
            });
        }
        let mut img = MetadataImage::default();
        let mut delta = Delta::default();
        for (n, r) in records.iter().enumerate() {
            img.apply(log_id(n as u64 + 1), std::slice::from_ref(r), &mut delta);
        }
        let mut later = Vec::new();
        for id in 1..=3 {
            let epoch = img.brokers[&id].epoch;
            if !fenced.contains(&id) {
                later.push(MetaRecord::UnfenceBroker { id, epoch });
            }
        }
        later.push(MetaRecord::Topic {
            name: "t".into(),
            id: T,
        });
        later.push(MetaRecord::Partition {
            topic_id: T,
            index: 0,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 3,
            partition_epoch: 5,
        });
        for (n, r) in later.iter().enumerate() {
            img.apply(log_id(n as u64 + 10), std::slice::from_ref(r), &mut delta);
        }
        img
    }

    fn changed(records: &[MetaRecord]) -> Vec<(Option<i32>, Option<Vec<i32>>)> {
        records
            .iter()
            .map(|r| match r {
                MetaRecord::PartitionChange { leader, isr, .. } => (*leader, isr.clone()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_fenced_leader_gives_way_to_the_first_alive_isr_member() {
        let img = image(&[], &[1, 2, 3], &[1, 2, 3], 1);
        assert_eq!(
            changed(&on_fence(&img, &[1], false)),
            [(Some(2), Some(vec![2, 3]))]
        );
        // Replica order decides, not the ISR's.
        let img = image(&[], &[1, 3, 2], &[1, 2, 3], 1);
        assert_eq!(
            changed(&on_fence(&img, &[1], false)),
            [(Some(3), Some(vec![2, 3]))]
        );
        // A replica outside the ISR never leads by a clean election.
        let img = image(&[], &[1, 2, 3], &[1, 3], 1);
        assert_eq!(
            changed(&on_fence(&img, &[1], false)),
            [(Some(3), Some(vec![3]))]
        );
        // A controlled shutdown of a single replica keeps it leading (fenced); of the only
        // ISR member of a replicated partition, the partition goes offline.
        let img = image(&[], &[1], &[1], 1);
        assert!(on_fence(&img, &[1], true).is_empty());
        let img = image(&[], &[1, 2, 3], &[1], 1);
        assert_eq!(
            changed(&on_fence(&img, &[1], true)),
            [(Some(NO_LEADER), None)]
        );
        let img = image(&[], &[1, 2, 3], &[1, 2, 3], 1);
        assert_eq!(
            changed(&on_fence(&img, &[1], true)),
            [(Some(2), Some(vec![2, 3]))]
        );
        // A fenced follower only leaves the ISR.
        let img = image(&[], &[1, 2, 3], &[1, 2, 3], 1);
        assert_eq!(
            changed(&on_fence(&img, &[3], false)),
            [(None, Some(vec![1, 2]))]
        );
        assert!(on_fence(&img, &[], false).is_empty());
    }

    #[test]
    fn the_last_isr_member_fenced_takes_the_partition_offline_until_it_returns() {
        let img = image(&[2, 3], &[1, 2, 3], &[1], 1);
        assert_eq!(
            changed(&on_fence(&img, &[1], false)),
            [(Some(NO_LEADER), None)]
        );
        // Two ISR members fenced at once with no one left: the ISR keeps the last one.
        let img = image(&[3], &[1, 2, 3], &[1, 2], 1);
        assert_eq!(
            changed(&on_fence(&img, &[1, 2], false)),
            [(Some(NO_LEADER), Some(vec![2]))]
        );
        // Everyone at once: the same, one after the other.
        let img = image(&[], &[1, 2, 3], &[1, 2, 3], 1);
        assert_eq!(
            changed(&on_fence(&img, &[1, 2, 3], false)),
            [(Some(NO_LEADER), Some(vec![3]))]
        );
        // Offline: a returning replica outside the ISR does not lead; the ISR member does.
        let mut img = image(&[1, 2, 3], &[1, 2, 3], &[1], NO_LEADER);
        assert!(on_unfence(&img, 2).is_empty());
        assert_eq!(changed(&on_unfence(&img, 1)), [(Some(1), None)]);
        // Fencing again changes nothing.
        assert!(on_fence(&img, &[1], false).is_empty());
        // Unclean election allowed: the first alive replica leads alone.
        Arc::make_mut(img.topics.get_mut(&T).expect("t"))
            .configs
            .insert("unclean.leader.election.enable".into(), "true".into());
        assert_eq!(changed(&on_unfence(&img, 2)), [(Some(2), Some(vec![2]))]);
        let img2 = {
            let mut i = image(&[3], &[1, 2, 3], &[1], 1);
            Arc::make_mut(i.topics.get_mut(&T).expect("t"))
                .configs
                .insert("unclean.leader.election.enable".into(), "true".into());
            i
        };
        assert_eq!(
            changed(&on_fence(&img2, &[1], false)),
            [(Some(2), Some(vec![2]))]
        );
    }

    use std::sync::Arc;

    #[test]
    fn preferred_and_unclean_elections_by_request() {
        let img = image(&[], &[1, 2, 3], &[1, 2, 3], 2);
        let t = img.topics[&T].clone();
        let r = elect(&img, &t, 0, ElectionType::Preferred).expect("elects 1");
        assert_eq!(changed(&[r]), [(Some(1), None)]);
        assert_eq!(
            elect(&img, &t, 1, ElectionType::Preferred),
            Err(ElectionError::Unknown)
        );
        assert_eq!(
            elect(&img, &t, 0, ElectionType::Unclean),
            Err(ElectionError::NotNeeded)
        );
        let img = image(&[1], &[1, 2, 3], &[2, 3], 2);
        let t = img.topics[&T].clone();
        assert_eq!(
            elect(&img, &t, 0, ElectionType::Preferred),
            Err(ElectionError::PreferredNotAvailable)
        );
        let img = image(&[], &[1, 2, 3], &[1, 2, 3], 1);
        let t = img.topics[&T].clone();
        assert_eq!(
            elect(&img, &t, 0, ElectionType::Preferred),
            Err(ElectionError::NotNeeded)
        );
        let img = image(&[1, 3], &[1, 2, 3], &[1], NO_LEADER);
        let t = img.topics[&T].clone();
        let r = elect(&img, &t, 0, ElectionType::Unclean).expect("unclean");
        assert_eq!(changed(&[r]), [(Some(2), Some(vec![2]))]);
        let img = image(&[1, 2, 3], &[1, 2, 3], &[1], NO_LEADER);
        let t = img.topics[&T].clone();
        assert_eq!(
            elect(&img, &t, 0, ElectionType::Unclean),
            Err(ElectionError::EligibleNotAvailable)
        );
    }

    #[test]
    fn rebalancing_moves_leaders_back_to_their_preferred_replicas() {
        let img = image(&[], &[1, 2, 3], &[1, 2, 3], 2);
        assert_eq!(changed(&rebalance(&img, 10)), [(Some(1), None)]);
        let img = image(&[], &[1, 2, 3], &[2, 3], 2);
        assert!(rebalance(&img, 10).is_empty(), "1 is not in the ISR");
        let img = image(&[], &[1, 2, 3], &[1, 2, 3], 1);
        assert!(rebalance(&img, 10).is_empty());
    }
}
