"""Helpers shared by the stand-in Kafka scripts in ../bin (stdlib only)."""

import json
import os
import re
import subprocess
import sys

STORAGE_RECORD = "ottla-standin-storage.json"  # written by kafka-storage.sh next to the properties


def fail(script, message, code=2):
    sys.stderr.write("%s (ottla stand-in): %s\n" % (script, message))
    sys.stderr.flush()
    sys.exit(code)


def read_properties(path):
    """A Java .properties file as an ordered dict (comments, blank lines and `\\` line
    continuations handled; `key=value`, `key: value` and `key value`)."""
    props = {}
    with open(path, encoding="utf-8") as f:
        logical, pending = [], ""
        for raw in f.read().splitlines():
            line = raw.lstrip()
            if not pending and (not line or line[0] in "#!"):
                continue
            trailing = len(line) - len(line.rstrip("\\"))
            if trailing % 2 == 1:
                pending += line[:-1]
                continue
            logical.append(pending + line)
            pending = ""
        if pending:
            logical.append(pending)
    for line in logical:
        m = re.match(r"((?:[^\\=:\s]|\\.)+)\s*[=:\s]\s*(.*)$", line)
        if m:
            key, value = m.group(1), m.group(2)
        else:
            key, value = line.strip(), ""
        props[_unescape(key)] = _unescape(value.rstrip())
    return props


def _unescape(s):
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), s)


_JAAS_OPTION = re.compile(r'([A-Za-z0-9_.\-]+)\s*=\s*"((?:[^"\\]|\\.)*)"')


def jaas_options(text):
    """The `key="value"` options of JAAS login module entries, in order (a list of pairs)."""
    return [(k, re.sub(r"\\(.)", r"\1", v)) for k, v in _JAAS_OPTION.findall(text)]


def jaas_section(text, name):
    """The body of `name { ... };` in a JAAS file, or None."""
    text = re.sub(r"//[^\n]*|/\*.*?\*/", "", text, flags=re.S)
    m = re.search(r"(?:^|[\s;}])" + re.escape(name) + r"\s*\{(.*?)\}\s*;", text, flags=re.S)
    return m.group(1) if m else None


def jaas_login_config(env):
    """The file named by -Djava.security.auth.login.config in KAFKA_OPTS, or None."""
    m = re.search(r"-Djava\.security\.auth\.login\.config=(\S+)", env.get("KAFKA_OPTS", ""))
    return m.group(1).strip("'\"") if m else None


def storage_record_path(properties_path):
    return os.path.join(os.path.dirname(os.path.abspath(properties_path)), STORAGE_RECORD)


def load_storage_record(properties_path):
    path = storage_record_path(properties_path)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run(cmd, script, what):
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        fail(script, "%s failed (%s, exit %d):\n%s%s" % (
            what, " ".join(cmd), proc.returncode, proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace")))
    return proc.stdout.decode(errors="replace")


_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.S)


def pem_blocks(text):
    """The PEM blocks of `text` (openssl's "Bag Attributes" and other text dropped)."""
    return [m.group(0) for m in _PEM.finditer(text)]


def truststore_pem(location, password, store_type, script):
    """PEM text of every certificate in a Java truststore (JKS or PKCS12), via keytool."""
    cmd = ["keytool", "-list", "-rfc", "-keystore", location, "-storepass", password or ""]
    if store_type:
        cmd += ["-storetype", store_type]
    certs = pem_blocks(run(cmd, script, "reading truststore %s" % location))
    if not certs:
        fail(script, "no certificate in truststore %s" % location)
    return "\n".join(certs) + "\n"
