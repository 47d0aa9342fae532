#!/usr/bin/env bash
# tokenpool vs direct for SQL Server clients (tedious), in one run, with ratios.
#
#   bash tests/bench/tds/run.sh                 # as root, from anywhere
#   BENCH_SECONDS=10 BENCH_OUT=/tmp/tds-bench.json bash tests/bench/tds/run.sh
#
# Builds tokenpool (Release, incremental) unless TOKENPOOL_BIN is set, raises
# the open-files limit, then execs bench.py -- which starts the rig, a quiet
# TDS server and tokenpool, runs load.js (tedious) against tokenpool and
# straight against the TDS server, measures tokenpool's memory per idle
# client, prints the table and stops everything it started, also on error,
# Ctrl-C or SIGTERM (tokenpool, the TDS server and node also get SIGTERM
# from the kernel if bench.py is killed outright; the rig has its guardian).
# See README.md here for the knobs and how to read the output.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"

if [ "$(id -u)" -ne 0 ]; then
    echo "run.sh: needs root (the rig runs PostgreSQL as user postgres)" >&2
    exit 1
fi
command -v node >/dev/null || { echo "run.sh: node missing (Node 20)" >&2; exit 1; }
[ -d "$repo/tests/integration/node_modules/tedious" ] \
    || { echo "run.sh: tests/integration/node_modules/tedious missing (tests/deps.sh installs it)" >&2; exit 1; }
[ -x /usr/bin/python3 ] || { echo "run.sh: /usr/bin/python3 missing" >&2; exit 1; }

if [ -z "${TOKENPOOL_BIN:-}" ]; then
    echo "[run.sh] building tokenpool (Release) in $repo/build" >&2
    (cd "$repo" && cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null \
        && cmake --build build -j2 --target tokenpool >/dev/null) \
        || { echo "run.sh: build failed" >&2; exit 1; }
    export TOKENPOOL_BIN="$repo/build/tokenpool"
fi

# 1,000 idle clients need more than 1024 descriptors in tokenpool and node;
# children inherit this (bench.py also sets soft = hard for them).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

exec /usr/bin/python3 "$here/bench.py" "$@"
