"""Shared fixtures for the compat suite.

The suite runs against a broker that is already running (scripts/test starts a
fresh one per mode). OTTLA_BOOTSTRAP names it; the seed samples hard-code
localhost:9092, so that is the default.
"""

import os
import shutil
import uuid

import pytest

BOOTSTRAP = os.environ.get("OTTLA_BOOTSTRAP", "localhost:9092")


@pytest.fixture(scope="session")
def bootstrap():
    return BOOTSTRAP


@pytest.fixture
def topic_name(request):
    """A fresh topic name per test, so reruns against one data dir never collide."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def kcat():
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        pytest.fail("kcat is not installed (scripts/test installs it with apt-get)")
    return path


def create_topic(bootstrap, name, partitions=1, config=None):
    """Create a topic with kafka-python's admin client and wait until it is visible."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="compat-admin")
    try:
        admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, topic_configs=config or {})]
        )
    finally:
        admin.close()


@pytest.fixture(scope="module")
def cluster3(request):
    """Three ottla nodes (combined mode, one quorum) on free loopback ports, from OTTLA_BIN
    (default target/release/ottla), ready and agreeing on the controller; one cluster per test
    module. Stopped with SIGTERM at teardown (each node must exit 0); the nodes' log tails are
    printed when a test of the module failed. OTTLA_CLUSTER_KEEP=1 keeps their files."""
    from cluster import Cluster

    failed_before = request.session.testsfailed
    c = Cluster(3)
    try:
        c.start()
        yield c
        c.stop()
    finally:
        if request.session.testsfailed > failed_before:
            print("\n" + c.tails())
        c.cleanup()
