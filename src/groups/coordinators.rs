//! The group coordinators of this broker: one [`GroupCoordinator`] per `__consumer_offsets`
//! partition it leads (see `coordinator::partitions`), and the routing of a group id to its
//! coordinator: NOT_COORDINATOR when another broker coordinates the group,
//! COORDINATOR_LOAD_IN_PROGRESS while its partition is loading here.

use std::io;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use super::{GroupConfig, GroupCoordinator, GroupState};
use crate::clock::Clock;
use crate::coordinator::partitions::{Load, Lookup, Partitioned, Wanted};

pub struct GroupCoordinators {
    parts: Partitioned<GroupCoordinator>,
    config: GroupConfig,
    clock: Clock,
}

/// A routing failure as Kafka answers it.
fn routing_error<C>(lookup: &Lookup<C>) -> ResponseError {
    match lookup {
        Lookup::Loading => ResponseError::CoordinatorLoadInProgress,
        _ => ResponseError::NotCoordinator,
    }
}

impl GroupCoordinators {
    /// No partitions yet: every group answers NOT_COORDINATOR until [`Self::reconcile`].
    pub fn new(config: GroupConfig, clock: Clock) -> GroupCoordinators {
        GroupCoordinators {
            parts: Partitioned::new(),
            config,
            clock,
        }
    }

    /// The coordinator of `group_id`, if this broker has it loaded.
    pub fn for_group(&self, group_id: &str) -> Result<Arc<GroupCoordinator>, ResponseError> {
        match self.parts.lookup(group_id) {
            Lookup::Active(c) => Ok(c),
            other => Err(routing_error(&other)),
        }
    }

    /// The coordinator of `__consumer_offsets` partition `partition`.
    pub fn at(&self, partition: i32) -> Lookup<GroupCoordinator> {
        self.parts.at(partition)
    }

    /// The `__consumer_offsets` partition of `group_id` (None: the topic does not exist yet).
    pub fn partition_of(&self, group_id: &str) -> Option<i32> {
        self.parts.partition_of(group_id)
    }

    /// Every loaded coordinator, by partition.
    pub fn active(&self) -> Vec<(i32, Arc<GroupCoordinator>)> {
        self.parts.active()
    }

    /// Whether a partition led here is still loading.
    pub fn any_loading(&self) -> bool {
        self.parts.any_loading()
    }

    /// Follows this broker's leadership of `__consumer_offsets` (`partitions` in the topic,
    /// `wanted` led here): resigns the coordinators that stop here and returns the loads to
    /// run ([`Self::load`], blocking).
    pub fn reconcile(&self, partitions: i32, wanted: &[Wanted]) -> Vec<Load> {
        let (loads, resigned) = self.parts.reconcile(partitions, wanted);
        for c in resigned {
            c.resign();
            tracing::info!(partition = c.partition(), "resigned as group coordinator");
        }
        loads
    }

    /// Loads one partition's groups from its log and installs the coordinator, unless the
    /// partition changed meanwhile. Blocking (replays the log).
    pub fn load(&self, load: &Load) {
        let started = std::time::Instant::now();
        let opened =
            GroupCoordinator::open_with_clock(load.log.clone(), self.config, self.clock.clone())
                .map(|c| c.with_partition(load.partition));
        if let Err(e) = &opened {
            tracing::error!(partition = load.partition, error = %e, "loading consumer groups failed");
        }
        let groups = opened.as_ref().map_or(0, |c| c.list().len());
        if let Some(c) = self.parts.loaded(load, opened) {
            tracing::debug!(
                partition = c.partition(),
                epoch = load.epoch,
                groups,
                took_ms = started.elapsed().as_millis() as u64,
                "group coordinator loaded"
            );
        }
    }

    /// The clock of every loaded coordinator. Blocking (it may write).
    pub fn tick(&self) {
        for (_, c) in self.active() {
            c.tick();
        }
    }

    /// (group id, protocol type, state) of every group of the loaded coordinators, and
    /// COORDINATOR_LOAD_IN_PROGRESS when a partition led here is still loading (as Kafka's
    /// ListGroups answers while it loads).
    pub fn list(&self) -> (Vec<(String, String, GroupState)>, Option<ResponseError>) {
        let mut all: Vec<_> = self
            .active()
            .into_iter()
            .flat_map(|(_, c)| c.list())
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let error = self
            .any_loading()
            .then_some(ResponseError::CoordinatorLoadInProgress);
        (all, error)
    }

    /// Writes a transaction's marker on `__consumer_offsets` partition `partition` through
    /// its coordinator (the offsets apply or are dropped). Blocking.
    pub fn write_txn_marker(
        &self,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<io::Result<()>, ResponseError> {
        match self.at(partition) {
            Lookup::Active(c) => Ok(c.write_txn_marker(producer_id, producer_epoch, commit)),
            other => Err(routing_error(&other)),
        }
    }
}
