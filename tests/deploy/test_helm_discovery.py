"""Where the chart tests find helm, and what they do without it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deploy import chart


def without_helm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, go: str | None) -> None:
    """A checkout with no .cache/bin/helm, no helm on PATH, and Go present or not."""
    monkeypatch.setattr(chart, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name: go if name == "go" else None)


def test_prefers_the_helm_that_make_helm_builds(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    built = tmp_path / ".cache" / "bin" / "helm"
    built.parent.mkdir(parents=True)
    built.write_text("#!/bin/sh\n")
    monkeypatch.setattr(chart, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/helm")
    assert chart.helm_binary() == str(built)


def test_skips_with_a_message_when_go_is_absent(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    without_helm(monkeypatch, tmp_path, go=None)
    with pytest.raises(pytest.skip.Exception, match="Go is absent"):
        chart.helm_binary()


def test_fails_with_the_make_hint_when_go_could_build_it(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    without_helm(monkeypatch, tmp_path, go="/usr/local/go/bin/go")
    with pytest.raises(pytest.fail.Exception, match="make helm"):
        chart.helm_binary()
