"""Consumer groups through kafka-python 3.0.12 against the main broker: three members of one
group share a 6-partition topic, one leaves, the others take over from its committed offsets."""

from groups.members import KPMember, consumed_keys, ends_of, wait_assignments, wait_committed, wait_consumed
from groups.util import create_topic, kp_group_offsets, produce_keyed, unique

PARTITIONS = 6
BATCH = 300


def test_three_members_then_one_leaves(bootstrap):
    topic, group = unique("kp-group-topic"), unique("kp-group")
    create_topic(bootstrap, topic, PARTITIONS)
    members = [KPMember(f"kp-member-{i}", bootstrap, [topic], group) for i in range(3)]
    try:
        for m in members:
            m.start()
        # Range assignment over 6 partitions and 3 members: 2 each, disjoint, all covered.
        first = wait_assignments(members, [2, 2, 2])
        assert frozenset().union(*first) == frozenset(range(PARTITIONS))

        # A: everyone consumes and commits.
        a = produce_keyed(bootstrap, topic, BATCH, "a")
        wait_consumed(members, a)
        wait_committed(members, ends_of(a))

        # B: the leaver keeps consuming but stops committing; its B records are the
        # at-least-once window that its successors must read again.
        leaver, survivors = members[2], members[:2]
        leaver.committing = False
        leaver_parts = leaver.assignment
        b = produce_keyed(bootstrap, topic, BATCH, "b")
        wait_consumed(members, b)
        wait_committed(survivors, {p: o for p, o in ends_of(b).items() if p not in leaver_parts})
        window = leaver.uncovered_records()
        assert window, "the leaver consumed nothing after its last commit: the test proves nothing"
        assert {p for p, _ in window} <= leaver_parts

        # The leaver closes (LeaveGroup); the other two take over its partitions: 3 each.
        leaver.close()
        second = wait_assignments(survivors, [3, 3])
        assert frozenset().union(*second) == frozenset(range(PARTITIONS))

        # C: produced after the rebalance, consumed by the survivors.
        c = produce_keyed(bootstrap, topic, BATCH, "c")
        wait_consumed(survivors, c)
        wait_consumed(members, {**a, **b})
        wait_committed(survivors, ends_of({**a, **b, **c}))

        produced = {**a, **b, **c}
        got = consumed_keys(members)
        # Every record consumed at least once, with the key and value it was produced with.
        missing = [po for po in produced if po not in got]
        assert not missing, f"lost records: {sorted(missing)[:20]}"
        wrong = {po: seen for po, seen in got.items()
                 if po not in produced or any((k, v) != produced[po] for _, k, v in seen)}
        assert not wrong, f"records that were not produced or differ: {dict(list(wrong.items())[:10])}"

        # Duplicates only within the at-least-once window: a record is read twice only if the
        # member that read it first never committed past it.
        uncovered = {m.name: m.uncovered_records() for m in members}
        bad_dups = {}
        for po, seen in got.items():
            for name, _, _ in seen[:-1]:
                if po not in uncovered[name]:
                    bad_dups[po] = [s[0] for s in seen]
        assert not bad_dups, ("records read again although the first reader had committed past "
                              f"them (the successor did not start at the committed offset): "
                              f"{dict(sorted(bad_dups.items())[:10])}")
        # ...and the leaver's window is read again by the new owners (they start exactly at the
        # leaver's committed offsets, not at the end).
        not_reread = sorted(po for po in window
                            if not any(name != leaver.name for name, _, _ in got.get(po, [])))
        assert not not_reread, (f"{len(not_reread)} of the leaver's {len(window)} uncommitted records were "
                                f"not re-read by the survivors, e.g. {not_reread[:10]}")
        reads = {po: len(seen) for po, seen in got.items() if len(seen) > 1}
        assert max(reads.values(), default=1) <= 2, \
            f"records read more than twice: {sorted(po for po, n in reads.items() if n > 2)[:10]}"
        assert set(window) <= set(reads)

        # The group's committed offsets are the end of every partition.
        committed = kp_group_offsets(bootstrap, group)
        ends = ends_of(produced)
        assert {p: committed.get((topic, p), (None, None))[0] for p in ends} == ends
    finally:
        for m in members:
            if m.is_alive():
                m.close()
    for m in members:
        m.check()


def test_commit_on_revoke_is_kept(bootstrap):
    """kafka-python auto-commits synchronously when a rebalance starts, before it revokes its
    partitions: the group is then PreparingRebalance, the member's generation still current,
    and Kafka accepts the commit. The next owner starts after what the first one processed
    (were the commit refused, it would read those records again: duplicates)."""
    import time

    from kafka import KafkaConsumer

    topic, group = unique("kp-revoke-topic"), unique("kp-revoke")
    create_topic(bootstrap, topic, 1)
    produced = produce_keyed(bootstrap, topic, 20, "r")

    def member():
        # The periodic auto-commit never fires (10 min): the commit on revoke is the only one.
        c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=True,
                          auto_commit_interval_ms=600000, auto_offset_reset="earliest",
                          heartbeat_interval_ms=200, session_timeout_ms=10000)
        c.subscribe([topic])
        return c

    first, second = member(), None
    try:
        seen = 0
        deadline = time.monotonic() + 20
        while seen < len(produced) and time.monotonic() < deadline:
            seen += sum(len(v) for v in first.poll(200).values())
        assert seen == len(produced)
        assert (topic, 0) not in kp_group_offsets(bootstrap, group), "nothing committed yet"
        second = member()
        # The second member's join starts a rebalance; the first commits when it learns of it.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not second.assignment() and \
                first._coordinator._generation.generation_id < 2:
            first.poll(100)
            second.poll(100)
        for _ in range(20):  # both are in the new generation: let them settle
            first.poll(50)
            second.poll(50)
        assert kp_group_offsets(bootstrap, group).get((topic, 0), (None,))[0] == len(produced)
    finally:
        first.close(autocommit=False)
        if second is not None:
            second.close(autocommit=False)
