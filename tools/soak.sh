#!/bin/sh
# Runs `ctest -L integration` N times in a row in each build dir, to catch the flaky runs
# one pass hides; stops at the first failure, keeps its log, and prints the counts.
#
#   tools/soak.sh N [BUILD_DIR...]      (default build dirs: build build-asan)
#   SOAK_LABEL=integration SOAK_REGEX=hostile tools/soak.sh 20 build-asan
#
# Each run's output goes to BUILD_DIR/soak/run-K.log; a passing run's log is deleted, the
# failing one is kept (with ctest's --output-on-failure text) and named at the end.
set -u

usage() { echo "usage: $0 N [BUILD_DIR...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
n=$1
shift
case $n in '' | *[!0-9]*) usage ;; esac
[ "$n" -ge 1 ] || usage
[ $# -ge 1 ] || set -- build build-asan

root=$(cd "$(dirname "$0")/.." && pwd)
label=${SOAK_LABEL:-integration}
regex=${SOAK_REGEX:-}
passed=0
failed=0
kept=""

for dir in "$@"; do
    case $dir in /*) bdir=$dir ;; *) bdir=$root/$dir ;; esac
    if [ ! -f "$bdir/CTestTestfile.cmake" ]; then
        echo "soak: $bdir is not a configured build dir (cmake -B $dir first)" >&2
        exit 2
    fi
    mkdir -p "$bdir/soak"
    i=1
    while [ "$i" -le "$n" ]; do
        log=$bdir/soak/run-$i.log
        start=$(date +%s)
        if [ -n "$regex" ]; then
            (cd "$bdir" && ctest -L "$label" -R "$regex" --output-on-failure) >"$log" 2>&1
        else
            (cd "$bdir" && ctest -L "$label" --output-on-failure) >"$log" 2>&1
        fi
        rc=$?
        secs=$(($(date +%s) - start))
        # ctest exits 0 with "No tests were found": that is not a pass
        if [ $rc -eq 0 ] && grep -q "No tests were found" "$log"; then
            rc=1
        fi
        if [ $rc -eq 0 ]; then
            passed=$((passed + 1))
            echo "soak: $dir run $i/$n passed (${secs} s)"
            rm -f "$log"
        else
            failed=$((failed + 1))
            kept=$log
            echo "soak: $dir run $i/$n FAILED (${secs} s), log kept: $log"
            grep -E "\*\*\*|Failed|FAILED|LeakSanitizer|ERROR: AddressSanitizer" "$log" | head -20
            break 2
        fi
        i=$((i + 1))
    done
done

echo "$passed passed, $failed failed"
[ -n "$kept" ] && echo "failing run's log: $kept"
[ $failed -eq 0 ]
