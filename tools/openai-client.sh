#!/usr/bin/env bash
# Installs the official `openai` npm client into DIR for the front door's test (api_test).
# Exit 0: installed (prints the package's directory); 77: npm cannot reach its registry (or
# apt has no mirror to install node, npm and the CA certificates from); 1: other failures.
set -uo pipefail

# Pinned, so a new release cannot change what the test drives; 4.x runs on Debian 12's
# nodejs 18 (5.x and later want newer). Override with AOS_OPENAI_CLIENT (a version or a tag).
OPENAI=openai@${AOS_OPENAI_CLIENT:-4.95.0}

die() { echo "openai-client.sh: $*" >&2; exit 1; }
skip() { echo "openai-client.sh: $* (skipping)" >&2; exit 77; }

[ $# -eq 1 ] || die "usage: openai-client.sh DIR"
mkdir -p "$1" || die "cannot create $1"
DIR=$(cd "$1" && pwd) || die "cannot enter $1"
PKG=$DIR/node_modules/openai

# shellcheck source=tools/node-env.sh
. "$(dirname "${BASH_SOURCE[0]}")/node-env.sh"
node_env

# Idempotent: the pinned version already there needs no registry at all.
want=${OPENAI##*@}
have=$([ -r "$PKG/package.json" ] && node -p 'require(process.argv[1]).version' \
           "$PKG/package.json" 2>/dev/null)
if [ -n "$have" ] && { [ "$want" = latest ] || [ "$have" = "$want" ]; }; then
    echo "$PKG"
    exit 0
fi

npm_reachable
log=$(mktemp /tmp/aos-openai-npm.XXXXXX)
if ! timeout 300 npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error \
        "$OPENAI" >"$log" 2>&1; then
    tail -20 "$log" >&2
    rm -f "$log"
    timeout 60 npm ping >/dev/null 2>&1 || skip "npm lost its registry during the install"
    die "npm install failed (see above)"
fi
rm -f "$log"
[ -r "$PKG/package.json" ] || die "openai installed without its package.json"
echo "$PKG"
