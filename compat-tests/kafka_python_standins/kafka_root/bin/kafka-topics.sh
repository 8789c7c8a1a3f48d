#!/usr/bin/env python3
"""Stand-in for Kafka's kafka-topics.sh, backed by kafka-python's KafkaAdminClient.

    kafka-topics.sh --list --bootstrap-server HOST:PORT [--command-config FILE] [--exclude-internal]
    kafka-topics.sh --create --topic T [--partitions N] [--replication-factor R] [--if-not-exists]
                    --bootstrap-server HOST:PORT [--command-config FILE]

--list prints the topic names, sorted, one per line. Errors print Kafka's
`Error while executing topic command : ...` line and exit 1.

--command-config is read as Kafka client properties:
  security.protocol                        security_protocol
  sasl.mechanism                           sasl_mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)
  sasl.jaas.config username="" password="" sasl_plain_username / sasl_plain_password
  ssl.truststore.location, .password, .type
                                           ssl_cafile: a PEM file of the truststore's
                                           certificates (keytool -list -rfc)
  ssl.endpoint.identification.algorithm    empty: ssl_check_hostname=False (Kafka's default,
                                           https, checks the host name)
Anything else is refused.

The script needs a Python with kafka-python: when the interpreter running it lacks the
package it re-executes itself with $OTTLA_PY (the test process's interpreter; the
kafka_python_standins service.py sets it).
"""

import os
import sys

SCRIPT = "kafka-topics.sh"
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "libs"))

try:
    import kafka  # noqa: F401
except ImportError:
    # A venv's python is a symlink to the base interpreter: compare paths unresolved, and
    # re-execute once at most.
    other = os.environ.get("OTTLA_PY")
    if other and not os.environ.get("OTTLA_STANDIN_REEXEC"):
        os.environ["OTTLA_STANDIN_REEXEC"] = "1"
        os.execv(other, [other, os.path.realpath(__file__), *sys.argv[1:]])
    sys.stderr.write("%s (ottla stand-in): kafka-python is not importable by %s; set OTTLA_PY to a "
                     "Python that has it\n" % (SCRIPT, sys.executable))
    sys.exit(2)

import tempfile  # noqa: E402

from ottla_standin import fail, jaas_options, read_properties, truststore_pem  # noqa: E402

CLIENT_KEYS = {"security.protocol", "sasl.mechanism", "sasl.jaas.config", "ssl.truststore.location",
               "ssl.truststore.password", "ssl.truststore.type", "ssl.endpoint.identification.algorithm"}


def client_config(path, tmp_dir):
    config = {}
    if not path:
        return config
    props = read_properties(path)
    unknown = sorted(set(props) - CLIENT_KEYS)
    if unknown:
        fail(SCRIPT, "%s: unsupported client properties %s" % (path, ", ".join(unknown)))
    protocol = props.get("security.protocol", "PLAINTEXT").upper()
    config["security_protocol"] = protocol
    if protocol.startswith("SASL_"):
        config["sasl_mechanism"] = props.get("sasl.mechanism", "GSSAPI").upper()
        options = dict(jaas_options(props.get("sasl.jaas.config", "")))
        if "username" in options:
            config["sasl_plain_username"] = options["username"]
            config["sasl_plain_password"] = options.get("password", "")
    if protocol in ("SSL", "SASL_SSL"):
        location = props.get("ssl.truststore.location")
        if location:
            cafile = os.path.join(tmp_dir, "truststore.pem")
            with open(cafile, "w") as f:
                f.write(truststore_pem(location, props.get("ssl.truststore.password"),
                                       props.get("ssl.truststore.type"), SCRIPT))
            config["ssl_cafile"] = cafile
        config["ssl_check_hostname"] = props.get("ssl.endpoint.identification.algorithm", "https") != ""
    return config


def main(argv):
    opts = {"list": False, "create": False, "exclude_internal": False, "if_not_exists": False}
    values = {}
    args = iter(argv)
    for arg in args:
        if arg in ("--list", "--create"):
            opts[arg[2:]] = True
        elif arg == "--exclude-internal":
            opts["exclude_internal"] = True
        elif arg == "--if-not-exists":
            opts["if_not_exists"] = True
        elif arg in ("--bootstrap-server", "--command-config", "--topic", "--partitions",
                     "--replication-factor"):
            values[arg[2:]] = next(args, None)
        else:
            fail(SCRIPT, "unsupported argument %r" % arg)
    if opts["list"] == opts["create"]:
        fail(SCRIPT, "give exactly one of --list and --create")
    if not values.get("bootstrap-server"):
        fail(SCRIPT, "--bootstrap-server is required")

    from kafka import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    with tempfile.TemporaryDirectory(prefix="kafka-topics-") as tmp:
        config = client_config(values.get("command-config"), tmp)
        try:
            admin = KafkaAdminClient(bootstrap_servers=values["bootstrap-server"],
                                     client_id="kafka-topics-standin", **config)
            try:
                if opts["list"]:
                    if opts["exclude_internal"]:
                        names = [t["name"] for t in admin.describe_topics() if not t.get("is_internal")]
                    else:
                        names = admin.list_topics()
                    for name in sorted(names):
                        print(name)
                else:
                    if not values.get("topic"):
                        fail(SCRIPT, "--create needs --topic")
                    spec = {"num_partitions": int(values.get("partitions") or -1),
                            "replication_factor": int(values.get("replication-factor") or -1)}
                    try:
                        admin.create_topics({values["topic"]: spec})
                        print("Created topic %s." % values["topic"])
                    except TopicAlreadyExistsError:
                        if not opts["if_not_exists"]:
                            raise
            finally:
                admin.close()
        except Exception as e:  # Kafka's tool reports errors this way (fixtures grep it)
            print("Error while executing topic command : %s: %s" % (type(e).__name__, e))
            sys.stdout.flush()
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
