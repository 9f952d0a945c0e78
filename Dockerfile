# syntax=docker/dockerfile:1
# One image for every role: `webhooks serve ingest|fanout|eventlog`, `webhooks create-topics`,
# `webhooks migrate`. The Helm chart (deploy/helm/webhooks) passes the subcommand as args.
#
# Layout in the final image (tests/deploy/test_image.py checks it against this file):
#   /opt/venv                  dependencies and the `webhooks` console script
#   /app/webhooks, /app/services
#                              the source tree, on PYTHONPATH; the JSON schemas and SQL
#                              migrations are package data inside it
#   /var/lib/webhooks          the only writable directory besides /tmp (mount a volume here)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: resolve and install dependencies into a self-contained virtualenv ----------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app

# Dependencies first, read from pyproject.toml (the single list), so that a code change
# does not reinstall them. Every dependency ships manylinux or pure-Python wheels
# (chdb-core, confluent-kafka, aiokafka), so no compiler is needed even here.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# The project itself, editable, so the code stays where it is in /app
# and pip only adds the `webhooks` console script and the package metadata.
COPY webhooks ./webhooks
COPY services ./services
RUN pip install --no-deps -e . \
 && python -m compileall -q /app/webhooks /app/services

# ---- runtime: no compiler, no package caches, non-root ----------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="kafka-webhooks" \
      org.opencontainers.image.description="Webhook platform: ingest, fanout and eventlog in one image"

ARG UID=10001
RUN groupadd --system --gid ${UID} webhooks \
 && useradd --system --uid ${UID} --gid ${UID} --home-dir /var/lib/webhooks --no-create-home \
        --shell /usr/sbin/nologin webhooks \
 && install -d -o ${UID} -g ${UID} -m 0750 /var/lib/webhooks

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app

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
