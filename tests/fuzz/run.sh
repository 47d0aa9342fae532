#!/bin/sh
# run.sh - build every tests/fuzz/fuzz_*.c libFuzzer target and run each for
# a bounded time.
#
#   tests/fuzz/run.sh BUILD_DIR [TARGET...]
#
# TARGET is a name like fuzz_pg_startup (default: every fuzz_*.c). Each
# target runs for ${FUZZ_SECONDS:-30} seconds on a temporary copy of
# tests/fuzz/corpus/<target>/, so the repository is never written to.
# Crash inputs and logs go to BUILD_DIR. Exit status is non-zero if any
# target fails to build or finds a crash.
#
# Library sources are compiled directly (no CMake): a superset that any
# target may need, namely protocols/*/codec*.c and params.c, auth/scram.c auth/verify.c
# auth/jwt.c and conf/*.c, each skipped when absent. They go into one
# static archive, so a target links only the objects it uses and a file
# that does not compile (with a warning) only fails the targets that need
# it. Linked with -lcrypto -lcjson.
#
# Environment: CC (default clang), FUZZ_SECONDS (default 30), FUZZ_FLAGS
# (extra libFuzzer flags, e.g. "-jobs=4").
set -u

usage()
{
	echo "usage: $0 BUILD_DIR [TARGET...]" >&2
	exit 2
}

[ $# -ge 1 ] || usage
build=$1
shift
repo=$(cd "$(dirname "$0")/../.." && pwd)
CC=${CC:-clang}
seconds=${FUZZ_SECONDS:-30}
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
cflags="-g -O1 -std=c11 -D_GNU_SOURCE -fno-omit-frame-pointer -I$repo"
libs="-lcrypto -lcjson"

mkdir -p "$build/obj" "$build/artifacts" || exit 1
build=$(cd "$build" && pwd)

# ---- the library archive ----
lib="$build/libtp_fuzz.a"
rm -f "$lib" "$build"/obj/*.o
objs=""
for src in "$repo"/protocols/*/codec*.c "$repo"/protocols/*/params.c \
	"$repo"/auth/scram.c \
	"$repo"/auth/verify.c "$repo"/auth/jwt.c "$repo"/conf/*.c; do
	[ -f "$src" ] || continue
	rel=${src#"$repo"/}
	obj="$build/obj/$(echo "$rel" | tr / _ | sed 's/\.c$/.o/')"
	# shellcheck disable=SC2086
	if $CC $cflags $san -fsanitize=fuzzer-no-link -c "$src" -o "$obj" \
		2>"$obj.log"; then
		objs="$objs $obj"
	else
		echo "run.sh: warning: $rel does not compile, skipped" \
			"(see $obj.log)" >&2
	fi
done
if [ -n "$objs" ]; then
	# shellcheck disable=SC2086
	ar rcs "$lib" $objs || exit 1
fi

# ---- the targets ----
if [ $# -eq 0 ]; then
	for t in "$repo"/tests/fuzz/fuzz_*.c; do
		[ -f "$t" ] && set -- "$@" "$(basename "$t" .c)"
	done
fi
[ $# -gt 0 ] || {
	echo "run.sh: no fuzz targets" >&2
	exit 1
}

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

failed=""
for name in "$@"; do
	src="$repo/tests/fuzz/$name.c"
	bin="$build/$name"
	log="$build/$name.log"
	if [ ! -f "$src" ]; then
		echo "run.sh: $name: no $src" >&2
		failed="$failed $name"
		continue
	fi
	[ -f "$lib" ] && archive=$lib || archive=""
	# shellcheck disable=SC2086
	if ! $CC $cflags $san -fsanitize=fuzzer "$src" $archive $libs \
		-o "$bin"; then
		echo "run.sh: $name: build failed" >&2
		failed="$failed $name"
		continue
	fi
	corpus="$tmp/$name"
	mkdir -p "$corpus"
	if [ -d "$repo/tests/fuzz/corpus/$name" ]; then
		cp -R "$repo/tests/fuzz/corpus/$name/." "$corpus/"
	fi
	echo "run.sh: $name: fuzzing for ${seconds}s"
	# shellcheck disable=SC2086
	"$bin" -max_total_time="$seconds" -print_final_stats=1 \
		-artifact_prefix="$build/artifacts/$name-" ${FUZZ_FLAGS:-} \
		"$corpus" >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" |
		tail -n 1)
	if [ $rc -ne 0 ]; then
		echo "run.sh: $name: FAILED (exit $rc, ${execs:-?} runs);" \
			"log $log" >&2
		grep -E '^(==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit)' \
			"$log" | sed "s/^/  $name: /" >&2
		failed="$failed $name"
	else
		echo "run.sh: $name: ok, ${execs:-?} runs"
	fi
done

if [ -n "$failed" ]; then
	echo "run.sh: failed:$failed" >&2
	exit 1
fi
echo "run.sh: all targets ok"
