#!/usr/bin/env bash
# Makes podman usable on a Debian 12 machine without a Docker engine (CI's and the
# developers' machines), idempotently: a second run changes nothing and takes a second.
#   - packages: podman, buildah, runc, fuse-overlayfs, debootstrap (for the local base image)
#   - runc, not crun: crun 1.8 refuses these machines' hybrid cgroups
#     ("cgroups in hybrid mode not supported")
#   - default_ulimits: the machine cannot raise podman's default rlimits (nofile 1048576),
#     so containers would not start without lower ones
# Needs root (apt-get, /etc/containers). Exits 0 with nothing to do where podman is ready.
set -euo pipefail

CONF=/etc/containers/containers.conf
PACKAGES=(podman buildah runc fuse-overlayfs debootstrap)

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup-podman: ${missing[*]} missing and not root: cannot install" >&2
        exit 2
    fi
    echo "setup-podman: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" uidmap slirp4netns >/dev/null
fi

# Our containers.conf lines, written once; a machine with its own settings keeps them.
if ! grep -qs '^# kafka-webhooks: deploy/image/setup-podman.sh' "$CONF"; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup-podman: $CONF not set up and not root" >&2
        exit 2
    fi
    mkdir -p "$(dirname "$CONF")"
    if grep -qs '^\[containers\]\|^\[engine\]' "$CONF"; then
        echo "setup-podman: $CONF has its own [containers]/[engine] tables; leaving it alone" >&2
    else
        cat >>"$CONF" <<'CONFEOF'
# kafka-webhooks: deploy/image/setup-podman.sh
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]

[engine]
runtime = "runc"
CONFEOF
        echo "setup-podman: wrote $CONF"
    fi
fi
