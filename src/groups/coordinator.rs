//! The group coordinator on the coordinator runtime: the API the handlers call. Each call
//! locks the shard once, runs the state machine (`state.rs`) on the in-memory group, appends
//! the records the change calls for (replayed into the log-held state at once), recomputes the
//! group's deadline, and returns; answers for other members' waiting requests are sent after
//! the lock is released, and the caller waits for the write's [`Durability`] without it.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use super::offsets::{self, OffsetToCommit};
use super::shard::{GroupShard, Groups};
use super::state::{
    ClientInfo, Effects, Group, GroupDescription, GroupState, JoinRequest, JoinResult, Reply,
    SyncRequest, SyncResult,
};
use super::store::{CommittedOffset, OffsetsRecord};
use super::{Durability, GroupConfig, NONE};
use crate::clock::Clock;
use crate::coordinator::{Committed, Runtime, ShardGuard};
use crate::log::PartitionLog;

pub struct GroupCoordinator {
    runtime: Runtime<GroupShard>,
    config: GroupConfig,
    clock: Clock,
    /// The `__consumer_offsets` partition whose groups it coordinates.
    partition: i32,
}

/// The shard locked for a request about one group: when the request is done (the guard
/// dropped), that group's next deadline is recomputed, so the clock never misses a change.
struct OnGroup<'a> {
    guard: ShardGuard<'a, GroupShard>,
    group_id: &'a str,
}

impl OnGroup<'_> {
    fn parts(&mut self) -> (&GroupShard, &mut Groups) {
        self.guard.parts()
    }

    fn live(&mut self) -> Option<&mut Group> {
        self.guard.volatile().live.get_mut(self.group_id)
    }

    /// Appends `records` and remembers what answers reporting them wait for.
    fn append(&mut self, records: &[OffsetsRecord]) -> Durability {
        Durability::of(self.guard.append(records))
    }

    /// Stores the group's metadata when the transition asked for it; the write's durability
    /// (what the answers reporting the metadata wait for) is kept in the group.
    fn store(&mut self, fx: &Effects) -> Durability {
        if !fx.store {
            return Durability::Done;
        }
        let Some(group) = self.live() else {
            return Durability::Done;
        };
        let record = metadata(group);
        let durability = self.append(&[record]);
        if let Some(group) = self.live() {
            group.persisted = durability.clone();
        }
        durability
    }
}

impl Drop for OnGroup<'_> {
    fn drop(&mut self) {
        let (shard, groups) = self.guard.parts();
        groups.reschedule(shard, self.group_id);
    }
}

impl Durability {
    fn of(appended: io::Result<Committed>) -> Durability {
        match appended {
            Ok(c) if c.is_nothing() => Durability::Done,
            Ok(c) => Durability::Pending(c),
            Err(e) => {
                tracing::error!(error = %e, "writing to __consumer_offsets failed");
                Durability::Failed(crate::coordinator::not_committed(&e))
            }
        }
    }

    /// Blocks until the write is committed (durable by the flush policy, on every in-sync
    /// replica); else the error the client gets (see [`crate::coordinator::not_committed`]).
    /// Call it off the async runtime and with no lock held.
    pub fn wait(self) -> Result<(), ResponseError> {
        match self {
            Durability::Done => Ok(()),
            Durability::Failed(e) => Err(e),
            Durability::Pending(c) => c.wait().map_err(|e| {
                tracing::warn!(error = %e, "a write to __consumer_offsets was not committed");
                crate::coordinator::not_committed(&e)
            }),
        }
    }
}

/// The records of accepted offsets (inside `producer`'s transaction when given).
fn offset_records(
    group_id: &str,
    accepted: Vec<(String, i32, CommittedOffset)>,
    producer: Option<(i64, i16)>,
) -> Vec<OffsetsRecord> {
    accepted
        .into_iter()
        .map(|(topic, partition, o)| OffsetsRecord::Offset {
            group: group_id.to_string(),
            topic,
            partition,
            value: Some(o),
            producer,
        })
        .collect()
}

/// The record of a group's metadata as it is now.
fn metadata(group: &Group) -> OffsetsRecord {
    OffsetsRecord::Group {
        group: group.id.clone(),
        value: Some(group.record()),
    }
}

fn tombstone(group_id: &str, topic: &str, partition: i32) -> OffsetsRecord {
    OffsetsRecord::Offset {
        group: group_id.to_string(),
        topic: topic.to_string(),
        partition,
        value: None,
        producer: None,
    }
}

impl GroupCoordinator {
    /// Loads every group's offsets and metadata from the `__consumer_offsets` log.
    pub fn open(log: Arc<PartitionLog>, config: GroupConfig) -> io::Result<GroupCoordinator> {
        Self::open_with_clock(log, config, Clock::system())
    }

    /// As [`GroupCoordinator::open`], with every deadline computed from `clock`.
    pub fn open_with_clock(
        log: Arc<PartitionLog>,
        config: GroupConfig,
        clock: Clock,
    ) -> io::Result<GroupCoordinator> {
        let now = clock.now_ms();
        let runtime = Runtime::load(log, GroupShard::default(), |shard| {
            Groups::load(shard, config, now)
        })?;
        Ok(GroupCoordinator {
            runtime,
            config,
            clock,
            partition: 0,
        })
    }

    /// The same coordinator, named as the one of `__consumer_offsets` partition `partition`.
    pub fn with_partition(mut self, partition: i32) -> GroupCoordinator {
        self.partition = partition;
        self
    }

    /// The `__consumer_offsets` partition whose groups it coordinates.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The log behind the coordinator.
    pub fn log(&self) -> &Arc<PartitionLog> {
        self.runtime.log()
    }

    fn on_group<'a>(&'a self, group_id: &'a str) -> OnGroup<'a> {
        OnGroup {
            guard: self.runtime.lock(),
            group_id,
        }
    }

    /// JoinGroup. Blocking when the metadata write rolls a segment: call it off the runtime.
    pub fn join(&self, req: JoinRequest, client: ClientInfo) -> Reply<JoinResult> {
        let now = self.clock.now_ms();
        if req.group_id.is_empty() {
            return Reply::Now(JoinResult::error(
                ResponseError::InvalidGroupId,
                &req.member_id,
            ));
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return Reply::Now(JoinResult::error(
                ResponseError::InvalidSessionTimeout,
                &req.member_id,
            ));
        }
        tracing::debug!(group = %req.group_id, member = %req.member_id, instance = ?req.group_instance_id,
            "JoinGroup");
        let group_id = req.group_id.clone();
        let mut fx = Effects::default();
        let mut on = self.on_group(&group_id);
        let (_, groups) = on.parts();
        let order = groups.join_order();
        let pending_total = if req.issues_member_id() {
            groups.pending_members()
        } else {
            0
        };
        let group = groups
            .live
            .entry(group_id.clone())
            .or_insert_with(|| Group::new(&group_id, now));
        let mut reply = group.join(
            req,
            client,
            now,
            &self.config,
            order,
            pending_total,
            &mut fx,
        );
        let stored = on.store(&fx);
        drop(on);
        if let Reply::Now(r) = &mut reply {
            if fx.store && r.error == NONE {
                r.durability = stored.clone();
            }
        }
        fx.deliver(&stored);
        reply
    }

    /// SyncGroup. Blocking when the metadata write rolls a segment: call it off the runtime.
    pub fn sync(&self, req: SyncRequest<'_>) -> Reply<SyncResult> {
        let now = self.clock.now_ms();
        let group_id = req.group_id;
        let mut fx = Effects::default();
        let mut on = self.on_group(group_id);
        let Some(group) = on.live() else {
            return Reply::Now(SyncResult::error(ResponseError::UnknownMemberId));
        };
        let reply = group.sync(req, now, &mut fx);
        let stored = on.store(&fx);
        drop(on);
        fx.deliver(&stored);
        reply
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> i16 {
        let now = self.clock.now_ms();
        let mut on = self.on_group(group_id);
        match on.live() {
            Some(group) => group.heartbeat(generation, member_id, instance_id, now),
            None => ResponseError::UnknownMemberId.code(),
        }
    }

    /// Removes members; `(member id, instance id)` per member. Returns an error per member.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<i16>, ResponseError> {
        let now = self.clock.now_ms();
        let mut fx = Effects::default();
        let mut on = self.on_group(group_id);
        let Some(group) = on.live() else {
            return Err(ResponseError::UnknownMemberId);
        };
        let results = group.leave(members, now, &self.config, &mut fx);
        let stored = on.store(&fx);
        drop(on);
        fx.deliver(&stored);
        Ok(results)
    }

    /// The clock: the groups whose deadline has come (session expiry, rebalance and sync
    /// deadlines, handed-out member ids lapsing, offset retention, forgetting an empty group),
    /// and only those. Blocking (it may write): call it off the runtime.
    pub fn tick(&self) {
        let now = self.clock.now_ms();
        let mut guard = self.runtime.lock();
        let (shard, groups) = guard.parts();
        let due = groups.pop_due(now);
        let mut fx = Effects::default();
        let mut stored: Vec<String> = Vec::new();
        let mut records: Vec<OffsetsRecord> = Vec::new();
        for id in &due {
            let retention = {
                let Some(group) = groups.live.get_mut(id) else {
                    continue;
                };
                let mut one = Effects::default();
                group.expire(now, &self.config, &mut one);
                if one.store {
                    records.push(metadata(group));
                    stored.push(id.clone());
                }
                fx.absorb(one);
                groups.live.get(id).and_then(|g| groups.retention(g))
            };
            let expired = retention
                .zip(shard.offsets().of(id))
                .map(|(r, offsets)| r.expired(offsets, now))
                .unwrap_or_default();
            if !expired.is_empty() {
                tracing::info!(group = %id, partitions = expired.len(), "expired committed offsets");
                records.extend(expired.iter().map(|(t, p)| tombstone(id, t, *p)));
            }
        }
        let durability = Durability::of(guard.append(&records));
        let (shard, groups) = guard.parts();
        for id in &stored {
            if let Some(g) = groups.live.get_mut(id) {
                g.persisted = durability.clone();
            }
        }
        // Forget groups that hold nothing; the others get their next deadline.
        for id in &due {
            if groups.holds_nothing(shard, id) {
                groups.live.remove(id);
            } else {
                groups.reschedule(shard, id);
            }
        }
        drop(guard);
        fx.deliver(&durability);
    }

    /// Validates an offset commit against the group and writes the offsets. Returns per
    /// partition errors (in order) and what the answer waits for. Blocking (the append may
    /// roll a segment): call it off the runtime.
    pub fn commit_offsets(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<(Vec<i16>, Durability), ResponseError> {
        let now = self.clock.now_ms();
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let mut on = self.on_group(group_id);
        let (_, groups) = on.parts();
        let group = match groups.live.get_mut(group_id) {
            Some(g) => g,
            None if generation < 0 => groups
                .live
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, now)),
            None => return Err(ResponseError::IllegalGeneration),
        };
        group.check_commit(generation, member_id, instance_id, now)?;
        let (errors, accepted) = offsets::screen(offsets);
        match on.guard.append(&offset_records(group_id, accepted, None)) {
            Ok(c) => Ok((errors, Durability::of(Ok(c)))),
            Err(e) => {
                tracing::error!(error = %e, "writing offsets to __consumer_offsets failed");
                let n = errors.len();
                Ok((
                    vec![ResponseError::KafkaStorageError.code(); n],
                    Durability::Done,
                ))
            }
        }
    }

    /// TxnOffsetCommit: offsets that take effect when the producer's transaction commits.
    /// Written to `__consumer_offsets` as a transactional batch (the transaction coordinator
    /// has the marker written there too, AddOffsetsToTxn having added that partition).
    pub fn commit_txn_offsets(
        &self,
        group_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        member: Option<(i32, &str, Option<&str>)>,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<(Vec<i16>, Durability), ResponseError> {
        let now = self.clock.now_ms();
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let mut on = self.on_group(group_id);
        let (_, groups) = on.parts();
        let group = groups
            .live
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, now));
        group.check_txn_commit(member)?;
        let (errors, accepted) = offsets::screen(offsets);
        let records = offset_records(group_id, accepted, Some((producer_id, producer_epoch)));
        let committed = on
            .guard
            .append(&records)
            .map_err(|_| ResponseError::KafkaStorageError)?;
        Ok((errors, Durability::of(Ok(committed))))
    }

    /// Writes `producer_id`'s transaction marker to `__consumer_offsets`: its pending offsets
    /// apply (commit) or are dropped. Blocking (the append, then the wait for durability with
    /// no lock held).
    pub fn write_txn_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> io::Result<()> {
        let now = self.clock.now_ms();
        let mut guard = self.runtime.lock();
        let touched = guard.shard().offsets().pending_groups(producer_id);
        let committed = guard.append(&[OffsetsRecord::Marker {
            producer_id,
            producer_epoch,
            commit,
        }])?;
        let (shard, groups) = guard.parts();
        for id in &touched {
            if shard.holds(id) {
                // A group deleted while the transaction was open gets its offsets back, as a
                // reload of the log would have it.
                groups
                    .live
                    .entry(id.clone())
                    .or_insert_with(|| Group::new(id, now));
            }
            groups.reschedule(shard, id);
        }
        drop(guard);
        committed.wait()
    }

    /// This broker no longer coordinates this partition's groups: every waiting JoinGroup
    /// and SyncGroup is answered NOT_COORDINATOR. The coordinator gets no more requests (the
    /// broker dropped it from its routing) and its timer no more ticks.
    pub fn resign(&self) {
        let mut fx = Effects::default();
        {
            let mut guard = self.runtime.lock();
            for g in guard.volatile().live.values_mut() {
                g.resign(&mut fx);
            }
        }
        fx.deliver(&Durability::Done);
    }

    /// The partitions for which a group has transactional offsets not yet committed or
    /// aborted (OffsetFetch `require_stable`, KIP-447).
    pub fn pending_txn_partitions(&self, group_id: &str) -> HashSet<(String, i32)> {
        self.runtime
            .read(|s| s.offsets().pending_partitions(group_id))
    }

    /// Committed offsets of a group: all of them (`None`) or the ones asked for.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Option<CommittedOffset>)> {
        self.runtime.read(|s| {
            let offsets = s.offsets().of(group_id);
            match partitions {
                Some(ps) => ps
                    .iter()
                    .map(|(t, p)| {
                        let o = offsets.and_then(|o| o.get(&(t.clone(), *p)).cloned());
                        (t.clone(), *p, o)
                    })
                    .collect(),
                None => {
                    let mut all: Vec<_> = offsets
                        .into_iter()
                        .flatten()
                        .map(|((t, p), o)| (t.clone(), *p, Some(o.clone())))
                        .collect();
                    all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                    all
                }
            }
        })
    }

    /// (group id, protocol type, state) of every group.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let mut guard = self.runtime.lock();
        let mut out: Vec<_> = guard
            .volatile()
            .live
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let mut guard = self.runtime.lock();
        guard.volatile().live.get(group_id).map(Group::describe)
    }

    /// DeleteGroups: only empty groups; their offsets go too. The answer waits for the
    /// tombstones' [`Durability`]. Blocking (the append may roll a segment).
    pub fn delete_group(&self, group_id: &str) -> (i16, Durability) {
        let mut on = self.on_group(group_id);
        let (shard, groups) = on.parts();
        let Some(g) = groups.live.get(group_id) else {
            return (ResponseError::GroupIdNotFound.code(), Durability::Done);
        };
        if !g.deletable() {
            return (ResponseError::NonEmptyGroup.code(), Durability::Done);
        }
        let mut records: Vec<OffsetsRecord> = shard
            .offsets()
            .of(group_id)
            .into_iter()
            .flat_map(|o| o.keys())
            .map(|(t, p)| tombstone(group_id, t, *p))
            .collect();
        records.push(OffsetsRecord::Group {
            group: group_id.to_string(),
            value: None,
        });
        let durability = on.append(&records);
        if !matches!(durability, Durability::Failed(_)) {
            on.guard.volatile().live.remove(group_id);
        }
        (NONE, durability)
    }

    /// OffsetDelete: a group's offsets for some partitions, unless the group is actively
    /// consuming that topic. Group-level error, or per-partition errors with the tombstones'
    /// [`Durability`] (the answer waits for it). Blocking (the append may roll a segment).
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<(Vec<i16>, Durability), ResponseError> {
        let mut on = self.on_group(group_id);
        let (shard, groups) = on.parts();
        let Some(g) = groups.live.get(group_id) else {
            return Err(ResponseError::GroupIdNotFound);
        };
        if g.state == GroupState::Dead {
            return Err(ResponseError::GroupIdNotFound);
        }
        let subscribed = g.subscribed_topics();
        let committed = shard.offsets().of(group_id);
        let mut records = Vec::new();
        let results = partitions
            .iter()
            .map(|(t, p)| {
                if subscribed.contains(t) {
                    ResponseError::GroupSubscribedToTopic.code()
                } else {
                    if committed.is_some_and(|o| o.contains_key(&(t.clone(), *p))) {
                        records.push(tombstone(group_id, t, *p));
                    }
                    NONE
                }
            })
            .collect();
        Ok((results, on.append(&records)))
    }
}

/// One group as tests compare it across a reload: id, state, generation, protocol type,
/// protocol, leader, (member id, instance id, assignment) per member, committed offsets,
/// partitions with pending transactional offsets.
#[cfg(test)]
pub(super) type GroupSnapshot = (
    String,
    GroupState,
    i32,
    Option<String>,
    Option<String>,
    Option<String>,
    Vec<(String, Option<String>, bytes::Bytes)>,
    Vec<(String, i32, Option<CommittedOffset>)>,
    Vec<(String, i32)>,
);

#[cfg(test)]
impl GroupCoordinator {
    /// How many groups the clock has a deadline for.
    pub(super) fn scheduled(&self) -> usize {
        self.runtime.lock().volatile().scheduled()
    }

    /// Every group's observable state, sorted.
    pub(super) fn snapshot(&self) -> Vec<GroupSnapshot> {
        let mut ids: Vec<String> = self.list().into_iter().map(|(id, _, _)| id).collect();
        ids.sort();
        ids.into_iter()
            .map(|id| {
                let (state, generation, protocol_type, protocol, leader, members) = {
                    let mut guard = self.runtime.lock();
                    let g = &guard.volatile().live[&id];
                    let members = g
                        .members
                        .values()
                        .map(|m| (m.id.clone(), m.instance_id.clone(), m.assignment.clone()))
                        .collect();
                    (
                        g.state,
                        g.generation,
                        g.protocol_type.clone(),
                        g.protocol.clone(),
                        g.leader.clone(),
                        members,
                    )
                };
                let mut pending: Vec<(String, i32)> =
                    self.pending_txn_partitions(&id).into_iter().collect();
                pending.sort();
                let offsets = self.fetch_offsets(&id, None);
                (
                    id,
                    state,
                    generation,
                    protocol_type,
                    protocol,
                    leader,
                    members,
                    offsets,
                    pending,
                )
            })
            .collect()
    }
}
