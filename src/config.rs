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
    /// Addresses to listen on. `localhost:PORT` means both 127.0.0.1 and [::1].
    pub listen: Vec<String>,
    /// Address clients are told to connect to (Metadata); defaults to the first listener.
    pub advertise: Option<String>,
    /// Where topics, segments and metadata live (ignored with `memory`).
    pub data_dir: PathBuf,
    /// Keep everything in memory: nothing is written to disk, nothing survives a restart.
    pub memory: bool,
    /// This broker's node id.
    pub node_id: i32,
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
    /// Upper bound on a fetch's long-poll wait, whatever the client asks.
    pub fetch_max_wait_ms: u64,
    /// How long a graceful stop lets open connections finish the request in hand before it
    /// aborts them (then the logs are synced and the clean-shutdown marker written).
    pub shutdown_grace_ms: u64,
    /// Most record bytes one fetch response gathers, whatever the client asks (Kafka's
    /// `fetch.max.bytes`; the first batch is returned whole even if larger, KIP-74). In memory
    /// mode these bytes are copied per response: this bounds that memory.
    pub fetch_max_bytes: usize,
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
            advertise: None,
            data_dir: PathBuf::from("./ottla-data"),
            memory: false,
            node_id: 1,
            cluster_id: None,
            num_partitions: 1,
            auto_create_topics: true,
            message_max_bytes: 1_048_588,
            max_frame_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            max_in_flight_requests: 16,
            fetch_max_wait_ms: 30_000,
            fetch_max_bytes: 55 * 1024 * 1024,
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

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        if self.listen.is_empty() {
            return bad("at least one listen address is needed".into());
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
        if self.fetch_max_bytes < FETCH_MAX_BYTES_MIN {
            return bad(format!("fetch_max_bytes must be ≥ {FETCH_MAX_BYTES_MIN}"));
        }
        Ok(())
    }
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
}
