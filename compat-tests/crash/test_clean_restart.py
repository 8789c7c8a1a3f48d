"""A graceful stop (SIGTERM) leaves DIR/meta/clean_shutdown; the next start consumes it, and
everything produced before the stop reads back."""

import os

import crashkit

PARTITIONS = 2


def test_clean_restart_marker(brokers, topic):
    broker = brokers()
    marker = os.path.join(broker.data_dir, "meta", "clean_shutdown")
    broker.start()
    crashkit.create_topic(broker.bootstrap, topic, PARTITIONS)
    acked = {p: crashkit.produce_acked(broker.bootstrap, topic,
                                       [[b"clean-%d-%d-%d" % (p, g, i) for i in range(20)] for g in range(5)],
                                       partition=p)
             for p in range(PARTITIONS)}

    broker.stop()
    assert os.path.exists(marker), f"no {marker} after a graceful stop"

    broker.start()
    assert not os.path.exists(marker), f"{marker} still present after the broker started again"
    highs, got = crashkit.read_all(broker.bootstrap, topic, range(PARTITIONS))
    for p in range(PARTITIONS):
        assert highs[p] == len(acked[p])
        assert [(o, v) for o, _, v in got[p]] == acked[p], f"partition {p} did not read back"

    # kill -9 leaves no marker, and the unclean start still serves everything.
    broker.kill9()
    assert not os.path.exists(marker), "clean-shutdown marker written although the broker was killed"
    broker.start()
    highs, got = crashkit.read_all(broker.bootstrap, topic, range(PARTITIONS))
    for p in range(PARTITIONS):
        assert [(o, v) for o, _, v in got[p]] == acked[p], f"partition {p} did not read back after kill -9"
    broker.stop()
