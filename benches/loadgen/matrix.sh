#!/usr/bin/env bash
# The standard load matrix: each run gets a fresh disk-mode broker on a new temp data dir,
# started and stopped by ottla-load (which measures its CPU and peak RSS). Prints a markdown
# table at the end; the JSON lines stay in $OUT.
#
#   benches/loadgen/matrix.sh [extra ottla-load flags, added to every run]
#
# Environment:
#   OTTLA_BIN   broker binary to run (default: target/release/ottla, built here first)
#   PORT        broker port on 127.0.0.1 (default 19392)
#   OUT         file for the JSON lines (default: a new temp file)
#   SKIP_BUILD  set to 1 to use the binaries as they are
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    if [ -z "${OTTLA_BIN:-}" ]; then
        nice -n 19 cargo build --release
    fi
    nice -n 19 cargo build --release -p ottla-loadgen
fi
bin=${OTTLA_BIN:-$root/target/release/ottla}
load=$root/target/release/ottla-load
port=${PORT:-19392}
out=${OUT:-$(mktemp -t ottla-matrix-XXXXXX.jsonl)}
: >"$out"
status=0

run() {
    local dir
    dir=$(mktemp -d -t ottla-matrix-data-XXXXXX)
    echo "== ottla-load $*" >&2
    "$load" "$@" --json --broker-port "$port" \
        --broker-cmd "$bin --listen 127.0.0.1:$port --advertise 127.0.0.1:$port --data-dir $dir" \
        >>"$out" || status=1
    rm -rf "$dir"
}

run produce --record-size 100 --acks 1 --duration 8 "$@"
run produce --record-size 1024 --acks all --duration 8 "$@"
run consume --record-size 100 --partitions 1 --prefill --records 5000000 "$@"
run e2e --record-size 1024 --acks all --rate-mb 50 --duration 10 "$@"

"$load" table "$out"
echo "JSON lines: $out" >&2
exit $status
