"""kill -9 under load: an idempotent librdkafka producer keeps sending while the broker is
SIGKILLed and restarted on the same data dir several times. Nothing acknowledged may be lost
(kill -9 keeps the page cache, so this holds for every flush policy), and the idempotent
producer's retries across restarts must not create duplicates or reorder records.

OTTLA_CRASH_SEED overrides the fixed seed of the kill schedule; OTTLA_CRASH_ROUNDS the number
of kills; RDK_DEBUG sets the producer's librdkafka `debug` contexts.
"""

import logging
import os
import random
import threading
import time

from confluent_kafka import Producer

import crashkit

PARTITIONS = 3
ROUNDS = int(os.environ.get("OTTLA_CRASH_ROUNDS", "5"))
SEED = int(os.environ.get("OTTLA_CRASH_SEED", "20240611"))
LOAD_S = (0.3, 1.5)      # load between kills
PAUSE_S = (0.05, 0.5)    # broker down between kill and restart
TAIL_LOAD_S = 0.5        # load after the last restart, before the producer stops
FLUSH_TIMEOUT_S = 90
CLIENT_LOG = logging.getLogger("crash.rdkafka")
CLIENT_LOG.setLevel(logging.DEBUG)
BURST = 200              # records produced between short sleeps of the producer thread


class Load:
    """One idempotent producer in its own thread, sending b"<seq>" to partition seq % 3 (key
    b"k<partition>") and recording every delivery report."""

    def __init__(self, bootstrap, topic):
        self.topic = topic
        conf = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 60000,
            # come back quickly after each restart (the default backoff grows to 10 s)
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            # librdkafka re-bootstraps when every broker is down (KIP-1102): it forgets broker 1,
            # and then waited seconds for new metadata, so later rounds sent nothing; keep it
            "metadata.recovery.strategy": "none",
            "error_cb": self._on_error,
            # client log lines (disconnects at each kill) go to logging: pytest shows them on failure
            "logger": CLIENT_LOG,
        }
        if os.environ.get("RDK_DEBUG"):  # e.g. RDK_DEBUG=broker,eos,protocol
            conf["debug"] = os.environ["RDK_DEBUG"]
        self.producer = Producer(conf)
        self.lock = threading.Lock()
        self.sent = 0
        self.acked = {}      # value -> (partition, offset)
        self.failed = {}     # value -> error
        self.fatal = []      # fatal client errors (the idempotent producer gave up)
        self.exc = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crash-load", daemon=True)

    def _on_error(self, err):
        with self.lock:
            if err.fatal():
                self.fatal.append(str(err))

    def _on_delivery(self, err, msg):
        with self.lock:
            if err is not None:
                self.failed[msg.value()] = str(err)
            else:
                self.acked[msg.value()] = (msg.partition(), msg.offset())

    def _run(self):
        seq = 0
        try:
            while not self._stop.is_set():
                p = seq % PARTITIONS
                try:
                    self.producer.produce(self.topic, key=b"k%d" % p, value=b"%d" % seq, partition=p,
                                          on_delivery=self._on_delivery)
                except BufferError:  # local queue full while the broker is down
                    self.producer.poll(0.05)
                    continue
                seq += 1
                with self.lock:
                    self.sent = seq
                self.producer.poll(0)
                if seq % BURST == 0:
                    time.sleep(0.002)  # leave the broker some CPU on a 2-core machine
        except BaseException as e:  # surfaced by the test
            self.exc = e

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "producer thread did not stop"

    def check(self):
        with self.lock:
            fatal, exc = list(self.fatal), self.exc
        assert not fatal and exc is None, (f"the idempotent producer failed: fatal client errors {fatal}, "
                                           f"producer thread exception {exc!r}")

    def counts(self):
        with self.lock:
            return self.sent, len(self.acked), len(self.failed)


def test_kill9_rounds(brokers, topic, fsync):
    rng = random.Random(SEED)
    print(f"\nkill -9 schedule seed {SEED} (set OTTLA_CRASH_SEED to change), {ROUNDS} rounds")
    broker = brokers(fsync=fsync)
    broker.start()
    crashkit.create_topic(broker.bootstrap, topic, PARTITIONS)

    load = Load(broker.bootstrap, topic)
    load.start()
    progressed = 0        # rounds in which records were acknowledged (the producer got through)
    unacked_at_kill = 0   # records sent but not yet acknowledged when the broker was killed
    last_acked = 0
    try:
        for r in range(ROUNDS):
            load_s, pause_s = rng.uniform(*LOAD_S), rng.uniform(*PAUSE_S)
            time.sleep(load_s)
            broker.kill9()
            sent, acked, failed = load.counts()
            progressed += acked > last_acked
            unacked_at_kill += sent - acked - failed
            last_acked = acked
            print(f"round {r + 1}: killed after {load_s:.2f} s of load (sent {sent}, acked {acked}, "
                  f"failed {failed}); restarting after {pause_s:.2f} s")
            time.sleep(pause_s)
            broker.start()
            load.check()
        time.sleep(TAIL_LOAD_S)
    finally:
        load.stop()
    load.check()
    remaining = load.producer.flush(FLUSH_TIMEOUT_S)
    assert remaining == 0, f"{remaining} records still undelivered {FLUSH_TIMEOUT_S} s after the last restart"

    sent, n_acked, n_failed = load.counts()
    acked, failed = dict(load.acked), dict(load.failed)
    truncations = broker.full_log().count("truncated")

    # A graceful stop and one more (clean) start, then read everything back.
    broker.stop()
    broker.start()
    highs, got = crashkit.read_all(broker.bootstrap, topic, range(PARTITIONS))
    recovered = sum(len(v) for v in got.values())
    print(f"CRASH-TEST fsync={fsync or 'default'} seed={SEED} rounds={ROUNDS} sent={sent} "
          f"acknowledged={n_acked} failed={n_failed} recovered={recovered} "
          f"rounds-with-acks={progressed} unacked-at-kills={unacked_at_kill} truncations-logged={truncations}")

    assert n_acked + n_failed == sent, f"{sent - n_acked - n_failed} records have no delivery report"
    assert n_acked > 0, "nothing was acknowledged"
    assert not failed, (f"{n_failed} deliveries failed although message.timeout.ms spans the restarts; "
                        f"first: {sorted(failed.items(), key=lambda kv: int(kv[0]))[:5]}")

    # Per partition: offsets dense from 0 up to the high watermark, values of this partition in
    # send order, keys as sent.
    where = {}  # value -> [(partition, offset)]
    for p in range(PARTITIONS):
        recs = got[p]
        offsets = [o for o, _, _ in recs]
        assert offsets == list(range(highs[p])), (
            f"partition {p}: offsets not dense from 0 to high watermark {highs[p]}: "
            f"{len(offsets)} records, first gap/jump near "
            f"{next((i for i, o in enumerate(offsets) if o != i), None)}")
        seqs = [int(v) for _, _, v in recs]
        bad_order = [(recs[i][0], seqs[i], seqs[i + 1]) for i in range(len(seqs) - 1) if seqs[i + 1] <= seqs[i]]
        assert not bad_order, f"partition {p}: values out of send order at (offset, value, next): {bad_order[:10]}"
        wrong_place = [(o, k, v) for o, k, v in recs if int(v) % PARTITIONS != p or k != b"k%d" % p]
        assert not wrong_place, f"partition {p}: records with another partition's key/value: {wrong_place[:10]}"
        for o, _, v in recs:
            where.setdefault(v, []).append((p, o))

    dups = {v: locs for v, locs in where.items() if len(locs) > 1}
    assert not dups, f"{len(dups)} values stored more than once, e.g. {sorted(dups.items())[:10]}"
    phantom = [v for v in where if int(v) >= sent]
    assert not phantom, f"values never sent are in the log: {phantom[:10]}"
    lost = sorted((v for v in acked if v not in where), key=int)
    assert not lost, (f"{len(lost)} acknowledged records are missing, e.g. "
                      f"{[(v, acked[v]) for v in lost[:10]]}")
    moved = [(v, acked[v], where[v][0]) for v in acked if where[v][0] != acked[v]]
    assert not moved, f"{len(moved)} acknowledged (partition, offset) hold another value, e.g. {moved[:10]}"
    unacked_stored = [v for v in where if v not in acked]
    assert not unacked_stored, f"records with no acknowledgement are stored: {unacked_stored[:10]}"
