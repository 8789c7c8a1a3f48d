"""Retention and compaction observed by kafka-python clients, against a broker of its own
with short maintenance intervals (disk and memory mode)."""

import os
import socket
import subprocess
import tempfile
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import OffsetOutOfRangeError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OTTLA_BIN = os.environ.get("OTTLA_BIN", os.path.join(ROOT, "target", "release", "ottla"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["disk", "memory"])
def broker(request, tmp_path):
    port = free_port()
    args = [OTTLA_BIN, "--listen", f"127.0.0.1:{port}", "--advertise", f"127.0.0.1:{port}",
            "--log-retention-check-interval-ms", "100", "--log-cleaner-backoff-ms", "100"]
    args += ["--memory"] if request.param == "memory" else ["--data-dir", str(tmp_path / "data")]
    log_path = tmp_path / "broker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stderr=log, stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while b"ottla ready on" not in log_path.read_bytes():
            assert proc.poll() is None and time.time() < deadline, log_path.read_text()
            time.sleep(0.02)
        yield f"127.0.0.1:{port}", log_path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        assert b"panicked" not in log_path.read_bytes(), log_path.read_text()


def create(bootstrap, name, configs):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, 1, 1, topic_configs=configs)])
    finally:
        admin.close()


def produce(bootstrap, topic, records, **kw):
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, **kw)
    offsets = []
    for key, value, ts in records:
        md = producer.send(topic, key=key, value=value, timestamp_ms=ts).get(timeout=10)
        offsets.append(md.offset)
    producer.close()
    return offsets


def consume(bootstrap, topic, auto_offset_reset="earliest", start=None, idle_ms=1500):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset=auto_offset_reset, consumer_timeout_ms=idle_ms)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        if start is not None:
            consumer.seek(tp, start)
        return [(m.offset, m.key, m.value) for m in consumer]
    finally:
        consumer.close()


def wait_for(predicate, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_time_retention_deletes_old_segments(broker):
    bootstrap, _ = broker
    topic = "retained"
    # Small segments; records stamped 10 minutes ago expire under retention.ms = 1 minute.
    create(bootstrap, topic, {"internal.segment.bytes": "1024", "retention.ms": "60000"})
    old = int(time.time() * 1000) - 600_000
    produce(bootstrap, topic, [(None, b"old-%03d" % i + b"x" * 100, old + i) for i in range(60)])

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    tp = TopicPartition(topic, 0)
    try:
        assert wait_for(lambda: consumer.beginning_offsets([tp])[tp] == 60), \
            consumer.beginning_offsets([tp])
        assert consumer.end_offsets([tp])[tp] == 60
    finally:
        consumer.close()
    # A consumer positioned below the log start is reset by its policy (earliest -> 60).
    fresh = int(time.time() * 1000)
    produce(bootstrap, topic, [(None, b"new-%d" % i, fresh) for i in range(5)])
    got = consume(bootstrap, topic, start=3)
    assert [(o, v) for o, _, v in got] == [(60 + i, b"new-%d" % i) for i in range(5)]


def test_size_retention_keeps_the_newest_bytes(broker):
    bootstrap, _ = broker
    topic = "sized"
    create(bootstrap, topic, {"internal.segment.bytes": "2000", "retention.bytes": "4000",
                              "retention.ms": "-1"})
    now = int(time.time() * 1000)
    values = [b"%04d" % i + b"y" * 200 for i in range(100)]
    produce(bootstrap, topic, [(None, v, now) for v in values])
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    tp = TopicPartition(topic, 0)
    try:
        assert wait_for(lambda: consumer.beginning_offsets([tp])[tp] > 50)
        # Retention runs every 100 ms and may delete a few more segments: wait until the log
        # start has not moved for a second.
        start, stable_since = consumer.beginning_offsets([tp])[tp], time.time()
        while time.time() - stable_since < 1.0:
            time.sleep(0.1)
            now_start = consumer.beginning_offsets([tp])[tp]
            if now_start != start:
                start, stable_since = now_start, time.time()
    finally:
        consumer.close()
    got = consume(bootstrap, topic)
    # What is left is exactly the suffix from the log start, byte for byte.
    assert got[0][0] == start
    assert [v for _, _, v in got] == values[start:]


def test_compaction_keeps_the_latest_value_per_key(broker):
    bootstrap, _ = broker
    topic = "compacted"
    create(bootstrap, topic, {"cleanup.policy": "compact", "internal.segment.bytes": "1024",
                              "delete.retention.ms": "0", "min.compaction.lag.ms": "0"})
    now = int(time.time() * 1000)
    records = []
    for i in range(200):
        key = b"key-%d" % (i % 10)
        records.append((key, b"value-%d" % i, now))
    records.append((b"key-3", None, now))  # tombstone
    for i in range(20):  # roll past the tombstone so its segment can be cleaned
        records.append((b"filler-%d" % i, b"f" * 60, now))
    offsets = produce(bootstrap, topic, records)
    assert offsets == list(range(len(records)))

    latest = {}
    for offset, (key, value, _) in enumerate(records):
        latest[key] = (offset, value)

    def compacted():
        got = consume(bootstrap, topic, idle_ms=800)
        return len(got) < 60 and got

    got = None
    assert wait_for(lambda: bool(compacted()), timeout=20)
    got = consume(bootstrap, topic)
    by_key = {}
    for offset, key, value in got:
        by_key[key] = (offset, value)
    # Every key's newest record is there with its original offset; superseded ones are gone
    # from the cleaned segments (keys may repeat only in the active segment).
    for key, (offset, value) in latest.items():
        if key == b"key-3":
            continue
        assert by_key[key] == (offset, value), key
    assert b"key-3" not in by_key, "the expired tombstone and what it deleted are gone"
    assert [o for o, _, _ in got] == sorted(o for o, _, _ in got)
    assert len(got) < len(records)
