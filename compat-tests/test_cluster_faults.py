"""A Jepsen-style fault checker: real clients against a cluster whose nodes run on hosts of
their own (compat-tests/netns.py: one network namespace per node), while a nemesis injects
faults and heals them.

test_acknowledged_records_survive_faults, 3 nodes (10.203.2.1-3):

- one topic, RF 3, 3 partitions, `min.insync.replicas=2`;
- 3 idempotent producers (acks=all, linger.ms 10) in threads, each sending unique numbered
  values (`p<producer>-<seq>-<random tail>`) to random partitions at a steady pace (2,500
  records/s all together, OTTLA_FAULT_RATE; in bursts every 10 ms, batched by librdkafka):
  150,000-190,000 acknowledged records a run, at least 100,000 asserted (OTTLA_FAULT_MIN_ACKED;
  a short schedule produces on for up to 20 s more to get there).
  Every record whose delivery report succeeded is acknowledged: (partition, offset, value)
  (librdkafka acknowledges some without an offset: records of a request that failed without
  certainty when a later one succeeded; those must be in their partition, once);
- a consumer group of 2 members reading the topic meanwhile, committing synchronously after
  each batch (at-least-once);
- a transactional producer (`transactional.id`) on a second topic (RF 3, 3 partitions,
  `min.insync.replicas=2`): transactions of 1-6 records, every 3rd aborted on purpose once its
  records were delivered (they are in the log, hidden by the abort marker), retried, aborted or
  replaced by confluent-kafka's documented pattern (retriable: call again; txn_requires_abort:
  abort_transaction; fatal: a new producer, whose init_transactions fences the old one). Each
  transaction's outcome as the client saw it: committed, aborted (its commit never asked for),
  or unknown (commit_transaction raised);
- the nemesis (the main thread: a node restarted by another thread would die with that
  thread, PR_SET_PDEATHSIG) cycles for about OTTLA_FAULT_SECONDS (default 62) through:
  kill -9 of a partition's leader (restarted on the same data directory); SIGSTOP of a leader
  for longer than the broker session timeout, then SIGCONT; a leader cut from its peers by
  iptables (the clients still reach it); the active controller (DescribeQuorum's leader)
  isolated (its link down); a rolling restart (SIGTERM, restart, healthy again, node by
  node). Between faults it heals and waits until every broker is registered and every
  partition has its full ISR again. The schedule comes from OTTLA_FAULT_SEED (default
  random, printed).

After healing: the producers are flushed, the transactional one finishes its transaction and
a last producer of its id is initialized (ending anything left open), the cluster waits for
full ISR, each partition's high watermark is taken, and

- a full read of every partition from its start to the high watermark (through the
  leaders) must hold every acknowledged record at exactly its acknowledged offset with its
  value (else lost, or misplaced when it is elsewhere), no value twice (idempotence), offsets
  strictly increasing;
- every record the group read at an offset must be the one the log holds there (clash);
- the transactional topic's last stable offsets must reach its high watermarks (lso_stuck:
  a transaction left hanging); read from the start with `isolation.level=read_committed`
  (and read_uncommitted, what the log holds): every record of every committed transaction
  exactly once, at its delivered offset (txn_lost, txn_misplaced, txn_duplicates), no record
  of an aborted transaction (aborted_read), an unknown transaction all there or all absent
  (txn_partial), nothing no transaction sent (txn_stray), one value per offset in both reads
  (txn_clashes); aborted records must be in the log (aborted_in_log > 0) for the check to mean
  anything;
- the cluster is stopped cleanly (every node exits 0, no panic), then every node's segment
  files of both topics are parsed batch by batch (base offset, length, CRC32C over attributes
  to the end): each replica must hold the same batches as the leader, byte for byte, up to
  the high watermark (replica mismatches).

One `FAULT-CHECKER` line sums it up. The anomalies of the log (lost, misplaced, duplicates,
replica mismatches, clashes, order), of the group's offsets (commit regressions: a commit that
began after a higher offset's commit of the partition was acknowledged; resumed_below_commit: a
member's first record after an assignment lies below an offset whose commit was acknowledged
before it; both meaning an acknowledged offset commit was lost) and of the transactions must
all be 0. The rest is information: the group's redeliveries and rewinds, producer errors, the
longest stretch a partition acknowledged nothing, the transactions' outcomes, and the CPU
seconds the brokers (every run of every node) and this process (clients, checks) used.

test_last_isr_member_leads_again, KIP-966's case, 5 nodes (10.203.3.1-5, all controller
voters, so that the quorum outlives two deaths): a partition with RF 3 and
`min.insync.replicas=1`; both followers killed (kill -9) until the ISR is the leader alone,
which acknowledges records (acks=all) only it holds, then the leader killed too (its records in
the page cache, not fsynced: the default flush policy). The followers come back first: the
partition must stay offline (leader -1, LEADER_NOT_AVAILABLE, the ISR empty, the old leader
its only eligible replica, produce failing), never led by a replica lacking those records (no
unclean election); then the old leader comes back (unclean: out of the ELR, but the last known
leader) and must lead again, with every acknowledged record in order, none lost, and the
replicas' batches identical (`KIP966-CHECK` line).

test_an_eligible_replica_leads_when_the_isr_empties, KIP-966's eligible leader replicas on the
same 5 nodes: RF 3, `min.insync.replicas=2`; both followers stop cleanly one after the other,
so the second is eligible (ELR); acks=all is refused and acks=1 records are appended but not
committed (the high watermark stands still, none is read); the leader is killed (-9); the
eligible follower restarts (clean) and must lead with every committed record while the old
leader is down; the old leader returns, drops the uncommitted tail, and the log is exactly the
committed records then the later ones, identical on every replica (`ELR-CHECK` line).

Needs root (namespaces); skipped otherwise, saying why. OTTLA_CLUSTER_KEEP=1 keeps the nodes'
data and logs.
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
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cluster import answered_by, metadata_from
from netns import Hosts, NetnsCluster, can_make_namespaces

OK, WHY = can_make_namespaces()
pytestmark = pytest.mark.skipif(not OK, reason=f"network namespaces unavailable: {WHY}")

SESSION_MS = 3000
HEARTBEAT_MS = 500
REPLICA_LAG_MS = 5000
PARTITIONS = 3
PRODUCERS = 3
CONSUMERS = 2
DEFAULT_FAULT_SECONDS = 62
FAULT_SECONDS = float(os.environ.get("OTTLA_FAULT_SECONDS", str(DEFAULT_FAULT_SECONDS)))
HEAL_TIMEOUT_S = 60
# The idempotent producers' pace, all together (records per second, sent in bursts every
# PRODUCE_TICK_S; librdkafka batches them for linger.ms): 60-75 s of producing, 150,000-
# 190,000 records. The pace sets the count, not the CPU: on 2 cores the 3 brokers use about
# half a core at 2,000/s, and a run at 6,000/s acknowledged 375,000 records with about the same.
PRODUCE_RATE = float(os.environ.get("OTTLA_FAULT_RATE", "2500"))
PRODUCE_TICK_S = 0.01
# The run fails below this many acknowledged records (the figure; 0 when the run is
# shortened with OTTLA_FAULT_SECONDS).
MIN_ACKED = int(os.environ.get("OTTLA_FAULT_MIN_ACKED",
                               "100000" if FAULT_SECONDS >= DEFAULT_FAULT_SECONDS else "0"))
TXN_PARTITIONS = 3
TXN_ABORT_EVERY = 3  # every 3rd transaction is aborted on purpose (after its records were sent)
TXN_TIMEOUT_MS = 20000  # transaction.timeout.ms (and message.timeout.ms) of the transactional producer
TXN_CALL_TIMEOUT_S = 10  # one init/commit/abort call; retriable errors are retried up to TXN_RETRY_S
TXN_RETRY_S = 40
# KIP-966's case: 5 nodes (every one a controller voter too), so that the quorum survives the
# two followers' deaths; the partition's 3 replicas are 3 of them.
KIP966_NODES = 5
KIP966_RECORDS = 2000  # acknowledged while the ISR is the leader alone
CLIENT_LOG_LEVEL = 2  # librdkafka: critical only (every fault makes it log disconnects)
NODE_ENV = {
    "OTTLA_BROKER_SESSION_TIMEOUT_MS": str(SESSION_MS),
    "OTTLA_BROKER_HEARTBEAT_INTERVAL_MS": str(HEARTBEAT_MS),
    "OTTLA_REPLICA_LAG_TIME_MAX_MS": str(REPLICA_LAG_MS),
    # leadership moves back to the preferred replicas now and then: more leader changes
    "OTTLA_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS": "10",
}


def netns_cluster(request, n, subnet, env):
    """A NetnsCluster of n nodes on hosts of their own, torn down (with the nodes' log tails
    printed when the test failed) whatever happens."""
    hosts = Hosts(n, subnet=subnet)
    c = NetnsCluster(hosts, extra_env=env)
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


@pytest.fixture
def fault_cluster(request):
    yield from netns_cluster(request, 3, 2, NODE_ENV)


@pytest.fixture
def kip966_cluster(request):
    # no automatic rebalancing: the partition's leader moves only by the faults
    env = {k: v for k, v in NODE_ENV.items() if k != "OTTLA_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS"}
    yield from netns_cluster(request, KIP966_NODES, 3, env)


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

def cluster_problems(c, topics):
    """What keeps the cluster from being healthy, as every node sees it: all 3 brokers
    registered, every partition of each of `topics` (a name or a tuple of names, each of
    PARTITIONS partitions) led, with the full ISR. [] when healthy."""
    problems = []
    want = [nd.id for nd in c.nodes]
    for nd in c.nodes:
        if nd.proc is None:
            problems.append(f"node {nd.id} not running")
            continue
        names = (topics,) if isinstance(topics, str) else tuple(topics)
        try:  # one Metadata request per node (all topics when there are several)
            md = metadata_from(nd.bootstrap, names[0] if len(names) == 1 else None, timeout=3, attempts=3)
        except Exception as e:  # noqa: BLE001 - a node mid-election answers with errors
            problems.append(f"node {nd.id}: {e!r}"[:200])
            continue
        if sorted(md.brokers) != want:
            problems.append(f"node {nd.id} lists brokers {sorted(md.brokers)}")
        for topic in names:
            t = md.topics.get(topic)
            if t is None or t.error is not None or len(t.partitions) != PARTITIONS:
                problems.append(f"node {nd.id}: {topic} {t.error if t else 'missing'}")
                continue
            for p in t.partitions.values():
                if p.leader < 0 or sorted(p.isrs) != want:
                    problems.append(f"node {nd.id}: {topic} p{p.id} leader {p.leader} isr {sorted(p.isrs)}")
    return problems


def wait_healthy(c, topics, timeout=HEAL_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while True:
        problems = cluster_problems(c, topics)
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
            "enable.idempotence": True, "acks": "all", "linger.ms": 10,
            "message.timeout.ms": 60000,  # request.timeout.ms: the default 30 s
            "retry.backoff.ms": 100, "retry.backoff.max.ms": 1000,
            "reconnect.backoff.max.ms": 1000, "socket.connection.setup.timeout.ms": 3000,
            "topic.metadata.refresh.interval.ms": 5000, "error_cb": on_error, "log_level": CLIENT_LOG_LEVEL,
        })

    def run(self, i):
        rng = random.Random(f"{self.seed}-producer-{i}")
        seq = 0
        rate = PRODUCE_RATE / self.n

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
        t0 = time.monotonic()
        while not self.stop.is_set():
            with self.lock:
                fatal_now = sum(1 for f in self.fatal if f.startswith(f"producer {i}:"))
            if fatal_now > fatal_seen:  # unusable now: its queue fails, a new one goes on
                fatal_seen = fatal_now
                p.flush(5)
                p = self.new_producer(i)
            # the records due by now at the pace (a backlog of more than a second is dropped:
            # the pace does not make up for a full queue)
            due = int((time.monotonic() - t0) * rate) - seq
            if due > rate:
                t0 += (due - rate) / rate
                due = int(rate)
            for _ in range(due):
                n = rng.randint(8, 64)
                value = b"p%d-%d-%s" % (i, seq, b"%0*x" % (n, rng.getrandbits(4 * n)))
                try:
                    p.produce(self.topic, value=value, partition=rng.randrange(PARTITIONS),
                              on_delivery=on_delivery)
                except BufferError:
                    p.poll(0.1)
                    break
                except KafkaException as e:
                    with self.lock:
                        self.failed[f"produce:{e.args[0].name()}"] += 1
                    p.poll(0.1)
                    break
                seq += 1
                with self.lock:
                    self.sent += 1
            p.poll(0)
            time.sleep(PRODUCE_TICK_S)
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
        import bisect

        # per partition: the commits by the time they were acknowledged, and the highest
        # offset committed (acknowledged) up to each of them
        by_end = defaultdict(list)
        for a in self.commit_log:
            by_end[a[3]].append(a)
        ends, best = {}, {}
        for p, commits in by_end.items():
            commits.sort(key=lambda a: a[1])
            ends[p] = [a[1] for a in commits]
            top, best[p] = None, []
            for a in commits:
                if top is None or a[4] > top[4]:
                    top = a
                best[p].append(top)

        def highest_before(p, t):
            """The commit of the highest offset of partition p acknowledged before t."""
            k = bisect.bisect_left(ends.get(p, []), t)
            return best[p][k - 1] if k else None

        regressions, resumed_below = [], []
        for b in self.commit_log:
            a = highest_before(b[3], b[0])
            if a is not None and a[4] > b[4]:
                regressions.append((a, b))
        for r in self.first_reads:
            t_assign, _, p, off = r
            a = highest_before(p, t_assign)
            if a is not None and a[4] > off:
                resumed_below.append((r, a))
        return regressions, resumed_below


class TxnProducer:
    """One transactional producer in a thread: transactions of 1-6 records to random
    partitions of its topic, every TXN_ABORT_EVERY-th aborted on purpose once its records were
    delivered (they are in the log, only the abort marker hides them). confluent-kafka's
    documented handling: a retriable error retries the call, an abortable one
    (txn_requires_abort) aborts the transaction, a fatal one replaces the producer (its
    init_transactions fences the old epoch and ends what it left open).

    Each transaction's outcome as the client saw it: committed (commit_transaction returned),
    aborted (commit was never asked for: aborted on purpose, or failed before its commit), or
    unknown (commit_transaction raised, so the coordinator may have committed it or not)."""

    def __init__(self, bootstrap, topic, seed):
        self.bootstrap = bootstrap
        self.topic = topic
        self.tid = f"fault-txn-{uuid.uuid4().hex[:8]}"
        self.rng = random.Random(f"{seed}-txn")
        self.stop = threading.Event()
        self.lock = threading.Lock()
        # {"n", "intent", "records": [(partition, value)], "offsets": {value: (partition, offset)},
        #  "outcome", "why"}
        self.history = []
        self.errors = Counter()  # "<call>:<error name>" -> count
        self.error_log = []  # (monotonic time, transaction number, call, error name, kind)
        self.n = 0  # the transaction under way
        self.commit_retries = 0
        self.producers_made = 0
        self.failure = None  # an exception that ended the thread
        self.thread = threading.Thread(target=self.run, name="txn-producer", daemon=True)

    def start(self):
        self.thread.start()

    def note(self, call, err):
        kind = ("fatal" if err.fatal() else "abortable" if err.txn_requires_abort()
                else "retriable" if err.retriable() else "other")
        with self.lock:
            self.errors[f"{call}:{err.name()}"] += 1
            self.error_log.append((time.monotonic(), self.n, call, err.name(), kind))

    def new_producer(self):
        """A producer of this transactional id, initialized (retriable errors retried; a fatal
        one makes another producer)."""
        deadline = time.monotonic() + 2 * TXN_RETRY_S
        while True:
            self.producers_made += 1
            p = Producer({
                "bootstrap.servers": self.bootstrap, "client.id": "fault-txn",
                "transactional.id": self.tid, "transaction.timeout.ms": TXN_TIMEOUT_MS,
                "message.timeout.ms": TXN_TIMEOUT_MS, "linger.ms": 5,
                "retry.backoff.ms": 100, "retry.backoff.max.ms": 1000,
                "reconnect.backoff.max.ms": 1000, "socket.connection.setup.timeout.ms": 3000,
                "topic.metadata.refresh.interval.ms": 5000, "log_level": CLIENT_LOG_LEVEL,
            })
            while True:
                try:
                    p.init_transactions(TXN_CALL_TIMEOUT_S)
                    return p
                except KafkaException as e:
                    err = e.args[0]
                    self.note("init", err)
                    if time.monotonic() > deadline:
                        raise
                    if err.retriable() and not err.fatal():
                        time.sleep(0.2)
                        continue
                    break  # fatal: a new producer
            self.drop(p)

    @staticmethod
    def drop(p):
        try:
            p.purge()
            p.flush(0)
        except Exception:  # noqa: BLE001 - a fatally failed producer may refuse even this
            pass

    def abort(self, p):
        """abort_transaction, retried while retriable; raises a fatal error."""
        deadline = time.monotonic() + TXN_RETRY_S
        while True:
            try:
                p.abort_transaction(TXN_CALL_TIMEOUT_S)
                return
            except KafkaException as e:
                err = e.args[0]
                self.note("abort", err)
                if not err.retriable() or err.fatal() or time.monotonic() > deadline:
                    raise

    def one(self, p, n):
        """One transaction; returns whether the producer is still usable."""
        intent = "abort" if n % TXN_ABORT_EVERY == 0 else "commit"
        self.n = n
        txn = {"n": n, "intent": intent, "records": [], "offsets": {}, "outcome": None, "why": ""}
        with self.lock:
            self.history.append(txn)

        def on_delivery(err, msg):
            if err is None and msg.offset() is not None:  # None: acknowledged implicitly
                txn["offsets"][msg.value()] = (msg.partition(), msg.offset())

        asked_commit = False
        try:
            p.begin_transaction()
            for j in range(self.rng.randint(1, 6)):
                value = b"t%d-%d-%0*x" % (n, j, 16, self.rng.getrandbits(64))
                part = self.rng.randrange(TXN_PARTITIONS)
                while True:
                    try:
                        p.produce(self.topic, value=value, partition=part, on_delivery=on_delivery)
                        break
                    except BufferError:
                        p.poll(0.05)
                txn["records"].append((part, value))
            p.flush(TXN_CALL_TIMEOUT_S)  # delivered: an aborted transaction's records are in the log
            if intent == "abort":
                self.abort(p)
                txn["outcome"] = "aborted"
                return True
            asked_commit = True
            deadline = time.monotonic() + TXN_RETRY_S
            while True:
                try:
                    p.commit_transaction(TXN_CALL_TIMEOUT_S)
                    txn["outcome"] = "committed"
                    return True
                except KafkaException as e:
                    err = e.args[0]
                    self.note("commit", err)
                    if err.retriable() and not err.fatal() and not err.txn_requires_abort() \
                            and time.monotonic() < deadline:
                        self.commit_retries += 1
                        continue
                    raise
        except KafkaException as e:
            err = e.args[0]
            txn["outcome"] = "unknown" if asked_commit else "aborted"
            txn["why"] = err.name()
            if err.txn_requires_abort() and not err.fatal():
                try:
                    self.abort(p)
                    return True
                except KafkaException:
                    return False
            return False  # fatal (or a commit that kept failing): a new producer fences this one

    def run(self):
        try:
            p = self.new_producer()
            n = 0
            while not self.stop.is_set():
                n += 1
                if not self.one(p, n):
                    self.drop(p)
                    p = self.new_producer()
            self.drop(p)
            # a last producer of the id: its init ends whatever an earlier one left open
            # (waiting for markers being written), so nothing holds the last stable offset back
            self.drop(self.new_producer())
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.failure = f"{type(e).__name__}: {e}"

    def join(self, timeout=3 * TXN_RETRY_S):
        self.stop.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()


def create_topic(bootstrap, topic, partitions=PARTITIONS, min_insync=2):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    f = admin.create_topics([NewTopic(topic, partitions, 3, config={"min.insync.replicas": str(min_insync)})])
    f[topic].result(30)


def read_all(bootstrap, topic, hws, timeout_s=90):
    """{partition: [(offset, value)]}: every partition (of `hws`) from its start up to its
    high watermark, through its leader."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fault-read-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "enable.partition.eof": False, "log_level": CLIENT_LOG_LEVEL})
    c.assign([TopicPartition(topic, p, 0) for p in hws])
    out = {p: [] for p in hws}
    done = {p for p in hws if hws[p] == 0}
    deadline = time.monotonic() + timeout_s
    errors = Counter()
    try:
        while len(done) < len(hws):
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


def watermarks(bootstrap, topic, partitions, isolation="read_uncommitted"):
    """{partition: end offset}: the high watermark, or with read_committed the last stable
    offset (librdkafka's ListOffsets carries the consumer's isolation level)."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fault-hw-{uuid.uuid4().hex[:8]}",
                      "isolation.level": isolation, "log_level": CLIENT_LOG_LEVEL})
    try:
        return {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                for p in range(partitions)}
    finally:
        probe.close()


def read_to_end(bootstrap, topic, ends, isolation, timeout_s=60):
    """{partition: [(offset, value)]}: every partition from its start until the consumer
    reports the partition's end at `ends[p]` or beyond (with read_committed: the records of
    committed transactions only, control records never delivered)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fault-read-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "isolation.level": isolation, "enable.partition.eof": True,
                  "log_level": CLIENT_LOG_LEVEL})
    c.assign([TopicPartition(topic, p, 0) for p in ends])
    out = {p: [] for p in ends}
    at = {p: 0 for p in ends}
    done = set()
    deadline = time.monotonic() + timeout_s
    errors = Counter()
    try:
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the {isolation} read of {topic} did not reach {ends} within {timeout_s} s: at {at}, "
                    f"errors {dict(errors)}")
            for m in c.consume(1000, 1.0):
                p = m.partition()
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        at[p] = max(at[p], m.offset())
                        if m.offset() >= ends[p]:
                            done.add(p)
                    else:
                        errors[m.error().name()] += 1
                    continue
                out[p].append((m.offset(), m.value()))
                at[p] = m.offset() + 1
    finally:
        c.close()
    return out


def check_transactions(history, committed_read, uncommitted_read):
    """The anomalies of the transactional topic: {name: [examples]} for lost (a committed
    transaction missing records under read_committed), partial (an unknown one partly
    visible), aborted_read (a record of an aborted transaction visible), duplicates (a value
    twice, either read), misplaced (a committed record not at its delivered offset), stray (a
    value no transaction sent), clash (two values at one offset between the two reads); and
    counts for information."""
    visible = defaultdict(list)  # value -> [(partition, offset)]
    for p, recs in committed_read.items():
        for off, v in recs:
            visible[v].append((p, off))
    in_log = defaultdict(list)
    uncommitted_at = {}
    for p, recs in uncommitted_read.items():
        for off, v in recs:
            in_log[v].append((p, off))
            uncommitted_at[(p, off)] = v
    anomalies = {k: [] for k in ("lost", "partial", "aborted_read", "duplicates", "misplaced",
                                 "stray", "clash")}
    known = set()
    outcomes = Counter()
    aborted_in_log = unknown_present = 0
    for txn in history:
        values = [v for _, v in txn["records"]]
        known.update(values)
        outcomes[txn["outcome"]] += 1
        shown = [v for v in values if v in visible]
        key = f"txn {txn['n']} ({txn['intent']}, {txn['outcome']}{': ' + txn['why'] if txn['why'] else ''})"
        if txn["outcome"] == "committed":
            if len(shown) < len(values):
                anomalies["lost"].append(f"{key}: {len(values) - len(shown)} of {len(values)} records missing")
            for v in shown:
                want = txn["offsets"].get(v)
                if want is not None and want not in visible[v]:
                    anomalies["misplaced"].append(f"{key}: {v!r} delivered at {want}, read at {visible[v]}")
        elif txn["outcome"] == "aborted":
            aborted_in_log += sum(1 for v in values if v in in_log)
            for v in shown:
                anomalies["aborted_read"].append(f"{key}: {v!r} read at {visible[v]}")
        else:  # unknown: all or nothing
            if shown:
                unknown_present += 1
            if 0 < len(shown) < len(values):
                anomalies["partial"].append(f"{key}: {len(shown)} of {len(values)} records visible")
    for where, what in ((visible, "read_committed"), (in_log, "read_uncommitted")):
        for v, places in where.items():
            if len(places) > 1:
                anomalies["duplicates"].append(f"{v!r} {len(places)} times under {what}: {places}")
    for v, places in visible.items():
        if v not in known:
            anomalies["stray"].append(f"{v!r} at {places}")
        for p, off in places:
            u = uncommitted_at.get((p, off))
            if u is not None and u != v:
                anomalies["clash"].append(f"p{p}@{off}: read_committed {v!r}, read_uncommitted {u!r}")
    info = {"outcomes": outcomes, "records": sum(len(t["records"]) for t in history),
            "aborted_in_log": aborted_in_log, "unknown_present": unknown_present,
            "read_committed": sum(len(r) for r in committed_read.values()),
            "read_uncommitted": sum(len(r) for r in uncommitted_read.values())}
    return anomalies, info


# ---- the test ---------------------------------------------------------------------------------

def test_acknowledged_records_survive_faults(fault_cluster, capsys):
    c = fault_cluster
    seed = int(os.environ.get("OTTLA_FAULT_SEED", random.randrange(1 << 31)))
    rng = random.Random(seed)
    with capsys.disabled():
        print(f"\nFAULT-CHECKER seed {seed} (OTTLA_FAULT_SEED={seed} replays the schedule); "
              f"cluster files in {c.root}", flush=True)
    t_run = time.monotonic()
    cpu0 = os.times()
    topic = f"faults-{uuid.uuid4().hex[:8]}"
    txn_topic = f"faults-txn-{uuid.uuid4().hex[:8]}"
    create_topic(c.bootstrap, topic)
    create_topic(c.bootstrap, txn_topic, TXN_PARTITIONS)
    problems = wait_healthy(c, (topic, txn_topic), timeout=30)
    assert not problems, f"the new topics never got their full ISR: {problems}"

    producers = Producers(c.bootstrap, topic, seed)
    group = Group(c.bootstrap, topic)
    txns = TxnProducer(c.bootstrap, txn_topic, seed)
    producers.start()
    group.start()
    txns.start()

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
    deadline = time.monotonic() + 20  # a short schedule: producing on until MIN_ACKED (and a margin)
    while len(producers.acked) < MIN_ACKED * 1.05 and time.monotonic() < deadline:
        time.sleep(0.5)
    t_stop_producing = time.monotonic()
    txns.stop.set()
    flushed = producers.join()
    note(f"producers stopped (flushed: {flushed}, unflushed {producers.unflushed})")
    txn_done = txns.join()
    note(f"transactional producer stopped (done: {txn_done}, {len(txns.history)} transactions, "
         f"{txns.producers_made} producers{', failed: ' + txns.failure if txns.failure else ''})")

    problems = wait_healthy(c, (topic, txn_topic))
    assert not problems, f"the cluster never healed after the faults: {problems}\n{c.tails(80)}"
    led = leaders(c, topic)
    txn_led = leaders(c, txn_topic)
    hws = watermarks(c.bootstrap, topic, PARTITIONS)
    log = read_all(c.bootstrap, topic, hws)
    note(f"full read up to the high watermarks {hws} (leaders {led})")

    # the transactional topic: once nothing is open, the last stable offsets reach the high
    # watermarks; read_committed from the start, and read_uncommitted (what the log holds)
    deadline = time.monotonic() + TXN_TIMEOUT_MS / 1000 + 10
    while True:
        txn_hws = watermarks(c.bootstrap, txn_topic, TXN_PARTITIONS)
        txn_lsos = watermarks(c.bootstrap, txn_topic, TXN_PARTITIONS, "read_committed")
        if txn_lsos == txn_hws or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    lso_stuck = {p: (txn_lsos[p], txn_hws[p]) for p in txn_hws if txn_lsos[p] != txn_hws[p]}
    committed_read = read_to_end(c.bootstrap, txn_topic, txn_lsos, "read_committed")
    uncommitted_read = read_to_end(c.bootstrap, txn_topic, txn_hws, "read_uncommitted")
    with txns.lock:
        history = list(txns.history)
    txn_anomalies, txn_info = check_transactions(history, committed_read, uncommitted_read)
    note(f"transactional topic read: read_committed {txn_info['read_committed']} records up to the last "
         f"stable offsets {txn_lsos}, read_uncommitted {txn_info['read_uncommitted']} up to {txn_hws} "
         f"(leaders {txn_led})")

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
    no_offset = 0
    for v, (p, off, prod, s, t_ack) in acked.items():
        if off is None:
            # librdkafka's implicit acknowledgement (a request that failed without certainty,
            # a later one of the same producer succeeded: the earlier records are persisted) has
            # no offset: the record must be in its partition, once
            no_offset += 1
            if [pp for pp, _ in where.get(v, [])] == [p]:
                continue
        elif at[p].get(off) == v:
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
        if off is not None:
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
    for p in range(TXN_PARTITIONS):
        found, counts = compare_replicas(c.nodes, txn_topic, p, txn_led.get(p, 1), txn_hws[p])
        mismatches += [f"{txn_topic} {m}" for m in found]
        batch_counts[f"txn-p{p}"] = counts
    run_s = time.monotonic() - t_run
    cpu1 = os.times()
    cpu_brokers = cpu1.children_user + cpu1.children_system - cpu0.children_user - cpu0.children_system
    cpu_python = cpu1.user + cpu1.system - cpu0.user - cpu0.system

    fault_text = ",".join(f"{k}={faults[k]}" for k in kinds if faults[k])
    outcomes = txn_info["outcomes"]
    line = (f"FAULT-CHECKER seed={seed} run_s={run_s:.0f} nemesis_s={nemesis_s:.0f} "
            f"acked={len(acked)} sent={producers.sent} consumed={consumed} lost={len(lost)} "
            f"misplaced={len(misplaced)} duplicates={duplicates} replica_mismatches={len(mismatches)} "
            f"clashes={len(clashes)} order={order_violations} faults[{fault_text}] "
            f"max_unavailable_s={max_gap:.1f}"
            + (f"(p{gap_at[0]}@{gap_at[1]:.0f}s)" if gap_at else "")
            + f" | group_read={len(group_offsets)} redelivered={redelivered} group_missing={group_missing} "
            f"rewinds={group.rewinds} commits={group.commits} commit_failures={sum(group.commit_failures.values())} "
            f"commit_regressions={len(commit_regressions)} resumed_below_commit={len(resumed_below)} "
            f"reorders={reorders} acked_no_offset={no_offset} "
            f"produce_failed={sum(producers.failed.values())} fatal={len(producers.fatal)} "
            f"unhealed={len(heal_failures)} nemesis_errors={len(nemesis_errors)} hw={[hws[p] for p in range(PARTITIONS)]}"
            f" | txn_committed={outcomes['committed']} txn_aborted={outcomes['aborted']} "
            f"txn_unknown={outcomes['unknown']} aborted_read={len(txn_anomalies['aborted_read'])} "
            f"txn_lost={len(txn_anomalies['lost'])} txn_partial={len(txn_anomalies['partial'])} "
            f"txn_duplicates={len(txn_anomalies['duplicates'])} txn_misplaced={len(txn_anomalies['misplaced'])} "
            f"txn_stray={len(txn_anomalies['stray'])} txn_clashes={len(txn_anomalies['clash'])} "
            f"lso_stuck={len(lso_stuck)} txn_records={txn_info['records']} "
            f"read_committed={txn_info['read_committed']} aborted_in_log={txn_info['aborted_in_log']} "
            f"unknown_visible={txn_info['unknown_present']} txn_producers={txns.producers_made} "
            f"commit_retries={txns.commit_retries} | cpu_s brokers={cpu_brokers:.0f} python={cpu_python:.0f}")
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
        if mismatches:
            # What each node did with the partitions that differ: leadership, truncations,
            # divergence, ISR changes (the whole story of a mismatch is in these lines).
            words = ("leader", "truncat", "diverg", "ISR", "epoch", "fenced", "restart", "shutdown")
            for nd in c.nodes:
                lines = [ln for ln in nd.full_log().splitlines()
                         if (topic in ln or txn_topic in ln) and any(w in ln for w in words)]
                print(f"  node {nd.id}: {len(lines)} replication log lines, the last 60:")
                for ln in lines[-60:]:
                    print(f"    {ln[:300]}")
        if txns.errors:
            print(f"  transactional producer errors (call:error): {dict(txns.errors)}; first ones: "
                  + "; ".join(f"{t - t_run:.1f}s txn {n} {call} {name} ({kind})"
                              for t, n, call, name, kind in txns.error_log[:10]))
        if txns.failure:
            print(f"  transactional producer failed: {txns.failure}")
        for p, (lso, hw) in lso_stuck.items():
            print(f"  {txn_topic} p{p}: last stable offset {lso} below the high watermark {hw} "
                  f"{TXN_TIMEOUT_MS / 1000 + 10:.0f} s after the last transaction")
        for kind, examples in txn_anomalies.items():
            for e in examples[:10]:
                print(f"  txn {kind}: {e}")
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
    assert not any(txn_anomalies.values()) and not lso_stuck, line
    assert txn_done and txns.failure is None, f"the transactional producer did not finish: {txns.failure}"
    # the transaction checks mean something: transactions committed, aborted records in the log
    assert outcomes["committed"] >= 20 and txn_info["aborted_in_log"] > 0, line
    assert len(acked) >= MIN_ACKED, f"only {len(acked)} acknowledged records (at least {MIN_ACKED} wanted): {line}"


# ---- KIP-966's case: the last in-sync replica dies with acknowledged records only it holds ----

def partition_view(nd, topic):
    """(leader, sorted ISR, replicas, error name or None) of the topic's partition 0 as node
    `nd` answers Metadata, or None when it does not answer."""
    if nd.proc is None:
        return None
    md = None
    for _ in range(3):  # as cluster.metadata_from, without librdkafka's logs of the dead nodes
        admin = AdminClient({"bootstrap.servers": nd.bootstrap, "socket.connection.setup.timeout.ms": 3000,
                             "log_level": CLIENT_LOG_LEVEL})
        try:
            md = admin.list_topics(topic=topic, timeout=3)
        except Exception:  # noqa: BLE001 - a node without a controller (yet) answers with errors
            return None
        if answered_by(md) == nd.bootstrap:
            break
        md = None
    if md is None:
        return None
    t = md.topics.get(topic)
    if t is None or 0 not in t.partitions:
        return None
    p = t.partitions[0]
    return p.leader, sorted(p.isrs), list(p.replicas), p.error.name() if p.error is not None else None


def wait_view(nodes, topic, ok, timeout, what):
    """The first view of one of `nodes` for which ok(view) holds; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    last = {}
    while True:
        for nd in nodes:
            v = partition_view(nd, topic)
            last[nd.id] = v
            if v is not None and ok(v):
                return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s; the nodes' views {last}")
        time.sleep(0.3)


def produce_acked(bootstrap, topic, prefix, n, timeout_s=30, chunk=200):
    """n records `<prefix>-<i>` with an idempotent producer (acks=all), flushed every `chunk`
    records (a batch or a few each): {offset: value} of the acknowledged ones (an implicit
    acknowledgement, without an offset, under the key ("?", value)), and the failures by error
    name."""
    acked, failed = {}, Counter()

    def on_delivery(err, msg):
        if err is None:
            acked[msg.offset() if msg.offset() is not None else ("?", msg.value())] = msg.value()
        else:
            failed[err.name()] += 1

    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5, "message.timeout.ms": timeout_s * 1000, "log_level": CLIENT_LOG_LEVEL})
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=f"{prefix}-{i}".encode(), partition=0, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        if (i + 1) % chunk == 0:
            p.flush(timeout_s + 5)
    left = p.flush(timeout_s + 5)
    if left:
        failed["unflushed"] += left
    return acked, failed


def kip966_start(c, capsys, check, prefix, min_isr):
    """The common start of the KIP-966 tests: a timeline printer, the CHECK header, and a
    topic with one partition, RF 3 and `min_isr`, waited for until its ISR is full.
    Returns (t_run, events, note, topic, admin, view)."""
    t_run = time.monotonic()
    events = []

    def note(text):
        t = time.monotonic() - t_run
        events.append((t, text))
        with capsys.disabled():
            print(f"  [{t:6.1f}s] {text}", flush=True)

    with capsys.disabled():
        print(f"\n{check} cluster of {KIP966_NODES} in {c.root}", flush=True)
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": c.bootstrap, "log_level": CLIENT_LOG_LEVEL})
    admin.create_topics([NewTopic(topic, 1, 3, config={"min.insync.replicas": str(min_isr)})])[topic].result(30)
    v = wait_view(c.nodes, topic, lambda v: v[0] >= 0 and v[1] == sorted(v[2]), 30, "the full ISR")
    return t_run, events, note, topic, admin, v


def test_last_isr_member_leads_again(kip966_cluster, capsys):
    """KIP-966's case, on a partition with RF 3 and min.insync.replicas=1: both followers
    die (kill -9), the controller fences them and the ISR shrinks to the leader alone, which
    acknowledges records (acks=all) that only it holds; then the leader dies too (kill -9,
    the records in the page cache, not fsynced by the default flush policy). The followers
    come back first: the partition must stay offline (leader -1, LEADER_NOT_AVAILABLE, the ISR
    empty with the old leader its only eligible replica (KIP-966 ELR), produce failing), never
    led by a replica that lacks those records (no unclean election). Then the old leader comes
    back (an unclean shutdown: out of the ELR, but the last known leader, which Kafka 4.1
    elects when no ISR or ELR member is left): it must lead again, with every acknowledged
    record in order, none lost, and the followers must catch up to the same batches."""
    c = kip966_cluster
    t_run, events, note, topic, admin, v = kip966_start(c, capsys, "KIP966-CHECK", "kip966", 1)
    leader, replicas = v[0], v[2]
    followers = [r for r in replicas if r != leader]
    note(f"{topic}: replicas {replicas}, leader {leader}, ISR {v[1]}")

    acked, failed = produce_acked(c.bootstrap, topic, "full", 500)
    assert len(acked) == 500 and not failed, f"with the full ISR: {len(acked)} acknowledged, failed {dict(failed)}"
    note("500 records acknowledged with the full ISR")

    for f in followers:
        c.kill(f)
    note(f"kill -9 followers {followers}")
    lead = c.node(leader)
    v = wait_view([lead], topic, lambda v: v[1] == [leader] and v[0] == leader, 30,
                  f"the ISR shrinking to the leader {leader} alone")
    note(f"ISR {v[1]}, leader {v[0]} (the followers fenced)")

    alone, failed = produce_acked(c.bootstrap, topic, "alone", KIP966_RECORDS)
    t_last_ack = time.monotonic()
    v_after = partition_view(lead, topic)
    assert len(alone) == KIP966_RECORDS and not failed, \
        f"with the ISR [{leader}]: {len(alone)} acknowledged, failed {dict(failed)}"
    assert v_after is not None and v_after[1] == [leader], f"the ISR changed while producing: {v_after}"
    acked.update(alone)
    c.kill(leader)
    note(f"{len(alone)} records acknowledged with the ISR [{leader}]; kill -9 of the leader "
         f"{(time.monotonic() - t_last_ack) * 1000:.0f} ms after the last acknowledgement")

    for f in followers:
        c.start_node(f)
    t_back = time.monotonic()
    note(f"followers {followers} restarted; the last ISR member {leader} is down")

    # while the last ISR member is down: offline, nothing elected, produce fails
    probe_result = []

    def on_probe(err, msg):
        probe_result.append(err.name() if err is not None else f"acknowledged at {msg.offset()}")

    probe = Producer({"bootstrap.servers": c.bootstrap, "enable.idempotence": True, "acks": "all",
                      "message.timeout.ms": 4000, "log_level": CLIENT_LOG_LEVEL})
    probe.produce(topic, value=b"probe-while-offline", partition=0, on_delivery=on_probe)
    offline_s = SESSION_MS / 1000 + 4  # past the session timeout that fences the dead leader
    seen = []  # (time, node, view)
    alive = [nd for nd in c.nodes if nd.id != leader]
    while time.monotonic() - t_back < offline_s:
        for nd in alive:
            seen.append((time.monotonic() - t_run, nd.id, partition_view(nd, topic)))
        probe.poll(0.3)
    probe.flush(5)
    final = {}
    for nd in alive:  # each node's view at the end (asked again when a node does not answer)
        for _ in range(5):
            final[nd.id] = partition_view(nd, topic)
            if final[nd.id] is not None:
                break
            time.sleep(0.3)
    elected = [(t, n, v) for t, n, v in seen if v is not None and v[0] >= 0 and v[0] != leader]
    note(f"{offline_s:.0f} s with the last ISR member down: leaders seen "
         f"{sorted({v[0] for _, _, v in seen if v is not None})}, final views {final}, probe {probe_result}")
    offline_ok = all(v is not None and v[0] == -1 and v[3] == "LEADER_NOT_AVAILABLE" and v[1] == []
                     for v in final.values())

    c.start_node(leader)
    t_leader_back = time.monotonic()
    note(f"node {leader} (the last ISR member) restarted")
    v = wait_view(c.nodes, topic, lambda v: v[0] >= 0, 30, "a leader after the last ISR member's restart")
    new_leader = v[0]
    note(f"leader {new_leader} after {time.monotonic() - t_leader_back:.1f} s, ISR {v[1]}")
    v = wait_view([c.node(new_leader)], topic, lambda v: v[1] == sorted(replicas), 30,
                  "the followers back in the ISR")
    note(f"ISR {v[1]} again")
    later, failed = produce_acked(c.bootstrap, topic, "later", 100)
    assert len(later) == 100 and not failed, f"after recovery: {len(later)} acknowledged, failed {dict(failed)}"
    acked.update(later)

    hw = watermarks(c.bootstrap, topic, 1)[0]
    log = read_all(c.bootstrap, topic, {0: hw})[0]
    at = dict(log)
    in_log = set(at.values())
    lost = [(off, val) for off, val in acked.items()
            if (at.get(off) != val if isinstance(off, int) else val not in in_log)]
    unplaced = {val for off, val in acked.items() if not isinstance(off, int)}
    extra = [(off, val) for off, val in log if acked.get(off) != val and val not in unplaced]
    order = sum(1 for (a, _), (b, _) in zip(log, log[1:]) if b <= a)
    # the values of each kind in their sequence order at growing offsets
    seq_order = 0
    for prefix in (b"full-", b"alone-", b"later-"):
        nums = [int(val[len(prefix):]) for _, val in log if val.startswith(prefix)]
        seq_order += sum(1 for a, b in zip(nums, nums[1:]) if b <= a)
    try:
        c.stop()
        stop_problem = None
    except AssertionError as e:
        stop_problem = str(e)[:3000]
    mismatches, counts = compare_replicas([c.node(r) for r in replicas], topic, 0, new_leader, hw)
    run_s = time.monotonic() - t_run
    line = (f"KIP966-CHECK run_s={run_s:.0f} replicas={replicas} leader={leader} acked={len(acked)} "
            f"(full_isr=500 isr1={len(alone)} after=100) unclean_elections={len(elected)} "
            f"offline={'yes' if offline_ok else 'NO'} probe={probe_result[0] if probe_result else 'none'} "
            f"leader_after={new_leader} read={len(log)} lost={len(lost)} extra={len(extra)} "
            f"order={order + seq_order} replica_mismatches={len(mismatches)} hw={hw} batches={counts}")
    with capsys.disabled():
        print(line)
        for t, n, v in elected[:10]:
            print(f"  at {t:.1f}s node {n} named leader {v[0]} (ISR {v[1]}) while node {leader} was down")
        for off, val in lost[:10]:
            print(f"  lost: {val!r} acknowledged at {off}, the log has {at.get(off, b'nothing')!r}")
        for off, val in extra[:10]:
            print(f"  not acknowledged there: {val!r} at {off}")
        for m in mismatches[:10]:
            print(f"  {m}")
        print("  timeline: " + "; ".join(f"{t:.1f}s {e}" for t, e in events))
    assert not elected, f"an unclean election while the last ISR member was down: {elected[:5]}\n{line}"
    assert offline_ok, f"not offline (leader -1, LEADER_NOT_AVAILABLE, ISR []) at the end: {final}\n{line}"
    assert probe_result and not probe_result[0].startswith("acknowledged"), \
        f"a produce while the partition was offline: {probe_result}\n{line}"
    assert new_leader == leader, f"{new_leader} leads, not the last ISR member {leader}\n{line}"
    assert (len(lost), len(extra), order + seq_order, len(mismatches)) == (0, 0, 0, 0), line
    assert stop_problem is None, stop_problem


def produce_acks1(bootstrap, topic, prefix, n, timeout_s=20):
    """n records `<prefix>-<i>` with acks=1 (not idempotent): {offset: value} acknowledged."""
    acked = {}

    def on_delivery(err, msg):
        if err is None:
            acked[msg.offset()] = msg.value()

    p = Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 5,
                  "message.timeout.ms": timeout_s * 1000, "log_level": CLIENT_LOG_LEVEL})
    for i in range(n):
        p.produce(topic, value=f"{prefix}-{i}".encode(), partition=0, on_delivery=on_delivery)
    p.flush(timeout_s + 5)
    return acked


def stop_clean(c, node_id):
    """SIGTERM (a controlled shutdown, then the clean-shutdown marker) and exit code 0."""
    nd = c.node(node_id)
    nd.signal(signal.SIGTERM)
    rc = nd.wait(30)
    assert rc == 0, f"node {node_id} exited with {rc} on SIGTERM:\n{nd.tail()}"


def test_an_eligible_replica_leads_when_the_isr_empties(kip966_cluster, capsys):
    """KIP-966's eligible leader replicas (ELR), on a partition with RF 3 and
    min.insync.replicas=2. Both followers stop cleanly, one after the other (SIGTERM: a
    controlled shutdown): the ISR shrinks to the leader, and the follower that left it below
    the minimum is eligible. acks=all produce is refused now, and acks=1 records are appended
    on the leader but not committed: its high watermark stands still (Kafka's strict min ISR),
    so no consumer sees them. The leader is killed (-9). The eligible follower restarts (its
    clean shutdown proven by the epoch in its marker) and leads at once, with every committed
    record: without ELR the ISR would keep the dead leader and the partition would wait for
    it. The old leader returns (an unclean shutdown: out of the ELR), follows, truncates the
    uncommitted acks=1 tail, and every replica ends with the same batches."""
    c = kip966_cluster
    t_run, events, note, topic, admin, v = kip966_start(c, capsys, "ELR-CHECK", "elr", 2)
    leader, replicas = v[0], v[2]
    first, eligible = [r for r in replicas if r != leader]
    note(f"{topic}: replicas {replicas}, leader {leader}, ISR {v[1]}")
    committed, failed = produce_acked(c.bootstrap, topic, "full", 500)
    assert len(committed) == 500 and not failed, f"{len(committed)} acknowledged, failed {dict(failed)}"

    stop_clean(c, first)
    wait_view([c.node(leader)], topic, lambda v: v[1] == sorted([leader, eligible]), 30,
              f"the ISR without {first}")
    stop_clean(c, eligible)
    v = wait_view([c.node(leader)], topic, lambda v: v[1] == [leader], 30, f"the ISR without {eligible}")
    note(f"followers {first} then {eligible} stopped cleanly: ISR {v[1]}")

    refused, failed = produce_acked(c.bootstrap, topic, "refused", 1, timeout_s=4)
    uncommitted = produce_acks1(c.bootstrap, topic, "acks1", 100)
    time.sleep(1.0)  # anything that would move the high watermark has had its time
    hw_frozen = watermarks(c.bootstrap, topic, 1)[0]
    visible = read_all(c.bootstrap, topic, {0: hw_frozen})[0]
    note(f"ISR below the minimum: acks=all acknowledged {len(refused)} ({dict(failed)}), acks=1 "
         f"acknowledged {len(uncommitted)} at {min(uncommitted, default=None)}.., high watermark {hw_frozen}, "
         f"read {len(visible)}")

    c.kill(leader)
    note(f"kill -9 of the leader {leader}")
    t_kill = time.monotonic()
    c.start_node(eligible)
    v = wait_view([nd for nd in c.nodes if nd.proc is not None], topic, lambda v: v[0] >= 0, 30,
                  f"a leader once {eligible} is back")
    took = time.monotonic() - t_kill
    new_leader = v[0]
    note(f"leader {new_leader} (ISR {v[1]}) {took:.1f} s after the kill, with {leader} still down")

    c.start_node(first)
    c.start_node(leader)
    v = wait_view([c.node(new_leader)], topic, lambda v: v[1] == sorted(replicas), 60, "the full ISR again")
    note(f"{first} and {leader} back: ISR {v[1]}")
    later, failed_later = produce_acked(c.bootstrap, topic, "later", 100)
    hw = watermarks(c.bootstrap, topic, 1)[0]
    log = read_all(c.bootstrap, topic, {0: hw})[0]
    expected = [f"full-{i}".encode() for i in range(500)] + [f"later-{i}".encode() for i in range(100)]
    acks1_read = [val for _, val in log if val.startswith(b"acks1-")]
    try:
        c.stop()
        stop_problem = None
    except AssertionError as e:
        stop_problem = str(e)[:3000]
    mismatches, counts = compare_replicas([c.node(r) for r in replicas], topic, 0, new_leader, hw)
    line = (f"ELR-CHECK run_s={time.monotonic() - t_run:.0f} replicas={replicas} leader={leader} "
            f"eligible={eligible} leader_after={new_leader} elected_after_s={took:.1f} "
            f"acks_all_refused={1 - len(refused)} acks1_acked={len(uncommitted)} hw_frozen={hw_frozen} "
            f"visible_frozen={len(visible)} read={len(log)} expected={len(expected)} acks1_read={len(acks1_read)} "
            f"replica_mismatches={len(mismatches)} batches={counts}")
    with capsys.disabled():
        print(line)
        for m in mismatches[:10]:
            print(f"  {m}")
        print("  timeline: " + "; ".join(f"{t:.1f}s {e}" for t, e in events))
    assert not refused, f"acks=all acknowledged below min.insync.replicas: {refused}\n{line}"
    assert len(uncommitted) == 100, f"acks=1 below the minimum is appended (as Kafka): {line}"
    assert hw_frozen == 500 and [val for _, val in visible] == expected[:500], \
        f"the high watermark moved, or records past it were read, with the ISR below the minimum\n{line}"
    assert new_leader == eligible, f"{new_leader} leads, not the eligible replica {eligible}\n{line}"
    assert len(later) == 100 and not failed_later, f"after recovery: {dict(failed_later)}\n{line}"
    assert [val for _, val in log] == expected, \
        f"the log is not the committed records and the later ones, in order\n{line}"
    assert not mismatches, line
    assert stop_problem is None, stop_problem
