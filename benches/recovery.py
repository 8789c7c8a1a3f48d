#!/usr/bin/env python3
"""Startup and recovery time of a disk-mode broker with a large data directory.

Fills a fresh data directory with GB gigabytes (1 KB records, acks=1, several partitions, with
ottla-load), then measures the time to ready:
  - empty:   a new empty data directory;
  - clean:   after a clean stop (SIGTERM: indexes written, clean-shutdown marker);
  - unclean: after kill -9 right after a 200 MB produce burst to a second topic (the tail
             after each partition's recovery point is CRC-scanned, producer state is rebuilt
             from batch headers); then both topics are read back in full.
"Ready" is the broker's own "ottla ready ... in N ms" line (measured from process start to
after every log is open); the wall time from spawn to that line is reported too. After each
restart the broker's peak RSS is read from /proc, and a consumer reads the last records back.

Usage: benches/recovery.py [--gb 10] [--partitions 4] [--keep DIR]
Needs target/release/ottla and target/release/ottla-load (cargo build --release --workspace).
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OTTLA = os.environ.get("OTTLA_BIN", os.path.join(ROOT, "target/release/ottla"))
LOAD = os.path.join(ROOT, "target/release/ottla-load")
PORT = int(os.environ.get("PORT", "19492"))
READY = re.compile(r"ottla ready on .* in (\d+) ms")


def start(data_dir):
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [OTTLA, "--listen", f"127.0.0.1:{PORT}", "--advertise", f"127.0.0.1:{PORT}",
         "--data-dir", data_dir],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        m = READY.search(line)
        if m:
            wall_ms = (time.perf_counter() - t0) * 1000
            # Keep draining stderr so the broker never blocks on a full pipe.
            subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)
            return proc, int(m.group(1)), wall_ms, lines
    raise SystemExit("broker exited before ready:\n" + "".join(lines[-20:]))


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return None


def load(*args):
    out = subprocess.run([LOAD, *args, "--bootstrap", f"127.0.0.1:{PORT}", "--json"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"ottla-load {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def du_gb(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total / 1e9


def stop(proc, sig):
    proc.send_signal(sig)
    proc.wait(120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=10.0)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--keep", help="use this data dir and keep it")
    a = ap.parse_args()
    data = a.keep or tempfile.mkdtemp(prefix="ottla-recovery-")
    results = {}
    try:
        proc, ready_ms, wall_ms, _ = start(data)
        results["empty"] = {"ready_ms": ready_ms, "wall_ms": round(wall_ms, 1)}
        records = int(a.gb * 1e9 / 1024)
        fill = load("produce", "--topic", "recovery", "--record-size", "1024", "--acks", "1",
                    "--partitions", str(a.partitions), "--records", str(records))
        print(f"filled {du_gb(data):.2f} GB in {fill['secs']:.1f} s "
              f"({fill['mb_per_s']:.0f} MB/s)", file=sys.stderr)
        stop(proc, signal.SIGTERM)
        subprocess.run(["sync"])
        for kind in ["clean", "unclean"]:
            proc, ready_ms, wall_ms, lines = start(data)
            warn = sum("WARN" in l for l in lines)
            results[kind] = {"ready_ms": ready_ms, "wall_ms": round(wall_ms, 1),
                             "rss_at_ready_mb": round(peak_rss_mb(proc.pid), 1),
                             "warnings": warn, "data_gb": round(du_gb(data), 2)}
            if kind == "clean":
                # A burst just before the kill (another topic: produce recreates its topic), so
                # the unclean start has an unflushed tail to scan.
                load("produce", "--topic", "recovery-tail", "--record-size", "1024",
                     "--acks", "1", "--records", "200000")
                stop(proc, signal.SIGKILL)
            else:
                # Everything is still there: read both topics back in full.
                for topic, n in [("recovery", records), ("recovery-tail", 200000)]:
                    got = load("consume", "--topic", topic, "--records", str(n),
                               "--partitions", str(a.partitions))
                    results[kind][f"read_back_{topic}"] = got["records"]
                    results[kind][f"read_back_{topic}_mb_per_s"] = round(got["mb_per_s"])
                results[kind]["peak_rss_mb"] = round(peak_rss_mb(proc.pid), 1)
                stop(proc, signal.SIGTERM)
    finally:
        if not a.keep:
            shutil.rmtree(data, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
