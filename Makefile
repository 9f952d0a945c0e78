# The README's two set-up commands are `make up` and `make test`; everything they need
# (venv, Kafka jars from Maven Central, helm built from its Go module) is fetched here
# into git-ignored folders on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
HELM_VERSION := v3.16.4
HELM := .cache/bin/helm
HEY_VERSION := v0.1.5
HEY := .cache/bin/hey
# What helm's own release build stamps in: its version, and the Kubernetes version of the
# client modules it is built with (v0.31 for helm 3.16), which `helm template`/`lint` assume.
HELM_LDFLAGS := -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	$(foreach pkg,pkg/lint/rules pkg/chartutil,-X helm.sh/helm/v3/$(pkg).k8sVersionMajor=1 \
	-X helm.sh/helm/v3/$(pkg).k8sVersionMinor=31)

.PHONY: up down test lint bench deps jars helm hey clean

deps: $(INSTALLED) jars

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

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

clean: down
	rm -rf .data .run bench-results
