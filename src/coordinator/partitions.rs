//! The coordinators of one internal topic on this broker, one per partition it leads (Kafka's
//! `CoordinatorRuntime` keeps one shard per `__consumer_offsets` / `__transaction_state`
//! partition the same way): which partitions are loaded, which are loading, and where a key
//! (group id, transactional id) goes.
//!
//! The broker tells [`Partitioned::reconcile`] which partitions it leads now (after every
//! metadata change); the answer names the loads to start (a replay of the partition's log,
//! blocking I/O: the caller runs them on the blocking pool and hands each result to
//! [`Partitioned::loaded`]) and the coordinators to resign (their partition moved away, was
//! deleted, or got a new leader epoch). A load whose partition changed again meanwhile is
//! discarded. Lookups answer [`Lookup::Loading`] until a load is installed.
//!
//! Routing is Kafka's: a key belongs to partition `abs(javaHashCode(key)) % partitions`
//! ([`partition_for`]), `partitions` being the topic's partition count in the metadata image
//! (never assumed: a topic created by an earlier version with one partition keeps working).
//!
//! Knows nothing of the metadata image or the network: the log is its only dependency.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, RwLock};

use crate::log::PartitionLog;

/// Java's `String.hashCode()`: `h = 31 * h + c` over the UTF-16 code units, wrapping.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The partition of an internal topic with `partitions` partitions that `key` belongs to:
/// Kafka's `Utils.abs(key.hashCode) % partitions` (`Utils.abs(Integer.MIN_VALUE)` is 0).
/// `None` when the topic has no partitions (it does not exist yet).
pub fn partition_for(key: &str, partitions: i32) -> Option<i32> {
    if partitions <= 0 {
        return None;
    }
    let h = java_string_hash(key);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    Some(abs % partitions)
}

/// A partition this broker leads now, as the broker sees it.
#[derive(Clone)]
pub struct Wanted {
    pub partition: i32,
    /// The partition's leader epoch (a coordinator is reloaded when it changes).
    pub epoch: i32,
    pub log: Arc<PartitionLog>,
}

/// A load to run: replay `log` into a coordinator, then [`Partitioned::loaded`].
pub struct Load {
    pub partition: i32,
    pub epoch: i32,
    pub log: Arc<PartitionLog>,
    token: u64,
}

/// Where a key's coordinator is.
pub enum Lookup<C> {
    /// Loaded here.
    Active(Arc<C>),
    /// Its partition is led here but still loading (COORDINATOR_LOAD_IN_PROGRESS).
    Loading,
    /// Not coordinated by this broker (NOT_COORDINATOR), or the topic does not exist.
    NotHere,
}

enum Slot<C> {
    Loading {
        epoch: i32,
        log: Arc<PartitionLog>,
        token: u64,
    },
    Active {
        epoch: i32,
        log: Arc<PartitionLog>,
        coordinator: Arc<C>,
    },
}

impl<C> Slot<C> {
    fn is(&self, w: &Wanted) -> bool {
        let (epoch, log) = match self {
            Slot::Loading { epoch, log, .. } | Slot::Active { epoch, log, .. } => (epoch, log),
        };
        *epoch == w.epoch && Arc::ptr_eq(log, &w.log)
    }
}

struct Inner<C> {
    slots: BTreeMap<i32, Slot<C>>,
    /// The topic's partition count in the image (0: no such topic yet).
    partitions: i32,
    next_token: u64,
}

/// The coordinators of one internal topic's partitions led here.
pub struct Partitioned<C> {
    inner: RwLock<Inner<C>>,
}

impl<C> Default for Partitioned<C> {
    fn default() -> Self {
        Partitioned {
            inner: RwLock::new(Inner {
                slots: BTreeMap::new(),
                partitions: 0,
                next_token: 0,
            }),
        }
    }
}

impl<C> Partitioned<C> {
    pub fn new() -> Partitioned<C> {
        Partitioned::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner<C>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner<C>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the partitions in line with what this broker leads now: `partitions` is the
    /// topic's partition count (0 when it does not exist), `wanted` the partitions led here.
    /// Returns the loads to run and the coordinators that stop here (to resign: answer what
    /// waits on them; they get no more requests).
    pub fn reconcile(&self, partitions: i32, wanted: &[Wanted]) -> (Vec<Load>, Vec<Arc<C>>) {
        let mut inner = self.write();
        inner.partitions = partitions.max(0);
        let mut resigned = Vec::new();
        let keep: BTreeMap<i32, &Wanted> = wanted.iter().map(|w| (w.partition, w)).collect();
        let stale: Vec<i32> = inner
            .slots
            .iter()
            .filter(|(p, slot)| keep.get(p).is_none_or(|w| !slot.is(w)))
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            if let Some(Slot::Active { coordinator, .. }) = inner.slots.remove(&p) {
                resigned.push(coordinator);
            }
        }
        let mut loads = Vec::new();
        for w in wanted {
            if inner.slots.contains_key(&w.partition) {
                continue;
            }
            let token = inner.next_token;
            inner.next_token += 1;
            inner.slots.insert(
                w.partition,
                Slot::Loading {
                    epoch: w.epoch,
                    log: w.log.clone(),
                    token,
                },
            );
            loads.push(Load {
                partition: w.partition,
                epoch: w.epoch,
                log: w.log.clone(),
                token,
            });
        }
        (loads, resigned)
    }

    /// Installs a finished load, if its partition is still wanted as it was when the load
    /// started. Returns the coordinator when it was installed; a failed load leaves the
    /// partition unserved here (NOT_COORDINATOR) until the next change retries it.
    pub fn loaded(&self, load: &Load, result: io::Result<C>) -> Option<Arc<C>> {
        let mut inner = self.write();
        let current = matches!(inner.slots.get(&load.partition),
            Some(Slot::Loading { token, .. }) if *token == load.token);
        if !current {
            return None;
        }
        match result {
            Ok(c) => {
                let coordinator = Arc::new(c);
                inner.slots.insert(
                    load.partition,
                    Slot::Active {
                        epoch: load.epoch,
                        log: load.log.clone(),
                        coordinator: coordinator.clone(),
                    },
                );
                Some(coordinator)
            }
            Err(_) => {
                inner.slots.remove(&load.partition);
                None
            }
        }
    }

    /// The coordinator of `key`.
    pub fn lookup(&self, key: &str) -> Lookup<C> {
        let inner = self.read();
        match partition_for(key, inner.partitions) {
            Some(p) => Self::slot(&inner, p),
            None => Lookup::NotHere,
        }
    }

    /// The coordinator of partition `partition`.
    pub fn at(&self, partition: i32) -> Lookup<C> {
        Self::slot(&self.read(), partition)
    }

    fn slot(inner: &Inner<C>, partition: i32) -> Lookup<C> {
        match inner.slots.get(&partition) {
            Some(Slot::Active { coordinator, .. }) => Lookup::Active(coordinator.clone()),
            Some(Slot::Loading { .. }) => Lookup::Loading,
            None => Lookup::NotHere,
        }
    }

    /// The partition `key` belongs to (None: the topic does not exist yet).
    pub fn partition_of(&self, key: &str) -> Option<i32> {
        partition_for(key, self.read().partitions)
    }

    /// The topic's partition count as last reconciled.
    pub fn partition_count(&self) -> i32 {
        self.read().partitions
    }

    /// Every loaded coordinator, by partition.
    pub fn active(&self) -> Vec<(i32, Arc<C>)> {
        self.read()
            .slots
            .iter()
            .filter_map(|(p, s)| match s {
                Slot::Active { coordinator, .. } => Some((*p, coordinator.clone())),
                Slot::Loading { .. } => None,
            })
            .collect()
    }

    /// Whether some partition led here is still loading.
    pub fn any_loading(&self) -> bool {
        self.read()
            .slots
            .values()
            .any(|s| matches!(s, Slot::Loading { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogConfig;

    fn log() -> Arc<PartitionLog> {
        Arc::new(PartitionLog::in_memory(LogConfig::default()))
    }

    /// Values computed by Java's algorithm by hand (and checked against `"".hashCode()`,
    /// `"a".hashCode()` = 97, `"ab".hashCode()` = 97 * 31 + 98 = 3105).
    #[test]
    fn java_hash_and_kafka_partition_choice() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("ab"), 3105);
        // Overflow wraps as Java's int arithmetic: "polygenelubricants".hashCode() is
        // Integer.MIN_VALUE, whose Utils.abs is 0.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("polygenelubricants", 50), Some(0));
        // A non-BMP character counts as its two UTF-16 code units (0xD83D, 0xDE00).
        assert_eq!(java_string_hash("😀"), 0xD83D * 31 + 0xDE00);
        // A negative hash: "my-group".hashCode() = -1_906_497_762, abs % 50 = 12.
        assert_eq!(java_string_hash("my-group"), -1_906_497_762);
        assert_eq!(partition_for("my-group", 50), Some(12));
        assert_eq!(partition_for("my-group", 1), Some(0));
        assert_eq!(partition_for("x", 0), None);
    }

    #[test]
    fn reconcile_loads_resigns_and_discards_stale_loads() {
        let parts: Partitioned<&'static str> = Partitioned::new();
        let (l0, l1) = (log(), log());
        let want = |p, epoch, log: &Arc<PartitionLog>| Wanted {
            partition: p,
            epoch,
            log: log.clone(),
        };
        let (loads, resigned) = parts.reconcile(2, &[want(0, 0, &l0), want(1, 0, &l1)]);
        assert_eq!(loads.len(), 2);
        assert!(resigned.is_empty());
        assert!(matches!(parts.at(0), Lookup::Loading));
        assert!(parts.any_loading());
        assert!(parts.loaded(&loads[0], Ok("p0")).is_some());
        assert!(matches!(parts.at(0), Lookup::Active(c) if *c == "p0"));
        // Nothing changed: nothing to do.
        let (again, resigned) = parts.reconcile(2, &[want(0, 0, &l0), want(1, 0, &l1)]);
        assert!(again.is_empty() && resigned.is_empty());
        // Partition 1 moves away before its load finishes; partition 0 gets a new epoch.
        let (loads2, resigned) = parts.reconcile(2, &[want(0, 1, &l0)]);
        assert_eq!(resigned.len(), 1, "the epoch-0 coordinator of partition 0");
        assert_eq!(loads2.len(), 1);
        assert!(
            parts.loaded(&loads[1], Ok("p1")).is_none(),
            "stale load dropped"
        );
        assert!(matches!(parts.at(1), Lookup::NotHere));
        // A failed load leaves the partition unserved.
        assert!(parts
            .loaded(&loads2[0], Err(io::Error::other("bad log")))
            .is_none());
        assert!(matches!(parts.at(0), Lookup::NotHere));
        assert!(!parts.any_loading());
        // The topic gone: routing has nowhere to go.
        let (_, _) = parts.reconcile(0, &[]);
        assert!(matches!(parts.lookup("g"), Lookup::NotHere));
        assert_eq!(parts.partition_of("g"), None);
    }
}
