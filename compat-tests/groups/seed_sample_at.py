"""Runs one of the seed's samples (compat-tests/samples/seed_consumer.py or
seed_producer.py, unchanged, with runpy as __main__) against the brokers named by the
OTTLA_SAMPLE_BOOTSTRAP environment variable instead of the localhost:9092 they hard-code:
kafka.KafkaConsumer and kafka.KafkaProducer are replaced by subclasses that swap the
bootstrap_servers argument (and refuse to run without the variable, so nothing reaches
localhost:9092 by accident).

Usage: seed_sample_at.py consumer|producer
"""

import os
import runpy
import sys

import kafka

SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "samples")
BOOTSTRAP = os.environ.get("OTTLA_SAMPLE_BOOTSTRAP")
if not BOOTSTRAP:
    sys.exit("OTTLA_SAMPLE_BOOTSTRAP is not set")


def _swap(kwargs):
    assert kwargs.get("bootstrap_servers") == "localhost:9092", kwargs
    kwargs["bootstrap_servers"] = BOOTSTRAP.split(",")
    return kwargs


class _Consumer(kafka.KafkaConsumer):
    def __init__(self, *topics, **kwargs):
        super().__init__(*topics, **_swap(kwargs))


class _Producer(kafka.KafkaProducer):
    def __init__(self, **kwargs):
        super().__init__(**_swap(kwargs))


kafka.KafkaConsumer = _Consumer
kafka.KafkaProducer = _Producer
which = sys.argv[1]
runpy.run_path(os.path.join(SAMPLES, f"seed_{which}.py"), run_name="__main__")
