"""Consumer groups through confluent-kafka 2.16 / librdkafka 2.16 against the main broker:
cooperative-sticky incremental rebalancing, and static membership (group.instance.id, KIP-345).

Every member commits synchronously what it consumed, and membership changes only after all
produced records were consumed and committed; so a correct broker hands each new owner of a
partition exactly the committed offset, and every record is read exactly once."""

import time

from confluent_kafka.admin import AdminClient

from groups.members import CKMember, consumed_keys, ends_of, wait_assignments, wait_committed, wait_consumed
from groups.util import create_topic, produce_keyed, unique, wait_for


def events_since(member, index):
    evs = member.events[index:]
    revoked = set().union(*[set(p) for _, kind, p in evs if kind == "revoke"])
    assigned = set().union(*[set(p) for _, kind, p in evs if kind == "assign"])
    lost = [e for e in evs if e[1] == "lost"]
    return revoked, assigned, lost, evs


def check_incremental(member, index, lost, gained):
    """Since events[index], the member was told to revoke exactly `lost` and assign exactly
    `gained` (incremental callbacks, never its whole assignment)."""
    revoked, assigned, lost_evs, evs = events_since(member, index)
    assert not lost_evs, f"{member.name}: partitions lost: {lost_evs}"
    assert revoked == set(lost), f"{member.name}: revoked {sorted(revoked)}, expected {sorted(lost)}; events {evs}"
    assert assigned == set(gained), f"{member.name}: assigned {sorted(assigned)}, expected {sorted(gained)}; events {evs}"


def check_exactly_once(members, produced):
    got = consumed_keys(members)
    missing = sorted(po for po in produced if po not in got)
    assert not missing, f"{len(missing)} records never consumed, e.g. {missing[:10]}"
    dups = {po: [s[0] for s in seen] for po, seen in got.items() if len(seen) > 1}
    assert not dups, f"records consumed more than once (not from the committed offset): {dict(sorted(dups.items())[:10])}"
    wrong = {po for po, seen in got.items() if po not in produced or (seen[0][1], seen[0][2]) != produced[po]}
    assert not wrong, f"records that differ from what was produced: {sorted(wrong)[:10]}"


def test_cooperative_sticky_incremental_rebalance(bootstrap):
    topic, group = unique("ck-coop-topic"), unique("ck-coop")
    create_topic(bootstrap, topic, 6)
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    a, b, c = (CKMember(f"ck-coop-{n}", bootstrap, [topic], group, **conf) for n in "abc")
    members = [a, b, c]
    produced = {}
    try:
        a.start()
        wait_assignments([a], [6])
        a_first = a.assignment

        # b joins: a gives up 3 partitions incrementally (one revoke of 3, not of all 6).
        ia = len(a.events)
        b.start()
        a_2, b_2 = wait_assignments([a, b], [3, 3])
        assert a_2 <= a_first
        check_incremental(a, ia, a_first - a_2, set())
        check_incremental(b, 0, set(), b_2)

        batch = produce_keyed(bootstrap, topic, 300, "c1")
        produced.update(batch)
        wait_consumed([a, b], batch)
        wait_committed([a, b], ends_of(produced))

        # c joins: a and b keep a subset of what they had (sticky) and revoke only what moves.
        ia, ib = len(a.events), len(b.events)
        c.start()
        a_3, b_3, c_3 = wait_assignments([a, b, c], [2, 2, 2])
        assert a_3 <= a_2 and b_3 <= b_2, f"not sticky: a {sorted(a_2)}->{sorted(a_3)}, b {sorted(b_2)}->{sorted(b_3)}"
        check_incremental(a, ia, a_2 - a_3, set())
        check_incremental(b, ib, b_2 - b_3, set())
        check_incremental(c, 0, set(), c_3)

        batch = produce_keyed(bootstrap, topic, 300, "c2")
        produced.update(batch)
        wait_consumed([a, b, c], batch)
        wait_committed([a, b, c], ends_of(produced))

        # c leaves: its partitions are added to a and b; nothing is revoked from them.
        ia, ib = len(a.events), len(b.events)
        c.close()
        a_4, b_4 = wait_assignments([a, b], [3, 3])
        assert a_3 <= a_4 and b_3 <= b_4 and (a_4 | b_4) == frozenset(range(6))
        check_incremental(a, ia, set(), a_4 - a_3)
        check_incremental(b, ib, set(), b_4 - b_3)

        batch = produce_keyed(bootstrap, topic, 300, "c3")
        produced.update(batch)
        wait_consumed([a, b], batch)
        check_exactly_once(members, produced)
    finally:
        for m in members:
            if m.is_alive():
                m.close()
    for m in members:
        m.check()


def describe(bootstrap, group):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return admin.describe_consumer_groups([group])[group].result(15)


def static_pair(bootstrap, topic, group, session_ms):
    conf = {"session.timeout.ms": session_ms, "statistics.interval.ms": 200}
    s2 = CKMember("static-2", bootstrap, [topic], group, **{"group.instance.id": f"{group}-inst-2"}, **conf)
    s1 = CKMember("static-1", bootstrap, [topic], group, **{"group.instance.id": f"{group}-inst-1"}, **conf)
    s1b = CKMember("static-1-again", bootstrap, [topic], group, **{"group.instance.id": f"{group}-inst-1"}, **conf)
    return s1, s2, s1b


def test_static_member_restart_keeps_assignment_without_rebalance(bootstrap):
    topic, group = unique("ck-static-topic"), unique("ck-static")
    create_topic(bootstrap, topic, 4)
    s1, s2, s1b = static_pair(bootstrap, topic, group, 20000)
    members = [s1, s2, s1b]
    produced = {}
    try:
        # s2 first (it becomes the leader), then s1: eager range assignment, 2 partitions each.
        s2.start()
        wait_assignments([s2], [4])
        s1.start()
        s1_parts, s2_parts = wait_assignments([s1, s2], [2, 2])
        batch = produce_keyed(bootstrap, topic, 100, "s1")
        produced.update(batch)
        wait_consumed([s1, s2], batch)
        wait_committed([s1, s2], ends_of(produced))

        desc = describe(bootstrap, group)
        ids = {m.group_instance_id: m.member_id for m in desc.members}
        assert set(ids) == {f"{group}-inst-1", f"{group}-inst-2"}, f"members: {ids}"
        wait_for(lambda: s2.rebalance_count() is not None, 10, "librdkafka statistics from s2")
        s2_events, s2_rebalances = len(s2.events), s2.rebalance_count()

        # A static member's close sends no LeaveGroup: the group keeps it (same member id) and
        # nothing moves to s2 while it is away (within session.timeout.ms).
        s1.close()
        time.sleep(3)
        assert s2.assignment == s2_parts and len(s2.events) == s2_events, \
            f"s2 rebalanced after the static member closed: {s2.events[s2_events:]}"
        desc = describe(bootstrap, group)
        away = {m.group_instance_id: m.member_id for m in desc.members}
        assert away == ids, f"the closed static member should still be in the group: {away} vs {ids}"

        batch = produce_keyed(bootstrap, topic, 100, "s2")
        produced.update(batch)

        # It comes back with the same group.instance.id: same partitions, and s2 sees no
        # rebalance (no callbacks, same rebalance count, same assignment).
        s1b.start()
        wait_assignments([s1b, s2], [s1_parts, s2_parts])
        wait_consumed([s1, s2, s1b], produced)
        time.sleep(2)
        assert len(s2.events) == s2_events, f"s2 got rebalance callbacks: {s2.events[s2_events:]}"
        assert s2.assignment == s2_parts
        assert s2.rebalance_count() == s2_rebalances, \
            f"s2's rebalance count went from {s2_rebalances} to {s2.rebalance_count()}"
        assert [(k, set(p)) for _, k, p in s1b.events] == [("assign", set(s1_parts))], s1b.events

        desc = describe(bootstrap, group)
        back = {m.group_instance_id: m.member_id for m in desc.members}
        assert set(back) == set(ids) and back[f"{group}-inst-2"] == ids[f"{group}-inst-2"]
        assert back[f"{group}-inst-1"] != ids[f"{group}-inst-1"], \
            "the rejoined static member should have a new member id (the old one is fenced)"
        check_exactly_once(members, produced)
    finally:
        for m in members:
            if m.is_alive():
                m.close()
    for m in members:
        m.check()


def test_static_member_expires_after_session_timeout(bootstrap):
    topic, group = unique("ck-static-exp-topic"), unique("ck-static-exp")
    create_topic(bootstrap, topic, 4)
    session_ms = 6000
    s1, s2, _ = static_pair(bootstrap, topic, group, session_ms)
    members = [s1, s2]
    produced = {}
    try:
        s2.start()
        wait_assignments([s2], [4])
        s1.start()
        s1_parts, s2_parts = wait_assignments([s1, s2], [2, 2])
        batch = produce_keyed(bootstrap, topic, 100, "e1")
        produced.update(batch)
        wait_consumed([s1, s2], batch)
        wait_committed([s1, s2], ends_of(produced))

        s2_events = len(s2.events)
        s1.close()
        closed_at = time.monotonic()
        batch = produce_keyed(bootstrap, topic, 100, "e2")
        produced.update(batch)
        # No LeaveGroup: s2 takes over only once s1's session times out.
        wait_assignments([s2], [4], timeout=session_ms / 1000 + 20)
        took = time.monotonic() - closed_at
        assert took >= session_ms / 1000 - 1.5, \
            f"s2 took over {took:.1f} s after the static member closed, before session.timeout.ms={session_ms}"
        revoked, assigned, _, evs = events_since(s2, s2_events)
        assert assigned == set(range(4)), evs
        wait_consumed([s1, s2], produced)
        check_exactly_once(members, produced)
    finally:
        for m in members:
            if m.is_alive():
                m.close()
    for m in members:
        m.check()
