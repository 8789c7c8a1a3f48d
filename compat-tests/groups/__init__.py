"""Helpers for the consumer-group compat tests (compat-tests/test_groups_*.py and
test_seed_consumer.py): a broker of the test's own (broker.py), consumer-group members driven
from threads for kafka-python and confluent-kafka (members.py), small waiting and produce
helpers (util.py), and the timestamping wrapper around the seed's consumer sample
(seed_consumer_timed.py)."""
