"""Small helpers shared by the consumer-group tests."""

import contextlib
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(predicate, timeout, what, interval=0.05):
    """Polls predicate() until it returns something truthy; fails with `what` (a string or a
    callable giving one, evaluated at failure time) after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: "
                                 f"{what() if callable(what) else what}")
        time.sleep(interval)


@contextlib.contextmanager
def kp_admin(bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=unique("groups-admin"))
    try:
        yield admin
    finally:
        admin.close()


def create_topic(bootstrap, name, partitions):
    with kp_admin(bootstrap) as admin:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])


def produce_keyed(bootstrap, topic, count, tag):
    """Produces `count` keyed records (key b"<tag>-k<i>", value b"<tag>-v<i>") with the default
    partitioner and waits for every acknowledgement. Returns {(partition, offset): (key, value)}."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        futures = []
        for i in range(count):
            key, value = f"{tag}-k{i}".encode(), f"{tag}-v{i}".encode()
            futures.append((key, value, producer.send(topic, key=key, value=value)))
        producer.flush(30)
        out = {}
        for key, value, f in futures:
            md = f.get(timeout=30)
            out[(md.partition, md.offset)] = (key, value)
        assert len(out) == count
        return out
    finally:
        producer.close()


def end_offsets(bootstrap, topic, partitions):
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        return {tp.partition: off for tp, off in c.end_offsets(tps).items()}
    finally:
        c.close()


def kp_group_offsets(bootstrap, group):
    """Committed offsets of `group` through kafka-python's admin client (OffsetFetch, all
    partitions): {(topic, partition): (offset, metadata)}."""
    with kp_admin(bootstrap) as admin:
        res = admin.list_group_offsets({group: None})
    return {(tp.topic, tp.partition): (om.offset, om.metadata) for tp, om in res.get(group, {}).items()}


def kp_describe(bootstrap, group):
    with kp_admin(bootstrap) as admin:
        return admin.describe_groups([group])[group]


def kp_member_partitions(member):
    """{(topic, partition)} of a member as decoded by kafka-python's describe_groups."""
    assignment = member.get("member_assignment") or {}
    out = set()
    for t in assignment.get("assigned_partitions") or []:
        for p in t["partitions"]:
            out.add((t["topic"], p))
    return out


def ends_of(produced):
    """{partition: last produced offset + 1} of a produce_keyed() result."""
    out = {}
    for p, o in produced:
        out[p] = max(out.get(p, 0), o + 1)
    return out
