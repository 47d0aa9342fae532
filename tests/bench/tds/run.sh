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
. "$here/../lib.sh"

need_root "the rig runs PostgreSQL as user postgres"
command -v node >/dev/null || die "node missing (Node 20)"
[ -d "$repo/tests/integration/node_modules/tedious" ] \
    || die "tests/integration/node_modules/tedious missing (tests/deps.sh installs it)"
[ -x /usr/bin/python3 ] || die "/usr/bin/python3 missing"

build_tokenpool

exec_bench "$@"
