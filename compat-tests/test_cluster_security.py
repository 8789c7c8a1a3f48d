"""A 3-node cluster whose brokers speak SASL_SSL to each other (`inter_broker_listener =
"SASL_SSL"`, SCRAM-SHA-512 as the user `broker`), with ACLs on: only `User:broker` and
`User:admin` are super users, so a follower's fetch or a transaction marker that came over
the PLAINTEXT listener (as `User:ANONYMOUS`) would be refused. Each node also has a
PLAINTEXT listener (the harness's own Metadata checks). The controller listeners are
SASL_SSL too (`controller_listen = "SASL_SSL://..."`): the raft RPCs, the brokers'
registrations and heartbeats and forwarded requests go over TLS as the user `broker`.

- acks=all with min.insync.replicas = 3 on a replication-factor-3 topic: every record is
  acknowledged only once both followers fetched it over SASL_SSL; all come back, in order,
  byte for byte.
- A transaction over partitions led by all three brokers: its markers go to the leaders over
  SASL_SSL; a read_committed consumer sees every committed record.
- The inter-broker user with a wrong password is refused: nothing replicates, and the
  brokers log why.
- A controller listener refuses a peer that does not authenticate, and speaks TLS; nodes
  whose inter-broker password is wrong never form a quorum over SASL_SSL controller
  listeners (each refuses the others, and they log why).
"""

import os
import socket
import ssl
import struct
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from cluster import Cluster, Node, cluster_free_port

USERS = {"broker": "broker-pw", "admin": "admin-pw"}


def make_certs(d):
    def run(*args):
        subprocess.run(args, cwd=d, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-out", "ca.pem", "-days", "2", "-subj", "/CN=ottla test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key",
        "-out", "broker.csr", "-subj", "/CN=localhost")
    with open(os.path.join(d, "san.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "broker.pem", "-days", "2", "-extfile", "san.cnf")


class SecureNode(Node):
    def __init__(self, *args, sasl_port, controller_protocol=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sasl_port = sasl_port
        self.controller_protocol = controller_protocol

    def spawn(self, voters, extra_args=(), extra_env=None):
        listener = f"SASL_SSL://{self.host}:{self.sasl_port}"
        super().spawn(voters, ["--listen", listener, "--advertise", listener, *extra_args],
                      extra_env)


class SecureCluster(Cluster):
    def __init__(self, *args, controller_protocol=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.controller_protocol = controller_protocol

    def make_nodes(self, root, client_port, free):
        return [SecureNode(i, root, client_port(i), free(), sasl_port=free(),
                           controller_protocol=self.controller_protocol)
                for i in range(1, self.n + 1)]

    @property
    def sasl_bootstrap(self):
        return ",".join(f"{nd.host}:{nd.sasl_port}" for nd in self.nodes)


def cluster_env(certs, password):
    return {
        "OTTLA_AUTHORIZER": "acl",
        "OTTLA_SUPER_USERS": "User:broker,User:admin",
        "OTTLA_TLS_CERT_FILE": os.path.join(certs, "broker.pem"),
        "OTTLA_TLS_KEY_FILE": os.path.join(certs, "broker.key"),
        "OTTLA_INTER_BROKER_LISTENER": "SASL_SSL",
        "OTTLA_INTER_BROKER_SASL_MECHANISM": "SCRAM-SHA-512",
        "OTTLA_INTER_BROKER_SASL_USERNAME": "broker",
        "OTTLA_INTER_BROKER_SASL_PASSWORD": password,
        "OTTLA_INTER_BROKER_TLS_CA_FILE": os.path.join(certs, "ca.pem"),
    }


def secure_cluster(certs, password, controller_protocol=None):
    args = []
    for u, p in USERS.items():
        args += ["--bootstrap-user", f"{u}:{p}"]
    return SecureCluster(3, extra_args=args, extra_env=cluster_env(certs, password),
                         controller_protocol=controller_protocol)


def start(certs, password, controller_protocol=None):
    return secure_cluster(certs, password, controller_protocol).start()


def admin_conf(c, certs):
    return {"bootstrap.servers": c.sasl_bootstrap, "security.protocol": "SASL_SSL",
            "ssl.ca.location": os.path.join(certs, "ca.pem"), "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "admin", "sasl.password": USERS["admin"]}


def create_rf3(conf, topic, partitions):
    admin = AdminClient(conf)
    for f in admin.create_topics([NewTopic(topic, partitions, 3,
                                           config={"min.insync.replicas": "3"})]).values():
        f.result(30)
    deadline = time.monotonic() + 20
    while True:
        md = admin.list_topics(topic, timeout=10).topics[topic]
        parts = md.partitions.values()
        if len(parts) == partitions and all(len(p.isrs) == 3 and p.leader >= 0 for p in parts):
            return {p.id: p.leader for p in parts}
        assert time.monotonic() < deadline, {p.id: (p.leader, p.isrs) for p in parts}
        time.sleep(0.2)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("certs"))
    make_certs(d)
    return d


def test_brokers_replicate_and_write_markers_over_sasl_ssl(certs):
    c = start(certs, USERS["broker"], controller_protocol="SASL_SSL")
    try:
        conf = admin_conf(c, certs)
        topic = f"sec-{uuid.uuid4().hex[:6]}"
        leaders = create_rf3(conf, topic, 3)
        sent = [f"record {i}".encode() for i in range(3000)]
        acked = []
        p = Producer({**conf, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
        for i, v in enumerate(sent):
            p.produce(topic, v, partition=i % 3,
                      on_delivery=lambda err, msg: acked.append(err))
        p.flush(60)
        assert acked == [None] * len(sent), [e for e in acked if e][:3]

        got = {0: [], 1: [], 2: []}
        cons = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
        cons.assign([TopicPartition(topic, i, 0) for i in range(3)])
        deadline = time.monotonic() + 30
        while sum(map(len, got.values())) < len(sent) and time.monotonic() < deadline:
            m = cons.poll(0.5)
            if m is not None and not m.error():
                got[m.partition()].append(m.value())
        cons.close()
        for i in range(3):
            assert got[i] == sent[i::3], i

        # A transaction over partitions led by each broker: markers go to every leader.
        txn_topic = f"sec-tx-{uuid.uuid4().hex[:6]}"
        txn_leaders = create_rf3(conf, txn_topic, 3)
        tp = Producer({**conf, "transactional.id": f"tx-{txn_topic}"})
        tp.init_transactions(30)
        committed = []
        for t in range(5):
            tp.begin_transaction()
            batch = [f"txn {t} record {i}".encode() for i in range(30)]
            for i, v in enumerate(batch):
                tp.produce(txn_topic, v, partition=i % 3)
            tp.commit_transaction(30)
            committed += batch
        rc = Consumer({**conf, "group.id": f"g-{txn_topic}", "auto.offset.reset": "earliest",
                       "isolation.level": "read_committed", "enable.auto.commit": False})
        rc.assign([TopicPartition(txn_topic, i, 0) for i in range(3)])
        read, deadline = [], time.monotonic() + 30
        while len(read) < len(committed) and time.monotonic() < deadline:
            m = rc.poll(0.5)
            if m is not None and not m.error():
                read.append(m.value())
        rc.close()
        assert sorted(read) == sorted(committed)
        logs = "".join(nd.run_log() for nd in c.nodes)
        assert "principal=User:ANONYMOUS" not in logs  # nothing came over PLAINTEXT
        assert "peer refused" not in logs, c.tails(30)

        # The controller listeners: a raft RPC without authenticating is closed (and logged);
        # TLS is spoken there with the cluster's certificate.
        nd = c.node(2)
        with socket.create_connection((nd.host, nd.controller_port), timeout=5) as s:
            ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
            with ctx.wrap_socket(s, server_hostname="localhost") as tls:
                # Private key 32000 (AppendEntries), header v2, an empty body.
                body = struct.pack(">hhihb", 32000, 0, 1, -1, 0)
                tls.sendall(struct.pack(">i", len(body)) + body)
                assert tls.recv(1024) == b""  # closed, no answer
        deadline = time.monotonic() + 10
        while "before authenticating" not in nd.run_log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "controller listener: peer refused" in nd.run_log(), nd.tail(20)
        print(f"\nCLUSTER-SASL-SSL {len(sent)} records acks=all (min.insync.replicas 3, leaders "
              f"{sorted(set(leaders.values()))}) and {len(committed)} transactional records "
              f"(leaders {sorted(set(txn_leaders.values()))}) replicated over SASL_SSL; "
              f"controller listeners SASL_SSL (quorum formed in {c.startup_s:.1f} s)")
    finally:
        c.stop()
        c.cleanup()


def test_a_wrong_inter_broker_password_stops_replication(certs):
    # The controller listeners log in with a login of their own (the right password), so the
    # quorum forms; the inter-broker login is wrong.
    c = secure_cluster(certs, "wrong", controller_protocol="SASL_SSL")
    c.extra_env.update(OTTLA_CONTROLLER_SASL_USERNAME="broker",
                       OTTLA_CONTROLLER_SASL_PASSWORD=USERS["broker"])
    c.start()
    try:
        conf = admin_conf(c, certs)
        topic = f"sec-bad-{uuid.uuid4().hex[:6]}"
        admin = AdminClient(conf)
        for f in admin.create_topics([NewTopic(topic, 1, 3)]).values():
            f.result(30)
        time.sleep(3)
        md = admin.list_topics(topic, timeout=10).topics[topic].partitions[0]
        # The followers cannot authenticate to the leader: they never catch up.
        deadline = time.monotonic() + 20
        logs = ""
        while time.monotonic() < deadline:
            logs = "".join(nd.run_log() for nd in c.nodes)
            if "cannot authenticate to a peer" in logs:
                break
            time.sleep(0.5)
        assert "cannot authenticate to a peer" in logs, c.tails(30)
        assert "SaslAuthenticate refused" in logs
        p = Producer({**conf, "acks": "all", "message.timeout.ms": 5000, "retries": 0,
                      "enable.idempotence": False})
        for f in admin.alter_configs([ConfigResource(ConfigResource.Type.TOPIC, topic,
                                                     set_config={"min.insync.replicas": "3"})]).values():
            f.result(30)
        errors = []
        p.produce(topic, b"x", on_delivery=lambda err, msg: errors.append(err))
        p.flush(20)
        assert errors and errors[0] is not None, (errors, md.isrs)
    finally:
        c.stop()
        c.cleanup()


def test_a_wrong_password_forms_no_quorum_over_sasl_ssl_controller_listeners(certs):
    c = secure_cluster(certs, "wrong", controller_protocol="SASL_SSL")
    taken = set()
    c.nodes = c.make_nodes(c.root, lambda i: cluster_free_port(taken),
                           lambda: cluster_free_port(taken))
    c.voters = ",".join(f"{nd.id}@{nd.host}:{nd.controller_port}" for nd in c.nodes)
    try:
        for nd in c.nodes:
            nd.spawn(c.voters, c.extra_args, c.extra_env)
        deadline = time.monotonic() + 20
        logs = ""
        while time.monotonic() < deadline:
            logs = "".join(nd.run_log() for nd in c.nodes)
            if "controller listener: peer refused" in logs and "cannot authenticate to a peer" in logs:
                break
            time.sleep(0.5)
        assert "cannot authenticate to a peer" in logs, c.tails(30)
        assert "controller listener: peer refused" in logs, c.tails(30)
        assert not any(nd.poll_ready() for nd in c.nodes), c.tails(30)
    finally:
        c.kill_all()
        c.cleanup()
