#!/usr/bin/env bash
# Installs the reference MCP servers (server-everything, server-filesystem) with npm into DIR
# for aos-tool's real-server test. Exit 0: installed (prints the two entry scripts); 77: npm
# cannot reach its registry (or apt has no mirror for node, npm and the CA certificates); 1:
# other failures.
set -uo pipefail

# Pinned, so a new release cannot change the tools the test calls. Override with
# AOS_MCP_EVERYTHING / AOS_MCP_FILESYSTEM (a version or a dist-tag such as latest).
EVERYTHING=@modelcontextprotocol/server-everything@${AOS_MCP_EVERYTHING:-2026.8.31}
FILESYSTEM=@modelcontextprotocol/server-filesystem@${AOS_MCP_FILESYSTEM:-2026.8.31}

die() { echo "mcp-servers.sh: $*" >&2; exit 1; }
skip() { echo "mcp-servers.sh: $* (skipping)" >&2; exit 77; }

[ $# -eq 1 ] || die "usage: mcp-servers.sh DIR"
# absolute: node's require() takes a bare relative path for a module name
mkdir -p "$1" || die "cannot create $1"
DIR=$(cd "$1" && pwd) || die "cannot enter $1"

# The entry script of an installed package (its package.json "bin"), or nothing.
entry() {
    local pj="$DIR/node_modules/$1/package.json"
    [ -r "$pj" ] || return 0
    node -e '
        const path = require("path"), pj = process.argv[1], p = require(pj);
        let b = p.bin;
        if (b && typeof b === "object") b = Object.values(b)[0];
        if (b) console.log(path.resolve(path.dirname(pj), b));' "$pj" 2>/dev/null
}

# The version of an installed package, or nothing.
installed_version() {
    local pj="$DIR/node_modules/$1/package.json"
    [ -r "$pj" ] && node -p 'require(process.argv[1]).version' "$pj" 2>/dev/null
}

# shellcheck source=tools/node-env.sh
. "$(dirname "${BASH_SOURCE[0]}")/node-env.sh"
node_env

# Idempotent: the pinned versions already there need no registry at all.
want_e=${EVERYTHING##*@} want_f=${FILESYSTEM##*@}
e=$(entry @modelcontextprotocol/server-everything)
f=$(entry @modelcontextprotocol/server-filesystem)
if [ -n "$e" ] && [ -f "$e" ] && [ -n "$f" ] && [ -f "$f" ] &&
   { [ "$want_e" = latest ] || [ "$(installed_version @modelcontextprotocol/server-everything)" = "$want_e" ]; } &&
   { [ "$want_f" = latest ] || [ "$(installed_version @modelcontextprotocol/server-filesystem)" = "$want_f" ]; }; then
    echo "$e"
    echo "$f"
    exit 0
fi

mkdir -p "$DIR" || die "cannot create $DIR"
npm_reachable
log=$(mktemp /tmp/aos-mcp-npm.XXXXXX)
if ! timeout 540 npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error \
        "$EVERYTHING" "$FILESYSTEM" >"$log" 2>&1; then
    tail -20 "$log" >&2
    rm -f "$log"
    # a registry that answered the ping and then went away is still "unreachable"
    timeout 60 npm ping >/dev/null 2>&1 || skip "npm lost its registry during the install"
    die "npm install failed (see above)"
fi
rm -f "$log"

e=$(entry @modelcontextprotocol/server-everything)
f=$(entry @modelcontextprotocol/server-filesystem)
{ [ -n "$e" ] && [ -f "$e" ]; } || die "server-everything installed without its entry script"
{ [ -n "$f" ] && [ -f "$f" ]; } || die "server-filesystem installed without its entry script"
echo "$e"
echo "$f"
