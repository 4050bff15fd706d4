#!/usr/bin/env bash
# Regenerates the measured part of BENCHMARKS.md: runs every benchmark once,
# in one go, on this machine. Installs nothing; the Redis comparison runs
# only if redis-server and redis-benchmark are on PATH.
#   scripts/bench.sh          # about 20 minutes
set -euo pipefail
cd "$(dirname "$0")/.."

block=$(mktemp)
trap 'rm -f "$block"' EXIT
{
  echo "<!-- measured:start (scripts/bench.sh writes this block; edit outside it) -->"
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores,"\
       "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'),"\
       "$(uname -sr), $(rustc --version | cut -d' ' -f1-2)."
  echo
  echo "### Store (\`cargo bench --bench store\`)"
  echo '```'
  cargo bench --bench store 2>/dev/null | sed -n '/^memory:/p;/^change hook/p;/^store summary/,$p'
  echo '```'
  echo
  echo "### Jobs (\`cargo bench --bench jobs\`)"
  echo '```'
  cargo bench --bench jobs 2>/dev/null | grep -v '^$' | grep -v '^\s*Running\|Finished\|Compiling'
  echo '```'
  echo
  echo "### Server over FIFOs (\`cargo bench --bench server\`)"
  echo '```'
  cargo bench --bench server -- roundtrip fanout redis 2>/dev/null | grep -v '^\s*Running\|Finished\|Compiling'
  echo '```'
  echo
  echo "### Data dir (\`cargo bench --bench persist\`)"
  echo '```'
  cargo bench --bench persist 2>/dev/null | grep -v '^\s*Running\|Finished\|Compiling'
  echo '```'
  echo
  echo "### RESP against redis-server (\`scripts/resp_bench.sh\`)"
  echo '```'
  scripts/resp_bench.sh 2>/dev/null
  echo '```'
  echo "<!-- measured:end -->"
} > "$block"

if [ -f BENCHMARKS.md ] && grep -q 'measured:start' BENCHMARKS.md; then
  awk -v blockfile="$block" '
    /measured:start/ { while ((getline line < blockfile) > 0) print line; skip = 1; next }
    /measured:end/   { skip = 0; next }
    !skip            { print }
  ' BENCHMARKS.md > BENCHMARKS.md.new
  mv BENCHMARKS.md.new BENCHMARKS.md
else
  cat "$block" >> BENCHMARKS.md
fi
echo "BENCHMARKS.md updated"
