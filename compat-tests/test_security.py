"""TLS and SASL with real clients, against a broker of its own (disk mode, this binary) with
four listeners: PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL on free loopback ports, a test CA
and server certificate made with openssl, and a bootstrap user (`--bootstrap-user`).

- kafka-python over each listener and SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512):
  every record produced is consumed back in order, byte for byte.
- confluent-kafka (librdkafka) over SASL_SSL with SCRAM-SHA-512, the same check; a wrong
  password is refused with the broker's SASL_AUTHENTICATION_FAILED message.
- kcat over SSL.
- AlterUserScramCredentials / DescribeUserScramCredentials (KIP-554) with confluent-kafka's
  admin client: a new user authenticates, is described with its mechanisms and iterations,
  and cannot authenticate once deleted; Kafka's per-user errors.
- Before authenticating, a SASL connection may only send ApiVersions and SaslHandshake, only
  small frames (`sasl_server_max_receive_size`), and must authenticate within
  `authentication_timeout_ms`; a PLAINTEXT connection is not bound by those.
- SIGHUP reloads the certificate: new connections get the new one.
- Mutual TLS: with `tls_client_auth = required` a client without a certificate from the
  configured CA is refused, one with such a certificate is served.
- SASL/OAUTHBEARER with Kafka's unsecured tokens: librdkafka's own token (`principal=...`)
  is served; an expired token (kafka-python with a token provider) gets the
  `invalid_token` challenge and then SASL_AUTHENTICATION_FAILED.
"""

import base64
import json
import os
import signal
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

from groups.broker import OwnBroker, environment, free_port

USER, PASSWORD = "alice", "alice-secret"
RECORDS = 200


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d, name="server"):
    """A CA, a server certificate for localhost/127.0.0.1 signed by it, and a client one."""
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


class SecureBroker(OwnBroker):
    """An OwnBroker (PLAINTEXT on its port) with SSL, SASL_PLAINTEXT and SASL_SSL listeners."""

    def __init__(self, root, extra=()):
        self.root = root
        self.ports = {"SSL": free_port(), "SASL_PLAINTEXT": free_port(), "SASL_SSL": free_port()}
        args = []
        for proto, port in self.ports.items():
            args += ["--listen", f"{proto}://127.0.0.1:{port}", "--advertise", f"{proto}://127.0.0.1:{port}"]
        args += ["--tls-cert-file", os.path.join(root, "server.pem"),
                 "--tls-key-file", os.path.join(root, "server.key"),
                 "--bootstrap-user", f"{USER}:{PASSWORD}", *extra]
        super().__init__(os.path.join(root, "data"), os.path.join(root, "broker.log"), args)
        self.ports["PLAINTEXT"] = self.port

    def addr(self, proto):
        return f"127.0.0.1:{self.ports[proto]}"


@pytest.fixture(scope="module")
def secure(request):
    root = tempfile.mkdtemp(prefix="ottla-security-")
    make_certs(root)
    env = {"OTTLA_AUTHENTICATION_TIMEOUT_MS": "1500",
           "OTTLA_SASL_ENABLED_MECHANISMS": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER"}
    with environment(env):
        b = SecureBroker(root)
        b.start()
    try:
        yield b
    finally:
        if request.session.testsfailed:
            print("\n" + b.tail(80))
        b.stop()
        b.cleanup()


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


def test_a_wrong_password_is_refused(secure):
    errors = []
    conf = rd_conf(secure, "SASL_SSL", "SCRAM-SHA-512", password="wrong")
    p = Producer({**conf, "error_cb": lambda e: errors.append(e), "message.timeout.ms": 3000})
    deadline = time.monotonic() + 15
    while not errors and time.monotonic() < deadline:
        p.poll(0.2)
    text = " | ".join(str(e) for e in errors)
    assert "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512" in text, text
    # PLAIN: the same with PLAIN's message.
    errors.clear()
    p = Producer({**rd_conf(secure, "SASL_PLAINTEXT", "PLAIN", password="wrong"),
                  "error_cb": lambda e: errors.append(e)})
    deadline = time.monotonic() + 15
    while not errors and time.monotonic() < deadline:
        p.poll(0.2)
    text = " | ".join(str(e) for e in errors)
    assert "Invalid username or password" in text, text
    assert "SASL authentication failed" in secure.run_log()


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


def _one(result):
    """confluent-kafka answers a future per user, or one future with a dict."""
    if isinstance(result, dict):
        return {k: f.result(30) for k, f in result.items()}
    return result.result(30)


def test_scram_credentials_are_managed_with_the_admin_api(secure):
    admin = AdminClient(rd_conf(secure, "SASL_SSL", "SCRAM-SHA-512"))
    user, password = f"bob-{uuid.uuid4().hex[:6]}", "bob's password"
    _one(admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192),
                                     password.encode()),
    ]))
    described = _one(admin.describe_user_scram_credentials([user]))
    infos = described[user].scram_credential_infos
    assert [(i.mechanism, i.iterations) for i in infos] == [(ScramMechanism.SCRAM_SHA_256, 8192)]
    # The new user authenticates with SCRAM-SHA-256 and with PLAIN (checked against it).
    for mechanism in ("SCRAM-SHA-256", "PLAIN"):
        topic = f"sec-bob-{mechanism.lower()}-{uuid.uuid4().hex[:6]}"
        conf = {**rd_conf(secure, "SASL_PLAINTEXT", mechanism), "sasl.username": user,
                "sasl.password": password}
        p = Producer(conf)
        p.produce(topic, b"from bob")
        assert p.flush(30) == 0, mechanism
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
    # Deleted, the user no longer authenticates.
    _one(admin.alter_user_scram_credentials([UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_256)]))
    errors = []
    p = Producer({**rd_conf(secure, "SASL_PLAINTEXT", "SCRAM-SHA-256"), "sasl.username": user,
                  "sasl.password": password, "error_cb": errors.append})
    deadline = time.monotonic() + 15
    while not errors and time.monotonic() < deadline:
        p.poll(0.2)
    assert any("Authentication failed" in str(e) for e in errors), errors


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


def test_unauthenticated_sasl_connections_are_bounded(secure):
    host, sasl_port = "127.0.0.1", secure.ports["SASL_PLAINTEXT"]
    # A large frame before authenticating: closed at once (Kafka: sasl.server.max.receive.size).
    s = socket.create_connection((host, sasl_port))
    s.sendall(struct.pack(">i", 600 * 1024) + b"x" * 1024)
    t0 = time.monotonic()
    assert _closed_within(s, 5)
    assert time.monotonic() - t0 < 2
    s.close()
    # The same claim on PLAINTEXT is read on (not closed while the client keeps the frame).
    p = socket.create_connection((host, secure.port))
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
    p = socket.create_connection((host, secure.port))
    t0 = time.monotonic()
    assert _closed_within(s, 6)
    elapsed = time.monotonic() - t0
    assert 1.0 < elapsed < 5, elapsed
    assert not _closed_within(p, 0.5)
    s.close()
    p.close()
    log = secure.run_log()
    assert "request frame size out of bounds" in log
    assert "request not allowed before authentication completes" in log
    assert "not authenticated in time" in log


def _server_cert_serial(b):
    ctx = ssl.create_default_context(cafile=os.path.join(b.root, "ca.pem"))
    with socket.create_connection(("127.0.0.1", b.ports["SSL"])) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.getpeercert()["serialNumber"]


def test_sighup_reloads_the_certificate(secure):
    before = _server_cert_serial(secure)
    make_certs(secure.root)  # a new server certificate (same CA), same files
    secure.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "TLS certificate and key reloaded" not in secure.run_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    after = _server_cert_serial(secure)
    assert after != before
    # Still serving over TLS with the new certificate.
    topic = f"sec-reload-{uuid.uuid4().hex[:6]}"
    producer = KafkaProducer(**kp_params(secure, "SSL"))
    producer.send(topic, b"after reload").get(30)
    producer.close()


def test_mutual_tls_requires_a_client_certificate():
    root = tempfile.mkdtemp(prefix="ottla-mtls-")
    make_certs(root)
    b = SecureBroker(root, ["--tls-client-ca-file", os.path.join(root, "ca.pem"),
                            "--tls-client-auth", "required"])
    b.start()
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
        p = Producer(with_cert)
        p.produce(topic, b"with a certificate")
        assert p.flush(30) == 0
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
    finally:
        b.stop()
        b.cleanup()


def test_oauthbearer_unsecured_tokens(secure):
    topic = f"sec-oauth-{uuid.uuid4().hex[:6]}"
    sent = values(50, topic)
    conf = {"bootstrap.servers": secure.addr("SASL_SSL"), "security.protocol": "SASL_SSL",
            "ssl.ca.location": os.path.join(secure.root, "ca.pem"), "sasl.mechanism": "OAUTHBEARER",
            "sasl.oauthbearer.config": "principal=carol lifeSeconds=600",
            "enable.sasl.oauthbearer.unsecure.jwt": True}
    produce_all(conf, topic, sent)
    assert group_read(conf, topic, len(sent)) == sent

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


def test_a_client_certificate_is_the_principal_acls_name():
    """With `authorizer = "acl"`, an mTLS client is `User:` + its certificate's subject in
    RFC 2253 form (Kafka's default ssl.principal.mapping.rules): refused without an ACL (the
    denial names that principal), served once `admin` grants it WRITE and READ."""
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                       NewTopic, ResourcePatternType, ResourceType)
    root = tempfile.mkdtemp(prefix="ottla-mtls-acl-")
    make_certs(root)
    b = SecureBroker(root, ["--tls-client-ca-file", os.path.join(root, "ca.pem"),
                            "--tls-client-auth", "required"])
    with environment({"OTTLA_AUTHORIZER": "acl", "OTTLA_SUPER_USERS": f"User:{USER}"}):
        b.start()
    try:
        principal = "User:O=ottla,CN=test-client"
        admin = AdminClient({"bootstrap.servers": b.addr("SASL_SSL"), "security.protocol": "SASL_SSL",
                             "ssl.ca.location": os.path.join(root, "ca.pem"),
                             "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": USER,
                             "sasl.password": PASSWORD,
                             # Every TLS listener requires a certificate here; on SASL_SSL the
                             # SASL user is the principal.
                             "ssl.certificate.location": os.path.join(root, "client.pem"),
                             "ssl.key.location": os.path.join(root, "client.key")})
        topic = f"sec-mtls-acl-{uuid.uuid4().hex[:6]}"
        for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
            f.result(30)
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
        while len(got) < len(sent) + 1 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m.value())
        c.close()
        assert got == [b"probe"] + sent
    finally:
        b.stop()
        b.cleanup()
