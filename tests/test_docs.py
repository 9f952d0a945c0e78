"""The documentation site builds, strictly, and its reference pages cover the code.

`make docs` and this test run the same build (mkdocs.yml: strict, every page in the nav,
links and anchors checked). The reference pages are generated from the apps and the CLI
at build time (docs/hooks/reference.py); the checks below make sure they hold every
operation and every command, so the site cannot silently fall behind the code.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import click
import pytest
import yaml

from services.cli import main
from services.localdev.kafka_broker import REPO_ROOT

HOOK = REPO_ROOT / "docs" / "hooks" / "reference.py"
MKDOCS = [sys.executable, "-m", "mkdocs", "build", "--strict"]
QUIET = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = tmp_path_factory.mktemp("site")
    run = subprocess.run([*MKDOCS, "--site-dir", str(built)], cwd=REPO_ROOT, env=QUIET,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    return built


def reference_hook() -> ModuleType:
    """docs/hooks/reference.py, the generator of the reference pages."""
    spec = importlib.util.spec_from_file_location("reference_hook", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_api_reference_holds_every_operation_of_both_services(site: Path) -> None:
    ingest, eventlog = reference_hook().openapi_documents()
    for page, document in (("ingest-api", ingest), ("eventlog-api", eventlog)):
        html = (site / "reference" / page / "index.html").read_text()
        for path, item in document["paths"].items():
            for method in item:
                assert f"{method.upper()} {path}" in html, (page, method, path)


def test_the_cli_reference_holds_every_command(site: Path) -> None:
    html = (site / "reference" / "cli" / "index.html").read_text()

    def names(command: click.Command, name: str) -> list[str]:
        found = [name]
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                if not sub.hidden:
                    found += names(sub, f"{name} {sub.name}")
        return found

    missing = [name for name in names(main, "webhooks") if f"<code>{name}</code>" not in html]
    assert not missing


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    """Negative control: the strict settings of mkdocs.yml refuse a link to nowhere."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\nSee [the guide](guide.md).\n")
    config = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())
    for generated_or_listed in ("hooks", "nav", "exclude_docs"):
        config.pop(generated_or_listed)
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    run = subprocess.run(MKDOCS, cwd=tmp_path, env=QUIET, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0
    assert "guide.md" in run.stderr
