#!/usr/bin/env python3
"""Stand-in for Kafka's kafka-storage.sh, for kafka-python's KRaft fixtures (stdlib only).

    kafka-storage.sh format [--standalone] -t CLUSTER_ID -c PROPERTIES
        [--add-scram 'MECHANISM=[name=NAME,password=PASSWORD]']... [--ignore-formatted]

Kafka writes meta.properties and the bootstrap metadata (SCRAM credentials included) into
log.dirs. ottla keeps its own metadata, so this only records the cluster id and the SCRAM
users in ottla-standin-storage.json next to PROPERTIES; kafka-run-class.sh (kafka.Kafka)
turns them into `--cluster-id` and `--bootstrap-user NAME:PASSWORD`. A credential given as
salt/saltedpassword instead of a password cannot be handed to ottla: refused.
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "libs"))
from ottla_standin import fail, storage_record_path  # noqa: E402

SCRIPT = "kafka-storage.sh"
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


def parse_scram(spec):
    m = re.match(r"^\s*([A-Z0-9-]+)\s*=\s*\[(.*)\]\s*$", spec)
    if not m or m.group(1) not in MECHANISMS:
        fail(SCRIPT, "bad --add-scram %r: expected 'SCRAM-SHA-256|SCRAM-SHA-512=[name=N,password=P]'" % spec)
    fields = {}
    for part in re.findall(r'(?:[^,"]|"[^"]*")+', m.group(2)):
        key, sep, value = part.partition("=")
        if not sep:
            fail(SCRIPT, "bad --add-scram field %r in %r" % (part, spec))
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        fields[key.strip().lower()] = value
    if "name" not in fields or "password" not in fields:
        fail(SCRIPT, "--add-scram %r: ottla needs name= and password= (salted credentials "
                     "cannot be bootstrapped)" % spec)
    return {"mechanism": m.group(1), "name": fields["name"], "password": fields["password"]}


def main(argv):
    if not argv or argv[0] != "format":
        fail(SCRIPT, "only `format` is supported, got %r" % (argv[:1],))
    args = iter(argv[1:])
    cluster_id = config = None
    scram = []
    for arg in args:
        if arg in ("-t", "--cluster-id"):
            cluster_id = next(args, None)
        elif arg in ("-c", "--config"):
            config = next(args, None)
        elif arg in ("-S", "--add-scram"):
            scram.append(parse_scram(next(args, "")))
        elif arg in ("--standalone", "-s", "--ignore-formatted", "-g", "--no-initial-controllers", "-N"):
            pass  # a single combined node; re-formatting just rewrites the record
        else:
            fail(SCRIPT, "unsupported argument %r" % arg)
    if not cluster_id or not config:
        fail(SCRIPT, "format needs -t CLUSTER_ID and -c PROPERTIES")
    if not os.path.isfile(config):
        fail(SCRIPT, "no properties file %s" % config)
    record = {"cluster_id": cluster_id, "scram": scram}
    path = storage_record_path(config)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, path)
    print("Formatting metadata directory (ottla stand-in): cluster id %s, %d SCRAM credential(s), "
          "recorded in %s" % (cluster_id, len(scram), path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
