"""Record-level produce work with real clients: topic compression.type (batches recompressed
into the topic's codec and read back byte for byte) and per-record errors (KIP-467): librdkafka
fails exactly the culprit records with their error, the rest of the batch with another."""

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition


def create(bootstrap, topic, config):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1, config=config)])
    fs[topic].result(10)


def records(n, tag):
    return [
        (f"key-{i}".encode(), f"{tag}-{i}-".encode() * (i + 1), [("h", f"{i}".encode()), ("empty", b"")])
        for i in range(n)
    ]


def consume_confluent(bootstrap, topic, expected, timeout_s=20):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"unused-{uuid.uuid4().hex[:6]}",
        "enable.auto.commit": False,
    })
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        out = []
        deadline = time.time() + timeout_s
        while len(out) < expected and time.time() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            out.append((msg.offset(), msg.key(), msg.value(), msg.headers() or []))
        return out
    finally:
        c.close()


def consume_kafka_python(bootstrap, topic, expected, timeout_s=20):
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = KpTopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        out = []
        deadline = time.time() + timeout_s
        while len(out) < expected and time.time() < deadline:
            for batch in c.poll(timeout_ms=500).values():
                out.extend((m.offset, m.key, m.value, list(m.headers)) for m in batch)
        return out
    finally:
        c.close()


@pytest.mark.parametrize("target", ["zstd", "uncompressed", "lz4", "snappy", "gzip"])
def test_kafka_python_gzip_into_topic_codec(bootstrap, topic_name, target):
    """kafka-python sends gzip batches; the topic stores them as `target`; both clients read
    every record back byte for byte (keys, values, headers, offsets)."""
    config = {"compression.type": target}
    if target == "zstd":
        config["compression.zstd.level"] = "10"
    create(bootstrap, topic_name, config)
    sent = records(50, target)
    p = KafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip", linger_ms=20)
    futures = [p.send(topic_name, key=k, value=v, headers=h) for k, v, h in sent]
    p.flush(30)
    offsets = [f.get(10).offset for f in futures]
    p.close()
    assert offsets == list(range(50))
    want = [(i, k, v, [(hk, hv) for hk, hv in h]) for i, (k, v, h) in enumerate(sent)]
    assert consume_confluent(bootstrap, topic_name, 50) == want
    assert consume_kafka_python(bootstrap, topic_name, 50) == want


@pytest.mark.parametrize("codec", ["none", "snappy", "zstd"])
def test_confluent_into_gzip_topic(bootstrap, topic_name, codec):
    create(bootstrap, topic_name, {"compression.type": "gzip", "compression.gzip.level": "1"})
    sent = records(30, codec)
    reports = []
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": codec})
    for k, v, h in sent:
        p.produce(topic_name, key=k, value=v, headers=h,
                  on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    assert p.flush(30) == 0
    assert reports == [(None, i) for i in range(30)]
    want = [(i, k, v, h) for i, (k, v, h) in enumerate(sent)]
    assert consume_confluent(bootstrap, topic_name, 30) == want


def produce_one_batch(bootstrap, topic, messages):
    """Sends `messages` ((key, value, timestamp ms or 0)) in one batch; returns each one's error."""
    results = {}
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False, "retries": 0,
                  "linger.ms": 200, "batch.num.messages": len(messages)})
    for i, (key, value, ts) in enumerate(messages):
        p.produce(topic, key=key, value=value, timestamp=ts,
                  on_delivery=lambda err, msg, i=i: results.__setitem__(i, err))
    p.flush(15)
    return [results.get(i) for i in range(len(messages))]


def test_keyless_records_fail_alone_on_a_compacted_topic(bootstrap, topic_name):
    create(bootstrap, topic_name, {"cleanup.policy": "compact"})
    # Two culprits: librdkafka 2.16 applies record_errors per message when the response lists
    # more than one (with a single one it fails the whole batch with the partition's error).
    errors = produce_one_batch(bootstrap, topic_name,
                               [(b"a", b"1", 0), (None, b"2", 0), (b"c", b"3", 0), (None, b"4", 0)])
    assert all(e is not None for e in errors), errors
    for e in (errors[1], errors[3]):
        assert e.code() == KafkaError.INVALID_RECORD, e
    for e in (errors[0], errors[2]):
        assert e.code() == KafkaError._INVALID_DIFFERENT_RECORD, e
    # Nothing of the refused batch was stored; a keyed batch goes in.
    assert produce_one_batch(bootstrap, topic_name, [(b"a", b"1", 0)]) == [None]
    assert [(o, k, v) for o, k, v, _ in consume_confluent(bootstrap, topic_name, 1)] == [(0, b"a", b"1")]


def test_out_of_bounds_timestamps_fail_alone(bootstrap, topic_name):
    create(bootstrap, topic_name, {"message.timestamp.before.max.ms": "3600000",
                                   "message.timestamp.after.max.ms": "3600000"})
    now = int(time.time() * 1000)
    hour = 3600_000
    errors = produce_one_batch(bootstrap, topic_name, [
        (b"k", b"now", now), (b"k", b"old", now - 2 * hour), (b"k", b"future", now + 2 * hour),
    ])
    assert all(e is not None for e in errors), errors
    # The partition's error is INVALID_TIMESTAMP (tests/it/produce_records.rs); librdkafka fails
    # the records listed in record_errors with INVALID_RECORD, the others as collateral.
    for e in (errors[1], errors[2]):
        assert e.code() == KafkaError.INVALID_RECORD, e
    assert errors[0].code() == KafkaError._INVALID_DIFFERENT_RECORD, errors[0]
    assert produce_one_batch(bootstrap, topic_name, [(b"k", b"now", now)]) == [None]
    assert [(o, v) for o, _, v, _ in consume_confluent(bootstrap, topic_name, 1)] == [(0, b"now")]
