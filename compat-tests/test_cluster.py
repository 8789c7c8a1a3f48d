"""Real clients against a 3-node ottla cluster (fixture `cluster3`: three processes, one
metadata quorum, free loopback ports, never 9092). scripts/test runs this file once, after the
per-mode compat suites, with the release binary; the per-mode runs skip it.

- topics of RF 3 x 12 partitions created with kafka-python's KafkaAdminClient and with
  confluent-kafka's AdminClient, each bootstrapped from a different single broker (both
  clients send CreateTopics to the controller they find in Metadata (the broker they asked); forwarding from other
  brokers is covered by tests/it/cluster_three.rs);
- every broker's Metadata (confluent list_topics with that broker as the only bootstrap, and
  answered by it: librdkafka names the broker that answered) shows the same leaders, replicas and ISR, and each broker
  leads 4 of the 12 partitions;
- confluent-kafka produces keyed records with headers to all 12 partitions (leaders on all
  three brokers; acks=1) and confluent-kafka and kafka-python
  read everything back byte for byte;
- the seed's consumer sample (unchanged) against the cluster, its group coordinated by the
  leader of its __consumer_offsets partition;
- the admin APIs of replication, through kafka-python's KafkaAdminClient: DescribeLogDirs (each
  broker's data directory with exactly the partitions it holds, replicas' sizes equal and
  counting the produced bytes, scoped requests); DescribeQuorum (3 voters, the same leader and
  epoch through every broker, every voter reaching the high watermark, which grows with a
  metadata change; a new leader at a higher epoch once the active controller is killed, and
  the restarted voter catching up; the followers' last fetch and caught-up times recent, a
  paused follower's falling behind); AlterPartitionReassignments / ListPartitionReassignments
  (a partition moved off its leader onto the broker without a copy, in progress while that
  broker is paused, then led by it with the old copy gone and every record read back; refusals
  per partition); ElectLeaders (PREFERRED after a controlled shutdown and after a kill -9, via
  kafka-python and confluent-kafka, on a second cluster without automatic rebalancing: NONE /
  ELECTION_NOT_NEEDED per partition and every broker showing the preferred leaders again).
  kafka-python's own integration tests of these APIs run in scripts/test against the 3-node
  cluster of the group and transaction files.
"""

import os
import random
import signal
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


# ---------------------------------------------------------------------------------------------
# The admin APIs of replication (ElectLeaders, DescribeLogDirs, DescribeQuorum, partition
# reassignments) through kafka-python's KafkaAdminClient (and confluent-kafka's elect_leaders),
# asserting on what they did. kafka-python's own integration tests of these APIs (which only
# check the answers' shape on a quiet cluster) run against a 3-node cluster in scripts/test.

ELECTION_NOT_NEEDED = 84
PREFERRED = 0
UNCLEAN = 1


@pytest.fixture(scope="module")
def cluster3_quiet(request):
    """A second 3-node cluster for the tests that stop and kill nodes, with
    auto_leader_rebalance_enable=false: leadership comes back only through ElectLeaders."""
    from cluster import Cluster

    failed_before = request.session.testsfailed
    c = Cluster(3, extra_env={"OTTLA_AUTO_LEADER_REBALANCE_ENABLE": "false"})
    try:
        c.start()
        yield c
        c.stop()
    finally:
        if request.session.testsfailed > failed_before:
            print("\n" + c.tails())
        c.cleanup()


def kp_admin_client(bootstrap):
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id=unique("cluster-admin"))


def wait_until(what, fn, timeout=20, interval=0.1):
    """fn()'s first truthy value within `timeout` s; fails naming `what` and fn's last value."""
    deadline = time.monotonic() + timeout
    while True:
        last = fn()
        if last:
            return last
        assert time.monotonic() < deadline, f"{what} not within {timeout} s; last: {last!r}"
        time.sleep(interval)


def view_of(bootstrap, topic):
    """{partition: (leader, replicas, sorted isr)} in the Metadata of broker `bootstrap` itself."""
    return partition_map(metadata_from(bootstrap, topic), topic)


def views_everywhere(cluster, topic, ids=None):
    return {nd.id: view_of(nd.bootstrap, topic) for nd in cluster.nodes if ids is None or nd.id in ids}


def _raise(e):
    raise e


def wait_same_view(cluster, topic, pred, what, ids=None, timeout=20):
    """The partition map every broker of `ids` (default all) gives once they agree and `pred`
    holds for it."""
    def check():
        try:
            views = views_everywhere(cluster, topic, ids)
        except AssertionError as e:
            # A broker that has not applied the topic yet answers UNKNOWN_TOPIC_OR_PARTITION
            # (as Kafka's brokers do while the metadata propagates): not agreed yet.
            return None if "UNKNOWN_TOPIC" in str(e) else _raise(e)
        first = next(iter(views.values()))
        return first if all(v == first for v in views.values()) and pred(first) else None
    return wait_until(what, check, timeout)


def create_rf_topic(cluster, topic, partitions, rf, via=1):
    from kafka.admin import NewTopic

    admin = kp_admin_client(cluster.node(via).bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=rf)])
    finally:
        admin.close()
    return wait_same_view(cluster, topic, lambda v: len(v) == partitions and all(
        l >= 0 and len(r) == rf and len(i) == rf for l, r, i in v.values()), f"{topic} everywhere")


def produce_acked(bootstrap, topic, partitions, n, value_size=200):
    """n records, round robin over the partitions, acks=all: {(partition, offset): (key, value)}."""
    rng = random.Random(topic)
    acked, failed = {}, []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})

    def report(k, v):
        def on_delivery(err, msg):
            if err is not None:
                failed.append(str(err))
            else:
                acked[(msg.partition(), msg.offset())] = (k, v)
        return on_delivery

    for i in range(n):
        k, v = b"k%d" % i, rng.randbytes(value_size)
        while True:
            try:
                p.produce(topic, key=k, value=v, partition=i % partitions, on_delivery=report(k, v))
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0, "produce did not complete within 60 s"
    assert not failed and len(acked) == n, f"{len(acked)} of {n} acknowledged, failures {failed[:3]}"
    return acked


def read_back(bootstrap, topic, partitions, want):
    """kafka-python (no group) reads `partitions` from offset 0 until it has every record of
    `want` there; each must be the acknowledged one, byte for byte."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    expect = {k: v for k, v in want.items() if k[0] in partitions}
    got = {}
    kc = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False, group_id=None)
    try:
        tps = [KTP(topic, p) for p in partitions]
        kc.assign(tps)
        kc.seek_to_beginning(*tps)
        deadline = time.monotonic() + 60
        while len(got) < len(expect) and time.monotonic() < deadline:
            for recs in kc.poll(timeout_ms=1000).values():
                for r in recs:
                    got[(r.partition, r.offset)] = (r.key, r.value)
    finally:
        kc.close()
    assert got == expect, f"read {len(got)} of {len(expect)} records; differing: " \
        f"{[k for k in expect if got.get(k) != expect[k]][:5]}"


def quorum(bootstrap):
    # kafka-python's admin sends DescribeQuorum to any broker it knows (the least loaded),
    # which may be one a test has paused: it times out there and is asked again, up to three
    # times (the client avoids a node it just failed to reach).
    from kafka.errors import KafkaConnectionError, RequestTimedOutError
    admin = kp_admin_client(bootstrap)
    try:
        for attempt in range(3):
            try:
                q = admin.describe_metadata_quorum()
                break
            except (RequestTimedOutError, KafkaConnectionError):
                if attempt == 2:
                    raise
    finally:
        admin.close()
    assert [t["topic_name"] for t in q["topics"]] == ["__cluster_metadata"], q
    (p,) = q["topics"][0]["partitions"]
    assert p["partition_index"] == 0 and p["error"] is None, p
    return q, p


def stop_clean(cluster, node_id):
    """SIGTERM (a controlled shutdown) and the node's exit code 0."""
    nd = cluster.node(node_id)
    nd.signal(signal.SIGTERM)
    rc = nd.wait(20)
    assert rc == 0, f"node {node_id} exited with {rc} on SIGTERM:\n{nd.tail()}"


def test_describe_log_dirs_lists_every_replica_with_its_size(cluster3):
    topic = unique("logdirs")
    parts = 6
    create_rf_topic(cluster3, topic, parts, 2)
    acked = produce_acked(cluster3.bootstrap, topic, parts, 1200)
    pm = view_of(cluster3.node(1).bootstrap, topic)
    held = {nd.id: {p for p, (_, replicas, _) in pm.items() if nd.id in replicas} for nd in cluster3.nodes}
    assert all(held.values()), f"RF 2 x 6 over 3 brokers, one without any: {held}"
    records_per = Counter(p for p, _ in acked)

    admin = kp_admin_client(cluster3.bootstrap)
    try:
        def sizes():
            out = {}
            for result in admin.describe_log_dirs():
                (d,) = result["log_dirs"]  # ottla has one log dir: its data directory
                out[result["broker"]] = d
            return out

        def replicas_alike():
            dirs = sizes()
            per = {b: {p["partition_index"]: p["partition_size"] for t in d["topics"] if t["name"] == topic
                       for p in t["partitions"]} for b, d in dirs.items()}
            alike = all(len({per[b].get(p) for b in pm[p][1]}) == 1 for p in pm)
            return (dirs, per) if alike else None

        # acks=all: every replica holds the batches; the replicas' sizes are then equal.
        dirs, per = wait_until("equal sizes on every replica", replicas_alike, timeout=10)
        assert sorted(dirs) == [1, 2, 3], f"answers from brokers {sorted(dirs)}"
        for nd in cluster3.nodes:
            d = dirs[nd.id]
            assert d["error_code"] == 0, d
            assert os.path.realpath(d["log_dir"]) == os.path.realpath(nd.data_dir), \
                f"broker {nd.id}: log dir {d['log_dir']}, data dir {nd.data_dir}"
            assert d["total_bytes"] > 0 and 0 < d["usable_bytes"] <= d["total_bytes"], d
            assert set(per[nd.id]) == held[nd.id], \
                f"broker {nd.id} lists partitions {sorted(per[nd.id])}, holds {sorted(held[nd.id])}"
            for t in d["topics"]:
                if t["name"] == topic:
                    for p in t["partitions"]:
                        assert p["offset_lag"] == 0 and p["is_future_key"] is False, p
            for p, size in per[nd.id].items():
                # each record is > 200 bytes of value: the size counts the record batches
                assert size > 200 * records_per[p], f"broker {nd.id} partition {p}: {size} bytes"

        # Scoped: one partition, asked of one replica and one broker without it.
        replica = pm[0][1][1]
        other = ({1, 2, 3} - set(pm[0][1])).pop()
        scoped = {r["broker"]: r["log_dirs"][0] for r in
                  admin.describe_log_dirs(topic_partitions={topic: [0]}, brokers=[replica, other])}
        assert sorted(scoped) == sorted([replica, other])
        assert [(t["name"], [p["partition_index"] for p in t["partitions"]]) for t in scoped[replica]["topics"]] \
            == [(topic, [0])], scoped[replica]
        assert scoped[replica]["topics"][0]["partitions"][0]["partition_size"] == per[replica][0]
        assert scoped[other]["topics"] == [], f"broker {other} holds no replica of partition 0: {scoped[other]}"
        missing = admin.describe_log_dirs(topic_partitions={unique("no-such-topic"): [0]})
        assert all(r["log_dirs"][0]["topics"] == [] for r in missing), missing
    finally:
        admin.close()


def test_describe_quorum_shows_three_voters_and_the_high_watermark(cluster3):
    answers = {nd.id: quorum(nd.bootstrap) for nd in cluster3.nodes}
    _, p1 = answers[1]
    leader, epoch = p1["leader_id"], p1["leader_epoch"]
    assert leader in (1, 2, 3) and epoch >= 1, p1
    for node_id, (q, p) in answers.items():
        # any broker answers with the active controller's view
        assert (p["leader_id"], p["leader_epoch"]) == (leader, epoch), f"via node {node_id}: {p}"
        assert sorted(v["replica_id"] for v in p["current_voters"]) == [1, 2, 3], p
        assert p["observers"] == [], p
        # v2: the voters' controller endpoints
        nodes = {n["node_id"]: [(l["host"], l["port"]) for l in n["listeners"]] for n in q["nodes"]}
        assert nodes == {nd.id: [(nd.host, nd.controller_port)] for nd in cluster3.nodes}, q["nodes"]

    def caught_up():
        _, p = quorum(cluster3.node(1).bootstrap)
        leo = {v["replica_id"]: v["log_end_offset"] for v in p["current_voters"]}
        return p if p["high_watermark"] > 0 and set(leo.values()) == {p["high_watermark"]} else None

    p = wait_until("every voter at the high watermark", caught_up, timeout=10)
    hw = p["high_watermark"]
    own = next(v for v in p["current_voters"] if v["replica_id"] == leader)
    now_ms = time.time() * 1000
    assert abs(own["last_fetch_timestamp"] - now_ms) < 60_000, own
    assert abs(own["last_caught_up_timestamp"] - now_ms) < 60_000, own

    # A metadata change (a topic) moves the high watermark, on every voter.
    create_rf_topic(cluster3, unique("quorum"), 1, 3)
    p = wait_until("the voters past the new records", lambda: (lambda p: p if p["high_watermark"] > hw and len(
        {v["log_end_offset"] for v in p["current_voters"]} | {p["high_watermark"]}) == 1 else None)(
        quorum(cluster3.node(2).bootstrap)[1]), timeout=10)
    assert (p["leader_id"], p["leader_epoch"]) == (leader, epoch), p


def test_describe_quorum_reports_followers_fetch_times(cluster3):
    """DescribeQuorum's follower timestamps, as Kafka's leader reports them: each follower's
    last fetch (here: its last answered AppendEntries) and the last time it held the leader's
    whole log are recent wall-clock milliseconds; a follower paused while the log grows falls
    behind on both (its caught-up time no later than its fetch time), the other stays current."""
    _, p = quorum(cluster3.node(1).bootstrap)
    leader = p["leader_id"]
    followers = sorted(v["replica_id"] for v in p["current_voters"] if v["replica_id"] != leader)
    assert len(followers) == 2, p

    def times():
        _, q = quorum(cluster3.node(leader).bootstrap)
        assert q["leader_id"] == leader, q
        now_ms = time.time() * 1000
        return now_ms, {v["replica_id"]: v for v in q["current_voters"]}

    deadline = time.time() + 10
    while True:  # a leadership has no contact before its first round of heartbeats
        now_ms, v = times()
        recent = all(0 <= now_ms - v[f][k] < 5000 for f in followers
                     for k in ("last_fetch_timestamp", "last_caught_up_timestamp"))
        if recent or time.time() > deadline:
            break
        time.sleep(0.2)
    assert recent, (now_ms, v)

    paused, running = followers
    cluster3.node(paused).signal(signal.SIGSTOP)
    try:
        time.sleep(1.0)
        admin = AdminClient({"bootstrap.servers": cluster3.node(leader).bootstrap})
        topic = unique("quorum-times")
        admin.create_topics([CNewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
        time.sleep(1.0)
        now_ms, v = times()
    finally:
        cluster3.node(paused).signal(signal.SIGCONT)
    p_fetch, p_caught = v[paused]["last_fetch_timestamp"], v[paused]["last_caught_up_timestamp"]
    assert now_ms - p_fetch >= 1500, (now_ms, v)
    assert 0 < p_caught <= p_fetch, (now_ms, v)
    assert v[paused]["log_end_offset"] < v[running]["log_end_offset"], v
    assert now_ms - v[running]["last_fetch_timestamp"] < 1000, (now_ms, v)
    assert now_ms - v[running]["last_caught_up_timestamp"] < 1000, (now_ms, v)


def test_reassignment_moves_a_partition_to_another_broker(cluster3):
    """A partition of RF 2 moved off its leader onto the broker that had no replica: while that
    broker is paused (SIGSTOP) the move stays in progress, ListPartitionReassignments and
    Metadata show it; once it runs again the new replica catches up, leads, the old leader drops
    its copy, and every record reads back from the new replica."""
    from kafka import TopicPartition as KTP
    from kafka.errors import InvalidReplicationAssignmentError, NoReassignmentInProgressError

    topic = unique("reassign")
    parts = 3
    pm = create_rf_topic(cluster3, topic, parts, 2)
    acked = produce_acked(cluster3.bootstrap, topic, parts, 3000, value_size=1000)
    _, qp = quorum(cluster3.node(1).bootstrap)
    controller = qp["leader_id"]
    # A partition whose missing broker is not the active controller (it is paused below).
    choices = [(p, ({1, 2, 3} - set(r)).pop(), l, r) for p, (l, r, _) in sorted(pm.items())
               if ({1, 2, 3} - set(r)).pop() != controller]
    assert choices, f"placement {pm}, controller {controller}"
    part, new, old_leader, replicas = choices[0]
    follower = next(b for b in replicas if b != old_leader)
    target = [new, follower]
    tp = KTP(topic, part)

    admin = kp_admin_client(cluster3.node(controller).bootstrap)
    # kafka-python sends controller requests to the controller id of the first Metadata answer
    # it got, from any broker (ottla names the answering broker, as KRaft Kafka names an alive
    # one): pinned to the active controller here, so none goes to the paused broker.
    admin._controller_id = controller
    paused = cluster3.node(new)
    try:
        assert admin.list_partition_reassignments() == {}
        # Refusals, answered per partition (another partition of the topic).
        other = KTP(topic, (part + 1) % parts)
        assert admin.alter_partition_reassignments({other: None}) == {other: NoReassignmentInProgressError}
        assert admin.alter_partition_reassignments({other: [1, 1]}) == {other: InvalidReplicationAssignmentError}
        assert admin.alter_partition_reassignments({other: [1, 99]}) == {other: InvalidReplicationAssignmentError}

        paused.signal(signal.SIGSTOP)
        try:
            assert admin.alter_partition_reassignments({tp: target}) == {tp: None}
            in_progress = {tp: {"replicas": target + [old_leader], "adding_replicas": [new],
                                "removing_replicas": [old_leader]}}
            assert admin.list_partition_reassignments() == in_progress
            assert admin.list_partition_reassignments([tp]) == in_progress
            assert admin.list_partition_reassignments([other]) == {}
            for nd in cluster3.nodes:
                if nd.id != new:
                    leader, reps, isr = view_of(nd.bootstrap, topic)[part]
                    assert (leader, reps, isr) == (old_leader, target + [old_leader], sorted(replicas)), \
                        f"node {nd.id} during the move: {(leader, reps, isr)}"
            time.sleep(0.5)
            assert admin.list_partition_reassignments() == in_progress, "done while the new replica was paused"
        finally:
            paused.signal(signal.SIGCONT)

        wait_until("the reassignment done", lambda: admin.list_partition_reassignments() == {}, timeout=30)
        done = wait_same_view(cluster3, topic, lambda v: v[part][1] == target,
                              "every broker showing the new replicas")
        assert done[part] == (new, target, sorted(target)), f"after the move: {done[part]}"
        for p in pm:
            if p != part:
                assert done[p] == pm[p], f"partition {p} changed: {pm[p]} -> {done[p]}"

        def copies():
            per = {}
            for r in admin.describe_log_dirs(topic_partitions={topic: [part]}):
                for t in r["log_dirs"][0]["topics"]:
                    for p in t["partitions"]:
                        per[r["broker"]] = p["partition_size"]
            return per if sorted(per) == sorted(target) and len(set(per.values())) == 1 else None

        per = wait_until(f"partition {part} only on {target}, alike", copies, timeout=20)
        assert per[new] > 1000 * 1000, per  # 1000 records of 1000 bytes moved to the new broker
    finally:
        admin.close()
    # Read back from the new leader (the broker that had no copy before the move).
    read_back(cluster3.bootstrap, topic, [part], acked)
    read_back(cluster3.node(new).bootstrap, topic, list(range(parts)), acked)


def test_elect_leaders_preferred_brings_leadership_back(cluster3_quiet):
    """RF 3 x 6: a broker stopped cleanly (its leaderships move away), started again and caught
    up leads none of its partitions (no automatic rebalancing here); kafka-python's
    ElectLeaders(PREFERRED) moves them back (NONE for those, ELECTION_NOT_NEEDED for the
    others), and every broker's Metadata shows each partition led by its first replica. Then the
    same with another broker killed (kill -9) and confluent-kafka's elect_leaders."""
    from confluent_kafka import ElectionType

    c = cluster3_quiet
    topic = unique("elect")
    parts = 6
    pm = create_rf_topic(c, topic, parts, 3)
    assert all(l == r[0] for l, r, _ in pm.values()), pm
    acked = produce_acked(c.bootstrap, topic, parts, 600)
    controller = quorum(c.node(1).bootstrap)[1]["leader_id"]
    victims = [nd.id for nd in c.nodes if nd.id != controller]
    preferred = lambda b: sorted(p for p, (_, r, _) in pm.items() if r[0] == b)  # noqa: E731
    alive = lambda b: [nd.id for nd in c.nodes if nd.id != b]  # noqa: E731

    def move_away(victim, how):
        before = view_of(c.node(controller).bootstrap, topic)
        if how == "term":
            stop_clean(c, victim)
        else:
            c.kill(victim)
        wait_same_view(c, topic, lambda v: all(l != victim and l >= 0 for l, _, _ in v.values()),
                       f"leadership off broker {victim}", ids=alive(victim))
        c.start_node(victim)
        c.wait_agree()
        v = wait_same_view(c, topic, lambda v: all(len(i) == 3 for _, _, i in v.values()),
                           f"broker {victim} back in every ISR")
        moved = sorted(p for p, (l, _, _) in v.items() if l != pm[p][0])
        assert moved == preferred(victim), f"broker {victim}: before {before}, now {v}"
        return moved

    def epochs():
        admin = kp_admin_client(c.node(controller).bootstrap)
        try:
            (t,) = admin.describe_topics([topic])
        finally:
            admin.close()
        return {p["partition_index"]: p["leader_epoch"] for p in t["partitions"]}

    def check_preferred(moved, epochs_before):
        v = wait_same_view(c, topic, lambda v: True, "every broker agreeing")
        assert all(l == r[0] for l, r, _ in v.values()), f"not all preferred: {v}"
        e = epochs()
        assert all(e[p] > epochs_before[p] for p in moved), f"epochs {epochs_before} -> {e}"

    # Round 1: controlled shutdown, kafka-python.
    moved = move_away(victims[0], "term")
    before = epochs()
    admin = kp_admin_client(c.bootstrap)
    try:
        r = admin.elect_leaders(PREFERRED, {topic: list(range(parts))})
        assert r.error_code == 0
        results = {(res.topic, pr.partition_id): pr.error_code
                   for res in r.replica_election_results for pr in res.partition_result}
        assert results == {(topic, p): (0 if p in moved else ELECTION_NOT_NEEDED) for p in range(parts)}, results
        check_preferred(moved, before)
        # Nothing left to do: ELECTION_NOT_NEEDED everywhere, preferred or unclean.
        for kind in (PREFERRED, UNCLEAN):
            r = admin.elect_leaders(kind, {topic: list(range(parts))})
            assert {pr.error_code for res in r.replica_election_results for pr in res.partition_result} \
                == {ELECTION_NOT_NEEDED}, r
    finally:
        admin.close()

    # Round 2: kill -9, confluent-kafka, every partition of the cluster (partitions=None):
    # only those that needed an election are answered.
    moved = move_away(victims[1], "kill")
    before = epochs()
    cadmin = AdminClient({"bootstrap.servers": c.bootstrap})
    res = cadmin.elect_leaders(ElectionType.PREFERRED, None).result(30)
    assert {(tp.topic, tp.partition): err for tp, err in res.items()} == {(topic, p): None for p in moved}, res
    check_preferred(moved, before)
    res = cadmin.elect_leaders(ElectionType.PREFERRED,
                               [TopicPartition(topic, p) for p in range(parts)]).result(30)
    assert sorted(tp.partition for tp in res) == list(range(parts))
    for tp, err in res.items():
        assert err is not None and err.name() == "ELECTION_NOT_NEEDED", (tp, err)

    read_back(c.bootstrap, topic, list(range(parts)), acked)


def test_describe_quorum_follows_the_active_controller_killed(cluster3_quiet):
    from kafka.errors import KafkaError

    c = cluster3_quiet
    _, p = quorum(c.node(1).bootstrap)
    old, epoch, hw = p["leader_id"], p["leader_epoch"], p["high_watermark"]
    survivor = next(nd for nd in c.nodes if nd.id != old)
    c.kill(old)
    def new_leader():
        try:
            _, p = quorum(survivor.bootstrap)
        except KafkaError:  # the client may try the killed broker until it is fenced
            return None
        return p if p["leader_id"] not in (-1, old) else None

    p = wait_until("a new quorum leader", new_leader, timeout=20, interval=0.2)
    assert p["leader_epoch"] > epoch and p["high_watermark"] >= hw, p
    assert sorted(v["replica_id"] for v in p["current_voters"]) == [1, 2, 3], p
    new = p["leader_id"]
    c.start_node(old)
    c.wait_agree()
    create_rf_topic(c, unique("after-failover"), 1, 3, via=old)  # through the restarted node

    def caught_up():
        _, p = quorum(c.node(old).bootstrap)
        leo = {v["replica_id"]: v["log_end_offset"] for v in p["current_voters"]}
        return p if set(leo.values()) == {p["high_watermark"]} and p["high_watermark"] > hw else None

    p = wait_until(f"voter {old} back at the high watermark", caught_up, timeout=20)
    assert p["leader_id"] == new and p["leader_epoch"] > epoch, p
