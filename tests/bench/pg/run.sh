#!/usr/bin/env bash
# tokenpool vs PgBouncer vs direct PostgreSQL, in one run, with ratios.
#
#   bash tests/bench/pg/run.sh                 # as root, from anywhere
#   BENCH_SECONDS=15 BENCH_OUT=/tmp/bench.json bash tests/bench/pg/run.sh
#
# Builds tokenpool (Release, incremental) unless TOKENPOOL_BIN is set, raises
# the open-files limit, then execs bench.py -- which starts the rig, tokenpool
# and PgBouncer, runs pgbench and the idle-client memory test, prints the
# table and stops everything it started, also on error, Ctrl-C or SIGTERM
# (signal handlers + finally; the proxies and pgbench also get SIGTERM from
# the kernel if bench.py is killed outright, and the rig has its own guardian).
# See tests/bench/README.md for the knobs and how to read the output.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"

if [ "$(id -u)" -ne 0 ]; then
    echo "run.sh: needs root (the rig runs PostgreSQL as user postgres; so does PgBouncer)" >&2
    exit 1
fi
for f in /usr/lib/postgresql/15/bin/pgbench /usr/sbin/pgbouncer /usr/bin/python3; do
    [ -x "$f" ] || { echo "run.sh: $f missing (apt-get install -y postgresql pgbouncer python3-psycopg2)" >&2; exit 1; }
done

if [ -z "${TOKENPOOL_BIN:-}" ]; then
    echo "[run.sh] building tokenpool (Release) in $repo/build" >&2
    (cd "$repo" && cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null \
        && cmake --build build -j2 --target tokenpool >/dev/null) \
        || { echo "run.sh: build failed" >&2; exit 1; }
    export TOKENPOOL_BIN="$repo/build/tokenpool"
fi

# 10,000 idle clients need more than 1024 descriptors in the proxies and in
# the client; children inherit this (bench.py also sets soft = hard for them).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

exec /usr/bin/python3 "$here/bench.py" "$@"
