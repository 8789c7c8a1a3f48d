"""A checker in the style of Jepsen's Kafka test, for transactions under crash faults.

Several transactional producers (confluent-kafka) run short transactions over a 3-partition
topic, committing most and aborting some, while the broker is SIGKILLed and restarted. Every
transaction's outcome is recorded as the client saw it: committed, aborted, or unknown (the
call failed during a fault). Afterwards everything is read back with read_committed and
read_uncommitted consumers, and the history is checked for:

  lost         a record of a committed transaction missing from read_committed
  duplicate    a value seen twice (either isolation level)
  aborted-read a record of an aborted transaction visible to read_committed
  split        a transaction partly visible to read_committed (not atomic)
  offset-clash two different values at one (partition, offset) between the two reads
  order        a producer's committed transactions out of order within a partition
  uncommitted  read_committed showing a transaction whose producer died inside it (the next
               init_transactions with the same id must have aborted it)

The counts are printed on a line starting with TXN-CHECKER.
"""

import os
import random
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

import crashkit

SEED = int(os.environ.get("OTTLA_TXN_SEED", "20261125"))
FAULTS = int(os.environ.get("OTTLA_TXN_FAULTS", "4"))
PRODUCERS = 3
PARTITIONS = 3


class Worker(threading.Thread):
    def __init__(self, idx, bootstrap, topic, stop, rng):
        super().__init__(daemon=True)
        self.idx, self.bootstrap, self.topic, self.stop_event = idx, bootstrap, topic, stop
        self.rng = rng
        self.tid = f"checker-{uuid.uuid4().hex[:6]}-{idx}"
        self.history = []  # (txn number, [(partition, value)], outcome)
        self.error = None

    def producer(self):
        p = Producer({"bootstrap.servers": self.bootstrap, "transactional.id": self.tid,
                      "linger.ms": 2, "transaction.timeout.ms": 10000,
                      "message.timeout.ms": 10000, "metadata.recovery.strategy": "none",
                      "log_level": 2})
        while not self.stop_event.is_set():
            try:
                p.init_transactions(15)
                return p
            except KafkaException as e:
                if e.args[0].fatal():
                    raise
                time.sleep(0.2)
        return p

    def run(self):
        try:
            p = self.producer()
            n = 0
            while not self.stop_event.is_set():
                n += 1
                records = [(self.rng.randrange(PARTITIONS), f"{self.idx}:{n}:{i}".encode())
                           for i in range(self.rng.randint(1, 5))]
                abort = self.rng.random() < 0.2
                outcome = self.one(p, records, abort)
                self.history.append((n, records, outcome))
                if outcome == "fatal":
                    p = self.producer()
        except Exception as e:  # surfaced by the test
            self.error = e

    def one(self, p, records, abort):
        try:
            p.begin_transaction()
            for part, value in records:
                p.produce(self.topic, value=value, partition=part)
            if abort:
                # Deliver first so that aborted data really is in the log (an abort alone
                # purges what is still queued in the client).
                p.flush(15)
                p.abort_transaction(15)
                return "aborted"
            p.commit_transaction(15)
            return "committed"
        except KafkaException as e:
            err = e.args[0]
            if err.fatal():
                return "fatal"
            if err.txn_requires_abort():
                try:
                    p.abort_transaction(15)
                    return "aborted"
                except KafkaException:
                    return "unknown"
            return "unknown"


def read(bootstrap, topic, isolation):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chk-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "isolation.level": isolation,
                  "enable.partition.eof": True})
    out = {}
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        eof, idle = set(), time.time()
        while len(eof) < PARTITIONS and time.time() - idle < 20:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                raise KafkaException(m.error())
            idle = time.time()
            out[(m.partition(), m.offset())] = m.value()
    finally:
        c.close()
    return out


def test_transactions_under_kill9(brokers, topic):
    rng = random.Random(SEED)
    broker = brokers(fsync="always")
    broker.start()
    crashkit.create_topic(broker.bootstrap, topic, PARTITIONS)
    stop = threading.Event()
    workers = [Worker(i, broker.bootstrap, topic, stop, random.Random(SEED + i)) for i in range(PRODUCERS)]
    for w in workers:
        w.start()
    for _ in range(FAULTS):
        time.sleep(rng.uniform(1.0, 2.5))
        broker.kill9()
        time.sleep(rng.uniform(0.1, 0.6))
        broker.start()
    time.sleep(2.0)
    stop.set()
    for w in workers:
        w.join(60)
        assert not w.is_alive(), "a worker hung"
        assert w.error is None, f"worker {w.idx} failed: {w.error!r}"
    # Transactions left open by a fault are aborted by the coordinator's timeout (10 s) or
    # by a later init; wait past the timeout so that nothing is still pending.
    time.sleep(11)
    broker.restart()

    committed_read = read(broker.bootstrap, topic, "read_committed")
    uncommitted_read = read(broker.bootstrap, topic, "read_uncommitted")

    outcome_of, txn_of, records_of = {}, {}, {}
    for w in workers:
        for n, records, outcome in w.history:
            key = (w.idx, n)
            outcome_of[key] = outcome
            records_of[key] = records
            for part, value in records:
                txn_of[value] = key
    visible = {}
    for (part, offset), value in committed_read.items():
        visible.setdefault(value, []).append((part, offset))
    anomalies = {k: 0 for k in ("lost", "duplicate", "aborted-read", "split", "offset-clash",
                                "order", "uncommitted")}
    examples = {}

    def note(kind, detail):
        anomalies[kind] += 1
        examples.setdefault(kind, detail)

    for value, places in visible.items():
        if len(places) > 1:
            note("duplicate", (value, places))
    seen_uncommitted = {}
    for place, value in uncommitted_read.items():
        if value in seen_uncommitted:
            note("duplicate", (value, [seen_uncommitted[value], place]))
        seen_uncommitted[value] = place
    for place, value in committed_read.items():
        if place in uncommitted_read and uncommitted_read[place] != value:
            note("offset-clash", (place, value, uncommitted_read[place]))
    for key, records in records_of.items():
        shown = [v for _, v in records if v in visible]
        outcome = outcome_of[key]
        if outcome == "committed" and len(shown) != len(records):
            note("lost", (key, len(records) - len(shown)))
        if outcome == "aborted" and shown:
            note("aborted-read", (key, shown))
        if 0 < len(shown) < len(records):
            note("split", (key, shown))
        if outcome == "fatal" and shown:
            # The producer died in this transaction; its successor's init aborted it.
            note("uncommitted", (key, shown))
    # Per producer and partition, committed transactions appear in transaction order.
    for w in workers:
        for part in range(PARTITIONS):
            offsets = [(visible[v][0][1], n) for n, records, o in w.history
                       for p, v in records if p == part and v in visible]
            by_offset = [n for _, n in sorted(offsets)]
            if by_offset != sorted(by_offset):
                note("order", (w.idx, part))

    counts = {o: sum(1 for x in outcome_of.values() if x == o)
              for o in ("committed", "aborted", "unknown", "fatal")}
    records_total = sum(len(r) for r in records_of.values())
    print(f"\nTXN-CHECKER seed={SEED} faults={FAULTS} producers={PRODUCERS} "
          f"transactions={len(outcome_of)} records={records_total} "
          + " ".join(f"{k}={v}" for k, v in counts.items())
          + f" read_committed={len(committed_read)} read_uncommitted={len(uncommitted_read)} "
          + "anomalies: " + " ".join(f"{k}={v}" for k, v in anomalies.items()))
    assert counts["committed"] > 50, "the workload hardly ran"
    assert len(uncommitted_read) > len(committed_read), "aborted data reached the log"
    assert sum(anomalies.values()) == 0, f"anomalies: {anomalies}, examples: {examples}"
