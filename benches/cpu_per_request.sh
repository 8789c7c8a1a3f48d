#!/usr/bin/env bash
# Broker CPU per request at a low rate (the issue's measure): 50,000 x 1 KB at 5,000 msgs/s,
# acks=1, linger.ms=0, from librdkafka's rdkafka_performance; broker CPU (user + sys) from
# /proc/PID/stat. Then the same exchange against benches/floor/floor.c, which does only what
# the kernel must (epoll_wait, recv, pwrite, send per request): the floor under any broker.
#
#   benches/cpu_per_request.sh [BROKER_BINARY ...]    (default target/release/ottla)
#
# rdkafka_performance comes from ../shared/tools/setup-bench.sh (PEERS, default
# ~/.cache/kafka-peers). Each binary is run ROUNDS times (default 2), alternating.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/kafka-peers}
RK=$PEERS/librdkafka-2.12.1/examples/rdkafka_performance
[ -x "$RK" ] || { echo "rdkafka_performance missing: run ../shared/tools/setup-bench.sh" >&2; exit 1; }
COUNT=${COUNT:-50000} RATE=${RATE:-5000} ROUNDS=${ROUNDS:-2} PORT=${PORT:-19592}
BINS=("$@"); [ ${#BINS[@]} -gt 0 ] || BINS=(target/release/ottla)
TCK=$(getconf CLK_TCK)
mkdir -p target; gcc -O2 -o target/floor benches/floor/floor.c

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
report() { # name ticks
  python3 -c "import sys; t=$2/$TCK; print(f'{sys.argv[1]:<40} {t:6.2f} CPU-s  {t/$COUNT*1e6:6.1f} us/request')" "$1"
}

broker() { # binary
  local d; d=$(mktemp -d)
  "$1" --listen 127.0.0.1:$PORT --data-dir "$d" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
  "$RK" -P -t cpu -b 127.0.0.1:$PORT -s 1024 -r "$RATE" -c 1000 -X linger.ms=0 -a 1 >/dev/null 2>&1
  local c0; c0=$(cpu $pid)
  "$RK" -P -t cpu -b 127.0.0.1:$PORT -s 1024 -r "$RATE" -c "$COUNT" -X linger.ms=0 -a 1 >/dev/null 2>&1
  local c1; c1=$(cpu $pid)
  kill $pid; wait $pid 2>/dev/null || true; rm -rf "$d"
  report "$1" $((c1 - c0))
}

floor() { # nowrite|write
  local f; f=$(mktemp)
  target/floor server $PORT "$f" "$1" &
  local pid=$!
  # The server's CPU is read just before the client closes (it exits then): sample it.
  local last=0
  target/floor client $PORT "$COUNT" "$RATE" 1100 &
  local client=$!
  while kill -0 $client 2>/dev/null; do last=$(cpu $pid 2>/dev/null || echo "$last"); sleep 0.05; done
  wait $pid 2>/dev/null || true; rm -f "$f"
  local what="epoll_wait, recv, pwrite, send"
  [ "$1" = nowrite ] && what="epoll_wait, recv, send"
  report "floor ($what)" "$last"
}

for _ in $(seq "$ROUNDS"); do
  for b in "${BINS[@]}"; do broker "$b"; done
  floor write
  floor nowrite
done
