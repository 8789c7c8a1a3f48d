"""Minimal stand-in for kafka-python's test/service.py (absent from the sdist).

With KAFKA_URI set, the integration fixtures wrap the running broker in an
ExternalService; nothing is spawned. SpawnedService exists only so the import
succeeds; using it is an error.
"""

import logging

log = logging.getLogger(__name__)


class ExternalService:
    def __init__(self, host, port):
        log.info("Using already running service at %s:%d", host, port)
        self.host = host
        self.port = port

    def start(self):
        pass

    def stop(self):
        pass

    def wait_for(self, pattern, timeout=30):
        return True

    def dump_logs(self):
        pass


class SpawnedService:
    def __init__(self, args=None, env=None):
        raise RuntimeError("ottla's compat suite runs against an external broker; set KAFKA_URI")
