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
. "$here/../lib.sh"

need_root "the rig runs PostgreSQL as user postgres; so does PgBouncer"
for f in /usr/lib/postgresql/15/bin/pgbench /usr/sbin/pgbouncer /usr/bin/python3; do
    [ -x "$f" ] || die "$f missing (apt-get install -y postgresql pgbouncer python3-psycopg2)"
done

build_tokenpool

exec_bench "$@"
