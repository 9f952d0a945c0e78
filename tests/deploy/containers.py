"""Building the image and running its containers the way the chart's pods run.

The engine is Docker where an engine answers, else podman, which
``deploy/image/setup-podman.sh`` installs and configures on first use (root on Debian).
Where neither can be had the image tests skip with a message. A container gets what a
pod of the chart gets: its args after the image's ENTRYPOINT, the environment the kubelet
would give it, the pod's numeric UID/GID, a read-only root filesystem with only ``/tmp``
and the data volume writable, no capabilities, no privilege escalation; host networking,
so that 127.0.0.1 reaches the test broker and the receiver.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.chart import REPO_ROOT

# The full image's tag (`make image`'s default); the slim one is this plus SLIM_SUFFIX.
# WEBHOOKS_TEST_IMAGE gives another, so that two checkouts testing on one machine do not
# build over (and run) each other's images.
IMAGE_TAG = os.environ.get("WEBHOOKS_TEST_IMAGE", "kafka-webhooks:dev")
SLIM_SUFFIX = "-slim"
# What the `embedded` extra brings (chdb-core and what it loads): only the full image has it.
EMBEDDED_ENGINE_MODULES = ("chdb", "pandas", "numpy", "pyarrow")
BUILD_LOG_TAIL = 4000


@dataclass(frozen=True)
class Images:
    """The two images ``make image`` builds: the full one and the one without chDB."""

    full: str

    @property
    def slim(self) -> str:
        return self.full + SLIM_SUFFIX

    def chart_values(self) -> dict[str, str]:
        """``image`` values with which the chart names exactly these two."""
        repository, _, tag = self.full.rpartition(":")
        return {"repository": repository, "tag": tag, "slimSuffix": SLIM_SUFFIX}


def docker_engine_answers() -> bool:
    """A real Docker engine (not podman's compatibility socket) answers ``docker info``."""
    if shutil.which("docker") is None:
        return False
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return info.returncode == 0 and "podman" not in info.stdout.lower()


def container_engine() -> str:
    """``docker`` or ``podman`` (set up here if needed), or skip with the reason."""
    if docker_engine_answers():
        return "docker"
    if shutil.which("podman") is None and (os.geteuid() != 0 or shutil.which("apt-get") is None):
        pytest.skip("no Docker engine answers and podman is absent; installing it needs root "
                    "and apt-get: image tests skipped (run deploy/image/setup-podman.sh as root)")
    setup = subprocess.run(["bash", str(REPO_ROOT / "deploy/image/setup-podman.sh")],
                           capture_output=True, text=True, timeout=900)
    if setup.returncode != 0 and os.geteuid() != 0:
        pytest.skip(f"podman is not set up and setting it up needs root: image tests skipped "
                    f"(run deploy/image/setup-podman.sh as root): {setup.stderr.strip()}")
    assert setup.returncode == 0, f"setup-podman.sh failed:\n{setup.stdout}\n{setup.stderr}"
    return "podman"


def build_images(engine: str, log: Path, images: Images = Images(IMAGE_TAG)) -> Images:
    """``make image``'s script: both images from the Dockerfile (cached layers reused)."""
    with log.open("w") as output:
        built = subprocess.run(["bash", str(REPO_ROOT / "deploy/image/build.sh"), images.full],
                               cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT,
                               env={**os.environ, "CONTAINER_ENGINE": engine}, timeout=1800)
    assert built.returncode == 0, f"image build failed:\n{log.read_text()[-BUILD_LOG_TAIL:]}"
    return images


def image_size(engine: str, image: str) -> int:
    """Bytes the image takes unpacked (what the engine reports as its size)."""
    inspected = subprocess.run([engine, "image", "inspect", "--format", "{{.Size}}", image],
                               capture_output=True, text=True, timeout=60)
    assert inspected.returncode == 0, inspected.stderr
    return int(inspected.stdout.strip())


@dataclass(frozen=True)
class PodShape:
    """What the chart's securityContext and volumes make of a container."""

    uid: int
    gid: int
    read_only_root: bool
    drop_all_capabilities: bool
    no_privilege_escalation: bool

    @classmethod
    def of(cls, pod_spec: Mapping[str, Any]) -> PodShape:
        pod_context = pod_spec["securityContext"]
        context = pod_spec["containers"][0]["securityContext"]
        return cls(uid=int(pod_context["runAsUser"]), gid=int(pod_context["runAsGroup"]),
                   read_only_root=bool(context["readOnlyRootFilesystem"]),
                   drop_all_capabilities="ALL" in context["capabilities"]["drop"],
                   no_privilege_escalation=not context["allowPrivilegeEscalation"])


@dataclass
class Container:
    """One container of the image; ``name`` is the engine's container name."""

    engine: str
    name: str

    def logs(self, tail: int = 60) -> str:
        result = subprocess.run([self.engine, "logs", "--tail", str(tail), self.name],
                                capture_output=True, text=True, timeout=60)
        return result.stdout + result.stderr

    def state(self) -> dict[str, Any]:
        """Running, exit code (once stopped)."""
        result = subprocess.run(
            [self.engine, "inspect", "--format",
             "{{.State.Running}} {{.State.ExitCode}}", self.name],
            capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        running, code = result.stdout.split()
        return {"running": running == "true", "exit_code": int(code)}

    def stop(self, grace_seconds: int) -> float:
        """SIGTERM, SIGKILL after ``grace_seconds`` (as the kubelet does); seconds taken."""
        started = time.monotonic()
        subprocess.run([self.engine, "stop", "--time", str(grace_seconds), self.name],
                       capture_output=True, text=True, timeout=grace_seconds + 60)
        return time.monotonic() - started

    def remove(self) -> None:
        subprocess.run([self.engine, "rm", "--force", self.name],
                       capture_output=True, text=True, timeout=120)


def run_arguments(engine: str, image: str, name: str, shape: PodShape,
                  environment: Mapping[str, str], data_dir: Path | None) -> list[str]:
    """``<engine> run`` options for one container shaped like the chart's pod."""
    options = [engine, "run", "--name", name, "--network", "host",
               "--user", f"{shape.uid}:{shape.gid}",
               # fsGroup and emptyDir: the volume is writable by the pod's group.
               "--tmpfs", "/tmp:rw,mode=1777"]
    if shape.read_only_root:
        options.append("--read-only")
        if engine == "podman":
            # podman would add its own tmpfs on /run and /var/tmp; Kubernetes does not.
            options.append("--read-only-tmpfs=false")
    if shape.drop_all_capabilities:
        options += ["--cap-drop", "ALL"]
    if shape.no_privilege_escalation:
        options += ["--security-opt", "no-new-privileges"]
    if data_dir is not None:
        options += ["--volume", f"{data_dir}:/var/lib/webhooks"]
    for key, value in sorted(environment.items()):
        options += ["--env", f"{key}={value}"]
    return options


def data_volume(directory: Path) -> Path:
    """An emptyDir stand-in: a fresh directory the pod's UID can write (any UID here)."""
    directory.mkdir(parents=True)
    directory.chmod(0o777)
    return directory


def run_to_completion(engine: str, image: str, name: str, args: list[str], shape: PodShape,
                      environment: Mapping[str, str], data_dir: Path | None = None,
                      timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run a Job's container until it exits (``activeDeadlineSeconds`` as the timeout)."""
    command = [*run_arguments(engine, image, name, shape, environment, data_dir), "--rm",
               image, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def start(engine: str, image: str, name: str, args: list[str], shape: PodShape,
          environment: Mapping[str, str], data_dir: Path | None) -> Container:
    """Start a Deployment's container in the background."""
    command = [*run_arguments(engine, image, name, shape, environment, data_dir), "--detach",
               image, *args]
    started = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, f"{name} did not start: {started.stderr}"
    return Container(engine, name)
