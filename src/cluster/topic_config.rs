//! Topic-level configs: the names Kafka knows, their types, their defaults (taken from the
//! broker config) and validation. Overrides a topic was created with are stored as strings.

use std::collections::BTreeMap;

use crate::config::{Config, FsyncPolicy};
use crate::log::LogConfig;

/// Kafka's config value types (DescribeConfigs `config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
}

/// Whether ottla acts on a config yet, or only stores and reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Enforced,
    StoredOnly,
}

/// One topic config Kafka defines.
pub struct TopicConfigDef {
    pub name: &'static str,
    pub config_type: ConfigType,
    /// The broker-level setting whose value is this config's default.
    pub broker_synonym: &'static str,
    pub doc: &'static str,
    pub support: Support,
    /// Accepted values for enumerated strings/lists (empty: any value of the type).
    pub allowed: &'static [&'static str],
}

const fn def(
    name: &'static str,
    config_type: ConfigType,
    broker_synonym: &'static str,
    support: Support,
    allowed: &'static [&'static str],
    doc: &'static str,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        config_type,
        broker_synonym,
        doc,
        support,
        allowed,
    }
}

use ConfigType as T;
use Support::{Enforced, StoredOnly};

/// The topic configs accepted by CreateTopics and shown by DescribeConfigs.
pub static TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def(
        "cleanup.policy",
        T::List,
        "log.cleanup.policy",
        Enforced,
        &["delete", "compact"],
        "Retention policy for old segments: delete and/or compact.",
    ),
    def(
        "compression.type",
        T::String,
        "compression.type",
        Enforced,
        &crate::log::codec::COMPRESSION_TYPES,
        "Codec batches are stored with: 'producer' keeps the producer's, a codec (or 'uncompressed') recompresses batches that differ.",
    ),
    def(
        "compression.gzip.level",
        T::Int,
        "compression.gzip.level",
        Enforced,
        &[],
        "gzip level of batches the broker compresses (1-9, or -1 for the codec's default).",
    ),
    def(
        "compression.lz4.level",
        T::Int,
        "compression.lz4.level",
        Enforced,
        &[],
        "lz4 level of batches the broker compresses (1-17).",
    ),
    def(
        "compression.zstd.level",
        T::Int,
        "compression.zstd.level",
        Enforced,
        &[],
        "zstd level of batches the broker compresses (-131072 to 22).",
    ),
    def(
        "delete.retention.ms",
        T::Long,
        "log.cleaner.delete.retention.ms",
        Enforced,
        &[],
        "How long tombstones are kept on compacted topics.",
    ),
    def(
        "file.delete.delay.ms",
        T::Long,
        "log.segment.delete.delay.ms",
        StoredOnly,
        &[],
        "Delay before a deleted segment's files are removed.",
    ),
    def(
        "flush.messages",
        T::Long,
        "log.flush.interval.messages",
        Enforced,
        &[],
        "Force an fsync after this many messages.",
    ),
    def(
        "flush.ms",
        T::Long,
        "log.flush.interval.ms",
        Enforced,
        &[],
        "Force an fsync after this much time.",
    ),
    def(
        "index.interval.bytes",
        T::Int,
        "log.index.interval.bytes",
        Enforced,
        &[],
        "Bytes of batches between two offset index entries.",
    ),
    def(
        "max.compaction.lag.ms",
        T::Long,
        "log.cleaner.max.compaction.lag.ms",
        StoredOnly,
        &[],
        "Longest time a record stays uncompacted.",
    ),
    def(
        "max.message.bytes",
        T::Int,
        "message.max.bytes",
        Enforced,
        &[],
        "Largest record batch accepted for this topic.",
    ),
    def(
        "message.timestamp.after.max.ms",
        T::Long,
        "log.message.timestamp.after.max.ms",
        Enforced,
        &[],
        "Allowed lead of a record timestamp over the broker's clock.",
    ),
    def(
        "message.timestamp.before.max.ms",
        T::Long,
        "log.message.timestamp.before.max.ms",
        Enforced,
        &[],
        "Allowed lag of a record timestamp behind the broker's clock.",
    ),
    def(
        "message.timestamp.type",
        T::String,
        "log.message.timestamp.type",
        Enforced,
        &["CreateTime", "LogAppendTime"],
        "Timestamp kept in records: the producer's or the broker's.",
    ),
    def(
        "min.cleanable.dirty.ratio",
        T::Double,
        "log.cleaner.min.cleanable.ratio",
        StoredOnly,
        &[],
        "Dirty ratio above which the log is compacted.",
    ),
    def(
        "min.compaction.lag.ms",
        T::Long,
        "log.cleaner.min.compaction.lag.ms",
        Enforced,
        &[],
        "Shortest time a record stays uncompacted.",
    ),
    def(
        "min.insync.replicas",
        T::Int,
        "min.insync.replicas",
        StoredOnly,
        &[],
        "Replicas that must acknowledge an acks=all write.",
    ),
    def(
        "preallocate",
        T::Boolean,
        "log.preallocate",
        StoredOnly,
        &[],
        "Preallocate segment files.",
    ),
    def(
        "retention.bytes",
        T::Long,
        "log.retention.bytes",
        Enforced,
        &[],
        "Largest size of a partition before old segments are deleted (-1: no limit).",
    ),
    def(
        "retention.ms",
        T::Long,
        "log.retention.ms",
        Enforced,
        &[],
        "Longest time a segment is kept (-1: forever).",
    ),
    def(
        "segment.bytes",
        T::Int,
        "log.segment.bytes",
        Enforced,
        &[],
        "Size at which a new segment is started.",
    ),
    def(
        "internal.segment.bytes",
        T::Int,
        "log.segment.bytes",
        Enforced,
        &[],
        "Internal (as in Kafka 4, for tests): the segment size, overriding segment.bytes, without its 1 MiB minimum. Described only when set.",
    ),
    def(
        "segment.index.bytes",
        T::Int,
        "log.index.size.max.bytes",
        StoredOnly,
        &[],
        "Largest size of an offset index file.",
    ),
    def(
        "segment.jitter.ms",
        T::Long,
        "log.roll.jitter.ms",
        StoredOnly,
        &[],
        "Random jitter subtracted from segment.ms.",
    ),
    def(
        "segment.ms",
        T::Long,
        "log.roll.ms",
        Enforced,
        &[],
        "Age at which a new segment is started.",
    ),
    def(
        "unclean.leader.election.enable",
        T::Boolean,
        "unclean.leader.election.enable",
        StoredOnly,
        &[],
        "Allow out-of-sync replicas to become leader.",
    ),
];

pub fn find(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Topic configs Kafka 3.x accepted and Kafka 4.0 removed (KIP-724, KIP-896, KIP-937).
/// Tooling written for 3.x still sets them: ottla accepts them as deprecated no-ops (the
/// handlers skip them with a warning): never stored, never validated, not listed by
/// DescribeConfigs (Kafka 4 does not know them).
pub const REMOVED_IN_KAFKA_4: &[&str] = &[
    "message.downconversion.enable",
    "message.format.version",
    "message.timestamp.difference.max.ms",
];

pub fn is_removed_in_kafka_4(name: &str) -> bool {
    REMOVED_IN_KAFKA_4.contains(&name)
}

/// The default value of a topic config on this broker.
pub fn default_value(def: &TopicConfigDef, broker: &Config) -> String {
    match def.name {
        "cleanup.policy" => "delete".into(),
        "compression.type" => broker.compression_type.clone(),
        "delete.retention.ms" => broker.log_cleaner_delete_retention_ms.to_string(),
        "file.delete.delay.ms" => "60000".into(),
        "flush.messages" => match broker.fsync {
            FsyncPolicy::Always => "1".into(),
            FsyncPolicy::Interval => broker.flush_messages.to_string(),
        },
        "max.compaction.lag.ms" => i64::MAX.to_string(),
        "message.timestamp.after.max.ms" => broker.log_message_timestamp_after_max_ms.to_string(),
        "message.timestamp.before.max.ms" => broker.log_message_timestamp_before_max_ms.to_string(),
        "compression.gzip.level" => broker.compression_gzip_level.to_string(),
        "compression.lz4.level" => broker.compression_lz4_level.to_string(),
        "compression.zstd.level" => broker.compression_zstd_level.to_string(),
        "flush.ms" => broker.flush_interval_ms.to_string(),
        "index.interval.bytes" => broker.log_index_interval_bytes.to_string(),
        "max.message.bytes" => broker.message_max_bytes.to_string(),
        "message.timestamp.type" => broker.log_message_timestamp_type.clone(),
        "min.cleanable.dirty.ratio" => "0.5".into(),
        "min.compaction.lag.ms" => broker.log_cleaner_min_compaction_lag_ms.to_string(),
        "segment.jitter.ms" => "0".into(),
        "min.insync.replicas" => broker.min_insync_replicas.to_string(),
        "preallocate" | "unclean.leader.election.enable" => "false".into(),
        "retention.bytes" => broker.log_retention_bytes.to_string(),
        "retention.ms" => broker.log_retention_ms.to_string(),
        "segment.bytes" | "internal.segment.bytes" => broker.log_segment_bytes.to_string(),
        "segment.index.bytes" => "10485760".into(),
        "segment.ms" => broker.log_segment_ms.to_string(),
        _ => String::new(),
    }
}

/// Checks a requested override; the error text goes back to the client.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let Some(def) = find(name) else {
        return Err(format!("Unknown topic config name: {name}"));
    };
    let ok = match def.config_type {
        T::Boolean => matches!(value.to_ascii_lowercase().as_str(), "true" | "false"),
        T::Int => value.trim().parse::<i32>().is_ok(),
        T::Short => value.trim().parse::<i16>().is_ok(),
        T::Long => value.trim().parse::<i64>().is_ok(),
        T::Double => value.trim().parse::<f64>().is_ok(),
        T::String => def.allowed.is_empty() || def.allowed.contains(&value),
        // An empty value is the empty list, which Kafka's `ValidList` accepts (an empty
        // `cleanup.policy`: neither deleted nor compacted); an empty item is not.
        T::List => {
            value.trim().is_empty()
                || value
                    .split(',')
                    .all(|v| def.allowed.is_empty() || def.allowed.contains(&v.trim()))
        }
    };
    if !ok {
        return Err(format!("Invalid value {value} for configuration {name}"));
    }
    let positive = |min: i64| match value.trim().parse::<i64>() {
        Ok(v) if v >= min => Ok(()),
        _ => Err(format!(
            "Invalid value {value} for configuration {name}: must be at least {min}"
        )),
    };
    match name {
        "segment.bytes" => positive(crate::config::SEGMENT_BYTES_MIN as i64),
        "internal.segment.bytes" => positive(1),
        "segment.ms" | "max.message.bytes" | "index.interval.bytes" => positive(1),
        "min.insync.replicas" => positive(1),
        "message.timestamp.before.max.ms" | "message.timestamp.after.max.ms" => positive(0),
        "compression.gzip.level" | "compression.lz4.level" | "compression.zstd.level" => {
            use crate::log::codec::{check_level, Codec};
            let codec = match name {
                "compression.gzip.level" => Codec::Gzip,
                "compression.lz4.level" => Codec::Lz4,
                _ => Codec::Zstd,
            };
            let level = value.trim().parse::<i32>().unwrap_or_default();
            check_level(codec, level)
                .map_err(|why| format!("Invalid value {value} for configuration {name}: {why}"))
        }
        _ => Ok(()),
    }
}

/// A topic's overrides over the broker defaults.
pub type TopicOverrides = BTreeMap<String, String>;

/// A config's effective value for a topic, with whether it was overridden.
pub fn effective(name: &str, overrides: &TopicOverrides, broker: &Config) -> (String, bool) {
    match overrides.get(name) {
        Some(v) => (v.clone(), true),
        None => (
            find(name)
                .map(|d| default_value(d, broker))
                .unwrap_or_default(),
            false,
        ),
    }
}

fn effective_i64(name: &str, overrides: &TopicOverrides, broker: &Config) -> i64 {
    effective(name, overrides, broker)
        .0
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The settings the log layer needs, resolved for one topic.
pub fn log_config(overrides: &TopicOverrides, broker: &Config) -> LogConfig {
    let policy_value = effective("cleanup.policy", overrides, broker).0;
    let policy: Vec<&str> = policy_value.split(',').map(str::trim).collect();
    LogConfig {
        segment_bytes: match overrides.get("internal.segment.bytes") {
            Some(v) => v
                .trim()
                .parse::<u64>()
                .unwrap_or(crate::config::SEGMENT_BYTES_MIN)
                .clamp(1, crate::config::SEGMENT_BYTES_MAX),
            None => (effective_i64("segment.bytes", overrides, broker).max(0) as u64).clamp(
                crate::config::SEGMENT_BYTES_MIN,
                crate::config::SEGMENT_BYTES_MAX,
            ),
        },
        segment_ms: effective_i64("segment.ms", overrides, broker).max(1),
        index_interval_bytes: effective_i64("index.interval.bytes", overrides, broker).max(1)
            as u64,
        flush_messages: if broker.fsync == FsyncPolicy::Always {
            1
        } else {
            effective_i64("flush.messages", overrides, broker).max(1)
        },
        flush_ms: effective_i64("flush.ms", overrides, broker).max(0),
        retention_ms: effective_i64("retention.ms", overrides, broker),
        retention_bytes: effective_i64("retention.bytes", overrides, broker),
        cleanup_delete: policy.contains(&"delete"),
        cleanup_compact: policy.contains(&"compact"),
        delete_retention_ms: effective_i64("delete.retention.ms", overrides, broker).max(0),
        min_compaction_lag_ms: effective_i64("min.compaction.lag.ms", overrides, broker).max(0),
    }
}

/// The largest batch a topic accepts.
pub fn max_message_bytes(overrides: &TopicOverrides, broker: &Config) -> usize {
    effective_i64("max.message.bytes", overrides, broker).max(0) as usize
}

/// Whether the topic stamps batches with the broker's time.
pub fn log_append_time(overrides: &TopicOverrides, broker: &Config) -> bool {
    effective("message.timestamp.type", overrides, broker).0 == "LogAppendTime"
}

/// The codec a topic stores batches with (`None`: `producer`, as sent) and its levels.
pub fn compression(
    overrides: &TopicOverrides,
    broker: &Config,
) -> (
    Option<crate::log::codec::Codec>,
    crate::log::validate::Levels,
) {
    let target = crate::log::codec::target_of(&effective("compression.type", overrides, broker).0)
        .unwrap_or(None);
    let level = |name| effective_i64(name, overrides, broker) as i32;
    let levels = crate::log::validate::Levels {
        gzip: level("compression.gzip.level"),
        lz4: level("compression.lz4.level"),
        zstd: level("compression.zstd.level"),
    };
    (target, levels)
}

/// What a produce checks of a topic, resolved once per config change rather than per
/// request (each lookup above finds a definition and formats a default).
#[derive(Debug, Clone, Copy)]
pub struct ProduceRules {
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    /// The codec batches are stored with (`None`: `producer`, as sent) and its levels.
    pub compression: Option<crate::log::codec::Codec>,
    pub levels: crate::log::validate::Levels,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub compacted: bool,
    /// `min.insync.replicas`: an acks=all write needs at least this many in-sync replicas.
    pub min_insync_replicas: usize,
}

/// The [`ProduceRules`] of a topic with `overrides`.
pub fn produce_rules(overrides: &TopicOverrides, broker: &Config) -> ProduceRules {
    let (compression, levels) = compression(overrides, broker);
    let (timestamp_before_max_ms, timestamp_after_max_ms) = timestamp_bounds(overrides, broker);
    ProduceRules {
        max_message_bytes: max_message_bytes(overrides, broker),
        log_append_time: log_append_time(overrides, broker),
        compression,
        levels,
        timestamp_before_max_ms,
        timestamp_after_max_ms,
        compacted: log_config(overrides, broker).cleanup_compact,
        min_insync_replicas: effective_i64("min.insync.replicas", overrides, broker).max(1)
            as usize,
    }
}

/// `message.timestamp.before.max.ms` and `message.timestamp.after.max.ms` (KIP-937).
pub fn timestamp_bounds(overrides: &TopicOverrides, broker: &Config) -> (i64, i64) {
    (
        effective_i64("message.timestamp.before.max.ms", overrides, broker).max(0),
        effective_i64("message.timestamp.after.max.ms", overrides, broker).max(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "shred").is_err());
        assert!(validate("cleanup.policy", "").is_ok());
        assert!(validate("cleanup.policy", "compact,").is_err());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        for codec in ["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"] {
            assert!(validate("compression.type", codec).is_ok(), "{codec}");
        }
        assert!(validate("compression.type", "brotli").is_err());
        assert!(validate("compression.type", "none").is_err());
        for (name, good, bad) in [
            (
                "compression.gzip.level",
                ["-1", "1", "9"],
                ["0", "10", "-2"],
            ),
            ("compression.lz4.level", ["1", "9", "17"], ["0", "18", "-1"]),
            (
                "compression.zstd.level",
                ["-131072", "3", "22"],
                ["-131073", "23", "x"],
            ),
        ] {
            for v in good {
                assert!(validate(name, v).is_ok(), "{name}={v}");
            }
            for v in bad {
                assert!(validate(name, v).is_err(), "{name}={v}");
            }
        }
        assert_eq!(
            validate("compression.gzip.level", "0"),
            Err("Invalid value 0 for configuration compression.gzip.level: Value must be between 1 and 9 or equal to -1".into())
        );
        assert!(validate("message.timestamp.after.max.ms", "-1").is_err());
        assert!(validate("message.timestamp.after.max.ms", "3600000").is_ok());
        assert!(validate("no.such.config", "1").is_err());
        assert!(validate("segment.bytes", "0").is_err());
    }

    #[test]
    fn internal_segment_bytes_overrides_without_the_minimum() {
        let broker = Config::default();
        assert!(validate("internal.segment.bytes", "1024").is_ok());
        assert!(validate("internal.segment.bytes", "0").is_err());
        let mut o = TopicOverrides::new();
        o.insert("segment.bytes".into(), "2097152".into());
        o.insert("internal.segment.bytes".into(), "1024".into());
        assert_eq!(log_config(&o, &broker).segment_bytes, 1024);
    }

    #[test]
    fn segment_bytes_is_bounded_as_kafka_does() {
        // An int of at least 1 MiB (Kafka 4's LogConfig): index positions are u32.
        assert!(validate("segment.bytes", "1048575").is_err());
        assert!(validate("segment.bytes", "1048576").is_ok());
        assert!(validate("segment.bytes", "2147483647").is_ok());
        assert!(validate("segment.bytes", "2147483648").is_err());
        assert!(validate("segment.bytes", "17179869184").is_err());
    }

    #[test]
    fn overrides_beat_defaults() {
        let broker = Config::default();
        let mut o = TopicOverrides::new();
        assert_eq!(log_config(&o, &broker).segment_bytes, 1 << 30);
        o.insert("segment.bytes".into(), "2097152".into());
        assert_eq!(log_config(&o, &broker).segment_bytes, 2097152);
        assert_eq!(
            effective("retention.ms", &o, &broker),
            ("604800000".into(), false)
        );
        assert!(!log_append_time(&o, &broker));
    }
}
