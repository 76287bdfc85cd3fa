#!/usr/bin/env bash
# Installs dependencies, builds aos, starts aosd in the background on the default data dir
# and shows `aosctl status`. Idempotent: if aosd already serves that data dir, only shows it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
jobs=${AOS_JOBS:-2}

# The data dir, resolved as aosd and aosctl resolve it (libaos aos_data_dir).
if [ -n "${AOS_DATA_DIR:-}" ]; then
    dir=$AOS_DATA_DIR
elif [ "$(id -u)" = 0 ]; then
    dir=/var/lib/aos
elif [ -n "${XDG_DATA_HOME:-}" ]; then
    dir=$XDG_DATA_HOME/aos
else
    dir=${HOME:?neither AOS_DATA_DIR nor HOME is set}/.local/share/aos
fi

tools/deps.sh

# Configured once with its options; re-run later so that new folders are picked up.
if [ ! -f build/CMakeCache.txt ]; then
    cmake -S "$root" -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc \
        >/dev/null
else
    cmake -S "$root" -B build >/dev/null
fi
# Only what runs: aosd, aosctl and the servers (tests are tools/test.sh's business).
targets=(aosd aosctl aos-memory aos-storage aos-tool aos-llm aos-audit)
if ! cmake --build build -j"$jobs" --target "${targets[@]}" >build/build.log 2>&1; then
    tail -40 build/build.log >&2
    echo "run.sh: build failed (full log: $root/build/build.log)" >&2
    exit 1
fi

aosctl=(build/bin/aosctl --data-dir "$dir")

log=$dir/aosd.log
# One answer streamed through the whole stack: aosctl -> aosd -> aos-llm (the offline sim
# provider unless aos.yaml names another default) and back, part by part.
llm_hello() {
    echo
    echo "\$ aosctl llm test sim \"hello\""
    "${aosctl[@]}" llm test sim "hello" || echo "run.sh: the LLM gateway did not answer" >&2
}

if "${aosctl[@]}" status >/dev/null 2>&1; then
    echo "aosd is already running on $dir"
    "${aosctl[@]}" status
    llm_hello
    exit 0
fi

# aosd opens its log itself (--log), once it has made sure nobody else can plant a link
# there; what it says before that goes to a private temporary file.
early=$(mktemp /tmp/aosd-start.XXXXXX)
# setsid: aosd outlives this script and the terminal it was started from.
setsid build/bin/aosd --data-dir "$dir" --log </dev/null >"$early" 2>&1 &
pid=$!
echo "aosd started (pid $pid) on $dir; log: $log"

# Shows the status once no child is starting or backing off any more (30 s at most), so
# what is printed is where things settled.
show_settled() {
    local json
    rm -f "$early"
    for _ in $(seq 1 60); do
        json=$("${aosctl[@]}" --json status 2>/dev/null) || break
        grep -Eq '"state": *"(starting|backoff|migrating)"|waiting for another schema migration' <<<"$json" || break
        sleep 0.5
    done
    "${aosctl[@]}" status
    if grep -Eq '"state": *"failed"' <<<"$json"; then
        echo "run.sh: some servers failed; see $log and \`aosctl status\`" >&2
    fi
    llm_hello
    exit 0
}

# The first start runs initdb, which takes a while; later starts are quick.
for _ in $(seq 1 240); do
    if "${aosctl[@]}" status >/dev/null 2>&1; then
        show_settled
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" && rc=0 || rc=$?
        echo "run.sh: aosd exited (status $rc) before answering:" >&2
        cat "$early" >&2
        [ -f "$log" ] && tail -30 "$log" >&2
        rm -f "$early"
        exit 1
    fi
    sleep 0.5
done
echo "run.sh: aosd (pid $pid) did not answer within 120 s; the end of $log:" >&2
tail -30 "$log" >&2
exit 1
