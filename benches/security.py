#!/usr/bin/env python3
"""The cost of TLS and SASL: PLAINTEXT against SASL_SSL (SCRAM-SHA-512) on one local broker,
with `ottla-load` (librdkafka) as the client, plus connection setup times.

For each round and each protocol (alternately, --rounds times) ottla-load starts a fresh
disk-mode broker with both listeners (a test CA and server certificate made with openssl, a
bootstrap user) and runs:

- `produce --acks 1 --record-size 1024 --records N --partitions 3 --json`;
- `consume --prefill --record-size 1024 --records N --partitions 3 --json`.

ottla-load measures the broker's CPU (utime + stime of the process it started) per GB of
payload and checks every record is acknowledged (produce) or read back (consume); a failed
run is fatal. SASL_SSL runs pass `--client-prop security.protocol=SASL_SSL` and the SCRAM and
CA settings to every client (admin included); PLAINTEXT runs the same broker command.

Connection setup (--connections, default 200, sequential, stdlib only): TCP connect and
ApiVersions on PLAINTEXT; the same over TLS (handshake included); and over SASL_SSL with
SaslHandshake + the two SaslAuthenticate round trips of SCRAM-SHA-512 (client side in Python:
hashlib's PBKDF2 and HMAC), i.e. what a client pays before its first real request. Reported
as p50 / p99 in ms.

    cargo build --release --bin ottla && cargo build --release -p ottla-loadgen
    python3 benches/security.py --rounds 2

Ports below 32768, never 9092/9093; loopback only.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OTTLA = os.path.join(REPO, "target", "release", "ottla")
LOAD = os.path.join(REPO, "target", "release", "ottla-load")
USER, PASSWORD = "bench", "bench-secret"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--connections", type=int, default=200)
    return ap.parse_args()


def free_port():
    while True:
        p = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                continue


def make_certs(d):
    def run(*a):
        subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=bench CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    with open(os.path.join(d, "san.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "san.cnf")


def broker_cmd(d, plain, secure, data):
    return (f"{OTTLA} --listen PLAINTEXT://127.0.0.1:{plain} --advertise PLAINTEXT://127.0.0.1:{plain} "
            f"--listen SASL_SSL://127.0.0.1:{secure} --advertise SASL_SSL://127.0.0.1:{secure} "
            f"--tls-cert-file {d}/server.pem --tls-key-file {d}/server.key "
            f"--bootstrap-user {USER}:{PASSWORD} --data-dir {data}")


def secure_props(d):
    props = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
             "sasl.username": USER, "sasl.password": PASSWORD, "ssl.ca.location": f"{d}/ca.pem"}
    return [x for k, v in props.items() for x in ("--client-prop", f"{k}={v}")]


def load(d, mode, protocol, records):
    plain, secure = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="ottla-bench-sec-", dir=d)
    port = plain if protocol == "PLAINTEXT" else secure
    args = [LOAD, mode, "--broker-cmd", broker_cmd(d, plain, secure, data), "--broker-port", str(port),
            "--record-size", "1024", "--records", str(records), "--partitions", "3", "--json"]
    if mode == "produce":
        args += ["--acks", "1"]
    else:
        args += ["--prefill"]
    if protocol == "SASL_SSL":
        args += secure_props(d)
    out = subprocess.run(args, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        sys.exit(f"ottla-load {mode} over {protocol} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    rep = json.loads(out.stdout.strip().splitlines()[-1])
    if rep.get("missing") or rep.get("errors") or rep.get("duplicates"):
        sys.exit(f"ottla-load {mode} over {protocol}: {rep}")
    subprocess.run(["rm", "-rf", data])
    return rep


# --- connection setup ---------------------------------------------------------------------

def frame(api_key, version, corr, body=b"", flexible=False):
    header = struct.pack(">hhih", api_key, version, corr, 5) + b"bench"
    if flexible:
        header += b"\x00"  # header tagged fields
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def recv_frame(s):
    def recvn(n):
        b = b""
        while len(b) < n:
            c = s.recv(n - len(b))
            if not c:
                raise ConnectionError("closed")
            b += c
        return b
    (n,) = struct.unpack(">i", recvn(4))
    return recvn(n)


def kstring(b):
    return struct.pack(">h", len(b)) + b


def kbytes(b):
    return struct.pack(">i", len(b)) + b


def scram_exchange(s):
    """SaslHandshake v1 + SCRAM-SHA-512 over SaslAuthenticate v0 (non-flexible)."""
    s.sendall(frame(17, 1, 2, kstring(b"SCRAM-SHA-512")))
    r = recv_frame(s)
    assert struct.unpack(">h", r[4:6])[0] == 0, r
    nonce = base64.b64encode(os.urandom(18)).decode()
    bare = f"n={USER},r={nonce}"
    s.sendall(frame(36, 0, 3, kbytes(("n,," + bare).encode())))
    r = recv_frame(s)
    code = struct.unpack(">h", r[4:6])[0]
    assert code == 0, r
    msg_len = struct.unpack(">h", r[6:8])[0]
    off = 8 + max(msg_len, 0)
    (n,) = struct.unpack(">i", r[off:off + 4])
    server_first = r[off + 4:off + 4 + n].decode()
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha512", PASSWORD.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha512").digest()
    stored = hashlib.sha512(client_key).digest()
    without_proof = f"c=biws,r={attrs['r']}"
    auth = f"{bare},{server_first},{without_proof}".encode()
    sig = hmac.new(stored, auth, "sha512").digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
    s.sendall(frame(36, 0, 4, kbytes(f"{without_proof},p={proof}".encode())))
    r = recv_frame(s)
    assert struct.unpack(">h", r[4:6])[0] == 0, r


def setup_times(d, n):
    plain, secure = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="ottla-bench-sec-", dir=d)
    log = open(os.path.join(d, "setup-broker.log"), "w")
    cmd = broker_cmd(d, plain, secure, data)
    proc = subprocess.Popen(["sh", "-c", "exec " + cmd], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", secure), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("broker not ready")
                time.sleep(0.05)
        time.sleep(0.3)  # the bootstrap user is created before ready
        ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")
        results = {}
        for kind in ("PLAINTEXT", "TLS", "TLS+SCRAM-SHA-512"):
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                port = plain if kind == "PLAINTEXT" else secure
                raw = socket.create_connection(("127.0.0.1", port))
                s = raw if kind == "PLAINTEXT" else ctx.wrap_socket(raw, server_hostname="localhost")
                s.sendall(frame(18, 0, 1))
                recv_frame(s)
                if kind == "TLS+SCRAM-SHA-512":
                    scram_exchange(s)
                times.append((time.perf_counter() - t0) * 1000)
                s.close()
            times.sort()
            results[kind] = (statistics.median(times), times[int(len(times) * 0.99) - 1])
        return results
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def main():
    args = parse_args()
    for path in (OTTLA, LOAD):
        if not os.path.exists(path):
            sys.exit(f"missing {path}: cargo build --release --bin ottla && cargo build --release -p ottla-loadgen")
    d = tempfile.mkdtemp(prefix="ottla-bench-security-")
    make_certs(d)
    rows = []
    for rnd in range(1, args.rounds + 1):
        for protocol in ("PLAINTEXT", "SASL_SSL"):
            for mode in ("produce", "consume"):
                rep = load(d, mode, protocol, args.records)
                rows.append((rnd, protocol, mode, rep))
                print(f"round {rnd} {protocol:9} {mode:7}: {rep['msgs_per_s']:>9.0f} msgs/s "
                      f"{rep['mb_per_s']:>7.1f} MB/s broker {rep.get('cpu_s_per_gb')} CPU-s/GB", flush=True)
    print("\n| round | protocol | workload | msgs/s | MB/s | broker CPU-s/GB |")
    print("|---|---|---|---|---|---|")
    for rnd, protocol, mode, rep in rows:
        print(f"| {rnd} | {protocol} | {mode} | {rep['msgs_per_s']:.0f} | {rep['mb_per_s']:.1f} | {rep.get('cpu_s_per_gb')} |")
    setup = setup_times(d, args.connections)
    print(f"\nconnection setup ({args.connections} sequential connections each, ms):")
    print("| kind | p50 | p99 |")
    print("|---|---|---|")
    for kind, (p50, p99) in setup.items():
        print(f"| {kind} | {p50:.2f} | {p99:.2f} |")


if __name__ == "__main__":
    main()
