#!/usr/bin/env python3
"""Replication cost on three local brokers: RF 3 against RF 1, with `ottla-load` as the client.

For each round and each replication factor (RF 1, then RF 3, alternately for --rounds) it starts
a fresh 3-node cluster (compat-tests/cluster.py: combined broker + controller nodes, disk mode,
default flush policy, each with its own temporary data directory) with
`--default-replication-factor RF` (and `--min-insync-replicas` 1 for RF 1, --min-insync for
RF 3, default 2), then:

- `ottla-load produce --bootstrap NODE1 --acks all --record-size 1024 --records N/RF
  --partitions 3 --json` (ottla-load creates a fresh topic; the controller places the 3
  partitions so that every broker leads one). N (--records, default 6,000,000) is for RF 1 and
  an RF 3 run sends N/3 (--same-records: N at every factor), so both put the same bytes into
  the brokers' logs and page cache: filling new page cache is the dominant cost on some VMs and
  grows faster than the volume (each round first measures it: --no-calibrate skips that). The
  broker CPU time is utime + stime of all three broker processes (/proc/PID/stat) from just
  before ottla-load starts until it exits (so it includes the client's connect and topic
  creation, a few ms of broker work), divided by the GB of payload acknowledged
  (records x 1024 / 1e9); the client's own CPU (ottla-load's rusage) is reported beside it;
- `ottla-load e2e --acks all --record-size 1024 --rate R --duration D --partitions 3`: end-to-end
  latency percentiles at a rate both factors sustain;
- stops the cluster (every node must exit 0 without a panic).

Checks, each fatal: ottla-load's exit status (1 on a failed delivery, 2 on an acknowledged record
never read back) and its counts (produce: every record it sent acknowledged, no error; e2e:
missing 0, duplicates 0, errors 0); every partition of the measured topic has RF replicas (read
back with Metadata: ottla-load must create its topic with replication factor -1, i.e. the
cluster's default). While a run goes, a thread polls Metadata every 0.5 s and records the
smallest ISR seen per topic: an ISR that shrank under load means followers fell behind (and
acks=all then waited for fewer replicas), so it is printed next to the figures.

The output is a markdown table (one row per run, then the median per factor) and, with
--json-out FILE, every run's ottla-load JSON plus the measured CPU.

    cargo build --release --bin ottla && cargo build --release -p ottla-loadgen
    python3 benches/replication.py --rounds 2

Stdlib only (Metadata is asked with a hand-made v1 request); ports below 32768, never 9092/9093.
"""

import argparse
import json
import os
import random
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD_SIZE = 1024


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="RF 1 / RF 3 pairs, alternated (default 2)")
    ap.add_argument("--records", type=int, default=6_000_000,
                    help="1 KB records of an RF 1 produce run; an RF r run sends records / r, the "
                         "same bytes on the brokers' disks (default 6,000,000)")
    ap.add_argument("--same-records", action="store_true", help="send --records at every factor")
    ap.add_argument("--no-calibrate", action="store_true",
                    help="skip the page-cache fill measurement of each round")
    ap.add_argument("--producers", type=int, default=1, help="ottla-load producer threads (default 1)")
    ap.add_argument("--partitions", type=int, default=3, help="partitions of each topic (default 3)")
    ap.add_argument("--e2e-rate", type=float, default=20_000, help="e2e target msgs/s (default 20,000)")
    ap.add_argument("--e2e-duration", type=float, default=10, help="e2e seconds (default 10)")
    ap.add_argument("--min-insync", type=int, default=2,
                    help="--min-insync-replicas of the RF 3 cluster (default 2; RF 1 uses 1)")
    ap.add_argument("--rf", type=int, nargs="+", default=[1, 3], help="factors to compare (default 1 3)")
    ap.add_argument("--ottla", default=os.environ.get("OTTLA_BIN", os.path.join(REPO, "target", "release", "ottla")),
                    help="broker binary (default $OTTLA_BIN or target/release/ottla)")
    ap.add_argument("--loadgen", default=os.path.join(REPO, "target", "release", "ottla-load"),
                    help="ottla-load binary (default target/release/ottla-load)")
    ap.add_argument("--json-out", help="write every run's results here (JSON lines)")
    ap.add_argument("--keep-logs", help="copy each cluster's node logs into this directory")
    return ap.parse_args()


ARGS = parse_args()
os.environ["OTTLA_BIN"] = os.path.abspath(ARGS.ottla)  # read by groups.broker at import
sys.path.insert(0, os.path.join(REPO, "compat-tests"))
import cluster as cluster_mod  # noqa: E402  (compat-tests/cluster.py)


# --- a minimal Kafka client: Metadata v1 --------------------------------------------------

def _recvn(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return bytes(buf)


class _Reader:
    def __init__(self, data):
        self.d, self.i = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.i)
        self.i += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.d[self.i:self.i + n].decode()
        self.i += n
        return s

    def array(self, item):
        n = self.take(">i")
        return [item() for _ in range(max(n, 0))]


def metadata(addr, topics=None, timeout=5.0):
    """Metadata v1 from the broker at HOST:PORT: (controller id, {broker id: (host, port)},
    {topic: {partition: (leader, replicas, isr)}}). `topics` None: all topics."""
    host, port = addr.rsplit(":", 1)
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics)) + b"".join(
            struct.pack(">h", len(t.encode())) + t.encode() for t in topics)
    client = b"replication.py"
    msg = struct.pack(">hhih", 3, 1, 7, len(client)) + client + body
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(msg)) + msg)
        n = struct.unpack(">i", _recvn(s, 4))[0]
        r = _Reader(_recvn(s, n))
    assert r.take(">i") == 7, "correlation id"

    def broker():
        node, h, p, _rack = r.take(">i"), r.string(), r.take(">i"), r.string()
        return node, (h, p)

    brokers = dict(r.array(broker))
    controller = r.take(">i")

    def partition():
        _err, idx, leader = r.take(">h"), r.take(">i"), r.take(">i")
        replicas = r.array(lambda: r.take(">i"))
        isr = r.array(lambda: r.take(">i"))
        return idx, (leader, replicas, isr)

    def topic():
        _err, name, _internal = r.take(">h"), r.string(), r.take(">b")
        return name, dict(r.array(partition))

    return controller, brokers, dict(r.array(topic))


class BenchCluster(cluster_mod.Cluster):
    """cluster.Cluster on ports below 32768 (the ephemeral range starts there) with the
    readiness check done by the stdlib Metadata above instead of confluent-kafka."""

    def make_nodes(self, root, client_port, free):
        ports = pick_ports(2 * self.n)
        return [cluster_mod.Node(i, root, ports[2 * (i - 1)], ports[2 * (i - 1) + 1])
                for i in range(1, self.n + 1)]

    def wait_agree(self, ids=None):
        ids = sorted(ids or [nd.id for nd in self.nodes])
        deadline = time.monotonic() + cluster_mod.AGREE_TIMEOUT_S
        while True:
            views = {}
            for nd in self.nodes:
                try:
                    controller, brokers, _ = metadata(nd.bootstrap)
                    views[nd.id] = (controller, sorted(brokers))
                except Exception as e:  # noqa: BLE001 - reported as the node's view
                    views[nd.id] = repr(e)
            if all(v == (node_id, ids) for node_id, v in views.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes did not agree: {views}\n{self.tails()}")
            time.sleep(0.1)


def pick_ports(n):
    out = set()
    while len(out) < n:
        p = random.randrange(20000, 32000)
        if p in out or p in cluster_mod.RESERVED_PORTS:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
        out.add(p)
    return sorted(out)


# --- measurements -----------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid):
    """(utime, stime) of a process in seconds (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid):
    return sum(cpu_times(pid))


def machine_cpu():
    """(busy, total) jiffies of all CPUs (/proc/stat): other work on the machine shows here."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle, iowait
    return sum(v) - idle, sum(v)


class IsrWatch(threading.Thread):
    """Polls Metadata (all topics) every 0.5 s: smallest ISR and replica counts seen per topic."""

    def __init__(self, addr):
        super().__init__(daemon=True)
        self.addr, self.stop_ev = addr, threading.Event()
        self.min_isr, self.replicas, self.failures = {}, {}, 0

    def run(self):
        while not self.stop_ev.wait(0.5):
            try:
                _, _, topics = metadata(self.addr, timeout=2)
            except Exception:  # noqa: BLE001 - a busy broker may be slow to answer
                self.failures += 1
                continue
            for name, parts in topics.items():
                if not parts:
                    continue
                m = min(len(isr) for (_, _, isr) in parts.values())
                self.min_isr[name] = min(m, self.min_isr.get(name, m))
                self.replicas[name] = sorted({len(r) for (_, r, _) in parts.values()})

    def stop(self):
        self.stop_ev.set()
        self.join()


RF_HINT = ("ottla-load must create its topic with replication factor -1 (the cluster's "
           "default_replication_factor): see create_topic in benches/loadgen/src/client.rs")


def run_loadgen(c, mode, extra, rf, log):
    """One ottla-load run against `c`; returns its JSON plus the three brokers' CPU."""
    node1 = c.nodes[0].bootstrap
    cmd = [ARGS.loadgen, mode, "--bootstrap", node1, "--acks", "all", "--record-size", str(RECORD_SIZE),
           "--partitions", str(ARGS.partitions), "--json", *extra]
    pids = [nd.proc.pid for nd in c.nodes]
    watch = IsrWatch(node1)
    watch.start()
    cpu0 = [cpu_times(p) for p in pids]
    client0, busy0 = resource.getrusage(resource.RUSAGE_CHILDREN), machine_cpu()
    t0 = time.monotonic()
    with open(log, "ab") as err:
        err.write(f"----- {' '.join(cmd)}\n".encode())
        err.flush()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        # With a topic of fewer replicas than min.insync.replicas every produce is refused
        # and librdkafka retries for delivery.timeout.ms (5 min): stop at the first sight.
        wrong = lambda: {t: n for t, n in watch.replicas.items()  # noqa: E731
                         if t.startswith(f"ottla-load-{mode}-") and n != [rf]}
        while p.poll() is None and not wrong():
            time.sleep(0.1)
        if p.poll() is None:
            p.kill()
            p.wait()
            watch.stop()
            raise SystemExit(f"ottla-load created {wrong()} (replica counts), not RF {rf}: " + RF_HINT)
        stdout = p.stdout.read()
    wall = time.monotonic() - t0
    cpu1 = [cpu_times(p_) for p_ in pids]
    # Only ottla-load was reaped meanwhile (the brokers are reaped at stop).
    client1, busy1 = resource.getrusage(resource.RUSAGE_CHILDREN), machine_cpu()
    client_cpu = (client1.ru_utime + client1.ru_stime) - (client0.ru_utime + client0.ru_stime)
    watch.stop()
    out = stdout.decode().strip()
    if p.returncode != 0 or not out:
        raise SystemExit(f"ottla-load {mode} (RF {rf}) exited with {p.returncode}: see {log}\n"
                         f"{open(log).read()[-3000:]}")
    rep = json.loads(out.splitlines()[-1])
    user = sum(b[0] - a[0] for a, b in zip(cpu0, cpu1))
    cpu = [sum(b) - sum(a) for a, b in zip(cpu0, cpu1)]
    gb = rep["records"] * RECORD_SIZE / 1e9
    # The measured topic as the brokers have it: RF replicas on every partition.
    _, _, topics = metadata(node1, [rep["topic"]])
    parts = topics.get(rep["topic"], {})
    counts = sorted({len(r) for (_, r, _) in parts.values()})
    if len(parts) != ARGS.partitions or counts != [rf]:
        raise SystemExit(
            f"topic {rep['topic']} has replica counts {counts} over {len(parts)} partition(s), not {rf}: "
            + RF_HINT)
    rep.update(rf=rf, wall_s=round(wall, 3), cpu_by_broker=[round(x, 2) for x in cpu],
               user_per_gb=round(user / gb, 2) if gb else None,
               sys_per_gb=round((sum(cpu) - user) / gb, 2) if gb else None,
               cpu_s=round(sum(cpu), 2), cpu_per_gb=round(sum(cpu) / gb, 2) if gb else None,
               leaders=sorted(ld for (ld, _, _) in parts.values()),
               min_isr=watch.min_isr.get(rep["topic"]), isr_polls_failed=watch.failures,
               client_cpu_s=round(client_cpu, 2),
               machine_busy=round((busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1), 3))
    return rep


def one_cluster(rf, rnd):
    mi = 1 if rf == 1 else ARGS.min_insync
    c = BenchCluster(3, extra_args=["--default-replication-factor", str(rf), "--min-insync-replicas", str(mi)])
    log = os.path.join(c.root, "ottla-load.log")
    try:
        c.start()
        print(f"round {rnd} RF {rf} (min.insync {mi}): cluster ready in {c.startup_s:.1f} s "
              f"({c.bootstrap})", file=sys.stderr, flush=True)
        time.sleep(1)
        pids = [nd.proc.pid for nd in c.nodes]
        i0 = sum(cpu_seconds(p) for p in pids)
        time.sleep(2)
        idle = (sum(cpu_seconds(p) for p in pids) - i0) / 2
        n = records_for(rf)
        prod = run_loadgen(c, "produce", ["--records", str(n), "--producers", str(ARGS.producers)], rf, log)
        if prod["records"] != n or prod["errors"] != 0:
            raise SystemExit(f"produce RF {rf}: {prod['records']} of {n} acknowledged, "
                             f"{prod['errors']} error(s)")
        print(f"  produce: {prod['msgs_per_s']:.0f} msgs/s, {prod['mb_per_s']:.1f} MB/s, "
              f"{prod['cpu_s']} CPU-s {prod['cpu_by_broker']} = {prod['cpu_per_gb']} CPU-s/GB "
              f"(client {prod['client_cpu_s']} CPU-s, machine {prod['machine_busy']:.0%} busy), "
              f"leaders {prod['leaders']}, min ISR {prod['min_isr']}", file=sys.stderr, flush=True)
        e2e = run_loadgen(c, "e2e", ["--rate", str(ARGS.e2e_rate), "--duration", str(ARGS.e2e_duration)], rf, log)
        if e2e["missing"] != 0 or e2e["duplicates"] != 0 or e2e["errors"] != 0:
            raise SystemExit(f"e2e RF {rf}: missing {e2e['missing']}, duplicates {e2e['duplicates']}, "
                             f"errors {e2e['errors']}")
        print(f"  e2e: {e2e['records']} records at {e2e['msgs_per_s']:.0f} msgs/s, p50 {e2e['p50_ms']} "
              f"p99 {e2e['p99_ms']} p99.9 {e2e['p999_ms']} ms, min ISR {e2e['min_isr']}",
              file=sys.stderr, flush=True)
        c.stop()
        if ARGS.keep_logs:
            import shutil
            d = os.path.join(ARGS.keep_logs, f"round{rnd}-rf{rf}")
            os.makedirs(d, exist_ok=True)
            for nd in c.nodes:
                shutil.copy(nd.log_path, d)
            shutil.copy(log, d)
        return {"round": rnd, "rf": rf, "min_insync": mi, "idle_cpu_per_s": round(idle, 3),
                "produce": prod, "e2e": e2e}
    except BaseException:
        print(c.tails(20), file=sys.stderr)
        raise
    finally:
        c.cleanup()


def records_for(rf):
    return ARGS.records if ARGS.same_records else ARGS.records // rf


def fill_cost(nbytes):
    """CPU-s per GB (1e9 B) this process spends writing `nbytes` into a new file in the temp
    directory (the clusters' filesystem) with 1 MiB writes, no fsync: the kernel's cost of
    filling new page cache, which every replica pays for what it appends. On a VM that returns
    freed memory to its host (virtio balloon free page reporting) it is far above a memcpy
    and grows with the volume written."""
    buf = b"\x5a" * (1 << 20)
    path = os.path.join(tempfile.gettempdir(), f"replication-fill-{os.getpid()}")
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        left = nbytes
        while left > 0:
            left -= os.write(fd, buf[:min(left, len(buf))])
    finally:
        os.close(fd)
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - t0
    os.unlink(path)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return {"gb": round(nbytes / 1e9, 2), "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
            "cpu_per_gb": round(cpu / (nbytes / 1e9), 2)}


def row(label, rf, mi, n, msgs, mb, cpugb, clientgb, busy, p50, p99, p999, isr, ok):
    return (f"| {label} | {rf} | {mi} | {n} | {msgs:,.0f} | {mb:.1f} | {cpugb} | {clientgb} | {busy} | "
            f"{p50:.2f} / {p99:.2f} / {p999:.2f} | {isr} | {ok} |")


def main():
    for b in (ARGS.loadgen, os.environ["OTTLA_BIN"]):
        if not os.access(b, os.X_OK):
            raise SystemExit(f"no executable {b}: cargo build --release --bin ottla && "
                             "cargo build --release -p ottla-loadgen")
    results, fills = [], []
    for rnd in range(1, ARGS.rounds + 1):
        if not ARGS.no_calibrate:
            f = fill_cost(ARGS.records * RECORD_SIZE)
            fills.append(f)
            print(f"round {rnd}: page-cache fill {f['gb']} GB: {f['cpu_s']} CPU-s = {f['cpu_per_gb']} "
                  "CPU-s/GB", file=sys.stderr, flush=True)
            time.sleep(3)
        for rf in ARGS.rf:
            r = one_cluster(rf, rnd)
            results.append(r)
            if ARGS.json_out:
                with open(ARGS.json_out, "a") as f:
                    f.write(json.dumps(r) + "\n")
    print(f"\n{RECORD_SIZE} B records, acks=all, {ARGS.partitions} partitions (one led by each broker), "
          f"{ARGS.producers} producer(s); e2e at {ARGS.e2e_rate:,.0f} msgs/s for {ARGS.e2e_duration:g} s. "
          "CPU-s/GB: utime + stime per GB (1e9 B) of payload produced, broker = sum over the 3 brokers; "
          "machine busy: all CPUs during the produce run (other work included)\n")
    print("| run | RF | min.insync | records | msgs/s | MB/s | broker CPU-s/GB (user + sys) | client CPU-s/GB | machine busy | "
          "e2e p50 / p99 / p99.9 ms | min ISR (produce / e2e) | every record acknowledged |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        p, e = r["produce"], r["e2e"]
        gb = p["records"] * RECORD_SIZE / 1e9
        ok = f"yes (produce {p['records']:,}/{p['records']:,}; e2e {e['records']:,} read back, 0 missing)"
        print(row(f"round {r['round']}", r["rf"], r["min_insync"], f"{p['records']:,}", p["msgs_per_s"],
                  p["mb_per_s"], f"{p['cpu_per_gb']:.2f} ({p['user_per_gb']:.2f} + {p['sys_per_gb']:.2f})", f"{p['client_cpu_s'] / gb:.2f}", f"{p['machine_busy']:.0%}",
                  e["p50_ms"], e["p99_ms"], e["p999_ms"], f"{p['min_isr']} / {e['min_isr']}", ok))
    for rf in ARGS.rf:
        rs = [r for r in results if r["rf"] == rf]
        med = lambda f: statistics.median(f(r) for r in rs)  # noqa: E731
        print(row("median", rf, rs[0]["min_insync"], "", med(lambda r: r["produce"]["msgs_per_s"]),
                  med(lambda r: r["produce"]["mb_per_s"]),
                  f"{med(lambda r: r['produce']['cpu_per_gb']):.2f} ({med(lambda r: r['produce']['user_per_gb']):.2f}"
                  f" + {med(lambda r: r['produce']['sys_per_gb']):.2f})",
                  f"{med(lambda r: r['produce']['client_cpu_s'] / (r['produce']['records'] * RECORD_SIZE / 1e9)):.2f}",
                  "", med(lambda r: r["e2e"]["p50_ms"]), med(lambda r: r["e2e"]["p99_ms"]),
                  med(lambda r: r["e2e"]["p999_ms"]), "", ""))
    if fills:
        print(f"\npage-cache fill of {fills[0]['gb']} GB (what the brokers write per run, all replicas): "
              + ", ".join(f"{f['cpu_per_gb']}" for f in fills) + " CPU-s/GB (one per round)")
    if len(ARGS.rf) == 2 and ARGS.rf[0] == 1:
        a = [r for r in results if r["rf"] == ARGS.rf[0]]
        b = [r for r in results if r["rf"] == ARGS.rf[1]]
        t = statistics.median(r["produce"]["msgs_per_s"] for r in b) / statistics.median(
            r["produce"]["msgs_per_s"] for r in a)
        cg = statistics.median(r["produce"]["cpu_per_gb"] for r in b) / statistics.median(
            r["produce"]["cpu_per_gb"] for r in a)
        print(f"\nRF {ARGS.rf[1]} / RF 1 (medians): throughput x{t:.2f}, broker CPU per GB x{cg:.2f}; idle CPU "
              f"of the 3 brokers {statistics.median(r['idle_cpu_per_s'] for r in results):.3f} s/s")

if __name__ == "__main__":
    main()
