#!/usr/bin/env python3
"""KIP-227 fetch sessions: what one consumer of 1000 mostly idle partitions costs, with and
without an incremental fetch session (design notes §7.4).

For each mode it starts a fresh in-memory broker (target/release/ottla, or $OTTLA_BIN) on a
free loopback port (or $PORT), creates one topic of --partitions partitions and runs:
  - one kafka-python consumer (a child process, so its CPU is its own) assign()ed to every
    partition, fetch_max_wait_ms=500, fetch_min_bytes=1, enable_incremental_fetch_sessions
    True ("sessions") or False ("sessionless");
  - one kafka-python producer in this process writing --record-bytes records to ONE
    partition at --rate records/s, linger_ms=0, acks=1;
  - for --seconds, after the consumer's warm-up (assignment, offsets, a few fetches);
plus, unless --no-baseline, a "produce only" run without a consumer, the broker's CPU for
the produce side alone.

It reports per mode: fetch requests sent and answered (counted on the client), incremental
fetches (epoch > 0) among them, broker CPU-seconds (utime + stime of /proc/PID/stat over the
window), broker µs per fetch (all of the broker's CPU, the produce side included, divided by
the fetches; "net" subtracts the produce-only baseline), consumer CPU-seconds
(time.process_time of the consumer process), records consumed, and bytes received by the
consumer (every byte read off its sockets, so nearly all fetch responses) per fetch. Then a
table and one line of JSON.

Usage (from the repository root):
  compat-tests/.venv/bin/python benches/fetch_sessions.py [--seconds 20] [--rate 200]
      [--partitions 1000] [--record-bytes 1024] [--modes sessions,sessionless] [--no-baseline]
      [--broker-arg ARG]...
Needs: cargo build --release; kafka-python 3.x (compat-tests/.venv has it).
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OTTLA = os.environ.get("OTTLA_BIN", os.path.join(ROOT, "target/release/ottla"))
READY = re.compile(r"ottla ready on ")
BROKERS = []  # every broker started, killed at exit whatever happens
CHILDREN = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(port, extra_args=()):
    bootstrap = f"127.0.0.1:{port}"
    proc = subprocess.Popen(
        [OTTLA, "--memory", "--listen", bootstrap, "--advertise", bootstrap,
         "--auto-create-topics", "false", *extra_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    BROKERS.append(proc)
    lines, ready = [], threading.Event()

    def drain():
        # Reads stderr to the end so the broker never blocks; after "ready", echoes only
        # warnings and errors.
        for line in proc.stderr:
            if ready.is_set():
                if "WARN" in line or "ERROR" in line:
                    sys.stderr.write(line)
                continue
            lines.append(line)
            if READY.search(line):
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.time() + 30
    while not ready.wait(0.1):
        if proc.poll() is not None or time.time() > deadline:
            raise SystemExit("broker did not become ready:\n" + "".join(lines[-20:]))
    return proc, bootstrap


def stop_broker(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def create_topic(bootstrap, name, partitions):
    from kafka.admin import KafkaAdminClient, NewTopic
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-admin")
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


class Producer(threading.Thread):
    """`rate` records/s of `size` bytes to partition 0, until stopped."""

    def __init__(self, bootstrap, topic, rate, size):
        super().__init__(daemon=True)
        from kafka import KafkaProducer
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
        self.topic, self.rate, self.size = topic, rate, size
        self.stop = threading.Event()
        self.sent = 0
        self.error = None

    def run(self):
        payload = os.urandom(self.size)
        t0 = time.monotonic()
        try:
            while not self.stop.is_set():
                due = t0 + self.sent / self.rate
                now = time.monotonic()
                if due > now:
                    time.sleep(min(due - now, 0.05))
                    continue
                self.producer.send(self.topic, value=payload, key=b"%d" % self.sent, partition=0)
                self.sent += 1
            self.producer.flush(30)
        except Exception as e:
            self.error = e
        finally:
            self.producer.close(10)


# --- the consumer (child process) ---------------------------------------------------------

def consumer_main(args):
    """Runs in the child: warm up, print READY, measure between GO and STOP on stdin, print
    one JSON line."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.metrics.stats import Total

    sessions = args.consumer == "sessions"
    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=500, fetch_min_bytes=1,
        enable_incremental_fetch_sessions=sessions)
    fetcher = consumer._fetcher
    counts = {"requests": 0, "responses": 0, "incremental": 0, "response_partitions": 0,
              "session_ids": set(), "fetch_errors": 0}

    create = fetcher._create_fetch_requests
    handle = fetcher._handle_fetch_response

    def counting_create():
        reqs = create()
        for request, _ in reqs.values():
            counts["requests"] += 1
            if getattr(request, "session_epoch", -1) > 0:
                counts["incremental"] += 1
        return reqs

    def counting_handle(node_id, fetch_offsets, send_time, response):
        counts["responses"] += 1
        counts["response_partitions"] += sum(len(t.partitions) for t in response.responses)
        counts["session_ids"].add(getattr(response, "session_id", 0))
        if getattr(response, "error_code", 0):
            counts["fetch_errors"] += 1
        return handle(node_id, fetch_offsets, send_time, response)

    fetcher._create_fetch_requests = counting_create
    fetcher._handle_fetch_response = counting_handle

    consumer.assign([TopicPartition(args.topic, p) for p in range(args.partitions)])
    records = [0, 0]  # count, value bytes

    def poll(ms):
        for msgs in consumer.poll(timeout_ms=ms, max_records=10000).values():
            records[0] += len(msgs)
            records[1] += sum(len(m.value or b"") for m in msgs)

    deadline = time.time() + 30
    while counts["responses"] < 4 and time.time() < deadline:
        poll(200)
    if counts["responses"] < 4:
        raise SystemExit("consumer: no fetch responses during warm-up")

    # every byte read off the consumer's sockets (nearly all of it fetch responses)
    received = Total()
    consumer._metrics.get_sensor("bytes-received").add(
        consumer._metrics.metric_name("bench-bytes-received-total", "bench"), received)
    sent_bytes = Total()
    consumer._metrics.get_sensor("bytes-sent").add(
        consumer._metrics.metric_name("bench-bytes-sent-total", "bench"), sent_bytes)

    go, stop = threading.Event(), threading.Event()

    def control():
        for line in sys.stdin:
            (go if line.strip() == "GO" else stop).set()
        stop.set()

    threading.Thread(target=control, daemon=True).start()
    print("READY", flush=True)
    while not go.is_set():
        poll(100)
    snap = dict(counts, records=records[0], value_bytes=records[1], rx=received._total,
                tx=sent_bytes._total, cpu=time.process_time(), wall=time.monotonic())
    while not stop.is_set():
        poll(100)
    end = dict(counts, records=records[0], value_bytes=records[1], rx=received._total,
               tx=sent_bytes._total, cpu=time.process_time(), wall=time.monotonic())
    handlers = {n: (h.next_metadata.session_id, h.next_metadata.epoch)
                for n, h in fetcher._session_handlers.items()}
    out = {k: end[k] - snap[k] for k in ("requests", "responses", "incremental",
                                         "response_partitions", "fetch_errors", "records",
                                         "value_bytes", "rx", "tx", "cpu", "wall")}
    out["session_ids"] = sorted(end["session_ids"])
    out["handlers"] = {str(k): v for k, v in handlers.items()}
    consumer.close()
    print(json.dumps(out), flush=True)


# --- the driver ---------------------------------------------------------------------------

def run_mode(mode, args):
    port = int(os.environ["PORT"]) if os.environ.get("PORT") else free_port()
    broker, bootstrap = start_broker(port, args.broker_arg)
    try:
        topic = f"fetch-sessions-{mode}-{os.getpid()}"
        create_topic(bootstrap, topic, args.partitions)
        child = None
        if mode != "produce-only":
            child = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--consumer", mode,
                 "--bootstrap", bootstrap, "--topic", topic, "--partitions", str(args.partitions)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            CHILDREN.append(child)
            line = child.stdout.readline()
            if line.strip() != "READY":
                raise SystemExit(f"{mode}: consumer did not get ready: {line!r}")
        producer = Producer(bootstrap, topic, args.rate, args.record_bytes)
        cpu0, t0 = cpu_seconds(broker.pid), time.monotonic()
        if child:
            child.stdin.write("GO\n")
            child.stdin.flush()
        producer.start()
        time.sleep(args.seconds)
        producer.stop.set()
        producer.join(30)
        time.sleep(1.0)  # let the consumer read the last records (every mode: same window)
        if child:
            child.stdin.write("STOP\n")
            child.stdin.flush()
        cpu1, t1 = cpu_seconds(broker.pid), time.monotonic()
        res = {"mode": mode, "produced": producer.sent, "broker_cpu_s": cpu1 - cpu0,
               "window_s": t1 - t0}
        if producer.error:
            raise SystemExit(f"{mode}: producer failed: {producer.error!r}")
        if child:
            line = child.stdout.readline()
            child.stdin.close()
            child.wait(30)
            if not line.strip():
                raise SystemExit(f"{mode}: consumer printed no result (exit {child.returncode})")
            res.update(json.loads(line))
        return res
    finally:
        stop_broker(broker)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rate", type=float, default=200, help="records/s to the one partition")
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--record-bytes", type=int, default=1024)
    ap.add_argument("--modes", default="sessions,sessionless")
    ap.add_argument("--no-baseline", action="store_true", help="skip the produce-only run")
    ap.add_argument("--broker-arg", action="append", default=[],
                    help="extra broker argument (repeatable; OTTLA_* settings in the "
                         "environment reach the broker too)")
    # child role
    ap.add_argument("--consumer", choices=["sessions", "sessionless"], help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--topic", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.consumer:
        return consumer_main(args)

    if not os.access(OTTLA, os.X_OK):
        raise SystemExit(f"no broker binary at {OTTLA} (cargo build --release, or set OTTLA_BIN)")
    modes = [m for m in args.modes.split(",") if m]
    if not args.no_baseline:
        modes.append("produce-only")
    print(f"# {OTTLA}; {args.partitions} partitions, {args.rate:g} records/s of "
          f"{args.record_bytes} B to one partition, {args.seconds:g} s per mode, "
          f"fetch_max_wait_ms 500, fetch_min_bytes 1; fresh broker per mode"
          + (f"; broker args {' '.join(args.broker_arg)}" if args.broker_arg else ""))
    results = []
    try:
        for mode in modes:
            res = run_mode(mode, args)
            results.append(res)
            print(f"# {mode}: done", file=sys.stderr, flush=True)
    finally:
        for c in CHILDREN:
            if c.poll() is None:
                c.kill()
                c.wait()
        for b in BROKERS:
            if b.poll() is None:
                b.kill()
                b.wait()

    base = next((r for r in results if r["mode"] == "produce-only"), None)
    rows = []
    for r in results:
        if r["mode"] == "produce-only":
            continue
        fetches = r["responses"] or 1
        r["broker_us_per_fetch"] = 1e6 * r["broker_cpu_s"] / fetches
        if base:
            scale = r["window_s"] / base["window_s"]
            r["broker_net_us_per_fetch"] = 1e6 * (r["broker_cpu_s"] - base["broker_cpu_s"] * scale) / fetches
        r["fetches_per_s"] = r["responses"] / r["wall"]
        r["rx_bytes_per_fetch"] = r["rx"] / fetches
        r["tx_bytes_per_fetch"] = r["tx"] / fetches
        r["partitions_per_response"] = r["response_partitions"] / fetches
        r["client_cpu_ms_per_fetch"] = 1000 * r["cpu"] / fetches
        rows.append(r)

    hdr = (f"{'mode':<12} {'fetches':>8} {'/s':>6} {'incr':>6} {'broker CPU s':>12} "
           f"{'µs/fetch':>9} {'net µs':>8} {'client CPU s':>12} {'ms/fetch':>8} "
           f"{'records':>8} {'produced':>8} {'rx B/fetch':>10} {'tx B/fetch':>10} {'parts/resp':>10}")
    print(hdr)
    for r in rows:
        net = f"{r['broker_net_us_per_fetch']:8.0f}" if "broker_net_us_per_fetch" in r else f"{'-':>8}"
        print(f"{r['mode']:<12} {r['responses']:>8} {r['fetches_per_s']:>6.1f} {r['incremental']:>6} "
              f"{r['broker_cpu_s']:>12.2f} {r['broker_us_per_fetch']:>9.0f} {net} "
              f"{r['cpu']:>12.2f} {r['client_cpu_ms_per_fetch']:>8.2f} {r['records']:>8} "
              f"{r['produced']:>8} {r['rx_bytes_per_fetch']:>10.0f} {r['tx_bytes_per_fetch']:>10.0f} "
              f"{r['partitions_per_response']:>10.1f}")
        if r["records"] < r["produced"]:
            print(f"  warning: {r['mode']}: consumed {r['records']} of {r['produced']} records "
                  f"in the window", file=sys.stderr)
        if r["mode"] == "sessions" and not r["incremental"]:
            print(f"  warning: sessions: no incremental fetch (session ids seen {r['session_ids']}): "
                  f"the broker created no fetch session", file=sys.stderr)
        if r["fetch_errors"]:
            print(f"  warning: {r['mode']}: {r['fetch_errors']} fetch responses with an error code",
                  file=sys.stderr)
    if base:
        print(f"{'produce-only':<12} broker CPU {base['broker_cpu_s']:.2f} s over "
              f"{base['window_s']:.1f} s ({base['produced']} records)")
    summary = {"partitions": args.partitions, "rate": args.rate, "seconds": args.seconds,
               "record_bytes": args.record_bytes, "binary": OTTLA}
    for r in rows:
        summary[r["mode"]] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                              if k not in ("mode",)}
    if base:
        summary["produce_only"] = {"broker_cpu_s": round(base["broker_cpu_s"], 3),
                                   "window_s": round(base["window_s"], 3), "produced": base["produced"]}
    s, n = summary.get("sessions"), summary.get("sessionless")
    if s and n:
        summary["ratio_sessions_over_sessionless"] = {
            k: round(s[k] / n[k], 3) if n[k] else None
            for k in ("broker_us_per_fetch", "rx_bytes_per_fetch", "tx_bytes_per_fetch",
                      "client_cpu_ms_per_fetch")}
    print("JSON " + json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
