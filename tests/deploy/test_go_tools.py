"""Where the deploy checks find helm and promtool, and what they do without them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy import chart, promtool

TOOLS = [pytest.param(chart, "helm", chart.helm_binary, id="helm"),
         pytest.param(promtool, "promtool", promtool.promtool_binary, id="promtool")]


def without_tool(monkeypatch: pytest.MonkeyPatch, module: ModuleType, tmp_path: Path,
                 go: str | None) -> None:
    """A checkout with no .cache/bin/<tool>, none on PATH, and Go present or not."""
    monkeypatch.setattr(module, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name: go if name == "go" else None)


@pytest.mark.parametrize(("module", "name", "find"), TOOLS)
def test_prefers_the_one_make_builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     module: ModuleType, name: str,
                                     find: Callable[[], str]) -> None:
    built = tmp_path / ".cache" / "bin" / name
    built.parent.mkdir(parents=True)
    built.write_text("#!/bin/sh\n")
    monkeypatch.setattr(module, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(shutil, "which", lambda _: f"/usr/bin/{name}")
    assert find() == str(built)


@pytest.mark.parametrize(("module", "name", "find"), TOOLS)
def test_skips_with_a_message_when_go_is_absent(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path, module: ModuleType,
                                                name: str, find: Callable[[], str]) -> None:
    without_tool(monkeypatch, module, tmp_path, go=None)
    with pytest.raises(pytest.skip.Exception, match=f"{name} not found.*Go is absent"):
        find()


@pytest.mark.parametrize(("module", "name", "find"), TOOLS)
def test_fails_with_the_make_hint_when_go_could_build_it(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path, module: ModuleType,
                                                         name: str,
                                                         find: Callable[[], str]) -> None:
    without_tool(monkeypatch, module, tmp_path, go="/usr/local/go/bin/go")
    with pytest.raises(pytest.fail.Exception, match=f"make {name}"):
        find()
