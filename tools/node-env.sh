# Sourced by tools/mcp-servers.sh and tools/openai-client.sh (which define die and skip):
# node, npm and the CA certificates npm's TLS needs, installed with apt when missing.
# shellcheck shell=bash
# A fresh Debian 12 has none of them; without ca-certificates every npm call fails TLS and
# would read as "no registry", so they come together.

# Install what of nodejs, npm and ca-certificates is missing (root only). skip when apt has
# no mirror to install from; die when it has one and the install fails.
node_env() {
    local missing=""
    command -v node >/dev/null || missing="$missing nodejs"
    command -v npm >/dev/null || missing="$missing npm"
    [ -r /etc/ssl/certs/ca-certificates.crt ] || missing="$missing ca-certificates"
    [ -z "$missing" ] && return 0
    command -v apt-get >/dev/null || die "missing:$missing, and there is no apt-get"
    [ "$(id -u)" = 0 ] || die "missing:$missing; install them (apt-get install$missing) or run as root"
    local log
    log=$(mktemp /tmp/aos-node-apt.XXXXXX)
    if ! env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1; then
        tail -5 "$log" >&2
        rm -f "$log"
        skip "apt-get update failed: no package mirror to install$missing from"
    fi
    # shellcheck disable=SC2086 # the list is words
    if ! env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            $missing >>"$log" 2>&1; then
        tail -20 "$log" >&2
        rm -f "$log"
        die "apt-get install$missing failed (see above)"
    fi
    rm -f "$log"
}

# skip, with npm's own words, when npm cannot reach its registry.
npm_reachable() {
    local out
    out=$(timeout 60 npm ping 2>&1) ||
        skip "npm cannot reach its registry: $(printf '%s' "$out" | grep -v '^npm notice' | tail -2 | tr '\n' ' ')"
}
