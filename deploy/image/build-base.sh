#!/usr/bin/env bash
# Builds the stand-in base image where python:3.11-slim-bookworm cannot be pulled (no
# registry reachable): Debian bookworm's own Python 3.11 on a debootstrap minbase root,
# imported with `podman import`. Built once per machine; a second run finds the image and
# returns at once. Usage: build-base.sh [IMAGE] (default localhost/webhooks-base:bookworm-py3.11).
# Needs root and the packages of setup-podman.sh.
set -euo pipefail

IMAGE=${1:-localhost/webhooks-base:bookworm-py3.11}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if podman image exists "$IMAGE"; then
    exit 0
fi

rootfs=$(mktemp -d /var/tmp/webhooks-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "build-base: debootstrap bookworm with python3 into $rootfs (once per machine, about a minute)"
# python3-venv brings ensurepip, so `python3 -m venv` works as in the official image.
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >/dev/null

# What an image needs no more: apt's downloaded lists and packages, documentation, locales
# other than C. The official slim images drop the same.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old
find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'C*' -exec rm -rf {} + 2>/dev/null || true
# The official image's name for the interpreter, so the Dockerfile runs on either base.
ln -sf python3 "$rootfs"/usr/bin/python

tar -C "$rootfs" --numeric-owner -c . | podman import \
    --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
    --message "debootstrap minbase bookworm + python3 (deploy/image/build-base.sh)" \
    - "$IMAGE" >/dev/null
echo "build-base: $IMAGE built"
