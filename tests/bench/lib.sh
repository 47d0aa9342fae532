# Sourced by the benchmarks' run.sh (pg/, mysql/, tds/): the steps they all
# take before bench.py. The caller sets $here (its own directory) and
# `set -euo pipefail`; this sets $repo.

repo="$(cd "$here/../../.." && pwd)"

# die MESSAGE: "run.sh: MESSAGE" on stderr, exit 1.
die() {
    echo "run.sh: $*" >&2
    exit 1
}

# need_root WHY: every bench starts the rig, which needs root.
need_root() {
    [ "$(id -u)" -eq 0 ] || die "needs root ($1)"
}

# build_tokenpool: a Release build in $repo/build (incremental), unless
# TOKENPOOL_BIN names a binary to measure; exports TOKENPOOL_BIN.
build_tokenpool() {
    [ -z "${TOKENPOOL_BIN:-}" ] || return 0
    echo "[run.sh] building tokenpool (Release) in $repo/build" >&2
    (cd "$repo" && cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null \
        && cmake --build build -j2 --target tokenpool >/dev/null) \
        || die "build failed"
    export TOKENPOOL_BIN="$repo/build/tokenpool"
}

# exec_bench ARGS...: thousands of idle clients need more than 1024
# descriptors in the proxies and in the client; children inherit this
# (bench.py also sets soft = hard for them). Then bench.py replaces this
# shell, so signals reach it directly.
exec_bench() {
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    exec /usr/bin/python3 "$here/bench.py" "$@"
}
