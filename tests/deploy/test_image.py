"""The container image, read from the Dockerfile: its layout works and it runs what the chart runs.

No Docker engine runs here, so the image is not built. Instead the Dockerfile's COPY steps
are replayed into a directory (honouring .dockerignore) and the code is imported from there
with the image's PYTHONPATH; and every command the rendered chart runs is parsed by the real
``webhooks`` command-line parser behind the image's ENTRYPOINT.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import yaml

from services import cli
from tests.deploy.chart import (
    ALL_ENABLED_VALUES,
    CHART_DIR,
    EMBEDDED_VALUES,
    REPO_ROOT,
    Manifests,
    pod_spec,
)
from tests.deploy.dockerfile import Dockerfile, DockerIgnore

DOCKERFILE = Dockerfile.parse(REPO_ROOT / "Dockerfile")
IGNORE = DockerIgnore((REPO_ROOT / ".dockerignore").read_text())
EVERY_COMMAND = {("serve", "ingest"), ("serve", "fanout"), ("serve", "eventlog"),
                 ("create-topics",), ("migrate",)}
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make ", "clang", "python3-dev")


@pytest.fixture(scope="module")
def renders() -> list[Manifests]:
    return [Manifests.render(), Manifests.render(ALL_ENABLED_VALUES),
            Manifests.render(EMBEDDED_VALUES)]


def test_multi_stage_slim_python_image_runs_as_a_numeric_non_root_user() -> None:
    assert len(DOCKERFILE.stages) >= 2
    assert DOCKERFILE.final.base.startswith("python:3.11-slim")
    user = DOCKERFILE.resolved(DOCKERFILE.final, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, f"USER {user!r} must be a non-zero numeric UID"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    # Kubernetes checks runAsNonRoot against the numeric UID the chart sets.
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)


def test_final_stage_has_no_build_tools() -> None:
    for command in DOCKERFILE.final.all("RUN"):
        for tool in BUILD_TOOLS:
            assert tool not in command, f"final stage installs {tool.strip()}: {command}"
        assert "pip install" not in command, "dependencies belong to the builder stage"
    copies = DOCKERFILE.final.all("COPY")
    assert all("--from=" in copy for copy in copies), "final stage copies only built results"


def test_image_layout_keeps_schemas_and_migrations_next_to_the_code(tmp_path: Path) -> None:
    """Import the code from the replayed image filesystem with the image's PYTHONPATH."""
    filesystems, made_by_run = DOCKERFILE.replay_copies(REPO_ROOT, IGNORE, tmp_path)
    # Only the dependency virtualenv comes from a RUN step; the test venv stands in for it.
    assert made_by_run == ["/opt/venv"]
    image_root = filesystems[DOCKERFILE.final.name]
    environment = DOCKERFILE.environment(DOCKERFILE.final)
    python_path = [str(image_root / entry.lstrip("/"))
                   for entry in environment["PYTHONPATH"].split(":")]
    workdir = image_root / DOCKERFILE.resolved(DOCKERFILE.final, "WORKDIR").lstrip("/")
    workdir.mkdir(parents=True, exist_ok=True)
    probe = (
        "import json, webhooks, services.cli, webhooks.json_schema as s\n"
        "import services.eventlog.clickhouse as c\n"
        "import services.ingest.main, services.eventlog.main, services.fanout.main\n"
        "schemas = sorted(p.stem for p in s.SCHEMAS_DIR.glob('*.json'))\n"
        "[s.load_schema(name) for name in schemas]\n"
        "print(json.dumps({'modules': [m.__file__ for m in (webhooks, services.ingest.main,"
        " services.eventlog.main, services.fanout.main)], 'schemas_dir': str(s.SCHEMAS_DIR),"
        " 'schemas': schemas, 'migrations': sorted(p.name for p in"
        " c.MIGRATIONS_DIR.glob('*.sql'))}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=workdir, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(python_path),
             "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    for module in found["modules"]:
        assert Path(module).is_relative_to(image_root), f"{module} came from outside the image"
    assert Path(found["schemas_dir"]).is_relative_to(image_root)
    schemas_dir = REPO_ROOT / "webhooks" / "schemas"
    assert found["schemas"] == sorted(p.stem for p in schemas_dir.glob("*.json"))
    assert found["migrations"] == sorted(
        p.name for p in (REPO_ROOT / "services" / "eventlog" / "migrations").glob("*.sql"))
    assert found["migrations"], "no migrations in the image"


def test_dockerignore_keeps_the_build_inputs_and_drops_local_state() -> None:
    for path in ("pyproject.toml", "uv.lock", "services/cli/__init__.py",
                 "services/eventlog/migrations/x.sql", "services/ingest/app.py",
                 "webhooks/schemas/envelope.v1.json"):
        assert not IGNORE.excludes(path), path
    for path in (".venv/bin/python", ".cache/bin/helm", ".git/HEAD", ".data/clickhouse/x",
                 "tests/conftest.py", "services/__pycache__/cli.cpython-311.pyc",
                 "deploy/helm/webhooks/values.yaml", "bench-results/latest.json", "README.md"):
        assert IGNORE.excludes(path), path


def test_dependencies_come_from_the_lock_file_the_tests_install_from() -> None:
    """One lock file: the image installs exactly it, as `make test`'s venv does."""
    builder = DOCKERFILE.stage("builder")
    assert any("uv.lock" in copy.split()[:-1] for copy in builder.all("COPY"))
    installs = [run for run in builder.all("RUN") if "uv sync" in run]
    assert installs and all("--locked" in run and "--no-dev" in run for run in installs)
    assert not any("pip install -r" in run or "pip install -e" in run
                   for run in builder.all("RUN")), "dependencies bypass uv.lock"
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(INSTALLED\):.*\buv\.lock\b", makefile, re.MULTILINE)
    assert "$(UV) sync --locked --extra test" in makefile
    # The same uv writes the lock (make lock) and reads it in the image.
    [make_uv] = re.findall(r"^UV_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert DOCKERFILE.global_args["UV_VERSION"] == make_uv


def test_entrypoint_is_the_webhooks_console_script() -> None:
    entrypoint = DOCKERFILE.exec_form(DOCKERFILE.final, "ENTRYPOINT")
    assert entrypoint == ["webhooks"]
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["webhooks"] == "services.cli:main"
    # The console script lands in the virtualenv the final stage puts first on PATH.
    path = DOCKERFILE.environment(DOCKERFILE.final)["PATH"].split(":")
    assert path[0] == "/opt/venv/bin"
    assert any("/opt/venv" in copy for copy in DOCKERFILE.final.all("COPY"))


class _Parsed(Exception):
    """Raised with the parsed command to stop ``cli.main`` before it runs anything."""


@dataclass(frozen=True)
class ParsedCommand:
    """What the ``webhooks`` parser made of an argv: the command's name and arguments."""

    command: str
    params: dict[str, object]


def cli_parse(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> ParsedCommand | int:
    """What the real ``webhooks`` parser (click) makes of ``argv``: the command it would
    run, or its exit code. Groups still dispatch; the chosen command is stopped."""
    invoke = click.Command.invoke

    def parse_then_stop(self: click.Command, ctx: click.Context) -> object:
        if isinstance(self, click.Group):
            return invoke(self, ctx)
        raise _Parsed(ParsedCommand(ctx.info_name or "", dict(ctx.params)))

    with monkeypatch.context() as patch:
        patch.setattr(click.Command, "invoke", parse_then_stop)
        try:
            cli.main(argv)
        except _Parsed as parsed:
            return parsed.args[0]
        except SystemExit as exit_:
            return int(exit_.code or 0)
    raise AssertionError(f"cli.main({argv}) neither parsed nor exited")


def test_every_command_the_chart_runs_is_a_cli_command(
        renders: list[Manifests], monkeypatch: pytest.MonkeyPatch) -> None:
    entrypoint = DOCKERFILE.exec_form(DOCKERFILE.final, "ENTRYPOINT")
    seen: set[tuple[str, ...]] = set()
    for manifests in renders:
        for workload in manifests.workloads():
            for container in pod_spec(workload)["containers"]:
                # No `command`: Kubernetes then runs the image ENTRYPOINT with these args.
                assert "command" not in container
                argv = [*entrypoint[1:], *container["args"]]
                parsed = cli_parse(argv, monkeypatch)
                assert isinstance(parsed, ParsedCommand), \
                    f"`webhooks {' '.join(argv)}` is not a command (exit {parsed})"
                assert parsed.command == argv[0]
                if parsed.command == "serve":
                    assert [parsed.params["service"]] == argv[1:]
                else:
                    assert argv[1:] == []
                seen.add(tuple(argv))
    assert seen == EVERY_COMMAND


@pytest.mark.parametrize("argv", [["serve", "ingester"], ["create-topic"], ["serve"],
                                  ["migrate", "now"]])
def test_the_cli_check_rejects_commands_that_do_not_exist(
        argv: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Negative control for the test above: the parser exits 2 on a wrong command."""
    assert cli_parse(argv, monkeypatch) == 2
    assert "error" in capsys.readouterr().err.lower()


def test_image_defaults_fit_a_read_only_pod(renders: list[Manifests]) -> None:
    environment = DOCKERFILE.environment(DOCKERFILE.final)
    assert environment["WEBHOOKS_HOST"] == "0.0.0.0"
    workdir = DOCKERFILE.resolved(DOCKERFILE.final, "WORKDIR")
    assert Path(environment["FAUST_DATADIR"]).parent == Path(workdir)
    # The chart mounts a writable volume exactly where the image keeps its data.
    for manifests in renders:
        for deployment in manifests.of_kind("Deployment"):
            mounts = {m["name"]: m["mountPath"]
                      for m in pod_spec(deployment)["containers"][0]["volumeMounts"]}
            assert mounts["data"] == workdir
