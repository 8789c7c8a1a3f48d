//! The topic registry: names, ids, partition counts and config overrides of every topic, with
//! each partition's log. On disk it persists to `<data_dir>/meta/topics.json` (written to a
//! temporary file, fsynced and renamed, so a crash leaves the old or the new version).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::partition::{Partition, PartitionError};
use super::topic_config::{self, TopicOverrides};
use crate::clock::Clock;
use crate::config::Config;
use crate::log::open_files::OpenFiles;
use crate::log::PartitionLog;

/// Longest legal topic name (Kafka's limit, so that `<topic>-<partition>` fits a file name).
pub const TOPIC_NAME_MAX_CHARS: usize = 249;
/// Most partitions one topic may have (a named bound, not a Kafka rule).
pub const PARTITIONS_MAX: i32 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("Topic '{0}' already exists.")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("Unknown topic: {0}")]
    Unknown(String),
    #[error("{0}")]
    Storage(String),
}

impl From<io::Error> for TopicError {
    fn from(e: io::Error) -> Self {
        TopicError::Storage(e.to_string())
    }
}

/// What is persisted about a topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TopicRecord {
    name: String,
    id: Uuid,
    partitions: i32,
    configs: TopicOverrides,
}

pub struct Topic {
    pub name: String,
    pub id: Uuid,
    /// What produce checks, resolved from the configs whenever they change.
    rules: RwLock<topic_config::ProduceRules>,
    configs: RwLock<Arc<TopicOverrides>>,
    partitions: RwLock<Vec<Arc<Partition>>>,
}

/// How a request names a topic: by name (most APIs, older versions) or by id (Fetch v13+,
/// Produce v13+, DescribeTopicPartitions...).
#[derive(Debug, Clone, Copy)]
pub enum TopicRef<'a> {
    Name(&'a str),
    Id(Uuid),
}

impl Topic {
    /// The produce checks of the current configs.
    pub fn produce_rules(&self) -> topic_config::ProduceRules {
        *self.rules.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The topic's config overrides (AlterConfigs may replace them at any time).
    pub fn configs(&self) -> Arc<TopicOverrides> {
        self.configs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every partition.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Partition `index`, whatever this broker's role in it (coordinators reach their internal
    /// topics' logs this way; handlers use [`TopicRegistry::get_partition`]).
    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        let partitions = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        usize::try_from(index)
            .ok()
            .and_then(|i| partitions.get(i).cloned())
    }

    pub fn partition_count(&self) -> i32 {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len() as i32
    }

    /// Topics whose name starts with `__` are Kafka-internal (e.g. `__consumer_offsets`).
    pub fn is_internal(&self) -> bool {
        self.name.starts_with("__")
    }

    fn record(&self) -> TopicRecord {
        TopicRecord {
            name: self.name.clone(),
            id: self.id,
            partitions: self.partition_count(),
            configs: (*self.configs()).clone(),
        }
    }
}

#[derive(Default)]
struct Index {
    by_name: HashMap<String, Arc<Topic>>,
    by_id: HashMap<Uuid, Arc<Topic>>,
}

pub struct TopicRegistry {
    index: RwLock<Index>,
    /// Serialises changes (create, delete, add partitions) and the metadata file writes.
    changes: Mutex<()>,
    data_dir: Option<PathBuf>,
    broker: Config,
    /// The previous run shut down cleanly: logs are opened without a recovery scan.
    clean_start: bool,
    /// The bounded cache every partition's segment files are opened through.
    files: Arc<OpenFiles>,
    /// The clock every partition log's timers run on.
    clock: Clock,
}

/// Checks a topic name against Kafka's rules.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    let bad = |why: String| Err(TopicError::InvalidName(why));
    if name.is_empty() {
        return bad("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return bad("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > TOPIC_NAME_MAX_CHARS {
        return bad(format!(
            "Topic name is illegal, it can't be longer than {TOPIC_NAME_MAX_CHARS} characters"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return bad(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

impl TopicRegistry {
    /// Loads the registry: empty in memory mode, from `meta/topics.json` on disk. With
    /// `clean_start` (the previous run wrote its clean-shutdown marker) partition logs trust
    /// their index files; otherwise they recover from their recovery points.
    pub fn open(broker: &Config, clean_start: bool) -> Result<TopicRegistry, TopicError> {
        TopicRegistry::open_with_clock(broker, clean_start, Clock::system())
    }

    /// As [`TopicRegistry::open`], the partition logs' timers on `clock`.
    pub fn open_with_clock(
        broker: &Config,
        clean_start: bool,
        clock: Clock,
    ) -> Result<TopicRegistry, TopicError> {
        let data_dir = (!broker.memory).then(|| broker.data_dir.clone());
        let registry = TopicRegistry {
            index: RwLock::default(),
            changes: Mutex::new(()),
            data_dir,
            broker: broker.clone(),
            clean_start,
            files: OpenFiles::new(broker.max_open_segment_files),
            clock,
        };
        if let Some(dir) = &registry.data_dir {
            remove_deleted_dirs(dir);
            let path = meta_file(dir);
            if path.exists() {
                let text = std::fs::read_to_string(&path)?;
                let records: Vec<TopicRecord> = serde_json::from_str(&text).map_err(|e| {
                    TopicError::Storage(format!("{} is not valid: {e}", path.display()))
                })?;
                let mut index = registry.write_index();
                for r in records {
                    let topic = registry.build_topic(&r)?;
                    index.by_id.insert(topic.id, topic.clone());
                    index.by_name.insert(topic.name.clone(), topic);
                }
            }
        }
        Ok(registry)
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> Option<PathBuf> {
        self.data_dir
            .as_ref()
            .map(|d| d.join(format!("{topic}-{partition}")))
    }

    fn open_partition(
        &self,
        topic: &str,
        configs: &TopicOverrides,
        partition: i32,
    ) -> Result<Arc<Partition>, TopicError> {
        let config = topic_config::log_config(configs, &self.broker);
        let log = Arc::new(match self.partition_dir(topic, partition) {
            Some(dir) => PartitionLog::open_with_files(
                &dir,
                config,
                self.clean_start,
                self.files.clone(),
                self.clock.clone(),
            )?,
            None => PartitionLog::in_memory_with_clock(config, self.clock.clone()),
        });
        Ok(Arc::new(Partition::sole_leader(
            partition,
            log,
            self.broker.node_id,
        )))
    }

    /// The open-file cache of the segment files (its counters, for tests and logs).
    pub fn open_files(&self) -> &Arc<OpenFiles> {
        &self.files
    }

    /// Opens partitions `range` of a topic, all or none: on a failure the logs opened so far
    /// are closed and the partition directories this call created are removed again.
    fn open_partitions(
        &self,
        topic: &str,
        configs: &TopicOverrides,
        range: std::ops::Range<i32>,
    ) -> Result<Vec<Arc<Partition>>, TopicError> {
        let mut opened = Vec::with_capacity(range.len());
        let mut created = Vec::new();
        for p in range {
            let dir = self.partition_dir(topic, p);
            if let Some(dir) = dir.as_ref().filter(|d| !d.exists()) {
                created.push(dir.clone());
            }
            match self.open_partition(topic, configs, p) {
                Ok(log) => opened.push(log),
                Err(e) => {
                    drop(opened);
                    self.remove_created(topic, &created);
                    return Err(e);
                }
            }
        }
        Ok(opened)
    }

    /// Removes partition directories a failed change created (best effort, logged).
    fn remove_created(&self, topic: &str, dirs: &[PathBuf]) {
        if dirs.is_empty() {
            return;
        }
        let mut left = 0;
        for dir in dirs {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    left += 1;
                    tracing::error!(dir = %dir.display(), error = %e,
                        "cannot remove a partition directory of a failed change");
                }
                _ => {}
            }
        }
        tracing::warn!(
            topic,
            removed = dirs.len() - left,
            "undid a failed topic change"
        );
    }

    /// The directories of partitions `range` that do not exist yet.
    fn missing_dirs(&self, topic: &str, range: std::ops::Range<i32>) -> Vec<PathBuf> {
        range
            .filter_map(|p| self.partition_dir(topic, p))
            .filter(|d| !d.exists())
            .collect()
    }

    fn build_topic(&self, r: &TopicRecord) -> Result<Arc<Topic>, TopicError> {
        let partitions = self.open_partitions(&r.name, &r.configs, 0..r.partitions)?;
        Ok(Arc::new(Topic {
            name: r.name.clone(),
            id: r.id,
            rules: RwLock::new(topic_config::produce_rules(&r.configs, &self.broker)),
            configs: RwLock::new(Arc::new(r.configs.clone())),
            partitions: RwLock::new(partitions),
        }))
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read_index().by_name.get(name).cloned()
    }

    pub fn get_by_id(&self, id: &Uuid) -> Option<Arc<Topic>> {
        self.read_index().by_id.get(id).cloned()
    }

    /// The partition a request names, if this broker may serve it: the one lookup every
    /// handler makes. `leader_epoch` is the request's current leader epoch where the API
    /// carries one (see [`Partition::check_leader`]).
    pub fn get_partition(
        &self,
        topic: TopicRef<'_>,
        partition: i32,
        leader_epoch: Option<i32>,
    ) -> Result<Arc<Partition>, PartitionError> {
        let found = match topic {
            TopicRef::Name(name) => self.get(name).ok_or(PartitionError::Unknown)?,
            TopicRef::Id(id) => self.get_by_id(&id).ok_or(PartitionError::UnknownTopicId)?,
        };
        let p = found.partition(partition).ok_or(PartitionError::Unknown)?;
        p.check_leader(leader_epoch)?;
        Ok(p)
    }

    /// All topics, sorted by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut topics: Vec<_> = self.read_index().by_name.values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    /// Checks a create request without creating anything (CreateTopics `validate_only`).
    /// `partitions` of `None` means the broker default.
    pub fn check_create(
        &self,
        name: &str,
        partitions: Option<i32>,
        configs: &TopicOverrides,
    ) -> Result<i32, TopicError> {
        validate_name(name)?;
        if self.get(name).is_some() {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        let count = partitions.unwrap_or(self.broker.num_partitions);
        if count < 1 {
            return Err(TopicError::InvalidPartitions(
                "Number of partitions must be larger than 0.".into(),
            ));
        }
        if count > PARTITIONS_MAX {
            return Err(TopicError::InvalidPartitions(format!(
                "Number of partitions must be at most {PARTITIONS_MAX}."
            )));
        }
        for (k, v) in configs {
            topic_config::validate(k, v).map_err(TopicError::InvalidConfig)?;
        }
        Ok(count)
    }

    /// Creates a topic (or fails with the reason Kafka would give).
    pub fn create(
        &self,
        name: &str,
        partitions: Option<i32>,
        configs: TopicOverrides,
    ) -> Result<Arc<Topic>, TopicError> {
        let _changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let count = self.check_create(name, partitions, &configs)?;
        let record = TopicRecord {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions: count,
            configs,
        };
        // All or nothing: nothing is registered before the partitions exist and the new
        // registry is persisted; a failure removes the partition directories again.
        let new_dirs = self.missing_dirs(name, 0..count);
        let topic = self.build_topic(&record)?;
        let mut records = self.records();
        records.push(record);
        if let Err(e) = self.persist_records(&records) {
            drop(topic);
            self.remove_created(name, &new_dirs);
            return Err(e);
        }
        {
            let mut index = self.write_index();
            index.by_id.insert(topic.id, topic.clone());
            index.by_name.insert(topic.name.clone(), topic.clone());
        }
        tracing::info!(topic = name, partitions = count, id = %topic.id, "created topic");
        Ok(topic)
    }

    /// Deletes a topic and its data.
    pub fn delete(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        let _changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let topic = {
            let mut index = self.write_index();
            let topic = index
                .by_name
                .remove(name)
                .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
            index.by_id.remove(&topic.id);
            topic
        };
        self.persist()?;
        // Each log is closed (in-flight handles get an error instead of writing) and its
        // directory renamed aside, so a recreated topic of this name starts afresh; the
        // renamed directories are removed in the background.
        let mut aside = Vec::new();
        for p in topic.partitions().iter() {
            aside.extend(p.log().delete()?);
        }
        if let Some(dir) = &self.data_dir {
            crate::log::fsutil::sync_dir(dir)?;
        }
        remove_in_background(aside);
        tracing::info!(topic = name, "deleted topic");
        Ok(topic)
    }

    /// Grows a topic to `count` partitions; with `validate_only`, only checks.
    pub fn add_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let _changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let current = topic.partition_count();
        if count < current {
            return Err(TopicError::InvalidPartitions(format!(
                "Topic currently has {current} partitions, which is higher than the requested {count}."
            )));
        }
        if count == current {
            return Err(TopicError::InvalidPartitions(format!(
                "Topic already has {current} partitions."
            )));
        }
        if count > PARTITIONS_MAX {
            return Err(TopicError::InvalidPartitions(format!(
                "Number of partitions must be at most {PARTITIONS_MAX}."
            )));
        }
        if validate_only {
            return Ok(());
        }
        // All or nothing, as `create`: the new partitions exist and the new count is persisted
        // before the topic shows them.
        let configs = topic.configs();
        let new_dirs = self.missing_dirs(name, current..count);
        let added = self.open_partitions(name, &configs, current..count)?;
        let mut records = self.records();
        if let Some(r) = records.iter_mut().find(|r| r.id == topic.id) {
            r.partitions = count;
        }
        if let Err(e) = self.persist_records(&records) {
            drop(added);
            self.remove_created(name, &new_dirs);
            return Err(e);
        }
        topic
            .partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(added);
        tracing::info!(topic = name, from = current, to = count, "added partitions");
        Ok(())
    }

    /// What `meta/topics.json` holds for the registry as it is.
    fn records(&self) -> Vec<TopicRecord> {
        self.list().iter().map(|t| t.record()).collect()
    }

    /// Writes `meta/topics.json` atomically (disk mode only).
    fn persist(&self) -> Result<(), TopicError> {
        self.persist_records(&self.records())
    }

    fn persist_records(&self, records: &[TopicRecord]) -> Result<(), TopicError> {
        let Some(dir) = &self.data_dir else {
            return Ok(());
        };
        // New partition directories' entries are durable before the topic is recorded (and
        // before anything is appended to them).
        crate::log::fsutil::sync_dir(dir)?;
        let text = serde_json::to_string_pretty(records)
            .map_err(|e| TopicError::Storage(e.to_string()))?;
        write_atomically(&meta_file(dir), text.as_bytes())?;
        Ok(())
    }

    /// Replaces a topic's config overrides (AlterConfigs: the full set;
    /// IncrementalAlterConfigs: the result of its operations). Validates every entry, persists,
    /// and applies the storage settings to the partitions. With `validate_only`, only checks.
    pub fn alter_configs(
        &self,
        name: &str,
        configs: TopicOverrides,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let _changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        for (k, v) in &configs {
            topic_config::validate(k, v).map_err(TopicError::InvalidConfig)?;
        }
        if validate_only {
            return Ok(());
        }
        let log_config = topic_config::log_config(&configs, &self.broker);
        *topic.rules.write().unwrap_or_else(|p| p.into_inner()) =
            topic_config::produce_rules(&configs, &self.broker);
        *topic.configs.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(configs);
        self.persist()?;
        for p in topic.partitions() {
            p.log().set_config(log_config);
        }
        tracing::info!(topic = name, "altered topic configs");
        Ok(())
    }

    /// Every partition log with its topic and index.
    pub fn all_partitions(&self) -> Vec<(Arc<Topic>, i32, Arc<PartitionLog>)> {
        self.list()
            .into_iter()
            .flat_map(|t| {
                t.partitions()
                    .into_iter()
                    .map(move |p| (t.clone(), p.index(), p.log().clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The periodic flush of every partition whose unflushed data is older than its `flush.ms`.
    pub fn flush_due(&self, now: i64) {
        // Every tick (≤ 100 ms) looks at every partition: only those with unflushed data are
        // collected (no allocation per partition), then flushed outside the topic's lock.
        let mut dirty = Vec::new();
        for topic in self.list() {
            let partitions = topic.partitions.read().unwrap_or_else(|p| p.into_inner());
            for p in partitions.iter() {
                if p.log().has_unflushed() {
                    dirty.push((topic.clone(), p.index(), p.log().clone()));
                }
            }
        }
        for (topic, partition, log) in dirty {
            if let Err(e) = log.flush_if_due(now) {
                tracing::error!(topic = %topic.name, partition, error = %e, "periodic flush failed");
            }
        }
    }

    /// One retention pass over every partition.
    pub fn enforce_retention(&self, now: i64) {
        for (topic, partition, log) in self.all_partitions() {
            match log.enforce_retention(now) {
                Ok(r) if r.segments_deleted > 0 => tracing::info!(
                    topic = %topic.name, partition, segments = r.segments_deleted,
                    bytes = r.bytes_deleted, log_start_offset = r.log_start_offset,
                    "retention deleted segments"),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(topic = %topic.name, partition, error = %e, "retention failed")
                }
            }
        }
    }

    /// Forgets idle producer ids in every partition (`producer.id.expiration.ms`).
    pub fn expire_producers(&self, now: i64, expiration_ms: i64) {
        let mut expired = 0;
        for (_, _, log) in self.all_partitions() {
            expired += log.expire_producers(now, expiration_ms);
        }
        if expired > 0 {
            tracing::info!(producers = expired, "expired idle producer ids");
        }
    }

    /// One compaction pass over every partition of compacted topics.
    pub fn compact(&self, now: i64) {
        for (topic, partition, log) in self.all_partitions() {
            match log.compact(now) {
                Ok(r) if r.segments_cleaned > 0 => tracing::info!(
                    topic = %topic.name, partition, segments = r.segments_cleaned,
                    bytes_before = r.bytes_before, bytes_after = r.bytes_after,
                    "compacted"),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(topic = %topic.name, partition, error = %e, "compaction failed")
                }
            }
        }
    }

    /// Flushes every partition; with `shutdown`, also saves what a clean start reads.
    /// Every partition is synced even when one fails (a failed log answers an error); the
    /// first error is returned.
    pub fn sync_all(&self, shutdown: bool) -> io::Result<()> {
        let mut first_error = None;
        for (_, _, log) in self.all_partitions() {
            if let Err(e) = log.sync(shutdown) {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if let (true, Some(dir)) = (shutdown, &self.data_dir) {
            // The producer snapshots were written without fsync: one sync covers them all.
            crate::log::fsutil::sync_filesystem(dir)?;
        }
        Ok(())
    }
}

/// Removes the directories of deleted partitions (`<topic>-<p>.<uuid>-delete`) that a
/// previous run renamed aside and did not finish removing.
fn remove_deleted_dirs(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let is_deleted = name.to_str().is_some_and(|n| {
            n.ends_with(crate::log::partition::DELETED_DIR_SUFFIX) && n.contains('.')
        });
        if is_deleted {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!(dir = %e.path().display(), error = %err, "could not remove a deleted partition's directory");
            }
        }
    }
}

/// Removes deleted partitions' directories off the caller's thread: on the blocking pool
/// inside the runtime, else on a thread of its own.
fn remove_in_background(dirs: Vec<PathBuf>) {
    if dirs.is_empty() {
        return;
    }
    let remove = move || {
        for dir in dirs {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted partition's directory");
            }
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(remove);
        }
        Err(_) => {
            std::thread::spawn(remove);
        }
    }
}

fn meta_file(data_dir: &Path) -> PathBuf {
    data_dir.join("meta").join("topics.json")
}

pub use crate::log::fsutil::write_atomically;

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_config(dir: &Path) -> Config {
        Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        }
    }

    #[test]
    fn names_follow_kafka_rules() {
        assert!(validate_name("orders.v1_x-2").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("..").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn topics_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let config = disk_config(dir.path());
        let id = {
            let r = TopicRegistry::open(&config, false).unwrap();
            let t = r.create("a", Some(2), TopicOverrides::new()).unwrap();
            r.create("b", None, TopicOverrides::new()).unwrap();
            assert_eq!(
                r.create("a", Some(1), TopicOverrides::new()).err(),
                Some(TopicError::AlreadyExists("a".into()))
            );
            r.add_partitions("a", 3, false).unwrap();
            r.delete("b").unwrap();
            assert!(!dir.path().join("b-0").exists());
            // Left over by a run that stopped before removing it: the next start does.
            std::fs::create_dir(dir.path().join("b-1.0123abcd-delete")).unwrap();
            t.id
        };
        let r = TopicRegistry::open(&config, false).unwrap();
        assert!(!dir.path().join("b-1.0123abcd-delete").exists());
        let a = r.get("a").unwrap();
        assert_eq!(a.id, id);
        assert_eq!(a.partition_count(), 3);
        assert!(r.get("b").is_none());
        assert!(r.get_by_id(&id).is_some());
    }

    #[test]
    fn bad_creates_are_refused() {
        let r = TopicRegistry::open(
            &Config {
                memory: true,
                ..Config::default()
            },
            false,
        )
        .unwrap();
        assert!(matches!(
            r.create("t", Some(0), TopicOverrides::new()),
            Err(TopicError::InvalidPartitions(_))
        ));
        let mut bad = TopicOverrides::new();
        bad.insert("retention.ms".into(), "x".into());
        assert!(matches!(
            r.create("t", None, bad),
            Err(TopicError::InvalidConfig(_))
        ));
        r.create("t", None, TopicOverrides::new()).unwrap();
        assert!(matches!(
            r.add_partitions("t", 1, false),
            Err(TopicError::InvalidPartitions(_))
        ));
    }
}
