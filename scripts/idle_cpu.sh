#!/usr/bin/env bash
# The server's CPU under a moderate load, where spinning cannot pay: N
# clients (default 50) over the Unix socket, one request at a time in
# turn, RATE requests a second in all (default 5000), SET and GET
# alternating, for SECONDS (default 8), against target/release/kvs and a
# private redis-server in turn. Prints the requests each answered and the
# CPU seconds each used (user + system, from /proc). See BENCHMARKS,
# "Spin only while it pays".
#
#   cargo build --release && scripts/idle_cpu.sh
#   KVS_BIN=/path/to/other/kvs scripts/idle_cpu.sh   # another build
#
# Installs nothing: without redis-server or python3 it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in redis-server python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIPPED: $tool is not on PATH; no comparison"
    exit 0
  fi
done
kvs=${KVS_BIN:-target/release/kvs}
clients=${N:-50}
rate=${RATE:-5000}
seconds=${SECONDS_RUN:-8}

# shellcheck source=scripts/scratch.sh
. scripts/scratch.sh
scratch kvs-idle-cpu

mkdir "$work/jobs"
"$kvs" "$work/jobs" 2 2 "$work/reg" --resp-socket "$work/kvs.sock" 2>"$work/kvs.log" &
kvs_pid=$!
pids+=("$kvs_pid")
redis-server --port 0 --unixsocket "$work/redis.sock" --save '' --appendonly no \
  --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 100); do
  [ -S "$work/kvs.sock" ] && [ -S "$work/redis.sock" ] && break
  sleep 0.1
done

# load <socket>: the client; prints how many requests were answered.
load() {
  python3 - "$1" "$clients" "$rate" "$seconds" <<'PY'
import socket, sys, time
path, n, rate, dur = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    socks.append(s)
SET = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$3\r\nval\r\n"
GET = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"
start = time.monotonic()
due, k = start, 0
while time.monotonic() - start < dur:
    s = socks[k % n]
    s.sendall(SET if k % 2 == 0 else GET)
    if not s.recv(100):
        sys.exit("the server closed a connection")
    k += 1
    due += 1.0 / rate
    wait = due - time.monotonic()
    if wait > 0:
        time.sleep(wait)
print(k)
PY
}

tick=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "$clients clients, $rate requests/s in all, ${seconds} s each"
for server in kvs redis; do
  if [ "$server" = kvs ]; then pid=$kvs_pid; else pid=$redis_pid; fi
  before=$(cpu "$pid")
  answered=$(load "$work/$server.sock")
  after=$(cpu "$pid")
  awk -v s="$server" -v n="$answered" -v c=$((after - before)) -v t="$tick" \
    'BEGIN { printf "%-6s %7d requests  %6.2f s CPU  %6.1f us a request\n", s, n, c / t, c / t / n * 1e6 }'
done
