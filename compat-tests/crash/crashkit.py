"""Helpers for the crash tests: a broker process we can SIGKILL, segment file parsing, and
plain confluent-kafka produce/consume helpers.

Each test owns its brokers: a fresh data directory, a free loopback port, and the binary named
by OTTLA_BIN (default: <repo>/target/release/ottla). Broker stderr goes to one log file per
broker (appended to across restarts, each start marked with a header line).
"""

import os
import struct
import subprocess
import sys
import time
import uuid

import crc32c
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from groups.broker import OTTLA_BIN, OwnBroker  # noqa: E402


def check_binary():
    if not os.path.isfile(OTTLA_BIN):
        raise RuntimeError(f"no broker binary at {OTTLA_BIN}: run `cargo build --release --bin ottla` "
                           "or set OTTLA_BIN")


def binary_help():
    check_binary()
    return subprocess.run([OTTLA_BIN, "--help"], capture_output=True, text=True, timeout=30).stdout


class Broker(OwnBroker):
    """A test-owned broker (see `groups.broker.OwnBroker`) with a flush policy."""

    def __init__(self, data_dir, log_path, fsync=None, port=None):
        super().__init__(data_dir, log_path, ["--fsync", fsync] if fsync else [], port=port)
        self.fsync = fsync

    def current_log(self):
        """The log lines of the current (or last) run only."""
        return self.run_log()


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
