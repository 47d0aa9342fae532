#!/usr/bin/env bash
# The test command: installs dependencies, builds, then runs
#   1. unit tests (ctest) and integration tests (pytest, real servers and
#      clients against the rig in tests/rig) on a Release build;
#   2. the same suite on an ASan+UBSan build (less the timer_bound tests);
#   3. every libFuzzer target for a bounded time (FUZZ_TOTAL s in all).
# Exits non-zero on the first failing stage.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

bash tests/deps.sh

jobs=$(nproc)
stage() { printf '\n==== %s ====\n' "$*"; }

run_suite() {
	local build=$1; shift
	stage "build $build ($*)"
	cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
	cmake --build "$build" -j "$jobs" >/dev/null
	stage "unit tests ($build)"
	ctest --test-dir "$build" --output-on-failure
	stage "integration tests ($build)"
	TOKENPOOL_BIN="$repo/$build/tokenpool" /usr/bin/python3 -m pytest \
		-q -p no:cacheprovider tests/integration
}

run_suite build
if [ "${TP_SKIP_SANITIZE:-0}" != 1 ]; then
	# The same suite, less the few tests that mostly wait on token
	# lifetimes (marked timer_bound, minutes of sleeping): their code
	# paths run under ASan in the shorter token and fault tests too.
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=4 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	PYTEST_ADDOPTS="${PYTEST_ADDOPTS:-} -m 'not timer_bound'" \
		run_suite build-asan -DTP_SANITIZE=ON
fi
if [ "${TP_SKIP_FUZZ:-0}" != 1 ]; then
	# A fixed budget (FUZZ_TOTAL, 100 s) shared by every target, at least
	# 5 s each, so adding a fuzzer does not stretch CI without bound (longer
	# runs: FUZZ_SECONDS=600 bash tests/fuzz/run.sh DIR).
	ntargets=$(ls tests/fuzz/fuzz_*.c | wc -l)
	per=$(( ${FUZZ_TOTAL:-100} / ntargets ))
	[ "$per" -ge 5 ] || per=5
	stage "fuzzing ($ntargets targets, ${FUZZ_SECONDS:-$per} s each)"
	FUZZ_SECONDS=${FUZZ_SECONDS:-$per} bash tests/fuzz/run.sh build-fuzz
fi
stage "all stages passed"
