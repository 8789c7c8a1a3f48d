//! The transaction coordinators of this broker: one [`TxnCoordinator`] per
//! `__transaction_state` partition it leads (see `coordinator::partitions`), and the routing
//! of a transactional id to its coordinator: NOT_COORDINATOR when another broker coordinates
//! it, COORDINATOR_LOAD_IN_PROGRESS while its partition is loading here. The markers of every
//! coordinator go through one [`RemoteMarkers`] channel to the partitions other brokers lead.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use super::coordinator::{ProducerIdent, TxnCoordinator, TxnMetadata};
use super::markers::{Markers, RemoteMarkers};
use super::producer_ids::ProducerIdAllocator;
use crate::clock::Clock;
use crate::cluster::TopicRegistry;
use crate::coordinator::partitions::{Load, Lookup, Partitioned, Wanted};
use crate::groups::GroupCoordinators;

pub struct TxnCoordinators {
    parts: Partitioned<TxnCoordinator>,
    clock: Clock,
    remote: Arc<dyn RemoteMarkers>,
}

impl TxnCoordinators {
    /// No partitions yet: every transactional id answers NOT_COORDINATOR until
    /// [`Self::reconcile`]. `remote` carries markers to partitions other brokers lead.
    pub fn new(clock: Clock, remote: Arc<dyn RemoteMarkers>) -> TxnCoordinators {
        TxnCoordinators {
            parts: Partitioned::new(),
            clock,
            remote,
        }
    }

    /// The coordinator of `transactional_id`, if this broker has it loaded.
    pub fn for_txn(&self, transactional_id: &str) -> Result<Arc<TxnCoordinator>, ResponseError> {
        match self.parts.lookup(transactional_id) {
            Lookup::Active(c) => Ok(c),
            Lookup::Loading => Err(ResponseError::CoordinatorLoadInProgress),
            Lookup::NotHere => Err(ResponseError::NotCoordinator),
        }
    }

    /// The `__transaction_state` partition of `transactional_id` (None: no such topic yet).
    pub fn partition_of(&self, transactional_id: &str) -> Option<i32> {
        self.parts.partition_of(transactional_id)
    }

    /// Every loaded coordinator, by partition.
    pub fn active(&self) -> Vec<(i32, Arc<TxnCoordinator>)> {
        self.parts.active()
    }

    /// Follows this broker's leadership of `__transaction_state` (`partitions` in the topic,
    /// `wanted` led here): drops the coordinators that stop here (a transaction they were
    /// ending is finished by the new coordinator, which finds it prepared) and returns the
    /// loads to run ([`Self::load`], blocking).
    pub fn reconcile(&self, partitions: i32, wanted: &[Wanted]) -> Vec<Load> {
        let (loads, resigned) = self.parts.reconcile(partitions, wanted);
        for c in resigned {
            tracing::info!(
                partition = c.partition(),
                "resigned as transaction coordinator"
            );
        }
        loads
    }

    /// Loads one partition's transactional ids from its log and installs the coordinator,
    /// unless the partition changed meanwhile. Blocking (replays the log).
    pub fn load(&self, load: &Load) {
        let opened = TxnCoordinator::open_with_clock(load.log.clone(), self.clock.clone())
            .map(|c| c.with_partition(load.partition, load.epoch));
        if let Err(e) = &opened {
            tracing::error!(partition = load.partition, error = %e, "loading transaction state failed");
        }
        if let Some(c) = self.parts.loaded(load, opened) {
            tracing::debug!(
                partition = c.partition(),
                epoch = load.epoch,
                "transaction coordinator loaded"
            );
        }
    }

    fn markers<'a>(
        &'a self,
        topics: &'a TopicRegistry,
        groups: &'a GroupCoordinators,
    ) -> Markers<'a> {
        Markers {
            topics,
            groups,
            remote: &*self.remote,
        }
    }

    /// InitProducerId with a transactional id, at its coordinator. Blocking.
    pub fn init_producer_id(
        &self,
        topics: &TopicRegistry,
        groups: &GroupCoordinators,
        ids: &ProducerIdAllocator,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<ProducerIdent>,
    ) -> Result<ProducerIdent, ResponseError> {
        self.for_txn(transactional_id)?.init_producer_id(
            &self.markers(topics, groups),
            ids,
            transactional_id,
            timeout_ms,
            expected,
        )
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn, at the id's coordinator. Blocking.
    pub fn add_partitions(
        &self,
        transactional_id: &str,
        p: ProducerIdent,
        partitions: &[(String, i32)],
        group: Option<&str>,
    ) -> Result<(), ResponseError> {
        self.for_txn(transactional_id)?
            .add_partitions(transactional_id, p, partitions, group)
    }

    /// EndTxn, at the id's coordinator. Blocking (writes markers).
    pub fn end_txn(
        &self,
        topics: &TopicRegistry,
        groups: &GroupCoordinators,
        transactional_id: &str,
        p: ProducerIdent,
        commit: bool,
    ) -> Result<(), ResponseError> {
        self.for_txn(transactional_id)?.end_txn(
            &self.markers(topics, groups),
            transactional_id,
            p,
            commit,
        )
    }

    /// Whether `p` is the current producer of `transactional_id` with an ongoing transaction
    /// (TxnOffsetCommit checks it), at the id's coordinator.
    pub fn is_ongoing(
        &self,
        transactional_id: &str,
        p: ProducerIdent,
    ) -> Result<(), ResponseError> {
        self.for_txn(transactional_id)?
            .is_ongoing(transactional_id, p)
    }

    /// What this broker's coordinator knows of `transactional_id` (None: unknown, or another
    /// broker coordinates it).
    pub fn describe(&self, transactional_id: &str) -> Option<TxnMetadata> {
        self.for_txn(transactional_id)
            .ok()
            .and_then(|c| c.describe(transactional_id))
    }

    /// Every transactional id of the loaded coordinators, sorted; COORDINATOR_LOAD_IN_PROGRESS
    /// while a partition led here is loading (as Kafka's ListTransactions answers then).
    pub fn list(&self) -> Result<Vec<TxnMetadata>, ResponseError> {
        if self.parts.any_loading() {
            return Err(ResponseError::CoordinatorLoadInProgress);
        }
        let mut all: Vec<TxnMetadata> = self
            .active()
            .into_iter()
            .flat_map(|(_, c)| c.list())
            .collect();
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(all)
    }

    /// The clock of every loaded coordinator (timeouts, prepared transactions to finish, idle
    /// ids). Blocking.
    pub fn tick(&self, topics: &TopicRegistry, groups: &GroupCoordinators, expiration_ms: i64) {
        let markers = self.markers(topics, groups);
        for (_, c) in self.active() {
            c.tick(&markers, expiration_ms);
        }
    }
}
