"""The seed's kafka-python producer sample, run verbatim, then read back without a group."""

import os
import subprocess
import sys

from kafka import KafkaConsumer, TopicPartition

HERE = os.path.dirname(os.path.abspath(__file__))


def read_from(bootstrap, tp, start, count, timeout_s=10):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=timeout_s * 1000)
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        out = []
        for msg in consumer:
            out.append(msg)
            if len(out) == count:
                break
        return out
    finally:
        consumer.close()


def end_offset(bootstrap, tp):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        if tp.topic not in consumer.topics():
            return 0
        return consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()


def test_seed_producer_sample_verbatim(bootstrap):
    # The sample hard-codes localhost:9092; this test only means something there.
    assert bootstrap == "localhost:9092", "the seed sample needs the broker on localhost:9092"
    tp = TopicPartition("test-topic", 0)
    before = end_offset(bootstrap, tp)

    sample = os.path.join(HERE, "samples", "seed_producer.py")
    result = subprocess.run([sys.executable, sample], capture_output=True, timeout=60, text=True)
    assert result.returncode == 0, f"sample failed:\n{result.stdout}\n{result.stderr}"

    # 'test-topic' is auto-created with one partition (num_partitions defaults to 1).
    msgs = read_from(bootstrap, tp, before, 1)
    assert [m.value for m in msgs] == [b"test-message"]
    assert msgs[0].offset == before
    assert msgs[0].key is None
    assert end_offset(bootstrap, tp) == before + 1
