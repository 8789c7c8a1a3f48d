"""kcat (Debian's, librdkafka 2.0.2) against ottla."""

import subprocess

from conftest import create_topic


def run(cmd, stdin=None, timeout=30):
    r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} failed: {r.stderr.decode(errors='replace')}"
    return r.stdout


def test_metadata_list(kcat, bootstrap, topic_name):
    create_topic(bootstrap, topic_name, partitions=3)
    out = run([kcat, "-b", bootstrap, "-L", "-t", topic_name]).decode()
    assert "1 brokers:" in out
    assert f'topic "{topic_name}" with 3 partitions:' in out
    for p in range(3):
        assert f"partition {p}, leader" in out


def test_produce_snappy_then_consume(kcat, bootstrap, topic_name):
    lines = [f"line {i} " + "x" * (i % 50) for i in range(1000)]
    data = ("\n".join(lines) + "\n").encode()
    # -P auto-creates the topic (auto.create.topics.enable is on by default)
    run([kcat, "-b", bootstrap, "-P", "-t", topic_name, "-z", "snappy", "-p", "0"], stdin=data)
    out = run([kcat, "-b", bootstrap, "-C", "-t", topic_name, "-o", "beginning", "-e", "-q"])
    assert out.decode().splitlines() == lines


def test_keys_and_offsets(kcat, bootstrap, topic_name):
    create_topic(bootstrap, topic_name)
    data = b"".join(f"key{i}:value{i}\n".encode() for i in range(100))
    run([kcat, "-b", bootstrap, "-P", "-t", topic_name, "-K:"], stdin=data)
    out = run([kcat, "-b", bootstrap, "-C", "-t", topic_name, "-o", "beginning", "-e", "-q",
               "-f", "%o %k %s\\n"]).decode().splitlines()
    assert out == [f"{i} key{i} value{i}" for i in range(100)]
    # -o -10: the last ten records
    tail = run([kcat, "-b", bootstrap, "-C", "-t", topic_name, "-o", "-10", "-e", "-q",
                "-f", "%o\\n"]).decode().split()
    assert tail == [str(i) for i in range(90, 100)]
