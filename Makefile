# The README's two set-up commands are `make up` and `make test`; everything they need
# (venv, Kafka jars from Maven Central, helm built from its Go module) is fetched here
# into git-ignored folders on first use. Python dependencies come from uv.lock, the one
# lock file the image installs from too; `make lock` refreshes it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
HELM_VERSION := v3.16.4
HELM := .cache/bin/helm
HEY_VERSION := v0.1.5
HEY := .cache/bin/hey
# uv writes and installs uv.lock; keep UV_VERSION in step with the Dockerfile's ARG.
UV_VERSION := 0.13.8
UV_HOME := .cache/uv-$(UV_VERSION)
UV := $(UV_HOME)/bin/uv
# Never a managed interpreter download: the venv and the lock use $(PYTHON).
export UV_PYTHON_DOWNLOADS := never
IMAGE ?= kafka-webhooks:dev
# What helm's own release build stamps in: its version, and the Kubernetes version of the
# client modules it is built with (v0.31 for helm 3.16), which `helm template`/`lint` assume.
HELM_LDFLAGS := -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	$(foreach pkg,pkg/lint/rules pkg/chartutil,-X helm.sh/helm/v3/$(pkg).k8sVersionMajor=1 \
	-X helm.sh/helm/v3/$(pkg).k8sVersionMinor=31)

.PHONY: up down test lint bench soak deps jars helm hey image lock clean

deps: $(INSTALLED) jars

$(UV):
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install -q uv==$(UV_VERSION)

# Exactly the locked versions (and the project, editable, with its test extra): --locked
# fails when uv.lock no longer matches pyproject.toml (run `make lock`), and packages
# not in the lock are removed, so the tests run with what the image ships.
$(INSTALLED): pyproject.toml uv.lock | $(UV)
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(UV) sync --locked --extra test
	touch $@

# Re-resolve uv.lock after a pyproject.toml change, keeping every pin that still fits;
# `make lock UPGRADE=1` moves every package to the newest version allowed.
lock: | $(UV)
	$(UV) lock --python $(PYTHON) $(if $(UPGRADE),--upgrade)

# The container image (Docker where an engine answers, else podman; see deploy/image/).
image:
	bash deploy/image/build.sh $(IMAGE)

jars: $(INSTALLED)
	$(BIN)/python -c "from services.localdev.kafka_broker import ensure_kafka_jars; ensure_kafka_jars()"

# helm is optional: the chart tests skip with a message where Go is absent.
helm:
	@if [ ! -x $(HELM) ] && command -v go >/dev/null; then \
		echo "building helm $(HELM_VERSION) from its Go module (once)"; \
		GOBIN=$(abspath .cache/bin) GOFLAGS=-mod=mod go install -ldflags "$(HELM_LDFLAGS)" helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); \
	fi

# hey (a compiled HTTP load generator) is optional: the benchmarks report the receiver's
# ceiling with it and skip that figure where Go is absent.
hey:
	@if [ ! -x $(HEY) ] && command -v go >/dev/null; then \
		echo "building hey $(HEY_VERSION) from its Go module (once)"; \
		GOBIN=$(abspath .cache/bin) GOFLAGS=-mod=mod go install github.com/rakyll/hey@$(HEY_VERSION); \
	fi

up: deps
	$(BIN)/webhooks up

down:
	@if [ -x $(BIN)/webhooks ]; then $(BIN)/webhooks down; fi

test: deps helm
	$(BIN)/pytest

lint: $(INSTALLED)
	$(BIN)/ruff check webhooks services tests benchmarks

bench: deps hey
	$(BIN)/python -m benchmarks

# The whole stack under a steady mixed load for SOAK_MINUTES (default 30): memory, file
# descriptors, lag and retry backlogs each minute into bench-results/ (results.soak).
soak: deps
	$(BIN)/python -m benchmarks soak

clean: down
	rm -rf .data .run bench-results
