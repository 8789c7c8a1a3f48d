//! The classic state machine driven by a manual clock: no sleeps, every deadline reached by
//! moving time. Most tests go through the coordinator on an in-memory log, so the records
//! written are also checked by reloading a fresh coordinator from the same log.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::state::{Effects, Group};
use super::*;
use crate::clock::Clock;
use crate::log::{LogConfig, PartitionLog};

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 0,
        min_session_timeout_ms: 1_000,
        max_session_timeout_ms: 300_000,
        offsets_retention_ms: 7 * 24 * 3_600_000,
    }
}

fn coordinator() -> (GroupCoordinator, Clock, Arc<PartitionLog>) {
    let clock = Clock::manual(1_000_000);
    let log = Arc::new(PartitionLog::in_memory(LogConfig::default()));
    let c = GroupCoordinator::open_with_clock(log.clone(), config(), clock.clone()).unwrap();
    (c, clock, log)
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

fn static_req(member_id: &str, instance: &str) -> JoinRequest {
    JoinRequest {
        group_instance_id: Some(instance.into()),
        ..join_req(member_id)
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

fn later<T>(reply: Reply<T>) -> tokio::sync::oneshot::Receiver<T> {
    match reply {
        Reply::Later(rx) => rx,
        Reply::Now(_) => panic!("expected to wait"),
    }
}

fn sync(
    c: &GroupCoordinator,
    joined: &JoinResult,
    assignments: Vec<(String, Bytes)>,
) -> Reply<SyncResult> {
    c.sync(SyncRequest {
        group_id: "g",
        generation: joined.generation_id,
        member_id: &joined.member_id,
        instance_id: None,
        protocol_type: Some("consumer"),
        protocol_name: Some("range"),
        assignments,
    })
}

fn sync_alone(c: &GroupCoordinator, joined: &JoinResult) -> SyncResult {
    let reply = sync(
        c,
        joined,
        vec![(joined.member_id.clone(), Bytes::from_static(b"all"))],
    );
    answered(reply).expect("the leader's sync is answered at once")
}

/// A lone member joined and synced: the group is stable at generation 1.
fn stable_alone(c: &GroupCoordinator) -> JoinResult {
    let joined = answered(c.join(join_req(""), client())).expect("a lone member joins at once");
    assert_eq!(joined.error, 0);
    assert_eq!(sync_alone(c, &joined).error, 0);
    joined
}

fn state(c: &GroupCoordinator) -> GroupState {
    c.describe("g").expect("group exists").state
}

fn offset(o: i64) -> CommittedOffset {
    CommittedOffset {
        offset: o,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 0,
    }
}

fn commit(
    c: &GroupCoordinator,
    group: &str,
    generation: i32,
    member: &str,
    partition: i32,
    o: i64,
) -> Result<Vec<i16>, ResponseError> {
    c.commit_offsets(
        group,
        generation,
        member,
        None,
        vec![("t".into(), partition, offset(o), true)],
    )
    .map(|(errors, _)| errors)
}

#[test]
fn one_member_joins_syncs_and_is_stable() {
    let (c, _, _) = coordinator();
    let joined = answered(c.join(join_req(""), client())).unwrap();
    assert_eq!(joined.error, 0);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader, joined.member_id, "the lone member leads");
    assert_eq!(joined.members.len(), 1, "the leader sees every member");
    assert_eq!(state(&c), GroupState::CompletingRebalance);
    let synced = sync_alone(&c, &joined);
    assert_eq!(synced.error, 0);
    assert_eq!(&synced.assignment[..], b"all");
    let g = c.describe("g").unwrap();
    assert_eq!(g.state, GroupState::Stable);
    assert_eq!(g.protocol, "range");
    assert_eq!(&g.members[0].assignment[..], b"all");
}

#[test]
fn several_members_rebalance_into_one_generation() {
    let (c, _, _) = coordinator();
    let a = stable_alone(&c);
    // b joins: a rebalance starts, b waits for a to rejoin.
    let mut b_rx = later(c.join(join_req(""), client()));
    assert_eq!(state(&c), GroupState::PreparingRebalance);
    assert!(b_rx.try_recv().is_err());
    // a rejoins: everyone is in, the join phase completes for both.
    let a2 = answered(c.join(join_req(&a.member_id), client())).unwrap();
    let b = b_rx.try_recv().expect("b's join was answered");
    assert_eq!((a2.error, b.error), (0, 0));
    assert_eq!(a2.generation_id, 2);
    assert_eq!(b.generation_id, 2);
    assert_eq!(a2.leader, a.member_id, "the earlier member leads");
    assert_eq!(b.leader, a.member_id);
    assert_eq!(a2.members.len(), 2);
    assert!(b.members.is_empty(), "only the leader gets the members");
    assert_eq!(state(&c), GroupState::CompletingRebalance);
    // b syncs first and waits for the leader's assignment.
    let mut b_sync = later(sync(&c, &b, Vec::new()));
    let a_sync = answered(sync(
        &c,
        &a2,
        vec![
            (a.member_id.clone(), Bytes::from_static(b"p0")),
            (b.member_id.clone(), Bytes::from_static(b"p1")),
        ],
    ))
    .unwrap();
    assert_eq!(&a_sync.assignment[..], b"p0");
    assert_eq!(&b_sync.try_recv().unwrap().assignment[..], b"p1");
    assert_eq!(state(&c), GroupState::Stable);
}

#[test]
fn a_silent_member_expires_exactly_after_its_session_timeout() {
    let (c, clock, _) = coordinator();
    let joined = stable_alone(&c);
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
    let (c, clock, _) = coordinator();
    let a = stable_alone(&c);
    // b joins: a rebalance starts and b waits for a to rejoin.
    let mut b_rx = later(c.join(join_req(""), client()));
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
    let hb = c.heartbeat("g", a.generation_id, &a.member_id, None);
    assert_eq!(hb, ResponseError::UnknownMemberId.code(), "a is out");
}

#[test]
fn the_clock_visits_only_groups_that_have_a_deadline() {
    let (c, clock, _) = coordinator();
    let joined = stable_alone(&c);
    assert_eq!(c.scheduled(), 1, "the member's session");
    let left = c.leave("g", &[(joined.member_id.clone(), None)]).unwrap();
    assert_eq!(left, vec![0]);
    // Empty, no offsets to expire: nothing will happen to it without a request, so the
    // clock has nothing to look at (it is kept, as before, for its protocol type).
    assert_eq!(state(&c), GroupState::Empty);
    assert_eq!(c.scheduled(), 0);
    clock.advance(i64::from(SESSION_MS) * 100);
    c.tick();
    assert_eq!(state(&c), GroupState::Empty);
}

#[test]
fn a_static_member_rejoins_with_its_assignment_and_fences_the_old_id() {
    let (c, _, log) = coordinator();
    let first = answered(c.join(static_req("", "i1"), client())).unwrap();
    assert_eq!(first.error, 0);
    assert_eq!(sync_alone(&c, &first).error, 0);
    let end = log.log_end_offset();
    // The member restarts: a new member id, the same instance id, nothing else changed.
    let again = answered(c.join(static_req("", "i1"), client())).expect("answered at once");
    assert_eq!(again.error, 0);
    assert_ne!(again.member_id, first.member_id);
    assert_eq!(again.generation_id, first.generation_id, "no rebalance");
    assert!(again.skip_assignment, "the leader keeps its assignment");
    assert_eq!(state(&c), GroupState::Stable);
    assert_eq!(
        log.log_end_offset(),
        end + 1,
        "the new member id is stored before the answer"
    );
    let old = c.heartbeat("g", first.generation_id, &first.member_id, Some("i1"));
    assert_eq!(old, ResponseError::FencedInstanceId.code());
    let synced = answered(c.sync(SyncRequest {
        group_id: "g",
        generation: again.generation_id,
        member_id: &again.member_id,
        instance_id: Some("i1"),
        protocol_type: None,
        protocol_name: None,
        assignments: Vec::new(),
    }))
    .unwrap();
    assert_eq!(synced.error, 0);
    assert_eq!(
        &synced.assignment[..],
        b"all",
        "the assignment carried over"
    );
}

#[test]
fn leaving_empties_the_group_and_unknown_members_are_refused() {
    let (c, _, _) = coordinator();
    let joined = stable_alone(&c);
    let unknown = c.leave("g", &[("nobody".into(), None)]).unwrap();
    assert_eq!(unknown, vec![ResponseError::UnknownMemberId.code()]);
    let left = c.leave("g", &[(joined.member_id.clone(), None)]).unwrap();
    assert_eq!(left, vec![0]);
    assert_eq!(state(&c), GroupState::Empty);
    assert!(matches!(
        c.leave("other", &[(joined.member_id.clone(), None)]),
        Err(ResponseError::UnknownMemberId)
    ));
}

#[test]
fn commits_are_accepted_while_preparing_and_refused_while_completing() {
    let (c, _, _) = coordinator();
    let a = stable_alone(&c);
    assert_eq!(
        commit(&c, "g", a.generation_id, &a.member_id, 0, 5),
        Ok(vec![0])
    );
    // b joins: PreparingRebalance; a still commits what it processed, at its generation.
    let _b = later(c.join(join_req(""), client()));
    assert_eq!(state(&c), GroupState::PreparingRebalance);
    assert_eq!(
        commit(&c, "g", a.generation_id, &a.member_id, 0, 6),
        Ok(vec![0])
    );
    // a rejoins: CompletingRebalance, its new generation has no assignment yet.
    let a2 = answered(c.join(join_req(&a.member_id), client())).unwrap();
    assert_eq!(state(&c), GroupState::CompletingRebalance);
    assert_eq!(
        commit(&c, "g", a2.generation_id, &a.member_id, 0, 7),
        Err(ResponseError::RebalanceInProgress)
    );
    let fetched = c.fetch_offsets("g", None);
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].2.as_ref().unwrap().offset, 6);
}

#[test]
fn a_stale_generation_or_an_unknown_member_is_refused() {
    let (c, _, _) = coordinator();
    let a = stable_alone(&c);
    let stale = a.generation_id - 1;
    assert_eq!(
        commit(&c, "g", stale, &a.member_id, 0, 1),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        c.heartbeat("g", stale, &a.member_id, None),
        ResponseError::IllegalGeneration.code()
    );
    let synced = answered(c.sync(SyncRequest {
        group_id: "g",
        generation: stale,
        member_id: &a.member_id,
        instance_id: None,
        protocol_type: None,
        protocol_name: None,
        assignments: Vec::new(),
    }))
    .unwrap();
    assert_eq!(synced.error, ResponseError::IllegalGeneration.code());
    assert_eq!(
        commit(&c, "g", a.generation_id, "nobody", 0, 1),
        Err(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        c.heartbeat("g", a.generation_id, "nobody", None),
        ResponseError::UnknownMemberId.code()
    );
    let joined = answered(c.join(join_req("nobody"), client())).unwrap();
    assert_eq!(joined.error, ResponseError::UnknownMemberId.code());
    assert_eq!(
        commit(&c, "nowhere", 3, "nobody", 0, 1),
        Err(ResponseError::IllegalGeneration),
        "a member's commit to an unknown group"
    );
    assert!(c.fetch_offsets("g", None).is_empty(), "nothing was written");
}

#[test]
fn transactional_offsets_apply_at_the_commit_marker_only() {
    let (c, _, _) = coordinator();
    let txn_commit = |producer_id: i64, o: i64| {
        c.commit_txn_offsets(
            "g",
            producer_id,
            0,
            None,
            vec![("t".into(), 0, offset(o), true)],
        )
        .unwrap()
    };
    txn_commit(7, 10);
    assert!(
        c.fetch_offsets("g", None).is_empty(),
        "pending until the marker"
    );
    assert_eq!(c.pending_txn_partitions("g").len(), 1);
    c.write_txn_marker(7, 0, false).unwrap();
    assert!(c.fetch_offsets("g", None).is_empty(), "aborted");
    txn_commit(8, 11);
    c.write_txn_marker(8, 0, true).unwrap();
    let fetched = c.fetch_offsets("g", None);
    assert_eq!(fetched[0].2.as_ref().unwrap().offset, 11);
    assert!(c.pending_txn_partitions("g").is_empty());
}

#[test]
fn a_reload_from_the_log_gives_the_state_the_writes_left() {
    let (c, clock, log) = coordinator();
    // g: two members, stable, offsets committed.
    let a = stable_alone(&c);
    let mut b_rx = later(c.join(join_req(""), client()));
    let a2 = answered(c.join(join_req(&a.member_id), client())).unwrap();
    let b = b_rx.try_recv().unwrap();
    let _b_sync = sync(&c, &b, Vec::new());
    let assignment = vec![
        (a.member_id.clone(), Bytes::from_static(b"p0")),
        (b.member_id.clone(), Bytes::from_static(b"p1")),
    ];
    assert_eq!(answered(sync(&c, &a2, assignment)).unwrap().error, 0);
    assert_eq!(
        commit(&c, "g", a2.generation_id, &b.member_id, 0, 40),
        Ok(vec![0])
    );
    assert_eq!(
        commit(&c, "g", a2.generation_id, &a.member_id, 1, 41),
        Ok(vec![0])
    );
    // s: a simple group's commits, one of them deleted again.
    assert_eq!(commit(&c, "s", -1, "", 0, 1), Ok(vec![0]));
    assert_eq!(commit(&c, "s", -1, "", 1, 2), Ok(vec![0]));
    let (deleted, _) = c.delete_offsets("s", &[("t".into(), 1)]).unwrap();
    assert_eq!(deleted, vec![0]);
    // e: a consumer group whose only member left (Empty, generation 2, offsets kept).
    let mut e = join_req("");
    e.group_id = "e".into();
    let e1 = answered(c.join(e, client())).unwrap();
    assert_eq!(
        commit(&c, "e", -1, "", 0, 3),
        Err(ResponseError::UnknownMemberId)
    );
    c.leave("e", &[(e1.member_id.clone(), None)]).unwrap();
    assert_eq!(commit(&c, "e", -1, "", 0, 3), Ok(vec![0]));
    // d: created, then deleted.
    assert_eq!(commit(&c, "d", -1, "", 0, 9), Ok(vec![0]));
    assert_eq!(c.delete_group("d").0, 0);
    // x: transactional offsets, one transaction committed, one still open.
    let txn = |producer_id: i64, partition: i32, o: i64| {
        c.commit_txn_offsets(
            "x",
            producer_id,
            0,
            None,
            vec![("t".into(), partition, offset(o), true)],
        )
        .unwrap()
    };
    txn(7, 0, 70);
    c.write_txn_marker(7, 0, true).unwrap();
    txn(8, 1, 80);

    let before = c.snapshot();
    assert_eq!(
        before.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        vec!["e", "g", "s", "x"]
    );
    let reloaded = GroupCoordinator::open_with_clock(log, config(), clock.clone()).unwrap();
    assert_eq!(reloaded.snapshot(), before);
    // The reloaded stable group carries on: its members heartbeat at their generation.
    assert_eq!(
        reloaded.heartbeat("g", a2.generation_id, &b.member_id, None),
        0
    );
    // And the open transaction still completes.
    reloaded.write_txn_marker(8, 0, true).unwrap();
    assert_eq!(reloaded.fetch_offsets("x", None).len(), 2);
}

#[test]
fn the_state_machine_alone_returns_its_answers_and_what_to_store() {
    // One group driven directly: no coordinator, no log, no lock.
    let config = config();
    let now = 5_000;
    let mut g = Group::new("g", now);
    let mut fx = Effects::default();
    let reply = g.join(join_req(""), client(), now, &config, 1, 0, &mut fx);
    assert!(matches!(reply, Reply::Later(_)));
    assert_eq!(
        fx.joins.len(),
        1,
        "the join phase completed: its answer is to send"
    );
    assert!(!fx.store, "a generation that is not synced is not stored");
    let joined = fx.joins.pop().unwrap().1;
    assert_eq!(g.state, GroupState::CompletingRebalance);

    let mut fx = Effects::default();
    let reply = g.sync(
        SyncRequest {
            group_id: "g",
            generation: joined.generation_id,
            member_id: &joined.member_id,
            instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![(joined.member_id.clone(), Bytes::from_static(b"a"))],
        },
        now,
        &mut fx,
    );
    assert!(matches!(reply, Reply::Later(_)));
    assert!(fx.store, "the synced generation is stored");
    assert_eq!(fx.syncs.len(), 1);
    assert_eq!(g.record().members.len(), 1);
    assert_eq!(g.next_deadline(), Some(now + SESSION_MS as i64 + 1));

    let mut fx = Effects::default();
    g.expire(now + SESSION_MS as i64 + 1, &config, &mut fx);
    assert_eq!(g.state, GroupState::Empty);
    assert!(fx.store, "an emptied group is stored");
    assert!(g.record().members.is_empty());
    assert_eq!(g.next_deadline(), None);
}
