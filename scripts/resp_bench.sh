#!/usr/bin/env bash
# redis-benchmark against kvs and against a private redis-server, in the
# same run, over the same transport (Unix socket, then loopback TCP):
# -t set,get,incr,mset -n 200000 with -c 1, -c 50 and -c 50 -P 16, each with
# values of redis-benchmark's default 3 bytes, of 1 KiB and of 100 KiB (-d;
# a tenth of the requests at 100 KiB), and the last two again in RESP3
# (redis-benchmark -3: HELLO 3 first). Beside them the floor under kvs's
# rows: examples/resp_floor.rs, a server built as kvs is (one reactor
# thread, mutations crossing to a thread pool and back) that does nothing
# else. Prints each row and the ratios kvs/redis and floor/redis. Rounds
# alternate between the three servers and the best of each is kept (the
# machine is shared and noisy). Each option set's rows are printed as soon
# as its rounds are done, and the whole table again at the end.
#
#   scripts/resp_bench.sh                      # about an hour on 2 cores (57 min, 2026-12-07)
#   KVS_BENCH_ROUNDS=1 KVS_BENCH_N=50000 scripts/resp_bench.sh   # a quick look
#   KVS_BENCH_MATCH="-d 102400" scripts/resp_bench.sh   # only rows whose options have it
#
# Installs nothing: without redis-server and redis-benchmark on PATH it says
# so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in redis-server redis-benchmark; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIPPED: $tool is not on PATH (apt-get install redis-server redis-tools); no RESP comparison"
    exit 0
  fi
done

rounds=${KVS_BENCH_ROUNDS:-2}
n=${KVS_BENCH_N:-200000}
cargo build --release --quiet --bin kvs --example resp_floor
# shellcheck source=scripts/scratch.sh
. scripts/scratch.sh
scratch kvs-resp-bench

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

kvs_port=$(free_port)
redis_port=$(free_port)
floor_port=$(free_port)
mkdir "$work/jobs"
target/release/kvs "$work/jobs" 2 2 "$work/reg" \
  --resp-socket "$work/kvs.sock" --resp-port "$kvs_port" 2>"$work/kvs.log" &
pids+=($!)
redis-server --port "$redis_port" --bind 127.0.0.1 --unixsocket "$work/redis.sock" \
  --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
target/release/examples/resp_floor "$work/floor.sock" "$floor_port" &
pids+=($!)
for _ in $(seq 100); do
  [ -S "$work/kvs.sock" ] && [ -S "$work/redis.sock" ] && [ -S "$work/floor.sock" ] && break
  sleep 0.1
done

# bench <target args...> <client args...>: prints "TEST rps" lines.
bench() {
  redis-benchmark "$@" -t set,get,incr,mset --csv 2>/dev/null | tr -d '\r' |
    awk -F'"' 'NR > 1 && $2 != "" { split($2, t, " "); print t[1], $4 }'
}

# wanted <options>: whether the row is in KVS_BENCH_MATCH's selection.
wanted() {
  [ -z "${KVS_BENCH_MATCH:-}" ] && return 0
  case " $1 " in *" $KVS_BENCH_MATCH "*) return 0 ;; *) return 1 ;; esac
}

declare -A best

# rows <transport> <options>: the table's rows for one option set.
rows() {
  for test in SET GET INCR MSET; do
    k=${best["$1|$2|$test|kvs"]:-0}
    r=${best["$1|$2|$test|redis"]:-0}
    f=${best["$1|$2|$test|floor"]:-0}
    ratio=$(awk -v a="$k" -v b="$r" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
    fratio=$(awk -v a="$f" -v b="$r" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
    printf '%-9s %-22s %-5s %12.0f %12.0f %12.0f %9s %11s\n' "$1" "$2" "$test" "$k" "$r" "$f" "$ratio" "$fratio"
  done
}
header() {
  printf '%-9s %-22s %-5s %12s %12s %12s %9s %11s\n' transport clients test kvs redis floor kvs/redis floor/redis
}

header
configs=("-c 1" "-c 50" "-c 50 -P 16" "-c 1 -d 1024" "-c 50 -d 1024" "-c 50 -P 16 -d 1024"
  "-c 1 -d 102400" "-c 50 -d 102400" "-c 50 -P 16 -d 102400" "-c 50 -3" "-c 50 -P 16 -3")
for transport in unix tcp; do
  if [ "$transport" = unix ]; then
    kvs_at=(-s "$work/kvs.sock"); redis_at=(-s "$work/redis.sock"); floor_at=(-s "$work/floor.sock")
  else
    kvs_at=(-h 127.0.0.1 -p "$kvs_port"); redis_at=(-h 127.0.0.1 -p "$redis_port")
    floor_at=(-h 127.0.0.1 -p "$floor_port")
  fi
  for clients in "${configs[@]}"; do
    # shellcheck disable=SC2206
    words=($clients)
    size=3
    for ((i = 0; i < ${#words[@]}; i++)); do [ "${words[i]}" = -d ] && size=${words[i + 1]}; done
    wanted "$clients" || continue
    reqs=$n
    [ "$size" -ge 100000 ] && reqs=$((n / 10))
    for _ in $(seq "$rounds"); do
      for server in kvs redis floor; do
        case $server in
          kvs) at=("${kvs_at[@]}") ;;
          redis) at=("${redis_at[@]}") ;;
          floor) at=("${floor_at[@]}") ;;
        esac
        # shellcheck disable=SC2086
        while read -r test rps; do
          key="$transport|$clients|$test|$server"
          prev=${best[$key]:-0}
          best[$key]=$(awk -v a="$rps" -v b="$prev" 'BEGIN { print (a > b) ? a : b }')
        done < <(bench "${at[@]}" $clients -n "$reqs")
      done
    done
    rows "$transport" "$clients"
  done
done
echo

echo "redis-benchmark -t set,get,incr,mset -n $n (n/10 at -d 102400), best of $rounds alternating rounds"
echo "($(redis-server --version | cut -d' ' -f1-3); requests per second)"
header
for transport in unix tcp; do
  for clients in "${configs[@]}"; do
    wanted "$clients" || continue
    rows "$transport" "$clients"
  done
done
