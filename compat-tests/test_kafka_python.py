"""kafka-python (3.0.12) against ottla: produce/consume, admin, offsets, codecs."""

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic
from kafka.errors import (
    InvalidReplicationFactorError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from conftest import create_topic


def consume_all(bootstrap, topic, partitions, expected, timeout_s=20, **kw):
    """Read `expected` records from the start of each partition, without a group."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=timeout_s * 1000, **kw)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out = []
        for msg in consumer:
            out.append(msg)
            if len(out) >= expected:
                break
        return out
    finally:
        consumer.close()


def test_keyed_records_with_headers_three_partitions(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, partitions=3)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    sent = {}  # partition -> [(offset, key, value, headers)]
    futures = []
    for i in range(1000):
        key = f"key-{i % 37}".encode()
        value = f"value-{i}-".encode() + bytes(range(i % 256))
        headers = [("seq", str(i).encode()), ("bin", bytes([i % 256, 0, 255]))]
        futures.append((key, value, headers, producer.send(topic_name, key=key, value=value, headers=headers)))
    producer.flush()
    for key, value, headers, fut in futures:
        md = fut.get(timeout=10)
        sent.setdefault(md.partition, []).append((md.offset, key, value, headers))
    producer.close()

    assert set(sent) == {0, 1, 2}, "the default partitioner should spread 37 keys over all 3 partitions"
    got = consume_all(bootstrap, topic_name, 3, 1000)
    assert len(got) == 1000
    by_partition = {}
    for m in got:
        by_partition.setdefault(m.partition, []).append(
            (m.offset, m.key, m.value, [(k, v) for k, v in m.headers]))
    for p, records in sent.items():
        assert by_partition[p] == records, f"partition {p} differs"
        # offsets are dense and start at 0
        assert [r[0] for r in records] == list(range(len(records)))
    # keys always land on the same partition
    key_partition = {}
    for p, records in sent.items():
        for _, key, _, _ in records:
            assert key_partition.setdefault(key, p) == p


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_compression_round_trip(bootstrap, topic_name, codec):
    create_topic(bootstrap, topic_name)
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=20)
    values = [(f"{codec}-{i}-" * 20).encode() for i in range(500)]
    for v in values:
        producer.send(topic_name, v)
    producer.flush()
    producer.close()
    got = consume_all(bootstrap, topic_name, 1, len(values))
    assert [m.value for m in got] == values
    assert [m.offset for m in got] == list(range(len(values)))


def test_offsets_beginning_end_and_by_time(bootstrap, topic_name):
    create_topic(bootstrap, topic_name)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    base = int(time.time() * 1000) - 100_000
    for i in range(10):
        producer.send(topic_name, f"v{i}".encode(), timestamp_ms=base + i * 1000)
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic_name, 0)
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: 10}
        found = consumer.offsets_for_times({tp: base + 4500})
        assert found[tp].offset == 5
        assert found[tp].timestamp == base + 5000
        assert consumer.offsets_for_times({tp: base + 10 ** 9})[tp] is None
    finally:
        consumer.close()


def test_admin_topics_configs_partitions(bootstrap, topic_name):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        # validate_only creates nothing
        admin.create_topics([NewTopic(topic_name, 2, 1)], validate_only=True)
        assert topic_name not in admin.list_topics()

        admin.create_topics([NewTopic(topic_name, 2, 1, topic_configs={"retention.ms": "123456"})])
        assert topic_name in admin.list_topics()
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(topic_name, 2, 1)], raise_errors=True)
        with pytest.raises(InvalidReplicationFactorError):
            admin.create_topics([NewTopic(topic_name + "-rf", 1, 3)], raise_errors=True)

        # kafka-python filters client side: "modified" (its default) keeps only overrides
        modified = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic_name)])
        assert list(modified["topic"][topic_name]) == ["retention.ms"]
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic_name)],
                                         config_filter="all")
        entries = configs["topic"][topic_name]
        assert entries["retention.ms"]["value"] == "123456"
        assert entries["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert entries["cleanup.policy"]["value"] == "delete"
        assert entries["cleanup.policy"]["config_source"] == "DEFAULT_CONFIG"

        admin.create_partitions({topic_name: NewPartitions(total_count=5)})
        described = admin.describe_topics([topic_name])
        assert len(described[0]["partitions"]) == 5

        admin.delete_topics([topic_name])
        deadline = time.time() + 5
        while topic_name in admin.list_topics() and time.time() < deadline:
            time.sleep(0.1)
        assert topic_name not in admin.list_topics()
        with pytest.raises(UnknownTopicOrPartitionError):
            admin.delete_topics([topic_name])
    finally:
        admin.close()


def test_admin_describe_log_dirs(bootstrap, topic_name):
    """DescribeLogDirs through KafkaAdminClient.describe_log_dirs(): every partition of the
    topic appears in a log directory with its size, which grows with what is produced; a
    disk broker names its data directory (absolute) and its file system's sizes, a memory
    broker a directory `memory` with sizes -1."""
    create_topic(bootstrap, topic_name, partitions=2)

    def produce(n):
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        try:
            for i in range(n):
                for p in (0, 1):
                    producer.send(topic_name, f"value {i}".encode() * 10, partition=p).get(10)
        finally:
            producer.close()

    def sizes(admin, topic_partitions):
        """partition -> size of the topic's partitions, over every broker's log dirs."""
        out = {}
        for broker in admin.describe_log_dirs(topic_partitions=topic_partitions):
            for d in broker["log_dirs"]:
                assert d["error_code"] == 0, d
                if d["log_dir"] == "memory":
                    assert (d["total_bytes"], d["usable_bytes"]) == (-1, -1), d
                else:
                    assert d["log_dir"].startswith("/"), d
                    assert d["total_bytes"] >= d["usable_bytes"] > 0, d
                for t in d["topics"]:
                    if t["name"] == topic_name:
                        for p in t["partitions"]:
                            assert p["offset_lag"] == 0 and not p["is_future_key"], p
                            out[p["partition_index"]] = p["partition_size"]
        return out

    produce(5)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        everything = sizes(admin, None)
        assert sorted(everything) == [0, 1] and all(s > 0 for s in everything.values()), everything
        # One partition named, and a topic the broker does not have: only that partition.
        assert sizes(admin, {topic_name: [1], topic_name + "-missing": [0]}) == {1: everything[1]}
        produce(5)
        grown = sizes(admin, [topic_name])
        assert sorted(grown) == [0, 1]
        assert all(grown[p] > everything[p] for p in (0, 1)), (everything, grown)
    finally:
        admin.close()


def test_message_over_limit_is_refused(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, config={"max.message.bytes": "2000"})
    producer = KafkaProducer(bootstrap_servers=bootstrap, retries=0)
    try:
        fut = producer.send(topic_name, b"x" * 5000)
        with pytest.raises(MessageSizeTooLargeError):
            fut.get(timeout=10)
        ok = producer.send(topic_name, b"small").get(timeout=10)
        assert ok.offset == 0
    finally:
        producer.close()
