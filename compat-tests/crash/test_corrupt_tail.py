"""A corrupt or garbage tail on disk: after kill -9 the broker CRC-checks the tail of the log and
cuts the first bad batch and everything after it; after a clean stop it still cuts garbage
appended after the last batch. Everything before stays readable and new produces land after."""

import os
import random

import crashkit

GROUPS = 12          # produce requests (flushed one by one, so at least as many batches)
PER_GROUP = 10
GARBAGE_BYTES = 300


def values(tag, groups, per_group):
    return [[b"%s-%d-%d" % (tag, g, i) for i in range(per_group)] for g in range(groups)]


def read_partition0(broker, topic):
    highs, got = crashkit.read_all(broker.bootstrap, topic, [0])
    return highs[0], [(o, v) for o, _, v in got[0]]


def test_corrupt_tail(brokers, topic):
    rng = random.Random(7)
    broker = brokers()
    broker.start()
    crashkit.create_topic(broker.bootstrap, topic, 1)
    first = crashkit.produce_acked(broker.bootstrap, topic, values(b"first", GROUPS, PER_GROUP))
    assert [o for o, _ in first] == list(range(GROUPS * PER_GROUP))
    broker.kill9()

    # (a) Corrupt the last batch of the last segment and append garbage.
    seg = crashkit.last_segment(broker.data_dir, topic, 0)
    with open(seg, "rb") as f:
        data = f.read()
    batches = crashkit.parse_batches(data)
    assert batches and sum(b["size"] for b in batches) == len(data), "test cannot parse the segment"
    assert all(b["crc_ok"] and b["magic"] == 2 for b in batches), "segment was already corrupt"
    assert len(batches) >= 2, f"need at least two batches, got {len(batches)}"
    bad = batches[-1]
    kept = batches[:-1]
    kept_records = sum(b["records"] for b in kept)
    assert kept_records == bad["base_offset"], "offsets in the segment are not dense"
    corrupted = bytearray(data)
    middle = bad["pos"] + crashkit.BATCH_HEADER_BYTES + (bad["size"] - crashkit.BATCH_HEADER_BYTES) // 2
    for i in range(middle, middle + 4):  # inside the records, covered by the CRC
        corrupted[i] ^= 0xFF
    corrupted += bytes(rng.getrandbits(8) for _ in range(GARBAGE_BYTES))
    assert not crashkit.parse_batches(bytes(corrupted[:bad["pos"] + bad["size"]]))[-1]["crc_ok"]
    with open(seg, "wb") as f:
        f.write(corrupted)

    broker.start()
    start_log = broker.current_log()
    assert "truncated" in start_log, f"no 'truncated' line after restarting on a corrupt tail:\n{start_log}"
    assert os.path.getsize(seg) == bad["pos"], (
        f"segment is {os.path.getsize(seg)} bytes; the corrupt batch started at {bad['pos']}")
    high, got = read_partition0(broker, topic)
    assert high == kept_records, f"log end offset {high}, expected {kept_records} (records before the corrupt batch)"
    assert got == first[:kept_records], "records before the corrupt batch did not read back intact"

    second = crashkit.produce_acked(broker.bootstrap, topic, values(b"second", 3, PER_GROUP))
    assert [o for o, _ in second] == list(range(kept_records, kept_records + len(second))), (
        f"new records landed at {[o for o, _ in second][:5]}..., expected from {kept_records}")
    high, got = read_partition0(broker, topic)
    expected = first[:kept_records] + second
    assert high == len(expected) and got == expected

    # (b) Clean stop, then garbage after the last batch: cut on the (clean) start.
    broker.stop()
    seg = crashkit.last_segment(broker.data_dir, topic, 0)
    size = os.path.getsize(seg)
    with open(seg, "ab") as f:
        f.write(bytes(rng.getrandbits(8) for _ in range(GARBAGE_BYTES)))
    broker.start()
    assert os.path.getsize(seg) == size, (
        f"garbage not cut on a clean start: segment is {os.path.getsize(seg)} bytes, was {size} before")
    high, got = read_partition0(broker, topic)
    assert high == len(expected) and got == expected, "records did not read back after the garbage was cut"

    third = crashkit.produce_acked(broker.bootstrap, topic, values(b"third", 2, PER_GROUP))
    assert [o for o, _ in third] == list(range(len(expected), len(expected) + len(third)))
    high, got = read_partition0(broker, topic)
    expected += third
    assert high == len(expected) and got == expected
    broker.stop()
