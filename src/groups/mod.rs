//! The group coordinator (classic consumer-group protocol, as Kafka's `GroupCoordinator`):
//! membership, rebalances, and committed offsets.
//!
//! States: Empty -> PreparingRebalance -> CompletingRebalance -> Stable, and back to
//! PreparingRebalance when a member joins, leaves, changes its protocols or misses its session
//! timeout; Dead once deleted. A rebalance completes when every known member has rejoined (or
//! the rebalance timeout removes the ones that did not), after `group_initial_rebalance_delay_ms`
//! for a group that was empty (default 0: a lone consumer is served at once). The leader gets
//! the members' metadata, computes the assignment and sends it in SyncGroup; every member gets
//! its own. Static members (KIP-345, `group.instance.id`) keep their assignment across a
//! restart within the session timeout: a rejoin with a known instance id replaces the old
//! member id (which is fenced) without a rebalance when nothing else changed.
//!
//! Offsets and group metadata are written to `__consumer_offsets` (see `store`) and replayed
//! on start. The coordinator holds one mutex; no lock is held across an `.await` (JoinGroup and
//! SyncGroup wait on oneshot channels completed by other requests or by the timer).

pub mod store;
pub mod timer;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Buf, Bytes};
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::log::PartitionLog;
use store::Change;
pub use store::{CommittedOffset, GroupRecord, MemberRecord};

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Largest offset-commit metadata string (Kafka's `offset.metadata.max.bytes`).
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;

/// Member ids handed out with MEMBER_ID_REQUIRED and not yet used, per group at most: past it
/// a new member gets GROUP_MAX_SIZE_REACHED (each entry lives up to its session timeout).
pub const PENDING_MEMBERS_PER_GROUP_MAX: usize = 1_000;
/// The same, over all groups of the coordinator.
pub const PENDING_MEMBERS_MAX: usize = 100_000;

/// What an answer built on a write to `__consumer_offsets` must wait for: nothing, an fsync
/// up to an offset (the flush policy wants the write durable before it is acknowledged), or
/// nothing at all because the write failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    #[default]
    Done,
    SyncTo(i64),
    Failed,
}

/// Coordinator settings (from the broker config).
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub offsets_retention_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Who is asking (for member ids and DescribeGroups).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: String,
    pub client_host: String,
}

/// A JoinGroup request, decoded.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: an unknown member first gets MEMBER_ID_REQUIRED with its new id.
    pub require_known_member_id: bool,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// The leader's view: (member id, instance id, metadata for the chosen protocol).
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// The group metadata this answer reports, written to `__consumer_offsets`: wait for it
    /// before answering.
    pub durability: Durability,
}

impl JoinResult {
    fn error(e: ResponseError, member_id: &str) -> JoinResult {
        JoinResult {
            error: e.code(),
            generation_id: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

/// A SyncGroup request, decoded.
pub struct SyncRequest<'a> {
    pub group_id: &'a str,
    pub generation: i32,
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
    pub protocol_type: Option<&'a str>,
    pub protocol_name: Option<&'a str>,
    /// The leader's assignment: (member id, assignment).
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
    /// The group metadata (with this assignment) written to `__consumer_offsets`: wait for it
    /// before answering.
    pub durability: Durability,
}

impl SyncResult {
    fn error(e: ResponseError) -> SyncResult {
        SyncResult {
            error: e.code(),
            ..Default::default()
        }
    }
}

/// Either an answer now or one to wait for.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client: ClientInfo,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat_ms: i64,
    /// Rejoined in the current rebalance.
    joined: bool,
    join_order: u64,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

struct Group {
    id: String,
    state: GroupState,
    protocol_type: Option<String>,
    protocol: Option<String>,
    generation: i32,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id -> member id
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with when they expire.
    pending: HashMap<String, i64>,
    /// The last write of this group's metadata (answers that report it wait for it).
    persisted: Durability,
    rebalance_deadline_ms: i64,
    initial_delay_until_ms: i64,
    sync_deadline_ms: i64,
    empty_since_ms: i64,
    offsets: HashMap<(String, i32), CommittedOffset>,
    /// Offsets committed inside transactions, by producer id, until the marker.
    pending_txn: HashMap<i64, HashMap<(String, i32), CommittedOffset>>,
}

impl Group {
    /// Nothing to keep: no members, no member id handed out and awaiting its join
    /// (MEMBER_ID_REQUIRED), no offsets (committed or pending in a transaction).
    fn holds_nothing(&self) -> bool {
        self.state == GroupState::Empty
            && self.offsets.is_empty()
            && self.members.is_empty()
            && self.pending.is_empty()
            && self.pending_txn.is_empty()
            && self.protocol_type.is_none()
    }

    /// The earliest moment the clock must look at this group (what [`GroupCoordinator::tick`]
    /// acts on), `None` when nothing will happen to it without a request.
    fn next_deadline(&self, config: &GroupConfig) -> Option<i64> {
        if self.holds_nothing() {
            return Some(i64::MIN);
        }
        let mut at = i64::MAX;
        for expires in self.pending.values() {
            // A handed-out member id lapses once the clock reaches its expiry.
            at = at.min(*expires);
        }
        for m in self.members.values() {
            if m.join_waiter.is_none() && m.sync_waiter.is_none() {
                // Expired once the time since the last heartbeat exceeds the session timeout.
                at = at.min(m.last_heartbeat_ms + m.session_timeout_ms as i64 + 1);
            }
        }
        match self.state {
            GroupState::PreparingRebalance => {
                at = at
                    .min(self.rebalance_deadline_ms)
                    .min(self.initial_delay_until_ms);
            }
            GroupState::CompletingRebalance => at = at.min(self.sync_deadline_ms),
            GroupState::Empty if config.offsets_retention_ms >= 0 => {
                let simple = self.protocol_type.is_none();
                for o in self.offsets.values() {
                    let since = if simple {
                        o.commit_timestamp_ms
                    } else {
                        self.empty_since_ms
                    };
                    at = at.min(
                        since
                            .saturating_add(config.offsets_retention_ms)
                            .saturating_add(1),
                    );
                }
            }
            _ => {}
        }
        (at != i64::MAX).then_some(at)
    }

    fn new(id: &str, now: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending: HashMap::new(),
            persisted: Durability::Done,
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: 0,
            sync_deadline_ms: 0,
            empty_since_ms: now,
            offsets: HashMap::new(),
            pending_txn: HashMap::new(),
        }
    }

    fn record(&self) -> GroupRecord {
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if self.state == GroupState::Stable {
            let mut ms: Vec<&Member> = self.members.values().collect();
            ms.sort_by_key(|m| m.join_order);
            ms.into_iter()
                .map(|m| MemberRecord {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client.client_id.clone(),
                    client_host: m.client.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect()
        } else {
            Vec::new()
        };
        GroupRecord {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members,
        }
    }

    /// Protocols every member supports, in the order of the votes they get.
    fn select_protocol(&self) -> Option<String> {
        let mut candidates: Option<Vec<&str>> = None;
        for m in self.members.values() {
            let names: Vec<&str> = m.protocols.iter().map(|(n, _)| n.as_str()).collect();
            candidates = Some(match candidates {
                None => names,
                Some(c) => c.into_iter().filter(|n| names.contains(n)).collect(),
            });
        }
        let candidates = candidates?;
        let mut votes: Vec<(&str, usize)> = candidates.iter().map(|c| (*c, 0)).collect();
        for m in self.members.values() {
            if let Some((name, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n.as_str()))
            {
                if let Some(v) = votes.iter_mut().find(|(c, _)| c == name) {
                    v.1 += 1;
                }
            }
        }
        // Most votes; ties go to the earlier candidate (the first member's preference order).
        let best = votes.iter().map(|(_, n)| *n).max()?;
        votes
            .into_iter()
            .find(|(_, n)| *n == best)
            .map(|(c, _)| c.to_string())
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        // At least one protocol every current member supports.
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms as i64)
            .max()
            .unwrap_or(0)
    }
}

pub struct GroupCoordinator {
    groups: Mutex<HashMap<String, Group>>,
    /// Each group's next deadline (lock order: `groups`, then this).
    deadlines: Mutex<timer::Deadlines>,
    log: Arc<PartitionLog>,
    config: GroupConfig,
    next_join_order: Mutex<u64>,
    clock: Clock,
}

/// The groups, locked for a request about one group: when the request is done (the guard
/// dropped), that group's next deadline is recomputed, so the clock never misses a change.
struct GroupsGuard<'a> {
    groups: MutexGuard<'a, HashMap<String, Group>>,
    coordinator: &'a GroupCoordinator,
    group_id: String,
}

impl Deref for GroupsGuard<'_> {
    type Target = HashMap<String, Group>;
    fn deref(&self) -> &Self::Target {
        &self.groups
    }
}

impl DerefMut for GroupsGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.groups
    }
}

impl Drop for GroupsGuard<'_> {
    fn drop(&mut self) {
        let at = self
            .groups
            .get(&self.group_id)
            .and_then(|g| g.next_deadline(&self.coordinator.config));
        self.coordinator
            .deadlines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set(&self.group_id, at);
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
        let mut replayed = store::replay(&log)?;
        // Transactional commits still open at the last shutdown: keep them pending (their
        // transaction's marker will come from the transaction coordinator).
        let mut pending: Vec<(i64, store::Replayed)> = Vec::new();
        for (pid, records) in std::mem::take(&mut replayed.pending) {
            let mut one = store::Replayed::default();
            for (key, value) in records {
                store::apply_public(&mut one, key, value);
            }
            pending.push((pid, one));
        }
        let now = clock.now_ms();
        let mut groups = HashMap::new();
        for (id, offsets) in replayed.offsets {
            let mut g = Group::new(&id, now);
            g.offsets = offsets;
            groups.insert(id, g);
        }
        for (id, record) in replayed.groups {
            let g = groups
                .entry(id.clone())
                .or_insert_with(|| Group::new(&id, now));
            g.generation = record.generation;
            g.protocol_type = (!record.protocol_type.is_empty()).then_some(record.protocol_type);
            if let (Some(protocol), false) = (&record.protocol, record.members.is_empty()) {
                // A stable group: its members carry on (they must heartbeat within their
                // session timeout, counted from now).
                g.state = GroupState::Stable;
                g.protocol = Some(protocol.clone());
                g.leader = record.leader.clone();
                for (i, m) in record.members.into_iter().enumerate() {
                    if let Some(instance) = &m.instance_id {
                        g.static_members
                            .insert(instance.clone(), m.member_id.clone());
                    }
                    g.members.insert(
                        m.member_id.clone(),
                        Member {
                            id: m.member_id,
                            instance_id: m.instance_id,
                            client: ClientInfo {
                                client_id: m.client_id,
                                client_host: m.client_host,
                            },
                            session_timeout_ms: m.session_timeout_ms,
                            rebalance_timeout_ms: m.rebalance_timeout_ms,
                            protocols: vec![(protocol.clone(), m.subscription)],
                            assignment: m.assignment,
                            last_heartbeat_ms: now,
                            joined: false,
                            join_order: i as u64,
                            join_waiter: None,
                            sync_waiter: None,
                        },
                    );
                }
            }
        }
        for (pid, one) in pending {
            for (id, offsets) in one.offsets {
                let g = groups
                    .entry(id.clone())
                    .or_insert_with(|| Group::new(&id, now));
                g.pending_txn.entry(pid).or_default().extend(offsets);
            }
        }
        if !groups.is_empty() {
            tracing::info!(groups = groups.len(), "loaded consumer groups");
        }
        // Groups whose records were all tombstoned (DeleteGroups, expired offsets) are gone.
        groups.retain(|_, g| !g.holds_nothing());
        let mut deadlines = timer::Deadlines::default();
        for (id, g) in &groups {
            deadlines.set(id, g.next_deadline(&config));
        }
        Ok(GroupCoordinator {
            groups: Mutex::new(groups),
            deadlines: Mutex::new(deadlines),
            log,
            config,
            next_join_order: Mutex::new(0),
            clock,
        })
    }

    /// The groups, for a request that changes `group_id` (its deadline is updated after).
    fn lock_group(&self, group_id: &str) -> GroupsGuard<'_> {
        GroupsGuard {
            groups: self.lock(),
            coordinator: self,
            group_id: group_id.to_string(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, changes: &[Change<'_>]) -> Durability {
        match store::append(&self.log, changes) {
            Ok(Some(upto)) => Durability::SyncTo(upto),
            Ok(None) => Durability::Done,
            Err(e) => {
                if !self.log.is_failed() {
                    tracing::error!(error = %e, "writing to __consumer_offsets failed");
                }
                Durability::Failed
            }
        }
    }

    /// Writes a group's metadata record and remembers the write in the group.
    fn persist_group(&self, group: &mut Group) -> Durability {
        let record = group.record();
        let durability = self.persist(&[Change::Group {
            group: &group.id,
            value: Some(&record),
        }]);
        group.persisted = durability;
        durability
    }

    /// The log behind the coordinator (for durability waits).
    pub fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    fn join_order(&self) -> u64 {
        let mut n = self
            .next_join_order
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *n += 1;
        *n
    }

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
        let order = self.join_order();
        tracing::debug!(group = %req.group_id, member = %req.member_id, instance = ?req.group_instance_id,
            "JoinGroup");
        let mut groups = self.lock_group(&req.group_id);
        let issues_member_id = req.member_id.is_empty()
            && req.require_known_member_id
            && req.group_instance_id.is_none();
        let pending_total: usize = if issues_member_id {
            groups.values().map(|g| g.pending.len()).sum()
        } else {
            0
        };
        let group = groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(&req.group_id, now));
        if group.state == GroupState::Dead {
            return Reply::Now(JoinResult::error(
                ResponseError::CoordinatorNotAvailable,
                &req.member_id,
            ));
        }
        if !group.supports(&req.protocol_type, &req.protocols) {
            return Reply::Now(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        if req.member_id.is_empty() {
            let new_id = format!("{}-{}", client.client_id, uuid::Uuid::new_v4());
            if let Some(instance) = &req.group_instance_id {
                if let Some(old_id) = group.static_members.get(instance).cloned() {
                    return self.rejoin_static(group, old_id, new_id, req, client, now);
                }
            } else if req.require_known_member_id {
                group.pending.retain(|_, expires| *expires > now);
                if group.pending.len() >= PENDING_MEMBERS_PER_GROUP_MAX
                    || pending_total >= PENDING_MEMBERS_MAX
                {
                    tracing::warn!(group = %req.group_id, pending = group.pending.len(), pending_total,
                        "too many member ids awaiting their join: GROUP_MAX_SIZE_REACHED");
                    return Reply::Now(JoinResult::error(
                        ResponseError::GroupMaxSizeReached,
                        &req.member_id,
                    ));
                }
                let expires = now + req.session_timeout_ms as i64;
                group.pending.insert(new_id.clone(), expires);
                return Reply::Now(JoinResult::error(ResponseError::MemberIdRequired, &new_id));
            }
            return self.add_member_and_rebalance(group, new_id, req, client, now, order);
        }
        // A known (or pending) member id.
        if group.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return self.add_member_and_rebalance(group, id, req, client, now, order);
        }
        if let Some(instance) = &req.group_instance_id {
            if group
                .static_members
                .get(instance)
                .is_some_and(|m| *m != req.member_id)
            {
                return Reply::Now(JoinResult::error(
                    ResponseError::FencedInstanceId,
                    &req.member_id,
                ));
            }
        }
        let Some(member) = group.members.get_mut(&req.member_id) else {
            return Reply::Now(JoinResult::error(
                ResponseError::UnknownMemberId,
                &req.member_id,
            ));
        };
        member.last_heartbeat_ms = now;
        let unchanged = member.protocols == req.protocols;
        match group.state {
            GroupState::PreparingRebalance => {
                self.update_member(group, &req, &client, now);
                let reply = self.wait_join(group, &req.member_id);
                self.maybe_complete_join(group, now);
                reply
            }
            GroupState::CompletingRebalance if unchanged => {
                // A retried join: answer as the rebalance already did.
                Reply::Now(join_result_for(group, &req.member_id))
            }
            GroupState::Stable
                if unchanged && group.leader.as_deref() != Some(req.member_id.as_str()) =>
            {
                Reply::Now(join_result_for(group, &req.member_id))
            }
            _ => {
                self.update_member(group, &req, &client, now);
                prepare_rebalance(group, now, self.config);
                let reply = self.wait_join(group, &req.member_id);
                self.maybe_complete_join(group, now);
                reply
            }
        }
    }

    fn update_member(&self, group: &mut Group, req: &JoinRequest, client: &ClientInfo, now: i64) {
        if let Some(m) = group.members.get_mut(&req.member_id) {
            m.protocols = req.protocols.clone();
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.client = client.clone();
            m.last_heartbeat_ms = now;
        }
    }

    fn wait_join(&self, group: &mut Group, member_id: &str) -> Reply<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = group.members.get_mut(member_id) {
            m.joined = true;
            if let Some(old) = m.join_waiter.replace(tx) {
                // A second join from the same member supersedes the first.
                let _ = old.send(JoinResult::error(ResponseError::UnknownMemberId, member_id));
            }
        }
        Reply::Later(rx)
    }

    fn add_member_and_rebalance(
        &self,
        group: &mut Group,
        member_id: String,
        req: JoinRequest,
        client: ClientInfo,
        now: i64,
        order: u64,
    ) -> Reply<JoinResult> {
        if group.members.is_empty() {
            group.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(instance) = &req.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), member_id.clone());
        }
        group.members.insert(
            member_id.clone(),
            Member {
                id: member_id.clone(),
                instance_id: req.group_instance_id.clone(),
                client,
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocols: req.protocols.clone(),
                assignment: Bytes::new(),
                last_heartbeat_ms: now,
                joined: false,
                join_order: order,
                join_waiter: None,
                sync_waiter: None,
            },
        );
        if group.state != GroupState::PreparingRebalance {
            prepare_rebalance(group, now, self.config);
        }
        let reply = self.wait_join(group, &member_id);
        self.maybe_complete_join(group, now);
        reply
    }

    /// A static member restarted (new member id, known instance id).
    fn rejoin_static(
        &self,
        group: &mut Group,
        old_id: String,
        new_id: String,
        req: JoinRequest,
        client: ClientInfo,
        now: i64,
    ) -> Reply<JoinResult> {
        let Some(mut member) = group.members.remove(&old_id) else {
            let order = self.join_order();
            return self.add_member_and_rebalance(group, new_id, req, client, now, order);
        };
        // Fence the old incarnation: its pending requests learn it is gone.
        if let Some(w) = member.join_waiter.take() {
            let _ = w.send(JoinResult::error(ResponseError::FencedInstanceId, &old_id));
        }
        if let Some(w) = member.sync_waiter.take() {
            let _ = w.send(SyncResult::error(ResponseError::FencedInstanceId));
        }
        let unchanged = member.protocols == req.protocols;
        member.id = new_id.clone();
        member.client = client;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.protocols = req.protocols.clone();
        member.last_heartbeat_ms = now;
        group.members.insert(new_id.clone(), member);
        if let Some(instance) = &req.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), new_id.clone());
        }
        let was_leader = group.leader.as_deref() == Some(old_id.as_str());
        if was_leader {
            group.leader = Some(new_id.clone());
        }
        match group.state {
            GroupState::Stable if unchanged => {
                // No rebalance: same generation, same assignment (fetched by SyncGroup).
                let durability = self.persist_group(group);
                let mut result = join_result_for(group, &new_id);
                result.durability = durability;
                if was_leader {
                    // The leader need not recompute the assignment (v9 skip_assignment).
                    result.skip_assignment = true;
                }
                Reply::Now(result)
            }
            GroupState::PreparingRebalance => self.wait_join(group, &new_id),
            _ => {
                prepare_rebalance(group, now, self.config);
                let reply = self.wait_join(group, &new_id);
                self.maybe_complete_join(group, now);
                reply
            }
        }
    }

    /// Completes the join phase when every member has rejoined (after the initial delay).
    fn maybe_complete_join(&self, group: &mut Group, now: i64) {
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = group.members.values().all(|m| m.joined);
        let delay_over = now >= group.initial_delay_until_ms;
        if (all_joined && delay_over) || now >= group.rebalance_deadline_ms {
            self.complete_join(group, now);
        }
    }

    fn complete_join(&self, group: &mut Group, now: i64) {
        // Members that did not rejoin in time are out.
        let missing: Vec<String> = group
            .members
            .values()
            .filter(|m| !m.joined)
            .map(|m| m.id.clone())
            .collect();
        for id in missing {
            remove_member(group, &id);
        }
        group.generation += 1;
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.protocol = None;
            group.leader = None;
            group.empty_since_ms = now;
            self.persist_group(group);
            return;
        }
        group.protocol = group.select_protocol();
        let leader_ok = group
            .leader
            .as_ref()
            .is_some_and(|l| group.members.contains_key(l));
        if !leader_ok {
            group.leader = group
                .members
                .values()
                .min_by_key(|m| m.join_order)
                .map(|m| m.id.clone());
        }
        group.state = GroupState::CompletingRebalance;
        group.sync_deadline_ms = now + group.max_rebalance_timeout();
        let ids: Vec<String> = group.members.keys().cloned().collect();
        for id in ids {
            let result = join_result_for(group, &id);
            if let Some(m) = group.members.get_mut(&id) {
                m.joined = false;
                m.last_heartbeat_ms = now;
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(result);
                }
            }
        }
        tracing::debug!(group = %group.id, generation = group.generation, members = group.members.len(),
            protocol = ?group.protocol, "rebalance: join phase complete");
    }

    pub fn sync(&self, req: SyncRequest<'_>) -> Reply<SyncResult> {
        let SyncRequest {
            group_id,
            generation,
            member_id,
            instance_id,
            protocol_type,
            protocol_name,
            assignments,
        } = req;
        let now = self.clock.now_ms();
        let mut groups = self.lock_group(group_id);
        let Some(group) = groups.get_mut(group_id) else {
            return Reply::Now(SyncResult::error(ResponseError::UnknownMemberId));
        };
        tracing::debug!(group = group_id, member = member_id, generation, state = group.state.name(),
            leader = ?group.leader, "SyncGroup");
        if let Err(e) = check_member(group, member_id, instance_id) {
            return Reply::Now(SyncResult::error(e));
        }
        if generation != group.generation {
            return Reply::Now(SyncResult::error(ResponseError::IllegalGeneration));
        }
        if protocol_type.is_some_and(|t| group.protocol_type.as_deref() != Some(t))
            || protocol_name.is_some_and(|n| group.protocol.as_deref() != Some(n))
        {
            return Reply::Now(SyncResult::error(ResponseError::InconsistentGroupProtocol));
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => {
                Reply::Now(SyncResult::error(ResponseError::UnknownMemberId))
            }
            GroupState::PreparingRebalance => {
                Reply::Now(SyncResult::error(ResponseError::RebalanceInProgress))
            }
            GroupState::Stable => {
                let m = &group.members[member_id];
                Reply::Now(sync_result(group, &m.assignment))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = group.members.get_mut(member_id) {
                    m.last_heartbeat_ms = now;
                    m.sync_waiter = Some(tx);
                }
                if group.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in group.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    group.state = GroupState::Stable;
                    // Every member's answer waits for this record (Kafka answers SyncGroup
                    // once the group metadata is stored).
                    let durability = self.persist_group(group);
                    let protocol_type = group.protocol_type.clone();
                    let protocol = group.protocol.clone();
                    for m in group.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncResult {
                                error: 0,
                                protocol_type: protocol_type.clone(),
                                protocol_name: protocol.clone(),
                                assignment: m.assignment.clone(),
                                durability,
                            });
                        }
                    }
                    tracing::debug!(group = %group.id, generation = group.generation, "rebalance complete: stable");
                }
                Reply::Later(rx)
            }
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> i16 {
        let now = self.clock.now_ms();
        let mut groups = self.lock_group(group_id);
        let Some(group) = groups.get_mut(group_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        tracing::trace!(
            group = group_id,
            member = member_id,
            generation,
            state = group.state.name(),
            group_generation = group.generation,
            "Heartbeat"
        );
        if let Err(e) = check_member(group, member_id, instance_id) {
            return e.code();
        }
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat_ms = now;
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => ResponseError::UnknownMemberId.code(),
            GroupState::PreparingRebalance => ResponseError::RebalanceInProgress.code(),
            _ if generation != group.generation => ResponseError::IllegalGeneration.code(),
            _ => NONE,
        }
    }

    /// Removes members; `(member id, instance id)` per member. Returns an error per member.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<i16>, ResponseError> {
        let now = self.clock.now_ms();
        let mut groups = self.lock_group(group_id);
        let Some(group) = groups.get_mut(group_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        let mut results = Vec::new();
        let mut removed = false;
        for (member_id, instance_id) in members {
            let target = match instance_id {
                Some(instance) => match group.static_members.get(instance) {
                    Some(id) if member_id.is_empty() || id == member_id => Ok(id.clone()),
                    Some(_) => Err(ResponseError::FencedInstanceId),
                    None => Err(ResponseError::UnknownMemberId),
                },
                None if group.members.contains_key(member_id) => Ok(member_id.clone()),
                None => Err(ResponseError::UnknownMemberId),
            };
            match target {
                Ok(id) => {
                    remove_member(group, &id);
                    removed = true;
                    results.push(NONE);
                }
                Err(e) => results.push(e.code()),
            }
        }
        if removed {
            self.members_changed(group, now);
        }
        Ok(results)
    }

    /// After members were removed: rebalance the rest, or become empty.
    fn members_changed(&self, group: &mut Group, now: i64) {
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if group.members.is_empty() {
                    group.generation += 1;
                    group.state = GroupState::Empty;
                    group.protocol = None;
                    group.leader = None;
                    group.empty_since_ms = now;
                    self.persist_group(group);
                } else {
                    prepare_rebalance(group, now, self.config);
                }
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(group, now),
            _ => {}
        }
    }

    /// The clock: the groups whose deadline has come (session expiry, rebalance and sync
    /// deadlines, handed-out member ids lapsing, offset retention, forgetting an empty group),
    /// and only those.
    pub fn tick(&self) {
        let now = self.clock.now_ms();
        let mut groups = self.lock();
        let due = self
            .deadlines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_due(now);
        let mut expired_offsets: Vec<(String, Vec<(String, i32)>)> = Vec::new();
        for id in &due {
            let Some(group) = groups.get_mut(id) else {
                continue;
            };
            group.pending.retain(|_, expires| *expires > now);
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| {
                    m.join_waiter.is_none()
                        && m.sync_waiter.is_none()
                        && now - m.last_heartbeat_ms > m.session_timeout_ms as i64
                })
                .map(|m| m.id.clone())
                .collect();
            if !expired.is_empty() {
                tracing::info!(group = %group.id, members = ?expired, "session timeout: removing members");
                for id in &expired {
                    remove_member(group, id);
                }
                self.members_changed(group, now);
            }
            match group.state {
                GroupState::PreparingRebalance => self.maybe_complete_join(group, now),
                GroupState::CompletingRebalance if now >= group.sync_deadline_ms => {
                    // The leader never sent the assignment: start over.
                    for m in group.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncResult::error(ResponseError::RebalanceInProgress));
                        }
                    }
                    prepare_rebalance(group, now, self.config);
                }
                GroupState::Empty if self.config.offsets_retention_ms >= 0 => {
                    let retention = self.config.offsets_retention_ms;
                    let simple = group.protocol_type.is_none();
                    let gone: Vec<(String, i32)> = group
                        .offsets
                        .iter()
                        .filter(|(_, o)| {
                            let since = if simple {
                                o.commit_timestamp_ms
                            } else {
                                group.empty_since_ms
                            };
                            now - since > retention
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    if !gone.is_empty() {
                        for k in &gone {
                            group.offsets.remove(k);
                        }
                        expired_offsets.push((group.id.clone(), gone));
                    }
                }
                _ => {}
            }
        }
        for (group, partitions) in &expired_offsets {
            tracing::info!(group = %group, partitions = partitions.len(), "expired committed offsets");
            let changes: Vec<Change<'_>> = partitions
                .iter()
                .map(|(t, p)| Change::Offset {
                    group,
                    topic: t,
                    partition: *p,
                    value: None,
                })
                .collect();
            self.persist(&changes);
        }
        // Forget groups that hold nothing (see `Group::holds_nothing`); the others get their
        // next deadline.
        let mut deadlines = self.deadlines.lock().unwrap_or_else(|p| p.into_inner());
        for id in &due {
            match groups.get(id) {
                Some(g) if g.holds_nothing() => {
                    groups.remove(id);
                }
                Some(g) => deadlines.set(id, g.next_deadline(&self.config)),
                None => {}
            }
        }
    }

    /// Validates an offset commit against the group and records the offsets. Returns per
    /// partition errors (in order) and the offset to sync the log to, if the flush policy wants.
    pub fn commit_offsets(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<(Vec<i16>, Option<i64>), ResponseError> {
        let now = self.clock.now_ms();
        let mut groups = self.lock_group(group_id);
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let group = match groups.get_mut(group_id) {
            Some(g) => g,
            None if generation < 0 => groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, now)),
            None => return Err(ResponseError::IllegalGeneration),
        };
        let simple = generation < 0 && group.state == GroupState::Empty;
        if !simple {
            check_member(group, member_id, instance_id)?;
            match group.state {
                GroupState::Dead => return Err(ResponseError::CoordinatorNotAvailable),
                GroupState::Empty => return Err(ResponseError::UnknownMemberId),
                _ if generation != group.generation => {
                    return Err(ResponseError::IllegalGeneration)
                }
                // As Kafka's ClassicGroup: only CompletingRebalance refuses (the member has
                // its new generation but not its assignment yet). In PreparingRebalance a
                // member of the current generation may still commit: consumers commit what
                // they processed when their partitions are revoked, before rejoining.
                GroupState::CompletingRebalance => return Err(ResponseError::RebalanceInProgress),
                GroupState::PreparingRebalance | GroupState::Stable => {}
            }
            if let Some(m) = group.members.get_mut(member_id) {
                m.last_heartbeat_ms = now;
            }
        }
        let (errors, accepted) = screen_offsets(offsets);
        let changes = offset_changes(group_id, &accepted);
        let sync = match store::append(&self.log, &changes) {
            Ok(sync) => sync,
            Err(e) => {
                tracing::error!(error = %e, "writing offsets to __consumer_offsets failed");
                let n = errors.len();
                return Ok((vec![ResponseError::KafkaStorageError.code(); n], None));
            }
        };
        for (t, p, o) in accepted {
            group.offsets.insert((t, p), o);
        }
        Ok((errors, sync))
    }

    /// TxnOffsetCommit: offsets that take effect when the producer's transaction commits.
    /// Written to `__consumer_offsets` as a transactional batch (the transaction coordinator
    /// appends the marker there too, AddOffsetsToTxn having added that partition).
    pub fn commit_txn_offsets(
        &self,
        group_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        member: Option<(i32, &str, Option<&str>)>,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<(Vec<i16>, Option<i64>), ResponseError> {
        let now = self.clock.now_ms();
        let mut groups = self.lock_group(group_id);
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let group = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, now));
        if let Some((generation, member_id, instance_id)) = member {
            // v3+: a group member's commit is checked against the group, as OffsetCommit.
            if generation >= 0 || !member_id.is_empty() {
                check_member(group, member_id, instance_id)?;
                if generation != group.generation {
                    return Err(ResponseError::IllegalGeneration);
                }
            }
        }
        let (errors, accepted) = screen_offsets(offsets);
        let changes = offset_changes(group_id, &accepted);
        let sync = store::append_as(&self.log, &changes, Some((producer_id, producer_epoch)))
            .map_err(|_| ResponseError::KafkaStorageError)?;
        let pending = group.pending_txn.entry(producer_id).or_default();
        for (t, p, o) in accepted {
            pending.insert((t, p), o);
        }
        Ok((errors, sync))
    }

    /// The transaction coordinator wrote the marker: apply or drop the producer's pending
    /// offsets for this group.
    pub fn complete_txn_offsets(&self, group_id: &str, producer_id: i64, commit: bool) {
        let mut groups = self.lock_group(group_id);
        if let Some(g) = groups.get_mut(group_id) {
            if let Some(pending) = g.pending_txn.remove(&producer_id) {
                if commit {
                    g.offsets.extend(pending);
                }
            }
        }
    }

    /// The partitions for which a group has transactional offsets not yet committed or
    /// aborted (OffsetFetch `require_stable`, KIP-447).
    pub fn pending_txn_partitions(
        &self,
        group_id: &str,
    ) -> std::collections::HashSet<(String, i32)> {
        self.lock()
            .get(group_id)
            .map(|g| {
                g.pending_txn
                    .values()
                    .flat_map(|m| m.keys().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Committed offsets of a group: all of them (`None`) or the ones asked for.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Option<CommittedOffset>)> {
        let groups = self.lock();
        let offsets = groups.get(group_id).map(|g| &g.offsets);
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
    }

    /// (group id, protocol type, state) of every group.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let groups = self.lock();
        let mut out: Vec<_> = groups
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
        let groups = self.lock();
        let g = groups.get(group_id)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        let stable = g.state == GroupState::Stable;
        Some(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if stable || g.state == GroupState::CompletingRebalance {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client.client_id.clone(),
                    client_host: m.client.client_host.clone(),
                    metadata: if stable {
                        m.metadata_for(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        })
    }

    /// DeleteGroups: only empty groups; their offsets go too. The answer waits for the
    /// tombstones' [`Durability`].
    pub fn delete_group(&self, group_id: &str) -> (i16, Durability) {
        let mut groups = self.lock_group(group_id);
        let Some(g) = groups.get(group_id) else {
            return (ResponseError::GroupIdNotFound.code(), Durability::Done);
        };
        if !g.members.is_empty() || g.state != GroupState::Empty {
            return (ResponseError::NonEmptyGroup.code(), Durability::Done);
        }
        let Some(g) = groups.remove(group_id) else {
            return (ResponseError::GroupIdNotFound.code(), Durability::Done);
        };
        let mut changes: Vec<Change<'_>> = g
            .offsets
            .keys()
            .map(|(t, p)| Change::Offset {
                group: group_id,
                topic: t,
                partition: *p,
                value: None,
            })
            .collect();
        changes.push(Change::Group {
            group: group_id,
            value: None,
        });
        (NONE, self.persist(&changes))
    }

    /// OffsetDelete: a group's offsets for some partitions, unless the group is actively
    /// consuming that topic. Group-level error, or per-partition errors with the tombstones'
    /// [`Durability`] (the answer waits for it).
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<(Vec<i16>, Durability), ResponseError> {
        let mut groups = self.lock_group(group_id);
        let Some(g) = groups.get_mut(group_id) else {
            return Err(ResponseError::GroupIdNotFound);
        };
        if g.state == GroupState::Dead {
            return Err(ResponseError::GroupIdNotFound);
        }
        let subscribed = g.subscribed_topics();
        let mut deleted = Vec::new();
        let results = partitions
            .iter()
            .map(|(t, p)| {
                if subscribed.contains(t) {
                    ResponseError::GroupSubscribedToTopic.code()
                } else {
                    if g.offsets.remove(&(t.clone(), *p)).is_some() {
                        deleted.push((t.clone(), *p));
                    }
                    NONE
                }
            })
            .collect();
        let changes: Vec<Change<'_>> = deleted
            .iter()
            .map(|(t, p)| Change::Offset {
                group: group_id,
                topic: t,
                partition: *p,
                value: None,
            })
            .collect();
        let durability = if changes.is_empty() {
            Durability::Done
        } else {
            self.persist(&changes)
        };
        Ok((results, durability))
    }
}

impl Group {
    /// Topics the members subscribe to (consumer protocol metadata: version i16, then an array
    /// of topic names).
    fn subscribed_topics(&self) -> Vec<String> {
        if self.protocol_type.as_deref() != Some("consumer") || self.members.is_empty() {
            return Vec::new();
        }
        let protocol = self.protocol.clone().unwrap_or_default();
        let mut topics = Vec::new();
        for m in self.members.values() {
            let mut b = m.metadata_for(&protocol);
            if b.remaining() < 6 {
                continue;
            }
            let _version = b.get_i16();
            let n = b.get_i32();
            for _ in 0..n.max(0) {
                if b.remaining() < 2 {
                    break;
                }
                let len = b.get_i16();
                if len < 0 || b.remaining() < len as usize {
                    break;
                }
                topics.push(String::from_utf8_lossy(&b.split_to(len as usize)).into_owned());
            }
        }
        topics
    }
}

pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// Kafka's "no error" code.
pub const NONE: i16 = 0;

fn check_member(
    group: &Group,
    member_id: &str,
    instance_id: Option<&str>,
) -> Result<(), ResponseError> {
    if let Some(instance) = instance_id {
        if let Some(current) = group.static_members.get(instance) {
            if current != member_id {
                return Err(ResponseError::FencedInstanceId);
            }
        }
    }
    if !group.members.contains_key(member_id) {
        return Err(ResponseError::UnknownMemberId);
    }
    Ok(())
}

fn remove_member(group: &mut Group, id: &str) {
    if let Some(mut m) = group.members.remove(id) {
        if let Some(instance) = &m.instance_id {
            if group.static_members.get(instance).is_some_and(|x| x == id) {
                group.static_members.remove(instance);
            }
        }
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult::error(ResponseError::UnknownMemberId, id));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(SyncResult::error(ResponseError::UnknownMemberId));
        }
    }
    if group.leader.as_deref() == Some(id) {
        group.leader = None;
    }
}

fn prepare_rebalance(group: &mut Group, now: i64, config: GroupConfig) {
    for m in group.members.values_mut() {
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(SyncResult::error(ResponseError::RebalanceInProgress));
        }
    }
    if group.state == GroupState::Empty {
        group.initial_delay_until_ms = now + config.initial_rebalance_delay_ms;
    }
    group.state = GroupState::PreparingRebalance;
    group.rebalance_deadline_ms = now + group.max_rebalance_timeout().max(1);
}

fn join_result_for(group: &Group, member_id: &str) -> JoinResult {
    let protocol = group.protocol.clone().unwrap_or_default();
    let leader = group.leader.clone().unwrap_or_default();
    let members = if leader == member_id {
        let mut ms: Vec<&Member> = group.members.values().collect();
        ms.sort_by_key(|m| m.join_order);
        ms.into_iter()
            .map(|m| {
                (
                    m.id.clone(),
                    m.instance_id.clone(),
                    m.metadata_for(&protocol),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    JoinResult {
        error: 0,
        generation_id: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol.clone(),
        leader,
        member_id: member_id.to_string(),
        skip_assignment: false,
        members,
        durability: Durability::Done,
    }
}

fn sync_result(group: &Group, assignment: &Bytes) -> SyncResult {
    SyncResult {
        error: 0,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol.clone(),
        assignment: assignment.clone(),
        // The assignment is the one the last metadata record stored.
        durability: group.persisted,
    }
}

/// An offset to commit: topic, partition, offset, whether the partition exists.
type OffsetToCommit = (String, i32, CommittedOffset, bool);

/// The per-partition errors of a commit (in order) and the offsets accepted: those of existing
/// partitions whose metadata is within the limit.
fn screen_offsets(offsets: Vec<OffsetToCommit>) -> (Vec<i16>, Vec<(String, i32, CommittedOffset)>) {
    let mut errors = Vec::with_capacity(offsets.len());
    let mut accepted = Vec::new();
    for (topic, partition, offset, exists) in offsets {
        if !exists {
            errors.push(ResponseError::UnknownTopicOrPartition.code());
        } else if offset.metadata.len() > OFFSET_METADATA_MAX_BYTES {
            errors.push(ResponseError::OffsetMetadataTooLarge.code());
        } else {
            errors.push(NONE);
            accepted.push((topic, partition, offset));
        }
    }
    (errors, accepted)
}

/// The `__consumer_offsets` records of accepted offsets.
fn offset_changes<'a>(
    group_id: &'a str,
    accepted: &'a [(String, i32, CommittedOffset)],
) -> Vec<Change<'a>> {
    accepted
        .iter()
        .map(|(t, p, o)| Change::Offset {
            group: group_id,
            topic: t,
            partition: *p,
            value: Some(o),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! The classic state machine driven by a manual clock: no sleeps, every deadline reached
    //! by moving time.
    use super::*;
    use crate::log::LogConfig;

    const SESSION_MS: i32 = 10_000;
    const REBALANCE_MS: i32 = 30_000;

    fn coordinator() -> (GroupCoordinator, Clock) {
        let clock = Clock::manual(1_000_000);
        let log = Arc::new(PartitionLog::in_memory(LogConfig::default()));
        let config = GroupConfig {
            initial_rebalance_delay_ms: 0,
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 300_000,
            offsets_retention_ms: 7 * 24 * 3_600_000,
        };
        let c = GroupCoordinator::open_with_clock(log, config, clock.clone()).unwrap();
        (c, clock)
    }

    fn join_req(member_id: &str) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            group_instance_id: None,
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
            require_known_member_id: false,
        }
    }

    fn client() -> ClientInfo {
        ClientInfo {
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
        }
    }

    /// The answer if it was given (now, or already sent to the waiter).
    fn answered<T>(reply: Reply<T>) -> Option<T> {
        match reply {
            Reply::Now(t) => Some(t),
            Reply::Later(mut rx) => rx.try_recv().ok(),
        }
    }

    fn sync_alone(c: &GroupCoordinator, joined: &JoinResult) -> SyncResult {
        let reply = c.sync(SyncRequest {
            group_id: "g",
            generation: joined.generation_id,
            member_id: &joined.member_id,
            instance_id: None,
            protocol_type: Some("consumer"),
            protocol_name: Some("range"),
            assignments: vec![(joined.member_id.clone(), Bytes::from_static(b"all"))],
        });
        answered(reply).expect("the leader's sync is answered at once")
    }

    fn state(c: &GroupCoordinator) -> GroupState {
        c.describe("g").expect("group exists").state
    }

    #[test]
    fn a_silent_member_expires_exactly_after_its_session_timeout() {
        let (c, clock) = coordinator();
        let joined = answered(c.join(join_req(""), client())).expect("a lone member joins at once");
        assert_eq!(joined.error, 0);
        assert_eq!(sync_alone(&c, &joined).error, 0);
        assert_eq!(state(&c), GroupState::Stable);

        clock.advance(SESSION_MS as i64);
        c.tick();
        assert_eq!(state(&c), GroupState::Stable, "not past the timeout yet");
        let hb = c.heartbeat("g", joined.generation_id, &joined.member_id, None);
        assert_eq!(hb, 0, "a heartbeat restarts the session");
        clock.advance(SESSION_MS as i64);
        c.tick();
        assert_eq!(state(&c), GroupState::Stable);
        clock.advance(1);
        c.tick();
        let g = c.describe("g").unwrap();
        assert_eq!(g.state, GroupState::Empty, "the member expired");
        assert!(g.members.is_empty());
    }

    #[test]
    fn a_rebalance_completes_without_members_that_do_not_rejoin() {
        let (c, clock) = coordinator();
        let a = answered(c.join(join_req(""), client())).unwrap();
        sync_alone(&c, &a);
        // b joins: a rebalance starts and b waits for a to rejoin.
        let b_reply = c.join(join_req(""), client());
        let Reply::Later(mut b_rx) = b_reply else {
            panic!("b must wait for the rebalance");
        };
        assert_eq!(state(&c), GroupState::PreparingRebalance);
        // a keeps heartbeating (told to rejoin) but never does; the rebalance timeout ends it.
        clock.advance(REBALANCE_MS as i64 / 2);
        let hb = c.heartbeat("g", a.generation_id, &a.member_id, None);
        assert_eq!(hb, ResponseError::RebalanceInProgress.code());
        c.tick();
        assert!(b_rx.try_recv().is_err(), "still waiting for a");
        clock.advance(REBALANCE_MS as i64 / 2);
        c.tick();
        let b = b_rx.try_recv().expect("the deadline completed the join");
        assert_eq!(b.error, 0);
        assert_eq!(b.generation_id, a.generation_id + 1);
        assert_eq!(b.leader, b.member_id, "the member that rejoined leads");
        let members: Vec<String> = c
            .describe("g")
            .unwrap()
            .members
            .into_iter()
            .map(|m| m.member_id)
            .collect();
        assert_eq!(members, vec![b.member_id.clone()]);
    }

    #[test]
    fn the_clock_visits_only_groups_that_have_a_deadline() {
        let (c, clock) = coordinator();
        let joined = answered(c.join(join_req(""), client())).unwrap();
        sync_alone(&c, &joined);
        let deadline = |c: &GroupCoordinator| c.deadlines.lock().unwrap().len();
        assert_eq!(deadline(&c), 1, "the member's session");
        let left = c.leave("g", &[(joined.member_id.clone(), None)]).unwrap();
        assert_eq!(left, vec![0]);
        // Empty, no offsets to expire: nothing will happen to it without a request, so the
        // clock has nothing to look at (it is kept, as before, for its protocol type).
        assert_eq!(state(&c), GroupState::Empty);
        assert_eq!(deadline(&c), 0);
        clock.advance(i64::from(SESSION_MS) * 100);
        c.tick();
        assert_eq!(state(&c), GroupState::Empty);
    }
}
