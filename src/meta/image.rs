//! The metadata image: the state the committed metadata log describes (brokers, topics,
//! partitions, configs, producer-id blocks), immutable once built. Applying records makes a
//! new image and a [`Delta`] naming what changed; unchanged topics are shared between the
//! two (`Arc`), so an apply costs a pointer copy per topic plus the changed topics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::records::{
    ConfigResource, Endpoint, MetaRecord, Overrides, QuotaEntity, QuotaValue, INTER_BROKER_ENDPOINT,
};
use super::LogId;
use crate::config::SecurityProtocol;
use crate::security::acl::AclBinding;

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerImage {
    pub id: i32,
    /// The log index of its registration.
    pub epoch: i64,
    pub incarnation: Uuid,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    /// A fenced broker leads nothing and is in no ISR it could be elected from.
    pub fenced: bool,
    /// It asked for a controlled shutdown.
    pub in_shutdown: bool,
}

impl BrokerImage {
    /// `HOST:PORT` of its first registered endpoint (its client listener), IPv6 hosts in
    /// brackets; None when it registered none.
    pub fn client_addr(&self) -> Option<String> {
        self.endpoints.first().map(Endpoint::addr)
    }

    /// `HOST:PORT` at which other brokers reach it: its `INTER_BROKER` endpoint
    /// (`inter_broker_advertise`) when it registered one, else its PLAINTEXT listener's
    /// (brokers speak PLAINTEXT to each other), else its first.
    pub fn inter_broker_addr(&self) -> Option<String> {
        self.endpoints
            .iter()
            .find(|e| e.name == INTER_BROKER_ENDPOINT)
            .or_else(|| self.endpoint(SecurityProtocol::Plaintext))
            .map(Endpoint::addr)
            .or_else(|| self.client_addr())
    }

    /// Where the other brokers reach it: its endpoint of the `inter_broker_listener`
    /// protocol when one is configured (`protocol`), else [`BrokerImage::inter_broker_addr`].
    pub fn peer_addr(&self, protocol: Option<SecurityProtocol>) -> Option<String> {
        match protocol {
            None => self.inter_broker_addr(),
            Some(p) => self.endpoint(p).map(Endpoint::addr),
        }
    }

    /// Its endpoint for clients of a listener protocol (Kafka answers each client with the
    /// brokers' endpoints of the listener it connected to; a broker without one is left out).
    pub fn endpoint(&self, listener: SecurityProtocol) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == listener.name())
    }
}

/// One partition as the controller decided it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    /// During a reassignment, the target replicas followed by the original ones leaving.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// -1: no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// A reassignment in progress: the replicas joining (not yet caught up) and the ones
    /// that leave once they have (Kafka's `addingReplicas` / `removingReplicas`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<i32>,
    /// KIP-966's eligible leader replicas (see [`crate::meta::election`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elr: Vec<i32>,
    /// The last leader, kept when the partition went offline with no ISR and no ELR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_known_elr: Vec<i32>,
}

/// A topic: its name, id, partitions (by index) and config overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<PartitionImage>,
    pub configs: Overrides,
}

impl TopicImage {
    /// Topics whose name starts with `__` are Kafka-internal (`__consumer_offsets`...).
    pub fn is_internal(&self) -> bool {
        self.name.starts_with("__")
    }
}

/// The whole image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// The last log entry applied (None: nothing yet).
    pub applied: Option<LogId>,
    pub cluster_id: Option<String>,
    pub brokers: BTreeMap<i32, BrokerImage>,
    pub topics: BTreeMap<Uuid, Arc<TopicImage>>,
    /// Topic names to ids.
    pub names: BTreeMap<String, Uuid>,
    /// Dynamic broker configs (per broker id) and cluster-wide ones.
    pub broker_configs: BTreeMap<i32, Overrides>,
    pub cluster_configs: Overrides,
    /// The first producer id no block has been given out for.
    pub next_producer_id: i64,
    /// The producer-id block each broker holds now.
    pub producer_id_blocks: BTreeMap<i32, (i64, i64)>,
    /// SCRAM credentials: user → mechanism name → credential.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scram: BTreeMap<String, BTreeMap<String, ScramCredentialImage>>,
    /// The ACLs (shared between images until one changes: the authorizer is rebuilt only
    /// when this set is another one).
    #[serde(default, skip_serializing_if = "no_acls")]
    pub acls: Arc<BTreeSet<AclBinding>>,
    /// Client quotas (KIP-546): entity → key → value; an entity without keys is not kept.
    /// Shared between images until one changes (the broker's quota manager rebuilds its
    /// lookup only when this is another map). A list of entries in the JSON (the keys are
    /// not strings).
    #[serde(default, skip_serializing_if = "no_quotas", with = "quota_entries")]
    pub quotas: Arc<ClientQuotas>,
}

/// The client quotas of the image: entity → key → value.
pub type ClientQuotas = BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>>;

fn no_acls(acls: &Arc<BTreeSet<AclBinding>>) -> bool {
    acls.is_empty()
}

fn no_quotas(quotas: &Arc<ClientQuotas>) -> bool {
    quotas.is_empty()
}

/// [`ClientQuotas`] as a JSON list of `[entity, values]` pairs.
mod quota_entries {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{ClientQuotas, QuotaEntity, QuotaValue};

    pub fn serialize<S: Serializer>(quotas: &Arc<ClientQuotas>, s: S) -> Result<S::Ok, S::Error> {
        let entries: Vec<(&QuotaEntity, &BTreeMap<String, QuotaValue>)> = quotas.iter().collect();
        entries.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<ClientQuotas>, D::Error> {
        let entries: Vec<(QuotaEntity, BTreeMap<String, QuotaValue>)> = Vec::deserialize(d)?;
        Ok(Arc::new(entries.into_iter().collect()))
    }
}

/// A stored SCRAM credential (what `MetaRecord::ScramCredential` carries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredentialImage {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

/// What one apply changed, for the publisher (which turns it into local logs and leadership).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delta {
    /// Topics created or changed (partitions added, leadership or configs changed).
    pub changed_topics: BTreeSet<Uuid>,
    /// Topics removed, as they were.
    pub removed_topics: Vec<Arc<TopicImage>>,
    pub brokers_changed: bool,
    pub cluster_id_set: bool,
    /// SCRAM credentials were created, changed or removed.
    pub credentials_changed: bool,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.changed_topics.is_empty()
            && self.removed_topics.is_empty()
            && !self.brokers_changed
            && !self.cluster_id_set
            && !self.credentials_changed
    }
}

/// A record that does not fit the image (the controller validates before proposing, so this
/// means a bug or a corrupt log; the record is skipped and logged, never applied halfway).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata record does not apply: {0}")]
pub struct ApplyError(pub String);

impl MetadataImage {
    /// The user's stored SCRAM credential for `m`.
    pub fn scram_credential(
        &self,
        user: &str,
        m: crate::security::scram::Mechanism,
    ) -> Option<crate::security::scram::Credential> {
        let c = self.scram.get(user)?.get(m.name())?;
        Some(crate::security::scram::Credential {
            salt: c.salt.clone(),
            stored_key: c.stored_key.clone(),
            server_key: c.server_key.clone(),
            iterations: c.iterations,
        })
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.names.get(name).and_then(|id| self.topics.get(id))
    }

    pub fn topic(&self, id: &Uuid) -> Option<&Arc<TopicImage>> {
        self.topics.get(id)
    }

    /// Topics sorted by name.
    pub fn topics_by_name(&self) -> impl Iterator<Item = &Arc<TopicImage>> {
        self.names.values().filter_map(|id| self.topics.get(id))
    }

    /// Unfenced brokers.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Whether broker `id` is registered and unfenced (Kafka's alive broker).
    pub fn is_alive(&self, id: i32) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// Whether every voter but `me` (there being at least one) is a broker in a controlled
    /// shutdown: the whole quorum is stopping, so `me` need not ask for one (a registered
    /// broker that is not stopping, or a voter not registered, counts as staying).
    pub fn others_stopping(&self, me: i32, voters: impl IntoIterator<Item = i32>) -> bool {
        let mut others = voters.into_iter().filter(|&v| v != me).peekable();
        others.peek().is_some()
            && others.all(|v| self.brokers.get(&v).is_some_and(|b| b.in_shutdown))
    }

    /// The replicas of `p` whose broker is not registered or is fenced, in replica order (as
    /// Kafka's `KRaftMetadataCache.getOfflineReplicas`, which has no per-directory state here).
    pub fn offline_replicas(&self, p: &PartitionImage) -> Vec<i32> {
        p.replicas
            .iter()
            .copied()
            .filter(|&r| !self.is_alive(r))
            .collect()
    }

    /// The leader Metadata-like answers report, as Kafka's metadata cache does: the image's
    /// leader while that broker is registered (fenced or not: Kafka looks only for its
    /// endpoint), else none (-1 in the image, or a broker no longer registered), which they
    /// answer as leader -1.
    pub fn reported_leader(&self, p: &PartitionImage) -> Option<i32> {
        (p.leader >= 0 && self.brokers.contains_key(&p.leader)).then_some(p.leader)
    }

    /// A copy with `records` applied as one entry at `index` (term 1), and its delta: how
    /// tests build images.
    pub fn with_entry(&self, index: u64, records: &[MetaRecord]) -> (Arc<MetadataImage>, Delta) {
        let mut next = self.clone();
        let mut delta = Delta::default();
        next.apply(
            openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            records,
            &mut delta,
        );
        (Arc::new(next), delta)
    }

    /// Applies the records of one entry at `log_id`, returning what changed. Records that do
    /// not fit are skipped with an error log (see [`ApplyError`]).
    pub fn apply(&mut self, log_id: LogId, records: &[MetaRecord], delta: &mut Delta) {
        for r in records {
            if let Err(e) = self.apply_one(log_id.index, r, delta) {
                tracing::error!(index = log_id.index, record = ?r, error = %e, "skipped a metadata record");
            }
        }
        self.applied = Some(log_id);
    }

    fn topic_mut(&mut self, id: &Uuid) -> Result<&mut TopicImage, ApplyError> {
        self.topics
            .get_mut(id)
            .map(Arc::make_mut)
            .ok_or_else(|| ApplyError(format!("no topic with id {id}")))
    }

    fn apply_one(
        &mut self,
        index: u64,
        record: &MetaRecord,
        delta: &mut Delta,
    ) -> Result<(), ApplyError> {
        match record {
            MetaRecord::ClusterId { id } => {
                if self.cluster_id.as_ref().is_some_and(|c| c != id) {
                    return Err(ApplyError(format!(
                        "the cluster id is already {:?}",
                        self.cluster_id
                    )));
                }
                self.cluster_id = Some(id.clone());
                delta.cluster_id_set = true;
            }
            MetaRecord::RegisterBroker {
                id,
                incarnation,
                endpoints,
                rack,
            } => {
                // A broker's epoch is the log index of its registration (as KRaft's).
                self.brokers.insert(
                    *id,
                    BrokerImage {
                        id: *id,
                        epoch: index as i64,
                        incarnation: *incarnation,
                        endpoints: endpoints.clone(),
                        rack: rack.clone(),
                        fenced: true,
                        in_shutdown: false,
                    },
                );
                delta.brokers_changed = true;
            }
            MetaRecord::UnfenceBroker { id, epoch }
            | MetaRecord::FenceBroker { id, epoch }
            | MetaRecord::BrokerShutdown { id, epoch } => {
                let b = self
                    .brokers
                    .get_mut(id)
                    .filter(|b| b.epoch == *epoch)
                    .ok_or_else(|| ApplyError(format!("no broker {id} at epoch {epoch}")))?;
                match record {
                    MetaRecord::UnfenceBroker { .. } => {
                        b.fenced = false;
                        b.in_shutdown = false;
                    }
                    MetaRecord::FenceBroker { .. } => b.fenced = true,
                    _ => b.in_shutdown = true,
                }
                delta.brokers_changed = true;
            }
            MetaRecord::UnregisterBroker { id, epoch } => {
                if self.brokers.get(id).is_some_and(|b| b.epoch == *epoch) {
                    self.brokers.remove(id);
                    delta.brokers_changed = true;
                }
            }
            MetaRecord::Topic { name, id } => {
                if self.names.contains_key(name) || self.topics.contains_key(id) {
                    return Err(ApplyError(format!("topic {name} ({id}) exists")));
                }
                self.names.insert(name.clone(), *id);
                self.topics.insert(
                    *id,
                    Arc::new(TopicImage {
                        name: name.clone(),
                        id: *id,
                        partitions: Vec::new(),
                        configs: Overrides::new(),
                    }),
                );
                delta.changed_topics.insert(*id);
            }
            MetaRecord::Partition {
                topic_id,
                index: p,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                let topic = self.topic_mut(topic_id)?;
                let image = PartitionImage {
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                    ..Default::default()
                };
                match usize::try_from(*p) {
                    Ok(i) if i < topic.partitions.len() => topic.partitions[i] = image,
                    Ok(i) if i == topic.partitions.len() => topic.partitions.push(image),
                    _ => {
                        return Err(ApplyError(format!(
                            "partition {p} of {} does not follow its {} partitions",
                            topic.name,
                            topic.partitions.len()
                        )))
                    }
                }
                delta.changed_topics.insert(*topic_id);
            }
            MetaRecord::PartitionChange {
                topic_id,
                index: p,
                isr,
                leader,
                replicas,
                elr,
            } => {
                let topic = self.topic_mut(topic_id)?;
                let name = topic.name.clone();
                let part = usize::try_from(*p)
                    .ok()
                    .and_then(|i| topic.partitions.get_mut(i))
                    .ok_or_else(|| ApplyError(format!("no partition {p} of {name}")))?;
                if let Some(isr) = isr {
                    part.isr = isr.clone();
                }
                if let Some(elr) = elr {
                    part.elr = elr.eligible.clone();
                    part.last_known_elr = elr.last_known.clone();
                }
                if let Some(replicas) = replicas {
                    part.replicas = replicas.clone();
                }
                if let Some(leader) = leader {
                    if *leader != part.leader {
                        part.leader = *leader;
                        part.leader_epoch += 1;
                    }
                }
                part.partition_epoch += 1;
                delta.changed_topics.insert(*topic_id);
            }
            MetaRecord::PartitionReassignment {
                topic_id,
                index: p,
                adding,
                removing,
            } => {
                let topic = self.topic_mut(topic_id)?;
                let name = topic.name.clone();
                let part = usize::try_from(*p)
                    .ok()
                    .and_then(|i| topic.partitions.get_mut(i))
                    .ok_or_else(|| ApplyError(format!("no partition {p} of {name}")))?;
                part.adding = adding.clone();
                part.removing = removing.clone();
                delta.changed_topics.insert(*topic_id);
            }
            MetaRecord::RemoveTopic { id } => {
                let topic = self
                    .topics
                    .remove(id)
                    .ok_or_else(|| ApplyError(format!("no topic with id {id}")))?;
                self.names.remove(&topic.name);
                delta.changed_topics.remove(id);
                delta.removed_topics.push(topic);
            }
            MetaRecord::Config {
                resource,
                name,
                value,
            } => {
                let target = match resource {
                    ConfigResource::Topic(topic) => {
                        let id = *self
                            .names
                            .get(topic)
                            .ok_or_else(|| ApplyError(format!("no topic {topic}")))?;
                        delta.changed_topics.insert(id);
                        &mut self.topic_mut(&id)?.configs
                    }
                    ConfigResource::Broker(b) => self.broker_configs.entry(*b).or_default(),
                    ConfigResource::Cluster => &mut self.cluster_configs,
                };
                match value {
                    Some(v) => target.insert(name.clone(), v.clone()),
                    None => target.remove(name),
                };
            }
            MetaRecord::ScramCredential {
                user,
                mechanism,
                salt,
                stored_key,
                server_key,
                iterations,
            } => {
                self.scram.entry(user.clone()).or_default().insert(
                    mechanism.clone(),
                    ScramCredentialImage {
                        salt: salt.clone(),
                        stored_key: stored_key.clone(),
                        server_key: server_key.clone(),
                        iterations: *iterations,
                    },
                );
                delta.credentials_changed = true;
            }
            MetaRecord::Acl { binding } => {
                Arc::make_mut(&mut self.acls).insert(binding.clone());
            }
            MetaRecord::ClientQuota { entity, key, value } => {
                let quotas = Arc::make_mut(&mut self.quotas);
                match value {
                    Some(v) => {
                        quotas
                            .entry(entity.clone())
                            .or_default()
                            .insert(key.clone(), *v);
                    }
                    None => {
                        if let Some(keys) = quotas.get_mut(entity) {
                            keys.remove(key);
                            if keys.is_empty() {
                                quotas.remove(entity);
                            }
                        }
                    }
                }
            }
            MetaRecord::RemoveAcl { binding } => {
                if !Arc::make_mut(&mut self.acls).remove(binding) {
                    return Err(ApplyError(format!("no ACL {binding} to remove")));
                }
            }
            MetaRecord::RemoveScramCredential { user, mechanism } => {
                let removed = self
                    .scram
                    .get_mut(user)
                    .and_then(|m| m.remove(mechanism))
                    .is_some();
                if !removed {
                    return Err(ApplyError(format!(
                        "no {mechanism} credential of user {user} to remove"
                    )));
                }
                if self.scram.get(user).is_some_and(BTreeMap::is_empty) {
                    self.scram.remove(user);
                }
                delta.credentials_changed = true;
            }
            MetaRecord::ProducerIdsBlock {
                broker_id,
                first,
                size,
                ..
            } => {
                if *first < self.next_producer_id || *size < 1 {
                    return Err(ApplyError(format!(
                        "producer id block {first}+{size} overlaps ids given out (next {})",
                        self.next_producer_id
                    )));
                }
                self.next_producer_id = first + size;
                self.producer_id_blocks
                    .insert(*broker_id, (*first, first + size));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};

    /// A broker's registration with no endpoint or rack.
    fn register(id: i32) -> MetaRecord {
        MetaRecord::RegisterBroker {
            id,
            incarnation: Uuid::new_v4(),
            endpoints: vec![],
            rack: None,
        }
    }

    fn log_id(index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    #[test]
    fn topics_partitions_changes_and_removal_apply_and_share_unchanged_topics() {
        let mut image = MetadataImage::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let part = |t, i| MetaRecord::Partition {
            topic_id: t,
            index: i,
            replicas: vec![1, 2],
            isr: vec![1, 2],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
        };
        let mut delta = Delta::default();
        image.apply(
            log_id(1),
            &[
                MetaRecord::Topic {
                    name: "a".into(),
                    id: a,
                },
                part(a, 0),
                part(a, 1),
                MetaRecord::Topic {
                    name: "b".into(),
                    id: b,
                },
                part(b, 0),
            ],
            &mut delta,
        );
        assert_eq!(delta.changed_topics, [a, b].into_iter().collect());
        let before = image.clone();
        let mut delta = Delta::default();
        image.apply(
            log_id(2),
            &[MetaRecord::PartitionChange {
                topic_id: a,
                index: 1,
                isr: Some(vec![1]),
                leader: Some(2),
                replicas: None,
                elr: None,
            }],
            &mut delta,
        );
        let p = &image.topic(&a).unwrap().partitions[1];
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 1));
        assert_eq!(p.isr, vec![1]);
        assert!(Arc::ptr_eq(
            before.topic(&b).unwrap(),
            image.topic(&b).unwrap()
        ));
        assert_eq!(before.topic(&a).unwrap().partitions[1].leader, 1);
        // A partition index that skips one is refused; the rest of the entry applies.
        let mut delta = Delta::default();
        image.apply(
            log_id(3),
            &[part(b, 5), MetaRecord::RemoveTopic { id: a }],
            &mut delta,
        );
        assert_eq!(image.topic(&b).unwrap().partitions.len(), 1);
        assert!(image.topic_by_name("a").is_none());
        assert_eq!(delta.removed_topics.len(), 1);
        assert_eq!(image.applied, Some(log_id(3)));
    }

    #[test]
    fn brokers_fence_by_epoch_and_producer_blocks_never_overlap() {
        let mut image = MetadataImage::default();
        let mut delta = Delta::default();
        image.apply(
            log_id(7),
            &[
                MetaRecord::RegisterBroker {
                    id: 2,
                    incarnation: Uuid::new_v4(),
                    endpoints: vec![],
                    rack: None,
                },
                MetaRecord::UnfenceBroker { id: 2, epoch: 6 },
            ],
            &mut delta,
        );
        assert!(image.brokers[&2].fenced, "a stale epoch does not unfence");
        image.apply(
            log_id(8),
            &[
                MetaRecord::UnfenceBroker { id: 2, epoch: 7 },
                MetaRecord::ProducerIdsBlock {
                    broker_id: 2,
                    broker_epoch: 7,
                    first: 0,
                    size: 1000,
                },
                MetaRecord::ProducerIdsBlock {
                    broker_id: 2,
                    broker_epoch: 7,
                    first: 500,
                    size: 1000,
                },
            ],
            &mut delta,
        );
        assert!(!image.brokers[&2].fenced);
        assert_eq!(image.next_producer_id, 1000);
        assert_eq!(image.live_brokers().count(), 1);
    }

    #[test]
    fn offline_replicas_are_the_fenced_and_unregistered_ones() {
        let mut image = MetadataImage::default();
        let mut delta = Delta::default();
        // Brokers 1 and 2 at epochs 1 and 2, both unfenced; 3 never registers.
        image.apply(log_id(1), &[register(1)], &mut delta);
        image.apply(log_id(2), &[register(2)], &mut delta);
        image.apply(
            log_id(3),
            &[
                MetaRecord::UnfenceBroker { id: 1, epoch: 1 },
                MetaRecord::UnfenceBroker { id: 2, epoch: 2 },
            ],
            &mut delta,
        );
        let p = |leader| PartitionImage {
            replicas: vec![3, 2, 1],
            isr: vec![3, 2, 1],
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            ..Default::default()
        };
        assert!(image.is_alive(1) && image.is_alive(2) && !image.is_alive(3));
        assert_eq!(image.offline_replicas(&p(1)), vec![3]);
        assert_eq!(image.reported_leader(&p(2)), Some(2));
        assert_eq!(image.reported_leader(&p(3)), None, "unregistered leader");
        assert_eq!(image.reported_leader(&p(-1)), None, "no leader");

        image.apply(
            log_id(4),
            &[MetaRecord::FenceBroker { id: 2, epoch: 2 }],
            &mut delta,
        );
        assert_eq!(image.offline_replicas(&p(1)), vec![3, 2]);
        assert_eq!(
            image.reported_leader(&p(2)),
            Some(2),
            "a fenced leader is still reported while registered, as Kafka does"
        );

        image.apply(
            log_id(5),
            &[
                MetaRecord::UnfenceBroker { id: 2, epoch: 2 },
                MetaRecord::UnregisterBroker { id: 1, epoch: 1 },
            ],
            &mut delta,
        );
        assert_eq!(image.offline_replicas(&p(2)), vec![3, 1]);
        assert_eq!(image.reported_leader(&p(1)), None);
        assert_eq!(image.live_brokers().map(|b| b.id).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn the_quorum_is_stopping_once_every_other_voter_asked_for_a_controlled_shutdown() {
        let mut image = MetadataImage::default();
        let mut delta = Delta::default();
        for id in 1..=3 {
            image.apply(log_id(id as u64), &[register(id)], &mut delta);
        }
        let voters = [1, 2, 3];
        assert!(!image.others_stopping(1, voters));
        assert!(!image.others_stopping(1, [1]), "a lone voter has no others");
        image.apply(
            log_id(4),
            &[MetaRecord::BrokerShutdown { id: 2, epoch: 2 }],
            &mut delta,
        );
        assert!(!image.others_stopping(1, voters), "3 stays");
        assert!(
            !image.others_stopping(3, [1, 2, 3, 4]),
            "4 never registered"
        );
        image.apply(
            log_id(5),
            &[MetaRecord::BrokerShutdown { id: 3, epoch: 3 }],
            &mut delta,
        );
        assert!(image.others_stopping(1, voters));
        assert!(!image.others_stopping(2, voters), "1 stays");
        // Back: a new registration is not stopping.
        image.apply(log_id(6), &[register(3)], &mut delta);
        assert!(!image.others_stopping(1, voters));
    }
}
