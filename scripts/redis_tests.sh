#!/usr/bin/env bash
# Runs units of Redis's own test suite against a kvs this script starts
# (RESP on a free loopback port, a temporary jobs folder), and prints, per
# unit and in all, how many tests passed and failed. Redis's suite runs
# against an external server with `./runtest --host --port`; `--singledb`
# keeps it on database 0, the only one kvs has. It fetches nothing and
# copies nothing: give it the path of a Redis source tree (7.0.15 is what
# kvs's replies follow) and tclsh must be installed.
#
#   scripts/redis_tests.sh ~/src/redis                  # the default units
#   scripts/redis_tests.sh ~/src/redis unit/multi unit/pubsub
#
# A test that dies with an exception (a command kvs does not have, such as
# DEBUG) ends the rest of its unit: those are counted as "aborted". Tests
# Redis itself tags as needing a replica stream or DEBUG (needs:repl,
# needs:debug) are left out with the runner's own --tags option: kvs has
# neither; so are the tests named in scripts/redis_tests.skip (--skipfile),
# each of which needs a data type or command kvs does not have (lists,
# sets, hashes, sorted sets, streams, Lua, maxmemory policies), or, for
# one, an encoding Redis remembers and kvs computes: docs/redis-tests.md
# says which and why. Redis's source tree is not changed: the suite runs
# from a copy in the script's temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?usage: scripts/redis_tests.sh <redis-source-tree> [unit/name ...]}
shift
units=("$@")
# auth last: its binary-password test leaves requirepass set, as against
# redis-server.
[ ${#units[@]} -gt 0 ] || units=(unit/protocol unit/pubsub unit/info-command
  unit/quit unit/introspection unit/introspection-2 unit/multi unit/tracking
  unit/keyspace unit/scan unit/type/string unit/type/incr unit/expire unit/auth)
command -v tclsh >/dev/null || { echo "tclsh is not installed (apt-get install tcl)"; exit 1; }
[ -x "$src/runtest" ] || { echo "$src is not a Redis source tree (no runtest)"; exit 1; }

skipfile="$PWD/scripts/redis_tests.skip"
cargo build --release --quiet --bin kvs
work=$(mktemp -d /tmp/kvs-redis-tests.XXXXXX)
mkdir "$work/jobs"
# The runner works on a copy of the suite, so that the source tree is not
# touched: there, the auth unit (which upstream tags external:skip, as it
# sets requirepass with CONFIG SET) runs with its tests unchanged, only
# those tags taken off.
mkdir "$work/redis"
cp -r "$src/runtest" "$src/tests" "$work/redis/"
sed -i 's/ external:skip"/"/' "$work/redis/tests/unit/auth.tcl"
src="$work/redis"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/kvs "$work/jobs" 2 2 "$work/reg" --resp-port "$port" 2>"$work/kvs.log" &
kvs=$!
trap 'kill $kvs 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port)).close()" 2>/dev/null && break
  sleep 0.1
done

total_ok=0; total_err=0
for unit in "${units[@]}"; do
  log="$work/$(basename "$unit").log"
  (cd "$src" && timeout 600 ./runtest --host 127.0.0.1 --port "$port" --singledb \
      --single "$unit" --timeout 30 --tags "-needs:repl -needs:debug -needs:config-maxmemory -masterauth" \
      --skipfile "$skipfile" >"$log" 2>&1) || true
  plain=$(sed 's/\x1b\[[0-9;]*m//g' "$log")
  ok=$(grep -c '^\[ok\]' <<<"$plain" || true)
  err=$(grep -c '^\[err\]' <<<"$plain" || true)
  exc=$(grep -c '^\[exception\]' <<<"$plain" || true)
  total_ok=$((total_ok + ok)); total_err=$((total_err + err + exc))
  note=""; [ "$exc" -gt 0 ] && note=" (an exception aborted the rest of the unit)"
  echo "$unit: $ok passed, $((err + exc)) failed$note   log: $log"
done
echo "$total_ok passed, $total_err failed"
