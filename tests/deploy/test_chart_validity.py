"""The chart lints strictly, renders, and renders only valid Kubernetes objects.

Rendered manifests are validated offline against the Kubernetes JSON schemas bundled with
``kubernetes-validate`` in strict mode (unknown fields are errors) for several Kubernetes
minor versions. values.schema.json must reject wrong values before anything renders.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.chart import (
    ALL_ENABLED_VALUES,
    CHART_DIR,
    EMBEDDED_VALUES,
    KUBE_VERSION,
    Manifests,
    run_helm,
    template,
    values_args,
    write_values,
)

VALUES_FILES = {
    "default": (),
    "all-enabled": (ALL_ENABLED_VALUES,),
    "embedded": (EMBEDDED_VALUES,),
}
# The oldest minor the chart supports (Chart.yaml kubeVersion), the newest the validator
# knows, and two between.
KUBERNETES_VERSIONS = ("1.25.0", "1.29.0", "1.33.0", "1.37.0")
# Custom resources have no schema in the Kubernetes distribution; these are skipped by name,
# every other kind must have a schema and pass it.
CUSTOM_RESOURCE_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"),
                         ("monitoring.coreos.com/v1", "PrometheusRule")}


@pytest.fixture(scope="module", params=sorted(VALUES_FILES))
def rendered(request: pytest.FixtureRequest) -> tuple[str, Manifests]:
    return request.param, Manifests.render(*VALUES_FILES[request.param])


@pytest.mark.parametrize("variant", sorted(VALUES_FILES))
def test_helm_lint_strict(variant: str) -> None:
    result = run_helm("lint", "--strict", str(CHART_DIR), "--kube-version", KUBE_VERSION,
                      *values_args(VALUES_FILES[variant]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_rendered_manifests_pass_strict_kubernetes_schemas(rendered: tuple[str, Manifests]
                                                           ) -> None:
    variant, manifests = rendered
    failures: list[str] = []
    validated = 0
    for doc in manifests.docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCE_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                validated += 1
            except kubernetes_validate.ValidationError as error:
                path = "/".join(map(str, error.path))
                failures.append(f"{doc['kind']}/{doc['metadata']['name']} on {version}: "
                                f"{path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                failures.append(f"{variant}: {error.message}")
    assert not failures, "\n".join(failures)
    assert validated >= 10 * len(KUBERNETES_VERSIONS)


def test_only_custom_resources_skip_kubernetes_validation() -> None:
    """The skip list is exact: the all-enabled render does contain a ServiceMonitor."""
    manifests = Manifests.render(ALL_ENABLED_VALUES)
    kinds = {(doc["apiVersion"], doc["kind"]) for doc in manifests.docs}
    assert kinds >= CUSTOM_RESOURCE_KINDS
    for api_version, kind in kinds - CUSTOM_RESOURCE_KINDS:
        assert not api_version.startswith("monitoring.coreos.com"), kind


def test_strict_validation_rejects_an_unknown_field() -> None:
    """Negative control: the validator used above does fail on a misspelt field."""
    deployment = Manifests.render().of_kind("Deployment")[0]
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSIONS[0], strict=True)


def test_expected_kinds_are_rendered(rendered: tuple[str, Manifests]) -> None:
    variant, manifests = rendered
    kinds = {doc["kind"] for doc in manifests.docs}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "Job",
            "ServiceAccount"} <= kinds
    if variant == "all-enabled":
        assert {"HorizontalPodAutoscaler", "Ingress", "ServiceMonitor", "Secret"} <= kinds
    if variant == "embedded":
        assert "PersistentVolumeClaim" in kinds


BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"ingest": {"replicaCount": "two"}}, "ingest.replicaCount"),
    ({"ingest": {"port": "x"}}, "ingest.port"),
    ({"eventlog": {"port": 70000}}, "eventlog.port"),
    ({"replicaCount": 2}, "replicaCount"),
    ({"clickhouse": {"mode": "cluster"}}, "clickhouse.mode"),
    ({"clickhouse": {"url": "tcp://clickhouse:9000"}}, "clickhouse.url"),
    ({"kafka": {"bootstrap": ""}}, "kafka.bootstrap"),
    ({"config": {"retrySchedule": "soon"}}, "config.retrySchedule"),
    ({"config": {"topicPartitions": 0}}, "config.topicPartitions"),
    ({"config": {"extra": {"NOT_OURS": "x"}}}, "config.extra"),
    ({"config": {"sinkBatchSize": "5k"}}, "config.sinkBatchSize"),
    ({"config": {"sinkBatchWait": 0}}, "config.sinkBatchWait"),
    ({"config": {"fanoutMaxWaiting": 0}}, "config.fanoutMaxWaiting"),
    ({"config": {"ingestKafkaIntake": "yes"}}, "config.ingestKafkaIntake"),
    ({"config": {"ingestProduceTimeout": "soon"}}, "config.ingestProduceTimeout"),
    ({"secrets": {"cursorSecret": "short"}}, "secrets.cursorSecret"),
    ({"secrets": {"deliveryProxy": "https://proxy.internal:3128"}}, "secrets.deliveryProxy"),
    ({"secrets": {"deliveryProxy": "http://proxy.internal:3128/path"}}, "secrets.deliveryProxy"),
    ({"config": {"extra": {"WEBHOOKS_DELIVERY_PROXY": "http://p:1"}}}, "config.extra"),
    ({"fanout": {"autoscaling": {"enabled": True}}}, "autoscaling"),
    ({"secrets": {"apiKeys": [{"key": "key-without-tenant-0001"}]}}, "tenant"),
    ({"eventlog": {"sink": {"enabled": "yes"}}}, "eventlog.sink.enabled"),
    # Cross-field rules: SASL needs a SASL protocol; the chart's Secret needs a ClickHouse URL.
    ({"kafka": {"sasl": {"mechanism": "PLAIN"}}}, "kafka.securityProtocol"),
    ({"clickhouse": {"url": ""}}, "clickhouse.url"),
    ({"kafka": {"securityProtocol": "SASL_SSL"}}, "kafka.sasl.mechanism"),
    ({"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "PLAIN"}}},
     "kafka.sasl.username"),
    ({"kafka": {"sasl": {"mechanism": "OAUTHBEARER"}}}, "kafka.sasl.mechanism"),
    # config.extra may not contradict what the chart sets itself, nor carry credentials.
    ({"config": {"extra": {"WEBHOOKS_INGEST_PORT": "9999"}}}, "config.extra"),
    ({"config": {"extra": {"WEBHOOKS_API_KEYS": "k:acme"}}}, "config.extra"),
    # The hardening of every pod cannot be switched off.
    ({"podSecurityContext": {"runAsNonRoot": False}}, "podSecurityContext.runAsNonRoot"),
    ({"podSecurityContext": {"runAsUser": 0}}, "podSecurityContext.runAsUser"),
    ({"securityContext": {"privileged": True}}, "securityContext.privileged"),
    ({"securityContext": {"readOnlyRootFilesystem": False}},
     "securityContext.readOnlyRootFilesystem"),
    ({"securityContext": {"capabilities": {"drop": [], "add": ["NET_ADMIN"]}}},
     "securityContext.capabilities"),
    ({"ingest": {"resources": {"requests": {"cpu": "lots"}}}}, "ingest.resources.requests.cpu"),
    ({"fanout": {"extraEnv": [{"name": "X", "vaule": "1"}]}}, "fanout.extraEnv"),
    ({"image": {"slimSuffix": ":slim"}}, "image.slimSuffix"),
    ({"image": {"slimDigest": "latest"}}, "image.slimDigest"),
    ({"ingest": {"useSlimImage": "yes"}}, "ingest.useSlimImage"),
    ({"eventlog": {"sink": {"useSlimImage": 1}}}, "eventlog.sink.useSlimImage"),
]


@pytest.mark.parametrize(("values", "field"), BAD_VALUES,
                         ids=[field for _, field in BAD_VALUES])
def test_values_schema_rejects_wrong_values(tmp_path: Path, values: dict[str, Any],
                                            field: str) -> None:
    result = template(write_values(tmp_path, values))
    assert result.returncode != 0, f"helm accepted {values}"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert field in result.stderr, result.stderr


def test_cross_field_rules_accept_consistent_values(tmp_path: Path) -> None:
    consistent = write_values(tmp_path, {
        "kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "PLAIN"}},
        "clickhouse": {"url": ""}, "secrets": {"existingSecret": "webhooks-credentials"}})
    result = template(consistent)
    assert result.returncode == 0, result.stderr


def test_autoscaling_refuses_a_minimum_above_the_maximum(tmp_path: Path) -> None:
    overrides = write_values(tmp_path, {"ingest": {"autoscaling": {
        "enabled": True, "minReplicas": 5, "maxReplicas": 2}}})
    result = template(overrides)
    assert result.returncode != 0
    assert "ingest.autoscaling: minReplicas (5) is above maxReplicas (2)" in result.stderr


def test_hardening_values_may_be_extended(tmp_path: Path) -> None:
    """The security schema pins the hardening, not the whole object."""
    extended = write_values(tmp_path, {
        "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 2000,
                               "supplementalGroups": [3000]},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                            "seLinuxOptions": {"level": "s0:c123,c456"}}})
    result = template(extended)
    assert result.returncode == 0, result.stderr


def test_helm_lint_rejects_a_wrong_type(tmp_path: Path) -> None:
    result = run_helm("lint", "--strict", str(CHART_DIR), "--kube-version", KUBE_VERSION,
                      "--values", str(write_values(tmp_path, {"ingest": {"replicaCount": "two"}})))
    assert result.returncode != 0
    assert "ingest.replicaCount" in result.stdout + result.stderr


def test_embedded_clickhouse_refuses_autoscaling(tmp_path: Path) -> None:
    overrides = write_values(tmp_path, {"eventlog": {"autoscaling": {"enabled": True}}})
    result = template(EMBEDDED_VALUES, overrides)
    assert result.returncode != 0
    assert "exactly one eventlog pod" in result.stderr
