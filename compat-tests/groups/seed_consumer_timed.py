"""Runs compat-tests/samples/seed_consumer.py unchanged (runpy, as __main__) and writes
timestamps to stderr, one line each: "SEEDT <event> <time.monotonic()>". CLOCK_MONOTONIC is
system-wide on Linux, so the parent test compares these with its own clock.

Events: interpreter (this file started), construct (KafkaConsumer(...) called), constructed
(it returned), assigned (the group gave the consumer partitions: on_partitions_assigned),
record (the sample's loop got a record; detail topic:partition:offset, stamped before the
sample prints it), closed.

The sample itself is untouched: kafka.KafkaConsumer is replaced by a subclass that stamps its
construction and adds a rebalance listener when the sample calls subscribe(). On SIGTERM the
consumer is closed (auto-commit, LeaveGroup), so the next run finds the group empty at once
instead of waiting out the dead member's session timeout.
"""

import os
import runpy
import signal
import sys
import time


def stamp(event, detail=""):
    sys.stderr.write(f"SEEDT {event} {time.monotonic():.6f} {detail}\n")
    sys.stderr.flush()


stamp("interpreter")

import kafka  # noqa: E402

SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "samples", "seed_consumer.py")
_consumers = []


class _StampAssignment(kafka.ConsumerRebalanceListener):
    def on_partitions_revoked(self, revoked):
        stamp("revoked", ",".join(f"{tp.topic}:{tp.partition}" for tp in revoked))

    def on_partitions_assigned(self, assigned):
        stamp("assigned", ",".join(f"{tp.topic}:{tp.partition}" for tp in assigned))


class TimedKafkaConsumer(kafka.KafkaConsumer):
    def __init__(self, *args, **kwargs):
        stamp("construct")
        super().__init__(*args, **kwargs)
        _consumers.append(self)
        stamp("constructed")

    def __next__(self):
        msg = super().__next__()
        stamp("record", f"{msg.topic}:{msg.partition}:{msg.offset}")
        return msg

    def subscribe(self, topics=(), pattern=None, listener=None):
        return super().subscribe(topics=topics, pattern=pattern, listener=listener or _StampAssignment())


def _terminate(signum, frame):
    raise SystemExit(0)


kafka.KafkaConsumer = TimedKafkaConsumer
signal.signal(signal.SIGTERM, _terminate)
try:
    runpy.run_path(SAMPLE, run_name="__main__")
finally:
    for c in _consumers:
        c.close()
    stamp("closed")
