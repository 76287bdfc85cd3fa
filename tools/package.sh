#!/usr/bin/env bash
# Builds the .deb of aos (CPack, from the install rules in tools/CMakeLists.txt): the
# programs, the systemd unit, the man pages and the bash completion; its postinst makes
# the service users. Prints the package's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
out=${AOS_PKG_BUILD:-build-pkg}
echo "package.sh: configuring $out (RelWithDebInfo, no tests)" >&2
cmake -S . -B "$out" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc \
    -DAOS_TESTS=OFF >/dev/null
echo "package.sh: building" >&2
cmake --build "$out" -j"$(nproc)" 2>&1 | grep -E "error|warning|Built target aos" >&2 || true
cmake --build "$out" -j"$(nproc)" >/dev/null
(cd "$out" && cpack -G DEB >/dev/null)
deb=$(ls -t "$out"/aos_*.deb | head -1)
echo "package.sh: $(dpkg-deb -f "$deb" Package Version Architecture | tr '\n' ' ')" >&2
echo "$deb"
