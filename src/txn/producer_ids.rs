//! Allocates producer ids for InitProducerId (Kafka's `RPCProducerIdManager`): blocks of
//! [`BLOCK_SIZE`] ids come from the active controller (AllocateProducerIds), which records
//! each block in the metadata log, so ids are unique across the cluster and never reused
//! after a restart. A block is fetched when the current one runs out, one fetch at a time
//! (concurrent callers wait for it).
//!
//! Upgrade from a version that kept the block locally (`meta/producer_id_block`, the end of
//! the last block it reserved): the file is read once at start and its value sent with the
//! allocation requests as the lowest id the block may start at (the controller takes the
//! larger of that and its own next id: the file is this node's alone, so only it can say
//! which ids it handed out). Once a block at or above it is granted the file is renamed to
//! `producer_id_block.migrated`, so later starts no longer read it.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::meta::controller::{ControllerRequest, ControllerResponse};
use crate::meta::node::MetaNode;

/// Ids per block (the controller's `PRODUCER_ID_BLOCK_SIZE`, Kafka's 1000).
pub const BLOCK_SIZE: i64 = crate::meta::controller::PRODUCER_ID_BLOCK_SIZE;

struct Block {
    next: i64,
    end: i64,
}

/// A block's `(first id, size)`, or why none came.
pub type BlockFuture<'a> = Pin<Box<dyn Future<Output = io::Result<(i64, i64)>> + Send + 'a>>;

/// Where blocks come from.
pub trait BlockSource: Send + Sync {
    /// A new block starting at or above `at_least`, never handed out before.
    fn next_block(&self, at_least: i64) -> BlockFuture<'_>;
}

/// Blocks from the active controller (AllocateProducerIds), for this broker at its current
/// epoch (re-registration changes it).
pub struct ControllerBlocks {
    pub meta: Arc<MetaNode>,
    pub broker_id: i32,
    pub broker_epoch: Arc<AtomicI64>,
}

impl BlockSource for ControllerBlocks {
    fn next_block(&self, at_least: i64) -> BlockFuture<'_> {
        Box::pin(async move {
            let answer = self
                .meta
                .submit(ControllerRequest::AllocateProducerIds {
                    broker_id: self.broker_id,
                    broker_epoch: self.broker_epoch.load(Ordering::Relaxed),
                    at_least,
                })
                .await;
            match answer {
                Ok(ControllerResponse::ProducerIds { first, size }) => Ok((first, size)),
                Ok(other) => Err(io::Error::other(format!(
                    "unexpected AllocateProducerIds answer {other:?}"
                ))),
                Err(e) => Err(io::Error::other(format!("AllocateProducerIds: {e}"))),
            }
        })
    }
}

pub struct ProducerIdAllocator {
    block: Mutex<Block>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    source: Box<dyn BlockSource>,
    /// The lowest first id a block may have: the old `meta/producer_id_block` (0: none).
    floor: AtomicI64,
    /// That file, renamed once a block above it was granted.
    legacy_file: Mutex<Option<PathBuf>>,
    runtime: tokio::runtime::Handle,
}

/// The end of the block an earlier version reserved in `<data>/meta/producer_id_block`.
fn read_legacy(path: &std::path::Path) -> io::Result<Option<i64>> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<i64>().map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl ProducerIdAllocator {
    /// An allocator taking blocks from the controller for broker `broker_id` (its epoch read
    /// from `broker_epoch` at each request: re-registration changes it). `data_dir` of `None`:
    /// memory mode (no file of an earlier version to honour). Reads the old block file.
    pub fn new(
        meta: Arc<MetaNode>,
        broker_id: i32,
        broker_epoch: Arc<AtomicI64>,
        data_dir: Option<PathBuf>,
    ) -> io::Result<ProducerIdAllocator> {
        let source = ControllerBlocks {
            meta,
            broker_id,
            broker_epoch,
        };
        ProducerIdAllocator::with_source(Box::new(source), data_dir)
    }

    /// An allocator taking blocks from `source`. Call it inside the runtime.
    pub fn with_source(
        source: Box<dyn BlockSource>,
        data_dir: Option<PathBuf>,
    ) -> io::Result<ProducerIdAllocator> {
        let file = data_dir.map(|d| d.join("meta").join("producer_id_block"));
        let floor = match &file {
            Some(path) => read_legacy(path)?,
            None => None,
        };
        if let Some(f) = floor {
            tracing::info!(
                above = f,
                "producer ids continue above meta/producer_id_block of an earlier version"
            );
        }
        Ok(ProducerIdAllocator {
            block: Mutex::new(Block { next: 0, end: 0 }),
            fetching: tokio::sync::Mutex::new(()),
            source,
            floor: AtomicI64::new(floor.unwrap_or(0)),
            legacy_file: Mutex::new(floor.and(file)),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    fn take(&self) -> Option<i64> {
        let mut b = self.block.lock().unwrap_or_else(|p| p.into_inner());
        (b.next < b.end).then(|| {
            let id = b.next;
            b.next += 1;
            id
        })
    }

    /// A fresh producer id; fetches a block from the controller when the current one is used
    /// up (an error when the controller cannot be reached in time: retriable).
    pub async fn allocate(&self) -> io::Result<i64> {
        loop {
            if let Some(id) = self.take() {
                return Ok(id);
            }
            let _one = self.fetching.lock().await;
            if let Some(id) = self.take() {
                return Ok(id);
            }
            let (first, size) = self.fetch().await?;
            *self.block.lock().unwrap_or_else(|p| p.into_inner()) = Block {
                next: first,
                end: first + size,
            };
        }
    }

    /// [`Self::allocate`] from a blocking-pool thread (the transaction coordinator's).
    pub fn allocate_blocking(&self) -> io::Result<i64> {
        self.runtime.block_on(self.allocate())
    }

    async fn fetch(&self) -> io::Result<(i64, i64)> {
        let at_least = self.floor.load(Ordering::Relaxed);
        let (first, size) = self.source.next_block(at_least).await?;
        if first < at_least || size < 1 {
            return Err(io::Error::other(format!(
                "producer id block {first}+{size} is below {at_least}"
            )));
        }
        tracing::debug!(first, size, "producer id block from the controller");
        if at_least > 0 {
            self.floor.store(0, Ordering::Relaxed);
            let file = self
                .legacy_file
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(path) = file {
                let retired = crate::threads::spawn_blocking(move || {
                    std::fs::rename(&path, path.with_extension("migrated"))?;
                    match path.parent() {
                        Some(dir) => crate::log::fsutil::sync_dir(dir),
                        None => Ok(()),
                    }
                })
                .await;
                if let Ok(Err(e)) | Err(e) = retired.map_err(io::Error::other) {
                    // Harmless: the next start sends its value again, which is below the
                    // controller's next id by then.
                    tracing::warn!(error = %e, "cannot retire meta/producer_id_block");
                }
            }
        }
        Ok((first, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks from a counter, as the controller hands them out.
    struct Counter(Mutex<i64>);

    impl BlockSource for Counter {
        fn next_block(&self, at_least: i64) -> BlockFuture<'_> {
            let mut next = self.0.lock().unwrap();
            let first = (*next).max(at_least);
            *next = first + BLOCK_SIZE;
            Box::pin(async move { Ok((first, BLOCK_SIZE)) })
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ids_come_in_blocks_above_an_earlier_versions_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("meta")).unwrap();
        std::fs::write(dir.path().join("meta/producer_id_block"), "5000\n").unwrap();
        let source = Arc::new(Counter(Mutex::new(0)));
        struct Shared(Arc<Counter>);
        impl BlockSource for Shared {
            fn next_block(&self, at_least: i64) -> BlockFuture<'_> {
                self.0.next_block(at_least)
            }
        }
        let upgraded = ProducerIdAllocator::with_source(
            Box::new(Shared(source.clone())),
            Some(dir.path().into()),
        )
        .unwrap();
        let other = ProducerIdAllocator::with_source(Box::new(Shared(source)), None).unwrap();
        assert_eq!(upgraded.allocate().await.unwrap(), 5000);
        assert!(
            !dir.path().join("meta/producer_id_block").exists(),
            "read once"
        );
        assert!(dir.path().join("meta/producer_id_block.migrated").exists());
        assert_eq!(other.allocate().await.unwrap(), 6000);
        let mut seen = std::collections::HashSet::new();
        seen.insert(5000);
        seen.insert(6000);
        for _ in 0..1500 {
            assert!(seen.insert(upgraded.allocate().await.unwrap()));
            assert!(seen.insert(other.allocate().await.unwrap()));
        }
        // From a blocking-pool thread, as the transaction coordinator asks.
        let id = tokio::task::spawn_blocking(move || other.allocate_blocking().unwrap())
            .await
            .unwrap();
        assert!(seen.insert(id));
    }
}
