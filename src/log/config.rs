//! A partition log's settings (Kafka's `LogConfig`): the topic-level configs that shape a
//! log's segments, flushes, retention and compaction. The broker resolves them per topic over
//! its defaults; a log takes them at open and on `set_config`.

/// Per-partition storage settings (from the topic's configs over the broker defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before one would exceed this size.
    pub segment_bytes: u64,
    /// Roll to a new segment when the active one is older than this.
    pub segment_ms: i64,
    /// Add an index entry after this many bytes of batches.
    pub index_interval_bytes: u64,
    /// fsync before acknowledging once this many records are not yet durable (1 = every
    /// append is durable before its answer; `i64::MAX` = leave it to the periodic flush).
    pub flush_messages: i64,
    /// fsync when unflushed data is older than this (the periodic flush).
    pub flush_ms: i64,
    /// Delete whole segments whose newest record is older than this (-1: keep forever).
    pub retention_ms: i64,
    /// Delete the oldest segments while the log is larger than this (-1: no limit).
    pub retention_bytes: i64,
    /// `cleanup.policy` contains `delete`: retention applies.
    pub cleanup_delete: bool,
    /// `cleanup.policy` contains `compact`: the cleaner keeps the newest record per key.
    pub cleanup_compact: bool,
    /// How long a tombstone survives compaction, counted from its segment's newest record.
    pub delete_retention_ms: i64,
    /// A record is not compacted before it is this old.
    pub min_compaction_lag_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            flush_messages: i64::MAX,
            flush_ms: 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
        }
    }
}
