"""Consumer-group members driven from a thread each, recording what they see.

KPMember (kafka-python KafkaConsumer) and CKMember (confluent-kafka Consumer) each own one
consumer, created, polled and closed on their own thread (neither client is meant to be shared
across threads). The test thread reads what they recorded: the records consumed (partition,
offset, key, value), each successful commit, the assignment after every poll, and (CKMember)
the rebalance callbacks.
"""

import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError as KPKafkaError
from kafka.structs import OffsetAndMetadata

from groups.util import ends_of  # noqa: F401 - re-exported

JOIN_TIMEOUT_S = 60


class _MemberThread(threading.Thread):
    def __init__(self, name):
        super().__init__(name=name, daemon=True)
        self.records = []          # (partition, offset, key, value, monotonic time)
        self.commits = []          # {partition: next offset}, each acknowledged commit
        self.commit_errors = []    # (exception repr, {partition: offset}) of failed commits
        self.assignments = []      # (monotonic time, frozenset(partitions)), on every change
        self.error = None          # an exception that ended the poll loop
        self.committing = True     # commit after every poll that returned records
        self.closed = threading.Event()
        self._stop_flag = threading.Event()

    @property
    def assignment(self):
        return self.assignments[-1][1] if self.assignments else frozenset()

    def _note_assignment(self, parts):
        parts = frozenset(parts)
        if parts != self.assignment or not self.assignments:
            self.assignments.append((time.monotonic(), parts))

    def committed_upto(self):
        """{partition: highest offset this member committed successfully}."""
        out = {}
        for c in self.commits:
            for p, o in c.items():
                out[p] = max(out.get(p, -1), o)
        return out

    def uncovered_records(self):
        """The (partition, offset) this member consumed but never covered by one of its own
        successful commits: the at-least-once window a successor may re-read."""
        upto = self.committed_upto()
        return {(p, o) for p, o, _, _, _ in self.records if o >= upto.get(p, -1)}

    def close(self, timeout=30):
        """Stops the poll loop; the thread closes its consumer and exits."""
        self._stop_flag.set()
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} did not close within {timeout} s"

    def check(self):
        if self.error is not None:
            raise AssertionError(f"{self.name} failed: {self.error!r}") from self.error


class KPMember(_MemberThread):
    """kafka-python KafkaConsumer subscribed to `topics` in `group`; manual commits (synchronous,
    explicit offsets) after each poll that returned records, while self.committing is set."""

    def __init__(self, name, bootstrap, topics, group, **config):
        super().__init__(name)
        self.config = dict(bootstrap_servers=bootstrap, group_id=group, client_id=name,
                           enable_auto_commit=False, auto_offset_reset="earliest",
                           heartbeat_interval_ms=500, session_timeout_ms=10000,
                           max_poll_records=50)
        self.config.update(config)
        self.topics = list(topics)
        self.close_autocommit = False

    def run(self):
        consumer = None
        try:
            # Topic metadata first, then subscribe, and polls of 1 s: kafka-python 3.0.12 loses
            # a join in flight when poll()'s timeout expires during a rebalance that the leader
            # started because topic metadata arrived after its first join (the member then
            # never applies its assignment and never heartbeats again). A client bug; with the
            # broker's default group_initial_rebalance_delay_ms=0 the first join is fast enough
            # to beat the topic metadata, which opens that window.
            consumer = KafkaConsumer(**self.config)
            for t in self.topics:
                consumer.partitions_for_topic(t)
            consumer.subscribe(self.topics)
            while not self._stop_flag.is_set():
                batch = consumer.poll(timeout_ms=1000)
                self._note_assignment(tp.partition for tp in consumer.assignment())
                offsets = {}
                for tp, msgs in batch.items():
                    for m in msgs:
                        self.records.append((m.partition, m.offset, m.key, m.value, time.monotonic()))
                    offsets[tp] = OffsetAndMetadata(msgs[-1].offset + 1, "", -1)
                if offsets and self.committing:
                    plain = {tp.partition: om.offset for tp, om in offsets.items()}
                    try:
                        consumer.commit(offsets)
                        self.commits.append(plain)
                    except KPKafkaError as e:
                        self.commit_errors.append((repr(e), plain))
        except Exception as e:  # noqa: BLE001 - reported by check()
            self.error = e
        finally:
            if consumer is not None:
                try:
                    consumer.close(autocommit=self.close_autocommit, timeout_ms=10000)
                except Exception as e:  # noqa: BLE001
                    self.error = self.error or e
            self.closed.set()


class CKMember(_MemberThread):
    """confluent-kafka Consumer subscribed to `topics`; synchronous commit of the consumed
    positions after each consume() that returned records. Rebalance callbacks are recorded in
    self.events as (monotonic time, 'assign'|'revoke'|'lost', sorted partitions)."""

    def __init__(self, name, bootstrap, topics, group, **config):
        super().__init__(name)
        self.conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500,
            "enable.partition.eof": False,
        }
        self.conf.update(config)
        self.topics = list(topics)
        self.events = []
        self.stats = []            # parsed statistics JSON (when statistics.interval.ms is set)
        self.member_id = None      # memberid() once assigned

    def _on_assign(self, consumer, parts):
        self.events.append((time.monotonic(), "assign", sorted(tp.partition for tp in parts)))

    def _on_revoke(self, consumer, parts):
        self.events.append((time.monotonic(), "revoke", sorted(tp.partition for tp in parts)))

    def _on_lost(self, consumer, parts):
        self.events.append((time.monotonic(), "lost", sorted(tp.partition for tp in parts)))

    def _on_stats(self, raw):
        import json
        self.stats.append(json.loads(raw))

    def rebalance_count(self):
        """librdkafka's own count of rebalances (cgrp.rebalance_cnt) in the newest statistics."""
        return self.stats[-1]["cgrp"]["rebalance_cnt"] if self.stats else None

    def run(self):
        consumer = None
        try:
            conf = dict(self.conf)
            if "statistics.interval.ms" in conf:
                conf["stats_cb"] = self._on_stats
            consumer = Consumer(conf)
            consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                               on_lost=self._on_lost)
            while not self._stop_flag.is_set():
                msgs = consumer.consume(num_messages=200, timeout=0.1)
                self._note_assignment(tp.partition for tp in consumer.assignment())
                if self.assignment and self.member_id is None:
                    self.member_id = consumer.memberid()
                got = {}
                for m in msgs:
                    if m.error():
                        if m.error().code() == KafkaError._PARTITION_EOF:
                            continue
                        raise KafkaException(m.error())
                    self.records.append((m.partition(), m.offset(), m.key(), m.value(), time.monotonic()))
                    got[m.partition()] = m.offset() + 1
                if got and self.committing:
                    try:
                        res = consumer.commit(asynchronous=False)
                        self.commits.append({tp.partition: tp.offset for tp in res
                                             if tp.error is None and tp.offset >= 0})
                    except KafkaException as e:
                        self.commit_errors.append((repr(e), got))
        except Exception as e:  # noqa: BLE001 - reported by check()
            self.error = e
        finally:
            if consumer is not None:
                try:
                    consumer.close()
                except Exception as e:  # noqa: BLE001
                    self.error = self.error or e
            self.closed.set()


def wait_assignments(members, expected, timeout=JOIN_TIMEOUT_S):
    """Waits until member i's assignment has expected[i] partitions (an int) or equals
    expected[i] (a set), the assignments are disjoint, and every member thread is healthy.
    Returns the assignments."""
    def state():
        return [m.assignment for m in members]

    def ok():
        for m in members:
            m.check()
        cur = state()
        for a, e in zip(cur, expected):
            if (isinstance(e, int) and len(a) != e) or (not isinstance(e, int) and a != frozenset(e)):
                return False
        seen = set()
        for a in cur:
            if seen & a:
                return False
            seen |= a
        return True

    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"assignments {[sorted(a) for a in state()]} never became {expected} "
                                 f"within {timeout} s (members {[m.name for m in members]})")
        time.sleep(0.05)
    return state()


def consumed_keys(members):
    """{(partition, offset): [(member name, key, value), ...]} over all members, in the order
    the reads happened."""
    reads = []
    for m in members:
        for p, o, k, v, t in list(m.records):
            reads.append((t, (p, o), (m.name, k, v)))
    out = {}
    for _, po, read in sorted(reads, key=lambda r: r[0]):
        out.setdefault(po, []).append(read)
    return out


def wait_consumed(members, produced, timeout=60):
    """Waits until every (partition, offset) in `produced` was consumed by some member."""
    def missing():
        got = consumed_keys(members)
        return [po for po in produced if po not in got]

    def done():
        for m in members:
            m.check()
        return not missing()

    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            miss = missing()
            raise AssertionError(f"{len(miss)} of {len(produced)} produced records never consumed "
                                 f"within {timeout} s, e.g. {sorted(miss)[:10]}")
        time.sleep(0.05)


def wait_committed(members, targets, timeout=30):
    """Waits until, for every partition p in targets, some member committed an offset >= targets[p]."""
    def done():
        best = {}
        for m in members:
            for p, o in m.committed_upto().items():
                best[p] = max(best.get(p, -1), o)
        return all(best.get(p, -1) >= o for p, o in targets.items())

    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"commits never reached {targets}: "
                                 f"{ {m.name: m.committed_upto() for m in members} }")
        time.sleep(0.05)


__all__ = ["KPMember", "CKMember", "wait_assignments", "consumed_keys", "wait_consumed",
           "wait_committed", "ends_of", "TopicPartition"]
