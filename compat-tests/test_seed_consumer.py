"""The seed's kafka-python consumer sample (samples/seed_consumer.py, verbatim: group
'test-group', topic 'test-topic', localhost:9092) against the main broker.

The sample uses kafka-python's defaults: auto_offset_reset='latest', auto-commit. So each run
starts with the group deleted (no committed offsets: the consumer starts at the end of the log,
as a first run of the sample does), after one record was produced before the consumer started
(it must not be printed), and records are produced only after the group has assigned the
partition. Even then the first produce can land before the consumer has looked up the 'latest'
offset (a ListOffsets right after the assignment) and so be skipped, as with Kafka; the test
therefore runs the producer sample every 0.5 s until the consumer prints a line, then produces
3 more and expects exactly 3 more lines.

What is measured (test_seed_consumer_timing, 5 runs of the sample under
groups/seed_consumer_timed.py, which stamps times on stderr and leaves the sample unchanged; the
producer sample is run in-process, its KafkaProducer construction + send + flush timed):
  process start -> line: from Popen of the consumer to its first printed b'test-message';
  construction -> line: from the KafkaConsumer(...) call to that line;
  construction -> assigned: joining the group (FindCoordinator, JoinGroup with
      MEMBER_ID_REQUIRED and rejoin, SyncGroup), until on_partitions_assigned with test-topic's
      partition (kafka-python often joins once before it has the topic's metadata, is assigned
      nothing, and rejoins when the metadata arrives about 100 ms later);
  first produce -> line: from the start of the first producer run after the assignment was
      seen (construct + send + flush, also reported), to the line;
  produce acknowledged -> line: for the record that was printed first (its offset is known from
      the producer's future and the wrapper's per-record stamp), from its flush() returning to
      the line; "skipped" counts post-assignment records produced before the consumer's
      'latest' lookup (0 = the first record produced after the assignment was printed).
The process-start figure includes the test's own reaction (it produces only after it saw the
assignment), so it is an upper bound of what a user starting consumer then producer sees.
The median of each over the 5 runs is printed on a line starting with SEED-CONSUMER.
"""

import os
import queue
import runpy
import signal
import statistics
import subprocess
import sys
import threading
import time

import kafka
import pytest
from kafka.admin import MemberToRemove

from groups.util import kp_admin, kp_member_partitions

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = os.path.join(HERE, "samples")
CONSUMER_SAMPLE = os.path.join(SAMPLES, "seed_consumer.py")
PRODUCER_SAMPLE = os.path.join(SAMPLES, "seed_producer.py")
TIMED = os.path.join(HERE, "groups", "seed_consumer_timed.py")
GROUP, TOPIC, LINE = "test-group", "test-topic", "b'test-message'"
ASSIGN_TIMEOUT_S = 30
LINE_TIMEOUT_S = 20
PRODUCE_EVERY_S = 0.5
EXTRA = 3
RUNS = 5


class Proc:
    """A python -u subprocess whose stdout lines and SEEDT stderr stamps are collected with the
    time (monotonic) they arrived."""

    def __init__(self, script, *args):
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-u", script, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=SAMPLES)
        self.lines = queue.Queue()
        self.out_lines = []
        self.stamps = {}     # first time of each event
        self.events = []     # (event, time, detail), every stamp
        self.err = []
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self):
        for raw in self.proc.stdout:
            t = time.monotonic()
            line = raw.decode(errors="replace").rstrip("\n")
            self.out_lines.append((t, line))
            self.lines.put((t, line))

    def _read_err(self):
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[0] == "SEEDT":
                self.stamps.setdefault(parts[1], float(parts[2]))
                self.events.append((parts[1], float(parts[2]), parts[3] if len(parts) > 3 else ""))
            else:
                self.err.append(line)

    def assigned_at(self, partition):
        """Time of the first on_partitions_assigned stamp that includes `partition` (topic:p)."""
        for event, t, detail in list(self.events):
            if event == "assigned" and partition in detail.split(","):
                return t
        return None

    def describe(self):
        return (f"exit {self.proc.poll()}, stdout {[l for _, l in self.out_lines]}, stamps {self.stamps}, "
                f"stderr tail:\n" + "\n".join(self.err[-30:]))

    def stop(self, expect_clean):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                if expect_clean:
                    raise AssertionError(f"the consumer did not exit within 20 s of SIGTERM: {self.describe()}")
        if expect_clean:
            time.sleep(0.1)  # let the reader threads drain
            assert self.proc.returncode == 0 and "closed" in self.stamps, \
                f"the consumer did not close cleanly: {self.describe()}"


def group_members(admin):
    desc = admin.describe_groups([GROUP]).get(GROUP) or {}
    return desc, desc.get("members") or []


def reset_group(bootstrap):
    """Leaves 'test-group' absent: no members (a killed sample's member is removed with
    LeaveGroup by member id, as kafka-consumer-groups --delete would need), no offsets."""
    with kp_admin(bootstrap) as admin:
        desc, members = group_members(admin)
        if members:
            admin.remove_group_members(GROUP, [MemberToRemove(member_id=m["member_id"],
                                                              group_instance_id=m.get("group_instance_id"))
                                               for m in members])
        deadline = time.monotonic() + 30
        while True:
            desc, members = group_members(admin)
            if not members:
                break
            assert time.monotonic() < deadline, f"{GROUP} still has members: {desc}"
            time.sleep(0.1)
        res = admin.delete_groups([GROUP])
        assert res.get(GROUP) in ("OK", "GroupIdNotFoundError"), res
        assert admin.list_group_offsets({GROUP: None}).get(GROUP, {}) == {}


def produce_in_process():
    """Runs the producer sample in this process. Returns (start, done, [offsets]): monotonic
    times around the run (KafkaProducer construction, send, flush) and the offsets of what it
    sent (KafkaProducer.send is wrapped for the run to see its futures; the sample is unchanged)."""
    sent = []
    original = kafka.KafkaProducer.send

    def send(self, *args, **kwargs):
        future = original(self, *args, **kwargs)
        sent.append(future)
        return future

    kafka.KafkaProducer.send = send
    try:
        t0 = time.monotonic()
        g = runpy.run_path(PRODUCER_SAMPLE, run_name="__main__")
        t1 = time.monotonic()
    finally:
        kafka.KafkaProducer.send = original
    g["producer"].close()
    return t0, t1, [f.get(timeout=10).offset for f in sent]


def produce_subprocess():
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, PRODUCER_SAMPLE], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return t0, time.monotonic(), None


def drive(proc, produce):
    """After the assignment: produce every PRODUCE_EVERY_S until the consumer prints a line,
    then EXTRA more, one at a time, each of which must be printed. Returns (first line time,
    every produce() result, how many came before the first line)."""
    produces = []
    first = None
    deadline = time.monotonic() + LINE_TIMEOUT_S
    while first is None:
        assert time.monotonic() < deadline, \
            f"the consumer printed nothing within {LINE_TIMEOUT_S} s of {len(produces)} produces: {proc.describe()}"
        assert proc.proc.poll() is None, f"the consumer exited: {proc.describe()}"
        produces.append(produce())
        try:
            first = proc.lines.get(timeout=PRODUCE_EVERY_S)
        except queue.Empty:
            pass
    assert first[0] >= produces[0][0], "a line came before anything was produced after the assignment"
    before = len(produces)
    for _ in range(EXTRA):
        produces.append(produce())
    deadline = time.monotonic() + 10
    while len(proc.out_lines) < 1 + EXTRA and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(1.0)  # anything extra would show up now
    lines = [l for _, l in proc.out_lines]
    assert all(l == LINE for l in lines), f"unexpected output: {lines}"
    # At most one line per produce; and every record produced once the consumer was reading
    # (the EXTRA ones) was printed.
    assert 1 + EXTRA <= len(lines) <= len(produces), \
        f"{len(lines)} lines for {before} + {EXTRA} produces: {proc.describe()}"
    return first[0], produces, before


@pytest.fixture
def seed_bootstrap(bootstrap):
    assert bootstrap == "localhost:9092", "the seed samples need the broker on localhost:9092"
    return bootstrap


def test_seed_consumer_sample_verbatim(seed_bootstrap, capsys):
    """The sample exactly as given, as a subprocess; the producer sample as a subprocess."""
    produce_subprocess()  # 'test-topic' exists and holds a record the consumer must not print
    reset_group(seed_bootstrap)
    proc = Proc(CONSUMER_SAMPLE)
    try:
        with kp_admin(seed_bootstrap) as admin:
            deadline = time.monotonic() + ASSIGN_TIMEOUT_S
            while True:
                desc, members = group_members(admin)
                if desc.get("group_state") == "Stable" and len(members) == 1 and kp_member_partitions(members[0]):
                    break
                assert proc.proc.poll() is None, f"the consumer exited: {proc.describe()}"
                assert time.monotonic() < deadline, f"no stable assignment within {ASSIGN_TIMEOUT_S} s: {desc}"
                time.sleep(0.05)
        assert kp_member_partitions(members[0]) == {(TOPIC, 0)}
        assert proc.lines.empty(), f"the consumer printed before anything new was produced: {proc.describe()}"
        t_line, _, before = drive(proc, produce_subprocess)
        with capsys.disabled():
            print(f"\nseed consumer, verbatim run: process start -> line {1000 * (t_line - proc.t_start):.0f} ms "
                  f"(producer sample run as a subprocess {before} time(s) before the line)")
    finally:
        proc.stop(expect_clean=False)  # the sample has no shutdown path: its member stays behind
        reset_group(seed_bootstrap)


def test_seed_consumer_timing(seed_bootstrap, capsys):
    produce_in_process()
    runs = []
    for _ in range(RUNS):
        reset_group(seed_bootstrap)
        proc = Proc(TIMED)
        try:
            # kafka-python's first join often happens before it has the topic's metadata: it
            # is assigned nothing, then rejoins once the metadata arrives. Wait for the real one.
            deadline = time.monotonic() + ASSIGN_TIMEOUT_S
            while proc.assigned_at(f"{TOPIC}:0") is None:
                assert proc.proc.poll() is None, f"the consumer exited: {proc.describe()}"
                assert time.monotonic() < deadline, f"no assignment within {ASSIGN_TIMEOUT_S} s: {proc.describe()}"
                time.sleep(0.005)
            assert proc.lines.empty(), f"the consumer printed before anything new was produced: {proc.describe()}"
            t_line, produces, _ = drive(proc, produce_in_process)
            s = proc.stamps
            # Which records the consumer got: every one produced from the first it printed on,
            # and that first one is from some producer run after the assignment.
            got = [int(d.rsplit(":", 1)[1]) for e, _, d in proc.events if e == "record"]
            all_sent = [o for _, _, offs in produces for o in offs]
            assert got and got[0] in all_sent, f"first record printed {got[:1]}, produced {all_sent}"
            assert got == [o for o in all_sent if o >= got[0]], \
                f"records printed {got}, produced after the assignment {all_sent}"
            k = next(i for i, (_, _, offs) in enumerate(produces) if got[0] in offs)
            runs.append({
                "start": t_line - proc.t_start,
                "construct": t_line - s["construct"],
                "join": proc.assigned_at(f"{TOPIC}:0") - s["construct"],
                "produce": t_line - produces[0][0],
                "produce_call": produces[0][1] - produces[0][0],
                "printed_ack": t_line - produces[k][1],
                "skipped": k,
            })
        finally:
            proc.stop(expect_clean=True)
    reset_group(seed_bootstrap)

    def med(key):
        return 1000 * statistics.median(r[key] for r in runs)

    line = (f"SEED-CONSUMER median of {RUNS} runs (samples/seed_consumer.py unchanged, kafka-python): "
            f"process start -> line {med('start'):.0f} ms; consumer construction -> line {med('construct'):.0f} ms; "
            f"construction -> assigned {med('join'):.0f} ms; first produce after assignment -> line "
            f"{med('produce'):.0f} ms (producer sample run in-process, construct+send+flush "
            f"{med('produce_call'):.0f} ms); produce acknowledged -> line {med('printed_ack'):.0f} ms for the "
            f"record printed first; post-assignment records skipped per run (produced before the consumer's "
            f"'latest' offset lookup) {[r['skipped'] for r in runs]}")
    with capsys.disabled():
        print("\n" + line)
