#!/usr/bin/env bash
# Installs every Debian 12 package aos needs to build, test and run, and its system users.
# Idempotent and quiet: when everything is already there it changes nothing and says nothing.
set -euo pipefail

PKGS=(
    cmake make gcc libc6-dev pkg-config
    clang libclang-rt-14-dev            # clang's ASan/UBSan and libFuzzer runtimes
    libnng-dev libprotobuf-c-dev protobuf-c-compiler
    libpq-dev libcurl4-openssl-dev libseccomp-dev libjansson-dev libsodium-dev libyaml-dev
    libssl-dev                          # libcrypto's SHA-256 (SHA-NI) for the audit hashes
    libcmocka-dev
    libsystemd-dev                      # sd_notify: aosd as a systemd Type=notify service
    libmicrohttpd-dev                   # the front door (aos-api) serves HTTP with libmicrohttpd
    bubblewrap                          # the tool sandbox (aos-tool runs every tool in it)
    slirp4netns                         # network for tool runs granted it, in their own netns
    postgresql-15                       # server binaries in /usr/lib/postgresql/15/bin
    procps strace
)

die() { echo "deps.sh: $*" >&2; exit 1; }

# Root for apt and useradd: as root directly, else through sudo (only when there is work).
as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root to run: $* (run this script as root or install sudo)"
    fi
}

[ -r /etc/debian_version ] || die "this is not Debian; aos supports Debian 12 (bookworm)"

missing=()
for p in "${PKGS[@]}"; do
    s=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$s" = installed ] || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    # Debian's postgresql packages create and start a "main" cluster on first install. aos
    # never uses it (aosd runs its own cluster in its data dir), so ask for none.
    if ! dpkg-query -W -f='${db:Status-Status}' postgresql-common 2>/dev/null | grep -qx installed
    then
        as_root mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" |
            as_root tee /etc/postgresql-common/createcluster.d/aos.conf >/dev/null
    fi
    echo "deps.sh: installing ${missing[*]}" >&2
    log=$(mktemp /tmp/aos-deps.XXXXXX)
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 ||
       ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
             --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
        tail -30 "$log" >&2
        rm -f "$log"
        die "apt-get failed (see above)"
    fi
    rm -f "$log"
fi

# A 15/main cluster made before (by hand, or an install without the file above) may hold
# port 5432 and start at boot: stop it and keep it from starting. Its data is untouched.
if [ -f /etc/postgresql/15/main/start.conf ] &&
   ! grep -qx manual /etc/postgresql/15/main/start.conf; then
    echo "deps.sh: the 15/main cluster is not used by aos: stopping it, start.conf=manual" >&2
    as_root pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
    echo manual | as_root tee /etc/postgresql/15/main/start.conf >/dev/null
fi

# the service users (tools/users.sh: shared with the .deb's postinst), and aos-itest, an
# ordinary user the tests (agents_user_test) run aosd as: not a service user, so not in the
# .deb; no home, no shell, no password
if [ "$(id -u)" = 0 ]; then
    "$(dirname "$0")/users.sh"
    getent passwd aos-itest >/dev/null ||
        useradd --system --user-group --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin --comment "aos tests, aosd as an ordinary user" aos-itest
fi
