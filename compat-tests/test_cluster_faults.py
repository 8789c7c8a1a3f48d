"""A Jepsen-style fault checker: real clients against a 3-node cluster whose nodes run on
hosts of their own (compat-tests/netns.py: one network namespace per node, addresses
10.203.2.1-3), while a nemesis injects faults and heals them.

- one topic, RF 3, 3 partitions, `min.insync.replicas=2`;
- 3 idempotent producers (acks=all) in threads, each sending unique numbered values
  (`p<producer>-<seq>-<random tail>`) to random partitions; every record whose delivery
  report succeeded is acknowledged: (partition, offset, value);
- a consumer group of 2 members reading the topic meanwhile, committing synchronously after
  each batch (at-least-once);
- the nemesis (the main thread: a node restarted by another thread would die with that
  thread, PR_SET_PDEATHSIG) cycles for about OTTLA_FAULT_SECONDS (default 80) through:
  kill -9 of a partition's leader (restarted on the same data directory); SIGSTOP of a leader
  for longer than the broker session timeout, then SIGCONT; a leader cut from its peers by
  iptables (the clients still reach it); the active controller (DescribeQuorum's leader)
  isolated (its link down); a rolling restart (SIGTERM, restart, healthy again, node by
  node). Between faults it heals and waits until every broker is registered and every
  partition has its full ISR again. The schedule comes from OTTLA_FAULT_SEED (default
  random, printed).

After healing: the producers are flushed, the cluster waits for full ISR, each partition's
high watermark is taken from its leader, and

- a full read of every partition from its start to the high watermark (through the
  leaders) must hold every acknowledged record at exactly its acknowledged offset with its
  value (else lost, or misplaced when it is elsewhere), no value twice (idempotence), offsets
  strictly increasing;
- every record the group read at an offset must be the one the log holds there (clash);
- the cluster is stopped cleanly (every node exits 0, no panic), then every node's segment
  files of the topic are parsed batch by batch (base offset, length, CRC32C over attributes
  to the end): each replica must hold the same batches as the leader, byte for byte, up to
  the high watermark (replica mismatches).

One `FAULT-CHECKER` line sums it up. The anomalies of the log (lost, misplaced, duplicates,
replica mismatches, clashes, order) and of the group's offsets must all be 0: commit
regressions (a commit that began after a higher offset's commit of the partition was
acknowledged) and resumed_below_commit (a member's first record after an assignment lies
below an offset whose commit was acknowledged before it), both meaning an acknowledged
offset commit was lost. The rest is information: the group's redeliveries and rewinds,
producer errors, the longest stretch a partition acknowledged nothing. Needs root (namespaces); skipped
otherwise, saying why. OTTLA_CLUSTER_KEEP=1 keeps the nodes' data and logs.
"""

import os
import random
import re
import signal
import socket
import struct
import threading
import time
import uuid
from collections import Counter, defaultdict

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cluster import metadata_from
from netns import Hosts, NetnsCluster, can_make_namespaces

OK, WHY = can_make_namespaces()
pytestmark = pytest.mark.skipif(not OK, reason=f"network namespaces unavailable: {WHY}")

SESSION_MS = 3000
HEARTBEAT_MS = 500
REPLICA_LAG_MS = 5000
PARTITIONS = 3
PRODUCERS = 3
CONSUMERS = 2
FAULT_SECONDS = float(os.environ.get("OTTLA_FAULT_SECONDS", "80"))
HEAL_TIMEOUT_S = 60
PRODUCE_INTERVAL_S = 0.005
CLIENT_LOG_LEVEL = 2  # librdkafka: critical only (every fault makes it log disconnects)
NODE_ENV = {
    "OTTLA_BROKER_SESSION_TIMEOUT_MS": str(SESSION_MS),
    "OTTLA_BROKER_HEARTBEAT_INTERVAL_MS": str(HEARTBEAT_MS),
    "OTTLA_REPLICA_LAG_TIME_MAX_MS": str(REPLICA_LAG_MS),
    # leadership moves back to the preferred replicas now and then: more leader changes
    "OTTLA_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS": "10",
}


@pytest.fixture
def fault_cluster(request):
    hosts = Hosts(3, subnet=2)
    c = NetnsCluster(hosts, extra_env=NODE_ENV)
    failed_before = request.session.testsfailed
    try:
        hosts.up()
        c.start()
        yield c
    finally:
        if request.session.testsfailed > failed_before:
            print("\n" + c.tails(80))
        try:
            hosts.heal_all()
        finally:
            c.cleanup()
            hosts.down()


# ---- DescribeQuorum (who is the active controller) ------------------------------------------

def _uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_uvarint(data, pos):
    shift = value = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def quorum_leader(address, timeout=3.0):
    """The active controller's node id by DescribeQuorum v0 (any broker forwards it to the
    active controller), or None."""
    host, port = address.rsplit(":", 1)
    name = b"__cluster_metadata"
    body = (_uvarint(2) + _uvarint(len(name) + 1) + name + _uvarint(2) + struct.pack(">i", 0)
            + b"\0" + b"\0" + b"\0")
    client = b"fault-checker"
    header = struct.pack(">hhih", 55, 0, 7, len(client)) + client + b"\0"
    frame = header + body
    with socket.create_connection((host, int(port)), timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(frame)) + frame)
        (size,) = struct.unpack(">i", _recv_exact(s, 4))
        data = _recv_exact(s, size)
    pos = 4  # correlation id
    _, pos = _read_uvarint(data, pos)  # header tagged fields (none)
    (err,) = struct.unpack_from(">h", data, pos)
    pos += 2
    if err:
        return None
    _, pos = _read_uvarint(data, pos)  # topics
    n, pos = _read_uvarint(data, pos)
    pos += n - 1  # topic name
    _, pos = _read_uvarint(data, pos)  # partitions
    _, perr, leader = struct.unpack_from(">ihi", data, pos)
    return leader if perr == 0 and leader >= 0 else None


# ---- segment files ---------------------------------------------------------------------------

SEGMENT_NAME = re.compile(r"^\d{20}\.log$")


def replica_batches(data_dir, topic, partition, below):
    """The record batches of one replica whose base offset is below `below`, from its
    segment files in order: [(base offset, last offset, crc ok, raw bytes)]."""
    import crc32c

    d = os.path.join(data_dir, f"{topic}-{partition}")
    if not os.path.isdir(d):
        return []
    out = []
    for name in sorted(n for n in os.listdir(d) if SEGMENT_NAME.match(n)):
        with open(os.path.join(d, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos + 61 <= len(data):
            base, length = struct.unpack_from(">qi", data, pos)
            size = 12 + length
            if length < 49 or pos + size > len(data):
                break  # end of the data (zeros of a preallocated tail, or a torn batch)
            if base >= below:
                return out
            (crc,) = struct.unpack_from(">I", data, pos + 17)
            (last_delta,) = struct.unpack_from(">i", data, pos + 23)
            raw = data[pos:pos + size]
            out.append((base, base + last_delta, crc32c.crc32c(raw[21:]) == crc, raw))
            pos += size
    return out


def compare_replicas(nodes, topic, partition, leader, hw):
    """Mismatch descriptions of one partition: every replica against the leader, batch by
    batch up to the high watermark."""
    logs = {nd.id: replica_batches(nd.data_dir, topic, partition, hw) for nd in nodes}
    problems = []
    for node_id, batches in logs.items():
        for base, last, crc_ok, _ in batches:
            if not crc_ok:
                problems.append(f"p{partition} node {node_id}: batch {base}-{last} fails its CRC")
        end = batches[-1][1] + 1 if batches else 0
        if end < hw:
            problems.append(f"p{partition} node {node_id}: ends at {end}, below the high watermark {hw}")
    ref = logs[leader]
    for node_id, batches in logs.items():
        if node_id == leader:
            continue
        for i in range(max(len(ref), len(batches))):
            a = ref[i] if i < len(ref) else None
            b = batches[i] if i < len(batches) else None
            if a is not None and b is not None and a[3] == b[3]:
                continue
            if a is None or b is None:
                what = f"leader {leader} has {'nothing' if a is None else f'{a[0]}-{a[1]}'}, " \
                       f"node {node_id} has {'nothing' if b is None else f'{b[0]}-{b[1]}'}"
            else:
                diff = next(k for k in range(min(len(a[3]), len(b[3])) + 1)
                            if k >= min(len(a[3]), len(b[3])) or a[3][k] != b[3][k])
                what = (f"batch #{i}: leader {leader} {a[0]}-{a[1]} ({len(a[3])} B), node {node_id} "
                        f"{b[0]}-{b[1]} ({len(b[3])} B), first different byte at {diff}")
            problems.append(f"p{partition} mismatch: {what}")
    return problems, {nid: len(b) for nid, b in logs.items()}


# ---- cluster state ----------------------------------------------------------------------------

def cluster_problems(c, topic):
    """What keeps the cluster from being healthy, as every node sees it: all 3 brokers
    registered, every partition of `topic` led, with the full ISR. [] when healthy."""
    problems = []
    want = [nd.id for nd in c.nodes]
    for nd in c.nodes:
        if nd.proc is None:
            problems.append(f"node {nd.id} not running")
            continue
        try:
            md = metadata_from(nd.bootstrap, topic, timeout=3, attempts=3)
        except Exception as e:  # noqa: BLE001 - a node mid-election answers with errors
            problems.append(f"node {nd.id}: {e!r}"[:200])
            continue
        if sorted(md.brokers) != want:
            problems.append(f"node {nd.id} lists brokers {sorted(md.brokers)}")
        t = md.topics.get(topic)
        if t is None or t.error is not None or len(t.partitions) != PARTITIONS:
            problems.append(f"node {nd.id}: topic {t.error if t else 'missing'}")
            continue
        for p in t.partitions.values():
            if p.leader < 0 or sorted(p.isrs) != want:
                problems.append(f"node {nd.id}: p{p.id} leader {p.leader} isr {sorted(p.isrs)}")
    return problems


def wait_healthy(c, topic, timeout=HEAL_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while True:
        problems = cluster_problems(c, topic)
        if not problems:
            return []
        if time.monotonic() > deadline:
            return problems
        time.sleep(0.5)


def leaders(c, topic):
    """{partition: leader} from the first node that answers with every partition led."""
    for nd in c.nodes:
        if nd.proc is None:
            continue
        try:
            md = metadata_from(nd.bootstrap, topic, timeout=3, attempts=3)
            t = md.topics[topic]
            got = {p.id: p.leader for p in t.partitions.values()}
            if len(got) == PARTITIONS and all(v >= 0 for v in got.values()):
                return got
        except Exception:  # noqa: BLE001
            continue
    return {}


def controller(c):
    for nd in c.nodes:
        if nd.proc is None:
            continue
        try:
            got = quorum_leader(nd.bootstrap)
        except OSError:
            continue
        if got is not None:
            return got
    return None


# ---- clients ------------------------------------------------------------------------------------

class Producers:
    def __init__(self, bootstrap, topic, seed, n=PRODUCERS):
        self.bootstrap = bootstrap
        self.topic = topic
        self.seed = seed
        self.n = n
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = {}  # value -> (partition, offset, producer, seq, ack time)
        self.ack_times = defaultdict(list)  # partition -> monotonic ack times
        self.sent = 0
        self.failed = Counter()  # error name -> count
        self.fatal = []
        self.unflushed = 0
        self.threads = [threading.Thread(target=self.run, args=(i,), name=f"producer{i}", daemon=True)
                        for i in range(n)]

    def start(self):
        for t in self.threads:
            t.start()

    def new_producer(self, i):
        def on_error(err):
            if err.fatal():
                with self.lock:
                    self.fatal.append(f"producer {i}: {err}")

        return Producer({
            "bootstrap.servers": self.bootstrap, "client.id": f"fault-p{i}",
            "enable.idempotence": True, "acks": "all", "linger.ms": 5,
            "message.timeout.ms": 60000,  # request.timeout.ms: the default 30 s
            "retry.backoff.ms": 100, "retry.backoff.max.ms": 1000,
            "reconnect.backoff.max.ms": 1000, "socket.connection.setup.timeout.ms": 3000,
            "topic.metadata.refresh.interval.ms": 5000, "error_cb": on_error, "log_level": CLIENT_LOG_LEVEL,
        })

    def run(self, i):
        rng = random.Random(f"{self.seed}-producer-{i}")
        seq = 0

        def on_delivery(err, msg):
            now = time.monotonic()
            with self.lock:
                if err is not None:
                    self.failed[err.name()] += 1
                else:
                    v = msg.value()
                    _, s, _ = v.split(b"-", 2)
                    self.acked[v] = (msg.partition(), msg.offset(), i, int(s), now)
                    self.ack_times[msg.partition()].append(now)

        p = self.new_producer(i)
        fatal_seen = 0
        while not self.stop.is_set():
            with self.lock:
                fatal_now = sum(1 for f in self.fatal if f.startswith(f"producer {i}:"))
            if fatal_now > fatal_seen:  # unusable now: its queue fails, a new one goes on
                fatal_seen = fatal_now
                p.flush(5)
                p = self.new_producer(i)
            tail = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(8, 64)))
            value = f"p{i}-{seq}-{tail}".encode()
            try:
                p.produce(self.topic, value=value, partition=rng.randrange(PARTITIONS), on_delivery=on_delivery)
            except BufferError:
                p.poll(0.1)
                continue
            except KafkaException as e:
                with self.lock:
                    self.failed[f"produce:{e.args[0].name()}"] += 1
                p.poll(0.1)
                continue
            seq += 1
            with self.lock:
                self.sent += 1
            p.poll(0)
            time.sleep(PRODUCE_INTERVAL_S)
        left = p.flush(60)
        with self.lock:
            self.unflushed += left

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(90)
        return all(not t.is_alive() for t in self.threads)


class Group:
    """CONSUMERS members of one group, each in its own thread, committing synchronously after
    every batch it read."""

    def __init__(self, bootstrap, topic, n=CONSUMERS):
        self.bootstrap = bootstrap
        self.topic = topic
        self.group = f"fault-group-{uuid.uuid4().hex[:8]}"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.reads = []  # (partition, offset, value, member)
        self.seen_values = set()
        self.rewinds = 0  # an offset not above the last one read, within one assignment
        self.commits = 0
        self.commit_failures = Counter()
        self.commit_log = []  # (start, end, member, partition, offset): the successful commits
        self.assignments = []  # (time, member, partitions)
        self.first_reads = []  # (time assigned, member, partition, first offset read after it)
        self.errors = Counter()
        self.rebalances = 0
        self.threads = [threading.Thread(target=self.run, args=(i,), name=f"consumer{i}", daemon=True)
                        for i in range(n)]

    def start(self):
        for t in self.threads:
            t.start()

    def run(self, member):
        last = {}

        fresh = {}  # partition -> assignment time, until its first record

        def on_assign(consumer, parts):
            now = time.monotonic()
            with self.lock:
                self.rebalances += 1
                self.assignments.append((now, member, sorted(tp.partition for tp in parts)))
            for tp in parts:
                last.pop(tp.partition, None)
                fresh[tp.partition] = now

        def on_revoke(consumer, parts):
            for tp in parts:
                last.pop(tp.partition, None)
                fresh.pop(tp.partition, None)

        c = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": self.group, "client.id": f"fault-c{member}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
            "reconnect.backoff.max.ms": 1000, "socket.connection.setup.timeout.ms": 3000,
            "topic.metadata.refresh.interval.ms": 5000, "log_level": CLIENT_LOG_LEVEL,
        })
        c.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke)
        try:
            while not self.stop.is_set():
                msgs = c.consume(200, 0.5)
                got = False
                with self.lock:
                    for m in msgs:
                        if m.error() is not None:
                            self.errors[m.error().name()] += 1
                            continue
                        got = True
                        p, off = m.partition(), m.offset()
                        if p in last and off <= last[p]:
                            self.rewinds += 1
                        last[p] = off
                        if p in fresh:
                            self.first_reads.append((fresh.pop(p), member, p, off))
                        self.reads.append((p, off, m.value(), member))
                        self.seen_values.add(m.value())
                if not got:
                    continue
                t_commit = time.monotonic()
                try:
                    done = c.commit(asynchronous=False)
                except KafkaException as e:
                    with self.lock:
                        self.commit_failures[e.args[0].name()] += 1
                    continue
                t_done = time.monotonic()
                with self.lock:
                    self.commits += 1
                    for tp in done or []:
                        if tp.error is None and tp.offset >= 0:
                            self.commit_log.append((t_commit, t_done, member, tp.partition, tp.offset))
        finally:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def commit_regressions(self):
        """Commits of a partition that began after a commit of a higher offset had been
        acknowledged ([(earlier, later)] of commit_log entries), and the assignments whose
        first record lies below an offset committed (acknowledged) before the assignment
        ([(first read, that commit)]): both mean the committed offset went back."""
        regressions, resumed_below = [], []
        for b in self.commit_log:
            before = [a for a in self.commit_log if a[3] == b[3] and a[1] < b[0] and a[4] > b[4]]
            if before:
                regressions.append((max(before, key=lambda a: a[4]), b))
        for r in self.first_reads:
            t_assign, _, p, off = r
            before = [a for a in self.commit_log if a[3] == p and a[1] < t_assign and a[4] > off]
            if before:
                resumed_below.append((r, max(before, key=lambda a: a[4])))
        return regressions, resumed_below


def create_topic(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    f = admin.create_topics([NewTopic(topic, PARTITIONS, 3, config={"min.insync.replicas": "2"})])
    f[topic].result(30)


def read_all(bootstrap, topic, hws, timeout_s=90):
    """{partition: [(offset, value)]}: every partition from its start up to its high
    watermark, through its leader."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fault-read-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "enable.partition.eof": False, "log_level": CLIENT_LOG_LEVEL})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    out = {p: [] for p in range(PARTITIONS)}
    done = {p for p in range(PARTITIONS) if hws[p] == 0}
    deadline = time.monotonic() + timeout_s
    errors = Counter()
    try:
        while len(done) < PARTITIONS:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the full read did not reach the high watermarks {hws} within {timeout_s} s: "
                    f"at {({p: (v[-1][0] if v else None) for p, v in out.items()})}, errors {dict(errors)}")
            for m in c.consume(1000, 1.0):
                if m.error() is not None:
                    errors[m.error().name()] += 1
                    continue
                p = m.partition()
                if m.offset() < hws[p]:
                    out[p].append((m.offset(), m.value()))
                if m.offset() >= hws[p] - 1:
                    done.add(p)
    finally:
        c.close()
    return out


# ---- the test ---------------------------------------------------------------------------------

def test_acknowledged_records_survive_faults(fault_cluster, capsys):
    c = fault_cluster
    seed = int(os.environ.get("OTTLA_FAULT_SEED", random.randrange(1 << 31)))
    rng = random.Random(seed)
    with capsys.disabled():
        print(f"\nFAULT-CHECKER seed {seed} (OTTLA_FAULT_SEED={seed} replays the schedule); "
              f"cluster files in {c.root}", flush=True)
    t_run = time.monotonic()
    topic = f"faults-{uuid.uuid4().hex[:8]}"
    create_topic(c.bootstrap, topic)
    problems = wait_healthy(c, topic, timeout=30)
    assert not problems, f"the new topic never got its full ISR: {problems}"

    producers = Producers(c.bootstrap, topic, seed)
    group = Group(c.bootstrap, topic)
    producers.start()
    group.start()

    events = []  # (seconds since the run's start, text)
    faults = Counter()
    heal_failures = []
    stop_problems = []
    nemesis_errors = []

    def note(text):
        t = time.monotonic() - t_run
        events.append((t, text))
        with capsys.disabled():
            print(f"  [{t:6.1f}s] {text}", flush=True)

    def revive_crashed():
        """A node whose process exited when nothing stopped it crashed: reported (with its
        log's tail) and started again."""
        for nd in c.nodes:
            if nd.proc is not None and nd.proc.poll() is not None:
                rc, nd.proc = nd.proc.returncode, None
                nemesis_errors.append(f"node {nd.id} exited by itself with {rc}:\n{nd.tail(40)}")
                note(f"NODE {nd.id} EXITED BY ITSELF with {rc}; restarting it")
            if nd.proc is None:
                c.start_node(nd.id)

    def heal_and_wait(what):
        revive_crashed()
        problems = wait_healthy(c, topic)
        if problems:
            heal_failures.append(f"after {what}: {problems}")
            note(f"NOT HEALED within {HEAL_TIMEOUT_S} s after {what}: {problems[:4]}")
        else:
            note(f"healthy after {what}")
        time.sleep(rng.uniform(2, 4))

    def pick_leader():
        led = leaders(c, topic)
        if not led:
            return rng.randint(1, 3), None
        p = rng.randrange(PARTITIONS)
        return led[p], p

    def fault_kill():
        node, p = pick_leader()
        note(f"kill -9 node {node} (leader of p{p})")
        c.kill(node)
        time.sleep(rng.uniform(2, 5))
        c.start_node(node)
        note(f"node {node} restarted")
        heal_and_wait(f"kill -9 of node {node}")

    def fault_pause():
        node, p = pick_leader()
        pause = SESSION_MS / 1000 + rng.uniform(1.5, 3.5)
        nd = c.node(node)
        note(f"SIGSTOP node {node} (leader of p{p}) for {pause:.1f} s")
        os.kill(nd.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(pause)
        finally:
            os.kill(nd.proc.pid, signal.SIGCONT)
        note(f"SIGCONT node {node}")
        heal_and_wait(f"pause of node {node}")

    def fault_cut():
        node, p = pick_leader()
        hold = rng.uniform(5, 9)
        note(f"cut node {node} (leader of p{p}) from its peers for {hold:.1f} s (clients still reach it)")
        c.hosts.cut_off(node)
        try:
            time.sleep(hold)
        finally:
            c.hosts.rejoin(node)
        note(f"node {node} rejoined its peers")
        heal_and_wait(f"cut of node {node}")

    def fault_isolate_controller():
        node = controller(c)
        how = "active controller by DescribeQuorum"
        if node is None:
            node, how = rng.randint(1, 3), "random node: DescribeQuorum gave no leader"
        hold = rng.uniform(5, 9)
        note(f"isolate node {node} ({how}) for {hold:.1f} s: link down")
        c.hosts.isolate(node)
        try:
            time.sleep(hold)
        finally:
            c.hosts.heal(node)
        note(f"node {node} link up; the controller is now {controller(c)}")
        heal_and_wait(f"isolation of node {node}")

    def fault_rolling_restart():
        order = [1, 2, 3]
        rng.shuffle(order)
        note(f"rolling restart, order {order}")
        for node in order:
            nd = c.node(node)
            nd.signal(signal.SIGTERM)
            rc = nd.wait(30)
            if rc != 0:
                stop_problems.append(f"node {node} exited with {rc} on SIGTERM in the rolling restart")
            c.start_node(node)
            note(f"node {node} restarted (SIGTERM exit {rc})")
            problems = wait_healthy(c, topic)
            if problems:
                heal_failures.append(f"rolling restart after node {node}: {problems}")
                note(f"NOT HEALED after restarting node {node}: {problems[:4]}")
        heal_and_wait("the rolling restart")

    kinds = {"kill": fault_kill, "pause": fault_pause, "cut": fault_cut,
             "isolate_controller": fault_isolate_controller, "rolling_restart": fault_rolling_restart}
    schedule = list(kinds)
    rng.shuffle(schedule)
    time.sleep(3)  # traffic before the first fault
    t_nemesis = time.monotonic()
    try:
        i = 0
        while True:
            if i < len(schedule):
                kind = schedule[i]
            elif time.monotonic() - t_nemesis < FAULT_SECONDS - 10:
                kind = rng.choice(["kill", "pause", "cut", "isolate_controller"])
            else:
                break
            i += 1
            faults[kind] += 1
            try:
                kinds[kind]()
            except Exception as e:  # noqa: BLE001 - a node that did not stop or start: reported
                nemesis_errors.append(f"{kind}: {e}"[:3000])
                note(f"ERROR in {kind}: {str(e)[:300]}")
                c.hosts.heal_all()
                heal_and_wait(f"the failed {kind}")
    finally:
        # whatever happened, nothing stays cut, paused or down
        c.hosts.heal_all()
        for nd in c.nodes:
            if nd.proc is not None:
                try:
                    os.kill(nd.proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        revive_crashed()
    nemesis_s = time.monotonic() - t_nemesis
    note(f"nemesis done after {nemesis_s:.0f} s")
    time.sleep(5)  # traffic after the last fault
    t_stop_producing = time.monotonic()
    flushed = producers.join()
    note(f"producers stopped (flushed: {flushed}, unflushed {producers.unflushed})")

    problems = wait_healthy(c, topic)
    assert not problems, f"the cluster never healed after the faults: {problems}\n{c.tails(80)}"
    led = leaders(c, topic)
    hws = {}
    probe = Consumer({"bootstrap.servers": c.bootstrap, "group.id": f"fault-hw-{uuid.uuid4().hex[:8]}",
                      "log_level": CLIENT_LOG_LEVEL})
    for p in range(PARTITIONS):
        hws[p] = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
    probe.close()
    log = read_all(c.bootstrap, topic, hws)
    note(f"full read up to the high watermarks {hws} (leaders {led})")

    # ---- the checks on the full read
    acked = dict(producers.acked)
    at = {p: {} for p in range(PARTITIONS)}
    where = defaultdict(list)  # value -> [(partition, offset)]
    order_violations = 0
    for p, recs in log.items():
        prev = -1
        for off, v in recs:
            if off <= prev:
                order_violations += 1
            prev = off
            at[p][off] = v
            where[v].append((p, off))
    consumed = sum(len(r) for r in log.values())
    duplicates = sum(len(w) - 1 for w in where.values() if len(w) > 1)
    lost, misplaced = [], []
    for v, (p, off, prod, s, t_ack) in acked.items():
        if at[p].get(off) == v:
            continue
        (misplaced if v in where else lost).append((p, off, v, prod, s, t_ack))
    lost.sort(key=lambda r: r[5])

    # the group catches up on every acknowledged record the log holds (liveness; information)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with group.lock:
            missing = sum(1 for v in acked if v in where and v not in group.seen_values)
        if missing == 0:
            break
        time.sleep(0.5)
    group.join()
    # each producer's acknowledged records of a partition: offsets grow with the sequence
    reorders = 0
    per = defaultdict(list)
    for v, (p, off, prod, s, _) in acked.items():
        per[(prod, p)].append((s, off))
    for recs in per.values():
        recs.sort()
        reorders += sum(1 for a, b in zip(recs, recs[1:]) if b[1] <= a[1])
    # what the group read at an offset is what the log holds there
    clashes = []
    for p, off, v, member in group.reads:
        if at[p].get(off) != v:
            clashes.append((p, off, v, at[p].get(off), member))
    group_offsets = {(p, off) for p, off, _, _ in group.reads}
    redelivered = len(group.reads) - len(group_offsets)
    group_missing = sum(1 for v in acked if v in where and v not in group.seen_values)
    commit_regressions, resumed_below = group.commit_regressions()

    # the longest stretch each partition acknowledged nothing, while producing (or flushing)
    gaps = {}
    for p, times in producers.ack_times.items():
        ts = sorted(times)
        if ts and ts[-1] < t_stop_producing:
            ts.append(t_stop_producing)
        gaps[p] = max(((b - a, a - t_run) for a, b in zip(ts, ts[1:])), default=(0.0, 0.0))
    max_gap, gap_at = 0.0, None
    for p, (g, t0) in gaps.items():
        if g > max_gap:
            max_gap, gap_at = g, (p, t0)

    # ---- clean stop, then every replica's segment files against the leader's
    try:
        c.stop()
    except AssertionError as e:
        stop_problems.append(str(e)[:3000])
    mismatches, batch_counts = [], {}
    for p in range(PARTITIONS):
        found, counts = compare_replicas(c.nodes, topic, p, led.get(p, 1), hws[p])
        mismatches += found
        batch_counts[p] = counts
    run_s = time.monotonic() - t_run

    fault_text = ",".join(f"{k}={faults[k]}" for k in kinds if faults[k])
    line = (f"FAULT-CHECKER seed={seed} run_s={run_s:.0f} nemesis_s={nemesis_s:.0f} "
            f"acked={len(acked)} sent={producers.sent} consumed={consumed} lost={len(lost)} "
            f"misplaced={len(misplaced)} duplicates={duplicates} replica_mismatches={len(mismatches)} "
            f"clashes={len(clashes)} order={order_violations} faults[{fault_text}] "
            f"max_unavailable_s={max_gap:.1f}"
            + (f"(p{gap_at[0]}@{gap_at[1]:.0f}s)" if gap_at else "")
            + f" | group_read={len(group_offsets)} redelivered={redelivered} group_missing={group_missing} "
            f"rewinds={group.rewinds} commits={group.commits} commit_failures={sum(group.commit_failures.values())} "
            f"commit_regressions={len(commit_regressions)} resumed_below_commit={len(resumed_below)} "
            f"reorders={reorders} "
            f"produce_failed={sum(producers.failed.values())} fatal={len(producers.fatal)} "
            f"unhealed={len(heal_failures)} nemesis_errors={len(nemesis_errors)} hw={[hws[p] for p in range(PARTITIONS)]}")
    with capsys.disabled():
        print(line)
        if producers.failed:
            print(f"  produce failures: {dict(producers.failed)}")
        if producers.fatal:
            print(f"  fatal producer errors: {producers.fatal[:5]}")
        if group.commit_failures or group.errors:
            print(f"  group: commit failures {dict(group.commit_failures)}, read errors {dict(group.errors)}, "
                  f"rebalances {group.rebalances}")
        for a, b in commit_regressions[:10]:
            print(f"  commit regression on p{b[3]}: member {b[2]} committed {b[4]} ({b[0] - t_run:.1f}s-"
                  f"{b[1] - t_run:.1f}s) after member {a[2]} had committed {a[4]} ({a[0] - t_run:.1f}s-"
                  f"{a[1] - t_run:.1f}s)")
        for (t_assign, member, p, off), a in resumed_below[:10]:
            print(f"  member {member} assigned p{p} at {t_assign - t_run:.1f}s read from {off} first, below "
                  f"offset {a[4]} committed by member {a[2]} ({a[0] - t_run:.1f}s-{a[1] - t_run:.1f}s)")
        if commit_regressions or resumed_below:
            print("  assignments: " + "; ".join(f"{t - t_run:.1f}s member {m} {ps}" for t, m, ps in group.assignments))
        print("  longest stretch without an acknowledgement per partition: "
              + ", ".join(f"p{p} {g:.1f} s from {t0:.1f}s" for p, (g, t0) in sorted(gaps.items())))
        print(f"  batches per replica (partition: {{node: count}}): {batch_counts}")
        for what, recs in (("lost", lost), ("misplaced", misplaced)):
            for p, off, v, prod, s, t_ack in recs[:20]:
                print(f"  {what}: p{p}@{off} {v[:40]!r} (producer {prod} seq {s}, acked at "
                      f"{t_ack - t_run:.1f}s); the log has {at[p].get(off, b'nothing')[:40]!r} there"
                      + (f", the value at {where[v]}" if v in where else ""))
        for p, off, v, now, member in clashes[:10]:
            print(f"  clash: member {member} read {v[:40]!r} at p{p}@{off}, the log holds {now and now[:40]!r}")
        for m in mismatches[:20]:
            print(f"  {m}")
        for f in heal_failures:
            print(f"  unhealed: {f[:500]}")
        for s in stop_problems:
            print(f"  stop: {s[:1500]}")
        for s in nemesis_errors:
            print(f"  nemesis error: {s[:1500]}")
        print("  timeline: " + "; ".join(f"{t:.0f}s {e}" for t, e in events))

    assert not stop_problems and not nemesis_errors, (stop_problems, nemesis_errors)
    assert (len(lost), len(misplaced), duplicates, len(mismatches), len(clashes), order_violations,
            len(commit_regressions), len(resumed_below)) == (0, 0, 0, 0, 0, 0, 0, 0), line
