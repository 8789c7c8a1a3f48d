//! One file per Kafka API: each translates its request into calls on the domain (`cluster`,
//! `log`) and builds the response. Handlers never see sockets or files.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_client_quotas;
pub mod alter_configs;
pub mod alter_partition_reassignments;
pub mod alter_replica_log_dirs;
pub mod alter_user_scram_credentials;
pub mod api_versions;
pub mod create_acls;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_acls;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_acls;
pub mod describe_client_quotas;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_topic_partitions;
pub mod describe_transactions;
pub mod describe_user_scram_credentials;
pub mod elect_leaders;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_config_resources;
pub mod list_groups;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sasl_authenticate;
pub mod sasl_handshake;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::cluster::{PartitionError, TopicError};

/// The Kafka error code for a topic operation's failure.
pub fn topic_error_code(e: &TopicError) -> ResponseError {
    match e {
        TopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
        TopicError::InvalidName(_) => ResponseError::InvalidTopicException,
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicError::Unknown(_) => ResponseError::UnknownTopicOrPartition,
        TopicError::Storage(_) => ResponseError::KafkaStorageError,
    }
}

/// Where a partition's leader is, from the image, for answers that refuse a request because
/// this broker does not lead it (KIP-951: `current_leader` per partition and the leaders'
/// `node_endpoints`, so a client moves in one round trip). Collects each leader once.
pub struct LeaderHints {
    image: std::sync::Arc<crate::meta::image::MetadataImage>,
    listener: crate::config::SecurityProtocol,
    /// Leader ids whose endpoints the answer carries.
    pub leaders: std::collections::BTreeSet<i32>,
}

impl LeaderHints {
    pub fn new(broker: &Broker, listener: crate::config::SecurityProtocol) -> LeaderHints {
        LeaderHints {
            image: broker.meta.image(),
            listener,
            leaders: Default::default(),
        }
    }

    /// The partition's leader id and leader epoch, if it has a registered leader.
    pub fn leader(
        &mut self,
        topic: crate::cluster::TopicRef<'_>,
        partition: i32,
    ) -> Option<(i32, i32)> {
        let t = match topic {
            crate::cluster::TopicRef::Name(n) => self.image.topic_by_name(n),
            crate::cluster::TopicRef::Id(id) => self.image.topic(&id),
        }?;
        let p = t.partitions.get(usize::try_from(partition).ok()?)?;
        if p.leader < 0 || !self.image.brokers.contains_key(&p.leader) {
            return None;
        }
        self.leaders.insert(p.leader);
        Some((p.leader, p.leader_epoch))
    }

    /// `(id, host, port, rack)` of every leader named.
    pub fn endpoints(&self) -> Vec<(i32, String, i32, Option<String>)> {
        self.leaders
            .iter()
            .filter_map(|id| {
                let b = self.image.brokers.get(id)?;
                let e = b.endpoint(self.listener)?;
                Some((*id, e.host.clone(), i32::from(e.port), b.rack.clone()))
            })
            .collect()
    }
}

/// The `controller_id` Metadata and DescribeCluster report: where clients send admin requests.
/// As in KRaft Kafka (which names a random alive broker), it is a broker, not necessarily the
/// active controller: every broker forwards admin requests to the active controller. This
/// broker names itself: it is alive (it is answering), so a client's cached controller does
/// not die with the active controller (librdkafka would wait for its next periodic metadata
/// refresh, 5 minutes by default). DescribeQuorum names the active controller.
pub fn admin_controller_id(broker: &Broker) -> BrokerId {
    BrokerId(broker.node.node_id)
}

/// Whether an error is one KIP-951 answers with the current leader.
pub fn wants_leader_hint(code: i16) -> bool {
    code == ResponseError::NotLeaderOrFollower.code()
        || code == ResponseError::FencedLeaderEpoch.code()
}

/// The Kafka error code and message for a controller's refusal.
pub fn controller_failure(e: &crate::meta::controller::ControllerError) -> (ResponseError, String) {
    use crate::meta::controller::ControllerError as E;
    let code = match e {
        E::Topic(t) => topic_error_code(t),
        E::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        E::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        E::InvalidRequest(_) => ResponseError::InvalidRequest,
        E::NotController(_) => ResponseError::NotController,
        E::StaleBrokerEpoch => ResponseError::StaleBrokerEpoch,
        E::BrokerNotRegistered => ResponseError::BrokerIdNotRegistered,
        E::InconsistentClusterId => ResponseError::InconsistentClusterId,
        E::Timeout => ResponseError::RequestTimedOut,
        E::Internal(_) => ResponseError::UnknownServerError,
    };
    (code, e.to_string())
}

/// The Kafka error code for a partition lookup's failure ([`crate::cluster::TopicRegistry::get_partition`]).
pub fn partition_error_code(e: PartitionError) -> ResponseError {
    match e {
        PartitionError::Unknown => ResponseError::UnknownTopicOrPartition,
        PartitionError::UnknownTopicId => ResponseError::UnknownTopicId,
        PartitionError::NotLeader => ResponseError::NotLeaderOrFollower,
        PartitionError::FencedLeaderEpoch => ResponseError::FencedLeaderEpoch,
        PartitionError::UnknownLeaderEpoch => ResponseError::UnknownLeaderEpoch,
    }
}

pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub fn topic_name(s: impl Into<String>) -> TopicName {
    TopicName(str_bytes(s))
}

impl Broker {
    pub fn node_id(&self) -> BrokerId {
        BrokerId(self.node.node_id)
    }
}

/// Whether every string a request would store in an internal topic's records
/// (`__consumer_offsets`, `__transaction_state`: i16-length strings) fits there. Requests
/// with a longer one are refused with INVALID_REQUEST: nothing is ever truncated or wrapped.
pub fn internal_strings_fit<'a>(strings: impl IntoIterator<Item = &'a str>) -> bool {
    strings
        .into_iter()
        .all(crate::groups::store::fits_internal_string)
}

/// Waits until a write to `__consumer_offsets` is committed: what the flush policy promises
/// (the fsync runs on the blocking pool, group-committed) and on every in-sync replica. Else
/// the error code the client gets.
pub async fn durable(durability: crate::groups::Durability) -> Result<(), ResponseError> {
    use crate::groups::Durability;
    match durability {
        Durability::Done => Ok(()),
        Durability::Failed(e) => Err(e),
        pending => crate::threads::spawn_blocking(move || pending.wait())
            .await
            .unwrap_or(Err(ResponseError::UnknownServerError)),
    }
}

/// Kafka's "no error" code.
pub const NONE: i16 = 0;

/// PRODUCER_FENCED (90, KIP-588) is answered only to request versions that know it; older
/// ones get INVALID_PRODUCER_EPOCH instead, as Kafka's `KafkaApis` maps it (InitProducerId
/// below v4; AddPartitionsToTxn, AddOffsetsToTxn and EndTxn below v2).
pub fn producer_fenced_for(
    error: ResponseError,
    version: i16,
    first_knowing: i16,
) -> ResponseError {
    match error {
        ResponseError::ProducerFenced if version < first_knowing => {
            ResponseError::InvalidProducerEpoch
        }
        e => e,
    }
}

/// Who sent a request, for its handler's authorization checks (`authorizer = "acl"`):
/// the connection's principal and IP, and the authorizer of the ACLs current when the
/// request arrived. Without an authorizer every check passes.
#[derive(Clone)]
pub struct Caller {
    pub principal: String,
    pub host: String,
    authorizer: Option<std::sync::Arc<crate::security::acl::Authorizer>>,
}

/// Denials are logged at most every 50 ms (each line names principal, host, operation and
/// resource), so a client retrying a refused request cannot flood the log.
static DENIED_LOG: crate::log_every::LogLimit = crate::log_every::LogLimit::new();

impl Caller {
    pub fn new(broker: &Broker, principal: &str, peer: &str) -> Caller {
        let authorizer = broker.authorizer();
        if authorizer.is_none() {
            // Every check passes: nothing to copy on the request path.
            return Caller::unchecked();
        }
        let host = peer
            .rsplit_once(':')
            .map_or(peer, |(host, _)| host)
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        Caller {
            principal: principal.to_string(),
            host,
            authorizer,
        }
    }

    /// A caller every check lets through (no authorizer; its principal and host are not kept).
    pub fn unchecked() -> Caller {
        Caller {
            principal: String::new(),
            host: String::new(),
            authorizer: None,
        }
    }

    /// Whether an authorizer decides (`authorizer = "acl"`).
    pub fn enforcing(&self) -> bool {
        self.authorizer.is_some()
    }

    /// Whether the caller may do `op` on the resource; a denial is logged (rate-limited).
    pub fn allowed(
        &self,
        op: crate::security::acl::AclOperation,
        resource_type: crate::security::acl::ResourceType,
        name: &str,
    ) -> bool {
        let Some(authorizer) = &self.authorizer else {
            return true;
        };
        let decision = authorizer.authorize(&self.principal, &self.host, op, resource_type, name);
        if decision.is_allowed() {
            return true;
        }
        if DENIED_LOG.allow(std::time::Duration::from_millis(50)) {
            tracing::info!(principal = %self.principal, host = %self.host, operation = %op,
                resource_type = %resource_type, resource = name, reason = %decision.reason(),
                "authorization denied");
        }
        false
    }

    /// Kafka's authorization error for the resource type when the caller may not do `op`
    /// on the resource (TOPIC_, GROUP_, TRANSACTIONAL_ID_ or CLUSTER_AUTHORIZATION_FAILED).
    pub fn refusal(
        &self,
        op: crate::security::acl::AclOperation,
        resource_type: crate::security::acl::ResourceType,
        name: &str,
    ) -> Option<ResponseError> {
        use crate::security::acl::ResourceType as R;
        if self.allowed(op, resource_type, name) {
            return None;
        }
        Some(match resource_type {
            R::Topic => ResponseError::TopicAuthorizationFailed,
            R::Group => ResponseError::GroupAuthorizationFailed,
            R::TransactionalId => ResponseError::TransactionalIdAuthorizationFailed,
            R::DelegationToken => ResponseError::DelegationTokenAuthorizationFailed,
            _ => ResponseError::ClusterAuthorizationFailed,
        })
    }

    /// The topics among `names` the caller may not do `op` on.
    pub fn denied_topics<'a>(
        &self,
        op: crate::security::acl::AclOperation,
        names: impl IntoIterator<Item = &'a str>,
    ) -> std::collections::HashSet<&'a str> {
        names
            .into_iter()
            .filter(|n| !self.allowed(op, crate::security::acl::ResourceType::Topic, n))
            .collect()
    }

    /// Whether the caller may do `op` on the resource, without logging a denial (Kafka's
    /// `logIfDenied = false`: a check that only picks between two ways of answering).
    pub fn permits(
        &self,
        op: crate::security::acl::AclOperation,
        resource_type: crate::security::acl::ResourceType,
        name: &str,
    ) -> bool {
        self.authorizer.as_ref().is_none_or(|a| {
            a.authorize(&self.principal, &self.host, op, resource_type, name)
                .is_allowed()
        })
    }

    /// Kafka's error for a caller without `op` on the cluster (CLUSTER_AUTHORIZATION_FAILED).
    pub fn cluster_refusal(&self, op: crate::security::acl::AclOperation) -> Option<ResponseError> {
        self.refusal(
            op,
            crate::security::acl::ResourceType::Cluster,
            crate::security::acl::CLUSTER_NAME,
        )
    }

    /// Kafka's `authorizedOperations`: of the operations whose bits (1 << AclOperation code)
    /// `supported` has, those the caller may do on the resource. Nothing is logged (a query,
    /// not a denial). Without an authorizer: all of `supported`.
    pub fn authorized_operations(
        &self,
        resource_type: crate::security::acl::ResourceType,
        name: &str,
        supported: i32,
    ) -> i32 {
        use crate::security::acl::AclOperation;
        let Some(authorizer) = &self.authorizer else {
            return supported;
        };
        (0..31)
            .filter(|bit| supported & (1 << bit) != 0)
            .filter(|&bit| {
                authorizer
                    .authorize(
                        &self.principal,
                        &self.host,
                        AclOperation::from_code(bit as i8),
                        resource_type,
                        name,
                    )
                    .is_allowed()
            })
            .fold(0, |ops, bit| ops | (1 << bit))
    }

    /// Whether the caller may do `op` on the cluster resource.
    pub fn allowed_on_cluster(&self, op: crate::security::acl::AclOperation) -> bool {
        self.allowed(
            op,
            crate::security::acl::ResourceType::Cluster,
            crate::security::acl::CLUSTER_NAME,
        )
    }

    /// Kafka's `authorizeByResourceType` (KIP-679): whether `op` is allowed on some
    /// resource of the type.
    pub fn allowed_on_some(
        &self,
        op: crate::security::acl::AclOperation,
        resource_type: crate::security::acl::ResourceType,
    ) -> bool {
        match &self.authorizer {
            None => true,
            Some(a) => a.authorize_any_of_type(&self.principal, &self.host, op, resource_type),
        }
    }
}
