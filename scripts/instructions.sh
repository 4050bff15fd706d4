#!/usr/bin/env bash
# Instructions per request: kvs, the design's floor (examples/resp_floor.rs)
# and redis-server, each run under valgrind's callgrind while
# redis-benchmark sends it the same requests over a Unix socket.
#
# Throughput on a shared two-core machine swings 10-20% between identical
# runs; an instruction count does not (the same build and load give the
# same count to a few parts in ten thousand). It measures the user-space
# work per request only: the kernel's share (sockets, wake-ups) is left
# out, and that share is what the design's thread hand-offs cost.
#
# Usage:
#   scripts/instructions.sh                          # -t incr,set -c 50 -P 16
#   KVS_IR_ARGS="-t get -c 50" scripts/instructions.sh
#   KVS_IR_BIN=/tmp/kvs-old scripts/instructions.sh  # another kvs build
#
# Needs valgrind (apt-get install valgrind), redis-server and
# redis-benchmark; builds kvs and the floor in release mode. Takes about a
# minute per test (valgrind runs a program some fifty times slower).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in valgrind redis-server redis-benchmark; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIPPED: $tool is not installed" >&2
    exit 0
  fi
done
cargo build --release --bin kvs --example resp_floor >/dev/null 2>&1
kvs_bin=${KVS_IR_BIN:-target/release/kvs}
floor_bin=target/release/examples/resp_floor
args=${KVS_IR_ARGS:--c 50 -P 16}
tests=$(echo "${KVS_IR_TESTS:-incr,set}" | tr ',' ' ')
n=${KVS_IR_N:-100000}

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# measure <name> <test>: Ir per request of one server under one test.
measure() {
  local name=$1 test=$2 dir="$work/$1-$2"
  mkdir -p "$dir/jobs"
  case $name in
    kvs) valgrind --tool=callgrind --callgrind-out-file="$dir/cg" "$kvs_bin" "$dir/jobs" 2 2 \
           "$dir/reg" --resp-socket "$dir/s.sock" >/dev/null 2>"$dir/err" & ;;
    floor) valgrind --tool=callgrind --callgrind-out-file="$dir/cg" "$floor_bin" "$dir/s.sock" 0 \
             >/dev/null 2>"$dir/err" & ;;
    redis) valgrind --tool=callgrind --callgrind-out-file="$dir/cg" redis-server --port 0 \
             --unixsocket "$dir/s.sock" --save '' --appendonly no --dir "$dir" >/dev/null 2>"$dir/err" & ;;
  esac
  pid=$!
  for _ in $(seq 150); do [ -S "$dir/s.sock" ] && break; sleep 0.2; done
  if [ ! -S "$dir/s.sock" ]; then
    echo "$name did not start under valgrind: $(tail -3 "$dir/err")" >&2
    exit 1
  fi
  timeout 600 redis-benchmark -s "$dir/s.sock" -t "$test" $args -n "$n" -q >/dev/null 2>&1
  # kvs and redis-server end cleanly on SIGTERM; the floor is ended by it.
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=
  local total
  total=$(grep -hE '^(summary|totals):' "$dir"/cg* | head -1 | awk '{print $2}')
  echo $((total / n))
}

echo "instructions per request (callgrind), redis-benchmark $args -n $n over a Unix socket"
printf '%-8s %10s %10s %10s %10s %12s\n' test kvs floor redis kvs/redis kvs/floor
for test in $tests; do
  k=$(measure kvs "$test")
  f=$(measure floor "$test")
  r=$(measure redis "$test")
  awk -v t="$test" -v k="$k" -v f="$f" -v r="$r" \
    'BEGIN { printf "%-8s %10d %10d %10d %9.2fx %11.2fx\n", t, k, f, r, k / r, k / f }'
done
