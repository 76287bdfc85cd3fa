#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds `build` (gcc) and `build-asan` (clang,
# ASan+UBSan, fuzzers) and runs every ctest label in both. Exit status: 0 only if all passed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
jobs=${AOS_JOBS:-2}

tools/deps.sh

# configure DIR ARGS...: the options are given once, when the cache is made; later runs
# reuse it and only re-run cmake so that new folders and files are picked up.
configure() {
    local dir=$1; shift
    if [ ! -f "$dir/CMakeCache.txt" ]; then
        cmake -S "$root" -B "$dir" "$@" >/dev/null
    else
        cmake -S "$root" -B "$dir" >/dev/null
    fi
}

configure build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc
configure build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DAOS_SANITIZE=ON

fail=0
results=()
for dir in build build-asan; do
    echo "== $dir: build" >&2
    if ! cmake --build "$dir" -j"$jobs" >"$dir/build.log" 2>&1; then
        tail -40 "$dir/build.log" >&2
        echo "== $dir: BUILD FAILED (full log: $dir/build.log)" >&2
        results+=("$dir: build failed")
        fail=1
        continue
    fi
    echo "== $dir: ctest" >&2
    # The slow label (the kill campaign) runs in the gcc build only: under ASan it would
    # measure the sanitizer, and take most of the run.
    exclude=()
    [ "$dir" = build-asan ] && exclude=(-LE slow)
    # Sanitizer reports must fail the run, not scroll by.
    if (cd "$dir" && ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
            UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
            ctest --output-on-failure --timeout 1200 -j"$jobs" \
                ${exclude[@]+"${exclude[@]}"} | tee ctest.log); then
        results+=("$dir: $(grep -E 'tests passed' "$dir/ctest.log" | tail -1)")
    else
        results+=("$dir: $(grep -E 'tests passed|tests failed' "$dir/ctest.log" | tail -1)")
        fail=1
    fi
done

echo
echo "== summary"
for r in "${results[@]}"; do
    echo "  $r"
done
if [ "$fail" = 0 ]; then
    echo "== all tests passed"
else
    echo "== FAILED"
fi
exit "$fail"
