//! The metadata log's state machine: applies committed entries to the [`MetadataImage`],
//! hands each change to the [`Publisher`] (which creates and deletes local logs and sets
//! leadership, on the blocking pool) and only then publishes the new image to readers, so a
//! handler that finds a partition in the image finds its log. Snapshots are the image as
//! JSON (`<data>/meta/raft/snapshot-<term>-<index>.json`, written temp+fsync+rename).
// openraft's StorageError (over 200 bytes) is what its storage traits return; the helpers
// here return it too rather than boxing it and converting back.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, EntryPayload, ErrorSubject, ErrorVerb, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::image::{Delta, MetadataImage};
use super::{Entry, LogId, MetaReply, StorageError, TypeConfig};

/// Turns applied changes into local effects. Called on the blocking pool, one call at a time,
/// in log order, before readers see the image.
pub trait Publisher: Send + Sync + 'static {
    fn publish(&self, image: &Arc<MetadataImage>, delta: &Delta);
}

/// A publisher that does nothing (controller-only nodes, tests).
pub struct NoPublisher;

impl Publisher for NoPublisher {
    fn publish(&self, _: &Arc<MetadataImage>, _: &Delta) {}
}

/// The published image and the index it was applied up to, shared with every reader.
pub struct ImageCell {
    image: RwLock<Arc<MetadataImage>>,
    applied: watch::Sender<u64>,
}

impl ImageCell {
    fn new(image: Arc<MetadataImage>) -> Arc<ImageCell> {
        let index = image.applied.map_or(0, |l| l.index);
        Arc::new(ImageCell {
            image: RwLock::new(image),
            applied: watch::Sender::new(index),
        })
    }

    /// The current image (one request reads one image).
    pub fn current(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The log index the published image includes.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the published image includes log index `index`.
    pub async fn wait_applied(&self, index: u64) {
        let mut rx = self.applied.subscribe();
        // The sender lives as long as `self`: wait_for only fails if it is dropped.
        let _ = rx.wait_for(|applied| *applied >= index).await;
    }

    fn publish(&self, image: Arc<MetadataImage>) {
        let index = image.applied.map_or(0, |l| l.index);
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = image;
        self.applied.send_replace(index);
    }
}

/// What a snapshot file holds.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<u64, BasicNode>,
    image: MetadataImage,
}

/// The state machine openraft drives.
pub struct StateMachine {
    image: Arc<MetadataImage>,
    membership: StoredMembership<u64, BasicNode>,
    cell: Arc<ImageCell>,
    publisher: Arc<dyn Publisher>,
    /// `<data>/meta/raft` (None: memory mode).
    dir: Option<PathBuf>,
    /// The newest snapshot: its meta and data (the image's JSON), shared with the builders.
    snapshot: Arc<Mutex<Option<CurrentSnapshot>>>,
    snapshots_built: u64,
}

type CurrentSnapshot = (SnapshotMeta<u64, BasicNode>, Arc<Vec<u8>>);

fn io_error(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from(StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        AnyError::error(e.to_string()),
    ))
}

impl StateMachine {
    /// Opens the state machine from the newest snapshot in `dir` (blocking: call it before
    /// serving, or on the blocking pool). Returns it and the cell readers share.
    pub fn open(
        dir: Option<&Path>,
        publisher: Arc<dyn Publisher>,
    ) -> std::io::Result<(StateMachine, Arc<ImageCell>)> {
        let mut sm = StateMachine {
            image: Arc::new(MetadataImage::default()),
            membership: StoredMembership::default(),
            cell: ImageCell::new(Arc::new(MetadataImage::default())),
            publisher,
            dir: dir.map(Path::to_path_buf),
            snapshot: Arc::default(),
            snapshots_built: 0,
        };
        if let Some(dir) = dir {
            if let Some(path) = newest_snapshot(dir)? {
                let bytes = std::fs::read(&path)?;
                let file: SnapshotFile = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.display()),
                    )
                })?;
                let data = serde_json::to_vec(&file.image)?;
                sm.membership = file.meta.last_membership.clone();
                sm.image = Arc::new(file.image);
                *sm.snapshot.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((file.meta, Arc::new(data)));
                tracing::info!(snapshot = %path.display(), "metadata image loaded from its snapshot");
            }
        }
        sm.cell = ImageCell::new(sm.image.clone());
        let cell = sm.cell.clone();
        Ok((sm, cell))
    }

    /// Runs the publisher on the blocking pool, then publishes the image.
    async fn publish(&mut self, image: MetadataImage, delta: Delta) {
        let image = Arc::new(image);
        self.image = image.clone();
        if !delta.is_empty() {
            let publisher = self.publisher.clone();
            let for_publisher = image.clone();
            if let Err(e) =
                crate::threads::spawn_blocking(move || publisher.publish(&for_publisher, &delta))
                    .await
            {
                tracing::error!(error = %e, "publishing a metadata change failed");
            }
        }
        self.cell.publish(image);
    }
}

/// Writes a snapshot file (temp+fsync+rename) and removes the older ones. Blocking.
fn write_snapshot(
    dir: &Path,
    meta: &SnapshotMeta<u64, BasicNode>,
    image: &MetadataImage,
) -> Result<(), StorageError> {
    let file = SnapshotFile {
        meta: meta.clone(),
        image: image.clone(),
    };
    let bytes = serde_json::to_vec(&file).map_err(|e| io_error(ErrorVerb::Write, e))?;
    let name = snapshot_name(meta.last_log_id);
    crate::log::fsutil::write_atomically(&dir.join(&name), &bytes)
        .map_err(|e| io_error(ErrorVerb::Write, e))?;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            let n = e.file_name();
            let Some(n) = n.to_str() else { continue };
            if n.starts_with("snapshot-") && n.ends_with(".json") && n != name {
                if let Err(err) = std::fs::remove_file(e.path()) {
                    tracing::warn!(file = %e.path().display(), error = %err, "cannot remove a superseded metadata snapshot");
                }
            }
        }
    }
    Ok(())
}

fn snapshot_name(last: Option<LogId>) -> String {
    let (term, index) = last.map_or((0, 0), |l| (l.leader_id.term, l.index));
    format!("snapshot-{term:020}-{index:020}.json")
}

/// The snapshot file with the highest index in `dir`.
fn newest_snapshot(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut best: Option<(u64, PathBuf)> = None;
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name
            .strip_prefix("snapshot-")
            .and_then(|r| r.strip_suffix(".json"))
        else {
            continue;
        };
        let Some(index) = rest.rsplit('-').next().and_then(|i| i.parse::<u64>().ok()) else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| index > *b) {
            best = Some((index, e.path()));
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// Builds a snapshot of the image as it is when asked.
pub struct SnapshotBuilder {
    image: Arc<MetadataImage>,
    membership: StoredMembership<u64, BasicNode>,
    dir: Option<PathBuf>,
    seq: u64,
    slot: Arc<Mutex<Option<CurrentSnapshot>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let last = self.image.applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{}",
                last.map_or(0, |l| l.leader_id.term),
                last.map_or(0, |l| l.index),
                self.seq
            ),
        };
        let image = self.image.clone();
        let dir = self.dir.clone();
        let meta2 = meta.clone();
        let data = crate::threads::spawn_blocking(move || -> Result<Vec<u8>, StorageError> {
            let data = serde_json::to_vec(&*image).map_err(|e| io_error(ErrorVerb::Write, e))?;
            if let Some(dir) = dir {
                write_snapshot(&dir, &meta2, &image)?;
            }
            Ok(data)
        })
        .await
        .map_err(|e| io_error(ErrorVerb::Write, e))??;
        let data = Arc::new(data);
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((meta.clone(), data.clone()));
        tracing::info!(
            index = last.map_or(0, |l| l.index),
            bytes = data.len(),
            "metadata snapshot built"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new((*data).clone())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, BasicNode>), StorageError> {
        Ok((self.image.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaReply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut image = (*self.image).clone();
        let mut delta = Delta::default();
        let mut replies = Vec::new();
        for entry in entries {
            match &entry.payload {
                EntryPayload::Blank => image.applied = Some(entry.log_id),
                EntryPayload::Normal(batch) => {
                    image.apply(entry.log_id, &batch.records, &mut delta)
                }
                EntryPayload::Membership(m) => {
                    image.applied = Some(entry.log_id);
                    self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                }
            }
            replies.push(MetaReply {
                index: entry.log_id.index,
            });
        }
        self.publish(image, delta).await;
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.snapshots_built += 1;
        SnapshotBuilder {
            image: self.image.clone(),
            membership: self.membership.clone(),
            dir: self.dir.clone(),
            seq: self.snapshots_built,
            slot: self.snapshot.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut image: MetadataImage =
            serde_json::from_slice(&data).map_err(|e| io_error(ErrorVerb::Read, e))?;
        image.applied = meta.last_log_id;
        // Everything may have changed: every topic of the new image, and the removal of every
        // topic only the old one had.
        let mut delta = Delta {
            brokers_changed: true,
            cluster_id_set: image.cluster_id.is_some(),
            ..Delta::default()
        };
        delta.changed_topics = image.topics.keys().copied().collect();
        delta.removed_topics = self
            .image
            .topics
            .values()
            .filter(|t| !image.topics.contains_key(&t.id))
            .cloned()
            .collect();
        let for_file = Arc::new(image.clone());
        let meta2 = meta.clone();
        let dir = self.dir.clone();
        crate::threads::spawn_blocking(move || -> Result<(), StorageError> {
            match dir {
                Some(dir) => write_snapshot(&dir, &meta2, &for_file),
                None => Ok(()),
            }
        })
        .await
        .map_err(|e| io_error(ErrorVerb::Write, e))??;
        self.membership = meta.last_membership.clone();
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((meta.clone(), Arc::new(data)));
        tracing::info!(
            index = meta.last_log_id.map_or(0, |l| l.index),
            "installed a metadata snapshot from the leader"
        );
        self.publish(image, delta).await;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(current.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new((*data).clone())),
        }))
    }
}
