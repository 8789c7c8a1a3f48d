"""Group administration against the main broker, through confluent-kafka's AdminClient
(ListGroups, DescribeGroups, OffsetFetch, OffsetCommit as admin, DeleteGroups) and
kafka-python's KafkaAdminClient (the same plus OffsetDelete), with a live member and after it
left. Kafka's answers: DeleteGroups on a group with members is NON_EMPTY_GROUP; an admin
OffsetCommit (generation -1, no member id) on a group with members is UNKNOWN_MEMBER_ID;
OffsetDelete of a partition whose topic the live group subscribes to is GROUP_SUBSCRIBED_TO_TOPIC;
all three work once the group is empty."""

import pytest
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError, KafkaException
from confluent_kafka import TopicPartition as CKTopicPartition
from confluent_kafka.admin import AdminClient
from kafka import TopicPartition
from kafka.errors import GroupIdNotFoundError
from kafka.structs import OffsetAndMetadata

from groups.members import CKMember, KPMember, consumed_keys, wait_assignments, wait_committed, wait_consumed
from groups.util import (create_topic, ends_of, kp_admin, kp_group_offsets, kp_member_partitions, produce_keyed,
                         unique, wait_for)

PARTITIONS = 3


def ck_listing(admin, group):
    res = admin.list_consumer_groups(request_timeout=15).result(20)
    assert not res.errors, res.errors
    found = [g for g in res.valid if g.group_id == group]
    return found[0] if found else None


def ck_offsets(admin, group):
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(20)
    assert res.group_id == group
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions if tp.offset >= 0}


def ck_error_code(fut):
    """The error of an admin future: the exception's code, or the first partition error."""
    try:
        res = fut.result(20)
    except KafkaException as e:
        return e.args[0].code()
    errs = [tp.error for tp in getattr(res, "topic_partitions", []) if tp.error is not None]
    return errs[0].code() if errs else None


def expect_consumed_from(members, produced, start):
    want = {po for po in produced if po[1] >= start.get(po[0], 0)}
    wait_consumed(members, want)
    got = consumed_keys(members)
    assert set(got) == want, (f"consumed {sorted(set(got) - want)[:10]} below the committed offsets "
                              f"{start}, missing {sorted(want - set(got))[:10]}")
    assert all(len(v) == 1 for v in got.values())


def test_confluent_admin_group_operations(bootstrap):
    topic, group = unique("ck-admin-topic"), unique("ck-admin")
    create_topic(bootstrap, topic, PARTITIONS)
    produced = produce_keyed(bootstrap, topic, 90, "ca")
    ends = ends_of(produced)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    member = CKMember("ck-admin-member", bootstrap, [topic], group)
    members = [member]
    try:
        member.start()
        wait_assignments([member], [PARTITIONS])
        wait_consumed([member], produced)
        wait_committed([member], ends)

        listing = ck_listing(admin, group)
        assert listing is not None, f"{group} not in list_consumer_groups"
        assert listing.state == ConsumerGroupState.STABLE and not listing.is_simple_consumer_group

        desc = admin.describe_consumer_groups([group])[group].result(20)
        assert desc.group_id == group and desc.state == ConsumerGroupState.STABLE
        assert not desc.is_simple_consumer_group
        assert desc.partition_assignor == "range"
        nodes = admin.list_topics(timeout=10).brokers
        assert desc.coordinator is not None and desc.coordinator.id in nodes
        assert len(desc.members) == 1
        m = desc.members[0]
        assert m.client_id == "ck-admin-member" and m.member_id and m.host
        assert {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions} == \
            {(topic, p) for p in range(PARTITIONS)}

        assert ck_offsets(admin, group) == {(topic, p): o for p, o in ends.items()}

        # With a live member: DeleteGroups is refused, and so is an admin offset commit.
        assert ck_error_code(admin.delete_consumer_groups([group])[group]) == KafkaError.NON_EMPTY_GROUP
        alter = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, [CKTopicPartition(topic, 0, 1)])])[group]
        assert ck_error_code(alter) == KafkaError.UNKNOWN_MEMBER_ID
        assert ck_offsets(admin, group) == {(topic, p): o for p, o in ends.items()}

        member.close()
        wait_for(lambda: (ck_listing(admin, group) or listing).state == ConsumerGroupState.EMPTY, 15,
                 f"{group} to become Empty after its only member left")

        # Empty: offsets can be altered, and a new member starts from them.
        new = {0: 5, 1: 0}
        res = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
            group, [CKTopicPartition(topic, p, o) for p, o in new.items()])])[group].result(20)
        assert all(tp.error is None for tp in res.topic_partitions), res.topic_partitions
        assert ck_offsets(admin, group) == {(topic, 0): 5, (topic, 1): 0, (topic, 2): ends[2]}

        again = CKMember("ck-admin-member-2", bootstrap, [topic], group)
        members.append(again)
        again.start()
        expect_consumed_from([again], produced, {0: 5, 1: 0, 2: ends[2]})
        wait_committed([again], {0: ends[0], 1: ends[1]})
        again.close()
        wait_for(lambda: (ck_listing(admin, group) or listing).state == ConsumerGroupState.EMPTY, 15,
                 f"{group} to become Empty again")

        assert admin.delete_consumer_groups([group])[group].result(20) is None
        assert ck_listing(admin, group) is None, "a deleted group is still listed"
        assert ck_offsets(admin, group) == {}
    finally:
        for mm in members:
            if mm.is_alive():
                mm.close()
    for mm in members:
        mm.check()


def test_kafka_python_admin_group_operations(bootstrap):
    topic, group, missing = unique("kp-admin-topic"), unique("kp-admin"), unique("kp-admin-none")
    create_topic(bootstrap, topic, PARTITIONS)
    produced = produce_keyed(bootstrap, topic, 90, "ka")
    ends = ends_of(produced)
    tp = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    member = KPMember("kp-admin-member", bootstrap, [topic], group)
    members = [member]

    def listed(admin):
        return {g["group_id"]: g for g in admin.list_groups()}

    try:
        member.start()
        wait_assignments([member], [PARTITIONS])
        wait_consumed([member], produced)
        wait_committed([member], ends)
        with kp_admin(bootstrap) as admin:
            g = listed(admin).get(group)
            assert g is not None and g["protocol_type"] == "consumer" and g["group_state"] == "Stable", g

            desc = admin.describe_groups([group])[group]
            assert desc["error"] is None and desc["group_state"] == "Stable", desc
            assert desc["protocol_type"] == "consumer" and desc["protocol_data"] == "range"
            assert len(desc["members"]) == 1
            m = desc["members"][0]
            assert m["client_id"] == "kp-admin-member"
            assert m["member_metadata"]["topics"] == [topic]
            assert kp_member_partitions(m) == {(topic, p) for p in range(PARTITIONS)}

            offsets = admin.list_group_offsets({group: None})[group]
            assert {t: (om.offset, om.metadata) for t, om in offsets.items()} == \
                {tp[p]: (o, "") for p, o in ends.items()}

            # A live member: NON_EMPTY_GROUP, GROUP_SUBSCRIBED_TO_TOPIC, UNKNOWN_MEMBER_ID.
            assert admin.delete_groups([group]) == {group: "NonEmptyGroupError"}
            res = admin.delete_group_offsets(group, [tp[0]])
            assert {t: e.__name__ for t, e in res.items()} == {tp[0]: "GroupSubscribedToTopicError"}
            res = admin.alter_group_offsets(group, {tp[0]: OffsetAndMetadata(1, "", -1)})
            assert {t: e.__name__ for t, e in res.items()} == {tp[0]: "UnknownMemberIdError"}
            assert kp_group_offsets(bootstrap, group) == {(topic, p): (o, "") for p, o in ends.items()}

        member.close()
        with kp_admin(bootstrap) as admin:
            wait_for(lambda: listed(admin).get(group, {}).get("group_state") == "Empty", 15,
                     f"{group} to become Empty after its only member left")
            # Empty: alter partition 0 (with metadata), delete partition 1's offset (OffsetDelete).
            res = admin.alter_group_offsets(group, {tp[0]: OffsetAndMetadata(3, "altered", -1)})
            assert {t: e.__name__ for t, e in res.items()} == {tp[0]: "NoError"}
            res = admin.delete_group_offsets(group, [tp[1]])
            assert {t: e.__name__ for t, e in res.items()} == {tp[1]: "NoError"}
            assert kp_group_offsets(bootstrap, group) == {(topic, 0): (3, "altered"), (topic, 2): (ends[2], "")}

        # A new member: partition 0 from 3, partition 1 from the start (no offset:
        # auto_offset_reset=earliest), partition 2 nothing (committed at its end).
        again = KPMember("kp-admin-member-2", bootstrap, [topic], group)
        members.append(again)
        again.start()
        expect_consumed_from([again], produced, {0: 3, 1: 0, 2: ends[2]})
        wait_committed([again], {0: ends[0], 1: ends[1]})
        again.close()

        with kp_admin(bootstrap) as admin:
            wait_for(lambda: listed(admin).get(group, {}).get("group_state") == "Empty", 15, f"{group} to become Empty again")
            assert admin.delete_groups([group, missing]) == {group: "OK", missing: "GroupIdNotFoundError"}
            assert group not in listed(admin), "a deleted group is still listed"
            assert admin.list_group_offsets({group: None})[group] == {}
            with pytest.raises(GroupIdNotFoundError):
                admin.delete_group_offsets(missing, [tp[0]])
    finally:
        for mm in members:
            if mm.is_alive():
                mm.close()
    for mm in members:
        mm.check()
