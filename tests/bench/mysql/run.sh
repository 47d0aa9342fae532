#!/usr/bin/env bash
# tokenpool vs direct MariaDB (the rig's Azure Database for MySQL stand-in),
# in one run, with ratios.
#
#   bash tests/bench/mysql/run.sh                 # as root, from anywhere
#   BENCH_SECONDS=10 BENCH_REPS=3 BENCH_OUT=/tmp/mybench.json bash tests/bench/mysql/run.sh
#
# Builds tokenpool (Release, incremental) unless TOKENPOOL_BIN is set, raises
# the open-files limit, then execs bench.py -- which starts the rig and
# tokenpool, runs sysbench and mysqlslap against tokenpool and straight
# against MariaDB, then the idle-client memory test, prints the table and
# stops everything it started, also on error, Ctrl-C or SIGTERM (signal
# handlers + finally; tokenpool and the client programs also get SIGTERM from
# the kernel if bench.py is killed outright, and the rig has its own
# guardian). See README.md next to this file for the knobs and the output.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/../lib.sh"

need_root "the rig runs MariaDB and PostgreSQL and writes /etc/pam.d"
for f in /usr/bin/sysbench /usr/bin/mariadb-slap /usr/sbin/mariadbd /usr/bin/openssl /usr/bin/python3; do
    [ -x "$f" ] || die "$f missing (apt-get install -y sysbench mariadb-server mariadb-client openssl python3-pymysql)"
done
/usr/bin/python3 -c 'import pymysql' 2>/dev/null \
    || die "python3-pymysql missing (apt-get install -y python3-pymysql)"

build_tokenpool

exec_bench "$@"
