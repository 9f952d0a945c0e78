# The README's two set-up commands are `make up` and `make test`; everything they need
# (venv, Kafka jars from Maven Central, helm and promtool built from their Go modules) is
# fetched here into git-ignored folders on first use. Python dependencies come from
# uv.lock, the one lock file the image installs from too; `make lock` refreshes it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
HELM_VERSION := v3.16.4
HELM := .cache/bin/helm
# promtool (Prometheus's rule checker): the Go module github.com/prometheus/prometheus tags
# Prometheus 3.x.y as v0.3xx.y, so v0.316.0 is Prometheus 3.16.0.
PROMETHEUS_MODULE_VERSION := v0.316.0
PROMETHEUS_VERSION := 3.16.0
PROMTOOL := .cache/bin/promtool
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

.PHONY: up down test lint bench soak deps jars helm promtool hey image lock clean docs

deps: $(INSTALLED) jars

$(UV):
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install -q uv==$(UV_VERSION)

# Exactly the locked versions (and the project, editable, with its test extra and the
# embedded ClickHouse engine, which `make up` and the tests run on): --locked
# fails when uv.lock no longer matches pyproject.toml (run `make lock`), and packages
# not in the lock are removed, so the tests run with what the image ships.
$(INSTALLED): pyproject.toml uv.lock | $(UV)
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(UV) sync --locked --extra test --extra embedded
	touch $@

# Re-resolve uv.lock after a pyproject.toml change, keeping every pin that still fits;
# `make lock UPGRADE=1` moves every package to the newest version allowed.
lock: | $(UV)
	$(UV) lock --python $(PYTHON) $(if $(UPGRADE),--upgrade)

# The container images (Docker where an engine answers, else podman; see deploy/image/):
# $(IMAGE), the full one, and $(IMAGE)-slim, without the embedded ClickHouse engine.
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

# promtool is optional too: the alert rule and board checks that run it skip where Go is
# absent. remove_all_sd leaves out the cloud service discoveries (AWS, Azure, GCE, …),
# which checking and unit-testing rules never use: about 7 minutes on 2 cores with empty
# Go caches, half the full build. The version stamp is its release's.
promtool:
	@if [ ! -x $(PROMTOOL) ] && command -v go >/dev/null; then \
		echo "building promtool $(PROMETHEUS_VERSION) from its Go module (once)"; \
		GOBIN=$(abspath .cache/bin) GOFLAGS=-mod=mod go install -tags remove_all_sd \
			-ldflags "-X github.com/prometheus/common/version.Version=$(PROMETHEUS_VERSION)" \
			github.com/prometheus/prometheus/cmd/promtool@$(PROMETHEUS_MODULE_VERSION); \
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

# Two pytest workers, each with its own broker and ClickHouse engine; a test file stays on
# one worker (its module fixtures start stacks once). Most of the suite waits on brokers,
# processes and timers, so two workers share the 2 cores well.
test: deps helm promtool
	$(BIN)/pytest -n 2 --dist loadfile

# The documentation site in build/site (strict: broken links and pages left out of the nav
# fail; the tests run the same build).
docs: $(INSTALLED)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

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
