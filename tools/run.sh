#!/usr/bin/env bash
# Installs dependencies, builds aos, starts aosd in the background on the default data dir,
# shows `aosctl status`, then runs the demo (tools/demo: three cooperating agents) and
# prints its summary. Idempotent: if aosd already serves that data dir, it shows it and
# runs the demo again (each agent asked for a new run).
# run.sh --install: instead, builds the .deb (tools/package.sh), installs it and, where
# systemd runs, enables and starts aosd.service (root).
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

if [ "${1:-}" = --install ]; then
    [ "$(id -u)" = 0 ] || { echo "run.sh --install: run it as root" >&2; exit 1; }
    deb=$(tools/package.sh | tail -1)
    echo "run.sh: installing $deb"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$root/$deb" \
        >/dev/null
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        systemctl enable --now aosd.service
        systemctl --no-pager status aosd.service | head -5 || true
        aosctl --data-dir /var/lib/aos status || true
    else
        echo "run.sh: installed; systemd is not running here: start aosd with" \
             "'aosd --data-dir /var/lib/aos --log &'"
    fi
    exit 0
elif [ -n "${1:-}" ]; then
    echo "usage: tools/run.sh [--install]" >&2
    exit 2
fi

# Configured once with its options; re-run later so that new folders are picked up.
if [ ! -f build/CMakeCache.txt ]; then
    cmake -S "$root" -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc \
        >/dev/null
else
    cmake -S "$root" -B build >/dev/null
fi
# Only what runs: aosd, aosctl, the servers and the agent runner (tests are tools/test.sh's
# business). The build's progress is shown as it goes: a line per target built.
targets=(aosd aosctl aos-memory aos-storage aos-tool aos-llm aos-audit aos-api aos-agent)
echo "run.sh: building ${targets[*]} (-j$jobs; full log: build/build.log)"
set +o pipefail
cmake --build build -j"$jobs" --target "${targets[@]}" 2>&1 | tee build/build.log |
    grep --line-buffered -E '^\[ *[0-9]+%\] Built target ' | sed -u 's/^/  /'
rc=${PIPESTATUS[0]}
set -o pipefail
if [ "$rc" != 0 ]; then
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

# ---- the demo (tools/demo): three aos-agent runs cooperating through tools, shared memory
# collections and messages on the offline sim provider; progress lines, then a summary.
demo_agents=(gatherer writer reviewer)
demo() {
    echo
    if ! "${aosctl[@]}" llm providers 2>/dev/null | grep -q '^demo-reviewer '; then
        echo "run.sh: the demo needs the providers of tools/demo/aos.yaml in $dir/aos.yaml" \
             "(run.sh writes them when there is no aos.yaml); skipped" >&2
        return 0
    fi
    echo "\$ aosctl apply -f tools/demo/deploy.yaml   # the demo: gatherer, writer, reviewer"
    local out
    out=$("${aosctl[@]}" apply -f tools/demo/deploy.yaml) || { echo "run.sh: apply failed" >&2; return 1; }
    echo "$out"
    # Run again on this aosd: the agents' runs finished before, and a restart alone resumes a
    # finished run (nothing to do). aos-agent starts a new run when asked (kv aos.run.again),
    # with its prompt from that run's first page on, so the scripts count their turns anew.
    local a st again=0 old_runs=""
    for a in "${demo_agents[@]}"; do
        st=$("${aosctl[@]}" agent runs "$a" 2>/dev/null | awk '/\(current\)/ {print $2}')
        if [ -n "$st" ] && [ "$st" != running ]; then
            # the finished run: the demo is done once a new one replaced it and finished
            old_runs+=" $("${aosctl[@]}" agent runs "$a" 2>/dev/null | awk '/\(current\)/ {print $1}')"
            "${aosctl[@]}" kv put "$a" aos.run.again "$(date +%s)" >/dev/null
            "${aosctl[@]}" agent restart "$a" >/dev/null
            again=1
        elif [ "$st" = running ] && "${aosctl[@]}" ps 2>/dev/null | awk -v a="$a" '$1 == a && $3 == "-" {f = 1} END {exit !f}'; then
            # an unfinished run whose process is gone (stopped): started again, it resumes
            "${aosctl[@]}" agent restart "$a" >/dev/null
        fi
    done
    [ "$again" = 1 ] && echo "  (the demo ran before on this aosd: its agents were asked for new runs)"
    # On a terminal a live view: the agents' rows of aosctl ps and each one's last log line,
    # redrawn in place; else (CI, a pipe) a progress line whenever something changes.
    local t0=$SECONDS last="" now states view drawn=0 live=0 cols=80
    if [ -t 1 ]; then
        live=1
        cols=$(tput cols 2>/dev/null || echo 80)
    fi
    while :; do
        if [ "$live" = 1 ]; then
            view=$(
                echo "  the demo, live ($((SECONDS - t0)) s):"
                "${aosctl[@]}" ps 2>/dev/null | awk 'NR == 1 || $1 == "gatherer" || $1 == "writer" || $1 == "reviewer"' | sed 's/^/  /'
                for a in "${demo_agents[@]}"; do
                    printf '  %-9s %s\n' "$a:" "$("${aosctl[@]}" agent logs "$a" --bytes 2048 2>/dev/null | grep -v '^ *$' | tail -1)"
                done
            )
            # lines cut to the terminal's width: a wrapped line would break the redraw
            view=$(cut -c1-$((cols > 20 ? cols - 1 : 79)) <<<"$view")
            [ "$drawn" -gt 0 ] && printf '\033[%dA\033[J' "$drawn"
            printf '%s\n' "$view"
            drawn=$(printf '%s\n' "$view" | wc -l)
        else
            now=$("${aosctl[@]}" ps 2>/dev/null | awk 'NR > 1 && ($1 == "gatherer" || $1 == "writer" || $1 == "reviewer") {printf "%s %s step %s, %s tokens; ", $1, $2, $4, $5}')
            if [ "$now" != "$last" ]; then
                echo "  [$((SECONDS - t0))s] $now"
                last=$now
            fi
        fi
        # each agent's current run, "running" while it is one of before the ask
        states=$(for a in "${demo_agents[@]}"; do "${aosctl[@]}" agent runs "$a" 2>/dev/null | awk -v old="$old_runs" '/\(current\)/ {print (index(old, $1) ? "running" : $2)}'; done | tr '\n' ' ')
        if ! grep -q running <<<"$states" && [ "$(wc -w <<<"$states")" = 3 ]; then
            break
        fi
        if [ $((SECONDS - t0)) -gt 300 ]; then
            echo "run.sh: the demo did not finish in 5 minutes; see aosctl ps" >&2
            return 1
        fi
        sleep 0.5
    done
    echo
    echo "The demo ran in $((SECONDS - t0)) s (runs: ${states% }):"
    "${aosctl[@]}" ps | awk 'NR == 1 || $1 == "gatherer" || $1 == "writer" || $1 == "reviewer"'
    for a in "${demo_agents[@]}"; do
        "${aosctl[@]}" agent runs "$a" | awk -v a="$a" '/\(current\)/ {$1 = a ": run " $1; print}'
    done
    echo "The report:  $dir/workspaces/writer/report.md (the review: $dir/workspaces/reviewer/review.md)"
    [ -f "$dir/workspaces/writer/report.md" ] && sed 's/^/    /' "$dir/workspaces/writer/report.md"
    echo "Each agent's steps:          aosctl agent logs writer"
    local wrun
    wrun=$("${aosctl[@]}" agent runs writer 2>/dev/null | awk '/\(current\)/ {print $1}')
    echo "The decision trace:          aosctl audit trace --run ${wrun:-RUN}   (or --agent writer)"
    echo "Its runs, durable steps:     aosctl agent runs writer"
    echo "The mail (inbox, dead):      aosctl msg ls writer"
}

if "${aosctl[@]}" status >/dev/null 2>&1; then
    echo "aosd is already running on $dir"
    "${aosctl[@]}" status
    llm_hello
    demo
    exit 0
fi

# No aos.yaml yet: the demo's providers (its scripts by absolute path) and the default sim.
if [ ! -e "$dir/aos.yaml" ]; then
    mkdir -p "$dir"
    sed "s|script: \([a-z]*\.yaml\)|script: $root/tools/demo/\1|" tools/demo/aos.yaml \
        >"$dir/aos.yaml"
    echo "run.sh: wrote $dir/aos.yaml (the sim providers of tools/demo)"
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
    demo
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
