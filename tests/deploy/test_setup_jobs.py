"""The chart's pre-install/pre-upgrade Jobs, run the way the kubelet would run them.

Each Job container is executed as a process with exactly the environment Kubernetes would
give it (the hook ConfigMap plus the Secret keys it references) against the real test
broker and a real ClickHouse engine. Running each twice proves that re-running them on
every `helm upgrade` is harmless.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.deploy.chart import (
    REPO_ROOT,
    Manifests,
    container_environment,
    pod_spec,
    write_values,
)
from tests.support.backends import with_database
from webhooks.settings import Settings
from webhooks.topics import Topics


def run_job(manifests: Manifests, job_name: str, secret_overrides: dict[str, str]
            ) -> subprocess.CompletedProcess[str]:
    """Run the Job's args with the image's ENTRYPOINT (`webhooks`) from this checkout."""
    job = manifests.get("Job", job_name)
    container = pod_spec(job)["containers"][0]
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("WEBHOOKS_")}
    environment.update(container_environment(manifests, job, secret_overrides))
    return subprocess.run([sys.executable, "-m", "services.cli", *container["args"]],
                          cwd=REPO_ROOT, env=environment, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def topic_prefix() -> str:
    return f"helm{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def manifests(kafka_bootstrap: str, topic_prefix: str,
              tmp_path_factory: pytest.TempPathFactory) -> Manifests:
    values = {
        "kafka": {"bootstrap": kafka_bootstrap},
        "config": {"topicPrefix": topic_prefix, "topicPartitions": 2, "topicReplication": 1,
                   "retrySchedule": "1s,2s"},
    }
    return Manifests.render(write_values(tmp_path_factory.mktemp("values"), values))


def test_create_topics_job_creates_every_topic_once(manifests: Manifests, kafka_bootstrap: str,
                                                    topic_prefix: str) -> None:
    first = run_job(manifests, "wh-webhooks-create-topics", {})
    assert first.returncode == 0, first.stderr
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix,
                        retry_schedule="1s,2s")
    wanted = {spec.name for spec in Topics.from_settings(settings).specs()}
    existing = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=30).topics
    assert wanted <= set(existing)
    assert all(len(existing[name].partitions) == 2 for name in wanted)
    again = run_job(manifests, "wh-webhooks-create-topics", {})
    assert again.returncode == 0, again.stderr
    assert "nothing, all topics exist" in again.stdout


def test_migrate_job_applies_migrations_once(manifests: Manifests, clickhouse_base_url: str,
                                             tmp_path: Path) -> None:
    if clickhouse_base_url.startswith("chdb:"):
        # One chDB path per process, and this pytest process may hold the session's path.
        url = f"chdb://{tmp_path / 'clickhouse'}"
    else:
        url = with_database(clickhouse_base_url, f"helm{uuid.uuid4().hex[:8]}")
    first = run_job(manifests, "wh-webhooks-migrate", {"clickhouse-url": url})
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied: ") and "nothing" not in first.stdout
    again = run_job(manifests, "wh-webhooks-migrate", {"clickhouse-url": url})
    assert again.returncode == 0, again.stderr
    assert "nothing, schema is current" in again.stdout
