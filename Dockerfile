# syntax=docker/dockerfile:1
# Two images for the roles: `webhooks serve ingest|fanout|eventlog`, `webhooks create-topics`,
# `webhooks migrate`. The Helm chart (deploy/helm/webhooks) passes the subcommand as args and
# picks the image per role.
#   runtime (the default target)  every role, with the embedded ClickHouse engine (chDB and
#                                 the pandas, numpy and pyarrow it loads) for a chdb:// URL
#   slim                          the same without it: ingest, fanout, the setup Jobs and the
#                                 eventlog against a ClickHouse server (http(s):// URL)
# Both start from one stage (`base`: user, dependencies, environment), so a node pulling both
# stores those layers once; the full image adds the engine's packages as one layer of their own.
#
# Layout in the final images (tests/deploy/test_image.py checks it against this file):
#   /opt/venv                  dependencies and the `webhooks` console script
#   /app/webhooks, /app/services
#                              the source tree, on PYTHONPATH; the JSON schemas and SQL
#                              migrations are package data inside it
#   /var/lib/webhooks          the only writable directory besides /tmp (mount a volume here)

# The official image where a registry is reachable; `make image` passes a local Debian
# bookworm + python3 base (deploy/image/build-base.sh) where none is.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Keep in step with UV_VERSION in the Makefile, which writes uv.lock.
ARG UV_VERSION=0.13.8

# ---- builder: install the locked dependencies into a self-contained virtualenv ----------
FROM ${PYTHON_IMAGE} AS builder
ARG UV_VERSION

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON=python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1

# The steps that reach PyPI mount the build secret "host-ca" when given: the CA bundle of a
# host whose egress proxy re-signs TLS (`make image` passes the host's own bundle). It is a
# secret mount, so it never lands in a layer; without it the base image's CAs are used.
# uv reads uv.lock, the one list of pinned versions that `make test` also installs from.
# It lives in its own virtualenv of this stage only, so it never reaches the final image.
RUN --mount=type=secret,id=host-ca \
    if [ -s /run/secrets/host-ca ]; then export PIP_CERT=/run/secrets/host-ca; fi \
 && python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install -q "uv==${UV_VERSION}"
WORKDIR /app

# Dependencies without the `embedded` extra, then the project itself, editable, installed
# from stand-ins of its two packages: what that install writes into /opt/venv (the
# `webhooks` console script, the package metadata, a path entry to /app) depends on
# pyproject.toml only (an empty README.md stands in for the long description). So
# /opt/venv (about 150 MB) changes only with pyproject.toml or uv.lock, and a code change
# rebuilds and ships only the /app layer. --locked fails the build when uv.lock no longer
# matches pyproject.toml (run `make lock`). Every dependency ships manylinux or pure-Python
# wheels, so no compiler is needed even here.
COPY pyproject.toml uv.lock ./
RUN --mount=type=secret,id=host-ca \
    if [ -s /run/secrets/host-ca ]; then export SSL_CERT_FILE=/run/secrets/host-ca; fi \
 && mkdir webhooks services \
 && touch webhooks/__init__.py services/__init__.py README.md \
 && /opt/uv/bin/uv sync --locked --no-dev \
 && rm -r webhooks services README.md

# ---- embedded-engine: the `embedded` extra's files only, to lay over /opt/venv --------------
# The same sync with the extra adds chdb-core, pandas, numpy and pyarrow (about 800 MB);
# exactly the paths it adds are moved to /opt/embedded (same layout), so the full image
# stacks them on the slim image's /opt/venv layer instead of shipping a second virtualenv.
FROM builder AS embedded-engine
RUN --mount=type=secret,id=host-ca \
    if [ -s /run/secrets/host-ca ]; then export SSL_CERT_FILE=/run/secrets/host-ca; fi \
 && (cd /opt/venv && find . | sort) > /tmp/slim.paths \
 && mkdir webhooks services \
 && touch webhooks/__init__.py services/__init__.py README.md \
 && /opt/uv/bin/uv sync --locked --no-dev --extra embedded \
 && rm -r webhooks services README.md \
 && (cd /opt/venv && find . | sort) > /tmp/full.paths \
 && mkdir /opt/embedded \
 && comm -13 /tmp/slim.paths /tmp/full.paths > /tmp/added.paths \
 && (cd /opt/venv && tar -c --no-recursion -T /tmp/added.paths) | tar -x -C /opt/embedded \
 && /opt/venv/bin/python -c "import chdb" \
 && du -sm /opt/embedded

# ---- code: the source tree, where the editable install points, precompiled -----------------
FROM builder AS code
COPY webhooks ./webhooks
COPY services ./services
RUN python3 -m compileall -q /app/webhooks /app/services

# ---- base: what both images share: no compiler, no package caches, non-root -------------
FROM ${PYTHON_IMAGE} AS base

ARG UID=10001
RUN groupadd --system --gid ${UID} webhooks \
 && useradd --system --uid ${UID} --gid ${UID} --home-dir /var/lib/webhooks --no-create-home \
        --shell /usr/sbin/nologin webhooks \
 && install -d -o ${UID} -g ${UID} -m 0750 /var/lib/webhooks

COPY --from=builder /opt/venv /opt/venv

# PYTHONPATH pins imports to /app whatever the editable-install mechanism does.
# The root filesystem can be read-only: bytecode is precompiled and never written, Faust
# keeps its data under /var/lib/webhooks, and servers bind every interface in a container.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FAUST_DATADIR=/var/lib/webhooks/fanout \
    WEBHOOKS_HOST=0.0.0.0 \
    WEBHOOKS_ENVIRONMENT=production

WORKDIR /var/lib/webhooks
USER ${UID}:${UID}
EXPOSE 8081 8082 8083

# uvicorn and the Faust worker both handle SIGTERM themselves, so no init is needed.
ENTRYPOINT ["webhooks"]
CMD ["--help"]

# ---- slim: every role but the embedded eventlog (`make image` tags it <tag>-slim) ----------
FROM base AS slim
LABEL org.opencontainers.image.title="kafka-webhooks" \
      org.opencontainers.image.description="Webhook platform: ingest, fanout and eventlog (ClickHouse server), without the embedded engine"
COPY --from=code /app /app

# ---- runtime: the full image, every role, chdb:// URLs too (the default target) -----------
FROM base AS runtime
LABEL org.opencontainers.image.title="kafka-webhooks" \
      org.opencontainers.image.description="Webhook platform: ingest, fanout and eventlog in one image"
COPY --from=embedded-engine /opt/embedded/ /opt/venv/
COPY --from=code /app /app
