#!/usr/bin/env python3
"""Many partitions on one broker, under a given open-file limit.

Starts a release broker (target/release/ottla, or $OTTLA_BIN) with RLIMIT_NOFILE set to
--nofile (soft = hard, as `prlimit --nofile=N:N`), then with confluent-kafka (librdkafka):
  - creates --topics topics of --partitions / --topics partitions each (CreateTopics, timed);
  - lists them with Metadata (AdminClient.list_topics, timed; every partition counted);
  - produces one record to each of --sample partitions spread over all topics, and fetches
    every one of them back (a consumer assigned to exactly those partitions);
  - stops the broker cleanly (SIGTERM) and restarts it: time to ready, Metadata, the sample
    fetched again;
  - kills it (SIGKILL) and restarts it: the same (an unclean start: recovery from the
    recovery points);
and reports each broker process's peak RSS (VmHWM from /proc) and open descriptors.
"Ready" is the broker's own "ottla ready ... in N ms" line; the wall time from spawn to that
line is printed too.

Usage: benches/partitions.py [--partitions 100000] [--topics 10] [--nofile 4096]
       [--sample 1000] [--keep DIR]
Needs: cargo build --release; /work/venv (or any Python with confluent-kafka).
"""
import argparse
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OTTLA = os.environ.get("OTTLA_BIN", os.path.join(ROOT, "target/release/ottla"))
PORT = int(os.environ.get("PORT", "19401"))
BOOTSTRAP = f"127.0.0.1:{PORT}"
READY = re.compile(r"ottla ready on .* in (\d+) ms")
BROKERS = []  # every broker started, stopped at exit whatever happens


def start(data_dir, nofile):
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [OTTLA, "--listen", BOOTSTRAP, "--advertise", BOOTSTRAP, "--data-dir", data_dir,
         "--auto-create-topics", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=limit)
    BROKERS.append(proc)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        m = READY.search(line)
        if m:
            wall_ms = (time.perf_counter() - t0) * 1000
            # Keep draining stderr (warnings and errors are echoed) so the broker never blocks.
            subprocess.Popen(["grep", "--line-buffered", "-E", "WARN|ERROR"], stdin=proc.stderr,
                             stdout=sys.stderr)
            return proc, int(m.group(1)), wall_ms
    raise SystemExit("broker exited before ready:\n" + "".join(lines[-20:]))


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM", "VmRSS")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(pid, seconds=5):
    """Share of one core the broker uses while nothing is produced or fetched."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def admin():
    return AdminClient({"bootstrap.servers": BOOTSTRAP, "socket.timeout.ms": 300000})


def create(topics, per_topic):
    a = admin()
    t0 = time.perf_counter()
    futures = a.create_topics(
        [NewTopic(t, per_topic, 1) for t in topics],
        operation_timeout=600, request_timeout=600)
    for t, f in futures.items():
        f.result()
    return time.perf_counter() - t0


def metadata(topics, per_topic):
    a = admin()
    t0 = time.perf_counter()
    md = a.list_topics(timeout=600)
    took = time.perf_counter() - t0
    counts = {t: len(md.topics[t].partitions) for t in topics if t in md.topics}
    assert all(counts.get(t) == per_topic for t in topics), f"metadata counts {counts}"
    return took, sum(counts.values())


def produce(sample, tag):
    p = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 5, "acks": "all",
                  "message.timeout.ms": 300000})
    errors = []
    t0 = time.perf_counter()
    for (t, part) in sample:
        p.produce(t, value=f"{tag}:{t}:{part}".encode(), partition=part,
                  on_delivery=lambda err, msg: err and errors.append(err))
        p.poll(0)
    p.flush(600)
    assert not errors, errors[:5]
    return time.perf_counter() - t0


def fetch(sample, expected):
    """Reads every sampled partition from offset 0; returns (seconds, values by partition)."""
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "partitions-bench",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    c.assign([TopicPartition(t, p, 0) for (t, p) in sample])
    got = {}
    t0 = time.perf_counter()
    deadline = time.time() + 600
    while sum(len(v) for v in got.values()) < expected and time.time() < deadline:
        for m in c.consume(1000, timeout=1):
            if m.error():
                raise SystemExit(f"fetch error: {m.error()}")
            got.setdefault((m.topic(), m.partition()), []).append(m.value().decode())
    took = time.perf_counter() - t0
    c.close()
    return took, got


def check(sample, got, tags):
    for (t, p) in sample:
        want = [f"{tag}:{t}:{p}" for tag in tags]
        assert got.get((t, p)) == want, f"{t}-{p}: {got.get((t, p))} != {want}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--partitions", type=int, default=100_000)
    ap.add_argument("--topics", type=int, default=10)
    ap.add_argument("--nofile", type=int, default=4096)
    ap.add_argument("--sample", type=int, default=1000)
    ap.add_argument("--keep", help="use (and keep) this data directory")
    args = ap.parse_args()
    per_topic = args.partitions // args.topics
    topics = [f"wide-{i}" for i in range(args.topics)]
    data = args.keep or tempfile.mkdtemp(prefix="ottla-partitions-")
    rng = random.Random(42)
    everything = [(t, p) for t in topics for p in range(per_topic)]
    sample = rng.sample(everything, min(args.sample, len(everything)))
    print(f"# {args.topics} topics x {per_topic} partitions, RLIMIT_NOFILE {args.nofile}, "
          f"sample {len(sample)}, data {data}")
    try:
        proc, ready, wall = start(data, args.nofile)
        print(f"empty start: ready in {ready} ms (wall {wall:.0f} ms)")
        took = create(topics, per_topic)
        print(f"create: {args.partitions} partitions in {took:.2f} s")
        took, n = metadata(topics, per_topic)
        print(f"metadata: {n} partitions in {took:.2f} s")
        took = produce(sample, "a")
        print(f"produce: {len(sample)} records to {len(sample)} partitions in {took:.2f} s")
        took, got = fetch(sample, len(sample))
        check(sample, got, ["a"])
        print(f"fetch: {len(sample)} partitions read back in {took:.2f} s")
        print(f"idle broker: {100 * idle_cpu(proc.pid):.1f}% of a core")
        st = proc_status(proc.pid)
        print(f"first run: peak RSS {st['VmHWM']:.0f} MB, RSS {st['VmRSS']:.0f} MB, "
              f"open fds {st['fds']}")
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(600)
        print(f"clean stop in {time.perf_counter() - t0:.2f} s (exit {proc.returncode})")

        proc, ready, wall = start(data, args.nofile)
        print(f"clean start: ready in {ready} ms (wall {wall:.0f} ms)")
        took, n = metadata(topics, per_topic)
        print(f"metadata: {n} partitions in {took:.2f} s")
        produce(sample, "b")
        took, got = fetch(sample, 2 * len(sample))
        check(sample, got, ["a", "b"])
        print(f"fetch after clean start: {len(sample)} partitions read back in {took:.2f} s")
        st = proc_status(proc.pid)
        print(f"clean-start run: peak RSS {st['VmHWM']:.0f} MB, open fds {st['fds']}")
        time.sleep(1.5)  # let the periodic flush write the recovery points of "b"
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)

        proc, ready, wall = start(data, args.nofile)
        print(f"unclean start (after kill -9): ready in {ready} ms (wall {wall:.0f} ms)")
        took, n = metadata(topics, per_topic)
        print(f"metadata: {n} partitions in {took:.2f} s")
        took, got = fetch(sample, 2 * len(sample))
        check(sample, got, ["a", "b"])
        print(f"fetch after unclean start: {len(sample)} partitions read back in {took:.2f} s")
        st = proc_status(proc.pid)
        print(f"unclean-start run: peak RSS {st['VmHWM']:.0f} MB, open fds {st['fds']}")
        proc.send_signal(signal.SIGTERM)
        proc.wait(600)
        print(f"ok: exit {proc.returncode}")
    finally:
        for p in BROKERS:
            if p.poll() is None:
                p.kill()
                p.wait()
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
