"""A cluster of ottla processes on loopback for the compat tests (fixture `cluster3` in
conftest.py): every node in combined mode (broker + controller) with its own free client and
controller ports (never 9092) and its own temporary data directory, all started with the same
--controller-quorum-voters list, from OTTLA_BIN (default <repo>/target/release/ottla).

Cluster(n).start() spawns every node, waits for each ready line, then polls Metadata (confluent
list_topics) on every node until all n brokers are listed and every node names the same
controller; a start whose ports were taken in the meantime is retried with new ones. stop()
sends SIGTERM to all and checks each exits 0 without a panic; kill(node_id) is SIGKILL;
start_node(node_id) starts one again on its ports and data directory. Logs: one file per node,
appended to across runs; tails() gives the last lines of each.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time

from groups.broker import OTTLA_BIN, _die_with_parent, free_port

READY_TIMEOUT_S = 30
AGREE_TIMEOUT_S = 30
STOP_TIMEOUT_S = 20
START_ATTEMPTS = 5
RESERVED_PORTS = {9092, 9093}  # the main compat broker's, and Kafka's usual controller port


def cluster_free_port(taken):
    while True:
        port = free_port()
        if port not in RESERVED_PORTS and port not in taken:
            taken.add(port)
            return port


class Node:
    def __init__(self, node_id, root, client_port, controller_port, host="127.0.0.1", wrap=()):
        """`host`: the address this node listens on and advertises; `wrap`: a command prefix
        (e.g. `ip netns exec NS`, which execs the broker in place: same pid)."""
        self.id = node_id
        self.host = host
        self.wrap = list(wrap)
        self.client_port = client_port
        self.controller_port = controller_port
        self.data_dir = os.path.join(root, f"node{node_id}")
        self.log_path = os.path.join(root, f"node{node_id}.log")
        self.proc = None
        self.runs = 0
        self._run_offset = 0
        self.spawned_at = None
        self.ready_at = None
        # The controller listener's security protocol (None: PLAINTEXT, no prefix).
        self.controller_protocol = None

    @property
    def bootstrap(self):
        return f"{self.host}:{self.client_port}"

    @property
    def controller_listen(self):
        addr = f"{self.host}:{self.controller_port}"
        return f"{self.controller_protocol}://{addr}" if self.controller_protocol else addr

    def spawn(self, voters, extra_args=(), extra_env=None):
        assert self.proc is None, f"node {self.id} already runs"
        if not os.path.isfile(OTTLA_BIN):
            raise RuntimeError(f"no broker binary at {OTTLA_BIN}: cargo build --release --bin ottla, "
                               "or set OTTLA_BIN")
        os.makedirs(self.data_dir, exist_ok=True)
        args = [*self.wrap, OTTLA_BIN, "--node-id", str(self.id), "--data-dir", self.data_dir,
                "--listen", self.bootstrap, "--advertise", self.bootstrap,
                "--controller-listen", self.controller_listen,
                "--controller-quorum-voters", voters, *extra_args]
        self.runs += 1
        with open(self.log_path, "ab") as f:
            f.write(f"----- run #{self.runs}: {' '.join(args)}\n".encode())
            self._run_offset = f.tell()
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1",
                   **(extra_env or {}))
        self.spawned_at = time.monotonic()
        self.ready_at = None
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=env, preexec_fn=_die_with_parent)

    def run_log(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._run_offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def full_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def tail(self, n=60):
        return "\n".join(self.full_log().splitlines()[-n:])

    def poll_ready(self):
        """True once this run printed its ready line; raises if the process exited first."""
        if self.ready_at is not None:
            return True
        if "ottla ready on" in self.run_log():
            self.ready_at = time.monotonic()
            return True
        if self.proc is not None and self.proc.poll() is not None:
            rc, self.proc = self.proc.returncode, None
            raise NodeExited(self.id, rc, self.run_log())
        return False

    def signal(self, sig):
        if self.proc is not None:
            self.proc.send_signal(sig)

    def wait(self, timeout):
        if self.proc is None:
            return None
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            raise AssertionError(f"node {self.id} did not exit within {timeout} s:\n{self.tail()}")
        self.proc = None
        return rc

    def kill_hard(self):
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait(10)
            except Exception:
                pass
            self.proc = None


class NodeExited(Exception):
    def __init__(self, node_id, rc, log):
        super().__init__(f"node {node_id} exited with {rc} before it was ready:\n{log[-4000:]}")
        self.log = log


def answered_by(md):
    """The HOST:PORT of the broker that gave a confluent-kafka Metadata answer (its
    orig_broker_name is HOST:PORT/ID, or HOST:PORT/bootstrap before the id is known)."""
    return md.orig_broker_name.rsplit("/", 1)[0]


def metadata_from(bootstrap, topic=None, timeout=10, attempts=20):
    """confluent-kafka's Metadata from the broker `bootstrap` itself: a fresh AdminClient with
    it as the only bootstrap broker. librdkafka may ask another broker it has learned of
    meanwhile (the answer says which one): such answers are discarded and asked again."""
    from confluent_kafka.admin import AdminClient

    for _ in range(attempts):
        admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 5000})
        md = admin.list_topics(topic=topic, timeout=timeout)
        if answered_by(md) == bootstrap:
            return md
    raise AssertionError(f"{attempts} Metadata requests with bootstrap {bootstrap} were all answered "
                         f"by other brokers (last: {md.orig_broker_name})")


class Cluster:
    def __init__(self, n=3, extra_args=(), first_client_port=None, extra_env=None):
        """`first_client_port`: node 1's client port (e.g. 9092, for the seed samples that
        hard-code localhost:9092); the other ports are free ones."""
        self.n = n
        self.first_client_port = first_client_port
        self.extra_args = list(extra_args)
        self.extra_env = dict(extra_env or {})
        self.root = tempfile.mkdtemp(prefix="ottla-cluster-")
        self.nodes = []
        self.voters = ""
        self.startup_s = None

    @property
    def bootstrap(self):
        """Every node's client address, comma-separated."""
        return ",".join(nd.bootstrap for nd in self.nodes)

    def node(self, node_id):
        return self.nodes[node_id - 1]

    def start(self):
        last = None
        for attempt in range(1, START_ATTEMPTS + 1):
            taken = set() if self.first_client_port is None else {self.first_client_port}
            root = os.path.join(self.root, f"attempt{attempt}")

            def client_port(i):
                if i == 1 and self.first_client_port is not None:
                    return self.first_client_port
                return cluster_free_port(taken)

            self.nodes = self.make_nodes(root, client_port, lambda: cluster_free_port(taken))
            self.voters = ",".join(f"{nd.id}@{nd.host}:{nd.controller_port}" for nd in self.nodes)
            t0 = time.monotonic()
            for nd in self.nodes:
                nd.spawn(self.voters, self.extra_args, self.extra_env)
            try:
                self.wait_ready(self.nodes)
            except NodeExited as e:
                self.kill_all()
                if "cannot listen on" in e.log and attempt < START_ATTEMPTS:
                    last = e
                    continue
                raise
            self.wait_agree()
            self.startup_s = time.monotonic() - t0
            return self
        raise RuntimeError(f"no free ports after {START_ATTEMPTS} attempts: {last}")

    def make_nodes(self, root, client_port, free):
        """The nodes of one start attempt (subclasses place them elsewhere)."""
        return [Node(i, root, client_port(i), free()) for i in range(1, self.n + 1)]

    def wait_ready(self, nodes):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(nd.poll_ready() for nd in nodes):
            if time.monotonic() > deadline:
                late = [nd.id for nd in nodes if nd.ready_at is None]
                raise AssertionError(f"nodes {late} not ready after {READY_TIMEOUT_S} s:\n{self.tails()}")
            time.sleep(0.02)

    def views(self, ids=None):
        """{node id: (controller id, sorted broker ids) or the error}, from each node's own
        Metadata."""
        out = {}
        for nd in self.nodes:
            if ids is not None and nd.id not in ids:
                continue
            try:
                md = metadata_from(nd.bootstrap, timeout=5)
                out[nd.id] = (md.controller_id, sorted(md.brokers))
            except Exception as e:  # noqa: BLE001 - reported as the node's view
                out[nd.id] = repr(e)
        return out

    def wait_agree(self, ids=None):
        """Every node of `ids` (default all) lists the brokers `ids` and names itself as the
        controller clients send admin requests to (as KRaft Kafka names an alive broker: every
        broker forwards them to the active controller)."""
        ids = sorted(ids or [nd.id for nd in self.nodes])
        deadline = time.monotonic() + AGREE_TIMEOUT_S
        while True:
            views = self.views(ids)
            if all(isinstance(v, tuple) and v[1] == ids and v[0] == node_id
                   for node_id, v in views.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes {ids} did not agree within {AGREE_TIMEOUT_S} s: {views}\n"
                                     f"{self.tails()}")
            time.sleep(0.05)

    def kill(self, node_id):
        """SIGKILL one node and wait for it."""
        nd = self.node(node_id)
        nd.signal(signal.SIGKILL)
        nd.wait(STOP_TIMEOUT_S)

    def start_node(self, node_id):
        """Starts a stopped node again (same ports, same data directory), waits for its ready line."""
        nd = self.node(node_id)
        nd.spawn(self.voters, self.extra_args, self.extra_env)
        self.wait_ready([nd])

    def stop(self):
        """SIGTERM to every node at once; each must exit 0 without a panic."""
        running = [nd for nd in self.nodes if nd.proc is not None]
        for nd in running:
            nd.signal(signal.SIGTERM)
        problems = []
        for nd in running:
            rc = nd.wait(STOP_TIMEOUT_S)
            if rc != 0:
                problems.append(f"node {nd.id} exited with {rc} on SIGTERM")
        for nd in self.nodes:
            if "panicked" in nd.full_log():
                problems.append(f"node {nd.id} panicked")
        assert not problems, f"{problems}:\n{self.tails()}"

    def kill_all(self):
        for nd in self.nodes:
            nd.kill_hard()

    def tails(self, n=60):
        return "\n".join(f"----- node {nd.id} (client {nd.client_port}, controller {nd.controller_port}, "
                         f"log {nd.log_path}) -----\n{nd.tail(n)}" for nd in self.nodes)

    def cleanup(self):
        self.kill_all()
        if os.environ.get("OTTLA_CLUSTER_KEEP") == "1":
            print(f"\nkept the cluster's files in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def serve(argv):
    """`python cluster.py serve [--nodes N] [--first-client-port P] [--ready-file F] [-- ARGS]`:
    starts a cluster (ARGS go to every node), writes its bootstrap list to the ready file (or
    prints it), and keeps it running until SIGTERM or SIGINT; then stops every node and exits 0
    only if each exited 0 without a panic (the node logs' tails are printed otherwise).
    scripts/test runs the group and transaction compat files against such a cluster."""
    import argparse

    ap = argparse.ArgumentParser(prog="cluster.py serve")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--first-client-port", type=int)
    ap.add_argument("--ready-file")
    ap.add_argument("node_args", nargs="*")
    a = ap.parse_args(argv)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    c = Cluster(a.nodes, a.node_args, first_client_port=a.first_client_port)
    ok = False
    try:
        c.start()
        print(f"cluster of {a.nodes} ready in {c.startup_s * 1000:.0f} ms: {c.bootstrap} (files in {c.root})",
              flush=True)
        if a.ready_file:
            with open(a.ready_file + ".tmp", "w") as f:
                f.write(c.bootstrap + "\n")
            os.replace(a.ready_file + ".tmp", a.ready_file)
        while not stop:
            dead = [nd.id for nd in c.nodes if nd.proc is not None and nd.proc.poll() is not None]
            if dead:
                raise AssertionError(f"nodes {dead} exited while serving")
            time.sleep(0.1)
        c.stop()
        ok = True
    except Exception as e:  # noqa: BLE001 - reported, with the logs
        print(f"cluster failed: {e}\n{c.tails()}", flush=True)
    finally:
        c.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: python cluster.py serve [--nodes N] [--first-client-port P] [--ready-file F] [-- ARGS]")
    sys.exit(serve(sys.argv[2:]))
