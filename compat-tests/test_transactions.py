"""Transactions with real clients: commit and abort, read_committed vs read_uncommitted,
offsets sent to the transaction (consume-transform-produce), fencing of a zombie."""

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTP


def create(bootstrap, topic, partitions=1):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(10)


def consume_values(bootstrap, topic, isolation, expected, partitions=1, timeout_s=10):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"unused-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "isolation.level": isolation,
                  "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out, eof = [], set()
        deadline = time.time() + timeout_s
        while time.time() < deadline and (len(out) < expected or len(eof) < partitions):
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                raise KafkaException(m.error())
            out.append(m.value())
        return out
    finally:
        c.close()


def txn_producer(bootstrap, tid):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 5})
    p.init_transactions(10)
    return p


def write_txn(p, topic, prefix, n, end):
    """One transaction of `n` records `{prefix}{i}`, then `end`: "commit", "abort" or "open"
    (flushed and left open)."""
    p.begin_transaction()
    for i in range(n):
        p.produce(topic, f"{prefix}{i}".encode())
    if end == "commit":
        p.commit_transaction(10)
    else:
        p.flush(10)
        if end == "abort":
            p.abort_transaction(10)


def test_confluent_commit_and_abort(bootstrap, topic_name):
    create(bootstrap, topic_name)
    p = txn_producer(bootstrap, f"tx-{uuid.uuid4().hex[:8]}")
    write_txn(p, topic_name, "committed-", 10, "commit")
    write_txn(p, topic_name, "aborted-", 5, "abort")
    p.begin_transaction()
    p.produce(topic_name, b"last")
    p.commit_transaction(10)

    committed = [f"committed-{i}".encode() for i in range(10)] + [b"last"]
    assert consume_values(bootstrap, topic_name, "read_committed", 11) == committed
    everything = consume_values(bootstrap, topic_name, "read_uncommitted", 16)
    assert everything == committed[:10] + [f"aborted-{i}".encode() for i in range(5)] + [b"last"]


def test_open_transaction_is_invisible_to_read_committed(bootstrap, topic_name):
    create(bootstrap, topic_name)
    p = txn_producer(bootstrap, f"tx-{uuid.uuid4().hex[:8]}")
    p.begin_transaction()
    p.produce(topic_name, b"pending")
    p.flush(10)
    assert consume_values(bootstrap, topic_name, "read_committed", 0, timeout_s=3) == []
    assert consume_values(bootstrap, topic_name, "read_uncommitted", 1) == [b"pending"]
    p.commit_transaction(10)
    assert consume_values(bootstrap, topic_name, "read_committed", 1) == [b"pending"]


def test_zombie_producer_is_fenced(bootstrap, topic_name):
    create(bootstrap, topic_name)
    tid = f"tx-{uuid.uuid4().hex[:8]}"
    old = txn_producer(bootstrap, tid)
    old.begin_transaction()
    old.produce(topic_name, b"zombie")
    old.flush(10)
    new = txn_producer(bootstrap, tid)  # bumps the epoch, aborts the old transaction
    with pytest.raises(KafkaException) as e:
        old.commit_transaction(10)
    assert e.value.args[0].code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                      KafkaError.INVALID_PRODUCER_EPOCH)
    new.begin_transaction()
    new.produce(topic_name, b"alive")
    new.commit_transaction(10)
    assert consume_values(bootstrap, topic_name, "read_committed", 1) == [b"alive"]


def test_consume_transform_produce_offsets(bootstrap, topic_name):
    src, dst, group = topic_name, topic_name + "-out", f"ctp-{uuid.uuid4().hex[:6]}"
    create(bootstrap, src)
    create(bootstrap, dst)
    plain = Producer({"bootstrap.servers": bootstrap})
    for i in range(20):
        plain.produce(src, f"in-{i}".encode())
    plain.flush(10)

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed"})
    consumer.subscribe([src])
    p = txn_producer(bootstrap, f"tx-{uuid.uuid4().hex[:8]}")
    seen = []
    aborted_once = False
    deadline = time.time() + 30
    while len(seen) < 20 and time.time() < deadline:
        msgs = consumer.consume(10, 0.5)
        if not msgs:
            continue
        p.begin_transaction()
        for m in msgs:
            assert not m.error()
            seen.append(m.value())
            p.produce(dst, m.value().replace(b"in", b"out"))
        p.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                      consumer.consumer_group_metadata(), 10)
        # The first batch is aborted: its offsets must not stick, its output must not show.
        if not aborted_once:
            aborted_once = True
            p.abort_transaction(10)
            consumer.seek(TopicPartition(src, 0, 0))
            seen.clear()
        else:
            p.commit_transaction(10)
    consumer.close()
    assert sorted(seen) == sorted(f"in-{i}".encode() for i in range(20))
    out = consume_values(bootstrap, dst, "read_committed", 20)
    assert sorted(out) == sorted(f"out-{i}".encode() for i in range(20))
    # The group's committed offset is the end of the input.
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    committed = c.committed([TopicPartition(src, 0)], 10)
    c.close()
    assert committed[0].offset == 20


def test_kafka_python_transactions(bootstrap, topic_name):
    create(bootstrap, topic_name)
    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"kp-{uuid.uuid4().hex[:8]}")
    p.init_transactions()
    p.begin_transaction()
    for i in range(5):
        p.send(topic_name, f"c{i}".encode())
    p.commit_transaction()
    p.begin_transaction()
    p.send(topic_name, b"a0")
    p.flush()
    p.abort_transaction()
    p.close()

    def read(isolation):
        c = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation,
                          auto_offset_reset="earliest", consumer_timeout_ms=3000)
        c.assign([KTP(topic_name, 0)])
        c.seek_to_beginning()
        vals = [m.value for m in c]
        c.close()
        return vals

    assert read("read_committed") == [f"c{i}".encode() for i in range(5)]
    assert read("read_uncommitted") == [f"c{i}".encode() for i in range(5)] + [b"a0"]


def test_kafka_python_describe_producers_and_admin_abort(bootstrap, topic_name):
    """kafka-python's transactions admin (KIP-664, what kafka-transactions.sh does): a
    transaction left open pins the last stable offset; DescribeProducers at the partition's
    leader shows its producer and where it started; an admin abort (WriteTxnMarkers to the
    leader) ends it there, after which read_committed consumers move past it and read the
    committed records only, in order."""
    from kafka.admin import AbortTransactionSpec, KafkaAdminClient

    create(bootstrap, topic_name)
    committer = txn_producer(bootstrap, f"tx-{uuid.uuid4().hex[:8]}")
    write_txn(committer, topic_name, "committed-", 5, "commit")
    stuck = txn_producer(bootstrap, f"tx-{uuid.uuid4().hex[:8]}")
    write_txn(stuck, topic_name, "open-", 3, "open")
    write_txn(committer, topic_name, "after-", 2, "commit")

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="compat-txn-admin")
    try:
        tp = KTP(topic_name, 0)
        producers = admin.describe_producers([tp])[tp].active_producers
        assert len(producers) == 2, producers
        open_ = [p for p in producers if p.current_transaction_start_offset >= 0]
        # committed-0..4 at 0-4, their commit marker at 5: the open transaction starts at 6.
        assert [p.current_transaction_start_offset for p in open_] == [6], producers
        assert all(p.last_timestamp > 1_600_000_000_000 for p in producers), producers
        # The open transaction holds read_committed consumers below it.
        assert consume_values(bootstrap, topic_name, "read_committed", 5) == \
            [f"committed-{i}".encode() for i in range(5)]
        s = open_[0]
        admin.abort_transaction(AbortTransactionSpec(
            topic_partition=tp, producer_id=s.producer_id, producer_epoch=s.producer_epoch,
            coordinator_epoch=s.coordinator_epoch))
        after = admin.describe_producers([tp])[tp].active_producers
        assert all(p.current_transaction_start_offset == -1 for p in after), after
    finally:
        admin.close()
    assert consume_values(bootstrap, topic_name, "read_committed", 7) == \
        [f"committed-{i}".encode() for i in range(5)] + [f"after-{i}".encode() for i in range(2)]
    assert consume_values(bootstrap, topic_name, "read_uncommitted", 10) == \
        [f"committed-{i}".encode() for i in range(5)] + [f"open-{i}".encode() for i in range(3)] \
        + [f"after-{i}".encode() for i in range(2)]
