#!/usr/bin/env python3
"""Stand-in for Kafka's kafka-run-class.sh: `kafka-run-class.sh kafka.Kafka PROPERTIES
[--override KEY=VALUE]...` starts ottla ($OTTLA_BIN, default <repo>/target/release/ottla)
configured from the Kafka broker properties kafka-python's KafkaFixture renders (KRaft, one
combined node). stdlib only. Other classes are refused.

It forwards ottla's output (stdout and stderr, merged, also appended to $LOG_DIR/server.log
when LOG_DIR is set) and adds the lines Kafka prints that the fixtures wait for:
    `ottla ready on ...`                    -> `[KafkaRaftServer nodeId=N] Kafka Server started`
    `applied SCRAM credential user=NAME...` -> `Replayed UserScramCredentialRecord creating new entry for NAME`
SIGTERM, SIGINT and SIGHUP are forwarded to ottla; the script exits when ottla does, with its
status. ottla gets SIGKILL if this script dies.

Property mapping (anything not listed is refused, so nothing is silently dropped):
  node.id | broker.id                      --node-id
  listeners (minus controller.listener.names), names resolved through
    listener.security.protocol.map         --listen PROTOCOL://HOST:PORT (bare HOST:PORT when
                                           every listener is PLAINTEXT)
  advertised.listeners                     --advertise, likewise
  log.dirs | log.dir (one directory)       --data-dir
  num.partitions                           --num-partitions
  default.replication.factor               --default-replication-factor
  min.insync.replicas                      --min-insync-replicas
  message.max.bytes                        --message-max-bytes
  socket.request.max.bytes                 --max-frame-bytes
  auto.create.topics.enable                --auto-create-topics true|false
  group.initial.rebalance.delay.ms         --group-initial-rebalance-delay-ms
  group.min.session.timeout.ms             OTTLA_GROUP_MIN_SESSION_TIMEOUT_MS
  group.max.session.timeout.ms             OTTLA_GROUP_MAX_SESSION_TIMEOUT_MS
  offsets.topic.replication.factor         OTTLA_OFFSETS_TOPIC_REPLICATION_FACTOR
  offsets.topic.num.partitions             OTTLA_OFFSETS_TOPIC_NUM_PARTITIONS
  transaction.state.log.replication.factor OTTLA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR
  transaction.state.log.num.partitions     OTTLA_TRANSACTION_STATE_LOG_NUM_PARTITIONS
  ssl.keystore.location, .password, .type,
    ssl.key.password                       the key entry converted to PEM (keytool
                                           -importkeystore to PKCS12, then openssl pkcs12
                                           -nodes) under <properties dir>/ottla-tls/:
                                           --tls-cert-file (leaf first, then its chain),
                                           --tls-key-file
  ssl.client.auth (none|requested|required),
    ssl.truststore.location, .password, .type
                                           none: the truststore is unused (it only verifies
                                           client certificates); otherwise OTTLA_TLS_CLIENT_AUTH
                                           and OTTLA_TLS_CLIENT_CA_FILE (the truststore's
                                           certificates as PEM)
  sasl.enabled.mechanisms                  --sasl-enabled-mechanisms (PLAIN, SCRAM-SHA-256,
                                           SCRAM-SHA-512; anything else is refused)
  JAAS file (KAFKA_OPTS -Djava.security.auth.login.config=F), section KafkaServer, and
    listener.name.L.M.sasl.jaas.config: PlainLoginModule's user_NAME="PASSWORD"
                                           --bootstrap-user NAME:PASSWORD (ottla checks PLAIN
                                           against the user's stored SCRAM credentials);
                                           username/password (the broker's own inter-broker
                                           login) are unused by a single node
  kafka-storage.sh format's -t ID and --add-scram 'M=[name=N,password=P]' (recorded in
    ottla-standin-storage.json next to the properties)
                                           --cluster-id ID, --bootstrap-user N:P (ottla
                                           creates both SCRAM-SHA-256 and -512 credentials,
                                           where Kafka would create only M's)
Ignored because harmless for one combined node without ACLs:
  process.roles (must be broker,controller), controller.quorum.voters (must name only this
  node), controller.quorum.bootstrap.servers, controller.listener.names (those listeners are
  not opened: ottla needs no controller listener alone), inter.broker.listener.name,
  security.inter.broker.protocol, sasl.mechanism.inter.broker.protocol,
  sasl.mechanism.controller.protocol, transaction.state.log.min.isr, metadata.log.dir (ottla
  keeps its metadata in the data directory), zookeeper-free KRaft only (zookeeper.connect is
  refused).
Translated as well: authorizer.class.name (any: ottla's `authorizer = "acl"`, Kafka's
  StandardAuthorizer rules), allow.everyone.if.no.acl.found, super.users.
"""

import ctypes
import os
import re
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "libs"))
from ottla_standin import (fail, jaas_login_config, jaas_options, jaas_section,  # noqa: E402
                           load_storage_record, pem_blocks, read_properties, run,
                           truststore_pem)

SCRIPT = "kafka-run-class.sh"
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "..", ".."))
OTTLA_BIN = os.environ.get("OTTLA_BIN") or os.path.join(REPO, "target", "release", "ottla")
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

FLAGS = {
    "num.partitions": "--num-partitions",
    "default.replication.factor": "--default-replication-factor",
    "min.insync.replicas": "--min-insync-replicas",
    "message.max.bytes": "--message-max-bytes",
    "socket.request.max.bytes": "--max-frame-bytes",
    "group.initial.rebalance.delay.ms": "--group-initial-rebalance-delay-ms",
}
ENV = {
    "group.min.session.timeout.ms": "OTTLA_GROUP_MIN_SESSION_TIMEOUT_MS",
    "group.max.session.timeout.ms": "OTTLA_GROUP_MAX_SESSION_TIMEOUT_MS",
    "offsets.topic.replication.factor": "OTTLA_OFFSETS_TOPIC_REPLICATION_FACTOR",
    "offsets.topic.num.partitions": "OTTLA_OFFSETS_TOPIC_NUM_PARTITIONS",
    "transaction.state.log.replication.factor": "OTTLA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
    "transaction.state.log.num.partitions": "OTTLA_TRANSACTION_STATE_LOG_NUM_PARTITIONS",
}
IGNORED = {
    "controller.quorum.bootstrap.servers", "controller.listener.names", "inter.broker.listener.name",
    "security.inter.broker.protocol", "sasl.mechanism.inter.broker.protocol",
    "sasl.mechanism.controller.protocol", "transaction.state.log.min.isr", "metadata.log.dir",
}
# Consumed by the translation below (listeners, TLS, SASL, ACL checks).
HANDLED = {
    "node.id", "broker.id", "listeners", "advertised.listeners", "listener.security.protocol.map",
    "log.dirs", "log.dir", "auto.create.topics.enable", "process.roles", "controller.quorum.voters",
    "ssl.keystore.location", "ssl.keystore.password", "ssl.keystore.type", "ssl.key.password",
    "ssl.client.auth", "ssl.truststore.location", "ssl.truststore.password", "ssl.truststore.type",
    "sasl.enabled.mechanisms", "authorizer.class.name", "allow.everyone.if.no.acl.found",
}
LISTENER_JAAS = re.compile(r"^listener\.name\.([^.]+)\.([^.]+)\.sasl\.jaas\.config$")


def csv(value):
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def parse_listeners(value, protocol_map, controller_names, key):
    """[(protocol, host, port)] of a listeners/advertised.listeners value."""
    out = []
    for item in csv(value):
        m = re.match(r"^([A-Za-z0-9_]+)://(\[[^\]]*\]|[^:\[\]]*):(\d+)$", item)
        if not m:
            fail(SCRIPT, "%s: bad listener %r (expected NAME://HOST:PORT)" % (key, item))
        name, host, port = m.group(1).upper(), m.group(2), m.group(3)
        if name in controller_names:
            continue
        protocol = protocol_map.get(name, name if name in PROTOCOLS else None)
        if protocol not in PROTOCOLS:
            fail(SCRIPT, "%s: listener %s has no security protocol ottla serves (%s)" % (key, name, protocol))
        if not host:
            fail(SCRIPT, "%s: listener %r has no host; name the address to bind" % (key, item))
        out.append((protocol, host, port))
    return out


def keystore_to_pem(props, out_dir):
    """(cert_file, key_file): the keystore's private key entry as PEM."""
    location = props.get("ssl.keystore.location")
    if not location:
        fail(SCRIPT, "an SSL/SASL_SSL listener needs ssl.keystore.location")
    store_type = props.get("ssl.keystore.type", "JKS")
    if store_type.upper() not in ("JKS", "PKCS12"):
        fail(SCRIPT, "ssl.keystore.type %s is not supported (JKS or PKCS12)" % store_type)
    store_pass = props.get("ssl.keystore.password", "")
    key_pass = props.get("ssl.key.password", store_pass)
    os.makedirs(out_dir, exist_ok=True)
    cert_file, key_file = os.path.join(out_dir, "server-chain.pem"), os.path.join(out_dir, "server-key.pem")
    if (os.path.exists(cert_file) and os.path.exists(key_file)
            and os.path.getmtime(cert_file) >= os.path.getmtime(location)):
        return cert_file, key_file  # converted by an earlier start of this fixture

    listing = run(["keytool", "-list", "-v", "-keystore", location, "-storetype", store_type,
                   "-storepass", store_pass], SCRIPT, "listing keystore %s" % location)
    aliases = re.findall(r"^Alias name: (.+?)\s*$\s*^Creation date:.*$\s*^Entry type: PrivateKeyEntry",
                         listing, flags=re.M)
    if len(aliases) != 1:
        fail(SCRIPT, "keystore %s: expected one private key entry, found %r" % (location, aliases))
    p12 = os.path.join(out_dir, "server.p12")
    tmp_pass = "ottla-standin"
    if os.path.exists(p12):
        os.remove(p12)
    run(["keytool", "-importkeystore", "-noprompt", "-srckeystore", location, "-srcstoretype", store_type,
         "-srcstorepass", store_pass, "-srcalias", aliases[0], "-srckeypass", key_pass,
         "-destkeystore", p12, "-deststoretype", "PKCS12", "-deststorepass", tmp_pass,
         "-destkeypass", tmp_pass], SCRIPT, "converting keystore %s to PKCS12" % location)

    def pkcs12(*opts):
        cmd = ["openssl", "pkcs12", "-in", p12, "-passin", "pass:" + tmp_pass, "-nodes", *opts]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
        if proc.returncode != 0:  # older keytools write RC2/3DES bags: OpenSSL 3 needs -legacy
            return run(cmd + ["-legacy"], SCRIPT, "openssl pkcs12 %s" % " ".join(opts))
        return proc.stdout.decode(errors="replace")

    keys = pem_blocks(pkcs12("-nocerts"))
    leaf = pem_blocks(pkcs12("-nokeys", "-clcerts"))
    chain = [c for c in pem_blocks(pkcs12("-nokeys", "-cacerts")) if c not in leaf]
    if len(keys) != 1 or len(leaf) != 1:
        fail(SCRIPT, "keystore %s: expected one key and one certificate, got %d and %d"
             % (location, len(keys), len(leaf)))
    with open(cert_file + ".tmp", "w") as f:
        f.write("\n".join(leaf + chain) + "\n")
    fd = os.open(key_file + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(keys[0] + "\n")
    os.replace(key_file + ".tmp", key_file)
    os.replace(cert_file + ".tmp", cert_file)
    os.remove(p12)
    return cert_file, key_file


def plain_users(jaas_text, where):
    """{name: password} from PlainLoginModule entries; other modules' mechanisms are checked
    against sasl.enabled.mechanisms by the caller."""
    users, modules = {}, []
    for entry in jaas_text.split(";"):
        entry = entry.strip()
        if not entry:
            continue
        module = entry.split()[0]
        modules.append(module)
        if module.endswith(".PlainLoginModule"):
            for key, value in jaas_options(entry):
                if key.startswith("user_"):
                    users[key[len("user_"):]] = value
        elif not module.endswith(".ScramLoginModule"):
            fail(SCRIPT, "%s: login module %s is not supported (PLAIN and SCRAM only)" % (where, module))
    return users


def translate(props, properties_path, env):
    """(ottla args, extra environment)."""
    args, extra = [], {}
    for key in props:
        if not (key in HANDLED or key in FLAGS or key in ENV or key in IGNORED or LISTENER_JAAS.match(key)):
            fail(SCRIPT, "property %s is not supported by the ottla stand-in (see the mapping at the "
                         "top of %s)" % (key, os.path.realpath(__file__)))

    roles = set(csv(props.get("process.roles", "broker,controller")))
    if roles != {"broker", "controller"}:
        fail(SCRIPT, "process.roles=%s: only a combined broker,controller node is supported"
             % props.get("process.roles"))
    node_id = props.get("node.id", props.get("broker.id"))
    if node_id is None:
        fail(SCRIPT, "node.id is required")
    voters = csv(props.get("controller.quorum.voters"))
    if voters and (len(voters) != 1 or not voters[0].startswith(node_id + "@")):
        fail(SCRIPT, "controller.quorum.voters=%s: only this node (%s) may vote" % (voters, node_id))
    args += ["--node-id", node_id]

    protocol_map = {}
    for item in csv(props.get("listener.security.protocol.map")):
        name, _, proto = item.partition(":")
        protocol_map[name.strip().upper()] = proto.strip().upper()
    controller_names = {n.upper() for n in csv(props.get("controller.listener.names"))}
    listeners = parse_listeners(props.get("listeners", "PLAINTEXT://localhost:9092"), protocol_map,
                                controller_names, "listeners")
    if not listeners:
        fail(SCRIPT, "no broker listener in listeners=%s" % props.get("listeners"))
    advertised = parse_listeners(props.get("advertised.listeners"), protocol_map, controller_names,
                                 "advertised.listeners")
    protocols = {p for p, _, _ in listeners}
    bare = protocols == {"PLAINTEXT"}  # also what an ottla without security flags understands
    for flag, entries in (("--listen", listeners), ("--advertise", advertised)):
        for proto, host, port in entries:
            args += [flag, ("%s:%s" % (host, port)) if bare else ("%s://%s:%s" % (proto, host, port))]

    dirs = csv(props.get("log.dirs", props.get("log.dir")))
    if len(dirs) != 1:
        fail(SCRIPT, "log.dirs must name exactly one directory, got %r" % dirs)
    args += ["--data-dir", dirs[0]]

    for key, flag in FLAGS.items():
        if key in props:
            args += [flag, props[key]]
    if "auto.create.topics.enable" in props:
        value = props["auto.create.topics.enable"].strip().lower()
        if value not in ("true", "false"):
            fail(SCRIPT, "auto.create.topics.enable=%s: expected true or false" % value)
        args += ["--auto-create-topics", value]
    for key, var in ENV.items():
        if key in props:
            extra[var] = props[key]

    if props.get("authorizer.class.name", "").strip():
        extra["OTTLA_AUTHORIZER"] = "acl"
        everyone = props.get("allow.everyone.if.no.acl.found", "false").strip().lower()
        if everyone not in ("true", "false"):
            fail(SCRIPT, "allow.everyone.if.no.acl.found=%s: expected true or false" % everyone)
        extra["OTTLA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] = everyone
        if props.get("super.users", "").strip():
            # Kafka separates super users with ';'.
            extra["OTTLA_SUPER_USERS"] = ",".join(
                u.strip() for u in props["super.users"].split(";") if u.strip())

    base = os.path.dirname(os.path.abspath(properties_path))
    if protocols & {"SSL", "SASL_SSL"}:
        cert, key = keystore_to_pem(props, os.path.join(base, "ottla-tls"))
        args += ["--tls-cert-file", cert, "--tls-key-file", key]
        client_auth = props.get("ssl.client.auth", "none").strip().lower()
        if client_auth in ("requested", "required"):
            location = props.get("ssl.truststore.location")
            if not location:
                fail(SCRIPT, "ssl.client.auth=%s needs ssl.truststore.location" % client_auth)
            ca_file = os.path.join(base, "ottla-tls", "client-ca.pem")
            with open(ca_file, "w") as f:
                f.write(truststore_pem(location, props.get("ssl.truststore.password"),
                                       props.get("ssl.truststore.type"), SCRIPT))
            extra["OTTLA_TLS_CLIENT_AUTH"] = client_auth
            extra["OTTLA_TLS_CLIENT_CA_FILE"] = ca_file
        elif client_auth != "none":
            fail(SCRIPT, "ssl.client.auth=%s: expected none, requested or required" % client_auth)

    users = {}  # name -> password

    def add_user(name, password, source):
        if users.get(name, password) != password:
            fail(SCRIPT, "user %s has two passwords (%s); ottla keeps one credential per user" % (name, source))
        users[name] = password

    record = load_storage_record(properties_path)
    if record:
        args += ["--cluster-id", record["cluster_id"]]
        for cred in record.get("scram", []):
            add_user(cred["name"], cred["password"], "kafka-storage.sh --add-scram")

    if protocols & {"SASL_PLAINTEXT", "SASL_SSL"}:
        mechanisms = [m.upper() for m in csv(props.get("sasl.enabled.mechanisms", "GSSAPI"))]
        unsupported = [m for m in mechanisms if m not in MECHANISMS]
        if unsupported or not mechanisms:
            fail(SCRIPT, "sasl.enabled.mechanisms=%s: ottla serves %s" % (",".join(mechanisms), ", ".join(MECHANISMS)))
        args += ["--sasl-enabled-mechanisms", ",".join(mechanisms)]
        jaas_file = jaas_login_config(env)
        if jaas_file:
            with open(jaas_file, encoding="utf-8") as f:
                section = jaas_section(f.read(), "KafkaServer")
            if section is None:
                fail(SCRIPT, "%s has no KafkaServer section" % jaas_file)
            for name, password in plain_users(section, jaas_file).items():
                add_user(name, password, "JAAS user_%s" % name)
        for key, value in props.items():
            if LISTENER_JAAS.match(key):
                for name, password in plain_users(value, key).items():
                    add_user(name, password, key)
        if "PLAIN" in mechanisms and not users:
            fail(SCRIPT, "PLAIN is enabled but no user is defined (JAAS user_NAME=\"PASSWORD\")")
    for name, password in users.items():
        args += ["--bootstrap-user", "%s:%s" % (name, password)]
    return args, extra


def die_with_parent():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def main(argv):
    if len(argv) < 2 or argv[0] != "kafka.Kafka":
        fail(SCRIPT, "only `kafka.Kafka PROPERTIES` is supported, got %r" % (argv,))
    properties_path = argv[1]
    props = read_properties(properties_path)
    rest = iter(argv[2:])
    for arg in rest:
        if arg != "--override":
            fail(SCRIPT, "unsupported argument %r" % arg)
        key, _, value = (next(rest, "")).partition("=")
        props[key.strip()] = value.strip()
    if any(k.startswith("zookeeper.") for k in props):
        fail(SCRIPT, "ZooKeeper mode is not supported (KRaft, KAFKA_VERSION >= 4.0, only)")

    args, extra = translate(props, properties_path, os.environ)
    node_id = args[args.index("--node-id") + 1]
    env = dict(os.environ, NO_COLOR="1", **extra)
    env.setdefault("RUST_LOG", "info")

    log_file = None
    if os.environ.get("LOG_DIR"):
        os.makedirs(os.environ["LOG_DIR"], exist_ok=True)
        log_file = open(os.path.join(os.environ["LOG_DIR"], "server.log"), "a", encoding="utf-8")

    def emit(line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        if log_file:
            log_file.write(line + "\n")
            log_file.flush()

    shown = ["%s=%s" % kv for kv in sorted(extra.items())] + [OTTLA_BIN] + args
    emit("ottla stand-in for kafka.Kafka %s: %s" % (properties_path, " ".join(shown)))
    if not os.access(OTTLA_BIN, os.X_OK):
        fail(SCRIPT, "no ottla binary at %s (set OTTLA_BIN)" % OTTLA_BIN)
    child = subprocess.Popen([OTTLA_BIN, *args], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)

    def forward(signum, _frame):
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)

    ansi = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
    scram = re.compile(r'applied SCRAM credential\b.*?\buser="?([^"\s]+)"?')
    started = False
    for raw in iter(child.stdout.readline, b""):
        line = ansi.sub("", raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        emit(line)
        if not started and "ottla ready on" in line:
            started = True
            emit("[KafkaRaftServer nodeId=%s] Kafka Server started (ottla stand-in)" % node_id)
        m = scram.search(line)
        if m:
            emit("Replayed UserScramCredentialRecord creating new entry for %s (ottla stand-in)" % m.group(1))
    rc = child.wait()
    emit("ottla exited with status %d" % rc)
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
