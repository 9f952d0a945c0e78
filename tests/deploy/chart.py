"""Running the real ``helm`` against the chart, and reading what it renders.

helm is the binary ``make helm`` builds from its Go module into ``.cache/bin/helm`` (or one
on PATH). Without it and without Go the chart checks are skipped with a message; with Go
present a missing helm is a failure, because ``make test`` builds it first.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.go_tools import go_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "deploy" / "helm" / "webhooks"
ALL_ENABLED_VALUES = CHART_DIR / "ci" / "all-enabled-values.yaml"
EMBEDDED_VALUES = CHART_DIR / "ci" / "embedded-clickhouse-values.yaml"
# Our helm is built without release ldflags and would otherwise assume Kubernetes 1.20,
# below the chart's kubeVersion; any version the chart supports renders the same.
KUBE_VERSION = "1.33.0"
RELEASE = "wh"
NAMESPACE = "webhooks"


def helm_binary() -> str:
    """Path of helm, or skip (no Go) / fail (Go present, so `make helm` would build it)."""
    return go_tool("helm", REPO_ROOT, "chart checks")


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm with ``args``; the caller checks the return code and output."""
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)


def values_args(values_files: tuple[Path, ...] = ()) -> list[str]:
    return [arg for path in values_files for arg in ("--values", str(path))]


def template(*values_files: Path, extra: tuple[str, ...] = (),
             chart_dir: Path = CHART_DIR) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart, hooks included."""
    return run_helm("template", RELEASE, str(chart_dir), "--namespace", NAMESPACE,
                    "--kube-version", KUBE_VERSION, *values_args(values_files), *extra)


@dataclass(frozen=True)
class Manifests:
    """The documents one ``helm template`` rendered, with lookups used by the tests."""

    docs: tuple[dict[str, Any], ...]

    @classmethod
    def render(cls, *values_files: Path, extra: tuple[str, ...] = (),
               chart_dir: Path = CHART_DIR) -> Manifests:
        result = template(*values_files, extra=extra, chart_dir=chart_dir)
        assert result.returncode == 0, result.stderr
        docs = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
        assert docs, "helm template rendered nothing"
        return cls(docs)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        matches = [doc for doc in self.of_kind(kind) if doc["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
        return matches[0]

    def names(self, kind: str) -> set[str]:
        return {doc["metadata"]["name"] for doc in self.of_kind(kind)}

    def workloads(self) -> Iterator[dict[str, Any]]:
        """Every Deployment and Job: the objects that run the image."""
        yield from self.of_kind("Deployment")
        yield from self.of_kind("Job")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def image_of(workload: dict[str, Any]) -> str:
    """The image the chart picked for the workload's (one) container."""
    [container] = pod_spec(workload)["containers"]
    return container["image"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's explicit env entries by name."""
    return {entry["name"]: entry for entry in container.get("env") or []}


def container_environment(manifests: Manifests, workload: dict[str, Any],
                          secret_values: Mapping[str, str] = {}) -> dict[str, str]:
    """The variables the kubelet gives the workload's container: envFrom ConfigMaps, then
    env entries; a Secret key comes from ``secret_values`` if there, else the rendered Secret."""
    container = pod_spec(workload)["containers"][0]
    configs = {c["metadata"]["name"]: c["data"] for c in manifests.of_kind("ConfigMap")}
    secrets = {s["metadata"]["name"]: s["stringData"] for s in manifests.of_kind("Secret")}
    environment: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        environment.update(configs[source["configMapRef"]["name"]])
    for entry in container.get("env") or []:
        if "value" in entry:
            environment[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            if ref["key"] in secret_values:
                environment[entry["name"]] = secret_values[ref["key"]]
            elif ref["key"] in secrets.get(ref["name"], {}) or not ref.get("optional"):
                environment[entry["name"]] = secrets[ref["name"]][ref["key"]]
            # else: an optional key the Secret lacks: the kubelet leaves the variable unset
    return environment


def settings_config_maps(manifests: Manifests) -> list[dict[str, Any]]:
    """The ConfigMaps of ``WEBHOOKS_*`` settings (and their hook copy): every ConfigMap but
    the optional Grafana board (``metrics.grafanaDashboard``)."""
    return [c for c in manifests.of_kind("ConfigMap")
            if not c["metadata"]["name"].endswith("-grafana-dashboard")]


def name(component: str) -> str:
    """Resource name of a component for the test release (default fullname)."""
    return f"{RELEASE}-webhooks-{component}"


def write_values(directory: Path, values: dict[str, Any], filename: str = "values.yaml") -> Path:
    path = directory / filename
    path.write_text(yaml.safe_dump(values))
    return path
