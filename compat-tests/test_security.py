"""TLS and SASL with real clients, against a broker of its own (disk mode, this binary) with
four listeners: PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL on free loopback ports, a test CA
and server certificate made with openssl, and a bootstrap user (`--bootstrap-user`). Every
test with the fixture `secure` runs twice: against one broker (`[single]`) and against a
3-node cluster (`[cluster3]`, seccluster.py): every node with those four listeners, the same
TLS files and bootstrap user, the brokers speaking SASL_SSL to each other, topics of
replication factor 3 with min.insync.replicas 3 (an acks=all record is on all three nodes
before it is acknowledged).

- kafka-python over each listener and SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512):
  every record produced is consumed back in order, byte for byte.
- confluent-kafka (librdkafka) over SASL_SSL with SCRAM-SHA-512, the same check; a wrong
  password is refused with the broker's SASL_AUTHENTICATION_FAILED message, by every node.
- kcat over SSL.
- AlterUserScramCredentials / DescribeUserScramCredentials (KIP-554) with confluent-kafka's
  admin client: a new user authenticates, is described with its mechanisms and iterations,
  and cannot authenticate once deleted; Kafka's per-user errors. In the cluster the user is
  made and deleted through one node and checked against each node alone.
- Before authenticating, a SASL connection may only send ApiVersions and SaslHandshake, only
  small frames (`sasl_server_max_receive_size`), and must authenticate within
  `authentication_timeout_ms`; a PLAINTEXT connection is not bound by those (in the cluster:
  a node that is not the first).
- SIGHUP reloads the certificate: new connections get the new one (in the cluster: every
  node, each checked alone).
- Mutual TLS: with `tls_client_auth = required` a client without a certificate from the
  configured CA is refused, one with such a certificate is served; with ACLs its principal is
  the certificate's subject. These two start brokers of their own, of both kinds (in the
  cluster the brokers present their own certificate to each other, or nothing would
  replicate).
- SASL/OAUTHBEARER with Kafka's unsecured tokens: librdkafka's own token (`principal=...`)
  is served; an expired token (kafka-python with a token provider) gets the
  `invalid_token` challenge and then SASL_AUTHENTICATION_FAILED.
"""

import base64
import json
import os
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)
from kafka import KafkaConsumer, KafkaProducer

from seccluster import KINDS, make_certs, security_broker, start_broker, tls_args

USER, PASSWORD = "alice", "alice-secret"
RECORDS = 200
PROTOCOLS = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


@pytest.fixture(scope="module", params=KINDS)
def secure(request):
    env = {"OTTLA_AUTHENTICATION_TIMEOUT_MS": "1500",
           "OTTLA_SASL_ENABLED_MECHANISMS": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER"}
    with security_broker(request, "ottla-security", PROTOCOLS,
                         ["--bootstrap-user", f"{USER}:{PASSWORD}"], env) as b:
        yield b


def kp_params(b, proto, mechanism=None, password=PASSWORD):
    p = {"bootstrap_servers": b.addr(proto), "security_protocol": proto}
    if "SSL" in proto:
        p.update(ssl_cafile=os.path.join(b.root, "ca.pem"), ssl_check_hostname=True)
    if mechanism:
        p.update(sasl_mechanism=mechanism, sasl_plain_username=USER, sasl_plain_password=password)
    return p


def values(n, tag):
    return [f"{tag}-{i}-{uuid.uuid4().hex}".encode() for i in range(n)]


@pytest.mark.parametrize("proto,mechanism", [
    ("PLAINTEXT", None), ("SSL", None),
    ("SASL_PLAINTEXT", "PLAIN"), ("SASL_PLAINTEXT", "SCRAM-SHA-256"), ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
    ("SASL_SSL", "PLAIN"), ("SASL_SSL", "SCRAM-SHA-512"),
])
def test_kafka_python_over_every_listener(secure, proto, mechanism):
    topic = f"sec-kp-{proto}-{mechanism or 'none'}-{uuid.uuid4().hex[:6]}".lower()
    sent = values(RECORDS, topic)
    params = kp_params(secure, proto, mechanism)
    producer = KafkaProducer(acks="all", **params)
    for v in sent:
        producer.send(topic, v)
    producer.flush(30)
    producer.close()
    consumer = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=10000, **params)
    got = []
    for m in consumer:
        got.append(m.value)
        if len(got) == len(sent):
            break
    consumer.close()
    assert got == sent
    secure.assert_replicated(topic)


def rd_conf(b, proto, mechanism=None, password=PASSWORD):
    c = {"bootstrap.servers": b.addr(proto), "security.protocol": proto}
    if "SSL" in proto:
        c["ssl.ca.location"] = os.path.join(b.root, "ca.pem")
    if mechanism:
        c.update({"sasl.mechanism": mechanism, "sasl.username": USER, "sasl.password": password})
    return c


def produce_all(conf, topic, values):
    p = Producer(conf)
    for v in values:
        p.produce(topic, v)
    assert p.flush(30) == 0


def group_read(conf, topic, n):
    """Up to `n` values read by a confluent-kafka consumer group from the start."""
    c = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got, deadline = [], time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    return got


def test_confluent_kafka_sasl_ssl_scram_sha_512(secure):
    topic = f"sec-rd-{uuid.uuid4().hex[:8]}"
    sent = values(RECORDS, topic)
    conf = rd_conf(secure, "SASL_SSL", "SCRAM-SHA-512")
    errors = []
    produce_all({**conf, "enable.idempotence": True, "error_cb": errors.append}, topic, sent)
    assert group_read(conf, topic, len(sent)) == sent
    assert not errors, errors
    secure.assert_replicated(topic)


def _errors_of(conf, seconds=15):
    """The error callbacks' texts of a producer with `conf`, once there is one."""
    errors = []
    p = Producer({**conf, "error_cb": lambda e: errors.append(e), "message.timeout.ms": 3000})
    deadline = time.monotonic() + seconds
    while not errors and time.monotonic() < deadline:
        p.poll(0.2)
    return " | ".join(str(e) for e in errors)


def test_a_wrong_password_is_refused(secure):
    # Every node on its own (a producer bootstrapped with it alone authenticates there first).
    for scram_addr, plain_addr in zip(secure.node_addrs("SASL_SSL"), secure.node_addrs("SASL_PLAINTEXT")):
        conf = {**rd_conf(secure, "SASL_SSL", "SCRAM-SHA-512", password="wrong"),
                "bootstrap.servers": scram_addr}
        text = _errors_of(conf)
        assert "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512" in text, (scram_addr, text)
        # PLAIN: the same with PLAIN's message.
        conf = {**rd_conf(secure, "SASL_PLAINTEXT", "PLAIN", password="wrong"),
                "bootstrap.servers": plain_addr}
        text = _errors_of(conf)
        assert "Invalid username or password" in text, (plain_addr, text)
    for i, log in enumerate(secure.node_logs()):
        assert "SASL authentication failed" in log, f"node {i + 1}"


def test_kcat_over_ssl(secure, kcat):
    topic = f"sec-kcat-{uuid.uuid4().hex[:8]}"
    sent = [f"kcat-{i}" for i in range(50)]
    ssl_args = ["-b", secure.addr("SSL"), "-X", "security.protocol=SSL",
                "-X", f"ssl.ca.location={os.path.join(secure.root, 'ca.pem')}"]
    subprocess.run([kcat, *ssl_args, "-P", "-t", topic], input="\n".join(sent) + "\n", text=True,
                   check=True, timeout=60)
    out = subprocess.run([kcat, *ssl_args, "-C", "-t", topic, "-o", "beginning", "-e", "-q"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.splitlines() == sent
    secure.assert_replicated(topic)


def _one(result):
    """confluent-kafka answers a future per user, or one future with a dict."""
    if isinstance(result, dict):
        return {k: f.result(30) for k, f in result.items()}
    return result.result(30)


def _eventually(fn, what, timeout=15):
    """fn() until it answers without raising (a change made through one node reaches the
    others through the metadata log); the last error otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (KafkaException, AssertionError) as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: {e}") from e
            time.sleep(0.2)


def test_scram_credentials_are_managed_with_the_admin_api(secure):
    # Altered through the first node; described by, and authenticated against, each node alone.
    via = secure.node_addrs("SASL_SSL")[0]
    admin = AdminClient({**rd_conf(secure, "SASL_SSL", "SCRAM-SHA-512"), "bootstrap.servers": via})
    user, password = f"bob-{uuid.uuid4().hex[:6]}", "bob's password"
    _one(admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192),
                                     password.encode()),
    ]))
    for addr in secure.node_addrs("SASL_SSL"):
        node_admin = AdminClient({**rd_conf(secure, "SASL_SSL", "SCRAM-SHA-512"), "bootstrap.servers": addr})
        described = _eventually(lambda: _one(node_admin.describe_user_scram_credentials([user])),
                                f"{user} described by {addr}")
        infos = described[user].scram_credential_infos
        assert [(i.mechanism, i.iterations) for i in infos] == [(ScramMechanism.SCRAM_SHA_256, 8192)], addr
    # The new user authenticates with SCRAM-SHA-256 and with PLAIN (checked against it), at
    # every node (the bootstrap broker authenticates it before anything else).
    for addr in secure.node_addrs("SASL_PLAINTEXT"):
        for mechanism in ("SCRAM-SHA-256", "PLAIN"):
            topic = f"sec-bob-{mechanism.lower()}-{uuid.uuid4().hex[:6]}"
            conf = {**rd_conf(secure, "SASL_PLAINTEXT", mechanism), "bootstrap.servers": addr,
                    "sasl.username": user, "sasl.password": password}
            p = Producer(conf)
            p.produce(topic, b"from bob")
            assert p.flush(30) == 0, (addr, mechanism)
    # Kafka's per-user errors: too few iterations, the same credential twice, a missing one.
    bad = _one_errors(admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 100), b"x"),
        UserScramCredentialDeletion("dave", ScramMechanism.SCRAM_SHA_512),
    ]))
    assert "Too few iterations" in bad["carol"], bad
    assert "does not exist" in bad["dave"], bad
    with pytest.raises(KafkaException) as e:
        _one(admin.describe_user_scram_credentials(["nobody-" + uuid.uuid4().hex[:6]]))
    assert "does not exist" in str(e.value)
    # Deleted through the first node, the user no longer authenticates at any node.
    _one(admin.alter_user_scram_credentials([UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_256)]))
    for addr in secure.node_addrs("SASL_PLAINTEXT"):
        conf = {**rd_conf(secure, "SASL_PLAINTEXT", "SCRAM-SHA-256"), "bootstrap.servers": addr,
                "sasl.username": user, "sasl.password": password}

        def refused():
            text = _errors_of(conf, seconds=5)
            assert "Authentication failed" in text, text

        _eventually(refused, f"{user} refused by {addr}")


def _one_errors(futures):
    out = {}
    for user, f in futures.items():
        try:
            f.result(30)
            out[user] = ""
        except KafkaException as e:
            out[user] = str(e)
    return out


def _closed_within(sock, seconds):
    """Whether the peer closes the connection within `seconds` (reads until EOF)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
        return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


def api_versions_frame():
    header = struct.pack(">hhih", 18, 0, 1, 4) + b"test"
    return struct.pack(">i", len(header)) + header


def metadata_frame():
    body = struct.pack(">hhih", 3, 1, 2, 4) + b"test" + struct.pack(">i", -1)
    return struct.pack(">i", len(body)) + body


def _host_port(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def test_unauthenticated_sasl_connections_are_bounded(secure):
    # The last node (in the cluster: not the one the others' tests bootstrap from first).
    host, sasl_port = _host_port(secure.node_addrs("SASL_PLAINTEXT")[-1])
    plain = _host_port(secure.node_addrs("PLAINTEXT")[-1])
    # A large frame before authenticating: closed at once (Kafka: sasl.server.max.receive.size).
    s = socket.create_connection((host, sasl_port))
    s.sendall(struct.pack(">i", 600 * 1024) + b"x" * 1024)
    t0 = time.monotonic()
    assert _closed_within(s, 5)
    assert time.monotonic() - t0 < 2
    s.close()
    # The same claim on PLAINTEXT is read on (not closed while the client keeps the frame).
    p = socket.create_connection(plain)
    p.sendall(struct.pack(">i", 600 * 1024) + b"x" * 1024)
    assert not _closed_within(p, 2)
    p.close()
    # A request other than ApiVersions / SaslHandshake before authenticating: closed.
    s = socket.create_connection((host, sasl_port))
    s.sendall(api_versions_frame())
    s.settimeout(5)
    assert len(s.recv(4)) == 4  # ApiVersions is answered
    s.sendall(metadata_frame())
    assert _closed_within(s, 5)
    s.close()
    # Silent: closed after authentication_timeout_ms (1.5 s here); PLAINTEXT stays open.
    s = socket.create_connection((host, sasl_port))
    p = socket.create_connection(plain)
    t0 = time.monotonic()
    assert _closed_within(s, 6)
    elapsed = time.monotonic() - t0
    assert 1.0 < elapsed < 5, elapsed
    assert not _closed_within(p, 0.5)
    s.close()
    p.close()
    log = secure.node_logs()[-1]
    assert "request frame size out of bounds" in log
    assert "request not allowed before authentication completes" in log
    assert "not authenticated in time" in log


def _server_cert_serial(root, addr):
    ctx = ssl.create_default_context(cafile=os.path.join(root, "ca.pem"))
    with socket.create_connection(_host_port(addr)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.getpeercert()["serialNumber"]


def test_sighup_reloads_the_certificate(secure):
    addrs = secure.node_addrs("SSL")
    before = [_server_cert_serial(secure.root, a) for a in addrs]
    assert len(set(before)) == 1  # the same files on every node
    make_certs(secure.root)  # a new server certificate (same CA), same files
    secure.sighup()  # every node
    deadline = time.monotonic() + 10
    while (not all("TLS certificate and key reloaded" in log for log in secure.node_logs())
           and time.monotonic() < deadline):
        time.sleep(0.05)
    assert all("TLS certificate and key reloaded" in log for log in secure.node_logs())
    after = [_server_cert_serial(secure.root, a) for a in addrs]
    assert len(set(after)) == 1 and after[0] != before[0], (before, after)
    # Still serving over TLS with the new certificate (and, in the cluster, replicating over
    # SASL_SSL: acks=all waits for both followers).
    topic = f"sec-reload-{uuid.uuid4().hex[:6]}"
    producer = KafkaProducer(acks="all", **kp_params(secure, "SSL"))
    producer.send(topic, b"after reload").get(30)
    producer.close()
    secure.assert_replicated(topic)


# The two mutual-TLS tests start brokers of their own (`tls_client_auth = required`), of
# both kinds. That setting applies to every TLS listener, SASL_SSL included: in the cluster the
# followers' fetches pass the leaders' TLS handshake only because brokers present their own
# certificate (tls_cert_file) to each other; an acks=all record (min.insync.replicas 3) shows
# they do.
MTLS_KINDS = ["single", "cluster3"]


def acked(conf, topic, value):
    """Produces one record (acks=all: in the cluster, acknowledged once on all three nodes);
    answers the delivery errors' texts, [None] when it was acknowledged."""
    delivered = []
    p = Producer({**conf, "message.timeout.ms": 10000, "enable.idempotence": False})
    p.produce(topic, value, on_delivery=lambda err, msg: delivered.append(err))
    p.flush(30)
    return [None if e is None else str(e) for e in delivered]


def mtls_broker(kind, prefix, env=None, meta=("PLAINTEXT", {})):
    """A broker of `kind` with the four listeners, requiring client certificates from the
    test CA on its TLS ones."""
    root = tempfile.mkdtemp(prefix=prefix)
    make_certs(root)
    return start_broker(kind, root, PROTOCOLS,
                        [*tls_args(root), "--bootstrap-user", f"{USER}:{PASSWORD}",
                         "--tls-client-ca-file", os.path.join(root, "ca.pem"),
                         "--tls-client-auth", "required"], env, meta)


def stop_and_clean(b):
    try:
        b.stop()
    finally:
        b.cleanup()


@pytest.mark.parametrize("kind", MTLS_KINDS)
def test_mutual_tls_requires_a_client_certificate(kind):
    b = mtls_broker(kind, "ottla-mtls-")
    root = b.root
    try:
        base = {"bootstrap.servers": b.addr("SSL"), "security.protocol": "SSL",
                "ssl.ca.location": os.path.join(root, "ca.pem")}
        errors = []
        p = Producer({**base, "error_cb": errors.append})
        deadline = time.monotonic() + 15
        while not errors and time.monotonic() < deadline:
            p.poll(0.2)
        assert errors, "a client without a certificate was served"
        topic = f"sec-mtls-{uuid.uuid4().hex[:6]}"
        with_cert = {**base, "ssl.certificate.location": os.path.join(root, "client.pem"),
                     "ssl.key.location": os.path.join(root, "client.key")}
        assert acked(with_cert, topic, b"with a certificate") == [None]
        c = Consumer({**with_cert, "group.id": "g-mtls", "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        got, deadline = None, time.monotonic() + 30
        while got is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got = m.value()
        c.close()
        assert got == b"with a certificate"
        assert "TLS handshake failed" in b.run_log()
        b.assert_replicated(topic)
    finally:
        stop_and_clean(b)


def test_oauthbearer_unsecured_tokens(secure):
    topic = f"sec-oauth-{uuid.uuid4().hex[:6]}"
    sent = values(50, topic)
    conf = {"bootstrap.servers": secure.addr("SASL_SSL"), "security.protocol": "SASL_SSL",
            "ssl.ca.location": os.path.join(secure.root, "ca.pem"), "sasl.mechanism": "OAUTHBEARER",
            "sasl.oauthbearer.config": "principal=carol lifeSeconds=600",
            "enable.sasl.oauthbearer.unsecure.jwt": True}
    produce_all(conf, topic, sent)
    assert group_read(conf, topic, len(sent)) == sent
    secure.assert_replicated(topic)

    from kafka.net.sasl.oauth import AbstractTokenProvider

    def unsecured(claims):
        b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
        return f"{b64({'alg': 'none'})}.{b64(claims)}."

    class Expired(AbstractTokenProvider):
        def token(self):
            now = int(time.time())
            return unsecured({"sub": "carol", "iat": now - 120, "exp": now - 60})

    with pytest.raises(Exception):
        KafkaProducer(bootstrap_servers=secure.addr("SASL_PLAINTEXT"), security_protocol="SASL_PLAINTEXT",
                      sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=Expired(),
                      request_timeout_ms=5000, max_block_ms=5000).send(topic, b"x").get(10)
    deadline = time.monotonic() + 10
    while "expired" not in secure.run_log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert 'mechanism="OAUTHBEARER"' in secure.run_log() or "mechanism=OAUTHBEARER" in secure.run_log()
    assert "expired" in secure.run_log()


@pytest.mark.parametrize("kind", MTLS_KINDS)
def test_a_client_certificate_is_the_principal_acls_name(kind):
    """With `authorizer = "acl"`, an mTLS client is `User:` + its certificate's subject in
    RFC 2253 form (Kafka's default ssl.principal.mapping.rules): refused without an ACL (the
    denial names that principal), served once `admin` grants it WRITE and READ."""
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                       NewTopic, ResourcePatternType, ResourceType)
    b = mtls_broker(kind, "ottla-mtls-acl-",
                    {"OTTLA_AUTHORIZER": "acl", "OTTLA_SUPER_USERS": f"User:{USER}"})
    root = b.root
    try:
        principal = "User:O=ottla,CN=test-client"
        admin_conf = {"bootstrap.servers": b.addr("SASL_SSL"), "security.protocol": "SASL_SSL",
                      "ssl.ca.location": os.path.join(root, "ca.pem"),
                      "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": USER,
                      "sasl.password": PASSWORD,
                      # Every TLS listener requires a certificate here; on SASL_SSL the
                      # SASL user is the principal.
                      "ssl.certificate.location": os.path.join(root, "client.pem"),
                      "ssl.key.location": os.path.join(root, "client.key")}
        admin = AdminClient(admin_conf)
        topic = f"sec-mtls-acl-{uuid.uuid4().hex[:6]}"
        for f in admin.create_topics([NewTopic(topic, 1, b.replication_factor)]).values():
            f.result(30)
        # The super user may write (in the cluster: replicated before it is acknowledged).
        first = b"from the super user"
        assert acked(admin_conf, topic, first) == [None]
        client = {"bootstrap.servers": b.addr("SSL"), "security.protocol": "SSL",
                  "ssl.ca.location": os.path.join(root, "ca.pem"),
                  "ssl.certificate.location": os.path.join(root, "client.pem"),
                  "ssl.key.location": os.path.join(root, "client.key")}
        errs = []
        p = Producer({**client, "message.timeout.ms": 5000, "retries": 0, "enable.idempotence": False})
        p.produce(topic, b"x", on_delivery=lambda err, msg: errs.append(err))
        p.flush(20)
        assert errs and errs[0] is not None and "AUTHORIZATION" in errs[0].name(), errs
        deadline = time.monotonic() + 10
        while f"principal={principal}" not in b.run_log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f"principal={principal}" in b.run_log(), b.tail(20)
        grants = [AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, principal, "*",
                             op, AclPermissionType.ALLOW) for op in (AclOperation.WRITE, AclOperation.READ)]
        grants.append(AclBinding(ResourceType.GROUP, "g-mtls-acl", ResourcePatternType.LITERAL,
                                 principal, "*", AclOperation.READ, AclPermissionType.ALLOW))
        for f in admin.create_acls(grants).values():
            f.result(30)
        sent = values(20, topic)
        deadline = time.monotonic() + 10
        while True:  # the ACLs reach the broker's authorizer when it applies them
            errs = []
            p = Producer({**client, "message.timeout.ms": 5000, "enable.idempotence": False})
            p.produce(topic, b"probe", on_delivery=lambda err, msg: errs.append(err))
            p.flush(20)
            if errs == [None] or time.monotonic() > deadline:
                break
        assert errs == [None], errs
        produce_all(client, topic, sent)
        c = Consumer({**client, "group.id": "g-mtls-acl", "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        got, deadline = [], time.monotonic() + 30
        while len(got) < len(sent) + 2 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m.value())
        c.close()
        assert got == [first, b"probe"] + sent
    finally:
        stop_and_clean(b)
