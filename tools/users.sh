#!/bin/sh
# The system users aos runs as, made once (root only): tools/deps.sh and the .deb's
# postinst both call this. Idempotent: existing users are left as they are.
set -eu
# aosd, when root, runs each child as its own unprivileged user: PostgreSQL (which refuses
# root) and each server, so none can read another's data, log in as another's database role
# or signal another; agents all run as aos-agent, a uid no server has (their sandboxes keep
# them apart). A non-root aosd runs everything as its own user and needs none.
for u in aos-pg aos-storage aos-memory aos-audit aos-llm aos-tool aos-api aos-agent; do
    getent passwd "$u" >/dev/null && continue
    useradd --system --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin --comment "aos ${u#aos-}" "$u"
done
