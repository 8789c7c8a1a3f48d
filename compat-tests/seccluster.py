"""The brokers of the security compat tests (test_security.py, test_acls.py, test_quotas.py):
each of their module fixtures is parametrized with KINDS, so the same test functions run
against

- `single`: one broker of this binary (OTTLA_BIN), its listeners on free loopback ports;
- `cluster3`: a 3-node cluster of it (combined mode, one quorum), every node with the same
  listeners, the same TLS files, the same bootstrap users and authorizer settings, and
  inter-broker and controller traffic over SASL_SSL (`inter_broker_listener = "SASL_SSL"`,
  `controller_listen = "SASL_SSL://..."`, SCRAM-SHA-512 as the user BROKER_USER, a super user
  wherever `super_users` is set). Its topics are of
  replication factor 3 (`default_replication_factor = 3`, and tests pass
  `b.replication_factor` to CreateTopics) with `min_insync_replicas = 3`, so an acks=all
  produce is acknowledged only once both followers fetched it over SASL_SSL.

Both offer the interface the tests use: `addr(proto)` (a bootstrap list: every node's
listener of that protocol), `bootstrap` (PLAINTEXT), `node_addrs(proto)` (one address per
node, to talk to a node alone), `root` (the TLS files: ca.pem, server.pem, client.pem),
`run_log()` (every node's log of this run), `node_logs()` (one per node), `tail(n)`,
`sighup()` (every node), `leader(topic)`, `other_node_addr(proto, topic)` (a node that does not lead the topic's partition 0: the broker
itself when there is one), `assert_replicated(topic)`, `stop()`, `cleanup()`;
`replication_factor` is 1 or 3, `kind` "single" or "cluster3". `start_broker(kind, ...)`
starts one outside a fixture (test_security's mutual-TLS tests).
"""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time

from cluster import Cluster, Node
from groups.broker import OwnBroker, environment, free_port

KINDS = ["single", "cluster3"]
BROKER_USER, BROKER_PASSWORD = "broker", "broker-secret"
TLS_PROTOCOLS = {"SSL", "SASL_SSL"}


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d, name="server"):
    """A CA (made once per directory), a server certificate `name`.pem for localhost/127.0.0.1
    signed by it, and a client one (client.pem, CN=test-client,O=ottla); called again, new
    certificates from the same CA over the same files."""
    if not os.path.exists(os.path.join(d, "ca.pem")):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                "-days", "2", "-subj", "/CN=ottla test CA", cwd=d)
    with open(os.path.join(d, "san.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for who, subj in ((name, "/CN=localhost"), ("client", "/CN=test-client/O=ottla")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key", "-out", f"{who}.csr",
                "-subj", subj, cwd=d)
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{who}.pem", "-days", "2", "-extfile", "san.cnf", cwd=d)


def tls_args(root):
    return ["--tls-cert-file", os.path.join(root, "server.pem"),
            "--tls-key-file", os.path.join(root, "server.key")]


def listener_args(host, ports):
    args = []
    for proto, port in ports.items():
        if proto != "PLAINTEXT":
            args += ["--listen", f"{proto}://{host}:{port}", "--advertise", f"{proto}://{host}:{port}"]
    return args


class _Common:
    """What both kinds answer the same way, from `addr`, `node_addrs` and `meta`."""

    def _admin(self):
        from confluent_kafka.admin import AdminClient
        proto, conf = self.meta
        return AdminClient({**conf, "bootstrap.servers": self.addr(proto)})

    def partitions(self, topic, timeout=20):
        """{partition: (leader, replicas, isrs)} once every partition has a leader."""
        admin, deadline = self._admin(), time.monotonic() + timeout
        while True:
            md = admin.list_topics(topic, timeout=10).topics.get(topic)
            if md is not None and md.error is None and md.partitions and all(
                    p.leader >= 0 for p in md.partitions.values()):
                return {p.id: (p.leader, sorted(p.replicas), sorted(p.isrs))
                        for p in md.partitions.values()}
            assert time.monotonic() < deadline, f"{topic}: no leaders: {md and md.error}"
            time.sleep(0.2)

    def leader(self, topic, partition=0):
        return self.partitions(topic)[partition][0]

    def other_node_addr(self, proto, topic):
        """A node's address of `proto` that does not lead the topic's partition 0 (the single
        broker's own address when there is only one)."""
        ids = self.node_ids()
        if len(ids) == 1:
            return self.addr(proto)
        leader = self.leader(topic)
        return self.node_addrs(proto)[ids.index(next(i for i in ids if i != leader))]

    def assert_replicated(self, topic, timeout=20):
        """Every partition of `topic` has `replication_factor` replicas, all in sync."""
        deadline = time.monotonic() + timeout
        while True:
            parts = self.partitions(topic)
            if all(len(r) == self.replication_factor and i == r for _, r, i in parts.values()):
                return parts
            assert time.monotonic() < deadline, (topic, parts)
            time.sleep(0.2)


class SingleBroker(_Common, OwnBroker):
    """One broker: PLAINTEXT on its port, and a listener of each other protocol asked for."""

    kind = "single"
    replication_factor = 1

    def __init__(self, root, protocols, extra_args=(), meta=("PLAINTEXT", {})):
        self.root = root
        self.meta = meta
        self.ports = {p: free_port() for p in protocols if p != "PLAINTEXT"}
        super().__init__(os.path.join(root, "data"), os.path.join(root, "broker.log"),
                         [*listener_args("127.0.0.1", self.ports), *extra_args])
        self.ports["PLAINTEXT"] = self.port

    def addr(self, proto):
        return f"127.0.0.1:{self.ports[proto]}"

    def node_addrs(self, proto):
        return [self.addr(proto)]

    def node_ids(self):
        return [1]

    def node_logs(self):
        return [self.run_log()]

    def cleanup(self):
        """Kills the broker if it still runs; removes its files (kept with
        OTTLA_CLUSTER_KEEP=1, as a cluster's)."""
        super().cleanup()
        if os.environ.get("OTTLA_CLUSTER_KEEP") == "1":
            print(f"\nkept the broker's files in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def sighup(self):
        self.proc.send_signal(signal.SIGHUP)


class ListenerNode(Node):
    """A cluster node with a listener of each protocol of `ports` besides its PLAINTEXT one."""

    def __init__(self, node_id, root, client_port, controller_port, ports):
        super().__init__(node_id, root, client_port, controller_port)
        self.ports = {"PLAINTEXT": client_port, **ports}
        self.controller_protocol = "SASL_SSL"

    def addr(self, proto):
        return f"{self.host}:{self.ports[proto]}"

    def spawn(self, voters, extra_args=(), extra_env=None):
        super().spawn(voters, [*listener_args(self.host, self.ports), *extra_args], extra_env)


class SecurityCluster(_Common, Cluster):
    kind = "cluster3"
    replication_factor = 3

    def __init__(self, root, protocols, extra_args, extra_env, meta=("PLAINTEXT", {})):
        super().__init__(3, extra_args=extra_args, extra_env=extra_env)
        os.rmdir(self.root)
        self.root = root
        self.meta = meta
        self.protocols = [p for p in protocols if p != "PLAINTEXT"]

    def make_nodes(self, root, client_port, free):
        return [ListenerNode(i, root, client_port(i), free(), {p: free() for p in self.protocols})
                for i in range(1, self.n + 1)]

    def addr(self, proto):
        return ",".join(self.node_addrs(proto))

    def node_addrs(self, proto):
        return [nd.addr(proto) for nd in self.nodes]

    def node_ids(self):
        return [nd.id for nd in self.nodes]

    def run_log(self):
        return "".join(self.node_logs())

    def node_logs(self):
        return [nd.run_log() for nd in self.nodes]

    def tail(self, n=60):
        return self.tails(n)

    def sighup(self):
        for nd in self.nodes:
            nd.signal(signal.SIGHUP)


def inter_broker_env(root, env):
    """The cluster's settings on top of the test's `env`: inter-broker SASL_SSL as BROKER_USER
    (a super user when the test names any), replication factor 3, min.insync.replicas 3."""
    out = dict(env)
    out.update({
        "OTTLA_INTER_BROKER_LISTENER": "SASL_SSL",
        "OTTLA_INTER_BROKER_SASL_MECHANISM": "SCRAM-SHA-512",
        "OTTLA_INTER_BROKER_SASL_USERNAME": BROKER_USER,
        "OTTLA_INTER_BROKER_SASL_PASSWORD": BROKER_PASSWORD,
        "OTTLA_INTER_BROKER_TLS_CA_FILE": os.path.join(root, "ca.pem"),
        "OTTLA_DEFAULT_REPLICATION_FACTOR": "3",
        "OTTLA_MIN_INSYNC_REPLICAS": "3",
    })
    if env.get("OTTLA_AUTHORIZER") == "acl" or env.get("OTTLA_SUPER_USERS"):
        supers = [u for u in env.get("OTTLA_SUPER_USERS", "").split(",") if u]
        out["OTTLA_SUPER_USERS"] = ",".join([*supers, f"User:{BROKER_USER}"])
    return out


def start_broker(kind, root, protocols, args=(), env=None, meta=("PLAINTEXT", {})):
    """A started broker of `kind` ("single" or "cluster3") with listeners `protocols`
    (PLAINTEXT always), the node arguments `args` and settings `env` (OTTLA_*), its files in
    `root`. TLS files are made there (certificate and key passed) when a listener needs them,
    and always for a cluster (SASL_SSL between the brokers); already there (ca.pem), they are
    kept. `meta`: (protocol, librdkafka settings) to read Metadata with (leaders)."""
    env = dict(env or {})
    protocols = ["PLAINTEXT", *[p for p in protocols if p != "PLAINTEXT"]]
    need_tls = kind == "cluster3" or TLS_PROTOCOLS & set(protocols)
    if need_tls and not os.path.exists(os.path.join(root, "ca.pem")):
        make_certs(root)
    if need_tls and "--tls-cert-file" not in args:
        args = [*tls_args(root), *args]
    if kind == "single":
        b = SingleBroker(root, protocols, args, meta)
        with environment(env):
            b.start()
        return b
    assert kind == "cluster3", kind
    if "SASL_SSL" not in protocols:
        protocols.append("SASL_SSL")
    b = SecurityCluster(root, protocols,
                        [*args, "--bootstrap-user", f"{BROKER_USER}:{BROKER_PASSWORD}"],
                        inter_broker_env(root, env), meta)
    t0 = time.monotonic()
    try:
        b.start()
    except BaseException:
        b.cleanup()
        raise
    print(f"\ncluster of 3 in {root} ready in {time.monotonic() - t0:.1f} s")
    return b


@contextlib.contextmanager
def security_broker(request, prefix, protocols, args=(), env=None, meta=("PLAINTEXT", {})):
    """The module fixtures' broker: start_broker of the kind `request.param`, in a new
    temporary directory. Stopped (each process must exit 0 without a panic) and removed
    afterwards, a cluster's logs checked first for failed inter-broker logins and refused
    CLUSTER_ACTIONs; the logs' tails are printed when a test failed."""
    failed_before = request.session.testsfailed
    b = start_broker(request.param, tempfile.mkdtemp(prefix=f"{prefix}-{request.param}-"),
                     protocols, args, env, meta)
    try:
        yield b
        if b.kind == "cluster3":
            # The brokers reached each other over SASL_SSL as BROKER_USER throughout: no
            # failed inter-broker login, and (with ACLs) no follower fetch or transaction
            # marker refused as some other principal.
            log = b.run_log()
            assert "cannot authenticate to a peer" not in log, b.tail(40)
            assert "controller listener: peer refused" not in log, b.tail(40)
            assert "operation=CLUSTER_ACTION" not in log, b.tail(40)
        b.stop()
    finally:
        if request.session.testsfailed > failed_before:
            print("\n" + b.tail(80))
        b.cleanup()
