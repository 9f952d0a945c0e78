"""The built images, run the way the chart runs them, against the session's real broker.

Both images are built by ``make image``'s script (cached layers make a rebuild take
seconds): the full one and the -slim one without the embedded ClickHouse engine. The chart
is rendered with the embedded engine (the test has no ClickHouse server) and names the
images it picks per pod: the full one for the eventlog, which runs chDB, the slim one for
everything else. Every container of the render runs from that image as its pod would (see
tests/deploy/containers.py): the ``create-topics`` Job, then the ``migrate`` Job (from the
server-mode render, pointed at the eventlog's data volume since chDB is a directory, and so
from the full image), then the ingest, fanout and eventlog Deployments. An event published
to the ingest container reaches a receiver on the host, signed, and the eventlog container
lists it; the probes answer as the chart asks; SIGTERM stops each container within its
grace period. The slim image has none of the engine, stays within its size budget, and
refuses a chdb:// URL at once, naming the full image. Last, the chart's default (server
mode, every pod from the slim image) runs its Jobs and the eventlog API and sink against a
ClickHouse server: chDB behind ClickHouse's HTTP interface (tests/support/clickhouse_http.py).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from services.localdev.kafka_broker import free_port
from tests.deploy.chart import (
    REPO_ROOT,
    Manifests,
    container_environment,
    image_of,
    name,
    pod_spec,
    write_values,
)
from tests.deploy.containers import (
    EMBEDDED_ENGINE_MODULES,
    IMAGE_TAG,
    Container,
    Images,
    PodShape,
    build_images,
    container_engine,
    data_volume,
    image_size,
    run_to_completion,
    start,
)
from tests.support.clickhouse_http import ClickHouseHttp
from tests.support.eventlog import eventually
from tests.support.receiver import Receiver

ACME = {"Authorization": "Bearer key-image-acme"}
COMPONENTS = ("eventlog", "fanout", "ingest")  # start order: the API first, ingest last
SLIM_BUDGET_BYTES = 300_000_000  # issue #30: ingest and fanout nodes pull at most this


@pytest.fixture(scope="module")
def engine() -> str:
    return container_engine()


@pytest.fixture(scope="module")
def images(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Images:
    return build_images(engine, tmp_path_factory.mktemp("image") / "build.log")


@pytest.fixture(scope="module")
def values(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One release: this module's topics, free ports on the host network, one replica."""
    ports = {component: free_port() for component in COMPONENTS}
    return {
        "image": Images(IMAGE_TAG).chart_values(),
        "kafka": {"bootstrap": kafka_bootstrap},
        "secrets": {"apiKeys": [{"key": "key-image-acme", "tenant": "acme"}],
                    "cursorSecret": "image-test-cursor-secret"},
        "config": {"environment": "local", "allowPrivateTargets": "127.0.0.0/8",
                   "topicPrefix": f"img{uuid.uuid4().hex[:8]}", "topicPartitions": 2,
                   "topicReplication": 1, "retrySchedule": "1s,2s"},
        **{component: {"port": port, "replicaCount": 1} for component, port in ports.items()},
    }


@pytest.fixture(scope="module")
def embedded(values: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Manifests:
    """The Deployments and create-topics Job (embedded ClickHouse in the eventlog pod)."""
    directory = tmp_path_factory.mktemp("values")
    return Manifests.render(write_values(directory, {**values, "clickhouse": {
        "mode": "embedded"}}))


@pytest.fixture(scope="module")
def server_mode(values: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Manifests:
    """The same release in server mode: the only render with the migrate Job."""
    return Manifests.render(write_values(tmp_path_factory.mktemp("values"), values))


@pytest.fixture(scope="module")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def eventlog_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The eventlog pod's ClickHouse volume (its PersistentVolumeClaim)."""
    return data_volume(tmp_path_factory.mktemp("eventlog") / "data")


@pytest.fixture(scope="module")
def jobs(engine: str, images: Images, embedded: Manifests, server_mode: Manifests,
         eventlog_data: Path, run_id: str) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run the setup Jobs to completion, in hook-weight order, before any Deployment."""
    eventlog = embedded.get("Deployment", name("eventlog"))
    chdb_url = container_environment(embedded, eventlog)["WEBHOOKS_CLICKHOUSE_URL"]
    finished = {}
    for manifests, job_name, data_dir in (
            (embedded, "create-topics", None),
            # chDB is a directory: the migrate Job gets the eventlog's volume and its URL,
            # and so the image that has chDB (the chart runs it against a server, slim).
            (server_mode, "migrate", eventlog_data)):
        job = manifests.get("Job", name(job_name))
        spec = pod_spec(job)
        environment = container_environment(manifests, job, {"clickhouse-url": chdb_url})
        image = images.full if data_dir is not None else image_of(job)
        finished[job_name] = run_to_completion(
            engine, image, f"wh-{job_name}-{run_id}", spec["containers"][0]["args"],
            PodShape.of(spec), environment, data_dir,
            timeout=job["spec"]["activeDeadlineSeconds"])
    return finished


@pytest.fixture(scope="module")
def pods(engine: str, images: Images, embedded: Manifests, jobs: dict[str, Any],
         eventlog_data: Path, run_id: str, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[dict[str, Container]]:
    """The three Deployments' containers, started once the Jobs succeeded."""
    for job_name, result in jobs.items():
        assert result.returncode == 0, f"{job_name} Job failed:\n{result.stdout}{result.stderr}"
    running: dict[str, Container] = {}
    try:
        for component in COMPONENTS:
            deployment = embedded.get("Deployment", name(component))
            spec = pod_spec(deployment)
            data_dir = eventlog_data if component == "eventlog" else data_volume(
                tmp_path_factory.mktemp(component) / "data")
            running[component] = start(
                engine, image_of(deployment), f"wh-{component}-{run_id}",
                spec["containers"][0]["args"],
                PodShape.of(spec), container_environment(embedded, deployment), data_dir)
        yield running
    finally:
        for container in running.values():
            container.remove()


def probe_url(manifests: Manifests, component: str, probe: str) -> str:
    container = pod_spec(manifests.get("Deployment", name(component)))["containers"][0]
    port = container["ports"][0]["containerPort"]
    return f"http://127.0.0.1:{port}{container[probe]['httpGet']['path']}"


def answers(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5.0).status_code
    except httpx.HTTPError:
        return None


def wait_until_ready(manifests: Manifests, pods: dict[str, Container]) -> None:
    """As the kubelet does: the start-up probe within its budget, then readiness."""
    for component, container in pods.items():
        startup = pod_spec(manifests.get("Deployment", name(component)))[
            "containers"][0]["startupProbe"]
        budget = startup["failureThreshold"] * startup["periodSeconds"]
        for probe in ("startupProbe", "readinessProbe"):
            url = probe_url(manifests, component, probe)
            try:
                eventually(lambda url=url: answers(url) == 200, timeout=budget, interval=1.0)
            except AssertionError as error:
                raise AssertionError(f"{component} {probe} {url}: {error}\n"
                                     f"{container.logs()}") from None


def test_the_chart_runs_the_images_make_image_built(images: Images, embedded: Manifests,
                                                    server_mode: Manifests) -> None:
    """The embedded eventlog from the full image, every other pod from the slim one."""
    for manifests in (embedded, server_mode):
        for workload in manifests.workloads():
            embedded_eventlog = manifests is embedded and workload["metadata"]["name"] == name(
                "eventlog")
            assert image_of(workload) == (images.full if embedded_eventlog else images.slim)


def test_the_slim_image_lacks_only_the_embedded_engine_and_fits_its_budget(
        engine: str, images: Images) -> None:
    probe = ("import importlib.util, json\n"
             f"print(json.dumps([m for m in {EMBEDDED_ENGINE_MODULES!r}"
             " if importlib.util.find_spec(m)]))")
    for image, expected in ((images.slim, []), (images.full, list(EMBEDDED_ENGINE_MODULES))):
        found = subprocess.run([engine, "run", "--rm", "--entrypoint", "python3", image, "-c",
                                probe], capture_output=True, text=True, timeout=120)
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout) == expected, image
    slim, full = image_size(engine, images.slim), image_size(engine, images.full)
    print(f"\nimage sizes: {images.slim} {slim / 1e6:.0f} MB, {images.full} {full / 1e6:.0f} MB")
    assert slim <= SLIM_BUDGET_BYTES, f"{images.slim} is {slim / 1e6:.0f} MB"


def test_a_chdb_url_on_the_slim_image_stops_the_start_naming_the_full_image(
        engine: str, images: Images, embedded: Manifests, run_id: str,
        tmp_path: Path) -> None:
    """The embedded eventlog's pod run from the wrong image: one line, exit 1, at once."""
    eventlog = embedded.get("Deployment", name("eventlog"))
    spec = pod_spec(eventlog)
    result = run_to_completion(
        engine, images.slim, f"wh-slim-chdb-{run_id}", spec["containers"][0]["args"],
        PodShape.of(spec), container_environment(embedded, eventlog),
        data_volume(tmp_path / "data"), timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Error: eventlog refuses to start: " in result.stderr
    assert "full image" in result.stderr and "Traceback" not in result.stderr


def test_setup_jobs_succeed_in_the_image(jobs: dict[str, subprocess.CompletedProcess[str]]
                                         ) -> None:
    for job_name, result in jobs.items():
        assert result.returncode == 0, f"{job_name}:\n{result.stdout}{result.stderr}"
    assert "created" in jobs["create-topics"].stdout
    migrations = sorted((REPO_ROOT / "services/eventlog/migrations").glob("*.sql"))
    assert jobs["migrate"].stdout.strip() == "applied: " + ", ".join(
        str(n) for n in range(1, len(migrations) + 1))


def test_pods_run_as_the_chart_says_with_only_data_and_tmp_writable(
        engine: str, pods: dict[str, Container], embedded: Manifests) -> None:
    probe = ("import os, pathlib\n"
             "def writable(d):\n"
             "    try:\n"
             "        p = pathlib.Path(d) / '.probe'; p.write_text('x'); p.unlink(); return True\n"
             "    except OSError:\n"
             "        return False\n"
             "print(os.getuid(), os.getgid(), *[int(writable(d)) for d in "
             "('/tmp', '/var/lib/webhooks', '/', '/app', '/opt/venv', '/var/tmp', '/run')])\n")
    for component, container in pods.items():
        result = subprocess.run([engine, "exec", container.name, "python3", "-c", probe],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        shape = PodShape.of(pod_spec(embedded.get("Deployment", name(component))))
        assert result.stdout.split() == [str(shape.uid), str(shape.gid),
                                         "1", "1", "0", "0", "0", "0", "0"], component


def test_probes_answer_as_the_chart_expects(pods: dict[str, Container],
                                            embedded: Manifests) -> None:
    wait_until_ready(embedded, pods)
    for component in pods:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert answers(probe_url(embedded, component, probe)) == 200, (component, probe)
        metrics = probe_url(embedded, component, "readinessProbe").replace("/healthz",
                                                                           "/metrics")
        assert answers(metrics) == 200, component


def test_an_event_is_delivered_signed_and_listed(pods: dict[str, Container],
                                                 embedded: Manifests, receiver: Receiver
                                                 ) -> None:
    wait_until_ready(embedded, pods)
    base = {component: probe_url(embedded, component, "readinessProbe").removesuffix(
        "/healthz") for component in pods}
    with httpx.Client(base_url=base["eventlog"], headers=ACME, timeout=30.0) as eventlog, \
            httpx.Client(base_url=base["ingest"], headers=ACME, timeout=30.0) as ingest:
        created = eventlog.post("/v1/endpoints", json={"url": receiver.url("/image"),
                                                       "events": ["order.*"]})
        assert created.status_code == 201, created.text
        endpoint = created.json()

        # The fanout delivers to the endpoint once its view has it: probe with test messages.
        def test_message_arrived() -> bool:
            if any(json.loads(r.body)["type"] == "webhook.test" for r in receiver.at("/image")):
                return True
            sent = eventlog.post(f"/v1/endpoints/{endpoint['id']}/test")
            assert sent.status_code == 202, sent.text
            return False

        eventually(test_message_arrived, timeout=90, interval=2.0)

        published = ingest.post("/v1/events", json={"type": "order.shipped",
                                                     "data": {"object": {"n": 1}}})
        assert published.status_code == 202, published.text
        event = published.json()

        def delivered() -> list[Any]:
            return [r for r in receiver.at("/image") if json.loads(r.body)["id"] == event["id"]]

        (request,) = eventually(delivered, timeout=60)
        assert Webhook(endpoint["secret"]).verify(request.body, request.headers) == event

        def listed() -> bool:
            page = eventlog.get("/v1/events")
            assert page.status_code == 200, page.text
            return event["id"] in [e["id"] for e in page.json()["data"]]

        eventually(listed, timeout=60, interval=0.5)


def test_sigterm_stops_each_container_within_its_grace_period(
        pods: dict[str, Container], embedded: Manifests) -> None:
    for component, container in reversed(pods.items()):
        grace = pod_spec(embedded.get("Deployment", name(component)))[
            "terminationGracePeriodSeconds"]
        taken = container.stop(grace)
        state = container.state()
        assert not state["running"], component
        # 0: the service shut down on SIGTERM itself, before the engine's SIGKILL (137).
        assert state["exit_code"] == 0, f"{component} exited {state['exit_code']} " \
            f"after {taken:.1f}s:\n{container.logs()}"
        assert taken < grace, component


@pytest.fixture(scope="module")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseHttp]:
    """A ClickHouse server for the server-mode release: chDB behind ClickHouse's HTTP
    interface (tests/support/clickhouse_http.py), in its own process on the host."""
    server = ClickHouseHttp(tmp_path_factory.mktemp("clickhouse-http")).start()
    try:
        yield server
    finally:
        server.stop()


def test_the_slim_image_runs_the_server_mode_release(
        engine: str, images: Images, values: dict[str, Any], clickhouse_server: ClickHouseHttp,
        run_id: str, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The chart's default, server mode, where every pod runs the slim image: its Jobs, then
    the eventlog API and its sink against the ClickHouse server. An endpoint created through
    the API goes through Kafka and the sink into ClickHouse and is read back from there."""
    release = {**values, "config": {**values["config"], "topicPrefix": f"srv{run_id}"},
               "eventlog": {"port": free_port(), "replicaCount": 1},
               "clickhouse": {"url": clickhouse_server.url(f"srv{run_id}")}}
    manifests = Manifests.render(write_values(tmp_path_factory.mktemp("server"), release))
    for job_name in ("create-topics", "migrate"):
        job = manifests.get("Job", name(job_name))
        assert image_of(job) == images.slim
        spec = pod_spec(job)
        done = run_to_completion(engine, images.slim, f"wh-srv-{job_name}-{run_id}",
                                 spec["containers"][0]["args"], PodShape.of(spec),
                                 container_environment(manifests, job), None,
                                 timeout=job["spec"]["activeDeadlineSeconds"])
        assert done.returncode == 0, f"{job_name}:\n{done.stdout}{done.stderr}"
    assert done.stdout.strip().startswith("applied: 1, 2")
    # Pods have a network each in Kubernetes; on the host network the sink gets its own port.
    ports = {"eventlog": release["eventlog"]["port"], "eventlog-sink": free_port()}
    running: list[Container] = []
    try:
        for component, port in ports.items():
            deployment = manifests.get("Deployment", name(component))
            assert image_of(deployment) == images.slim
            spec = pod_spec(deployment)
            environment = {**container_environment(manifests, deployment),
                           "WEBHOOKS_EVENTLOG_PORT": str(port)}
            running.append(start(
                engine, images.slim, f"wh-srv-{component}-{run_id}",
                spec["containers"][0]["args"], PodShape.of(spec), environment,
                data_volume(tmp_path_factory.mktemp(component) / "data")))
        for container, port in zip(running, ports.values(), strict=True):
            url = f"http://127.0.0.1:{port}/healthz"
            try:
                eventually(lambda url=url: answers(url) == 200, timeout=120, interval=1.0)
            except AssertionError as error:
                raise AssertionError(f"{url}: {error}\n{container.logs()}") from None
        with httpx.Client(base_url=f"http://127.0.0.1:{ports['eventlog']}", headers=ACME,
                          timeout=30.0) as eventlog:
            created = eventlog.post("/v1/endpoints", json={"url": receiver.url("/server"),
                                                           "events": ["order.*"]})
            assert created.status_code == 201, created.text
            endpoint_id = created.json()["id"]
            eventually(lambda: eventlog.get(f"/v1/endpoints/{endpoint_id}").status_code == 200,
                       timeout=60, interval=0.5)
        for container in reversed(running):
            container.stop(60)
            assert container.state()["exit_code"] == 0, container.logs()
    finally:
        for container in running:
            container.remove()
