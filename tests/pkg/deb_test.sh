#!/usr/bin/env bash
# The .deb (tools/package.sh) installed on this machine as a user would: the service users,
# the unit, man pages and completion are there, and aosd starts from /usr/bin and stops
# cleanly; then the package is purged. Root only, and never over an aos already installed
# (it skips: exit 77). deb_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 bld=$2
skip() { echo "deb_test: skipped: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (dpkg -i)"
command -v dpkg >/dev/null || skip "no dpkg"
if dpkg-query -W -f='${db:Status-Status}' aos 2>/dev/null | grep -qx installed; then
    skip "an aos package is installed here already: not touching it"
fi
data=$(mktemp -d /tmp/aos-deb-test.XXXXXX)
cleanup() {
    if [ -S "$data/control.sock" ]; then
        /usr/bin/aosctl --data-dir "$data" shutdown --timeout 10 >/dev/null 2>&1 || true
    fi
    dpkg --purge aos >/dev/null 2>&1 || true
    rm -rf "$data"
}
trap cleanup EXIT

deb=$(AOS_PKG_BUILD="$bld/pkg" "$src/tools/package.sh" | tail -1)
echo "deb_test: installing $deb"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$deb" \
    >"$data.apt.log" 2>&1 || { tail -20 "$data.apt.log"; rm -f "$data.apt.log"; exit 1; }
rm -f "$data.apt.log"
for u in aos-pg aos-storage aos-agent; do
    getent passwd "$u" >/dev/null || { echo "deb_test: no user $u"; exit 1; }
done
for f in /usr/lib/systemd/system/aosd.service /usr/share/man/man1/aosctl.1 \
         /usr/share/man/man8/aosd.8 /usr/share/bash-completion/completions/aosctl; do
    [ -f "$f" ] || { echo "deb_test: $f missing"; exit 1; }
done
grep -q '^\.SS "shutdown' /usr/share/man/man1/aosctl.1 ||
    { echo "deb_test: the man page lacks a command"; exit 1; }
bash -n /usr/share/bash-completion/completions/aosctl
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify --man=no /usr/lib/systemd/system/aosd.service
fi

echo "deb_test: aosd from /usr/bin on $data"
/usr/bin/aosd --data-dir "$data" --log </dev/null >/dev/null 2>&1 &
pid=$!
ok=0
for _ in $(seq 1 240); do
    if out=$(/usr/bin/aosctl --data-dir "$data" --json status 2>/dev/null) &&
       [ "$(grep -o '"state":"running"' <<<"$out" | wc -l)" -ge 6 ]; then
        ok=1
        break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
done
if [ "$ok" != 1 ]; then
    echo "deb_test: aosd from the package did not get every child running:"
    tail -30 "$data/aosd.log" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
    exit 1
fi
/usr/bin/aosctl --data-dir "$data" status | head -3
/usr/bin/aosctl --data-dir "$data" shutdown --timeout 10
wait "$pid"
echo "deb_test: installed, started, stopped: ok"
