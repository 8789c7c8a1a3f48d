"""Client quotas (KIP-13/55/219/546) with real clients, against a broker of its own (disk
mode, Kafka's quota windows: 11 samples of 1 s). Every test runs twice: against one broker
(`[single]`) and against a 3-node cluster (`[cluster3]`, seccluster.py: the brokers speak
SASL_SSL to each other, topics of replication factor 3). There a quota is set through a node
that does not lead the topic, every node must describe it, and the leader enforces it.

- AlterClientQuotas / DescribeClientQuotas v0 set and read the quotas (raw requests: neither
  confluent-kafka nor kafka-python has admin calls for them).
- producer_byte_rate = 1 MB/s for one client id: confluent-kafka producing flat out is held
  to within 10% of it, while the same producer without a quota is far faster.
- consumer_byte_rate = 1 MB/s: a confluent-kafka consumer reading a full topic likewise.
- connection_creation_rate of an ip (KIP-612): connections from that address beyond the
  rate are closed; other addresses are not limited.

How the rate is measured: Kafka's quota is an average over the last 10-11 s (a sampled
window), and a fresh sensor assumes 10 whole windows, so a client that sends flat out gets a
burst of about 10 s worth, then little until that burst leaves the window 11 s later, and so
on: the rate is exact over any whole period of 11 s (quota.window.num × quota.window.size),
not over an arbitrary 10 s. The test measures one period, from 5.5 s after the first answer
(so no burst sits at an edge), and prints the figures (the first 10 s too, for reference).

Run: cargo build --release --bin ottla, then from compat-tests/ with the venv of scripts/test:
    .venv/bin/python -m pytest -q -s test_quotas.py (`-k single` or `-k cluster3` for one kind)
"""

import os
import socket
import struct
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from seccluster import KINDS, security_broker

QUOTA = 1_000_000  # bytes per second
PERIOD_S = 11.0  # quota.window.num (11) × quota.window.size.seconds (1)
WARMUP_S = 5.5
VALUE = 10_000  # bytes per record


@pytest.fixture(scope="module", params=KINDS)
def broker(request):
    with security_broker(request, "ottla-quotas", ["PLAINTEXT"]) as b:
        yield b


# --- AlterClientQuotas / DescribeClientQuotas v0 on the wire -------------------------------

def _string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _nullable(s):
    return struct.pack(">h", -1) if s is None else _string(s)


class _Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v[0]

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s


def _call(bootstrap, api_key, body):
    host, port = bootstrap.rsplit(":", 1)
    header = struct.pack(">hhi", api_key, 0, 1) + _string("quota-admin")
    frame = header + body
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", _recv(s, 4))[0]
        data = _recv(s, size)
    r = _Reader(data)
    assert r.take(">i") == 1  # correlation id
    return r


def _recv(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        assert chunk, "connection closed"
        out += chunk
    return out


def alter_quotas(bootstrap, entries, validate_only=False):
    """entries: [(entity [(type, name|None)], ops [(key, value|None to remove)])];
    answers [(error code, message, entity)]."""
    body = struct.pack(">i", len(entries))
    for entity, ops in entries:
        body += struct.pack(">i", len(entity))
        for t, n in entity:
            body += _string(t) + _nullable(n)
        body += struct.pack(">i", len(ops))
        for k, v in ops:
            body += _string(k) + struct.pack(">d?", v or 0.0, v is None)
    body += struct.pack(">?", validate_only)
    r = _call(bootstrap, 49, body)
    r.take(">i")  # throttle
    out = []
    for _ in range(r.take(">i")):
        code, message = r.take(">h"), r.string()
        entity = [(r.string(), r.string()) for _ in range(r.take(">i"))]
        out.append((code, message, entity))
    return out


def describe_quotas(bootstrap, components=(), strict=False):
    """components: [(type, match type, name|None)]; answers (error code, message,
    {entity (sorted tuple): {key: value}})."""
    body = struct.pack(">i", len(components))
    for t, m, n in components:
        body += _string(t) + struct.pack(">b", m) + _nullable(n)
    body += struct.pack(">?", strict)
    r = _call(bootstrap, 48, body)
    r.take(">i")
    code, message = r.take(">h"), r.string()
    n = r.take(">i")
    found = {}
    for _ in range(max(n, 0)):
        entity = tuple(sorted((r.string(), r.string()) for _ in range(r.take(">i"))))
        values = {}
        for _ in range(r.take(">i")):
            k = r.string()
            values[k] = r.take(">d")
        found[entity] = values
    return code, message, found


def described_everywhere(b, want, components=(), strict=False, timeout=10):
    """Waits until every node, asked alone, describes `want` ({entity: {key: value}}): a quota
    altered through one node reaches the others through the metadata log."""
    for addr in b.node_addrs("PLAINTEXT"):
        deadline = time.monotonic() + timeout
        while True:
            code, message, found = describe_quotas(addr, components, strict)
            assert code == 0, (addr, message)
            if found == want:
                break
            assert time.monotonic() < deadline, (addr, found, want)
            time.sleep(0.1)


def set_quota(b, via, client_id, key, value):
    """Sets (None: removes) a client-id quota through the node `via`; waits until every node
    describes it."""
    [(code, message, _)] = alter_quotas(via, [([("client-id", client_id)], [(key, value)])])
    assert code == 0, message
    entity = (("client-id", client_id),)
    described_everywhere(b, {} if value is None else {entity: {key: value}},
                         [("client-id", 0, client_id)], strict=True)
    time.sleep(0.3)  # the broker takes it from its metadata image


# --- helpers ---------------------------------------------------------------------------------

def create_topic(b, name):
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    for f in admin.create_topics([NewTopic(name, 1, b.replication_factor)]).values():
        f.result(10)
    b.assert_replicated(name)


def producer(b, client_id):
    return Producer({"bootstrap.servers": b.bootstrap, "client.id": client_id, "acks": 1,
                     "linger.ms": 5, "batch.size": 65536, "compression.type": "none",
                     "queue.buffering.max.kbytes": 65536, "message.timeout.ms": 60000})


def produce_flat_out(p, topic, seconds):
    """Produces as fast as the producer takes records; answers the (time, bytes) of every
    acknowledged record."""
    acked = []
    lock = threading.Lock()
    payload = os.urandom(VALUE)

    def done(err, msg):
        if err is not None:
            return  # purged at the end
        with lock:
            acked.append((time.monotonic(), len(msg.value())))

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            p.produce(topic, payload, on_delivery=done)
        except BufferError:
            p.poll(0.005)
        p.poll(0)
    # What is still queued is not counted (it would arrive after the end).
    p.purge()
    p.flush(10)
    return acked


def rates(events, label):
    """Rate over one quota period from WARMUP_S after the first event, and over the first
    10 s; printed."""
    first = events[0][0]
    start, end = first + WARMUP_S, first + WARMUP_S + PERIOD_S
    period = sum(n for t, n in events if start <= t < end) / PERIOD_S
    first10 = sum(n for t, n in events if t < first + 10) / 10
    print(f"\nQUOTA-CHECK {label}: quota {QUOTA / 1e6:.3f} MB/s, achieved {period / 1e6:.3f} MB/s "
          f"over {PERIOD_S:.0f} s (one quota period, from {WARMUP_S} s in: "
          f"{(period - QUOTA) / QUOTA * 100:+.1f}%); first 10 s {first10 / 1e6:.3f} MB/s")
    return period


# --- tests -----------------------------------------------------------------------------------

def test_alter_then_describe(broker):
    # Altered and described through the first node; the others describe the same.
    bs = broker.node_addrs("PLAINTEXT")[0]
    results = alter_quotas(bs, [
        ([("client-id", "app")], [("producer_byte_rate", 1048576.0)]),
        ([("user", "alice"), ("client-id", None)], [("request_percentage", 25.0)]),
        ([("client-id", "bad")], [("no_such_key", 1.0)]),
    ])
    codes = {tuple(e): c for c, _, e in results}
    assert codes[(("client-id", "app"),)] == 0
    assert codes[(("client-id", "bad"),)] == 42
    code, _, found = describe_quotas(bs)
    assert code == 0
    assert found[(("client-id", "app"),)] == {"producer_byte_rate": 1048576.0}
    assert found[(("client-id", None), ("user", "alice"))] == {"request_percentage": 25.0}
    described_everywhere(broker, found)
    code, _, found = describe_quotas(bs, [("user", 0, "alice")], strict=True)
    assert (code, found) == (0, {})
    code, _, found = describe_quotas(bs, [("client-id", 2, None)], strict=True)
    assert list(found) == [(("client-id", "app"),)]
    alter_quotas(bs, [([("client-id", "app")], [("producer_byte_rate", None)]),
                      ([("user", "alice"), ("client-id", None)], [("request_percentage", None)])])
    assert describe_quotas(bs)[2] == {}
    described_everywhere(broker, {})


def test_producer_byte_rate(broker):
    topic = f"quota-produce-{uuid.uuid4().hex[:8]}"
    create_topic(broker, topic)
    client = "quota-producer"
    # Without a quota: far faster.
    free = produce_flat_out(producer(broker, client), topic, 3)
    free_rate = sum(n for _, n in free) / 3
    print(f"\nQUOTA-CHECK producer without quota: {free_rate / 1e6:.1f} MB/s")
    assert free_rate > 5 * QUOTA
    via = broker.other_node_addr("PLAINTEXT", topic)  # not the leader, in the cluster
    print(f"\nQUOTA-CHECK {broker.kind}: quota set through {via}, "
          f"the topic led by node {broker.leader(topic)}")
    set_quota(broker, via, client, "producer_byte_rate", float(QUOTA))
    try:
        acked = produce_flat_out(producer(broker, client), topic, WARMUP_S + PERIOD_S + 0.5)
    finally:
        set_quota(broker, via, client, "producer_byte_rate", None)
    rate = rates(acked, "producer_byte_rate")
    assert abs(rate - QUOTA) / QUOTA < 0.10


def test_consumer_byte_rate(broker):
    topic = f"quota-consume-{uuid.uuid4().hex[:8]}"
    create_topic(broker, topic)
    p = producer(broker, "quota-filler")
    payload = os.urandom(VALUE)
    total = 0
    while total < 40_000_000:
        try:
            p.produce(topic, payload)
            total += VALUE
        except BufferError:
            p.poll(0.01)
    assert p.flush(60) == 0
    client = "quota-consumer"
    via = broker.other_node_addr("PLAINTEXT", topic)  # not the leader, in the cluster
    print(f"\nQUOTA-CHECK {broker.kind}: quota set through {via}, "
          f"the topic led by node {broker.leader(topic)}")
    set_quota(broker, via, client, "consumer_byte_rate", float(QUOTA))
    c = Consumer({"bootstrap.servers": broker.bootstrap, "client.id": client,
                  "group.id": f"g-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "fetch.max.bytes": 65536, "message.max.bytes": 65536,
                  "max.partition.fetch.bytes": 65536, "fetch.wait.max.ms": 100})
    try:
        c.subscribe([topic])
        got = []
        end = None
        while end is None or time.monotonic() < end:
            m = c.poll(0.1)
            if m is None or m.error():
                continue
            got.append((time.monotonic(), len(m.value())))
            if end is None:
                end = time.monotonic() + WARMUP_S + PERIOD_S + 0.5
    finally:
        c.close()
        set_quota(broker, via, client, "consumer_byte_rate", None)
    assert sum(n for _, n in got) < total, "the topic held more than the test read"
    rate = rates(got, "consumer_byte_rate")
    assert abs(rate - QUOTA) / QUOTA < 0.10


def _api_versions_answered(bootstrap, source):
    """Opens a connection from `source`, sends ApiVersions v0: True if answered, False if the
    broker closes it instead."""
    host, port = bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))
    try:
        frame = struct.pack(">hhi", 18, 0, 1) + _string("conn-rate")
        s.sendall(struct.pack(">i", len(frame)) + frame)
        head = s.recv(4)
        return len(head) == 4
    except (ConnectionResetError, BrokenPipeError):
        return False
    finally:
        s.close()


def test_connection_creation_rate_of_an_address(broker):
    """KIP-612's ip quota: connection_creation_rate = 2/s for 127.0.0.2. Kafka measures it
    over the quota windows (at least 10 s at first), so a burst of 20 connections passes and
    the next ones are accepted, then closed once their throttle time has passed; another
    address (127.0.0.1, the admin calls here) is not limited, and removing the quota lifts it.
    In the cluster the quota is set through the first node and the last one enforces it."""
    admin_bs = broker.node_addrs("PLAINTEXT")[0]
    bs = broker.node_addrs("PLAINTEXT")[-1]
    source = "127.0.0.2"
    [(code, message, _)] = alter_quotas(admin_bs, [([("ip", source)], [("connection_creation_rate", 2.0)])])
    assert code == 0, message
    deadline = time.monotonic() + 10
    while describe_quotas(bs, [("ip", 0, source)], strict=True)[2] == {}:
        assert time.monotonic() < deadline, "the quota did not reach the last node"
        time.sleep(0.2)
    time.sleep(0.3)
    t0 = time.monotonic()
    answered = [_api_versions_answered(bs, source) for _ in range(30)]
    took = time.monotonic() - t0
    served = sum(answered)
    print(f"\nQUOTA-CHECK connection_creation_rate 2/s: {served} of 30 connections from {source} "
          f"served in {took:.1f} s, {30 - served} closed")
    assert answered[:15] == [True] * 15, answered
    assert 15 <= served <= 25 and not answered[-1], answered
    assert all(_api_versions_answered(bs, "127.0.0.1") for _ in range(30))
    [(code, message, _)] = alter_quotas(admin_bs, [([("ip", source)], [("connection_creation_rate", None)])])
    assert code == 0, message
    deadline = time.monotonic() + 10
    while describe_quotas(bs, [("ip", 0, source)], strict=True)[2] != {}:
        assert time.monotonic() < deadline, "the removal did not reach the last node"
        time.sleep(0.2)
    time.sleep(0.3)
    assert all(_api_versions_answered(bs, source) for _ in range(10))
    assert "connection_creation_rate quota of this address exceeded" in broker.node_logs()[-1]
