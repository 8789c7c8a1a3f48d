//! Broker configuration: defaults < `ottla.toml` (or `--config FILE`) < `OTTLA_*` environment
//! variables < command-line flags, merged with figment.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Smallest `segment.bytes` (topic) and `log_segment_bytes` (broker): Kafka 4's 1 MiB.
pub const SEGMENT_BYTES_MIN: u64 = 1 << 20;
/// Largest `segment.bytes`: Kafka's is an int, and index entries hold u32 file positions.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Smallest `fetch_max_bytes` (Kafka's `fetch.max.bytes` lower bound).
pub const FETCH_MAX_BYTES_MIN: usize = 1024;

/// Every broker setting, with its unit in the name. See README.md for the reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Addresses to listen on, `[PROTOCOL://]HOST:PORT` with PROTOCOL one of `PLAINTEXT`
    /// (the default), `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`. `localhost:PORT` means both
    /// 127.0.0.1 and [::1].
    #[serde(deserialize_with = "list_or_csv")]
    pub listen: Vec<String>,
    /// Addresses clients are told to connect to (Metadata), `[PROTOCOL://]HOST:PORT`, one per
    /// listener protocol (an entry without a protocol is the first listener's); a listener
    /// without one advertises its own address.
    #[serde(deserialize_with = "list_or_csv")]
    pub advertise: Vec<String>,
    /// `HOST:PORT` at which the other brokers and the controller reach this broker's
    /// listener (followers' fetches, transaction markers, the controller's crash probe),
    /// when it differs from the advertised client address, as in containers that publish
    /// their port on the host (Kafka: the advertised address of `inter.broker.listener.name`).
    /// Registered as a second endpoint, `INTER_BROKER`; clients never see it. Default: the
    /// advertised address.
    pub inter_broker_advertise: Option<String>,
    /// The security protocol brokers speak to each other (Kafka's
    /// `inter.broker.listener.name`): `PLAINTEXT` (the default), `SSL`, `SASL_PLAINTEXT` or
    /// `SASL_SSL`. Each broker then reaches its peers at their advertised endpoint of that
    /// protocol (followers' fetches, transaction markers), so every broker needs such a
    /// listener. Unset: the `INTER_BROKER` endpoint (`inter_broker_advertise`) or PLAINTEXT.
    pub inter_broker_listener: Option<String>,
    /// SASL mechanism of the brokers' own connections (Kafka's
    /// `sasl.mechanism.inter.broker.protocol`): `SCRAM-SHA-512` (default), `SCRAM-SHA-256` or
    /// `PLAIN`.
    pub inter_broker_sasl_mechanism: String,
    /// The user brokers authenticate as to each other on a `SASL_*` inter-broker listener
    /// (create it with `bootstrap_users`; with ACLs it needs CLUSTER_ACTION on the cluster,
    /// e.g. as a super user).
    pub inter_broker_sasl_username: Option<String>,
    /// That user's password.
    pub inter_broker_sasl_password: Option<String>,
    /// PEM CA certificates the brokers trust for each other's TLS certificates on an `SSL` or
    /// `SASL_SSL` inter-broker listener (Kafka's truststore). Default: `tls_client_ca_file`.
    pub inter_broker_tls_ca_file: Option<PathBuf>,
    /// Where topics, segments and metadata live (ignored with `memory`).
    pub data_dir: PathBuf,
    /// Keep everything in memory: nothing is written to disk, nothing survives a restart.
    pub memory: bool,
    /// This node's id (Kafka's `node.id`): its broker id and, with the controller role, its
    /// id among the controller voters.
    pub node_id: i32,
    /// What this node runs (Kafka's `process.roles`): `broker`, `controller`, or both
    /// (combined mode, the default). Written as a list or a comma-separated string.
    #[serde(deserialize_with = "list_or_csv")]
    pub process_roles: Vec<ProcessRole>,
    /// `[PROTOCOL://]HOST:PORT` the controller listens on (Kafka's controller listener);
    /// needed by a node with the controller role once voters are configured. PROTOCOL is that
    /// of every controller listener of the cluster (`PLAINTEXT` by default, `SSL`,
    /// `SASL_PLAINTEXT` or `SASL_SSL`): nodes reach each other's controller listeners with it,
    /// as the inter-broker user (`inter_broker_sasl_*`, `controller_sasl_mechanism`) and
    /// trusting `inter_broker_tls_ca_file`.
    pub controller_listen: Option<String>,
    /// SASL mechanism of the connections to controller listeners (Kafka's
    /// `sasl.mechanism.controller.protocol`): `SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN`.
    /// Default: `inter_broker_sasl_mechanism`.
    pub controller_sasl_mechanism: Option<String>,
    /// The user nodes log in as on `SASL_*` controller listeners (Kafka: the controller
    /// listener's own JAAS login). Default: `inter_broker_sasl_username`.
    pub controller_sasl_username: Option<String>,
    /// That user's password. Default: `inter_broker_sasl_password`.
    pub controller_sasl_password: Option<String>,
    /// The controller quorum (Kafka's `controller.quorum.voters`): `ID@HOST:PORT` entries, as a
    /// list or a comma-separated string. Empty: this node is a cluster of one.
    #[serde(deserialize_with = "list_or_csv")]
    pub controller_quorum_voters: Vec<Voter>,
    /// This broker's rack (Kafka's `broker.rack`), reported in Metadata and DescribeCluster.
    pub broker_rack: Option<String>,
    /// Which replica a leader tells a consumer to fetch from (KIP-392, Kafka's
    /// `replica.selector.class`): `rack_aware` (a replica in the consumer's rack, its
    /// `client.rack`, when the leader is not in it; Kafka's `RackAwareReplicaSelector`) or
    /// `leader` (always the leader, Kafka's default). Without racks both read from leaders.
    pub replica_selector: String,
    /// Replication factor of topics created without one (`-1`) or auto-created (Kafka's
    /// `default.replication.factor`).
    pub default_replication_factor: i16,
    /// Default `min.insync.replicas` of topics: replicas that must have an acks=all write;
    /// a leader's high watermark stands still while its ISR is smaller.
    pub min_insync_replicas: i32,
    /// KIP-966 eligible leader replicas in the active controller's elections (Kafka 4.1's
    /// `eligible.leader.replicas.version=1`, on for new clusters). Set it alike on every
    /// controller.
    pub eligible_leader_replicas_enable: bool,
    /// Cluster id; generated once and stored in the data directory when unset.
    pub cluster_id: Option<String>,
    /// Partitions of a topic created without a count (auto-created or `num_partitions = -1`).
    pub num_partitions: i32,
    /// Create unknown topics when a client asks for their metadata or produces to them.
    pub auto_create_topics: bool,
    /// Largest record batch accepted (Kafka's `message.max.bytes`).
    pub message_max_bytes: i32,
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`).
    pub max_frame_bytes: usize,
    /// Simultaneous client connections; further ones wait to be accepted.
    pub max_connections: usize,
    /// Requests one connection may have decoded and waiting for an answer.
    pub max_in_flight_requests: usize,
    /// Broker-wide bound on the bytes of requests being read or waiting to be handled
    /// (Kafka's `queued.max.request.bytes`); spent, connections stop reading and the one
    /// holding the most bytes of an unfinished request is closed. 0: an eighth of the
    /// machine's memory, at most 256 MiB, at least `max_frame_bytes` (see
    /// [`Config::request_memory_bytes`]).
    pub queued_max_request_bytes: usize,
    /// A connection with no byte read or written for this long is closed (Kafka's
    /// `connections.max.idle.ms`).
    pub connections_max_idle_ms: u64,
    /// Simultaneous connections from one IP address (Kafka's `max.connections.per.ip`);
    /// further ones are closed at once.
    pub max_connections_per_ip: usize,
    /// Per-address exceptions, `"IP:COUNT"` (Kafka's `max.connections.per.ip.overrides`).
    pub max_connections_per_ip_overrides: Vec<String>,
    /// New connections accepted per second at most (KIP-612's `max.connection.creation.rate`);
    /// beyond it accepting waits. 0: no limit.
    pub max_connection_creation_rate: u32,
    /// Samples client quotas are measured over (Kafka's `quota.window.num`, 11: ten whole
    /// windows and the current one).
    pub quota_window_num: usize,
    /// The span of each sample, in seconds (Kafka's `quota.window.size.seconds`, 1).
    pub quota_window_size_seconds: u64,
    /// PEM certificate chain (the server's first) of the `SSL` and `SASL_SSL` listeners;
    /// reloaded with the key on SIGHUP.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// PEM certificates of the CAs that sign client certificates (mutual TLS).
    pub tls_client_ca_file: Option<PathBuf>,
    /// Client certificates (Kafka's `ssl.client.auth`): `none`, `requested` (checked when
    /// sent) or `required`. A verified certificate's subject becomes the principal
    /// (`User:CN=...,O=...`) on `SSL` listeners.
    pub tls_client_auth: TlsClientAuth,
    /// SASL mechanisms offered on `SASL_*` listeners (Kafka's `sasl.enabled.mechanisms`):
    /// any of `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`.
    #[serde(deserialize_with = "list_or_csv")]
    pub sasl_enabled_mechanisms: Vec<String>,
    /// Users created at startup, `"NAME:PASSWORD"`, each with SCRAM-SHA-256 and SCRAM-SHA-512
    /// credentials (stored salted in the metadata log, never the password), only when the
    /// user has no credential yet.
    #[serde(deserialize_with = "list_or_csv")]
    pub bootstrap_users: Vec<String>,
    /// Largest frame a `SASL_*` connection may send before it has authenticated (Kafka's
    /// `sasl.server.max.receive.size`).
    pub sasl_server_max_receive_size: usize,
    /// A `SASL_*` connection that has not authenticated after this long is closed.
    pub authentication_timeout_ms: u64,
    /// Most a SASL session lasts before the client must re-authenticate (KIP-368's
    /// `connections.max.reauth.ms`); 0: sessions never expire.
    pub connections_max_reauth_ms: u64,
    /// SASL/OAUTHBEARER: the JWKS file (RFC 7517) whose keys sign the tokens (KIP-768's
    /// `sasl.oauthbearer.jwks.endpoint.url` with a `file:` URL). Without it, OAUTHBEARER
    /// takes Kafka's default unsecured tokens (`alg: none`), for development only.
    pub sasl_oauthbearer_jwks_file: Option<PathBuf>,
    /// Audiences a token's `aud` must name one of (`sasl.oauthbearer.expected.audience`).
    #[serde(deserialize_with = "list_or_csv")]
    pub sasl_oauthbearer_expected_audience: Vec<String>,
    /// The issuer a token's `iss` must be (`sasl.oauthbearer.expected.issuer`).
    pub sasl_oauthbearer_expected_issuer: Option<String>,
    /// The claim that names the principal (`sasl.oauthbearer.sub.claim.name`).
    pub sasl_oauthbearer_sub_claim_name: String,
    /// Who may do what (Kafka's `authorizer.class.name`): `none` (everyone may do
    /// everything) or `acl` (ACLs stored in the metadata log, Kafka's StandardAuthorizer).
    pub authorizer: String,
    /// Principals allowed everything, `"User:NAME"` (Kafka's `super.users`).
    #[serde(deserialize_with = "list_or_csv")]
    pub super_users: Vec<String>,
    /// With `authorizer = "acl"`: a resource no ACL names is open to everyone (Kafka's
    /// `allow.everyone.if.no.acl.found`).
    pub allow_everyone_if_no_acl_found: bool,
    /// Upper bound on a fetch's long-poll wait, whatever the client asks.
    pub fetch_max_wait_ms: u64,
    /// How long a graceful stop lets open connections finish the request in hand before it
    /// aborts them (then the logs are synced and the clean-shutdown marker written).
    pub shutdown_grace_ms: u64,
    /// Most record bytes one fetch response gathers, whatever the client asks (Kafka's
    /// `fetch.max.bytes`; the first batch is returned whole even if larger, KIP-74). In memory
    /// mode these bytes are copied per response: this bounds that memory.
    pub fetch_max_bytes: usize,
    /// Incremental fetch sessions (KIP-227) the broker keeps (Kafka's
    /// `max.incremental.fetch.session.cache.slots`); below 8 none is created.
    pub max_incremental_fetch_session_cache_slots: usize,
    /// Most partitions cached over all fetch sessions (an ottla bound, about 120 bytes each):
    /// past it a full fetch gets no session, and a session that would grow past it closes.
    pub max_incremental_fetch_session_partitions: usize,
    /// Default `segment.bytes` of topics.
    pub log_segment_bytes: u64,
    /// Default `segment.ms` of topics.
    pub log_segment_ms: i64,
    /// Default `retention.ms` of topics (enforced by the storage issue's retention).
    pub log_retention_ms: i64,
    /// Default `retention.bytes` of topics.
    pub log_retention_bytes: i64,
    /// Default `index.interval.bytes` of topics.
    pub log_index_interval_bytes: u64,
    /// Default `message.timestamp.type` of topics: `CreateTime` or `LogAppendTime`.
    pub log_message_timestamp_type: String,
    /// Default `message.timestamp.before.max.ms` / `after.max.ms` of topics (KIP-937): how far
    /// a CreateTime record's timestamp may lag / lead the broker's clock.
    pub log_message_timestamp_before_max_ms: i64,
    pub log_message_timestamp_after_max_ms: i64,
    /// Default `compression.type` of topics: `producer` (stored as sent), `uncompressed`,
    /// `gzip`, `snappy`, `lz4` or `zstd` (recompressed on produce when the batch differs).
    pub compression_type: String,
    /// Default `compression.gzip.level` / `lz4.level` / `zstd.level` of topics (KIP-390).
    pub compression_gzip_level: i32,
    pub compression_lz4_level: i32,
    pub compression_zstd_level: i32,
    /// The most a produced compressed batch may decompress to when the broker must read its
    /// records (recompression, compacted topics, timestamp bounds); larger: MESSAGE_TOO_LARGE.
    pub max_decompressed_batch_bytes: usize,
    /// `interval`: acknowledged data sits in the page cache until the periodic flush (Kafka's
    /// default); `always`: every acknowledged produce is fsynced first (group commit).
    pub fsync: FsyncPolicy,
    /// Default `flush.ms` of topics: unflushed data older than this is fsynced.
    pub flush_interval_ms: i64,
    /// Default `flush.messages` of topics: fsync before acknowledging once this many records
    /// are unflushed (Kafka's `log.flush.interval.messages`; 1 is the same as `fsync = "always"`).
    pub flush_messages: i64,
    /// How often retention runs (Kafka's `log.retention.check.interval.ms`, default 5 min).
    pub log_retention_check_interval_ms: u64,
    /// How often the cleaner looks for compaction work (Kafka's `log.cleaner.backoff.ms`).
    pub log_cleaner_backoff_ms: u64,
    /// Default `delete.retention.ms` of compacted topics.
    pub log_cleaner_delete_retention_ms: i64,
    /// Default `min.compaction.lag.ms`.
    pub log_cleaner_min_compaction_lag_ms: i64,
    /// How long a rebalance of an empty group waits for more members to join (Kafka's default
    /// is 3000; ours is 0 so that a lone consumer gets its partitions at once).
    pub group_initial_rebalance_delay_ms: i64,
    /// Session timeouts a member may ask for (Kafka's `group.min/max.session.timeout.ms`).
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// How long an empty group's committed offsets are kept (Kafka's
    /// `offsets.retention.minutes`).
    pub offsets_retention_minutes: i64,
    /// How long an idle producer id's state is kept per partition (Kafka's
    /// `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: i64,
    /// How long an idle transactional id is kept by the coordinator (Kafka's
    /// `transactional.id.expiration.ms`).
    pub transactional_id_expiration_ms: i64,
    /// Most segment files (`.log`, `.index`, `.timeindex`, `.txnindex`) kept open at once;
    /// the least recently used are closed and reopened on demand. Lowered at start to half the
    /// open-file limit (RLIMIT_NOFILE) when that is smaller, leaving room for connections.
    pub max_open_segment_files: usize,
    /// How often a broker heartbeats to the active controller (Kafka's
    /// `broker.heartbeat.interval.ms`).
    pub broker_heartbeat_interval_ms: u64,
    /// A broker without a heartbeat for this long is fenced (Kafka's
    /// `broker.session.timeout.ms`).
    pub broker_session_timeout_ms: u64,
    /// A follower that has not caught up with its leader's log end for this long leaves the
    /// ISR (Kafka's `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// How often every replica's high watermark is checkpointed, the one a restarted replica
    /// starts from (Kafka's `replica.high.watermark.checkpoint.interval.ms`).
    pub replica_high_watermark_checkpoint_interval_ms: u64,
    /// The active controller moves leadership back to preferred replicas (the first of each
    /// partition's replicas) when a broker leads too few of the partitions it prefers (Kafka's
    /// `auto.leader.rebalance.enable`).
    pub auto_leader_rebalance_enable: bool,
    /// How often it checks (Kafka's `leader.imbalance.check.interval.seconds`).
    pub leader_imbalance_check_interval_seconds: u64,
    /// A broker is imbalanced when it does not lead more than this percentage of the
    /// partitions it prefers (Kafka's `leader.imbalance.per.broker.percentage`).
    pub leader_imbalance_per_broker_percentage: u32,
    /// Partitions of `__consumer_offsets` when it is created (Kafka's
    /// `offsets.topic.num.partitions`); a group's coordinator is the leader of partition
    /// `abs(hash(group id)) % partitions` of the topic as it exists.
    pub offsets_topic_num_partitions: i32,
    /// Replication factor of `__consumer_offsets` when it is created (Kafka's
    /// `offsets.topic.replication.factor`); a cluster of one uses 1.
    pub offsets_topic_replication_factor: i16,
    /// Partitions of `__transaction_state` when it is created (Kafka's
    /// `transaction.state.log.num.partitions`).
    pub transaction_state_log_num_partitions: i32,
    /// Replication factor of `__transaction_state` when it is created (Kafka's
    /// `transaction.state.log.replication.factor`); a cluster of one uses 1.
    pub transaction_state_log_replication_factor: i16,
}

/// One of [`Config::process_roles`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessRole {
    Broker,
    Controller,
}

impl ProcessRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessRole::Broker => "broker",
            ProcessRole::Controller => "controller",
        }
    }
}

impl std::fmt::Display for ProcessRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProcessRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "broker" => Ok(ProcessRole::Broker),
            "controller" => Ok(ProcessRole::Controller),
            other => Err(format!(
                "unknown process role '{other}' (only 'broker' and 'controller' are allowed roles)"
            )),
        }
    }
}

/// One controller voter, `ID@HOST:PORT` (an entry of Kafka's `controller.quorum.voters`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Voter {
    pub id: i32,
    /// A host name or IP address (an IPv6 address without its brackets).
    pub host: String,
    pub port: u16,
}

impl Voter {
    /// `HOST:PORT` of its controller listener (an IPv6 host in brackets).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Voter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.id, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.id, self.host, self.port)
        }
    }
}

impl std::str::FromStr for Voter {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        let bad = || {
            format!("invalid controller quorum voter \"{spec}\": expected ID@HOST:PORT, e.g. 1@localhost:9093")
        };
        let (id, address) = spec.split_once('@').ok_or_else(bad)?;
        let id: i32 = id.trim().parse().map_err(|_| bad())?;
        if id < 0 {
            return Err(format!(
                "invalid controller quorum voter \"{spec}\": the id must be ≥ 0"
            ));
        }
        let (host, port) = split_host_port(address).ok_or_else(bad)?;
        if port == 0 {
            return Err(format!(
                "invalid controller quorum voter \"{spec}\": the port must not be 0"
            ));
        }
        Ok(Voter {
            id,
            host: host.to_string(),
            port,
        })
    }
}

impl Serialize for Voter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `HOST:PORT` split into its host (brackets of an IPv6 address removed) and port; `None`
/// unless the host is non-empty (no `@`, no spaces) and the port a number.
pub fn split_host_port(spec: &str) -> Option<(&str, u16)> {
    let (host, port) = spec.trim().rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    if host.is_empty() || host.contains(['@', ' ', ',', '[', ']', '/']) {
        return None;
    }
    Some((host, port))
}

/// Whether two listen addresses would bind the same socket: same (non-ephemeral) port and the
/// same host, a wildcard host, or two names of the loopback (`localhost` is both).
fn listen_overlap(a: &str, b: &str) -> bool {
    let (Some((ha, pa)), Some((hb, pb))) = (split_host_port(a), split_host_port(b)) else {
        return false;
    };
    if pa != pb || pa == 0 {
        return false;
    }
    let wildcard = |h: &str| matches!(h, "0.0.0.0" | "::");
    let loopback = |h: &str| matches!(h, "localhost" | "127.0.0.1" | "::1");
    ha.eq_ignore_ascii_case(hb)
        || wildcard(ha)
        || wildcard(hb)
        || (loopback(ha) && loopback(hb) && (ha == "localhost" || hb == "localhost"))
}

/// Deserializes a list either as a sequence or as one comma-separated string (how an
/// `OTTLA_*` variable gives it), each item parsed with `FromStr`.
fn list_or_csv<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Items {
        One(String),
        Many(Vec<String>),
    }
    let items = match Items::deserialize(d)? {
        Items::One(s) if s.trim().is_empty() => Vec::new(),
        Items::One(s) => s.split(',').map(str::to_string).collect(),
        Items::Many(v) => v,
    };
    items
        .iter()
        .map(|i| i.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// The principal of connections that did not authenticate.
const ANONYMOUS_USER: &str = "User:ANONYMOUS";

/// The SASL mechanisms ottla implements.
pub const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

/// See [`Config::tls_client_auth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsClientAuth {
    None,
    Requested,
    Required,
}

/// A listener's security protocol (Kafka's ids, as brokers register them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecurityProtocol {
    Plaintext = 0,
    Ssl = 1,
    SaslPlaintext = 2,
    SaslSsl = 3,
}

impl SecurityProtocol {
    pub const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    /// Kafka's name, also the listener's name in the brokers' registrations.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// `[PROTOCOL://]HOST:PORT` split into its protocol (PLAINTEXT when absent) and `HOST:PORT`.
pub fn split_listener(spec: &str) -> Result<(SecurityProtocol, &str), String> {
    let spec = spec.trim();
    match spec.split_once("://") {
        None => Ok((SecurityProtocol::Plaintext, spec)),
        Some((name, addr)) => SecurityProtocol::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
            .map(|p| (p, addr))
            .ok_or_else(|| {
                format!("unknown security protocol {name:?} in {spec:?}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
            }),
    }
}

/// See [`Config::fsync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    Interval,
    Always,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec!["localhost:9092".to_string()],
            advertise: Vec::new(),
            inter_broker_advertise: None,
            inter_broker_listener: None,
            inter_broker_sasl_mechanism: "SCRAM-SHA-512".into(),
            inter_broker_sasl_username: None,
            inter_broker_sasl_password: None,
            inter_broker_tls_ca_file: None,
            data_dir: PathBuf::from("./ottla-data"),
            memory: false,
            node_id: 1,
            process_roles: vec![ProcessRole::Broker, ProcessRole::Controller],
            controller_listen: None,
            controller_sasl_mechanism: None,
            controller_sasl_username: None,
            controller_sasl_password: None,
            controller_quorum_voters: Vec::new(),
            broker_rack: None,
            replica_selector: "rack_aware".into(),
            default_replication_factor: 1,
            min_insync_replicas: 1,
            eligible_leader_replicas_enable: true,
            cluster_id: None,
            num_partitions: 1,
            auto_create_topics: true,
            message_max_bytes: 1_048_588,
            max_frame_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            max_in_flight_requests: 16,
            queued_max_request_bytes: 0,
            connections_max_idle_ms: 600_000,
            max_connections_per_ip: usize::MAX,
            max_connections_per_ip_overrides: Vec::new(),
            max_connection_creation_rate: 0,
            quota_window_num: 11,
            quota_window_size_seconds: 1,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls_client_auth: TlsClientAuth::None,
            sasl_enabled_mechanisms: vec![
                "PLAIN".into(),
                "SCRAM-SHA-256".into(),
                "SCRAM-SHA-512".into(),
            ],
            bootstrap_users: Vec::new(),
            sasl_server_max_receive_size: 512 * 1024,
            authentication_timeout_ms: 10_000,
            connections_max_reauth_ms: 0,
            sasl_oauthbearer_jwks_file: None,
            sasl_oauthbearer_expected_audience: Vec::new(),
            sasl_oauthbearer_expected_issuer: None,
            sasl_oauthbearer_sub_claim_name: "sub".into(),
            authorizer: "none".into(),
            super_users: Vec::new(),
            allow_everyone_if_no_acl_found: false,
            fetch_max_wait_ms: 30_000,
            fetch_max_bytes: 55 * 1024 * 1024,
            max_incremental_fetch_session_cache_slots: 1000,
            max_incremental_fetch_session_partitions: 1_000_000,
            shutdown_grace_ms: 5000,
            log_segment_bytes: 1 << 30,
            log_segment_ms: 7 * 24 * 3600 * 1000,
            log_retention_ms: 7 * 24 * 3600 * 1000,
            log_retention_bytes: -1,
            log_index_interval_bytes: 4096,
            log_message_timestamp_type: "CreateTime".to_string(),
            log_message_timestamp_before_max_ms: i64::MAX,
            log_message_timestamp_after_max_ms: i64::MAX,
            compression_type: "producer".to_string(),
            compression_gzip_level: crate::log::codec::levels::GZIP_DEFAULT,
            compression_lz4_level: crate::log::codec::levels::LZ4_DEFAULT,
            compression_zstd_level: crate::log::codec::levels::ZSTD_DEFAULT,
            max_decompressed_batch_bytes: 100 * 1024 * 1024,
            fsync: FsyncPolicy::Interval,
            flush_interval_ms: 1000,
            flush_messages: i64::MAX,
            log_retention_check_interval_ms: 300_000,
            log_cleaner_backoff_ms: 15_000,
            log_cleaner_delete_retention_ms: 24 * 3600 * 1000,
            log_cleaner_min_compaction_lag_ms: 0,
            group_initial_rebalance_delay_ms: 0,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            offsets_retention_minutes: 7 * 24 * 60,
            producer_id_expiration_ms: 24 * 3600 * 1000,
            transactional_id_expiration_ms: 7 * 24 * 3600 * 1000,
            max_open_segment_files: crate::log::open_files::DEFAULT_MAX_OPEN_SEGMENT_FILES,
            broker_heartbeat_interval_ms: 2000,
            broker_session_timeout_ms: 9000,
            replica_lag_time_max_ms: 30_000,
            replica_high_watermark_checkpoint_interval_ms: 5000,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: 300,
            leader_imbalance_per_broker_percentage: 10,
            offsets_topic_num_partitions: 50,
            offsets_topic_replication_factor: 3,
            transaction_state_log_num_partitions: 50,
            transaction_state_log_replication_factor: 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Figment(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Merges the layers. `file` is `--config`; without it `./ottla.toml` is read if present.
    /// `overrides` holds only the flags given on the command line.
    pub fn load(file: Option<&Path>, overrides: impl Serialize) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        figment = match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Invalid(format!(
                        "config file {} does not exist",
                        path.display()
                    )));
                }
                figment.merge(Toml::file(path))
            }
            None => figment.merge(Toml::file("ottla.toml")),
        };
        // Only OTTLA_* variables that name a setting are read: other tools (test harnesses,
        // scripts) share the prefix, and a typo in a variable must not stop the broker.
        let settings: Vec<String> = match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let env = Env::prefixed("OTTLA_").filter(move |key| {
            settings
                .iter()
                .any(|s| key.as_str().eq_ignore_ascii_case(s))
        });
        let config: Config = figment
            .merge(env)
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// The request memory budget in bytes: `queued_max_request_bytes`, or when 0 an eighth of
    /// the machine's memory, at most 256 MiB, and never below one largest request (plus a
    /// read chunk).
    pub fn request_memory_bytes(&self) -> usize {
        if self.queued_max_request_bytes != 0 {
            return self.queued_max_request_bytes;
        }
        let eighth = total_memory_bytes().map_or(256 << 20, |m| m / 8);
        eighth
            .min(256 << 20)
            .max(self.max_frame_bytes + (64 << 10) + 4)
    }

    /// `max_connections_per_ip_overrides` parsed: address → count.
    pub fn connections_per_ip_overrides(
        &self,
    ) -> Result<std::collections::HashMap<std::net::IpAddr, usize>, String> {
        self.max_connections_per_ip_overrides
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|entry| {
                let (ip, n) = entry.rsplit_once(':').ok_or_else(|| {
                    format!("max_connections_per_ip_overrides: {entry:?} is not IP:COUNT")
                })?;
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                let ip = ip.parse().map_err(|_| {
                    format!("max_connections_per_ip_overrides: {ip:?} is not an IP address")
                })?;
                let n = n.parse().map_err(|_| {
                    format!("max_connections_per_ip_overrides: {n:?} is not a count")
                })?;
                Ok((ip, n))
            })
            .collect()
    }

    /// The listeners: protocol and `HOST:PORT` of each `listen` entry, in order.
    /// The configured `inter_broker_listener`, if any.
    pub fn inter_broker_protocol(&self) -> Result<Option<SecurityProtocol>, String> {
        match &self.inter_broker_listener {
            None => Ok(None),
            Some(name) => SecurityProtocol::ALL
                .into_iter()
                .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
                .map(Some)
                .ok_or_else(|| {
                    format!("inter_broker_listener {name:?}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
                }),
        }
    }

    /// The controller listener's protocol and `HOST:PORT`, if there is one.
    pub fn controller_listener(&self) -> Result<Option<(SecurityProtocol, String)>, String> {
        self.controller_listen
            .as_deref()
            .map(|l| split_listener(l).map(|(p, a)| (p, a.to_string())))
            .transpose()
    }

    /// The controller listener's `HOST:PORT` (without its protocol), if there is one.
    pub fn controller_addr(&self) -> Option<String> {
        self.controller_listener().ok().flatten().map(|(_, a)| a)
    }

    /// The user and password of connections to `SASL_*` controller listeners.
    pub fn controller_login(&self) -> Option<(String, String)> {
        let user = self
            .controller_sasl_username
            .as_ref()
            .or(self.inter_broker_sasl_username.as_ref())?;
        let password = self
            .controller_sasl_password
            .as_ref()
            .or(self.inter_broker_sasl_password.as_ref())?;
        Some((user.clone(), password.clone()))
    }

    /// The SASL mechanism of connections to controller listeners.
    pub fn controller_mechanism(&self) -> &str {
        self.controller_sasl_mechanism
            .as_deref()
            .unwrap_or(&self.inter_broker_sasl_mechanism)
    }

    pub fn listeners(&self) -> Result<Vec<(SecurityProtocol, String)>, String> {
        self.listen
            .iter()
            .map(|l| split_listener(l).map(|(p, a)| (p, a.to_string())))
            .collect()
    }

    /// The advertised `HOST:PORT` configured for a listener protocol: the `advertise` entry
    /// naming it, or an entry without a protocol when `protocol` is the first listener's.
    pub fn advertised_for(&self, protocol: SecurityProtocol) -> Option<String> {
        let first = self.listeners().ok()?.first().map(|(p, _)| *p);
        self.advertise.iter().find_map(|a| {
            let explicit = a.trim().contains("://");
            let (p, addr) = split_listener(a).ok()?;
            (p == protocol && (explicit || first == Some(protocol))).then(|| addr.to_string())
        })
    }

    /// `bootstrap_users` parsed: (name, password).
    pub fn bootstrap_credentials(&self) -> Result<Vec<(String, String)>, String> {
        self.bootstrap_users
            .iter()
            .map(|u| match u.split_once(':') {
                Some((name, password)) if !name.is_empty() && !password.is_empty() => {
                    Ok((name.to_string(), password.to_string()))
                }
                _ => Err(format!(
                    "bootstrap_users entries are NAME:PASSWORD with both non-empty, not {u:?}"
                )),
            })
            .collect()
    }

    /// Listeners, advertised addresses, TLS files and SASL settings.
    fn validate_security(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        let listeners = self.listeners().map_err(ConfigError::Invalid)?;
        for (_, addr) in &listeners {
            if split_host_port(addr).is_none() {
                return bad(format!(
                    "bad listen address {addr:?}: expected [PROTOCOL://]HOST:PORT"
                ));
            }
        }
        for a in &self.advertise {
            let (p, addr) = split_listener(a).map_err(ConfigError::Invalid)?;
            if split_host_port(addr).is_none() {
                return bad(format!(
                    "bad advertise address {a:?}: expected [PROTOCOL://]HOST:PORT"
                ));
            }
            if a.contains("://") && !listeners.iter().any(|(l, _)| *l == p) {
                return bad(format!(
                    "advertise {a:?} names {}, which no listener uses",
                    p.name()
                ));
            }
        }
        if listeners.iter().any(|(p, _)| p.tls())
            && (self.tls_cert_file.is_none() || self.tls_key_file.is_none())
        {
            return bad("an SSL or SASL_SSL listener needs tls_cert_file and tls_key_file".into());
        }
        if self.tls_client_auth != TlsClientAuth::None && self.tls_client_ca_file.is_none() {
            return bad("tls_client_auth = requested or required needs tls_client_ca_file (the CAs that sign client certificates)".into());
        }
        for m in &self.sasl_enabled_mechanisms {
            if !SASL_MECHANISMS.contains(&m.as_str()) {
                return bad(format!(
                    "unsupported SASL mechanism {m:?} in sasl_enabled_mechanisms: ottla offers {}",
                    SASL_MECHANISMS.join(", ")
                ));
            }
        }
        if listeners.iter().any(|(p, _)| p.sasl()) && self.sasl_enabled_mechanisms.is_empty() {
            return bad("a SASL listener needs at least one of sasl_enabled_mechanisms".into());
        }
        self.bootstrap_credentials().map_err(ConfigError::Invalid)?;
        if !matches!(self.authorizer.as_str(), "none" | "acl") {
            return bad(format!(
                "authorizer must be \"none\" or \"acl\", not {:?}",
                self.authorizer
            ));
        }
        if let Some(u) = self.super_users.iter().find(|u| {
            u.split_once(':')
                .is_none_or(|(t, n)| t.is_empty() || n.is_empty())
        }) {
            return bad(format!(
                "super_users entries are TYPE:NAME (e.g. User:admin), not {u:?}"
            ));
        }
        if self.sasl_server_max_receive_size < 1024 || self.authentication_timeout_ms == 0 {
            return bad(
                "sasl_server_max_receive_size must be ≥ 1024 and authentication_timeout_ms ≥ 1"
                    .into(),
            );
        }
        // The brokers' own connections (followers' fetches, transaction markers) speak the
        // inter-broker protocol: every broker needs a listener of it.
        let inter_broker = self.inter_broker_protocol().map_err(ConfigError::Invalid)?;
        if let Some(p) = inter_broker {
            if !listeners.iter().any(|(l, _)| *l == p) {
                return bad(format!(
                    "inter_broker_listener = {} needs a listener of that protocol",
                    p.name()
                ));
            }
            if p.sasl() {
                if crate::security::scram::Mechanism::from_name(&self.inter_broker_sasl_mechanism)
                    .is_none()
                    && self.inter_broker_sasl_mechanism != "PLAIN"
                {
                    return bad(format!(
                        "inter_broker_sasl_mechanism {:?}: expected SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN",
                        self.inter_broker_sasl_mechanism
                    ));
                }
                if self.inter_broker_sasl_username.is_none()
                    || self.inter_broker_sasl_password.is_none()
                {
                    return bad(format!(
                        "inter_broker_listener = {} needs inter_broker_sasl_username and inter_broker_sasl_password",
                        p.name()
                    ));
                }
            }
            if p.tls()
                && self.inter_broker_tls_ca_file.is_none()
                && self.tls_client_ca_file.is_none()
            {
                return bad(format!(
                    "inter_broker_listener = {} needs inter_broker_tls_ca_file (the CAs of the brokers' certificates)",
                    p.name()
                ));
            }
        } else if !self.controller_quorum_voters.is_empty()
            && self.is_broker()
            && self.inter_broker_advertise.is_none()
            && !listeners
                .iter()
                .any(|(p, _)| *p == SecurityProtocol::Plaintext)
        {
            return bad("a broker in a cluster needs a PLAINTEXT listener, inter_broker_advertise or inter_broker_listener (the protocol brokers speak to each other)".into());
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        if self.listen.is_empty() {
            return bad("at least one listen address is needed".into());
        }
        self.validate_security()?;
        if self.quota_window_num < 1 || self.quota_window_size_seconds < 1 {
            return bad(format!(
                "quota_window_num and quota_window_size_seconds must be ≥ 1, not {} and {}",
                self.quota_window_num, self.quota_window_size_seconds
            ));
        }
        if self.num_partitions < 1 {
            return bad(format!(
                "num_partitions must be ≥ 1, not {}",
                self.num_partitions
            ));
        }
        if self.message_max_bytes < 1 {
            return bad("message_max_bytes must be ≥ 1".into());
        }
        if self.max_frame_bytes < 1024 {
            return bad("max_frame_bytes must be ≥ 1024".into());
        }
        if self.max_open_segment_files < 16 {
            return bad("max_open_segment_files must be ≥ 16".into());
        }
        if self.max_connections == 0 || self.max_in_flight_requests == 0 {
            return bad("max_connections and max_in_flight_requests must be ≥ 1".into());
        }
        if self.queued_max_request_bytes != 0
            && self.queued_max_request_bytes < self.max_frame_bytes
        {
            return bad(format!(
                "queued_max_request_bytes ({}) must be 0 (automatic) or at least max_frame_bytes ({}): a request must fit",
                self.queued_max_request_bytes, self.max_frame_bytes
            ));
        }
        if self.connections_max_idle_ms == 0 || self.max_connections_per_ip == 0 {
            return bad("connections_max_idle_ms and max_connections_per_ip must be ≥ 1".into());
        }
        if let Err(e) = self.connections_per_ip_overrides() {
            return bad(e);
        }
        if self.node_id < 0 {
            return bad("node_id must be ≥ 0".into());
        }
        if !matches!(
            self.log_message_timestamp_type.as_str(),
            "CreateTime" | "LogAppendTime"
        ) {
            return bad("log_message_timestamp_type must be CreateTime or LogAppendTime".into());
        }
        if self.log_message_timestamp_before_max_ms < 0
            || self.log_message_timestamp_after_max_ms < 0
        {
            return bad("log_message_timestamp_before/after_max_ms must be ≥ 0".into());
        }
        use crate::log::codec;
        if codec::target_of(&self.compression_type).is_none() {
            return bad(format!(
                "compression_type must be one of {}, not {}",
                codec::COMPRESSION_TYPES.join(", "),
                self.compression_type
            ));
        }
        for (name, c, level) in [
            (
                "compression_gzip_level",
                codec::Codec::Gzip,
                self.compression_gzip_level,
            ),
            (
                "compression_lz4_level",
                codec::Codec::Lz4,
                self.compression_lz4_level,
            ),
            (
                "compression_zstd_level",
                codec::Codec::Zstd,
                self.compression_zstd_level,
            ),
        ] {
            if let Err(why) = codec::check_level(c, level) {
                return bad(format!("{name}: {why}"));
            }
        }
        if self.max_decompressed_batch_bytes < 1024 {
            return bad("max_decompressed_batch_bytes must be ≥ 1024".into());
        }
        if self.flush_interval_ms < 1 || self.flush_messages < 1 {
            return bad("flush_interval_ms and flush_messages must be ≥ 1".into());
        }
        if self.log_retention_check_interval_ms == 0 || self.log_cleaner_backoff_ms == 0 {
            return bad(
                "log_retention_check_interval_ms and log_cleaner_backoff_ms must be ≥ 1".into(),
            );
        }
        if self.broker_heartbeat_interval_ms < 1
            || self.broker_session_timeout_ms <= self.broker_heartbeat_interval_ms
            || self.replica_lag_time_max_ms == 0
            || self.replica_high_watermark_checkpoint_interval_ms == 0
            || self.leader_imbalance_check_interval_seconds == 0
        {
            return bad(
                "broker_heartbeat_interval_ms must be ≥ 1 and below broker_session_timeout_ms, replica_lag_time_max_ms, replica_high_watermark_checkpoint_interval_ms and leader_imbalance_check_interval_seconds ≥ 1"
                    .into(),
            );
        }
        if self.group_initial_rebalance_delay_ms < 0
            || self.group_min_session_timeout_ms < 1
            || self.group_max_session_timeout_ms < self.group_min_session_timeout_ms
        {
            return bad("group timeouts must be ≥ 0 and min ≤ max".into());
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.log_segment_bytes)
            || self.log_index_interval_bytes == 0
        {
            return bad(format!(
                "log_segment_bytes must be in [{SEGMENT_BYTES_MIN}, {SEGMENT_BYTES_MAX}], log_index_interval_bytes ≥ 1"
            ));
        }
        for (name, partitions) in [
            (
                "offsets_topic_num_partitions",
                self.offsets_topic_num_partitions,
            ),
            (
                "transaction_state_log_num_partitions",
                self.transaction_state_log_num_partitions,
            ),
        ] {
            if !(1..=crate::cluster::topics::PARTITIONS_MAX).contains(&partitions) {
                return bad(format!(
                    "{name} must be in [1, {}], not {partitions}",
                    crate::cluster::topics::PARTITIONS_MAX
                ));
            }
        }
        for (name, rf) in [
            (
                "offsets_topic_replication_factor",
                self.offsets_topic_replication_factor,
            ),
            (
                "transaction_state_log_replication_factor",
                self.transaction_state_log_replication_factor,
            ),
        ] {
            if rf < 1 {
                return bad(format!("{name} must be ≥ 1, not {rf}"));
            }
        }
        if self.fetch_max_bytes < FETCH_MAX_BYTES_MIN {
            return bad(format!("fetch_max_bytes must be ≥ {FETCH_MAX_BYTES_MIN}"));
        }
        self.validate_cluster()
    }

    /// Roles, controller listener, voters and replication defaults, checked as Kafka's
    /// KafkaConfig does (in snake case).
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        if self.process_roles.is_empty() {
            return bad("process_roles must name at least one role: broker, controller, or both (broker,controller)".into());
        }
        let mut roles = self.process_roles.clone();
        roles.sort_unstable();
        roles.dedup();
        if roles.len() != self.process_roles.len() {
            return bad(format!(
                "duplicate role names found in process_roles: {}",
                self.process_roles_csv()
            ));
        }
        if let Some(a) = &self.inter_broker_advertise {
            if split_host_port(a).is_none() {
                return bad(format!(
                    "inter_broker_advertise must be HOST:PORT, not {a:?}"
                ));
            }
        }
        if let Some(rack) = &self.broker_rack {
            if rack.trim().is_empty() {
                return bad("broker_rack must not be empty (leave it unset for no rack)".into());
            }
        }
        if !matches!(self.replica_selector.as_str(), "rack_aware" | "leader") {
            return bad(format!(
                "replica_selector must be rack_aware or leader, not {:?}",
                self.replica_selector
            ));
        }
        if self.default_replication_factor < 1 {
            return bad(format!(
                "default_replication_factor must be ≥ 1, not {}",
                self.default_replication_factor
            ));
        }
        if self.min_insync_replicas < 1 {
            return bad(format!(
                "min_insync_replicas must be ≥ 1, not {}",
                self.min_insync_replicas
            ));
        }
        if let Some(spec) = &self.controller_listen {
            let (protocol, listen) = split_listener(spec).map_err(ConfigError::Invalid)?;
            if split_host_port(listen).is_none() {
                return bad(format!(
                    "bad controller_listen address {spec:?}: expected [PROTOCOL://]HOST:PORT"
                ));
            }
            if protocol.tls() && (self.tls_cert_file.is_none() || self.tls_key_file.is_none()) {
                return bad(format!(
                    "controller_listen {spec} needs tls_cert_file and tls_key_file"
                ));
            }
            if protocol.tls()
                && self.inter_broker_tls_ca_file.is_none()
                && self.tls_client_ca_file.is_none()
            {
                return bad(format!(
                    "controller_listen {spec} needs inter_broker_tls_ca_file (the CAs of the controller listeners' certificates)"
                ));
            }
            if protocol.sasl() {
                let m = self.controller_mechanism();
                if crate::security::scram::Mechanism::from_name(m).is_none() && m != "PLAIN" {
                    return bad(format!(
                        "controller_sasl_mechanism {m:?}: expected SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN"
                    ));
                }
                if self.controller_login().is_none() {
                    return bad(format!(
                        "controller_listen {spec} needs controller_sasl_username and controller_sasl_password, or inter_broker_sasl_username and inter_broker_sasl_password (the user nodes log in to controller listeners as)"
                    ));
                }
            }
            // Peers of a PLAINTEXT controller listener are User:ANONYMOUS, and a new quorum
            // forms before any ACL is stored: with ACLs, only a super user gets through.
            if protocol == SecurityProtocol::Plaintext
                && self.authorizer == "acl"
                && !self.super_users.iter().any(|u| u == ANONYMOUS_USER)
                && !self.allow_everyone_if_no_acl_found
            {
                return bad(format!(
                    "authorizer = \"acl\" with a PLAINTEXT controller_listen ({spec}): controllers and brokers reach it as {ANONYMOUS_USER}, which needs CLUSTER_ACTION; add it to super_users, or give controller_listen a SASL protocol (SASL_SSL://...) and log in as a super user"
                ));
            }
            if let Some(client) = self
                .listen
                .iter()
                .find(|l| split_listener(l).is_ok_and(|(_, addr)| listen_overlap(addr, listen)))
            {
                return bad(format!(
                    "controller_listen {listen} is also a client listener ({client}): the controller needs a listener of its own"
                ));
            }
        }
        let voters = &self.controller_quorum_voters;
        if voters.is_empty() {
            // A cluster of one: this node is its own controller and its only broker.
            if !(self.is_broker() && self.is_controller()) {
                return bad(format!(
                    "process_roles = {} needs controller_quorum_voters: without voters this node is a cluster of one, which needs both roles (broker,controller, the default)",
                    self.process_roles_csv()
                ));
            }
            if self.controller_listen.is_some() {
                return bad("controller_listen needs controller_quorum_voters (the controllers this listener joins); without voters this node is a cluster of one and has no controller listener".into());
            }
            return Ok(());
        }
        let mut ids: Vec<i32> = voters.iter().map(|v| v.id).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return bad(format!(
                "controller_quorum_voters names voter {} more than once: {}",
                w[0],
                self.controller_quorum_voters_csv()
            ));
        }
        let listed = ids.contains(&self.node_id);
        if self.is_controller() {
            if !listed {
                return bad(format!(
                    "process_roles contains the controller role, so node_id {} must be one of the voters in controller_quorum_voters (ids {ids:?})",
                    self.node_id
                ));
            }
            if self.controller_listen.is_none() {
                return bad("process_roles contains the controller role, so controller_listen (the controller's HOST:PORT) must be set".into());
            }
        } else {
            if listed {
                return bad(format!(
                    "process_roles contains just the broker role, so node_id {} must not be one of the voters in controller_quorum_voters (ids {ids:?})",
                    self.node_id
                ));
            }
            if self.controller_listen.is_none() {
                return bad("process_roles = broker in a cluster needs controller_listen: the HOST:PORT where this node receives the metadata log (the active controller replicates it to every broker-only node)".into());
            }
        }
        Ok(())
    }

    /// A cluster of one: no voters, or this combined node the only one (broker-only nodes
    /// may still join a lone voter: then the cluster has more brokers).
    pub fn is_single_node(&self) -> bool {
        self.controller_quorum_voters.len() <= 1 && self.is_broker() && self.is_controller()
    }

    /// The replication factor `__consumer_offsets` is created with: the configured one, or 1
    /// on a cluster of one (which has no other broker to place replicas on).
    pub fn offsets_topic_effective_replication_factor(&self) -> i16 {
        if self.is_single_node() {
            self.offsets_topic_replication_factor.min(1)
        } else {
            self.offsets_topic_replication_factor
        }
    }

    /// As [`Config::offsets_topic_effective_replication_factor`], for `__transaction_state`.
    pub fn transaction_state_log_effective_replication_factor(&self) -> i16 {
        if self.is_single_node() {
            self.transaction_state_log_replication_factor.min(1)
        } else {
            self.transaction_state_log_replication_factor
        }
    }

    pub fn is_broker(&self) -> bool {
        self.process_roles.contains(&ProcessRole::Broker)
    }

    pub fn is_controller(&self) -> bool {
        self.process_roles.contains(&ProcessRole::Controller)
    }

    /// `process.roles` as Kafka writes it: `broker,controller`.
    pub fn process_roles_csv(&self) -> String {
        let roles: Vec<&str> = self.process_roles.iter().map(|r| r.as_str()).collect();
        roles.join(",")
    }

    /// `controller.quorum.voters` as Kafka writes it: `1@host:9093,2@host:9093`.
    pub fn controller_quorum_voters_csv(&self) -> String {
        let voters: Vec<String> = self
            .controller_quorum_voters
            .iter()
            .map(Voter::to_string)
            .collect();
        voters.join(",")
    }
}

/// The machine's physical memory, if the system says.
fn total_memory_bytes() -> Option<usize> {
    // SAFETY: sysconf only reads system constants.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && size > 0).then(|| (pages as usize).saturating_mul(size as usize))
}

#[cfg(test)]
// figment's test jail returns its large error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The maintenance intervals default to Kafka's (`log.retention.check.interval.ms`,
    /// `log.cleaner.backoff.ms`); tests that want fast retention set them themselves.
    #[test]
    fn maintenance_intervals_default_to_kafkas() {
        let c = Config::default();
        assert_eq!(c.log_retention_check_interval_ms, 300_000);
        assert_eq!(c.log_cleaner_backoff_ms, 15_000);
    }

    #[test]
    fn layers_merge_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ottla.toml",
                "num_partitions = 3\nnode_id = 7\nmemory = true\n",
            )?;
            jail.set_env("OTTLA_NODE_ID", "8");
            jail.set_env("OTTLA_AUTO_CREATE_TOPICS", "false");
            jail.set_env("OTTLA_BOOTSTRAP", "not-a-setting:1");
            let mut flags = BTreeMap::new();
            flags.insert("num_partitions", 5);
            let c = Config::load(None, &flags).expect("config");
            assert_eq!(c.num_partitions, 5, "flag beats file");
            assert_eq!(c.node_id, 8, "env beats file");
            assert!(c.memory, "file beats default");
            assert!(!c.auto_create_topics);
            assert_eq!(c.listen, vec!["localhost:9092".to_string()]);
            Ok(())
        });
    }

    #[test]
    fn invalid_values_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("ottla.toml", "num_partitions = 0\n")?;
            assert!(Config::load(None, BTreeMap::<String, String>::new()).is_err());
            jail.create_file("ottla.toml", "no_such_key = 1\n")?;
            assert!(Config::load(None, BTreeMap::<String, String>::new()).is_err());
            jail.create_file("ottla.toml", "compression_type = \"brotli\"\n")?;
            assert!(Config::load(None, BTreeMap::<String, String>::new()).is_err());
            jail.create_file("ottla.toml", "compression_zstd_level = 23\n")?;
            assert!(Config::load(None, BTreeMap::<String, String>::new()).is_err());
            jail.create_file("ottla.toml", "compression_gzip_level = 0\n")?;
            assert!(Config::load(None, BTreeMap::<String, String>::new()).is_err());
            jail.create_file(
                "ottla.toml",
                "compression_type = \"zstd\"\ncompression_zstd_level = -7\n",
            )?;
            let c = Config::load(None, BTreeMap::<String, String>::new()).expect("valid");
            assert_eq!(
                (c.compression_type.as_str(), c.compression_zstd_level),
                ("zstd", -7)
            );
            // segment bytes: Kafka's bounds, an int of at least 1 MiB.
            for (bytes, ok) in [
                (1048575u64, false),
                (1048576, true),
                (2147483647, true),
                (2147483648, false),
                (1 << 40, false),
            ] {
                jail.create_file("ottla.toml", &format!("log_segment_bytes = {bytes}\n"))?;
                let loaded = Config::load(None, BTreeMap::<String, String>::new());
                assert_eq!(loaded.is_ok(), ok, "log_segment_bytes = {bytes}");
            }
            jail.create_file("ottla.toml", "fetch_max_bytes = 1023\n")?;
            assert!(Config::load(None, BTreeMap::<String, String>::new()).is_err());
            jail.create_file("ottla.toml", "no_such_key = 1\n")?;
            assert!(Config::load(None, BTreeMap::<String, String>::new()).is_err());
            Ok(())
        });
    }

    fn load_toml(jail: &mut figment::Jail, toml: &str) -> Result<Config, String> {
        jail.create_file("ottla.toml", toml)
            .expect("write ottla.toml");
        Config::load(None, BTreeMap::<String, String>::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn cluster_settings_default_to_a_combined_cluster_of_one() {
        let c = Config::default();
        assert_eq!(
            c.process_roles,
            vec![ProcessRole::Broker, ProcessRole::Controller]
        );
        assert_eq!(c.process_roles_csv(), "broker,controller");
        assert!(c.controller_quorum_voters.is_empty());
        assert_eq!(c.controller_quorum_voters_csv(), "");
        assert_eq!(c.controller_listen, None);
        assert_eq!(c.broker_rack, None);
        assert_eq!(c.default_replication_factor, 1);
        assert_eq!(c.min_insync_replicas, 1);
        assert!(c.validate().is_ok());
    }

    /// Kafka's defaults for the internal topics; a cluster of one creates them with one
    /// replica whatever is configured.
    #[test]
    fn internal_topics_default_to_kafkas_and_one_replica_on_a_cluster_of_one() {
        let c = Config::default();
        assert_eq!(
            (
                c.offsets_topic_num_partitions,
                c.offsets_topic_replication_factor,
                c.transaction_state_log_num_partitions,
                c.transaction_state_log_replication_factor
            ),
            (50, 3, 50, 3)
        );
        assert!(c.is_single_node());
        assert_eq!(c.offsets_topic_effective_replication_factor(), 1);
        assert_eq!(c.transaction_state_log_effective_replication_factor(), 1);
        let voter = |id| Voter {
            id,
            host: "localhost".into(),
            port: 9093 + id as u16,
        };
        let three = Config {
            controller_quorum_voters: vec![voter(1), voter(2), voter(3)],
            controller_listen: Some("localhost:9094".into()),
            ..Config::default()
        };
        assert!(!three.is_single_node());
        assert_eq!(three.offsets_topic_effective_replication_factor(), 3);
        assert_eq!(
            three.transaction_state_log_effective_replication_factor(),
            3
        );
        for bad in [
            "offsets_topic_num_partitions = 0",
            "transaction_state_log_num_partitions = 0",
            "offsets_topic_replication_factor = 0",
            "transaction_state_log_replication_factor = -1",
        ] {
            figment::Jail::expect_with(|jail| {
                assert!(load_toml(jail, bad).is_err(), "{bad}");
                Ok(())
            });
        }
        figment::Jail::expect_with(|jail| {
            let c = load_toml(
                jail,
                "offsets_topic_num_partitions = 1\ntransaction_state_log_replication_factor = 2\n",
            )
            .expect("valid");
            assert_eq!(c.offsets_topic_num_partitions, 1);
            assert_eq!(c.transaction_state_log_effective_replication_factor(), 1);
            Ok(())
        });
    }

    #[test]
    fn voters_parse_as_kafka_writes_them() {
        let v: Voter = "1@localhost:9093".parse().expect("voter");
        assert_eq!(
            v,
            Voter {
                id: 1,
                host: "localhost".into(),
                port: 9093
            }
        );
        assert_eq!(v.to_string(), "1@localhost:9093");
        let v6: Voter = " 2@[::1]:9094 ".parse().expect("IPv6 voter");
        assert_eq!((v6.id, v6.host.as_str(), v6.port), (2, "::1", 9094));
        assert_eq!(v6.to_string(), "2@[::1]:9094");
        for bad in [
            "",
            "1",
            "localhost:9093",
            "x@localhost:9093",
            "-1@localhost:9093",
            "1@localhost",
            "1@:9093",
            "1@localhost:0",
            "1@localhost:70000",
            "1@::1:9093",
            "1@a@b:9093",
        ] {
            assert!(bad.parse::<Voter>().is_err(), "{bad:?} parsed");
        }
        let roles: Result<ProcessRole, _> = "brokr".parse();
        assert!(roles
            .unwrap_err()
            .contains("only 'broker' and 'controller'"));
    }

    #[test]
    fn cluster_settings_layer_as_lists_or_comma_separated() {
        figment::Jail::expect_with(|jail| {
            let c = load_toml(
                jail,
                "process_roles = [\"broker\", \"controller\"]\n\
                 node_id = 2\n\
                 controller_listen = \"127.0.0.1:9093\"\n\
                 controller_quorum_voters = [\"1@h1:9093\", \"2@h2:9093\", \"3@h3:9093\"]\n\
                 broker_rack = \"rack-a\"\n\
                 default_replication_factor = 3\n\
                 min_insync_replicas = 2\n",
            )
            .expect("valid");
            assert_eq!(c.controller_quorum_voters.len(), 3);
            assert_eq!(
                c.controller_quorum_voters_csv(),
                "1@h1:9093,2@h2:9093,3@h3:9093"
            );
            assert_eq!(c.broker_rack.as_deref(), Some("rack-a"));
            assert_eq!(
                (c.default_replication_factor, c.min_insync_replicas),
                (3, 2)
            );
            // The environment gives lists as comma-separated strings, as Kafka writes them.
            jail.create_file("ottla.toml", "")?;
            jail.set_env("OTTLA_PROCESS_ROLES", "broker");
            jail.set_env("OTTLA_NODE_ID", "4");
            jail.set_env("OTTLA_CONTROLLER_QUORUM_VOTERS", "1@h1:9093,2@h2:9093");
            jail.set_env("OTTLA_CONTROLLER_LISTEN", "0.0.0.0:9095");
            jail.set_env("OTTLA_BROKER_RACK", "rack-b");
            jail.set_env("OTTLA_LISTEN", "0.0.0.0:9092,127.0.0.1:9094");
            let c = Config::load(None, BTreeMap::<String, String>::new()).expect("env");
            assert_eq!(c.listen, ["0.0.0.0:9092", "127.0.0.1:9094"]);
            assert_eq!(c.process_roles, vec![ProcessRole::Broker]);
            assert_eq!(c.controller_quorum_voters[1].host, "h2");
            assert_eq!(c.broker_rack.as_deref(), Some("rack-b"));
            // Flags (clap splits them at commas) arrive as lists.
            let flags = serde_json::json!({
                "process_roles": ["broker", "controller"],
                "controller_quorum_voters": ["4@h4:9093"],
            });
            let c = Config::load(None, &flags).expect("flags");
            assert!(c.is_broker() && c.is_controller());
            assert_eq!(c.controller_quorum_voters_csv(), "4@h4:9093");
            Ok(())
        });
    }

    #[test]
    fn cluster_settings_are_checked_as_kafka_does() {
        figment::Jail::expect_with(|jail| {
            let refused = |jail: &mut figment::Jail, toml: &str, why: &str| {
                let err = load_toml(jail, toml).expect_err(toml);
                assert!(err.contains(why), "{toml:?}: {err}");
            };
            // Roles.
            refused(jail, "process_roles = []\n", "at least one role");
            refused(jail, "process_roles = \"\"\n", "at least one role");
            refused(
                jail,
                "process_roles = [\"brokr\"]\n",
                "unknown process role 'brokr'",
            );
            refused(
                jail,
                "process_roles = \"broker,broker\"\n",
                "duplicate role",
            );
            // Without voters: a cluster of one, which needs both roles.
            refused(jail, "process_roles = [\"broker\"]\n", "cluster of one");
            refused(jail, "process_roles = [\"controller\"]\n", "cluster of one");
            refused(
                jail,
                "controller_listen = \"127.0.0.1:9093\"\n",
                "needs controller_quorum_voters",
            );
            assert!(load_toml(jail, "process_roles = \"controller,broker\"\n").is_ok());
            // Voters.
            refused(
                jail,
                "controller_quorum_voters = [\"1@h1\"]\n",
                "expected ID@HOST:PORT",
            );
            refused(
                jail,
                "controller_quorum_voters = \"1@h1:9093,one@h2:9093\"\n",
                "\"one@h2:9093\"",
            );
            refused(
                jail,
                "controller_listen = \"127.0.0.1:9093\"\ncontroller_quorum_voters = [\"1@h1:9093\", \"1@h2:9093\"]\n",
                "voter 1 more than once",
            );
            let voters =
                "controller_quorum_voters = [\"1@h1:9093\", \"2@h2:9093\", \"3@h3:9093\"]\n";
            // A controller must be a voter and have its listener.
            refused(
                jail,
                &format!("node_id = 4\ncontroller_listen = \"127.0.0.1:9093\"\n{voters}"),
                "node_id 4 must be one of the voters",
            );
            refused(jail, &format!("node_id = 2\n{voters}"), "controller_listen");
            refused(
                jail,
                &format!("process_roles = \"controller\"\nnode_id = 2\n{voters}"),
                "controller_listen",
            );
            assert!(load_toml(
                jail,
                &format!("node_id = 2\ncontroller_listen = \"127.0.0.1:9093\"\n{voters}")
            )
            .is_ok());
            assert!(load_toml(
                jail,
                &format!("process_roles = \"controller\"\nnode_id = 3\ncontroller_listen = \"[::]:9093\"\n{voters}")
            )
            .is_ok());
            // A broker-only node is no voter; the metadata log reaches it on its controller
            // listener.
            assert!(load_toml(
                jail,
                &format!("process_roles = \"broker\"\nnode_id = 4\ncontroller_listen = \"127.0.0.1:9093\"\n{voters}")
            )
            .is_ok());
            refused(
                jail,
                &format!("process_roles = \"broker\"\nnode_id = 1\n{voters}"),
                "must not be one of the voters",
            );
            refused(
                jail,
                &format!("process_roles = \"broker\"\nnode_id = 4\n{voters}"),
                "receives the metadata log",
            );
            // The controller listener is not a client listener.
            for (listen, controller, clash) in [
                ("127.0.0.1:9092", "127.0.0.1:9092", true),
                ("localhost:9092", "127.0.0.1:9092", true),
                ("[::1]:9092", "localhost:9092", true),
                ("0.0.0.0:9092", "10.0.0.1:9092", true),
                ("127.0.0.1:9092", "0.0.0.0:9092", true),
                ("127.0.0.1:9092", "127.0.0.1:9093", false),
                ("127.0.0.1:9092", "10.0.0.1:9092", false),
                ("127.0.0.1:0", "127.0.0.1:0", false),
            ] {
                let toml = format!(
                    "listen = [\"{listen}\"]\nnode_id = 1\ncontroller_listen = \"{controller}\"\n{voters}"
                );
                match load_toml(jail, &toml) {
                    Err(e) if clash => assert!(e.contains("also a client listener"), "{e}"),
                    Ok(_) if !clash => {}
                    other => panic!("{listen} / {controller}: {other:?}"),
                }
            }
            refused(
                jail,
                &format!("node_id = 1\ncontroller_listen = \"nohost\"\n{voters}"),
                "bad controller_listen",
            );
            // A controller listener's protocol, and what it needs.
            let ctl = |proto: &str, more: &str| {
                format!(
                    "node_id = 1\ncontroller_listen = \"{proto}://127.0.0.1:9093\"\n{voters}{more}"
                )
            };
            let login = "inter_broker_sasl_username = \"b\"\ninter_broker_sasl_password = \"p\"\n";
            let files = "tls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\ninter_broker_tls_ca_file = \"ca.pem\"\n";
            refused(jail, &ctl("BOGUS", ""), "unknown security protocol");
            refused(
                jail,
                &ctl("SASL_PLAINTEXT", ""),
                "needs controller_sasl_username",
            );
            refused(jail, &ctl("SSL", ""), "needs tls_cert_file");
            refused(
                jail,
                &ctl(
                    "SASL_PLAINTEXT",
                    &format!("{login}controller_sasl_mechanism = \"GSSAPI\"\n"),
                ),
                "controller_sasl_mechanism",
            );
            let c =
                load_toml(jail, &ctl("SASL_SSL", &format!("{login}{files}"))).expect("SASL_SSL");
            assert_eq!(
                c.controller_listener().unwrap(),
                Some((SecurityProtocol::SaslSsl, "127.0.0.1:9093".into()))
            );
            assert_eq!(c.controller_addr().as_deref(), Some("127.0.0.1:9093"));
            assert_eq!(c.controller_mechanism(), "SCRAM-SHA-512");
            assert_eq!(c.controller_login(), Some(("b".into(), "p".into())));
            let own = "controller_sasl_username = \"ctl\"\ncontroller_sasl_password = \"q\"\n";
            let c = load_toml(jail, &ctl("SASL_PLAINTEXT", own)).expect("own login");
            assert_eq!(c.controller_login(), Some(("ctl".into(), "q".into())));
            // With ACLs a PLAINTEXT controller listener's peers (User:ANONYMOUS) must be
            // super users.
            let acl = "authorizer = \"acl\"\n";
            refused(jail, &ctl("PLAINTEXT", acl), "super_users");
            assert!(load_toml(
                jail,
                &ctl(
                    "PLAINTEXT",
                    &format!("{acl}super_users = [\"User:ANONYMOUS\"]\n")
                )
            )
            .is_ok());
            assert!(load_toml(jail, &ctl("SASL_PLAINTEXT", &format!("{acl}{login}"))).is_ok());
            // Replication defaults and rack.
            refused(
                jail,
                "default_replication_factor = 0\n",
                "default_replication_factor must be ≥ 1",
            );
            refused(
                jail,
                "min_insync_replicas = 0\n",
                "min_insync_replicas must be ≥ 1",
            );
            refused(jail, "broker_rack = \" \"\n", "broker_rack");
            refused(
                jail,
                "queued_max_request_bytes = 1000\n",
                "must be 0 (automatic) or at least max_frame_bytes",
            );
            refused(
                jail,
                "max_connections_per_ip_overrides = [\"10.0.0.1\"]\n",
                "is not IP:COUNT",
            );
            refused(
                jail,
                "max_connections_per_ip_overrides = [\"nohost:3\"]\n",
                "is not an IP address",
            );
            let c = load_toml(
                jail,
                "max_connections_per_ip_overrides = [\"10.0.0.1:3\", \"[::1]:0\"]\nqueued_max_request_bytes = 209715200\n",
            )?;
            let overrides = c.connections_per_ip_overrides().expect("valid");
            assert_eq!(
                overrides[&"10.0.0.1".parse::<std::net::IpAddr>().unwrap()],
                3
            );
            assert_eq!(overrides[&"::1".parse::<std::net::IpAddr>().unwrap()], 0);
            assert_eq!(c.request_memory_bytes(), 209_715_200);
            let auto = Config::default().request_memory_bytes();
            assert!(
                auto >= Config::default().max_frame_bytes && auto <= 256 << 20,
                "{auto}"
            );
            let c = load_toml(
                jail,
                "default_replication_factor = 3\nmin_insync_replicas = 2\n",
            )
            .expect("stored as given on one node too");
            assert_eq!(
                (c.default_replication_factor, c.min_insync_replicas),
                (3, 2)
            );
            Ok(())
        });
    }
}
