//! The classic group state machine (as Kafka's `ClassicGroup`): a group's members, its state,
//! generation, protocol and leader, and the transitions JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup and the passing of time make. Pure: every transition takes `now` and the
//! settings, does no I/O and takes no lock; what it wants done besides changing the group
//! (answers for waiting members, the group's metadata to store) it returns as [`Effects`].
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

use std::collections::{BTreeMap, HashMap};

use bytes::{Buf, Bytes};
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;

use super::store::{GroupRecord, MemberRecord};
use super::{Durability, GroupConfig, NONE};

/// Member ids handed out with MEMBER_ID_REQUIRED and not yet used, per group at most: past it
/// a new member gets GROUP_MAX_SIZE_REACHED (each entry lives up to its session timeout).
pub const PENDING_MEMBERS_PER_GROUP_MAX: usize = 1_000;
/// The same, over all groups of the coordinator.
pub const PENDING_MEMBERS_MAX: usize = 100_000;

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

impl JoinRequest {
    /// Whether this join is answered MEMBER_ID_REQUIRED with a fresh member id (an unknown
    /// dynamic member, v4+).
    pub fn issues_member_id(&self) -> bool {
        self.member_id.is_empty()
            && self.require_known_member_id
            && self.group_instance_id.is_none()
    }
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
    pub fn error(e: ResponseError, member_id: &str) -> JoinResult {
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
    pub fn error(e: ResponseError) -> SyncResult {
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

/// What a transition asks for besides the change to the group.
#[derive(Default)]
pub struct Effects {
    /// The group's metadata record changed: store it (`Group::record`). Successful answers in
    /// `syncs`, and a successful immediate JoinGroup answer, wait for that write.
    pub store: bool,
    /// Answers for members waiting in JoinGroup.
    pub joins: Vec<(oneshot::Sender<JoinResult>, JoinResult)>,
    /// Answers for members waiting in SyncGroup.
    pub syncs: Vec<(oneshot::Sender<SyncResult>, SyncResult)>,
}

impl Effects {
    /// Sends the answers; the successful SyncGroup answers wait for `stored` (the write of
    /// the group metadata they report). Call it with no lock held.
    pub fn deliver(self, stored: &Durability) {
        for (tx, result) in self.joins {
            let _ = tx.send(result);
        }
        for (tx, mut result) in self.syncs {
            if result.error == NONE {
                result.durability = stored.clone();
            }
            let _ = tx.send(result);
        }
    }

    /// Takes over `other`'s answers (its `store` is the caller's to handle).
    pub fn absorb(&mut self, other: Effects) {
        self.joins.extend(other.joins);
        self.syncs.extend(other.syncs);
    }
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client: ClientInfo,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat_ms: i64,
    /// Rejoined in the current rebalance.
    joined: bool,
    join_order: u64,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Whether a JoinGroup or SyncGroup of this member is waiting (its session does not
    /// expire meanwhile).
    fn waiting(&self) -> bool {
        self.join_waiter.is_some() || self.sync_waiter.is_some()
    }
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id -> member id
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with when they expire.
    pub pending: HashMap<String, i64>,
    /// The last write of this group's metadata (answers that report it wait for it).
    pub persisted: Durability,
    rebalance_deadline_ms: i64,
    initial_delay_until_ms: i64,
    sync_deadline_ms: i64,
    pub empty_since_ms: i64,
}

impl Group {
    pub fn new(id: &str, now: i64) -> Group {
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
        }
    }

    /// The group as its stored metadata describes it: a stable group's members carry on (they
    /// must heartbeat within their session timeout, counted from `now`).
    pub fn from_record(id: &str, record: &GroupRecord, now: i64) -> Group {
        let mut g = Group::new(id, now);
        g.generation = record.generation;
        g.protocol_type = (!record.protocol_type.is_empty()).then(|| record.protocol_type.clone());
        if let (Some(protocol), false) = (&record.protocol, record.members.is_empty()) {
            g.state = GroupState::Stable;
            g.protocol = Some(protocol.clone());
            g.leader = record.leader.clone();
            for (i, m) in record.members.iter().enumerate() {
                if let Some(instance) = &m.instance_id {
                    g.static_members
                        .insert(instance.clone(), m.member_id.clone());
                }
                g.members.insert(
                    m.member_id.clone(),
                    Member {
                        id: m.member_id.clone(),
                        instance_id: m.instance_id.clone(),
                        client: ClientInfo {
                            client_id: m.client_id.clone(),
                            client_host: m.client_host.clone(),
                        },
                        session_timeout_ms: m.session_timeout_ms,
                        rebalance_timeout_ms: m.rebalance_timeout_ms,
                        protocols: vec![(protocol.clone(), m.subscription.clone())],
                        assignment: m.assignment.clone(),
                        last_heartbeat_ms: now,
                        joined: false,
                        join_order: i as u64,
                        join_waiter: None,
                        sync_waiter: None,
                    },
                );
            }
        }
        g
    }

    /// This broker stops coordinating the group (its `__consumer_offsets` partition moved or
    /// got a new leader epoch): every waiting JoinGroup and SyncGroup is answered
    /// NOT_COORDINATOR, so the members find the new coordinator (Kafka's `onResignation`).
    pub fn resign(&mut self, fx: &mut Effects) {
        for m in self.members.values_mut() {
            if let Some(tx) = m.join_waiter.take() {
                fx.joins
                    .push((tx, JoinResult::error(ResponseError::NotCoordinator, &m.id)));
            }
            if let Some(tx) = m.sync_waiter.take() {
                fx.syncs
                    .push((tx, SyncResult::error(ResponseError::NotCoordinator)));
            }
        }
    }

    /// No members, no member id handed out and awaiting its join (MEMBER_ID_REQUIRED), no
    /// protocol type: nothing of the membership to keep (offsets are the caller's to check).
    pub fn membership_is_empty(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending.is_empty()
            && self.protocol_type.is_none()
    }

    /// The earliest moment something happens to the membership without a request: a handed-out
    /// member id lapses, a session expires, the rebalance or sync deadline passes. `None` when
    /// nothing will.
    pub fn next_deadline(&self) -> Option<i64> {
        let mut at = i64::MAX;
        for expires in self.pending.values() {
            // A handed-out member id lapses once the clock reaches its expiry.
            at = at.min(*expires);
        }
        for m in self.members.values() {
            if !m.waiting() {
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
            _ => {}
        }
        (at != i64::MAX).then_some(at)
    }

    /// The group's metadata record (Kafka's GroupMetadataValue): the members only when stable.
    pub fn record(&self) -> GroupRecord {
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if self.state == GroupState::Stable {
            self.by_join_order()
                .into_iter()
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

    fn by_join_order(&self) -> Vec<&Member> {
        let mut ms: Vec<&Member> = self.members.values().collect();
        ms.sort_by_key(|m| m.join_order);
        ms
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

    /// JoinGroup. `order` ranks the member among joiners (the first joiner leads);
    /// `pending_total` counts the member ids handed out over all groups.
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &mut self,
        req: JoinRequest,
        client: ClientInfo,
        now: i64,
        config: &GroupConfig,
        order: u64,
        pending_total: usize,
        fx: &mut Effects,
    ) -> Reply<JoinResult> {
        if self.state == GroupState::Dead {
            return Reply::Now(JoinResult::error(
                ResponseError::CoordinatorNotAvailable,
                &req.member_id,
            ));
        }
        if !self.supports(&req.protocol_type, &req.protocols) {
            return Reply::Now(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        if req.member_id.is_empty() {
            let new_id = format!("{}-{}", client.client_id, uuid::Uuid::new_v4());
            if let Some(instance) = &req.group_instance_id {
                if let Some(old_id) = self.static_members.get(instance).cloned() {
                    return self.rejoin_static(old_id, new_id, req, client, now, config, order, fx);
                }
            } else if req.require_known_member_id {
                self.pending.retain(|_, expires| *expires > now);
                if self.pending.len() >= PENDING_MEMBERS_PER_GROUP_MAX
                    || pending_total >= PENDING_MEMBERS_MAX
                {
                    tracing::warn!(group = %req.group_id, pending = self.pending.len(), pending_total,
                        "too many member ids awaiting their join: GROUP_MAX_SIZE_REACHED");
                    return Reply::Now(JoinResult::error(
                        ResponseError::GroupMaxSizeReached,
                        &req.member_id,
                    ));
                }
                let expires = now + req.session_timeout_ms as i64;
                self.pending.insert(new_id.clone(), expires);
                return Reply::Now(JoinResult::error(ResponseError::MemberIdRequired, &new_id));
            }
            return self.add_member_and_rebalance(new_id, req, client, now, config, order, fx);
        }
        // A known (or pending) member id.
        if self.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return self.add_member_and_rebalance(id, req, client, now, config, order, fx);
        }
        if let Some(instance) = &req.group_instance_id {
            if self
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
        let Some(member) = self.members.get_mut(&req.member_id) else {
            return Reply::Now(JoinResult::error(
                ResponseError::UnknownMemberId,
                &req.member_id,
            ));
        };
        member.last_heartbeat_ms = now;
        let unchanged = member.protocols == req.protocols;
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member(&req, &client, now);
                let reply = self.wait_join(&req.member_id, fx);
                self.maybe_complete_join(now, fx);
                reply
            }
            GroupState::CompletingRebalance if unchanged => {
                // A retried join: answer as the rebalance already did.
                Reply::Now(self.join_result_for(&req.member_id))
            }
            GroupState::Stable
                if unchanged && self.leader.as_deref() != Some(req.member_id.as_str()) =>
            {
                Reply::Now(self.join_result_for(&req.member_id))
            }
            _ => {
                self.update_member(&req, &client, now);
                self.prepare_rebalance(now, config, fx);
                let reply = self.wait_join(&req.member_id, fx);
                self.maybe_complete_join(now, fx);
                reply
            }
        }
    }

    fn update_member(&mut self, req: &JoinRequest, client: &ClientInfo, now: i64) {
        if let Some(m) = self.members.get_mut(&req.member_id) {
            m.protocols = req.protocols.clone();
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.client = client.clone();
            m.last_heartbeat_ms = now;
        }
    }

    fn wait_join(&mut self, member_id: &str, fx: &mut Effects) -> Reply<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(member_id) {
            m.joined = true;
            if let Some(old) = m.join_waiter.replace(tx) {
                // A second join from the same member supersedes the first.
                fx.joins.push((
                    old,
                    JoinResult::error(ResponseError::UnknownMemberId, member_id),
                ));
            }
        }
        Reply::Later(rx)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_member_and_rebalance(
        &mut self,
        member_id: String,
        req: JoinRequest,
        client: ClientInfo,
        now: i64,
        config: &GroupConfig,
        order: u64,
        fx: &mut Effects,
    ) -> Reply<JoinResult> {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(instance) = &req.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        self.members.insert(
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
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now, config, fx);
        }
        let reply = self.wait_join(&member_id, fx);
        self.maybe_complete_join(now, fx);
        reply
    }

    /// A static member restarted (new member id, known instance id).
    #[allow(clippy::too_many_arguments)]
    fn rejoin_static(
        &mut self,
        old_id: String,
        new_id: String,
        req: JoinRequest,
        client: ClientInfo,
        now: i64,
        config: &GroupConfig,
        order: u64,
        fx: &mut Effects,
    ) -> Reply<JoinResult> {
        let Some(mut member) = self.members.remove(&old_id) else {
            return self.add_member_and_rebalance(new_id, req, client, now, config, order, fx);
        };
        // Fence the old incarnation: its pending requests learn it is gone.
        if let Some(w) = member.join_waiter.take() {
            fx.joins.push((
                w,
                JoinResult::error(ResponseError::FencedInstanceId, &old_id),
            ));
        }
        if let Some(w) = member.sync_waiter.take() {
            fx.syncs
                .push((w, SyncResult::error(ResponseError::FencedInstanceId)));
        }
        let unchanged = member.protocols == req.protocols;
        member.id = new_id.clone();
        member.client = client;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.protocols = req.protocols.clone();
        member.last_heartbeat_ms = now;
        self.members.insert(new_id.clone(), member);
        if let Some(instance) = &req.group_instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        let was_leader = self.leader.as_deref() == Some(old_id.as_str());
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        match self.state {
            GroupState::Stable if unchanged => {
                // No rebalance: same generation, same assignment (fetched by SyncGroup). The
                // new member id is stored before the answer.
                fx.store = true;
                let mut result = self.join_result_for(&new_id);
                if was_leader {
                    // The leader need not recompute the assignment (v9 skip_assignment).
                    result.skip_assignment = true;
                }
                Reply::Now(result)
            }
            GroupState::PreparingRebalance => self.wait_join(&new_id, fx),
            _ => {
                self.prepare_rebalance(now, config, fx);
                let reply = self.wait_join(&new_id, fx);
                self.maybe_complete_join(now, fx);
                reply
            }
        }
    }

    /// Completes the join phase when every member has rejoined (after the initial delay).
    fn maybe_complete_join(&mut self, now: i64, fx: &mut Effects) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.joined);
        let delay_over = now >= self.initial_delay_until_ms;
        if (all_joined && delay_over) || now >= self.rebalance_deadline_ms {
            self.complete_join(now, fx);
        }
    }

    fn complete_join(&mut self, now: i64, fx: &mut Effects) {
        // Members that did not rejoin in time are out.
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.joined)
            .map(|m| m.id.clone())
            .collect();
        for id in missing {
            self.remove_member(&id, fx);
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.become_empty(now, fx);
            return;
        }
        self.protocol = self.select_protocol();
        let leader_ok = self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l));
        if !leader_ok {
            self.leader = self
                .members
                .values()
                .min_by_key(|m| m.join_order)
                .map(|m| m.id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        self.sync_deadline_ms = now + self.max_rebalance_timeout();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result_for(&id);
            if let Some(m) = self.members.get_mut(&id) {
                m.joined = false;
                m.last_heartbeat_ms = now;
                if let Some(w) = m.join_waiter.take() {
                    fx.joins.push((w, result));
                }
            }
        }
        tracing::debug!(group = %self.id, generation = self.generation, members = self.members.len(),
            protocol = ?self.protocol, "rebalance: join phase complete");
    }

    /// The last member is gone: Empty, and stored so.
    fn become_empty(&mut self, now: i64, fx: &mut Effects) {
        self.state = GroupState::Empty;
        self.protocol = None;
        self.leader = None;
        self.empty_since_ms = now;
        fx.store = true;
    }

    /// SyncGroup.
    pub fn sync(&mut self, req: SyncRequest<'_>, now: i64, fx: &mut Effects) -> Reply<SyncResult> {
        let SyncRequest {
            group_id,
            generation,
            member_id,
            instance_id,
            protocol_type,
            protocol_name,
            assignments,
        } = req;
        tracing::debug!(group = group_id, member = member_id, generation, state = self.state.name(),
            leader = ?self.leader, "SyncGroup");
        if let Err(e) = self.check_member(member_id, instance_id) {
            return Reply::Now(SyncResult::error(e));
        }
        if generation != self.generation {
            return Reply::Now(SyncResult::error(ResponseError::IllegalGeneration));
        }
        if protocol_type.is_some_and(|t| self.protocol_type.as_deref() != Some(t))
            || protocol_name.is_some_and(|n| self.protocol.as_deref() != Some(n))
        {
            return Reply::Now(SyncResult::error(ResponseError::InconsistentGroupProtocol));
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                Reply::Now(SyncResult::error(ResponseError::UnknownMemberId))
            }
            GroupState::PreparingRebalance => {
                Reply::Now(SyncResult::error(ResponseError::RebalanceInProgress))
            }
            GroupState::Stable => {
                // The assignment is the one the last metadata record stored.
                let m = &self.members[member_id];
                Reply::Now(SyncResult {
                    error: NONE,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    assignment: m.assignment.clone(),
                    durability: self.persisted.clone(),
                })
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(member_id) {
                    m.last_heartbeat_ms = now;
                    m.sync_waiter = Some(tx);
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    // Every member's answer waits for this record (Kafka answers SyncGroup
                    // once the group metadata is stored).
                    fx.store = true;
                    for m in self.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            fx.syncs.push((
                                w,
                                SyncResult {
                                    error: NONE,
                                    protocol_type: self.protocol_type.clone(),
                                    protocol_name: self.protocol.clone(),
                                    assignment: m.assignment.clone(),
                                    durability: Durability::Done,
                                },
                            ));
                        }
                    }
                    tracing::debug!(group = %self.id, generation = self.generation, "rebalance complete: stable");
                }
                Reply::Later(rx)
            }
        }
    }

    /// Heartbeat: the error code to answer.
    pub fn heartbeat(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: i64,
    ) -> i16 {
        tracing::trace!(
            group = %self.id,
            member = member_id,
            generation,
            state = self.state.name(),
            group_generation = self.generation,
            "Heartbeat"
        );
        if let Err(e) = self.check_member(member_id, instance_id) {
            return e.code();
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat_ms = now;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => ResponseError::UnknownMemberId.code(),
            GroupState::PreparingRebalance => ResponseError::RebalanceInProgress.code(),
            _ if generation != self.generation => ResponseError::IllegalGeneration.code(),
            _ => NONE,
        }
    }

    /// LeaveGroup: `(member id, instance id)` per member; an error code per member.
    pub fn leave(
        &mut self,
        members: &[(String, Option<String>)],
        now: i64,
        config: &GroupConfig,
        fx: &mut Effects,
    ) -> Vec<i16> {
        let mut results = Vec::new();
        let mut removed = false;
        for (member_id, instance_id) in members {
            let target = match instance_id {
                Some(instance) => match self.static_members.get(instance) {
                    Some(id) if member_id.is_empty() || id == member_id => Ok(id.clone()),
                    Some(_) => Err(ResponseError::FencedInstanceId),
                    None => Err(ResponseError::UnknownMemberId),
                },
                None if self.members.contains_key(member_id) => Ok(member_id.clone()),
                None => Err(ResponseError::UnknownMemberId),
            };
            match target {
                Ok(id) => {
                    self.remove_member(&id, fx);
                    removed = true;
                    results.push(NONE);
                }
                Err(e) => results.push(e.code()),
            }
        }
        if removed {
            self.members_changed(now, config, fx);
        }
        results
    }

    /// After members were removed: rebalance the rest, or become empty.
    fn members_changed(&mut self, now: i64, config: &GroupConfig, fx: &mut Effects) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.generation += 1;
                    self.become_empty(now, fx);
                } else {
                    self.prepare_rebalance(now, config, fx);
                }
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now, fx),
            _ => {}
        }
    }

    /// The clock reached one of the group's deadlines: handed-out member ids lapse, silent
    /// members are removed, a rebalance whose time is up completes, a leader that never sent
    /// the assignment makes the group start over.
    pub fn expire(&mut self, now: i64, config: &GroupConfig, fx: &mut Effects) {
        self.pending.retain(|_, expires| *expires > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.waiting() && now - m.last_heartbeat_ms > m.session_timeout_ms as i64)
            .map(|m| m.id.clone())
            .collect();
        if !expired.is_empty() {
            tracing::info!(group = %self.id, members = ?expired, "session timeout: removing members");
            for id in &expired {
                self.remove_member(id, fx);
            }
            self.members_changed(now, config, fx);
        }
        match self.state {
            GroupState::PreparingRebalance => self.maybe_complete_join(now, fx),
            GroupState::CompletingRebalance if now >= self.sync_deadline_ms => {
                // The leader never sent the assignment: start over.
                self.prepare_rebalance(now, config, fx);
            }
            _ => {}
        }
    }

    /// Checks an OffsetCommit against the group. `Ok(())` also for a simple (memberless)
    /// group's commit, generation < 0.
    pub fn check_commit(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: i64,
    ) -> Result<(), ResponseError> {
        let simple = generation < 0 && self.state == GroupState::Empty;
        if simple {
            return Ok(());
        }
        self.check_member(member_id, instance_id)?;
        match self.state {
            GroupState::Dead => return Err(ResponseError::CoordinatorNotAvailable),
            GroupState::Empty => return Err(ResponseError::UnknownMemberId),
            _ if generation != self.generation => return Err(ResponseError::IllegalGeneration),
            // As Kafka's ClassicGroup: only CompletingRebalance refuses (the member has its
            // new generation but not its assignment yet). In PreparingRebalance a member of
            // the current generation may still commit: consumers commit what they processed
            // when their partitions are revoked, before rejoining.
            GroupState::CompletingRebalance => return Err(ResponseError::RebalanceInProgress),
            GroupState::PreparingRebalance | GroupState::Stable => {}
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat_ms = now;
        }
        Ok(())
    }

    /// Checks a TxnOffsetCommit (v3+ names the member) against the group.
    pub fn check_txn_commit(
        &self,
        member: Option<(i32, &str, Option<&str>)>,
    ) -> Result<(), ResponseError> {
        if let Some((generation, member_id, instance_id)) = member {
            // A group member's commit is checked against the group, as OffsetCommit.
            if generation >= 0 || !member_id.is_empty() {
                self.check_member(member_id, instance_id)?;
                if generation != self.generation {
                    return Err(ResponseError::IllegalGeneration);
                }
            }
        }
        Ok(())
    }

    /// DeleteGroups accepts only a group without members.
    pub fn deletable(&self) -> bool {
        self.members.is_empty() && self.state == GroupState::Empty
    }

    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = instance_id {
            if let Some(current) = self.static_members.get(instance) {
                if current != member_id {
                    return Err(ResponseError::FencedInstanceId);
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        Ok(())
    }

    fn remove_member(&mut self, id: &str, fx: &mut Effects) {
        if let Some(mut m) = self.members.remove(id) {
            if let Some(instance) = &m.instance_id {
                if self.static_members.get(instance).is_some_and(|x| x == id) {
                    self.static_members.remove(instance);
                }
            }
            if let Some(w) = m.join_waiter.take() {
                fx.joins
                    .push((w, JoinResult::error(ResponseError::UnknownMemberId, id)));
            }
            if let Some(w) = m.sync_waiter.take() {
                fx.syncs
                    .push((w, SyncResult::error(ResponseError::UnknownMemberId)));
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    fn prepare_rebalance(&mut self, now: i64, config: &GroupConfig, fx: &mut Effects) {
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                fx.syncs
                    .push((w, SyncResult::error(ResponseError::RebalanceInProgress)));
            }
        }
        if self.state == GroupState::Empty {
            self.initial_delay_until_ms = now + config.initial_rebalance_delay_ms;
        }
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline_ms = now + self.max_rebalance_timeout().max(1);
    }

    fn join_result_for(&self, member_id: &str) -> JoinResult {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.by_join_order()
                .into_iter()
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
            error: NONE,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            skip_assignment: false,
            members,
            durability: Durability::Done,
        }
    }

    /// Topics the members subscribe to (consumer protocol metadata: version i16, then an array
    /// of topic names).
    pub fn subscribed_topics(&self) -> Vec<String> {
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

    /// DescribeGroups' view.
    pub fn describe(&self) -> GroupDescription {
        let protocol = self.protocol.clone().unwrap_or_default();
        let stable = self.state == GroupState::Stable;
        GroupDescription {
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: if stable || self.state == GroupState::CompletingRebalance {
                protocol.clone()
            } else {
                String::new()
            },
            members: self
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
        }
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
