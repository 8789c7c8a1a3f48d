"""Fetch from follower (KIP-392) with librdkafka: a 3-node cluster whose brokers are in racks
r1, r2, r3 (`--broker-rack`), a topic with RF 3, and a confluent-kafka consumer with
`client.rack` naming the rack of a follower. The leader answers its fetches with
`preferred_read_replica`, the consumer moves to that follower, and every record comes back
in order, byte for byte. librdkafka's fetch debug log shows where it fetched from.
"""

import threading
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cluster import Cluster

N = 300


class RackCluster(Cluster):
    """Node i in rack r{i}."""

    def make_nodes(self, root, client_port, free):
        nodes = super().make_nodes(root, client_port, free)
        for nd in nodes:
            spawn = nd.spawn

            def with_rack(voters, extra_args=(), extra_env=None, _spawn=spawn, _id=nd.id):
                return _spawn(voters, [*extra_args, "--broker-rack", f"r{_id}"], extra_env)

            nd.spawn = with_rack
        return nodes


def test_a_consumer_reads_from_the_follower_in_its_rack():
    cluster = RackCluster(3).start()
    try:
        topic = f"fff-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        admin.create_topics([NewTopic(topic, 1, 3)])[topic].result(30)
        values = [f"record-{i}-".encode() + bytes([i % 256]) * (i % 50) for i in range(N)]
        p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5})
        acked = []
        for v in values:
            p.produce(topic, v, partition=0,
                      on_delivery=lambda err, msg: acked.append(err is None and msg.offset()))
        assert p.flush(30) == 0
        del p
        assert acked == list(range(N)), "every record acknowledged at its offset"
        md = admin.list_topics(topic, timeout=10).topics[topic].partitions[0]
        leader = md.leader
        follower = next(r for r in md.replicas if r != leader)

        logs = []
        lock = threading.Lock()

        class Capture:
            def log(self, level, fmt, *args):
                with lock:
                    logs.append(fmt % args if args else str(fmt))

        c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": f"fff-{uuid.uuid4().hex[:6]}",
                      "client.rack": f"r{follower}", "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "debug": "fetch"}, logger=Capture())
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        try:
            while len(got) < N:
                m = c.poll(10)
                assert m is not None, f"only {len(got)} of {N} records within 10 s"
                assert m.error() is None, m.error()
                got.append((m.offset(), m.value()))
        finally:
            c.close()
        assert [o for o, _ in got] == list(range(N))
        assert [v for _, v in got] == values, "byte for byte"
        with lock:
            text = "\n".join(logs)
        # librdkafka logs the delegation to the preferred replica, then fetches from it.
        moved = [line for line in logs
                 if "preferred replica" in line and f"to {follower} (leader is {leader})" in line]
        assert moved, f"no preferred-replica delegation in librdkafka's fetch log:\n{text[-3000:]}"
        print(f"FETCH-FROM-FOLLOWER leader {leader}, consumer in rack r{follower}: {N} records; "
              f"librdkafka: {moved[0][:200]}")
    finally:
        cluster.stop()
        cluster.cleanup()
