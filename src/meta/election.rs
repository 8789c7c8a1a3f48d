//! Leader election, decided by the active controller (Kafka's `PartitionChangeBuilder` and
//! `ReplicationControlManager`): which partition changes follow when brokers are fenced,
//! unfenced or come back from an unclean shutdown, when a leader changes its ISR, and
//! preferred-leader elections (ElectLeaders, automatic rebalancing).
//!
//! The rules are Kafka 4.1's, with KIP-966's eligible leader replicas (ELR) when
//! [`Rules::elr`] is on (the default, as on a new 4.1 cluster):
//! - A leader's high watermark stands still while its ISR is below the topic's min ISR
//!   (`min.insync.replicas`, at most the replica count; `cluster/partition.rs`). So a
//!   replica that leaves an ISR that is, or becomes, smaller than that still holds every
//!   committed record: it joins the ELR. Once the ISR is back at the min ISR the ELR is
//!   emptied. A replica of a broker that restarted after an unclean shutdown (it may have
//!   lost what it had not fsynced) leaves every ISR and ELR and is never added to one.
//! - A fenced broker leaves every ISR; with ELR the ISR may become empty (the last member
//!   joins the ELR). A partition it led gets the first replica (in replica order) that is in
//!   the remaining ISR and alive: a clean election, every committed record being on every ISR
//!   member. With an empty ISR, the first alive ELR member leads (alone in the new ISR; the
//!   other ELR members stay eligible).
//! - With neither an ISR nor an ELR member to elect, the partition goes offline (leader -1)
//!   and its last leader is kept (`last_known_elr`): when no ISR and no ELR is left at all,
//!   that replica leads again once it is back, as Kafka 4.1 does (what it had not fsynced
//!   before an unclean shutdown may be lost then; it is logged). Without ELR the ISR keeps
//!   its last member instead, which leads again when it returns.
//! - Nothing is elected from outside the ISR and ELR unless the topic sets
//!   `unclean.leader.election.enable=true` (then the first alive replica leads, alone in the
//!   ISR, and what only the old ISR held is lost, as in Kafka), or ElectLeaders asks for an
//!   unclean election.
//! - An unfenced broker leads the offline partitions it is eligible for by these rules.
//! - A leader change bumps the leader epoch (the image does it when it applies the record).

use super::image::{MetadataImage, PartitionImage, TopicImage};
use super::records::{Elr, MetaRecord};

/// Kafka's "no leader".
pub const NO_LEADER: i32 = -1;

/// The controller's settings its decisions follow (the same on every controller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rules {
    /// KIP-966 eligible leader replicas (Kafka's `eligible.leader.replicas.version` 1).
    pub elr: bool,
    /// `min.insync.replicas` of a topic without an override.
    pub default_min_insync: usize,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            elr: true,
            default_min_insync: 1,
        }
    }
}

/// Whether `topic` allows electing a leader from outside the ISR.
pub fn unclean_allowed(topic: &TopicImage) -> bool {
    topic
        .configs
        .get("unclean.leader.election.enable")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The ISR size below which a partition of `topic` commits nothing: its
/// `min.insync.replicas`, at most its replica count (Kafka's effective min ISR).
pub fn min_isr(topic: &TopicImage, p: &PartitionImage, rules: &Rules) -> usize {
    let configured = topic
        .configs
        .get("min.insync.replicas")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(rules.default_min_insync);
    configured.min(p.replicas.len()).max(1)
}

/// The ELR and last known leader that go with the new `isr`: empty without ELR or with an
/// ISR at the minimum; else the replicas leaving an ISR below the minimum join the ELR (they
/// hold everything committed: the high watermark stands still there), unless back from an
/// unclean shutdown, and the last known leader stays.
fn target_elr(
    topic: &TopicImage,
    p: &PartitionImage,
    rules: &Rules,
    isr: &[i32],
    unclean_shutdown: &[i32],
) -> (Vec<i32>, Vec<i32>) {
    if !rules.elr || isr.len() >= min_isr(topic, p, rules) {
        return (Vec::new(), Vec::new());
    }
    let elr = p
        .replicas
        .iter()
        .copied()
        .filter(|r| (p.elr.contains(r) || p.isr.contains(r)) && !isr.contains(r))
        .filter(|r| !unclean_shutdown.contains(r))
        .collect();
    (elr, p.last_known_elr.clone())
}

/// How a change may pick a leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Election {
    /// From the ISR, then the ELR, then the last known leader; outside them only when the
    /// topic allows unclean elections.
    Online,
    /// As `Online`, then the first acceptable replica whatever the topic says (ElectLeaders).
    Unclean,
}

/// One partition change, worked out as Kafka's `PartitionChangeBuilder` does.
struct Change<'a> {
    topic: &'a TopicImage,
    index: usize,
    p: &'a PartitionImage,
    rules: &'a Rules,
    /// Brokers leaving the ISR (fenced, stopping, or back from an unclean shutdown).
    leaving: &'a [i32],
    /// Brokers back from an unclean shutdown: out of the ELR too, never added to it.
    unclean_shutdown: &'a [i32],
    election: Election,
}

impl Change<'_> {
    /// The change record, if anything changes; `acceptable`: whether a replica may lead.
    fn build(&self, acceptable: &dyn Fn(i32) -> bool) -> Option<MetaRecord> {
        let p = self.p;
        let mut isr: Vec<i32> = p
            .isr
            .iter()
            .copied()
            .filter(|r| !self.leaving.contains(r))
            .collect();
        if isr.is_empty() && !self.rules.elr {
            // Without ELR the ISR keeps its last member (the last of them to leave): it alone
            // is known to hold everything committed, and leads again when it returns.
            if let Some(&last) = self.leaving.iter().rev().find(|r| p.isr.contains(r)) {
                isr.push(last);
            }
        }
        let (mut elr, mut last_known) =
            target_elr(self.topic, p, self.rules, &isr, self.unclean_shutdown);
        let valid = |r: &i32, isr: &[i32], elr: &[i32]| {
            acceptable(*r) && (isr.contains(r) || (isr.is_empty() && elr.contains(r)))
        };
        let mut leader = if p.leader != NO_LEADER && valid(&p.leader, &isr, &elr) {
            p.leader
        } else {
            p.replicas
                .iter()
                .copied()
                .find(|r| valid(r, &isr, &elr))
                .unwrap_or(NO_LEADER)
        };
        let topic = &self.topic.name;
        let index = self.index;
        if leader != NO_LEADER && isr.is_empty() {
            // Elected from the ELR: it holds everything committed; the others stay eligible.
            tracing::info!(%topic, partition = index, leader, elr = ?elr,
                "leader elected from the eligible leader replicas (KIP-966)");
            isr = vec![leader];
            elr.retain(|r| *r != leader);
        }
        if leader == NO_LEADER && self.rules.elr && isr.is_empty() && elr.is_empty() {
            if let [known] = last_known[..] {
                if acceptable(known) {
                    tracing::warn!(%topic, partition = index, leader = known,
                        "no in-sync or eligible replica left: the last known leader leads again                          (records it had not fsynced before an unclean shutdown may be lost)");
                    leader = known;
                    isr = vec![known];
                }
            }
        }
        let unclean = self.election == Election::Unclean || unclean_allowed(self.topic);
        if leader == NO_LEADER && unclean {
            if let Some(c) = p.replicas.iter().copied().find(|r| acceptable(*r)) {
                tracing::warn!(%topic, partition = index, leader = c, isr = ?p.isr, elr = ?p.elr,
                    "unclean leader election: records only the old ISR held are lost");
                leader = c;
                isr = vec![c];
                elr.clear();
            }
        }
        if leader != NO_LEADER {
            last_known.clear();
        } else if self.rules.elr && p.leader != NO_LEADER && last_known.is_empty() {
            last_known = vec![p.leader];
        }
        if !self.rules.elr {
            last_known.clear();
        }
        let elr_changes = elr != p.elr || last_known != p.last_known_elr;
        let leader_changes = leader != p.leader;
        let isr_changes = isr != p.isr;
        (leader_changes || isr_changes || elr_changes).then(|| MetaRecord::PartitionChange {
            topic_id: self.topic.id,
            index: index as i32,
            isr: isr_changes.then_some(isr),
            leader: leader_changes.then_some(leader),
            replicas: None,
            elr: elr_changes.then_some(Elr {
                eligible: elr,
                last_known,
            }),
        })
    }
}

/// The partition changes fencing `fenced` implies: they leave every ISR, and the partitions
/// they led get new leaders by the module's rules. Partitions where they are only eligible
/// (ELR) are left alone: they stay eligible.
///
/// `controlled`: the brokers asked to stop (controlled shutdown). A partition with a single
/// replica then keeps its leader (fenced, so offline until it returns): no other replica can
/// ever lead it, so a single node or an RF 1 partition restarts without an election and its
/// coordinators are not resigned on the way down. A replicated partition goes by the rules
/// above, as in Kafka.
pub fn on_fence(
    image: &MetadataImage,
    rules: &Rules,
    fenced: &[i32],
    controlled: bool,
) -> Vec<MetaRecord> {
    let alive = |r: i32| image.is_alive(r) && !fenced.contains(&r);
    let mut out = Vec::new();
    for t in image.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            if !fenced.contains(&p.leader) && !p.isr.iter().any(|r| fenced.contains(r)) {
                continue;
            }
            if controlled && p.replicas.len() == 1 {
                continue; // Stays (see the doc comment).
            }
            let change = Change {
                topic: t,
                index: i,
                p,
                rules,
                leaving: fenced,
                unclean_shutdown: &[],
                election: Election::Online,
            };
            out.extend(change.build(&alive));
        }
    }
    out
}

/// The partition changes a broker registering after an unclean shutdown implies (Kafka's
/// `handleBrokerShutdown` with `isCleanShutdown` false): with ELR, it leaves every ISR and
/// ELR, as it may have lost records it had not fsynced, and what it led gets another leader;
/// without ELR, as a fencing.
pub fn on_unclean_shutdown(image: &MetadataImage, rules: &Rules, broker: i32) -> Vec<MetaRecord> {
    if !rules.elr {
        return if image.is_alive(broker) {
            on_fence(image, rules, &[broker], false)
        } else {
            Vec::new()
        };
    }
    let acceptable = |r: i32| image.is_alive(r) && r != broker;
    let mut out = Vec::new();
    for t in image.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            if p.leader != broker && !p.isr.contains(&broker) && !p.elr.contains(&broker) {
                continue;
            }
            let change = Change {
                topic: t,
                index: i,
                p,
                rules,
                leaving: &[broker],
                unclean_shutdown: &[broker],
                election: Election::Online,
            };
            out.extend(change.build(&acceptable));
        }
    }
    out
}

/// The partition changes unfencing `broker` implies: it leads the offline partitions it is
/// eligible for (in their ISR; in their ELR when the ISR is empty; their last known leader
/// when neither is left; any replica when the topic allows unclean elections).
pub fn on_unfence(image: &MetadataImage, rules: &Rules, broker: i32) -> Vec<MetaRecord> {
    let acceptable = |r: i32| r == broker || image.is_alive(r);
    let mut out = Vec::new();
    for t in image.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            if p.leader != NO_LEADER || !p.replicas.contains(&broker) {
                continue;
            }
            let change = Change {
                topic: t,
                index: i,
                p,
                rules,
                leaving: &[],
                unclean_shutdown: &[],
                election: Election::Online,
            };
            out.extend(change.build(&acceptable));
        }
    }
    out
}

/// The change a leader's AlterPartition asks for: the new ISR (checked by the caller), with
/// the ELR it implies (replicas leaving an ISR below the minimum become eligible; an ISR back
/// at the minimum empties it).
pub fn isr_change(
    topic: &TopicImage,
    index: usize,
    p: &PartitionImage,
    rules: &Rules,
    isr: Vec<i32>,
) -> MetaRecord {
    let (elr, last_known) = target_elr(topic, p, rules, &isr, &[]);
    let elr_changes = elr != p.elr || last_known != p.last_known_elr;
    MetaRecord::PartitionChange {
        topic_id: topic.id,
        index: index as i32,
        isr: Some(isr),
        leader: None,
        replicas: None,
        elr: elr_changes.then_some(Elr {
            eligible: elr,
            last_known,
        }),
    }
}

/// The changes emptying the ELR of `topic`'s partitions (its `min.insync.replicas` changed:
/// what the ELR promised rested on the old value, as Kafka's `ClearElrRecord`).
pub fn clear_elr(topic: &TopicImage) -> Vec<MetaRecord> {
    topic
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.elr.is_empty() || !p.last_known_elr.is_empty())
        .map(|(i, _)| MetaRecord::PartitionChange {
            topic_id: topic.id,
            index: i as i32,
            isr: None,
            leader: None,
            replicas: None,
            elr: Some(Elr::default()),
        })
        .collect()
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
    /// An offline partition gets a leader: from its ISR or ELR if one is alive, else the
    /// first alive replica, even outside them.
    Unclean,
}

/// The election of one partition by `kind`: its change record, or why there is none.
pub fn elect(
    image: &MetadataImage,
    rules: &Rules,
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
            Ok(MetaRecord::PartitionChange {
                topic_id: topic.id,
                index,
                isr: None,
                leader: Some(preferred),
                replicas: None,
                elr: None,
            })
        }
        ElectionType::Unclean => {
            if p.leader != NO_LEADER && image.is_alive(p.leader) {
                return Err(ElectionError::NotNeeded);
            }
            let change = Change {
                topic,
                index: i,
                p,
                rules,
                leaving: &[],
                unclean_shutdown: &[],
                election: Election::Unclean,
            };
            match change.build(&|r| image.is_alive(r)) {
                Some(
                    r @ MetaRecord::PartitionChange {
                        leader: Some(l), ..
                    },
                ) if l != NO_LEADER => Ok(r),
                _ => Err(ElectionError::EligibleNotAvailable),
            }
        }
    }
}

/// Automatic leader rebalancing (Kafka's `auto.leader.rebalance.enable`): for every broker
/// whose share of partitions it should lead (as their first replica) but does not exceeds
/// `imbalance_percent` (Kafka's `leader.imbalance.per.broker.percentage`, 10), the preferred
/// elections that can happen now.
pub fn rebalance(image: &MetadataImage, rules: &Rules, imbalance_percent: u32) -> Vec<MetaRecord> {
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
                if let Ok(r) = elect(image, rules, t, i as i32, ElectionType::Preferred) {
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
    use uuid::Uuid;

    const T: Uuid = Uuid::from_u128(7);

    /// The rules before KIP-966 (the ISR keeps its last member).
    const OLD: Rules = Rules {
        elr: false,
        default_min_insync: 1,
    };

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
            changed(&on_fence(&img, &OLD, &[1], false)),
            [(Some(2), Some(vec![2, 3]))]
        );
        // Replica order decides, not the ISR's.
        let img = image(&[], &[1, 3, 2], &[1, 2, 3], 1);
        assert_eq!(
            changed(&on_fence(&img, &OLD, &[1], false)),
            [(Some(3), Some(vec![2, 3]))]
        );
        // A replica outside the ISR never leads by a clean election.
        let img = image(&[], &[1, 2, 3], &[1, 3], 1);
        assert_eq!(
            changed(&on_fence(&img, &OLD, &[1], false)),
            [(Some(3), Some(vec![3]))]
        );
        // A controlled shutdown of a single replica keeps it leading (fenced); of the only
        // ISR member of a replicated partition, the partition goes offline.
        let img = image(&[], &[1], &[1], 1);
        assert!(on_fence(&img, &OLD, &[1], true).is_empty());
        let img = image(&[], &[1, 2, 3], &[1], 1);
        assert_eq!(
            changed(&on_fence(&img, &OLD, &[1], true)),
            [(Some(NO_LEADER), None)]
        );
        let img = image(&[], &[1, 2, 3], &[1, 2, 3], 1);
        assert_eq!(
            changed(&on_fence(&img, &OLD, &[1], true)),
            [(Some(2), Some(vec![2, 3]))]
        );
        // A fenced follower only leaves the ISR.
        let img = image(&[], &[1, 2, 3], &[1, 2, 3], 1);
        assert_eq!(
            changed(&on_fence(&img, &OLD, &[3], false)),
            [(None, Some(vec![1, 2]))]
        );
        assert!(on_fence(&img, &OLD, &[], false).is_empty());
    }

    #[test]
    fn the_last_isr_member_fenced_takes_the_partition_offline_until_it_returns() {
        let img = image(&[2, 3], &[1, 2, 3], &[1], 1);
        assert_eq!(
            changed(&on_fence(&img, &OLD, &[1], false)),
            [(Some(NO_LEADER), None)]
        );
        // Two ISR members fenced at once with no one left: the ISR keeps the last one.
        let img = image(&[3], &[1, 2, 3], &[1, 2], 1);
        assert_eq!(
            changed(&on_fence(&img, &OLD, &[1, 2], false)),
            [(Some(NO_LEADER), Some(vec![2]))]
        );
        // Everyone at once: the same, one after the other.
        let img = image(&[], &[1, 2, 3], &[1, 2, 3], 1);
        assert_eq!(
            changed(&on_fence(&img, &OLD, &[1, 2, 3], false)),
            [(Some(NO_LEADER), Some(vec![3]))]
        );
        // Offline: a returning replica outside the ISR does not lead; the ISR member does.
        let mut img = image(&[1, 2, 3], &[1, 2, 3], &[1], NO_LEADER);
        assert!(on_unfence(&img, &OLD, 2).is_empty());
        assert_eq!(changed(&on_unfence(&img, &OLD, 1)), [(Some(1), None)]);
        // Fencing again changes nothing.
        assert!(on_fence(&img, &OLD, &[1], false).is_empty());
        // Unclean election allowed: the first alive replica leads alone.
        Arc::make_mut(img.topics.get_mut(&T).expect("t"))
            .configs
            .insert("unclean.leader.election.enable".into(), "true".into());
        assert_eq!(
            changed(&on_unfence(&img, &OLD, 2)),
            [(Some(2), Some(vec![2]))]
        );
        let img2 = {
            let mut i = image(&[3], &[1, 2, 3], &[1], 1);
            Arc::make_mut(i.topics.get_mut(&T).expect("t"))
                .configs
                .insert("unclean.leader.election.enable".into(), "true".into());
            i
        };
        assert_eq!(
            changed(&on_fence(&img2, &OLD, &[1], false)),
            [(Some(2), Some(vec![2]))]
        );
    }

    use std::sync::Arc;

    #[test]
    fn preferred_and_unclean_elections_by_request() {
        let img = image(&[], &[1, 2, 3], &[1, 2, 3], 2);
        let t = img.topics[&T].clone();
        let r = elect(&img, &OLD, &t, 0, ElectionType::Preferred).expect("elects 1");
        assert_eq!(changed(&[r]), [(Some(1), None)]);
        assert_eq!(
            elect(&img, &OLD, &t, 1, ElectionType::Preferred),
            Err(ElectionError::Unknown)
        );
        assert_eq!(
            elect(&img, &OLD, &t, 0, ElectionType::Unclean),
            Err(ElectionError::NotNeeded)
        );
        let img = image(&[1], &[1, 2, 3], &[2, 3], 2);
        let t = img.topics[&T].clone();
        assert_eq!(
            elect(&img, &OLD, &t, 0, ElectionType::Preferred),
            Err(ElectionError::PreferredNotAvailable)
        );
        let img = image(&[], &[1, 2, 3], &[1, 2, 3], 1);
        let t = img.topics[&T].clone();
        assert_eq!(
            elect(&img, &OLD, &t, 0, ElectionType::Preferred),
            Err(ElectionError::NotNeeded)
        );
        let img = image(&[1, 3], &[1, 2, 3], &[1], NO_LEADER);
        let t = img.topics[&T].clone();
        let r = elect(&img, &OLD, &t, 0, ElectionType::Unclean).expect("unclean");
        assert_eq!(changed(&[r]), [(Some(2), Some(vec![2]))]);
        let img = image(&[1, 2, 3], &[1, 2, 3], &[1], NO_LEADER);
        let t = img.topics[&T].clone();
        assert_eq!(
            elect(&img, &OLD, &t, 0, ElectionType::Unclean),
            Err(ElectionError::EligibleNotAvailable)
        );
    }

    #[test]
    fn rebalancing_moves_leaders_back_to_their_preferred_replicas() {
        let img = image(&[], &[1, 2, 3], &[1, 2, 3], 2);
        assert_eq!(changed(&rebalance(&img, &OLD, 10)), [(Some(1), None)]);
        let img = image(&[], &[1, 2, 3], &[2, 3], 2);
        assert!(rebalance(&img, &OLD, 10).is_empty(), "1 is not in the ISR");
        let img = image(&[], &[1, 2, 3], &[1, 2, 3], 1);
        assert!(rebalance(&img, &OLD, 10).is_empty());
    }

    /// Kafka 4.1's rules: ELR, min ISR 2 unless the test says otherwise.
    const ELR: Rules = Rules {
        elr: true,
        default_min_insync: 2,
    };

    fn apply(img: &mut MetadataImage, records: &[MetaRecord]) {
        let next = img.applied.map_or(100, |l| l.index + 1);
        img.apply(log_id(next), records, &mut Delta::default());
    }

    /// Fences `id`: the decision on the image before, then the fencing and the decision.
    fn fence(img: &mut MetadataImage, id: i32) {
        let records = on_fence(img, &ELR, &[id], false);
        let epoch = img.brokers[&id].epoch;
        apply(img, &[MetaRecord::FenceBroker { id, epoch }]);
        apply(img, &records);
    }

    fn unfence(img: &mut MetadataImage, rules: &Rules, id: i32) -> Vec<MetaRecord> {
        let records = on_unfence(img, rules, id);
        let epoch = img.brokers[&id].epoch;
        apply(img, &[MetaRecord::UnfenceBroker { id, epoch }]);
        records
    }

    fn part(img: &MetadataImage) -> &PartitionImage {
        &img.topics[&T].partitions[0]
    }

    /// (leader, ISR, ELR, last known) of the partition.
    fn state(img: &MetadataImage) -> (i32, Vec<i32>, Vec<i32>, Vec<i32>) {
        let p = part(img);
        (
            p.leader,
            p.isr.clone(),
            p.elr.clone(),
            p.last_known_elr.clone(),
        )
    }

    #[test]
    fn replicas_leaving_an_isr_below_the_minimum_stay_eligible_and_lead_when_it_empties() {
        let mut img = image(&[], &[1, 2, 3], &[1, 2, 3], 1);
        let t = img.topics[&T].clone();
        // Still at the minimum: nothing is eligible outside the ISR.
        let r = isr_change(&t, 0, part(&img), &ELR, vec![1, 2]);
        apply(&mut img, &[r]);
        assert_eq!(state(&img), (1, vec![1, 2], vec![], vec![]));
        // Below it: the replica leaving keeps everything committed (the HW stands still).
        let t = img.topics[&T].clone();
        let r = isr_change(&t, 0, part(&img), &ELR, vec![1]);
        apply(&mut img, &[r]);
        assert_eq!(state(&img), (1, vec![1], vec![2], vec![]));
        // The leader dies: the ISR empties, it joins the ELR, and 2 leads from the ELR.
        fence(&mut img, 1);
        assert_eq!(state(&img), (2, vec![2], vec![1], vec![]));
        // 1 comes back from a clean shutdown: still eligible (a fenced broker's clean
        // registration changes no partition); from an unclean one: not.
        let clean = img.clone();
        let records = on_unclean_shutdown(&img, &ELR, 1);
        apply(&mut img, &records);
        assert_eq!(state(&img), (2, vec![2], vec![], vec![]));
        // A replica that rejoins and makes the minimum again empties the ELR.
        let mut back = clean;
        let t = back.topics[&T].clone();
        let r = isr_change(&t, 0, part(&back), &ELR, vec![2, 3]);
        apply(&mut back, &[r]);
        assert_eq!(state(&back), (2, vec![2, 3], vec![], vec![]));
        // Without ELR the same shrink keeps nothing eligible.
        let img = image(&[], &[1, 2, 3], &[1, 2], 1);
        let t = img.topics[&T].clone();
        let r = isr_change(&t, 0, part(&img), &OLD, vec![1]);
        assert!(
            matches!(r, MetaRecord::PartitionChange { elr: None, .. }),
            "{r:?}"
        );
    }

    #[test]
    fn the_last_member_fenced_empties_the_isr_and_leads_again_as_eligible_or_last_known() {
        let min1 = Rules {
            elr: true,
            default_min_insync: 1,
        };
        let fence1 = |img: &mut MetadataImage| {
            let records = on_fence(img, &min1, &[1], false);
            let epoch = img.brokers[&1].epoch;
            apply(img, &[MetaRecord::FenceBroker { id: 1, epoch }]);
            apply(img, &records);
        };
        let mut img = image(&[2, 3], &[1, 2, 3], &[1], 1);
        fence1(&mut img);
        assert_eq!(state(&img), (NO_LEADER, vec![], vec![1], vec![1]));
        // Others come back: not eligible, the partition stays offline.
        let records = unfence(&mut img, &min1, 2);
        assert!(records.is_empty(), "{records:?}");
        // After a clean shutdown 1 is still eligible: it leads from the ELR.
        let mut clean = img.clone();
        let records = unfence(&mut clean, &min1, 1);
        apply(&mut clean, &records);
        assert_eq!(state(&clean), (1, vec![1], vec![], vec![]));
        // After an unclean one it leaves the ELR; with nothing else left it leads again as
        // the last known leader once unfenced (Kafka 4.1), never replica 2.
        let records = on_unclean_shutdown(&img, &min1, 1);
        apply(&mut img, &records);
        assert_eq!(state(&img), (NO_LEADER, vec![], vec![], vec![1]));
        assert!(on_unfence(&img, &min1, 3).is_empty());
        let records = unfence(&mut img, &min1, 1);
        apply(&mut img, &records);
        assert_eq!(state(&img), (1, vec![1], vec![], vec![]));
        // An unclean election by request passes over an ELR whose members are all down.
        let mut img = image(&[3], &[1, 2, 3], &[1, 2], 1);
        let records = on_fence(&img, &ELR, &[1, 2], false);
        for id in [1, 2] {
            let epoch = img.brokers[&id].epoch;
            apply(&mut img, &[MetaRecord::FenceBroker { id, epoch }]);
        }
        apply(&mut img, &records);
        assert_eq!(state(&img), (NO_LEADER, vec![], vec![1, 2], vec![1]));
        let epoch = img.brokers[&3].epoch;
        apply(&mut img, &[MetaRecord::UnfenceBroker { id: 3, epoch }]);
        let t = img.topics[&T].clone();
        let r = elect(&img, &ELR, &t, 0, ElectionType::Unclean).expect("unclean");
        apply(&mut img, &[r]);
        assert_eq!(state(&img), (3, vec![3], vec![], vec![]));
    }

    #[test]
    fn a_changed_min_insync_clears_the_elr() {
        let mut img = image(&[], &[1, 2, 3], &[1, 2], 1);
        let t = img.topics[&T].clone();
        let r = isr_change(&t, 0, part(&img), &ELR, vec![1]);
        apply(&mut img, &[r]);
        assert_eq!(part(&img).elr, [2]);
        let records = clear_elr(&img.topics[&T]);
        apply(&mut img, &records);
        assert_eq!(state(&img), (1, vec![1], vec![], vec![]));
        assert!(clear_elr(&img.topics[&T]).is_empty());
        // The topic's own min.insync.replicas counts, at most its replica count.
        let mut t = (*img.topics[&T]).clone();
        t.configs.insert("min.insync.replicas".into(), "5".into());
        assert_eq!(min_isr(&t, &t.partitions[0], &ELR), 3);
        t.configs.insert("min.insync.replicas".into(), "1".into());
        assert_eq!(min_isr(&t, &t.partitions[0], &ELR), 1);
    }
}
