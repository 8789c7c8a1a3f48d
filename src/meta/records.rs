//! The metadata log's records, after KRaft's (KIP-631): what the controller decides, one JSON
//! object per record tagged by `kind`. The records of one decision travel as one raft entry
//! ([`MetaBatch`]), so a CreateTopics of many partitions is applied atomically. An unknown
//! kind fails to decode: a node never silently skips metadata it does not understand.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A listener a broker serves clients on (Kafka's BrokerRegistration `Listener`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The listener's name (`PLAINTEXT` until the security issue adds others).
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Kafka's security protocol id (0 = PLAINTEXT).
    pub security_protocol: i16,
}

/// The name of the endpoint a broker registers for the other brokers when its
/// `inter_broker_advertise` differs from its client address (never shown to clients).
pub const INTER_BROKER_ENDPOINT: &str = "INTER_BROKER";

impl Endpoint {
    /// `HOST:PORT`, an IPv6 host in brackets.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A partition's KIP-966 state: the replicas outside the ISR that still hold everything
/// committed (they left it while it was below `min.insync.replicas`, when the high watermark
/// stands still), and the last leader when the partition went offline with neither an ISR
/// nor an ELR (Kafka 4.1 keeps only that in `LastKnownElr`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Elr {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eligible: Vec<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_known: Vec<i32>,
}

/// What a config record changes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "name")]
pub enum ConfigResource {
    Topic(String),
    Broker(i32),
    Cluster,
}

/// One metadata record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MetaRecord {
    /// The cluster's id: the first record of a new cluster's log.
    ClusterId {
        id: String,
    },
    /// A broker registered (fenced until its first heartbeat at or past this record). Its
    /// `epoch` is this record's log index, so epochs grow across registrations.
    RegisterBroker {
        id: i32,
        incarnation: Uuid,
        endpoints: Vec<Endpoint>,
        rack: Option<String>,
    },
    /// The broker may lead and take part in ISRs again.
    UnfenceBroker {
        id: i32,
        epoch: i64,
    },
    /// The broker missed its session (or stopped): it leads nothing until unfenced.
    FenceBroker {
        id: i32,
        epoch: i64,
    },
    /// The broker asked for a controlled shutdown.
    BrokerShutdown {
        id: i32,
        epoch: i64,
    },
    UnregisterBroker {
        id: i32,
        epoch: i64,
    },
    /// A topic with its id (its partitions follow as [`MetaRecord::Partition`]s).
    Topic {
        name: String,
        id: Uuid,
    },
    Partition {
        topic_id: Uuid,
        index: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        /// -1: no leader.
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    /// A change of a partition's ISR, leader or replicas; bumps its partition epoch, and its
    /// leader epoch when the leader changes.
    PartitionChange {
        topic_id: Uuid,
        index: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        isr: Option<Vec<i32>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replicas: Option<Vec<i32>>,
        /// KIP-966's eligible leader replicas and last known leader, when they change.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        elr: Option<Elr>,
    },
    /// A partition's reassignment (Kafka's adding / removing replicas), set with the
    /// `PartitionChange` that widens its replicas to target + leaving, cleared (both empty)
    /// with the one that completes or cancels it. Changes no epoch of its own.
    PartitionReassignment {
        topic_id: Uuid,
        index: i32,
        adding: Vec<i32>,
        removing: Vec<i32>,
    },
    RemoveTopic {
        id: Uuid,
    },
    /// Sets (`Some`) or removes (`None`) one config override.
    Config {
        resource: ConfigResource,
        name: String,
        value: Option<String>,
    },
    /// A user's SCRAM credential for one mechanism (Kafka's `UserScramCredentialRecord`):
    /// the salt and the keys derived from the salted password, never the password.
    ScramCredential {
        user: String,
        /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
        mechanism: String,
        #[serde(with = "base64_bytes")]
        salt: Vec<u8>,
        #[serde(with = "base64_bytes")]
        stored_key: Vec<u8>,
        #[serde(with = "base64_bytes")]
        server_key: Vec<u8>,
        iterations: i32,
    },
    /// A user's credential for one mechanism is deleted.
    RemoveScramCredential {
        user: String,
        mechanism: String,
    },
    /// An ACL (Kafka's `AccessControlEntryRecord`).
    Acl {
        binding: crate::security::acl::AclBinding,
    },
    /// An ACL is deleted (Kafka's `RemoveAccessControlEntryRecord`).
    RemoveAcl {
        binding: crate::security::acl::AclBinding,
    },
    /// One client quota of an entity is set (`Some`) or removed (`None`): Kafka's
    /// `ClientQuotaRecord` (KIP-55 / KIP-546).
    ClientQuota {
        entity: QuotaEntity,
        /// `producer_byte_rate`, `consumer_byte_rate`, `request_percentage`,
        /// `controller_mutation_rate` or (ip entities) `connection_creation_rate`.
        key: String,
        value: Option<QuotaValue>,
    },
    /// Producer ids `first .. first + size` belong to `broker_id` (size 1000, as Kafka).
    ProducerIdsBlock {
        broker_id: i32,
        broker_epoch: i64,
        first: i64,
        size: i64,
    },
}

/// A client quota entity (KIP-546): (entity type, name) pairs sorted by type, each type once;
/// the types are `user`, `client-id` and `ip`, a `None` name is that type's default
/// (`<default>`). Kafka allows `user`, `client-id`, `user` + `client-id`, and `ip` alone.
pub type QuotaEntity = Vec<(String, Option<String>)>;

/// A quota's value (Kafka keeps quotas as doubles). Compared by its bits, so records (and the
/// image) can be `Eq`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QuotaValue(pub f64);

impl PartialEq for QuotaValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for QuotaValue {}

/// Bytes as a base64 string in the records' JSON.
mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// The records of one controller decision: one raft entry, applied atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaBatch {
    pub records: Vec<MetaRecord>,
}

impl std::fmt::Display for MetaBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetaBatch({} records)", self.records.len())
    }
}

/// What applying an entry answers to its proposer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaReply {
    /// The log index the entry was applied at (a broker epoch for a `RegisterBroker`).
    pub index: u64,
}

/// Config overrides of one resource, as the image keeps them.
pub type Overrides = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json_and_unknown_kinds_fail() {
        let batch = MetaBatch {
            records: vec![
                MetaRecord::ClusterId { id: "abc".into() },
                MetaRecord::Topic {
                    name: "t".into(),
                    id: Uuid::new_v4(),
                },
                MetaRecord::Config {
                    resource: ConfigResource::Topic("t".into()),
                    name: "retention.ms".into(),
                    value: Some("1000".into()),
                },
                MetaRecord::PartitionChange {
                    topic_id: Uuid::nil(),
                    index: 3,
                    isr: Some(vec![1, 2]),
                    leader: None,
                    replicas: None,
                    elr: None,
                },
                MetaRecord::ClientQuota {
                    entity: vec![
                        ("client-id".into(), None),
                        ("user".into(), Some("alice".into())),
                    ],
                    key: "producer_byte_rate".into(),
                    value: Some(QuotaValue(1048576.0)),
                },
                MetaRecord::ClientQuota {
                    entity: vec![("ip".into(), Some("10.0.0.1".into()))],
                    key: "connection_creation_rate".into(),
                    value: None,
                },
            ],
        };
        let text = serde_json::to_string(&batch).unwrap();
        assert!(text.contains(r#""kind":"cluster_id""#), "{text}");
        assert_eq!(serde_json::from_str::<MetaBatch>(&text).unwrap(), batch);
        let unknown = r#"{"records":[{"kind":"delegation_token","id":"x"}]}"#;
        assert!(serde_json::from_str::<MetaBatch>(unknown).is_err());
    }
}
