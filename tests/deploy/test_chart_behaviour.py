"""What the chart deploys: roles, wiring between objects, hooks, security, configuration.

Each check reads the manifests ``helm template`` rendered (once per values file) and would
catch a chart that renders valid Kubernetes objects that nevertheless do not work together:
a Secret key no pod can find, a selector that matches nothing, a hook that runs before its
configuration exists, a setting the application does not know.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import (
    ALL_ENABLED_VALUES,
    CHART_DIR,
    EMBEDDED_VALUES,
    KUBE_VERSION,
    Manifests,
    container_environment,
    env_of,
    image_of,
    name,
    pod_spec,
    run_helm,
    settings_config_maps,
    write_values,
)
from webhooks.secret_encryption import SecretsKeyring
from webhooks.settings import Settings

SERVICE_PORT_SETTING = {"ingest": "WEBHOOKS_INGEST_PORT", "fanout": "WEBHOOKS_FANOUT_PORT",
                        "eventlog": "WEBHOOKS_EVENTLOG_PORT"}


@pytest.fixture(scope="module")
def default() -> Manifests:
    return Manifests.render()


@pytest.fixture(scope="module")
def all_enabled() -> Manifests:
    return Manifests.render(ALL_ENABLED_VALUES)


@pytest.fixture(scope="module")
def embedded() -> Manifests:
    return Manifests.render(EMBEDDED_VALUES)


@pytest.fixture(scope="module", params=["default", "all_enabled", "embedded"])
def any_render(request: pytest.FixtureRequest) -> Manifests:
    return request.getfixturevalue(request.param)


def role_of(deployment: dict[str, Any]) -> str | None:
    entry = env_of(pod_spec(deployment)["containers"][0]).get("WEBHOOKS_EVENTLOG_ROLE")
    return entry["value"] if entry else None


def release_config(manifests: Manifests) -> dict[str, str]:
    """Data of the release's ConfigMap (not its hook copy for the setup Jobs)."""
    [config] = [c for c in settings_config_maps(manifests)
                if "helm.sh/hook" not in c["metadata"].get("annotations", {})]
    return config["data"]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- roles ---------------------------------------------------------------------------------

def test_server_mode_splits_eventlog_api_and_sink(default: Manifests) -> None:
    assert default.names("Deployment") == {name(c) for c in
                                           ("ingest", "fanout", "eventlog", "eventlog-sink")}
    assert role_of(default.get("Deployment", name("eventlog"))) == "api"
    assert role_of(default.get("Deployment", name("eventlog-sink"))) == "sink"
    assert role_of(default.get("Deployment", name("ingest"))) is None
    api_args = pod_spec(default.get("Deployment", name("eventlog")))["containers"][0]["args"]
    assert api_args == ["serve", "eventlog"]


def test_without_a_sink_deployment_every_eventlog_pod_sinks(tmp_path: Path) -> None:
    manifests = Manifests.render(write_values(tmp_path, {"eventlog": {"sink": {"enabled": False}}}))
    assert name("eventlog-sink") not in manifests.names("Deployment")
    assert role_of(manifests.get("Deployment", name("eventlog"))) == "all"


def test_embedded_clickhouse_is_one_pod_on_a_volume(embedded: Manifests) -> None:
    eventlog = embedded.get("Deployment", name("eventlog"))
    assert name("eventlog-sink") not in embedded.names("Deployment")
    assert eventlog["spec"]["replicas"] == 1
    assert eventlog["spec"]["strategy"] == {"type": "Recreate"}
    assert role_of(eventlog) == "all"
    container = pod_spec(eventlog)["containers"][0]
    url = env_of(container)["WEBHOOKS_CLICKHOUSE_URL"]["value"]
    assert url.startswith("chdb:///")
    [data_mount] = [m for m in container["volumeMounts"] if m["name"] == "data"]
    assert url.removeprefix("chdb://").startswith(data_mount["mountPath"] + "/")
    [data_volume] = [v for v in pod_spec(eventlog)["volumes"] if v["name"] == "data"]
    claim = data_volume["persistentVolumeClaim"]["claimName"]
    assert claim in embedded.names("PersistentVolumeClaim")
    # Only the eventlog pod may open the chDB path, so no migration Job runs beside it.
    assert embedded.names("Job") == {name("create-topics")}
    assert not embedded.of_kind("HorizontalPodAutoscaler")


def test_embedded_clickhouse_ignores_eventlog_scaling_values(tmp_path: Path) -> None:
    """Values meant for server mode cannot start a second process on the chDB path."""
    overrides = write_values(tmp_path, {"eventlog": {"replicaCount": 3, "sink": {"enabled": True}}})
    manifests = Manifests.render(EMBEDDED_VALUES, overrides)
    assert manifests.names("Deployment") == {name(c) for c in ("ingest", "fanout", "eventlog")}
    eventlog = manifests.get("Deployment", name("eventlog"))
    assert eventlog["spec"]["replicas"] == 1
    assert role_of(eventlog) == "all"


def test_fanout_replicas_are_not_autoscaled(all_enabled: Manifests) -> None:
    targets = {hpa["spec"]["scaleTargetRef"]["name"]
               for hpa in all_enabled.of_kind("HorizontalPodAutoscaler")}
    assert targets == {"webhooks-ingest", "webhooks-eventlog"}
    for target in targets:
        deployment = all_enabled.get("Deployment", target)
        assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert all_enabled.get("Deployment", "webhooks-fanout")["spec"]["replicas"] == 6


# --- wiring --------------------------------------------------------------------------------

def test_selectors_match_exactly_their_own_pods(any_render: Manifests) -> None:
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in any_render.of_kind("Deployment")}
    for deployment in any_render.of_kind("Deployment"):
        own = deployment["spec"]["selector"]["matchLabels"]
        assert [n for n, labels in pods.items() if matches(own, labels)] == \
            [deployment["metadata"]["name"]]
        for constraint in pod_spec(deployment).get("topologySpreadConstraints", []):
            assert constraint["labelSelector"]["matchLabels"] == own
    for kind, path in (("Service", ("spec", "selector")),
                       ("PodDisruptionBudget", ("spec", "selector", "matchLabels"))):
        for obj in any_render.of_kind(kind):
            selector = obj[path[0]][path[1]] if len(path) == 2 else \
                obj[path[0]][path[1]][path[2]]
            assert [n for n, labels in pods.items() if matches(selector, labels)] == \
                [obj["metadata"]["name"]], f"{kind} {obj['metadata']['name']}"


def test_services_reach_the_container_port_named_http(any_render: Manifests) -> None:
    for service in any_render.of_kind("Service"):
        deployment = any_render.get("Deployment", service["metadata"]["name"])
        [port] = service["spec"]["ports"]
        assert port["targetPort"] == "http"
        [container_port] = pod_spec(deployment)["containers"][0]["ports"]
        assert container_port["name"] == "http"
        assert container_port["containerPort"] == port["port"]


def test_each_service_listens_on_the_port_the_probes_and_service_use(
        any_render: Manifests) -> None:
    """The port the app binds (WEBHOOKS_<SERVICE>_PORT) is the port Kubernetes probes."""
    config = release_config(any_render)
    for deployment in any_render.of_kind("Deployment"):
        container = pod_spec(deployment)["containers"][0]
        service = container["args"][1]
        assert int(config[SERVICE_PORT_SETTING[service]]) == \
            container["ports"][0]["containerPort"]
        # Liveness (and the start-up probe that gates it) must not depend on Kafka or
        # ClickHouse, or an outage of either restarts every pod: /livez; readiness /healthz.
        assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": "/livez", "port": "http"}


def test_every_secret_key_a_pod_reads_is_in_the_secret(any_render: Manifests) -> None:
    secrets = {s["metadata"]["name"]: s for s in any_render.of_kind("Secret")}
    for workload in any_render.workloads():
        for container in pod_spec(workload)["containers"]:
            for entry in container.get("env") or []:
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    continue
                if ref["name"] not in secrets:  # only secrets.existingSecret may be external
                    assert ref["name"] == "webhooks-credentials", ref
                    continue
                assert ref["key"] in secrets[ref["name"]]["stringData"], \
                    f"{workload['metadata']['name']} reads missing key {ref['key']}"


def test_existing_secret_replaces_the_chart_secret(embedded: Manifests) -> None:
    assert not embedded.of_kind("Secret")
    refs = {entry["valueFrom"]["secretKeyRef"]["name"]
            for workload in embedded.workloads()
            for entry in pod_spec(workload)["containers"][0].get("env") or []
            if "valueFrom" in entry}
    assert refs == {"webhooks-credentials"}


def test_fanout_does_not_see_clickhouse_or_api_credentials(all_enabled: Manifests) -> None:
    fanout = pod_spec(all_enabled.get("Deployment", "webhooks-fanout"))["containers"][0]
    assert set(env_of(fanout)) >= {"WEBHOOKS_KAFKA_SASL_USERNAME", "WEBHOOKS_KAFKA_SASL_PASSWORD"}
    assert "WEBHOOKS_CLICKHOUSE_URL" not in env_of(fanout)
    assert "WEBHOOKS_API_KEYS" not in env_of(fanout)


def test_ingress_and_service_monitor_point_at_rendered_services(all_enabled: Manifests) -> None:
    services = {s["metadata"]["name"]: s for s in all_enabled.of_kind("Service")}
    [ingress] = all_enabled.of_kind("Ingress")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "webhooks-eventlog"
            assert backend["port"]["name"] in {p["name"] for p in
                                               services[backend["name"]]["spec"]["ports"]}
    [monitor] = all_enabled.of_kind("ServiceMonitor")
    selected = [n for n, s in services.items()
                if matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
    assert sorted(selected) == sorted(services)
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


# --- hooks ---------------------------------------------------------------------------------

def hook_weight(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["annotations"]["helm.sh/hook-weight"])


def test_setup_jobs_are_idempotent_pre_install_and_pre_upgrade_hooks(
        default: Manifests) -> None:
    jobs = {job["metadata"]["name"]: job for job in default.of_kind("Job")}
    assert set(jobs) == {name("create-topics"), name("migrate")}
    assert pod_spec(jobs[name("create-topics")])["containers"][0]["args"] == ["create-topics"]
    assert pod_spec(jobs[name("migrate")])["containers"][0]["args"] == ["migrate"]
    for job in jobs.values():
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert pod_spec(job)["restartPolicy"] == "Never"
    # Topics exist before migrations run (weights order hooks).
    assert hook_weight(jobs[name("create-topics")]) < hook_weight(jobs[name("migrate")])


def test_setup_jobs_only_use_configuration_that_exists_before_them(
        any_render: Manifests) -> None:
    """Pre-install hooks run before the release's ConfigMap and Secret are created."""
    hooks = {(obj["kind"], obj["metadata"]["name"]): obj for obj in any_render.docs
             if "helm.sh/hook" in obj["metadata"].get("annotations", {})}
    for job in any_render.of_kind("Job"):
        spec = pod_spec(job)
        assert "serviceAccountName" not in spec, "the chart's ServiceAccount is not there yet"
        container = spec["containers"][0]
        needed = [("ConfigMap", ref["configMapRef"]["name"]) for ref in container["envFrom"]]
        needed += [("Secret", e["valueFrom"]["secretKeyRef"]["name"])
                   for e in container.get("env") or []]
        for kind, ref_name in needed:
            if ref_name == "webhooks-credentials":  # secrets.existingSecret exists beforehand
                continue
            hook = hooks.get((kind, ref_name))
            assert hook is not None, f"{job['metadata']['name']} needs {kind} {ref_name}"
            assert hook_weight(hook) < hook_weight(job)
            assert "pre-install" in hook["metadata"]["annotations"]["helm.sh/hook"]


def test_hook_configuration_equals_the_release_configuration(any_render: Manifests) -> None:
    hooks = [c for c in settings_config_maps(any_render) if "helm.sh/hook" in
             c["metadata"].get("annotations", {})]
    releases = [c for c in settings_config_maps(any_render) if c not in hooks]
    assert len(hooks) == 1
    assert len(releases) == 1
    assert hooks[0]["data"] == releases[0]["data"]


# --- images --------------------------------------------------------------------------------

def runs_embedded_clickhouse(workload: dict[str, Any]) -> bool:
    [container] = pod_spec(workload)["containers"]
    url = env_of(container).get("WEBHOOKS_CLICKHOUSE_URL", {}).get("value", "")
    return url.startswith("chdb://")


def images_by_workload(manifests: Manifests) -> dict[str, str]:
    return {w["metadata"]["name"]: image_of(w) for w in manifests.workloads()}


@pytest.mark.parametrize(("variant", "full"), [
    ("default", "kafka-webhooks:0.1.0"),
    ("all_enabled", "registry.example.com/platform/kafka-webhooks:0.1.0"),
    ("embedded", "kafka-webhooks:0.1.0")])
def test_the_embedded_eventlog_gets_the_full_image_and_every_other_pod_the_slim_one(
        request: pytest.FixtureRequest, variant: str, full: str) -> None:
    """Only a pod that opens a chdb:// URL needs the embedded engine (and the 800 MB that
    come with it); every other Deployment and Job runs the -slim image."""
    manifests: Manifests = request.getfixturevalue(variant)
    embedded_pods = {w["metadata"]["name"] for w in manifests.workloads()
                     if runs_embedded_clickhouse(w)}
    assert embedded_pods == ({name("eventlog")} if variant == "embedded" else set())
    expected = {workload: full if workload in embedded_pods else f"{full}-slim"
                for workload in images_by_workload(manifests)}
    assert images_by_workload(manifests) == expected


def test_an_operator_can_force_the_full_image_everywhere(tmp_path: Path) -> None:
    """An empty slimSuffix (a registry that holds only the full image) or a role's
    useSlimImage=false; in embedded mode, useSlimImage cannot give the eventlog the slim one."""
    no_slim = write_values(tmp_path, {"image": {"slimSuffix": ""}}, "no-slim.yaml")
    for values in ((no_slim,), (EMBEDDED_VALUES, no_slim)):
        images = images_by_workload(Manifests.render(*values))
        assert set(images.values()) == {"kafka-webhooks:0.1.0"}, values
    one_role = write_values(tmp_path, {"fanout": {"useSlimImage": False},
                                       "eventlog": {"useSlimImage": True}}, "one-role.yaml")
    for values, full in (((one_role,), {name("fanout")}),
                         ((EMBEDDED_VALUES, one_role), {name("fanout"), name("eventlog")})):
        images = images_by_workload(Manifests.render(*values))
        assert {w for w, image in images.items() if not image.endswith("-slim")} == full


def test_digests_pin_each_image_and_one_digest_pins_every_pod(tmp_path: Path) -> None:
    full, slim = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    both = write_values(tmp_path, {"image": {"digest": full, "slimDigest": slim}}, "both.yaml")
    images = images_by_workload(Manifests.render(EMBEDDED_VALUES, both))
    assert images.pop(name("eventlog")) == f"kafka-webhooks@{full}"
    assert set(images.values()) == {f"kafka-webhooks@{slim}"}
    # Only the full image pinned: the pods meant for the slim one run it rather than a tag.
    only_full = write_values(tmp_path, {"image": {"digest": full}}, "full.yaml")
    assert set(images_by_workload(Manifests.render(only_full)).values()) == {
        f"kafka-webhooks@{full}"}


# --- security ------------------------------------------------------------------------------

def test_every_pod_is_locked_down(any_render: Manifests) -> None:
    for workload in any_render.workloads():
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert "command" not in container, "the image ENTRYPOINT runs every role"
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]["memory"]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp_volumes, "a read-only root needs a writable /tmp"


def test_kafka_tls_ca_is_mounted_where_the_setting_points(all_enabled: Manifests) -> None:
    ca_path = release_config(all_enabled)["WEBHOOKS_KAFKA_SSL_CA_LOCATION"]
    for workload in all_enabled.workloads():
        spec = pod_spec(workload)
        mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        assert ca_path.startswith(mounts["kafka-ca"] + "/")
        [volume] = [v for v in spec["volumes"] if v["name"] == "kafka-ca"]
        assert volume["secret"]["secretName"] == "kafka-ca"
        assert [item["path"] for item in volume["secret"]["items"]] == [ca_path.rsplit("/")[-1]]


# --- configuration -------------------------------------------------------------------------

ENV_PREFIX = Settings.model_config["env_prefix"]
SETTING_VARIABLES = {f"{ENV_PREFIX}{field.upper()}" for field in Settings.model_fields}
# Stand-ins for the keys of secrets.existingSecret, whose content the chart never sees.
EXISTING_SECRET = {"api-keys": "key-acme:acme,key-admin:*", "cursor-secret": "c" * 32,
                   "secrets-key": SecretsKeyring.generate("e1").to_setting(),
                   "clickhouse-url": "http://default:@clickhouse:8123/webhooks",
                   "kafka-sasl-username": "webhooks", "kafka-sasl-password": "password"}


def settings_variables(manifests: Manifests) -> set[str]:
    """Every WEBHOOKS_* name the chart sets: ConfigMaps and explicit container env."""
    names = {key for config in manifests.of_kind("ConfigMap") for key in config["data"]}
    names |= {entry["name"] for workload in manifests.workloads()
              for entry in pod_spec(workload)["containers"][0].get("env") or []}
    return {n for n in names if n.startswith(ENV_PREFIX)}


def pod_settings(manifests: Manifests, workload: dict[str, Any],
                 monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings() as the workload's process reads them from the environment Kubernetes sets."""
    secret_values = {} if manifests.of_kind("Secret") else EXISTING_SECRET
    with monkeypatch.context() as patch:
        for variable in SETTING_VARIABLES:
            patch.delenv(variable, raising=False)
        for key, value in container_environment(manifests, workload, secret_values).items():
            patch.setenv(key, value)
        return Settings()


def test_every_variable_the_chart_sets_is_a_setting(any_render: Manifests) -> None:
    unknown = settings_variables(any_render) - SETTING_VARIABLES
    assert not unknown, f"the application ignores {sorted(unknown)}"


def test_the_setting_check_catches_a_misspelt_variable(tmp_path: Path) -> None:
    """Negative control for the test above: a name Settings does not have is reported."""
    typo = write_values(tmp_path, {"config": {"extra": {"WEBHOOKS_SINK_BATCH_WAITS": "1"}}})
    assert settings_variables(Manifests.render(typo)) - SETTING_VARIABLES == \
        {"WEBHOOKS_SINK_BATCH_WAITS"}


def test_every_setting_can_be_set_through_the_chart(all_enabled: Manifests) -> None:
    """The reverse: a setting the chart never sets is stuck at its default on Kubernetes."""
    missing = SETTING_VARIABLES - settings_variables(all_enabled)
    assert not missing, (f"the chart cannot set {sorted(missing)}: add them to values.yaml "
                         "(config.*, documented) and values.schema.json (typed)")


def test_every_pod_reads_a_valid_configuration(any_render: Manifests,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for workload in any_render.workloads():
        settings = pod_settings(any_render, workload, monkeypatch)
        assert settings.host == "0.0.0.0"
        assert settings.environment == "production"
        assert settings.kafka_bootstrap == release_config(any_render)["WEBHOOKS_KAFKA_BOOTSTRAP"]


def test_eventlog_pods_get_what_their_role_needs(any_render: Manifests,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """API pods share one cursor key; chDB only with role all; only the API reads the key."""
    cursor_secrets = set()
    for deployment in any_render.of_kind("Deployment"):
        container = pod_spec(deployment)["containers"][0]
        settings = pod_settings(any_render, deployment, monkeypatch)
        eventlog = container["args"] == ["serve", "eventlog"]
        serves_api = eventlog and settings.eventlog_role in ("all", "api")
        assert ("WEBHOOKS_CURSOR_SECRET" in env_of(container)) == serves_api, \
            deployment["metadata"]["name"]
        if serves_api:
            assert len(settings.cursor_secret) >= 16
            cursor_secrets.add(settings.cursor_secret)
        if eventlog and settings.clickhouse_url.startswith("chdb://"):
            # Sink and API share the one process that may open the chDB path.
            assert settings.eventlog_role == "all"
            assert deployment["spec"]["replicas"] == 1
    assert len(cursor_secrets) == 1


def test_tuning_values_reach_the_pods_that_use_them(all_enabled: Manifests,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pods = {d["metadata"]["name"]: pod_settings(all_enabled, d, monkeypatch)
            for d in all_enabled.of_kind("Deployment")}
    ingest = pods["webhooks-ingest"]
    assert (ingest.ingest_max_batch_bytes, ingest.ingest_produce_timeout,
            ingest.ingest_kafka_intake) == (10485760, 10.0, False)
    assert ingest.max_body_bytes == 524288, "ingest.extraEnv overrides the ConfigMap"
    assert (pods["webhooks-fanout"].fanout_max_waiting,
            pods["webhooks-fanout"].endpoint_max_queued) == (50000, 500)
    sink = pods["webhooks-eventlog-sink"]
    assert (sink.eventlog_role, sink.sink_batch_size, sink.sink_batch_wait) == ("sink", 2000, 1.0)
    assert pods["webhooks-eventlog"].cursor_secret == "cursor-secret-0123456789abcdef"
    assert pods["webhooks-eventlog"].api_keys == {"key-acme-0123456789": "acme",
                                                  "key-admin-0123456789": "*"}


def test_api_keys_and_credentials_go_to_the_secret_only(all_enabled: Manifests) -> None:
    secret = all_enabled.get("Secret", "webhooks")["stringData"]
    assert secret["api-keys"] == "key-acme-0123456789:acme,key-admin-0123456789:*"
    assert secret["clickhouse-url"].startswith("https://webhooks:clickhouse-password@")
    assert secret["kafka-sasl-password"] == "kafka-password"
    assert secret["cursor-secret"] == "cursor-secret-0123456789abcdef"
    assert secret["secrets-key"] == ALL_ENABLED_SECRETS_KEY
    for config in all_enabled.of_kind("ConfigMap"):
        text = repr(config["data"])
        for value in ("key-acme-0123456789", "clickhouse-password", "kafka-password",
                      "cursor-secret-0123456789abcdef", ALL_ENABLED_SECRETS_KEY):
            assert value not in text


# --- the cursor secret and the secrets key ---------------------------------------------------

# How _helpers.tpl reads the release's Secret back on an upgrade.
LOOKUP = 'lookup "v1" "Secret" .root.Release.Namespace (include "webhooks.fullname" .root)'
# The key ring of ci/all-enabled-values.yaml.
ALL_ENABLED_SECRETS_KEY = "k2:" + "A" * 42 + "E=,k1:" + "B" * 42 + "E="


def test_a_generated_cursor_secret_is_one_value_per_render(default: Manifests) -> None:
    """Generated once, so the Secret, its hook copy and every checksum agree."""
    values = [s["stringData"]["cursor-secret"] for s in default.of_kind("Secret")]
    assert len(values) == 2 and len(set(values)) == 1
    assert len(values[0]) >= 32
    checksums = {d["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
                 for d in default.of_kind("Deployment")}
    assert len(checksums) == 1


@pytest.mark.parametrize(("release_secret", "values", "expected"), [
    ({"cursor-secret": "kept-from-the-first-install"}, {}, "kept-from-the-first-install"),
    ({"cursor-secret": "kept-from-the-first-install"}, {"cursorSecret": "x" * 20}, "x" * 20),
    ({"api-keys": ""}, {}, None),  # a Secret from before the key existed: generate one
], ids=["kept", "explicit-wins", "added"])
def test_an_upgrade_keeps_the_cursor_secret_of_the_release(
        tmp_path: Path, release_secret: dict[str, str], values: dict[str, str],
        expected: str | None) -> None:
    """See :func:`render_upgrade`."""
    manifests = render_upgrade(tmp_path, release_secret, values)
    [value] = {s["stringData"]["cursor-secret"] for s in manifests.of_kind("Secret")}
    if expected is None:
        assert len(value) >= 32
    else:
        assert value == expected


def test_a_generated_secrets_key_is_one_key_ring_per_render(default: Manifests) -> None:
    values = {s["stringData"]["secrets-key"] for s in default.of_kind("Secret")}
    assert len(values) == 1
    keyring = SecretsKeyring.parse(values.pop())
    assert len(keyring.key_ids) == 1 and keyring.primary.startswith("k")


def render_upgrade(tmp_path: Path, release_secret: dict[str, str], values: dict[str, str]
                   ) -> Manifests:
    """helm template cannot reach a cluster, so `lookup` is swapped for what the API server
    answers on an upgrade: the release's Secret, its data base64-encoded."""
    chart = tmp_path / "webhooks"
    shutil.copytree(CHART_DIR, chart)
    helpers = chart / "templates" / "_helpers.tpl"
    text = helpers.read_text()
    assert text.count(LOOKUP) == 1
    data = " ".join(f'"{key}" ("{value}" | b64enc)' for key, value in release_secret.items())
    helpers.write_text(text.replace(LOOKUP, f'dict "data" (dict {data})'))
    return Manifests.render(write_values(tmp_path, {"secrets": values}), chart_dir=chart)


KEPT_RING = SecretsKeyring.generate("k20260101").to_setting()
EXPLICIT_RING = SecretsKeyring.generate("k2").to_setting() + "," + KEPT_RING


@pytest.mark.parametrize(("release_secret", "values", "expected"), [
    ({"secrets-key": KEPT_RING}, {}, KEPT_RING),
    ({"secrets-key": KEPT_RING}, {"secretsKey": EXPLICIT_RING}, EXPLICIT_RING),
    ({"cursor-secret": "x" * 20}, {}, None),  # a Secret from before encryption: generate one
], ids=["kept", "explicit-wins", "added"])
def test_an_upgrade_keeps_the_secrets_key_of_the_release(
        tmp_path: Path, release_secret: dict[str, str], values: dict[str, str],
        expected: str | None) -> None:
    """Losing the key loses every endpoint's secret: an upgrade keeps the release's."""
    manifests = render_upgrade(tmp_path, release_secret, values)
    [value] = {s["stringData"]["secrets-key"] for s in manifests.of_kind("Secret")}
    if expected is None:
        assert SecretsKeyring.parse(value).key_ids != ("k20260101",)
    else:
        assert value == expected
    [cursor] = {s["stringData"]["cursor-secret"] for s in manifests.of_kind("Secret")}
    assert cursor == release_secret.get("cursor-secret", cursor)  # one lookup serves both


def test_only_fanout_and_the_eventlog_api_read_the_secrets_key(
        any_render: Manifests, monkeypatch: pytest.MonkeyPatch) -> None:
    """Those open endpoint secrets (and refuse to start without the key); ingest, the
    sink and the set-up Jobs never see it. Every reader gets the same key ring."""
    rings = set()
    for workload in any_render.workloads():
        container = pod_spec(workload)["containers"][0]
        entry = env_of(container).get("WEBHOOKS_SECRETS_KEY")
        settings = pod_settings(any_render, workload, monkeypatch)
        reads = (container["args"] == ["serve", "fanout"]
                 or (container["args"] == ["serve", "eventlog"]
                     and settings.eventlog_role in ("all", "api")))
        assert (entry is not None) == reads, workload["metadata"]["name"]
        if reads:
            assert "optional" not in entry["valueFrom"]["secretKeyRef"]  # required
            assert settings.secrets_key is not None
            rings.add(settings.secrets_key.to_setting())
    assert len(rings) == 1


def test_only_fanout_reads_the_delivery_proxy_from_the_secret(
        any_render: Manifests, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its URL may hold credentials: the Secret has it, no ConfigMap; fanout alone reads it
    (optional, so an existing Secret may leave it out: deliveries then go out directly)."""
    for workload in any_render.workloads():
        container = pod_spec(workload)["containers"][0]
        entry = env_of(container).get("WEBHOOKS_DELIVERY_PROXY")
        fanout = container["args"] == ["serve", "fanout"]
        assert (entry is not None) == fanout, workload["metadata"]["name"]
        if fanout:
            assert entry["valueFrom"]["secretKeyRef"]["optional"] is True
    for config in any_render.of_kind("ConfigMap"):
        assert "WEBHOOKS_DELIVERY_PROXY" not in config.get("data", {})
        assert "proxy-p%40ssword" not in repr(config.get("data", {}))


def test_the_delivery_proxy_reaches_the_fanout_pods(
        all_enabled: Manifests, default: Manifests, monkeypatch: pytest.MonkeyPatch) -> None:
    pods = {d["metadata"]["name"]: pod_settings(all_enabled, d, monkeypatch)
            for d in all_enabled.of_kind("Deployment")}
    proxy = pods["webhooks-fanout"].delivery_proxy
    assert proxy is not None and proxy.url == "http://egress-proxy.platform:3128"
    assert (proxy.username, proxy.password) == ("webhooks", "proxy-p@ssword")
    assert all(settings.delivery_proxy is None for name, settings in pods.items()
               if name != "webhooks-fanout")
    # Without a value, the chart's Secret holds it empty: no proxy.
    [fanout] = [d for d in default.of_kind("Deployment") if d["metadata"]["name"].endswith(
        "-fanout")]
    assert pod_settings(default, fanout, monkeypatch).delivery_proxy is None


def test_an_existing_secret_may_omit_the_cursor_secret(embedded: Manifests) -> None:
    """Without the key the eventlog derives it from api-keys, which every replica shares."""
    for deployment in embedded.of_kind("Deployment"):
        # The chart cannot see that Secret's content: no checksum (a generated value in it
        # would change on every render and roll the pods on every upgrade).
        assert "checksum/secret" not in deployment["spec"]["template"]["metadata"]["annotations"]
        entry = env_of(pod_spec(deployment)["containers"][0]).get("WEBHOOKS_CURSOR_SECRET")
        if entry is not None:
            assert entry["valueFrom"]["secretKeyRef"] == {
                "name": "webhooks-credentials", "key": "cursor-secret", "optional": True}


# --- documentation and less common values ---------------------------------------------------


def readme_helm_install() -> list[str]:
    """The arguments of the ``helm install`` command of the install page
    (docs/operators/install.md), as a shell would split them."""
    readme = (CHART_DIR.parents[2] / "docs/operators/install.md").read_text()
    joined = readme.replace("\\\n", " ")
    [line] = [line for line in joined.splitlines() if line.startswith("helm install ")]
    return shlex.split(line)[1:]


def test_the_readme_install_command_renders(tmp_path: Path) -> None:
    args = readme_helm_install()
    assert args[0] == "install"
    release, chart = args[1], CHART_DIR.parents[2] / args[2]
    result = run_helm("template", release, str(chart), *args[3:], "--kube-version", KUBE_VERSION)
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    [config] = [doc for doc in docs if doc["kind"] == "ConfigMap"
                and "helm.sh/hook" not in doc["metadata"].get("annotations", {})]
    assert config["data"]["WEBHOOKS_KAFKA_BOOTSTRAP"] == "kafka-0.kafka:9093,kafka-1.kafka:9093"
    assert config["data"]["WEBHOOKS_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert not [doc for doc in docs if doc["kind"] == "Secret"]  # the existing one is used


def test_an_existing_service_account_is_used_by_every_pod(tmp_path: Path) -> None:
    manifests = Manifests.render(write_values(tmp_path, {
        "serviceAccount": {"create": False, "name": "platform-runner"}}))
    assert not manifests.of_kind("ServiceAccount")
    workloads = list(manifests.workloads())
    assert {workload["kind"] for workload in workloads} == {"Deployment", "Job"}
    for workload in workloads:
        assert pod_spec(workload)["serviceAccountName"] == "platform-runner", \
            workload["metadata"]["name"]


def test_traces_reach_ingest_and_fanout_only_when_a_collector_is_set(
        default: Manifests, all_enabled: Manifests) -> None:
    def otel(manifests: Manifests) -> dict[str, dict[str, str]]:
        found = {}
        for deployment in manifests.of_kind("Deployment"):
            env = env_of(pod_spec(deployment)["containers"][0])
            found[deployment["metadata"]["labels"]["app.kubernetes.io/component"]] = {
                key: entry["value"] for key, entry in env.items() if key.startswith("OTEL_")}
        return found

    assert not any(otel(default).values())  # off by default
    traced = otel(all_enabled)
    for component in ("ingest", "fanout"):
        assert traced[component] == {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
            "OTEL_SERVICE_NAME": f"webhooks-{component}",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.05",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci"}
    assert not traced["eventlog"] and not traced["eventlog-sink"]  # they start no traces
