"""Exactly-once consume-transform-produce across broker crashes: a confluent-kafka loop reads
an input topic (read_committed, group offsets), writes one output record per input record
and commits its input offsets inside the same transaction (send_offsets_to_transaction),
while the broker is SIGKILLed and restarted. Afterwards the output topic must hold each input
record's transform exactly once. Prints a CTP-CHECK line."""

import random
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

import crashkit

INPUTS = 15000
PARTITIONS = 2
FAULTS = 3


def make_producer(bootstrap, tid):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 2,
                  "transaction.timeout.ms": 10000, "message.timeout.ms": 10000,
                  "metadata.recovery.strategy": "none", "log_level": 2})
    deadline = time.time() + 60
    while True:
        try:
            p.init_transactions(10)
            return p
        except KafkaException as e:
            if e.args[0].fatal() or time.time() > deadline:
                raise
            time.sleep(0.3)


def rewind(consumer, src):
    """After an abort: go back to the group's committed offsets (the aborted batch's input
    will be processed again, its output having been aborted)."""
    deadline = time.time() + 60
    while True:
        try:
            parts = consumer.assignment() or [TopicPartition(src, p) for p in range(PARTITIONS)]
            for tp in consumer.committed(parts, 10):
                consumer.seek(TopicPartition(src, tp.partition, tp.offset if tp.offset >= 0 else 0))
            return
        except KafkaException:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def test_consume_transform_produce_survives_kill9(brokers, topic):
    rng = random.Random(20261125)
    broker = brokers(fsync="always")
    broker.start()
    bs = broker.bootstrap
    src, dst, group = topic + "-in", topic + "-out", topic + "-g"
    crashkit.create_topic(bs, src, PARTITIONS)
    crashkit.create_topic(bs, dst, PARTITIONS)
    plain = Producer({"bootstrap.servers": bs, "acks": "all", "log_level": 2})
    for i in range(INPUTS):
        plain.produce(src, key=str(i).encode(), value=f"in-{i}".encode())
    assert plain.flush(30) == 0

    # The loop runs in a thread; the faults come from this (main) thread, which owns the
    # broker process (it is started with a parent-death signal bound to the starting thread).
    state = {"done": 0, "committed": 0, "aborted": 0, "error": None}
    finished = threading.Event()

    def loop():
        consumer = Consumer({"bootstrap.servers": bs, "group.id": group,
                             "enable.auto.commit": False, "auto.offset.reset": "earliest",
                             "isolation.level": "read_committed", "session.timeout.ms": 10000,
                             "log_level": 2})
        consumer.subscribe([src])
        tid = f"ctp-{uuid.uuid4().hex[:6]}"
        try:
            producer = make_producer(bs, tid)
            deadline = time.time() + 180
            while time.time() < deadline and state["done"] < INPUTS:
                msgs = [m for m in consumer.consume(10, 0.5) if not m.error()]
                if not msgs:
                    continue
                try:
                    producer.begin_transaction()
                    for m in msgs:
                        producer.produce(dst, key=m.key(),
                                         value=m.value().replace(b"in-", b"out-"),
                                         partition=m.partition())
                    producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                                         consumer.consumer_group_metadata(), 10)
                    producer.commit_transaction(15)
                    state["committed"] += 1
                    state["done"] = sum(max(tp.offset, 0) for tp in consumer.committed(
                        [TopicPartition(src, p) for p in range(PARTITIONS)], 10))
                except KafkaException as e:
                    state["aborted"] += 1
                    if e.args[0].fatal():
                        producer = make_producer(bs, tid)
                    else:
                        try:
                            producer.abort_transaction(15)
                        except KafkaException:
                            producer = make_producer(bs, tid)
                    rewind(consumer, src)
        except Exception as e:  # surfaced below
            state["error"] = e
        finally:
            consumer.close()
            finished.set()

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    faults = 0
    for _ in range(FAULTS):
        if finished.wait(rng.uniform(0.5, 1.5)):
            break
        faults += 1
        broker.kill9()
        time.sleep(rng.uniform(0.1, 0.5))
        broker.start()
    worker.join(200)
    assert not worker.is_alive(), "the consume-transform-produce loop hung"
    assert state["error"] is None, f"loop failed: {state['error']!r}"
    done, committed_txns, aborted_txns = state["done"], state["committed"], state["aborted"]
    assert done >= INPUTS, f"only {done} of {INPUTS} inputs committed before the deadline"
    assert faults >= 1, "the loop finished before any fault: make the workload longer"

    broker.restart()

    def read(isolation):
        c = Consumer({"bootstrap.servers": bs, "group.id": f"v-{uuid.uuid4().hex[:6]}",
                      "enable.auto.commit": False, "isolation.level": isolation,
                      "enable.partition.eof": True, "log_level": 2})
        c.assign([TopicPartition(dst, p, 0) for p in range(PARTITIONS)])
        values, eof, idle = [], set(), time.time()
        while len(eof) < PARTITIONS and time.time() - idle < 20:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                eof.add(m.partition())
                continue
            idle = time.time()
            values.append(m.value())
        c.close()
        return values

    values = read("read_committed")
    everything = read("read_uncommitted")
    uncommitted_total = len(everything)
    dupes = len(values) - len(set(values))
    missing = set(f"out-{i}".encode() for i in range(INPUTS)) - set(values)
    print(f"\nCTP-CHECK inputs={INPUTS} faults={faults} transactions committed={committed_txns} "
          f"failed/aborted={aborted_txns} output read_committed={len(values)} "
          f"(log incl. aborted={uncommitted_total}) duplicates={dupes} missing={len(missing)}")
    assert dupes == 0 and not missing
