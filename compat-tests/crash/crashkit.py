"""Helpers for the crash tests: a broker process we can SIGKILL, segment file parsing, and
plain confluent-kafka produce/consume helpers.

Each test owns its brokers: a fresh data directory, a free loopback port, and the binary named
by OTTLA_BIN (default: <repo>/target/release/ottla). Broker stderr goes to one log file per
broker (appended to across restarts, each start marked with a header line).
"""

import ctypes
import os
import signal
import socket
import struct
import subprocess
import time
import uuid

import crc32c
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OTTLA_BIN = os.environ.get("OTTLA_BIN", os.path.join(REPO, "target", "release", "ottla"))
READY_TIMEOUT_S = 30
STOP_TIMEOUT_S = 20
LOG_TAIL_LINES = 60

_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """Runs in the child before exec: SIGKILL the broker if the test process dies, so a killed
    pytest never leaves a broker behind."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_binary():
    if not os.path.isfile(OTTLA_BIN):
        raise RuntimeError(f"no broker binary at {OTTLA_BIN}: run `cargo build --release --bin ottla` "
                           "or set OTTLA_BIN")


def binary_help():
    check_binary()
    return subprocess.run([OTTLA_BIN, "--help"], capture_output=True, text=True, timeout=30).stdout


class Broker:
    """One broker identity (data dir + port) that can be started, killed and restarted."""

    def __init__(self, data_dir, log_path, fsync=None, port=None):
        self.data_dir = data_dir
        self.log_path = log_path
        self.fsync = fsync
        self.port = port or free_port()
        self.proc = None
        self.starts = 0
        self._start_offset = 0  # where the current run's lines begin in the log file

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def args(self):
        a = [OTTLA_BIN, "--listen", self.bootstrap, "--advertise", self.bootstrap,
             "--data-dir", self.data_dir]
        if self.fsync is not None:
            a += ["--fsync", self.fsync]
        return a

    def start(self):
        assert self.proc is None, "broker already running"
        check_binary()
        self.starts += 1
        with open(self.log_path, "ab") as f:
            f.write(f"----- crash-test: start #{self.starts}: {' '.join(self.args())}\n".encode())
            self._start_offset = f.tell()
        log = open(self.log_path, "ab")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1")
        try:
            self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=env, preexec_fn=_die_with_parent)
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if "ottla ready on" in self.current_log():
                return
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"broker exited with {rc} before it was ready:\n{self.tail()}")
            time.sleep(0.02)
        self.kill9()
        raise RuntimeError(f"broker not ready after {READY_TIMEOUT_S} s:\n{self.tail()}")

    def kill9(self):
        """SIGKILL: no shutdown code runs, no clean-shutdown marker is written."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        self.check_no_panic()

    def stop(self):
        """Graceful stop (SIGTERM); the broker must exit 0 within STOP_TIMEOUT_S."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            raise AssertionError(f"broker did not stop within {STOP_TIMEOUT_S} s of SIGTERM")
        self.proc = None
        assert rc == 0, f"broker exited with {rc} on SIGTERM"
        self.check_no_panic()

    def restart(self):
        self.stop()
        self.start()

    def cleanup(self):
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait(10)
            except Exception:
                pass
            self.proc = None

    def full_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def current_log(self):
        """The log lines of the current (or last) run only."""
        with open(self.log_path, "rb") as f:
            f.seek(self._start_offset)
            return f.read().decode("utf-8", "replace")

    def tail(self, n=LOG_TAIL_LINES):
        lines = self.full_log().splitlines()
        return "\n".join(lines[-n:])

    def check_no_panic(self):
        assert "panicked" not in self.full_log(), f"broker panicked:\n{self.tail()}"


# ---- segment files ----------------------------------------------------------------------

BATCH_HEADER_BYTES = 61


def partition_dir(data_dir, topic, partition):
    return os.path.join(data_dir, f"{topic}-{partition}")


def last_segment(data_dir, topic, partition):
    d = partition_dir(data_dir, topic, partition)
    logs = sorted(n for n in os.listdir(d) if n.endswith(".log"))
    assert logs, f"no .log files in {d}: {os.listdir(d)}"
    return os.path.join(d, logs[-1])


def parse_batches(data):
    """Walks v2 record batches back to back. Returns dicts with pos, size, base_offset,
    last_offset, records, crc_ok; stops at the first incomplete header or batch."""
    out = []
    pos = 0
    while pos + BATCH_HEADER_BYTES <= len(data):
        base_offset, length = struct.unpack_from(">qi", data, pos)
        size = 12 + length
        if length <= 0 or pos + size > len(data):
            break
        magic = data[pos + 16]
        (crc,) = struct.unpack_from(">I", data, pos + 17)
        (last_delta,) = struct.unpack_from(">i", data, pos + 23)
        (records,) = struct.unpack_from(">i", data, pos + 57)
        out.append({
            "pos": pos,
            "size": size,
            "magic": magic,
            "base_offset": base_offset,
            "last_offset": base_offset + last_delta,
            "records": records,
            "crc_ok": crc32c.crc32c(data[pos + 21:pos + size]) == crc,
        })
        pos += size
    return out


# ---- clients ----------------------------------------------------------------------------

def create_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    fs[topic].result(15)


def produce_acked(bootstrap, topic, groups, partition=0, **conf):
    """Produces groups (lists) of values to one partition, flushing after each group (so each
    group is sent on its own). Returns [(offset, value)] of the acknowledged records, by offset;
    any delivery failure raises."""
    reports = []

    def on_delivery(err, msg):
        if err is not None:
            raise KafkaException(err)
        reports.append((msg.offset(), msg.value()))

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0, **conf})
    for group in groups:
        for v in group:
            p.produce(topic, value=v, partition=partition, on_delivery=on_delivery)
        assert p.flush(30) == 0, "produce did not complete within 30 s"
    assert len(reports) == sum(len(g) for g in groups)
    return sorted(reports)


def new_consumer(bootstrap):
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"crash-unused-{uuid.uuid4().hex[:8]}",  # required by the client; never joined
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": False,
    })


def read_all(bootstrap, topic, partitions, timeout_s=60):
    """Reads every partition from offset 0 up to its high watermark with assign().
    Returns ({partition: high watermark}, {partition: [(offset, key, value)]})."""
    c = new_consumer(bootstrap)
    try:
        highs = {}
        for p in partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            assert low == 0, f"partition {p}: log start offset {low}, expected 0"
            highs[p] = high
        got = {p: [] for p in partitions}
        want = [p for p in partitions if highs[p] > 0]
        if want:
            c.assign([TopicPartition(topic, p, 0) for p in want])
        pending = set(want)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for msg in c.consume(num_messages=5000, timeout=0.5):
                if msg.error():
                    raise KafkaException(msg.error())
                p = msg.partition()
                got[p].append((msg.offset(), msg.key(), msg.value()))
                if msg.offset() >= highs[p] - 1:
                    pending.discard(p)
        assert not pending, (f"timed out reading partitions {sorted(pending)}: got "
                             f"{ {p: len(got[p]) for p in partitions} } of {highs}")
        return highs, got
    finally:
        c.close()
