#!/usr/bin/env bash
# The data dir's cost before and after a change, in one run: builds `kvs` at
# <rev> in a temporary worktree, then runs the persist bench's rows with that
# binary and with this checkout's, alternating, ROUNDS times (default 2).
#   scripts/persist_before_after.sh 04ef5f3 [rows...]   # rows: roundtrip jobs recovery redis logcost
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: scripts/persist_before_after.sh <rev> [rows...]}
shift
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(roundtrip jobs recovery logcost)
rounds=${ROUNDS:-2}

work=$(mktemp -d)
trap 'git worktree remove --force "$work/tree" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add -q --detach "$work/tree" "$rev"
echo "building kvs at $rev ..." >&2
(cd "$work/tree" && CARGO_TARGET_DIR="$work/target" cargo build -q --release --bin kvs)
before="$work/target/release/kvs"
cargo build -q --release --bin kvs
cargo bench --bench persist --no-run -q 2>/dev/null

for round in $(seq "$rounds"); do
  for which in before after; do
    echo "=== round $round: $which ($([ $which = before ] && echo "$rev" || git rev-parse --short HEAD)) ==="
    if [ $which = before ]; then
      KVS_BENCH_BIN="$before" cargo bench -q --bench persist -- "${rows[@]}" 2>/dev/null | grep -v '^\s*Running\|Finished\|Compiling'
    else
      cargo bench -q --bench persist -- "${rows[@]}" 2>/dev/null | grep -v '^\s*Running\|Finished\|Compiling'
    fi
  done
done
