//! The topic registry: this broker's materialization of the metadata image's topics, with the
//! log of every partition it holds a replica of. It persists nothing of its own: the
//! metadata log is the record of which topics exist; the registry opens, creates and deletes
//! local logs as the image changes ([`Publisher`]), and on start from the whole image
//! ([`TopicRegistry::materialize`]). `meta/topics.json`, where earlier versions kept the
//! topics, is read once to migrate it ([`legacy_topics`]).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::hw_checkpoint;
use super::partition::{Leadership, Partition, PartitionError, Role};
use super::topic_config::{self, TopicOverrides};
use crate::clock::Clock;
use crate::config::Config;
use crate::log::open_files::OpenFiles;
use crate::log::PartitionLog;
use crate::meta::image::{Delta, MetadataImage, PartitionImage, TopicImage};
use crate::meta::state_machine::Publisher;

/// Longest legal topic name (Kafka's limit, so that `<topic>-<partition>` fits a file name).
pub const TOPIC_NAME_MAX_CHARS: usize = 249;
/// Most partitions one topic may have (a named bound, not a Kafka rule).
pub const PARTITIONS_MAX: i32 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
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

/// A topic as `meta/topics.json` of earlier versions recorded it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegacyTopic {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: TopicOverrides,
}

pub struct Topic {
    pub name: String,
    pub id: Uuid,
    /// What produce checks, resolved from the configs whenever they change.
    rules: RwLock<topic_config::ProduceRules>,
    configs: RwLock<Arc<TopicOverrides>>,
    /// By index, every partition of the topic; `None` where this broker holds no replica.
    partitions: RwLock<Vec<Option<Arc<Partition>>>>,
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

    /// Every partition this broker holds a replica of.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Partition `index`, whatever this broker's role in it (coordinators reach their internal
    /// topics' logs this way; handlers use [`TopicRegistry::get_partition`]).
    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        let partitions = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        usize::try_from(index)
            .ok()
            .and_then(|i| partitions.get(i).cloned().flatten())
    }

    /// Partitions of the topic (on every broker, not only this one's replicas).
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
}

#[derive(Default)]
struct Index {
    by_name: HashMap<String, Arc<Topic>>,
    by_id: HashMap<Uuid, Arc<Topic>>,
}

/// What the registry has seen of the image.
#[derive(Default)]
struct Published {
    /// The newest image the metadata layer published.
    latest: Option<Arc<MetadataImage>>,
    /// Logs follow the image (set by [`TopicRegistry::materialize`]); until then changes
    /// only update `latest`.
    materialized: bool,
}

pub struct TopicRegistry {
    index: RwLock<Index>,
    /// Serialises the image's changes to local logs.
    changes: Mutex<Published>,
    /// The node whose replicas this registry holds.
    node_id: i32,
    data_dir: Option<PathBuf>,
    broker: Config,
    /// The previous run shut down cleanly: logs are opened without a recovery scan.
    clean_start: bool,
    /// The bounded cache every partition's segment files are opened through.
    files: Arc<OpenFiles>,
    /// The clock every partition log's timers run on.
    clock: Clock,
    /// The high watermarks of the last run's checkpoint, taken by each replica as it opens
    /// (`hw_checkpoint.rs`).
    restored_hws: Mutex<hw_checkpoint::HighWatermarks>,
    /// The checkpoint's contents as last written, to write it only on change.
    hws_written: Mutex<Option<String>>,
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
        let restored_hws = data_dir
            .as_deref()
            .map(hw_checkpoint::read)
            .unwrap_or_default();
        let registry = TopicRegistry {
            index: RwLock::default(),
            changes: Mutex::new(Published::default()),
            node_id: broker.node_id,
            data_dir,
            broker: broker.clone(),
            clean_start,
            files: OpenFiles::new(broker.max_open_segment_files),
            clock,
            restored_hws: Mutex::new(restored_hws),
            hws_written: Mutex::new(None),
        };
        if let Some(dir) = &registry.data_dir {
            remove_deleted_dirs(dir);
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
        topic_id: Uuid,
        configs: &TopicOverrides,
        partition: i32,
        image: &PartitionImage,
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
        // The high watermark the replica had at the last checkpoint, else its log start:
        // never its log end, which may hold records that were never committed. A leader
        // alone in its ISR moves it to its log end at once.
        let restored = self
            .restored_hws
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(topic_id, partition));
        log.restore_high_watermark(restored.unwrap_or_else(|| log.log_start_offset()));
        let p = Partition::new(partition, log, self.leadership(image, configs)).of_topic(topic_id);
        Ok(Arc::new(p))
    }

    /// Writes the high-watermark checkpoint (`hw_checkpoint.rs`) when it changed since the
    /// last write (disk mode). Blocking (it fsyncs): the maintenance timer and the clean stop
    /// call it on the blocking pool.
    pub fn checkpoint_high_watermarks(&self) -> io::Result<()> {
        let Some(dir) = &self.data_dir else {
            return Ok(());
        };
        // Before the logs follow the image, the last run's file stays as it is.
        if !self
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .materialized
        {
            return Ok(());
        }
        let mut entries = Vec::new();
        for topic in self.list() {
            for p in topic.partitions() {
                entries.push((topic.id, p.index(), p.high_watermark()));
            }
        }
        let text = hw_checkpoint::format(&entries);
        let mut written = self.hws_written.lock().unwrap_or_else(|p| p.into_inner());
        if written.as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        hw_checkpoint::write(dir, &text)?;
        *written = Some(text);
        Ok(())
    }

    /// This broker's part in a partition as the image describes it.
    /// The leadership the image gives this replica; `configs`: its topic's overrides (for
    /// `min.insync.replicas`).
    fn leadership(&self, image: &PartitionImage, configs: &TopicOverrides) -> Leadership {
        let min_insync = topic_config::produce_rules(configs, &self.broker).min_insync_replicas;
        Leadership {
            role: if image.leader == self.node_id {
                Role::Leader
            } else {
                Role::Follower
            },
            leader_id: image.leader,
            leader_epoch: image.leader_epoch,
            partition_epoch: image.partition_epoch,
            replicas: image.replicas.clone(),
            isr: image.isr.clone(),
            min_isr: min_insync.min(image.replicas.len()).max(1),
        }
    }

    /// The log directory every partition of this broker lives in (Kafka's `log.dirs`; ottla
    /// has one, the data directory), made absolute as Kafka names it (not canonicalized:
    /// symbolic links are kept). `None` in memory mode.
    pub fn log_dir(&self) -> Option<PathBuf> {
        self.data_dir
            .as_ref()
            .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()))
    }

    /// The open-file cache of the segment files (its counters, for tests and logs).
    pub fn open_files(&self) -> &Arc<OpenFiles> {
        &self.files
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
        let p = self.lookup(topic, partition)?;
        p.check_leader(leader_epoch).map(|()| p)
    }

    /// As [`TopicRegistry::get_partition`], for a read any replica here may serve (a
    /// consumer's fetch from a follower, KIP-392): the leader epoch is checked, not the role.
    pub fn get_replica(
        &self,
        topic: TopicRef<'_>,
        partition: i32,
        leader_epoch: Option<i32>,
    ) -> Result<Arc<Partition>, PartitionError> {
        let p = self.lookup(topic, partition)?;
        p.check_replica(leader_epoch).map(|()| p)
    }

    /// The local replica of a partition; NOT_LEADER when the partition exists on other
    /// brokers only.
    fn lookup(
        &self,
        topic: TopicRef<'_>,
        partition: i32,
    ) -> Result<Arc<Partition>, PartitionError> {
        let found = self.resolve(topic)?;
        Self::local_partition(&found, partition)
    }

    /// The topic a request names (UNKNOWN_TOPIC_OR_PARTITION / UNKNOWN_TOPIC_ID): with
    /// [`TopicRegistry::partition_in`], one lookup for many partitions of a topic.
    pub fn resolve(&self, topic: TopicRef<'_>) -> Result<Arc<Topic>, PartitionError> {
        match topic {
            TopicRef::Name(name) => self.get(name).ok_or(PartitionError::Unknown),
            TopicRef::Id(id) => self.get_by_id(&id).ok_or(PartitionError::UnknownTopicId),
        }
    }

    /// [`TopicRegistry::get_partition`] (or, `any_replica`, [`TopicRegistry::get_replica`])
    /// in a topic already resolved.
    pub fn partition_in(
        topic: &Topic,
        partition: i32,
        leader_epoch: Option<i32>,
        any_replica: bool,
    ) -> Result<Arc<Partition>, PartitionError> {
        let p = Self::local_partition(topic, partition)?;
        let checked = if any_replica {
            p.check_replica(leader_epoch)
        } else {
            p.check_leader(leader_epoch)
        };
        checked.map(|()| p)
    }

    fn local_partition(found: &Topic, partition: i32) -> Result<Arc<Partition>, PartitionError> {
        match found.partition(partition) {
            Some(p) => Ok(p),
            // The partition exists, on other brokers only.
            None if (0..found.partition_count()).contains(&partition) => {
                Err(PartitionError::NotLeader)
            }
            None => Err(PartitionError::Unknown),
        }
    }

    /// All topics, sorted by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut topics: Vec<_> = self.read_index().by_name.values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    /// Opens the logs of every partition the image places on this broker (and closes those
    /// of topics it no longer has), moves aside partition directories the image does not
    /// know (a deletion a crash interrupted), and from then on follows every published
    /// change. Blocking: call it on the blocking pool, before serving.
    pub fn materialize(&self, image: &Arc<MetadataImage>) {
        let mut published = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let applied = |i: &MetadataImage| i.applied.map_or(0, |l| l.index);
        let image = match &published.latest {
            Some(latest) if applied(latest) > applied(image) => latest.clone(),
            _ => image.clone(),
        };
        for t in self.list() {
            if image.topic(&t.id).is_none() {
                self.remove_topic(&t.id);
            }
        }
        for t in image.topics.values() {
            self.sync_topic(t);
        }
        if let Some(dir) = &self.data_dir {
            self.sweep_orphans(dir, &image);
        }
        published.latest = Some(image);
        published.materialized = true;
    }

    /// Whether the image puts a replica of this partition here.
    fn hosts(&self, p: &PartitionImage) -> bool {
        p.replicas.contains(&self.node_id)
    }

    /// Brings one topic's local logs, configs and leadership in line with the image.
    fn sync_topic(&self, t: &TopicImage) {
        let Some(topic) = self.get_by_id(&t.id) else {
            let partitions = t
                .partitions
                .iter()
                .enumerate()
                .map(|(i, p)| self.open_if_hosted(t, i as i32, p))
                .collect();
            let topic = Arc::new(Topic {
                name: t.name.clone(),
                id: t.id,
                rules: RwLock::new(topic_config::produce_rules(&t.configs, &self.broker)),
                configs: RwLock::new(Arc::new(t.configs.clone())),
                partitions: RwLock::new(partitions),
            });
            let mut index = self.write_index();
            index.by_id.insert(topic.id, topic.clone());
            index.by_name.insert(topic.name.clone(), topic);
            tracing::info!(topic = %t.name, partitions = t.partitions.len(), id = %t.id, "created topic");
            return;
        };
        if *topic.configs() != t.configs {
            let log_config = topic_config::log_config(&t.configs, &self.broker);
            *topic.rules.write().unwrap_or_else(|p| p.into_inner()) =
                topic_config::produce_rules(&t.configs, &self.broker);
            *topic.configs.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(t.configs.clone());
            for p in topic.partitions() {
                p.log().set_config(log_config);
            }
            tracing::info!(topic = %t.name, "altered topic configs");
        }
        let mut local = topic.partitions.write().unwrap_or_else(|p| p.into_inner());
        let before = local.len();
        local.resize(t.partitions.len().max(before), None);
        let mut aside = Vec::new();
        for (i, p) in t.partitions.iter().enumerate() {
            match (&local[i], self.hosts(p)) {
                (None, true) => local[i] = self.open_if_hosted(t, i as i32, p),
                (Some(part), true) => {
                    let next = self.leadership(p, &t.configs);
                    let now = part.leadership();
                    if next.leader_epoch < now.leader_epoch {
                        tracing::error!(topic = %t.name, partition = i, epoch = next.leader_epoch, current = now.leader_epoch,
                            "ignored a leadership whose leader epoch goes back");
                    } else if *now != next {
                        part.set_leadership(next);
                    }
                }
                (Some(part), false) => {
                    // The replica moved away from this broker.
                    match part.log().delete() {
                        Ok(dir) => aside.extend(dir),
                        Err(e) => {
                            tracing::error!(topic = %t.name, partition = i, error = %e, "cannot delete a moved replica")
                        }
                    }
                    local[i] = None;
                }
                (None, false) => {}
            }
        }
        if t.partitions.len() > before {
            tracing::info!(topic = %t.name, from = before, to = t.partitions.len(), "added partitions");
        }
        drop(local);
        remove_in_background(aside);
    }

    /// Opens partition `index`'s log if the image places a replica here. A log that cannot
    /// be opened leaves the partition offline on this broker (logged).
    fn open_if_hosted(
        &self,
        t: &TopicImage,
        index: i32,
        p: &PartitionImage,
    ) -> Option<Arc<Partition>> {
        if !self.hosts(p) {
            return None;
        }
        match self.open_partition(&t.name, t.id, &t.configs, index, p) {
            Ok(part) => Some(part),
            Err(e) => {
                tracing::error!(topic = %t.name, partition = index, error = %e,
                    "cannot open a partition's log: it is offline on this broker");
                None
            }
        }
    }

    /// Closes and deletes a removed topic's logs (directories renamed aside, then removed in
    /// the background).
    fn remove_topic(&self, id: &Uuid) {
        let topic = {
            let mut index = self.write_index();
            let Some(topic) = index.by_id.remove(id) else {
                return;
            };
            index.by_name.remove(&topic.name);
            topic
        };
        // Each log is closed (in-flight handles get an error instead of writing) and its
        // directory renamed aside, so a recreated topic of this name starts afresh.
        let mut aside = Vec::new();
        for p in topic.partitions() {
            match p.log().delete() {
                Ok(dir) => aside.extend(dir),
                Err(e) => {
                    tracing::error!(topic = %topic.name, partition = p.index(), error = %e, "cannot delete a partition's log")
                }
            }
        }
        if let Some(dir) = &self.data_dir {
            if let Err(e) = crate::log::fsutil::sync_dir(dir) {
                tracing::error!(error = %e, "cannot sync the data directory after a topic deletion");
            }
        }
        remove_in_background(aside);
        tracing::info!(topic = %topic.name, "deleted topic");
    }

    /// Moves aside partition directories of topics or replicas the image does not place here.
    fn sweep_orphans(&self, dir: &Path, image: &MetadataImage) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut aside = Vec::new();
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((topic, p)) = parse_partition_dir(name) else {
                continue;
            };
            if !e.path().is_dir() {
                continue;
            }
            let hosted = image
                .topic_by_name(topic)
                .and_then(|t| t.partitions.get(p as usize))
                .is_some_and(|p| self.hosts(p));
            if hosted {
                continue;
            }
            let to = dir.join(format!(
                "{name}.{}{}",
                Uuid::new_v4().simple(),
                crate::log::partition::DELETED_DIR_SUFFIX
            ));
            match std::fs::rename(e.path(), &to) {
                Ok(()) => {
                    tracing::warn!(
                        dir = name,
                        "removing a partition directory the metadata does not know"
                    );
                    aside.push(to);
                }
                Err(err) => {
                    tracing::error!(dir = name, error = %err, "cannot move aside an unknown partition directory")
                }
            }
        }
        if !aside.is_empty() {
            if let Err(e) = crate::log::fsutil::sync_dir(dir) {
                tracing::error!(error = %e, "cannot sync the data directory");
            }
        }
        remove_in_background(aside);
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
            for p in partitions.iter().flatten() {
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

/// The topics `meta/topics.json` of an earlier version holds (None: no such file, or it was
/// migrated already).
pub fn legacy_topics(data_dir: &Path) -> Result<Option<Vec<LegacyTopic>>, TopicError> {
    let path = meta_file(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TopicError::Storage(format!("{} is not valid: {e}", path.display())))
}

/// Renames `meta/topics.json` to `topics.json.migrated` once the metadata log holds its
/// topics (durably: the directory is synced).
pub fn retire_legacy_topics(data_dir: &Path) -> io::Result<()> {
    let path = meta_file(data_dir);
    std::fs::rename(&path, path.with_extension("json.migrated"))?;
    crate::log::fsutil::sync_dir(&data_dir.join("meta"))
}

/// `<topic>-<partition>` of a partition directory's name.
fn parse_partition_dir(name: &str) -> Option<(&str, i32)> {
    let (topic, p) = name.rsplit_once('-')?;
    let p: i32 = p.parse().ok()?;
    (p >= 0 && validate_name(topic).is_ok()).then_some((topic, p))
}

pub use crate::log::fsutil::write_atomically;

impl Publisher for TopicRegistry {
    fn publish(&self, image: &Arc<MetadataImage>, delta: &Delta) {
        let mut published = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        published.latest = Some(image.clone());
        if !published.materialized {
            return;
        }
        for t in &delta.removed_topics {
            self.remove_topic(&t.id);
        }
        for id in &delta.changed_topics {
            if let Some(t) = image.topic(id) {
                self.sync_topic(t);
            }
        }
    }
}

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

    use crate::meta::records::MetaRecord;

    /// Applies `records` to `image` as one entry at `index`, returning the new image and delta.
    fn apply(
        image: &MetadataImage,
        index: u64,
        records: Vec<MetaRecord>,
    ) -> (Arc<MetadataImage>, Delta) {
        image.with_entry(index, &records)
    }

    fn topic(
        name: &str,
        id: Uuid,
        partitions: std::ops::Range<i32>,
        replicas: &[i32],
    ) -> Vec<MetaRecord> {
        let mut r = vec![MetaRecord::Topic {
            name: name.into(),
            id,
        }];
        if partitions.start > 0 {
            r.clear();
        }
        r.extend(partitions.map(|index| MetaRecord::Partition {
            topic_id: id,
            index,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader: replicas[0],
            leader_epoch: 0,
            partition_epoch: 0,
        }));
        r
    }

    #[test]
    fn logs_follow_the_image_and_unknown_directories_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let config = disk_config(dir.path());
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut records = topic("a", a, 0..2, &[1]);
        records.extend(topic("b", b, 0..1, &[1]));
        // Placed on other brokers only: no local log.
        records.extend(topic("c", c, 0..2, &[2, 3]));
        let (image, _) = apply(&MetadataImage::default(), 1, records);
        // Left over by a deletion a crash interrupted, and by a run that did not finish
        // removing a deleted partition.
        std::fs::create_dir(dir.path().join("gone-0")).unwrap();
        std::fs::create_dir(dir.path().join("b-1.0123abcd-delete")).unwrap();
        let r = TopicRegistry::open(&config, false).unwrap();
        assert!(!dir.path().join("b-1.0123abcd-delete").exists());
        r.materialize(&image);
        assert!(!dir.path().join("gone-0").exists(), "swept");
        assert_eq!(r.get("a").unwrap().partitions().len(), 2);
        assert_eq!(r.get("c").unwrap().partition_count(), 2);
        assert!(r.get("c").unwrap().partitions().is_empty());
        assert!(!dir.path().join("c-0").exists());
        let l = r.get("a").unwrap().partition(1).unwrap().leadership();
        assert_eq!((l.role, l.leader_id), (Role::Leader, 1));

        // Partitions added, a topic removed, a leader moved, configs changed.
        let mut records = topic("a", a, 2..3, &[1]);
        records.push(MetaRecord::RemoveTopic { id: b });
        records.push(MetaRecord::PartitionChange {
            topic_id: a,
            index: 0,
            isr: None,
            leader: Some(2),
            replicas: Some(vec![1, 2]),
            elr: None,
        });
        records.push(MetaRecord::Config {
            resource: crate::meta::records::ConfigResource::Topic("a".into()),
            name: "retention.ms".into(),
            value: Some("1000".into()),
        });
        let (image, delta) = apply(&image, 2, records);
        r.publish(&image, &delta);
        let t = r.get("a").unwrap();
        assert_eq!(t.partition_count(), 3);
        assert!(dir.path().join("a-2").exists());
        let l = t.partition(0).unwrap().leadership();
        assert_eq!(
            (l.role, l.leader_id, l.leader_epoch),
            (Role::Follower, 2, 1)
        );
        assert_eq!(
            t.configs().get("retention.ms").map(String::as_str),
            Some("1000")
        );
        assert!(r.get("b").is_none() && r.get_by_id(&b).is_none());
        assert!(!dir.path().join("b-0").exists());

        // A new registry on the same directory, from the image: the same topics again.
        drop((t, r));
        let r = TopicRegistry::open(&config, false).unwrap();
        r.materialize(&image);
        assert_eq!(r.get("a").unwrap().id, a);
        assert_eq!(r.get("a").unwrap().partitions().len(), 3);
        assert!(r.get("b").is_none());
    }

    /// A replica restarts with the high watermark of the last checkpoint, not its log end: a
    /// follower that had appended past what its leader had committed keeps HW 2 of LEO 5; a
    /// replica the checkpoint does not know starts at its log start; a leader alone in its
    /// ISR takes its log end.
    #[test]
    fn replicas_restart_with_their_checkpointed_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let config = disk_config(dir.path());
        let (f, alone) = (Uuid::new_v4(), Uuid::new_v4());
        let mut records = topic("f", f, 0..2, &[2, 1]);
        records.extend(topic("alone", alone, 0..1, &[1]));
        let (image, _) = apply(&MetadataImage::default(), 1, records);
        let batch = |n| {
            crate::log::batch::tests::encode_batch(
                n,
                kafka_protocol::records::Compression::None,
                1000,
            )
        };
        let r = TopicRegistry::open(&config, false).unwrap();
        r.materialize(&image);
        let t = r.get("f").unwrap();
        for p in t.partitions() {
            assert_eq!(p.leadership().role, Role::Follower);
            p.log().append_as_follower(&batch(5)).unwrap();
        }
        t.partition(0).unwrap().log().advance_high_watermark(2);
        let a = r.get("alone").unwrap().partition(0).unwrap();
        a.log().append(&mut batch(3), None).unwrap();
        assert_eq!(a.high_watermark(), 3);
        r.checkpoint_high_watermarks().unwrap();
        // Partition 1 learns a high watermark after the checkpoint: lost with the crash.
        t.partition(1).unwrap().log().advance_high_watermark(4);
        r.sync_all(false).unwrap();
        drop((t, a, r));

        let r = TopicRegistry::open(&config, false).unwrap();
        r.materialize(&image);
        let t = r.get("f").unwrap();
        let (p0, p1) = (t.partition(0).unwrap(), t.partition(1).unwrap());
        assert_eq!(p0.log().log_end_offset(), 5);
        assert_eq!(
            p0.high_watermark(),
            2,
            "the checkpointed one, not the log end"
        );
        assert_eq!(p1.high_watermark(), 0, "checkpointed before it learnt one");
        assert_eq!(
            r.get("alone")
                .unwrap()
                .partition(0)
                .unwrap()
                .high_watermark(),
            3
        );
        // Unchanged since the last write: not written again.
        let file = dir.path().join(hw_checkpoint::FILE);
        let before = std::fs::read_to_string(&file).unwrap();
        r.checkpoint_high_watermarks().unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
        assert!(before.contains(&format!("{f} 0 2\n")), "{before}");
    }

    #[test]
    fn changes_before_materialize_only_update_the_image() {
        let r = TopicRegistry::open(
            &Config {
                memory: true,
                ..Config::default()
            },
            false,
        )
        .unwrap();
        let id = Uuid::new_v4();
        let (image, delta) = apply(&MetadataImage::default(), 1, topic("t", id, 0..1, &[1]));
        r.publish(&image, &delta);
        assert!(r.get("t").is_none(), "not yet materialized");
        // Materializing an older image still takes the newest published one.
        r.materialize(&Arc::new(MetadataImage::default()));
        assert_eq!(r.get("t").unwrap().id, id);
    }
}
