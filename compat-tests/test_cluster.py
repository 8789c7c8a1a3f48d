"""Real clients against a 3-node ottla cluster (fixture `cluster3`: three processes, one
metadata quorum, free loopback ports, never 9092). scripts/test runs this file once, after the
per-mode compat suites, with the release binary; the per-mode runs skip it.

- topics of RF 3 x 12 partitions created with kafka-python's KafkaAdminClient and with
  confluent-kafka's AdminClient, each bootstrapped from a different single broker (both
  clients send CreateTopics to the controller they find in Metadata (the broker they asked); forwarding from other
  brokers is covered by tests/cluster_three.rs);
- every broker's Metadata (confluent list_topics with that broker as the only bootstrap, and
  answered by it: librdkafka names the broker that answered) shows the same leaders, replicas and ISR, and each broker
  leads 4 of the 12 partitions;
- confluent-kafka produces keyed records with headers to all 12 partitions (leaders on all
  three brokers; acks=1: replication is the next issue) and confluent-kafka and kafka-python
  read everything back byte for byte;
- the seed's consumer sample (unchanged) against the cluster. DEPENDS ON the group
  coordinator running on the leader of its __consumer_offsets partition (not built yet: until
  then each broker answers FindCoordinator with itself and keeps the groups of its own
  in-memory stand-in log), so it may fail for that reason.
"""

import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import NewTopic as CNewTopic

from cluster import answered_by, metadata_from

HERE = os.path.dirname(os.path.abspath(__file__))
PARTITIONS = 12
RF = 3


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def partition_map(md, topic):
    """{partition: (leader, replicas, isrs)} of `topic` in one Metadata answer."""
    t = md.topics[topic]
    assert t.error is None, f"{topic}: {t.error}"
    return {p.id: (p.leader, list(p.replicas), sorted(p.isrs)) for p in t.partitions.values()}


def wait_metadata_everywhere(cluster, topic, timeout=20):
    """Each broker's own Metadata (as the only bootstrap) once it shows all partitions of
    `topic` with a leader: {node id: (answering broker, controller, brokers, partition map)}."""
    out = {}
    deadline = time.monotonic() + timeout
    for nd in cluster.nodes:
        while True:
            md = metadata_from(nd.bootstrap, topic)
            t = md.topics.get(topic)
            if t is not None and t.error is None and len(t.partitions) == PARTITIONS \
                    and all(p.leader >= 0 for p in t.partitions.values()):
                out[nd.id] = (answered_by(md), md.controller_id, sorted(md.brokers), partition_map(md, topic))
                break
            assert time.monotonic() < deadline, f"node {nd.id} does not show {topic}: {t}"
            time.sleep(0.05)
    return out


def check_same_metadata_everywhere(cluster, topic):
    views = wait_metadata_everywhere(cluster, topic)
    for node_id, (by, _, brokers, _) in views.items():
        assert by == cluster.node(node_id).bootstrap, f"asked node {node_id}, {by} answered"
        assert brokers == [1, 2, 3], f"node {node_id} lists brokers {brokers}"
    first = views[1]
    for node_id, view in views.items():
        assert view[1] == node_id, f"node {node_id} names {view[1]} as the controller to ask"
        assert view[2:] == first[2:], f"node {node_id} disagrees with node 1:\n{view}\n{first}"
    pm = first[3]
    for p, (leader, replicas, isrs) in pm.items():
        assert sorted(replicas) == [1, 2, 3], f"partition {p}: replicas {replicas}"
        assert isrs == [1, 2, 3], f"partition {p}: ISR {isrs}"
        assert leader == replicas[0], f"partition {p}: leader {leader}, replicas {replicas}"
    leaders = Counter(leader for leader, _, _ in pm.values())
    assert leaders == {1: 4, 2: 4, 3: 4}, f"leaders per broker: {dict(leaders)}"
    return pm


def test_topic_created_with_kafka_python_admin(cluster3):
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = unique("kp-rf3")
    admin = KafkaAdminClient(bootstrap_servers=cluster3.node(2).bootstrap, client_id="cluster-kp-admin")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=RF)])
        described = admin.describe_topics([topic])
        assert described[0]["error_code"] == 0 and len(described[0]["partitions"]) == PARTITIONS
        cluster_info = admin.describe_cluster()
        assert sorted(b["broker_id"] for b in cluster_info["brokers"]) == [1, 2, 3]
    finally:
        admin.close()
    check_same_metadata_everywhere(cluster3, topic)


def test_topic_created_with_confluent_admin(cluster3):
    topic = unique("ck-rf3")
    admin = AdminClient({"bootstrap.servers": cluster3.node(3).bootstrap})
    fs = admin.create_topics([CNewTopic(topic, num_partitions=PARTITIONS, replication_factor=RF)],
                             operation_timeout=30)
    fs[topic].result(30)
    check_same_metadata_everywhere(cluster3, topic)
    # Creating it again through another broker: TOPIC_ALREADY_EXISTS.
    admin = AdminClient({"bootstrap.servers": cluster3.node(1).bootstrap})
    fs = admin.create_topics([CNewTopic(topic, num_partitions=1, replication_factor=1)])
    with pytest.raises(KafkaException) as e:
        fs[topic].result(30)
    assert e.value.args[0].name() == "TOPIC_ALREADY_EXISTS"


def records(topic, n):
    rng = random.Random(topic)
    return [(b"k%d-%d" % (i, rng.randrange(1 << 30)), rng.randbytes(rng.randrange(0, 2000)),
             [("i", str(i).encode()), ("r", rng.randbytes(8))]) for i in range(n)]


def test_produce_to_every_leader_and_consume_back(cluster3, capsys):
    topic = unique("rf3-data")
    admin = AdminClient({"bootstrap.servers": cluster3.bootstrap})
    admin.create_topics([CNewTopic(topic, num_partitions=PARTITIONS, replication_factor=RF)])[topic].result(30)
    pm = check_same_metadata_everywhere(cluster3, topic)

    n = 6000
    want = records(topic, n)
    acked = {}  # (partition, offset) -> index
    failed = []

    def report(i):
        # Delivery reports carry no headers: each record's callback knows its index.
        def on_delivery(err, msg):
            if err is not None:
                failed.append((msg.partition(), str(err)))
            else:
                acked[(msg.partition(), msg.offset())] = i
        return on_delivery

    p = Producer({"bootstrap.servers": cluster3.bootstrap, "acks": 1, "linger.ms": 5,
                  "enable.idempotence": False})
    t0 = time.monotonic()
    for i, (k, v, h) in enumerate(want):
        while True:
            try:
                p.produce(topic, key=k, value=v, headers=h, on_delivery=report(i))
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0, "produce did not complete within 60 s"
    produce_s = time.monotonic() - t0
    assert not failed, f"{len(failed)} deliveries failed, e.g. {failed[:5]}"
    assert len(acked) == n, f"{len(acked)} of {n} acknowledged"
    per_partition = Counter(part for part, _ in acked)
    assert sorted(per_partition) == list(range(PARTITIONS)), f"records per partition {dict(per_partition)}"
    per_leader = Counter()
    for part, count in per_partition.items():
        per_leader[pm[part][0]] += count
    assert sorted(per_leader) == [1, 2, 3], f"records per leader {dict(per_leader)}"
    for part, count in per_partition.items():
        offsets = sorted(o for q, o in acked if q == part)
        assert offsets == list(range(count)), f"partition {part}: offsets {offsets[:5]}..."

    # confluent-kafka reads every partition back from offset 0 (assign, no group).
    c = Consumer({"bootstrap.servers": cluster3.bootstrap, "group.id": unique("unused"),
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "enable.partition.eof": False})
    got = {}
    try:
        c.assign([TopicPartition(topic, part, 0) for part in range(PARTITIONS)])
        deadline = time.monotonic() + 60
        while len(got) < n and time.monotonic() < deadline:
            for m in c.consume(500, timeout=1.0):
                assert m.error() is None, m.error()
                got[(m.partition(), m.offset())] = (m.key(), m.value(), m.headers())
    finally:
        c.close()
    assert len(got) == n, f"confluent-kafka read {len(got)} of {n}"
    for (part, off), i in acked.items():
        k, v, h = want[i]
        assert got[(part, off)] == (k, v, h), f"partition {part} offset {off} differs"

    # kafka-python reads them back too.
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    kc = KafkaConsumer(bootstrap_servers=cluster3.bootstrap.split(","), enable_auto_commit=False)
    kgot = {}
    try:
        tps = [KTP(topic, part) for part in range(PARTITIONS)]
        kc.assign(tps)
        kc.seek_to_beginning(*tps)
        deadline = time.monotonic() + 60
        while len(kgot) < n and time.monotonic() < deadline:
            for recs in kc.poll(timeout_ms=1000).values():
                for r in recs:
                    kgot[(r.partition, r.offset)] = (r.key, r.value, [tuple(x) for x in r.headers])
    finally:
        kc.close()
    assert len(kgot) == n, f"kafka-python read {len(kgot)} of {n}"
    for (part, off), i in acked.items():
        k, v, h = want[i]
        assert kgot[(part, off)] == (k, v, h), f"kafka-python: partition {part} offset {off} differs"
    with capsys.disabled():
        print(f"\nCLUSTER produce/consume: {n} records to {PARTITIONS} partitions led by brokers "
              f"{dict(sorted(per_leader.items()))} (records per leader), produced in {produce_s:.2f} s, "
              f"read back byte for byte by confluent-kafka and kafka-python")


def test_seed_consumer_sample_against_the_cluster(cluster3, monkeypatch, capsys):
    """The seed's consumer sample, unchanged, pointed at the cluster (groups/seed_sample_at.py
    swaps its hard-coded localhost:9092 for the three brokers); the group's coordinator is the
    leader of its __consumer_offsets partition, on whichever broker that is."""
    from test_seed_consumer import EXTRA, LINE, Proc, drive, group_members

    from groups.util import kp_admin, kp_member_partitions

    runner = os.path.join(HERE, "groups", "seed_sample_at.py")
    monkeypatch.setenv("OTTLA_SAMPLE_BOOTSTRAP", cluster3.bootstrap)

    def produce_sample():
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, runner, "producer"], capture_output=True, timeout=60,
                           env=dict(os.environ))
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        return t0, time.monotonic(), None

    produce_sample()  # 'test-topic' exists and holds a record the consumer must not print
    proc = Proc(runner, "consumer")
    try:
        with kp_admin(cluster3.bootstrap) as admin:
            deadline = time.monotonic() + 30
            while True:
                desc, members = group_members(admin)
                if desc.get("group_state") == "Stable" and len(members) == 1 and kp_member_partitions(members[0]):
                    break
                assert proc.proc.poll() is None, f"the consumer exited: {proc.describe()}"
                assert time.monotonic() < deadline, \
                    f"no stable assignment of test-group within 30 s (coordinator work pending?): {desc}"
                time.sleep(0.05)
        assert kp_member_partitions(members[0]) == {("test-topic", 0)}
        t_line, _, before = drive(proc, produce_sample)
        lines = [l for _, l in proc.out_lines]
        assert lines and all(l == LINE for l in lines) and len(lines) >= 1 + EXTRA
        with capsys.disabled():
            print(f"\nCLUSTER seed consumer: process start -> line {1000 * (t_line - proc.t_start):.0f} ms "
                  f"(producer sample run {before} time(s) before the line)")
    finally:
        proc.stop(expect_clean=False)
