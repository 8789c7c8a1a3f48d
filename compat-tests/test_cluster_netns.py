"""A 3-node cluster on hosts of their own (compat-tests/netns.py: one network namespace per
node, addresses 10.203.1.1-3, every node on ports 9092 and 9093, as on three machines), with
real clients in the test's own namespace:

- every broker's Metadata lists the three hosts at their own addresses;
- a topic created through one host, records produced through a bootstrap list of one host
  and consumed back through another, byte for byte and in order per partition;
- one host cut off the network (its link down, the process running): the others fence it
  and go on changing metadata (a new controller if it was the one); healed, it is unfenced
  and catches up on what changed while it was away.

Needs root for the namespaces (scripts/test runs as root on the project's machines); without
it the module is skipped, and says why.
"""

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cluster import metadata_from
from netns import Hosts, NetnsCluster, can_make_namespaces

OK, WHY = can_make_namespaces()
pytestmark = pytest.mark.skipif(not OK, reason=f"network namespaces unavailable: {WHY}")

SESSION_MS = 3000
HEARTBEAT_MS = 500


@pytest.fixture(scope="module")
def hosts_cluster(request):
    hosts = Hosts(3, subnet=1)
    failed_before = request.session.testsfailed
    c = NetnsCluster(hosts, extra_env={"OTTLA_BROKER_SESSION_TIMEOUT_MS": str(SESSION_MS),
                                       "OTTLA_BROKER_HEARTBEAT_INTERVAL_MS": str(HEARTBEAT_MS)})
    try:
        hosts.up()
        c.start()
        yield c
        c.stop()
    finally:
        if request.session.testsfailed > failed_before:
            print("\n" + c.tails())
        c.cleanup()
        hosts.down()


def brokers_of(md):
    return sorted((b.id, b.host, b.port) for b in md.brokers.values())


def create(bootstrap, name, partitions, rf):
    """Creates the topic; True also when an earlier attempt (retried by wait_for) did."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.create_topics([NewTopic(name, partitions, rf)])[name].result(20)
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
    return True


def topic_md(bootstrap, topic):
    """That broker's Metadata when it has `topic` (without error), else None."""
    md = metadata_from(bootstrap, topic, timeout=5)
    t = md.topics.get(topic)
    return md if t is not None and not t.error else None


def wait_for(what, check, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            got = check()
        except Exception as e:  # noqa: BLE001 - a node mid-election answers with errors
            got, last = None, e
        else:
            last = got
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s} s (last: {last!r})")
        time.sleep(0.1)


def test_every_broker_lists_the_hosts_at_their_addresses(hosts_cluster):
    c = hosts_cluster
    want = [(i, c.hosts.address(i), 9092) for i in (1, 2, 3)]
    for nd in c.nodes:
        md = metadata_from(nd.bootstrap)
        assert brokers_of(md) == want, f"broker {nd.id}"


def test_records_through_one_host_back_through_another(hosts_cluster, capsys):
    c = hosts_cluster
    topic = f"netns-{uuid.uuid4().hex[:8]}"
    create(c.node(2).bootstrap, topic, 6, 3)
    md = wait_for("the topic on host 1", lambda: topic_md(c.node(1).bootstrap, topic))
    leaders = sorted(p.leader for p in md.topics[topic].partitions.values())
    assert leaders == [1, 1, 2, 2, 3, 3], leaders

    sent = {p: [] for p in range(6)}
    errors = []

    def done(err, msg):
        if err is not None:
            errors.append(err)
        else:
            sent[msg.partition()].append((msg.offset(), msg.key(), msg.value()))

    p = Producer({"bootstrap.servers": c.node(1).bootstrap, "acks": 1, "linger.ms": 5})
    for i in range(600):
        p.produce(topic, key=f"k{i}".encode(), value=f"v{i}-".encode() + bytes([i % 256]) * 40,
                  partition=i % 6, on_delivery=done)
    assert p.flush(30) == 0
    assert errors == []

    consumer = Consumer({"bootstrap.servers": c.node(3).bootstrap, "group.id": f"g-{topic}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, q, 0) for q in range(6)])
    got = {q: [] for q in range(6)}
    deadline = time.monotonic() + 30
    while sum(map(len, got.values())) < 600 and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            got[m.partition()].append((m.offset(), m.key(), m.value()))
    consumer.close()
    for q in range(6):
        assert got[q] == sorted(sent[q]), f"partition {q}"
    with capsys.disabled():
        print(f"\nNETNS 600 records through host 1, read back through host 3: "
              f"{sum(map(len, got.values()))} identical, leaders on hosts {leaders}")


def test_a_host_cut_off_is_fenced_and_catches_up_when_healed(hosts_cluster, capsys):
    c = hosts_cluster
    cut = 3
    rest = [1, 2]
    c.hosts.isolate(cut)
    t0 = time.monotonic()
    healed = False
    try:
        wait_for(f"hosts {rest} fence broker {cut}",
                 lambda: all(cut not in metadata_from(c.node(i).bootstrap, timeout=5).brokers
                             for i in rest),
                 timeout_s=SESSION_MS / 1000 * 4 + 10)
        fenced_ms = (time.monotonic() - t0) * 1000
        topic = f"during-cut-{uuid.uuid4().hex[:8]}"
        wait_for("CreateTopics through a host still connected",
                 lambda: create(c.node(1).bootstrap, topic, 2, 2))
        c.hosts.heal(cut)
        healed = True
        t1 = time.monotonic()
        md = wait_for(f"host {cut} shows the topic created while it was away",
                      lambda: topic_md(c.node(cut).bootstrap, topic))
        caught_up_ms = (time.monotonic() - t1) * 1000
        for p in md.topics[topic].partitions.values():
            assert cut not in p.replicas, f"a replica was placed on fenced broker {cut}: {p.replicas}"
        wait_for(f"broker {cut} unfenced everywhere",
                 lambda: all(sorted(metadata_from(nd.bootstrap, timeout=5).brokers) == [1, 2, 3]
                             for nd in c.nodes))
    finally:
        if not healed:
            c.hosts.heal(cut)
    with capsys.disabled():
        print(f"\nNETNS host {cut} cut off: fenced by the others after {fenced_ms:.0f} ms "
              f"(session timeout {SESSION_MS} ms); a topic created meanwhile; healed, it showed "
              f"the topic after {caught_up_ms:.0f} ms")
