"""Rebalance timing with real kafka-python consumers against a running broker.

  python benches/group_rebalance.py [BOOTSTRAP] [--heartbeat-ms N]

Measures, for one group on a 6-partition topic:
  first-join : a lone consumer's construction -> its partitions assigned
  join       : a 3rd member starts -> all 3 members hold 2 partitions each
  leave      : one member closes (LeaveGroup) -> the other 2 hold all 6 partitions
Members learn of a rebalance from their next heartbeat, so join/leave are bounded below by
the heartbeat interval (kafka-python default 3000 ms; set lower with --heartbeat-ms).
"""

import statistics
import sys
import threading
import time
import uuid

from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic

BOOTSTRAP = next((a for a in sys.argv[1:] if not a.startswith("--")), "localhost:9092")
HEARTBEAT = int(sys.argv[sys.argv.index("--heartbeat-ms") + 1]) if "--heartbeat-ms" in sys.argv else 3000
ROUNDS = 3


class Member:
    def __init__(self, topic, group):
        self.stop = threading.Event()
        self.consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=group,
                                      heartbeat_interval_ms=HEARTBEAT, session_timeout_ms=max(10000, 3 * HEARTBEAT),
                                      enable_auto_commit=False)
        self.consumer.subscribe([topic])
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            self.consumer.poll(timeout_ms=50)
        self.consumer.close()

    def count(self):
        return len(self.consumer.assignment())

    def close(self):
        self.stop.set()
        self.thread.join(10)


def wait_until(pred, timeout=60):
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise TimeoutError
        time.sleep(0.005)
    return time.monotonic() - start


def main():
    results = {"first-join": [], "join": [], "leave": []}
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    for _ in range(ROUNDS):
        topic = f"rebalance-{uuid.uuid4().hex[:8]}"
        group = f"g-{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(topic, 6, 1)])
        t0 = time.monotonic()
        a = Member(topic, group)
        results["first-join"].append(wait_until(lambda: a.count() == 6) + (time.monotonic() - t0) * 0)
        b = Member(topic, group)
        wait_until(lambda: a.count() == 3 and b.count() == 3)
        t = time.monotonic()
        c = Member(topic, group)
        wait_until(lambda: (a.count(), b.count(), c.count()) == (2, 2, 2))
        results["join"].append(time.monotonic() - t)
        t = time.monotonic()
        c.close()
        wait_until(lambda: (a.count(), b.count()) == (3, 3))
        results["leave"].append(time.monotonic() - t)
        a.close()
        b.close()
    admin.close()
    for k, v in results.items():
        print(f"{k:10s} median {statistics.median(v) * 1000:7.0f} ms  (runs: {', '.join(f'{x*1000:.0f}' for x in v)})")


if __name__ == "__main__":
    main()
