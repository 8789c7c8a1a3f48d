"""README's "Security" section, run as a user would copy it: its shell block (a CA and a
broker certificate with openssl, then the broker with a PLAINTEXT and a SASL_SSL listener and
a first user) and its Python block (ACLs granted by `admin`), with the authorizer settings the
section names. Only the ports change (free ones instead of 9092 and 9094) and `cargo run
--release --` becomes the built binary. Then, as the section says, a second user is added
with AlterUserScramCredentials, and that user produces and consumes over SASL_SSL what its
ACLs allow (every record back, in order) and is refused the rest.
"""

import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)

from groups.broker import OTTLA_BIN, REPO, free_port


def section(name):
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("\n## %s\n" % name)
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def blocks(text, lang):
    return re.findall(r"```%s\n(.*?)```" % lang, text, re.S)


def test_the_readme_security_setup_works_as_written(tmp_path):
    text = section("Security")
    [shell] = blocks(text, "sh")
    [python] = blocks(text, "python")
    plain_port, tls_port = free_port(), free_port()
    ports = lambda s: s.replace("9092", str(plain_port)).replace("9094", str(tls_port))

    # The shell block: every command but the broker's runs as written.
    commands = [c for c in shell.replace("\\\n", " ").splitlines()
                if c.strip() and not c.lstrip().startswith("#")]
    [run] = [c for c in commands if c.startswith("cargo run")]
    for c in commands:
        if c is not run:
            subprocess.run(c, shell=True, cwd=tmp_path, check=True, capture_output=True)
    assert "--release --" in run
    argv = [OTTLA_BIN] + shlex.split(ports(run.split("--release --", 1)[1]))
    assert "OTTLA_AUTHORIZER=acl OTTLA_SUPER_USERS=User:admin" in text
    env = {**os.environ, "OTTLA_AUTHORIZER": "acl", "OTTLA_SUPER_USERS": "User:admin"}
    log = open(tmp_path / "broker.log", "w")
    broker = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "ottla ready on" not in (tmp_path / "broker.log").read_text():
            assert broker.poll() is None, (tmp_path / "broker.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "broker.log").read_text()
            time.sleep(0.05)
        os.chdir(tmp_path)  # the Python block names ca.pem relative to where it runs
        exec(compile(ports(python), "README.md (Security)", "exec"), {})

        admin_conf = {"bootstrap.servers": f"localhost:{tls_port}", "security.protocol": "SASL_SSL",
                      "ssl.ca.location": str(tmp_path / "ca.pem"),
                      "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "admin",
                      "sasl.password": "change-me"}
        admin = AdminClient(admin_conf)
        upsert = UserScramCredentialUpsertion(
            "app", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"app-secret")
        for f in admin.alter_user_scram_credentials([upsert]).values():
            f.result(30)
        topic = f"orders-{uuid.uuid4().hex[:6]}"
        for f in admin.create_topics([NewTopic(topic, 1, 1), NewTopic("payments", 1, 1)]).values():
            f.result(30)

        app = {**admin_conf, "sasl.username": "app", "sasl.password": "app-secret"}
        sent = [f"order {i}".encode() for i in range(200)]
        errors = []
        p = Producer({**app, "enable.idempotence": False, "acks": "all"})
        for v in sent:
            p.produce(topic, v, on_delivery=lambda err, msg: errors.append(err))
        p.flush(30)
        assert errors == [None] * len(sent)

        refused = []
        p = Producer({**app, "enable.idempotence": False, "message.timeout.ms": 5000, "retries": 0})
        p.produce("payments", b"x", on_delivery=lambda err, msg: refused.append(err))
        p.flush(20)
        assert refused and refused[0] is not None and "AUTHORIZATION" in refused[0].name(), refused

        c = Consumer({**app, "group.id": f"orders-{uuid.uuid4().hex[:6]}",
                      "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        got, deadline = [], time.monotonic() + 30
        while len(got) < len(sent) and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None:
                assert not m.error(), m.error()
                got.append(m.value())
        c.commit(asynchronous=False)
        c.close()
        assert got == sent

        c = Consumer({**app, "group.id": "not-orders", "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        err, deadline = None, time.monotonic() + 20
        while err is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error():
                err = m.error()
        c.close()
        assert err is not None and "GROUP_AUTHORIZATION_FAILED" in err.name(), err
        print(f"\nREADME-SECURITY {len(got)}/{len(sent)} records over SASL_SSL as User:app; "
              f"payments and group not-orders refused ({refused[0].name()}, {err.name()})")
    finally:
        os.chdir(REPO)
        broker.send_signal(signal.SIGTERM)
        try:
            rc = broker.wait(20)
        except subprocess.TimeoutExpired:
            broker.kill()
            rc = broker.wait()
        log.close()
        out = (tmp_path / "broker.log").read_text()
        assert rc == 0 and "panicked" not in out, out[-3000:]
