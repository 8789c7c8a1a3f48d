#!/usr/bin/env bash
# Runs kafka-python's own SSL and SASL integration tests (unmodified, from its sdist) against
# ottla brokers that the tests' KafkaFixture spawns through the stand-in Kafka scripts here:
#
#   run_kafka_python_security.sh TEST_DIR PYTHON [OTTLA_BIN] [PYTEST_ARGS...]
#
#   TEST_DIR   the sdist's test/ directory (or its parent), e.g. compat-tests/.kp/run/test as
#              scripts/test prepares it; __init__.py and service.py from this directory are
#              copied into it (as scripts/test does)
#   PYTHON     a Python with kafka-python, pytest and pytest-timeout (compat-tests/.venv/bin/python)
#   OTTLA_BIN  the broker binary [default: $OTTLA_BIN, else <repo>/target/release/ottla]
#   KP_TESTS   (environment) the test files, relative to TEST_DIR's parent
#              [default: test/integration/test_ssl_integration.py test/integration/test_sasl_integration.py]
#
# KAFKA_URI is removed from the environment (the fixtures then spawn brokers), KAFKA_VERSION is
# 4.0.0 (KRaft fixtures), KAFKA_ROOT and PROJECT_ROOT point at kafka_root/ and project_root/
# here. Each broker's output is logged on the `test.service.spawned` logger, so a failing test's
# report shows the broker's lines ("Captured log setup/call"); the SASL fixture also dumps the
# whole broker output at teardown. Exit status: pytest's.
#
# Sanity check of the harness with kafka-python's plaintext producer tests, spawned the same way:
#   KP_TESTS=test/integration/test_producer_integration.py \
#       run_kafka_python_security.sh compat-tests/.kp/run/test compat-tests/.venv/bin/python "" -k "not idempotent"
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
[ $# -ge 2 ] || { sed -n '2,25p' "$0" >&2; exit 2; }
TEST_DIR="$1"; PY="$2"; shift 2
BIN="${OTTLA_BIN:-$REPO/target/release/ottla}"
if [ $# -gt 0 ]; then [ -n "$1" ] && BIN="$1"; shift; fi

if [ -d "$TEST_DIR/test/integration" ]; then TEST_DIR="$TEST_DIR/test"; fi
[ -d "$TEST_DIR/integration" ] || { echo "no integration/ in $TEST_DIR (kafka-python's sdist test dir)" >&2; exit 2; }
RUN_DIR="$(cd "$TEST_DIR/.." && pwd)"
[ -x "$BIN" ] || { echo "no ottla binary at $BIN" >&2; exit 2; }
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
case "$PY" in
    */*) PY_ABS="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;;  # keep the venv's symlink
    *) PY_ABS="$(command -v "$PY")" ;;
esac
[ -x "$PY_ABS" ] || { echo "no python $PY" >&2; exit 2; }
for tool in keytool openssl; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (kafka-python's gen_ssl_resources)" >&2; exit 2; }
done

cp "$HERE/__init__.py" "$HERE/service.py" "$TEST_DIR/"
read -r -a TESTS <<< "${KP_TESTS:-test/integration/test_ssl_integration.py test/integration/test_sasl_integration.py}"

echo "kafka-python integration tests (spawned ottla $BIN): ${TESTS[*]} $*"
cd "$RUN_DIR"
rc=0
env -u KAFKA_URI -u ZOOKEEPER_URI \
    KAFKA_VERSION=4.0.0 KAFKA_ROOT="$HERE/kafka_root" PROJECT_ROOT="$HERE/project_root" \
    OTTLA_BIN="$BIN" OTTLA_PY="$PY_ABS" \
    "$PY_ABS" -m pytest -q -p no:cacheprovider --timeout 180 -W ignore::DeprecationWarning -rfE \
    "${TESTS[@]}" "$@" || rc=$?
exit "$rc"
