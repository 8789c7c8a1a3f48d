"""KIP-227 incremental fetch sessions with real clients, on a 1000-partition topic.

kafka-python 3.0.12 uses sessions by default (Fetch v12 at most, topic names, no ids) and
has a switch to turn them off; librdkafka never uses them (always SessionId 0,
SessionEpoch -1). So:

- test_kafka_python_session_round_trip: sessions on; every record comes back exactly once,
  in order, byte for byte, *and* the consumer really ran an incremental session (a non-zero
  session id from a full fetch, then incremental fetches, epoch > 0, answered without an
  error and without an "invalid" response, holding only the partitions that changed, and
  never with records from before the offset the session holds);
- test_kafka_python_session_forget_and_readd: poll(max_records=7) leaves records buffered,
  and kafka-python then leaves those partitions out of its next fetch: in a session they
  are forgotten and re-added (with new offsets) over and over; the same checks;
- test_kafka_python_session_pause_resume: paused partitions are forgotten in the session
  (ForgottenTopicsData), get no data while paused, are re-added on resume and their records
  arrive;
- test_kafka_python_sessionless_round_trip: the same data check with
  enable_incremental_fetch_sessions=False (SessionId 0, SessionEpoch -1 on every fetch);
- test_confluent_kafka_round_trip: librdkafka on the same kind of topic (the sessionless
  path, which must not change).

How the session is observed: kafka-python's fetcher creates one FetchSessionHandler per
broker through the module-global name kafka.consumer.fetcher.FetchSessionHandler; the tests
swap in a subclass that records every request it builds (session id, epoch, partitions sent
and forgotten) and every response it handles (error code, session id, partitions, and whether
kafka-python accepted it). The data checks come first in each test, so against a broker
without sessions (which answers every full fetch with session id 0) the data checks pass and
only the session assertion fails, saying so.

Runs against the broker at OTTLA_BOOTSTRAP like the rest of the suite; about 15-20 s.
"""

import itertools
import random
import statistics
import threading
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
import kafka.consumer.fetcher as kafka_fetcher

from conftest import create_topic

PARTITIONS = 1000


# --- recording kafka-python's session handler -------------------------------------------

class SessionRecorder:
    """What every FetchSessionHandler of one consumer did, in order."""

    def __init__(self):
        self.events = []  # dicts, "kind" = "request" | "response" | "error"
        self.phase = "start"
        self.lock = threading.Lock()

    def add(self, **event):
        event.setdefault("phase", self.phase)
        event["t"] = time.monotonic()
        with self.lock:
            self.events.append(event)

    def requests(self, phase=None):
        return [e for e in self.events if e["kind"] == "request" and phase in (None, e["phase"])]

    def responses(self, phase=None):
        return [e for e in self.events if e["kind"] == "response" and phase in (None, e["phase"])]

    def summary(self):
        reqs, resps = self.requests(), self.responses()
        return (f"{len(reqs)} requests (epochs {sorted({r['epoch'] for r in reqs})[:10]}), "
                f"{len(resps)} responses (session ids {sorted({r['resp_session_id'] for r in resps})[:10]}, "
                f"error codes {sorted({r['error_code'] for r in resps})}, "
                f"rejected by kafka-python {sum(not r['accepted'] for r in resps)})")


def first_batch_last_offset(records):
    """Last offset of the first record batch (v2: baseOffset i64, then lastOffsetDelta i32 at
    byte 23), or None without records."""
    if records is None or len(records) < 27:
        return None
    b = bytes(records[:27])
    return int.from_bytes(b[0:8], "big", signed=True) + int.from_bytes(b[23:27], "big", signed=True)


def recording_handler_class(recorder):
    base = kafka_fetcher.FetchSessionHandler

    class RecordingFetchSessionHandler(base):
        def build_next(self, next_partitions):
            data = super().build_next(next_partitions)
            self.request_phase = recorder.phase  # a response belongs to its request's phase
            recorder.add(kind="request", node=self.node_id, session_id=data.id, epoch=data.epoch,
                         sent=set(data._to_send), forgotten=set(data._to_forget),
                         wanted=set(next_partitions))
            return data

        def handle_response(self, response):
            # next_metadata is still that of the request this answers (one fetch in flight
            # per broker); handle_response moves it on.
            asked = self.next_metadata
            session_size = len(self.session_partitions)
            # the offsets the session holds for this fetch (the client's own positions)
            offsets = {tp: part.fetch_offset for tp, part in self.session_partitions.items()}
            accepted = super().handle_response(response)
            tps, stale = set(), []
            for t in response.responses:
                for p in t.partitions:
                    tp = TopicPartition(t.topic, p.partition_index)
                    tps.add(tp)
                    last = first_batch_last_offset(p.records)
                    if last is not None and tp in offsets and last < offsets[tp]:
                        stale.append((tp.partition, offsets[tp], last))
            recorder.add(kind="response", phase=getattr(self, "request_phase", recorder.phase),
                         node=self.node_id, session_id=asked.session_id,
                         epoch=asked.epoch, api_version=response.API_VERSION,
                         error_code=response.error_code, resp_session_id=response.session_id,
                         partitions=tps, session_size=session_size, accepted=accepted,
                         stale=stale)
            return accepted

        def handle_error(self, exception):
            recorder.add(kind="error", node=self.node_id, error=repr(exception))
            return super().handle_error(exception)

    return RecordingFetchSessionHandler


@pytest.fixture
def session_recorder(monkeypatch):
    recorder = SessionRecorder()
    monkeypatch.setattr(kafka_fetcher, "FetchSessionHandler", recording_handler_class(recorder))
    return recorder


def assert_used_sessions(rec, changed_partitions):
    """The consumer created a session and ran incremental fetches in it without a hitch.

    Fails against a broker without KIP-227 sessions: that one answers every full fetch
    (epoch 0) with session id 0, so kafka-python never sends an incremental fetch."""
    resps = rec.responses()
    assert resps, "no fetch response reached the session handler"
    # Kafka's ids are random non-zero int32s; kafka-python reads -1 as THROTTLED_SESSION_ID
    # (an empty answer under a quota), never as a session.
    created = [r for r in resps
               if r["epoch"] == 0 and r["error_code"] == 0 and r["resp_session_id"] not in (0, -1)]
    assert created, (
        "the broker never created a fetch session: every full fetch (session_id 0, epoch 0) was "
        f"answered with session_id 0 (a broker without KIP-227 sessions); {rec.summary()}")
    errors = [r for r in resps if r["error_code"] != 0]
    assert not errors, (
        f"fetch-level errors {[(r['session_id'], r['epoch'], r['error_code']) for r in errors][:10]} "
        f"(70 = FETCH_SESSION_ID_NOT_FOUND, 71 = INVALID_FETCH_SESSION_EPOCH); {rec.summary()}")
    rejected = [r for r in resps if not r["accepted"]]
    assert not rejected, (
        "kafka-python rejected responses as invalid (a full response must list exactly the "
        "requested partitions, an incremental one only session partitions): "
        f"{[(r['session_id'], r['epoch'], len(r['partitions']), r['session_size']) for r in rejected][:10]}")
    stale = [(r["session_id"], r["epoch"], r["stale"]) for r in resps if r["stale"]]
    assert not stale, (
        "records from before the fetch offset the session should hold (a re-sent partition's "
        f"new fetch offset not taken?): (session, epoch, [(partition, fetch offset, last offset "
        f"of the first batch)]) {stale[:5]}")
    net_errors = [e for e in rec.events if e["kind"] == "error"]
    assert not net_errors, f"fetches failed: {[e['error'] for e in net_errors][:5]}"
    # One session per broker the consumer fetches from (a cluster's leaders each keep their
    # own), created once or twice, not over and over.
    per_node = {}
    for r in created:
        per_node.setdefault(r["node"], set()).add(r["resp_session_id"])
    assert all(len(ids) <= 2 for ids in per_node.values()), (
        f"sessions created over and over: { {n: sorted(i) for n, i in per_node.items()} }; {rec.summary()}")

    incremental = [r for r in resps if r["epoch"] > 0]
    assert len(incremental) >= 5, f"only {len(incremental)} incremental fetches; {rec.summary()}"
    for r in incremental:
        assert r["resp_session_id"] == r["session_id"], (
            f"incremental fetch of session {r['session_id']} epoch {r['epoch']} answered with "
            f"session id {r['resp_session_id']}")
    assert max(r["api_version"] for r in resps) >= 7
    # An incremental response carries only partitions with news (records, a moved high
    # watermark or log start, an error) or just added to the session; the rest are implied.
    sizes = [len(r["partitions"]) for r in incremental]
    assert statistics.median(sizes) <= changed_partitions, (
        f"incremental responses are not incremental: partitions per response {sizes[:20]}..., "
        f"at most {changed_partitions} partitions ever changed")
    assert min(sizes) < PARTITIONS - changed_partitions


# --- producing and consuming -------------------------------------------------------------

def make_records(rng, count, partitions, tag):
    """(partition, key, value) with awkward bytes: empty and None keys, zero bytes, 0-600 B."""
    out = []
    for i in range(count):
        p = rng.choice(partitions)
        key = None if i % 41 == 0 else (b"" if i % 43 == 0 else f"{tag}-{i}".encode() + bytes([0, 255]))
        value = b"" if i % 37 == 0 else f"{tag}:{p}:{i}:".encode() + rng.randbytes(rng.randrange(600))
        out.append((p, key, value))
    return out


class RoundProducer(threading.Thread):
    """Sends rounds of records (lists of (partition, key, value)) with a pause between
    rounds, while the test's thread polls; `sent` maps partition -> [(offset, key, value)]."""

    def __init__(self, bootstrap, topic, rounds, gap_s=0.3):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.rounds, self.gap_s = bootstrap, topic, rounds, gap_s
        self.sent = {}
        self.error = None
        self.finished = threading.Event()

    def run(self):
        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks="all")
            try:
                for records in self.rounds:
                    futures = [(k, v, producer.send(self.topic, key=k, value=v, partition=p))
                               for p, k, v in records]
                    producer.flush(timeout=20)
                    for k, v, fut in futures:
                        md = fut.get(timeout=10)
                        self.sent.setdefault(md.partition, []).append((md.offset, k, v))
                    time.sleep(self.gap_s)
            finally:
                producer.close(timeout=5)
        except Exception as e:  # reported by the test's thread
            self.error = e
        finally:
            self.finished.set()

    def total(self):
        return sum(len(v) for v in self.sent.values())


def poll_into(consumer, got, timeout_ms=200, max_records=5000):
    for tp, msgs in consumer.poll(timeout_ms=timeout_ms, max_records=max_records).items():
        got.setdefault(tp.partition, []).extend((m.offset, m.key, m.value) for m in msgs)
    return got


def count(got):
    return sum(len(v) for v in got.values())


def consume_while_producing(consumer, producer, timeout_s=25, max_records=5000):
    """Polls until the producer is done and everything it sent came back, then a little
    longer so duplicates would show."""
    got = {}
    producer.start()
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        poll_into(consumer, got, max_records=max_records)
        if producer.finished.is_set() and count(got) >= producer.total():
            break
    producer.join(10)
    assert producer.error is None, f"producer failed: {producer.error!r}"
    for _ in range(3):
        poll_into(consumer, got, max_records=max_records)
    return got


def assert_same(sent, got, what=""):
    """Exactly once, in offset order per partition, keys and values byte for byte."""
    assert set(got) <= set(sent), f"{what}records from partitions never produced to: {set(got) - set(sent)}"
    missing = {p: len(v) - len(got.get(p, [])) for p, v in sent.items() if len(got.get(p, [])) < len(v)}
    assert not missing, (f"{what}{sum(missing.values())} of {count(sent)} records missing "
                         f"(partition: count) {dict(list(missing.items())[:10])}")
    for p, records in sent.items():
        records = sorted(records)
        assert [r[0] for r in records] == list(range(len(records))), f"partition {p}: offsets not dense"
        offsets = [r[0] for r in got[p]]
        assert offsets == sorted(set(offsets)), f"{what}partition {p}: duplicates or out of order: {offsets[:50]}"
        assert got[p] == records, f"{what}partition {p} differs"


def kafka_python_consumer(bootstrap, **kw):
    return KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         auto_offset_reset="earliest", fetch_max_wait_ms=200,
                         request_timeout_ms=10000, **kw)


def assign_all(consumer, topic):
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    return tps


def data_round_trip(bootstrap, topic, seed, max_records=5000, **consumer_kw):
    """1000 partitions assigned, 600 records in 5 rounds spread over 40 of them."""
    create_topic(bootstrap, topic, partitions=PARTITIONS)
    rng = random.Random(seed)
    subset = rng.sample(range(PARTITIONS), 40)
    rounds = [make_records(rng, 120, rng.sample(subset, 12), f"r{i}") for i in range(5)]
    consumer = kafka_python_consumer(bootstrap, **consumer_kw)
    try:
        assign_all(consumer, topic)
        # a few fetches before the first record, so the session exists and is in use
        for _ in range(3):
            assert not consumer.poll(timeout_ms=200)
        producer = RoundProducer(bootstrap, topic, rounds)
        got = consume_while_producing(consumer, producer, max_records=max_records)
        assert_same(producer.sent, got)
        assert count(producer.sent) == 600
        return consumer, len({p for r in rounds for p, _, _ in r})
    except BaseException:
        consumer.close()
        raise


# --- the tests ----------------------------------------------------------------------------

def test_kafka_python_session_round_trip(bootstrap, topic_name, session_recorder):
    consumer, changed = data_round_trip(bootstrap, topic_name, seed=227)
    try:
        assert consumer.config["enable_incremental_fetch_sessions"] is True
        assert consumer._fetcher._session_handlers, "kafka-python kept no session handler"
        assert_used_sessions(session_recorder, changed)
        # the handler ends the run in an incremental session (next fetch: epoch > 0)
        handler = next(iter(consumer._fetcher._session_handlers.values()))
        assert handler.next_metadata.session_id != 0 and handler.next_metadata.epoch > 0, (
            f"session state at the end: id {handler.next_metadata.session_id} "
            f"epoch {handler.next_metadata.epoch}")
    finally:
        consumer.close()


def test_kafka_python_session_forget_and_readd(bootstrap, topic_name, session_recorder):
    """poll(max_records=7) leaves records buffered; kafka-python leaves a partition with
    buffered records out of its next fetch, so in a session it is forgotten and re-added
    (with its new offset) fetch after fetch."""
    consumer, changed = data_round_trip(bootstrap, topic_name, seed=70, max_records=7)
    try:
        assert_used_sessions(session_recorder, changed)
        incremental = [r for r in session_recorder.requests() if r["epoch"] > 0]
        forgotten = set().union(*(r["forgotten"] for r in incremental))
        readded = set().union(*(r["sent"] for r in incremental)) & forgotten
        assert forgotten, "no partition was forgotten: the buffering did not happen"
        assert readded, "no forgotten partition was re-added in a later incremental fetch"
    finally:
        consumer.close()


def test_kafka_python_session_pause_resume(bootstrap, topic_name, session_recorder):
    create_topic(bootstrap, topic_name, partitions=PARTITIONS)
    rng = random.Random(392)
    chosen = rng.sample(range(PARTITIONS), 30)
    paused, running = chosen[:10], chosen[10:]
    rec = session_recorder
    consumer = kafka_python_consumer(bootstrap)
    try:
        assign_all(consumer, topic_name)
        # fetch until the session is in use (an incremental fetch answered), 5 s at most: on a
        # broker without sessions this just waits, and the session assertions below fail
        deadline = time.time() + 5
        for i in itertools.count():
            assert not consumer.poll(timeout_ms=200)
            in_use = any(r["epoch"] > 0 and r["accepted"] for r in rec.responses())
            if i >= 4 and (in_use or time.time() > deadline):
                break

        rec.phase = "paused"
        paused_tps = {TopicPartition(topic_name, p) for p in paused}
        consumer.pause(*paused_tps)
        for _ in range(3):
            assert not consumer.poll(timeout_ms=200)
        rounds = [make_records(rng, 100, paused + running, f"p{i}") for i in range(2)]
        producer = RoundProducer(bootstrap, topic_name, rounds, gap_s=0.1)
        got = {}
        producer.start()
        deadline = time.time() + 20
        while time.time() < deadline:
            poll_into(consumer, got)
            if producer.finished.is_set():
                want = sum(len(v) for p, v in producer.sent.items() if p in running)
                if sum(len(got.get(p, [])) for p in running) >= want:
                    break
        producer.join(10)
        assert producer.error is None, f"producer failed: {producer.error!r}"
        for _ in range(3):  # several fetches while paused, with records waiting there
            poll_into(consumer, got)
        assert not set(got) & set(paused), "records of paused partitions were returned by poll()"
        assert_same({p: v for p, v in producer.sent.items() if p in running}, got, "while paused: ")
        assert set(producer.sent) & set(paused), "nothing was produced to the paused partitions"

        rec.phase = "resumed"
        consumer.resume(*paused_tps)
        deadline = time.time() + 15
        while time.time() < deadline and count(got) < producer.total():
            poll_into(consumer, got)
        for _ in range(3):
            poll_into(consumer, got)
        assert_same(producer.sent, got, "after resume: ")

        # Now the session side: the paused partitions left the session and came back.
        changed = len(paused) + len(running)
        assert_used_sessions(rec, changed)
        paused_reqs = [r for r in rec.requests("paused")]
        assert all(not (r["wanted"] & paused_tps) for r in paused_reqs)
        forgotten = set().union(*(r["forgotten"] for r in paused_reqs if r["epoch"] > 0))
        assert paused_tps <= forgotten, (
            f"paused partitions not sent as forgotten in an incremental fetch: "
            f"{sorted(tp.partition for tp in paused_tps - forgotten)}")
        leaked = [r for r in rec.responses("paused") if r["partitions"] & paused_tps]
        assert not leaked, ("the broker answered for forgotten (paused) partitions: "
                            f"{[sorted(tp.partition for tp in r['partitions'] & paused_tps) for r in leaked][:5]}")
        readded = set().union(*(r["sent"] for r in rec.requests("resumed") if r["epoch"] > 0))
        assert paused_tps <= readded, "resumed partitions were not re-added in an incremental fetch"
        answered = [r for r in rec.responses("resumed") if r["epoch"] > 0 and r["partitions"] & paused_tps]
        assert answered, "no incremental response carried the resumed partitions"
    finally:
        consumer.close()


def test_kafka_python_sessionless_round_trip(bootstrap, topic_name, session_recorder):
    consumer, _ = data_round_trip(bootstrap, topic_name, seed=12,
                                  enable_incremental_fetch_sessions=False)
    try:
        # no handler: every fetch was FetchMetadata.LEGACY (session_id 0, epoch -1)
        assert consumer._fetcher._session_handlers == {}
        assert session_recorder.events == []
    finally:
        consumer.close()


def test_confluent_kafka_round_trip(bootstrap, topic_name):
    from confluent_kafka import Consumer, KafkaError, KafkaException
    from confluent_kafka import TopicPartition as CTopicPartition

    create_topic(bootstrap, topic_name, partitions=PARTITIONS)
    rng = random.Random(16)
    subset = rng.sample(range(PARTITIONS), 40)
    rounds = [make_records(rng, 120, rng.sample(subset, 12), f"c{i}") for i in range(5)]
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"unused-{uuid.uuid4().hex[:6]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.wait.max.ms": 200,
    })
    try:
        c.assign([CTopicPartition(topic_name, p, 0) for p in range(PARTITIONS)])
        got = {}

        def poll():
            for m in c.consume(1000, timeout=0.2):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(m.error())
                got.setdefault(m.partition(), []).append((m.offset(), m.key(), m.value()))

        producer = RoundProducer(bootstrap, topic_name, rounds)
        producer.start()
        deadline = time.time() + 25
        while time.time() < deadline:
            poll()
            if producer.finished.is_set() and count(got) >= producer.total():
                break
        producer.join(10)
        assert producer.error is None, f"producer failed: {producer.error!r}"
        for _ in range(3):
            poll()
        assert_same(producer.sent, got)  # null and empty keys stay apart in librdkafka too
        assert count(producer.sent) == 600
    finally:
        c.close()
