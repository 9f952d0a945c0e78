"""The container images, read from the Dockerfile: their layout works and they run what the
chart runs.

Two targets: ``runtime``, the full image (the default target), and ``slim``, the same without
the embedded ClickHouse engine. No Docker engine is needed here, so they are not built
(tests/deploy/test_image_run.py builds and runs them). Instead the Dockerfile's COPY steps
are replayed into a directory per stage (honouring .dockerignore) and the code is imported
from there with the image's PYTHONPATH; and every command the rendered chart runs is parsed
by the real ``webhooks`` command-line parser behind the image's ENTRYPOINT.
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
from tests.deploy.containers import EMBEDDED_ENGINE_MODULES
from tests.deploy.dockerfile import Dockerfile, DockerIgnore

DOCKERFILE = Dockerfile.parse(REPO_ROOT / "Dockerfile")
IGNORE = DockerIgnore((REPO_ROOT / ".dockerignore").read_text())
EVERY_COMMAND = {("serve", "ingest"), ("serve", "fanout"), ("serve", "eventlog"),
                 ("create-topics",), ("migrate",)}
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make ", "clang", "python3-dev")
TARGETS = ("slim", "runtime")  # the images `make image` builds (the full one last: the default)


@pytest.fixture(scope="module")
def renders() -> list[Manifests]:
    return [Manifests.render(), Manifests.render(ALL_ENABLED_VALUES),
            Manifests.render(EMBEDDED_VALUES)]


@pytest.mark.parametrize("target", TARGETS)
def test_multi_stage_slim_python_image_runs_as_a_numeric_non_root_user(target: str) -> None:
    stage = DOCKERFILE.stage(target)
    assert len(DOCKERFILE.stages) >= 2
    assert DOCKERFILE.base_image(stage).startswith("python:3.11-slim")
    user = DOCKERFILE.resolved(stage, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, f"USER {user!r} must be a non-zero numeric UID"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    # Kubernetes checks runAsNonRoot against the numeric UID the chart sets.
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)


def test_the_full_image_is_the_default_target_and_both_share_their_first_layers() -> None:
    """`docker build .` gives the image that runs every role; the slim one and it start from
    the same stage (user, dependencies, environment), so a node stores those layers once."""
    assert DOCKERFILE.final.name == "runtime"
    slim, full = (DOCKERFILE.lineage(DOCKERFILE.stage(target)) for target in TARGETS)
    assert len(slim) == len(full) >= 2 and slim[:-1] == full[:-1]
    shared = slim[-2]
    assert any("/opt/venv" in copy for copy in shared.all("COPY"))
    assert shared.all("ENTRYPOINT") and shared.all("USER")


@pytest.mark.parametrize("target", TARGETS)
def test_final_stage_has_no_build_tools(target: str) -> None:
    stage = DOCKERFILE.stage(target)
    for command in DOCKERFILE.instructions(stage, "RUN"):
        for tool in BUILD_TOOLS:
            assert tool not in command, f"{target} installs {tool.strip()}: {command}"
        assert "pip install" not in command, "dependencies belong to the builder stage"
    copies = DOCKERFILE.instructions(stage, "COPY")
    assert all("--from=" in copy for copy in copies), f"{target} copies only built results"


@pytest.mark.parametrize(("target", "from_run"), [
    ("slim", ["/opt/venv"]), ("runtime", ["/opt/venv", "/opt/embedded/"])])
def test_image_layout_keeps_schemas_and_migrations_next_to_the_code(
        tmp_path: Path, target: str, from_run: list[str]) -> None:
    """Import the code from the replayed image filesystem with the image's PYTHONPATH; the
    services load none of the embedded engine's modules on import (only a chdb:// URL does)."""
    stage = DOCKERFILE.stage(target)
    filesystems, made_by_run = DOCKERFILE.replay_copies(REPO_ROOT, IGNORE, tmp_path)
    # Only the dependency virtualenv (and the engine's part of it) comes from RUN steps; the
    # test venv stands in for them.
    assert made_by_run[target] == from_run
    image_root = filesystems[target]
    environment = DOCKERFILE.environment(stage)
    python_path = [str(image_root / entry.lstrip("/"))
                   for entry in environment["PYTHONPATH"].split(":")]
    workdir = image_root / DOCKERFILE.resolved(stage, "WORKDIR").lstrip("/")
    workdir.mkdir(parents=True, exist_ok=True)
    probe = (
        "import json, sys, webhooks, services.cli, webhooks.json_schema as s\n"
        "import services.eventlog.clickhouse as c\n"
        "import services.ingest.main, services.eventlog.main, services.fanout.main\n"
        "schemas = sorted(p.stem for p in s.SCHEMAS_DIR.glob('*.json'))\n"
        "[s.load_schema(name) for name in schemas]\n"
        "print(json.dumps({'modules': [m.__file__ for m in (webhooks, services.ingest.main,"
        " services.eventlog.main, services.fanout.main)], 'schemas_dir': str(s.SCHEMAS_DIR),"
        " 'schemas': schemas, 'migrations': sorted(p.name for p in"
        " c.MIGRATIONS_DIR.glob('*.sql')), 'engine': sorted({m.split('.')[0] for m in"
        f" sys.modules}} & set({EMBEDDED_ENGINE_MODULES!r}))}}))\n"
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
    assert found["engine"] == [], "importing the services loaded the embedded engine"


def test_dockerignore_keeps_the_build_inputs_and_drops_local_state() -> None:
    for path in ("pyproject.toml", "uv.lock", "services/cli/__init__.py",
                 "services/eventlog/migrations/x.sql", "services/ingest/app.py",
                 "webhooks/schemas/envelope.v1.json"):
        assert not IGNORE.excludes(path), path
    for path in (".venv/bin/python", ".cache/bin/helm", ".git/HEAD", ".data/clickhouse/x",
                 "tests/conftest.py", "services/__pycache__/cli.cpython-311.pyc",
                 "deploy/helm/webhooks/values.yaml", "bench-results/latest.json", "README.md"):
        assert IGNORE.excludes(path), path


def uv_syncs(stage_name: str) -> list[str]:
    return [run for run in DOCKERFILE.stage(stage_name).all("RUN") if "uv sync" in run]


def test_dependencies_come_from_the_lock_file_the_tests_install_from() -> None:
    """One lock file: the images install exactly it, as `make test`'s venv does."""
    builder = DOCKERFILE.stage("builder")
    assert any("uv.lock" in copy.split()[:-1] for copy in builder.all("COPY"))
    installs = [run for stage in DOCKERFILE.stages for run in uv_syncs(stage.name)]
    assert installs and all("--locked" in run and "--no-dev" in run for run in installs)
    assert not any("pip install -r" in run or "pip install -e" in run
                   for stage in DOCKERFILE.stages for run in stage.all("RUN")), \
        "dependencies bypass uv.lock"
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(INSTALLED\):.*\buv\.lock\b", makefile, re.MULTILINE)
    # The tests and `make up` run the embedded engine: the dev venv has the extra.
    assert "$(UV) sync --locked --extra test --extra embedded" in makefile
    # The same uv writes the lock (make lock) and reads it in the image.
    [make_uv] = re.findall(r"^UV_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert DOCKERFILE.global_args["UV_VERSION"] == make_uv


def test_only_the_full_image_gets_the_embedded_engine() -> None:
    """chdb-core is the `embedded` extra; no stage the slim image is made of installs it,
    and the full image copies the stage that does."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert not any(dep.startswith("chdb") for dep in pyproject["project"]["dependencies"])
    assert any(dep.startswith("chdb-core")
               for dep in pyproject["project"]["optional-dependencies"]["embedded"])
    engine_stages = {stage.name for stage in DOCKERFILE.stages
                     if any("--extra embedded" in run for run in uv_syncs(stage.name))}
    assert engine_stages, "no stage installs the embedded extra"
    assert not DOCKERFILE.sources(DOCKERFILE.stage("slim")) & engine_stages
    assert DOCKERFILE.sources(DOCKERFILE.stage("runtime")) & engine_stages


def test_the_chart_names_the_slim_image_as_make_image_tags_it() -> None:
    suffix = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["image"]["slimSuffix"]
    build = (REPO_ROOT / "deploy" / "image" / "build.sh").read_text()
    assert f"SLIM_TAG=$TAG{suffix}\n" in build
    assert "--target slim" in build and "--target runtime" in build


@pytest.mark.parametrize("target", TARGETS)
def test_entrypoint_is_the_webhooks_console_script(target: str) -> None:
    stage = DOCKERFILE.stage(target)
    entrypoint = DOCKERFILE.exec_form(stage, "ENTRYPOINT")
    assert entrypoint == ["webhooks"]
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["webhooks"] == "services.cli:main"
    # The console script lands in the virtualenv the final stage puts first on PATH.
    path = DOCKERFILE.environment(stage)["PATH"].split(":")
    assert path[0] == "/opt/venv/bin"
    assert any("/opt/venv" in copy for copy in DOCKERFILE.instructions(stage, "COPY"))


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
