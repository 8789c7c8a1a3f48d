"""AlterConfigs, IncrementalAlterConfigs and DeleteRecords through real clients
(kafka-python 3.0.12, confluent-kafka / librdkafka). Every test reads its effect back:
configs through DescribeConfigs and the behaviour they change, deleted records through
consumers starting at the beginning."""

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_LOG_APPEND_TIME
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource as CConfigResource,
    ConfigSource,
    ResourceType,
)
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import OffsetOutOfRangeError, UnknownTopicOrPartitionError

from conftest import create_topic


# ---------------------------------------------------------------- helpers


def kp_admin(bootstrap):
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="compat-configs")


def kp_describe(admin, topic):
    """Every config of `topic` (kafka-python, config_filter="all"): name -> (value, source)."""
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)],
                                     config_filter="all")
    return {k: (v["value"], v["config_source"]) for k, v in configs["topic"][topic].items()}


def ck_admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap})


def ck_describe(admin, topic):
    """Every config of `topic` (confluent-kafka): name -> (value, ConfigSource)."""
    fs = admin.describe_configs([CConfigResource(ResourceType.TOPIC, topic)])
    (future,) = fs.values()
    return {k: (e.value, ConfigSource(e.source)) for k, e in future.result(10).items()}


def ck_incremental(admin, topic, *entries, validate_only=False):
    """Applies (name, value, op) entries with IncrementalAlterConfigs; returns the future's result."""
    resource = CConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=op) for name, value, op in entries])
    fs = admin.incremental_alter_configs([resource], validate_only=validate_only)
    (future,) = fs.values()
    return future.result(10)


def ck_produce(bootstrap, topic, values, **conf):
    """Produces `values` to partition 0 in order; returns their offsets."""
    offsets = []

    def on_delivery(err, msg):
        assert err is None, err
        offsets.append(msg.offset())

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, **conf})
    for v in values:
        p.produce(topic, value=v, partition=0, on_delivery=on_delivery)
        p.flush(10)  # one record per batch: the low watermark can fall inside the log
    assert p.flush(30) == 0
    return offsets


def ck_consume_from_beginning(bootstrap, topic, expected, timeout_s=20):
    """Reads partition 0 from OFFSET_BEGINNING (librdkafka resolves it with ListOffsets)."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"unused-{uuid.uuid4().hex[:6]}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    try:
        c.assign([CTopicPartition(topic, 0, OFFSET_BEGINNING)])
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
            out.append(msg)
        return out
    finally:
        c.close()


def kp_consume_from_beginning(bootstrap, topic, expected, timeout_s=20):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=timeout_s * 1000)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        out = []
        for msg in consumer:
            out.append(msg)
            if len(out) >= expected:
                break
        return out, consumer.beginning_offsets([tp])[tp]
    finally:
        consumer.close()


# ---------------------------------------------------------------- kafka-python


def test_kafka_python_alter_configs_replaces_overrides(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, config={"retention.ms": "123456", "segment.ms": "600000"})
    admin = kp_admin(bootstrap)
    try:
        # Non-incremental AlterConfigs. kafka-python carries the other overrides over itself
        # (it reads them first), so segment.ms stays.
        result = admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic_name,
                            configs={"retention.ms": "3600000", "cleanup.policy": "compact,delete"})],
            incremental=False)
        assert result["topic"][topic_name] == "OK"
        shown = kp_describe(admin, topic_name)
        assert shown["retention.ms"] == ("3600000", "DYNAMIC_TOPIC_CONFIG")
        assert shown["cleanup.policy"] == ("compact,delete", "DYNAMIC_TOPIC_CONFIG")
        assert shown["segment.ms"] == ("600000", "DYNAMIC_TOPIC_CONFIG")
        assert shown["segment.bytes"][1] == "DEFAULT_CONFIG"

        # reset_configs(incremental=False) sends AlterConfigs without segment.ms: it reverts.
        result = admin.reset_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic_name, configs=["segment.ms"])],
            incremental=False)
        assert result["topic"][topic_name] == "OK"
        shown = kp_describe(admin, topic_name)
        assert shown["segment.ms"] == ("604800000", "DEFAULT_CONFIG")
        assert shown["retention.ms"] == ("3600000", "DYNAMIC_TOPIC_CONFIG")

        # validate_only changes nothing; a bad value is refused with INVALID_CONFIG.
        result = admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic_name, configs={"retention.ms": "1"})],
            validate_only=True, incremental=False)
        assert result["topic"][topic_name] == "OK"
        result = admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic_name, configs={"retention.ms": "soon"})],
            incremental=False)
        assert "InvalidConfigurationError" in result["topic"][topic_name]
        assert "retention.ms" in result["topic"][topic_name]
        assert kp_describe(admin, topic_name)["retention.ms"] == ("3600000", "DYNAMIC_TOPIC_CONFIG")
    finally:
        admin.close()


def test_kafka_python_incremental_alter_configs(bootstrap, topic_name):
    create_topic(bootstrap, topic_name)
    admin = kp_admin(bootstrap)
    try:
        # kafka-python picks IncrementalAlterConfigs when the broker advertises it.
        result = admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, topic_name,
            configs={"cleanup.policy": ("APPEND", "compact"), "retention.ms": "7200000"})])
        assert result["topic"][topic_name] == "OK"
        shown = kp_describe(admin, topic_name)
        assert shown["cleanup.policy"] == ("delete,compact", "DYNAMIC_TOPIC_CONFIG")
        assert shown["retention.ms"] == ("7200000", "DYNAMIC_TOPIC_CONFIG")

        result = admin.reset_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic_name, configs=["retention.ms"])])
        assert result["topic"][topic_name] == "OK"
        shown = kp_describe(admin, topic_name)
        assert shown["retention.ms"] == ("604800000", "DEFAULT_CONFIG")
        assert shown["cleanup.policy"] == ("delete,compact", "DYNAMIC_TOPIC_CONFIG")
    finally:
        admin.close()


def test_kafka_python_delete_records(bootstrap, topic_name):
    create_topic(bootstrap, topic_name)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for i in range(10):
            assert producer.send(topic_name, f"v{i}".encode(), partition=0).get(10).offset == i
    finally:
        producer.close()
    tp = TopicPartition(topic_name, 0)
    admin = kp_admin(bootstrap)
    try:
        result = admin.delete_records({tp: 4}, timeout_ms=5000)
        assert result[tp]["low_watermark"] == 4 and result[tp]["error_code"] == 0
        got, beginning = kp_consume_from_beginning(bootstrap, topic_name, 6)
        assert beginning == 4
        assert [(m.offset, m.value) for m in got] == [(i, f"v{i}".encode()) for i in range(4, 10)]

        with pytest.raises(OffsetOutOfRangeError):
            admin.delete_records({tp: 1000})
        with pytest.raises(UnknownTopicOrPartitionError):
            admin.delete_records({TopicPartition(topic_name + "-missing", 0): -1})
        result = admin.delete_records({tp: -1})
        assert result[tp]["low_watermark"] == 10
    finally:
        admin.close()
    got, beginning = kp_consume_from_beginning(bootstrap, topic_name, 1, timeout_s=2)
    assert (got, beginning) == ([], 10)


# ---------------------------------------------------------------- confluent-kafka


def test_confluent_incremental_alter_configs(bootstrap, topic_name):
    create_topic(bootstrap, topic_name)
    admin = ck_admin(bootstrap)
    ck_incremental(admin, topic_name,
                   ("cleanup.policy", "compact", AlterConfigOpType.APPEND),
                   ("retention.ms", "3600000", AlterConfigOpType.SET))
    shown = ck_describe(admin, topic_name)
    assert shown["cleanup.policy"] == ("delete,compact", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert shown["retention.ms"] == ("3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG)

    ck_incremental(admin, topic_name,
                   ("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT),
                   ("retention.ms", None, AlterConfigOpType.DELETE))
    shown = ck_describe(admin, topic_name)
    assert shown["cleanup.policy"] == ("compact", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert shown["retention.ms"] == ("604800000", ConfigSource.DEFAULT_CONFIG)

    # validate_only: accepted, not applied.
    ck_incremental(admin, topic_name, ("retention.ms", "1", AlterConfigOpType.SET),
                   validate_only=True)
    assert ck_describe(admin, topic_name)["retention.ms"][1] == ConfigSource.DEFAULT_CONFIG

    # APPEND to a non-list config, and a bad value: INVALID_CONFIG, nothing changes.
    for entry in [("retention.ms", "1", AlterConfigOpType.APPEND),
                  ("cleanup.policy", "shred", AlterConfigOpType.SET)]:
        with pytest.raises(KafkaException) as e:
            ck_incremental(admin, topic_name, entry)
        assert e.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert ck_describe(admin, topic_name)["cleanup.policy"] == (
        "compact", ConfigSource.DYNAMIC_TOPIC_CONFIG)


def test_confluent_incremental_config_changes_behaviour(bootstrap, topic_name):
    """A config set with IncrementalAlterConfigs takes effect on the next produce."""
    create_topic(bootstrap, topic_name)
    admin = ck_admin(bootstrap)
    old = 1_000_000_000_000
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    p.produce(topic_name, value=b"create-time", partition=0, timestamp=old)
    assert p.flush(10) == 0
    ck_incremental(admin, topic_name,
                   ("message.timestamp.type", "LogAppendTime", AlterConfigOpType.SET))
    before = int(time.time() * 1000)
    p.produce(topic_name, value=b"append-time", partition=0, timestamp=old)
    assert p.flush(10) == 0
    got = ck_consume_from_beginning(bootstrap, topic_name, 2)
    assert [m.value() for m in got] == [b"create-time", b"append-time"]
    assert got[0].timestamp()[1] == old
    kind, stamped = got[1].timestamp()
    assert kind == TIMESTAMP_LOG_APPEND_TIME and stamped >= before - 1000


def test_confluent_alter_configs_reverts_unlisted(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, config={"segment.ms": "600000", "retention.ms": "123456"})
    admin = ck_admin(bootstrap)
    resource = CConfigResource(ResourceType.TOPIC, topic_name,
                               set_config={"retention.ms": "3600000"})
    fs = admin.alter_configs([resource])
    for f in fs.values():
        f.result(10)
    shown = ck_describe(admin, topic_name)
    assert shown["retention.ms"] == ("3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    # The legacy API replaces the whole override set: segment.ms was not listed.
    assert shown["segment.ms"] == ("604800000", ConfigSource.DEFAULT_CONFIG)


def test_confluent_delete_records(bootstrap, topic_name):
    create_topic(bootstrap, topic_name)
    offsets = ck_produce(bootstrap, topic_name, [f"r{i}".encode() for i in range(10)])
    assert offsets == list(range(10))
    admin = ck_admin(bootstrap)
    fs = admin.delete_records([CTopicPartition(topic_name, 0, 4)])
    (future,) = fs.values()
    assert future.result(10).low_watermark == 4

    got = ck_consume_from_beginning(bootstrap, topic_name, 6)
    assert [(m.offset(), m.value()) for m in got] == [(i, f"r{i}".encode()) for i in range(4, 10)]

    fs = admin.delete_records([CTopicPartition(topic_name, 0, 11)])
    with pytest.raises(KafkaException) as e:
        next(iter(fs.values())).result(10)
    assert e.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE

    fs = admin.delete_records([CTopicPartition(topic_name, 0, 7)])
    assert next(iter(fs.values())).result(10).low_watermark == 7
    got = ck_consume_from_beginning(bootstrap, topic_name, 3)
    assert [m.offset() for m in got] == [7, 8, 9]


def test_confluent_subtract_may_empty_cleanup_policy(bootstrap, topic_name):
    """As Kafka's ValidList: SUBTRACT of every policy leaves an empty cleanup.policy
    (described as an override), and DeleteRecords is then a policy violation."""
    create_topic(bootstrap, topic_name)
    admin = ck_admin(bootstrap)
    ck_incremental(admin, topic_name, ("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT))
    assert ck_describe(admin, topic_name)["cleanup.policy"] == (
        "", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    fs = admin.delete_records([CTopicPartition(topic_name, 0, 0)])
    with pytest.raises(KafkaException) as e:
        next(iter(fs.values())).result(10)
    assert e.value.args[0].code() == KafkaError.POLICY_VIOLATION


def test_configs_removed_in_kafka_4_are_accepted_as_no_ops(bootstrap, topic_name):
    """Tooling written for Kafka 3.x sets message.format.version & co.: accepted, ignored."""
    removed = {"message.format.version": "2.8-IV1", "message.downconversion.enable": "true",
               "message.timestamp.difference.max.ms": "60000"}
    create_topic(bootstrap, topic_name, config={**removed, "retention.ms": "123456"})
    admin = ck_admin(bootstrap)
    ck_incremental(admin, topic_name,
                   *[(k, v, AlterConfigOpType.SET) for k, v in removed.items()])
    shown = ck_describe(admin, topic_name)
    assert shown["retention.ms"] == ("123456", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert not set(removed) & set(shown)
    # The legacy AlterConfigs (kafka-python 3.0.12 refuses these names itself, client-side).
    fs = admin.alter_configs([CConfigResource(ResourceType.TOPIC, topic_name,
                                              set_config={**removed, "retention.ms": "654321"})])
    for f in fs.values():
        f.result(10)
    shown = ck_describe(admin, topic_name)
    assert shown["retention.ms"] == ("654321", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert not set(removed) & set(shown)
