#!/usr/bin/env bash
# `make image`: builds the project's two images from the repository's Dockerfile, with Docker
# where an engine answers, else with podman (set up by setup-podman.sh on first use):
# TAG from the `runtime` target (every role, the embedded ClickHouse engine included) and
# TAG-slim from the `slim` target (no embedded engine; `kafka-webhooks:dev-slim`).
# The base image: $PYTHON_IMAGE when given; else python:3.11-slim-bookworm when present or
# pullable; else a local Debian bookworm + python3 base (build-base.sh, built once).
# Usage: build.sh [TAG] (default kafka-webhooks:dev). Prints the engine and the image sizes.
set -euo pipefail
cd "$(dirname "$0")/../.."

TAG=${1:-kafka-webhooks:dev}
# The slim image's tag: the same name, the tag with "-slim" after it (latest-slim without one).
if [[ ${TAG##*/} == *:* ]]; then
    SLIM_TAG=$TAG-slim
else
    SLIM_TAG=$TAG:latest-slim
fi
OFFICIAL_BASE=python:3.11-slim-bookworm
LOCAL_BASE=localhost/webhooks-base:bookworm-py3.11

if [[ -n ${CONTAINER_ENGINE:-} ]]; then
    engine=$CONTAINER_ENGINE
elif command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1 \
        && ! docker info 2>/dev/null | grep -qi podman; then
    engine=docker
else
    bash deploy/image/setup-podman.sh
    engine=podman
fi

if [[ -n ${PYTHON_IMAGE:-} ]]; then
    base=$PYTHON_IMAGE
elif $engine image inspect "$OFFICIAL_BASE" >/dev/null 2>&1; then
    base=$OFFICIAL_BASE
elif [[ $engine == podman ]] && podman image exists "$LOCAL_BASE"; then
    # Made here earlier because the official image could not be pulled: don't try again.
    base=$LOCAL_BASE
elif timeout 60 $engine pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then
    base=$OFFICIAL_BASE
elif [[ $engine == podman ]]; then
    echo "image: $OFFICIAL_BASE cannot be pulled; using Debian's own Python 3.11 as the base"
    bash deploy/image/build-base.sh "$LOCAL_BASE"
    base=$LOCAL_BASE
else
    echo "image: $OFFICIAL_BASE cannot be pulled; set PYTHON_IMAGE to a Python 3.11 base" >&2
    exit 1
fi

# Host networking and the host's CA bundle (a build secret, kept out of the layers) for the
# RUN steps: uv and pip reach PyPI the way the host does, through an egress proxy if any.
build_args=(--network host --build-arg "PYTHON_IMAGE=$base" -f Dockerfile)
host_ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
if [[ -s $host_ca ]]; then
    build_args+=(--secret "id=host-ca,src=$host_ca")
fi
echo "image: building $TAG and $SLIM_TAG with $engine on $base"
build() {
    if [[ $engine == docker ]]; then
        DOCKER_BUILDKIT=1 docker build "$@" .
    else
        podman build "$@" .
    fi
}
# The slim image first: the full one adds one layer (the engine) to the layers they share.
build "${build_args[@]}" --target slim -t "$SLIM_TAG"
build "${build_args[@]}" --target runtime -t "$TAG"
# The two stages the images copy from, tagged, are the layer cache of the next build (their
# parents hold the builder's; all cached here, so this takes seconds): the embedded extra's
# install and the precompiled code. Everything untagged is what older builds left behind
# (about 2 GB after each change of uv.lock), so it goes.
build "${build_args[@]}" --target embedded-engine -t "${TAG%%:*}:builder-cache" >/dev/null
build "${build_args[@]}" --target code -t "${TAG%%:*}:code-cache" >/dev/null
$engine image prune -f >/dev/null
for image in "$TAG" "$SLIM_TAG"; do
    size=$($engine image inspect --format '{{.Size}}' "$image")
    echo "image: $image is $((size / 1000000)) MB"
done
